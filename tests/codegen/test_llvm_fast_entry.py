"""The native per-step entry: checks in native code, the Python path for everything else."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from codegen.llvm import compile_program
from tests.codegen.test_llvm_validation import BAD_ARGUMENTS, sgd_step


@pytest.fixture(params=["float64", "float32"])
def fn(request):
    return compile_program(sgd_step(request.param), cache=False)


def arguments(rng, dtype, rows=10):
    X, Y, W = (rng.normal(size=s).astype(dtype) for s in [(rows, 4), (rows, 3), (4, 3)])
    return [X, Y, W, 0.1]


def reference(X, Y, W, lr):
    Z = X.astype(np.float64) @ W
    dW = X.T @ (2 * (Z - Y) / len(X))
    return np.mean((Z - Y) ** 2) * 3, Z, W - lr * dW


def test_fast_entry_is_a_builtin_and_agrees_with_the_python_path(fn, rng):
    assert type(fn.fast).__name__ == "builtin_function_or_method"
    dtype = fn.program.dtype
    tol = 1e-12 if dtype == "float64" else 1e-5
    args = arguments(rng, dtype)
    fn(*args)  # binds the batch size: the Python path
    entry = fn._fast_entry
    before = entry.fallbacks
    for lr in [
        0.1,
        -1.0,
        2,
        np.float32(0.5),
        np.float64(0.25),
    ]:  # -1.0 is PyFloat_AsDouble's error value
        args = arguments(rng, dtype)
        want_loss, want_z, want_w = reference(*args[:3], float(lr))
        python = [a.copy() for a in args[:3]]
        loss, Z = fn.fast(*args[:3], lr)
        p_loss, p_z = fn._call_python(*python, lr)
        np.testing.assert_allclose(loss[0, 0], want_loss, rtol=tol)
        np.testing.assert_allclose(Z, want_z, rtol=tol, atol=tol)
        np.testing.assert_allclose(args[2], want_w, rtol=tol, atol=tol)
        np.testing.assert_array_equal(Z, p_z)  # the same native step either way
        np.testing.assert_array_equal(args[2], python[2])
        assert loss.dtype == Z.dtype == np.dtype(dtype) and Z.flags.c_contiguous
    assert entry.fallbacks == before  # every call above stayed native


def test_outputs_are_fresh_and_batch_sizes_alternate(fn, rng):
    dtype = fn.program.dtype
    big, small = arguments(rng, dtype, 10), arguments(rng, dtype, 3)
    z1 = fn(*big)[1]
    z2 = fn(*small)[1]
    z3 = fn(*big)[1]
    assert z1.shape == z3.shape == (10, 3) and z2.shape == (3, 3)
    assert z1 is not z3 and not np.shares_memory(z1, z3)
    assert fn._fast_entry.fallbacks == 3  # each change of batch size binds in Python once
    fn(*big)
    assert fn._fast_entry.fallbacks == 3


@pytest.mark.parametrize("case", BAD_ARGUMENTS, ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_reach_the_python_checks(case, rng):
    fn = compile_program(sgd_step(), cache=False)
    args = arguments(rng, "float64")
    fn(*args)
    _, corrupt, error, message = case
    bad = corrupt(list(args))
    W0 = args[2].copy()
    before = fn._fast_entry.fallbacks
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        fn.fast(*bad)
    assert fn._fast_entry.fallbacks == before + 1
    np.testing.assert_array_equal(args[2], W0)


def test_read_only_and_subclass_inputs(rng):
    fn = compile_program(sgd_step(), cache=False)
    args = arguments(rng, "float64")
    fn(*args)
    args[2].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fn.fast(*args)
    args[2] = args[2].copy()

    class Sub(np.ndarray):
        pass

    before = fn._fast_entry.fallbacks
    loss, _ = fn.fast(args[0].view(Sub), *args[1:])  # accepted by the Python path
    assert np.isfinite(loss[0, 0]) and fn._fast_entry.fallbacks == before + 1


def test_guard_failure_raises_through_the_python_path(rng):
    fn = compile_program(sgd_step(), cache=False)
    args = arguments(rng, "float64")
    fn(*args)
    args[0][2, 1] = np.nan
    W0 = args[2].copy()
    with pytest.raises(FloatingPointError, match="loss"):
        fn.fast(*args)
    np.testing.assert_array_equal(args[2], W0)


def test_the_builtin_keeps_its_function_alive(rng):
    import gc

    fast = compile_program(sgd_step(), cache=False).fast  # the LLVMFunction is dropped here
    gc.collect()
    for rows in (10, 3, 10):
        args = arguments(rng, "float64", rows)
        want_loss, _, want_w = reference(*args[:3], 0.1)
        loss, _ = fast(*args)
        np.testing.assert_allclose(loss[0, 0], want_loss, rtol=1e-12)
        np.testing.assert_allclose(args[2], want_w, rtol=1e-12)


def test_first_call_binds_when_the_first_input_has_no_batch_dimension(rng):
    """Inputs in the order (W, X, Y): W's shape passes the native check before any batch size
    is bound, so the first call must go to the Python path before storing any pointer."""
    program = sgd_step()
    X, Y, W = program.inputs
    reordered = compile_program(replace(program, inputs=(W, X, Y)), cache=False)
    X_, Y_, W_, lr = arguments(rng, "float64")
    want_loss, want_z, want_w = reference(X_, Y_, W_, lr)
    loss, Z = reordered(W_, X_, Y_, lr)
    np.testing.assert_allclose(loss[0, 0], want_loss, rtol=1e-12)
    np.testing.assert_allclose(W_, want_w, rtol=1e-12)
    assert reordered._fast_entry.fallbacks == 1  # the first call bound the batch size
