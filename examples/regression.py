"""Regression on sklearn's bundled diabetes data with MSE and MAE losses.

Run:  python examples/regression.py [--backend numpy|llvm]

Features and target are standardized; a linear model and a small MLP are
trained with each loss and compared with the mean predictor on held-out data.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

from symgrad.compiler import BACKENDS
from symgrad.layers import Dense
from symgrad.models import Sequential


def load(seed: int = 0):
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    y_mean, y_std = y_train.mean(), y_train.std()
    scale = lambda a: (a - mean) / std
    return scale(x_train), scale(x_test), (y_train - y_mean) / y_std, (y_test - y_mean) / y_std


def build(hidden: int | None, loss: str, backend: str) -> Sequential:
    layers = (
        [Dense(hidden, activation="tanh", input_dim=10), Dense(1)]
        if hidden
        else [Dense(1, input_dim=10)]
    )
    model = Sequential(layers)
    model.compile(optimizer="adam", loss=loss, metrics=["mse", "mae"], backend=backend, seed=0)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=list(BACKENDS))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument(
        "--plot", default="regression_loss.png", help="loss curves PNG ('' for none)"
    )
    args = parser.parse_args(argv)
    x_train, x_test, y_train, y_test = load()
    baseline = np.mean(y_test**2)  # predicting the (standardized) training mean, 0
    print(f"mean predictor: test MSE {baseline:.3f}")
    curves = {}
    for hidden in (None, 16):
        for loss in ("mse", "mae"):
            model = build(hidden, loss, args.backend)
            history = model.fit(
                x_train,
                y_train,
                epochs=args.epochs,
                batch_size=32,
                verbose=0,
                validation_data=(x_test, y_test),
            )
            _, mse, mae = model.evaluate(x_test, y_test)
            label = f"{'linear' if hidden is None else f'MLP({hidden})':<8} {loss}"
            curves[label] = history.history["val_loss"]
            print(f"{label}: test MSE {mse:.3f}, test MAE {mae:.3f}")
            if hidden is None and loss == "mse":
                print(f"  dL/dW = {model.gradient_formulas()['dense/kernel']}")
            if mse > baseline:
                print("  worse than the mean predictor", file=sys.stderr)
                return 1
    if not args.plot:
        return 0
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, ax = plt.subplots(figsize=(5, 3))
    for label, curve in curves.items():
        ax.plot(curve, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot)
    print(f"loss curves saved to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
