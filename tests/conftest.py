"""Fixtures shared by the whole test suite.

Slow tests are marked ``@pytest.mark.slow``. ``python -m pytest`` skips them
(pyproject's addopts carry ``-m "not slow"``); CI and the README's command,
``python -m pytest -m "slow or not slow"``, run everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

# scikit-learn's array-API check of the estimators (tests/test_sklearn.py) runs only when
# SciPy was imported with its array API on; with NumPy arrays nothing else changes
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh ``np.random.default_rng(0)`` for each test."""
    return np.random.default_rng(0)


def finite_difference_check(
    f: Callable[[list[np.ndarray]], float],
    x_list: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    rtol: float = 1e-6,
    directions: int = 3,
    *,
    atol: float | None = None,
    step: float = 1e-6,
    seed: int = 0,
) -> None:
    """Check analytic gradients of ``f`` against central finite differences.

    ``f`` maps a list of arrays (shaped like ``x_list``) to a float and must
    compute in float64; ``grads[i]`` is the claimed ``df/dx_list[i]``. For each
    argument ``i`` separately (so a wrong small gradient, e.g. a bias, is not
    hidden by a large one) and each of ``directions`` random unit directions
    ``u`` (float64, seeded by ``seed``), it compares the directional derivative
    ``<grads[i], u>`` with ``(f(x + h u) - f(x - h u)) / (2 h)``, ``h = step``,
    perturbing only ``x_list[i]``. It passes when::

        |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|)

    ``atol`` defaults to ``1e-8 * max(1, |f(x)|)``, a bound on the rounding error
    of the difference quotient, so a zero directional derivative also passes.
    Raises ``AssertionError`` naming the argument, the direction and both values.

    Example::

        def test_square(check_grad, rng):
            x = rng.standard_normal(5)
            check_grad(lambda xs: float(np.sum(xs[0] ** 2)), [x], [2 * x])
    """
    xs = [np.array(x, dtype=np.float64) for x in x_list]
    if len(grads) != len(xs):
        raise ValueError(f"Expected one gradient per argument ({len(xs)}). Received: {len(grads)}")
    for i, (x, g) in enumerate(zip(xs, grads, strict=True)):
        if np.shape(g) != x.shape:
            raise ValueError(f"grads[{i}] must have shape {x.shape}. Received: {np.shape(g)}")
    f0 = float(f([x.copy() for x in xs]))
    if atol is None:
        atol = 1e-8 * max(1.0, abs(f0))
    direction_rng = np.random.default_rng(seed)
    for i, g in enumerate(grads):
        g = np.asarray(g, dtype=np.float64)
        for d in range(directions):
            u = direction_rng.standard_normal(xs[i].shape)
            u /= np.linalg.norm(u)
            plus = [x.copy() for x in xs]
            minus = [x.copy() for x in xs]
            plus[i] += step * u
            minus[i] -= step * u
            numeric = (float(f(plus)) - float(f(minus))) / (2 * step)
            analytic = float(np.vdot(g, u))
            tolerance = atol + rtol * max(abs(analytic), abs(numeric))
            if not abs(analytic - numeric) <= tolerance:  # also catches nan
                raise AssertionError(
                    f"gradient of argument {i} (shape {xs[i].shape}) along direction {d}: "
                    f"analytic {analytic:.12g} != numeric {numeric:.12g} "
                    f"(|diff| {abs(analytic - numeric):.3g} > tolerance {tolerance:.3g})"
                )


@pytest.fixture
def check_grad() -> Callable[..., None]:
    """The suite's one finite-difference gradient check: see ``finite_difference_check``."""
    return finite_difference_check


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Compiled LLVM objects go to a per-run folder, not the user's ~/.cache/symgrad."""
    import os

    old = os.environ.get("SYMGRAD_CACHE_DIR")
    os.environ["SYMGRAD_CACHE_DIR"] = str(tmp_path_factory.mktemp("symgrad-cache"))
    yield
    if old is None:
        os.environ.pop("SYMGRAD_CACHE_DIR", None)
    else:
        os.environ["SYMGRAD_CACHE_DIR"] = old
