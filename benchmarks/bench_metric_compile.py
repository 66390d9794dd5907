"""What stateful metrics add to the LLVM training step's compile time.

Run from the repository root::

    python -m benchmarks.bench_metric_compile            # 3 rounds per metric list
    python -m benchmarks.bench_metric_compile --rounds 5
    python -m benchmarks.bench_metric_compile --against /tmp/old   # another checkout too

Each round compiles, in a fresh process with an empty disk cache, a 8-16-1
sigmoid MLP (``binary_crossentropy``, Adam, LLVM backend, whole-epoch loop
included) with ``binary_accuracy`` alone, then with ``precision`` and ``recall``
added, then with ``auc`` (200 thresholds: one (1, 200) row of counts per
statistic, the thresholds a constant row) added; the rounds are interleaved and
the median compile seconds printed. ``--against PATH`` also compiles each list with the
symgrad of another checkout (``git worktree add PATH <commit>``), interleaved with this
one, and prints both columns: a before / after comparison measured in one run.
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


def compile_seconds(metrics: list[str], tree: str | None = None) -> float:
    """One fresh-process compile; ``tree``: import symgrad from that checkout instead."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"SYMGRAD_CACHE_DIR": cache, "PATH": ""}
        if tree is not None:
            env["PYTHONPATH"] = tree  # ahead of the editable install's finder
        out = subprocess.run(
            [sys.executable, "-c", CHILD, *metrics],
            capture_output=True,
            text=True,
            env=env,
            cwd=tree,
        )
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--against", help="another checkout's root, compiled in the same rounds")
    args = ap.parse_args(argv)
    trees = {"this": None, **({"against": args.against} if args.against else {})}
    times = {(name, tree): [] for name in LISTS for tree in trees}
    for _ in range(args.rounds):
        for name, metrics in LISTS.items():
            for tree, path in trees.items():
                times[name, tree].append(compile_seconds(metrics, path))
    if args.against:
        print(f"{'':22s} {'against':>9s} {'this':>9s}")
    for name in LISTS:
        medians = [statistics.median(times[name, tree]) for tree in reversed(trees)]
        print(f"{name:22s} " + " ".join(f"{m:7.2f} s" for m in medians))


if __name__ == "__main__":
    main()
