"""codegen.numpy: every statement kind and scalar function against NumPy / SymPy references."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import traceback

import numpy as np
import pytest
import sympy as sp

from codegen.ir import Gemm, Guard, Map, Program, Reduce, Softmax, Transpose, Value, plan_buffers
from codegen.numpy import NumpyFunction, compile_program, numpy_source
from symgrad.core.scalar import relu, sigmoid, softplus, step

n = sp.Symbol("n", integer=True, positive=True)
x, y, z, w, g = sp.symbols("x y z w g")
lr = sp.Symbol("lr")
RNG = np.random.default_rng(0)


def rand(*shape, low=-2.0, high=2.0, dtype="float64"):
    return RNG.uniform(low, high, shape).astype(dtype)


def elementwise(body, shapes: dict, out_shape=(n, 4), scalars=(), dtype="float64") -> Program:
    """One Map statement: out = body(args); each arg symbol gets a Value of its shape."""
    args = tuple((s, Value(str(s).upper(), shape)) for s, shape in shapes.items())
    out = Value("OUT", out_shape)
    body_stmt = Map(out, body, args, comment=f"OUT = {body}")
    return Program(
        "f", tuple(v for _, v in args), scalars, (body_stmt,), (out,), dtype=dtype, batch=(n,)
    )


def exact(body, env: dict) -> float:
    """SymPy's own value of ``body`` at one point, at 30 digits (sigmoid/softplus by definition)."""
    body = body.replace(sigmoid, lambda a: 1 / (1 + sp.exp(-a)))
    body = body.replace(softplus, lambda a: sp.log(1 + sp.exp(a)))
    point = {s: sp.Float(float(v), 30) for s, v in env.items()}
    return float(sp.N(body.xreplace(point), 30))


def reference(body, arrays: dict, shape, scalars: dict | None = None) -> np.ndarray:
    full = {s: np.broadcast_to(a, shape) for s, a in arrays.items()}
    out = np.empty(shape)
    for idx in np.ndindex(*shape):
        out[idx] = exact(body, {**{s: a[idx] for s, a in full.items()}, **(scalars or {})})
    return out


# --------------------------------------------------------------------------
# Scalar vocabulary: (body, low, high) with x, y drawn from [low, high].

SCALAR_CASES = [
    (x + y, -2, 2),
    (x - 2 * y + 1, -2, 2),
    (x * y, -2, 2),
    (x / y, 0.5, 2),
    (-x, -2, 2),
    (3 - x, -2, 2),
    (x**2, -2, 2),
    (x**3, -2, 2),
    (x**4 * y, -2, 2),
    (x**5, -2, 2),
    (1 / x, 0.5, 2),
    (x**-3 + y, 0.5, 2),
    (sp.sqrt(x), 0.1, 4),
    (1 / sp.sqrt(x), 0.1, 4),
    (x**1.5, 0.1, 4),
    (x**y, 0.1, 3),
    (2**x, -3, 3),
    (sp.exp(x), -5, 5),
    (sp.log(x), 0.1, 5),
    (sp.tanh(x), -5, 5),
    (sp.Abs(x), -2, 2),
    (sp.sign(x), -2, 2),
    (sp.Max(x, y), -2, 2),
    (sp.Min(x, 0, y), -2, 2),
    (sp.Max(x, 0), -2, 2),
    (sp.Heaviside(x), -2, 2),
    (sp.Heaviside(x, 0), -2, 2),
    (sp.Heaviside(x, 1), -2, 2),
    (sp.Heaviside(x, sp.Rational(3, 10)), -2, 2),
    (relu(x), -2, 2),
    (step(x) * y, -2, 2),
    (sp.Piecewise((y, x > 0), (0, True)), -2, 2),
    (sp.Piecewise((0, x <= 0), (y, True)), -2, 2),
    (y * sp.Piecewise((1, x > 0), (0, True)), -2, 2),  # relu' as a float mask
    (sp.Piecewise((0, x < 0), (1, True)) - y, -2, 2),
    (sp.Piecewise((sp.log(x), x > 0), (0, True)), -2, 2),  # log of the untaken branch is nan
    (sp.Piecewise((sp.exp(x), x < 0), (1 + x, True)), -2, 2),
    (sp.Piecewise((x, x > 1), (y, x < -1), (2 * x, True)), -2, 2),
    (sp.Piecewise((y, (x > 0) & (x < 1)), (x, (x < -1) | (y > 1)), (0, True)), -2, 2),
    (sp.Piecewise((x, x >= y), (y, True)), -2, 2),
    (sp.erf(x), -4, 4),
    (sp.erf(x) * y, -0.9, 0.9),
    (sp.cos(x) * y, -10, 10),
    (sp.floor(x) - y, -10, 10),
    (sigmoid(x), -5, 5),
    (sigmoid(2 * x), -5, 5),
    (sigmoid(x) * (1 - sigmoid(x)) * y, -5, 5),
    (softplus(x), -5, 5),
    (softplus(-x) + softplus(x), -5, 5),
    (x * sp.exp(-(x**2) / 2) + sp.tanh(y) ** 2, -3, 3),
]


