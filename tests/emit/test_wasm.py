"""target="wasm": the emitted .wasm + .js train the digits MLP under Node as the Python model does."""

from __future__ import annotations

import json
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
        "set_weights_short": 'RangeError: weights["dense/bias"] must hold 32 values (shape '
        "1,32); Received: length=1",
    }
    assert result["calls"] == 0  # no export of the wasm module was called
    assert result["unchanged"]  # weights and step counter as they were
