"""The progress bar moves during a native epoch: the epoch runs as a few native calls of
whole batches, bit-identical to one call."""

from __future__ import annotations

import re

import numpy as np
import pytest

from codegen.llvm.backend import LLVMEpoch
from symgrad.callbacks import Callback
from symgrad.layers import Dense, Dropout
from symgrad.models import Sequential
from symgrad.nn import trainer
from symgrad.nn.trainer import NativePace, NonFiniteLossError
from symgrad.optimizers import SGD, Adam
from tests.nn.helpers import blobs


def model_for(dtype="float64", optimizer=None, loss="sparse_categorical_crossentropy"):
    model = Sequential(
        [
            Dense(6, activation="tanh", input_dim=4),
            Dropout(0.25, seed=1),  # masks of the step counter: the counter must carry over
            Dense(3, activation="softmax" if loss != "mse" else None),
        ],
        name="m",
    )
    model.compile(
        optimizer=optimizer or Adam(0.02),
        loss=loss,
        metrics=["accuracy", "mse"] if loss != "mse" else None,
        backend="llvm",
        dtype=dtype,
        seed=3,
    )
    return model


@pytest.fixture
def calls(monkeypatch):
    """Every native epoch call: the number of rows it ran."""
    seen = []
    original = LLVMEpoch.__call__

    def counted(self, x, y, *rest, **kwargs):
        seen.append(len(kwargs["order"]))
        return original(self, x, y, *rest, **kwargs)

    monkeypatch.setattr(LLVMEpoch, "__call__", counted)
    return seen


@pytest.fixture
def one_batch_per_call(monkeypatch):
    monkeypatch.setattr(trainer, "NATIVE_UPDATE_SECONDS", 0.0)
    monkeypatch.setattr(trainer, "FIRST_CALL_BATCHES", 1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_calls_of_whole_batches_equal_one_call(dtype, rng, calls, one_batch_per_call, capsys):
    """Weights, optimizer slots, step counter and history bit-identical to one call per epoch."""
    x, labels = blobs(rng, n=47)  # batch 8: six batches, the last of 7 rows
    runs = []
    for verbose in (0, 1):  # 0: one call per epoch; 1 (the bar): a call per batch
        calls.clear()
        model = model_for(dtype)
        history = model.fit(x, labels, epochs=3, batch_size=8, verbose=verbose)
        runs.append((model, history, list(calls)))
    (single, h_single, c_single), (chunked, h_chunked, c_chunked) = runs
    assert c_single == [47] * 3
    assert c_chunked == ([8] * 5 + [7]) * 3
    for a, b in zip(single.get_weights(), chunked.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(single.optimizer.variables, chunked.optimizer.variables):
        np.testing.assert_array_equal(a.value, b.value)
    assert single.optimizer.iterations == chunked.optimizer.iterations == 18
    assert h_single.history == h_chunked.history


def test_the_bar_moves_during_a_native_epoch(rng, calls, one_batch_per_call, capsys):
    x, labels = blobs(rng, n=40)
    ends = []

    class ChunkEnds(Callback):  # happy with a batch hook per call, as the bar is
        def uses_batch_hooks(self):
            return False

        def on_train_batch_end(self, batch, logs=None):
            ends.append((batch, dict(logs)))

    model = model_for()
    history = model.fit(x, labels, epochs=1, batch_size=10, verbose=1, callbacks=[ChunkEnds()])
    assert history.params["native_epochs"] and calls == [10] * 4
    out = capsys.readouterr().out
    assert re.search(r"\r1/4 \[======>\s*\] - ETA: ", out), out  # a bar before the epoch ended
    assert "\r4/4 [==============================] - " in out
    assert [b for b, _ in ends] == [0, 1, 2, 3]
    # the logs of the last call are the epoch's (running means over the calls so far)
    assert ends[-1][1] == {k: v[0] for k, v in history.history.items()}


def test_a_failing_call_reports_the_batch_of_the_epoch(rng, one_batch_per_call):
    """nan in the third call's batch: epoch, batch and step counter as with one call."""
    x, labels = blobs(rng, n=64)
    results = []
    for verbose in (0, 1):
        model = model_for(optimizer=SGD(learning_rate=40.0), loss="mse")
        y = np.eye(3)[labels] * 100
        with pytest.raises(NonFiniteLossError) as info:
            model.fit(x * 50, y, epochs=20, batch_size=4, verbose=verbose)
        err = info.value
        results.append((err.epoch, err.batch, model.optimizer.iterations, model.get_weights()))
    (e1, b1, i1, w1), (e2, b2, i2, w2) = results
    assert (e1, b1, i1) == (e2, b2, i2) and i1 == 16 * (e1 - 1) + b1 - 1
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_without_a_bar_an_epoch_is_one_call(rng, calls):
    x, labels = blobs(rng, n=40)
    model_for().fit(x, labels, epochs=2, batch_size=10, verbose=2)
    assert calls == [40, 40]


def test_pace_sizes_calls_from_the_time_of_a_batch():
    pace = NativePace(0.1)
    assert pace.batches(100) == trainer.FIRST_CALL_BATCHES  # nothing timed yet
    pace.timed(4, 0.004)  # 1 ms a batch: 100 batches in 0.1 s
    assert pace.batches(1000) == 100 and pace.batches(30) == 30
    pace.timed(2, 1.0)  # slower than the target: still a batch per call
    assert pace.batches(10) == 1
    assert NativePace(None).batches(57) == 57
