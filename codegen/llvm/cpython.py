"""codegen.llvm.cpython: the per-step entry as a CPython builtin function, generated in LLVM IR.

A ctypes call costs about a microsecond and the argument checks in Python about
as much again: for a small model that is most of a training step. So the
module also gets a ``METH_FASTCALL`` function::

    PyObject *<name>.fast(PyObject *ctx, PyObject *const *args, Py_ssize_t nargs)

wrapped as a builtin with ``PyCFunction_NewEx``. It does in native code what
``LLVMFunction.__call__`` does in Python: checks every argument (an ndarray of
the program's dtype, 2-D, the expected shape under the current batch binding,
C-contiguous, writeable when updated in place), converts the scalars
(``PyFloat_AsDouble``, for the exact types ``SCALAR_TYPES``; the value must be finite once
converted to the program's dtype), allocates the outputs (NumPy's ``PyArray_New``), runs
``step_impl`` and returns the tuple of outputs. Anything it does not handle
on its own -- a mismatch of any kind, a new batch size, a failed guard -- is
passed to the Python path (``ctx[CTX_FALLBACK]``) with the same arguments,
which raises the usual error or binds the new batch size; a failed guard
wrote nothing, so re-running the step there raises the same error.

The builtin's ``self`` is the tuple ``(ctx, owner)``: ``ctx`` is an int64
ndarray whose slots are listed below, which the Python side keeps up to date
(``CTX_BUFFERS`` etc. point at the buffers of the batch size bound last), and
``owner`` (the ``LLVMFunction``) keeps the code and the buffers alive for as
long as the builtin is. Object layouts (tuple items, ndarray
fields, ``PyFloat``) are read at fixed offsets that are verified at import.
"""

from __future__ import annotations

import ctypes
import functools

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
import sympy as sp

from codegen.ir import Program
from codegen.llvm.kernels import lower_dim
from codegen.llvm.loops import F64, I8, I32, I64, PTR, i64, load, store
from codegen.names import llvm_name

NPY_TYPES = {"float64": 12, "float32": 11}  # NPY_DOUBLE, NPY_FLOAT
NPY_C_CONTIGUOUS, NPY_WRITEABLE = 0x0001, 0x0400
METH_FASTCALL = 0x0080

SCALAR_TYPES = (float, int, np.float64, np.float32)
"""Exact types whose scalars the fast entry converts itself; anything else (bool, NumPy
bool, Fraction, a 0-d array...) goes to the Python path, which applies ``check_scalar``."""

# slots of the context array
CTX_FALLBACK = 0  # PyObject*: the Python path, called with the same arguments
CTX_ARRAY_TYPE = 1  # PyTypeObject*: numpy.ndarray
CTX_DESCR = 2  # PyArray_Descr*: the program's dtype (NumPy's singleton)
CTX_BUFFERS = 3  # T**: buffer pointers of the current batch binding
CTX_DIMS = 4  # i64*: its batch sizes, as step_impl reads them
CTX_SCALARS = 5  # T*: the scalar arguments
CTX_SCALAR_TYPES = 6  # PyTypeObject* x len(SCALAR_TYPES): scalar types converted natively
CTX_BATCH = CTX_SCALAR_TYPES + len(SCALAR_TYPES)  # i64 x len(program.batch): bound batch sizes
# (-1: none yet)


def _offsets() -> dict[str, int]:
    """Byte offsets of the object fields the native code reads, each checked on a probe."""
    read_ptr = ctypes.c_void_p.from_address
    read_i64 = ctypes.c_int64.from_address
    read_i32 = ctypes.c_int32.from_address
    head = object.__basicsize__  # ob_refcnt, ob_type
    probe = np.empty((2, 3), np.float32)
    pair = (probe, None)
    found = {
        "ob_type": head - 8,
        "tuple_items": tuple.__basicsize__,
        "array_data": head,
        "array_nd": head + 8,
        "array_dims": head + 16,
        "array_descr": head + 40,
        "array_flags": head + 48,
        "float_value": head,
    }
    base = id(probe)
    dims = read_ptr(base + found["array_dims"]).value
    strided = probe[:, ::2]
    ok = (
        read_ptr(base + found["ob_type"]).value == id(np.ndarray)
        and read_ptr(id(pair) + found["tuple_items"]).value == id(probe)
        and read_ptr(base + found["array_data"]).value == probe.ctypes.data
        and read_i32(base + found["array_nd"]).value == 2
        and dims is not None
        and (read_i64(dims).value, read_i64(dims + 8).value) == (2, 3)
        and read_ptr(base + found["array_descr"]).value == id(probe.dtype)
        and read_i32(base + found["array_flags"]).value & NPY_C_CONTIGUOUS
        and read_i32(base + found["array_flags"]).value & NPY_WRITEABLE
        and not read_i32(id(strided) + found["array_flags"]).value & NPY_C_CONTIGUOUS
        and ctypes.c_double.from_address(id(1.5) + found["float_value"]).value == 1.5
    )
    if not ok:
        raise ImportError("codegen.llvm: unexpected CPython / NumPy object layout")
    return found


