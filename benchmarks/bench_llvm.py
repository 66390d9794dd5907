"""The LLVM backend against hand-written NumPy, the NumPy backend, PyTorch eager and JAX jit.

Run from the repository root::

    python -m benchmarks.bench_llvm                       # float32, every workload, step and epoch
    python -m benchmarks.bench_llvm --dtype float32 float64 --mode step --workloads 0 1
    python -m benchmarks.bench_llvm --threads 2           # BLAS / OpenMP / XLA threads for all

Every candidate does the same mini-batch SGD work on the same network (Glorot
weights of ``HandMLP``, plain SGD, Keras's loss reductions); all are timed
interleaved in one process (``benchmarks.common.interleaved``) and reported as
medians with quartiles and speedups over the hand-written NumPy step.

- **step**: one training step on a fixed batch. ``symgrad-llvm`` is the
  compiled step called from Python (its native entry point), ``symgrad-numpy``
  the generated NumPy step; "GEMMs alone" runs only the step's matrix products,
  in native code, through the same BLAS calls as ``symgrad-llvm``.
- **epoch**: one shuffled pass over ``batches x batch`` rows (a permutation
  per call, rows gathered per batch). ``symgrad-llvm epoch`` is one native call
  (``compile_epoch``); ``symgrad-llvm step loop`` calls the compiled step from a
  Python loop; ``hand-written NumPy`` is ``HandMLP.epoch``; JAX runs the epoch
  as one ``jit``-compiled ``lax.scan``; PyTorch eager loops in Python.

Threads are set before NumPy loads (``--threads``, default 1 for every
library: ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``torch.set_num_threads``, and the process pinned to that many CPUs, which is
what bounds XLA's pool): on a small shared machine multithreaded BLAS mostly
measures the neighbours' load.
"""

from __future__ import annotations

from benchmarks.threads import describe, limit_threads_from_argv, set_torch_threads

THREADS = limit_threads_from_argv(script=__file__)  # before NumPy is imported

import argparse  # noqa: E402  (the thread limits above must come first)
import sys  # noqa: E402

import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

from benchmarks.common import environment, format_table, interleaved, peers  # noqa: E402
from benchmarks.graphs import mlp_graph, sgd_step  # noqa: E402
from benchmarks.handwritten import HandMLP  # noqa: E402
from codegen.ir import Gemm, Program  # noqa: E402
from codegen.llvm import blas, compile_program  # noqa: E402

# name: (sizes, hidden activation, output, batch size, batches per epoch)
WORKLOADS = {
    "tiny 2-16-1 sigmoid MSE, batch 8": ([2, 16, 1], "sigmoid", "sigmoid", 8, 200),
    "digits 64-128-64-10 relu softmax-CE, batch 32": ([64, 128, 64, 10], "relu", "softmax", 32, 50),
    "784-256-128-10 relu softmax-CE, batch 128": ([784, 256, 128, 10], "relu", "softmax", 128, 20),
    "1024-1024-1024-10 relu softmax-CE, batch 256": (
        [1024, 1024, 1024, 10],
        "relu",
        "softmax",
        256,
        8,
    ),
}
LR = 1e-3  # small: the weights barely move while steps are timed
BASELINE = "hand-written NumPy"


# --------------------------------------------------------------------------
# symgrad candidates


def compiled_sgd_step(sizes, activation, output, backend, dtype):
    """``loss = step(X, Y, W1, b1, ..., lr)``, the parameters updated in place; ``.epoch`` for LLVM."""
    graph = mlp_graph(sizes, activation, output)
    return sgd_step(graph, backend=backend, dtype=dtype, epoch=backend == "llvm")


def gemms_alone(step, X, Y, params):
    """The step's matrix products only, in native code with the same BLAS calls: ``run()``.

    Operands the step computes elementwise (``A1``, ``dZ2``...) become inputs
    here, filled with ones.
    """
    p = step.program
    body = tuple(s for s in p.body if isinstance(s, Gemm))
    known = {v.name for v in p.inputs} | {s.out.name for s in body}
    extra = list({v.name: v for s in body for v in s.reads if v.name not in known}.values())
    program = Program(
        "gemms", (*p.inputs, *extra), p.scalars, body, (body[-1].out,), dtype=p.dtype, batch=p.batch
    )
    fn = compile_program(program, cache=False)
    n = {sym: len(X) for sym in p.batch}
    filled = [np.ones([int(sp.sympify(d).subs(n)) for d in v.shape], p.dtype) for v in extra]
    return lambda: fn(X, Y, *params, *filled, LR)


def parameters(hand: HandMLP) -> list[np.ndarray]:
    """The hand model's current weights as symgrad's 2-D arrays (biases as rows), copied."""
    return [
        np.ascontiguousarray(p.reshape(1, -1) if p.ndim == 1 else p).copy() for p in hand.params
    ]


def numpy_epoch(step, X, Y, params, batch, rng):
    """An epoch of the NumPy backend's step: permutation, gathered batches (as HandMLP.epoch does)."""
    xb = np.empty((batch, X.shape[1]), X.dtype)
    yb = np.empty((batch, Y.shape[1]), Y.dtype)

    def run():
        order = rng.permutation(len(X))
        total = 0.0
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            np.take(X, idx, axis=0, out=xb, mode="clip")
            np.take(Y, idx, axis=0, out=yb, mode="clip")
            total += float(step(xb, yb, *params, LR)[0][0, 0]) * batch
        return total / len(X)

    return run


# --------------------------------------------------------------------------
# peers: epochs (the steps come from benchmarks.bench_peers)


