"""BatchNormalization and LayerNormalization: values and gradients against NumPy and PyTorch,
Keras's moving statistics, fit and predict formulas, state kept with the weights."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from codegen.backends import BACKENDS
from symgrad import expr as E
from symgrad.callbacks import Callback
from symgrad.layers import BatchNormalization, Dense, Input, LayerNormalization
from symgrad.models import Model, Sequential, load_model
from symgrad.nn.layers import Names
from symgrad.optimizers import SGD
from tests.nn.helpers import check_emitted_step

n = E.batch()
EPS = 1e-3


def normalized(x, axis, eps=EPS):
    mean = x.mean(axis=axis, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axis, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def layer_function(layer, width: int, backend: str):
    """``L = sum(R o layer(X))`` and its gradients by X and the layer's trainable weights."""
    x, r = E.matrix("X", n, width), E.matrix("R", n, width)
    layer.build(width)
    out = layer.call(x, Names(training=True))
    loss = E.total(E.hadamard(r, out))
    wrt = [x, *(w.symbol for w in layer.weights if w.trainable)]
    grads = symgrad.grad(loss, wrt)
    inputs = [x, *(w.symbol for w in layer.weights), r]
    outputs = {"N": out, "L": loss, **{f"d{w.name}": g for w, g in zip(wrt, grads)}}
    return symgrad.compile(inputs, outputs, backend=backend, dtype="float64")


LAYERS = {
    "batch": (lambda: BatchNormalization(), 0),
    "layer": (lambda: LayerNormalization(), 1),
}


@pytest.mark.parametrize("rows", [1, 2, 7])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_values_and_gradients_against_torch(kind, rows, rng):
    """Output and gradients by X, gamma and beta: PyTorch's batch_norm / layer_norm autograd,
    both backends, float64 (a batch of one row normalizes to 0 for batch normalization)."""
    torch = pytest.importorskip("torch")
    make, axis = LAYERS[kind]
    width = 5
    x, r = rng.standard_normal((rows, width)) * 3 + 1, rng.standard_normal((rows, width))
    gamma, beta = rng.standard_normal((1, width)), rng.standard_normal((1, width))
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma[0], beta[0]))
    if axis == 0 and rows == 1:  # torch refuses one row; the batch is then its mean: N = beta
        want = [np.broadcast_to(beta, x.shape), np.zeros_like(x), np.zeros(width), r[0]]
    else:
        if axis == 0:
            zeros = torch.zeros(width, dtype=torch.float64)
            ones = torch.ones(width, dtype=torch.float64)
            out = torch.nn.functional.batch_norm(tx, zeros, ones, tg, tb, training=True, eps=EPS)
        else:
            out = torch.nn.functional.layer_norm(tx, (width,), tg, tb, eps=EPS)
        (out * torch.tensor(r)).sum().backward()
        want = [out.detach().numpy(), *(t.grad.numpy() for t in (tx, tg, tb))]
    for backend in BACKENDS:
        layer = make()
        fn = layer_function(layer, width, backend)
        states = [np.zeros((1, width)), np.ones((1, width))] if axis == 0 else []
        got = fn(x, gamma, beta, *states, r)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            got[0], gamma * normalized(x, axis) + beta, rtol=1e-12, atol=1e-12
        )
        for value, expected in zip(got[2:], want[1:]):
            np.testing.assert_allclose(value.ravel(), expected.ravel(), rtol=1e-10, atol=1e-12)


