"""A 200-trial sweep of the digits MLP: Ray workers against the same trials in one process.

Run from the repository root (Ray installed: ``pip install -e ".[ray]"``)::

    python -m benchmarks.bench_sweep                 # 200 trials, 5 epochs, 3 rounds
    python -m benchmarks.bench_sweep --epochs 10 --rounds 5 --workers 2
    python -m benchmarks.bench_sweep --population 16  # and the population sweeps beside

The trials: learning rates (5) x momentum (0, 0.9) x seeds (20) of a 64-32-10
MLP (relu, softmax, sparse categorical cross-entropy, SGD, float64, LLVM backend)
on 80% of sklearn's digits, batches of 32, validated on the other 20%. The
candidates run the same trials, alternating round by round in one run:

- ``one process, fresh model per trial``: what a loop over the trials does --
  build, compile (the disk cache makes every compilation after the first cheap,
  but the graph is still derived and the code loaded) and fit;
- ``one process, program reused``: ``sweep(..., num_workers=0)``, each structure
  compiled once per call;
- ``Ray, N workers, fresh``: ``distributed.shutdown()``, then ``sweep(...,
  num_workers=N)`` on a local cluster of N CPUs (started before timing): the
  workers' start-up, imports and compilations are timed;
- ``Ray, N workers, kept``: the same sweep again on the workers the previous one
  kept (no start-up, no compilation: the first sweep's programs);
- ``Ray, N workers, kept, each row sent alone``: the same with every trial's row sent
  back as soon as it is done (``sweep.REPORT = 0``) instead of in bundles.

``--population K`` adds candidates to the same rounds: the sweep in the rows'
order (``shuffle=False``, which population training needs) in one process and on
kept workers, each plain and with ``population=K``, and with ``population=K`` on
fresh workers. Their histories are checked against each other (one batch order,
so not against the shuffled ones).

Every library gets one thread (``OPENBLAS_NUM_THREADS=1``, inherited by the Ray
workers). The script checks that every trial's history is the same in all
candidates of one batch order, and prints where a Ray sweep's time goes.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy; Ray's workers inherit it (no CPU pinning here)

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from benchmarks.common import environment  # noqa: E402
from symgrad import distributed  # noqa: E402
from symgrad.distributed import trials  # noqa: E402
from symgrad.layers import Dense  # noqa: E402
from symgrad.models import Sequential  # noqa: E402

SETTINGS = {
    "optimizer": "sgd",
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "backend": "llvm",
    "dtype": "float64",
}
SPACE = {
    "learning_rate": [0.3, 0.1, 0.03, 0.01, 0.003],
    "momentum": [0.0, 0.9],
    "seed": list(range(20)),
}


def build(hp):
    return Sequential([Dense(32, "relu", input_dim=64), Dense(10, "softmax")])


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    return train_test_split(
        d.data / 16.0, d.target, test_size=0.2, random_state=0, stratify=d.target
    )


def fresh_models(plan, data, epochs):
    """The plain loop: a new model per trial, compiled and trained."""
    x, x_val, y, y_val = data
    rows = []
    for i, hp in enumerate(plan):
        model = build(hp)
        optimizer = trials.trial_optimizer(SETTINGS, hp)
        rest = {k: v for k, v in SETTINGS.items() if k != "optimizer"}
        model.compile(optimizer=optimizer, seed=hp["seed"], **rest)
        history = model.fit(
            x, y, epochs=epochs, batch_size=32, validation_data=(x_val, y_val), verbose=0
        )
        rows.append({"trial": i, "history": history.history})
    return rows


def swept(data, epochs, workers, **options):
    x, x_val, y, y_val = data
    return distributed.sweep(
        build,
        SPACE,
        x,
        y,
        compile=SETTINGS,
        epochs=epochs,
        validation_data=(x_val, y_val),
        metric="val_accuracy",
        num_workers=workers,
        **options,
    )


def fresh(run):
    """``run`` on workers started for it: the kept ones are ended first."""

    def started():
        distributed.shutdown()
        return run()

    return started


def rows_alone(run):
    """``run`` with each trial's row sent back alone (``REPORT = 0``), not in bundles."""

    def alone():
        module = sys.modules["symgrad.distributed.sweep"]
        saved, module.REPORT = module.REPORT, 0.0
        try:
            return run()
        finally:
            module.REPORT = saved

    return alone


