"""symgrad.emit of a convolutional model: the Python module and the shared library compute
what the model computes (images as (n, H, W, C) arrays or as rows)."""

from __future__ import annotations

import ctypes
import importlib.util

import numpy as np
import pytest

import symgrad
from symgrad.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
from symgrad.models import Sequential
from tests.emit.test_native import CC, pointer


def _cnn():
    model = Sequential(
        [
            Input(shape=(6, 6, 1)),
            Conv2D(3, 3, padding="same", activation="relu"),
            MaxPooling2D(),
            Flatten(),
            Dense(2, activation="softmax"),
        ],
        name="cnn",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    return model, rng.random((5, 6, 6, 1)), rng.integers(0, 2, 5)


def test_python_module_of_a_cnn(tmp_path):
    model, x, y = _cnn()
    symgrad.emit(model, tmp_path / "cnn.py", weights=True)
    spec = importlib.util.spec_from_file_location("cnn_emitted", tmp_path / "cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.INPUT_SHAPE == (6, 6, 1) and module.INPUT_DIM == 36
    params, opt_state = module.load_weights()
    np.testing.assert_allclose(module.forward(params, x), model.predict(x), rtol=1e-12)
    np.testing.assert_allclose(
        module.forward(params, x.reshape(5, 36)), model.predict(x), rtol=1e-12
    )
    loss, grads = module.loss_and_gradients(params, x, y)
    for w, g in zip(model.weights, model.compute_gradients(x, y)):
        np.testing.assert_allclose(np.ravel(grads[w.path]), np.ravel(g), rtol=1e-10, atol=1e-14)
    before = module.train_step(params, opt_state, x, y)
    assert before == pytest.approx(model.train_on_batch(x, y), rel=1e-12)
    for w, value in zip(model.weights, model.get_weights()):
        np.testing.assert_allclose(
            np.ravel(params[w.path]), np.ravel(value), rtol=1e-10, atol=1e-14
        )  # the module keeps biases as one row


def test_shared_library_of_a_cnn(tmp_path):
    if CC is None:
        pytest.skip("no C compiler (cc, gcc, clang or $CC) found")
    model, x, _ = _cnn()
    symgrad.emit(model, tmp_path / "libcnn.so", target="shared")
    lib = ctypes.CDLL(str(tmp_path / "libcnn.so"))
    rows = np.ascontiguousarray(x.reshape(5, 36))
    weights = [np.ascontiguousarray(w) for w in model.get_weights()]
    p = np.empty((5, 2))
    status = lib.cnn_forward(
        ctypes.c_int64(5), pointer(rows), *map(pointer, weights), pointer(p), None
    )
    assert status == 0
    np.testing.assert_allclose(p, model.predict(x), rtol=1e-12)
