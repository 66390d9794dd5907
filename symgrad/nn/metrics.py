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

from collections.abc import Sequence

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from symgrad import core as E
from symgrad.core.scalar import sigmoid
from symgrad.nn import config as config_module
from symgrad.nn.validation import from_identifier, non_negative_int, positive_int, show

_p, _y, _c = sp.symbols("p y c", real=True)


class Metric:
    """Keras's ``Metric``: ``update_state`` / ``result`` / ``reset_state`` over summed statistics.

    The state is a dict of float64 sums (each a 1-D array, one entry per threshold,
    class or column) plus ``count``, the samples seen (their total weight with a
    ``sample_weight``).  A batch adds its sums -- computed in NumPy by
    ``batch_sums`` or, in the compiled step, by ``batch_means`` (the same sums
    over the batch rows, as (1, k) formulas) -- and ``result`` reads the value off
    the state at the end, so a metric of an epoch is that of all its samples
    together, never a mean of batch values.

    This base class is the mean of per-sample ``values`` (Keras's
    ``MeanMetricWrapper``): a subclass gives ``values`` and, for the compiled
    step, ``batch_mean``.  Stateful metrics (``Precision``, ``AUC``...) give
    ``batch_sums``, ``batch_means`` and ``result``.
    """

    default_name = "metric"
    needs_one_hot = False  # its formulas are exact only for one-hot targets
    weighted = False  # compile's weighted_metrics: each batch's sample weights count

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:
            CLASSES[cls.__name__] = cls  # a saved metric's class is found here by name
        if "__init__" in vars(cls):
            cls.__init__ = config_module.recording(cls.__init__)  # get_config's arguments

    def __init__(self, name: str | None = None):
        self.name = name or self.default_name
        self.reset_state()

    def get_config(self) -> dict:
        """The constructor's arguments as JSON data, and the name (Keras's ``get_config``);
        ``type(m).from_config(m.get_config())`` is a new metric of the same settings."""
        where = type(self).__name__
        config = {
            key: _json_data(_listed(value), f"{where}({key}=...)")
            for key, value in getattr(self, "_arguments", {}).items()
        }
        config["name"] = self.name
        return config

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        return cls(**config)

    def reset_state(self) -> None:
        self.state: dict[str, np.ndarray] = {}
        self.count = 0.0

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError(
            f"{type(self).__name__} must define values(y_true, y_pred) (a mean metric) "
            "or batch_sums and result (a stateful one)"
        )

    def exact_for(self, y_true: np.ndarray) -> bool:
        """Whether the compiled formulas give this metric exactly for the targets ``y_true``
        (those of ``needs_one_hot`` metrics only for one-hot rows)."""
        if not self.needs_one_hot:
            return True
        return bool(np.all((y_true == 0) | (y_true == 1)) and np.all(y_true.sum(axis=1) == 1))

    def batch_mean(self, y_true: MatrixExpr, y_pred: MatrixExpr) -> MatrixExpr | None:
        """Mean of ``values`` over the batch as a (1, 1) formula of ``Y`` and ``P``; None: NumPy only."""
        return None

    def batch_sums(self, y_true, y_pred, sample_weight=None) -> dict[str, np.ndarray]:
        """The batch's contribution to each statistic: ``{name: 1-D sum over its samples}``."""
        return {"total": _weighted_sum(self.values(y_true, y_pred), sample_weight)}

    def batch_means(self, y_true: MatrixExpr, y_pred: MatrixExpr) -> dict[str, MatrixExpr] | None:
        """``batch_sums / rows`` as (1, k) formulas (the epoch weights them by the rows)."""
        mean = self.batch_mean(y_true, y_pred)
        return None if mean is None else {"total": mean}

    def add_sums(self, sums: dict, count: float) -> None:
        """Add a batch's statistics (``count``: its samples, or their total weight)."""
        for key, value in sums.items():
            value = np.atleast_1d(np.asarray(value, dtype=np.float64))
            self.state[key] = self.state[key] + value if key in self.state else value
        self.count += count

    def add_batch_mean(self, mean: float, rows: int) -> None:
        """Count a batch whose ``batch_mean`` was computed by the compiled step."""
        self.add_sums({"total": mean * rows}, rows)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch of targets and predictions (arrays; 1-D means one column)."""
        y_true, y_pred, weight = _batch(y_true, y_pred, sample_weight, self.name)
        count = len(y_true) if weight is None else float(np.sum(weight))
        self.add_sums(self.batch_sums(y_true, y_pred, weight), count)

    @property
    def total(self) -> float:
        return float(self.state["total"][0]) if "total" in self.state else 0.0

    def result(self):
        return self.total / self.count if self.count else 0.0

    def __call__(self, y_true, y_pred, sample_weight=None):
        """Keras's call: ``update_state`` then ``result``."""
        self.update_state(y_true, y_pred, sample_weight)
        return self.result()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


CLASSES: dict[str, type] = {}
"""symgrad's metric classes by name, filled as they are defined (``Metric.__init_subclass__``)."""


_JSON_SCALARS = (type(None), bool, int, float, str, np.integer, np.floating, np.bool_)


