"""codegen.numpy: compile a ``codegen.ir.Program`` to Python source that runs on NumPy.

The source is straight-line NumPy with ``out=`` into arrays allocated once per batch
size (``codegen.ir.plan_buffers`` decides which values share an array), one block per
IR statement under its derived formula as a comment::

    >>> fn = compile_program(program)          # doctest: +SKIP
    >>> print(fn.source)                       # doctest: +SKIP
    ...
        # A1 = tanh(X*W1 + b1)
        add(Z1, b1, out=A1)
        tanh(A1, out=A1)
    >>> (loss,) = fn(X, Y, W1, b1, 0.1)         # doctest: +SKIP  (then W1, b1 updated)

Call convention: ``fn(*inputs, *scalars)``; returns the outputs as new arrays, then
writes each update into its input array (all updates read the old inputs).  See
docs/numpy-backend.md for how to read the generated code and the numerics choices.
"""

from __future__ import annotations

import builtins
import io
import keyword
import linecache
import re
import textwrap
import tokenize
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sympy as sp

from codegen.ir import (
    GOLDEN,
    MIX,
    NOT_FINITE,
    SCALAR_CHECK,
    Col2Im,
    Columns,
    Gather,
    Gemm,
    Guard,
    Im2Col,
    KeepMask,
    Map,
    Program,
    Reduce,
    Reshape,
    RowMax,
    ScatterAdd,
    Softmax,
    Transpose,
    Value,
    Window,
    plan_buffers,
)
from codegen.names import python_comment, python_docstring, python_identifier, python_string
from codegen.numpy.pyformat import LINE_LENGTH, wrap_long_lines, wrap_text
from codegen.numpy.scalar import (
    FULL,
    Array,
    Body,
    Kind,
    Op,
    ScratchPool,
    lower_body,
    py_scalar,
    write_body,
)

__all__ = [
    "NumpyFunction",
    "NumpyFunctionSource",
    "compile_program",
    "module_header",
    "numpy_function",
    "numpy_source",
]


class NumpyFunction:
    """A compiled program: ``fn(*inputs, *scalars) -> tuple of new arrays``, then updates.

    ``source`` is the generated module (also shown in tracebacks), ``function`` the raw
    generated function (skips the argument-count check), ``program`` the IR it came from.
    """

    def __init__(self, program: Program, source: str, namespace: dict, function_name: str):
        self.program = program
        self.name = program.name
        self.source = source
        self.function: Callable = namespace[function_name]
        self._buffers: dict = namespace[f"_{function_name}_buffers"]
        self._arity = len(program.inputs) + len(program.scalars)
        self._arg_names = [v.name for v in program.inputs] + [str(s) for s in program.scalars]

    def __call__(self, *args):
        if len(args) != self._arity:
            raise TypeError(
                f"{self.name}() takes {self._arity} arguments ({', '.join(self._arg_names)}); "
                f"Received: {len(args)} arguments"
            )
        return self.function(*args)

    def clear_buffers(self) -> None:
        """Drop the work arrays cached per batch size (they are re-made on the next call)."""
        self._buffers.clear()

    def __repr__(self) -> str:
        p = self.program
        args = [f"{v.name}{_shape_str(v.shape)}" for v in p.inputs] + [str(s) for s in p.scalars]
        text = f"<NumpyFunction {p.name}({', '.join(args)}) -> ({', '.join(v.name for v in p.outputs)})"
        if p.updates:
            text += f"; updates {', '.join(dst.name for dst, _ in p.updates)}"
        return text + f" dtype={p.dtype}>"


def numpy_source(program: Program) -> str:
    """The generated module for ``program`` (deterministic: same program, same text)."""
    return _module(numpy_function(program))


@dataclass(frozen=True)
class NumpyFunctionSource:
    """One program's generated code without the module around it (``numpy_function``).

    ``code`` defines the function ``name`` and its private helpers (``_NAME_buffers``,
    ``_allocate_NAME``, ``_check_NAME``). It expects the module around it to start
    with ``module_header`` (imports, ``DTYPE``, ``ndarray``, reduce aliases) and to hold
    the runtime helpers ``CHECKS`` (plus ``ERF`` when ``needs_erf``). Several programs
    of one dtype can share that module header, so a standalone module can hold all of them.
    """

    name: str
    code: str
    numpy_names: tuple[str, ...]
    preamble: tuple[str, ...]
    needs_erf: bool


def numpy_function(program: Program) -> NumpyFunctionSource:
    """The generated function of ``program`` and what it needs from its module.

    The same text as in ``numpy_source(program)``, minus the module header; nothing is
    compiled or registered in ``linecache``.
    """
    writer = _Writer(program)
    body = writer.body_lines()  # first: it decides which helpers and buffers exist
    allocate = writer.allocate_lines()
    needs_erf = "erf" in writer.uses
    parts = [f"_{writer.fn}_buffers = {{}}  # batch symbol values -> work arrays"]
    if writer.work_locals():
        parts.append("\n".join(allocate))
    parts += ["\n".join(writer.check_lines()), "\n".join(body)]
    code = wrap_long_lines("\n\n\n".join(parts) + "\n")
    used = _names_in(code) | (ERF_USES if needs_erf else set())
    preamble = _dtype_preamble(program.dtype)
    for alias in ("add", "maximum"):
        if f"{alias}_reduce" in used:
            preamble.append(f"{alias}_reduce = numpy.{alias}.reduce")
    return NumpyFunctionSource(
        writer.fn, code, tuple(sorted(used & FROM_NUMPY)), tuple(preamble), needs_erf
    )


