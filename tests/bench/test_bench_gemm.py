"""The GEMM micro-benchmark's candidates compute the same product (no speed is asserted)."""

import numpy as np

from benchmarks import bench_gemm


def test_every_candidate_computes_the_product():
    fns = bench_gemm.candidates(200, "float64")  # 8e6 multiply-adds: two blocks at 2 threads
    assert {"symgrad pool, 1 thread(s)", "symgrad pool, 2 thread(s)"} <= set(fns)
    results = {name: np.array(fn()) for name, fn in fns.items()}
    want = results.pop("symgrad pool, 1 thread(s)")
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((200, 200)) for _ in range(2))
    np.testing.assert_allclose(want, A @ B, rtol=1e-10, atol=1e-10)
    for name, got in results.items():
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)


def test_the_script_prints_its_figures(capsys):
    bench_gemm.main(["--size", "64", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "64² float32 GEMM" in out and "GFLOP/s" in out and "idle check" in out
