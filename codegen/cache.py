"""codegen.cache: compiled object code on disk, so a second process skips LLVM.

An entry is keyed by the SHA-256 of the unoptimized LLVM IR text, the host
fingerprint (triple, CPU name, CPU features, llvmlite version) and the
optimization level. It holds the object file and the optimized IR (kept so
``fn.llvm_ir_optimized`` and ``fn.asm`` work on a cache hit). Writes go to a
temporary file in the same directory and are published with ``os.replace``,
so a reader never sees half an entry. The directory is ``$SYMGRAD_CACHE_DIR``,
default ``~/.cache/symgrad``. Any I/O problem just means a miss.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

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
    target = path_for(entry_key)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".o")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(FORMAT + _LENGTH.pack(len(obj)) + obj + optimized_ir.encode())
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        return False
    stats["writes"] += 1
    return True


def clear() -> int:
    """Delete every entry; returns how many were removed."""
    removed = 0
    for p in cache_dir().glob("*.o"):
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed
