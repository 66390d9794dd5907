"""Every rewrite preserves values: graphs compiled with and without the rewrite table agree."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import expr as E
from symgrad import simplify as S
from symgrad.core import scalar
from symgrad.core.stable import stable_form

n = E.batch()
x, y, p = (sp.Symbol(c, real=True) for c in "xyp")
X = E.matrix("X", n, 4)
W = E.matrix("W", 4, 3)
Y = E.labels("Y", n, 3)
Yb = E.matrix("Yb", n, 3)


def _two_ways(inputs, outputs, values):
    on = symgrad.compile(inputs, outputs)
    off = symgrad.compile(inputs, outputs, rewrites=False)
    return on(*values), off(*values), on


def _data(rng, batch=6):
    Xv = rng.standard_normal((batch, 4))
    Wv = rng.standard_normal((4, 3))
    Yv = np.eye(3)[rng.integers(0, 3, batch)]
    return Xv, Wv, Yv


def test_softmax_cross_entropy_fuses_to_p_minus_y(rng):
    Z = E.name("Z", E.matmul(X, W))
    P = E.name("P", E.softmax(Z))
    loss = E.scale(-1 / n, E.total(E.hadamard(Y, E.elementwise(sp.Lambda(p, sp.log(p)), P))))
    g = symgrad.gradients(loss, [W], context=[P])
    assert sp.sstr(g.simplified[W]) == "1/n*X.T*(P - Y)"
    names = [r[0] for r in g.rewrites]
    assert "log_softmax" in names and "rowsum_of_probabilities" in names
    Xv, Wv, Yv = _data(rng)
    on, off, _ = _two_ways([X, W, Y], {"loss": loss, "g": symgrad.grad(loss, W)}, [Xv, Wv, Yv])
    np.testing.assert_allclose(on[0], off[0], rtol=1e-12)
    np.testing.assert_allclose(on[1], off[1], rtol=1e-10, atol=1e-14)


def test_weighted_softmax_cross_entropy_fuses_to_weighted_p_minus_y(rng):
    """Each sample's loss weighted by SW: the weights leave the row sum, rowsum(Y) = 1 folds."""
    SW = E.matrix("SW", n, 1)
    Z = E.name("Z", E.matmul(X, W))
    P = E.name("P", E.softmax(Z))
    log_p = E.elementwise(sp.Lambda(p, sp.log(p)), P)
    loss = E.scale(-1 / n, E.total(E.hadamard(SW, E.row_sum(E.hadamard(Y, log_p)))))
    g = symgrad.gradients(loss, [W], context=[P])
    assert "rowsum_of_scaled_rows" in [r[0] for r in g.rewrites]
    assert "rowsum" not in sp.sstr(g.simplified[W]) and "exp" not in sp.sstr(g.simplified[W])
    Xv, Wv, Yv = _data(rng)
    SWv = rng.uniform(0, 2, (len(Xv), 1))
    inputs, values = [X, W, Y, SW], [Xv, Wv, Yv, SWv]
    on, off, _ = _two_ways(inputs, {"loss": loss, "g": symgrad.grad(loss, W)}, values)
    np.testing.assert_allclose(on[0], off[0], rtol=1e-12)
    np.testing.assert_allclose(on[1], off[1], rtol=1e-10, atol=1e-14)


def _log_softmax_reference(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_softmax_reuses_the_log_softmax_of_the_loss(backend, rng):
    """P = softmax(Z) beside the loss's log_softmax(Z) becomes exp(log_softmax(Z)): one
    row-wise statement, the same values, and exact at logits of +-1000."""
    Z = E.name("Z", E.matmul(X, W))
    P = E.name("P", E.softmax(Z))
    loss = E.scale(-1 / n, E.total(E.hadamard(Y, E.elementwise(sp.Lambda(p, sp.log(p)), P))))
    outputs = {"loss": loss, "P": P, "g": symgrad.grad(loss, W)}
    on = symgrad.compile([X, W, Y], outputs, backend=backend)
    off = symgrad.compile([X, W, Y], outputs, backend=backend, rewrites=False)
    assert "softmax_from_log_softmax" in on.rewrites

    def softmaxes(fn):
        return [s.log for s in fn.program.body if type(s).__name__ == "Softmax"]

    assert softmaxes(on) == [True] and softmaxes(off) == [False]  # off: log(P) as written
    assert "P = exp(log_softmax(Z))" in on.source or backend == "llvm"
    Xv, Wv, Yv = _data(rng)
    for got, want in zip(on(Xv, Wv, Yv), off(Xv, Wv, Yv)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    Xv[0] = [1000.0, -1000.0, 0.0, 0.0]  # logits in the thousands: exp(log_softmax) is exact
    Wv = np.eye(4, 3)
    loss_v, p_v, g_v = on(Xv, Wv, Yv)
    z = Xv @ Wv
    np.testing.assert_allclose(p_v, np.exp(_log_softmax_reference(z)), rtol=1e-14, atol=0)
    np.testing.assert_allclose(loss_v[0, 0], -(Yv * _log_softmax_reference(z)).sum() / len(z))
    np.testing.assert_allclose(g_v, Xv.T @ (p_v - Yv) / len(z), rtol=1e-12, atol=1e-15)


def test_probability_rewrite_needs_probability_labels():
    """With plain (not declared) labels the general log-softmax gradient stays."""
    Yplain = E.matrix("Yp", n, 3)
    Z = E.matmul(X, W)
    loss = E.scale(-1 / n, E.total(E.hadamard(Yplain, E.log_softmax(Z))))
    g = symgrad.gradients(loss, [W])
    assert "rowsum_of_probabilities" not in [r[0] for r in g.rewrites]
    assert "rowsum" in sp.sstr(g.simplified[W])


def test_sigmoid_binary_cross_entropy_fuses_and_is_stable():
    Z = E.name("Z", E.matmul(X, W))
    P = E.name("P", E.apply("sigmoid", Z))
    bce = sp.Lambda((p, y), y * sp.log(p) + (1 - y) * sp.log(1 - p))
    loss = E.scale(-1 / (3 * n), E.total(E.elementwise(bce, P, Yb)))
    g = symgrad.gradients(loss, [W], context=[P])
    assert "log_sigmoid" in [r[0] for r in g.rewrites]
    assert sp.sstr(g.simplified[W]) == "(1/(3*n))*X.T*(P - Yb)"
    fn = symgrad.compile([X, W, Yb], {"loss": loss, "g": symgrad.grad(loss, W)})
    Xv = np.array([[1.0, 0, 0, 0], [0, 1, 0, 0]])
    Wv = np.full((4, 3), 1000.0)
    Wv[1] = -1000.0
    Yv = np.array([[0.0, 1, 0], [1, 0, 1]])  # confidently wrong and right at once
    loss_v, g_v = fn(Xv, Wv, Yv)
    assert np.isfinite(loss_v).all() and np.isfinite(g_v).all()
    np.testing.assert_allclose(loss_v[0, 0], (1000 * 4) / 6, rtol=1e-12)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "exponential"])
