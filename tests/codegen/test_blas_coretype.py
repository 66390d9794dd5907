"""An OPENBLAS_CORETYPE the user set is honoured; the BLAS choice is visible in symgrad.config().

OpenBLAS reads the variable once, when it loads, so each case runs in a fresh
interpreter with the variable set or removed (this machine may set it for the
test process: both ways are checked whatever it does here).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from codegen.llvm import blas

SCRIPT = r"""
import json, numpy as np, sympy as sp
import symgrad
from codegen.ir import Gemm, Program, Value
from codegen.llvm import blas, compile_program

n = sp.Symbol("n", integer=True, positive=True)
A, B, C = Value("A", (n, 5)), Value("B", (5, 3)), Value("C", (n, 3))
fn = compile_program(Program("g", (A, B), (), (Gemm(C, A, B),), (C,), batch=(n,)), cache=False)
a, b = np.arange(20.0).reshape(4, 5), np.arange(15.0).reshape(5, 3)
cfg = symgrad.config()
print(json.dumps({
    "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
    "text": str(cfg),
    "numpy_core": blas.numpy_core(),
    "numpy_path": str(blas._numpy_library()[0]),
    "product_ok": bool(np.array_equal(fn(a, b)[0], a @ b)),
}))
"""

pytestmark = pytest.mark.skipif(
    blas.provider("numpy") is blas.GENERATED or platform.machine() not in ("x86_64", "AMD64"),
    reason="needs NumPy's bundled OpenBLAS on x86-64",
)
SAFE_CORE = "Nehalem"  # SSE4.2 kernels: every x86-64 CPU that runs these tests has them


def run(tmp_path, **env) -> dict:
    """symgrad.config() and a gemm check in a fresh interpreter with ``env`` (None = unset)."""
    full = {**os.environ, "SYMGRAD_BLAS_DIR": str(tmp_path / "blas")}
    full.pop("SYMGRAD_BLAS", None)
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=full, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_user_coretype_is_honoured(tmp_path):
    """OPENBLAS_CORETYPE set: NumPy's own instance, running what the user asked, no private copy."""
    got = run(tmp_path, OPENBLAS_CORETYPE=SAFE_CORE, SYMGRAD_BLAS_CORETYPE="Sandybridge")
    cfg = got["config"]
    assert cfg["blas_library"] == got["numpy_path"]
    assert cfg["blas_kernels"].lower() == got["numpy_core"].lower() == SAFE_CORE.lower()
    assert cfg["openblas_coretype"] == SAFE_CORE
    assert f"OPENBLAS_CORETYPE={SAFE_CORE} is set" in cfg["blas_origin"]
    assert not (tmp_path / "blas").exists()  # no copy was even made
    assert got["product_ok"]
    assert f"OPENBLAS_CORETYPE   {SAFE_CORE}" in got["text"]


def test_private_copy_only_when_unset(tmp_path):
    """Unset: SYMGRAD_BLAS_CORETYPE may load a private copy with other kernels; NumPy keeps its own."""
    plain = run(tmp_path, OPENBLAS_CORETYPE=None, OPENBLAS_L2_SIZE=None)
    wanted = "Sandybridge" if plain["numpy_core"].lower() != "sandybridge" else SAFE_CORE
    got = run(tmp_path, OPENBLAS_CORETYPE=None, OPENBLAS_L2_SIZE=None, SYMGRAD_BLAS_CORETYPE=wanted)
    cfg = got["config"]
    assert cfg["openblas_coretype"] is None and "OPENBLAS_CORETYPE   unset" in got["text"]
    assert cfg["blas_library"] != got["numpy_path"]
    assert cfg["blas_library"].startswith(str(tmp_path / "blas"))
    assert cfg["blas_kernels"].lower() == wanted.lower()
    assert got["numpy_core"].lower() != wanted.lower()  # NumPy's instance is untouched
    assert cfg["blas_origin"].startswith("private copy") and got["product_ok"]
    assert cfg["blas_threads"] is not None and cfg["blas_threads"] >= 1


def test_default_choice_when_unset(tmp_path):
    """Unset and automatic: always a private copy, one thread per call (the pool splits the
    products); AVX-512 kernels when the host has them and NumPy runs less, else NumPy's."""
    got = run(tmp_path, OPENBLAS_CORETYPE=None, OPENBLAS_L2_SIZE=None, SYMGRAD_BLAS_CORETYPE=None)
    cfg = got["config"]
    from codegen.llvm.jit import host

    features = host().features.split(",")
    avx512 = all(f in features for f in blas.AVX512_FEATURES)
    wider = avx512 and got["numpy_core"] not in blas.AVX512_CORES
    assert cfg["blas_library"] != got["numpy_path"], cfg
    assert cfg["blas_library"].startswith(str(tmp_path / "blas"))
    assert cfg["blas_origin"].startswith("private copy")
    want = blas.AVX512_CORES[0] if wider else got["numpy_core"]
    assert cfg["blas_kernels"].lower() == want.lower()
    assert cfg["blas_threads"] == 1
    assert got["product_ok"]