@pytest.mark.parametrize("body, low, high", SCALAR_CASES, ids=[str(c[0]) for c in SCALAR_CASES])
def test_scalar_function_at_random_points(body, low, high):
    X, Y = rand(3, 4, low=low, high=high), rand(3, 4, low=low, high=high)
    fn = compile_program(elementwise(body, {x: (n, 4), y: (n, 4)}))
    (got,) = fn(X, Y)
    want = reference(body, {x: X, y: Y}, (3, 4))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


EXTREME_CASES = [
    sigmoid(x),
    sigmoid(x) * (1 - sigmoid(x)),
    softplus(x),
    -softplus(-x),  # log(sigmoid(x))
    sp.tanh(x),
    sp.erf(x),
    sp.Heaviside(x),
    step(x),
    relu(x),
    sp.sign(x),
    sp.Abs(x),
    sp.Max(x, 0),
    sp.Min(x, 0),
    sp.Piecewise((sp.log(x), x > 0), (0, True)),
    sp.Piecewise((sp.exp(x), x < 0), (1, True)),
]


@pytest.mark.parametrize("body", EXTREME_CASES, ids=str)
def test_scalar_function_at_extremes_is_finite_and_exact(body):
    X = np.array([[-1000.0, -30.0, -1.0, -1e-300, 0.0], [1e-300, 0.5, 1.0, 30.0, 1000.0]])
    fn = compile_program(elementwise(body, {x: (n, 5)}, out_shape=(n, 5)))
    (got,) = fn(X)  # pytest turns any overflow / invalid warning into an error
    assert np.isfinite(got).all()
    # sigmoid = tanh(x/2)/2 + 1/2 is exact to ~1 ulp of 1/2 (absolute), not relative in its tail
    np.testing.assert_allclose(got, reference(body, {x: X}, X.shape), rtol=1e-13, atol=2e-16)


@pytest.mark.parametrize(
    "body", [sigmoid(x), softplus(x), -softplus(-x), sp.erf(x), sp.tanh(x)], ids=str
)
def test_float32_scalar_functions_at_extremes(body):
    X = np.array([[-1000.0, -30.0, -1.0, 0.0], [0.5, 1.0, 30.0, 1000.0]], dtype=np.float32)
    (got,) = compile_program(elementwise(body, {x: (n, 4)}, dtype="float32"))(X)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    want = reference(body, {x: X.astype(np.float64)}, X.shape)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


def test_erf_matches_math_erf_everywhere():
    points = [-1e300, -8.0, -1.0, -0.0, 1e-320, 1.0, 8.0, 1e300]
    X = np.concatenate([np.linspace(-7, 7, 1400), points]).reshape(-1, 8)
    (got,) = compile_program(elementwise(sp.erf(x), {x: (n, 8)}, (n, 8)))(X)
    want = np.vectorize(math.erf)(X)
    np.testing.assert_allclose(got, want, rtol=2e-15, atol=1e-320)


def test_uniform_subexpressions_use_scalars_and_batch_size():
    c = sp.Symbol("c")
    body = x * lr / n + sp.exp(c) - sigmoid(c) + sp.Max(c, 2) + sp.Piecewise((1, c > 0), (2, True))
    p = elementwise(body, {x: (n, 4)}, scalars=(lr, c))
    X = rand(3, 4)
    (got,) = compile_program(p)(X, 0.1, 0.7)
    want = reference(body, {x: X}, (3, 4), {lr: 0.1, c: 0.7, n: 3})
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert "lr / n" in numpy_source(p)


