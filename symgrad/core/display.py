"""symgrad.core.display: rich displays for Jupyter -- HTML tables whose formulas are LaTeX.

IPython shows an object through its ``_repr_html_`` / ``_repr_latex_`` when it has
them; symgrad's tables and explanations write theirs with these helpers.  Text is
HTML-escaped; a formula goes in as ``$...$`` (escaped too), which the notebook's
MathJax typesets.  Nothing here is installed anywhere: only objects symgrad returns
carry these methods.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from sympy import MatrixSymbol

from symgrad.core.printing import MATH_NAME, FormulaLatexPrinter, tex_text

TABLE_STYLE = "border-collapse: collapse; text-align: left"
CELL_STYLE = "padding: 2px 10px; text-align: left; vertical-align: top"


def text(value) -> str:
    """Plain text as HTML."""
    return html.escape(str(value))


def math(tex: str) -> str:
    """A LaTeX formula as HTML the notebook typesets (inline math)."""
    return html.escape(f"${tex}$")


def label_tex(label: str) -> str:
    """A row's name in LaTeX: ``Z1`` as ``Z_{1}``, any other name upright."""
    if MATH_NAME.fullmatch(label):
        return FormulaLatexPrinter().doprint(MatrixSymbol(label, 1, 1))
    return tex_text(label)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """An HTML table; ``header`` is text, ``rows`` hold HTML cells (``text`` / ``math``)."""
    head = "".join(f'<th style="{CELL_STYLE}">{text(h)}</th>' for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td style="{CELL_STYLE}">{cell}</td>' for cell in row) + "</tr>"
        for row in rows
    )
    cap = f"<caption style='text-align: left'><b>{text(caption)}</b></caption>" if caption else ""
    return (
        f'<table style="{TABLE_STYLE}">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def aligned(lines: Sequence[tuple[str, str]]) -> str:
    """``lhs = rhs`` lines as one LaTeX display (``$$\\begin{aligned} ... \\end{aligned}$$``)."""
    body = r" \\ ".join(f"{lhs} &= {rhs}" for lhs, rhs in lines)
    return rf"$$\begin{{aligned}} {body} \end{{aligned}}$$"
