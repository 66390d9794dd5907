"""Convolution and pooling layers: finite differences over a table of configurations,
PyTorch autograd where torch is installed, NumPy and LLVM to 1e-12, models and errors.

Each configuration builds the layer on rows of images, reduces its output to a scalar
with a fixed random weighting R, derives the gradients of the input and of every weight
symbolically and checks them against central finite differences (float64, random
directions), then runs the same program on every backend (``compare_backends``).
"""

from __future__ import annotations

import numpy as np
import pytest

import symgrad
from symgrad import expr as E
from symgrad.layers import (
    AveragePooling1D,
    AveragePooling2D,
    Conv1D,
    Conv2D,
    Dense,
    Flatten,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    Input,
    MaxPooling1D,
    MaxPooling2D,
)
from symgrad.models import Model, Sequential
from symgrad.nn.layers import Names
from tests.codegen.parity import compare_backends

# name -> (layer factory, per-sample input shape, batch size)
CONFIGS = {
    "conv2d-3x3-valid": (lambda: Conv2D(3, 3), (5, 6, 2), 1),
    "conv2d-3x3-same": (lambda: Conv2D(2, 3, padding="same", activation="tanh"), (5, 4, 3), 3),
    "conv2d-2x3-stride2-same": (lambda: Conv2D(4, (2, 3), strides=2, padding="same"), (7, 6, 1), 5),
    "conv2d-stride-2x1-valid": (lambda: Conv2D(2, 3, strides=(2, 1)), (7, 5, 2), 3),
    "conv2d-dilated-same": (lambda: Conv2D(2, 3, dilation_rate=2, padding="same"), (6, 7, 2), 3),
    "conv2d-dilated-valid": (lambda: Conv2D(3, 2, dilation_rate=(2, 1)), (5, 4, 2), 1),
    "conv2d-1x1-no-bias": (lambda: Conv2D(4, 1, use_bias=False), (3, 3, 5), 3),
    "conv2d-softmax": (lambda: Conv2D(3, 2, activation="softmax"), (4, 4, 2), 3),
    "conv1d-3-valid": (lambda: Conv1D(3, 3), (7, 2), 1),
    "conv1d-4-same-stride2": (lambda: Conv1D(2, 4, strides=2, padding="same"), (9, 3), 5),
    "conv1d-dilated": (lambda: Conv1D(2, 3, dilation_rate=2, padding="same"), (8, 2), 3),
    "maxpool2d-2": (lambda: MaxPooling2D(), (6, 4, 3), 3),
    "maxpool2d-3-stride2-same": (lambda: MaxPooling2D(3, strides=2, padding="same"), (5, 5, 2), 1),
    "maxpool2d-2x1-same": (lambda: MaxPooling2D((2, 1), padding="same"), (5, 3, 2), 5),
    "avgpool2d-2": (lambda: AveragePooling2D(), (4, 6, 2), 3),
    "avgpool2d-3-stride2-same": (lambda: AveragePooling2D(3, 2, padding="same"), (5, 5, 2), 1),
    "maxpool1d-2": (lambda: MaxPooling1D(), (7, 3), 3),
    "maxpool1d-3-same": (lambda: MaxPooling1D(3, 2, padding="same"), (8, 2), 5),
    "avgpool1d-3-same": (lambda: AveragePooling1D(3, 2, padding="same"), (8, 2), 3),
    "globalmax2d": (lambda: GlobalMaxPooling2D(), (3, 4, 2), 3),
    "globalavg2d": (lambda: GlobalAveragePooling2D(), (3, 4, 2), 1),
    "globalmax1d": (lambda: GlobalMaxPooling1D(), (5, 3), 5),
    "globalavg1d": (lambda: GlobalAveragePooling1D(), (5, 3), 3),
}


