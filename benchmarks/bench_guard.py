"""Cost of the update guard: ``fit`` per epoch on the digits with and without it, side by side.

Run from the repository root::

    python -m benchmarks.bench_guard                  # float32, 1 thread
    python -m benchmarks.bench_guard --threads 2 --dtype float32 float64

The training step guards the sum of every new weight and slot (one reduction
per updated array, then the update is copied in instead of being computed in
place). ``unguarded`` compiles the same model with that check switched off
(``symgrad.nn.trainer.GUARD_UPDATES = False``); both run the workload of
``benchmarks/bench_fit.py`` (64-128-64-10 MLP, SGD, batch 32) interleaved.
"""

from __future__ import annotations

from benchmarks.threads import describe, limit_threads_from_argv

THREADS = limit_threads_from_argv()  # before NumPy is imported

import argparse  # noqa: E402

from benchmarks.bench_fit import digits, per_epoch, symgrad_fit  # noqa: E402
from benchmarks.common import environment, format_table, interleaved  # noqa: E402
from symgrad.nn import trainer  # noqa: E402
from symgrad.optimizers import Adam  # noqa: E402


def candidates(dtype: str, x, y, epochs: int) -> dict:
    fns = {}
    for backend in ("numpy", "llvm"):
        for optimizer in ("sgd", "adam"):
            for guarded in (True, False):
                trainer.GUARD_UPDATES = guarded
                try:
                    opt = Adam(learning_rate=1e-3) if optimizer == "adam" else None
                    fit = symgrad_fit(backend, dtype, x, y, epochs, optimizer=opt)
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
    args = ap.parse_args(argv)
    print(environment())
    print(describe(THREADS))
    for dtype in args.dtype:
        x, y = digits(dtype)
        fns = candidates(dtype, x, y, args.epochs)
        results = per_epoch(interleaved(fns, rounds=args.rounds, number=1), args.epochs)
        for backend in ("numpy", "llvm"):
            for optimizer in ("sgd", "adam"):
                key = f"{backend} {optimizer}"
                pair = {k: v for k, v in results.items() if k.startswith(key + " ")}
                title = f"time per epoch, digits, {key}, {dtype}: cost of the update guard"
                print(format_table(pair, f"{key} unguarded", title=title), end="\n\n")


if __name__ == "__main__":
    main()
