"""The stable functions of the scalar vocabulary, on every backend, in ulps against mpmath.

NumPy evaluates ``exp`` / ``log`` / ``tanh`` with its own ufuncs; the functions
checked here are the ones each backend composes itself (``sigmoid``, ``softplus``),
over their whole range, tails included: every point of a dense grid on [-745, 40]
and random points of all magnitudes, float32 and float64.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from codegen.ir import Map, Program, Value
from symgrad.core.scalar import sigmoid, softplus
from tests.codegen.parity import backends

n = sp.Symbol("n", integer=True, positive=True)
x = sp.Symbol("x")

FUNCTIONS = {  # name -> (body, exact value at an mpmath number)
    "sigmoid": (sigmoid(x), lambda t: 1 / (1 + mp.exp(-t))),
    "softplus": (softplus(x), lambda t: mp.log1p(mp.exp(t))),
}
MAX_ULP = 4


def points(rng) -> np.ndarray:
    grid = np.linspace(-745.0, 40.0, 3141)  # step 0.25: every tail, both sides of 0
    mags = np.exp(rng.uniform(np.log(1e-30), np.log(740.0), 1500))
    special = [0.0, -0.0, -30.0, -20.0, -88.0, -103.9, -104.0, 15.0, 17.0, 36.7, 37.0, 1000.0]
    return np.concatenate([grid, mags * rng.choice([-1.0, 1.0], mags.size), special])


def exact(name: str, v: np.ndarray) -> np.ndarray:
    """The function at each float64 point, correctly rounded to float64 (mpmath, 40 digits)."""
    fn = FUNCTIONS[name][1]
    with mp.workdps(40):
        return np.array([float(fn(mp.mpf(float(t)))) for t in v])


def ulps(got: np.ndarray, want: np.ndarray, dtype: str) -> np.ndarray:
    """|got - want| in units of the last place of ``want`` rounded to ``dtype``."""
    want = want.astype(dtype)
    spacing = np.spacing(np.abs(want)).astype(np.float64)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64)) / spacing
    return np.where(got == want, 0.0, err)


@pytest.fixture(scope="module", params=["float64", "float32"])
def compiled(request):
    dtype = request.param
    X = Value("X", (n, 1))
    outs = [Value(name, (n, 1)) for name in FUNCTIONS]
    body = tuple(Map(o, f, ((x, X),)) for o, (f, _) in zip(outs, FUNCTIONS.values()))
    program = Program(f"stable_{dtype}", (X,), (), body, tuple(outs), dtype=dtype, batch=(n,))
    return dtype, backends(program)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_within_a_few_ulps_everywhere(compiled, name, rng):
    dtype, fns = compiled
    v = points(rng).astype(dtype)
    want = exact(name, v.astype(np.float64))
    for backend, fn in fns.items():
        got = fn(v.reshape(-1, 1))[list(FUNCTIONS).index(name)].ravel()
        err = ulps(got, want, dtype)
        worst = int(np.argmax(err))
        assert err[worst] <= MAX_ULP, (
            f"{backend} {dtype} {name}({v[worst]!r}) = {got[worst]!r}, "
            f"want {want[worst].astype(dtype)!r}: {err[worst]:.1f} ulp"
        )


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_python_scalar_form(name, rng):
    """Bodies that read no array (``sigmoid(s)`` of a program scalar) print as Python math."""
    import math

    from codegen.numpy.scalar import py_scalar

    code = py_scalar(FUNCTIONS[name][0], {x: "t"})
    v = points(rng)[::7]
    got = np.array([eval(code, {"math": math, "t": float(t)}) for t in v])
    err = ulps(got, exact(name, v), "float64")
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP, f"{code} at t={v[worst]!r}: {err[worst]:.1f} ulp"
