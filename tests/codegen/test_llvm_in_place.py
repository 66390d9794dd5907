"""A map computed in place over its operand: the operand is read through ``freeze``.

x86's instruction selection turned ``store(select(0 > x, 0, x))`` back into the
address it loaded x from into a masked store (``vmaskmovps``), microcoded and
slow on AMD Zen; read through ``freeze`` it is ``vmaxps`` and a plain store.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

from codegen.ir import Gemm, Map, Program, Reduce, Value, plan_buffers
from codegen.llvm import compile_program
from codegen.llvm.jit import host

n = sp.Symbol("n", integer=True, positive=True)
z, a = sp.symbols("z a")


def relu_program(dtype: str) -> Program:
    """Z = X W; A = relu(Z) in Z's buffer; B = relu(X) in a buffer of its own; their column sums."""
    X, W = Value("X", (n, 16)), Value("W", (16, 16))
    Z, A, B = Value("Z", (n, 16)), Value("A", (n, 16)), Value("B", (n, 16))
    OA, OB = Value("OA", (1, 16)), Value("OB", (1, 16))
    relu = sp.Max(0, z)
    body = (
        Gemm(Z, X, W),
        Map(A, relu, ((z, Z),)),
        Map(B, relu, ((z, X),)),  # the same body: a kernel of its own (other aliasing)
        Reduce(OA, a, ((a, A),), (n, 16), 0),
        Reduce(OB, a, ((a, B),), (n, 16), 0),
    )
    return Program("relu_in_place", (X, W), (), body, (OA, OB), batch=(n,), dtype=dtype)


def kernel_text(ir_text: str, name: str) -> str:
    match = re.search(rf'define [^\n]*@"?relu_in_place\.map\.{name}"?\(.*?\n}}', ir_text, re.S)
    assert match, f"no kernel map.{name} in the module"
    return match.group(0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_in_place_operand_is_frozen_and_values_are_relu(rng, dtype):
    p = relu_program(dtype)
    plan = plan_buffers(p)
    assert plan.buffer["A"] == "Z"
    fn = compile_program(p, cache=False)
    assert "freeze" in kernel_text(fn.llvm_ir, "A")  # loads Z, stores A at the same address
    assert "freeze" not in kernel_text(fn.llvm_ir, "B")  # reads X, writes its own buffer
    X = rng.standard_normal((33, 16)).astype(dtype)
    W = rng.standard_normal((16, 16)).astype(dtype)
    W[0, 0] = np.nan  # a nan column of Z: relu passes it on, as np.maximum
    X[0, 1] = np.nan  # and a nan column of X
    oa, ob = fn(X, W)
    expected = [np.maximum(X @ W, 0).sum(axis=0), np.maximum(X, 0).sum(axis=0)]
    for got, want in zip((oa[0], ob[0]), expected):
        assert np.isnan(want).sum() > 0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # nan where want is


@pytest.mark.skipif(
    not host().triple.startswith("x86_64") or "+avx" not in host().features,
    reason="the masked store is an x86 AVX instruction",
)
def test_in_place_relu_has_no_masked_store():
    asm = compile_program(relu_program("float32"), cache=False).asm
    body = asm.split("relu_in_place.map.A:")[1].split(".Lfunc_end")[0]
    assert "vmaxps" in body
    assert "maskmov" not in asm
