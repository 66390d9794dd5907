"""codegen.llvm.module: the LLVM module of a program: buffer slots, step_impl, entry points.

Every entry point works on one array of buffer pointers (``T** buffers``):
slot ``s`` holds buffer ``Layout.names[s]``, inputs first, then the buffers of
``plan_buffers`` (an update computed in place shares its input's slot).

    i32 <name>.step_impl(i64* dims, T** buffers, T* scalars)   internal: the program
    i32 <name>(i64* dims, T** buffers, T* scalars)             C entry point
    i32 <name>.py(PyTuple* args, PyTuple* outs, T** buffers, i64* dims, T* scalars)
    i32 <name>.epoch(void** data, i64* ints, T** full, T** last, T* scalars, double* sums)
    i32 <name>.epoch.py(PyTuple* arrays, i64* ints, T** full, T** last, T* scalars, double* sums)

``step_impl`` returns 0, or k when the k-th Guard failed (before any update).
The ``.py`` entry reads the ndarray data pointers straight out of the Python
argument tuples (offsets checked at import), so a call from Python needs no
per-array pointer extraction; ``.epoch.py`` does the same for the epoch. The
epoch entry loops over batches: gathers the rows listed in ``order`` into the
batch buffers, sets the step counter, calls ``step_impl`` and accumulates the
(1, k) ``sums`` outputs weighted by batch rows (into ``sums``, the outputs'
entries one after the other).
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir
import sympy as sp

from codegen.ir import Program, Shape, format_program, plan_buffers
from codegen.llvm.blas import Provider
from codegen.llvm.cpython import C_API_NAMES, OFFSETS, build_fast_entry
from codegen.llvm.jit import host
from codegen.llvm.kernels import StepContext, fuse_gemm_updates, lower_statement
from codegen.llvm.loops import (
    F64,
    I8,
    I32,
    I64,
    PTR,
    element,
    for_range,
    i64,
    imin,
    load,
    store,
)
from codegen.llvm.mathlib import FORMATS, MathLibrary
from codegen.names import llvm_comment, llvm_name

TUPLE_ITEMS, ARRAY_DATA = OFFSETS["tuple_items"], OFFSETS["array_data"]  # checked there


# --------------------------------------------------------------------------
# Buffer slots: the T** array every entry point works on.


@dataclass(frozen=True)
class Layout:
    """Slot ``s`` of the buffer array holds buffer ``names[s]`` (inputs first)."""

    names: tuple[str, ...]
    shapes: tuple[Shape, ...]
    slot_of: dict[str, int]  # value name -> slot
    n_inputs: int
    output_slots: tuple[int, ...]  # distinct slots of the outputs that are not inputs
    copies: tuple[tuple[int, int], ...]  # (source slot, input slot) updates copied at the end


def make_layout(program: Program) -> Layout:
    plan = plan_buffers(program)
    names = [v.name for v in program.inputs]
    shapes = [v.shape for v in program.inputs]
    slot_of = {name: i for i, name in enumerate(names)}
    for value, buffer in plan.buffer.items():
        if value in slot_of:
            continue
        if value in plan.in_place_updates:  # computed straight into the input it updates
            slot_of[value] = slot_of[plan.in_place_updates[value]]
            continue
        if buffer not in names:
            names.append(buffer)
            shapes.append(plan.shapes[buffer])
        slot_of[value] = names.index(buffer)
    inputs = {v.name for v in program.inputs}
    updated = {dst.name for dst, _ in program.updates}
    for dst, src in program.updates:
        if src.name in updated:  # e.g. a swap: the copies would need a snapshot of the old input
            raise NotImplementedError(
                f"update {dst.name} <- {src.name} reads an input that is itself updated"
            )
    outputs = tuple(dict.fromkeys(slot_of[v.name] for v in program.outputs if v.name not in inputs))
    copies = tuple(
        (slot_of[src.name], slot_of[dst.name])
        for dst, src in program.updates
        if src.name not in plan.in_place_updates
    )
    return Layout(tuple(names), tuple(shapes), slot_of, len(program.inputs), outputs, copies)


# --------------------------------------------------------------------------
# Module construction


@dataclass(frozen=True)
class EpochSpec:
    x_slot: int
    y_slot: int
    x_width: int
    y_width: int
    counter: int | None  # index into program.scalars
    sum_slots: tuple[int, ...]
    sum_widths: tuple[int, ...] = ()  # entries of each (1, k) sum; () = all (1, 1)

    def widths(self) -> tuple[int, ...]:
        return self.sum_widths or (1,) * len(self.sum_slots)


# The C symbols generated modules call: the libc routines LLVM lowers llvm.memcpy /
# memmove / memset to, the emitted library's allocator, the Python C API functions of
# the fast entry, and by prefix symgrad's gemm and array symbols and LLVM's intrinsics. A program
# whose entry point had one of these names would define it in its own module and call
# itself instead (tests/codegen/test_llvm_validation.py checks every module's
# declarations against this).
LINKED_SYMBOLS = frozenset({"memcpy", "memmove", "memset", "malloc", "free"}) | C_API_NAMES
LINKED_PREFIXES = ("symgrad_", "llvm.")


def is_linked_symbol(symbol: str) -> bool:
    return symbol in LINKED_SYMBOLS or symbol.startswith(LINKED_PREFIXES)


def check_entry_name(name: str) -> None:
    """Raise ValueError when ``name``'s entry point would shadow a C function the code calls."""
    symbol = llvm_name(name)
    if is_linked_symbol(symbol):
        raise ValueError(
            f"a native program may not be named {symbol!r}: the generated code calls a C "
            f"function of that name (or prefix); choose another name. Received: name={name!r}"
        )


