"""symgrad.distributed.data_parallel: one ``fit`` over Ray workers.

``model.fit(x, y, ..., strategy=DataParallel(num_workers=N))`` runs each epoch
on N Ray actors; the loop around the epochs is ``fit``'s own, so History,
callbacks (checkpoints, early stopping), validation and ``NonFiniteLossError``
behave as in one process.  Each worker rebuilds the model from its config and
compiles it itself (native code never travels); the training rows go into Ray's
object store once per ``fit``.

- ``mode="sync"``: every step, the global batch (the rows of ``fit``'s own
  shuffled order) is split into N contiguous shards; each worker computes the
  loss and gradients of its shard (a compiled gradient program), the driver
  averages them weighted by shard size, and applies the optimizer update to the
  model (an update program compiled once, on the driver) -- the trajectory of
  single-process ``fit`` with the same batch size, up to rounding.  The new
  weights go to the workers with the next step.  Batch normalization uses the
  global batch's statistics (:class:`GlobalStatistics`); sample weights travel
  with their rows.
- ``mode="local"``: each worker holds a fixed shard of the rows and trains a
  replica for ``local_epochs`` whole epochs in batches of ``ceil(batch_size / N)`` (one
  native call each with the LLVM backend), then the driver averages the weights and optimizer slots (weighted by
  shard size) and sends the average back.  One round is one epoch of ``fit``.

A worker that dies or does not answer within ``timeout`` seconds stops ``fit``
with :class:`~symgrad.distributed.runtime.WorkerLost` naming the worker and the
epoch; the model keeps the weights of the last completed step (sync) or round
(local), and checkpoints written so far are intact.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import sympy as sp

from symgrad import compiler
from symgrad import core as E
from symgrad.distributed import runtime, workers
from symgrad.nn import losses, validation
from symgrad.nn.models import _compile_from_config, model_from_config
from symgrad.nn.trainer import (
    NonFiniteLossError,
    _loss_and_gradients,
    runtime_scalars,
    without_weights,
)

MODES = ("sync", "local")


def replica(config: dict):
    """A compiled copy of a model from its config (what ``load_model`` does with a file)."""
    settings = config.get("compile")
    if settings is None or settings.get("loss") is None:
        raise ValueError(
            "DataParallel rebuilds the model on each worker from model.get_config(): the model "
            "must be compiled with a loss given by name (a custom loss has no config)"
        )
    model = model_from_config(config)
    _compile_from_config(model, settings)  # as load_model compiles a saved model
    return model


def _model_config(model) -> dict:
    try:
        return model.get_config()
    except (AttributeError, NotImplementedError) as err:
        raise ValueError(
            f"DataParallel needs the model's config to rebuild it on the workers. Received: "
            f"{type(model).__name__} without get_config ({err})"
        ) from err


class _Worker:
    def pid(self) -> int:
        """The worker's process id (to watch it, or, in the tests, to kill it)."""
        return os.getpid()


