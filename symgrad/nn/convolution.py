"""symgrad.nn.convolution: Keras's convolution and pooling layers on rows of images.

Images ``(H, W, C)`` and sequences ``(steps, C)`` are rows of the matrix graph,
channels last.  A convolution is one matrix product of the window rows of its input
with the kernel (``im2col``, :mod:`symgrad.core.windows`)::

    Z1 = reshape(im2col_3x3(X)*conv2d_kernel + conv2d_bias, (n, Ho*Wo*F))

so its kernel gradient ``im2col(X)^T dZ1`` (a correlation of the cotangent with the
input) and its input gradient ``col2im(dZ1 K^T)`` (a full correlation with the flipped
kernel) come from the matrix product's rule.  Pooling is a row max (mean) of the
depthwise windows, ``S1 = reshape(rowmax(im2col_2x2/2(A1)), (n, Ho*Wo*C))``; max
pooling's cotangent goes to the argmax of each window.  A sequence is an image of
height 1, so the 1D layers are the 2D ones with a kernel of height 1.

    >>> from symgrad.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
    >>> from symgrad.models import Sequential
    >>> model = Sequential([Input(shape=(8, 8, 1)), Conv2D(8, 3, activation="relu"),
    ...                     MaxPooling2D(), Flatten(), Dense(10, activation="softmax")])
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy.matrices.expressions import OneMatrix

from symgrad import core as E
from symgrad.nn import initializers
from symgrad.nn.layers import (
    KernelAndBias,
    Layer,
    _declared_input_shape,
)
from symgrad.nn.validation import positive_int, sample_shape


def _label(layer: Layer) -> str:
    """``Layer 'conv' (Conv2D)``, or ``Conv2D`` for a layer not yet named."""
    kind = type(layer).__name__
    return f"Layer {layer._name!r} ({kind})" if layer._name is not None else kind


def _tuple(layer: Layer, value, argument: str, rank: int) -> tuple[int, ...]:
    """Keras's ``int or tuple of rank ints``, each positive; else an error naming the layer."""
    values = (value,) * rank if isinstance(value, (int, np.integer)) else value
    ok = isinstance(values, (tuple, list)) and len(values) == rank
    if ok:
        ok = all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v > 0
            for v in values
        )
    if not ok:
        raise ValueError(
            f"{_label(layer)}: {argument} must be a positive integer or a tuple of {rank} "
            f"positive integers. Received: {argument}={value!r}"
        )
    return tuple(int(v) for v in values)


def _padding(layer: Layer, padding) -> str:
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(
            f"{_label(layer)}: padding must be 'valid' or 'same'. Received: padding={padding!r}"
        )
    return padding.lower()


