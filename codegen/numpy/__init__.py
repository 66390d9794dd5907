"""codegen.numpy: the NumPy backend. A ``codegen.ir.Program`` becomes Python source.

- :mod:`~codegen.numpy.backend`: the module writer and the compiled function;
- :mod:`~codegen.numpy.scalar`: scalar bodies lowered to NumPy ufunc calls;
- :mod:`~codegen.numpy.pyformat`: lays generated text out as ``ruff format`` would.
"""

from codegen.numpy.backend import (
    CHECKS,
    ERF,
    NumpyFunction,
    NumpyFunctionSource,
    compile_program,
    module_header,
    numpy_function,
    numpy_source,
)

__all__ = [
    "CHECKS",
    "ERF",
    "NumpyFunction",
    "NumpyFunctionSource",
    "compile_program",
    "module_header",
    "numpy_function",
    "numpy_source",
]
