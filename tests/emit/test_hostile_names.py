"""Hostile names through every entry that puts a name into generated Python, C or LLVM IR.

Each name of the table is tried as a symbol, scalar, program, layer and model name,
through ``symgrad.compile`` (both backends), ``Sequential`` / ``Dense`` / ``Input``,
``symgrad.emit`` (every target) and ``load_model``. Each either raises a clear error
naming the bad value, or gives code that imports / compiles and computes what the
same graph with plain names computes. The payloads would create a marker file if
any generated text let them out of their comment, docstring or string; it must not
exist afterwards.
"""

from __future__ import annotations

import ast
import ctypes
import importlib.util
import json
import re
import subprocess
import sys

import llvmlite.binding as llvm
import numpy as np
import pytest
import sympy as sp

import symgrad
from codegen.llvm.emit import c_compiler
from codegen.names import (
    c_comment,
    llvm_comment,
    llvm_name,
    python_comment,
    python_docstring,
    python_identifier,
    python_string,
)
from symgrad import expr as E
from symgrad.layers import Dense, Input
from symgrad.models import Sequential, load_model

CC = c_compiler()
BACKENDS = list(symgrad.compiler.BACKENDS)  # every registered backend
P = ctypes.c_void_p


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload in a name was executed"


def hostile(marker) -> dict[str, str]:
    run = f"import os; open({str(marker)!r}, 'w').close()"
    return {
        "quotes": "a'b\"c",
        "triple_quotes": f'x"""\n{run}\n"""',
        "single_triple_quotes": f"x'''\n{run}\n'''",
        "backslashes": "a\\b\\",
        "newline": f"a\n{run}\n",
        "carriage_return": f"a\r{run}#",
        "c_comment_end": "a */ int pwned(void) { return 1; } /*",
        "llvm_lines": 'a\ndefine void @"pwned"() {\n  ret void\n}\n',
        "nul": "a\x00b",
        "unicode": "ｄαβé",
        "line_separator": "a\u2028b\x85c",
        "braces": "a{b}c{{",
        "keyword": "class",
        "builtin": "len",
        "numpy_name": "empty",
        "long": "w" * 5000,
    }


NAMES = list(hostile("/tmp/x"))
SHORT = ("triple_quotes", "newline", "c_comment_end", "llvm_lines", "nul", "unicode", "long")


def table(default=SHORT):
    """NAMES as parameters; those not in ``default`` run with the slow tests (CI runs both)."""
    return [pytest.param(k, marks=() if k in default else pytest.mark.slow) for k in NAMES]


def name_of(kind: str, marker) -> str:
    return hostile(marker)[kind]


# --------------------------------------------------------------------------
# The escapers (codegen.names), one per kind of text and target


@pytest.mark.parametrize("kind", NAMES)
def test_python_text_cannot_escape(kind, marker):
    text = name_of(kind, marker)
    assert ast.literal_eval(python_string(text)) == text
    assert ast.literal_eval(python_string(text, quote='"')) == text
    module = ast.parse(python_docstring(text, "") + "\n")
    assert len(module.body) == 1  # one expression: the docstring, nothing after it
    shown = module.body[0].value.value  # escapes read back as the characters they show
    assert shown.rstrip("\n") == "\n".join(
        line.rstrip(" ") for line in text.strip("\n").split("\n")
    )
    code = "\n".join(python_comment(text)) + "\nx = 1\n"
    assert [type(s) for s in ast.parse(code).body] == [ast.Assign]
    exec(compile(code, "<comment>", "exec"), {})


@pytest.mark.parametrize("kind", NAMES)
def test_c_and_llvm_text_cannot_escape(kind, marker):
    text = name_of(kind, marker)
    for line in c_comment(text):
        assert "*/" not in line and line.isprintable()
    for line in llvm_comment(text):
        assert line.startswith(";") and line.isprintable()
    name = llvm_name(text)
    assert re.fullmatch(r"[A-Za-z0-9_.]{1,200}", name)
    assert llvm_name(text + "x") != name  # distinct names stay distinct


def test_python_identifiers_are_what_python_reads():
    assert python_identifier("ｄ_dense") == "d_dense"  # NFKC, as the tokenizer
    assert python_identifier("a-b") == "a_b" and python_identifier("1x") == "v_1x"
    for kind in NAMES:
        name = python_identifier(hostile("/m")[kind])
        assert name.isidentifier() and len(name) <= 80
        assert ast.parse(f"{name}_ = 1").body[0].targets[0].id == f"{name}_"


# --------------------------------------------------------------------------
# symgrad.compile: symbol, scalar and program names


def _graph(x_name: str, s_name: str):
    n = E.batch()
    X, w = sp.MatrixSymbol(x_name, n, 3), sp.MatrixSymbol("w", 3, 1)
    s = sp.Symbol(s_name, real=True)
    e = sp.Symbol("e")
    loss = E.mean(E.elementwise(sp.Lambda(e, e**2), E.matmul(X, w)))
    g = symgrad.grad(loss, w)
    return [X, w], {"loss": loss, "dw": g}, {w: w - E.scale(s, g)}, [s]


