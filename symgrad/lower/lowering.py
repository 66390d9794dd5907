"""symgrad.lower: simplified symgrad graphs -> a :class:`codegen.ir.Program`.

Fusion rule: a node becomes its own IR value (is *materialized*) when it is an
output or update, has a name, is used more than once, or is not elementwise
(matrix products, reductions, softmax, transposes).  Everything else is
folded, as a SymPy scalar expression, into the body of the Map or Reduce that
consumes it: a chain ``sigmoid(X W + b)`` is one GEMM and one fused loop.
Transposes feeding a product become GEMM flags; scalar factors become alpha.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

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

from codegen import ir
from symgrad import core as E
from symgrad.core.printing import FormulaStrPrinter


class Lowering:
    """One lowering run; see :func:`lower`."""

    def __init__(self, name, inputs, outputs, updates, scalars, guards, dtype, checks=None):
        self.name, self.dtype = name, dtype
        self.inputs = list(inputs)
        self.outputs, self.updates = dict(outputs), dict(updates)
        self.scalars, self.guards = tuple(scalars), tuple(guards)
        self.checks = dict(checks or {})  # guarded (1, 1) values that are not returned
        self.values: dict[MatrixExpr, ir.Value] = {}
        self.body: list = []
        self.taken = {s.name for s in self.inputs}
        self.temp = 0
        self._root_names: dict | None = None
        self.printer = FormulaStrPrinter()  # one per program: its comments share subterms

    # -- naming ---------------------------------------------------------
    def _fresh(self, base: str) -> str:
        return E.fresh_name(base, self.taken)

    def _value(self, node, base: str | None = None) -> ir.Value:
        if base is None:
            if isinstance(node, E.Named):
                base = node.name
            else:
                base, self.temp = f"t{self.temp}", self.temp + 1
        return ir.Value(self._fresh(base), tuple(sp.sympify(d) for d in node.shape))

    # -- driver ---------------------------------------------------------
    def run(self) -> ir.Program:
        input_set = set(self.inputs)
        for s in self.inputs:
            self.values[s] = ir.Value(s.name, tuple(sp.sympify(d) for d in s.shape))
        roots = [*self.outputs.values(), *self.checks.values(), *self.updates.values()]
        order = E.topological(roots)
        root_set = set(roots)
        uses = Counter(c for node in order for c in E.children(node))
        for r in roots:
            uses[r] += 1
        update_roots = set(self.updates.values()) - set(self.outputs.values())
        needed_by_rest = set(E.topological([*self.outputs.values(), *self.checks.values()]))
        late = [n for n in order if n in update_roots and n not in needed_by_rest]
        late_set = set(late)
        order = [n for n in order if n not in late_set] + late
        self.materialize = {
            n
            for n in order
            if n in root_set or isinstance(n, E.Named) or not _is_elementwise(n) or uses[n] > 1
        }
        named_bodies = {n.body: n for n in order if isinstance(n, E.Named)}
        for n in order:
            if n in named_bodies and n not in self.values:  # one value, under its name
                self.values[n] = self._operand(named_bodies[n])
                continue
            if isinstance(n, Transpose) and n not in root_set:
                continue  # a GEMM flag, or emitted on first non-GEMM use
            if isinstance(n, MatrixSymbol):
                if n not in input_set:
                    raise ValueError(
                        f"{self.name}: the graph reads {n.name} {tuple(n.shape)}, which is not "
                        f"among the inputs {[s.name for s in self.inputs]}"
                    )
                continue
            if n in self.materialize and n not in self.values:
                self._emit(n, self._root_name(n))
        outs = []
        for key, expr in self.outputs.items():
            outs.append(self._copy_if_taken(expr, key, outs))
        ups = []
        for sym, expr in self.updates.items():
            if expr == sym:
                continue
            ups.append((self.values[sym], self._copy_if_taken(expr, f"{sym.name}_new", outs)))
        batch = sorted(
            {d for s in self.inputs for dim in s.shape for d in sp.sympify(dim).free_symbols},
            key=str,
        )
        body = hoist_scalars(self.body, set(self.scalars), set(batch), self._fresh)
        return ir.Program(
            name=self.name,
            inputs=tuple(self.values[s] for s in self.inputs),
            scalars=self.scalars,
            body=tuple(body),
            outputs=tuple(outs),
            updates=tuple(ups),
            dtype=self.dtype,
            batch=tuple(batch),
        )

    def _root_name(self, node) -> str | None:
        if self._root_names is None:  # one lookup per node, not a scan of all the roots
            named = [*self.outputs.items(), *self.checks.items()]
            named += [(f"{sym.name}_new", expr) for sym, expr in self.updates.items()]
            self._root_names = {}
            for key, expr in named:
                self._root_names.setdefault(expr, key)
        return self._root_names.get(node)

    def _copy_if_taken(self, expr, key, taken_values) -> ir.Value:
        """An output that is an input, or already returned, is copied into its own value."""
        v = self.values.get(expr)
        if v is None:
            v = self._emit(expr, key)
        if expr in self.inputs or v in taken_values:
            sym = sp.Symbol("_x0", real=True)
            out = ir.Value(self._fresh(key), v.shape)
            self.body.append(ir.Map(out, sym, ((sym, v),), comment=f"{out.name} = {v.name}"))
            return out
        return v

    # -- statements -----------------------------------------------------
    def _comment(self, node, out: ir.Value) -> str:
        """``out = formula``: for named values and results the derived formula in terms of
        inputs and named values (when it fits on a line), else in terms of computed values."""
        shown = node.body if isinstance(node, E.Named) else node
        if isinstance(node, E.Named) or not out.name.startswith("t"):
            full = self.printer.doprint(shown)
            if len(full) <= 100:
                return f"{out.name} = {full}"
        return f"{out.name} = {self.printer.doprint(self._shown(shown))}"

    def _shown(self, node):
        v = self.values.get(node)
        if v is not None and not isinstance(node, MatrixSymbol):
            return MatrixSymbol(v.name, *node.shape)
        if isinstance(node, (MatrixSymbol, E.Named)) or not node.args:
            return node
        return node.func(*[self._shown(a) if isinstance(a, MatrixExpr) else a for a in node.args])

    def _emit(self, node, base=None) -> ir.Value:
        if base is None:
            base = self._root_name(node)
        out = self._value(node, base)
        inner = node.body if isinstance(node, E.Named) else node
        comment = self._comment(node, out)
        stmt = _row(STATEMENT, inner, "STATEMENT")(self, inner, out, comment)
        self.body.append(stmt)
        self.values[node] = out
        guarded = [k for k in self.guards if self.outputs.get(k) == node]
        guarded += [k for k, expr in self.checks.items() if expr == node]
        for key in guarded:
            self.body.append(ir.Guard(out, key))
        return out

    def _operand(self, node) -> ir.Value:
        """The value of a node, emitting it now if it was fused elsewhere."""
        v = self.values.get(node)
        return v if v is not None else self._emit(node)

    def _gemm(self, node: MatMul, out, comment) -> ir.Gemm:
        coeff, mats = node.as_coeff_matrices()
        while len(mats) > 2:  # left to right; each partial product is a value of its own
            head = E.matmul(mats[0], mats[1])
            self._operand(head)
            mats = [head, *mats[2:]]
        (a, ta), (b, tb) = (self._gemm_operand(m) for m in mats)
        return ir.Gemm(out, a, b, ta, tb, sp.sympify(coeff), comment)

    def _gemm_operand(self, m) -> tuple[ir.Value, bool]:
        if isinstance(m, Transpose) and m not in self.values:
            return self._operand(m.arg), True  # A.T @ B -> gemm(trans_a)
        return self._operand(m), False

    def _leaf(self, node, args: dict) -> sp.Symbol:
        v = self._operand(node)
        if v not in args:
            args[v] = sp.Symbol(f"_x{len(args)}", real=True)
        return args[v]

    def _scalar(self, node, args: dict) -> sp.Expr:
        """A node used inside a fused body: its argument symbol, or its own body if fused."""
        if node in self.values or node in self.materialize or not _is_elementwise(node):
            return self._leaf(node, args)
        return self._expand(node, args)

    def _expand(self, node, args: dict) -> sp.Expr:
        """Scalar body of an elementwise node; materialized operands become arguments."""
        if not _is_elementwise(node):
            return self._leaf(node, args)
        return _row(SCALAR_BODY, node, "SCALAR_BODY")(self, node, args)


# --------------------------------------------------------------------------
# One row per node type: which IR statement a materialized node becomes, and
# (for elementwise nodes) its scalar body inside a fused Map / Reduce.


def _row(table: dict, node, name: str):
    """The row of ``table`` for ``node``'s class (along its MRO), else an error naming both."""
    for cls in type(node).__mro__:
        row = table.get(cls)
        if row is not None:
            return row
    raise NotImplementedError(
        f"symgrad.lower has no row for {type(node).__name__} (node {node}) in "
        f"symgrad.lower.lowering.{name}; every node type needs one (see 'Adding an op' "
        "in docs/architecture.md)"
    )