def module_header(functions: Sequence[NumpyFunctionSource], extra_imports=()) -> list[str]:
    """The lines a module holding ``functions`` starts with: imports, then their preambles."""
    modules = sorted({"math", "numbers", *extra_imports})
    names = sorted({name for f in functions for name in f.numpy_names})
    preamble = dict.fromkeys(line for f in functions for line in f.preamble)
    return [
        *(f"import {module}" for module in modules),
        "",
        "import numpy",
        *_import_lines(names),
        "",
        *preamble,
    ]


def _module(f: NumpyFunctionSource) -> str:
    """The module of one generated function: header, runtime helpers, the function."""
    first = f"# Generated by codegen.numpy from the symgrad IR program {f.name!r}; do not edit."
    parts = ["\n".join([first, *module_header([f])]), CHECKS.strip("\n")]
    if f.needs_erf:
        parts.append(ERF.strip("\n"))
    parts.append(f.code.rstrip("\n"))
    return "\n\n\n".join(parts) + "\n"


def _dtype_preamble(dtype: str) -> list[str]:
    """Module-level names the generated functions read: the dtype and its scalar bound."""
    return [
        f"DTYPE = numpy.dtype({dtype!r})",
        "ndarray = numpy.ndarray",
        "SCALAR_MAX = float(numpy.finfo(DTYPE).max)  # scalar arguments must be finite in DTYPE",
    ]


def _names_in(code: str) -> set[str]:
    """The names ``code`` reads: not attributes (``a.name``), keywords (``name=``), comments."""
    tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    found = set()
    for k, tok in enumerate(tokens):
        before = tokens[k - 1].string if k else ""
        after = tokens[k + 1].string if k + 1 < len(tokens) else ""
        if tok.type == tokenize.NAME and before != "." and after != "=":
            found.add(tok.string)
    return found


def compile_program(program: Program) -> NumpyFunction:
    """Generate, compile and load ``program``; tracebacks point into the generated source."""
    f = numpy_function(program)
    source = _module(f)
    filename = _register_source(f.name, source)
    namespace: dict = {"__name__": f"symgrad_generated.{f.name}"}
    exec(compile(source, filename, "exec"), namespace)
    # the source stays in linecache (tracebacks show it) as long as the generated code lives
    weakref.finalize(namespace[f.name], _release_source, filename)
    return NumpyFunction(program, source, namespace, f.name)


_SOURCE_USERS: dict[str, int] = {}
"""linecache filename -> how many live generated functions show that source."""


def _register_source(name: str, source: str) -> str:
    """Put ``source`` in linecache under ``<symgrad:NAME>`` (suffixed if NAME is taken)."""
    lines = source.splitlines(True)
    filename, k = f"<symgrad:{name}>", 1
    while filename in linecache.cache and linecache.cache[filename][2] != lines:
        k += 1
        filename = f"<symgrad:{name}#{k}>"
    linecache.cache[filename] = (len(source), None, lines, filename)
    _SOURCE_USERS[filename] = _SOURCE_USERS.get(filename, 0) + 1
    return filename


def _release_source(filename: str) -> None:
    """Drop the linecache entry when the last function compiled from it is collected."""
    left = _SOURCE_USERS.pop(filename, 1) - 1
    if left > 0:
        _SOURCE_USERS[filename] = left
    else:
        linecache.cache.pop(filename, None)


# --------------------------------------------------------------------------
# Runtime helpers copied into every generated module (numpy only, no symgrad).

CHECKS = (
    """
def _check_array(function, name, value, dtype):
    if not isinstance(value, ndarray):
        raise TypeError(
            f"{function}: argument {name} must be a numpy.ndarray of dtype {dtype}; "
            f"Received: {name} of type {type(value).__name__}"
        )
    if value.dtype != dtype:
        raise TypeError(
            f"{function}: argument {name} must have dtype {dtype}; "
            f"Received: {name} with dtype {value.dtype}"
        )
    if value.ndim != 2:
        raise ValueError(
            f"{function}: argument {name} must be a 2-D array; "
            f"Received: {name} with shape {value.shape}"
        )


def _check_shape(function, name, value, expected, formula, binding):
    if value.shape != expected:
        where = f" = {expected}" if formula != str(expected) else ""
        raise ValueError(
            f"{function}: argument {name} must have shape {formula}{where}{binding}; "
            f"Received: {name} with shape {value.shape}"
        )


def _check_updatable(function, name, value):
    if not value.flags.writeable:
        raise ValueError(
            f"{function}: argument {name} is updated in place and must be writeable; "
            f"Received: {name} read-only"
        )
    if not value.flags.carray:
        raise ValueError(
            f"{function}: argument {name} is updated in place and must be C-contiguous "
            f"(numpy.ascontiguousarray); Received: {name} with strides {value.strides}"
        )
"""
    + "\n"
    + SCALAR_CHECK  # the rule every backend applies to scalar arguments
    + "\n"
    + NOT_FINITE  # and the error of a failed guard
)

