"""Keras's other losses and label smoothing: values against Keras's formulas written here in
NumPy (float64, rtol 1e-12) and gradients against finite differences of those, on both
backends; reductions; bad input."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad import losses
from symgrad.compiler import BACKENDS
from symgrad.layers import Dense
from symgrad.models import Sequential
from tests.nn.loss_references import (
    bce_smoothed,
    categorical_hinge,
    cce_smoothed,
    cosine_similarity,
    focal,
    hinge,
    huber,
    kl_divergence,
    log_cosh,
    poisson,
    sigmoid,
    softmax,
    squared_hinge,
    targets,
)

# name: (loss, output activation, NumPy output of the logits, reference per sample, targets)
CASES = {
    "huber": (losses.Huber(delta=0.7), None, None, lambda y, p: huber(y, p, 0.7), "real"),
    "log_cosh": ("log_cosh", None, None, log_cosh, "real"),
    "kl_divergence": ("kl_divergence", "softmax", softmax, kl_divergence, "soft"),
    "poisson": ("poisson", "softplus", lambda z: np.log1p(np.exp(z)), poisson, "counts"),
    "hinge": ("hinge", "tanh", np.tanh, hinge, "binary"),
    "hinge-signed": ("hinge", None, None, hinge, "signed"),
    "squared_hinge": ("squared_hinge", None, None, squared_hinge, "binary"),
    "categorical_hinge": ("categorical_hinge", None, None, categorical_hinge, "one_hot"),
    "cosine_similarity": ("cosine_similarity", None, None, cosine_similarity, "real"),
    "focal": ("binary_focal_crossentropy", "sigmoid", sigmoid, focal, "binary"),
    "focal-balanced-smoothed": (
        losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=0.3, gamma=1.5, label_smoothing=0.1
        ),
        "sigmoid",
        sigmoid,
        lambda y, p: focal(y, p, True, 0.3, 1.5, 0.1),
        "binary",
    ),
    "focal-logits": (
        losses.BinaryFocalCrossentropy(from_logits=True, gamma=3.0),
        None,
        sigmoid,
        lambda y, p: focal(y, p, gamma=3.0),
        "binary",
    ),
    "bce-smoothed": (
        losses.BinaryCrossentropy(label_smoothing=0.2),
        "sigmoid",
        sigmoid,
        lambda y, p: bce_smoothed(y, p, 0.2),
        "binary",
    ),
    "bce-logits-smoothed": (
        losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
        None,
        sigmoid,
        lambda y, p: bce_smoothed(y, p, 0.1),
        "binary",
    ),
    "cce-smoothed": (
        losses.CategoricalCrossentropy(label_smoothing=0.1),
        "softmax",
        softmax,
        lambda y, p: cce_smoothed(y, p, 0.1),
        "one_hot",
    ),
    "cce-logits-smoothed": (
        losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.3),
        None,
        softmax,
        lambda y, p: cce_smoothed(y, p, 0.3),
        "one_hot",
    ),
}


def _model(loss, activation, backend, k=3):
    model = Sequential([Dense(k, activation=activation, input_dim=4)])
    model.compile(optimizer="sgd", loss=loss, backend=backend, dtype="float64", seed=0)
    return model


def _reference_loss(case, x, y, weights):
    _, _, output, reference, _ = CASES[case]
    z = x @ weights[0] + weights[1]
    return np.mean(reference(y, output(z) if output else z))


# LLVM compiles a program per case: those run with the slow tests (CI runs them too)
BACKEND_PARAMS = [
    pytest.param(b, marks=[pytest.mark.slow] if BACKENDS[b].epochs else []) for b in BACKENDS
]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_gradient_match_keras(case, backend, rng):
    loss, activation, _, _, kind = CASES[case]
    model = _model(loss, activation, backend)
    x = rng.standard_normal((10, 4))
    y = targets(kind, rng)
    weights = model.get_weights()
    got = model.evaluate(x, y, batch_size=10)
    np.testing.assert_allclose(got, _reference_loss(case, x, y, weights), rtol=1e-12)
    gradient = model.compute_gradients(x, y)[0]
    direction = rng.standard_normal(weights[0].shape)
    h = 1e-6
    plus = [weights[0] + h * direction, weights[1]]
    minus = [weights[0] - h * direction, weights[1]]
    numeric = (_reference_loss(case, x, y, plus) - _reference_loss(case, x, y, minus)) / (2 * h)
    np.testing.assert_allclose(np.sum(gradient * direction), numeric, rtol=1e-6, atol=1e-9)


def test_the_sum_reduction_adds_the_samples(rng):
    x, y = rng.standard_normal((10, 4)), rng.standard_normal((10, 3))
    summed = _model(losses.Huber(reduction="sum"), None, "numpy")
    mean = _model(losses.Huber(), None, "numpy")
    np.testing.assert_allclose(
        summed.evaluate(x, y, batch_size=10), 10 * mean.evaluate(x, y, batch_size=10), rtol=1e-13
    )


def test_log_cosh_is_finite_at_extreme_errors(rng):
    model = _model("log_cosh", None, "numpy")
    model.set_weights([1e3 * np.eye(4, 3), np.zeros_like(model.get_weights()[1])])
    x = np.full((2, 4), 1e3)  # errors of 1e6: cosh overflows, log cosh does not
    value = model.evaluate(x, np.zeros((2, 3)))
    np.testing.assert_allclose(value, np.mean(np.abs(x @ model.get_weights()[0])) - np.log(2))
    assert all(np.all(np.isfinite(g)) for g in model.compute_gradients(x, np.zeros((2, 3))))


def test_label_smoothing_is_kept_in_the_config():
    assert losses.get(losses.CategoricalCrossentropy(label_smoothing=0.1)).get_config() == {
        "name": "categorical_crossentropy",
        "from_logits": False,
        "label_smoothing": 0.1,
    }
    assert losses.Huber(delta=2.0).get_config() == {
        "name": "huber",
        "reduction": "sum_over_batch_size",
        "delta": 2.0,
    }


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: losses.Huber(delta=-1), "Huber: delta must be a number >= 0. Received: delta=-1"),
        (
            lambda: losses.Huber(reduction="none"),
            "unknown reduction 'none'. Known reductions: sum_over_batch_size, sum",
        ),
        (
            lambda: losses.BinaryCrossentropy(label_smoothing=1.5),
            "label_smoothing must be in [0, 1]. Received: label_smoothing=1.5",
        ),
        (
            lambda: losses.BinaryFocalCrossentropy(alpha=2),
            "alpha must be in [0, 1]. Received: alpha=2",
        ),
        (
            lambda: losses.get("hubber"),
            "Unknown loss: 'hubber'. Known losses: binary_crossentropy,",
        ),
    ],
)
def test_bad_loss_arguments(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


def test_unknown_loss_lists_the_new_names():
    with pytest.raises(ValueError) as err:
        losses.get("hubber")
    for name in ("huber", "log_cosh", "kl_divergence", "poisson", "hinge", "squared_hinge",
                 "categorical_hinge", "cosine_similarity", "binary_focal_crossentropy"):  # fmt: skip
        assert name in str(err.value)


def test_a_loss_object_on_arrays_reduces_as_its_reduction_says(rng):
    y, p = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    values = huber(y, p)
    assert losses.Huber()(y, p) == pytest.approx(np.mean(values), rel=1e-12)
    assert losses.Huber(reduction="sum")(y, p) == pytest.approx(np.sum(values), rel=1e-12)