class GlobalStatistics:
    """Batch normalization over the global batch, one shard per worker (sync BN).

    Passed to a model's ``_forward`` as ``training``: each BatchNormalization
    normalizes its shard with the global batch's mean and variance, which are inputs
    of the shard's programs (``batch_mean_<k>``, ``batch_variance_<k>``), and reports
    its shard's moments, from which the driver merges the global ones layer by layer.

    The gradient: the global statistics depend on every shard's rows, so the shard's
    loss with the statistics held fixed misses their share. Each layer adds
    ``<c_mean, mean of A> + <c_var, mean of (A - mean)^2>`` over the shard to the loss
    it differentiates, ``c`` (inputs ``adjoint_mean_<k>``, ``adjoint_variance_<k>``)
    being the loss's total derivative with respect to that layer's global mean and
    variance: summed over the shards, the gradient is the single-process gradient.
    The driver finds ``c`` from the last layer back (the derivative of the shards' loss
    with respect to ``batch_mean_<k>``, the later layers' ``c`` given).
    """

    def __init__(self):
        self.layers: list = []  # the BatchNormalization layers, in the order they are called
        self.inputs: list = []  # per layer: (mean, variance) symbols, the global statistics
        self.adjoints: list = []  # per layer: (c_mean, c_var) symbols
        self.moments: list = []  # per layer: the shard's (mean, variance)
        self.terms: list = []  # per layer: its term of the loss differentiated

    def normalize(self, layer, grouped):
        """``grouped`` (the shard's rows of the layer's features) normalized with the
        global batch's statistics, inputs of the programs; the layer's symbols recorded."""
        k, rows, width = len(self.layers) + 1, grouped.shape[0], grouped.shape[1]
        mean, variance = (E.matrix(f"batch_{s}_{k}", 1, width) for s in ("mean", "variance"))
        c_mean, c_var = (E.matrix(f"adjoint_{s}_{k}", 1, width) for s in ("mean", "variance"))
        x, m = sp.symbols("x m", real=True)
        squares = E.elementwise(
            sp.Lambda((x, m), (x - m) ** 2), grouped, E.broadcast_rows(mean, rows)
        )
        shard_mean, shard_variance = E.moments(grouped, 0)
        self.layers.append(layer)
        self.inputs.append((mean, variance))
        self.adjoints.append((c_mean, c_var))
        self.moments.append((shard_mean, shard_variance))
        self.terms.append(
            E.add(
                E.total(E.hadamard(c_mean, shard_mean)),
                E.total(E.hadamard(c_var, E.mean(squares, 0))),
            )
        )
        return layer.normalized_with(grouped, mean, variance)


def merged(parts: list) -> tuple[int, list]:
    """The global (mean, variance) of each layer from the shards' ``(rows, moments)``: the
    shards' means weighted by rows, and their variances plus the spread of their means."""
    parts = [p for p in parts if p[0]]
    rows = sum(p[0] for p in parts)
    out = []
    for k in range(len(parts[0][1])):
        shares = [(p[0] / rows, *p[1][k]) for p in parts]
        mean = sum(s * m for s, m, _ in shares)
        out.append((mean, sum(s * (v + (m - mean) ** 2) for s, m, v in shares)))
    return rows, out


