"""symgrad.sklearn: scikit-learn's estimator checks, labels, routing, reuse of compiled models."""

from __future__ import annotations

import gc
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from symgrad import losses
from symgrad.layers import Dense, Dropout
from symgrad.models import Sequential
from symgrad.optimizers import SGD, Adam
from symgrad.sklearn import SymgradClassifier, SymgradRegressor, compilations, mlp
from tests.nn.helpers import BACKEND, blobs

# scikit-learn's checks, all of them; one is expected to fail (EXPECTED_FAILURES, with the
# reason). The pandas checks skip themselves without pandas (the ray extra brings it); the
# array-API checks need SCIPY_ARRAY_API=1 before SciPy is imported (tests/conftest.py).
CHECKED = [
    SymgradClassifier(model__units=8, learning_rate=0.02, epochs=20, backend=BACKEND),
    SymgradRegressor(model__units=8, learning_rate=0.02, epochs=20, backend=BACKEND),
]
EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "a weight of 2 is not a repeated row in mini-batch training: the weighted loss of a "
        "batch is Keras's sum(w_i l_i)/n over its n rows, and the batches of the weighted and "
        "the repeated data hold other rows; the predictions differ by about 1e-5 relative"
    ),
}


@parametrize_with_checks(CHECKED, expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


def separable(seed: int = 0, n: int = 90, classes: int = 3):
    x, labels = blobs(np.random.default_rng(seed), n=n, features=4, classes=classes)
    return x, labels


def build(units: int = 8, n_features_in: int = 4, n_outputs: int = 3, activation=None):
    """A build function as a user writes one: it names the meta it needs."""
    return Sequential(
        [
            Dense(units, activation="tanh", input_dim=n_features_in),
            Dense(n_outputs, activation=activation or "softmax"),
        ]
    )


def classifier(**params) -> SymgradClassifier:
    settings = {"learning_rate": 0.05, "epochs": 15, "random_state": 0}
    if "model" not in params:
        settings["model__units"] = 8  # the default network's
    return SymgradClassifier(backend=BACKEND, **{**settings, **params})


def test_fit_is_a_plain_symgrad_fit():
    """The estimator's model, compile and fit are those the parameters name: the same
    predictions, bit for bit, as the symgrad model compiled and fitted by hand."""
    x, labels = separable()
    est = SymgradClassifier(
        model=build,
        model__units=5,
        optimizer="sgd",
        optimizer__momentum=0.9,
        learning_rate=0.1,
        epochs=4,
        batch_size=16,
        backend=BACKEND,
        random_state=3,
    ).fit(x, labels)
    model = build(units=5)
    model.compile(
        optimizer=SGD(learning_rate=0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        backend=BACKEND,
        seed=3,
    )
    model.fit(x, labels, epochs=4, batch_size=16, verbose=0)
    for mine, theirs in zip(est.model_.get_weights(), model.get_weights()):
        assert np.array_equal(mine, theirs)
    p = model.predict(x, batch_size=1024).astype(float)  # the estimator's batches
    assert np.array_equal(est.predict_proba(x), p / p.sum(axis=1, keepdims=True))
    assert est.model_.optimizer.momentum == 0.9 and len(est.history_["loss"]) == 4


def test_sample_weight_is_fits_sample_weight():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((70, 3))
    y = x @ np.array([1.0, -1.0, 0.5]) + 0.1 * rng.standard_normal(70)
    w = rng.uniform(0.0, 3.0, 70)
    est = SymgradRegressor(
        model__units=5, learning_rate=0.01, epochs=3, backend=BACKEND, random_state=4
    ).fit(x, y, sample_weight=list(w))
    model = mlp(3, 1, units=5)
    model.compile(optimizer=Adam(learning_rate=0.01), loss="mse", backend=BACKEND, seed=4)
    model.fit(x, y, sample_weight=w, epochs=3, verbose=0)
    for mine, theirs in zip(est.model_.get_weights(), model.get_weights()):
        assert np.array_equal(mine, theirs)
    unweighted = clone(est).fit(x, y).model_.get_weights()
    assert not np.array_equal(unweighted[0], model.get_weights()[0])
    x, labels = separable()
    with pytest.raises(ValueError, match=r"sample_weight must be finite and >= 0.*\[1\]=-1"):
        classifier().fit(x, labels, sample_weight=np.r_[1.0, -1.0, np.ones(len(x) - 2)])
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(89,\), expected \(90,\)"):
        classifier().partial_fit(x, labels, classes=[0, 1, 2], sample_weight=np.ones(89))


def overlapping(seed: int = 5, n: int = 120):
    """Two overlapping classes "a" and "b" (no boundary is right for all rows)."""
    rng = np.random.default_rng(seed)
    labels = np.array(["a", "b"])[rng.integers(0, 2, n)]
    x = rng.standard_normal((n, 2)) + np.where(labels == "b", 0.5, -0.5)[:, None]
    return x, labels


def test_class_weight_is_each_samples_weight_times_its_class():
    """class_weight trains exactly as the sample weights it stands for; with one, the
    weights multiply; "balanced" is n / (k n_class), scikit-learn's."""
    from sklearn.utils.class_weight import compute_sample_weight

    x, labels = overlapping()
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(x))
    per_row = np.where(labels == "b", 4.0, 1.0)
    est = classifier(class_weight={"b": 4.0}).fit(x, labels, sample_weight=w)
    plain = classifier().fit(x, labels, sample_weight=w * per_row)
    assert np.array_equal(est.predict_proba(x), plain.predict_proba(x))
    x3, labels3 = separable()
    keep = np.r_[np.flatnonzero(labels3 != 2), np.flatnonzero(labels3 == 2)[:5]]
    x3, labels3 = x3[keep], labels3[keep]  # few rows of class 2
    balanced = classifier(class_weight="balanced").fit(x3, labels3)
    counts = np.bincount(labels3)
    expected = len(labels3) / (3 * counts[labels3])
    assert np.allclose(expected, compute_sample_weight("balanced", labels3), rtol=1e-15)
    by_hand = classifier().fit(x3, labels3, sample_weight=expected)
    assert np.array_equal(balanced.predict_proba(x3), by_hand.predict_proba(x3))
    steps = classifier(class_weight={0: 3.0, 2: 0.5})
    reference = classifier()
    for _ in range(2):
        steps.partial_fit(x3, labels3, classes=[0, 1, 2])
        reference.partial_fit(
            x3, labels3, classes=[0, 1, 2], sample_weight=np.array([3.0, 1.0, 0.5])[labels3]
        )
    assert np.array_equal(steps.predict_proba(x3), reference.predict_proba(x3))


def test_class_weight_moves_predictions_toward_the_heavier_class():
    x, labels = overlapping()
    settings = {"epochs": 30, "learning_rate": 0.05}
    even = classifier(**settings).fit(x, labels).predict_proba(x)[:, 1]
    heavy_b = classifier(class_weight={"b": 5.0}, **settings).fit(x, labels)
    heavy_a = classifier(class_weight={"a": 5.0}, **settings).fit(x, labels)
    p_b, p_a = heavy_b.predict_proba(x)[:, 1], heavy_a.predict_proba(x)[:, 1]
    assert np.all(p_b > even) and np.all(p_a < even)  # every row's P(b) moves
    assert (
        np.mean(heavy_b.predict(x) == "b")
        > np.mean(labels == "b")
        > np.mean(heavy_a.predict(x) == "b")
    )


@pytest.mark.parametrize(
    ("class_weight", "message"),
    [
        (
            {"c": 2.0},
            r"class_weight has a label that is no class of y \(\['a', 'b'\]\)\. Received: class_weight\['c'\]=2\.0",
        ),
        ({"a": -1.0}, r"finite numbers >= 0\. Received: class_weight\['a'\]=-1\.0"),
        ({"a": float("nan")}, r"finite numbers >= 0\. Received: class_weight\['a'\]=nan"),
        ("even", r"None, 'balanced' or a dict .* Received: class_weight='even'"),
    ],
)
def test_bad_class_weight_is_named(class_weight, message):
    x, labels = overlapping()
    with pytest.raises(ValueError, match=message):
        classifier(class_weight=class_weight).fit(x, labels)


def test_balanced_class_weight_needs_fit_not_partial_fit():
    x, labels = overlapping()
    with pytest.raises(ValueError, match=r"needs the class frequencies .*compute_class_weight"):
        classifier(class_weight="balanced").partial_fit(x, labels, classes=["a", "b"])


@pytest.mark.parametrize(
    "names",
    [
        np.array(["emu", "cat", "dog"]),
        np.array([42, -3, 7]),
    ],
    ids=["strings", "non-contiguous ints"],
)
def test_any_labels_train_as_their_indices(names):
    """Labels are encoded as their index in the sorted classes_: the training is that on
    those indices, bit for bit, and predictions map back."""
    x, labels = separable()
    ranks = np.argsort(np.argsort(names))  # names[i] is the ranks[i]-th class
    reference = classifier().fit(x, ranks[labels])
    est = classifier().fit(x, names[labels])
    assert est.classes_.tolist() == sorted(names.tolist())
    assert np.array_equal(est.predict_proba(x), reference.predict_proba(x))
    assert np.array_equal(est.predict(x), np.sort(names)[reference.predict(x)])
    assert est.predict(x).dtype == names.dtype and est.score(x, names[labels]) >= 0.95


def test_binary_with_one_sigmoid_output_or_two_softmax_outputs():
    x, labels = separable(classes=2)
    words = np.array(["no", "yes"])[labels]
    sigmoid = classifier().fit(x, words)
    assert sigmoid.model_.output_dim == 1 and sigmoid.model_.loss.name == "binary_crossentropy"
    p = sigmoid.predict_proba(x)
    raw = sigmoid.model_.predict(x)[:, 0].astype(float)
    assert np.array_equal(p[:, 1], raw) and np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    assert np.array_equal(sigmoid.predict(x), np.where(raw > 0.5, "yes", "no"))
    softmax = classifier(model=build, model__n_outputs=2).fit(x, words)
    assert softmax.model_.loss.name == "sparse_categorical_crossentropy"
    assert sigmoid.score(x, words) >= 0.95 and softmax.score(x, words) >= 0.95


def test_categorical_and_from_logits_losses():
    x, labels = separable()
    onehot = classifier(model=build, loss="categorical_crossentropy").fit(x, labels)
    sparse = classifier(model=build).fit(x, labels)  # the same training on index targets
    assert np.allclose(onehot.predict_proba(x), sparse.predict_proba(x), rtol=0, atol=1e-5)
    logits = classifier(
        model=build,
        model__activation="linear",
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
    ).fit(x, labels)
    z = logits.model_.predict(x).astype(float)
    softmax = np.exp(z - z.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    assert np.allclose(logits.predict_proba(x), softmax, rtol=1e-12, atol=0)
    assert logits.score(x, labels) >= 0.95


def test_partial_fit_is_fit_one_epoch_at_a_time():
    x, labels = separable()
    whole = classifier(epochs=3).fit(x, labels)
    steps = classifier()
    steps.partial_fit(x, labels, classes=[0, 1, 2])
    steps.partial_fit(x, labels)
    steps.partial_fit(x, labels, classes=np.array([2, 1, 0]))
    assert np.array_equal(steps.predict_proba(x), whole.predict_proba(x))
    assert steps.history_["loss"] == whole.history_["loss"]
    assert steps.model_.optimizer.iterations == 3 * 3  # 90 rows in batches of 32, 3 epochs


def test_partial_fit_errors():
    x, labels = separable()
    with pytest.raises(ValueError, match=r"classes must be passed on the first call.*classes=None"):
        classifier().partial_fit(x, labels)
    est = classifier().partial_fit(x[labels < 2], labels[labels < 2], classes=[0, 1, 2])
    assert est.model_.output_dim == 3  # every class of `classes`, not only those seen
    with pytest.raises(ValueError, match=r"classes differ.*\[0, 1, 2\].*classes=\[0, 1\]"):
        est.partial_fit(x, labels, classes=[0, 1])
    with pytest.raises(ValueError, match=r"labels outside classes_ \[0, 1, 2\]. Received: \[5\]"):
        est.partial_fit(x, np.where(labels == 2, 5, labels))
    with pytest.raises(ValueError, match="X has 3 features, but SymgradClassifier is expecting 4"):
        est.partial_fit(x[:, :3], labels)


def test_a_structure_compiles_once_and_no_live_estimator_is_disturbed():
    x, labels = separable()
    first = classifier(model__units=7).fit(x, labels)
    expected = first.predict_proba(x)
    before = compilations()
    second = classifier(model__units=7, learning_rate=0.01).fit(x, labels)  # first is alive
    assert compilations() == before + 1
    assert second.model_ is not first.model_
    assert np.array_equal(first.predict_proba(x), expected)
    first_model = id(first.model_)
    del first
    gc.collect()
    third = classifier(model__units=7).fit(x, labels)  # takes the model `first` held, reset
    assert compilations() == before + 1 and id(third.model_) == first_model
    assert np.array_equal(third.predict_proba(x), expected)
    third.set_params(model__units=9).fit(x, labels)  # another structure: compiled
    assert compilations() == before + 2 and third.model_.layers[0].units == 9


def test_random_state_is_a_runtime_value_unless_the_model_draws_dropout_masks():
    x, labels = separable()
    gone = classifier(model__units=6, random_state=1).fit(x, labels)
    del gone
    gc.collect()
    before = compilations()
    est = classifier(model__units=6, random_state=2).fit(x, labels)  # the same step, reset
    assert compilations() == before
    model = mlp(4, 3, "softmax", units=6)
    model.compile(
        optimizer=Adam(learning_rate=0.05),
        loss="sparse_categorical_crossentropy",
        backend=BACKEND,
        seed=2,
    )
    model.fit(x, labels, epochs=15, verbose=0)
    for mine, theirs in zip(est.model_.get_weights(), model.get_weights()):
        assert np.array_equal(mine, theirs)
    # dropout's mask seed is compiled into the step: another seed, another step
    layers = [Dense(6, activation="tanh"), Dropout(0.2), Dense(3, activation="softmax")]
    first = classifier(model=layers, random_state=1).fit(x, labels)
    weights = first.model_.get_weights()
    del first
    gc.collect()
    classifier(model=layers, random_state=2).fit(x, labels)
    assert compilations() == before + 2
    again = classifier(model=layers, random_state=1).fit(x, labels)
    assert compilations() == before + 2
    for mine, theirs in zip(again.model_.get_weights(), weights):
        assert np.array_equal(mine, theirs)


def test_params_clone_and_grid_search_in_a_pipeline():
    x, labels = separable(n=120)
    est = classifier(optimizer=Adam(beta_1=0.8), model__units=4)
    params = est.get_params()
    assert params["model__units"] == 4 and params["optimizer"] is est.optimizer
    copy = clone(est)
    assert copy.get_params()["model__units"] == 4 and copy.get_params()["learning_rate"] == 0.05
    assert "model__units=4" in repr(est)
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), classifier(epochs=10)),
        {
            "symgradclassifier__model__units": [2, 8],
            "symgradclassifier__learning_rate": [1e-4, 0.05],
        },
        cv=2,
    ).fit(x, labels)
    assert grid.best_params_ == {
        "symgradclassifier__learning_rate": 0.05,
        "symgradclassifier__model__units": 8,
    }
    net = grid.best_estimator_[-1]
    assert net.model_.layers[0].units == 8 and net.model_.optimizer.learning_rate == 0.05
    assert net.model_.optimizer.beta_1 == 0.9  # est's optimizer instance is not grid's
    assert grid.score(x, labels) >= 0.95


