"""symgrad.nn.models: ``Sequential``, Keras's stack of layers, compiled to one training step.

Example::

    >>> from symgrad.nn.models import Sequential
    >>> from symgrad.nn.layers import Dense
    >>> model = Sequential([Dense(64, activation="relu", input_dim=64), Dense(10, activation="softmax")])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], seed=0)
    >>> history = model.fit(x_train, y_train, epochs=20, batch_size=32)
    >>> model.gradient_formulas()["dense_1/kernel"]
    1/n*A1.T*(P - Y)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from codegen.files import write_atomic
from symgrad.core import display, fresh_name
from symgrad.core.printing import FormulaLatexPrinter, sstr
from symgrad.formulas import Explanation, FormulaTable, gradient_tex
from symgrad.nn import config as config_module
from symgrad.nn import (
    convolution,  # noqa: F401 - its layers register themselves in LAYERS
    losses,
    optimizers,
)
from symgrad.nn import layers as layers_module
from symgrad.nn import metrics as metrics_module
from symgrad.nn import validation as data
from symgrad.nn.layers import (
    InputLayer,
    KerasTensor,
    Layer,
    Names,
    Variable,
    check_values,
    declared_shape,
    snake_case,
)
from symgrad.nn.trainer import Trainer, TrainingGraph, forward


def read_npz(filepath, what: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive ``filepath`` (no pickles), or a ValueError naming it."""
    where = _file_name(filepath)
    with contextlib.ExitStack() as stack:
        # our own handle: np.load leaves its file open when the archive is corrupt
        source = (
            filepath if hasattr(filepath, "read") else stack.enter_context(open(filepath, "rb"))
        )
        try:
            loaded = np.load(source, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded as f:
                    return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"Cannot read {where} as {what}: {err}") from err
    raise ValueError(
        f"{where} is not {what} (an .npz archive of named arrays). "
        f"Received: one array of shape {np.shape(loaded)} (an .npy file?)"
    )


def _file_name(filepath) -> str:
    try:
        return os.fspath(filepath)
    except TypeError:  # a file object (load_model passes one)
        return getattr(filepath, "name", None) or f"the {type(filepath).__name__}"


@contextlib.contextmanager
def _restored_on_error(*objects):
    """Undo every attribute change of ``objects`` (building from a file's shapes) if the block raises."""
    saved = [(obj, dict(vars(obj))) for obj in objects if obj is not None]
    try:
        yield
    except BaseException:
        for obj, attributes in saved:
            vars(obj).clear()
            vars(obj).update(attributes)
        raise


