"""symgrad.core.stable: hand-written formulas get the numerically stable form.

``stable_form(body)`` rewrites a scalar body so that ``log(1 + exp(x))`` is
``softplus(x)``, ``1 / (1 + exp(-x))`` is ``sigmoid(x)``, ``log(1 + x)`` is
``log1p(x)``, ``exp(x) - 1`` is ``expm1(x)`` and so on: every row of
:data:`STABLE_FORMS` is an exact identity whose right-hand side the backends
evaluate without overflow.  :func:`symgrad.core.build.elementwise` applies it to
every body it builds, so the forward body and the derivative bodies that
``sympy.diff`` produces from it both get it (``softplus' = sigmoid``, itself
stable): a hand-written mish ``x tanh(log(1 + exp(x)))`` has finite gradients
at x = 1000, where ``exp(x) / (1 + exp(x))`` would be inf / inf.

The walk is top-down first (so ``x exp(x) / (1 + exp(x))`` is seen whole and
becomes ``x sigmoid(x)``, not ``x exp(x) (1 - sigmoid(x))``), then bottom-up
(so ``log(1 / (1 + exp(-x)))`` sees the sigmoid its argument became).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from symgrad.core.scalar import MEMO_SIZE, sigmoid, softplus

_t = sp.Dummy("t", positive=True)  # stands for exp(u) in the rational patterns

# --------------------------------------------------------------------------
# Rational functions of t = exp(u)

EXP_RATIOS: list[tuple[sp.Expr, Callable[[sp.Expr], sp.Expr]]] = [
    (_t / (1 + _t), lambda u: sigmoid(u)),  # e^u / (1 + e^u) = sigmoid(u)
    (1 / (1 + _t), lambda u: sigmoid(-u)),  # 1 / (1 + e^u) = sigmoid(-u)
    ((_t - 1) / (_t + 1), lambda u: sp.tanh(u / 2)),  # (e^u - 1) / (e^u + 1) = tanh(u/2)
]
"""Patterns P(t) and what P(exp(u)) is; matched up to a constant factor or term, also in t^2."""


def _common_exponent(exps: set[sp.exp]) -> tuple[sp.Expr, dict] | None:
    """u and {exp(a): t^k} with every a = k u for integers k, or None."""
    args = [e.args[0] for e in sorted(exps, key=sp.default_sort_key)]
    ratios = [sp.cancel(a / args[0]) for a in args]
    if not all(r.is_Rational for r in ratios):
        return None
    lcm = math.lcm(*(int(r.q) for r in ratios))
    ks = [int(r * lcm) for r in ratios]
    g = math.gcd(*ks)
    u, ks = args[0] * g / lcm, [k // g for k in ks]
    if u.could_extract_minus_sign():
        u, ks = -u, [-k for k in ks]
    return u, {sp.exp(a): _t**k for a, k in zip(args, ks)}


def _match_ratio(r: sp.Expr, u: sp.Expr) -> sp.Expr | None:
    for power in (1, 2):
        for pattern, value in EXP_RATIOS:
            p = pattern.xreplace({_t: _t**power})
            factor = sp.cancel(r / p)
            if factor.is_number:  # R = c P
                return factor * value(power * u)
            offset = sp.cancel(r - p)
            if offset.is_number:  # R = P + c
                return value(power * u) + offset
    return None


def exp_ratio(e: sp.Expr) -> sp.Expr | None:
    """A sum, product or power that is a rational function of one exp(u) -> sigmoid / tanh."""
    if not isinstance(e, (sp.Add, sp.Mul, sp.Pow)) or not e.has(sp.exp):
        return None
    rest = sp.S.One
    if isinstance(e, sp.Mul):  # x e^x / (1 + e^x): the factors with exp are matched together
        rest = sp.Mul(*[f for f in e.args if not f.has(sp.exp)])
        e = sp.Mul(*[f for f in e.args if f.has(sp.exp)])
    found = _common_exponent(e.atoms(sp.exp))
    if found is None:
        return None
    u, as_t = found
    r = e.xreplace(as_t)
    if r.free_symbols != {_t} or not r.is_rational_function(_t):
        return None
    value = _match_ratio(sp.cancel(r), u)
    return None if value is None else rest * value


# --------------------------------------------------------------------------
# Logarithms: log(a) and log1p(r) = log(1 + r) are matched on their argument a


def _log_argument(e: sp.Expr) -> sp.Expr | None:
    if isinstance(e, sp.log):
        return e.args[0]
    if isinstance(e, log1p):
        return 1 + e.args[0]
    return None


def log_of_exps(a: sp.Expr) -> sp.Expr | None:
    """log(e^a + e^b) = a + softplus(b - a); log(1 + e^u) = softplus(u)."""
    terms = sp.Add.make_args(a)
    if len(terms) != 2:
        return None
    exponents = []
    for term in terms:
        if term == 1:
            exponents.append(sp.S.Zero)
        elif isinstance(term, sp.exp):
            exponents.append(term.args[0])
        else:
            return None
    first, second = sorted(exponents, key=sp.default_sort_key)
    return first + softplus(second - first)


def log_of_sigmoid(a: sp.Expr) -> sp.Expr | None:
    """log(sigmoid(z)) = -softplus(-z); log(1 - sigmoid(z)) = -softplus(z)."""
    if isinstance(a, sigmoid):
        return -softplus(-a.args[0])
    s = list(a.atoms(sigmoid))
    if len(s) == 1 and sp.expand(a - (1 - s[0])) == 0:
        return -softplus(s[0].args[0])
    return None


def log_of_one_plus(a: sp.Expr) -> sp.Expr | None:
    """log(1 + r) = log1p(r)."""
    if isinstance(a, sp.Add) and sp.S.One in a.args:
        return log1p(a - 1)
    return None


LOG_FORMS = (log_of_exps, log_of_sigmoid, log_of_one_plus)
"""Rows for log(a), first match wins."""


def stable_log(e: sp.Expr) -> sp.Expr | None:
    a = _log_argument(e)
    if a is None:
        return None
    for row in LOG_FORMS:
        new = row(a)
        if new is not None:
            return None if new == e else new
    return None


def exp_minus_one(e: sp.Expr) -> sp.Expr | None:
    """c e^u - c = c expm1(u), for a term c e^u and the number -c in one sum."""
    if not isinstance(e, sp.Add):
        return None
    numbers = [t for t in e.args if t.is_number]
    for term in e.args:
        c, rest = term.as_coeff_Mul()
        if isinstance(rest, sp.exp) and -c in numbers:
            return e - term + c + c * expm1(rest.args[0])
    return None


STABLE_FORMS: list[tuple[str, Callable[[sp.Expr], sp.Expr | None]]] = [
    ("sigmoid, tanh", exp_ratio),  # 1/(1 + e^-x) -> sigmoid(x), (e^2x - 1)/(e^2x + 1) -> tanh(x)
    ("softplus, log1p", stable_log),  # log(1 + e^x) -> softplus(x), log(1 + x) -> log1p(x)
    ("expm1", exp_minus_one),  # e^x - 1 -> expm1(x)
]
"""(what it introduces, rule); a rule returns the rewritten node or None."""


def _rewrite_here(e: sp.Expr) -> sp.Expr | None:
    for _, rule in STABLE_FORMS:
        new = rule(e)
        if new is not None and new != e:
            return new
    return None


@functools.lru_cache(maxsize=MEMO_SIZE)
def stable_form(body: sp.Expr) -> sp.Expr:
    """``body`` with every hand-written unstable form replaced by its stable equal."""
    if body.is_Atom or not body.has(sp.exp, sp.log, log1p):
        return body
    new = _rewrite_here(body)
    if new is not None:  # top-down: whole patterns first
        return stable_form(new)
    rebuilt = body.func(*[stable_form(a) for a in body.args])
    new = _rewrite_here(rebuilt)  # bottom-up: what the arguments became
    return stable_form(new) if new is not None else rebuilt
