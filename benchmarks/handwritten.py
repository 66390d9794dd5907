"""Hand-written NumPy MLP training: the baseline symgrad is measured against.

This is what a careful NumPy programmer writes by hand for a dense network:
every buffer is allocated once per batch size, every ufunc and matmul writes
with ``out=``, activation derivatives come from the forward outputs already in
memory, the stable fused gradients are used for softmax + cross-entropy and
sigmoid + binary cross-entropy, and an SGD step folds the learning rate into
the output gradient so that the update is one subtraction per parameter.

Losses are reduced as Keras reduces them: categorical cross-entropy is the mean
over the batch of the per-sample sum; binary cross-entropy and mean squared
error are means over all entries.

Example::

    model = HandMLP([784, 128, 10], activation="relu", output="softmax", loss="cce")
    loss, grads = model.loss_and_grads(X[:64], Y[:64])   # grads: [dW1, db1, dW2, db2]
    mean_loss = model.epoch(X, Y, batch_size=64, lr=0.1, order=rng.permutation(len(X)))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ACTIVATIONS = ("relu", "sigmoid", "tanh")
OUTPUTS = ("softmax", "sigmoid", "linear")
LOSSES = ("cce", "bce", "mse")
# (output, loss) pairs the baseline supports; the others take the log of an unbounded
# output (linear + cce/bce) or need Keras's renormalisation of sigmoid outputs (sigmoid + cce).
PAIRS = (
    ("softmax", "cce"),
    ("softmax", "bce"),
    ("softmax", "mse"),
    ("sigmoid", "bce"),
    ("sigmoid", "mse"),
    ("linear", "mse"),
)
EPSILON = 1e-7  # Keras's backend.epsilon(): probabilities are clipped to [eps, 1 - eps]


def sigmoid(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Logistic function written as 0.5 tanh(z/2) + 0.5: no overflow, one transcendental."""
    np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    return np.add(out, 0.5, out=out)


class _Buffers:
    """Every array one batch size needs, allocated once."""

    def __init__(self, n: int, sizes: Sequence[int], activation: str, dtype: np.dtype):
        k = sizes[-1]
        self.Z = [np.empty((n, h), dtype) for h in sizes[1:]]  # hidden: A = act(Z) in place
        self.G = [np.empty((n, h), dtype) for h in sizes[1:]]  # dL/dZ per layer
        scratch_dtype = bool if activation == "relu" else dtype
        self.S = [np.empty((n, h), scratch_dtype) for h in sizes[1:-1]]  # act' scratch
        self.P = np.empty((n, k), dtype)  # output probabilities
        self.T = np.empty((n, k), dtype)  # output scratch
        self.U = np.empty((n, k), dtype)  # output scratch
        self.clipped = np.empty((n, k), bool)
        self.r = np.empty((n, 1), dtype)  # per-row max / sum / logsumexp
        self.ones = np.ones(n, dtype)  # db = ones @ dZ (a gemv beats sum(axis=0))
        self.X = np.empty((n, sizes[0]), dtype)  # gathered mini-batch
        self.Y = np.empty((n, k), dtype)


