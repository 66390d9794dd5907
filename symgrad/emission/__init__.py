"""symgrad.emission: standalone files from a compiled model or function.

- :mod:`~symgrad.emission.writer`: ``symgrad.emit`` (targets, atomic writes);
- :mod:`~symgrad.emission.python`: the NumPy-only Python module;
- :mod:`~symgrad.emission.native`: the C interface of the native targets.
"""

from symgrad.emission.writer import CPUS, TARGETS, emit

__all__ = ["CPUS", "TARGETS", "emit"]
