"""GradientTape, losses as functions and apply_gradients: Keras's custom training loop.

Tape gradients are checked against ``compute_gradients`` (the compiled fit path),
finite differences (float64, random directions) and PyTorch autograd (skipped
without torch); apply_gradients against ``train_on_batch`` bit for bit, for every
optimizer of ``OPTIMIZERS``.
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest

import symgrad
from symgrad import losses, ops
from symgrad.nn import optimizers as optimizers_module
from symgrad.nn import seeds
from symgrad.nn.losses import FUNCTIONS, LOSSES
from tests.nn import loss_references
from tests.nn.helpers import BACKEND, OUTPUT_FOR_LOSS, blobs, mlp, targets_for

HAS_TORCH = importlib.util.find_spec("torch") is not None


def call(model, x):
    """``model(x)`` on the tape."""
    return model(x)


def tape_loss(model, loss_name, x, y):
    """(tape, mean loss tensor) of ``model`` on ``(x, y)`` with the loss function ``loss_name``."""
    fn = FUNCTIONS[losses.get(loss_name).name]
    with symgrad.GradientTape() as tape:
        value = ops.reduce_mean(fn(y, call(model, x)))
    return tape, value


# --------------------------------------------------------------------------
# Losses as functions


def _probabilities(rng, n, k):
    return rng.dirichlet(np.ones(k), n)


REFERENCE = loss_references.PER_SAMPLE  # Keras's formulas (no clipping needed in (0, 1))


def _targets(name, rng, n, k):
    return loss_references.targets(loss_references.TARGETS.get(name, "real"), rng, n, k)


def test_every_loss_has_a_function():
    names = {cls().name for cls in LOSSES.values()}
    assert names == set(FUNCTIONS) == set(REFERENCE)
    for name in names:
        assert getattr(losses, name) is FUNCTIONS[name]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_loss_function_on_arrays_matches_numpy(name, rng):
    y, p = _targets(name, rng, 7, 3), _probabilities(rng, 7, 3)
    values = FUNCTIONS[name](y, p)
    assert values.shape == (7,)
    np.testing.assert_allclose(values, REFERENCE[name](y, p), rtol=1e-12)
    # the batch mean is the loss compile trains on
    loss = losses.get(name)
    with symgrad.GradientTape() as tape:
        mean = ops.reduce_mean(FUNCTIONS[name](y, tape.as_tensor(p, base="P", batch=True)))
    symbolic = loss(*_symbols(tape, mean))
    assert float(mean) == pytest.approx(tape.evaluate(symbolic).item(), rel=1e-12)


def _symbols(tape, mean):
    """(Y, P) leaves of a loss tensor, for the loss class's own (1, 1) formula."""
    leaves = {s.name: s for s in tape.leaves}
    return leaves["Y"], leaves["P"]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_loss_functions_stay_finite_at_extremes(name):
    k = 3
    y = _targets(name, np.random.default_rng(1), 4, k)
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
    assert np.all(np.isfinite(FUNCTIONS[name](y, p)))


def test_from_logits_equals_softmax_then_loss(rng):
    y, z = np.eye(4)[rng.integers(0, 4, 6)], 30 * rng.standard_normal((6, 4))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    exact = -np.sum(
        y
        * (
            z
            - z.max(1, keepdims=True)
            - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
        ),
        1,
    )
    np.testing.assert_allclose(
        losses.categorical_crossentropy(y, z, from_logits=True), exact, rtol=1e-12
    )


def test_loss_function_checks_targets_as_fit_does(rng):
    p = _probabilities(rng, 3, 3)
    with pytest.raises(ValueError, match=r"class labels in \[0, 3\).*y\[1\]=7"):
        losses.sparse_categorical_crossentropy(np.array([0, 7, 1]), p)
    with pytest.raises(ValueError, match=r"must have shape \(samples, 3\).*\(3, 2\)"):
        losses.categorical_crossentropy(np.eye(2)[[0, 1, 0]], p)


# --------------------------------------------------------------------------
# Tape gradients


@pytest.mark.parametrize("loss_name", sorted(OUTPUT_FOR_LOSS))
def test_tape_gradients_equal_compute_gradients(loss_name, rng):
    x, labels = blobs(rng, n=12)
    y = targets_for(loss_name, labels, 3, rng)
    model = mlp(loss=loss_name)
    tape, value = tape_loss(model, loss_name, x, y)
    grads = tape.gradient(value, model.weights)
    expected = model.compute_gradients(x, y)
    for g, e, w in zip(grads, expected, model.weights):
        assert g.shape == np.shape(e) == tuple(w.shape)
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)
    assert float(value) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-10)


@pytest.mark.parametrize("backend", sorted(symgrad.compiler.BACKENDS))
def test_backends_agree(backend, rng):
    x, labels = blobs(rng, n=12)
    model = mlp()
    with symgrad.GradientTape(backend=backend) as tape:
        value = ops.reduce_mean(losses.categorical_crossentropy(np.eye(3)[labels], call(model, x)))
    for g, e in zip(
        tape.gradient(value, model.weights), model.compute_gradients(x, np.eye(3)[labels])
    ):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", sorted(symgrad.compiler.BACKENDS))
def test_programs_without_a_batch_and_updates_run_on_every_backend(backend, rng):
    a = rng.standard_normal((3, 2))
    with symgrad.GradientTape(backend=backend) as tape:
        tape.watch(a)
        value = ops.reduce_sum(ops.square(a))
    np.testing.assert_allclose(tape.gradient(value, a), 2 * a, rtol=1e-12)
    model = symgrad.Sequential([symgrad.Dense(2, input_dim=3)])
    model.compile(optimizer="sgd", loss="mse", backend=backend, dtype="float64")
    before = model.get_weights()
    grads = [np.ones_like(w) for w in before]
    model.optimizer.apply_gradients(zip(grads, model.weights))
    for b, w in zip(before, model.get_weights()):
        np.testing.assert_allclose(w, b - 0.01, rtol=1e-12)


