"""codegen.llvm.emit: IR programs as a standalone native library (LLVM IR, object, C header).

One LLVM module holds any number of programs of one dtype. Each program keeps the
``step_impl`` that ``codegen.llvm.module`` builds for the JIT (same kernels, same
buffer slots, same guards) and gets two exported C functions around it::

    size_t  NAME_workspace_size(int64_t n, ...);
    int32_t NAME(int64_t n, ..., const T *input, ..., T *updated, ..., T scalar, ...,
                 T *output, ..., void *workspace);

Arguments come in the program's order: batch sizes (``program.batch``), the input
arrays (``program.inputs``; the ones ``program.updates`` writes are not ``const``),
the scalars, one caller-allocated array per distinct output, then the workspace:
scratch of ``NAME_workspace_size(...)`` bytes holding the planned work buffers
(64-byte aligned offsets), or NULL to have the call ``malloc`` and ``free`` it. The
return value is ``step_impl``'s: 0, or k when the k-th guard failed (nothing was
updated); or, checked before anything is read, one of ``STATUS``: -1 when the
workspace could not be allocated, -2 for a negative batch size or one whose
arrays overflow INT64_MAX bytes (``NAME_workspace_size`` then returns SIZE_MAX),
-3 for a NULL array. No global state: calls with distinct workspaces may run
concurrently. An ``EpochFunction`` adds a whole-epoch loop over one training step
(exported with its workspace query), declared in the header with its contract.

Matrix products use the generated loop nest of ``codegen.llvm.blas`` (provider
``generated``), so the library needs nothing but libc (``malloc``, ``free``,
``memcpy``): no BLAS, no Python.

    >>> text = library_ir([CFunction("model_step", program)])    # doctest: +SKIP
    >>> obj = object_code(text, cpu="generic")                     # doctest: +SKIP
    >>> link_shared(obj, "libmodel.so")                            # doctest: +SKIP
    >>> print(c_header("model", [CFunction("model_step", program)]))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass, field

import llvmlite.binding as llvm
import llvmlite.ir as ir
import sympy as sp

from codegen.backends import LLVMBackend
from codegen.ir import Program, format_program
from codegen.llvm.blas import GENERATED
from codegen.llvm.jit import host, new_target_machine, optimize, parsed
from codegen.llvm.kernels import lower_dim
from codegen.llvm.loops import F64, I8, I32, I64, PTR, for_range, i64, imin, load, store
from codegen.llvm.mathlib import FORMATS, MathLibrary
from codegen.llvm.module import (
    Layout,
    _build_epoch,
    _build_step_impl,
    annotated,
    check_entry_name,
    epoch_spec,
    make_layout,
)
from codegen.llvm.targets import WASM_LD, Arch, target_machine, tool
from codegen.names import (
    LLVM_NAME_LIMIT,
    c_comment,
    c_identifier,
    c_parameter,
    llvm_comment,
    llvm_name,
)

# What every exported function returns besides 0 (success) and k > 0 (the k-th guard failed);
# the header defines each as PREFIX_STATUS_<NAME>.
STATUS = {"no_memory": -1, "bad_batch": -2, "null_argument": -3, "batch_too_large": -4}
# And what an epoch function (``EpochFunction``) returns when an entry of its order is not a row.
EPOCH_STATUS = {"bad_order": -5}
ALIGN = 64  # bytes: every work buffer starts on a cache line
C_TYPES = {"float64": "double", "float32": "float"}
CPUS = LLVMBackend.cpus


@dataclass(frozen=True)
class CFunction:
    """``program`` exported under the C name ``name``.

    ``doc`` is its comment in the header; ``notes`` maps an input, scalar or output
    name to a remark shown next to that argument (``"Keras path dense/kernel"``).
    """

    name: str
    program: Program
    doc: str = ""
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EpochFunction:
    """A whole epoch of the training step ``step`` (a ``CFunction``'s name) exported as ``name``:
    the batches gathered in native code by an order of rows the caller gives::

        size_t  NAME_workspace_size(int64_t batch_size);
        int32_t NAME(int64_t rows, int64_t batch_size, const T *X, const T *Y,
                     const int64_t *order, T *other_input, ..., T scalar, ...,
                     int64_t steps_before, double *loss, int64_t *steps, void *workspace);

    Step k (0-based) trains on the rows ``order[k * batch_size ...]`` (the last batch
    takes the rest) with the counter scalar (``counter``, e.g. Adam's ``t``; not an
    argument) at ``steps_before + k + 1``. ``*steps``: the steps completed; ``*loss``:
    the mean over the rows they took of the ``loss`` output (a (1, 1) output). Returns 0,
    the failed step's guard status k > 0 (the steps before it stay applied, nothing of it
    is), or before anything is written: ``STATUS["null_argument"]`` for a NULL array,
    ``STATUS["bad_batch"]`` for rows < 0 or batch_size < 1 (or a workspace size that
    overflows), ``EPOCH_STATUS["bad_order"]`` when an entry of ``order`` is not in
    [0, rows), ``STATUS["no_memory"]`` for a NULL workspace without an allocator (in the
    static variant: ``STATUS["batch_too_large"]`` when the arena is too small). The
    workspace holds the batch of X and Y, the step's outputs and its work buffers.
    ``doc``: its comment in the header, before the contract ``c_header`` states.
    """

    name: str
    step: str
    x_input: str = "X"
    y_input: str = "Y"
    loss: str = "loss"
    counter: str | None = "t"
    doc: str = ""


# --------------------------------------------------------------------------
# The LLVM module


@dataclass(frozen=True)
class Scratch:
    """Where a call finds its scratch when its workspace argument is NULL.

    ``malloc``: allocated and freed by the call (hosted targets). Otherwise no
    allocator is used: with ``arena_bytes`` a static arena of that many bytes
    (sized at emission for ``max_batch`` rows; a call that needs more returns
    ``STATUS["batch_too_large"]``), without it the call returns ``STATUS["no_memory"]``.
    ``size_bits``: the width of ``size_t`` on the target.
    """

    malloc: bool = True
    max_batch: int | None = None
    arena_bytes: int = 0
    size_bits: int = 64


def library_ir(
    functions: list[CFunction],
    *,
    cpu: str = "host",
    arch: Arch | None = None,
    max_batch: int | None = None,
    epochs: tuple[EpochFunction, ...] = (),
) -> str:
    """The module's LLVM IR text: deterministic; each kernel preceded by its IR statement.

    ``arch``: another CPU (``codegen.llvm.targets.TRIPLES``; default this machine).
    ``max_batch``: the static variant, which needs no allocator: a NULL workspace
    means a static arena sized for batches of up to ``max_batch`` rows, of every
    function and epoch function (``arena_bytes``).
    ``epochs``: whole-epoch loops over some of the functions (``EpochFunction``).
    """
    _check_functions(functions)
    if epochs:  # their names too: C identifiers, distinct from every other
        _check_functions([*functions, *(CFunction(e.name, functions[0].program) for e in epochs)])
    for name in [*(f.name for f in functions), *(e.name for e in epochs)]:
        check_entry_name(name)
    fmt = FORMATS[functions[0].program.dtype]
    module = ir.Module(name=llvm_name(functions[0].name))
    machine = _target_machine(cpu) if arch is None else target_machine(arch)
    module.triple = host().triple if arch is None else arch.triple
    module.data_layout = str(machine.target_data)
    if arch is not None and arch.abi:  # so the .ll compiles for the same ABI with llc as well
        module.add_named_metadata("llvm.module.flags", [I32(1), "target-abi", arch.abi])
    math = MathLibrary(module, fmt)  # shared: each math function is defined once
    if arch is not None and fmt.name in arch.no_sqrt:
        math.define_libm_sqrt()
    programs = [dataclasses.replace(f.program, name=f.name) for f in functions]
    layouts = [make_layout(p) for p in programs]
    scratch = _scratch(functions, epochs, arch, max_batch)
    arena = _arena(module, scratch)
    notes: dict[str, str] = {}
    steps = {}
    for program, layout in zip(programs, layouts):
        step, kernel_notes = _build_step_impl(module, program, layout, fmt, math, GENERATED)
        steps[program.name] = (program, layout, step)
        notes.update(kernel_notes)
        size = _build_workspace_size(module, program, layout, scratch.size_bits)
        _build_entry(module, program, layout, step, size, fmt, scratch, arena)
    for epoch in epochs:
        if epoch.step not in steps:
            raise ValueError(
                f"epoch {epoch.name!r} loops {epoch.step!r}, which is not a function of the "
                f"library: {list(steps)}"
            )
        _build_epoch_entry(module, epoch, *steps[epoch.step], fmt, scratch, arena)
    lines = llvm_comment("symgrad native library: " + ", ".join(f.name for f in functions))
    for f in functions:
        lines += llvm_comment(format_program(dataclasses.replace(f.program, name=f.name)))
    return annotated(module, lines, notes)


def _check_functions(functions: list[CFunction]) -> None:
    if not functions:
        raise ValueError("a native library needs at least one function")
    dtypes = {f.program.dtype for f in functions}
    if len(dtypes) != 1:
        raise ValueError(f"all programs of a library must share one dtype; received {dtypes}")
    names = [f.name for f in functions]
    for name in names:
        size_fn = f"{name}_workspace_size"
        if not re.fullmatch(r"[A-Za-z_]\w*", name, re.ASCII) or llvm_name(size_fn) != size_fn:
            raise ValueError(
                f"C function names must be ASCII C identifiers of at most "
                f"{LLVM_NAME_LIMIT - len('_workspace_size')} characters; Received: {name!r}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"function names must be unique; received {names}")


def _scratch(functions, epochs, arch: Arch | None, max_batch: int | None) -> Scratch:
    hosted = arch is None or arch.hosted
    bits = 64 if arch is None else arch.pointer_bits
    if max_batch is None:
        return Scratch(malloc=hosted, size_bits=bits)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer; Received: max_batch={max_batch!r}")
    arena = arena_bytes(functions, max_batch, epochs)
    if arena >= 2 ** (bits - 1):
        raise ValueError(
            f"a static arena for max_batch={max_batch} rows needs {arena} bytes, "
            f"more than a {bits}-bit target can address"
        )
    return Scratch(malloc=False, max_batch=max_batch, arena_bytes=arena, size_bits=bits)


def arena_bytes(
    functions: list[CFunction], max_batch: int, epochs: tuple[EpochFunction, ...] = ()
) -> int:
    """The static arena of the library of ``functions`` and ``epochs`` for batches of up to
    ``max_batch`` rows: the largest workspace any of them needs (an epoch's holds its batch
    of X and Y and the step's outputs too)."""
    programs = {f.name: dataclasses.replace(f.program, name=f.name) for f in functions}
    layouts = {name: make_layout(p) for name, p in programs.items()}
    sizes = [workspace_bytes(programs[n], layouts[n], max_batch) for n in programs]
    for e in epochs:
        program, layout = programs[e.step], layouts[e.step]
        slots = epoch_slots(program, layout, e)
        sizes.append(workspace_bytes(program, layout, max_batch, slots))
    return max(sizes)


def workspace_bytes(program: Program, layout: Layout, rows: int, slots=None) -> int:
    """What ``NAME_workspace_size(rows)`` returns (the programs' batch symbols all = rows);
    ``slots``: the buffer slots the workspace holds (default ``_work_slots``)."""
    itemsize = FORMATS[program.dtype].bits // 8
    dims = {sym: rows for sym in program.batch}
    total = 0
    for slot in _work_slots(program, layout) if slots is None else slots:
        r, c = (int(sp.sympify(d).subs(dims)) for d in layout.shapes[slot])
        total += -(-r * c * itemsize // ALIGN) * ALIGN
    return total


def _arena(module: ir.Module, scratch: Scratch):
    """The static arena (zero-initialized, so it costs no space in the image), or None."""
    if not scratch.arena_bytes:
        return None
    ty = ir.ArrayType(I8, scratch.arena_bytes)
    arena = ir.GlobalVariable(module, ty, name="symgrad.arena")
    arena.linkage = "internal"
    arena.align = ALIGN
    arena.initializer = ir.Constant(ty, None)
    return arena


def _work_slots(program: Program, layout: Layout) -> list[int]:
    """Buffer slots the workspace holds: neither inputs nor outputs."""
    outside = set(range(layout.n_inputs)) | set(layout.output_slots)
    return [s for s in range(len(layout.names)) if s not in outside]


def _slot_bytes(b: ir.IRBuilder, dims: dict, layout: Layout, slot: int, itemsize: int):
    """Bytes of the buffer in ``slot``, rounded up to ``ALIGN``."""
    rows, cols = (lower_dim(b, dims, sp.sympify(d)) for d in layout.shapes[slot])
    nbytes = b.mul(b.mul(rows, cols), i64(itemsize))
    return b.and_(b.add(nbytes, i64(ALIGN - 1)), i64(-ALIGN))


class _CheckedSizes:
    """Sizes in bytes computed with overflow checks: ``bad`` is set by a negative size or
    a product or sum beyond INT64_MAX (the call then returns ``STATUS["bad_batch"]``)."""

    def __init__(self, b: ir.IRBuilder, dims: dict, narrow: bool = False):
        self.b, self.dims, self.narrow = b, dims, narrow
        self.bad = ir.Constant(ir.IntType(1), 0)
        for value in dims.values():
            self.flag(b.icmp_signed("<", value, i64(0)))

    def flag(self, condition) -> None:
        self.bad = self.b.or_(self.bad, condition)

    def op(self, method, x, y):
        if self.narrow and method == self.b.smul_with_overflow:
            return self._narrow_mul(x, y)
        result = method(x, y)
        self.flag(self.b.extract_value(result, 1))
        return self.b.extract_value(result, 0)

    def _narrow_mul(self, x, y):
        """x * y for x, y >= 0 without the 128-bit multiply that an i64 overflow check costs
        on a 32-bit target: flagged when a factor reaches 2**31 (exact below 2**62 bytes)."""
        for v in (x, y):
            self.flag(self.b.icmp_unsigned(">=", v, i64(2**31)))
        return self.b.mul(x, y)

    def dim(self, expr) -> ir.Value:
        """``lower_dim`` with every + and * checked; the result checked for >= 0."""
        expr = sp.sympify(expr)
        if expr.is_Integer or (expr.is_Symbol and expr in self.dims):
            return lower_dim(self.b, self.dims, expr)
        if isinstance(expr, (sp.Add, sp.Mul)):
            method = self.b.sadd_with_overflow if expr.is_Add else self.b.smul_with_overflow
            parts = [self.dim(a) for a in expr.args]
            acc = parts[0]
            for part in parts[1:]:
                acc = self.op(method, acc, part)
            self.flag(self.b.icmp_signed("<", acc, i64(0)))
            return acc
        return lower_dim(self.b, self.dims, expr)  # raises: an unsupported shape expression

    def slot_bytes(self, shape, itemsize: int) -> ir.Value:
        """Bytes of an array of ``shape``, rounded up to ``ALIGN``."""
        rows, cols = (self.dim(d) for d in shape)
        nbytes = self.op(
            self.b.smul_with_overflow, self.op(self.b.smul_with_overflow, rows, cols), i64(itemsize)
        )
        padded = self.op(self.b.sadd_with_overflow, nbytes, i64(ALIGN - 1))
        return self.b.and_(padded, i64(-ALIGN))


def _build_workspace_size(
    module, program: Program, layout: Layout, size_bits: int, name=None, slots=None
):
    """``NAME_workspace_size(n...)``: the bytes of the work buffers, or SIZE_MAX when the
    batch sizes are negative or make any array of the call overflow INT64_MAX bytes (or,
    on a 32-bit target, the workspace SIZE_MAX bytes or more). Returns the internal i64
    version the entry calls (-1 for those batch sizes). ``name`` (default the program's)
    and ``slots``, the buffer slots the workspace holds (default ``_work_slots``): an
    epoch function's query."""
    name = name or program.name
    args = [I64] * len(program.batch)
    fn = ir.Function(module, ir.FunctionType(I64, args), f"{name}.workspace_bytes")
    fn.linkage = "internal"
    exported = ir.Function(
        module,
        ir.FunctionType(ir.IntType(size_bits), args),
        llvm_name(f"{name}_workspace_size"),
    )
    for arg, sym in [*zip(fn.args, program.batch), *zip(exported.args, program.batch)]:
        arg.name = llvm_name(str(sym))
    e = ir.IRBuilder(exported.append_basic_block("entry"))
    bytes_ = e.call(fn, list(exported.args), name="bytes")
    e.ret(bytes_ if size_bits == 64 else e.trunc(bytes_, ir.IntType(size_bits)))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    dims = dict(zip(program.batch, fn.args))
    itemsize = FORMATS[program.dtype].bits // 8
    sizes = _CheckedSizes(b, dims, narrow=size_bits < 64)
    work = set(_work_slots(program, layout) if slots is None else slots)
    total = i64(0)
    for slot, shape in enumerate(layout.shapes):  # every array of the call must be sizable
        size = sizes.slot_bytes(shape, itemsize)
        if slot in work:
            total = sizes.op(b.sadd_with_overflow, total, size)
    if size_bits < 64:  # SIZE_MAX is the error value: sizes from SIZE_MAX up are errors
        sizes.flag(b.icmp_signed(">=", total, i64(2**size_bits - 1)))
    b.ret(b.select(sizes.bad, i64(-1), total))
    return fn


def _distinct_outputs(program: Program) -> list:
    return list({v.name: v for v in program.outputs}.values())


def _build_entry(module, program: Program, layout: Layout, step, size_fn, fmt, scratch, arena):
    """The exported function: fills the slot array from its arguments, runs ``step_impl``."""
    ty, outputs = fmt.ftype, _distinct_outputs(program)
    groups = [
        [(str(s), I64) for s in program.batch],
        [(v.name, PTR) for v in program.inputs],
        [(str(s), ty) for s in program.scalars],
        [(v.name, PTR) for v in outputs],
        [("workspace", PTR)],
    ]
    signature = ir.FunctionType(I32, [t for g in groups for _, t in g])
    fn = ir.Function(module, signature, llvm_name(program.name))
    args, start = [], 0
    for group in groups:  # the arguments, named and split by role
        args.append(fn.args[start : start + len(group)])
        for arg, (name, _) in zip(args[-1], group):
            arg.name = llvm_name(name)
        start += len(group)
    batch, arrays, scalar_args, out_args, (workspace,) = args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    null = ir.Constant(PTR, None)
    missing = ir.Constant(ir.IntType(1), 0)
    for pointer in [*arrays, *out_args]:
        missing = b.or_(missing, b.icmp_unsigned("==", pointer, null))
    _return_if(b, fn, missing, STATUS["null_argument"], "null_argument")
    size = b.call(size_fn, list(batch), name="workspace_bytes")
    _return_if(b, fn, b.icmp_signed("<", size, i64(0)), STATUS["bad_batch"], "bad_batch")
    dims = _array(b, I64, list(batch), "dims")
    scalars = _array(b, ty, list(scalar_args), "scalars")
    slots = b.alloca(PTR, size=max(1, len(layout.names)), name="buffers")
    for k, value in enumerate(arrays):
        store(b, PTR, value, slots, i64(k))
    inputs = dict(zip((v.name for v in program.inputs), arrays))
    for v, out in zip(outputs, out_args):
        if v.name not in inputs:
            store(b, PTR, out, slots, i64(layout.slot_of[v.name]))
    work = _workspace(b, fn, size, workspace, scratch, arena)
    dim_values = dict(zip(program.batch, batch))
    itemsize = fmt.bits // 8
    offset = i64(0)
    for slot in _work_slots(program, layout):  # each work buffer at its offset
        store(b, PTR, b.gep(work, [offset], source_etype=I8), slots, i64(slot))
        offset = b.add(offset, _slot_bytes(b, dim_values, layout, slot, itemsize))
    memcpy = module.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
    for v, out in zip(outputs, out_args):
        if v.name in inputs:  # an input returned as it was before the updates
            rows, cols = (lower_dim(b, dim_values, sp.sympify(d)) for d in v.shape)
            nbytes = b.mul(b.mul(rows, cols), i64(itemsize))
            b.call(memcpy, [out, inputs[v.name], nbytes, ir.Constant(ir.IntType(1), 0)])
    status = b.call(step, [dims, slots, scalars], name="status")
    _release(b, fn, workspace, work, scratch)
    b.ret(status)


def _release(b: ir.IRBuilder, fn, given_ptr, work, scratch: Scratch) -> None:
    """Free the scratch ``_workspace`` took from malloc (when the caller passed none)."""
    if not scratch.malloc:
        return
    release, done = fn.append_basic_block("release"), fn.append_basic_block("done")
    b.cbranch(b.icmp_unsigned("==", given_ptr, ir.Constant(PTR, None)), release, done)
    b.position_at_end(release)
    b.call(_declare(fn.module, "free", ir.FunctionType(ir.VoidType(), [PTR])), [work])
    b.branch(done)
    b.position_at_end(done)


def epoch_fixed_inputs(program: Program, epoch: EpochFunction) -> list:
    """The inputs an epoch function takes as they are (weights, slots): all but X and Y."""
    return [v for v in program.inputs if v.name not in (epoch.x_input, epoch.y_input)]


def epoch_counter(program: Program, epoch: EpochFunction) -> str | None:
    """The step-counter scalar the epoch sets itself (not an argument), if the step has it."""
    return epoch.counter if epoch.counter in {str(s) for s in program.scalars} else None


def epoch_slots(program: Program, layout: Layout, epoch: EpochFunction) -> list[int]:
    """Buffer slots an epoch function's workspace holds: the batch of X and Y, the step's
    outputs and work buffers (everything but the fixed inputs)."""
    fixed = {layout.slot_of[v.name] for v in epoch_fixed_inputs(program, epoch)}
    return [s for s in range(len(layout.names)) if s not in fixed]


def _build_epoch_entry(module, epoch: EpochFunction, program, layout, step, fmt, scratch, arena):
    """The exported epoch function (``EpochFunction``) around ``module._build_epoch``.

    One set of buffers serves every batch: sized for ``batch_size`` rows, they hold the
    smaller last batch too (its arrays are the first rows of theirs)."""
    counter = epoch_counter(program, epoch)
    spec = epoch_spec(program, layout, epoch.x_input, epoch.y_input, (epoch.loss,), counter)
    inner = _build_epoch(module, program, spec, step, fmt, internal=True)
    batch_inputs = (epoch.x_input, epoch.y_input)
    fixed = epoch_fixed_inputs(program, epoch)
    in_workspace = epoch_slots(program, layout, epoch)
    size_fn = _build_workspace_size(
        module, program, layout, scratch.size_bits, name=epoch.name, slots=in_workspace
    )
    scalars = [str(s) for s in program.scalars if str(s) != counter]
    ty = fmt.ftype
    groups = [
        [("rows", I64), ("batch_size", I64)],
        [(name, PTR) for name in (*batch_inputs, "order")],
        [(v.name, PTR) for v in fixed],
        [(name, ty) for name in scalars],
        [("steps_before", I64), (epoch.loss, PTR), ("steps", PTR), ("workspace", PTR)],
    ]
    fn = ir.Function(
        module, ir.FunctionType(I32, [t for g in groups for _, t in g]), llvm_name(epoch.name)
    )
    for arg, (name, _) in zip(fn.args, [a for g in groups for a in g]):
        arg.name = llvm_name(name)
    rows, batch, x, y, order, *rest = fn.args
    fixed_args, scalar_args = rest[: len(fixed)], rest[len(fixed) : len(fixed) + len(scalars)]
    steps_before, loss_out, steps_out, workspace = rest[len(fixed) + len(scalars) :]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    null = ir.Constant(PTR, None)
    missing = ir.Constant(ir.IntType(1), 0)
    for pointer in (x, y, order, *fixed_args, loss_out, steps_out):
        missing = b.or_(missing, b.icmp_unsigned("==", pointer, null))
    _return_if(b, fn, missing, STATUS["null_argument"], "null_argument")
    size = b.call(size_fn, [batch], name="workspace_bytes")
    bad = b.or_(b.icmp_signed("<", rows, i64(0)), b.icmp_signed("<", batch, i64(1)))
    _return_if(
        b, fn, b.or_(bad, b.icmp_signed("<", size, i64(0))), STATUS["bad_batch"], "bad_batch"
    )
    outside = b.alloca(ir.IntType(1), name="outside")  # an order entry outside [0, rows)
    b.store(ir.Constant(ir.IntType(1), 0), outside)

    def check(i, _):
        wrong = b.icmp_unsigned(">=", load(b, I64, order, i), rows)
        b.store(b.or_(b.load(outside), wrong), outside)

    for_range(b, rows, check)
    _return_if(b, fn, b.load(outside), EPOCH_STATUS["bad_order"], "bad_order")
    work = _workspace(b, fn, size, workspace, scratch, arena)
    slots = b.alloca(PTR, size=max(1, len(layout.names)), name="buffers")
    for v, value in zip(fixed, fixed_args):
        store(b, PTR, value, slots, i64(layout.slot_of[v.name]))
    dims = dict(zip(program.batch, [batch]))
    offset = i64(0)
    for slot in in_workspace:  # the batches, outputs and work buffers at their offsets
        store(b, PTR, b.gep(work, [offset], source_etype=I8), slots, i64(slot))
        offset = b.add(offset, _slot_bytes(b, dims, layout, slot, fmt.bits // 8))
    given = dict(zip(scalars, scalar_args))
    zero = ir.Constant(ty, 0.0)  # the counter's entry: set before each step
    scalar_array = _array(b, ty, [given.get(str(s), zero) for s in program.scalars], "scalars")
    data = _array(b, PTR, [x, y, order], "data")
    ints = _array(b, I64, [rows, batch, steps_before, i64(0), i64(0)], "ints")
    sums = _array(b, F64, [ir.Constant(F64, 0.0)], "sums")
    b.call(inner, [data, ints, slots, slots, scalar_array, sums])
    done = load(b, I64, ints, i64(3), "done")
    store(b, I64, done, steps_out, i64(0))
    covered = b.sitofp(imin(b, b.mul(done, batch), rows), F64, name="covered")
    mean = b.fdiv(load(b, F64, sums, i64(0)), covered)
    has_rows = b.fcmp_ordered(">", covered, ir.Constant(F64, 0.0))
    store(b, F64, b.select(has_rows, mean, ir.Constant(F64, 0.0)), loss_out, i64(0))
    status = b.trunc(load(b, I64, ints, i64(4)), I32, name="status")
    _release(b, fn, workspace, work, scratch)
    b.ret(status)


def _array(b: ir.IRBuilder, ty: ir.Type, values: list, name: str) -> ir.Value:
    """A stack array holding ``values``."""
    array = b.alloca(ty, size=max(1, len(values)), name=name)
    for k, value in enumerate(values):
        store(b, ty, value, array, i64(k))
    return array


def _return_if(b: ir.IRBuilder, fn, condition, status: int, name: str) -> None:
    """Return ``status`` when ``condition`` holds; continue in a new block otherwise."""
    fail, ok = fn.append_basic_block(f"{name}.fail"), fn.append_basic_block(f"{name}.ok")
    b.cbranch(condition, fail, ok)
    b.position_at_end(fail)
    b.ret(ir.Constant(I32, status))
    b.position_at_end(ok)


def _workspace(b: ir.IRBuilder, fn, size, given_ptr, scratch: Scratch, arena) -> ir.Value:
    """The caller's workspace, or one from malloc (the function returns -1 if that fails),
    or the static arena, or none (``Scratch``)."""
    if scratch.malloc:
        return _workspace_malloc(b, fn, size, given_ptr, scratch.size_bits)
    null = ir.Constant(PTR, None)
    missing = b.icmp_unsigned("==", given_ptr, null)
    if arena is None:  # no allocator: the caller must pass a workspace
        _return_if(b, fn, missing, STATUS["no_memory"], "no_workspace")
        return given_ptr
    too_large = b.icmp_signed(">", size, i64(scratch.arena_bytes))
    _return_if(b, fn, b.and_(missing, too_large), STATUS["batch_too_large"], "arena")
    return b.select(missing, b.bitcast(arena, PTR), given_ptr, name="work")


def _workspace_malloc(b: ir.IRBuilder, fn, size, given_ptr, size_bits: int) -> ir.Value:
    """The caller's workspace, or one from malloc (-1 is returned if that fails).

    malloc gets at least one byte: ``malloc(0)`` may return NULL, which is no failure."""
    null = ir.Constant(PTR, None)
    given, allocate, failed, allocated, ready = (
        fn.append_basic_block(name)
        for name in (
            "workspace.given",
            "workspace.malloc",
            "workspace.failed",
            "workspace.ok",
            "ready",
        )
    )
    b.cbranch(b.icmp_unsigned("==", given_ptr, null), allocate, given)
    b.position_at_end(allocate)
    size_t = ir.IntType(size_bits)
    malloc = _declare(fn.module, "malloc", ir.FunctionType(PTR, [size_t]))
    wanted = b.select(b.icmp_signed("==", size, i64(0)), i64(1), size)
    wanted = wanted if size_bits == 64 else b.trunc(wanted, size_t)
    owned = b.call(malloc, [wanted], name="owned")
    b.cbranch(b.icmp_unsigned("==", owned, null), failed, allocated)
    b.position_at_end(failed)
    b.ret(ir.Constant(I32, -1))
    for block in (allocated, given):
        b.position_at_end(block)
        b.branch(ready)
    b.position_at_end(ready)
    work = b.phi(PTR, name="work")
    work.add_incoming(owned, allocated)
    work.add_incoming(given_ptr, given)
    return work


def _declare(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, fnty, name)


# --------------------------------------------------------------------------
# Object code and linking


def _target_machine(cpu: str, opt: int = 3) -> llvm.TargetMachine:
    """Position-independent code for the host CPU (``"host"``) or its baseline ISA."""
    if cpu not in CPUS:
        raise ValueError(f"cpu must be one of {CPUS}; received: cpu={cpu!r}")
    h = host()
    name, features = (h.cpu, h.features) if cpu == "host" else ("generic", "")
    return new_target_machine(name, features, opt, reloc="pic", codemodel="default")


def object_code(
    ir_text: str, *, cpu: str = "host", opt: int = 3, arch: Arch | None = None
) -> bytes:
    """An ELF (or the host's format, or WebAssembly) object file: ``ir_text`` optimized for
    ``cpu`` of this machine, or for ``arch``'s baseline CPU."""
    tm = _target_machine(cpu, opt) if arch is None else target_machine(arch, opt)
    with parsed(ir_text) as module:
        optimize(module, tm, opt)
        return tm.emit_object(module)


def code_size(obj: bytes) -> dict[str, int]:
    """Bytes of an object file (ELF or WebAssembly) by kind: ``code`` (machine code or wasm
    function bodies), ``rodata`` (constants), ``data`` (initialized) and ``bss`` (zeroed
    memory, e.g. the static arena: RAM, no space in the image)."""
    sizes = {"code": 0, "rodata": 0, "data": 0, "bss": 0}
    for section in llvm.ObjectFileRef.from_data(obj).sections():
        name = (section.name() or b"").decode("latin-1")
        if section.is_text():
            sizes["code"] += section.size()
        elif name.startswith((".rodata", ".srodata")):
            sizes["rodata"] += section.size()
        elif name.startswith((".data", ".sdata")) or name == "DATA":
            sizes["data"] += section.size()
        elif name.startswith((".bss", ".sbss")):
            sizes["bss"] += section.size()
    return sizes


def c_compiler() -> str | None:
    """The system C compiler: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def link_shared(
    obj: bytes, path: str | os.PathLike, *, soname: str | None = None, arch: Arch | None = None
) -> None:
    """Link ``obj`` into the shared library ``path`` with the system C compiler (and libm),
    or with ``arch``'s cross compiler."""
    if arch is None:
        cc = c_compiler()
        if cc is None:
            raise RuntimeError(
                "no C compiler found (tried $CC, cc, gcc, clang) to link a shared library; "
                "emit target='object' and link the .o yourself"
            )
    elif not arch.hosted:
        raise ValueError(
            f"{arch.name} has no shared libraries (no operating system); "
            "emit target='object' and link it into the firmware image"
        )
    else:
        cc = tool(arch.linker)
        if cc is None:
            raise RuntimeError(arch.linker.missing(f"link a shared library for {arch.name}"))
    command = [cc, "-shared", "-o", os.fspath(path), "{obj}", "-lm"]
    if soname:
        command.insert(2, f"-Wl,-soname,{soname}")
    _run_linker(obj, command)


def link_wasm(obj: bytes, path: str | os.PathLike, exports: list[str]) -> None:
    """Link the WebAssembly object ``obj`` into the module ``path`` with ``wasm-ld``.

    The module exports ``exports``, its memory (``memory``) and ``__heap_base``, where
    the memory the caller lays out begins; it imports nothing."""
    ld = tool(WASM_LD)
    if ld is None:
        raise RuntimeError(WASM_LD.missing("link a WebAssembly module"))
    command = [ld, "--no-entry", "--strip-debug", "-z", "stack-size=65536", "--export=__heap_base"]
    command += [f"--export={name}" for name in exports] + ["-o", os.fspath(path), "{obj}"]
    _run_linker(obj, command)


def _run_linker(obj: bytes, command: list[str]) -> None:
    """Run ``command`` with ``{obj}`` replaced by a temporary file holding ``obj``."""
    with tempfile.TemporaryDirectory(prefix="symgrad-link-") as tmp:
        obj_path = os.path.join(tmp, "library.o")
        with open(obj_path, "wb") as f:
            f.write(obj)
        command = [obj_path if part == "{obj}" else part for part in command]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"linking failed: {' '.join(command)}\n{done.stderr.strip()}")


# --------------------------------------------------------------------------
# The C header


CONVENTIONS = """\
Conventions
  - Matrices are dense row-major (C order) arrays of {ctype}; each argument's shape
    is given next to it, in terms of the batch size{batch}.
  - `const` arrays are only read. Arrays without `const` are updated in place
    (the optimizer step), after every check passed. Outputs are written into
    arrays the caller allocates, of the shapes given.
  - workspace: scratch memory the caller owns, NAME_workspace_size(...) bytes,
    aligned for {ctype} (64 bytes is best). One workspace sized for the largest
    batch serves every smaller batch and may be reused from call to call. Pass
    NULL to have the function malloc and free its scratch on each call.
  - Return value: 0 on success; k > 0 when the k-th finiteness guard failed
    (e.g. the loss is nan or inf): nothing was updated. Errors, checked before
    anything is read or written ({upper}_STATUS_* below):
      -1  NO_MEMORY      workspace was NULL and malloc failed;
      -2  BAD_BATCH      a batch size is negative, or so large that the size of
                         an array of the call in bytes exceeds INT64_MAX;
      -3  NULL_ARGUMENT  an array argument (input or output) is NULL.
  - NAME_workspace_size(...) returns SIZE_MAX ((size_t)-1) for batch sizes that
    give BAD_BATCH.
  - No global state: calls with distinct workspaces may run concurrently.
  - Self-contained: matrix products are generated loops (no BLAS); needs libc."""

# The workspace and dependency lines of CONVENTIONS in the static variant (no allocator).
STATIC = {
    "    NULL to have the function malloc and free its scratch on each call.": (
        "    NULL to use the library's static arena ({upper}_ARENA_BYTES bytes, enough for\n"
        "    batches of up to {upper}_MAX_BATCH rows in every function; a call with a NULL\n"
        "    workspace whose batch needs more returns {upper}_STATUS_BATCH_TOO_LARGE and\n"
        "    writes nothing). Calls that share the arena must not run concurrently."
    ),
    "      -1  NO_MEMORY      workspace was NULL and malloc failed;\n": "",
    "      -3  NULL_ARGUMENT  an array argument (input or output) is NULL.": (
        "      -3  NULL_ARGUMENT  an array argument (input or output) is NULL;\n"
        "      -4  BATCH_TOO_LARGE  workspace was NULL and the batch needs more scratch\n"
        "                         than the static arena holds."
    ),
    "  - No global state: calls with distinct workspaces may run concurrently.": (
        "  - The only global state is the static arena: calls with distinct workspaces\n"
        "    may run concurrently."
    ),
    "  - Self-contained: matrix products are generated loops (no BLAS); needs libc.": (
        "  - Self-contained and freestanding: matrix products are generated loops (no\n"
        "    BLAS), exp/log/tanh are symgrad's own (no libm), no malloc. Needs memcpy and\n"
        "    memset (on ARM EABI: __aeabi_memcpy, __aeabi_memclr) and the compiler's\n"
        "    runtime library (libgcc or compiler-rt), as any C99 code for the target\n"
        "    does. The same header serves every target."
    ),
}


# The status an epoch function adds, in the header's list of errors.
BAD_ORDER = "      -5  BAD_ORDER      (epoch functions) an entry of order is not in [0, rows)."


def c_header(
    name: str,
    functions: list[CFunction],
    *,
    doc: str = "",
    defines=(),
    max_batch: int | None = None,
    epochs: tuple[EpochFunction, ...] = (),
) -> str:
    """The header declaring ``functions`` and ``epochs``; ``defines`` are (macro, value,
    comment) triples.

    ``max_batch``: the static variant's header (``library_ir(..., max_batch=...)``), which
    states the arena's size. Nothing in the header depends on the target CPU."""
    _check_functions(functions)
    dtype = functions[0].program.dtype
    ctype = C_TYPES[dtype]
    guard = c_identifier(name).upper() + "_H"
    batch = sorted({str(s) for f in functions for s in f.program.batch})
    lines = [f"/* {name}.h -- generated by symgrad; do not edit.", " *"]
    lines += [f" * {line}".rstrip() for line in c_comment(doc.strip())] if doc.strip() else []
    if doc.strip():
        lines.append(" *")
    upper = c_identifier(name).upper()
    conventions = CONVENTIONS.format(
        ctype=ctype,
        batch=f" ({', '.join(batch)} = rows in the batch)" if batch else "",
        upper=upper,
    )
    if max_batch is not None:
        for line, static in STATIC.items():
            conventions = conventions.replace(line, static.format(upper=upper))
        arena = arena_bytes(functions, max_batch, epochs)
        defines = [
            (f"{upper}_MAX_BATCH", str(max_batch), "rows the static arena holds"),
            (f"{upper}_ARENA_BYTES", str(arena), "its size"),
            *defines,
        ]
    if epochs:
        conventions = _with_bad_order(conventions)
    lines += [f" * {line}".rstrip() for line in conventions.splitlines()]
    lines += [" */", f"#ifndef {guard}", f"#define {guard}", ""]
    lines += ["#include <stddef.h>", "#include <stdint.h>", ""]
    lines += ["#ifdef __cplusplus", 'extern "C" {', "#endif", ""]
    lines += [f"#define {upper}_STATUS_OK 0"]
    lines += [
        f"#define {upper}_STATUS_{key.upper()} ({code})"
        for key, code in STATUS.items()
        if key != "batch_too_large" or max_batch is not None
    ]
    if epochs:
        lines += [
            f"#define {upper}_STATUS_{k.upper()} ({code})" for k, code in EPOCH_STATUS.items()
        ]
    lines.append("")
    for macro, value, comment in defines:
        lines.append(
            f"#define {macro} {value}" + (f"  /* {_inline(comment)} */" if comment else "")
        )
    if defines:
        lines.append("")
    for f in functions:
        lines += _declaration(f, ctype) + [""]
    by_name = {f.name: f for f in functions}
    for e in epochs:
        lines += _epoch_declaration(e, by_name[e.step], ctype, upper) + [""]
    lines += ["#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */"]
    return "\n".join(lines) + "\n"


def _with_bad_order(conventions: str) -> str:
    """``CONVENTIONS`` with ``BAD_ORDER`` closing its list of errors."""
    lines = conventions.splitlines()
    end = next(k for k, line in enumerate(lines) if line.startswith("  - NAME_workspace_size"))
    lines[end - 1] = lines[end - 1].removesuffix(".") + ";"
    return "\n".join([*lines[:end], BAD_ORDER, *lines[end:]])


def _declaration(f: CFunction, ctype: str) -> list[str]:
    p = f.program
    updated = {dst.name for dst, _ in p.updates}
    args: list[tuple[str, str]] = []  # (declaration, comment)
    _parameter = _parameters()
    batch = [_parameter(str(sym)) for sym in p.batch]
    for name in batch:
        args.append((f"int64_t {name}", "batch size (rows)"))
    for v in p.inputs:
        const = "" if v.name in updated else "const "
        note = f"({v.shape[0]}, {v.shape[1]})" + (", updated in place" if v.name in updated else "")
        args.append(
            (f"{const}{ctype} *{_parameter(v.name)}", _with_note(note, f.notes.get(v.name)))
        )
    for sym in p.scalars:
        args.append(
            (f"{ctype} {_parameter(str(sym))}", _with_note("scalar", f.notes.get(str(sym))))
        )
    for v in _distinct_outputs(p):
        note = f"out: ({v.shape[0]}, {v.shape[1]})"
        args.append((f"{ctype} *{_parameter(v.name)}", _with_note(note, f.notes.get(v.name))))
    size_args = ", ".join(f"int64_t {name}" for name in batch) or "void"
    args.append(
        (
            "void *workspace",
            f"NULL or {f.name}_workspace_size({', '.join(batch)}) bytes",
        )
    )
    return _prototype(f.name, _with_status_codes(f.doc or f.name, p), size_args, args)


def _with_status_codes(doc: str, program) -> str:
    """``doc`` and which guarded value each nonzero status of ``program`` names."""
    guards = [s.what for s in program.body if s.aborts]
    if not guards:
        return doc
    codes = ", ".join(f"{k} {what}" for k, what in enumerate(guards, 1))
    status = f"Returns k > 0 when the k-th guarded value is nan or inf: {codes}."
    return doc.strip() + "\n" + "\n".join(textwrap.wrap(status, 84, break_on_hyphens=False))


def _prototype(name: str, doc: str, size_args: str, args: list[tuple[str, str]]) -> list[str]:
    """A function's comment, its workspace query and its declaration, one argument a line."""
    text = c_comment(doc.strip())
    lines = [f"/* {text[0]}" + (" */" if len(text) == 1 else "")]
    if len(text) > 1:
        lines += [f" * {line}".rstrip() for line in text[1:]] + [" */"]
    lines.append(f"size_t {name}_workspace_size({size_args});")
    lines.append(f"int32_t {name}(")
    width = max(len(decl) for decl, _ in args) + 1
    for k, (decl, comment) in enumerate(args):
        end = ");" if k == len(args) - 1 else ","
        lines.append(f"    {(decl + end).ljust(width + 1)} /* {_inline(comment)} */")
    return lines


EPOCH_CONTRACT = """\
Step k (0-based) trains on the rows order[k*batch_size ...] of X and Y (the
last batch takes the rest: ceil(rows / batch_size) steps), gathered into the
workspace, each step as one call of
    {step}
with {counter}. *loss = sum_k n_k * loss_k / sum_k n_k, the mean
over the rows taken (n_k rows in step k, loss_k its loss); *steps = the steps
completed. Returns 0; the failed step's guard status k > 0 (the steps before
it stay applied and are counted in *steps, nothing of the failed one is); or,
before anything is written: {upper}_STATUS_NULL_ARGUMENT for a NULL array or
output, {upper}_STATUS_BAD_BATCH for rows < 0 or batch_size < 1 (or a
workspace size beyond INT64_MAX), {upper}_STATUS_BAD_ORDER when an entry of
order is not in [0, rows); for a NULL workspace, what the other functions
return for one."""


def _epoch_declaration(e: EpochFunction, step: CFunction, ctype: str, upper: str) -> list[str]:
    """An epoch function's declaration: the contract of ``EpochFunction`` for its step."""
    p = step.program
    counter = epoch_counter(p, e)
    inputs = {v.name: v for v in p.inputs}
    _parameter = _parameters()
    rows, batch_size = _parameter("rows"), _parameter("batch_size")
    args = [(f"int64_t {rows}", "rows of X and Y"), (f"int64_t {batch_size}", "rows per step")]
    for name in (e.x_input, e.y_input):
        note = _with_note(f"({rows}, {inputs[name].shape[1]}), all rows", step.notes.get(name))
        args.append((f"const {ctype} *{_parameter(name)}", note))
    order = _parameter("order")
    args.append(
        (f"const int64_t *{order}", f"({rows}): the rows in the order the epoch takes them")
    )
    for v in epoch_fixed_inputs(p, e):
        updated = v.name in {dst.name for dst, _ in p.updates}
        const = "" if updated else "const "
        note = f"({v.shape[0]}, {v.shape[1]})" + (", updated in place" if updated else "")
        args.append(
            (f"{const}{ctype} *{_parameter(v.name)}", _with_note(note, step.notes.get(v.name)))
        )
    for sym in p.scalars:
        if str(sym) != counter:
            note = _with_note("scalar", step.notes.get(str(sym)))
            args.append((f"{ctype} {_parameter(str(sym))}", note))
    before = _parameter("steps_before")
    counted = f"step k runs with {counter} = {before} + k + 1" if counter else "steps taken before"
    args += [
        (f"int64_t {before}", counted),
        (f"double *{_parameter(e.loss)}", "out: the epoch's mean loss"),
        (f"int64_t *{_parameter('steps')}", "out: the steps completed"),
        ("void *workspace", f"NULL or {e.name}_workspace_size({batch_size}) bytes"),
    ]
    contract = EPOCH_CONTRACT.format(
        step=step.name,
        counter=f"{counter} = {before} + k + 1" if counter else "the given scalars",
        upper=upper,
    )
    doc = f"{e.doc.strip()}\n{contract}" if e.doc.strip() else contract
    return _prototype(e.name, doc, f"int64_t {batch_size}", args)


def _parameters():
    """``name -> parameter``: C identifiers (``c_parameter``), distinct within one function."""
    taken: set[str] = {"workspace"}

    def parameter(name: str) -> str:
        wanted = c_parameter(name)
        found, k = wanted, 2
        while found in taken:
            found, k = f"{wanted}_{k}", k + 1
        taken.add(found)
        return found

    return parameter


def _inline(comment: str) -> str:
    """A one-line comment's text: ``c_comment``'s lines joined."""
    return " ".join(c_comment(comment))


def _with_note(text: str, note: str | None) -> str:
    return f"{text}; {note}" if note else text
