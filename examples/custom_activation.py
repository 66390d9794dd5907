"""A custom activation written as a SymPy expression: symgrad derives its derivative.

Run:  python examples/custom_activation.py [--backend numpy|llvm]

Mish, x * tanh(softplus(x)), is not built in.  Writing it as a formula is
enough: ``sympy.diff`` supplies the derivative, the simplifier folds it into the
backward pass, and the generated step evaluates both.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import sympy as sp
from sklearn.datasets import make_moons

from symgrad.compiler import BACKENDS
from symgrad.core.scalar import softplus
from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.optimizers import Adam


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=list(BACKENDS))
    args = parser.parse_args(argv)

    x = sp.Symbol("x")
    mish = x * sp.tanh(softplus(x))
    print("activation: mish(x) =", mish)
    print("derivative: mish'(x) =", sp.diff(mish, x))

    data, labels = make_moons(n_samples=600, noise=0.15, random_state=0)
    x_train, y_train, x_test, y_test = data[:480], labels[:480], data[480:], labels[480:]

    model = Sequential([Dense(16, activation=mish, input_dim=2), Dense(1, activation="sigmoid")])
    model.compile(
        optimizer=Adam(learning_rate=0.01),
        loss="binary_crossentropy",
        metrics=["accuracy"],
        backend=args.backend,
        seed=0,
    )
    print("\ndL/d(dense/kernel) =", model.gradient_formulas()["dense/kernel"])
    model.fit(x_train, y_train, epochs=100, batch_size=32, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"\ntwo moons: test loss {loss:.4f}, test accuracy {accuracy:.4f}")

    # the same with a plain Python function of a SymPy symbol
    model = Sequential(
        [
            Dense(16, activation=lambda v: v / (1 + abs(v)), input_dim=2),
            Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=Adam(learning_rate=0.01),
        loss="binary_crossentropy",
        metrics=["accuracy"],
        backend=args.backend,
        seed=0,
    )
    model.fit(x_train, y_train, epochs=100, batch_size=32, verbose=0)
    _, softsign_accuracy = model.evaluate(x_test, y_test)
    print(f"softsign x/(1+|x|): test accuracy {softsign_accuracy:.4f}")
    return 0 if min(accuracy, softsign_accuracy) >= 0.95 else 1


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
