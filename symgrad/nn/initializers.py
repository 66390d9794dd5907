"""symgrad.nn.initializers: starting values of weights, with Keras's names and formulas.

An initializer maps ``(shape, rng)`` to a float64 NumPy array; the model casts
it to its compute dtype.  The model passes one ``np.random.Generator`` seeded
from ``compile(seed=...)`` and draws the weights in layer order, so the same seed
gives bit-identical weights.  An initializer built with its own ``seed`` ignores
the model's generator (as ``keras.initializers.GlorotUniform(seed=1)``).

Example::

    >>> from symgrad import initializers
    >>> init = initializers.get("glorot_uniform")
    >>> init((3, 4), np.random.default_rng(0)).shape
    (3, 4)
"""

from __future__ import annotations

import numpy as np

from symgrad.nn import seeds
from symgrad.nn.validation import from_identifier

Shape = tuple[int, int]


def _fans(shape: Shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a (inputs, units) kernel; a (1, units) bias counts as (1, units);
    a convolution kernel (kh, kw, C, F) as Keras counts it: (kh*kw*C, kh*kw*F)."""
    receptive = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    return receptive * int(shape[-2]), receptive * int(shape[-1])


def _truncated_normal(rng: np.random.Generator, shape: Shape, stddev: float) -> np.ndarray:
    """Normal(0, stddev) redrawn until within two standard deviations (Keras's truncation)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * stddev


# Keras scales truncated normals so their variance matches the untruncated target.
_TRUNCATION_STD = 0.87962566103423978


class Initializer:
    """Base class: ``__call__(shape, rng) -> float64 array``."""

    def __init__(self, seed: int | None = None):
        self.seed = seed

    def __call__(self, shape: Shape, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.seed is not None or rng is None:  # unseeded: set_random_seed's stream
            rng = seeds.generator(self.seed)
        return np.asarray(self.sample(tuple(int(s) for s in shape), rng), dtype=np.float64)

    def sample(self, shape: Shape, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def sample(self, shape, rng):
        return np.zeros(shape)


class Ones(Initializer):
    def sample(self, shape, rng):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value: float = 0.0):
        super().__init__()
        self.value = float(value)

    def sample(self, shape, rng):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class RandomUniform(Initializer):
    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def sample(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def sample(self, shape, rng):
        return self.mean + self.stddev * rng.standard_normal(shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class VarianceScaling(Initializer):
    """Keras's family: variance ``scale / fan`` with ``fan`` = fan_in, fan_out or their mean."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode must be fan_in, fan_out or fan_avg. Received: mode={mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                "distribution must be truncated_normal, untruncated_normal or uniform. "
                f"Received: distribution={distribution!r}"
            )
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def sample(self, shape, rng):
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = np.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape)
        if self.distribution == "untruncated_normal":
            return np.sqrt(variance) * rng.standard_normal(shape)
        return _truncated_normal(rng, shape, np.sqrt(variance) / _TRUNCATION_STD)

    def get_config(self):
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }


def _variance_scaling(name: str, scale: float, mode: str, distribution: str) -> type:
    def __init__(self, seed: int | None = None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}

    doc = f"Keras's {name}: VarianceScaling(scale={scale}, mode={mode!r}, distribution={distribution!r})."
    return type(
        name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config, "__doc__": doc}
    )


GlorotUniform = _variance_scaling("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _variance_scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _variance_scaling("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _variance_scaling("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _variance_scaling("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _variance_scaling("LecunNormal", 1.0, "fan_in", "truncated_normal")


INITIALIZERS: dict[str, type] = {
    "zeros": Zeros,
    "ones": Ones,
    "constant": Constant,
    "random_uniform": RandomUniform,
    "random_normal": RandomNormal,
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform,
    "he_normal": HeNormal,
    "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal,
}


def get(identifier) -> Initializer:
    """An initializer from a name (``"he_normal"``), an instance, or a class."""
    return from_identifier(identifier, Initializer, INITIALIZERS, "initializer")


def name_of(init: Initializer) -> str:
    """The registry name of a built-in initializer (for summaries and configs)."""
    for key, cls in INITIALIZERS.items():
        if type(init) is cls:
            return key
    return type(init).__name__
