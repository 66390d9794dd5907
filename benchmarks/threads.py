"""Thread limits shared by the benchmarks; import before NumPy (this module imports nothing heavy).

from benchmarks.threads import limit_threads_from_argv
THREADS = limit_threads_from_argv(script=__file__)   # --threads N, default 1
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def threads_from_argv(argv: list[str]) -> int:
    """``--threads N`` (default 1)."""
    for k, arg in enumerate(argv):
        if arg == "--threads" and k + 1 < len(argv):
            return int(argv[k + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return 1


def limit_threads(threads: int) -> None:
    """Every library gets ``threads`` threads on as many CPUs; call before importing NumPy.

    The thread-count variables cover OpenBLAS (NumPy's and symgrad's copy), MKL
    and OpenMP (PyTorch); XLA sizes its pool from the CPUs the process may run
    on, so the process is also pinned to ``threads`` CPUs.
    """
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if hasattr(os, "sched_setaffinity"):
        # every CPU when threads cover them: a parent that ran with --threads 1 pinned
        # itself, and its children inherit the mask
        os.sched_setaffinity(0, set(range(min(threads, os.cpu_count() or 1))))


def running_a_benchmark(script: str) -> bool:
    """Whether this process runs ``script`` (``python -m benchmarks.X`` or
    ``python benchmarks/X.py``), not a test session, a program or another benchmark that
    imports it."""
    return bool(sys.argv) and Path(sys.argv[0]).resolve() == Path(script).resolve()


def limit_threads_from_argv(argv: list[str] | None = None, *, script: str | None = None) -> int:
    """``--threads N`` of the command line, applied (:func:`limit_threads`) when ``argv`` is
    given or this process runs ``script`` (the calling module's ``__file__``). A module
    imported elsewhere must not pin its importer to one CPU: a test session's later tests and
    children would inherit the mask, and another benchmark's thread pool would start its
    workers on one core (``bench_gemm`` imports ``bench_llvm``: its two-thread product ran
    at one-thread speed)."""
    threads = threads_from_argv(sys.argv if argv is None else argv)
    if argv is not None or (script is not None and running_a_benchmark(script)):
        limit_threads(threads)
    return threads


def describe(threads: int) -> str:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "all"
    return f"threads: {threads} (BLAS, OpenMP, MKL, torch); process pinned to CPUs {cpus}"


def set_torch_threads(threads: int) -> None:
    """``torch.set_num_threads`` when PyTorch is installed (imports it)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)
