"""symgrad.core.nodes: the matrix node classes symgrad adds to SymPy's, and its symbols.

Each node knows its shape (SymPy expressions of the batch symbols), its entries
(``_entry``, for the per-element view) and how it prints (str, pretty, LaTeX).
SymPy supplies ``MatMul``, ``MatAdd``, ``HadamardProduct``, ``Transpose`` and
scalar multiples; symgrad adds elementwise maps of scalar ``Lambda``s,
broadcasts, sums, row softmax, column concatenation and slices, and names.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence

import sympy as sp
from sympy.core.symbol import Str
from sympy.matrices.expressions import (
    HadamardProduct,
    MatrixExpr,
    MatrixSymbol,
)
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE, precedence

from symgrad.core.scalar import MEMO_SIZE

# --------------------------------------------------------------------------
# Symbols

_BATCH = sp.Symbol("n", integer=True, positive=True)


def batch(name: str = "n") -> sp.Symbol:
    """The batch-size symbol (a positive integer ``Symbol``)."""
    return _BATCH if name == "n" else sp.Symbol(name, integer=True, positive=True)


def _dim(d) -> sp.Expr:
    d = sp.sympify(d)
    if d.is_number and not (d.is_Integer and d > 0):
        raise ValueError(
            f"a matrix dimension must be a positive integer or a symbol; received: {d}"
        )
    return d


def matrix(name: str, rows, cols) -> MatrixSymbol:
    """A matrix-valued input (data or weight): ``matrix("W1", 64, 128)``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"matrix names must be identifiers; received: name={name!r}")
    return MatrixSymbol(name, _dim(rows), _dim(cols))


_TEX_SPECIALS = {c: "\\" + c for c in "_{}#$%&"} | {
    "\\": r"\backslash ",
    "^": r"\hat{}",
    "~": r"\sim ",
}


def tex_text(text: str) -> str:
    r"""``text`` as an upright LaTeX name, its special characters escaped:
    ``tex_text("dense_1/kernel") == r"\mathrm{dense\_1/kernel}"``."""
    return r"\mathrm{" + "".join(_TEX_SPECIALS.get(c, c) for c in text) + "}"


class WeightSymbol(MatrixSymbol):
    """A layer's weight or state, or an optimizer's slot: ``dense_1_kernel``, shown in
    LaTeX under its path ``dense_1/kernel`` (the fourth argument).

    The same matrix symbol as any other to every part of symgrad; only its LaTeX
    differs. SymPy's own printer reads ``dense_1_kernel`` as a name with
    subscripts (``dense_{1 kernel}``), so a bare formula shown in Jupyter would
    garble every weight; this one prints the path, upright, as the model's
    tables do (or the name a symgrad printer was given for the symbol).
    """

    def __new__(cls, name, rows, cols, path):
        symbol = super().__new__(cls, name, rows, cols)
        path = Str(path) if isinstance(path, str) else path
        return sp.Basic.__new__(cls, *symbol.args, path)

    @property
    def path(self) -> str:
        return self.args[3].name

    def _latex(self, printer):
        names = getattr(printer, "_settings", {}).get("names") or {}
        return tex_text(names.get(self.name, self.path))


def weight_matrix(name: str, rows, cols, path: str) -> WeightSymbol:
    """A weight's symbol named ``name`` (see :class:`WeightSymbol`), shown as ``path``."""
    matrix(name, rows, cols)  # same validation
    return WeightSymbol(name, _dim(rows), _dim(cols), str(path))


class ProbabilitySymbol(MatrixSymbol):
    """A matrix symbol whose rows are probability vectors (>= 0, each row sums to 1).

    Labels for categorical cross-entropy are declared this way; the simplifier
    may then use ``rowsum(Y) = 1`` (softmax + cross-entropy -> (P - Y)/n).  The
    training API checks real data against this promise before every fit.
    """


def labels(name: str, rows, cols) -> ProbabilitySymbol:
    """Labels whose rows are one-hot (or soft) probability vectors."""
    matrix(name, rows, cols)  # same validation
    return ProbabilitySymbol(name, _dim(rows), _dim(cols))


