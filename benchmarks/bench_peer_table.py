"""The peer table: symgrad-llvm against hand NumPy, JAX and PyTorch, on one thread and on every core.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_peer_table                 # 1 thread, then all cores
    .venv/bin/python -m benchmarks.bench_peer_table --threads 2 --workloads 1 --rounds 7
    .venv/bin/python -m benchmarks.bench_peer_table --dtype float64   # the same in float64

Without ``--threads`` each thread setting runs in its own child process (the
thread limits of ``benchmarks.threads`` must be set before NumPy loads).

The four MLPs of ``benchmarks.bench_llvm`` in float32 (``--dtype float64``: in
float64, JAX with ``jax_enable_x64``), trained by SGD with
momentum 0.9 (Keras's form, learning rate 1e-3); every candidate starts from
the same Glorot weights (``HandMLP``'s), steps on the same first batch and
runs its epochs over the same permutation. Per training step, medians of
interleaved rounds (``benchmarks.common.interleaved``):

- **hand NumPy**: ``HandMLP.sgd_step`` (buffers allocated once, ``out=``);
- **Numba step** / **Numba loop**: ``bench_peers.numba_sgd``, the step and a
  whole epoch (rows gathered, a loop over batches) each one ``njit`` call;
- **JAX jit**: ``jit(value_and_grad)`` step, donated state; **JAX scan**: the
  whole epoch as one jit-compiled ``lax.scan`` (rows gathered inside);
- **PyTorch eager**: autograd + ``torch.optim.SGD(momentum=0.9)``;
- **symgrad-llvm step**: the compiled step called from Python;
  **symgrad-llvm epoch**: the whole epoch as one native call (``step.epoch``);
  with more than one CPU also the same step and epoch compiled with
  ``threads=1``, in the same rounds: ``/ 1 thread`` is the pool's speed-up.

Numba joins when it is installed (it is not a dependency). Step columns
train on one fixed batch; the loop, scan and epoch columns shuffle (their
time includes the gather). ``/ best peer``: symgrad's median over the fastest peer's (any
column). **Idle check**: before each candidate's first sample, the CPU time
other processes used during 0.2 s (from ``/proc/stat``, less this process's
own); a row where any check found more than a quarter of a core busy is
marked ``contended``. The last lines give the throughput of a 2048² float32
GEMM through symgrad's BLAS and NumPy's, and the wide network's step as a
fraction of it (FLOPs counted as 3x the forward matrix products).
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and any(a.startswith("--threads") for a in sys.argv):
    from benchmarks.threads import limit_threads_from_argv

    limit_threads_from_argv(script=__file__)  # before NumPy is imported

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.bench_llvm import WORKLOADS, data, parameters  # noqa: E402
from benchmarks.common import Timing, _number, _unit, environment, interleaved, peers  # noqa: E402
from benchmarks.graphs import mlp_graph, sgd_step  # noqa: E402
from benchmarks.handwritten import HandMLP  # noqa: E402

LR, MOMENTUM = 1e-3, 0.9
PEERS = ("hand NumPy", "Numba step", "Numba loop", "JAX jit", "JAX scan", "PyTorch eager")
SYMGRAD = ("symgrad-llvm step", "symgrad-llvm epoch")
ONE_THREAD = ("symgrad-llvm step, 1 thread", "symgrad-llvm epoch, 1 thread")  # runs of >1 CPU
BUSY = 0.25  # cores' worth of other processes' CPU time that marks a row contended


def others_busy(seconds: float = 0.2) -> float:
    """Cores kept busy by other processes (and the hypervisor's steal) while this one sleeps."""

    def busy_jiffies() -> int:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        return sum(fields[:8]) - fields[3] - fields[4]

    if not os.path.exists("/proc/stat"):
        return float("nan")
    hz = os.sysconf("SC_CLK_TCK")
    before, own = busy_jiffies(), os.times()
    time.sleep(seconds)
    after, own_after = busy_jiffies(), os.times()
    mine = (own_after.user - own.user) + (own_after.system - own.system)
    cpus = os.cpu_count() or 1  # jiffies are coarse: clip to what the machine has
    return min(float(cpus), max(0.0, ((after - before) / hz - mine) / seconds))


@dataclass
class Row:
    """One workload: per-step timings by candidate, and the idle checks before each."""

    name: str
    per_step: dict[str, Timing]
    busy: dict[str, float]

    @property
    def contended(self) -> bool:
        return any(b > BUSY for b in self.busy.values())

    def best_peer(self) -> float | None:
        found = [self.per_step[n].median for n in PEERS if n in self.per_step]
        return min(found) if found else None


def candidates(sizes, activation, output, batch, batches, dtype="float32"):
    """name -> (zero-argument call, training steps per call); peers that are not installed are left out."""
    X, Y = data(sizes, output, batch * batches, dtype)
    order = np.random.default_rng(1).permutation(len(X))
    xb, yb = X[order[:batch]], Y[order[:batch]]  # the first batch of the epoch, for the steps
    loss = "cce" if output == "softmax" else "mse"
    hand = HandMLP(sizes, activation, output, loss, dtype=dtype, momentum=MOMENTUM)
    fns = {}

    def symgrad(names, threads=None):
        """symgrad's step and epoch, each on its own copy of the weights and velocities."""
        graph = mlp_graph(sizes, activation, output)
        step = sgd_step(
            graph, backend="llvm", dtype=dtype, momentum=MOMENTUM, epoch=True, threads=threads
        )
        params = [parameters(hand) for _ in range(2)]
        s_step, s_epoch = (p + [np.zeros_like(w) for w in p] for p in params)
        fns[names[0]] = (lambda: step(xb, yb, *s_step, LR), 1)
        fns[names[1]] = (
            lambda: step.epoch(X, Y, *s_epoch, LR, batch_size=batch, order=order),
            batches,
        )

    found = peers()
    if importlib.util.find_spec("numba") is not None:
        from benchmarks.bench_peers import numba_sgd

        n_step, _ = numba_sgd(hand, LR, MOMENTUM)
        _, n_epoch = numba_sgd(hand, LR, MOMENTUM)  # its own copy of the weights
        fns["Numba step"] = (lambda: n_step(xb, yb), 1)
        fns["Numba loop"] = (lambda: n_epoch(X, Y, order, batch), batches)
    if found["jax"]:
        from benchmarks.bench_peers import jax_scan_epoch, jax_sgd_step

        fns["JAX jit"] = (jax_sgd_step(hand, xb, yb, LR, MOMENTUM), 1)
        scan = jax_scan_epoch(hand, X, Y, batch, LR, MOMENTUM)
        fns["JAX scan"] = (lambda: scan(order), batches)
    if found["torch"]:
        from benchmarks.bench_peers import torch_sgd_step

        fns["PyTorch eager"] = (torch_sgd_step(hand, xb, yb, LR, MOMENTUM), 1)
    fns["hand NumPy"] = (
        lambda: hand.sgd_step(xb, yb, LR),
        1,
    )  # last: the others copied its weights
    symgrad(SYMGRAD)
    if len(os.sched_getaffinity(0)) > 1:  # the same code on one thread, in the same rounds
        symgrad(ONE_THREAD, threads=1)
    return fns


def measure(
    name, sizes, activation, output, batch, batches, rounds: int, idle: float = 0.2, dtype="float32"
) -> Row:
    """Time every candidate of one workload interleaved; idle check before each one's warm-up."""
    fns = candidates(sizes, activation, output, batch, batches, dtype)
    busy = {}
    for label, (fn, _) in fns.items():
        busy[label] = others_busy(idle)
        fn()  # warm-up: JIT compilation, buffers
    timings = interleaved({k: fn for k, (fn, _) in fns.items()}, rounds=rounds, warmup=0)
    per_step = {}
    for label, t in timings.items():
        steps = fns[label][1]
        per_step[label] = t._replace(median=t.median / steps, q1=t.q1 / steps, q3=t.q3 / steps)
    return Row(name, per_step, busy)


def _time(seconds: float) -> str:
    unit, scale = _unit(seconds)
    return f"{_number(seconds / scale)} {unit}"


def format_rows(rows: list[Row], threads: int, dtype: str = "float32") -> str:
    """The markdown table of one thread setting."""
    columns = [c for c in (*PEERS, *SYMGRAD, *ONE_THREAD) if any(c in r.per_step for r in rows)]
    ratios = ["step / best peer", "epoch / best peer"]
    by_threads = all(c in r.per_step for r in rows for c in ONE_THREAD)
    ratios += ["step / 1 thread", "epoch / 1 thread"] if by_threads else []
    head = ["workload", *columns, *ratios, "idle check"]
    lines = [f"**{dtype}, per training step, {threads} thread(s)**", ""]
    lines += ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 2) + " --- |"]
    for r in rows:
        cells = [r.name] + [
            _time(r.per_step[c].median) if c in r.per_step else "-" for c in columns
        ]
        best = r.best_peer()
        for c in SYMGRAD:
            cells.append(f"{r.per_step[c].median / best:.2f}" if best else "-")
        for c, one in zip(SYMGRAD, ONE_THREAD) if by_threads else ():
            cells.append(f"{r.per_step[c].median / r.per_step[one].median:.2f}")
        worst = max(r.busy.values())
        cells.append(f"contended ({worst:.2f} cores busy)" if r.contended else "idle")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gemm_throughput(size: int = 2048, rounds: int = 5, dtype: str = "float32") -> dict[str, float]:
    """GFLOP/s of a ``size``² product through symgrad's BLAS and through NumPy."""
    from codegen.ir import Gemm, Program, Value
    from codegen.llvm import compile_program

    a_v, b_v, c_v = (Value(n, (size, size)) for n in ("A", "B", "C"))
    program = Program("gemm", (a_v, b_v), (), (Gemm(c_v, a_v, b_v),), (c_v,), dtype=dtype)
    fn = compile_program(program, cache=False)
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((size, size)).astype(dtype) for _ in range(2))
    out = np.empty_like(A)
    timings = interleaved(
        {"symgrad BLAS": lambda: fn(A, B), "NumPy matmul": lambda: np.matmul(A, B, out=out)},
        rounds=rounds,
    )
    return {k: 2 * size**3 / t.median / 1e9 for k, t in timings.items()}


