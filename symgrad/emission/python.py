"""symgrad.emission.python: the text of a standalone NumPy module for a model or a compiled function.

The module holds the programs symgrad compiled, printed by ``codegen.numpy``
(``numpy_function``: each statement under its derived formula), one shared
header (imports, dtype, argument checks) and, for a model, a small API around
them written here: ``forward``, ``loss_and_gradients``, ``train_step``, ``fit``,
``prepare_targets``, ``init_opt_state``, ``load_weights`` and ``save_weights``.
The text goes through ``codegen.numpy.pyformat.ruff_stable``, so ``ruff format``
leaves it unchanged; the same model always gives the same bytes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from keyword import iskeyword

from codegen.ir import Program, format_program
from codegen.names import python_docstring, python_identifier, python_string
from codegen.numpy import CHECKS, ERF, module_header, numpy_function
from codegen.numpy.pyformat import ruff_stable, wrap_text


@dataclass(frozen=True)
class Weight:
    """A weight or an optimizer slot: Keras path, symbol name in the programs, shape."""

    path: str
    symbol: str
    shape: tuple[int, int]
    weight: str = ""  # slots: the path of the weight they belong to
    initial: float = 0.0  # slots: the value they start from
    trainable: bool = True  # weights: updated by the training step (else an input only)


@dataclass(frozen=True)
class ModelSource:
    """What the module of a model is written from (collected by ``symgrad.emission.writer``)."""

    name: str
    summary: str
    dtype: str
    input_dim: int
    output_dim: int
    loss: str
    optimizer: str
    rules: dict[str, str]
    hyperparameters: dict[str, float]
    weights: tuple[Weight, ...]
    slots: tuple[Weight, ...]
    train: Program  # train_step(X, Y, weights, slots, scalars) -> loss[, P]
    predict: Program  # predict_step(X, weights) -> P
    gradients: Program  # gradient_step(X, Y, weights) -> loss, d_<weight>...
    forward_formulas: dict[str, str]
    gradient_formulas: dict[str, str]
    label_note: str = ""
    input_shape: tuple[int, ...] = ()  # of one sample, when not (INPUT_DIM,): (H, W, C)...
    # several inputs / outputs: (name, columns, sample shape) / (name, columns, loss name)
    inputs: tuple[tuple[str, int, tuple[int, ...]], ...] = ()
    outputs: tuple[tuple[str, int, str], ...] = ()


KERNEL_DOCS = {
    "forward_kernel": "The forward pass: the model output P for the rows of X.",
    "loss_and_gradients_kernel": "The mean loss over the rows of (X, Y) and its gradient for each weight.",
    "train_step_kernel": "One training step: forward pass, loss, gradients and the optimizer update.",
}


def module_for_model(m: ModelSource, weights_file: bool) -> str:
    """The standalone module of a compiled model."""
    kernels = [
        _renamed(m.predict, "forward_kernel"),
        _renamed(m.gradients, "loss_and_gradients_kernel"),
        _renamed(m.train, "train_step_kernel"),
    ]
    code = _module_code(kernels, extra_imports=("os",), constants=_constants(m), api=_api(m))
    return ruff_stable(_model_docstring(m, weights_file) + "\n" + code)


def module_for_function(program: Program, formulas: dict[str, str], notes: list[str]) -> str:
    """The standalone module of one compiled function (``symgrad.compile``)."""
    doc = [
        f"The function {program.name!r} compiled by symgrad, as NumPy code; generated, do not edit.",
        "",
        "Needs only NumPy. Each block of the function computes one statement of the",
        "program symgrad derived and simplified; its formula is the comment above it.",
        "",
        "Formulas:",
        *(f"    {name} = {formula}" for name, formula in formulas.items()),
        "",
        "The program:",
        *(f"    {line}" for line in format_program(program).splitlines()),
    ]
    if notes:
        doc += ["", *notes]
    code = _module_code([program], extra_imports=(), constants=[], api=[])
    return ruff_stable(_docstring_text(doc) + "\n" + code)


def _renamed(program: Program, name: str) -> Program:
    return dataclasses.replace(program, name=name, doc=KERNEL_DOCS.get(name, program.doc))


def _docstring_text(lines: list[str], tables: frozenset[str] = frozenset()) -> str:
    """The module's docstring: each line within the line length (formulas wrapped), except
    the lines of ``tables`` (the model summary), whose columns must stay aligned; every name
    and formula in it escaped (``python_docstring``)."""
    lines = [row for line in lines for row in line.split("\n")]
    wrapped = [part for line in lines for part in ([line] if line in tables else wrap_text(line))]
    return python_docstring("\n".join(line.rstrip() for line in wrapped)) + "\n"


def _string(text: str) -> str:
    """A string literal in the module (double quotes, as ``ruff format`` writes them)."""
    return python_string(text, quote='"')


# --------------------------------------------------------------------------
# Module layout: docstring, imports, header, constants, API, checks, kernels


def _module_code(kernels: list[Program], extra_imports, constants, api) -> str:
    functions = [numpy_function(p) for p in kernels]
    header = module_header(functions, extra_imports)
    if constants:
        header += ["", *constants]
    out = ["\n".join(header)]
    out += api
    out.append(_section("Argument checks of the generated functions") + CHECKS.strip("\n"))
    if any(f.needs_erf for f in functions):
        out.append(ERF.strip("\n"))
    codes = [f.code.rstrip("\n") for f in functions]
    out.append(_section("The generated functions: each block under the formula it computes"))
    out[-1] += codes[0]
    out += codes[1:]
    return "\n\n\n".join(out) + "\n"


def _section(title: str) -> str:
    return f"# {'-' * 86}\n# {title}\n"


# --------------------------------------------------------------------------
# The model's docstring


def _model_docstring(m: ModelSource, weights_file: bool) -> str:
    lines = [
        f'Training code for the symgrad model "{m.name}"; generated by symgrad, do not edit.',
        "",
        "Needs only NumPy. The functions at the end are the forward pass, the gradients",
        "and the training step that symgrad derived and simplified for this model,",
        "printed as NumPy code; each block sits under the formula it computes.",
        "",
        *m.summary.splitlines(),
        "",
        f"Loss: {m.loss}. {m.label_note}",
        f"Optimizer: {m.optimizer}, per weight entry w with gradient g:",
        *(f"    {slot} <- {rule}" for slot, rule in m.rules.items()),
        "",
        "Forward pass, on a batch X of n rows:",
        *(f"    {name} = {formula}" for name, formula in m.forward_formulas.items()),
        "",
        "Gradients of the loss, dL/dW for each weight W:",
        *(f"    {path}: {formula}" for path, formula in m.gradient_formulas.items()),
        "",
        "Use:",
        "    params, opt_state = load_weights()"
        + (
            "  # the .npz written next to this file"
            if weights_file
            else '  # an .npz of model.save_weights("w.npz")'
        ),
        "    epoch_losses = fit(params, opt_state, x, y, epochs=10, batch_size=32, seed=0)",
        "    predictions = forward(params, x)",
        "",
        'params maps each weight\'s Keras path ("dense/kernel") to a 2-D array of DTYPE;',
        'opt_state maps each optimizer slot ("dense/kernel/momentum") to an array, and',
        '"iterations" to the number of steps taken. train_step and fit update both in place.',
    ]
    return _docstring_text(lines, frozenset(m.summary.splitlines()))


# --------------------------------------------------------------------------
# Constants and API of a model


def _constants(m: ModelSource) -> list[str]:
    lines = [
        f"INPUT_DIM = {m.input_dim}",
        *([f"INPUT_SHAPE = {m.input_shape}  # of one sample"] if len(m.input_shape) > 1 else []),
        f"OUTPUT_DIM = {m.output_dim}",
        f"LOSS = {_string(m.loss)}",
        "# the weights in get_weights() order: Keras path -> shape",
        "PARAMETERS = {",
        *(f"    {_string(w.path)}: {w.shape}," for w in m.weights),
        "}",
        "# the weights the training step updates and loss_and_gradients differentiates",
        "TRAINABLE = [" + ", ".join(f'"{w.path}"' for w in m.weights if w.trainable) + "]",
        "# optimizer slots: path -> (the weight it belongs to, initial value)",
    ]
    if m.slots:
        lines += ["SLOTS = {"]
        lines += [f"    {_string(s.path)}: ({_string(s.weight)}, {s.initial!r})," for s in m.slots]
        lines += ["}"]
    else:
        lines.append("SLOTS = {}")
    if m.inputs:
        lines.append("# the inputs, side by side in the rows X the kernels take: name -> columns")
        lines.append("INPUTS = {" + ", ".join(f"{_string(n)}: {d}" for n, d, _ in m.inputs) + "}")
    if m.outputs:
        lines.append("# the outputs, side by side in P and Y: name -> (columns, loss)")
        items = [f"{_string(n)}: ({d}, {_string(loss)})" for n, d, loss in m.outputs]
        lines.append("OUTPUTS = {" + ", ".join(items) + "}")
    lines.append("# the optimizer's hyperparameters when the model was emitted")
    items = [f"{_string(k)}: {v!r}" for k, v in m.hyperparameters.items()]
    lines.append("HYPERPARAMETERS = {" + ", ".join(items) + "}")
    return lines


def _api(m: ModelSource) -> list[str]:
    weights = [f"params[{_string(w.path)}]" for w in m.weights]
    slots = [f"opt_state[{_string(s.path)}]" for s in m.slots]
    scalars = []
    for sym in m.train.scalars:
        name = str(sym)
        if name in m.hyperparameters:
            scalars.append(f"hyperparameters[{_string(name)}]")
        elif name == "t":
            scalars.append('float(opt_state["iterations"] + 1)')
        else:  # pragma: no cover - the training API only makes these scalars
            raise ValueError(f"train_step has a scalar {name!r} that is no hyperparameter")
    for k in m.hyperparameters:  # they become keyword arguments of train_step
        if python_identifier(k) != k or iskeyword(k):
            raise ValueError(
                f"hyperparameter names must be Python identifiers; Received: {k!r} of {m.optimizer}"
            )
    keyword = ", ".join(f"{k}={v!r}" for k, v in m.hyperparameters.items())
    if m.train.outputs[0].name != "loss":  # pragma: no cover - the training API's layout
        raise ValueError(f"the training step's first output must be the loss: {m.train.outputs}")
    extra = len(m.train.outputs) > 1  # predictions or metrics the fit loop reads
    train_call = ["x", "targets", *weights, *slots, *scalars]
    return [
        _function(
            "forward(params, x)",
            "The model output for the rows of x (one batch of any size)"
            + ("; a list, one array per output." if m.outputs else "."),
            [
                "x = _as_rows(x)",
                "(p,) = forward_kernel(x, *_weights(params))",
                "return _split_outputs(p)" if m.outputs else "return p",
            ],
        ),
        _function(
            "loss_and_gradients(params, x, y)",
            "The mean loss over (x, y), its gradient per trainable weight: (loss, {path: array}).",
            [
                "x, targets = _as_rows(x), prepare_targets(y)",
                "loss, *gradients = loss_and_gradients_kernel(x, targets, *_weights(params))",
                "return float(loss[0, 0]), dict(zip(TRAINABLE, gradients))",
            ],
        ),
        _function(
            f"train_step(params, opt_state, x, y{', *, ' + keyword if keyword else ''})",
            "One optimizer step on the batch (x, y); updates params and opt_state in place.\n\n"
            "Returns the batch's mean loss before the step. A nan or inf loss raises\n"
            "FloatingPointError before anything is written.",
            [
                "hyperparameters = {"
                + ", ".join(f"{_string(k)}: {k}" for k in m.hyperparameters)
                + "}",
                "return _step(params, opt_state, _as_rows(x), prepare_targets(y), hyperparameters)",
            ],
        ),
        _function(
            "_step(params, opt_state, x, targets, hyperparameters)",
            "",
            [
                ("loss, *_" if extra else "(loss,)")
                + f" = train_step_kernel({', '.join(train_call)})",
                'opt_state["iterations"] += 1',
                "return float(loss[0, 0])",
            ],
        ),
        _FIT,
        _prepare_targets(m),
        _helpers(m),
        *([_PACK_INPUTS] if m.inputs else []),
        *([_SPLIT_OUTPUTS] if m.outputs else []),
        *([_PER_NAME] if m.inputs or m.outputs else []),
    ]


def _helpers(m: ModelSource) -> str:
    if m.inputs:  # several inputs: packed side by side first
        return _HELPERS.replace(_TO_ARRAY, _TO_ARRAY.replace("(x,", "(_pack_inputs(x),"))
    return _IMAGE_ROWS if len(m.input_shape) > 1 else _HELPERS


def _function(signature: str, doc: str, body: list[str]) -> str:
    lines = [f"def {signature}:"]
    if doc:
        doc_lines = doc.splitlines()
        if len(doc_lines) == 1:
            lines.append(f'    """{doc}"""')
        else:
            lines.append(f'    """{doc_lines[0]}')
            lines += [f"    {line}".rstrip() for line in doc_lines[1:]]
            lines.append('    """')
    lines += [f"    {line}" for line in body]
    return "\n".join(lines)


