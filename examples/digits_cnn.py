"""Handwritten digits with a convolutional network: Conv2D -> pooling -> dropout -> Dense.

Run:  python examples/digits_cnn.py [--backend numpy|llvm] [--epochs 25]

    8x8x1 image -> Conv2D(32, 3x3, same, relu) -> MaxPooling2D(2x2)
                -> Conv2D(64, 3x3, same, relu) -> MaxPooling2D(2x2)
                -> Dropout(0.25) -> Flatten -> Dense(64, relu) -> Dense(10, softmax)

The images are fed as (n, 8, 8, 1) arrays (channels last).  Prints the model with
the formula each layer computes, the convolution and pooling layers entry by entry
(the kernel gradient is a correlation of the cotangent with the input, max pooling
routes it to the argmax) and the gradients symgrad derived as matrix formulas;
trains on scikit-learn's digits (the README's split) and exits with status 1 if
the test accuracy is below 98%.  The dropout masks are drawn inside the compiled
step (a counter-based generator of the seed, the step and the entry), so the whole
epoch still runs as one native call; predict and evaluate run without them.
"""

from __future__ import annotations

import argparse
import sys
import time

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from symgrad.compiler import BACKENDS
from symgrad.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
from symgrad.models import Sequential
from symgrad.optimizers import Adam

TARGET = 0.98


def load(seed: int = 42):
    digits = load_digits()
    images = (digits.images / 16.0)[..., None]  # (n, 8, 8, 1)
    return train_test_split(
        images, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )


def build(backend: str, seed: int = 0) -> Sequential:
    model = Sequential(
        [
            Input(shape=(8, 8, 1)),
            Conv2D(32, 3, padding="same", activation="relu"),
            MaxPooling2D(),
            Conv2D(64, 3, padding="same", activation="relu"),
            MaxPooling2D(),
            Dropout(0.25),
            Flatten(),
            Dense(64, activation="relu"),
            Dense(10, activation="softmax"),
        ],
        name="digits_cnn",
    )
    model.compile(
        optimizer=Adam(learning_rate=0.002),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        backend=backend,
        seed=seed,
    )
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="llvm", choices=list(BACKENDS))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load()
    model = build(args.backend)
    model.summary()
    print("\nConvolution and pooling entry by entry (k: sample, i, j: window, u, v: tap):")
    for line in model.element_formulas():
        print(f"  {line}")
    print("\nGradients symgrad derived (L: mean loss over a batch of n images):")
    for weight, formula in model.gradient_formulas().items():
        print(f"  dL/d{weight:<16} = {formula}")
    print()
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=args.verbose)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test)
    print(
        f"\ntest loss {loss:.4f}, test accuracy {accuracy:.4f} after {len(history.epoch)} epochs "
        f"({seconds / max(1, len(history.epoch)) * 1e3:.1f} ms per epoch, backend {args.backend})"
    )
    if accuracy < TARGET:
        print(f"test accuracy {accuracy:.4f} is below {TARGET}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
