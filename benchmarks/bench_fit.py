"""Time per epoch of ``model.fit`` on sklearn's digits, against hand-written NumPy and PyTorch loops.

Run from the repository root::

    python -m benchmarks.bench_fit                  # float32, 1 thread for every library
    python -m benchmarks.bench_fit --epochs 10 --rounds 9 --dtype float64

The network is 64-128-64-10 (relu, softmax, sparse categorical cross-entropy),
trained by plain SGD (learning rate 0.05) on 80% of the digits (1437 rows) in
shuffled batches of 32 (45 steps per epoch, the last one smaller). Every
candidate does this same mini-batch work:

- ``fit numpy`` / ``fit llvm``: ``model.fit(x, y, epochs=E, batch_size=32,
  verbose=0)``, timed per call and divided by ``E`` (so each epoch carries its
  share of fit's argument checks); ``+ accuracy`` compiles
  ``metrics=["accuracy"]``; ``llvm, batch callback`` adds a callback with a
  batch hook, which makes fit run step by step instead of one native call
  per epoch;
- ``hand-written NumPy``: a permutation per epoch and ``HandMLP.epoch``
  (buffers allocated once, in-place ufuncs, fused softmax-CE gradient);
- ``torch eager``: a permutation per epoch, ``index_select`` batches,
  ``torch.optim.SGD``.
"""

from __future__ import annotations

from benchmarks.threads import describe, limit_threads_from_argv, set_torch_threads

THREADS = limit_threads_from_argv(script=__file__)  # before NumPy is imported

import argparse  # noqa: E402  (the thread limits above must come first)

import numpy as np  # noqa: E402

from benchmarks.common import Timing, environment, format_table, interleaved, peers  # noqa: E402
from benchmarks.handwritten import HandMLP  # noqa: E402
from codegen.llvm import blas  # noqa: E402
from symgrad.callbacks import LambdaCallback  # noqa: E402
from symgrad.layers import Dense  # noqa: E402
from symgrad.models import Sequential  # noqa: E402
from symgrad.optimizers import SGD  # noqa: E402

SIZES = [64, 128, 64, 10]
BATCH, LR = 32, 0.05
BASELINE = "hand-written NumPy"


def digits(dtype: str):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x_train, _, y_train, _ = train_test_split(
        d.data / 16.0, d.target, test_size=0.2, random_state=42, stratify=d.target
    )
    return x_train.astype(dtype), y_train


def symgrad_fit(backend, dtype, x, y, epochs, metrics=None, callbacks=(), optimizer=None):
    model = Sequential(
        [
            Dense(SIZES[1], activation="relu", input_dim=SIZES[0]),
            Dense(SIZES[2], activation="relu"),
            Dense(SIZES[3], activation="softmax"),
        ]
    )
    model.compile(
        optimizer=SGD(learning_rate=LR) if optimizer is None else optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=metrics,
        backend=backend,
        dtype=dtype,
        seed=0,
    )
    model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)  # compile and warm up

    def run():
        model.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=list(callbacks))

    return run


def hand_fit(dtype, x, y, epochs):
    hand = HandMLP(SIZES, "relu", "softmax", "cce", dtype=dtype)
    onehot = np.eye(SIZES[-1], dtype=dtype)[y]  # once, as fit prepares its targets
    rng = np.random.default_rng(0)

    def run():
        for _ in range(epochs):
            hand.epoch(x, onehot, BATCH, LR, order=rng.permutation(len(x)))

    return run


def torch_fit(dtype, x, y, epochs):
    import torch
    import torch.nn.functional as F

    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    hand = HandMLP(SIZES, "relu", "softmax", "cce", dtype=dtype)
    params = [torch.tensor(p, dtype=tdtype, requires_grad=True) for p in hand.params]
    x_all, y_all = torch.tensor(x, dtype=tdtype), torch.tensor(y, dtype=torch.int64)
    optimizer = torch.optim.SGD(params, lr=LR)
    rng = np.random.default_rng(0)

    def run():
        for _ in range(epochs):
            order = torch.from_numpy(rng.permutation(len(x)))
            for start in range(0, len(x), BATCH):
                idx = order[start : start + BATCH]
                a = x_all.index_select(0, idx)
                for l in range(0, len(params) - 2, 2):
                    a = torch.relu(torch.addmm(params[l + 1], a, params[l]))
                z = torch.addmm(params[-1], a, params[-2])
                loss = F.cross_entropy(z, y_all.index_select(0, idx))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss.item()  # fit reads the loss of every batch too

    return run


def per_epoch(results: dict[str, Timing], epochs: int) -> dict[str, Timing]:
    return {
        k: Timing(t.median / epochs, t.q1 / epochs, t.q3 / epochs, t.samples, t.number)
        for k, t in results.items()
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float64"])
    ap.add_argument("--epochs", type=int, default=10, help="epochs per timed fit call")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1, help="threads for every library (read early)")
    args = ap.parse_args(argv)
    set_torch_threads(THREADS)
    print(environment())
    print(describe(THREADS))
    print(f"symgrad-llvm gemm: {blas.provider()}; NumPy's OpenBLAS kernels: {blas.numpy_core()}")
    print()
    batch_hook = LambdaCallback(on_batch_end=lambda batch, logs: None)
    for dtype in args.dtype:
        x, y = digits(dtype)
        e = args.epochs
        fns = {
            BASELINE: hand_fit(dtype, x, y, e),
            "fit llvm": symgrad_fit("llvm", dtype, x, y, e),
            "fit llvm + accuracy": symgrad_fit("llvm", dtype, x, y, e, ["accuracy"]),
            "fit llvm, batch callback (step by step)": symgrad_fit(
                "llvm", dtype, x, y, e, callbacks=[batch_hook]
            ),
            "fit numpy": symgrad_fit("numpy", dtype, x, y, e),
            "fit numpy + accuracy": symgrad_fit("numpy", dtype, x, y, e, ["accuracy"]),
        }
        if peers()["torch"]:
            fns["torch eager loop"] = torch_fit(dtype, x, y, e)
        results = per_epoch(interleaved(fns, rounds=args.rounds, number=1), e)
        title = f"time per epoch, digits {'-'.join(map(str, SIZES))}, {len(x)} rows, batch {BATCH}, SGD, {dtype}"
        print(format_table(results, BASELINE, title=title, speedup=True), end="\n\n")


if __name__ == "__main__":
    main()
