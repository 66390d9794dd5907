"""symgrad.models: Keras-style models: building, saving and loading (defined in :mod:`symgrad.nn.models`
and :mod:`symgrad.nn.functional`)."""

from symgrad.nn.functional import Functional
from symgrad.nn.models import (
    Model,
    Sequential,
    load_model,
    model_from_config,
)

__all__ = [
    "Functional",
    "load_model",
    "Model",
    "model_from_config",
    "Sequential",
]
