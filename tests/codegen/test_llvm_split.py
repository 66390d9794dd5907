"""Compiling in parts (codegen.llvm.split): the same machine code per function (every
function in parts of the optimized module; every kernel when the step and the entry points
are optimized apart), one engine for the parts, the same bits, one part on one thread."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import symgrad
from codegen import cache
from codegen.llvm import jit, split
from symgrad import expr as E

COLS = 40


def _program(threads: int, cache_on: bool = False):
    n = E.batch()
    X = E.matrix("X", n, COLS)
    b = E.matrix("b", 1, COLS)
    e = sp.Symbol("e")
    h = E.elementwise(sp.Lambda(e, sp.tanh(e)), X + E.broadcast_rows(b, n))
    outputs = {"h": h, "total": E.mean(h), "cols": E.col_sum(h), "soft": E.softmax(h)}
    return symgrad.compile(
        [X, b], outputs, backend="llvm", threads=threads, cache=cache_on, name="parted"
    )


def _functions(asm: str) -> dict[str, str]:
    """Each function's assembly (its constant pool included), label numbers and the
    directives that name the object's layout removed."""
    found = {}
    for chunk in re.split(r"^\.Lfunc_end\d+:", asm, flags=re.M)[:-1]:
        name = re.search(r"\.type\s+([^,]+),@function", chunk).group(1)
        chunk = re.sub(r"\.(LBB|LCPI|Ltmp|LJTI)\d+_", r".\1_", chunk)
        layout = (".p2align", ".type", ".globl", ".section", ".text", ".file", ".size", ".cfi_endp")
        found[name] = "\n".join(
            line
            for line in chunk.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", *layout))
        )
    return found


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(split, "MIN_PART_LINES", 50)


def test_each_function_has_the_machine_code_of_the_whole_module(small_parts):
    optimized = _program(1).llvm_ir_optimized
    texts = split.split(optimized, 3)
    assert texts is not None and len(texts) == 3
    whole = _functions(jit.emit_assembly(optimized, 3))
    parts = [_functions(jit.emit_assembly(text, 3)) for text in texts]
    defined = [name for part in parts for name in part]
    assert sorted(defined) == sorted(whole)  # every function defined once, in one part
    assert all(parts)  # and no part empty
    for part in parts:
        for name, code in part.items():
            assert code == whole[name], name
    # a function one part calls and another defines is external there (linkable by name)
    linkage = re.compile(r"^define (internal |private )?.*?@([\w.]+)\(", re.M)
    homes = [dict((name, local) for local, name in linkage.findall(text)) for text in texts]
    for k, text in enumerate(texts):
        body = "\n".join(line for line in text.splitlines() if line.startswith("  "))
        for name in set(re.findall(r"@([\w.]+)", body)) - set(homes[k]):
            assert [home[name] for home in homes if name in home] in ([], [""]), name
    # the thread-count variables    # the thread-count variables: one definition, the other parts refer to it
    for what in ("threads", "gemm_threads"):
        variable = re.compile(rf"^@parted\.{what} = (available_externally )?", re.M)
        kinds = [variable.search(text).group(1) for text in texts]
        assert kinds == [None] + ["available_externally "] * 2, what


def test_parts_give_the_bits_of_one_object(small_parts, rng, tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    x, b = rng.normal(size=(300, COLS)), rng.normal(size=(1, COLS))
    one = _program(1)
    assert one.compiled.code.parts == 1  # one thread: all of it on the caller's thread
    want = one(x, b)
    parted = _program(2, cache_on=True)
    # the step's module in two parts, the entry points' module
    assert parted.compiled.code.parts == 3 and not parted.from_cache
    again = _program(2, cache_on=True)  # the objects come back from the disk cache
    assert again.from_cache and again.compiled.code.parts == 3
    assert again.llvm_ir_optimized == parted.llvm_ir_optimized
    for name in ("parted.map.h", "parted.step_impl", "parted.fast"):
        assert f"\n{name}:" in again.asm, name  # the assembly of both modules
    for fn in (parted, again):
        for got, expected in zip(fn(x, b), want, strict=True):
            np.testing.assert_array_equal(got, expected)


def test_the_kernels_optimized_apart_have_the_machine_code_of_the_whole_module(small_parts):
    fn = _program(1)
    step, entries = split.by_role(fn.llvm_ir)
    # the roles: the entry points in one module, the step (now external) and kernels in the other
    assert 'define i32 @"parted"(' in entries and "define internal" not in entries
    assert 'declare i32 @"parted"(' in step and 'define i32 @"parted.step_impl"(' in step
    whole = _functions(fn.asm)
    apart = {}
    for text in (step, entries):
        with jit.parsed(text) as module:
            jit.optimize(module, jit.target_machine(3), 3)
            apart.update(_functions(jit.emit_assembly(str(module), 3)))
    assert sorted(apart) == sorted(whole)
    kernels = [name for name in whole if name.startswith("parted.") and name.count(".") > 1]
    assert len(kernels) >= 8 and "parted.map.h" in kernels
    for name in kernels:
        if name != "parted.step_impl":  # its signature is the other module's to call
            assert apart[name] == whole[name], name


def test_a_small_module_stays_whole():
    assert split.split(_program(1).llvm_ir_optimized, 2) is None
    assert _program(2).compiled.code.parts == 1


def test_a_module_local_variable_keeps_the_module_whole(small_parts):
    optimized = _program(1).llvm_ir_optimized
    assert split.split(optimized, 2) is not None
    head, sep, rest = optimized.partition("\ndefine ")
    assert split.split(f"{head}\n@counter = internal global i64 0\n{sep}{rest}", 2) is None


def test_an_entry_with_a_wrong_object_count_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    key = "0" * 64
    assert cache.store(key, (b"first", b"second"), "; optimized")
    assert cache.load(key) == ((b"first", b"second"), "; optimized")
    body = cache._read(key, "o")
    rejected = cache.stats["rejected"]
    for count in (0, 3, 2**63):  # none, more than stored, absurd
        assert cache._write(key, "o", count.to_bytes(8, "little") + body[8:])
        assert cache.load(key) is None
    assert cache.stats["rejected"] == rejected + 3
