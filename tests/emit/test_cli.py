"""`python -m symgrad emit` and the `symgrad` console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from symgrad.__main__ import main
from tests.emit.helpers import ROOT

SCRIPT = """
from symgrad.layers import Dense
from symgrad.models import Sequential

model = Sequential([Dense(3, activation="tanh", input_dim=2), Dense(1)])
model.compile(optimizer="sgd", loss="mse", dtype="float64", seed=0)
other = Sequential([Dense(2, input_dim=2)])
uncompiled = Sequential([Dense(2, input_dim=2)])
not_a_model = 42


def build_model():
    return other


def broken():
    raise KeyError("no data")


if __name__ == "__main__":
    raise SystemExit("the script's main block must not run")
"""


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "my_model.py"
    path.write_text(SCRIPT)
    return path


def test_emit_from_a_model_variable(script, tmp_path, capsys):
    out = tmp_path / "out.py"
    assert main(["emit", str(script), "--target", "python", "-o", str(out), "--weights"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\nwrote {tmp_path / 'out.npz'}\n"
    assert "def train_step(" in out.read_text()


def test_name_picks_a_variable_or_a_builder(script, tmp_path, capsys):
    out = tmp_path / "out.ll"
    assert (
        main(["emit", str(script), "--target", "llvm-ir", "-o", str(out), "--name", "model"]) == 0
    )
    assert '@"out_train_step"' in out.read_text()
    # build_model is a function: called, and its (uncompiled) model is refused
    code = main(
        ["emit", str(script), "--target", "python", "-o", str(out), "--name", "build_model"]
    )
    assert code == 2
    assert "emit needs a compiled model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "missing"], "defines no 'missing'; choose the variable with --name"),
        (["--name", "uncompiled"], "emit needs a compiled model: call model.compile"),
        (["--name", "not_a_model"], "emit takes a compiled symgrad model"),
        (["--name", "broken"], "broken() raised KeyError: 'no data'"),
        (["-o", "/nonexistent/folder/x.py"], "the directory /nonexistent/folder does not exist"),
    ],
)
def test_errors_exit_with_status_2(script, tmp_path, capsys, args, message):
    argv = ["emit", str(script), "--target", "python", "-o", str(tmp_path / "x.py"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("symgrad emit: error: ") and message in err
    assert not (tmp_path / "x.py").exists()


def test_usage_errors_exit_with_status_2(script, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["emit", str(script), "--target", "js", "-o", str(tmp_path / "x")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'js'" in err
    assert all(target in err for target in ("python", "llvm-ir", "object", "shared", "wasm"))
    assert main(["emit", str(tmp_path / "none.py"), "--target", "python", "-o", "x.py"]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_python_dash_m_and_the_console_script(script, tmp_path):
    out = tmp_path / "m.py"
    command = [sys.executable, "-m", "symgrad", "emit", str(script), "--target", "python"]
    done = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out}\n"
    console = shutil.which("symgrad", path=str(Path(sys.executable).parent))
    if console is None:
        pytest.skip("the symgrad console script is not installed (pip install -e .)")
    done = subprocess.run(
        [console, "emit", str(script), "--target", "nope", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr
