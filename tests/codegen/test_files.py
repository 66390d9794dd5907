"""codegen.files: one atomic writer for cache entries, saved weights and emitted files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from codegen.files import write_all_atomic, write_atomic


def _text(text):
    return lambda tmp: Path(tmp).write_text(text)


def test_a_failing_file_leaves_every_destination_as_it_was(tmp_path):
    lib, header = tmp_path / "libm.so", tmp_path / "m.h"
    lib.write_text("old library")

    def broken(tmp):
        Path(tmp).write_text("half a hea")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_all_atomic([(lib, _text("new library"), 0o777), (header, broken, 0o666)])
    assert lib.read_text() == "old library"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["libm.so"]  # no temporary left


def test_all_files_are_replaced_with_their_modes_less_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_all_atomic(
            [(tmp_path / "a.so", _text("a"), 0o777), (tmp_path / "a.h", _text("h"), 0o666)],
            fsync=True,
        )
        write_atomic(tmp_path / "w.npz", b"weights", fsync=True)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"a.so": 0o750, "a.h": 0o640, "w.npz": 0o640}
    assert (tmp_path / "w.npz").read_bytes() == b"weights"
    assert (tmp_path / "a.so").read_text() == "a"


def test_a_missing_directory_names_the_destination(tmp_path):
    target = tmp_path / "missing" / "entry.bin"
    with pytest.raises(FileNotFoundError, match=f"cannot write {target}"):
        write_atomic(target, b"x")
