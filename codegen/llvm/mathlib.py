"""codegen.llvm.mathlib: branch-free elementary functions written in LLVM IR.

``llvm.exp.*`` and friends lower to libm calls, which stop the loop vectorizer.
These versions are straight-line code (range reduction, a polynomial, selects
for the extremes), emitted as ``internal alwaysinline`` functions, so a fused
elementwise loop that calls them still vectorizes.

Methods (all evaluated in the program's dtype, float32 or float64):

- ``exp``: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2; Taylor polynomial
  for e^r; 2^n applied as two power-of-two factors so subnormal results round
  once and overflow gives inf. Out-of-range inputs are clamped first, so no
  special-case selects are needed (nan passes through the clamps).
- ``log``: x = 2^k z with z in [sqrt(1/2), sqrt(2)); log z = 2 atanh(s),
  s = (z-1)/(z+1), as in the classic fdlibm layout ``f - (hfsq - s (hfsq + R))``
  with R the atanh series in s^2. Subnormals are pre-scaled.
- ``expm1``: the exp reduction with e^r - 1 kept without its leading 1, then
  2^n (q + 1) - 1 = 2^n q + (2^n - 1), exact for the n met on [-40, 64]; above
  64, exp(x) - 1. ``log1p``: Goldberg's identity log1p(x) = log(u) x / (u - 1),
  u = 1 + x, which cancels the rounding of u.
- ``tanh`` = expm1(2|x|) / (expm1(2|x|) + 2) with the sign copied back; expm1
  is the exp reduction with e^r - 1 kept without its leading 1.
- ``sigmoid`` / ``softplus`` from z = exp(-|x|) in (0, 1], so nothing overflows:
  sigmoid = 1/(1+z) or z/(1+z); softplus = max(x, 0) + log1p(z).
- ``erf``: x P(x^2) on |x| < 1, and 1 - exp(-x^2) g(x) above, where
  g = erfc(x) exp(x^2) is smooth; P and g are Chebyshev interpolants computed
  here with mpmath (``_chebyshev``), g piecewise on a few intervals with the
  interval's coefficients chosen by selects so one Horner chain serves all.
- ``cos``: x = n pi/2 + r, |r| <= pi/4, with pi/2 in three parts whose first two
  have trailing zero bits (n times each is exact for |n| < 2^(p - split bits));
  then +-cos r or +-sin r by n mod 4, each a Taylor polynomial; clamped to [-1, 1].
- ``floor``: for |x| < 2^p, round |x| to an integer by adding and subtracting 2^p,
  copy the sign back, and step down by 1 where that rounded up; larger |x| (and
  nan, inf) are integers already and pass through.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import llvmlite.ir as ir
import mpmath as mp

FAST = ("contract",)  # fusing a*b+c into an fma never hurts accuracy; no nnan/ninf


@dataclass(frozen=True)
class FloatFormat:
    """Bit layout and per-precision constants of one floating-point type."""

    name: str
    bits: int
    mant_bits: int
    bias: int
    exp_degree: int  # Taylor degree for e^r, |r| <= ln2/2
    exp_clamp: tuple[float, float]  # beyond these exp is 0 / inf anyway
    expm1_low: float  # below this, e^x - 1 rounds to -1
    ln2_hi: float  # ln2_hi has trailing zero bits, so n * ln2_hi is exact
    ln2_lo: float
    sqrt_half_bits: int
    min_normal: float
    subnormal_scale: int  # log pre-scales subnormals by 2**subnormal_scale
    log_terms: int  # terms of the atanh series in s^2
    tanh_clamp: float  # 2|x| beyond this: tanh(x) rounds to +-1
    erf_one: float  # |x| beyond this: erf(x) rounds to +-1
    erf_split: tuple[float, ...]  # intervals of the g(x) interpolants
    erf_degrees: tuple[int, int]  # degree of P(x^2) and of each g piece

    @property
    def ftype(self) -> ir.Type:
        return ir.DoubleType() if self.bits == 64 else ir.FloatType()

    @property
    def itype(self) -> ir.IntType:
        return ir.IntType(self.bits)

    @property
    def suffix(self) -> str:
        return f"f{self.bits}"


FORMATS = {
    "float64": FloatFormat(
        name="float64",
        bits=64,
        mant_bits=52,
        bias=1023,
        exp_degree=13,
        exp_clamp=(-746.0, 710.0),
        expm1_low=-40.0,
        ln2_hi=6.93147180369123816490e-01,
        ln2_lo=1.90821492927058770002e-10,
        sqrt_half_bits=0x3FE6A09E667F3BCD,
        min_normal=2.2250738585072014e-308,
        subnormal_scale=54,
        log_terms=11,
        tanh_clamp=44.0,
        erf_one=6.0,
        erf_split=(1.0, 1.5, 2.25, 3.5, 6.0),
        erf_degrees=(11, 12),
    ),
    "float32": FloatFormat(
        name="float32",
        bits=32,
        mant_bits=23,
        bias=127,
        exp_degree=7,
        exp_clamp=(-104.0, 89.0),
        expm1_low=-20.0,
        ln2_hi=0.693359375,
        ln2_lo=-2.12194440e-4,
        sqrt_half_bits=0x3F3504F3,
        min_normal=1.1754943508222875e-38,
        subnormal_scale=25,
        log_terms=5,
        tanh_clamp=20.0,
        erf_one=4.0,
        erf_split=(1.0, 2.0, 3.0, 4.0),
        erf_degrees=(5, 6),
    ),
}


class Emitter:
    """A typed view of an IRBuilder: float arithmetic in one format, constants from Python."""

    def __init__(self, builder: ir.IRBuilder, fmt: FloatFormat):
        self.b = builder
        self.fmt = fmt
        self.ty = fmt.ftype
        self.ity = fmt.itype

    # -- values
    def c(self, value: float) -> ir.Constant:
        return ir.Constant(self.ty, float(value))

    def ic(self, value: int) -> ir.Constant:
        return ir.Constant(self.ity, value)

    def v(self, x) -> ir.Value:
        return x if isinstance(x, ir.Value) else self.c(x)

    # -- arithmetic (``contract`` lets LLVM use fma)
    def add(self, a, b):
        return self.b.fadd(self.v(a), self.v(b), flags=FAST)

    def sub(self, a, b):
        return self.b.fsub(self.v(a), self.v(b), flags=FAST)

    def mul(self, a, b):
        return self.b.fmul(self.v(a), self.v(b), flags=FAST)

    def div(self, a, b):
        return self.b.fdiv(self.v(a), self.v(b), flags=FAST)

    def neg(self, a):
        return self.b.fneg(self.v(a))

    def poly(self, x, coeffs):
        """Horner: coeffs[0] + x (coeffs[1] + x (...)); coeffs may be values or floats."""
        acc = self.v(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.add(self.mul(acc, x), c)
        return acc

    # -- comparisons (ordered: false when either side is nan)
    def cmp(self, op: str, a, b):
        return self.b.fcmp_ordered(op, self.v(a), self.v(b))

    def isnan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, cond, a, b):
        return self.b.select(cond, self.v(a), self.v(b))

    def clamp(self, x, lo, hi):
        """Clamp to [lo, hi]; nan passes through (both compares are false)."""
        x = self.select(self.cmp("<", x, lo), lo, x)
        return self.select(self.cmp(">", x, hi), hi, x)

    # -- intrinsics (all have vector forms, so loops stay vectorizable)
    def intrinsic(self, name: str, *args):
        fn = _intrinsic(self.b.module, name, self.ty, len(args))
        return self.b.call(fn, [self.v(a) for a in args])

    def fabs(self, x):
        return self.intrinsic("llvm.fabs", x)

    def copysign(self, mag, sign):
        return self.intrinsic("llvm.copysign", mag, sign)

    # -- bits
    def bits(self, x):
        return self.b.bitcast(x, self.ity)

    def from_bits(self, i):
        return self.b.bitcast(i, self.ty)

    def pow2(self, n):
        """2**n as a float for an integer n inside the normal exponent range."""
        biased = self.b.add(n, self.ic(self.fmt.bias))
        return self.from_bits(self.b.shl(biased, self.ic(self.fmt.mant_bits)))


def _intrinsic(module: ir.Module, name: str, ty: ir.Type, nargs: int) -> ir.Function:
    full = f"{name}.{ty.intrinsic_name}"
    if full in module.globals:
        return module.globals[full]
    return ir.Function(module, ir.FunctionType(ty, [ty] * nargs), name=full)


# --------------------------------------------------------------------------
# The functions. Each takes an Emitter and ir.Values and returns an ir.Value.


def _taylor_exp(degree: int) -> list[float]:
    return [1.0 / math.factorial(k) for k in range(degree + 1)]


def _exp_reduce(e: Emitter, x):
    """x = n ln2 + r: returns (r, n as an integer), rounding n to nearest via a shifter."""
    f = e.fmt
    shifter = 1.5 * 2.0**f.mant_bits  # adding it rounds x/ln2 to an integer in the low bits
    t = e.add(e.mul(x, 1.0 / math.log(2.0)), shifter)
    n = e.sub(t, shifter)
    r = e.sub(e.sub(x, e.mul(n, f.ln2_hi)), e.mul(n, f.ln2_lo))
    shifter_bits = e.bits(e.c(shifter))
    return r, e.b.sub(e.bits(t), shifter_bits)


def exp(e: Emitter, x):
    lo, hi = e.fmt.exp_clamp
    x = e.clamp(x, lo, hi)
    r, n = _exp_reduce(e, x)
    p = e.poly(r, _taylor_exp(e.fmt.exp_degree))
    # 2^n = 2^n1 2^n2: each factor stays normal, so p 2^n1 is exact and the
    # second product rounds once (subnormal results) or overflows to inf.
    n1 = e.b.ashr(n, e.ic(1))
    n2 = e.b.sub(n, n1)
    return e.mul(e.mul(p, e.pow2(n1)), e.pow2(n2))


def expm1_reduced(e: Emitter, x):
    """e^x - 1 for x in [expm1_low, 64] (the caller clamps): 2^n (q + 1) - 1, q = e^r - 1."""
    r, n = _exp_reduce(e, x)
    q = e.mul(r, e.poly(r, [1.0 / math.factorial(k + 1) for k in range(e.fmt.exp_degree)]))
    scale = e.pow2(n)
    return e.add(e.mul(scale, q), e.sub(scale, 1.0))  # 2^n - 1 is exact for these n


def expm1(e: Emitter, x):
    # Below expm1_low, e^x is under half an ulp of 1 and the result rounds to -1; above 64
    # the -1 cancels nothing, and exp's own scaling reaches the overflow threshold.
    small = expm1_reduced(e, e.clamp(x, e.fmt.expm1_low, 64.0))
    large = e.sub(exp(e, x), 1.0)
    return e.select(e.cmp(">", x, 64.0), large, small)


def log(e: Emitter, x):
    f = e.fmt
    b = e.b
    tiny = e.cmp("<", x, f.min_normal)
    xs = e.select(tiny, e.mul(x, 2.0**f.subnormal_scale), x)
    k_adjust = b.select(tiny, e.ic(-f.subnormal_scale), e.ic(0))
    # bits - bits(sqrt(1/2)): its exponent field is k with x = 2^k z, z in [sqrt(1/2), sqrt(2))
    ix = b.sub(e.bits(xs), e.ic(f.sqrt_half_bits))
    k = b.ashr(ix, e.ic(f.mant_bits))
    z = e.from_bits(b.sub(e.bits(xs), b.shl(k, e.ic(f.mant_bits))))
    k = b.add(k, k_adjust)
    kf = b.sitofp(b.trunc(k, ir.IntType(32)), e.ty)  # i32 -> float converts as a vector op
    fm = e.sub(z, 1.0)  # exact: z in [0.5, 2]
    s = e.div(fm, e.add(fm, 2.0))
    s2 = e.mul(s, s)
    series = [2.0 / (2 * j + 3) for j in range(f.log_terms)]  # 2/3, 2/5, 2/7, ...
    big_r = e.mul(s2, e.poly(s2, series))
    hfsq = e.mul(e.mul(fm, fm), 0.5)
    # log(1 + f) = f - hfsq + s (hfsq + R), and k ln2 split in hi + lo
    inner = e.sub(hfsq, e.add(e.mul(s, e.add(hfsq, big_r)), e.mul(kf, f.ln2_lo)))
    result = e.sub(e.mul(kf, f.ln2_hi), e.sub(inner, fm))
    result = e.select(e.cmp("==", x, math.inf), x, result)  # log(inf) = inf
    result = e.select(e.cmp("==", x, 0.0), -math.inf, result)  # log(+-0) = -inf
    result = e.select(e.cmp("<", x, 0.0), math.nan, result)  # log(x < 0) = nan
    return e.select(e.isnan(x), x, result)


def log1p(e: Emitter, z):
    """log(1 + z) (Goldberg: log(u) z / (u - 1) with u = 1 + z rounded; u - 1 is exact)."""
    u = e.add(z, 1.0)
    d = e.sub(u, 1.0)
    ratio = e.mul(log(e, u), e.div(z, d))
    ratio = e.select(e.cmp("==", z, math.inf), z, ratio)  # log1p(inf) = inf, not inf * inf/inf
    return e.select(e.cmp("==", d, 0.0), z, ratio)  # |z| below half an ulp of 1: log1p(z) = z


@functools.cache
def _half_pi_parts(mant_bits: int) -> tuple[float, float, float, int]:
    """pi/2 = hi + mid + lo, hi and mid with ``split`` significant bits; and ``split``."""
    split = (mant_bits + 1) * 4 // 7  # 30 bits of 53, 13 of 24
    with mp.workprec(200):
        rest, parts = mp.pi / 2, []
        for _ in range(2):
            exponent = int(mp.floor(mp.log(rest, 2)))
            unit = mp.mpf(2) ** (exponent - split + 1)
            part = mp.floor(rest / unit) * unit
            parts.append(float(part))
            rest -= part
        return parts[0], parts[1], float(rest), split


def cos(e: Emitter, x):
    f = e.fmt
    b = e.b
    hi, mid, lo, _ = _half_pi_parts(f.mant_bits)
    shifter = 1.5 * 2.0**f.mant_bits  # adding it rounds x 2/pi to an integer in the low bits
    t = e.add(e.mul(x, 2.0 / math.pi), shifter)
    n = e.sub(t, shifter)
    r = e.sub(e.sub(e.sub(x, e.mul(n, hi)), e.mul(n, mid)), e.mul(n, lo))
    quadrant = b.and_(b.sub(e.bits(t), e.bits(e.c(shifter))), e.ic(3))
    r2 = e.mul(r, r)
    terms = 11 if f.bits == 64 else 6
    cos_r = e.poly(r2, [(-1) ** j / math.factorial(2 * j) for j in range(terms)])
    sin_r = e.mul(r, e.poly(r2, [(-1) ** j / math.factorial(2 * j + 1) for j in range(terms)]))
    odd = b.icmp_unsigned("==", b.and_(quadrant, e.ic(1)), e.ic(1))
    value = e.select(odd, sin_r, cos_r)
    # cos(x) = cos r, -sin r, -cos r, sin r for n mod 4 = 0, 1, 2, 3
    negative = b.icmp_unsigned("==", b.and_(b.add(quadrant, e.ic(1)), e.ic(2)), e.ic(2))
    value = e.select(negative, e.neg(value), value)
    return e.clamp(value, -1.0, 1.0)  # huge |x|: the reduction is rough, the value bounded


def floor(e: Emitter, x):
    big = 2.0**e.fmt.mant_bits  # from here on every float is an integer
    a = e.fabs(x)
    rounded = e.copysign(e.sub(e.add(a, big), big), x)  # round to nearest, sign back
    down = e.select(e.cmp(">", rounded, x), e.sub(rounded, 1.0), rounded)
    return e.select(e.cmp("<", a, big), down, x)  # nan and inf: the compare is false


def tanh(e: Emitter, x):
    a2 = e.mul(e.fabs(x), 2.0)
    a2 = e.select(e.cmp(">", a2, e.fmt.tanh_clamp), e.fmt.tanh_clamp, a2)
    em = expm1_reduced(e, a2)
    return e.copysign(e.div(em, e.add(em, 2.0)), x)


def sigmoid(e: Emitter, x):
    z = exp(e, e.neg(e.fabs(x)))
    d = e.add(z, 1.0)
    return e.select(e.cmp(">=", x, 0.0), e.div(1.0, d), e.div(z, d))


def softplus(e: Emitter, x):
    z = exp(e, e.neg(e.fabs(x)))
    return e.add(e.select(e.cmp(">", x, 0.0), x, 0.0), log1p(e, z))


def erf(e: Emitter, x):
    f = e.fmt
    a = e.fabs(x)
    table = erf_tables(f.name)
    # |x| < 1: x P(x^2), P in u = 2 x^2 - 1
    t = e.mul(a, a)
    small = e.mul(a, e.poly(e.sub(e.mul(t, 2.0), 1.0), table.small))
    # |x| >= 1: 1 - exp(-x^2) g(x), g's interval picked per lane by selects
    pieces = table.pieces
    mid, inv_half, coeffs = e.c(pieces[-1][0]), e.c(pieces[-1][1]), [e.c(c) for c in pieces[-1][2]]
    for (lo_mid, lo_inv, lo_coeffs), upper in zip(
        reversed(pieces[:-1]), reversed(f.erf_split[1:-1])
    ):
        below = e.cmp("<", a, upper)
        mid = e.select(below, lo_mid, mid)
        inv_half = e.select(below, lo_inv, inv_half)
        coeffs = [e.select(below, lc, c) for lc, c in zip(lo_coeffs, coeffs)]
    g = e.poly(e.mul(e.sub(a, mid), inv_half), coeffs)
    large = e.sub(1.0, e.mul(exp(e, e.neg(t)), g))
    r = e.select(e.cmp("<", a, 1.0), small, large)
    r = e.select(e.cmp(">=", a, f.erf_one), 1.0, r)
    return e.copysign(r, x)


# --------------------------------------------------------------------------
# erf coefficients: Chebyshev interpolants computed with mpmath (exact enough at
# 40 digits), converted to monomials of the normalized variable u in [-1, 1].


Piece = tuple[float, float, tuple[float, ...]]  # (mid, 1/half, coefficients of g(mid + half u))


@dataclass(frozen=True)
class ErfTable:
    small: tuple[float, ...]  # P(u), u = 2 x^2 - 1: erf(x) = x P(u) for |x| < 1
    pieces: tuple[Piece, ...]  # g = erfc(x) exp(x^2) on each interval of erf_split


def _chebyshev(fn, a: float, b: float, degree: int) -> list:
    """Monomial coefficients in u of the Chebyshev interpolant of fn(mid + half u)."""
    n = degree + 1
    mid, half = (mp.mpf(a) + b) / 2, (mp.mpf(b) - a) / 2
    theta = [mp.pi * (j + mp.mpf(1) / 2) / n for j in range(n)]
    vals = [fn(mid + half * mp.cos(th)) for th in theta]
    cheb = [2 * mp.fsum(v * mp.cos(k * th) for v, th in zip(vals, theta)) / n for k in range(n)]
    cheb[0] /= 2
    # T_k as monomials: T_{k+1} = 2u T_k - T_{k-1}
    t_prev, t_cur = [mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]
    mono = [cheb[0]] + [mp.mpf(0)] * degree
    for k in range(1, n):
        for i, c in enumerate(t_cur):
            mono[i] += cheb[k] * c
        t_next = [mp.mpf(0)] + [2 * c for c in t_cur]
        for i, c in enumerate(t_prev):
            t_next[i] -= c
        t_prev, t_cur = t_cur, t_next
    return mono


@functools.cache
def erf_tables(dtype: str) -> ErfTable:
    f = FORMATS[dtype]
    deg_small, deg_piece = f.erf_degrees
    with mp.workdps(40):
        # P(t) = erf(sqrt t) / sqrt t on t = x^2 in [0, 1]
        small = _chebyshev(
            lambda t: mp.erf(mp.sqrt(t)) / mp.sqrt(t) if t else 2 / mp.sqrt(mp.pi), 0, 1, deg_small
        )
        pieces = []
        for lo, hi in zip(f.erf_split[:-1], f.erf_split[1:]):
            mono = _chebyshev(lambda x: mp.erfc(x) * mp.exp(x * x), lo, hi, deg_piece)
            pieces.append(((lo + hi) / 2, 2 / (hi - lo), tuple(float(c) for c in mono)))
    return ErfTable(tuple(float(c) for c in small), tuple(pieces))


# --------------------------------------------------------------------------

FUNCTIONS: dict[str, Callable] = {
    "exp": exp,
    "log": log,
    "log1p": log1p,
    "expm1": expm1,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "erf": erf,
    "cos": cos,
    "floor": floor,
}


def sqrt_without_fpu(e: Emitter, x):
    """sqrt where the FPU has no sqrt instruction for the format (LLVM would call libm):
    exp(log(x) / 2), refined by one Newton step; 0, inf, nan and x < 0 come out of exp and
    log as sqrt gives them."""
    y = exp(e, e.mul(log(e, x), 0.5))
    refined = e.mul(e.add(y, e.div(x, y)), 0.5)
    usable = e.b.and_(e.cmp(">", y, 0.0), e.cmp("<", y, float("inf")))
    return e.select(usable, refined, y)


LIBM_NAMES = {"float64": "sqrt", "float32": "sqrtf"}  # what LLVM calls for llvm.sqrt


class MathLibrary:
    """Defines each function once per module and format; ``call`` emits a call to it."""

    def __init__(self, module: ir.Module, fmt: FloatFormat):
        self.module = module
        self.fmt = fmt
        self._defined: dict[str, ir.Function] = {}

    def call(self, builder: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
        return builder.call(self.function(name), [x])

    def function(self, name: str) -> ir.Function:
        if name not in self._defined:
            ty = self.fmt.ftype
            fn = ir.Function(
                self.module, ir.FunctionType(ty, [ty]), name=f"symgrad.{name}.{self.fmt.suffix}"
            )
            fn.linkage = "internal"
            fn.attributes.add("alwaysinline")
            fn.attributes.add("nounwind")
            builder = ir.IRBuilder(fn.append_basic_block("entry"))
            builder.ret(FUNCTIONS[name](Emitter(builder, self.fmt), fn.args[0]))
            self._defined[name] = fn
        return self._defined[name]

    def define_libm_sqrt(self) -> None:
        """Define the libm ``sqrt`` (``sqrtf``) that LLVM calls for ``llvm.sqrt`` on a target
        without a sqrt instruction, so the object needs no libm (weak: a libm linked in
        wins)."""
        ty = self.fmt.ftype
        fn = ir.Function(self.module, ir.FunctionType(ty, [ty]), LIBM_NAMES[self.fmt.name])
        fn.linkage = "weak"
        fn.attributes.add("nounwind")  # no unwind tables: nothing to unwind, no personality routine
        builder = ir.IRBuilder(fn.append_basic_block("entry"))
        builder.ret(sqrt_without_fpu(Emitter(builder, self.fmt), fn.args[0]))
