"""Functional models: Input, layers called on symbolic tensors, Model(inputs, outputs)."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.compiler import BACKENDS
from symgrad.layers import Activation, Dense, Input
from symgrad.models import Model, Sequential
from symgrad.nn.callbacks import Callback
from symgrad.nn.functional import Functional
from symgrad.nn.merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from tests.nn.helpers import blobs


def residual():
    x = Input(shape=(4,), name="features")
    h = Dense(4, activation="tanh", name="hidden")(x)
    s = Add(name="skip")([x, h])
    return Model(x, Dense(3, activation="softmax", name="out")(s), name="residual")


def shared():
    """One Dense used twice: its kernel and bias get the sum of both paths' gradients."""
    x = Input(shape=(4,))
    twice = Dense(4, activation="tanh", name="twice")
    h = twice(twice(x))
    return Model(x, Dense(3, activation="softmax", name="out")(h), name="shared")


def merges():
    """Every merging layer on three branches of one input."""
    x = Input(shape=(4,))
    a = Dense(5, activation="tanh", name="a")(x)
    b = Dense(5, activation="sigmoid", name="b")(x)
    c = Dense(5, name="c")(x)
    m = Add()([Subtract()([a, b]), Multiply()([a, c]), Average()([b, c, a])])
    m = Add(name="add_2")([Maximum()([a, c]), Minimum()([b, c]), m])
    return Model(x, Dense(3, activation="softmax", name="out")(m), name="merges")


def concatenated():
    """Branches of different widths side by side, one of them twice."""
    x = Input(shape=(4,))
    a = Dense(3, activation="tanh", name="a")(x)
    b = Dense(2, activation="sigmoid", name="b")(x)
    h = Concatenate(name="cat")([a, x, b, a])
    return Model(x, Dense(3, activation="softmax", name="out")(h), name="concatenated")


def nested():
    """A model used as a layer of another, around a shared Dense."""
    inner_in = Input(shape=(5,))
    inner = Model(inner_in, Dense(5, activation="tanh", name="inner_dense")(inner_in), name="block")
    x = Input(shape=(4,))
    h = Dense(5, activation="relu", name="first")(x)
    h = Add(name="res")([h, inner(h)])
    return Model(x, Dense(3, activation="softmax", name="out")(inner(h)), name="nested")


GRAPHS = {
    "residual": residual,
    "shared": shared,
    "merges": merges,
    "concatenated": concatenated,
    "nested": nested,
}


def compiled(build, backend="numpy", optimizer="sgd"):
    model = build()
    model.compile(
        optimizer=optimizer,
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        backend=backend,
        dtype="float64",
        seed=3,
    )
    return model


def data(rng, n=9):
    x, labels = blobs(rng, n=n)
    return x / 3, np.eye(3)[labels]


def check_model_gradients(model, x, y, rng, check_grad):
    """compute_gradients against finite differences of the loss, at perturbed weights."""
    weights = [w + 0.3 * rng.standard_normal(w.shape) for w in model.get_weights()]
    model.set_weights(weights)
    grads = model.compute_gradients(x, y)

    def f(ws):
        model.set_weights(ws)
        return model.test_on_batch(x, y, return_dict=True)["loss"]

    check_grad(f, weights, grads, rtol=1e-6, directions=3)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("graph", list(GRAPHS))
def test_gradients_match_finite_differences(graph, backend, rng, check_grad):
    model = compiled(GRAPHS[graph], backend)
    x, y = data(rng)
    check_model_gradients(model, x, y, rng, check_grad)


def test_a_shared_layer_has_one_set_of_weights():
    model = shared()
    assert [w.path for w in model.weights] == [
        "twice/kernel",
        "twice/bias",
        "out/kernel",
        "out/bias",
    ]
    assert model.count_params() == 4 * 4 + 4 + 4 * 3 + 3
    formulas = model.forward_formulas()
    assert str(formulas["Z2"]) == "twice_bias + A1*twice_kernel"


