"""symgrad.core.build: smart constructors.

Each constructor checks shapes (errors name the op and both shapes) and folds
the trivial algebra (``x + 0 -> x``, ``1 * x -> x``, scalar factors hoisted,
``-c (Y - P) -> c (P - Y)``) so that derived gradients stay small.
"""

from __future__ import annotations

import functools

import sympy as sp
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

from symgrad.core.graph import height, is_shallow
from symgrad.core.nodes import (
    BroadcastCols,
    BroadcastRows,
    ColSum,
    ColumnSlice,
    Concat,
    DropoutMask,
    Elementwise,
    Fill,
    Gather,
    Hadamard,
    LogSoftmax,
    Named,
    RowSum,
    ScatterAdd,
    ShapeMismatch,
    Softmax,
    Standardize,
    Total,
    _check_matrix,
    _shape_error,
    canonical_lambda,
    intern,
)
from symgrad.core.scalar import MEMO_SIZE
from symgrad.core.stable import stable_form

SYMPY_NODES = (MatMul, MatAdd, HadamardProduct, Transpose)
"""SymPy's matrix classes that the constructors below build, besides symgrad's own nodes
(:mod:`symgrad.core.nodes`) and the leaves ``ZeroMatrix`` / ``OneMatrix``: ops like
symgrad's, with a row in every table (``tests/test_op_tables.py`` checks both)."""

# --------------------------------------------------------------------------
# Smart constructors


def is_zero(a) -> bool:
    return isinstance(a, ZeroMatrix)


def split_scalar(a: MatrixExpr) -> tuple[sp.Expr, MatrixExpr]:
    """``c * M -> (c, M)`` with ``M`` free of a scalar factor."""
    if isinstance(a, MatMul):
        coeff, mats = a.as_coeff_matrices()
        if coeff != 1:
            return coeff, (mats[0] if len(mats) == 1 else intern(MatMul(*mats)))
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
            return scale(-c, intern(MatAdd(*_sort(scale(-1, t) for t in m.args))))
    if isinstance(m, Elementwise) and c.could_extract_minus_sign():  # -c f(y - p) -> c f(p - y)
        terms = sp.Add.make_args(m.fn.expr)
        negative = sum(t.could_extract_minus_sign() for t in terms)
        if len(terms) > 1 and 2 * negative >= len(terms):
            return scale(-c, elementwise(sp.Lambda(m.fn.variables, -m.fn.expr), *m.operands))
    if isinstance(m, MatMul):
        return intern(MatMul(c, *m.args))
    return intern(MatMul(c, m))


def _sort_key(t: MatrixExpr) -> tuple:
    # SymPy's sort key recurses through the whole term (and its cache is bounded):
    # deep terms are ordered by kind and height instead, after the shallow ones.
    negative = split_scalar(t)[0].could_extract_minus_sign()
    if is_shallow(t):
        return (negative, 0, sp.default_sort_key(t))
    return (negative, 1, type(t).__name__, height(t))


def _sort(terms):
    """Canonical order; in sums, positive terms first so ``P - Y`` reads naturally."""
    return sorted(terms, key=_sort_key)


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
    return scale(common, intern(MatAdd(*parts)))


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
    core = mats[0] if len(mats) == 1 else intern(MatMul(*mats))
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
    core = parts[0] if len(parts) == 1 else Hadamard(*_sort(parts))
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
    return intern(Transpose(a))


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
    if isinstance(m, (RowSum, ColSum)):  # sum(rowsum(A)) = sum(colsum(A)) = sum(A)
        return scale(c, total(m.args[0]))
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


def concat(*parts: MatrixExpr) -> MatrixExpr:
    """``[A | B | ...]``: the columns of same-height matrices side by side.

    Folds a single part, nested concats, and neighbouring slices of one matrix
    (``[A[:, 0:2] | A[:, 2:5]] -> A[:, 0:5]``).
    """
    if not parts:
        raise ValueError("concat needs at least one matrix")
    for a in parts:
        _check_matrix("concat", a)
        if a.shape[0] != parts[0].shape[0]:
            raise _shape_error("concat", parts[0], a)
    flat: list[MatrixExpr] = []
    for a in parts:
        for b in a.args if isinstance(a, Concat) else (a,):
            last = flat[-1] if flat else None
            if (
                isinstance(last, ColumnSlice)
                and isinstance(b, ColumnSlice)
                and last.args[0] == b.args[0]
                and last.stop == b.start
            ):
                flat[-1] = column_slice(b.args[0], last.start, b.stop)
            else:
                flat.append(b)
    return flat[0] if len(flat) == 1 else Concat(*flat)


def column_slice(a: MatrixExpr, start: int, stop: int) -> MatrixExpr:
    """``A[:, start:stop]``; a slice of a concat is a slice of the parts it covers."""
    _check_matrix("column_slice", a)
    width = a.shape[1]
    if not (
        isinstance(start, int)
        and isinstance(stop, int)
        and width.is_Integer
        and 0 <= start < stop <= width
    ):
        raise ValueError(
            f"column_slice: columns {start}:{stop} are not a range of {a} with shape {tuple(a.shape)}"
        )
    if (start, stop) == (0, int(width)):
        return a
    if is_zero(a):
        return ZeroMatrix(a.shape[0], stop - start)
    c, m = split_scalar(a)
    if c != 1:  # (c A)[:, s:e] = c A[:, s:e]: the factor stays visible to the folding outside
        return scale(c, column_slice(m, start, stop))
    if isinstance(a, ColumnSlice):  # A[:, s:e][:, i:j] = A[:, s+i:s+j]
        return column_slice(a.args[0], a.start + start, a.start + stop)
    if isinstance(a, Concat):  # [A | B][:, ...]: the covered columns of each part
        pieces, offset = [], 0
        for part in a.args:
            cols = int(part.shape[1])
            lo, hi = max(start, offset), min(stop, offset + cols)
            if lo < hi:
                pieces.append(column_slice(part, lo - offset, hi - offset))
            offset += cols
        return concat(*pieces)
    return ColumnSlice(a, start, stop)


