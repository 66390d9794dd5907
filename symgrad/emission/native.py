"""symgrad.emission.native: a model's programs as a native library's C functions and header.

``codegen.llvm.emit`` turns IR programs into LLVM IR, object code and a header;
this module names the model's three programs for C and documents them:

    PREFIX_forward(n, X, weights..., P, workspace)
    PREFIX_loss_and_gradients(n, X, Y, weights..., loss, d_weights..., workspace)
    PREFIX_train_step(n, X, Y, weights..., slots..., hyperparameters..., t, loss[, P], workspace)
    PREFIX_train_epoch(rows, batch_size, X, Y, order, weights..., slots..., hyperparameters...,
                       steps_before, loss, steps, workspace)   (``EPOCH_DOC``; one X and Y)

and adds macros for the dimensions, the sizes of weights and slots (in the
order of the arguments) and the hyperparameters the model was compiled with.
"""

from __future__ import annotations

from codegen.ir import Program
from codegen.llvm.emit import CFunction
from codegen.names import c_double, c_identifier
from symgrad.emission.python import ModelSource

KERNELS = (
    ("forward", "predict", "The forward pass: P, the model output for the n rows of X."),
    (
        "loss_and_gradients",
        "gradients",
        "The mean loss over the n rows of (X, Y) and its gradient for each weight.",
    ),
    (
        "train_step",
        "train",
        "One training step on the batch (X, Y): forward pass, loss, gradients and the\n"
        "optimizer update, written into the weights and the optimizer slots in place.\n"
        "t is the 1-based step number (1 on the first call). loss is the batch's mean\n"
        "loss before the update. Nothing is written when the call returns k > 0: 1 when the\n"
        "loss is nan or inf, 2 when a gradient is, 3 and up when a new weight or slot would\n"
        "be (a nan or huge rate, negative slots, t = 0), one code per weight and slot:",
    ),
)

EPOCH_DOC = (
    "A whole training epoch in one call; the weights and slots are updated in place\n"
    "after each step."
)


def without_epoch(epoch: str, step: str) -> str:
    """The header's note on a library emitted with ``epoch=False``: ``epoch`` is not declared
    (a call is a compile or link error, not a status at run time)."""
    return (
        f"Emitted without the epoch function (epoch=False, --no-epoch): {epoch} is\n"
        f"not in this library, and its static arena, if any, is sized for the functions\n"
        f"below. Train with one {step} call per batch."
    )


def model_functions(m: ModelSource, prefix: str) -> list[CFunction]:
    notes = {w.symbol: f"weight {w.path}" for w in m.weights}
    notes.update({s.symbol: f"optimizer slot {s.path}" for s in m.slots})
    notes.update({f"d_{w.symbol}": f"dL/d {w.path}" for w in m.weights})
    notes.update({k: f"default {prefix.upper()}_{k.upper()}" for k in m.hyperparameters})
    notes.update({"t": "step number, 1-based", "Y": "targets, one-hot rows for cross-entropy"})
    for name, dim, _ in m.inputs:  # several inputs: one pointer each
        notes[f"X_{name}"] = f"input {name!r}, {dim} column(s)"
    for name, dim, loss in m.outputs:
        notes[f"Y_{name}"] = f"targets of output {name!r} ({loss}), {dim} column(s)"
        notes[f"P_{name}"] = f"output {name!r}, {dim} column(s)"
    functions = []
    for suffix, attribute, doc in KERNELS:
        program: Program = getattr(m, attribute)
        functions.append(CFunction(f"{prefix}_{suffix}", program, doc, notes))
    return functions


def model_defines(m: ModelSource, prefix: str) -> list[tuple[str, str, str]]:
    p = prefix.upper()
    sizes = ", ".join(str(w.shape[0] * w.shape[1]) for w in m.weights)
    slot_sizes = ", ".join(str(s.shape[0] * s.shape[1]) for s in m.slots)
    initial = ", ".join(c_double(s.initial, f"initial value of slot {s.path}") for s in m.slots)
    defines = [
        (f"{p}_INPUT_DIM", str(m.input_dim), "columns of X (of all the inputs together)"),
        *(
            (f"{p}_INPUT_{c_identifier(name).upper()}_DIM", str(dim), f"columns of X_{name}")
            for name, dim, _ in m.inputs
        ),
        (f"{p}_OUTPUT_DIM", str(m.output_dim), "columns of P and Y (of all the outputs)"),
        *(
            (f"{p}_OUTPUT_{c_identifier(name).upper()}_DIM", str(dim), f"columns of P_{name}")
            for name, dim, _ in m.outputs
        ),
        (f"{p}_N_WEIGHTS", str(len(m.weights)), "weight arrays, in argument order"),
        (f"{p}_WEIGHT_SIZES", "{" + sizes + "}", "entries of each weight"),
        (f"{p}_N_SLOTS", str(len(m.slots)), "optimizer slot arrays, in argument order"),
    ]
    if m.slots:
        defines += [
            (f"{p}_SLOT_SIZES", "{" + slot_sizes + "}", "entries of each slot"),
            (f"{p}_SLOT_INITIAL_VALUES", "{" + initial + "}", "what each slot starts from"),
        ]
    for name, value in m.hyperparameters.items():
        defines.append(
            (
                f"{p}_{c_identifier(name).upper()}",
                c_double(value, f"hyperparameter {name}"),
                "hyperparameter",
            )
        )
    return defines


def model_header_doc(m: ModelSource) -> str:
    lines = [
        f'The training code of the symgrad model "{m.name}" ({m.dtype}), as C functions.',
        "",
        *m.summary.splitlines(),
        "",
        *_target_lines(m),
        f"Optimizer: {m.optimizer}, per weight entry w with gradient g:",
        *(f"    {slot} <- {rule}" for slot, rule in m.rules.items()),
        "",
        "Gradients of the loss, dL/dW for each weight W:",
        *(f"    {path}: {formula}" for path, formula in m.gradient_formulas.items()),
    ]
    return "\n".join(lines)  # codegen.llvm.emit escapes it (codegen.names.c_comment)


def function_c(program: Program, prefix: str, formulas: dict[str, str]) -> CFunction:
    """One compiled function as ``PREFIX_NAME``."""
    doc = f"{program.name}, compiled by symgrad:\n" + "\n".join(
        f"    {name} = {formula}" for name, formula in formulas.items()
    )
    return CFunction(f"{prefix}_{c_identifier(program.name)}", program, doc)


def _target_lines(m: ModelSource) -> list[str]:
    """What the targets are, for the header: of the one output, or of each output."""
    if not m.outputs:
        return [
            f"Loss: {m.loss}. Y: the targets as the training step takes them,",
            _rows(m.loss, m.output_dim) + ".",
        ]
    lines = ["Loss: the sum of each output's loss (times its loss weight). Targets:"]
    lines += [f"    Y_{name}: {loss}, {_rows(loss, dim)}" for name, dim, loss in m.outputs]
    return lines


def _rows(loss: str, columns: int) -> str:
    if "categorical" in loss:
        return "one-hot rows (turn integer class labels into one-hot rows first)"
    return f"(n, {columns}) rows"
