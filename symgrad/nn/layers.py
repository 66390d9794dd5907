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

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sympy.matrices.expressions import MatrixExpr, MatrixSymbol

from symgrad import core as E
from symgrad.nn import config as config_module
from symgrad.nn import initializers, regularizers
from symgrad.nn import validation as data
from symgrad.nn.validation import positive_int, sample_shape, width


@dataclass(eq=False)
class Variable:
    """A weight (or optimizer slot): Keras path, symbol, value, initializer, ``trainable``.

    The symbol is a matrix (a bias is one row, ``(1, units)``, so that it adds to
    every row of ``X W``) and ``value`` holds that matrix; ``shape``, ``numpy()``
    and ``assign`` speak Keras's layout, where a bias (``vector=True``) is a vector
    ``(units,)`` -- the layout of Keras's and PyTorch's exported weights.  Arrays
    in the matrix layout (files written before this layout) are accepted too.
    """

    path: str
    symbol: MatrixSymbol
    initializer: initializers.Initializer
    value: np.ndarray | None = None
    vector: bool = False
    trainable: bool = True
    layer: Layer | None = None  # its owner: gives it a value on first use (the model's seed)

    @property
    def name(self) -> str:
        return self.path

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """The shape of the symbol and of ``value``, what the compiled programs read."""
        return (int(self.symbol.shape[0]), int(self.symbol.shape[1]))

    @property
    def shape(self) -> tuple[int, ...]:
        """Keras's shape: ``(units,)`` for a bias, else the matrix shape."""
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
        layouts = f"{var.shape} (or {var.matrix_shape})" if var.vector else f"{var.shape}"
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
    first merge of a functional graph, and so on."""

    def __init__(self) -> None:
        self.layer = self.merges = self.pools = 0
        self.used: set[str] = set()

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
            w.trainable = self._trainable

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

    def _variable(self, what: str, shape: tuple[int, int], initializer, vector=False) -> Variable:
        """A new weight of this layer: ``<layer>/<what>``, symbol ``<layer>_<what>``."""
        sym = E.matrix(f"{self.name}_{what}", *shape)
        return Variable(
            f"{self.name}/{what}",
            sym,
            initializer,
            vector=vector,
            trainable=self.trainable,
            layer=self,
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

    def get_config(self) -> dict:
        """The constructor's arguments (as JSON data), the name and ``trainable``."""
        return config_module.layer_config(self)

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None):
        """A new layer from ``get_config()``'s dict (unbuilt: weights come at build)."""
        return config_module.layer_from_config(cls, config, custom_objects)

    def __call__(self, inputs):
        from symgrad.nn import functional  # functional graphs are built of layers

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


class Dense(Layer):
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
        self.kernel: Variable | None = None
        self.bias: Variable | None = None

    @property
    def weights(self) -> list[Variable]:
        return [w for w in (self.kernel, self.bias) if w is not None]

    def build(self, input_shape) -> None:
        input_dim = rows_of_features(self, sample_shape(input_shape, "input_dim"))
        if self.declared_input_dim is not None and input_dim != self.declared_input_dim:
            raise ValueError(
                f"Layer {self.name!r} expects {self.declared_input_dim} input features. "
                f"Received: input_dim={input_dim}"
            )
        if self.built and self.input_dim == input_dim:
            return
        super().build(input_dim)
        self.kernel = self._variable("kernel", (input_dim, self.units), self.kernel_initializer)
        self.bias = None
        if self.use_bias:  # one row added to every row of X W; Keras's vector (units,)
            self.bias = self._variable("bias", (1, self.units), self.bias_initializer, vector=True)

    def output_dim(self, input_dim):
        return self.units

    def compute_output_shape(self, input_shape):
        rows_of_features(self, input_shape)
        return (self.units,)

    def call(self, a, names):
        z = E.matmul(a, self.kernel.symbol)
        if self.bias is not None:
            z = E.add_bias(z, self.bias.symbol)
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


def rows_of_features(layer: Layer, shape: tuple[int, ...]) -> int:
    """The width of ``shape`` if it is ``(features,)``; else an error naming the layer."""
    if len(shape) != 1:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) takes rows of features, inputs of "
            f"shape (None, features): put a Flatten() (or a global pooling layer) before it. "
            f"Received: inputs of shape {(None, *shape)}"
        )
    return shape[0]


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


config_module.register_layer_class(Layer)  # a layer argument of a layer is written as an entry
