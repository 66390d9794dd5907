"""Sweeps: every trial equals its solo run, one compilation per structure and worker, faults."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

from symgrad import distributed
from symgrad.layers import Dense, Dropout
from symgrad.models import Sequential

SETTINGS = {
    "optimizer": "sgd",
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "backend": "llvm",
    "dtype": "float64",
}
# two structures (SGD's rule has a momentum slot only when momentum > 0), several trials each
SPACE = {"learning_rate": [0.2, 0.05], "momentum": [0.0, 0.9], "seed": [0, 1]}


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x, y = d.data[:480] / 16.0, d.target[:480]
    return x[:400], y[:400], (x[400:], y[400:])


def build(hp):
    return Sequential([Dense(hp.get("units", 12), "relu", input_dim=64), Dense(10, "softmax")])


def solo(hp, x, y, val, settings=SETTINGS, epochs=2):
    """The trial trained alone: a fresh model, compiled with the trial's optimizer and seed."""
    model = build(hp)
    optimizer = distributed.trials.trial_optimizer(settings, hp)
    rest = {k: v for k, v in settings.items() if k != "optimizer"}
    model.compile(optimizer=optimizer, seed=hp.get("seed"), **rest)
    history = model.fit(x, y, epochs=epochs, batch_size=32, validation_data=val, verbose=0)
    return history.history, model.get_weights()


def test_import_symgrad_imports_no_ray():
    code = "import sys, symgrad, symgrad.distributed; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_expand_takes_the_product_in_order_or_a_list():
    assert distributed.expand({"a": [1, 2], "b": range(2)}) == [
        {"a": 1, "b": 0},
        {"a": 1, "b": 1},
        {"a": 2, "b": 0},
        {"a": 2, "b": 1},
    ]
    assert distributed.expand([{"a": 1}, {"b": 2}]) == [{"a": 1}, {"b": 2}]
    with pytest.raises(TypeError, match=r"Received: a=0\.1"):
        distributed.expand({"a": 0.1})
    with pytest.raises(TypeError, match="Received: space of type int"):
        distributed.expand(3)


def test_bad_settings_are_named(digits):
    x, y, _ = digits
    with pytest.raises(ValueError, match="Received: seed"):
        distributed.sweep(build, SPACE, x, y, compile={**SETTINGS, "seed": 1}, num_workers=0)
    with pytest.raises(ValueError, match="compile needs a loss"):
        distributed.sweep(build, SPACE, x, y, compile={"optimizer": "sgd"}, num_workers=0)
    with pytest.raises(ValueError, match="Received: mode='best'"):
        distributed.sweep(build, SPACE, x, y, compile=SETTINGS, num_workers=0, mode="best")


def test_reused_program_gives_each_trial_its_solo_result(digits):
    """In one process: 8 trials, 2 structures, 2 compilations; histories and weights bit-equal."""
    x, y, val = digits
    space = [
        *distributed.expand(SPACE)[::2],
        {"optimizer": "adam", "learning_rate": 0.01, "seed": 3},
    ]
    runner = distributed.TrialRunner(
        build, SETTINGS, x, y, {"epochs": 2, "batch_size": 32, "validation_data": val}
    )
    for hp in space:
        model, history, _ = runner.fit(hp)
        alone_history, alone_weights = solo(hp, x, y, val)
        assert history.history == alone_history, hp
        for got, want in zip(model.get_weights(), alone_weights):
            np.testing.assert_array_equal(got, want)
    assert runner.compilations == 3  # SGD, SGD with momentum, Adam
    assert [hp["momentum"] for hp in space[:4]] == [0.0, 0.9, 0.0, 0.9]


def test_a_step_with_dropout_is_shared_only_by_trials_of_its_seed(digits):
    """Dropout's mask seed is compiled into the step: trials of another seed compile."""
    x, y, val = digits

    def with_dropout(hp):
        return Sequential([Dense(12, "relu", input_dim=64), Dropout(0.3), Dense(10, "softmax")])

    runner = distributed.TrialRunner(
        with_dropout, SETTINGS, x, y, {"epochs": 2, "batch_size": 32, "validation_data": val}
    )
    compiled = []
    for hp in ({"seed": 0}, {"seed": 1}, {"seed": 0, "learning_rate": 0.05}, {"seed": None}):
        model, history, was_compiled = runner.fit(hp)
        compiled.append(was_compiled)
        if hp["seed"] is not None:
            alone = with_dropout(hp)
            optimizer = distributed.trials.trial_optimizer(SETTINGS, hp)
            rest = {k: v for k, v in SETTINGS.items() if k != "optimizer"}
            alone.compile(optimizer=optimizer, seed=hp["seed"], **rest)
            alone.fit(x, y, epochs=2, batch_size=32, verbose=0)
            for got, want in zip(model.get_weights(), alone.get_weights()):
                np.testing.assert_array_equal(got, want)
    assert compiled == [True, True, False, True]  # no seed: fresh masks, a step of its own
    assert not distributed.trials.draws_masks(build({}))


