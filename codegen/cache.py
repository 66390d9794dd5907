"""codegen.cache: compiled object code on disk, so a second process skips LLVM.

An entry is keyed by the SHA-256 of the unoptimized LLVM IR text, the host
fingerprint (triple, CPU name, CPU features, llvmlite version) and the
optimization level. It holds the object file and the optimized IR (kept so
``fn.llvm_ir_optimized`` and ``fn.asm`` work on a cache hit). Writes go to a
temporary file in the same directory and are published with ``os.replace``,
so a reader never sees half an entry. The directory is ``$SYMGRAD_CACHE_DIR``,
default ``~/.cache/symgrad``. Any I/O problem just means a miss.

Two smaller kinds of entry let a warm start skip the Python work as well
(``load_blob`` / ``store_blob``, keyed by the caller): ``<key>.program``, the
lowered program of a set of formulas (``symgrad.compiler``), and
``<key>.index``, the object entry of a program (``codegen.llvm``). Their keys
include ``source_digest``, a hash of the compiler's own source files, so
editing symgrad invalidates them.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from codegen.files import write_atomic

FORMAT = b"SYMGRAD\x01"  # bump when the entry layout or the generated code's ABI changes
_LENGTH = struct.Struct("<Q")

stats = {"hits": 0, "misses": 0, "writes": 0}


def cache_dir() -> Path:
    return Path(os.environ.get("SYMGRAD_CACHE_DIR") or Path.home() / ".cache" / "symgrad")


def key(ir_text: str, fingerprint: str, opt: int) -> str:
    h = hashlib.sha256(FORMAT)
    for part in (fingerprint, f"opt={opt}", ir_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def path_for(entry_key: str) -> Path:
    return cache_dir() / f"{entry_key}.o"


def load(entry_key: str) -> tuple[bytes, str] | None:
    """(object code, optimized IR) or None."""
    try:
        blob = path_for(entry_key).read_bytes()
    except OSError:
        stats["misses"] += 1
        return None
    head = len(FORMAT) + _LENGTH.size
    if len(blob) < head or not blob.startswith(FORMAT):
        stats["misses"] += 1
        return None
    (size,) = _LENGTH.unpack_from(blob, len(FORMAT))
    if head + size > len(blob):
        stats["misses"] += 1
        return None
    stats["hits"] += 1
    return blob[head : head + size], blob[head + size :].decode()


def store(entry_key: str, obj: bytes, optimized_ir: str) -> bool:
    """Write an object file and its optimized IR atomically; False on any I/O error."""
    payload = _LENGTH.pack(len(obj)) + obj + optimized_ir.encode()
    if not _write(path_for(entry_key), payload):
        return False
    stats["writes"] += 1
    return True


def load_blob(entry_key: str, suffix: str) -> bytes | None:
    """The bytes stored under ``<entry_key>.<suffix>``, or None."""
    try:
        blob = (cache_dir() / f"{entry_key}.{suffix}").read_bytes()
    except OSError:
        return None
    return blob[len(FORMAT) :] if blob.startswith(FORMAT) else None


def store_blob(entry_key: str, suffix: str, data: bytes) -> bool:
    """Write ``data`` under ``<entry_key>.<suffix>`` atomically; False on any I/O error."""
    return _write(cache_dir() / f"{entry_key}.{suffix}", data)


def _write(target: Path, payload: bytes) -> bool:
    """``FORMAT + payload`` to ``target``, atomically; a cache write failing is only a miss later."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, FORMAT + payload)
    except OSError:
        return False
    return True


_digests: dict[tuple[str, ...], str] = {}


def source_digest(*packages: str | os.PathLike) -> str:
    """SHA-256 of the ``.py`` files of the given package directories (once per process)."""
    dirs = tuple(str(Path(p).resolve()) for p in packages)
    if dirs not in _digests:
        h = hashlib.sha256(FORMAT)
        for d in dirs:
            for path in sorted(Path(d).glob("*.py")):
                h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        _digests[dirs] = h.hexdigest()
    return _digests[dirs]


ENTRY_SUFFIXES = ("o", "program", "index")


def clear() -> int:
    """Delete every entry (object files, programs, indexes); returns how many were removed."""
    removed = 0
    for p in [q for suffix in ENTRY_SUFFIXES for q in cache_dir().glob(f"*.{suffix}")]:
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed
