"""Data-parallel fit with batch normalization and sample weights, against one process."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from symgrad import distributed
from symgrad.layers import BatchNormalization, Dense
from symgrad.models import Sequential

BATCH = 77  # 600 rows: shards of 39 and 38 rows, the last batch 31 and 30


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data[:600] / 16.0, d.target[:600]


def make(optimizer="adam", normalized=2, seed=3, backend="llvm", weighted_metrics=None, frozen=()):
    """``frozen``: the indices of the BatchNormalizations set ``trainable=False`` before compile."""
    layers = [Dense(16, "tanh", input_dim=64)]
    for k in range(normalized):  # each BatchNormalization a round trip forward and back
        layers += [BatchNormalization(momentum=0.9), Dense(16, "tanh")]
        layers[-2].trainable = k not in frozen
    model = Sequential([*layers, Dense(10, "softmax")])
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        backend=backend,
        dtype="float64",
        seed=seed,
        weighted_metrics=weighted_metrics,
    )
    return model


def assert_same_training(spread, alone, h2, h1, atol=1e-12):
    assert spread.optimizer.iterations == alone.optimizer.iterations
    for got, want in zip(spread.get_weights(), alone.get_weights()):  # the moving statistics too
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    for got, want in zip(spread.optimizer.variables, alone.optimizer.variables):
        np.testing.assert_allclose(got.value, want.value, rtol=0, atol=atol)
    assert set(h2.history) == set(h1.history)
    for key, values in h1.history.items():
        np.testing.assert_allclose(h2.history[key], values, rtol=1e-12, err_msg=key)


def test_sync_batch_normalization_follows_the_single_process_trajectory(digits, cluster):
    """The batch statistics are the global batch's (sync BN): weights, moving statistics
    and slots to 1e-12 after 16 steps of Adam, two BatchNormalizations deep."""
    x, y = digits
    alone, spread = make(), make()
    h1 = alone.fit(x, y, epochs=2, batch_size=BATCH, verbose=0)
    strategy = distributed.DataParallel(2)
    h2 = spread.fit(x, y, epochs=2, batch_size=BATCH, verbose=0, strategy=strategy)
    assert spread.optimizer.iterations == 16
    moving = spread.layers[1].moving_variance.numpy()
    assert np.abs(moving - 1).min() > 1e-3  # the moving statistics moved
    assert_same_training(spread, alone, h2, h1)


def test_sync_sample_and_class_weights_follow_the_single_process_trajectory(digits, cluster):
    """sum(w l) / B over the global batch: each shard's sum(w l) / rows weighted by its rows;
    weighted metrics count the samples' weights."""
    x, y = digits
    weights = np.random.default_rng(0).uniform(0.0, 3.0, len(x))
    classes = {0: 4.0, 7: 0.25}
    for normalized in (0, 1):
        alone, spread = (
            make("sgd", normalized, backend="numpy", weighted_metrics=["accuracy"])
            for _ in range(2)
        )
        given = {"sample_weight": weights, "class_weight": classes, "verbose": 0}
        h1 = alone.fit(x, y, epochs=2, batch_size=BATCH, **given)
        strategy = distributed.DataParallel(2)
        h2 = spread.fit(x, y, epochs=2, batch_size=BATCH, strategy=strategy, **given)
        assert_same_training(spread, alone, h2, h1)
        assert h2.history["weighted_accuracy"] != h2.history["accuracy"]
    plain = make("sgd", 1, backend="numpy")
    plain.fit(x, y, epochs=2, batch_size=BATCH, verbose=0)
    assert not np.allclose(plain.get_weights()[0], spread.get_weights()[0], atol=1e-4)


def test_local_sgd_trains_each_shard_and_averages_the_moving_statistics(digits, cluster):
    """Two workers, one round, rows in order: the average of two fits on the halves, the
    moving statistics and slots averaged with the weights; sample weights go with the rows."""
    x, y = digits
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(x))
    spread = make("adam", 1, backend="numpy", weighted_metrics=["accuracy"])
    strategy = distributed.DataParallel(2, mode="local", local_epochs=1)
    history = spread.fit(
        x, y, epochs=1, batch_size=64, shuffle=False, sample_weight=weights, verbose=0,
        strategy=strategy,
    )  # fmt: skip
    halves, accuracies, totals = [], [], []
    for rows in np.array_split(np.arange(len(x)), 2):
        half = make("adam", 1, backend="numpy", weighted_metrics=["accuracy"])
        logs = half.fit(
            x[rows], y[rows], epochs=1, batch_size=32, shuffle=False,
            sample_weight=weights[rows], verbose=0,
        ).history  # fmt: skip
        halves.append(half)
        accuracies.append(logs["weighted_accuracy"][0])
        totals.append(weights[rows].sum())
    # the halves' weighted accuracies, each counting its samples' weights
    want = np.dot(accuracies, totals) / np.sum(totals)
    np.testing.assert_allclose(history.history["weighted_accuracy"], [want], rtol=1e-12)
    for k, got in enumerate(spread.get_weights()):
        want = (halves[0].get_weights()[k] + halves[1].get_weights()[k]) / 2
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    for k, var in enumerate(spread.optimizer.variables):
        want = (halves[0].optimizer.variables[k].value + halves[1].optimizer.variables[k].value) / 2
        np.testing.assert_allclose(var.value, want, rtol=0, atol=1e-12)
    assert spread.optimizer.iterations == halves[0].optimizer.iterations == 10


def test_sync_with_a_frozen_batch_normalization_follows_the_single_process_trajectory(
    digits, cluster
):
    """A frozen BatchNormalization runs as in predict (Keras): its moving statistics (set
    as if pretrained), gamma and beta stay bit for bit; the trainable one after it still
    normalizes with the global batch. Weights and slots to 1e-12 after 16 steps."""
    x, y = digits
    alone, spread = make(frozen=(0,)), make(frozen=(0,))
    rng = np.random.default_rng(4)
    pretrained = [rng.uniform(0.5, 2.0, 16), *rng.standard_normal((2, 16))]
    pretrained.append(rng.uniform(0.5, 2.0, 16))
    for model in (alone, spread):
        model.layers[1].set_weights(pretrained)
    moving = spread.layers[3].get_weights()[3]  # the trainable one's moving variance
    h1 = alone.fit(x, y, epochs=2, batch_size=BATCH, verbose=0)
    strategy = distributed.DataParallel(2)
    h2 = spread.fit(x, y, epochs=2, batch_size=BATCH, verbose=0, strategy=strategy)
    assert spread.optimizer.iterations == 16
    assert_same_training(spread, alone, h2, h1)
    for got, want in zip(spread.layers[1].get_weights(), pretrained):
        np.testing.assert_array_equal(got, want)
    assert np.abs(spread.layers[3].get_weights()[3] - moving).min() > 1e-3