def test_unknown_function_raises_naming_it():
    with pytest.raises(NotImplementedError, match="sin"):
        compile_program(elementwise(sp.sin(x) + 1, {x: (n, 4)}))


def test_unknown_symbol_raises_naming_it():
    with pytest.raises(ValueError, match="unknown symbol q"):
        compile_program(elementwise(x + sp.Symbol("q"), {x: (n, 4)}))


# --------------------------------------------------------------------------
# Statements


@pytest.mark.parametrize(
    "shape_y, shape_z",
    [((1, 4), (n, 1)), ((n, 4), (1, 1)), ((1, 1), (1, 4)), ((n, 1), (n, 1))],
    ids=["row+col", "full+point", "point+row", "col+col"],
)
def test_map_broadcasting(shape_y, shape_z):
    body = x * sp.exp(y) - z * sigmoid(y + z)  # intermediates of (1, c), (r, 1) and (1, 1) kinds
    p = elementwise(body, {x: (n, 4), y: shape_y, z: shape_z})
    sub = {n: 3}
    arrays = {
        s: rand(*(int(sp.sympify(d).subs(sub)) for d in shape))
        for s, shape in [(x, (n, 4)), (y, shape_y), (z, shape_z)]
    }
    (got,) = compile_program(p)(*arrays.values())
    np.testing.assert_allclose(got, reference(body, arrays, (3, 4)), rtol=1e-13)


def test_map_whose_body_is_one_argument_or_a_constant_broadcasts_it():
    b = rand(1, 4)
    p = Program(
        "f",
        (Value("X", (n, 4)), Value("B", (1, 4))),
        (),
        (
            Map(Value("O", (n, 4)), y, ((y, Value("B", (1, 4))),)),
            Map(Value("C", (n, 4)), sp.Integer(7), ()),
        ),
        (Value("O", (n, 4)), Value("C", (n, 4))),
        batch=(n,),
    )
    o, c = compile_program(p)(rand(3, 4), b)
    np.testing.assert_array_equal(o, np.broadcast_to(b, (3, 4)))
    np.testing.assert_array_equal(c, np.full((3, 4), 7.0))


def test_map_in_place_over_a_dying_value_reads_it_before_overwriting():
    X, W = Value("X", (n, 3)), Value("W", (3, 4))
    Z, A, O = Value("Z", (n, 4)), Value("A", (n, 4)), Value("O", (1, 4))
    body = (
        z * z * 3 + z - sp.exp(z) * z
    )  # z read by several ops while A is computed into Z's buffer
    p = Program(
        "f",
        (X, W),
        (),
        (
            Gemm(Z, X, W),
            Map(A, body, ((z, Z),)),
            Reduce(O, a_ := sp.Symbol("a"), ((a_, A),), (n, 4), 0),
        ),
        (O,),
        batch=(n,),
    )
    assert plan_buffers(p).buffer["A"] == "Z"
    Xv, Wv = rand(5, 3), rand(3, 4)
    (got,) = compile_program(p)(Xv, Wv)
    Zv = Xv @ Wv
    np.testing.assert_allclose(
        got, (3 * Zv**2 + Zv - np.exp(Zv) * Zv).sum(0, keepdims=True), rtol=1e-13
    )


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha", [sp.S.One, -sp.S.One, sp.Rational(1, 2), 2 * lr])
@pytest.mark.parametrize(
    "sizes", [(6, 5, 2), (2, 7, 6), (6, 2, 7)], ids=["out-small", "a-small", "b-small"]
)
def test_gemm(trans_a, trans_b, alpha, sizes):
    r, k, c = sizes
    A = Value("A", (k, r) if trans_a else (r, k))
    B = Value("B", (c, k) if trans_b else (k, c))
    O = Value("O", (r, c))
    p = Program("mm", (A, B), (lr,), (Gemm(O, A, B, trans_a, trans_b, alpha),), (O,), batch=())
    Av, Bv = rand(*A.shape), rand(*B.shape)
    (got,) = compile_program(p)(Av, Bv, 0.3)
    a = Av.T if trans_a else Av
    b = Bv.T if trans_b else Bv
    scale = float(alpha.subs(lr, 0.3))
    np.testing.assert_allclose(got, scale * (a @ b), rtol=1e-13)