class HandMLP:
    """A dense network trained by hand-written vectorized NumPy.

    Args:
        sizes: layer widths ``[inputs, hidden..., outputs]``.
        activation: hidden activation, one of ``ACTIVATIONS``.
        output: output activation, one of ``OUTPUTS``.
        loss: ``"cce"``, ``"bce"`` or ``"mse"``; ``(output, loss)`` must be in ``PAIRS``.
        dtype: ``np.float32`` (Keras's default) or ``np.float64``.
        seed: seed of the Glorot-uniform kernels (biases start at zero, as in Keras).

    ``params`` and ``grads`` are lists ``[W1, b1, W2, b2, ...]`` with ``W`` of shape
    ``(fan_in, fan_out)``. ``grads`` is overwritten by every call; after
    ``sgd_step`` it holds ``lr * gradient``. Cross-entropy targets are rows that
    sum to one (one-hot or probabilities), which the fused ``(P - Y) / n`` assumes.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        output: str = "softmax",
        loss: str = "cce",
        dtype: np.dtype | type = np.float32,
        seed: int = 0,
        momentum: float = 0.0,
    ):
        if len(sizes) < 2 or any(int(h) < 1 for h in sizes):
            raise ValueError(f"sizes must list at least two positive widths. Received: {sizes=}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}. Received: {activation=}")
        if (output, loss) not in PAIRS:
            raise ValueError(f"(output, loss) must be one of {PAIRS}. Received: {output=}, {loss=}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64. Received: dtype={self.dtype}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1). Received: {momentum=}")
        self.momentum = float(momentum)
        self.sizes = [int(h) for h in sizes]
        self.activation, self.output, self.loss_name = activation, output, loss
        rng = np.random.default_rng(seed)
        self.params: list[np.ndarray] = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            limit = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform
            self.params.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(self.dtype))
            self.params.append(np.zeros(fan_out, self.dtype))
        self.grads = [np.empty_like(p) for p in self.params]
        # SGD with momentum (Keras's form): v <- momentum v - lr g, p <- p + v
        self.velocity = [np.zeros_like(p) for p in self.params] if momentum else []
        self._buffers: dict[int, _Buffers] = {}

    # -- weights ---------------------------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        """Copies of ``[W1, b1, W2, b2, ...]``."""
        return [p.copy() for p in self.params]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Copy ``weights`` (same order and shapes as ``get_weights``) into the model."""
        if len(weights) != len(self.params):
            raise ValueError(f"Expected {len(self.params)} arrays. Received: {len(weights)}")
        for p, w in zip(self.params, weights, strict=True):
            if np.shape(w) != p.shape:
                raise ValueError(f"Expected shape {p.shape}. Received: shape={np.shape(w)}")
            np.copyto(p, w, casting="same_kind")

    # -- public verbs ----------------------------------------------------------

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Output activations for ``X`` (a new array)."""
        X = self._check(X)
        buf = self._buffers_for(len(X))
        self._forward(X, buf)
        Z = buf.Z[-1]
        if self.output == "softmax":
            self._softmax(Z, buf)
            return buf.P.copy()
        return sigmoid(Z, out=buf.P).copy() if self.output == "sigmoid" else Z.copy()

    def loss(self, X: np.ndarray, Y: np.ndarray) -> float:
        """Mean loss on ``(X, Y)``, forward pass only."""
        X, Y = self._check(X, Y)
        buf = self._buffers_for(len(X))
        self._forward(X, buf)
        return self._head(Y, buf, scale=None)

    def loss_and_grads(self, X: np.ndarray, Y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """Mean loss and its gradients ``[dW1, db1, ...]`` (views of ``self.grads``)."""
        X, Y = self._check(X, Y)
        buf = self._buffers_for(len(X))
        self._forward(X, buf)
        loss = self._head(Y, buf, scale=1.0)
        self._backward(X, buf, update=False)
        return loss, self.grads

    def sgd_step(self, X: np.ndarray, Y: np.ndarray, lr: float) -> float:
        """One SGD step on the batch (``p -= lr * dL/dp``, or with ``momentum`` as Keras);
        returns the loss before it."""
        X, Y = self._check(X, Y)
        buf = self._buffers_for(len(X))
        self._forward(X, buf)
        loss = self._head(Y, buf, scale=lr)  # lr folded into dL/dZ_out: grads come out scaled
        self._backward(X, buf, update=True)
        return loss

    def epoch(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        batch_size: int,
        lr: float,
        order: np.ndarray | None = None,
    ) -> float:
        """One pass of mini-batch SGD; returns the sample-weighted mean batch loss (as Keras).

        ``order`` is a permutation of ``range(len(X))`` giving the sample order
        (``None``: as stored). The last batch may be smaller than ``batch_size``.
        """
        X, Y = self._check(X, Y)
        m = len(X)
        if order is not None:
            order = np.asarray(order)
            if order.shape != (m,) or m and (order.min() < 0 or order.max() >= m):
                raise ValueError(f"order must index the {m} samples. Received: {order.shape=}")
        total = 0.0
        for start in range(0, m, batch_size):
            if order is None:
                xb, yb = X[start : start + batch_size], Y[start : start + batch_size]
            else:
                idx = order[start : start + batch_size]
                buf = self._buffers_for(len(idx))
                xb = np.take(X, idx, axis=0, out=buf.X, mode="clip")  # indices checked above
                yb = np.take(Y, idx, axis=0, out=buf.Y, mode="clip")
            total += self.sgd_step(xb, yb, lr) * len(xb)
        return total / m

    # -- internals -------------------------------------------------------------

    def _check(self, X, Y=None):
        X = np.asarray(X, self.dtype)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must have shape (n, {self.sizes[0]}). Received: {X.shape=}")
        if Y is None:
            return X
        Y = np.asarray(Y, self.dtype)
        if Y.shape != (len(X), self.sizes[-1]):
            raise ValueError(f"Y must have shape {(len(X), self.sizes[-1])}. Received: {Y.shape=}")
        return X, Y

    def _buffers_for(self, n: int) -> _Buffers:
        buf = self._buffers.get(n)
        if buf is None:
            buf = self._buffers[n] = _Buffers(n, self.sizes, self.activation, self.dtype)
        return buf

    def _forward(self, X: np.ndarray, buf: _Buffers) -> None:
        """Z_l = A_{l-1} W_l + b_l; hidden A_l = act(Z_l) overwrites Z_l; leaves output logits."""
        A = X
        last = len(buf.Z) - 1
        for l, Z in enumerate(buf.Z):
            np.matmul(A, self.params[2 * l], out=Z)
            np.add(Z, self.params[2 * l + 1], out=Z)
            if l < last:
                if self.activation == "relu":
                    np.maximum(Z, 0, out=Z)
                elif self.activation == "tanh":
                    np.tanh(Z, out=Z)
                else:
                    sigmoid(Z, out=Z)
            A = Z

    @staticmethod
    def _softmax(Z: np.ndarray, buf: _Buffers) -> None:
        """Z <- log_softmax(Z), P <- softmax(Z), both shifted by the row max for stability."""
        r = buf.r
        np.max(Z, axis=1, keepdims=True, out=r)
        np.subtract(Z, r, out=Z)
        np.exp(Z, out=buf.P)
        np.sum(buf.P, axis=1, keepdims=True, out=r)
        np.divide(buf.P, r, out=buf.P)
        np.log(r, out=r)
        np.subtract(Z, r, out=Z)

    def _head(self, Y: np.ndarray, buf: _Buffers, scale: float | None) -> float:
        """Loss of the output layer; unless ``scale`` is None, G[-1] <- scale * dL/dZ_out."""
        Z, P, G = buf.Z[-1], buf.P, buf.G[-1]
        n, k = Z.shape
        if self.output == "softmax":
            self._softmax(Z, buf)
        elif self.output == "sigmoid":
            sigmoid(Z, out=P)
        else:
            P = Z
        if self.loss_name == "cce":  # softmax + cce, from log-probabilities
            loss = -np.vdot(Y, Z) / n
            if scale is not None:
                np.subtract(P, Y, out=G)  # dL/dZ = (P - Y) / n
                np.multiply(G, scale / n, out=G)
            return float(loss)
        if self.loss_name == "bce" and self.output == "sigmoid":
            loss = self._bce_from_logits(Z, Y, buf.T) / (n * k)
            if scale is not None:
                np.subtract(P, Y, out=G)  # dL/dZ = (P - Y) / (n k)
                np.multiply(G, scale / (n * k), out=G)
            return float(loss)
        if self.loss_name == "mse":
            np.subtract(P, Y, out=G)
            loss = np.vdot(G, G) / (n * k)
            if scale is not None:
                np.multiply(G, 2 * scale / (n * k), out=G)  # dL/dP = 2 (P - Y) / (n k)
        else:  # softmax + bce, on clipped probabilities as Keras does
            loss = self._bce_from_probs(P, Y, buf, grad=scale is not None) / (n * k)
            if scale is not None:
                np.multiply(G, scale / (n * k), out=G)
        if scale is not None and self.output == "softmax":
            T, r = buf.T, buf.r
            np.multiply(G, P, out=T)  # dZ = P * (dP - rowsum(dP * P))
            np.sum(T, axis=1, keepdims=True, out=r)
            np.subtract(G, r, out=G)
            np.multiply(G, P, out=G)
        elif scale is not None and self.output == "sigmoid":
            T = buf.T
            np.subtract(1, P, out=T)  # dZ = dP * P (1 - P)
            np.multiply(T, P, out=T)
            np.multiply(G, T, out=G)
        return float(loss)

    @staticmethod
    def _bce_from_logits(Z: np.ndarray, Y: np.ndarray, T: np.ndarray) -> float:
        """Sum of softplus(z) - y z = max(z, 0) - y z + log1p(exp(-|z|)), never overflowing."""
        np.abs(Z, out=T)
        sum_abs = T.sum()
        np.negative(T, out=T)
        np.exp(T, out=T)
        np.log1p(T, out=T)
        return T.sum() + 0.5 * (Z.sum() + sum_abs) - np.vdot(Y, Z)  # max(z,0) = (z+|z|)/2

    @staticmethod
    def _bce_from_probs(P: np.ndarray, Y: np.ndarray, buf: _Buffers, grad: bool) -> float:
        """Sum of -(y log p + (1-y) log(1-p)) with p clipped; G[-1] <- dL/dp unscaled if grad."""
        T, U, G = buf.T, buf.U, buf.G[-1]
        np.clip(P, EPSILON, 1 - EPSILON, out=T)
        np.negative(T, out=U)
        np.log1p(U, out=U)  # U = log(1 - p)
        sum_log_1mp = U.sum()
        np.log(T, out=G)
        np.subtract(G, U, out=G)  # G = log p - log(1 - p)
        loss = -(np.vdot(Y, G) + sum_log_1mp)  # -sum(y log p + (1 - y) log(1 - p))
        if grad:
            np.subtract(T, Y, out=G)  # dL/dp = (p - y) / (p (1 - p)), 0 where clipped
            np.subtract(1, T, out=U)
            np.multiply(U, T, out=U)
            np.divide(G, U, out=G)
            np.not_equal(P, T, out=buf.clipped)
            np.copyto(G, 0, where=buf.clipped)
        return loss

    def _backward(self, X: np.ndarray, buf: _Buffers, update: bool) -> None:
        """Reverse sweep from G[-1] = dL/dZ_out; with ``update``, p -= grad once it is used."""
        for l in reversed(range(len(buf.Z))):
            G = buf.G[l]
            W = self.params[2 * l]
            dW, db = self.grads[2 * l], self.grads[2 * l + 1]
            A_prev = X if l == 0 else buf.Z[l - 1]
            np.matmul(A_prev.T, G, out=dW)  # dL/dW = A_prev^T dZ
            np.matmul(buf.ones, G, out=db)  # dL/db = column sums of dZ
            if l > 0:
                G_prev = buf.G[l - 1]
                np.matmul(G, W.T, out=G_prev)  # dL/dA_prev = dZ W^T (before W changes)
                self._activation_backward(G_prev, A_prev, buf.S[l - 1])
            if update:
                self._update(2 * l)
                self._update(2 * l + 1)

    def _update(self, k: int) -> None:
        """p -= lr g (grads hold lr g), or with momentum v = momentum v - lr g, p += v."""
        p, scaled = self.params[k], self.grads[k]
        if not self.momentum:
            np.subtract(p, scaled, out=p)
            return
        v = self.velocity[k]
        np.multiply(v, self.momentum, out=v)
        np.subtract(v, scaled, out=v)
        np.add(p, v, out=p)

    def _activation_backward(self, G: np.ndarray, A: np.ndarray, S: np.ndarray) -> None:
        """G <- G * act'(Z), written with the forward output A = act(Z)."""
        if self.activation == "relu":
            np.greater(A, 0, out=S)  # relu' = [A > 0]
            np.multiply(G, S, out=G)
        elif self.activation == "tanh":
            np.square(A, out=S)  # tanh' = 1 - A^2
            np.subtract(1, S, out=S)
            np.multiply(G, S, out=G)
        else:
            np.subtract(1, A, out=S)  # sigmoid' = A (1 - A)
            np.multiply(S, A, out=S)
            np.multiply(G, S, out=G)