def generate_ir(
    program: Program,
    layout: Layout,
    provider: Provider,
    epoch: EpochSpec | None = None,
    fast_entry: bool = False,
    threaded: bool = False,
) -> str:
    """The module's LLVM IR text; each kernel is preceded by its IR statement as a comment.

    ``fast_entry`` adds ``<name>.fast``, the CPython builtin entry of
    ``codegen.llvm.cpython`` (it calls the Python C API: in-process use only).
    ``threaded``: long loops run their chunks through ``symgrad_parallel_for``
    (``codegen.llvm.pool``, in-process only) on ``<name>.threads`` threads.
    """
    check_entry_name(program.name)
    fmt = FORMATS[program.dtype]
    module = ir.Module(name=llvm_name(program.name))
    module.triple = host().triple
    module.data_layout = host().data_layout
    math = MathLibrary(module, fmt)
    step, notes = _build_step_impl(module, program, layout, fmt, math, provider, threaded)
    _build_c_entry(module, program.name, step)
    _build_py_entry(module, program.name, layout, step)
    if epoch is not None:
        entry = _build_epoch(module, program, epoch, step, fmt)
        _build_epoch_py_entry(module, program.name, layout, epoch, entry)
    if fast_entry and fast_entry_possible(program, layout):
        build_fast_entry(module, program, layout, step, fmt)
    return annotated(module, llvm_comment(format_program(program)), notes)


def annotated(module: ir.Module, head: list[str], notes: dict[str, str]) -> str:
    """``module``'s text after the comment lines ``head``; each function defined in it is
    preceded by its note (``notes``: function name -> the IR statement it computes), as
    comment lines (``codegen.names.llvm_comment``)."""
    lines = list(head)
    for line in str(module).splitlines():
        if line.startswith("define"):
            lines += [
                c for ref, note in notes.items() if f" {ref}(" in line for c in llvm_comment(note)
            ]
        lines.append(line)
    return "\n".join(lines) + "\n"


def fast_entry_possible(program: Program, layout: Layout) -> bool:
    """The fast entry returns exactly the fresh outputs (no input among them, no duplicates)."""
    inputs = {v.name for v in program.inputs}
    names = [v.name for v in program.outputs]
    return not (inputs & set(names)) and len(set(names)) == len(names) == len(layout.output_slots)


