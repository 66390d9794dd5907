"""symgrad.diff.rules: the table of vector-Jacobian products, one row per node type.

One table, :data:`VJP_RULES`, maps each node type to its vector-Jacobian
product: given the node, its cotangent ``ct`` (dL/dnode, same shape as the
node) and the node's *output* (the named forward value, so derivatives can
reuse it), a rule returns the cotangent of each matrix operand.  The sweep
visits every node of the DAG once, in reverse topological order.

Subgradients: relu'(0) = 0 and |x|'(0) = 0 (``sign(0) = 0``), as in PyTorch
and JAX; ``Heaviside`` steps are written with value 0 at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sympy as sp
from sympy.matrices.expressions import (
    HadamardProduct,
    MatAdd,
    MatMul,
    MatrixExpr,
    MatrixSymbol,
    OneMatrix,
    Transpose,
    ZeroMatrix,
)

from symgrad import core as E

Rule = Callable[[MatrixExpr, MatrixExpr, MatrixExpr], Sequence[MatrixExpr]]

VJP_RULES: dict[type, Rule] = {}
"""Node type -> rule(node, out, ct) returning one cotangent per matrix operand."""

RULE_MATH: dict[type, str] = {}
"""Node type -> the rule as a formula, for ``explain``."""


def vjp(node_type: type, math: str):
    """Register the VJP rule of ``node_type``; ``math`` is its one-line formula."""

    def register(rule: Rule) -> Rule:
        VJP_RULES[node_type] = rule
        RULE_MATH[node_type] = math
        return rule

    return register


@vjp(MatMul, "d(c A1...Ak)/dAi: c (A1..Ai-1)^T G (Ai+1..Ak)^T")
def matmul_vjp(node, out, ct):
    c, mats = node.as_coeff_matrices()
    grads = []
    for i in range(len(mats)):
        left = [E.transpose(m) for m in reversed(mats[:i])]
        right = [E.transpose(m) for m in reversed(mats[i + 1 :])]
        grads.append(E.scale(c, E.matmul(*left, ct, *right)))
    return grads


@vjp(MatAdd, "d(A + B)/dA: G")
def matadd_vjp(node, out, ct):
    return [ct for _ in node.args]


@vjp(HadamardProduct, "d(A o B)/dA: G o B")
def hadamard_vjp(node, out, ct):
    args = node.args
    return [E.hadamard(ct, *(args[:i] + args[i + 1 :])) for i in range(len(args))]


@vjp(Transpose, "d(A^T)/dA: G^T")
def transpose_vjp(node, out, ct):
    return [E.transpose(ct)]


@vjp(E.Elementwise, "d f(A, B)/dA: G o f_A(A, B), f_A = df/da from sympy.diff")
def elementwise_vjp(node, out, ct):
    fn = node.fn
    return [
        E.hadamard(ct, E.elementwise(sp.Lambda(fn.variables, sp.diff(fn.expr, x)), *node.operands))
        for x in fn.variables
    ]


@vjp(E.BroadcastRows, "d(1 v)/dv: colsum(G)")
def broadcast_rows_vjp(node, out, ct):
    return [E.col_sum(ct)]


@vjp(E.BroadcastCols, "d(u 1^T)/du: rowsum(G)")
def broadcast_cols_vjp(node, out, ct):
    return [E.row_sum(ct)]


@vjp(E.Fill, "d fill(s)/ds: sum(G)")
def fill_vjp(node, out, ct):
    return [E.total(ct)]


@vjp(E.Total, "d sum(A)/dA: G repeated over A")
def total_vjp(node, out, ct):
    return [E.fill(ct, *node.args[0].shape)]


@vjp(E.ColSum, "d colsum(A)/dA: G repeated down the rows")
def col_sum_vjp(node, out, ct):
    return [E.broadcast_rows(ct, node.args[0].shape[0])]


@vjp(E.RowSum, "d rowsum(A)/dA: G repeated across the columns")
def row_sum_vjp(node, out, ct):
    return [E.broadcast_cols(ct, node.args[0].shape[1])]


@vjp(E.Concat, "d [A | B]/dA: the columns of G that A filled (G[:, 0:c_A])")
def concat_vjp(node, out, ct):
    cots, start = [], 0
    for part in node.args:
        stop = start + int(part.shape[1])
        cots.append(E.column_slice(ct, start, stop))
        start = stop
    return cots


@vjp(E.ColumnSlice, "d A[:, s:e]/dA: G in columns s:e, zeros elsewhere")
def column_slice_vjp(node, out, ct):
    a = node.args[0]
    rows, width = a.shape[0], int(a.shape[1])
    pad = [ZeroMatrix(rows, c) for c in (node.start, width - node.stop)]
    return [
        E.concat(*([pad[0]] if node.start else []), ct, *([pad[1]] if node.stop < width else []))
    ]


@vjp(E.Softmax, "d softmax(Z)/dZ: P o (G - rowsum(G o P)), P = softmax(Z)")
def softmax_vjp(node, out, ct):
    k = node.shape[1]
    return [E.hadamard(out, E.sub(ct, E.broadcast_cols(E.row_sum(E.hadamard(ct, out)), k)))]


@vjp(E.LogSoftmax, "d log_softmax(Z)/dZ: G - softmax(Z) o rowsum(G)")
def log_softmax_vjp(node, out, ct):
    z = node.args[0]
    k = node.shape[1]
    return [E.sub(ct, E.hadamard(E.softmax(z), E.broadcast_cols(E.row_sum(ct), k)))]


@vjp(E.DropoutMask, "M: no matrix operands (a constant of the step; d(A o M)/dA = G o M)")
def dropout_mask_vjp(node, out, ct):
    return []


@vjp(
    E.Standardize,
    "d batchnorm(A)/dA: rstd o (G - mean(G) - N o mean(G o N)), N = batchnorm(A), "
    "rstd = 1/sqrt(var(A) + eps), means over the normalized axis",
)
def standardize_vjp(node, out, ct):
    a, axis = node.args[0], node.axis
    spread = E.broadcast_rows if axis == 0 else E.broadcast_cols
    count = a.shape[axis]

    def mean(m):  # the mean over the normalized axis, repeated back over it
        return spread(E.mean(m, axis), count)

    rstd = spread(E.inverse_std(a, axis, node.eps), count)
    centered = E.sub(ct, mean(ct))
    return [E.hadamard(rstd, E.sub(centered, E.hadamard(out, mean(E.hadamard(ct, out)))))]


@vjp(E.Gather, "d W[X]/dW: scatter_add(G, X) (row v sums the blocks of G where X = v); X: none")
def gather_vjp(node, out, ct):
    table, indices = node.args
    return [E.scatter_add(ct, indices, table.shape[0]), ZeroMatrix(*indices.shape)]


@vjp(E.ScatterAdd, "d scatter_add(G, X)/dG: H[X] (the rows of H gathered back); X: none")
def scatter_add_vjp(node, out, ct):
    source, indices, _ = node.args
    return [E.gather(ct, indices), ZeroMatrix(*indices.shape)]


@vjp(E.Im2Col, "d im2col(X)/dX: col2im(G), each window's cotangent added back where it was read")
def im2col_vjp(node, out, ct):
    return [E.col2im(ct, node.window)]


@vjp(E.Col2Im, "d col2im(G)/dG: im2col(G') (the adjoint of the adjoint)")
def col2im_vjp(node, out, ct):
    return [E.im2col(ct, node.window)]


@vjp(E.Reshape, "d reshape(A)/dA: reshape(G) back to A's shape")
def reshape_vjp(node, out, ct):
    return [E.reshape(ct, *node.args[0].shape)]


@vjp(
    E.RowMax, "d rowmax(A)/dA: G on the entries equal to their row's max (the argmax), 0 elsewhere"
)
def row_max_vjp(node, out, ct):
    return [E.route_to_max(node.args[0], out, ct)]


@vjp(E.Named, "d name(A)/dA: G")
def named_vjp(node, out, ct):
    return [ct]


LEAVES = (MatrixSymbol, ZeroMatrix, OneMatrix, sp.Identity)
