"""Scalar SymPy functions that elementwise maps are written in.

``sigmoid`` and ``softplus`` are SymPy functions of their own (not their exp/log
definitions) so that derivatives stay short and in output form (``sigmoid' =
sigmoid (1 - sigmoid)``) and so that backends can evaluate them stably:
``softplus(1000)`` is 1000, never ``log(inf)``. ``log1p`` and ``expm1`` are
SymPy's own (``sympy.codegen.cfunctions``); :mod:`symgrad.core.stable` rewrites
hand-written ``log(1 + exp(x))``, ``log(1 + x)``, ``exp(x) - 1`` into these.
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p  # noqa: F401  (vocabulary: log(1 + x), e^x - 1)

MEMO_SIZE = 512
"""Entries each of symgrad's memos of scalar bodies keeps (``functools.lru_cache``).
Within a model every layer of one activation asks the same few questions; a few
hundred entries serve the models compiled last, and a process that compiles
thousands of distinct models holds at most this many expressions per memo
(4,096 kept about 4 kB per compile for the first thousand compiles)."""


class sigmoid(sp.Function):  # noqa: N801 - reads like the math
    """Logistic function 1 / (1 + exp(-x)); ``sigmoid(-x)`` folds to ``1 - sigmoid(x)``."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Half
        if x.could_extract_minus_sign():  # sigmoid(-x) = 1 - sigmoid(x)
            return 1 - cls(-x)
        return None

    def fdiff(self, argindex=1):
        return self * (1 - self)  # s' = s (1 - s)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def _eval_is_real(self):
        return self.args[0].is_real


class softplus(sp.Function):  # noqa: N801
    """log(1 + exp(x)), evaluated stably as max(x, 0) + log1p(exp(-|x|))."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])  # softplus' = sigmoid

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))

    def _eval_is_real(self):
        return self.args[0].is_real


def relu(x: sp.Expr) -> sp.Expr:
    """max(x, 0) as a Piecewise, so its derivative is [x > 0] (relu'(0) = 0)."""
    return sp.Piecewise((x, x > 0), (0, True))


def step(x: sp.Expr) -> sp.Expr:
    """Heaviside step with step(0) = 0, the subgradient convention of PyTorch and JAX."""
    return sp.Heaviside(x, 0)
