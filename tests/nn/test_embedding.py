"""Embedding: integer rows (n, steps) -> their vectors side by side; the gradient a scatter-add."""

from __future__ import annotations

import numpy as np
import pytest

from codegen.backends import BACKENDS
from symgrad.callbacks import Callback
from symgrad.layers import Dense, Embedding, Flatten, Input
from symgrad.models import Model, Sequential, load_model
from symgrad.optimizers import SGD
from tests.nn.helpers import check_emitted_step

VOCABULARY, WIDTH, STEPS = 11, 4, 5


def model(backend="numpy", seed=0, metrics=None):
    m = Sequential([Embedding(VOCABULARY, WIDTH, input_length=STEPS), Flatten(), Dense(3)])
    m.compile(
        optimizer=SGD(0.5), loss="mse", dtype="float64", backend=backend, seed=seed, metrics=metrics
    )
    return m


def data(rows=21, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCABULARY, (rows, STEPS))
    x[0] = 3  # a row that repeats one index: its gradient sums over the repeats
    return x, rng.standard_normal((rows, 3))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_lookup_and_scatter_add_gradient(backend):
    """predict is table[x] then the Dense; d embeddings is the scatter-add of dE1 (np.add.at)."""
    m = model(backend)
    x, y = data()
    table, kernel, bias = m.get_weights()
    e = table[x].reshape(len(x), STEPS * WIDTH)
    p = e @ kernel + bias
    np.testing.assert_allclose(m.predict(x), p, rtol=1e-13)
    de = 2 * (p - y) / p.size @ kernel.T
    expected = np.zeros_like(table)
    np.add.at(expected, x.ravel(), de.reshape(-1, WIDTH))
    got = m.compute_gradients(x, y)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-16)
    unused = sorted(set(range(VOCABULARY)) - set(x.ravel()))
    assert not got[unused].any()  # untouched rows get no gradient


def test_gradient_against_finite_differences_and_torch(check_grad):
    m = model()
    x, y = data()
    table, kernel, bias = m.get_weights()

    def loss(xs):
        m.set_weights([xs[0], kernel, bias])
        return float(m.evaluate(x, y, batch_size=len(x)))

    grads = m.compute_gradients(x, y)
    check_grad(loss, [table], [grads[0]], rtol=1e-6)
    torch = pytest.importorskip("torch")
    w = torch.tensor(table, requires_grad=True)
    e = torch.nn.functional.embedding(torch.tensor(x), w).reshape(len(x), -1)
    p = e @ torch.tensor(kernel) + torch.tensor(bias)
    ((p - torch.tensor(y)) ** 2).mean().backward()
    np.testing.assert_allclose(grads[0], w.grad.numpy(), rtol=1e-12, atol=1e-16)


class BatchHook(Callback):
    def on_train_batch_end(self, batch, logs=None):
        pass


def test_fit_agrees_on_every_backend_and_in_the_native_epoch():
    x, y = data(40)
    runs = {}
    for name, backend, callbacks in [
        ("numpy", "numpy", []),
        ("llvm_epoch", "llvm", []),
        ("llvm_steps", "llvm", [BatchHook()]),
    ]:
        m = model(backend, seed=2, metrics=["mae"])
        history = m.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=callbacks)
        assert history.params["native_epochs"] == (name == "llvm_epoch")
        runs[name] = m.get_weights()
    for name, weights in runs.items():
        for got, want in zip(weights, runs["numpy"]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize(
    ("bad", "shown"), [(11, "11"), (-1, "-1"), (2.5, "2.5"), (1e9, "1000000000")]
)
@pytest.mark.parametrize("verb", ["fit", "predict", "evaluate"])
def test_bad_indices_are_refused_before_any_code_runs(bad, shown, verb):
    m = model()
    x, y = data()
    x = x.astype(float)
    x[4, 2] = bad
    before = m.get_weights()
    call = {
        "fit": lambda: m.fit(x, y, verbose=0),
        "predict": lambda: m.predict(x),
        "evaluate": lambda: m.evaluate(x, y),
    }[verb]
    message = (
        rf"Layer 'embedding' \(Embedding\) reads integer indices in \[0, 11\) \(input_dim=11\). "
        rf"Received: x\[4, 2\]={shown}"
    )
    with pytest.raises(ValueError, match=message):
        call()
    for got, want in zip(m.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_in_a_functional_model():
    tokens = Input(shape=(STEPS,), name="tokens")
    m = Model(tokens, Dense(3)(Flatten()(Embedding(VOCABULARY, WIDTH)(tokens))))
    m.compile(optimizer=SGD(0.5), loss="mse", dtype="float64")
    x, y = data()
    before = m.evaluate(x, y)
    m.fit(x, y, epochs=5, batch_size=7, verbose=0)
    assert m.evaluate(x, y) < before
    with pytest.raises(ValueError, match=r"Received: x\[0, 0\]=12"):
        m.predict(np.full((2, STEPS), 12))


def test_formulas_show_the_lookup_and_the_scatter_add():
    m = model()
    assert str(m.forward_formulas()["E1"]) == "embedding_embeddings[X]"
    assert str(m.gradient_formulas()["embedding/embeddings"]) == (
        "(2/(3*n))*scatter_add((P - Y)*dense_kernel.T, X)"
    )


def test_saved_and_loaded(tmp_path):
    m = model()
    x, y = data()
    m.fit(x, y, epochs=2, verbose=0)
    m.save(tmp_path / "e.npz")
    np.testing.assert_array_equal(load_model(tmp_path / "e.npz").predict(x), m.predict(x))


@pytest.mark.parametrize("target", ["python", "shared"])
def test_emitted_files_agree_with_the_model(target, tmp_path):
    x, y = data(16)
    m = model("numpy" if target == "python" else "llvm")
    check_emitted_step(m, x, y, target, tmp_path, scalars=[0.5])


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_sequence_of_vectors_for_pooling_and_flatten(backend):
    """Embedding's samples are (steps, output_dim), as Keras: pooled over the steps or
    flattened, on both backends."""
    from symgrad.layers import Flatten, GlobalAveragePooling1D

    x, _ = data(9)
    for pooling, reference in [
        (GlobalAveragePooling1D(), lambda e: e.mean(axis=1)),
        (Flatten(), lambda e: e.reshape(len(e), -1)),
    ]:
        m = Sequential([Embedding(VOCABULARY, WIDTH, input_length=STEPS), pooling, Dense(3)])
        m.compile(optimizer=SGD(0.1), loss="mse", dtype="float64", backend=backend)
        assert m.layers[0].compute_output_shape((STEPS,)) == (STEPS, WIDTH)
        table, kernel, bias = m.get_weights()
        np.testing.assert_allclose(m.predict(x), reference(table[x]) @ kernel + bias, atol=1e-15)
