"""codegen.ir: the linear SSA program between symbolic graphs and backends.

A :class:`Program` is a list of statements ``out = op(inputs)``.  Every value is
a 2-D matrix whose shape entries are integers or SymPy expressions of the batch
symbols (bound at call time from the shapes of the inputs).  Elementwise work is
carried by :class:`Map` / :class:`Reduce` statements whose body is a SymPy
*scalar* expression; backends print that body (NumPy ufunc calls, LLVM loops).

The scalar vocabulary a body may use is :data:`SCALAR_VOCABULARY`: numbers,
the bound argument symbols, free scalar symbols listed in ``Program.scalars``
or in ``Program.batch``, arithmetic, ``exp``, ``log``, ``tanh``, ``erf``,
``log1p`` and ``expm1`` (``sympy.codegen.cfunctions``: log(1 + x) and e^x - 1,
accurate near x = 0), ``Abs``, ``sign``, ``Max``, ``Min``, ``Heaviside(x, h0)``, ``Piecewise`` with
relational and logical conditions, and symgrad's own ``sigmoid`` and
``softplus`` (known by name, :data:`NAMED_FUNCTIONS`), which backends must
evaluate in a numerically stable way. Every backend has one row per entry and
raises ``NotImplementedError`` naming anything else (``tests/test_op_tables.py``
checks the tables against this list).

Broadcasting in ``Map`` / ``Reduce``: each argument's shape is either the
statement's domain shape ``(r, c)``, a row ``(1, c)``, a column ``(r, 1)`` or a
``(1, 1)`` scalar; it is broadcast over the domain.
"""

from __future__ import annotations

import math
import numbers
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.logic.boolalg import BooleanTrue

Shape = tuple[sp.Expr, sp.Expr]

# --------------------------------------------------------------------------
# Scalar arguments: one rule for every backend

SCALAR_CHECK = """
def _check_scalar(function, name, value, dtype):
    \"\"\"A scalar argument as a float: a real number (not a bool), finite in ``dtype``.\"\"\"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{function}: argument {name} must be a real number; Received: {name}={value!r}"
        )
    try:
        number = float(value)
    except OverflowError:  # an int beyond float64
        number = math.inf
    limit = float(numpy.finfo(dtype).max)
    if not -limit <= number <= limit:  # nan fails both comparisons
        raise ValueError(
            f"{function}: argument {name} must be finite in {numpy.dtype(dtype).name} "
            f"(|{name}| <= {limit:.8g}); Received: {name}={value!r}"
        )
    return number
"""
"""The source of ``_check_scalar``: copied into generated NumPy modules, run here for the rest."""

_scalar_namespace: dict = {"math": math, "numbers": numbers, "numpy": numpy}
exec(SCALAR_CHECK, _scalar_namespace)  # noqa: S102 - our own constant text, as generated modules
check_scalar = _scalar_namespace["_check_scalar"]
check_scalar.__doc__ = """``check_scalar(function, name, value, dtype) -> float``: the rule every backend applies
to a scalar argument (bools, non-numbers and values that are not finite once converted to
``dtype`` -- nan, inf, 1e39 in float32 -- are rejected with a message naming the argument)."""

NOT_FINITE = """
def _not_finite(function, what, value=None, batch=None):
    \"\"\"The error of a failed guard: ``what`` (a guard's name) is ``value`` (None: nan or inf).\"\"\"
    shown = "nan or inf" if value is None else repr(float(value))
    if batch is None:
        where, kept = "", "no input was updated"
    else:
        where, kept = f" at batch {batch} (0-based)", "the inputs are as after the batch before it"
    err = FloatingPointError(f"{function}: {what} is not finite ({shown}){where}; {kept}")
    err.guard, err.batch = what, batch
    return err
"""
"""The source of ``_not_finite``: copied into generated NumPy modules, run here for the rest.
The error carries the guard's name (``guard``) and, from an epoch loop, the batch (``batch``)."""

