"""symgrad.layers: Keras-style layers (defined in :mod:`symgrad.nn.layers`)."""

from symgrad.nn.layers import (
    LAYERS,
    Activation,
    Dense,
    Input,
    InputLayer,
    Layer,
)

__all__ = [
    "LAYERS",
    "Activation",
    "Dense",
    "Input",
    "InputLayer",
    "Layer",
]
