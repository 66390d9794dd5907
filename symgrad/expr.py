"""symgrad.expr: tensor-level SymPy graphs.

Every value is a matrix (``MatrixExpr``): data and weights are
``MatrixSymbol``s, the batch size is the SymPy symbol ``n``.  SymPy supplies
``MatMul``, ``MatAdd``, ``HadamardProduct``, ``Transpose`` and scalar
multiples; this module adds the nodes SymPy lacks (elementwise maps of scalar
``Lambda``s, broadcasts, sums, row softmax, names) and *smart constructors*
(``add``, ``matmul``, ``hadamard`` ...) that check shapes and fold the trivial
algebra (``x + 0 -> x``, ``1 * x -> x``, scalar factors hoisted) so that
derived gradients stay small.

Example::

    >>> from symgrad import expr as E
    >>> n = E.batch()
    >>> X, W, b = E.matrix("X", n, 3), E.matrix("W", 3, 2), E.matrix("b", 1, 2)
    >>> Z = E.name("Z", E.add_bias(E.matmul(X, W), b))
    >>> A = E.name("A", E.apply("sigmoid", Z))
    >>> A.shape
    (n, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import sympy as sp
from sympy.core.symbol import Str
from sympy.matrices.expressions import (
    HadamardProduct,
    MatAdd,
    MatMul,
    MatrixExpr,
    MatrixSymbol,
    OneMatrix,
    Transpose,
    ZeroMatrix,
)
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE, PRECEDENCE_VALUES, precedence

from symgrad import scalar

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
    xs = arg_symbols(len(variables))
    body = sp.sympify(body).xreplace(dict(zip(variables, xs)))
    return sp.Lambda(xs, body)


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


class _Node(MatrixExpr):
    """Base of symgrad's own matrix nodes."""

    is_commutative = False

    def _sympystr(self, printer):
        return self._text(printer)

    def _latex(self, printer):
        return self._text(printer)

    def _text(self, printer) -> str:  # pragma: no cover - each node overrides
        raise NotImplementedError


class Elementwise(_Node):
    """``f(A, B, ...)`` applied entry by entry; ``f`` is a scalar ``Lambda``.

    All matrix arguments have the same shape.  Free symbols of the body other
    than its variables are scalar parameters (a learning rate, the batch size).
    """

    def __new__(cls, fn: sp.Lambda, *args):
        return sp.Basic.__new__(cls, fn, *args)

    @property
    def fn(self) -> sp.Lambda:
        return self.args[0]

    @property
    def operands(self) -> tuple[MatrixExpr, ...]:
        return self.args[1:]

    @property
    def shape(self):
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
        return sp.Basic.__new__(cls, v, sp.sympify(rows))

    @property
    def shape(self):
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
        return sp.Basic.__new__(cls, u, sp.sympify(cols))

    @property
    def shape(self):
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
        return sp.Basic.__new__(cls, s, sp.sympify(rows), sp.sympify(cols))

    @property
    def shape(self):
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
        return sp.Basic.__new__(cls, a)

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

    @property
    def shape(self):
        return (sp.S.One, sp.S.One)

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        r, c = sp.Dummy("r", integer=True), sp.Dummy("c", integer=True)
        return sp.Sum(a._entry(r, c, **kwargs), (r, 0, a.shape[0] - 1), (c, 0, a.shape[1] - 1))


class ColSum(_Reduction):
    """Sum down each column (NumPy ``axis=0``): (r, c) -> (1, c)."""

    _label, _latex_label = "colsum", r"\operatorname{colsum}"

    @property
    def shape(self):
        return (sp.S.One, self.args[0].shape[1])

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        r = sp.Dummy("r", integer=True)
        return sp.Sum(a._entry(r, j, **kwargs), (r, 0, a.shape[0] - 1))


class RowSum(_Reduction):
    """Sum across each row (NumPy ``axis=1``): (r, c) -> (r, 1)."""

    _label, _latex_label = "rowsum", r"\operatorname{rowsum}"

    @property
    def shape(self):
        return (self.args[0].shape[0], sp.S.One)

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        c = sp.Dummy("c", integer=True)
        return sp.Sum(a._entry(i, c, **kwargs), (c, 0, a.shape[1] - 1))


