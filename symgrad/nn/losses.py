"""symgrad.nn.losses: Keras's losses, as symbolic expressions and as plain functions.

Each loss is written once, per sample (``Loss.per_sample``: an ``(n, 1)``
column, one value per row, as Keras's loss functions return); the loss
``compile`` trains on is its mean over the batch -- for MSE / MAE / binary
cross-entropy the mean over the output columns too, as Keras computes it.
The functions (``categorical_crossentropy(y_true, y_pred)``,
``mean_squared_error``, ...; ``FUNCTIONS``) take arrays (and return the
per-sample values, shape ``(n,)``), tape tensors (inside a
:class:`~symgrad.GradientTape`: a tensor of shape ``(n,)``) or matrix
expressions (an ``(n, 1)`` expression).  A loss also
checks the targets before training (``prepare_targets``): one-hot rows for
categorical cross-entropy, values in [0, 1] for binary cross-entropy, integer
classes in range for the sparse variant (converted to one-hot rows here, in
Python, before the compiled step sees them).

Numerical safety follows Keras: probabilities are clipped to
``[1e-7, 1 - 1e-7]`` before the log -- except when the model's output is a
softmax (categorical) or sigmoid (binary) layer, where the simplifier fuses the
log into ``log_softmax`` / ``softplus`` and the loss stays exact and finite.

Example::

    >>> from symgrad import expr as E, losses
    >>> n = E.batch()
    >>> P, Y = E.matrix("P", n, 1), E.matrix("Y", n, 1)
    >>> losses.get("mse")(Y, P)
    1/n*sum((P - Y)**2)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr, MatrixSymbol

from symgrad import core as E
from symgrad.core import scalar
from symgrad.nn import tape as tape_module
from symgrad.nn.validation import from_identifier, show

EPSILON = sp.Rational(1, 10**7)
"""Keras's ``backend.epsilon()``: the clip margin of probabilities."""

_p, _y, _s = sp.symbols("p y s", real=True)


def _clip(x: sp.Expr) -> sp.Expr:
    """clip(x, eps, 1 - eps) (its derivative is 0 outside, 1 inside)."""
    return sp.Min(sp.Max(x, EPSILON), 1 - EPSILON)


def _pointwise(body: sp.Expr, y_true: MatrixExpr, y_pred: MatrixExpr) -> MatrixExpr:
    """``body(p, y)`` entry by entry over the predictions and targets."""
    return E.elementwise(sp.Lambda((_p, _y), body), y_pred, y_true)


def _row_max(a: MatrixExpr) -> MatrixExpr:
    """The largest entry of each row, (n, k) -> (n, 1): one Max over the k columns."""
    k = int(a.shape[1])
    xs = E.arg_symbols(k)
    columns = [E.column_slice(a, j, j + 1) for j in range(k)]
    return E.elementwise(sp.Lambda(xs, sp.Max(*xs)), *columns) if k > 1 else a


def _mean_all(a: MatrixExpr) -> MatrixExpr:
    rows, cols = a.shape
    return E.scale(1 / (rows * cols), E.total(a))


def _row_mean(a: MatrixExpr) -> MatrixExpr:
    """The mean of each row, (n, k) -> (n, 1): Keras's mean over the last axis."""
    return E.scale(1 / a.shape[1], E.row_sum(a))


def _output_is(y_pred: MatrixExpr, kind: str) -> bool:
    """Whether the model output is a softmax / sigmoid node (so the log fuses)."""
    body = y_pred.body if isinstance(y_pred, E.Named) else y_pred
    if kind == "softmax":
        return isinstance(body, E.Softmax)
    sigmoid = E.canonical_lambda([_p], scalar.sigmoid(_p))
    return isinstance(body, E.Elementwise) and body.fn == sigmoid