def _is_elementwise(node) -> bool:
    """Whether ``node`` may fold into a fused body: it has a SCALAR_BODY row (MatMul: ``c * A``)."""
    if type(node) is MatMul:
        return len(node.as_coeff_matrices()[1]) == 1
    return E.row_for(SCALAR_BODY, type(node)) is not None


def _scalars(lo: Lowering, nodes, args: dict) -> list[sp.Expr]:
    return [lo._scalar(a, args) for a in nodes]


def _scaled(lo: Lowering, node: MatMul, args: dict) -> sp.Expr:
    coeff, (m,) = node.as_coeff_matrices()
    return coeff * lo._scalar(m, args)


def _applied(lo: Lowering, node: E.Elementwise, args: dict) -> sp.Expr:
    subs = {x: lo._scalar(a, args) for x, a in zip(node.fn.variables, node.operands)}
    return node.fn.expr.xreplace(subs)


def _broadcast(lo: Lowering, node, args: dict) -> sp.Expr:
    return lo._scalar(node.args[0], args)  # the loop broadcasts the (1, c), (r, 1) or (1, 1) value


SCALAR_BODY: dict[type, Callable[[Lowering, MatrixExpr, dict], sp.Expr]] = {
    ZeroMatrix: lambda lo, node, args: sp.S.Zero,  # 0
    OneMatrix: lambda lo, node, args: sp.S.One,  # 1
    MatMul: _scaled,  # c * A -> c a (a product of matrices is no elementwise node)
    MatAdd: lambda lo, node, args: sp.Add(*_scalars(lo, node.args, args)),  # A + B -> a + b
    HadamardProduct: lambda lo, node, args: sp.Mul(*_scalars(lo, node.args, args)),  # A o B -> a b
    E.Elementwise: _applied,  # f(A, B) -> f(a, b)
    E.BroadcastRows: _broadcast,  # 1 v -> v[j]
    E.BroadcastCols: _broadcast,  # u 1^T -> u[i]
    E.Fill: _broadcast,  # fill(s) -> s
}
"""Elementwise node type -> its scalar body, operands as fused bodies or bound arguments."""


