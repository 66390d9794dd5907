"""symgrad.distributed: sweeps and data-parallel training on Ray (``pip install "symgrad[ray]"``).

- :func:`sweep` -- many trainings over a space of hyperparameters, each worker
  compiling each model structure once; results as a table, best first.
- :func:`trainable` -- the same trials driven by Ray Tune (search algorithms,
  ASHA early stopping), reporting every epoch with ``tune.report``.

Ray is imported on first use, never by ``import symgrad``; see docs/distributed.md.
"""

from symgrad.distributed.runtime import WorkerLost, init
from symgrad.distributed.sweep import SweepResults, sweep
from symgrad.distributed.trials import TrialRunner, expand
from symgrad.distributed.tune import trainable

__all__ = ["SweepResults", "TrialRunner", "WorkerLost", "expand", "init", "sweep", "trainable"]
