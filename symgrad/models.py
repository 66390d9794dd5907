"""symgrad.models: Keras-style models: building, saving and loading (defined in :mod:`symgrad.nn.models`)."""

from symgrad.nn.models import (
    Sequential,
    load_model,
    model_from_config,
)

__all__ = [
    "load_model",
    "model_from_config",
    "Sequential",
]