def _map(lo: Lowering, node, out: ir.Value, comment: str) -> ir.Map:
    args: dict[ir.Value, sp.Symbol] = {}
    body = lo._expand(node, args)
    return ir.Map(out, body, tuple((s, v) for v, s in args.items()), comment)


def _copy(lo: Lowering, node, out: ir.Value, comment: str) -> ir.Map:
    x = sp.Symbol("_x0", real=True)
    return ir.Map(out, x, ((x, lo._operand(node)),), comment)


def _product(lo: Lowering, node: MatMul, out: ir.Value, comment: str) -> ir.Stmt:
    if _is_elementwise(node):  # c * A
        return _map(lo, node, out, comment)
    return lo._gemm(node, out, comment)


def _reduce(axis: int | None):
    def rule(lo: Lowering, node, out: ir.Value, comment: str) -> ir.Reduce:
        a = node.args[0]
        args: dict[ir.Value, sp.Symbol] = {}
        body = lo._scalar(a, args)
        shape = tuple(sp.sympify(d) for d in a.shape)
        return ir.Reduce(out, body, tuple((s, v) for v, s in args.items()), shape, axis, comment)

    return rule


def _softmax(log: bool):
    def rule(lo: Lowering, node, out: ir.Value, comment: str) -> ir.Softmax:
        return ir.Softmax(out, lo._operand(node.args[0]), log, comment)

    return rule


def _concat(lo: Lowering, node: E.Concat, out: ir.Value, comment: str) -> ir.Columns:
    parts = tuple((lo._operand(a), 0, int(a.shape[1])) for a in node.args)
    return ir.Columns(out, parts, comment)


def _column_slice(lo: Lowering, node: E.ColumnSlice, out: ir.Value, comment: str) -> ir.Columns:
    return ir.Columns(out, ((lo._operand(node.args[0]), node.start, node.stop),), comment)


