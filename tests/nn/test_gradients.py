"""compute_gradients against central finite differences; extreme inputs stay finite."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symgrad import expr as E
from symgrad.layers import Activation, Dense
from symgrad.losses import BinaryCrossentropy, CategoricalCrossentropy
from symgrad.models import Sequential
from tests.nn.helpers import BACKEND, blobs, targets_for

x_ = sp.Symbol("x")
HIDDEN = ["sigmoid", "tanh", "relu", "elu", "softplus", "gelu", x_**2 / (1 + x_**2)]
LOSSES = {
    "mse": None,
    "mae": None,
    "binary_crossentropy": "sigmoid",
    "categorical_crossentropy": "softmax",
    "sparse_categorical_crossentropy": "softmax",
    "bce-clipped": "tanh",  # not a sigmoid output: Keras's clipped formula
    "cce-clipped": "softplus",  # not a softmax output: normalized, clipped
    "bce-logits": None,
    "cce-logits": None,
}


def loss_object(name):
    if name == "bce-clipped":
        return "binary_crossentropy"
    if name == "cce-clipped":
        return "categorical_crossentropy"
    if name == "bce-logits":
        return BinaryCrossentropy(from_logits=True)
    if name == "cce-logits":
        return CategoricalCrossentropy(from_logits=True)
    return name


def target_kind(name):
    return {
        "bce-clipped": "binary_crossentropy",
        "bce-logits": "binary_crossentropy",
        "cce-clipped": "categorical_crossentropy",
        "cce-logits": "categorical_crossentropy",
    }.get(name, name)


def model_for(hidden, loss):
    model = Sequential([Dense(5, activation=hidden, input_dim=4), Dense(3)])
    if LOSSES[loss] is not None:
        model.add(Activation(LOSSES[loss]))
    model.compile(optimizer="sgd", loss=loss_object(loss), backend=BACKEND, dtype="float64", seed=1)
    return model


CASES = [("tanh", loss) for loss in LOSSES] + [
    (h, "categorical_crossentropy") for h in HIDDEN if h != "tanh"
]


@pytest.mark.parametrize(("hidden", "loss"), CASES, ids=[f"{h}-{loss}" for h, loss in CASES])
def test_compute_gradients_matches_finite_differences(hidden, loss, rng, check_grad):
    model = model_for(hidden, loss)
    x, labels = blobs(rng, n=7)
    x = x / 3
    if loss == "bce-clipped":  # keep tanh outputs inside (0, 1), where the clip is the identity
        model.set_weights([np.abs(w) + 0.05 for w in model.get_weights()])
        x = np.abs(x)
    y = targets_for(target_kind(loss), labels, 3, rng)
    weights = [w + 0.1 * rng.standard_normal(w.shape) for w in model.get_weights()]
    if loss == "bce-clipped":
        weights = [np.abs(w) for w in weights]
    model.set_weights(weights)
    grads = model.compute_gradients(x, y)
    assert [g.shape for g in grads] == [w.shape for w in weights]

    def f(ws):
        model.set_weights(ws)
        return model.test_on_batch(x, y)

    check_grad(f, weights, grads, rtol=1e-6, directions=3)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_extreme_inputs_give_finite_loss_and_gradients(loss, rng):
    model = model_for("relu", loss)
    x = np.array(
        [[1000.0, -1000.0, 0.0, 1000.0], [-1000.0, 1000.0, 1000.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    labels = np.array([0, 1, 2])
    y = targets_for(target_kind(loss), labels, 3, rng)
    model.set_weights([10 * w for w in model.get_weights()])
    value = model.test_on_batch(x, y)
    grads = model.compute_gradients(x, y)
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in grads)


def test_loss_values_match_keras_formulas(rng):
    """The compiled losses equal Keras's NumPy definitions (clip at 1e-7)."""
    x, labels = blobs(rng, n=9)
    eps = 1e-7
    for loss, keras in [
        ("mse", lambda y, p: np.mean((p - y) ** 2)),
        ("mae", lambda y, p: np.mean(np.abs(p - y))),
        ("binary_crossentropy", lambda y, p: -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        ("categorical_crossentropy", lambda y, p: -np.mean(np.sum(y * np.log(p), axis=1))),
        (
            "bce-clipped",
            lambda y, p: (
                -np.mean(
                    y * np.log(np.clip(p, eps, 1 - eps))
                    + (1 - y) * np.log(1 - np.clip(p, eps, 1 - eps))
                )
            ),
        ),
        (
            "cce-clipped",
            lambda y, p: (
                -np.mean(
                    np.sum(
                        y * np.log(np.clip(p / p.sum(axis=1, keepdims=True), eps, 1 - eps)), axis=1
                    )
                )
            ),
        ),
    ]:
        model = model_for("tanh", loss)
        y = targets_for(target_kind(loss), labels, 3, rng)
        p = model.predict(x)
        assert model.test_on_batch(x, y) == pytest.approx(keras(y, p), rel=1e-10), loss


def test_custom_loss_function(rng, check_grad):
    def quartic(y_true, y_pred):  # an (n, k) matrix: averaged over all entries, as in Keras
        a, b = sp.symbols("a b", real=True)
        return E.elementwise(sp.Lambda((a, b), (a - b) ** 4), y_pred, y_true)

    model = Sequential([Dense(4, activation="tanh", input_dim=3), Dense(2)])
    model.compile(optimizer="sgd", loss=quartic, backend=BACKEND, dtype="float64", seed=0)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    assert model.test_on_batch(x, y) == pytest.approx(
        np.mean((model.predict(x) - y) ** 4), rel=1e-12
    )

    def f(weights):
        model.set_weights(weights)
        return model.test_on_batch(x, y)

    check_grad(f, model.get_weights(), model.compute_gradients(x, y))
