"""What a rewrite row buys: one training step compiled with the whole rewrite table and
without one row, timed side by side.

Run from the repository root::

    python -m benchmarks.bench_rewrites                          # softmax_from_log_softmax
    python -m benchmarks.bench_rewrites --rules output_form --backends numpy llvm

The workload is the digits MLP of ``bench_step`` (64-128-64-10, relu, softmax +
cross-entropy, batch 32, plain SGD). Both variants are compiled without the
disk cache (its key does not include the rule set) and timed interleaved
(``benchmarks.common.interleaved``); one thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

from benchmarks.threads import limit_threads_from_argv

THREADS = limit_threads_from_argv(script=__file__)  # before NumPy is imported

import argparse  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import environment, interleaved, print_table  # noqa: E402
from benchmarks.graphs import mlp_graph, sgd_step  # noqa: E402
from symgrad.simplify import rewrites  # noqa: E402

SIZES, BATCH, LR = [64, 128, 64, 10], 32, 1e-3


@contextmanager
def without_rule(name: str):
    """The rewrite table minus the row ``name``, for the duration of the block."""
    table = rewrites.REWRITES
    if name not in [row[0] for row in table]:
        known = ", ".join(row[0] for row in table)
        raise ValueError(f"no rewrite row {name!r}; known rows: {known}. Received: rules={name}")
    saved = list(table)
    table[:] = [row for row in table if row[0] != name]
    try:
        yield
    finally:
        table[:] = saved


def steps(rule: str, backend: str, dtype: str) -> dict:
    """``{label: step}``: the step with every row, and without ``rule``."""
    graph = mlp_graph(SIZES, "relu", "softmax")
    with_all = sgd_step(graph, backend=backend, dtype=dtype, cache=False)
    with without_rule(rule):
        without = sgd_step(graph, backend=backend, dtype=dtype, cache=False)
    return {"all rows": with_all, f"without {rule}": without}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rules", nargs="+", default=["softmax_from_log_softmax"])
    ap.add_argument("--backends", nargs="+", default=["numpy", "llvm"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)  # read by limit_threads_from_argv
    args = ap.parse_args(argv)
    print(environment() + f", {THREADS} thread(s)", end="\n\n")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((BATCH, SIZES[0])).astype(args.dtype)
    Y = np.eye(SIZES[-1], dtype=args.dtype)[rng.integers(0, SIZES[-1], BATCH)]
    shapes = [(a, b) for a, b in zip(SIZES, SIZES[1:]) for a, b in ((a, b), (1, b))]
    for rule in args.rules:
        for backend in args.backends:
            fns = {}
            for label, step in steps(rule, backend, args.dtype).items():
                params = [(0.1 * rng.standard_normal(s)).astype(args.dtype) for s in shapes]
                fns[label] = lambda step=step, params=params: step(X, Y, *params, LR)
            title = f"digits step {SIZES}, batch {BATCH}, {args.dtype}, {backend}: {rule}"
            print_table(interleaved(fns, rounds=args.rounds), "all rows", title=title)


if __name__ == "__main__":
    main()
