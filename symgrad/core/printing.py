"""symgrad.core.printing: how formulas read (`` o `` for the Hadamard product, ``A^T``)."""

from __future__ import annotations

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE, PRECEDENCE_VALUES

from symgrad.core.nodes import Named


def _str_hadamard(printer, expr):
    return " o ".join(printer.parenthesize(a, PRECEDENCE["Mul"], strict=True) for a in expr.args)


if not hasattr(sp.StrPrinter, "_print_HadamardProduct"):  # SymPy prints the class name
    sp.StrPrinter._print_HadamardProduct = _str_hadamard

_latex_transpose = LatexPrinter._print_Transpose


def _latex_transpose_named(printer, expr):  # A_{1}^{T}, not \left(A_{1}\right)^{T}
    if isinstance(expr.arg, Named):
        return f"{printer._print(expr.arg)}^{{T}}"
    return _latex_transpose(printer, expr)


LatexPrinter._print_Transpose = _latex_transpose_named

# SymPy ranks a MatMul like a Mul, whose sign test negates the product and runs a deep
# doit(): printing a deep gradient then takes seconds.  A fixed rank avoids that.
PRECEDENCE_VALUES.setdefault("MatMul", PRECEDENCE["Mul"])
