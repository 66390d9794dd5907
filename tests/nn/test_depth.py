"""A 200-layer MLP: every graph walk, printer and code generator on the path is iterative."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.optimizers import SGD

DEPTH = 200  # Dense(8) layers; SymPy's own recursive walks overflow the stack near 60
LEARNING_RATE = 0.05


def deep_mlp(backend: str) -> Sequential:
    layers = [
        Dense(8, activation=("tanh", "relu")[k % 2], **({"input_dim": 8} if k == 0 else {}))
        for k in range(DEPTH)
    ]
    model = Sequential([*layers, Dense(3, activation="softmax")])
    model.compile(
        optimizer=SGD(LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        backend=backend,
        dtype="float64",
        seed=0,
    )
    return model


def signal_keeping_weights(model: Sequential, rng) -> list[np.ndarray]:
    """Scaled orthogonal kernels (gain 1.1 into tanh, 1.5 into relu): through 200 layers the
    gradient of the first kernel neither vanishes nor explodes, so the checks below see it."""
    weights = []
    for k, w in enumerate(model.get_weights()):
        if w.ndim == 1:  # a bias (units,)
            weights.append(0.01 * rng.standard_normal(w.shape))
        elif w.shape == (8, 8) or k == 0:
            q, r = np.linalg.qr(rng.standard_normal((8, 8)))
            weights.append((1.5 if (k // 2) % 2 else 1.1) * q * np.sign(np.diag(r)))
        else:
            weights.append(rng.standard_normal(w.shape) / np.sqrt(8))
    return weights


def steps_and_gradients(backend: str, x, y, check_grad) -> list[np.ndarray]:
    """Gradients of the deep MLP on ``backend``, checked by finite differences on the first,
    a middle and the last kernels; then one SGD step, checked against ``w - lr g``."""
    model = deep_mlp(backend)
    weights = signal_keeping_weights(model, np.random.default_rng(1))
    model.set_weights(weights)
    grads = model.compute_gradients(x, y)
    for i in (0, DEPTH, 2 * DEPTH - 2, 2 * DEPTH):

        def loss(ws, i=i):
            model.set_weights([*weights[:i], ws[0], *weights[i + 1 :]])
            return model.test_on_batch(x, y)

        check_grad(loss, [weights[i]], [grads[i]], rtol=1e-6, directions=2)
    model.set_weights(weights)
    model.train_on_batch(x, y)
    for before, after, g in zip(weights, model.get_weights(), grads):
        np.testing.assert_allclose(after, before - LEARNING_RATE * g, rtol=1e-12, atol=1e-15)
    return grads


@pytest.mark.slow
def test_200_layer_mlp_compiles_and_steps_on_both_backends(rng, check_grad):
    x, y = rng.standard_normal((6, 8)), rng.integers(0, 3, 6)
    by_numpy = steps_and_gradients("numpy", x, y, check_grad)
    by_llvm = steps_and_gradients("llvm", x, y, check_grad)
    assert np.linalg.norm(by_numpy[0]) > 1e-5  # the first kernel's gradient has not vanished
    for a, b in zip(by_numpy, by_llvm):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * (1 + np.abs(a).max()))