def _json_data(value, where: str):
    """A metric argument as JSON data (numbers, strings, lists and dicts of them), else a
    ConfigError naming it: ``from_config`` passes the config straight to the constructor,
    so anything else (a function, an object) could not come back as it was given."""
    if isinstance(value, (list, tuple)):
        return [_json_data(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_data(v, where) for k, v in value.items()}
    if isinstance(value, _JSON_SCALARS):
        return config_module.serialize(value, where)
    raise config_module.ConfigError(
        f"{where}: a metric's config holds numbers, strings, lists and dicts of them; "
        "override get_config and from_config to save this argument. "
        f"Received: {value!r:.80} (a {type(value).__name__})"
    )


def _listed(value):
    """Arrays given to a constructor (thresholds) as lists, for JSON."""
    return value.tolist() if isinstance(value, np.ndarray) else value


def _weighted_sum(per_sample: np.ndarray, sample_weight) -> np.ndarray:
    """Sum over the samples (axis 0) of per-sample values, each times its weight."""
    per_sample = np.asarray(per_sample, dtype=np.float64)
    if sample_weight is None:
        return np.atleast_1d(per_sample.sum(axis=0))
    return np.atleast_1d(np.tensordot(sample_weight, per_sample, axes=1))


def _as_2d(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 1-D or 2-D, one row per sample. Received: {name} with shape {array.shape}"
        )
    return array


def _batch(y_true, y_pred, sample_weight, metric: str):
    """Targets and predictions as 2-D float64 arrays of one shape; weights as 1-D or None."""
    y_true, y_pred = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"Metric {metric!r}: y_true and y_pred must have the same shape. "
            f"Received: y_true with shape {y_true.shape}, y_pred with shape {y_pred.shape}"
        )
    if sample_weight is None:
        return y_true, y_pred, None
    weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if weight.shape != (len(y_true),) or not np.all(np.isfinite(weight)) or np.any(weight < 0):
        raise ValueError(
            f"Metric {metric!r}: sample_weight must hold one finite weight >= 0 per sample "
            f"({len(y_true)}). Received: sample_weight={sample_weight!r}"
        )
    return y_true, y_pred, weight


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


class RootMeanSquaredError(MeanSquaredError):
    """``sqrt(mean over samples of the mean squared error)``: the root of the epoch's MSE."""

    default_name = "root_mean_squared_error"

    def result(self):
        return float(np.sqrt(super().result()))


# --------------------------------------------------------------------------
# Top-k: a mean metric. A sample is a hit when fewer than k classes score strictly
# higher than its label (TensorFlow's in_top_k: classes tied at the k-th place are in).


class TopKCategoricalAccuracy(Metric):
    """1 where the label (one-hot ``y_true``) is among the ``k`` largest predictions."""

    default_name = "top_k_categorical_accuracy"
    needs_one_hot = True

    def __init__(self, k: int = 5, name: str | None = None):
        self.k = positive_int(k, "k")
        super().__init__(name)

    def values(self, y_true, y_pred):
        label_p = np.sum(y_true * y_pred, axis=-1, keepdims=True)  # P[i, y_i] for one-hot rows
        return (np.sum(y_pred > label_p, axis=-1) < self.k).astype(np.float64)

    def batch_mean(self, y_true, y_pred):
        n, k = y_pred.shape
        label_p = E.row_sum(E.hadamard(y_true, y_pred))
        larger = sp.Lambda((_p, _c), sp.Heaviside(_p - _c, 0))  # [p > c]
        above = E.row_sum(E.elementwise(larger, y_pred, E.broadcast_cols(label_p, k)))
        hit = sp.Lambda(_c, sp.Heaviside(self.k - sp.Rational(1, 2) - _c, 0))  # [above < k]
        return E.scale(1 / n, E.total(E.elementwise(hit, above)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, name={self.name!r})"


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    """Top-k accuracy on integer labels (the fit loop passes them one-hot)."""

    default_name = "sparse_top_k_categorical_accuracy"

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_pred = _as_2d(y_pred, "y_pred")
        super().update_state(_one_hot(y_true, y_pred.shape[1], self.name), y_pred, sample_weight)


def _one_hot(labels, classes: int, metric: str) -> np.ndarray:
    """Integer labels (n,) or (n, 1) as one-hot rows of ``classes`` columns."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == classes and classes > 1:
        return labels.astype(np.float64)  # already one-hot (as the fit loop passes them)
    flat = labels.reshape(-1)
    if flat.size and (np.any(flat != np.round(flat)) or flat.min() < 0 or flat.max() >= classes):
        bad = flat[(flat != np.round(flat)) | (flat < 0) | (flat >= classes)][0]
        raise ValueError(
            f"Metric {metric!r}: labels must be integers in [0, {classes}). Received: label={show(bad)}"
        )
    return np.eye(classes)[flat.astype(np.int64)]


# --------------------------------------------------------------------------
# Confusion counts: stateful metrics whose state is counted per threshold


_above = sp.Lambda((_p, _c), sp.Heaviside(_p - _c, 0))  # [p > threshold]
_nonzero = sp.Lambda(_y, sp.Piecewise((0, sp.And(_y >= 0, _y <= 0)), (1, True)))  # [y != 0]
_zero = sp.Lambda(_y, sp.Piecewise((1, sp.And(_y >= 0, _y <= 0)), (0, True)))  # [y == 0]


def _threshold_row(thresholds: Sequence[float]) -> MatrixExpr:
    """The thresholds as a constant (1, T) row.

    AUC's evenly spaced thresholds are one formula of the column number (a few nodes
    whatever T), not T constants: each constant would be a loop of its own in the
    generated code (200 thresholds added ~5 s of LLVM compile time). The formula divides
    by multiplying with ``1/(T-1)``, so a threshold may differ from Keras's quotient by one
    unit in the last place."""
    count = len(thresholds)
    if count > 3 and np.array_equal(thresholds, _even_thresholds(count)):
        c = sp.Symbol("c", real=True)
        spaced = sp.Piecewise(
            (-EPSILON, c < sp.Rational(3, 2)),
            (1 + EPSILON, c > count - sp.Rational(1, 2)),
            ((c - 1) / (count - 1), True),
        )
        return E.elementwise(sp.Lambda(c, spaced), _column_numbers(count))
    return E.concat(*(E.scale(sp.Float(t), sp.OneMatrix(1, 1)) for t in thresholds))


def _even_thresholds(count: int) -> list[float]:
    """Keras's thresholds for ``num_thresholds=count``: ``-eps``, ``i/(count-1)``, ``1+eps``."""
    return [-EPSILON, *((i + 1) / (count - 1) for i in range(count - 2)), 1 + EPSILON]


