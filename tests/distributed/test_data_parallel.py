"""Data-parallel fit: synchronous mode follows one process to 1e-12, local SGD, faults."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from symgrad import NonFiniteLossError, distributed
from symgrad.callbacks import Callback, ModelCheckpoint
from symgrad.layers import Dense
from symgrad.models import Sequential, load_model
from symgrad.optimizers import SGD, Adam


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data[:600] / 16.0, d.target[:600]


def make(optimizer="adam", backend="llvm", units=16, seed=3, metrics=("accuracy",)):
    model = Sequential([Dense(units, "tanh", input_dim=64), Dense(10, "softmax")])
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=list(metrics),
        backend=backend,
        dtype="float64",
        seed=seed,
    )
    return model


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Received: mode='async'"):
        distributed.DataParallel(2, mode="async")
    with pytest.raises(ValueError, match="num_workers"):
        distributed.DataParallel(0)
    with pytest.raises(ValueError, match="Received: -1"):
        distributed.DataParallel(2, timeout=-1)
    model = make(backend="numpy")
    with pytest.raises(TypeError, match="Received: strategy=2"):
        model.fit(np.zeros((4, 64)), np.zeros(4, int), strategy=2)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_sync_follows_the_single_process_trajectory(digits, cluster, optimizer):
    """2 workers, global batch 75 (shards of 38 and 37 rows): weights to 1e-12."""
    x, y = digits
    alone, spread = make(optimizer), make(optimizer)
    h1 = alone.fit(x, y, epochs=2, batch_size=64, verbose=0)
    h2 = spread.fit(x, y, epochs=2, batch_size=64, verbose=0, strategy=distributed.DataParallel(2))
    assert spread.optimizer.iterations == alone.optimizer.iterations == 20
    for got, want in zip(spread.get_weights(), alone.get_weights()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    for got, want in zip(spread.optimizer.variables, alone.optimizer.variables):
        np.testing.assert_allclose(got.value, want.value, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=1e-12)
    assert h2.history["accuracy"] == h1.history["accuracy"]


def test_sync_sums_the_workers_metric_statistics(digits, cluster):
    """Precision and recall: the shards' counts added per batch, the ratio at the end."""
    x, y = digits
    metrics = ("precision", "recall", "accuracy")
    alone, spread = make(metrics=metrics), make(metrics=metrics)
    h1 = alone.fit(x, y, epochs=2, batch_size=64, verbose=0)
    h2 = spread.fit(x, y, epochs=2, batch_size=64, verbose=0, strategy=distributed.DataParallel(2))
    for name in metrics:
        np.testing.assert_allclose(h2.history[name], h1.history[name], rtol=1e-12)


class Recorder(Callback):
    """Counts batches; at ``kill`` = (epoch, batch) kills a worker's process after that step."""

    def __init__(self, strategy=None, kill=None):
        super().__init__()
        self.strategy, self.kill = strategy, kill
        self.batches, self.epoch_weights, self.snapshot = 0, [], None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.kill == (self.epoch, batch):
            self.snapshot = self.model.get_weights()
            os.kill(self.strategy.worker_pids()[1], signal.SIGKILL)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_weights.append(self.model.get_weights())


def test_sync_runs_callbacks_validation_and_checkpoints(digits, cluster, tmp_path):
    x, y = digits
    model = make("sgd")
    recorder = Recorder()
    path = tmp_path / "model-{epoch:02d}.npz"
    history = model.fit(
        x,
        y,
        epochs=2,
        batch_size=100,
        validation_split=0.25,
        verbose=0,
        callbacks=[recorder, ModelCheckpoint(str(path))],
        strategy=distributed.DataParallel(2),
    )
    assert recorder.batches == 2 * 5  # 450 training rows in batches of 100
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    saved = load_model(tmp_path / "model-02.npz")
    for got, want in zip(saved.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_sync_non_finite_loss_stops_as_in_one_process(digits, cluster):
    """A linear model, MSE and a huge rate: the second step's loss overflows in both."""
    x, y = digits
    target = (y == 3).astype(float)[:, None]
    errors, weights = [], []
    for strategy in (None, distributed.DataParallel(2)):
        model = Sequential([Dense(1, input_dim=64)])
        model.compile(optimizer=SGD(1e300), loss="mse", backend="llvm", dtype="float64", seed=1)
        with pytest.raises(NonFiniteLossError) as info:
            model.fit(x, target, epochs=2, batch_size=64, verbose=0, strategy=strategy)
        errors.append((info.value.epoch, info.value.batch, model.optimizer.iterations))
        weights.append(model.get_weights())
        assert all(np.isfinite(w).all() for w in model.get_weights())
    assert errors[0] == errors[1] and errors[0][0] == 1
    for got, want in zip(*weights):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_killed_worker_stops_fit_with_the_last_step_s_weights(digits, cluster, tmp_path):
    x, y = digits
    model = make("adam")
    strategy = distributed.DataParallel(2, timeout=120)
    recorder = Recorder(strategy, kill=(1, 3))  # after step 4 of epoch 2
    path = tmp_path / "weights.npz"
    checkpoint = ModelCheckpoint(str(path), save_weights_only=True)
    with pytest.raises(distributed.WorkerLost) as info:
        model.fit(
            x, y, epochs=3, batch_size=64, verbose=0, callbacks=[recorder, checkpoint],
            strategy=strategy,
        )  # fmt: skip
    err = info.value
    assert (err.worker, err.epoch) == (1, 2)
    assert "worker 1 died" in str(err) and "in epoch 2" in str(err)
    assert "optimizer iteration 14" in str(err)  # 10 steps of epoch 1, 4 of epoch 2
    assert model.optimizer.iterations == 14
    for got, want in zip(model.get_weights(), recorder.snapshot):
        np.testing.assert_array_equal(got, want)
    saved = make("adam")
    saved.load_weights(path)  # the checkpoint of epoch 1, intact
    for got, want in zip(saved.get_weights(), recorder.epoch_weights[0]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_local_sgd_reaches_the_single_process_test_accuracy(cluster):
    d = load_digits()
    x, x_test, y, y_test = train_test_split(
        d.data / 16.0, d.target, test_size=0.2, random_state=0, stratify=d.target
    )
    accuracies = []
    for strategy in (None, distributed.DataParallel(2, mode="local", local_epochs=1)):
        model = make(Adam(learning_rate=0.01), units=32, seed=0)
        model.fit(x, y, epochs=20, batch_size=32, verbose=0, strategy=strategy)
        accuracies.append(model.evaluate(x_test, y_test)[1])
    assert accuracies[1] >= accuracies[0] - 0.005, accuracies