_FIT = '''\
def fit(params, opt_state, x, y, epochs=1, batch_size=32, seed=None, **hyperparameters):
    """Train on (x, y) for `epochs` passes; returns the mean training loss of each epoch.

    The batches are consecutive rows (the last one may be smaller), in order when seed
    is None (as model.fit(..., shuffle=False)); an integer seed shuffles the rows at
    every epoch with numpy.random.default_rng(seed). Keyword arguments override
    HYPERPARAMETERS (e.g. learning_rate=0.01).
    """
    unknown = set(hyperparameters) - set(HYPERPARAMETERS)
    if unknown:
        raise TypeError(
            f"fit: unknown hyperparameter(s) {sorted(unknown)}; known: {list(HYPERPARAMETERS)}"
        )
    hyperparameters = {**HYPERPARAMETERS, **hyperparameters}
    x, targets = _as_rows(x), prepare_targets(y)
    if len(x) != len(targets):
        raise ValueError(f"fit: x has {len(x)} rows but y has {len(targets)}")
    if batch_size < 1:
        raise ValueError(f"fit: batch_size must be >= 1; Received: batch_size={batch_size}")
    rng = None if seed is None else numpy.random.default_rng(seed)
    losses = []
    for epoch in range(epochs):
        xs, ys = x, targets
        if rng is not None:
            order = rng.permutation(len(x))
            xs, ys = x[order], targets[order]
        total = 0.0
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            try:
                loss = _step(params, opt_state, xs[rows], ys[rows], hyperparameters)
            except FloatingPointError as err:
                batch = start // batch_size + 1
                raise FloatingPointError(f"fit: epoch {epoch + 1}, batch {batch}: {err}") from err
            total += loss * len(xs[rows])
        losses.append(total / len(x))
    return losses'''


