"""Cold and warm ``model.compile`` of the digits model, each in a fresh process.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_compile                 # 7 runs each, llvm and numpy backends
    .venv/bin/python -m benchmarks.bench_compile --runs 11 --backends llvm

The model is 64-128-64-10 (relu, softmax), Adam, sparse categorical
cross-entropy, ``metrics=["accuracy"]``, float32. ``compile`` derives the
gradients, simplifies, lowers and generates the training step (with the LLVM
backend: the step, its whole-epoch loop and its native Python entry in one
module, then optimized and JIT-linked).

- **cold**: an empty ``SYMGRAD_CACHE_DIR`` for every run (nothing cached);
- **warm**: the same directory again after one run filled it: the lowered
  program and the object code come from disk.

"first call" is the first ``train_on_batch`` after ``compile`` (32 rows).
``--profile N`` runs one cold and one warm process under cProfile instead and
prints the N costliest calls of compile + first call (cumulative time).
``--parts`` times, in this process, LLVM's work on the digits module (O3 and
machine code) on one thread and on two (``codegen.llvm.split``), interleaved
round by round: wall time, and the CPU time of the critical path (what the
wall time is on an idle machine with two free cores) and of both threads.

When JAX is installed, the same run times JAX's first-call compile of the same
model in fresh processes as well: ``jax.jit`` of its training step (forward,
``value_and_grad``, Adam and accuracy, float32, integer labels), the first call
minus the median of the later calls (tracing, lowering and XLA's compile; JAX's
persistent compilation cache is switched off).

Each run is a new Python process; the time of ``import symgrad...`` is
reported separately from ``model.compile(...)``. Cold runs also report where
the time went.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile

# The stages of ``compile`` the child times: (module, function, label) per backend.
STAGES = {
    "common": [
        ("symgrad.nn.trainer", "add_loss", "derive (loss, gradients)"),
        ("symgrad.compiler", "simplify", "simplify"),
        ("symgrad.compiler", "lower", "lower to IR"),
    ],
    "llvm": [
        ("codegen.llvm.backend", "generate_ir", "LLVM IR text"),
        ("codegen.llvm.backend", "optimize_and_emit_parts", "LLVM optimize + codegen"),
        ("codegen.llvm.backend", "LoadedObject", "JIT link"),
    ],
}

CHILD = r"""
import functools, importlib, json, sys, time
t0 = time.perf_counter()
import numpy as np
import symgrad.compiler
from symgrad.layers import Dense
from symgrad.models import Sequential
backend, stages = sys.argv[1], json.loads(sys.argv[2])
imported = time.perf_counter() - t0
phases = {}
def timed(module, name, label):
    module = importlib.import_module(module)
    f = getattr(module, name)
    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            phases[label] = phases.get(label, 0.0) + time.perf_counter() - t
    setattr(module, name, g)
for stage in stages:
    timed(*stage)