ERF = '''
# erf: Cephes ndtr.c rational approximations (|x| <= 1: x T(x^2)/U(x^2); else via erfc).
_ERF_T = (
    9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
    7.00332514112805075473e3, 5.55923013010394962768e4,
)
_ERF_U = (
    3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
    2.26290000613890934246e4, 4.92673942608635921086e4,
)
_ERFC_P = (
    2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
    4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
    9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2,
)
_ERFC_Q = (
    1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
    9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
    1.65666309194161350182e3, 5.57535340817727675546e2,
)


def _horner(z, coefs, out, monic=False):
    """out = coefs[0] z^k + ... + coefs[k] (with an extra leading 1 z^(k+1) when monic)."""
    if monic:
        add(z, coefs[0], out=out)
    else:
        multiply(z, coefs[0], out=out)
        add(out, coefs[1], out=out)
    for c in coefs[1 if monic else 2 :]:
        multiply(out, z, out=out)
        add(out, c, out=out)


def erf(x, out, work):
    """erf(x) elementwise into out; work = three float buffers and one bool buffer."""
    a, b, c, small = work
    absolute(x, out=a)
    less_equal(a, 1.0, out=small)
    # |x| > 1: sign(x) (1 - exp(-x^2) P(|x|)/Q(|x|)), |x| clipped to [1, 8] (erf(8) == 1.0)
    maximum(a, 1.0, out=a)
    minimum(a, 8.0, out=a)
    _horner(a, _ERFC_P, b)
    _horner(a, _ERFC_Q, c, monic=True)
    divide(b, c, out=b)
    square(a, out=c)
    negative(c, out=c)
    exp(c, out=c)
    multiply(b, c, out=b)
    subtract(1.0, b, out=b)
    sign(x, out=c)
    multiply(b, c, out=out)
    # |x| <= 1, x clipped to [-1, 1]
    maximum(x, -1.0, out=a)
    minimum(a, 1.0, out=a)
    square(a, out=c)
    _horner(c, _ERF_T, b)
    multiply(a, b, out=a)
    _horner(c, _ERF_U, b, monic=True)
    divide(a, b, out=a)
    copyto(out, a, where=small)
'''
ERF_USES = {
    "absolute", "less_equal", "maximum", "minimum", "add", "multiply", "divide",
    "square", "negative", "exp", "subtract", "sign", "copyto",
}  # fmt: skip

UFUNCS = {
    "add", "subtract", "multiply", "divide", "negative", "square", "sqrt", "exp", "log",
    "log1p", "expm1", "tanh", "absolute", "sign", "maximum", "minimum", "power", "heaviside",
    "greater", "greater_equal", "less", "less_equal", "equal", "not_equal", "logical_and",
    "logical_or", "logical_not", "cos", "floor",
}  # fmt: skip
FROM_NUMPY = UFUNCS | {
    "arange", "copyto", "dot", "empty", "errstate", "full", "intp", "ones", "take", "uint64",
    "vdot", "zeros",
}  # fmt: skip
MODULE_NAMES = FROM_NUMPY | {
    "math", "numbers", "numpy", "ndarray", "DTYPE", "add_reduce", "maximum_reduce", "erf",
    "_check_array", "_check_shape", "_check_updatable", "_check_scalar", "_not_finite",
    "_horner", "_ERF_T", "_ERF_U", "_ERFC_P", "_ERFC_Q",
}  # fmt: skip
RESERVED = MODULE_NAMES | set(dir(builtins)) | set(keyword.kwlist) | set(keyword.softkwlist)


def _has_batch(shape) -> bool:
    return any(sp.sympify(d).free_symbols for d in shape)


def _braces(text) -> str:
    """``text`` for the inside of an f-string: its braces doubled."""
    return str(text).replace("{", "{{").replace("}", "}}")


def _shape_str(shape) -> str:
    return f"({shape[0]}, {shape[1]})"


def _wrap(head: str, items: list[str], tail: str, indent: str) -> list[str]:
    """``head(items)tail`` on one line, or one item per line when too long."""
    one = f"{indent}{head}{', '.join(items)}{tail}"
    if len(one) <= 96:
        return [one]
    return [f"{indent}{head}"] + [f"{indent}    {item}," for item in items] + [f"{indent}{tail}"]


def _wrap_text(line: str, width: int) -> list[str]:
    """A docstring line within ``width``; a shape such as ``X(n, 4)`` is not broken."""
    whole = re.sub(r"\(([^(), ]+), ([^(), ]+)\)", "(\\1\0\1\\2)", line)  # same length
    whole = whole.replace(": float", ":\2float")
    parts = wrap_text(whole, width)
    return [part.replace("\0\1", ", ").replace(":\2", ": ") for part in parts]


def _import_lines(names: list[str]) -> list[str]:
    """``from numpy import a, b`` on one line, or parenthesized one name per line."""
    one = f"from numpy import {', '.join(names)}"
    return [one] if len(one) <= 100 else _wrap("from numpy import (", names, ")", "")


# --------------------------------------------------------------------------
# The writer: one Program -> one module.


class _Pool(ScratchPool):
    """Scratch and constant arrays for one statement, shared across statements by shape."""

    def __init__(self, writer: _Writer, domain):
        self.w, self.domain = writer, domain

    def shape(self, kind: Kind):
        return tuple(d if k else sp.S.One for d, k in zip(self.domain, kind))

    def take(self, kind: Kind, dtype: str) -> str:
        key = (self.shape(kind), dtype)
        names = self.w.scratch.setdefault(key, [])
        for name in names:
            if name not in self.w.busy:
                break
        else:
            name = self.w.claim("mask" if dtype == "b" else "tmp", numbered=True)
            names.append(name)
            self.w.work_arrays.append((name, key[0], "bool" if dtype == "b" else "DTYPE", None))
        self.w.busy.add(name)
        return name

    def give(self, name: str) -> None:
        self.w.busy.discard(name)

    def constant(self, value: float, kind: Kind) -> str:
        return self.w.constant(value, self.shape(kind))


