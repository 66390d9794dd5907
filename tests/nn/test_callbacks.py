"""Keras's callbacks: every hook called at its moment, ReduceLROnPlateau, LearningRateScheduler,
CSVLogger, TerminateOnNaN and BackupAndRestore, on both backends."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from symgrad.callbacks import (
    HOOKS,
    BackupAndRestore,
    Callback,
    CSVLogger,
    LambdaCallback,
    LearningRateScheduler,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from symgrad.compiler import BACKENDS
from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.nn.trainer import NonFiniteLossError
from symgrad.optimizers import SGD, schedules
from tests.nn.helpers import blobs

BACKEND_NAMES = list(BACKENDS)


def _model(backend, optimizer=None, seed=0, loss="categorical_crossentropy"):
    output = "softmax" if loss == "categorical_crossentropy" else None
    model = Sequential([Dense(5, activation="tanh", input_dim=4), Dense(3, activation=output)])
    model.compile(
        optimizer=optimizer or SGD(0.1),
        loss=loss,
        metrics=["accuracy"] if loss == "categorical_crossentropy" else None,
        backend=backend,
        dtype="float64",
        seed=seed,
    )
    return model


def _data(rng, n=12):
    x, labels = blobs(rng, n=n)
    return x, np.eye(3)[labels]


class Recorder(Callback):
    """Every hook of HOOKS (found by introspection), recorded with its argument."""

    def __init__(self):
        super().__init__()
        self.calls = []
        for hook in HOOKS:
            setattr(self, hook, self._recorder(hook))

    def _recorder(self, hook):
        def record(*args):
            where = [a for a in args[:1] if isinstance(a, int)]
            self.calls.append(" ".join([hook.removeprefix("on_"), *map(str, where)]))

        return record


def test_the_hook_table_is_keras_s():
    assert set(HOOKS) == {
        f"on_{kind}_{edge}"
        for kind in ("train", "test", "predict", "epoch", "train_batch", "test_batch")
        + ("predict_batch",)
        for edge in ("begin", "end")
    }


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_every_hook_is_called_at_its_moment(backend, rng):
    model = _model(backend)
    x, y = _data(rng, n=8)
    recorder = Recorder()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[recorder],
              validation_data=(x[:6], y[:6]))  # fmt: skip
    assert recorder.calls == [
        "train_begin",
        "epoch_begin 0",
        "train_batch_begin 0",
        "train_batch_end 0",
        "train_batch_begin 1",
        "train_batch_end 1",
        "test_begin",  # the validation, as evaluate runs it
        "test_batch_begin 0",
        "test_batch_end 0",
        "test_batch_begin 1",
        "test_batch_end 1",
        "test_end",
        "epoch_end 0",
        "train_end",
    ]
    recorder.calls.clear()
    model.evaluate(x, y, batch_size=5, callbacks=[recorder])
    assert recorder.calls == [
        "test_begin",
        "test_batch_begin 0",
        "test_batch_end 0",
        "test_batch_begin 1",
        "test_batch_end 1",
        "test_end",
    ]
    recorder.calls.clear()
    outputs = []
    batch_end = LambdaCallback(on_predict_batch_end=lambda b, logs: outputs.append(logs["outputs"]))
    p = model.predict(x, batch_size=3, callbacks=[recorder, batch_end])
    assert recorder.calls == [
        "predict_begin",
        *(f"predict_batch_{edge} {b}" for b in range(3) for edge in ("begin", "end")),
        "predict_end",
    ]
    np.testing.assert_array_equal(np.concatenate(outputs), p)


def test_test_batch_logs_are_running_means(rng):
    model = _model("numpy")
    x, y = _data(rng, n=8)
    seen = []
    model.evaluate(
        x, y, batch_size=4, callbacks=[LambdaCallback(on_test_end=lambda logs: seen.append(logs))]
    )
    assert seen[0]["loss"] == pytest.approx(model.evaluate(x, y, return_dict=True)["loss"])


def test_lambda_callback_names_the_known_hooks():
    with pytest.raises(TypeError, match=r"unknown hook\(s\): on_epoch_ends. Known hooks: on_train"):
        LambdaCallback(on_epoch_ends=print)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_reduce_lr_on_plateau_follows_keras(backend, rng):
    """Keras's rule replayed on a scripted monitor: patience, min_delta, cooldown, min_lr."""
    values = [1.0, 0.9, 0.89995, 0.95, 0.95, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    model = _model(backend, SGD(0.1))
    x, y = _data(rng)
    feed = LambdaCallback(on_epoch_end=lambda e, logs: logs.update(score=values[e]))
    plateau = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, cooldown=1,
                                min_delta=1e-3, min_lr=0.02)  # fmt: skip
    history = model.fit(x, y, epochs=len(values), verbose=0, callbacks=[feed, plateau])

    # the reference, from Keras 3's documented rule
    rate, best, wait, cooldown, rates = 0.1, np.inf, 0, 0, []
    for v in values:
        rates.append(rate)
        cooling = cooldown > 0
        if cooling:
            cooldown, wait = cooldown - 1, 0
        if v < best - 1e-3:
            best, wait = v, 0
        elif not cooling:
            wait += 1
            if wait >= 2 and rate > 0.02:
                rate, cooldown, wait = max(rate * 0.5, 0.02), 1, 0
    assert history.history["learning_rate"] == pytest.approx(rates, rel=1e-12)
    assert rates[-1] == 0.02 and len(set(rates)) == 4  # it cut three times, down to min_lr
    assert model.optimizer.learning_rate == pytest.approx(0.02)


