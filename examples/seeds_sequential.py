"""The classic Keras XOR snippet, unchanged except for the three imports.

Run:  python examples/seeds_sequential.py
"""

import numpy as np

from symgrad.layers import Activation, Dense
from symgrad.models import Sequential
from symgrad.optimizers import SGD

# XOR of the first two inputs; the third is a constant 1 (a bias input)
X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
y = np.array([[0], [1], [1], [0]])

model = Sequential()
model.add(Dense(units=4, input_dim=3))
model.add(Activation("sigmoid"))
model.add(Dense(units=1))
model.add(Activation("sigmoid"))

model.compile(loss="binary_crossentropy", optimizer=SGD(learning_rate=0.1, momentum=0.9))
history = model.fit(X, y, epochs=1000, batch_size=1, verbose=0)

print(f"loss: {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}")
print("predictions:", model.predict(X).ravel().round(3))
print("rounded:    ", model.predict(X).round().astype(int).ravel(), "expected:", y.ravel())
