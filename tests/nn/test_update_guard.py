"""All-or-nothing steps: what a step would write is checked before any of it is written.

A step whose loss and gradients are finite can still produce nan / inf weights or
slots (an overflowing rate, negative slots, ``t = 0`` in Adam's bias correction):
the training step guards the sum of every new weight and slot, on every backend,
in the emitted Python module and in the C library; the optimizer rejects a bad
learning rate or step counter before the step runs.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import symgrad
from codegen.llvm.emit import c_compiler
from symgrad import Dense, NonFiniteLossError, Sequential
from symgrad.nn.optimizers import SGD, Adagrad, Adam, RMSprop

BACKENDS = list(symgrad.compiler.BACKENDS)  # every registered backend


def model(backend, optimizer, dtype="float64", hidden="tanh"):
    m = Sequential([Dense(4, activation=hidden, input_dim=3), Dense(2, activation="softmax")])
    m.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        backend=backend,
        dtype=dtype,
        seed=0,
    )
    _ = m.compiled_step  # creates the optimizer slots
    return m


def xy(rows=12, scale=1.0):
    rng = np.random.default_rng(3)
    return scale * rng.normal(size=(rows, 3)), np.arange(rows) % 2


def state(m):
    """Weights, slots and the step counter: everything a step writes."""
    return (
        [w.copy() for w in m.get_weights()],
        [v.value.copy() for v in m.optimizer.variables],
        m.optimizer.iterations,
    )


def assert_same_state(m, before):
    weights, slots, iterations = state(m)
    for a, b in zip(weights + slots, before[0] + before[1]):
        np.testing.assert_array_equal(a, b)
    assert iterations == before[2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", [Adam, RMSprop, Adagrad])
def test_negative_slots_make_nan_weights_and_nothing_is_written(backend, optimizer):
    """sqrt of a negative velocity / accumulator: finite loss and gradients, nan weights."""
    m = model(backend, optimizer())
    x, y = xy()
    m.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)  # three good steps
    for v in m.optimizer.variables:
        if v.path.endswith(("velocity", "accumulator")):
            v.value[...] = -1.0
    before = state(m)
    with pytest.raises(NonFiniteLossError) as info:
        m.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    # the first weight written from the bad slot is named, with the step and what was kept
    assert str(info.value).startswith(
        "The new value of dense/kernel became nan or inf at epoch 1, batch 1 of 3 "
        "(optimizer step 4); training stopped and nothing of that step was written: the "
        "weights, optimizer slots and iterations are those after step 3. "
    ), str(info.value)
    assert "(train_step: new_dense_kernel is not finite (" in str(info.value)
    assert_same_state(m, before)
    with pytest.raises(NonFiniteLossError) as info:
        m.train_on_batch(x[:4], y[:4])
    assert str(info.value).startswith(
        "The new value of dense/kernel is nan or inf for this batch (optimizer step 4); "
        "nothing was written: the weights, optimizer slots and iterations are those after "
        "step 3. (train_step: new_dense_kernel is not finite ("
    ), str(info.value)
    assert_same_state(m, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_failing_slot_is_named(backend):
    """A nan momentum slot: the first value that would be written from it is that slot."""
    m = model(backend, SGD(learning_rate=0.1, momentum=0.9))
    x, y = xy()
    m.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    slot = next(v for v in m.optimizer.variables if v.path == "dense_1/bias/momentum")
    slot.value[0, 0] = np.inf
    before = state(m)
    with pytest.raises(NonFiniteLossError) as info:
        m.train_on_batch(x[:4], y[:4])
    words = str(info.value).split(" is nan or inf", 1)[0]
    assert words in ("The new value of dense_1/bias/momentum", "The new value of dense_1/bias")
    assert_same_state(m, before)


def test_the_guard_names_are_the_same_on_every_backend():
    messages = set()
    for backend in BACKENDS:
        m = model(backend, Adam())
        x, y = xy()
        m.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
        for v in m.optimizer.variables:
            v.value[...] = -1.0 if v.path.endswith("velocity") else v.value
        with pytest.raises(NonFiniteLossError) as info:
            m.train_on_batch(x[:4], y[:4])
        messages.add(str(info.value).split(" is not finite", 1)[0])
    assert len(messages) == 1, messages


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_overflowing_update_writes_nothing(backend):
    """float32: a rate finite in float32 times gradients of ~1e2 overflows to inf."""
    m = model(backend, SGD(learning_rate=1e37), dtype="float32", hidden=None)
    x, y = xy(scale=1e3)
    before = state(m)
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 1 of 3"):
        m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert_same_state(m, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_at_t_zero_is_refused_by_the_compiled_step(backend):
    """t = 0: Adam's bias correction divides by 1 - beta_1**0 = 0.

    The LLVM step computes inf and its update guard refuses it; the NumPy step
    computes that scalar factor in Python, which raises ZeroDivisionError first.
    Either way nothing is written.
    """
    m = model(backend, Adam())
    x, y = xy(rows=4)
    fn = m.compiled_step
    step = m._programs().train_step()
    args = [x, np.eye(2)[y], *m._weight_arrays(), *(s.value for s in step.slots)]
    scalars = dict(zip([s.name for s in fn.scalars], m.optimizer.scalar_values(fn.scalars)))
    scalars["t"] = 0.0
    before = state(m)
    new_kernel = r"train_step: new_dense_kernel is not finite \(nan or inf\); no input was updated"
    refused = (FloatingPointError, new_kernel) if backend == "llvm" else (ZeroDivisionError, None)
    with pytest.raises(refused[0], match=refused[1]), np.errstate(all="ignore"):
        fn(*args, *scalars.values())
    assert_same_state(m, before)
    if fn.epoch is not None:  # the native epoch loop: t = counter_start + 1
        others = [v for s, v in scalars.items() if s != "t"]
        at_batch = (
            r"train_step: new_dense_kernel is not finite \(nan or inf\) at batch 0 \(0-based\); "
            r"the inputs are as after the batch before it"
        )
        with pytest.raises(FloatingPointError, match=at_batch):
            fn.epoch(*args, *others, batch_size=4, order=np.arange(4), counter_start=-1)
        assert_same_state(m, before)


def test_the_emitted_module_refuses_negative_velocities(tmp_path, monkeypatch):
    m = model("numpy", Adam())
    symgrad.emit(m, tmp_path / "guarded_model.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    import guarded_model

    x, y = xy(rows=4)
    args = [x, np.eye(2)[y], *(w.as_matrix(a) for w, a in zip(m.weights, m.get_weights()))]
    args += [np.full_like(w, -k) for w in args[2:] for k in range(2)]  # momentum 0, velocity -1
    kept = [a.copy() for a in args]
    refused = r"train_step_kernel: new_dense_kernel is not finite \(nan\); no input was updated"
    with pytest.raises(FloatingPointError, match=refused), np.errstate(all="ignore"):
        guarded_model.train_step_kernel(*args, 0.9, 0.999, 1e-7, 0.001, 1.0)
    for a, b in zip(args, kept):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(c_compiler() is None, reason="no C compiler (cc, gcc, clang or $CC) found")
def test_the_c_library_returns_the_new_weights_code_at_t_zero_and_writes_nothing(tmp_path):
    m = model("llvm", Adam())
    symgrad.emit(m, tmp_path / "libguarded.so", target="shared")
    lib = ctypes.CDLL(str(tmp_path / "libguarded.so"))
    x, y = xy(rows=4)
    arrays = [x, np.eye(2)[y], *m.get_weights()]
    arrays += [np.zeros_like(w) for w in arrays[2:] for _ in range(2)]
    kept = [a.copy() for a in arrays]
    loss = np.empty((1, 1))
    pointers = [a.ctypes.data_as(ctypes.c_void_p) for a in [*arrays]]
    scalars = [ctypes.c_double(v) for v in (0.9, 0.999, 1e-7, 0.001, 0.0)]
    status = lib.guarded_train_step(ctypes.c_int64(4), *pointers, *scalars, loss.ctypes, None)
    # the header lists each status: 1 the loss, 2 the gradients' sum, then each new value
    header = " ".join((tmp_path / "guarded.h").read_text().split()).replace(" * ", " ")
    codes = header.split("guarded value is nan or inf: ", 1)[1].split(".", 1)[0]
    named = dict(reversed(item.split(" ", 1)) for item in codes.split(", "))
    assert named["loss"] == "1" and named["gradient_sum"] == "2"
    assert status == int(named["new_dense_kernel"])
    for a, b in zip(arrays, kept):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("rate", "message"),
    [
        (lambda i: float("nan"), r"Received: learning_rate=nan \(returned by the schedule"),
        (lambda i: -0.1, r"finite and > 0 in float32"),
        (lambda i: 1e39, r"\(it is inf there\)"),
        (lambda i: "fast", r"learning_rate must be a number. Received: learning_rate='fast'"),
    ],
    ids=["nan", "negative", "inf-in-float32", "text"],
)
def test_a_bad_scheduled_rate_is_refused_before_the_step(backend, rate, message):
    m = model(backend, SGD(learning_rate=rate), dtype="float32")
    x, y = xy()
    before = state(m)
    with pytest.raises((ValueError, TypeError), match=message):
        m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert_same_state(m, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rate_that_overflows_the_dtype_is_refused(backend):
    m = model(backend, SGD(learning_rate=1e39), dtype="float32")
    x, y = xy()
    before = state(m)
    with pytest.raises(
        ValueError,
        match=r"SGD: learning_rate must be finite and > 0 in float32 \(it is inf there\). "
        r"Received: learning_rate=1e\+39",
    ):
        m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert_same_state(m, before)
    m.optimizer.learning_rate = 0.1  # fixed: training goes on
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert m.optimizer.iterations == 3


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, "Received: iterations=-1"),
        (1.5, TypeError, "Received: iterations=1.5"),
        (float("nan"), TypeError, "Received: iterations=nan"),
        (True, TypeError, "Received: iterations=True"),
        ("3", TypeError, "Received: iterations='3'"),
    ],
)
def test_the_step_counter_must_be_a_non_negative_integer(value, error, message):
    opt = Adam()
    with pytest.raises(error, match=f"Adam: iterations must be a non-negative integer.*{message}"):
        opt.iterations = value
    assert opt.iterations == 0
    opt.iterations = np.int64(7)
    assert opt.iterations == 7 and type(opt.iterations) is int


@pytest.mark.parametrize("rate", [0, -0.01, float("nan"), float("inf")])
def test_a_constant_rate_must_be_positive_and_finite(rate):
    with pytest.raises(ValueError, match="learning_rate must be"):
        SGD(learning_rate=rate)
    opt = SGD()
    with pytest.raises(ValueError, match="learning_rate must be"):
        opt.learning_rate = rate
    assert opt.learning_rate == 0.01
