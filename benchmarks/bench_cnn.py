"""A LeNet-shaped CNN training step: symgrad (NumPy, LLVM) against PyTorch eager and JAX jit.

Run: ``python -m benchmarks.bench_cnn`` from the repository root: one thread, then all
cores (each in a child process, since thread limits are set before NumPy loads);
``--threads N`` runs one configuration.  The model, for 28x28x1 images, float32,
batch 64, plain SGD::

    Conv2D(6, 5x5, relu) -> MaxPooling2D(2) -> Conv2D(16, 5x5, relu) -> MaxPooling2D(2)
    -> Flatten -> Dense(120, relu) -> Dense(10, softmax), categorical cross-entropy

Every candidate starts from symgrad's initial weights (copied in Keras's layout, the
images channels last; PyTorch's NCHW activations are turned back to channels last before
Flatten) and trains on the same synthetic MNIST-shaped batch.  Times are medians of
interleaved samples (``benchmarks.common.interleaved``); GFLOP/s counts the step's
matrix-product work: 3x the forward products of each layer (forward, kernel gradient,
input gradient), less the first layer's input gradient, which nobody computes.
"""

from __future__ import annotations

from benchmarks.threads import describe, limit_threads_from_argv, set_torch_threads

THREADS = limit_threads_from_argv(script=__file__)

import argparse  # noqa: E402 - the thread limits come first
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import environment, interleaved, peers, print_table  # noqa: E402

BATCH, LR = 64, 0.01
CONVS = [(6, 5), (16, 5)]  # (filters, kernel) of each block, valid padding, 2x2 pooling
DENSE = [120, 10]


def symgrad_model(backend: str):
    from symgrad.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
    from symgrad.models import Sequential
    from symgrad.optimizers import SGD

    layers = [Input(shape=(28, 28, 1))]
    for filters, k in CONVS:
        layers += [Conv2D(filters, k, activation="relu"), MaxPooling2D()]
    layers += [Flatten(), Dense(DENSE[0], activation="relu"), Dense(DENSE[1], activation="softmax")]
    model = Sequential(layers, name="lenet")
    model.compile(
        optimizer=SGD(learning_rate=LR), loss="categorical_crossentropy", backend=backend,
        dtype="float32", seed=0,
    )  # fmt: skip
    return model


def step_flops() -> int:
    """Matrix-product FLOPs of one training step (see the module docstring)."""
    h, c, forward = 28, 1, []
    for filters, k in CONVS:
        h -= k - 1
        forward.append(2 * BATCH * h * h * k * k * c * filters)
        h, c = h // 2, filters
    width = h * h * c
    for units in DENSE:
        forward.append(2 * BATCH * width * units)
        width = units
    return 3 * sum(forward) - forward[0]


def symgrad_step(model, x, y):
    rows = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)
    model._run_train_step(rows, y)  # compiles, allocates the slots
    return lambda: model._run_train_step(rows, y)


def torch_step(weights, x, y):
    import torch
    import torch.nn.functional as F

    params = []
    for kernel, bias in zip(weights[0:4:2], weights[1:4:2]):  # (k, k, c, filters) -> OIHW
        params += [torch.tensor(kernel).permute(3, 2, 0, 1).contiguous(), torch.tensor(bias)]
    for kernel, bias in zip(weights[4::2], weights[5::2]):  # (in, out) -> (out, in)
        params += [torch.tensor(kernel.T.copy()), torch.tensor(bias)]
    for p in params:
        p.requires_grad_(True)
    images = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
    targets = torch.tensor(y)
    optimizer = torch.optim.SGD(params, lr=LR)

    def step():
        optimizer.zero_grad(set_to_none=True)
        a = images
        for i in range(len(CONVS)):
            a = F.max_pool2d(torch.relu(F.conv2d(a, params[2 * i], params[2 * i + 1])), 2)
        a = a.permute(0, 2, 3, 1).reshape(len(a), -1)  # channels last, as symgrad's Flatten
        a = torch.relu(F.linear(a, params[4], params[5]))
        loss = F.cross_entropy(F.linear(a, params[6], params[7]), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def jax_step(weights, x, y):
    import jax
    import jax.numpy as jnp

    params = [jnp.asarray(w) for w in weights]  # Keras's layout is HWIO and (in, out) already
    images, targets = jnp.asarray(x), jnp.asarray(y)

    def loss_fn(params):
        a = images
        for i in range(len(CONVS)):
            a = jax.lax.conv_general_dilated(
                a, params[2 * i], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            a = jax.nn.relu(a + params[2 * i + 1])
            a = jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        a = a.reshape(len(a), -1)
        a = jax.nn.relu(a @ params[4] + params[5])
        z = a @ params[6] + params[7]
        return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(z), axis=1))

    @jax.jit
    def update(params):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        return loss, [p - LR * g for p, g in zip(params, grads)]

    state = {"params": params}

    def step():
        loss, state["params"] = update(state["params"])
        return float(loss)

    update(params)  # compiles; the result is dropped, so the first step starts from `weights`
    return step


def run(rounds: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 28, 28, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, BATCH)]
    fns = {}
    weights = None
    for backend in ("numpy", "llvm"):
        model = symgrad_model(backend)
        weights = weights or [w.copy() for w in model.get_weights()]
        model.set_weights(weights)
        fns[f"symgrad-{backend}"] = symgrad_step(model, x, y)
    found = peers()
    if found["torch"]:
        set_torch_threads(THREADS)
        fns["PyTorch eager"] = torch_step(weights, x, y)
    if found["jax"]:
        fns["JAX jit"] = jax_step(weights, x, y)
    results = interleaved(fns, rounds=rounds)
    title = f"LeNet training step, 28x28x1, batch {BATCH}, float32, SGD; {describe(THREADS)}"
    baseline = "PyTorch eager" if "PyTorch eager" in results else "symgrad-numpy"
    print_table(results, baseline, title=title)
    flops = step_flops()
    print(f"matrix-product work per step: {flops / 1e6:.1f} MFLOP")
    for name, t in results.items():
        print(f"  {name:<14} {flops / t.median / 1e9:6.2f} GFLOP/s")
    print()


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="one configuration only")
    ap.add_argument("--rounds", type=int, default=11)
    parsed = ap.parse_args(args)
    if parsed.threads is not None:
        print(environment(), end="\n\n")
        run(parsed.rounds)
        return
    for threads in sorted({1, os.cpu_count() or 1}):  # one thread, then all cores
        cmd = [sys.executable, "-m", "benchmarks.bench_cnn", "--threads", str(threads)]
        subprocess.run([*cmd, "--rounds", str(parsed.rounds)], check=True)


if __name__ == "__main__":
    main()