def candidates(plan, data, args) -> dict:
    """Name -> a run of the 200 trials; the first is the speed-up's baseline. A ``kept``
    candidate follows a ``fresh`` one in every round, so it finds their workers."""
    epochs, workers = args.epochs, args.workers
    ray = f"Ray, {workers} workers"
    runs = {
        "one process, fresh model per trial": lambda: fresh_models(plan, data, epochs),
        "one process, program reused": lambda: swept(data, epochs, 0),
        f"{ray}, fresh": fresh(lambda: swept(data, epochs, workers)),
        f"{ray}, kept": lambda: swept(data, epochs, workers),
        f"{ray}, kept, each row sent alone": rows_alone(lambda: swept(data, epochs, workers)),
    }
    if args.population:  # the rows' order, plain and as populations, side by side
        k = args.population
        ordered = {"shuffle": False}
        grouped = {"shuffle": False, "population": k}
        runs["one process, no shuffling"] = lambda: swept(data, epochs, 0, **ordered)
        runs[f"one process, no shuffling, population={k}"] = lambda: swept(
            data, epochs, 0, **grouped
        )
        runs[f"{ray}, fresh, no shuffling, population={k}"] = fresh(
            lambda: swept(data, epochs, workers, **grouped)
        )
        runs[f"{ray}, kept, no shuffling, population={k}"] = lambda: swept(
            data, epochs, workers, **grouped
        )
        runs[f"{ray}, kept, no shuffling"] = lambda: swept(data, epochs, workers, **ordered)
    return runs


def breakdown(name: str, results, seconds: float, driver: float) -> str:
    """Where a Ray sweep's time went: start (workers' process and imports, the data and
    build fetched), compilations, training, and the rest (submission, rows coming back,
    the last chunk's wait); ``driver``: this process's CPU seconds in the sweep (taken from
    the workers when they fill the machine's cores)."""
    t = results.timings
    compiling = sum(r.get("compile_seconds") or 0.0 for r in results)
    busy = sum((r["seconds"] or 0.0) for r in results) - compiling
    rest = seconds - t["start_seconds"] - (compiling + busy) / results.workers
    return (
        f"| {name} | {seconds:.2f} | {t['workers_started']} | {t['spawn_seconds']:.2f} "
        f"| {t['load_seconds']:.3f} | {t['start_seconds']:.2f} | {compiling:.2f} "
        f"| {busy:.2f} | {rest:.2f} ({1e3 * rest / len(results):.1f} ms/trial) | {driver:.2f} |"
    )


def check_histories(last: dict) -> None:
    """Every candidate of one batch order gave every trial the same history."""
    groups: dict[bool, list] = {}
    for name, rows in last.items():
        groups.setdefault("no shuffling" in name, []).append((name, rows))
    for group in groups.values():
        reference = {r["trial"]: r["history"] for r in group[0][1]}
        for name, rows in group[1:]:
            assert all(r["history"] == reference[r["trial"]] for r in rows), name


def import_seconds() -> float:
    """A new process's ``import symgrad.distributed.workers`` (what a worker imports)."""
    code = "import symgrad.distributed.workers"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--population", type=int, default=0, help="also sweep with population=K (0: not)"
    )
    args = parser.parse_args()
    data = digits()
    plan = trials.expand(SPACE)
    print(environment())
    ray = distributed.init(num_cpus=args.workers)
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), ray {ray.__version__}")
    fresh_models(plan[:1], data, 1)  # the first compilation fills the disk cache, untimed
    runs = candidates(plan, data, args)
    names = list(runs)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    driver: dict[str, float] = {}  # this process's CPU seconds, last round
    last = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            last[name] = run()
            seconds[name].append(time.perf_counter() - start)
            driver[name] = time.process_time() - cpu
    check_histories(last)
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    print(
        f"\n{len(plan)} trials x {args.epochs} epochs, median of {args.rounds} rounds; "
        "every trial's history identical in all candidates of one batch order"
    )
    medians = {name: statistics.median(seconds[name]) for name in names}
    base, reused = medians[names[0]], medians[names[1]]
    print(
        "| candidate | seconds | trials / s | against fresh models | against program reused "
        "| compilations |\n|---|---:|---:|---:|---:|---:|"
    )
    for name in names:
        rows = last[name]
        compiled = rows.compilations if hasattr(rows, "compilations") else len(plan)
        print(
            f"| {name} | {medians[name]:.2f} | {len(plan) / medians[name]:.1f} "
            f"| {base / medians[name]:.2f}x | {reused / medians[name]:.2f}x | {compiled} |"
        )
    print(
        f"\nwhere the Ray sweeps' time went (last round; a new process imports the worker's "
        f"modules in {import_seconds():.2f} s)\n"
        "| candidate | seconds | workers started | spawn + import | data and build | start "
        "| compiling (sum) | training (sum) | the rest | driver CPU |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for name in names:
        if name.startswith("Ray"):
            print(breakdown(name, last[name], seconds[name][-1], driver[name]))
    if args.population:
        k = args.population
        for where in ("one process", f"Ray, {args.workers} workers, kept"):
            plain = medians[f"{where}, no shuffling"]
            grouped = medians[f"{where}, no shuffling, population={k}"]
            print(f"{where}: population={k} {plain / grouped:.2f}x the plain sweep")
    best = last[names[3]].best
    print(f"\nbest trial: {best['hp']} val_accuracy={best['metrics']['val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
