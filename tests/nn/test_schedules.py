"""Learning-rate schedules: Keras's formulas written here in NumPy, the schedules compiled into
the step (the whole-epoch native call keeps running), and emitted with the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

import symgrad
from symgrad.compiler import BACKENDS
from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.nn.callbacks import Callback
from symgrad.optimizers import SGD, Adam, schedules
from tests.emit.helpers import run_isolated
from tests.nn.helpers import blobs

STEPS = np.arange(0, 61)


def exponential(step, lr, decay_steps, rate, staircase=False):
    p = step / decay_steps
    return lr * rate ** (np.floor(p) if staircase else p)


def inverse_time(step, lr, decay_steps, rate, staircase=False):
    p = step / decay_steps
    return lr / (1 + rate * (np.floor(p) if staircase else p))


def piecewise(step, boundaries, values):
    out = np.full(np.shape(step), values[-1], dtype=float)
    for b, v in reversed(list(zip(boundaries, values))):
        out = np.where(step <= b, v, out)
    return out


def polynomial(step, lr, decay_steps, end=0.0001, power=1.0, cycle=False):
    step = np.asarray(step, dtype=float)
    if cycle:
        steps = decay_steps * np.where(step == 0, 1.0, np.ceil(step / decay_steps))
    else:
        step, steps = np.minimum(step, decay_steps), decay_steps
    return (lr - end) * (1 - step / steps) ** power + end


def cosine(step, lr, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    def decay(s, rate):
        return rate * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / decay_steps)) + alpha)

    step = np.asarray(step, dtype=float)
    if warmup_target is None:
        return decay(np.minimum(step, decay_steps), lr)
    step = np.minimum(step, decay_steps + warmup_steps)
    rising = (warmup_target - lr) * step / warmup_steps + lr
    return np.where(step < warmup_steps, rising, decay(step - warmup_steps, warmup_target))


def cosine_restarts(step, lr, first, t_mul=2.0, m_mul=1.0, alpha=0.0):
    fraction = np.asarray(step, dtype=float) / first
    if t_mul == 1.0:
        i = np.floor(fraction)
        fraction = fraction - i
    else:
        i = np.floor(np.log(1 - fraction * (1 - t_mul)) / np.log(t_mul))
        start = (1 - t_mul**i) / (1 - t_mul)
        fraction = (fraction - start) / t_mul**i
    decayed = m_mul**i * 0.5 * (1 + np.cos(np.pi * fraction))
    return lr * ((1 - alpha) * decayed + alpha)


CASES = {  # schedule, NumPy reference of the step count
    "exponential": (
        lambda: schedules.ExponentialDecay(0.1, 7, 0.5),
        lambda s: exponential(s, 0.1, 7, 0.5),
    ),
    "exponential-staircase": (
        lambda: schedules.ExponentialDecay(0.1, 7, 0.5, staircase=True),
        lambda s: exponential(s, 0.1, 7, 0.5, True),
    ),
    "inverse-time": (
        lambda: schedules.InverseTimeDecay(0.1, 5, 0.3),
        lambda s: inverse_time(s, 0.1, 5, 0.3),
    ),
    "inverse-time-staircase": (
        lambda: schedules.InverseTimeDecay(0.1, 5, 0.3, staircase=True),
        lambda s: inverse_time(s, 0.1, 5, 0.3, True),
    ),
    "piecewise": (
        lambda: schedules.PiecewiseConstantDecay([3, 10, 25], [0.1, 0.05, 0.02, 0.01]),
        lambda s: piecewise(s, [3, 10, 25], [0.1, 0.05, 0.02, 0.01]),
    ),
    "polynomial": (
        lambda: schedules.PolynomialDecay(0.1, 40, 0.01, power=2.0),
        lambda s: polynomial(s, 0.1, 40, 0.01, 2.0),
    ),
    "polynomial-cycle": (
        lambda: schedules.PolynomialDecay(0.1, 9, 0.01, power=0.5, cycle=True),
        lambda s: polynomial(s, 0.1, 9, 0.01, 0.5, True),
    ),
    "cosine": (
        lambda: schedules.CosineDecay(0.1, 45, alpha=0.1),
        lambda s: cosine(s, 0.1, 45, 0.1),
    ),
    "cosine-warmup": (
        lambda: schedules.CosineDecay(0.01, 30, alpha=0.05, warmup_target=0.2, warmup_steps=8),
        lambda s: cosine(s, 0.01, 30, 0.05, 0.2, 8),
    ),
    "cosine-restarts": (
        lambda: schedules.CosineDecayRestarts(0.1, 6, t_mul=2.0, m_mul=0.8, alpha=0.1),
        lambda s: cosine_restarts(s, 0.1, 6, 2.0, 0.8, 0.1),
    ),
    "cosine-restarts-equal": (
        lambda: schedules.CosineDecayRestarts(0.1, 7, t_mul=1.0, m_mul=0.9),
        lambda s: cosine_restarts(s, 0.1, 7, 1.0, 0.9),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_schedule_values_match_keras(case):
    make, reference = CASES[case]
    got = np.array([make()(s) for s in STEPS])
    np.testing.assert_allclose(got, reference(STEPS), rtol=1e-12, atol=1e-17)


class Params(Callback):
    def on_train_begin(self, logs=None):
        self.seen = dict(self.params)


def _model(optimizer, backend):
    model = Sequential([Dense(5, activation="tanh", input_dim=4), Dense(3, activation="softmax")])
    model.compile(
        optimizer=optimizer,
        loss="categorical_crossentropy",
        backend=backend,
        dtype="float64",
        seed=0,
    )
    return model


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", list(CASES))
def test_fit_with_a_schedule_steps_at_the_keras_rates(case, backend, rng):
    """Three epochs of 12 steps (the native epoch on LLVM) equal 36 steps at the NumPy rates."""
    make, reference = CASES[case]
    x, labels = blobs(rng, n=48)
    y = np.eye(3)[labels]
    fitted = _model(SGD(learning_rate=make(), momentum=0.5), backend)
    params = Params()
    fitted.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[params])
    assert params.seen["native_epochs"] == bool(BACKENDS[backend].epochs)
    assert "learning_rate" not in {s.name for s in fitted.compiled_step.scalars}
    by_hand = _model(SGD(learning_rate=0.1, momentum=0.5), backend)
    for step in range(36):
        by_hand.optimizer.learning_rate = float(reference(step))
        rows = slice(4 * (step % 12), 4 * (step % 12) + 4)
        by_hand.train_on_batch(x[rows], y[rows])
    assert fitted.optimizer.iterations == 36
    for a, b in zip(fitted.get_weights(), by_hand.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_the_schedule_is_read_at_the_step_count_in_the_step(rng):
    """Adam's step uses the rate of iterations (Keras: schedule(optimizer.iterations))."""
    schedule = schedules.PiecewiseConstantDecay([0], [0.5, 1e-9])  # only step 0 is fast
    model = _model(Adam(learning_rate=schedule), "numpy")
    x, labels = blobs(rng, n=8)
    before = model.get_weights()
    model.train_on_batch(x, np.eye(3)[labels])
    moved = max(np.abs(a - b).max() for a, b in zip(model.get_weights(), before))
    assert moved > 0.1  # the first step at rate 0.5 (Adam moves ~ lr per entry)


