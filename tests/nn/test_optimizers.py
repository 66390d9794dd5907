"""One and two optimizer steps equal the Keras 3 update computed by hand in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symgrad import optimizers
from symgrad.compiler import BACKENDS
from symgrad.optimizers import SGD, Adagrad, Adam, Adamax, AdamW, Lion, Nadam, RMSprop
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
        (lambda: Adam(beta_1=-0.1), "beta_1 must be in [0.0, 1.0). Received: beta_1=-0.1"),
        (lambda: Adam(beta_2=1.0), "beta_2 must be in [0.0, 1.0). Received: beta_2=1.0"),
        (lambda: Nadam(beta_1=1.5), "Nadam: beta_1 must be in [0.0, 1.0). Received: beta_1=1.5"),
        (lambda: Adamax(epsilon=-1e-7), "Adamax: epsilon must be >= 0. Received: epsilon=-1e-07"),
        (lambda: Lion(beta_2=-0.5), "Lion: beta_2 must be in [0.0, 1.0]. Received: beta_2=-0.5"),
        (
            lambda: Lion(learning_rate=-0.1),
            "learning_rate must be > 0. Received: learning_rate=-0.1",
        ),
        (lambda: SGD(clipnorm=0), "SGD: clipnorm must be > 0. Received: clipnorm=0"),
        (
            lambda: Adam(weight_decay=-1),
            "Adam: weight_decay must be >= 0. Received: weight_decay=-1",
        ),
        (
            lambda: Adagrad(initial_accumulator_value=-0.1),
            "initial_accumulator_value must be >= 0. Received: initial_accumulator_value=-0.1",
        ),
        (
            lambda: SGD(clipnorm=1.0, clipvalue=0.5),
            "only one of clipnorm, clipvalue and global_clipnorm can be set. "
            "Received: clipnorm=1.0, clipvalue=0.5",
        ),
        (
            lambda: optimizers.get("adamaxx"),
            "Unknown optimizer: 'adamaxx'. Known optimizers: adagrad, adam, adamax, adamw, lion, "
            "nadam, rmsprop, sgd",
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


# --------------------------------------------------------------------------
# Keras 3's other optimizers, clipping and weight decay, by hand in NumPy on both backends


def adam_amsgrad(lr, b1=0.9, b2=0.999, eps=1e-7):
    def update(w, g, s, t):
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
        s["v_hat"] = np.maximum(s.get("v_hat", 0.0), s["v"])
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        return w - alpha * s["m"] / (np.sqrt(s["v_hat"]) + eps)

    return update


def adamax(lr, b1=0.9, b2=0.999, eps=1e-7):
    def update(w, g, s, t):
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["u"] = np.maximum(b2 * s.get("u", 0.0), np.abs(g))
        return w - lr * s["m"] / ((1 - b1**t) * (s["u"] + eps))

    return update


def nadam(lr, b1=0.9, b2=0.999, eps=1e-7):
    """Keras 3's Nadam: u_t = b1 (1 - 0.96^t / 2), the running product of u_t kept across steps."""

    def update(w, g, s, t):
        u_t = b1 * (1 - 0.5 * 0.96**t)
        u_next = b1 * (1 - 0.5 * 0.96 ** (t + 1))
        product = s.get("product", 1.0) * u_t
        s["product"] = product
        s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
        s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
        m_hat = u_next * s["m"] / (1 - product * u_next) + (1 - u_t) * g / (1 - product)
        v_hat = s["v"] / (1 - b2**t)
        return w - lr * m_hat / (np.sqrt(v_hat) + eps)

    return update


def lion(lr, b1=0.9, b2=0.99):
    def update(w, g, s, t):
        m = s.get("m", 0.0)
        s["m"] = b2 * m + (1 - b2) * g
        return w - lr * np.sign(b1 * m + (1 - b1) * g)

    return update


def clip_by_norm(grads, c):
    """Keras: g c / max(|g|, c), each gradient by its own norm."""
    return [g * c / max(np.sqrt(np.sum(g * g)), c) for g in grads]


def clip_by_global_norm(grads, c):
    norm = np.sqrt(sum(np.sum(g * g) for g in grads))
    return [g * min(1.0, c / norm) for g in grads]


def decayed(update, lr, wd):
    """Keras's weight decay on any optimizer: w <- w - lr wd w, then the rule."""
    return lambda w, g, s, t: update(w - lr * wd * w, g, s, t)


