"""The examples run, and the digits network reaches its accuracy in the default test run."""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import numpy as np
import pytest

from examples import custom_activation, digits, regression
from tests.nn.helpers import BACKEND

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_digits_reaches_95_percent(capsys):
    x_train, x_test, y_train, y_test = digits.load()
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64) and x_train.max() == 1.0
    model = digits.build(BACKEND)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test)
    with capsys.disabled():
        print(
            f"\n[digits] test accuracy {accuracy:.4f} after 15 epochs, {seconds / 15 * 1e3:.1f} ms/epoch ({BACKEND})"
        )
    assert accuracy >= 0.95
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    assert np.mean(np.argmax(model.predict(x_test), axis=1) == y_test) == accuracy


def test_digits_example_main_reaches_97_percent(capsys):
    assert digits.main(["--backend", BACKEND, "--verbose", "0", "--plot", ""]) == 0
    out = capsys.readouterr().out
    assert "dense_1/kernel   1/n*A1.T*(P - Y)" in out
    assert "test accuracy 0.97" in out or "test accuracy 0.98" in out or "test accuracy 0.99" in out


def test_seeds_sequential_runs_as_written(capsys):
    runpy.run_path(str(EXAMPLES / "seeds_sequential.py"), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    first, last = (float(v) for v in out[0].removeprefix("loss: ").split(" -> "))
    assert last < first
    source = (EXAMPLES / "seeds_sequential.py").read_text()
    for line in (
        "model = Sequential()",
        "model.add(Dense(units=4, input_dim=3))",
        'model.add(Activation("sigmoid"))',
        "model.add(Dense(units=1))",
        'model.compile(loss="binary_crossentropy", optimizer=SGD(learning_rate=0.1, momentum=0.9))',
        "history = model.fit(X, y, epochs=1000, batch_size=1, verbose=0)",
    ):
        assert line in source


def test_regression_and_custom_activation_examples(capsys):
    assert regression.main(["--backend", BACKEND, "--epochs", "60", "--plot", ""]) == 0
    assert custom_activation.main(["--backend", BACKEND]) == 0
    out = capsys.readouterr().out
    assert "derivative: mish'(x) = " in out and "linear   mse: test MSE" in out


def test_functional_residual_example_reaches_97_percent(capsys):
    from examples import functional_residual

    assert functional_residual.main(["--backend", BACKEND, "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert (
        " skip (Add)                    (None, 64)            0   hidden_1[0][0], hidden_2[0][0]"
        in out
    )
    # the skip connection is the first term of hidden_1's cotangent
    assert "dL/dhidden_1/kernel  = 1/n*X.T*(((P - Y)*classes_kernel.T + " in out
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.97


@pytest.mark.slow
def test_digits_cnn_example_reaches_98_percent(capsys):
    from examples import digits_cnn

    assert digits_cnn.main(["--backend", "llvm", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert " conv2d (Conv2D)                (None, 8, 8, 32)         320   Z1 = reshape(" in out
    assert (
        "dL/dconv2d_kernel[u, v, c, f] = sum over k, i, j of dZ1[k, i, j, f] * "
        "X[k, i + u - 1, j + v - 1, c]" in out
    )
    assert "(the cotangent goes to the argmax)" in out


def test_custom_training_loop_example(capsys):
    from examples import custom_training_loop

    assert custom_training_loop.main(["--backend", BACKEND]) == 0  # >= 95% test accuracy
    out = capsys.readouterr().out
    worst = float(out.split("max |difference| ")[1].split()[0])
    assert worst < 1e-5  # float32: the tape's gradient is compute_gradients'
    assert "d(sum of losses)/ddense_1_bias = colsum(P - Y)" in out
    source = (EXAMPLES / "custom_training_loop.py").read_text()
    for line in (  # Keras's code, only the imports changed
        "import symgrad as tf",
        "import symgrad as keras",
        "with tf.GradientTape() as tape:",
        "logits = model(x_test)",
        "loss_value = keras.losses.categorical_crossentropy(y_test, logits)",
        "grads = tape.gradient(loss_value, model.trainable_weights)",
        "optimizer.apply_gradients(zip(grads, model.trainable_weights))",
    ):
        assert line in source


def test_sklearn_digits_grid_search_compiles_each_structure_once(capsys):
    from examples import sklearn_digits

    assert sklearn_digits.main(["--backend", BACKEND, "--epochs", "8"]) == 0  # >= 95% test accuracy
    out = capsys.readouterr().out
    assert "'net__model__units': 64}" in out and "'net__learning_rate': 0.01" in out
    assert "13 fits in " in out and ", 2 models compiled" in out  # 2 unit counts, 4 candidates
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.96