def test_a_nested_model_brings_its_weights_once():
    model = nested()
    assert [w.path for w in model.weights] == [
        "first/kernel",
        "first/bias",
        "inner_dense/kernel",
        "inner_dense/bias",
        "out/kernel",
        "out/bias",
    ]
    assert [layer.name for layer in model.layers] == ["input_layer", "first", "block", "res", "out"]


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_backends_agree_and_the_loss_goes_down(graph, rng):
    x, labels = blobs(rng, n=60)
    y = np.eye(3)[labels]
    histories, weights = {}, {}
    for backend in ("numpy", "llvm"):
        model = compiled(GRAPHS[graph], backend, optimizer="adam")
        histories[backend] = model.fit(x, y, epochs=5, batch_size=16, verbose=0).history
        weights[backend] = model.get_weights()
        if backend == "llvm":  # the whole epoch ran as one native call
            assert model.history.params["native_epochs"]
    np.testing.assert_allclose(histories["llvm"]["loss"], histories["numpy"]["loss"], rtol=1e-9)
    for a, b in zip(weights["llvm"], weights["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    loss = histories["numpy"]["loss"]
    assert loss[-1] < loss[0]


def test_concatenate_puts_features_side_by_side(rng):
    model = compiled(concatenated)
    assert model.layers[3].name == "cat" and model.count_params() == 15 + 10 + 36 + 3
    x = rng.standard_normal((6, 4))
    ka, ba, kb, bb, ko, bo = model.get_weights()
    a, b = np.tanh(x @ ka + ba), 1 / (1 + np.exp(-(x @ kb + bb)))
    z = np.concatenate([a, x, b, a], axis=1) @ ko + bo
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict(x), p / p.sum(axis=1, keepdims=True), rtol=1e-12)
    formulas = model.gradient_formulas()
    assert str(formulas["out/kernel"]) == "1/n*M1.T*(P - Y)"
    assert str(model.forward_formulas()["M1"]) == "[A1 | X | A2 | A1]"
    # a's kernel gets the cotangent of both of its columns blocks
    assert "[:, 0:3]" in str(formulas["a/kernel"]) and "[:, 9:12]" in str(formulas["a/kernel"])


def test_predict_and_evaluate_agree_with_numpy(rng):
    model = compiled(residual)
    x, y = data(rng)
    kernel_h, bias_h, kernel_o, bias_o = model.get_weights()
    z = (x + np.tanh(x @ kernel_h + bias_h)) @ kernel_o + bias_o
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x), p, rtol=1e-12)
    loss, accuracy = model.evaluate(x, y)
    assert loss == pytest.approx(-np.mean(np.sum(y * np.log(p), axis=1)), rel=1e-12)
    assert accuracy == pytest.approx(np.mean(p.argmax(1) == y.argmax(1)))


def test_model_is_the_functional_class_and_a_keras_model():
    model = residual()
    assert type(model) is Functional
    assert isinstance(model, Model)
    assert isinstance(Sequential([Dense(2, input_dim=3)]), Model)


def test_gradient_formulas_and_explain_name_the_layers():
    model = compiled(residual)
    formulas = model.gradient_formulas()
    assert str(formulas["out/kernel"]) == "1/n*M1.T*(P - Y)"
    assert str(formulas["out/bias"]) == "1/n*colsum(P - Y)"
    # the skip connection adds no term: X feeds the output directly, not through hidden
    assert str(formulas["hidden/kernel"]) == "1/n*X.T*((P - Y)*out_kernel.T o (1 - A1**2))"
    text = model.explain()
    assert "M1 = X + A1" in text


def test_summary_shows_inbound_layers_and_formulas():
    lines = []
    shared().summary(print_fn=lines.append)
    text = lines[0]
    assert (
        " twice (Dense)                 (None, 4)            20   input_layer[0][0], twice[0][0]"
        in text
    )
    assert "Z1 = twice_bias + X*twice_kernel" in text
    assert "Z2 = twice_bias + A1*twice_kernel" in text
    assert " out (Dense)                   (None, 3)            15   twice[1][0]" in text
    assert "Total params: 35" in text


def test_save_and_load_weights(rng, tmp_path):
    model = compiled(nested)
    x, y = data(rng, n=20)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "nested.weights.npz"
    model.save_weights(path)
    other = compiled(nested)
    other.load_weights(path)
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x), other.predict(x))


