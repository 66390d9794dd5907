"""Optional peers for the MLP SGD step: PyTorch eager and JAX jit.

Neither framework is a dependency (CI installs neither); each step builder
imports its framework when called. Every builder takes a ``HandMLP`` as the
specification (sizes, activations, loss, dtype) and copies its current weights
in, so all candidates train the same network from the same point.

Run ``python -m benchmarks.bench_peers --sizes 784,128,10 --batch 64`` from the
repository root to time the hand-written NumPy step against the peers found.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import numpy as np

from benchmarks.common import environment, interleaved, peers, print_table
from benchmarks.handwritten import EPSILON, HandMLP


class PeerStep:
    """A zero-argument SGD step: ``step()`` trains one batch and returns the loss before it."""

    def __init__(self, step: Callable[[], float], get_weights: Callable[[], list[np.ndarray]]):
        self._step = step
        self.get_weights = get_weights

    def __call__(self) -> float:
        return self._step()


def torch_sgd_step(
    model: HandMLP, X: np.ndarray, Y: np.ndarray, lr: float, momentum: float = 0.0
) -> PeerStep:
    """PyTorch eager: autograd through the same network, ``torch.optim.SGD`` update.

    PyTorch's momentum (``b <- momentum b + g``, ``p <- p - lr b``) is Keras's
    (``v <- momentum v - lr g``, ``p <- p + v``) with ``v = -lr b``.
    """
    import torch
    import torch.nn.functional as F

    dtype = {np.float32: torch.float32, np.float64: torch.float64}[model.dtype.type]
    params = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in model.params]
    x = torch.tensor(X, dtype=dtype)
    y = torch.tensor(Y, dtype=dtype)
    hidden = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[model.activation]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)

    def loss_fn() -> torch.Tensor:
        a = x
        for l in range(0, len(params) - 2, 2):
            a = hidden(torch.addmm(params[l + 1], a, params[l]))
        z = torch.addmm(params[-1], a, params[-2])
        pair = (model.output, model.loss_name)
        if pair == ("softmax", "cce"):
            return F.cross_entropy(z, y)  # probability targets; mean over the batch
        if pair == ("sigmoid", "bce"):
            return F.binary_cross_entropy_with_logits(z, y)
        p = {"softmax": lambda: torch.softmax(z, 1), "sigmoid": lambda: torch.sigmoid(z)}.get(
            model.output, lambda: z
        )()
        if model.loss_name == "mse":
            return F.mse_loss(p, y)
        return F.binary_cross_entropy(p.clamp(EPSILON, 1 - EPSILON), y)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss.item()

    return PeerStep(step, lambda: [p.detach().numpy().copy() for p in params])


def jax_loss(model: HandMLP):
    """``loss(params, x, y)`` of the network in JAX (float64 turns on ``jax_enable_x64``)."""
    import jax
    import jax.numpy as jnp

    if model.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    hidden = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}[model.activation]
    output, loss_name = model.output, model.loss_name

    def loss_fn(params, x, y):
        a = x
        for l in range(0, len(params) - 2, 2):
            a = hidden(a @ params[l] + params[l + 1])
        z = a @ params[-2] + params[-1]
        if (output, loss_name) == ("softmax", "cce"):
            return -jnp.sum(y * jax.nn.log_softmax(z)) / z.shape[0]
        if (output, loss_name) == ("sigmoid", "bce"):
            return jnp.mean(jax.nn.softplus(z) - y * z)
        p = {"softmax": jax.nn.softmax, "sigmoid": jax.nn.sigmoid}.get(output, lambda v: v)(z)
        if loss_name == "mse":
            return jnp.mean((p - y) ** 2)
        p = jnp.clip(p, EPSILON, 1 - EPSILON)
        return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))

    return loss_fn


def jax_update(model: HandMLP, lr: float, momentum: float):
    """``update((params, velocity), (x, y)) -> ((params, velocity), loss)``: one SGD step."""
    import jax

    loss_fn = jax_loss(model)

    def update(state, batch):
        params, velocity = state
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        if momentum:  # Keras's form: v <- momentum v - lr g, p <- p + v
            velocity = [momentum * v - lr * g for v, g in zip(velocity, grads, strict=True)]
            params = [p + v for p, v in zip(params, velocity, strict=True)]
        else:
            params = [p - lr * g for p, g in zip(params, grads, strict=True)]
        return (params, velocity), loss

    return update


def _jax_state(model: HandMLP):
    import jax.numpy as jnp

    params = [jnp.asarray(p) for p in model.params]
    return params, [jnp.zeros_like(p) for p in params] if model.momentum else []


def jax_sgd_step(
    model: HandMLP, X: np.ndarray, Y: np.ndarray, lr: float, momentum: float = 0.0
) -> PeerStep:
    """JAX: ``jit(value_and_grad)`` of the same network, parameters donated to the update."""
    import jax
    import jax.numpy as jnp

    update = jax.jit(jax_update(model, lr, momentum), donate_argnums=0)
    state = {"s": _jax_state(model)}
    x, y = jnp.asarray(X, model.dtype), jnp.asarray(Y, model.dtype)

    def step() -> float:
        state["s"], loss = update(state["s"], (x, y))
        return float(loss)  # blocks until the step is done

    return PeerStep(step, lambda: [np.array(p) for p in state["s"][0]])


def jax_scan_epoch(model: HandMLP, X, Y, batch: int, lr: float, momentum: float = 0.0):
    """JAX: one jit-compiled ``lax.scan`` over the batches of ``order``; ``run(order) -> mean loss``.

    Rows are gathered inside the compiled function; ``len(order)`` must be a
    multiple of ``batch``.
    """
    import jax
    import jax.numpy as jnp

    update = jax_update(model, lr, momentum)

    def epoch(state, x, y, order):
        nb = order.shape[0] // batch
        xb = x[order].reshape(nb, batch, x.shape[1])
        yb = y[order].reshape(nb, batch, y.shape[1])
        state, losses = jax.lax.scan(update, state, (xb, yb))
        return state, losses.mean()

    epoch = jax.jit(epoch, donate_argnums=0)
    holder = {"s": _jax_state(model)}
    x, y = jnp.asarray(X, model.dtype), jnp.asarray(Y, model.dtype)

    def run(order) -> float:
        holder["s"], loss = epoch(holder["s"], x, y, jnp.asarray(order))
        return float(loss)  # waits for the result

    return run


@functools.cache
def _numba_kernels():
    """``(step, epoch)``: Numba-compiled SGD with momentum for relu/sigmoid MLPs.

    The head is softmax + cross-entropy or sigmoid + mean squared error
    (``softmax`` flags which); every scalar arrives in the arrays' dtype, so
    float32 stays float32. Layers are typed lists of 2-D arrays (biases 1 x k).
    """
    import numba

    @numba.njit
    def row_max(z):  # np.max has no axis argument in Numba
        out = np.empty((z.shape[0], 1), z.dtype)
        for i in range(z.shape[0]):
            out[i, 0] = z[i].max()
        return out

    @numba.njit
    def step(Ws, bs, vWs, vbs, x, y, lr, mu, one, relu, softmax):
        # sizes as floats of one's type: an int would promote float32 arrays to float64
        n, layers, zero = np.float32(x.shape[0]) * one, len(Ws), one - one
        acts = [x]
        z = x
        for l in range(layers):
            z = np.dot(acts[l], Ws[l]) + bs[l]
            if l < layers - 1:
                acts.append(np.maximum(z, zero) if relu else one / (one + np.exp(-z)))
        if softmax:  # loss = -sum(y log p) / n, dL/dz = (p - y) / n
            shifted = z - row_max(z)
            total = np.sum(np.exp(shifted), axis=1).reshape(-1, 1)
            loss = -np.sum(y * (shifted - np.log(total))) / n
            dz = (np.exp(shifted) / total - y) / n
        else:  # loss = mean((p - y)^2), dL/dz = 2 (p - y) p (1 - p) / (n k)
            p = one / (one + np.exp(-z))
            loss = np.mean((p - y) ** 2)
            dz = (one + one) * (p - y) * p * (one - p) / (np.float32(p.size) * one)
        for l in range(layers - 1, -1, -1):
            dW = np.dot(acts[l].T, dz)
            db = np.sum(dz, axis=0).reshape(1, -1)
            if l > 0:
                a = acts[l]
                da = np.dot(dz, Ws[l].T)
                dz = da * (a > 0) if relu else da * a * (one - a)
            vWs[l][:] = mu * vWs[l] - lr * dW  # Keras's form: v = mu v - lr g, p += v
            vbs[l][:] = mu * vbs[l] - lr * db
            Ws[l] += vWs[l]
            bs[l] += vbs[l]
        return loss

    @numba.njit
    def epoch(Ws, bs, vWs, vbs, x, y, order, batch, lr, mu, one, relu, softmax):
        total = 0.0
        for start in range(0, order.shape[0], batch):
            rows = order[start : start + batch]
            total += step(Ws, bs, vWs, vbs, x[rows], y[rows], lr, mu, one, relu, softmax) * len(
                rows
            )
        return total / order.shape[0]

    return step, epoch


def numba_sgd(model: HandMLP, lr: float, momentum: float = 0.0):
    """Numba: ``(step(x, y) -> loss, epoch(x, y, order, batch) -> mean loss)`` on a copy of
    ``model``'s weights (relu or sigmoid hidden layers; softmax-CE or sigmoid-MSE head)."""
    from numba.typed import List

    if (model.output, model.loss_name) not in (("softmax", "cce"), ("sigmoid", "mse")):
        raise ValueError(f"numba_sgd has no head for {(model.output, model.loss_name)}")
    step, epoch = _numba_kernels()
    t = model.dtype.type
    Ws = List([p.copy() for p in model.params[0::2]])
    bs = List([p.reshape(1, -1).copy() for p in model.params[1::2]])
    vWs, vbs = List([np.zeros_like(w) for w in Ws]), List([np.zeros_like(b) for b in bs])
    flags = (model.activation == "relu", model.output == "softmax")
    scalars = (t(lr), t(momentum), t(1))
    return (
        lambda x, y: step(Ws, bs, vWs, vbs, x, y, *scalars, *flags),
        lambda x, y, order, batch: epoch(Ws, bs, vWs, vbs, x, y, order, batch, *scalars, *flags),
    )


