"""Keras's custom training loop on scikit-learn's digits: GradientTape and apply_gradients.

Run:  python examples/custom_training_loop.py [--epochs 20] [--backend numpy|llvm]

The model code is Keras's, from TensorFlow's guides, with only the imports changed::

    import tensorflow as tf        ->   import symgrad as tf
    from tensorflow import keras   ->   import symgrad as keras

First the issue's snippet: ``compile`` and ``fit``, then one ``tf.GradientTape``
over ``model(x_test)`` and its cross-entropy, and ``tape.gradient`` with respect
to ``model.trainable_weights`` (checked against ``model.compute_gradients``).
Then a second model trained by the loop of "Writing a training loop from
scratch": per batch, ``model(x)`` and the loss under the tape, ``tape.gradient``,
``optimizer.apply_gradients``; the tape derives the gradient symbolically and
compiles it once (the figures printed at the end).  Exits with status 1 if the
custom loop's test accuracy is below 95%.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import symgrad as keras
import symgrad as tf
from symgrad.compiler import BACKENDS

TARGET = 0.95


def load(seed: int = 42):
    """Digits scaled to [0, 1] (float32) and one-hot labels: the README's split."""
    digits = load_digits()
    x_train, x_test, labels_train, labels_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.2, random_state=seed, stratify=digits.target
    )
    one_hot = np.eye(10, dtype="float32")
    return (
        x_train.astype("float32"),
        x_test.astype("float32"),
        one_hot[labels_train],
        one_hot[labels_test],
    )


def snippet(x_train, y_train, x_test, y_test, epochs: int, backend: str):
    """The issue's snippet, as Keras users write it (``backend`` is symgrad's only addition)."""
    model = keras.Sequential(
        [keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(
        optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"], backend=backend
    )
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    with tf.GradientTape() as tape:
        logits = model(x_test)
        loss_value = keras.losses.categorical_crossentropy(y_test, logits)
    grads = tape.gradient(loss_value, model.trainable_weights)
    return model, loss_value, grads, tape


def custom_loop(x_train, y_train, epochs: int, batch_size: int = 32, seed: int = 0):
    """Keras's "training loop from scratch", unchanged but for the imports."""
    model = keras.Sequential(
        [
            keras.layers.Dense(64, activation="relu", input_dim=64),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    loss_fn = keras.losses.CategoricalCrossentropy()
    train_acc_metric = keras.metrics.CategoricalAccuracy()
    order = np.random.default_rng(seed)
    for epoch in range(epochs):
        shuffled = order.permutation(len(x_train))
        for start in range(0, len(x_train), batch_size):
            batch = shuffled[start : start + batch_size]
            x_batch, y_batch = x_train[batch], y_train[batch]
            with tf.GradientTape() as tape:
                logits = model(x_batch)
                loss_value = loss_fn(y_batch, logits)
            grads = tape.gradient(loss_value, model.trainable_weights)
            optimizer.apply_gradients(zip(grads, model.trainable_weights))
            train_acc_metric.update_state(y_batch, logits)
        print(
            f"epoch {epoch + 1:2d}  loss {float(loss_value):.4f}  "
            f"train accuracy {train_acc_metric.result():.4f}"
        )
        train_acc_metric.reset_state()
    return model, optimizer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--backend", default="numpy", choices=list(BACKENDS))
    args = parser.parse_args(argv)
    x_train, x_test, y_train, y_test = load()

    model, loss_value, grads, tape = snippet(
        x_train, y_train, x_test, y_test, args.epochs, args.backend
    )
    expected = model.compute_gradients(x_test, y_test)  # of the mean; the tape's is of the sum
    worst = max(
        float(np.max(np.abs(g / len(x_test) - e))) for g, e in zip(grads, expected, strict=True)
    )
    print(f"snippet: fit {args.epochs} epochs, test loss per sample {loss_value.shape}")
    print(f"  tape.gradient / n vs compute_gradients: max |difference| {worst:.2e}")
    formulas = tape.gradient_formulas(loss_value, model.trainable_weights)
    for name, formula in formulas.items():
        print(f"  d(sum of losses)/d{name} = {keras.expr.sstr(formula)}")

    print("\ncustom loop: GradientTape + apply_gradients")
    looped, optimizer = custom_loop(x_train, y_train, args.epochs)
    predictions = looped(x_test)
    accuracy = float(np.mean(np.argmax(predictions, 1) == np.argmax(y_test, 1)))
    print(f"{optimizer.iterations} steps; custom loop test accuracy {accuracy:.4f}")
    return 0 if accuracy >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
