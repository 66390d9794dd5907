"""Weights the Keras way: the (units,) bias layout, variables, layer weights, get_layer."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import expr as E
from symgrad.callbacks import LambdaCallback
from symgrad.layers import Dense
from symgrad.models import Sequential, load_model
from symgrad.optimizers import SGD
from tests.nn.helpers import BACKEND, blobs, mlp, weights_equal


def keras_layout(rng, features=4, hidden=6, classes=3) -> list[np.ndarray]:
    """Arrays shaped as Keras's get_weights() gives them: kernels (in, units), biases (units,)."""
    return [
        rng.standard_normal((features, hidden)),
        rng.standard_normal(hidden),
        rng.standard_normal((hidden, classes)),
        rng.standard_normal(classes),
    ]


def test_biases_are_vectors_in_get_weights_and_variables():
    model = mlp()
    assert [w.shape for w in model.get_weights()] == [(4, 6), (6,), (6, 3), (3,)]
    assert [w.shape for w in model.weights] == [(4, 6), (6,), (6, 3), (3,)]
    assert [w.matrix_shape for w in model.weights] == [(4, 6), (1, 6), (6, 3), (1, 3)]
    assert [w.name for w in model.weights] == [
        "dense/kernel",
        "dense/bias",
        "dense_1/kernel",
        "dense_1/bias",
    ]
    assert model.count_params() == 4 * 6 + 6 + 6 * 3 + 3


def test_keras_layout_weights_give_keras_predictions(rng):
    """set_weights takes Keras's arrays as they are: X W + b with b a vector."""
    model = mlp()
    arrays = keras_layout(rng)
    model.set_weights(arrays)
    x, _ = blobs(rng, n=10)
    hidden = np.tanh(x @ arrays[0] + arrays[1])
    logits = hidden @ arrays[2] + arrays[3]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12, atol=1e-14)
    assert weights_equal(model.get_weights(), arrays)


def test_the_one_row_layout_is_accepted_too(rng):
    model = mlp()
    arrays = keras_layout(rng)
    model.set_weights([a.reshape(1, -1) if a.ndim == 1 else a for a in arrays])
    assert weights_equal(model.get_weights(), arrays)


def test_a_bias_of_the_wrong_length_is_refused_naming_both_layouts(rng):
    model = mlp()
    before = model.get_weights()
    arrays = keras_layout(rng)
    arrays[1] = np.zeros(5)
    with pytest.raises(
        ValueError,
        match=r"Weight dense/bias has shape \(6,\) \(or \(1, 6\)\)\. "
        r"Received: an array of shape \(5,\)",
    ):
        model.set_weights(arrays)
    assert weights_equal(model.get_weights(), before)


