"""symgrad.diff: reverse-mode symbolic differentiation over matrix graphs.

:mod:`~symgrad.diff.rules` holds one vector-Jacobian rule per node type;
:mod:`~symgrad.diff.sweep` applies them from the loss down to the weights.
"""

from symgrad.diff.rules import LEAVES, RULE_MATH, VJP_RULES, vjp
from symgrad.diff.sweep import Derivation, Step, derive

__all__ = ["LEAVES", "RULE_MATH", "VJP_RULES", "Derivation", "Step", "derive", "vjp"]