exec(NOT_FINITE, _scalar_namespace)  # noqa: S102 - our own constant text, as generated modules
not_finite = _scalar_namespace["_not_finite"]

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Value:
    """A named 2-D matrix value. ``name`` is a valid identifier (``Z1``, ``dW1``)."""

    name: str
    shape: Shape

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Gemm:
    """``out = alpha * op(a) @ op(b)`` with ``op`` = transpose when the flag is set."""

    out: Value
    a: Value
    b: Value
    trans_a: bool = False
    trans_b: bool = False
    alpha: sp.Expr = sp.S.One
    comment: str = ""

    in_place: ClassVar[bool] = False  # out[i, j] needs whole rows / columns of a and b
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Map:
    """``out[i, j] = body(args broadcast at [i, j])``; ``args`` pairs (symbol, value)."""

    out: Value
    body: sp.Expr
    args: tuple[tuple[sp.Symbol, Value], ...]
    comment: str = ""

    in_place: ClassVar[bool] = True  # out[i, j] reads only [i, j] of full-shape operands
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return tuple(v for _, v in self.args)


@dataclass(frozen=True)
class Reduce:
    """Sum of ``body(args)`` over ``domain``: axis 0 -> (1, c), 1 -> (r, 1), None -> (1, 1)."""

    out: Value
    body: sp.Expr
    args: tuple[tuple[sp.Symbol, Value], ...]
    domain: Shape
    axis: int | None
    comment: str = ""

    in_place: ClassVar[bool] = False  # a sum over many elements
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return tuple(v for _, v in self.args)


@dataclass(frozen=True)
class Softmax:
    """Row-wise softmax (``log=False``) or log-softmax (``log=True``), max-shifted."""

    out: Value
    a: Value
    log: bool = False
    comment: str = ""

    in_place: ClassVar[bool] = False  # a row is read again after its first entry is written
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.a,)


@dataclass(frozen=True)
class Transpose:
    """``out = a.T`` materialized (only where it cannot fold into a GEMM flag)."""

    out: Value
    a: Value
    comment: str = ""

    in_place: ClassVar[bool] = False  # out[j, i] overwrites a[j, i], still to be read
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.a,)


@dataclass(frozen=True)
class Columns:
    """``out = [a[:, s:e] | b[:, s:e] | ...]``: column ranges of operands side by side.

    A concatenation (each part whole) or a slice (one part); widths are fixed
    integers, the rows those of ``out``.
    """

    out: Value
    parts: tuple[tuple[Value, int, int], ...]  # (operand, first column, end column)
    comment: str = ""

    in_place: ClassVar[bool] = False  # a part may be read after out's columns were written
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return tuple(v for v, _, _ in self.parts)


# The counter-based generator of keep masks (dropout): splitmix64 (Steele, Lea and
# Flood, "Fast splittable pseudorandom number generators", 2014) of the element index in
# the stream of (key, step counter). Every backend computes it with the same 64-bit
# integer operations, so the masks are bit-identical on all of them.
GOLDEN = 0x9E3779B97F4A7C15  # the splitmix64 increment (2^64 / golden ratio)
MIX = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None))  # shift, multiplier
MASK64 = (1 << 64) - 1


def mix64(z: int) -> int:
    """The splitmix64 finalizer of a 64-bit integer: z ^= z >> 30; z *= C1; ..."""
    for shift, multiplier in MIX:
        z ^= z >> shift
        if multiplier is not None:
            z = z * multiplier & MASK64
    return z


def stream_key(seed: int, salt: int) -> int:
    """The 64-bit key of one mask stream: a seed and a salt (which mask of the model) mixed."""
    return mix64((mix64(seed & MASK64) + (salt + 1) * GOLDEN) & MASK64)


def step_key(key: int, counter: int) -> int:
    """The key of one step of a stream: ``mix64(key + counter * GOLDEN)``."""
    return mix64((key + counter * GOLDEN) & MASK64)


def keep_threshold(rate: float) -> int:
    """An entry is kept when the top 32 bits of its hash are >= this (P(keep) = 1 - rate)."""
    return round(float(rate) * 2**32)


def keep_bits(key: int, counter: int, size: int) -> numpy.ndarray:
    """The top 32 bits of element ``0 .. size - 1``'s hash (the reference the backends match)."""
    z = numpy.arange(1, size + 1, dtype=numpy.uint64) * numpy.uint64(GOLDEN)
    z += numpy.uint64(step_key(key, counter))
    for shift, multiplier in MIX:
        z ^= z >> numpy.uint64(shift)
        if multiplier is not None:
            z *= numpy.uint64(multiplier)
    return z >> numpy.uint64(32)


