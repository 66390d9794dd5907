"""Small data sets and models shared by the training-API tests."""

from __future__ import annotations

import os

import numpy as np

from symgrad.layers import Dense
from symgrad.models import Sequential

BACKEND = os.environ.get("SYMGRAD_TEST_BACKEND", "numpy")
"""Backend the training tests compile for (set SYMGRAD_TEST_BACKEND=llvm to switch)."""

OUTPUT_FOR_LOSS = {
    "mse": None,
    "mae": None,
    "binary_crossentropy": "sigmoid",
    "categorical_crossentropy": "softmax",
    "sparse_categorical_crossentropy": "softmax",
}


def blobs(rng: np.random.Generator, n: int = 60, features: int = 4, classes: int = 3):
    """Separable clusters: x (n, features), integer labels (n,)."""
    centers = 3.0 * rng.standard_normal((classes, features))
    labels = rng.integers(0, classes, n)
    x = centers[labels] + 0.5 * rng.standard_normal((n, features))
    return x, labels


def targets_for(
    loss: str, labels: np.ndarray, classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Targets in the loss's domain built from integer labels."""
    if loss == "sparse_categorical_crossentropy":
        return labels
    if loss == "categorical_crossentropy":
        return np.eye(classes)[labels]
    if loss == "binary_crossentropy":
        return (labels[:, None] == np.arange(classes)).astype(float)
    return np.eye(classes)[labels] + 0.1 * rng.standard_normal((len(labels), classes))


def mlp(
    loss: str = "categorical_crossentropy",
    optimizer="sgd",
    features: int = 4,
    hidden: int = 6,
    classes: int = 3,
    activation: str = "tanh",
    metrics=None,
    seed: int = 0,
    dtype: str = "float64",
) -> Sequential:
    """A compiled two-layer perceptron whose output layer suits ``loss``."""
    model = Sequential(
        [
            Dense(hidden, activation=activation, input_dim=features),
            Dense(classes, activation=OUTPUT_FOR_LOSS.get(loss)),
        ]
    )
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics, backend=BACKEND, dtype=dtype, seed=seed
    )
    return model


def weights_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b)
    )


EMITTED_STEP = """
params, opt_state = m.load_weights()
out["loss"] = m.train_step(params, opt_state, d["x"], d["y"])
out["forward"] = m.forward(params, d["x"])
out.update({"w/" + k: v for k, v in params.items()})
"""


def check_emitted_step(model, x, y, target: str, folder, scalars) -> None:
    """One training step and the forward pass of ``model``'s emitted module (``target``
    "python", NumPy only, in a fresh interpreter) or shared library ("shared", through
    ctypes; ``scalars``: the hyperparameters it takes) agree with the model's own."""
    import ctypes

    import pytest

    import symgrad
    from tests.emit.helpers import run_isolated
    from tests.emit.test_native import CC

    x, y = np.ascontiguousarray(x, dtype=float), np.ascontiguousarray(y, dtype=float)
    rows, outputs = len(x), int(model.output_dim)
    if target == "python":
        symgrad.emit(model, folder / "emitted.py", weights=True)
        out = run_isolated(folder / "emitted.py", EMITTED_STEP, {"x": x, "y": y}, folder)
        weights, forward = [out[f"w/{w.path}"] for w in model.weights], out["forward"]
    else:
        if CC is None:
            pytest.skip("no C compiler (cc, gcc, clang or $CC) found")
        symgrad.emit(model, folder / "libemitted.so", target="shared")
        lib = ctypes.CDLL(str(folder / "libemitted.so"))

        def call(name, arrays, numbers):
            pointers = [a.ctypes.data_as(ctypes.c_void_p) for a in arrays]
            args = [*pointers[: len(pointers) - 1], *map(ctypes.c_double, numbers), pointers[-1]]
            return getattr(lib, name)(ctypes.c_int64(rows), *args, None)

        weights = [np.ascontiguousarray(w) for w in model.get_weights()]
        assert call("emitted_train_step", [x, y, *weights, np.empty((1, 1))], scalars) == 0
        forward = np.empty((rows, outputs))
        assert call("emitted_forward", [x, *weights, forward], []) == 0
    model.train_on_batch(x, y)
    for got, want in zip(weights, model.get_weights()):  # the files keep biases as one row
        np.testing.assert_allclose(np.ravel(got), np.ravel(want), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(forward, model.predict(x), rtol=1e-12)
