"""codegen.numpy.scalar: print a SymPy scalar body as NumPy ufunc calls with ``out=``.

A ``Map`` body ``tanh(z + b)`` with ``z = Z1`` (n, 8) and ``b = b1`` (1, 8) becomes::

    add(Z1, b1, out=A1)
    tanh(A1, out=A1)

Two steps, each driven by one table:

1. ``LOWER`` (keyed by SymPy class) turns the body into a DAG of primitive ops, one
   ufunc call each; equal subexpressions are one node.  Parts that read no array
   (``lr / n``, ``1 - beta``) stay Python scalar expressions, printed by ``py_scalar``.
2. ``write_body`` writes the ops in post order.  Each op writes into the buffer of an operand
   that dies there, else the output buffer when it is free, else a scratch buffer of
   its broadcast kind, so a body needs few scratch arrays and no allocation at run time.

A *kind* says along which axes a value varies: ``(True, True)`` is the statement's full
``(r, c)`` domain, ``(False, True)`` a ``(1, c)`` row, ``(True, False)`` an ``(r, 1)``
column, ``(False, False)`` a ``(1, 1)`` array.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.logic.boolalg import BooleanTrue

from codegen.ir import as_extremum, scalar_rule, sigmoid_complement

Kind = tuple[bool, bool]
FULL: Kind = (True, True)
POINT: Kind = (False, False)


def broadcast(*kinds: Kind) -> Kind:
    return (any(k[0] for k in kinds), any(k[1] for k in kinds))


@dataclass(frozen=True)
class Array:
    """An array operand: a statement argument or a constant-filled buffer."""

    name: str
    kind: Kind


@dataclass(frozen=True)
class Scalar:
    """A uniform operand: a Python expression of numbers, scalars and batch symbols."""

    code: str
    value: float | None = None  # set when the operand is a plain number

    kind = POINT


class Op:
    """One primitive op ``fn(*args, out=register)``; built (hash-consed) by ``ScalarLowering.op``."""

    __slots__ = ("fn", "args", "kind", "dtype")

    def __init__(self, fn: str, args: tuple, kind: Kind, dtype: str):
        self.fn, self.args, self.kind, self.dtype = fn, args, kind, dtype

    def __repr__(self) -> str:
        return f"Op({self.fn}, {self.args})"


Operand = Array | Scalar | Op

# Ops that compute their result in several calls and so must not write a buffer that
# holds one of their operands (except the listed operand positions, read first).
MULTI_STEP_ALIAS_OK = {"select": (2,), "erf": ()}
BOOLEAN_OPS = {
    "greater", "greater_equal", "less", "less_equal", "equal", "not_equal",
    "logical_and", "logical_or", "logical_not",
}  # fmt: skip


# --------------------------------------------------------------------------
# Python printing of uniform (array-free) subexpressions.

ATOM, POW, UNARY, MUL, ADD, TEST = 6, 5, 4, 3, 2, 1  # binding strength


def py_number(e: sp.Expr) -> str:
    if e.is_Integer:
        return str(int(e))
    v = float(e)  # raises TypeError for complex constants
    if math.isnan(v):
        return "math.nan"
    return repr(v) if math.isfinite(v) else ("math.inf" if v > 0 else "-math.inf")


def py_scalar(e: sp.Basic, names: dict[sp.Symbol, str]) -> str:
    """``e`` (no array arguments) as a Python expression; ``names`` maps symbols to locals.

    >>> lr, n = sp.symbols("lr n")
    >>> py_scalar(-lr / n, {lr: "lr", n: "n"})
    '-lr / n'
    """
    return _py(e, names)[0]


def _wrap(code_prec: tuple[str, int], need: int) -> str:
    code, prec = code_prec
    return code if prec >= need else f"({code})"


def _py(e: sp.Basic, names: dict) -> tuple[str, int]:
    """(Python code, binding strength) of a uniform expression, one row of :data:`PY` per class."""
    rule = scalar_rule(PY, e, "the NumPy backend's Python printing (codegen.numpy.scalar.PY)")
    return rule(e, names)


def _py_number(e: sp.Expr, names: dict) -> tuple[str, int]:
    code = py_number(e)
    return code, UNARY if code.startswith("-") else ATOM


def _py_symbol(e: sp.Symbol, names: dict) -> tuple[str, int]:
    if e not in names:
        raise ValueError(
            f"numpy backend: unknown symbol {e} (not an argument, scalar or batch symbol)"
        )
    return names[e], ATOM


def _py_add(e: sp.Add, names: dict) -> tuple[str, int]:
    if (flipped := sigmoid_complement(e)) is not None:  # 1 - sigmoid(u) = sigmoid(-u)
        return _py(flipped, names)
    terms = list(e.args)
    parts = [_wrap(_py(terms[0], names), ADD)]
    for t in terms[1:]:
        c, rest = t.as_coeff_Mul()
        if c.is_Number and c < 0:
            parts.append(f"- {_wrap(_py(-t, names), MUL)}")
        else:
            parts.append(f"+ {_wrap(_py(t, names), MUL)}")
    return " ".join(parts), ADD


def _py_mul(e: sp.Mul, names: dict) -> tuple[str, int]:
    c, rest = e.as_coeff_Mul()
    if c == -1:
        return f"-{_wrap(_py(rest, names), POW)}", UNARY
    num, den = [], []
    for f in sp.Mul.make_args(e):
        if f.is_Pow and f.exp.is_Number and f.exp < 0:
            den.append(f.base ** (-f.exp))
        else:
            num.append(f)
    code = " * ".join(_wrap(_py(f, names), MUL) for f in num) if num else "1"
    for f in den:
        code += f" / {_wrap(_py(f, names), POW)}"
    return code, MUL


def _py_pow(e: sp.Pow, names: dict) -> tuple[str, int]:
    base = _wrap(_py(e.base, names), ATOM)
    if e.exp == -1:
        return f"1 / {base}", MUL
    if e.exp == sp.S.Half:
        return f"math.sqrt({_py(e.base, names)[0]})", ATOM
    return f"{base} ** {_wrap(_py(e.exp, names), UNARY)}", POW


def _py_call(fn: str):
    def rule(e, names):
        return f"{fn}({', '.join(_py(a, names)[0] for a in e.args)})", ATOM

    return rule


def _py_unary(template: str, strength: int):
    """``template`` with ``{x}`` the code of the single argument."""

    def rule(e, names):
        return template.format(x=_py(e.args[0], names)[0]), strength

    return rule


def _py_relation(op: str):
    def rule(e, names):
        lhs, rhs = (_wrap(_py(a, names), ADD) for a in e.args)
        return f"{lhs} {op} {rhs}", TEST

    return rule


def _py_logical(word: str):
    def rule(e, names):
        return word.join(f"({_py(a, names)[0]})" for a in e.args), TEST

    return rule


def _py_heaviside(e: sp.Heaviside, names: dict) -> tuple[str, int]:
    arg, h0 = _py(e.args[0], names)[0], _py(_heaviside_h0(e), names)[0]
    return f"1.0 if ({arg}) > 0 else ({h0} if ({arg}) == 0 else 0.0)", TEST - 1


def _py_piecewise(e: sp.Piecewise, names: dict) -> tuple[str, int]:
    code = "math.nan"
    for value, cond in reversed(e.args):
        v = _py(value, names)[0]
        code = v if cond is sp.true else f"({v}) if ({_py(cond, names)[0]}) else ({code})"
    return code, TEST - 1


PY: dict[type | str, Callable[[sp.Basic, dict], tuple[str, int]]] = {
    sp.Symbol: _py_symbol,  # its local name
    sp.Number: _py_number,  # 2, 0.5, math.inf, math.nan
    sp.NumberSymbol: _py_number,  # pi, E as floats
    BooleanTrue: lambda e, names: ("True", ATOM),
    sp.Add: _py_add,  # a + b - c
    sp.Mul: _py_mul,  # a * b / c
    sp.Pow: _py_pow,  # a ** b, math.sqrt(a)
    sp.exp: _py_call("math.exp"),
    sp.log: _py_call("math.log"),
    log1p: _py_call("math.log1p"),
    expm1: _py_call("math.expm1"),
    sp.tanh: _py_call("math.tanh"),
    sp.erf: _py_call("math.erf"),
    sp.cos: _py_call("cos"),  # NumPy's: nan, not an error, at inf
    sp.floor: _py_call("floor"),  # NumPy's: a float, nan at nan
    # exp(min(x, 0)) / (1 + exp(-|x|)): no overflow, no cancellation
    "sigmoid": _py_unary("math.exp(min({x}, 0.0)) / (1.0 + math.exp(-abs({x})))", MUL),
    "softplus": _py_unary("max({x}, 0.0) + math.log1p(math.exp(-abs({x})))", ADD),
    sp.Abs: _py_call("abs"),
    sp.sign: _py_unary("float(({x}) > 0) - float(({x}) < 0)", ADD),  # sign(0) = 0
    sp.Max: _py_call("max"),
    sp.Min: _py_call("min"),
    sp.Heaviside: _py_heaviside,  # H(0) = h0
    sp.Piecewise: _py_piecewise,  # a if c else (b if d else nan)
    sp.StrictLessThan: _py_relation("<"),
    sp.LessThan: _py_relation("<="),
    sp.StrictGreaterThan: _py_relation(">"),
    sp.GreaterThan: _py_relation(">="),
    sp.Equality: _py_relation("=="),
    sp.Unequality: _py_relation("!="),  # true when either is nan
    sp.And: _py_logical(" and "),
    sp.Or: _py_logical(" or "),
    sp.Not: _py_unary("not ({x})", TEST),
}
"""Scalar class (or vocabulary name) -> (Python code, binding strength); every entry of
``codegen.ir.SCALAR_VOCABULARY``."""


def _heaviside_h0(e: sp.Heaviside) -> sp.Expr:
    return e.args[1] if len(e.args) > 1 and e.args[1] is not None else sp.S.Half


# --------------------------------------------------------------------------
# Scalar lowering: SymPy body -> DAG of primitive ops.


def may_warn(e: sp.Basic) -> bool:
    """True when evaluating ``e`` can produce inf/nan (and a NumPy warning) from finite input."""
    for s in sp.preorder_traversal(e):
        if isinstance(s, (sp.exp, sp.log, log1p, expm1)):
            return True
        if s.is_Pow and not (s.exp.is_Integer and s.exp > 0):
            return True
    return False


class ScalarLowering:
    """Lower one body.  ``args`` maps argument symbols to arrays, ``names`` maps scalar and
    batch symbols to Python locals, ``constant(value, kind)`` names a constant-filled buffer."""

    def __init__(self, args: dict, names: dict, constant: Callable[[float, Kind], str]):
        self.args, self.names, self.constant = args, names, constant
        self.memo: dict = {}
        self.ops: dict = {}
        self.needs_errstate = False

    def op(self, fn: str, *args: Operand, dtype: str | None = None) -> Op:
        dtype = dtype or ("b" if fn in BOOLEAN_OPS else "f")
        key = (fn, dtype, tuple(id(a) if isinstance(a, Op) else a for a in args))
        if key not in self.ops:
            self.ops[key] = Op(fn, args, broadcast(*(a.kind for a in args)), dtype)
        return self.ops[key]

    def uniform(self, e: sp.Basic) -> bool:
        return not any(s in self.args for s in e.free_symbols)

    def lower(self, e: sp.Basic) -> Operand:
        if e not in self.memo:
            if self.uniform(e):
                code = py_scalar(e, self.names)
                value = float(e) if e.is_Number else None
                self.memo[e] = Scalar(code, value)
            elif e.is_Symbol:
                self.memo[e] = self.args[e]
            else:
                rule = scalar_rule(
                    LOWER, e, "the NumPy backend's scalar lowering (codegen.numpy.scalar.LOWER)"
                )
                self.memo[e] = rule(self, e)
        return self.memo[e]

    def scalar(self, e: sp.Expr) -> Scalar:
        return Scalar(py_scalar(e, self.names), float(e) if e.is_Number else None)

    def fast_constant(self, operand: Operand, other: Operand) -> Operand:
        """maximum/minimum against a Python number take a slow NumPy loop; a filled buffer doesn't."""
        if isinstance(operand, Scalar) and operand.value is not None and other.kind == FULL:
            return Array(self.constant(operand.value, FULL), FULL)
        return operand