@dataclass(frozen=True)
class KeepMask:
    """``out[i, j] = scale`` if ``keep_bits(key, counter)[i * cols + j] >= threshold``, else 0.

    The dropout mask of one step: a counter-based generator (:func:`keep_bits`), so a
    mask depends only on the stream ``key``, the step ``counter`` (a program scalar such as
    the step number ``t``, or a number) and the element's position, never on state.
    """

    out: Value
    key: int
    counter: sp.Expr
    threshold: int
    scale: sp.Expr
    comment: str = ""

    in_place: ClassVar[bool] = False  # reads no matrix
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return ()


@dataclass(frozen=True)
class Gather:
    """``out[i, k d + j] = table[index(i, k), j]``: rows of a (V, d) table picked by the
    (n, s) matrix ``indices`` (integers held as floats), side by side: an embedding lookup.

    ``index(i, k)`` is ``indices[i, k]`` clamped to ``[0, V - 1]`` (the training API
    refuses indices outside that range before any code runs; the clamp keeps every
    read inside the table whatever a caller of the generated code passes).
    """

    out: Value
    table: Value
    indices: Value
    comment: str = ""

    in_place: ClassVar[bool] = False  # out is wider than its operands
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.table, self.indices)


@dataclass(frozen=True)
class ScatterAdd:
    """``out[v, j] = sum of source[i, k d + j] over (i, k) with index(i, k) = v``, (V, d):
    the adjoint of :class:`Gather` (an embedding's gradient), summed in the order of
    ``i`` then ``k`` on every backend; ``index`` clamped as for :class:`Gather`."""

    out: Value
    source: Value
    indices: Value
    comment: str = ""

    in_place: ClassVar[bool] = False  # a sum over scattered rows
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.source, self.indices)


@dataclass(frozen=True)
class Window:
    """The windows of ``(in_h, in_w, channels)`` images, channels last (symgrad.core.Window):
    ``k_h x k_w`` taps ``dil`` apart, windows ``stride`` apart, the first shifted up/left
    by ``pad``; ``depthwise``: a row per channel; ``lowest``: taps outside read -inf."""

    in_h: int
    in_w: int
    channels: int
    k_h: int
    k_w: int
    stride_h: int
    stride_w: int
    dil_h: int
    dil_w: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int
    depthwise: bool = False
    lowest: bool = False

    def taps(self, u: int, v: int) -> tuple[range, range, int, int]:
        """For tap (u, v): the window rows i and columns j whose tap falls inside the image,
        and the image row and column the first of them reads (the next ``stride`` apart)."""
        rows = _inside(self.out_h, self.in_h, self.stride_h, u * self.dil_h - self.pad_top)
        cols = _inside(self.out_w, self.in_w, self.stride_w, v * self.dil_w - self.pad_left)
        y = rows.start * self.stride_h + u * self.dil_h - self.pad_top
        x = cols.start * self.stride_w + v * self.dil_w - self.pad_left
        return rows, cols, y, x

    @property
    def padded(self) -> bool:
        """Whether some tap of some window falls outside the image."""
        return any(
            len(r) < self.out_h or len(c) < self.out_w
            for u in range(self.k_h)
            for v in range(self.k_w)
            for r, c, _, _ in [self.taps(u, v)]
        )


def _inside(windows: int, size: int, stride: int, offset: int) -> range:
    """The windows ``i < windows`` with ``0 <= i*stride + offset < size``."""
    first = -(offset // stride) if offset < 0 else 0  # ceil(-offset / stride)
    stop = min(windows, -(-(size - offset) // stride))  # ceil((size - offset) / stride)
    return range(min(first, stop), stop) if stop > 0 else range(0)


@dataclass(frozen=True)
class Im2Col:
    """``out = im2col(a)``: each window of each image row of ``a`` as one row of ``out``
    (``(n*Ho*Wo, kh*kw*C)``, entries ``(u, v, c)``; depthwise ``(n*Ho*Wo*C, kh*kw)``)."""

    out: Value
    a: Value
    window: Window
    comment: str = ""

    in_place: ClassVar[bool] = False  # a gather
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.a,)


@dataclass(frozen=True)
class Col2Im:
    """``out = col2im(a)``: the window rows of ``a`` added back into image rows (im2col's adjoint)."""

    out: Value
    a: Value
    window: Window
    comment: str = ""

    in_place: ClassVar[bool] = False  # a scatter-add
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.a,)


@dataclass(frozen=True)
class Reshape:
    """``out = a`` with another shape of the same size (row-major order)."""

    out: Value
    a: Value
    comment: str = ""

    in_place: ClassVar[bool] = False  # shapes differ
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.a,)


