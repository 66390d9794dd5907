"""symgrad.losses: losses as classes for ``compile`` and as functions (:mod:`symgrad.nn.losses`)."""

from symgrad.nn.losses import (
    FUNCTIONS,
    LOSSES,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Loss,
    LossFunctionWrapper,
    MeanAbsoluteError,
    MeanSquaredError,
    SparseCategoricalCrossentropy,
    binary_crossentropy,
    categorical_crossentropy,
    get,
    mean_absolute_error,
    mean_squared_error,
    per_sample,
    sparse_categorical_crossentropy,
)

__all__ = [
    "FUNCTIONS",
    "LOSSES",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "get",
    "Loss",
    "LossFunctionWrapper",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalCrossentropy",
    "binary_crossentropy",
    "categorical_crossentropy",
    "mean_absolute_error",
    "mean_squared_error",
    "per_sample",
    "sparse_categorical_crossentropy",
]
