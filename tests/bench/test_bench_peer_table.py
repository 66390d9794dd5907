"""The peer table's script runs end to end on tiny sizes, and its candidates train the same network.

No speed is asserted: this keeps ``benchmarks/bench_peer_table.py`` from rotting.
"""

import importlib.util
import os

import numpy as np
import pytest

from benchmarks import bench_peer_table as table
from benchmarks.common import peers

TINY = ([3, 5, 2], "relu", "softmax", 4, 3)  # sizes, activation, output, batch, batches


def expected_columns():
    found = peers()
    names = ["hand NumPy", *table.SYMGRAD]
    names += list(table.ONE_THREAD) if len(os.sched_getaffinity(0)) > 1 else []
    names += ["Numba step", "Numba loop"] if importlib.util.find_spec("numba") else []
    names += ["JAX jit", "JAX scan"] if found["jax"] else []
    names += ["PyTorch eager"] if found["torch"] else []
    return sorted(names)


def test_every_candidate_starts_from_the_same_weights_and_data():
    """The first call of every step gives the same loss; the two epochs the same mean loss."""
    fns = table.candidates(*TINY)
    assert sorted(fns) == expected_columns()
    first = {name: fn() for name, (fn, _) in fns.items()}
    epoch = first.pop("symgrad-llvm epoch")
    assert epoch.steps == 3 and fns["symgrad-llvm epoch"][1] == 3
    symgrad_loss = float(first.pop("symgrad-llvm step")[0][0, 0])
    if table.ONE_THREAD[0] in first:  # the same code on one thread: the same bits
        assert float(first.pop(table.ONE_THREAD[0])[0][0, 0]) == symgrad_loss
        assert first.pop(table.ONE_THREAD[1]).sums == epoch.sums
    epochs = {name: first.pop(name) for name in ("JAX scan", "Numba loop") if name in first}
    for name, loss in first.items():
        assert float(loss) == pytest.approx(symgrad_loss, rel=1e-5), name
    for name, mean in epochs.items():
        assert mean == pytest.approx(epoch.mean("loss"), rel=1e-5), name


@pytest.fixture
def jax_x64_restored():
    """bench_peers turns on jax_enable_x64 for float64; later tests expect JAX's default."""
    yield
    if importlib.util.find_spec("jax") is not None:
        import jax

        jax.config.update("jax_enable_x64", False)


def test_in_float64_every_candidate_computes_in_float64(jax_x64_restored):
    """Losses agree to float64 rounding: a peer that fell back to float32 would be 1e-8 off."""
    fns = table.candidates(*TINY, dtype="float64")
    first = {name: fn() for name, (fn, _) in fns.items()}
    symgrad_loss = float(first.pop("symgrad-llvm step")[0][0, 0])
    epoch = first.pop("symgrad-llvm epoch").mean("loss")
    for name in (*table.ONE_THREAD, "JAX scan", "Numba loop"):
        first.pop(name, None)
    assert first and all(
        float(loss) == pytest.approx(symgrad_loss, rel=1e-13) for loss in first.values()
    ), first
    assert epoch > 0


def test_measure_and_format_a_row():
    row = table.measure("tiny", *TINY, rounds=2, idle=0.01)
    assert sorted(row.per_step) == sorted(row.busy) == expected_columns()
    assert all(t.median > 0 for t in row.per_step.values())
    text = table.format_rows([row], threads=1)
    lines = text.splitlines()
    assert lines[0] == "**float32, per training step, 1 thread(s)**"
    assert lines[-1].startswith("| tiny |") and lines[-1].count("|") == lines[2].count("|")
    assert ("contended" in lines[-1]) == row.contended and (" idle |" in lines[-1]) != row.contended
    best = row.best_peer()
    ratio = row.per_step["symgrad-llvm step"].median / best
    assert f"| {ratio:.2f} |" in lines[-1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_throughput_and_idle_check(dtype):
    rates = table.gemm_throughput(size=32, rounds=1, dtype=dtype)
    assert sorted(rates) == ["NumPy matmul", "symgrad BLAS"] and all(r > 0 for r in rates.values())
    busy = table.others_busy(0.01)
    assert np.isnan(busy) or busy >= 0
    assert table.step_flops([2, 3, 4], 5) == 3 * 2 * 5 * (6 + 12)
