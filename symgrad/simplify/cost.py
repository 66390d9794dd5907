"""symgrad.simplify.cost: the scalar cost model and value checks of scalar rewrites."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable

import sympy as sp

from symgrad.core import scalar

# Scalar cost model

TRANSCENDENTAL = (
    sp.exp,
    sp.log,
    sp.tanh,
    sp.erf,
    sp.cos,
    scalar.sigmoid,
    scalar.softplus,
    scalar.log1p,
    scalar.expm1,
)


def scalar_cost(body: sp.Expr) -> int:
    """Operation count of a scalar body; transcendental functions count 10."""
    cost = 0
    for node in sp.preorder_traversal(body):
        if isinstance(node, TRANSCENDENTAL):
            cost += 10
        elif isinstance(node, sp.Pow):
            cost += 1 if node.exp.is_Integer and abs(node.exp) <= 3 else 10
        elif isinstance(node, sp.Add):
            cost += len(node.args) - 1
        elif isinstance(node, sp.Mul):  # a factor -1 folds into the enclosing subtraction
            cost += len(node.args) - 1 - (node.args[0] == -1)
        elif isinstance(
            node, (sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign, sp.floor)
        ):
            cost += 1
    return cost


@functools.lru_cache(
    maxsize=scalar.MEMO_SIZE
)  # bodies are canonical: every layer asks the same ones
def cheapest_form(body: sp.Expr) -> sp.Expr:
    """The cheapest of a few algebraically equal forms (as written, expanded, factored)."""
    if body.has(sp.Piecewise):
        return body
    candidates = [body, sp.expand(body), sp.factor_terms(body)]
    return min(candidates, key=lambda b: (scalar_cost(b), len(str(b))))


def _numeric(body: sp.Expr, point: dict) -> complex:
    value = body.xreplace(point)
    value = value.rewrite(sp.exp) if value.has(scalar.sigmoid, scalar.softplus) else value
    return complex(value.evalf(30))


def same_values(a: sp.Expr, b: sp.Expr, samples: Iterable[dict]) -> bool:
    """Value check of a scalar rewrite at sample points (relative 1e-9)."""
    for point in samples:
        va, vb = _numeric(a, point), _numeric(b, point)
        if abs(va - vb) > 1e-9 * (1 + abs(va)):
            return False
    return True


def sample_points(variables, count: int = 24, seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    fixed = [0.0, 1.0, -1.0, 0.5, -2.5, 3.0]
    points = []
    for k in range(count):
        points.append(
            {
                v: sp.Float(fixed[k] if k < len(fixed) else rnd.uniform(-4, 4), 30)
                if v.is_positive is not True
                else sp.Float(rnd.uniform(1, 8), 30)
                for v in variables
            }
        )
    return points
