"""Importing symgrad leaves SymPy's printing alone; symgrad prints through its own printers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import sympy as sp

# A user's own SymPy matrix expressions: entrywise products, transposes (of a product,
# of a symbol), a negative product nested in a sum, and a deep chain of products.
USER_EXPRESSIONS = textwrap.dedent(
    """
    import sympy as sp
    from sympy.printing.precedence import PRECEDENCE_VALUES
    from sympy.printing.latex import LatexPrinter
    from sympy.printing.pretty.pretty import PrettyPrinter
    from sympy.printing.str import StrPrinter

    n = sp.Symbol("n")
    A, B = sp.MatrixSymbol("A_1", n, n), sp.MatrixSymbol("B", n, n)
    deep = A
    for _ in range(6):
        deep = sp.MatMul(sp.HadamardProduct(deep, B), -2 * B.T)
    exprs = [
        sp.HadamardProduct(A, B),
        sp.Transpose(sp.MatMul(A, B)),
        sp.Transpose(A),
        sp.MatAdd(A, sp.MatMul(-1, A, B)),
        sp.HadamardProduct(sp.MatMul(-3, A, B), A.T),
        deep,
    ]
    texts = [[sp.sstr(e), sp.latex(e), sp.pretty(e), str(e)] for e in exprs]
    state = {
        "precedence": sorted(PRECEDENCE_VALUES.items()),
        "printers": {
            cls.__name__: sorted(k for k in vars(cls) if not k.startswith("__"))
            for cls in (StrPrinter, LatexPrinter, PrettyPrinter)
        },
    }
    """
)


def _run(preamble: str) -> dict:
    code = preamble + USER_EXPRESSIONS + "\nimport json; print(json.dumps([texts, state]))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    texts, state = json.loads(out.stdout)
    return {"texts": texts, "state": state}


@pytest.fixture(scope="module")
def without_symgrad() -> dict:
    return _run("")  # a process that never imports symgrad


def test_importing_symgrad_changes_no_sympy_printing(without_symgrad):
    after = _run("import symgrad\nimport symgrad.expr\n")
    assert after["texts"] == without_symgrad["texts"]
    assert after["state"] == without_symgrad["state"]


def test_using_symgrad_changes_no_sympy_printing(without_symgrad):
    # building and printing formulas with symgrad first, then the user's own
    code = textwrap.dedent(
        """
        import symgrad
        from symgrad import expr as E
        n = E.batch(); X = E.matrix("X", n, 3); W = E.matrix("W", 3, 3)
        Z = E.name("Z1", E.matmul(X, W))
        g = E.hadamard(E.transpose(Z), E.scale(-2, E.transpose(Z)))
        E.sstr(g); E.latex(g); str(g)
        """
    )
    assert _run(code) == without_symgrad


def test_symgrad_printers():
    from symgrad import expr as E

    n = E.batch()
    X, W = E.matrix("X", n, 3), E.matrix("W", 3, 3)
    Z = E.name("Z1", E.matmul(X, W))
    g = E.hadamard(Z, E.apply("relu", Z))
    assert str(g) == sp.sstr(g) == E.sstr(g) == "relu(Z1) o Z1"  # the node prints itself
    assert isinstance(g, sp.HadamardProduct)
    plain = sp.HadamardProduct(X, X)  # built with SymPy: SymPy's text, symgrad's in E.sstr
    assert sp.sstr(plain) == "HadamardProduct(X, X)"
    assert E.sstr(plain) == "X o X"
    t = E.matmul(E.transpose(Z), X)
    assert E.latex(t) == r"Z_{1}^{T} X"
    assert sp.latex(t) == r"\left(Z_{1}\right)^{T} X"
    assert E.latex(E.transpose(E.matmul(X, W))) == sp.latex(E.transpose(E.matmul(X, W)))
    assert E.sstr(E.scale(-2, t)) == sp.sstr(E.scale(-2, t)) == "-2*Z1.T*X"
    assert E.latex(E.scale(-2, t)) == r"- 2 Z_{1}^{T} X"


def test_deep_formula_prints_without_deep_recursion():
    from symgrad import expr as E

    n = E.batch()
    X, W = E.matrix("X", n, 2), E.matrix("W", 2, 2)
    g = X
    for _ in range(1500):  # far deeper than Python's recursion limit allows SymPy's printer
        g = E.matmul(E.hadamard(g, X), W)
    text = E.sstr(g)
    assert text.count(" o ") == 1500 and text.endswith(")*W")
    assert E.latex(g).count(r"\circ") == 1500