class _Windowed(Layer):
    """What convolution and pooling layers share: samples of ``rank + 1`` axes (the last
    the channels), a window over the first ``rank``, and the :class:`~symgrad.core.Window`
    computed when the layer is built."""

    rank = 2

    def _image(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(H, W, C)`` of a sample of ``shape`` (a sequence is an image of height 1)."""
        if len(shape) != self.rank + 1:
            wanted = "(None, H, W, C) (images)" if self.rank == 2 else "(None, steps, C)"
            raise ValueError(
                f"{_label(self)} takes inputs of shape {wanted}, channels last. "
                f"Received: inputs of shape {(None, *shape)}"
            )
        return (1, *shape) if self.rank == 1 else tuple(shape)

    def _hw(self, values: tuple[int, ...]) -> tuple[int, int]:
        return (1, *values) if self.rank == 1 else values

    def _window(self, shape, kernel, strides, dilation, padding, **kind) -> E.Window:
        try:
            return E.window(
                self._image(shape), self._hw(kernel), self._hw(strides), self._hw(dilation),
                padding, **kind,
            )  # fmt: skip
        except ValueError as err:
            if "does not fit" not in str(err):
                raise
            raise ValueError(
                f"{_label(self)}: the window of size {kernel} (dilation {dilation}) is larger "
                f"than its input with padding={padding!r}. Received: inputs of shape "
                f"{(None, *shape)}; the window must fit in {tuple(shape[:-1])}"
            ) from None

    def _out_shape(self, win: E.Window, channels: int) -> tuple[int, ...]:
        return (win.out_w, channels) if self.rank == 1 else (win.out_h, win.out_w, channels)

    def element_formulas(self, named) -> list[str]:
        """The layer's value and gradients entry by entry, from the intermediates ``named``
        it computes (``k`` the sample, ``i, j`` the window, ``u, v`` the tap, ``c`` the
        channel, ``f`` the filter); the convolution's kernel gradient is a correlation of
        the cotangent with the input, max pooling's goes to the argmax."""
        if not named or self.window is None:
            return []
        return self._formula_rule(self, named)


class _Conv(KernelAndBias, _Windowed):
    """``Z = reshape(im2col(X) K + b)``, then ``A = activation(Z)``: Keras's ConvND."""

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        dilation_rate=1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        name: str | None = None,
        input_shape: tuple | None = None,
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
    ):
        super().__init__(name)
        self.filters = positive_int(filters, "filters")
        self.kernel_size = _tuple(self, kernel_size, "kernel_size", self.rank)
        self.strides = _tuple(self, strides, "strides", self.rank)
        self.dilation_rate = _tuple(self, dilation_rate, "dilation_rate", self.rank)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"{_label(self)}: strides > 1 and dilation_rate > 1 cannot be combined (as in "
                f"Keras). Received: strides={strides!r}, dilation_rate={dilation_rate!r}"
            )
        self.padding = _padding(self, padding)
        self._kernel_and_bias(
            activation,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            activity_regularizer,
        )
        _declared_input_shape(self, input_shape)
        self.window: E.Window | None = None

    def _geometry(self, shape) -> E.Window:
        return self._window(shape, self.kernel_size, self.strides, self.dilation_rate, self.padding)

    def compute_output_shape(self, input_shape):
        return self._out_shape(self._geometry(input_shape), self.filters)

    def build(self, input_shape) -> None:
        shape = sample_shape(input_shape, "input_shape")
        if self.built and self.input_shape == shape:
            return
        self.window = self._geometry(shape)
        super().build(shape)
        keras_shape = (*self.kernel_size, shape[-1], self.filters)  # Keras's kernel layout
        init = _Reshaped(self.kernel_initializer, keras_shape)
        self.kernel = self._variable(
            "kernel", (self.window.taps, self.filters), init, layout=keras_shape
        )
        self.bias = None
        if self.use_bias:
            self.bias = self._variable(
                "bias", (1, self.filters), self.bias_initializer, vector=True
            )

    def call(self, a, names):
        win = self.window
        z = E.matmul(E.im2col(a, win), self.kernel.symbol)  # one row per window position
        if self.bias is not None:
            z = E.add_bias(z, self.bias.symbol)
        if self.activation_fn == "softmax":  # over the filters of each position
            z = E.apply("softmax", z)
        z = E.name(
            names.pre_activation(), E.reshape(z, a.shape[0], win.rows_per_image * self.filters)
        )
        if self.activation_fn is None or self.activation_fn == "softmax":
            return z
        return E.name(names.activation(), E.apply(self.activation_fn, z))


class _Reshaped(initializers.Initializer):
    """A kernel drawn in Keras's shape ``(kh, kw, C, F)`` (its fans: ``kh*kw*C`` in,
    ``kh*kw*F`` out), stored as the ``(kh*kw*C, F)`` matrix the graph multiplies by."""

    def __init__(self, inner: initializers.Initializer, keras_shape: tuple[int, ...]):
        super().__init__(inner.seed)
        self.inner, self.keras_shape = inner, keras_shape

    def __call__(self, shape, rng=None):
        return self.inner(self.keras_shape, rng).reshape(tuple(int(s) for s in shape))


class Conv2D(_Conv):
    """2D convolution over ``(H, W, C)`` images: ``Conv2D(32, 3, activation="relu")``.

    ``filters``, ``kernel_size``, ``strides``, ``padding`` (``"valid"``/``"same"``),
    ``dilation_rate``, ``activation``, ``use_bias`` and the initializers and regularizers
    as in Keras (channels last).  The kernel is stored as a ``(kh*kw*C, filters)``
    matrix, Keras's ``(kh, kw, C, filters)`` kernel reshaped row-major.
    """

    rank = 2


class Conv1D(_Conv):
    """1D convolution over ``(steps, C)`` sequences: ``Conv1D(16, 5, padding="same")``."""

    rank = 1


