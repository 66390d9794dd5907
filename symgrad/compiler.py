"""symgrad.compile: simplify graphs together, lower them, and build a callable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sympy as sp
from sympy.matrices.expressions import MatrixExpr, MatrixSymbol

from codegen import ir
from codegen.lower import lower
from symgrad import expr as E
from symgrad.simplify import simplify

BACKENDS = ("numpy", "llvm")


class CompiledFunction:
    """A compiled program: ``fn(*arrays, *scalars) -> tuple of arrays``.

    Arrays come in ``inputs`` order, then Python numbers for ``scalars``.
    Outputs are new arrays; ``updates`` are then written into the input
    arrays in place (never when a guarded output is nan or inf).
    """

    def __init__(self, native, program: ir.Program, formulas, rewrites, backend, inputs, scalars):
        self._native = native
        self.program = program
        self.formulas: dict[str, MatrixExpr] = formulas
        self.rewrites: list[str] = rewrites
        self.backend = backend
        self.inputs: tuple[MatrixSymbol, ...] = tuple(inputs)
        self.scalars: tuple[sp.Symbol, ...] = tuple(scalars)
        self.name = program.name

    def __call__(self, *args):
        return self._native(*args)

    @property
    def native(self):
        """The backend's function object (NumPy source or LLVM module inside)."""
        return self._native

    @property
    def source(self) -> str:
        """Generated source: Python for the NumPy backend, LLVM IR for the LLVM backend."""
        src = getattr(self._native, "source", None)
        return src if src is not None else self._native.llvm_ir

    def __getattr__(self, attr):  # llvm_ir, asm, ... from the backend
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self._native, attr)

    def __repr__(self) -> str:
        return f"<CompiledFunction {self.name} backend={self.backend} dtype={self.program.dtype}>"


def _backend(name: str):
    if name == "numpy":
        from codegen import numpy as backend
    elif name == "llvm":
        from codegen import llvm as backend
    else:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return backend


def compile(  # noqa: A001 - the verb users expect, as in jax.jit / torch.compile
    inputs: Sequence[MatrixSymbol],
    outputs: Mapping[str, MatrixExpr] | Sequence[MatrixExpr],
    *,
    updates: Mapping[MatrixSymbol, MatrixExpr] | None = None,
    scalars: Sequence[sp.Symbol] | None = None,
    guards: Sequence[str] = (),
    backend: str = "numpy",
    dtype: str = "float64",
    name: str = "fn",
    rewrites: bool = True,
) -> CompiledFunction:
    """Compile matrix expressions into one function.

    >>> from symgrad import expr as E, grad
    >>> n = E.batch(); X = E.matrix("X", n, 3); w = E.matrix("w", 3, 1)
    >>> loss = E.mean(E.elementwise(sp.Lambda(sp.Symbol("e"), sp.Symbol("e") ** 2), E.matmul(X, w)))
    >>> f = compile([X, w], {"loss": loss, "dw": grad(loss, w)})
    >>> print(f.source)  # the generated NumPy code

    ``rewrites=False`` skips the rewrite table (only trivial folding), which
    tests use to check that every rewrite preserves values.
    """
    if dtype not in ir.DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {ir.DTYPES}")
    target = _backend(backend)
    if not isinstance(outputs, Mapping):
        outputs = {f"out{i}": e for i, e in enumerate(outputs)}
    updates = dict(updates or {})
    inputs = list(inputs)
    for s in inputs:
        if not isinstance(s, MatrixSymbol):
            raise TypeError(f"inputs must be matrix symbols; received {s!r}")
    names = [s.name for s in inputs]
    if len(set(names)) != len(names):
        raise ValueError(f"input names must be unique; received {names}")
    E.check_symbols([*outputs.values(), *updates.values(), *inputs])
    keys = {f"__update_{i}": v for i, v in enumerate(updates.values())}
    simplified, fired = simplify({**outputs, **keys}, rules=None if rewrites else [])
    outs = {k: simplified[k] for k in outputs}
    ups = {s: simplified[k] for s, k in zip(updates, keys)}
    batch = {d for s in inputs for dim in s.shape for d in sp.sympify(dim).free_symbols}
    if scalars is None:
        scalars = [s for s in E.scalar_params([*outs.values(), *ups.values()]) if s not in batch]
    program = lower(name, inputs, outs, ups, scalars, guards, dtype)
    formulas = {**outs, **{f"{s.name}_new": v for s, v in ups.items()}}
    formulas = {k: v.body if isinstance(v, E.Named) else v for k, v in formulas.items()}
    native = target.compile_program(program)
    return CompiledFunction(
        native, program, formulas, [f[0] for f in fired], backend, inputs, scalars
    )