OFFSETS = _offsets()

# CPython and NumPy functions the fast entry calls, by the names it declares
_C_API = {
    "PyFloat_AsDouble": (F64, [PTR]),
    "PyErr_Occurred": (PTR, []),
    "PyErr_Clear": (ir.VoidType(), []),
    "PyObject_Vectorcall": (PTR, [PTR, PTR, I64, PTR]),
    "PyTuple_New": (PTR, [I64]),
    "Py_DecRef": (ir.VoidType(), [PTR]),
    "symgrad_PyArray_New": (PTR, [PTR, I32, PTR, I32, PTR, PTR, I32, I32, PTR]),
}
C_API_NAMES = frozenset(_C_API)  # what the fast entry calls (codegen.llvm.module reserves them)
PYARRAY_NEW_INDEX = 93  # PyArray_API[93] is PyArray_New (NumPy's C API table, stable ABI)


def register_symbols() -> None:
    """Make the functions the fast entry calls resolvable by the JIT (idempotent)."""
    if getattr(register_symbols, "done", False):
        return
    api = ctypes.pythonapi
    for name in _C_API:
        if not name.startswith("symgrad_"):
            llvm.add_symbol(name, ctypes.cast(getattr(api, name), ctypes.c_void_p).value)
    get_pointer = api.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    table = get_pointer(np._core.multiarray._ARRAY_API, None)
    new = ctypes.c_void_p.from_address(table + 8 * PYARRAY_NEW_INDEX).value
    llvm.add_symbol("symgrad_PyArray_New", new)
    register_symbols.done = True


def _declare(module: ir.Module, name: str) -> ir.Function:
    if name in module.globals:
        return module.globals[name]
    ret, args = _C_API[name]
    return ir.Function(module, ir.FunctionType(ret, args), name=name)


def _field(b: ir.IRBuilder, ty, obj, field: str, name: str = ""):
    return b.load(b.gep(obj, [i64(OFFSETS[field])], source_etype=I8), typ=ty, name=name)