class Softmax(_Reduction):
    """Row-wise softmax: ``exp(z_ij) / sum_k exp(z_ik)``."""

    _label, _latex_label = "softmax", r"\operatorname{softmax}"

    @property
    def shape(self):
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

    @property
    def shape(self):
        return self.args[0].shape

    def _entry(self, i, j, **kwargs):
        a = self.args[0]
        c = sp.Dummy("c", integer=True)
        return a._entry(i, j, **kwargs) - sp.log(
            sp.Sum(sp.exp(a._entry(i, c, **kwargs)), (c, 0, a.shape[1] - 1))
        )


class Named(_Node):
    """A named intermediate (``Z1``, ``A1``): the identity, printed as its name.

    Names make formulas readable (``A1 (1 - A1)`` rather than the expanded
    sigmoid) and become variable names in generated code.
    """

    def __new__(cls, name, a):
        name = Str(name) if isinstance(name, str) else name
        return sp.Basic.__new__(cls, name, a)

    @property
    def name(self) -> str:
        return self.args[0].name

    @property
    def body(self) -> MatrixExpr:
        return self.args[1]

    @property
    def shape(self):
        return self.args[1].shape

    def _entry(self, i, j, **kwargs):
        return MatrixSymbol(self.name, *self.shape)._entry(i, j, **kwargs)

    def _text(self, printer):
        return printer._print(MatrixSymbol(self.name, *self.shape))

    def _pretty(self, printer):
        return printer._print(MatrixSymbol(self.name, *self.shape))


def _str_hadamard(printer, expr):
    return " o ".join(printer.parenthesize(a, PRECEDENCE["Mul"], strict=True) for a in expr.args)


if not hasattr(sp.StrPrinter, "_print_HadamardProduct"):  # SymPy prints the class name
    sp.StrPrinter._print_HadamardProduct = _str_hadamard

_latex_transpose = LatexPrinter._print_Transpose


def _latex_transpose_named(printer, expr):  # A_{1}^{T}, not \left(A_{1}\right)^{T}
    if isinstance(expr.arg, Named):
        return f"{printer._print(expr.arg)}^{{T}}"
    return _latex_transpose(printer, expr)


LatexPrinter._print_Transpose = _latex_transpose_named

# SymPy ranks a MatMul like a Mul, whose sign test negates the product and runs a deep
# doit(): printing a deep gradient then takes seconds.  A fixed rank avoids that.
PRECEDENCE_VALUES.setdefault("MatMul", PRECEDENCE["Mul"])


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


# --------------------------------------------------------------------------
# Smart constructors


def is_zero(a) -> bool:
    return isinstance(a, ZeroMatrix)


def split_scalar(a: MatrixExpr) -> tuple[sp.Expr, MatrixExpr]:
    """``c * M -> (c, M)`` with ``M`` free of a scalar factor."""
    if isinstance(a, MatMul):
        coeff, mats = a.as_coeff_matrices()
        if coeff != 1:
            return coeff, (mats[0] if len(mats) == 1 else MatMul(*mats))
    return sp.S.One, a


def scale(c, a: MatrixExpr) -> MatrixExpr:
    """``c * a`` for a scalar expression ``c``."""
    c = sp.sympify(c)
    _check_matrix("scale", a)
    if c == 0 or is_zero(a):
        return ZeroMatrix(*a.shape)
    c0, m = split_scalar(a)
    c = c * c0
    if c == 1:
        return m
    if isinstance(m, MatAdd) and c.could_extract_minus_sign():  # -c (Y - P) -> c (P - Y)
        negative = sum(split_scalar(t)[0].could_extract_minus_sign() for t in m.args)
        if 2 * negative >= len(m.args):
            return scale(-c, MatAdd(*_sort(scale(-1, t) for t in m.args)))
    if isinstance(m, Elementwise) and c.could_extract_minus_sign():  # -c f(y - p) -> c f(p - y)
        terms = sp.Add.make_args(m.fn.expr)
        negative = sum(t.could_extract_minus_sign() for t in terms)
        if len(terms) > 1 and 2 * negative >= len(terms):
            return scale(-c, elementwise(sp.Lambda(m.fn.variables, -m.fn.expr), *m.operands))
    if isinstance(m, MatMul):
        return MatMul(c, *m.args)
    return MatMul(c, m)


def _sort(terms):
    """Canonical order; in sums, positive terms first so ``P - Y`` reads naturally."""
    return sorted(
        terms, key=lambda t: (split_scalar(t)[0].could_extract_minus_sign(), sp.default_sort_key(t))
    )