def bn_model(backend="numpy", momentum=0.99, lr=0.1, seed=0):
    m = Sequential([Dense(6, input_dim=4), BatchNormalization(momentum=momentum), Dense(2)])
    m.compile(optimizer=SGD(lr), loss="mse", dtype="float64", backend=backend, seed=seed)
    return m


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_moving_statistics_follow_keras_rule(backend, rng):
    """moving = moving * momentum + batch * (1 - momentum), batch variance biased; the default
    momentum 0.99 and epsilon 1e-3; predict reads the moving statistics."""
    m = bn_model(backend)
    layer = m.layers[1]
    assert (float(layer.momentum), float(layer.epsilon)) == (0.99, 1e-3)
    moving_mean, moving_var = np.zeros((1, 6)), np.ones((1, 6))
    for _ in range(3):
        x, y = rng.standard_normal((9, 4)), rng.standard_normal((9, 2))
        kernel, bias = m.get_weights()[:2]
        z = x @ kernel + bias
        batch_mean, batch_var = z.mean(axis=0, keepdims=True), z.var(axis=0, keepdims=True)
        m.train_on_batch(x, y)
        moving_mean = moving_mean * 0.99 + batch_mean * (1 - 0.99)
        moving_var = moving_var * 0.99 + batch_var * (1 - 0.99)
        np.testing.assert_allclose(layer.moving_mean.value, moving_mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(layer.moving_variance.value, moving_var, rtol=1e-12)
    kernel, bias, gamma, beta, mean, var, k2, b2 = m.get_weights()
    z = x @ kernel + bias
    expected = (gamma * (z - mean) / np.sqrt(var + 1e-3) + beta) @ k2 + b2
    np.testing.assert_allclose(m.predict(x), expected, rtol=1e-12)
    np.testing.assert_allclose(m.evaluate(x, y), np.mean((expected - y) ** 2), rtol=1e-12)


class BatchHook(Callback):
    def on_train_batch_end(self, batch, logs=None):
        pass


def test_fit_agrees_on_every_backend_and_in_the_native_epoch():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((50, 2))
    runs = {}
    for name, backend, callbacks in [
        ("numpy", "numpy", []),
        ("llvm_epoch", "llvm", []),
        ("llvm_steps", "llvm", [BatchHook()]),
    ]:
        m = bn_model(backend, momentum=0.9, seed=3)
        history = m.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=callbacks)
        assert history.params["native_epochs"] == (name == "llvm_epoch")
        runs[name] = m.get_weights()
    for name, weights in runs.items():
        for got, want in zip(weights, runs["numpy"]):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=name)
    assert not np.allclose(runs["numpy"][4], 0)  # the moving mean moved


