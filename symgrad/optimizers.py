"""symgrad.optimizers: optimizers whose update rules are symbolic and fused into the compiled step (defined in :mod:`symgrad.nn.optimizers`)."""

from symgrad.nn import schedules
from symgrad.nn.optimizers import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Lion,
    Nadam,
    Optimizer,
    RMSprop,
    from_config,
    get,
)

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adagrad",
    "Adam",
    "Adamax",
    "AdamW",
    "Lion",
    "Nadam",
    "from_config",
    "get",
    "Optimizer",
    "RMSprop",
    "schedules",
]
