"""The fused-update benchmark compares what it says: the same step with and without the
fusion, training alike (no speed is asserted)."""

import numpy as np

from benchmarks import bench_gemm_update

DIGITS = "digits 64-128-64-10 relu softmax-CE, batch 32"


def test_both_candidates_train_alike_and_count_their_cpu_time():
    fns, cpu = bench_gemm_update.candidates(1, DIGITS)  # asserts which one is fused
    assert list(fns) == list(bench_gemm_update.NAMES)
    losses = {name: [float(fn()[0][0, 0]) for _ in range(5)] for name, fn in fns.items()}
    fused, unfused = (losses[name] for name in bench_gemm_update.NAMES)
    assert fused[-1] < fused[0]  # it trains
    np.testing.assert_allclose(fused, unfused, rtol=1e-5)
    assert all(len(seconds) == 5 and min(seconds) >= 0 for seconds in cpu.values())
