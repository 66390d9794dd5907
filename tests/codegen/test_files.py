"""codegen.files: one atomic writer for cache entries, saved weights and emitted files;
the orphans of writers that were killed are swept up."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from codegen import files
from codegen.files import write_all_atomic, write_atomic
from symgrad import Dense, Sequential

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0


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


@pytest.fixture(autouse=True)
def fresh_sweeps(monkeypatch):
    monkeypatch.setattr(files, "_last_sweep", {})  # every test's first write sweeps


def killed_during_save(folder: Path) -> Path:
    """Run save_weights in a child that is SIGKILLed after writing its temporary file."""
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from symgrad import Dense, Sequential
        m = Sequential([Dense(3, input_dim=2)])
        m.build(input_dim=2)
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies before the rename
        m.save_weights({str(folder / "w.npz")!r})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    (orphan,) = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert not (folder / "w.npz").exists()
    return orphan


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def saved_model(folder: Path) -> Sequential:
    m = Sequential([Dense(3, input_dim=2)])
    m.build(input_dim=2)
    m.save_weights(folder / "w.npz")
    return m


def test_an_old_orphan_of_a_killed_writer_is_removed_by_the_next_save(tmp_path):
    orphan = killed_during_save(tmp_path)
    assert orphan.stat().st_size > 0 and orphan.name.startswith(".w.npz.")
    age(orphan, HOUR)
    m = saved_model(tmp_path)
    assert not orphan.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]
    with np.load(tmp_path / "w.npz") as f:
        np.testing.assert_array_equal(f["dense/kernel"], m.get_weights()[0])


def test_a_young_orphan_is_kept(tmp_path):
    orphan = killed_during_save(tmp_path)
    age(orphan, files.STALE_SECONDS - 60)  # maybe a slow disk: not yet
    saved_model(tmp_path)
    assert orphan.exists()


def test_an_old_file_of_a_live_writer_is_kept(tmp_path):
    """A writer still running (here: a sleeping child, and this process) keeps its file."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = [
            tmp_path / f".w.npz.{child.pid}-abcd1234.tmp",
            tmp_path / f".w.npz.{os.getpid()}-abcd1234.tmp",
        ]
        for p in live:
            p.write_bytes(b"being written")
            age(p, HOUR)
        assert files.remove_stale(tmp_path) == []
        assert all(p.exists() for p in live)
    finally:
        child.kill()
        child.wait()
    assert files.remove_stale(tmp_path) == [live[0].name]  # its writer is gone now


def test_only_our_temporary_files_are_swept(tmp_path):
    dead = dead_pid()
    others = [
        tmp_path / ".tmp-notes.txt",  # not mkstemp's 8 random characters
        tmp_path / "w.npz.abcd1234.tmp",  # not hidden
        tmp_path / f".w.npz.{dead}-abcd1234.tmp.bak",
    ]
    for p in others:
        p.write_text("mine")
        age(p, HOUR)
    folder = tmp_path / f".w.npz.{dead}-dir12345.tmp"  # a directory
    folder.mkdir()
    age(folder, HOUR)
    others.append(folder)
    link = tmp_path / f".w.npz.{dead}-link1234.tmp"
    link.symlink_to(tmp_path / "w.npz.abcd1234.tmp")
    age(link, HOUR)
    # earlier versions' names carry no pid: age alone
    legacy = [tmp_path / ".tmp-k3j_a9zq.npz", tmp_path / ".w.npz.k3j_a9zq.tmp"]
    for p in legacy:
        p.write_bytes(b"orphan")
        age(p, HOUR)
    assert sorted(files.remove_stale(tmp_path)) == sorted(p.name for p in legacy)
    assert all(p.exists() for p in others) and link.is_symlink()


def test_sweeps_are_rate_limited_per_directory(tmp_path, monkeypatch):
    first = tmp_path / f".a.bin.{dead_pid()}-aaaa1111.tmp"
    second = tmp_path / f".a.bin.{dead_pid()}-bbbb2222.tmp"
    first.write_bytes(b"x")
    age(first, HOUR)
    write_atomic(tmp_path / "a.bin", b"1")
    assert not first.exists()
    second.write_bytes(b"x")
    age(second, HOUR)
    write_atomic(tmp_path / "b.bin", b"2")  # within SWEEP_SECONDS: no new listing
    assert second.exists()
    monkeypatch.setattr(files, "SWEEP_SECONDS", 0.0)
    write_atomic(tmp_path / "c.bin", b"3")
    assert not second.exists()


def test_concurrent_writers_and_sweepers_never_fail(tmp_path):
    """Four processes write the same files 150 times each, sweeping on every write with no
    minimum age: only the pid protects the files in flight, and every write must succeed."""
    script = textwrap.dedent(
        f"""
        import sys
        from codegen import files
        files.SWEEP_SECONDS, files.STALE_SECONDS = 0.0, 0.0
        k = int(sys.argv[1])
        for i in range(150):
            files.write_atomic({str(tmp_path)!r} + f"/shared{{i % 3}}.bin", bytes([k]) * 50_000)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(k)], cwd=ROOT, stderr=subprocess.PIPE)
        for k in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"shared{i}.bin" for i in range(3)]
    for i in range(3):
        content = (tmp_path / f"shared{i}.bin").read_bytes()
        assert len(content) == 50_000 and len(set(content)) == 1  # one writer's whole file


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
