"""fit with the LLVM backend: a whole epoch in one native call, equal to the step-by-step loop."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symgrad import expr as E
from symgrad import metrics as metrics_module
from symgrad.callbacks import Callback, LambdaCallback
from symgrad.compiler import BACKENDS
from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.nn.trainer import NonFiniteLossError
from symgrad.optimizers import SGD, Adam
from tests.nn.helpers import blobs, targets_for


def model_for(loss, optimizer, metrics, dtype="float64", backend="llvm", hidden=5, seed=3):
    out = {"binary_crossentropy": "sigmoid", "mse": None}.get(loss, "softmax")
    model = Sequential(
        [Dense(hidden, activation="tanh", input_dim=4), Dense(3, activation=out)], name="m"
    )
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics, backend=backend, dtype=dtype, seed=seed
    )
    return model


def per_batch():
    """A callback that uses a batch hook, so fit must run step by step."""
    return LambdaCallback(on_batch_end=lambda batch, logs: None)


CASES = {
    "adam-sparse-accuracy": (
        "sparse_categorical_crossentropy",
        lambda: Adam(0.02),
        ["accuracy", "mse"],
    ),
    "sgd-categorical-accuracy": ("categorical_crossentropy", lambda: SGD(0.1, 0.9), ["acc"]),
    "binary-accuracy": ("binary_crossentropy", lambda: Adam(0.01), ["binary_accuracy", "mae"]),
    "mse-no-metrics": ("mse", lambda: SGD(0.05), None),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(CASES))
def test_native_epoch_equals_step_by_step(case, dtype, rng):
    """Same shuffled order, same steps: weights, optimizer state and history agree exactly."""
    loss, optimizer, metrics = CASES[case]
    x, labels = blobs(rng, n=47)  # 47 rows, batch 8: a smaller last batch
    y = targets_for(loss, labels, 3, rng)
    runs = []
    for callbacks in ([], [per_batch()]):
        model = model_for(loss, optimizer(), metrics, dtype)
        history = model.fit(
            x, y, epochs=3, batch_size=8, verbose=0, callbacks=callbacks, validation_split=0.15
        )
        runs.append((model, history))
    (native, h_native), (stepwise, h_steps) = runs
    assert h_native.params["native_epochs"] and not h_steps.params["native_epochs"]
    for a, b in zip(native.get_weights(), stepwise.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(native.optimizer.variables, stepwise.optimizer.variables):
        np.testing.assert_array_equal(a.value, b.value)
    assert native.optimizer.iterations == stepwise.optimizer.iterations == 3 * 5
    assert h_native.history == h_steps.history


def test_without_shuffling_and_with_initial_epoch(rng):
    x, labels = blobs(rng, n=30)
    runs = []
    for callbacks in ([], [per_batch()]):
        model = model_for("sparse_categorical_crossentropy", Adam(0.01), ["accuracy"])
        model.fit(x, labels, epochs=2, batch_size=7, verbose=0, shuffle=False, callbacks=callbacks)
        model.fit(
            x, labels, epochs=4, initial_epoch=2, batch_size=4, verbose=0, callbacks=callbacks
        )
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_metrics_agree_with_the_numpy_backend(rng):
    """The metrics' formulas in the compiled step give the values NumPy computes (no ties here)."""
    x, labels = blobs(rng, n=40)
    histories = []
    for backend in ("numpy", "llvm"):
        model = model_for(
            "sparse_categorical_crossentropy",
            Adam(0.01),
            ["accuracy", "mse", "mae"],
            backend=backend,
        )
        histories.append(model.fit(x, labels, epochs=3, batch_size=8, verbose=0).history)
    for key in histories[0]:
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-9, err_msg=key)


