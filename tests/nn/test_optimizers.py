"""One and two optimizer steps equal the Keras 3 update computed by hand in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symgrad import optimizers
from symgrad.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from tests.nn.helpers import blobs, mlp


def sgd(lr, momentum=0.0, nesterov=False):
    def update(w, g, s, t):
        if momentum == 0:
            return w - lr * g
        s["m"] = momentum * s.get("m", 0.0) - lr * g
        return w + momentum * s["m"] - lr * g if nesterov else w + s["m"]

    return update


def adagrad(lr, initial=0.1, eps=1e-7):
    def update(w, g, s, t):
        s["a"] = s.get("a", initial) + g * g
        return w - lr * g / np.sqrt(s["a"] + eps)

    return update


def rmsprop(lr, rho=0.9, momentum=0.0, eps=1e-7, centered=False):
    def update(w, g, s, t):
        s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g * g
        denominator = s["v"] + eps
        if centered:
            s["mg"] = rho * s.get("mg", 0.0) + (1 - rho) * g
            denominator = s["v"] - s["mg"] ** 2 + eps
        increment = lr * g / np.sqrt(denominator)
        if momentum == 0:
            return w - increment
        s["m"] = momentum * s.get("m", 0.0) + increment
        return w - s["m"]

    return update


def adam(lr, b1=0.9, b2=0.999, eps=1e-7, weight_decay=0.0):
    def update(w, g, s, t):
        w = w - lr * weight_decay * w
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        return w - alpha * s["m"] / (np.sqrt(s["v"]) + eps)

    return update


CASES = {
    "sgd": (lambda: SGD(learning_rate=0.1), sgd(0.1)),
    "sgd-momentum": (lambda: SGD(learning_rate=0.1, momentum=0.9), sgd(0.1, 0.9)),
    "sgd-nesterov": (
        lambda: SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
        sgd(0.05, 0.9, True),
    ),
    "adagrad": (lambda: Adagrad(learning_rate=0.1), adagrad(0.1)),
    "rmsprop": (lambda: RMSprop(learning_rate=0.01), rmsprop(0.01)),
    "rmsprop-momentum": (
        lambda: RMSprop(learning_rate=0.01, momentum=0.5),
        rmsprop(0.01, momentum=0.5),
    ),
    "rmsprop-centered": (
        lambda: RMSprop(learning_rate=0.01, centered=True),
        rmsprop(0.01, centered=True),
    ),
    "adam": (lambda: Adam(learning_rate=0.01), adam(0.01)),
    "adamw": (lambda: AdamW(learning_rate=0.01, weight_decay=0.1), adam(0.01, weight_decay=0.1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_steps_match_the_update_by_hand(case, rng):
    make, update = CASES[case]
    model = mlp("categorical_crossentropy", optimizer=make())
    x, labels = blobs(rng, n=10)
    y = np.eye(3)[labels]
    weights = [w + 0.1 * rng.standard_normal(w.shape) for w in model.get_weights()]
    model.set_weights(weights)
    states = [{} for _ in weights]
    for t in (1, 2):  # Adam's bias correction differs between t=1 and t=2
        grads = model.compute_gradients(x, y)
        expected = [update(w, g, s, t) for w, g, s in zip(weights, grads, states)]
        model.train_on_batch(x, y)
        weights = model.get_weights()
        assert model.optimizer.iterations == t
        for got, want in zip(weights, expected):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_defaults_are_keras_defaults():
    assert optimizers.get("sgd").get_config() == {
        "name": "SGD",
        "learning_rate": 0.01,
        "momentum": 0.0,
        "nesterov": False,
    }
    assert optimizers.get("adam").get_config() == {
        "name": "Adam",
        "learning_rate": 0.001,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-7,
    }
    rms = optimizers.get("rmsprop").get_config()
    assert (rms["learning_rate"], rms["rho"], rms["momentum"], rms["epsilon"]) == (
        0.001,
        0.9,
        0.0,
        1e-7,
    )
    ada = optimizers.get("adagrad")
    assert (ada.learning_rate, ada.initial_accumulator_value, ada.epsilon) == (0.001, 0.1, 1e-7)


def test_rules_read_like_keras():
    rules = SGD(learning_rate=0.05, momentum=0.9, nesterov=True).rule_text()
    assert rules == {
        "momentum": "-g*learning_rate + momentum*momentum_old",
        "variable": "-g*learning_rate + momentum*momentum_new + w",
    }
    assert Adam().rule_text() == {
        "momentum": "momentum_old + (1 - beta_1)*(g - momentum_old)",
        "velocity": "velocity_old + (1 - beta_2)*(g**2 - velocity_old)",
        "variable": "-learning_rate*momentum_new*sqrt(1 - beta_2**t)/((1 - beta_1**t)*(epsilon + sqrt(velocity_new))) + w",
    }


def test_learning_rate_is_a_runtime_scalar(rng):
    model = mlp("mse", optimizer=SGD(learning_rate=0.1))
    x, labels = blobs(rng, n=8)
    y = np.eye(3)[labels]
    step = model.compiled_step
    for rate in (0.05, 0.2):
        model.optimizer.learning_rate = rate
        before = model.get_weights()
        grads = model.compute_gradients(x, y)
        model.train_on_batch(x, y)
        assert model.compiled_step is step  # not recompiled
        for w, g, got in zip(before, grads, model.get_weights()):
            np.testing.assert_allclose(got, w - rate * g, rtol=1e-12, atol=1e-15)


def test_learning_rate_schedule_is_called_with_the_step(rng):
    seen = []

    def schedule(step):
        seen.append(step)
        return 0.1 / (1 + step)

    model = mlp("mse", optimizer=SGD(learning_rate=schedule))
    x, labels = blobs(rng, n=8)
    y = np.eye(3)[labels]
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    assert seen == [0, 1]


def test_step_count_symbol_is_t():
    model = mlp("mse", optimizer="adam")
    assert [s.name for s in model.compiled_step.scalars] == [
        "beta_1",
        "beta_2",
        "epsilon",
        "learning_rate",
        "t",
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SGD(momentum=1.5), "momentum must be in [0.0, 1.0]. Received: momentum=1.5"),
        (
            lambda: SGD(learning_rate="fast"),
            "learning_rate must be a number. Received: learning_rate='fast'",
        ),
        (lambda: Adam(beta_1=-0.1), "beta_1 must be in [0.0, 1.0]"),
        (
            lambda: optimizers.get("adamax"),
            "Unknown optimizer: 'adamax'. Known optimizers: adagrad, adam, adamw, rmsprop, sgd",
        ),
    ],
)
def test_bad_optimizer_arguments(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_adam_bias_correction_is_computed_once_per_step(backend, rng):
    """lr*sqrt(1 - beta_2**t)/(1 - beta_1**t) is one (1, 1) statement without matrix operands,
    read by every weight's update; no fused body raises to the power t; values as by hand."""
    model = mlp("categorical_crossentropy", optimizer=Adam(learning_rate=0.01))
    model.compile(
        optimizer=Adam(learning_rate=0.01),
        loss="categorical_crossentropy",
        backend=backend,
        dtype="float64",
        seed=0,
    )
    program = model.compiled_step.program
    per_step = [s for s in program.body if type(s).__name__ == "Map" and not s.args]
    assert [sp.sstr(s.body) for s in per_step] == [
        "learning_rate*sqrt(1 - beta_2**t)/(1 - beta_1**t)"
    ]
    fused = [s for s in program.body if type(s).__name__ in ("Map", "Reduce") and s.args]
    assert not [s.out.name for s in fused if "t" in {str(x) for x in s.body.free_symbols}]
    readers = [s for s in fused if per_step[0].out in s.reads]
    assert len(readers) == len(model.get_weights())  # one update per weight
    _, update = CASES["adam"]
    x, labels = blobs(rng, n=10)
    y = np.eye(3)[labels]
    weights = model.get_weights()
    states = [{} for _ in weights]
    for t in (1, 2, 3):
        grads = model.compute_gradients(x, y)
        expected = [update(w, g, s, t) for w, g, s in zip(weights, grads, states)]
        model.train_on_batch(x, y)
        weights = model.get_weights()
        for got, want in zip(weights, expected):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
