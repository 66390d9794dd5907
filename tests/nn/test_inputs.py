"""Generators and Sequences as fit / evaluate / predict input; to_categorical; set_random_seed;
float32 rows without a float64 copy."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pytest

from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.nn import seeds
from symgrad.nn import validation as data
from symgrad.utils import Sequence, set_random_seed, to_categorical


def dataset(rng, n=40):
    x = rng.standard_normal((n, 3))
    return x, to_categorical(rng.integers(0, 3, n), 3)


class Chunks(Sequence):
    """Batches of 10 rows; records the batches asked for and the epochs ended."""

    def __init__(self, x, y, size=10):
        self.x, self.y, self.size, self.asked, self.ended = x, y, size, [], 0

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        self.asked.append(i)
        rows = slice(self.size * i, self.size * (i + 1))
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        self.ended += 1


def endless(x, y, size=10):
    while True:
        for start in range(0, len(x), size):
            yield x[start : start + size], y[start : start + size]


def model_for(backend, metrics=("accuracy", "auc")):
    model = Sequential([Dense(4, activation="tanh"), Dense(3, activation="softmax")], name="m")
    model.compile(
        "adam", "categorical_crossentropy", list(metrics), backend=backend, dtype="float64", seed=0
    )
    return model


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_sequence_and_generator_train_as_the_arrays_do(backend, rng):
    x, y = dataset(rng)
    reference = model_for(backend)
    expected = reference.fit(
        x, y, batch_size=10, epochs=3, verbose=0, shuffle=False, validation_data=(x, y)
    )
    sources = {
        "sequence": (Chunks(x, y), {}),
        "generator": (endless(x, y), {"steps_per_epoch": 4}),
    }
    for name, (source, options) in sources.items():
        model = model_for(backend)
        history = model.fit(
            source, epochs=3, verbose=0, shuffle=False, validation_data=Chunks(x, y), **options
        )
        assert history.history == expected.history, name
        for a, b in zip(model.get_weights(), reference.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert model.evaluate(Chunks(x, y), return_dict=True) == reference.evaluate(
            x, y, batch_size=10, return_dict=True
        )
        np.testing.assert_array_equal(model.predict(endless(x, y), steps=4), reference.predict(x))
    # a finite generator: evaluate and predict draw until it ends; predict takes x alone too
    only_x = (x[i : i + 10] for i in range(0, 40, 10))
    np.testing.assert_array_equal(reference.predict(only_x), reference.predict(x))


def test_a_sequence_is_shuffled_by_batches_and_told_each_epoch_end(rng):
    x, y = dataset(rng)
    chunks = Chunks(x, y)
    model = model_for("numpy")
    model.fit(chunks, epochs=3, verbose=0)
    assert chunks.asked[0] == 0  # looked at first: has it sample weights?
    orders = [chunks.asked[1 + 4 * k : 5 + 4 * k] for k in range(3)]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders) and orders != [[0, 1, 2, 3]] * 3
    assert chunks.ended == 3
    # the same seed, the same batch orders
    again = Chunks(x, y)
    model_for("numpy").fit(again, epochs=3, verbose=0)
    assert again.asked == chunks.asked


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_batches_with_sample_weights(backend, rng):
    """(x, y, sample_weight) batches train and evaluate as fit(..., sample_weight=w)."""
    x, y = dataset(rng)
    w = rng.integers(0, 4, len(x)).astype(float)
    reference = model_for(backend)
    expected = reference.fit(
        x, y, sample_weight=w, batch_size=10, epochs=2, verbose=0, shuffle=False
    )

    def weighted():
        while True:
            for start in range(0, 40, 10):
                rows = slice(start, start + 10)
                yield x[rows], y[rows], w[rows]

    model = model_for(backend)
    history = model.fit(weighted(), steps_per_epoch=4, epochs=2, verbose=0)
    assert history.history == expected.history
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.evaluate(weighted(), steps=4) == reference.evaluate(
        x, y, sample_weight=w, batch_size=10
    )
    mixed = iter([(x[:10], y[:10]), (x[10:20], y[10:20], w[10:20])])
    with pytest.raises(ValueError, match=r"Batch 1 of x: it has sample weights, the first"):
        model.fit(mixed, steps_per_epoch=2, verbose=0)


def test_bad_batches_are_named_by_their_index(rng):
    x, y = dataset(rng)

    def inconsistent():
        yield x[:10], y[:10]
        yield x[10:20], y[10:20]
        yield x[20:30, :2], y[20:30]  # two features instead of three

    model = model_for("numpy")
    with pytest.raises(
        ValueError,
        match=r"Batch 2 of x: The model expects 3 input feature\(s\) per sample. "
        r"Received: x with shape \(10, 2\)",
    ):
        model.fit(inconsistent(), steps_per_epoch=3, verbose=0)

    def wider_targets():
        yield x[:10], y[:10]
        yield x[10:20], np.hstack([y[10:20], y[10:20]])

    with pytest.raises(ValueError, match=r"Batch 1 of x: Targets for categorical_crossentropy"):
        model.evaluate(wider_targets())
    with pytest.raises(ValueError, match=r"Batch 0 of x must be a tuple \(x, y\) or \(x, y, "):
        model.fit(iter([x[:10]]), steps_per_epoch=1, verbose=0)
    with pytest.raises(ValueError, match=r"Batch 1 of validation_data: .*shape \(10, 4\)"):
        model.fit(
            Chunks(x, y),
            verbose=0,
            validation_data=iter([(x[:10], y[:10]), (np.ones((10, 4)), y[:10])]),
        )


def test_generator_lengths_and_arguments(rng):
    x, y = dataset(rng)
    model = model_for("numpy")
    with pytest.raises(ValueError, match=r"steps_per_epoch is needed when x is a generator"):
        model.fit(endless(x, y), verbose=0)
    finite = iter([(x[:10], y[:10])] * 5)
    with pytest.raises(ValueError, match=r"ran out of data after 1 of the 2 batches of this epoch"):
        model.fit(finite, steps_per_epoch=2, epochs=3, verbose=0)
    with pytest.raises(ValueError, match=r"y must be None when x is a generator or a Sequence"):
        model.fit(Chunks(x, y), y, verbose=0)
    with pytest.raises(ValueError, match=r"Received: steps_per_epoch=0"):
        model.fit(endless(x, y), steps_per_epoch=0, verbose=0)
    with pytest.raises(ValueError, match=r"x gave no batch"):
        model.predict(iter([]))
    history = model.fit(Chunks(x, y), steps_per_epoch=2, epochs=2, verbose=0)
    assert history.params["steps"] == 2 and not history.params["native_epochs"]


def test_to_categorical():
    np.testing.assert_array_equal(to_categorical([0, 2, 1]), np.eye(3)[[0, 2, 1]])
    np.testing.assert_array_equal(to_categorical([[1], [0]], num_classes=4), np.eye(4)[[1, 0]])
    assert to_categorical(np.zeros((2, 3)), 2).shape == (2, 3, 2)
    assert to_categorical([1.0, 0.0]).dtype == np.float64
    with pytest.raises(ValueError, match=r"labels in \[0, 2\). Received: y\[1\]=2"):
        to_categorical([0, 2], num_classes=2)
    with pytest.raises(ValueError, match=r"integer class labels. Received: y\[0\]=0.5"):
        to_categorical([0.5, 1])
    with pytest.raises(ValueError, match=r"Received: y\[0\]=-1"):
        to_categorical([-1, 1])


@pytest.fixture
def global_seeds():
    """Restore the global random state the test plants."""
    np_state, py_state, root = np.random.get_state(), random.getstate(), seeds._root
    yield
    np.random.set_state(np_state)
    random.setstate(py_state)
    seeds._root = root


def test_set_random_seed_repeats_unseeded_models(global_seeds, rng):
    x, y = dataset(rng)

    def run():
        model = Sequential([Dense(4, activation="tanh"), Dense(3, activation="softmax")])
        model.compile("sgd", "categorical_crossentropy")  # no seed
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)  # shuffled
        return model.get_weights(), history.history["loss"], np.random.rand(), random.random()

    set_random_seed(7)
    first = run()
    set_random_seed(7)
    second = run()
    for a, b in zip(first[0], second[0]):
        np.testing.assert_array_equal(a, b)
    assert first[1:] == second[1:]
    set_random_seed(8)
    assert not np.array_equal(run()[0][0], first[0][0])
    with pytest.raises(ValueError, match=r"Received: seed=-1"):
        set_random_seed(-1)


def test_a_float32_model_reads_float32_rows_without_a_copy(rng):
    x = rng.standard_normal((20000, 64)).astype(np.float32)
    model = Sequential([Dense(2, input_dim=64)])
    model.compile("sgd", "mse", seed=0)  # float32
    model.predict(x[:5])
    tracemalloc.start()
    try:
        p = model.predict(x, batch_size=1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - p.nbytes < x.nbytes / 8  # a float64 copy would be 2 x.nbytes
    np.testing.assert_allclose(
        p, x.astype(np.float64) @ model.get_weights()[0], rtol=1e-5, atol=1e-5
    )


def test_the_finiteness_check_survives_an_overflowing_sum():
    big = np.full((4, 3), 3e38, dtype=np.float32)  # finite; their sum is not
    data.check_finite(big, "x")
    big[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"Received: x\[2, 1\]=nan \(1 NaN or inf value\(s\)\)"):
        data.check_finite(big, "x")