class GradientWorker(_Worker):
    """A sync worker: its shard of each global batch -> (rows, loss x rows, each metric's
    {statistic: sum}, gradients, derivatives by the global batch statistics)."""

    def __init__(self, config: dict, data, index: int, count: int, weighted: bool):
        runtime.use_assigned_cpus()
        self.model = replica(config)
        self.x, self.y = data
        self.index, self.count, self.weighted = index, count, weighted
        self.metrics = self.model._metric_objects()
        stats = GlobalStatistics()
        graph = self.model._forward(training=stats)
        self.synced = bool(stats.layers)
        inputs = [graph.x, *(w.symbol for w in graph.weights)]
        if self.synced:
            inputs += [s for pair in (*stats.inputs, *stats.adjoints) for s in pair]
            self.statistics = compiler.compile(
                [graph.x, *(w.symbol for w in graph.weights), *_flat(stats.inputs)],
                {f"{s}_{k}": m for k, pair in enumerate(stats.moments) for s, m in zip("mv", pair)},
                scalars=[],
                backend=self.model.backend,
                dtype=self.model.dtype,
                name="shard_statistics",
            )
        outputs, y = _shard_loss(self.model, graph, stats, weighted)
        if self.metrics:
            outputs = {"loss": outputs.pop("loss"), "P": graph.output, **outputs}
        self.program = compiler.compile(
            [inputs[0], y, *inputs[1:]],
            outputs,
            scalars=[],
            backend=self.model.backend,
            dtype=self.model.dtype,
            name="shard_gradients",
        )
        self.trainable = len(self.model._training_graph().trainable)

    def set_order(self, order: np.ndarray) -> None:
        self.order = order

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``order[start:stop]`` of the epoch are the global batch; this worker's shard."""
        return np.array_split(self.order[start:stop], self.count)[self.index]

    def moments(self, start: int, stop: int, weights: list[np.ndarray], stats: list):
        """(rows, [(mean, variance) of each BatchNormalization over the shard]), the layers
        after the first whose ``stats`` are missing (zeros) not meaningful yet."""
        rows = self._rows(start, stop)
        if len(rows) == 0:
            return 0, []
        with np.errstate(all="ignore"):
            outs = self.statistics(self.x[rows], *weights, *_flat(stats))
        return len(rows), list(zip(outs[0::2], outs[1::2]))

    def step(self, start: int, stop: int, weights: list[np.ndarray], stats=(), adjoints=()):
        rows = self._rows(start, stop)
        if len(rows) == 0:
            return 0, 0.0, [], None, None
        x, y = self.x[rows], self.y[rows]
        with np.errstate(all="ignore"):
            outs = self.program(x, y, *weights, *_flat(stats), *_flat(adjoints))
        derivatives = list(outs[2:] if self.metrics else outs[1:])
        grads, by_stats = derivatives[: self.trainable], derivatives[self.trainable :]
        sums = self._metric_sums(y, outs[1].astype(np.float64)) if self.metrics else []
        pairs = list(zip(by_stats[0::2], by_stats[1::2]))
        return len(rows), float(outs[0][0, 0]) * len(rows), sums, grads, pairs

    def _metric_sums(self, y: np.ndarray, predictions: np.ndarray) -> list:
        """Each metric's ({statistic: sum}, count) over the shard: a weighted metric's
        statistics and count weighted by the samples' weights, as ``update_state`` does."""
        weights = y[:, -1].astype(np.float64) if self.weighted else None
        targets = without_weights(y, self.weighted).astype(np.float64)
        out = []
        for m in self.metrics:
            w = weights if m.weighted else None
            count = len(targets) if w is None else float(np.sum(w))
            out.append((m.batch_sums(targets, predictions, w), count))
        return out


def _flat(pairs) -> list:
    return [a for pair in pairs for a in pair]


def _shard_loss(model, graph, stats: GlobalStatistics, weighted: bool):
    """The shard program's outputs: its loss, and the gradients of the loss plus the
    statistics' terms (:class:`GlobalStatistics`) by the trainable weights, then by each
    layer's global mean and variance. Also the targets' symbol."""
    loss = losses.SampleWeighted(model.loss) if weighted else model.loss
    trainable = [w.symbol for w in model._training_graph().trainable]  # as of compile
    y = loss.labels(*graph.output.shape)
    wrt = [*trainable, *_flat(stats.inputs)]
    _, value, _, _ = _loss_and_gradients(loss, y, graph.output, graph.penalties, [])
    _, _, gradients, _ = _loss_and_gradients(
        loss, y, graph.output, [*graph.penalties, *stats.terms], wrt
    )
    return {"loss": value, **{f"d_{w.name}": gradients[w] for w in wrt}}, y


class ReplicaWorker(_Worker):
    """A local-SGD worker: a compiled replica trained on its own shard of the rows."""

    def __init__(self, config: dict, data, index: int, count: int, seed: int, weighted: bool):
        runtime.use_assigned_cpus()
        x, y = data
        rows = np.array_split(np.arange(len(x)), count)[index]
        self.x, self.y = x[rows], y[rows]
        self.model = replica(config)
        self.model._seed_rngs(seed + index)
        self.weighted = weighted

    def train(self, state: dict, epochs: int, batch_size: int, shuffle: bool):
        """Start from ``state`` (weights, slots, iterations), fit ``epochs`` epochs: new state."""
        model, opt = self.model, self.model.optimizer
        model.set_weights(state["weights"])
        opt.build(model.trainable_weights, model.dtype)
        for var, value in zip(opt.variables, state["slots"]):
            var.value[...] = value
        opt.iterations = state["iterations"]
        # the rows are fit's prepared arrays (one-hot targets...): its loop, not its checks
        with (
            model._weighting(self.weighted),
            model._epoch_runner(self.x, self.y, batch_size, []) as run,
        ):
            history = model._fit_loop(
                self.x, self.y, batch_size, epochs, 0, [], None, shuffle, 0, run
            )
        logs = {k: v[-1] for k, v in history.history.items()}
        metric_sums = [(dict(m.state), m.count) for m in model._metric_objects()]  # last epoch
        return len(self.x), logs, _state(model), metric_sums


