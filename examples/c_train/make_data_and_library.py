"""Build the digits model, emit it as a shared library + C header, write the data for train.c.

Run from the repository root (then ./examples/c_train/build.sh):

    python examples/c_train/make_data_and_library.py [--out examples/c_train/build]

Writes into the output folder:

- libdigits.so, digits.h: the model's forward pass, gradients and Adam step (symgrad.emit);
- digits_data.bin: int64 rows, int64 columns, the rows x columns float64 pixels (row-major,
  scaled to [0, 1]), then rows int64 class labels 0..9;
- digits_weights.bin: the initial weights, float64, in the order and sizes of DIGITS_WEIGHT_SIZES;
- expected_losses.txt (with --reference): the mean loss of each epoch of model.fit on the same
  data, initial weights and batch order (shuffle=False), for comparing with train.c.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from digits_model import build_model  # this folder is sys.path[0] when run as a script

import symgrad

HERE = Path(__file__).resolve().parent


def load_digits(samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x, y = digits.data / 16.0, digits.target.astype(np.int64)
    return (x[:samples], y[:samples]) if samples else (x, y)


def write_data(path: Path, x: np.ndarray, labels: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.array(x.shape, dtype=np.int64).tofile(f)
        np.ascontiguousarray(x, dtype=np.float64).tofile(f)
        np.ascontiguousarray(labels, dtype=np.int64).tofile(f)


def write_weights(path: Path, model) -> None:
    with open(path, "wb") as f:
        for w in model.get_weights():
            np.ascontiguousarray(w, dtype=np.float64).tofile(f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "build"), help="output folder")
    parser.add_argument("--samples", type=int, default=None, help="use the first N images only")
    parser.add_argument("--cpu", default="host", choices=["host", "generic"])
    parser.add_argument(
        "--reference",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="also fit the Python model for EPOCHS epochs (batch 32, no shuffle)",
    )
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, labels = load_digits(args.samples)
    model = build_model()
    for path in symgrad.emit(model, out / "libdigits.so", target="shared", cpu=args.cpu):
        print(f"wrote {path}")
    write_data(out / "digits_data.bin", x, labels)
    write_weights(out / "digits_weights.bin", model)  # before any training
    print(f"wrote {out / 'digits_data.bin'} ({len(x)} images), {out / 'digits_weights.bin'}")
    if args.reference:
        history = model.fit(
            x, labels, epochs=args.reference, batch_size=32, shuffle=False, verbose=0
        )
        lines = [
            f"epoch {k + 1} loss {loss:.17g}" for k, loss in enumerate(history.history["loss"])
        ]
        (out / "expected_losses.txt").write_text("\n".join(lines) + "\n")
        print(f"wrote {out / 'expected_losses.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