@pytest.mark.parametrize("axis", [0, 1, None])
def test_reduce(axis):
    out_shape = {0: (1, 4), 1: (n, 1), None: (1, 1)}[axis]
    X, B, C = Value("X", (n, 4)), Value("B", (1, 4)), Value("C", (n, 1))
    sums = [
        (x, ((x, X),)),  # one argument: summed directly
        (-x * y / n, ((x, X), (y, X))),  # a product: vdot for axis=None; -1/n applied after the sum
        (sp.exp(x) * y + z * lr, ((x, X), (y, B), (z, C))),
        (y * 2, ((y, B),)),  # a broadcast row summed over the domain
    ]
    body, outs = [], []
    for k, (b, args) in enumerate(sums):
        outs.append(Value(f"S{k}", out_shape))
        body.append(Reduce(outs[-1], b, args, (n, 4), axis))
    p = Program("r", (X, B, C), (lr,), tuple(body), tuple(outs), batch=(n,))
    Xv, Bv, Cv = rand(3, 4), rand(1, 4), rand(3, 1)
    got = compile_program(p)(Xv, Bv, Cv, 0.5)
    wants = [Xv, -Xv * Xv / 3, np.exp(Xv) * Bv + Cv * 0.5, np.broadcast_to(Bv * 2, (3, 4))]
    for g_, want in zip(got, wants):
        np.testing.assert_allclose(g_, want.sum(axis=axis, keepdims=True), rtol=1e-13)


def test_full_sums_use_vdot_and_scalar_arithmetic():
    X, B = Value("X", (n, 3)), Value("B", (1, 3))
    S, T, Q, E = (Value(k, (1, 1)) for k in ("S", "T", "Q", "E"))
    body = (
        Reduce(S, (x - y) ** 2 / n, ((x, X), (y, B)), (n, 3), None),  # vdot of a computed array
        Reduce(T, sp.Piecewise((sp.log(x), x > 0), (0, True)), ((x, X),), (n, 3), None),
        Map(Q, 3 * x * y - x / y + sp.Abs(y) ** 2, ((x, S), (y, T))),  # (1, 1): plain arithmetic
        Map(E, sp.exp(x) + y, ((x, S), (y, T))),  # (1, 1) with exp: through ufuncs
    )
    p = Program("sums", (X, B), (), body, (S, T, Q, E), batch=(n,))
    fn = compile_program(p)
    assert "vdot(tmp0, tmp0) / n" in fn.source and "Q[0, 0] = " in fn.source
    Xv, Bv = rand(4, 3), rand(1, 3)
    s_, t_, q_, e_ = fn(Xv, Bv)
    s_want = ((Xv - Bv) ** 2).sum() / 4
    with np.errstate(divide="ignore", invalid="ignore"):
        t_want = np.where(Xv > 0, np.log(Xv), 0).sum()
    np.testing.assert_allclose([s_[0, 0], t_[0, 0]], [s_want, t_want], rtol=1e-13)
    np.testing.assert_allclose(
        q_[0, 0], 3 * s_want * t_want - s_want / t_want + t_want**2, rtol=1e-13
    )
    np.testing.assert_allclose(e_[0, 0], np.exp(s_want) + t_want, rtol=1e-13)


def test_two_batch_symbols():
    m = sp.Symbol("m", integer=True, positive=True)
    X, W, O = Value("X", (n, m)), Value("W", (m, 2)), Value("O", (n, 2))
    R = Value("R", (n, 1))
    body = (Gemm(O, X, W, alpha=1 / m), Reduce(R, x * n, ((x, X),), (n, m), 1))
    p = Program("two", (X, W), (), body, (O, R), batch=(n, m))
    fn = compile_program(p)
    for rows, cols in [(3, 4), (5, 2), (3, 4)]:
        Xv, Wv = rand(rows, cols), rand(cols, 2)
        o, r = fn(Xv, Wv)
        np.testing.assert_allclose(o, Xv @ Wv / cols, rtol=1e-13)
        np.testing.assert_allclose(r, Xv.sum(1, keepdims=True) * rows, rtol=1e-13)
    assert sorted(fn._buffers) == [(3, 4), (5, 2)]
    with pytest.raises(
        ValueError, match=r"W must have shape \(m, 2\) = \(4, 2\) \(n = 3 from X.shape\[0\], m = 4"
    ):
        fn(rand(3, 4), rand(5, 2))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_is_max_shifted(log, dtype):
    Z, P = Value("Z", (n, 3)), Value("P", (n, 3))
    p = Program("sm", (Z,), (), (Softmax(P, Z, log=log),), (P,), dtype=dtype, batch=(n,))
    rows = [[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1.0, 2.0, 3.0], [0.0, 0.0, 80.0]]
    Zv = np.array(rows)
    (got,) = compile_program(p)(Zv.astype(dtype))
    shifted = Zv - Zv.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    assert got.dtype == dtype and np.isfinite(got).all()
    rtol = 1e-14 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(got, logp if log else np.exp(logp), rtol=rtol, atol=1e-300)