def _state(model) -> dict:
    opt = model.optimizer
    return {
        "weights": model.get_weights(),
        "slots": [v.value.copy() for v in opt.variables],
        "iterations": opt.iterations,
    }


class DataParallel:
    """Shard ``fit`` over ``num_workers`` Ray workers; pass it as ``fit(..., strategy=...)``.

    >>> history = model.fit(x, y, epochs=10, batch_size=64,
    ...                     strategy=DataParallel(num_workers=2))             # synchronous
    >>> model.fit(x, y, epochs=10, strategy=DataParallel(2, mode="local", local_epochs=1))

    ``timeout``: seconds any wait on a worker may take (a compilation included).
    """

    def __init__(
        self,
        num_workers: int = 2,
        mode: str = "sync",
        local_epochs: int = 1,
        timeout: float = 300.0,
    ):
        self.num_workers = validation.positive_int(num_workers, "num_workers")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}. Received: mode={mode!r}")
        self.mode = mode
        self.local_epochs = validation.positive_int(local_epochs, "local_epochs")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds > 0. Received: {timeout!r}")
        self.timeout = float(timeout)
        self._epochs = None  # while a fit runs: its workers

    def worker_pids(self) -> list[int]:
        """The process ids of the workers of the running fit (call it from a callback)."""
        if self._epochs is None:
            raise RuntimeError("worker_pids() is only known while fit runs with this strategy")
        refs = [a.pid.remote() for a in self._epochs.actors]
        return [runtime.get(ref, self.timeout, "pid", worker=i) for i, ref in enumerate(refs)]

    def __repr__(self) -> str:
        return f"DataParallel(num_workers={self.num_workers}, mode={self.mode!r})"

    @contextlib.contextmanager
    def epoch_runner(self, model, x, y, batch_size: int, callbacks):
        """fit's epoch runner (see ``Trainer._epoch_runner``): workers live while it is open."""
        r = runtime.init()
        workers.shutdown()  # kept sweep workers hold the CPUs these workers need
        config = _model_config(model)
        data = r.put((x, y))
        if self.mode == "sync":
            run = _SyncEpochs(self, model, config, data, batch_size, len(x))
        else:
            run = _LocalEpochs(self, model, config, data, batch_size)
        self._epochs = run
        try:
            yield run
        finally:
            self._epochs = None
            for actor in run.actors:
                r.kill(actor, no_restart=True)


class _Epochs:
    """What both modes share: the actors, and waits that name the worker and the epoch."""

    native = False

    def __init__(self, strategy: DataParallel, model, actors: list):
        self.strategy, self.model, self.actors = strategy, model, actors

    def gather(self, refs: list, what: str, where: dict) -> list:
        epoch = where["epoch"] + 1
        try:
            return [
                runtime.get(ref, self.strategy.timeout, what, worker=i, epoch=epoch)
                for i, ref in enumerate(refs)
            ]
        except runtime.WorkerLost as err:
            raise runtime.WorkerLost(
                f"{err} in epoch {epoch}: fit stopped; the weights are those after the last "
                f"completed {'step' if self.strategy.mode == 'sync' else 'round'} "
                f"(optimizer iteration {self.model.optimizer.iterations})",
                err.worker,
                epoch,
            ) from err


