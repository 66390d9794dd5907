"""One training epoch of the digits MLP: WebAssembly in Node vs the host native library vs NumPy.

    python -m benchmarks.bench_wasm [--rounds 5] [--epochs 5]

The same emitted model four ways, timed in one run, interleaved round by round:
``node``: digits.wasm + digits.js (``symgrad.emit(target="wasm")``) in Node, timed with
``performance.now``, two ways interleaved epoch by epoch: ``fit`` (one call of the wasm
epoch function, batches gathered in wasm) and a JavaScript loop calling ``trainStep``
once per batch (each call copies its batch in); ``native``: libdigits.so (``target="shared"``, this
machine's CPU) driven by a small C loop timed with ``clock_gettime``; ``numpy``: the
emitted NumPy module's ``fit`` (one thread: OPENBLAS_NUM_THREADS=1 unless set).
Each round trains ``--epochs`` epochs from the same initial weights (1797 images,
batch 32, in order); the table gives the median epoch over all rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "c_train"))

NODE_SCRIPT = r"""
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [module, data, epochs] = process.argv.slice(2);
const { load, INPUT_DIM } = await import(pathToFileURL(module));
const d = JSON.parse(readFileSync(data, "utf8"));
const x = Float64Array.from(d.x), y = Int32Array.from(d.y);
const rows = y.length;
// two ways to train an epoch, each on its own instance from the same weights
const variants = {
  epoch: (model) => model.fit(x, y, { epochs: 1, batchSize: 32 }), // one wasm call
  loop: (model) => { // one trainStep call per batch from JavaScript
    for (let start = 0; start < rows; start += 32) {
      const end = Math.min(start + 32, rows);
      model.trainStep(x.subarray(start * INPUT_DIM, end * INPUT_DIM), y.subarray(start, end));
    }
  },
};
const models = {};
for (const name of Object.keys(variants)) {
  models[name] = await load();
  models[name].setWeights(d.weights);
}
const seconds = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
for (let e = 0; e < Number(epochs); e++) {
  for (const [name, train] of Object.entries(variants)) { // interleaved epoch by epoch
    const t = performance.now();
    train(models[name]);
    seconds[name].push((performance.now() - t) / 1000);
  }
}
console.log(JSON.stringify(seconds));
"""

C_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "digits.h"
/* argv: rows, data file (X then one-hot Y, double), weights file, epochs */
int main(int argc, char **argv) {
    long rows = atol(argv[1]); int epochs = atoi(argv[4]);
    double *x = malloc(sizeof(double) * rows * DIGITS_INPUT_DIM);
    double *y = malloc(sizeof(double) * rows * DIGITS_OUTPUT_DIM);
    FILE *f = fopen(argv[2], "rb");
    if (fread(x, sizeof(double), rows * DIGITS_INPUT_DIM, f) != (size_t)(rows * DIGITS_INPUT_DIM)) return 1;
    if (fread(y, sizeof(double), rows * DIGITS_OUTPUT_DIM, f) != (size_t)(rows * DIGITS_OUTPUT_DIM)) return 1;
    fclose(f);
    const long sizes[] = DIGITS_WEIGHT_SIZES, slot_sizes[] = DIGITS_SLOT_SIZES;
    double *w[DIGITS_N_WEIGHTS], *s[DIGITS_N_SLOTS];
    f = fopen(argv[3], "rb");
    for (int k = 0; k < DIGITS_N_WEIGHTS; k++) {
        w[k] = malloc(sizeof(double) * sizes[k]);
        if (fread(w[k], sizeof(double), sizes[k], f) != (size_t)sizes[k]) return 1;
    }
    fclose(f);
    for (int k = 0; k < DIGITS_N_SLOTS; k++) s[k] = calloc(slot_sizes[k], sizeof(double));
    void *work = malloc(digits_train_step_workspace_size(32));
    long step = 0;
    for (int e = 0; e < epochs; e++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long start = 0; start < rows; start += 32) {
            long n = rows - start < 32 ? rows - start : 32;
            double loss;
            if (digits_train_step(n, x + start * DIGITS_INPUT_DIM, y + start * DIGITS_OUTPUT_DIM,
                    w[0], w[1], w[2], w[3], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
                    DIGITS_BETA_1, DIGITS_BETA_2, DIGITS_EPSILON, DIGITS_LEARNING_RATE,
                    (double)++step, &loss, work)) return 2;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        printf("%s%.9f", e ? "," : "[", (b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec));
    }
    printf("]\n");
    return 0;
}
"""


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    import importlib.util

    from digits_model import build_model
    from sklearn.datasets import load_digits

    import symgrad
    from codegen.llvm.emit import c_compiler

    node, cc = shutil.which("node"), c_compiler()
    if node is None or cc is None:
        raise SystemExit("bench_wasm needs node and a C compiler on the PATH")
    digits = load_digits()
    x, labels = digits.data / 16.0, digits.target
    model = build_model()
    weights = model.get_weights()
    with tempfile.TemporaryDirectory(prefix="symgrad-bench-wasm-") as tmp:
        tmp = Path(tmp)
        symgrad.emit(model, tmp / "digits.wasm", target="wasm")
        symgrad.emit(model, tmp / "libdigits.so", target="shared")
        symgrad.emit(model, tmp / "digits_model.py", weights=True)
        (tmp / "bench.mjs").write_text(NODE_SCRIPT)
        (tmp / "driver.c").write_text(C_DRIVER)
        request = {"x": x.ravel().tolist(), "y": labels.tolist()}
        request["weights"] = {w.path: v.ravel().tolist() for w, v in zip(model.weights, weights)}
        (tmp / "data.json").write_text(json.dumps(request))
        with open(tmp / "data.bin", "wb") as f:
            x.astype(np.float64).tofile(f)
            np.eye(10)[labels].tofile(f)
        with open(tmp / "weights.bin", "wb") as f:
            for w in weights:
                np.ascontiguousarray(w, np.float64).tofile(f)
        subprocess.run(
            [
                cc,
                "-O2",
                "-o",
                str(tmp / "driver"),
                str(tmp / "driver.c"),
                f"-I{tmp}",
                f"-L{tmp}",
                "-ldigits",
                "-Wl,-rpath," + str(tmp),
            ],
            check=True,
        )
        spec = importlib.util.spec_from_file_location(
            "digits_model_emitted", tmp / "digits_model.py"
        )
        numpy_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(numpy_module)

        def run_json(*command):
            """Run a timing program; it prints its seconds per epoch as JSON."""
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            return json.loads(done.stdout)

        def run_node():
            seconds = run_json(node, str(tmp / "bench.mjs"), str(tmp / "digits.js"), *data_json)
            return {
                "node: fit (epoch call)": seconds["epoch"],
                "node: trainStep loop": seconds["loop"],
            }

        def run_native():
            seconds = run_json(str(tmp / "driver"), str(len(x)), *data_bin, str(args.epochs))
            return {"native (host .so)": seconds}

        def run_numpy():
            params, opt_state = numpy_module.load_weights()
            seconds = []
            for _ in range(args.epochs):
                start = time.perf_counter()
                numpy_module.fit(params, opt_state, x, labels, epochs=1, batch_size=32)
                seconds.append(time.perf_counter() - start)
            return {"numpy module": seconds}

        data_json = (str(tmp / "data.json"), str(args.epochs))
        data_bin = (str(tmp / "data.bin"), str(tmp / "weights.bin"))
        times: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for run in (run_node, run_native, run_numpy):
                for name, seconds in run().items():  # the first epoch of each run warms up
                    times.setdefault(name, []).extend(seconds[1:] if args.epochs > 1 else seconds)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    base = medians["native (host .so)"]
    print(f"digits MLP 64-32-10, Adam, float64: one epoch = {len(x)} rows in batches of 32")
    print(f"{'':<24} {'ms/epoch':>10} {'vs native':>10}")
    for name, m in medians.items():
        print(f"{name:<24} {1000 * m:>10.2f} {m / base:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
