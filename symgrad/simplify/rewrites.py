"""symgrad.simplify.rewrites: the rewrite table, one row per identity.

Each row is ``(name, math, rule)``; a rule receives a node and the program's
:class:`Context` and returns a replacement or None.  Rules that change values
only under a precondition say so in their math and check it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sympy as sp
from sympy.matrices.expressions import MatrixExpr, OneMatrix

from symgrad import core as E
from symgrad.core import scalar
from symgrad.core.stable import stable_form
from symgrad.simplify.cost import same_values, sample_points, scalar_cost

# --------------------------------------------------------------------------
# The rewrite table


@dataclass
class Context:
    """What the rules may look at: names and forward values of the whole program."""

    named: dict[MatrixExpr, E.Named] = field(default_factory=dict)
    log_softmax_of: set[MatrixExpr] = field(default_factory=set)
    forward_maps: dict[MatrixExpr, list[tuple[sp.Lambda, MatrixExpr]]] = field(default_factory=dict)
    """Operand ``Z`` (and its name) -> ``(f, A)`` for each named ``A = f(Z)``."""
    fired: list[tuple[str, MatrixExpr, MatrixExpr]] = field(default_factory=list)

    @classmethod
    def of(cls, roots: Iterable[MatrixExpr]) -> Context:
        ctx = cls()
        for node in E.topological(roots):
            if isinstance(node, E.Named):
                ctx.named.setdefault(node.body, node)
            z = node.args[0] if isinstance(node, E.LogSoftmax) else _log_of_softmax_arg(node)
            if z is not None:  # log_softmax(Z), or log(softmax(Z)) that becomes one
                ctx.log_softmax_of.add(z)
        for body, named in ctx.named.items():  # unary maps whose output has a name
            if isinstance(body, E.Elementwise) and len(body.operands) == 1:
                z = body.operands[0]
                for key in dict.fromkeys([z, ctx.named.get(z, z)]):
                    ctx.forward_maps.setdefault(key, []).append((body.fn, named))
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


_X = sp.Symbol("x")
EXP = E.canonical_lambda([_X], sp.exp(_X))
LOG = E.canonical_lambda([_X], sp.log(_X))


def _softmax_arg(a: MatrixExpr) -> MatrixExpr | None:
    """Z when ``a`` is softmax(Z), as written or as exp(log_softmax(Z)); else None."""
    a = _unnamed(a)
    if isinstance(a, E.Softmax):
        return a.args[0]
    if isinstance(a, E.Elementwise) and a.fn == EXP and isinstance(a.operands[0], E.LogSoftmax):
        return a.operands[0].args[0]
    return None


def _log_of_softmax_arg(node: MatrixExpr) -> MatrixExpr | None:
    """Z when ``node`` is log(softmax(Z)); else None."""
    if isinstance(node, E.Elementwise) and node.fn == LOG:
        return _softmax_arg(node.operands[0])
    return None


# Before adopt_name: a named softmax keeps its name and gets the cheaper body.
@rewrite(
    "softmax_from_log_softmax",
    "softmax(Z) -> exp(log_softmax(Z))  when log_softmax(Z) is computed anyway (log_softmax <= 0)",
)
def softmax_from_log_softmax(node, ctx):
    if not isinstance(node, E.Softmax) or node.args[0] not in ctx.log_softmax_of:
        return None
    body = E.elementwise(EXP, E.log_softmax(node.args[0]))
    named = ctx.named.get(node)
    return body if named is None else E.Named(named.name, body)


@rewrite("adopt_name", "f(Z) -> A  where A = f(Z) is named in the forward pass")
def adopt_name(node, ctx):
    named = ctx.named.get(node)
    return named if named is not None and named is not node else None


@rewrite("rowsum_of_probabilities", "rowsum(Y) -> 1  when the rows of Y are distributions")
def rowsum_of_probabilities(node, ctx):
    if isinstance(node, E.RowSum) and isinstance(node.args[0], E.ProbabilitySymbol):
        return OneMatrix(node.shape[0], 1)
    return None


@rewrite("rowsum_of_scaled_rows", "rowsum((u 1^T) o M) -> u o rowsum(M)  (u a column)")
def rowsum_of_scaled_rows(node, ctx):
    """Rows scaled by a column (sample weights) leave the row sum: rowsum(Y) = 1 then folds."""
    if not isinstance(node, E.RowSum) or not isinstance(node.args[0], E.Hadamard):
        return None
    parts = list(node.args[0].args)
    columns = [m for m in parts if isinstance(m, E.BroadcastCols)]
    if not columns:
        return None
    rest = [m for m in parts if m is not columns[0]]
    return E.hadamard(columns[0].args[0], E.row_sum(E.hadamard(*rest)))


@rewrite("log_softmax", "log(softmax(Z)) -> log_softmax(Z)  (max-shifted, finite)")
def log_of_softmax(node, ctx):
    z = _log_of_softmax_arg(node)
    return None if z is None else E.log_softmax(z)


@rewrite("log_sigmoid", "log(s(z)) -> -softplus(-z), log(1 - s(z)) -> -softplus(z)")
def log_of_sigmoid(node, ctx):
    if not isinstance(node, E.Elementwise) or not node.fn.expr.has(sp.log, scalar.log1p):
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
            trial = stable_form(body.xreplace({xs[i]: scalar.sigmoid(z)}))
            if not any(
                isinstance(t, (sp.log, scalar.log1p)) and t.has(scalar.sigmoid)
                for t in sp.preorder_traversal(trial)
            ):
                body, operands[i], changed = trial.xreplace({z: xs[i]}), inner.operands[0], True
    return E.elementwise(sp.Lambda(xs, body), *operands) if changed else None


@functools.lru_cache(
    maxsize=scalar.MEMO_SIZE
)  # every layer of one activation asks the same question
def _output_form(body, x, fn, y):
    """Rewrite ``body`` (a function of x) in terms of y = fn(x), or return None."""
    fx = fn(x)
    trial = body.subs(fx, y)
    trial = trial.xreplace(
        {c: c.func(y, *c.args[1:]) for c in trial.atoms(sp.Rel) if c.args[0] == x}
    )
    if trial.has(x) or trial == body:
        return None
    samples = sample_points(sorted(body.free_symbols, key=str))
    if not same_values(body, trial.xreplace({y: fx}), samples):
        return None
    return trial


@rewrite("output_form", "f'(Z) -> g(A)  with A = f(Z) from the forward pass")
def output_form(node, ctx):
    if not isinstance(node, E.Elementwise):
        return None
    xs, body = node.fn.variables, node.fn.expr
    for i, a in enumerate(node.operands):
        for fn, named in ctx.forward_maps.get(a, ()):
            y = sp.Symbol("_y", real=True)
            trial = _output_form(body, xs[i], fn, y)
            if trial is None or scalar_cost(trial) > scalar_cost(body):
                continue
            new_vars, operands = list(xs), list(node.operands)
            new_vars[i], operands[i] = y, named
            return E.elementwise(sp.Lambda(tuple(new_vars), trial), *operands)
    return None
