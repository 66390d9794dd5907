"""codegen.llvm.scalar: a SymPy scalar expression -> LLVM values, one rule per SymPy class.

``ScalarLowering(emitter, math, env)(expr)`` emits the instructions for one
element; ``env`` binds the symbols (loaded operands, scalars, batch sizes as
floats). Subexpressions are memoized, so a body that repeats ``exp(-x)`` emits
it once. A class without a rule raises ``NotImplementedError`` naming it.

nan semantics follow NumPy: comparisons with nan are false, ``Max`` / ``Min``
propagate nan (``np.maximum``), ``Heaviside(nan)`` and ``sign(nan)`` are nan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import llvmlite.ir as ir
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from codegen.ir import as_extremum, scalar_rule, sigmoid_complement
from codegen.llvm.loops import I1
from codegen.llvm.mathlib import Emitter, MathLibrary


class ScalarLowering:
    def __init__(self, emitter: Emitter, math: MathLibrary, env: Mapping[sp.Symbol, ir.Value]):
        self.e = emitter
        self.math = math
        self.env = env
        self._memo: dict[sp.Basic, ir.Value] = {}

    def __call__(self, expr: sp.Basic) -> ir.Value:
        expr = sp.sympify(expr)
        if expr not in self._memo:
            self._memo[expr] = self._rule(expr)(self, expr)
        return self._memo[expr]

    @staticmethod
    def _rule(expr: sp.Basic) -> Callable:
        return scalar_rule(
            RULES, expr, "the LLVM backend's scalar lowering (codegen.llvm.scalar.RULES)"
        )

    def call(self, name: str, x: ir.Value) -> ir.Value:
        return self.math.call(self.e.b, name, x)


# --------------------------------------------------------------------------
# Rules: (lowering, expr) -> ir.Value


def _symbol(L: ScalarLowering, s: sp.Symbol):
    if s not in L.env:
        raise NotImplementedError(
            f"symbol {s} is neither a bound argument, a program scalar nor a batch symbol"
        )
    return L.env[s]


def _number(L, x):
    return L.e.c(float(x))  # Integer, Rational, Float, pi, E, oo, nan


def _add(L, x):
    if (flipped := sigmoid_complement(x)) is not None:  # 1 - sigmoid(u) = sigmoid(-u)
        return L(flipped)
    # a + (-1)*b is a - b
    acc = L(x.args[0])
    for t in x.args[1:]:
        coeff, rest = t.as_coeff_Mul()
        acc = L.e.sub(acc, L(rest)) if coeff == -1 else L.e.add(acc, L(t))
    return acc


def _mul(L, x):
    # c * a * b / (d * e): negative powers become one division, as x/y prints in NumPy
    coeff, factors = x.as_coeff_mul()
    num, den = [], []
    for f in factors:
        base, ex = f.as_base_exp()
        if ex.is_Number and ex.is_negative:
            den.append(L(base) if ex == -1 else L(sp.Pow(base, -ex, evaluate=False)))
        else:
            num.append(L(f))
    negate = coeff == -1
    if coeff not in (1, -1):
        num.insert(0, L.e.c(float(coeff)))
    value = _product(L, num) if num else L.e.c(1.0)
    if den:
        value = L.e.div(value, _product(L, den))
    return L.e.neg(value) if negate else value


def _product(L, values):
    acc = values[0]
    for v in values[1:]:
        acc = L.e.mul(acc, v)
    return acc


def _int_pow(L, x: ir.Value, n: int) -> ir.Value:
    if n == 0:
        return L.e.c(1.0)  # x**0 = 1, nan included (as NumPy)
    if n < 0:
        return L.e.div(1.0, _int_pow(L, x, -n))
    result, square = None, x
    while n:  # binary exponentiation
        if n & 1:
            result = square if result is None else L.e.mul(result, square)
        n >>= 1
        if n:
            square = L.e.mul(square, square)
    return result


def _pow(L, x):
    base, ex = x.args
    if ex.is_Float and float(2 * ex).is_integer():  # 2.0, 0.5: use the exact rules below
        ex = sp.Rational(int(2 * ex), 2)
    if ex.is_Integer:  # x**k -> multiplications
        return _int_pow(L, L(base), int(ex))
    if ex.is_Rational and ex.q == 2:  # x**(p/2) -> sqrt(x)**p
        return _int_pow(L, L.e.intrinsic("llvm.sqrt", L(base)), int(ex.p))
    if base == sp.E:
        return L.call("exp", L(ex))
    return L.call("exp", L.e.mul(L(ex), L.call("log", L(base))))  # x**y = exp(y log x)


def _function(name: str):
    return lambda L, x: L.call(name, L(x.args[0]))


def _abs(L, x):
    return L.e.fabs(L(x.args[0]))


def _sign(L, x):
    v = L(x.args[0])
    e = L.e
    inner = e.select(e.cmp("<", v, 0.0), -1.0, v)  # 0 and nan pass through
    return e.select(e.cmp(">", v, 0.0), 1.0, inner)


def _never_nan(v: ir.Value) -> bool:
    return isinstance(v, ir.Constant) and not math.isnan(v.constant)


def _extremum(op: str):
    # NaN-propagating as np.maximum: select(acc > v, acc, v) passes a nan in v; a nan in acc
    # needs its own test, unless acc is a number. Numbers go first, so relu = Max(0, x) is
    # one compare and one select.
    def rule(L, x):
        e = L.e
        values = sorted((L(a) for a in x.args), key=lambda v: not _never_nan(v))
        acc = values[0]
        for v in values[1:]:
            pick = e.select(e.cmp(op, acc, v), acc, v)
            acc = pick if _never_nan(acc) else e.select(e.isnan(acc), acc, pick)
        return acc

    return rule


def _heaviside(L, x):
    e = L.e
    v = L(x.args[0])
    at_zero = L(x.args[1]) if len(x.args) > 1 else e.c(0.5)  # SymPy's default H(0) = 1/2
    value = e.select(e.cmp(">", v, 0.0), 1.0, e.select(e.cmp("<", v, 0.0), 0.0, at_zero))
    return e.select(e.isnan(v), v, value)


def _as_extremum(x: sp.Piecewise) -> sp.Expr | None:
    if len(x.args) != 2 or x.args[1].cond != sp.true:
        return None
    (a, cond), (b, _) = x.args
    return as_extremum(a, cond, b)


def _piecewise(L, x):
    extremum = _as_extremum(x)
    if extremum is not None:
        return L(extremum)
    # Every branch is computed and the first true condition selects (no control flow).
    result = L.e.c(float("nan"))  # outside all conditions: undefined
    for expr, cond in reversed(x.args):
        if cond == sp.true:
            result = L(expr)
        else:
            result = L.e.select(L(cond), L(expr), result)
    return result


def _relational(op: str):
    def rule(L, x):
        lhs, rhs = L(x.lhs), L(x.rhs)
        if op == "!=":  # unordered: nan != anything
            return L.e.b.fcmp_unordered("!=", lhs, rhs)
        return L.e.b.fcmp_ordered(op, lhs, rhs)

    return rule


def _logic(combine: str):
    def rule(L, x):
        values = [L(a) for a in x.args]
        acc = values[0]
        for v in values[1:]:
            acc = getattr(L.e.b, combine)(acc, v)
        return acc

    return rule


RULES: dict[type | str, Callable[[ScalarLowering, sp.Basic], ir.Value]] = {
    sp.Symbol: _symbol,
    sp.Number: _number,  # Integer, Rational, Float, oo, nan
    sp.NumberSymbol: _number,  # pi, E
    sp.Add: _add,  # a + b + ...
    sp.Mul: _mul,  # c * a * b / d
    sp.Pow: _pow,  # x**k, x**(p/2), x**y = exp(y log x)
    sp.exp: _function("exp"),
    sp.log: _function("log"),
    log1p: _function("log1p"),  # log(1 + x)
    expm1: _function("expm1"),  # e^x - 1
    sp.tanh: _function("tanh"),
    sp.erf: _function("erf"),
    sp.cos: _function("cos"),
    sp.floor: _function("floor"),
    "sigmoid": _function("sigmoid"),
    "softplus": _function("softplus"),
    sp.Abs: _abs,
    sp.sign: _sign,  # sign(0) = 0
    sp.Max: _extremum(">"),
    sp.Min: _extremum("<"),
    sp.Heaviside: _heaviside,  # H(0) = h0, default 1/2
    sp.Piecewise: _piecewise,
    sp.StrictLessThan: _relational("<"),
    sp.LessThan: _relational("<="),
    sp.StrictGreaterThan: _relational(">"),
    sp.GreaterThan: _relational(">="),
    sp.Equality: _relational("=="),
    sp.Unequality: _relational("!="),
    sp.And: _logic("and_"),
    sp.Or: _logic("or_"),
    sp.Not: lambda L, x: L.e.b.not_(L(x.args[0])),
    sp.logic.boolalg.BooleanTrue: lambda L, x: ir.Constant(I1, 1),
}
"""Scalar class (or vocabulary name) -> its LLVM lowering; every entry of
``codegen.ir.SCALAR_VOCABULARY``."""
