"""Atomic file writes: a reader sees the old files or all the new ones, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

# (destination, writer of the temporary file's path, permission bits before the umask)
FileSpec = tuple[Path, Callable[[str], None], int]


def write_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, then ``os.replace`` it into place.

    ``fsync=True`` also flushes the bytes to disk before the rename (files a user
    keeps, such as saved weights). On any error the temporary file is removed
    and the exception propagates; ``path`` is untouched.
    """
    write_all_atomic([(Path(path), lambda tmp: Path(tmp).write_bytes(data), 0o666)], fsync=fsync)


def write_all_atomic(files: Sequence[FileSpec], *, fsync: bool = False) -> None:
    """Write every file to a temporary file beside it, then rename them all into place.

    Each writer receives its temporary file's path (a C compiler can link straight into
    it). Nothing is renamed until every file was written, so a failure in any of them
    (a header after its library) leaves every destination as it was. The files get
    ``mode`` less the process umask, as ``open`` would give them.
    """
    umask = os.umask(0)
    os.umask(umask)
    temps: list[tuple[str, Path]] = []
    try:
        for path, write, mode in files:
            path = Path(path)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            except OSError as err:
                raise type(err)(err.errno, f"cannot write {path}: {err.strerror}") from err
            os.close(fd)
            temps.append((tmp, path))
            write(tmp)
            os.chmod(tmp, mode & ~umask)
            if fsync:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
