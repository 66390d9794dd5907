"""The LLVM backend's own exp / log / tanh / sigmoid / softplus / erf: accuracy in ulps and vectorization."""

from __future__ import annotations

import math
import platform
import re

import numpy as np
import pytest
import sympy as sp

from codegen.ir import Map, Program, Value
from codegen.llvm import compile_program
from codegen.llvm.mathlib import FORMATS, erf_tables
from symgrad.core.scalar import sigmoid, softplus

n = sp.Symbol("n", integer=True, positive=True)
x = sp.Symbol("x")
FUNCTIONS = {
    "exp": sp.exp(x),
    "log": sp.log(x),
    "tanh": sp.tanh(x),
    "sigmoid": sigmoid(x),
    "softplus": softplus(x),
    "erf": sp.erf(x),
}
MAX_ULP = {"float64": 4, "float32": 4}


def reference(name: str, v: np.ndarray) -> np.ndarray:
    """Float64 (or better) references; long double where the formula itself would lose bits."""
    ld = v.astype(np.longdouble)
    with np.errstate(all="ignore"):
        if name == "exp":
            return np.exp(v)
        if name == "log":
            return np.log(v)
        if name == "tanh":
            return np.tanh(v)
        if name == "sigmoid":
            return (1 / (1 + np.exp(-ld))).astype(np.float64)
        if name == "softplus":
            return np.where(
                v > 30, v + np.log1p(np.exp(-np.abs(v))), np.log1p(np.exp(ld)).astype(np.float64)
            )
        if name == "erf":
            return np.array([math.erf(t) if not math.isnan(t) else math.nan for t in v])
    raise KeyError(name)


def sample(rng) -> np.ndarray:
    mags = np.exp(rng.uniform(np.log(1e-30), np.log(750), 4000))
    parts = [
        rng.uniform(-1, 1, 3000),
        rng.uniform(-8, 8, 3000),
        rng.uniform(-100, 100, 1000),
        mags * rng.choice([-1.0, 1.0], mags.size),
        [0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.25, 3.5, 4.0, 6.0, 88.7, 89.0, -103.9, -104.0],
        [
            709.78,
            709.79,
            -745.13,
            -745.14,
            1e-310,
            -1e-310,
            5e-324,
            1000.0,
            -1000.0,
            np.inf,
            -np.inf,
            np.nan,
        ],
    ]
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])


@pytest.fixture(scope="module", params=["float64", "float32"])
def compiled(request):
    dtype = request.param
    X = Value("X", (n, 1))
    outs = [Value(name, (n, 1)) for name in FUNCTIONS]
    body = tuple(Map(o, f, ((x, X),)) for o, f in zip(outs, FUNCTIONS.values()))
    program = Program(f"math_{dtype}", (X,), (), body, tuple(outs), dtype=dtype, batch=(n,))
    return dtype, compile_program(program, cache=False)