def test_transpose():
    A, T = Value("A", (n, 3)), Value("T", (3, n))
    p = Program("t", (A,), (), (Transpose(T, A),), (T,), batch=(n,))
    Av = rand(4, 3)
    (got,) = compile_program(p)(Av)
    np.testing.assert_array_equal(got, Av.T)
    assert got.flags.c_contiguous


# --------------------------------------------------------------------------
# A training step: updates, guards, dtypes, batch sizes


def sgd_step(dtype="float64", guard="early") -> Program:
    """Least squares SGD; the loss guard runs before the new parameters ("early"), after them
    ("late": then they cannot be computed in place), or not at all (None)."""
    X, Y, W, b = Value("X", (n, 3)), Value("Y", (n, 2)), Value("W", (3, 2)), Value("b", (1, 2))
    Z, E, loss = Value("Z", (n, 2)), Value("E", (n, 2)), Value("loss", (1, 1))
    dW, db = Value("dW", (3, 2)), Value("db", (1, 2))
    Wn, bn = Value("W_new", (3, 2)), Value("b_new", (1, 2))
    check = [Guard(loss, "loss")]
    body = [
        Gemm(Z, X, W, comment="Z = X W"),
        Map(E, z + w - y, ((z, Z), (w, b), (y, Y)), comment="E = Z + b - Y"),
        Reduce(loss, x**2 / (2 * n), ((x, E),), (n, 2), None, comment="loss = sum(E^2) / 2n"),
        *(check if guard == "early" else []),
        Gemm(dW, X, E, trans_a=True, alpha=1 / n, comment="dW = X.T E / n"),
        Reduce(db, x / n, ((x, E),), (n, 2), 0, comment="db = colsum(E) / n"),
        Map(Wn, w - lr * g, ((w, W), (g, dW)), comment="W - lr dW"),
        Map(bn, w - lr * g, ((w, b), (g, db)), comment="b - lr db"),
        *(check if guard == "late" else []),
    ]
    return Program(
        "sgd_step",
        (X, Y, W, b),
        (lr,),
        tuple(body),
        (loss,),
        ((W, Wn), (b, bn)),
        dtype=dtype,
        batch=(n,),
    )


def sgd_reference(X, Y, W, b, rate):
    E = X @ W + b - Y
    m = X.shape[0]
    return (E**2).sum() / (2 * m), W - rate * X.T @ E / m, b - rate * E.sum(0, keepdims=True) / m


def sgd_data(m=5, dtype="float64"):
    return [
        rand(m, 3, dtype=dtype),
        rand(m, 2, dtype=dtype),
        rand(3, 2, dtype=dtype),
        rand(1, 2, dtype=dtype),
    ]


@pytest.mark.parametrize("guard", ["early", "late", None])
def test_training_step_updates_parameters_in_place(guard):
    p = sgd_step(guard=guard)
    fn = compile_program(p)
    X, Y, W, b = sgd_data()
    W0, b0 = W.copy(), b.copy()
    loss_want, W_want, b_want = sgd_reference(X, Y, W, b, 0.1)
    (loss,) = fn(X, Y, W, b, 0.1)
    assert loss.shape == (1, 1) and loss[0, 0] == pytest.approx(loss_want, rel=1e-13)
    np.testing.assert_allclose(W, W_want, rtol=1e-13)
    np.testing.assert_allclose(b, b_want, rtol=1e-13)
    assert not np.array_equal(W, W0) and not np.array_equal(b, b0)
    in_place = "W_new = W  # computed in place" in fn.source
    assert in_place == (guard != "late")  # never computed in place while a guard may still fail