# --------------------------------------------------------------------------
# Canonical scalar Lambdas: bound variables are always _x0, _x1, ... so that
# equal functions are equal SymPy objects (hash-consing then shares them).


def arg_symbols(k: int) -> tuple[sp.Symbol, ...]:
    return tuple(sp.Symbol(f"_x{i}", real=True) for i in range(k))


def canonical_lambda(variables: Sequence[sp.Symbol], body: sp.Expr) -> sp.Lambda:
    return _canonical_lambda(tuple(variables), sp.sympify(body))


@functools.lru_cache(maxsize=MEMO_SIZE)  # every layer of one activation builds the same Lambdas
def _canonical_lambda(variables: tuple, body: sp.Expr) -> sp.Lambda:
    xs = arg_symbols(len(variables))
    return sp.Lambda(xs, body.xreplace(dict(zip(variables, xs))))


# --------------------------------------------------------------------------
# Printing helpers for the custom nodes


def _placeholder_name(printer, arg) -> str:
    text = printer._print(arg)
    if precedence(arg) < PRECEDENCE["Atom"] and not isinstance(arg, (Named, MatrixSymbol)):
        text = f"({text})"
    return text


def _iverson(body: sp.Expr):
    """``Piecewise((1, c), (0, True))`` -> the condition ``c`` (printed ``[c]``)."""
    if isinstance(body, sp.Piecewise) and len(body.args) == 2:
        (one, cond), (zero, rest) = body.args
        if one == 1 and zero == 0 and rest == sp.true:
            return cond
    return None


def _print_body(printer, fn: sp.Lambda, args) -> str:
    """Print a scalar body with each bound variable replaced by its argument.

    Known activations print by name (``relu(Z1)``); 0/1 indicators print as an
    Iverson bracket (``[A1 > 0]``).
    """
    latex = isinstance(printer, LatexPrinter)
    known = DISPLAY_NAMES.get(fn)
    if known is not None:
        inner = ", ".join(printer._print(a) for a in args)
        return rf"\operatorname{{{known}}}\left({inner}\right)" if latex else f"{known}({inner})"
    if latex:
        names = {}
        for v, a in zip(fn.variables, args):
            t = printer._print(a)
            if not isinstance(a, (Named, MatrixSymbol)) and precedence(a) < PRECEDENCE["Atom"]:
                t = rf"\left({t}\right)"
            names[v] = t
        settings = {
            k: v for k, v in printer._settings.items() if k in LatexPrinter._default_settings
        }
        sub = LatexPrinter({**settings, "symbol_names": names})
        cond = _iverson(fn.expr)
        return rf"\left[{sub.doprint(cond)}\right]" if cond is not None else sub.doprint(fn.expr)
    named = {v: sp.Symbol(_placeholder_name(printer, a)) for v, a in zip(fn.variables, args)}
    cond = _iverson(fn.expr)
    if cond is not None:
        return f"[{printer._print(cond.xreplace(named))}]"
    return printer._print(fn.expr.xreplace(named))


DISPLAY_NAMES: dict[sp.Lambda, str] = {}
"""Canonical Lambda of a named activation -> its name, for printing (filled by
:mod:`symgrad.core.activations`)."""


_INTERNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def intern(node: MatrixExpr) -> MatrixExpr:
    """The one live object of each structure.

    SymPy compares two nodes operand by operand, recursively: two equal deep
    graphs built apart would take a recursion as deep as the graphs to compare.
    Graphs are built bottom-up, so a new node's operands are already the one
    object of their structure, and looking the node up here compares one level.
    """
    ref = _INTERNED.get(node)
    found = ref() if ref is not None else None
    if found is not None:
        return found
    _INTERNED[node] = weakref.ref(node)
    return node


def _new(cls, *args):
    return intern(sp.Basic.__new__(cls, *args))


class _ShapeOnce:
    """A node's shape, computed once from its operands' and then kept.

    SymPy computes a shape by asking the operands each time, down to the
    leaves: on a deep graph that recursion alone overflows the stack.  Graphs
    are built bottom-up, so every operand's shape is already known here.
    """

    @property
    def shape(self):
        shape = self.__dict__.get("_shape_cache")
        if shape is None:
            shape = self.__dict__["_shape_cache"] = self._shape()
        return shape