class Loss:
    """Base class: ``per_sample(y_true, y_pred) -> (n, 1)``; ``loss(y_true, y_pred)``, its batch
    mean, ``(1, 1)``; ``prepare_targets``."""

    name = "loss"
    from_logits = False
    reduction = "sum_over_batch_size"

    def labels(self, rows, cols, name: str = "Y") -> MatrixSymbol:
        """The symbol that stands for the targets in the training step."""
        return E.matrix(name, rows, cols)

    def __call__(self, y_true, y_pred):
        """The loss reduced over the batch (its mean, or its sum for ``reduction="sum"``): of
        matrix expressions a (1, 1) expression; of a tape tensor a 0-d tensor; of arrays a
        float (Keras's ``loss_fn(y_true, y_pred)``)."""
        if isinstance(y_true, MatrixExpr) and isinstance(y_pred, MatrixExpr):
            return self.call(y_true, y_pred)
        values = per_sample(self, y_true, y_pred)
        summed = self.reduction == "sum"
        if isinstance(values, tape_module.Tensor):
            how = ("sum", E.total) if summed else ("mean", E.mean)
            return values.tape.tensor(tape_module.record(*how, values.expr), ())
        return float(np.sum(values) if summed else np.mean(values))

    def per_sample(self, y_true: MatrixExpr, y_pred: MatrixExpr) -> MatrixExpr:
        """The loss of each row, an (n, 1) column (Keras's loss functions)."""
        raise NotImplementedError

    def label_blocks(self, y: MatrixSymbol) -> dict:
        """Symbols the loss used for parts of the targets ``y`` -> those parts (none here)."""
        return {}

    def call(self, y_true: MatrixExpr, y_pred: MatrixExpr) -> MatrixExpr:
        """``per_sample`` reduced as ``reduction`` says (its batch mean by default), (1, 1)."""
        return self.weighted(y_true, y_pred, None)

    def weighted(self, y_true, y_pred, sample_weight: MatrixExpr | None) -> MatrixExpr:
        """``per_sample`` times each sample's weight (an (n, 1) column; None: all 1), reduced
        (Keras: the weighted sum over the batch size)."""
        values = self.per_sample(y_true, y_pred)
        if sample_weight is not None:
            values = E.hadamard(sample_weight, values)
        return REDUCTIONS[self.reduction](values)

    def target_part(self, y: MatrixExpr) -> MatrixExpr:
        """The targets within the step's ``Y`` (all of it, but for :class:`SampleWeighted`)."""
        return y

    def target_columns(self, output_dim: int) -> int:
        """Columns of ``y`` as the user passes it."""
        return output_dim

    def check_targets(self, y: np.ndarray) -> None:
        """Raise ValueError when the targets are outside the loss's domain."""

    def prepare_targets(self, y: np.ndarray, output_dim: int) -> np.ndarray:
        """Validated targets of shape (m, output_dim), float64; raises ValueError."""
        y = _as_rows(y, self.target_columns(output_dim), self.name)
        self.check_targets(y)
        return y

    def get_config(self) -> dict:
        return {"name": self.name, "from_logits": self.from_logits}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _as_rows(y: np.ndarray, cols: int, loss_name: str) -> np.ndarray:
    if y.ndim == 1 and cols == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != cols:
        hint = ""
        if loss_name == "categorical_crossentropy" and (y.ndim == 1 or y.shape[1] == 1):
            hint = " For integer class labels use loss='sparse_categorical_crossentropy'."
        raise ValueError(
            f"Targets for {loss_name} must have shape (samples, {cols}) to match the model output. "
            f"Received: y with shape {y.shape}.{hint}"
        )
    return y


class MeanSquaredError(Loss):
    """mean((P - Y)^2) over the batch and the output columns."""

    name = "mean_squared_error"

    def per_sample(self, y_true, y_pred):
        return _row_mean(_pointwise((_p - _y) ** 2, y_true, y_pred))


