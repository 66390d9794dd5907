"""symgrad.core.windows: convolution and pooling as matrix nodes over rows of images.

An image batch is a matrix of one row per sample, ``(n, H*W*C)``, row-major with the
channels last (Keras's layout).  Four nodes make convolution and pooling matrix
algebra, so their gradients come from rules already in the table:

- ``im2col(X)``: every window of every image as one row, ``(n*Ho*Wo, kh*kw*C)``
  (entry ``(u, v, c)`` of window ``(k, i, j)`` is ``X[k, s*i + d*u - p, s*j + d*v - p, c]``,
  0 outside the image).  A convolution is then ``reshape(im2col(X) K, (n, Ho*Wo*F))``
  with the kernel ``K`` as a ``(kh*kw*C, F)`` matrix: its kernel gradient
  ``im2col(X)^T dZ`` is a correlation of the cotangent with the input.
  A *depthwise* window lists one channel per row, ``(n*Ho*Wo*C, kh*kw)``: pooling is a
  row max (row mean) of it, and its padding may be ``-inf`` (``lowest``) so that a max
  never picks the padding.
- ``col2im(G)``: the adjoint (the VJP of ``im2col``): each window row added back where
  it came from, ``(n*Ho*Wo, kh*kw*C) -> (n, H*W*C)``; the input gradient of a
  convolution, a full correlation with the flipped kernel.
- ``reshape(A, (r, c))``: the same entries, row-major, in another shape.
- ``rowmax(A)``: the largest entry of each row, ``(r, 1)``; its VJP routes the
  cotangent to the entries equal to the maximum (the argmax).

The geometry of the windows is a :class:`Window` (fixed integers); ``window`` makes one
from Keras's arguments (kernel size, strides, dilation, ``"valid"``/``"same"``).
"""

from __future__ import annotations

from typing import NamedTuple

import sympy as sp
from sympy.matrices.expressions import MatrixExpr, ZeroMatrix

from symgrad.core.build import broadcast_cols, elementwise, is_zero, scale, split_scalar
from symgrad.core.nodes import _check_matrix, _new, _Node, _pretty_text, _shape_error


class Window(NamedTuple):
    """Where the windows of an ``(in_h, in_w, channels)`` image are: ``k_h x k_w`` taps,
    ``stride`` apart, taps ``dil`` apart, the first window shifted up/left by ``pad``;
    ``out_h x out_w`` windows.  ``depthwise``: one channel per row (pooling); ``lowest``:
    taps outside the image read ``-inf`` instead of 0 (max pooling)."""

    in_h: int
    in_w: int
    channels: int
    k_h: int
    k_w: int
    stride_h: int
    stride_w: int
    dil_h: int
    dil_w: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int
    depthwise: bool = False
    lowest: bool = False

    @property
    def image(self) -> int:
        """Columns of one image row."""
        return self.in_h * self.in_w * self.channels

    @property
    def rows_per_image(self) -> int:
        """Window rows per image: ``Ho*Wo`` (``Ho*Wo*C`` depthwise)."""
        return self.out_h * self.out_w * (self.channels if self.depthwise else 1)

    @property
    def taps(self) -> int:
        """Columns of a window row: ``kh*kw*C`` (``kh*kw`` depthwise)."""
        return self.k_h * self.k_w * (1 if self.depthwise else self.channels)

    def label(self) -> str:
        """``3x3``, with the stride when it is not 1 (``2x2/2``): how formulas name it."""
        text = f"{self.k_h}x{self.k_w}"
        if (self.stride_h, self.stride_w) != (1, 1):
            same = self.stride_h == self.stride_w
            text += f"/{self.stride_h}" if same else f"/{self.stride_h},{self.stride_w}"
        return text


def _axis(size: int, k: int, stride: int, dil: int, padding: str) -> tuple[int, int]:
    """(windows, padding before) along one axis, as TensorFlow and Keras compute them."""
    span = (k - 1) * dil + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return out, total // 2


def window(
    image: tuple[int, int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    padding: str = "valid",
    depthwise: bool = False,
    lowest: bool = False,
) -> Window:
    """The :class:`Window` of a ``kernel`` over ``image = (H, W, C)``.

    ``padding="valid"``: windows inside the image only; ``"same"``: ``ceil(H / s)``
    windows, the padding split as TensorFlow does (the extra row at the bottom).
    A kernel (dilated) larger than the valid image raises a ValueError.
    """
    (h, w, c), (kh, kw), (sh, sw), (dh, dw) = image, kernel, strides, dilation
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}")
    out_h, top = _axis(h, kh, sh, dh, padding)
    out_w, left = _axis(w, kw, sw, dw, padding)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"a kernel of size {(kh, kw)} (dilation {(dh, dw)}) does not fit in an image of "
            f"{(h, w)} with padding={padding!r}"
        )
    return Window(h, w, c, kh, kw, sh, sw, dh, dw, top, left, out_h, out_w, depthwise, lowest)


def _window_of(node) -> Window:
    return Window(*(int(v) for v in node.args[1]))


def _window_arg(win: Window) -> sp.Tuple:
    return sp.Tuple(*(sp.Integer(int(v)) for v in win))


