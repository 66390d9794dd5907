"""symgrad.formulas: derived gradients read as formulas.

- :func:`grad`: dL/dW after the forward fusions, SymPy matrix expressions.
- :func:`gradients`: simplified dL/dW for each weight, SymPy matrix expressions.
- :func:`readable_gradients`: the same, normalization's gradient in its compact form.
- :func:`explain`: the chain rule step by step, and which rewrites fired.
- :func:`element_formula`: dL/dW[i, j] as a scalar formula (a sum over the batch).
- :func:`op_counts`: GEMM FLOPs, elementwise operations and transcendental
  calls per training step, before and after simplification.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sympy as sp
from sympy.matrices.expressions import (
    HadamardProduct,
    MatAdd,
    MatMul,
    MatrixExpr,
    MatrixSymbol,
    Transpose,
    ZeroMatrix,
)

from symgrad import core as E
from symgrad.core import display
from symgrad.core.printing import FormulaLatexPrinter, FormulaStrPrinter
from symgrad.diff import Derivation, derive
from symgrad.diff.rules import LEAVES, VJP_RULES
from symgrad.diff.sweep import check_loss
from symgrad.simplify import TRANSCENDENTAL, scalar_cost, simplify


@dataclass
class Gradients:
    """Raw and simplified gradients of one loss, with the trace behind them."""

    loss: MatrixExpr
    raw: dict[MatrixSymbol, MatrixExpr]
    simplified: dict[MatrixSymbol, MatrixExpr]
    derivation: Derivation
    rewrites: list[tuple[str, MatrixExpr, MatrixExpr]]


def gradients(loss: MatrixExpr, wrt: Sequence[MatrixSymbol], context: Iterable = ()) -> Gradients:
    """Derive and simplify; ``context`` lists forward values whose names may be reused."""
    context = list(context)
    fused, fired_fwd = simplify({"loss": loss}, context=context)
    d = derive(fused["loss"], wrt)
    keys = {f"d{w.name}": w for w in wrt}
    out, fired = simplify({k: d.gradients[w] for k, w in keys.items()}, context=[*context, loss])
    return Gradients(
        fused["loss"],
        dict(d.gradients),
        {w: out[k] for k, w in keys.items()},
        d,
        fired_fwd + fired,
    )


KEPT_WHOLE: tuple[type, ...] = (E.Standardize,)
"""Nodes whose gradient reads best as their VJP rule writes it: batch and layer
normalization's ``rstd o (G - mean(G) - xhat o mean(G o xhat))``, which the
simplifier (rightly, for the generated code) expands into separate sums."""


def readable_gradients(
    loss: MatrixExpr, wrt: Sequence[MatrixSymbol], context: Iterable = ()
) -> dict[MatrixSymbol, MatrixExpr]:
    """The simplified gradients as a person writes them: the same values as
    :func:`gradients`, with each node of :data:`KEPT_WHOLE` shown by its own VJP rule.

    For such a node ``S = f(A)``: its cotangent ``G`` is derived and simplified with ``S``
    replaced by a stand-in symbol (``xhat``), the rule gives ``dA`` from ``G``, and a
    weight below ``A`` gets ``dA`` carried down (the gradient of ``sum(A o C)`` with ``dA``
    put for ``C``) plus what reaches it by other paths (``S`` held fixed).  Recursive:
    one such node less at each step.
    """
    context = list(context)
    whole = [n for n in E.topological([loss]) if isinstance(n, KEPT_WHOLE)]
    if not whole:
        return gradients(loss, wrt, context).simplified
    node = whole[-1]
    taken = {s.name for s in E.leaves([loss])}
    xhat = E.matrix(E.fresh_name("xhat", taken), *node.shape)
    swap = {node: xhat}
    cut, kept = loss.xreplace(swap), [o.xreplace(swap) for o in context]
    g = readable_gradients(cut, [xhat], kept)[xhat].xreplace({xhat: node})
    (a,) = E.children(node)
    da = _outside(node, g)
    below = set(E.leaves([a]))
    beside = set(E.leaves([cut]))
    c = E.matrix(E.fresh_name("C", taken), *a.shape)
    down = [w for w in wrt if w in below]
    through = readable_gradients(E.total(E.hadamard(a, c)), down, context) if down else {}
    others = readable_gradients(cut, [w for w in wrt if w in beside], kept)
    out = {}
    for w in wrt:
        parts = [others[w].xreplace({xhat: node})] if w in others else []
        parts += [through[w].xreplace({c: da})] if w in through else []
        out[w] = E.add(*parts) if parts else ZeroMatrix(*w.shape)
    return out


_CONSTANT_ALONG = {0: E.BroadcastRows, 1: E.BroadcastCols}
"""What is constant along a normalized axis: a row repeated over the rows (axis 0), a
column repeated over the columns (axis 1)."""


def _outside(node: MatrixExpr, g: MatrixExpr) -> MatrixExpr:
    """The node's VJP rule on the cotangent ``g`` with what the rule is linear in taken out
    of its bracket: ``g``'s scalar factor, and for a normalization its factors constant
    along the normalized axis (batch normalization's gamma, a row repeated over the batch,
    comes out of the means over the batch; layer normalization's stays inside)."""
    c, rest = E.split_scalar(g)
    constant = _CONSTANT_ALONG.get(getattr(node, "axis", None))
    parts = list(rest.args) if isinstance(rest, HadamardProduct) else [rest]
    out = [m for m in parts if constant is not None and isinstance(m, constant)]
    inside = [m for m in parts if all(m is not o for o in out)]
    if not inside:  # the cotangent is itself constant along the axis
        out, inside = [], parts
    bracket = VJP_RULES[type(node)](node, node, E.hadamard(*inside))[0]
    return E.scale(c, E.hadamard(*out, bracket) if out else bracket)


def _shortener(printer: FormulaStrPrinter):
    def short(e, width: int = 110) -> str:
        text = printer.doprint(e)
        return text if len(text) <= width else text[: width - 3] + "..."

    return short


def gradient_tex(name: str) -> str:
    """``\\frac{\\partial L}{\\partial \\mathrm{dense/kernel}}`` for a weight's name."""
    return rf"\frac{{\partial L}}{{\partial {display.label_tex(name)}}}"


class FormulaTable(dict):
    """Formulas by name (``{"dense/kernel": dL/dW, ...}``): a dict, printed as one; in
    Jupyter a table of LaTeX formulas (``_repr_html_``, ``_repr_latex_``).

    ``lhs(name)``: the LaTeX left-hand side of a row; ``names``: symbol name -> the name
    LaTeX shows (a model's weights under their Keras paths).
    """

    def __init__(self, formulas=(), lhs=display.label_tex, names=None, title: str = ""):
        super().__init__(formulas)
        self.lhs, self.names, self.title = lhs, dict(names or {}), title

    def _rows(self) -> list[tuple[str, str]]:
        printer = FormulaLatexPrinter({"names": self.names})
        return [(self.lhs(k), printer.doprint(v)) for k, v in self.items()]

    def latex(self) -> dict[str, str]:
        """Each row as one LaTeX equation, ``lhs = formula``, by name."""
        return {k: f"{lhs} = {rhs}" for k, (lhs, rhs) in zip(self, self._rows())}

    def _repr_latex_(self) -> str:
        return display.aligned(self._rows())

    def _repr_html_(self) -> str:
        rows = [[display.text(k), display.math(tex)] for k, tex in self.latex().items()]
        return display.table(["name", "formula"], rows, self.title)


class Explanation(str):
    """The text of :func:`explain` (a ``str``, printed as before), with its parts kept:
    ``forward`` (name, formula), ``loss``, ``steps`` (the sweep's ``Step`` records), ``rewrites``
    (name, before, after), ``gradients`` (symbol, formula) and ``notes`` (title, lines).
    In Jupyter its tables render with LaTeX formulas (``_repr_html_``, ``_repr_latex_``).
    """

    def __new__(cls, text: str, parts: dict):
        self = super().__new__(cls, text)
        self.__dict__.update(parts)
        return self

    def _tex(self, expr) -> str:
        return FormulaLatexPrinter({"names": self.names}).doprint(expr)

    def _name_tex(self, expr) -> str:
        if isinstance(expr, (E.Named, MatrixSymbol)):
            return self._tex(expr)
        return rf"\left({self._tex(expr)}\right)"

    def _gradient_lines(self) -> list[tuple[str, str]]:
        return [
            (gradient_tex(self.names.get(w.name, w.name)), self._tex(e)) for w, e in self.gradients
        ]

    def _repr_latex_(self) -> str:
        forward = [(display.label_tex(name), self._tex(body)) for name, body in self.forward]
        return display.aligned([*forward, ("L", self._tex(self.loss)), *self._gradient_lines()])

    def _repr_html_(self) -> str:
        m = display.math
        forward = [[display.text(k), m(self._tex(body))] for k, body in self.forward]
        forward.append([display.text("L"), m(self._tex(self.loss))])
        steps = [
            [
                display.text(k),
                m(self._tex(step.node)),
                display.text(f"{step.rule}: {step.math}"),
                m(self._tex(step.cotangent)),
                "<br>".join(
                    m(rf"\partial {self._name_tex(op)} \mathrel{{+}}= {self._tex(r)}")
                    for op, r in zip(step.operands, step.results)
                ),
            ]
            for k, step in enumerate(self.steps, 1)
        ]
        rewrites = [
            [display.text(name), m(self._tex(before)), m(self._tex(after))]
            for name, before, after in self.rewrites
        ]
        gradients = [[m(lhs), m(rhs)] for lhs, rhs in self._gradient_lines()]
        parts = [
            display.table(["name", "formula"], forward, "Forward definitions"),
            display.table(
                ["#", "node", "rule", "G (incoming cotangent)", "adds"], steps, "Reverse sweep"
            ),
            display.table(["rewrite", "before", "after"], rewrites, "Rewrites fired"),
            display.table(["gradient", "formula"], gradients, "Gradients"),
        ]
        for title, lines in self.notes:
            body = display.text("\n".join(lines))
            parts.append(f"<p><b>{display.text(title)}</b></p><pre>{body}</pre>")
        return "\n".join(parts)


def explain(
    loss: MatrixExpr,
    wrt: Sequence[MatrixSymbol],
    context: Iterable = (),
    names: dict[str, str] | None = None,
    notes: Sequence[tuple[str, Sequence[str]]] = (),
) -> Explanation:
    """The derivation as text: forward definitions, each VJP step, rewrites, results.

    Returns an :class:`Explanation`, a ``str`` that Jupyter shows as tables of LaTeX
    formulas; ``names``: symbol name -> the name its LaTeX shows; ``notes``: more
    sections (title, lines) after the gradients.
    """
    g = gradients(loss, wrt, context)
    printer = FormulaStrPrinter()  # one for the whole text: the steps share subterms
    _short = _shortener(printer)
    forward = [
        (node.name, node.body)
        for node in E.topological([g.loss, *context])
        if isinstance(node, E.Named)
    ]
    steps = list(g.derivation.steps)
    lines = ["Forward definitions:"]
    lines += [f"  {name} = {_short(body)}" for name, body in forward]
    lines.append(f"  L = {_short(g.loss)}")
    lines.append("")
    lines.append("Reverse sweep (G = incoming cotangent dL/dnode):")
    for k, step in enumerate(steps, 1):
        label = step.node.name if isinstance(step.node, E.Named) else _short(step.node, 60)
        lines.append(f"  [{k}] node {label}   rule {step.rule}: {step.math}")
        lines.append(f"      G = {_short(step.cotangent)}")
        for operand, result in zip(step.operands, step.results):
            name = (
                operand.name
                if isinstance(operand, (E.Named, MatrixSymbol))
                else f"({_short(operand, 40)})"
            )
            lines.append(f"      -> d/d{name} += {_short(result)}")
    lines.append("")
    lines.append("Rewrites fired:")
    for name, before, after in g.rewrites:
        lines.append(f"  {name}: {_short(before, 60)}  ->  {_short(after, 60)}")
    if not g.rewrites:
        lines.append("  (none)")
    lines.append("")
    lines.append("Gradients:")
    for w, e in g.simplified.items():
        lines.append(f"  dL/d{w.name} = {printer.doprint(e)}")
    for title, extra in notes:
        lines += ["", f"{title}:", *(f"  {t}" for t in extra)]
    parts = {
        "forward": forward,
        "loss": g.loss,
        "steps": steps,
        "rewrites": list(g.rewrites),
        "gradients": list(g.simplified.items()),
        "names": dict(names or {}),
        "notes": [(title, list(extra)) for title, extra in notes],
    }
    return Explanation("\n".join(lines), parts)


def element_formula(gradient: MatrixExpr, i=None, j=None) -> sp.Expr:
    """One entry of a gradient as a scalar formula, e.g. dL/dW1[i, j] as a batch sum."""
    i = sp.Symbol("i", integer=True, nonnegative=True) if i is None else i
    j = sp.Symbol("j", integer=True, nonnegative=True) if j is None else j
    entry = gradient[i, j]
    # SymPy names summation indices _i_1, _i_2, ...; show them as k, k_2, ...
    sums = sorted(entry.atoms(sp.Sum), key=sp.default_sort_key)
    bound = list(dict.fromkeys(v for s in sums for v in s.variables))
    names = ["k"] + [f"k_{m}" for m in range(2, len(bound) + 1)]
    return entry.xreplace({v: sp.Symbol(nm, integer=True) for v, nm in zip(bound, names)})


# --------------------------------------------------------------------------
# Operation counts


@dataclass
class OpCounts:
    """Work per evaluation, as polynomials in the batch symbol.

    ``softmaxes`` counts the row-wise softmax / log-softmax statements (each a
    row max, an exp, a row sum and a log or division).
    """

    gemm_flops: sp.Expr
    elementwise_ops: sp.Expr
    transcendentals: sp.Expr
    nodes: int
    softmaxes: int = 0

    def at(self, **sizes) -> dict[str, int]:
        subs = {sp.Symbol(k, integer=True, positive=True): v for k, v in sizes.items()}
        return {
            "gemm_flops": int(self.gemm_flops.subs(subs)),
            "elementwise_ops": int(self.elementwise_ops.subs(subs)),
            "transcendentals": int(self.transcendentals.subs(subs)),
            "nodes": self.nodes,
            "softmaxes": self.softmaxes,
        }


# per entry of a row-wise softmax / log-softmax: row max, subtract, exp, row sum, divide or
# subtract; the exp weighed as scalar_cost weighs it in an elementwise body
SOFTMAX_OPS = 4 + scalar_cost(sp.exp(sp.Symbol("x")))


def _size(node) -> sp.Expr:
    return sp.sympify(node.shape[0]) * sp.sympify(node.shape[1])


Counts = tuple[sp.Expr, sp.Expr, sp.Expr]  # (GEMM flops, elementwise ops, transcendental calls)


def _free(node) -> Counts:
    return (sp.S.Zero, sp.S.Zero, sp.S.Zero)


def _matmul_counts(node: MatMul) -> Counts:
    coeff, mats = node.as_coeff_matrices()
    flops = sum(
        (2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in zip(mats, mats[1:])), sp.S.Zero
    )
    return (flops, _size(node) if coeff != 1 else sp.S.Zero, sp.S.Zero)


def _elementwise_counts(node: E.Elementwise) -> Counts:
    body = node.fn.expr
    calls = sum(isinstance(t, TRANSCENDENTAL) for t in sp.preorder_traversal(body))
    return (sp.S.Zero, scalar_cost(body) * _size(node), calls * _size(node))


def _sum_counts(node) -> Counts:
    return (sp.S.Zero, _size(node.args[0]), sp.S.Zero)


MASK_OPS = 13
"""Integer operations per entry of a keep mask: the index times G plus the key, three
xor-shifts, two multiplies, the top-half shift, the compare and the select."""


def _mask_counts(node) -> Counts:
    return (sp.S.Zero, MASK_OPS * _size(node), sp.S.Zero)


def _standardize_counts(node) -> Counts:
    """Two sums, a subtraction, a square and a multiply per entry; a sqrt per row or column."""
    a = node.args[0]
    return (sp.S.Zero, 5 * _size(node), sp.sympify(a.shape[1 - node.axis]))


def _softmax_counts(node) -> Counts:
    return (sp.S.Zero, SOFTMAX_OPS * _size(node), _size(node))


def _nary_counts(node) -> Counts:
    return (sp.S.Zero, (len(node.args) - 1) * _size(node), sp.S.Zero)


OP_COUNTS: dict[type, Callable[[MatrixExpr], Counts]] = {
    MatMul: _matmul_counts,  # 2 m k n flops per product; c * A: one multiply per entry
    MatAdd: _nary_counts,  # A + B + C: two adds per entry
    HadamardProduct: _nary_counts,  # A o B o C: two multiplies per entry
    E.Elementwise: _elementwise_counts,  # the body's scalar_cost per entry, calls counted apart
    E.Total: _sum_counts,  # one add per summed entry
    E.ColSum: _sum_counts,
    E.RowSum: _sum_counts,
    E.Softmax: _softmax_counts,  # max, subtract, exp, sum, divide per entry
    E.LogSoftmax: _softmax_counts,  # max, subtract, exp, sum, subtract per entry
    Transpose: _free,  # a GEMM flag (or a copy)
    E.BroadcastRows: _free,  # read in place by the consuming loop
    E.BroadcastCols: _free,
    E.Fill: _free,
    E.Named: _free,  # the identity
    E.Concat: _free,  # copies, no arithmetic
    E.ColumnSlice: _free,
    E.Standardize: _standardize_counts,  # mean, centred square, sum, scale: per entry
    E.DropoutMask: _mask_counts,
    E.Gather: _free,  # row copies
    E.ScatterAdd: lambda node: (
        sp.S.Zero,
        _size(node.args[0]),
        sp.S.Zero,
    ),  # an add per entry  # one hash (a few integer operations) per entry
    E.Im2Col: _free,  # copies of windows
    E.Col2Im: _sum_counts,  # one add per window entry
    E.Reshape: _free,  # the same entries
    E.RowMax: _sum_counts,  # one comparison per entry
}
"""Node type -> its work per evaluation (leaves, LEAVES of the VJP table, do none)."""


def op_counts(roots: Iterable[MatrixExpr]) -> OpCounts:
    """Count the work of a set of graphs, each shared node once."""
    flops = ops = trans = sp.S.Zero
    nodes = softmaxes = 0
    for node in E.topological(list(roots)):
        nodes += 1
        if isinstance(node, LEAVES):
            continue
        rule = E.row_for(OP_COUNTS, type(node))
        if rule is None:
            raise NotImplementedError(
                f"op_counts has no row for {type(node).__name__} (node {node}) in "
                "symgrad.formulas.OP_COUNTS; every node type needs one"
            )
        f, o, t = rule(node)
        softmaxes += isinstance(node, (E.Softmax, E.LogSoftmax))
        flops, ops, trans = flops + f, ops + o, trans + t
    return OpCounts(sp.expand(flops), sp.expand(ops), sp.expand(trans), nodes, softmaxes)


def simplification_report(loss, wrt, context=()) -> dict[str, OpCounts]:
    """Op counts of loss + gradients before and after simplification."""
    g = gradients(loss, wrt, context)
    before = op_counts([loss, *g.raw.values()])
    after = op_counts([g.loss, *g.simplified.values()])
    return {"before": before, "after": after}


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
    single = isinstance(wrt, MatrixExpr)
    ws = [wrt] if single else list(wrt)
    check_loss(loss)
    fused, _ = simplify({"loss": loss})  # log(softmax), log(sigmoid): stable before the sweep
    g = derive(fused["loss"], ws).gradients
    return g[ws[0]] if single else [g[w] for w in ws]
