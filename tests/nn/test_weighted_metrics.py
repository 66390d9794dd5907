"""compile(weighted_metrics=...): metrics weighted by each sample's weight, as Keras's,
against NumPy references written from the definitions (float64, both backends).

Keras's definitions: a weighted mean metric is ``sum(w_i v_i) / sum(w_i)``; a confusion
metric counts each sample ``w_i`` times. ``metrics`` stay unweighted. A name that both lists
hold is logged as ``weighted_<name>`` for the weighted one, after the unweighted metrics.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad import metrics as M
from symgrad.layers import Dense
from symgrad.models import Sequential, load_model
from tests.nn.test_metric_arguments import counts, roc_area
from tests.nn.test_metrics import RTOL, binary_data


def ref_accuracy(y, p, w):
    hits = (y[:, 0] == (p[:, 0] > 0.5)).astype(float)
    return np.sum(w * hits) / np.sum(w)


def ref_mse(y, p, w):
    return np.sum(w * np.mean((p - y) ** 2, axis=1)) / np.sum(w)


def ref_precision(y, p, w):
    tp, fp, _, _ = counts(y, p, 0.5, w)
    return tp / (tp + fp)


def ref_auc(y, p, w):
    return roc_area(y, p, w)


WEIGHTED = {  # logged name -> reference
    "weighted_accuracy": ref_accuracy,
    "mse": ref_mse,
    "weighted_precision": ref_precision,
    "auc": ref_auc,
}
PLAIN = {"accuracy": ref_accuracy, "precision": ref_precision}


def frozen(backend: str) -> Sequential:
    model = Sequential([Dense(5, activation="tanh", input_dim=3), Dense(1, activation="sigmoid")])
    for layer in model.layers:
        layer.trainable = False  # the same predictions before and after every step
    model.compile(
        optimizer="sgd",
        loss="binary_crossentropy",
        metrics=["accuracy", "precision"],
        weighted_metrics=["accuracy", "mse", M.Precision(), M.AUC()],
        backend=backend,
        dtype="float64",
        seed=4,
    )
    return model


def data(rng, n=47):
    y, _ = binary_data(rng, n)
    return rng.standard_normal((n, 3)), y, rng.uniform(0.0, 3.0, n)


def check_logs(logs: dict, y, p, w) -> None:
    assert list(logs) == ["loss", *PLAIN, *WEIGHTED]  # Keras's order and names
    for name, reference in {**PLAIN, **WEIGHTED}.items():
        weights = w if name in WEIGHTED else np.ones(len(y))
        expected = reference(y, p, weights)
        assert logs[name] == pytest.approx(expected, rel=RTOL, abs=1e-15), name


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_weighted_metrics_weigh_each_sample_in_fit_and_evaluate(backend, rng):
    x, y, w = data(rng)
    model = frozen(backend)
    history = model.fit(x, y, sample_weight=w, epochs=2, batch_size=8, verbose=0)
    p = model.predict(x)
    for epoch in range(2):
        check_logs({k: v[epoch] for k, v in history.history.items()}, y, p, w)
    check_logs(model.evaluate(x, y, sample_weight=w, batch_size=5, return_dict=True), y, p, w)
    classes = np.where(y[:, 0] == 1, 3.0, 0.5)  # class_weight weighs them too
    history = model.fit(x, y, class_weight={0: 0.5, 1: 3.0}, epochs=1, batch_size=8, verbose=0)
    check_logs({k: v[0] for k, v in history.history.items()}, y, p, classes)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_without_sample_weights_the_weighted_metrics_are_the_plain_ones(backend, rng):
    """Every weight is 1; on LLVM the metrics stay in the compiled step (native epoch)."""
    x, y, _ = data(rng)
    model = frozen(backend)
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert history.params["native_epochs"] == (backend == "llvm")
    check_logs({k: v[0] for k, v in history.history.items()}, y, model.predict(x), np.ones(len(y)))


def test_weighted_metrics_are_saved_with_the_model(rng, tmp_path):
    x, y, w = data(rng)
    model = frozen("numpy")
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    config = loaded.get_compile_config()
    assert config["weighted_metrics"][:2] == ["accuracy", "mse"]
    expected = model.evaluate(x, y, sample_weight=w, return_dict=True, verbose=0)
    assert loaded.evaluate(x, y, sample_weight=w, return_dict=True, verbose=0) == expected


def test_weighted_metrics_errors_are_named():
    model = Sequential([Dense(1, activation="sigmoid", input_dim=3)])
    with pytest.raises(TypeError, match=r"weighted_metrics must be a list.*weighted_metrics='auc'"):
        model.compile(loss="binary_crossentropy", weighted_metrics="auc")
    with pytest.raises(ValueError, match=r"Unknown metric: 'acurracy'"):
        model.compile(loss="binary_crossentropy", weighted_metrics=["acurracy"])
    from symgrad.layers import Input
    from symgrad.models import Model

    inputs = Input(shape=(3,))
    a, b = Dense(1, name="a")(inputs), Dense(1, name="b")(inputs)
    two = Model(inputs, [a, b])
    with pytest.raises(ValueError, match=r"weighted_metrics works for models with one output"):
        two.compile(loss="mse", weighted_metrics=["mae"])