class MeanAbsoluteError(Loss):
    """mean(|P - Y|) over the batch and the output columns; |x|'(0) = 0."""

    name = "mean_absolute_error"

    def per_sample(self, y_true, y_pred):
        return _row_mean(_pointwise(sp.Abs(_p - _y), y_true, y_pred))


class BinaryCrossentropy(Loss):
    """-mean(Y log P + (1 - Y) log(1 - P)); ``from_logits=True`` takes the pre-sigmoid Z."""

    name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0):
        self.from_logits = bool(from_logits)
        self.label_smoothing = _fraction(type(self).__name__, "label_smoothing", label_smoothing)

    def per_sample(self, y_true, y_pred):
        y = _smoothed(_y, self.label_smoothing, 2)  # towards 1/2
        if self.from_logits:  # -(y log s(z) + (1-y) log(1-s(z))) = y sp(-z) + (1-y) sp(z)
            body = y * scalar.softplus(-_p) + (1 - y) * scalar.softplus(_p)
            return _row_mean(_pointwise(body, y_true, y_pred))
        p = _p if _output_is(y_pred, "sigmoid") else _clip(_p)  # sigmoid: log fuses to softplus
        body = y * sp.log(p) + (1 - y) * sp.log(1 - p)
        return E.scale(-1, _row_mean(_pointwise(body, y_true, y_pred)))

    def check_targets(self, y):
        bad = np.argwhere((y < 0) | (y > 1))
        if len(bad):
            r, c = bad[0]
            raise ValueError(
                f"binary_crossentropy expects targets in [0, 1]. Received: y[{r}, {c}]={show(y[r, c])} "
                f"({len(bad)} value(s) out of range)"
            )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}

    def __repr__(self):
        return f"BinaryCrossentropy(from_logits={self.from_logits}{_smoothing(self)})"


class CategoricalCrossentropy(Loss):
    """-mean over rows of sum_j Y_ij log P_ij; Y rows are one-hot (or probabilities).

    The targets are declared with :func:`symgrad.expr.labels`, so with a softmax
    output the simplifier derives the gradient ``(P - Y) / n``.
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0):
        self.from_logits = bool(from_logits)
        self.label_smoothing = _fraction(type(self).__name__, "label_smoothing", label_smoothing)

    def labels(self, rows, cols, name="Y"):
        return E.labels(name, rows, cols)

    def per_sample(self, y_true, y_pred):
        n, k = y_pred.shape
        if self.from_logits:
            log_p = E.log_softmax(y_pred)
        elif _output_is(y_pred, "softmax"):  # log(softmax(Z)) -> log_softmax(Z)
            log_p = E.elementwise(sp.Lambda(_p, sp.log(_p)), y_pred)
        else:  # Keras: normalize each row, clip, then log (an all-zero row divides by eps, not 0)
            body = sp.log(_clip(_p / sp.Max(_s, EPSILON)))
            row_total = E.broadcast_cols(E.row_sum(y_pred), k)
            log_p = E.elementwise(sp.Lambda((_p, _s), body), y_pred, row_total)
        if self.label_smoothing:  # towards 1/k in every column
            y_true = E.elementwise(sp.Lambda(_y, _smoothed(_y, self.label_smoothing, k)), y_true)
        return E.scale(-1, E.row_sum(E.hadamard(y_true, log_p)))

    def check_targets(self, y):
        check_probability_rows(y, self.name)

    def get_config(self):
        config = super().get_config()
        return {**config, "label_smoothing": self.label_smoothing} if self.smooths else config

    smooths = True
    """Whether the loss takes ``label_smoothing`` (the sparse variant does not, as in Keras)."""

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits}{_smoothing(self)})"


def check_probability_rows(y: np.ndarray, loss_name: str) -> None:
    """Rows must be >= 0 and sum to 1 (one-hot or soft labels)."""
    negative = np.argwhere(y < 0)
    if len(negative):
        r, c = negative[0]
        raise ValueError(
            f"{loss_name} expects one-hot (or probability) rows. Received: y[{r}, {c}]={show(y[r, c])} < 0"
        )
    sums = y.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > 1e-5)
    if len(bad):
        r = bad[0]
        raise ValueError(
            f"{loss_name} expects one-hot (or probability) rows that sum to 1. Received: row {r} of y "
            f"sums to {show(sums[r])} ({len(bad)} such row(s)). For integer class labels use "
            "loss='sparse_categorical_crossentropy'."
        )


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy on integer class labels (converted to one-hot rows)."""

    name = "sparse_categorical_crossentropy"
    smooths = False

    def __init__(self, from_logits: bool = False):
        super().__init__(from_logits=from_logits)

    def target_columns(self, output_dim):
        return 1

    def prepare_targets(self, y, output_dim):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(
                f"{self.name} expects one integer class label per sample: y with shape (samples,). "
                f"Received: y with shape {y.shape}. For one-hot rows use loss='categorical_crossentropy'."
            )
        fractional = np.flatnonzero(y != np.round(y))
        if len(fractional):
            i = fractional[0]
            raise ValueError(
                f"{self.name} expects integer class labels. Received: y[{i}]={show(y[i])}"
            )
        out_of_range = np.flatnonzero((y < 0) | (y >= output_dim))
        if len(out_of_range):
            i = out_of_range[0]
            raise ValueError(
                f"{self.name} expects class labels in [0, {output_dim}) for a model with {output_dim} "
                f"outputs. Received: y[{i}]={show(y[i])} ({len(out_of_range)} label(s) out of range)"
            )
        return np.eye(output_dim)[y.astype(np.int64)]


