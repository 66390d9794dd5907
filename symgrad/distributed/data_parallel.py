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
  weights go to the workers with the next step.
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

from symgrad import compiler
from symgrad import core as E
from symgrad.distributed import runtime
from symgrad.nn import validation
from symgrad.nn.models import _compile_from_config, model_from_config
from symgrad.nn.trainer import NonFiniteLossError, runtime_scalars

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


class GradientWorker(_Worker):
    """A sync worker: its shard of each global batch -> (loss x rows, each metric's
    {statistic: sum}, gradients)."""

    def __init__(self, config: dict, data, index: int, count: int):
        self.model = replica(config)
        self.x, self.y = data
        self.index, self.count = index, count
        graph = self.model._training_graph()
        outputs = {"loss": graph.loss}
        self.metrics = self.model._metric_objects()
        if self.metrics:
            outputs["P"] = graph.output
        outputs.update({f"d_{w.symbol.name}": graph.gradients[w.symbol] for w in graph.trainable})
        inputs = [graph.x, graph.y, *(w.symbol for w in graph.weights)]
        self.program = compiler.compile(
            inputs,
            outputs,
            scalars=[],
            backend=self.model.backend,
            dtype=self.model.dtype,
            name="shard_gradients",
        )

    def set_order(self, order: np.ndarray) -> None:
        self.order = order

    def step(self, start: int, stop: int, weights: list[np.ndarray]):
        """Rows ``order[start:stop]`` of the epoch are the global batch; this worker's shard."""
        rows = np.array_split(self.order[start:stop], self.count)[self.index]
        if len(rows) == 0:
            return 0, 0.0, [{} for _ in self.metrics], None
        x, y = self.x[rows], self.y[rows]
        with np.errstate(all="ignore"):
            outs = self.program(x, y, *weights)
        grads = list(outs[2:] if self.metrics else outs[1:])
        sums = [
            m.batch_sums(y.astype(np.float64), outs[1].astype(np.float64)) for m in self.metrics
        ]
        return len(rows), float(outs[0][0, 0]) * len(rows), sums, grads


class ReplicaWorker(_Worker):
    """A local-SGD worker: a compiled replica trained on its own shard of the rows."""

    def __init__(self, config: dict, data, index: int, count: int, seed: int):
        x, y = data
        rows = np.array_split(np.arange(len(x)), count)[index]
        self.x, self.y = x[rows], y[rows]
        self.model = replica(config)
        self.model._seed_rngs(seed + index)

    def train(self, state: dict, epochs: int, batch_size: int, shuffle: bool):
        """Start from ``state`` (weights, slots, iterations), fit ``epochs`` epochs: new state."""
        model, opt = self.model, self.model.optimizer
        model.set_weights(state["weights"])
        opt.build(model.trainable_weights, model.dtype)
        for var, value in zip(opt.variables, state["slots"]):
            var.value[...] = value
        opt.iterations = state["iterations"]
        # the rows are fit's prepared arrays (one-hot targets...): its loop, not its checks
        with model._epoch_runner(self.x, self.y, batch_size, []) as run:
            history = model._fit_loop(
                self.x, self.y, batch_size, epochs, 0, [], None, shuffle, 0, run
            )
        logs = {k: v[-1] for k, v in history.history.items()}
        metric_sums = [dict(m.state) for m in model._metric_objects()]  # of the last epoch
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
        super().__init__(strategy, model, [actor.remote(config, data, i, n) for i in range(n)])
        self.batch_size, self.total = batch_size, total
        self.apply = _update_program(model)

    def __call__(self, order, tracker, hooks, where):
        model = self.model
        order = np.arange(self.total) if order is None else order
        self.gather([a.set_order.remote(order) for a in self.actors], "the epoch's order", where)
        for batch, start in enumerate(range(0, len(order), self.batch_size)):
            hooks.on_train_batch_begin(batch)
            stop = min(start + self.batch_size, len(order))
            weights = runtime.ray().put(model._weight_arrays())
            parts = self.gather(
                [a.step.remote(start, stop, weights) for a in self.actors], "gradients", where
            )
            rows = sum(p[0] for p in parts)
            loss = sum(p[1] for p in parts) / rows
            try:
                self._apply(parts, rows, loss)
            except FloatingPointError as err:
                raise model._non_finite(err, batch, where) from err
            tracker.add(
                loss * rows,
                rows,
                [_summed(p[2][i] for p in parts) for i in range(len(tracker.metrics))],
            )
            hooks.on_train_batch_end(batch, tracker.logs())

    def _apply(self, parts, rows: int, loss: float) -> None:
        """The shards' gradients averaged (weighted by rows), then the compiled update."""
        if not np.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss}")
        shares = [(p[0] / rows, p[3]) for p in parts if p[0]]
        grads = [sum(share * g[k] for share, g in shares) for k in range(len(shares[0][1]))]
        fn, opt = self.apply, self.model.optimizer
        slots = [v.value for v in opt.variables]
        scalars = opt.scalar_values(fn.scalars, fn.program.dtype)
        with self.model._interrupts:
            fn(*self.model._weight_arrays(), *grads, *slots, *scalars)
            opt.iterations += 1


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
            strategy, model, [actor.remote(config, data, i, n, seed) for i in range(n)]
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
        metric_sums = [_summed(p[3][i] for p in parts) for i in range(len(tracker.metrics))]
        tracker.add(sum(p[0] * p[1]["loss"] for p in parts), rows, metric_sums)