profiler = None
if len(sys.argv) > 3 and sys.argv[3] == "profile":
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
t = time.perf_counter()
model = Sequential([Dense(128, activation="relu", input_dim=64), Dense(64, activation="relu"),
                    Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
              backend=backend, dtype="float32", seed=0)
compiled = time.perf_counter() - t
rng = np.random.default_rng(0)
x, y = rng.random((32, 64), dtype=np.float32), rng.integers(0, 10, 32)
t = time.perf_counter()
model.train_on_batch(x, y)
first_call = time.perf_counter() - t
profiled = {}
if profiler is not None:
    import pstats
    profiler.disable()
    stats = pstats.Stats(profiler)
    wanted = {(path, name): label for path, name, label in json.loads(sys.argv[5])}
    for (path, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        for (suffix, fn), label in wanted.items():
            if name == fn and path.replace("\\", "/").endswith(suffix):
                profiled[label] = profiled.get(label, 0.0) + cumulative
    stats.sort_stats("cumulative").print_stats(int(sys.argv[4]))
print(json.dumps({"import": imported, "compile": compiled, "first": first_call, "phases": phases,
                  "profiled": profiled}))
"""

JAX_CHILD = r"""
import json, statistics, time
t0 = time.perf_counter()
import jax
import jax.numpy as jnp
import numpy as np
imported = time.perf_counter() - t0
jax.config.update("jax_enable_compilation_cache", False)
rng = np.random.default_rng(0)
sizes = [64, 128, 64, 10]
params = []
for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
    limit = np.sqrt(6 / (fan_in + fan_out))  # Glorot uniform, zero biases (Keras's defaults)
    params += [rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32),
               np.zeros(fan_out, np.float32)]
params = [jnp.asarray(p) for p in params]
slots = [jnp.zeros_like(p) for p in params]
beta_1, beta_2, epsilon, learning_rate = 0.9, 0.999, 1e-7, 1e-3

def loss_fn(params, x, y):
    a = x
    for k in range(0, len(params) - 2, 2):
        a = jax.nn.relu(a @ params[k] + params[k + 1])
    z = a @ params[-2] + params[-1]
    log_p = jax.nn.log_softmax(z)
    loss = -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))
    return loss, jnp.mean(jnp.argmax(z, axis=1) == y)

def step(state, x, y):
    params, m, v, t = state
    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
    t = t + 1
    m = [beta_1 * mi + (1 - beta_1) * g for mi, g in zip(m, grads)]
    v = [beta_2 * vi + (1 - beta_2) * g * g for vi, g in zip(v, grads)]
    scale = learning_rate * jnp.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    params = [p - scale * mi / (jnp.sqrt(vi) + epsilon) for p, mi, vi in zip(params, m, v)]
    return (params, m, v, t), loss, accuracy

x = jnp.asarray(rng.random((32, 64), dtype=np.float32))
y = jnp.asarray(rng.integers(0, 10, 32), dtype=jnp.int32)
state = (params, slots, [jnp.zeros_like(p) for p in params], jnp.float32(0))
jitted = jax.jit(step, donate_argnums=0)
t = time.perf_counter()
state, loss, accuracy = jitted(state, x, y)
loss.block_until_ready()
first = time.perf_counter() - t
later = []
for _ in range(20):
    t = time.perf_counter()
    state, loss, accuracy = jitted(state, x, y)
    loss.block_until_ready()
    later.append(time.perf_counter() - t)
