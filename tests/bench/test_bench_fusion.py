"""benchmarks.bench_fusion: the wide network's loops outside the GEMMs, counted by hand."""

from __future__ import annotations

from benchmarks.bench_fusion import main, traffic
from benchmarks.graphs import mlp_graph, sgd_step
from codegen.llvm.fusion import fuse_loops
from codegen.llvm.module import make_layout

MIB = 2**20


def test_wide_step_loops_and_bytes():
    """Per 1024-wide layer (256 x 1024 activations A, 1024 x 1024 weights W, 4 bytes):
    one statement per loop: Z = t + b, A = relu(Z) (2 A each), dZ = dA o [A > 0] (3 A),
    colsum(dZ) (1 A), v' = 0.9 v - lr dW, W' = W + v' (3 W each): 4 + 4 + 24 = 32 MiB in
    6 loops; fused: relu(t + b) (2 A), the mask with its column sum (3 A),
    v' and W' (5 W): 2 + 3 + 20 = 25 MiB in 3 loops."""
    program = sgd_step(mlp_graph([1024, 1024, 1024, 10]), dtype="float32", momentum=0.9).program
    layout = make_layout(program)
    assert traffic(program.body, 256, 1 << 14) == (12, 64 * MIB)
    assert traffic(fuse_loops(program, layout.slot_of, layout.body), 256, 1 << 14) == (6, 50 * MIB)


def test_the_table_has_a_row_per_workload(capsys):
    main(["--workloads", "2", "3"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split(" | ")[-1] for r in rows] == ["0.79 |", "0.78 |"]
