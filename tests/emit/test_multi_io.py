"""Models with several inputs and outputs, emitted: the Python module takes lists or dicts of
arrays (packed side by side for its kernels) and returns one array per output; the C functions
take one pointer per input, per output's targets and per output. Both against the model."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import symgrad
from tests.emit.helpers import run_isolated
from tests.nn.test_functional import compile_two, multi_data, two_in_two_out

RTOL = 1e-9

SCRIPT = """
x = {"a": d["x_a"], "b": d["x_b"]}
y = [d["y_cls"], d["y_reg"]]
params, opt_state = m.load_weights()
p_cls, p_reg = m.forward(params, x)
out["p_cls"], out["p_reg"] = p_cls, p_reg
out["forward_list"] = m.numpy.hstack(m.forward(params, [d["x_a"], d["x_b"]]))
loss, gradients = m.loss_and_gradients(params, x, {"reg": d["y_reg"], "cls": d["y_cls"]})
out["loss"] = loss
out.update({"d/" + k: g for k, g in gradients.items()})
out["fit"] = m.fit(params, opt_state, x, y, epochs=2, batch_size=4)
out.update({"w/" + k: v for k, v in params.items()})
try:
    m.forward(params, [d["x_a"]])
except ValueError as err:
    out["error"] = m.numpy.array(str(err))
"""


@pytest.fixture
def trained(rng):
    model = compile_two(two_in_two_out(), "numpy", optimizer="adam")
    x, y = multi_data(rng)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    return model, x, y


def test_the_python_module_takes_lists_and_dicts_and_returns_each_output(trained, tmp_path):
    model, x, y = trained
    symgrad.emit(model, tmp_path / "two.py", weights=True)
    arrays = {"x_a": x["a"], "x_b": x["b"], "y_cls": y["cls"], "y_reg": y["reg"]}
    out = run_isolated(tmp_path / "two.py", SCRIPT, arrays, tmp_path)
    p_cls, p_reg = model.predict(x)
    np.testing.assert_allclose(out["p_cls"], p_cls, rtol=RTOL)
    np.testing.assert_allclose(out["p_reg"], p_reg, rtol=RTOL)
    np.testing.assert_allclose(out["forward_list"], np.hstack([p_cls, p_reg]), rtol=RTOL)
    np.testing.assert_allclose(out["loss"], model.evaluate(x, y)[0], rtol=RTOL)
    for w, g in zip(model.weights, model.compute_gradients(x, y)):
        np.testing.assert_allclose(out[f"d/{w.path}"], w.as_matrix(g), rtol=RTOL, atol=1e-12)
    history = model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    np.testing.assert_allclose(out["fit"], history.history["loss"], rtol=RTOL)
    for w, value in zip(model.weights, model.get_weights()):
        np.testing.assert_allclose(out[f"w/{w.path}"], w.as_matrix(value), rtol=RTOL, atol=1e-12)
    assert "x must be a list of 2 arrays ['a', 'b'] or a dict" in str(out["error"])


def pointer(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def test_the_c_functions_take_one_pointer_per_input_and_output(trained, tmp_path):
    model, x, y = trained
    symgrad.emit(model, tmp_path / "libtwo.so", target="shared")
    header = (tmp_path / "two.h").read_text()
    for name in ("X_a", "X_b", "Y_cls", "Y_reg", "P_cls", "P_reg"):
        assert f"*{name}," in header, name
    assert "#define TWO_INPUT_A_DIM 3" in header and "#define TWO_OUTPUT_REG_DIM 1" in header
    lib = ctypes.CDLL(str(tmp_path / "libtwo.so"))
    n = 12
    weights = [np.ascontiguousarray(w.value) for w in model.weights]
    xa, xb = (np.ascontiguousarray(x[k], dtype=np.float64) for k in ("a", "b"))
    p_cls, p_reg = np.zeros((n, 3)), np.zeros((n, 1))
    status = lib.two_forward(
        ctypes.c_int64(n), pointer(xa), pointer(xb), *map(pointer, weights),
        pointer(p_cls), pointer(p_reg), None,
    )  # fmt: skip
    assert status == 0
    want_cls, want_reg = model.predict(x)
    np.testing.assert_allclose(p_cls, want_cls, rtol=RTOL)
    np.testing.assert_allclose(p_reg, want_reg, rtol=RTOL)
    y_cls = np.eye(3)[y["cls"]]
    y_reg = np.ascontiguousarray(y["reg"].reshape(-1, 1))
    loss = np.zeros((1, 1))
    gradients = [np.zeros_like(w) for w in weights]
    status = lib.two_loss_and_gradients(
        ctypes.c_int64(n), pointer(xa), pointer(xb), pointer(y_cls), pointer(y_reg),
        *map(pointer, weights), pointer(loss), *map(pointer, gradients), None,
    )  # fmt: skip
    assert status == 0
    assert loss[0, 0] == pytest.approx(model.evaluate(x, y)[0], rel=RTOL)
    for w, got, want in zip(model.weights, gradients, model.compute_gradients(x, y)):
        np.testing.assert_allclose(got, w.as_matrix(want), rtol=RTOL, atol=1e-12)


FORWARD_JS = """
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [modulePath, requestPath, resultPath] = process.argv.slice(2);
const { load } = await import(pathToFileURL(modulePath));
const request = JSON.parse(readFileSync(requestPath, "utf8"));
const model = await load();
model.setWeights(request.weights);
writeFileSync(resultPath, JSON.stringify(Array.from(model.forward(Float64Array.from(request.x)))));
"""


def test_the_es_module_takes_and_returns_the_packed_rows(trained, tmp_path):
    import json
    import shutil
    import subprocess

    from codegen.llvm.targets import WASM_LD, tool

    node = shutil.which("node")
    if node is None or tool(WASM_LD) is None:
        pytest.skip("node and wasm-ld are needed to run the ES module")
    model, x, _ = trained
    symgrad.emit(model, tmp_path / "two.wasm", target="wasm")
    weights = {w.path: v.ravel().tolist() for w, v in zip(model.weights, model.get_weights())}
    packed = np.hstack([x["a"], x["b"]])
    (tmp_path / "request.json").write_text(
        json.dumps({"x": packed.ravel().tolist(), "weights": weights})
    )
    (tmp_path / "forward.mjs").write_text(FORWARD_JS)
    done = subprocess.run(
        [node, "forward.mjs", "two.js", "request.json", "result.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = np.array(json.loads((tmp_path / "result.json").read_text())).reshape(12, 4)
    np.testing.assert_allclose(got, np.hstack(model.predict(x)), rtol=RTOL)
