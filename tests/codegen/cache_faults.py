"""Fault injection into the disk cache, run as ``python -m tests.codegen.cache_faults``.

The driver imports symgrad once, fills a cache directory with one compile of a
small model (LLVM backend: a ``.program``, an ``.index`` and an ``.o`` entry,
and the directory's ``key``), computes the reference result with
``cache=False``, then runs every trial in a forked child: copy the directory,
damage one file (flip one random bit, or truncate it at a random length),
compile and run the model again. The parent waits for each child with a
timeout and prints one JSON line per trial: how the child ended (exit code or
signal, or ``"hang"``), whether the result is bit-identical to the reference,
how many entries the cache rejected, and whether the damaged entry was
replaced by the original bytes.

    python -m tests.codegen.cache_faults --trials 20 --kinds o index program key
    python -m tests.codegen.cache_faults --trials 100 --summary   # a Markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sympy as sp

import symgrad
from codegen import cache
from symgrad import compiler
from symgrad import expr as E

KINDS = ("o", "index", "program", "key")


def build():
    """A two-output model: a loss through tanh and its gradient."""
    X, W = E.matrix("X", E.batch(), 3), E.matrix("W", 3, 2)
    t = sp.Symbol("t")
    loss = E.mean(E.elementwise(sp.Lambda(t, sp.tanh(t) ** 2 + t), E.matmul(X, W)))
    return [X, W], {"loss": loss, "dW": symgrad.grad(loss, W)}


ARGS = (np.linspace(-1, 1, 15).reshape(5, 3), np.linspace(0.5, -0.5, 6).reshape(3, 2))


def run(use_cache: bool = True) -> list[bytes]:
    inputs, outputs = build()
    fn = compiler.compile(inputs, outputs, backend="llvm", cache=use_cache)
    return [np.ascontiguousarray(a).tobytes() for a in fn(*[a.copy() for a in ARGS])]


def entry_of(directory: Path, kind: str) -> Path:
    if kind == "key":
        return directory / "key"
    (path,) = directory.glob(f"*.{kind}")
    return path


def damage(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    if rng.random() < 0.5:
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        how = f"flip bit {bit} of {len(data) * 8}"
    else:
        size = rng.randrange(len(data))
        data = data[:size]
        how = f"truncate to {size} of {len(path.read_bytes())} bytes"
    path.write_bytes(bytes(data))
    return how


def trial(pristine: Path, kind: str, seed: int, reference: list[bytes], out) -> None:
    """The forked child: damage one file, compile again, report; exits without cleanup."""
    directory = Path(tempfile.mkdtemp(prefix="trial-", dir=pristine.parent))
    shutil.copytree(pristine, directory, dirs_exist_ok=True)
    os.environ["SYMGRAD_CACHE_DIR"] = str(directory)
    target = entry_of(directory, kind)
    original = target.read_bytes()
    how = damage(target, random.Random(seed))
    before = dict(cache.stats)
    result = run()
    report = {
        "kind": kind,
        "seed": seed,
        "damage": how,
        "identical": result == reference,
        "rejected": cache.stats["rejected"] - before["rejected"],
        "restored": kind == "key" or target.read_bytes() == original,
    }
    out.write(json.dumps(report).encode() + b"\n")
    out.flush()
    os._exit(0)


def supervise(pristine: Path, kind: str, seed: int, reference, timeout: float) -> dict:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        with os.fdopen(write, "wb") as out:
            try:
                trial(pristine, kind, seed, reference, out)
            except BaseException as err:  # noqa: BLE001 - reported, then the child ends
                out.write(json.dumps({"error": repr(err)}).encode() + b"\n")
                out.flush()
                os._exit(3)
    os.close(write)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        lines = f.read().decode().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    report.update(kind=kind, seed=seed)
    if status is None:
        report["ended"] = "hang"
    elif os.WIFSIGNALED(status):
        report["ended"] = signal.Signals(os.WTERMSIG(status)).name
    else:
        report["ended"] = os.WEXITSTATUS(status)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per kind")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per trial")
    parser.add_argument("--summary", action="store_true", help="a table instead of JSON lines")
    args = parser.parse_args(argv)
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        pristine = Path(tmp) / "pristine"
        # the reference run also loads the process's thread-pool module, once (its object
        # entry goes to another directory: a child inherits the loaded pool, never reads it)
        os.environ["SYMGRAD_CACHE_DIR"] = str(Path(tmp) / "runtime")
        reference = run(use_cache=False)
        os.environ["SYMGRAD_CACHE_DIR"] = str(pristine)
        run()  # fills the directory with the program's entries alone
        for kind in args.kinds:
            for i in range(args.trials):
                report = supervise(pristine, kind, args.seed * 100_003 + i, reference, args.timeout)
                reports.append(report)
                if not args.summary:
                    print(json.dumps(report), flush=True)
    if args.summary:
        print(summary(reports))
    return 0


def summary(reports: list[dict]) -> str:
    """One row per kind: how many trials ended normally, gave the fresh result, were refused."""
    lines = [
        "| entry | trials (bit flips / truncations) | exited normally | identical result "
        "| entry refused | entry restored |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in dict.fromkeys(r["kind"] for r in reports):
        rs = [r for r in reports if r["kind"] == kind]
        flips = sum(r.get("damage", "").startswith("flip") for r in rs)
        counts = (
            sum(r["ended"] == 0 for r in rs),
            sum(r.get("identical") is True for r in rs),
            sum(r.get("rejected", 0) >= 1 for r in rs),
            sum(r.get("restored") is True for r in rs),
        )
        cells = " | ".join(str(c) for c in counts)
        lines.append(f"| `{kind}` | {len(rs)} ({flips} / {len(rs) - flips}) | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