def _column_numbers(count: int) -> MatrixExpr:
    """The row ``[1, 2, ..., count]``, doubled from ``[1]``: ``[a | a + width]``."""
    c = sp.Symbol("c", real=True)
    row, width = sp.OneMatrix(1, 1), 1
    while width < count:
        row = E.concat(row, E.elementwise(sp.Lambda(c, c + width), row))
        width *= 2
    return row if width == count else E.column_slice(row, 0, count)


def _counts_above(p: np.ndarray, weight: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``sum(weight[p > t])`` for each threshold ``t`` (a sort and a search: no (n, T) array)."""
    order = np.argsort(p, kind="stable")
    cumulative = np.concatenate([[0.0], np.cumsum(weight[order])])
    at_most = np.searchsorted(p[order], thresholds, side="right")  # entries <= t
    return cumulative[-1] - cumulative[at_most]


NEG_INF = -1e10
"""Keras's ``metrics_utils.NEG_INF``: the value ``top_k`` gives the entries it drops, and the
default threshold with ``top_k`` (every kept entry is a predicted positive)."""

_at_least = sp.Lambda((_p, _c), sp.Heaviside(_p - _c, 1))  # [p >= c]
_in_top = sp.Lambda((_c, _y), sp.Heaviside(_y - sp.Rational(1, 2) - _c, 0))  # [rank < k]
_kept = sp.Lambda((_p, _c), _c * _p + (1 - _c) * sp.Float(NEG_INF))  # Keras's filter


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # 1/(1 + e^-z), no overflow at -1000


def _top_k_filter(y_pred: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` largest entries kept (ties: the lower column first, as ``top_k``),
    the others ``NEG_INF``."""
    order = np.argsort(-y_pred, axis=1, kind="stable")[:, :k]
    keep = np.zeros(y_pred.shape, dtype=bool)
    np.put_along_axis(keep, order, True, axis=1)
    return np.where(keep, y_pred, NEG_INF)


def _top_k_formula(y_pred: MatrixExpr, k: int) -> MatrixExpr:
    """``_top_k_filter`` as a formula: column ``j`` is kept when its rank -- the columns
    larger than it, plus the equal ones before it -- is below ``k``."""
    n, cols = y_pred.shape
    if k >= int(cols):
        return y_pred
    columns = [E.column_slice(y_pred, j, j + 1) for j in range(int(cols))]
    kept = []
    for j, p_j in enumerate(columns):
        ahead = [
            E.elementwise(_at_least if i < j else _above, p_i, p_j)
            for i, p_i in enumerate(columns)
            if i != j
        ]
        rank = E.add(*ahead)
        in_top = E.elementwise(sp.Lambda(_c, _in_top(_c, k)), rank)
        kept.append(E.elementwise(_kept, p_j, in_top))
    return E.concat(*kept)


def _check_label_weights(label_weights) -> np.ndarray | None:
    if label_weights is None:
        return None
    values = np.asarray(label_weights, dtype=np.float64)
    if (
        values.ndim != 1
        or len(values) == 0
        or not np.all(np.isfinite(values))
        or np.any(values < 0)
    ):
        raise ValueError(
            "label_weights must be a non-empty list of finite weights >= 0, one per label "
            f"(output column). Received: label_weights={label_weights!r}"
        )
    return values


def _weighted_add(parts: Sequence[MatrixExpr], weights: np.ndarray) -> MatrixExpr:
    """``sum_c weights[c] parts[c]`` (a weight of 1 multiplies nothing)."""
    return E.add(*(p if w == 1 else E.scale(sp.Float(w), p) for p, w in zip(parts, weights)))


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")
    return bool(value)


class _ConfusionMetric(Metric):
    """Counts of true positives and predicted positives per threshold, positives and negatives.

    Every entry of ``y_pred`` (column ``class_id`` only, when given) is a
    prediction: positive where it exceeds the threshold (``p > t``, Keras's
    comparison); its target is positive where ``y_true`` is not 0. The other
    counts follow: ``fp = pp - tp``, ``fn = positives - tp``, ``tn = negatives - fp``.

    Before counting, as Keras: ``from_logits`` applies the sigmoid; ``top_k`` keeps each
    row's ``k`` largest entries and sets the others to ``NEG_INF``; then ``class_id``
    takes its column. ``multi_label``: each column counted apart (the state holds the
    counts of label 0, then label 1, ...); otherwise every entry counts once, weighted by
    its column's ``label_weights``.
    """

    def __init__(
        self,
        thresholds,
        class_id: int | None,
        name: str | None,
        top_k: int | None = None,
        multi_label: bool = False,
        label_weights=None,
        from_logits: bool = False,
    ):
        self.thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if class_id is not None:
            class_id = non_negative_int(class_id, "class_id")
        self.class_id = class_id
        self.top_k = None if top_k is None else positive_int(top_k, "top_k")
        self.multi_label = _flag(multi_label, "multi_label")
        self.from_logits = _flag(from_logits, "from_logits")
        self.label_weights = _check_label_weights(label_weights)
        super().__init__(name)

    def _prepared(self, y_true, y_pred):
        """Targets and predictions as counted: sigmoid, top-k filter, ``class_id``'s column."""
        numeric = isinstance(y_pred, np.ndarray)
        if self.from_logits:
            y_pred = (
                _sigmoid(y_pred) if numeric else E.elementwise(sp.Lambda(_p, sigmoid(_p)), y_pred)
            )
        if self.top_k is not None:
            y_pred = (_top_k_filter if numeric else _top_k_formula)(y_pred, self.top_k)
        return self._columns(y_true, y_pred)

    def _columns(self, y_true, y_pred):
        if self.class_id is None:
            return y_true, y_pred
        width = int(y_pred.shape[1])
        if self.class_id >= width:
            raise ValueError(
                f"Metric {self.name!r}: class_id={self.class_id} names no column of a "
                f"prediction with {width} column(s)"
            )
        c = self.class_id
        if isinstance(y_pred, np.ndarray):
            return y_true[:, c : c + 1], y_pred[:, c : c + 1]
        return E.column_slice(y_true, c, c + 1), E.column_slice(y_pred, c, c + 1)

    def _entry_weights(self, cols: int) -> np.ndarray:
        """Each column's weight in the counts: ``label_weights`` unless ``multi_label``
        (which weighs the labels' areas instead)."""
        if self.label_weights is not None and len(self.label_weights) != cols:
            raise ValueError(
                f"Metric {self.name!r}: label_weights has {len(self.label_weights)} weights for "
                f"a prediction of {cols} column(s). Received: label_weights="
                f"{self.label_weights.tolist()}"
            )
        if self.multi_label or self.label_weights is None:
            return np.ones(cols)
        return self.label_weights

    def batch_sums(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = self._prepared(y_true, y_pred)
        rows, cols = y_pred.shape
        weight = np.ones(rows) if sample_weight is None else sample_weight
        entry = np.outer(weight, self._entry_weights(cols))  # each entry weighs as its sample
        truth = y_true != 0
        if self.multi_label:
            groups = [(truth[:, c], y_pred[:, c], entry[:, c]) for c in range(cols)]
        else:
            groups = [(truth.reshape(-1), y_pred.reshape(-1), entry.reshape(-1))]
        th = self.thresholds
        return {
            "true_positives": np.concatenate([_counts_above(p[t], w[t], th) for t, p, w in groups]),
            "predicted_positives": np.concatenate([_counts_above(p, w, th) for _, p, w in groups]),
            "positives": np.array([np.sum(w[t]) for t, _, w in groups]),
            "negatives": np.array([np.sum(w[~t]) for t, _, w in groups]),
        }

    def batch_means(self, y_true, y_pred):
        y_true, y_pred = self._prepared(y_true, y_pred)
        n, cols = y_pred.shape
        weights = self._entry_weights(int(cols))
        truth, negative = E.elementwise(_nonzero, y_true), E.elementwise(_zero, y_true)
        t = len(self.thresholds)
        if t == 1 and not self.multi_label and np.all(weights == 1):
            # the threshold is a constant of the comparison; every entry counts alike
            above = E.elementwise(sp.Lambda(_p, _above(_p, sp.Float(self.thresholds[0]))), y_pred)
            tp, pp = E.total(E.hadamard(truth, above)), E.total(above)
            positives, negatives = E.total(truth), E.total(negative)
        else:  # one column per threshold: [P[:, c] > t_j] for every j at once, per column c
            row, tps, pps = E.broadcast_rows(_threshold_row(self.thresholds), n), [], []
            for c in range(int(cols)):
                above = E.elementwise(
                    _above, E.broadcast_cols(E.column_slice(y_pred, c, c + 1), t), row
                )
                is_true = E.broadcast_cols(E.column_slice(truth, c, c + 1), t)
                tps.append(E.col_sum(E.hadamard(is_true, above)))
                pps.append(E.col_sum(above))
            if self.multi_label:  # label by label: (1, L*T) and (1, L)
                tp, pp = E.concat(*tps), E.concat(*pps)
                positives, negatives = E.col_sum(truth), E.col_sum(negative)
            else:
                tp, pp = _weighted_add(tps, weights), _weighted_add(pps, weights)
                columns = range(int(cols))
                positives = _weighted_add(
                    [E.total(E.column_slice(truth, c, c + 1)) for c in columns], weights
                )
                negatives = _weighted_add(
                    [E.total(E.column_slice(negative, c, c + 1)) for c in columns], weights
                )
        means = {
            "true_positives": tp,
            "predicted_positives": pp,
            "positives": positives,
            "negatives": negatives,
        }
        return {key: E.scale(1 / n, value) for key, value in means.items()}

    def _count(self, key: str) -> np.ndarray:
        size = 1 if key in ("positives", "negatives") else len(self.thresholds)
        return self.state.get(key, np.zeros(size))

    @property
    def true_positives(self) -> np.ndarray:
        return self._count("true_positives")

    @property
    def false_positives(self) -> np.ndarray:
        return self._count("predicted_positives") - self.true_positives

    @property
    def false_negatives(self) -> np.ndarray:
        return self._count("positives") - self.true_positives

    @property
    def true_negatives(self) -> np.ndarray:
        return self._count("negatives") - self.false_positives

    def _scalar(self, values: np.ndarray):
        """One threshold: a float, as Keras returns it; several: an array."""
        return float(values[0]) if len(self.thresholds) == 1 else values

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _divide_no_nan(a, b):
    """``a / b``, 0 where ``b`` is 0 (Keras's ``divide_no_nan``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    safe = np.where(b == 0, 1.0, b)
    return np.where(b == 0, 0.0, a / safe)


def _check_thresholds(thresholds, name: str = "thresholds") -> list[float]:
    values = (
        np.atleast_1d(np.asarray(thresholds, dtype=np.float64)) if thresholds is not None else []
    )
    if len(values) == 0 or np.ndim(values) != 1 or not np.all(np.isfinite(values)):
        raise ValueError(
            f"{name} must be a finite number or a non-empty list of them. Received: {name}={thresholds!r}"
        )
    return [float(v) for v in values]


class _AtThresholds(_ConfusionMetric):
    """A confusion metric at the user's ``thresholds`` (one number or a list; default 0.5,
    or ``NEG_INF`` with ``top_k``: each row's ``k`` largest entries are the predicted
    positives), Keras's arguments and order."""

    def __init__(
        self,
        thresholds=None,
        top_k: int | None = None,
        class_id: int | None = None,
        name: str | None = None,
    ):
        default = 0.5 if top_k is None else NEG_INF
        super().__init__(
            _check_thresholds(default if thresholds is None else thresholds),
            class_id,
            name,
            top_k=top_k,
        )


class Precision(_AtThresholds):
    """``tp / (tp + fp)`` at ``thresholds`` (default 0.5; 0 when nothing is predicted positive).

    >>> Precision()([0, 1, 1, 1], [1, 0, 1, 1])
    0.6666666666666666
    """

    default_name = "precision"

    def result(self):
        tp = self.true_positives
        return self._scalar(_divide_no_nan(tp, tp + self.false_positives))


class Recall(_AtThresholds):
    """``tp / (tp + fn)`` at ``thresholds`` (default 0.5; 0 when there is no positive)."""

    default_name = "recall"

    def result(self):
        tp = self.true_positives
        return self._scalar(_divide_no_nan(tp, tp + self.false_negatives))


CURVES = ("ROC", "PR")
SUMMATION_METHODS = ("interpolation", "minoring", "majoring")
EPSILON = 1e-7  # Keras's backend.epsilon(): the end thresholds -eps and 1 + eps


class AUC(_ConfusionMetric):
    """Area under the ROC or precision-recall curve, by a Riemann sum over thresholds (Keras).

    The thresholds are ``-eps, 1/(T-1), ..., (T-2)/(T-1), 1 + eps`` for
    ``num_thresholds=T`` (``eps = 1e-7``), or ``[-eps, *sorted(thresholds), 1 + eps]``.
    ROC: ``x`` the false-positive rate, ``y`` the recall; PR: ``x`` the recall and ``y``
    the precision. ``summation_method``: ``"interpolation"`` -- trapezoids for ROC, and
    for PR the interpolation of Davis & Goadrich (2006) (true and false positives linear
    between thresholds, not their ratio); ``"minoring"`` / ``"majoring"`` -- rectangles
    of the lower / higher of the two heights. ``multi_label=False``: the entries of every
    column count as one label, each weighted by its column's ``label_weights``;
    ``multi_label=True``: one area per column, their mean (weighted by ``label_weights``
    when given). ``num_labels``, when given, is the number of columns the data must have.
    ``from_logits``: the predictions are logits (the sigmoid is applied first).

    >>> AUC(num_thresholds=3)([0, 0, 1, 1], [0, 0.5, 0.3, 0.9])
    0.75
    """

    default_name = "auc"

    def __init__(
        self,
        num_thresholds: int = 200,
        curve: str = "ROC",
        summation_method: str = "interpolation",
        name: str | None = None,
        thresholds=None,
        multi_label: bool = False,
        num_labels: int | None = None,
        label_weights=None,
        from_logits: bool = False,
    ):
        if isinstance(curve, str) and curve.upper() in CURVES:
            curve = curve.upper()
        else:
            raise ValueError(
                f"Invalid curve: expected one of {list(CURVES)}. Received: curve={curve!r}"
            )
        if not (
            isinstance(summation_method, str) and summation_method.lower() in SUMMATION_METHODS
        ):
            raise ValueError(
                f"Invalid summation_method: expected one of {list(SUMMATION_METHODS)}. "
                f"Received: summation_method={summation_method!r}"
            )
        self.curve, self.summation_method = curve, summation_method.lower()
        if thresholds is not None:
            inner = sorted(_check_thresholds(thresholds))
        else:
            if (
                isinstance(num_thresholds, bool)
                or not isinstance(num_thresholds, (int, np.integer))
                or num_thresholds <= 1
            ):
                raise ValueError(
                    f"Invalid value for argument num_thresholds: expected an integer > 1. "
                    f"Received: num_thresholds={num_thresholds!r}"
                )
            inner = _even_thresholds(num_thresholds)[1:-1]
        self.num_thresholds = len(inner) + 2
        self.num_labels = None if num_labels is None else positive_int(num_labels, "num_labels")
        weights = _check_label_weights(label_weights)
        if weights is not None and self.num_labels is not None and len(weights) != self.num_labels:
            raise ValueError(
                f"label_weights has {len(weights)} weights for num_labels={self.num_labels}. "
                f"Received: label_weights={label_weights!r}"
            )
        super().__init__(
            [-EPSILON, *inner, 1 + EPSILON],
            None,
            name,
            multi_label=multi_label,
            label_weights=weights,
            from_logits=from_logits,
        )

    def _entry_weights(self, cols: int) -> np.ndarray:
        if self.num_labels is not None and cols != self.num_labels:
            raise ValueError(
                f"Metric {self.name!r}: num_labels={self.num_labels}, but the prediction has "
                f"{cols} column(s)"
            )
        return super()._entry_weights(cols)

    def result(self):
        if "positives" not in self.state:
            return 0.0
        labels = len(self.state["positives"])  # 1 unless multi_label
        tp = self.state["true_positives"].reshape(labels, -1)
        fp = self.state["predicted_positives"].reshape(labels, -1) - tp
        fn = self.state["positives"][:, None] - tp
        tn = self.state["negatives"][:, None] - fp
        areas = self._areas(tp, fp, fn, tn)  # one per label
        if not self.multi_label:
            return float(areas[0])
        if self.label_weights is None:
            return float(np.mean(areas))
        return float(_divide_no_nan(np.sum(areas * self.label_weights), np.sum(self.label_weights)))

    def _areas(self, tp, fp, fn, tn) -> np.ndarray:
        """The area of each label's curve (rows: labels, columns: thresholds)."""
        if self.curve == "PR" and self.summation_method == "interpolation":
            return _interpolated_pr_auc(tp, fp, fn)
        recall = _divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide_no_nan(fp, fp + tn), recall
        else:
            x, y = recall, _divide_no_nan(tp, tp + fp)
        low, high = y[:, :-1], y[:, 1:]
        heights = {
            "interpolation": (low + high) / 2,
            "minoring": np.minimum(low, high),
            "majoring": np.maximum(low, high),
        }[self.summation_method]
        return np.sum((x[:, :-1] - x[:, 1:]) * heights, axis=1)

    def __repr__(self) -> str:
        return (
            f"AUC(num_thresholds={self.num_thresholds}, curve={self.curve!r}, "
            f"summation_method={self.summation_method!r}, multi_label={self.multi_label}, "
            f"from_logits={self.from_logits}, name={self.name!r})"
        )


def _interpolated_pr_auc(tp, fp, fn) -> np.ndarray:
    """PR-AUC with tp and the predicted positives p = tp + fp linear between thresholds:
    precision = (tp_A + slope (p - p_A)) / p integrates over [A, B] to
    ``slope (dtp + intercept log(p_B / p_A))``, divided by the positives ``tp_B + fn_B``.
    Thresholds along the last axis; one area per row."""
    p = tp + fp
    dtp, dp = tp[..., :-1] - tp[..., 1:], p[..., :-1] - p[..., 1:]
    slope = _divide_no_nan(dtp, np.maximum(dp, 0))
    intercept = tp[..., 1:] - slope * p[..., 1:]
    both = (p[..., :-1] > 0) & (p[..., 1:] > 0)
    ratio = np.where(both, _divide_no_nan(p[..., :-1], np.maximum(p[..., 1:], 0)), 1.0)
    increments = _divide_no_nan(
        slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[..., 1:] + fn[..., 1:], 0)
    )
    return np.sum(increments, axis=-1)