def test_tape_gradients_against_finite_differences(check_grad, rng):
    x, labels = blobs(rng, n=10)
    y = np.eye(3)[labels]
    model = mlp()
    with symgrad.GradientTape() as tape:
        out = call(model, x)
        # not a loss: a scalar of several ops, broadcasting and a matmul
        value = ops.reduce_sum(ops.tanh(out @ out.T) * 0.5) + ops.reduce_mean(ops.square(out - y))
    grads = tape.gradient(value, model.weights)

    def f(weights):
        a = np.tanh(x @ weights[0] + weights[1])
        z = a @ weights[2] + weights[3]
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return np.sum(np.tanh(p @ p.T) * 0.5) + np.mean((p - y) ** 2)

    check_grad(
        f,
        [w.value for w in model.weights],
        [g.reshape(w.value.shape) for g, w in zip(grads, model.weights)],
    )


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_tape_gradients_equal_torch_autograd(rng):
    import torch

    x, labels = blobs(rng, n=16)
    y = np.eye(3)[labels]
    model = mlp()
    tape, value = tape_loss(model, "categorical_crossentropy", x, y)
    grads = tape.gradient(value, model.weights)
    params = [torch.tensor(w.value, requires_grad=True) for w in model.weights]
    a = torch.tanh(torch.tensor(x) @ params[0] + params[1])
    loss = torch.nn.functional.cross_entropy(a @ params[2] + params[3], torch.tensor(labels))
    loss.backward()
    assert float(value) == pytest.approx(loss.item(), rel=1e-12)
    for g, p in zip(grads, params):
        np.testing.assert_allclose(g.reshape(p.shape), p.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_non_scalar_target_is_summed(rng):
    x, labels = blobs(rng, n=8)
    model = mlp()
    with symgrad.GradientTape(persistent=True) as tape:
        per_sample = losses.categorical_crossentropy(np.eye(3)[labels], call(model, x))
        total = ops.reduce_sum(per_sample)
    assert per_sample.shape == (8,)
    for a, b in zip(tape.gradient(per_sample, model.weights), tape.gradient(total, model.weights)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_non_persistent_tape_computes_one_gradient(rng):
    x, labels = blobs(rng, n=8)
    model = mlp()
    tape, value = tape_loss(model, "categorical_crossentropy", x, np.eye(3)[labels])
    tape.gradient(value, model.weights)
    with pytest.raises(
        RuntimeError, match=r"non-persistent GradientTape can only be used to compute one set"
    ):
        tape.gradient(value, model.weights)


def test_persistent_tape_computes_several(rng):
    x, labels = blobs(rng, n=8)
    model = mlp()
    with symgrad.GradientTape(persistent=True) as tape:
        value = ops.reduce_mean(losses.categorical_crossentropy(np.eye(3)[labels], call(model, x)))
    first = tape.gradient(value, model.weights)
    again = tape.gradient(value, model.weights)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_unconnected_and_unwatched_sources_get_none(rng):
    x, labels = blobs(rng, n=8)
    model, other = mlp(), mlp(seed=1)
    other.build(input_dim=4)
    constant = rng.standard_normal((8, 3))
    with symgrad.GradientTape() as tape:
        out = call(model, x)
        value = ops.reduce_sum(out * constant)
    grads = tape.gradient(
        value, {"other": other.weights[0], "constant": constant, "kernel": model.weights[0]}
    )
    assert grads["other"] is None  # the target does not depend on it
    assert grads["constant"] is None  # an array that was not watched
    assert grads["kernel"].shape == (4, 6)
    with symgrad.GradientTape() as tape:
        value = ops.reduce_sum(call(model, x) * 2.0)
    zeros = tape.gradient(value, [other.weights[0]], unconnected_gradients="zero")
    np.testing.assert_array_equal(zeros[0], np.zeros((4, 6)))


def test_watched_array_gets_its_gradient(check_grad, rng):
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 2))
    with symgrad.GradientTape() as tape:
        tape.watch([a, b])
        value = ops.reduce_sum(ops.exp(ops.matmul(a, b) / 4.0) - 1.0)
    da, db = tape.gradient(value, [a, b])
    check_grad(lambda xs: np.sum(np.exp(xs[0] @ xs[1] / 4.0) - 1.0), [a, b], [da, db])


def test_sources_keep_their_structure(rng):
    x, labels = blobs(rng, n=8)
    model = mlp()
    tape, value = tape_loss(model, "categorical_crossentropy", x, np.eye(3)[labels])
    w = model.weights
    grads = tape.gradient(value, {"first": [w[0], w[1]], "second": (w[2], {"bias": w[3]})})
    assert isinstance(grads["first"], list) and isinstance(grads["second"], tuple)
    assert grads["second"][1]["bias"].shape == tuple(w[3].shape)


@pytest.mark.parametrize("name", sorted(ops.UNARY))
def test_each_unary_op_against_finite_differences(name, check_grad, rng):
    x = (
        rng.uniform(0.5, 2.0, (4, 3)) * rng.choice([-1, 1], (4, 3))
        if name not in ("sqrt", "log")
        else rng.uniform(0.5, 2.0, (4, 3))
    )
    fn = getattr(ops, name)
    with symgrad.GradientTape() as tape:
        tape.watch(x)
        value = ops.reduce_sum(fn(x) * np.arange(12.0).reshape(4, 3))
    (dx,) = tape.gradient(value, [x])
    reference = {
        "square": np.square,
        "sqrt": np.sqrt,
        "exp": np.exp,
        "log": np.log,
        "abs": np.abs,
        "tanh": np.tanh,
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "relu": lambda v: np.maximum(v, 0),
    }[name]
    assert float(value) == pytest.approx(
        np.sum(reference(x) * np.arange(12.0).reshape(4, 3)), rel=1e-12
    )
    check_grad(lambda xs: np.sum(reference(xs[0]) * np.arange(12.0).reshape(4, 3)), [x], [dx])


