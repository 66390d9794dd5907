"""load_weights checks the whole file, then applies it: a bad file changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad import Dense, Sequential
from symgrad.nn.optimizers import Adam


def trained(seed=0):
    m = Sequential([Dense(4, activation="tanh", input_dim=3), Dense(2, activation="softmax")])
    m.compile(optimizer=Adam(), loss="sparse_categorical_crossentropy", dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    m.fit(rng.normal(size=(12, 3)), np.arange(12) % 2, epochs=1, batch_size=4, verbose=0)
    return m


def state(m):
    return (
        [w.copy() for w in m.get_weights()],
        {v.path: v.value.copy() for v in m.optimizer.variables},
        m.optimizer.iterations,
    )


def assert_state(m, want):
    weights, slots, iterations = state(m)
    for a, b in zip(weights, want[0]):
        np.testing.assert_array_equal(a, b)
    assert slots.keys() == want[1].keys()
    for path in slots:
        np.testing.assert_array_equal(slots[path], want[1][path])
    assert iterations == want[2]


@pytest.fixture
def saved(tmp_path):
    """The arrays of a file saved by another trained model (other seed, other values)."""
    other = trained(seed=1)
    other.fit(np.ones((4, 3)), np.zeros(4), epochs=1, batch_size=4, verbose=0)
    other.save_weights(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as f:
        return {k: f[k] for k in f.files}


def write(tmp_path, arrays, name="bad.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


VELOCITY = "optimizer/dense/kernel/velocity"
MOMENTUM = "optimizer/dense_1/bias/momentum"
BAD_FILES = {
    "iterations nan": (
        {"optimizer/iterations": np.array(np.nan)},
        r"optimizer/iterations must be a non-negative integer .*Received: iterations=nan",
    ),
    "iterations negative": (
        {"optimizer/iterations": np.array(-3)},
        r"Received: iterations=-3",
    ),
    "iterations fractional": (
        {"optimizer/iterations": np.array(2.5)},
        r"Received: iterations=2.5",
    ),
    "iterations array": (
        {"optimizer/iterations": np.array([1, 2])},
        r"Received: iterations='an array of shape \(2,\)'",
    ),
    "slot nan": (
        {MOMENTUM: np.full((1, 2), np.nan)},
        r"optimizer slot dense_1/bias/momentum must hold finite numbers. "
        r"Received: 2 non-finite entries \(first: np.float64\(nan\)\)",
    ),
    "velocity negative": (
        {VELOCITY: -np.ones((3, 4))},
        r"optimizer slot dense/kernel/velocity is a running sum of squared gradients and "
        r"cannot be negative. Received: min np.float64\(-1.0\)",
    ),
    "slot text": (
        {MOMENTUM: np.array([["a", "b"]])},
        r"dense_1/bias/momentum must hold finite numbers. Received: an array of dtype <U1",
    ),
    "weight inf": (
        {"dense/bias": np.array([[1.0, np.inf, 0.0, 0.0]])},
        r"dense/bias",
    ),
    "weight shape": (
        {"dense_1/kernel": np.ones((4, 3))},
        r"Weight dense_1/kernel has shape \(4, 2\). Received: an array of shape \(4, 3\)",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_a_bad_entry_raises_and_changes_nothing(case, saved, tmp_path):
    changes, message = BAD_FILES[case]
    m = trained()
    before = state(m)
    path = write(tmp_path, {**saved, **changes})
    with pytest.raises(ValueError, match=message):
        m.load_weights(path)
    assert_state(m, before)
    m.load_weights(write(tmp_path, saved, "good_again.npz"))  # the sound file loads
    assert m.optimizer.iterations == int(saved["optimizer/iterations"]) != before[2]
    np.testing.assert_array_equal(m.get_weights()[0], saved["dense/kernel"])
    np.testing.assert_array_equal(
        m.optimizer.slots[("dense/kernel", "velocity")].value, saved[VELOCITY]
    )


def test_a_missing_weight_raises_and_changes_nothing(saved, tmp_path):
    m = trained()
    before = state(m)
    del saved["dense_1/bias"]
    with pytest.raises(ValueError, match="does not hold weights for dense_1/bias; it holds: "):
        m.load_weights(write(tmp_path, saved))
    assert_state(m, before)


def test_an_npy_file_is_named_as_such(tmp_path):
    m = trained()
    before = state(m)
    np.save(tmp_path / "kernel.npy", np.ones((3, 4)))
    with pytest.raises(
        ValueError,
        match=r"kernel.npy is not a weights file \(model.save_weights\) \(an .npz archive of "
        r"named arrays\). Received: one array of shape \(3, 4\) \(an .npy file\?\)",
    ):
        m.load_weights(tmp_path / "kernel.npy")
    assert_state(m, before)


@pytest.mark.parametrize(
    "content",
    [b"not a zip file at all", b"PK\x03\x04" + bytes(40)],
    ids=["garbage", "truncated zip"],
)
def test_an_unreadable_file_raises_value_error(content, tmp_path):
    m = trained()
    before = state(m)
    (tmp_path / "w.npz").write_bytes(content)
    with pytest.raises(ValueError, match=r"Cannot read .*w.npz as a weights file"):
        m.load_weights(tmp_path / "w.npz")
    assert_state(m, before)


def test_pickled_arrays_are_not_loaded(saved, tmp_path):
    m = trained()
    before = state(m)
    path = write(tmp_path, {**saved, "dense/kernel": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="Cannot read .*allow_pickle"):
        m.load_weights(path)
    assert_state(m, before)


def test_an_unbuilt_model_stays_unbuilt_after_a_bad_file(saved, tmp_path):
    m = Sequential([Dense(4, activation="tanh"), Dense(2, activation="softmax")])
    m.compile(optimizer=Adam(), loss="sparse_categorical_crossentropy", dtype="float64")
    path = write(tmp_path, {**saved, "optimizer/iterations": np.array(-1)})
    with pytest.raises(ValueError, match="Received: iterations=-1"):
        m.load_weights(path)
    assert not m.built and m.input_dim is None and m.weights == []
    m.load_weights(write(tmp_path, saved, "good_again.npz"))
    assert m.built and m.input_dim == 3
    m.fit(np.ones((4, 3)), np.zeros(4), epochs=1, batch_size=4, verbose=0)  # slots applied
    assert m.optimizer.iterations == int(saved["optimizer/iterations"]) + 1
