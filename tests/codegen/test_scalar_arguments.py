"""Scalar arguments follow one rule on every backend (``codegen.ir.check_scalar``).

Each value of the table goes to the NumPy function, the LLVM fast entry, the
LLVM Python path and the LLVM epoch loop: all raise the same error with the same
message (and write nothing), or all accept it and compute the same step.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from codegen.llvm import compile_epoch
from codegen.llvm import compile_program as llvm_compile
from codegen.numpy import compile_program as numpy_compile
from tests.codegen.test_llvm_validation import sgd_step

NOT_A_NUMBER = "argument lr must be a real number; Received: lr="
NOT_FINITE = "argument lr must be finite in {dtype}"

# (value, dtypes where it is rejected, error, message start)
BAD = [
    (True, "both", TypeError, NOT_A_NUMBER + "True"),
    (False, "both", TypeError, NOT_A_NUMBER + "False"),
    (np.bool_(True), "both", TypeError, NOT_A_NUMBER),
    ("0.1", "both", TypeError, NOT_A_NUMBER + "'0.1'"),
    (None, "both", TypeError, NOT_A_NUMBER + "None"),
    (1 + 0j, "both", TypeError, NOT_A_NUMBER),
    (Decimal("0.1"), "both", TypeError, NOT_A_NUMBER),
    (np.array(0.1), "both", TypeError, NOT_A_NUMBER),
    (float("nan"), "both", ValueError, NOT_FINITE),
    (np.float32("nan"), "both", ValueError, NOT_FINITE),
    (float("inf"), "both", ValueError, NOT_FINITE),
    (-np.inf, "both", ValueError, NOT_FINITE),
    (10**400, "both", ValueError, NOT_FINITE),
    (1e39, "float32", ValueError, NOT_FINITE),  # finite in float64, inf in float32
    (-1e39, "float32", ValueError, NOT_FINITE),
]
GOOD = [0.1, -1.0, 2, np.float32(0.5), np.float64(0.25), np.int64(3), Fraction(1, 8), 1e30]


def data(dtype, rows=6):
    rng = np.random.default_rng(7)
    return [rng.normal(size=s).astype(dtype) for s in [(rows, 4), (rows, 3), (4, 3)]]


def callers(dtype):
    """Every way a program's scalars reach a backend: name -> call(X, Y, W, lr)."""
    program = sgd_step(dtype)
    numpy_fn = numpy_compile(program)
    llvm_fn = llvm_compile(program, cache=False)
    llvm_fn(*data(dtype), 0.1)  # binds the batch size: later calls go native first
    epoch = compile_epoch(program, x_input="X", y_input="Y", sums=("L",), counter=None, cache=False)

    def run_epoch(X, Y, W, lr):
        return epoch(X, Y, W, lr, batch_size=len(X), order=np.arange(len(X)))

    return {
        "numpy": numpy_fn,
        "llvm fast entry": llvm_fn.fast,
        "llvm python path": llvm_fn._call_python,
        "llvm epoch": run_epoch,
    }


DTYPES = ("float64", "float32")
BAD_CASES = [(d, c) for d in DTYPES for c in BAD if c[1] in ("both", d)]
GOOD_CASES = [(d, v) for d in DTYPES for v in GOOD] + [
    (d, c[0])
    for d in DTYPES
    for c in BAD
    if c[1] not in ("both", d)  # 1e39 in float64
]


@functools.cache
def callers_of(dtype):
    return callers(dtype)


@pytest.mark.parametrize(
    ("dtype", "case"), BAD_CASES, ids=[f"{d}-{c[0]!r:.20}" for d, c in BAD_CASES]
)
def test_bad_scalars_are_rejected_alike(dtype, case):
    fns = callers_of(dtype)
    value, _, error, start = case
    messages = {}
    for name, fn in fns.items():
        X, Y, W = data(dtype)
        W0 = W.copy()
        with pytest.raises(error) as info:
            fn(X, Y, W, value)
        messages[name] = re.sub(r"^\w+: ", "", str(info.value))  # without the function's name
        np.testing.assert_array_equal(W, W0, err_msg=f"{name} wrote W")
    assert len(set(messages.values())) == 1, messages
    assert next(iter(messages.values())).startswith(start.format(dtype=dtype)), messages


@pytest.mark.parametrize(("dtype", "value"), GOOD_CASES, ids=[f"{d}-{v!r}" for d, v in GOOD_CASES])
def test_good_scalars_agree(dtype, value):
    fns = callers_of(dtype)
    results = {}
    for name, fn in fns.items():
        X, Y, W = data(dtype)
        fn(X, Y, W, value)
        assert np.all(np.isfinite(W))
        results[name] = W
    want = results.pop("numpy")
    tol = 1e-12 if dtype == "float64" else 2e-5
    for name, W in results.items():
        np.testing.assert_allclose(W, want, rtol=tol, atol=tol * np.abs(want).max(), err_msg=name)