_HELPERS = '''\
def init_opt_state(params):
    """Fresh optimizer state for params: every slot at its initial value, no steps taken."""
    state = {
        path: numpy.full(numpy.shape(params[weight]) if weight else (1, 1), initial, DTYPE)
        for path, (weight, initial) in SLOTS.items()  # no weight: one (1, 1) slot for all
    }
    state["iterations"] = 0
    return state


def load_weights(path=None):
    """(params, opt_state) from an .npz of symgrad weights (default: next to this module).

    The file is what symgrad.emit(..., weights=True) or model.save_weights writes:
    each weight under its Keras path, each optimizer slot under "optimizer/<path>",
    and "optimizer/iterations". Slots missing from the file start fresh.
    """
    if path is None:
        path = os.path.splitext(__file__)[0] + ".npz"
    with numpy.load(path) as stored:
        missing = [name for name in PARAMETERS if name not in stored.files]
        if missing:
            raise ValueError(f"{path} holds no weights for {missing}; it holds {stored.files}")
        params = {
            name: numpy.array(stored[name], dtype=DTYPE, order="C").reshape(shape)
            for name, shape in PARAMETERS.items()
        }
        opt_state = init_opt_state(params)
        if set(stored.files) >= {"optimizer/" + name for name in SLOTS}:
            for name in SLOTS:
                opt_state[name][...] = stored["optimizer/" + name].reshape(opt_state[name].shape)
            if "optimizer/iterations" in stored.files:
                opt_state["iterations"] = int(stored["optimizer/iterations"])
    return params, opt_state


def save_weights(path, params, opt_state):
    """Write params and opt_state as load_weights (and model.load_weights) read them."""
    arrays = {name: params[name] for name in PARAMETERS}
    arrays.update({"optimizer/" + name: opt_state[name] for name in SLOTS})
    arrays["optimizer/iterations"] = numpy.array(opt_state["iterations"])
    numpy.savez(path, **arrays)


def _as_rows(x):
    """x as a 2-D C-contiguous DTYPE array with INPUT_DIM columns."""
    x = numpy.ascontiguousarray(x, dtype=DTYPE)
    if x.ndim != 2 or x.shape[1] != INPUT_DIM:
        raise ValueError(
            f"x must have shape (samples, {INPUT_DIM}); Received: x with shape {x.shape}"
        )
    return x


def _weights(params):
    return [numpy.asarray(params[name], dtype=DTYPE) for name in PARAMETERS]'''


