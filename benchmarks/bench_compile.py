"""Cold and warm ``model.compile`` of the digits model, each in a fresh process.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_compile                 # 7 runs each, llvm and numpy backends
    .venv/bin/python -m benchmarks.bench_compile --runs 11 --backends llvm

The model is 64-128-64-10 (relu, softmax), Adam, sparse categorical
cross-entropy, ``metrics=["accuracy"]``, float32. ``compile`` derives the
gradients, simplifies, lowers and generates the training step (with the LLVM
backend: the step, its whole-epoch loop and its native Python entry in one
module, then optimized and JIT-linked).

- **cold**: an empty ``SYMGRAD_CACHE_DIR`` for every run (nothing cached);
- **warm**: the same directory again after one run filled it: the lowered
  program and the object code come from disk.

Each run is a new Python process; the time of ``import symgrad...`` is
reported separately from ``model.compile(...)``. Cold runs also report where
the time went.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

# The stages of ``compile`` the child times: (module, function, label) per backend.
STAGES = {
    "common": [
        ("symgrad.nn.trainer", "add_loss", "derive (loss, gradients)"),
        ("symgrad.compiler", "simplify", "simplify"),
        ("symgrad.compiler", "lower", "lower to IR"),
    ],
    "llvm": [
        ("codegen.llvm.backend", "generate_ir", "LLVM IR text"),
        ("codegen.llvm.backend", "optimize_and_emit", "LLVM optimize + codegen"),
        ("codegen.llvm.backend", "LoadedObject", "JIT link"),
    ],
}

CHILD = r"""
import functools, importlib, json, sys, time
t0 = time.perf_counter()
import numpy as np
import symgrad.compiler
from symgrad.layers import Dense
from symgrad.models import Sequential
backend, stages = sys.argv[1], json.loads(sys.argv[2])
imported = time.perf_counter() - t0
phases = {}
def timed(module, name, label):
    module = importlib.import_module(module)
    f = getattr(module, name)
    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            phases[label] = phases.get(label, 0.0) + time.perf_counter() - t
    setattr(module, name, g)
for stage in stages:
    timed(*stage)
t = time.perf_counter()
model = Sequential([Dense(128, activation="relu", input_dim=64), Dense(64, activation="relu"),
                    Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
              backend=backend, dtype="float32", seed=0)
compiled = time.perf_counter() - t
print(json.dumps({"import": imported, "compile": compiled, "phases": phases}))
"""


def run_child(backend: str, cache_dir: str) -> dict:
    env = dict(os.environ, SYMGRAD_CACHE_DIR=cache_dir)
    stages = STAGES["common"] + STAGES.get(backend, [])
    out = subprocess.run(
        [sys.executable, "-c", CHILD, backend, json.dumps(stages)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--backends", nargs="+", default=["llvm", "numpy"], choices=["llvm", "numpy"])
    args = ap.parse_args(argv)
    print(f"{args.runs} fresh processes per row; medians (min-max) in seconds\n")
    print("| backend | cache | `model.compile` | import | where the time went (cold, median) |")
    print("| --- | --- | ---: | ---: | --- |")
    for backend in args.backends:
        cold = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as empty:
                cold.append(run_child(backend, empty))
        with tempfile.TemporaryDirectory() as filled:
            run_child(backend, filled)
            warm = [run_child(backend, filled) for _ in range(args.runs)]
        labels = list(cold[0]["phases"])
        parts = ", ".join(
            f"{label} {statistics.median(r['phases'].get(label, 0.0) for r in cold):.3f}"
            for label in labels
        )
        for name, rows, detail in (("cold", cold, parts), ("warm", warm, "")):
            c = [r["compile"] for r in rows]
            i = [r["import"] for r in rows]
            print(
                f"| {backend} | {name} | {statistics.median(c):.3f} ({min(c):.3f}-{max(c):.3f}) "
                f"| {statistics.median(i):.3f} | {detail} |"
            )


if __name__ == "__main__":
    main()