def test_save_weights_writes_keras_layout_and_round_trips(rng, tmp_path):
    model = mlp(optimizer="adam")
    x, labels = blobs(rng, n=20)
    model.fit(x, np.eye(3)[labels], epochs=1, batch_size=8, verbose=0)
    model.save_weights(tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as stored:
        assert stored["dense/bias"].shape == (6,)
        assert stored["dense_1/bias"].shape == (3,)
        assert stored["optimizer/dense/bias/momentum"].shape == (
            6,
        )  # slots are shaped like their weight
    other = mlp(optimizer="adam", seed=1)
    other.load_weights(tmp_path / "w.npz")
    assert weights_equal(other.get_weights(), model.get_weights())
    other.fit(x, np.eye(3)[labels], epochs=1, batch_size=8, verbose=0, shuffle=False)
    model.fit(x, np.eye(3)[labels], epochs=1, batch_size=8, verbose=0, shuffle=False)
    assert weights_equal(other.get_weights(), model.get_weights())  # same slots, same steps


def old_layout_file(model: Sequential) -> io.BytesIO:
    """What save_weights wrote before biases became vectors: every array as a matrix (1, units)."""
    arrays = {w.path: w.value.copy() for w in model.weights}
    for var in model.optimizer.variables:
        arrays[f"optimizer/{var.path}"] = var.value.copy()
    arrays["optimizer/iterations"] = np.array(model.optimizer.iterations)
    assert arrays["dense/bias"].shape == (1, 6) and arrays[
        "optimizer/dense/bias/momentum"
    ].shape == (1, 6)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    return buffer


def test_files_in_the_old_one_row_layout_still_load(rng):
    model = mlp(optimizer="adam")
    x, labels = blobs(rng, n=20)
    y = np.eye(3)[labels]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    old = old_layout_file(model)
    other = mlp(optimizer="adam", seed=1)
    other.load_weights(old)
    assert weights_equal(other.get_weights(), model.get_weights())
    assert other.optimizer.iterations == model.optimizer.iterations
    for mine, theirs in zip(other.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(mine.value, theirs.value)  # the slots were loaded, not reset


def test_a_whole_model_file_keeps_its_weights(rng, tmp_path):
    model = mlp(optimizer="adam")
    model.set_weights(keras_layout(rng))
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert weights_equal(loaded.get_weights(), model.get_weights())


def test_variables_read_and_assign_in_keras_layout(rng):
    model = mlp()
    bias = model.weights[1]
    assert bias.numpy().shape == (6,)
    bias.assign(np.arange(6.0))
    np.testing.assert_array_equal(model.get_weights()[1], np.arange(6.0))
    bias.assign(np.ones((1, 6)))
    np.testing.assert_array_equal(model.get_weights()[1], np.ones(6))
    bias.numpy()[0] = 99.0  # a copy
    assert model.get_weights()[1][0] == 1.0
    with pytest.raises(
        ValueError, match=r"dense/bias has shape \(6,\).*Received: an array of shape \(3,\)"
    ):
        bias.assign(np.zeros(3))
    with pytest.raises(ValueError, match=r"dense/bias must contain only finite numbers"):
        bias.assign(np.full(6, np.nan))
    np.testing.assert_array_equal(model.get_weights()[1], np.ones(6))


def test_a_variable_of_an_unbuilt_model_gets_its_value_on_first_read():
    """Reading a weight draws every initial value, in layer order, from the compile seed."""
    a = Sequential([Dense(6, activation="tanh", input_dim=4), Dense(3)])
    a.compile(optimizer="sgd", loss="mse", backend=BACKEND, dtype="float64", seed=3)
    b = Sequential([Dense(6, activation="tanh", input_dim=4), Dense(3)])
    b.compile(optimizer="sgd", loss="mse", backend=BACKEND, dtype="float64", seed=3)
    last = a.weights[2].numpy()  # first read: the last kernel
    np.testing.assert_array_equal(last, b.get_weights()[2])
    with pytest.raises(ValueError, match=r"Variable dense/kernel has no value yet"):
        Dense(3, input_dim=2, name="dense")._variable(
            "kernel", (2, 3), a.layers[0].kernel_initializer
        ).numpy()


def test_layer_get_and_set_weights(rng):
    model = mlp()
    arrays = keras_layout(rng)
    layer = model.get_layer("dense_1")
    layer.set_weights(arrays[2:])
    assert weights_equal(layer.get_weights(), arrays[2:])
    assert weights_equal(model.get_weights()[2:], arrays[2:])
    before = model.get_weights()
    with pytest.raises(
        ValueError,
        match=r"Layer 'dense_1': set_weights expects 2 arrays "
        r"\(dense_1/kernel, dense_1/bias\)\. Received: 1 arrays",
    ):
        layer.set_weights(arrays[2:3])
    bad = [arrays[2], np.full(3, np.inf)]
    with pytest.raises(ValueError, match=r"dense_1/bias must contain only finite numbers"):
        layer.set_weights(bad)
    with pytest.raises(TypeError, match=r"set_weights takes a list of arrays"):
        layer.set_weights(arrays[2])
    assert weights_equal(model.get_weights(), before)  # checked before anything changes
    with pytest.raises(ValueError, match=r"Layer 'dense': set_weights: the layer has no weights"):
        Dense(3, name="dense").set_weights([np.zeros((2, 3)), np.zeros(3)])


def test_get_layer_by_name_and_index():
    model = mlp()
    first, last = model.layers
    assert model.get_layer("dense") is first
    assert model.get_layer(index=1) is last
    assert model.get_layer(index=-1) is last
    with pytest.raises(
        ValueError,
        match=r"No such layer: 'dens' in model 'sequential'\. "
        r"Its layers are: dense, dense_1",
    ):
        model.get_layer("dens")
    with pytest.raises(ValueError, match=r"Model 'sequential' has 2 layers\. Received: index=2"):
        model.get_layer(index=2)
    with pytest.raises(ValueError, match=r"get_layer takes a name or an index"):
        model.get_layer()


def test_trainable_weight_lists_follow_the_layers():
    model = mlp()
    assert model.trainable_weights == model.weights == model.trainable_variables
    assert model.non_trainable_weights == []
    model.get_layer("dense").trainable = False
    assert [w.path for w in model.trainable_weights] == ["dense_1/kernel", "dense_1/bias"]
    assert [w.path for w in model.non_trainable_weights] == ["dense/kernel", "dense/bias"]
    assert [w.trainable for w in model.weights] == [False, False, True, True]
    with pytest.raises(
        TypeError, match=r"trainable must be True or False\. Received: trainable='no'"
    ):
        model.get_layer("dense").trainable = "no"


def test_a_layer_frozen_before_build_makes_frozen_weights():
    layer = Dense(3, name="frozen")
    layer.trainable = False
    model = Sequential([Dense(2, input_dim=4), layer])
    assert [w.trainable for w in model.weights] == [True, True, False, False]


# --------------------------------------------------------------------------
# Frozen layers

BACKENDS = list(symgrad.compiler.BACKENDS)  # every registered backend


def frozen_mlp(backend: str, optimizer="adam", freeze=("dense",)) -> Sequential:
    model = Sequential(
        [Dense(6, activation="tanh", input_dim=4), Dense(5, activation="relu"), Dense(3)]
    )
    for name in freeze:
        model.get_layer(name).trainable = False
    model.compile(optimizer=optimizer, loss="mse", backend=backend, dtype="float64", seed=0)
    return model


def regression(rng, n=40):
    x = rng.standard_normal((n, 4))
    return x, rng.standard_normal((n, 3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("callbacks", [[], ["batch hook"]], ids=["epoch-calls", "step-calls"])
def test_a_frozen_layer_is_bit_for_bit_unchanged_by_fit(backend, callbacks, rng):
    """Both ways fit runs (one native call per epoch where the backend has it, or a step per
    batch): the frozen layer keeps its exact values, the others train."""
    x, y = regression(rng)
    model = frozen_mlp(backend, freeze=("dense_1",))
    before = model.get_weights()
    hooks = [LambdaCallback(on_train_batch_end=lambda batch, logs: None)] if callbacks else []
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=hooks)
    after = model.get_weights()
    assert weights_equal(after[2:4], before[2:4])
    for k in (0, 1, 4, 5):
        assert not np.array_equal(after[k], before[k])
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert [v.path.split("/")[0] for v in model.optimizer.variables][::2] == [
        "dense",
        "dense",
        "dense_2",
        "dense_2",
    ]  # no slots for the frozen layer


def test_freezing_matches_training_the_rest_by_hand(rng):
    """One SGD step with the first layer frozen: the trainable weights move by -lr * gradient,
    the gradients being those of the unfrozen model for the same weights."""
    x, y = regression(rng, n=16)
    free = frozen_mlp(BACKEND, optimizer=SGD(learning_rate=0.1), freeze=())
    frozen = frozen_mlp(BACKEND, optimizer=SGD(learning_rate=0.1))
    frozen.set_weights(free.get_weights())
    gradients = free.compute_gradients(x, y)
    assert [g.shape for g in frozen.compute_gradients(x, y)] == [(6, 5), (5,), (5, 3), (3,)]
    for mine, full in zip(frozen.compute_gradients(x, y), gradients[2:]):
        np.testing.assert_allclose(mine, full, rtol=1e-12, atol=1e-15)
    before = frozen.get_weights()
    frozen.train_on_batch(x, y)
    after = frozen.get_weights()
    assert weights_equal(after[:2], before[:2])
    for k in range(2, 6):
        np.testing.assert_allclose(after[k], before[k] - 0.1 * gradients[k], rtol=1e-12, atol=1e-15)


def test_frozen_weights_are_constants_of_the_formulas_and_summary():
    model = frozen_mlp(BACKEND)
    assert list(model.gradient_formulas()) == [
        "dense_1/kernel",
        "dense_1/bias",
        "dense_2/kernel",
        "dense_2/bias",
    ]
    assert "d_dense_kernel" not in model.step_source()
    assert "d_dense_1_kernel" in model.step_source()
    explained = model.explain()
    assert "dense_1_kernel" in explained and "d_dense_kernel" not in explained
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 83 " in text  # 4*6+6 + 6*5+5 + 5*3+3
    assert "Trainable params: 53\n" in text and "Non-trainable params: 30\n" in text


def test_changing_trainable_after_compile_takes_effect_at_the_next_compile(rng):
    x, y = regression(rng)
    model = frozen_mlp(BACKEND, freeze=())
    model.get_layer("dense").trainable = False
    before = model.get_weights()
    with pytest.warns(
        UserWarning,
        match=r"fit: the trainable flag of dense/kernel, dense/bias "
        r"changed after compile\(\).*Call compile\(\) again",
    ):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not np.array_equal(model.get_weights()[0], before[0])  # the old setting still holds
    model.compile(optimizer="adam", loss="mse", backend=BACKEND, dtype="float64")
    before = model.get_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert weights_equal(model.get_weights()[:2], before[:2])
    model.get_layer("dense").trainable = True  # unfreezing is also read at compile
    with pytest.warns(UserWarning, match=r"train_on_batch: the trainable flag of dense/kernel"):
        model.train_on_batch(x, y)
    assert weights_equal(model.get_weights()[:2], before[:2])


def test_a_model_with_every_layer_frozen_trains_nothing(rng):
    x, y = regression(rng)
    model = frozen_mlp(BACKEND, freeze=("dense", "dense_1", "dense_2"))
    before = model.get_weights()
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert weights_equal(model.get_weights(), before)
    assert history.history["loss"][0] == history.history["loss"][1] > 0
    assert model.gradient_formulas() == {} and model.compute_gradients(x, y) == []


def test_the_emitted_module_keeps_frozen_weights(tmp_path, rng, monkeypatch):
    model = frozen_mlp("numpy")
    symgrad.emit(model, tmp_path / "frozen_mlp.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    import frozen_mlp as module

    assert module.TRAINABLE == [w.path for w in model.weights[2:]]
    params = {w.path: w.as_matrix(w.numpy()) for w in model.weights}
    state = module.init_opt_state(params)
    assert set(state) == {"iterations"} | {v.path for v in model.optimizer.variables}
    x, y = regression(rng, n=8)
    _, gradients = module.loss_and_gradients(params, x, y)
    assert list(gradients) == module.TRAINABLE
    kept = {path: value.copy() for path, value in params.items()}
    module.train_step(params, state, x, y)
    model.train_on_batch(x, y)
    for w in model.weights:
        np.testing.assert_allclose(params[w.path], w.value, rtol=1e-12, atol=1e-15)
    for path in ("dense/kernel", "dense/bias"):
        np.testing.assert_array_equal(params[path], kept[path])


# --------------------------------------------------------------------------
# Calling a model


@pytest.mark.parametrize("backend", BACKENDS)
def test_calling_a_model_on_an_array_predicts_and_compiles_once(backend, rng, monkeypatch):
    model = frozen_mlp(backend, freeze=())
    x, _ = regression(rng, n=7)
    calls = []
    real = symgrad.compiler.compile
    monkeypatch.setattr(
        symgrad.compiler, "compile", lambda *a, **k: calls.append(k.get("name")) or real(*a, **k)
    )
    first = model(x)
    assert calls == ["predict_step"]
    np.testing.assert_array_equal(first, model.predict(x))
    assert first.dtype == np.float64 and first.shape == (7, 3)
    second = model(x[:3].tolist())  # any array-like, any number of rows
    assert calls == ["predict_step"]  # nothing compiled again
    np.testing.assert_array_equal(second, first[:3])
    model.compile(optimizer="adam", loss="mse", backend=backend, dtype="float32", seed=0)
    calls.clear()
    assert model(x).dtype == np.float32
    assert "predict_step" in calls  # a new dtype compiles its own program once
    calls.clear()
    model(x)
    assert calls == []
    with pytest.raises(
        ValueError, match=r"expects 4 input feature\(s\).*Received: x with shape \(7, 2\)"
    ):
        model(x[:, :2])


def test_calling_a_model_on_a_symbolic_tensor_gives_its_formula(rng):
    model = frozen_mlp(BACKEND, freeze=())
    x = E.matrix("X_in", 5, 4)
    out = model(x)
    assert tuple(out.shape) == (5, 3)
    assert {s.name for s in out.atoms(sp.MatrixSymbol)} == {
        "X_in",
        *(w.symbol.name for w in model.weights),
    }
    values = np.asarray(rng.standard_normal((5, 4)))
    f = symgrad.compile([x, *(w.symbol for w in model.weights)], {"P": out}, dtype="float64")
    weights = [w.as_matrix(a) for w, a in zip(model.weights, model.get_weights())]
    np.testing.assert_allclose(f(values, *weights)[0], model.predict(values), rtol=1e-12)
    with pytest.raises(
        ValueError,
        match=r"Model 'sequential' expects 1 expression\(s\) of rows of 4 features\. "
        r"Received: expression\(s\) of shape \(5, 3\)",
    ):
        model(E.matrix("Z", 5, 3))


def test_calling_an_unbuilt_model_symbolically_builds_it():
    model = Sequential([Dense(3, activation="relu"), Dense(2)])
    out = model(E.matrix("X", E.batch(), 6))
    assert model.built and model.input_dim == 6 and tuple(out.shape) == (E.batch(), 2)


def test_pytorch_weights_load_with_the_kernels_transposed():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)
    ).double()
    model = Sequential([Dense(6, activation="relu", input_dim=4), Dense(3)])
    model.compile(optimizer="sgd", loss="mse", backend=BACKEND, dtype="float64")
    arrays = []
    for linear in (
        net[0],
        net[2],
    ):  # PyTorch keeps weight as (out, in): Keras's kernel is its transpose
        arrays += [linear.weight.detach().numpy().T, linear.bias.detach().numpy()]
    model.set_weights(arrays)
    x = np.random.default_rng(0).standard_normal((9, 4))
    expected = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-12, atol=1e-12)
