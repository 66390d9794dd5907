"""The sweep benchmark's candidates and its check of their histories (no Ray, no timing)."""

import argparse

import pytest

from benchmarks import bench_sweep as bench


def rows(*histories):
    return [{"trial": i, "history": {"loss": [h]}} for i, h in enumerate(histories)]


def test_population_candidates_sit_beside_the_plain_sweep():
    args = argparse.Namespace(epochs=1, workers=2, population=16)
    names = list(bench.candidates([], None, args))
    assert names[:5] == [
        "one process, fresh model per trial",
        "one process, program reused",
        "Ray, 2 workers, fresh",
        "Ray, 2 workers, kept",
        "Ray, 2 workers, kept, each row sent alone",
    ]
    assert sorted(names[5:]) == [
        "Ray, 2 workers, fresh, no shuffling, population=16",
        "Ray, 2 workers, kept, no shuffling",
        "Ray, 2 workers, kept, no shuffling, population=16",
        "one process, no shuffling",
        "one process, no shuffling, population=16",
    ]
    plain = argparse.Namespace(epochs=1, workers=2, population=0)
    assert list(bench.candidates([], None, plain)) == names[:5]


def test_histories_are_compared_within_one_batch_order():
    last = {
        "one process, program reused": rows(1.0, 2.0),
        "Ray, 2 workers": rows(1.0, 2.0),
        "one process, no shuffling": rows(3.0, 4.0),  # another batch order: other histories
        "one process, no shuffling, population=4": rows(3.0, 4.0),
    }
    bench.check_histories(last)
    last["one process, no shuffling, population=4"] = rows(3.0, 4.5)
    with pytest.raises(AssertionError, match="population=4"):
        bench.check_histories(last)