def ulp_error(got: np.ndarray, want: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        want = want.astype(dtype)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(all="ignore"):
        err = np.abs(got.astype(np.float64) - want.astype(np.float64)) / np.spacing(
            np.abs(want)
        ).astype(np.float64)
    return np.where(same, 0.0, err)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_accuracy_in_ulps(compiled, name, rng):
    dtype, fn = compiled
    with np.errstate(over="ignore"):
        v = sample(rng).astype(dtype)
    got = fn(v.reshape(-1, 1))[list(FUNCTIONS).index(name)].ravel()
    want = reference(name, v.astype(np.float64))
    err = ulp_error(got, want, dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[dtype], (
        f"{name}({v[worst]!r}) = {got[worst]!r}, want {want[worst]!r}: {err[worst]:.1f} ulp"
    )


def test_special_values(compiled):
    dtype, fn = compiled
    v = np.array(
        [[np.nan], [np.inf], [-np.inf], [0.0], [-0.0], [-1.0], [1000.0], [-1000.0]], dtype=dtype
    )
    exp_, log_, tanh_, sig, sp_, erf_ = (o.ravel() for o in fn(v))
    nan, inf = np.nan, np.inf
    np.testing.assert_array_equal(exp_, [nan, inf, 0, 1, 1, np.exp(-1.0).astype(dtype), inf, 0])
    np.testing.assert_array_equal(log_[:6], [nan, inf, nan, -inf, -inf, nan])
    np.testing.assert_array_equal(tanh_, [nan, 1, -1, 0, -0.0, np.tanh(-1.0).astype(dtype), 1, -1])
    assert np.signbit(tanh_[4]) and np.signbit(erf_[4])  # odd functions keep -0
    np.testing.assert_array_equal(sig[[0, 1, 2, 3, 6, 7]], [nan, 1, 0, 0.5, 1, 0])
    np.testing.assert_array_equal(sp_[[0, 1, 2, 6, 7]], [nan, inf, 0, 1000, 0])
    np.testing.assert_array_equal(erf_[[0, 1, 2, 3, 6, 7]], [nan, 1, -1, 0, 1, -1])


def test_map_kernel_vectorizes(compiled):
    """The loop vectorizer fires on a fused Map with a transcendental: vector types in IR, packed ops in asm."""
    dtype, fn = compiled
    elem = "double" if dtype == "float64" else "float"
    widths = {int(w) for w in re.findall(rf"<(\d+) x {elem}>", fn.llvm_ir_optimized)}
    assert widths and max(widths) >= 2, "no vector operations in the optimized IR"
    if platform.machine().lower() in ("x86_64", "amd64"):
        suffix = "pd" if dtype == "float64" else "ps"
        assert re.search(rf"\bv?(mul|add|fmadd\d*){suffix}\s+%[xyz]mm", fn.asm), (
            "no packed arithmetic in the assembly"
        )


def test_erf_tables_are_reproducible():
    """The erf coefficients are Chebyshev interpolants computed by our own code, not copied constants."""
    for dtype, f in FORMATS.items():
        table = erf_tables(dtype)
        assert (
            len(table.small) == f.erf_degrees[0] + 1 and len(table.pieces) == len(f.erf_split) - 1
        )
        # erf(x) / x -> 2 / sqrt(pi) as x -> 0, i.e. P at u = 2 x^2 - 1 = -1
        at_zero = sum(c * (-1) ** k for k, c in enumerate(table.small))
        assert at_zero == pytest.approx(2 / math.sqrt(math.pi), rel=1e-13 if f.bits == 64 else 1e-7)
        # g(x) = erfc(x) exp(x^2) at each piece's midpoint is the constant term
        for mid, _, coeffs in table.pieces:
            assert coeffs[0] == pytest.approx(math.erfc(mid) * math.exp(mid * mid), rel=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cos_and_floor(dtype, rng):
    """cos within 2 ulp of NumPy's where the three-part reduction is exact (|x| < 2^22 pi/2 in
    float64, 2^10 pi/2 in float32), within [-1, 1] beyond; floor exact everywhere."""
    X = Value("X", (n, 1))
    outs = (Value("C", (n, 1)), Value("F", (n, 1)))
    body = (Map(outs[0], sp.cos(x), ((x, X),)), Map(outs[1], sp.floor(x), ((x, X),)))
    program = Program(f"trig_{dtype}", (X,), (), body, outs, dtype=dtype, batch=(n,))
    fn = compile_program(program, cache=False)
    limit = (2.0**22 if dtype == "float64" else 2.0**10) * math.pi / 2
    near = np.concatenate([rng.uniform(-10, 10, 4000), np.arange(-40, 41) * math.pi / 4])
    v = np.concatenate([near, rng.uniform(-limit, limit, 4000)]).astype(dtype)
    cos_, _ = (o.ravel() for o in fn(v.reshape(-1, 1)))
    err = ulp_error(cos_, np.cos(v.astype(np.float64)), dtype)
    # near a zero of cos the absolute error of the reduction dominates: count it against 1
    absolute = np.abs(cos_.astype(np.float64) - np.cos(v.astype(np.float64)))
    worst = int(np.argmax(np.minimum(err, absolute / np.spacing(np.ones(1, dtype))[0])))
    assert min(err[worst], absolute[worst] / np.spacing(np.ones(1, dtype))[0]) <= 2, (
        f"cos({v[worst]!r}) = {cos_[worst]!r}: {err[worst]:.1f} ulp"
    )
    with np.errstate(over="ignore"):
        wide = sample(rng).astype(dtype)
    cos_, floor_ = (o.ravel() for o in fn(wide.reshape(-1, 1)))
    finite = np.isfinite(wide)
    assert np.all(np.abs(cos_[finite]) <= 1) and np.all(np.isnan(cos_[~finite]))
    halves = np.arange(-8, 8.5, 0.5).astype(dtype)
    edges = np.concatenate([wide, halves, [2.0**52 + 1, -(2.0**52) - 1, 4.5e15 + 0.5, -0.5]])
    edges = edges.astype(dtype)
    floor_ = fn(edges.reshape(-1, 1))[1].ravel()
    np.testing.assert_array_equal(floor_, np.floor(edges))
    assert np.signbit(fn(np.array([[-0.0]], dtype=dtype))[1][0, 0])  # floor(-0) = -0