# --------------------------------------------------------------------------
# Per-class and per-column statistics


F1_AVERAGES = (None, "micro", "macro", "weighted")


class F1Score(Metric):
    """Keras's ``F1Score`` (``FBetaScore`` with ``beta=1``): per class, or averaged.

    Predictions become 0 / 1: above ``threshold``, or (threshold None) 1 for the
    largest of each row (every tied maximum). Per class ``precision = tp / (tp + fp + eps)``,
    ``recall = tp / (tp + fn + eps)``, ``f1 = 2 p r / (p + r + eps)`` (``eps = 1e-7``);
    ``average``: None (an array, one per class), ``"micro"`` (counts summed over the
    classes first), ``"macro"`` (the mean) or ``"weighted"`` (weighted by each class's
    positives).
    """

    default_name = "f1_score"

    def __init__(
        self, average: str | None = None, threshold: float | None = None, name: str | None = None
    ):
        if average not in F1_AVERAGES:
            raise ValueError(
                f"Invalid average: expected one of {list(F1_AVERAGES)}. Received: average={average!r}"
            )
        if threshold is not None:
            threshold = _check_thresholds(threshold, "threshold")
            if len(threshold) != 1 or not 0 <= threshold[0] <= 1:
                raise ValueError(
                    f"Invalid threshold: expected a number in [0, 1] or None. Received: threshold={threshold!r}"
                )
            threshold = threshold[0]
        self.average, self.threshold, self.beta = average, threshold, 1.0
        super().__init__(name)

    def _predicted(self, y_pred: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            return (y_pred >= y_pred.max(axis=1, keepdims=True)).astype(np.float64)
        return (y_pred > self.threshold).astype(np.float64)

    def batch_sums(self, y_true, y_pred, sample_weight=None):
        predicted = self._predicted(y_pred)
        return {
            "true_positives": _weighted_sum(y_true * predicted, sample_weight),
            "predicted_positives": _weighted_sum(predicted, sample_weight),
            "positives": _weighted_sum(y_true, sample_weight),
        }

    def batch_means(self, y_true, y_pred):
        n, k = y_pred.shape
        if self.threshold is None:  # [p >= the row's max]
            at_max = sp.Lambda((_p, _c), sp.Heaviside(_p - _c, 1))
            predicted = E.elementwise(at_max, y_pred, E.broadcast_cols(E.row_max(y_pred), k))
        else:
            predicted = E.elementwise(sp.Lambda(_p, _above(_p, sp.Float(self.threshold))), y_pred)
        sums = {
            "true_positives": E.col_sum(E.hadamard(y_true, predicted)),
            "predicted_positives": E.col_sum(predicted),
            "positives": E.col_sum(y_true),
        }
        return {key: E.scale(1 / n, value) for key, value in sums.items()}

    def result(self):
        if "true_positives" not in self.state:
            return 0.0 if self.average is not None else np.zeros(0)
        tp, pp, pos = (
            self.state[k] for k in ("true_positives", "predicted_positives", "positives")
        )
        fp, fn = pp - tp, pos - tp
        if self.average == "micro":
            tp, fp, fn = np.sum(tp), np.sum(fp), np.sum(fn)
        precision = tp / (tp + fp + EPSILON)
        recall = tp / (tp + fn + EPSILON)
        b2 = self.beta**2
        f1 = (1 + b2) * (precision * recall / (b2 * precision + recall + EPSILON))
        if self.average == "weighted":
            return float(np.sum(f1 * pos / np.sum(pos)))
        if self.average is not None:
            return float(np.mean(f1))
        return f1

    def __repr__(self) -> str:
        return (
            f"F1Score(average={self.average!r}, threshold={self.threshold!r}, name={self.name!r})"
        )


R2_AGGREGATIONS = (None, "uniform_average", "variance_weighted_average")


class R2Score(Metric):
    """Coefficient of determination ``1 - SS_res / SS_tot`` per output column (Keras's ``R2Score``).

    Kept as the sums of ``y``, ``y**2`` and ``(y - p)**2`` per column, so
    ``SS_tot = sum(y**2) - sum(y)**2 / count``; a column of constant targets scores 0.
    ``class_aggregation``: ``"uniform_average"`` (the mean over columns),
    ``"variance_weighted_average"`` (weighted by ``SS_tot``) or None (an array).
    ``num_regressors=p`` > 0 gives the adjusted score ``1 - (1 - R2)(N - 1)/(N - p - 1)``,
    ``N`` the number of target entries.
    """

    default_name = "r2_score"

    def __init__(
        self,
        class_aggregation: str | None = "uniform_average",
        num_regressors: int = 0,
        name: str | None = None,
    ):
        if class_aggregation not in R2_AGGREGATIONS:
            raise ValueError(
                f"Invalid class_aggregation: expected one of {list(R2_AGGREGATIONS)}. "
                f"Received: class_aggregation={class_aggregation!r}"
            )
        self.class_aggregation = class_aggregation
        self.num_regressors = non_negative_int(num_regressors, "num_regressors")
        super().__init__(name)

    def batch_sums(self, y_true, y_pred, sample_weight=None):
        return {
            "sum": _weighted_sum(y_true, sample_weight),
            "squared_sum": _weighted_sum(y_true * y_true, sample_weight),
            "residual_sum": _weighted_sum((y_true - y_pred) ** 2, sample_weight),
        }

    def batch_means(self, y_true, y_pred):
        n = y_pred.shape[0]
        square = sp.Lambda((_p, _y), (_y - _p) ** 2)
        sums = {
            "sum": E.col_sum(y_true),
            "squared_sum": E.col_sum(E.hadamard(y_true, y_true)),
            "residual_sum": E.col_sum(E.elementwise(square, y_pred, y_true)),
        }
        return {key: E.scale(1 / n, value) for key, value in sums.items()}

    def result(self):
        if not self.count:
            return 0.0
        total, squares, residual = (self.state[k] for k in ("sum", "squared_sum", "residual_sum"))
        variation = squares - total * (total / self.count)  # SS_tot per column
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = 1 - residual / variation
        raw = np.where(np.isinf(raw), 0.0, raw)
        if self.class_aggregation == "uniform_average":
            score = float(np.mean(raw))
        elif self.class_aggregation == "variance_weighted_average":
            score = float(np.sum(variation * raw) / np.sum(variation))
        else:
            score = raw
        p, entries = self.num_regressors, self.count * len(total)
        if p and p < entries - 1:
            score = 1 - (1 - score) * (entries - 1) / (entries - p - 1)
        return score

    def __repr__(self) -> str:
        return f"R2Score(class_aggregation={self.class_aggregation!r}, name={self.name!r})"


METRICS: dict[str, type] = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
    "root_mean_squared_error": RootMeanSquaredError,
    "precision": Precision,
    "recall": Recall,
    "auc": AUC,
    "f1_score": F1Score,
    "r2_score": R2Score,
}


