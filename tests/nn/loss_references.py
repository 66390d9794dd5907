"""Keras's losses written in NumPy from its documented formulas (float64), per sample: the
references the loss tests compare symgrad's compiled and tape values with."""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def huber(y, p, delta=1.0):
    e = p - y
    return np.mean(np.where(np.abs(e) <= delta, 0.5 * e**2, delta * np.abs(e) - 0.5 * delta**2), -1)


def log_cosh(y, p):
    return np.mean(np.log(np.cosh(p - y)), -1)


def kl_divergence(y, p):
    y, p = np.clip(y, EPS, 1), np.clip(p, EPS, 1)
    return np.sum(y * np.log(y / p), -1)


def poisson(y, p):
    return np.mean(p - y * np.log(p + EPS), -1)


def hinge(y, p):
    y = 2 * y - 1 if np.all((y == 0) | (y == 1)) else y
    return np.mean(np.maximum(1 - y * p, 0), -1)


def squared_hinge(y, p):
    y = 2 * y - 1 if np.all((y == 0) | (y == 1)) else y
    return np.mean(np.maximum(1 - y * p, 0) ** 2, -1)


def categorical_hinge(y, p):
    pos = np.sum(y * p, -1)
    neg = np.max((1 - y) * p, -1)
    return np.maximum(neg - pos + 1, 0)


def cosine_similarity(y, p):
    def unit(a):
        return a / np.sqrt(np.maximum(np.sum(a * a, -1, keepdims=True), 1e-12))

    return -np.sum(unit(y) * unit(p), -1)


def focal(y, p, balancing=False, alpha=0.25, gamma=2.0, smoothing=0.0):
    y = y * (1 - smoothing) + 0.5 * smoothing
    o = np.clip(p, EPS, 1 - EPS)
    bce = -(y * np.log(o) + (1 - y) * np.log(1 - o))
    p_t = y * p + (1 - y) * (1 - p)
    out = (1 - p_t) ** gamma * bce
    if balancing:
        out = (y * alpha + (1 - y) * (1 - alpha)) * out
    return np.mean(out, -1)


def bce_smoothed(y, p, smoothing):
    y = y * (1 - smoothing) + 0.5 * smoothing
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p), -1)


def cce_smoothed(y, p, smoothing):
    y = y * (1 - smoothing) + smoothing / y.shape[1]
    return -np.sum(y * np.log(p), -1)


def mean_squared_error(y, p):
    return np.mean((p - y) ** 2, -1)


def mean_absolute_error(y, p):
    return np.mean(np.abs(p - y), -1)


def binary_crossentropy(y, p):
    return bce_smoothed(y, p, 0.0)


def categorical_crossentropy(y, p):
    return cce_smoothed(y, p, 0.0)


def sparse_categorical_crossentropy(labels, p):
    return -np.log(p[np.arange(len(p)), labels])


PER_SAMPLE = {
    "mean_squared_error": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "huber": huber,
    "log_cosh": log_cosh,
    "kl_divergence": kl_divergence,
    "poisson": poisson,
    "hinge": hinge,
    "squared_hinge": squared_hinge,
    "categorical_hinge": categorical_hinge,
    "cosine_similarity": cosine_similarity,
    "binary_focal_crossentropy": focal,
}
"""Each loss function by its Keras name, with Keras's default arguments."""

TARGETS = {
    "binary_crossentropy": "binary",
    "categorical_crossentropy": "one_hot",
    "sparse_categorical_crossentropy": "labels",
    "kl_divergence": "soft",
    "poisson": "counts",
    "hinge": "binary",
    "squared_hinge": "binary",
    "categorical_hinge": "one_hot",
    "binary_focal_crossentropy": "binary",
}
"""The kind of targets each loss expects (``"real"`` where absent), for :func:`targets`."""


def targets(kind, rng, n=10, k=3):
    """Random targets of a kind: real values, probability rows, counts, 0/1, signed, one-hot or
    integer labels."""
    labels = rng.integers(0, k, n)
    return {
        "real": lambda: rng.standard_normal((n, k)),
        "soft": lambda: softmax(rng.standard_normal((n, k))),
        "counts": lambda: rng.poisson(2.0, (n, k)).astype(float),
        "binary": lambda: rng.integers(0, 2, (n, k)).astype(float),
        "signed": lambda: rng.choice([-1.0, 1.0, 0.5], (n, k)),
        "one_hot": lambda: np.eye(k)[labels],
        "labels": lambda: labels,
    }[kind]()