def add(*terms: MatrixExpr) -> MatrixExpr:
    """Sum of same-shaped matrices; like terms are collected, a common factor hoisted."""
    if not terms:
        raise ValueError("add needs at least one term")
    for t in terms:
        _check_matrix("add", t)
        if t.shape != terms[0].shape:
            raise _shape_error("add", terms[0], t)
    flat: list[MatrixExpr] = []
    for t in terms:
        c, m = split_scalar(t)
        if isinstance(m, MatAdd):
            flat += [scale(c, u) for u in m.args]
        elif not is_zero(m):
            flat.append(t)
    coeffs: dict[MatrixExpr, sp.Expr] = {}
    for t in flat:  # c1 M + c2 M -> (c1 + c2) M
        c, m = split_scalar(t)
        coeffs[m] = coeffs.get(m, sp.S.Zero) + c
    items = [(m, sp.factor_terms(c)) for m, c in coeffs.items() if not _is_zero_scalar(c)]
    if not items:
        return ZeroMatrix(*terms[0].shape)
    if len(items) == 1:
        return scale(items[0][1], items[0][0])
    common = _common_factor([c for _, c in items])  # c M1 - c M2 -> c (M1 - M2)
    parts = _sort(scale(sp.cancel(c / common), m) for m, c in items)
    return scale(common, MatAdd(*parts))


def _is_zero_scalar(c: sp.Expr) -> bool:
    """``c == 0`` for the coefficients met here (rational functions of n and hyperparameters).

    ``sp.cancel`` decides it for rational functions; ``sp.simplify`` is the
    fallback for anything else (it is slow and imports ``sympy.physics`` on
    first use, ~0.15 s, so it is kept off the common path).
    """
    if c == 0:
        return True
    if c.is_number or c.is_rational_function():
        return sp.cancel(c) == 0
    return sp.simplify(c) == 0


def _common_factor(coeffs: list[sp.Expr]) -> sp.Expr:
    first = coeffs[0]
    if all((c / first).is_Rational for c in coeffs):
        ratios = [c / first for c in coeffs]
        if all(r.is_Integer or (1 / r).is_Integer for r in ratios):
            smallest = min((abs(r) for r in ratios), key=lambda r: r)
            return first * smallest if all((r / smallest).is_Integer for r in ratios) else first
        return first
    return sp.S.One


def sub(a: MatrixExpr, b: MatrixExpr) -> MatrixExpr:
    """``a - b``."""
    return add(a, scale(-1, b))


def matmul(*ms: MatrixExpr) -> MatrixExpr:
    """Matrix product; checks inner dimensions, hoists scalar factors."""
    if not ms:
        raise ValueError("matmul needs at least one matrix")
    for a in ms:
        _check_matrix("matmul", a)
    for a, b in zip(ms, ms[1:]):
        if a.shape[1] != b.shape[0]:
            raise _shape_error("matmul", a, b)
    shape = (ms[0].shape[0], ms[-1].shape[1])
    if any(is_zero(m) for m in ms):
        return ZeroMatrix(*shape)
    coeff, mats = sp.S.One, []
    for m in ms:
        c, m = split_scalar(m)
        coeff *= c
        mats += list(m.args) if isinstance(m, MatMul) else [m]
    mats = [m for m in mats if not (isinstance(m, sp.Identity))] or [sp.Identity(shape[0])]
    core = mats[0] if len(mats) == 1 else MatMul(*mats)
    return scale(coeff, core)


def _ones_like(a) -> bool:
    return isinstance(a, OneMatrix)


def hadamard(*ms: MatrixExpr) -> MatrixExpr:
    """Entrywise product of same-shaped matrices."""
    for a in ms:
        _check_matrix("hadamard", a)
        if a.shape != ms[0].shape:
            raise _shape_error("hadamard", ms[0], a)
    if any(is_zero(m) for m in ms):
        return ZeroMatrix(*ms[0].shape)
    coeff, parts = sp.S.One, []
    for m in ms:
        c, m = split_scalar(m)
        coeff *= c
        parts += list(m.args) if isinstance(m, HadamardProduct) else [m]
    parts = [m for m in parts if not _ones_like(m)]  # 1 o X -> X
    if not parts:
        return scale(coeff, OneMatrix(*ms[0].shape))
    core = parts[0] if len(parts) == 1 else HadamardProduct(*_sort(parts))
    return scale(coeff, core)