class _Pooling(_Windowed):
    """Max or average over windows of each channel: ``S = reshape(rowmax(im2col(A)))``."""

    kind = "max"

    def __init__(
        self, pool_size=2, strides=None, padding: str = "valid", name=None, input_shape=None
    ):
        super().__init__(name)
        self.pool_size = _tuple(self, pool_size, "pool_size", self.rank)
        self.strides = (
            self.pool_size if strides is None else _tuple(self, strides, "strides", self.rank)
        )
        self.padding = _padding(self, padding)
        _declared_input_shape(self, input_shape)
        self.window: E.Window | None = None

    def _geometry(self, shape) -> E.Window:
        lowest = self.kind == "max"  # a max never picks the padding
        return self._window(
            shape, self.pool_size, self.strides, (1,) * self.rank, self.padding,
            depthwise=True, lowest=lowest,
        )  # fmt: skip

    def compute_output_shape(self, input_shape):
        return self._out_shape(self._geometry(input_shape), input_shape[-1])

    def build(self, input_shape) -> None:
        shape = sample_shape(input_shape, "input_shape")
        self.window = self._geometry(shape)
        super().build(shape)

    def call(self, a, names):
        pooled = _pool(self.kind, a, self.window)
        return E.name(names.pooled(), pooled)


def _pool(kind: str, a, win: E.Window):
    """``reshape(rowmax(im2col(a)))`` (max) or the mean of each window's taps inside the
    image (average: Keras's, which does not count the padding)."""
    rows = E.im2col(a, win)
    if kind == "max":
        out = E.row_max(rows)
    elif _padded(win):  # windows at the border hold fewer taps: divide by how many
        count = E.row_sum(E.im2col(OneMatrix(*a.shape), win))
        out = E.elementwise(_DIVIDE, E.row_sum(rows), count)
    else:
        out = E.scale(sp.Rational(1, win.k_h * win.k_w), E.row_sum(rows))
    return E.reshape(out, a.shape[0], win.rows_per_image)


_p, _q = E.arg_symbols(2)
_DIVIDE = sp.Lambda((_p, _q), _p / _q)


def _padded(win: E.Window) -> bool:
    span_h = (win.out_h - 1) * win.stride_h + win.k_h
    span_w = (win.out_w - 1) * win.stride_w + win.k_w
    return bool(win.pad_top or win.pad_left or span_h > win.in_h or span_w > win.in_w)


class MaxPooling2D(_Pooling):
    """The largest value of each ``pool_size`` window of each channel (strides default to
    ``pool_size``); the gradient goes to that value (the argmax)."""

    rank, kind = 2, "max"


class AveragePooling2D(_Pooling):
    """The mean of each window of each channel (``"same"``: over the taps inside the image)."""

    rank, kind = 2, "average"


class MaxPooling1D(_Pooling):
    rank, kind = 1, "max"
    __doc__ = MaxPooling2D.__doc__


class AveragePooling1D(_Pooling):
    rank, kind = 1, "average"
    __doc__ = AveragePooling2D.__doc__


class _GlobalPooling(_Windowed):
    """Max or mean over all positions of each channel: ``(H, W, C) -> (C,)``."""

    kind = "max"

    def __init__(self, name: str | None = None, input_shape=None):
        super().__init__(name)
        _declared_input_shape(self, input_shape)
        self.window: E.Window | None = None

    def _geometry(self, shape) -> E.Window:
        image = self._image(shape)
        return E.window(image, image[:2], depthwise=True, lowest=self.kind == "max")

    def compute_output_shape(self, input_shape):
        return (self._image(input_shape)[-1],)

    def build(self, input_shape) -> None:
        shape = sample_shape(input_shape, "input_shape")
        self.window = self._geometry(shape)
        super().build(shape)

    def call(self, a, names):
        return E.name(names.pooled(), _pool(self.kind, a, self.window))


class GlobalMaxPooling2D(_GlobalPooling):
    """The largest value of each channel over the whole image."""

    rank, kind = 2, "max"


class GlobalAveragePooling2D(_GlobalPooling):
    """The mean of each channel over the whole image."""

    rank, kind = 2, "average"


class GlobalMaxPooling1D(_GlobalPooling):
    """The largest value of each channel over the whole sequence."""

    rank, kind = 1, "max"


class GlobalAveragePooling1D(_GlobalPooling):
    """The mean of each channel over the whole sequence."""

    rank, kind = 1, "average"


CONVOLUTION_LAYERS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Conv1D,
        Conv2D,
        MaxPooling1D,
        MaxPooling2D,
        AveragePooling1D,
        AveragePooling2D,
        GlobalMaxPooling1D,
        GlobalMaxPooling2D,
        GlobalAveragePooling1D,
        GlobalAveragePooling2D,
    )
}


# --------------------------------------------------------------------------
# Per-element formulas: each layer's forward value and gradients as a person writes them


def _position(index: str, stride: int, dil: int, tap: str, pad: int) -> str:
    """``s*i + d*u - p`` with the ones and zeros left out: ``2i + u - 1``."""
    text = f"{stride}{index}" if stride != 1 else index
    text += f" + {dil}{tap}" if dil != 1 else f" + {tap}"
    return text + (f" - {pad}" if pad else "")


