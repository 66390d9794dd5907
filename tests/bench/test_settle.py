"""benchmarks.common.settle waits for the process's other threads to stop running."""

import sys
import threading
import time

import pytest

from benchmarks.common import settle

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_settle_waits_for_a_spinning_thread():
    worker = threading.Thread(target=spin, args=(0.3,))
    worker.start()
    started = time.perf_counter()
    waited = settle(timeout=2.0)
    still_running = worker.is_alive()
    worker.join()
    assert not still_running, f"settle returned after {waited:.3f} s with the thread spinning"
    assert time.perf_counter() - started >= 0.25


def test_settle_returns_at_once_when_nothing_else_runs():
    assert settle(timeout=2.0) < 0.2


def test_settle_gives_up_after_its_timeout():
    worker = threading.Thread(target=spin, args=(1.0,))
    worker.start()
    waited = settle(timeout=0.2)
    worker.join()
    assert 0.2 <= waited < 0.6