later = statistics.median(later)
print(json.dumps({"import": imported, "compile": first - later, "first": later, "phases": {}}))
"""


def jax_installed() -> bool:
    return importlib.util.find_spec("jax") is not None


# Functions whose cumulative time (under cProfile) the profile table lists: (file, function, label).
PROFILED = [
    ("symgrad/nn/trainer.py", "add_loss", "derive (loss, gradients)"),
    ("symgrad/simplify/rebuild.py", "simplify", "simplify"),
    ("symgrad/lower/lowering.py", "lower", "lower to IR"),
    ("symgrad/lower/lowering.py", "_comment", "- of which the formula comments"),
    ("codegen/llvm/module.py", "generate_ir", "LLVM IR text"),
    ("codegen/llvm/module.py", "_build_step_impl", "- of which the step's kernels"),
    ("codegen/llvm/module.py", "annotated", "- of which the module as text"),
    (
        "codegen/llvm/split.py",
        "optimize_and_emit_roles",
        "LLVM O3 + machine code, two threads (wall)",
    ),
    ("codegen/llvm/jit.py", "optimize", "- of which O3 passes on the calling thread"),
    ("codegen/llvm/split.py", "_emit_object", "- of which machine code on the calling thread"),
    ("codegen/cache.py", "load", "disk cache reads"),
    ("codegen/llvm/jit.py", "__init__", "JIT link (LoadedObject)"),
    ("symgrad/nn/trainer.py", "train_on_batch", "first call (train_on_batch)"),
]


def run_child(backend: str, cache_dir: str, profile: int = 0) -> dict:
    """One fresh process: its timings; with ``profile`` > 0 also ``"profile"``, the text of
    cProfile's ``profile`` most expensive calls (cumulative) of compile + first call."""
    env = dict(os.environ, SYMGRAD_CACHE_DIR=cache_dir)
    if backend == "jax":
        out = subprocess.run(
            [sys.executable, "-c", JAX_CHILD], env=env, capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    stages = STAGES["common"] + STAGES.get(backend, [])
    extra = ["profile", str(profile), json.dumps(PROFILED)] if profile else []
    out = subprocess.run(
        [sys.executable, "-c", CHILD, backend, json.dumps(stages), *extra],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    if profile:
        result["profile"] = "\n".join(lines[:-1])
    return result


def profile(backend: str, top: int) -> None:
    """One cold and one warm process under cProfile: the stage table, then the costliest calls."""
    with tempfile.TemporaryDirectory() as cache:
        cold = run_child(backend, cache, profile=top)
        warm = run_child(backend, cache, profile=top)
    total = {name: r["compile"] + r["first"] for name, r in (("cold", cold), ("warm", warm))}
    print(
        f"{backend}: compile + first call under cProfile: cold {total['cold']:.3f} s, "
        f"warm {total['warm']:.3f} s\n"
    )
    print("| stage (cumulative, under cProfile) | cold (s) | share | warm (s) |")
    print("| --- | ---: | ---: | ---: |")
    for _, _, label in PROFILED:
        c, w = cold["profiled"].get(label, 0.0), warm["profiled"].get(label, 0.0)
        if c or w:
            print(f"| {label} | {c:.3f} | {c / total['cold']:.0%} | {w:.3f} |")
    for name, result in (("cold", cold), ("warm", warm)):
        print(f"\n{backend}, {name}: the {top} costliest calls\n\n{result['profile']}")


def _digits_module() -> str:
    """The LLVM IR text of the digits model's module (step, epoch, entries), cache off."""
    from codegen.llvm import backend

    texts = []
    original = backend.optimize_and_emit_parts

    def capture(text, opt, parts):
        texts.append(text)
        return original(text, opt, parts)

    backend.optimize_and_emit_parts = capture
    try:
        model = (
            "model = Sequential(" + CHILD.split("model = Sequential(")[1].split("compiled = ")[0]
        )
        imports = "from symgrad.layers import Dense\nfrom symgrad.models import Sequential\n"
        exec(
            imports + model, {"backend": "llvm"}
        )  # the child's model and compile call, in this process
    finally:
        backend.optimize_and_emit_parts = original
    return max(texts, key=len)  # the pool's runtime module is the other one


def compile_in_parts(rounds: int) -> None:
    """LLVM's work on the digits module on one thread against two (``codegen.llvm.split``)."""
    import threading
    import time

    from codegen.llvm import jit, split

    os.environ["SYMGRAD_CACHE_DIR"] = tempfile.mkdtemp()
    text = _digits_module()
    steps: list[tuple[str, str, float]] = []  # (thread, what, its thread CPU)
    originals = [
        (split, "_emit_object", split._emit_object),
        (jit, "optimize", jit.optimize),
        (jit, "parse", jit.parse),
        (split, "split", split.split),
        (split, "by_role", split.by_role),
    ]

    def timed(f, what):
        def g(*args, **kwargs):
            started = time.thread_time()
            try:
                return f(*args, **kwargs)
            finally:
                steps.append((threading.current_thread().name, what, time.thread_time() - started))

        return g

    one, two = [], []
    for _ in range(rounds):
        started, cpu = time.perf_counter(), time.thread_time()
        jit.optimize_and_emit_parts(text, 3, 1)
        one.append((time.perf_counter() - started, time.thread_time() - cpu))
        steps.clear()
        for module, name, f in originals:
            setattr(module, name, timed(f, name))
        try:
            started = time.perf_counter()
            objects, _ = jit.optimize_and_emit_parts(text, 3, 2)
            wall = time.perf_counter() - started
        finally:
            for module, name, f in originals:
                setattr(module, name, f)
        caller = [(what, c) for name, what, c in steps if name == threading.main_thread().name]
        helper = [c for name, what, c in steps if name != threading.main_thread().name]
        # the helper's last emission and its parse (the step's second part) wait for the
        # step's optimization (and its dealing, ``split``) on the caller's thread
        before = [what for what, _ in caller].index("split") + 1
        waited = sum(c for _, c in caller[:before]) + sum(helper[-2:])
        caller = [c for _, c in caller]
        two.append((wall, max(sum(caller), sum(helper), waited), sum(caller) + sum(helper)))
    med = statistics.median
    print(f"digits module, LLVM optimization + machine code; {rounds} rounds, interleaved")
    print(f"one thread: wall {med(w for w, _ in one):.4f} s, CPU {med(c for _, c in one):.4f} s")
    print(
        f"two threads ({len(objects)} objects): wall {med(w for w, _, _ in two):.4f} s, "
        f"critical path's CPU {med(c for _, c, _ in two):.4f} s "
        f"({med(t[1] / o[1] for t, o in zip(two, one)):.2f}x one thread's), both threads' CPU "
        f"{med(t for _, _, t in two):.4f} s ({med(t[2] / o[1] for t, o in zip(two, one)):.2f}x)"
    )


def _rows(args) -> dict[tuple[str, str], list[dict]]:
    """Fresh-process timings per (backend, cache), the backends interleaved round by round so
    that a change in the machine's load touches every row alike."""
    rows: dict[tuple[str, str], list[dict]] = {}
    with contextlib.ExitStack() as stack:
        filled = {b: stack.enter_context(tempfile.TemporaryDirectory()) for b in args.backends}
        for backend in args.backends:
            if backend != "jax":
                run_child(backend, filled[backend])  # fills the cache the warm runs read
        for _ in range(args.runs):
            for backend in args.backends:
                with tempfile.TemporaryDirectory() as empty:
                    rows.setdefault((backend, "cold"), []).append(run_child(backend, empty))
                if backend != "jax":
                    warm = run_child(backend, filled[backend])
                    rows.setdefault((backend, "warm"), []).append(warm)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["llvm", "numpy", "jax"] if jax_installed() else ["llvm", "numpy"],
        choices=["llvm", "numpy", "jax"],
        help="jax: JAX's first-call compile of the same model (when JAX is installed)",
    )
    ap.add_argument(
        "--profile", type=int, default=0, help="print the N costliest calls, cold and warm"
    )
    ap.add_argument(
        "--parts", action="store_true", help="time LLVM on two threads against one, in-process"
    )
    args = ap.parse_args(argv)
    if args.parts:
        compile_in_parts(args.runs)
        return
    if "jax" in args.backends and not jax_installed():
        ap.error("--backends jax needs JAX (pip install -e '.[peers]')")
    if args.profile:
        for backend in args.backends:
            if backend != "jax":
                profile(backend, args.profile)
        return
    print(f"{args.runs} fresh processes per row, interleaved; medians (min-max) in seconds\n")
    print(
        "| backend | cache | compile | first call | compile + first call | import "
        "| where the time went (median) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for (backend, name), rows in _rows(args).items():
        labels = list(rows[0]["phases"])
        detail = ", ".join(
            f"{label} {statistics.median(r['phases'].get(label, 0.0) for r in rows):.3f}"
            for label in labels
        )
        c = [r["compile"] for r in rows]
        total = [r["compile"] + r["first"] for r in rows]
        if backend == "jax":
            backend, detail = (
                "jax jit",
                "compile = first call - later call; first call = a later call",
            )
        print(
            f"| {backend} | {name} | {statistics.median(c):.3f} ({min(c):.3f}-{max(c):.3f}) "
            f"| {statistics.median(r['first'] for r in rows):.3f} "
            f"| {statistics.median(total):.3f} ({min(total):.3f}-{max(total):.3f}) "
            f"| {statistics.median(r['import'] for r in rows):.3f} | {detail} |"
        )


if __name__ == "__main__":
    main()