def test_batch_hooks_force_the_step_by_step_path(rng):
    x, labels = blobs(rng, n=20)
    seen = []

    class Batches(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)

    class EpochsOnly(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(f"epoch {epoch}")

    model = model_for("sparse_categorical_crossentropy", SGD(0.1), ["accuracy"])
    history = model.fit(x, labels, epochs=1, batch_size=10, verbose=0, callbacks=[Batches()])
    assert not history.params["native_epochs"] and seen == [0, 1]
    ended = []
    lam = LambdaCallback(on_train_batch_end=lambda batch, logs: ended.append(sorted(logs)))
    history = model.fit(x, labels, epochs=1, batch_size=10, verbose=0, callbacks=[lam])
    assert not history.params["native_epochs"] and ended == [["accuracy", "loss"]] * 2
    history = model.fit(x, labels, epochs=1, batch_size=10, verbose=0, callbacks=[EpochsOnly()])
    assert history.params["native_epochs"] and seen[-1] == "epoch 0"


def test_what_else_needs_python_between_steps(rng):
    x, labels = blobs(rng, n=20)
    # a learning-rate schedule is evaluated before every step
    model = model_for("sparse_categorical_crossentropy", SGD(lambda step: 0.1 / (1 + step)), None)
    assert not model.fit(x, labels, epochs=1, verbose=0).params["native_epochs"]

    # a metric without a formula is computed in NumPy from the predictions
    class Custom(metrics_module.Metric):
        def values(self, y_true, y_pred):
            return y_pred.max(axis=-1)

    model = model_for("sparse_categorical_crossentropy", SGD(0.1), [Custom(), "accuracy"])
    history = model.fit(x, labels, epochs=1, verbose=0)
    assert not history.params["native_epochs"] and 0 < history.history["metric"][0] <= 1
    # categorical accuracy's formula needs one-hot targets
    soft = np.full((20, 3), 0.1)
    soft[np.arange(20), labels] = 0.8
    model = model_for("categorical_crossentropy", SGD(0.1), ["accuracy"])
    assert not model.fit(x, soft, epochs=1, verbose=0).params["native_epochs"]
    assert model.fit(x, np.eye(3)[labels], epochs=1, verbose=0).params["native_epochs"]
    # the NumPy backend has no native epoch
    model = model_for("sparse_categorical_crossentropy", SGD(0.1), None, backend="numpy")
    assert not model.fit(x, labels, epochs=1, verbose=0).params["native_epochs"]


def test_non_finite_loss_stops_at_the_same_batch(rng):
    """A diverging run stops with the same epoch, batch, weights and iteration count either way."""
    x, labels = blobs(rng, n=64)
    x = x * 50
    results = []
    for callbacks in ([], [per_batch()]):
        model = model_for("mse", SGD(learning_rate=40.0), None, hidden=8)
        y = np.eye(3)[labels] * 100
        with pytest.raises(NonFiniteLossError) as info:
            model.fit(x, y, epochs=20, batch_size=4, verbose=0, callbacks=callbacks)
        err = info.value
        results.append((err.epoch, err.batch, model.optimizer.iterations, model.get_weights()))
        assert np.all([np.all(np.isfinite(w)) for w in model.get_weights()])
        assert f"epoch {err.epoch}, batch {err.batch} of 16" in str(err)
        assert len(err.history.history.get("loss", [])) == err.epoch - 1
    (e1, b1, i1, w1), (e2, b2, i2, w2) = results
    assert (e1, b1, i1) == (e2, b2, i2) and i1 == 16 * (e1 - 1) + b1 - 1
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_progress_bar_per_epoch(rng, capsys):
    model = model_for("sparse_categorical_crossentropy", SGD(0.1), ["accuracy"])
    x, labels = blobs(rng, n=20)
    history = model.fit(x, labels, epochs=2, batch_size=5, verbose=1)
    assert history.params["native_epochs"]
    out = capsys.readouterr().out
    lines = out.split("\n")
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("\r4/4 [==============================] - ")
    assert " - loss: " in lines[1] and " - accuracy: " in lines[1]


def test_categorical_accuracy_formula_counts_ties_as_hits():
    """P[i, y_i] >= max_j P[i, j]: where NumPy's argmax takes the first tied class, a tie is a hit."""
    from symgrad.compiler import compile as compile_fn

    n = E.batch()
    Y, P = E.labels("Y", n, 3), E.matrix("P", n, 3)
    metric = metrics_module.CategoricalAccuracy()
    fn = compile_fn([Y, P], {"acc": metric.batch_mean(Y, P)}, backend="llvm")
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
    y = np.eye(3)[[1, 2, 1, 2]]
    (acc,) = fn(y, p)
    assert acc[0, 0] == 0.75  # rows 0, 2 (a tie with class 0) and 3
    assert np.mean(metric.values(y, p)) == 0.5


@pytest.mark.parametrize(
    "metric",
    [
        metrics_module.BinaryAccuracy(),
        metrics_module.BinaryAccuracy(threshold=0.3),
        metrics_module.CategoricalAccuracy(),
        metrics_module.MeanSquaredError(),
        metrics_module.MeanAbsoluteError(),
    ],
    ids=repr,
)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_metric_formulas_match_numpy_values(metric, backend, rng):
    from symgrad.compiler import compile as compile_fn

    n = E.batch()
    Y, P = E.labels("Y", n, 4), E.matrix("P", n, 4)
    fn = compile_fn([Y, P], [metric.batch_mean(Y, P)], backend=backend)
    p = rng.random((9, 4))
    if isinstance(metric, metrics_module.BinaryAccuracy):
        y = (rng.random((9, 4)) > 0.5).astype(float)
        p[0, 0] = metric.threshold  # exactly at the threshold: not above it
    else:
        y = np.eye(4)[rng.integers(0, 4, 9)]
    (got,) = fn(y, p)
    assert got[0, 0] == pytest.approx(np.mean(metric.values(y, p)), rel=1e-12)
    assert sp.srepr(metric.batch_mean(Y, P)) == sp.srepr(metric.batch_mean(Y, P))  # deterministic
