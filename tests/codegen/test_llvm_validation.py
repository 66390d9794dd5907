"""Arguments are checked in Python before native code runs; guards stop a step before any update."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

from codegen.ir import Gemm, Guard, Map, Program, Reduce, Value
from codegen.llvm import compile_program

n = sp.Symbol("n", integer=True, positive=True)
x, y, w, g, lr = sp.symbols("x y w g lr")


def sgd_step(dtype="float64") -> Program:
    """loss = mean((X W - Y)^2); W -= lr dW, with the guard before the update."""
    X, Y, W = Value("X", (n, 4)), Value("Y", (n, 3)), Value("W", (4, 3))
    Z, L, dZ, dW, Wn = (
        Value("Z", (n, 3)),
        Value("L", (1, 1)),
        Value("dZ", (n, 3)),
        Value("dW", (4, 3)),
        Value("Wn", (4, 3)),
    )
    body = (
        Gemm(Z, X, W),
        Reduce(L, (x - y) ** 2 / n, ((x, Z), (y, Y)), (n, 3), None),
        Guard(L, "loss"),
        Map(dZ, 2 * (x - y) / n, ((x, Z), (y, Y))),
        Gemm(dW, X, dZ, trans_a=True),
        Map(Wn, w - lr * g, ((w, W), (g, dW))),
    )
    return Program(
        "sgd", (X, Y, W), (lr,), body, (L, Z), updates=((W, Wn),), dtype=dtype, batch=(n,)
    )


@pytest.fixture(scope="module")
def fn():
    return compile_program(sgd_step(), cache=False)


@pytest.fixture
def args(rng):
    return [rng.normal(size=(10, 4)), rng.normal(size=(10, 3)), rng.normal(size=(4, 3)), 0.1]


def native_must_not_run(fn, monkeypatch):
    monkeypatch.setattr(
        fn, "_entry", lambda *a: pytest.fail("native code ran despite a bad argument")
    )


def test_results_match_numpy_and_outputs_are_new_arrays(fn, args):
    X, Y, W, step = args
    W0 = W.copy()
    L1, Z1 = fn(X, Y, W, step)
    Z = X @ W0
    np.testing.assert_allclose(Z1, Z, rtol=1e-13)
    np.testing.assert_allclose(L1, [[np.mean((Z - Y) ** 2) * 3]], rtol=1e-13)
    np.testing.assert_allclose(W, W0 - step * X.T @ (2 * (Z - Y) / 10), rtol=1e-13)
    L2, Z2 = fn(X[:3].copy(), Y[:3].copy(), W, step)  # another batch size: its own buffers
    assert Z2.shape == (3, 3) and Z1.shape == (10, 3) and L1 is not L2
    np.testing.assert_allclose(Z1, Z, rtol=1e-13)  # the first result was not overwritten


BAD_ARGUMENTS = [
    ("count", lambda a: a[:3], TypeError, "takes 4 arguments"),
    ("list", lambda a: [a[0].tolist(), *a[1:]], TypeError, "argument 0 (X)"),
    ("dtype", lambda a: [a[0].astype(np.float32), *a[1:]], TypeError, "dtype float32"),
    ("big_endian", lambda a: [a[0], a[1].astype(">f8"), *a[2:]], TypeError, "argument 1 (Y)"),
    ("ndim", lambda a: [a[0], a[1].ravel(), *a[2:]], ValueError, "not 2-D"),
    ("rows", lambda a: [a[0], a[1][:9].copy(), *a[2:]], ValueError, "shape (10, 3)"),
    ("columns", lambda a: [a[0], a[1], np.zeros((4, 2)), a[3]], ValueError, "argument 2 (W)"),
    ("fortran", lambda a: [np.asfortranarray(a[0]), *a[1:]], ValueError, "C-contiguous"),
    (
        "strided",
        lambda a: [a[0], np.hstack([a[1], a[1]])[:, ::2], *a[2:]],
        ValueError,
        "C-contiguous",
    ),
    (
        "scalar",
        lambda a: [*a[:3], "0.1"],
        TypeError,
        "argument lr must be a real number; Received: lr=.0.1.",
    ),
]


@pytest.mark.parametrize("case", BAD_ARGUMENTS, ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_raise_before_native_code(fn, args, case, monkeypatch):
    _, corrupt, error, message = case
    bad = corrupt(list(args))
    W0 = args[2].copy()
    native_must_not_run(fn, monkeypatch)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        fn(*bad)
    np.testing.assert_array_equal(args[2], W0)


def test_read_only_updated_input(fn, args, monkeypatch):
    args[2].flags.writeable = False
    native_must_not_run(fn, monkeypatch)
    with pytest.raises(ValueError, match="read-only"):
        fn(*args)


def test_error_message_names_expected_and_received(fn, args):
    with pytest.raises(ValueError) as info:
        fn(args[0], args[1][:9].copy(), args[2], 0.1)
    text = str(info.value)
    assert (
        "argument 1 (Y)" in text
        and "shape (10, 3)" in text
        and "received" in text
        and "(9, 3)" in text
    )


@pytest.mark.parametrize("poison", [np.nan, np.inf])
def test_guard_raises_and_leaves_inputs_untouched(fn, args, poison):
    X, Y, W, step = args
    X[3, 1] = poison
    saved = [a.copy() for a in (X, Y, W)]
    with pytest.raises(FloatingPointError, match="loss"):
        fn(X, Y, W, step)
    for before, after in zip(saved, (X, Y, W)):
        np.testing.assert_array_equal(before, after)
    X[3, 1] = 0.0
    fn(X, Y, W, step)  # and the function still works afterwards
    assert not np.array_equal(W, saved[2])


def test_guard_with_in_place_update_planned_before_it(rng):
    """An update whose value is ready before a later guard is not written until the guard passes."""
    X, W = Value("X", (n, 2)), Value("W", (1, 2))
    Wn, L = Value("Wn", (1, 2)), Value("L", (1, 1))
    body = (
        Map(Wn, w * 0.5, ((w, W),)),
        Reduce(L, sp.log(x), ((x, X),), (n, 2), None),
        Guard(L, "log-likelihood"),
    )
    fn = compile_program(
        Program("late_guard", (X, W), (), body, (L,), updates=((W, Wn),), batch=(n,)), cache=False
    )
    Wv = np.ones((1, 2))
    with pytest.raises(FloatingPointError, match="log-likelihood"):
        fn(np.array([[1.0, -1.0]]), Wv)  # log(-1) = nan
    np.testing.assert_array_equal(Wv, [[1.0, 1.0]])
    fn(np.array([[1.0, 2.0]]), Wv)
    np.testing.assert_array_equal(Wv, [[0.5, 0.5]])


def test_inspectable(fn):
    assert fn.name == "sgd" and fn.program.name == "sgd"
    assert 'define i32 @"sgd"' in fn.llvm_ir or "define i32 @sgd(" in fn.llvm_ir
    assert "sgd.step_impl" in fn.llvm_ir
    assert fn.asm.strip() and "sgd" in fn.asm
    assert "sgd" in repr(fn)


def declared_functions(text: str) -> set[str]:
    import llvmlite.binding as llvm

    return {f.name for f in llvm.parse_assembly(text).functions if f.is_declaration}


def test_every_c_function_the_modules_call_is_a_reserved_name():
    """Introspection: a new external call cannot escape the names a program may not take."""
    import dataclasses

    from codegen.llvm import blas
    from codegen.llvm.emit import CFunction, library_ir
    from codegen.llvm.module import epoch_spec, generate_ir, is_linked_symbol, make_layout

    program = sgd_step()
    layout = make_layout(program)
    spec = epoch_spec(program, layout, "X", "Y", ("L",), None)
    step_module = generate_ir(program, layout, blas.provider(), spec, fast_entry=True)
    library = library_ir([CFunction("sgd_c", dataclasses.replace(program, name="sgd_c"))])
    declared = declared_functions(step_module) | declared_functions(library)
    assert {"malloc", "free", "PyTuple_New"} <= declared  # the test sees the calls
    assert all(is_linked_symbol(name) for name in declared), sorted(declared)


@pytest.mark.parametrize(
    "name", ["memcpy", "memset", "malloc", "PyTuple_New", "symgrad_x", "llvm.x"]
)
def test_a_program_named_after_a_called_c_function_is_rejected(name):
    import dataclasses

    from codegen.llvm.emit import CFunction, library_ir

    program = dataclasses.replace(sgd_step(), name=name)
    quoted = re.escape(repr(name))
    with pytest.raises(ValueError, match=f"may not be named {quoted}.*Received: name={quoted}"):
        compile_program(program, cache=False)
    if name.isidentifier():  # a C name at all (else the library rejects it earlier)
        with pytest.raises(ValueError, match=f"may not be named {quoted}"):
            library_ir([CFunction(name, program)])
