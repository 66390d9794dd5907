"""symgrad.diff.sweep: the reverse sweep that applies :data:`~symgrad.diff.rules.VJP_RULES`.

``derive(loss, wrt)`` walks the DAG once in reverse topological order, only
through nodes that lead to a ``wrt`` symbol, and sums the cotangents of shared
nodes (a weight used twice gets the sum over both paths).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sympy.matrices.expressions import MatrixExpr, MatrixSymbol, OneMatrix, ZeroMatrix

from symgrad import core as E
from symgrad.diff.rules import LEAVES, RULE_MATH, VJP_RULES


@dataclass
class Step:
    """One application of a VJP rule, for ``explain``."""

    node: MatrixExpr
    rule: str
    math: str
    cotangent: MatrixExpr
    operands: tuple[MatrixExpr, ...]
    results: tuple[MatrixExpr, ...]


@dataclass
class Derivation:
    """Result of :func:`derive`: gradients plus the trace that produced them."""

    loss: MatrixExpr
    wrt: tuple[MatrixSymbol, ...]
    gradients: dict[MatrixSymbol, MatrixExpr]
    cotangents: dict[MatrixExpr, MatrixExpr]
    steps: list[Step] = field(default_factory=list)

    def named_cotangents(self) -> dict[str, MatrixExpr]:
        """``dZ1 -> expr`` for every named intermediate the loss depends on."""
        return {
            f"d{node.name}": ct for node, ct in self.cotangents.items() if isinstance(node, E.Named)
        }


def check_loss(loss) -> None:
    if not isinstance(loss, MatrixExpr):
        raise TypeError(
            f"grad expects the loss as a (1, 1) matrix expression; received {type(loss).__name__}"
        )
    if tuple(loss.shape) != (1, 1):
        raise ValueError(
            f"grad needs a scalar loss of shape (1, 1); received {loss} with shape {tuple(loss.shape)}"
            " (reduce it first, e.g. with symgrad.expr.mean)"
        )


def derive(loss: MatrixExpr, wrt: Sequence[MatrixSymbol]) -> Derivation:
    """Reverse-mode sweep: dL/dw for each ``w`` in ``wrt``.

    A ``w`` the loss does not depend on gets a ``ZeroMatrix`` gradient (not an
    error), as ``torch.autograd.grad(..., allow_unused=True)`` with zeros.
    """
    check_loss(loss)
    wrt = tuple(wrt)
    for w in wrt:
        if not isinstance(w, MatrixSymbol):
            raise TypeError(
                f"can only differentiate with respect to matrix symbols; received {w!r}"
            )
    E.check_symbols([loss, *wrt])
    order = E.topological([loss])
    targets = set(wrt)
    needed = set()  # nodes with a wrt symbol below them
    for node in order:
        if node in targets or any(c in needed for c in E.children(node)):
            needed.add(node)
    alias = {n.body: n for n in order if isinstance(n, E.Named)}
    cts: dict[MatrixExpr, MatrixExpr] = {loss: OneMatrix(1, 1)}
    trace = Derivation(loss, wrt, {}, cts)
    for node in reversed(order):
        ct = cts.get(node)
        if ct is None or node not in needed or isinstance(node, LEAVES) or E.is_zero(ct):
            continue
        rule = E.row_for(VJP_RULES, type(node))
        if rule is None:
            raise NotImplementedError(
                f"no VJP rule for {type(node).__name__} (node {node}) in "
                "symgrad.diff.rules.VJP_RULES; register one with "
                f"@symgrad.diff.vjp({type(node).__name__}, ...)"
            )
        operands = E.children(node)
        results = tuple(rule(node, alias.get(node, node), ct))
        for child, g in zip(operands, results):
            if child in needed:
                cts[child] = E.add(cts[child], g) if child in cts else g
        math = E.row_for(RULE_MATH, type(node))
        trace.steps.append(Step(node, rule.__name__, math, ct, operands, results))
    trace.gradients = {w: cts.get(w, ZeroMatrix(*w.shape)) for w in wrt}
    return trace
