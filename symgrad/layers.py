"""symgrad.layers: Keras-style layers (defined in :mod:`symgrad.nn.layers` and :mod:`symgrad.nn.merge`)."""

from symgrad.nn.layers import (
    LAYERS,
    Activation,
    Dense,
    Flatten,
    Input,
    InputLayer,
    KerasTensor,
    Layer,
    Reshape,
)
from symgrad.nn.merge import (
    Add,
    Average,
    Concatenate,
    Maximum,
    Merge,
    Minimum,
    Multiply,
    Subtract,
)

__all__ = [
    "LAYERS",
    "Activation",
    "Dense",
    "Flatten",
    "Reshape",
    "Add",
    "Average",
    "Concatenate",
    "Input",
    "InputLayer",
    "KerasTensor",
    "Layer",
    "Maximum",
    "Merge",
    "Minimum",
    "Multiply",
    "Subtract",
]
