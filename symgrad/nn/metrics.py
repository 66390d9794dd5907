"""symgrad.nn.metrics: Keras's mean metrics, in NumPy and as formulas for the compiled step.

A metric turns ``(y_true, y_pred)`` into one value per sample and keeps a
running sum and count, so an epoch's value is the mean over all its samples
(Keras's ``MeanMetricWrapper``).  ``"accuracy"`` is resolved as Keras does:
sparse categorical for ``sparse_categorical_crossentropy``, binary (threshold
0.5) for a one-column output, categorical otherwise.

Two ways to compute it during ``fit``:

- ``values(y_true, y_pred)`` in NumPy, from the predictions ``P`` the compiled
  step returns (the NumPy backend; custom metrics);
- ``batch_mean(Y, P)``: the batch mean of the same values as a (1, 1) symbolic
  expression, compiled into the training step next to the loss. The LLVM
  backend uses it so that a whole epoch runs in native code. Categorical
  accuracy has no argmax there: a sample is a hit when its label's
  probability is the row maximum, ``P[i, y_i] >= max_j P[i, j]`` (written as
  "no entry of the row is larger"), which needs one-hot targets
  (``needs_one_hot``) and counts a tie for the maximum as a hit where NumPy's
  argmax takes the first of the tied classes.

Example::

    >>> from symgrad import metrics
    >>> m = metrics.CategoricalAccuracy()
    >>> m.update_state(np.eye(3), np.eye(3))
    >>> m.result()
    1.0
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from symgrad import core as E
from symgrad.nn.validation import from_identifier

_p, _y, _c = sp.symbols("p y c", real=True)


class Metric:
    """Base class: ``values(y_true, y_pred) -> per-sample values``; running mean."""

    default_name = "metric"
    needs_one_hot = False  # batch_mean is exact only for one-hot targets

    def __init__(self, name: str | None = None):
        self.name = name or self.default_name
        self.reset_state()

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def batch_mean(self, y_true: MatrixExpr, y_pred: MatrixExpr) -> MatrixExpr | None:
        """Mean of ``values`` over the batch as a (1, 1) formula of ``Y`` and ``P``; None: NumPy only."""
        return None

    def add_batch_mean(self, mean: float, rows: int) -> None:
        """Count a batch whose ``batch_mean`` was computed by the compiled step."""
        self.total += mean * rows
        self.count += rows

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

    def batch_mean(self, y_true, y_pred):
        # [y == (p > threshold)]: y == 1 above the threshold, y == 0 otherwise
        is_one = sp.Piecewise((1, sp.And(_y >= 1, _y <= 1)), (0, True))
        is_zero = sp.Piecewise((1, sp.And(_y >= 0, _y <= 0)), (0, True))
        hit = sp.Piecewise((is_one, _p > self.threshold), (is_zero, True))
        return E.mean(E.elementwise(sp.Lambda((_p, _y), hit), y_pred, y_true))


class CategoricalAccuracy(Metric):
    """1 where ``argmax(y_pred) == argmax(y_true)`` (one-hot targets)."""

    default_name = "categorical_accuracy"

    needs_one_hot = True

    def values(self, y_true, y_pred):
        return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float64)

    def batch_mean(self, y_true, y_pred):
        n, k = y_pred.shape
        label_p = E.row_sum(E.hadamard(y_true, y_pred))  # P[i, y_i] for one-hot rows
        larger = sp.Lambda((_p, _c), sp.Heaviside(_p - _c, 0))  # [p > c]
        above = E.row_sum(E.elementwise(larger, y_pred, E.broadcast_cols(label_p, k)))
        hit = sp.Lambda(_c, sp.Heaviside(sp.Rational(1, 2) - _c, 0))  # no entry above: [c = 0]
        return E.scale(1 / n, E.total(E.elementwise(hit, above)))


class SparseCategoricalAccuracy(CategoricalAccuracy):
    """Categorical accuracy on integer labels (the fit loop passes them one-hot)."""

    default_name = "sparse_categorical_accuracy"


class MeanSquaredError(Metric):
    default_name = "mean_squared_error"

    def values(self, y_true, y_pred):
        return np.mean((y_pred - y_true) ** 2, axis=-1)

    def batch_mean(self, y_true, y_pred):
        return E.mean(E.elementwise(sp.Lambda((_p, _y), (_p - _y) ** 2), y_pred, y_true))


class MeanAbsoluteError(Metric):
    default_name = "mean_absolute_error"

    def values(self, y_true, y_pred):
        return np.mean(np.abs(y_pred - y_true), axis=-1)

    def batch_mean(self, y_true, y_pred):
        return E.mean(E.elementwise(sp.Lambda((_p, _y), sp.Abs(_p - _y)), y_pred, y_true))


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
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        if loss_name == "sparse_categorical_crossentropy":
            return SparseCategoricalAccuracy(name=identifier)
        if output_dim == 1:
            return BinaryAccuracy(name=identifier)
        return CategoricalAccuracy(name=identifier)
    return from_identifier(
        identifier,
        Metric,
        METRICS,
        "metric",
        make=lambda cls, name: cls(name=name),
        known=known_names(),
    )
