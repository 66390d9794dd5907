"""symgrad.compile: simplify graphs together, lower them, and build a callable.

Simplifying and lowering cost tens of milliseconds of SymPy work; their result
(the IR program, the simplified formulas, the rewrites that fired) is kept in
the disk cache (``codegen.cache``, ``<key>.program``) under a hash of the
graphs as DAGs and of symgrad's source, so a warm start of a model skips it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import sympy as sp
from sympy.matrices.expressions import MatrixExpr, MatrixSymbol

from codegen import backends, ir, serial
from codegen import cache as disk_cache
from codegen.backends import BACKENDS, Backend, backend
from symgrad import core as E
from symgrad.lower import lower
from symgrad.simplify import simplify

__all__ = ["BACKENDS", "DTYPES", "Backend", "CompiledFunction", "backend", "check_dtype", "compile"]

DTYPES = ir.DTYPES


def check_dtype(dtype: str) -> str:
    """``dtype`` when the backends compute in it, else a ValueError listing the ones they do."""
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype: {dtype!r}. Known dtypes: {', '.join(DTYPES)}")
    return dtype


class CompiledFunction:
    """A compiled program: ``fn(*arrays, *scalars) -> tuple of arrays``.

    Arrays come in ``inputs`` order, then Python numbers for ``scalars``.
    Outputs are new arrays; ``updates`` are then written into the input
    arrays in place (never when a guarded output is nan or inf).
    """

    def __init__(
        self,
        native,
        program: ir.Program,
        formulas,
        rewrites,
        target: Backend,
        inputs,
        scalars,
        epoch=None,
    ):
        self._native = native
        self._call = target.entry(native)
        self._target = target
        self.epoch = epoch
        self.program = program
        self.formulas: dict[str, MatrixExpr] = formulas
        self.rewrites: list[str] = rewrites
        self.backend: str = target.name
        self.inputs: tuple[MatrixSymbol, ...] = tuple(inputs)
        self.scalars: tuple[sp.Symbol, ...] = tuple(scalars)
        self.name = program.name

    def __call__(self, *args):
        return self._call(*args)

    @property
    def native(self):
        """The backend's function object (NumPy source or LLVM module inside)."""
        return self._native

    @property
    def source(self) -> str:
        """Generated source: Python for the NumPy backend, LLVM IR for the LLVM backend."""
        return self._target.source(self._native)

    def __getattr__(self, attr):  # llvm_ir, asm, ... from the backend
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self._native, attr)

    def __repr__(self) -> str:
        return f"<CompiledFunction {self.name} backend={self.backend} dtype={self.program.dtype}>"


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
    epoch: Mapping | None = None,
    cache: bool = True,
    checks: Mapping[str, MatrixExpr] | None = None,
    threads: int | None = None,
) -> CompiledFunction:
    """Compile matrix expressions into one function.

    >>> from symgrad import expr as E, grad
    >>> n = E.batch(); X = E.matrix("X", n, 3); w = E.matrix("w", 3, 1)
    >>> loss = E.mean(E.elementwise(sp.Lambda(sp.Symbol("e"), sp.Symbol("e") ** 2), E.matmul(X, w)))
    >>> f = compile([X, w], {"loss": loss, "dw": grad(loss, w)})
    >>> print(f.source)  # the generated NumPy code

    ``rewrites=False`` skips the rewrite table (only trivial folding), which
    tests use to check that every rewrite preserves values.

    ``backend``: a name of ``BACKENDS`` (``codegen.backends``).  ``epoch``: keyword
    arguments of ``codegen.llvm.compile_epoch`` (``x_input``, ``y_input``, ``sums``,
    ``counter``). With a backend that has whole-epoch loops (``backend(name).epochs``:
    LLVM), ``f.epoch`` is then one built from the same object code as ``f``; with the
    others ``f.epoch`` is None.

    ``cache=False`` neither reads nor writes the disk cache (program and object code).

    ``threads``: how many threads the LLVM backend's long loops and GEMMs split over
    (default ``$SYMGRAD_NUM_THREADS``, else the CPUs the process may run on); results
    are the same bits at every thread count. The NumPy backend ignores it
    (a bad count is refused with any backend).

    ``guards`` name (1, 1) outputs that must be finite; ``checks`` maps names to
    further (1, 1) values that are computed and guarded like them but not
    returned.  When one is nan or inf the call raises and no input is updated.
    """
    check_dtype(dtype)
    check_threads(threads)
    target = backends.backend(backend)
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
    checks = dict(checks or {})
    settings = (tuple(guards), tuple(checks), dtype, name, rewrites)
    keyed = {**outputs, **{f"__check_{k}": v for k, v in checks.items()}}
    with collector_paused():
        key = _graph_key(inputs, keyed, updates, scalars, settings) if cache else None
        lowered = _load_lowered(key)
        if lowered is None:
            lowered = _lower(
                inputs, outputs, updates, scalars, guards, dtype, name, rewrites, checks
            )
            _store_lowered(key, lowered)
        program, formulas, fired_names, scalars = lowered
        native_epoch = None
        if epoch is not None and target.epochs:
            native_epoch = target.compile_epoch(program, cache=cache, threads=threads, **epoch)
            native = native_epoch.step
        else:
            native = target.compile(program, cache=cache, threads=threads)
    return CompiledFunction(
        native, program, formulas, fired_names, target, inputs, scalars, native_epoch
    )


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block, then on again (left alone when
    it was off already).

    A cold compile allocates SymPy and llvmlite objects by the hundred thousand and
    frees nearly all of them by reference counting, yet the allocations alone set off
    dozens of young collections and a full one of the whole process (counted with
    ``gc.callbacks`` on the digits model). Cycles made meanwhile are collected after
    the block.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def check_threads(threads: int | None) -> None:
    """``compile``'s ``threads``: None, or a count the LLVM backend's pool takes (its error,
    for every backend: a count that would fail there fails everywhere)."""
    if threads is not None:
        from codegen.llvm import pool  # llvmlite: loaded only when a count is given

        pool.thread_count(threads)