def test_sweep_in_process_ranks_best_first(digits):
    x, y, val = digits
    results = distributed.sweep(
        build, SPACE, x, y, compile=SETTINGS, epochs=2, validation_data=val, num_workers=0
    )
    assert results.metric == "val_loss" and results.mode == "min"
    values = [r["metrics"]["val_loss"] for r in results]
    assert values == sorted(values)
    assert results.compilations == 2
    by_accuracy = results.sorted("val_accuracy")
    assert by_accuracy.mode == "max"
    accuracies = [r["metrics"]["val_accuracy"] for r in by_accuracy]
    assert accuracies == sorted(accuracies, reverse=True)
    header = results.table().splitlines()[0].split()
    assert header == [
        "trial", "learning_rate", "momentum", "seed", "loss", "accuracy",
        "val_loss", "val_accuracy", "status", "attempts", "compiled",
    ]  # fmt: skip
    assert len(results.table(limit=3).splitlines()) == 4


def test_sweep_on_two_workers_matches_the_solo_runs(digits, by_value):
    by_value(__name__)
    x, y, val = digits
    results = distributed.sweep(
        build, SPACE, x, y, compile=SETTINGS, epochs=2, validation_data=val, num_workers=2
    )
    assert len(results) == 8 and not results.failed
    for row in results:
        assert row["history"] == solo(row["hp"], x, y, val)[0], row["hp"]
    # each worker compiles each structure at most once: 2 structures x 2 workers
    assert 2 <= results.compilations <= 4
    assert len({row["worker"] for row in results}) == 2


def test_kept_workers_serve_the_next_sweep_without_compiling(digits, by_value):
    """A second sweep of the same build on the same cluster: the kept workers, their
    compiled programs (none compiled twice), the rows still the solo runs'; a kept worker that
    died in between is replaced before any trial is charged; shutdown() ends them."""
    by_value(__name__)
    x, y, val = digits
    args = {"compile": SETTINGS, "epochs": 2, "validation_data": val, "num_workers": 2}
    distributed.shutdown()
    first = distributed.sweep(build, SPACE, x, y, **args)
    assert first.timings["workers_started"] == 2 and first.timings["workers_reused"] == 0
    assert 2 <= first.compilations <= 4
    space = {**SPACE, "learning_rate": [0.1]}
    second = distributed.sweep(build, space, x, y, **args)
    assert second.timings == {**second.timings, "workers_started": 0, "workers_reused": 2}
    assert not second.failed
    # a worker compiles each structure once over both sweeps (2 structures x 2 workers)
    pairs = [(r["worker"], r["hp"]["momentum"]) for r in [*first, *second] if r["compiled"]]
    assert len(pairs) == len(set(pairs)) and len(pairs) <= 4
    assert {r["worker"] for r in second} <= {r["worker"] for r in first}
    for row in second:
        assert row["history"] == solo(row["hp"], x, y, val)[0], row["hp"]
    # one CPU each from Ray: each worker's programs run on one thread, not on every core
    ray = distributed.runtime.ray()
    assert ray.get([a.threads.remote() for a in distributed.workers._KEPT.actors]) == [1, 1]
    os.kill(second[0]["worker"], signal.SIGKILL)
    third = distributed.sweep(build, space, x, y, **args)
    assert third.timings["workers_started"] == 1 and third.timings["workers_reused"] == 1
    assert [r["attempts"] for r in third] == [1] * 4 and not third.failed
    for row in third:
        assert row["history"] == solo(row["hp"], x, y, val)[0], row["hp"]
    distributed.shutdown()
    fourth = distributed.sweep(build, space, x, y, **args, keep_workers=False)
    assert fourth.timings["workers_started"] == 2 and fourth.compilations >= 2
    assert distributed.workers._KEPT.actors == []


