"""symgrad.nn.regularizers: weight and activity penalties added to the loss, symbolically.

A regularizer maps a symbolic matrix to a (1, 1) penalty, with Keras's names,
defaults and formulas: ``L1(l1=0.01)`` is ``l1 * sum(|x|)``, ``L2(l2=0.01)`` is
``l2 * sum(x**2)``, ``L1L2(l1=0.0, l2=0.0)`` both.  A layer with weights takes
``kernel_regularizer``, ``bias_regularizer`` and ``activity_regularizer``;
:func:`layer_penalties` turns them into terms of the training loss, so the
derived gradients show them (``dL/dW`` gains ``2*l2*W`` for L2 and
``l1*sign(W)`` for L1, with ``sign(0) = 0``) and the reported loss includes them
as Keras's does.  An activity penalty is divided by the batch size (Keras's
documented rule: its weight against the other terms does not change with the
batch size).

Example::

    >>> from symgrad import expr as E, regularizers
    >>> regularizers.get("l2")(E.matrix("W", 3, 2))
    (1/100)*sum(W**2)
"""

from __future__ import annotations

import math

import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from symgrad import core as E

_x = sp.Symbol("x", real=True)  # real: d|x|/dx is sign(x), with sign(0) = 0 (SymPy's)
_ABS = sp.Lambda(_x, sp.Abs(_x))
_SQUARE = sp.Lambda(_x, _x**2)


def _factor(value, name: str) -> float:
    """A penalty factor: a finite number >= 0 (Keras's rule); ``None`` is left to the caller."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"The {name} regularization factor must be a number. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"The {name} regularization factor must be a finite number >= 0. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def _exact(value: float) -> sp.Expr:
    """``0.01 -> 1/100``: the factor as the decimal the user wrote, so formulas read cleanly."""
    return sp.Rational(repr(value))


def _penalty(a: MatrixExpr, l1: float, l2: float) -> MatrixExpr:
    """``l1 * sum(|a|) + l2 * sum(a**2)`` as a (1, 1) matrix; zero factors drop out."""
    terms = []
    if l1:
        terms.append(E.scale(_exact(l1), E.total(E.elementwise(_ABS, a))))
    if l2:
        terms.append(E.scale(_exact(l2), E.total(E.elementwise(_SQUARE, a))))
    return E.add(*terms) if terms else sp.ZeroMatrix(1, 1)


class Regularizer:
    """Base class: ``__call__(matrix) -> (1, 1)`` penalty; ``get_config`` / ``from_config``."""

    def __call__(self, x: MatrixExpr) -> MatrixExpr:
        return sp.ZeroMatrix(1, 1)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> Regularizer:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x**2)`` (Keras's defaults: both 0)."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = _factor(0.0 if l1 is None else l1, "l1")
        self.l2 = _factor(0.0 if l2 is None else l2, "l2")

    def __call__(self, x):
        return _penalty(x, self.l1, self.l2)

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """``l1 * sum(|x|)``; its gradient is ``l1 * sign(x)`` (0 at 0)."""

    def __init__(self, l1: float = 0.01):
        self.l1 = _factor(0.01 if l1 is None else l1, "l1")

    def __call__(self, x):
        return _penalty(x, self.l1, 0.0)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 * sum(x**2)``; its gradient is ``2 * l2 * x``."""

    def __init__(self, l2: float = 0.01):
        self.l2 = _factor(0.01 if l2 is None else l2, "l2")

    def __call__(self, x):
        return _penalty(x, 0.0, self.l2)

    def get_config(self):
        return {"l2": self.l2}


# Names a layer argument accepts; "l1_l2" means 0.01 each, as Keras documents it.
REGULARIZERS: dict[str, type | object] = {
    "l1": L1,
    "l2": L2,
    "l1_l2": lambda: L1L2(l1=0.01, l2=0.01),
}
CLASSES: dict[str, type] = {"L1": L1, "L2": L2, "L1L2": L1L2}


def get(identifier, argument: str = "regularizer") -> Regularizer | None:
    """A regularizer from ``None``, a name (``"l2"``), a class, an instance or a saved config.

    ``argument`` names the layer argument in errors:
    ``Received: kernel_regularizer='l3'``.
    """
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()
    if isinstance(identifier, str):
        make = REGULARIZERS.get(identifier.lower())
        if make is None:
            raise ValueError(
                f"Unknown regularizer. Known regularizers: {', '.join(REGULARIZERS)}. "
                f"Received: {argument}={identifier!r}"
            )
        return make()
    if isinstance(identifier, dict):
        return from_config(identifier, argument)
    raise TypeError(
        f"A regularizer must be None, a name ({', '.join(REGULARIZERS)}) or a "
        f"symgrad.regularizers.Regularizer. Received: {argument}={identifier!r} "
        f"of type {type(identifier).__name__}"
    )


def serialize(regularizer: Regularizer | None) -> dict | None:
    """Keras's saved form: ``{"class_name": "L2", "config": {"l2": 0.01}}`` (None stays None)."""
    if regularizer is None:
        return None
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}


def from_config(config: dict, argument: str = "regularizer") -> Regularizer:
    """The inverse of :func:`serialize` for the built-in classes."""
    cls = CLASSES.get(config.get("class_name"))
    if cls is None:
        raise ValueError(
            f"Unknown regularizer class in a saved config (custom regularizers are not "
            f"saved). Known classes: {', '.join(CLASSES)}. Received: {argument}={config!r}"
        )
    return cls.from_config(dict(config.get("config", {})))


ARGUMENTS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer")
"""The layer arguments, in config order."""


def resolve(layer, **identifiers) -> None:
    """Set ``layer.kernel_regularizer`` ... from the constructor's identifiers (checked)."""
    for argument in ARGUMENTS:
        setattr(layer, argument, get(identifiers.get(argument), argument))


def config_of(layer) -> dict:
    """The regularizer entries of a layer's ``get_config``."""
    return {argument: serialize(getattr(layer, argument, None)) for argument in ARGUMENTS}


def layer_penalties(layer, output: MatrixExpr) -> list[MatrixExpr]:
    """The loss terms a built layer adds: one per regularized weight, one for its output.

    A weight ``<layer>/kernel`` is penalized by ``layer.kernel_regularizer``,
    ``<layer>/bias`` by ``layer.bias_regularizer`` -- any layer that names its
    weights this way takes them.  The activity term is divided by the batch size.
    """
    terms = []
    for weight in layer.weights:
        reg = getattr(layer, f"{weight.path.rsplit('/', 1)[-1]}_regularizer", None)
        if reg is not None:
            terms.append(_checked(reg(weight.symbol), reg))
    reg = getattr(layer, "activity_regularizer", None)
    if reg is not None:
        terms.append(E.scale(1 / output.shape[0], _checked(reg(output), reg)))
    return [t for t in terms if not E.is_zero(t)]


def _checked(penalty, reg) -> MatrixExpr:
    if not isinstance(penalty, MatrixExpr) or tuple(penalty.shape) != (1, 1):
        raise ValueError(
            f"A regularizer must return a (1, 1) matrix expression. "
            f"Received: {reg!r} returned {penalty!r}"
        )
    return penalty
