"""symgrad.nn.config: layer configs as JSON, read back without running code from the file.

A layer's config is the arguments its constructor was called with: every
subclass of :class:`~symgrad.nn.layers.Layer` records them
(:func:`recording`, applied by ``Layer.__init_subclass__``), so a new layer
class has ``get_config`` / ``from_config`` with no code of its own.  Each
argument is written by :func:`serialize`, one row per kind of value
(``SERIALIZERS``, keyed by class along the MRO):

- JSON scalars as they are, tuples and lists as lists, dicts by key;
- an activation written as a formula (a SymPy expression, a ``Lambda``, a
  callable building one) as ``{"module": "symgrad.activations", "class_name":
  "Formula", "config": {"text": ..., "graph": ...}}``, where ``graph`` is
  :mod:`codegen.serial`'s JSON (read back by its decoder, never by ``sympify``:
  no text from a file is evaluated) and ``text`` is for people;
- initializers and regularizers as Keras writes them (``module``,
  ``class_name``, ``config``);
- layers (an argument that is a layer) as their own entries.

>>> from symgrad.nn.layers import Dense
>>> Dense(3, activation="tanh", name="d").get_config()["activation"]
'tanh'
"""

from __future__ import annotations

import functools
import inspect
import json

import numpy as np
import sympy as sp

from codegen.serial import SYMPY_PACKAGES, Codec
from symgrad import core as E
from symgrad.nn import initializers, regularizers

FORMULA_CODEC = Codec(packages=(*SYMPY_PACKAGES, "symgrad.core.scalar"))
"""Reads activation formulas: SymPy's classes and symgrad's scalar functions, nothing else."""


class ConfigError(TypeError):
    """A layer argument that has no JSON form (a user's object that is no formula)."""


# --------------------------------------------------------------------------
# Recording constructor arguments


def recording(init):
    """``init`` that first stores the arguments of the outermost constructor call.

    ``layer._arguments`` maps each parameter of the class's own ``__init__`` to the
    value it received (defaults included; ``**kwargs`` flattened), so a subclass
    calling ``super().__init__`` does not overwrite its child's record.  Every layer
    also takes Keras's ``dtype=`` (recorded when given), set after its constructor ran.
    """
    signature = inspect.signature(init)
    own_dtype = "dtype" in signature.parameters

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):  # noqa: N807 - it replaces the class's __init__
        outermost = "_arguments" not in vars(self)
        # Keras's dtype= of every layer (the dtype of its weights while it is in no model)
        dtype = kwargs.pop("dtype", None) if outermost and not own_dtype else None
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = {}
            for i, (key, value) in enumerate(bound.arguments.items()):
                kind = signature.parameters[key].kind
                if i == 0:
                    continue  # self
                if kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    arguments[key] = value
            if dtype is not None:
                arguments["dtype"] = dtype
            self._arguments = arguments
        init(self, *args, **kwargs)
        if dtype is not None:
            self.dtype = dtype  # checked by the layer's setter

    return __init__


def layer_config(layer) -> dict:
    """``layer.get_config()`` by default: its constructor arguments, serialized."""
    config = {}
    for key, value in getattr(layer, "_arguments", {}).items():
        config[key] = serialize(value, f"{type(layer).__name__}({key}=...)")
    config["name"] = layer.name  # the name it was given or got in its model
    config["trainable"] = bool(layer.trainable)
    return config


def layer_from_config(cls, config: dict, custom_objects: dict | None = None):
    """``cls.from_config(config)`` by default: ``cls(**arguments)``, then ``trainable``."""
    arguments = {k: deserialize(v, custom_objects) for k, v in config.items()}
    trainable = arguments.pop("trainable", True)
    try:
        layer = cls(**arguments)
    except TypeError as err:
        raise ValueError(
            f"The config of a {cls.__name__} does not fit its constructor ({err}). "
            f"Received: config={config!r}"
        ) from err
    layer.trainable = bool(trainable)
    return layer


# --------------------------------------------------------------------------
# Values


def _formula(value, where: str) -> dict:
    fn = E.as_lambda(value)
    if fn == "softmax":
        return "softmax"
    x = sp.Symbol("x")
    return {
        "module": "symgrad.activations",
        "class_name": "Formula",
        "config": {
            "text": str(fn.expr.xreplace({fn.variables[0]: x})),
            "graph": json.loads(FORMULA_CODEC.dumps(fn)),
        },
    }


def _initializer(value, where: str) -> dict:
    return {
        "module": "symgrad.initializers",
        "class_name": type(value).__name__,
        "config": serialize(value.get_config(), where),
    }