class _Node(_ShapeOnce, MatrixExpr):
    """Base of symgrad's own matrix nodes."""

    is_commutative = False

    def _sympystr(self, printer):
        return self._text(printer)

    def _latex(self, printer):
        return self._text(printer)

    def _text(self, printer) -> str:  # pragma: no cover - each node overrides
        raise NotImplementedError


def hadamard_text(printer, expr) -> str:
    """``A o B``: the entrywise product as text."""
    return " o ".join(printer.parenthesize(a, PRECEDENCE["Mul"], strict=True) for a in expr.args)


class Hadamard(_ShapeOnce, HadamardProduct):
    """SymPy's ``HadamardProduct`` as :func:`~symgrad.core.build.hadamard` builds it.

    It prints ``A o B`` with SymPy's own ``str`` (which shows the class name for
    a plain ``HadamardProduct``); LaTeX and pretty printing are SymPy's.
    """

    def __new__(cls, *args, **kwargs):
        return intern(super().__new__(cls, *args, **kwargs))

    def _shape(self):
        return HadamardProduct.shape.fget(self)

    def _sympystr(self, printer):
        return hadamard_text(printer, self)


class Elementwise(_Node):
    """``f(A, B, ...)`` applied entry by entry; ``f`` is a scalar ``Lambda``.

    All matrix arguments have the same shape.  Free symbols of the body other
    than its variables are scalar parameters (a learning rate, the batch size).
    """

    def __new__(cls, fn: sp.Lambda, *args):
        return _new(cls, fn, *args)

    @property
    def fn(self) -> sp.Lambda:
        return self.args[0]

    @property
    def operands(self) -> tuple[MatrixExpr, ...]:
        return self.args[1:]

    def _shape(self):
        return self.args[1].shape

    def _entry(self, i, j, **kwargs):
        return self.fn(*[a._entry(i, j, **kwargs) for a in self.operands])

    @property
    def precedence(self) -> int:
        if DISPLAY_NAMES.get(self.fn) is not None or _iverson(self.fn.expr) is not None:
            return PRECEDENCE["Atom"]
        return precedence(self.fn.expr)

    def _text(self, printer):
        return _print_body(printer, self.fn, self.operands)

    def _pretty(self, printer):
        from sympy.printing.pretty.stringpict import prettyForm

        if self.precedence >= PRECEDENCE["Atom"]:
            return prettyForm(_print_body(sp.StrPrinter(), self.fn, self.operands))
        named = {
            v: sp.Symbol(_placeholder_name(sp.StrPrinter(), a))
            for v, a in zip(self.fn.variables, self.operands)
        }
        form = printer._print(self.fn.expr.xreplace(named))
        # SymPy's pretty Hadamard product only parenthesizes its own classes
        return prettyForm(*form.parens()) if self.precedence < PRECEDENCE["Mul"] else form


class BroadcastRows(_Node):
    """A (1, c) row repeated ``rows`` times: the bias add ``Z = X W + 1 b``."""

    def __new__(cls, v, rows):
        return _new(cls, v, sp.sympify(rows))

    def _shape(self):
        return (self.args[1], self.args[0].shape[1])

    def _entry(self, i, j, **kwargs):
        return self.args[0]._entry(0, j, **kwargs)

    def _text(self, printer):
        return printer._print(self.args[0])

    def _pretty(self, printer):
        return printer._print(self.args[0])


class BroadcastCols(_Node):
    """A (r, 1) column repeated ``cols`` times."""

    def __new__(cls, u, cols):
        return _new(cls, u, sp.sympify(cols))

    def _shape(self):
        return (self.args[0].shape[0], self.args[1])

    def _entry(self, i, j, **kwargs):
        return self.args[0]._entry(i, 0, **kwargs)

    def _text(self, printer):
        return printer._print(self.args[0])

    def _pretty(self, printer):
        return printer._print(self.args[0])


