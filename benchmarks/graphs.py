"""MLP graphs built directly from symgrad.expr, shared by the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

import symgrad
from symgrad import expr as E


@dataclass
class MLPGraph:
    X: sp.MatrixSymbol
    Y: sp.MatrixSymbol
    params: list[sp.MatrixSymbol]
    output: sp.MatrixExpr
    loss: sp.MatrixExpr


def mlp_graph(sizes: list[int], activation: str = "relu", output: str = "softmax") -> MLPGraph:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]``; softmax + cross-entropy or sigmoid + MSE."""
    n = E.batch()
    X = E.matrix("X", n, sizes[0])
    Y = E.labels("Y", n, sizes[-1]) if output == "softmax" else E.matrix("Y", n, sizes[-1])
    params, A = [], X
    for k, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:]), 1):
        W, b = E.matrix(f"W{k}", fan_in, fan_out), E.matrix(f"b{k}", 1, fan_out)
        params += [W, b]
        Z = E.name(f"Z{k}", E.add_bias(E.matmul(A, W), b))
        last = k == len(sizes) - 1
        act = output if last else activation
        A = E.name("P" if last else f"A{k}", E.apply(act, Z))
    p, y = sp.Symbol("p", real=True), sp.Symbol("y", real=True)
    if output == "softmax":
        logp = E.elementwise(sp.Lambda(p, sp.log(p)), A)
        loss = E.scale(-1 / n, E.total(E.hadamard(Y, logp)))
    else:
        loss = E.mean(E.elementwise(sp.Lambda((p, y), (p - y) ** 2), A, Y))
    return MLPGraph(X, Y, params, A, loss)


def sgd_step(
    graph: MLPGraph,
    *,
    backend="numpy",
    dtype="float64",
    guards=(),
    name="sgd_step",
    epoch=False,
    cache=True,
    momentum: float = 0.0,
    threads: int | None = None,
):
    """``loss = step(X, Y, W1, b1, ..., lr)`` with the parameters updated in place by plain SGD.

    ``momentum`` > 0: SGD with momentum as Keras writes it, one velocity input
    per parameter after the parameters (``v <- momentum v - lr g``, ``p <- p + v``):
    ``step(X, Y, W1, b1, ..., vW1, vb1, ..., lr)``.
    ``epoch=True`` (LLVM) also compiles the whole-epoch entry, ``step.epoch``;
    ``cache=False`` bypasses the disk cache; ``threads``: the LLVM backend's thread count
    (default ``symgrad.compile``'s: every CPU the process may use).
    """
    grads = symgrad.gradients(graph.loss, graph.params, context=[graph.output])
    lr = sp.Symbol("lr", positive=True)
    velocities = [E.matrix(f"v{w.name}", *w.shape) for w in graph.params] if momentum else []
    updates = {}
    for k, w in enumerate(graph.params):
        step = E.scale(lr, E.name(f"d{w.name}", grads.raw[w]))
        if momentum:
            v = velocities[k]
            new_v = E.name(f"v{w.name}_new", E.sub(E.scale(sp.nsimplify(momentum), v), step))
            updates[v] = new_v
            updates[w] = E.add(w, new_v)
        else:
            updates[w] = E.sub(w, step)
    return symgrad.compile(
        [graph.X, graph.Y, *graph.params, *velocities],
        {"loss": graph.loss},
        updates=updates,
        scalars=[lr],
        guards=guards,
        backend=backend,
        dtype=dtype,
        name=name,
        epoch={"x_input": "X", "y_input": "Y", "sums": ("loss",), "counter": None}
        if epoch
        else None,
        cache=cache,
        threads=threads,
    )
