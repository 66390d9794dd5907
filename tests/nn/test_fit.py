"""fit / evaluate / predict: loss goes down, histories, callbacks, reproducibility, files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from symgrad.callbacks import Callback, EarlyStopping, LambdaCallback, ModelCheckpoint
from symgrad.models import Sequential, load_model
from symgrad.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from tests.nn.helpers import BACKEND, blobs, mlp, targets_for, weights_equal

OPTIMIZERS = {
    "sgd": lambda: SGD(learning_rate=0.1),
    "sgd-nesterov": lambda: SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
    "adagrad": lambda: Adagrad(learning_rate=0.1),
    "rmsprop": lambda: RMSprop(learning_rate=0.01),
    "adam": lambda: Adam(learning_rate=0.01),
    "adamw": lambda: AdamW(learning_rate=0.01),
}
LOSSES = [
    "mse",
    "mae",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_loss_decreases(optimizer, loss, rng):
    model = mlp(loss, optimizer=OPTIMIZERS[optimizer]())
    x, labels = blobs(rng, n=48)
    y = targets_for(loss, labels, 3, rng)
    before = model.evaluate(x, y)
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    after = model.evaluate(x, y)
    assert after < 0.8 * before, (before, after)
    assert len(history.history["loss"]) == 15
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_history_metrics_and_validation(rng):
    model = mlp("sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy", "mse"])
    x, labels = blobs(rng, n=50)
    history = model.fit(x, labels, epochs=3, batch_size=8, validation_split=0.2, verbose=0)
    assert list(history.history) == [
        "loss",
        "accuracy",
        "mse",
        "val_loss",
        "val_accuracy",
        "val_mse",
    ]
    assert history.epoch == [0, 1, 2]
    assert all(0 <= a <= 1 for a in history.history["val_accuracy"])
    loss, accuracy, mse = model.evaluate(x[40:], labels[40:])  # validation_split takes the last 20%
    assert loss == pytest.approx(history.history["val_loss"][-1], rel=1e-12)
    assert accuracy == pytest.approx(history.history["val_accuracy"][-1], rel=1e-12)
    predictions = model.predict(x[40:])
    assert accuracy == pytest.approx(np.mean(np.argmax(predictions, axis=1) == labels[40:]))
    assert mse == pytest.approx(np.mean((predictions - np.eye(3)[labels[40:]]) ** 2))
    assert model.evaluate(x, labels, return_dict=True).keys() == {"loss", "accuracy", "mse"}


def test_accuracy_is_resolved_from_the_loss_and_output(rng):
    x, labels = blobs(rng, n=20, classes=2)
    binary = mlp("binary_crossentropy", classes=1, metrics=["accuracy"])
    binary.fit(x, labels, epochs=1, verbose=0)
    assert type(binary._metric_objects()[0]).__name__ == "BinaryAccuracy"
    categorical = mlp("categorical_crossentropy", classes=2, metrics=["acc"])
    assert type(categorical._metric_objects()[0]).__name__ == "CategoricalAccuracy"
    sparse = mlp("sparse_categorical_crossentropy", classes=2, metrics=["accuracy"])
    assert type(sparse._metric_objects()[0]).__name__ == "SparseCategoricalAccuracy"


def test_last_smaller_batch_reuses_the_compiled_step(rng):
    model = mlp("mse", optimizer=SGD(learning_rate=0.05))
    x, labels = blobs(rng, n=10)
    y = np.eye(3)[labels]
    step = model.compiled_step
    sizes = []
    model.fit(
        x,
        y,
        epochs=1,
        batch_size=4,
        shuffle=False,
        verbose=0,
        callbacks=[LambdaCallback(on_train_batch_end=lambda b, logs: sizes.append(b))],
    )
    assert sizes == [0, 1, 2] and model.compiled_step is step
    assert model.optimizer.iterations == 3


def test_fit_matches_train_on_batch_without_shuffling(rng):
    x, labels = blobs(rng, n=12)
    y = np.eye(3)[labels]
    a, b = mlp("categorical_crossentropy", seed=3), mlp("categorical_crossentropy", seed=3)
    a.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    for _ in range(2):
        for start in range(0, 12, 5):
            b.train_on_batch(x[start : start + 5], y[start : start + 5])
    assert weights_equal(a.get_weights(), b.get_weights())


def test_same_seed_gives_bit_identical_weights(rng):
    x, labels = blobs(rng, n=40)

    def train(seed):
        model = mlp("sparse_categorical_crossentropy", optimizer="adam", seed=seed, dtype="float32")
        model.fit(x, labels, epochs=3, batch_size=8, verbose=0)
        return model.get_weights()

    assert weights_equal(train(7), train(7))
    assert not weights_equal(train(7), train(8))


def test_initial_epoch_and_zero_epochs(rng):
    model = mlp("mse")
    x, labels = blobs(rng, n=8)
    y = np.eye(3)[labels]
    before = model.get_weights()
    assert model.fit(x, y, epochs=0, verbose=0).history == {}
    assert weights_equal(before, model.get_weights())
    history = model.fit(x, y, epochs=3, initial_epoch=1, verbose=0)
    assert history.epoch == [1, 2]


def test_verbose_1_prints_a_keras_progress_bar(rng, capsys):
    model = mlp("categorical_crossentropy", metrics=["accuracy"])
    x, labels = blobs(rng, n=20)
    model.fit(x, np.eye(3)[labels], epochs=2, batch_size=10, verbose=1)
    out = capsys.readouterr().out
    assert out.startswith("Epoch 1/2\n")
    assert "Epoch 2/2\n" in out
    last = out.rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert last.startswith("2/2 [==============================] - ")
    assert "/step - loss: " in last and " - accuracy: " in last


def test_verbose_2_prints_one_line_per_epoch(rng, capsys):
    model = mlp("mse")
    x, labels = blobs(rng, n=20)
    model.fit(x, np.eye(3)[labels], epochs=2, batch_size=10, verbose=2, validation_split=0.5)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("1/1 - ") and " - loss: " in lines[1] and " - val_loss: " in lines[1]
    assert "\r" not in "".join(lines)


def test_verbose_0_is_silent(rng, capsys):
    model = mlp("mse")
    x, labels = blobs(rng, n=20)
    model.fit(x, np.eye(3)[labels], epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_callback_hooks_are_called_in_order(rng):
    calls = []

    class Recorder(Callback):
        def on_train_begin(self, logs=None):
            calls.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            calls.append(f"epoch_begin {epoch}")

        def on_train_batch_end(self, batch, logs=None):
            calls.append(f"batch_end {batch} {sorted(logs)}")

        def on_epoch_end(self, epoch, logs=None):
            calls.append(f"epoch_end {epoch} {sorted(logs)}")

        def on_train_end(self, logs=None):
            calls.append("train_end")

    model = mlp("mse")
    x, labels = blobs(rng, n=6)
    model.fit(x, np.eye(3)[labels], epochs=2, batch_size=3, verbose=0, callbacks=[Recorder()])
    assert calls == [
        "train_begin",
        "epoch_begin 0",
        "batch_end 0 ['loss']",
        "batch_end 1 ['loss']",
        "epoch_end 0 ['loss']",
        "epoch_begin 1",
        "batch_end 0 ['loss']",
        "batch_end 1 ['loss']",
        "epoch_end 1 ['loss']",
        "train_end",
    ]


def test_early_stopping_restores_best_weights(rng):
    model = mlp("mse", optimizer=SGD(learning_rate=0.05))
    x, labels = blobs(rng, n=20)
    y = np.eye(3)[labels]
    snapshots = []
    losses = iter([1.0, 0.5, 0.7, 0.6, 0.9, 0.1])

    def fake_monitor(epoch, logs):  # a scripted validation curve; best at epoch 1
        logs["val_loss"] = next(losses)
        snapshots.append(model.get_weights())

    stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = model.fit(
        x, y, epochs=6, verbose=0, callbacks=[LambdaCallback(on_epoch_end=fake_monitor), stop]
    )
    assert history.epoch == [0, 1, 2, 3] and stop.stopped_epoch == 3 and stop.best_epoch == 1
    assert weights_equal(model.get_weights(), snapshots[1])


def test_early_stopping_min_delta_and_mode(rng):
    stop = EarlyStopping(monitor="accuracy", min_delta=0.1, patience=1)
    assert stop.monitor_op is np.greater and stop.min_delta == 0.1
    assert not stop._is_improvement(0.55, 0.5) and stop._is_improvement(0.65, 0.5)
    with pytest.raises(
        ValueError, match="mode must be 'auto', 'min' or 'max'. Received: mode='up'"
    ):
        EarlyStopping(mode="up")


def test_model_checkpoint_saves_best_only_atomically(rng, tmp_path):
    model = mlp("mse", optimizer=SGD(learning_rate=0.05))
    x, labels = blobs(rng, n=20)
    y = np.eye(3)[labels]
    curve = iter([0.5, 0.4, 0.6])
    saved = []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(curve)

    path = str(tmp_path / "best-{epoch:02d}.npz")
    check = ModelCheckpoint(path, monitor="val_loss", save_best_only=True, save_weights_only=True)
    record = LambdaCallback(on_epoch_end=lambda e, logs: saved.append(model.get_weights()))
    model.fit(x, y, epochs=3, verbose=0, callbacks=[Spy(), check, record])
    assert sorted(os.listdir(tmp_path)) == ["best-01.npz", "best-02.npz"]  # no temporary files left
    fresh = mlp("mse", optimizer=SGD(learning_rate=0.05), seed=99)
    fresh.load_weights(tmp_path / "best-02.npz")
    assert weights_equal(fresh.get_weights(), saved[1])


def test_model_checkpoint_full_model(rng, tmp_path):
    model = mlp("categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    x, labels = blobs(rng, n=20)
    y = np.eye(3)[labels]
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[ModelCheckpoint(str(tmp_path / "m.npz"), monitor="loss")],
    )
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.optimizer.iterations == model.optimizer.iterations
    assert loaded.evaluate(x, y) == model.evaluate(x, y)


def test_save_load_weights_round_trip_with_optimizer_state(rng, tmp_path):
    x, labels = blobs(rng, n=24)
    y = np.eye(3)[labels]
    model = mlp("categorical_crossentropy", optimizer="adam")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    model.save_weights(tmp_path / "w.npz")
    other = mlp("categorical_crossentropy", optimizer="adam", seed=5)
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    # the optimizer state came along: the next steps are identical too
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    other.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert other.optimizer.iterations == model.optimizer.iterations == 9
    assert weights_equal(other.get_weights(), model.get_weights())


def test_load_weights_builds_an_unbuilt_model(rng, tmp_path):
    x, labels = blobs(rng, n=10)
    model = mlp("mse")
    model.save_weights(tmp_path / "w.npz")
    from symgrad.layers import Dense

    lazy = Sequential([Dense(6, activation="tanh"), Dense(3)])
    lazy.load_weights(tmp_path / "w.npz")
    np.testing.assert_allclose(lazy.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)  # float32


def test_backend_is_used(rng):
    model = mlp("mse")
    assert model.compiled_step.backend == BACKEND
