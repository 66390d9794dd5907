"""Dropout: masks drawn inside the compiled step by a counter-based generator.

Active in fit, the identity in predict and evaluate; the same masks on every backend
and in the whole-epoch native call; reproducible for a given compile(seed=...).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import symgrad
from codegen import ir
from codegen.backends import BACKENDS
from symgrad import expr as E
from symgrad.callbacks import Callback
from symgrad.layers import Dense, Dropout, InputLayer
from symgrad.models import Sequential
from symgrad.nn.layers import Names
from symgrad.nn.optimizers import STEP
from symgrad.optimizers import SGD
from tests.emit.helpers import run_isolated
from tests.emit.test_native import CC

n = E.batch()
WIDTH = 50


def mask_function(rate: float, backend: str, noise_shape=None):
    """``D = X o M`` of one Dropout layer as a compiled function of (X, t)."""
    x = E.matrix("X", n, WIDTH)
    layer = Dropout(rate, noise_shape=noise_shape)
    layer.build(WIDTH)
    d = layer.call(x, Names(training=True, seed=7))
    return symgrad.compile([x], {"D": d}, scalars=[STEP], backend=backend, dtype="float64")


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_keep_rate_over_many_draws(rate):
    """Over 200 steps of 64 x 50 entries the kept fraction is 1 - rate within 5 sigma, every
    step draws a new mask, and kept entries are scaled by 1 / (1 - rate)."""
    fn, x = mask_function(rate, "numpy"), np.ones((64, WIDTH))
    masks = np.stack([fn(x, float(t))[0] for t in range(1, 201)])
    kept = masks != 0
    np.testing.assert_array_equal(masks[kept], 1 / (1 - rate))
    count = kept.size
    sigma = np.sqrt(rate * (1 - rate) / count)
    assert abs(kept.mean() - (1 - rate)) < 5 * sigma
    per_step = kept.reshape(200, -1).mean(axis=1)
    assert np.all(np.abs(per_step - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / per_step.size))
    # consecutive steps and neighbouring entries are uncorrelated
    flat = kept.reshape(200, -1).astype(float)
    assert abs(np.corrcoef(flat[:-1].ravel(), flat[1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(flat[:, :-1].ravel(), flat[:, 1:].ravel())[0, 1]) < 0.01


def test_the_backends_draw_the_same_masks():
    """Bit for bit the reference generator codegen.ir.keep_bits, on every backend."""
    x = np.random.default_rng(0).standard_normal((33, WIDTH))
    salt = Names().mask_salt(None)  # the first dropout layer's stream
    key = ir.stream_key(7, salt)
    for t in (1, 2, 999):
        bits = ir.keep_bits(key, t, x.size).reshape(x.shape)
        expected = np.where(bits >= ir.keep_threshold(0.3), x / 0.7, 0.0)
        for backend in BACKENDS:
            (d,) = mask_function(0.3, backend)(x, float(t))
            np.testing.assert_allclose(d, expected, rtol=1e-15, err_msg=backend)


@pytest.mark.parametrize("noise_shape", [(None, 1), (1, None), (1, WIDTH)])
def test_noise_shape_shares_a_draw(noise_shape):
    x = np.ones((40, WIDTH))
    (d,) = mask_function(0.5, "numpy", noise_shape)(x, 3.0)
    axis = 1 if noise_shape[0] is None else 0
    assert np.all(d == d.take([0], axis=axis))  # one value along the shared axis
    assert 0 < np.mean(d != 0) < 1


def model(dropout: bool, backend: str = "numpy", seed: int = 0, rate: float = 0.4) -> Sequential:
    layers = [Dense(16, activation="tanh", input_dim=4)]
    layers += [Dropout(rate)] if dropout else []
    layers += [Dense(3, activation="softmax")]
    m = Sequential(layers)
    m.compile(
        optimizer=SGD(0.1),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        backend=backend,
        dtype="float64",
        seed=seed,
    )
    return m


def data(rows: int = 96):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((rows, 4))
    return x, np.eye(3)[rng.integers(0, 3, rows)]


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_identity_in_predict_and_evaluate(backend):
    x, y = data()
    with_dropout, without = model(True, backend), model(False, backend)
    without.set_weights(with_dropout.get_weights())
    np.testing.assert_array_equal(with_dropout.predict(x), without.predict(x))
    np.testing.assert_array_equal(with_dropout.evaluate(x, y), without.evaluate(x, y))
    for got, want in zip(with_dropout.compute_gradients(x, y), without.compute_gradients(x, y)):
        np.testing.assert_array_equal(got, want)
    # and active in fit: the training loss is not the loss evaluate reports
    assert with_dropout.train_on_batch(x, y)[0] != pytest.approx(without.train_on_batch(x, y)[0])


def test_one_step_matches_numpy_with_the_same_mask():
    """One SGD step of Dense -> Dropout -> Dense (mse) against NumPy with the mask of step 1."""
    m = Sequential([Dense(5, activation="tanh", input_dim=3), Dropout(0.4), Dense(2)])
    m.compile(optimizer=SGD(0.1), loss="mse", dtype="float64", seed=11)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    w1, b1, w2, b2 = m.get_weights()
    bits = ir.keep_bits(ir.stream_key(m._mask_seed, Names().mask_salt(None)), 1, 7 * 5)
    mask = (bits.reshape(7, 5) >= ir.keep_threshold(0.4)) / 0.6
    a1 = np.tanh(x @ w1 + b1)
    d1 = a1 * mask
    p = d1 @ w2 + b2
    loss = np.mean((p - y) ** 2)
    dp = 2 * (p - y) / p.size
    dw2, db2 = d1.T @ dp, dp.sum(axis=0)
    dz1 = (dp @ w2.T) * mask * (1 - a1**2)
    dw1, db1 = x.T @ dz1, dz1.sum(axis=0)
    assert m.train_on_batch(x, y) == pytest.approx(loss, rel=1e-12)
    for got, w, g in zip(m.get_weights(), (w1, b1, w2, b2), (dw1, db1, dw2, db2)):
        np.testing.assert_allclose(got, w - 0.1 * g, rtol=1e-12, atol=1e-15)


class BatchHook(Callback):
    """Uses a batch hook: fit then runs one Python call per step, not one per epoch."""

    def on_train_batch_end(self, batch, logs=None):
        pass


def test_fit_is_reproducible_and_the_same_everywhere():
    """Same seed: the same weights on NumPy, LLVM per step and LLVM's whole-epoch call."""
    x, y = data()
    runs = {}
    for name, backend, callbacks in [
        ("numpy", "numpy", []),
        ("llvm_epoch", "llvm", []),
        ("llvm_steps", "llvm", [BatchHook()]),
    ]:
        m = model(True, backend, seed=4)
        history = m.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=callbacks)
        assert history.params["native_epochs"] == (name == "llvm_epoch")
        runs[name] = (history.history["loss"], m.get_weights())
    for name, (losses, weights) in runs.items():
        np.testing.assert_allclose(losses, runs["numpy"][0], rtol=1e-12, err_msg=name)
        for got, want in zip(weights, runs["numpy"][1]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=name)
    again = model(True, "numpy", seed=4)
    again.fit(x, y, epochs=3, batch_size=16, verbose=0)
    for got, want in zip(again.get_weights(), runs["numpy"][1]):
        np.testing.assert_array_equal(got, want)
    other = model(True, "numpy", seed=5)
    other.set_weights(model(True, "numpy", seed=4).get_weights())  # same start, other masks
    other.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert not np.allclose(other.get_weights()[0], runs["numpy"][1][0])


