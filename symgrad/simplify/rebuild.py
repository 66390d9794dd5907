"""symgrad.simplify.rebuild: cost-directed rewrites over forward pass, gradients and updates.

Not ``sympy.simplify``: that turns sigmoid' into 1/(4 cosh(x/2)^2), which is
correct and slower than the y (1 - y) we can read off the forward pass.  Here
every graph is rebuilt bottom-up through the smart constructors of
:mod:`symgrad.expr` (which fold x + 0, 1 * x, scalar factors) and each node is
offered to the rules of :data:`REWRITES`, one row per identity.  Rules that
change values only under a precondition say so and check it.

CSE is structural: SymPy nodes are hash-consed, so an expression that occurs in
the forward pass and in a gradient is one node, computed once by the backends.
"""

from __future__ import annotations

from collections.abc import Iterable

import sympy as sp
from sympy.matrices.expressions import HadamardProduct, MatAdd, MatMul, MatrixExpr, Transpose

from symgrad import core as E
from symgrad.simplify.cost import cheapest_form
from symgrad.simplify.rewrites import REWRITES, Context

# --------------------------------------------------------------------------
# Rebuilding


def _rebuild_elementwise(node, kids):
    fn = node.fn
    return E.elementwise(sp.Lambda(fn.variables, cheapest_form(fn.expr)), *kids)


def _rebuild_named(node, kids):
    body = kids[0]  # adopted as the name itself, or renamed with a new body: keep that
    if isinstance(body, E.Named) and body.name == node.name:
        return body
    return E.Named(node.name, body)


REBUILD = {
    MatMul: lambda node, kids: E.scale(node.as_coeff_matrices()[0], E.matmul(*kids)),
    MatAdd: lambda node, kids: E.add(*kids),
    HadamardProduct: lambda node, kids: E.hadamard(*kids),
    Transpose: lambda node, kids: E.transpose(kids[0]),
    E.Elementwise: _rebuild_elementwise,
    E.BroadcastRows: lambda node, kids: E.broadcast_rows(kids[0], node.shape[0]),
    E.BroadcastCols: lambda node, kids: E.broadcast_cols(kids[0], node.shape[1]),
    E.Fill: lambda node, kids: E.fill(kids[0], *node.shape),
    E.Total: lambda node, kids: E.total(kids[0]),
    E.ColSum: lambda node, kids: E.col_sum(kids[0]),
    E.RowSum: lambda node, kids: E.row_sum(kids[0]),
    E.Softmax: lambda node, kids: E.softmax(kids[0]),
    E.LogSoftmax: lambda node, kids: E.log_softmax(kids[0]),
    E.Concat: lambda node, kids: E.concat(*kids),
    E.ColumnSlice: lambda node, kids: E.column_slice(kids[0], node.start, node.stop),
    E.Standardize: lambda node, kids: E.standardize(kids[0], node.axis, node.eps),
    E.DropoutMask: lambda node, kids: node,
    E.Gather: lambda node, kids: E.gather(*kids),
    E.ScatterAdd: lambda node, kids: E.scatter_add(
        *kids, node.shape[0]
    ),  # no operands: nothing to rebuild
    E.Im2Col: lambda node, kids: E.im2col(kids[0], node.window),
    E.Col2Im: lambda node, kids: E.col2im(kids[0], node.window),
    E.Reshape: lambda node, kids: E.reshape(kids[0], *node.shape),
    E.RowMax: lambda node, kids: E.row_max(kids[0]),
    E.Named: _rebuild_named,
}
"""Node type -> rebuild through the smart constructor (which folds trivial algebra)."""


def _rebuild(node: MatrixExpr, kids: list[MatrixExpr]) -> MatrixExpr:
    # No fallback to ``node.func(*kids)``: a node type without a row would skip its
    # smart constructor (shape check, folding) without anyone noticing.
    rule = E.row_for(REBUILD, type(node))
    if rule is None:
        raise NotImplementedError(
            f"symgrad.simplify has no row for {type(node).__name__} (node {node}) in "
            "symgrad.simplify.rebuild.REBUILD; every node type needs one (see 'Adding an op' "
            "in docs/architecture.md)"
        )
    return rule(node, kids)


class Simplifier:
    """Rebuild graphs bottom-up, applying :data:`REWRITES` at every node."""

    def __init__(self, roots: Iterable[MatrixExpr], rules=None):
        self.ctx = Context.of(roots)
        self.rules = REWRITES if rules is None else rules
        self.memo: dict[MatrixExpr, MatrixExpr] = {}

    def __call__(self, root: MatrixExpr) -> MatrixExpr:
        for node in E.topological([root], self.memo):  # only the nodes not rebuilt yet
            if node in self.memo:  # rebuilt meanwhile, by a rewrite's own rebuild
                continue
            kids = [self.memo[c] for c in E.children(node)]
            result = self.memo[node] = self._apply(_rebuild(node, kids) if kids else node)
            # a result is simplified: rebuilding a rewrite's output stops at it
            self.memo.setdefault(result, result)
        return self.memo[root]

    def _apply(self, node: MatrixExpr) -> MatrixExpr:
        for _ in range(8):  # each rule shrinks or renames; a few rounds reach the fixpoint
            for name, _math, rule in self.rules:
                new = rule(node, self.ctx)
                if new is not None and new != node:
                    self.ctx.fired.append((name, node, new))
                    if isinstance(new, E.Named) and new.body == node:  # adopted a forward name
                        self.memo.setdefault(new, new)
                        return new
                    node = self(new) if new not in self.memo else self.memo[new]
                    break
            else:
                return node
        return node


def simplify(exprs: dict, *, rules=None, context: Iterable[MatrixExpr] = ()) -> tuple[dict, list]:
    """Simplify several outputs together; returns (outputs, rewrites fired).

    ``context`` adds graphs whose names and forward values rules may reuse.
    """
    s = Simplifier([*exprs.values(), *context], rules)
    out = {k: s(v) for k, v in exprs.items()}
    return out, s.ctx.fired


def rule_names() -> list[str]:
    return [name for name, _, _ in REWRITES]