class LossFunctionWrapper(Loss):
    """A user function ``fn(y_true, y_pred) -> matrix expression``, averaged like Keras.

    A (1, 1) result is the loss as is; an (n, 1) or (n, k) result is averaged
    over all its entries (Keras's ``sum_over_batch_size``).
    """

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom_loss")

    def call(self, y_true, y_pred):
        value = self.fn(y_true, y_pred)
        if not isinstance(value, MatrixExpr):
            raise TypeError(
                f"The loss function {self.name!r} must return a SymPy matrix expression. "
                f"Received: {value!r} of type {type(value).__name__}"
            )
        return value if tuple(value.shape) == (1, 1) else _mean_all(value)

    def per_sample(self, y_true, y_pred):
        value = self.fn(y_true, y_pred)
        if not isinstance(value, MatrixExpr) or value.shape[0] != y_pred.shape[0]:
            raise ValueError(
                f"The loss function {self.name!r} gives no value per sample: it returned "
                f"{value!r}. Return an (n, k) expression for a per-sample loss"
            )
        return _row_mean(value)

    def __repr__(self):
        return f"LossFunctionWrapper({self.name})"


# --------------------------------------------------------------------------
# Keras's other losses, each written per sample


REDUCTIONS: dict[str, Callable[[MatrixExpr], MatrixExpr]] = {
    "sum_over_batch_size": lambda v: E.scale(1 / v.shape[0], E.total(v)),  # Keras's default
    "sum": E.total,
}
"""How a loss reduces its per-sample column to the (1, 1) loss ``compile`` trains on."""


def _non_negative(who: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{who}: {key} must be a number >= 0. Received: {key}={value!r}")
    return float(value)


def _fraction(who: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{who}: {key} must be in [0, 1]. Received: {key}={value!r}")
    return float(value)


def _smoothed(y: sp.Expr, amount: float, classes) -> sp.Expr:
    """Keras's label smoothing: y (1 - amount) + amount / classes."""
    if not amount:
        return y
    return y * (1 - sp.Float(amount)) + sp.Float(amount) / classes


def _smoothing(loss: Loss) -> str:
    """The ``label_smoothing`` part of a cross-entropy's repr (empty when it does not smooth)."""
    amount = getattr(loss, "label_smoothing", 0.0)
    return f", label_smoothing={amount}" if amount else ""


class Reduced(Loss):
    """A loss with Keras's ``reduction`` (``"sum_over_batch_size"`` or ``"sum"``) and its
    hyperparameters in ``config`` (the rest of its ``get_config``)."""

    def __init__(self, reduction: str = "sum_over_batch_size", **config):
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: unknown reduction {reduction!r}. Known reductions: "
                f"{', '.join(REDUCTIONS)}"
            )
        self.reduction, self.config = reduction, config
        for key, value in config.items():
            setattr(self, key, value)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, **self.config}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