def test_a_layer_seed_fixes_its_stream():
    salt = Names().mask_salt(3)
    assert salt != Names().mask_salt(None) and salt == Names().mask_salt(3)


@pytest.mark.parametrize("rate", [1, 1.0, -0.1, 2, float("nan")])
def test_a_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(
        ValueError, match=r"Dropout: rate must be a number in \[0, 1\).*Received: rate="
    ):
        Dropout(rate)


@pytest.mark.parametrize("rate", ["0.5", True, None])
def test_a_rate_that_is_no_number_is_refused(rate):
    with pytest.raises(
        TypeError, match=rf"Dropout: rate must be a number.*Received: rate={rate!r}"
    ):
        Dropout(rate)


@pytest.mark.parametrize("noise_shape", [(2, 3), (None,), "x", (None, 0)])
def test_a_bad_noise_shape_is_refused(noise_shape):
    with pytest.raises(ValueError, match=r"Dropout: noise_shape must be"):
        Dropout(0.5, noise_shape=noise_shape)


def test_a_noise_shape_of_another_width_is_refused():
    with pytest.raises(
        ValueError, match=r"noise_shape \(None, 3\) does not broadcast to rows of 5"
    ):
        Sequential([InputLayer((5,)), Dropout(0.5, noise_shape=(None, 3))])


