"""The stable functions of the scalar vocabulary, on every backend, in ulps against mpmath.

NumPy evaluates ``exp`` / ``log`` / ``tanh`` with its own ufuncs; the functions
checked here are the ones a backend composes itself (``sigmoid``, ``softplus`` on
both, ``log1p`` / ``expm1`` in the LLVM math library, NumPy's ufuncs for them),
over their whole range, tails included: every point of a dense grid on [-745, 40]
(on (-1, 40] for log1p) and random points of all magnitudes, float32 and float64.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from codegen.ir import Map, Program, Value
from symgrad.core.scalar import expm1, log1p, sigmoid, softplus
from tests.codegen.parity import backends

n = sp.Symbol("n", integer=True, positive=True)
x = sp.Symbol("x")

FUNCTIONS = {  # name -> (body, exact value at an mpmath number)
    "sigmoid": (sigmoid(x), lambda t: 1 / (1 + mp.exp(-t))),
    "softplus": (softplus(x), lambda t: mp.log1p(mp.exp(t))),
    # sigmoid(-x) is 1 - sigmoid(x) in symgrad's graphs: evaluated as sigmoid(-x)
    "one_minus_sigmoid": (1 - sigmoid(x), lambda t: 1 / (1 + mp.exp(t))),
    "log1p": (log1p(x), lambda t: mp.log1p(t) if t > -1 else (-mp.inf if t == -1 else mp.nan)),
    "expm1": (expm1(x), lambda t: mp.expm1(t)),
}
DOMAIN = {"log1p": (-1.0, np.inf)}  # the others: every float
MAX_ULP = 4


def points(rng, name: str = "") -> np.ndarray:
    grid = np.linspace(-745.0, 40.0, 3141)  # step 0.25: every tail, both sides of 0
    mags = np.exp(rng.uniform(np.log(1e-30), np.log(740.0), 1500))
    special = [0.0, -0.0, -30.0, -20.0, -88.0, -103.9, -104.0, 15.0, 17.0, 36.7, 37.0, 88.0]
    special += [1e-310, -1e-310, 1e-8, -1e-8, 0.5, -0.5, 0.35, -0.35, 64.0, 64.5, 709.0]
    special += [np.inf, -np.inf, np.nan]
    v = np.concatenate([grid, mags * rng.choice([-1.0, 1.0], mags.size), special])
    lo, hi = DOMAIN.get(name, (-np.inf, np.inf))
    if lo > -np.inf:  # also right above the lower end: log1p(-1 + 2^-k)
        v = np.concatenate([v[(v > lo) & (v <= hi)], lo + np.exp2(-np.arange(1.0, 53.0)), [lo]])
    return v


def exact(name: str, v: np.ndarray) -> np.ndarray:
    """The function at each float64 point, correctly rounded to float64 (mpmath, 40 digits)."""
    fn = FUNCTIONS[name][1]
    with mp.workdps(40):
        return np.array([float(fn(mp.mpf(float(t)))) for t in v])


def ulps(got: np.ndarray, want: np.ndarray, dtype: str) -> np.ndarray:
    """|got - want| in units of the last place of ``want`` rounded to ``dtype``."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf where both overflow
        want = want.astype(dtype)
        spacing = np.spacing(np.abs(want)).astype(np.float64)
        err = np.abs(got.astype(np.float64) - want.astype(np.float64)) / spacing
    return np.where((got == want) | (np.isnan(got) & np.isnan(want)), 0.0, err)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_within_a_few_ulps_everywhere(name, dtype, rng):
    X, out = Value("X", (n, 1)), Value("out", (n, 1))
    body = (Map(out, FUNCTIONS[name][0], ((x, X),)),)
    program = Program(f"{name}_{dtype}", (X,), (), body, (out,), dtype=dtype, batch=(n,))
    with np.errstate(over="ignore"):
        v = points(rng, name).astype(dtype)
        want = exact(name, v.astype(np.float64))
    for backend, fn in backends(program).items():
        with np.errstate(divide="ignore", over="ignore"):  # log1p(-1) = -inf, overflow to inf
            (got,) = fn(v.reshape(-1, 1))
        err = ulps(got.ravel(), want, dtype)
        worst = int(np.argmax(err))
        assert err[worst] <= MAX_ULP, (
            f"{backend} {dtype} {name}({v[worst]!r}) = {got.ravel()[worst]!r}, "
            f"want {want[worst].astype(dtype)!r}: {err[worst]:.1f} ulp"
        )


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_python_scalar_form(name, rng):
    """Bodies that read no array (``sigmoid(s)`` of a program scalar) print as Python math."""
    import math

    from codegen.numpy.scalar import py_scalar

    code = py_scalar(FUNCTIONS[name][0], {x: "t"})
    v = points(rng, name)[::7]
    v = v[v > DOMAIN.get(name, (-np.inf,))[0]]  # math.log1p(-1) raises, as Python math does
    got = np.array([eval(code, {"math": math, "t": float(t)}) for t in v])
    err = ulps(got, exact(name, v), "float64")
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP, f"{code} at t={v[worst]!r}: {err[worst]:.1f} ulp"