def test_input_still_starts_a_sequential(rng):
    model = Sequential([Input(shape=(3,)), Dense(2)])
    assert model.input_dim == 3
    assert model.predict(rng.standard_normal((4, 3))).shape == (4, 2)


def test_unnamed_layers_get_keras_names():
    a, b = Input(shape=(3,)), Input(shape=(3,))
    d1 = Dense(2)(a)
    d2 = Dense(2)(b)
    Add()([d1, d2])
    assert (a.name, b.name, d1.name, d2.name) == (
        "input_layer",
        "input_layer_1",
        "dense",
        "dense_1",
    )
    assert [w.symbol.name for w in d2.node.layer.weights] == ["dense_1_kernel", "dense_1_bias"]


def test_a_symbolic_tensor_holds_its_expression():
    x = Input(shape=(3,), name="x")
    h = Activation("tanh")(x)
    assert h.shape == (None, 3)
    assert str(h.expr.body) == "tanh(X_x)"


# -- bad input


def test_layer_called_on_an_incompatible_tensor():
    x = Input(shape=(4,))
    dense = Dense(3, name="proj")
    dense(x)
    with pytest.raises(
        ValueError,
        match=r"Layer 'proj' \(Dense\) expects inputs of shape \(None, 4\). "
        r"Received: a tensor of shape \(None, 3\)",
    ):
        dense(Dense(3)(x))
    with pytest.raises(
        ValueError, match=r"Layer 'dense_1' \(Dense\) expects inputs of shape \(None, 5\)"
    ):
        Dense(2, input_dim=5)(x)


def test_merge_of_different_shapes():
    x = Input(shape=(4,))
    with pytest.raises(
        ValueError,
        match=r"Layer 'add' \(Add\) merges tensors of one shape. "
        r"Received: tensors of shapes \[\(None, 4\), \(None, 2\)\]",
    ):
        Add()([x, Dense(2)(x)])
    with pytest.raises(
        ValueError, match=r"Layer 'subtract' \(Subtract\) merges 2 tensors. Received: 3"
    ):
        Subtract()([x, x, x])
    with pytest.raises(ValueError, match=r"Layer 'add_1' \(Add\) merges at least 2 tensors"):
        Add()([x])
    with pytest.raises(ValueError, match=r"axis must be -1 \(or 1\). Received: axis=0"):
        Concatenate(axis=0)


def test_outputs_that_do_not_depend_on_an_input():
    a, b = Input(shape=(3,), name="a"), Input(shape=(3,), name="b")
    with pytest.raises(ValueError, match=r"do not depend on the input 'b'"):
        Model([a, b], Dense(2)(a))
    with pytest.raises(
        ValueError, match=r"depend on the input 'b', which is not in inputs=\['a'\]"
    ):
        Model(a, Add()([a, b]))


def test_a_layer_called_on_text_or_with_a_clashing_name():
    with pytest.raises(
        TypeError,
        match=r"takes symbolic tensors .*, NumPy arrays or tape tensors. Received: "
        r"'pixels' \(of type str\)",
    ):
        Dense(2)("pixels")
    x = Input(shape=(3,))
    Dense(2, name="d")(x)
    with pytest.raises(ValueError, match=r"Two layers of one model are named 'd'"):
        Dense(2, name="d")(x)


def test_model_inputs_must_be_inputs():
    x = Input(shape=(3,))
    h = Dense(2, name="h")(x)
    with pytest.raises(ValueError, match=r"Model inputs must come from Input.*layer 'h'"):
        Model(h, Dense(2)(h))


class _Count(Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def test_fit_with_batch_callbacks_runs_step_by_step(rng):
    model = compiled(shared, "llvm")
    x, y = data(rng, n=20)
    count = _Count()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[count])
    assert count.batches == 3
    assert not model.history.params["native_epochs"]


# -- several inputs and outputs


def two_in_two_out():
    """Two inputs joined, a classification head and a regression head sharing the trunk."""
    a, b = Input(shape=(3,), name="a"), Input(shape=(2,), name="b")
    h = Dense(4, activation="tanh", name="h")(Concatenate(name="cat")([a, b]))
    cls = Dense(3, activation="softmax", name="cls")(h)
    reg = Dense(1, name="reg")(Add(name="mix")([h, Dense(4, name="hb")(b)]))
    return Model([a, b], [cls, reg], name="two")


