"""Cost of the moving progress bar: a native epoch in one call against the same epoch in calls
of about 0.2 s each with the bar updated between them, side by side.

Run from the repository root::

    python -m benchmarks.bench_progress                 # float32, 1 thread
    python -m benchmarks.bench_progress --threads 2 --rows 32768

The model is a 784-256-128-10 MLP (relu, softmax cross-entropy, Adam, accuracy), the
LLVM backend, batches of 64 of ``--rows`` synthetic rows; each timed ``fit`` runs
``--epochs`` epochs. Candidates, interleaved round by round (medians per epoch):

- ``one call, verbose=0``: each epoch one native call (no bar);
- ``one call, verbose=2``: a line per epoch, still one call;
- ``calls of 0.2 s, verbose=1``: the bar (written to /dev/null), the epoch in calls of
  about ``symgrad.nn.trainer.NATIVE_UPDATE_SECONDS`` each.

The calls per epoch of the last candidate are counted in a separate run and printed, with
the fixed cost of one native call (its Python side: argument checks, pointers, scalars; a
call on no rows, median of many) and what that many extra calls add to an epoch.
"""

from __future__ import annotations

from benchmarks.threads import describe, limit_threads_from_argv

THREADS = limit_threads_from_argv(script=__file__)  # before NumPy is imported

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.bench_fit import per_epoch  # noqa: E402
from benchmarks.common import environment, format_table, interleaved, median_time  # noqa: E402
from codegen.llvm.backend import LLVMEpoch  # noqa: E402
from symgrad.layers import Dense  # noqa: E402
from symgrad.models import Sequential  # noqa: E402
from symgrad.nn import trainer  # noqa: E402
from symgrad.optimizers import Adam  # noqa: E402

BATCH = 64
BASELINE = "one call, verbose=0"


def data(rows: int, dtype: str):
    rng = np.random.default_rng(0)
    return rng.random((rows, 784)).astype(dtype), rng.integers(0, 10, rows)


def model(dtype: str) -> Sequential:
    m = Sequential(
        [
            Dense(256, activation="relu", input_dim=784),
            Dense(128, activation="relu"),
            Dense(10, activation="softmax"),
        ]
    )
    m.compile(
        optimizer=Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        backend="llvm",
        dtype=dtype,
        seed=0,
    )
    return m


def fit(m: Sequential, x, y, epochs: int, verbose: int):
    def run():
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            m.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=verbose)

    return run


def calls_per_epoch(x, y, dtype: str, epochs: int) -> list[int]:
    """The native calls of each epoch with the bar (a fresh model, not timed)."""
    rows: list[int] = []
    original = LLVMEpoch.__call__

    def counted(self, *args, **kwargs):
        rows.append(len(kwargs["order"]))
        return original(self, *args, **kwargs)

    LLVMEpoch.__call__ = counted
    try:
        ends = []
        m = model(dtype)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            for _ in range(epochs):
                m.fit(x, y, epochs=1, batch_size=BATCH, verbose=1)
                ends.append(len(rows))
    finally:
        LLVMEpoch.__call__ = original
    return [b - a for a, b in zip([0, *ends], ends)]


def call_cost(x, y, dtype: str) -> float:
    """Seconds of one native epoch call's fixed work: the call on an empty order."""
    m = model(dtype)
    m.fit(x[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, verbose=0)  # compile, build slots
    step = m._train_step()
    fn = step.function
    values = m.optimizer.scalar_values(fn.scalars, fn.program.dtype)
    scalars = [v for s, v in zip(fn.scalars, values) if s.name != fn.epoch.counter]
    others = [*m._weight_arrays(), *(s.value for s in step.slots)]
    xs, ys = m._prepare_xy(x[:BATCH], y[:BATCH])
    empty = np.empty(0, dtype=np.int64)

    def call():
        fn.epoch(xs, ys, *others, *scalars, batch_size=BATCH, order=empty, sums_start=None)

    return median_time(call, repeat=15).median


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per timed fit call")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="threads for every library (read early)")
    args = ap.parse_args(argv)
    print(environment())
    print(describe(THREADS))
    x, y = data(args.rows, args.dtype)
    fns = {
        BASELINE: fit(model(args.dtype), x, y, args.epochs, 0),
        "one call, verbose=2": fit(model(args.dtype), x, y, args.epochs, 2),
        f"calls of {trainer.NATIVE_UPDATE_SECONDS:g} s, verbose=1": fit(
            model(args.dtype), x, y, args.epochs, 1
        ),
    }
    results = per_epoch(interleaved(fns, rounds=args.rounds, number=1), args.epochs)
    steps = -(-args.rows // BATCH)
    title = (
        f"time per epoch, 784-256-128-10 Adam, {args.rows} rows in {steps} batches of {BATCH}, "
        f"{args.dtype}, LLVM"
    )
    print(format_table(results, BASELINE, title=title))
    calls = calls_per_epoch(x, y, args.dtype, 3)
    cost = call_cost(x, y, args.dtype)
    epoch = results[BASELINE].median
    extra = (max(calls) - 1) * cost
    print(f"\nnative calls per epoch with the bar: {calls}")
    print(
        f"fixed cost of a native call: {cost * 1e6:.1f} us; {max(calls) - 1} extra calls: "
        f"{extra * 1e3:.3f} ms = {100 * extra / epoch:.3f}% of the {epoch:.2f} s epoch"
    )


if __name__ == "__main__":
    main()
