"""symgrad.nn.functional: models that are graphs of layers, as Keras's functional API.

``Input`` gives a symbolic tensor; calling a layer on symbolic tensors records a
:class:`~symgrad.nn.layers.Node` (the layer and its inputs) and returns the
output tensors; ``Model(inputs, outputs)`` walks the nodes back from the outputs
and replays them on matrix symbols to get the forward graph.  A layer called
twice is one set of weights used twice: the reverse sweep sums the cotangents
of both uses.

Example::

    >>> from symgrad.nn.layers import Dense, Input
    >>> from symgrad.nn.merge import Add
    >>> from symgrad.nn.models import MODELS, Model
    >>> x = Input(shape=(64,))
    >>> h = Dense(64, activation="relu")(x)
    >>> p = Dense(10, activation="softmax")(Add()([x, h]))
    >>> model = Model(x, p, name="residual")
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sympy.matrices.expressions import MatrixExpr

from symgrad import core as E
from symgrad.nn import config as config_module
from symgrad.nn import outputs as outputs_module
from symgrad.nn import regularizers
from symgrad.nn import validation as data
from symgrad.nn.layers import Input, InputLayer, KerasTensor, Names, Node, Variable, snake_case
from symgrad.nn.models import MODELS, Model, SummaryRow
from symgrad.nn.trainer import Programs, TrainingGraph

# --------------------------------------------------------------------------
# Graphs of symbolic tensors


class Scope:
    """The layer names taken in one graph; graphs joined by a call share one scope."""

    def __init__(self) -> None:
        self.layers: dict[str, object] = {}
        self.joined: Scope | None = None

    def root(self) -> Scope:
        scope = self
        while scope.joined is not None:
            scope = scope.joined
        return scope

    def join(self, other: Scope) -> Scope:
        a, b = self.root(), other.root()
        if a is not b:
            for name, layer in b.layers.items():
                if name in a.layers and a.layers[name] is not layer and _renameable(layer):
                    _rename(layer, a)  # two branches both have a "dense": the second is renamed
                else:
                    a.claim(layer)
            b.joined = a
        return a

    def claim(self, layer) -> None:
        """Give an unnamed layer the first free Keras name; refuse a name used by another."""
        if getattr(layer, "_name", None) is None:
            name = E.fresh_name(snake_case(type(layer).__name__), set(self.layers))
            layer._name, layer._auto_named = name, True
        owner = self.layers.setdefault(layer.name, layer)
        if owner is not layer:
            raise ValueError(
                f"Two layers of one model are named {layer.name!r} ({owner!r} and {layer!r}); "
                "layer names must be unique: pass name=... to one of them"
            )
        for inner in getattr(layer, "inner_layers", ()):  # a model used as a layer
            self.claim(inner)


def _renameable(layer) -> bool:
    """A layer symgrad named whose weights have no values yet (their symbols can be remade)."""
    return getattr(layer, "_auto_named", False) and all(w.value is None for w in layer.weights)


def _rename(layer, scope: Scope) -> None:
    """The next free name in ``scope``; the weights are built again under it."""
    layer._name = None
    scope.claim(layer)
    if layer.built:
        dim, layer.built = layer.input_dim, False
        layer.build(dim)


def input_tensor(layer: InputLayer) -> KerasTensor:
    """The symbolic tensor of an input layer (``Input(shape=...)``)."""
    scope = Scope()
    scope.claim(layer)
    layer.build(layer.declared_input_shape)
    node = Node(layer, [], [], scope)
    node.outputs.append(KerasTensor(layer.declared_input_shape, node))
    return node.outputs[0]


def _tensors(inputs, who: str) -> list[KerasTensor]:
    tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    for t in tensors:
        if not isinstance(t, KerasTensor):
            what = f"an array of shape {np.shape(t)}" if hasattr(t, "shape") else repr(t)
            raise TypeError(
                f"{who} takes symbolic tensors (from Input(shape=...) or a layer call), "
                f"NumPy arrays or tape tensors. Received: {what} "
                f"(of type {type(t).__name__})"
            )
    if not tensors:
        raise ValueError(f"{who} needs at least one input tensor. Received: inputs={inputs!r}")
    return tensors


def call_layer(layer, inputs) -> KerasTensor | list[KerasTensor]:
    """``layer(inputs)`` on symbolic tensors: one node more; its output tensor(s)."""
    tensors = _tensors(inputs, f"Layer {getattr(layer, 'name', layer)!r}")
    scope = tensors[0].node.scope.root()
    for t in tensors[1:]:
        scope = scope.join(t.node.scope)
    scope.claim(layer)
    shapes = layer._connect([t.sample_shape for t in tensors])
    node = Node(layer, tensors, [], scope)
    node.outputs.extend(KerasTensor(shape, node, i) for i, shape in enumerate(shapes))
    return node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)


def nodes_behind(outputs: Sequence[KerasTensor]) -> list[Node]:
    """Every node the outputs depend on, inputs first (a topological order)."""
    order: list[Node] = []
    seen: set[int] = set()

    def visit(node: Node) -> None:  # graphs of layers are shallow: recursion is fine
        if id(node) in seen:
            return
        seen.add(id(node))
        for t in node.inputs:
            visit(t.node)
        order.append(node)

    for t in outputs:
        visit(t.node)
    return order


def replay(nodes, values: dict[int, MatrixExpr], names: Names, made: dict | None = None):
    """Each node's ``_apply`` in order on the expressions in ``values`` (tensor id -> expr).

    ``made`` (layer name -> Named intermediates) collects what each layer computes.
    """
    for node in nodes:
        if not node.inputs:
            continue  # an input: its value is given
        args = [values[id(t)] for t in node.inputs]
        seen = set(E.topological(args))
        outs = node.layer._apply(args, names)
        for t, out in zip(node.outputs, outs):
            values[id(t)] = out
        if made is not None:
            new = [n for n in E.topological(outs) if isinstance(n, E.Named) and n not in seen]
            made.setdefault(node.layer.name, []).extend(new)
    return values


def expression(tensor: KerasTensor) -> MatrixExpr:
    """The matrix expression a tensor stands for, in the symbols ``X_<input name>``."""
    nodes = nodes_behind([tensor])
    values = {
        id(node.outputs[0]): E.matrix(f"X_{node.layer.name}", E.batch(), node.outputs[0].dim)
        for node in nodes
        if not node.inputs
    }
    return replay(nodes, values, Names())[id(tensor)]


def _leaf_layers(model) -> list:
    """Every layer of ``model`` and of the models nested in it (those hold no weights)."""
    out = []
    for layer in model.layers:
        out += _leaf_layers(layer) if hasattr(layer, "inner_layers") else [layer]
    return out


def named_blocks(packed: MatrixExpr, letter: str, parts: list[tuple[str, int]]) -> list[E.Named]:
    """The column blocks of ``packed``, side by side, each named ``<letter>_<name>``:
    ``X_a = X[:, 0:3]``, ``X_b = X[:, 3:5]`` for ``parts`` ``[("a", 3), ("b", 2)]``."""
    blocks, start = [], 0
    for name, width in parts:
        blocks.append(E.name(f"{letter}_{name}", E.column_slice(packed, start, start + width)))
        start += width
    return blocks


def _same_lengths(arrays: list[np.ndarray], names: list[str]) -> None:
    for a, name in zip(arrays[1:], names[1:]):
        data.check_same_length(arrays[0], a, names[0], name)


# --------------------------------------------------------------------------
# The model


class Functional(Model):
    """A model whose layers form a graph: ``Model(inputs, outputs, name=...)``.

    ``compile``, ``fit``, ``evaluate``, ``predict``, the weights and their files,
    ``gradient_formulas`` and ``explain`` are those of every model; ``summary``
    shows each layer's inbound layers.  Called on symbolic tensors the model is
    a layer of another model.
    """

    def __init__(self, inputs, outputs, name: str | None = None):
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise ValueError(f"Model names must be Python identifiers. Received: name={name!r}")
        self.name = name or "functional"
        self._name = self.name
        super().__init__()
        self.inputs = _tensors(inputs, "Model inputs")
        self.outputs = _tensors(outputs, "Model outputs")
        self._single = (
            not isinstance(inputs, (list, tuple)),
            not isinstance(outputs, (list, tuple)),
        )
        for t in self.inputs:
            if t.node.inputs:
                raise ValueError(
                    f"Model inputs must come from Input(shape=...). Received: {t!r}, the output "
                    f"of layer {t.name!r}"
                )
        self._nodes = nodes_behind(self.outputs)
        reached = {id(node) for node in self._nodes}
        given = {id(t.node) for t in self.inputs}
        for node in self._nodes:
            if not node.inputs and id(node) not in given:
                raise ValueError(
                    f"The model's outputs depend on the input {node.layer.name!r}, which is not "
                    f"in inputs={[t.name for t in self.inputs]}"
                )
        for t in self.inputs:
            if id(t.node) not in reached:
                raise ValueError(
                    f"The model's outputs {[o.name for o in self.outputs]} do not depend on the "
                    f"input {t.name!r}: every input must be used"
                )
        for kind, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [t.name for t in tensors]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(
                    f"The model's {kind} need distinct names (they key the data): {twice} "
                    f"is used more than once. Received: {kind}={names}"
                )
        self.built = True
        for layer in _leaf_layers(self):  # a weight read first gets its value from this model
            layer.model = self

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def _blocks(self) -> list[outputs_module.Block]:
        """Where each output sits in the packed ``P`` (and its targets in ``Y``)."""
        blocks, start = [], 0
        for t in self.outputs:
            blocks.append(outputs_module.Block(t.name, start, start + t.dim))
            start += t.dim
        return blocks

    # ------------------------------------------------------------------
    # Structure

    @property
    def layers(self) -> list:
        """Every layer once, in the order of the graph (input layers first)."""
        out: list = []
        for node in self._nodes:
            if all(layer is not node.layer for layer in out):
                out.append(node.layer)
        return out

    @property
    def inner_layers(self) -> list:
        """The layers whose names this model brings into a model that calls it."""
        return [layer for layer in self.layers if not isinstance(layer, InputLayer)]

    @property
    def weights(self) -> list[Variable]:
        out: list[Variable] = []
        for layer in self.layers:
            out += [w for w in layer.weights if all(w is not v for v in out)]
        return out

    @property
    def input_dim(self) -> int:
        """Columns of the packed input ``X = [X_a | X_b ...]``."""
        return sum(t.dim for t in self.inputs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input sample (several inputs: the packed row)."""
        return self.inputs[0].sample_shape if len(self.inputs) == 1 else (self.input_dim,)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.outputs[0].sample_shape if len(self.outputs) == 1 else (self.output_dim,)

    def _input_reader(self) -> str:
        return f"Input {self.inputs[0].name!r}" if len(self.inputs) == 1 else "The model"

    @property
    def output_dim(self) -> int:
        """Columns of the packed output ``P = [P_a | P_b ...]``."""
        return sum(t.dim for t in self.outputs)

    def build(self, input_shape=None, input_dim: int | None = None) -> None:
        """A functional model is built when it is made; checks the input size given."""
        if input_shape is not None:
            input_dim = input_shape[-1]
        if input_dim is not None and input_dim != self.input_dim:
            raise ValueError(
                f"The model expects {self.input_dim} input feature(s). Received: input_dim={input_dim}"
            )

    def input_blocks(self, x: MatrixExpr) -> list[MatrixExpr]:
        """What stands for each input in a graph on the packed rows ``x``: ``x`` itself for
        one input, else each input's named column block ``X_<name> = x[:, start:stop]``
        (the forward graph, the tape's model calls and the separate programs of emit all
        take them from here)."""
        if len(self.inputs) == 1:
            return [x]
        return named_blocks(x, "X", [(t.name, t.dim) for t in self.inputs])

    def _forward(self, training: bool = True) -> TrainingGraph:
        """``X -> P``; several inputs are column blocks ``X_<name>`` of one ``X``, several
        outputs ``P_<name>`` blocks of one ``P`` (one matrix each for the step and the epoch)."""
        x = E.matrix("X", E.batch(), self.input_dim)
        given = {id(t): block for t, block in zip(self.inputs, self.input_blocks(x))}
        made: dict[str, list[E.Named]] = {}
        names = Names(training, self._mask_seed)
        values = replay(self._nodes, given, names, made)
        outs = [values[id(t)] for t in self.outputs]
        if len(outs) == 1:
            shown = [E.name("P", outs[0].body if isinstance(outs[0], E.Named) else outs[0])]
        else:
            shown = [
                E.name(f"P_{t.name}", o.body if isinstance(o, E.Named) else o)
                for t, o in zip(self.outputs, outs)
            ]
        for named in made.values():  # an output's last intermediate shows as P (P_<name>)
            named[:] = [shown[outs.index(n)] if n in outs else n for n in named]
        output = shown[0] if len(shown) == 1 else E.name("P", E.concat(*shown))
        for t, p in zip(self.outputs, shown):  # an output's penalty is a penalty of P_<name>
            values[id(t)] = p
        penalties = self._penalties(values)
        return TrainingGraph(
            x, output, self.weights, made, penalties=penalties, states=names.states
        )

    def _penalties(self, values: dict) -> list[MatrixExpr]:
        """Each layer's weight penalties once, its activity penalty once per call (as Keras)."""
        terms, seen = [], set()
        for node in self._nodes:
            if not node.inputs:
                continue
            first = id(node.layer) not in seen
            seen.add(id(node.layer))
            for t in node.outputs:
                out = values[id(t)]
                terms += [
                    term
                    for term in regularizers.layer_penalties(node.layer, out)
                    if first or term.has(out)  # a later call adds its activity term only
                ]
        return terms

    # ------------------------------------------------------------------
    # Several inputs and outputs: Keras's arguments, packed for the trainer

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, **kwargs):
        """As :meth:`Trainer.compile`; with several outputs ``loss``, ``loss_weights`` and
        ``metrics`` may be lists (output order) or dicts keyed by output name, as in Keras."""
        given = {"loss": loss, "metrics": metrics, "loss_weights": loss_weights}
        if kwargs.get("weighted_metrics") is not None:
            given["weighted_metrics"] = kwargs["weighted_metrics"]
        blocks = self._blocks()
        if len(blocks) > 1 and kwargs.get("weighted_metrics"):
            raise ValueError(
                "weighted_metrics works for models with one output; this one has "
                f"{len(blocks)} ({', '.join(self.output_names)}). "
                f"Received: weighted_metrics={kwargs['weighted_metrics']!r}"
            )
        if len(blocks) == 1 and loss_weights is None:
            (loss,) = outputs_module.per_output(loss, self.output_names, "loss")
            (metrics,) = outputs_module._metric_lists(metrics, self.output_names)
            super().compile(optimizer, loss, metrics or None, **kwargs)
        elif loss is None:
            super().compile(optimizer, loss, metrics, **kwargs)  # its error
        else:
            packed, wrapped = outputs_module.resolve(loss, loss_weights, metrics, blocks)
            super().compile(optimizer, packed, wrapped, **kwargs)
        self._compile_arguments = given  # as the user wrote them (configs, pickles)

    def _arrays(self, value, names: list[str], what: str, kind: str) -> list:
        """Keras's forms of data for several inputs (outputs): a dict by name or a list."""
        if isinstance(value, dict):
            missing = [k for k in names if k not in value]
            if missing:
                raise ValueError(
                    f"No data for the model {kind} {missing}. Received: {what} with keys "
                    f"{list(value)}; the model's {kind}s are {names}"
                )
            unknown = [k for k in value if k not in names]
            if unknown:
                raise ValueError(
                    f"{what} has data for {unknown}, which is no {kind} of the model "
                    f"(its {kind}s are {names})"
                )
            return [value[k] for k in names]
        if len(names) == 1:
            return [value]
        if not isinstance(value, (list, tuple)) or len(value) != len(names):
            got = (
                f"{len(value)} arrays" if isinstance(value, (list, tuple)) else type(value).__name__
            )
            raise ValueError(
                f"The model has {len(names)} {kind}s {names}: pass {what} as a list of "
                f"{len(names)} arrays or a dict keyed by {kind} name. Received: {got}"
            )
        return list(value)

    def _pack_x(self, x, name: str) -> np.ndarray:
        arrays = self._arrays(x, self.input_names, name, "input")
        if len(arrays) == 1:
            return arrays[0]
        checked = []
        for t, a in zip(self.inputs, arrays):
            what = f"{name}[{t.name!r}]"
            checked.append(data.as_samples(a, what, t.sample_shape, f"Input {t.name!r}")[0])
        _same_lengths(checked, [f"{name}[{t.name!r}]" for t in self.inputs])
        return np.concatenate(checked, axis=1)

    def _prepare_x(self, x, name: str = "x") -> np.ndarray:
        return super()._prepare_x(self._pack_x(x, name), name)

    def _check_inputs(self, x: np.ndarray, name: str) -> None:
        """The layers called on an input check its block of the packed rows."""
        start, blocks = 0, {}
        for t in self.inputs:
            shown = name if len(self.inputs) == 1 else f"{name}[{t.name!r}]"
            blocks[id(t)] = (x[:, start : start + t.dim], shown)
            start += t.dim
        for node in self._nodes:
            for t in node.inputs:
                if id(t) in blocks and hasattr(node.layer, "check_input"):
                    node.layer.check_input(*blocks[id(t)])

    def _prepare_xy(self, x, y, names: tuple[str, str] = ("x", "y")):
        x = self._pack_x(x, names[0])
        if isinstance(self.loss, outputs_module.OutputLosses):
            ys = self._arrays(y, self.output_names, names[1], "output")
            labels = [
                data.as_labels(v, f"{names[1]}[{k!r}]") for k, v in zip(self.output_names, ys)
            ]
            _same_lengths(labels, [f"{names[1]}[{k!r}]" for k in self.output_names])
            y = self.loss.prepare(labels)
        return super()._prepare_xy(x, y, names)

    def _split(self, p: np.ndarray):
        """The packed predictions as one array per output (a list, as Keras returns them)."""
        if len(self.outputs) == 1:
            return p
        return [p[:, b.start : b.stop] for b in self._blocks()]

    def predict(self, x, batch_size: int | None = None, verbose=0, callbacks=None):
        return self._split(
            super().predict(x, batch_size=batch_size, verbose=verbose, callbacks=callbacks)
        )

    def predict_on_batch(self, x):
        return self._split(super().predict_on_batch(x))

    # -- as a layer of another model (or called on expressions)
    def _input_widths(self) -> list[int]:
        return [t.dim for t in self.inputs]

    def _input_shapes(self) -> list[tuple[int, ...]]:
        return [t.sample_shape for t in self.inputs]

    def _connect(self, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        expected = [t.sample_shape for t in self.inputs]
        if [tuple(s) for s in shapes] != expected:
            raise ValueError(
                f"Model {self.name!r} expects inputs of shapes {[(None, *s) for s in expected]}. "
                f"Received: tensors of shapes {[(None, *s) for s in shapes]}"
            )
        return [t.sample_shape for t in self.outputs]

    def _apply(self, exprs: list[MatrixExpr], names: Names) -> list[MatrixExpr]:
        values = replay(self._nodes, {id(t): e for t, e in zip(self.inputs, exprs)}, names)
        return [values[id(t)] for t in self.outputs]

    # ------------------------------------------------------------------
    # Files

    def get_config(self) -> dict:
        """The graph as JSON data: each layer's entry once, then each call (a node) in
        order with the tensors it reads as ``[layer, call, output]``; inputs and outputs."""
        calls: dict[int, int] = {}
        where: dict[int, list] = {}
        nodes = []
        for node in self._nodes:
            k = calls[id(node.layer)] = calls.get(id(node.layer), -1) + 1
            for t in node.outputs:
                where[id(t)] = [node.layer.name, k, t.index]
            if node.inputs:
                nodes.append(
                    {"layer": node.layer.name, "inputs": [where[id(t)] for t in node.inputs]}
                )
        return {
            "class_name": "Functional",
            "name": self.name,
            "layers": [config_module.entry(layer) for layer in self.layers],
            "nodes": nodes,
            "inputs": [where[id(t)] for t in self.inputs],
            "outputs": [where[id(t)] for t in self.outputs],
            "single": list(self._single),
            **self._compile_config(),
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Functional:
        """The model of ``get_config()``'s dict: new layers, called as the nodes say."""
        tensors: dict[tuple, list] = {}
        layers: dict[str, object] = {}
        for item in config["layers"]:
            if item["class_name"] == "InputLayer":
                c = item["config"]
                tensors[(c["name"], 0)] = [Input(shape=c["shape"], name=c["name"])]
            else:
                layer = config_module.from_entry(item, custom_objects)
                layers[layer.name] = layer
        calls: dict[str, int] = {}
        for node in config["nodes"]:
            name = node["layer"]
            if name not in layers:
                raise ValueError(
                    f"A node of model {config.get('name')!r} calls layer {name!r}, which is not "
                    f"in its layers: {', '.join(layers)}"
                )
            args = [tensors[(lname, k)][i] for lname, k, i in node["inputs"]]
            out = layers[name](args if len(args) > 1 else args[0])
            k = calls[name] = calls.get(name, -1) + 1
            tensors[(name, k)] = out if isinstance(out, list) else [out]
        inputs = [tensors[(name, k)][i] for name, k, i in config["inputs"]]
        outputs = [tensors[(name, k)][i] for name, k, i in config["outputs"]]
        single_in, single_out = config.get("single", (False, False))
        return cls(
            inputs[0] if single_in else inputs,
            outputs[0] if single_out else outputs,
            name=config.get("name"),
        )

    # ------------------------------------------------------------------
    # Inspection

    def _inbound(self) -> dict[int, list[str]]:
        """Layer id -> the ``layer[call][output]`` tensors each of its calls reads, as Keras."""
        calls: dict[int, int] = {}
        index: dict[int, tuple[str, int]] = {}
        inbound: dict[int, list[str]] = {}
        for node in self._nodes:
            k = calls.get(id(node.layer), 0)
            calls[id(node.layer)] = k + 1
            for t in node.outputs:
                index[id(t)] = (node.layer.name, k)
            inbound.setdefault(id(node.layer), []).extend(
                f"{index[id(t)][0]}[{index[id(t)][1]}][{t.index}]" for t in node.inputs
            )
        return inbound

    def _summary_rows(self) -> list[SummaryRow]:
        graph = self._forward()
        inbound = self._inbound()
        return [
            SummaryRow(
                f"{layer.name} ({type(layer).__name__})",
                f"{(None, *self._output_shape(layer))}",
                str(layer.count_params()),
                list(graph.layer_names.get(layer.name, [])),
                ", ".join(inbound.get(id(layer), [])) or "-",
            )
            for layer in self.layers
        ]

    def summary(self, print_fn=None) -> None:
        """Layers, output shapes, parameters, inbound layers and the formula each layer computes."""
        rule, double = "_" * 98, "=" * 98
        lines = [
            f'Model: "{self.name}"',
            rule,
            f" {'Layer (type)':<30}{'Output Shape':<14}{'Param #':>9}   Connected to",
            double,
        ]
        rows = self._summary_rows()
        for i, row in enumerate(rows):
            lines.append(f" {row.label:<30}{row.shape:<14}{row.params:>9}   {row.connected}")
            lines += [f"{'':<57}{n.name} = {n.body}" for n in row.computes]
            if i + 1 < len(rows):
                lines.append("")
        self._print_summary(lines, print_fn, rule, double)

    def _output_shape(self, layer) -> tuple[int, ...]:
        for node in self._nodes:
            if node.layer is layer:
                return node.outputs[0].sample_shape
        raise KeyError(layer.name)

    def __repr__(self) -> str:
        return f"<Functional name={self.name} layers={[layer.name for layer in self.layers]}>"


MODELS["Functional"] = Functional


# --------------------------------------------------------------------------
# Programs with one argument per input and output (the C functions symgrad.emit writes)


class SeparatePrograms(Programs):
    """The model's programs with each input ``X_<name>``, each output's targets
    ``Y_<name>`` and predictions ``P_<name>`` a matrix of its own, instead of column
    blocks of one packed ``X`` / ``Y`` / ``P``: the C functions take one pointer each.

    The packed symbols occur in the derived formulas only inside the named blocks
    (``X_a = X[:, 0:3]``) and the metrics' slices of ``Y``; those are swapped for
    symbols before compiling, and a formula that still reads the packed matrix is an
    error. No whole-epoch loop: it gathers rows of one ``X`` and one ``Y``.
    """

    def __init__(self, model: Functional, programs: Programs):
        g = programs.graph
        super().__init__(
            g, programs.optimizer, programs.with_predictions, programs.backend.name,
            programs.dtype, programs.metrics, programs.threads,
        )  # fmt: skip
        self.parts: dict[MatrixExpr, list[MatrixExpr]] = {}
        self.swap: dict[MatrixExpr, MatrixExpr] = {}
        if len(model.inputs) > 1:
            self._split(g.x, model.input_blocks(g.x))
        if len(model.outputs) > 1:
            parts = [(b.name, b.stop - b.start) for b in model._blocks()]
            self._split(g.y, named_blocks(g.y, "Y", parts))
        self.output_names = [t.name for t in model.outputs] if len(model.outputs) > 1 else None

    def _split(self, packed, blocks: list[E.Named]) -> None:
        """Each named block of ``packed`` (and its bare slice) becomes a symbol of its name."""
        symbols = []
        for block in blocks:
            symbol = E.matrix(block.name, *block.shape)
            self.swap[block.body] = symbol
            self.swap[block] = symbol
            symbols.append(symbol)
        self.parts[packed] = symbols

    def _separate(self, expr: MatrixExpr) -> MatrixExpr:
        out = expr.xreplace(self.swap)
        for packed in self.parts:
            if out.has(packed):
                raise NotImplementedError(
                    f"a formula of this model reads {packed.name} as a whole, so its programs "
                    f"cannot take one argument per input and output: {out}"
                )
        return out

    def _outputs(self, outputs: dict) -> dict:
        separated = {}
        for key, expr in outputs.items():
            body = expr.body if isinstance(expr, E.Named) else expr
            if key == "P" and self.output_names is not None and isinstance(body, E.Concat):
                for name, part in zip(self.output_names, body.args):
                    separated[f"P_{name}"] = self._separate(part)
            else:
                separated[key] = self._separate(expr)
        return separated

    def _compile(self, name, inputs, outputs, **kwargs):
        inputs = [part for s in inputs for part in self.parts.get(s, [s])]
        for key in ("updates", "checks"):
            if kwargs.get(key):
                kwargs[key] = {k: self._separate(v) for k, v in kwargs[key].items()}
        kwargs["epoch"] = None
        return super()._compile(name, inputs, self._outputs(outputs), **kwargs)
