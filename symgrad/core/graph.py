"""symgrad.core.graph: walks over matrix graphs (iterative: depth is not limited by recursion)."""

from __future__ import annotations

import weakref
from collections.abc import Container, Iterable

import sympy as sp
from sympy.matrices.expressions import MatrixExpr, MatrixSymbol, OneMatrix, ZeroMatrix

from symgrad.core.nodes import ShapeMismatch

# --------------------------------------------------------------------------
# Graph utilities


def fresh_name(base: str, taken: set[str], first: int = 1) -> str:
    """``base``, else ``base_<first>``, ``base_<first+1>``... : the first not in ``taken`` (now added)."""
    name, k = base, first
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def children(node) -> tuple:
    """Matrix-valued operands of a node (scalars and Lambdas are parameters)."""
    if isinstance(node, (MatrixSymbol, ZeroMatrix, OneMatrix, sp.Identity)):
        return ()
    return tuple(a for a in node.args if isinstance(a, MatrixExpr))


def topological(roots: Iterable, known: Container = (), operands=children) -> list:
    """Nodes reachable from ``roots``, each once, operands before users.

    Nodes in ``known`` (already handled by the caller) are neither listed nor
    entered, so a walk that extends a memo costs only the new nodes;
    ``operands(node)`` says which nodes a node leads to.
    """
    order, seen = [], set()
    for root in roots:
        if root in known:
            continue
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
            stack += [
                (c, False) for c in reversed(operands(node)) if c not in seen and c not in known
            ]
    return order


_HEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def height(node) -> int:
    """Longest path from ``node`` down to a leaf (a leaf has height 0); remembered per node."""
    for n in topological([node], _HEIGHTS):
        _HEIGHTS[n] = 1 + max((_HEIGHTS[c] for c in children(n)), default=-1)
    return _HEIGHTS[node]


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


SHALLOW = 24
"""Height up to which SymPy's own recursive algorithms (sort keys, ordered terms)
are used on a graph; deeper graphs take symgrad's iterative paths."""


def is_shallow(node) -> bool:
    return height(node) <= SHALLOW


def row_for(table: dict, cls: type):
    """The entry of a table keyed by node class for ``cls``: its own or its nearest base's."""
    for c in cls.__mro__:
        row = table.get(c)
        if row is not None:
            return row
    return None
