"""codegen.numpy.pyformat: exact layouts for the line shapes generated code has."""

from __future__ import annotations

import subprocess
import sys

import pytest

import symgrad
from codegen.numpy.pyformat import LINE_LENGTH, ruff_stable, wrap_long_lines
from symgrad.layers import Dense
from symgrad.models import Sequential
from tests.emit.helpers import ROOT

CASES = [
    # quotes and powers
    (
        "f('a', 'b\"c', x ** 2, (a + b) ** 2, x**-y, f(x) ** 2)\n",
        'f("a", \'b"c\', x**2, (a + b) ** 2, x**-y, f(x) ** 2)\n',
    ),
    ("g(**kwargs)\nh = {**a, **b}\n", "g(**kwargs)\nh = {**a, **b}\n"),
    # a call that does not fit: its arguments on one line, then one per line
    (
        "result = function_name(" + ", ".join(f"argument_{k}" for k in range(7)) + ")\n",
        "result = function_name(\n    " + ", ".join(f"argument_{k}" for k in range(7)) + "\n)\n",
    ),
    (
        "def f(" + ", ".join(f"argument_number_{k}" for k in range(6)) + "):\n    pass\n",
        "def f(\n" + "".join(f"    argument_number_{k},\n" for k in range(6)) + "):\n    pass\n",
    ),
    # a literal that does not fit: one item per line
    (
        "x = {" + ", ".join(f'"key_{k}": value_{k}' for k in range(7)) + "}\n",
        "x = {\n" + "".join(f'    "key_{k}": value_{k},\n' for k in range(7)) + "}\n",
    ),
    # a boolean condition: one operand per line, led by the operator
    (
        "if not (\n    aaaaaaaaaaaaaaaa is b and ccccccccccccccccccc == (n, 64) and ddddddddddddddddd is e\n"
        "    and fffffffffffffffffffffff.flags.carray\n):\n    pass\n",
        "if not (\n    aaaaaaaaaaaaaaaa is b\n    and ccccccccccccccccccc == (n, 64)\n"
        "    and ddddddddddddddddd is e\n    and fffffffffffffffffffffff.flags.carray\n):\n    pass\n",
    ),
    # a trailing comment that makes the line too long moves above it
    (
        "def f():\n    value_new = value  # " + "c" * 90 + "\n",
        "def f():\n    # " + "c" * 90 + "\n    value_new = value\n",
    ),
    # short wrapped code is joined; magic trailing commas and docstrings stay
    ("x = f(\n    a,\n    b\n)\n", "x = f(a, b)\n"),
    ("x = f(\n    a,\n    b,\n)\n", "x = f(\n    a,\n    b,\n)\n"),
    (
        'def f():\n    """' + "d" + " d" * 59 + '"""\n',
        'def f():\n    """' + "d" + " d" * 59 + '"""\n',
    ),
    # a right-hand side with several operators of one kind: wrapped in parentheses first
    (
        "def f():\n    total[0, 0] = "
        + " + ".join(f"t{k}_long_name[0, 0]" for k in range(7))
        + "\n",
        "def f():\n    total[0, 0] = (\n"
        + "".join(f"        {'+ ' if k else ''}t{k}_long_name[0, 0]\n" for k in range(7))
        + "    )\n",
    ),
    (
        "def f():\n    n = X_long_input_name.shape[0] if type(X_long_input_name) is ndarray and "
        "X_long_input_name.ndim == 2 else -1\n",
        "def f():\n    n = (\n        X_long_input_name.shape[0]\n"
        "        if type(X_long_input_name) is ndarray and X_long_input_name.ndim == 2\n"
        "        else -1\n    )\n",
    ),
    (
        "def f():\n    return " + " * ".join(c * 35 for c in "abc") + "\n",
        "def f():\n    return (\n"
        + "".join(f"        {'* ' if c != 'a' else ''}{c * 35}\n" for c in "abc")
        + "    )\n",
    ),
    # one operator and a last bracket whose opening fits: split at the bracket
    (
        "def f():\n    value = " + "a" * 20 + " + function(" + "b" * 42 + ", " + "c" * 31 + ")\n",
        "def f():\n    value = "
        + "a" * 20
        + " + function(\n        "
        + "b" * 42
        + ", "
        + "c" * 31
        + "\n    )\n",
    ),
    # a comment line that does not fit continues as comment lines (after a `*`, before a `+`)
    (
        "def f():\n    # w_new = w - " + "m_hat*" * 14 + "lr/(sqrt(v_hat) + epsilon)\n    pass\n",
        "def f():\n    # w_new = w - "
        + "m_hat*" * 13
        + "\n    #     m_hat*lr/(sqrt(v_hat) + epsilon)\n"
        "    pass\n",
    ),
    (
        "def f():\n    # total = "
        + " + ".join(f"sum(d_weight_{k})" for k in range(6))
        + "\n    pass\n",
        "def f():\n    # total = "
        + " + ".join(f"sum(d_weight_{k})" for k in range(4))
        + "\n    #     + sum(d_weight_4) + sum(d_weight_5)\n    pass\n",
    ),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_layout(source, expected):
    assert ruff_stable(source) == expected
    assert ruff_stable(expected) == expected  # idempotent


def test_the_expected_layouts_are_what_ruff_leaves(tmp_path):
    ruff = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True)
    if ruff.returncode:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    files = []
    for k, (_, expected) in enumerate(CASES):
        files.append(tmp_path / f"case_{k}.py")
        files[-1].write_text(expected)
    config = str(ROOT / "pyproject.toml")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--check",
            "--diff",
            "--config",
            config,
            *map(str, files),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_wrap_long_lines_leaves_short_lines_alone():
    short = "x = f('a', y ** 2)  # quotes and spacing as generated\n"
    long = "result = function_name(" + ", ".join(f"'argument_{k}'" for k in range(7)) + ")\n"
    wrapped = wrap_long_lines(short + long)
    assert wrapped.startswith(short)
    assert wrapped[len(short) :] == (
        "result = function_name(\n    " + ", ".join(f"'argument_{k}'" for k in range(7)) + "\n)\n"
    )


