"""The disk cache: a second compile (or a second process) loads object code instead of running LLVM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from codegen import cache
from codegen.ir import Gemm, Map, Program, Value
from codegen.llvm import compile_program, pool

n = sp.Symbol("n", integer=True, positive=True)
x, b = sp.symbols("x b")
ROOT = Path(__file__).resolve().parents[2]


def small_program(constant=1) -> Program:
    X, W, B = Value("X", (n, 3)), Value("W", (3, 2)), Value("B", (1, 2))
    Z, A = Value("Z", (n, 2)), Value("A", (n, 2))
    body = (Gemm(Z, X, W), Map(A, sp.tanh(x + b) * constant, ((x, Z), (b, B))))
    return Program("cached", (X, W, B), (), body, (A,), batch=(n,))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    pool.runtime()  # the thread pool's object code loads once per process, from the usual cache
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_second_compile_is_a_hit(cache_dir, rng):
    first = compile_program(small_program())
    assert not first.from_cache
    assert len(list(cache_dir.glob("*.o"))) == 1 and not list(cache_dir.glob(".tmp-*"))
    hits = cache.stats["hits"]
    second = compile_program(small_program())
    assert second.from_cache and cache.stats["hits"] == hits + 1
    assert second.llvm_ir == first.llvm_ir and second.llvm_ir_optimized == first.llvm_ir_optimized
    assert "cached" in second.asm
    args = [rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=(1, 2))]
    np.testing.assert_array_equal(first(*args)[0], second(*args)[0])


def test_changed_program_misses(cache_dir):
    compile_program(small_program(1))
    changed = compile_program(small_program(2))
    assert not changed.from_cache and len(list(cache_dir.glob("*.o"))) == 2
    assert not compile_program(small_program(1), opt=2).from_cache  # the level is part of the key


def test_cache_false_neither_reads_nor_writes(cache_dir):
    compile_program(small_program(), cache=False)
    assert not list(cache_dir.iterdir())


def test_corrupt_entry_is_a_miss_and_is_replaced(cache_dir, rng):
    compile_program(small_program())
    (entry,) = cache_dir.glob("*.o")
    entry.write_bytes(entry.read_bytes()[:100])
    again = compile_program(small_program())
    assert not again.from_cache
    assert compile_program(small_program()).from_cache
    X = rng.normal(size=(4, 3))
    (A,) = again(X, np.eye(3, 2), np.zeros((1, 2)))
    np.testing.assert_allclose(A, np.tanh(X[:, :2]), rtol=1e-14)


def test_a_second_process_skips_llvm(cache_dir):
    compile_program(small_program())
    script = (
        "from tests.codegen.test_llvm_cache import small_program\n"
        "from codegen.llvm import compile_program\n"
        "import numpy as np\n"
        "fn = compile_program(small_program())\n"
        "print(fn.from_cache, fn(np.ones((2, 3)), np.ones((3, 2)), np.zeros((1, 2)))[0][0, 0])\n"
    )
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    hit, value = out.stdout.split()
    assert hit == "True" and float(value) == pytest.approx(np.tanh(3.0), rel=1e-15)


def test_a_warm_start_finds_the_object_without_generating_ir(cache_dir, monkeypatch):
    """The index entry maps the serialized program to its object: no IR text until asked for."""
    import codegen.llvm.backend as backend

    first = compile_program(small_program())
    assert len(list(cache_dir.glob("*.index"))) == 1
    monkeypatch.setattr(backend, "generate_ir", lambda *a, **k: pytest.fail("IR generated"))
    second = compile_program(small_program())
    assert second.from_cache
    monkeypatch.undo()
    assert second.llvm_ir == first.llvm_ir  # generated on first access


def test_symgrad_compile_caches_the_lowered_program(cache_dir, monkeypatch):
    import symgrad
    import symgrad.compiler as compiler
    from symgrad import expr as E

    def build():
        X, W = E.matrix("X", E.batch(), 3), E.matrix("W", 3, 2)
        t = sp.Symbol("t")
        loss = E.mean(E.elementwise(sp.Lambda(t, sp.tanh(t) ** 2), E.matmul(X, W)))
        return [X, W], {"loss": loss, "dW": symgrad.grad(loss, W)}

    inputs, outputs = build()
    first = compiler.compile(inputs, outputs, backend="llvm")
    assert len(list(cache_dir.glob("*.program"))) == 1
    monkeypatch.setattr(compiler, "simplify", lambda *a, **k: pytest.fail("simplified again"))
    inputs, outputs = build()
    second = compiler.compile(inputs, outputs, backend="llvm")
    assert second.program == first.program and second.formulas == first.formulas
    assert second.from_cache
    inputs, outputs = build()
    with pytest.raises(pytest.fail.Exception):  # cache=False neither reads nor writes
        compiler.compile(inputs, outputs, backend="llvm", cache=False)


def test_clear_removes_every_kind_of_entry(cache_dir):
    compile_program(small_program())
    assert {p.name for p in cache_dir.iterdir() if not p.suffix} == {"key"}
    assert {p.suffix for p in cache_dir.iterdir()} == {"", ".o", ".index"}
    assert cache.clear() == 2 and [p.name for p in cache_dir.iterdir()] == ["key"]
