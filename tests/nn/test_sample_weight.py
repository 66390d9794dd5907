"""sample_weight and class_weight in fit / evaluate: inside the compiled step (the native epoch
stays on), against Keras's weighted loss written in NumPy, on both backends; bad input."""

from __future__ import annotations

import numpy as np
import pytest

from symgrad.compiler import BACKENDS
from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.optimizers import SGD
from tests.nn.helpers import blobs


def _model(backend, loss="categorical_crossentropy", lr=0.1):
    output = {"categorical_crossentropy": "softmax", "mse": None}[loss]
    model = Sequential([Dense(5, activation="tanh", input_dim=4), Dense(3, activation=output)])
    model.compile(
        optimizer=SGD(lr),
        loss=loss,
        metrics=["accuracy"] if loss != "mse" else None,
        backend=backend,
        dtype="float64",
        seed=0,
    )
    return model


def _per_sample(model, x, y, loss):
    """Keras's per-sample loss in NumPy from the model's weights."""
    w1, b1, w2, b2 = model.get_weights()
    z = np.tanh(x @ w1 + b1) @ w2 + b2
    if loss == "mse":
        return np.mean((z - y) ** 2, axis=1)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return -np.sum(y * np.log(p), axis=1)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("loss", ["categorical_crossentropy", "mse"])
