"""codegen.numpy.pyformat: exact layouts for the line shapes generated code has."""

from __future__ import annotations

import subprocess
import sys

import pytest

from codegen.numpy.pyformat import ruff_stable
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
