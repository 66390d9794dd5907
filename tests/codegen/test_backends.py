"""The backend registry: one object per backend, the same interface, found by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symgrad
from codegen.backends import BACKENDS, Backend, backend, target_backend
from symgrad.emission import TARGETS
from tests.codegen.parity import compare_backends
from tests.codegen.test_llvm_validation import sgd_step

ROOT = Path(__file__).resolve().parents[2]


def test_unknown_backend_names_the_value_and_the_known_ones():
    for bad in ("cuda", "LLVM", None):
        with pytest.raises(ValueError) as err:
            backend(bad)
        assert str(err.value) == f"Unknown backend: {bad!r}. Known backends: numpy, llvm"


def test_symgrad_compile_uses_the_registry():
    n = symgrad.batch()
    x = symgrad.matrix("X", n, 2)
    with pytest.raises(ValueError, match=r"Unknown backend: 'cuda'\. Known backends: numpy, llvm"):
        symgrad.compile([x], {"s": symgrad.expr.total(x)}, backend="cuda")


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_compiles_the_same_program(name, rng):
    b = BACKENDS[name]
    assert isinstance(b, Backend) and b.name == name and backend(name) is b
    program = sgd_step()
    fn = b.compile(program, cache=False)
    args = [rng.standard_normal((5, 4)), rng.standard_normal((5, 3)), rng.standard_normal((4, 3))]
    want = compare_backends(program, [*args, 0.1])["numpy"]
    for call in (fn, b.entry(fn)):  # the fast entry computes what the plain call computes
        w = args[2].copy()
        outs = call(args[0], args[1], w, 0.1)
        np.testing.assert_allclose(outs[0], want[0][0], rtol=1e-12)
        np.testing.assert_allclose(w, want[1]["W"], rtol=1e-12)
    assert "sgd" in b.source(fn)


def test_whole_epochs_only_where_declared():
    program = sgd_step()
    spec = {"x_input": "X", "y_input": "Y", "sums": ("L",), "counter": None}
    for b in BACKENDS.values():
        if b.epochs:
            epoch = b.compile_epoch(program, cache=False, **spec)
            assert epoch.step.program is program
        else:
            with pytest.raises(NotImplementedError, match=f"backend '{b.name}' has no whole-epoch"):
                b.compile_epoch(program, cache=False, **spec)


def test_emission_targets_come_from_the_backends():
    assert TARGETS == {t: what for b in BACKENDS.values() for t, what in b.targets.items()}
    assert list(TARGETS) == ["python", "llvm-ir", "object", "shared", "wasm"]
    assert target_backend("python") is backend("numpy")
    assert target_backend("shared") is backend("llvm")
    assert target_backend("wasm") is backend("llvm")
    with pytest.raises(ValueError, match=r"Unknown emit target: 'js'\. Known targets: 'python'"):
        target_backend("js")


def test_asking_for_a_backend_imports_no_other():
    code = (
        "import sys\n"
        "from codegen.backends import BACKENDS, backend\n"
        "from tests.codegen.test_numpy_backend import sgd_step\n"
        "backend('numpy').compile(sgd_step())\n"
        "assert [b.epochs for b in BACKENDS.values()] == [False, True]\n"
        "print(sorted(m for m in sys.modules if m.startswith(('llvmlite', 'codegen.llvm'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"
