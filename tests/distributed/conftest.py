"""One local Ray cluster (2 CPUs) for the whole test session; nothing reaches off this machine.

The tests that need Ray take the ``cluster`` fixture: it skips them when Ray is not
installed -- unless ``SYMGRAD_REQUIRE_RAY`` is set (CI installs ``symgrad[ray]`` and
sets it), where a missing Ray fails them.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import pytest


@pytest.fixture(scope="session")
def cluster():
    try:
        ray = importlib.import_module("ray")
    except ImportError:
        if os.environ.get("SYMGRAD_REQUIRE_RAY"):
            raise
        pytest.skip('Ray is not installed (pip install "symgrad[ray]")')
    with warnings.catch_warnings():
        # JAX (imported by other tests of the session) warns at every fork; Ray's start-up
        # forks its helper processes, which exec at once
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def by_value(cluster):
    """Workers import no test module: functions of the calling test module travel by value."""

    def register(module_name: str) -> None:
        cluster.cloudpickle.register_pickle_by_value(sys.modules[module_name])

    return register
