"""symgrad.nn.merge: layers that join tensors of a functional model, as Keras's merging layers.

``Add()([a, b])`` is ``a + b`` row by row; ``Subtract``, ``Multiply`` (entry by
entry), ``Average``, ``Maximum``, ``Minimum`` take tensors of one shape;
``Concatenate`` puts the features of tensors of any widths side by side (its
gradient splits the cotangent's columns back).  Their
gradients come from the node rules (``Maximum`` and ``Minimum`` are elementwise
``Max`` / ``Min``: the cotangent goes to the larger / smaller operand).

    >>> from symgrad.nn.layers import Dense, Input
    >>> x = Input(shape=(4,))
    >>> Add()([x, Dense(4)(x)])
    <KerasTensor shape=(None, 4) name=add>
"""

from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from symgrad import core as E
from symgrad.nn.layers import Layer, Names


class Merge(Layer):
    """Base of the merging layers: a list of same-shaped tensors in, one tensor out.

    A subclass gives ``merge(exprs)``; ``minimum`` is how many tensors it takes.
    Its output is named ``M1``, ``M2``... in the formulas and generated code.
    """

    minimum = 2
    maximum: int | None = None

    def _connect(self, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        count = len(shapes)
        if count < self.minimum or (self.maximum is not None and count > self.maximum):
            wanted = self.minimum if self.maximum == self.minimum else f"at least {self.minimum}"
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) merges {wanted} tensors. "
                f"Received: {count} tensor(s) of shapes {[(None, *s) for s in shapes]}"
            )
        out = self.merged_shape([tuple(s) for s in shapes])
        self.build(shapes[0])
        return [out]

    def merged_shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        if len(set(shapes)) != 1:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) merges tensors of one shape. "
                f"Received: tensors of shapes {[(None, *s) for s in shapes]}"
            )
        return shapes[0]

    def _apply(self, exprs: list[MatrixExpr], names: Names) -> list[MatrixExpr]:
        return [E.name(names.merge(), self.merge(exprs))]

    def merge(self, exprs: list[MatrixExpr]) -> MatrixExpr:
        raise NotImplementedError

    def call(self, a, names):
        raise TypeError(f"Layer {self.name!r} merges tensors: call it on a list of tensors")


def _fold(fn: sp.Lambda, exprs: list[MatrixExpr]) -> MatrixExpr:
    """``fn(fn(a, b), c)...``: an elementwise binary function over several operands."""
    out = exprs[0]
    for e in exprs[1:]:
        out = E.elementwise(fn, out, e)
    return out


_x, _y = sp.symbols("x y", real=True)


class Add(Merge):
    """``a + b + ...``"""

    def merge(self, exprs):
        return E.add(*exprs)


class Subtract(Merge):
    """``a - b`` (exactly two tensors)."""

    maximum = 2

    def merge(self, exprs):
        return E.sub(exprs[0], exprs[1])


class Multiply(Merge):
    """``a ∘ b ∘ ...`` entry by entry."""

    def merge(self, exprs):
        return E.hadamard(*exprs)


class Average(Merge):
    """``(a + b + ...) / k``"""

    def merge(self, exprs):
        return E.scale(sp.Rational(1, len(exprs)), E.add(*exprs))


class Maximum(Merge):
    """``max(a, b, ...)`` entry by entry."""

    def merge(self, exprs):
        return _fold(sp.Lambda((_x, _y), sp.Max(_x, _y)), exprs)


class Minimum(Merge):
    """``min(a, b, ...)`` entry by entry."""

    def merge(self, exprs):
        return _fold(sp.Lambda((_x, _y), sp.Min(_x, _y)), exprs)


class Concatenate(Merge):
    """``[a | b | ...]``: the features of each tensor side by side (widths may differ).

    Rows of features have one axis to join: ``axis`` is ``-1`` (or ``1``), as Keras's default.
    """

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(name)
        if axis not in (-1, 1):
            raise ValueError(
                "Concatenate joins the features of rows: axis must be -1 (or 1). "
                f"Received: axis={axis!r}"
            )
        self.axis = axis

    def merged_shape(self, shapes):
        if any(len(s) != 1 for s in shapes):
            raise ValueError(
                f"Layer {self.name!r} (Concatenate) joins rows of features, tensors of shape "
                f"(None, features): Flatten images or sequences first. "
                f"Received: tensors of shapes {[(None, *s) for s in shapes]}"
            )
        return (sum(s[0] for s in shapes),)

    def merge(self, exprs):
        return E.concat(*exprs)


MERGE_LAYERS: dict[str, type] = {
    cls.__name__: cls for cls in (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate)
}