def test_model_as_layers_or_an_uncompiled_model_is_copied_not_changed():
    x, labels = separable()
    layers = [Dense(6, activation="tanh"), Dense(3, activation="softmax")]
    est = classifier(model=layers).fit(x, labels)
    assert not layers[0].built and est.model_.layers[0] is not layers[0]
    assert est.score(x, labels) >= 0.95
    model = build()
    est = classifier(model=model, epochs=2).fit(x, labels)
    assert not model.compiled and est.model_ is not model


def test_regressor_one_and_several_targets():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 3))
    w = np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.0]])
    y = x @ w + 0.05 * rng.standard_normal((200, 2))
    settings = {"model__units": 16, "learning_rate": 0.02, "epochs": 40, "random_state": 0}
    two = SymgradRegressor(backend=BACKEND, **settings).fit(x, y)
    one = SymgradRegressor(backend=BACKEND, **settings).fit(x, y[:, 0])
    assert two.predict(x).shape == (200, 2) and one.predict(x).shape == (200,)
    assert (
        two.n_outputs_ == 2 and one.n_outputs_ == 1 and two.model_.loss.name == "mean_squared_error"
    )
    assert two.score(x, y) >= 0.97 and one.score(x, y[:, 0]) >= 0.97
    ss = ((y[:, 0] - one.predict(x)) ** 2).sum()
    assert np.isclose(one.score(x, y[:, 0]), 1 - ss / ((y[:, 0] - y[:, 0].mean()) ** 2).sum())
    with pytest.raises(ValueError, match=r"y has 1 targets; the first fit had 2"):
        two.partial_fit(x, y[:, 0])