def test_outputs_are_new_arrays_owned_by_the_caller():
    p = sgd_step()
    fn = compile_program(p)
    (loss1,) = fn(*sgd_data(), 0.1)
    kept = loss1.copy()
    (loss2,) = fn(*sgd_data(), 0.1)
    assert loss1 is not loss2 and not np.shares_memory(loss1, loss2)
    np.testing.assert_array_equal(loss1, kept)


@pytest.mark.parametrize("guard", ["early", "late"])
def test_guard_failure_raises_and_leaves_inputs_untouched(guard):
    fn = compile_program(sgd_step(guard=guard))
    X, Y, W, b = sgd_data()
    X[2, 1] = np.nan
    before = [a.copy() for a in (X, Y, W, b)]
    with pytest.raises(FloatingPointError, match="sgd_step: loss is not finite") as info:
        fn(X, Y, W, b, 0.1)
    for a, a0 in zip((X, Y, W, b), before):
        np.testing.assert_array_equal(a, a0)
    text = "".join(traceback.format_exception(info.value))
    assert "<symgrad:sgd_step" in text
    assert "raise _not_finite('sgd_step', 'loss', loss[0, 0])" in text  # the generated line itself


def test_float32_program():
    fn = compile_program(sgd_step(dtype="float32"))
    data = sgd_data(dtype="float32")
    loss_want, W_want, b_want = sgd_reference(*[a.astype(np.float64) for a in data], 0.1)
    (loss,) = fn(*data, 0.1)
    assert loss.dtype == np.float32 and data[2].dtype == np.float32
    assert loss[0, 0] == pytest.approx(loss_want, rel=1e-5)
    np.testing.assert_allclose(data[2], W_want, rtol=1e-5)
    with pytest.raises(TypeError, match="must have dtype float32; Received: X with dtype float64"):
        fn(*sgd_data(), 0.1)


def test_two_batch_sizes_get_their_own_buffers():
    fn = compile_program(sgd_step())
    for m in (5, 8, 5):
        X, Y, W, b = sgd_data(m)
        want = sgd_reference(X, Y, W, b, 0.1)
        (loss,) = fn(X, Y, W, b, 0.1)
        assert loss[0, 0] == pytest.approx(want[0], rel=1e-13)
        np.testing.assert_allclose(W, want[1], rtol=1e-13)
    assert sorted(fn._buffers) == [(5,), (8,)]
    fn.clear_buffers()
    assert not fn._buffers


def updates_program(updates_body, updates) -> Program:
    A, B = Value("A", (2, 3)), Value("B", (2, 3))
    return Program("u", (A, B), (), tuple(updates_body), (), tuple(updates))


def test_updates_read_the_old_inputs_together():
    A, B = Value("A", (2, 3)), Value("B", (2, 3))
    An, Bn = Value("A_new", (2, 3)), Value("B_new", (2, 3))
    body = [Map(An, x + y, ((x, A), (y, B))), Map(Bn, y - x, ((x, A), (y, B)))]  # each reads both
    fn = compile_program(updates_program(body, [(A, An), (B, Bn)]))
    a, b = rand(2, 3), rand(2, 3)
    a0, b0 = a.copy(), b.copy()
    assert fn(a, b) == ()
    np.testing.assert_allclose(a, a0 + b0)
    np.testing.assert_allclose(b, b0 - a0)


def test_updates_that_swap_inputs():
    A, B = Value("A", (2, 3)), Value("B", (2, 3))
    fn = compile_program(updates_program([], [(A, B), (B, A)]))
    a, b = rand(2, 3), rand(2, 3)
    a0, b0 = a.copy(), b.copy()
    fn(a, b)
    np.testing.assert_array_equal(a, b0)
    np.testing.assert_array_equal(b, a0)


