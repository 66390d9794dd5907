"""symgrad.nn.trainer: the compiled training step and the Keras verbs around it.

:func:`build_graph` turns layers and a loss into symbols: the input rows ``X``
(batch size ``n`` symbolic), the targets ``Y``, the output ``P``, the loss and
its gradients (``d_dense_kernel``...).  :class:`Programs` compiles, once each
and on first use, the four functions a model needs:

- ``train_step(X, Y, weights, slots; hyperparameters, t) -> loss[, P]`` with the
  optimizer update written into the weight and slot arrays in place -- forward
  pass, gradients and update are one program; a nan/inf loss, gradient sum or sum of
  the new weights and slots (guards) aborts the step before anything is written;
- ``test_step(X, Y, weights) -> loss[, P]``, ``predict_step(X, weights) -> P``;
- ``gradient_step(X, Y, weights) -> loss, d_w...``.

With the LLVM backend the training step also returns, for every metric with
formulas (``Metric.batch_means``), its statistics of the batch (sums over the rows,
divided by the rows: a mean's total, a precision's true and predicted positives per
threshold...), and is compiled with a
whole-epoch native loop (``step.function.epoch``): :meth:`Trainer.fit` then
runs an epoch in one native call -- shuffled order, row gathering, every step
and the sums of loss and metrics -- (with the progress bar: a few calls of whole
batches, bit-identical to one, the bar moved between them) unless something needs
Python between steps (a callback using batch hooks, a learning-rate schedule, a metric with
no formula or targets it cannot handle).

:class:`Trainer` holds ``compile`` / ``fit`` / ``evaluate`` / ``predict`` and
friends; it is the base class of :class:`symgrad.nn.models.Sequential`, which
holds the layers, weights, config and files.  The backend is a
``codegen.backends.Backend`` (found through ``symgrad.compiler.backend``): what
it supports (``epochs``) decides what the training step contains.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr, MatrixSymbol

from symgrad import compiler
from symgrad import core as E
from symgrad.compiler import CompiledFunction
from symgrad.diff import Derivation, derive
from symgrad.nn import callbacks as callbacks_module
from symgrad.nn import inputs, interrupts, regularizers, seeds
from symgrad.nn import losses as losses_module
from symgrad.nn import metrics as metrics_module
from symgrad.nn import optimizers as optimizers_module
from symgrad.nn import outputs as outputs_module
from symgrad.nn import validation as data
from symgrad.nn.layers import Layer, Names, Variable, Weighted
from symgrad.nn.losses import Loss
from symgrad.nn.metrics import Metric
from symgrad.nn.optimizers import GUARD_WORDS, STEP, Optimizer, guard_words, update_checks
from symgrad.simplify import simplify

GUARD_UPDATES = True
"""Whether the training step guards the sum of its new weights and slots (see
:meth:`Programs.train_step`); ``benchmarks/bench_guard.py`` turns it off to measure its cost."""


class NonFiniteLossError(FloatingPointError):
    """The loss, a gradient or a new weight / slot became nan or inf during ``fit``.

    Nothing of the failing step was written: weights, optimizer slots and
    ``optimizer.iterations`` are those after the last good step.

    ``epoch`` and ``batch`` are 1-based; ``history`` holds the epochs completed.
    """

    def __init__(self, message: str, epoch: int, batch: int, history=None):
        super().__init__(message)
        self.epoch, self.batch, self.history = epoch, batch, history


# --------------------------------------------------------------------------
# Symbols


@dataclass
class TrainingGraph:
    """Everything symbolic about one model + loss: the programs are compiled from this."""

    x: MatrixSymbol
    output: MatrixExpr
    weights: list[Variable]
    layer_names: dict[str, list[E.Named]]  # layer name -> intermediates it computes
    penalties: list[MatrixExpr] = field(default_factory=list)  # regularizers' loss terms
    y: MatrixSymbol | None = None
    targets: MatrixExpr | None = None  # the targets within y (y itself unless sample-weighted)
    raw_loss: MatrixExpr | None = None
    loss: MatrixExpr | None = None
    gradients: dict[MatrixSymbol, MatrixExpr] = field(default_factory=dict)
    derivation: Derivation | None = None
    # the weights differentiated and updated: the trainable ones when the loss was
    # attached (at compile); the others are constants of the programs, still inputs
    trainable: list[Variable] = field(default_factory=list)
    states: dict[MatrixSymbol, MatrixExpr] = field(default_factory=dict)  # fit's state updates
    # predict / evaluate: the output without dropout (None: the same graph as in fit), the
    # loss on it and its gradients (compute_gradients, set by add_loss), its intermediates
    inference: MatrixExpr | None = None
    inference_penalties: list[MatrixExpr] = field(default_factory=list)
    inference_loss: MatrixExpr | None = None
    inference_gradients: dict[MatrixSymbol, MatrixExpr] = field(default_factory=dict)
    inference_names: dict[str, list[E.Named]] = field(default_factory=dict)

    def with_inference(self, other: TrainingGraph) -> TrainingGraph:
        """This training graph with ``other``, the same model built for inference."""
        if other.output != self.output:
            self.inference, self.inference_penalties = other.output, other.penalties
            self.inference_names = other.layer_names
        return self

    def predictions(self, training: bool) -> MatrixExpr:
        """``P`` in fit (``training``) or in predict / evaluate."""
        return self.output if training or self.inference is None else self.inference


def forward(
    layers: Sequence[Layer], input_dim: int, training: bool = True, seed: int = 0
) -> TrainingGraph:
    """``X -> P``: each layer's ``call`` in order; the last value is renamed ``P``.

    ``training``: the graph of ``fit`` (dropout masks drawn from ``seed``), else that of
    ``predict`` and ``evaluate``.
    """
    x = E.matrix("X", E.batch(), input_dim)
    names, a, made, seen, outputs = Names(training, seed), x, {}, set(), []
    for layer in layers:
        a = layer.call(a, names)
        outputs.append((layer, a))
        new = E.topological([a], seen)  # the nodes this layer added
        seen.update(new)
        made[layer.name] = [n for n in new if isinstance(n, E.Named)]
    output = E.name("P", a.body if isinstance(a, E.Named) else a)
    for named in made.values():  # the last intermediate is the output: show it as P
        named[:] = [output if n == a else n for n in named]
    weights = [w for layer in layers for w in layer.weights]
    states = dict(names.states)
    penalties = [  # the last layer's activity penalty is a penalty of P
        term
        for layer, out in outputs
        for term in regularizers.layer_penalties(layer, output if out is a else out)
    ]
    return TrainingGraph(x, output, weights, made, penalties=penalties, states=states)


def add_loss(
    graph: TrainingGraph, loss: Loss, trainable: Sequence[Variable] | None = None
) -> TrainingGraph:
    """Attach the loss (simplified: log-softmax / softplus fusion) and its gradients.

    The loss is the data loss plus the layers' regularization penalties (as Keras
    reports it), so the formulas and the generated code show both.  ``trainable``:
    the weights to differentiate (default: those whose flag is set now).
    """
    n, k = graph.output.shape
    y = loss.labels(n, k)
    if trainable is None:  # as of compile, as Keras
        trainable = [w for w in graph.weights if w.trainable]
    graph.trainable = list(trainable)
    wrt = [w.symbol for w in graph.trainable]
    graph.y, graph.targets = y, loss.target_part(y)
    graph.raw_loss, graph.loss, graph.gradients, graph.derivation = _loss_and_gradients(
        loss, y, graph.output, graph.penalties, wrt
    )
    if graph.inference is not None:
        _, graph.inference_loss, graph.inference_gradients, _ = _loss_and_gradients(
            loss, y, graph.inference, graph.inference_penalties, wrt
        )
    return graph


def _loss_and_gradients(loss: Loss, y, output, penalties, wrt):
    """(raw loss, simplified loss, named gradients, derivation) of ``loss`` on ``output``."""
    raw = loss(y, output)
    if not isinstance(raw, MatrixExpr) or tuple(raw.shape) != (1, 1):
        raise ValueError(
            f"The loss {loss.name!r} must be a (1, 1) matrix expression. Received: {raw!r}"
        )
    raw = E.add(raw, *penalties)
    simplified = simplify({"loss": raw}, context=[output])[0]["loss"]
    derivation = derive(simplified, wrt)
    gradients = {w: E.name(f"d_{w.name}", derivation.gradients[w]) for w in wrt}
    blocks = loss.label_blocks(y)
    if blocks:  # targets stood for by their own symbols: simplified with them, then bound to y
        both = {"loss": simplified, **{w.name: d for w, d in gradients.items()}}
        both, _ = simplify(both, context=[output])
        simplified = both["loss"].xreplace(blocks)
        gradients = {w: both[w.name].xreplace(blocks) for w in wrt}
    return raw, simplified, gradients, derivation


def runtime_scalars(exprs: Sequence[MatrixExpr]) -> list[sp.Symbol]:
    """Free scalar symbols (hyperparameters, ``t``), without the batch symbol, by name."""
    return [s for s in E.scalar_params(exprs) if s != E.batch()]


# --------------------------------------------------------------------------
# Programs


@dataclass
class CompiledStep:
    """A compiled function plus what its outputs mean.

    ``metric_outputs[i]``: metric ``i``'s statistics -> their positions in the
    outputs, None when it has no formulas in the program (training step only).
    """

    function: CompiledFunction
    outputs: tuple[str, ...]
    slots: list[Variable] = field(default_factory=list)
    metric_outputs: tuple[dict[str, int] | None, ...] = ()
    guards: dict[str, str] = field(default_factory=dict)  # guard name -> what it checks

    @property
    def source(self) -> str:
        return self.function.source


class Programs:
    """The model's compiled functions, each built on first use and kept."""

    def __init__(
        self,
        graph: TrainingGraph,
        optimizer: Optimizer | None,
        with_predictions: bool,
        backend: str,
        dtype: str,
        metrics: Sequence[Metric] = (),
        threads: int | None = None,
    ):
        self.graph, self.optimizer = graph, optimizer
        self.with_predictions, self.dtype = with_predictions, dtype
        self.threads = threads  # symgrad.compile's (None: its default)
        self.backend = compiler.backend(backend)
        self.metrics = list(metrics)
        self._cache: dict[str, CompiledStep] = {}

    def _compile(self, name, inputs, outputs, **kwargs) -> CompiledFunction:
        return compiler.compile(
            inputs,
            outputs,
            backend=self.backend.name,
            dtype=self.dtype,
            name=name,
            threads=self.threads,
            **kwargs,
        )

    def _loss_outputs(self, training: bool = True) -> dict[str, MatrixExpr]:
        g = self.graph
        loss = g.loss if training or g.inference is None else g.inference_loss
        outputs = {"loss": loss}
        if self.with_predictions:
            outputs["P"] = g.predictions(training)
        return outputs

    def _metric_means(self) -> dict[int, dict[str, tuple[str, MatrixExpr]]]:
        """Metric index -> {statistic: (output name, its batch mean)} for each metric with
        formulas; the output is ``metric_<name>`` (a mean's total), else ``metric_<name>_<stat>``.

        Only for backends with whole-epoch loops, which need the metrics inside the
        step; with the others NumPy computes them from the step's predictions.
        """
        means: dict[int, dict[str, tuple[str, MatrixExpr]]] = {}
        if not self.backend.epochs:
            return means
        taken = set()
        sample_weighted = self.graph.targets != self.graph.y  # its targets carry the weights
        for i, metric in enumerate(self.metrics):
            if metric.weighted and sample_weighted:
                continue  # weighted by the samples' weights: NumPy counts it (update_state)
            formulas = metric.batch_means(self.graph.targets, self.graph.output)
            if formulas is None:
                continue
            base = "metric_" + re.sub(r"\W", "_", metric.name)
            base = base if base not in taken else f"{base}_{i}"
            taken.add(base)
            means[i] = {
                stat: (base if stat == "total" else f"{base}_{stat}", formula)
                for stat, formula in formulas.items()
            }
        return means

    def train_step(self) -> CompiledStep:
        if "train" not in self._cache:
            g, opt = self.graph, self.optimizer
            slots = opt.build(g.trainable, self.dtype)
            outputs = self._loss_outputs()
            means = self._metric_means()
            outputs.update(dict(out for stats in means.values() for out in stats.values()))
            # the optimizer's updates and the layers' own (moving statistics): one commit
            updates = {**opt.updates(g.trainable, g.gradients), **g.states}
            inputs = [g.x, g.y, *(w.symbol for w in g.weights), *(s.symbol for s in slots)]
            scalars = runtime_scalars([*outputs.values(), *updates.values()])
            epoch = None
            if self.backend.epochs:  # a whole epoch in one native call
                counter = STEP.name if STEP.name in {s.name for s in scalars} else None
                sums = ("loss", *(key for stats in means.values() for key, _ in stats.values()))
                epoch = {"x_input": g.x.name, "y_input": g.y.name, "sums": sums, "counter": counter}
            # nan / inf in any gradient makes this sum non-finite; guarded like the loss, so
            # a step whose loss is finite but whose gradients overflow writes no weight
            checks = {}
            if g.gradients:  # none when every layer is frozen: the step only reports the loss
                checks["gradient_sum"] = E.add(*(E.total(d) for d in g.gradients.values()))
            # and in what would be written (an overflowing rate, a bad slot, Adam at t = 0):
            # every new weight and slot is checked before any is committed
            words = dict(GUARD_WORDS)
            if GUARD_UPDATES and updates:
                new_checks, words = update_checks(updates, [*g.weights, *slots])
                checks.update(new_checks)
            fn = self._compile(
                "train_step",
                inputs,
                outputs,
                updates=updates,
                scalars=scalars,
                guards=("loss",),
                checks=checks,
                epoch=epoch,
            )
            names = list(outputs)
            metric_outputs = tuple(
                {stat: names.index(key) for stat, (key, _) in means[i].items()}
                if i in means
                else None
                for i in range(len(self.metrics))
            )
            self._cache["train"] = CompiledStep(fn, tuple(outputs), slots, metric_outputs, words)
        return self._cache["train"]

    def test_step(self) -> CompiledStep:
        if "test" not in self._cache:
            g = self.graph
            outputs = self._loss_outputs(training=False)
            fn = self._compile(
                "test_step", [g.x, g.y, *(w.symbol for w in g.weights)], outputs, scalars=[]
            )
            self._cache["test"] = CompiledStep(fn, tuple(outputs))
        return self._cache["test"]

    def predict_step(self) -> CompiledStep:
        if "predict" not in self._cache:
            g = self.graph
            fn = self._compile(
                "predict_step",
                [g.x, *(w.symbol for w in g.weights)],
                {"P": g.predictions(training=False)},
                scalars=[],
            )
            self._cache["predict"] = CompiledStep(fn, ("P",))
        return self._cache["predict"]

    def gradient_step(self) -> CompiledStep:
        if "gradients" not in self._cache:
            g = self.graph  # the loss as predict / evaluate see it (no dropout): deterministic
            loss, gradients = g.loss, g.gradients
            if g.inference is not None:
                loss, gradients = g.inference_loss, g.inference_gradients
            outputs = {
                "loss": loss,
                **{f"d_{w.symbol.name}": gradients[w.symbol] for w in g.trainable},
            }
            fn = self._compile(
                "gradient_step", [g.x, g.y, *(w.symbol for w in g.weights)], outputs, scalars=[]
            )
            self._cache["gradients"] = CompiledStep(fn, tuple(outputs))
        return self._cache["gradients"]