class _Writer:
    def __init__(self, program: Program):
        self.p = p = program
        _check_program(p)
        self.plan = plan_buffers(p)
        self.in_place = self.plan.in_place_updates
        self.input_names = {v.name for v in p.inputs}
        self.output_names = {v.name for v in p.outputs}
        self.taken: set[str] = set(RESERVED)
        self.counters: dict[str, int] = {}
        self.fn = self.claim(python_identifier(p.name))
        for g in ("buffers", "allocate", "check"):
            self.taken.add(f"_{self.fn}_{g}")
        self.local: dict[str, str] = {}
        for v in [*p.inputs, *[s.out for s in p.body if s.out is not None]]:
            self.local.setdefault(v.name, self.claim(python_identifier(v.name)))
        self.names: dict[sp.Symbol, str] = {}
        for sym in [*p.scalars, *p.batch]:
            self.names[sym] = self.claim(python_identifier(sym.name))
        self.uses: set[str] = set()
        # (1, 1) values computed once per call (no matrix operand): read as scalars
        self.per_step = {
            s.out.name
            for s in p.body
            if isinstance(s, Map) and not s.args and all(d == 1 for d in s.out.shape)
        }
        self.scratch: dict = {}
        self.constants: dict = {}
        self.busy: set[str] = set()
        self.work_arrays: list[tuple] = []  # (name, shape, dtype code, fill value or None)

    # -- names and storage

    def constant(self, value: float, shape) -> str:
        """A work array filled with ``value`` once, when the buffers are allocated."""
        key = (value, tuple(shape))
        if key not in self.constants:
            name = self.claim({0: "zeros", 1: "ones"}.get(value, "filled"), numbered=True)
            self.constants[key] = name
            self.work_arrays.append((name, key[1], "DTYPE", value))
        return self.constants[key]

    def claim(self, wanted: str, numbered: bool = False) -> str:
        while True:
            if numbered:
                k = self.counters.get(wanted, 0)
                self.counters[wanted] = k + 1
                name = f"{wanted}{k}"
            else:
                name, wanted = wanted, wanted + "_"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def storage(self, v: Value) -> str:
        """Which array a value lives in: an input, a fresh output or a planned buffer."""
        if v.name in self.input_names:
            return v.name
        if v.name in self.in_place:
            return self.in_place[v.name]
        if v.name in self.output_names:
            return "output " + v.name
        return self.plan.buffer[v.name]

    def kind(self, shape, domain) -> Kind:
        kind = []
        for d, full in zip(shape, domain):
            if d != full and d != 1:
                raise ValueError(
                    f"shape {_shape_str(shape)} does not broadcast to {_shape_str(domain)}"
                )
            kind.append(d == full)
        return (kind[0], kind[1])

    def dim(self, d) -> str:
        d = sp.sympify(d)
        if d.is_Integer:
            return str(int(d))
        if d.free_symbols - set(self.p.batch) or not all(
            c.is_Integer for c in sp.Poly(d, *self.p.batch).coeffs()
        ):
            raise NotImplementedError(
                f"numpy backend: shape entry {d} is not an integer polynomial of {self.p.batch}"
            )
        return py_scalar(d, self.names)

    def shape_code(self, shape) -> str:
        return f"({self.dim(shape[0])}, {self.dim(shape[1])})"

    # -- the module

    def batch_args(self) -> str:
        return ", ".join(self.names[b] for b in self.p.batch)

    def batch_key(self) -> str:
        return f"({self.batch_args()},)" if self.p.batch else "()"

    def work_values(self) -> list[Value]:
        """Statement outputs that live in cached work arrays (not fresh outputs, not inputs)."""
        p = self.p
        return [
            s.out
            for s in p.body
            if s.out is not None and not self.storage(s.out).startswith("output ")
            and s.out.name not in self.in_place
        ]  # fmt: skip

    def work_locals(self) -> list[str]:
        return [self.local[v.name] for v in self.work_values()] + [a[0] for a in self.work_arrays]

    def allocate_lines(self) -> list[str]:
        values = self.work_values()
        owner: dict[str, str] = {}  # buffer -> local name of its first value
        lines = [f"def _allocate_{self.fn}({self.batch_args()}):"]
        lines.append(
            f'    """Work arrays for one binding of the batch symbols {self.batch_key()}."""'
        )
        shared = []
        for v in values:
            buf = self.plan.buffer[v.name]
            if buf not in owner:
                owner[buf] = self.local[v.name]
                lines.append(
                    f"    {owner[buf]} = empty({self.shape_code(self.plan.shapes[buf])}, DTYPE)"
                )
            elif owner[buf] != self.local[v.name]:
                shared.append(f"{self.local[v.name]} in {owner[buf]}")
        for name, shape, dtype, fill in self.work_arrays:
            if fill is None:
                lines.append(f"    {name} = empty({self.shape_code(shape)}, {dtype})  # scratch")
            elif fill in (0, 1):
                maker = "zeros" if fill == 0 else "ones"
                lines.append(f"    {name} = {maker}({self.shape_code(shape)}, {dtype})  # constant")
                self.uses.add(maker)
            else:
                lines.append(
                    f"    {name} = full({self.shape_code(shape)}, {fill!r}, {dtype})  # constant"
                )
                self.uses.add("full")
        if shared:
            text = "shared storage: " + ", ".join(shared)
            lines += [f"    {line}" for line in python_comment("\n".join(textwrap.wrap(text, 88)))]
        items = [owner[self.plan.buffer[v.name]] for v in values] + [a[0] for a in self.work_arrays]
        tail = ",)" if len(items) == 1 else ")"
        lines += _wrap(f"work = _{self.fn}_buffers[{self.batch_key()}] = (", items, tail, "    ")
        lines.append("    return work")
        return lines

    def argument_names(self) -> list[str]:
        return [self.local[v.name] for v in self.p.inputs] + [self.names[s] for s in self.p.scalars]

    def binding(self) -> dict[sp.Symbol, tuple[int, int]]:
        return self.p.batch_binding()

    def check_lines(self) -> list[str]:
        """The slow path: precise errors (Keras style), or the normalized batch and scalars."""
        p, fn = self.p, self.p.name
        args = self.argument_names()
        lines = [f"def _check_{self.fn}({', '.join(args)}):"]
        doc = f"Check the arguments of {fn} one by one; return the batch symbols and scalars."
        if len(doc) + 10 > LINE_LENGTH:  # continuation lines at the docstring's own indent
            doc = "\n".join(line.strip() for line in _wrap_text(doc, LINE_LENGTH - 7))
        lines.append(python_docstring(doc, "    "))
        for v in p.inputs:
            lines.append(
                f"    _check_array({python_string(fn)}, {python_string(v.name)}, {self.local[v.name]}, DTYPE)"
            )
        for sym, (i, axis) in self.binding().items():
            lines.append(f"    {self.names[sym]} = {self.local[p.inputs[i].name]}.shape[{axis}]")
        bound = ", ".join(
            f"{_braces(sym)} = {{{self.names[sym]}}} from {_braces(p.inputs[i].name)}.shape[{axis}]"
            for sym, (i, axis) in self.binding().items()
        )
        for v in p.inputs:
            note = "f" + python_string(f" ({bound})", quote='"') if _has_batch(v.shape) else '""'
            lines.append(
                f"    _check_shape({python_string(fn)}, {python_string(v.name)}, {self.local[v.name]}, "
                f"{self.shape_code(v.shape)}, {_shape_str(v.shape)!r}, {note})"
            )
        for dst in self.updated_inputs():
            lines.append(
                f"    _check_updatable({python_string(fn)}, {python_string(dst.name)}, {self.local[dst.name]})"
            )
        for s in p.scalars:
            lines.append(
                f"    {self.names[s]} = _check_scalar({python_string(fn)}, {python_string(str(s))}, {self.names[s]}, DTYPE)"
            )
        returned = [self.names[b] for b in p.batch] + [self.names[s] for s in p.scalars]
        lines.append(f"    return {', '.join(returned)}" if returned else "    return None")
        return lines

    def updated_inputs(self) -> list[Value]:
        return [dst for dst, src in self.p.updates if dst.name != src.name]

    def fast_check_lines(self) -> list[str]:
        p = self.p
        lines = []
        for sym, (i, axis) in self.binding().items():
            x = self.local[p.inputs[i].name]
            lines.append(
                f"    {self.names[sym]} = {x}.shape[{axis}] if type({x}) is ndarray and {x}.ndim == 2 else -1"
            )
        tests = []
        updated = {v.name for v in self.updated_inputs()}
        for v in p.inputs:
            x = self.local[v.name]
            test = f"type({x}) is ndarray and {x}.dtype is DTYPE and {x}.shape == {self.shape_code(v.shape)}"
            tests.append(test + (f" and {x}.flags.carray" if v.name in updated else ""))
        for s in p.scalars:
            x = self.names[s]  # a float finite in DTYPE (nan fails the comparisons)
            tests.append(f"type({x}) is float and -SCALAR_MAX <= {x} <= SCALAR_MAX")
        returned = [self.names[b] for b in p.batch] + [self.names[s] for s in p.scalars]
        target = f"{', '.join(returned)} = " if returned else ""
        call = f"{target}_check_{self.fn}({', '.join(self.argument_names())})"
        if not tests:
            return lines
        lines.append("    if not (")
        lines += [f"        {t}" if k == 0 else f"        and {t}" for k, t in enumerate(tests)]
        lines += ["    ):", f"        {call}"]
        return lines

    def body_lines(self) -> list[str]:
        p = self.p
        lines = [f"def {self.fn}({', '.join(self.argument_names())}):"]
        doc = self.docstring()
        lines.append(python_docstring("\n".join(doc), "    "))
        lines += self.fast_check_lines()
        statements: list[str] = []
        outputs = {v.name for v in p.outputs}
        for s in p.body:
            comment = getattr(s, "comment", "")
            block = python_comment(comment) if comment else []
            if s.out is not None and s.out.name in self.in_place:
                dst = self.local[self.in_place[s.out.name]]
                block.append(
                    f"{self.local[s.out.name]} = {dst}  # computed in place: the update of {dst}"
                )
            elif s.out is not None and s.out.name in outputs:
                block.append(
                    f"{self.local[s.out.name]} = empty({self.shape_code(s.out.shape)}, DTYPE)"
                )
            block += STATEMENTS[type(s)](self, s)
            statements += [""] + ["    " + line for line in block]
        statements += self.return_lines()
        work = self.work_locals()  # last: statements and updates create the scratch arrays
        if work:
            key, args = self.batch_key(), self.batch_args()
            tail = f" = _{self.fn}_buffers.get({key}) or _allocate_{self.fn}({args})"
            one = f"    {', '.join(work)}{tail}" if len(work) > 1 else f"    ({work[0]},){tail}"
            lines += (
                [one]
                if len(one) <= 96
                else ["    ("] + [f"        {w}," for w in work] + [f"    ){tail}"]
            )
        return lines + statements

    def docstring(self) -> list[str]:
        p = self.p
        lines = (p.doc.strip().splitlines() + [""]) if p.doc.strip() else []
        arrays = ", ".join(f"{v.name}{_shape_str(v.shape)}" for v in p.inputs)
        scalars = f"; {', '.join(map(str, p.scalars))}: float" if p.scalars else ""
        lines.append(f"Arguments: {arrays} {p.dtype} arrays{scalars}.")
        outputs = [v.name for v in p.outputs]
        lines.append(
            f"Returns ({', '.join(outputs)}{',' if len(outputs) == 1 else ''}) as new arrays."
        )
        if p.updates:
            lines.append("Then updates in place (new values computed from the old inputs):")
            lines += [f"    {dst.name} <- {src.name}" for dst, src in p.updates]
        return [part for line in lines for part in _wrap_text(line, LINE_LENGTH - 7)]

    def return_lines(self) -> list[str]:
        p = self.p
        inputs = {v.name for v in p.inputs}
        seen: set[str] = set()
        items = []
        for v in p.outputs:
            fresh = v.name not in inputs and v.name not in seen
            items.append(self.local[v.name] + ("" if fresh else ".copy()"))
            seen.add(v.name)
        result = f"({', '.join(items)}{',' if len(items) == 1 else ''})"
        updates = self.update_lines()
        if not updates:
            return ["", f"    return {result}"]
        return [
            "",
            f"    result = {result}",
            "    # updates: all new values were computed from the old inputs",
            *updates,
            "    return result",
        ]

    def update_lines(self) -> list[str]:
        p = self.p
        copies = [
            (dst, src)
            for dst, src in p.updates
            if src.name not in self.in_place and dst.name != src.name
        ]
        written = {dst.name for dst, _ in copies}
        inputs = {v.name for v in p.inputs}
        lines, source = [], {}
        for _, src in copies:  # an input read by one update and written by another: keep it
            if src.name in inputs and src.name in written and src.name not in source:
                snap = self.claim(f"old_{self.local[src.name]}")
                self.work_arrays.append((snap, src.shape, "DTYPE", None))
                lines.append(f"    copyto({snap}, {self.local[src.name]})")
                source[src.name] = snap
        for dst, src in copies:
            lines.append(
                f"    copyto({self.local[dst.name]}, {source.get(src.name, self.local[src.name])})"
            )
        return lines


