"""symgrad.core.graph: walks over matrix graphs (iterative: depth is not limited by recursion)."""

from __future__ import annotations

from collections.abc import Iterable

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