class Fill(_Node):
    """A (1, 1) value repeated over a (rows, cols) matrix."""

    def __new__(cls, s, rows, cols):
        return _new(cls, s, sp.sympify(rows), sp.sympify(cols))

    def _shape(self):
        return (self.args[1], self.args[2])

    def _entry(self, i, j, **kwargs):
        return self.args[0]._entry(0, 0, **kwargs)

    def _text(self, printer):
        return printer._print(self.args[0])

    def _pretty(self, printer):
        return printer._print(self.args[0])


class _Reduction(_Node):
    _label = ""
    _latex_label = ""

    def __new__(cls, a):
        return _new(cls, a)

    def _text(self, printer):
        label = self._latex_label if isinstance(printer, LatexPrinter) else self._label
        inner = printer._print(self.args[0])
        if isinstance(printer, LatexPrinter):
            return rf"{label}\left({inner}\right)"
        return f"{label}({inner})"

    def _pretty(self, printer):
        from sympy.printing.pretty.stringpict import prettyForm

        inner = prettyForm(*printer._print(self.args[0]).parens())
        return prettyForm(*inner.left(self._label))


class Total(_Reduction):
    """Sum of all entries, a (1, 1) matrix."""

    _label, _latex_label = "sum", r"\operatorname{sum}"

    def _shape(self):
        return (sp.S.One, sp.S.One)

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        r, c = sp.Dummy("r", integer=True), sp.Dummy("c", integer=True)
        return sp.Sum(a._entry(r, c, **kwargs), (r, 0, a.shape[0] - 1), (c, 0, a.shape[1] - 1))


class ColSum(_Reduction):
    """Sum down each column (NumPy ``axis=0``): (r, c) -> (1, c)."""

    _label, _latex_label = "colsum", r"\operatorname{colsum}"

    def _shape(self):
        return (sp.S.One, self.args[0].shape[1])

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        r = sp.Dummy("r", integer=True)
        return sp.Sum(a._entry(r, j, **kwargs), (r, 0, a.shape[0] - 1))


class RowSum(_Reduction):
    """Sum across each row (NumPy ``axis=1``): (r, c) -> (r, 1)."""

    _label, _latex_label = "rowsum", r"\operatorname{rowsum}"

    def _shape(self):
        return (self.args[0].shape[0], sp.S.One)

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        c = sp.Dummy("c", integer=True)
        return sp.Sum(a._entry(i, c, **kwargs), (c, 0, a.shape[1] - 1))


class Softmax(_Reduction):
    """Row-wise softmax: ``exp(z_ij) / sum_k exp(z_ik)``."""

    _label, _latex_label = "softmax", r"\operatorname{softmax}"

    def _shape(self):
        return self.args[0].shape

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        c = sp.Dummy("c", integer=True)
        return sp.exp(a._entry(i, j, **kwargs)) / sp.Sum(
            sp.exp(a._entry(i, c, **kwargs)), (c, 0, a.shape[1] - 1)
        )


class LogSoftmax(_Reduction):
    """Row-wise log-softmax: ``z_ij - log sum_k exp(z_ik)`` (evaluated max-shifted)."""

    _label, _latex_label = "log_softmax", r"\operatorname{log\_softmax}"

    def _shape(self):
        return self.args[0].shape

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        c = sp.Dummy("c", integer=True)
        return a._entry(i, j, **kwargs) - sp.log(
            sp.Sum(sp.exp(a._entry(i, c, **kwargs)), (c, 0, a.shape[1] - 1))
        )


class Concat(_Node):
    """Columns side by side, ``[A | B | ...]``: (r, c_A + c_B + ...), Keras's ``Concatenate``."""

    def __new__(cls, *parts):
        return sp.Basic.__new__(cls, *parts)

    @property
    def shape(self):
        return (self.args[0].shape[0], sum((a.shape[1] for a in self.args), sp.S.Zero))

    def _entry(self, i, j, **kwargs):
        known = sp.sympify(j).is_number
        pieces, start = [], sp.S.Zero
        for a in self.args:
            stop = start + a.shape[1]
            if known and start <= j < stop:  # a known column: the entry of its part
                return a._entry(i, j - start, **kwargs)
            if not known:
                pieces.append((a._entry(i, j - start, **kwargs), sp.Lt(j, stop)))
            start = stop
        if known:
            raise IndexError(f"column {j} is outside {self} with shape {tuple(self.shape)}")
        return sp.Piecewise(*pieces[:-1], (pieces[-1][0], True))

    def _text(self, printer):
        return "[" + " | ".join(printer._print(a) for a in self.args) + "]"

    def _pretty(self, printer):
        return _pretty_text(self)