def test_update_whose_new_value_is_also_an_output_is_copied():
    A, B, S = Value("A", (2, 3)), Value("B", (2, 3)), Value("S", (2, 3))
    p = Program("u", (A, B), (), (Map(S, x * y, ((x, A), (y, B))),), (S, A), ((A, S),))
    fn = compile_program(p)
    a, b = rand(2, 3), rand(2, 3)
    a0 = a.copy()
    s, old_a = fn(a, b)
    np.testing.assert_allclose(s, a0 * b)
    np.testing.assert_array_equal(old_a, a0)  # outputs read before the update
    np.testing.assert_allclose(a, a0 * b)
    assert not np.shares_memory(s, a)


def test_in_place_update_through_a_multi_step_piecewise():
    A, An = Value("A", (2, 3)), Value("A_new", (2, 3))
    body = sp.Piecewise((2 * x, x > 0), (sp.exp(x) * x, True))
    fn = compile_program(updates_program([Map(An, body, ((x, A),))], [(A, An)]))
    assert "A_new = A  # computed in place" in fn.source
    a = rand(2, 3)
    want = np.where(a > 0, 2 * a, np.exp(a) * a)
    fn(a, rand(2, 3))
    np.testing.assert_allclose(a, want, rtol=1e-14)


def test_plan_buffers_update_sources_that_are_inputs_or_still_needed():
    # fixed in codegen.ir.plan_buffers: an update from an input raised StopIteration, and an
    # update could be computed in place while another update still copied the old input
    A, B = Value("A", (2, 3)), Value("B", (2, 3))
    An = Value("A_new", (2, 3))
    p = updates_program([Map(An, x * 2, ((x, A),))], [(A, An), (B, A)])
    assert plan_buffers(p).in_place_updates == {}
    fn = compile_program(p)
    a, b = rand(2, 3), rand(2, 3)
    a0 = a.copy()
    fn(a, b)
    np.testing.assert_allclose(a, 2 * a0)
    np.testing.assert_array_equal(b, a0)
    q = Program("q", (A, B), (), (Map(An, x * 2, ((x, A),)),), (A,), ((A, An),))
    assert plan_buffers(q).in_place_updates == {}  # A's old value is an output


def test_malformed_programs_are_rejected_at_compile_time():
    A, B, C = Value("A", (2, 3)), Value("B", (2, 3)), Value("C", (2, 3))
    with pytest.raises(ValueError, match="reads C before it is computed"):
        compile_program(updates_program([Map(B, x, ((x, C),))], []))
    with pytest.raises(ValueError, match="C is never computed"):
        compile_program(updates_program([], [(A, C)]))
    with pytest.raises(ValueError, match="A is updated twice"):
        compile_program(updates_program([], [(A, B), (A, B)]))
    with pytest.raises(ValueError, match=r"guard on A needs a \(1, 1\) value"):
        compile_program(updates_program([Guard(A, "A")], []))


# --------------------------------------------------------------------------
# Validation


def test_wrong_shape_names_argument_expected_and_received():
    fn = compile_program(sgd_step())
    X, Y, W, b = sgd_data()
    with pytest.raises(ValueError) as info:
        fn(X, rand(4, 2), W, b, 0.1)
    msg = str(info.value)
    assert "argument Y must have shape (n, 2) = (5, 2) (n = 5 from X.shape[0])" in msg
    assert "Received: Y with shape (4, 2)" in msg
    with pytest.raises(
        ValueError, match=r"W must have shape \(3, 2\); Received: W with shape \(3, 3\)"
    ):
        fn(X, Y, rand(3, 3), b, 0.1)
    with pytest.raises(ValueError, match=r"X must be a 2-D array; Received: X with shape \(5,\)"):
        fn(X[:, 0], Y, W, b, 0.1)


def test_wrong_type_dtype_and_count():
    fn = compile_program(sgd_step())
    X, Y, W, b = sgd_data()
    with pytest.raises(
        TypeError,
        match="argument W must be a numpy.ndarray of dtype float64; Received: W of type list",
    ):
        fn(X, Y, W.tolist(), b, 0.1)
    with pytest.raises(
        TypeError, match="argument b must have dtype float64; Received: b with dtype int64"
    ):
        fn(X, Y, W, b.astype(np.int64), 0.1)
    with pytest.raises(
        TypeError, match=r"sgd_step\(\) takes 5 arguments \(X, Y, W, b, lr\); Received: 4"
    ):
        fn(X, Y, W, b)


