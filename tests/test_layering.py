"""Imports point one way: symbolic core <- codegen <- training API.

Every module under ``symgrad/`` and ``codegen/`` is parsed with ``ast`` (never
imported) and its imports, including relative ones, imports inside functions
and ``importlib.import_module("...")`` with a literal name, are checked against
``RULES``. Modules that do not exist yet are simply not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("symgrad", "codegen")

CORE = ("symgrad.expr", "symgrad.scalar", "symgrad.diff", "symgrad.simplify", "symgrad.inspect")
TRAINING_API = (
    "symgrad.train",
    "symgrad.nn",
    "symgrad.models",
    "symgrad.layers",
    "symgrad.optimizers",
    "symgrad.losses",
    "symgrad.metrics",
    "symgrad.callbacks",
)
# (modules the rule applies to, modules they must not import, why)
RULES = (
    (CORE, ("codegen",), "the symbolic core never depends on a backend"),
    (CORE, TRAINING_API, "the symbolic core never depends on the training API"),
    (("codegen",), TRAINING_API, "codegen knows the IR, not the training API"),
)


def within(module: str, prefix: str) -> bool:
    """``module`` is ``prefix`` or below it; ``symgrad.trainer`` is not in ``symgrad.train``."""
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path) -> tuple[str, bool]:
    """Dotted name of a source file under ROOT, and whether it is a package ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """``(module, line)`` for everything ``source`` imports, relative imports resolved.

    ``from a import b`` yields both ``a`` and ``a.b`` since ``b`` may be a submodule.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base:
                found.append((base, node.lineno))
            found += [(f"{base}.{a.name}".lstrip("."), node.lineno) for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def layering_violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """One message per import in ``source`` (the text of ``module``) that breaks ``RULES``."""
    messages, reported = [], []
    for imported, line in imported_modules(source, module, is_package):
        if any(line == l and within(imported, m) for m, l in reported):
            continue  # `from symgrad.train import fit`: symgrad.train already named
        for importers, forbidden, why in RULES:
            if any(within(module, p) for p in importers) and any(
                within(imported, f) for f in forbidden
            ):
                messages.append(f"{module} imports {imported} (line {line}): {why}")
                reported.append((imported, line))
    return messages


def source_files() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def test_tree_respects_layering():
    messages = []
    for path in source_files():
        module, is_package = module_name(path)
        messages += layering_violations(path.read_text(encoding="utf-8"), module, is_package)
    assert not messages, "upward imports:\n" + "\n".join(messages)


@pytest.mark.parametrize(
    ("module", "is_package", "source", "imported"),
    [
        ("symgrad.diff", False, "import codegen.ir", "codegen.ir"),
        ("symgrad.expr", False, "from codegen import numpy as np_backend", "codegen"),
        ("symgrad.diff.rules", False, "from ..train import fit", "symgrad.train"),
        ("symgrad.simplify", True, "from ..losses import cce", "symgrad.losses"),
        ("symgrad.inspect", False, "def f():\n    import codegen.numpy\n", "codegen.numpy"),
        ("symgrad.scalar", False, "from . import callbacks", "symgrad.callbacks"),
        ("codegen.numpy", False, "from symgrad.train import Sequential", "symgrad.train"),
        ("codegen.llvm", False, "from symgrad import losses", "symgrad.losses"),
        ("codegen.llvm.jit", False, "from symgrad.optimizers import SGD", "symgrad.optimizers"),
        ("codegen", True, "import symgrad.models.sequential", "symgrad.models.sequential"),
        (
            "codegen.ir",
            False,
            "import importlib\nimportlib.import_module('symgrad.nn')",
            "symgrad.nn",
        ),
    ],
)
def test_checker_flags_upward_imports(module, is_package, source, imported):
    messages = layering_violations(source, module, is_package)
    assert any(message.startswith(f"{module} imports {imported} ") for message in messages), (
        messages
    )


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("symgrad.diff", "import numpy as np\nimport sympy\nfrom symgrad.expr import Map\n"),
        ("symgrad.simplify.cse", "from ..expr import Map\nfrom . import rules\n"),
        ("codegen.numpy", "from codegen.ir import Program\nfrom symgrad.scalar import sigmoid\n"),
        ("codegen.llvm", "from .ir import Program\nfrom symgrad import trainable_flags\n"),
        ("symgrad.train", "from codegen.numpy import compile_program\nfrom .losses import cce\n"),
        ("symgrad.emit", "import codegen.llvm\nfrom symgrad.models import Sequential\n"),
    ],
)
def test_checker_allows_downward_imports(module, source):
    assert layering_violations(source, module) == []


def test_module_names():
    assert module_name(ROOT / "symgrad" / "__init__.py") == ("symgrad", True)
    assert module_name(ROOT / "codegen" / "llvm" / "jit.py") == ("codegen.llvm.jit", False)
