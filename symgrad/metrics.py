"""symgrad.metrics: metrics (defined in :mod:`symgrad.nn.metrics`)."""

from symgrad.nn.metrics import (
    METRICS,
    BinaryAccuracy,
    CategoricalAccuracy,
    MeanAbsoluteError,
    MeanSquaredError,
    Metric,
    SparseCategoricalAccuracy,
    get,
    known_names,
)

__all__ = [
    "METRICS",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "get",
    "known_names",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Metric",
    "SparseCategoricalAccuracy",
]