def _case(config: str):
    """The layer on symbolic rows X, loss sum(R o layer(X)), gradients of X and the weights."""
    make, shape, batch = CONFIGS[config]
    layer = make()
    layer._name = "layer"
    layer.build(shape)
    n = E.batch()
    x = E.matrix("X", n, int(np.prod(shape)))
    out = layer.call(x, Names())
    r = E.matrix("R", *out.shape)
    loss = E.total(E.hadamard(r, out))
    wrt = [x, *(w.symbol for w in layer.weights)]
    grads = symgrad.grad(loss, wrt)
    fn = symgrad.compile([*wrt, r], {"loss": loss, **{f"d{i}": g for i, g in enumerate(grads)}})
    rng = np.random.default_rng(sum(map(ord, config)))
    values = [rng.standard_normal((batch, int(np.prod(shape))))]
    values += [rng.standard_normal(w.matrix_shape) for w in layer.weights]
    width = int(out.shape[1])
    return layer, fn, values, rng.standard_normal((batch, width))


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_gradients_match_finite_differences(config, check_grad):
    _, fn, values, r = _case(config)

    def loss(xs):
        return float(fn(*xs, r)[0][0, 0])

    outs = fn(*values, r)
    check_grad(loss, values, list(outs[1:]), rtol=1e-6)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_backends_agree(config):
    _, fn, values, r = _case(config)
    compare_backends(fn.program, [*values, r])


# --------------------------------------------------------------------------
# PyTorch autograd