def transpose(a: MatrixExpr) -> MatrixExpr:
    """``a.T`` with products distributed and double transposes removed."""
    _check_matrix("transpose", a)
    if is_zero(a):
        return ZeroMatrix(a.shape[1], a.shape[0])
    if isinstance(a, Transpose):
        return a.arg
    if isinstance(a, OneMatrix):
        return OneMatrix(a.shape[1], a.shape[0])
    if isinstance(a, MatMul):
        c, mats = a.as_coeff_matrices()
        return scale(c, matmul(*[transpose(m) for m in reversed(mats)]))
    return Transpose(a)


def broadcast_rows(v: MatrixExpr, rows) -> MatrixExpr:
    """Repeat a (1, c) row ``rows`` times."""
    _check_matrix("broadcast_rows", v)
    if v.shape[0] != 1:
        raise ShapeMismatch(
            f"broadcast_rows expects a (1, c) row; received {v} with shape {v.shape}"
        )
    rows = sp.sympify(rows)
    if rows == 1:
        return v
    c, m = split_scalar(v)
    if is_zero(m):
        return ZeroMatrix(rows, v.shape[1])
    if isinstance(m, OneMatrix):
        return scale(c, OneMatrix(rows, v.shape[1]))
    return scale(c, BroadcastRows(m, rows))


def broadcast_cols(u: MatrixExpr, cols) -> MatrixExpr:
    """Repeat an (r, 1) column ``cols`` times."""
    _check_matrix("broadcast_cols", u)
    if u.shape[1] != 1:
        raise ShapeMismatch(
            f"broadcast_cols expects an (r, 1) column; received {u} with shape {u.shape}"
        )
    cols = sp.sympify(cols)
    if cols == 1:
        return u
    c, m = split_scalar(u)
    if is_zero(m):
        return ZeroMatrix(u.shape[0], cols)
    if isinstance(m, OneMatrix):
        return scale(c, OneMatrix(u.shape[0], cols))
    return scale(c, BroadcastCols(m, cols))


def fill(s: MatrixExpr, rows, cols) -> MatrixExpr:
    """Repeat a (1, 1) value over a (rows, cols) matrix."""
    _check_matrix("fill", s)
    if tuple(s.shape) != (1, 1):
        raise ShapeMismatch(f"fill expects a (1, 1) value; received {s} with shape {s.shape}")
    rows, cols = sp.sympify(rows), sp.sympify(cols)
    if (rows, cols) == (1, 1):
        return s
    c, m = split_scalar(s)
    if is_zero(m):
        return ZeroMatrix(rows, cols)
    if isinstance(m, (OneMatrix, sp.Identity)):
        return scale(c, OneMatrix(rows, cols))
    return scale(c, Fill(m, rows, cols))


def add_bias(a: MatrixExpr, b: MatrixExpr) -> MatrixExpr:
    """``a + 1 b``: add the (1, c) row ``b`` to every row of ``a``."""
    _check_matrix("add_bias", a)
    _check_matrix("add_bias", b)
    if b.shape[0] != 1 or b.shape[1] != a.shape[1]:
        raise _shape_error("add_bias", a, b)
    return add(a, broadcast_rows(b, a.shape[0]))


def total(a: MatrixExpr) -> MatrixExpr:
    """Sum of all entries, as a (1, 1) matrix."""
    _check_matrix("sum", a)
    c, m = split_scalar(a)
    if is_zero(m):
        return ZeroMatrix(1, 1)
    if isinstance(m, OneMatrix):
        return scale(c * m.shape[0] * m.shape[1], OneMatrix(1, 1))
    if isinstance(m, Fill):
        return scale(c * m.shape[0] * m.shape[1], m.args[0])
    if tuple(m.shape) == (1, 1):
        return a
    return scale(c, Total(m))


def col_sum(a: MatrixExpr) -> MatrixExpr:
    """Sum down each column (axis 0): (r, c) -> (1, c)."""
    _check_matrix("sum", a)
    c, m = split_scalar(a)
    if is_zero(m):
        return ZeroMatrix(1, a.shape[1])
    if m.shape[0] == 1:
        return a
    if isinstance(m, OneMatrix):
        return scale(c * m.shape[0], OneMatrix(1, m.shape[1]))
    if isinstance(m, BroadcastRows):  # colsum(1 v) = r v
        return scale(c * m.shape[0], m.args[0])
    return scale(c, ColSum(m))


