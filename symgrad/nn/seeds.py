"""symgrad.nn.seeds: where a model's random numbers come from, and ``set_random_seed``.

A model draws from three streams, all spawned from one ``numpy.random.SeedSequence``
per model: its initial weights (the initializers' generator), the shuffling of
``fit``, and the seed of its dropout masks (baked into the compiled step).
``compile(seed=s)`` fixes that sequence for the model. Without a seed, the sequence
is fresh entropy -- unless :func:`set_random_seed` was called: then every model
created (and every ``compile`` without a seed, every initializer called without a
generator) takes the next child of the sequence ``set_random_seed`` planted, so a
script that calls it once at the top runs the same each time.

Importing symgrad changes none of this: the global state is only planted by an
explicit call.
"""

from __future__ import annotations

import random

import numpy as np

_root: np.random.SeedSequence | None = None  # planted by set_random_seed


def set_random_seed(seed: int) -> None:
    """Make symgrad's unseeded randomness, NumPy's legacy global and ``random`` repeatable.

    Seeds: the sequence every model without ``compile(seed=...)`` spawns its
    streams from (initial weights, shuffling, dropout masks), the generator of an
    initializer called without one, ``numpy.random.seed(seed)`` (the legacy global
    functions such as ``np.random.rand``) and ``random.seed(seed)`` -- as Keras's
    ``keras.utils.set_random_seed``.

    >>> set_random_seed(0)
    """
    global _root
    if (
        isinstance(seed, (bool, np.bool_))
        or not isinstance(seed, (int, np.integer))
        or not 0 <= seed < 2**32
    ):
        raise ValueError(
            f"Invalid value for argument seed: expected an integer in [0, 2**32). Received: seed={seed!r}"
        )
    seed = int(seed)
    _root = np.random.SeedSequence(seed)
    random.seed(seed)
    np.random.seed(seed)


def sequence(seed: int | None = None) -> np.random.SeedSequence:
    """The SeedSequence of a seed; without one, the next child of ``set_random_seed``'s
    sequence (fresh entropy when it was never called)."""
    if seed is not None:
        return np.random.SeedSequence(seed)
    if _root is None:
        return np.random.SeedSequence()
    return _root.spawn(1)[0]


def generator(seed: int | None = None) -> np.random.Generator:
    """A NumPy Generator from :func:`sequence`."""
    return np.random.default_rng(sequence(seed))
