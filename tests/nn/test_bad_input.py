"""Bad input: a clear error naming the value and what was expected; the model unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.callbacks import LambdaCallback
from symgrad.layers import Activation, Dense
from symgrad.models import Sequential
from symgrad.nn.trainer import NonFiniteLossError
from symgrad.optimizers import SGD
from tests.nn.helpers import BACKEND, blobs, mlp, weights_equal


@pytest.fixture
def data(rng):
    x, labels = blobs(rng, n=12)
    return x, labels


def assert_rejected(model, call, error, *fragments):
    """``call()`` raises ``error`` whose message holds every fragment; weights unchanged."""
    before = model.get_weights()
    iterations = model.optimizer.iterations if model.optimizer else None
    with pytest.raises(error) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert weights_equal(before, model.get_weights())
    if iterations is not None:
        assert model.optimizer.iterations == iterations
    return info.value


def test_x_and_y_of_different_lengths(data):
    x, labels = data
    model = mlp("sparse_categorical_crossentropy")
    assert_rejected(
        model,
        lambda: model.fit(x, labels[:-1], verbose=0),
        ValueError,
        "x and y must have the same number of samples",
        "x with 12 samples and y with 11 samples",
    )
    assert_rejected(
        model, lambda: model.evaluate(x[:5], labels), ValueError, "x with 5 samples and y with 12"
    )


def test_feature_count_differs_from_input_dim(data):
    x, labels = data
    model = mlp("sparse_categorical_crossentropy")
    wide = np.hstack([x, x[:, :1]])
    for call in (
        lambda: model.fit(wide, labels, verbose=0),
        lambda: model.predict(wide),
        lambda: model.evaluate(wide, labels),
        lambda: model.train_on_batch(wide, labels),
    ):
        assert_rejected(
            model, call, ValueError, "expects 4 input feature(s)", "x with shape (12, 5)"
        )


@pytest.mark.parametrize(
    ("bad", "fragments"),
    [
        ("strings", ["x must be numeric", "dtype <U"]),
        ("nan", ["x must contain only finite numbers", "x[3, 1]=nan"]),
        ("inf", ["x must contain only finite numbers", "x[0, 0]=inf"]),
        ("ragged", ["x must be a rectangular array of numbers"]),
        ("3d", ["x must be 2-D", "shape (12, 2, 2)"]),
        ("float32-overflow", ["x (as float32) must contain only finite numbers"]),
    ],
)
def test_non_numeric_or_non_finite_x(data, bad, fragments):
    x, labels = data
    model = mlp(
        "sparse_categorical_crossentropy",
        dtype="float32" if bad == "float32-overflow" else "float64",
    )
    if bad == "strings":
        x = x.astype(str)
    elif bad == "nan":
        x = x.copy()
        x[3, 1] = np.nan
    elif bad == "inf":
        x = x.copy()
        x[0, 0] = np.inf
    elif bad == "ragged":
        x = [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]]
    elif bad == "3d":
        x = x.reshape(12, 2, 2)
    else:
        x = x.copy()
        x[2, 2] = 1e300
    assert_rejected(model, lambda: model.fit(x, labels, verbose=0), ValueError, *fragments)


def test_non_finite_y(data):
    x, labels = data
    model = mlp("mse")
    y = np.eye(3)[labels]
    y[5, 2] = np.inf
    assert_rejected(
        model,
        lambda: model.fit(x, y, verbose=0),
        ValueError,
        "y must contain only finite numbers",
        "y[5, 2]=inf",
    )


@pytest.mark.parametrize(
    ("labels", "fragments"),
    [
        (lambda y: np.where(np.arange(12) == 4, 3, y), ["class labels in [0, 3)", "y[4]=3.0"]),
        (lambda y: np.where(np.arange(12) == 0, -1, y), ["class labels in [0, 3)", "y[0]=-1.0"]),
        (lambda y: y + 0.5, ["expects integer class labels", "y[0]=1.5"]),
        (
            lambda y: np.eye(3)[y],
            ["one integer class label per sample", "shape (12, 3)", "categorical_crossentropy"],
        ),
    ],
)
def test_sparse_labels_out_of_range(data, labels, fragments):
    x, y = data
    model = mlp("sparse_categorical_crossentropy")
    assert_rejected(model, lambda: model.fit(x, labels(y), verbose=0), ValueError, *fragments)


def test_categorical_labels_not_one_hot(data):
    x, labels = data
    model = mlp("categorical_crossentropy")
    y = np.eye(3)[labels]
    y[2] = [1, 1, 0]
    assert_rejected(
        model,
        lambda: model.fit(x, y, verbose=0),
        ValueError,
        "rows that sum to 1",
        "row 2 of y sums to 2.0",
        "sparse_categorical_crossentropy",
    )
    y[2] = [1.5, -0.5, 0]
    assert_rejected(model, lambda: model.fit(x, y, verbose=0), ValueError, "y[2, 1]=-0.5 < 0")
    assert_rejected(
        model,
        lambda: model.fit(x, labels, verbose=0),
        ValueError,
        "must have shape (samples, 3)",
        "y with shape (12,)",
        "For integer class labels use loss='sparse_categorical_crossentropy'",
    )


def test_binary_targets_outside_0_1(data):
    x, labels = data
    model = mlp("binary_crossentropy", classes=1)
    y = (labels == 1).astype(float)
    y[7] = 2.0
    assert_rejected(
        model,
        lambda: model.fit(x, y, verbose=0),
        ValueError,
        "binary_crossentropy expects targets in [0, 1]",
        "y[7, 0]=2.0",
    )


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"batch_size": 0}, ["batch_size: expected a positive integer", "Received: batch_size=0"]),
        ({"batch_size": -3}, ["Received: batch_size=-3"]),
        ({"batch_size": 2.5}, ["Received: batch_size=2.5"]),
        ({"epochs": -1}, ["epochs: expected an integer >= 0", "Received: epochs=-1"]),
        ({"validation_split": 1.0}, ["validation_split: expected a number in [0, 1)"]),
        ({"verbose": 3}, ["verbose: expected 0, 1, 2 or 'auto'. Received: verbose=3"]),
        (
            {"validation_data": (np.zeros((2, 4)),)},
            ["validation_data must be a tuple (x_val, y_val)"],
        ),
        (
            {"validation_data": (np.zeros((2, 5)), np.zeros(2))},
            ["expects 4 input feature(s)", "x_val"],
        ),
    ],
)
def test_bad_fit_arguments(data, kwargs, fragments):
    x, labels = data
    model = mlp("sparse_categorical_crossentropy")
    kwargs = {"verbose": 0, **kwargs}
    assert_rejected(model, lambda: model.fit(x, labels, **kwargs), ValueError, *fragments)


def test_bad_batch_size_elsewhere(data):
    x, labels = data
    model = mlp("sparse_categorical_crossentropy")
    assert_rejected(
        model, lambda: model.evaluate(x, labels, batch_size=0), ValueError, "Received: batch_size=0"
    )
    assert_rejected(
        model, lambda: model.predict(x, batch_size=-1), ValueError, "Received: batch_size=-1"
    )


def test_unknown_names_list_the_known_ones():
    model = mlp("mse")
    before = model.get_weights()
    with pytest.raises(
        ValueError,
        match=r"Unknown optimizer: 'sgdd'. Known optimizers: adagrad, adam, adamax, adamw, lion, "
        r"nadam, rmsprop, sgd",
    ):
        model.compile(optimizer="sgdd", loss="mse")
    with pytest.raises(
        ValueError, match=r"Unknown loss: 'msee'. Known losses: binary_crossentropy, .*mse"
    ):
        model.compile(optimizer="sgd", loss="msee")
    with pytest.raises(
        ValueError,
        match=r"Unknown metric: 'acuracy'. Known metrics: acc, accuracy, auc, binary_accuracy",
    ):
        model.compile(optimizer="sgd", loss="mse", metrics=["acuracy"])
    with pytest.raises(ValueError, match=r"Unknown backend: 'cuda'. Known backends: numpy, llvm"):
        model.compile(optimizer="sgd", loss="mse", backend="cuda")
    with pytest.raises(ValueError, match=r"Unknown dtype: 'float16'"):
        model.compile(optimizer="sgd", loss="mse", dtype="float16")
    with pytest.raises(
        ValueError, match=r"unknown activation 'sigmoidd'; known activations: elu, .*softmax"
    ):
        Dense(3, activation="sigmoidd")
    with pytest.raises(ValueError, match=r"unknown activation 'rellu'"):
        Activation("rellu")
    # the failed compiles changed nothing: same optimizer, loss, weights
    assert (model.optimizer.name, model.loss.name) == ("SGD", "mean_squared_error")
    assert weights_equal(before, model.get_weights())


def test_bad_layer_arguments():
    with pytest.raises(
        ValueError,
        match=r"Invalid value for argument units: expected a positive integer. Received: units=-3",
    ):
        Dense(-3)
    with pytest.raises(ValueError, match=r"Received: input_dim=0"):
        Dense(3, input_dim=0)
    with pytest.raises(ValueError, match=r"Layer names must be Python identifiers"):
        Dense(3, name="my layer")
    with pytest.raises(TypeError, match=r"Only instances of symgrad.layers.Layer can be added"):
        Sequential([Dense(3, input_dim=2), "relu"])
    with pytest.raises(ValueError, match=r"Name 'a' is already the name of a layer"):
        Sequential([Dense(3, input_dim=2, name="a"), Dense(3, name="a")])


def test_fit_and_evaluate_before_compile(data):
    x, labels = data
    model = Sequential([Dense(3, input_dim=4, activation="softmax")])
    before = model.get_weights()
    for call in (
        lambda: model.fit(x, labels),
        lambda: model.evaluate(x, labels),
        lambda: model.train_on_batch(x, labels),
        lambda: model.compute_gradients(x, labels),
    ):
        with pytest.raises(
            RuntimeError, match=r"You must call compile\(\) before using the model with"
        ):
            call()
    assert weights_equal(before, model.get_weights())
    assert model.predict(x).shape == (12, 3)  # predict needs no compile, as in Keras


def test_set_weights_is_checked(data):
    model = mlp("mse")
    weights = model.get_weights()
    assert_rejected(
        model,
        lambda: model.set_weights(weights[:3]),
        ValueError,
        "set_weights expects 4 arrays (dense/kernel, dense/bias, dense_1/kernel, dense_1/bias)",
        "Received: 3 arrays",
    )
    wrong = [w.copy() for w in weights]
    wrong[0] = np.zeros((6, 4))
    wrong[1] = np.ones_like(wrong[1])
    assert_rejected(
        model,
        lambda: model.set_weights(wrong),
        ValueError,
        "Weight dense/kernel has shape (4, 6). Received: an array of shape (6, 4)",
    )
    wrong = [w.copy() for w in weights]
    wrong[3][1] = np.nan
    assert_rejected(
        model, lambda: model.set_weights(wrong), ValueError, "dense_1/bias must contain only finite"
    )


def test_nan_loss_stops_training_and_keeps_the_last_good_weights(data):
    x, labels = data
    model = Sequential([Dense(8, activation="relu", input_dim=4), Dense(3)])
    model.compile(
        optimizer=SGD(learning_rate=50.0), loss="mse", backend=BACKEND, dtype="float64", seed=0
    )
    good = []
    snapshot = LambdaCallback(
        on_train_batch_end=lambda batch, logs: good.append(model.get_weights())
    )
    with pytest.raises(NonFiniteLossError) as info:
        model.fit(
            x * 100,
            np.eye(3)[labels] * 1e3,
            epochs=50,
            batch_size=4,
            verbose=0,
            callbacks=[snapshot],
        )
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert f"at epoch {err.epoch}, batch {err.batch} of 3" in str(err)
    assert str(err).startswith(
        f"The loss became nan or inf at epoch {err.epoch}, batch {err.batch} of 3 "
        f"(optimizer step {len(good) + 1}); training stopped and nothing of that step was "
        f"written: the weights, optimizer slots and iterations are those after step {len(good)}."
    ), str(err)
    assert model.optimizer.iterations == len(good)
    assert weights_equal(model.get_weights(), good[-1])
    assert err.history.epoch == list(range(err.epoch - 1))


def test_nan_loss_on_the_first_step_changes_nothing(data):
    x, labels = data
    model = mlp("mse")
    huge = np.eye(3)[labels] * 1e200  # finite targets whose squared error overflows to inf
    err = assert_rejected(
        model, lambda: model.fit(x, huge, verbose=0), NonFiniteLossError, "at epoch 1, batch 1 of 1"
    )
    assert err.epoch == 1 and err.batch == 1


@pytest.mark.parametrize(
    ("module", "base", "name", "kind"),
    [
        ("initializers", "Initializer", "he_normal", "initializer"),
        ("losses", "Loss", "mse", "loss"),
        ("metrics", "Metric", "mae", "metric"),
        ("optimizers", "Optimizer", "adam", "optimizer"),
    ],
)
def test_every_get_takes_names_classes_and_instances_alike(module, base, name, kind):
    from importlib import import_module

    mod = import_module(f"symgrad.nn.{module}")
    made = mod.get(name.upper())  # names are case-insensitive
    assert isinstance(made, getattr(mod, base))
    assert mod.get(made) is made
    assert type(mod.get(type(made))) is type(made)
    with pytest.raises(TypeError, match=rf"Received: {kind}=3\.5 of type float"):
        mod.get(3.5)