def _run(fn, seed=0):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((5, 3)), rng.standard_normal((3, 1))
    outputs = fn(x, w, 0.1)
    return [np.array(o) for o in outputs] + [w]


def _reference(backend):
    inputs, outputs, updates, scalars = _graph("X", "s")
    fn = symgrad.compile(inputs, outputs, updates=updates, scalars=scalars, backend=backend)
    return _run(fn)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", NAMES)
def test_compile_with_hostile_symbol_names(kind, backend, marker):
    name = name_of(kind, marker)
    inputs, outputs, updates, scalars = _graph(name, "s" + name)
    fn = symgrad.compile(
        inputs, outputs, updates=updates, scalars=scalars, backend=backend, cache=False
    )
    for got, expected in zip(_run(fn), _reference(backend)):
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    if backend == "llvm":
        _check_llvm_names(fn.llvm_ir)
        if kind == "long":
            assert name in fn.llvm_ir  # the readable name stays, in the comments


def _check_llvm_names(text: str) -> None:
    for found in re.findall(r'[%@]"([^"]*)"', text):
        assert re.fullmatch(r"[A-Za-z0-9_.]{1,210}", found), found[:80]  # llvmlite may add .k
    for line in text.splitlines():
        assert line.isprintable()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", NAMES)
def test_compile_with_hostile_program_names(kind, backend, marker):
    name = name_of(kind, marker)
    inputs, outputs, updates, scalars = _graph("X", "s")
    options = dict(updates=updates, scalars=scalars, backend=backend, cache=False, name=name)
    if not name.isidentifier():
        with pytest.raises(ValueError, match="program names must be identifiers") as info:
            symgrad.compile(inputs, outputs, **options)
        assert repr(name)[:40] in str(info.value)
        return
    fn = symgrad.compile(inputs, outputs, **options)
    for got, expected in zip(_run(fn), _reference(backend)):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


# --------------------------------------------------------------------------
# symgrad.emit of a compiled function, every target


def _import(path):
    spec = importlib.util.spec_from_file_location(f"emitted_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", table())
def test_emit_function_with_hostile_names(kind, marker, tmp_path):
    name = name_of(kind, marker)
    inputs, outputs, updates, scalars = _graph(name, "s" + name)
    fn = symgrad.compile(
        inputs, outputs, updates=updates, scalars=scalars, backend="llvm", cache=False
    )
    expected = _reference("numpy")
    symgrad.emit(fn, tmp_path / "function.py")
    module = _import(tmp_path / "function.py")
    for got, want in zip(_run(module.fn), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12)

    lib = _native(fn, tmp_path, "function")
    if lib is None:
        return
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 3)), rng.standard_normal((3, 1))
    loss, dw = np.empty((1, 1)), np.empty((3, 1))
    pointers = [a.ctypes.data_as(P) for a in (x, w)]
    status = lib.function_fn(
        ctypes.c_int64(5), *pointers, ctypes.c_double(0.1), loss.ctypes.data_as(P),
        dw.ctypes.data_as(P), None,
    )  # fmt: skip
    assert status == 0
    for got, want in zip([loss, dw, w], expected):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def _native(source, folder, stem: str):
    """Emit ``source`` as LLVM IR (checked, parsed, verified) and, with a C compiler, as a
    shared library whose header passes ``_syntax_check``: the loaded library, or None."""
    symgrad.emit(source, folder / f"{stem}.ll", target="llvm-ir")
    text = (folder / f"{stem}.ll").read_text()
    _check_llvm_names(text)
    llvm.parse_assembly(text).verify()
    if CC is None:
        return None
    symgrad.emit(source, folder / f"lib{stem}.so", target="shared")
    _syntax_check(folder / f"{stem}.h")
    return ctypes.CDLL(str(folder / f"lib{stem}.so"))


