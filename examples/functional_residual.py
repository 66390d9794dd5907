"""Handwritten digits with a residual MLP built with the functional API (a skip connection).

Run:  python examples/functional_residual.py [--backend numpy|llvm] [--epochs 30]

    x -> hidden_1 -> hidden_2 -> (+ hidden_1) -> classes

Prints the model (each layer's inbound layers and formula) and the gradient
formulas symgrad derived -- the skip connection shows as a second term in the
gradient of ``hidden_1`` -- trains on scikit-learn's digits (the README's
split), and exits with status 1 if the test accuracy is below 97%.
"""

from __future__ import annotations

import argparse
import sys
import time

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from symgrad.compiler import BACKENDS
from symgrad.layers import Add, Dense, Input
from symgrad.models import Model
from symgrad.optimizers import Adam

TARGET = 0.97


def load(seed: int = 42):
    digits = load_digits()
    return train_test_split(
        digits.data / 16.0, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )


def build(backend: str, seed: int = 0) -> Model:
    pixels = Input(shape=(64,), name="pixels")
    h1 = Dense(64, activation="relu", name="hidden_1")(pixels)
    h2 = Dense(64, activation="relu", name="hidden_2")(h1)
    skip = Add(name="skip")([h1, h2])
    classes = Dense(10, activation="softmax", name="classes")(skip)
    model = Model(pixels, classes, name="residual_mlp")
    model.compile(
        optimizer=Adam(learning_rate=0.003),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        backend=backend,
        seed=seed,
    )
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=list(BACKENDS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load()
    model = build(args.backend)
    model.summary()
    print("\nGradients symgrad derived (L: mean loss over a batch of n rows):")
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
