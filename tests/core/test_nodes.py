"""Graph construction: shapes, shape errors, folding, printing."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import expr as E

n = E.batch()
X, W, b = E.matrix("X", n, 3), E.matrix("W", 3, 2), E.matrix("b", 1, 2)
x = sp.Symbol("x", real=True)


def test_shapes_are_symbolic_in_the_batch():
    Z = E.add_bias(E.matmul(X, W), b)
    assert Z.shape == (n, 2)
    assert E.total(Z).shape == (1, 1)
    assert E.col_sum(Z).shape == (1, 2)
    assert E.row_sum(Z).shape == (n, 1)
    assert E.softmax(Z).shape == (n, 2)
    assert E.transpose(Z).shape == (2, n)


@pytest.mark.parametrize(
    "build, op",
    [
        (lambda: E.matmul(X, b), "matmul"),
        (lambda: E.add(X, E.matrix("Q", n, 4)), "add"),
        (lambda: E.hadamard(X, W), "hadamard"),
        (lambda: E.add_bias(E.matmul(X, W), E.matrix("c", 1, 3)), "add_bias"),
        (lambda: E.elementwise(sp.Lambda((x, sp.Symbol("y")), x), X, W), "elementwise"),
        (lambda: E.concat(X, W), "concat"),
    ],
)
def test_shape_mismatch_names_op_and_both_shapes(build, op):
    with pytest.raises(
        ValueError,
        match=rf"{op}: incompatible shapes; received .* with shape \(.*\) and .* with shape \(.*\)",
    ):
        build()


def test_bad_dimension_and_name():
    with pytest.raises(ValueError, match="positive integer"):
        E.matrix("M", 0, 3)
    with pytest.raises(ValueError, match="identifiers"):
        E.matrix("not a name", 2, 3)


def test_folding():
    assert E.add(X, sp.ZeroMatrix(n, 3)) == X
    assert E.scale(1, X) == X
    assert E.scale(0, X) == sp.ZeroMatrix(n, 3)
    assert E.scale(2, E.scale(3, X)) == E.scale(6, X)
    assert E.sub(X, X) == sp.ZeroMatrix(n, 3)
    assert E.add(X, X) == E.scale(2, X)
    assert E.transpose(E.transpose(X)) == X
    assert E.hadamard(sp.OneMatrix(n, 3), X) == X
    assert E.elementwise(sp.Lambda(x, x), X) == X
    assert E.col_sum(E.broadcast_rows(b, n)) == E.scale(n, b)


def test_equal_functions_are_one_node():
    y = sp.Symbol("y", real=True)
    f1 = E.elementwise(sp.Lambda(x, sp.exp(x) + 1), X)
    f2 = E.elementwise(sp.Lambda(y, sp.exp(y) + 1), X)
    assert f1 == f2 and hash(f1) == hash(f2)


def test_printing_str_pretty_latex():
    A = E.name("A1", E.apply("sigmoid", E.name("Z1", E.add_bias(E.matmul(X, W), b))))
    g = E.hadamard(A, E.elementwise(sp.Lambda(x, 1 - x), A))
    assert sp.sstr(g) == "(1 - A1) o A1"
    assert sp.latex(g) == r"\left(1 - A_{1}\right) \circ A_{1}"
    assert "∘" in sp.pretty(g)
    assert sp.sstr(A.body) == "sigmoid(Z1)"
    assert sp.latex(E.apply("relu", X)) == r"\operatorname{relu}\left(X\right)"
    assert sp.sstr(E.col_sum(A)) == "colsum(A1)"
    assert sp.sstr(E.softmax(X)) == "softmax(X)"
    assert sp.latex(E.log_softmax(X)) == r"\operatorname{log\_softmax}\left(X\right)"


def test_unknown_activation_lists_known_ones():
    with pytest.raises(
        ValueError, match=r"unknown activation 'sigmod'; known activations: .*sigmoid.*tanh"
    ):
        E.apply("sigmod", X)


def test_user_activation_from_expression_and_callable():
    t = sp.Symbol("t")
    a = E.apply(t * sp.tanh(t), X)
    b_ = E.apply(lambda z: z * sp.tanh(z), X)
    assert a == b_
    with pytest.raises(ValueError, match="exactly one free symbol"):
        E.apply(t * sp.Symbol("u"), X)


def test_check_symbols():
    E.check_symbols([E.matmul(X, W)])
    with pytest.raises(ValueError, match="two shapes"):
        E.check_symbols([E.add(E.total(X), E.total(E.matrix("X", n, 5)))])


def test_element_view():
    Z = E.matmul(X, W)
    i, j = sp.symbols("i j", integer=True)
    entry = Z[i, j]
    assert entry.has(X[i, 0]) or isinstance(entry, sp.Add)


C2 = E.matrix("C2", n, 2)
SLICES = {  # columns of [X | 3 C2] -> the folded expression (its values are checked too)
    "inside the first part": ((0, 2), "X[:, 0:2]"),
    "across both parts": ((1, 4), "[X[:, 1:3] | 3*C2[:, 0:1]]"),
    "the second part": ((3, 5), "3*C2"),
    "inside the second part": ((4, 5), "3*C2[:, 1:2]"),
    "everything": ((0, 5), "[X | 3*C2]"),
}


@pytest.mark.parametrize("case", list(SLICES))
def test_column_slices_of_a_concat_fold_to_its_parts(case, rng):
    (start, stop), text = SLICES[case]
    whole = E.concat(X, E.scale(3, C2))
    folded = E.column_slice(whole, start, stop)
    assert str(folded) == text
    fn = symgrad.compile([X, C2], {"s": folded})
    x_, c_ = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    np.testing.assert_allclose(fn(x_, c_)[0], np.concatenate([x_, 3 * c_], axis=1)[:, start:stop])


def test_concat_and_slice_folding():
    assert E.concat(X) == X
    assert E.concat(E.concat(X, C2), X) == E.concat(X, C2, X)
    assert E.concat(E.column_slice(X, 0, 1), E.column_slice(X, 1, 3)) == X
    assert E.column_slice(E.column_slice(X, 1, 3), 1, 2) == E.column_slice(X, 2, 3)
    assert E.column_slice(E.scale(2, X), 0, 1) == E.scale(2, E.column_slice(X, 0, 1))
    assert E.concat(X, C2).shape == (n, 5)
    with pytest.raises(ValueError, match=r"column_slice: columns 2:4 are not a range of X"):
        E.column_slice(X, 2, 4)
