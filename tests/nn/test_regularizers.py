"""Regularizers: the penalty is part of the loss graph (values, gradients, formulas, files)."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from symgrad import regularizers
from symgrad.compiler import BACKENDS
from symgrad.layers import Dense
from symgrad.models import Sequential, load_model
from symgrad.optimizers import Adam
from tests.emit.helpers import run_isolated
from tests.nn.helpers import BACKEND, blobs

# name: (kernel, bias, activity) regularizers of the hidden layer
CASES = {
    "l1": (regularizers.L1(0.03), None, None),
    "l2": (regularizers.L2(0.05), None, None),
    "l1_l2": (regularizers.L1L2(l1=0.02, l2=0.04), None, None),
    "bias-l1": (None, regularizers.L1(0.07), None),
    "activity-l2": (None, None, regularizers.L2(0.03)),
    "activity-l1_l2": (None, None, regularizers.L1L2(0.02, 0.01)),
    "all": ("l2", "l1", "l1_l2"),
}


def penalty(reg, a: np.ndarray) -> float:
    """Keras's formula in NumPy: l1 * sum|a| + l2 * sum(a**2)."""
    if reg is None:
        return 0.0
    reg = regularizers.get(reg)
    config = reg.get_config()
    return config.get("l1", 0.0) * np.abs(a).sum() + config.get("l2", 0.0) * (a**2).sum()


def model_for(case, backend=BACKEND, optimizer="sgd", seed=2):
    kernel, bias, activity = CASES[case]
    model = Sequential(
        [
            Dense(
                5,
                activation="tanh",
                input_dim=4,
                kernel_regularizer=kernel,
                bias_regularizer=bias,
                activity_regularizer=activity,
            ),
            Dense(3, kernel_regularizer="l2" if case == "all" else None),
        ],
        name="reg",
    )
    model.compile(optimizer=optimizer, loss="mse", backend=backend, dtype="float64", seed=seed)
    return model


def data(rng, n=7):
    x, labels = blobs(rng, n=n)
    return x / 3, np.eye(3)[labels] + 0.1 * rng.standard_normal((n, 3))


def spread(model, rng):
    """Weights away from zero (the l1 kink) and with a non-zero bias."""
    weights = [w + 0.3 * rng.standard_normal(w.shape) for w in model.get_weights()]
    weights = [np.where(np.abs(w) < 0.05, 0.1, w) for w in weights]
    model.set_weights(weights)
    return weights


@pytest.mark.parametrize("case", list(CASES))
def test_loss_is_data_loss_plus_the_penalties_computed_by_hand(case, rng):
    model = model_for(case)
    k1, b1, k2, b2 = spread(model, rng)
    x, y = data(rng)
    kernel, bias, activity = CASES[case]
    a1 = np.tanh(x @ k1 + b1)
    p = a1 @ k2 + b2
    expected = np.mean((p - y) ** 2) + penalty(kernel, k1) + penalty(bias, b1)
    expected += penalty(activity, a1) / len(x)  # Keras divides activity terms by the batch size
    expected += penalty("l2" if case == "all" else None, k2)
    assert model.test_on_batch(x, y) == pytest.approx(expected, rel=1e-12)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_match_finite_differences(case, rng, check_grad):
    model = model_for(case)
    weights = spread(model, rng)
    x, y = data(rng)
    grads = model.compute_gradients(x, y)

    def f(ws):
        model.set_weights(ws)
        return model.test_on_batch(x, y)

    check_grad(f, weights, grads, rtol=1e-6, directions=3)


def test_l1_gradient_at_zero_is_zero(rng):
    """d|w|/dw = sign(w) with sign(0) = 0: a zero weight gets only the data gradient."""
    x, y = data(rng)
    grads = []
    for kernel in (regularizers.L1(0.5), None):
        model = model_for("l1")
        model.layers[0].kernel_regularizer = kernel
        model._invalidate()
        weights = model.get_weights()
        weights[0][:] = 0.0
        model.set_weights(weights)
        grads.append(model.compute_gradients(x, y)[0])
    np.testing.assert_array_equal(grads[0], grads[1])


def test_formulas_show_the_penalty_terms():
    formulas = model_for("all").gradient_formulas()
    assert "(1/50)*dense_kernel" in str(formulas["dense/kernel"])  # 2 * 0.01 * W
    assert "(1/100)*sign(dense_bias)" in str(formulas["dense/bias"])
    assert "(1/50)*dense_1_kernel" in str(formulas["dense_1/kernel"])
    loss = str(model_for("all").forward_formulas()["loss"])
    for term in ("(1/100)*sum(dense_kernel**2)", "(1/100)*sum(Abs(dense_bias))"):
        assert term in loss
    assert "(1/(100*n))*sum(Abs(A1))" in loss and "(1/(100*n))*sum(A1**2)" in loss
    assert "sign(A1)" in model_for("all").explain()