class _SyncEpochs(_Epochs):
    """Gradients on the workers, averaged and applied on the driver, step by step."""

    def __init__(self, strategy, model, config, data, batch_size, total):
        r = runtime.ray()
        actor = r.remote(num_cpus=1, max_restarts=0)(GradientWorker)
        n = strategy.num_workers
        weighted = model._weighted
        super().__init__(
            strategy, model, [actor.remote(config, data, i, n, weighted) for i in range(n)]
        )
        self.batch_size, self.total = batch_size, total
        self.apply = _update_program(model)
        self.normalizations = GlobalStatistics()  # the driver's layers, as the workers call them
        model._forward(training=self.normalizations)

    def __call__(self, order, tracker, hooks, where):
        model = self.model
        order = np.arange(self.total) if order is None else order
        self.gather([a.set_order.remote(order) for a in self.actors], "the epoch's order", where)
        for batch, start in enumerate(range(0, len(order), self.batch_size)):
            hooks.on_train_batch_begin(batch)
            stop = min(start + self.batch_size, len(order))
            weights = runtime.ray().put(model._weight_arrays())
            stats, adjoints = self._statistics(start, stop, weights, where)
            parts = self._step(start, stop, weights, stats, adjoints, where)
            rows = sum(p[0] for p in parts)
            loss = sum(p[1] for p in parts) / rows
            try:
                self._apply(parts, rows, loss, stats)
            except FloatingPointError as err:
                raise model._non_finite(err, batch, where) from err
            tracker.add(loss * rows, rows, [])
            _add_metrics(tracker, [p[2] for p in parts])
            hooks.on_train_batch_end(batch, tracker.logs())

    def _step(self, start, stop, weights, stats, adjoints, where) -> list:
        refs = [a.step.remote(start, stop, weights, stats, adjoints) for a in self.actors]
        return self.gather(refs, "gradients", where)

    def _statistics(self, start, stop, weights, where) -> tuple[list, list]:
        """Each BatchNormalization's global batch (mean, variance) and the loss's derivatives
        by them (see :class:`GlobalStatistics`): a round trip per layer forward, then back."""
        dtype = np.dtype(self.model.dtype)
        count = len(self.normalizations.layers)
        zeros = [
            (np.zeros(s.shape, dtype), np.zeros(s.shape, dtype))
            for s, _ in self.normalizations.inputs
        ]
        stats, adjoints = list(zeros), list(zeros)
        for k in range(count):  # layer k's statistics need those of the layers before
            refs = [a.moments.remote(start, stop, weights, stats) for a in self.actors]
            stats[k] = self._cast(merged(self.gather(refs, "batch statistics", where))[1][k])
        for k in reversed(range(count)):  # layer k's derivatives need those of the later
            parts = [p for p in self._step(start, stop, weights, stats, adjoints, where) if p[0]]
            rows = sum(p[0] for p in parts)
            adjoints[k] = self._cast(
                tuple(sum(p[0] / rows * p[4][k][j] for p in parts) for j in (0, 1))
            )
        return stats, adjoints

    def _cast(self, pair) -> tuple:
        return tuple(np.ascontiguousarray(a, dtype=self.model.dtype) for a in pair)

    def _apply(self, parts, rows: int, loss: float, stats: list) -> None:
        """The shards' gradients averaged (weighted by rows), then the compiled update; the
        moving statistics move with it (after the guarded update, so all or nothing)."""
        if not np.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss}")
        moving = self._moving(stats)
        if not all(np.isfinite(value).all() for _, value in moving):
            raise FloatingPointError("a batch statistic is not finite")
        shares = [(p[0] / rows, p[3]) for p in parts if p[0]]
        grads = [sum(share * g[k] for share, g in shares) for k in range(len(shares[0][1]))]
        fn, opt = self.apply, self.model.optimizer
        slots = [v.value for v in opt.variables]
        scalars = opt.scalar_values(fn.scalars, fn.program.dtype)
        with self.model._interrupts:
            fn(*self.model._weight_arrays(), *grads, *slots, *scalars)
            for var, value in moving:
                var.value[...] = value
            opt.iterations += 1

    def _moving(self, stats: list) -> list:
        """(variable, new value) of each moving statistic: ``moving * momentum + batch *
        (1 - momentum)``, as the training step of one process updates it."""
        out = []
        for layer, pair in zip(self.normalizations.layers, stats):
            keep, rest = float(layer.momentum), float(1 - layer.momentum)
            for var, batch in zip((layer.moving_mean, layer.moving_variance), pair):
                out.append((var, keep * var.value + rest * batch))
        return out


