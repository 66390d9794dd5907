"""Extreme inputs: no nan or inf where the math is finite, on both backends.

Every activation and every loss is evaluated, with its gradient, at ±1000,
±30, 0 and at probabilities exactly 0 and 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import expr as E
from symgrad import losses

n = E.batch()
BACKENDS = list(symgrad.compiler.BACKENDS)  # every registered backend
EXTREMES = np.array([[-1000.0, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", sorted(E.ACTIVATIONS) + ["softmax"])
def test_activation_and_gradient_finite_at_extremes(act, backend):
    Z = E.matrix("Z", n, 7)
    R = E.matrix("R", n, 7)
    A = E.name("A", E.apply(act, Z))
    loss = E.total(E.hadamard(R, A))
    fn = symgrad.compile([Z, R], {"A": A, "dZ": symgrad.grad(loss, Z)}, backend=backend)
    z = EXTREMES.copy()
    if act == "exponential":  # exp(1000) is finite math but not a float64
        z = np.clip(z, -1000, 30)
    a, dz = fn(z, np.ones_like(z))
    assert np.isfinite(a).all(), (act, a)
    assert np.isfinite(dz).all(), (act, dz)


def _loss_case(name, output):
    """A (1, 1) loss of logits Z through the given output activation."""
    Z = E.matrix("Z", n, 3)
    Y = E.labels("Y", n, 3) if "categorical" in name else E.matrix("Y", n, 3)
    P = E.name("P", E.apply(output, Z))
    return Z, Y, losses.get(name)(Y, P)


LOSS_CASES = [
    ("categorical_crossentropy", "softmax"),
    ("categorical_crossentropy", "linear"),  # probabilities given directly: clipped like Keras
    ("binary_crossentropy", "sigmoid"),
    ("binary_crossentropy", "linear"),
    ("mse", "linear"),
    ("mae", "linear"),
    ("mse", "sigmoid"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, output", LOSS_CASES)
def test_loss_and_gradient_finite_at_extremes(name, output, backend):
    Z, Y, loss = _loss_case(name, output)
    fn = symgrad.compile([Z, Y], {"loss": loss, "dZ": symgrad.grad(loss, Z)}, backend=backend)
    y = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    if output == "linear" and "crossentropy" in name:
        z = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    else:  # confidently right, confidently wrong, saturated both ways
        z = np.array(
            [[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0], [-1000.0, 0, 1000], [0, 0, 0]]
        )
    value, dz = fn(z, y)
    assert np.isfinite(value).all(), (name, output, value)
    assert np.isfinite(dz).all(), (name, output, dz)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_cross_entropy_is_exact_where_keras_clips(backend):
    """log_softmax keeps the true loss (2000/4) instead of Keras's clipped log(1e-7)."""
    Z, Y, loss = _loss_case("categorical_crossentropy", "softmax")
    fn = symgrad.compile([Z, Y], {"loss": loss}, backend=backend)
    z = np.array([[-1000.0, 1000.0, 0.0]] * 4)
    y = np.array([[1.0, 0.0, 0.0]] * 4)
    (value,) = fn(z, y)
    np.testing.assert_allclose(value[0, 0], 2000.0, rtol=1e-12)


def test_clipped_probabilities_match_keras_at_zero():
    """A probability of exactly 0 for the true class costs -log(1e-7), as in Keras."""
    Z, Y, loss = _loss_case("categorical_crossentropy", "linear")
    fn = symgrad.compile([Z, Y], {"loss": loss})
    (value,) = fn(np.array([[0.0, 1.0, 0.0]]), np.array([[1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(value[0, 0], -np.log(1e-7), rtol=1e-6)


def test_mse_grad_formula_is_readable():
    Z, Y, loss = _loss_case("mse", "linear")
    g = symgrad.gradients(loss, [Z])
    assert sp.sstr(g.simplified[Z]) == "(2/(3*n))*(P - Y)"
