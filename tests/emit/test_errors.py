"""Bad input to emit fails clearly, and a failure midway leaves no half-written file."""

from __future__ import annotations

import os

import numpy as np
import pytest

import codegen.llvm.emit
import symgrad
from symgrad.emission import writer as emitter
from symgrad.layers import Dense
from symgrad.models import Sequential
from tests.emit.helpers import build


@pytest.fixture(scope="module")
def model():
    return build("sgd")


def test_unknown_target_lists_the_known_ones(model, tmp_path):
    with pytest.raises(ValueError, match="Unknown emit target: 'js'") as err:
        symgrad.emit(model, tmp_path / "m.js", target="js")
    for target in ("'python'", "'llvm-ir'", "'object'", "'shared'", "'wasm'"):
        assert target in str(err.value)
    with pytest.raises(ValueError, match="cpu must be one of"):
        symgrad.emit(model, tmp_path / "m.o", target="object", cpu="pentium")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_paths(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="the directory .*missing does not exist"):
        symgrad.emit(model, tmp_path / "missing" / "m.py")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="file.txt is not a directory"):
        symgrad.emit(model, tmp_path / "file.txt" / "m.py")
    (tmp_path / "folder.py").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        symgrad.emit(model, tmp_path / "folder.py")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="cannot write .*locked/m.py"):
            symgrad.emit(model, locked / "m.py")


def test_models_that_cannot_be_emitted(tmp_path):
    plain = Sequential([Dense(2, input_dim=3)])
    with pytest.raises(RuntimeError, match=r"emit needs a compiled model: call model.compile"):
        symgrad.emit(plain, tmp_path / "m.py")
    unbuilt = Sequential([Dense(2)])
    unbuilt.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="emit needs a built model"):
        symgrad.emit(unbuilt, tmp_path / "m.py")
    scheduled = build("sgd")
    scheduled.optimizer.learning_rate = lambda step: 0.1 / (1 + step)
    with pytest.raises(ValueError, match="a learning rate given as a Python function"):
        symgrad.emit(scheduled, tmp_path / "m.py")
    with pytest.raises(TypeError, match="Received: str 'model.keras'"):
        symgrad.emit("model.keras", tmp_path / "m.py")
    with pytest.raises(ValueError, match="weights=True writes an .npz for the Python target"):
        symgrad.emit(build("sgd"), tmp_path / "m.ll", target="llvm-ir", weights=True)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_midway_leaves_old_files_and_no_temporaries(model, tmp_path, monkeypatch):
    target = tmp_path / "m.py"
    target.write_text("old module\n")

    def broken_savez(file, **arrays):  # the module text is ready; the weights fail half-way
        file.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(emitter.np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space left"):
        symgrad.emit(model, target, weights=True)
    assert target.read_text() == "old module\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]


def test_a_failing_linker_leaves_neither_library_nor_header(tmp_path, monkeypatch):
    def broken_link(obj, path, *, soname=None, arch=None):
        with open(path, "wb") as f:
            f.write(obj[:100])  # a truncated library in the temporary file
        raise RuntimeError("linking failed: ld: out of memory")

    monkeypatch.setattr(codegen.llvm.emit, "link_shared", broken_link)
    with pytest.raises(RuntimeError, match="linking failed"):
        symgrad.emit(build("sgd"), tmp_path / "libm.so", target="shared")
    assert list(tmp_path.iterdir()) == []


def test_writes_are_atomic_renames(tmp_path, monkeypatch):
    renames = []
    real = os.replace

    def spy(src, dst):  # os.replace everywhere: keep the calls that write into tmp_path
        if os.path.dirname(dst) == str(tmp_path):
            renames.append((os.path.dirname(src), os.path.basename(src), dst))
        real(src, dst)

    monkeypatch.setattr(emitter.os, "replace", spy)
    symgrad.emit(build("adam"), tmp_path / "m.py", weights=True)
    assert [dst for _, _, dst in renames] == [tmp_path / "m.py", tmp_path / "m.npz"]
    assert all(folder == str(tmp_path) and name.startswith(".m.") for folder, name, _ in renames)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.py").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600
    with np.load(tmp_path / "m.npz") as f:
        assert "optimizer/dense/kernel/momentum" in f.files and int(f["optimizer/iterations"]) == 0
