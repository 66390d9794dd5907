"""symgrad.core.activations: named scalar activations and applying them to matrices."""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from symgrad.core import scalar
from symgrad.core.build import elementwise, softmax
from symgrad.core.nodes import DISPLAY_NAMES, canonical_lambda

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
    "mish": _unary(lambda x: x * sp.tanh(scalar.softplus(x))),
    "softsign": _unary(lambda x: x / (1 + sp.Abs(x))),
    "exponential": _unary(sp.exp),
}
"""Scalar activations by name; ``softmax`` is row-wise and handled by :func:`apply`."""


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