def test_schedules_round_trip_through_save_and_load(tmp_path, rng):
    model = _model(SGD(schedules.CosineDecay(0.1, 20, warmup_target=0.3, warmup_steps=4)), "numpy")
    x, labels = blobs(rng, n=16)
    model.fit(x, np.eye(3)[labels], batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    again = symgrad.models.load_model(tmp_path / "m.npz")
    schedule = again.optimizer.learning_rate
    assert isinstance(schedule, schedules.CosineDecay)
    assert schedule.get_config() == model.optimizer.learning_rate.get_config()
    assert again.optimizer.iterations == 4


EMIT_SCRIPT = """
params, opt_state = m.load_weights()
x, y = d["x"], d["y"]
out["losses"] = m.fit(params, opt_state, x, y, epochs=2, batch_size=4)
out.update({"w/" + k: v for k, v in params.items()})
"""


def test_an_emitted_module_applies_the_schedule(tmp_path, rng):
    """The emitted NumPy module steps with the schedule (no symgrad needed) as fit does."""
    model = _model(SGD(schedules.ExponentialDecay(0.2, 3, 0.5, staircase=True)), "numpy")
    x, labels = blobs(rng, n=16)
    y = np.eye(3)[labels]
    symgrad.emit(model, tmp_path / "m.py", weights=True)
    out = run_isolated(tmp_path / "m.py", EMIT_SCRIPT, {"x": x, "y": y}, tmp_path)
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    for w, value in zip(model.weights, model.get_weights()):
        np.testing.assert_allclose(
            np.ravel(out[f"w/{w.path}"]), np.ravel(value), rtol=1e-12, atol=1e-15
        )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: schedules.ExponentialDecay(0.1, 0, 0.5),
            "ExponentialDecay: decay_steps must be a number > 0. Received: decay_steps=0",
        ),
        (
            lambda: schedules.PiecewiseConstantDecay([5, 3], [0.1, 0.2, 0.3]),
            "boundaries must be increasing. Received: boundaries=[5, 3]",
        ),
        (
            lambda: schedules.PiecewiseConstantDecay([5], [0.1]),
            "values must have one more entry than boundaries. Received: 1 boundaries and 1 values",
        ),
        (
            lambda: schedules.CosineDecay(0.1, 10, warmup_target=0.2),
            "a warm-up needs warmup_steps > 0. Received: warmup_steps=0",
        ),
        (
            lambda: schedules.CosineDecayRestarts(0.1, 10, t_mul=math.inf),
            "t_mul must be a number > 0. Received: t_mul=inf",
        ),
        (
            lambda: schedules.deserialize({"class_name": "StepDecay", "config": {}}),
            "Unknown learning-rate schedule: 'StepDecay'. Known learning-rate schedules: "
            "ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, PolynomialDecay, "
            "CosineDecay, CosineDecayRestarts",
        ),
    ],
)
def test_bad_schedule_arguments(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)
