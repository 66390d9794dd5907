"""Statements that differ only in buffers and sizes share one (noinline) kernel."""

from __future__ import annotations

import sympy as sp

from codegen.ir import Map, Program, Reduce, Value
from codegen.llvm import compile_program
from tests.codegen.parity import compare_backends

n = sp.Symbol("n", integer=True, positive=True)
x, y, lr = sp.symbols("x y lr")


def updates(dtype="float64") -> Program:
    """w <- w - lr g for three weights of different shapes, and two column sums."""
    shapes = {"A": (4, 3), "B": (1, 3), "C": (7, 5)}
    ws = {k: Value(k, s) for k, s in shapes.items()}
    gs = {k: Value(f"g{k}", s) for k, s in shapes.items()}
    news = {k: Value(f"{k}_new", s) for k, s in shapes.items()}
    X = Value("X", (n, 3))
    s1, s2 = Value("s1", (1, 3)), Value("s2", (1, 3))
    body = tuple(Map(news[k], x - lr * y, ((x, ws[k]), (y, gs[k]))) for k in shapes)
    body += (
        Reduce(s1, x, ((x, X),), (n, 3), 0),
        Reduce(s2, x * x, ((x, X),), (n, 3), 0),  # another body: its own kernel
    )
    inputs = (X, *ws.values(), *gs.values())
    return Program(
        "upd",
        inputs,
        (lr,),
        body,
        (s1, s2),
        updates=tuple((ws[k], news[k]) for k in shapes),
        dtype=dtype,
        batch=(n,),
    )


def test_one_kernel_per_distinct_statement(rng):
    fn = compile_program(updates(), cache=False)
    defined = [line for line in fn.llvm_ir.splitlines() if line.startswith("define internal void")]
    kernels = [line for line in defined if '.chunk"(ptr' not in line]
    assert len(kernels) == 3  # one update map, two reductions
    assert len(defined) == 6  # and the chunk function of each (codegen.llvm.kernels.call_kernel)
    shared = next(k for k in kernels if ".map." in k)
    assert "noinline" in shared
    text = fn.llvm_ir
    assert all(f"; {k}_new(" in text for k in "ABC")  # every statement is shown above it


def test_shared_kernels_compute_each_statement(rng):
    program = updates()
    args = [rng.normal(size=(6, 3))]
    args += [rng.normal(size=s) for s in [(4, 3), (1, 3), (7, 5)] * 2]
    args.append(0.25)

    def reference(X, A, B, C, gA, gB, gC, step):
        for w, g in ((A, gA), (B, gB), (C, gC)):
            w -= step * g
        return X.sum(axis=0, keepdims=True), (X * X).sum(axis=0, keepdims=True)

    compare_backends(program, args, reference=reference)


def test_split_kernels_are_optimized_once():
    """A kernel split over the pool is called from its chunk function and from step_impl
    (one chunk): it stays one noinline function after O3, called from both, instead of
    a copy inlined into each that LLVM would optimize and vectorize twice."""
    fn = compile_program(updates(), cache=False)
    kernel = "upd.reduce.s2"  # over (n, 3): split in chunks of rows
    (define,) = [
        s for s in fn.llvm_ir.splitlines() if s.startswith(f'define internal void @"{kernel}"(')
    ]
    assert define.startswith("define internal void") and define.endswith("noinline")
    functions = fn.llvm_ir_optimized.split("\ndefine ")[1:]
    heads_bodies = [f.split("\n", 1) for f in functions]
    callers = [
        h.split("(", 1)[0].split("@")[-1] for h, body in heads_bodies if f"@{kernel}(" in body
    ]
    assert sorted(callers) == sorted([f"{kernel}.chunk", "upd.step_impl"])