def test_reduce_lr_on_plateau_bad_input():
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\).*Received: factor=1.5"):
        ReduceLROnPlateau(factor=1.5)
    with pytest.raises(
        ValueError, match=r"mode must be 'auto', 'min' or 'max'. Received: mode='up'"
    ):
        ReduceLROnPlateau(mode="up")
    model = _model("numpy", SGD(schedules.ExponentialDecay(0.1, 10, 0.5)))
    x, y = _data(np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"the optimizer's is a schedule. Received: learning_rate="):
        model.fit(x, y, verbose=0, callbacks=[ReduceLROnPlateau(monitor="loss")])


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_learning_rate_scheduler_sets_each_epoch_s_rate(backend, rng):
    x, y = _data(rng)
    model = _model(backend, SGD(0.1))
    scheduler = LearningRateScheduler(lambda epoch, rate: rate * 0.5 if epoch else rate)
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0,
                        callbacks=[scheduler])  # fmt: skip
    assert history.history["learning_rate"] == [0.1, 0.05, 0.025]
    assert history.params["native_epochs"] == bool(BACKENDS[backend].epochs)
    by_hand = _model(backend, SGD(0.1))
    for rate in (0.1, 0.05, 0.025):
        by_hand.optimizer.learning_rate = rate
        by_hand.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), by_hand.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    one_argument = LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[one_argument])
    assert history.history["learning_rate"] == [0.01, 0.02]


def test_learning_rate_scheduler_bad_input(rng):
    x, y = _data(rng)
    model = _model("numpy")
    with pytest.raises(ValueError, match=r"must return a number. Received: 'fast' at epoch 0"):
        model.fit(x, y, verbose=0, callbacks=[LearningRateScheduler(lambda e: "fast")])
    with pytest.raises(ValueError, match=r"learning_rate must be > 0. Received: learning_rate=-1"):
        model.fit(x, y, verbose=0, callbacks=[LearningRateScheduler(lambda e: -1)])
    with pytest.raises(TypeError, match=r"needs a function epoch -> rate. Received: schedule=0.1"):
        LearningRateScheduler(0.1)


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_csv_logger_writes_a_row_per_epoch(backend, rng, tmp_path):
    x, y = _data(rng)
    model = _model(backend)
    path = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=2, verbose=0, validation_split=0.25,
                        callbacks=[CSVLogger(path)])  # fmt: skip
    rows = _rows(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [int(r[0]) for r in rows[1:]] == [0, 1]
    for r, epoch in zip(rows[1:], range(2)):
        for key, cell in zip(rows[0][1:], r[1:]):
            assert float(cell) == history.history[key][epoch]  # repr: every digit
    model.fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(path, append=True)])
    rows = _rows(path)
    assert rows[0][0] == "epoch" and [r[0] for r in rows[1:]] == ["0", "1", "0"]
    assert len(rows[3]) == 5 and rows[3][3:] == ["NA", "NA"]  # no validation this time
    model.fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(path, separator=";")])
    assert path.read_text().splitlines()[0] == "epoch;accuracy;loss"
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]  # no temporary files left
    with pytest.raises(
        ValueError, match=r"separator must be one character .* Received: separator=',,'"
    ):
        CSVLogger(path, separator=",,")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_terminate_on_nan_ends_fit_with_the_last_good_weights(backend, rng, capsys):
    x, y = _data(rng, n=16)
    y[9] = 1e200  # the third batch of 4: its squared error overflows
    model = _model(backend, SGD(0.1), loss="mse")
    before = model.get_weights()
    with pytest.raises(NonFiniteLossError):
        model.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    model = _model(backend, SGD(0.1), loss="mse")
    stop = TerminateOnNaN()
    seen = []
    history = model.fit(
        x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
        callbacks=[stop, LambdaCallback(on_train_end=lambda logs: seen.append("end"))],
    )  # fmt: skip
    assert stop.stopped_batch == 2 and seen == ["end"] and history.history == {}
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out
    assert model.optimizer.iterations == 2  # the two good steps
    by_hand = _model(backend, SGD(0.1), loss="mse")
    assert all(np.array_equal(a, b) for a, b in zip(by_hand.get_weights(), before))
    by_hand.fit(x[:8], y[:8], batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), by_hand.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_backup_and_restore_resumes_an_interrupted_fit(backend, rng, tmp_path):
    """Four epochs interrupted after the second, then resumed, equal four epochs in one go."""
    x, y = _data(rng, n=16)
    backup = tmp_path / "backup"
    whole = _model(backend)
    whole.fit(x, y, epochs=4, batch_size=4, shuffle=False, verbose=0)

    class Interrupt(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    broken = _model(backend)
    with pytest.raises(KeyboardInterrupt):
        broken.fit(x, y, epochs=4, batch_size=4, shuffle=False, verbose=0,
                   callbacks=[BackupAndRestore(backup), Interrupt()])  # fmt: skip
    assert json.loads((backup / "training_metadata.json").read_text()) == {"epoch": 2}
    resumed = _model(backend, seed=5)  # other initial weights: all comes from the backup
    epochs = []
    resumed.fit(x, y, epochs=4, batch_size=4, shuffle=False, verbose=0,
                callbacks=[BackupAndRestore(backup),
                           LambdaCallback(on_epoch_begin=lambda e, logs: epochs.append(e))])  # fmt: skip
    assert epochs == [2, 3]  # epoch 1 was backed up before the interrupt
    assert resumed.optimizer.iterations == whole.optimizer.iterations == 16
    for a, b in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert not backup.exists()  # training ended normally: the backup is deleted


def test_backup_and_restore_bad_input(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"save_freq must be 'epoch' or a number of batches > 0. Received: save_freq=0",
    ):
        BackupAndRestore(tmp_path, save_freq=0)
