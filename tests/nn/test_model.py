"""Sequential: structure, names, summary, weights, formulas and generated code."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symgrad import expr as E
from symgrad.layers import Activation, Dense, Input
from symgrad.models import Sequential
from tests.nn.helpers import BACKEND, blobs, mlp, weights_equal


def test_keras_names_for_layers_weights_and_symbols():
    model = Sequential()
    model.add(Dense(units=4, input_dim=3))
    model.add(Activation("sigmoid"))
    model.add(Dense(units=1))
    model.add(Activation("sigmoid"))
    assert [layer.name for layer in model.layers] == [
        "dense",
        "activation",
        "dense_1",
        "activation_1",
    ]
    assert [w.path for w in model.weights] == [
        "dense/kernel",
        "dense/bias",
        "dense_1/kernel",
        "dense_1/bias",
    ]
    assert [w.symbol.name for w in model.weights] == [
        "dense_kernel",
        "dense_bias",
        "dense_1_kernel",
        "dense_1_bias",
    ]
    assert [w.shape for w in model.weights] == [(3, 4), (4,), (4, 1), (1,)]
    assert model.count_params() == 21


def test_summary_shows_shapes_params_and_formulas():
    model = Sequential(
        [Dense(4, input_dim=3), Activation("sigmoid"), Dense(1, activation="sigmoid", name="out")]
    )
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    assert text.splitlines()[0] == 'Model: "sequential"'
    assert (
        " dense (Dense)               (None, 4)              16   Z1 = dense_bias + X*dense_kernel"
        in text
    )
    assert " activation (Activation)     (None, 4)               0   A1 = sigmoid(Z1)" in text
    assert (
        " out (Dense)                 (None, 1)               5   Z2 = out_bias + A1*out_kernel"
        in text
    )
    assert "P = sigmoid(Z2)" in text
    assert "Total params: 21 (84 bytes as float32)" in text


def test_summary_of_an_unbuilt_model():
    model = Sequential([Dense(4), Dense(2)])
    lines = []
    model.summary(print_fn=lines.append)
    assert (
        " dense (Dense)               (None, 4)     ? (unbuilt)" in lines[0]
        and "Total params: 0" in lines[0]
    )


def test_lazy_build_from_the_first_data(rng):
    model = Sequential([Dense(5, activation="relu"), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", backend=BACKEND, seed=0)
    assert not model.built and model.weights == []
    x, labels = blobs(rng, n=10, features=7)
    model.fit(x, labels, epochs=1, verbose=0)
    assert model.built and model.input_dim == 7
    assert [w.shape for w in model.weights] == [(7, 5), (5,), (5, 3), (3,)]


def test_input_layer_and_build():
    model = Sequential([Input(shape=(3,)), Dense(2)])
    assert model.built and model.input_dim == 3 and len(model.layers) == 1
    other = Sequential([Dense(2)])
    other.build(input_shape=(None, 5))
    assert other.weights[0].shape == (5, 2)
    with pytest.raises(ValueError, match="expects 5 input feature"):
        other.build(input_dim=4)


def test_add_and_pop():
    model = Sequential([Dense(4, input_dim=3)])
    model.add(Dense(2))
    assert model.weights[-2].shape == (4, 2)
    layer = model.pop()
    assert layer.name == "dense_1" and model.output_dim == 4


def test_weights_default_initializers(rng):
    model = mlp("mse", features=30, hidden=20)
    kernel, bias = model.get_weights()[:2]
    limit = np.sqrt(6 / (30 + 20))  # glorot_uniform
    assert np.all(np.abs(kernel) <= limit) and kernel.std() > limit / 3
    assert np.all(bias == 0)


def test_get_weights_returns_copies():
    model = mlp("mse")
    weights = model.get_weights()
    weights[0][...] = 7
    assert not np.any(model.get_weights()[0] == 7)


def test_set_weights_then_predict(rng):
    model = Sequential([Dense(2, input_dim=3)])
    kernel = np.arange(6.0).reshape(3, 2)
    bias = np.array([[1.0, -1.0]])
    model.set_weights([kernel, bias])
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(model.predict(x), x @ kernel + bias, rtol=1e-6)
    np.testing.assert_allclose(model.predict_on_batch(x), x @ kernel + bias, rtol=1e-6)


def test_dtype_follows_compile(rng):
    model = mlp("mse", dtype="float32")
    assert {w.dtype for w in model.get_weights()} == {np.dtype("float32")}
    x, labels = blobs(rng, n=5)
    assert model.predict(x).dtype == np.float32
    model.compile(optimizer="sgd", loss="mse", dtype="float64", backend=BACKEND)
    assert {w.dtype for w in model.get_weights()} == {np.dtype("float64")}


def test_save_load_gives_identical_predictions(rng, tmp_path):
    from symgrad.models import load_model

    x = rng.standard_normal((9, 3))
    relu_sq = sp.Symbol("x") ** 2 / (1 + sp.Symbol("x") ** 2)
    model = Sequential([Dense(4, activation=relu_sq, input_dim=3), Dense(2, activation="softmax")])
    model.compile(
        optimizer="adam",
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        backend=BACKEND,
        seed=1,
    )
    model.fit(x, np.eye(2)[np.arange(9) % 2], epochs=2, verbose=0)
    model.save(tmp_path / "model.npz")
    loaded = load_model(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert weights_equal(loaded.get_weights(), model.get_weights())
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    model.save_weights(tmp_path / "weights.npz")
    fresh = Sequential([Dense(4, activation=relu_sq, input_dim=3), Dense(2, activation="softmax")])
    fresh.compile(optimizer="adam", loss="categorical_crossentropy", backend=BACKEND)
    fresh.load_weights(tmp_path / "weights.npz")
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


def test_gradient_formulas_are_named_after_the_layers():
    model = Sequential(
        [Dense(5, activation="sigmoid", input_dim=4), Dense(3, activation="softmax")]
    )
    model.compile(optimizer="sgd", loss="categorical_crossentropy", backend=BACKEND)
    formulas = model.gradient_formulas()
    assert list(formulas) == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
    assert str(formulas["dense_1/kernel"]) == "1/n*A1.T*(P - Y)"
    assert str(formulas["dense_1/bias"]) == "1/n*colsum(P - Y)"
    assert str(formulas["dense/kernel"]) == "1/n*X.T*((P - Y)*dense_1_kernel.T o A1*(1 - A1))"
    assert all(isinstance(f, sp.Basic) for f in formulas.values())
    forward = model.forward_formulas()
    assert [str(k) for k in forward] == ["Z1", "A1", "Z2", "P", "loss"]
    assert str(forward["loss"]) == "(-1/n)*sum(log_softmax(Z2) o Y)"


def test_explain_traces_the_chain_rule():
    model = mlp("categorical_crossentropy")
    text = model.explain()
    assert "Forward definitions:" in text and "log_softmax" in text and "dense_1_kernel" in text


def test_generated_step_source_is_readable_and_deterministic():
    a, b = (
        mlp("categorical_crossentropy", optimizer="adam"),
        mlp("categorical_crossentropy", optimizer="adam"),
    )
    source = a.step_source()
    assert source == b.step_source()
    program = str(a.compiled_step.program)  # the IR both backends print from
    for name in (
        "dense_kernel",
        "dense_1_bias",
        "Z1",
        "A1",
        "d_dense_kernel",
        "dense_kernel_momentum",
        "learning_rate",
    ):
        assert name in program
        if BACKEND == "numpy":
            assert name in source
    formulas = a.compiled_step.formulas
    assert str(formulas["loss"]) == "(-1/n)*sum(log_softmax(Z2) o Y)"
    assert "dense_kernel_new" in formulas


def loss_at(model, x, y):
    """``weights -> mean loss`` of ``model`` on ``(x, y)``, for finite differences."""

    def f(weights):
        model.set_weights(weights)
        return model.test_on_batch(x, y)

    return f


X_ = sp.Symbol("x")


@pytest.mark.parametrize(
    "activation",
    [X_ * E.scalar.sigmoid(X_), lambda v: v * E.scalar.sigmoid(v), sp.Lambda(X_, X_ * sp.tanh(X_))],
    ids=["expression", "callable", "lambda"],
)
def test_custom_activation_is_differentiated(activation, rng, check_grad):
    model = Sequential([Dense(3, activation=activation, input_dim=2), Dense(1)])
    model.compile(optimizer="sgd", loss="mse", backend=BACKEND, dtype="float64", seed=0)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal((6, 1))
    check_grad(loss_at(model, x, y), model.get_weights(), model.compute_gradients(x, y))
