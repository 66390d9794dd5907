"""The ``symgrad`` command line (also ``python -m symgrad``).

    symgrad emit MODEL_SCRIPT --target python|llvm-ir|object|shared|wasm -o PATH [--name NAME]
                 [--triple TRIPLE] [--max-batch ROWS] [--no-epoch] [--size]

MODEL_SCRIPT is a Python file run as a module named ``__symgrad_emit__`` (so its
``if __name__ == "__main__":`` block does not run). It defines the model as a
variable (default ``model``) or a function taking no arguments that returns it
(default ``build_model``); ``--name`` picks another one. The model must be
compiled (``model.compile(...)``); a function from ``symgrad.compile`` works too.
``--triple`` writes the native library for another CPU, ``--max-batch`` its static
variant (no allocator), ``--no-epoch`` leaves ``PREFIX_train_epoch`` out of a C
library (less code, a static arena sized for the training step), ``--size`` prints the code size of the library and of each
function, so one can see whether it fits a microcontroller's flash.
Errors print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from symgrad.compiler import CompiledFunction
from symgrad.emission.writer import CPUS, TARGETS, code_sizes, emit
from symgrad.nn.models import Sequential

DEFAULT_NAMES = ("model", "build_model")


class UsageError(Exception):
    """A problem with the command line or the script: exit status 2."""


def load_source(script: str, name: str | None):
    """The model (or compiled function) that ``script`` defines under ``name``."""
    path = Path(script)
    if not path.is_file():
        raise UsageError(f"MODEL_SCRIPT {script!r} is not a file")
    sys.path.insert(0, str(path.resolve().parent))  # its own imports, as `python script.py`
    try:
        namespace = runpy.run_path(str(path), run_name="__symgrad_emit__")
    except Exception as err:
        raise UsageError(f"{script} raised {type(err).__name__}: {err}") from err
    finally:
        sys.path.pop(0)
    names = [name] if name else DEFAULT_NAMES
    found = next((n for n in names if n in namespace), None)
    if found is None:
        wanted = " or ".join(repr(n) for n in names)
        raise UsageError(f"{script} defines no {wanted}; choose the variable with --name")
    value = namespace[found]
    if callable(value) and not isinstance(value, (Sequential, CompiledFunction)):  # a factory
        try:
            value = value()
        except Exception as err:
            raise UsageError(f"{script}: {found}() raised {type(err).__name__}: {err}") from err
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="symgrad", description="symgrad: a symbolic differentiation compiler."
    )
    commands = p.add_subparsers(dest="command", required=True)
    e = commands.add_parser(
        "emit",
        help="write a model's derived training code as a standalone file",
        description="Write a compiled model's training code as a NumPy-only Python module, "
        "LLVM IR, an object file or a shared library with a C header.",
    )
    e.add_argument("script", metavar="MODEL_SCRIPT", help="Python file defining the model")
    e.add_argument("--target", required=True, choices=list(TARGETS), help="what to write")
    e.add_argument("-o", "--output", required=True, metavar="PATH", help="the file to write")
    e.add_argument(
        "--name", help="variable or function of MODEL_SCRIPT (default: model, then build_model)"
    )
    e.add_argument(
        "--weights", action="store_true", help="python: also write the weights to PATH's .npz"
    )
    e.add_argument("--prefix", help="C name prefix and header name (default: from PATH)")
    e.add_argument("--cpu", choices=CPUS, default="host", help="native targets: tune for")
    e.add_argument("--triple", help="native targets: another CPU, e.g. aarch64-linux-gnu")
    e.add_argument(
        "--max-batch",
        type=int,
        metavar="ROWS",
        help="native targets: the static variant, no allocator, arena for ROWS rows",
    )
    e.add_argument(
        "--no-epoch",
        dest="epoch",
        action="store_false",
        help="C targets: no PREFIX_train_epoch (less code; the static arena fits the step)",
    )
    e.add_argument(
        "--size", action="store_true", help="print the code size of the library and functions"
    )
    return p


def size_table(rows, title: str) -> list[str]:
    """The lines ``--size`` prints: bytes of code, constants, data and zeroed RAM."""
    width = max(len(name) for name, _ in rows)
    lines = [title, f"{'':<{width}}  {'code':>8}  {'rodata':>8}  {'data':>8}  {'bss':>8}"]
    for name, s in rows:
        lines.append(
            f"{name:<{width}}  {s['code']:>8}  {s['rodata']:>8}  {s['data']:>8}  {s['bss']:>8}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # usage errors exit with status 2
    try:
        source = load_source(args.script, args.name)
        written = emit(
            source,
            args.output,
            args.target,
            weights=args.weights,
            prefix=args.prefix,
            cpu=args.cpu,
            triple=args.triple,
            max_batch=args.max_batch,
            epoch=args.epoch,
        )
        sizes = None
        if args.size:
            sizes = code_sizes(
                source,
                args.output,
                args.target,
                prefix=args.prefix,
                cpu=args.cpu,
                triple=args.triple,
                max_batch=args.max_batch,
                epoch=args.epoch,
            )
    except (UsageError, ValueError, TypeError, RuntimeError, OSError) as err:
        print(f"symgrad emit: error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    if sizes:
        where = args.triple or ("wasm32" if args.target == "wasm" else f"this machine ({args.cpu})")
        for line in size_table(sizes, f"code size in bytes, {where}:"):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
