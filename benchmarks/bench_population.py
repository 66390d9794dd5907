"""Population training: 16 digits MLPs in one native call per epoch against 16 sequential fits.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_population              # 1 thread, then all cores
    .venv/bin/python -m benchmarks.bench_population --threads 2 --epochs 5 --rounds 5

Without ``--threads`` each thread setting runs in its own child process (the
thread limits of ``benchmarks.threads`` must be set before NumPy loads).

The members: a 64-32-10 MLP (relu, softmax, sparse categorical cross-entropy,
accuracy, SGD with momentum 0.9, LLVM backend), 4 learning rates x 4 seeds, on
sklearn's 1797 digits, batches of 32, in the rows' order (``shuffle=False``: the
members of a population share one batch order). Two candidates train the same
16 members for ``--epochs`` epochs, alternating round by round; both are compiled
before the clock runs:

- ``16 sequential fits``: one compiled model, reset for each member and fit
  (``TrialRunner``, as ``sweep(..., num_workers=0)`` does): one native call per
  epoch per member;
- ``population of 16``: ``Population.reset`` then ``fit``: one native call per epoch
  for all 16 members.

Medians of the rounds, in float64 and float32; the script checks that every
member's final weights are bit for bit those of its sequential fit. The last
column is the time to build and compile each candidate, once, before the rounds
(derivation and code generation, or the disk cache ``$SYMGRAD_CACHE_DIR`` as found).
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and any(a.startswith("--threads") for a in sys.argv):
    from benchmarks.threads import limit_threads_from_argv

    limit_threads_from_argv(script=__file__)  # before NumPy is imported

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import environment  # noqa: E402
from symgrad.distributed import trials  # noqa: E402
from symgrad.distributed.population import Population  # noqa: E402
from symgrad.layers import Dense  # noqa: E402
from symgrad.models import Sequential  # noqa: E402

LEARNING_RATES = (0.3, 0.1, 0.03, 0.01)


def build(hp):
    return Sequential([Dense(32, "relu", input_dim=64), Dense(10, "softmax")])


def settings(dtype: str) -> dict:
    return {
        "optimizer": "sgd",
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "backend": "llvm",
        "dtype": dtype,
    }


def members(count: int) -> list[dict]:
    """``count`` members: the learning rates in turn, each with its own seed."""
    return [
        {"learning_rate": LEARNING_RATES[k % len(LEARNING_RATES)], "momentum": 0.9, "seed": k}
        for k in range(count)
    ]


def digits(rows: int | None):
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data[:rows] / 16.0, d.target[:rows]


def candidates(dtype: str, count: int, x, y, epochs: int) -> dict:
    """name -> () -> every member's final weights (list of lists), compiled already."""
    plan = members(count)
    fit_args = {"epochs": epochs, "batch_size": 32, "shuffle": False, "verbose": 0}
    started = time.perf_counter()
    runner = trials.TrialRunner(build, settings(dtype), x, y, fit_args)
    runner.model_for(plan[0])
    solo_setup = time.perf_counter() - started
    started = time.perf_counter()
    pop = Population(build, plan, compile=settings(dtype))
    pop.train_step()
    setup = {"one model": solo_setup, "population": time.perf_counter() - started}

    def sequential():
        out = []
        for hp in plan:
            model, _, _ = runner.fit(hp)
            out.append(model.get_weights())
        return out

    def population():
        pop.reset(plan)
        pop.fit(x, y, epochs=epochs, batch_size=32)
        return [pop.member_weights(k) for k in range(count)]

    fns = {f"{count} sequential fits": sequential, f"population of {count}": population}
    return fns, setup


def measure(dtype: str, count: int, x, y, epochs: int, rounds: int) -> dict:
    """Medians (seconds) of each candidate, alternating; and whether the weights agree."""
    fns, setup = candidates(dtype, count, x, y, epochs)
    results = {name: fn() for name, fn in fns.items()}  # warm-up: the first fit of each
    first, second = results.values()
    equal = all(np.array_equal(a, b) for wa, wb in zip(first, second) for a, b in zip(wa, wb))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {"dtype": dtype, "medians": medians, "equal": equal, "setup": setup}


def format_rows(rows: list[dict], threads: int, count: int, epochs: int) -> str:
    names = list(rows[0]["medians"])
    lines = [
        f"**{count} members, {epochs} epochs, {threads} thread(s)**",
        "",
        f"| dtype | {names[0]} (s) | {names[1]} (s) | speed-up | weights bit-equal "
        "| compile: one model / population (s) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        a, b = (row["medians"][n] for n in names)
        equal = "yes" if row["equal"] else "NO"
        setup = f"{row['setup']['one model']:.2f} / {row['setup']['population']:.2f}"
        lines.append(f"| {row['dtype']} | {a:.3f} | {b:.3f} | {a / b:.2f}x | {equal} | {setup} |")
    return "\n".join(lines)


def run(threads: int, count: int, epochs: int, rounds: int, dtypes, rows: int | None) -> str:
    x, y = digits(rows)
    measured = [measure(dtype, count, x, y, epochs, rounds) for dtype in dtypes]
    text = format_rows(measured, threads, count, epochs)
    print(environment())
    print(text, end="\n\n")
    return text


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="one thread setting only")
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dtypes", nargs="*", default=["float64", "float32"])
    ap.add_argument("--rows", type=int, default=None, help="the first rows of digits only")
    parsed = ap.parse_args(args)
    if parsed.threads is not None:
        if hasattr(os, "sched_setaffinity") and parsed.threads >= (os.cpu_count() or 1):
            os.sched_setaffinity(0, range(os.cpu_count() or 1))  # all cores, whatever was inherited
        run(
            parsed.threads, parsed.members, parsed.epochs, parsed.rounds, parsed.dtypes, parsed.rows
        )
        return
    rest = [
        *("--members", str(parsed.members), "--epochs", str(parsed.epochs)),
        *("--rounds", str(parsed.rounds), "--dtypes", *parsed.dtypes),
        *(("--rows", str(parsed.rows)) if parsed.rows else ()),
    ]
    for threads in sorted({1, os.cpu_count() or 1}):  # one thread, then all cores
        cmd = [sys.executable, "-m", "benchmarks.bench_population", "--threads", str(threads)]
        subprocess.run([*cmd, *rest], check=True)


if __name__ == "__main__":
    main()