class Huber(Reduced):
    """mean over outputs of e^2/2 where |e| <= delta, else delta (|e| - delta/2); e = P - Y."""

    name = "huber"

    def __init__(self, delta: float = 1.0, reduction: str = "sum_over_batch_size"):
        super().__init__(reduction, delta=_non_negative("Huber", "delta", delta))

    def per_sample(self, y_true, y_pred):
        e, d = _p - _y, sp.Float(self.delta)
        body = sp.Piecewise((e**2 / 2, sp.Abs(e) <= d), (d * sp.Abs(e) - d**2 / 2, True))
        return _row_mean(_pointwise(body, y_true, y_pred))


class LogCosh(Reduced):
    """mean over outputs of log(cosh(e)) = e + softplus(-2 e) - log 2 (finite at any e)."""

    name = "log_cosh"

    def __init__(self, reduction: str = "sum_over_batch_size"):
        super().__init__(reduction)

    def per_sample(self, y_true, y_pred):
        e = _p - _y
        return _row_mean(_pointwise(e + scalar.softplus(-2 * e) - sp.log(2), y_true, y_pred))


def _clip_low(x: sp.Expr) -> sp.Expr:
    """clip(x, eps, 1), as Keras clips both distributions of the KL divergence."""
    return sp.Min(sp.Max(x, EPSILON), 1)


class KLDivergence(Reduced):
    """sum over outputs of Y log(Y / P), both clipped to [1e-7, 1]."""

    name = "kl_divergence"

    def __init__(self, reduction: str = "sum_over_batch_size"):
        super().__init__(reduction)

    def per_sample(self, y_true, y_pred):
        y, p = _clip_low(_y), _clip_low(_p)
        return E.row_sum(_pointwise(y * (sp.log(y) - sp.log(p)), y_true, y_pred))


class Poisson(Reduced):
    """mean over outputs of P - Y log(P + 1e-7)."""

    name = "poisson"

    def __init__(self, reduction: str = "sum_over_batch_size"):
        super().__init__(reduction)

    def per_sample(self, y_true, y_pred):
        return _row_mean(_pointwise(_p - _y * sp.log(_p + EPSILON), y_true, y_pred))


def hinge_targets(y: np.ndarray) -> np.ndarray:
    """Keras's hinge targets are -1 / 1; targets that are all 0 / 1 are mapped to -1 / 1."""
    return 2 * y - 1 if np.all((y == 0) | (y == 1)) else y


class Hinge(Reduced):
    """mean over outputs of max(1 - Y P, 0), targets -1 / 1 (0 / 1 converted)."""

    name = "hinge"
    power = 1

    def __init__(self, reduction: str = "sum_over_batch_size"):
        super().__init__(reduction)

    def prepare_targets(self, y, output_dim):
        return hinge_targets(super().prepare_targets(y, output_dim))

    def per_sample(self, y_true, y_pred):
        return _row_mean(_pointwise(sp.Max(1 - _y * _p, 0) ** self.power, y_true, y_pred))


class SquaredHinge(Hinge):
    """mean over outputs of max(1 - Y P, 0)^2, targets -1 / 1 (0 / 1 converted)."""

    name = "squared_hinge"
    power = 2


