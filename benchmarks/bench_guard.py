"""Cost of the update guard: training steps with and without it, side by side.

Run from the repository root::

    python -m benchmarks.bench_guard                  # float32, 1 thread, both workloads
    python -m benchmarks.bench_guard --threads 2 --dtype float32 float64
    python -m benchmarks.bench_guard --workloads wide --backends llvm

The training step guards the total of every new weight and slot (one reduction
per updated array, then the update is copied in instead of being computed in
place). ``unguarded`` compiles the same model with that check switched off
(``symgrad.nn.trainer.GUARD_UPDATES = False``). Workloads: ``digits``, the
workload of ``benchmarks/bench_fit.py`` (64-128-64-10 MLP, batch 32, 5-epoch
``fit`` calls, time per epoch), and ``wide``, the 1024-1024-1024-10 network of
``benchmarks/bench_llvm.py`` (batch 256, random data, one 8-step epoch per
call, time per step); SGD and Adam, candidates interleaved.
"""

from __future__ import annotations

from benchmarks.threads import describe, limit_threads_from_argv

THREADS = limit_threads_from_argv(script=__file__)  # before NumPy is imported

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.bench_fit import LR, digits, per_epoch, symgrad_fit  # noqa: E402
from benchmarks.common import environment, format_table, interleaved  # noqa: E402
from symgrad import Dense, Sequential  # noqa: E402
from symgrad.nn import trainer  # noqa: E402
from symgrad.optimizers import SGD, Adam  # noqa: E402

WIDE, WIDE_BATCH, WIDE_STEPS = [1024, 1024, 1024, 10], 256, 8


def wide_fit(backend, dtype, optimizer):
    """One 8-step epoch of the wide network per call (compiled and warmed up first)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(WIDE_BATCH * WIDE_STEPS, WIDE[0])).astype(dtype)
    y = rng.integers(0, WIDE[-1], len(x))
    layers = [Dense(WIDE[1], activation="relu", input_dim=WIDE[0])]
    layers += [Dense(k, activation="relu") for k in WIDE[2:-1]]
    model = Sequential([*layers, Dense(WIDE[-1], activation="softmax")])
    model.compile(
        optimizer, "sparse_categorical_crossentropy", backend=backend, dtype=dtype, seed=0
    )
    model.fit(x, y, epochs=1, batch_size=WIDE_BATCH, verbose=0)

    def run():
        model.fit(x, y, epochs=1, batch_size=WIDE_BATCH, verbose=0)

    return run


def candidates(workload: str, backends, dtype: str, epochs: int) -> dict:
    if workload == "digits":
        x, y = digits(dtype)
    fns = {}
    for backend in backends:
        for optimizer in ("sgd", "adam"):
            for guarded in (True, False):
                trainer.GUARD_UPDATES = guarded
                opt = Adam(learning_rate=1e-3) if optimizer == "adam" else SGD(learning_rate=LR)
                try:
                    if workload == "digits":
                        fit = symgrad_fit(backend, dtype, x, y, epochs, optimizer=opt)
                    else:
                        fit = wide_fit(backend, dtype, opt)
                finally:
                    trainer.GUARD_UPDATES = True
                fns[f"{backend} {optimizer} {'guarded' if guarded else 'unguarded'}"] = fit
    return fns


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float64"])
    ap.add_argument("--epochs", type=int, default=5, help="epochs per timed fit call")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1, help="threads for every library (read early)")
    ap.add_argument(
        "--workloads", nargs="+", default=["digits", "wide"], choices=["digits", "wide"]
    )
    ap.add_argument("--backends", nargs="+", default=["numpy", "llvm"], choices=["numpy", "llvm"])
    args = ap.parse_args(argv)
    print(environment())
    print(describe(THREADS))
    for workload in args.workloads:
        for dtype in args.dtype:
            fns = candidates(workload, args.backends, dtype, args.epochs)
            timed = interleaved(fns, rounds=args.rounds, number=1)
            per, unit = (args.epochs, "epoch") if workload == "digits" else (WIDE_STEPS, "step")
            results = per_epoch(timed, per)
            for backend in args.backends:
                for optimizer in ("sgd", "adam"):
                    key = f"{backend} {optimizer}"
                    pair = {k: v for k, v in results.items() if k.startswith(key + " ")}
                    title = f"time per {unit}, {workload}, {key}, {dtype}: cost of the update guard"
                    print(format_table(pair, f"{key} unguarded", title=title), end="\n\n")


if __name__ == "__main__":
    main()
