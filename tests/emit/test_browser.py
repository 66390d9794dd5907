"""examples/browser in headless Chromium: the page trains the wasm model in a worker, as Python does."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from codegen.llvm.targets import WASM_LD, tool
from tests.emit.helpers import ROOT

sys.path.insert(0, str(ROOT / "examples" / "browser"))
import build as site_build  # noqa: E402
import headless  # noqa: E402

pytestmark = [
    pytest.mark.skipif(
        headless.find_chromium() is None,
        reason="Chromium not found ($CHROMIUM, chromium, chromium-browser, google-chrome); "
        "on Debian: apt-get install chromium",
    ),
    pytest.mark.skipif(tool(WASM_LD) is None, reason=WASM_LD.missing("link WebAssembly")),
]

EPOCHS = 4
FORMULAS = [  # the MathML's text: fraction parts, sub- and superscripts run together; weights
    # by their Keras paths, as a notebook shows them
    "\u2202L\u2202dense/kernel=1nXT(((P-Y)dense_1/kernelT)\u2218[A1>0])",
    "\u2202L\u2202dense/bias=1ncolsum(((P-Y)dense_1/kernelT)\u2218[A1>0])",
    "\u2202L\u2202dense_1/kernel=1nA1T(P-Y)",
    "\u2202L\u2202dense_1/bias=1ncolsum(P-Y)",
]


def test_the_page_trains_in_chromium_as_the_python_model(tmp_path):
    site = tmp_path / "site"
    assert site_build.main(["--out", str(site)]) == 0
    data = json.loads((site / "data.json").read_text())
    x = np.reshape(data["pixels"], (-1, 64)) / 16
    labels = np.array(data["labels"])
    train = len(labels) - data["testRows"]
    image = x[train]  # a test image
    state = headless.run(site, tmp_path / "page.png", image.tolist(), epochs=EPOCHS)

    model = site_build.build_model()
    history = model.fit(
        x[:train], labels[:train], epochs=EPOCHS, batch_size=32, shuffle=False, verbose=0
    )
    np.testing.assert_allclose(state["losses"], history.history["loss"], rtol=1e-12)
    right = np.argmax(model.predict(x[train:]), axis=1) == labels[train:]
    assert state["status"] == "done"
    assert state["accuracy"] == f"{100 * right.mean():.1f}%"  # what the page shows, as Python
    assert state["formulaWeights"] == [
        "dense/kernel",
        "dense/bias",
        "dense_1/kernel",
        "dense_1/bias",
    ]
    assert state["formulas"] == FORMULAS
    drawn = np.round(255 * image) / 255  # the pad holds 8-bit gray levels
    assert state["prediction"] == int(np.argmax(model.predict(drawn[None])))
    assert state["shown"] == str(state["prediction"])
    png = (tmp_path / "page.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