def build_fast_entry(module: ir.Module, program: Program, layout, step: ir.Function, fmt) -> None:
    """``<name>.fast(ctx, args, nargs) -> outputs tuple`` (see the module docstring)."""
    fn = ir.Function(
        module, ir.FunctionType(PTR, [PTR, PTR, I64]), name=llvm_name(f"{program.name}.fast")
    )
    self_tuple, args, nargs = fn.args
    for arg, name in zip(fn.args, ("self", "args", "nargs")):
        arg.name = name
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fallback = fn.append_basic_block("fallback")
    api = {name: _declare(module, name) for name in _C_API}
    # self is the tuple (context array, owner): the context's slots are its data
    ctx_obj = b.load(b.gep(self_tuple, [i64(OFFSETS["tuple_items"])], source_etype=I8), typ=PTR)

    def require(condition, what: str) -> None:
        ok = fn.append_basic_block(llvm_name(f"{what}.ok"))
        b.cbranch(condition, ok, fallback)
        b.position_at_end(ok)

    n_inputs, n_scalars = len(program.inputs), len(program.scalars)
    shapes = [b.alloca(I64, 2, name=f"shape.{k}") for k in range(len(layout.output_slots))]
    ctx = _field(b, PTR, ctx_obj, "array_data", "ctx.slots")
    target = load(b, PTR, ctx, i64(CTX_FALLBACK), "python_path")
    require(b.icmp_signed("==", nargs, i64(n_inputs + n_scalars)), "nargs")
    array_type, descr, buffers, dims_p, scalars_p = (
        load(b, PTR, ctx, i64(k), name)
        for k, name in [
            (CTX_ARRAY_TYPE, "ndarray"),
            (CTX_DESCR, "descr"),
            (CTX_BUFFERS, "buffers"),
            (CTX_DIMS, "dims"),
            (CTX_SCALARS, "scalars"),
        ]
    )
    # before the first binding the buffer pointers are -1: an input without the batch
    # dimension would pass its check and be stored there, so the Python path binds first
    require(b.icmp_signed("!=", b.ptrtoint(buffers, I64), i64(-1)), "bound")
    batch = {
        sym: load(b, I64, ctx, i64(CTX_BATCH + k), str(sym)) for k, sym in enumerate(program.batch)
    }
    updated = {dst.name for dst, _ in program.updates}
    for i, v in enumerate(program.inputs):
        obj = load(b, PTR, args, i64(i), llvm_name(v.name))
        require(b.icmp_unsigned("==", _field(b, PTR, obj, "ob_type"), array_type), f"{v.name}.type")
        require(b.icmp_unsigned("==", _field(b, PTR, obj, "array_descr"), descr), f"{v.name}.dtype")
        require(
            b.icmp_signed("==", _field(b, I32, obj, "array_nd"), ir.Constant(I32, 2)),
            f"{v.name}.nd",
        )
        sizes = _field(b, PTR, obj, "array_dims")
        for axis, dim in enumerate(v.shape):
            expected = lower_dim(b, batch, sp.sympify(dim))
            require(
                b.icmp_signed("==", load(b, I64, sizes, i64(axis)), expected), f"{v.name}.shape"
            )
        need = NPY_C_CONTIGUOUS | (NPY_WRITEABLE if v.name in updated else 0)
        flags = b.and_(_field(b, I32, obj, "array_flags"), ir.Constant(I32, need))
        require(b.icmp_signed("==", flags, ir.Constant(I32, need)), f"{v.name}.flags")
        store(b, PTR, _field(b, PTR, obj, "array_data"), buffers, i64(i))
    scalar_types = [load(b, PTR, ctx, i64(CTX_SCALAR_TYPES + k)) for k in range(len(SCALAR_TYPES))]
    for k, sym in enumerate(program.scalars):
        obj = load(b, PTR, args, i64(n_inputs + k))
        kind = _field(b, PTR, obj, "ob_type")
        known = [b.icmp_unsigned("==", kind, t) for t in scalar_types]
        require(functools.reduce(b.or_, known), f"{sym}.type")
        value = b.call(api["PyFloat_AsDouble"], [obj], name=llvm_name(str(sym)))
        maybe_error = fn.append_basic_block(llvm_name(f"{sym}.maybe_error"))
        converted = fn.append_basic_block(llvm_name(f"{sym}.converted"))
        b.cbranch(b.fcmp_ordered("==", value, ir.Constant(F64, -1.0)), maybe_error, converted)
        b.position_at_end(maybe_error)  # -1.0 is also a real value: ask whether an error is set
        error = b.call(api["PyErr_Occurred"], [])
        clear = fn.append_basic_block(llvm_name(f"{sym}.clear"))
        b.cbranch(b.icmp_unsigned("==", error, ir.Constant(PTR, None)), converted, clear)
        b.position_at_end(clear)  # e.g. an int beyond float64: the Python path says so
        b.call(api["PyErr_Clear"], [])
        b.branch(fallback)
        b.position_at_end(converted)
        value = value if fmt.bits == 64 else b.fptrunc(value, fmt.ftype)
        # finite in the dtype (1e39 becomes inf in float32; nan fails both): else the Python path
        limit = float(np.finfo(program.dtype).max)
        low = b.fcmp_ordered(">=", value, ir.Constant(fmt.ftype, -limit))
        high = b.fcmp_ordered("<=", value, ir.Constant(fmt.ftype, limit))
        require(b.and_(low, high), f"{sym}.finite")
        store(b, fmt.ftype, value, scalars_p, i64(k))
    # outputs: fresh arrays, then the tuple that owns them
    result = b.call(api["PyTuple_New"], [i64(len(layout.output_slots))], name="result")
    require(b.icmp_unsigned("!=", result, ir.Constant(PTR, None)), "tuple")
    null = ir.Constant(PTR, None)
    for k, slot in enumerate(layout.output_slots):
        for axis, dim in enumerate(layout.shapes[slot]):
            store(b, I64, lower_dim(b, batch, sp.sympify(dim)), shapes[k], i64(axis))
        new = [
            array_type,
            ir.Constant(I32, 2),
            shapes[k],
            ir.Constant(I32, NPY_TYPES[program.dtype]),
        ]
        new += [null, null, ir.Constant(I32, 0), ir.Constant(I32, 0), null]
        out = b.call(api["symgrad_PyArray_New"], new, name=llvm_name(layout.names[slot]))
        failed, made = (
            fn.append_basic_block(llvm_name(f"{layout.names[slot]}.failed")),
            fn.append_basic_block(llvm_name(f"{layout.names[slot]}.ok")),
        )
        b.cbranch(b.icmp_unsigned("==", out, null), failed, made)
        b.position_at_end(failed)  # MemoryError is set: drop what was made and raise it
        b.call(api["Py_DecRef"], [result])
        b.ret(null)
        b.position_at_end(made)
        b.store(out, b.gep(result, [i64(OFFSETS["tuple_items"] + 8 * k)], source_etype=I8))
        store(b, PTR, _field(b, PTR, out, "array_data"), buffers, i64(slot))
    status = b.call(step, [dims_p, buffers, scalars_p], name="status")
    guard_failed = fn.append_basic_block("guard.failed")
    done = fn.append_basic_block("done")
    b.cbranch(b.icmp_signed("==", status, ir.Constant(I32, 0)), done, guard_failed)
    b.position_at_end(done)
    b.ret(result)
    b.position_at_end(guard_failed)  # nothing was written: the Python path re-runs and raises
    b.call(api["Py_DecRef"], [result])
    b.branch(fallback)
    b.position_at_end(fallback)
    b.ret(b.call(api["PyObject_Vectorcall"], [target, args, nargs, null]))


