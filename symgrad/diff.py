"""symgrad.diff: reverse-mode symbolic differentiation over matrix graphs.

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
from dataclasses import dataclass, field

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

from symgrad import expr as E

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


@vjp(E.Softmax, "d softmax(Z)/dZ: P o (G - rowsum(G o P)), P = softmax(Z)")
def softmax_vjp(node, out, ct):
    k = node.shape[1]
    return [E.hadamard(out, E.sub(ct, E.broadcast_cols(E.row_sum(E.hadamard(ct, out)), k)))]


@vjp(E.LogSoftmax, "d log_softmax(Z)/dZ: G - softmax(Z) o rowsum(G)")
def log_softmax_vjp(node, out, ct):
    z = node.args[0]
    k = node.shape[1]
    return [E.sub(ct, E.hadamard(E.softmax(z), E.broadcast_cols(E.row_sum(ct), k)))]


@vjp(E.Named, "d name(A)/dA: G")
def named_vjp(node, out, ct):
    return [ct]


LEAVES = (MatrixSymbol, ZeroMatrix, OneMatrix, sp.Identity)


# --------------------------------------------------------------------------
# The sweep


@dataclass
class Step:
    """One application of a VJP rule, for ``explain``."""

    node: MatrixExpr
    rule: str
    math: str
    cotangent: MatrixExpr
    operands: tuple[MatrixExpr, ...]
    results: tuple[MatrixExpr, ...]


@dataclass
class Derivation:
    """Result of :func:`derive`: gradients plus the trace that produced them."""

    loss: MatrixExpr
    wrt: tuple[MatrixSymbol, ...]
    gradients: dict[MatrixSymbol, MatrixExpr]
    cotangents: dict[MatrixExpr, MatrixExpr]
    steps: list[Step] = field(default_factory=list)

    def named_cotangents(self) -> dict[str, MatrixExpr]:
        """``dZ1 -> expr`` for every named intermediate the loss depends on."""
        return {
            f"d{node.name}": ct for node, ct in self.cotangents.items() if isinstance(node, E.Named)
        }


def _check_loss(loss) -> None:
    if not isinstance(loss, MatrixExpr):
        raise TypeError(
            f"grad expects the loss as a (1, 1) matrix expression; received {type(loss).__name__}"
        )
    if tuple(loss.shape) != (1, 1):
        raise ValueError(
            f"grad needs a scalar loss of shape (1, 1); received {loss} with shape {tuple(loss.shape)}"
            " (reduce it first, e.g. with symgrad.expr.mean)"
        )


def derive(loss: MatrixExpr, wrt: Sequence[MatrixSymbol]) -> Derivation:
    """Reverse-mode sweep: dL/dw for each ``w`` in ``wrt``.

    A ``w`` the loss does not depend on gets a ``ZeroMatrix`` gradient (not an
    error), as ``torch.autograd.grad(..., allow_unused=True)`` with zeros.
    """
    _check_loss(loss)
    wrt = tuple(wrt)
    for w in wrt:
        if not isinstance(w, MatrixSymbol):
            raise TypeError(
                f"can only differentiate with respect to matrix symbols; received {w!r}"
            )
    E.check_symbols([loss, *wrt])
    order = E.topological([loss])
    targets = set(wrt)
    needed = set()  # nodes with a wrt symbol below them
    for node in order:
        if node in targets or any(c in needed for c in E.children(node)):
            needed.add(node)
    alias = {n.body: n for n in order if isinstance(n, E.Named)}
    cts: dict[MatrixExpr, MatrixExpr] = {loss: OneMatrix(1, 1)}
    trace = Derivation(loss, wrt, {}, cts)
    for node in reversed(order):
        ct = cts.get(node)
        if ct is None or node not in needed or isinstance(node, LEAVES) or E.is_zero(ct):
            continue
        rule = VJP_RULES.get(type(node))
        if rule is None:
            raise NotImplementedError(
                f"no VJP rule for {type(node).__name__} (node {node}); "
                f"register one with @symgrad.diff.vjp({type(node).__name__}, ...)"
            )
        operands = E.children(node)
        results = tuple(rule(node, alias.get(node, node), ct))
        for child, g in zip(operands, results):
            if child in needed:
                cts[child] = E.add(cts[child], g) if child in cts else g
        trace.steps.append(Step(node, rule.__name__, RULE_MATH[type(node)], ct, operands, results))
    trace.gradients = {w: cts.get(w, ZeroMatrix(*w.shape)) for w in wrt}
    return trace


def grad(loss: MatrixExpr, wrt):
    """Symbolic gradient(s) of a (1, 1) loss.

    ``grad(L, W)`` returns dL/dW; ``grad(L, [W1, b1])`` returns a list.  The
    loss first gets the forward fusions of :mod:`symgrad.simplify`
    (log(softmax) -> log_softmax, log(sigmoid) -> -softplus), so gradients
    stay finite where the loss is; :func:`derive` differentiates as written.

    >>> from symgrad import expr as E
    >>> n = E.batch(); X = E.matrix("X", n, 3); W = E.matrix("W", 3, 1)
    >>> XW = E.matmul(X, W)
    >>> print(grad(E.total(E.hadamard(XW, XW)), W))
    2*X.T*X*W
    """
    from symgrad.simplify import simplify  # the simplifier builds on this module

    single = isinstance(wrt, MatrixExpr)
    ws = [wrt] if single else list(wrt)
    _check_loss(loss)
    fused, _ = simplify({"loss": loss})  # log(softmax), log(sigmoid): stable before the sweep
    g = derive(fused["loss"], ws).gradients
    return g[ws[0]] if single else [g[w] for w in ws]