def _function(module, name, ret, args, internal=False) -> tuple[ir.Function, ir.IRBuilder]:
    fn = ir.Function(module, ir.FunctionType(ret, args), name=llvm_name(name))
    if internal:
        fn.linkage = "internal"
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def threads_symbol(name: str, what: str = "threads") -> str:
    """The i64 global of a threaded module that holds the thread count of its loops
    (``threads``) or of its GEMM blocks (``gemm_threads``); set after loading."""
    return llvm_name(f"{name}.{what}")


def _build_step_impl(module, program, layout, fmt, math, provider, threaded=False):
    fn, b = _function(module, f"{program.name}.step_impl", I32, [PTR, PTR, PTR], internal=True)
    dims_p, bufs_p, scalars_p = fn.args
    for arg, name in zip(fn.args, ("dims", "buffers", "scalars")):
        arg.name = name
    dims = {
        sym: load(b, I64, dims_p, i64(k), llvm_name(str(sym)))
        for k, sym in enumerate(program.batch)
    }
    scalars = {
        sym: load(b, fmt.ftype, scalars_p, i64(k), llvm_name(str(sym)))
        for k, sym in enumerate(program.scalars)
    }
    scalars.update(
        {sym: b.sitofp(dim, fmt.ftype, name=llvm_name(f"{sym}.float")) for sym, dim in dims.items()}
    )
    pointers = {
        slot: load(b, PTR, bufs_p, i64(slot), llvm_name(name))
        for slot, name in enumerate(layout.names)
    }
    ctx = StepContext(
        module, fmt, math, provider, program.name, b, dims, scalars, layout.slot_of, pointers
    )
    if threaded:
        for what in ("threads", "gemm_threads"):
            count = ir.GlobalVariable(module, I64, threads_symbol(program.name, what))
            count.initializer = i64(1)
            setattr(ctx, what, b.load(count, typ=I64, name=what))
    for stmt in fuse_gemm_updates(program.body, program.outputs, program.updates, layout.slot_of):
        lower_statement(ctx, stmt)
    # updates not computed in place: copied only now, after every guard passed
    memcpy = module.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
    for src, dst in layout.copies:
        rows, cols = layout.shapes[dst]
        nbytes = b.mul(b.mul(ctx.dim(rows), ctx.dim(cols)), i64(fmt.bits // 8))
        b.call(memcpy, [pointers[dst], pointers[src], nbytes, ir.Constant(ir.IntType(1), 0)])
    b.ret(ir.Constant(I32, 0))
    return fn, ctx.notes


def _build_c_entry(module, name, step) -> None:
    fn, b = _function(module, name, I32, [PTR, PTR, PTR])
    b.ret(b.call(step, fn.args))


def _py_item(b, tuple_ptr, index):
    """The data pointer of ndarray ``tuple[index]``."""
    obj = b.load(b.gep(tuple_ptr, [i64(TUPLE_ITEMS + 8 * index)], source_etype=I8), typ=PTR)
    return b.load(b.gep(obj, [i64(ARRAY_DATA)], source_etype=I8), typ=PTR)


def _build_py_entry(module, name, layout, step) -> None:
    fn, b = _function(module, f"{name}.py", I32, [PTR, PTR, PTR, PTR, PTR])
    args, outs, bufs, dims, scalars = fn.args
    for i in range(layout.n_inputs):
        store(b, PTR, _py_item(b, args, i), bufs, i64(i))
    for k, slot in enumerate(layout.output_slots):
        store(b, PTR, _py_item(b, outs, k), bufs, i64(slot))
    b.ret(b.call(step, [dims, bufs, scalars]))


def _build_epoch(module, program, spec: EpochSpec, step, fmt, internal=False) -> ir.Function:
    """For each batch: gather rows by ``order``, run the step, accumulate the sums.

    ``data`` = [X, Y, order]; ``ints`` = [rows, batch size, t0, out: steps run, out: status].
    ``internal``: called only from within the module (the emitted library's epoch export).
    """
    fn, b = _function(module, f"{program.name}.epoch", I32, [PTR] * 6, internal=internal)
    data, ints, full, last, scalars, sums = fn.args
    for arg, name in zip(fn.args, ("data", "ints", "full", "last", "scalars", "sums")):
        arg.name = name
    ty = fmt.ftype
    x_all, y_all, order = (
        load(b, PTR, data, i64(k), name) for k, name in enumerate(("X", "Y", "order"))
    )
    rows, batch, t0 = (
        load(b, I64, ints, i64(k), name) for k, name in enumerate(("rows", "batch", "t0"))
    )
    steps = b.sdiv(b.add(rows, b.sub(batch, i64(1))), batch, name="steps")
    dims = b.alloca(I64, name="dims")
    fail = fn.append_basic_block("failed")

    def one_step(s, _):
        start = b.mul(s, batch)
        n = imin(b, batch, b.sub(rows, start))
        bufs = b.select(b.icmp_signed("==", n, batch), full, last)  # the last batch may be smaller
        for whole, slot, width in (
            (x_all, spec.x_slot, spec.x_width),
            (y_all, spec.y_slot, spec.y_width),
        ):
            _gather(b, fmt, whole, load(b, PTR, bufs, i64(slot)), width, order, start, n)
        b.store(n, dims)
        if spec.counter is not None:  # 1-based step count, e.g. Adam's t
            store(b, ty, b.sitofp(b.add(b.add(t0, s), i64(1)), ty), scalars, i64(spec.counter))
        status = b.call(step, [dims, bufs, scalars])
        ok, failed_here = fn.append_basic_block("step.ok"), fn.append_basic_block("step.failed")
        b.cbranch(b.icmp_signed("==", status, ir.Constant(I32, 0)), ok, failed_here)
        b.position_at_end(failed_here)
        store(b, I64, s, ints, i64(3))
        store(b, I64, b.sext(status, I64), ints, i64(4))
        b.branch(fail)
        b.position_at_end(ok)
        weight, at = b.sitofp(n, F64), 0
        for slot, width in zip(spec.sum_slots, spec.widths()):  # sums[at + j] += n * value[j]
            out = load(b, PTR, bufs, i64(slot))

            def add(j, k, out=out):  # sums[k] += n * out[j]
                value = load(b, ty, out, j)
                value = value if fmt.bits == 64 else b.fpext(value, F64)
                store(b, F64, b.fadd(load(b, F64, sums, k), b.fmul(weight, value)), sums, k)

            if width == 1:
                add(i64(0), i64(at))
            else:  # a loop, not width copies of the body: AUC's rows have 200 entries
                for_range(b, i64(width), lambda j, _, at=at, add=add: add(j, b.add(j, i64(at))))
            at += width

    for_range(b, steps, one_step)
    store(b, I64, steps, ints, i64(3))
    store(b, I64, i64(0), ints, i64(4))
    b.ret(ir.Constant(I32, 0))
    b.position_at_end(fail)
    b.ret(ir.Constant(I32, 1))
    return fn


def epoch_fixed_slots(layout: Layout, spec: EpochSpec) -> list[int]:
    """The input slots an epoch call passes as they are: every input but X and Y."""
    return [s for s in range(layout.n_inputs) if s not in (spec.x_slot, spec.y_slot)]


def _build_epoch_py_entry(module, name, layout, spec: EpochSpec, epoch) -> None:
    """``i32 <name>.epoch.py(PyTuple* arrays, i64* ints, T** full, T** last, T* scalars,
    double* sums)``: the epoch entry, the data pointers read here out of ``arrays`` =
    (X, Y, order, *the fixed inputs in slot order), ndarrays the caller checked, as the
    step's ``.py`` entry reads its arguments (one ``ndarray.ctypes`` per array in Python
    cost more than the whole call's other checks)."""
    fn, b = _function(module, f"{name}.epoch.py", I32, [PTR] * 6)
    arrays, ints, full, last, scalars, sums = fn.args
    data = b.alloca(ir.ArrayType(PTR, 3), name="data")
    data.type = PTR  # an opaque pointer, as every other in the module
    for k in range(3):  # X, Y, order
        store(b, PTR, _py_item(b, arrays, k), data, i64(k))
    for k, slot in enumerate(epoch_fixed_slots(layout, spec), 3):
        pointer = _py_item(b, arrays, k)
        store(b, PTR, pointer, full, i64(slot))
        store(b, PTR, pointer, last, i64(slot))
    b.ret(b.call(epoch, [data, ints, full, last, scalars, sums]))


def _gather(b, fmt, whole, part, width: int, order, start, n) -> None:
    """part[r, :] = whole[order[start + r], :] for r < n (rows of ``width`` elements).

    One ``llvm.memcpy`` of a constant size per row: LLVM cannot prove that
    ``whole`` and ``part`` do not overlap, so an element loop stays scalar
    (64 loads and stores per digits row, about 8% of a digits step).
    """
    memcpy = b.module.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
    row_bytes, volatile = i64(width * fmt.bits // 8), ir.Constant(ir.IntType(1), 0)

    def row(r, _):
        src = element(b, fmt.ftype, whole, b.mul(load(b, I64, order, b.add(start, r)), i64(width)))
        dst = element(b, fmt.ftype, part, b.mul(r, i64(width)))
        b.call(memcpy, [dst, src, row_bytes, volatile])

    for_range(b, n, row)


def epoch_spec(program: Program, layout: Layout, x_input, y_input, sums, counter) -> EpochSpec:
    inputs = {v.name: v for v in program.inputs}
    for role, name in (("x_input", x_input), ("y_input", y_input)):
        if name not in inputs:
            raise ValueError(
                f"{role}={name!r} is not an input of {program.name}; inputs: {list(inputs)}"
            )
    n = inputs[x_input].shape[0]
    if tuple(program.batch) != (n,):
        raise ValueError(
            f"the epoch needs exactly one batch symbol, the rows of {x_input}; program.batch={program.batch}"
        )
    widths = []
    for name in (x_input, y_input):
        rows, cols = inputs[name].shape
        if rows != n or not sp.sympify(cols).is_Integer:
            raise ValueError(
                f"{name} must have shape ({n}, integer); received {tuple(inputs[name].shape)}"
            )
        widths.append(int(cols))
    for v in program.inputs:
        if v.name not in (x_input, y_input) and any(sp.sympify(d).has(n) for d in v.shape):
            raise ValueError(
                f"input {v.name}{tuple(v.shape)} depends on the batch size; only {x_input}, {y_input} may"
            )
    outputs = {v.name: v for v in program.outputs}
    for name in sums:
        shape = tuple(sp.sympify(d) for d in outputs[name].shape) if name in outputs else ()
        if len(shape) != 2 or shape[0] != 1 or not shape[1].is_Integer:
            raise ValueError(
                f"sums entry {name!r} must be a (1, k) output of {program.name}; outputs: {list(outputs)}"
            )
    sum_widths = tuple(int(outputs[name].shape[1]) for name in sums)
    scalar_names = [str(s) for s in program.scalars]
    if counter is not None and counter not in scalar_names:
        raise ValueError(
            f"counter={counter!r} is not a scalar of {program.name} (scalars: {scalar_names}); pass counter=None"
        )
    return EpochSpec(
        layout.slot_of[x_input],
        layout.slot_of[y_input],
        widths[0],
        widths[1],
        None if counter is None else scalar_names.index(counter),
        tuple(layout.slot_of[name] for name in sums),
        sum_widths if any(w != 1 for w in sum_widths) else (),
    )