class PyMethodDef(ctypes.Structure):
    _fields_ = [
        ("ml_name", ctypes.c_char_p),
        ("ml_meth", ctypes.c_void_p),
        ("ml_flags", ctypes.c_int),
        ("ml_doc", ctypes.c_char_p),
    ]


_new_builtin = ctypes.pythonapi.PyCFunction_NewEx
_new_builtin.restype = ctypes.py_object
_new_builtin.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.c_void_p]


class FastEntry:
    """The builtin function over ``<name>.fast`` and the context array it reads.

    ``fast(*args)`` is the call; ``bind(pointers_addr, dims_addr, values)``
    points the context at a batch binding's buffers; ``fallbacks`` counts the
    calls handed to the Python path.
    """

    def __init__(
        self, address: int, name: str, program: Program, fallback, scalars_addr: int, owner
    ):
        self.ctx = np.full(CTX_BATCH + max(1, len(program.batch)), -1, dtype=np.int64)
        self.fallbacks = 0  # calls the native checks passed on to the Python path

        def python_path(*args):
            self.fallbacks += 1
            return fallback(*args)

        self._fallback = python_path  # kept alive: the context holds only its address
        self.ctx[CTX_FALLBACK] = id(python_path)
        self.ctx[CTX_ARRAY_TYPE] = id(np.ndarray)
        self._descr = np.dtype(program.dtype)
        self.ctx[CTX_DESCR] = id(self._descr)
        self.ctx[CTX_SCALARS] = scalars_addr
        for k, kind in enumerate(SCALAR_TYPES):
            self.ctx[CTX_SCALAR_TYPES + k] = id(kind)
        self._name = name.encode()
        self._def = PyMethodDef(self._name, address, METH_FASTCALL, None)
        self.fast = _new_builtin(ctypes.addressof(self._def), (self.ctx, owner), None)

    def bind(self, pointers_addr: int, dims_addr: int, values: tuple[int, ...]) -> None:
        self.ctx[CTX_BUFFERS] = pointers_addr
        self.ctx[CTX_DIMS] = dims_addr
        self.ctx[CTX_BATCH : CTX_BATCH + len(values)] = values
