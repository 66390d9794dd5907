"""The child of test_interrupts: trials of ``fit`` that the parent interrupts with SIGINT.

``python -m tests.nn.interrupted_fit BACKEND TRIALS``: for each trial, prints
``ready``, fits an Adam model (step by step or native epochs, alternately) until
the KeyboardInterrupt, then replays ``optimizer.iterations`` steps from the same
initial state with ``train_on_batch`` and prints one JSON line: whether the
weights and the slots equal the replayed ones exactly.
"""

from __future__ import annotations

import json
import signal
import sys

import numpy as np

from symgrad import Dense, Sequential
from symgrad.nn.callbacks import LambdaCallback
from symgrad.nn.optimizers import Adam

ROWS, BATCH = 384, 64


def model(backend: str) -> Sequential:
    m = Sequential([Dense(96, activation="tanh", input_dim=48), Dense(10, activation="softmax")])
    m.compile(
        optimizer=Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        backend=backend,
        dtype="float64",
        seed=0,
    )
    return m


def state(m: Sequential) -> list[np.ndarray]:
    return [*m.get_weights(), *(v.value.copy() for v in m.optimizer.variables)]


def replayed(backend: str, x, y, steps: int) -> Sequential:
    """A fresh model after ``steps`` steps of ``train_on_batch`` over ``x`` in order."""
    m = model(backend)
    per_epoch = -(-len(x) // BATCH)
    for k in range(steps):
        rows = slice((k % per_epoch) * BATCH, (k % per_epoch + 1) * BATCH)
        m.train_on_batch(x[rows], y[rows])
    return m


def trial(backend: str, x, y, step_by_step: bool) -> dict:
    m = model(backend)
    # a batch hook makes fit run step by step on the LLVM backend too
    hooks = [LambdaCallback(on_train_batch_end=lambda batch, logs: None)] if step_by_step else []
    print("ready", flush=True)
    try:
        m.fit(x, y, epochs=10**6, batch_size=BATCH, shuffle=False, verbose=0, callbacks=hooks)
    except KeyboardInterrupt:
        pass
    done = m.optimizer.iterations
    got, want = state(m), state(replayed(backend, x, y, done))
    same = len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))
    return {"iterations": done, "consistent": bool(same)}


def main(backend: str, trials: int) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(ROWS, 48)), rng.integers(0, 10, size=ROWS)
    model(backend).fit(x[:BATCH], y[:BATCH], epochs=1, verbose=0)  # compile before the trials
    for k in range(trials):
        print(json.dumps(trial(backend, x, y, step_by_step=bool(k % 2))), flush=True)


if __name__ == "__main__":
    # Ctrl-C's usual handler, whatever the parent had: a job started in the background by
    # a non-interactive shell inherits SIGINT ignored, and fit then rightly leaves it so
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main(sys.argv[1], int(sys.argv[2]))