def _check_program(p: Program) -> None:
    known = {v.name for v in p.inputs}
    for s in p.body:
        if type(s) not in STATEMENTS:
            raise NotImplementedError(
                f"the NumPy backend has no row for IR statement {type(s).__name__} "
                "in codegen.numpy.backend.STATEMENTS"
            )
        for v in s.reads:
            if v.name not in known:
                raise ValueError(f"{p.name}: a statement reads {v.name} before it is computed")
        if s.out is not None:
            known.add(s.out.name)
    for v in p.outputs:
        if v.name not in known:
            raise ValueError(f"{p.name}: output {v.name} is never computed")
    seen = set()
    for dst, src in p.updates:
        if dst.name not in {v.name for v in p.inputs}:
            raise ValueError(f"{p.name}: update target {dst.name} is not an input")
        if dst.name in seen:
            raise ValueError(f"{p.name}: input {dst.name} is updated twice")
        if src.name not in known:
            raise ValueError(
                f"{p.name}: update {dst.name} <- {src.name}: {src.name} is never computed"
            )
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(f"{p.name}: update {dst.name} <- {src.name} changes the shape")
        seen.add(dst.name)


# --------------------------------------------------------------------------
# One row per IR statement: source lines (without indentation).


def _gemm(w: _Writer, s: Gemm) -> list[str]:
    a = w.local[s.a.name] + (".T" if s.trans_a else "")
    b = w.local[s.b.name] + (".T" if s.trans_b else "")
    out = w.local[s.out.name]
    w.uses.add("dot")
    if s.alpha == 1:
        return [f"dot({a}, {b}, out={out})"]
    alpha = py_scalar(sp.sympify(s.alpha), w.names)
    if s.alpha == -1:
        w.uses.add("negative")
        return [f"dot({a}, {b}, out={out})", f"negative({out}, out={out})"]
    # fold alpha into the smallest of a, b and out (sizes compared at a batch of 256)
    sizes = {"a": s.a.shape, "b": s.b.shape, "out": s.out.shape}
    at = {sym: 256 for sym in w.p.batch}
    smallest = min(
        sizes,
        key=lambda k: (sp.sympify(sizes[k][0] * sizes[k][1]).subs(at), ["out", "a", "b"].index(k)),
    )
    w.uses.add("multiply")
    if smallest == "out":
        return [f"dot({a}, {b}, out={out})", f"multiply({out}, {alpha}, out={out})"]
    v = s.a if smallest == "a" else s.b
    pool = _Pool(w, v.shape)
    tmp = pool.take(FULL, "f")
    pool.give(tmp)
    scaled = tmp + (".T" if (s.trans_a if smallest == "a" else s.trans_b) else "")
    a, b = (scaled, b) if smallest == "a" else (a, scaled)
    return [f"multiply({w.local[v.name]}, {alpha}, out={tmp})", f"dot({a}, {b}, out={out})"]


