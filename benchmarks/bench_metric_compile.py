"""What stateful metrics add to the LLVM training step's compile time.

Run from the repository root::

    python -m benchmarks.bench_metric_compile            # 3 rounds per metric list
    python -m benchmarks.bench_metric_compile --rounds 5

Each round compiles, in a fresh process with an empty disk cache, a 8-16-1
sigmoid MLP (``binary_crossentropy``, Adam, LLVM backend, whole-epoch loop
included) with ``binary_accuracy`` alone, then with ``precision`` and ``recall``
added, then with ``auc`` (200 thresholds: one (1, 200) row of counts per
statistic, the thresholds a constant row) added; the rounds are interleaved and
the median compile seconds printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
from symgrad.layers import Dense
from symgrad.models import Sequential
model = Sequential([Dense(16, activation="relu", input_dim=8), Dense(1, activation="sigmoid")])
started = time.perf_counter()
model.compile("adam", "binary_crossentropy", metrics=sys.argv[1:], backend="llvm", seed=0)
print(json.dumps(time.perf_counter() - started))
"""

LISTS = {
    "binary_accuracy": ["binary_accuracy"],
    "+ precision, recall": ["binary_accuracy", "precision", "recall"],
    "+ auc": ["binary_accuracy", "auc"],
}


def compile_seconds(metrics: list[str]) -> float:
    with tempfile.TemporaryDirectory() as cache:
        env = {"SYMGRAD_CACHE_DIR": cache, "PATH": ""}
        out = subprocess.run(
            [sys.executable, "-c", CHILD, *metrics], capture_output=True, text=True, env=env
        )
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in LISTS}
    for _ in range(args.rounds):
        for name, metrics in LISTS.items():
            times[name].append(compile_seconds(metrics))
    for name, values in times.items():
        print(f"{name:22s} {statistics.median(values):6.2f} s")


if __name__ == "__main__":
    main()
