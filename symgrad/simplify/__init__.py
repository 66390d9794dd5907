"""symgrad.simplify: cost-directed rewrites over forward pass, gradients and updates.

- :mod:`~symgrad.simplify.cost`: scalar cost model (transcendental calls count 10);
- :mod:`~symgrad.simplify.rewrites`: the rewrite table, one row per identity;
- :mod:`~symgrad.simplify.rebuild`: the bottom-up rebuild that applies it.
"""

from symgrad.simplify.cost import TRANSCENDENTAL, cheapest_form, same_values, scalar_cost
from symgrad.simplify.rebuild import REBUILD, Simplifier, rule_names, simplify
from symgrad.simplify.rewrites import REWRITES, Context, rewrite

__all__ = [
    "REBUILD",
    "REWRITES",
    "TRANSCENDENTAL",
    "Context",
    "Simplifier",
    "cheapest_form",
    "rewrite",
    "rule_names",
    "same_values",
    "scalar_cost",
    "simplify",
]
