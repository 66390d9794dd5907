"""codegen.llvm.kernels: one lowering rule per IR statement.

Each statement (except ``Guard``) becomes an internal function, a *kernel*,
called once from ``step_impl``::

    void <program>.<kind>.<out>(i64 dims..., ptr noalias buffers..., T scalars...)

Pointer parameters are one per distinct buffer (an in-place ``Map`` reads and
writes the same one), so ``noalias`` is true and the loop vectorizer needs no
runtime alias checks. A kernel that splits over the thread pool is ``noinline``
in an in-process module: its chunk function and ``step_impl`` (for a range of
one chunk) both call it, and LLVM optimizes and generates its loop once (a
fifth less LLVM time for the digits step than with a copy inlined into each).
In an emitted library (no pool) kernels are small and called once, so LLVM
inlines them into ``step_impl``; the inliner keeps the no-alias facts as
scoped metadata.

Broadcasting: an operand of a ``Map`` / ``Reduce`` is ``full`` (the domain
shape), ``row`` (1, c), ``col`` (r, 1) or ``scalar`` (1, 1). With only full and
scalar operands the domain is walked as one flat loop of r*c elements.

Statements that differ only in their buffers and sizes share one kernel (the
sizes are arguments): an optimizer's update of every weight, the bias adds...
The kernel is named after its first statement, preceded by all of them, and
marked ``noinline``, so LLVM optimizes and generates its loop once; for the
digits model's Adam step (with accuracy) that is 20 kernels instead of 48,
and about a third less LLVM time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import llvmlite.ir as ir
import sympy as sp

from codegen.ir import (
    GOLDEN,
    MIX,
    Col2Im,
    Columns,
    Gather,
    Gemm,
    Guard,
    Im2Col,
    KeepMask,
    Map,
    Reduce,
    Reshape,
    RowMax,
    ScatterAdd,
    Shape,
    Softmax,
    Stmt,
    Transpose,
    Value,
    Window,
    format_stmt,
)
from codegen.llvm import blas, loops, pool
from codegen.llvm.loops import (
    I32,
    I64,
    PTR,
    REDUCE,
    copy,
    element,
    for_range,
    freeze,
    i64,
    load,
    store,
)
from codegen.llvm.mathlib import Emitter, FloatFormat, MathLibrary
from codegen.llvm.scalar import ScalarLowering
from codegen.names import llvm_name


@dataclass
class StepContext:
    """What statement lowerings see of the ``step_impl`` being built."""

    module: ir.Module
    fmt: FloatFormat
    math: MathLibrary
    provider: blas.Provider
    prefix: str  # kernel names start with it (the program name)
    b: ir.IRBuilder  # positioned inside step_impl
    dims: dict[sp.Symbol, ir.Value]  # batch symbol -> i64
    scalars: dict[sp.Symbol, ir.Value]  # program scalars and batch sizes, as floats
    slot_of: dict[str, int]  # value name -> buffer slot
    pointers: dict[int, ir.Value]  # buffer slot -> pointer loaded in step_impl
    guard_index: int = 0
    notes: dict[str, str] = field(default_factory=dict)  # kernel reference -> statement text
    kernels: dict = field(default_factory=dict)  # kernel_call key -> kernel function
    last_kernel: ir.Function | None = None  # the kernel the last lowering rule made
    threads: ir.Value | None = None  # i64 thread count for the pool; None: chunks run inline
    gemm_threads: ir.Value | None = None  # for a GEMM's blocks (1 when the BLAS has threads)
    ranged: dict = field(default_factory=dict)  # kernel -> its Range (kernels split in chunks)
    trampolines: dict = field(default_factory=dict)  # kernel -> its chunk function

    def pointer(self, v: Value) -> ir.Value:
        return self.pointers[self.slot_of[v.name]]

    def dim(self, expr) -> ir.Value:
        """An integer shape expression of the batch symbols, as i64."""
        return lower_dim(self.b, self.dims, sp.sympify(expr))


def lower_dim(b: ir.IRBuilder, dims: dict, expr: sp.Expr) -> ir.Value:
    if expr.is_Integer:
        return i64(int(expr))
    if expr.is_Symbol and expr in dims:
        return dims[expr]
    if isinstance(expr, (sp.Add, sp.Mul)):
        parts = [lower_dim(b, dims, a) for a in expr.args]
        op = b.add if isinstance(expr, sp.Add) else b.mul
        acc = parts[0]
        for p in parts[1:]:
            acc = op(acc, p)
        return acc
    raise NotImplementedError(f"shape expression {expr} (only integers, batch symbols, + and *)")


# --------------------------------------------------------------------------
# Chunks: kernels whose outer loop splits over the thread pool (codegen.llvm.pool)
#
# A split kernel takes [lo, hi) of its outer range after its sizes. Its call
# runs it once over the whole range when that is one chunk, or in an emitted
# library (single-threaded: no pool, and the smallest code); otherwise it packs
# the arguments and runs one chunk per [c * grain, (c + 1) * grain) through
# ``symgrad_parallel_for`` (chunk after chunk on the calling thread at one
# thread). ``grain`` depends on the sizes only, never on the thread
# count, and each chunk computes the same bits on any thread, so the result is
# the same at every thread count. A reduction to one number (``partial``) writes
# each chunk's sum to its own partial; the partials are then added in chunk order.
#
# A product (``Range.parts``) is the exception: it splits into one block per
# thread, so that each thread makes one large BLAS call (a block per 128 rows
# packed the other operand again for every block). Its blocks are rows of the
# output, never the inner dimension: every output element is the same dot
# product, accumulated over the inner dimension in the same order, whichever
# block computes it (``lower_gemm`` says what keeps the BLAS's kernels the same
# for every block size).

CHUNK = 1 << 14  # elements per chunk: about as long as a job hand-off costs, several times
MAX_PARTIALS = 256  # partial sums of a reduction to one number (more chunks: larger ones)


@dataclass(frozen=True)
class Range:
    """The outer range of a split kernel: its extent and grain from the kernel's sizes."""

    extent: Callable[[ir.IRBuilder, list], ir.Value]
    grain: Callable[[ir.IRBuilder, list], ir.Value] | None = None
    partial: bool = False  # the kernel's first pointer is a (1, 1) sum: one partial per chunk
    # a product's blocks: how many from (sizes, extent, threads), on gemm_threads threads;
    # block c is [share(c), share(c + 1)) (``_share``), not c * grain
    parts: Callable[[ir.IRBuilder, list, ir.Value, ir.Value], ir.Value] | None = None
    align: int = 0  # a product's block boundaries are multiples of it (``blas.block_align``)


def _at_least(b: ir.IRBuilder, x: ir.Value, low: int) -> ir.Value:
    return b.select(b.icmp_signed(">", x, i64(low)), x, i64(low))


def per_chunk(b: ir.IRBuilder, inner: ir.Value, low: int = 1) -> ir.Value:
    """Outer steps per chunk when each step covers ``inner`` elements."""
    return _at_least(b, b.sdiv(i64(CHUNK), _at_least(b, inner, 1)), low)


