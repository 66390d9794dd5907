"""One custom-loop step (GradientTape + apply_gradients) against one compiled fit step and PyTorch.

Run: ``python -m benchmarks.bench_custom_loop --threads 1`` and ``--threads 2`` (all
cores here); ``--backends numpy llvm``.  The digits MLP 64-64-10 (relu, softmax,
categorical cross-entropy, Adam, float32, batch 32), all candidates timed
interleaved in one process, medians with ratios to the compiled fit step:

- ``fit step``: ``model.train_on_batch(x, y)`` -- the compiled training step
  (forward, gradients and Adam update in one program) behind Keras's verb;
- ``custom loop``: Keras's loop body -- ``model(x)`` and the loss under a
  ``GradientTape``, ``tape.gradient``, ``optimizer.apply_gradients``; the tape
  runs the gradient program compiled for the graph's structure (no SymPy work
  after the first step), then the compiled update;
- ``PyTorch eager``: the same loop in PyTorch (``zero_grad``, forward,
  ``cross_entropy``, ``backward``, ``Adam.step``), when torch is installed.
"""

from __future__ import annotations

from benchmarks.threads import describe, limit_threads_from_argv, set_torch_threads

THREADS = limit_threads_from_argv(script=__file__)

import argparse  # noqa: E402 - the thread limits come before NumPy

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import symgrad  # noqa: E402
from benchmarks.common import environment, interleaved, print_table  # noqa: E402

BATCH = 32
LEARNING_RATE = 1e-4  # small: the weights barely move while the steps are timed


def batch(batch_size: int = BATCH):
    digits = load_digits()
    x = (digits.data[:batch_size] / 16.0).astype("float32")
    y = np.eye(10, dtype="float32")[digits.target[:batch_size]]
    return x, y


def model(backend: str, seed: int = 0):
    m = symgrad.Sequential(
        [
            symgrad.Dense(64, activation="relu", input_dim=64),
            symgrad.Dense(10, activation="softmax"),
        ]
    )
    m.compile(
        optimizer=symgrad.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss="categorical_crossentropy",
        backend=backend,
        seed=seed,
    )
    return m


def custom_step(m, x, y):
    """Keras's custom training loop body."""

    def step():
        with symgrad.GradientTape() as tape:
            probabilities = m(x)
            loss = symgrad.losses.categorical_crossentropy(y, probabilities)
            mean = symgrad.ops.reduce_mean(loss)
        grads = tape.gradient(mean, m.trainable_weights)
        m.optimizer.apply_gradients(zip(grads, m.trainable_weights))
        return mean

    return step


def torch_step(weights, x, y):
    import torch

    set_torch_threads(THREADS)
    kernel_1, bias_1, kernel_2, bias_2 = (torch.tensor(np.array(w)) for w in weights)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        net[0].weight.copy_(kernel_1.T)
        net[0].bias.copy_(bias_1.reshape(-1))
        net[2].weight.copy_(kernel_2.T)
        net[2].bias.copy_(bias_2.reshape(-1))
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, eps=1e-7)
    xt, labels = torch.tensor(x), torch.tensor(np.argmax(y, 1))

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), labels)
        loss.backward()
        optimizer.step()
        return loss

    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["numpy", "llvm"])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    print(environment())
    print(describe(THREADS), end="\n\n")
    x, y = batch()
    for backend in args.backends:
        fitted, looped = model(backend), model(backend)
        fns = {
            "fit step (train_on_batch)": lambda m=fitted: m.train_on_batch(x, y),
            "custom loop (tape + apply_gradients)": custom_step(looped, x, y),
        }
        try:
            fns["PyTorch eager custom loop"] = torch_step(fitted.get_weights(), x, y)
        except ImportError:
            print("(PyTorch not installed: its loop is skipped)")
        results = interleaved(fns, rounds=args.rounds)
        title = f"digits MLP 64-64-10, Adam, batch {BATCH}, float32, symgrad {backend}"
        print_table(results, "fit step (train_on_batch)", title=title)
        print()


if __name__ == "__main__":
    main()