def _torch_forward(layer, x, weights):
    """The same layer in PyTorch (NCHW inside, channels last outside)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    win = layer.window
    image = x.reshape(-1, win.in_h, win.in_w, win.channels).permute(0, 3, 1, 2)
    bottom = max((win.out_h - 1) * win.stride_h + (win.k_h - 1) * win.dil_h + 1 - win.in_h, 0)
    right = max((win.out_w - 1) * win.stride_w + (win.k_w - 1) * win.dil_w + 1 - win.in_w, 0)
    pads = (win.pad_left, right - win.pad_left, win.pad_top, bottom - win.pad_top)
    stride, kernel = (win.stride_h, win.stride_w), (win.k_h, win.k_w)
    if isinstance(layer, (Conv1D, Conv2D)):
        k = weights[0].reshape(win.k_h, win.k_w, win.channels, -1).permute(3, 2, 0, 1)
        y = F.conv2d(F.pad(image, pads), k, stride=stride, dilation=(win.dil_h, win.dil_w))
        if layer.use_bias:
            y = y + weights[1].reshape(1, -1, 1, 1)
        y = {None: y, "tanh": torch.tanh(y), "softmax": torch.softmax(y, dim=1)}[layer.activation]
    elif "Max" in type(layer).__name__:
        y = F.max_pool2d(F.pad(image, pads, value=-float("inf")), kernel, stride)
    else:  # average over the taps inside the image: the padding does not count
        ones = F.pad(torch.ones_like(image), pads)
        y = F.avg_pool2d(F.pad(image, pads), kernel, stride) / F.avg_pool2d(ones, kernel, stride)
    return y.permute(0, 2, 3, 1).reshape(len(x), -1)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_pytorch_autograd(config):
    torch = pytest.importorskip("torch")
    layer, fn, values, r = _case(config)
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    y = _torch_forward(layer, tensors[0], tensors[1:])
    (y * torch.tensor(r)).sum().backward()
    outs = fn(*values, r)
    np.testing.assert_allclose(
        outs[0][0, 0], float((y * torch.tensor(r)).sum().detach()), rtol=1e-12
    )
    for got, t in zip(outs[1:], tensors):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_max_pool_routes_the_cotangent_to_the_argmax():
    layer = MaxPooling2D()
    layer.build((2, 2, 1))
    x = E.matrix("X", E.batch(), 4)
    loss = E.total(layer.call(x, Names()))
    fn = symgrad.compile([x], {"g": symgrad.grad(loss, x)})
    (g,) = fn(np.array([[1.0, 5.0, -2.0, 3.0]]))
    assert g.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_max_pool_never_picks_the_padding():
    """All-negative windows at the border: the padding (-inf) is no candidate."""
    model = Sequential([Input(shape=(3, 3, 1)), MaxPooling2D(padding="same")])
    x = -np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    out = model.predict(x)
    assert out[..., 0].tolist() == [[[-1.0, -3.0], [-7.0, -9.0]]]


# --------------------------------------------------------------------------
# Models


def _digits_like(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 6, 1)), rng.integers(0, 3, n)


def _cnn(backend="numpy"):
    model = Sequential(
        [
            Input(shape=(6, 6, 1)),
            Conv2D(4, 3, padding="same", activation="relu"),
            MaxPooling2D(),
            Conv2D(4, 2, activation="tanh"),
            GlobalAveragePooling2D(),
            Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", seed=1, backend=backend,
        dtype="float64",
    )  # fmt: skip
    return model


def test_a_cnn_learns_and_both_backends_train_alike():
    x, y = _digits_like()
    models = {b: _cnn(b) for b in ("numpy", "llvm")}
    history = {
        b: m.fit(x, y, epochs=5, batch_size=7, shuffle=False, verbose=0) for b, m in models.items()
    }
    losses = history["numpy"].history["loss"]
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(history["llvm"].history["loss"], losses, rtol=1e-10)
    for a, b in zip(models["numpy"].get_weights(), models["llvm"].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(models["llvm"].predict(x), models["numpy"].predict(x), rtol=1e-10)


def test_functional_cnn_and_shapes():
    inputs = Input(shape=(8, 3))
    h = Conv1D(5, 3, padding="same", activation="relu")(inputs)
    assert h.shape == (None, 8, 5)
    h = MaxPooling1D()(h)
    assert h.shape == (None, 4, 5)
    model = Model(inputs, Dense(2, activation="softmax")(Flatten()(h)))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", seed=0)
    rng = np.random.default_rng(0)
    model.fit(rng.random((10, 8, 3)), rng.integers(0, 2, 10), epochs=1, verbose=0)
    assert model.predict(rng.random((3, 8, 3))).shape == (3, 2)


def test_conv_kernel_is_keras_layout_reshaped():
    """get_weights / set_weights speak Keras's (kh, kw, C, F) kernel; the programs' (kh*kw*C, F)
    matrix is it row-major (still accepted): a 4-D kernel gives the convolution by its
    definition, and the optimizer's slots of a kernel have its shape too."""
    model = Sequential([Input(shape=(4, 4, 2)), Conv2D(3, (2, 3), use_bias=False)])
    model.compile(optimizer="adam", loss="mse", dtype="float64")
    rng = np.random.default_rng(0)
    k4 = rng.standard_normal((2, 3, 2, 3))
    model.set_weights([k4])
    assert model.get_weights()[0].shape == (2, 3, 2, 3)
    np.testing.assert_array_equal(model.get_weights()[0], k4)
    model.set_weights([k4.reshape(12, 3)])  # the matrix layout of older files
    np.testing.assert_array_equal(model.get_weights()[0], k4)
    model.fit(rng.standard_normal((2, 4, 4, 2)), rng.standard_normal((2, 3, 2, 3)), verbose=0)
    assert {v.shape for v in model.optimizer.variables if "kernel" in v.path} == {(2, 3, 2, 3)}
    model.set_weights([k4])
    conv1d = Sequential([Input(shape=(5, 2)), Conv1D(4, 3)])
    conv1d.compile(optimizer="sgd", loss="mse")
    assert [w.shape for w in conv1d.get_weights()] == [(3, 2, 4), (4,)]  # Keras's Conv1D
    x = rng.standard_normal((2, 4, 4, 2))
    want = np.zeros((2, 3, 2, 3))
    for i in range(3):
        for j in range(2):
            want[:, i, j] = np.einsum("kuvc,uvcf->kf", x[:, i : i + 2, j : j + 3], k4)
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-12)


