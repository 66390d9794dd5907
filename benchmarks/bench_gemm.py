"""One large product through the LLVM backend's pool against NumPy's matmul, 1 and 2 threads.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_gemm                 # 2048² float32
    .venv/bin/python -m benchmarks.bench_gemm --size 1024 --dtype float64 --rounds 9

In one process, interleaved (``benchmarks.common.interleaved``): the product
``C = A @ B`` compiled with ``threads=1`` and with ``threads=2`` (the pool splits
it into one block per thread, each a one-thread call of symgrad's BLAS), and
NumPy's ``matmul`` with its OpenBLAS set to one thread and to two threads
for each call. Prints GFLOP/s (2 n³ FLOPs per product), the pool's time
over NumPy's at each thread count, and an idle check (cores other processes
kept busy, ``benchmarks.bench_peer_table.others_busy``) before and after.
"""

from __future__ import annotations

import argparse
import ctypes

import numpy as np

from benchmarks.bench_peer_table import others_busy
from benchmarks.common import environment, interleaved


def numpy_threads():
    """(get, set) of the thread count of NumPy's own OpenBLAS, or None if it has none."""
    from codegen.llvm import blas

    found = blas._numpy_library()
    if found is None:
        return None
    _, lib, _ = found
    for suffix in ("64_", ""):
        get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
        put = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
        if get is not None and put is not None:
            get.restype, put.argtypes, put.restype = ctypes.c_int, [ctypes.c_int], None
            return get, put
    return None


def candidates(size: int, dtype: str) -> dict:
    from codegen.ir import Gemm, Program, Value
    from codegen.llvm import compile_program

    a_v, b_v, c_v = (Value(n, (size, size)) for n in ("A", "B", "C"))
    program = Program("gemm", (a_v, b_v), (), (Gemm(c_v, a_v, b_v),), (c_v,), dtype=dtype)
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((size, size)).astype(dtype) for _ in range(2))
    out = np.empty_like(A)
    fns = {}
    for threads in (1, 2):
        fn = compile_program(program, cache=False, threads=threads)
        fns[f"symgrad pool, {threads} thread(s)"] = lambda fn=fn: fn(A, B)[0]
    counts = numpy_threads()
    if counts is not None:
        get, put = counts
        for threads in (1, 2):

            def matmul(threads=threads):
                before = get()
                put(threads)
                try:
                    return np.matmul(A, B, out=out)
                finally:
                    put(before)  # NumPy's own count again, for everything else

            fns[f"NumPy matmul, {threads} thread(s)"] = matmul
    return fns


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--rounds", type=int, default=7)
    parsed = ap.parse_args(argv)
    print(environment())
    fns = candidates(parsed.size, parsed.dtype)
    before = others_busy()
    timings = interleaved(fns, rounds=parsed.rounds)
    after = others_busy()
    flops = 2 * parsed.size**3
    print(f"{parsed.size}² {parsed.dtype} GEMM, median of {parsed.rounds} interleaved rounds")
    for name, t in timings.items():
        print(f"  {name}: {t.median * 1e3:.2f} ms, {flops / t.median / 1e9:.0f} GFLOP/s")
    for threads in (1, 2):
        pool, numpy = (f"{who}, {threads} thread(s)" for who in ("symgrad pool", "NumPy matmul"))
        if numpy in timings:
            ratio = timings[pool].median / timings[numpy].median
            print(f"  {threads} thread(s): pool time / NumPy time = {ratio:.2f}")
    print(f"idle check: {before:.2f} cores busy before, {after:.2f} after")


if __name__ == "__main__":
    main()