class Im2Col(_Node):
    """``im2col(X)``: every window of every image as one row (see the module docstring)."""

    def __new__(cls, a, win: Window):
        return _new(cls, a, _window_arg(win))

    @property
    def window(self) -> Window:
        return _window_of(self)

    def _shape(self):
        win = self.window
        return (self.args[0].shape[0] * win.rows_per_image, sp.Integer(win.taps))

    def _text(self, printer):
        return f"im2col_{self.window.label()}({printer._print(self.args[0])})"

    def _pretty(self, printer):
        return _pretty_text(self)


class Col2Im(_Node):
    """``col2im(G)``: window rows added back into the images they came from (im2col's adjoint)."""

    def __new__(cls, a, win: Window):
        return _new(cls, a, _window_arg(win))

    @property
    def window(self) -> Window:
        return _window_of(self)

    def _shape(self):
        win = self.window
        return (self.args[0].shape[0] / win.rows_per_image, sp.Integer(win.image))

    def _text(self, printer):
        return f"col2im_{self.window.label()}({printer._print(self.args[0])})"

    def _pretty(self, printer):
        return _pretty_text(self)


class Reshape(_Node):
    """``reshape(A, (r, c))``: A's entries, row-major, as an ``(r, c)`` matrix."""

    def __new__(cls, a, rows, cols):
        return _new(cls, a, sp.sympify(rows), sp.sympify(cols))

    def _shape(self):
        return (self.args[1], self.args[2])

    def _text(self, printer):
        rows, cols = (printer._print(d) for d in self.args[1:])
        return f"reshape({printer._print(self.args[0])}, ({rows}, {cols}))"

    def _pretty(self, printer):
        return _pretty_text(self)


class RowMax(_Node):
    """``rowmax(A)``: the largest entry of each row, ``(r, 1)``."""

    def __new__(cls, a):
        return _new(cls, a)

    def _shape(self):
        return (self.args[0].shape[0], sp.S.One)

    def _text(self, printer):
        return f"rowmax({printer._print(self.args[0])})"

    def _pretty(self, printer):
        return _pretty_text(self)


# --------------------------------------------------------------------------
# Smart constructors


def _linear(node_cls, a: MatrixExpr, *args, shape, hoist: bool = True) -> MatrixExpr:
    """A linear node: zero folds to zero, a scalar factor moves outside (``op(cA) = c op(A)``)."""
    if is_zero(a):
        return ZeroMatrix(*shape)
    c, m = split_scalar(a)
    if c != 1 and hoist:
        return scale(c, node_cls(m, *args))
    return node_cls(a, *args)


def _check_image_rows(op: str, a: MatrixExpr, win: Window) -> None:
    _check_matrix(op, a)
    if sp.sympify(a.shape[1]) != win.image:
        raise ValueError(
            f"{op}: the rows of {a} (shape {tuple(a.shape)}) are not images of "
            f"{(win.in_h, win.in_w, win.channels)} ({win.image} columns)"
        )


def im2col(a: MatrixExpr, win: Window) -> MatrixExpr:
    """The window rows of the image rows of ``a`` (``(n, H*W*C)``)."""
    _check_image_rows("im2col", a, win)
    shape = (a.shape[0] * win.rows_per_image, win.taps)
    return _linear(Im2Col, a, win, shape=shape, hoist=not win.lowest)  # c * -inf: not for c < 0


def col2im(g: MatrixExpr, win: Window) -> MatrixExpr:
    """Window rows ``g`` added back into ``(n, H*W*C)`` image rows (the adjoint of im2col)."""
    _check_matrix("col2im", g)
    if sp.sympify(g.shape[1]) != win.taps:
        raise ValueError(
            f"col2im: {g} (shape {tuple(g.shape)}) has not {win.taps} columns, one per tap"
        )
    win = win._replace(lowest=False)  # the adjoint of the linear part: padding takes nothing
    return _linear(Col2Im, g, win, shape=(g.shape[0] / win.rows_per_image, win.image))


def reshape(a: MatrixExpr, rows, cols) -> MatrixExpr:
    """``a``'s entries, row-major, as ``(rows, cols)``; same size, else ShapeMismatch."""
    _check_matrix("reshape", a)
    rows, cols = sp.sympify(rows), sp.sympify(cols)
    if sp.expand(rows * cols - a.shape[0] * a.shape[1]) != 0:
        raise _shape_error(f"reshape to ({rows}, {cols})", a)
    if (rows, cols) == tuple(sp.sympify(d) for d in a.shape):
        return a
    if isinstance(a, Reshape):  # reshape(reshape(A)) = reshape(A)
        return reshape(a.args[0], rows, cols)
    return _linear(Reshape, a, rows, cols, shape=(rows, cols))


def row_max(a: MatrixExpr) -> MatrixExpr:
    """The largest entry of each row, ``(r, 1)``."""
    _check_matrix("row_max", a)
    if a.shape[1] == 1:
        return a
    return RowMax(a)


_a, _m, _g = sp.symbols("_x0 _x1 _x2", real=True)
ROUTE = sp.Lambda((_a, _m, _g), sp.Piecewise((_g, sp.Eq(_a, _m)), (0, True)))
"""g where a is its row's maximum m, else 0: max's cotangent goes to the argmax."""


def route_to_max(a: MatrixExpr, maxima: MatrixExpr, ct: MatrixExpr) -> MatrixExpr:
    """The cotangent ``ct`` of ``rowmax(a)`` (``(r, 1)``) on the entries equal to their row's max."""
    cols = a.shape[1]
    return elementwise(ROUTE, a, broadcast_cols(maxima, cols), broadcast_cols(ct, cols))