def dropout_mask(label: str, rows, cols, rate, seed: int, salt: int, counter) -> MatrixExpr:
    """The (rows, cols) keep mask of a dropout of ``rate`` in step ``counter`` (ones at rate 0).

    ``seed`` (the model's) and ``salt`` (which mask of the model) choose the stream.
    """
    rate = sp.sympify(rate)
    if not (rate.is_number and 0 <= rate < 1):
        raise ValueError(f"dropout_mask: rate must be a number in [0, 1); received: rate={rate}")
    if not isinstance(label, str) or not label.isidentifier():
        raise ValueError(f"dropout_mask: labels must be identifiers; received: {label!r}")
    if rate == 0:
        return OneMatrix(rows, cols)
    return DropoutMask(label, rows, cols, rate, int(seed) % 2**64, int(salt) % 2**64, counter)


def moments(a: MatrixExpr, axis: int) -> tuple[MatrixExpr, MatrixExpr]:
    """(mean, biased variance) over ``axis``: (1, c) rows for 0, (r, 1) columns for 1."""
    _check_matrix("moments", a)
    spread = broadcast_rows if axis == 0 else broadcast_cols
    mu = mean(a, axis)
    x, m = sp.symbols("_x0 _x1", real=True)
    centered = elementwise(sp.Lambda((x, m), (x - m) ** 2), a, spread(mu, a.shape[axis]))
    return mu, mean(centered, axis)


def inverse_std(a: MatrixExpr, axis: int, eps) -> MatrixExpr:
    """``1 / sqrt(var + eps)`` over ``axis``, named ``rstd_<A>`` (a value of its own in
    generated code: one square root per row or column, shared by forward and backward)."""
    v = sp.Symbol("_x0", real=True)
    rstd = elementwise(sp.Lambda(v, 1 / sp.sqrt(v + eps)), moments(a, axis)[1])
    label = a.name if isinstance(a, (Named, MatrixSymbol)) else "A"
    return name(f"rstd_{label}", rstd)


def standardize(a: MatrixExpr, axis: int, eps) -> MatrixExpr:
    """``(A - mean) / sqrt(var + eps)`` over ``axis`` (0: batch normalization, 1: layer)."""
    _check_matrix("standardize", a)
    if axis not in (0, 1):
        raise ValueError(f"standardize: axis must be 0 or 1; received: axis={axis!r}")
    eps = sp.sympify(eps)
    if not (eps.is_number and eps > 0):
        raise ValueError(f"standardize: eps must be a positive number; received: eps={eps}")
    return Standardize(a, axis, eps)


def standardized(node: Standardize) -> MatrixExpr:
    """The node written with moments and broadcasts: ``(A - 1 mu) o 1 rstd``."""
    a, axis = node.args[0], node.axis
    spread = broadcast_rows if axis == 0 else broadcast_cols
    count = a.shape[axis]
    mu = moments(a, axis)[0]
    centered = sub(a, spread(mu, count))
    return hadamard(centered, spread(inverse_std(a, axis, node.eps), count))


def gather(table: MatrixExpr, indices: MatrixExpr) -> MatrixExpr:
    """``W[X]``: rows of ``table`` (V, d) picked by the integer matrix ``indices`` (r, s)."""
    _check_matrix("gather", table)
    _check_matrix("gather", indices)
    if not table.shape[1].is_Integer:
        raise _shape_error("gather", table, indices)
    return Gather(table, indices)


def scatter_add(source: MatrixExpr, indices: MatrixExpr, rows) -> MatrixExpr:
    """The adjoint of ``gather`` into a table of ``rows`` rows (``source``: (r, s d))."""
    _check_matrix("scatter_add", source)
    _check_matrix("scatter_add", indices)
    width = source.shape[1] / indices.shape[1]
    if source.shape[0] != indices.shape[0] or not sp.sympify(width).is_Integer:
        raise _shape_error("scatter_add", source, indices)
    if is_zero(source):
        return ZeroMatrix(rows, width)
    c, m = split_scalar(source)
    return scale(c, ScatterAdd(m, indices, rows))


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


@functools.lru_cache(maxsize=MEMO_SIZE)  # bodies are canonical: every layer asks the same ones
def _factor_terms(body: sp.Expr) -> sp.Expr:
    return sp.factor_terms(body)


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
    fn = sp.Lambda(fn.variables, stable_form(fn.expr))  # log(1 + e^x) -> softplus(x), ...
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
        body = _factor_terms(body)
    coeff, rest = body.as_independent(*xs, as_Add=False)
    if coeff != 1 and rest != body:  # c f(x) -> c * [f(x)]
        return scale(coeff, elementwise(sp.Lambda(xs, rest), *args))
    return Elementwise(fn, *args)
