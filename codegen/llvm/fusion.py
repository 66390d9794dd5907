"""codegen.llvm.fusion: elementwise statements over one domain computed in one loop nest.

A training step has many ``Map`` and ``Reduce`` statements over the same large domain:
a bias add and its activation, an activation's derivative and the column sum of the
result (a bias gradient), a momentum update and the new weight it gives. Each as its
own loop reads and writes the whole domain; in one loop nest each element is loaded
once and a value read only inside the nest never goes to memory.

:func:`fuse_loops` groups the program's statements in order. A ``Map`` / ``Reduce``
joins an earlier group of the same domain when

- it reads the group's ``Map`` results only at its own element (full-shape operands),
  and no row, column or (1, 1) operand of either side is written by the other;
- it may move up to the group: no statement in between writes a buffer it reads,
  reads or writes the buffer it writes, or may abort the call (a ``Guard``) while it
  writes an input's buffer (an update computed in place);
- the loop nest stays one of three shapes (``LOOPS``): flat (full and (1, 1) operands
  only), rows (a row or column operand, sums per row) or columns (column sums), with
  any number of sums to one number (each chunk's partial sums added in chunk order).

Inside the nest the members run in program order at each element, every full operand at
that element, so the result is the statement-by-statement one; chunk boundaries depend
on the sizes only, as for every kernel (the same bits at any thread count).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import llvmlite.ir as ir

from codegen.ir import Map, Program, Reduce, Shape, Stmt, plan_buffers
from codegen.llvm.kernels import (
    COLS,
    FLAT,
    MAX_PARTIALS,
    REDUCE,
    ROWS,
    Kernel,
    Operands,
    StepContext,
    _ceil_div,
    _entry_alloca,
    _statement_text,
    broadcast_kind,
    call_kernel,
    free_scalars,
    kernel_call,
    lower_statement,
    partial_grain,
)
from codegen.llvm.loops import for_range, i64, load, store


@dataclass(frozen=True)
class Fused:
    """``members`` (Map / Reduce over one domain) in one loop nest, in program order;
    ``stored[k]``: whether member k's result is written to memory (a Map read only by
    later members lives in registers)."""

    members: tuple[Map | Reduce, ...]
    stored: tuple[bool, ...]
    loop: str  # "flat", "rows" or "cols" (LOOPS)

    @property
    def domain(self) -> Shape:
        return domain_of(self.members[0])


def domain_of(s: Map | Reduce) -> Shape:
    return tuple(s.out.shape) if isinstance(s, Map) else tuple(s.domain)


def _kinds(s: Map | Reduce) -> list[str]:
    return [broadcast_kind(v, domain_of(s)) for _, v in s.args]


def loop_shape(members) -> str | None:
    """The loop nest that computes ``members`` together, or None when there is none."""
    axes = [m.axis for m in members if isinstance(m, Reduce)]
    if 0 in axes:  # column sums: chunks of columns, every row in order
        return "cols" if set(axes) == {0} else None
    broadcast = any(k in ("row", "col") for m in members for k in _kinds(m))
    return "rows" if broadcast or 1 in axes else "flat"


# --------------------------------------------------------------------------
# Which statements share a loop nest


def joins(group: list[Stmt], s: Stmt, where) -> bool:
    """Whether ``s`` can run in ``group``'s loop nest after its members, and shares data with
    them (reads a result of theirs, or an operand they read). ``where(value)``: its storage
    (its name before buffers are planned, its buffer slot after)."""
    members = [*group, s]
    if not all(isinstance(m, (Map, Reduce)) for m in members):
        return False
    domain = domain_of(s)
    if tuple(domain) == (1, 1) or any(domain_of(m) != domain for m in group):
        return False
    if loop_shape(members) is None:
        return False
    made = {m.out.name: m for m in group}
    written = {where(m.out) for m in group}
    full = {v.name for m in group for (_, v), kind in zip(m.args, _kinds(m)) if kind == "full"}
    shares = False
    for (_, v), kind in zip(s.args, _kinds(s)):
        if v.name in made and not (isinstance(made[v.name], Map) and kind == "full"):
            return False  # a sum, or a result read away from its element
        if kind != "full" and where(v) in written:
            return False
        shares |= kind == "full" and (v.name in made or v.name in full)
    out = where(s.out)
    broadcast = any(
        kind != "full" and where(v) == out for m in group for (_, v), kind in zip(m.args, _kinds(m))
    )
    return shares and not broadcast


WINDOW = 64
"""Groups a statement looks back over for one to join (bounds the planning time of deep
models; the statements of one layer, or one weight's update, are much closer)."""


def schedule(program: Program) -> tuple[Stmt, ...]:
    """The body in the order it runs: each Map / Reduce moved up to the latest group of
    statements it :func:`joins`, past statements that compute none of its operands.

    Guards keep their order, and an update that could be computed in place in its input
    moves past no guard and no reader of that input (it would be copied in at the end)."""
    in_place = {
        src: dst for src, dst in plan_buffers(program).in_place_updates.items()
    }  # update source -> its input
    groups: list[list[Stmt]] = []
    for s in program.body:
        target = _target(groups, s, in_place) if isinstance(s, (Map, Reduce)) else None
        if target is None:
            groups.append([s])
        else:
            target.append(s)
    return tuple(m for group in groups for m in group)


def _target(groups: list[list[Stmt]], s: Map | Reduce, in_place: dict) -> list[Stmt] | None:
    reads = {v.name for v in s.reads}
    updated = in_place.get(s.out.name)  # the input s is computed into
    for group in groups[: -WINDOW - 1 : -1]:
        if joins(group, s, lambda v: v.name):
            return group
        for t in group:
            if t.out is not None and t.out.name in reads:
                return None  # computes an operand of s
            if updated is not None and (t.aborts or updated in {v.name for v in t.reads}):
                return None
    return None


def fuse_loops(program: Program, slot_of: dict[str, int], body) -> list[Stmt | Fused]:
    """The statements of ``body`` (:func:`schedule`'s order) alone, or as a :class:`Fused`
    group of consecutive ones that :func:`joins` by buffer slot (``slot_of``)."""
    groups: list[list[Stmt]] = []
    for s in body:
        if groups and joins(groups[-1], s, lambda v: slot_of[v.name]):
            groups[-1].append(s)
        else:
            groups.append([s])
    kept = {v.name for v in program.outputs} | {src.name for _, src in program.updates}
    readers: dict[str, list[int]] = {}
    for t in body:
        for v in t.reads:
            readers.setdefault(v.name, []).append(id(t))
    units: list[Stmt | Fused] = []
    for group in groups:
        if len(group) == 1:
            units.append(group[0])
            continue
        inside = {id(m) for m in group}
        stored = tuple(
            not isinstance(m, Map)  # a sum is always written
            or m.out.name in kept
            or any(r not in inside for r in readers.get(m.out.name, ()))
            for m in group
        )
        units.append(Fused(tuple(group), stored, loop_shape(group)))
    return units


# --------------------------------------------------------------------------
# The loop nest of a group


LOOPS = {"flat": FLAT, "rows": ROWS, "cols": COLS}
"""Loop shape -> how its outer range splits in chunks (codegen.llvm.kernels.Range)."""


def _totals(f: Fused) -> list[int]:
    """The members that sum to one number, by position."""
    return [i for i, m in enumerate(f.members) if isinstance(m, Reduce) and m.axis is None]


def _values(f: Fused) -> list:
    """The buffers of the kernel: a sum to one number first (its partial per chunk)."""
    values = [f.members[i].out for i in _totals(f)[:1]]
    for m in f.members:
        values += [m.out, *(v for _, v in m.args)]
    return values


def _symbols(ctx: StepContext, f: Fused) -> list:
    found = {sym for m in f.members for sym in free_scalars(ctx, [m.body], [x for x, _ in m.args])}
    return sorted(found, key=str)


def _split(f: Fused):
    split = LOOPS[f.loop]
    return dataclasses.replace(split, partial=True) if _totals(f) else split


def _key(ctx: StepContext, f: Fused) -> tuple:
    """Two groups with equal keys are computed by one kernel (as kernel_call's keys)."""
    members = tuple(kernel_call(ctx, m)[0] for m in f.members)
    slots = [ctx.slot_of[v.name] for v in _values(f)]
    aliasing = tuple(slots.index(slot) for slot in slots)
    outs = [m.out.name for m in f.members]
    inner = tuple(
        tuple(outs.index(v.name) if v.name in outs[:k] else -1 for _, v in m.args)
        for k, m in enumerate(f.members)
    )
    return ("Fused", f.loop, members, f.stored, aliasing, inner)


class _Nest:
    """The members' values at one element: operands loaded, earlier results reused."""

    def __init__(self, k: Kernel, f: Fused):
        self.k, self.f = k, f
        made: set[str] = set()
        self.ops = []
        for m in f.members:
            self.ops.append(
                Operands(k, [(x, v) for x, v in m.args if v.name not in made], f.domain)
            )
            if isinstance(m, Map):
                made.add(m.out.name)

    def values(self, envs: list[dict]) -> list[ir.Value]:
        """Each member's body at the element whose operands ``envs`` hold."""
        found: dict[str, ir.Value] = {}
        out = []
        for m, env in zip(self.f.members, envs):
            inner = {sym: found[v.name] for sym, v in m.args if v.name in found}
            value = self.k.lower(m.body, {**env, **inner})
            if isinstance(m, Map):
                found[m.out.name] = value
            out.append(value)
        return out

    def store(self, values, at) -> None:
        """The results that are read after the nest, at element ``at``."""
        k = self.k
        for m, value, stored in zip(self.f.members, values, self.f.stored):
            if isinstance(m, Map) and stored:
                store(k.b, k.ty, value, k.ptr[m.out.name], at)

    def add(self, sums: list, values, members: list[int]) -> list:
        return [self.k.b.fadd(s, values[m], flags=REDUCE) for s, m in zip(sums, members)]

    def store_totals(self, sums: list) -> None:
        """The chunk's sums to one number: the first at [0] of its partial (the chunk runner's,
        codegen.llvm.kernels.call_kernel), the others at [chunk] of theirs (``_call``)."""
        k, totals = self.k, _totals(self.f)
        if not totals:
            return
        split = _split(self.f)
        extent = split.extent(k.b, k.ints)
        chunk = k.b.sdiv(k.lo, partial_grain(k.b, extent, split.grain(k.b, k.ints)))
        for n, (m, total) in enumerate(zip(totals, sums)):
            store(k.b, k.ty, total, k.ptr[self.f.members[m].out.name], chunk if n else i64(0))


def _kernel(ctx: StepContext, f: Fused) -> ir.Function:
    """One kernel: at each element of the domain every member in order."""
    k = Kernel(ctx, "fused", f.members[0], 2, _values(f), _symbols(ctx, f), _split(f))
    ctx.notes[k.fn.get_reference()] = "\n".join(_statement_text(m) for m in f.members)
    nest = _Nest(k, f)
    {"flat": _flat, "rows": _rows, "cols": _cols}[f.loop](k, f, nest)
    k.b.ret_void()
    return k.fn


def _flat(k: Kernel, f: Fused, nest: _Nest) -> None:
    """The chunk [lo, hi) of the r*c elements, the sums to one number carried along."""
    totals = _totals(f)

    def element(idx, sums):
        values = nest.values([ops.at_flat(idx) for ops in nest.ops])
        nest.store(values, idx)
        return nest.add(sums, values, totals)

    zero = ir.Constant(k.ty, 0.0)
    nest.store_totals(for_range(k.b, k.hi, element, start=k.lo, init=[zero] * len(totals)))


def _rows(k: Kernel, f: Fused, nest: _Nest) -> None:
    """The chunk [lo, hi) of the rows; sums per row stored after each row."""
    b, cols, totals = k.b, k.ints[1], _totals(f)
    zero = ir.Constant(k.ty, 0.0)
    per_row = [i for i, m in enumerate(f.members) if isinstance(m, Reduce) and m.axis == 1]

    def row(i, carried):
        states = [ops.row(i, cols) for ops in nest.ops]
        start = b.mul(i, cols)

        def col(j, sums):
            values = nest.values([ops.at(st, j) for ops, st in zip(nest.ops, states)])
            nest.store(values, b.add(start, j))
            return nest.add(sums, values, per_row + totals)

        sums = for_range(b, cols, col, init=[zero] * len(per_row) + list(carried))
        for s, m in zip(sums, per_row):
            store(b, k.ty, s, k.ptr[f.members[m].out.name], i)
        return sums[len(per_row) :]

    nest.store_totals(for_range(b, k.hi, row, start=k.lo, init=[zero] * len(totals)))


def _cols(k: Kernel, f: Fused, nest: _Nest) -> None:
    """The chunk [lo, hi) of the columns, every row in order: column sums as out[j] += x."""
    b, ty, (rows, cols) = k.b, k.ty, k.ints
    sums = [k.ptr[m.out.name] if isinstance(m, Reduce) else None for m in f.members]
    zero = ir.Constant(ty, 0.0)
    for out in filter(None, sums):
        for_range(b, k.hi, lambda j, _, out=out: store(b, ty, zero, out, j), start=k.lo)

    def row(i, _):
        states = [ops.row(i, cols) for ops in nest.ops]
        start = b.mul(i, cols)

        def col(j, _):
            values = nest.values([ops.at(st, j) for ops, st in zip(nest.ops, states)])
            nest.store(values, b.add(start, j))
            for out, value in zip(sums, values):
                if out is not None:
                    store(b, ty, b.fadd(load(b, ty, out, j), value, flags=REDUCE), out, j)

        for_range(b, k.hi, col, start=k.lo)

    for_range(b, rows, row)


def _partials(ctx: StepContext) -> ir.Value:
    """An array of MAX_PARTIALS sums in step_impl's frame."""
    sums = _entry_alloca(ctx, ir.ArrayType(ctx.fmt.ftype, MAX_PARTIALS), "sums")
    if ctx.b.block is ctx.b.function.entry_basic_block:  # the alloca went in before its end
        ctx.b.position_at_end(ctx.b.block)
    return sums


def _call(ctx: StepContext, f: Fused, fn: ir.Function) -> None:
    """Call the group's kernel; each sum to one number after the first gets an array of
    partial sums (one per chunk), added here in chunk order into its value."""
    b, ty = ctx.b, ctx.fmt.ftype
    slots = list(dict.fromkeys(ctx.slot_of[v.name] for v in _values(f)))
    partials = {ctx.slot_of[f.members[m].out.name]: _partials(ctx) for m in _totals(f)[1:]}
    pointers = [partials.get(slot, ctx.pointers[slot]) for slot in slots]
    dims = [ctx.dim(d) for d in f.domain]
    call_kernel(ctx, fn, dims, pointers, [ctx.scalars[x] for x in _symbols(ctx, f)])
    if not partials:
        return
    split = _split(f)
    extent = split.extent(b, dims)
    chunks = i64(1)  # an emitted library calls the kernel once over the whole range
    if ctx.threads is not None:
        chunks = _ceil_div(b, extent, partial_grain(b, extent, split.grain(b, dims)))
    for slot, sums in partials.items():
        (total,) = for_range(
            b,
            chunks,
            lambda c, acc, sums=sums: [b.fadd(acc[0], load(b, ty, sums, c))],
            init=[ir.Constant(ty, 0.0)],
        )
        store(b, ty, total, ctx.pointers[slot], i64(0))


def lower_unit(ctx: StepContext, unit: Stmt | Fused) -> None:
    """A statement (codegen.llvm.kernels.lower_statement) or a group: one kernel, shared by
    groups that differ only in buffers and sizes."""
    if not isinstance(unit, Fused):
        lower_statement(ctx, unit)
        return
    key = _key(ctx, unit)
    fn = ctx.kernels.get(key)
    if fn is None:
        fn = ctx.kernels[key] = _kernel(ctx, unit)
    else:
        if "noinline" not in fn.attributes:
            fn.attributes.add("noinline")  # optimized once, called from each group
        ref = fn.get_reference()
        ctx.notes[ref] += "\n" + "\n".join(_statement_text(m) for m in unit.members)
    _call(ctx, unit, fn)