def nested_two_inputs():
    """A two-input model used as a layer, its second input fed twice from outside."""
    ia, ib = Input(shape=(3,), name="ia"), Input(shape=(3,), name="ib")
    inner = Model(
        [ia, ib], Multiply(name="gate")([ia, Dense(3, activation="sigmoid", name="g")(ib)])
    )
    x = Input(shape=(3,), name="x")
    h = inner([x, Dense(3, activation="tanh", name="pre")(x)])
    return Model(
        x, [Dense(2, activation="softmax", name="p")(h), Dense(1, name="q")(h)], name="outer"
    )


def multi_data(rng, n=12):
    return (
        {"a": rng.standard_normal((n, 3)), "b": rng.standard_normal((n, 2))},
        {"cls": rng.integers(0, 3, n), "reg": rng.standard_normal(n)},
    )


def compile_two(model, backend="numpy", metrics=None, optimizer="sgd"):
    model.compile(
        optimizer=optimizer,
        loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
        loss_weights={"cls": 1.0, "reg": 0.5},
        metrics=metrics,
        backend=backend,
        dtype="float64",
        seed=2,
    )
    return model


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_two_inputs_two_outputs_gradients_match_finite_differences(backend, rng, check_grad):
    model = compile_two(two_in_two_out(), backend)
    x, y = multi_data(rng)
    check_model_gradients(model, x, y, rng, check_grad)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_nested_multi_input_model_gradients(backend, rng, check_grad):
    model = nested_two_inputs()
    model.compile(
        optimizer="sgd",
        loss=["categorical_crossentropy", "mae"],
        backend=backend,
        dtype="float64",
        seed=1,
    )
    x = rng.standard_normal((9, 3))
    y = [np.eye(2)[rng.integers(0, 2, 9)], rng.standard_normal((9, 1))]
    check_model_gradients(model, x, y, rng, check_grad)


def test_the_total_loss_is_the_weighted_sum_and_predict_gives_one_array_per_output(rng):
    model = compile_two(two_in_two_out(), metrics={"cls": ["accuracy"]})
    x, y = multi_data(rng)
    cls, reg = model.predict(x)
    assert cls.shape == (12, 3) and reg.shape == (12, 1)
    np.testing.assert_allclose(cls.sum(axis=1), 1.0)
    cce = -np.mean(np.log(cls[np.arange(12), y["cls"]]))
    mse = np.mean((reg[:, 0] - y["reg"]) ** 2)
    loss, _, _, accuracy = model.evaluate([x["a"], x["b"]], [y["cls"], y["reg"]])
    assert loss == pytest.approx(cce + 0.5 * mse, rel=1e-12)
    assert accuracy == pytest.approx(np.mean(cls.argmax(axis=1) == y["cls"]))
    logs = model.evaluate(x, y, return_dict=True)
    assert list(logs) == ["loss", "cls_loss", "reg_loss", "cls_accuracy"]  # as Keras names them
    assert logs["cls_loss"] == pytest.approx(cce, rel=1e-12)
    assert logs["reg_loss"] == pytest.approx(mse, rel=1e-12)
    formulas = model.gradient_formulas()
    assert str(formulas["cls/kernel"]) == "1/n*A1.T*(P_cls - Y_cls)"  # softmax + CCE fused
    assert str(formulas["reg/kernel"]) == "1/n*M2.T*(P_reg - Y_reg)"
    assert str(formulas["hb/kernel"]) == "1/n*X_b.T*(P_reg - Y_reg)*reg_kernel.T"


