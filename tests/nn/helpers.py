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