class CategoricalHinge(Reduced):
    """max(max_j (1 - Y_j) P_j - sum_j Y_j P_j + 1, 0) per row (one-hot Y)."""

    name = "categorical_hinge"

    def __init__(self, reduction: str = "sum_over_batch_size"):
        super().__init__(reduction)

    def per_sample(self, y_true, y_pred):
        positive = E.row_sum(E.hadamard(y_true, y_pred))
        negative = _row_max(_pointwise((1 - _y) * _p, y_true, y_pred))
        return _pointwise(sp.Max(_p - _y + 1, 0), positive, negative)


def _l2_normalized(a: MatrixExpr) -> MatrixExpr:
    """Each row over its norm, sqrt(max(sum x^2, 1e-12)) as Keras's l2_normalize."""
    k = a.shape[1]
    squares = E.broadcast_cols(E.row_sum(E.hadamard(a, a)), k)
    body = _p / sp.sqrt(sp.Max(_s, sp.Rational(1, 10**12)))
    return E.elementwise(sp.Lambda((_p, _s), body), a, squares)


class CosineSimilarity(Reduced):
    """-sum over outputs of (Y / |Y|)(P / |P|), each row normalized: -1 when they align."""

    name = "cosine_similarity"

    def __init__(self, reduction: str = "sum_over_batch_size"):
        super().__init__(reduction)

    def per_sample(self, y_true, y_pred):
        return E.scale(-1, E.row_sum(E.hadamard(_l2_normalized(y_true), _l2_normalized(y_pred))))


class BinaryFocalCrossentropy(Reduced):
    """mean over outputs of (1 - p_t)^gamma bce, p_t = Y P + (1 - Y)(1 - P) (Lin et al., 2017);
    ``apply_class_balancing`` weights by alpha Y + (1 - alpha)(1 - Y); targets in [0, 1]."""

    name = "binary_focal_crossentropy"

    def __init__(
        self,
        apply_class_balancing: bool = False,
        alpha: float = 0.25,
        gamma: float = 2.0,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        reduction: str = "sum_over_batch_size",
    ):
        who = type(self).__name__
        super().__init__(
            reduction,
            apply_class_balancing=bool(apply_class_balancing),
            alpha=_fraction(who, "alpha", alpha),
            gamma=_non_negative(who, "gamma", gamma),
            from_logits=bool(from_logits),
            label_smoothing=_fraction(who, "label_smoothing", label_smoothing),
        )

    def per_sample(self, y_true, y_pred):
        y = _smoothed(_y, self.label_smoothing, 2)
        p = scalar.sigmoid(_p) if self.from_logits else _p
        bce = -(y * sp.log(_clip(p)) + (1 - y) * sp.log(1 - _clip(p)))
        p_t = y * p + (1 - y) * (1 - p)
        body = (1 - p_t) ** sp.Float(self.gamma) * bce
        if self.apply_class_balancing:
            body = (y * sp.Float(self.alpha) + (1 - y) * (1 - sp.Float(self.alpha))) * body
        return _row_mean(_pointwise(body, y_true, y_pred))

    check_targets = BinaryCrossentropy.check_targets


class SampleWeighted(Loss):
    """``loss`` with a weight per sample: the step's targets carry one more column,
    ``Y = [Y_true | SW]``, and the loss is ``reduce(SW * per_sample(Y_true, P))``.

    The weights are data of the step, gathered with the rows by the whole-epoch
    native call; ``Y_true`` is declared as ``loss`` declares its targets, so the
    softmax cross-entropy still simplifies its gradient (to ``SW o (P - Y_true) / n``).
    """

    def __init__(self, loss: Loss):
        self.loss, self.name, self.from_logits = loss, loss.name, loss.from_logits

    def labels(self, rows, cols, name: str = "Y") -> MatrixSymbol:
        return E.matrix(name, rows, cols + 1)

    def _parts(self, y: MatrixExpr) -> tuple[MatrixSymbol, MatrixSymbol]:
        rows, cols = y.shape[0], y.shape[1] - 1
        return self.loss.labels(rows, cols, "Y_true"), E.matrix("SW", rows, 1)

    def call(self, y_true, y_pred):
        targets, weights = self._parts(y_true)
        return self.loss.weighted(targets, y_pred, weights)

    def label_blocks(self, y):
        targets, weights = self._parts(y)
        k = int(targets.shape[1])
        blocks = {targets: E.column_slice(y, 0, k), weights: E.column_slice(y, k, k + 1)}
        for symbol, part in self.loss.label_blocks(targets).items():  # several outputs
            blocks[symbol] = part.xreplace({targets: blocks[targets]})
        return blocks

    def target_part(self, y):
        return E.column_slice(y, 0, int(y.shape[1]) - 1)

    def get_config(self):
        return self.loss.get_config()

    def __repr__(self):
        return f"SampleWeighted({self.loss!r})"


