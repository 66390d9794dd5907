"""symgrad.distributed: sweeps and data-parallel training on Ray (``pip install "symgrad[ray]"``).

- :func:`sweep` -- many trainings over a space of hyperparameters, each worker
  compiling each model structure once; results as a table, best first.  Its workers
  stay for the next sweep until :func:`shutdown` (or the end of :func:`kept_workers`).
- :class:`DataParallel` -- ``model.fit(..., strategy=DataParallel(num_workers=2))``:
  synchronous gradient averaging, or local SGD (parameters averaged every round).
- :class:`Population` -- K copies of one model (own hyperparameters and seeds) trained
  in one native call per epoch; ``sweep(..., population=K)`` uses it on each worker.
- :func:`trainable` -- the same trials driven by Ray Tune (search algorithms,
  ASHA early stopping), reporting every epoch with ``tune.report``.

Ray is imported on first use, never by ``import symgrad``; see docs/distributed.md.
"""

from symgrad.distributed.data_parallel import DataParallel
from symgrad.distributed.population import MemberNonFinite, Population
from symgrad.distributed.runtime import WorkerLost, init
from symgrad.distributed.sweep import SweepResults, sweep
from symgrad.distributed.trials import TrialRunner, expand
from symgrad.distributed.tune import trainable
from symgrad.distributed.workers import kept_workers, shutdown

__all__ = [
    "DataParallel",
    "MemberNonFinite",
    "Population",
    "SweepResults",
    "TrialRunner",
    "WorkerLost",
    "expand",
    "init",
    "kept_workers",
    "shutdown",
    "sweep",
    "trainable",
]