def _ceil_div(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.sdiv(b.add(x, b.sub(y, i64(1))), y)


def partial_grain(b: ir.IRBuilder, extent: ir.Value, grain: ir.Value) -> ir.Value:
    """``grain``, raised so that ``extent`` needs at most MAX_PARTIALS chunks."""
    least = _ceil_div(b, extent, i64(MAX_PARTIALS))
    return b.select(b.icmp_signed(">", least, grain), least, grain)


FLAT = Range(lambda b, n: b.mul(n[0], n[1]), lambda b, n: i64(CHUNK))  # r*c elements
ROWS = Range(lambda b, n: n[0], lambda b, n: per_chunk(b, n[1]))  # rows of c elements
COLS = Range(lambda b, n: n[1], lambda b, n: per_chunk(b, n[0], 16))  # columns of r elements


def _entry_alloca(ctx: StepContext, ty: ir.Type, name: str) -> ir.Value:
    """An alloca in the entry block (step_impl may be inlined into the epoch's loop)."""
    entry = ir.IRBuilder()
    entry.position_at_start(ctx.b.function.entry_basic_block)
    slot = entry.alloca(ty, name=name)
    slot.type = PTR  # an opaque pointer, as every other in the module (the IR text is the same)
    return slot


def call_kernel(ctx: StepContext, fn: ir.Function, ints, pointers, scalars) -> None:
    """Call kernel ``fn``: directly, or in chunks when it is split and its range is long."""
    split = ctx.ranged.get(fn)
    if split is None:
        ctx.b.call(fn, [*ints, *pointers, *scalars])
        return
    b = ctx.b
    extent = split.extent(b, ints)
    if ctx.threads is None:  # an emitted library: one call over the whole range
        b.call(fn, [*ints, i64(0), extent, *pointers, *scalars])
        return
    threads = ctx.threads if split.parts is None else ctx.gemm_threads
    chunks = _chunk_count(b, split, ints, extent, threads)
    with b.if_else(b.icmp_signed(">", chunks, i64(1))) as (many, one):
        with many:
            _run_chunks(ctx, fn, split, ints, pointers, scalars, chunks, threads)
        with one:
            b.call(fn, [*ints, i64(0), extent, *pointers, *scalars])


def _grain(b: ir.IRBuilder, split: Range, ints, extent: ir.Value) -> ir.Value:
    grain = split.grain(b, ints)
    return partial_grain(b, extent, grain) if split.partial else grain


def _chunk_count(b: ir.IRBuilder, split: Range, ints, extent, threads) -> ir.Value:
    if split.parts is not None:
        return split.parts(b, ints, extent, threads)
    return _ceil_div(b, extent, _grain(b, split, ints, extent))


def _chunk_bounds(b: ir.IRBuilder, split: Range, ints, extent, c, chunks) -> tuple:
    """[lo, hi) of chunk c of ``chunks``."""
    if split.parts is not None:
        starts = (_share(b, extent, chunks, k, split.align) for k in (c, b.add(c, i64(1))))
        return tuple(starts)
    grain = _grain(b, split, ints, extent)
    lo = b.mul(c, grain)
    hi = b.add(lo, grain)
    return lo, b.select(b.icmp_signed("<", hi, extent), hi, extent)


def _share(b: ir.IRBuilder, extent, parts, c, align: int) -> ir.Value:
    """Where block c of ``parts`` starts: c extent / parts rounded to the nearest multiple
    of ``align`` (the last block ends at ``extent``). With parts <= extent / (2 GEMM_ALIGN)
    and align <= GEMM_ALIGN every block holds at least half of extent / parts rows."""
    unit = b.mul(parts, i64(align))
    nearest = b.sdiv(b.add(b.mul(i64(2), b.mul(c, extent)), unit), b.mul(i64(2), unit))
    return b.select(b.icmp_signed("<", c, parts), b.mul(nearest, i64(align)), extent)


def _run_chunks(ctx: StepContext, fn, split: Range, ints, pointers, scalars, chunks, threads):
    b, ty = ctx.b, ctx.fmt.ftype
    fields = [*ints, *pointers, *scalars]
    partials = None
    if split.partial:
        partials = _entry_alloca(ctx, ir.ArrayType(ty, MAX_PARTIALS), "partials")
        fields.append(partials)
    if split.parts is not None:  # the blocks' bounds depend on their count
        fields.append(chunks)
    types = [v.type for v in fields]
    frame = _entry_alloca(ctx, ir.ArrayType(I64, len(fields)), "chunk.args")
    for k, value in enumerate(fields):
        store(b, value.type, value, _frame_slot(b, frame, k), i64(0))
    chunk = _trampoline(ctx, fn, split, len(ints), len(pointers), types)
    entry = ctx.module.globals.get(pool.ENTRY) or ir.Function(
        ctx.module, pool.CHUNK_RUNNER, pool.ENTRY
    )
    b.call(entry, [chunk, frame, chunks, threads])
    if partials is not None:  # in chunk order, whoever computed them
        (total,) = for_range(
            b,
            chunks,
            lambda c, acc: [b.fadd(acc[0], load(b, ty, partials, c))],
            init=[ir.Constant(ty, 0.0)],
        )
        store(b, ty, total, pointers[0], i64(0))


def _frame_slot(b: ir.IRBuilder, frame: ir.Value, k: int) -> ir.Value:
    """Slot k of a chunk frame: 8 bytes for each argument (an i64, pointer or float)."""
    return element(b, I64, frame, i64(k))


def _trampoline(ctx: StepContext, fn, split: Range, n_ints: int, n_pointers: int, types):
    """``void <kernel>.chunk(ptr frame, i64 c)``: the kernel on chunk c of its range."""
    found = ctx.trampolines.get(fn)
    if found is not None:
        return found
    chunk = ir.Function(ctx.module, pool.CHUNK_FN, name=f"{fn.name}.chunk")
    chunk.linkage = "internal"
    ctx.trampolines[fn] = chunk
    frame, c = chunk.args
    frame.name, c.name = "frame", "c"
    b = ir.IRBuilder(chunk.append_basic_block("entry"))
    values = [load(b, t, _frame_slot(b, frame, k), i64(0)) for k, t in enumerate(types)]
    ints = values[:n_ints]
    pointers = values[n_ints : n_ints + n_pointers]
    extra = (1 if split.partial else 0) + (1 if split.parts is not None else 0)
    scalars = values[n_ints + n_pointers : len(values) - extra]
    extent = split.extent(b, ints)
    if split.partial:
        pointers = [element(b, ctx.fmt.ftype, values[-1], c), *pointers[1:]]
    chunks = values[-1] if split.parts is not None else None
    lo, hi = _chunk_bounds(b, split, ints, extent, c, chunks)
    b.call(fn, [*ints, lo, hi, *pointers, *scalars])
    b.ret_void()
    return chunk


class Kernel:
    """An internal function under construction for one statement."""

    def __init__(
        self,
        ctx: StepContext,
        kind: str,
        s: Stmt,
        ints: int,
        values: Sequence[Value],
        symbols,
        split: Range | None = None,
    ):
        self.ctx = ctx
        slots = list(dict.fromkeys(ctx.slot_of[v.name] for v in values))
        self.symbols = list(symbols)
        ty = ctx.fmt.ftype
        bounds = 2 if split else 0  # [lo, hi) of the range the chunk covers
        fnty = ir.FunctionType(
            ir.VoidType(), [I64] * (ints + bounds) + [PTR] * len(slots) + [ty] * len(self.symbols)
        )
        self.fn = ir.Function(ctx.module, fnty, name=llvm_name(f"{ctx.prefix}.{kind}.{s.out.name}"))
        self.fn.linkage = "internal"
        ctx.last_kernel = self.fn
        ctx.notes[self.fn.get_reference()] = _statement_text(s)
        if split:
            ctx.ranged[self.fn] = split
            if ctx.threads is not None:
                # called from its chunk function and, for one chunk, from step_impl: inlined
                # into both, LLVM would optimize and vectorize its loop twice
                self.fn.attributes.add("noinline")
        params = list(self.fn.args)
        self.ints = params[:ints]
        self.lo, self.hi = params[ints : ints + bounds] if split else (i64(0), None)
        for p, name in zip(params[ints : ints + bounds], ("lo", "hi")):
            p.name = name
        params = params[:ints] + params[ints + bounds :]
        by_slot = dict(zip(slots, params[ints : ints + len(slots)]))
        names = {ctx.slot_of[v.name]: v.name for v in reversed(values)}  # first value per slot
        for slot, p in by_slot.items():
            p.add_attribute("noalias")
            p.name = llvm_name(names[slot])
        for p, name in zip(self.ints, ("rows", "cols") if ints == 2 else ("m", "n", "k")):
            p.name = name
        self.ptr = {v.name: by_slot[ctx.slot_of[v.name]] for v in values}
        self.env = dict(zip(self.symbols, params[ints + len(slots) :]))
        for sym, p in self.env.items():
            p.name = llvm_name(str(sym))
        self._slots = slots
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.e = Emitter(self.b, ctx.fmt)
        self.ty = ty

    def lower(self, expr: sp.Expr, env: dict) -> ir.Value:
        return ScalarLowering(self.e, self.ctx.math, {**self.env, **env})(expr)

    def emit_call(self, int_args: Sequence[ir.Value]) -> None:
        self.b.ret_void()
        ctx = self.ctx
        pointers = [ctx.pointers[s] for s in self._slots]
        call_kernel(ctx, self.fn, list(int_args), pointers, [ctx.scalars[s] for s in self.symbols])


def free_scalars(ctx: StepContext, exprs, bound=()) -> list[sp.Symbol]:
    """Program scalars / batch symbols an expression needs, in a deterministic order."""
    names = set()
    for expr in exprs:
        names |= sp.sympify(expr).free_symbols
    names -= set(bound)
    unknown = [s for s in names if s not in ctx.scalars]
    if unknown:
        raise NotImplementedError(
            f"symbols {sorted(map(str, unknown))} are neither arguments, scalars nor batch symbols"
        )
    return sorted(names, key=str)


# --------------------------------------------------------------------------
# Broadcast operands of Map / Reduce


def broadcast_kind(v: Value, domain: Shape) -> str:
    rows, cols = domain
    if tuple(v.shape) == tuple(domain):
        return "full"
    one_row, one_col = v.shape[0] == 1, v.shape[1] == 1
    if one_row and one_col:
        return "scalar"
    if one_row and v.shape[1] == cols:
        return "row"
    if one_col and v.shape[0] == rows:
        return "col"
    raise ValueError(
        f"operand {v.name}{tuple(v.shape)} does not broadcast over the domain {tuple(domain)}"
    )


class Operands:
    """Loads each bound argument at element (i, j) of the domain according to its kind.

    An operand that shares its buffer with the output (``in_place``) is loaded
    through ``freeze``: stored back after a select, as relu's
    ``select(0 > x, 0, x)`` in place, x86's instruction selection turned the
    store into a masked store of the zeros (``vmaskmovps``, microcoded on AMD
    Zen: 5% of the digits epoch's time, by perf) where ``vmaxps`` and a plain
    store do. The frozen value is the loaded one: the bits are the same.
    """

    def __init__(self, k: Kernel, args, domain: Shape, in_place=frozenset()):
        self.k = k
        self.args = [(sym, v, broadcast_kind(v, domain)) for sym, v in args]
        self.in_place = in_place
        b = k.b
        self.fixed = {
            sym: load(b, k.ty, k.ptr[v.name], i64(0))
            for sym, v, kind in self.args
            if kind == "scalar"
        }

    @property
    def flat(self) -> bool:
        return all(kind in ("full", "scalar") for _, _, kind in self.args)

    def _full(self, sym, pointer, index) -> ir.Value:
        value = load(self.k.b, self.k.ty, pointer, index, str(sym))
        return freeze(self.k.b, value, f"{sym}.frozen") if sym in self.in_place else value

    def at_flat(self, idx) -> dict:
        k = self.k
        env = {
            sym: self._full(sym, k.ptr[v.name], idx) for sym, v, kind in self.args if kind == "full"
        }
        return {**self.fixed, **env}

    def row(self, i, cols) -> dict:
        """Per-row state: column operands loaded, row start of full operands."""
        k = self.k
        start = k.b.mul(i, cols)
        state = dict(self.fixed)
        for sym, v, kind in self.args:
            if kind == "col":
                state[sym] = load(k.b, k.ty, k.ptr[v.name], i, str(sym))
            elif kind == "full":
                state[sym] = element(k.b, k.ty, k.ptr[v.name], start)  # a pointer, loaded per j
        return state

    def at(self, row_state: dict, j) -> dict:
        k = self.k
        env = dict(row_state)
        for sym, v, kind in self.args:
            if kind == "full":
                env[sym] = self._full(sym, row_state[sym], j)
            elif kind == "row":
                env[sym] = load(k.b, k.ty, k.ptr[v.name], j, str(sym))
        return env


def _elementwise_kernel(
    ctx: StepContext, kind: str, s, domain: Shape, split=None
) -> tuple[Kernel, Operands]:
    """The kernel and its operands; ``split(operands)``: the Range its loop splits over."""
    values = [s.out] + [v for _, v in s.args]
    symbols = free_scalars(ctx, [s.body], bound=[sym for sym, _ in s.args])
    kinds = [broadcast_kind(v, domain) for _, v in s.args]
    flat = all(kind in ("full", "scalar") for kind in kinds)
    k = Kernel(ctx, kind, s, 2, values, symbols, split(flat) if split else None)
    out = ctx.slot_of[s.out.name]
    in_place = frozenset(sym for sym, v in s.args if ctx.slot_of[v.name] == out)
    return k, Operands(k, s.args, domain, in_place)


# --------------------------------------------------------------------------
# Lowering rules


def lower_map(ctx: StepContext, s: Map) -> None:
    """out[i, j] = body(args at [i, j])"""
    k, ops = _elementwise_kernel(ctx, "map", s, s.out.shape, lambda flat: FLAT if flat else ROWS)
    b, cols = k.b, k.ints[1]
    out = k.ptr[s.out.name]
    if ops.flat:  # the chunk [lo, hi) of the r*c elements
        for_range(
            b,
            k.hi,
            lambda idx, _: store(b, k.ty, k.lower(s.body, ops.at_flat(idx)), out, idx),
            start=k.lo,
        )
    else:

        def row(i, _):
            state = ops.row(i, cols)
            out_row = element(b, k.ty, out, b.mul(i, cols))
            for_range(
                b, cols, lambda j, _: store(b, k.ty, k.lower(s.body, ops.at(state, j)), out_row, j)
            )

        for_range(b, k.hi, row, start=k.lo)  # the chunk [lo, hi) of the rows
    k.emit_call([ctx.dim(d) for d in s.out.shape])


def _reduce_range(axis) -> Callable[[bool], Range]:
    """Chunks of a reduction: rows (axis 1), columns (axis 0: each column's sum stays in
    row order), or elements / rows with one partial sum per chunk (axis None)."""
    if axis == 0:
        return lambda flat: COLS
    if axis == 1:
        return lambda flat: ROWS
    return lambda flat: dataclasses.replace(FLAT if flat else ROWS, partial=True)


def lower_reduce(ctx: StepContext, s: Reduce) -> None:
    """out = sum of body over the domain: axis 0 -> (1, c), 1 -> (r, 1), None -> (1, 1)"""
    if s.axis not in (0, 1, None):
        raise ValueError(f"Reduce axis must be 0, 1 or None; received: axis={s.axis!r}")
    k, ops = _elementwise_kernel(ctx, "reduce", s, s.domain, _reduce_range(s.axis))
    b, rows, cols, ty = k.b, *k.ints, k.ty
    out = k.ptr[s.out.name]
    zero = ir.Constant(ty, 0.0)

    def add(acc, value):
        return b.fadd(acc, value, flags=REDUCE)

    if s.axis is None and ops.flat:  # the chunk's elements [lo, hi), to out (its partial)
        (total,) = for_range(
            b,
            k.hi,
            lambda idx, acc: [add(acc[0], k.lower(s.body, ops.at_flat(idx)))],
            init=[zero],
            start=k.lo,
        )
        store(b, ty, total, out, i64(0))
    elif s.axis is None:

        def row(i, acc):
            state = ops.row(i, cols)
            return for_range(
                b, cols, lambda j, a: [add(a[0], k.lower(s.body, ops.at(state, j)))], init=acc
            )

        (total,) = for_range(b, k.hi, row, init=[zero], start=k.lo)
        store(b, ty, total, out, i64(0))
    elif s.axis == 1:

        def row(i, _):
            state = ops.row(i, cols)
            (total,) = for_range(
                b, cols, lambda j, a: [add(a[0], k.lower(s.body, ops.at(state, j)))], init=[zero]
            )
            store(b, ty, total, out, i)

        for_range(b, k.hi, row, start=k.lo)
    else:  # the chunk's columns [lo, hi), each summed over every row
        for_range(b, k.hi, lambda j, _: store(b, ty, zero, out, j), start=k.lo)

        def row(i, _):
            state = ops.row(i, cols)

            def col(j, _):  # out[j] += body(i, j)
                store(b, ty, add(load(b, ty, out, j), k.lower(s.body, ops.at(state, j))), out, j)

            for_range(b, k.hi, col, start=k.lo)

        for_range(b, rows, row)
    k.emit_call([ctx.dim(d) for d in s.domain])


def lower_softmax(ctx: StepContext, s: Softmax) -> None:
    """Row-wise, shifted by the row max: e = exp(x - m); softmax = e / sum e; log-softmax = x - m - log sum e"""
    k = Kernel(ctx, "log_softmax" if s.log else "softmax", s, 2, [s.out, s.a], [], ROWS)
    b, e, ty, cols = k.b, k.e, k.ty, k.ints[1]

    def row(i, _):
        start = b.mul(i, cols)
        x, out = element(b, ty, k.ptr[s.a.name], start), element(b, ty, k.ptr[s.out.name], start)
        # m = x > m ? x : m skips a nan (as maxnum, but no libm call where the target has no
        # max instruction: wasm, soft float); exp(nan - m) makes the whole row nan, as in NumPy
        (m,) = for_range(
            b,
            cols,
            lambda j, a: [_larger(b, e, a[0], load(b, ty, x, j))],
            init=[e.c(float("-inf"))],
        )

        def exp_sum(j, acc):
            ej = ctx.math.call(b, "exp", e.sub(load(b, ty, x, j), m))
            if not s.log:
                store(b, ty, ej, out, j)
            return [b.fadd(acc[0], ej, flags=REDUCE)]

        (total,) = for_range(b, cols, exp_sum, init=[e.c(0.0)])
        log_total = ctx.math.call(b, "log", total) if s.log else None

        def normalize(j, _):
            if s.log:  # (x - m) - log sum e
                store(b, ty, e.sub(e.sub(load(b, ty, x, j), m), log_total), out, j)
            else:  # e / sum e
                store(b, ty, e.div(load(b, ty, out, j), total), out, j)

        for_range(b, cols, normalize)

    for_range(b, k.hi, row, start=k.lo)
    k.emit_call([ctx.dim(d) for d in s.a.shape])


def _larger(b: ir.IRBuilder, e, acc, x):
    """x if x > acc else acc: never nan when acc is not."""
    return b.select(e.cmp(">", x, acc), x, acc)


def lower_transpose(ctx: StepContext, s: Transpose) -> None:
    """out[j, i] = a[i, j]"""
    k = Kernel(ctx, "transpose", s, 2, [s.out, s.a], [])
    b, ty, (rows, cols) = k.b, k.ty, k.ints
    a, out = k.ptr[s.a.name], k.ptr[s.out.name]

    def row(i, _):
        start = b.mul(i, cols)

        def col(j, _):  # out[j, i] = a[i, j]
            store(b, ty, load(b, ty, a, b.add(start, j)), out, b.add(b.mul(j, rows), i))

        for_range(b, cols, col)

    for_range(b, rows, row)
    k.emit_call([ctx.dim(d) for d in s.a.shape])


def lower_columns(ctx: StepContext, s: Columns) -> None:
    """out[i, offset + j] = part[i, start + j] for each part, row by row"""
    k = Kernel(ctx, "columns", s, 1, [s.out, *(v for v, _, _ in s.parts)], [])
    b, ty, (rows,) = k.b, k.ty, k.ints
    width = i64(int(s.out.shape[1]))

    def row(i, _):
        offset = 0
        for v, start, stop in s.parts:
            src = element(b, ty, k.ptr[v.name], b.add(b.mul(i, i64(int(v.shape[1]))), i64(start)))
            dst = element(b, ty, k.ptr[s.out.name], b.add(b.mul(i, width), i64(offset)))
            copy(b, ty, src, dst, i64(stop - start))
            offset += stop - start

    for_range(b, rows, row)
    k.emit_call([ctx.dim(s.out.shape[0])])


def _columns_call(ctx: StepContext, s: Columns) -> KernelCall:
    layout = tuple((int(v.shape[1]), start, stop) for v, start, stop in s.parts)
    return layout, [s.out, *(v for v, _, _ in s.parts)], [s.out.shape[0]], []


def _images(win: Window) -> Range:
    """Chunks of whole images: a window's taps read and write only its own image."""
    work = win.out_h * win.out_w * win.k_h * win.k_w * win.channels
    return Range(lambda b, n: n[0], lambda b, n: per_chunk(b, i64(work)))


def _each_tap(k: Kernel, win: Window, visit) -> None:
    """Loops over the images [lo, hi), windows (i, j) and taps (u, v): ``visit(inside, source, window,
    tap)`` with ``inside`` whether the tap reads the image, ``source`` the index of its
    first channel in the image rows (clamped into the image when it is outside), ``window``
    the window's row index and ``tap`` u*kw + v."""
    b = k.b
    c = i64

    def clamped(pos, size):
        inside = b.and_(b.icmp_signed(">=", pos, c(0)), b.icmp_signed("<", pos, c(size)))
        return inside, b.select(inside, pos, c(0))

    def image(n, _):
        def row(i, _):
            def col(j, _):
                window = b.add(b.mul(b.add(b.mul(n, c(win.out_h)), i), c(win.out_w)), j)

                def tap_u(u, _):
                    y = b.add(
                        b.mul(i, c(win.stride_h)), b.sub(b.mul(u, c(win.dil_h)), c(win.pad_top))
                    )
                    in_y, yc = clamped(y, win.in_h)

                    def tap_v(v, _):
                        x = b.add(
                            b.mul(j, c(win.stride_w)),
                            b.sub(b.mul(v, c(win.dil_w)), c(win.pad_left)),
                        )
                        in_x, xc = clamped(x, win.in_w)
                        pixel = b.add(b.mul(b.add(b.mul(n, c(win.in_h)), yc), c(win.in_w)), xc)
                        tap = b.add(b.mul(u, c(win.k_w)), v)
                        visit(b.and_(in_y, in_x), b.mul(pixel, c(win.channels)), window, tap)

                    for_range(b, c(win.k_w), tap_v)

                for_range(b, c(win.k_h), tap_u)

            for_range(b, c(win.out_w), col)

        for_range(b, c(win.out_h), row)

    for_range(b, k.hi, image, start=k.lo)


def _window_entry(b: ir.IRBuilder, win: Window, window, tap, channel) -> ir.Value:
    """Index of (window, tap, channel) in the window rows."""
    if win.depthwise:  # row window*C + c, column tap
        return b.add(
            b.mul(b.add(b.mul(window, i64(win.channels)), channel), i64(win.k_h * win.k_w)), tap
        )
    taps = b.add(b.mul(window, i64(win.k_h * win.k_w)), tap)
    return b.add(b.mul(taps, i64(win.channels)), channel)


def lower_im2col(ctx: StepContext, s: Im2Col) -> None:
    """out[window, (u, v, c)] = a[image, y, x, c] at the tap's pixel, the fill outside"""
    k = Kernel(ctx, "im2col", s, 1, [s.out, s.a], [], _images(s.window))
    b, ty, win = k.b, k.ty, s.window
    fill = ir.Constant(ty, float("-inf") if win.lowest else 0.0)
    a, out = k.ptr[s.a.name], k.ptr[s.out.name]

    def visit(inside, source, window, tap):
        def channel(ch, _):
            value = b.select(inside, load(b, ty, a, b.add(source, ch)), fill)
            store(b, ty, value, out, _window_entry(b, win, window, tap, ch))

        for_range(b, i64(win.channels), channel)

    _each_tap(k, win, visit)
    k.emit_call([ctx.dim(s.a.shape[0])])


def lower_col2im(ctx: StepContext, s: Col2Im) -> None:
    """out = 0, then out[image, y, x, c] += a[window, (u, v, c)] for each tap inside the image"""
    k = Kernel(ctx, "col2im", s, 1, [s.out, s.a], [], _images(s.window))
    b, ty, win = k.b, k.ty, s.window
    a, out = k.ptr[s.a.name], k.ptr[s.out.name]
    zero = ir.Constant(ty, 0.0)
    image = i64(win.in_h * win.in_w * win.channels)  # entries per image: zero [lo, hi)
    for_range(
        b, b.mul(k.hi, image), lambda idx, _: store(b, ty, zero, out, idx), start=b.mul(k.lo, image)
    )

    def visit(inside, source, window, tap):
        def channel(ch, _):
            at = b.add(source, ch)
            value = b.select(inside, load(b, ty, a, _window_entry(b, win, window, tap, ch)), zero)
            store(b, ty, b.fadd(load(b, ty, out, at), value), out, at)

        for_range(b, i64(win.channels), channel)

    _each_tap(k, win, visit)
    k.emit_call([ctx.dim(s.out.shape[0])])


def lower_reshape(ctx: StepContext, s: Reshape) -> None:
    """out = a, entry by entry in row-major order"""
    k = Kernel(ctx, "reshape", s, 1, [s.out, s.a], [])
    copy(k.b, k.ty, k.ptr[s.a.name], k.ptr[s.out.name], k.ints[0])
    k.emit_call([ctx.dim(s.out.shape[0] * s.out.shape[1])])


def lower_row_max(ctx: StepContext, s: RowMax) -> None:
    """out[i] = max over j of a[i, j] (a nan entry is skipped, as in softmax's row max)"""
    k = Kernel(ctx, "rowmax", s, 2, [s.out, s.a], [], ROWS)
    b, e, ty, cols = k.b, k.e, k.ty, k.ints[1]

    def row(i, _):
        x = element(b, ty, k.ptr[s.a.name], b.mul(i, cols))
        (m,) = for_range(
            b,
            cols,
            lambda j, acc: [_larger(b, e, acc[0], load(b, ty, x, j))],
            init=[e.c(float("-inf"))],
        )
        store(b, ty, m, k.ptr[s.out.name], i)

    for_range(b, k.hi, row, start=k.lo)
    k.emit_call([ctx.dim(d) for d in s.a.shape])


def _window_call(images):
    def call(ctx: StepContext, s) -> KernelCall:
        return (tuple(s.window.__dict__.values()),), [s.out, s.a], [images(s)], []

    return call


def _u64(value: int) -> ir.Constant:
    """A 64-bit unsigned constant (written as the signed i64 of the same bits)."""
    return i64(value - (1 << 64) if value >= 1 << 63 else value)


def _mix64(b: ir.IRBuilder, z: ir.Value) -> ir.Value:
    """The splitmix64 finalizer on an i64 (codegen.ir.mix64): wrapping 64-bit arithmetic."""
    for shift, multiplier in MIX:
        z = b.xor(z, b.lshr(z, i64(shift)))
        if multiplier is not None:
            z = b.mul(z, _u64(multiplier))
    return z


def lower_keep_mask(ctx: StepContext, s: KeepMask) -> None:
    """out[idx] = bits(idx) >= threshold ? scale : 0, bits = top half of mix64(key_t + (idx + 1) G)"""
    symbols = free_scalars(ctx, [s.counter, s.scale])
    k = Kernel(ctx, "keep_mask", s, 2, [s.out], symbols, FLAT)
    b, ty = k.b, k.ty
    counter = b.fptoui(k.lower(sp.sympify(s.counter), {}), I64)
    key = _mix64(b, b.add(_u64(s.key), b.mul(counter, _u64(GOLDEN))))
    scale, zero = k.lower(sp.sympify(s.scale), {}), ir.Constant(ty, 0.0)

    def element_mask(idx, _):
        z = _mix64(b, b.add(key, b.mul(b.add(idx, i64(1)), _u64(GOLDEN))))
        keep = b.icmp_unsigned(">=", b.lshr(z, i64(32)), i64(s.threshold))
        store(b, ty, b.select(keep, scale, zero), k.ptr[s.out.name], idx)

    for_range(b, k.hi, element_mask, start=k.lo)
    k.emit_call([ctx.dim(d) for d in s.out.shape])


def _keep_mask_call(ctx: StepContext, s: KeepMask) -> KernelCall:
    detail = (s.key, sp.srepr(s.counter), s.threshold, sp.srepr(s.scale))
    return detail, [s.out], list(s.out.shape), free_scalars(ctx, [s.counter, s.scale])


def _table_row(k: Kernel, value: ir.Value, rows: ir.Value) -> ir.Value:
    """An index (a float) as a row of a table of ``rows`` rows, clamped to [0, rows - 1]."""
    b = k.b
    low, high = k.e.c(0.0), b.sitofp(b.sub(rows, i64(1)), k.ty)
    lower = b.select(b.fcmp_ordered(">", value, low), value, low)  # nan -> 0
    return b.fptosi(b.select(b.fcmp_ordered("<", lower, high), lower, high), I64)


def lower_gather(ctx: StepContext, s: Gather) -> None:
    """out[i, k d + j] = table[row(i, k), j], row = indices[i, k] clamped to the table"""
    k = Kernel(ctx, "gather", s, 2, [s.out, s.table, s.indices], [])
    b, ty, (rows, steps) = k.b, k.ty, k.ints
    vocabulary, width = _fixed(s.table.shape[0]), i64(int(s.table.shape[1]))
    table, indices, out = (k.ptr[v.name] for v in (s.table, s.indices, s.out))

    def sample(i, _):
        def step(j, _):
            at = b.add(b.mul(i, steps), j)
            row = _table_row(k, load(b, ty, indices, at), vocabulary)
            src = element(b, ty, table, b.mul(row, width))
            copy(b, ty, src, element(b, ty, out, b.mul(at, width)), width)

        for_range(b, steps, step)

    for_range(b, rows, sample)
    k.emit_call([ctx.dim(d) for d in s.indices.shape])


def lower_scatter_add(ctx: StepContext, s: ScatterAdd) -> None:
    """out = 0; out[row(i, k), j] += source[i, k d + j] for i, then k, then j"""
    k = Kernel(ctx, "scatter_add", s, 2, [s.out, s.source, s.indices], [])
    b, ty, (rows, steps) = k.b, k.ty, k.ints
    vocabulary, width = _fixed(s.out.shape[0]), i64(int(s.out.shape[1]))
    source, indices, out = (k.ptr[v.name] for v in (s.source, s.indices, s.out))
    zero = ir.Constant(ty, 0.0)
    for_range(b, b.mul(vocabulary, width), lambda idx, _: store(b, ty, zero, out, idx))

    def sample(i, _):
        def step(j, _):
            at = b.add(b.mul(i, steps), j)
            row = _table_row(k, load(b, ty, indices, at), vocabulary)
            dst = element(b, ty, out, b.mul(row, width))
            src = element(b, ty, source, b.mul(at, width))

            def add(c, _):  # dst[c] += src[c]
                store(b, ty, b.fadd(load(b, ty, dst, c), load(b, ty, src, c)), dst, c)

            for_range(b, width, add)

        for_range(b, steps, step)

    for_range(b, rows, sample)
    k.emit_call([ctx.dim(d) for d in s.indices.shape])


def _fixed(d) -> ir.Constant:
    """A fixed (integer) dimension as an i64 constant: tables have no batch dimension."""
    return i64(int(d))


def _indexed_call(table: Value, s: Gather | ScatterAdd) -> KernelCall:
    """The table's shape is part of the kernel (constants in its loops), the batch is not."""
    detail = tuple(int(d) for d in table.shape)
    return detail, [s.out, *s.reads], list(s.indices.shape), []


def _gemm_parts(b: ir.IRBuilder, n: list, extent: ir.Value, threads: ir.Value) -> ir.Value:
    """Blocks of a product's rows: one per thread, but none under 2 GEMM_ALIGN rows and
    none under half of GEMM_WORK multiply-adds on average (so a product under GEMM_WORK
    runs whole, on the calling thread)."""
    m, cols, inner = n
    work = b.mul(b.mul(m, cols), inner)
    parts = loops.imin(b, threads, b.sdiv(extent, i64(2 * GEMM_ALIGN)))
    parts = loops.imin(b, parts, b.sdiv(work, i64(GEMM_WORK // 2)))
    return _at_least(b, parts, 1)


GEMM_WORK = 1 << 22  # multiply-adds: a 32x64x128 product (1/16 of it) is faster whole on one thread
# the fewest rows of a block is 2 GEMM_ALIGN; its boundaries are multiples of
# blas.block_align (GEMM_ALIGN or a divisor of it for kernels known to tile finer)
GEMM_ALIGN = blas.DEFAULT_BLOCK_ALIGN


def gemm_range(ctx: StepContext) -> Range:
    """Rows of the output, in blocks aligned for the BLAS kernels that run."""
    align = blas.block_align(ctx.provider, ctx.fmt.name)
    return Range(lambda b, n: n[0], parts=_gemm_parts, align=align)


def lower_gemm(ctx: StepContext, s: Gemm) -> None:
    """out = alpha op(a) @ op(b) through the resolved BLAS (or the generated loop nest), in
    blocks of rows of out, one per thread (one call each: the same bits)

    Why a block gives the bits of the whole product. Rows of the row-major
    out are the columns (N) of the column-major call OpenBLAS makes of it
    (``blas._cblas_call``). Its level-3 driver cuts the inner dimension into
    panels by its length only (GEMM_Q) and accumulates each element over
    them in the same order; along N its micro-kernel tiles start at the
    call's first column, so blocks that start at multiples of its width
    (``blas.block_align``) leave every element at the same place in the same tile (the narrower
    edge tiles only at the product's own edge). Along M there is no such
    rule: the Haswell sgemm of OpenBLAS 0.3.31 gave other bits for the
    columns of out near every split point tried (1 to 202 of 203, on a
    301 x 173 x 203 product), so out is never split by columns. What is chosen
    by a call's size must not change between blocks either: every block
    holds at least a quarter of GEMM_WORK (2^20) multiply-adds
    (``_gemm_parts``, ``_share``), above the 100^3 under which OpenBLAS may
    take its small-matrix kernels, and the column-major call never takes the
    AVX-512 ``sgemm_direct``. The generated loop nest computes every row alike,
    but its dot products are reductions LLVM may reorder (``REDUCE``), and how
    depends on what it knows of the sizes: the kernel is never inlined, so one
    body runs a product whole (at one thread) and in blocks (its trampoline).
    """
    _gemm_kernel(ctx, s, s, s.out, s.alpha, None)


def lower_gemm_update(ctx: StepContext, s: GemmUpdate) -> None:
    """c = beta c + alpha' op(a) @ op(b) in one BLAS call (beta: the BLAS scales c first);
    the blocks of rows are those of ``lower_gemm``, and the beta pass of each block covers
    its own rows only, so the bits do not depend on the thread count either."""
    _gemm_kernel(ctx, s, s.gemm, s.out, s.alpha, s.beta)


def _gemm_kernel(ctx: StepContext, s, g: Gemm, target: Value, alpha_expr, beta_expr) -> None:
    """The kernel of ``target = alpha op(g.a) @ op(g.b) (+ beta target)``, in row blocks."""
    scalars = free_scalars(ctx, [alpha_expr] + ([] if beta_expr is None else [beta_expr]))
    k = Kernel(ctx, "gemm", s, 3, [target, g.a, g.b], scalars, gemm_range(ctx))
    k.fn.attributes.add("noinline")
    b = k.b
    m, n, inner = k.ints
    alpha = k.lower(alpha_expr, {})
    beta = None if beta_expr is None else k.lower(beta_expr, {})
    a, bm, c = (k.ptr[v.name] for v in (g.a, g.b, target))
    lda, ldb, ldc = blas.leading_dimensions(b, g.trans_a, g.trans_b, m, n, inner)
    # out[lo:hi, :] = op(a)[lo:hi, :] @ op(b)
    part = element(b, k.ty, a, k.lo if g.trans_a else b.mul(k.lo, lda))
    out = element(b, k.ty, c, b.mul(k.lo, ldc))
    rows = b.sub(k.hi, k.lo)
    call = blas.GemmCall(g.trans_a, g.trans_b, rows, n, inner, alpha, part, bm, out, beta)
    blas.emit_gemm(b, ctx.provider, ctx.fmt, call, (lda, ldb, ldc))
    inner_dim = g.a.shape[0] if g.trans_a else g.a.shape[1]
    k.emit_call([ctx.dim(target.shape[0]), ctx.dim(target.shape[1]), ctx.dim(inner_dim)])


# --------------------------------------------------------------------------
# GEMM epilogues: a product whose only reader is the next statement, a Map
#     v_new = beta v + gamma g    (v_new computed in v's buffer, g = alpha op(a) @ op(b))
# as an optimizer writes a velocity or a moment (SGD with momentum: beta = momentum,
# gamma = -lr), is computed as one accumulating GEMM, v = beta v + (gamma alpha) op(a)
# @ op(b): the BLAS's beta pass scales v where its beta = 0 pass zeroed g, and the pass
# that read g and v and wrote v goes (on the 1024-wide MLP, one of four passes over each
# 1024 x 1024 weight's arrays; g's buffer is never touched). The bits differ from
# the two statements' (beta v is rounded before the product is added, gamma alpha is
# one factor), but not between thread counts, step and epoch.


@dataclass(frozen=True)
class GemmUpdate:
    """``update.out = beta c + alpha op(gemm.a) @ op(gemm.b)``, in c's buffer (in place)."""

    gemm: Gemm
    update: Map
    c: Value
    alpha: sp.Expr  # gamma * gemm.alpha
    beta: sp.Expr

    in_place: ClassVar[bool] = False
    aborts: ClassVar[bool] = False

    @property
    def out(self) -> Value:
        return self.update.out

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.gemm.a, self.gemm.b, self.c)

    def text(self) -> str:
        return "\n".join(_statement_text(s) for s in (self.gemm, self.update))


def _linear(body: sp.Expr, x: sp.Symbol, y: sp.Symbol) -> tuple[sp.Expr, sp.Expr] | None:
    """(beta, gamma) with body == beta x + gamma y and neither depending on x or y, else None."""
    beta, gamma = sp.diff(body, x), sp.diff(body, y)
    if (beta.free_symbols | gamma.free_symbols) & {x, y}:
        return None
    if sp.expand(body - beta * x - gamma * y) != 0:
        return None
    return beta, gamma


def _gemm_update(g: Stmt, m: Stmt, slot_of: dict, readers: dict, pinned: set):
    """The fused statement for the pair (g, m), or None when it does not apply."""
    if type(g) is not Gemm or type(m) is not Map or len(m.args) != 2:
        return None
    if g.out.name in pinned or readers.get(g.out.name) != 1:
        return None
    (x, first), (y, second) = m.args
    if second.name != g.out.name:
        (x, first), (y, second) = (y, second), (x, first)
    c = first
    if second.name != g.out.name or not (c.shape == m.out.shape == g.out.shape):
        return None
    slot = slot_of[c.name]
    if slot_of[m.out.name] != slot or slot in {slot_of[g.a.name], slot_of[g.b.name]}:
        return None
    found = _linear(m.body, x, y)
    if found is None:
        return None
    beta, gamma = found
    return GemmUpdate(g, m, c, sp.sympify(gamma * g.alpha), beta)


def fuse_gemm_updates(body: Sequence[Stmt], outputs, updates, slot_of: dict) -> list:
    """``body`` with every product and the update that consumes it as one ``GemmUpdate``."""
    readers: dict[str, int] = {}
    for s in body:
        for v in s.reads:
            readers[v.name] = readers.get(v.name, 0) + 1
    pinned = {v.name for v in outputs} | {src.name for _, src in updates}
    fused, i = [], 0
    while i < len(body):
        pair = (
            _gemm_update(body[i], body[i + 1], slot_of, readers, pinned)
            if i + 1 < len(body)
            else None
        )
        fused.append(pair or body[i])
        i += 2 if pair else 1
    return fused


def lower_guard(ctx: StepContext, s: Guard) -> None:
    """return status (index + 1) unless |value| < inf (false for nan and inf)"""
    b, e = ctx.b, Emitter(ctx.b, ctx.fmt)
    ctx.guard_index += 1
    value = load(b, ctx.fmt.ftype, ctx.pointer(s.value), i64(0))
    finite = e.cmp("<", e.fabs(value), float("inf"))
    ok = b.append_basic_block(f"guard{ctx.guard_index}.ok")
    bad = b.append_basic_block(f"guard{ctx.guard_index}.fail")
    b.cbranch(finite, ok, bad)
    b.position_at_end(bad)
    b.ret(ir.Constant(I32, ctx.guard_index))
    b.position_at_end(ok)


# --------------------------------------------------------------------------
# Kernel signatures: what two statements must share to be computed by one kernel

KernelCall = tuple[tuple, list[Value], list, list[sp.Symbol]]
"""(detail of the key, buffers, size expressions, scalar symbols) of one kernel call."""


def _elementwise_call(ctx: StepContext, s: Map | Reduce, domain: Shape) -> KernelCall:
    values = [s.out, *(v for _, v in s.args)]
    symbols = free_scalars(ctx, [s.body], bound=[sym for sym, _ in s.args])
    kinds = tuple(broadcast_kind(v, domain) for _, v in s.args)
    detail = (sp.srepr(s.body), tuple(sp.srepr(sym) for sym, _ in s.args), kinds)
    return detail, values, list(domain), symbols


def _reduce_call(ctx: StepContext, s: Reduce) -> KernelCall:
    detail, values, dims, symbols = _elementwise_call(ctx, s, s.domain)
    return (*detail, s.axis), values, dims, symbols


def _gemm_call(ctx: StepContext, s: Gemm) -> KernelCall:
    inner = s.a.shape[0] if s.trans_a else s.a.shape[1]
    detail = (s.trans_a, s.trans_b, sp.srepr(s.alpha))
    return (
        detail,
        [s.out, s.a, s.b],
        [s.out.shape[0], s.out.shape[1], inner],
        free_scalars(ctx, [s.alpha]),
    )


def _gemm_update_call(ctx: StepContext, s: GemmUpdate) -> KernelCall:
    detail, _, dims, _ = _gemm_call(ctx, s.gemm)
    detail = (*detail[:2], sp.srepr(s.alpha), sp.srepr(s.beta))
    return detail, [s.out, s.gemm.a, s.gemm.b], dims, free_scalars(ctx, [s.alpha, s.beta])


class Rule(NamedTuple):
    """How one statement class is lowered: ``lower`` emits it; ``call`` is its kernel's
    signature (None: no kernel, the code goes straight into ``step_impl``)."""

    lower: Callable[[StepContext, Stmt], None]
    call: Callable[[StepContext, Stmt], KernelCall] | None


LOWERINGS: dict[type, Rule] = {
    Map: Rule(lower_map, lambda ctx, s: _elementwise_call(ctx, s, s.out.shape)),  # one loop
    Reduce: Rule(lower_reduce, _reduce_call),  # one loop, a sum per row / column / all
    Softmax: Rule(lower_softmax, lambda ctx, s: ((s.log,), [s.out, s.a], list(s.a.shape), [])),
    Transpose: Rule(lower_transpose, lambda ctx, s: ((None,), [s.out, s.a], list(s.a.shape), [])),
    Columns: Rule(lower_columns, _columns_call),  # a copy loop per part, row by row
    Im2Col: Rule(lower_im2col, _window_call(lambda s: s.a.shape[0])),  # loops over the taps
    Col2Im: Rule(lower_col2im, _window_call(lambda s: s.out.shape[0])),  # zero, then add per tap
    Reshape: Rule(
        lower_reshape, lambda ctx, s: ((None,), [s.out, s.a], [s.out.shape[0] * s.out.shape[1]], [])
    ),
    RowMax: Rule(lower_row_max, lambda ctx, s: ((None,), [s.out, s.a], list(s.a.shape), [])),
    KeepMask: Rule(lower_keep_mask, _keep_mask_call),  # one loop of 64-bit integer hashing
    Gather: Rule(lower_gather, lambda ctx, s: _indexed_call(s.table, s)),  # a row copy per index
    ScatterAdd: Rule(
        lower_scatter_add, lambda ctx, s: _indexed_call(s.out, s)
    ),  # zero, then a row add per index
    Gemm: Rule(lower_gemm, _gemm_call),  # a BLAS call
    Guard: Rule(lower_guard, None),  # a branch to the error exit, inline
}
"""IR statement class -> its lowering rule and kernel signature."""

FUSED_LOWERINGS: dict[type, Rule] = {
    GemmUpdate: Rule(lower_gemm_update, _gemm_update_call),  # a BLAS call with beta
}
"""Statements this backend makes of two IR statements (``fuse_gemm_updates``) -> their rule."""


def _rule(s: Stmt) -> Rule:
    rule = LOWERINGS.get(type(s)) or FUSED_LOWERINGS.get(type(s))
    if rule is None:
        raise NotImplementedError(
            f"the LLVM backend has no lowering for IR statement {type(s).__name__} "
            "(no row in codegen.llvm.kernels.LOWERINGS)"
        )
    return rule


def _statement_text(s: Stmt) -> str:
    if isinstance(s, GemmUpdate):
        return s.text()
    return format_stmt(s) + (f"  # {s.comment}" if s.comment else "")


def kernel_call(ctx: StepContext, s: Stmt) -> tuple[tuple, list[Value], list, list]:
    """(key, buffers, size expressions, scalar symbols) of the kernel call for ``s``.

    Two statements with equal keys are computed by the same function: same
    kind, body and operand kinds, the same pattern of shared buffers, the same
    scalars. Only the pointers and the sizes differ.
    """
    call = _rule(s).call
    if call is None:
        raise NotImplementedError(f"IR statement {type(s).__name__} is lowered without a kernel")
    detail, values, dims, symbols = call(ctx, s)
    slots = [ctx.slot_of[v.name] for v in values]
    aliasing = tuple(slots.index(slot) for slot in slots)
    key = (type(s).__name__, detail, aliasing, tuple(map(str, symbols)))
    return key, values, dims, symbols


def _call_shared(ctx: StepContext, s: Stmt, fn: ir.Function, values, dims, symbols) -> None:
    """Call the kernel another statement generated, with this statement's buffers and sizes."""
    if "noinline" not in fn.attributes:
        fn.attributes.add("noinline")  # optimized once, called from each statement
    ref = fn.get_reference()
    ctx.notes[ref] = f"{ctx.notes[ref]}\n{_statement_text(s)}"
    slots = list(dict.fromkeys(ctx.slot_of[v.name] for v in values))
    pointers = [ctx.pointers[slot] for slot in slots]
    call_kernel(ctx, fn, [ctx.dim(d) for d in dims], pointers, [ctx.scalars[x] for x in symbols])


def lower_statement(ctx: StepContext, s: Stmt) -> None:
    rule = _rule(s)
    if rule.call is None:  # inline in step_impl
        rule.lower(ctx, s)
        return
    key, values, dims, symbols = kernel_call(ctx, s)
    if key in ctx.kernels:
        _call_shared(ctx, s, ctx.kernels[key], values, dims, symbols)
        return
    rule.lower(ctx, s)
    ctx.kernels[key] = ctx.last_kernel
