"""One parity helper for every backend: the NumPy and LLVM backends agree with a reference.

``compare_backends(program, args, reference=f)`` runs each available backend on
fresh copies of ``args`` and asserts that the returned outputs and the inputs
updated in place agree with the reference (``f`` follows the backends' call
convention: mutates its array arguments by the program's updates, returns the
outputs) or, without one, with the first backend.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from codegen.backends import BACKENDS
from codegen.ir import Program

TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def backends(program: Program) -> dict[str, Callable]:
    """Compiled functions of every registered backend, by backend name."""
    return {name: b.compile(program, cache=False) for name, b in BACKENDS.items()}


def run(fn: Callable, program: Program, args) -> tuple[tuple, dict]:
    """(outputs, updated inputs) of one call on copies of ``args``."""
    mine = [copy.deepcopy(a) for a in args]
    outputs = tuple(np.array(o) for o in fn(*mine))
    names = [v.name for v in program.inputs]
    updated = {dst.name: mine[names.index(dst.name)] for dst, _ in program.updates}
    return outputs, updated


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float, what: str) -> None:
    """Relative to the array's magnitude (so cancellation near zero does not fail a correct result)."""
    want = np.asarray(want, dtype=np.float64)
    finite = np.isfinite(want)
    scale = float(np.max(np.abs(want[finite]), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0.1 * rtol * scale + 1e-300, err_msg=what)


def compare_backends(
    program: Program, args, *, reference: Callable | None = None, rtol: float | None = None
) -> dict:
    """Run all backends (and ``reference``) on copies of ``args``; assert they agree; return the results."""
    rtol = TOLERANCE[program.dtype] if rtol is None else rtol
    results = {name: run(fn, program, args) for name, fn in backends(program).items()}
    base_name = "reference" if reference is not None else next(iter(results))
    base = run(reference, program, args) if reference is not None else results[base_name]
    for name, (outputs, updated) in results.items():
        assert len(outputs) == len(base[0]), (
            f"{name} returned {len(outputs)} outputs, {base_name} {len(base[0])}"
        )
        for v, got, want in zip(program.outputs, outputs, base[0]):
            assert got.shape == np.shape(want), (
                f"{name}: output {v.name} shape {got.shape} != {np.shape(want)}"
            )
            assert_close(got, want, rtol, f"{name} vs {base_name}: output {v.name}")
        for input_name, got in updated.items():
            assert_close(
                got, base[1][input_name], rtol, f"{name} vs {base_name}: updated input {input_name}"
            )
    return results