def test_output_form_derivatives_preserve_values(act, rng):
    Z = E.name("Z", E.matmul(X, W))
    A = E.name("A", E.apply(act, Z))
    loss = E.total(E.hadamard(A, A))
    g = symgrad.grad(loss, W)
    Xv, Wv, _ = _data(rng)
    on, off, fn = _two_ways([X, W], {"g": g}, [Xv, Wv])
    np.testing.assert_allclose(on[0], off[0], rtol=1e-11, atol=1e-13)
    if act in ("sigmoid", "tanh", "relu"):
        assert "output_form" in fn.rewrites
    if act == "exponential":  # exp' = exp: the derivative *is* the forward value
        assert "output_form" not in fn.rewrites and "adopt_name" in fn.rewrites


def test_output_form_formulas():
    Z = E.name("Z", E.matmul(X, W))
    expected = {"sigmoid": "A*(1 - A)", "tanh": "1 - A**2", "relu": "[A > 0]", "exponential": "A"}
    for act, text in expected.items():
        A = E.name("A", E.apply(act, Z))
        g = symgrad.gradients(E.total(A), [W], context=[A])
        assert text in sp.sstr(g.simplified[W]), (act, g.simplified[W])


def test_cheapest_form_is_value_preserving_and_not_costlier():
    bodies = [
        y * (1 - scalar.sigmoid(x)) - (1 - y) * scalar.sigmoid(x),
        (x + 1) ** 2 - x**2,
        sp.exp(x) * y + sp.exp(x) * (1 - y),
    ]
    for body in bodies:
        best = S.cheapest_form(body)
        assert S.scalar_cost(best) <= S.scalar_cost(body)
        assert S.same_values(body, best, S.cost.sample_points([x, y]))


def test_log_sigmoid_scalar_rules():
    z = sp.Symbol("z", real=True)
    assert stable_form(sp.log(scalar.sigmoid(z))) == -scalar.softplus(-z)
    assert stable_form(sp.log(1 - scalar.sigmoid(z))) == -scalar.softplus(z)
    for v in [-30.0, -1.0, 0.0, 2.0, 30.0]:
        lhs = sp.log(1 / (1 + sp.exp(-sp.Float(v, 50))))
        rhs = (-scalar.softplus(-z)).rewrite(sp.exp).subs(z, sp.Float(v, 50))
        assert abs(float(lhs - rhs)) < 1e-30


def test_common_subexpressions_computed_once():
    Z = E.name("Z", E.matmul(X, W))
    A = E.name("A", E.apply("tanh", Z))
    loss = E.total(E.hadamard(A, A))
    fn = symgrad.compile([X, W], {"loss": loss, "g": symgrad.grad(loss, W)})
    gemms = [s for s in fn.program.body if type(s).__name__ == "Gemm"]
    assert len(gemms) == 2  # X W once, X.T (...) once: the forward GEMM is shared
    assert sum(1 for s in fn.program.body if getattr(s.out, "name", "") == "A") == 1


def test_every_rewrite_has_a_case_here():
    covered = {
        "softmax_from_log_softmax",
        "adopt_name",
        "rowsum_of_probabilities",
        "rowsum_of_scaled_rows",
        "log_softmax",
        "log_sigmoid",
        "output_form",
    }
    assert set(S.rule_names()) == covered