@pytest.mark.skipif("llvm" not in BACKENDS, reason="the LLVM backend is not registered")
@pytest.mark.parametrize("case", ["l1_l2", "all"])
def test_numpy_and_llvm_agree_step_by_step_and_in_the_native_epoch(case, rng):
    x, y = data(rng, n=37)
    runs = {}
    for backend in ("numpy", "llvm"):
        model = model_for(case, backend=backend, optimizer="adam")
        spread(model, np.random.default_rng(5))
        history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, shuffle=False)
        runs[backend] = (history.history["loss"], model.get_weights())
    np.testing.assert_allclose(runs["numpy"][0], runs["llvm"][0], rtol=1e-12)
    for a, b in zip(runs["numpy"][1], runs["llvm"][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert model._train_step().function.epoch is not None  # the whole-epoch native call ran


def test_strong_l2_shrinks_the_weights(rng):
    x, labels = blobs(rng, n=80)
    y = np.eye(3)[labels]
    norms = {}
    for l2 in (None, regularizers.L2(0.1)):
        model = Sequential(
            [
                Dense(8, activation="tanh", input_dim=4, kernel_regularizer=l2),
                Dense(3, kernel_regularizer=l2),
            ]
        )
        model.compile(optimizer=Adam(0.05), loss="mse", dtype="float64", seed=0, backend=BACKEND)
        model.fit(x, y, epochs=40, batch_size=16, verbose=0)
        norms[l2 is None] = sum(np.sum(w.value**2) for w in model.weights if "kernel" in w.path)
    assert norms[False] < 0.5 * norms[True]


def test_saved_models_keep_their_regularizers(tmp_path, rng):
    model = model_for("all")
    spread(model, rng)
    x, y = data(rng)
    model.save(tmp_path / "m.npz")
    again = load_model(tmp_path / "m.npz")
    assert again.get_config() == model.get_config()
    assert again.layers[0].get_config()["kernel_regularizer"] == "l2"  # as it was given
    assert again.layers[0].kernel_regularizer == regularizers.L2(0.01)
    assert again.layers[0].activity_regularizer == regularizers.L1L2(0.01, 0.01)
    assert again.test_on_batch(x, y) == model.test_on_batch(x, y)


def test_emitted_module_includes_the_penalty(tmp_path, rng):
    model = model_for("all")
    spread(model, rng)
    x, y = data(rng)
    symgrad.emit(model, tmp_path / "reg.py", weights=True)
    script = """
params, opt_state = m.load_weights()
loss, gradients = m.loss_and_gradients(params, d["x"], d["y"])
out["loss"] = loss
out.update({"d/" + k: g for k, g in gradients.items()})
"""
    out = run_isolated(tmp_path / "reg.py", script, {"x": x, "y": y}, tmp_path)
    assert float(out["loss"]) == pytest.approx(model.test_on_batch(x, y), rel=1e-12)
    for w, g in zip(model.weights, model.compute_gradients(x, y), strict=True):
        np.testing.assert_allclose(out[f"d/{w.path}"], w.as_matrix(g), rtol=1e-12, atol=1e-14)


def test_keras_names_defaults_and_configs():
    assert regularizers.get("l1").get_config() == {"l1": 0.01}
    assert regularizers.get("L2").get_config() == {"l2": 0.01}
    assert regularizers.get("l1_l2").get_config() == {"l1": 0.01, "l2": 0.01}
    assert regularizers.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}
    assert regularizers.l2 is regularizers.L2 and regularizers.l1_l2 is regularizers.L1L2
    assert isinstance(regularizers.get(regularizers.L1), regularizers.L1)
    assert regularizers.get(None) is None
    for reg in (regularizers.L1(0.3), regularizers.L2(0.2), regularizers.L1L2(0.1, 0.4)):
        assert type(reg).from_config(reg.get_config()) == reg
        assert regularizers.get(regularizers.serialize(reg)) == reg
    losses = []
    for reg in (regularizers.L1L2(), None):  # zero factors add no term
        model = Sequential([Dense(2, input_dim=3, kernel_regularizer=reg)])
        model.compile(loss="mse", seed=0)
        losses.append(model.forward_formulas()["loss"])
    assert losses[0] == losses[1]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        Dense(2, kernel_regularizer="l3")
    assert str(err.value) == (
        "Unknown regularizer. Known regularizers: l1, l2, l1_l2. Received: kernel_regularizer='l3'"
    )
    with pytest.raises(ValueError, match=r"Received: activity_regularizer='ridge'"):
        Dense(2, activity_regularizer="ridge")
    with pytest.raises(TypeError, match=r"Received: bias_regularizer=0.1 of type float"):
        Dense(2, bias_regularizer=0.1)
    with pytest.raises(ValueError, match=r"Known classes: L1, L2, L1L2"):
        regularizers.get({"class_name": "Orthogonal", "config": {}})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: regularizers.L2(-0.1), r"finite number >= 0\. Received: l2=-0\.1"),
        (lambda: regularizers.L1(float("nan")), r"Received: l1=nan"),
        (lambda: regularizers.L1L2(l1=0.1, l2=-1), r"Received: l2=-1"),
        (lambda: regularizers.L1("0.1"), r"must be a number\. Received: l1='0\.1' of type str"),
    ],
)
def test_bad_factors_are_refused(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_activity_penalty_of_the_output_keeps_the_fused_loss(rng, check_grad):
    """On the last layer the penalty is of P itself: log_softmax stays fused, values match."""
    model = Sequential(
        [
            Dense(5, activation="tanh", input_dim=4),
            Dense(3, activation="softmax", activity_regularizer=regularizers.L2(0.2)),
        ]
    )
    model.compile(optimizer="sgd", loss="categorical_crossentropy", dtype="float64", seed=0)
    assert "log_softmax(Z2)" in str(model.forward_formulas()["loss"])
    assert "sum(P**2)" in str(model.forward_formulas()["loss"])
    weights = spread(model, rng)
    x, labels = blobs(rng, n=9)
    y = np.eye(3)[labels]
    k1, b1, k2, b2 = weights
    z = np.tanh(x @ k1 + b1) @ k2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = -np.mean(np.sum(y * np.log(p), axis=1)) + 0.2 * np.sum(p**2) / len(x)
    assert model.test_on_batch(x, y) == pytest.approx(expected, rel=1e-12)

    def f(ws):
        model.set_weights(ws)
        return model.test_on_batch(x, y)

    check_grad(f, weights, model.compute_gradients(x, y), rtol=1e-6, directions=3)
