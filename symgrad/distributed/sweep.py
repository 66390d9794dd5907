"""symgrad.distributed.sweep: many trainings on a Ray cluster, one compilation per structure.

Each worker is a Ray actor (:class:`~symgrad.distributed.workers.SweepWorker`): it
receives the user's ``build`` function, the compile settings and the data (once per
sweep, through the object store), compiles each distinct model structure the first
time a trial of it arrives -- or finds its code in its own disk cache
(``codegen.cache``) -- and reuses the compiled program for every further trial that
differs only in runtime values.  The workers stay alive between the sweeps of one
driver, with their compiled programs (:mod:`symgrad.distributed.workers`).  Native
code never leaves the machine that compiled it; what travels is ``build`` (pickled
Python), the data, chunks of trials and result rows.

A worker that dies (or runs a trial past ``trial_timeout``) is replaced; the trial
it was running is retried up to ``max_retries`` times, then reported ``failed``
with its hyperparameters, and the sweep goes on.  Every wait has a timeout.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from symgrad.distributed import population as population_module
from symgrad.distributed import runtime, trials, workers
from symgrad.nn import validation

POLL = 1.0
"""Seconds between the driver's checks of trial timeouts while it waits for results."""

CHUNK = 16
"""The most jobs sent to a worker in one task."""

REPORT = 0.25
"""Seconds a worker gathers the rows of the jobs it finished before it sends them (at the
latest, the end of its chunk): each message costs the driver's process about a
millisecond of CPU, taken from the workers when they share its machine."""


class SweepResults(Sequence):
    """The rows of a sweep, best first: one dict per trial.

    Each row has ``trial`` (its index in the space), ``hp``, ``status`` (``ok``,
    ``non_finite``, ``error`` or ``failed`` -- its worker died ``attempts`` times),
    ``error``, ``metrics`` (the last epoch's logs), ``history`` (per-epoch lists),
    ``seconds``, ``worker`` (pid), ``compiled`` (whether the trial paid a compilation) and
    ``compile_seconds``.

    >>> results = sweep(build, {"learning_rate": [0.1, 0.01]}, x, y, compile={...})
    >>> results.best["hp"], results.best["metrics"]["val_loss"]
    >>> print(results)  # the table
    """

    def __init__(self, rows, metric: str, mode: str, seconds: float, workers: int):
        self.metric, self.mode = metric, mode
        self.seconds, self.workers = seconds, workers
        self.rows = _ranked(list(rows), metric, mode)
        # on Ray: workers_started / workers_reused, spawn_seconds (the slowest new worker's
        # process start and imports), load_seconds (the slowest worker's fetch of the data
        # and build), start_seconds (from the call until every worker had loaded the sweep)
        self.timings: dict = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    @property
    def best(self) -> dict:
        return self.rows[0]

    @property
    def compilations(self) -> int:
        """Trials that compiled their structure: at most structures x workers, none for a
        structure its kept workers compiled in an earlier sweep."""
        return sum(bool(r["compiled"]) for r in self.rows)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "ok"]

    def sorted(self, by: str | None = None, mode: str = "auto") -> SweepResults:
        """The rows ranked by another metric (``mode``: ``min``, ``max``, ``auto``)."""
        by = by or self.metric
        out = SweepResults(self.rows, by, _mode(by, mode), self.seconds, self.workers)
        out.timings = self.timings
        return out

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
    keep_workers: bool = True,
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
    row is still the trial's solo row.  ``trial_timeout`` then applies to a group.  A
    group of fewer than K trials is padded with copies of its first (their rows dropped),
    so each structure compiles one population.

    The Ray workers stay alive after the sweep with their compiled programs
    (:mod:`symgrad.distributed.workers`): a later sweep of this process on the same
    cluster reuses them (fewer compilations, no start-up) until
    :func:`~symgrad.distributed.workers.shutdown`; ``keep_workers=False`` ends them with
    this sweep.

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
    data = (x, y, validation_data)
    if num_workers == 0:
        here = workers.Trials(build, settings, data, fit_args, population)
        rows = [row for job in jobs for row in here.run_group([(i, plan[i]) for i in job])]
        return SweepResults(rows, metric, mode, time.perf_counter() - start, 0)
    r = runtime.init()
    if num_workers is None:
        num_workers = max(1, int(r.cluster_resources().get("CPU", 1)))
    num_workers = validation.positive_int(num_workers, "num_workers")
    box = [r.put((build, settings, data, fit_args, population))]  # once: every worker reads it
    context = (uuid.uuid4().hex, workers.digest(r, build, settings), box, float(trial_timeout))
    pool = _Pool(r, workers.acquire(r, min(num_workers, len(jobs)) or 1), context)
    try:
        pool.load()
        pool.timings["start_seconds"] = time.perf_counter() - start
        rows = pool.run(plan, jobs, max_retries)
    except BaseException:
        workers.drop(r, pool.busy())  # a kept worker must not go on with a sweep no one reads
        raise
    finally:
        if not keep_workers:
            workers.shutdown()
    results = SweepResults(rows, metric, mode, time.perf_counter() - start, num_workers)
    results.timings = pool.timings
    return results


class _Slot:
    """What an actor is running: a chunk of jobs, their rows streamed back in bundles (each
    job's alone when ``exact``)."""

    def __init__(self, stream, jobs: list[int], exact: bool):
        self.stream, self.jobs, self.done, self.exact = stream, jobs, 0, exact
        self.since = time.monotonic()  # when the last bundle came back

    @property
    def job(self) -> int:
        return self.jobs[self.done]