LOSSES: dict[str, type] = {
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "huber": Huber,
    "log_cosh": LogCosh,
    "logcosh": LogCosh,
    "kl_divergence": KLDivergence,
    "kld": KLDivergence,
    "poisson": Poisson,
    "hinge": Hinge,
    "squared_hinge": SquaredHinge,
    "categorical_hinge": CategoricalHinge,
    "cosine_similarity": CosineSimilarity,
    "binary_focal_crossentropy": BinaryFocalCrossentropy,
}


def get(identifier) -> Loss:
    """A loss from a name (``"mse"``), a :class:`Loss`, a Loss class or a function."""
    if callable(identifier) and not isinstance(identifier, (Loss, type)):
        return LossFunctionWrapper(identifier)
    expected = "a name, a symgrad.nn.losses.Loss or a function"
    return from_identifier(identifier, Loss, LOSSES, "loss", expected=expected)


# --------------------------------------------------------------------------
# The losses as functions (Keras's ``keras.losses.categorical_crossentropy``...)


def per_sample(loss: Loss, y_true, y_pred):
    """``loss.per_sample`` on matrix expressions, tape tensors, or arrays (NumPy values, (n,)).

    Array targets are checked and converted as ``fit`` does (one-hot rows for a
    categorical cross-entropy, integer labels made one-hot for the sparse one).
    Inside a tape's ``with`` block (or given a tape tensor) the result is a tape
    tensor; outside, an array computed by a compiled program kept for its structure.
    """
    if isinstance(y_true, MatrixExpr) and isinstance(y_pred, MatrixExpr):
        return loss.per_sample(y_true, y_pred)
    if isinstance(y_true, tape_module.Tensor) or isinstance(y_pred, tape_module.Tensor):
        return _recorded(loss, y_true, y_pred, tape_module._tape_of(y_true, y_pred))
    tape = tape_module.recording()
    if tape is not None:
        return _recorded(loss, y_true, y_pred, tape)
    return _recorded(loss, y_true, y_pred, tape_module.GradientTape()).numpy()


def _recorded(loss: Loss, y_true, y_pred, tape) -> tape_module.Tensor:
    """The per-sample loss as a tensor of ``tape`` (shape (n,))."""
    pred = tape.as_tensor(y_pred, base="P", batch=True)
    if pred.ndim not in (1, 2):
        raise ValueError(
            f"{loss.name}: y_pred must have shape (samples, outputs). Received: {pred.shape}"
        )
    rows, cols = (pred.shape[0], 1) if pred.ndim == 1 else pred.shape
    if isinstance(y_true, tape_module.Tensor):
        true = y_true
    else:

        def kind(name, r, c):
            return loss.labels(r, c, name)

        targets = loss.prepare_targets(np.asarray(y_true), cols)
        true = tape.as_tensor(targets, like=pred, base="Y", kind=kind)
    if true.expr.shape != pred.expr.shape and (true.shape[0], int(np.prod(true.shape[1:]))) != (
        rows,
        cols,
    ):
        raise ValueError(
            f"{loss.name}: y_true and y_pred must have the same shape. "
            f"Received: y_true with shape {np.shape(y_true)}, y_pred with shape {pred.shape}"
        )
    key = ("loss", type(loss), tuple(sorted(loss.get_config().items())), getattr(loss, "fn", None))
    expr = tape_module.record(key, loss.per_sample, true.expr, pred.expr)
    return tape.tensor(expr, (rows,))


