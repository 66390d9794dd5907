"""A product consumed only by an in-place linear update (an optimizer's velocity) becomes one
accumulating GEMM (codegen.llvm.kernels.GemmUpdate): its values, when it applies, its bits."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from codegen.ir import Gemm, Map, Program, Value
from codegen.llvm import compile_program

n = sp.Symbol("n", integer=True, positive=True)
lr = sp.Symbol("lr")
x0, x1 = sp.Symbol("_x0", real=True), sp.Symbol("_x1", real=True)
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]
MOMENTUM = sp.Rational(9, 10)


def velocity_program(
    k,
    cols,
    trans_a=False,
    trans_b=False,
    body=None,
    update=True,
    extra_reader=False,
    dtype="float32",
):
    """G (k x cols) = 1/n op(A) @ op(B) over the batch n; V_new = body(V, G), V <- V_new."""
    a = Value("A", (n, k) if trans_a else (k, n))
    b = Value("B", (cols, n) if trans_b else (n, cols))
    v = Value("V", (k, cols))
    g, v_new = Value("G", (k, cols)), Value("V_new", (k, cols))
    body = MOMENTUM * x0 - x1 * lr if body is None else body
    stmts = [
        Gemm(g, a, b, trans_a=trans_a, trans_b=trans_b, alpha=1 / n),
        Map(v_new, body, ((x0, v), (x1, g))),
    ]
    outputs = () if update else (v_new,)  # a returned V_new is not computed in V's buffer
    if extra_reader:  # the product is read twice: it must stay a value of its own
        total = Value("G_twice", (k, cols))
        stmts.append(Map(total, 2 * x0, ((x0, g),)))
        outputs = (total,)
    updates = ((v, v_new),) if update else ()
    name = "velocity"
    return Program(name, (a, b, v), (lr,), tuple(stmts), outputs, updates, dtype, (n,))


def want(A, B, V, rate, trans_a, trans_b):
    """0.9 V - rate op(A) @ op(B) / batch, in float64."""
    a = (A.T if trans_a else A).astype(np.float64)
    b = (B.T if trans_b else B).astype(np.float64)
    return 0.9 * V.astype(np.float64) - rate * (a @ b) / a.shape[1]


def operands(rng, k, cols, batch, trans_a, trans_b, dtype="float32"):
    A = rng.normal(size=(batch, k) if trans_a else (k, batch)).astype(dtype)
    B = rng.normal(size=(cols, batch) if trans_b else (batch, cols)).astype(dtype)
    return A, B, rng.normal(size=(k, cols)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("blas", [None, "none"])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_fused_velocity_update_values(trans_a, trans_b, blas, dtype, rng):
    """The product and the update are one GEMM kernel (no map kernel) and give
    beta V + gamma alpha op(A) op(B), for the resolved BLAS and the generated loop nest."""
    k, cols, batch = 37, 29, 53
    program = velocity_program(k, cols, trans_a, trans_b, dtype=dtype)
    fn = compile_program(program, cache=False, blas=blas)
    assert "velocity.gemm.V_new" in fn.llvm_ir and "velocity.map.V_new" not in fn.llvm_ir
    A, B, V = operands(rng, k, cols, batch, trans_a, trans_b, dtype)
    expected = want(A, B, V, 0.3, trans_a, trans_b)
    fn(A, B, V, 0.3)  # V_new is computed in V's buffer
    tol = 2e-5 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(V, expected, rtol=0, atol=tol * np.abs(expected).max())


@pytest.mark.parametrize(
    "case",
    [
        {"update": False},  # V_new is not computed in V's buffer
        {"extra_reader": True},  # G is read again after the update
        {"body": MOMENTUM * x0 - x1 * x0 * lr},  # not linear in V and G
        {"body": MOMENTUM * x0 - x1**2 * lr},
    ],
)
def test_not_fused_when_it_does_not_apply(case, rng):
    k, cols, batch = 11, 7, 5
    program = velocity_program(k, cols, **case)
    fn = compile_program(program, cache=False)
    assert "velocity.gemm.G" in fn.llvm_ir and "velocity.map.V_new" in fn.llvm_ir
    A, B, V = operands(rng, k, cols, batch, False, False)
    old = V.copy()
    got = fn(A, B, V, 0.3)
    got = V if program.updates else got[0]
    g = A.astype(np.float64) @ B.astype(np.float64) / batch
    body = sp.lambdify((x0, x1, lr), program.body[1].body)
    np.testing.assert_allclose(got, body(old.astype(np.float64), g, 0.3), rtol=2e-5, atol=2e-5)


def test_same_bits_at_1_2_and_8_threads(rng):
    """A product large enough to split into row blocks (one per thread) with the update fused."""
    k, cols, batch = 512, 256, 64  # 2^23 multiply-adds: two blocks of 256 rows at 2 threads
    program = velocity_program(k, cols)
    A, B, V = operands(rng, k, cols, batch, False, False)
    results = []
    for threads in (1, 2, 8):
        fn = compile_program(program, cache=False, threads=threads)
        assert "velocity.gemm.V_new" in fn.llvm_ir
        v = V.copy()
        fn(A, B, v, 0.3)
        results.append(v)
    expected = want(A, B, V, 0.3, False, False)
    np.testing.assert_allclose(results[0], expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_momentum_mlp_step_loop_and_epoch_agree_at_1_2_and_8_threads(dtype, rng):
    """SGD with momentum on a 96-256-256-10 MLP (its weight gradients' products split into
    blocks): every velocity update is fused, and the step loop, the epoch call and every
    thread count train to the same bits."""
    from benchmarks.graphs import mlp_graph, sgd_step

    sizes, batch = [96, 256, 256, 10], 96
    x = rng.normal(size=(4 * batch, sizes[0])).astype(dtype)
    y = np.eye(10, dtype=dtype)[rng.integers(0, 10, len(x))]
    order = rng.permutation(len(x))
    weights = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        weights += [rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in), np.zeros((1, fan_out))]
    weights = [w.astype(dtype) for w in weights]
    graph = mlp_graph(sizes, "relu", "softmax")
    runs = {}
    for threads in (1, 2, 8):
        step = sgd_step(
            graph, backend="llvm", dtype=dtype, momentum=0.9, epoch=True, threads=threads
        )
        text = step.llvm_ir
        assert "sgd_step.gemm.vW1_new" in text  # one kernel for the three, named after the first
        assert not any(f"sgd_step.map.vW{k}_new" in text for k in (1, 2, 3))
        loop = [w.copy() for w in weights] + [np.zeros_like(w) for w in weights]
        for k in range(0, len(x), batch):
            rows = order[k : k + batch]
            step(x[rows], y[rows], *loop, 0.05)
        native = [w.copy() for w in weights] + [np.zeros_like(w) for w in weights]
        step.epoch(x, y, *native, 0.05, batch_size=batch, order=order)
        for got, want in zip(native, loop, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"epoch vs loop, {threads=}")
        runs[threads] = loop
    for threads in (2, 8):
        for got, want in zip(runs[threads], runs[1], strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"{threads=}")
    assert not np.array_equal(runs[1][0], weights[0])  # it trained