class _Pool:
    """The driver's side of a sweep on Ray: chunks of jobs (a job: a trial, or a group
    trained as one population) on each actor, dead actors replaced.

    An actor runs one chunk at a time and streams back the rows of the jobs it has
    finished every :data:`REPORT` seconds, so the driver knows the jobs an actor was in
    when it died or ran past the timeout: the rest of its chunk.  When that is one job,
    it is charged an attempt and the others go back to the queue.  When it is more, the
    job it was running is one of them: they all go back uncharged, *in doubt*, and run
    again one job per chunk, where a loss is charged to its job exactly.  Chunks shrink as the queue does (a share of what is left per actor, at most
    :data:`CHUNK`), so the actors finish together.
    """

    def __init__(self, r, actors: list, context: tuple):
        self.r, self.actors, self.context = r, actors, context
        self.timeout = context[-1]
        self.running: list[_Slot | None] = [None for _ in actors]
        self.doubt: set[int] = set()  # jobs of a lost bundle: each one's rows sent alone
        self.timings: dict = {"workers_started": 0}

    def load(self) -> None:
        """Every actor loads the sweep (a dead kept one is replaced, once), within the timeout."""
        called = time.time()
        refs = [a.load.remote(*self.context) for a in self.actors]
        loaded = []
        for a, ref in enumerate(refs):
            try:
                loaded.append(runtime.get(ref, self.timeout, "loading the sweep", worker=a))
            except runtime.WorkerLost:
                self._replace(a)
                ref = self.actors[a].load.remote(*self.context)
                loaded.append(runtime.get(ref, self.timeout, "loading the sweep", worker=a))
        reused = sum(earlier for _, earlier, _ in loaded)
        self.timings.update(workers_started=len(loaded) - reused, workers_reused=reused)
        self.timings["load_seconds"] = max(seconds for seconds, _, _ in loaded)
        # a new worker's process start and imports: from this call to its __init__ (one
        # clock on one machine; across machines, as far as their clocks agree)
        self.timings["spawn_seconds"] = max(
            [0.0, *(started - called for _, earlier, started in loaded if not earlier)]
        )

    def busy(self) -> list:
        return [a for a, slot in zip(self.actors, self.running) if slot is not None]

    def run(self, plan: list[dict], jobs: list[list[int]], max_retries: int) -> list[dict]:
        self.plan, self.jobs = plan, jobs
        queue = deque(range(len(jobs)))
        attempts = [0] * len(jobs)
        rows: dict[int, dict] = {}
        while queue or any(self.running):
            self._fill(queue)
            streams = [slot.stream for slot in self.running if slot]
            ready, _ = self.r.wait(streams, num_returns=1, timeout=POLL)
            for stream in ready:
                a = next(i for i, s in enumerate(self.running) if s and s.stream is stream)
                try:
                    bundle = self.r.get(next(stream), timeout=self.timeout)
                except runtime.lost_errors() as err:
                    self._lost(a, queue, attempts, rows, max_retries, type(err).__name__)
                    continue
                slot = self.running[a]
                for done in bundle:
                    for row in done:
                        row["attempts"] = attempts[slot.job] + 1
                        rows[row["trial"]] = row
                    self.doubt.discard(slot.job)
                    slot.done += 1
                slot.since = time.monotonic()
                if slot.done == len(slot.jobs):
                    self.running[a] = None
            now = time.monotonic()
            for a, slot in enumerate(self.running):
                # a bundle waits up to REPORT seconds after a job that ended in time
                if slot and now - slot.since > self.timeout + (0.0 if slot.exact else REPORT):
                    why = f"no result within trial_timeout={self.timeout:g} s"
                    self._lost(a, queue, attempts, rows, max_retries, why)
        return [rows[i] for i in range(len(plan))]

    def _fill(self, queue: deque) -> None:
        for a, slot in enumerate(self.running):
            if queue and slot is None:
                share = -(-len(queue) // (2 * len(self.actors)))
                exact = queue[0] in self.doubt
                # a job in doubt runs in a chunk of its own: a worker may die after sending
                # a job's row and before the driver has it, which would charge that job
                size = 1 if exact else min(max(1, share), CHUNK)
                chunk = []  # jobs in doubt and the others go in separate chunks
                while queue and len(chunk) < size and (queue[0] in self.doubt) == exact:
                    chunk.append(queue.popleft())
                indexed = [[(i, self.plan[i]) for i in self.jobs[j]] for j in chunk]
                run = self.actors[a].run.options(num_returns="streaming")
                report = 0.0 if exact else REPORT
                self.running[a] = _Slot(run.remote(*self.context, indexed, report), chunk, exact)

    def _replace(self, a: int) -> None:
        self.actors[a] = workers.replace(self.r, self.actors[a])
        self.timings["workers_started"] += 1

    def _lost(self, a, queue, attempts, rows, max_retries, why: str) -> None:
        """Actor ``a`` is gone: the job it was in is retried first (or its trials failed), the
        rest of its chunk after it; when that job is not known, they all go back in doubt."""
        slot = self.running[a]
        left = slot.jobs[slot.done :]
        self._replace(a)
        self.running[a] = None
        if not slot.exact and len(left) > 1:
            self.doubt.update(left)
            queue.extendleft(reversed(left))
            return
        job, rest = left[0], left[1:]
        queue.extendleft(reversed(rest))
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
                    "compile_seconds": 0.0,
                    "worker": None,
                    "seconds": None,
                }
        else:
            queue.appendleft(job)