def test_a_call_after_a_long_target_goes_in_parentheses_as_ruff_writes_it():
    """``x[0, 0] = f(...)`` whose ``x[0, 0] = f(`` does not fit: ruff's layout (the call
    inside ``(`` / ``)``), which the wrapper must match; a chain of targets is left alone."""
    target = "new_" + "w" * 76 + "[0, 0]"
    line = f"    {target} = add_reduce({'a' * 50}_new, axis=None)\n"
    assert wrap_long_lines(line) == (
        f"    {target} = (\n        add_reduce({'a' * 50}_new, axis=None)\n    )\n"
    )
    assert ruff_stable(f"def f():\n{line}") == f"def f():\n{wrap_long_lines(line)}"
    chain = f"    work = {'b' * 80}[(n,)] = (t0, t1)\n"
    assert compile(wrap_long_lines(chain).strip(), "chain", "exec")


def _model(depth: int, name: str) -> Sequential:
    layers = [Dense(7, activation="relu", input_dim=5, name=f"{name}_0")]
    layers += [Dense(6, activation="tanh", name=f"{name}_{k}") for k in range(1, depth)]
    model = Sequential([*layers, Dense(3, activation="softmax", name=f"{name}_output")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", seed=0)
    return model


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("name", ["d", "a_dense_layer_whose_name_is_rather_long_" + "x" * 12])
def test_generated_lines_fit_and_the_text_is_deterministic(depth, name, tmp_path):
    """Every line of the NumPy step and of the emitted module within the line length (but
    the rows of the model summary, a table), the module ruff-clean and ruff-formatted."""
    model = _model(depth, name)
    step = model.step_source()
    symgrad.emit(model, tmp_path / "model.py")
    module = (tmp_path / "model.py").read_text()
    summary: list[str] = []
    model.summary(print_fn=summary.append)
    table = set("\n".join(summary).splitlines())
    for label, text in (("step", step), ("module", module)):
        long = [row for row in text.splitlines() if len(row) > LINE_LENGTH and row not in table]
        assert not long, f"{label}: {len(long)} lines over {LINE_LENGTH}, first: {long[0]!r}"
    _ruff_clean(tmp_path / "model.py")
    again = _model(depth, name)
    assert again.step_source() == step
    symgrad.emit(again, tmp_path / "again.py")
    assert (tmp_path / "again.py").read_text() == module


def _ruff_clean(path) -> None:
    if subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    config = str(ROOT / "pyproject.toml")
    for args in (["check"], ["format", "--check", "--diff"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--config", config, str(path)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
