"""symgrad: a symbolic differentiation compiler for neural networks.

Build a model as a tensor-level SymPy graph, read its gradients as formulas,
and run forward pass, gradients and optimizer update as generated code.
"""

from symgrad import expr
from symgrad.compiler import compile
from symgrad.diff import derive, grad
from symgrad.expr import batch, labels, matrix
from symgrad.inspect import element_formula, explain, gradients, op_counts
from symgrad.simplify import simplify

__version__ = "0.1.0"

__all__ = [
    "batch",
    "compile",
    "derive",
    "element_formula",
    "explain",
    "expr",
    "grad",
    "gradients",
    "labels",
    "matrix",
    "op_counts",
    "simplify",
]