def test_mlp_default_network():
    model = mlp(5, 3, "softmax", units=4, hidden_layers=2, activation="tanh")
    assert [(layer.units, layer.activation) for layer in model.layers] == [
        (4, "tanh"),
        (4, "tanh"),
        (3, "softmax"),
    ]
    assert model.input_dim == 5 and [
        layer.units for layer in mlp(5, 1, hidden_layers=0).layers
    ] == [1]


def compiled_build(n_features_in: int = 4):
    model = build(n_features_in=n_features_in)
    model.compile(loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        (
            {"model": compiled_build},
            ValueError,
            r"returned a compiled model\. Return it uncompiled: SymgradClassifier compiles it "
            r"with its own parameters .* Received: model 'sequential', compiled with "
            r"loss='sparse_categorical_crossentropy'",
        ),
        (
            {"model": build, "model__depth": 3},
            ValueError,
            r"model__depth is routed to the build function build, which takes no argument "
            r"'depth'\. It takes: units, n_features_in, n_outputs, activation\. Received: model__depth=3",
        ),
        (
            {"model": [Dense(3)], "model__units": 3},
            ValueError,
            r"model__<name> parameters go to a build function; model is a list\. Received: model__units",
        ),
        ({"model": "mlp"}, TypeError, r"model must be None .* Received: model='mlp' of type str"),
        (
            {"model": lambda: 3},
            TypeError,
            r"must return a symgrad model .* Received: 3 of type int",
        ),
        ({"epoch": 3}, TypeError, r"unexpected parameter 'epoch'.* Received: epoch=3"),
        (
            {"model": build, "model__n_outputs": 4},
            ValueError,
            r"The model has 4 outputs for 3 classes: it needs 3 \(softmax\)\. Received: model "
            r"'sequential' with output shape \(4,\)",
        ),
        (
            {"model": [Dense(3, input_dim=6)]},
            ValueError,
            r"The model reads samples of shape \(6,\); X has 4 features",
        ),
        ({"random_state": -1}, ValueError, r"random_state.*-1"),
        ({"optimizer__momentum": 0.5}, TypeError, r"Adam got unexpected argument\(s\): momentum"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_parameters_are_named(params, error, message):
    x, labels = separable()
    est = classifier(**params)
    with pytest.raises(error, match=message):
        est.fit(x, labels)


def test_one_class_is_refused():
    x, labels = separable()
    with pytest.raises(
        ValueError, match=r"needs at least 2 classes. Received: 1 class \(\['a'\]\)"
    ):
        classifier().fit(x, np.full(len(x), "a"))


def test_importing_symgrad_imports_no_scikit_learn():
    code = "import sys, symgrad, symgrad.nn, symgrad.distributed; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