def _regularizer(value, where: str) -> dict:
    return {"module": "symgrad.regularizers", **regularizers.serialize(value)}


def _layer(value, where: str) -> dict:
    return {"module": "symgrad.layers", **entry(value)}


def _sequence(value, where: str) -> list:
    return [serialize(v, where) for v in value]


def _mapping(value, where: str) -> dict:
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{where}: dict keys must be strings. Received: key {bad[0]!r}")
    return {k: serialize(v, where) for k, v in value.items()}


def _callable(value, where: str):
    try:
        return _formula(value, where)
    except (TypeError, ValueError, sp.SympifyError) as err:
        raise ConfigError(
            f"{where}: a callable that is no formula has no config. Received: {value!r} ({err})"
        ) from err


SERIALIZERS: dict[type, object] = {
    type(None): lambda v, where: v,
    bool: lambda v, where: v,
    int: lambda v, where: v,
    float: lambda v, where: v,
    str: lambda v, where: v,
    np.integer: lambda v, where: int(v),
    np.floating: lambda v, where: float(v),
    np.bool_: lambda v, where: bool(v),
    tuple: _sequence,
    list: _sequence,
    dict: _mapping,
    sp.Basic: _formula,  # an expression or a Lambda: an activation
    initializers.Initializer: _initializer,
    regularizers.Regularizer: _regularizer,
}
"""How each kind of constructor argument is written (the layer class is added below)."""


def serialize(value, where: str = "config"):
    """``value`` as JSON data, by the row of its class (or a parent's); else ConfigError."""
    for cls in type(value).__mro__:
        row = SERIALIZERS.get(cls)
        if row is not None:
            return row(value, where)
    if callable(value):
        return _callable(value, where)
    raise ConfigError(
        f"{where}: no config for a value of type {type(value).__name__}. Received: {value!r:.80}"
    )


def _read_formula(config: dict, custom_objects):
    fn = FORMULA_CODEC.loads(json.dumps(config["graph"]).encode())
    if not isinstance(fn, sp.Lambda):
        raise ValueError(f"An activation formula must be a Lambda. Received: {config!r:.120}")
    return fn


def _read_initializer(name: str, config: dict, custom_objects):
    cls = {c.__name__: c for c in initializers.INITIALIZERS.values()}.get(name)
    cls = cls or (custom_objects or {}).get(name)
    if cls is None:
        raise ValueError(
            f"Unknown initializer class in a config: {name!r}; pass it in custom_objects. "
            f"Known: {', '.join(c.__name__ for c in initializers.INITIALIZERS.values())}"
        )
    return cls(**config)


def deserialize(value, custom_objects: dict | None = None):
    """The inverse of :func:`serialize` (lists stay lists: constructors take them)."""
    if isinstance(value, list):
        return [deserialize(v, custom_objects) for v in value]
    if not isinstance(value, dict):
        return value
    module = value.get("module")
    if module == "symgrad.activations":
        return _read_formula(value["config"], custom_objects)
    if module == "symgrad.initializers":
        config = deserialize(value.get("config", {}), custom_objects)
        return _read_initializer(value["class_name"], config, custom_objects)
    if module == "symgrad.regularizers":
        return regularizers.from_config(value)
    if module == "symgrad.layers":
        return from_entry(value, custom_objects)
    return {k: deserialize(v, custom_objects) for k, v in value.items()}


# --------------------------------------------------------------------------
# Layers and models as entries of a model's config


def entry(layer) -> dict:
    """``{"class_name": ..., "config": ...}``: a layer (or a model used as one) in a model."""
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def from_entry(item: dict, custom_objects: dict | None = None):
    """The layer or model of an :func:`entry` (classes by name: symgrad's, then custom)."""
    from symgrad.nn import models  # models import this module

    name = item.get("class_name")
    config = item.get("config", {})
    if name in models.MODELS:
        return models.model_from_config({**config, "class_name": name}, custom_objects)
    from symgrad.nn.layers import LAYERS

    cls = (custom_objects or {}).get(name) or LAYERS.get(name)
    if cls is None:
        raise ValueError(
            f"Unknown layer class {name!r} in a config; pass it in custom_objects. "
            f"Known layers: {', '.join(sorted(LAYERS))}"
        )
    return (
        cls.from_config(config, custom_objects) if _takes_objects(cls) else cls.from_config(config)
    )


def _takes_objects(cls) -> bool:
    return "custom_objects" in inspect.signature(cls.from_config).parameters


def register_layer_class(layer_class: type) -> None:
    """Layer arguments that are layers are written as entries."""
    SERIALIZERS[layer_class] = _layer
