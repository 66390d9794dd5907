"""symgrad.distributed.workers: a sweep's Ray actors, kept between the sweeps of one driver.

Starting a worker is the dearest part of a short sweep: a process, ``import symgrad``
(SymPy, llvmlite), then one compilation per model structure.  So the actors a sweep
starts stay alive when it ends, holding their compiled programs, and the next sweep
of this driver on the same cluster takes them again:

- a worker keeps the compiled models (and populations) of the last
  :data:`KEPT_BUILDS` ``(build, compile settings)`` it ran, by a digest of their
  pickled bytes; a later sweep of the same build finds its structures compiled and
  resets them per trial, as within one sweep;
- the data, ``build`` and the settings of one sweep go into the object store once
  (one ``ray.put``); each worker fetches them once per sweep;
- the kept workers hold their CPU (one each) until :func:`shutdown`, the end of a
  ``with kept_workers():`` block, ``sweep(..., keep_workers=False)``, ``ray.shutdown()``
  or the end of the driver (they are not detached); a ``DataParallel`` fit and a Tune
  trainable release them first, as they need those CPUs.

A kept worker that died since is found when the next sweep loads it, and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence

from symgrad.distributed import population as population_module
from symgrad.distributed import runtime, trials
from symgrad.nn.recent import Recent

KEPT_BUILDS = 4
"""How many builds' compiled programs a worker keeps (the oldest is dropped first)."""


class Trials:
    """A sweep's trials in one process: trials alone, or groups as populations of ``population``."""

    def __init__(
        self, build: Callable, settings: Mapping, data, fit_args: Mapping, population: int = 1,
        programs: tuple[dict, dict] | None = None,
    ):  # fmt: skip
        x, y, validation_data = data
        models, populations = programs if programs is not None else ({}, {})
        args = dict(fit_args, validation_data=validation_data)
        self.runner = trials.TrialRunner(build, settings, x, y, args, models)
        self.populations = population_module.PopulationRunner(self.runner, population, populations)

    def run_group(self, indexed: Sequence[tuple[int, Mapping]]) -> list[dict]:
        """The rows of a group of trials: one trial alone, several as one population."""
        if len(indexed) == 1:
            return [self.runner.run(*indexed[0])]
        return self.populations.run(indexed)


class SweepWorker:
    """A sweep's Ray actor: the trials of the sweep it last loaded, and the compiled
    programs of the last :data:`KEPT_BUILDS` builds."""

    def __init__(self):
        self.started = time.time()  # symgrad imported: this module is the actor's class
        runtime.use_assigned_cpus()
        self.programs = Recent(KEPT_BUILDS)  # digest -> this build's programs
        self.token, self.trials = None, None

    def threads(self) -> int:
        """The threads this worker's programs split over (the CPUs Ray assigned it)."""
        from symgrad.environment import config

        return config().threads

    def load(self, token: str, digest: str, box: list, timeout: float) -> tuple:
        """Take the sweep ``token`` (its payload is ``box[0]``, a reference not resolved by
        Ray on the call): (seconds it took, 0 when it was loaded already; whether it ran
        an earlier sweep; when this worker started, as ``time.time()``)."""
        if token == self.token:
            return 0.0, True, self.started
        start, earlier = time.perf_counter(), self.token is not None
        build, settings, data, fit_args, population = runtime.ray().get(box[0], timeout=timeout)
        programs = self.programs.get(digest, lambda: ({}, {}))
        self.trials = Trials(build, settings, data, fit_args, population, programs)
        self.token = token
        return time.perf_counter() - start, earlier, self.started

    def run(self, token: str, digest: str, box: list, timeout: float, jobs: list, report: float):
        """The rows of the jobs in turn, streamed (a Ray streaming task): each item is a list
        holding the rows of each job done since the last item.  An item goes out once
        ``report`` seconds have passed since the last one, and at the end: every message
        costs the driver's process about a millisecond of a CPU the workers could use, so
        short jobs go back in bundles.  ``report=0`` sends each job's rows alone, so the
        driver knows which job a worker was in when it died."""
        self.load(token, digest, box, timeout)
        done, last = [], time.monotonic()
        for indexed in jobs:
            done.append(self.trials.run_group(indexed))
            if time.monotonic() - last >= report:
                yield done
                done, last = [], time.monotonic()
        if done:
            yield done


def digest(r, build: Callable, settings: Mapping) -> str:
    """What a worker keeps compiled programs by: the pickled ``build`` and settings."""
    return hashlib.sha256(r.cloudpickle.dumps((build, dict(settings)))).hexdigest()


class _Kept:
    """This driver's kept workers, on the cluster (address and job) that started them."""

    def __init__(self):
        self.cluster, self.actor, self.actors = None, None, []


_KEPT = _Kept()


def _cluster(r) -> tuple:
    context = r.get_runtime_context()
    return (context.gcs_address, context.get_job_id())


def acquire(r, count: int) -> list:
    """``count`` workers: kept ones first, new ones started (and kept) for the rest."""
    here = _cluster(r)
    if _KEPT.cluster != here:  # another cluster, or ray.init again: those actors are gone
        _KEPT.cluster, _KEPT.actors = here, []
        _KEPT.actor = r.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(SweepWorker)
    new = max(0, count - len(_KEPT.actors))
    _KEPT.actors += [_KEPT.actor.remote() for _ in range(new)]
    return list(_KEPT.actors[:count])


def replace(r, old):
    """A new worker in place of ``old`` (dead, or killed for its time), kept in its place."""
    r.kill(old, no_restart=True)
    new = _KEPT.actor.remote()
    _KEPT.actors = [new if a is old else a for a in _KEPT.actors]
    return new


def drop(r, actors: Sequence) -> None:
    """Kill ``actors`` (busy when a sweep stopped) and keep them no more."""
    for a in actors:
        r.kill(a, no_restart=True)
    _KEPT.actors = [a for a in _KEPT.actors if all(a is not b for b in actors)]


def shutdown() -> None:
    """End the sweep workers this driver keeps (Ray itself stays up); a no-op when none are."""
    actors, _KEPT.actors = _KEPT.actors, []
    if not actors:
        return
    r = runtime.ray()
    if r.is_initialized() and _cluster(r) == _KEPT.cluster:
        for a in actors:
            r.kill(a, no_restart=True)


@contextlib.contextmanager
def kept_workers():
    """Sweeps in the block share their workers and compiled programs; they end with it.

    >>> with kept_workers():
    ...     first = sweep(build, space, x, y, compile=settings, num_workers=2)
    ...     second = sweep(build, other_space, x, y, compile=settings, num_workers=2)
    """
    try:
        yield
    finally:
        shutdown()
