"""target="wasm": the emitted .wasm + .js train the digits MLP under Node as the Python model does."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symgrad
from codegen.llvm.targets import WASM_LD, tool
from tests.emit.helpers import ROOT

NODE = shutil.which("node")
DRIVER = Path(__file__).with_name("wasm_driver.mjs")
pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node (Node.js) is not on the PATH"),
    pytest.mark.skipif(tool(WASM_LD) is None, reason=WASM_LD.missing("link WebAssembly")),
]
sys.path.insert(0, str(ROOT / "examples" / "c_train"))
from digits_model import build_model  # noqa: E402


def digits(rows: int | None = None):
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data[:rows] / 16.0, d.target[:rows]


def emitted(tmp_path: Path, dtype: str):
    model = build_model()
    if dtype != "float64":
        model.compile(optimizer=model.optimizer, loss=model.loss, dtype=dtype, seed=0)
    written = symgrad.emit(model, tmp_path / "digits.wasm", target="wasm")
    assert written == [tmp_path / "digits.wasm", tmp_path / "digits.js"]
    return model


def run_node(tmp_path: Path, request: dict) -> dict:
    (tmp_path / "request.json").write_text(json.dumps(request))
    done = subprocess.run(
        [
            NODE,
            str(DRIVER),
            str(tmp_path / "digits.js"),
            str(tmp_path / "request.json"),
            str(tmp_path / "result.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "result.json").read_text())


def initial_weights(model) -> dict:
    return {w.path: v.ravel().tolist() for w, v in zip(model.weights, model.get_weights())}


@pytest.mark.parametrize(("dtype", "tolerance"), [("float64", 1e-12), ("float32", 1e-5)])
def test_node_trains_as_the_python_model(tmp_path, dtype, tolerance):
    model = emitted(tmp_path, dtype)
    x, y = digits()
    request = {
        "x": x.ravel().tolist(),
        "y": y.tolist(),
        "weights": initial_weights(model),
        "epochs": 3,
        "batchSize": 32,
    }
    result = run_node(tmp_path, request)
    history = model.fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0)
    np.testing.assert_allclose(result["losses"], history.history["loss"], rtol=tolerance)
    for w, expected in zip(model.weights, model.get_weights()):
        got = np.array(result["weights"][w.path])
        np.testing.assert_allclose(got, expected.ravel(), rtol=0, atol=tolerance, err_msg=w.path)
    np.testing.assert_allclose(
        np.reshape(result["forward"], (5, 10)), model.predict(x[:5]), rtol=0, atol=tolerance
    )


def test_node_refuses_wrong_lengths_before_any_wasm_call(tmp_path):
    model = emitted(tmp_path, "float64")
    x, y = digits(4)
    result = run_node(
        tmp_path,
        {
            "refusals": True,
            "x": x.ravel().tolist(),
            "y": y.tolist(),
            "weights": initial_weights(model),
        },
    )
    errors = dict(result["errors"])
    assert errors == {
        "forward_short_x": "RangeError: x must hold whole rows of 64 values (length a positive "
        "multiple of 64); Received: x.length=63",
        "forward_not_numbers": "TypeError: x must be a Float64Array, Float32Array or array of "
        "numbers; Received: string",
        "train_step_short_y": "RangeError: y must hold one class label per row: 4 values for 4 "
        "rows; Received: y.length=3",
        "train_step_bad_label": "RangeError: y must hold integer class labels in [0, 10); "
        "Received: y[2]=10",
        "fit_long_y": "RangeError: y must hold one class label per row: 4 values for 4 rows; "
        "Received: y.length=5",
        "fit_bad_batch_size": "RangeError: batchSize must be an integer >= 1; Received: "
        "batchSize=0",
        "fit_shuffle_not_boolean": "TypeError: shuffle must be true or false; Received: shuffle=1",
        "fit_order_short": "RangeError: order must hold one row index per row: 4 values; "
        "Received: order.length=3",
        "train_epoch_order_outside": "RangeError: order must hold row indices in [0, 4); "
        "Received: order[2]=4",
        "train_epoch_order_fraction": "RangeError: order must hold row indices in [0, 4); "
        "Received: order[2]=2.5",
        "set_weights_short": 'RangeError: weights["dense/bias"] must hold 32 values (shape '
        "1,32); Received: length=1",
    }
    assert result["calls"] == 0  # no export of the wasm module was called
    assert result["unchanged"]  # weights and step counter as they were
    assert result["badOrder"] == (
        "digits_train_epoch failed (status -5): an entry of the order is not a row; "
        "nothing was updated"
    )
    assert result["stillUnchanged"]


def test_epoch_call_trains_as_the_model_on_the_same_order(tmp_path):
    """One wasm call per epoch, rows gathered in wasm by a shuffled order: the losses and
    weights of the Python model trained batch by batch on the same rows, and of trainStep
    called per batch from JavaScript."""
    model = emitted(tmp_path, "float64")
    x, y = digits(300)
    rng = np.random.default_rng(7)
    orders = [rng.permutation(len(x)) for _ in range(2)]
    request = {"x": x.ravel().tolist(), "y": y.tolist(), "weights": initial_weights(model)}
    result = run_node(
        tmp_path, {**request, "orders": [o.tolist() for o in orders], "batchSize": 32}
    )
    expected = []
    for order in orders:
        total = 0.0
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            total += float(model.train_on_batch(x[rows], y[rows])) * len(rows)
        expected.append(total / len(order))
    steps = 2 * -(-len(x) // 32)
    for run in ("epoch", "loop"):
        assert result[run]["iterations"] == steps
        np.testing.assert_allclose(result[run]["losses"], expected, rtol=1e-9, err_msg=run)
        for w, value in zip(model.weights, model.get_weights()):
            got = np.array(result[run]["weights"][w.path])
            np.testing.assert_allclose(got, value.ravel(), rtol=0, atol=1e-9, err_msg=w.path)
    assert result["epoch"]["losses"][1] < result["epoch"]["losses"][0]


def test_fit_shuffles_by_its_seed_and_reduces_the_loss(tmp_path):
    model = emitted(tmp_path, "float32")
    x, y = digits(400)
    request = {"x": x.ravel().tolist(), "y": y.tolist(), "weights": initial_weights(model)}
    result = run_node(tmp_path, {**request, "shuffle": [1, 1, 2], "epochs": 4, "batchSize": 16})
    first, again, other = result["runs"]
    assert first == again  # the same seed, the same orders: the same losses bit for bit
    assert first != other
    assert first[-1] < 0.5 * first[0] and other[-1] < 0.5 * other[0]
    ordered = model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert first[0] != pytest.approx(ordered.history["loss"][0], rel=1e-6)  # shuffled indeed


def test_a_failed_step_keeps_the_steps_before_it_and_counts_them(tmp_path):
    model = emitted(tmp_path, "float64")
    x, y = digits(6)
    result = run_node(
        tmp_path,
        {
            "failure": True,
            "x": x.ravel().tolist(),
            "y": y.tolist(),
            "weights": initial_weights(model),
        },
    )
    assert result["message"] == (
        "digits_train_epoch failed at step 2 of the epoch (status 1): loss is nan or inf; "
        "the 1 step before it stays applied (iterations=1), that step changed nothing"
    )
    assert result["iterations"] == 1
    # a step whose new weights are inf names the guard of its status (as the C header lists)
    named = re.fullmatch(
        r"digits_train_step failed \(status (\d+)\): (new_\w+) is nan or inf; nothing was updated",
        result["stepMessage"],
    )
    assert named is not None, result["stepMessage"]
    assert int(named[1]) >= 3 and named[2] in {f"new_{w.symbol.name}" for w in model.weights}
    model.train_on_batch(x[:2], y[:2])  # the first batch's step, and nothing after it
    for w, value in zip(model.weights, model.get_weights()):
        got = np.array(result["weights"][w.path])
        np.testing.assert_allclose(got, value.ravel(), rtol=0, atol=1e-12, err_msg=w.path)
