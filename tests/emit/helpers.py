"""Models, data and a NumPy-only subprocess runner shared by the emit tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.optimizers import SGD, Adam

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("symgrad", "sympy", "codegen", "llvmlite")

MODELS = {
    # name: (hidden activation, output activation, loss, optimizer)
    "adam": ("tanh", "softmax", "sparse_categorical_crossentropy", lambda: Adam(0.01)),
    "sgd": ("sigmoid", None, "mse", lambda: SGD(0.1, momentum=0.9)),
}


def build(kind: str, seed: int = 0, backend: str = "numpy", metrics=None) -> Sequential:
    """A small compiled float64 MLP: 4 features -> 6 hidden -> 3 outputs."""
    hidden, output, loss, optimizer = MODELS[kind]
    model = Sequential([Dense(6, activation=hidden, input_dim=4), Dense(3, activation=output)])
    model.compile(
        optimizer=optimizer(),
        loss=loss,
        dtype="float64",
        seed=seed,
        backend=backend,
        metrics=metrics,
    )
    return model


def data(kind: str, rows: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, 4))
    if MODELS[kind][2] == "sparse_categorical_crossentropy":
        return x, rng.integers(0, 3, rows)
    return x, rng.standard_normal((rows, 3))


# Runs in a fresh interpreter in which symgrad, SymPy, codegen and llvmlite cannot be
# imported: loads the emitted module from argv[1], runs the script in argv[2] with the
# module as `m` and the arrays of argv[3] as `d`; the script fills `out`, saved to argv[4].
RUNNER = r"""
import importlib.abc, importlib.util, sys

BLOCKED = __BLOCKED__


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the emitted module must not need it")


sys.meta_path.insert(0, Blocker())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable: the blocker does not work")
import numpy as np

module_path, script, data_path, out_path = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("emitted", module_path)
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
d = dict(np.load(data_path))
out = {}
exec(script)
out["_blocked_modules"] = np.array(sorted(k for k in sys.modules if k.partition(".")[0] in BLOCKED), dtype=str)
np.savez(out_path, **out)
""".replace("__BLOCKED__", repr(BLOCKED))


def run_isolated(module: Path, script: str, arrays: dict, tmp: Path) -> dict:
    """Run ``script`` against the emitted ``module`` without symgrad; returns ``out``."""
    np.savez(tmp / "inputs.npz", **arrays)
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            RUNNER,
            str(module),
            script,
            str(tmp / "inputs.npz"),
            str(tmp / "outputs.npz"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with np.load(tmp / "outputs.npz") as f:
        out = {k: f[k] for k in f.files}
    assert out.pop("_blocked_modules").size == 0
    return out
