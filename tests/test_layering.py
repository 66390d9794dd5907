"""Imports point one way, down the pipeline.

core <- diff <- simplify <- formulas <- lower (graphs -> codegen.ir) <- compiler
(backends) <- nn (Keras API) <- emission <- the top-level API.  ``codegen`` imports
nothing of symgrad, and one backend nothing of another.

Every module under ``symgrad/`` and ``codegen/`` is parsed with ``ast`` (never
imported) and its imports, including relative ones, imports inside functions and
``importlib.import_module("...")`` with a literal name, are checked.  Every symgrad
module must belong to a stage of ``STAGES``: a new module cannot escape the check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from codegen import backends as registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("symgrad", "codegen")

# The pipeline, bottom to top: a module may import its own stage and the stages below it.
STAGES = (
    ("core", ("symgrad.core", "symgrad.expr")),
    ("diff", ("symgrad.diff",)),
    ("simplify", ("symgrad.simplify",)),
    ("formulas", ("symgrad.formulas",)),
    ("lower", ("symgrad.lower",)),
    ("compiler", ("symgrad.compiler", "symgrad.environment")),
    (
        "nn",
        (
            "symgrad.nn",
            "symgrad.layers",
            "symgrad.models",
            "symgrad.optimizers",
            "symgrad.losses",
            "symgrad.metrics",
            "symgrad.initializers",
            "symgrad.regularizers",
            "symgrad.callbacks",
            "symgrad.ops",
            "symgrad.utils",
        ),
    ),
    ("emission", ("symgrad.emission",)),
    ("distributed", ("symgrad.distributed",)),  # on Ray; the top-level API never imports it
    ("sklearn", ("symgrad.sklearn",)),  # on scikit-learn; imported only by name
    ("api", ("symgrad", "symgrad.__main__")),
)
# What each symgrad stage may read of codegen: the IR is the boundary; the training API
# gets its backends through the compiler.
CODEGEN_ALLOWED = {
    "core": (),
    "diff": (),
    "simplify": (),
    "formulas": (),
    "lower": ("codegen.ir",),
    "compiler": ("codegen",),
    "nn": ("codegen.files", "codegen.serial"),  # atomic files; formulas in configs
    "emission": ("codegen",),
    "distributed": (),
    "sklearn": (),
    "api": (),
}
# every registered backend's package (the registry imports none of them)
BACKENDS = tuple(b.package for b in registry.BACKENDS.values())


def stage_of(module: str) -> str | None:
    """The pipeline stage of a symgrad module (the longest matching prefix), else None."""
    best, found = -1, None
    for name, prefixes in STAGES:
        for prefix in prefixes:
            if within(module, prefix) and len(prefix) > best:
                best, found = len(prefix), name
    return found


RANK = {name: i for i, (name, _) in enumerate(STAGES)}


def rule_broken(module: str, imported: str) -> str | None:
    """Why ``module`` may not import ``imported``, or None when it may."""
    if within(module, "codegen"):
        if within(imported, "symgrad"):
            return "codegen knows the IR, not symgrad's graphs or training API"
        for backend in BACKENDS:
            other = [b for b in BACKENDS if b != backend]
            if within(module, backend) and any(within(imported, o) for o in other):
                return "a backend does not import another backend"
        return None
    stage = stage_of(module)
    if within(imported, "symgrad"):
        target = stage_of(imported)
        if target is not None and RANK[target] > RANK[stage]:
            return f"the {stage} stage does not import the {target} stage above it"
        return None
    if within(imported, "codegen"):
        if not any(within(imported, a) for a in CODEGEN_ALLOWED[stage]):
            allowed = ", ".join(CODEGEN_ALLOWED[stage]) or "nothing"
            return f"the {stage} stage may import {allowed} of codegen"
    return None


def within(module: str, prefix: str) -> bool:
    """``module`` is ``prefix`` or below it; ``symgrad.trainer`` is not in ``symgrad.nn.trainer``."""
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path) -> tuple[str, bool]:
    """Dotted name of a source file under ROOT, and whether it is a package ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """``(module, line)`` for everything ``source`` imports, relative imports resolved.

    ``from a import b`` yields ``a.b`` (``b`` may be a submodule; if not, ``a.b`` is
    still within ``a``).
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
            # `from a import b` reads a.b (a submodule, or a name inside a): the rules of a
            # apply to it too, so `from codegen import ir` is an import of codegen.ir only
            found += [
                (base if a.name == "*" else f"{base}.{a.name}".lstrip("."), node.lineno)
                for a in node.names
            ]
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
    """One message per import in ``source`` (the text of ``module``) that breaks the layering."""
    messages, reported = [], []
    for imported, line in imported_modules(source, module, is_package):
        if any(line == l and within(imported, m) for m, l in reported):
            continue  # `from symgrad.nn import trainer`: symgrad.nn already named
        why = rule_broken(module, imported)
        if why is not None:
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


def test_every_symgrad_module_has_a_stage():
    unplaced = [
        module_name(path)[0]
        for path in source_files()
        if within(module_name(path)[0], "symgrad") and stage_of(module_name(path)[0]) is None
    ]
    assert not unplaced, f"modules outside every stage of STAGES: {unplaced}"


@pytest.mark.parametrize(
    ("module", "is_package", "source", "imported"),
    [
        ("symgrad.diff", True, "import codegen.ir", "codegen.ir"),
        ("symgrad.expr", False, "from codegen import numpy as np_backend", "codegen.numpy"),
        ("symgrad.diff.rules", False, "from ..nn import trainer", "symgrad.nn.trainer"),
        ("symgrad.diff.sweep", False, "from symgrad.simplify import simplify", "symgrad.simplify"),
        ("symgrad.simplify", True, "from ..losses import cce", "symgrad.losses"),
        ("symgrad.formulas", False, "def f():\n    import codegen.numpy\n", "codegen.numpy"),
        ("symgrad.core.scalar", False, "from .. import callbacks", "symgrad.callbacks"),
        ("symgrad.core.nodes", False, "from symgrad import diff", "symgrad.diff"),
        (
            "symgrad.lower.lowering",
            False,
            "from codegen.numpy import numpy_source",
            "codegen.numpy",
        ),
        ("symgrad.lower", True, "from symgrad.compiler import compile", "symgrad.compiler"),
        (
            "symgrad.nn.trainer",
            False,
            "from codegen.llvm.backend import compile_program",
            "codegen.llvm.backend",
        ),
        ("symgrad.nn.models", False, "from symgrad.emission import emit", "symgrad.emission"),
        ("codegen.numpy", True, "from symgrad.nn.trainer import Trainer", "symgrad.nn.trainer"),
        (
            "codegen.numpy.scalar",
            False,
            "from symgrad.core.scalar import sigmoid",
            "symgrad.core.scalar",
        ),
        ("codegen.llvm", True, "from symgrad import losses", "symgrad.losses"),
        ("codegen.llvm.jit", False, "from symgrad.optimizers import SGD", "symgrad.optimizers"),
        ("codegen.llvm.emit", False, "from codegen.numpy import pyformat", "codegen.numpy"),
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
    assert any(message.startswith(f"{module} imports {imported}") for message in messages), messages


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("symgrad.diff.sweep", "import numpy as np\nimport sympy\nfrom symgrad import core as E\n"),
        ("symgrad.simplify.rebuild", "from ..core import nodes\nfrom . import rewrites\n"),
        (
            "symgrad.formulas",
            "from symgrad.simplify import simplify\nfrom symgrad.diff import derive\n",
        ),
        ("symgrad.lower.lowering", "from codegen import ir\nfrom symgrad.simplify import cost\n"),
        (
            "codegen.numpy.backend",
            "from codegen.ir import Program\nfrom .scalar import lower_body\n",
        ),
        ("codegen.llvm.kernels", "from codegen.ir import Gemm\nfrom codegen import files\n"),
        (
            "symgrad.compiler",
            "from codegen.llvm import compile_program\nfrom symgrad.lower import lower\n",
        ),
        (
            "symgrad.nn.trainer",
            "from symgrad.compiler import compile\nfrom codegen.files import write_atomic\n",
        ),
        (
            "symgrad.emission.writer",
            "import codegen.llvm.emit\nfrom symgrad.nn.models import Sequential\n",
        ),
        (
            "symgrad",
            "from symgrad.emission import emit\nfrom symgrad.nn.models import Sequential\n",
        ),
    ],
)
def test_checker_allows_downward_imports(module, source):
    assert layering_violations(source, module) == []


def test_module_names():
    assert module_name(ROOT / "symgrad" / "__init__.py") == ("symgrad", True)
    assert module_name(ROOT / "codegen" / "llvm" / "jit.py") == ("codegen.llvm.jit", False)
