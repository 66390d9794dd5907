"""Calling, weights and freezing for functional models (and models nested in them)."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from symgrad import expr as E
from symgrad.callbacks import LambdaCallback
from symgrad.compiler import BACKENDS
from symgrad.layers import Dense, Input
from symgrad.models import Model, Sequential
from symgrad.nn.merge import Add, Concatenate
from tests.nn.test_functional import data, multi_data, nested, shared, two_in_two_out


def compiled(model, backend="numpy", **kwargs):
    model.compile(
        optimizer=kwargs.pop("optimizer", "adam"),
        loss=kwargs.pop("loss", "categorical_crossentropy"),
        backend=backend,
        dtype="float64",
        seed=4,
        **kwargs,
    )
    return model


def with_sequential():
    """A Sequential used as a layer of a functional model, beside a skip connection."""
    block = Sequential([Dense(5, activation="tanh", name="s1"), Dense(4, name="s2")], name="block")
    x = Input(shape=(4,), name="x")
    h = Add(name="skip")([x, block(x)])
    return Model(x, Dense(3, activation="softmax", name="out")(h), name="outer"), block


def count_compiles(monkeypatch) -> list:
    calls = []
    real = symgrad.compiler.compile
    monkeypatch.setattr(
        symgrad.compiler, "compile", lambda *a, **k: calls.append(k.get("name")) or real(*a, **k)
    )
    return calls


# --------------------------------------------------------------------------
# model(x)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_calling_a_functional_model_on_arrays_compiles_predict_once(backend, rng, monkeypatch):
    model = compiled(nested(), backend)
    x, _ = data(rng)
    calls = count_compiles(monkeypatch)
    first = model(x)
    assert calls == ["predict_step"]
    np.testing.assert_array_equal(first, model.predict(x))
    np.testing.assert_array_equal(model(x[:4].tolist()), first[:4])
    assert calls == ["predict_step"]  # reused for any number of rows
    with pytest.raises(ValueError, match=r"expects 4 input feature\(s\).*Received: x with shape"):
        model(x[:, :3])


def test_calling_a_model_with_two_inputs_and_outputs_on_arrays(rng, monkeypatch):
    model = two_in_two_out()
    x, _ = multi_data(rng)
    cls, reg = model(x)  # a dict by input name
    expected = model.predict(x)
    np.testing.assert_array_equal(cls, expected[0])
    np.testing.assert_array_equal(reg, expected[1])
    again = model([x["a"], x["b"]])  # or a list in input order
    np.testing.assert_array_equal(again[1], reg)
    with pytest.raises(ValueError, match=r"No data for the model input \['b'\]"):
        model({"a": x["a"]})


def test_calling_a_functional_model_on_expressions_gives_its_formulas(rng):
    model = two_in_two_out()
    a, b = E.matrix("A", 6, 3), E.matrix("B", 6, 2)
    cls, reg = model([a, b])
    assert tuple(cls.shape) == (6, 3) and tuple(reg.shape) == (6, 1)
    weights = model.weights
    f = symgrad.compile(
        [a, b, *(w.symbol for w in weights)], {"cls": cls, "reg": reg}, dtype="float64"
    )
    xa, xb = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    values = [w.as_matrix(v).astype(np.float64) for w, v in zip(weights, model.get_weights())]
    got = f(xa, xb, *values)  # the model is float32: compare at its precision
    expected = model.predict([xa, xb])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ValueError,
        match=r"Model 'two' expects 2 expression\(s\) of rows of 3, 2 features\. "
        r"Received: expression\(s\) of shape \(6, 3\)",
    ):
        model(a)


def test_a_functional_model_on_a_symbolic_tensor_is_a_layer():
    inner = two_in_two_out()
    a, b = Input(shape=(3,), name="x1"), Input(shape=(2,), name="x2")
    cls, reg = inner([a, b])
    assert cls.shape == (None, 3) and reg.shape == (None, 1)
    outer = Model([a, b], Concatenate(name="both")([cls, reg]), name="outer")
    assert outer.get_layer("two") is inner


def test_a_sequential_is_a_layer_of_a_functional_model(rng):
    model, block = with_sequential()
    x, _ = data(rng)
    compiled(model)
    w = {v.path: v.numpy() for v in model.weights}
    h = x + np.tanh(x @ w["s1/kernel"] + w["s1/bias"]) @ w["s2/kernel"] + w["s2/bias"]
    logits = h @ w["out/kernel"] + w["out/bias"]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model(x), expected, rtol=1e-12)
    # the block alone (float32, never compiled) predicts with the same weights
    np.testing.assert_allclose(block(x), h - x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(x), expected, rtol=1e-6)  # the weights were cast back
    assert [layer.name for layer in model.layers] == ["x", "block", "skip", "out"]


def test_sequential_gradients_inside_a_functional_model(rng, check_grad):
    model, _ = with_sequential()
    compiled(model, optimizer="sgd")
    x, y = data(rng)
    weights = [w + 0.3 * rng.standard_normal(w.shape) for w in model.get_weights()]
    model.set_weights(weights)

    def f(ws):
        model.set_weights(ws)
        return model.test_on_batch(x, y)

    check_grad(f, weights, model.compute_gradients(x, y), rtol=1e-6, directions=3)


def test_a_model_called_inside_a_gradient_tape_is_recorded(rng):
    from symgrad import losses, ops

    model = compiled(nested(), optimizer="sgd")
    x, y = data(rng)
    with symgrad.GradientTape() as tape:
        loss = ops.reduce_mean(losses.categorical_crossentropy(y, model(x)))
    grads = tape.gradient(loss, model.trainable_weights)
    for g, expected in zip(grads, model.compute_gradients(x, y), strict=True):
        np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(model(x), model.predict(x))  # no tape: arrays again


# --------------------------------------------------------------------------
# weights, get_layer


def test_weight_lists_of_a_graph_hold_a_shared_layer_once():
    model = shared()
    paths = ["twice/kernel", "twice/bias", "out/kernel", "out/bias"]
    assert [w.path for w in model.weights] == paths
    assert [w.shape for w in model.weights] == [(4, 4), (4,), (4, 3), (3,)]
    assert [w.path for w in model.trainable_weights] == paths
    assert model.trainable_variables == model.trainable_weights
    assert model.non_trainable_weights == []
    assert model.count_params() == 16 + 4 + 12 + 3
    model.get_layer("twice").trainable = False
    assert [w.path for w in model.trainable_weights] == ["out/kernel", "out/bias"]
    assert [w.path for w in model.non_trainable_weights] == ["twice/kernel", "twice/bias"]


def test_weight_lists_of_nested_models():
    model = nested()
    inner = model.get_layer("block")
    assert inner.weights == model.weights[2:4]
    inner.trainable = False
    assert not inner.trainable and not inner.get_layer("inner_dense").trainable
    assert [w.path for w in model.non_trainable_weights] == [
        "inner_dense/kernel",
        "inner_dense/bias",
    ]
    model.trainable = False
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 6
    with pytest.raises(TypeError, match=r"trainable must be True or False. Received: trainable=0"):
        model.trainable = 0


def test_get_layer_of_a_functional_model():
    model = nested()
    assert model.get_layer(index=1) is model.get_layer("first")
    assert model.get_layer(index=-1).name == "out"
    with pytest.raises(ValueError, match=r"No such layer: 'inner_dense' in model 'nested'\. "):
        model.get_layer("inner_dense")  # inside the nested model: ask it
    with pytest.raises(ValueError, match=r"Model 'nested' has 5 layers\. Received: index=5"):
        model.get_layer(index=5)


def test_bias_layout_round_trips_in_a_functional_model(rng, tmp_path):
    model = compiled(nested())
    arrays = [rng.standard_normal(w.shape) for w in model.weights]
    assert [a.ndim for a in arrays] == [2, 1, 2, 1, 2, 1]
    model.set_weights(arrays)
    model.save_weights(tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as f:
        assert f["out/bias"].shape == (3,)
    other = compiled(nested())
    other.load_weights(tmp_path / "w.npz")
    for a, b in zip(other.get_weights(), arrays):
        np.testing.assert_array_equal(a, b)
    other.set_weights([a.reshape(1, -1) if a.ndim == 1 else a for a in arrays])  # one-row layout
    for a, b in zip(other.get_weights(), arrays):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# freezing


def frozen_graph(backend, which: str):
    """The nested model with its inner model, one inner layer of a Sequential, or a shared
    layer frozen before compile."""
    if which == "sequential":
        model, block = with_sequential()
        block.get_layer("s1").trainable = False
        frozen = ["s1/kernel", "s1/bias"]
    elif which == "nested":
        model = nested()
        model.get_layer("block").trainable = False
        frozen = ["inner_dense/kernel", "inner_dense/bias"]
    else:
        model = shared()
        model.get_layer("twice").trainable = False
        frozen = ["twice/kernel", "twice/bias"]
    return compiled(model, backend, metrics=["accuracy"]), frozen


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("which", ["nested", "shared", "sequential"])
@pytest.mark.parametrize("hooks", [False, True], ids=["epoch-calls", "step-calls"])
def test_a_frozen_layer_of_a_graph_is_unchanged_by_fit(backend, which, hooks, rng):
    model, frozen = frozen_graph(backend, which)
    x, y = data(rng, n=40)
    before = {w.path: w.numpy() for w in model.weights}
    callbacks = [LambdaCallback(on_train_batch_end=lambda batch, logs: None)] if hooks else []
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=callbacks)
    native = backend == "llvm" and not hooks
    assert model.history.params["native_epochs"] is native
    for w in model.weights:
        if w.path in frozen:
            assert np.array_equal(w.numpy(), before[w.path]), w.path
        else:
            assert not np.allclose(w.numpy(), before[w.path]), w.path
    assert {v.path.rsplit("/", 1)[0] for v in model.optimizer.variables}.isdisjoint(frozen)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_gradients_of_the_unfrozen_weights_match_finite_differences(backend, rng, check_grad):
    model, frozen = frozen_graph(backend, "nested")
    x, y = data(rng)
    trainable = model.trainable_weights
    assert [w.path for w in trainable] == [
        "first/kernel",
        "first/bias",
        "out/kernel",
        "out/bias",
    ]
    grads = model.compute_gradients(x, y)
    assert [g.shape for g in grads] == [w.shape for w in trainable]

    def f(ws):
        for w, value in zip(trainable, ws):
            w.assign(value)
        return model.test_on_batch(x, y, return_dict=True)["loss"]

    check_grad(f, [w.numpy() for w in trainable], grads, rtol=1e-6, directions=3)
    assert set(model.gradient_formulas()) == {w.path for w in trainable}
    assert "inner_dense_kernel" in str(model.gradient_formulas()["first/kernel"])  # a constant


def test_freezing_a_nested_model_after_compile_warns_until_recompiled(rng):
    model = compiled(nested())
    x, y = data(rng)
    model.get_layer("block").trainable = False
    with pytest.warns(UserWarning, match=r"fit: the trainable flag of inner_dense/kernel"):
        model.fit(x, y, epochs=1, verbose=0)
    compiled(model)
    before = model.get_layer("block").get_weights()
    model.fit(x, y, epochs=1, verbose=0)  # no warning (warnings are errors)
    for a, b in zip(model.get_layer("block").get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_summary_of_a_graph_counts_frozen_weights():
    model = nested()
    model.get_layer("block").trainable = False
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Trainable params: 43" in text and "Non-trainable params: 30" in text
