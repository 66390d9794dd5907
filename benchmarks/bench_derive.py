"""Time to derive, simplify and generate code for MLPs of growing depth.

Run: ``python -m benchmarks.bench_derive`` (add ``--depths 1 3 10 30 100 200``).
Each depth is measured in a fresh subprocess so SymPy's caches do not carry
over; the figure is the median of ``--repeat`` runs.  The last column, time per
hidden layer, stays flat when the pipeline is linear in depth.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _one(depth: int, width: int) -> dict[str, float]:
    import symgrad
    from benchmarks.graphs import mlp_graph
    from codegen.numpy import compile_program
    from symgrad import expr as E
    from symgrad.lower import lower

    t0 = time.perf_counter()
    g = mlp_graph([width] * (depth + 1) + [10])
    t1 = time.perf_counter()
    grads = symgrad.gradients(g.loss, g.params, context=[g.output])
    t2 = time.perf_counter()
    outputs = {"loss": grads.loss, **{f"d{w.name}": e for w, e in grads.simplified.items()}}
    program = lower("step", [g.X, g.Y, *g.params], outputs, {}, [], [], "float32")
    compile_program(program)
    t3 = time.perf_counter()
    del E
    return {"build": t1 - t0, "derive+simplify": t2 - t1, "codegen": t3 - t2, "total": t3 - t0}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 3, 10, 30, 100, 200])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(_one(args.one, args.width)))
        return
    print(
        f"| hidden layers | derive + simplify | codegen | total (median of {args.repeat}) | per layer |"
    )
    print("|---:|---:|---:|---:|---:|")
    for depth in args.depths:
        runs = []
        for _ in range(args.repeat):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.bench_derive",
                "--one",
                str(depth),
                "--width",
                str(args.width),
            ]
            runs.append(json.loads(subprocess.check_output(cmd, text=True)))
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {depth} | {med['derive+simplify']:.3f} s | {med['codegen']:.3f} s | "
            f"{med['total']:.3f} s | {med['total'] / depth * 1000:.0f} ms |"
        )


if __name__ == "__main__":
    main()
