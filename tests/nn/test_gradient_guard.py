"""A step whose loss is finite but whose gradients are not writes no weight."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import Activation, Dense, NonFiniteLossError, Sequential
from symgrad import expr as E

BACKENDS = list(symgrad.compiler.BACKENDS)  # every registered backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_checks_are_guarded_but_not_returned(backend):
    n = E.batch()
    X, w = E.matrix("X", n, 2), E.matrix("w", 2, 1)
    loss = E.total(E.matmul(X, w))
    g = symgrad.grad(loss, w)
    fn = symgrad.compile(
        [X, w],
        {"loss": loss},
        updates={w: E.sub(w, E.scale(sp.Rational(1, 10), g))},
        checks={"grad_total": E.total(g)},
        backend=backend,
    )
    wv = np.ones((2, 1))
    (out,) = fn(np.ones((3, 2)), wv)  # one output: the check is not returned
    assert out.shape == (1, 1)
    np.testing.assert_allclose(wv, np.full((2, 1), 0.7))
    bad = np.array([[np.inf, 1.0], [-np.inf, 1.0]])  # the loss is nan too; the gradient inf - inf
    refused = r"^fn: grad_total is not finite \((nan|nan or inf)\); no input was updated$"
    with pytest.raises(FloatingPointError, match=refused), np.errstate(invalid="ignore"):
        fn(bad, wv)
    np.testing.assert_allclose(wv, np.full((2, 1), 0.7))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_stops_when_a_gradient_is_nan_and_the_loss_is_not(backend):
    """sqrt(|z|) at z = 0: the loss is 0, its derivative 0/0 = nan."""
    z = sp.Symbol("z", real=True)
    model = Sequential(
        [
            Dense(1, input_dim=2, kernel_initializer="zeros"),
            Activation(sp.sqrt(sp.Abs(z))),
        ]
    )
    model.compile(optimizer="sgd", loss="mse", backend=backend, dtype="float64", seed=0)
    before = [w.copy() for w in model.get_weights()]
    x, y = np.ones((4, 2)), np.ones((4, 1))
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 1"):
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for b, a in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0