def torch_epoch(hand: HandMLP, X, Y, batch, rng):
    """PyTorch eager: a Python loop over gathered batches, ``torch.optim.SGD``."""
    import torch
    import torch.nn.functional as F

    dtype = {np.float32: torch.float32, np.float64: torch.float64}[hand.dtype.type]
    params = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in hand.params]
    x_all, y_all = torch.tensor(X, dtype=dtype), torch.tensor(Y, dtype=dtype)
    hidden = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[hand.activation]
    optimizer = torch.optim.SGD(params, lr=LR)

    def loss_fn(x, y):
        a = x
        for l in range(0, len(params) - 2, 2):
            a = hidden(torch.addmm(params[l + 1], a, params[l]))
        z = torch.addmm(params[-1], a, params[-2])
        if hand.output == "softmax":
            return F.cross_entropy(z, y)
        return F.mse_loss(torch.sigmoid(z), y)

    def run():
        order = torch.from_numpy(rng.permutation(len(X)))
        total = 0.0
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(x_all.index_select(0, idx), y_all.index_select(0, idx))
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(X)

    return run


def jax_epoch(hand: HandMLP, X, Y, batch, rng):
    """JAX: the whole epoch (gather, every step) as one jit-compiled ``lax.scan``."""
    from benchmarks.bench_peers import jax_scan_epoch

    scan = jax_scan_epoch(hand, X, Y, batch, LR)
    return lambda: scan(rng.permutation(len(X)))


# --------------------------------------------------------------------------


def data(sizes, output, rows, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, sizes[0])).astype(dtype)
    if output == "softmax":
        Y = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], rows)]
    else:
        Y = rng.uniform(0, 1, (rows, sizes[-1])).astype(dtype)
    return X, Y


def step_candidates(sizes, activation, output, batch, dtype, with_peers):
    X, Y = data(sizes, output, batch, dtype)
    hand = HandMLP(sizes, activation, output, "cce" if output == "softmax" else "mse", dtype=dtype)
    fns = {BASELINE: lambda: hand.sgd_step(X, Y, LR)}
    llvm = compiled_sgd_step(sizes, activation, output, "llvm", dtype)
    numpy = compiled_sgd_step(sizes, activation, output, "numpy", dtype)
    p_llvm, p_numpy, p_gemm = parameters(hand), parameters(hand), parameters(hand)
    fns["symgrad-llvm"] = lambda: llvm(X, Y, *p_llvm, LR)
    fns["symgrad-numpy"] = lambda: numpy(X, Y, *p_numpy, LR)
    fns["GEMMs alone (symgrad-llvm's BLAS calls)"] = gemms_alone(llvm, X, Y, p_gemm)
    if with_peers:
        from benchmarks.bench_peers import peer_steps

        fns.update(peer_steps(hand, X, Y, LR))
    return fns


def epoch_candidates(sizes, activation, output, batch, batches, dtype, with_peers):
    X, Y = data(sizes, output, batch * batches, dtype)
    hand = HandMLP(sizes, activation, output, "cce" if output == "softmax" else "mse", dtype=dtype)
    rngs = {name: np.random.default_rng(1) for name in ("hand", "llvm", "loop", "numpy", "t", "j")}
    fns = {BASELINE: lambda: hand.epoch(X, Y, batch, LR, order=rngs["hand"].permutation(len(X)))}
    llvm = compiled_sgd_step(sizes, activation, output, "llvm", dtype)
    numpy = compiled_sgd_step(sizes, activation, output, "numpy", dtype)
    p_llvm, p_loop, p_numpy = parameters(hand), parameters(hand), parameters(hand)

    def llvm_epoch():
        order = rngs["llvm"].permutation(len(X))
        return llvm.epoch(X, Y, *p_llvm, LR, batch_size=batch, order=order).mean("loss")

    fns["symgrad-llvm epoch"] = llvm_epoch
    fns["symgrad-llvm step loop"] = numpy_epoch(llvm, X, Y, p_loop, batch, rngs["loop"])
    fns["symgrad-numpy"] = numpy_epoch(numpy, X, Y, p_numpy, batch, rngs["numpy"])
    if with_peers:
        found = peers()
        if found["torch"]:
            fns["torch eager"] = torch_epoch(hand, X, Y, batch, rngs["t"])
        if found["jax"]:
            fns["jax jit (lax.scan epoch)"] = jax_epoch(hand, X, Y, batch, rngs["j"])
    return fns


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float64"])
    ap.add_argument("--mode", nargs="+", default=["step", "epoch"], choices=["step", "epoch"])
    ap.add_argument("--workloads", nargs="*", type=int, help="indices into the workload list")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1, help="threads for every library (read early)")
    ap.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX")
    args = ap.parse_args(argv)
    if not args.no_peers:
        set_torch_threads(THREADS)
    print(environment())
    print(describe(THREADS))
    print(f"symgrad-llvm gemm: {blas.provider()}; NumPy's OpenBLAS kernels: {blas.numpy_core()}")
    print()
    for k, (name, (sizes, act, out, batch, batches)) in enumerate(WORKLOADS.items()):
        if args.workloads and k not in args.workloads:
            continue
        for dtype in args.dtype:
            if "step" in args.mode:
                fns = step_candidates(sizes, act, out, batch, dtype, not args.no_peers)
                title = f"step: {name}, {dtype}"
                print(
                    format_table(
                        interleaved(fns, rounds=args.rounds), BASELINE, title=title, speedup=True
                    ),
                    end="\n\n",
                )
            if "epoch" in args.mode:
                fns = epoch_candidates(sizes, act, out, batch, batches, dtype, not args.no_peers)
                title = f"epoch of {batches} batches: {name}, {dtype}"
                rounds = max(5, args.rounds // 2)
                print(
                    format_table(
                        interleaved(fns, rounds=rounds), BASELINE, title=title, speedup=True
                    ),
                    end="\n\n",
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
