"""symgrad.nn.layers: Keras-style layers that build symbolic matrix graphs.

A layer turns the symbolic matrix of its input rows into the symbolic matrix of
its output rows (``call``) and owns its weights (:class:`Variable`: a Keras path
``dense_1/kernel``, a SymPy ``MatrixSymbol`` ``dense_1_kernel`` and a NumPy
value).  Intermediates get short names so the derived formulas and the
generated code read like a textbook: the k-th ``Dense`` computes ``Zk`` and,
with an activation, ``Ak``; the model's output is ``P``.

Example::

    >>> from symgrad.nn.layers import Dense
    >>> layer = Dense(4, activation="sigmoid", input_dim=3, name="dense")
    >>> layer.build(3)
    >>> [w.path for w in layer.weights]
    ['dense/kernel', 'dense/bias']
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr, MatrixSymbol

from symgrad import core as E
from symgrad.compiler import DTYPES
from symgrad.nn import config as config_module
from symgrad.nn import initializers, regularizers, seeds
from symgrad.nn import validation as data
from symgrad.nn.validation import non_negative_int, positive_int, sample_shape, width


@dataclass(eq=False)
class Variable:
    """A weight (or optimizer slot): Keras path, symbol, value, initializer, ``trainable``.

    The symbol is a matrix (a bias is one row, ``(1, units)``, so that it adds to
    every row of ``X W``; a convolution kernel one row per tap of the window) and
    ``value`` holds that matrix; ``shape``, ``numpy()`` and ``assign`` speak Keras's
    layout, where a bias (``vector=True``) is a vector ``(units,)`` and a kernel
    with a ``layout`` has that shape (``(kh, kw, channels, filters)``: the same
    entries, row-major) -- the layout of Keras's exported weights.  Arrays in the
    matrix layout (files written before this layout) are accepted too.

    ``trainable=False`` is also the state a layer updates itself in the compiled step
    (batch normalization's moving statistics, ``state=True``): saved and loaded with the
    weights, never differentiated nor touched by the optimizer, whatever the layer's flag.
    """

    path: str
    symbol: MatrixSymbol
    initializer: initializers.Initializer
    value: np.ndarray | None = None
    vector: bool = False
    trainable: bool = True
    layer: Layer | None = None  # its owner: gives it a value on first use (the model's seed)
    state: bool = False  # updated by its layer in the step, never trainable
    layout: tuple[int, ...] | None = None  # Keras's shape when not the matrix's (conv kernels)

    @property
    def name(self) -> str:
        return self.path

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """The shape of the symbol and of ``value``, what the compiled programs read."""
        return (int(self.symbol.shape[0]), int(self.symbol.shape[1]))

    @property
    def shape(self) -> tuple[int, ...]:
        """Keras's shape: ``(units,)`` for a bias, the ``layout`` of a convolution kernel,
        else the matrix shape."""
        if self.layout is not None:
            return self.layout
        rows, cols = self.matrix_shape
        return (cols,) if self.vector else (rows, cols)

    @property
    def size(self) -> int:
        rows, cols = self.matrix_shape
        return rows * cols

    def accepts(self, shape: tuple) -> bool:
        """Whether an array of ``shape`` can be this variable's value (either layout)."""
        return tuple(shape) in (self.shape, self.matrix_shape)

    def as_matrix(self, array: np.ndarray) -> np.ndarray:
        """``array`` (of an accepted shape) in the matrix layout of ``value``."""
        return np.reshape(array, self.matrix_shape)

    def _require_value(self) -> np.ndarray:
        model = getattr(self.layer, "model", None)
        if self.value is None and model is not None and model.built:
            model._materialize()  # initial values are drawn for all weights at once, in order
        if self.value is None and model is None and getattr(self.layer, "built", False):
            self.layer._initialize()  # a layer in no model: its own values, as Keras's build
        if self.value is None:
            raise ValueError(
                f"Variable {self.path} has no value yet: add its layer to a built model "
                "(give the first layer input_dim, or call model.build(input_dim=...))"
            )
        return self.value

    def numpy(self) -> np.ndarray:
        """A copy of the value, in Keras's shape."""
        return self._require_value().reshape(self.shape).copy()

    def assign(self, value) -> None:
        """Set the value in place (Keras's shape, or the matrix one); checked first."""
        target = self._require_value()
        target[...] = check_value(self, value)

    def __repr__(self) -> str:
        flag = "" if self.trainable else " trainable=False"
        return f"<Variable {self.path} shape={self.shape}{flag}>"


def check_value(var: Variable, value) -> np.ndarray:
    """``value`` as a finite float array in ``var``'s matrix layout, or a ValueError naming it."""
    array = data._numeric_array(value, var.path).astype(np.float64, copy=False)
    if not var.accepts(array.shape):
        layouts = (
            f"{var.shape}"
            if var.shape == var.matrix_shape
            else f"{var.shape} (or {var.matrix_shape})"
        )
        raise ValueError(
            f"Weight {var.path} has shape {layouts}. Received: an array of shape {np.shape(value)}"
        )
    data.check_finite(array, var.path)
    return var.as_matrix(array)


def check_values(variables: Sequence[Variable], values, what: str) -> list[np.ndarray]:
    """Every array of ``values`` checked against ``variables`` (count, shapes, finite) first."""
    if isinstance(values, np.ndarray) or not isinstance(values, (list, tuple)):
        raise TypeError(
            f"{what} takes a list of arrays ({', '.join(v.path for v in variables)}). "
            f"Received: {type(values).__name__}"
        )
    if len(values) != len(variables):
        raise ValueError(
            f"{what} expects {len(variables)} arrays "
            f"({', '.join(w.path for w in variables)}). Received: {len(values)} arrays"
        )
    return [check_value(var, value) for var, value in zip(variables, values)]


class Names:
    """Hands out names of intermediates: ``Z1``/``A1`` for the first Dense, ``M1`` for the
    first merge of a functional graph, and so on.

    It is also what one build of a graph knows about its purpose: ``training`` (the graph
    of ``fit``, with dropout and batch statistics, or that of ``predict`` / ``evaluate``)
    and ``seed``, the model's seed of the dropout masks (``compile(seed=...)``).
    """

    def __init__(self, training: bool = True, seed: int = 0) -> None:
        self.layer = self.merges = self.pools = self.masks = 0
        self.used: set[str] = set()
        # training may be an object with normalize(layer, grouped): fit's graph on one shard
        # of a global batch whose batch statistics are inputs (data-parallel training)
        self.batch_statistics = None if isinstance(training, bool) else training
        self.training, self.seed = bool(training), seed
        self.states: dict[MatrixSymbol, MatrixExpr] = {}  # state -> its value after a fit step

    def mask_salt(self, layer_seed: int | None) -> int:
        """Which stream of the model a dropout layer draws from: its own seed, or its rank."""
        if layer_seed is not None:
            return 2 * layer_seed + 1
        self.masks += 1
        return 2 * self.masks

    def merge(self) -> str:
        self.merges += 1
        return self.fresh(f"M{self.merges}")

    def pooled(self) -> str:
        """``S1``, ``S2``...: the outputs of pooling layers (subsampled)."""
        self.pools += 1
        return self.fresh(f"S{self.pools}")

    def pre_activation(self) -> str:
        self.layer += 1
        return self.fresh(f"Z{self.layer}")

    def activation(self) -> str:
        return self.fresh(f"A{self.layer}")

    def fresh(self, base: str) -> str:
        return E.fresh_name(base, self.used, first=2)  # a second Z1 is Z1_2


def resolve_activation(activation):
    """``None`` for the identity, ``"softmax"``, or a one-argument SymPy ``Lambda``.

    Accepts what :func:`symgrad.expr.as_lambda` accepts: a name, a ``Lambda``, a
    SymPy expression of one free symbol, or a callable building one.
    """
    if activation is None:
        return None
    fn = E.as_lambda(activation)
    if fn != "softmax" and fn.expr == fn.variables[0]:  # "linear"
        return None
    return fn


def snake_case(name: str) -> str:
    """``Dense -> dense``, ``InputLayer -> input_layer``, ``Conv2D -> conv2d``,
    ``MaxPooling2D -> max_pooling2d`` (Keras's default names)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class KerasTensor:
    """A symbolic tensor of a functional model: samples of ``sample_shape`` and their history.

    ``Input(shape=(d,))`` makes one; calling a layer on it makes the next
    (``Dense(8)(x)``).  ``node`` is the call that produced it (the layer and its
    input tensors), ``index`` which of that call's outputs it is; ``expr`` is the
    symgrad matrix expression it stands for: one row of ``dim`` columns per sample
    (an image ``(H, W, C)`` is a row of ``H*W*C``, channels last).
    """

    def __init__(self, shape: tuple[int, ...], node: Node, index: int = 0):
        self.sample_shape, self.node, self.index = sample_shape(shape), node, index

    @property
    def dim(self) -> int:
        return width(self.sample_shape)

    @property
    def shape(self) -> tuple:
        return (None, *self.sample_shape)

    @property
    def name(self) -> str:
        return self.node.layer.name

    @property
    def expr(self) -> MatrixExpr:
        from symgrad.nn import functional  # the graph walks live there; it imports this module

        return functional.expression(self)

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape} name={self.name}>"


@dataclass(eq=False)
class Node:
    """One call of a layer in a functional graph: ``outputs = layer(inputs)``."""

    layer: object  # a Layer, or a functional model used as a layer
    inputs: list[KerasTensor]
    outputs: list[KerasTensor]
    scope: object  # the names taken in this graph (symgrad.nn.functional.Scope)


class Weighted:
    """Keras's views of ``weights`` (a layer's or a model's): trainable or not, as of now."""

    weights: list[Variable]

    @property
    def trainable_weights(self) -> list[Variable]:
        return [w for w in self.weights if w.trainable]

    @property
    def non_trainable_weights(self) -> list[Variable]:
        return [w for w in self.weights if not w.trainable]

    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights


LAYERS: dict[str, type] = {}
"""Every layer class by name, filled as classes are defined (``Layer.__init_subclass__``):
``from_config`` finds a saved layer's class here, so a new layer needs no entry."""


class Layer(Weighted):
    """Base class: ``build(input_shape)``, ``call(a, names)``, ``weights``.

    Shapes are per sample: ``(features,)``, ``(H, W, C)`` for images (channels last),
    ``(steps, C)`` for sequences; ``build`` takes such a tuple (or an int, ``(d,)``) and
    ``compute_output_shape`` gives the shape of the layer's output samples.  Whatever the
    shape, ``call`` receives and returns matrices of one row per sample (an image is a
    row of ``H*W*C`` columns, row-major): ``Flatten`` is the identity on rows.

    Called on symbolic tensors (``Dense(8)(x)``) a layer adds a :class:`Node` to a
    functional graph (:mod:`symgrad.nn.functional`); ``_connect`` checks the input
    shapes and builds, ``_apply`` is ``call`` on the expressions of the inputs.
    """

    def __init__(self, name: str | None = None):
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise ValueError(
                f"Layer names must be Python identifiers (they name SymPy symbols and "
                f"variables in generated code). Received: name={name!r}"
            )
        self._name = name
        self.input_dim: int | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.built = False
        self.model = None
        self._trainable = True
        self._dtype = "float32"  # Keras's floatx
        self._init_rng: np.random.Generator | None = None  # drawn from while in no model

    @property
    def trainable(self) -> bool:
        """Whether ``fit`` updates this layer's weights (read at ``compile``, as in Keras)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(
                f"Layer {self.name!r}: trainable must be True or False. Received: trainable={value!r}"
            )
        self._trainable = bool(value)
        for w in self.weights:
            w.trainable = self._trainable and not w.state

    @property
    def dtype(self) -> str:
        """The dtype of the weights: the model's (its ``compile(dtype=...)``) for a layer in a
        model, else the layer's own (Keras's ``dtype=`` argument, ``"float32"`` by default)."""
        return self.model.dtype if self.model is not None else self._dtype

    @dtype.setter
    def dtype(self, value: str) -> None:
        if value not in DTYPES:
            raise ValueError(
                f"Layer {self.name!r}: dtype must be one of {', '.join(DTYPES)}. "
                f"Received: dtype={value!r}"
            )
        self._dtype = value

    def _initialize(self) -> None:
        """A built layer in no model (called on its own, as in Keras): its weights without a
        value get their initial values now, in its dtype, from a generator of its own (the
        next child of ``set_random_seed``'s sequence, or fresh entropy). A model that adopts
        the layer later keeps those values."""
        if self._init_rng is None:
            self._init_rng = seeds.generator()
        for w in self.weights:
            if w.value is None:
                w.value = np.ascontiguousarray(
                    w.initializer(w.matrix_shape, self._init_rng), dtype=self._dtype
                )

    def get_weights(self) -> list[np.ndarray]:
        """Copies of this layer's weights in Keras's layout: ``[kernel (in, units), bias (units,)]``."""
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights) -> None:
        """Replace this layer's weights (the order and shapes of ``get_weights()``), all checked first."""
        what = f"Layer {self.name!r}: set_weights"
        if not self.weights:
            raise ValueError(f"{what}: the layer has no weights (it is not built, or has none)")
        arrays = check_values(self.weights, weights, what)
        for var, array in zip(self.weights, arrays):
            var._require_value()[...] = array

    def _variable(
        self, what: str, shape: tuple[int, int], initializer, vector=False, state=False,
        layout=None,
    ) -> Variable:  # fmt: skip
        """A new weight of this layer: ``<layer>/<what>``, symbol ``<layer>_<what>``;
        ``state``: updated by the layer itself in the step (never trainable); ``layout``:
        its shape in Keras (of the same entries, row-major), if not ``shape``."""
        sym = E.weight_matrix(f"{self.name}_{what}", *shape, f"{self.name}/{what}")
        return Variable(
            f"{self.name}/{what}",
            sym,
            initializer,
            vector=vector,
            trainable=self.trainable and not state,
            layer=self,
            state=state,
            layout=None if layout is None else tuple(int(d) for d in layout),
        )

    @property
    def name(self) -> str:
        return self._name if self._name is not None else snake_case(type(self).__name__)

    @property
    def weights(self) -> list[Variable]:
        return []

    def build(self, input_shape) -> None:
        """Create the weights for samples of ``input_shape`` (an int ``d`` means ``(d,)``)."""
        self.input_shape = sample_shape(input_shape, "input_dim")
        self.input_dim = width(self.input_shape)
        self.built = True

    def output_dim(self, input_dim: int | None) -> int | None:
        return input_dim

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-sample shape of the output for inputs of ``input_shape``: rows of
        features map through ``output_dim``; other layers keep the shape (activations)."""
        if len(input_shape) == 1:
            return (self.output_dim(input_shape[0]),)
        return tuple(input_shape)

    def call(self, a: MatrixExpr, names: Names) -> MatrixExpr:
        raise NotImplementedError

    def count_params(self) -> int:
        return sum(w.size for w in self.weights)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        LAYERS[cls.__name__] = cls  # a later class of the same name (a user's) wins, as Keras's
        if "__init__" in vars(cls):
            cls.__init__ = config_module.recording(cls.__init__)

    def check_input(self, x: np.ndarray, name: str) -> None:
        """Refuse data this layer cannot read when it reads the model's input ``x`` directly
        (before any code runs); most layers read any finite numbers."""

    def get_config(self) -> dict:
        """The constructor's arguments (as JSON data), the name and ``trainable``."""
        return config_module.layer_config(self)

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None):
        """A new layer from ``get_config()``'s dict (unbuilt: weights come at build)."""
        return config_module.layer_from_config(cls, config, custom_objects)

    def __call__(self, inputs, training: bool | None = None):
        """On symbolic tensors: one call more in a functional graph.  Inside a
        ``GradientTape`` (or on tape tensors): the call is recorded on the tape,
        ``training=True`` as in ``fit``, else as in ``predict``.  On arrays outside a tape:
        the layer's output for them, as arrays (a compiled program, kept by structure).

        A layer in no model is built by its first call on arrays or tape tensors (its
        weights get their initial values then, as Keras's ``build``)."""
        from symgrad.nn import functional, tape  # both import this module

        if tape.records(inputs):
            return tape.call_layer(self, inputs, training=bool(training))
        if tape.arrays(inputs):
            return tape.run_layer(self, inputs, training=bool(training))
        return functional.call_layer(self, inputs)

    def _connect(self, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Output shapes for inputs of per-sample ``shapes``; checks them and builds the weights."""
        if len(shapes) != 1:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) takes one input tensor. "
                f"Received: {len(shapes)} tensors of shapes {[(None, *s) for s in shapes]}"
            )
        (shape,) = shapes
        expected = self.input_shape if self.built and self.weights else None
        expected = expected or declared_shape(self)
        if expected is not None and tuple(shape) != tuple(expected):
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) expects inputs of shape "
                f"{(None, *expected)}. Received: a tensor of shape {(None, *shape)}"
            )
        self.build(shape)
        return [self.compute_output_shape(shape)]

    def _apply(self, exprs: list[MatrixExpr], names: Names) -> list[MatrixExpr]:
        return [self.call(exprs[0], names)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


class KernelAndBias:
    """What Dense and the convolutions share: an activation after ``X K + b``, the kernel
    and the optional bias with their initializers and regularizers (Keras's arguments)."""

    def _kernel_and_bias(
        self,
        activation,
        use_bias,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        activity_regularizer,
    ) -> None:
        regularizers.resolve(
            self,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
        )
        self.activation = activation
        self.activation_fn = resolve_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel: Variable | None = None
        self.bias: Variable | None = None

    @property
    def weights(self) -> list[Variable]:
        return [w for w in (self.kernel, self.bias) if w is not None]


class Dense(KernelAndBias, Layer):
    """``Z = X W + b`` then ``A = activation(Z)``: Keras's densely connected layer.

    ``activation`` is a name (``"relu"``, ``"softmax"``...), a SymPy expression of
    one symbol, a ``Lambda``, or a callable building one; its derivative comes
    from ``sympy.diff``.

    >>> Dense(units=4, input_dim=3, activation="tanh")
    <Dense name=dense>
    """

    def __init__(
        self,
        units: int,
        activation=None,
        use_bias: bool = True,
        input_dim: int | None = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        name: str | None = None,
        input_shape: tuple | None = None,
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
    ):
        super().__init__(name)
        self.units = positive_int(units, "units")
        self._kernel_and_bias(
            activation,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            activity_regularizer,
        )
        if input_shape is not None:
            if input_dim is not None:
                raise ValueError("Pass input_dim or input_shape, not both.")
            if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 1:
                raise ValueError(
                    f"Dense takes rows of features: input_shape must be (features,). "
                    f"Received: input_shape={input_shape!r}"
                )
            input_dim = input_shape[0]
        self.declared_input_dim = (
            None if input_dim is None else positive_int(input_dim, "input_dim")
        )

    def build(self, input_shape) -> None:
        shape = sample_shape(input_shape, "input_dim")
        input_dim = shape[-1]  # Keras: the last axis (of each step of a sequence, each pixel)
        if self.declared_input_dim is not None and input_dim != self.declared_input_dim:
            raise ValueError(
                f"Layer {self.name!r} expects {self.declared_input_dim} input features. "
                f"Received: input_dim={input_dim}"
            )
        if self.built and self.input_shape == shape:
            return
        super().build(shape)
        self.kernel = self._variable("kernel", (input_dim, self.units), self.kernel_initializer)
        self.bias = None
        if self.use_bias:  # one row added to every row of X W; Keras's vector (units,)
            self.bias = self._variable("bias", (1, self.units), self.bias_initializer, vector=True)

    def output_dim(self, input_dim):
        return self.units

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.units)

    def call(self, a, names):
        """``A W + b`` on rows of features; on samples of several axes, ``(steps, C)`` or
        ``(H, W, C)``, on each position's features (Keras: the last axis), as one product
        of the ``n * positions`` rows: ``reshape(reshape(A, (n*steps, C)) W + b, (n, ...))``."""
        positions = width(self.input_shape[:-1]) if len(self.input_shape) > 1 else 1
        rows = a if positions == 1 else E.reshape(a, a.shape[0] * positions, self.input_shape[-1])
        z = E.matmul(rows, self.kernel.symbol)
        if self.bias is not None:
            z = E.add_bias(z, self.bias.symbol)
        if positions > 1 and self.activation_fn == "softmax":  # over each position's units
            z = E.apply("softmax", E.name(names.pre_activation(), z))
            return E.name(names.activation(), E.reshape(z, a.shape[0], positions * self.units))
        if positions > 1:
            z = E.reshape(z, a.shape[0], positions * self.units)
        z = E.name(names.pre_activation(), z)
        if self.activation_fn is None:
            return z
        return E.name(names.activation(), E.apply(self.activation_fn, z))


class Activation(Layer):
    """Applies an activation to its input: ``Activation("sigmoid")``, ``Activation(x**2)``.

    ``"softmax"`` is row-wise; every other activation is entry by entry.
    """

    def __init__(self, activation, name: str | None = None):
        super().__init__(name)
        if activation is None:
            raise ValueError(
                "Activation needs an activation: a name, a SymPy expression or a callable. "
                f"Received: activation=None. Known names: {', '.join(E.activation_names())}"
            )
        self.activation = activation
        self.activation_fn = resolve_activation(activation)

    def call(self, a, names):
        if self.activation_fn is None:
            return a
        return E.name(names.activation(), E.apply(self.activation_fn, a))


class InputLayer(Layer):
    """Declares the shape of the input samples: ``Sequential([Input(shape=(3,)), Dense(4)])``,
    ``Input(shape=(8, 8, 1))`` for 8x8 images of one channel (channels last)."""

    def __init__(self, shape: tuple, name: str | None = None):
        super().__init__(name)
        if not isinstance(shape, (tuple, list)) or not shape:
            raise ValueError(
                "Input takes the shape of one sample: (features,), (H, W, C) or (steps, C). "
                f"Received: shape={shape!r}"
            )
        self.declared_input_shape = sample_shape(shape, "shape")
        self.declared_input_dim = width(self.declared_input_shape)

    def build(self, input_shape) -> None:
        shape = sample_shape(input_shape, "input_dim")
        if shape != self.declared_input_shape:
            if len(shape) == len(self.declared_input_shape) == 1:
                raise ValueError(
                    f"The model expects {self.declared_input_dim} input features. "
                    f"Received: input_dim={shape[0]}"
                )
            raise ValueError(
                f"The model expects samples of shape {self.declared_input_shape}. "
                f"Received: input_shape={shape}"
            )
        super().build(shape)

    def call(self, a, names):
        return a


def Input(shape: tuple, name: str | None = None) -> KerasTensor:  # noqa: N802 - Keras's spelling
    """``keras.Input(shape=(features,))``: the symbolic input of a functional model, or the
    first entry of a ``Sequential``.

    >>> x = Input(shape=(4,), name="features")
    >>> Dense(8, activation="relu")(x)
    <KerasTensor shape=(None, 8) name=dense>
    """
    from symgrad.nn import functional  # the graph's scope lives there

    return functional.input_tensor(InputLayer(shape, name))


def declared_shape(layer) -> tuple[int, ...] | None:
    """The input shape a layer was given (``input_shape=``, ``input_dim=``), if any."""
    shape = getattr(layer, "declared_input_shape", None)
    if shape is None and getattr(layer, "declared_input_dim", None) is not None:
        shape = (layer.declared_input_dim,)
    return shape


def _declared_input_shape(layer: Layer, input_shape) -> None:
    """Keras's ``input_shape=`` argument of a first layer: the shape of one sample."""
    layer.declared_input_shape = (
        None if input_shape is None else sample_shape(input_shape, "input_shape")
    )


class Flatten(Layer):
    """Samples of any shape as rows of features: ``(8, 8, 1) -> (64,)``, row-major, channels
    last (Keras's order).  Rows are already flat, so it adds nothing to the formulas.

    >>> Flatten().compute_output_shape((8, 8, 1))
    (64,)
    """

    def __init__(self, name: str | None = None, input_shape: tuple | None = None):
        super().__init__(name)
        _declared_input_shape(self, input_shape)

    def compute_output_shape(self, input_shape):
        return (width(input_shape),)

    def call(self, a, names):
        return a


class Reshape(Layer):
    """Samples seen with another shape of the same size: ``Reshape((8, 8, 1))`` on rows of
    64 features; one axis may be ``-1`` (inferred).  The identity on rows.

    >>> Reshape((4, -1)).compute_output_shape((8, 8))
    (4, 16)
    """

    def __init__(self, target_shape: tuple, name: str | None = None, input_shape=None):
        super().__init__(name)
        if not isinstance(target_shape, (tuple, list)) or not target_shape:
            raise ValueError(
                "Reshape takes the shape of one output sample, such as (8, 8, 1). "
                f"Received: target_shape={target_shape!r}"
            )
        unknown = [i for i, d in enumerate(target_shape) if d == -1]
        known = [d for i, d in enumerate(target_shape) if i not in unknown]
        if len(unknown) > 1:
            raise ValueError(
                "Reshape infers at most one axis (-1). "
                f"Received: target_shape={tuple(target_shape)!r}"
            )
        sample_shape(known or [1], "target_shape")  # positive integers, else an error
        self.target_shape = tuple(int(d) for d in target_shape)
        _declared_input_shape(self, input_shape)

    def compute_output_shape(self, input_shape):
        size, known = width(input_shape), width([d for d in self.target_shape if d != -1])
        shape = tuple(size // known if d == -1 else d for d in self.target_shape)
        if size % known or width(shape) != size:
            raise ValueError(
                f"Layer {self.name!r} (Reshape): the total size of a sample must be unchanged. "
                f"Received: inputs of shape {(None, *input_shape)} ({size} values) and "
                f"target_shape={self.target_shape}"
            )
        return shape

    def build(self, input_shape) -> None:
        self.compute_output_shape(sample_shape(input_shape, "input_shape"))  # checks the size
        super().build(input_shape)

    def call(self, a, names):
        return a


# a layer argument of a layer is written as an entry


def _is_positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _rate(value, layer: str) -> float:
    """A dropout rate: a real number in [0, 1) (rate 1 would drop everything)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(
            f"{layer}: rate must be a number in [0, 1) (the fraction of inputs dropped). "
            f"Received: rate={value!r}"
        )
    if not 0 <= float(value) < 1:
        raise ValueError(
            f"{layer}: rate must be a number in [0, 1) (the fraction of inputs dropped). "
            f"Received: rate={value!r}"
        )
    return float(value)


class Dropout(Layer):
    """Keras's inverted dropout: in ``fit`` each entry is zeroed with probability ``rate``
    and the rest scaled by ``1/(1 - rate)``; in ``predict`` and ``evaluate`` the identity.

    ``D = A o M``: the mask ``M`` is drawn inside the compiled step by a counter-based
    generator of (seed, step ``t``, element), the same on every backend and in the
    whole-epoch native call; ``compile(seed=...)`` (and the layer's ``seed``) make it
    reproducible. ``noise_shape``: ``None`` (a draw per entry), ``(None, 1)`` (one per row,
    shared by its features) or ``(1, features)`` (one per feature, shared by the batch).

    >>> Dropout(0.5)
    <Dropout name=dropout>
    """

    def __init__(self, rate, noise_shape=None, seed: int | None = None, name: str | None = None):
        super().__init__(name)
        self.rate = _rate(rate, "Dropout")
        if seed is not None:
            seed = non_negative_int(seed, "seed")
        self.seed = seed
        if noise_shape is not None:
            sound = (
                isinstance(noise_shape, (tuple, list))
                and len(noise_shape) == 2
                and noise_shape[0] in (None, 1)
                and (noise_shape[1] is None or _is_positive_int(noise_shape[1]))
            )
            if not sound:
                raise ValueError(
                    "Dropout: noise_shape must be None or (rows, features) with rows None or 1 "
                    "and features None, 1 or the input's width, e.g. (None, 1). "
                    f"Received: noise_shape={noise_shape!r}"
                )
            noise_shape = tuple(noise_shape)
        self.noise_shape = noise_shape

    def build(self, input_shape) -> None:
        super().build(input_shape)
        width = self.noise_shape[1] if self.noise_shape else None
        if width not in (None, 1, self.input_dim):
            self.built = False
            raise ValueError(
                f"Dropout {self.name!r}: noise_shape {self.noise_shape} does not broadcast to "
                f"rows of {self.input_dim} features. Received: noise_shape={self.noise_shape!r}"
            )

    def call(self, a, names):
        if not names.training or self.rate == 0:
            return a
        from symgrad.nn.optimizers import STEP  # it imports this module

        rows, cols = a.shape
        shared_rows, shared_cols = self.noise_shape or (None, None)
        shape = (1 if shared_rows == 1 else rows, 1 if shared_cols == 1 else cols)
        salt = names.mask_salt(self.seed)
        mask = E.dropout_mask(self.name, *shape, self.rate, names.seed, salt, STEP)
        if shape[0] != rows:
            mask = E.broadcast_rows(mask, rows)
        if shape[1] != cols:
            mask = E.broadcast_cols(mask, cols)
        return E.name(names.fresh(f"D{names.layer}"), E.hadamard(a, mask))


def _exact(value, name: str, layer: str, low: float, high: float) -> sp.Rational:
    """A hyperparameter in (low, high) as the exact rational of its decimal (0.99 -> 99/100),
    so the formulas print it as written."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{layer}: {name} must be a number. Received: {name}={value!r}")
    if not low < float(value) < high:
        raise ValueError(
            f"{layer}: {name} must be in ({low:g}, {high:g}). Received: {name}={value!r}"
        )
    return sp.Rational(repr(float(value)))


def _feature_axis(axis, layer: str) -> None:
    if axis not in (-1, 1) or isinstance(axis, bool):
        raise ValueError(
            f"{layer} normalizes the features of rows (n, features): axis must be -1 (or 1). "
            f"Received: axis={axis!r}"
        )


class _Normalization(Layer):
    """What batch and layer normalization share: gamma (scale) and beta (center) of shape
    (1, features), initializers as Keras, the output named ``N<k>``.

    Samples with a shape (images ``(H, W, C)``, sequences ``(steps, C)``: rows of H*W*C
    entries) are normalized along their last axis, the channels, as Keras's ``axis=-1``:
    each sample row is regrouped as one row of C channels per position (a reshape of the
    row-major matrix, no copy of meaning), normalized, and regrouped back.
    """

    def __init__(self, axis, epsilon, center, scale, beta_initializer, gamma_initializer, name):
        super().__init__(name)
        _feature_axis(axis, type(self).__name__)
        self.axis = axis
        self.epsilon = _exact(epsilon, "epsilon", type(self).__name__, 0, math.inf)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.gamma: Variable | None = None
        self.beta: Variable | None = None

    @property
    def features(self) -> int:
        """The size of the normalized axis: the channels of shaped samples, else the width."""
        shape = getattr(self, "input_shape", None)
        return int(shape[-1]) if shape and len(shape) > 1 else self.input_dim

    def _grouped(self, a: MatrixExpr) -> MatrixExpr:
        """Rows of ``features`` entries: one per sample, or one per position of a sample."""
        if self.features == self.input_dim:
            return a
        return E.reshape(a, a.shape[0] * (self.input_dim // self.features), self.features)

    def _feature_variable(self, key: str, initializer, state: bool = False) -> Variable:
        """A (features,) weight: gamma, beta or a moving statistic (``state``)."""
        return self._variable(key, (1, self.features), initializer, vector=True, state=state)

    def build(self, input_shape) -> None:
        known = self.input_dim if self.built else None
        super().build(input_shape)
        if known != self.input_dim:  # new weights only for a new width
            self._make_weights()

    def _make_weights(self) -> None:
        self.gamma = self._feature_variable("gamma", self.gamma_initializer) if self.scale else None
        self.beta = self._feature_variable("beta", self.beta_initializer) if self.center else None

    @property
    def weights(self) -> list[Variable]:
        return [w for w in (self.gamma, self.beta) if w is not None]

    def _affine(self, normalized: MatrixExpr, a: MatrixExpr, names: Names) -> MatrixExpr:
        """``gamma o N + beta`` (each (1, features) row repeated over the grouped rows of
        ``normalized``), in the layout of the input ``a``."""
        rows = normalized.shape[0]
        if self.gamma is not None:
            normalized = E.hadamard(E.broadcast_rows(self.gamma.symbol, rows), normalized)
        if self.beta is not None:
            normalized = E.add_bias(normalized, self.beta.symbol)
        if normalized.shape != a.shape:
            normalized = E.reshape(normalized, *a.shape)
        return E.name(names.fresh(f"N{names.layer}"), normalized)

    def element_formulas(self, named) -> list[str]:
        """The layer entry by entry from the intermediate ``named`` it computes (``N1``),
        and its gradient in the compact textbook form: the matrix formulas spell out the
        same sums term by term, this says them as a person writes them."""
        found = _standardized(named)
        if found is None:
            return []
        out, node = found
        source = node.args[0]
        grouped = isinstance(source, E.Reshape)  # images: one row per sample and position
        source = source.args[0] if grouped else source
        x = getattr(source, "name", None) or E.sstr(source)
        rows = "   (k: a sample and one of its positions)" if grouped else ""
        rstd = E.inverse_std(node.args[0], node.axis, node.eps).name  # as the formulas call it
        formulas = _NORMALIZATION_FORMULAS[int(node.axis)]
        return formulas(self, out.name, x, E.sstr(node.eps), rstd, rows)


class LayerNormalization(_Normalization):
    """Keras's layer normalization of each row over its features:
    ``N = gamma o layernorm(A) + beta``, ``layernorm(A) = (A - mean) / sqrt(var + epsilon)``
    with the mean and (biased) variance of each row; the same in fit and predict.

    >>> LayerNormalization(epsilon=1e-3)
    <LayerNormalization name=layer_normalization>
    """

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        name: str | None = None,
    ):
        super().__init__(axis, epsilon, center, scale, beta_initializer, gamma_initializer, name)

    def call(self, a, names):
        return self._affine(E.standardize(self._grouped(a), 1, self.epsilon), a, names)


def _standardized(named):
    """(the layer's output, its Standardize node), or None (a graph without batch statistics)."""
    for out in named or ():
        stack = [out.body]
        while stack:  # this layer's own node, not one of a layer before it (behind a name)
            node = stack.pop()
            if isinstance(node, E.Standardize):
                return out, node
            if not isinstance(node, E.Named):
                stack.extend(E.children(node))
    return None


def _affine_formulas(layer, n: str, stat: str, label: str) -> tuple[str, list[str]]:
    """(``N[k, f] = gamma[f] * xhat[k, f] + beta[f]``, the lines of dL/dgamma and dL/dbeta)."""
    g = layer.gamma.symbol.name if layer.gamma is not None else None
    b = layer.beta.symbol.name if layer.beta is not None else None
    value = f"{g}[f] * xhat[k, f]" if g else "xhat[k, f]"
    value += f" + {b}[f]" if b else ""
    grads = [f"dL/d{g}[f] = sum over k of d{n}[k, f] * xhat[k, f]"] if g else []
    grads += [f"dL/d{b}[f] = sum over k of d{n}[k, f]"] if b else []
    return f"{n}[k, f] = {value},  xhat[k, f] = ({label}[k, f] - mu{stat}) / sigma{stat}", grads


def _batchnorm_formulas(layer, n: str, x: str, eps: str, rstd: str, rows: str) -> list[str]:
    """Statistics of each feature f over the batch (k): gamma[f] is a constant of those
    means, so it comes out of the bracket."""
    value, grads = _affine_formulas(layer, n, "[f]", x)
    scale = (
        f"{layer.gamma.symbol.name}[f] / sigma[f]" if layer.gamma is not None else "1 / sigma[f]"
    )
    return [
        f"{value}   (xhat = batchnorm({x})){rows}",
        f"mu[f] = mean over k of {x}[k, f],  "
        f"sigma[f] = sqrt(mean over k of ({x}[k, f] - mu[f])**2 + {eps})",
        f"dL/d{x}[k, f] = {scale} * (d{n}[k, f] - mean over k' of d{n}[k', f] "
        f"- xhat[k, f] * mean over k' of d{n}[k', f] * xhat[k', f])   (1/sigma[f] = {rstd})",
        *grads,
    ]


def _layernorm_formulas(layer, n: str, x: str, eps: str, rstd: str, rows: str) -> list[str]:
    """Statistics of each row k over its features (f): gamma[f] varies along those means,
    so the bracket reads h = gamma o dN."""
    value, grads = _affine_formulas(layer, n, "[k]", x)
    h = f"{layer.gamma.symbol.name}[f] * d{n}[k, f]" if layer.gamma is not None else f"d{n}[k, f]"
    return [
        f"{value}   (xhat = layernorm({x})){rows}",
        f"mu[k] = mean over f of {x}[k, f],  "
        f"sigma[k] = sqrt(mean over f of ({x}[k, f] - mu[k])**2 + {eps})",
        f"dL/d{x}[k, f] = 1 / sigma[k] * (h[k, f] - mean over f' of h[k, f'] "
        f"- xhat[k, f] * mean over f' of h[k, f'] * xhat[k, f']),  h[k, f] = {h}   "
        f"(1/sigma[k] = {rstd})",
        *grads,
    ]


_NORMALIZATION_FORMULAS = {0: _batchnorm_formulas, 1: _layernorm_formulas}
"""The element formulas of a normalization by the axis its statistics run over."""


class BatchNormalization(_Normalization):
    """Keras's batch normalization of each feature over the batch.

    In fit: ``N = gamma o batchnorm(A) + beta`` with the batch's mean and (biased)
    variance, and the moving statistics (non-trainable weights, updated in the compiled
    step with the optimizer's update, all or nothing) become
    ``moving = moving * momentum + batch * (1 - momentum)``. In predict and evaluate:
    ``N = gamma (A - moving_mean) / sqrt(moving_variance + epsilon) + beta``. A frozen
    layer (``trainable=False`` at compile) runs that way in fit too, as in Keras: its
    moving statistics stay, and gamma and beta are constants of the step.
    The gradient is the compact ``rstd o (G - mean(G) - N o mean(G o N))``.

    >>> BatchNormalization(momentum=0.99, epsilon=1e-3)
    <BatchNormalization name=batch_normalization>
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        name: str | None = None,
    ):
        super().__init__(axis, epsilon, center, scale, beta_initializer, gamma_initializer, name)
        self.momentum = _exact(momentum, "momentum", "BatchNormalization", 0, 1)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.moving_mean: Variable | None = None
        self.moving_variance: Variable | None = None

    def _make_weights(self) -> None:
        super()._make_weights()
        mean, variance = self.moving_mean_initializer, self.moving_variance_initializer
        self.moving_mean = self._feature_variable("moving_mean", mean, state=True)
        self.moving_variance = self._feature_variable("moving_variance", variance, state=True)

    @property
    def weights(self) -> list[Variable]:  # Keras's order: gamma, beta, moving_mean, moving_variance
        states = (self.moving_mean, self.moving_variance)
        return [*super().weights, *(w for w in states if w is not None)]

    def normalized_with(self, grouped: MatrixExpr, mean: MatrixExpr, variance: MatrixExpr):
        """``(A - mean) / sqrt(variance + epsilon)`` with given (1, features) statistics: the
        moving ones in predict, the global batch's in data-parallel fit."""
        rows = grouped.shape[0]
        x, m, v = sp.symbols("x m v", real=True)
        body = (x - m) / sp.sqrt(v + self.epsilon)
        return E.elementwise(
            sp.Lambda((x, m, v), body),
            grouped,
            E.broadcast_rows(mean, rows),
            E.broadcast_rows(variance, rows),
        )

    def call(self, a, names):
        mean, variance = self.moving_mean.symbol, self.moving_variance.symbol
        grouped = self._grouped(a)  # the statistics are over the batch (and the positions)
        if not (names.training and self.trainable):  # Keras: a frozen layer runs as in predict
            return self._affine(self.normalized_with(grouped, mean, variance), a, names)
        if names.batch_statistics is not None:  # the global batch's, from the other shards
            return self._affine(names.batch_statistics.normalize(self, grouped), a, names)
        batch_mean, batch_variance = E.moments(grouped, 0)
        keep = self.momentum
        for state, batch in ((mean, batch_mean), (variance, batch_variance)):
            names.states[state] = E.add(E.scale(keep, state), E.scale(1 - keep, batch))
        return self._affine(E.standardize(grouped, 0, self.epsilon), a, names)


class Embedding(Layer):
    """Keras's embedding lookup: rows of ``steps`` integer indices in ``[0, input_dim)``
    become their ``output_dim``-vectors side by side, ``E1 = embeddings[X]``, (n, steps *
    output_dim). The gradient is a scatter-add: row ``v`` of ``d embeddings`` sums the
    blocks of ``dE1`` at every position whose index is ``v``. Indices are checked (integers,
    in range) before any compiled code runs.

    >>> Embedding(input_dim=1000, output_dim=8, input_length=10)
    <Embedding name=embedding>
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer="uniform",
        input_length: int | None = None,
        name: str | None = None,
    ):
        super().__init__(name)
        self.vocabulary = positive_int(input_dim, "input_dim")
        self.units = positive_int(output_dim, "output_dim")
        self.embeddings_initializer = (  # Keras's "uniform": U(-0.05, 0.05)
            initializers.RandomUniform(-0.05, 0.05)
            if embeddings_initializer == "uniform"
            else initializers.get(embeddings_initializer)
        )
        self.declared_input_dim = (
            None if input_length is None else positive_int(input_length, "input_length")
        )
        self.embeddings: Variable | None = None

    @property
    def weights(self) -> list[Variable]:
        return [] if self.embeddings is None else [self.embeddings]

    def build(self, input_shape) -> None:
        known = self.input_dim if self.built else None
        super().build(input_shape)
        if known == self.input_dim:
            return
        self.embeddings = self._variable(
            "embeddings", (self.vocabulary, self.units), self.embeddings_initializer
        )

    def output_dim(self, input_dim):
        return None if input_dim is None else input_dim * self.units

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """A sequence of ``steps`` vectors, ``(steps, output_dim)``, as Keras (one row of
        steps * output_dim entries per sample)."""
        return (*input_shape, self.units)

    def call(self, a, names):
        return E.name(names.fresh(f"E{names.layer + 1}"), E.gather(self.embeddings.symbol, a))

    def check_input(self, x: np.ndarray, name: str) -> None:
        bad = ~np.isfinite(x) | (x != np.floor(x)) | (x < 0) | (x >= self.vocabulary)
        if bad.any():
            i, k = (int(v) for v in np.argwhere(bad)[0])
            value = float(x[i, k])
            shown = int(value) if np.isfinite(value) and value == int(value) else value
            raise ValueError(
                f"Layer {self.name!r} (Embedding) reads integer indices in [0, {self.vocabulary}) "
                f"(input_dim={self.vocabulary}). Received: {name}[{i}, {k}]={shown!r}"
            )


config_module.register_layer_class(Layer)  # a layer argument of a layer is written as an entry
