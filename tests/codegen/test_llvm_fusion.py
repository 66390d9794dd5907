"""Elementwise statements over one domain share one loop nest (codegen.llvm.fusion).

A Dense + relu network's step has one loop per weight update (the velocity and the new
weight together), the bias add and the activation in one loop, the activation's
derivative and the bias gradient in one loop. Every loop shape computes what the
statements compute one by one, and nothing moves across a guard that may still fail.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

from benchmarks.graphs import mlp_graph, sgd_step
from codegen.ir import Guard, Map, Program, Reduce, Value
from codegen.llvm import compile_program
from codegen.llvm.fusion import Fused, fuse_loops
from codegen.llvm.module import make_layout
from tests.codegen.parity import compare_backends

n = sp.Symbol("n", integer=True, positive=True)
x, y, z, lr = sp.symbols("x y z lr", real=True)


@pytest.fixture(scope="module")
def relu_step():
    """6-16-12-3 relu, softmax cross-entropy, SGD with momentum (Keras's form)."""
    return sgd_step(mlp_graph([6, 16, 12, 3]), backend="llvm", momentum=0.9, cache=False)


def units(program: Program):
    """The program's statements as the LLVM backend runs them: alone, or Fused groups."""
    layout = make_layout(program)
    return fuse_loops(program, layout.slot_of, layout.body)


def unit_of(found, name: str):
    """The unit (a statement, or a Fused group) that computes value ``name``."""
    for u in found:
        members = u.members if isinstance(u, Fused) else (u,)
        if any(m.out is not None and m.out.name == name for m in members):
            return u
    raise AssertionError(f"no unit computes {name}")


def kernels_writing(llvm_ir: str, name: str) -> list[str]:
    """The notes (IR statements shown above a kernel) of the kernels that compute ``name``."""
    notes, found = [], []
    for line in llvm_ir.splitlines():
        if line.startswith(";"):
            notes.append(line)
            continue
        if line.startswith("define") and '.chunk"(' not in line:
            if any(re.match(rf";\s*{name}\(", note) for note in notes):
                found.append("\n".join(notes))
        notes = []
    return found


@pytest.mark.parametrize("k", [1, 2, 3])
def test_one_loop_per_weight_update(relu_step, k):
    """The new velocity and the new weight: one group, one kernel, nothing in between stored."""
    update = unit_of(units(relu_step.program), f"W{k}_new")
    assert isinstance(update, Fused)
    assert [m.out.name for m in update.members] == [f"vW{k}_new", f"W{k}_new"]
    assert update.loop == "flat"
    (kernel,) = kernels_writing(relu_step.llvm_ir, f"W{k}_new")
    assert f"vW{k}_new(" in kernel


@pytest.mark.parametrize("k", [1, 2])
def test_bias_add_and_relu_in_one_loop(relu_step, k):
    """Z = XW + b is only read by A = relu(Z): computed in registers, A stored."""
    forward = unit_of(units(relu_step.program), f"A{k}")
    assert isinstance(forward, Fused)
    names = [m.out.name for m in forward.members]
    assert names == [f"Z{k}", f"A{k}"]
    assert forward.stored == (False, True)
    assert forward.loop == "rows"  # b is a row operand


@pytest.mark.parametrize("k", [1, 2])
def test_relu_derivative_and_bias_gradient_in_one_loop(relu_step, k):
    """dZ = dA o [A > 0] and colsum(dZ) (the bias gradient before its 1/n): one pass."""
    found = units(relu_step.program)
    weight_gradient = unit_of(found, f"dW{k}")  # dW = 1/n A.T @ dZ
    mask = unit_of(found, weight_gradient.b.name)
    assert isinstance(mask, Fused)
    assert mask.loop == "cols"
    kinds = [type(m) for m in mask.members]
    assert kinds == [Map, Reduce] and mask.members[1].axis == 0
    assert mask.stored == (True, True)  # dZ is also the weight gradient's operand


def test_fused_step_trains_as_the_numpy_backend(relu_step, rng):
    numpy_step = sgd_step(mlp_graph([6, 16, 12, 3]), momentum=0.9, cache=False)
    X = rng.normal(size=(20, 6))
    Y = np.eye(3)[rng.integers(0, 3, 20)]
    shapes = [(6, 16), (1, 16), (16, 12), (1, 12), (12, 3), (1, 3)]
    params = [rng.normal(size=s) * 0.5 for s in shapes] + [rng.normal(size=s) for s in shapes]
    mine, theirs = [p.copy() for p in params], [p.copy() for p in params]
    for _ in range(3):
        (got,) = relu_step(X, Y, *mine, 0.1)
        (want,) = numpy_step(X, Y, *theirs, 0.1)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def _program(name, inputs, body, outputs, updates=(), dtype="float64"):
    return Program(name, inputs, (lr,), body, outputs, updates, dtype=dtype, batch=(n,))


def test_flat_loop_with_a_total(rng):
    """u = x y; v = u + x (in place in w); sum(v): a flat loop carrying the partial sums."""
    X, W = Value("X", (n, 5)), Value("W", (n, 5))
    u, v, s = Value("u", (n, 5)), Value("W_new", (n, 5)), Value("s", (1, 1))
    body = (
        Map(u, x * y, ((x, X), (y, W))),
        Map(v, x + lr * y, ((x, W), (y, u))),
        Reduce(s, x * x, ((x, v),), (n, 5), None),
    )
    program = _program("flat", (X, W), body, (s,))
    (group,) = units(program)
    assert group.loop == "flat" and group.stored == (False, False, True)
    args = [rng.normal(size=(3000, 5)), rng.normal(size=(3000, 5)), 0.5]  # several chunks

    def reference(X, W, step):
        return (((W + step * X * W) ** 2).sum(keepdims=True).reshape(1, 1),)

    compare_backends(program, args, reference=reference)


def test_rows_loop_with_sums_per_row_and_in_total(rng):
    """A row and a column operand, a sum per row and a sum of everything."""
    X, b, c = Value("X", (n, 7)), Value("b", (1, 7)), Value("c", (n, 1))
    u, r, s = Value("u", (n, 7)), Value("r", (n, 1)), Value("s", (1, 1))
    body = (
        Map(u, x + y * z, ((x, X), (y, b), (z, c))),
        Reduce(r, sp.exp(x), ((x, u),), (n, 7), 1),
        Reduce(s, x - y, ((x, u), (y, b)), (n, 7), None),
    )
    program = _program("rows", (X, b, c), body, (u, r, s))
    (group,) = units(program)
    assert group.loop == "rows"
    args = [rng.normal(size=(2500, 7)), rng.normal(size=(1, 7)), rng.normal(size=(2500, 1)), 1.0]

    def reference(X, b, c, step):
        U = X + b * c
        return U, np.exp(U).sum(1, keepdims=True), (U - b).sum(keepdims=True)

    compare_backends(program, args, reference=reference)


def test_column_sums_loop(rng):
    """relu'-style mask and two column sums in one pass over column chunks."""
    G, A = Value("G", (n, 300)), Value("A", (n, 300))
    d, s1, s2 = Value("d", (n, 300)), Value("s1", (1, 300)), Value("s2", (1, 300))
    body = (
        Map(d, x * sp.Heaviside(y, 0), ((x, G), (y, A))),
        Reduce(s1, x, ((x, d),), (n, 300), 0),
        Reduce(s2, x * y, ((x, d), (y, G)), (n, 300), 0),
    )
    program = _program("cols", (G, A), body, (d, s1, s2))
    (group,) = units(program)
    assert group.loop == "cols"
    args = [rng.normal(size=(200, 300)), rng.normal(size=(200, 300)), 1.0]

    def reference(G, A, step):
        D = G * (A > 0)
        return D, D.sum(0, keepdims=True), (D * G).sum(0, keepdims=True)

    compare_backends(program, args, reference=reference)


def test_results_read_elsewhere_than_their_element_end_the_group(rng):
    """A sum read by the next statement, a row read as a broadcast: separate loops."""
    X = Value("X", (n, 4))
    s, u = Value("s", (1, 1)), Value("u", (n, 4))
    body = (
        Reduce(s, x, ((x, X),), (n, 4), None),
        Map(u, x - y, ((x, X), (y, s))),  # needs the whole sum first
    )
    program = _program("apart", (X,), body, (u,))
    assert not any(isinstance(t, Fused) for t in units(program))
    args = [rng.normal(size=(9, 4)), 1.0]
    compare_backends(program, args, reference=lambda X, step: (X - X.sum(),))


def test_an_update_in_place_never_moves_before_a_guard(rng):
    """W_new (computed into W) would join u's loop if it could move up past the guard; a
    failed guard must leave W as it was."""
    X, W, g = Value("X", (n, 3)), Value("W", (n, 3)), Value("g", (1, 1))
    u, h, W_new = Value("u", (n, 3)), Value("h", (1, 1)), Value("W_new", (n, 3))
    body = (
        Map(u, 2 * x, ((x, X),)),
        Map(h, x * lr, ((x, g),)),
        Guard(h, "h"),
        Map(W_new, x - y, ((x, W), (y, u))),
    )
    program = _program("guarded", (X, W, g), body, (u,), updates=((W, W_new),))
    layout = make_layout(program)
    assert layout.slot_of["W_new"] == layout.slot_of["W"]  # the update is computed in place
    assert not any(isinstance(t, Fused) for t in fuse_loops(program, layout.slot_of, layout.body))
    fn = compile_program(program, cache=False)
    weights = rng.normal(size=(4, 3))
    before = weights.copy()
    with pytest.raises(FloatingPointError, match="h is not finite"):
        fn(rng.normal(size=(4, 3)), weights, np.full((1, 1), np.inf), 1.0)
    np.testing.assert_array_equal(weights, before)


def test_several_sums_to_one_number_in_one_loop(rng):
    """A new weight and the finiteness checks of it and of the gradient (as the training
    step's guards read them): one loop, each sum's chunk partials added in chunk order."""
    W, g = Value("W", (n, 6)), Value("g", (n, 6))
    W_new, s1, s2 = Value("W_new", (n, 6)), Value("s1", (1, 1)), Value("s2", (1, 1))
    body = (
        Reduce(s1, x, ((x, g),), (n, 6), None),
        Map(W_new, x - lr * y, ((x, W), (y, g))),
        Reduce(s2, x, ((x, W_new),), (n, 6), None),
    )
    program = _program("checks", (W, g), body, (W_new, s1, s2))
    (group,) = units(program)
    assert [type(m) for m in group.members] == [Reduce, Map, Reduce]
    args = [rng.normal(size=(9000, 6)), rng.normal(size=(9000, 6)), 0.25]  # 4 chunks

    def reference(W, g, step):
        new = W - step * g
        return new, g.sum(keepdims=True), new.sum(keepdims=True)

    compare_backends(program, args, reference=reference)


def test_fused_sums_have_the_same_bits_at_1_2_and_8_threads(rng):
    """Partial sums per chunk (first sum: the chunk runner's; the others: the group's own),
    added in chunk order, and column sums in row order, whichever thread ran a chunk."""
    W, g, A = Value("W", (n, 6)), Value("g", (n, 6)), Value("A", (n, 6))
    W_new, s1, s2 = Value("W_new", (n, 6)), Value("s1", (1, 1)), Value("s2", (1, 1))
    d, c = Value("d", (n, 6)), Value("c", (1, 6))
    body = (
        Map(d, x * sp.Heaviside(y, 0), ((x, g), (y, A))),
        Reduce(c, x, ((x, d),), (n, 6), 0),
        Reduce(s1, x, ((x, g),), (n, 6), None),
        Map(W_new, x - lr * y, ((x, W), (y, g))),
        Reduce(s2, x * x, ((x, W_new),), (n, 6), None),
    )
    program = _program("sums", (W, g, A), body, (W_new, s1, s2, c))
    assert sum(isinstance(u, Fused) for u in units(program)) == 2
    args = [rng.normal(size=(20000, 6)) for _ in range(3)]
    results = [compile_program(program, cache=False, threads=t)(*args, 0.5) for t in (1, 2, 8)]
    for got in results[1:]:
        for a, b in zip(got, results[0], strict=True):
            np.testing.assert_array_equal(a, b)
