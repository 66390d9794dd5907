"""Every VJP rule against central finite differences along random directions (float64).

Each case builds one op from random inputs; the test reduces it to a scalar
with a fixed random weighting R (L = sum(R o op(inputs))), derives dL/dinput
symbolically, compiles loss and gradients with the NumPy backend, and checks
the gradients against finite differences of the compiled loss; then the same
program runs on every backend (``compare_backends``). ``tests/test_op_tables.py``
checks that every node class occurs in some case.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import diff
from symgrad import expr as E
from tests.codegen.parity import compare_backends

n = E.batch()
x, y = sp.symbols("x y", real=True)


def _m(name, r, c):
    return E.matrix(name, r, c)


A, B, C = _m("A", n, 3), _m("B", 3, 4), _m("C", 4, 2)
A2 = _m("A2", n, 3)
A3 = _m("A3", n, 3)
v = _m("v", 1, 3)
u = _m("u", n, 1)
s = _m("s", 1, 1)
I = _m("I", n, 3)  # row numbers of a table of 3 rows (the "gather" cases' extra input)
A12, C2 = _m("A12", n, 5), _m("C2", 5, 6)

# name -> (builder, inputs, domain); domain maps a standard normal sample to valid inputs
CASES = {
    "matmul": (lambda: E.matmul(A, B), [A, B], None),
    "matmul_chain": (lambda: E.matmul(A, B, C), [A, B, C], None),
    "matmul_scaled": (lambda: E.scale(sp.Rational(5, 2) / n, E.matmul(A, B)), [A, B], None),
    "matmul_transposed": (lambda: E.matmul(E.transpose(A), A2), [A, A2], None),
    "add": (lambda: E.add(A, A2, A3), [A, A2, A3], None),
    "sub": (lambda: E.sub(A, A2), [A, A2], None),
    "scale": (lambda: E.scale(-3, A), [A], None),
    "hadamard": (lambda: E.hadamard(A, A2, A3), [A, A2, A3], None),
    "hadamard_square": (lambda: E.hadamard(A, A), [A], None),
    "transpose": (lambda: E.transpose(A), [A], None),
    "add_bias": (lambda: E.add_bias(A, v), [A, v], None),
    "broadcast_cols": (lambda: E.add(A, E.broadcast_cols(u, 3)), [A, u], None),
    "fill": (lambda: E.add(A, E.fill(s, n, 3)), [A, s], None),
    "sum_all": (lambda: E.fill(E.total(A), n, 3), [A], None),
    "col_sum": (lambda: E.col_sum(A), [A], None),
    "row_sum": (lambda: E.row_sum(A), [A], None),
    "mean": (lambda: E.mean(A, axis=0), [A], None),
    "softmax": (lambda: E.softmax(A), [A], None),
    "log_softmax": (lambda: E.log_softmax(A), [A], None),
    "named": (lambda: E.name("Z", E.matmul(A, B)), [A, B], None),
    "concat": (lambda: E.concat(A, E.matmul(A2, B), A), [A, A2, B], None),
    "column_slice": (lambda: E.column_slice(E.matmul(A, B), 1, 2), [A, B], None),
    "batchnorm": (lambda: E.standardize(E.matmul(A, B), 0, sp.Rational(1, 1000)), [A, B], None),
    "layernorm": (lambda: E.standardize(E.matmul(A, B), 1, sp.Rational(1, 1000)), [A, B], None),
    "layernorm_input": (lambda: E.standardize(A, 1, sp.Float(1e-5)), [A], None),
    # indices: a fixed matrix of row numbers (I, below), not differentiated
    "gather": (lambda: E.gather(E.matmul(B, C), I), [B, C], None),
    "scatter_add": (lambda: E.scatter_add(E.matmul(A12, C2), I, 3), [A12, C2], None),
    # a fixed step of a dropout stream: the mask is a constant, d(A o M)/dA = G o M
    "dropout": (lambda: E.hadamard(A, E.dropout_mask("drop", n, 3, 0.4, 2026, 0, 3)), [A], None),
    "binary_map": (
        lambda: E.elementwise(sp.Lambda((x, y), x * sp.exp(y / 3) + y**2), A, A2),
        [A, A2],
        None,
    ),
    "log": (lambda: E.elementwise(sp.Lambda(x, sp.log(x)), A), [A], lambda z: np.abs(z) + 0.5),
    "sqrt": (lambda: E.elementwise(sp.Lambda(x, sp.sqrt(x)), A), [A], lambda z: np.abs(z) + 0.5),
    "abs": (lambda: E.elementwise(sp.Lambda(x, sp.Abs(x)), A), [A], lambda z: z + np.sign(z) * 0.2),
    "power": (lambda: E.elementwise(sp.Lambda(x, x**3 - 2 * x), A), [A], None),
}
IMG = _m("IMG", n, 5 * 4 * 2)  # rows of 5x4 images of 2 channels
CONV = E.window((5, 4, 2), (3, 2), strides=(2, 1), dilation=(1, 2), padding="same")
POOL = E.window((5, 4, 2), (2, 2), strides=(2, 2), padding="same", depthwise=True, lowest=True)
K = _m("K", CONV.taps, 3)
WINDOW_ROWS = _m("WR", n * CONV.rows_per_image, CONV.taps)
CASES.update(
    {
        "im2col": (lambda: E.im2col(IMG, CONV), [IMG], None),
        "col2im": (lambda: E.col2im(WINDOW_ROWS, CONV), [WINDOW_ROWS], None),
        "reshape": (lambda: E.reshape(E.matmul(A, B), 2 * n, 2), [A, B], None),
        "row_max": (lambda: E.row_max(A), [A], None),
        "conv2d": (
            lambda: E.reshape(E.matmul(E.im2col(IMG, CONV), K), n, CONV.out_h * CONV.out_w * 3),
            [IMG, K],
            None,
        ),
        "max_pool": (
            lambda: E.reshape(E.row_max(E.im2col(IMG, POOL)), n, POOL.rows_per_image),
            [IMG],
            None,
        ),
    }
)
# every named activation is a case of its own; kinks avoided by pushing samples off 0
for _name in E.ACTIVATIONS:
    CASES[f"activation_{_name}"] = (
        lambda _name=_name: E.apply(_name, A),
        [A],
        lambda z: z + np.sign(z) * 0.1,
    )
CASES["activation_softmax"] = (lambda: E.apply("softmax", A), [A], None)


FIXED = {  # case -> inputs held fixed (not differentiated): row numbers of a 3-row table
    "gather": [(I, lambda rng, batch: rng.integers(0, 3, (batch, 3)).astype(float))],
    "scatter_add": [(I, lambda rng, batch: rng.integers(0, 3, (batch, 3)).astype(float))],
}


def _compiled(case):
    build, inputs, _ = CASES[case]
    node = build()
    R = E.matrix("R", *node.shape)
    loss = E.total(E.hadamard(R, node))
    grads = symgrad.grad(loss, inputs)
    outputs = {"loss": loss, **{f"d{w.name}": g for w, g in zip(inputs, grads)}}
    fixed = [sym for sym, _ in FIXED.get(case, [])]
    return symgrad.compile([*fixed, *inputs, R], outputs, dtype="float64"), node


def _fixed_values(case) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [sample(rng, 5) for _, sample in FIXED.get(case, [])]


def _sample(case, node):
    """Random inputs of a case (in its domain) and the weighting R, batch size 5."""
    _, inputs, domain = CASES[case]
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    batch = 5
    shapes = [tuple(int(sp.sympify(d).subs(n, batch)) for d in w.shape) for w in inputs]
    values = []
    for shape in shapes:
        z = rng.standard_normal(shape)
        values.append(np.ascontiguousarray(domain(z) if domain else z))
    r_shape = tuple(int(sp.sympify(d).subs(n, batch)) for d in node.shape)
    return values, rng.standard_normal(r_shape)


@pytest.mark.parametrize("case", sorted(CASES))
def test_vjp_matches_finite_differences(case, check_grad):
    fn, node = _compiled(case)
    values, R = _sample(case, node)

    fixed = _fixed_values(case)

    def loss(xs):
        return float(fn(*fixed, *[np.ascontiguousarray(a) for a in xs], R)[0][0, 0])

    out = fn(*fixed, *values, R)
    check_grad(loss, values, list(out[1:]), rtol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_backends_agree_on_loss_and_gradients(case):
    """The same op case, lowered once, on every backend (NumPy and LLVM), float64."""
    fn, node = _compiled(case)
    values, R = _sample(case, node)
    compare_backends(fn.program, [*_fixed_values(case), *values, R])


def test_a_subclass_uses_its_base_class_rule():
    class Renamed(E.Softmax):
        pass

    assert sp.sstr(symgrad.grad(E.total(Renamed(A)), A)) == sp.sstr(
        symgrad.grad(E.total(E.Softmax(A)), A)
    )


def test_missing_rule_names_the_node():
    class Mystery(sp.MatrixExpr):  # no rule of its own, none for a base class either
        shape = property(lambda self: self.args[0].shape)

    loss = E.total(Mystery(A))
    with pytest.raises(NotImplementedError, match="Mystery"):
        symgrad.grad(loss, A)


def test_shared_node_is_visited_once():
    Z = E.name("Z", E.matmul(A, B))
    loss = E.total(E.add(E.hadamard(Z, Z), Z))
    d = diff.derive(loss, [B])
    visits = [st.node for st in d.steps]
    assert visits.count(Z) == 1


def test_relu_subgradient_at_zero_is_zero():
    fn = symgrad.compile([A], {"g": symgrad.grad(E.total(E.apply("relu", A)), A)})
    (g,) = fn(np.zeros((2, 3)))
    assert np.all(g == 0.0)


def test_abs_subgradient_at_zero_is_zero():
    loss = E.total(E.elementwise(sp.Lambda(x, sp.Abs(x)), A))
    fn = symgrad.compile([A], {"g": symgrad.grad(loss, A)})
    (g,) = fn(np.array([[0.0, -2.0, 3.0]]))
    assert g.tolist() == [[0.0, -1.0, 1.0]]


def test_unused_parameter_has_zero_gradient():
    W_unused = E.matrix("W_unused", 3, 3)
    g = symgrad.grad(E.total(A), W_unused)
    assert g == sp.ZeroMatrix(3, 3)
    fn = symgrad.compile([A, W_unused], {"g": g})
    (out,) = fn(np.ones((4, 3)), np.ones((3, 3)))
    assert out.shape == (3, 3) and not out.any()


def test_non_scalar_loss_is_rejected():
    with pytest.raises(ValueError, match=r"scalar loss of shape \(1, 1\).*\(n, 3\)"):
        symgrad.grad(A, A)


def test_non_matrix_loss_is_rejected():
    with pytest.raises(TypeError, match="matrix expression"):
        symgrad.grad(sp.Symbol("q"), A)


def test_symbol_with_two_shapes_is_rejected():
    other = E.matrix("A", n, 4)
    loss = E.add(E.total(A), E.total(other))
    with pytest.raises(ValueError, match=r"'A' is used with two shapes: \(n, 3\) and \(n, 4\)"):
        symgrad.grad(loss, A)


def test_gradient_wrt_non_symbol_is_rejected():
    with pytest.raises(TypeError, match="matrix symbols"):
        symgrad.grad(E.total(A), E.matmul(A, B))