def step_flops(sizes, batch) -> float:
    """3x the forward matrix products' FLOPs (forward, input gradient, weight gradient)."""
    return 3 * 2 * batch * sum(a * b for a, b in zip(sizes, sizes[1:]))


def run(threads: int, workloads, rounds: int, dtype: str = "float32") -> None:
    """Measure and print the table of this process's thread setting."""
    if peers()["torch"]:
        from benchmarks.threads import set_torch_threads

        set_torch_threads(threads)
    print(environment())
    rows, specs = [], list(WORKLOADS.items())
    for k in workloads:
        name, spec = specs[k]
        rows.append(measure(name, *spec, rounds=rounds, dtype=dtype))
        print(f"  measured: {name}", file=sys.stderr, flush=True)
    print(format_rows(rows, threads, dtype), end="\n\n")
    gflops = gemm_throughput(dtype=dtype)
    print(
        f"2048² {dtype} GEMM: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in gflops.items())
        + f" (idle check: {others_busy():.2f} cores busy)"
    )
    for row, k in zip(rows, workloads):
        sizes, _, _, batch, _ = specs[k][1]
        if sizes[1] >= 1024:
            rate = step_flops(sizes, batch) / row.per_step["symgrad-llvm step"].median / 1e9
            share = rate / gflops["symgrad BLAS"]
            print(f"{row.name}: symgrad-llvm step {rate:.0f} GFLOP/s, {share:.0%} of the GEMM")
    print()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="one thread setting only")
    ap.add_argument("--workloads", nargs="*", type=int, default=list(range(len(WORKLOADS))))
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parsed = ap.parse_args(args)
    if parsed.threads is not None:
        run(parsed.threads, parsed.workloads, parsed.rounds, parsed.dtype)
        return
    rest = ["--rounds", str(parsed.rounds), "--dtype", parsed.dtype]
    rest += ["--workloads", *map(str, parsed.workloads)]
    for threads in sorted({1, os.cpu_count() or 1}):  # one thread, then all cores
        cmd = [sys.executable, "-m", "benchmarks.bench_peer_table", "--threads", str(threads)]
        subprocess.run([*cmd, *rest], check=True)


if __name__ == "__main__":
    main()