# --------------------------------------------------------------------------
# The native epoch in a few calls

NATIVE_UPDATE_SECONDS = 0.2
"""With a progress bar, a native epoch runs as calls of about this long each (whole batches),
and the bar moves between them; ``benchmarks/bench_progress.py`` measures what it costs."""

FIRST_CALL_BATCHES = 4
"""Batches of the first call of a ``fit``, before a batch has been timed."""


class NativePace:
    """How many batches the next native call runs so that it takes about ``seconds``.

    ``seconds=None``: everything left in one call. The time per batch is that of the
    last call, so a slow batch shortens the next call and a fast epoch stays one call.
    """

    def __init__(self, seconds: float | None):
        self.seconds, self.per_batch = seconds, None

    def batches(self, remaining: int) -> int:
        if self.seconds is None:
            return remaining
        if self.per_batch is None:
            return min(remaining, FIRST_CALL_BATCHES)
        return max(1, min(remaining, int(self.seconds / max(self.per_batch, 1e-9))))

    def timed(self, batches: int, seconds: float) -> None:
        self.per_batch = seconds / batches


# --------------------------------------------------------------------------
# Running means of an epoch


class Tracker:
    """Sample-weighted running mean of the loss, plus the metrics' own state (their sums)."""

    def __init__(self, metrics: Sequence[Metric], prefix: str = "", weighted: bool = False):
        self.metrics, self.prefix, self.weighted = list(metrics), prefix, weighted
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.count = 0.0, 0
        for m in self.metrics:
            m.reset_state()

    def update(
        self, loss: float, y: np.ndarray, predictions: np.ndarray | None, means=None
    ) -> None:
        """Add a batch; ``means``: each metric's {statistic: batch mean} from the compiled
        step (else NumPy computes the metrics from the predictions)."""
        rows = len(y)
        if means is None:
            self.loss_sum += loss * rows
            self.count += rows
            weights = y[:, -1] if self.weighted else None
            y = without_weights(y, self.weighted)
            for m in self.metrics:
                if m.weighted and weights is not None:
                    m.update_state(y, predictions, weights)
                else:  # (a user's update_state may take no sample_weight)
                    m.update_state(y, predictions)
            return
        sums = [{stat: rows * mean for stat, mean in stats.items()} for stats in means]
        self.add(loss * rows, rows, sums)

    def add(self, loss_sum: float, rows: int, metric_sums: Sequence[dict]) -> None:
        """Add ``rows`` samples: their loss sum and each metric's {statistic: sum}."""
        self.loss_sum += loss_sum
        self.count += rows
        for m, sums in zip(self.metrics, metric_sums):
            m.add_sums(sums, rows)

    def add_epoch(
        self, sums: dict[str, float], rows: int, metric_keys: Sequence[dict[str, str]]
    ) -> None:
        """Add the sums of a native epoch (``rows`` x batch mean, summed over batches);
        ``metric_keys``: each metric's {statistic: key of its sum}."""
        metric_sums = [{stat: sums[key] for stat, key in keys.items()} for keys in metric_keys]
        self.add(sums["loss"], rows, metric_sums)

    def logs(self) -> dict[str, float]:
        out = {f"{self.prefix}loss": self.loss_sum / max(1, self.count)}
        out.update({f"{self.prefix}{m.name}": m.result() for m in self.metrics})
        return out


