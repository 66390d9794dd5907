"""Atomic file writes: a reader sees the old files or all the new ones, never half of one.

A writer killed between creating its temporary files and the renames leaves them
behind. Their names carry the writer's pid (``.<name>.<pid>-<random>.tmp``), so a
later write to the same directory can tell orphans from files still being
written: :func:`remove_stale` deletes those whose writer is gone and that are
older than :data:`STALE_SECONDS`.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# (destination, writer of the temporary file's path, permission bits before the umask)
FileSpec = tuple[Path, Callable[[str], None], int]

STALE_SECONDS = 15 * 60
"""A temporary file this old whose writer is not running is an orphan (writes take seconds)."""
SWEEP_SECONDS = 60.0
"""A directory is swept for orphans at most this often per process (cache writes are many)."""

# mkstemp's names (8 random characters): ours, with the writer's pid; then those of
# earlier versions, without one (judged by age alone)
_WITH_PID = re.compile(r"\..+\.(\d+)-[a-z0-9_]{8}\.tmp")
_WITHOUT_PID = (re.compile(r"\..+\.[a-z0-9_]{8}\.tmp"), re.compile(r"\.tmp-[a-z0-9_]{8}(\.\w+)?"))
_last_sweep: dict[str, float] = {}  # directory -> time.monotonic() of its last sweep


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
    ``mode`` less the process umask, as ``open`` would give them. Orphaned temporary
    files of writers that died in these directories are removed first (:func:`remove_stale`).
    """
    umask = os.umask(0)
    os.umask(umask)
    for directory in {Path(path).parent for path, _, _ in files}:
        _sweep_now_and_then(directory)
    temps: list[tuple[str, Path]] = []
    try:
        for path, write, mode in files:
            path = Path(path)
            try:
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent
                )
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


def _sweep_now_and_then(directory: Path) -> None:
    key = os.path.abspath(directory)
    now = time.monotonic()
    last = _last_sweep.get(key)
    if last is not None and now - last < SWEEP_SECONDS:
        return
    _last_sweep[key] = now
    try:
        remove_stale(directory)
    except OSError:  # a missing or unreadable directory: the write itself says what is wrong
        pass


def remove_stale(directory: str | os.PathLike, min_age: float | None = None) -> list[str]:
    """Delete orphaned temporary files of :func:`write_all_atomic` in ``directory``; returns their names.

    An orphan is a regular file named like our temporary files, at least
    ``min_age`` seconds old (default :data:`STALE_SECONDS`), whose writer's pid
    is not a running process (files of earlier versions carry no pid: age alone).
    Safe against concurrent writers and sweepers: a live writer's file is never
    touched, and a file that vanishes meanwhile is skipped.
    """
    min_age = STALE_SECONDS if min_age is None else min_age
    removed = []
    now = time.time()
    with os.scandir(directory) as entries:
        for entry in entries:
            if not _orphan_name(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if not entry.is_file(follow_symlinks=False) or now - info.st_mtime < min_age:
                    continue
                os.unlink(entry.path)
            except (FileNotFoundError, PermissionError):  # gone already, or not ours to remove
                continue
            removed.append(entry.name)
    return removed


def _orphan_name(name: str) -> bool:
    """Whether ``name`` is one of our temporary files with no live writer."""
    match = _WITH_PID.fullmatch(name)
    if match is not None:
        return not _running(int(match.group(1)))
    return any(pattern.fullmatch(name) for pattern in _WITHOUT_PID)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (ours included; another user's counts as live)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's, or no pid we can ask: keep it
        return True
    return True
