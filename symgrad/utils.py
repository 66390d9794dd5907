"""symgrad.utils: Keras's utilities -- ``to_categorical``, ``set_random_seed``, ``Sequence``.

(Defined in :mod:`symgrad.nn.inputs` and :mod:`symgrad.nn.seeds`.)
"""

from symgrad.nn.inputs import Sequence, to_categorical
from symgrad.nn.seeds import set_random_seed

__all__ = ["Sequence", "set_random_seed", "to_categorical"]
