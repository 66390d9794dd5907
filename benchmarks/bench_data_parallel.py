"""Data-parallel fit: throughput of 1 and 2 Ray workers, synchronous and local SGD.

Run from the repository root (Ray installed: ``pip install -e ".[ray]"``)::

    .venv/bin/python -m benchmarks.bench_data_parallel                  # digits, 5 rounds
    .venv/bin/python -m benchmarks.bench_data_parallel --data mnist --rounds 3

The model: an MLP (``--units`` hidden relu units, softmax, sparse categorical
cross-entropy, accuracy, Adam, float64, LLVM backend). The data: sklearn's 1797
digits (64 features), or ``--data mnist``: rows shaped like MNIST's (784 features in
[0, 1), 10 classes; ``--rows`` of them, random: the throughput does not depend on the
values). Global batch ``--batch-size``. Candidates, alternating round by round:

- ``one process``: ``fit`` without a strategy (one native call per epoch);
- ``sync, N workers``: ``DataParallel(N)``: per step, the weights out and the
  shards' gradients back, the update applied on the driver;
- ``local SGD, N workers``: ``DataParallel(N, mode="local", local_epochs=1)``: one
  round per epoch (each worker one native epoch on its shard).

Each round is one ``fit`` of ``--epochs`` epochs; a callback without batch hooks
times each epoch, and the figure is the median epoch after the first of each fit
(the first pays the workers' start and compilation, shown apart as ``start-up``:
the median of the rounds' first epochs less their steady epoch). Every library gets
one thread (``OPENBLAS_NUM_THREADS=1``, inherited by the workers).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy; Ray's workers inherit it

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import environment  # noqa: E402
from symgrad import distributed  # noqa: E402
from symgrad.callbacks import Callback  # noqa: E402
from symgrad.layers import Dense  # noqa: E402
from symgrad.models import Sequential  # noqa: E402


class EpochClock(Callback):
    """Seconds of each epoch (epoch hooks only: native epochs stay native)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def dataset(kind: str, rows: int):
    if kind == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data / 16.0, d.target
    rng = np.random.default_rng(0)
    return rng.random((rows, 784)), rng.integers(0, 10, rows)


def model_for(features: int, units: int):
    model = Sequential([Dense(units, "relu", input_dim=features), Dense(10, "softmax")])
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        backend="llvm",
        dtype="float64",
        seed=0,
    )
    return model


def strategies(workers: int) -> dict:
    runs = {"one process": None}
    for n in range(1, workers + 1):
        runs[f"sync, {n} worker{'s' * (n > 1)}"] = distributed.DataParallel(n)
    for n in range(1, workers + 1):
        runs[f"local SGD, {n} worker{'s' * (n > 1)}"] = distributed.DataParallel(
            n, mode="local", local_epochs=1
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--rows", type=int, default=20000, help="rows of --data mnist")
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    x, y = dataset(args.data, args.rows)
    print(environment())
    ray = distributed.init(num_cpus=args.workers)
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), ray {ray.__version__}")
    runs = strategies(args.workers)
    model_for(x.shape[1], args.units).fit(x[:64], y[:64], verbose=0)  # fill the disk cache
    steady: dict[str, list[float]] = {n: [] for n in runs}
    first: dict[str, list[float]] = {n: [] for n in runs}
    for _ in range(args.rounds):
        for name, strategy in runs.items():
            clock = EpochClock()
            model_for(x.shape[1], args.units).fit(
                x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0,
                callbacks=[clock], strategy=strategy,
            )  # fmt: skip
            steady[name].append(statistics.median(clock.seconds[1:]))
            first[name].append(clock.seconds[0] - steady[name][-1])
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    print(
        f"\n{args.data}: {len(x)} rows x {x.shape[1]}, MLP {x.shape[1]}-{args.units}-10, "
        f"global batch {args.batch_size}, Adam, float64, LLVM; median epoch over "
        f"{args.rounds} fits of {args.epochs} epochs (first epoch apart)"
    )
    base = statistics.median(steady["one process"])
    print(
        "| candidate | epoch (s) | samples / s | against one process | start-up (s) |\n"
        "|---|---:|---:|---:|---:|"
    )
    for name in runs:
        epoch = statistics.median(steady[name])
        print(
            f"| {name} | {epoch:.3f} | {len(x) / epoch:,.0f} | {base / epoch:.2f}x "
            f"| {statistics.median(first[name]):.2f} |"
        )


if __name__ == "__main__":
    main()