class ColumnSlice(_Node):
    """Columns ``start`` to ``stop - 1`` of A, ``A[:, start:stop]``: the adjoint of a concat."""

    def __new__(cls, a, start, stop):
        return sp.Basic.__new__(cls, a, sp.Integer(start), sp.Integer(stop))

    @property
    def start(self) -> int:
        return int(self.args[1])

    @property
    def stop(self) -> int:
        return int(self.args[2])

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.Integer(self.stop - self.start))

    def _entry(self, i, j, **kwargs):
        return self.args[0]._entry(i, j + self.start, **kwargs)

    def _text(self, printer):
        a = self.args[0]
        inner = printer._print(a)
        if not isinstance(a, (MatrixSymbol, Named)):
            inner = f"({inner})"
        return f"{inner}[:, {self.start}:{self.stop}]"

    def _pretty(self, printer):
        return _pretty_text(self)


def _pretty_text(node):
    """The one-line text as a pretty form (columns and slices have no 2-D layout)."""
    from sympy.printing.pretty.stringpict import prettyForm

    return prettyForm(node._text(sp.StrPrinter()))


class DropoutMask(_Node):
    """The keep mask of one dropout layer in one step: entries 0 or ``1/(1 - rate)``.

    ``M[i, j] = [bits(key, counter, i c + j) >= rate 2^32] / (1 - rate)`` with ``bits`` a
    counter-based generator (:func:`codegen.ir.keep_bits`) and ``key`` mixed from ``seed``
    and ``salt`` (which stream of the model): the same seed, salt and ``counter`` (the
    step number ``t``) give the same mask on every backend. It reads no matrix, so it is
    a constant of the step for differentiation: ``d(A o M)/dA = G o M``.
    """

    def __new__(cls, label, rows, cols, rate, seed, salt, counter):
        label = Str(label) if isinstance(label, str) else label
        args = (sp.sympify(rows), sp.sympify(cols), sp.sympify(rate))
        return _new(cls, label, *args, sp.Integer(seed), sp.Integer(salt), sp.sympify(counter))

    @property
    def label(self) -> str:
        return self.args[0].name

    @property
    def rate(self) -> sp.Expr:
        return self.args[3]

    @property
    def seed(self) -> int:
        return int(self.args[4])

    @property
    def salt(self) -> int:
        return int(self.args[5])

    @property
    def counter(self) -> sp.Expr:
        return self.args[6]

    def _shape(self):
        return (self.args[1], self.args[2])

    def _symbol(self) -> MatrixSymbol:
        return MatrixSymbol(f"M_{self.label}", *self.shape)

    def _entry(self, i, j, **kwargs):
        return self._symbol()._entry(i, j, **kwargs)

    def _text(self, printer):
        return printer._print(self._symbol())

    def _pretty(self, printer):
        return printer._print(self._symbol())


class Standardize(_Node):
    """``(A - mean) / sqrt(var + eps)`` with the moments over the rows (``axis=0``, each
    column over the batch: batch normalization) or over the columns (``axis=1``, each row
    over its features: layer normalization); variances are biased (divided by the count).

    Printed ``batchnorm(A)`` / ``layernorm(A)``: normalization without scale and shift.
    """

    def __new__(cls, a, axis: int, eps):
        return _new(cls, a, sp.Integer(axis), sp.sympify(eps))

    @property
    def axis(self) -> int:
        return int(self.args[1])

    @property
    def eps(self) -> sp.Expr:
        return self.args[2]

    def _shape(self):
        return self.args[0].shape

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        k = sp.Dummy("k", integer=True)
        count = a.shape[self.axis]
        at = (
            (lambda k: a._entry(k, j, **kwargs))
            if self.axis == 0
            else (lambda k: a._entry(i, k, **kwargs))
        )
        mean = sp.Sum(at(k), (k, 0, count - 1)) / count
        var = sp.Sum((at(k) - mean) ** 2, (k, 0, count - 1)) / count
        return (a._entry(i, j, **kwargs) - mean) / sp.sqrt(var + self.eps)

    def _text(self, printer):
        label = ("batchnorm", "layernorm")[self.axis]
        inner = printer._print(self.args[0])
        if isinstance(printer, LatexPrinter):
            return rf"\operatorname{{{label}}}\left({inner}\right)"
        return f"{label}({inner})"

    def _pretty(self, printer):
        return _pretty_text(self)