def row_sum(a: MatrixExpr) -> MatrixExpr:
    """Sum across each row (axis 1): (r, c) -> (r, 1)."""
    _check_matrix("sum", a)
    c, m = split_scalar(a)
    if is_zero(m):
        return ZeroMatrix(a.shape[0], 1)
    if m.shape[1] == 1:
        return a
    if isinstance(m, OneMatrix):
        return scale(c * m.shape[1], OneMatrix(m.shape[0], 1))
    if isinstance(m, BroadcastCols):  # rowsum(u 1^T) = c u
        return scale(c * m.shape[1], m.args[0])
    return scale(c, RowSum(m))


def reduce_sum(a: MatrixExpr, axis: int | None = None) -> MatrixExpr:
    """NumPy-style sum with keepdims: axis None -> (1, 1), 0 -> (1, c), 1 -> (r, 1)."""
    if axis is None:
        return total(a)
    if axis == 0:
        return col_sum(a)
    if axis == 1:
        return row_sum(a)
    raise ValueError(f"axis must be None, 0 or 1; received: axis={axis!r}")


def mean(a: MatrixExpr, axis: int | None = None) -> MatrixExpr:
    """NumPy-style mean with keepdims."""
    _check_matrix("mean", a)
    count = {None: a.shape[0] * a.shape[1], 0: a.shape[0], 1: a.shape[1]}[axis]
    return scale(1 / count, reduce_sum(a, axis))


def softmax(a: MatrixExpr) -> MatrixExpr:
    """Row-wise softmax."""
    return Softmax(_check_matrix("softmax", a))


def log_softmax(a: MatrixExpr) -> MatrixExpr:
    """Row-wise log-softmax."""
    return LogSoftmax(_check_matrix("log_softmax", a))


def name(label: str, a: MatrixExpr) -> MatrixExpr:
    """Give an intermediate a name for printing and generated code."""
    _check_matrix("name", a)
    if not isinstance(label, str) or not label.isidentifier():
        raise ValueError(f"names must be identifiers; received: {label!r}")
    return Named(label, a)


def elementwise(fn: sp.Lambda, *args: MatrixExpr) -> MatrixExpr:
    """Apply a scalar ``Lambda`` entry by entry to same-shaped matrices."""
    if not isinstance(fn, sp.Lambda):
        raise TypeError(f"elementwise expects a sympy Lambda; received {fn!r}")
    if len(fn.variables) != len(args):
        raise ValueError(
            f"elementwise: the function takes {len(fn.variables)} arguments; received {len(args)}"
        )
    for a in args:
        _check_matrix("elementwise", a)
        if a.shape != args[0].shape:
            raise _shape_error("elementwise", args[0], a)
    fn = canonical_lambda(fn.variables, fn.expr)
    xs, body = fn.variables, fn.expr
    if body == 0:
        return ZeroMatrix(*args[0].shape)
    if body in xs:  # f(x) = x
        return args[xs.index(body)]
    used = [i for i, x in enumerate(xs) if body.has(x)]
    if len(used) < len(xs):  # drop arguments the body ignores
        keep = [xs[i] for i in used]
        if not keep:
            return scale(body, OneMatrix(*args[0].shape))
        return elementwise(sp.Lambda(tuple(keep), body), *[args[i] for i in used])
    if isinstance(body, sp.Add):  # 2 p - 2 y -> 2 (p - y): the 2 becomes a scale
        body = sp.factor_terms(body)
    coeff, rest = body.as_independent(*xs, as_Add=False)
    if coeff != 1 and rest != body:  # c f(x) -> c * [f(x)]
        return scale(coeff, elementwise(sp.Lambda(xs, rest), *args))
    return Elementwise(fn, *args)


# --------------------------------------------------------------------------
# Activations and applying them


def _x():
    return sp.Symbol("x", real=True)


def _leaky_relu(alpha=0.2):
    x = _x()
    return sp.Lambda(x, sp.Piecewise((x, x > 0), (sp.nsimplify(alpha) * x, True)))


def _elu(alpha=1.0):
    x = _x()
    return sp.Lambda(x, sp.Piecewise((x, x > 0), (sp.nsimplify(alpha) * (sp.exp(x) - 1), True)))


def _gelu():
    x = _x()
    c = sp.sqrt(2 / sp.pi)
    return sp.Lambda(x, x / 2 * (1 + sp.tanh(c * (x + sp.Rational(44715, 1000000) * x**3))))


