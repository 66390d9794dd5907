"""benchmarks.threads: a thread setting gets exactly that many CPUs, whatever the parent had."""

import os
import subprocess
import sys

import pytest

CHILD = """
import os, sys
os.sched_setaffinity(0, {0})  # as a parent that ran with --threads 1 leaves its children
from benchmarks.threads import limit_threads
limit_threads(int(sys.argv[1]))
print(len(os.sched_getaffinity(0)), os.environ["OPENBLAS_NUM_THREADS"])
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
@pytest.mark.parametrize("threads", [1, os.cpu_count() or 1])
def test_limit_threads_sets_the_cpu_mask(threads):
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads)], capture_output=True, text=True, check=True
    )
    assert run.stdout.split() == [str(min(threads, os.cpu_count() or 1)), str(threads)]


IMPORTER = """
import os
before = (os.sched_getaffinity(0), os.environ.get("OPENBLAS_NUM_THREADS"))
import benchmarks.bench_llvm  # pins the process when run as a script, with --threads
print(before == (os.sched_getaffinity(0), os.environ.get("OPENBLAS_NUM_THREADS")))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_importing_a_benchmark_leaves_the_process_alone():
    """A test session imports benchmark modules: pinned to one CPU, every later test and every
    child process (Ray workers, compilers) would run on one core with one BLAS thread."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    run = subprocess.run(
        [sys.executable, "-c", IMPORTER], capture_output=True, text=True, check=True, env=env
    )
    assert run.stdout.split() == ["True"]


PINNED_BY = """
import os, sys
sys.argv = [os.path.join("benchmarks", sys.argv[1]), "--threads", "1"]
import benchmarks.bench_llvm
print(len(os.sched_getaffinity(0)), os.environ.get("OPENBLAS_NUM_THREADS"))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: pinned and unpinned look alike")
@pytest.mark.parametrize("script", ["bench_llvm.py", "bench_gemm.py"])
def test_only_the_script_being_run_pins_the_process(script):
    """bench_gemm imports bench_llvm; its pool's workers, started from a thread pinned by that
    import, all ran on one core."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    run = subprocess.run(
        [sys.executable, "-c", PINNED_BY, script],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    pinned = script == "bench_llvm.py"
    assert run.stdout.split() == (
        ["1", "1"] if pinned else [str(len(os.sched_getaffinity(0))), "None"]
    )
