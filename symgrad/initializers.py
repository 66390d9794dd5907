"""symgrad.initializers: weight initializers (defined in :mod:`symgrad.nn.initializers`)."""

from symgrad.nn.initializers import (
    INITIALIZERS,
    Constant,
    GlorotNormal,
    GlorotUniform,
    HeNormal,
    HeUniform,
    Initializer,
    LecunNormal,
    LecunUniform,
    Ones,
    RandomNormal,
    RandomUniform,
    VarianceScaling,
    Zeros,
    get,
    name_of,
)

__all__ = [
    "INITIALIZERS",
    "Constant",
    "get",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "name_of",
    "Ones",
    "RandomNormal",
    "RandomUniform",
    "VarianceScaling",
    "Zeros",
]
