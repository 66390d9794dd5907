"""The per-sample loss programs behind ``<output>_loss`` are kept in a bounded table."""

from __future__ import annotations

import numpy as np

from symgrad.nn import outputs
from symgrad.nn.losses import MeanSquaredError
from symgrad.nn.recent import Recent


def test_per_sample_programs_beyond_the_limit_are_dropped_oldest_first(monkeypatch):
    monkeypatch.setattr(outputs, "_PROGRAMS", Recent(2))
    metric = outputs.OutputLoss(MeanSquaredError())
    rng = np.random.default_rng(0)
    for width in (1, 2, 3, 2):  # width 2 asked again: kept, and now the most recent
        y, p = rng.normal(size=(5, width)), rng.normal(size=(5, width))
        np.testing.assert_allclose(metric.values(y, p), ((y - p) ** 2).mean(axis=1), rtol=1e-12)
    assert [key[-2] for key in outputs._PROGRAMS.keys()] == [3, 2]
    newest = outputs._PROGRAMS.keys()[-1]
    kept = outputs._PROGRAMS.get(newest, lambda: None)
    metric.values(np.ones((2, 2)), np.zeros((2, 2)))
    assert outputs._PROGRAMS.keys()[-1] == newest
    assert outputs._PROGRAMS.get(newest, lambda: None) is kept  # not compiled again
