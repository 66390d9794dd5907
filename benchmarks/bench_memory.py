"""Resident memory after many compiles: native code and generated sources are released.

Run from the repository root::

    python -m benchmarks.bench_memory                       # 1000 compiles per backend
    python -m benchmarks.bench_memory --compiles 200 --backends numpy

Each backend runs in a fresh process with the disk cache disabled
(``cache=False``). The process compiles ``--warmup`` models first (imports,
SymPy's caches, the BLAS provider), reads ``VmRSS`` from ``/proc/self/status``,
then compiles ``--compiles`` distinct small models one after another (a
3-input linear layer through ``c * tanh`` with a different constant ``c``
each time, loss and gradient), calls each once, drops it and collects garbage,
and reads ``VmRSS`` again. The growth is what 1,000 functions that are no
longer referenced still hold (native code, ``linecache`` entries, ...).

``--backends llvm-passes`` runs only ``codegen.llvm.jit.optimize_and_emit`` on
one fixed IR text N times: the part of the LLVM backend's growth that stays
inside llvmlite's pass pipeline. Each row also gives the median time of one
compile in that process.

``--pipeline-time R`` times, in this process and interleaved over R rounds, the
optimization of one model's IR as ``codegen.llvm.jit.optimize`` runs it (the
pass pipeline freed after each run) and as llvmlite leaves it (the pipeline kept,
as before that release existed; for comparison, not a shipped mode), and checks
that both give the same optimized IR.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys

CHILD = r"""
import gc, json, statistics, sys, time
import numpy as np
import sympy as sp
import symgrad
from symgrad import compiler
from symgrad import expr as E

def rss_mb():  # resident set size in MB
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

backend, warmup, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
X, W = E.matrix("X", E.batch(), 3), E.matrix("W", 3, 2)
t = sp.Symbol("t")
args = (np.ones((4, 3)), np.ones((3, 2)))

def compile_one(i):
    if backend == "llvm-passes":  # only LLVM's pass pipeline and code emission, same IR
        optimize_and_emit(llvm_ir, 3)
        return
    c = sp.Rational(i + 1, 7)
    loss = E.mean(E.elementwise(sp.Lambda(t, c * sp.tanh(t) + t ** 2), E.matmul(X, W)))
    fn = compiler.compile([X, W], {"loss": loss, "dW": symgrad.grad(loss, W)},
                          backend=backend, name=f"model_{i}", cache=False)
    fn(*args)
    return fn

if backend == "llvm-passes":
    from codegen.llvm.jit import optimize_and_emit
    backend = "llvm"
    backend, llvm_ir = "llvm-passes", compile_one(0).llvm_ir
for i in range(warmup):
    compile_one(10**6 + i)
gc.collect()
before, seconds = rss_mb(), []
for i in range(count):
    start = time.perf_counter()
    compile_one(i)
    seconds.append(time.perf_counter() - start)
    gc.collect()
after = rss_mb()
print(json.dumps({"backend": backend, "compiles": count, "before": before, "after": after,
                  "median_ms": 1e3 * statistics.median(seconds) if seconds else 0.0}))
"""


def run_child(backend: str, warmup: int, compiles: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, backend, str(warmup), str(compiles)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def kept_pipeline_optimize(module, tm, opt: int) -> None:
    """``jit.optimize`` without freeing the pass pipeline: what llvmlite alone does."""
    import llvmlite.binding as llvm

    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pto.loop_vectorization = pto.slp_vectorization = opt >= 2
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(module, pb)


def pipeline_time(rounds: int) -> None:
    """Optimization time with the pipeline freed and kept, side by side, same result."""
    import sympy as sp

    import symgrad
    from benchmarks.common import format_table, interleaved
    from codegen.llvm import jit
    from symgrad import compiler
    from symgrad import expr as E

    X, W, t = E.matrix("X", E.batch(), 3), E.matrix("W", 3, 2), sp.Symbol("t")
    loss = E.mean(E.elementwise(sp.Lambda(t, sp.tanh(t) / 7 + t**2), E.matmul(X, W)))
    fn = compiler.compile(
        [X, W], {"loss": loss, "dW": symgrad.grad(loss, W)}, backend="llvm", cache=False
    )
    tm, text = jit.target_machine(3), fn.llvm_ir
    variants = {
        "pipeline freed (jit.optimize)": jit.optimize,
        "pipeline kept": kept_pipeline_optimize,
    }
    texts = set()
    for optimize in variants.values():
        module = jit.parse(text)
        optimize(module, tm, 3)
        texts.add(str(module))
    assert len(texts) == 1, "the two ways of running the pipeline optimized differently"
    fns = {name: lambda o=optimize: o(jit.parse(text), tm, 3) for name, o in variants.items()}
    title = "parse + default<O3> of one small model's IR, interleaved"
    print(format_table(interleaved(fns, rounds=rounds), "pipeline kept", title=title))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiles", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--backends", nargs="*", default=["numpy", "llvm"])
    parser.add_argument("--pipeline-time", type=int, default=0, metavar="ROUNDS")
    args = parser.parse_args(argv)
    if args.pipeline_time:
        pipeline_time(args.pipeline_time)
        print()
    gc.collect()
    if not args.backends:
        return
    print(f"{args.compiles} compiles of distinct small models after {args.warmup} warm-up compiles")
    print()
    print(
        "| backend | RSS before (MB) | RSS after (MB) | growth (MB) | per compile (kB) "
        "| median compile (ms) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for backend in args.backends:
        r = run_child(backend, args.warmup, args.compiles)
        growth = r["after"] - r["before"]
        per = 1024 * growth / max(1, r["compiles"])
        print(
            f"| {backend} | {r['before']:.1f} | {r['after']:.1f} | {growth:.1f} | {per:.1f} "
            f"| {r['median_ms']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
