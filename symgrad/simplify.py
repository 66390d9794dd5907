"""symgrad.simplify: cost-directed rewrites over forward pass, gradients and updates.

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

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sympy as sp
from sympy.matrices.expressions import (
    HadamardProduct,
    MatAdd,
    MatMul,
    MatrixExpr,
    OneMatrix,
    Transpose,
)

from symgrad import expr as E
from symgrad import scalar

# --------------------------------------------------------------------------
# Scalar cost model

TRANSCENDENTAL = (sp.exp, sp.log, sp.tanh, sp.erf, scalar.sigmoid, scalar.softplus)


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
        elif isinstance(node, (sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign)):
            cost += 1
    return cost


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


def _sample_points(variables, count: int = 24, seed: int = 0) -> list[dict]:
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


# --------------------------------------------------------------------------
# The rewrite table


@dataclass
class Context:
    """What the rules may look at: names and forward values of the whole program."""

    named: dict[MatrixExpr, E.Named] = field(default_factory=dict)
    forward_maps: list[tuple[MatrixExpr, sp.Lambda, MatrixExpr]] = field(default_factory=list)
    fired: list[tuple[str, MatrixExpr, MatrixExpr]] = field(default_factory=list)

    @classmethod
    def of(cls, roots: Iterable[MatrixExpr]) -> Context:
        ctx = cls()
        for node in E.topological(roots):
            if isinstance(node, E.Named):
                ctx.named.setdefault(node.body, node)
        for body, named in ctx.named.items():  # unary maps whose output has a name
            if isinstance(body, E.Elementwise) and len(body.operands) == 1:
                ctx.forward_maps.append((body.operands[0], body.fn, named))
        return ctx


Rewrite = Callable[[MatrixExpr, Context], MatrixExpr | None]
REWRITES: list[tuple[str, str, Rewrite]] = []


def rewrite(name: str, math: str):
    def register(rule: Rewrite) -> Rewrite:
        REWRITES.append((name, math, rule))
        return rule

    return register


def _unnamed(a: MatrixExpr) -> MatrixExpr:
    return a.body if isinstance(a, E.Named) else a


@rewrite("adopt_name", "f(Z) -> A  where A = f(Z) is named in the forward pass")
def adopt_name(node, ctx):
    named = ctx.named.get(node)
    return named if named is not None and named is not node else None


@rewrite("rowsum_of_probabilities", "rowsum(Y) -> 1  when the rows of Y are distributions")
def rowsum_of_probabilities(node, ctx):
    if isinstance(node, E.RowSum) and isinstance(node.args[0], E.ProbabilitySymbol):
        return OneMatrix(node.shape[0], 1)
    return None


@rewrite("log_softmax", "log(softmax(Z)) -> log_softmax(Z)  (max-shifted, finite)")
def log_of_softmax(node, ctx):
    if isinstance(node, E.Elementwise) and len(node.operands) == 1:
        x = node.fn.variables[0]
        inner = _unnamed(node.operands[0])
        if isinstance(inner, E.Softmax) and node.fn.expr == sp.log(x):
            return E.log_softmax(inner.args[0])
    return None


@rewrite("log_sigmoid", "log(s(z)) -> -softplus(-z), log(1 - s(z)) -> -softplus(z)")
def log_of_sigmoid(node, ctx):
    if not isinstance(node, E.Elementwise) or not node.fn.expr.has(sp.log):
        return None
    xs, body = node.fn.variables, node.fn.expr
    operands = list(node.operands)
    changed = False
    for i, a in enumerate(node.operands):
        inner = _unnamed(a)
        if isinstance(inner, E.Elementwise) and inner.fn == E.canonical_lambda(
            [sp.Symbol("x")], scalar.sigmoid(sp.Symbol("x"))
        ):
            z = sp.Symbol(f"_z{i}", real=True)
            trial = scalar.log_sigmoid_rules(body.xreplace({xs[i]: scalar.sigmoid(z)}))
            if not any(
                isinstance(t, sp.log) and t.has(scalar.sigmoid)
                for t in sp.preorder_traversal(trial)
            ):
                body, operands[i], changed = trial.xreplace({z: xs[i]}), inner.operands[0], True
    return E.elementwise(sp.Lambda(xs, body), *operands) if changed else None


def _output_form(body, x, fn, y):
    """Rewrite ``body`` (a function of x) in terms of y = fn(x), or return None."""
    fx = fn(x)
    trial = body.subs(fx, y)
    trial = trial.xreplace(
        {c: c.func(y, *c.args[1:]) for c in trial.atoms(sp.Rel) if c.args[0] == x}
    )
    if trial.has(x) or trial == body:
        return None
    samples = _sample_points(sorted(body.free_symbols, key=str))
    if not same_values(body, trial.xreplace({y: fx}), samples):
        return None
    return trial


@rewrite("output_form", "f'(Z) -> g(A)  with A = f(Z) from the forward pass")
def output_form(node, ctx):
    if not isinstance(node, E.Elementwise):
        return None
    xs, body = node.fn.variables, node.fn.expr
    for i, a in enumerate(node.operands):
        for z, fn, named in ctx.forward_maps:
            if a != z and a != ctx.named.get(z):
                continue
            y = sp.Symbol("_y", real=True)
            trial = _output_form(body, xs[i], fn, y)
            if trial is None or scalar_cost(trial) > scalar_cost(body):
                continue
            new_vars, operands = list(xs), list(node.operands)
            new_vars[i], operands[i] = y, named
            return E.elementwise(sp.Lambda(tuple(new_vars), trial), *operands)
    return None


# --------------------------------------------------------------------------
# Rebuilding


def _rebuild_elementwise(node, kids):
    fn = node.fn
    return E.elementwise(sp.Lambda(fn.variables, cheapest_form(fn.expr)), *kids)


def _rebuild_named(node, kids):  # its body was adopted as the name itself: keep it
    return node if kids[0] == node else E.Named(node.name, kids[0])


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
    E.Named: _rebuild_named,
}
"""Node type -> rebuild through the smart constructor (which folds trivial algebra)."""


def _rebuild(node: MatrixExpr, kids: list[MatrixExpr]) -> MatrixExpr:
    rule = REBUILD.get(type(node))
    if rule is not None:
        return rule(node, kids)
    it = iter(kids)  # a node type without a smart constructor: same node, new operands
    return node.func(*[next(it) if isinstance(a, MatrixExpr) else a for a in node.args])


class Simplifier:
    """Rebuild graphs bottom-up, applying :data:`REWRITES` at every node."""

    def __init__(self, roots: Iterable[MatrixExpr], rules=None):
        self.ctx = Context.of(roots)
        self.rules = REWRITES if rules is None else rules
        self.memo: dict[MatrixExpr, MatrixExpr] = {}

    def __call__(self, root: MatrixExpr) -> MatrixExpr:
        for node in E.topological([root]):
            if node in self.memo:
                continue
            kids = [self.memo[c] for c in E.children(node)]
            self.memo[node] = self._apply(_rebuild(node, kids) if kids else node)
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