@dataclass(frozen=True)
class RowMax:
    """``out[i, 0] = max_j a[i, j]``."""

    out: Value
    a: Value
    comment: str = ""

    in_place: ClassVar[bool] = False  # a reduction
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.a,)


@dataclass(frozen=True)
class Guard:
    """Abort the call before any update when the (1, 1) ``value`` is nan or inf.

    Backends raise ``FloatingPointError`` (NumPy) or return a nonzero status
    (native code) naming ``what``; no input buffer is written in that case.
    """

    value: Value
    what: str

    out: ClassVar[None] = None
    in_place: ClassVar[bool] = False  # writes nothing
    aborts: ClassVar[bool] = True  # the call may stop here, before any update

    def __post_init__(self) -> None:
        if tuple(self.value.shape) != (1, 1):
            raise ValueError(
                f"guard on {self.value.name} needs a (1, 1) value; "
                f"received: shape={shape_str(self.value.shape)}"
            )

    @property
    def reads(self) -> tuple[Value, ...]:
        return (self.value,)


Stmt = (
    Gemm
    | Map
    | Reduce
    | Softmax
    | Transpose
    | Columns
    | Im2Col
    | Col2Im
    | Reshape
    | RowMax
    | KeepMask
    | Gather
    | ScatterAdd
    | Guard
)

STATEMENTS: tuple[type, ...] = typing.get_args(Stmt)
"""Every IR statement class. Each has ``out`` (None for Guard), ``reads``, and two rows of
the buffer plan: ``in_place`` (its output may share the buffer of an operand of the same
shape) and ``aborts`` (the call may stop there, before any update is written)."""


@dataclass
class Program:
    """A callable unit: ``name(*inputs, *scalars) -> outputs``, then ``updates``.

    ``updates`` pairs (input, new value): after all outputs are computed and all
    guards passed, each new value is written into its input's buffer, in place.
    All updates read the *old* inputs (they take effect together).
    ``batch`` lists the symbols used in shapes; each is bound from the first
    input whose shape mentions it as a bare dimension.
    """

    name: str
    inputs: tuple[Value, ...]
    scalars: tuple[sp.Symbol, ...]
    body: tuple[Stmt, ...]
    outputs: tuple[Value, ...]
    updates: tuple[tuple[Value, Value], ...] = ()
    dtype: str = "float64"
    batch: tuple[sp.Symbol, ...] = ()
    doc: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}; received: dtype={self.dtype!r}")

    def values(self) -> dict[str, Value]:
        """Every value by name: inputs and statement outputs."""
        found = {v.name: v for v in self.inputs}
        for s in self.body:
            if s.out is not None:
                found[s.out.name] = s.out
        return found

    def batch_binding(self) -> dict[sp.Symbol, tuple[int, int]]:
        """For each batch symbol, (input index, axis) it is read from."""
        where = {}
        for sym in self.batch:
            for i, v in enumerate(self.inputs):
                for axis, dim in enumerate(v.shape):
                    if dim == sym and sym not in where:
                        where[sym] = (i, axis)
            if sym not in where:
                raise ValueError(
                    f"batch symbol {sym} is not a dimension of any input of {self.name}"
                )
        return where

    def __str__(self) -> str:
        return format_program(self)


def shape_str(shape: Shape) -> str:
    return f"({shape[0]}, {shape[1]})"


def _args(pairs) -> str:
    return ", ".join(f"{k}={v}" for k, v in pairs)


