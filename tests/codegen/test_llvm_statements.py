"""Every IR statement kind and every scalar function of the LLVM backend against NumPy.

Each case runs through ``compare_backends``: the LLVM backend (and the NumPy
backend) must agree with a NumPy reference written here, float64 to 1e-12 and
float32 to 1e-5 relative to the array's magnitude.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from codegen.ir import (
    Col2Im,
    Columns,
    Gather,
    Gemm,
    Guard,
    Im2Col,
    KeepMask,
    Map,
    Program,
    Reduce,
    Reshape,
    RowMax,
    ScatterAdd,
    Softmax,
    Transpose,
    Value,
    Window,
    keep_bits,
    keep_threshold,
    stream_key,
)
from codegen.llvm import compile_program
from codegen.llvm.module import make_layout
from symgrad.core.scalar import sigmoid, softplus
from tests.codegen.parity import compare_backends

n = sp.Symbol("n", integer=True, positive=True)
x, y, r, c, s, lr = sp.symbols("x y r c s lr")
DTYPES = ("float64", "float32")


def np_sigmoid(v):
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1 / (1 + e), e / (1 + e))


np_erf = np.vectorize(math.erf, otypes=[np.float64])

# (id, body in x and y, NumPy reference, domain of x, domain of y)
WIDE, POS, UNIT = (-4.0, 4.0), (0.1, 5.0), (-0.9, 0.9)
SCALAR_CASES = [
    (
        "add_mul_div",
        x * y + 2 * x**3 - x / y + 1,
        lambda a, b: a * b + 2 * a**3 - a / b + 1,
        WIDE,
        POS,
    ),
    ("negative_powers", x**-2 - 3 / y**3, lambda a, b: a**-2.0 - 3 / b**3, POS, POS),
    (
        "half_powers",
        sp.sqrt(y) + y ** sp.Rational(3, 2) - y ** sp.Rational(-1, 2),
        lambda a, b: np.sqrt(b) + b**1.5 - b**-0.5,
        WIDE,
        POS,
    ),
    ("real_power", y**x, lambda a, b: b**a, UNIT, POS),
    ("pow_of_float", y**2.5, lambda a, b: b**2.5, WIDE, POS),
    ("exp", sp.exp(x) - sp.exp(-2 * y), lambda a, b: np.exp(a) - np.exp(-2 * b), WIDE, POS),
    ("log", sp.log(y) + sp.log(1 + x**2), lambda a, b: np.log(b) + np.log(1 + a**2), WIDE, POS),
    (
        "log1p",
        log1p(y - 1) + log1p(x * 1e-9),
        lambda a, b: np.log(b) + np.log1p(a * 1e-9),
        WIDE,
        POS,
    ),
    ("expm1", expm1(x) + expm1(y * 1e-9), lambda a, b: np.expm1(a) + np.expm1(b * 1e-9), WIDE, POS),
    ("tanh", sp.tanh(x), lambda a, b: np.tanh(a), WIDE, POS),
    ("erf", sp.erf(x), lambda a, b: np_erf(a), WIDE, POS),
    ("cos", sp.cos(3 * x) * y, lambda a, b: np.cos(3 * a) * b, WIDE, POS),
    (
        "floor",
        sp.floor(3 * x) + sp.floor(-y),
        lambda a, b: np.floor(3 * a) + np.floor(-b),
        WIDE,
        POS,
    ),
    ("sigmoid", sigmoid(x), lambda a, b: np_sigmoid(a), WIDE, POS),
    ("softplus", softplus(x), lambda a, b: np.logaddexp(0, a), WIDE, POS),
    (  # evaluated as y + sigmoid(-x)
        "one_minus_sigmoid",
        y + 1 - sigmoid(x),
        lambda a, b: b + np.exp(-np.logaddexp(0, a)),
        WIDE,
        POS,
    ),
    (
        "abs_sign",
        sp.Abs(x) * sp.sign(x - 0.5),
        lambda a, b: np.abs(a) * np.sign(a - 0.5),
        WIDE,
        POS,
    ),
    (
        "max_min",
        sp.Max(x, y, 0.5) - sp.Min(x, -y),
        lambda a, b: np.maximum(np.maximum(a, b), 0.5) - np.minimum(a, -b),
        WIDE,
        POS,
    ),
    (
        "heaviside",
        sp.Heaviside(x) + 2 * sp.Heaviside(x - 1, 0),
        lambda a, b: np.heaviside(a, 0.5) + 2 * np.heaviside(a - 1, 0),
        WIDE,
        POS,
    ),
    ("relu", sp.Piecewise((x, x > 0), (0, True)), lambda a, b: np.maximum(a, 0), WIDE, POS),
    (
        "piecewise_and_or",
        sp.Piecewise(
            (x**2, sp.And(x > -1, x <= 1)), (y, sp.Or(x < -3, x >= 3)), (2 * sp.Abs(x) - 1, True)
        ),
        lambda a, b: np.where(
            (a > -1) & (a <= 1), a**2, np.where((a < -3) | (a >= 3), b, 2 * np.abs(a) - 1)
        ),
        WIDE,
        POS,
    ),
    (
        "constants",
        sp.pi * x + sp.E - sp.Rational(1, 3),
        lambda a, b: np.pi * a + np.e - 1 / 3,
        WIDE,
        POS,
    ),
]


# (id, body in x and y, NumPy reference): on inputs with equal entries and nan, where
# (in)equality tests are not decided by chance
NAN = math.nan
EQUAL_X = [[0.0, 1.0, 2.0, NAN, 1.5, -3.0], [2.0, -1.0, NAN, 0.0, 4.0, 4.0]]
EQUAL_Y = [[0.0, 2.0, 2.0, NAN, NAN, -3.0], [1.0, -1.0, 0.5, 0.0, 4.0, 3.0]]
BOOLEAN_CASES = [
    ("equality", sp.Piecewise((x, sp.Eq(x, y)), (-1, True)), lambda a, b: np.where(a == b, a, -1)),
    ("equality_mask", sp.Piecewise((1, sp.Eq(x, y)), (0, True)), lambda a, b: 1.0 * (a == b)),
    (
        "unequality_and",
        sp.Piecewise((x, sp.And(sp.Ne(x, y), x > 0)), (y, True)),
        lambda a, b: np.where((a != b) & (a > 0), a, b),
    ),
    (
        "not",
        sp.Piecewise((x, sp.Not(sp.And(x > 0, y > 1))), (y, True)),
        lambda a, b: np.where(~((a > 0) & (b > 1)), a, b),
    ),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BOOLEAN_CASES, ids=[c[0] for c in BOOLEAN_CASES])
def test_boolean_function(case, dtype):
    _, body, reference = case
    X, Y = np.array(EQUAL_X, dtype=dtype), np.array(EQUAL_Y, dtype=dtype)
    with np.errstate(all="ignore"):
        compare_backends(
            map_program(body, dtype, shape=(n, 6)),
            [X, Y],
            reference=lambda a, b: (reference(a.astype(np.float64), b.astype(np.float64)),),
        )


def map_program(body, dtype, shape=(n, 5), args=None, scalars=()) -> Program:
    out = Value("out", shape)
    if args is None:
        args = ((x, Value("X", shape)), (y, Value("Y", shape)))
    inputs = tuple(dict.fromkeys(v for _, v in args))
    return Program(
        "map_case", inputs, tuple(scalars), (Map(out, body, args),), (out,), dtype=dtype, batch=(n,)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SCALAR_CASES, ids=[c[0] for c in SCALAR_CASES])
def test_scalar_function(case, dtype, rng):
    _, body, reference, x_range, y_range = case
    X = rng.uniform(*x_range, size=(7, 5)).astype(dtype)
    Y = rng.uniform(*y_range, size=(7, 5)).astype(dtype)
    with np.errstate(all="ignore"):
        compare_backends(
            map_program(body, dtype),
            [X, Y],
            reference=lambda a, b: (reference(a.astype(np.float64), b.astype(np.float64)),),
        )


EXTREMES = np.array([[-1000.0, -100.0, -20.0, -1e-300, 0.0, 1e-300, 20.0, 100.0, 1000.0]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "body, reference",
    [
        (sigmoid(x), np_sigmoid),
        (softplus(x), lambda a: np.logaddexp(0, a)),
        (sp.tanh(x), np.tanh),
        (sp.erf(x), np_erf),
        (sp.exp(x), np.exp),
        (sp.log(x), np.log),
    ],
    ids=["sigmoid", "softplus", "tanh", "erf", "exp", "log"],
)
def test_extremes(body, reference, dtype):
    """+-1000, +-0, tiny, +-inf and nan: the IEEE answer, never a spurious nan or inf."""
    X = np.concatenate(
        [EXTREMES, [[np.inf, -np.inf, np.nan, 1.0, -1.0, 3.0, 5.0, 0.5, -0.5]]]
    ).astype(dtype)
    with np.errstate(all="ignore"):
        want = reference(X.astype(np.float64)).astype(dtype)
    (got,) = compile_program(
        map_program(body, dtype, shape=(n, 9), args=((x, Value("X", (n, 9))),)), cache=False
    )(X)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-14 if dtype == "float64" else 3e-7, atol=0)


RELU = sp.Piecewise((x, x > 0), (0, True))
EXTREMA = [
    ("relu", RELU, lambda a, b: np.maximum(a, 0)),
    ("max_of_two", sp.Max(x, y), np.maximum),
    ("min_with_number", sp.Min(x, y, 0.5), lambda a, b: np.minimum(np.minimum(a, b), 0.5)),
    ("max_with_number_last", sp.Max(0.5, 2 * x), lambda a, b: np.maximum(2 * a, 0.5)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", EXTREMA, ids=[c[0] for c in EXTREMA])
def test_extrema_propagate_nan(case, dtype):
    """A nan in any operand of Max / Min is nan (as np.maximum), so relu(nan) = nan."""
    _, body, reference = case
    nan, inf = np.nan, np.inf
    X = np.array([[nan, 1.0, nan, -2.0, 0.5, inf, -inf, 0.0, -0.0]], dtype)
    Y = np.array([[1.0, nan, nan, -3.0, 0.25, -inf, inf, 0.0, 1.0]], dtype)
    with np.errstate(invalid="ignore"):
        want = reference(X.astype(np.float64), Y.astype(np.float64))
    assert np.isnan(want[0, 0])
    results = compare_backends(
        map_program(body, dtype, shape=(n, 9)), [X, Y], reference=lambda a, b: (want,)
    )
    for name, ((got,), _) in results.items():
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)


def _kernel_instructions(fn, name: str) -> list[str]:
    """The floating-point compares and selects of one Map kernel, as emitted (unoptimized)."""
    kernel = re.search(rf'define internal void @"{name}"\(.*?\n\}}', fn.llvm_ir, re.S).group(0)
    return re.findall(r"= (fcmp \w+|select)", kernel)


def test_relu_kernel_is_one_compare_and_one_select():
    """relu = Max(0, x): the number 0 is never nan, so only x is tested (no `fcmp uno` of 0)."""
    args = ((x, Value("X", (n, 5))),)
    fn = compile_program(map_program(RELU, "float64", args=args), cache=False)
    assert _kernel_instructions(fn, "map_case.map.out") == ["fcmp ogt", "select"]
    # two operands that may both be nan still need the test of the first one
    fn = compile_program(map_program(sp.Max(x, y), "float64"), cache=False)
    assert sorted(_kernel_instructions(fn, "map_case.map.out")) == sorted(
        ["fcmp ogt", "select", "fcmp uno", "select"]
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_map_broadcasting_scalars_and_batch_symbol(dtype, rng):
    """full, row (1, c), column (n, 1) and (1, 1) operands, a program scalar and 1/n in one body."""
    full, row, col, one = (
        Value("F", (n, 4)),
        Value("R", (1, 4)),
        Value("C", (n, 1)),
        Value("S", (1, 1)),
    )
    body = x * r + c - s * lr / n
    args = ((x, full), (r, row), (c, col), (s, one))
    arrays = [
        rng.normal(size=(6, 4)),
        rng.normal(size=(1, 4)),
        rng.normal(size=(6, 1)),
        rng.normal(size=(1, 1)),
    ]
    arrays = [a.astype(dtype) for a in arrays]
    program = map_program(body, dtype, shape=(n, 4), args=args, scalars=(lr,))
    compare_backends(
        program,
        [*arrays, 0.3],
        reference=lambda f, rw, cl, o, step: (f * rw + cl - o * step / len(f),),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "broadcast"])
def test_reduce(axis, flat, dtype, rng):
    full = Value("F", (n, 5))
    other = Value("S", (1, 1)) if flat else Value("R", (1, 5))
    out = Value("out", {None: (1, 1), 0: (1, 5), 1: (n, 1)}[axis])
    body = (x - r) ** 2 / n
    program = Program(
        "reduce_case",
        (full, other),
        (),
        (Reduce(out, body, ((x, full), (r, other)), (n, 5), axis),),
        (out,),
        dtype=dtype,
        batch=(n,),
    )
    F, O = (
        rng.normal(size=(9, 5)).astype(dtype),
        rng.normal(size=other.shape if flat else (1, 5)).astype(dtype),
    )

    def reference(f, o):
        return (
            np.sum((f.astype(np.float64) - o) ** 2 / len(f), axis=axis, keepdims=True).reshape(
                out.shape[0] if out.shape[0] != n else len(f), -1
            ),
        )

    compare_backends(program, [F, O], reference=reference)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_stable(log, dtype, rng):
    a, out = Value("A", (n, 6)), Value("P", (n, 6))
    program = Program(
        "softmax_case", (a,), (), (Softmax(out, a, log=log),), (out,), dtype=dtype, batch=(n,)
    )
    A = rng.normal(size=(5, 6)) * 3
    A[1] += 1000
    A[2] -= 1000
    A[3, 0] = 1000
    A[4] = [-1000, 1000, 0, -1000, 1000, 0]
    A = A.astype(dtype)

    def reference(a):
        shifted = a.astype(np.float64) - a.max(axis=1, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return (shifted - lse if log else np.exp(shifted - lse),)

    results = compare_backends(program, [A], reference=reference)
    assert np.isfinite(results["llvm"][0][0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose(dtype, rng):
    a, out = Value("A", (n, 3)), Value("AT", (3, n))
    program = Program(
        "transpose_case", (a,), (), (Transpose(out, a),), (out,), dtype=dtype, batch=(n,)
    )
    compare_backends(
        program, [rng.normal(size=(7, 3)).astype(dtype)], reference=lambda a: (a.T.copy(),)
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_columns(dtype, rng):
    """A concatenation with a slice and a repeated operand: [A | B[:, 1:3] | A]."""
    a, b, out = Value("A", (n, 3)), Value("B", (n, 4)), Value("C", (n, 8))
    columns = Columns(out, ((a, 0, 3), (b, 1, 3), (a, 0, 3)))
    program = Program("columns_case", (a, b), (), (columns,), (out,), dtype=dtype, batch=(n,))
    args = [rng.normal(size=(7, 3)).astype(dtype), rng.normal(size=(7, 4)).astype(dtype)]
    compare_backends(
        program, args, reference=lambda a, b: (np.concatenate([a, b[:, 1:3], a], axis=1),)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)]
)
def test_gemm(trans_a, trans_b, dtype, rng):
    shape_a = (5, n) if trans_a else (n, 5)
    shape_b = (3, 5) if trans_b else (5, 3)
    a, b, out = Value("A", shape_a), Value("B", shape_b), Value("C", (n, 3))
    gemm = Gemm(out, a, b, trans_a=trans_a, trans_b=trans_b, alpha=lr / n)
    program = Program("gemm_case", (a, b), (lr,), (gemm,), (out,), dtype=dtype, batch=(n,))
    A = rng.normal(size=(5, 7) if trans_a else (7, 5)).astype(dtype)
    B = rng.normal(size=shape_b).astype(dtype)

    def reference(a, b, alpha):
        a, b = a.astype(np.float64), b.astype(np.float64)
        return (alpha / 7 * (a.T if trans_a else a) @ (b.T if trans_b else b),)

    compare_backends(program, [A, B, 0.5], reference=reference)


def test_training_step_with_updates_in_place_and_copied(rng):
    """A whole step: updates computed in place (after the guard) and copied (before it)."""
    X, Y, W, b = Value("X", (n, 4)), Value("Y", (n, 3)), Value("W", (4, 3)), Value("b", (1, 3))
    Z, A, L, dZ, dW, db = (
        Value(k, sh)
        for k, sh in [
            ("Z", (n, 3)),
            ("A", (n, 3)),
            ("L", (1, 1)),
            ("dZ", (n, 3)),
            ("dW", (4, 3)),
            ("db", (1, 3)),
        ]
    )
    Wn, bn = Value("Wn", (4, 3)), Value("bn", (1, 3))
    w = sp.Symbol("w")
    body = (
        Gemm(Z, X, W),
        Map(A, sp.tanh(x + w), ((x, Z), (w, b))),
        Map(dZ, 2 * (x - y) * (1 - x**2) / n, ((x, A), (y, Y))),
        Reduce(db, x, ((x, dZ),), (n, 3), 0),
        Map(bn, w - lr * x, ((w, b), (x, db))),  # before the guard: must be copied at the end
        Reduce(L, (x - y) ** 2 / n, ((x, A), (y, Y)), (n, 3), None),
        Guard(L, "loss"),
        Gemm(dW, X, dZ, trans_a=True),
        Map(Wn, w - lr * x, ((w, W), (x, dW))),  # after the guard: computed into W
    )
    program = Program(
        "step", (X, Y, W, b), (lr,), body, (L,), updates=((W, Wn), (b, bn)), batch=(n,)
    )

    def reference(Xv, Yv, Wv, bv, step):
        Av = np.tanh(Xv @ Wv + bv)
        dZv = 2 * (Av - Yv) * (1 - Av**2) / len(Xv)
        loss = ((Av - Yv) ** 2).sum(keepdims=True) / len(Xv)
        Wv -= step * (Xv.T @ dZv)
        bv -= step * dZv.sum(0, keepdims=True)
        return (loss,)

    layout = make_layout(program)
    assert layout.slot_of["Wn"] == layout.slot_of["W"] and layout.copies == (
        (layout.slot_of["bn"], layout.slot_of["b"]),
    )
    args = [
        rng.normal(size=(8, 4)),
        rng.uniform(size=(8, 3)),
        rng.normal(size=(4, 3)),
        rng.normal(size=(1, 3)),
        0.1,
    ]
    compare_backends(program, args, reference=reference)


def test_unsupported_function_is_named(rng):
    with pytest.raises(NotImplementedError, match="sin"):
        compile_program(map_program(sp.sin(x), "float64"), cache=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_mask(dtype, rate):
    """The same bits on both backends, and those of the reference generator codegen.ir.keep_bits."""
    t = sp.Symbol("t", positive=True)
    out = Value("M", (n, 7))
    key, threshold = stream_key(42, 3), keep_threshold(rate)
    mask = KeepMask(out, key, t, threshold, 1 / (1 - sp.Float(rate)))
    program = Program(
        "mask_case", (Value("X", (n, 7)),), (t,), (mask,), (out,), dtype=dtype, batch=(n,)
    )

    def reference(x, step):
        bits = keep_bits(key, int(step), x.size).reshape(x.shape)
        return ((bits >= threshold) / (1 - rate),)

    for step in (1.0, 2.0, 12345.0):
        compare_backends(program, [np.zeros((40, 7), dtype), step], reference=reference)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather(dtype, rng):
    """Rows of a table by index, repeated indices included; clamped indices stay inside."""
    table, indices, out = Value("W", (6, 3)), Value("X", (n, 4)), Value("E", (n, 12))
    program = Program(  # the batch comes from the first input (indices), as in a model
        "gather_case",
        (indices, table),
        (),
        (Gather(out, table, indices),),
        (out,),
        dtype=dtype,
        batch=(n,),
    )
    w = rng.normal(size=(6, 3)).astype(dtype)
    x = rng.integers(0, 6, size=(5, 4)).astype(dtype)
    x[0, :2] = [-3, 9]  # outside [0, 6): the first and the last row

    def reference(x, w):
        return (w[np.clip(x.astype(int), 0, 5)].reshape(len(x), 12),)

    compare_backends(program, [x, w], reference=reference)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_add(dtype, rng):
    """The adjoint of gather: rows of G summed into the rows their indices name."""
    source, indices, out = Value("G", (n, 12)), Value("X", (n, 4)), Value("dW", (6, 3))
    program = Program(
        "scatter_case",
        (source, indices),
        (),
        (ScatterAdd(out, source, indices),),
        (out,),
        dtype=dtype,
        batch=(n,),
    )
    g = rng.normal(size=(9, 12)).astype(dtype)
    x = rng.integers(0, 6, size=(9, 4)).astype(dtype)

    def reference(g, x):
        dw = np.zeros((6, 3))
        for i in range(len(x)):
            for k in range(4):
                dw[int(x[i, k])] += g[i, 3 * k : 3 * k + 3]
        return (dw,)

    compare_backends(program, [g, x], reference=reference)


# (H, W, C), kernel, stride, dilation, padding (top, left), output (Ho, Wo)
WINDOWS = {
    "valid-3x3": Window(5, 4, 2, 3, 3, 1, 1, 1, 1, 0, 0, 3, 2),
    "same-stride-2": Window(5, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 3, 3),
    "dilated-2x2": Window(6, 5, 1, 2, 2, 1, 2, 2, 1, 1, 0, 5, 4),
    "conv1d": Window(1, 7, 2, 1, 3, 1, 2, 1, 1, 0, 1, 1, 4),
    "pool-lowest": Window(5, 5, 2, 2, 2, 2, 2, 1, 1, 0, 0, 3, 3, depthwise=True, lowest=True),
}


def reference_im2col(x: np.ndarray, w: Window) -> np.ndarray:
    """The window rows by the definition, one entry at a time."""
    images = x.reshape(-1, w.in_h, w.in_w, w.channels)
    fill = -np.inf if w.lowest else 0.0
    out = np.full((len(images), w.out_h, w.out_w, w.k_h, w.k_w, w.channels), fill, x.dtype)
    for i in range(w.out_h):
        for j in range(w.out_w):
            for u in range(w.k_h):
                for v in range(w.k_w):
                    y = i * w.stride_h + u * w.dil_h - w.pad_top
                    z = j * w.stride_w + v * w.dil_w - w.pad_left
                    if 0 <= y < w.in_h and 0 <= z < w.in_w:
                        out[:, i, j, u, v, :] = images[:, y, z, :]
    if w.depthwise:
        out = out.transpose(0, 1, 2, 5, 3, 4)
    taps = w.k_h * w.k_w * (1 if w.depthwise else w.channels)
    return np.ascontiguousarray(out).reshape(-1, taps)


def _window_program(stmt, name, w: Window, dtype):
    """im2col: X (n, H*W*C) -> P; col2im: P -> (n, H*W*C), X passed along (it binds n)."""
    rows = w.out_h * w.out_w * (w.channels if w.depthwise else 1)
    taps = w.k_h * w.k_w * (1 if w.depthwise else w.channels)
    x, cols = Value("X", (n, w.in_h * w.in_w * w.channels)), Value("P", (rows * n, taps))
    if stmt is Im2Col:
        return Program(name, (x,), (), (Im2Col(cols, x, w),), (cols,), dtype=dtype, batch=(n,))
    out = Value("Y", x.shape)
    return Program(name, (x, cols), (), (Col2Im(out, cols, w),), (out,), dtype=dtype, batch=(n,))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(WINDOWS))
def test_im2col(case, dtype, rng):
    w = WINDOWS[case]
    program = _window_program(Im2Col, "im2col_case", w, dtype)
    x = rng.normal(size=(3, w.in_h * w.in_w * w.channels)).astype(dtype)
    compare_backends(program, [x], reference=lambda x: (reference_im2col(x, w),))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(WINDOWS))
def test_col2im(case, dtype, rng):
    """The adjoint: <im2col(X), G> = <X, col2im(G)> for the reference im2col."""
    w = dataclasses.replace(WINDOWS[case], lowest=False)
    program = _window_program(Col2Im, "col2im_case", w, dtype)
    images = w.in_h * w.in_w * w.channels
    x = np.zeros((3, images), dtype)
    g = rng.normal(size=reference_im2col(x, w).shape).astype(dtype)

    def reference(x, g):  # column k of the adjoint's matrix is im2col of the k-th unit image
        unit = np.eye(images)
        matrix = np.stack([reference_im2col(unit[k : k + 1], w).ravel() for k in range(images)])
        per_image = g.reshape(3, -1)
        return ((per_image @ matrix.T).astype(dtype),)

    compare_backends(program, [x, g], reference=reference)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape(dtype, rng):
    a, out = Value("A", (n, 6)), Value("B", (3 * n, 2))
    program = Program("reshape_case", (a,), (), (Reshape(out, a),), (out,), dtype=dtype, batch=(n,))
    x = rng.normal(size=(5, 6)).astype(dtype)
    compare_backends(program, [x], reference=lambda x: (x.reshape(15, 2),))


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_max(dtype, rng):
    """Rows with -inf entries (padding of a max-pool) and one of all equal entries."""
    a, out = Value("A", (n, 5)), Value("M", (n, 1))
    program = Program("rowmax_case", (a,), (), (RowMax(out, a),), (out,), dtype=dtype, batch=(n,))
    x = rng.normal(size=(6, 5)).astype(dtype)
    x[1, :3] = -np.inf
    x[2] = 1.5
    compare_backends(program, [x], reference=lambda x: (x.max(axis=1, keepdims=True),))


STATEMENT_CASES = {
    Gemm: test_gemm,
    Map: test_scalar_function,
    Reduce: test_reduce,
    Softmax: test_softmax_stable,
    Transpose: test_transpose,
    Columns: test_columns,
    KeepMask: test_keep_mask,
    Gather: test_gather,
    ScatterAdd: test_scatter_add,
    Im2Col: test_im2col,
    Col2Im: test_col2im,
    Reshape: test_reshape,
    RowMax: test_row_max,
    Guard: test_training_step_with_updates_in_place_and_copied,
}
"""IR statement class -> its parity test (``tests/test_op_tables.py`` checks every class has one)."""