def killing_build(hp):
    """Kills its own worker process (SIGKILL) in a trial with ``kill``: every time, or only
    while the file ``hp["kill"]`` does not exist (it is made first: the retry then runs)."""
    kill = hp.get("kill")
    if kill is True or (kill and not os.path.exists(kill)):
        if kill is not True:
            open(kill, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return build(hp)


def test_a_killed_worker_s_trial_is_retried_or_reported_and_the_sweep_finishes(
    digits, by_value, tmp_path
):
    by_value(__name__)
    x, y, _ = digits
    once = str(tmp_path / "killed-once")
    kills = [False, once, True, False]  # trial 1 kills its worker once, trial 2 every time
    space = [{"learning_rate": 0.1, "seed": s, "kill": k} for s, k in enumerate(kills)]
    results = distributed.sweep(
        killing_build, space, x, y, compile=SETTINGS, epochs=1, num_workers=2, max_retries=1
    )
    rows = {r["trial"]: r for r in results}
    assert os.path.exists(once)
    assert [rows[i]["status"] for i in range(4)] == ["ok", "ok", "failed", "ok"]
    assert [rows[i]["attempts"] for i in range(4)] == [1, 2, 2, 1]
    assert rows[1]["history"] == solo(space[1], x, y, None, epochs=1)[0]
    assert rows[2]["hp"] == space[2]
    assert rows[2]["error"].startswith("its worker was lost 2 times (")
    assert results[-1]["trial"] == 2  # failed rows rank last
    assert results.failed == [rows[2]]


def test_a_loss_in_a_bundle_is_charged_only_once_its_trial_is_known(
    digits, by_value, tmp_path, monkeypatch
):
    """With rows sent at a chunk's end only, a worker lost mid-chunk was in one of the jobs
    not yet sent: they run again uncharged, each job's rows sent alone, where the next loss
    is charged to its trial."""
    by_value(__name__)
    monkeypatch.setattr(importlib.import_module("symgrad.distributed.sweep"), "REPORT", 1e9)
    distributed.shutdown()  # a new worker, then one for each loss
    x, y, _ = digits
    once = str(tmp_path / "killed-once")
    kills = [False, True, False, False, once, False]  # one worker: chunks [0 1 2], [3 4], [5]
    space = [{"learning_rate": 0.1, "seed": s, "kill": k} for s, k in enumerate(kills)]
    results = distributed.sweep(
        killing_build, space, x, y, compile=SETTINGS, epochs=1, num_workers=1, max_retries=1
    )
    rows = {r["trial"]: r for r in results}
    assert os.path.exists(once)
    assert [rows[i]["status"] for i in range(6)] == ["ok", "failed", "ok", "ok", "ok", "ok"]
    # trial 1's first loss was in a bundle of three; its next two are known: failed, 2 attempts
    assert [rows[i]["attempts"] for i in range(6)] == [1, 2, 1, 1, 1, 1]
    assert rows[1]["error"].startswith("its worker was lost 2 times (")
    assert results.timings["workers_started"] == 5  # four lost, two of them in bundles
    for i in (0, 4):
        assert rows[i]["history"] == solo(space[i], x, y, None, epochs=1)[0]


def test_a_worker_sends_rows_in_bundles_or_each_job_alone(digits, cluster):
    """SweepWorker.run, called in this process: every row once, in order; with report=0 one
    job per item, with a report interval longer than the chunk one item at its end."""
    x, y, _ = digits
    fit_args = {"epochs": 1, "batch_size": 32, "shuffle": True}
    box = [cluster.put((build, SETTINGS, (x, y, None), fit_args, 1))]
    worker = distributed.workers.SweepWorker()
    jobs = [[(i, {"learning_rate": 0.1, "seed": i})] for i in range(3)]
    alone = list(worker.run("t", "d", box, 60.0, jobs, 0.0))
    bundled = list(worker.run("t", "d", box, 60.0, jobs, 1e9))
    assert [[[r["trial"] for r in job] for job in item] for item in alone] == [[[0]], [[1]], [[2]]]
    assert [[[r["trial"] for r in job] for job in item] for item in bundled] == [[[0], [1], [2]]]
    histories = [job[0]["history"] for item in alone for job in item]
    assert histories == [job[0]["history"] for job in bundled[0]]
    assert histories[1] == solo(jobs[1][0][1], x, y, None, epochs=1)[0]


def sleepy_build(hp):
    if hp.get("sleep"):
        time.sleep(hp["sleep"])
    return build(hp)


@pytest.mark.slow
def test_a_trial_past_its_timeout_is_killed_and_reported(digits, by_value):
    by_value(__name__)
    x, y, _ = digits
    space = [{"learning_rate": 0.1, "seed": 0, "sleep": 600}, {"learning_rate": 0.1, "seed": 1}]
    settings = {**SETTINGS, "backend": "numpy"}
    start = time.monotonic()
    results = distributed.sweep(
        sleepy_build, space, x, y, compile=settings, num_workers=2, max_retries=0, trial_timeout=20
    )
    assert time.monotonic() - start < 120
    rows = {r["trial"]: r for r in results}
    assert rows[0]["status"] == "failed"
    assert "no result within trial_timeout=20 s" in rows[0]["error"]
    assert rows[1]["status"] == "ok"


@pytest.mark.slow
def test_tune_drives_trials_with_asha(digits, by_value, tmp_path):
    by_value(__name__)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    x, y, val = digits
    train = distributed.trainable(build, x, y, compile=SETTINGS, epochs=4, validation_data=val)
    rates = [0.3, 0.1, 0.003, 0.001]
    tuner = tune.Tuner(
        train,
        param_space={"learning_rate": tune.grid_search(rates), "seed": 0},
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            scheduler=ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2),
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    handler = signal.getsignal(signal.SIGINT)
    try:
        grid = tuner.fit()
    finally:  # Tune catches SIGINT while it runs and leaves its handler installed after
        signal.signal(signal.SIGINT, handler)
    assert not grid.errors
    reported = {r.config["learning_rate"]: r for r in grid}
    # every epoch reported; ASHA stopped some trials before the last epoch
    epochs = {lr: r.metrics["epoch"] for lr, r in reported.items()}
    assert epochs[0.3] == 4 and min(epochs.values()) < 4
    for lr, r in reported.items():
        history, _ = solo({"learning_rate": lr, "seed": 0}, x, y, val, epochs=4)
        assert list(r.metrics_dataframe["val_loss"]) == history["val_loss"][: epochs[lr]]