def _keep_mask(lo: Lowering, node: E.DropoutMask, out: ir.Value, comment: str) -> ir.KeepMask:
    key, threshold = ir.stream_key(node.seed, node.salt), ir.keep_threshold(node.rate)
    return ir.KeepMask(out, key, node.counter, threshold, 1 / (1 - node.rate), comment)


def _standardize(lo: Lowering, node: E.Standardize, out: ir.Value, comment: str) -> ir.Map:
    # the moments are Reduce statements, rstd a (1, c) or (r, 1) value shared with the
    # gradient; the normalization itself one fused Map: (a - mu) * rstd
    return _map(lo, E.standardized(node), out, comment)


def _windows(stmt):
    def rule(lo: Lowering, node, out: ir.Value, comment: str):
        return stmt(out, lo._operand(node.args[0]), ir.Window(*node.window), comment)

    return rule


def _unary(stmt):
    def rule(lo: Lowering, node, out: ir.Value, comment: str):
        return stmt(out, lo._operand(node.args[0]), comment)

    return rule


STATEMENT: dict[type, Callable[[Lowering, MatrixExpr, ir.Value, str], ir.Stmt]] = {
    MatMul: _product,  # c A1 ... Ak -> Gemm per pair, transposes as flags (c * A -> Map)
    E.Total: _reduce(None),  # sum(A) -> Reduce over both axes, (1, 1)
    E.ColSum: _reduce(0),  # colsum(A) -> Reduce axis 0, (1, c)
    E.RowSum: _reduce(1),  # rowsum(A) -> Reduce axis 1, (r, 1)
    E.Softmax: _softmax(False),  # softmax(Z) -> Softmax, max-shifted
    E.LogSoftmax: _softmax(True),  # log_softmax(Z) -> Softmax(log=True)
    Transpose: lambda lo, node, out, comment: ir.Transpose(out, lo._operand(node.arg), comment),
    E.Concat: _concat,  # [A | B] -> Columns, each part whole
    E.ColumnSlice: _column_slice,  # A[:, s:e] -> Columns with one part
    E.Standardize: _standardize,  # (A - 1 mu) o 1 rstd: two Reduce, a Map for rstd, a Map
    E.DropoutMask: _keep_mask,
    E.Gather: lambda lo, node, out, comment: ir.Gather(  # W[X] -> Gather
        out, lo._operand(node.args[0]), lo._operand(node.args[1]), comment
    ),
    E.ScatterAdd: lambda lo, node, out, comment: ir.ScatterAdd(  # scatter_add(G, X)
        out, lo._operand(node.args[0]), lo._operand(node.args[1]), comment
    ),  # M -> KeepMask: the counter-based generator of the step
    E.Im2Col: _windows(ir.Im2Col),  # im2col(X) -> Im2Col, a gather of windows
    E.Col2Im: _windows(ir.Col2Im),  # col2im(G) -> Col2Im, a scatter-add of windows
    E.Reshape: _unary(ir.Reshape),  # reshape(A, (r, c)) -> Reshape, a copy
    E.RowMax: _unary(ir.RowMax),  # rowmax(A) -> RowMax
    E.Named: _copy,  # a name for a named value -> a copy
    MatrixSymbol: _copy,  # a name for an input -> a copy
    MatAdd: _map,  # elementwise: one fused Map (SCALAR_BODY)
    HadamardProduct: _map,
    E.Elementwise: _map,
    E.BroadcastRows: _map,
    E.BroadcastCols: _map,
    E.Fill: _map,
    ZeroMatrix: _map,
    OneMatrix: _map,
}
"""Node type -> the IR statement it becomes when materialized (Transpose: when no GEMM absorbs it)."""


# --------------------------------------------------------------------------
# Per-step scalars: computed once, not once per fused body


def _scalar_only(expr: sp.Expr, scalars: set) -> bool:
    return expr.free_symbols <= scalars


def _worth_hoisting(expr: sp.Expr) -> bool:
    """A function call, or a power with a non-integer or symbolic exponent (beta**t, sqrt)."""
    return any(
        isinstance(e, sp.Function) or (e.is_Pow and not e.exp.is_Integer)
        for e in sp.preorder_traversal(expr)
    )


