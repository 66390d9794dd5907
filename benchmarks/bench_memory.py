"""Resident memory after many compiles: native code and generated sources are released.

Run from the repository root::

    python -m benchmarks.bench_memory                       # 2000 compiles per backend
    python -m benchmarks.bench_memory --compiles 200 --backends numpy --caches

Each backend runs in a fresh process with the disk cache disabled
(``cache=False``). The process compiles ``--warmup`` models first (imports,
SymPy's caches, the BLAS provider), reads ``VmRSS`` from ``/proc/self/status``,
then compiles ``--compiles`` distinct small models one after another (a
3-input linear layer through ``c * tanh`` with a different constant ``c``
each time, loss and gradient), calls each once, drops it and collects garbage,
and reads ``VmRSS`` again every ``--every`` compiles. The growth is what
functions that are no longer referenced still hold (native code, ``linecache``
entries, ...) plus what bounded caches (SymPy's, symgrad's) take while they fill.
The table gives the growth at each reading, the growth over the first 1,000
compiles (scaled to 1,000 when fewer run) and, past 1,000, the growth per 1,000
after the first 1,000: a leak keeps growing at the same rate, a cache that is
full no longer grows. ``--caches`` prints the entries of SymPy's caches (all
together) and of each ``functools`` cache in ``symgrad`` and ``codegen`` at
each reading.

``--backends llvm-passes`` runs only ``codegen.llvm.jit.optimize_and_emit`` on
one fixed IR text N times: the part of the LLVM backend's growth that stays
inside llvmlite's pass pipeline. ``--backends llvmlite`` optimizes, emits,
loads (``jit.LoadedObject``) and drops a distinct module each time (one model's
IR with its name changed): all of the LLVM side, no SymPy. Each row also gives
the median time of one compile in that process.

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
from benchmarks.bench_memory import cache_entries
from symgrad import compiler
from symgrad import expr as E

def rss_mb():  # resident set size in MB
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

backend, warmup = sys.argv[1], int(sys.argv[2])
checkpoints = [int(c) for c in sys.argv[3].split(",")]
X, W = E.matrix("X", E.batch(), 3), E.matrix("W", 3, 2)
t = sp.Symbol("t")
args = (np.ones((4, 3)), np.ones((3, 2)))

def compile_one(i):
    if backend == "llvm-passes":  # only LLVM's pass pipeline and code emission, same IR
        optimize_and_emit(llvm_ir, 3)
        return
    if backend == "llvmlite":  # llvmlite alone: a distinct module each time, loaded, freed
        name = f"model_{i}"
        obj, _ = optimize_and_emit(llvm_ir.replace("model_0", name), 3)
        LoadedObject(obj, 3).address(name)
        return
    c = sp.Rational(i + 1, 7)
    loss = E.mean(E.elementwise(sp.Lambda(t, c * sp.tanh(t) + t ** 2), E.matmul(X, W)))
    fn = compiler.compile([X, W], {"loss": loss, "dW": symgrad.grad(loss, W)},
                          backend=backend, name=f"model_{i}", cache=False)
    fn(*args)
    return fn

if backend in ("llvm-passes", "llvmlite"):
    from codegen.llvm.jit import LoadedObject, optimize_and_emit
    chosen, backend = backend, "llvm"
    llvm_ir = compile_one(0).llvm_ir
    backend = chosen
for i in range(warmup):
    compile_one(10**6 + i)
gc.collect()
rows, seconds, done = [], [], 0
def checkpoint():
    rows.append({"compiles": done, "rss": rss_mb(), "caches": cache_entries()})
checkpoint()
for upto in checkpoints:
    while done < upto:
        start = time.perf_counter()
        compile_one(done)
        seconds.append(time.perf_counter() - start)
        gc.collect()
        done += 1
    checkpoint()
print(json.dumps({"backend": backend, "rows": rows,
                  "median_ms": 1e3 * statistics.median(seconds) if seconds else 0.0}))
"""


def cache_entries() -> dict[str, int]:
    """Entries held by SymPy's caches and by each of symgrad's and codegen's ``lru_cache``s."""
    from sympy.core.cache import CACHE

    entries = {"sympy": sum(_currsize(f) for f in CACHE)}
    entries.update({name: f.cache_info().currsize for name, f in functools_caches()})
    return entries


def functools_caches() -> list[tuple[str, object]]:
    """``(module.name, function)`` for every ``functools`` cache defined in a loaded module
    of ``symgrad`` or ``codegen``, found by introspection."""
    found = []
    for name, module in sorted(sys.modules.items()):
        if name.split(".")[0] in ("symgrad", "codegen"):
            for attr, f in vars(module).items():
                if getattr(f, "__module__", None) == name and hasattr(f, "cache_info"):
                    found.append((f"{name}.{attr}", f))
    return found


def _currsize(f) -> int:
    while not hasattr(f, "cache_info") and hasattr(f, "__wrapped__"):
        f = f.__wrapped__
    return f.cache_info().currsize if hasattr(f, "cache_info") else 0


def run_child(backend: str, warmup: int, checkpoints: list[int]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, backend, str(warmup), ",".join(map(str, checkpoints))],
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


def checkpoints(compiles: int, every: int) -> list[int]:
    """Where RSS is read: every ``every`` compiles, at 1,000 and at the end."""
    marks = set(range(every, compiles + 1, every)) if every else set()
    return sorted(marks | {min(1000, compiles), compiles})


def growth_rows(r: dict) -> tuple[str, str]:
    """The segment readings (growth since the start) and the figures per 1,000 compiles."""
    rows = r["rows"]
    start = rows[0]["rss"]
    segments = " ".join(f"{row['compiles']}: +{row['rss'] - start:.1f}" for row in rows[1:])
    at = {row["compiles"]: row["rss"] for row in rows}
    last = rows[-1]["compiles"]
    first = (at[min(1000, last)] - start) * 1000 / min(1000, last)
    steady = f"{(at[last] - at[1000]) * 1000 / (last - 1000):.1f}" if last > 1000 else "-"
    return segments, f"{first:.1f} | {steady}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiles", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250, help="read RSS every N compiles")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--backends", nargs="*", default=["numpy", "llvm"])
    parser.add_argument("--caches", action="store_true", help="print cache entries per reading")
    parser.add_argument("--pipeline-time", type=int, default=0, metavar="ROUNDS")
    args = parser.parse_args(argv)
    if args.pipeline_time:
        pipeline_time(args.pipeline_time)
        print()
    gc.collect()
    if not args.backends:
        return
    marks = checkpoints(args.compiles, args.every)
    print(f"{args.compiles} compiles of distinct small models after {args.warmup} warm-up compiles")
    print()
    print(
        "| backend | RSS before (MB) | growth after N compiles (MB) | first 1,000 (MB) "
        "| per 1,000 after the first 1,000 (MB) | median compile (ms) |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    results = []
    for backend in args.backends:
        r = run_child(backend, args.warmup, marks)
        results.append(r)
        segments, figures = growth_rows(r)
        print(
            f"| {backend} | {r['rows'][0]['rss']:.1f} | {segments} | {figures} "
            f"| {r['median_ms']:.1f} |",
            flush=True,
        )
    if args.caches:
        for r in results:
            print(f"\ncache entries, {r['backend']}:")
            names = [k for k, v in r["rows"][-1]["caches"].items() if v or k == "sympy"]
            for name in names:
                counts = " ".join(str(row["caches"].get(name, 0)) for row in r["rows"])
                print(f"  {name}: {counts}")


if __name__ == "__main__":
    main()