def _window_text(w: Window) -> str:
    """``image=(8, 8, 1), kernel=(3, 3), stride=(1, 1), dilation=(1, 1), pad=(1, 1), out=(8, 8)``"""
    text = (
        f"image=({w.in_h}, {w.in_w}, {w.channels}), kernel=({w.k_h}, {w.k_w}), "
        f"stride=({w.stride_h}, {w.stride_w}), dilation=({w.dil_h}, {w.dil_w}), "
        f"pad=({w.pad_top}, {w.pad_left}), out=({w.out_h}, {w.out_w})"
    )
    return text + (", depthwise" if w.depthwise else "") + (", fill=-inf" if w.lowest else "")


def _gemm_text(s: Gemm) -> str:
    a = f"{s.a}.T" if s.trans_a else str(s.a)
    b = f"{s.b}.T" if s.trans_b else str(s.b)
    scale = "" if s.alpha == 1 else f"{s.alpha} * "
    return f"gemm({scale}{a} @ {b})"


FORMAT: dict[type, Callable[[Stmt], str]] = {
    Gemm: _gemm_text,  # gemm(alpha * A.T @ B)
    Map: lambda s: f"map[{_args(s.args)}]({s.body})",  # map[x=A](body)
    Reduce: lambda s: (  # reduce_sum[axis=0, domain=(n, 3); x=A](body)
        f"reduce_sum[axis={s.axis}, domain={shape_str(s.domain)}; {_args(s.args)}]({s.body})"
    ),
    Softmax: lambda s: f"{'log_softmax' if s.log else 'softmax'}({s.a})",  # softmax(Z)
    Transpose: lambda s: f"transpose({s.a})",  # transpose(A)
    Columns: lambda s: (  # columns(A[:, 0:3], B[:, 0:2])
        "columns(" + ", ".join(f"{v}[:, {start}:{stop}]" for v, start, stop in s.parts) + ")"
    ),
    KeepMask: lambda s: (  # keep_mask[key=0x..., keep >= 2147483648; scale=2](t)
        f"keep_mask[key={s.key:#018x}, keep >= {s.threshold}; scale={s.scale}]({s.counter})"
    ),
    Gather: lambda s: f"gather({s.table}, rows={s.indices})",  # gather(W, rows=X)
    ScatterAdd: lambda s: f"scatter_add({s.source}, rows={s.indices})",  # scatter_add(G, rows=X)
    Im2Col: lambda s: f"im2col[{_window_text(s.window)}]({s.a})",  # im2col[...](X)
    Col2Im: lambda s: f"col2im[{_window_text(s.window)}]({s.a})",  # col2im[...](G)
    Reshape: lambda s: f"reshape({s.a}, {shape_str(s.out.shape)})",  # reshape(A, (n, 64))
    RowMax: lambda s: f"rowmax({s.a})",  # rowmax(A)
    Guard: lambda s: f"guard_finite({s.value})  # {s.what}",  # guard_finite(L)  # why
}
"""Statement class -> its right-hand side as text (the whole line for Guard, which has no out)."""


def format_stmt(s: Stmt) -> str:
    rule = FORMAT.get(type(s))
    if rule is None:
        raise NotImplementedError(
            f"codegen.ir.FORMAT has no row for IR statement {type(s).__name__}"
        )
    if s.out is None:
        return rule(s)
    return f"{s.out.name}{shape_str(s.out.shape)} = {rule(s)}"


def format_program(p: Program) -> str:
    args = [f"{v.name}{shape_str(v.shape)}" for v in p.inputs] + [str(s) for s in p.scalars]
    lines = [f"program {p.name}({', '.join(args)}) dtype={p.dtype}"]
    lines += ["  " + format_stmt(s) for s in p.body]
    lines.append("  return " + ", ".join(v.name for v in p.outputs))
    lines += [f"  update {dst.name} <- {src.name}" for dst, src in p.updates]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The scalar vocabulary: how backends find the row for a node of a body

NAMED_FUNCTIONS = ("sigmoid", "softplus")
"""Functions of the vocabulary that SymPy does not define, known to codegen by name."""

SCALAR_ATOMS: tuple[type, ...] = (
    sp.Symbol,  # a bound argument, a program scalar or a batch symbol
    sp.Number,  # Integer, Rational, Float, oo, nan
    sp.NumberSymbol,  # pi, E
    BooleanTrue,  # the condition of a Piecewise's last branch (SymPy drops false ones)
)
"""Leaves of a scalar body."""

