"""Hand-written activations get the stable form: finite where the math is, equal to the built-ins.

Each case is a formula as a user would type it with ``exp`` and ``log`` and the
built-in (or stable) activation it equals.  Both are compiled on both backends;
at ±1000, ±30, ±1 and 0 the hand-written one must give finite values and
gradients equal to the built-in's, and its gradient must match finite
differences at random points.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import expr as E
from symgrad.core.scalar import expm1, log1p, sigmoid, softplus
from symgrad.core.stable import STABLE_FORMS, stable_form
from symgrad.simplify.cost import same_values, sample_points

exp, log = sp.exp, sp.log
n = E.batch()
BACKENDS = list(symgrad.compiler.BACKENDS)  # every registered backend
EXTREMES = np.array([[-1000.0, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0]])

HANDWRITTEN = {  # name -> (as typed, what it equals)
    "softplus": (lambda x: log(1 + exp(x)), "softplus"),
    "log_sigmoid": (lambda x: -log(1 + exp(-x)), lambda x: -softplus(-x)),
    "log_sigmoid_ratio": (lambda x: log(1 / (1 + exp(-x))), lambda x: -softplus(-x)),
    "log_sigmoid_exp_ratio": (lambda x: log(exp(x) / (1 + exp(x))), lambda x: -softplus(-x)),
    "sigmoid": (lambda x: 1 / (1 + exp(-x)), "sigmoid"),
    "sigmoid_exp_ratio": (lambda x: exp(x) / (1 + exp(x)), "sigmoid"),
    "swish": (lambda x: x / (1 + exp(-x)), "swish"),
    "swish_exp_ratio": (lambda x: x * exp(x) / (1 + exp(x)), "swish"),
    "mish": (lambda x: x * sp.tanh(log(1 + exp(x))), "mish"),
    "tanh": (lambda x: (exp(x) - exp(-x)) / (exp(x) + exp(-x)), "tanh"),
    "tanh_sigmoid": (lambda x: 2 / (1 + exp(-2 * x)) - 1, "tanh"),
    "tanh_ratio": (lambda x: (1 - exp(-2 * x)) / (1 + exp(-2 * x)), "tanh"),
    "softsign": (lambda x: x / (1 + sp.Abs(x)), "softsign"),
    "elu": (lambda x: sp.Piecewise((x, x > 0), (exp(x) - 1, True)), "elu"),
    "log_cosh_2": (lambda x: log(exp(x) + exp(-x)), lambda x: -x + softplus(2 * x)),
}


def _compile(activation, backend):
    Z, R = E.matrix("Z", n, 7), E.matrix("R", n, 7)
    A = E.name("A", E.apply(activation, Z))
    loss = E.total(E.hadamard(R, A))
    return symgrad.compile([Z, R], {"A": A, "dZ": symgrad.grad(loss, Z)}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(HANDWRITTEN))
def test_handwritten_equals_builtin_at_extremes(case, backend, rng):
    typed, builtin = HANDWRITTEN[case]
    r = rng.normal(size=EXTREMES.shape)
    a, dz = _compile(typed, backend)(EXTREMES, r)
    want_a, want_dz = _compile(builtin, backend)(EXTREMES, r)
    assert np.isfinite(a).all() and np.isfinite(dz).all(), (case, a, dz)
    np.testing.assert_allclose(a, want_a, rtol=1e-12, atol=1e-300, err_msg=case)
    np.testing.assert_allclose(dz, want_dz, rtol=1e-12, atol=1e-300, err_msg=case)


@pytest.mark.parametrize("case", list(HANDWRITTEN))
def test_handwritten_gradient_matches_finite_differences(case, check_grad, rng):
    fn = _compile(HANDWRITTEN[case][0], "numpy")
    z, r = rng.normal(scale=3.0, size=(4, 7)), rng.normal(size=(4, 7))
    _, dz = fn(z, r)
    check_grad(lambda zs: float(np.sum(r * fn(zs[0], r)[0])), [z], [dz])


@pytest.mark.parametrize("backend", BACKENDS)
def test_logaddexp_of_two_inputs(backend, rng, check_grad):
    """log(e^a + e^b) = a + softplus(b - a): np.logaddexp's values, softmax weights as gradient."""
    a_, b_ = sp.symbols("a b", real=True)
    Za, Zb, R = E.matrix("Za", n, 7), E.matrix("Zb", n, 7), E.matrix("R", n, 7)
    L = E.elementwise(sp.Lambda((a_, b_), log(exp(a_) + exp(b_))), Za, Zb)
    loss = E.total(E.hadamard(R, L))
    grads = symgrad.grad(loss, Za), symgrad.grad(loss, Zb)
    fn = symgrad.compile([Za, Zb, R], {"L": L, "da": grads[0], "db": grads[1]}, backend=backend)
    za, zb, r = EXTREMES, -EXTREMES[:, ::-1] * 0.5, rng.normal(size=EXTREMES.shape)
    value, da, db = fn(za, zb, r)
    np.testing.assert_allclose(value, np.logaddexp(za, zb), rtol=1e-13)
    total = np.logaddexp(za, zb)  # d/da = e^a / (e^a + e^b)
    np.testing.assert_allclose(da, r * np.exp(za - total), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(db, r * np.exp(zb - total), rtol=1e-12, atol=1e-300)
    za, zb = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    _, da, db = fn(za, zb, r[:1].repeat(3, 0))
    check_grad(
        lambda zs: float(np.sum(r[:1] * fn(zs[0], zs[1], r[:1].repeat(3, 0))[0])),
        [za, zb],
        [da, db],
    )


x = sp.Symbol("x", real=True)
REWRITTEN = [  # (as typed, stable form)
    (log(1 + exp(x)), softplus(x)),
    (x * sp.tanh(log(1 + exp(x))), x * sp.tanh(softplus(x))),
    (-log(1 + exp(-x)), -softplus(-x)),
    (x * exp(x) / (1 + exp(x)), x * sigmoid(x)),
    ((exp(x) - exp(-x)) / (exp(x) + exp(-x)), sp.tanh(x)),
    (log(1 + x**2), log1p(x**2)),
    (log(1 - x), log1p(-x)),
    (exp(x) / 2 - sp.S.Half, expm1(x) / 2),
    (log(exp(x) - 1), log(expm1(x))),
    (log(x), log(x)),  # nothing to do
    (exp(x) + 1, exp(x) + 1),
]


@pytest.mark.parametrize("typed, stable", REWRITTEN, ids=[str(t) for t, _ in REWRITTEN])
def test_rewritten_form_is_exact_and_equal(typed, stable):
    assert stable_form(typed) == stable
    points = [p for p in sample_points([x]) if float(p[x]) > 0 or not typed.has(log(exp(x) - 1))]
    assert same_values(typed, stable, points)


def test_every_row_fires_in_the_cases():
    """Each row of STABLE_FORMS is exercised by a case above (no row escapes the tests)."""
    fired = {name for name, rule in STABLE_FORMS for t, _ in REWRITTEN if _fires(rule, t)}
    assert fired == {name for name, _ in STABLE_FORMS}


def _fires(rule, expr) -> bool:
    return any(rule(e) not in (None, e) for e in sp.preorder_traversal(expr))


def test_derivative_bodies_are_stable_too():
    """sympy.diff of the stable forward body has no exp overflowing against a division."""
    Z = E.matrix("Z", n, 3)
    loss = E.total(E.apply(lambda t: t * sp.tanh(log(1 + exp(t))), Z))
    bodies = [
        node.fn.expr
        for node in E.topological([symgrad.grad(loss, Z)])
        if isinstance(node, E.Elementwise)
    ]
    assert bodies and all(not b.has(sp.exp) for b in bodies), bodies