def test_a_failed_step_leaves_the_moving_statistics(rng):
    """All or nothing: a non-finite loss writes no weight, slot, statistic or step count."""
    m = bn_model()
    x = rng.standard_normal((8, 4))
    m.train_on_batch(x, rng.standard_normal((8, 2)))
    before = m.get_weights()
    with pytest.raises(FloatingPointError):
        m.train_on_batch(x, np.full((8, 2), 1e300))
    for got, want in zip(m.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    assert m.optimizer.iterations == 1


def test_statistics_are_saved_and_loaded(tmp_path, rng):
    m = bn_model()
    x, y = rng.standard_normal((20, 4)), rng.standard_normal((20, 2))
    m.fit(x, y, epochs=2, batch_size=5, verbose=0)
    assert [w.path for w in m.weights][2:6] == [
        "batch_normalization/gamma",
        "batch_normalization/beta",
        "batch_normalization/moving_mean",
        "batch_normalization/moving_variance",
    ]
    m.save(tmp_path / "bn.npz")
    back = load_model(tmp_path / "bn.npz")
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    other = bn_model(seed=9)
    other.load_weights_path = None
    m.save_weights(tmp_path / "w.npz")
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(
        other.layers[1].moving_variance.value, m.layers[1].moving_variance.value
    )


def test_non_trainable_statistics_are_counted_apart():
    lines = []
    bn_model().summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 68" in text and "Trainable params: 56" in text
    assert "Non-trainable params: 12" in text


def test_formulas_show_fit_and_predict():
    m = bn_model()
    f = {k: E.sstr(v) for k, v in m.forward_formulas().items()}
    assert f["N1"] == "batch_normalization_beta + batch_normalization_gamma o batchnorm(Z1)"
    assert f["N1 (predict)"] == (
        "batch_normalization_beta + batch_normalization_gamma o "
        "(Z1 - batch_normalization_moving_mean)/sqrt(batch_normalization_moving_variance + 1/1000)"
    )
    assert f["batch_normalization_moving_mean (fit update)"] == (
        "(1/(100*n))*colsum(Z1) + (99/100)*batch_normalization_moving_mean"
    )
    rule = symgrad.diff.RULE_MATH[E.Standardize]
    assert rule.startswith("d batchnorm(A)/dA: rstd o (G - mean(G) - N o mean(G o N))")
    grads = {k: E.sstr(v) for k, v in m.gradient_formulas().items()}
    assert (
        grads["batch_normalization/gamma"] == "1/n*colsum((P - Y)*dense_1_kernel.T o batchnorm(Z1))"
    )
    assert grads["batch_normalization/beta"] == "1/n*colsum((P - Y)*dense_1_kernel.T)"
    g = "(P - Y)*dense_1_kernel.T"  # dL/dN1, times n
    compact = (  # 1/n gamma o rstd o (G - mean(G) - N o mean(G o N)), N = batchnorm(Z1)
        f"1/n*(((-1/n)*colsum({g}) + (-1/n)*(colsum({g} o batchnorm(Z1)) o batchnorm(Z1))"
        f" + {g}) o rstd_Z1 o batch_normalization_gamma)"
    )
    assert grads["dense/kernel"] == f"X.T*({compact})"
    assert grads["dense/bias"] == f"colsum({compact})"
    assert "moving" not in " ".join(grads)


def test_layer_normalization_is_the_same_in_fit_and_predict(rng):
    m = Sequential([Dense(5, input_dim=3, activation="tanh"), LayerNormalization(), Dense(2)])
    m.compile(optimizer=SGD(0.1), loss="mse", dtype="float64")
    x = rng.standard_normal((6, 3))
    assert not any(k.endswith("(predict)") for k in m.forward_formulas())
    kernel, bias, gamma, beta, k2, b2 = m.get_weights()
    expected = (gamma * normalized(np.tanh(x @ kernel + bias), 1) + beta) @ k2 + b2
    np.testing.assert_allclose(m.predict(x), expected, rtol=1e-12)


def test_in_a_functional_model(rng):
    inputs = Input(shape=(4,))
    h = BatchNormalization()(Dense(6, activation="relu")(inputs))
    outputs = Dense(2)(LayerNormalization()(h))
    m = Model(inputs, outputs)
    m.compile(optimizer=SGD(0.05), loss="mse", dtype="float64")
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 2))
    before = m.evaluate(x, y)
    m.fit(x, y, epochs=5, batch_size=10, verbose=0)
    assert m.evaluate(x, y) < before
    bn = m.get_layer("batch_normalization") if hasattr(m, "get_layer") else None
    moving = [w for w in m.weights if w.path.endswith("moving_mean")]
    assert len(moving) == 1 and not np.allclose(moving[0].value, 0)
    del bn


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: BatchNormalization(momentum=1.0),
            r"BatchNormalization: momentum must be in \(0, 1\). Received: momentum=1.0",
        ),
        (
            lambda: BatchNormalization(momentum="0.9"),
            r"BatchNormalization: momentum must be a number. Received: momentum='0.9'",
        ),
        (
            lambda: BatchNormalization(epsilon=0),
            r"BatchNormalization: epsilon must be in \(0, inf\). Received: epsilon=0",
        ),
        (
            lambda: LayerNormalization(epsilon=-1e-3),
            r"LayerNormalization: epsilon must be in \(0, inf\). Received: epsilon=-0.001",
        ),
        (
            lambda: LayerNormalization(axis=0),
            r"LayerNormalization normalizes the features .*Received: axis=0",
        ),
        (
            lambda: BatchNormalization(axis=2),
            r"BatchNormalization normalizes the features .*Received: axis=2",
        ),
    ],
)
def test_bad_arguments_are_refused(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize("target", ["python", "shared"])
def test_emitted_files_update_the_statistics(target, tmp_path, rng):
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
    m = bn_model("numpy" if target == "python" else "llvm")
    check_emitted_step(m, x, y, target, tmp_path, scalars=[0.1])


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_images_are_normalized_per_channel_against_torch(backend, rng):
    """Conv2D -> BatchNormalization -> LayerNormalization on (n, 4, 4, 3) images: statistics
    per channel over the batch and the positions (batch), per position over the channels
    (layer), as Keras's axis=-1 and PyTorch's batch_norm / layer_norm; the moving statistics
    follow Keras's rule; gamma, beta and the statistics are (1, channels)."""
    torch = pytest.importorskip("torch")
    from symgrad.layers import Conv2D, Flatten

    x, y = rng.standard_normal((6, 4, 4, 3)) * 2 + 1, rng.standard_normal((6, 2))
    m = Sequential(
        [
            Conv2D(5, 3, padding="same", input_shape=(4, 4, 3)),
            BatchNormalization(momentum=0.9),
            LayerNormalization(),
            Flatten(),
            Dense(2),
        ]
    )
    m.compile(optimizer=SGD(0.1), loss="mse", dtype="float64", backend=backend, seed=0)
    kernel, bias, gamma, beta, _, _, ln_gamma, ln_beta, k2, b2 = m.get_weights()
    assert gamma.shape == (5,) and m.layers[1].moving_variance.shape == (5,)
    t = {k: torch.tensor(v) for k, v in dict(kernel=kernel, bias=bias, k2=k2, b2=b2).items()}
    images = torch.tensor(x).permute(0, 3, 1, 2)
    weights = t["kernel"].reshape(3, 3, 3, 5).permute(3, 2, 0, 1)
    z = torch.nn.functional.conv2d(images, weights, t["bias"], padding=1)
    zeros, ones = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    tg, tb = torch.tensor(gamma), torch.tensor(beta)
    bn = torch.nn.functional.batch_norm(z, zeros, ones, tg, tb, training=True, eps=EPS)
    ln = torch.nn.functional.layer_norm(
        bn.permute(0, 2, 3, 1), (5,), torch.tensor(ln_gamma), torch.tensor(ln_beta), eps=EPS
    )
    p = ln.reshape(6, -1) @ t["k2"] + t["b2"]
    assert m.train_on_batch(x, y) == pytest.approx(
        ((p - torch.tensor(y)) ** 2).mean().item(), rel=1e-12
    )
    batch_mean = z.mean(dim=(0, 2, 3)).numpy()
    batch_var = z.var(dim=(0, 2, 3), unbiased=False).numpy()
    np.testing.assert_allclose(m.layers[1].moving_mean.value[0], 0.1 * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(
        m.layers[1].moving_variance.value[0], 0.9 + 0.1 * batch_var, rtol=1e-12
    )


# --------------------------------------------------------------------------
# Per-element formulas: the compact form of the gradient


def _normalized_mlp(norm):
    model = Sequential(
        [Dense(5, input_dim=4), norm, symgrad.layers.Activation("tanh"),
         Dense(3, activation="softmax")]
    )  # fmt: skip
    model.compile(optimizer="sgd", loss="categorical_crossentropy", dtype="float64", seed=0)
    return model


ELEMENT_FORMULAS = {
    "batch": [
        "N1[k, f] = batch_normalization_gamma[f] * xhat[k, f] + batch_normalization_beta[f],  "
        "xhat[k, f] = (Z1[k, f] - mu[f]) / sigma[f]   (xhat = batchnorm(Z1))",
        "mu[f] = mean over k of Z1[k, f],  "
        "sigma[f] = sqrt(mean over k of (Z1[k, f] - mu[f])**2 + 1/1000)",
        "dL/dZ1[k, f] = batch_normalization_gamma[f] / sigma[f] * (dN1[k, f] - mean over k' of "
        "dN1[k', f] - xhat[k, f] * mean over k' of dN1[k', f] * xhat[k', f])   "
        "(1/sigma[f] = rstd_Z1)",
        "dL/dbatch_normalization_gamma[f] = sum over k of dN1[k, f] * xhat[k, f]",
        "dL/dbatch_normalization_beta[f] = sum over k of dN1[k, f]",
    ],
    "layer": [
        "N1[k, f] = layer_normalization_gamma[f] * xhat[k, f] + layer_normalization_beta[f],  "
        "xhat[k, f] = (Z1[k, f] - mu[k]) / sigma[k]   (xhat = layernorm(Z1))",
        "mu[k] = mean over f of Z1[k, f],  "
        "sigma[k] = sqrt(mean over f of (Z1[k, f] - mu[k])**2 + 1/1000)",
        "dL/dZ1[k, f] = 1 / sigma[k] * (h[k, f] - mean over f' of h[k, f'] - xhat[k, f] * "
        "mean over f' of h[k, f'] * xhat[k, f']),  h[k, f] = layer_normalization_gamma[f] * "
        "dN1[k, f]   (1/sigma[k] = rstd_Z1)",
        "dL/dlayer_normalization_gamma[f] = sum over k of dN1[k, f] * xhat[k, f]",
        "dL/dlayer_normalization_beta[f] = sum over k of dN1[k, f]",
    ],
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_element_formulas_show_the_compact_gradient(kind):
    model = _normalized_mlp(LAYERS[kind][0]())
    assert model.element_formulas() == ELEMENT_FORMULAS[kind]
    explained = model.explain()
    assert "Per element:\n" + "\n".join(f"  {line}" for line in ELEMENT_FORMULAS[kind]) in explained


def _compact_input_gradient(kind, dn, xhat, sigma, gamma):
    """The pinned formula of dL/dZ1 in NumPy: statistics over the batch (batch
    normalization, gamma out of the bracket) or over each row's features (layer)."""
    if kind == "batch":
        mean = lambda m: m.mean(0, keepdims=True)  # noqa: E731 - the formula's "mean over k'"
        return gamma / sigma * (dn - mean(dn) - xhat * mean(dn * xhat))
    h = gamma * dn
    mean = lambda m: m.mean(1, keepdims=True)  # noqa: E731 - "mean over f'"
    return (h - mean(h) - xhat * mean(h * xhat)) / sigma


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_the_compact_form_is_the_gradient(kind, rng):
    """The element formulas evaluated in NumPy (forward in fit's form, the cotangent dN1 by
    hand) and chained back into the Dense layer give the gradients of fit's graph (the tape
    on model(x, training=True), train_on_batch's bit for bit; compute_gradients takes
    predict's graph, on the moving statistics)."""
    model = _normalized_mlp(LAYERS[kind][0]())
    axis = LAYERS[kind][1]
    x, labels = rng.standard_normal((9, 4)), rng.integers(0, 3, 9)
    y = np.eye(3)[labels]
    kernel, bias = model.layers[0].get_weights()
    gamma, beta = 1.0 + 0.5 * rng.standard_normal(5), 0.3 * rng.standard_normal(5)
    model.layers[1].set_weights([gamma, beta, *model.layers[1].get_weights()[2:]])
    w2, b2 = model.layers[3].get_weights()
    z1 = x @ kernel + bias
    mu = z1.mean(axis, keepdims=True)
    sigma = np.sqrt(((z1 - mu) ** 2).mean(axis, keepdims=True) + EPS)
    xhat = (z1 - mu) / sigma
    a1 = np.tanh(gamma * xhat + beta)
    z2 = a1 @ w2 + b2
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dn = ((p - y) / len(x)) @ w2.T * (1 - a1**2)
    dz1 = _compact_input_gradient(kind, dn, xhat, sigma, gamma)
    expected = [x.T @ dz1, dz1.sum(0), (dn * xhat).sum(0), dn.sum(0)]
    with symgrad.GradientTape() as tape:
        value = symgrad.ops.reduce_mean(
            symgrad.losses.categorical_crossentropy(y, model(x, training=True))
        )
    for got, want in zip(tape.gradient(value, model.trainable_weights)[:4], expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------
# gradient_formulas(): the compact form at the matrix level


def _residual_normalized(norm):
    """A skip connection around the normalization: the Dense below it is reached by two paths."""
    x = Input(shape=(4,), name="x")
    z = Dense(5, name="proj")(x)
    h = symgrad.layers.Add(name="skip")([z, symgrad.layers.Activation("tanh")(norm(z))])
    model = Model(x, Dense(3, activation="softmax", name="out")(h))
    model.compile(optimizer="sgd", loss="categorical_crossentropy", dtype="float64", seed=0)
    return model


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("make", [_normalized_mlp, _residual_normalized])
def test_the_displayed_gradients_are_the_training_graph_s(kind, make, rng):
    """gradient_formulas() evaluated as displayed (compiled, NumPy) equals the simplified
    gradients of fit's graph at random weights and data."""
    from symgrad import formulas

    model = make(LAYERS[kind][0]())
    graph = model._training_graph()
    wrt = [w.symbol for w in graph.trainable]
    shown = model.gradient_formulas()
    trained = formulas.gradients(graph.raw_loss, wrt, context=[graph.output]).simplified
    assert any("rstd_Z1" in E.sstr(shown[w.path]) for w in graph.trainable)
    displayed = [shown[w.path] for w in graph.trainable]
    fit = [trained[w.symbol] for w in graph.trainable]
    inputs = E.leaves([*displayed, *fit])
    fn = symgrad.compile(inputs, {f"g{i}": g for i, g in enumerate(displayed + fit)},
                         backend="numpy", dtype="float64")  # fmt: skip
    rows = 9
    values = []
    for s in inputs:
        shape = tuple(rows if d == n else int(d) for d in s.shape)
        values.append(np.eye(shape[1])[rng.integers(0, shape[1], rows)] if s.name == "Y"
                      else rng.standard_normal(shape))  # fmt: skip
    out = fn(*values)
    half = len(displayed)
    for w, got, want in zip(graph.trainable, out[:half], out[half:]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13, err_msg=w.path)


GRADIENT_FORMULAS = {  # dense/kernel of _normalized_mlp: X.T*dZ1, dZ1 by the compact rule
    "batch": "X.T*(1/n*(((-1/n)*colsum(H) + (-1/n)*(colsum(H o batchnorm(Z1)) o batchnorm(Z1))"
    " + H) o rstd_Z1 o batch_normalization_gamma))",
    "layer": "X.T*((1/(5*n))*((-rowsum(H) - (rowsum(H o layernorm(Z1)) o layernorm(Z1)) + 5*(H))"
    " o rstd_Z1))",
}
COTANGENTS = {  # H: n dL/dN1 (batch: gamma out of the bracket), n gamma o dL/dN1 (layer)
    "batch": "(P - Y)*dense_1_kernel.T o (1 - A1**2)",
    "layer": "(P - Y)*dense_1_kernel.T o layer_normalization_gamma o (1 - A1**2)",
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_gradient_formulas_pin_the_compact_form(kind):
    shown = _normalized_mlp(LAYERS[kind][0]()).gradient_formulas()
    text = GRADIENT_FORMULAS[kind].replace("H", COTANGENTS[kind])
    assert E.sstr(shown["dense/kernel"]) == text
    assert E.sstr(shown["dense/bias"]) == f"colsum({text[len('X.T*(') : -1]})"


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_frozen_layer_normalizes_with_its_moving_statistics_in_fit(backend, rng):
    """Keras's frozen BatchNormalization (trainable=False before compile) runs as in predict:
    a step's loss is evaluate's on the same batch, gamma, beta and the moving statistics
    stay bit for bit, the other layers train."""
    m = Sequential([Dense(6, input_dim=4), BatchNormalization(momentum=0.9), Dense(2)])
    m.layers[1].trainable = False
    m.compile(optimizer=SGD(0.1), loss="mse", dtype="float64", backend=backend, seed=0)
    pretrained = [rng.uniform(0.5, 2.0, 6), rng.standard_normal(6), rng.standard_normal(6)]
    m.layers[1].set_weights([*pretrained, rng.uniform(0.5, 2.0, 6)])
    x, y = rng.standard_normal((9, 4)), rng.standard_normal((9, 2))
    before = m.get_weights()
    loss = m.evaluate(x, y)
    np.testing.assert_allclose(m.train_on_batch(x, y), loss, rtol=1e-12)
    m.fit(x, y, epochs=2, batch_size=4, verbose=0)
    after = m.get_weights()
    for k in (2, 3, 4, 5):  # gamma, beta, moving mean and variance
        np.testing.assert_array_equal(after[k], before[k])
    for k in (0, 1, 6, 7):
        assert not np.array_equal(after[k], before[k])