def test_scalars_must_be_finite_real_numbers():
    fn = compile_program(sgd_step())
    for bad, error, text in [
        (
            float("nan"),
            ValueError,
            r"argument lr must be finite in float64 \(.*\); Received: lr=nan",
        ),
        (float("inf"), ValueError, "Received: lr=inf"),
        ("0.1", TypeError, "argument lr must be a real number; Received: lr='0.1'"),
        (True, TypeError, "Received: lr=True"),
    ]:
        data = sgd_data()
        before = [a.copy() for a in data]
        with pytest.raises(error, match=text):
            fn(*data, bad)
        for a, a0 in zip(data, before):
            np.testing.assert_array_equal(a, a0)
    data = sgd_data()
    want = sgd_reference(*data, 1.0)
    fn(*data, 1)  # ints and NumPy scalars are accepted
    fn(*sgd_data(), np.float32(0.5))
    np.testing.assert_allclose(data[2], want[1], rtol=1e-13)


def test_updated_inputs_must_be_writeable_and_contiguous():
    fn = compile_program(sgd_step())
    X, Y, W, b = sgd_data()
    W.flags.writeable = False
    with pytest.raises(ValueError, match="argument W is updated in place and must be writeable"):
        fn(X, Y, W, b, 0.1)
    with pytest.raises(ValueError, match="argument W is updated in place and must be C-contiguous"):
        fn(X, Y, np.asfortranarray(rand(3, 2)), b, 0.1)
    Xs = rand(5, 6)[:, ::2]  # read-only inputs may have any layout
    want = sgd_reference(Xs, Y, W.copy(), b.copy(), 0.1)
    W2 = W.copy()
    (loss,) = fn(Xs, Y, W2, b, 0.1)
    assert loss[0, 0] == pytest.approx(want[0], rel=1e-13)
    np.testing.assert_allclose(W2, want[1], rtol=1e-13)


# --------------------------------------------------------------------------
# The generated source


def test_source_is_deterministic_across_processes():
    p = sgd_step()
    assert numpy_source(p) == numpy_source(sgd_step())
    code = (
        "import sys\n"
        "from tests.codegen.test_numpy_backend import sgd_step\n"
        "from codegen.numpy import numpy_source\n"
        "sys.stdout.write(numpy_source(sgd_step()))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    run = dict(cwd=root, env=env, capture_output=True, text=True, check=True)
    out = subprocess.run([sys.executable, "-c", code], **run)
    assert out.stdout == numpy_source(p)


def test_source_reads_like_the_formulas():
    X, W, b = Value("X", (n, 3)), Value("W1", (3, 4)), Value("b1", (1, 4))
    Z, A = Value("Z1", (n, 4)), Value("A1", (n, 4))
    p = Program(
        "layer",
        (X, W, b),
        (),
        (
            Gemm(Z, X, W, comment="Z1 = X @ W1"),
            Map(A, sp.tanh(z + w), ((z, Z), (w, b)), comment="A1 = tanh(Z1 + b1)"),
        ),
        (A,),
        batch=(n,),
    )
    fn = compile_program(p)
    body = fn.source.split("def layer(")[1]
    assert (
        "    (Z1,) = _layer_buffers.get((n,)) or _allocate_layer(n)\n"
        "\n"
        "    # Z1 = X @ W1\n"
        "    dot(X, W1, out=Z1)\n"
        "\n"
        "    # A1 = tanh(Z1 + b1)\n"
        "    A1 = empty((n, 4), DTYPE)\n"
        "    add(Z1, b1, out=A1)\n"
        "    tanh(A1, out=A1)\n"
        "\n"
        "    return (A1,)\n"
    ) in body
    assert isinstance(fn, NumpyFunction) and fn.name == "layer" and fn.program is p
    assert fn.function.__name__ == "layer"
    assert repr(fn) == "<NumpyFunction layer(X(n, 3), W1(3, 4), b1(1, 4)) -> (A1) dtype=float64>"


def test_names_that_clash_with_the_generated_code_are_renamed():
    X, S = Value("add", (n, 2)), Value("sum", (n, 2))
    p = Program("dot", (X,), (), (Map(S, x + 1, ((x, X),)),), (S,), batch=(n,))
    fn = compile_program(p)
    assert "def dot_(add_):" in fn.source
    Xv = rand(3, 2)
    np.testing.assert_allclose(fn(Xv)[0], Xv + 1)
