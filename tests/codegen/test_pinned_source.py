"""The generated NumPy source of a small model, pinned as exact text.

Regenerate after an intended change with
``python -m tests.codegen.test_pinned_source`` and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.graphs import mlp_graph, sgd_step

PINNED = Path(__file__).parent / "pinned" / "mlp_sgd_step.py.txt"


def small_model_step():
    """A 3-4-2 sigmoid/softmax MLP, cross-entropy, plain SGD, guarded loss."""
    graph = mlp_graph([3, 4, 2], "sigmoid", "softmax")
    return sgd_step(graph, guards=["loss"], name="mlp_sgd_step")


def test_generated_source_is_pinned():
    source = small_model_step().source
    assert source == PINNED.read_text(), "generated source changed; see module docstring"


def test_gradient_statements_carry_their_formulas():
    source = small_model_step().source
    assert "# dW2 = 1/n*A1.T*(P - Y)" in source
    assert "# t6 = t5 o A1*(1 - A1)" in source


def test_source_is_byte_identical_across_processes():
    code = (
        "from tests.codegen.test_pinned_source import small_model_step;"
        "import sys; sys.stdout.write(small_model_step().source)"
    )
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        root = Path(__file__).parents[2]
        outs.append(
            subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    assert outs[0] == outs[1] == PINNED.read_text()


if __name__ == "__main__":
    PINNED.write_text(small_model_step().source)
    print(f"wrote {PINNED}")
