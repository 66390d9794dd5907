"""The wide network's step with each velocity update fused into its gradient's GEMM, and without.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_gemm_update                # 1 thread, then 2
    .venv/bin/python -m benchmarks.bench_gemm_update --threads 2 --rounds 15

The 1024-1024-1024-10 relu softmax-CE MLP of ``benchmarks.bench_peer_table``
(batch 256, float32, SGD with momentum 0.9): its training step compiled as it
is (``codegen.llvm.kernels.fuse_gemm_updates``: ``vW_new = 0.9 vW - lr dW`` is
computed by the GEMM of ``dW``, with beta 0.9) and with that fusion switched
off (``dW`` written by its GEMM, then a pass that reads ``dW`` and ``vW``), in
one process, interleaved (``benchmarks.common.interleaved``), each on its own
copy of the weights. Prints the medians per step, fused over unfused, and the
CPU time of this process per step over the same rounds (``process_time``: on
one thread, a figure that other processes' load barely moves).
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and any(a.startswith("--threads") for a in sys.argv):
    from benchmarks.threads import limit_threads_from_argv

    limit_threads_from_argv(script=__file__)  # before NumPy is imported

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.bench_llvm import WORKLOADS, data, parameters  # noqa: E402
from benchmarks.bench_peer_table import LR, MOMENTUM, others_busy  # noqa: E402
from benchmarks.common import environment, format_table, interleaved  # noqa: E402
from benchmarks.graphs import mlp_graph, sgd_step  # noqa: E402
from benchmarks.handwritten import HandMLP  # noqa: E402

WIDE = "1024-1024-1024-10 relu softmax-CE, batch 256"
NAMES = ("fused (GEMM with beta)", "unfused (GEMM, then a pass)")


def _timed_cpu(fn, seconds: list[float]):
    def run():
        start = time.process_time()
        result = fn()
        seconds.append(time.process_time() - start)
        return result

    return run


def candidates(threads: int, workload: str = WIDE) -> tuple[dict, dict]:
    """name -> step call (returns the loss), and name -> the CPU seconds of each of its calls."""
    from codegen.llvm import module

    sizes, activation, output, batch, _ = WORKLOADS[workload]
    X, Y = data(sizes, output, batch, "float32")
    hand = HandMLP(sizes, activation, output, "cce", dtype="float32", momentum=MOMENTUM)
    graph = mlp_graph(sizes, activation, output)
    steps = {}
    steps[NAMES[0]] = sgd_step(
        graph, backend="llvm", dtype="float32", momentum=MOMENTUM, threads=threads, cache=False
    )
    with mock.patch.object(module, "fuse_gemm_updates", lambda body, *rest: list(body)):
        steps[NAMES[1]] = sgd_step(
            graph, backend="llvm", dtype="float32", momentum=MOMENTUM, threads=threads, cache=False
        )
    assert "gemm.vW1_new" in steps[NAMES[0]].llvm_ir
    assert "gemm.vW1_new" not in steps[NAMES[1]].llvm_ir
    fns, cpu = {}, {}
    for name, step in steps.items():
        state = parameters(hand) + [np.zeros_like(w) for w in parameters(hand)]
        cpu[name] = []
        fns[name] = _timed_cpu(lambda step=step, state=state: step(X, Y, *state, LR), cpu[name])
    return fns, cpu


def run(threads: int, rounds: int) -> None:
    fns, cpu = candidates(threads)
    before = others_busy()
    timings = interleaved(fns, rounds=rounds, number=1)
    after = others_busy()
    print(f"\n{environment()}")
    title = f"wide step, {threads} thread(s), float32 (idle check: {before:.2f} / {after:.2f} cores busy)"
    print(format_table(timings, NAMES[1], title=title))
    cpu_ms = {name: 1e3 * float(np.median(s)) for name, s in cpu.items()}
    print(
        "CPU time per step (median, process_time): "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in cpu_ms.items())
        + f"; fused / unfused {cpu_ms[NAMES[0]] / cpu_ms[NAMES[1]]:.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, help="one thread setting (default: 1, then 2)")
    ap.add_argument("--rounds", type=int, default=11)
    parsed = ap.parse_args(argv)
    if parsed.threads is not None:
        run(parsed.threads, parsed.rounds)
        return
    for threads in (1, min(2, os.cpu_count() or 1)):
        cmd = [sys.executable, "-m", "benchmarks.bench_gemm_update", "--threads", str(threads)]
        subprocess.run([*cmd, "--rounds", str(parsed.rounds)], check=True)


if __name__ == "__main__":
    main()
