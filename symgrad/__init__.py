"""symgrad: a symbolic differentiation compiler for neural networks.

Build a model as a tensor-level SymPy graph (or with the Keras-style API),
read its gradients as formulas, and run forward pass, gradients and optimizer
update as one generated program: NumPy source or LLVM machine code.
"""

from symgrad import callbacks, expr, initializers, layers, losses, metrics, models, optimizers  # noqa: I001
from symgrad.compiler import compile
from symgrad.diff import derive, grad
from symgrad.emitter import emit
from symgrad.expr import batch, labels, matrix
from symgrad.inspect import element_formula, explain, gradients, op_counts
from symgrad.layers import Activation, Dense, Input
from symgrad.models import Sequential, load_model
from symgrad.train import NonFiniteLossError

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "Dense",
    "Input",
    "NonFiniteLossError",
    "Sequential",
    "batch",
    "callbacks",
    "compile",
    "derive",
    "element_formula",
    "emit",
    "explain",
    "expr",
    "grad",
    "gradients",
    "initializers",
    "labels",
    "layers",
    "load_model",
    "losses",
    "matrix",
    "metrics",
    "models",
    "op_counts",
    "optimizers",
]