_TO_ARRAY = "    x = numpy.ascontiguousarray(x, dtype=DTYPE)\n"
_IMAGE_ROWS = _HELPERS.replace(
    _TO_ARRAY,
    _TO_ARRAY
    + """    if x.shape[1:] == INPUT_SHAPE:  # samples of INPUT_SHAPE: rows, row-major, channels last
        x = x.reshape(len(x), INPUT_DIM)
""",
)
"""The helpers of a model whose samples are images or sequences (``INPUT_SHAPE``)."""


_PREPARE_SPARSE = """\
    labels = numpy.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            "y must hold one integer class label per sample, shape (samples,); "
            f"Received: y with shape {labels.shape}"
        )
    if labels.size and (
        numpy.any(labels != numpy.round(labels)) or labels.min() < 0 or labels.max() >= OUTPUT_DIM
    ):
        raise ValueError(f"y must hold integer class labels in [0, {OUTPUT_DIM})")
    return numpy.eye(OUTPUT_DIM, dtype=DTYPE)[labels.astype(numpy.int64)]"""

_PREPARE_ROWS = """\
    targets = numpy.array(y, dtype=DTYPE, order="C", ndmin=1)
    if targets.ndim == 1 and OUTPUT_DIM == 1:
        targets = targets.reshape(-1, 1)
    if targets.ndim != 2 or targets.shape[1] != OUTPUT_DIM:
        raise ValueError(
            f"y must have shape (samples, {OUTPUT_DIM}); Received: y with shape {targets.shape}"
        )"""

