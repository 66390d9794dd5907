"""symgrad.metrics: Keras's mean metrics, computed in NumPy from the step's predictions.

The compiled step returns the batch's predictions ``P`` next to the loss; a
metric turns ``(y_true, y_pred)`` into one value per sample and keeps a running
sum and count, so an epoch's value is the mean over all its samples (Keras's
``MeanMetricWrapper``).  ``"accuracy"`` is resolved as Keras does: sparse
categorical for ``sparse_categorical_crossentropy``, binary (threshold 0.5) for
a one-column output, categorical otherwise.

Example::

    >>> from symgrad import metrics
    >>> m = metrics.CategoricalAccuracy()
    >>> m.update_state(np.eye(3), np.eye(3))
    >>> m.result()
    1.0
"""

from __future__ import annotations

import numpy as np


class Metric:
    """Base class: ``values(y_true, y_pred) -> per-sample values``; running mean."""

    default_name = "metric"

    def __init__(self, name: str | None = None):
        self.name = name or self.default_name
        self.reset_state()

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def update_state(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        v = self.values(y_true, y_pred)
        self.total += float(np.sum(v, dtype=np.float64))
        self.count += len(v)

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class BinaryAccuracy(Metric):
    """Fraction of entries where ``[y_pred > threshold]`` equals ``y_true``, averaged per sample."""

    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, threshold: float = 0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def values(self, y_true, y_pred):
        return np.mean(y_true == (y_pred > self.threshold), axis=-1)


class CategoricalAccuracy(Metric):
    """1 where ``argmax(y_pred) == argmax(y_true)`` (one-hot targets)."""

    default_name = "categorical_accuracy"

    def values(self, y_true, y_pred):
        return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float64)


class SparseCategoricalAccuracy(CategoricalAccuracy):
    """Categorical accuracy on integer labels (the fit loop passes them one-hot)."""

    default_name = "sparse_categorical_accuracy"


class MeanSquaredError(Metric):
    default_name = "mean_squared_error"

    def values(self, y_true, y_pred):
        return np.mean((y_pred - y_true) ** 2, axis=-1)


class MeanAbsoluteError(Metric):
    default_name = "mean_absolute_error"

    def values(self, y_true, y_pred):
        return np.mean(np.abs(y_pred - y_true), axis=-1)


METRICS: dict[str, type] = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
}


def known_names() -> list[str]:
    return sorted([*METRICS, "accuracy", "acc"])


def get(identifier, loss_name: str = "", output_dim: int | None = None) -> Metric:
    """A metric from a name or an instance; ``"accuracy"`` depends on the loss and output."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ("accuracy", "acc"):
            if loss_name == "sparse_categorical_crossentropy":
                return SparseCategoricalAccuracy(name=identifier)
            if output_dim == 1:
                return BinaryAccuracy(name=identifier)
            return CategoricalAccuracy(name=identifier)
        if key in METRICS:
            return METRICS[key](name=identifier)
        raise ValueError(
            f"Unknown metric: {identifier!r}. Known metrics: {', '.join(known_names())}"
        )
    raise TypeError(
        f"A metric must be a name or a symgrad.metrics.Metric. Received: {identifier!r} "
        f"of type {type(identifier).__name__}"
    )