def test_evaluate_weights_each_sample_s_loss(loss, backend, rng):
    model = _model(backend, loss)
    x, labels = blobs(rng, n=10)
    y = np.eye(3)[labels]
    weights = rng.uniform(0, 3, 10)
    got = model.evaluate(x, y, batch_size=10, sample_weight=weights)
    got = got[0] if isinstance(got, list) else got
    want = np.sum(weights * _per_sample(model, x, y, loss)) / 10  # Keras: over the batch size
    np.testing.assert_allclose(got, want, rtol=1e-12)
    plain = model.evaluate(x, y, batch_size=10)  # and the plain program still serves
    plain = plain[0] if isinstance(plain, list) else plain
    np.testing.assert_allclose(plain, np.mean(_per_sample(model, x, y, loss)), rtol=1e-12)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_fit_with_integer_weights_equals_repeated_rows(backend, rng):
    """A full-batch SGD step with weights (2, 0, 1, ...) is the step on the data with row i
    repeated w_i times, at the rate scaled by (rows repeated) / (rows): the weights act inside
    the step. The native epoch stays on (LLVM)."""
    x, labels = blobs(rng, n=12)
    y = np.eye(3)[labels]
    counts = rng.integers(0, 4, 12)
    weighted = _model(backend)
    history = weighted.fit(x, y, batch_size=12, epochs=3, shuffle=False, verbose=0,
                           sample_weight=counts)  # fmt: skip
    assert history.params["native_epochs"] == bool(BACKENDS[backend].epochs)
    repeated = _model(backend, lr=0.1 * counts.sum() / 12)
    xr, yr = np.repeat(x, counts, axis=0), np.repeat(y, counts, axis=0)
    repeated.fit(xr, yr, batch_size=len(xr), epochs=3, shuffle=False, verbose=0)
    for a, b in zip(weighted.get_weights(), repeated.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_class_weight_is_the_sample_weight_of_each_class(backend, rng):
    x, labels = blobs(rng, n=24)
    y = np.eye(3)[labels]
    by_class = _model(backend)
    by_class.fit(
        x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, class_weight={0: 2.0, 2: 0.5}
    )  # fmt: skip  (class 1 keeps weight 1)
    by_sample = _model(backend)
    by_sample.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                  sample_weight=np.array([2.0, 1.0, 0.5])[labels])  # fmt: skip
    for a, b in zip(by_class.get_weights(), by_sample.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    plain = _model(backend)
    plain.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert not np.allclose(plain.get_weights()[0], by_class.get_weights()[0])


def test_sparse_labels_take_class_weights(rng):
    x, labels = blobs(rng, n=12)
    sparse = Sequential([Dense(3, activation="softmax", input_dim=4)])
    sparse.compile(
        optimizer=SGD(0.1), loss="sparse_categorical_crossentropy", dtype="float64", seed=0
    )
    twin = Sequential([Dense(3, activation="softmax", input_dim=4)])
    twin.compile(
        optimizer=SGD(0.1), loss="sparse_categorical_crossentropy", dtype="float64", seed=0
    )
    sparse.fit(x, labels, epochs=1, verbose=0, class_weight={0: 3.0, 2: 0.25}, shuffle=False)
    twin.fit(x, labels, epochs=1, verbose=0, shuffle=False,
             sample_weight=np.array([3.0, 1.0, 0.25])[labels])  # fmt: skip
    for a, b in zip(sparse.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_validation_data_may_carry_weights(rng):
    x, labels = blobs(rng, n=12)
    y = np.eye(3)[labels]
    model = _model("numpy")
    weights = rng.uniform(0, 2, 12)
    history = model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y, weights))
    want = model.evaluate(x, y, sample_weight=weights)[0]
    assert history.history["val_loss"][0] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"class_weight": {0: 1.0, 5: 2.0}},
            ValueError,
            "class_weight has a key that is no class of the model: 5. Classes: 0, 1, 2",
        ),
        (
            {"class_weight": {2: 3.0}},
            ValueError,
            "class_weight has class 2, which no sample of y has. Classes in y: 0, 1",
        ),
        (
            {"class_weight": {0: -1.0}},
            ValueError,
            "class_weight values must be finite and >= 0. Received: class_weight[0]=-1.0",
        ),
        ({"class_weight": [1.0, 2.0]}, TypeError, "class_weight must be a dict"),
        (
            {"sample_weight": np.ones(5)},
            ValueError,
            "sample_weight must hold one weight per sample: shape (6,). Received: sample_weight "
            "with shape (5,)",
        ),
        (
            {"sample_weight": np.array([1, 1, -2, 1, 1, 1.0])},
            ValueError,
            "sample_weight must be finite and >= 0. Received: sample_weight[2]=-2",
        ),
    ],
)
def test_bad_weights(kwargs, error, message, rng):
    model = _model("numpy")
    x = rng.standard_normal((6, 4))
    y = np.eye(3)[[0, 1, 0, 1, 1, 0]]  # no sample of class 2
    before = model.get_weights()
    with pytest.raises(error) as err:
        model.fit(x, y, verbose=0, **kwargs)
    assert message in str(err.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.optimizer.iterations == 0


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_several_outputs_weight_every_output_s_loss(backend, rng):
    from tests.nn.test_functional import compile_two, multi_data, two_in_two_out

    model = compile_two(two_in_two_out(), backend)
    x, y = multi_data(rng)
    weights = rng.uniform(0, 2, 12)
    cls, reg = model.predict(x)
    cce = -np.log(cls[np.arange(12), y["cls"]])
    mse = (reg[:, 0] - y["reg"]) ** 2
    want = np.sum(weights * cce) / 12 + 0.5 * np.sum(weights * mse) / 12
    got = model.evaluate(x, y, sample_weight=weights, return_dict=True)["loss"]
    assert got == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="class_weight is for models with one output; this one"):
        model.fit(x, y, class_weight={0: 2.0}, verbose=0)
    history = model.fit(x, y, sample_weight=weights, epochs=3, batch_size=4, verbose=0)
    assert history.params["native_epochs"] == bool(BACKENDS[backend].epochs)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_validation_split_takes_the_weights_of_its_rows(rng):
    x, labels = blobs(rng, n=12)
    y = np.eye(3)[labels]
    weights = rng.uniform(0, 2, 12)
    model = _model("numpy")
    history = model.fit(x, y, epochs=1, verbose=0, validation_split=0.25, sample_weight=weights)
    want = model.evaluate(x[9:], y[9:], sample_weight=weights[9:])[0]
    assert history.history["val_loss"][0] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_train_on_batch_with_weights_is_fit_s_step(backend, rng):
    x, labels = blobs(rng, n=8)
    y = np.eye(3)[labels]
    weights = rng.uniform(0, 2, 8)
    one, other = _model(backend), _model(backend)
    loss = one.train_on_batch(x, y, sample_weight=weights)[0]
    other.fit(x, y, batch_size=8, shuffle=False, verbose=0, sample_weight=weights)
    assert loss == pytest.approx(other.history.history["loss"][0], rel=1e-12)
    for a, b in zip(one.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    tested = one.test_on_batch(x, y, sample_weight=weights)[0]
    assert tested == pytest.approx(one.evaluate(x, y, sample_weight=weights)[0], rel=1e-12)


def test_the_weighted_softmax_gradient_still_simplifies():
    """Y_true is declared as the loss declares its targets: the weights leave the row sum,
    rowsum(Y_true) = 1 folds, and the output layer's gradient is SW o (P - Y_true) / n."""
    model = _model("numpy")
    graph = model._weighted_programs().graph
    d_kernel = str(graph.gradients[model.layers[1].weights[0].symbol].body)
    assert d_kernel == "1/n*A1.T*(-(Y[:, 3:4] o Y[:, 0:3]) + Y[:, 3:4] o P)"
