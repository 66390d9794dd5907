"""symgrad.core.printing: symgrad's own printers for formulas.

SymPy's printers are left exactly as they are (importing symgrad changes
nothing in a user's process); symgrad prints through these subclasses:

- ``A o B`` for an entrywise product (SymPy's ``str`` shows the class name);
- ``A_{1}^{T}`` in LaTeX for a transposed named value, not ``\\left(A_{1}\\right)^{T}``;
- LaTeX names: a letter with a number (``X``, ``W1``, ``A_2``) as SymPy writes it
  (``W_{1}``), any other name upright (``\\mathrm{dense\\_1\\_kernel}``, never SymPy's
  ``dense_{1 kernel}``); the setting ``names`` shows symbols under other names (a
  model's weights as their Keras paths, ``\\mathrm{dense\\_1/kernel}``);
- a fixed rank for matrix products: SymPy ranks a ``MatMul`` like a ``Mul``,
  whose sign test negates the product and runs a ``doit`` down the whole tree;
- bottom-up: every matrix subterm is printed once, operands before users, so a
  deep formula never recurses deeply and a shared subterm is printed once.
"""

from __future__ import annotations

import re

from sympy.matrices.expressions import MatAdd, MatMul, MatrixExpr
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE, precedence, precedence_traditional
from sympy.printing.str import StrPrinter

from symgrad.core.graph import children, is_shallow, topological
from symgrad.core.nodes import Named, hadamard_text, tex_text


def _printed_operands(node) -> tuple:
    return () if isinstance(node, Named) else children(node)  # a name prints as itself


def _is_negative_product(expr) -> bool:
    c = expr.args[0] if isinstance(expr, MatMul) else None
    return bool(c is not None and c.is_Number and c.is_extended_negative)


def _negated(expr: MatMul) -> MatrixExpr:
    """``-c A -> c A`` for a product whose coefficient is a negative number."""
    c, rest = expr.args[0], expr.args[1:]
    return (rest[0] if len(rest) == 1 else MatMul(*rest)) if c == -1 else MatMul(-c, *rest)


def _rank(item) -> int:
    """SymPy's precedence, with a matrix product fixed at a product's rank."""
    return PRECEDENCE["Mul"] if isinstance(item, MatMul) else precedence(item)


def _terms(expr: MatAdd) -> list:
    # SymPy orders the terms by its sort key, which recurses through each term
    return expr.as_ordered_terms() if is_shallow(expr) else list(expr.args)


class _BottomUp:
    """Printer mixin: matrix subterms printed in topological order and remembered.

    A nested text does not depend on where it appears (only the top level
    does: SymPy prints a lone Float differently), so each nested matrix
    subterm's text is kept and reused; printing it bottom-up first means the
    printer's own recursion is one level deep whatever the formula's depth.
    """

    def __init__(self, settings=None):
        super().__init__(settings)
        self._memo: dict = {}

    def doprint(self, expr):
        if isinstance(expr, MatrixExpr):
            self._print_level += 1
            try:
                for node in topological([expr], self._memo, _printed_operands):
                    self._print(node)
            finally:
                self._print_level -= 1
        return super().doprint(expr)

    def _print(self, expr, **kwargs):
        if kwargs or self._print_level == 0 or not isinstance(expr, MatrixExpr):
            return super()._print(expr, **kwargs)
        text = self._memo.get(expr)
        if text is None:
            text = self._memo[expr] = super()._print(expr)
        return text


class FormulaStrPrinter(_BottomUp, StrPrinter):
    """``str`` of formulas: SymPy's ``sstr`` with the rules of this module."""

    def parenthesize(self, item, level, strict=False):
        p = _rank(item)
        if p < level or (not strict and p <= level):
            return f"({self._print(item)})"
        return self._print(item)

    def _print_MatMul(self, expr):
        if _is_negative_product(expr):
            rest = expr.args[1:] if expr.args[0] == -1 else (-expr.args[0], *expr.args[1:])
            return "-" + "*".join(self.parenthesize(a, PRECEDENCE["Mul"]) for a in rest)
        return "*".join(self.parenthesize(a, PRECEDENCE["Mul"]) for a in expr.args)

    def _print_MatAdd(self, expr):
        parts = []
        for term in _terms(expr):
            sign, text = "+", self._print(term)
            if text.startswith("-") and not isinstance(term, MatAdd):
                sign, text = "-", text[1:]
            if isinstance(term, MatAdd) or _rank(term) < PRECEDENCE["Add"]:
                text = f"({text})"
            parts += [sign, text]
        return ("-" if parts[0] == "-" else "") + " ".join(parts[1:])

    def _print_HadamardProduct(self, expr):  # a HadamardProduct a user built with SymPy
        return hadamard_text(self, expr)


MATH_NAME = re.compile(r"[A-Za-z](_?[0-9]+)?")
"""Names SymPy's LaTeX writes well: one letter, perhaps with a number as its subscript."""


class FormulaLatexPrinter(_BottomUp, LatexPrinter):
    """LaTeX of formulas: SymPy's ``latex`` with the rules of this module.

    ``names``: symbol name -> the text it is shown as (upright), e.g. a model's
    ``{"dense_1_kernel": "dense_1/kernel"}``.
    """

    _default_settings = {**LatexPrinter._default_settings, "names": {}}

    def parenthesize(self, item, level, is_neg=False, strict=False):
        p = PRECEDENCE["Mul"] if isinstance(item, MatMul) else precedence_traditional(item)
        if (is_neg and strict) or p < level or (not strict and p <= level):
            return self._add_parens(self._print(item))
        return self._print(item)

    def _print_MatMul(self, expr):
        def factor(x):
            return self.parenthesize(x, PRECEDENCE["Mul"], False)

        args = list(expr.args)
        if _is_negative_product(expr):
            args = args[1:] if args[0] == -1 else [-args[0], *args[1:]]
            return "- " + " ".join(map(factor, args))
        return " ".join(map(factor, args))

    def _print_MatAdd(self, expr):
        tex = ""
        for k, term in enumerate(_terms(expr)):
            if k and _is_negative_product(term):
                tex, term = tex + " - ", _negated(term)
            elif k:
                tex += " + "
            text = self._print(term)
            tex += rf"\left({text}\right)" if isinstance(term, MatAdd) else text
        return tex

    def _print_MatrixSymbol(self, expr):
        shown = self._settings["names"].get(expr.name)
        if shown is None and MATH_NAME.fullmatch(expr.name):
            return super()._print_MatrixSymbol(expr)  # W_{1}
        return tex_text(expr.name if shown is None else shown)

    def _print_Transpose(self, expr):
        if isinstance(expr.arg, Named):  # A_{1}^{T}: a name needs no parentheses
            return f"{self._print(expr.arg)}^{{T}}"
        return super()._print_Transpose(expr)


def sstr(expr, **settings) -> str:
    """A formula as text, as symgrad prints it: ``1/n*X.T*((P - Y)*W2.T o [A1 > 0])``."""
    return FormulaStrPrinter(settings).doprint(expr)


def latex(expr, **settings) -> str:
    """A formula as LaTeX, as symgrad prints it: ``\\frac{1}{n} A_{1}^{T} \\left(P - Y\\right)``.

    ``names={"dense_kernel": "dense/kernel"}`` shows symbols under other names.
    """
    return FormulaLatexPrinter(settings).doprint(expr)