def test_broadcasting_and_reductions_match_numpy(rng):
    m, row, col = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal((4, 1))
    with symgrad.GradientTape() as tape:
        t = tape.as_tensor(m)
        results = {
            "m + row": (t + row, m + row),
            "row * m": (row * t, row * m),
            "m - col": (t - col, m - col),
            "2 / m": (2.0 / t, 2.0 / m),
            "m ** 3": (t**3, m**3),
            "-m.T": (-t.T, -m.T),
            "sum axis 0": (ops.reduce_sum(t, axis=0), m.sum(0)),
            "mean axis 1": (ops.reduce_mean(t, axis=1), m.mean(1)),
            "mean axis -1 keepdims": (
                ops.reduce_mean(t, axis=-1, keepdims=True),
                m.mean(-1, keepdims=True),
            ),
            "softmax": (ops.softmax(t), np.exp(m) / np.exp(m).sum(1, keepdims=True)),
        }
    for label, (tensor, expected) in results.items():
        assert tensor.shape == expected.shape, label
        np.testing.assert_allclose(tensor.numpy(), expected, rtol=1e-12, err_msg=label)
    with pytest.raises(
        ValueError, match=r"could not be broadcast together. Received: shapes \(4, 3\) and \(2,\)"
    ):
        tape.as_tensor(m) + np.ones(2)


@pytest.fixture
def count_compiles(monkeypatch):
    """``count_compiles()``: how many programs ``symgrad.compiler.compile`` built since the
    test began (the tape, the losses and ``apply_gradients`` all compile through it)."""
    count = [0]
    real = symgrad.compiler.compile

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(symgrad.compiler, "compile", counting)
    return lambda: count[0]


def test_a_training_loop_compiles_once(count_compiles, rng):
    x, labels = blobs(rng, n=50)
    y = np.eye(3)[labels]
    model = mlp(optimizer="adam")
    built, compiles = count_compiles(), []  # the model's own step is compiled
    for _epoch in range(3):
        for start in range(0, 50, 16):  # the last batch has 2 rows: the same programs
            xb, yb = x[start : start + 16], y[start : start + 16]
            with symgrad.GradientTape() as tape:
                value = ops.reduce_mean(losses.categorical_crossentropy(yb, call(model, xb)))
            grads = tape.gradient(
                value,
                model.trainable_weights if hasattr(model, "trainable_weights") else model.weights,
            )
            model.optimizer.apply_gradients(zip(grads, model.weights))
            float(value)
        compiles.append(count_compiles() - built)
    assert compiles[0] <= 2  # the gradient program and the update, built in the first epoch
    assert compiles[1] == compiles[2] == compiles[0]  # and never again
    assert model.optimizer.iterations == 12


def test_formulas_behind_a_tape_gradient(rng):
    x, labels = blobs(rng, n=8)
    model = mlp()
    tape, value = tape_loss(model, "categorical_crossentropy", x, np.eye(3)[labels])
    shown = tape.gradient_formulas(value, model.weights)
    assert list(shown) == [w.symbol.name for w in model.weights]
    text = symgrad.expr.sstr(shown["dense_1_bias"])
    assert "- Y" in text and "1/n" in text  # softmax + cross-entropy fused: (P - Y)/n
    explained = tape.explain(value, model.weights)
    assert "Reverse sweep" in explained and "dL/ddense_kernel" in explained


# --------------------------------------------------------------------------
# apply_gradients