_CHECK_PROBABILITIES = """\
    if numpy.any(targets < 0) or numpy.any(numpy.abs(targets.sum(axis=1) - 1) > 1e-5):
        raise ValueError("y must hold one-hot (or probability) rows: >= 0, each summing to 1")"""

_CHECK_UNIT_INTERVAL = """\
    if numpy.any((targets < 0) | (targets > 1)):
        raise ValueError("y must hold targets in [0, 1] for binary cross-entropy")"""


def _prepare_targets(m: ModelSource) -> str:
    if m.outputs:
        return _PREPARE_OUTPUTS
    head = f'def prepare_targets(y):\n    """{_target_doc(m.loss)}"""\n'
    if m.loss == "sparse_categorical_crossentropy":
        return head + _PREPARE_SPARSE
    body = _PREPARE_ROWS
    if m.loss == "categorical_crossentropy":
        body += "\n" + _CHECK_PROBABILITIES
    elif m.loss == "binary_crossentropy":
        body += "\n" + _CHECK_UNIT_INTERVAL
    return head + body + "\n    return targets"


_PER_NAME = '''\
def _per_name(value, names, what):
    """Arrays of several inputs (outputs): a dict by name or a list in order."""
    if isinstance(value, dict):
        if set(value) != set(names):
            raise ValueError(f"{what} must have the keys {list(names)}; Received: {list(value)}")
        return [value[name] for name in names]
    if not isinstance(value, (list, tuple)) or len(value) != len(names):
        raise ValueError(f"{what} must be a list of {len(names)} arrays {list(names)} or a dict")
    return list(value)'''


