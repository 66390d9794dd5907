"""Timing helpers shared by the benchmarks.

Example::

    from benchmarks.common import interleaved, print_table

    results = interleaved({"hand": hand_step, "symgrad": compiled_step}, rounds=15)
    print_table(results, baseline="hand", title="MLP 784-128-10, batch 64, float32")
"""

from __future__ import annotations

import importlib
import os
import platform
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

import symgrad


class Timing(NamedTuple):
    """Seconds per call: median and quartiles over ``samples`` samples of ``number`` calls."""

    median: float
    q1: float
    q3: float
    samples: int
    number: int


def _summarize(per_call: list[float], number: int) -> Timing:
    q1, median, q3 = np.percentile(per_call, [25, 50, 75])
    return Timing(float(median), float(q1), float(q3), len(per_call), number)


def _sample(fn: Callable[[], object], number: int) -> float:
    """Mean seconds per call over ``number`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _thread_run_times() -> dict[str, int]:
    """Nanoseconds each other thread of this process has run (Linux schedstat); {} elsewhere."""
    me = str(threading.get_native_id())
    times = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    for tid in tids:
        if tid == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                times[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread ended, or no schedstat
    return times


def settle(window: float = 0.005, timeout: float = 0.5) -> float:
    """Wait until no other thread of this process runs; return the seconds waited.

    BLAS and OpenMP runtimes keep their worker threads spinning for a while
    after a call (OpenBLAS about 0.1 s), so a candidate timed right after
    another shares the cores with the previous one's idle-spinning workers:
    symgrad's two-thread wide step took 51-63 ms after hand NumPy's step and
    26-34 ms after a pause. Waiting until the other threads have not run for
    ``window`` seconds starts every sample from a process at rest, as a user's
    own training loop would be. Gives up after ``timeout`` seconds.
    """
    start = time.perf_counter()
    before = _thread_run_times()
    while time.perf_counter() - start < timeout:
        time.sleep(window)
        after = _thread_run_times()
        ran = sum(t - before.get(tid, t) for tid, t in after.items())
        if ran < window * 1e9 * 0.05:  # others ran under 5% of one core
            break
        before = after
    return time.perf_counter() - start


def calibrate(fn: Callable[[], object], min_seconds: float = 0.02) -> int:
    """Smallest number of calls in 1, 2, 5, 10, 20, ... that takes at least ``min_seconds``."""
    number = 1
    while True:
        for factor in (1, 2, 5):
            if _sample(fn, number * factor) * number * factor >= min_seconds:
                return number * factor
        number *= 10


def median_time(
    fn: Callable[[], object], *, repeat: int = 7, number: int | None = None, warmup: int = 1
) -> Timing:
    """Time ``fn()`` with ``time.perf_counter``: ``repeat`` samples of ``number`` calls each.

    ``warmup`` untimed calls come first (JIT compilation, buffer allocation);
    ``number=None`` picks one so that a sample lasts at least 20 ms.
    """
    for _ in range(warmup):
        fn()
    number = number or calibrate(fn)
    return _summarize([_sample(fn, number) for _ in range(repeat)], number)


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    rounds: int = 11,
    *,
    number: int | None = None,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Time several candidates in one process, alternating them to cancel machine noise.

    Each round takes one sample of every candidate; the order rotates from round
    to round so each candidate runs in each position equally often. A drift in
    clock speed or load then hits all candidates alike. Each sample waits
    first until the previous candidate's worker threads have
    stopped spinning (``settle``). Returns one ``Timing``
    per candidate (``.median`` is seconds per call), in the order of ``fns``.
    """
    names = list(fns)
    numbers = {}
    for name in names:
        for _ in range(warmup):
            fns[name]()
        settle()
        numbers[name] = number or calibrate(fns[name])
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            settle()
            samples[name].append(_sample(fns[name], numbers[name]))
    return {name: _summarize(samples[name], numbers[name]) for name in names}


def _unit(seconds: float) -> tuple[str, float]:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return unit, scale
    return "ns", 1e-9


def _number(value: float) -> str:
    """Three significant digits without exponent: 0.123, 4.56, 78.9, 1234."""
    return f"{value:.{max(0, 2 - int(np.floor(np.log10(abs(value)))))}f}" if value else "0"


def format_table(
    results: Mapping[str, Timing],
    baseline: str,
    *,
    title: str | None = None,
    speedup: bool = False,
) -> str:
    """A markdown table of medians and interquartile ranges, with time ratios to ``baseline``.

    A ratio below 1 means faster than the baseline. ``speedup=True`` adds the
    inverse, ``baseline / candidate`` ("2.5x" = two and a half times as fast).
    """
    if baseline not in results:
        raise ValueError(f"baseline must be one of {list(results)}. Received: {baseline=}")
    unit, scale = _unit(min(t.median for t in results.values()))
    base = results[baseline].median
    lines = [f"**{title}**", ""] if title else []
    extra = " speedup |" if speedup else ""
    lines += [
        f"| candidate | median ({unit}) | q1–q3 ({unit}) | time / {baseline} |{extra}",
        "| --- | ---: | ---: | ---: |" + (" ---: |" if speedup else ""),
    ]
    for name, t in results.items():
        lines.append(
            f"| {name} | {_number(t.median / scale)} "
            f"| {_number(t.q1 / scale)}–{_number(t.q3 / scale)} "
            f"| {t.median / base:.2f} |" + (f" {base / t.median:.2f}x |" if speedup else "")
        )
    return "\n".join(lines)


def print_table(results: Mapping[str, Timing], baseline: str, *, title: str | None = None) -> None:
    """Print ``format_table(results, baseline, title=title)`` followed by a blank line."""
    print(format_table(results, baseline, title=title), end="\n\n")


def peers() -> dict[str, str | None]:
    """Version of each optional peer framework (``torch``, ``jax``), or None if not importable."""
    versions: dict[str, str | None] = {}
    for name in ("torch", "jax"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception:  # missing or broken install: the peer is simply not compared
            versions[name] = None
    return versions


def environment() -> str:
    """One line describing the machine and library versions, for benchmark headers."""
    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    for name in ("sympy", "llvmlite"):
        try:
            parts.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            pass
    parts += [f"{name} {v}" for name, v in peers().items() if v]
    parts.append(f"{os.cpu_count()} cpus, {platform.machine()}")
    parts.append(
        symgrad.config().summary()
    )  # which BLAS, kernels and threads the LLVM backend uses
    return ", ".join(parts)