def atomic_save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` written atomically (temporary file, fsync, ``os.replace``)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue(), fsync=True)


@dataclass
class SummaryRow:
    """One layer in ``summary()`` and the HTML summary: its formulas as named values."""

    label: str  # "dense (Dense)"
    shape: str  # "(None, 64)"
    params: str
    computes: list  # the Named values it computes (Z1 = ..., A1 = ...)
    connected: str | None = None  # a functional model's inbound tensors


class Model(Trainer):
    """What every model has: weights and their files, formulas; ``compile``, ``fit``... come
    from :class:`~symgrad.nn.trainer.Trainer`, as in Keras.

    ``Model(inputs, outputs)`` builds a functional model
    (:class:`symgrad.nn.functional.Functional`); :class:`Sequential` is the stack of layers.
    A subclass provides ``layers``, ``weights``, ``input_dim``, ``output_dim``,
    ``built``, ``build`` and ``_forward()`` (its symbolic forward pass).
    """

    def __new__(cls, *args, **kwargs):
        if cls is Model:  # Keras's spelling of a functional model: Model(inputs, outputs)
            from symgrad.nn.functional import Functional  # it subclasses Model

            return super().__new__(Functional)
        return super().__new__(cls)

    def count_params(self) -> int:
        return sum(w.size for w in self.weights)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input sample (rows of ``input_dim`` features unless a subclass
        says otherwise)."""
        return None if self.input_dim is None else (self.input_dim,)

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """The shape of one output sample."""
        return None if self.output_dim is None else (self.output_dim,)

    def _input_reader(self) -> str:
        """Who reads the input, for errors about its shape."""
        return "The model"

    def input_blocks(self, x: MatrixExpr) -> list[MatrixExpr]:
        """What stands for each input in a graph on the packed input rows ``x``: ``x``
        itself (a model with several inputs: each one's named column block of it)."""
        return [x]

    # ------------------------------------------------------------------
    # Calling a model, as Keras's model(x)

    def __call__(self, inputs, training: bool | None = None):
        """Keras's ``model(x)``; ``training=True`` (on the tape): dropout and batch statistics
        as in ``fit``, else (the default, as Keras) the inference graph.

        On arrays (a list or dict of them for several inputs): the predictions for their
        rows as one batch, in the model's dtype, from its compiled predict program (built
        once per compile and reused).  On symbolic tensors (``Input`` or a layer's output):
        the model is a layer of the functional model being built.  On symgrad matrix
        expressions (``symgrad.expr``, one per input): the output formula(s).  Inside a
        ``GradientTape`` (or on a tape tensor): the call is recorded on the tape.
        """
        from symgrad.nn import tape  # the tape records model calls; it imports the models

        if tape.records(inputs):  # inside a GradientTape, or on a tape tensor
            return tape.call_model(self, inputs, training=bool(training))
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if items and all(isinstance(t, KerasTensor) for t in items):
            from symgrad.nn import functional  # it imports this module

            return functional.call_layer(self, inputs)
        if items and all(isinstance(t, MatrixExpr) for t in items):
            outs = self._symbolic_call(list(items))
            return outs[0] if len(outs) == 1 else outs
        if training:
            raise NotImplementedError(
                f"Model {self.name!r} called on arrays with training=True: fit runs the training "
                "graph; inside a GradientTape, model(x, training=True) records it"
            )
        return self.predict_on_batch(inputs)

    def _symbolic_call(self, exprs: list[MatrixExpr]) -> list[MatrixExpr]:
        """The layers' formulas applied to ``exprs`` (an unbuilt model builds for their widths)."""
        widths = [e.shape[1] for e in exprs]
        expected = self._input_widths()
        known = all(isinstance(w, (int, sp.Integer)) for w in widths)
        if (
            not known
            or len(widths) != len(expected)
            or any(d is not None and w != d for w, d in zip(widths, expected))
        ):
            shown = [d if d is not None else "?" for d in expected]
            raise ValueError(
                f"Model {self.name!r} expects {len(expected)} expression(s) of rows of "
                f"{', '.join(map(str, shown))} features. Received: expression(s) of shape "
                f"{', '.join(str(tuple(e.shape)) for e in exprs)}"
            )
        shapes = [s if s is not None else (int(w),) for s, w in zip(self._input_shapes(), widths)]
        self._connect(shapes)  # builds an unbuilt model
        return self._apply(exprs, Names())

    @property
    def trainable(self) -> bool:
        """Setting it sets every layer's ``trainable`` (read at ``compile``, as in Keras)."""
        return getattr(self, "_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(
                f"Model {self.name!r}: trainable must be True or False. Received: trainable={value!r}"
            )
        for layer in self.layers:
            layer.trainable = bool(value)
        self._trainable = bool(value)

    def _materialize(self) -> None:
        """Give every weight without a value its initial value (drawn in layer order)."""
        for w in self.weights:
            if w.value is None:
                w.value = np.ascontiguousarray(
                    w.initializer(w.matrix_shape, self._init_rng), dtype=self.dtype
                )

    def _build_from_weights(self, stored: dict[str, np.ndarray]) -> None:
        """Build an unbuilt model from the shapes in a weights file (a Sequential can)."""

    def _restorable(self) -> list:
        """What ``load_weights`` puts back as it was when the file is refused."""
        return [self]

    # ------------------------------------------------------------------
    # Weights

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights, layer by layer (kernel ``(in, units)``, then bias ``(units,)``)."""
        if self.built:
            self._materialize()
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Replace the weights (same order and shapes as ``get_weights()``); checked first."""
        self._assign_weights(self._checked_weights(weights))

    def _checked_weights(self, weights: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``weights`` in the matrix layout, all of the right shapes and finite (else ValueError,
        nothing changed); biases as ``(units,)`` (Keras) or ``(1, units)`` (older files)."""
        return check_values(self.weights, list(weights), "set_weights")

    def _assign_weights(self, arrays: Sequence[np.ndarray]) -> None:
        for var, array in zip(self.weights, arrays):
            if var.value is None:
                var.value = np.empty(var.matrix_shape, dtype=self.dtype)
            var.value[...] = array

    def _weight_file_arrays(self) -> dict[str, np.ndarray]:
        self._materialize()
        arrays = {w.path: w.numpy() for w in self.weights}  # Keras's layout
        if self.optimizer is not None:
            for var in self.optimizer.variables:
                arrays[f"optimizer/{var.path}"] = var.numpy()
            arrays["optimizer/iterations"] = np.array(self.optimizer.iterations)
        return arrays

    def save_weights(self, filepath: str | os.PathLike) -> None:
        """Weights and optimizer state to an ``.npz`` file, written atomically."""
        if not self.built:
            raise ValueError("The model has no weights yet (it is not built): nothing to save.")
        atomic_save_npz(filepath, self._weight_file_arrays())

    def load_weights(self, filepath: str | os.PathLike) -> None:
        """Weights (and optimizer state, when compiled alike) from ``save_weights``'s file.

        The whole file is checked before anything changes: an unreadable file, missing or
        misshapen weights, non-finite values, a step counter that is not a non-negative
        integer or negative squared-gradient slots raise ValueError and leave the model
        as it was (an unbuilt model is not left built).
        """
        stored = read_npz(filepath, "a weights file (model.save_weights)")
        where = _file_name(filepath)
        with _restored_on_error(*self._restorable()):
            self._build_from_weights(stored)
            missing = [w.path for w in self.weights if w.path not in stored]
            if missing:
                raise ValueError(
                    f"{where} does not hold weights for {', '.join(missing)}; "
                    f"it holds: {', '.join(k for k in stored if not k.startswith('optimizer/'))}"
                )
            weights = self._checked_weights([stored[w.path] for w in self.weights])
            prefix = "optimizer/"
            state = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
            optimizers.check_state(state, self.optimizer, where)
        # the whole file is sound: now change the model
        self._assign_weights(weights)
        self._pending_optimizer_state = state or None
        if self._programs_cache is not None and "train" in self._programs_cache._cache:
            self._apply_pending_optimizer_state()

    def _compile_config(self) -> dict:
        """``{"compile": ...}``: the compile arguments as given (names), for files and pickles."""
        if not self.compiled:
            return {}
        given = self._compile_arguments
        return {
            "compile": {
                "optimizer": self.optimizer.get_config(),
                "loss": _loss_spec(given.get("loss")),
                "loss_weights": given.get("loss_weights"),
                "metrics": _metric_spec(given.get("metrics")),
                **(
                    {"weighted_metrics": _metric_spec(given["weighted_metrics"])}
                    if given.get("weighted_metrics") is not None
                    else {}
                ),
                "backend": self.backend,
                "dtype": self.dtype,
                **({"threads": self.threads} if self.threads is not None else {}),
            }
        }

    def get_compile_config(self) -> dict | None:
        """The compile arguments as JSON data (Keras's ``get_compile_config``): the optimizer's
        config, the losses, ``loss_weights``, the metrics (names, or metric objects as their
        class and settings), backend and dtype (and ``threads`` when given); None before
        ``compile``."""
        return self._compile_config().get("compile")

    def compile_from_config(self, config: dict, custom_objects: dict | None = None) -> None:
        """Compile as ``get_compile_config()``'s dict says (of this model or another of the
        same outputs); ``custom_objects`` maps class names to a user's metric classes."""
        _compile_from_config(self, config, custom_objects)

    def to_json(self, **kwargs) -> str:
        """The architecture as JSON text (``model_from_json`` reads it); no weights, no
        compile settings, as Keras's ``to_json``. ``kwargs`` go to ``json.dumps``."""
        config = {k: v for k, v in self.get_config().items() if k != "compile"}
        return json.dumps(config, **kwargs)

    def __reduce__(self):
        """Pickles (and ``copy.deepcopy``) hold the config, weights, optimizer state, compile
        arguments and random generators; loading rebuilds the model and compiles it again
        (generated functions and native handles are never pickled)."""
        arrays = self._weight_file_arrays() if self.built else {}
        rngs = (self._init_rng.bit_generator.state, self._shuffle_rng.bit_generator.state)
        given = self._compile_arguments if self.compiled else {}
        metrics = [given.get("metrics"), given.get("weighted_metrics")]
        custom = metrics_module.custom_classes(metrics)  # pickled by reference, as classes are
        return (_unpickle, (json.dumps(self.get_config()), arrays, rngs, custom or None))

    def save(self, filepath: str | os.PathLike) -> None:
        """Architecture, compile settings, weights and optimizer state in one ``.npz`` (atomic)."""
        arrays = self._weight_file_arrays() if self.built else {}
        arrays["__config__"] = np.array(json.dumps(self.get_config()))
        atomic_save_npz(filepath, arrays)

    # ------------------------------------------------------------------
    # Inspection

    def _print_summary(self, lines: list[str], print_fn, rule: str, double: str) -> None:
        """``summary()``'s table rows, then the parameter totals every model prints."""
        total = self.count_params() if self.built else 0
        trainable = sum(w.size for w in self.trainable_weights) if self.built else 0
        size = total * np.dtype(self.dtype).itemsize
        lines += [
            double,
            f"Total params: {total} ({size:,} bytes as {self.dtype})",
            f"Trainable params: {trainable}",
            f"Non-trainable params: {total - trainable}",
            rule,
        ]
        (print_fn or print)("\n".join(line.rstrip() for line in lines))

    def _latex_names(self) -> dict[str, str]:
        """Symbol name -> Keras path: LaTeX shows weights as ``\\mathrm{dense\\_1/kernel}``."""
        return {w.symbol.name: w.path for w in self.weights}

    def _repr_html_(self) -> str:
        """Jupyter: the summary as a table, each layer's formulas in LaTeX."""
        printer = FormulaLatexPrinter({"names": self._latex_names() if self.built else {}})
        rows = self._summary_rows()
        connected = any(r.connected is not None for r in rows)
        header = ["Layer (type)", "Output Shape", "Param #"]
        header += ["Connected to"] * connected + ["Computes"]
        cells = []
        for r in rows:
            computes = "<br>".join(
                display.math(f"{display.label_tex(n.name)} = {printer.doprint(n.body)}")
                for n in r.computes
            )
            cells.append(
                [display.text(r.label), display.text(r.shape), display.text(r.params)]
                + [display.text(r.connected or "-")] * connected
                + [computes]
            )
        total = self.count_params() if self.built else 0
        trainable = sum(w.size for w in self.trainable_weights) if self.built else 0
        size = total * np.dtype(self.dtype).itemsize
        totals = (
            f"<p>Total params: {total} ({size:,} bytes as {display.text(self.dtype)}) &middot; "
            f"Trainable params: {trainable} &middot; Non-trainable params: {total - trainable}</p>"
        )
        caption = f'Model: "{self.name}" ({type(self).__name__})'
        return display.table(header, cells, caption) + totals

    def gradient_formulas(self) -> FormulaTable:
        """Simplified dL/dW per weight, keyed by Keras path (``dense_1/kernel``): a dict,
        shown in Jupyter as a table of LaTeX formulas."""
        from symgrad import formulas as inspect

        self._require_compiled("gradient_formulas")
        graph = self._training_graph()
        wrt = [w.symbol for w in graph.trainable]  # frozen weights are constants
        # the simplified gradients, a normalization's in the compact form of its rule
        simplified = inspect.readable_gradients(graph.raw_loss, wrt, context=[graph.output])
        return FormulaTable(
            {w.path: simplified[w.symbol] for w in graph.trainable},
            gradient_tex,
            self._latex_names(),
            f"Gradients of {self.name}",
        )

    def forward_formulas(self) -> FormulaTable:
        """The named intermediates in order: ``{"Z1": X*dense_kernel + dense_bias, ...}``.

        Where ``predict`` computes a value otherwise than ``fit`` (dropout, batch
        normalization) its formula there follows as ``"N1 (predict)"``; a state a layer
        updates in ``fit`` (moving statistics) as ``"<symbol> (fit update)"``.
        """
        graph = self._training_graph()
        out = {n.name: n.body for names in graph.layer_names.values() for n in names}
        out.setdefault("P", graph.output.body)  # a model that only passes X through
        for names in graph.inference_names.values():
            for n in names:  # shown where it reads otherwise (names are the same in both)
                if n.name not in out or sstr(out[n.name]) != sstr(n.body):
                    out[f"{n.name} (predict)"] = n.body
        for sym, new in graph.states.items():
            out[f"{sym.name} (fit update)"] = new
        if graph.loss is not None:
            out["loss"] = graph.loss
        return FormulaTable(out, names=self._latex_names(), title=f"Forward pass of {self.name}")

    def explain(self) -> Explanation:
        """The chain rule step by step, from the loss down to every weight: a ``str``,
        shown in Jupyter as tables of LaTeX formulas."""
        from symgrad import formulas as inspect

        self._require_compiled("explain")
        graph = self._training_graph()
        lines = self.element_formulas()
        return inspect.explain(
            graph.raw_loss,
            [w.symbol for w in graph.trainable],
            context=[graph.output],
            names=self._latex_names(),
            notes=[("Per element", lines)] if lines else (),
        )

    def element_formulas(self) -> list[str]:
        """Convolution, pooling and normalization layers entry by entry: ``Z1[k, i, j, f] =
        ...``, the kernel gradient as a correlation of the cotangent with the input,
        pooling's routing, normalization's gradient in its compact form."""
        graph = self._training_graph()
        return [
            line
            for layer in self.layers
            if hasattr(layer, "element_formulas")
            for line in layer.element_formulas(graph.layer_names.get(layer.name, []))
        ]


class Sequential(Model):
    """A linear stack of layers.

    Intermediates are named for the formulas and the generated code: the k-th
    ``Dense`` computes ``Zk`` (and ``Ak`` with an activation), the output is
    ``P``, gradients are ``d_<weight>`` (``d_dense_1_kernel``).
    """

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None):
        if name is not None and not isinstance(name, str):
            raise TypeError(
                "A model name must be a string (any text: generated code escapes it). "
                f"Received: name={name!r} of type {type(name).__name__}"
            )
        self.name = name or "sequential"
        self._name = self.name  # the name a functional graph that calls this model sees
        self._layers: list[Layer] = []
        self._input_layer: InputLayer | None = None
        self._input_shape: tuple[int, ...] | None = None  # of one sample: (d,), (H, W, C)...
        super().__init__()
        if isinstance(layers, Layer):
            raise TypeError(f"Sequential takes a list of layers. Received: layers={layers!r}")
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------
    # Structure

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers)

    def add(self, layer: Layer) -> None:
        """Append a layer; auto-names it Keras-style (``dense``, ``dense_1``...)."""
        if isinstance(layer, KerasTensor) and isinstance(layer.node.layer, InputLayer):
            layer = layer.node.layer  # Sequential([Input(shape=(3,)), ...])
        if not isinstance(layer, Layer):
            raise TypeError(
                "Only instances of symgrad.layers.Layer can be added to a Sequential model. "
                f"Received: {layer!r} (of type {type(layer).__name__})"
            )
        if layer.model is not None:
            raise ValueError(f"Layer {layer.name!r} already belongs to model {layer.model.name!r}")
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError("An Input layer can only be the first layer of a Sequential model")
            self._input_layer, self._input_shape = layer, layer.declared_input_shape
            layer.model = self
            self._invalidate()
            return
        taken = {existing.name for existing in self._layers}
        if layer._name is None:  # Keras's names: dense, dense_1, dense_2...
            layer._name = fresh_name(snake_case(type(layer).__name__), taken)
        elif layer.name in taken:
            raise ValueError(
                "All layers added to a Sequential model should have unique names. "
                f"Name {layer.name!r} is already the name of a layer in this model."
            )
        if not self._layers and self._input_shape is None:  # a layer built on its own knows it
            built = layer.input_shape if layer.built else None
            self._input_shape = declared_shape(layer) or built
        if self._input_shape is not None:  # weights get values on first use (after compile's seed)
            layer.build(self._output_shape_of(self._layers))
        self._layers.append(layer)
        layer.model = self
        self._invalidate()

    def pop(self) -> Layer:
        if not self._layers:
            raise ValueError("There are no layers in the model to pop.")
        layer = self._layers.pop()
        layer.model = None
        self._invalidate()
        return layer

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input sample: ``(features,)``, ``(H, W, C)``, ``(steps, C)``."""
        return self._input_shape

    @property
    def input_dim(self) -> int | None:
        """Columns of the input rows ``X`` (a sample flattened row-major)."""
        return None if self._input_shape is None else data.width(self._input_shape)

    @property
    def _input_dim(self) -> int | None:
        return self.input_dim

    @_input_dim.setter
    def _input_dim(self, dim: int | None) -> None:
        self._input_shape = None if dim is None else (dim,)

    def _output_shape_of(self, layers: Sequence[Layer]) -> tuple[int, ...] | None:
        shape = self._input_shape
        if shape is None:  # not built: the width the last layer with units gives, if any
            dim = None
            for layer in layers:
                dim = layer.output_dim(dim)
            return None if dim is None else (dim,)
        for layer in layers:
            shape = layer.compute_output_shape(shape)
        return shape

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """The shape of one output sample."""
        return self._output_shape_of(self._layers)

    @property
    def output_dim(self) -> int | None:
        shape = self.output_shape
        return None if shape is None else data.width(shape)

    def _input_reader(self) -> str:
        first = self._input_layer or (self._layers[0] if self._layers else None)
        return "The model" if first is None else f"Layer {first.name!r} ({type(first).__name__})"

    @property
    def built(self) -> bool:
        return (
            self._input_shape is not None
            and all(layer.built for layer in self._layers)
            and bool(self._layers)
        )

    def build(self, input_shape=None, input_dim: int | None = None) -> None:
        """Create the weights for rows of ``input_dim`` features, or for samples of
        ``input_shape`` (Keras's, with the batch axis first: ``(None, d)``, ``(None, 8, 8, 1)``)."""
        if input_shape is not None:
            shape = tuple(input_shape)
            shape = shape[1:] if len(shape) > 1 else shape  # the batch axis
        elif input_dim is not None:
            shape = data.sample_shape(input_dim, "input_dim")
        else:
            shape = self._input_shape
        if shape is None:
            raise ValueError("build needs the number of input features: model.build(input_dim=...)")
        shape = data.sample_shape(shape, "input_dim" if len(shape) == 1 else "input_shape")
        if self._input_shape is not None and shape != self._input_shape:
            if len(shape) == len(self._input_shape) == 1:
                raise ValueError(
                    f"The model expects {self.input_dim} input feature(s). Received: input_dim={shape[0]}"
                )
            raise ValueError(
                f"The model expects samples of shape {self._input_shape}. "
                f"Received: input_shape={(None, *shape)}"
            )
        if not self._layers:
            raise ValueError("The model has no layers: add some with model.add(...)")
        if self._input_layer is not None:
            self._input_layer.build(shape)
        self._input_shape = shape
        for layer in self._layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self._invalidate()

    @property
    def weights(self) -> list[Variable]:
        return [w for layer in self._layers for w in layer.weights]

    def _build_from_weights(self, stored):
        if not self.built and self._layers and self._input_shape is not None:
            self.build()
        if not self.built and self._layers:  # the first kernel tells the input size
            kernel = stored.get(f"{self._layers[0].name}/kernel")
            if kernel is not None and kernel.ndim == 2:
                self.build(input_dim=kernel.shape[0])

    def _restorable(self) -> list:
        return [self, self._input_layer, *self._layers]

    def _forward(self, training: bool = True) -> TrainingGraph:
        return forward(self._layers, self._input_dim, training, self._mask_seed)

    def _check_inputs(self, x: np.ndarray, name: str) -> None:
        if self._layers:
            self._layers[0].check_input(x, name)

    # -- as a layer of a functional model (or called on expressions)
    def _input_widths(self) -> list[int | None]:
        return [self._input_dim]

    def _input_shapes(self) -> list[tuple[int, ...] | None]:
        return [self._input_shape]

    @property
    def inner_layers(self) -> list[Layer]:
        """The layers whose names this model brings into a model that calls it."""
        return list(self._layers)

    def _connect(self, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        if len(shapes) != 1:
            raise ValueError(
                f"Model {self.name!r} (Sequential) takes one input tensor. "
                f"Received: {len(shapes)} tensors of shapes {[(None, *s) for s in shapes]}"
            )
        self.build(input_shape=(None, *shapes[0]))
        return [self.output_shape]

    def _apply(self, exprs: list[MatrixExpr], names: Names) -> list[MatrixExpr]:
        a = exprs[0]
        for layer in self._layers:
            a = layer.call(a, names)
        return [a]

    # ------------------------------------------------------------------
    # Whole-model files

    def get_config(self) -> dict:
        return {
            "class_name": "Sequential",
            "name": self.name,
            "input_dim": self.input_dim,
            "input_shape": None if self._input_shape is None else list(self._input_shape),
            "layers": [config_module.entry(layer) for layer in self._layers],
            **self._compile_config(),
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Sequential:
        model = cls(name=config.get("name"))
        for item in config["layers"]:
            model.add(config_module.from_entry(item, custom_objects))
        if config.get("input_shape") is not None and model.input_shape is None:
            model._input_shape = tuple(config["input_shape"])
        elif config.get("input_dim") is not None and model.input_dim is None:
            model._input_dim = config["input_dim"]
        return model

    # ------------------------------------------------------------------
    # Inspection

    def _summary_rows(self) -> list[SummaryRow]:
        graph = forward(self._layers, self._input_dim) if self.built else None
        rows = []
        for i, layer in enumerate(self._layers):
            dims = self._output_shape_of(self._layers[: i + 1])
            params = str(layer.count_params()) if layer.built or not layer.weights else "?"
            if not layer.built and isinstance(layer, layers_module.Dense):
                params = "? (unbuilt)"
            computes = graph.layer_names.get(layer.name, []) if graph is not None else []
            rows.append(
                SummaryRow(
                    f"{layer.name} ({type(layer).__name__})",
                    f"{(None, *dims)}" if dims is not None else "(None, ?)",
                    params,
                    list(computes),
                )
            )
        return rows

    def summary(self, print_fn=None) -> None:
        """Print layers, output shapes, parameter counts and the formula each layer computes."""
        rows = self._summary_rows()
        # columns as wide as their longest entry (images: (None, 8, 8, 16)), at least as before
        name_w = max([28, *(len(r.label) + 1 for r in rows)])
        shape_w = max([14, *(len(r.shape) + 1 for r in rows)])
        width = 90 + (name_w - 28) + (shape_w - 14)
        rule, double = "_" * width, "=" * width
        lines = [
            f'Model: "{self.name}"',
            rule,
            f" {'Layer (type)':<{name_w}}{'Output Shape':<{shape_w}}{'Param #':>11}   Computes",
            double,
        ]
        indent = 1 + name_w + shape_w + 11 + 3
        for i, row in enumerate(rows):
            computes = [f"{n.name} = {sstr(n.body)}" for n in row.computes] or [""]
            lines.append(
                f" {row.label:<{name_w}}{row.shape:<{shape_w}}{row.params:>11}   {computes[0]}"
            )
            lines += [" " * indent + text for text in computes[1:]]
            if i + 1 < len(rows):
                lines.append("")
        self._print_summary(lines, print_fn, rule, double)

    def __repr__(self) -> str:
        return f"<Sequential name={self.name} layers={[layer.name for layer in self._layers]}>"


MODELS: dict[str, type] = {"Sequential": Sequential}
"""Model classes by the ``class_name`` of their configs (``Functional`` adds itself)."""


def _loss_spec(loss):
    """A compile ``loss`` as JSON: names (per output: a list or dict of them); ``None`` for a
    custom loss, which has no config."""
    if isinstance(loss, (list, tuple)):
        return [_loss_spec(v) for v in loss]
    if isinstance(loss, dict):
        return {k: _loss_spec(v) for k, v in loss.items()}
    if isinstance(loss, str):
        return loss
    if isinstance(loss, losses.Loss) and loss.name in losses.LOSSES:
        return {"name": loss.name, "from_logits": bool(loss.from_logits)}
    return None


def _read_loss(spec):
    if isinstance(spec, list):
        return [_read_loss(v) for v in spec]
    if isinstance(spec, dict) and "name" not in spec:
        return {k: _read_loss(v) for k, v in spec.items()}
    if isinstance(spec, dict):
        loss = losses.get(spec["name"])
        loss.from_logits = bool(spec.get("from_logits", False))
        return loss
    return spec


def _has_custom(spec) -> bool:
    if isinstance(spec, list):
        return any(_has_custom(v) for v in spec)
    if isinstance(spec, dict) and "name" not in spec:
        return any(_has_custom(v) for v in spec.values())
    return spec is None


def _metric_spec(metrics):
    """The metrics as given (a list, or a dict by output) as JSON data: names as they are,
    metric objects as their class and config; plain functions are left out (no config)."""
    if isinstance(metrics, dict):
        return {k: _metric_spec(v) for k, v in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        return [spec for spec in map(_metric_spec, metrics) if spec is not None]
    return metrics_module.serialize(metrics)


def _read_metrics(spec, custom_objects=None):
    if isinstance(spec, list):
        return [_read_metrics(v, custom_objects) for v in spec]
    if isinstance(spec, dict) and "class_name" not in spec:
        return {k: _read_metrics(v, custom_objects) for k, v in spec.items()}
    return None if spec is None else metrics_module.deserialize(spec, custom_objects)


def _compile_from_config(model: Model, settings: dict, custom_objects=None) -> None:
    loss = settings["loss"]
    if _has_custom(loss):
        raise ValueError(
            "The saved model was compiled with a custom loss: load it with compile=False"
        )
    if (
        isinstance(loss, str) and "from_logits" in settings
    ):  # files written before per-output losses
        loss = {"name": loss, "from_logits": settings["from_logits"]}
    kwargs = {}
    if settings.get("loss_weights") is not None:
        kwargs["loss_weights"] = settings["loss_weights"]
    metrics = _read_metrics(settings.get("metrics"), custom_objects)
    if isinstance(metrics, list):
        metrics = [m for m in metrics if m is not None] or None
    if settings.get("weighted_metrics") is not None:
        kwargs["weighted_metrics"] = _read_metrics(settings["weighted_metrics"], custom_objects)
    if settings.get("threads") is not None:
        kwargs["threads"] = settings["threads"]
    model.compile(
        optimizer=optimizers.from_config(settings["optimizer"]),
        loss=_read_loss(loss),
        metrics=metrics,
        backend=settings["backend"],
        dtype=settings["dtype"],
        **kwargs,
    )


def model_from_config(config: dict, custom_objects: dict | None = None) -> Model:
    """A new model (unbuilt weights, not compiled) from ``model.get_config()``'s dict.

    ``custom_objects`` maps class names to a user's layer or initializer classes.
    """
    from symgrad.nn import functional  # noqa: F401 - Functional registers itself in MODELS

    name = config.get("class_name", "Sequential")
    cls = MODELS.get(name)
    if cls is None:
        raise ValueError(f"Unknown model class in a config: {name!r}. Known: {', '.join(MODELS)}")
    return cls.from_config(config, custom_objects)


def model_from_json(text: str, custom_objects: dict | None = None) -> Model:
    """The model of ``model.to_json()``'s text (new weights, not compiled)."""
    return model_from_config(json.loads(text), custom_objects)


def clone_model(model: Model) -> Model:
    """A new model of the same architecture with new layers (fresh weights), as Keras's."""
    config = {k: v for k, v in model.get_config().items() if k != "compile"}
    return model_from_config(config)


def _restore(config: dict, arrays: dict, compile: bool, custom_objects=None) -> Model:  # noqa: A002
    """A model from its config and ``save_weights``' arrays (compiled as saved)."""
    model = model_from_config(config, custom_objects)
    settings = config.get("compile")
    if compile and settings is not None:
        _compile_from_config(model, settings, custom_objects)
    if arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        buffer.seek(0)
        model.load_weights(buffer)
    return model


def _unpickle(config: str, arrays: dict, rngs, custom_objects=None) -> Model:
    model = _restore(json.loads(config), arrays, compile=True, custom_objects=custom_objects)
    model._init_rng.bit_generator.state, model._shuffle_rng.bit_generator.state = rngs
    return model


def load_model(
    filepath: str | os.PathLike,
    compile: bool = True,  # noqa: A002 - Keras's name
    custom_objects: dict | None = None,
) -> Model:
    """A model saved with ``model.save``: architecture, weights, optimizer state.

    Custom activations are stored as formula graphs and read back by
    ``codegen.serial``'s decoder, which builds only SymPy and symgrad scalar
    classes: nothing in the file is evaluated.
    """
    stored = read_npz(filepath, "a model file (model.save)")
    if "__config__" not in stored:
        raise ValueError(
            f"{_file_name(filepath)} holds no model config; was it written by model.save()?"
        )
    config = json.loads(str(stored.pop("__config__")))
    return _restore(config, stored, compile, custom_objects)