_PACK_INPUTS = '''\
def _pack_inputs(x):
    """The inputs (a list in INPUTS order or a dict by name) side by side, as one row each."""
    if not isinstance(x, (list, tuple, dict)):
        return x  # the packed rows already
    parts = [numpy.asarray(a, dtype=DTYPE) for a in _per_name(x, INPUTS, "x")]
    for (name, columns), a in zip(INPUTS.items(), parts):
        if a.ndim != 2 or a.shape[1] != columns:
            raise ValueError(f"x[{name!r}] must have shape (samples, {columns}); Received: {a.shape}")
    if len({len(a) for a in parts}) > 1:
        raise ValueError(f"the inputs must have as many rows each; Received: {[len(a) for a in parts]}")
    return numpy.concatenate(parts, axis=1)'''


_SPLIT_OUTPUTS = '''\
def _split_outputs(p):
    """The packed predictions as one array per output, in OUTPUTS order."""
    parts, start = [], 0
    for columns, _ in OUTPUTS.values():
        parts.append(p[:, start : start + columns])
        start += columns
    return parts'''


_PREPARE_OUTPUTS = '''\
def prepare_targets(y):
    """The targets of each output (a list in OUTPUTS order or a dict by name) checked for its
    loss and packed side by side: the rows Y the kernels take (integer labels become one-hot)."""
    if not isinstance(y, (list, tuple, dict)):
        return numpy.ascontiguousarray(y, dtype=DTYPE)  # packed already
    parts = _per_name(y, OUTPUTS, "y")
    packed = [
        _output_targets(name, value, columns, loss)
        for (name, (columns, loss)), value in zip(OUTPUTS.items(), parts)
    ]
    if len({len(t) for t in packed}) > 1:
        raise ValueError(f"the targets must have as many rows each; Received: {[len(t) for t in packed]}")
    return numpy.ascontiguousarray(numpy.concatenate(packed, axis=1), dtype=DTYPE)


def _output_targets(name, y, columns, loss):
    if loss == "sparse_categorical_crossentropy":
        labels = numpy.asarray(y).reshape(-1)
        if labels.size and (
            numpy.any(labels != numpy.round(labels)) or labels.min() < 0 or labels.max() >= columns
        ):
            raise ValueError(f"y[{name!r}] must hold integer class labels in [0, {columns})")
        return numpy.eye(columns, dtype=DTYPE)[labels.astype(numpy.int64)]
    targets = numpy.array(y, dtype=DTYPE, ndmin=1)
    if targets.ndim == 1 and columns == 1:
        targets = targets.reshape(-1, 1)
    if targets.ndim != 2 or targets.shape[1] != columns:
        raise ValueError(f"y[{name!r}] must have shape (samples, {columns}); Received: {targets.shape}")
    if loss == "categorical_crossentropy" and (
        numpy.any(targets < 0) or numpy.any(numpy.abs(targets.sum(axis=1) - 1) > 1e-5)
    ):
        raise ValueError(f"y[{name!r}] must hold one-hot (or probability) rows")
    if loss == "binary_crossentropy" and numpy.any((targets < 0) | (targets > 1)):
        raise ValueError(f"y[{name!r}] must hold targets in [0, 1] for binary cross-entropy")
    return targets'''


def _target_doc(loss: str) -> str:
    if loss == "sparse_categorical_crossentropy":
        return "Integer class labels (samples,) as the one-hot rows Y the kernels take."
    if loss == "categorical_crossentropy":
        return "One-hot (or probability) rows as the Y the kernels take; checked."
    return "Targets as the (samples, OUTPUT_DIM) rows Y the kernels take."


def target_note(loss: str, output_dim: int) -> str:
    """What ``y`` the module expects, for its docstring."""
    if loss == "sparse_categorical_crossentropy":
        return (
            f"Targets y: integer class labels in [0, {output_dim}), shape (samples,);\n"
            "prepare_targets turns them into the one-hot rows Y the generated functions take."
        )
    if loss == "categorical_crossentropy":
        return (
            f"Targets y: one-hot (or probability) rows, shape (samples, {output_dim});\n"
            "the derived gradient (P - Y)/n assumes each row sums to 1 (prepare_targets checks)."
        )
    if loss == "binary_crossentropy":
        return f"Targets y: values in [0, 1], shape (samples, {output_dim})."
    return f"Targets y: shape (samples, {output_dim}) (or (samples,) for one output)."
