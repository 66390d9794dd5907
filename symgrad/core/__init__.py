"""symgrad.core: the vocabulary of matrix graphs.

- :mod:`~symgrad.core.scalar`: scalar functions elementwise maps are written in;
- :mod:`~symgrad.core.nodes`: node classes (shape rule, printing), symbols;
- :mod:`~symgrad.core.build`: smart constructors (shape checks, trivial folding);
- :mod:`~symgrad.core.activations`: named activations;
- :mod:`~symgrad.core.graph`: graph walks.

``symgrad.expr`` is the public name of this namespace.
"""

from symgrad.core import printing, scalar  # noqa: F401  (printing: formula display)
from symgrad.core.activations import ACTIVATIONS, activation_names, apply, as_lambda
from symgrad.core.build import (
    add,
    add_bias,
    broadcast_cols,
    broadcast_rows,
    col_sum,
    elementwise,
    fill,
    hadamard,
    is_zero,
    log_softmax,
    matmul,
    mean,
    name,
    reduce_sum,
    row_sum,
    scale,
    softmax,
    split_scalar,
    sub,
    total,
    transpose,
)
from symgrad.core.graph import check_symbols, children, leaves, scalar_params, topological
from symgrad.core.nodes import (
    DISPLAY_NAMES,
    BroadcastCols,
    BroadcastRows,
    ColSum,
    Elementwise,
    Fill,
    LogSoftmax,
    Named,
    ProbabilitySymbol,
    RowSum,
    ShapeMismatch,
    Softmax,
    Total,
    arg_symbols,
    batch,
    canonical_lambda,
    labels,
    matrix,
)

__all__ = [
    "ACTIVATIONS",
    "DISPLAY_NAMES",
    "BroadcastCols",
    "BroadcastRows",
    "ColSum",
    "Elementwise",
    "Fill",
    "LogSoftmax",
    "Named",
    "ProbabilitySymbol",
    "RowSum",
    "ShapeMismatch",
    "Softmax",
    "Total",
    "activation_names",
    "add",
    "add_bias",
    "apply",
    "arg_symbols",
    "as_lambda",
    "batch",
    "broadcast_cols",
    "broadcast_rows",
    "canonical_lambda",
    "check_symbols",
    "children",
    "col_sum",
    "elementwise",
    "fill",
    "hadamard",
    "is_zero",
    "labels",
    "leaves",
    "log_softmax",
    "matmul",
    "matrix",
    "mean",
    "name",
    "reduce_sum",
    "row_sum",
    "scalar",
    "scalar_params",
    "scale",
    "softmax",
    "split_scalar",
    "sub",
    "topological",
    "total",
    "transpose",
]
