"""symgrad.nn.ops: operations on tape tensors (``symgrad.ops``), recorded as matrix graphs.

With the operators of :class:`~symgrad.nn.tape.Tensor` (``+ - * / **`` with
NumPy's broadcasting, ``@``, ``.T``) these are what a custom training loop
computes on a :class:`~symgrad.GradientTape`; each takes tensors or arrays
(at least one a tensor, or inside a tape's ``with`` block) and returns a tensor.

Example::

    >>> with symgrad.GradientTape() as tape:
    ...     error = model(x) - y
    ...     loss = symgrad.ops.reduce_mean(symgrad.ops.square(error))
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from symgrad import core as E
from symgrad.core import scalar
from symgrad.nn.tape import Tensor, _tape_of, binary, matmul, record

__all__ = [
    "UNARY",
    "abs",
    "add",
    "divide",
    "exp",
    "log",
    "log_softmax",
    "matmul",
    "multiply",
    "reduce_mean",
    "reduce_sum",
    "relu",
    "sigmoid",
    "softmax",
    "sqrt",
    "square",
    "subtract",
    "tanh",
    "transpose",
]

_x = sp.Symbol("x", real=True)
UNARY: dict[str, sp.Expr] = {
    "square": _x**2,
    "sqrt": sp.sqrt(_x),
    "exp": sp.exp(_x),
    "log": sp.log(_x),
    "abs": sp.Abs(_x),
    "tanh": sp.tanh(_x),
    "sigmoid": scalar.sigmoid(_x),
    "relu": scalar.relu(_x),
}
"""The entry-by-entry functions, on a scalar ``x``: each is also a function of this module."""


def _unary(name: str, body: sp.Expr) -> Callable[[object], Tensor]:
    fn = sp.Lambda(_x, body)

    def op(x) -> Tensor:
        t = _tape_of(x).as_tensor(x)
        return t.tape.tensor(record(name, lambda a: E.elementwise(fn, a), t.expr), t.shape)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"``{body}`` entry by entry."
    return op


square, sqrt, exp, log, abs, tanh, sigmoid, relu = (  # noqa: A001 - NumPy's names
    _unary(name, body) for name, body in UNARY.items()
)


def add(x, y) -> Tensor:
    return binary("add", x, y)


def subtract(x, y) -> Tensor:
    return binary("subtract", x, y)


def multiply(x, y) -> Tensor:
    return binary("multiply", x, y)


def divide(x, y) -> Tensor:
    return binary("divide", x, y)


def transpose(x) -> Tensor:
    return _tape_of(x).as_tensor(x).T


def _axis(t: Tensor, axis) -> int | None:
    """A NumPy axis of ``t`` (None, 0, 1, -1, -2) as its matrix axis: None, 0 (rows) or 1."""
    if axis is None:
        return None
    if not isinstance(axis, int) or not -t.ndim <= axis < max(t.ndim, 1):
        raise ValueError(
            f"axis must be None or an axis of a tensor of shape {t.shape}. Received: axis={axis!r}"
        )
    if t.ndim == 1:
        return None  # the only axis: the whole vector
    return axis % 2


def reduce_sum(x, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """The sum of all entries (``axis=None``) or along ``axis``, as ``numpy.sum``."""
    return _reduce("sum", x, axis, keepdims)


def reduce_mean(x, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """The mean of all entries (``axis=None``) or along ``axis``, as ``numpy.mean``."""
    return _reduce("mean", x, axis, keepdims)


REDUCTIONS = {"sum": E.reduce_sum, "mean": E.mean}


def _reduce(kind: str, x, axis, keepdims: bool) -> Tensor:
    t = _tape_of(x).as_tensor(x)
    matrix_axis = _axis(t, axis)
    expr = record((kind, matrix_axis), lambda a: REDUCTIONS[kind](a, matrix_axis), t.expr)
    if matrix_axis is None:
        shape = (1,) * t.ndim if keepdims else ()
    else:
        shape = list(t.shape)
        shape[matrix_axis] = 1
        shape = tuple(shape) if keepdims else tuple(shape[:matrix_axis] + shape[matrix_axis + 1 :])
    return t.tape.tensor(expr, shape)


def softmax(x) -> Tensor:
    """Row-wise softmax of a 2-d tensor (Keras's ``axis=-1``)."""
    return _rowwise("softmax", E.softmax, x)


def log_softmax(x) -> Tensor:
    """Row-wise log-softmax of a 2-d tensor, computed stably."""
    return _rowwise("log_softmax", E.log_softmax, x)


def _rowwise(name: str, build, x) -> Tensor:
    t = _tape_of(x).as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"{name} takes a 2-d tensor (rows, classes). Received: shape {t.shape}")
    return t.tape.tensor(record(name, build, t.expr), t.shape)