@pytest.mark.parametrize("name", sorted(optimizers_module.OPTIMIZERS))
def test_apply_gradients_equals_train_on_batch(name, rng):
    x, labels = blobs(rng, n=20)
    y = np.eye(3)[labels]
    optimizer = optimizers_module.get(name)
    if name == "sgd":
        optimizer = optimizers_module.SGD(momentum=0.9, nesterov=True)
    fitted, looped = (
        mlp(optimizer=copy.deepcopy(optimizer)),
        mlp(optimizer=copy.deepcopy(optimizer)),
    )
    for _ in range(3):
        fitted.train_on_batch(x, y)
        tape, value = tape_loss(looped, "categorical_crossentropy", x, y)
        grads = tape.gradient(value, looped.weights)
        assert (
            looped.optimizer.apply_gradients(zip(grads, looped.weights))
            == looped.optimizer.iterations
        )
    for a, b in zip(fitted.get_weights(), looped.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert looped.optimizer.iterations == fitted.optimizer.iterations == 3
    for key, slot in fitted.optimizer.slots.items():
        np.testing.assert_array_equal(slot.value, looped.optimizer.slots[key].value)
    # fit continues from the custom loop's slots and step counter
    looped.train_on_batch(x, y)
    fitted.train_on_batch(x, y)
    for a, b in zip(fitted.get_weights(), looped.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_apply_gradients_on_a_model_never_compiled(rng):
    x, labels = blobs(rng, n=20)
    y = np.eye(3)[labels]
    reference = mlp(optimizer=optimizers_module.Adam(learning_rate=0.01), dtype="float32")
    model = symgrad.Sequential(
        [symgrad.Dense(6, activation="tanh", input_dim=4), symgrad.Dense(3, activation="softmax")]
    )
    model.build(input_dim=4)
    model.set_weights(reference.get_weights())
    optimizer = optimizers_module.Adam(learning_rate=0.01)
    for _ in range(2):
        reference.train_on_batch(x, y)
        tape, value = tape_loss(model, "categorical_crossentropy", x, y)
        optimizer.apply_gradients(zip(tape.gradient(value, model.weights), model.weights))
    for a, b in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # float32, two programs
    assert not model.compiled and optimizer.iterations == 2


def test_apply_gradients_is_all_or_nothing(rng):
    model = mlp(optimizer="adam")
    before = model.get_weights()
    grads = [np.ones(w.value.shape) for w in model.weights]
    model.optimizer.apply_gradients(zip(grads, model.weights))
    state = (
        [w.value.copy() for w in model.weights],
        {k: v.value.copy() for k, v in model.optimizer.slots.items()},
    )
    bad = [g.copy() for g in grads]
    bad[-1][0, 0] = np.nan  # the last weight's gradient: the earlier ones would be written first
    with pytest.raises(
        FloatingPointError,
        match=r"Adam.apply_gradients: the sum of the gradients is nan or inf at step 2; no "
        r"weight, slot or iterations was changed \(iterations stays 1\)\. \(apply_gradients: "
        r"gradient_sum is not finite \(nan\); no input was updated\)",
    ):
        model.optimizer.apply_gradients(zip(bad, model.weights))
    with pytest.raises(
        ValueError, match=r"gradient of dense_1/kernel must have the variable's shape.*\(2, 3\)"
    ):
        model.optimizer.apply_gradients(zip([*grads[:2], np.ones((2, 3)), grads[3]], model.weights))
    for a, b in zip(state[0], model.weights):
        np.testing.assert_array_equal(a, b.value)
    for k, v in state[1].items():
        np.testing.assert_array_equal(v, model.optimizer.slots[k].value)
    assert model.optimizer.iterations == 1
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_apply_gradients_skips_none_with_a_warning():
    model = mlp(optimizer="sgd")
    model.get_weights()  # the initial values
    kernel_before = model.weights[0].value.copy()
    bias_before = model.weights[1].value.copy()
    grads = [None, np.ones(model.weights[1].value.shape), None, None]
    with pytest.warns(
        UserWarning, match=r"gradients do not exist for dense/kernel, dense_1/kernel"
    ):
        model.optimizer.apply_gradients(zip(grads, model.weights))
    np.testing.assert_array_equal(model.weights[0].value, kernel_before)
    np.testing.assert_allclose(model.weights[1].value, bias_before - 0.01)
    with pytest.raises(ValueError, match=r"no gradients provided for any variable"):
        model.optimizer.apply_gradients(zip([None] * 4, model.weights))


def test_backend_of_the_test_run_is_used():
    assert BACKEND in symgrad.compiler.BACKENDS


def test_a_model_with_two_inputs_and_two_outputs_on_the_tape(rng):
    """model([a, b]) returns one tensor per output; the tape's gradient of the weighted sum of
    the two losses is compute_gradients of the compiled total loss."""
    from tests.nn.test_functional import compile_two, multi_data, two_in_two_out

    model = compile_two(two_in_two_out())
    x, y = multi_data(rng)
    with symgrad.GradientTape() as tape:
        cls, reg = model({"b": x["b"], "a": x["a"]})
        value = ops.reduce_mean(
            losses.sparse_categorical_crossentropy(y["cls"], cls)
        ) + 0.5 * ops.reduce_mean(losses.mean_squared_error(y["reg"], reg))
    assert cls.shape == (12, 3) and reg.shape == (12, 1)
    p_cls, p_reg = model.predict(x)
    np.testing.assert_allclose(cls.numpy(), p_cls, rtol=1e-12)
    np.testing.assert_allclose(reg.numpy(), p_reg, rtol=1e-12)
    assert float(value) == pytest.approx(model.evaluate(x, y)[0], rel=1e-12)
    for g, e in zip(tape.gradient(value, model.trainable_weights), model.compute_gradients(x, y)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)


def test_images_go_on_the_tape_as_their_rows(rng):
    model = symgrad.Sequential(
        [symgrad.layers.Input(shape=(4, 4, 1)), symgrad.layers.Conv2D(2, 3, activation="tanh"),
         symgrad.layers.Flatten(), symgrad.Dense(3, activation="softmax")]
    )  # fmt: skip
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", dtype="float64", seed=0)
    x, labels = rng.standard_normal((5, 4, 4, 1)), rng.integers(0, 3, 5)
    with symgrad.GradientTape() as tape:
        value = ops.reduce_mean(losses.sparse_categorical_crossentropy(labels, model(x)))
    for g, e in zip(tape.gradient(value, model.weights), model.compute_gradients(x, labels)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match=r"expects rows of 16 features \(samples of shape"):
        with symgrad.GradientTape():
            model(rng.standard_normal((5, 3, 3, 1)))


def _dropout_model(backend="numpy"):
    model = symgrad.Sequential(
        [symgrad.Dense(8, activation="tanh", input_dim=4), symgrad.layers.Dropout(0.5),
         symgrad.Dense(3, activation="softmax")]
    )  # fmt: skip
    model.compile(
        optimizer="sgd", loss="sparse_categorical_crossentropy", backend=backend,
        dtype="float64", seed=0,
    )  # fmt: skip
    return model


@pytest.mark.parametrize("backend", sorted(symgrad.compiler.BACKENDS))
def test_training_true_records_fit_s_graph_and_its_masks(backend, rng):
    """model(x, training=True): the masks of the step the next update makes, so the custom loop
    step is train_on_batch's, bit for bit in loss and weights; the default is predict's graph."""
    x, labels = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    looped, fitted = _dropout_model(backend), _dropout_model(backend)
    for _ in range(3):  # a new step, new masks
        with symgrad.GradientTape() as tape:
            probabilities = looped(x, training=True)
            value = ops.reduce_mean(losses.sparse_categorical_crossentropy(labels, probabilities))
        grads = tape.gradient(value, looped.trainable_weights)
        looped.optimizer.apply_gradients(zip(grads, looped.trainable_weights))
        assert float(value) == pytest.approx(fitted.train_on_batch(x, labels), rel=1e-12)
        for a, b in zip(looped.get_weights(), fitted.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    with symgrad.GradientTape():
        inference = looped(x)
    np.testing.assert_allclose(inference.numpy(), looped.predict(x), rtol=1e-12)
    with pytest.raises(NotImplementedError, match="called on arrays with training=True"):
        looped(x, training=True)


# --------------------------------------------------------------------------
# Gradients with respect to intermediate tensors (layer outputs, tensors of watched arrays)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _split_mlp(backend="numpy", optimizer="sgd"):
    """Dense -> tanh -> Dense -> softmax as four layers: each intermediate is a layer output."""
    model = symgrad.Sequential(
        [symgrad.Dense(6, input_dim=4), symgrad.layers.Activation("tanh"),
         symgrad.Dense(3), symgrad.layers.Activation("softmax")]
    )  # fmt: skip
    model.compile(
        optimizer=optimizer, loss="categorical_crossentropy", backend=backend, dtype="float64",
        seed=0,
    )  # fmt: skip
    return model


def test_gradient_with_respect_to_intermediates_against_finite_differences(check_grad, rng):
    """h is used twice (directly and through p); the gradient of each intermediate along
    random directions of its value, the rest of the computation done by NumPy."""
    x, labels = blobs(rng, n=9)
    y = np.eye(3)[labels]
    model = mlp()
    w = model.get_weights()
    with symgrad.GradientTape() as tape:
        h = model.layers[0](x)
        p = model.layers[1](h)
        value = (
            ops.reduce_sum(ops.tanh(p @ p.T) * 0.5)
            + ops.reduce_mean(ops.square(p - y))
            + 0.1 * ops.reduce_sum(h * h)
        )
    dh, dp = tape.gradient(value, [h, p])
    assert dh.shape == h.shape == (9, 6) and dp.shape == p.shape == (9, 3)

    def rest(hv, pv):
        return np.sum(np.tanh(pv @ pv.T) * 0.5) + np.mean((pv - y) ** 2) + 0.1 * np.sum(hv * hv)

    hv = np.tanh(x @ w[0] + w[1])
    check_grad(lambda a: rest(a[0], _softmax(a[0] @ w[2] + w[3])), [hv], [dh])
    check_grad(lambda a: rest(hv, a[0]), [_softmax(hv @ w[2] + w[3])], [dp])
    np.testing.assert_allclose(h.numpy(), hv, rtol=1e-12)


def test_gradient_of_a_tensor_of_watched_arrays(check_grad, rng):
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 2))
    with symgrad.GradientTape() as tape:
        tape.watch([a, b])
        t = ops.exp(ops.matmul(a, b) / 4.0)
        value = ops.reduce_sum(ops.sqrt(t + 1.0) * t)
    dt, da = tape.gradient(value, [t, a])
    tv = np.exp(a @ b / 4.0)
    check_grad(lambda v: np.sum(np.sqrt(v[0] + 1.0) * v[0]), [tv], [dt])
    check_grad(
        lambda v: np.sum(np.sqrt(np.exp(v[0] @ b / 4) + 1.0) * np.exp(v[0] @ b / 4)), [a], [da]
    )


@pytest.mark.parametrize("backend", sorted(symgrad.compiler.BACKENDS))
def test_intermediate_gradients_are_the_chain_rule_through_the_following_layers(backend, rng):
    """Each layer output's gradient is the next one's pulled back through the next layer:
    dZ2 = (P - Y)/n, dA1 = dZ2 W2^T, dZ1 = dA1 o (1 - A1^2); the weights' gradients from
    the same tape are compute_gradients'; NumPy and LLVM agree."""
    x, labels = blobs(rng, n=11)
    y = np.eye(3)[labels]
    model = _split_mlp(backend)
    with symgrad.GradientTape(backend=backend) as tape:
        z1 = model.layers[0](x)
        a1 = model.layers[1](z1)
        z2 = model.layers[2](a1)
        p = model.layers[3](z2)
        value = ops.reduce_mean(losses.categorical_crossentropy(y, p))
    grads = tape.gradient(value, [z1, a1, z2, p, *model.weights])
    dz1, da1, dz2, dp = grads[:4]
    w2 = model.weights[2].value
    pv, av = model.predict(x), np.tanh(x @ model.weights[0].value + model.weights[1].value)
    np.testing.assert_allclose(p.numpy(), pv, rtol=1e-12)
    np.testing.assert_allclose(dp, -y / pv / 11, rtol=1e-10)
    np.testing.assert_allclose(dz2, (pv - y) / 11, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(da1, dz2 @ w2.T, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(dz1, da1 * (1 - av**2), rtol=1e-10, atol=1e-15)
    for g, e in zip(grads[4:], model.compute_gradients(x, y)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13)
    if backend != "numpy":
        with symgrad.GradientTape(backend="numpy") as tape:
            h = model.layers[1](model.layers[0](x))
            value = ops.reduce_mean(
                losses.categorical_crossentropy(y, model.layers[3](model.layers[2](h)))
            )
        np.testing.assert_allclose(tape.gradient(value, h), da1, rtol=1e-12, atol=1e-15)


def test_layers_called_one_by_one_are_the_model_s_call(rng):
    x, labels = blobs(rng, n=7)
    model = mlp()
    with symgrad.GradientTape():
        p = model.layers[1](model.layers[0](x))
        q = model(x)
    np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-12)
    np.testing.assert_allclose(p.numpy(), model.predict(x), rtol=1e-12)
    value = ops.reduce_sum(p)
    assert symgrad.expr.sstr(p.expr) == "A2" and symgrad.expr.sstr(value.expr) == "sum(A2)"


def test_an_intermediate_the_target_does_not_depend_on_gets_none(rng):
    x, labels = blobs(rng, n=6)
    model = mlp()
    with symgrad.GradientTape(persistent=True) as tape:
        h = model.layers[0](x)
        unused = ops.square(h)
        value = ops.reduce_sum(model.layers[1](h))
    assert tape.gradient(value, [unused, h])[0] is None
    zeros = tape.gradient(value, unused, unconnected_gradients="zero")
    np.testing.assert_array_equal(zeros, np.zeros((6, 6)))
    shown = tape.gradient_formulas(value, [h, model.weights[0]])
    assert list(shown) == ["A1", "dense_kernel"]


def test_intermediate_gradients_in_a_loop_compile_once(count_compiles, rng):
    x, labels = blobs(rng, n=40)
    y = np.eye(3)[labels]
    model = _split_mlp(optimizer="adam")
    built, compiles = count_compiles(), []  # the model's own step is compiled
    for _epoch in range(3):
        for start in range(0, 40, 16):  # the last batch has 8 rows: the same programs
            xb, yb = x[start : start + 16], y[start : start + 16]
            with symgrad.GradientTape() as tape:
                h = model.layers[1](model.layers[0](xb))
                value = ops.reduce_mean(
                    losses.categorical_crossentropy(yb, model.layers[3](model.layers[2](h)))
                )
            dh, *grads = tape.gradient(value, [h, *model.trainable_weights])
            assert dh.shape == (len(xb), 6) and np.all(np.isfinite(dh))
            model.optimizer.apply_gradients(zip(grads, model.trainable_weights))
        compiles.append(count_compiles() - built)
    assert compiles[0] <= 2  # the gradient program and the update, built in the first epoch
    assert compiles[1] == compiles[2] == compiles[0]  # and never again


# --------------------------------------------------------------------------
# Batch normalization's moving statistics under the tape


def _batchnorm_model(backend="numpy"):
    model = symgrad.Sequential(
        [symgrad.Dense(5, input_dim=4), symgrad.layers.BatchNormalization(momentum=0.9),
         symgrad.layers.Activation("tanh"), symgrad.Dense(3, activation="softmax")]
    )  # fmt: skip
    model.compile(
        optimizer="sgd", loss="sparse_categorical_crossentropy", backend=backend,
        dtype="float64", seed=0,
    )  # fmt: skip
    return model


def _moving(model) -> tuple[np.ndarray, np.ndarray]:
    bn = model.layers[1]
    return bn.moving_mean.numpy(), bn.moving_variance.numpy()


@pytest.mark.parametrize("backend", sorted(symgrad.compiler.BACKENDS))
def test_training_call_updates_the_moving_statistics_once(backend, rng):
    """Each model(x, training=True) (and each layer call with training=True) on the tape moves
    the statistics as Keras's forward call does: momentum * old + (1 - momentum) * the batch's
    mean and (biased) variance of the layer's input; an inference call leaves them."""
    x1, x2 = rng.standard_normal((7, 4)), rng.standard_normal((5, 4)) + 1.0
    model = _batchnorm_model(backend)
    mean, variance = _moving(model)
    kernel, bias = model.layers[0].get_weights()

    def moved(mean, variance, x):
        z = x @ kernel + bias
        return 0.9 * mean + 0.1 * z.mean(0), 0.9 * variance + 0.1 * z.var(0)

    with symgrad.GradientTape() as tape:
        model(x1)  # inference: the moving statistics are read, not moved
        np.testing.assert_array_equal(_moving(model)[0], mean)
        p = model(x1, training=True)
        expected = moved(mean, variance, x1)
        for got, want in zip(_moving(model), expected):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        model(x2, training=True)  # a second call starts from the first's result
        expected = moved(*expected, x2)
        for got, want in zip(_moving(model), expected):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        z = model.layers[0](x1)
        model.layers[1](z, training=True)  # a layer called on its own
        expected = moved(*expected, x1)
        value = ops.reduce_sum(p)
    for got, want in zip(_moving(model), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    tape.gradient(value, model.trainable_weights)  # a gradient moves nothing more
    for got, want in zip(_moving(model), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", sorted(symgrad.compiler.BACKENDS))
def test_custom_loop_with_batch_normalization_is_train_on_batch(backend, rng):
    """tape + apply_gradients moves weights and moving statistics bit for bit as fit's step."""
    x, labels = rng.standard_normal((9, 4)), rng.integers(0, 3, 9)
    looped, fitted = _batchnorm_model(backend), _batchnorm_model(backend)
    for _ in range(3):
        with symgrad.GradientTape() as tape:
            probabilities = looped(x, training=True)
            value = ops.reduce_mean(losses.sparse_categorical_crossentropy(labels, probabilities))
        grads = tape.gradient(value, looped.trainable_weights)
        looped.optimizer.apply_gradients(zip(grads, looped.trainable_weights))
        assert float(value) == pytest.approx(fitted.train_on_batch(x, labels), rel=1e-12)
        for a, b in zip(looped.get_weights(), fitted.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert not np.allclose(_moving(looped)[0], 0.0)


def test_moving_statistics_that_are_not_finite_are_not_written(rng):
    model = _batchnorm_model()
    x = rng.standard_normal((4, 4))
    x[0, 0] = np.inf
    before = _moving(model)
    with symgrad.GradientTape():
        with pytest.raises(FloatingPointError, match="batch_normalization/moving_mean"):
            model(x, training=True)
    for got, want in zip(_moving(model), before):
        np.testing.assert_array_equal(got, want)


def test_explain_an_intermediate_gradient(rng):
    """The sweep runs down to the intermediate's stand-in: only what lies above it is defined."""
    x, labels = blobs(rng, n=6)
    model = mlp()
    with symgrad.GradientTape() as tape:
        h = model.layers[0](x)
        value = ops.reduce_mean(
            losses.categorical_crossentropy(np.eye(3)[labels], model.layers[1](h))
        )
    explained = tape.explain(value, [h])
    forward = explained.split("Reverse sweep")[0].splitlines()[1:]
    assert [line.split(" = ")[0].strip() for line in forward if line.strip()] == ["Z2", "A2", "L"]
    assert "dL/dA1 = 1/n*(A2 - Y)*dense_1_kernel.T" in explained


# --------------------------------------------------------------------------
# Layers in no model: built by their first call, eager on arrays, recorded on the tape


def _layernorm(a, gamma, beta, eps=1e-3):
    mu = a.mean(1, keepdims=True)
    return gamma * (a - mu) / np.sqrt(((a - mu) ** 2).mean(1, keepdims=True) + eps) + beta


def _conv_valid(x, kernel, bias):
    """Keras's Conv2D, padding "valid", strides 1: (n, H, W, C) * (kh, kw, C, F)."""
    kh, kw = kernel.shape[:2]
    rows, cols = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = sum(
        np.einsum("nijc,cf->nijf", x[:, u : u + rows, v : v + cols, :], kernel[u, v])
        for u in range(kh)
        for v in range(kw)
    )
    return out + bias


def test_a_layer_in_no_model_is_built_by_its_first_call(monkeypatch, rng):
    layer = symgrad.Dense(4, activation="tanh", dtype="float64")
    assert not layer.built and layer.weights == []
    x = rng.standard_normal((5, 3))
    y = layer(x)
    assert layer.built and layer.input_shape == (3,)
    assert [w.shape for w in layer.weights] == [(3, 4), (4,)]
    assert all(w.value.dtype == np.float64 for w in layer.weights)
    assert not np.allclose(layer.kernel.numpy(), 0)  # glorot_uniform, drawn at the first call
    np.testing.assert_allclose(
        y, np.tanh(x @ layer.kernel.numpy() + layer.bias.numpy()), rtol=1e-12
    )
    default = symgrad.Dense(2)  # Keras's floatx: float32 weights and outputs
    assert default(x.astype(np.float32)).dtype == np.float32 == default.kernel.value.dtype
    assert symgrad.Dense(2, dtype="float64").get_config()["dtype"] == "float64"
    assert symgrad.Dense.from_config({"units": 2, "dtype": "float64"}).dtype == "float64"
    # unseeded initial values follow set_random_seed's sequence, as a model's do
    kernels = []
    for _ in range(2):
        monkeypatch.setattr(seeds, "_root", np.random.SeedSequence(7))
        fresh = symgrad.Dense(3)
        fresh(x)
        kernels.append(fresh.kernel.numpy())
    np.testing.assert_array_equal(*kernels)


def test_an_eager_layer_call_compiles_once(count_compiles, rng):
    layer = symgrad.Dense(4, activation="relu", dtype="float64")
    layer(rng.standard_normal((5, 3)))
    assert count_compiles() == 1
    for rows in (1, 7, 30):
        x = rng.standard_normal((rows, 3))
        expected = np.maximum(x @ layer.kernel.numpy() + layer.bias.numpy(), 0)
        np.testing.assert_allclose(layer(x), expected, rtol=1e-12)
    assert count_compiles() == 1


def test_a_standalone_conv2d_against_finite_differences(check_grad, rng):
    """Conv2D, Flatten and Dense in no model, eager and on the tape, against NumPy."""
    conv = symgrad.layers.Conv2D(2, 3, activation="tanh", dtype="float64")
    flat, dense = symgrad.layers.Flatten(), symgrad.Dense(2, dtype="float64")
    x, r = rng.standard_normal((4, 5, 5, 2)), rng.standard_normal((4, 2))
    images = conv(x)
    assert images.shape == (4, 3, 3, 2) and [w.shape for w in conv.weights] == [(3, 3, 2, 2), (2,)]
    kernel, bias = conv.get_weights()
    np.testing.assert_allclose(images, np.tanh(_conv_valid(x, kernel, bias)), rtol=1e-12)
    dense(flat(images))
    weights = [*conv.weights, *dense.weights]
    with symgrad.GradientTape() as tape:
        value = ops.reduce_sum(ops.tanh(dense(flat(conv(x)))) * r)
    grads = tape.gradient(value, weights)

    def f(arrays):
        k, b, w, c = arrays
        h = np.tanh(_conv_valid(x, k, b)).reshape(len(x), -1)
        return np.sum(np.tanh(h @ w + c) * r)

    assert float(value) == pytest.approx(f([w.numpy() for w in weights]), rel=1e-12)
    check_grad(f, [w.numpy() for w in weights], grads)


def _chain_gradients(backend, x, r, layers):
    """(value, gradients by each layer's weights and by x) of sum(tanh(d2(norm(d1(x)))) o r)."""
    d1, norm, d2 = layers
    with symgrad.GradientTape(backend=backend) as tape:
        y = d2(norm(d1(x)))
        tape.watch(x)  # after the call x is the batch X: the program runs on `backend`
        value = ops.reduce_sum(ops.tanh(y) * r)
    weights = [w for layer in layers for w in layer.weights]
    return tape, y, value, tape.gradient(value, [*weights, x])


def test_standalone_layers_chained_by_hand_against_finite_differences(check_grad, rng):
    """Dense, LayerNormalization and Dense in no model, chained by hand: one graph, its
    gradients by the weights and the input against finite differences; both backends agree."""
    d1, norm, d2 = layers = (
        symgrad.Dense(5, activation="tanh", dtype="float64"),
        symgrad.layers.LayerNormalization(dtype="float64"),
        symgrad.Dense(3, dtype="float64"),
    )
    x, r = rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    d2(norm(d1(x)))  # builds the three layers
    norm.set_weights([1 + 0.5 * rng.standard_normal(5), 0.3 * rng.standard_normal(5)])
    eager = d2(norm(d1(x)))
    weights = [w for layer in layers for w in layer.weights]

    def f(arrays):
        k1, b1, gamma, beta, k2, b2, inputs = arrays
        return np.sum(np.tanh(_layernorm(np.tanh(inputs @ k1 + b1), gamma, beta) @ k2 + b2) * r)

    values = [w.numpy() for w in weights]
    runs = {b: _chain_gradients(b, x, r, layers) for b in sorted(symgrad.compiler.BACKENDS)}
    tape, y, value, grads = runs["numpy"]
    # one graph, numbered along the tape: d1's Z1 and A1, norm's N1, d2's Z2
    assert symgrad.expr.sstr(y.expr) == "Z2"
    assert float(value) == pytest.approx(f([*values, x]), rel=1e-12)
    check_grad(f, [*values, x], grads)
    hidden = _layernorm(np.tanh(x @ values[0] + values[1]), *values[2:4])
    np.testing.assert_allclose(eager, hidden @ values[4] + values[5], rtol=1e-12)
    for _, _, other_value, other in runs.values():
        assert float(other_value) == pytest.approx(float(value), rel=1e-12)
        for a, b in zip(other, grads):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_a_custom_loop_of_standalone_layers_compiles_once(count_compiles, rng):
    x, labels = blobs(rng, n=50)
    y = np.eye(3)[labels]
    d1, d2 = symgrad.Dense(6, activation="tanh"), symgrad.Dense(3, activation="softmax")
    optimizer = symgrad.optimizers.Adam(learning_rate=0.05)
    compiles, seen = [], []
    for _epoch in range(3):
        for start in range(0, 50, 16):  # the last batch has 2 rows: the same programs
            xb, yb = x[start : start + 16], y[start : start + 16]
            with symgrad.GradientTape() as tape:
                value = ops.reduce_mean(losses.categorical_crossentropy(yb, d2(d1(xb))))
            weights = [*d1.trainable_weights, *d2.trainable_weights]
            optimizer.apply_gradients(zip(tape.gradient(value, weights), weights))
        seen.append(float(np.mean(losses.categorical_crossentropy(y, d2(d1(x))))))
        compiles.append(count_compiles())
    assert compiles[1] == compiles[2] == compiles[0]
    assert seen[2] < seen[1] < seen[0] and optimizer.iterations == 12


def test_a_standalone_layer_joins_a_model_with_its_weights(rng):
    x = rng.standard_normal((6, 3))
    d1, d2 = symgrad.Dense(4, activation="tanh", dtype="float64"), symgrad.Dense(2)
    expected = d2(d1(x))
    before = [w.numpy() for w in (*d1.weights, *d2.weights)]
    model = symgrad.Sequential([d1, d2])
    assert model.built and model.input_shape == (3,)
    model.compile(optimizer="sgd", loss="mse", backend=BACKEND, dtype="float64")
    assert d1.dtype == d2.dtype == "float64"  # a layer in a model: the model's dtype
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-6)


def test_standalone_layer_errors(rng):
    layer = symgrad.Dense(4)
    layer(np.ones((2, 3)))
    message = (
        rf"Layer '{layer.name}' \(Dense\) expects inputs of shape \(None, 3\). "
        r"Received: a tensor of shape \(None, 5\)"
    )
    with pytest.raises(ValueError, match=message):
        layer(np.ones((2, 5)))
    with symgrad.GradientTape(), pytest.raises(ValueError, match=message):
        layer(np.ones((2, 5)))
    with pytest.raises(NotImplementedError, match=r"called on arrays with training=True"):
        layer(np.ones((2, 3)), training=True)
    with pytest.raises(
        ValueError, match=r"dtype must be one of float32, float64. Received: dtype='int8'"
    ):
        symgrad.Dense(2, dtype="int8")
    a, b = symgrad.Dense(3, name="twin"), symgrad.Dense(3, name="twin")
    with (
        symgrad.GradientTape(),
        pytest.raises(
            ValueError,
            match=r"Two different variables named twin/kernel .*layers 'twin' and 'twin'",
        ),
    ):
        b(a(np.ones((2, 3))))


def test_tape_formulas_show_batch_normalization_by_its_rule(rng):
    """The tape's formula of a weight below a normalization is the compact one, and it is
    the gradient the tape computes (the displayed formula compiled on the tape's leaves)."""
    model = _batchnorm_model()
    x, labels = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    with symgrad.GradientTape() as tape:
        value = ops.reduce_mean(
            losses.sparse_categorical_crossentropy(labels, model(x, training=True))
        )
    kernel = model.layers[0].kernel
    (formula,) = tape.gradient_formulas(value, [kernel]).values()
    assert symgrad.expr.sstr(formula).endswith("o rstd_Z1 o batch_normalization_gamma))")
    inputs = symgrad.expr.leaves([formula])
    fn = symgrad.compile(inputs, {"g": formula}, backend="numpy", dtype="float64")
    (shown,) = fn(*(tape.leaves[s] for s in inputs))
    np.testing.assert_allclose(shown, tape.gradient(value, kernel), rtol=1e-10, atol=1e-14)


def test_a_standalone_dropout_draws_new_masks_on_each_tape(rng):
    dropout = symgrad.layers.Dropout(0.5)
    x = np.ones((40, 50))
    masks = []
    for _ in range(2):
        with symgrad.GradientTape():
            masks.append(dropout(x, training=True).numpy())
    for m in masks:
        assert set(np.unique(m)) == {0.0, 2.0} and 0.4 < np.mean(m == 0) < 0.6
    assert not np.array_equal(*masks)
    np.testing.assert_array_equal(dropout(x), x)  # eager: inference, the identity
