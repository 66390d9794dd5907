"""One SGD training step: symgrad's generated code against hand-written NumPy.

Run: ``python -m benchmarks.bench_step`` (``--backends numpy llvm``,
``--dtype float32``).  All candidates are timed interleaved in one process
and reported as medians with ratios to the hand-written NumPy step; PyTorch
eager and JAX jit join when they are installed.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import environment, interleaved, print_table
from benchmarks.graphs import mlp_graph, sgd_step
from benchmarks.handwritten import HandMLP

WORKLOADS = {
    "tiny 2-16-1 sigmoid MSE, batch 8": ([2, 16, 1], "sigmoid", "sigmoid", 8),
    "digits 64-128-64-10 relu softmax-CE, batch 32": ([64, 128, 64, 10], "relu", "softmax", 32),
    "784-256-128-10 relu softmax-CE, batch 128": ([784, 256, 128, 10], "relu", "softmax", 128),
    "1024-1024-1024-10 relu softmax-CE, batch 256": (
        [1024, 1024, 1024, 10],
        "relu",
        "softmax",
        256,
    ),
}


def run(name, sizes, activation, output, batch, backends, dtype, rounds):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], batch)
    if output == "softmax":
        Y = np.eye(sizes[-1], dtype=dtype)[labels]
    else:
        Y = rng.uniform(0, 1, (batch, sizes[-1])).astype(dtype)
    loss = "cce" if output == "softmax" else "mse"
    hand = HandMLP(sizes, activation, output, loss, dtype=dtype)
    lr = 1e-3  # small: weights barely move while the steps are timed
    fns = {"hand-written NumPy": lambda: hand.sgd_step(X, Y, lr)}
    for backend in backends:
        step = sgd_step(mlp_graph(sizes, activation, output), backend=backend, dtype=dtype)
        params = [
            np.ascontiguousarray(p.reshape(1, -1) if p.ndim == 1 else p) for p in hand.get_weights()
        ]
        params = [p.copy() for p in params]
        fns[f"symgrad-{backend}"] = lambda step=step, params=params: step(X, Y, *params, lr)
    try:
        from benchmarks.bench_peers import peer_steps

        for peer, fn in peer_steps(hand, X, Y, lr).items():
            fns[peer] = fn
    except Exception as exc:  # peers are optional
        print(f"(peers skipped: {exc})")
    print_table(interleaved(fns, rounds=rounds), "hand-written NumPy", title=f"{name}, {dtype}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backends", nargs="+", default=["numpy"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--workloads", nargs="*", type=int, help="indices into the workload list")
    args = ap.parse_args(argv)
    print(environment(), end="\n\n")
    for k, (name, (sizes, act, out, batch)) in enumerate(WORKLOADS.items()):
        if args.workloads and k not in args.workloads:
            continue
        run(name, sizes, act, out, batch, args.backends, args.dtype, args.rounds)


if __name__ == "__main__":
    main()