SCALAR_FUNCTIONS: tuple[type | str, ...] = (
    sp.Add,  # a + b + ...
    sp.Mul,  # a * b * ...
    sp.Pow,  # a ** b
    sp.exp,
    sp.log,
    log1p,  # log(1 + x), accurate near 0
    expm1,  # exp(x) - 1, accurate near 0
    sp.tanh,
    sp.erf,
    sp.cos,
    sp.floor,  # largest integer <= x
    "sigmoid",  # 1 / (1 + exp(-x)), stable at any x
    "softplus",  # log(1 + exp(x)), stable at any x
    sp.Abs,
    sp.sign,  # sign(0) = 0
    sp.Max,  # nan propagates
    sp.Min,  # nan propagates
    sp.Heaviside,  # H(x, h0), H(0) = h0 (default 1/2)
    sp.Piecewise,  # first true condition; nan when none holds
    sp.StrictLessThan,  # a < b
    sp.LessThan,  # a <= b
    sp.StrictGreaterThan,  # a > b
    sp.GreaterThan,  # a >= b
    sp.Equality,  # a == b
    sp.Unequality,  # a != b (true when either is nan)
    sp.And,
    sp.Or,
    sp.Not,
)
"""Operators and functions of a scalar body: classes, or names in :data:`NAMED_FUNCTIONS`."""

SCALAR_VOCABULARY: tuple[type | str, ...] = SCALAR_ATOMS + SCALAR_FUNCTIONS
"""Everything a Map / Reduce body may contain; each backend's scalar table has these rows."""


def scalar_rule(table: dict, e: sp.Basic, where: str):
    """The row of ``table`` for the scalar node ``e``.

    Rows are keyed by SymPy class (found along the class's MRO, so ``sp.Number``
    covers ``Integer`` and ``Float``) or, for :data:`NAMED_FUNCTIONS`, by name.
    A node without a row raises ``NotImplementedError`` naming it and ``where``.
    """
    for cls in type(e).__mro__:
        if cls in table:
            return table[cls]
    name = type(e).__name__
    if name in NAMED_FUNCTIONS and name in table and isinstance(e, sp.Function):
        return table[name]
    known = sorted(k if isinstance(k, str) else k.__name__ for k in table)
    raise NotImplementedError(
        f"{where} has no row for {name} (in {e}); it is not in the scalar vocabulary of "
        f"codegen.ir. Rows: {', '.join(known)}"
    )


def is_named_function(e: sp.Basic, name: str) -> bool:
    """``e`` is an application of the vocabulary function ``name`` (``sigmoid``, ``softplus``)."""
    return name in NAMED_FUNCTIONS and isinstance(e, sp.Function) and type(e).__name__ == name


# --------------------------------------------------------------------------
# Scalar identities every backend applies the same way

_EXTREMUM = {
    sp.StrictGreaterThan: sp.Max,
    sp.GreaterThan: sp.Max,
    sp.StrictLessThan: sp.Min,
    sp.LessThan: sp.Min,
}
_OTHER_EXTREMUM = {sp.Max: sp.Min, sp.Min: sp.Max}


def as_extremum(value: sp.Expr, cond: sp.Basic, other: sp.Expr) -> sp.Expr | None:
    """``Piecewise((a, a > b), (b, True))`` -> ``Max(a, b)`` (``<`` gives ``Min``), else None.

    Backends evaluate the result as a max/min, so ``relu(nan)`` is nan on all of them.
    """
    kind = _EXTREMUM.get(type(cond))
    if kind is None:
        return None
    if (cond.lhs, cond.rhs) == (value, other):
        return kind(value, other, evaluate=False)
    if (cond.lhs, cond.rhs) == (other, value):  # b < a reads as a > b
        return _OTHER_EXTREMUM[kind](value, other, evaluate=False)
    return None


