"""benchmarks.common.settle waits for the process's other threads to stop running.

Each case runs in a fresh process: a test session's own threads (Ray's driver, thread
pools of earlier tests) would otherwise count as "other threads".
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CHILD = """
import sys, threading, time
from benchmarks.common import settle

def spin(stop):
    while not stop.is_set():
        pass

spin_for, timeout = float(sys.argv[1]), float(sys.argv[2])
stop = threading.Event()
worker = threading.Thread(target=spin, args=(stop,))
if spin_for:
    threading.Timer(spin_for, stop.set).start()
    worker.start()
waited = settle(timeout=timeout)
print(f"{waited:.3f}", worker.is_alive())
stop.set()
"""


def settle_in_child(spin_for: float, timeout: float) -> tuple[float, bool]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(spin_for), str(timeout)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    waited, alive = run.stdout.split()
    return float(waited), alive == "True"


def test_settle_waits_for_a_spinning_thread():
    waited, spinning = settle_in_child(spin_for=0.3, timeout=5.0)
    assert not spinning, f"settle returned after {waited} s with the thread still spinning"
    assert waited >= 0.25


def test_settle_returns_at_once_when_nothing_else_runs():
    waited, _ = settle_in_child(spin_for=0, timeout=5.0)
    assert waited < 1.0


def test_settle_gives_up_after_its_timeout():
    waited, spinning = settle_in_child(spin_for=5.0, timeout=0.2)
    assert spinning and waited >= 0.2
