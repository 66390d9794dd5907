"""symgrad.nn.outputs: a loss and metrics per output of a model with several outputs.

The training step has one target matrix ``Y`` and one output ``P``; a model
with several outputs packs them side by side (``P = [P_a | P_b]``, ``Y = [Y_a |
Y_b]``, each block named).  :class:`OutputLosses` is the weighted sum of one loss
per block, :class:`OutputMetric` a metric of one block; both slice the packed
matrices (``symgrad.core.column_slice``), so the trainer, both backends and the
whole-epoch native call work unchanged.

Keras's forms are accepted: one loss for every output, a list in output order,
or a dict keyed by output name (likewise ``loss_weights`` and ``metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from symgrad import core as E
from symgrad.nn import losses as losses_module
from symgrad.nn import metrics as metrics_module
from symgrad.nn.losses import Loss
from symgrad.nn.metrics import Metric
from symgrad.nn.recent import Recent


@dataclass(frozen=True)
class Block:
    """Output ``name``: columns ``start:stop`` of ``P``, and of ``Y`` (targets as the loss
    prepares them have the output's width: sparse labels become one-hot rows)."""

    name: str
    start: int
    stop: int


def per_output(value, names: Sequence[str], what: str, default=None) -> list:
    """One entry per output from a single value, a list in output order or a dict by name."""
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(
                f"{what} names no output of the model: {unknown}. Received: {what}={value!r}; "
                f"the outputs are {list(names)}"
            )
        return [value.get(k, default) for k in names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(
                f"{what} needs one entry per output ({len(names)}: {list(names)}). "
                f"Received: {what} with {len(value)} entries"
            )
        return list(value)
    return [value] * len(names)


def _slice(m: MatrixExpr, start: int, stop: int) -> MatrixExpr:
    body = m.body if isinstance(m, E.Named) else m  # P = [P_a | P_b]: the slice is P_a itself
    return E.column_slice(body, start, stop)


class OutputLosses(Loss):
    """``sum_k w_k loss_k(Y_k, P_k)`` over the outputs (Keras's total loss)."""

    name = "loss"

    def __init__(self, losses: Sequence[Loss], weights: Sequence[float], blocks: Sequence[Block]):
        self.losses, self.weights, self.blocks = list(losses), list(weights), list(blocks)

    def labels(self, rows, cols, name: str = "Y"):
        return E.matrix(name, rows, cols)

    def _targets(self, loss: Loss, rows, b: Block):
        """``Y_<output>``: the block's targets as the loss declares them (a probability
        matrix for a categorical cross-entropy, so that ``rowsum(Y_cls) = 1`` folds)."""
        declared = loss.labels(rows, b.stop - b.start)
        return type(declared)(f"Y_{b.name}", rows, b.stop - b.start)

    def weighted(self, y_true, y_pred, sample_weight):
        """Each output's loss with the samples' weights (Keras weights every output alike)."""
        terms = []
        for loss, weight, b in zip(self.losses, self.weights, self.blocks):
            y = self._targets(loss, y_true.shape[0], b)
            value = loss.weighted(y, _slice(y_pred, b.start, b.stop), sample_weight)
            terms.append(E.scale(sp.nsimplify(weight), value))
        return E.add(*terms)

    def label_blocks(self, y):
        """``Y_<output>`` -> its columns of the packed targets ``Y`` (named ``Y_<output>``)."""
        return {
            self._targets(loss, y.shape[0], b): E.name(
                f"Y_{b.name}", E.column_slice(y, b.start, b.stop)
            )
            for loss, b in zip(self.losses, self.blocks)
        }

    def prepare(self, ys: Sequence[np.ndarray]) -> np.ndarray:
        """The targets of each output checked by its loss, packed side by side."""
        parts = [
            loss.prepare_targets(y, b.stop - b.start)
            for loss, y, b in zip(self.losses, ys, self.blocks)
        ]
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1)


class OutputMetric(Metric):
    """A metric of one output: ``<output>_<metric>`` in the logs, as Keras names it.

    Its state is the wrapped metric's: each batch is that output's columns.
    """

    def __init__(self, metric: Metric, block: Block):
        self.metric, self.block = metric, block
        self.needs_one_hot = metric.needs_one_hot
        super().__init__(f"{block.name}_{metric.name}")

    def reset_state(self) -> None:
        self.metric.reset_state()

    @property
    def state(self):
        return self.metric.state

    @property
    def count(self):
        return self.metric.count

    def exact_for(self, y_true):
        b = self.block  # the output's own targets
        return self.metric.exact_for(y_true[:, b.start : b.stop])

    def _columns(self, y, p):
        b = self.block
        return y[:, b.start : b.stop], p[:, b.start : b.stop]

    def values(self, y_true, y_pred):
        return self.metric.values(*self._columns(y_true, y_pred))

    def batch_sums(self, y_true, y_pred, sample_weight=None):
        return self.metric.batch_sums(*self._columns(y_true, y_pred), sample_weight)

    def batch_means(self, y_true, y_pred):
        b = self.block
        return self.metric.batch_means(
            E.column_slice(y_true, b.start, b.stop), _slice(y_pred, b.start, b.stop)
        )

    def add_sums(self, sums: dict, count: float) -> None:
        self.metric.add_sums(sums, count)

    def result(self):
        return self.metric.result()


class OutputLoss(Metric):
    """One output's loss as a metric: ``<output>_loss`` in the logs, as Keras reports it
    (without its ``loss_weights`` factor), the mean of its per-sample values.

    In the compiled step (``batch_mean``) it is the loss's formula on the output's
    block, fused as in the loss (``log_softmax``); in NumPy, a small program of the
    loss's per-sample formula on the block's arrays (compiled once per loss and width).
    """

    def __init__(self, loss: Loss):
        self.loss = loss
        super().__init__("loss")

    def values(self, y_true, y_pred):
        program = _per_sample_program(self.loss, y_true.shape[1], y_pred.dtype)
        y_true = np.ascontiguousarray(y_true, dtype=y_pred.dtype)
        return program(y_true, np.ascontiguousarray(y_pred))[0][:, 0]

    def batch_mean(self, y_true, y_pred):
        values = self.loss.per_sample(y_true, y_pred)
        return E.scale(1 / values.shape[0], E.total(values))

    def __repr__(self) -> str:
        return f"OutputLoss({self.loss!r})"


_PROGRAMS = Recent(32)
"""Per-sample loss programs: one per loss configuration, label width and dtype, so a
process that builds many models with different losses or widths does not keep every
compiled program it ever made."""


def _per_sample_program(loss: Loss, columns: int, dtype):
    key = (type(loss), tuple(sorted(loss.get_config().items())), getattr(loss, "fn", None))
    key += (columns, np.dtype(dtype).name)

    def make():
        from symgrad import compiler  # it imports the nn package's modules

        rows = E.batch()
        y, p = loss.labels(rows, columns, "Y"), E.matrix("P", rows, columns)
        return compiler.compile(
            [y, p], {"values": loss.per_sample(y, p)}, dtype=np.dtype(dtype).name,
            name=f"{loss.name}_per_sample",
        )  # fmt: skip

    return _PROGRAMS.get(key, make)


def _metric_lists(metrics, names: Sequence[str]) -> list[list]:
    """Metrics per output: a dict by name, a list of lists, or one flat list for every output."""
    if metrics is None:
        return [[] for _ in names]
    flat = isinstance(metrics, (list, tuple)) and all(
        not isinstance(m, (list, tuple, dict)) and m is not None for m in metrics
    )
    if flat:
        return [list(metrics) for _ in names]
    return [
        [] if entry is None else list(entry) if isinstance(entry, (list, tuple)) else [entry]
        for entry in per_output(metrics, names, "metrics")
    ]


def resolve(loss, loss_weights, metrics, blocks: Sequence[Block]):
    """``(OutputLosses, [OutputMetric...])`` from Keras-style per-output arguments."""
    names = [b.name for b in blocks]
    entries = per_output(loss, names, "loss")
    missing = [name for name, x in zip(names, entries) if x is None]
    if missing:
        raise ValueError(
            f"compile needs a loss for every output; none for {missing}. Received: loss={loss!r}"
        )
    output_losses = [losses_module.get(x) for x in entries]
    weights = per_output(1.0 if loss_weights is None else loss_weights, names, "loss_weights", 0.0)
    for name, w in zip(names, weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0:
            raise ValueError(
                f"loss_weights must be finite numbers >= 0. Received: loss_weights[{name!r}]={w!r}"
            )
    wrapped = [OutputMetric(OutputLoss(x), b) for x, b in zip(output_losses, blocks)]
    wrapped += [
        OutputMetric(metrics_module.get(m, x.name, b.stop - b.start), b)
        for x, b, entry in zip(output_losses, blocks, _metric_lists(metrics, names))
        for m in entry
    ]
    return OutputLosses(output_losses, weights, blocks), wrapped
