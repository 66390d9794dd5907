"""Instructions per training step of the digits step or epoch, counted by callgrind (noise-free).

Run from the repository root, under valgrind (minutes: the model is derived and
compiled before counting starts)::

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python -m benchmarks.count_instructions --what epoch --threads 2
    .venv/bin/python -m benchmarks.count_instructions --report /tmp/cg.out.1

The first command counts only the timed calls (callgrind's client requests,
through a helper compiled with ``cc`` against ``valgrind/callgrind.h``), and
writes ``/tmp/perf-<pid>.map`` naming the generated functions (symbols of the
module's object code); the second prints the instructions per step by function,
those of the generated code by name. A machine shared with other jobs changes
timings, not these counts.
"""

from __future__ import annotations

import argparse
import bisect
import ctypes
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HELPER = """#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS; }
"""
WORKLOAD = "digits 64-128-64-10 relu softmax-CE, batch 32"


def client_requests() -> ctypes.CDLL:
    """start() / stop() of the counted region (no-ops outside valgrind)."""
    folder = Path(tempfile.mkdtemp(prefix="symgrad-callgrind-"))
    (folder / "requests.c").write_text(HELPER)
    library = folder / "requests.so"
    subprocess.run(
        ["cc", "-O1", "-shared", "-fPIC", "-o", library, folder / "requests.c"], check=True
    )
    return ctypes.CDLL(str(library))


def write_perf_map(native) -> None:
    """``/tmp/perf-<pid>.map`` lines (address size name) for the functions of ``native``'s module."""
    from codegen.llvm.jit import optimize_and_emit
    from codegen.names import llvm_name

    obj, _ = optimize_and_emit(native.compiled.llvm_ir, native.compiled.opt)
    with tempfile.NamedTemporaryFile(suffix=".o") as f:
        f.write(obj)
        f.flush()
        listing = subprocess.run(
            ["nm", "-S", "--defined-only", f.name], capture_output=True, text=True, check=True
        ).stdout
    symbols = [p for p in (line.split() for line in listing.splitlines()) if len(p) == 4]
    symbols = [(int(a, 16), int(s, 16), n) for a, s, kind, n in symbols if kind in "tT"]
    base = native.address - {n: a for a, _, n in symbols}[llvm_name(native.program.name)]
    with open(f"/tmp/perf-{os.getpid()}.map", "a") as out:
        out.writelines(f"{base + a:x} {s:x} {n}\n" for a, s, n in symbols)


def run(what: str, threads: int, steps: int) -> None:
    import numpy as np

    from benchmarks.bench_llvm import WORKLOADS, data, parameters
    from benchmarks.graphs import mlp_graph, sgd_step
    from benchmarks.handwritten import HandMLP

    sizes, activation, output, batch, batches = WORKLOADS[WORKLOAD]
    X, Y = data(sizes, output, batch * batches, "float32")
    order = np.random.default_rng(1).permutation(len(X))
    xb, yb = X[order[:batch]], Y[order[:batch]]
    hand = HandMLP(sizes, activation, output, "cce", dtype="float32", momentum=0.9)
    graph = mlp_graph(sizes, activation, output)
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # on one CPU LLVM emits one object (llvm.split)
    try:  # the same code as from a compile on every CPU; `threads` is set after loading
        step = sgd_step(
            graph,
            backend="llvm",
            dtype="float32",
            momentum=0.9,
            epoch=True,
            threads=threads,
            cache=False,
        )
    finally:
        os.sched_setaffinity(0, cpus)
    weights = parameters(hand)
    state = weights + [np.zeros_like(w) for w in weights]
    if what == "step":
        calls, call = steps, lambda: step(xb, yb, *state, 1e-3)
    else:
        calls = max(1, steps // batches)
        call = lambda: step.epoch(X, Y, *state, 1e-3, batch_size=batch, order=order)  # noqa: E731
    write_perf_map(step.native)
    requests = client_requests()
    for _ in range(3):
        call()
    requests.start()
    for _ in range(calls):
        call()
    requests.stop()
    print(
        f"{what}, threads={threads}: {calls} calls, {calls * (1 if what == 'step' else batches)} steps"
    )


def report(path: str, top: int = 20) -> None:
    """Instructions per step by function (from ``callgrind_annotate``), generated code named."""
    text = Path(path).read_text()
    pid = re.search(r"^pid: (\d+)", text, re.M).group(1)
    steps = int(re.search(r"--steps[= ](\d+)", text).group(1)) if "--steps" in text else 200
    names = sorted(
        (int(a, 16), int(s, 16), n)
        for a, s, n in (line.split() for line in open(f"/tmp/perf-{pid}.map"))
    )
    starts = [a for a, _, _ in names]

    def name(fn: str) -> str:
        found = re.search(r"\?\?\?:0x([0-9a-f]+)", fn)
        if not found:
            return fn.split(" [")[0].split(":")[-1]
        addr = int(found.group(1), 16)
        i = bisect.bisect_right(starts, addr) - 1
        return names[i][2] if i >= 0 and addr < names[i][0] + names[i][1] else hex(addr)

    listing = subprocess.run(
        ["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True, check=True
    ).stdout
    counts: dict[str, int] = {}
    for line in listing.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            fn = name(m.group(2))
            counts[fn] = counts.get(fn, 0) + int(m.group(1).replace(",", ""))
    total = sum(counts.values())
    print(f"{total / steps:,.0f} instructions per step ({steps} steps)")
    for fn, count in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{count / steps:12,.0f}  {100 * count / total:5.1f}%  {fn}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--what", choices=("step", "epoch"), default="step")
    ap.add_argument("--threads", type=int, default=1, help="the compiled program's threads")
    ap.add_argument("--steps", type=int, default=200, help="training steps counted")
    ap.add_argument("--report", metavar="CALLGRIND_OUT", help="print the counts of a run")
    args = ap.parse_args(argv)
    if args.report:
        report(args.report)
    else:
        run(args.what, args.threads, args.steps)


if __name__ == "__main__":
    sys.exit(main())