def peer_steps(model: HandMLP, X: np.ndarray, Y: np.ndarray, lr: float) -> dict[str, PeerStep]:
    """A step for each importable peer (``"torch eager"``, ``"jax jit"``); maybe none."""
    available = peers()
    builders = {"torch eager": ("torch", torch_sgd_step), "jax jit": ("jax", jax_sgd_step)}
    return {
        name: build(model, X, Y, lr)
        for name, (module, build) in builders.items()
        if available[module]
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="784,128,10", help="layer widths, comma separated")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--output", default="softmax")
    parser.add_argument("--loss", default="cce")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    model = HandMLP(sizes, args.activation, args.output, args.loss, dtype=args.dtype)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.batch, sizes[0])).astype(model.dtype)
    Y = np.eye(sizes[-1], dtype=model.dtype)[rng.integers(0, sizes[-1], args.batch)]
    candidates = peer_steps(model, X, Y, lr=0.01)  # built first: they copy the initial weights
    candidates = {"numpy (hand)": lambda: model.sgd_step(X, Y, 0.01), **candidates}
    print(environment(), end="\n\n")
    title = f"SGD step, MLP {args.sizes} {args.activation}/{args.output}/{args.loss}, "
    title += f"batch {args.batch}, {args.dtype}"
    print_table(interleaved(candidates, rounds=args.rounds), "numpy (hand)", title=title)


if __name__ == "__main__":
    main()
