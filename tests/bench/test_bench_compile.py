"""The compile benchmark's child process still finds the functions it times.

The child wraps the stages of ``compile`` by module path; when a stage moves,
the benchmark used to die in its child. Every stage must be found and called.
"""

import tempfile

import pytest

from benchmarks import bench_compile


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_child_times_every_stage(backend):
    with tempfile.TemporaryDirectory() as empty:
        result = bench_compile.run_child(backend, empty)
    labels = bench_compile.STAGES["common"] + bench_compile.STAGES.get(backend, [])
    assert sorted(result["phases"]) == sorted(label for _, _, label in labels)
    assert all(seconds > 0 for seconds in result["phases"].values())
    assert result["compile"] > 0


def test_profile_finds_every_stage():
    """``--profile``: each function the stage table names is found in a cold LLVM compile."""
    with tempfile.TemporaryDirectory() as empty:
        result = bench_compile.run_child("llvm", empty, profile=3)
    assert sorted(result["profiled"]) == sorted(label for _, _, label in bench_compile.PROFILED)
    assert result["first"] > 0 and "function calls" in result["profile"]


def test_jax_child_reports_its_first_call_compile():
    """The JAX row: a fresh process whose first call (the compile) outlasts a later call."""
    pytest.importorskip("jax")
    with tempfile.TemporaryDirectory() as empty:
        result = bench_compile.run_child("jax", empty)
    assert result["compile"] > result["first"] > 0 and result["import"] > 0