MORE = {  # optimizer, update by hand, gradient transform
    "adam-amsgrad": (lambda: Adam(learning_rate=0.01, amsgrad=True), adam_amsgrad(0.01), None),
    "adamax": (lambda: Adamax(learning_rate=0.02), adamax(0.02), None),
    "nadam": (lambda: Nadam(learning_rate=0.01), nadam(0.01), None),
    "lion": (lambda: Lion(learning_rate=0.003), lion(0.003), None),
    "sgd-clipnorm": (lambda: SGD(0.1, clipnorm=0.05), sgd(0.1), lambda g: clip_by_norm(g, 0.05)),
    "sgd-clipnorm-loose": (
        lambda: SGD(0.1, clipnorm=100.0),
        sgd(0.1),
        lambda g: clip_by_norm(g, 100.0),
    ),
    "adam-clipvalue": (
        lambda: Adam(0.01, clipvalue=0.01),
        adam(0.01),
        lambda g: [np.clip(x, -0.01, 0.01) for x in g],
    ),
    "rmsprop-global-clipnorm": (
        lambda: RMSprop(0.01, momentum=0.5, global_clipnorm=0.1),
        rmsprop(0.01, momentum=0.5),
        lambda g: clip_by_global_norm(g, 0.1),
    ),
    "sgd-weight-decay": (
        lambda: SGD(0.1, momentum=0.9, weight_decay=0.05),
        decayed(sgd(0.1, 0.9), 0.1, 0.05),
        None,
    ),
    "adagrad-weight-decay": (
        lambda: Adagrad(0.1, weight_decay=0.2),
        decayed(adagrad(0.1), 0.1, 0.2),
        None,
    ),
    "nadam-weight-decay-clipnorm": (
        lambda: Nadam(0.01, weight_decay=0.1, clipnorm=0.2),
        decayed(nadam(0.01), 0.01, 0.1),
        lambda g: clip_by_norm(g, 0.2),
    ),
    "lion-weight-decay-global-clipnorm": (
        lambda: Lion(0.003, weight_decay=0.5, global_clipnorm=0.3),
        decayed(lion(0.003), 0.003, 0.5),
        lambda g: clip_by_global_norm(g, 0.3),
    ),
}


def _model(make, backend):
    model = mlp("categorical_crossentropy")
    model.compile(
        optimizer=make(), loss="categorical_crossentropy", backend=backend, dtype="float64", seed=0
    )
    return model


def _by_hand(model, x, y, update, transform, steps, rng):
    """Run ``steps`` batches through the model and through ``update`` beside it; compare."""
    weights = [w + 0.1 * rng.standard_normal(w.shape) for w in model.get_weights()]
    model.set_weights(weights)
    states = [{} for _ in weights]
    for t in range(1, steps + 1):
        grads = model.compute_gradients(x, y)
        grads = transform(grads) if transform else grads
        expected = [update(w, g, s, t) for w, g, s in zip(weights, grads, states)]
        model.train_on_batch(x, y)
        weights = model.get_weights()
        for got, want in zip(weights, expected):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", list(MORE))
def test_three_steps_match_keras_by_hand(case, backend, rng):
    make, update, transform = MORE[case]
    model = _model(make, backend)
    x, labels = blobs(rng, n=10)
    _by_hand(model, x, np.eye(3)[labels], update, transform, 3, rng)


def test_the_clip_binds():
    """The clipping cases above clip: the norms exceed the bounds there (else they test nothing)."""
    rng = np.random.default_rng(0)
    model = _model(lambda: SGD(0.1), "numpy")
    x, labels = blobs(rng, n=10)
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape) for w in model.get_weights()])
    grads = model.compute_gradients(x, np.eye(3)[labels])
    norms = [np.sqrt(np.sum(g * g)) for g in grads]
    assert min(norms) > 0.05 and max(norms) > 0.2 and max(norms) < 100.0
    assert np.sqrt(sum(np.sum(g * g) for g in grads)) > 0.3
    assert max(np.abs(g).max() for g in grads) > 0.01


def test_nadam_keeps_one_product_for_the_model():
    model = _model(lambda: Nadam(0.01), "numpy")
    paths = [v.path for v in model.optimizer.variables]
    assert paths[0] == "u_product" and model.optimizer.variables[0].shape == (1, 1)
    assert sum("u_product" in p for p in paths) == 1


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_new_optimizers_run_the_native_epoch(backend, rng):
    """fit with each new optimizer agrees with train_on_batch step by step (the native epoch
    on LLVM), so slots and the global product are carried across the epoch's steps."""
    x, labels = blobs(rng, n=24)
    y = np.eye(3)[labels]
    for case in ("nadam", "lion-weight-decay-global-clipnorm", "adam-clipvalue"):
        make = MORE[case][0]
        fitted, stepped = _model(make, backend), _model(make, backend)
        fitted.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        for rows in (slice(0, 8), slice(8, 16), slice(16, 24)):
            stepped.train_on_batch(x[rows], y[rows])
        assert fitted.optimizer.iterations == 3
        for a, b in zip(fitted.get_weights(), stepped.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_common_arguments_round_trip_through_the_config():
    opt = Nadam(0.01, weight_decay=0.1, clipnorm=0.2)
    config = opt.get_config()
    assert config == {
        "name": "Nadam",
        "learning_rate": 0.01,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-7,
        "weight_decay": 0.1,
        "clipnorm": 0.2,
    }
    again = optimizers.from_config(config)
    assert type(again) is Nadam and again.get_config() == config
    assert Adam(amsgrad=True).get_config()["amsgrad"] is True
    assert optimizers.from_config(Adam(amsgrad=True).get_config()).amsgrad


def test_clipping_cannot_be_added_after_compiling():
    model = _model(lambda: SGD(0.1), "numpy")
    with pytest.raises(ValueError, match=r"clipnorm must be given when the optimizer is created"):
        model.optimizer.clipnorm = 1.0
    model = _model(lambda: SGD(0.1, clipnorm=1.0), "numpy")
    model.optimizer.clipnorm = 0.5  # a runtime scalar: changes take effect at the next step
    assert model.optimizer.clipnorm == 0.5
    with pytest.raises(ValueError, match=r"cannot be removed. Received: clipnorm=None"):
        model.optimizer.clipnorm = None
