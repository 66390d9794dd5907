"""Inspection: formulas, LaTeX, the derivation trace, per-element view, op counts."""

from __future__ import annotations

import sympy as sp

import symgrad
from symgrad import expr as E

n = E.batch()
X, Y = E.matrix("X", n, 4), E.labels("Y", n, 3)
W1, b1 = E.matrix("W1", 4, 5), E.matrix("b1", 1, 5)
W2, b2 = E.matrix("W2", 5, 3), E.matrix("b2", 1, 3)
Z1 = E.name("Z1", E.add_bias(E.matmul(X, W1), b1))
A1 = E.name("A1", E.apply("sigmoid", Z1))
Z2 = E.name("Z2", E.add_bias(E.matmul(A1, W2), b2))
P = E.name("P", E.softmax(Z2))
p = sp.Symbol("p")
LOSS = E.scale(-1 / n, E.total(E.hadamard(Y, E.elementwise(sp.Lambda(p, sp.log(p)), P))))
PARAMS = [W1, b1, W2, b2]


def test_two_layer_formulas_read_like_the_math():
    g = symgrad.gradients(LOSS, PARAMS, context=[P]).simplified
    assert sp.sstr(g[W1]) == "1/n*X.T*((P - Y)*W2.T o A1*(1 - A1))"
    assert sp.sstr(g[b1]) == "1/n*colsum((P - Y)*W2.T o A1*(1 - A1))"
    assert sp.sstr(g[W2]) == "1/n*A1.T*(P - Y)"
    assert sp.sstr(g[b2]) == "1/n*colsum(P - Y)"
    for w in PARAMS:  # symgrad's printer and SymPy's agree on text
        assert E.sstr(g[w]) == sp.sstr(g[w])
    assert E.latex(g[W2]) == r"\frac{1}{n} A_{1}^{T} \left(P - Y\right)"
    assert (
        sp.latex(g[W2]) == r"\frac{1}{n} \left(A_{1}\right)^{T} \left(P - Y\right)"
    )  # SymPy's own
    assert "∘" in sp.pretty(g[W1]) and "W₂" in sp.pretty(g[W1])


def test_explain_shows_rules_cotangents_and_rewrites():
    text = symgrad.explain(LOSS, PARAMS, context=[P])
    assert "A1 = sigmoid(Z1)" in text
    assert "rule log_softmax_vjp" in text and "rule matmul_vjp" in text
    assert "rowsum_of_probabilities: rowsum(Y)  ->  1" in text
    assert "output_form: (1 - sigmoid(Z1))*sigmoid(Z1)  ->  A1*(1 - A1)" in text
    assert "dL/dW2 = 1/n*A1.T*(P - Y)" in text


def test_element_formula_is_a_batch_sum():
    g = symgrad.gradients(LOSS, PARAMS, context=[P]).simplified
    entry = symgrad.element_formula(g[W2])
    assert sp.sstr(entry) == "Sum((P[k, j] - Y[k, j])*A1[k, i], (k, 0, n - 1))/n"
    # at a concrete batch size the sum unrolls into the entries of the matrices
    i, j = sp.symbols("i j", integer=True, nonnegative=True)
    unrolled = entry.subs(n, 2).doit()
    assert unrolled.has(A1.body.func) is False and unrolled.has(sp.Symbol("P")) is False
    assert len(sp.Add.make_args(sp.expand(unrolled * 2))) == 4


def test_simplification_reduces_work():
    report = symgrad.formulas.simplification_report(LOSS, PARAMS, context=[P])
    before, after = report["before"].at(n=32), report["after"].at(n=32)
    assert (
        after["gemm_flops"]
        == before["gemm_flops"]
        == 2 * 32 * (4 * 5 * 2 + 5 * 3 * 3 - 5 * 3) + 2 * 32 * 5 * 3
    )
    assert after["elementwise_ops"] < 0.65 * before["elementwise_ops"]
    assert after["transcendentals"] < before["transcendentals"]
    # the loss's log_softmax(Z2) also gives P = exp(log_softmax(Z2)): one row-wise statement
    assert before["softmaxes"] == after["softmaxes"] == 1


def test_op_counts_are_polynomials_in_the_batch():
    counts = symgrad.op_counts([E.matmul(X, W1)])
    assert counts.gemm_flops == 40 * n
