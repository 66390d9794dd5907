"""The model of the C training example: a 64-32-10 MLP for sklearn's 8x8 digits.

`symgrad emit` finds it by the function name:

    python -m symgrad emit examples/c_train/digits_model.py --target python -o docs/digits_model_emitted.py
"""

from __future__ import annotations

from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.optimizers import Adam


def build_model(seed: int = 0) -> Sequential:
    """Dense 64 -> 32 relu -> 10 softmax, Adam, sparse categorical cross-entropy, float64."""
    model = Sequential(
        [
            Dense(32, activation="relu", input_dim=64),
            Dense(10, activation="softmax"),
        ],
        name="digits",
    )
    model.compile(
        optimizer=Adam(learning_rate=0.003),
        loss="sparse_categorical_crossentropy",
        dtype="float64",
        seed=seed,
    )
    return model
