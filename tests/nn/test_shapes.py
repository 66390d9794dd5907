"""Samples beyond rows of features: images (H, W, C) and sequences (steps, C) as rows.

A model of images takes (n, H, W, C) arrays; each sample is one row of H*W*C columns
(row-major, channels last), so Flatten and Reshape are the identity on rows and a model
with Flatten computes exactly what the same model computes on the flattened rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.layers import Dense, Flatten, Input, Reshape
from symgrad.models import Model, Sequential


def _images(n=7, shape=(4, 3, 2), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)), rng.integers(0, 3, size=n)


def test_flatten_model_on_images_equals_the_model_on_rows():
    x, y = _images()
    a = Sequential([Input(shape=(4, 3, 2)), Flatten(), Dense(3, activation="softmax")])
    b = Sequential([Dense(3, activation="softmax", input_dim=24)])
    for m in (a, b):
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", seed=3)
    b.set_weights(a.get_weights())
    np.testing.assert_allclose(a.predict(x), b.predict(x.reshape(7, -1)), rtol=1e-12)
    a.fit(x, y, epochs=2, batch_size=3, shuffle=False, verbose=0)
    b.fit(x.reshape(7, -1), y, epochs=2, batch_size=3, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12)
    assert a.evaluate(x, y) == pytest.approx(b.evaluate(x.reshape(7, -1), y), rel=1e-12)


def test_unbuilt_model_takes_its_input_shape_from_the_data():
    x, y = _images(shape=(5, 2))
    model = Sequential([Flatten(), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", seed=0)
    model.fit(x, y, epochs=1, verbose=0)
    assert model.input_shape == (5, 2) and model.input_dim == 10
    assert model.layers[1].kernel.shape == (10, 3)


def test_reshape_shapes_and_predictions():
    model = Sequential([Input(shape=(12,)), Reshape((2, -1, 3))])
    assert model.output_shape == (2, 2, 3)
    x = np.arange(24.0).reshape(2, 12)
    np.testing.assert_array_equal(model.predict(x), x.reshape(2, 2, 2, 3))


def test_reshape_output_targets_are_samples_of_its_shape():
    x, _ = _images(n=5, shape=(6,))
    model = Sequential([Dense(6, input_dim=6), Reshape((3, 2))])
    model.compile(optimizer="sgd", loss="mse", seed=0)
    target = np.zeros((5, 3, 2))
    loss = model.evaluate(x, target)
    assert loss == pytest.approx(np.mean(model.predict(x) ** 2), rel=1e-6)


def test_functional_model_of_images():
    x, y = _images(shape=(4, 4, 1))
    inputs = Input(shape=(4, 4, 1), name="image")
    h = Flatten()(inputs)
    model = Model(inputs, Dense(3, activation="softmax")(h))
    assert inputs.shape == (None, 4, 4, 1) and h.shape == (None, 16)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", seed=0)
    model.fit(x, y, epochs=1, verbose=0)
    assert model.predict(x).shape == (7, 3)
    lines = []
    model.summary(print_fn=lines.append)
    assert "(None, 4, 4, 1)" in lines[0] and "(None, 16)" in lines[0]


def test_summary_prints_sample_shapes():
    model = Sequential([Input(shape=(8, 8, 1)), Flatten(), Dense(2)])
    lines = []
    model.summary(print_fn=lines.append)
    assert "(None, 64)" in lines[0] and "flatten (Flatten)" in lines[0]


BAD = [
    (  # a 2-D array into a model of images
        lambda: Sequential([Input(shape=(8, 8, 1)), Flatten(), Dense(2)]),
        np.zeros((3, 64)),
        r"Layer 'input_layer' \(InputLayer\) expects samples of shape \(8, 8, 1\): arrays of "
        r"shape \(samples, 8, 8, 1\)\. Received: x with shape \(3, 64\)",
    ),
    (  # images of another shape
        lambda: Sequential([Flatten(input_shape=(8, 8)), Dense(2)]),
        np.zeros((3, 8, 7)),
        r"Layer 'flatten' \(Flatten\) expects samples of shape \(8, 8\).*Received: x with "
        r"shape \(3, 8, 7\)",
    ),
    (  # Dense on images of another channel count
        lambda: Sequential([Input(shape=(4, 3)), Dense(2, input_dim=3)]),
        np.zeros((3, 4, 4)),
        r"Layer 'input_layer' \(InputLayer\) expects samples of shape \(4, 3\)",
    ),
]


@pytest.mark.parametrize("make, x, message", BAD, ids=["rows", "other-shape", "dense"])
def test_bad_input_shapes(make, x, message):
    model = make()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=message):
        model.predict(x)


def test_non_finite_image_names_its_index():
    model = Sequential([Input(shape=(2, 2, 1)), Flatten(), Dense(1)])
    x = np.zeros((2, 2, 2, 1))
    x[1, 0, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"x\[1, 0, 1, 0\]=nan"):
        model.predict(x)


def test_reshape_errors():
    with pytest.raises(
        ValueError,
        match=r"total size of a sample must be unchanged.*"
        r"\(None, 10\) \(10 values\) and target_shape=\(3, -1\)",
    ):
        Sequential([Input(shape=(10,)), Reshape((3, -1))])
    with pytest.raises(ValueError, match=r"at most one axis \(-1\)"):
        Reshape((-1, -1))
    with pytest.raises(ValueError, match=r"target_shape\[0\]=0"):
        Reshape((0, 2))


def test_dense_on_images_and_sequences_acts_on_the_last_axis(rng, check_grad):
    """Keras's Dense on (steps, C) or (H, W, C) samples: the same kernel on each position's
    features; NumPy's reference, finite differences, and both backends."""
    from symgrad.compiler import BACKENDS
    from tests.nn.test_functional import check_model_gradients

    assert Dense(3)(Input(shape=(4, 4, 1))).shape == (None, 4, 4, 3)
    x, labels = rng.standard_normal((6, 5, 3)), rng.integers(0, 2, 6)
    runs = {}
    for backend in BACKENDS:
        model = Sequential(
            [Input(shape=(5, 3)), Dense(4, activation="tanh"), Dense(3, activation="softmax"),
             Flatten(), Dense(2, activation="softmax")]
        )  # fmt: skip
        model.compile(
            optimizer="adam", loss="sparse_categorical_crossentropy", backend=backend,
            dtype="float64", seed=1,
        )  # fmt: skip
        assert model.output_shape == (2,) and model.layers[1].compute_output_shape((5, 4)) == (5, 3)
        w1, b1, w2, b2, w3, b3 = model.get_weights()
        z = np.tanh(x @ w1 + b1) @ w2 + b2
        per_step = np.exp(z - z.max(-1, keepdims=True))
        per_step /= per_step.sum(-1, keepdims=True)  # softmax over each step's units
        z3 = per_step.reshape(6, -1) @ w3 + b3
        want = np.exp(z3) / np.exp(z3).sum(1, keepdims=True)
        np.testing.assert_allclose(model.predict(x), want, rtol=1e-12)
        runs[backend] = model.fit(x, labels, epochs=3, batch_size=4, verbose=0).history["loss"]
        check_model_gradients(model, x, labels, rng, check_grad)  # at perturbed weights
    np.testing.assert_allclose(runs["llvm"], runs["numpy"], rtol=1e-10)


def test_saved_model_keeps_its_input_shape(tmp_path):
    model = Sequential([Input(shape=(3, 2)), Flatten(), Dense(2)])
    model.compile(optimizer="sgd", loss="mse", seed=0)
    x = np.random.default_rng(0).normal(size=(4, 3, 2))
    model.save(tmp_path / "m.npz")
    from symgrad.models import load_model

    loaded = load_model(tmp_path / "m.npz")
    assert loaded.input_shape == (3, 2)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-12)