def _split_uniform(lo: ScalarLowering, args) -> tuple[list, list]:
    uniform = [a for a in args if lo.uniform(a)]
    return uniform, [a for a in args if not lo.uniform(a)]


def _lower_add(lo: ScalarLowering, e: sp.Add) -> Operand:
    if (flipped := sigmoid_complement(e)) is not None:  # 1 - sigmoid(u) = sigmoid(-u)
        return lo.lower(flipped)
    content, rest = e.primitive()
    if content != 1 and isinstance(rest, sp.Add):  # 2x - 2y -> 2 (x - y): one multiply
        return lo.op("multiply", _lower_add(lo, rest), lo.scalar(content))
    uniform, terms = _split_uniform(lo, e.args)
    pos, neg = [], []
    for t in terms:
        c, rest = t.as_coeff_Mul()
        if c.is_Number and c < 0:  # a + (-c)*b -> a - c*b
            neg.append(lo.lower(-t))
        else:
            pos.append(lo.lower(t))
    const = lo.scalar(sp.Add(*uniform)) if uniform else None
    pos.sort(key=lambda a: a.kind != FULL)  # Z1 + b1 rather than b1 + Z1
    if pos:
        acc = pos[0]
        for p in pos[1:]:
            acc = lo.op("add", acc, p)
    elif const is not None:
        acc, const = lo.op("subtract", const, neg.pop(0)), None
    else:
        acc = lo.op("negative", neg.pop(0))
    for q in neg:
        acc = lo.op("subtract", acc, q)
    return lo.op("add", acc, const) if const is not None else acc