# --------------------------------------------------------------------------
# The metrics as plain functions of arrays


def _per_sample(metric: Metric, y_true, y_pred) -> np.ndarray:
    y_true, y_pred, _ = _batch(y_true, y_pred, None, metric.name)
    return metric.values(y_true, y_pred)


def top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    """Per sample: 1 where the one-hot label is among the ``k`` largest predictions (Keras)."""
    return _per_sample(TopKCategoricalAccuracy(k), y_true, y_pred)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k: int = 5) -> np.ndarray:
    """Per sample: 1 where the integer label is among the ``k`` largest predictions (Keras)."""
    y_pred = _as_2d(y_pred, "y_pred")
    one_hot = _one_hot(y_true, y_pred.shape[1], "sparse_top_k_categorical_accuracy")
    return _per_sample(SparseTopKCategoricalAccuracy(k), one_hot, y_pred)


def precision(y_true, y_pred, thresholds=None, class_id=None, sample_weight=None, top_k=None):
    """``Precision(thresholds, top_k, class_id)`` of one batch: ``tp / (tp + fp)``."""
    return Precision(thresholds, top_k, class_id)(y_true, y_pred, sample_weight)


def recall(y_true, y_pred, thresholds=None, class_id=None, sample_weight=None, top_k=None):
    """``Recall(thresholds, top_k, class_id)`` of one batch: ``tp / (tp + fn)``."""
    return Recall(thresholds, top_k, class_id)(y_true, y_pred, sample_weight)


