"""The emitted Python module: runs without symgrad, agrees with the model, reads like source."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import expr as E
from symgrad.layers import Dense
from symgrad.models import Sequential
from symgrad.optimizers import RMSprop
from tests.emit.helpers import ROOT, build, data, run_isolated

RTOL = 1e-6

MODULE_SCRIPT = """
x, y = d["x"], d["y"]
params, opt_state = m.load_weights()
out["forward"] = m.forward(params, x)
loss, gradients = m.loss_and_gradients(params, x, y)
out["loss"] = loss
out.update({"d/" + k: g for k, g in gradients.items()})
out["steps"] = [m.train_step(params, opt_state, x[8 * k : 8 * k + 8], y[8 * k : 8 * k + 8]) for k in range(3)]
out["fit"] = m.fit(params, opt_state, x, y, epochs=2, batch_size=16)
out.update({"w/" + k: v for k, v in params.items()})
out.update({"s/" + k: v for k, v in opt_state.items()})
"""


def loss_of(result) -> float:
    """The loss from train_on_batch / test_on_batch (a list when metrics were compiled)."""
    return result[0] if isinstance(result, list) else result


@pytest.mark.parametrize(
    ("kind", "backend", "metrics"),
    [("adam", "numpy", None), ("sgd", "numpy", None), ("adam", "llvm", ["accuracy"])],
)
def test_module_runs_without_symgrad_and_matches_the_model(kind, backend, metrics, tmp_path):
    model = build(kind, backend=backend, metrics=metrics)
    x, y = data(kind)
    written = symgrad.emit(model, tmp_path / "mlp.py", weights=True)
    assert written == [tmp_path / "mlp.py", tmp_path / "mlp.npz"]
    out = run_isolated(tmp_path / "mlp.py", MODULE_SCRIPT, {"x": x, "y": y}, tmp_path)

    np.testing.assert_allclose(out["forward"], model.predict(x), rtol=RTOL)
    np.testing.assert_allclose(out["loss"], loss_of(model.test_on_batch(x, y)), rtol=RTOL)
    for w, g in zip(model.weights, model.compute_gradients(x, y)):
        # the module keeps a bias as one row (1, units), the matrix the kernels read
        np.testing.assert_allclose(out[f"d/{w.path}"], w.as_matrix(g), rtol=RTOL, atol=1e-12)
    steps = [
        loss_of(model.train_on_batch(x[8 * k : 8 * k + 8], y[8 * k : 8 * k + 8])) for k in range(3)
    ]
    np.testing.assert_allclose(out["steps"], steps, rtol=RTOL)
    history = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(out["fit"], history.history["loss"], rtol=RTOL)
    for w, value in zip(model.weights, model.get_weights()):
        np.testing.assert_allclose(out[f"w/{w.path}"], w.as_matrix(value), rtol=RTOL, atol=1e-12)
    for var in model.optimizer.variables:
        np.testing.assert_allclose(out[f"s/{var.path}"], var.value, rtol=RTOL, atol=1e-12)
    assert out["s/iterations"] == model.optimizer.iterations == 3 + 2 * 3


def test_module_with_a_shuffling_fit_and_saved_weights(tmp_path):
    model = build("adam")
    x, y = data("adam")
    symgrad.emit(model, tmp_path / "mlp.py", weights=True)
    script = """
params, opt_state = m.load_weights()
out["a"] = m.fit(params, opt_state, d["x"], d["y"], epochs=2, batch_size=7, seed=3)
m.save_weights("after.npz", params, opt_state)
again, state = m.load_weights("after.npz")
out["same"] = all((again[k] == params[k]).all() for k in params) and state["iterations"] == 12
fresh = m.init_opt_state(params)
out["fresh"] = fresh["iterations"] == 0 and not fresh["dense/kernel/momentum"].any()
try:
    m.fit(params, opt_state, d["x"], d["y"], learning_rate=-1e300, beta_3=1)
except TypeError as err:
    out["unknown"] = str(err)
try:
    m.forward(params, d["x"][:, :3])
