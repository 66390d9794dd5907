"""symgrad.expr: tensor-level SymPy graphs (the public name of :mod:`symgrad.core`).

Every value is a matrix (``MatrixExpr``): data and weights are ``MatrixSymbol``s,
the batch size is the SymPy symbol ``n``.  SymPy supplies ``MatMul``, ``MatAdd``,
``HadamardProduct``, ``Transpose`` and scalar multiples; symgrad adds the nodes SymPy
lacks (elementwise maps of scalar ``Lambda``s, broadcasts, sums, row softmax, names)
and smart constructors that check shapes and fold trivial algebra.

Example::

    >>> from symgrad import expr as E
    >>> n = E.batch()
    >>> X, W, b = E.matrix("X", n, 3), E.matrix("W", 3, 2), E.matrix("b", 1, 2)
    >>> Z = E.name("Z", E.add_bias(E.matmul(X, W), b))
    >>> A = E.name("A", E.apply("sigmoid", Z))
    >>> A.shape
    (n, 2)
"""

from symgrad.core import *  # noqa: F403
from symgrad.core import __all__  # noqa: F401
