"""The whole-epoch native call against the compiled step called from a Python loop.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_epoch                      # digits shape, 1 thread
    .venv/bin/python -m benchmarks.bench_epoch --threads 2 --workloads 2

Per training step, median over interleaved rounds (``benchmarks.common``), of
the LLVM backend's plain SGD step on the MLPs of ``benchmarks.bench_llvm``:

- **epoch, shuffled**: ``step.epoch`` over a permutation (rows gathered natively);
- **epoch, same rows**: ``step.epoch`` over ``batches`` copies of rows ``0..batch-1``,
  so it trains on the data the fixed-batch step sees: what is left between
  the two is the epoch call itself, not the data;
- **step loop, shuffled**: the step called per batch from Python, rows gathered
  with ``np.take(out=)`` (what ``fit`` does without the native epoch);
- **step, fixed batch**: the step called again and again on one batch (the
  "symgrad-llvm step" of the peer table);
- **epoch call, empty order**: ``step.epoch`` over no rows, which returns before
  any native code runs: the Python part of one epoch call, spread over the
  epoch's steps.

``--gather-variants`` adds two epochs compiled in the same process with the
row gather replaced: by the element loop the epoch used before (LLVM cannot
prove the rows and the batch buffer apart, so it stays scalar) and by nothing
at all (the batch buffers keep stale rows: a lower bound on the epoch call).

Item 3 of issue 13 asks that the epoch call never be slower than the step loop.
"""

from __future__ import annotations

from benchmarks.threads import describe, limit_threads_from_argv

THREADS = limit_threads_from_argv(script=__file__)  # before NumPy is imported

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.bench_llvm import LR, WORKLOADS, compiled_sgd_step, data, parameters  # noqa: E402
from benchmarks.common import environment, format_table, interleaved  # noqa: E402
from benchmarks.graphs import mlp_graph, sgd_step  # noqa: E402
from benchmarks.handwritten import HandMLP  # noqa: E402
from codegen.llvm import module as llvm_module  # noqa: E402
from codegen.llvm.loops import I64, copy, element, for_range, i64, load  # noqa: E402


def element_loop_gather(b, fmt, whole, part, width, order, start, n):
    """The gather as it was: an element loop per row (``loops.copy``)."""

    def row(r, _):
        at = b.mul(load(b, I64, order, b.add(start, r)), i64(width))
        src = element(b, fmt.ftype, whole, at)
        copy(b, fmt.ftype, src, element(b, fmt.ftype, part, b.mul(r, i64(width))), i64(width))

    for_range(b, n, row)


def no_gather(*_):
    """No gather at all: the step trains on whatever the batch buffers hold."""


def epoch_with_gather(gather, sizes, activation, output, dtype, name):
    """An SGD step + epoch compiled (uncached) with ``gather`` in place of the module's."""
    saved = llvm_module._gather
    llvm_module._gather = gather
    try:
        graph = mlp_graph(sizes, activation, output)
        return sgd_step(graph, backend="llvm", dtype=dtype, epoch=True, cache=False, name=name)
    finally:
        llvm_module._gather = saved


def candidates(sizes, activation, output, batch, batches, dtype="float32", variants=False):
    """name -> a zero-argument call that trains ``batches`` steps."""
    X, Y = data(sizes, output, batch * batches, dtype)
    hand = HandMLP(sizes, activation, output, "cce" if output == "softmax" else "mse", dtype=dtype)
    step = compiled_sgd_step(sizes, activation, output, "llvm", dtype)
    shuffled = np.random.default_rng(1).permutation(len(X))
    same = np.tile(np.arange(batch), batches)
    xb, yb = X[:batch].copy(), Y[:batch].copy()

    def epoch(order, params):
        return lambda: step.epoch(X, Y, *params, LR, batch_size=batch, order=order)

    def loop(params):
        def run():
            for start in range(0, len(X), batch):
                idx = shuffled[start : start + batch]
                np.take(X, idx, axis=0, out=xb)
                np.take(Y, idx, axis=0, out=yb)
                step(xb, yb, *params, LR)

        return run

    def fixed(params):
        def run():
            for _ in range(batches):
                step(xb, yb, *params, LR)

        return run

    fns = {
        "epoch, shuffled": epoch(shuffled, parameters(hand)),
        "epoch, same rows": epoch(same, parameters(hand)),
        "step loop, shuffled": loop(parameters(hand)),
        "step, fixed batch": fixed(parameters(hand)),
        "epoch call, empty order": epoch(np.zeros(0, np.int64), parameters(hand)),
    }
    if variants:
        for label, gather in (
            ("element-loop gather", element_loop_gather),
            ("no gather", no_gather),
        ):
            other = epoch_with_gather(gather, sizes, activation, output, dtype, "sgd_variant")
            params = parameters(hand)
            fns[f"epoch, shuffled, {label}"] = lambda other=other, params=params: other.epoch(
                X, Y, *params, LR, batch_size=batch, order=shuffled
            )
    return fns


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="*", type=int, default=[1], help="indices into WORKLOADS")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--threads", type=int, default=1, help="threads for BLAS (read early)")
    ap.add_argument("--gather-variants", action="store_true", help="epochs with other gathers")
    args = ap.parse_args(argv)
    print(environment())
    print(describe(THREADS), end="\n\n")
    for k, (name, (sizes, act, out, batch, batches)) in enumerate(WORKLOADS.items()):
        if k not in args.workloads:
            continue
        fns = candidates(sizes, act, out, batch, batches, variants=args.gather_variants)
        timings = interleaved(fns, rounds=args.rounds)
        per_step = {
            n: t._replace(median=t.median / batches, q1=t.q1 / batches, q3=t.q3 / batches)
            for n, t in timings.items()
        }
        title = f"per step: {name}, float32, {batches} batches per epoch"
        print(format_table(per_step, "step loop, shuffled", title=title), end="\n\n")


if __name__ == "__main__":
    main()