def sigmoid_complement(e: sp.Add) -> sp.Expr | None:
    """``1 - sigmoid(u) + rest`` -> ``sigmoid(-u) + rest`` (unevaluated), else None.

    SymPy graphs keep ``sigmoid(-u)`` as ``1 - sigmoid(u)`` (one canonical node);
    evaluated that way it rounds to 0 wherever sigmoid(u) rounds to 1 (u > 37 in
    float64), while sigmoid(-u) keeps every digit down to the underflow.
    """
    terms = list(e.args)
    if sp.S.One not in terms:
        return None
    for t in terms:
        coeff, s = t.as_coeff_Mul()
        if coeff == -1 and is_named_function(s, "sigmoid"):
            rest = [u for u in terms if u is not t]
            rest.remove(sp.S.One)
            flipped = s.func(-s.args[0], evaluate=False)
            return sp.Add(flipped, *rest, evaluate=False) if rest else flipped
    return None


# --------------------------------------------------------------------------
# Buffer plan: which statement outputs may share storage.


@dataclass
class BufferPlan:
    """``buffer[value name] -> buffer name``; ``shapes[buffer name] -> shape``.

    Inputs keep their own storage (named after the input).  A statement output
    reuses the buffer of a value whose last read is at or before that statement
    (same shape), except: outputs and update sources get buffers nobody else
    reuses, and only a statement class with ``in_place`` (Map: elementwise) may
    write a buffer it reads, and only that of an operand with its full shape.
    """

    buffer: dict[str, str]
    shapes: dict[str, Shape]
    in_place_updates: dict[str, str]  # update source value -> input it may be computed into


def _last_reads(p: Program) -> dict[str, int]:
    last: dict[str, int] = {}
    for i, s in enumerate(p.body):
        for v in s.reads:
            last[v.name] = i
    end = len(p.body)
    for v in p.outputs:
        last[v.name] = end
    for dst, src in p.updates:
        last[src.name] = end
        last[dst.name] = end
    return last


def plan_buffers(p: Program) -> BufferPlan:
    """Greedy liveness-based reuse; deterministic (first free buffer by creation order)."""
    last = _last_reads(p)
    pinned = {v.name for v in p.outputs} | {src.name for _, src in p.updates}
    buffer = {v.name: v.name for v in p.inputs}
    shapes: dict[str, Shape] = {}
    free: list[str] = []  # buffer names whose value is dead, in release order
    holders: dict[str, str] = {}  # buffer -> value currently in it
    for i, s in enumerate(p.body):
        if s.out is None:
            continue
        # buffers whose value dies at this statement may be reused by a Map writing now
        dying = [
            buffer[v.name]
            for v in s.reads
            if last.get(v.name) == i and buffer[v.name] in holders and v.shape == s.out.shape
        ]
        choice = None
        if s.out.name not in pinned:
            candidates = [b for b in free if shapes[b] == s.out.shape]
            if s.in_place:
                candidates = dying[:1] + candidates
            choice = candidates[0] if candidates else None
        if choice is None:
            choice = s.out.name
            shapes[choice] = s.out.shape
        elif choice in free:
            free.remove(choice)
        buffer[s.out.name] = choice
        holders[choice] = s.out.name
        for v in s.reads:
            b = buffer[v.name]
            if last.get(v.name) == i and holders.get(b) == v.name and b != choice:
                if v.name not in pinned:
                    free.append(b)
                    del holders[b]
    in_place = {}
    outputs = {v.name for v in p.outputs}
    for dst, src in p.updates:
        # Computing the new value straight into the input is safe when nothing
        # after its producer reads the old input and no guard can still fail.
        # Only an ``in_place`` statement (Map) may read the input it overwrites.
        producer = next(
            (i for i, s in enumerate(p.body) if s.out is not None and s.out.name == src.name),
            None,
        )
        if producer is None:  # the new value is an input itself: a copy, nothing to compute
            continue
        stmt = p.body[producer]
        later = p.body[producer + 1 :]
        reads_later = any(v.name == dst.name for s in later for v in s.reads)
        guard_later = any(s.aborts for s in later)
        self_read = any(v.name == dst.name for v in stmt.reads) and not stmt.in_place
        # the old input is still returned, or copied into another input by an update
        old_needed = dst.name in outputs or any(s.name == dst.name for _, s in p.updates)
        if not (reads_later or guard_later or self_read or src.name in outputs or old_needed):
            in_place[src.name] = dst.name
    return BufferPlan(buffer, shapes, in_place)
