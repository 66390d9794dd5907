"""gemm providers: the resolved BLAS, each ABI we can reach here, and the generated fallback."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import sympy as sp

from codegen.ir import Gemm, Program, Value
from codegen.llvm import blas, compile_program

n = sp.Symbol("n", integer=True, positive=True)
lr = sp.Symbol("lr")
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]


def gemm_program(m, k, cols, trans_a, trans_b, dtype) -> Program:
    """C (n x cols) = lr op(A) op(B), op(A) n x k; n is the batch symbol so m varies per call."""
    a = Value("A", (k, n) if trans_a else (n, k))
    b = Value("B", (cols, k) if trans_b else (k, cols))
    out = Value("C", (n, cols))
    body = (Gemm(out, a, b, trans_a=trans_a, trans_b=trans_b, alpha=lr),)
    return Program(
        f"gemm_{int(trans_a)}{int(trans_b)}", (a, b), (lr,), body, (out,), dtype=dtype, batch=(n,)
    )


def check_gemm(fn, m, k, cols, trans_a, trans_b, dtype, rng):
    A = rng.normal(size=(k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.normal(size=(cols, k) if trans_b else (k, cols)).astype(dtype)
    (C,) = fn(A, B, -0.75)
    want = (
        -0.75
        * (A.T if trans_a else A).astype(np.float64)
        @ (B.T if trans_b else B).astype(np.float64)
    )
    scale = np.abs(A).max() * np.abs(B).max() * max(k, 1)
    tol = 1e-13 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(C, want, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_generated_fallback_gemm(trans_a, trans_b, dtype, rng):
    """Odd sizes, sizes 1, and sizes that cross the fallback's k (64) and n (256) blocks."""
    for k, cols in [(1, 1), (7, 5), (131, 3), (65, 270)]:
        fn = compile_program(
            gemm_program(None, k, cols, trans_a, trans_b, dtype), cache=False, blas="none"
        )
        assert fn.blas is blas.GENERATED and not any(
            f"symgrad_{abi}_" in fn.llvm_ir for abi in ("cblas64", "cblas32", "fortran32")
        )
        for m in (1, 37):
            check_gemm(fn, m, k, cols, trans_a, trans_b, dtype, rng)


def test_env_var_forces_fallback(monkeypatch):
    monkeypatch.setenv("SYMGRAD_BLAS", "none")
    assert blas.provider() is blas.GENERATED
    fn = compile_program(gemm_program(None, 3, 2, False, False, "float64"), cache=False)
    assert fn.blas is blas.GENERATED and "symgrad.gemm_axpy.f64" in fn.llvm_ir
    monkeypatch.setenv("SYMGRAD_BLAS", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        blas.provider()


def test_default_provider_is_reported(monkeypatch):
    monkeypatch.delenv("SYMGRAD_BLAS", raising=False)
    found = blas.provider()
    assert found.name in ("numpy-openblas", "scipy-cython-blas", "system-cblas", "generated")
    if found is not blas.GENERATED:
        assert found.path and found.path in str(found)


PROVIDERS = ["numpy", "system"] + (["scipy"] if importlib.util.find_spec("scipy") else [])


@pytest.mark.parametrize("choice", PROVIDERS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_each_reachable_provider(choice, dtype, rng):
    """Every ABI that resolves on this machine (ILP64 CBLAS, Fortran LP64, ...) computes the same product."""
    found = blas.provider(choice)
    if found is blas.GENERATED:
        pytest.skip(f"no {choice} BLAS on this machine")
    for trans_a, trans_b in TRANSPOSES:
        fn = compile_program(
            gemm_program(None, 6, 4, trans_a, trans_b, dtype), cache=False, blas=choice
        )
        assert fn.blas is found and found.symbol(dtype) in fn.llvm_ir
        for m in (1, 9):
            check_gemm(fn, m, 6, 4, trans_a, trans_b, dtype, rng)