def mean_squared_error(y_true, y_pred):
    """mean((y_pred - y_true)^2) over each row's outputs, shape (n,) (Keras's function)."""
    return per_sample(MeanSquaredError(), y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    """mean(|y_pred - y_true|) over each row's outputs, shape (n,)."""
    return per_sample(MeanAbsoluteError(), y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0):
    """-mean(y log p + (1 - y) log(1 - p)) over each row's outputs, shape (n,)."""
    loss = BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
    return per_sample(loss, y_true, y_pred)


def categorical_crossentropy(
    y_true, y_pred, from_logits: bool = False, label_smoothing: float = 0.0
):
    """-sum_j y_j log p_j of each row (one-hot or probability rows ``y_true``), shape (n,)."""
    loss = CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
    return per_sample(loss, y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits: bool = False):
    """-log p_y of each row, for integer class labels ``y_true`` (n,), shape (n,)."""
    return per_sample(SparseCategoricalCrossentropy(from_logits=from_logits), y_true, y_pred)


def huber(y_true, y_pred, delta: float = 1.0):
    """The Huber loss of each row (mean over its outputs), shape (n,)."""
    return per_sample(Huber(delta=delta), y_true, y_pred)


def log_cosh(y_true, y_pred):
    """mean(log cosh(y_pred - y_true)) over each row's outputs, shape (n,)."""
    return per_sample(LogCosh(), y_true, y_pred)


def kl_divergence(y_true, y_pred):
    """sum(y log(y / p)) over each row's outputs, both clipped to [1e-7, 1], shape (n,)."""
    return per_sample(KLDivergence(), y_true, y_pred)


def poisson(y_true, y_pred):
    """mean(p - y log(p + 1e-7)) over each row's outputs, shape (n,)."""
    return per_sample(Poisson(), y_true, y_pred)


def hinge(y_true, y_pred):
    """mean(max(1 - y p, 0)) over each row's outputs (0 / 1 targets made -1 / 1), shape (n,)."""
    return per_sample(Hinge(), y_true, y_pred)


def squared_hinge(y_true, y_pred):
    """mean(max(1 - y p, 0)^2) over each row's outputs, shape (n,)."""
    return per_sample(SquaredHinge(), y_true, y_pred)


def categorical_hinge(y_true, y_pred):
    """max(max((1 - y) p) - sum(y p) + 1, 0) of each row, shape (n,)."""
    return per_sample(CategoricalHinge(), y_true, y_pred)


def cosine_similarity(y_true, y_pred):
    """-(y / |y|) . (p / |p|) of each row, shape (n,) (-1 where they point the same way)."""
    return per_sample(CosineSimilarity(), y_true, y_pred)


def binary_focal_crossentropy(
    y_true,
    y_pred,
    apply_class_balancing: bool = False,
    alpha: float = 0.25,
    gamma: float = 2.0,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
):
    """The focal cross-entropy of each row (mean over its outputs), shape (n,)."""
    loss = BinaryFocalCrossentropy(
        apply_class_balancing, alpha, gamma, from_logits, label_smoothing
    )
    return per_sample(loss, y_true, y_pred)


FUNCTIONS: dict[str, Callable] = {
    "mean_squared_error": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "huber": huber,
    "log_cosh": log_cosh,
    "kl_divergence": kl_divergence,
    "poisson": poisson,
    "hinge": hinge,
    "squared_hinge": squared_hinge,
    "categorical_hinge": categorical_hinge,
    "cosine_similarity": cosine_similarity,
    "binary_focal_crossentropy": binary_focal_crossentropy,
}
"""Each loss of ``LOSSES`` as a function, by its name (``Loss.name``)."""