def test_several_outputs_agree_across_backends_and_train(rng):
    x, y = multi_data(rng, n=64)
    runs = {}
    for backend in ("numpy", "llvm"):
        model = compile_two(two_in_two_out(), backend, optimizer="adam")
        runs[backend] = (model.fit(x, y, epochs=6, batch_size=16, verbose=0).history, model)
    assert runs["llvm"][1].history.params["native_epochs"]  # one native call per epoch
    np.testing.assert_allclose(runs["llvm"][0]["loss"], runs["numpy"][0]["loss"], rtol=1e-9)
    for a, b in zip(runs["llvm"][1].get_weights(), runs["numpy"][1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    loss = runs["numpy"][0]["loss"]
    assert loss[-1] < loss[0]


def test_each_output_s_loss_is_logged_and_the_native_epoch_keeps_them(rng):
    """cls_loss and reg_loss in the History (each output's loss, without its weight), summing to
    the loss; with accuracy on one output the LLVM epoch is still one native call."""
    x, y = multi_data(rng, n=40)
    runs = {}
    for backend in ("numpy", "llvm"):
        model = compile_two(two_in_two_out(), backend, metrics={"cls": ["accuracy"]})
        runs[backend] = model.fit(x, y, epochs=3, batch_size=8, verbose=0, shuffle=False)
        h = runs[backend].history
        assert list(h) == ["loss", "cls_loss", "reg_loss", "cls_accuracy"]
        np.testing.assert_allclose(
            h["loss"], np.add(h["cls_loss"], np.multiply(0.5, h["reg_loss"])), rtol=1e-12
        )
    assert runs["llvm"].params["native_epochs"] and not runs["numpy"].params["native_epochs"]
    for key, values in runs["numpy"].history.items():
        np.testing.assert_allclose(runs["llvm"].history[key], values, rtol=1e-9, err_msg=key)


def test_missing_or_unknown_keys_in_fit_and_compile(rng):
    model = compile_two(two_in_two_out())
    x, y = multi_data(rng)
    with pytest.raises(
        ValueError, match=r"No data for the model input \['b'\]. Received: x with keys \['a'\]"
    ):
        model.fit({"a": x["a"]}, y, verbose=0)
    with pytest.raises(
        ValueError, match=r"No data for the model output \['reg'\]. Received: y with keys"
    ):
        model.fit(x, {"cls": y["cls"]}, verbose=0)
    with pytest.raises(ValueError, match=r"x has data for \['c'\], which is no input of the model"):
        model.predict({**x, "c": x["a"]})
    with pytest.raises(
        ValueError, match=r"The model has 2 inputs \['a', 'b'\]: pass x as a list of 2"
    ):
        model.predict(x["a"])
    with pytest.raises(
        ValueError, match=r"x\['b'\] and .* must have the same number of samples|same number"
    ):
        model.predict({"a": x["a"], "b": x["b"][:5]})
    with pytest.raises(ValueError, match=r"loss names no output of the model: \['clss'\]"):
        model.compile(loss={"clss": "mse", "reg": "mse"})
    with pytest.raises(
        ValueError, match=r"compile needs a loss for every output; none for \['reg'\]"
    ):
        model.compile(loss={"cls": "mse"})
    with pytest.raises(
        ValueError, match=r"loss needs one entry per output \(2: \['cls', 'reg'\]\)"
    ):
        model.compile(loss=["mse"])
    with pytest.raises(
        ValueError,
        match=r"loss_weights must be finite numbers >= 0. Received: loss_weights\['reg'\]=-1",
    ):
        model.compile(loss="mse", loss_weights=[1, -1])


def test_regularizers_of_a_shared_layer_count_its_weights_once_and_each_call(rng, check_grad):
    x = Input(shape=(4,))
    twice = Dense(
        4, activation="tanh", kernel_regularizer="l2", activity_regularizer="l1", name="h"
    )
    h = twice(twice(x))
    model = Model(x, Dense(3, activation="softmax", name="o")(Add()([x, h])))
    model.compile(optimizer="sgd", loss="categorical_crossentropy", dtype="float64", seed=0)
    xs, ys = data(rng)
    kernel, bias, ko, bo = model.get_weights()
    a1 = np.tanh(xs @ kernel + bias)
    a2 = np.tanh(a1 @ kernel + bias)
    z = (xs + a2) @ ko + bo
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    cce = -np.mean(np.sum(ys * np.log(p), axis=1))
    n = len(xs)
    expected = cce + 0.01 * np.sum(kernel**2) + 0.01 * (np.abs(a1).sum() + np.abs(a2).sum()) / n
    assert model.test_on_batch(xs, ys) == pytest.approx(expected, rel=1e-12)
    check_model_gradients(model, xs, ys, rng, check_grad)