def _lower(inputs, outputs, updates, scalars, guards, dtype, name, rewrites, checks):
    """(program, formulas, names of the rewrites that fired, scalars): simplify, then lower."""
    keys = {f"__update_{i}": v for i, v in enumerate(updates.values())}
    check_keys = {f"__check_{k}": v for k, v in checks.items()}
    simplified, fired = simplify({**outputs, **check_keys, **keys}, rules=None if rewrites else [])
    outs = {k: simplified[k] for k in outputs}
    checked = {k: simplified[f"__check_{k}"] for k in checks}
    ups = {s: simplified[k] for s, k in zip(updates, keys)}
    batch = {d for s in inputs for dim in s.shape for d in sp.sympify(dim).free_symbols}
    if scalars is None:
        scalars = [
            s
            for s in E.scalar_params([*outs.values(), *checked.values(), *ups.values()])
            if s not in batch
        ]
    program = lower(name, inputs, outs, ups, scalars, guards, dtype, checked)
    formulas = {**outs, **{f"{s.name}_new": v for s, v in ups.items()}}
    formulas = {k: v.body if isinstance(v, E.Named) else v for k, v in formulas.items()}
    return program, formulas, [f[0] for f in fired], list(scalars)


def _graph_key(inputs, outputs, updates, scalars, settings) -> str:
    """SHA-256 of the graphs as DAGs (each distinct node once), the settings and symgrad's source."""
    ids: dict = {}
    lines: list[str] = []

    def node_id(root) -> int:
        stack = [root]
        while stack:
            x = stack[-1]
            if x in ids:
                stack.pop()
                continue
            pending = [a for a in x.args if isinstance(a, sp.Basic) and a not in ids]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if x.args:
                parts = [str(ids[a]) if isinstance(a, sp.Basic) else repr(a) for a in x.args]
                lines.append(f"{type(x).__name__}({','.join(parts)})")
            else:
                lines.append(sp.srepr(x))
            ids[x] = len(ids)
        return ids[root]

    described = [
        [node_id(s) for s in inputs],
        [(k, node_id(v)) for k, v in outputs.items()],
        [(node_id(s), node_id(v)) for s, v in updates.items()],
        None if scalars is None else [node_id(s) for s in scalars],
        settings,
    ]
    h = hashlib.sha256(b"symgrad-program-1")
    root = Path(__file__).resolve().parents[1]
    h.update(disk_cache.source_digest(root / "symgrad", root / "codegen").encode())
    h.update("\n".join(lines).encode())
    h.update(repr(described).encode())
    return h.hexdigest()


_PROGRAM_CODEC = serial.Codec(
    records=serial.records_of(ir), packages=(*serial.SYMPY_PACKAGES, "symgrad.core.")
)


def _load_lowered(key: str | None):
    """The cached (program, formulas, rewrites, scalars), or None: anything unreadable is a miss."""
    blob = disk_cache.load_blob(key, "program") if key else None
    if blob is None:
        return None
    try:
        version, lowered = _PROGRAM_CODEC.loads(blob)
    except Exception:  # noqa: BLE001 - a damaged entry can fail to decode in many ways
        return None
    return lowered if version == sp.__version__ else None  # rebuilt by another SymPy: a miss


def _store_lowered(key: str | None, lowered) -> None:
    """Write the entry if it reads back equal (a user's own function class makes no entry)."""
    if key is None:
        return
    try:
        blob = _PROGRAM_CODEC.dumps((sp.__version__, lowered))
        if _PROGRAM_CODEC.loads(blob) != (sp.__version__, lowered):
            return
    except Exception:  # noqa: BLE001 - serial.Unsupported, or a node that does not rebuild
        return
    disk_cache.store_blob(key, "program", blob)
