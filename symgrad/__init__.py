"""symgrad: a symbolic differentiation compiler for neural networks.

Build a model as a tensor-level SymPy graph (or with the Keras-style API),
read its gradients as formulas, and run forward pass, gradients and optimizer
update as one generated program: NumPy source or LLVM machine code.
"""

from symgrad import (  # noqa: I001
    callbacks,
    expr,
    initializers,
    layers,
    losses,
    metrics,
    models,
    ops,
    optimizers,
    regularizers,
    utils,
)
from symgrad.compiler import compile
from symgrad.diff import derive
from symgrad.emission import emit
from symgrad.environment import config
from symgrad.core import batch, labels, matrix
from symgrad.formulas import element_formula, explain, grad, gradients, op_counts
from symgrad.nn.layers import Activation, Dense, Input
from symgrad.nn.models import Model, Sequential, load_model
from symgrad.nn.tape import GradientTape, Tensor
from symgrad.nn.trainer import NonFiniteLossError

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "Dense",
    "GradientTape",
    "Input",
    "Model",
    "NonFiniteLossError",
    "Sequential",
    "Tensor",
    "batch",
    "callbacks",
    "compile",
    "config",
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
    "ops",
    "optimizers",
    "regularizers",
    "utils",
]
