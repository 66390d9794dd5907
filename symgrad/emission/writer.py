"""symgrad.emission.writer: ``symgrad.emit`` -- a model's derived code as files that need no symgrad.

    >>> symgrad.emit(model, "digits_model.py", weights=True)  # doctest: +SKIP
    >>> symgrad.emit(model, "build/libdigits.so", target="shared")  # doctest: +SKIP

Targets (``TARGETS``):

- ``python``: one ``.py`` file that imports only NumPy and the standard library:
  ``forward``, ``loss_and_gradients``, ``train_step``, ``fit`` and a weights loader
  around the generated NumPy code (``symgrad.emission.python``). ``weights=True`` also
  writes the weights and optimizer state to ``path.with_suffix(".npz")``.
- ``llvm-ir``: the LLVM IR text of the native library (``codegen.llvm.emit``).
- ``object``: an object file for the host CPU (``cpu="generic"``: the baseline
  instruction set of its architecture), plus the C header ``PREFIX.h``.
- ``shared``: a shared library linked with the system C compiler, plus ``PREFIX.h``.
- ``wasm``: a WebAssembly module linked with ``wasm-ld`` (Debian's ``lld``) and the ES
  module ``path.with_suffix(".js")`` that loads and runs it (``symgrad.emission.wasm``).

``triple`` (``object``, ``shared``, ``llvm-ir``) writes the library for another CPU
(``codegen.llvm.targets.TRIPLES``); ``max_batch`` writes the static variant that needs
no allocator: a NULL workspace means an arena sized at emission for that many rows.
The header is the same for every triple. ``epoch=False`` (C targets) leaves out
``PREFIX_train_epoch``: less code, and a static arena sized for the training step.

The same model gives byte-identical ``.py`` and ``.ll`` files. Each file is
written to a temporary file in its directory and renamed into place once all
files were generated, so a failure leaves no half-written file behind.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codegen.backends import BACKENDS, target_backend
from codegen.files import write_all_atomic
from symgrad.compiler import CompiledFunction
from symgrad.core.printing import FormulaStrPrinter
from symgrad.expr import ProbabilitySymbol
from symgrad.nn.functional import Functional, SeparatePrograms
from symgrad.nn.models import Model

if TYPE_CHECKING:  # codegen is imported on first use: symgrad's import must not need it
    from symgrad.emission.python import ModelSource

# target -> what it writes; each backend names the targets written from its code
TARGETS = {target: what for b in BACKENDS.values() for target, what in b.targets.items()}
CPUS = tuple(dict.fromkeys(cpu for b in BACKENDS.values() for cpu in b.cpus))
C_TARGETS = ("llvm-ir", "object", "shared")
"""The targets written as C functions: one pointer per input and output of a model with several
(the Python module and the ES module take the packed rows, and split and join them)."""


def emit(
    source: Model | CompiledFunction,
    path: str | os.PathLike,
    target: str = "python",
    *,
    weights: bool = False,
    prefix: str | None = None,
    cpu: str = "host",
    triple: str | None = None,
    max_batch: int | None = None,
    epoch: bool = True,
) -> list[Path]:
    """Write ``source`` (a compiled model or ``symgrad.compile`` function) as a standalone file.

    ``prefix`` names the C functions (``PREFIX_train_step``) and the header
    (``PREFIX.h``, next to ``path``); default: the file name without suffix and
    without a leading ``lib``. ``cpu`` (native targets): ``"host"`` tunes for
    this machine, ``"generic"`` keeps to the architecture's baseline. ``triple``: another
    CPU (``"aarch64-linux-gnu"``, ``"thumbv7em-none-eabihf"``, ...: its baseline is used).
    ``max_batch``: the static variant (no allocator; the arena holds that many rows).
    ``epoch=False`` (``object``, ``shared``, ``llvm-ir``): no ``PREFIX_train_epoch`` in the
    library nor in the header, so its code is left out and the static arena is the largest
    workspace of the other functions (the training step's) instead of the epoch's.
    Returns the paths written, ``path`` first.

        >>> emit(model, "digits_model.py", weights=True)  # doctest: +SKIP
        [PosixPath('digits_model.py'), PosixPath('digits_model.npz')]
    """
    writes = target_backend(target).name  # raises for an unknown target, listing the known ones
    if cpu not in CPUS:
        raise ValueError(f"cpu must be one of {CPUS}. Received: cpu={cpu!r}")
    native = _native_options(target, cpu, triple, max_batch, epoch)
    path = Path(path)
    _check_destination(path)
    prefix = _c_prefix(path, prefix) if target != "python" else ""
    if isinstance(source, CompiledFunction):
        if weights:
            raise ValueError("weights=True needs a model; a compiled function has no weights")
        files = FUNCTION_FILES[writes](source, path, target, prefix, native)
    elif isinstance(source, Model):
        model = model_source(source, separate=target in C_TARGETS)
        if weights and target != "python":
            raise ValueError(
                f"weights=True writes an .npz for the Python target; received target={target!r}"
            )
        files = MODEL_FILES[writes](source, model, path, target, prefix, native, weights)
    else:
        raise TypeError(
            "emit takes a compiled symgrad model (Sequential or Model) or a function "
            f"from symgrad.compile. Received: {type(source).__name__} {source!r:.80}"
        )
    write_all_atomic(files)
    return [p for p, _, _ in files]


@dataclass(frozen=True)
class Native:
    """How a native target is generated: host CPU tuning, or another CPU; static arena."""

    cpu: str = "host"
    arch: object = None  # codegen.llvm.targets.Arch, None for this machine
    max_batch: int | None = None
    epoch: bool = True  # a model's library has PREFIX_train_epoch


def _native_options(target: str, cpu: str, triple: str | None, max_batch, epoch=True) -> Native:
    if not isinstance(epoch, bool):
        raise TypeError(f"epoch must be True or False; Received: epoch={epoch!r}")
    if not epoch and target not in C_TARGETS:
        raise ValueError(
            f"epoch=False leaves the epoch function out of a C library ({', '.join(C_TARGETS)}); "
            f"target={target!r} "
            + ("needs it (the ES module's fit calls it)" if target == "wasm" else "has none")
            + ". Received: epoch=False"
        )
    if target == "python":
        for name, value in (("triple", triple), ("max_batch", max_batch)):
            if value is not None:
                raise ValueError(f"{name} is for the native targets; Received: {name}={value!r}")
        return Native(cpu)
    from codegen.llvm.targets import arch

    if target == "wasm":
        if triple not in (None, "wasm32"):
            raise ValueError(f"target='wasm' is for wasm32; Received: triple={triple!r}")
        triple = "wasm32"
    elif triple == "wasm32":
        raise ValueError("write WebAssembly with target='wasm'; Received: triple='wasm32'")
    found = None if triple is None else arch(triple)  # lists the known triples
    if found is not None and cpu != "host":
        raise ValueError(
            f"cpu is for this machine; triple={triple!r} is generated for its baseline "
            f"{found.cpu!r}. Received: cpu={cpu!r}"
        )
    if max_batch is not None and (
        isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
    ):
        raise ValueError(f"max_batch must be a positive integer; Received: max_batch={max_batch!r}")
    return Native(cpu, found, max_batch, epoch)


def _c_prefix(path: Path, prefix: str | None) -> str:
    """``prefix``, or the file name without suffixes and a leading ``lib`` as a C identifier;
    checked (``codegen.names.check_c_prefix``): no system header is shadowed by PREFIX.h."""
    from codegen.names import c_identifier, check_c_prefix

    if prefix is None:
        stem = path.name.split(".")[0]
        prefix = c_identifier(stem[3:] if stem.startswith("lib") and len(stem) > 3 else stem)
    return check_c_prefix(prefix)


def _check_destination(path: Path) -> None:
    parent = path.parent
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise FileNotFoundError(f"cannot write {path}: the directory {parent} {what}")


def code_sizes(
    source: Model | CompiledFunction,
    path: str | os.PathLike,
    target: str = "object",
    *,
    prefix: str | None = None,
    cpu: str = "host",
    triple: str | None = None,
    max_batch: int | None = None,
    epoch: bool = True,
) -> list[tuple[str, dict[str, int]]]:
    """The object code ``emit(source, path, target, triple=...)`` writes, measured: the whole
    library first, then each C function alone (with the kernels and math it uses), as
    ``(name, codegen.llvm.emit.code_size(...))``. Shared libraries and wasm modules add a
    little linker overhead to these object sizes.

        >>> code_sizes(model, "digits.o", triple="thumbv7em-none-eabihf", max_batch=32)  # doctest: +SKIP
        [('library', {'code': 18008, ...}), ('digits_forward', {...}), ...]
    """
    from codegen.llvm.emit import code_size, library_ir, object_code
    from symgrad.emission.native import function_c, model_functions

    if target not in ("object", "shared", "wasm"):
        raise ValueError(
            f"sizes are measured for object, shared and wasm; Received: target={target!r}"
        )
    native = _native_options(target, cpu, triple, max_batch, epoch)
    prefix = _c_prefix(Path(path), prefix)
    if isinstance(source, CompiledFunction):
        functions = [function_c(source.program, prefix, _formula_text(source))]
    else:
        functions = model_functions(model_source(source, target in C_TARGETS), prefix)

    epochs = model_epochs(functions) if len(functions) > 1 and native.epoch else ()

    def measured(selection, epochs=()) -> dict[str, int]:
        text = library_ir(
            selection, cpu=native.cpu, arch=native.arch, max_batch=native.max_batch, epochs=epochs
        )
        return code_size(object_code(text, cpu=native.cpu, arch=native.arch))

    rows = [("library", measured(functions, epochs))]
    if len(functions) > 1:
        rows += [(f.name, measured([f])) for f in functions]
    rows += [(e.name, measured([f for f in functions if f.name == e.step], (e,))) for e in epochs]
    return rows


def model_epochs(functions) -> tuple:
    """The epoch function of a model's library: it loops the training step (the last of
    ``model_functions``), named ``PREFIX_train_epoch``; none for a model whose C functions
    take several inputs or outputs (the epoch gathers the rows of one X and one Y)."""
    from codegen.llvm.emit import EpochFunction
    from symgrad.emission.native import EPOCH_DOC

    step = functions[-1]
    if not {"X", "Y"} <= {v.name for v in step.program.inputs}:
        return ()
    return (EpochFunction(step.name.removesuffix("_step") + "_epoch", step.name, doc=EPOCH_DOC),)


# --------------------------------------------------------------------------
# What a model is made of


def model_source(model: Model, separate: bool = False) -> ModelSource:
    """Everything the emitted files say about ``model`` (compiled, built).

    ``separate``: a model with several inputs or outputs gets programs with one
    argument per input and output (the C functions), else the packed rows
    ``X = [X_a | X_b]``, ``Y = [Y_a | Y_b]``, ``P = [P_a | P_b]`` the trainer runs.
    """
    from symgrad.emission.python import ModelSource, Weight, target_note

    if not model.compiled:
        raise RuntimeError(
            f"emit needs a compiled model: call model.compile(optimizer=..., loss=...) "
            f"on {model.name!r} first"
        )
    if not model.built:
        raise ValueError(
            f"emit needs a built model: {model.name!r} does not know its input size yet; "
            "pass input_dim to the first layer or call model.build(input_dim=...)"
        )
    optimizer = model.optimizer
    if callable(getattr(optimizer, "learning_rate", None)) and not optimizer.compiled_schedule():
        raise ValueError(
            "emit cannot write a learning rate given as a Python function; use a schedule of "
            "symgrad.optimizers.schedules (compiled into the step) or set a number, e.g. "
            "model.optimizer.learning_rate = 0.001"
        )
    model._train_step()  # compiles, creates the optimizer slots
    programs = model._programs()
    inputs, outputs = _inputs_and_outputs(model)
    if separate and (len(inputs) > 1 or len(outputs) > 1):
        programs = SeparatePrograms(model, programs)
    step = programs.train_step()
    train = step.function
    trainable = programs.graph.trainable  # as of compile, like the step
    scalars = {str(s) for s in train.program.scalars}
    hyperparameters = {
        k: float(v) for k, v in optimizer.hyperparameter_values().items() if k in scalars
    }
    slot_of = {id(var): key for key, var in optimizer.slots.items()}
    slots = []
    for var in step.slots:
        weight, slot = slot_of[id(var)]
        initial = float(optimizer.slot_initial_value(slot))
        slots.append(Weight(var.path, var.symbol.name, var.matrix_shape, weight, initial))
    summary: list[str] = []
    model.summary(print_fn=summary.append)
    rules = {("w" if k == "variable" else k): v for k, v in optimizer.rule_text().items()}
    return ModelSource(
        name=model.name,
        summary="\n".join(summary),
        dtype=model.dtype,
        input_dim=int(model.input_dim),
        input_shape=tuple(int(d) for d in model.input_shape),
        output_dim=int(model.output_dim),
        loss=model.loss.name,
        optimizer=repr(optimizer),
        rules=rules,
        hyperparameters=hyperparameters,
        weights=tuple(
            Weight(w.path, w.symbol.name, w.matrix_shape, trainable=w in trainable)
            for w in model.weights
        ),
        slots=tuple(slots),
        train=train.program,
        predict=programs.predict_step().function.program,
        gradients=programs.gradient_step().function.program,
        forward_formulas=_texts(model.forward_formulas()),
        gradient_formulas=_texts(model.gradient_formulas()),
        label_note=_label_note(model, outputs, target_note),
        inputs=inputs if len(inputs) > 1 else (),
        outputs=outputs if len(outputs) > 1 else (),
    )


def _inputs_and_outputs(model: Model) -> tuple[tuple, tuple]:
    """``((name, columns, sample shape), ...)`` of the inputs, ``((name, columns, loss), ...)``
    of the outputs: several only for a functional model."""
    if not isinstance(model, Functional):
        return (), ()
    losses = getattr(model.loss, "losses", [model.loss] * len(model.outputs))
    return (
        tuple((t.name, int(t.dim), tuple(int(d) for d in t.sample_shape)) for t in model.inputs),
        tuple((t.name, int(t.dim), loss.name) for t, loss in zip(model.outputs, losses)),
    )


def _label_note(model: Model, outputs: tuple, target_note) -> str:
    if len(outputs) <= 1:
        return target_note(model.loss.name, int(model.output_dim))
    notes = [f"Output {name!r}: {target_note(loss, dim)}" for name, dim, loss in outputs]
    return "\n".join(notes)


def weight_arrays(model: Model) -> dict[str, np.ndarray]:
    """Weights and optimizer state under the keys of ``model.save_weights``."""
    return model._weight_file_arrays()


# --------------------------------------------------------------------------
# Files per target: (path, writer(temporary path), permission bits), see codegen.files

Writer = Callable[[str], None]


def _text(text: str) -> Writer:
    return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")


def _bytes(data: bytes) -> Writer:
    return lambda tmp: Path(tmp).write_bytes(data)


def _python_model_files(model, m: ModelSource, path, target, prefix, native, weights):
    from symgrad.emission.python import module_for_model

    files = [(path, _text(module_for_model(m, weights)), 0o666)]
    if weights:
        buffer = io.BytesIO()
        np.savez(buffer, **weight_arrays(model))
        files.append((path.with_suffix(".npz"), _bytes(buffer.getvalue()), 0o666))
    return files


def _native_model_files(model, m: ModelSource, path, target, prefix, native, weights):
    from symgrad.emission.native import (
        model_defines,
        model_functions,
        model_header_doc,
        without_epoch,
    )

    functions = model_functions(m, prefix)
    if target == "wasm":
        return _wasm_files(m, path, prefix, functions, native)
    epochs = model_epochs(functions)
    doc = model_header_doc(m)
    if epochs and not native.epoch:
        doc += "\n\n" + without_epoch(epochs[0].name, functions[-1].name)
        epochs = ()
    header = (functions, doc, model_defines(m, prefix))
    return _native_files(path, target, prefix, native, *header, epochs)


def _wasm_files(m: ModelSource, path: Path, prefix: str, functions, native: Native):
    from codegen.llvm.emit import library_ir, link_wasm, object_code
    from symgrad.emission.wasm import module_text

    (epoch,) = model_epochs(functions)  # the ES module's packed rows: one X, one Y
    text = library_ir(functions, arch=native.arch, epochs=(epoch,))
    obj = object_code(text, arch=native.arch)
    names = [*(f.name for f in functions), epoch.name]
    exports = [name for n in names for name in (n, f"{n}_workspace_size")]

    def link(tmp: str) -> None:
        link_wasm(obj, tmp, exports)

    script = module_text(m, prefix, path.name, functions, epoch.name)
    return [(path, link, 0o666), (path.with_suffix(".js"), _text(script), 0o666)]


def _python_function_files(fn: CompiledFunction, path, target, prefix, native):
    from symgrad.emission.python import module_for_function

    notes = [
        f"{s.name}: rows must be probability vectors (each row >= 0, summing to 1);\n"
        "the derived formulas use rowsum(" + s.name + ") = 1."
        for s in fn.inputs
        if isinstance(s, ProbabilitySymbol)
    ]
    module = module_for_function(fn.program, _formula_text(fn), notes)
    return [(path, _text(module), 0o666)]


def _native_function_files(fn: CompiledFunction, path, target, prefix, native):
    from symgrad.emission.native import function_c

    if target == "wasm":
        raise ValueError("target='wasm' writes models; emit a compiled function as 'object'")
    functions = [function_c(fn.program, prefix, _formula_text(fn))]
    return _native_files(path, target, prefix, native, functions, "", ())


def _formula_text(fn: CompiledFunction) -> dict[str, str]:
    return _texts(fn.formulas)


def _texts(formulas: dict) -> dict[str, str]:
    printer = FormulaStrPrinter()  # one for all: the formulas share their subterms
    return {name: printer.doprint(expr) for name, expr in formulas.items()}


def _native_files(path, target, prefix, native: Native, functions, doc, defines, epochs=()):
    from codegen.llvm.emit import c_header, library_ir, link_shared, object_code

    a = native.arch
    if target == "shared" and a is not None and not a.hosted:
        raise ValueError(
            f"{a.name} has no shared libraries (no operating system); use target='object' "
            "and link it into the firmware image"
        )
    text = library_ir(functions, cpu=native.cpu, arch=a, max_batch=native.max_batch, epochs=epochs)
    if target == "llvm-ir":
        return [(path, _text(text), 0o666)]
    obj = object_code(text, cpu=native.cpu, arch=a)
    header = path.parent / f"{prefix}.h"
    header_text = c_header(
        prefix, functions, doc=doc, defines=defines, max_batch=native.max_batch, epochs=epochs
    )
    header_file = (header, _text(header_text), 0o666)
    if target == "object":
        return [(path, _bytes(obj), 0o666), header_file]

    def link(tmp: str) -> None:
        link_shared(obj, tmp, soname=path.name, arch=a)

    return [(path, link, 0o777), header_file]


# The files of each target, by the backend whose code the target is written from
MODEL_FILES = {"numpy": _python_model_files, "llvm": _native_model_files}
FUNCTION_FILES = {"numpy": _python_function_files, "llvm": _native_function_files}
