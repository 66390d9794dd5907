"""codegen.llvm: an IR program as one native function (and a whole epoch as another).

    >>> fn = compile_program(program)            # doctest: +SKIP
    >>> loss, dW = fn(X, Y, W, 0.1)              # doctest: +SKIP
    >>> print(fn.llvm_ir); print(fn.asm)         # doctest: +SKIP

Same call convention as ``codegen.numpy``: ``fn(*inputs, *scalars)`` with 2-D
C-contiguous arrays of ``program.dtype`` in ``program.inputs`` order, then the
scalars; returns a tuple of new arrays in ``program.outputs`` order and applies
``program.updates`` to the inputs in place. Everything is checked in Python
before native code runs; a failed ``Guard`` raises ``FloatingPointError`` and
leaves the inputs untouched.

The generated functions and their ABI are described in ``codegen.llvm.module``
and docs/llvm-backend.md; kernels in ``codegen.llvm.kernels``, the scalar
lowering table in ``codegen.llvm.scalar``, the math functions in
``codegen.llvm.mathlib``, gemm providers in ``codegen.llvm.blas``, the disk cache in
``codegen.cache``.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy as sp

from codegen import cache as disk_cache
from codegen import ir, serial
from codegen.ir import Program, Shape, check_scalar, not_finite
from codegen.llvm import module as llvm_module
from codegen.llvm import pool
from codegen.llvm.blas import Provider
from codegen.llvm.blas import provider as resolve_blas
from codegen.llvm.cpython import FastEntry, register_symbols
from codegen.llvm.jit import LoadedObject, emit_assembly, host, optimize_and_emit_parts
from codegen.llvm.module import (
    Layout,
    epoch_fixed_slots,
    epoch_spec,
    fast_entry_possible,
    generate_ir,
    make_layout,
)
from codegen.names import llvm_name

CTYPES = {"float64": ctypes.c_double, "float32": ctypes.c_float}
register_symbols()  # the Python C API functions the fast entry calls
MAX_BINDINGS = 8  # buffer sets kept per function (one per distinct batch size)


# --------------------------------------------------------------------------
# Compilation (through the disk cache)


class Compiled:
    """Object code of one module; ``llvm_ir`` is generated on first access after an index hit."""

    def __init__(self, llvm_ir, optimized: str, code: LoadedObject, from_cache: bool, seconds, opt):
        self._llvm_ir = llvm_ir  # the text, or a function that generates it
        self.llvm_ir_optimized, self.code = optimized, code
        self.from_cache, self.seconds, self.opt = from_cache, seconds, opt

    @property
    def llvm_ir(self) -> str:
        if callable(self._llvm_ir):
            self._llvm_ir = self._llvm_ir()
        return self._llvm_ir


def compile_ir(text: str, *, opt: int = 3, use_cache: bool = True, threads: int = 1) -> Compiled:
    """Object code for IR ``text``: from the disk cache, else optimized and emitted by LLVM
    (its code generation split over up to ``threads`` threads, ``codegen.llvm.split``)."""
    started = time.perf_counter()
    entry = disk_cache.key(text, host().fingerprint(), opt)
    hit = disk_cache.load(entry) if use_cache else None
    if hit is not None:
        objects, optimized = hit
    else:
        objects, optimized = optimize_and_emit_parts(text, opt, compile_threads(threads))
        if use_cache:
            disk_cache.store(entry, objects, optimized)
    code = LoadedObject(objects, opt)
    compiled = Compiled(text, optimized, code, hit is not None, time.perf_counter() - started, opt)
    compiled.entry = entry
    return compiled


def compile_threads(threads: int) -> int:
    """Threads LLVM's code generation may use: the program's ``threads``, at most the
    CPUs this process may run on (1: all of it on the caller's thread)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return max(1, min(threads, len(affinity(0)) if affinity else os.cpu_count() or 1))


_INDEX_CODEC = serial.Codec(records=serial.records_of(ir, llvm_module))


def _index_key(program: Program, provider: Provider, spec, opt: int) -> str | None:
    """Key of the object entry a program compiles to, without generating its IR.

    None when the program holds something ``codegen.serial`` cannot write.
    """
    try:
        # the kernels (core) too: a product's block boundaries depend on them
        described = _INDEX_CODEC.dumps((program, provider.abi, provider.core, spec, opt))
    except serial.Unsupported:  # a program with unusual metadata simply has no index
        return None
    h = hashlib.sha256(b"symgrad-index-2")
    codegen_dir = Path(__file__).resolve().parents[1]
    for part in (disk_cache.source_digest(codegen_dir), host().fingerprint()):
        h.update(part.encode() + b"\0")
    h.update(described)
    return h.hexdigest()


def compile_module(
    program: Program,
    layout: Layout,
    provider: Provider,
    spec,
    opt: int,
    use_cache: bool,
    threads: int = 1,
) -> Compiled:
    """The module of ``program`` (and its epoch when ``spec``), through the disk cache.

    A warm start finds the object entry through ``<index>.index`` (a hash of
    the serialized program and of codegen's source) and skips generating the IR
    text; ``llvm_ir`` then generates it on first access.
    """

    def text() -> str:
        return generate_ir(program, layout, provider, spec, fast_entry=True, threaded=True)

    # the code calls symgrad_parallel_for: the pool is linked before the code is loaded
    # (in a cold process its module compiles while this thread generates the IR text)
    pool_loaded = pool.runtime_soon()
    started = time.perf_counter()
    index = _index_key(program, provider, spec, opt) if use_cache else None
    entry = disk_cache.load_entry_key(index) if index else None
    hit = disk_cache.load(entry) if entry else None
    if hit is not None:
        objects, optimized = hit
        pool_loaded()
        code = LoadedObject(objects, opt)
        return Compiled(text, optimized, code, True, time.perf_counter() - started, opt)
    ir_text = text()
    pool_loaded()
    compiled = compile_ir(ir_text, opt=opt, use_cache=use_cache, threads=threads)
    if index:
        disk_cache.store_blob(index, "index", compiled.entry.encode())
    return compiled


class _Inspectable:
    """The generated code of a compiled program, for reading."""

    program: Program
    compiled: Compiled

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def llvm_ir(self) -> str:
        """Unoptimized LLVM IR, as generated (deterministic for a given program)."""
        return self.compiled.llvm_ir

    @property
    def llvm_ir_optimized(self) -> str:
        return self.compiled.llvm_ir_optimized

    @property
    def asm(self) -> str:
        """Host assembly of the optimized module (generated on first access)."""
        if not hasattr(self, "_asm"):
            self._asm = emit_assembly(self.compiled.llvm_ir_optimized, self.compiled.opt)
        return self._asm

    @property
    def from_cache(self) -> bool:
        return self.compiled.from_cache

    @property
    def compile_seconds(self) -> float:
        return self.compiled.seconds


# --------------------------------------------------------------------------
# Binding batch sizes: shapes, buffers and pointer arrays per batch size


def evaluate_shape(shape: Shape, binding: dict) -> tuple[int, int]:
    out = []
    for d in shape:
        value = sp.sympify(d).subs(binding)
        if not value.is_Integer or value < 0:
            raise ValueError(
                f"shape {tuple(shape)} does not evaluate to a size under {binding}: {value}"
            )
        out.append(int(value))
    return tuple(out)


ALIGN = 64  # bytes: a cache line, and the widest vector load


def aligned_zeros(shapes, dtype: np.dtype) -> list[np.ndarray]:
    """Zeroed C-contiguous arrays of ``shapes``, each starting on an ``ALIGN``-byte boundary.

    NumPy aligns small arrays to 16 bytes only, so where a buffer starts
    within a cache line depended on the allocator; the step and the epoch
    (two buffer sets) then ran the same kernels on differently split lines.
    One block for all buffers, each rounded up to a whole number of lines.
    """
    sizes = [-(-int(np.prod(shape)) * dtype.itemsize // ALIGN) * ALIGN for shape in shapes]
    block = np.zeros(sum(sizes) + ALIGN, np.uint8)
    at = -block.ctypes.data % ALIGN
    arrays = []
    for shape, size in zip(shapes, sizes):
        count = int(np.prod(shape))
        arrays.append(block[at : at + count * dtype.itemsize].view(dtype).reshape(shape))
        at += size
    return arrays


class BufferSet:
    """Buffers for one batch binding; slots in ``external`` are filled per call."""

    def __init__(self, program: Program, layout: Layout, values: tuple[int, ...], external):
        binding = dict(zip(program.batch, values))
        dtype = np.dtype(program.dtype)
        self.shapes = [evaluate_shape(s, binding) for s in layout.shapes]
        internal = [s for s in range(len(self.shapes)) if s not in external]
        self.arrays = dict(zip(internal, aligned_zeros([self.shapes[s] for s in internal], dtype)))
        self.pointers = (ctypes.c_void_p * max(1, len(layout.names)))()
        for s, arr in self.arrays.items():
            self.pointers[s] = arr.ctypes.data
        self.values = values
        self.dims = (ctypes.c_int64 * max(1, len(values)))(*values)
        self.pointers_addr = ctypes.addressof(self.pointers)
        self.dims_addr = ctypes.addressof(self.dims)
        self.input_shapes = tuple(self.shapes[: layout.n_inputs])
        self.output_shapes = tuple(self.shapes[s] for s in layout.output_slots)


def describe(a) -> str:
    if isinstance(a, np.ndarray):
        order = "C-contiguous" if a.flags.c_contiguous else "non-contiguous"
        return f"{type(a).__name__} of shape {a.shape}, dtype {a.dtype}, {order}"
    return f"{type(a).__name__} {a!r:.60}"


def check_array(
    program: Program, what: str, a, shape: tuple[int, int], writeable: bool = False
) -> None:
    """Raise a TypeError / ValueError naming the argument, what was expected and what was received."""
    dtype = np.dtype(program.dtype)
    expected = f"a C-contiguous {program.dtype} array of shape {shape}"
    problem = None
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{program.name}: argument {what} must be {expected}; received: {describe(a)}"
        )
    if a.dtype != dtype:
        problem = "wrong dtype"
    elif a.ndim != 2:
        problem = "not 2-D"
    elif a.shape != shape:
        problem = "wrong shape"
    elif not a.flags.c_contiguous:
        problem = "not C-contiguous (use np.ascontiguousarray)"
    elif writeable and not a.flags.writeable:
        problem = "read-only, but the program updates it in place"
    if problem:
        exc = TypeError if problem == "wrong dtype" else ValueError
        raise exc(
            f"{program.name}: argument {what} ({problem}) must be {expected}; received: {describe(a)}"
        )


class LLVMFunction(_Inspectable):
    """A compiled program: ``fn(*inputs, *scalars) -> tuple of outputs``; updates applied in place.

    Attributes: ``program``, ``name``, ``llvm_ir``, ``llvm_ir_optimized``,
    ``asm``, ``from_cache``, ``compile_seconds``, ``blas`` (the provider).
    Not thread-safe: one call at a time per function object.
    """

    def __init__(
        self, program: Program, layout: Layout, compiled: Compiled, provider: Provider, threads=1
    ):
        self.program, self.layout, self.compiled, self.blas = program, layout, compiled, provider
        set_threads(compiled, program.name, threads, provider)
        self.threads = threads
        self._dtype = np.dtype(program.dtype)
        self._n_inputs = len(program.inputs)
        self._n_args = self._n_inputs + len(program.scalars)
        self._binders = [program.batch_binding()[sym] for sym in program.batch]
        self._bindings: collections.OrderedDict = collections.OrderedDict()
        self._scalar_names = [
            str(sym) for sym in program.scalars
        ]  # str() of a SymPy symbol is slow
        self._scalars = (CTYPES[program.dtype] * max(1, len(program.scalars)))()
        self._scalars_addr = ctypes.addressof(self._scalars)
        updated = {dst.name for dst, _ in program.updates}
        self._updated = [i for i, v in enumerate(program.inputs) if v.name in updated]
        self._guards = [s.what for s in program.body if s.aborts]
        inputs = {v.name: i for i, v in enumerate(program.inputs)}
        slot_pos = {slot: k for k, slot in enumerate(layout.output_slots)}
        # each output: ("out", index into the fresh arrays) or ("in", input index) for a returned input
        self._returns = [
            ("in", inputs[v.name])
            if v.name in inputs
            else ("out", slot_pos[layout.slot_of[v.name]])
            for v in program.outputs
        ]
        self._identity_returns = self._returns == [
            ("out", k) for k in range(len(layout.output_slots))
        ]
        proto = ctypes.CFUNCTYPE(ctypes.c_int32, *[ctypes.c_void_p] * 5)
        self._entry = proto(compiled.code.address(llvm_name(f"{program.name}.py")))
        self.address = compiled.code.address(llvm_name(program.name))  # the plain C entry point
        self._fast_entry = None
        if fast_entry_possible(program, layout):
            self._fast_entry = FastEntry(
                compiled.code.address(llvm_name(f"{program.name}.fast")),
                program.name,
                program,
                self._call_python,
                self._scalars_addr,
                self,
            )
            if not self._binders:
                # no batch size to tell bindings apart, so no shape check can send the first
                # call to the Python path, which binds: bind the one buffer set now
                state = self.bind(())
                self._fast_entry.bind(state.pointers_addr, state.dims_addr, state.values)
        # the call: the native fast entry (checks in native code, Python path on any mismatch)
        self.fast = self._fast_entry.fast if self._fast_entry else self._call_python

    def __repr__(self) -> str:
        return f"<LLVMFunction {self.name} dtype={self.program.dtype} blas={self.blas.name}>"

    def bind(self, values: tuple[int, ...]) -> BufferSet:
        found = self._bindings.get(values)
        if found is None:
            external = set(range(self._n_inputs)) | set(self.layout.output_slots)
            found = self._bindings[values] = BufferSet(self.program, self.layout, values, external)
            if len(self._bindings) > MAX_BINDINGS:
                self._bindings.popitem(last=False)
        return found

    def __call__(self, *args):
        return self.fast(*args)

    def _call_python(self, *args):
        """The call with every check in Python; the fast entry comes here on any mismatch."""
        if len(args) != self._n_args:
            self._wrong_count(args)
        try:
            state = self._bindings[tuple([args[i].shape[axis] for i, axis in self._binders])]
        except (KeyError, AttributeError, IndexError, TypeError):
            state = self._bind_checked(args)
        if self._fast_entry is not None:
            self._fast_entry.bind(state.pointers_addr, state.dims_addr, state.values)
        dtype = self._dtype
        for a, shape in zip(args, state.input_shapes):
            if (
                type(a) is not np.ndarray
                or a.dtype is not dtype
                or a.shape != shape
                or not a.flags.c_contiguous
            ):
                # raises with a message (or accepts an ndarray subclass / an equal dtype)
                self._check_inputs(args, state)
                break
        for i in self._updated:
            if not args[i].flags.writeable:
                self._check_inputs(args, state)
        self._store_scalars(self._scalars, range(len(self.program.scalars)), args[self._n_inputs :])
        outs = tuple([np.empty(shape, dtype) for shape in state.output_shapes])
        returned_inputs = None if self._identity_returns else self._copy_returned_inputs(args)
        status = self._entry(
            id(args), id(outs), state.pointers_addr, state.dims_addr, self._scalars_addr
        )
        if status:
            self._guard_failed(status)
        if self._identity_returns:
            return outs
        return tuple(outs[k] if kind == "out" else returned_inputs[k] for kind, k in self._returns)

    def _store_scalars(self, array, slots, values) -> None:
        """``array[slot] = value`` for each pair, by the rule every backend applies (``check_scalar``)."""
        p, names = self.program, self._scalar_names
        for k, value in zip(slots, values):
            array[k] = check_scalar(p.name, names[k], value, p.dtype)

    # -- the slow paths, kept out of __call__ for readability
    def _arg_name(self, i: int) -> str:
        return f"{i} ({self.program.inputs[i].name})"

    def _wrong_count(self, args):
        names = [v.name for v in self.program.inputs] + [str(s) for s in self.program.scalars]
        raise TypeError(
            f"{self.name}() takes {self._n_args} arguments ({', '.join(names)}); received: {len(args)}"
        )

    def _bind_checked(self, args) -> BufferSet:
        values = []
        for i, axis in self._binders:
            a = args[i]
            if not isinstance(a, np.ndarray) or a.ndim != 2:
                expected = f"a 2-D {self.program.dtype} array of shape {tuple(self.program.inputs[i].shape)}"
                raise TypeError(
                    f"{self.name}: argument {self._arg_name(i)} must be {expected}; received: {describe(a)}"
                )
            values.append(int(a.shape[axis]))
        return self.bind(tuple(values))

    def _check_inputs(self, args, state: BufferSet) -> None:
        updated = set(self._updated)
        for i, (a, shape) in enumerate(zip(args, state.input_shapes)):
            check_array(self.program, self._arg_name(i), a, shape, writeable=i in updated)

    def _copy_returned_inputs(self, args):
        return {k: args[k].copy() for kind, k in self._returns if kind == "in"}

    def _guard_failed(self, status: int):
        raise not_finite(self.name, self._guards[status - 1])


def set_threads(compiled: Compiled, name: str, threads: int, provider: Provider) -> None:
    """The thread counts the loaded module's loops and GEMM blocks split over: the blocks
    of a product run on the pool only with a one-thread BLAS of symgrad's own."""
    counts = {"threads": threads, "gemm_threads": threads if provider.pooled else 1}
    for what, count in counts.items():
        address = compiled.code.global_address(llvm_module.threads_symbol(name, what))
        ctypes.c_int64.from_address(address).value = count


def compile_program(
    program: Program,
    *,
    cache: bool = True,
    opt: int = 3,
    blas: str | None = None,
    threads: int | None = None,
) -> LLVMFunction:
    """Compile ``program`` to native code for this CPU.

    ``cache``: reuse object code from the disk cache (``$SYMGRAD_CACHE_DIR``);
    ``opt``: LLVM optimization level 0-3; ``blas``: force a gemm provider
    (``"none"`` for the generated loop nest; default ``$SYMGRAD_BLAS`` or auto);
    ``threads``: how many threads long loops split over (``codegen.llvm.pool``;
    default ``$SYMGRAD_NUM_THREADS``, else the CPUs the process may run on).

        >>> fn = compile_program(program)     # doctest: +SKIP
        >>> (loss,) = fn(X, Y, W, 0.01)       # doctest: +SKIP
    """
    threads = pool.thread_count(threads)
    provider = resolve_blas(blas)
    layout = make_layout(program)
    compiled = compile_module(program, layout, provider, None, opt, cache, threads)
    return LLVMFunction(program, layout, compiled, provider, threads)


# --------------------------------------------------------------------------
# The epoch


@dataclass(frozen=True)
class EpochResult:
    """``sums[name]``: sum over batches of (batch rows x output) -- a float for a (1, 1)
    output, an array for a (1, k) one; ``rows`` = len(order)."""

    sums: dict[str, float]
    rows: int
    steps: int

    def mean(self, name: str) -> float:
        return self.sums[name] / self.rows if self.rows else float("nan")


class LLVMEpoch(_Inspectable):
    """``epoch(X, Y, *other_inputs, *scalars_but_counter, batch_size=, order=, counter_start=0)``.

    One native call runs every batch of ``order``; ``.step`` is the per-step
    function compiled into the same object (same buffers layout, same code).
    An epoch can also run as several calls, each on a slice of ``order`` holding whole
    batches: ``counter_start`` and ``sums_start`` (the sums so far) continue where the
    call before stopped, so the weights and sums are bit-identical to one call.
    """

    def __init__(
        self, program, layout, compiled, provider, spec, x_input, y_input, sums, counter, threads=1
    ):
        self.program, self.layout, self.compiled, self.blas = program, layout, compiled, provider
        self.spec = spec
        self.step = LLVMFunction(program, layout, compiled, provider, threads)
        self.x_input, self.y_input, self.sums, self.counter = x_input, y_input, tuple(sums), counter
        self._others = epoch_fixed_slots(layout, spec)  # input i sits in slot i
        self._updated = set(self.step._updated)
        self._scalar_slots = [k for k in range(len(program.scalars)) if k != spec.counter]
        self._bindings: collections.OrderedDict = collections.OrderedDict()
        self._dtype = np.dtype(program.dtype)
        self._scalars_type = CTYPES[program.dtype] * max(1, len(program.scalars))
        self._sums_type = ctypes.c_double * max(1, sum(spec.widths()))
        proto = ctypes.CFUNCTYPE(ctypes.c_int32, *[ctypes.c_void_p] * 6)
        # the entry that reads the arrays' data pointers itself (module._build_epoch_py_entry)
        self._entry = proto(compiled.code.address(llvm_name(f"{program.name}.epoch.py")))

    def __repr__(self) -> str:
        return f"<LLVMEpoch {self.name} sums={self.sums} counter={self.counter}>"

    def _buffers(self, n: int) -> BufferSet:
        found = self._bindings.get(n)
        if found is None:
            external = set(self._others)
            found = self._bindings[n] = BufferSet(self.program, self.layout, (n,), external)
            if len(self._bindings) > MAX_BINDINGS:
                self._bindings.popitem(last=False)
        return found

    def __call__(
        self, x, y, *rest, batch_size: int, order, counter_start: int = 0, sums_start=None
    ) -> EpochResult:
        p = self.program
        n_other = len(self._others)
        if len(rest) != n_other + len(self._scalar_slots):
            names = [p.inputs[i].name for i in self._others]
            names += [str(p.scalars[k]) for k in self._scalar_slots]
            raise TypeError(
                f"{self.name}.epoch(X, Y, {', '.join(names)}) received {len(rest)} arguments after X, Y"
            )
        order = self._check_data(x, y, batch_size, order)
        total, batch_size = order.size, int(batch_size)
        full = self._buffers(batch_size)
        last = self._buffers(total % batch_size) if total % batch_size else full
        dtype, shapes, updated = self._dtype, full.input_shapes, self._updated
        for i, a in zip(self._others, rest):
            if (
                type(a) is not np.ndarray
                or a.dtype is not dtype
                or a.shape != shapes[i]
                or not a.flags.c_contiguous
                or (i in updated and not a.flags.writeable)
            ):  # raises with a message (or accepts an ndarray subclass / an equal dtype)
                check_array(p, f"{i} ({p.inputs[i].name})", a, shapes[i], writeable=i in updated)
        scalars = self._scalars_type()
        self.step._store_scalars(scalars, self._scalar_slots, rest[n_other:])
        arrays = (x, y, order, *rest[:n_other])  # their data pointers: read by the entry
        ints = (ctypes.c_int64 * 5)(total, batch_size, int(counter_start), 0, 0)
        widths = self.spec.widths()
        sums = self._sums_type()
        if sums_start is not None:  # accumulation goes on from these, in the same order
            at = 0
            for name, width in zip(self.sums, widths):
                sums[at : at + width] = [float(v) for v in np.atleast_1d(sums_start[name])]
                at += width
        addr = ctypes.addressof
        if total:
            fixed = (id(arrays), addr(ints), full.pointers_addr, last.pointers_addr)
            if self._entry(*fixed, addr(scalars), addr(sums)):
                self._guard_failed(batch=ints[3], guard=ints[4])
        return EpochResult(_named_sums(self.sums, widths, sums), total, ints[3])

    def _check_data(self, x, y, batch_size, order) -> np.ndarray:
        """Validate X, Y, batch_size and order; returns order as contiguous int64."""
        p = self.program
        rows = x.shape[0] if isinstance(x, np.ndarray) and x.ndim == 2 else -1
        check_array(p, f"X ({self.x_input})", x, (rows, self.spec.x_width))
        check_array(p, f"Y ({self.y_input})", y, (rows, self.spec.y_width))
        if int(batch_size) < 1:
            raise ValueError(
                f"{self.name}: batch_size must be >= 1; received: batch_size={batch_size}"
            )
        order = np.asarray(order)
        if order.dtype.kind not in "iu":
            raise TypeError(
                f"{self.name}: order must be an integer array; received dtype {order.dtype}"
            )
        order = np.ascontiguousarray(order, dtype=np.int64)
        if order.ndim != 1:
            raise ValueError(
                f"{self.name}: order must be a 1-D integer array; received shape {order.shape}"
            )
        if order.size and (order.min() < 0 or order.max() >= rows):
            raise ValueError(
                f"{self.name}: order entries must lie in [0, {rows}); "
                f"received min {order.min()}, max {order.max()}"
            )
        return order

    def _guard_failed(self, batch: int, guard: int):
        raise not_finite(self.name, self.step._guards[guard - 1], batch=batch)


def _named_sums(names, widths, sums) -> dict:
    """The flat ``sums`` buffer cut into one float per (1, 1) output, one array per (1, k)."""
    out, at = {}, 0
    for name, width in zip(names, widths):
        out[name] = sums[at] if width == 1 else np.array(sums[at : at + width])
        at += width
    return out


def compile_epoch(
    program: Program,
    *,
    x_input: str,
    y_input: str,
    sums: tuple[str, ...],
    counter: str | None = "t",
    cache: bool = True,
    opt: int = 3,
    blas: str | None = None,
    threads: int | None = None,
) -> LLVMEpoch:
    """Compile a training step into a whole-epoch native loop (see ``LLVMEpoch``).

    >>> epoch = compile_epoch(step, x_input="X", y_input="Y", sums=("loss",))   # doctest: +SKIP
    >>> r = epoch(X, Y, W, b, 0.01, batch_size=32, order=rng.permutation(len(X)))  # doctest: +SKIP
    >>> r.mean("loss"), r.steps                                                     # doctest: +SKIP
    """
    threads = pool.thread_count(threads)
    layout = make_layout(program)
    spec = epoch_spec(program, layout, x_input, y_input, tuple(sums), counter)
    provider = resolve_blas(blas)
    compiled = compile_module(program, layout, provider, spec, opt, cache, threads)
    return LLVMEpoch(
        program, layout, compiled, provider, spec, x_input, y_input, sums, counter, threads
    )
