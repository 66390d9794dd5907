"""symgrad.lower: simplified matrix graphs -> a ``codegen.ir.Program``.

This is the boundary between the two packages: ``symgrad`` knows SymPy graphs,
``codegen`` knows only the IR.
"""

from symgrad.lower.lowering import lower

__all__ = ["lower"]
