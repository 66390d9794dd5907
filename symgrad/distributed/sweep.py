"""symgrad.distributed.sweep: many trainings on a Ray cluster, one compilation per structure.

Each worker is a Ray actor holding a :class:`~symgrad.distributed.trials.TrialRunner`:
it receives the user's ``build`` function, the compile settings and the data
(once, through the object store), compiles each distinct model structure the
first time a trial of it arrives -- or finds its code in its own disk cache
(``codegen.cache``) -- and reuses the compiled program for every further trial
that differs only in runtime values.  Native code never leaves the machine that
compiled it; what travels is ``build`` (pickled Python), trials and result rows.

A worker that dies (or runs a trial past ``trial_timeout``) is replaced; the trial
it was running is retried up to ``max_retries`` times, then reported ``failed``
with its hyperparameters, and the sweep goes on.  Every wait has a timeout.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from symgrad.distributed import population as population_module
from symgrad.distributed import runtime, trials
from symgrad.nn import validation

POLL = 1.0
"""Seconds between the driver's checks of trial timeouts while it waits for results."""


class SweepResults(Sequence):
    """The rows of a sweep, best first: one dict per trial.

    Each row has ``trial`` (its index in the space), ``hp``, ``status`` (``ok``,
    ``non_finite``, ``error`` or ``failed`` -- its worker died ``attempts`` times),
    ``error``, ``metrics`` (the last epoch's logs), ``history`` (per-epoch lists),
    ``seconds``, ``worker`` (pid) and ``compiled`` (whether the trial paid a compilation).

    >>> results = sweep(build, {"learning_rate": [0.1, 0.01]}, x, y, compile={...})
    >>> results.best["hp"], results.best["metrics"]["val_loss"]
    >>> print(results)  # the table
    """

    def __init__(self, rows, metric: str, mode: str, seconds: float, workers: int):
        self.metric, self.mode = metric, mode
        self.seconds, self.workers = seconds, workers
        self.rows = _ranked(list(rows), metric, mode)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    @property
    def best(self) -> dict:
        return self.rows[0]

    @property
    def compilations(self) -> int:
        """Trials that compiled their structure (at most structures x workers)."""
        return sum(bool(r["compiled"]) for r in self.rows)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "ok"]

    def sorted(self, by: str | None = None, mode: str = "auto") -> SweepResults:
        """The rows ranked by another metric (``mode``: ``min``, ``max``, ``auto``)."""
        by = by or self.metric
        return SweepResults(self.rows, by, _mode(by, mode), self.seconds, self.workers)

    def to_pandas(self):
        """A DataFrame, one row per trial: hyperparameters, final metrics, status."""
        import pandas  # an optional extra of the user's

        return pandas.DataFrame([_flat(r) for r in self.rows])

    def table(self, limit: int | None = None) -> str:
        """The rows as aligned text: trial, hyperparameters, final metrics, status."""
        rows = [_flat(r) for r in self.rows[:limit]]
        columns = list(dict.fromkeys(k for r in rows for k in r))
        cells = [[_cell(r.get(c)) for c in columns] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (
            f"<SweepResults {len(self)} trials, {len(self.failed)} not ok, best {self.metric}="
            f"{self.best['metrics'].get(self.metric) if self.rows else None}>"
        )


def _mode(metric: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
    if mode == "auto":  # as Keras's callbacks: accuracies grow, everything else shrinks
        return "max" if "acc" in metric else "min"
    return mode


def _ranked(rows: list[dict], metric: str, mode: str) -> list[dict]:
    """Rows with a finite ``metric`` best first (ties by trial), then the others by trial."""

    def rank(row):
        value = row["metrics"].get(metric) if row["status"] == "ok" else None
        if value is None or not math.isfinite(value):
            return (1, 0.0, row["trial"])
        return (0, -value if mode == "max" else value, row["trial"])

    return sorted(rows, key=rank)


def _flat(row: dict) -> dict:
    return {
        "trial": row["trial"],
        **row["hp"],
        **row["metrics"],
        "status": row["status"],
        "attempts": row.get("attempts", 1),
        "compiled": row["compiled"],
    }


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class SweepWorker:
    """A sweep's Ray actor: a TrialRunner over the data it received once."""

    def __init__(self, build: Callable, settings: Mapping, data, fit_args: Mapping):
        x, y, validation_data = data
        args = dict(fit_args, validation_data=validation_data)
        self.runner = trials.TrialRunner(build, settings, x, y, args)
        self.populations = population_module.PopulationRunner(self.runner)

    def run(self, trial: int, hp: Mapping) -> dict:
        return self.runner.run(trial, hp)

    def run_group(self, indexed: Sequence[tuple[int, Mapping]]) -> list[dict]:
        """The rows of a group of trials: one trial alone, several as one population."""
        if len(indexed) == 1:
            return [self.run(*indexed[0])]
        return self.populations.run(indexed)


def sweep(
    build: Callable,
    space,
    x,
    y,
    *,
    compile: Mapping,  # noqa: A002 - the settings of model.compile, by that name
    epochs: int = 1,
    batch_size: int = 32,
    validation_data=None,
    shuffle: bool = True,
    metric: str | None = None,
    mode: str = "auto",
    num_workers: int | None = None,
    max_retries: int = 1,
    trial_timeout: float = 600.0,
    population: int = 1,
) -> SweepResults:
    """Train one model per trial of ``space`` on a Ray cluster; the rows come back best first.

    ``build(hp)`` returns an uncompiled model for a trial (a dict: one value per key of
    ``space``); ``compile`` holds the compile arguments shared by all trials
    (``optimizer``, ``loss``, ``metrics``, ``backend``, ``dtype``).  A trial's
    ``optimizer`` key replaces the optimizer, its keys named as the optimizer's
    hyperparameters (``learning_rate``, ``momentum``...) set them, ``seed`` seeds
    compile, ``epochs`` / ``batch_size`` override fit's.  ``metric`` ranks the rows
    (default ``val_loss`` with validation data, else ``loss``).

    ``num_workers``: Ray actors to run trials on (default: the cluster's CPUs); ``0``
    runs the trials one after the other in this process, without Ray.

    ``population=K`` trains trials of one compiled step in groups of up to K as one
    :class:`~symgrad.distributed.population.Population` (one native call per epoch for
    the group); it needs ``shuffle=False`` (the members share one batch order), and every
    row is still the trial's solo row.  ``trial_timeout`` then applies to a group.

    >>> from symgrad.distributed import sweep
    >>> space = {"learning_rate": [0.3, 0.1, 0.03], "momentum": [0.0, 0.9], "seed": range(4)}
    >>> results = sweep(build, space, x, y, compile={"optimizer": "sgd", "loss": "mse"},
    ...                 epochs=10, validation_data=(x_val, y_val))
    >>> print(results.table(limit=5))
    """
    settings = trials.check_compile_settings(compile)
    plan = trials.expand(space)
    epochs = validation.non_negative_int(epochs, "epochs")
    batch_size = validation.positive_int(batch_size, "batch_size")
    max_retries = validation.non_negative_int(max_retries, "max_retries")
    population = validation.positive_int(population, "population")
    if population > 1 and shuffle:
        raise ValueError(
            "population=K trains its members in one batch order, so each row equals its "
            "trial's solo run only without shuffling: pass shuffle=False. "
            f"Received: population={population}, shuffle=True"
        )
    if not (isinstance(trial_timeout, (int, float)) and trial_timeout > 0):
        raise ValueError(
            f"trial_timeout must be a number of seconds > 0. Received: {trial_timeout!r}"
        )
    metric = metric or ("val_loss" if validation_data is not None else "loss")
    mode = _mode(metric, mode)
    fit_args = {"epochs": epochs, "batch_size": batch_size, "shuffle": shuffle}
    start = time.perf_counter()
    jobs = population_module.groups(build, settings, plan, population, np.shape(x)[1:])
    if num_workers == 0:
        worker = SweepWorker(build, settings, (x, y, validation_data), fit_args)
        rows = [row for job in jobs for row in worker.run_group([(i, plan[i]) for i in job])]
        return SweepResults(rows, metric, mode, time.perf_counter() - start, 0)
    r = runtime.init()
    if num_workers is None:
        num_workers = max(1, int(r.cluster_resources().get("CPU", 1)))
    num_workers = validation.positive_int(num_workers, "num_workers")
    data = r.put((x, y, validation_data))
    actor = r.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(SweepWorker)
    spawn = lambda: actor.remote(build, settings, data, fit_args)  # noqa: E731
    pool = _Pool(r, [spawn() for _ in range(min(num_workers, len(jobs)) or 1)], spawn)
    rows = pool.run(plan, jobs, max_retries, float(trial_timeout))
    return SweepResults(rows, metric, mode, time.perf_counter() - start, num_workers)


class _Pool:
    """The driver's side of a sweep: one job (a trial, or a group trained as one population)
    at a time on each actor, dead actors replaced.

    A worker is sent its next job only once the driver holds the last one's rows, so
    when it dies the job it was running is known exactly: a result in flight at the
    moment of death can never be confused with the one that killed it.
    """

    def __init__(self, r, actors: list, spawn: Callable):
        self.r, self.actors, self.spawn = r, actors, spawn
        self.running: list[tuple | None] = [None for _ in actors]  # (ref, job) per actor
        self.started = [time.monotonic() for _ in actors]  # when its current job began

    def run(
        self, plan: list[dict], jobs: list[list[int]], max_retries: int, timeout: float
    ) -> list[dict]:
        self.plan, self.jobs = plan, jobs
        queue = deque(range(len(jobs)))
        attempts = [0] * len(jobs)
        rows: dict[int, dict] = {}
        while queue or any(self.running):
            self._fill(queue)
            refs = [job[0] for job in self.running if job]
            ready, _ = self.r.wait(refs, num_returns=1, timeout=POLL)
            for ref in ready:
                a = next(i for i, job in enumerate(self.running) if job and job[0] == ref)
                job = self.running[a][1]
                try:
                    done = self.r.get(ref, timeout=timeout)
                except runtime.lost_errors() as err:
                    self._lost(a, queue, attempts, rows, max_retries, type(err).__name__)
                    continue
                self.running[a] = None
                for row in done:
                    row["attempts"] = attempts[job] + 1
                    rows[row["trial"]] = row
            now = time.monotonic()
            for a, job in enumerate(self.running):
                if job and now - self.started[a] > timeout:
                    self.r.kill(self.actors[a], no_restart=True)
                    why = f"no result within trial_timeout={timeout:g} s"
                    self._lost(a, queue, attempts, rows, max_retries, why)
        return [rows[i] for i in range(len(plan))]

    def _fill(self, queue: deque) -> None:
        for a, job in enumerate(self.running):
            if queue and job is None:
                j = queue.popleft()
                indexed = [(i, self.plan[i]) for i in self.jobs[j]]
                self.started[a] = time.monotonic()
                self.running[a] = (self.actors[a].run_group.remote(indexed), j)

    def _lost(self, a, queue, attempts, rows, max_retries, why: str) -> None:
        """Actor ``a`` is gone: the job it was running is retried first, or its trials failed."""
        job = self.running[a][1]
        attempts[job] += 1
        if attempts[job] > max_retries:
            for trial in self.jobs[job]:
                rows[trial] = {
                    "trial": trial,
                    "hp": dict(self.plan[trial]),
                    "status": "failed",
                    "error": f"its worker was lost {attempts[job]} times ({why})",
                    "attempts": attempts[job],
                    "history": {},
                    "metrics": {},
                    "compiled": False,
                    "worker": None,
                    "seconds": None,
                }
        else:
            queue.appendleft(job)
        self.actors[a], self.running[a] = self.spawn(), None
        self.started[a] = time.monotonic()