def _source(win: E.Window, rank: int) -> tuple[str, str]:
    """The input entry a window tap reads, for the image and for its rows' index names."""
    y = _position("i", win.stride_h, win.dil_h, "u", win.pad_top)
    x = _position("j", win.stride_w, win.dil_w, "v", win.pad_left)
    return (y, x) if rank == 2 else ("", x)


def _at(name: str, rank: int, *axes: str) -> str:
    """``X[k, i, j, c]`` (2D) or ``X[k, j, c]`` (1D: the height axis left out)."""
    kept = axes if rank == 2 else (axes[0], *axes[2:])
    return f"{name}[{', '.join(kept)}]"


def _names_of(layer, named) -> tuple[str, str]:
    """(input name, output name) of a layer from the intermediates it computes."""
    out = named[0]
    stack = [out.body]
    while stack:  # the windows this layer takes, not those of layers before it (names)
        node = stack.pop()
        if isinstance(node, E.Im2Col) and not isinstance(node.args[0], OneMatrix):
            source = node.args[0]
            return (source.name if hasattr(source, "name") else str(source)), out.name
        if not isinstance(node, E.Named):
            stack.extend(E.children(node))
    raise ValueError(f"{_label(layer)} computes no windows in {out}")


def _conv_formulas(layer: _Conv, named) -> list[str]:
    x, z = _names_of(layer, named)
    win, r = layer.window, layer.rank
    k, b = layer.kernel.symbol.name, layer.bias
    y_at, x_at = _source(win, r)
    taps = "u, v, c" if r == 2 else "v, c"
    kern = f"{k}[{taps}, f]"
    read = _at(x, r, "k", y_at, x_at, "c")
    bias = f"{b.symbol.name}[f] + " if b is not None else ""
    delta = f"d{z}"
    lines = [
        f"{_at(z, r, 'k', 'i', 'j', 'f')} = {bias}sum over {taps} of {read} * {kern}"
        + ("   (0 outside the image)" if win.pad_top or win.pad_left else ""),
        f"dL/d{kern} = sum over k, {'i, j' if r == 2 else 'j'} of "
        f"{_at(delta, r, 'k', 'i', 'j', 'f')} * {read}   "
        f"(the cotangent {delta} = dL/d{z} correlated with the input)",
    ]
    if b is not None:
        lines.append(
            f"dL/d{b.symbol.name}[f] = sum over k, {'i, j' if r == 2 else 'j'} of "
            f"{_at(delta, r, 'k', 'i', 'j', 'f')}"
        )
    lines.append(
        f"dL/d{_at(x, r, 'k', 'y', 'x', 'c')} = sum over {taps.replace('c', 'f')} of "
        f"{_at(delta, r, 'k', 'i', 'j', 'f')} * {kern} where {_inverse(win, r)}   "
        "(a full correlation with the flipped kernel)"
    )
    return lines


def _inverse(win: E.Window, rank: int) -> str:
    """``y = s*i + d*u - p, x = ...``: the windows (i, j) whose tap (u, v) reads (y, x)."""
    y_at, x_at = _source(win, rank)
    return f"y = {y_at}, x = {x_at}" if rank == 2 else f"x = {x_at}"


def _pool_formulas(layer, named) -> list[str]:
    x, s = _names_of(layer, named)
    win, r = layer.window, layer.rank
    y_at, x_at = _source(win, r)
    taps = "u, v" if r == 2 else "v"
    read = _at(x, r, "k", y_at, x_at, "c")
    out = _at(s, r, "k", "i", "j", "c")
    delta = _at(f"d{s}", r, "k", "i", "j", "c")
    grad = f"dL/d{_at(x, r, 'k', 'y', 'x', 'c')}"
    where = (
        f"windows (i, j) with {_inverse(win, r)}"
        if r == 2
        else f"windows j with {_inverse(win, r)}"
    )
    if layer.kind == "max":
        return [
            f"{out} = max over {taps} of {read}",
            f"{grad} = sum over the {where} whose max is {_at(x, r, 'k', 'y', 'x', 'c')} of "
            f"{delta}   (the cotangent goes to the argmax)",
        ]
    return [
        f"{out} = mean over the {taps} inside the image of {read}",
        f"{grad} = sum over the {where} of {delta} / (taps of window inside the image)",
    ]


_Conv._formula_rule = staticmethod(_conv_formulas)
_Pooling._formula_rule = _GlobalPooling._formula_rule = staticmethod(_pool_formulas)
