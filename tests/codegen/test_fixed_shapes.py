"""Programs with no batch dimension (every shape fixed) on every backend.

Such a program has no batch size to bind buffers by; the LLVM fast entry used
to run its first call with no buffers bound and crashed the process.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from codegen.backends import BACKENDS
from symgrad import expr as E

W = sp.MatrixSymbol("W", 3, 4)
V = sp.MatrixSymbol("V", 4, 2)
lr = sp.Symbol("lr")


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_outputs_of_fixed_shapes(backend):
    f = symgrad.compile(
        [W, V], {"s": E.total(W), "p": W * V, "c": E.col_sum(W)}, backend=backend, cache=False
    )
    rng = np.random.default_rng(3)
    for _ in range(3):  # the first call and the calls after it
        w, v = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
        s, p, c = f(w, v)
        np.testing.assert_allclose(s, [[w.sum()]], rtol=1e-12)
        np.testing.assert_allclose(p, w @ v, rtol=1e-12)
        np.testing.assert_allclose(c, w.sum(axis=0, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_update_of_fixed_shapes(backend):
    G = sp.MatrixSymbol("G", 3, 4)
    f = symgrad.compile(
        [W, G],
        {"s": E.total(W)},
        updates={W: W - lr * G},
        scalars=[lr],
        backend=backend,
        cache=False,
    )
    rng = np.random.default_rng(4)
    w, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    expected = w - 0.5 * g
    f(w, g, 0.5)
    np.testing.assert_allclose(w, expected, rtol=1e-12)