def _elementwise_args(w: _Writer, s: Map | Reduce, domain) -> dict:
    return {
        sym: Array(w.local[v.name], w.kind(v.shape, domain))
        for sym, v in s.args
        if v.name not in w.per_step
    }


def _scalar_names(w: _Writer, s: Map | Reduce) -> dict:
    """Symbol -> Python text of program scalars and of per-step (1, 1) values (``v[0, 0]``)."""
    return {
        **w.names,
        **{sym: f"{w.local[v.name]}[0, 0]" for sym, v in s.args if v.name in w.per_step},
    }


# Python arithmetic on NumPy scalars keeps NumPy's semantics (inf/nan with a warning);
# math.exp & co. would raise instead, so (1, 1) statements use them through ufuncs.
_SCALAR_ARITHMETIC = (sp.Add, sp.Mul, sp.Abs, sp.Symbol, sp.Number)


def _map(w: _Writer, s: Map) -> list[str]:
    if s.out.name in w.per_step:  # a per-step scalar: Python arithmetic once, as inline before
        return [f"{w.local[s.out.name]}[0, 0] = {py_scalar(sp.sympify(s.body), w.names)}"]
    if all(d == 1 for d in s.out.shape) and all(
        isinstance(e, _SCALAR_ARITHMETIC) or (e.is_Pow and e.exp.is_Integer)
        for e in sp.preorder_traversal(sp.sympify(s.body))
    ):  # a (1, 1) value: a ufunc call costs more than the arithmetic
        names = {**w.names, **{sym: f"{w.local[v.name]}[0, 0]" for sym, v in s.args}}
        target, value = f"{w.local[s.out.name]}[0, 0]", py_scalar(sp.sympify(s.body), names)
        if len(target) + len(value) > 93 and isinstance(s.body, sp.Add):
            value = f"({value})"  # a long sum (a guard's): ruff splits it one term a line
        return [f"{target} = {value}"]
    pool = _Pool(w, s.out.shape)
    aliases = frozenset(w.local[v.name] for _, v in s.args if w.storage(v) == w.storage(s.out))
    body = lower_body(s.body, _elementwise_args(w, s, s.out.shape), _scalar_names(w, s), pool)
    return write_body(body, w.local[s.out.name], FULL, aliases, pool, w.uses)