def _unary(f):
    def make():
        x = _x()
        return sp.Lambda(x, f(x))

    return make


ACTIVATIONS: dict[str, Callable[..., sp.Lambda]] = {
    "linear": _unary(lambda x: x),
    "sigmoid": _unary(scalar.sigmoid),
    "tanh": _unary(sp.tanh),
    "relu": _unary(scalar.relu),
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "softplus": _unary(scalar.softplus),
    "swish": _unary(lambda x: x * scalar.sigmoid(x)),
    "silu": _unary(lambda x: x * scalar.sigmoid(x)),
    "gelu": _gelu,
    "exponential": _unary(sp.exp),
}
"""Scalar activations by name; ``softmax`` is row-wise and handled by :func:`apply`."""


DISPLAY_NAMES: dict[sp.Lambda, str] = {}
"""Canonical Lambda of a named activation -> its name, for printing."""
for _key, _make in ACTIVATIONS.items():
    if _key not in ("linear", "silu", "exponential"):
        _fn = _make()
        DISPLAY_NAMES.setdefault(canonical_lambda(_fn.variables, _fn.expr), _key)


def activation_names() -> list[str]:
    return sorted([*ACTIVATIONS, "softmax"])


def as_lambda(f) -> sp.Lambda | str:
    """Turn an activation spec into a one-argument Lambda (or ``"softmax"``).

    Accepts a known name, a ``Lambda``, a SymPy expression of exactly one free
    symbol, or a Python callable mapping a SymPy symbol to an expression.
    """
    if isinstance(f, str):
        key = f.lower()
        if key == "softmax":
            return "softmax"
        if key not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {f!r}; known activations: {', '.join(activation_names())}"
            )
        return ACTIVATIONS[key]()
    if isinstance(f, sp.Lambda):
        if len(f.variables) != 1:
            raise ValueError(f"an activation takes one argument; received {f}")
        return f
    if isinstance(f, sp.Expr):
        free = sorted(f.free_symbols, key=str)
        if len(free) != 1:
            raise ValueError(
                f"an activation expression needs exactly one free symbol; received {f} "
                f"with free symbols {free}"
            )
        return sp.Lambda(free[0], f)
    if callable(f):
        x = _x()
        return as_lambda(sp.Lambda(x, sp.sympify(f(x))))
    raise TypeError(f"cannot interpret {f!r} as an activation")


def apply(f, a: MatrixExpr) -> MatrixExpr:
    """Apply an activation (name, Lambda, expression or callable) to a matrix."""
    fn = as_lambda(f)
    if fn == "softmax":
        return softmax(a)
    return elementwise(fn, a)


# --------------------------------------------------------------------------
# Graph utilities


def children(node) -> tuple:
    """Matrix-valued operands of a node (scalars and Lambdas are parameters)."""
    if isinstance(node, (MatrixSymbol, ZeroMatrix, OneMatrix, sp.Identity)):
        return ()
    return tuple(a for a in node.args if isinstance(a, MatrixExpr))


def topological(roots: Iterable) -> list:
    """Nodes reachable from ``roots``, each once, operands before users."""
    order, seen = [], set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            stack += [(c, False) for c in reversed(children(node)) if c not in seen]
    return order


def leaves(roots: Iterable) -> list[MatrixSymbol]:
    """MatrixSymbols the graph reads, in first-seen order."""
    return [n for n in topological(roots) if isinstance(n, MatrixSymbol)]


def check_symbols(roots: Iterable) -> None:
    """Raise when one symbol name is used with two shapes (or two kinds)."""
    seen: dict[str, MatrixSymbol] = {}
    for s in leaves(roots):
        other = seen.setdefault(s.name, s)
        if other != s:
            raise ShapeMismatch(
                f"symbol {s.name!r} is used with two shapes: {tuple(other.shape)} and {tuple(s.shape)}"
            )


def scalar_params(roots: Iterable) -> list[sp.Symbol]:
    """Free scalar symbols of the graph (hyperparameters and batch symbols)."""
    found: set[sp.Symbol] = set()
    for node in topological(roots):
        for a in node.args:
            if isinstance(a, sp.Lambda):
                found |= a.expr.free_symbols - set(a.variables)
            elif isinstance(a, sp.Expr) and not isinstance(a, MatrixExpr):
                found |= a.free_symbols
        if isinstance(node, MatrixExpr):
            for d in node.shape:
                found |= sp.sympify(d).free_symbols
    return sorted(found, key=str)
