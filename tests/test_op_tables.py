"""One op, one row: every node class, IR statement and scalar function has a row in every table.

Node classes, statement classes and the scalar vocabulary are enumerated by
introspection, so an op that is added to one table and forgotten in another
fails here, with the op and the table named, and not at a user's call site.
"""

from __future__ import annotations

import pytest
import sympy as sp

import symgrad
from symgrad import core as E
from symgrad.core.nodes import _Node
from symgrad.diff import rules
from symgrad.simplify import rebuild

n = E.batch()
A = E.matrix("A", n, 3)


class Doubled(_Node):
    """A node type that is not in the tables (2 A, entry by entry)."""

    def __new__(cls, a):
        return sp.Basic.__new__(cls, a)

    @property
    def shape(self):
        return self.args[0].shape

    def _text(self, printer):
        return f"doubled({printer._print(self.args[0])})"


def _doubled_vjp(node, out, ct):
    return [E.scale(2, ct)]


def test_missing_vjp_rule_names_the_op_and_the_table(monkeypatch):
    monkeypatch.setitem(rebuild.REBUILD, Doubled, lambda node, kids: Doubled(*kids))
    with pytest.raises(NotImplementedError, match=r"no VJP rule for Doubled .*rules\.VJP_RULES"):
        symgrad.grad(E.total(Doubled(A)), A)


def test_missing_rebuild_row_names_the_op_and_the_table(monkeypatch):
    monkeypatch.setitem(rules.VJP_RULES, Doubled, _doubled_vjp)
    monkeypatch.setitem(rules.RULE_MATH, Doubled, "d(2 A)/dA: 2 G")
    with pytest.raises(NotImplementedError, match=r"no row for Doubled .*rebuild\.REBUILD"):
        symgrad.grad(E.total(Doubled(A)), A)


def test_missing_lowering_row_names_the_op_and_the_table(monkeypatch):
    """A node with a VJP rule and a rebuild row but no lowering: an error, not a RecursionError."""
    monkeypatch.setitem(rules.VJP_RULES, Doubled, _doubled_vjp)
    monkeypatch.setitem(rules.RULE_MATH, Doubled, "d(2 A)/dA: 2 G")
    monkeypatch.setitem(rebuild.REBUILD, Doubled, lambda node, kids: Doubled(*kids))
    loss = E.total(Doubled(A))
    symgrad.grad(loss, A)  # derivable
    with pytest.raises(
        NotImplementedError,
        match=r"no row for Doubled \(node doubled\(A\)\) in .*lowering\.STATEMENT",
    ):
        symgrad.compile([A], {"loss": loss})
