"""Ctrl-C during fit: weights, optimizer slots and the step counter describe one completed step.

The parent sends SIGINT to a child running ``fit`` (``tests/nn/interrupted_fit.py``)
at random moments; the child checks, by replaying its completed steps from the
initial state, that nothing of an interrupted step was kept.
"""

from __future__ import annotations

import json
import linecache
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import symgrad
from symgrad.nn.interrupts import Deferred
from tests.nn.interrupted_fit import BATCH, model, replayed, state

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 10
CHILD_TIMEOUT = 600  # seconds for all the trials


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Ctrl-C's usual handler for these tests, whatever this process inherited: a job a
    non-interactive shell starts in the background has SIGINT ignored, and its Python
    then installs no handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(symgrad.compiler.BACKENDS))  # every registered backend
def test_sigint_at_random_moments_keeps_whole_steps(backend):
    rng = random.Random(1234)
    results = []
    with subprocess.Popen(
        [sys.executable, "-m", "tests.nn.interrupted_fit", backend, str(TRIALS)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        # no hang: a child that never answers (a lost SIGINT) is killed, and its empty
        # line fails the test
        watchdog = threading.Timer(CHILD_TIMEOUT, child.kill)
        watchdog.start()
        try:
            for _ in range(TRIALS):
                assert child.stdout.readline().strip() == "ready", child.stderr.read()
                time.sleep(rng.uniform(0.05, 0.6))
                child.send_signal(signal.SIGINT)
                line = child.stdout.readline()
                assert line, child.stderr.read()
                results.append(json.loads(line))
            assert child.wait(timeout=60) == 0, child.stderr.read()
        finally:
            watchdog.cancel()
            child.kill()
    torn = [r for r in results if not r["consistent"]]
    assert not torn, f"{len(torn)} of {TRIALS} interrupts left a torn state: {results}"
    assert sum(r["iterations"] > 0 for r in results) >= TRIALS // 2  # most hit training


@pytest.mark.parametrize(
    ("line", "nth"),
    [("copyto(", 3), ("return result", 1)],
    ids=["between two update writes", "after the writes, before the count"],
)
def test_numpy_sigint_inside_the_generated_step_waits_for_the_step(line, nth):
    """SIGINT raised at a chosen line of the generated NumPy step (a line tracer): without
    deferral the KeyboardInterrupt would come out of that line, leaving a torn step."""
    m = model("numpy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3 * BATCH, 48)), rng.integers(0, 10, size=3 * BATCH)
    code = m.compiled_step.native.function.__code__

    def marked(lineno) -> bool:
        return linecache.getline(code.co_filename, lineno).strip().startswith(line)

    per_step = sum(marked(k) for k in {k for _, _, k in code.co_lines() if k})
    seen = []

    def local(frame, event, arg):
        if event == "line" and marked(frame.f_lineno):
            seen.append(frame.f_lineno)
            if len(seen) == per_step + nth:  # in the second step: one good step before it
                signal.raise_signal(signal.SIGINT)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is code else None

    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            m.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    finally:
        sys.settrace(None)
    assert len(seen) >= per_step + nth and (line == "return result" or per_step > nth)
    assert m.optimizer.iterations == 2  # the interrupted step completed, then the interrupt
    for got, want in zip(state(m), state(replayed("numpy", x, y, 2))):
        np.testing.assert_array_equal(got, want)


def test_an_interrupt_during_a_step_waits_for_its_end():
    """In-process: SIGINT raised inside ``with deferred:`` surfaces when the block ends."""
    deferred, events = Deferred(), []
    with pytest.raises(KeyboardInterrupt), deferred.installed():
        with deferred:
            signal.raise_signal(signal.SIGINT)
            events.append("step finished")
        events.append("after the step")  # never reached: the interrupt comes first
    assert events == ["step finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_between_steps_is_immediate():
    deferred = Deferred()
    with pytest.raises(KeyboardInterrupt), deferred.installed():
        signal.raise_signal(signal.SIGINT)
        pytest.fail("the interrupt should have been raised at once")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        deferred = Deferred()
        with deferred.installed():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            with deferred:
                signal.raise_signal(signal.SIGINT)  # ignored, as the user asked
    finally:
        signal.signal(signal.SIGINT, previous)