def test_summary_and_formulas_show_the_windows():
    model = Sequential([Input(shape=(8, 8, 1)), Conv2D(4, 3, activation="relu"), MaxPooling2D()])
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    assert " conv2d (Conv2D)              (None, 6, 6, 4)          40   Z1 = " in text
    assert "Z1 = reshape(conv2d_bias + im2col_3x3(X)*conv2d_kernel, (n, 144))" in text
    assert "P = reshape(rowmax(im2col_2x2/2(A1)), (n, 36))" in text


def test_saved_cnn_round_trips(tmp_path):
    from symgrad.models import load_model

    model = _cnn()
    x, y = _digits_like(n=6)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "cnn.npz")
    loaded = load_model(tmp_path / "cnn.npz")
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-12)


# --------------------------------------------------------------------------
# Bad input


BAD_LAYERS = [
    (lambda: Conv2D(4, 3, strides=0), r"Conv2D: strides must be a positive integer or a tuple "
     r"of 2 positive integers\. Received: strides=0"),
    (lambda: Conv2D(4, 3, strides=(1, -2), name="c"), r"Layer 'c' \(Conv2D\): strides must be .*"
     r"Received: strides=\(1, -2\)"),
    (lambda: Conv1D(4, (3, 3)), r"Conv1D: kernel_size must be a positive integer or a tuple of 1 "
     r"positive integers\. Received: kernel_size=\(3, 3\)"),
    (lambda: MaxPooling2D(strides=0), r"MaxPooling2D: strides must be .*Received: strides=0"),
    (lambda: Conv2D(4, 3, padding="full"), r"padding must be 'valid' or 'same'\. "
     r"Received: padding='full'"),
    (lambda: Conv2D(4, 3, strides=2, dilation_rate=2), r"cannot be combined"),
]  # fmt: skip


@pytest.mark.parametrize("make, message", BAD_LAYERS)
def test_bad_layer_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_2d_array_into_a_conv2d_model_names_the_layer():
    model = Sequential([Conv2D(4, 3, input_shape=(8, 8, 1)), Flatten(), Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(
        ValueError,
        match=r"Layer 'conv2d' \(Conv2D\) expects samples of shape \(8, 8, 1\): arrays of shape "
        r"\(samples, 8, 8, 1\)\. Received: x with shape \(5, 64\)",
    ):
        model.fit(np.zeros((5, 64)), np.zeros((5, 2)), verbose=0)
    unbuilt = Sequential([Conv2D(4, 3), Flatten(), Dense(2)])
    unbuilt.compile(optimizer="sgd", loss="mse")
    with pytest.raises(
        ValueError,
        match=r"Layer 'conv2d' \(Conv2D\) takes inputs of shape \(None, H, W, C\) \(images\), "
        r"channels last\. Received: inputs of shape \(None, 64\)",
    ):
        unbuilt.predict(np.zeros((5, 64)))
    assert not unbuilt.built


def test_a_kernel_larger_than_the_padded_input_names_the_layer():
    with pytest.raises(
        ValueError,
        match=r"Layer 'conv2d' \(Conv2D\): the window of size \(5, 5\) \(dilation \(1, 1\)\) is "
        r"larger than its input with padding='valid'\. Received: inputs of shape "
        r"\(None, 4, 4, 1\); the window must fit in \(4, 4\)",
    ):
        Sequential([Input(shape=(4, 4, 1)), Conv2D(2, 5)])
    with pytest.raises(ValueError, match=r"Layer 'max_pooling1d' \(MaxPooling1D\): the window of "
                       r"size \(4,\) .*inputs of shape \(None, 3, 2\)"):  # fmt: skip
        Sequential([Input(shape=(3, 2)), MaxPooling1D(4)])
