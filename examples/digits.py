"""Handwritten digits (sklearn's bundled 8x8 images) with a Keras-style Sequential model.

Run:  python examples/digits.py [--backend numpy|llvm] [--epochs 30] [--plot [PNG]]

Prints the gradient formulas symgrad derived for the network, trains it with a
progress bar, writes the loss curves with --plot (matplotlib: the examples extra),
and exits with status 1 if the test accuracy is below 97%.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from symgrad.compiler import BACKENDS
from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.optimizers import Adam

TARGET = 0.97


def load(seed: int = 42):
    digits = load_digits()
    x = digits.data / 16.0  # pixels 0..16 -> 0..1
    return train_test_split(
        x, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )


def build(backend: str, seed: int = 0) -> Sequential:
    model = Sequential(
        [
            Dense(64, activation="relu", input_dim=64),
            Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=Adam(learning_rate=0.003),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        backend=backend,
        seed=seed,
    )
    return model


def save_curve(history, path: str) -> bool:
    """The loss curves as an image at ``path``; False (and why, on stderr) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, no window
    except ImportError:
        print(
            f"--plot {path}: matplotlib is not installed, so no loss curve was written; "
            'install it with: pip install -e ".[examples]"',
            file=sys.stderr,
        )
        return False
    history.plot(["loss", "accuracy"], path=path)
    print(f"loss curve saved to {path}")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=list(BACKENDS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--verbose", type=int, default=1, help="1: progress bar, 2: a line per epoch"
    )
    parser.add_argument(
        "--plot",
        nargs="?",
        const="digits_loss.png",
        default="",
        help="write the loss curves to this image (default digits_loss.png)",
    )
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load()
    model = build(args.backend)
    model.summary()
    print(
        "\nGradients symgrad derived, dL/dW for each weight W (L: mean loss over a batch of n rows):"
    )
    for weight, formula in model.gradient_formulas().items():
        print(f"  {weight:<16} {formula}")
    print()

    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=32,
        validation_data=(x_test, y_test),
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test)
    print(
        f"\ntest loss {loss:.4f}, test accuracy {accuracy:.4f} after {len(history.epoch)} epochs "
        f"({seconds / max(1, len(history.epoch)) * 1e3:.1f} ms per epoch, backend {args.backend})"
    )
    predicted = np.argmax(model.predict(x_test), axis=1)
    assert np.isclose(np.mean(predicted == y_test), accuracy)
    if args.plot:
        save_curve(history, args.plot)
    if accuracy < TARGET:
        print(f"test accuracy {accuracy:.4f} is below {TARGET}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
