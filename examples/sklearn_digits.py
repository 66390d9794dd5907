"""Handwritten digits with scikit-learn: StandardScaler + SymgradClassifier in a Pipeline, tuned
by GridSearchCV.

Run:  python examples/sklearn_digits.py [--backend numpy|llvm] [--epochs 15]

A 3-fold grid search over the learning rate and the hidden units on the training split of
examples/digits.py, then the best pipeline (refitted on the whole training split) on the
test split.  Each network structure (here: each number of units) is compiled once; the
learning rate is a runtime value of the compiled step.  Exits with status 1 if the test
accuracy is below 95%.
"""

from __future__ import annotations

import argparse
import sys
import time

from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import symgrad.sklearn
from symgrad.compiler import BACKENDS
from symgrad.sklearn import SymgradClassifier

try:  # imported from the repository's root (the tests)
    from examples.digits import load
except ImportError:  # run as a script: examples/ is the first entry of sys.path
    from digits import load

TARGET = 0.95
GRID = {"net__learning_rate": [0.001, 0.01], "net__model__units": [16, 64]}


def search(backend: str, epochs: int) -> GridSearchCV:
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("net", SymgradClassifier(epochs=epochs, backend=backend, random_state=0)),
        ]
    )
    return GridSearchCV(pipeline, GRID, cv=3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=list(BACKENDS))
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load()
    grid = search(args.backend, args.epochs)
    compiled_before = symgrad.sklearn.compilations()
    start = time.perf_counter()
    grid.fit(x_train, y_train)
    seconds = time.perf_counter() - start
    fits = len(grid.cv_results_["params"]) * grid.n_splits_ + 1  # and the refit of the best
    compiled = symgrad.sklearn.compilations() - compiled_before
    print(f"best params {grid.best_params_}, cross-validated accuracy {grid.best_score_:.4f}")
    print(f"{fits} fits in {seconds:.1f} s, {compiled} models compiled (backend {args.backend})")
    accuracy = grid.score(x_test, y_test)
    print(f"test accuracy {accuracy:.4f}")
    if accuracy < TARGET:
        print(f"test accuracy {accuracy:.4f} is below {TARGET}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