def without_weights(y: np.ndarray, weighted: bool) -> np.ndarray:
    """The targets of a batch: the last column holds the sample weights when ``weighted``."""
    return y[:, :-1] if weighted else y


# --------------------------------------------------------------------------
# The Keras verbs


class Trainer(Weighted):
    """The Keras verbs of a model: ``compile``, ``fit``, ``evaluate``, ``predict``, ``*_on_batch``.

    The model (a subclass of :class:`symgrad.nn.models.Model`: ``Sequential`` or a
    functional model) provides its structure and weights: ``layers``, ``input_dim``,
    ``output_dim``, ``built``, ``build(input_dim=...)``, ``weights`` (:class:`Variable`
    list), ``_forward()`` (its :class:`TrainingGraph`) and ``_materialize()`` (initial
    values for weights without one).  The trainer holds the rest: optimizer, loss,
    metrics, backend and dtype, the compiled
    programs, the random generators and the optimizer state waiting to be loaded.
    """

    stop_training = False
    _interrupts = interrupts.IMMEDIATE  # a fit's interrupts.Deferred while it runs

    def __init__(self):
        self.optimizer: Optimizer | None = None
        self.loss: Loss | None = None
        self._metric_ids: list = []
        self._metrics: list[Metric] | None = None
        self.backend, self.dtype = "numpy", "float32"
        self.threads: int | None = None  # of the compiled functions (symgrad.compile's threads)
        self.compiled = False
        self._seed_rngs(None)
        self._graph: TrainingGraph | None = None
        self._programs_cache: Programs | None = None
        self._pending_optimizer_state: dict[str, np.ndarray] | None = None
        self._compile_arguments: dict = {}
        self.history = None

    # -- layers, the Keras way (the model provides ``weights`` and ``layers``)
    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """The layer called ``name``, or at position ``index`` of ``layers`` (Keras's ``get_layer``)."""
        layers = self.layers
        if (name is None) == (index is None):
            raise ValueError(
                f"get_layer takes a name or an index, not both nor neither. "
                f"Received: name={name!r}, index={index!r}"
            )
        if index is not None:
            if not isinstance(index, (int, np.integer)) or not -len(layers) <= index < len(layers):
                raise ValueError(
                    f"Model {self.name!r} has {len(layers)} layers. Received: index={index!r}"
                )
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(
            f"No such layer: {name!r} in model {self.name!r}. "
            f"Its layers are: {', '.join(layer.name for layer in layers) or 'none'}"
        )

    # -- compile
    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics: Sequence | None = None,
        backend: str = "numpy",
        dtype: str = "float32",
        seed: int | None = None,
        weighted_metrics: Sequence | None = None,
        threads: int | None = None,
    ) -> None:
        """Choose optimizer, loss and metrics; the training step is compiled once, here or at build.

        ``seed`` drives the initial weights (drawn when the model is built) and
        the shuffling in ``fit``: the same seed gives bit-identical training.
        ``weighted_metrics``: metrics weighted by ``sample_weight`` (and ``class_weight``),
        as Keras's; logged after ``metrics``, a name both lists hold as ``weighted_<name>``.
        ``threads``: how many threads the LLVM backend's loops and GEMMs split over, as
        ``symgrad.compile(threads=...)`` (default ``$SYMGRAD_NUM_THREADS``, else the CPUs the
        process may run on); the same bits at every count. The NumPy backend ignores it.
        """
        if loss is None:
            raise ValueError(
                f"compile needs a loss. Known losses: {', '.join(sorted(losses_module.LOSSES))}"
            )
        arguments = (loss, metrics, weighted_metrics)  # as given: a model's config writes them
        compiler.backend(backend)
        compiler.check_dtype(dtype)
        if seed is not None:
            data.non_negative_int(seed, "seed")
        compiler.check_threads(threads)
        optimizer = optimizers_module.get(optimizer)
        loss = losses_module.get(loss)
        for name, given in (("metrics", metrics), ("weighted_metrics", weighted_metrics)):
            if given is not None and (
                isinstance(given, str) or not isinstance(given, (list, tuple))
            ):
                raise TypeError(
                    f"{name} must be a list, e.g. {name}=['accuracy']. Received: {name}={given!r}"
                )
        metric_ids = list(metrics or [])
        weighted_ids = list(weighted_metrics or [])
        for m in [*metric_ids, *weighted_ids]:
            metrics_module.get(m, loss.name, self.output_dim)  # unknown names fail here
        # validated: now change the model
        self.optimizer, self.loss, self._metric_ids = optimizer, loss, metric_ids
        self._weighted_metric_ids = weighted_ids
        self._compile_arguments = {"loss": arguments[0], "metrics": arguments[1]}  # for configs
        if weighted_metrics is not None:
            self._compile_arguments["weighted_metrics"] = arguments[2]
        self.backend, self.threads, self.compiled = backend, threads, True
        if dtype != self.dtype:
            self.dtype = dtype
            for w in self.weights:
                if w.value is not None:
                    w.value = np.ascontiguousarray(w.value, dtype=dtype)
        self._seed_rngs(seed)
        self._invalidate()
        if self.built:
            self._programs().train_step()

    def _warn_if_trainable_changed(self, verb: str) -> None:
        """Say so when a layer's ``trainable`` changed since the training step was compiled."""
        compiled = {id(w) for w in self._training_graph().trainable}
        changed = [w.path for w in self.weights if (id(w) in compiled) != w.trainable]
        if changed:
            warnings.warn(
                f"{verb}: the trainable flag of {', '.join(changed)} changed after compile(); "
                "the compiled step still uses the old setting. Call compile() again for the "
                "change to take effect (as in Keras).",
                UserWarning,
                stacklevel=3,
            )

    def _require_compiled(self, verb: str) -> None:
        if not self.compiled:
            raise RuntimeError(
                f"You must call compile() before using the model with {verb}(): "
                "model.compile(optimizer=..., loss=..., metrics=[...])"
            )

    def _invalidate(self) -> None:
        """Forget the graph, programs and metrics: the layers or the compile settings changed."""
        self._graph, self._programs_cache, self._metrics = None, None, None
        self._weighted_cache = None

    def _seed_rngs(self, seed: int | None) -> None:
        sequence = seeds.sequence(seed)  # no seed: set_random_seed's next child, or entropy
        init, shuffle = sequence.spawn(2)
        # the dropout masks' seed: baked into the compiled step (a mask is a pure function
        # of it, the step number and the entry), fixed by compile(seed=...)
        self._mask_seed = int(sequence.generate_state(1, np.uint64)[0])
        self._init_rng, self._shuffle_rng = (
            np.random.default_rng(init),
            np.random.default_rng(shuffle),
        )

    _weighted_metric_ids: list = []

    def _metric_objects(self) -> list[Metric]:
        """The metrics, then the weighted metrics (each its own copy, marked ``weighted``)."""
        if self._metrics is None:
            loss_name = self.loss.name if self.loss is not None else ""
            plain = [metrics_module.get(m, loss_name, self.output_dim) for m in self._metric_ids]
            names = {m.name for m in plain}
            weighted = []
            for identifier in self._weighted_metric_ids:
                metric = copy.deepcopy(metrics_module.get(identifier, loss_name, self.output_dim))
                metric.weighted = True
                if metric.name in names:  # Keras's name for a metric in both lists
                    metric.name = f"weighted_{metric.name}"
                weighted.append(metric)
            self._metrics = [*plain, *weighted]
        return self._metrics

    def _training_graph(self) -> TrainingGraph:
        if not self.built:
            raise ValueError(
                "The model is not built yet: its input size is unknown. Pass input_dim to the first "
                "layer, call model.build(input_dim=...), or call fit / predict with data."
            )
        if self._graph is None:
            graph = self._forward().with_inference(self._forward(training=False))
            self._graph = add_loss(graph, self.loss) if self.loss is not None else graph
        return self._graph

    def _programs(self) -> Programs:
        if self._weighted:
            return self._weighted_programs()
        if self._programs_cache is None:
            self._programs_cache = self._new_programs(self._training_graph())
        return self._programs_cache

    def _new_programs(self, graph: TrainingGraph) -> Programs:
        return Programs(
            graph,
            self.optimizer,
            bool(self._metric_ids or self._weighted_metric_ids),
            self.backend,
            self.dtype,
            self._metric_objects() if self.compiled else (),
            self.threads,
        )

    _weighted = False  # while a fit / evaluate with sample weights runs
    _weighted_cache: Programs | None = None

    def _weighted_programs(self) -> Programs:
        """The programs whose targets carry each sample's weight (the same weights and
        optimizer slots as the plain ones), compiled on first use."""
        if self._weighted_cache is None:
            self._weighted_cache = self._new_programs(self._weighted_graph())
        return self._weighted_cache

    def _weighted_graph(self) -> TrainingGraph:
        """The training graph whose targets' last column weights each sample's loss."""
        trainable = self._training_graph().trainable  # as of compile, as the plain step
        graph = self._forward().with_inference(self._forward(training=False))
        return add_loss(graph, losses_module.SampleWeighted(self.loss), trainable)

    @contextlib.contextmanager
    def _weighting(self, on: bool):
        """Run the block with the sample-weighted programs (``on``) or the plain ones."""
        self._weighted = on
        try:
            yield
        finally:
            del self._weighted  # back to the class default

    def _with_weights(self, y, sample_weight, class_weight, names=("y", "sample_weight")):
        """The prepared targets ``y`` with one more column: each sample's weight
        (``sample_weight`` times ``class_weight`` of its class; 1 where neither says)."""
        if class_weight is not None and isinstance(self.loss, outputs_module.OutputLosses):
            raise ValueError(
                "class_weight is for models with one output; this one has "
                f"{len(self.loss.blocks)}. Pass sample_weight instead"
            )
        weights = data.sample_weights(y, sample_weight, class_weight, names)
        if weights is None:
            weights = np.ones(len(y))
        return np.ascontiguousarray(np.hstack([y, weights[:, None]]), dtype=self.dtype)

    @property
    def compiled_step(self):
        """The compiled training step (a ``symgrad.compile`` CompiledFunction)."""
        self._require_compiled("compiled_step")
        return self._train_step().function

    def step_source(self) -> str:
        """The generated source of the training step (NumPy code, or LLVM IR)."""
        return self.compiled_step.source

    def _apply_pending_optimizer_state(self) -> None:
        """Optimizer state read by ``load_weights`` goes into the slots once they exist."""
        state, self._pending_optimizer_state = self._pending_optimizer_state, None
        if not state or self.optimizer is None:
            return
        slots = {var.path: var for var in self.optimizer.variables}
        if set(state) - {"iterations"} != set(slots) or any(
            not slots[p].accepts(state[p].shape) for p in slots
        ):
            return  # saved with another optimizer: keep the fresh state, as Keras does
        for path, var in slots.items():
            var.value[...] = var.as_matrix(state[path])
        self.optimizer.iterations = int(state.get("iterations", 0))

    # -- data
    def _prepare_x(self, x, name: str = "x") -> np.ndarray:
        """The user's input data as the rows the compiled functions read (a model with
        several inputs packs them first)."""
        return self._rows(x, name)

    def _rows(self, x, name: str = "x", shape: tuple[int, ...] | None = None) -> np.ndarray:
        """``x`` as the rows the programs read; ``shape``: x is rows of samples of that shape."""
        if shape is None:
            x, shape = data.as_samples(x, name, self.input_shape, self._input_reader())
        if not self.built:
            self.build(input_shape=(None, *shape))
        self._check_inputs(x, name)
        with np.errstate(over="ignore"):  # values beyond float32's range become inf: reported next
            x = np.ascontiguousarray(x, dtype=self.dtype)
        data.check_finite(x, f"{name} (as {self.dtype})")
        return x

    def _prepare_xy(
        self, x, y, names: tuple[str, str] = ("x", "y")
    ) -> tuple[np.ndarray, np.ndarray]:
        x_array, shape = data.as_samples(x, names[0], self.input_shape, self._input_reader())
        y_array = data.as_labels(self._target_rows(y), names[1])
        data.check_same_length(x_array, y_array, *names)
        output_dim = self.output_dim
        if output_dim is None:  # only activations: the output has as many columns as x
            output_dim = x_array.shape[1]
        y_array = self.loss.prepare_targets(y_array, output_dim)
        x_array = self._rows(x_array, names[0], shape)
        with np.errstate(over="ignore"):
            y_array = np.ascontiguousarray(y_array, dtype=self.dtype)
        data.check_finite(y_array, f"{names[1]} (as {self.dtype})")
        return x_array, y_array

    def _target_rows(self, y):
        """Targets of a model whose output samples are images or sequences, as rows."""
        shape = self.output_shape if self.built else None
        if shape is not None and len(shape) > 1 and np.ndim(y) == 1 + len(shape):
            if tuple(np.shape(y)[1:]) == tuple(shape):
                return np.reshape(y, (len(y), -1))
        return y

    def _samples(self, p: np.ndarray) -> np.ndarray:
        """Predicted rows as samples of the output shape (``(n, H, W, C)`` for images)."""
        shape = self.output_shape
        return p if shape is None or len(shape) == 1 else p.reshape(len(p), *shape)

    def _check_inputs(self, x: np.ndarray, name: str) -> None:
        """Each layer that reads the model's input rows checks them (an Embedding: indices)."""

    # -- one batch
    def _weight_arrays(self) -> list[np.ndarray]:
        self._materialize()
        dtype = np.dtype(self.dtype)
        for w in self.weights:  # a model nested in another shares weights compiled for its dtype
            if w.value.dtype != dtype:
                w.value = np.ascontiguousarray(w.value, dtype=dtype)
        return [w.value for w in self.weights]

    def _train_step(self) -> CompiledStep:
        """The compiled training step, with the optimizer state ready for it."""
        step = self._programs().train_step()
        self._apply_pending_optimizer_state()
        return step

    def _run_train_step(self, x: np.ndarray, y: np.ndarray, native_metrics: bool = False):
        """One step: ``(loss, predictions or None, metric batch means or None)``.

        ``native_metrics``: read the metrics' batch means from the step's
        outputs (every metric must have one) instead of returning predictions.
        """
        step = self._train_step()
        fn = step.function
        args = [x, y, *self._weight_arrays(), *(s.value for s in step.slots)]
        scalars = self.optimizer.scalar_values(fn.scalars, fn.program.dtype)
        with self._interrupts:  # a Ctrl-C waits until the step and its count are both done
            outs = fn(*args, *scalars)
            self.optimizer.iterations += 1
        means = None
        if native_metrics:  # each statistic: a (1, k) output, as float64 as the epoch sums it
            means = [
                {stat: outs[k][0].astype(np.float64) for stat, k in stats.items()}
                for stats in step.metric_outputs
            ]
        predictions = outs[1] if len(outs) > 1 and step.outputs[1] == "P" else None
        return float(outs[0][0, 0]), predictions, means

    def _run_test_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray | None]:
        outs = self._programs().test_step().function(x, y, *self._weight_arrays())
        return float(outs[0][0, 0]), (outs[1] if len(outs) > 1 else None)

    def _run_predict_step(self, x: np.ndarray) -> np.ndarray:
        return self._programs().predict_step().function(x, *self._weight_arrays())[0]

    # -- loops
    def _evaluate_arrays(
        self, x, y, batch_size: int, tracker: Tracker, hooks=None
    ) -> dict[str, float]:
        """Mean loss and metrics over ``(x, y)``, calling the ``on_test_*`` hooks around."""
        hooks = hooks or callbacks_module.CallbackList([], self, {})
        tracker.reset()
        hooks.on_test_begin()
        with np.errstate(all="ignore"):
            for batch, rows in enumerate(data.batches(len(x), batch_size)):
                hooks.on_test_batch_begin(batch)
                loss, predictions = self._run_test_step(x[rows], y[rows])
                tracker.update(loss, y[rows], predictions)
                hooks.on_test_batch_end(batch, tracker.logs())
        logs = tracker.logs()
        hooks.on_test_end(logs)
        return logs

    def fit(
        self,
        x=None,
        y=None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose="auto",
        callbacks: Sequence[callbacks_module.Callback] | None = None,
        validation_split: float = 0.0,
        validation_data=None,
        shuffle: bool = True,
        initial_epoch: int = 0,
        strategy=None,
        sample_weight=None,
        class_weight: dict | None = None,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
    ) -> callbacks_module.History:
        """Train for ``epochs`` passes over ``(x, y)``; returns a History.

        ``sample_weight`` (one weight >= 0 per sample) and ``class_weight`` (class ->
        weight; 1 for classes not in it) weight each sample's loss inside the compiled
        step (Keras: the weighted sum over the batch size); ``validation_data`` may be
        ``(x_val, y_val, sample_weight_val)``. The metrics are not weighted, as Keras's
        ``metrics``.

        ``strategy`` runs each epoch elsewhere: ``symgrad.distributed.DataParallel(num_workers=2)``
        shards it over Ray workers (History, callbacks, errors and sample weights as here;
        batch normalization over the global batch in its synchronous mode).

        ``x`` may be a generator or a ``Sequence`` of ``(x, y)`` batches (``y`` None):
        ``steps_per_epoch`` batches per epoch (a sequence's length by default; needed for a
        generator without one); ``validation_data`` likewise, ``validation_steps`` batches.

        >>> history = model.fit(x, y, epochs=10, batch_size=32, validation_split=0.2)
        >>> history.history["loss"]  # one value per epoch
        """
        self._require_compiled("fit")
        batch_size = data.positive_int(32 if batch_size is None else batch_size, "batch_size")
        epochs = data.non_negative_int(epochs, "epochs")
        initial_epoch = data.non_negative_int(initial_epoch, "initial_epoch")
        verbose = data.check_verbose(verbose)
        validation_split = data.check_split(validation_split)
        callbacks = callbacks_module.check(callbacks)
        if strategy is not None and not callable(getattr(strategy, "epoch_runner", None)):
            raise TypeError(
                "strategy must be a training strategy such as "
                f"symgrad.distributed.DataParallel(num_workers=2). Received: strategy={strategy!r}"
            )
        if inputs.is_batch_source(x):
            source = (x, y, steps_per_epoch, validation_data, validation_steps)
            return self._fit_batches(source, epochs, verbose, callbacks, shuffle, initial_epoch)
        x, y = self._prepare_xy(x, y)
        self._warn_if_trainable_changed("fit")
        val, val_weight = None, None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError(
                    "validation_data must be a tuple (x_val, y_val) or (x_val, y_val, "
                    "sample_weight_val). "
                    f"Received: validation_data of type {type(validation_data).__name__}"
                )
            val = self._prepare_xy(*validation_data[:2], names=("x_val", "y_val"))
            val_weight = validation_data[2] if len(validation_data) == 3 else None
        weighted = sample_weight is not None or class_weight is not None or val_weight is not None
        if weighted:  # one more target column: the weights (1 where none were given)
            y = self._with_weights(y, sample_weight, class_weight)
            if val is not None:
                names = ("y_val", "sample_weight_val")
                val = (val[0], self._with_weights(val[1], val_weight, None, names))
        if validation_data is None and validation_split:  # the weights split with their rows
            split_at = math.ceil(len(x) * (1 - validation_split))
            if split_at in (0, len(x)):
                raise ValueError(
                    f"validation_split={validation_split} leaves no samples for training or validation "
                    f"with {len(x)} samples"
                )
            x, y, val = x[:split_at], y[:split_at], (x[split_at:], y[split_at:])
        with self._deferred_interrupts(), self._weighting(weighted):
            if strategy is None:
                runner = self._epoch_runner(x, y, batch_size, callbacks)
            else:
                runner = strategy.epoch_runner(self, x, y, batch_size, callbacks)
            with runner as run:
                return self._fit_loop(
                    x, y, batch_size, epochs, verbose, callbacks, val, shuffle, initial_epoch, run
                )

    @contextlib.contextmanager
    def _deferred_interrupts(self):
        """SIGINT deferred to the end of each step (``symgrad.nn.interrupts``) for the block."""
        if self._interrupts is not interrupts.IMMEDIATE:  # already deferred (fit in fit)
            yield
            return
        deferred = interrupts.Deferred()
        with deferred.installed():
            self._interrupts = deferred
            try:
                yield
            finally:
                del self._interrupts  # back to the class default

    def _native_metrics(self, step: CompiledStep, y: np.ndarray) -> bool:
        """Whether every metric's batch mean comes from the compiled step for targets ``y``."""
        if any(k is None for k in step.metric_outputs):
            return False
        y = without_weights(y, self._weighted)
        return all(m.exact_for(y) for m in self._metric_objects())

    def _native_epochs(self, step: CompiledStep, native_metrics: bool, callbacks) -> bool:
        """Whether each epoch can run as one native call (nothing needs Python between steps)."""
        return (
            step.function.epoch is not None
            and native_metrics
            and (  # a Python function as the rate is called between steps
                self.optimizer.compiled_schedule()
                or not callable(getattr(self.optimizer, "learning_rate", None))
            )
            and not any(c.uses_batch_hooks() for c in callbacks)
        )

    @contextlib.contextmanager
    def _epoch_runner(self, x, y, batch_size, callbacks):
        """``run(order, tracker, hooks, where)``: one epoch of fit in this process (its
        ``native`` attribute: as one native call). A strategy provides its own."""
        step = self._train_step()  # compile (and create the optimizer slots) before the clock runs
        native_metrics = self._native_metrics(step, y)

        pace = NativePace(NATIVE_UPDATE_SECONDS)  # kept over the epochs: a batch's time

        def run(order, tracker, hooks, where):
            if run.native:
                self._native_epoch(step, x, y, order, batch_size, tracker, where, hooks, pace)
            else:
                self._python_epoch(x, y, order, batch_size, tracker, hooks, native_metrics, where)

        run.native = self._native_epochs(step, native_metrics, callbacks)
        yield run

    def _fit_loop(
        self,
        x,
        y,
        batch_size,
        epochs,
        verbose,
        callbacks,
        val,
        shuffle,
        initial_epoch,
        run_epoch,
        val_batch_size=None,
    ):
        native_epochs = run_epoch.native
        steps = math.ceil(len(x) / batch_size)
        history = callbacks_module.History()
        progress = [callbacks_module.ProgbarLogger(verbose)] if verbose else []
        params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        params["native_epochs"] = native_epochs  # one native call per epoch (LLVM backend)
        # as Keras: History and the bar last, so they see what callbacks add to the logs
        hooks = callbacks_module.CallbackList([*callbacks, history, *progress], self, params)
        train = Tracker(self._metric_objects(), weighted=self._weighted)
        valid = Tracker(copy.deepcopy(self._metric_objects()), "val_", self._weighted)
        self.stop_training = False
        self.history = history
        self._initial_epoch = initial_epoch  # BackupAndRestore moves it on_train_begin
        hooks.on_train_begin()
        logs: dict[str, float] = {}
        for epoch in range(self._initial_epoch, epochs):
            hooks.on_epoch_begin(epoch)
            order = self._shuffle_rng.permutation(len(x)) if shuffle else None
            train.reset()
            where = {"epoch": epoch, "steps": steps, "history": history}
            where["progress"] = verbose == 1  # the bar: a native epoch reports as it goes
            try:
                with np.errstate(all="ignore"):  # overflow becomes inf; the loss guard reports it
                    run_epoch(order, train, hooks, where)
            except NonFiniteLossError as err:
                stoppers = [c for c in callbacks if c.terminates_on_nan]
                if not stoppers:
                    raise
                for c in stoppers:  # the failing step wrote nothing: end as after the last good one
                    c.on_non_finite(err.batch - 1)
                break
            logs = train.logs()
            if val is not None:
                val_batch = val_batch_size or batch_size
                logs.update(self._evaluate_arrays(val[0], val[1], val_batch, valid, hooks))
            hooks.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        hooks.on_train_end(logs)
        return history

    def _non_finite(self, err, batch: int, where: dict) -> NonFiniteLossError:
        """The error for a failed guard at 0-based ``batch``; ``where``: epoch, steps, history."""
        epoch, steps, history = where["epoch"], where["steps"], where["history"]
        done = self.optimizer.iterations
        return NonFiniteLossError(
            f"{_sentence(self._guard_words(err))} became nan or inf at epoch {epoch + 1}, "
            f"batch {batch + 1} of {steps} (optimizer step {done + 1}); training stopped "
            f"and nothing of that step was written: {self._kept(done)}. Try a smaller "
            f"learning rate or check the data. ({err})",
            epoch + 1,
            batch + 1,
            history,
        )

    def _guard_words(self, err) -> str:
        return guard_words(err, self._programs().train_step().guards)

    @staticmethod
    def _kept(done: int) -> str:
        """What a step that wrote nothing leaves, after ``done`` completed steps."""
        state = "the weights, optimizer slots and iterations"
        return f"{state} are those after step {done}" if done else f"{state} are the initial ones"

    def _python_epoch(self, x, y, order, batch_size, tracker, hooks, native_metrics, where):
        """One compiled-step call per batch, with the batch hooks between them."""
        xs, ys = (x, y) if order is None else (x[order], y[order])  # then contiguous slices
        for batch, rows in enumerate(data.batches(len(x), batch_size)):
            hooks.on_train_batch_begin(batch)
            xb, yb = xs[rows], ys[rows]
            try:
                loss, predictions, means = self._run_train_step(xb, yb, native_metrics)
            except FloatingPointError as err:
                raise self._non_finite(err, batch, where) from err
            tracker.update(loss, yb, predictions, means)
            hooks.on_train_batch_end(batch, tracker.logs())

    def _native_epoch(
        self, step: CompiledStep, x, y, order, batch_size, tracker, where, hooks=None, pace=None
    ):
        """The epoch in native calls (``step.function.epoch``); same order, same steps.

        One call, or with a progress bar (``where["progress"]``) calls of about
        :data:`NATIVE_UPDATE_SECONDS` each, whole batches apiece, the batch hooks called
        between them (as Keras's ``steps_per_execution``); the step counter and the
        sums carry over from call to call, so the result is bit-identical to one call.
        """
        fn, opt = step.function, self.optimizer
        epoch_fn = fn.epoch
        order = np.arange(len(x)) if order is None else order
        values = opt.scalar_values(fn.scalars, fn.program.dtype)
        scalars = [v for s, v in zip(fn.scalars, values) if s.name != epoch_fn.counter]
        others = [*self._weight_arrays(), *(s.value for s in step.slots)]
        keys = [{stat: step.outputs[k] for stat, k in s.items()} for s in step.metric_outputs]
        steps = math.ceil(len(order) / batch_size)
        pace = pace if pace is not None and where.get("progress") else NativePace(None)
        done, sums = 0, None  # batches run, sums so far
        while True:
            batches = pace.batches(steps - done)
            if hooks is not None and pace.seconds is not None:
                hooks.on_train_batch_begin(done)
            rows = order[done * batch_size : (done + batches) * batch_size]
            started = time.perf_counter()
            with self._interrupts:  # a Ctrl-C waits until the call and its count are both done
                try:
                    result = epoch_fn(
                        x,
                        y,
                        *others,
                        *scalars,
                        batch_size=batch_size,
                        order=rows,
                        counter_start=opt.iterations,
                        sums_start=sums,
                    )
                except FloatingPointError as err:
                    failed = getattr(err, "batch", 0)  # steps of this call before the failing one
                    opt.iterations += failed
                    raise self._non_finite(err, done + failed, where) from err
                opt.iterations += result.steps
            pace.timed(max(1, result.steps), time.perf_counter() - started)
            done, sums = done + result.steps, result.sums
            tracker.reset()  # the epoch so far: the sums are cumulative
            tracker.add_epoch(sums, min(len(order), done * batch_size), keys)
            if hooks is not None and pace.seconds is not None:
                hooks.on_train_batch_end(done - 1, tracker.logs())
            if done >= steps:
                break

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size: int | None = None,
        verbose=0,
        return_dict: bool = False,
        callbacks: Sequence[callbacks_module.Callback] | None = None,
        sample_weight=None,
        steps: int | None = None,
    ):
        """Mean loss over ``(x, y)`` -- ``[loss, *metrics]`` when metrics were compiled.

        ``callbacks``: their ``on_test_*`` hooks are called. ``sample_weight``: each
        sample's loss weighted (Keras: the weighted sum over the number of samples).
        ``x`` may be a generator or a ``Sequence`` of ``(x, y)`` batches: ``steps`` of them
        (default: all).
        """
        self._require_compiled("evaluate")
        if inputs.is_batch_source(x):  # in batches of the source's size
            self._no_targets_beside(x, y)
            batches = inputs.Batches(x, steps, "x", "steps")
            x, y, drawn_weights = self._drawn_arrays(batches)
            batch_size = batches.first_size if batch_size is None else batch_size
            sample_weight = drawn_weights if sample_weight is None else sample_weight
        batch_size = data.positive_int(32 if batch_size is None else batch_size, "batch_size")
        verbose = data.check_verbose(verbose)
        callbacks = callbacks_module.check(callbacks)
        x, y = self._prepare_xy(x, y)
        weighted = sample_weight is not None
        if weighted:
            y = self._with_weights(y, sample_weight, None)
        steps = math.ceil(len(x) / batch_size)
        hooks = callbacks_module.CallbackList(callbacks, self, {"verbose": verbose, "steps": steps})
        with self._weighting(weighted):
            tracker = Tracker(self._metric_objects(), weighted=weighted)
            logs = self._evaluate_arrays(x, y, batch_size, tracker, hooks)
        if verbose:
            print(" - ".join(f"{k}: {callbacks_module.format_value(v)}" for k, v in logs.items()))
        return self._result(logs, return_dict)

    def _result(self, logs: dict, return_dict: bool):
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def predict(
        self,
        x,
        batch_size: int | None = None,
        verbose=0,
        callbacks: Sequence[callbacks_module.Callback] | None = None,
        steps: int | None = None,
    ) -> np.ndarray:
        """Model outputs for the rows of ``x``, batch by batch (the model need not be compiled).

        ``callbacks``: their ``on_predict_*`` hooks are called (batch logs: ``outputs``).
        ``x`` may be a generator or a ``Sequence`` of batches (``x`` or ``(x, ...)``):
        ``steps`` of them (default: all).
        """
        if inputs.is_batch_source(x):  # in batches of the source's size
            batches = inputs.Batches(x, steps, "x", "steps")
            x = self._drawn_arrays(batches, targets=False)[0]
            batch_size = batches.first_size if batch_size is None else batch_size
        batch_size = data.positive_int(32 if batch_size is None else batch_size, "batch_size")
        verbose = data.check_verbose(verbose)
        callbacks = callbacks_module.check(callbacks)
        x = self._prepare_x(x)
        steps = math.ceil(len(x) / batch_size)
        hooks = callbacks_module.CallbackList(callbacks, self, {"verbose": verbose, "steps": steps})
        hooks.on_predict_begin()
        out = None  # allocated once the first batch gives the width: no list of parts to join
        with np.errstate(all="ignore"):
            for batch, rows in enumerate(data.batches(len(x), batch_size)):
                hooks.on_predict_batch_begin(batch)
                p = self._run_predict_step(x[rows])
                if out is None:
                    out = np.empty((len(x), p.shape[1]), dtype=p.dtype)
                out[rows] = p
                hooks.on_predict_batch_end(batch, {"outputs": out[rows]})
        hooks.on_predict_end()
        return self._samples(out)

    def train_on_batch(
        self, x, y, sample_weight=None, class_weight=None, return_dict: bool = False
    ):
        """One optimizer step on ``(x, y)`` as a single batch; returns its loss (and metrics)."""
        self._require_compiled("train_on_batch")
        x, y = self._prepare_xy(x, y)
        self._warn_if_trainable_changed("train_on_batch")
        weighted = sample_weight is not None or class_weight is not None
        if weighted:
            y = self._with_weights(y, sample_weight, class_weight)
        with np.errstate(all="ignore"), self._deferred_interrupts(), self._weighting(weighted):
            try:
                loss, predictions, _ = self._run_train_step(x, y)
            except FloatingPointError as err:
                done = self.optimizer.iterations
                raise NonFiniteLossError(
                    f"{_sentence(self._guard_words(err))} is nan or inf for this batch "
                    f"(optimizer step {done + 1}); nothing was written: {self._kept(done)}. "
                    f"({err})",
                    0,
                    1,
                ) from err
        tracker = Tracker(self._metric_objects(), weighted=weighted)
        tracker.update(loss, y, predictions)
        return self._result(tracker.logs(), return_dict)

    def test_on_batch(self, x, y, sample_weight=None, return_dict: bool = False):
        """Loss (and metrics) of ``(x, y)`` as a single batch, without updating."""
        self._require_compiled("test_on_batch")
        x, y = self._prepare_xy(x, y)
        weighted = sample_weight is not None
        if weighted:
            y = self._with_weights(y, sample_weight, None)
        with np.errstate(all="ignore"), self._weighting(weighted):
            loss, predictions = self._run_test_step(x, y)
        tracker = Tracker(self._metric_objects(), weighted=weighted)
        tracker.update(loss, y, predictions)
        return self._result(tracker.logs(), return_dict)

    def predict_on_batch(self, x) -> np.ndarray:
        x = self._prepare_x(x)
        with np.errstate(all="ignore"):
            return self._samples(self._run_predict_step(x))

    def compute_gradients(self, x, y) -> list[np.ndarray]:
        """Gradients of the mean loss over all of ``(x, y)``, one per trainable weight (as of
        ``compile``), in the order of ``trainable_weights``, each shaped like its weight."""
        self._require_compiled("compute_gradients")
        x, y = self._prepare_xy(x, y)
        with np.errstate(all="ignore"):
            outs = self._programs().gradient_step().function(x, y, *self._weight_arrays())
        trainable = self._training_graph().trainable
        return [g.reshape(w.shape) for w, g in zip(trainable, outs[1:])]

    # -- generators and Sequences: batches drawn one at a time
    def _no_targets_beside(self, x, y) -> None:
        if y is not None:
            raise ValueError(
                "y must be None when x is a generator or a Sequence: its batches hold the "
                f"targets. Received: x of type {type(x).__name__}, y of type {type(y).__name__}"
            )

    def _prepare_batch(
        self, batches: inputs.Batches, item, batch: int, targets: bool = True, weighted=None
    ):
        """A drawn batch as ``(x, y, sample_weight)`` arrays the programs read (``weighted``:
        its weights as one more target column); a bad batch is named by its index."""
        x, y, weight = batches.unpack(item, batch, targets)
        try:
            if not targets:
                return self._prepare_x(x), None, None
            x, y = self._prepare_xy(x, y)
            if weighted is False and weight is not None:
                raise ValueError(
                    "it has sample weights, the first batch had none: give every batch "
                    "(x, y, sample_weight), or none"
                )
            if weighted:
                y = self._with_weights(y, weight, None, ("y", "sample_weight"))
            return x, y, weight
        except ValueError as err:
            raise ValueError(f"Batch {batch} of {batches.what}: {err}") from err

    def _drawn_arrays(self, batches: inputs.Batches, targets: bool = True):
        """All the batches of one pass, checked one by one and joined (evaluate, predict,
        and fit's validation: the results are the same as batch by batch): ``(x, y,
        sample_weight)``, the weights None when no batch has any (1 where one lacks them)."""
        xs, ys, ws = [], [], []
        for batch, item in batches.draw():
            x, y, w = self._prepare_batch(batches, item, batch, targets)
            xs.append(x)
            ys.append(y)
            ws.append(w)
        batches.first_size = len(xs[0]) if xs else 0
        if not xs:
            raise ValueError(f"{batches.what} gave no batch: nothing to evaluate or predict")
        weights = None
        if any(w is not None for w in ws):
            weights = np.concatenate(
                [np.ones(len(x)) if w is None else np.reshape(w, -1) for x, w in zip(xs, ws)]
            )
        return np.concatenate(xs), (np.concatenate(ys) if targets else None), weights

    def _fit_batches(self, source, epochs, verbose, callbacks, shuffle, initial_epoch):
        """``fit`` on a generator or a Sequence: step by step, each batch checked as drawn."""
        x, y, steps_per_epoch, validation_data, validation_steps = source
        self._no_targets_beside(x, y)
        batches = inputs.Batches(x, steps_per_epoch, "x", "steps_per_epoch")
        if batches.steps is None:
            raise ValueError(
                "steps_per_epoch is needed when x is a generator without a length: how many "
                f"batches make an epoch. Received: x of type {type(x).__name__}, steps_per_epoch=None"
            )
        val, val_batch, val_weight = None, 32, None
        if validation_data is not None:
            if inputs.is_batch_source(validation_data):
                what = inputs.Batches(validation_data, validation_steps, "validation_data")
                *val, val_weight = self._drawn_arrays(what)  # drawn once, used every epoch
                val_batch = what.first_size  # in batches of its own size
            else:
                val = self._prepare_xy(*validation_data[:2], names=("x_val", "y_val"))
                val_weight = validation_data[2] if len(validation_data) == 3 else None
        # weighted when the first batch has weights (the others must too) or validation has
        weighted = batches.first_has_weights() or val_weight is not None
        if weighted and val is not None:
            names = ("y_val", "sample_weight_val")
            val = (val[0], self._with_weights(val[1], val_weight, None, names))

        def run(order, tracker, hooks, where):
            for batch, item in batches.draw(order):
                xb, yb, _ = self._prepare_batch(batches, item, batch, weighted=weighted)
                hooks.on_train_batch_begin(batch)
                try:
                    loss, predictions, _ = self._run_train_step(xb, yb)
                except FloatingPointError as err:
                    raise self._non_finite(err, batch, where) from err
                tracker.update(loss, yb, predictions)
                hooks.on_train_batch_end(batch, tracker.logs())
            batches.end_epoch()

        run.native = False
        shuffle = shuffle and batches.sequence is not None  # a generator's order is its own
        if self.built:
            self._warn_if_trainable_changed("fit")
        rows = range(batches.steps)  # one "row" per batch: fit's order is the batches'
        with self._deferred_interrupts(), self._weighting(weighted):
            loop = (rows, None, 1, epochs, verbose, callbacks, val, shuffle, initial_epoch)
            return self._fit_loop(*loop, run, val_batch)


def _sentence(words: str) -> str:
    """``words`` with a capital first letter (``str.capitalize`` would lower a path's capitals)."""
    return words[:1].upper() + words[1:]
