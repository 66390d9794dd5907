"""The whole epoch as one native call agrees with a Python loop over the step function."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from codegen.ir import Gemm, Guard, Map, Program, Reduce, Softmax, Value
from codegen.llvm import compile_epoch, compile_program

n = sp.Symbol("n", integer=True, positive=True)
z, b, y, p, g, m, v, w, lr, t = sp.symbols("z b y p g m v w lr t")
B1, B2, EPS = sp.Rational(9, 10), sp.Rational(999, 1000), sp.Float(1e-8)


def adam_step(dtype="float64") -> Program:
    """Softmax regression, mean cross-entropy, Adam on W (bias-corrected with the step count t), SGD on b."""
    X, Y, W, bias, mW, vW = (
        Value(k, s)
        for k, s in [
            ("X", (n, 4)),
            ("Y", (n, 3)),
            ("W", (4, 3)),
            ("b", (1, 3)),
            ("mW", (4, 3)),
            ("vW", (4, 3)),
        ]
    )
    Z, Zb, P, LP = (Value(k, (n, 3)) for k in ("Z", "Zb", "P", "LP"))
    loss, hits, dZ, dW, db = (
        Value("loss", (1, 1)),
        Value("hits", (1, 1)),
        Value("dZ", (n, 3)),
        Value("dW", (4, 3)),
        Value("db", (1, 3)),
    )
    mWn, vWn, Wn, bn = (
        Value("mWn", (4, 3)),
        Value("vWn", (4, 3)),
        Value("Wn", (4, 3)),
        Value("bn", (1, 3)),
    )
    body = (
        Gemm(Z, X, W),
        Map(Zb, z + b, ((z, Z), (b, bias))),
        Softmax(P, Zb),
        Softmax(LP, Zb, log=True),
        Reduce(loss, -y * p / n, ((y, Y), (p, LP)), (n, 3), None),
        Reduce(hits, y * sp.Heaviside(p - sp.Rational(1, 2), 0), ((y, Y), (p, P)), (n, 3), None),
        Guard(loss, "loss"),
        Map(dZ, (p - y) / n, ((p, P), (y, Y))),
        Gemm(dW, X, dZ, trans_a=True),
        Reduce(db, g, ((g, dZ),), (n, 3), 0),
        Map(mWn, B1 * m + (1 - B1) * g, ((m, mW), (g, dW))),
        Map(vWn, B2 * v + (1 - B2) * g**2, ((v, vW), (g, dW))),
        Map(
            Wn,
            w - lr * sp.sqrt(1 - B2**t) / (1 - B1**t) * m / (sp.sqrt(v) + EPS),
            ((w, W), (m, mWn), (v, vWn)),
        ),
        Map(bn, w - lr * g, ((w, bias), (g, db))),
    )
    updates = ((W, Wn), (bias, bn), (mW, mWn), (vW, vWn))
    return Program(
        "adam",
        (X, Y, W, bias, mW, vW),
        (lr, t),
        body,
        (loss, hits),
        updates=updates,
        dtype=dtype,
        batch=(n,),
    )


@pytest.fixture(scope="module")
def epoch():
    return compile_epoch(
        adam_step(), x_input="X", y_input="Y", sums=("loss", "hits"), counter="t", cache=False
    )


def data(rng, rows=23):
    X = rng.normal(size=(rows, 4))
    Y = np.eye(3)[rng.integers(0, 3, rows)]
    state = [rng.normal(size=(4, 3)) * 0.1, np.zeros((1, 3)), np.zeros((4, 3)), np.zeros((4, 3))]
    return X, Y, state


def python_loop(step, X, Y, state, order, batch_size, t0, lr_value=0.05):
    """The reference: one step call per batch, counter t = t0 + step index + 1."""
    sums, steps = {"loss": 0.0, "hits": 0.0}, 0
    for s, start in enumerate(range(0, len(order), batch_size)):
        rows = order[start : start + batch_size]
        loss, hits = step(X[rows], Y[rows], *state, lr_value, float(t0 + s + 1))
        sums["loss"] += len(rows) * loss[0, 0]
        sums["hits"] += len(rows) * hits[0, 0]
        steps += 1
    return sums, steps


@pytest.mark.parametrize("batch_size", [8, 23, 50, 1])
def test_epoch_matches_python_loop(epoch, batch_size, rng):
    X, Y, state = data(rng)
    order = rng.permutation(len(X))
    mine = [a.copy() for a in state]
    result = epoch(X, Y, *mine, 0.05, batch_size=batch_size, order=order, counter_start=4)
    step = compile_program(
        adam_step(), cache=False
    )  # compiled on its own, not shared with the epoch
    sums, steps = python_loop(step, X, Y, state, order, batch_size, t0=4)
    assert result.steps == steps == -(-len(X) // batch_size) and result.rows == len(X)
    for name in ("loss", "hits"):
        assert result.sums[name] == pytest.approx(sums[name], rel=1e-12)
    for got, want in zip(mine, state):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert result.mean("loss") == pytest.approx(sums["loss"] / len(X), rel=1e-12)


def test_epoch_step_shares_the_code(epoch, rng):
    X, Y, state = data(rng, rows=6)
    loss, hits = epoch.step(X, Y, *state, 0.05, 1.0)
    assert loss.shape == (1, 1) and np.isfinite(loss).all() and 0 <= hits[0, 0] <= 6


def test_epoch_guard_stops_at_the_failing_batch(epoch, rng):
    X, Y, state = data(rng)
    order = np.arange(len(X))
    X[17, 2] = np.nan  # in batch 2 of size 8
    mine = [a.copy() for a in state]
    with pytest.raises(FloatingPointError, match="loss.*batch 2") as info:
        epoch(X, Y, *mine, 0.05, batch_size=8, order=order)
    assert info.value.batch == 2
    python_loop(epoch.step, X, Y, state, order[:16], 8, t0=0)  # what batches 0 and 1 did
    for got, want in zip(mine, state):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_epoch_validation_before_native_code(epoch, rng, monkeypatch):
    X, Y, state = data(rng)
    monkeypatch.setattr(epoch, "_entry", lambda *a: pytest.fail("native code ran"))
    with pytest.raises(ValueError, match="order entries"):
        epoch(X, Y, *state, 0.05, batch_size=8, order=[0, 1, 23])
    with pytest.raises(TypeError, match="integer"):
        epoch(X, Y, *state, 0.05, batch_size=8, order=np.arange(23.0))
    with pytest.raises(ValueError, match="shape"):
        epoch(X, Y[:-1], *state, 0.05, batch_size=8, order=np.arange(22))
    with pytest.raises(ValueError, match="batch_size"):
        epoch(X, Y, *state, 0.05, batch_size=0, order=np.arange(23))
    with pytest.raises(TypeError, match="arguments"):
        epoch(X, Y, *state, batch_size=8, order=np.arange(23))
    with pytest.raises(ValueError, match=r"argument 2 \(W\)"):
        epoch(X, Y, state[0][:, :2].copy(), *state[1:], 0.05, batch_size=8, order=np.arange(23))
    frozen = state[0].copy()
    frozen.flags.writeable = False  # W is updated in place
    bad = {  # each passes the shape test of the call's fast path
        "not C-contiguous": np.asfortranarray(state[0]),
        "read-only": frozen,
        "wrong dtype": state[0].astype(np.float32),
    }
    for problem, w in bad.items():
        with pytest.raises((TypeError, ValueError), match=rf"argument 2 \(W\) \({problem}"):
            epoch(X, Y, w, *state[1:], 0.05, batch_size=8, order=np.arange(23))


def test_epoch_without_counter_and_subset_order(rng):
    """counter=None: the step's scalars are all passed through; order may be any subset of rows."""
    X, Y, Wt, Wn, L = (
        Value("X", (n, 2)),
        Value("Y", (n, 1)),
        Value("W", (2, 1)),
        Value("Wn", (2, 1)),
        Value("L", (1, 1)),
    )
    Z, dZ, dW = Value("Z", (n, 1)), Value("dZ", (n, 1)), Value("dW", (2, 1))
    body = (
        Gemm(Z, X, Wt),
        Reduce(L, (z - y) ** 2 / n, ((z, Z), (y, Y)), (n, 1), None),
        Map(dZ, 2 * (z - y) / n, ((z, Z), (y, Y))),
        Gemm(dW, X, dZ, trans_a=True),
        Map(Wn, w - lr * g, ((w, Wt), (g, dW))),
    )
    program = Program("lsq", (X, Y, Wt), (lr,), body, (L,), updates=((Wt, Wn),), batch=(n,))
    epoch = compile_epoch(program, x_input="X", y_input="Y", sums=("L",), counter=None, cache=False)
    Xv, Yv = rng.normal(size=(30, 2)), rng.normal(size=(30, 1))
    order = rng.choice(30, size=11, replace=False)
    W1, W2 = np.zeros((2, 1)), np.zeros((2, 1))
    result = epoch(Xv, Yv, W1, 0.1, batch_size=4, order=order)
    total = 0.0
    for start in range(0, 11, 4):
        rows = order[start : start + 4]
        (loss,) = epoch.step(Xv[rows], Yv[rows], W2, 0.1)
        total += len(rows) * loss[0, 0]
    assert result.steps == 3 and result.sums["L"] == pytest.approx(total, rel=1e-12)
    np.testing.assert_allclose(W1, W2, rtol=1e-12)