def auc(
    y_true,
    y_pred,
    num_thresholds=200,
    curve="ROC",
    summation_method="interpolation",
    thresholds=None,
    sample_weight=None,
    multi_label=False,
    label_weights=None,
    from_logits=False,
) -> float:
    """``AUC(...)`` of one batch (see :class:`AUC`)."""
    metric = AUC(
        num_thresholds,
        curve,
        summation_method,
        thresholds=thresholds,
        multi_label=multi_label,
        label_weights=label_weights,
        from_logits=from_logits,
    )
    return metric(y_true, y_pred, sample_weight)


def f1_score(y_true, y_pred, average=None, threshold=None, sample_weight=None):
    """``F1Score(average, threshold)`` of one batch (see :class:`F1Score`)."""
    return F1Score(average, threshold)(y_true, y_pred, sample_weight)


def r2_score(
    y_true, y_pred, class_aggregation="uniform_average", num_regressors=0, sample_weight=None
):
    """``R2Score(class_aggregation, num_regressors)`` of one batch."""
    return R2Score(class_aggregation, num_regressors)(y_true, y_pred, sample_weight)


def root_mean_squared_error(y_true, y_pred, sample_weight=None) -> float:
    """``sqrt`` of the mean over samples of the mean squared error."""
    return RootMeanSquaredError()(y_true, y_pred, sample_weight)


