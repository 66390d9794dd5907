"""Peak memory that ``predict`` / ``evaluate`` allocate beyond the input and the output.

Run from the repository root::

    python -m benchmarks.bench_input_memory                   # 10**6 x 64 float32 rows
    python -m benchmarks.bench_input_memory --rows 200000 --dtype float64

A ``Dense(8)`` model of the given dtype, built and compiled (NumPy backend) before
the measurement, predicts on ``--rows`` rows of 64 features already in that dtype
(and, second, evaluates them against targets of that dtype). ``tracemalloc`` records
the peak of the Python and NumPy allocations during the call; the figure printed is
that peak minus the arrays the call must return (the predictions, ``rows x 8``), in
MiB: what the input's checks and conversions cost. A float32 model given float32
rows should need no copy of them.
"""

from __future__ import annotations

import argparse
import json
import tracemalloc

import numpy as np

from symgrad.layers import Dense
from symgrad.models import Sequential

MIB = 2**20


def peak_mib(call) -> float:
    """Peak traced allocation of ``call()`` in MiB (tracemalloc, NumPy buffers included)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10**6)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, 64)).astype(args.dtype)
    y = rng.standard_normal((args.rows, 8)).astype(args.dtype)
    model = Sequential([Dense(8, input_dim=64)], name="wide")
    model.compile(optimizer="sgd", loss="mse", dtype=args.dtype, seed=0)
    model.predict(x[:10], batch_size=1024)  # compile before measuring
    model.evaluate(x[:10], y[:10], batch_size=1024)
    output = args.rows * 8 * np.dtype(args.dtype).itemsize / MIB
    result = {
        "rows": args.rows,
        "dtype": args.dtype,
        "input_mib": x.nbytes / MIB,
        "predict_extra_mib": peak_mib(lambda: model.predict(x, batch_size=1024)) - output,
        "evaluate_extra_mib": peak_mib(lambda: model.evaluate(x, y, batch_size=1024)),
    }
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
