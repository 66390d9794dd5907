"""symgrad.ops: operations on tape tensors (defined in :mod:`symgrad.nn.ops`)."""

from symgrad.nn.ops import *  # noqa: F403
from symgrad.nn.ops import __all__  # noqa: F401
