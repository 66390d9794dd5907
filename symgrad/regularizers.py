"""symgrad.regularizers: weight and activity penalties (defined in :mod:`symgrad.nn.regularizers`).

Keras's names: ``L1(l1=0.01)``, ``L2(l2=0.01)``, ``L1L2(l1=0.0, l2=0.0)`` and their
lowercase aliases ``l1``, ``l2``, ``l1_l2``; the string identifiers ``"l1"``,
``"l2"`` and ``"l1_l2"`` (0.01 each).
"""

from symgrad.nn.regularizers import (
    L1,
    L1L2,
    L2,
    REGULARIZERS,
    Regularizer,
    from_config,
    get,
    serialize,
)

l1, l2, l1_l2 = L1, L2, L1L2  # Keras exports both spellings of each class

__all__ = [
    "REGULARIZERS",
    "L1",
    "L1L2",
    "L2",
    "Regularizer",
    "from_config",
    "get",
    "l1",
    "l1_l2",
    "l2",
    "serialize",
]