except ValueError as err:
    out["shape"] = str(err)
try:
    m.train_step(params, opt_state, d["x"][:2], [0, 7])
except ValueError as err:
    out["labels"] = str(err)
"""
    out = run_isolated(tmp_path / "mlp.py", script, {"x": x, "y": y}, tmp_path)
    assert out["same"] and out["fresh"]
    assert "beta_3" in str(out["unknown"])
    assert "x must have shape (samples, 4)" in str(out["shape"])
    assert "integer class labels in [0, 3)" in str(out["labels"])
    # the saved file is model.save_weights's format: the model reads it back
    model.load_weights(tmp_path / "after.npz")
    assert model.optimizer.iterations == 12


def test_module_of_a_compiled_function(tmp_path):
    n = E.batch()
    X, Y, W = E.matrix("X", n, 3), E.labels("Y", n, 2), E.matrix("W", 3, 2)
    lr, a, b = sp.symbols("lr a b")
    P = E.name("P", E.softmax(E.matmul(X, W)))
    loss = E.scale(-1 / n, E.total(E.hadamard(Y, E.elementwise(sp.Lambda(a, sp.log(a)), P))))
    dW = symgrad.grad(loss, W)
    update = E.elementwise(sp.Lambda((a, b), a - lr * b), W, dW)
    fn = symgrad.compile(
        [X, Y, W], {"loss": loss, "dW": dW}, updates={W: update}, scalars=[lr], name="cce_step"
    )
    symgrad.emit(fn, tmp_path / "step.py")
    text = (tmp_path / "step.py").read_text()
    assert "def cce_step(X, Y, W, lr):" in text and "rowsum(Y) = 1" in text
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 3)), rng.standard_normal((3, 2))
    y = np.eye(2)[rng.integers(0, 2, 5)]
    script = """
w = d["w"].copy()
out["loss"], out["dW"] = m.cce_step(d["x"], d["y"], w, 0.5)
out["w"] = w
"""
    out = run_isolated(tmp_path / "step.py", script, {"x": x, "y": y, "w": w}, tmp_path)
    loss, dw = fn(x, y, w, 0.5)  # updates w in place
    np.testing.assert_allclose(out["loss"], loss, rtol=RTOL)
    np.testing.assert_allclose(out["dW"], dw, rtol=RTOL)
    np.testing.assert_allclose(out["w"], w, rtol=RTOL)


def test_the_module_documents_the_derivation(tmp_path):
    model = build("adam")
    symgrad.emit(model, tmp_path / "mlp.py")
    text = (tmp_path / "mlp.py").read_text()
    doc = text.split('"""')[1]
    for line in (
        'Training code for the symgrad model "sequential"',
        "dense (Dense)               (None, 6)",  # the summary
        "Targets y: integer class labels in [0, 3), shape (samples,)",
        "momentum <- momentum_old + (1 - beta_1)*(g - momentum_old)",
        "dense_1/kernel: 1/n*A1.T*(P - Y)",
        "Z1 = dense_bias + X*dense_kernel",
    ):
        assert line in doc, line
    # each gradient statement under its formula
    assert "    # d_dense_1_kernel = 1/n*A1.T*(exp(log_softmax(Z2)) - Y)\n    dot(A1.T," in text
    assert "def train_step(\n    params, opt_state, x, y, *, learning_rate=0.01," in text
    imports = {line.split()[1] for line in text.splitlines() if line.startswith(("import", "from"))}
    assert imports == {"math", "numbers", "os", "numpy"}


