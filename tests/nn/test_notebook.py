"""examples/notebooks/gradients.ipynb runs in a Jupyter kernel of this environment, and its
outputs carry the rich MIME types: the model and the gradients as HTML / LaTeX, the plot as PNG."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "notebooks" / "gradients.ipynb"
KERNEL = "symgrad-tests"


@pytest.fixture
def kernel_of_this_venv(tmp_path, monkeypatch):
    """A kernelspec that starts ipykernel with this interpreter, found before any other."""
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "symgrad tests", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return KERNEL


def outputs_of(cell) -> dict[str, object]:
    """MIME type -> data, over every rich output of a code cell."""
    found: dict[str, object] = {}
    for out in cell.get("outputs", []):
        found.update(out.get("data", {}))
    return found


class Texts(HTMLParser):
    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.cells: list[str] = []
        self.feed(text)

    def handle_data(self, data):
        self.cells.append(data)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter_client / zmq internals
def test_the_notebook_runs_and_shows_rich_outputs(kernel_of_this_venv, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel_of_this_venv,
        timeout=600,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    by_source = {c.source.splitlines()[-1]: outputs_of(c) for c in code}

    model = by_source["model"]
    assert {"text/html", "text/plain"} <= set(model)
    assert "Layer (type)" in Texts(model["text/html"]).cells
    assert r"$Z_{1} = \mathrm{dense/bias} + X \mathrm{dense/kernel}$" in model["text/html"]

    gradients = by_source["model.gradient_formulas()"]
    assert {"text/html", "text/latex", "text/plain"} <= set(gradients)
    assert gradients["text/latex"].startswith(r"$$\begin{aligned} \frac{\partial L}")
    assert gradients["text/plain"].startswith("{'dense/kernel': 1/n*X.T*")

    explained = by_source["model.explain()"]
    assert {"text/html", "text/latex"} <= set(explained)
    assert "Reverse sweep" in Texts(explained["text/html"]).cells

    printed = "".join(o.get("text", "") for c in code for o in c.outputs)
    accuracy = float(printed.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.9

    plot = by_source["history.plot();"]
    assert "image/png" in plot and len(plot["image/png"]) > 1000