class Gather(_Node):
    """``W[X]``: the rows of a (V, d) table picked by the (r, s) integer matrix ``X``, side
    by side: ``W[X][i, k d + j] = W[X[i, k], j]``, (r, s d); an embedding lookup."""

    def __new__(cls, table, indices):
        return _new(cls, table, indices)

    def _shape(self):
        table, indices = self.args
        return (indices.shape[0], indices.shape[1] * table.shape[1])

    def _entry(self, i, j, **kwargs):
        table, indices = self.args
        d = table.shape[1]
        return table._entry(indices._entry(i, j // d, **kwargs), j % d, **kwargs)

    def _text(self, printer):
        return f"{_placeholder_name(printer, self.args[0])}[{printer._print(self.args[1])}]"

    def _pretty(self, printer):
        return _pretty_text(self)


class ScatterAdd(_Node):
    """``scatter_add(G, X)``: the adjoint of a gather into a table of ``rows`` rows:
    row ``v`` sums the blocks ``G[i, k d : (k + 1) d]`` of every (i, k) with ``X[i, k] = v``."""

    def __new__(cls, source, indices, rows):
        return _new(cls, source, indices, sp.sympify(rows))

    def _shape(self):
        source, indices, rows = self.args
        return (rows, source.shape[1] / indices.shape[1])

    def _entry(self, i, j, **kwargs):
        source, indices, _ = self.args
        r, k = sp.Dummy("r", integer=True), sp.Dummy("k", integer=True)
        d = self.shape[1]
        hit = sp.KroneckerDelta(indices._entry(r, k, **kwargs), i)
        term = hit * source._entry(r, k * d + j, **kwargs)
        return sp.Sum(term, (r, 0, indices.shape[0] - 1), (k, 0, indices.shape[1] - 1))

    def _text(self, printer):
        source, indices, _ = self.args
        return f"scatter_add({printer._print(source)}, {printer._print(indices)})"

    def _pretty(self, printer):
        return _pretty_text(self)


class Named(_Node):
    """A named intermediate (``Z1``, ``A1``): the identity, printed as its name.

    Names make formulas readable (``A1 (1 - A1)`` rather than the expanded
    sigmoid) and become variable names in generated code.
    """

    def __new__(cls, name, a):
        name = Str(name) if isinstance(name, str) else name
        return _new(cls, name, a)

    @property
    def name(self) -> str:
        return self.args[0].name

    @property
    def body(self) -> MatrixExpr:
        return self.args[1]

    def _shape(self):
        return self.args[1].shape

    def _entry(self, i, j, **kwargs):
        return MatrixSymbol(self.name, *self.shape)._entry(i, j, **kwargs)

    def _text(self, printer):
        return printer._print(MatrixSymbol(self.name, *self.shape))

    def _pretty(self, printer):
        return printer._print(MatrixSymbol(self.name, *self.shape))


# --------------------------------------------------------------------------
# Errors


class ShapeMismatch(ValueError):
    """Raised when an op receives operands whose shapes do not fit."""


def _shape_error(op: str, *operands) -> ShapeMismatch:
    shapes = " and ".join(f"{a} with shape {tuple(a.shape)}" for a in operands)
    return ShapeMismatch(f"{op}: incompatible shapes; received {shapes}")


def _check_matrix(op: str, a) -> MatrixExpr:
    if not isinstance(a, MatrixExpr):
        raise TypeError(
            f"{op} expects matrix expressions; received {a!r} of type {type(a).__name__}"
        )
    return a
