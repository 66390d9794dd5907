"""symgrad.distributed.runtime: Ray, imported on first use, and waits that end.

Plain ``import symgrad`` (and ``import symgrad.distributed``) never imports Ray:
:func:`ray` does, the first time a sweep or a data-parallel fit needs a
cluster, and says how to install it when it is missing.  Every wait on a
worker goes through :func:`get` with a timeout, so a lost worker is an error,
never a hang.
"""

from __future__ import annotations

import importlib
import os

INSTALL_HINT = (
    'symgrad.distributed needs Ray: pip install "symgrad[ray]" (or pip install "ray[tune]")'
)


class WorkerLost(RuntimeError):
    """A Ray worker died (or did not answer in time) while it held part of the work.

    ``worker`` is its index among the workers, ``epoch`` the 1-based epoch it was in
    (None outside ``fit``).
    """

    def __init__(self, message: str, worker: int, epoch: int | None = None):
        super().__init__(message)
        self.worker, self.epoch = worker, epoch


def ray():
    """The ``ray`` module; ImportError with the install command when it is not installed."""
    try:
        return importlib.import_module("ray")
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT}. ({err})") from err


def init(address: str | None = None, **kwargs):
    """Connect to (or start) a cluster unless this process is connected already; returns ray.

    ``address=None`` uses ``RAY_ADDRESS`` when set, else starts a local cluster sized to the
    machine; ``"auto"`` or ``"ray://host:10001"`` joins a running one (``ray start --head``).
    """
    r = ray()
    if not r.is_initialized():
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("logging_level", "ERROR")
        r.init(address=address, **kwargs)
    return r


def lost_errors() -> tuple[type[BaseException], ...]:
    """The exceptions Ray raises for a result whose worker died or was killed."""
    exceptions = ray().exceptions
    return (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.ObjectLostError)


def get(refs, timeout: float, what: str, worker: int, epoch: int | None = None):
    """``ray.get(refs)`` within ``timeout`` seconds; a dead or silent worker is WorkerLost."""
    r = ray()
    try:
        return r.get(refs, timeout=timeout)
    except r.exceptions.GetTimeoutError as err:
        raise WorkerLost(
            f"worker {worker} did not answer within {timeout:g} s ({what})", worker, epoch
        ) from err
    except lost_errors() as err:
        raise WorkerLost(
            f"worker {worker} died ({what}): {type(err).__name__}", worker, epoch
        ) from err


def use_assigned_cpus() -> None:
    """In a Ray worker: its programs use as many threads as CPUs Ray gave it.

    Ray schedules a worker on ``num_cpus`` CPUs but lets its process run on every
    core, and symgrad's default is every core the process may use: N workers on N
    cores would each split their loops and GEMMs, and compile, over all N. An
    ``SYMGRAD_NUM_THREADS`` the worker already has (from the user's
    ``runtime_env``) wins.
    """
    if os.environ.get("SYMGRAD_NUM_THREADS"):
        return
    try:
        cpus = ray().get_runtime_context().get_assigned_resources().get("CPU", 0)
    except Exception:  # not in a worker, or an older Ray: keep the default
        return
    if cpus >= 1:
        os.environ["SYMGRAD_NUM_THREADS"] = str(int(cpus))
