"""Population training: K members in one program equal their solo runs (same batch order)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from sklearn.datasets import load_digits

from symgrad import distributed
from symgrad.distributed.population import MemberNonFinite, Population
from symgrad.layers import Dense, Dropout
from symgrad.models import Sequential

SETTINGS = {
    "optimizer": "sgd",
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "backend": "llvm",
    "dtype": "float64",
}


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x, y = d.data[:360] / 16.0, d.target[:360]
    return x[:300], y[:300], (x[300:], y[300:])


def build(hp):
    return Sequential([Dense(12, "relu", input_dim=64), Dense(10, "softmax")])


def solo(hp, x, y, val, settings, epochs=2, batch_size=32):
    """The member trained alone in the population's batch order (rows as given)."""
    model = build(hp)
    optimizer = distributed.trials.trial_optimizer(settings, hp)
    rest = {k: v for k, v in settings.items() if k != "optimizer"}
    model.compile(optimizer=optimizer, seed=hp.get("seed"), **rest)
    history = model.fit(
        x, y, epochs=epochs, batch_size=batch_size, validation_data=val, shuffle=False, verbose=0
    )
    return history.history, model.get_weights(), model.optimizer.iterations


CASES = {
    "sgd-momentum-llvm": (
        {**SETTINGS},
        [
            {"learning_rate": lr, "momentum": m, "seed": s}
            for lr, m, s in [(0.2, 0.9, 0), (0.05, 0.5, 1), (0.1, 0.9, 2)]
        ],
    ),
    "adam-llvm": (
        {**SETTINGS, "optimizer": "adam"},
        [{"learning_rate": 0.01, "beta_1": 0.8, "seed": 3}, {"learning_rate": 0.002, "seed": 4}],
    ),
    "rmsprop-numpy": (
        {**SETTINGS, "optimizer": "rmsprop", "backend": "numpy"},
        [{"learning_rate": 0.01, "rho": 0.8, "seed": 0}, {"learning_rate": 0.003, "seed": 5}],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_member_equals_its_solo_run_bit_for_bit(case, digits):
    settings, members = CASES[case]
    x, y, val = digits
    pop = Population(build, members, compile=settings)
    histories = pop.fit(x, y, epochs=2, batch_size=32, validation_data=val)
    assert pop.compilations == 1
    for k, hp in enumerate(members):
        history, weights, iterations = solo(hp, x, y, val, settings)
        assert histories[k] == history  # loss, accuracy, val_loss, val_accuracy per epoch
        for mine, theirs in zip(pop.member_weights(k), weights):
            np.testing.assert_array_equal(mine, theirs)
        assert pop.iterations == iterations
    # the members did train apart: different hyperparameters, different weights
    assert not np.array_equal(pop.member_weights(0)[0], pop.member_weights(1)[0])


def test_an_epoch_of_every_member_is_one_native_call(digits, monkeypatch):
    x, y, _ = digits
    members = [{"learning_rate": 0.1, "seed": s} for s in range(4)]
    pop = Population(build, members, compile=SETTINGS)
    fn = pop.train_step()
    calls = []
    epoch = fn.epoch

    def counted(*args, **kwargs):
        calls.append(kwargs["order"].size)
        return epoch(*args, **kwargs)

    counted.counter = epoch.counter

    monkeypatch.setattr(fn, "epoch", counted)
    pop.fit(x, y, epochs=3, batch_size=16)
    assert calls == [len(x)] * 3
    assert pop.iterations == 3 * -(-len(x) // 16)


def test_a_shared_shuffled_order_equals_a_solo_run_given_that_order(digits):
    x, y, _ = digits
    members = [{"learning_rate": 0.1, "seed": 0}, {"learning_rate": 0.3, "seed": 1}]
    pop = Population(build, members, compile=SETTINGS)
    pop.fit(x, y, epochs=1, batch_size=32, shuffle=True, seed=7)
    order = np.random.default_rng(7).permutation(len(x))
    _, weights, _ = solo(members[1], x[order], y[order], None, SETTINGS, epochs=1)
    for mine, theirs in zip(pop.member_weights(1), weights):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_a_member_that_diverges_is_named_and_nothing_is_written(backend, digits):
    x, y, _ = digits
    settings = {**SETTINGS, "backend": backend}
    members = [
        {"learning_rate": 0.1, "seed": 0},
        {"learning_rate": 1e306, "seed": 1},  # finite after one step, overflows in the second
        {"learning_rate": 0.1, "seed": 2},
    ]
    pop = Population(build, members, compile=settings)
    with pytest.raises(MemberNonFinite, match=r"member\(s\) 1 \{'learning_rate': 1e\+306") as err:
        pop.fit(x, y, epochs=1, batch_size=32)
    assert err.value.members == [1]
    assert (err.value.epoch, err.value.batch) == (1, 2)
    assert pop.iterations == 1
    for k in (0, 2):  # the good members hold their weights after the one good step, exactly
        _, weights, _ = solo(members[k], x[:32], y[:32], None, settings, epochs=1)
        for now, theirs in zip(pop.member_weights(k), weights):
            np.testing.assert_array_equal(now, theirs)
    assert all(np.all(np.isfinite(w)) for w in pop.member_weights(1))


@pytest.mark.parametrize(
    ("members", "settings", "message"),
    [
        (
            [{"momentum": 0.0}, {"momentum": 0.9}],
            SETTINGS,
            "same structure .* member 0 and member 1 \\({'momentum': 0.9}\\) differ",
        ),
        ([{}], {**SETTINGS, "optimizer": "nadam"}, "cannot train Nadam"),
        ([], SETTINGS, "at least one member. Received: members=\\[\\]"),
    ],
)
def test_members_of_different_structures_are_refused(members, settings, message):
    with pytest.raises(ValueError, match=message):
        Population(build, members, compile=settings)


def test_dropout_is_refused():
    def with_dropout(hp):
        return Sequential([Dense(8, "relu", input_dim=64), Dropout(0.5), Dense(10, "softmax")])

    with pytest.raises(ValueError, match="cannot train models with dropout"):
        Population(with_dropout, [{"seed": 0}], compile=SETTINGS)


# -- the sweep's population option

SPACE = {"learning_rate": [0.2, 0.05], "momentum": [0.0, 0.9], "seed": [0, 1, 2]}


def solo_row(hp, x, y, val):
    history, _, _ = solo(hp, x, y, val, SETTINGS)
    return history


def test_groups_share_a_compiled_step_in_plan_order():
    plan = distributed.expand(SPACE)  # momentum 0 and 0.9: two structures, interleaved
    assert population_groups(plan, 2) == [[0, 1], [2, 6], [3, 4], [5, 9], [7, 8], [10, 11]]
    assert population_groups(plan, 16) == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]]
    assert population_groups(plan, 1) == [[i] for i in range(12)]
    with_epochs = [{"seed": 0}, {"seed": 1, "epochs": 3}, {"seed": 2}]
    assert population_groups(with_epochs, 4) == [[0, 2], [1]]


def population_groups(plan, size):
    from symgrad.distributed.population import groups

    return groups(build, SETTINGS, plan, size)


def test_a_sweep_in_populations_gives_every_trial_its_solo_row(digits):
    x, y, val = digits
    space = [*distributed.expand(SPACE), {"learning_rate": 1e306, "momentum": 0.9, "seed": 3}]
    results = distributed.sweep(
        build,
        space,
        x,
        y,
        compile=SETTINGS,
        epochs=2,
        validation_data=val,
        shuffle=False,
        population=4,
        num_workers=0,
    )
    rows = {r["trial"]: r for r in results}
    for i, hp in enumerate(space[:-1]):
        assert rows[i]["status"] == "ok"
        assert rows[i]["history"] == solo_row(hp, x, y, val)
    # groups of 4 of one structure in plan order: [0, 1, 2, 6], [3, 4, 5, 9], [7, 8], and
    # [10, 11, 12], trained again as [10, 11] once 12 diverged, 12 then run alone; the
    # short ones padded to 4 with copies of their first trial
    sizes = [rows[i]["population"] for i in range(len(space))]
    assert sizes == [4] * 12 + [1]
    diverged = rows[12]
    alone = distributed.TrialRunner(
        build, SETTINGS, x, y, {"epochs": 2, "validation_data": val, "shuffle": False}
    ).run(12, space[12])
    assert diverged["status"] == alone["status"] == "non_finite"
    assert diverged["history"] == alone["history"] and diverged["error"] == alone["error"]
    assert results.compilations == 3  # a population of 4 per structure, and 12 alone


def test_a_padding_copy_that_diverges_names_the_trial_it_copies(digits):
    """[diverging, a, b] padded to 4 with a copy of the diverging trial: both are named, the
    trial runs alone (non_finite, its solo row) and a, b train again, still padded to 4."""
    x, y, val = digits
    space = [{"learning_rate": lr, "momentum": 0.9, "seed": 3} for lr in (1e306, 0.2, 0.05)]
    results = distributed.sweep(
        build, space, x, y, compile=SETTINGS, epochs=1, validation_data=val, shuffle=False,
        population=4, num_workers=0,
    )  # fmt: skip
    rows = {r["trial"]: r for r in results}
    assert [rows[i]["status"] for i in range(3)] == ["non_finite", "ok", "ok"]
    assert [rows[i]["population"] for i in range(3)] == [1, 4, 4]
    for i in (1, 2):
        assert rows[i]["history"] == solo(space[i], x, y, val, SETTINGS, epochs=1)[0]
    assert results.compilations == 2  # the population of 4 once, the diverging trial alone


def test_a_sweep_in_populations_needs_a_shared_order(digits):
    x, y, _ = digits
    with pytest.raises(ValueError, match="pass shuffle=False. Received: population=4, shuffle"):
        distributed.sweep(build, SPACE, x, y, compile=SETTINGS, population=4, num_workers=0)


def test_populations_on_two_ray_workers_give_the_solo_rows(cluster, by_value, digits):
    by_value(__name__)
    x, y, val = digits
    space = distributed.expand(SPACE)
    results = distributed.sweep(
        build,
        space,
        x,
        y,
        compile=SETTINGS,
        epochs=2,
        validation_data=val,
        shuffle=False,
        population=3,
        num_workers=2,
    )
    assert all(r["status"] == "ok" and r["population"] == 3 for r in results)
    for r in results:
        assert r["history"] == solo_row(space[r["trial"]], x, y, val)
    assert results.compilations <= 4  # two structures, at most one population of each per worker


DRIVER = os.getpid()


def killing_build(hp):
    """Kills the worker process building it (never the driver, which builds to group) while
    the file ``hp["kill"]`` does not exist (it is made first: the retry then runs)."""
    kill = hp.get("kill")
    if kill and os.getpid() != DRIVER and not os.path.exists(kill):
        open(kill, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return build(hp)


def test_a_population_whose_worker_dies_is_retried_whole(cluster, by_value, digits, tmp_path):
    by_value(__name__)
    x, y, _ = digits
    once = str(tmp_path / "killed-once")
    space = [{"learning_rate": 0.1, "seed": s, "kill": once if s == 3 else None} for s in range(4)]
    results = distributed.sweep(
        killing_build,
        space,
        x,
        y,
        compile=SETTINGS,
        epochs=1,
        shuffle=False,
        population=2,
        num_workers=2,
        max_retries=1,
    )
    rows = {r["trial"]: r for r in results}
    assert os.path.exists(once)
    assert [rows[i]["status"] for i in range(4)] == ["ok"] * 4
    assert [rows[i]["attempts"] for i in range(4)] == [1, 1, 2, 2]  # the group [2, 3] again
    for i, hp in enumerate(space):
        assert rows[i]["history"] == solo(hp, x, y, None, SETTINGS, epochs=1)[0]


def unbuilt(hp):  # no input_dim: the shape comes from the data
    return Sequential([Dense(12, "relu"), Dense(10, "softmax")])


def test_models_without_an_input_shape_are_built_for_the_data(digits):
    x, y, _ = digits
    space = [{"learning_rate": 0.1, "seed": s} for s in range(3)]
    results = distributed.sweep(
        unbuilt, space, x, y, compile=SETTINGS, shuffle=False, population=3, num_workers=0
    )
    assert [r["population"] for r in results] == [3, 3, 3]
    alone = distributed.TrialRunner(unbuilt, SETTINGS, x, y, {"shuffle": False})
    for r in results:
        assert r["history"] == alone.run(r["trial"], space[r["trial"]])["history"]
    with pytest.raises(ValueError, match="needs the input shape.*Received: input_shape=None"):
        Population(unbuilt, space, compile=SETTINGS)


def test_bad_validation_data_is_named(digits):
    x, y, _ = digits
    pop = Population(build, [{"seed": 0}], compile=SETTINGS)
    with pytest.raises(ValueError, match="Received: validation_data of type ndarray"):
        pop.fit(x, y, validation_data=x)


@pytest.mark.slow
def test_sixteen_digits_mlps_in_one_call_per_epoch_equal_their_sixteen_fits():
    d = load_digits()
    x, y = d.data / 16.0, d.target
    members = [
        {"learning_rate": lr, "momentum": 0.9, "seed": s}
        for lr in (0.3, 0.1, 0.03, 0.01)
        for s in range(4)
    ]
    pop = Population(build, members, compile=SETTINGS)
    histories = pop.fit(x, y, epochs=2, batch_size=32)
    for k, hp in enumerate(members):
        history, weights, _ = solo(hp, x, y, None, SETTINGS)
        assert histories[k] == history
        for mine, theirs in zip(pop.member_weights(k), weights):
            np.testing.assert_array_equal(mine, theirs)
