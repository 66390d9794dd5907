"""The disk cache under damaged and crafted entries: every bad entry is a miss, nothing runs.

Fault injection runs ``tests.codegen.cache_faults`` (each trial in a forked
child with a timeout); the crafted-entry tests write entries that carry a
valid tag, so they show the decoder itself executes nothing.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from codegen import cache, ir, serial
from symgrad import compiler
from tests.codegen import cache_faults

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAD_CACHE_DIR", str(tmp_path))
    return tmp_path


def run_faults(trials: int, seed: int) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.codegen.cache_faults", "--trials", str(trials)]
        + ["--seed", str(seed)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60 + 30 * trials,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def check_every_fault_is_a_miss(reports: list[dict], trials: int) -> None:
    kinds = {k: [r for r in reports if r["kind"] == k] for k in cache_faults.KINDS}
    assert {k: len(v) for k, v in kinds.items()} == dict.fromkeys(cache_faults.KINDS, trials)
    bad = [
        r for r in reports if (r["ended"], r.get("identical"), r.get("restored")) != (0, True, True)
    ]
    assert not bad, bad
    # a damaged entry is refused (a damaged key refuses everything it signed, or is replaced)
    assert all(r["rejected"] >= 1 for r in reports if r["kind"] != "key"), reports


def test_damaged_entries_are_misses():
    check_every_fault_is_a_miss(run_faults(20, seed=0), 20)


@pytest.mark.slow
def test_many_damaged_entries_are_misses():
    check_every_fault_is_a_miss(run_faults(100, seed=1), 100)


def fresh_outputs():
    return cache_faults.run(use_cache=False)


def program_entry(directory: Path) -> tuple[str, Path]:
    (path,) = directory.glob("*.program")
    return path.stem, path


def test_an_authenticated_pickle_entry_does_not_run(cache_dir, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    cache_faults.run()
    key, path = program_entry(cache_dir)
    assert cache.store_blob(key, "program", pickle.dumps(Payload()))  # tagged with the dir key
    assert cache_faults.run() == fresh_outputs()
    assert not marker.exists()
    assert compiler._load_lowered(key) is not None  # the entry was replaced by a good one


HOSTILE_TEXT = "__import__('pathlib').Path({!r}).touch()"


def crafted_documents(marker: Path) -> dict[str, dict]:
    """Documents that try to reach code: each must be refused or build inert SymPy objects."""
    text = HOSTILE_TEXT.format(str(marker))
    exp = "sympy.functions.elementary.exponential:exp"
    return {
        "eval as a class": {"nodes": [["basic", "builtins:eval", []]], "root": {"ref": 0}},
        "sympify as a class": {
            "nodes": [["basic", "sympy.core.sympify:sympify", []]],
            "root": {"ref": 0},
        },
        "a class outside SymPy": {"nodes": [["singleton", "os:system"]], "root": {"ref": 0}},
        "a dunder path": {
            "nodes": [["basic", "sympy.core.add:Add.__init__.__globals__", []]],
            "root": {"ref": 0},
        },
        "text as an argument": {"nodes": [["basic", exp, [text]]], "root": {"ref": 0}},
        "a Str argument": {"nodes": [["str", text], ["basic", exp, [0]]], "root": {"ref": 1}},
        "a symbol named with code": {
            "nodes": [["symbol", "Symbol", text, {}, None], ["basic", exp, [0]]],
            "root": {"ref": 1},
        },
        "a forward reference": {"nodes": [["basic", exp, [1]], ["integer", 1]], "root": {"ref": 0}},
        "an unknown record": {"nodes": [], "root": {"record": ["os:system", {}]}},
        "a record with a foreign field": {
            "nodes": [],
            "root": {"record": ["codegen.ir:Value", {"name": "x", "shape": [], "__class__": 1}]},
        },
    }


@pytest.mark.parametrize("case", list(crafted_documents(Path("m"))))
def test_crafted_documents_run_nothing(case, tmp_path):
    marker = tmp_path / "pwned"
    doc = {"format": serial.FORMAT, **crafted_documents(marker)[case]}
    codec = compiler._PROGRAM_CODEC
    try:
        value = codec.loads(json.dumps(doc).encode())
    except (ValueError, TypeError):
        value = None
    assert not marker.exists()
    if value is not None:  # built: only inert SymPy objects, the text kept as a name
        assert isinstance(value, sp.Basic) and str(marker) in sp.srepr(value)


def test_an_entry_under_another_name_is_refused(cache_dir):
    cache_faults.run()
    key, path = program_entry(cache_dir)
    other = "0" * 64
    (cache_dir / f"{other}.program").write_bytes(path.read_bytes())
    rejected = cache.stats["rejected"]
    assert cache.load_blob(other, "program") is None and cache.load_blob(key, "program")
    assert cache.stats["rejected"] == rejected + 1


def test_a_key_others_can_read_disables_the_directory(cache_dir):
    cache_faults.run()
    (cache_dir / "key").chmod(0o644)
    before = {p.name: p.stat().st_mtime_ns for p in cache_dir.iterdir()}
    inputs, outputs = cache_faults.build()
    fn = compiler.compile(inputs, outputs, backend="llvm")
    assert not fn.from_cache
    assert {p.name: p.stat().st_mtime_ns for p in cache_dir.iterdir()} == before  # no writes


def test_a_user_function_class_makes_no_program_entry(cache_dir):
    from symgrad import expr as E

    class cube(sp.Function):  # noqa: N801 - a user's scalar function, unknown to the codec
        def fdiff(self, argindex=1):
            return 3 * self.args[0] ** 2

        def _numpycode(self, printer):
            return f"({printer._print(self.args[0])})**3"

    X = E.matrix("X", E.batch(), 2)
    t = sp.Symbol("t")
    loss = E.mean(E.elementwise(sp.Lambda(t, sp.exp(t) * sp.Integer(2)), X))
    with pytest.raises(serial.Unsupported, match="cube"):
        serial.Codec().dumps(cube(t))
    compiler.compile([X], {"loss": loss})
    assert len(list(cache_dir.glob("*.program"))) == 1
    compiler._store_lowered("1" * 64, (cube(t),))
    assert len(list(cache_dir.glob("*.program"))) == 1  # nothing written for it


def program_with_every_statement() -> ir.Program:
    n = sp.Symbol("n", integer=True, positive=True)
    x, y = sp.symbols("x y", real=True)
    X, W, b = ir.Value("X", (n, 3)), ir.Value("W", (3, 2)), ir.Value("b", (1, 2))
    Z, A, P = ir.Value("Z", (n, 2)), ir.Value("A", (n, 2)), ir.Value("P", (n, 2))
    T, L, C = ir.Value("T", (2, n)), ir.Value("L", (1, 1)), ir.Value("C", (n, 3))
    K, G, S = ir.Value("K", (n, 2)), ir.Value("G", (n, 6)), ir.Value("S", (3, 2))
    window = ir.Window(1, 3, 1, 1, 2, 1, 1, 1, 1, 0, 0, 1, 2, depthwise=True, lowest=True)
    I, X2 = ir.Value("I", (2 * n, 2)), ir.Value("X2", (n, 3))
    R, M = ir.Value("R", (3 * n, 1)), ir.Value("M", (n, 1))
    body = (
        ir.Gemm(Z, X, W, trans_b=False, alpha=sp.Rational(1, 3), comment="Z = X W / 3"),
        ir.Map(A, sp.Piecewise((x + y, x > 0), (sp.Float("0.1") * x, True)), ((x, Z), (y, b))),
        ir.Softmax(P, A, log=True),
        ir.Transpose(T, P),
        ir.Columns(C, ((A, 0, 2), (P, 1, 2)), comment="C = [A | P[:, 1:2]]"),
        ir.KeepMask(K, ir.stream_key(3, 4), sp.Symbol("lr"), 2**31, sp.Integer(2)),
        ir.Gather(G, W, X),
        ir.ScatterAdd(S, G, X),
        ir.Im2Col(I, X, window, comment="I = im2col(X)"),
        ir.Col2Im(X2, I, window),
        ir.Reshape(R, X2),
        ir.RowMax(M, X2),
        ir.Reduce(L, sp.exp(x) / n + sp.pi, ((x, P),), (n, 2), None),
        ir.Guard(L, "loss"),
    )
    return ir.Program(
        "every",
        (X, W, b),
        (sp.Symbol("lr"),),
        body,
        (L, T, C, R, M, K, S),
        ((W, W),),
        batch=(n,),
        meta={1: "m"},
    )


def test_every_ir_statement_round_trips():
    program = program_with_every_statement()
    assert {type(s) for s in program.body} == set(ir.Stmt.__args__)  # a new statement joins here
    codec = serial.Codec(records=serial.records_of(ir))
    data = codec.dumps(program)
    assert codec.dumps(program) == data  # deterministic: the index key hashes it
    back = codec.loads(data)
    assert back == program and str(back) == str(program)
    assert [sp.srepr(s.body) for s in back.body if hasattr(s, "body")] == [
        sp.srepr(s.body) for s in program.body if hasattr(s, "body")
    ]


def test_the_codec_knows_the_whole_scalar_vocabulary():
    from symgrad.core import scalar

    named = [getattr(scalar, name) for name in ir.NAMED_FUNCTIONS]
    classes = [c for c in ir.SCALAR_FUNCTIONS if isinstance(c, type)] + named
    codec = compiler._PROGRAM_CODEC
    for cls in classes:
        assert codec.sympy_class(f"{cls.__module__}:{cls.__qualname__}") is cls
    x = sp.Symbol("x", real=True)
    body = sum(c(x) for c in classes if issubclass(c, sp.Function) and c.nargs == {1})
    assert codec.loads(codec.dumps(body)) == body


def test_a_warm_start_gives_the_fresh_result(cache_dir):
    cache_faults.run()
    first = cache.stats["hits"]
    warm = cache_faults.run()
    assert cache.stats["hits"] > first and warm == fresh_outputs()
    assert all(np.isfinite(np.frombuffer(a)).all() for a in warm)