def _syntax_check(header):
    """The header compiles as C11 with every warning an error, and declares nothing else."""
    done = subprocess.run(
        [CC, "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "-x", "c",
         str(header)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[:2000]
    code = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.DOTALL)
    assert not re.search(r"\bpwned\s*\(", code)  # no function but the generated ones


# --------------------------------------------------------------------------
# Models: Sequential, Dense and Input names; emit to every target; load_model


def _model(model_name=None, names=(None, None), input_name=None, backend="numpy"):
    layers = [Input((3,), name=input_name)] if input_name is not None else []
    first = {"input_dim": 3} if input_name is None else {}
    layers += [
        Dense(4, activation="tanh", name=names[0], **first),
        Dense(2, name=names[1]),
    ]
    model = Sequential(layers, name=model_name)
    model.compile(optimizer="adam", loss="mse", backend=backend, seed=0, dtype="float64")
    rng = np.random.default_rng(3)
    model.set_weights([rng.standard_normal(w.shape) for w in model.get_weights()])
    return model


def _data():
    rng = np.random.default_rng(4)
    return rng.standard_normal((12, 3)), rng.standard_normal((12, 2))


def _trained(model):
    x, y = _data()
    model.fit(x, y, epochs=3, batch_size=5, shuffle=False, verbose=0)
    return model.get_weights()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", table(("triple_quotes", "newline", "keyword", "unicode", "long")))
def test_layer_names(kind, backend, marker):
    name = name_of(kind, marker)
    reference = _trained(_model(backend=backend))
    for names, input_name in [((name, None), None), ((None, name), None), ((None, None), name)]:
        if not name.isidentifier():
            with pytest.raises(ValueError, match="Layer names must be Python identifiers") as info:
                _model(names=names, input_name=input_name, backend=backend)
            assert repr(name)[:40] in str(info.value)
            continue
        got = _trained(_model(names=names, input_name=input_name, backend=backend))
        for w, expected in zip(got, reference):
            np.testing.assert_allclose(w, expected, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_names_equal_after_normalization_train_like_distinct_ones(backend):
    """``ｄ_dense`` is ``d_dense`` to Python: it must not meet the gradient ``d_dense``."""
    x, y = _data()
    reference = _trained(_model(names=("e_dense", "dense"), backend=backend))
    for names in [("ｄ_dense", "dense"), ("ｄ_dense", "d_dense"), ("ﬁ", "fi")]:
        got = _trained(_model(names=names, backend=backend))
        for w, expected in zip(got, reference):
            np.testing.assert_allclose(w, expected, rtol=1e-10)


@pytest.mark.parametrize("kind", table(("triple_quotes", "c_comment_end", "llvm_lines", "long")))
def test_emit_model_with_hostile_names(kind, marker, tmp_path):
    name = name_of(kind, marker)
    layer = name if name.isidentifier() else None
    model = _model(model_name=name, names=(layer, None))
    x, y = _data()
    symgrad.emit(model, tmp_path / "model.py", weights=True)
    module = _import(tmp_path / "model.py")
    params, opt_state = module.load_weights()
    losses = module.fit(params, opt_state, x, y, epochs=2, batch_size=5)
    history = model.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    np.testing.assert_allclose(losses, history.history["loss"], rtol=1e-10)

    lib = _native(model, tmp_path, "model")
    if lib is None:
        return
    weights = [np.ascontiguousarray(w) for w in model.get_weights()]
    p = np.empty((len(x), 2))
    args = [x, *weights, p]
    assert (
        lib.model_forward(ctypes.c_int64(len(x)), *(a.ctypes.data_as(P) for a in args), None) == 0
    )
    np.testing.assert_allclose(p, model.predict(x, verbose=0), rtol=1e-12)


def test_load_model_of_a_crafted_file(marker, tmp_path):
    model = _model()
    model.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as f:
        stored = {k: f[k] for k in f.files}
    config = json.loads(str(stored["__config__"]))

    def crafted(**changes):
        for path, value in changes.items():
            target = config
            *head, last = path.split(".")
            for key in head:
                target = target[int(key)] if key.isdigit() else target[key]
            target[last] = value
        stored["__config__"] = np.array(json.dumps(config))
        np.savez(tmp_path / "crafted.npz", **stored)
        return tmp_path / "crafted.npz"

    payload = name_of("triple_quotes", marker)
    loaded = load_model(crafted(name=payload))
    assert loaded.name == payload
    symgrad.emit(loaded, tmp_path / "loaded.py")
    _import(tmp_path / "loaded.py")
    if CC is not None:
        symgrad.emit(loaded, tmp_path / "loaded.o", target="object")
        _syntax_check(tmp_path / "loaded.h")

    with pytest.raises(ValueError, match="Layer names must be Python identifiers"):
        load_model(crafted(**{"name": "m", "layers.0.config.name": payload}))
    with pytest.raises(TypeError, match=r"A model name must be a string.*Received: name=\[1\]"):
        load_model(crafted(**{"name": [1], "layers.0.config.name": "dense"}))


@pytest.mark.parametrize(
    "prefix, problem",
    [
        ("stdint", "shadows the system header <stdint.h>"),
        ("math", "shadows the system header <math.h>"),
        ("a-b", "ASCII C identifier"),
        ("__x", "ASCII C identifier"),
        ("ｄ", "ASCII C identifier"),
        ("x" * 41, "at most 40 characters"),
        ("int", "C keyword"),
    ],
)
def test_c_prefixes_that_cannot_name_a_library(prefix, problem, tmp_path):
    model = _model()
    with pytest.raises(ValueError, match=re.escape(problem)):
        symgrad.emit(model, tmp_path / "lib.o", target="object", prefix=prefix)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=re.escape("stdint")):
        symgrad.emit(model, tmp_path / "libstdint.so", target="shared")  # the default prefix


def test_python_target_takes_any_file_name(tmp_path):
    symgrad.emit(_model(), tmp_path / "stdint.py")
    assert sys.modules.get("stdint") is None