def serialize(metric):
    """A compile argument's metric as JSON data: a name as it is, a metric object (or class)
    as ``{"class_name", "config"}``; None for a plain function (it has no config)."""
    if isinstance(metric, str):
        return metric
    if isinstance(metric, type) and issubclass(metric, Metric):
        return {"class_name": metric.__name__, "config": {}}
    if isinstance(metric, Metric):
        return {"class_name": type(metric).__name__, "config": metric.get_config()}
    return None


def deserialize(spec, custom_objects: dict | None = None):
    """``serialize``'s value back: a name, or a new metric of the saved class and settings
    (symgrad's classes, or a user's in ``custom_objects``)."""
    if isinstance(spec, str):
        return spec
    name = spec.get("class_name") if isinstance(spec, dict) else None
    cls = (custom_objects or {}).get(name) or CLASSES.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise ValueError(
            f"Unknown metric class {name!r} in a config: symgrad's are {', '.join(sorted(CLASSES))}; "
            "pass a user's class as custom_objects={name: cls}. "
            f"Received: {spec!r:.200}"
        )
    try:
        return cls.from_config(dict(spec.get("config", {})))
    except TypeError as err:
        raise ValueError(
            f"The config of a {name} does not fit its constructor ({err}). Received: {spec!r:.200}"
        ) from err


def custom_classes(metrics) -> dict[str, type]:
    """The classes of the metric objects in ``metrics`` (a compile argument) that are not
    symgrad's, by name: what reading their configs back needs as ``custom_objects``."""
    if isinstance(metrics, dict):
        metrics = list(metrics.values())
    if isinstance(metrics, (list, tuple)):
        return {k: v for m in metrics for k, v in custom_classes(m).items()}
    cls = metrics if isinstance(metrics, type) else type(metrics)
    if issubclass(cls, Metric) and CLASSES.get(cls.__name__) is not cls:
        return {cls.__name__: cls}
    return {}


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