def _add_metrics(tracker, parts: list) -> None:
    """The workers' ({statistic: sum}, count) of each metric added to the epoch's (a worker
    without rows has none); the count is rows, or the samples' weights for a weighted metric."""
    for i, metric in enumerate(tracker.metrics):
        given = [p[i] for p in parts if p]
        metric.add_sums(_summed(sums for sums, _ in given), sum(count for _, count in given))


def _summed(parts) -> dict:
    """{statistic: sum} of the workers' metric statistics (a worker without rows has none)."""
    total: dict = {}
    for sums in parts:
        for key, value in sums.items():
            total[key] = total[key] + value if key in total else value
    return total


def _update_program(model):
    """The optimizer update alone: weights, gradients (inputs ``d_<weight>``) and slots in,
    new weights and slots written in place; guarded as the fused training step is."""
    graph = model._training_graph()
    opt = model.optimizer
    slots = opt.build(graph.trainable, model.dtype)
    model._apply_pending_optimizer_state()
    grads = {w.symbol: E.matrix(f"d_{w.symbol.name}", *w.matrix_shape) for w in graph.trainable}
    updates = opt.updates(graph.trainable, grads)
    gradient_sum = E.add(*(E.total(g) for g in grads.values()))
    update_sum = E.add(*(E.total(u) for u in updates.values()))
    inputs = [*(w.symbol for w in graph.weights), *grads.values(), *(s.symbol for s in slots)]
    return compiler.compile(
        inputs,
        {"gradient_sum": gradient_sum},
        updates=updates,
        scalars=runtime_scalars(list(updates.values())),
        guards=("gradient_sum",),
        checks={"update_sum": update_sum},
        # NumPy whatever the model's backend: the update is elementwise and small
        backend="numpy",
        dtype=model.dtype,
        name="apply_gradients",
    )


class _LocalEpochs(_Epochs):
    """Local SGD: ``local_epochs`` epochs on each worker's shard, then weights and slots averaged."""

    def __init__(self, strategy, model, config, data, batch_size):
        r = runtime.ray()
        actor = r.remote(num_cpus=1, max_restarts=0)(ReplicaWorker)
        n = strategy.num_workers
        seed = int(model._shuffle_rng.integers(2**31))  # the workers' shuffling, from the model's
        super().__init__(
            strategy,
            model,
            [actor.remote(config, data, i, n, seed, model._weighted) for i in range(n)],
        )
        # the global batch split as in sync mode: each worker takes as many steps as one process
        self.batch_size = -(-batch_size // n)
        model._materialize()
        model.optimizer.build(model.trainable_weights, model.dtype)
        model._apply_pending_optimizer_state()

    def __call__(self, order, tracker, hooks, where):
        model, strategy = self.model, self.strategy
        state = runtime.ray().put(_state(model))
        refs = [
            a.train.remote(state, strategy.local_epochs, self.batch_size, order is not None)
            for a in self.actors
        ]
        try:
            parts = self.gather(refs, "local epochs", where)
        except runtime.ray().exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, NonFiniteLossError):
                raise model._non_finite(cause, 0, where) from err
            raise
        rows = sum(p[0] for p in parts)
        shares = [p[0] / rows for p in parts]
        mean = lambda arrays: sum(s * a for s, a in zip(shares, arrays))  # noqa: E731
        states = [p[2] for p in parts]
        model.set_weights([mean(ws) for ws in zip(*(s["weights"] for s in states))])
        for var, values in zip(model.optimizer.variables, zip(*(s["slots"] for s in states))):
            var.value[...] = mean(values)
        model.optimizer.iterations = max(s["iterations"] for s in states)
        tracker.add(sum(p[0] * p[1]["loss"] for p in parts), rows, [])
        _add_metrics(tracker, [p[3] for p in parts])