def test_rate_zero_is_the_identity():
    fn = mask_function(0.0, "numpy")
    x = np.random.default_rng(0).standard_normal((4, WIDTH))
    np.testing.assert_array_equal(fn(x, 1.0)[0], x)


def test_formulas_show_the_mask():
    m = model(True)
    assert str(m.forward_formulas()["D1"]) == "M_dropout o A1"
    assert "M_dropout" in str(m.gradient_formulas()["dense/kernel"])
    assert "M_dropout" not in m._programs().predict_step().source


@pytest.mark.parametrize("target", ["python", "shared"])
def test_emitted_files_train_like_the_model(target, tmp_path):
    """The emitted module and library draw the masks the model draws; forward has none."""
    x, y = data(32)
    m = model(True, "numpy" if target == "python" else "llvm", seed=2)
    if target == "python":
        symgrad.emit(m, tmp_path / "drop.py", weights=True)
        out = run_isolated(tmp_path / "drop.py", EMITTED_SCRIPT, {"x": x, "y": y}, tmp_path)
        steps, forward = out["steps"], out["forward"]
        weights = [out[f"w/{w.path}"] for w in m.weights]
    else:
        if CC is None:
            pytest.skip("no C compiler (cc, gcc, clang or $CC) found")
        symgrad.emit(m, tmp_path / "libdrop.so", target="shared")
        steps, weights, forward = _native_steps(tmp_path / "libdrop.so", m, x, y)
    batches = [(x[8 * k : 8 * k + 8], y[8 * k : 8 * k + 8]) for k in range(3)]
    np.testing.assert_allclose(
        steps, [m.train_on_batch(xb, yb)[0] for xb, yb in batches], rtol=1e-12
    )
    for got, want in zip(weights, m.get_weights()):  # the files keep biases as one row
        np.testing.assert_allclose(np.ravel(got), np.ravel(want), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(forward, m.predict(x), rtol=1e-12)


EMITTED_SCRIPT = """
params, opt_state = m.load_weights()
x, y = d["x"], d["y"]
out["steps"] = [m.train_step(params, opt_state, x[8 * k : 8 * k + 8], y[8 * k : 8 * k + 8])
                for k in range(3)]
out["forward"] = m.forward(params, x)
out.update({"w/" + k: v for k, v in params.items()})
"""


def _native_steps(path, m, x, y):
    """Three training steps (SGD, t = 1, 2, 3) and the forward pass through the C functions."""
    lib = ctypes.CDLL(str(path))
    weights = [np.ascontiguousarray(w) for w in m.get_weights()]
    p_ = ctypes.c_void_p

    def ptr(a):
        return a.ctypes.data_as(p_)

    losses = []
    for k in range(3):
        xb = np.ascontiguousarray(x[8 * k : 8 * k + 8])
        yb = np.ascontiguousarray(y[8 * k : 8 * k + 8])
        loss, p, accuracy = np.empty((1, 1)), np.empty((8, 3)), np.empty((1, 1))
        status = lib.drop_train_step(
            ctypes.c_int64(8),
            *map(ptr, [xb, yb, *weights]),
            ctypes.c_double(0.1),
            ctypes.c_double(k + 1),
            *map(ptr, [loss, p, accuracy]),
            None,
        )
        assert status == 0
        losses.append(loss[0, 0])
    p = np.empty((len(x), 3))
    assert lib.drop_forward(ctypes.c_int64(len(x)), *map(ptr, [x, *weights, p]), None) == 0
    return losses, weights, p
