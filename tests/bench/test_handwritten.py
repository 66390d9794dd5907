"""The hand-written NumPy baseline is only worth comparing against if it is right."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from benchmarks.handwritten import ACTIVATIONS, PAIRS, HandMLP

CASES = [(act, out, loss) for act in ACTIVATIONS for out, loss in PAIRS]
IDS = [f"{act}-{out}-{loss}" for act, out, loss in CASES]


def make_targets(rng, n, k, output, loss):
    """Targets in the loss's domain: one-hot rows for cce, {0, 1} for bce, reals for mse."""
    if loss == "cce":
        return np.eye(k)[rng.integers(0, k, n)]
    if loss == "bce":
        return rng.integers(0, 2, (n, k)).astype(float)
    return rng.uniform(0, 1, (n, k)) if output != "linear" else rng.standard_normal((n, k))


@pytest.mark.parametrize(("activation", "output", "loss"), CASES, ids=IDS)
def test_gradients_match_finite_differences(check_grad, rng, activation, output, loss):
    model = HandMLP([4, 5, 3, 3], activation, output, loss, dtype=np.float64, seed=1)
    model.set_weights([p + 0.1 * rng.standard_normal(p.shape) for p in model.params])  # b != 0
    X = rng.standard_normal((6, 4))
    Y = make_targets(rng, 6, 3, output, loss)
    _, grads = model.loss_and_grads(X, Y)
    grads = [g.copy() for g in grads]

    def f(weights):
        model.set_weights(weights)
        return model.loss(X, Y)

    check_grad(f, model.get_weights(), grads, rtol=1e-6, directions=3)


@pytest.mark.parametrize(("activation", "output", "loss"), CASES, ids=IDS)
def test_sgd_step_is_params_minus_lr_grads(rng, activation, output, loss):
    model = HandMLP([4, 6, 2], activation, output, loss, dtype=np.float64)
    X, Y = rng.standard_normal((5, 4)), make_targets(rng, 5, 2, output, loss)
    loss_value, grads = model.loss_and_grads(X, Y)
    expected = [p - 0.3 * g for p, g in zip(model.params, grads, strict=True)]
    assert model.sgd_step(X, Y, lr=0.3) == pytest.approx(loss_value, rel=1e-12)
    for p, e in zip(model.params, expected, strict=True):
        np.testing.assert_allclose(p, e, rtol=1e-12, atol=1e-15)


def test_momentum_steps_follow_keras_form(rng):
    """v <- 0.9 v - lr g, p <- p + v, over two steps (the velocity carries over)."""
    model = HandMLP([4, 6, 2], "tanh", "softmax", "cce", dtype=np.float64, momentum=0.9)
    X, Y = rng.standard_normal((5, 4)), make_targets(rng, 5, 2, "softmax", "cce")
    velocity = [np.zeros_like(p) for p in model.params]
    for _ in range(2):
        _, grads = model.loss_and_grads(X, Y)
        velocity = [0.9 * v - 0.3 * g for v, g in zip(velocity, grads, strict=True)]
        expected = [p + v for p, v in zip(model.params, velocity, strict=True)]
        model.sgd_step(X, Y, lr=0.3)
        for p, e in zip(model.params, expected, strict=True):
            np.testing.assert_allclose(p, e, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("activation", "output", "loss"), CASES, ids=IDS)
def test_extreme_inputs_give_finite_loss_and_grads(rng, activation, output, loss):
    model = HandMLP([3, 4, 2], activation, output, loss, dtype=np.float32)
    X = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0], [0.0, 0.0, 0.0]])
    Y = make_targets(rng, 3, 2, output, loss)
    loss_value, grads = model.loss_and_grads(X, Y)
    assert np.isfinite(loss_value)
    assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("order", [None, "shuffled"])
@pytest.mark.parametrize(("activation", "output", "loss"), CASES, ids=IDS)
def test_epoch_lowers_the_loss(rng, activation, output, loss, order):
    X = rng.standard_normal((100, 5)).astype(np.float32)
    teacher = rng.standard_normal((5, 3))
    logits = X @ teacher
    if loss == "cce":
        Y = np.eye(3)[logits.argmax(1)]
    elif loss == "bce":
        Y = (logits > 0).astype(float)
    else:
        Y = 1 / (1 + np.exp(-logits)) if output != "linear" else logits
    model = HandMLP([5, 8, 3], activation, output, loss)
    before = model.loss(X, Y)
    permutation = rng.permutation(100) if order else None
    mean_batch_loss = model.epoch(X, Y, batch_size=16, lr=0.1, order=permutation)  # 7 batches
    assert np.isfinite(mean_batch_loss)
    assert model.loss(X, Y) < before


def test_softmax_is_stable_and_sums_to_one():
    model = HandMLP([2, 3], output="softmax", loss="cce", dtype=np.float32)
    model.set_weights([np.array([[1e4, 0, -1e4], [0, 1, 0]]), np.zeros(3)])
    P = model.predict(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(P, [[1, 0, 0], [0, 0, 1]], atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": [3]}, "sizes"),
        ({"activation": "gelu"}, "activation='gelu'"),
        ({"output": "linear", "loss": "cce"}, "output='linear', loss='cce'"),
        ({"dtype": np.int32}, "dtype=int32"),
        ({"momentum": 1.5}, "momentum=1.5"),
    ],
)
def test_bad_arguments_are_quoted(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HandMLP(**{"sizes": [3, 2], **kwargs})


@pytest.mark.parametrize("peer", ["torch", "jax"])
@pytest.mark.parametrize(
    ("activation", "output", "loss"),
    [("relu", "softmax", "cce"), ("tanh", "sigmoid", "bce"), ("sigmoid", "linear", "mse")],
)
def test_peer_steps_match_the_baseline(rng, peer, activation, output, loss):
    """PyTorch / JAX steps in benchmarks.bench_peers train the same network (the peers extra)."""
    if os.environ.get("SYMGRAD_REQUIRE_PEERS"):  # CI: a missing peer fails, never skips
        importlib.import_module(peer)
    else:
        pytest.importorskip(peer)
    from benchmarks import bench_peers

    model = HandMLP([4, 6, 3], activation, output, loss, dtype=np.float64)
    X, Y = rng.standard_normal((8, 4)), make_targets(rng, 8, 3, output, loss)
    step = getattr(bench_peers, f"{peer}_sgd_step")(model, X, Y, lr=0.2)
    for _ in range(3):
        assert step() == pytest.approx(model.sgd_step(X, Y, lr=0.2), rel=1e-9)
    for theirs, ours in zip(step.get_weights(), model.params, strict=True):
        np.testing.assert_allclose(theirs, ours, rtol=1e-9, atol=1e-12)