def _lower_mul(lo: ScalarLowering, e: sp.Mul) -> Operand:
    uniform, factors = _split_uniform(lo, e.args)
    num, den = [], []
    for k, f in enumerate(factors):
        if isinstance(f, sp.Add):  # a (2x - 2y) -> 2 a (x - y): joins the scalar factor
            content, factors[k] = f.primitive()
            uniform.append(content)
    for f in factors:
        if f.is_Pow and f.exp.is_Number and f.exp < 0:  # a * b**-k -> a / b**k
            den.append(lo.lower(f.base ** (-f.exp)))
        else:
            num.append(lo.lower(f))
    coeff = sp.Mul(*uniform)
    if num:
        acc = num[0]
        for f in num[1:]:
            acc = lo.op("multiply", acc, f)
    else:
        acc, coeff = lo.op("divide", lo.scalar(coeff), den.pop(0)), sp.S.One
    for f in den:
        acc = lo.op("divide", acc, f)
    if coeff == -1:
        return lo.op("negative", acc)
    return acc if coeff == 1 else lo.op("multiply", acc, lo.scalar(coeff))


def _int_power(lo: ScalarLowering, x: Operand, k: int) -> Operand:
    if k == 1:
        return x
    if k % 2 == 0:  # x**2k = (x**k)**2
        return lo.op("square", _int_power(lo, x, k // 2))
    return lo.op("multiply", _int_power(lo, x, k - 1), x)


def _lower_pow(lo: ScalarLowering, e: sp.Pow) -> Operand:
    base, exp = e.base, e.exp
    if not lo.uniform(exp):
        return lo.op("power", lo.lower(base), lo.lower(exp))
    x = lo.lower(base)
    if exp.is_Integer and 0 < abs(int(exp)) <= 16:
        k = int(exp)
        p = _int_power(lo, x, abs(k))
        return p if k > 0 else lo.op("divide", Scalar("1.0", 1.0), p)
    if exp == sp.S.Half:
        return lo.op("sqrt", x)
    if exp == -sp.S.Half:
        return lo.op("divide", Scalar("1.0", 1.0), lo.op("sqrt", x))
    return lo.op("power", x, lo.scalar(exp))


def _unary(fn: str):
    return lambda lo, e: lo.op(fn, lo.lower(e.args[0]))


def _fold(fn: str, filled: bool = False):
    """An n-ary associative op (Max, And, ...) as a chain of binary ``fn`` calls; the
    operands that are the same everywhere are folded into one scalar last (``filled``:
    as a constant-filled buffer, see ``ScalarLowering.fast_constant``)."""

    def lower(lo: ScalarLowering, e):
        uniform, rest = _split_uniform(lo, e.args)
        acc = lo.lower(rest[0])
        for a in rest[1:]:
            acc = lo.op(fn, acc, lo.lower(a))
        if uniform:
            scalar = lo.scalar(e.func(*uniform))
            acc = lo.op(fn, acc, lo.fast_constant(scalar, acc) if filled else scalar)
        return acc

    return lower


def _lower_sigmoid(lo: ScalarLowering, e: sp.Function) -> Operand:
    # sigmoid(x) = [x < 0 ? z : 1] / (1 + z), z = exp(-|x|) in (0, 1]: nothing overflows and
    # nothing cancels (tanh(x/2)/2 + 1/2 loses all digits below x = -20 to 1 - 1).
    # sigmoid(-x) = [x > 0 ? z : 1] / (1 + z) shares z and 1 + z with sigmoid(x).
    arg = e.args[0]
    negated = arg.could_extract_minus_sign()
    x = lo.lower(-arg if negated else arg)
    z = lo.op("exp", lo.op("negative", lo.op("absolute", x)))
    tail = lo.op("greater" if negated else "less", x, Scalar("0.0", 0.0))
    numerator = lo.op("select", tail, z, Scalar("1.0", 1.0))
    return lo.op("divide", numerator, lo.op("add", z, Scalar("1.0", 1.0)))


def _lower_softplus(lo: ScalarLowering, e: sp.Function) -> Operand:
    # softplus(x) = max(x, 0) + log1p(exp(-|x|)): exp never overflows
    x = lo.lower(e.args[0])
    tail = lo.op("log1p", lo.op("exp", lo.op("negative", lo.op("absolute", x))))
    return lo.op("add", lo.op("maximum", x, lo.fast_constant(Scalar("0.0", 0.0), x)), tail)


def _lower_heaviside(lo: ScalarLowering, e: sp.Heaviside) -> Operand:
    x, h0 = lo.lower(e.args[0]), _heaviside_h0(e)
    if h0 == 0:  # H(x, 0) = [x > 0]
        return lo.op("greater", x, Scalar("0.0", 0.0), dtype="f")
    if h0 == 1:  # H(x, 1) = [x >= 0]
        return lo.op("greater_equal", x, Scalar("0.0", 0.0), dtype="f")
    if h0 == sp.S.Half:  # H(x) = (sign(x) + 1)/2
        half = lo.op("multiply", lo.op("sign", x), Scalar("0.5", 0.5))
        return lo.op("add", half, Scalar("0.5", 0.5))
    return lo.op("heaviside", x, lo.scalar(h0))


_NEGATED = {
    sp.StrictGreaterThan: sp.LessThan,
    sp.LessThan: sp.StrictGreaterThan,
    sp.GreaterThan: sp.StrictLessThan,
    sp.StrictLessThan: sp.GreaterThan,
}


def _lower_piecewise(lo: ScalarLowering, e: sp.Piecewise) -> Operand:
    pairs = []
    for value, cond in e.args:
        pairs.append((value, cond))
        if cond is sp.true:
            break
    else:
        pairs.append((sp.nan, sp.true))  # no branch holds -> nan, as SymPy leaves it undefined
    if len(pairs) == 2:
        (a, c), (b, _) = pairs
        if (m := as_extremum(a, c, b)) is not None:
            return lo.lower(m)
        if a == 0 and type(c) in _NEGATED:  # (0, c), (b, True) = (b, not c), (0, True)
            a, b, c = b, a, _NEGATED[type(c)](*c.args)
        if b == 0 and a == 1 and type(c) in _COMPARE:  # [c]: the comparison, as 0.0 / 1.0
            return lo.op(_COMPARE[type(c)], lo.lower(c.lhs), lo.lower(c.rhs), dtype="f")
        if b == 0 and not may_warn(a):  # a [c]: exact when a is finite where c fails
            return lo.op("multiply", lo.lower(a), lo.lower(c))
    if any(may_warn(v) for v, _ in pairs):
        lo.needs_errstate = True  # branches are evaluated everywhere; masked values may warn
    acc = lo.lower(pairs[-1][0])
    for value, cond in reversed(pairs[:-1]):
        acc = lo.op("select", lo.lower(cond), lo.lower(value), acc)
    return acc


_COMPARE = {
    sp.StrictGreaterThan: "greater",
    sp.GreaterThan: "greater_equal",
    sp.StrictLessThan: "less",
    sp.LessThan: "less_equal",
    sp.Equality: "equal",
    sp.Unequality: "not_equal",  # true when either is nan
}


def _compare(fn: str):
    return lambda lo, e: lo.op(fn, lo.lower(e.lhs), lo.lower(e.rhs))


LOWER: dict[type | str, Callable[[ScalarLowering, sp.Basic], Operand]] = {
    sp.Add: _lower_add,
    sp.Mul: _lower_mul,
    sp.Pow: _lower_pow,
    sp.exp: _unary("exp"),
    sp.log: _unary("log"),
    log1p: _unary("log1p"),  # log(1 + x), exact near 0
    expm1: _unary("expm1"),  # e^x - 1, exact near 0
    sp.tanh: _unary("tanh"),
    sp.Abs: _unary("absolute"),
    sp.sign: _unary("sign"),
    sp.erf: _unary("erf"),
    sp.cos: _unary("cos"),
    sp.floor: _unary("floor"),
    sp.Max: _fold("maximum", filled=True),
    sp.Min: _fold("minimum", filled=True),
    sp.Heaviside: _lower_heaviside,
    sp.Piecewise: _lower_piecewise,
    "sigmoid": _lower_sigmoid,
    "softplus": _lower_softplus,
    **{rel: _compare(fn) for rel, fn in _COMPARE.items()},
    sp.And: _fold("logical_and"),
    sp.Or: _fold("logical_or"),
    sp.Not: _unary("logical_not"),
}


# --------------------------------------------------------------------------
# Emission: post-order ops, register choice, source lines.


class ScratchPool:
    """Interface the caller provides: scratch buffers by (kind, dtype), constants by value."""

    def take(self, kind: Kind, dtype: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def give(self, name: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def constant(self, value: float, kind: Kind) -> str:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Body:
    """A lowered body: its root operand and whether it needs an errstate block."""

    root: Operand
    needs_errstate: bool


def lower_body(body: sp.Expr, args: dict, names: dict, pool: ScratchPool) -> Body:
    lo = ScalarLowering(args, names, pool.constant)
    return Body(lo.lower(sp.sympify(body)), lo.needs_errstate)


def _postorder(root: Op) -> list[Op]:
    """Each op once, operands first (an explicit stack: a body's depth is not limited)."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack += [(a, False) for a in reversed(node.args) if isinstance(a, Op)]
    return order


def _code(a: Operand, reg: dict) -> str:
    if isinstance(a, Op):
        return reg[id(a)]
    return a.name if isinstance(a, Array) else a.code


def write_body(
    body: Body, out: str, out_kind: Kind, aliases: frozenset[str], pool: ScratchPool, uses: set
) -> list[str]:
    """Source lines that compute ``body`` into ``out``.

    ``aliases`` are argument names whose array *is* ``out`` (the statement computes in
    place); they keep ``out`` busy until their last read.
    """
    root = body.root
    if not isinstance(root, Op):
        if isinstance(root, Array) and root.name in aliases:
            return []
        uses.add("copyto")
        return [f"copyto({out}, {_code(root, {})})"]
    lines = _Registers(root, out, out_kind, aliases, pool).lines(uses)
    if body.needs_errstate:
        uses.add("errstate")
        lines = ['with errstate(divide="ignore", invalid="ignore", over="ignore"):'] + [
            "    " + line for line in lines
        ]
    return lines


class _Registers:
    """Which array each op writes: a dying operand's, ``out`` when free, else scratch."""

    def __init__(self, root: Op, out: str, out_kind: Kind, aliases, pool: ScratchPool):
        self.root, self.out, self.out_kind, self.aliases, self.pool = (
            root,
            out,
            out_kind,
            aliases,
            pool,
        )
        self.order = _postorder(root)
        self.remaining: Counter = Counter(
            _key(a) for node in self.order for a in node.args if not isinstance(a, Scalar)
        )
        self.reg: dict[int, str] = {}
        self.kinds: dict[str, Kind] = {out: out_kind}
        self.out_op: Op | None = None  # the op whose value is in out now
        # operands that a multi-step root reads after writing out must not live in out
        allowed = MULTI_STEP_ALIAS_OK.get(root.fn)
        self.keep_out = {
            id(a) for i, a in enumerate(root.args) if allowed is not None and i not in allowed
        }

    def register(self, a: Operand) -> str | None:
        if isinstance(a, Op):
            return self.reg[id(a)]
        return self.out if isinstance(a, Array) and a.name in self.aliases else None

    def out_free(self) -> bool:
        return self.out_op is None and not any(self.remaining[("array", n)] for n in self.aliases)

    def take(self, kind: Kind, dtype: str) -> str:
        name = self.pool.take(kind, dtype)
        self.kinds[name] = kind
        return name

    def choose(self, node: Op) -> tuple[str, bool]:
        """(register for node, whether it must be copied into out afterwards)."""
        allowed = MULTI_STEP_ALIAS_OK.get(node.fn)
        if node is self.root:
            clash = allowed is not None and any(
                self.register(a) == self.out for i, a in enumerate(node.args) if i not in allowed
            )
            if clash or (node.fn == "erf" and node.kind != self.out_kind):
                return self.take(node.kind, node.dtype), True
            return self.out, False
        for i, a in enumerate(node.args):  # in place over an operand read for the last time
            r = self.register(a)
            if r is None or (allowed is not None and i not in allowed):
                continue
            dying = self.remaining[_key(a)] == sum(1 for b in node.args if b is a)
            usable = r != self.out or id(node) not in self.keep_out
            if dying and usable and self.kinds[r] == node.kind and _dtype(a) == node.dtype:
                return r, False
        full = node.kind == self.out_kind and node.dtype == "f"
        if full and self.out_free() and id(node) not in self.keep_out:
            return self.out, False
        return self.take(node.kind, node.dtype), False

    def lines(self, uses: set) -> list[str]:
        lines: list[str] = []
        for node in self.order:
            dest, copy_back = self.choose(node)
            self.reg[id(node)] = dest
            lines += _op_lines(node, dest, self.reg, self.take, self.pool, uses)
            if dest == self.out:
                self.out_op = node
            for a in node.args:
                if not isinstance(a, Scalar):
                    self.release(a, dest)
            if copy_back:
                uses.add("copyto")
                lines.append(f"copyto({self.out}, {dest})")
                self.pool.give(dest)
        return lines

    def release(self, a: Operand, dest: str) -> None:
        """One read of ``a`` done; free its register after the last one."""
        self.remaining[_key(a)] -= 1
        if self.remaining[_key(a)] == 0:
            r = self.register(a)
            if r == self.out and self.out_op is a:
                self.out_op = None
            elif r is not None and r != self.out and r != dest:
                self.pool.give(r)


def _key(a: Operand):
    return ("array", a.name) if isinstance(a, Array) else id(a)


def _dtype(a: Operand) -> str:
    return a.dtype if isinstance(a, Op) else "f"


def _op_lines(node: Op, dest: str, reg: dict, take, pool: ScratchPool, uses: set) -> list[str]:
    args = [_code(a, reg) for a in node.args]
    if node.fn == "select":  # cond ? then : else, without evaluating a mask twice
        cond, then, other = args
        uses.add("copyto")
        lines = [] if other == dest else [f"copyto({dest}, {other})"]
        return lines + [f"copyto({dest}, {then}, where={cond})"]
    if node.fn == "erf":
        work = [take(node.kind, "f") for _ in range(3)] + [take(node.kind, "b")]
        for w in work:
            pool.give(w)
        uses.add("erf")
        return [f"erf({args[0]}, out={dest}, work=({', '.join(work)}))"]
    uses.add(node.fn)
    return [f"{node.fn}({', '.join(args)}, out={dest})"]