def _reduce(w: _Writer, s: Reduce) -> list[str]:
    expected = {0: (1, s.domain[1]), 1: (s.domain[0], 1), None: (1, 1)}[s.axis]
    if tuple(s.out.shape) != tuple(expected):
        raise ValueError(
            f"reduce over axis {s.axis} of {_shape_str(s.domain)} gives "
            f"{_shape_str(expected)}, not {_shape_str(s.out.shape)}"
        )
    pool, out = _Pool(w, s.domain), w.local[s.out.name]
    args, scalars = _elementwise_args(w, s, s.domain), _scalar_names(w, s)
    # sum(c * f) = c * sum(f): scale the small result, not every term
    factors = sp.Mul.make_args(sp.sympify(s.body))
    coeff = sp.Mul(*[f for f in factors if not f.free_symbols & set(args)])
    body = lower_body(
        sp.Mul(*[f for f in factors if f.free_symbols & set(args)]), args, scalars, pool
    )
    root, lines = body.root, []
    if s.axis is None and isinstance(root, Op) and root.fn in ("multiply", "square"):
        if all(a.kind == FULL for a in root.args):  # sum(a * b), sum(a**2): one BLAS dot
            names = []
            for a in root.args:
                if isinstance(a, Array):
                    names.append(a.name)
                else:
                    names.append(pool.take(FULL, "f"))
                    lines += write_body(
                        Body(a, body.needs_errstate), names[-1], FULL, frozenset(), pool, w.uses
                    )
            for name in names:
                pool.give(name)
            w.uses.add("vdot")
            return lines + _scaled_total(scalars, out, coeff, f"vdot({names[0]}, {names[-1]})")
    if isinstance(root, Array) and root.kind == FULL:
        summed = root.name  # the body is one argument: sum it directly
    else:
        summed = pool.take(FULL, "f")
        lines = write_body(body, summed, FULL, frozenset(), pool, w.uses)
        pool.give(summed)
    if s.axis is None:
        w.uses.add("add_reduce")
        return lines + _scaled_total(scalars, out, coeff, f"add_reduce({summed}, axis=None)")
    # column / row sums as a product with ones: BLAS gemv beats add.reduce 2-4x
    w.uses.add("dot")
    if s.axis == 0:
        lines.append(f"dot({w.constant(1, (1, s.domain[0]))}, {summed}, out={out})")
    else:
        lines.append(f"dot({summed}, {w.constant(1, (s.domain[1], 1))}, out={out})")
    if coeff != 1:
        w.uses.add("multiply")
        lines.append(f"multiply({out}, {py_scalar(coeff, scalars)}, out={out})")
    return lines


def _scaled_total(names: dict, out: str, coeff: sp.Expr, total: str) -> list[str]:
    placeholder = sp.Dummy("total")
    return [f"{out}[0, 0] = {py_scalar(coeff * placeholder, {**names, placeholder: total})}"]


def _softmax(w: _Writer, s: Softmax) -> list[str]:
    z, out = w.local[s.a.name], w.local[s.out.name]
    pool = _Pool(w, s.out.shape)
    col = pool.take((True, False), "f")
    ones = w.constant(1, (s.out.shape[1], 1))  # row sums as a gemv
    w.uses |= {"maximum_reduce", "dot", "subtract", "exp"}
    lines = [
        f"maximum_reduce({z}, axis=1, keepdims=True, out={col})  # row max: exp never overflows",
        f"subtract({z}, {col}, out={out})",
    ]
    if s.log:  # z - max - log(sum(exp(z - max)))
        tmp = pool.take(FULL, "f")
        w.uses.add("log")
        lines += [
            f"exp({out}, out={tmp})",
            f"dot({tmp}, {ones}, out={col})",
            f"log({col}, out={col})",
            f"subtract({out}, {col}, out={out})",
        ]
        pool.give(tmp)
    else:  # exp(z - max) / sum(exp(z - max)), dividing via one reciprocal per row
        w.uses |= {"divide", "multiply"}
        lines += [
            f"exp({out}, out={out})",
            f"dot({out}, {ones}, out={col})",
            f"divide(1.0, {col}, out={col})",
            f"multiply({out}, {col}, out={out})",
        ]
    pool.give(col)
    return lines


def _transpose(w: _Writer, s: Transpose) -> list[str]:
    return [f"copyto({w.local[s.out.name]}, {w.local[s.a.name]}.T)"]


def _columns(w: _Writer, s: Columns) -> list[str]:
    out, lines, offset = w.local[s.out.name], [], 0
    for v, start, stop in s.parts:
        whole = (start, stop) == (0, int(v.shape[1]))
        source = w.local[v.name] + ("" if whole else f"[:, {start}:{stop}]")
        lines.append(f"copyto({out}[:, {offset}:{offset + stop - start}], {source})")
        offset += stop - start
    return lines