def test_same_model_same_bytes(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        model = build("adam")  # a fresh model each time: nothing cached between the two
        symgrad.emit(model, tmp_path / folder / "mlp.py")
        symgrad.emit(model, tmp_path / folder / "mlp.ll", target="llvm-ir")
    for name in ("mlp.py", "mlp.ll"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--config", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
    )


LINT_CASES = [  # hidden activation, output, loss, optimizer, dtype, metrics
    ("gelu", "softmax", "categorical_crossentropy", RMSprop(centered=True, momentum=0.5)),
    ("sigmoid", "sigmoid", "binary_crossentropy", "adagrad"),
    ("elu", None, "mae", "adamw"),
    (lambda v: v / (1 + abs(v)), "softplus", "mse", "sgd"),
    ("swish", "softmax", "sparse_categorical_crossentropy", "adam"),
]


def test_emitted_modules_are_ruff_clean(tmp_path):
    if (
        shutil.which("ruff") is None
        and subprocess.run(
            [sys.executable, "-m", "ruff", "--version"], capture_output=True
        ).returncode
    ):
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    paths = []
    for k, (hidden, output, loss, optimizer) in enumerate(LINT_CASES):
        model = Sequential([Dense(5, activation=hidden, input_dim=3), Dense(2, activation=output)])
        dtype = "float32" if k % 2 else "float64"
        model.compile(optimizer=optimizer, loss=loss, dtype=dtype, metrics=["mae"] if k else None)
        paths.append(tmp_path / f"model_{k}.py")
        symgrad.emit(model, paths[-1])
    paths.append(ROOT / "docs" / "digits_model_emitted.py")
    files = [str(p) for p in paths]
    checked = ruff("check", *files)
    assert checked.returncode == 0, checked.stdout
    formatted = ruff("format", "--check", "--diff", *files)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_docs_module_is_up_to_date(tmp_path):
    """docs/digits_model_emitted.py is what its documented command writes today."""
    sys.path.insert(0, str(ROOT / "examples" / "c_train"))
    try:
        from digits_model import build_model
    finally:
        sys.path.pop(0)
    symgrad.emit(build_model(), tmp_path / "digits_model_emitted.py")
    expected = (tmp_path / "digits_model_emitted.py").read_text()
    assert (ROOT / "docs" / "digits_model_emitted.py").read_text() == expected, (
        "docs/digits_model_emitted.py is stale; regenerate it with: python -m symgrad emit "
        "examples/c_train/digits_model.py --target python -o docs/digits_model_emitted.py"
    )


def test_numpy_function_is_numpy_source_without_its_header():
    from codegen.numpy import numpy_function, numpy_source

    program = build("sgd").compiled_step.program
    part, whole = numpy_function(program), numpy_source(program)
    assert whole.endswith(part.code) and part.name == "train_step"
    header = whole[: -len(part.code)]
    imported = header.split("from numpy import")[1].split("\n\n")[0]
    assert set(part.numpy_names) <= set(re.findall(r"\w+", imported))  # (it adds copyto)
    assert all(line in header for line in part.preamble[1:])  # aliases; DTYPE is quoted alike


def test_a_functional_model_is_emitted_like_a_sequential(tmp_path):
    from symgrad.layers import Add, Input
    from symgrad.models import Model

    x = Input(shape=(4,), name="features")
    h = Dense(4, activation="tanh", name="hidden")(x)
    model = Model(
        x, Dense(3, activation="softmax", name="out")(Add(name="skip")([x, h])), name="res"
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((32, 4)), np.eye(3)[rng.integers(0, 3, 32)]
    symgrad.emit(model, tmp_path / "res.py", weights=True)
    out = run_isolated(tmp_path / "res.py", MODULE_SCRIPT, {"x": xs, "y": ys}, tmp_path)
    np.testing.assert_allclose(out["forward"], model.predict(xs), rtol=RTOL)
    for w, g in zip(model.weights, model.compute_gradients(xs, ys)):
        np.testing.assert_allclose(out[f"d/{w.path}"], w.as_matrix(g), rtol=RTOL, atol=1e-12)
    a, b = Input(shape=(2,), name="a"), Input(shape=(2,), name="b")
    two = Model([a, b], Dense(1, name="d")(Add()([a, b])), name="two")
    two.compile(optimizer="sgd", loss="mse")
    symgrad.emit(two, tmp_path / "two.py")  # several inputs: tests/emit/test_multi_io.py
    assert 'INPUTS = {"a": 2, "b": 2}' in (tmp_path / "two.py").read_text()