def _split_scalars(expr: sp.Expr, scalars: set, replace) -> sp.Expr:
    """``expr`` with each maximal scalar-only part ``e`` replaced by ``replace(e)``: a whole
    subtree, or the scalar factors of a product / terms of a sum taken together."""
    if not expr.args or _scalar_only(expr, scalars):
        return replace(expr) if expr.free_symbols else expr
    if isinstance(expr, (sp.Add, sp.Mul)):  # numbers stay: -lr*x keeps its sign in the body
        part = [a for a in expr.args if a.free_symbols and _scalar_only(a, scalars)]
        rest = [_split_scalars(a, scalars, replace) for a in expr.args if a not in part]
        if part:
            part = [replace(expr.func(*part))]
        return expr.func(*part, *rest)
    return expr.func(*[_split_scalars(a, scalars, replace) for a in expr.args])


def _collect(found: set):
    return lambda e: found.add(e) or e


class _Hoisted:
    """The (1, 1) values of hoisted parts, emitted into ``out`` before their first reader."""

    def __init__(self, parts: set, out: list, fresh):
        self.parts, self.out, self.fresh = parts, out, fresh
        self.values: dict[sp.Expr, ir.Value] = {}

    def reader(self, reads: dict):
        def read(e):
            if e not in self.parts:
                return e
            if e not in self.values:
                v = self.values[e] = ir.Value(self.fresh("per_step"), (sp.S.One, sp.S.One))
                self.out.append(ir.Map(v, e, (), f"{v.name} = {sp.sstr(e)}"))
            return reads.setdefault(e, sp.Symbol(f"_s{len(reads)}", real=True))

        return read


def hoist_scalars(body: list, runtime: set, batch: set, fresh) -> list:
    """Maximal scalar-only parts of Map / Reduce bodies (Adam's ``lr*sqrt(1 - beta_2**t)/
    (1 - beta_1**t)``) as (1, 1) values computed once, before their first use, when they call a
    function or take a non-integer power, or appear in several bodies, cost more than one
    operation and read a ``runtime`` scalar (not ``-lr``, ``1 - beta_1``, ``1/n``: inline, they
    cost nothing); the bodies read them as (1, 1) operands.
    Scalar-only means: free symbols among ``runtime`` scalars and ``batch`` symbols."""
    scalars = runtime | batch

    def fused(stmt) -> bool:  # a body over matrix operands (not itself a scalar statement)
        return isinstance(stmt, (ir.Map, ir.Reduce)) and not _scalar_only(stmt.body, scalars)

    seen: Counter = Counter()
    for stmt in filter(fused, body):
        parts: set = set()
        _split_scalars(sp.sympify(stmt.body), scalars, _collect(parts))
        seen.update(parts)
    costly = {
        e
        for e, k in seen.items()
        if _worth_hoisting(e) or (k > 1 and sp.count_ops(e) > 1 and e.free_symbols & runtime)
    }
    if not costly:
        return list(body)
    out: list = []
    hoisted = _Hoisted(costly, out, fresh)
    for stmt in body:
        if not fused(stmt):
            out.append(stmt)
            continue
        reads: dict[sp.Expr, sp.Symbol] = {}
        new_body = _split_scalars(sp.sympify(stmt.body), scalars, hoisted.reader(reads))
        args = (*stmt.args, *((sym, hoisted.values[e]) for e, sym in reads.items()))
        out.append(dataclasses.replace(stmt, body=new_body, args=args))
    return out


def lower(
    name: str,
    inputs: Sequence[MatrixSymbol],
    outputs: Mapping[str, MatrixExpr],
    updates: Mapping[MatrixSymbol, MatrixExpr] | None = None,
    scalars: Sequence[sp.Symbol] = (),
    guards: Sequence[str] = (),
    dtype: str = "float64",
    checks: Mapping[str, MatrixExpr] | None = None,
) -> ir.Program:
    """Lower simplified graphs to one IR program (outputs, then in-place updates).

    ``guards`` name outputs that must be finite before any update is written;
    ``checks`` are further (1, 1) values computed and guarded but not returned.
    """
    if not name.isidentifier():
        raise ValueError(f"program names must be identifiers; received: name={name!r}")
    for key in outputs:
        if not key.isidentifier():
            raise ValueError(f"output names must be identifiers; received: {key!r}")
    for g in guards:
        if g not in outputs:
            raise ValueError(f"guard {g!r} names no output; outputs: {list(outputs)}")
    for sym in updates or {}:
        if sym not in inputs:
            raise ValueError(f"update target {sym} is not an input")
    for key, expr in (checks or {}).items():
        if tuple(expr.shape) != (1, 1):
            raise ValueError(f"check {key!r} must be a (1, 1) value; received shape {expr.shape}")
    return Lowering(name, inputs, outputs, updates or {}, scalars, guards, dtype, checks).run()