def _keep_mask(w: _Writer, s: KeepMask) -> list[str]:
    """splitmix64 of the element index in the stream of (key, counter): codegen.ir.keep_bits."""
    out, key, bits = w.local[s.out.name], w.claim("key", True), w.claim("bits", True)
    rows, cols = (w.dim(d) for d in s.out.shape)
    mix = [(f"{k} ^ {k} >> {shift}", multiplier) for k in (key,) for shift, multiplier in MIX]
    lines = [
        f"{key} = ({s.key:#x} + int({py_scalar(sp.sympify(s.counter), w.names)}) * {GOLDEN:#x}) % 2**64"
    ]
    for z, multiplier in mix:  # the step's key, in Python integers
        lines.append(
            f"{key} = ({z}) * {multiplier:#x} % 2**64" if multiplier else f"{key} ^= {key} >> 31"
        )
    lines += [  # each element's hash, in uint64 arrays (they wrap as the native code does)
        f"{bits} = arange(1, {rows} * {cols} + 1, dtype=uint64)",
        f"{bits} *= {GOLDEN:#x}",
        f"{bits} += {key}",
    ]
    for shift, multiplier in MIX:
        lines.append(f"{bits} ^= {bits} >> {shift}")
        if multiplier:
            lines.append(f"{bits} *= {multiplier:#x}")
    scale = py_scalar(sp.sympify(s.scale), w.names)
    w.uses.add("multiply")
    lines.append(
        f"multiply({bits}.reshape({rows}, {cols}) >> 32 >= {s.threshold}, {scale}, out={out})"
    )
    return lines


def _rows_of(w: _Writer, indices: Value, table_rows) -> str:
    """The index matrix as row numbers, clamped to the table (codegen.ir.Gather)."""
    return f"{w.local[indices.name]}.astype(intp).clip(0, {w.dim(table_rows)} - 1)"


def _gather(w: _Writer, s: Gather) -> list[str]:
    rows = _rows_of(w, s.indices, s.table.shape[0])
    out, table = w.local[s.out.name], w.local[s.table.name]
    return [f"{out}[...] = take({table}, {rows}, axis=0).reshape({out}.shape)"]


def _scatter_add(w: _Writer, s: ScatterAdd) -> list[str]:
    rows = _rows_of(w, s.indices, s.out.shape[0])
    out, source = w.local[s.out.name], w.local[s.source.name]
    width = w.dim(s.out.shape[1])
    return [  # add.at sums repeated rows in order, as the native loop does
        f"{out}[...] = 0",
        f"add.at({out}, {rows}.ravel(), {source}.reshape(-1, {width}))",
    ]


def _span(start: int, count: int, step: int) -> str:
    """The slice of ``count`` indices from ``start``, ``step`` apart."""
    stop = start + (count - 1) * step + 1
    return f"{start}:{stop}" + (f":{step}" if step != 1 else "")


def _window_views(w: _Writer, s, image: str, windows: str) -> tuple[list[str], str, str]:
    """Lines binding ``(n, H, W, C)`` and ``(n, Ho, Wo, taps...)`` views of the two arrays."""
    win: Window = s.window
    img, wins = w.claim("image", numbered=True), w.claim("windows", numbered=True)
    taps = (
        f"{win.channels}, {win.k_h}, {win.k_w}"
        if win.depthwise
        else (f"{win.k_h}, {win.k_w}, {win.channels}")
    )
    return (
        [
            f"{img} = {image}.reshape(-1, {win.in_h}, {win.in_w}, {win.channels})",
            f"{wins} = {windows}.reshape(-1, {win.out_h}, {win.out_w}, {taps})",
        ],
        img,
        wins,
    )


def _tap_slices(win: Window, img: str, wins: str):
    """(image slice, windows slice) of each tap (u, v) that reads inside the image."""
    for u in range(win.k_h):
        for v in range(win.k_w):
            rows, cols, y, x = win.taps(u, v)
            if not rows or not cols:
                continue
            src = f"{img}[:, {_span(y, len(rows), win.stride_h)}, {_span(x, len(cols), win.stride_w)}]"
            at = f"{rows.start}:{rows.stop}, {cols.start}:{cols.stop}"
            dst = f"{wins}[:, {at}, :, {u}, {v}]" if win.depthwise else f"{wins}[:, {at}, {u}, {v}]"
            yield src, dst


def _im2col(w: _Writer, s: Im2Col) -> list[str]:
    """Each window tap (u, v) is one strided slice of the images: kh*kw copies in all."""
    lines, img, wins = _window_views(w, s, w.local[s.a.name], w.local[s.out.name])
    if s.window.padded:
        lines.append(f"{wins}.fill({'-math.inf' if s.window.lowest else '0.0'})  # padding")
    lines += [f"copyto({dst}, {src})" for src, dst in _tap_slices(s.window, img, wins)]
    return lines


def _col2im(w: _Writer, s: Col2Im) -> list[str]:
    """The adjoint: each tap's slice of the windows added into the images where it was read."""
    lines, img, wins = _window_views(w, s, w.local[s.out.name], w.local[s.a.name])
    lines.append(f"{img}.fill(0.0)")
    lines += [f"add({src}, {dst}, out={src})" for src, dst in _tap_slices(s.window, img, wins)]
    return lines


def _reshape(w: _Writer, s: Reshape) -> list[str]:
    out = w.local[s.out.name]
    return [f"copyto({out}, {w.local[s.a.name]}.reshape({out}.shape))"]


def _row_max(w: _Writer, s: RowMax) -> list[str]:
    return [
        f"maximum_reduce({w.local[s.a.name]}, axis=1, keepdims=True, out={w.local[s.out.name]})"
    ]


def _guard(w: _Writer, s: Guard) -> list[str]:
    v = w.local[s.value.name]
    return [
        f"if not math.isfinite({v}[0, 0]):  {python_comment(f'guard: {s.what}')[0]}",
        f"    raise _not_finite({python_string(w.p.name)}, {python_string(s.what)}, {v}[0, 0])",
    ]


STATEMENTS: dict[type, Callable[[_Writer, object], list[str]]] = {
    Gemm: _gemm,
    Map: _map,
    Reduce: _reduce,
    Softmax: _softmax,
    Transpose: _transpose,
    Columns: _columns,
    KeepMask: _keep_mask,
    Gather: _gather,
    ScatterAdd: _scatter_add,
    Im2Col: _im2col,
    Col2Im: _col2im,
    Reshape: _reshape,
    RowMax: _row_max,
    Guard: _guard,
}
