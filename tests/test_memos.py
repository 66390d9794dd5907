"""symgrad's in-process caches do not grow with the number of distinct programs compiled."""

from __future__ import annotations

import numpy as np
import sympy as sp

import symgrad
from benchmarks.bench_memory import functools_caches
from symgrad import compiler
from symgrad import expr as E
from symgrad.core.scalar import MEMO_SIZE


def compile_distinct(i: int):
    X, W, t = E.matrix("X", E.batch(), 3), E.matrix("W", 3, 2), sp.Symbol("t")
    loss = E.mean(E.elementwise(sp.Lambda(t, sp.Rational(i, 7) * sp.tanh(t) + t**2), X @ W))
    fn = compiler.compile(
        [X, W], {"loss": loss, "dW": symgrad.grad(loss, W)}, name=f"memo_{i}", cache=False
    )
    (value, _) = fn(np.ones((2, 3)), np.ones((3, 2)) / 4)
    assert np.isclose(value[0, 0], i / 7 * np.tanh(0.75) + 0.75**2)


def test_every_cache_is_bounded_or_keyed_by_what_does_not_change_per_program():
    compile_distinct(1)
    caches = functools_caches()
    assert any(f.cache_info().maxsize for _, f in caches)  # the memos of scalar bodies
    sizes = {name: f.cache_info().currsize for name, f in caches}
    for i in range(2, 5):
        compile_distinct(i)
    for name, f in caches:
        info = f.cache_info()
        if info.maxsize is None:  # host, target machines, BLAS, the pool: once per process
            assert info.currsize == sizes[name], f"{name} grows with each program"
        else:
            assert info.maxsize <= MEMO_SIZE, f"{name} keeps up to {info.maxsize} entries"
