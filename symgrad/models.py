"""symgrad.models: Keras-style models: building, saving and loading (defined in :mod:`symgrad.nn.models`
and :mod:`symgrad.nn.functional`)."""

from symgrad.nn.functional import Functional
from symgrad.nn.models import (
    Model,
    Sequential,
    clone_model,
    load_model,
    model_from_config,
    model_from_json,
)

__all__ = [
    "clone_model",
    "Functional",
    "load_model",
    "Model",
    "model_from_config",
    "model_from_json",
    "Sequential",
]