def test_compile_epoch_rejects_bad_specs():
    with pytest.raises(ValueError, match="x_input"):
        compile_epoch(adam_step(), x_input="Q", y_input="Y", sums=("loss",), cache=False)
    with pytest.raises(ValueError, match="sums"):
        compile_epoch(adam_step(), x_input="X", y_input="Y", sums=("dW",), cache=False)
    with pytest.raises(ValueError, match="counter"):
        compile_epoch(
            adam_step(), x_input="X", y_input="Y", sums=("loss",), counter="step", cache=False
        )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_epoch_equals_the_step_loop_bit_for_bit(dtype, rng):
    """Shuffled rows gathered natively, a smaller last batch: the same bits as the step loop.

    The step is the one compiled into the epoch's object, called per batch on
    rows gathered by NumPy; every weight and optimizer slot must be identical.
    """
    epoch = compile_epoch(
        adam_step(dtype), x_input="X", y_input="Y", sums=("loss",), counter="t", cache=False
    )
    X, Y, state = data(rng, rows=45)
    X, Y, state = X.astype(dtype), Y.astype(dtype), [a.astype(dtype) for a in state]
    order = rng.permutation(len(X))
    mine = [a.copy() for a in state]
    result = epoch(X, Y, *mine, 0.05, batch_size=8, order=order, counter_start=2)
    sums, steps = python_loop(epoch.step, X, Y, state, order, 8, t0=2)
    assert result.steps == steps == 6
    for got, want in zip(mine, state):
        np.testing.assert_array_equal(got, want)
    assert result.sums["loss"] == pytest.approx(sums["loss"], rel=1e-6)


def test_buffers_start_on_cache_lines():
    """Every buffer of a set is zeroed, C-contiguous and starts on a 64-byte boundary."""
    from codegen.llvm.backend import ALIGN, aligned_zeros

    shapes = [(3, 5), (1, 1), (7, 9), (2, 16)]
    for dtype in (np.dtype("float32"), np.dtype("float64")):
        arrays = aligned_zeros(shapes, dtype)
        assert [a.shape for a in arrays] == shapes and ALIGN == 64
        for a in arrays:
            assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
            assert a.ctypes.data % ALIGN == 0 and not a.any()
        ends = sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays)
        assert all(end <= start for (_, end), (start, _) in zip(ends, ends[1:]))  # no overlap
