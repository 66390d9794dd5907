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


def build_model_float32(seed: int = 0) -> Sequential:
    """The same model in float32, for microcontrollers whose FPU is single precision:

    python -m symgrad emit examples/c_train/digits_model.py --name build_model_float32 \\
        --target object --triple thumbv7em-none-eabihf --max-batch 32 -o digits.o --size
    """
    model = build_model(seed)
    model.compile(optimizer=model.optimizer, loss=model.loss, dtype="float32", seed=seed)
    return model
