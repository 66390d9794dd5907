"""codegen.cache: compiled object code on disk, so a second process skips LLVM.

An object entry (``<key>.o``) is keyed by the SHA-256 of the unoptimized LLVM
IR text, the host fingerprint (triple, CPU name, CPU features, llvmlite
version) and the optimization level. It holds the object file (or the object
files of one module generated in parts, ``codegen.llvm.split``) and the
optimized IR (kept so ``fn.llvm_ir_optimized`` and ``fn.asm`` work on a cache
hit). Two smaller kinds of entry let a warm start skip the Python work as well
(``load_blob`` / ``store_blob``, keyed by the caller): ``<key>.program``, the
lowered program of a set of formulas (``symgrad.compiler``, written with
``codegen.serial``, never pickle), and ``<key>.index``, the object entry of a
program (``codegen.llvm``). Their keys include ``source_digest``, a hash of the
compiler's own source files, so editing symgrad invalidates them.

Every entry is ``FORMAT + HMAC-SHA256(dir key, kind, entry key, body) + body``;
the 32-byte key is made once per cache directory (``<dir>/key``, mode 0600).
An entry whose tag does not match (a flipped bit, a truncated or foreign file,
an entry renamed to another key) is a miss, as is any I/O or decode problem:
the caller recompiles and the new entry replaces the bad one. Native code is
loaded only after its tag matched. Writes go to a temporary file in the same
directory and are published with ``os.replace``, so a reader never sees half
an entry. The directory is ``$SYMGRAD_CACHE_DIR``, default ``~/.cache/symgrad``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from pathlib import Path

from codegen.files import write_atomic

FORMAT = b"SYMGRAD\x03"  # bump when the entry layout or the generated code's ABI changes
_LENGTH = struct.Struct("<Q")
_TAG = hashlib.sha256().digest_size
_KEY_BYTES = 32
_ENTRY_KEY = re.compile(r"[0-9a-f]{64}")

stats = {"hits": 0, "misses": 0, "writes": 0, "rejected": 0}
"""Object entries found / not found, entries written, entries of any kind refused (bad tag or body)."""


def cache_dir() -> Path:
    return Path(os.environ.get("SYMGRAD_CACHE_DIR") or Path.home() / ".cache" / "symgrad")


def key(ir_text: str, fingerprint: str, opt: int) -> str:
    h = hashlib.sha256(FORMAT)
    for part in (fingerprint, f"opt={opt}", ir_text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def path_for(entry_key: str, suffix: str = "o") -> Path:
    return cache_dir() / f"{entry_key}.{suffix}"


def load(entry_key: str) -> tuple[tuple[bytes, ...], str] | None:
    """(object files, optimized IR) or None."""
    body = _read(entry_key, "o")
    found = _split_objects(body) if body is not None else None
    stats["hits" if found is not None else "misses"] += 1
    return found


def _split_objects(body: bytes) -> tuple[tuple[bytes, ...], str] | None:
    """``count, (length, object) * count, optimized IR`` back into its pieces."""
    if len(body) < _LENGTH.size:
        return _rejected()
    (count,) = _LENGTH.unpack_from(body)
    objects, at = [], _LENGTH.size
    for _ in range(min(count, len(body))):
        if len(body) < at + _LENGTH.size:
            return _rejected()
        (size,) = _LENGTH.unpack_from(body, at)
        at += _LENGTH.size
        if len(body) < at + size:
            return _rejected()
        objects.append(body[at : at + size])
        at += size
    if not objects or len(objects) != count:
        return _rejected()
    try:
        return tuple(objects), body[at:].decode()
    except UnicodeDecodeError:
        return _rejected()


def store(entry_key: str, objects: tuple[bytes, ...], optimized_ir: str) -> bool:
    """Write object files and their optimized IR atomically; False on any I/O error."""
    pieces = [_LENGTH.pack(len(objects))]
    for obj in objects:
        pieces += [_LENGTH.pack(len(obj)), obj]
    if not _write(entry_key, "o", b"".join(pieces) + optimized_ir.encode()):
        return False
    stats["writes"] += 1
    return True


def load_blob(entry_key: str, suffix: str) -> bytes | None:
    """The bytes stored under ``<entry_key>.<suffix>`` if their tag matches, else None."""
    return _read(entry_key, suffix)


def store_blob(entry_key: str, suffix: str, data: bytes) -> bool:
    """Write ``data`` under ``<entry_key>.<suffix>`` atomically; False on any I/O error."""
    return _write(entry_key, suffix, data)


def load_entry_key(index_key: str, suffix: str = "index") -> str | None:
    """The entry key stored by ``store_blob(index_key, suffix, key.encode())``, checked."""
    body = _read(index_key, suffix)
    if body is None:
        return None
    text = body.decode("ascii", errors="replace")
    return text if _ENTRY_KEY.fullmatch(text) else _rejected()


def _read(entry_key: str, suffix: str) -> bytes | None:
    secret = _dir_key(create=False)
    if secret is None:
        return None
    try:
        blob = path_for(entry_key, suffix).read_bytes()
    except OSError:
        return None
    head = len(FORMAT) + _TAG
    if len(blob) < head or not blob.startswith(FORMAT):
        return _rejected()
    body = blob[head:]
    if not hmac.compare_digest(blob[len(FORMAT) : head], _tag(secret, entry_key, suffix, body)):
        return _rejected()
    return body


def _write(entry_key: str, suffix: str, body: bytes) -> bool:
    """``FORMAT + tag + body`` to the entry, atomically; a failed write is only a miss later."""
    try:
        secret = _dir_key(create=True)
        if secret is None:
            return False
        tag = _tag(secret, entry_key, suffix, body)
        write_atomic(path_for(entry_key, suffix), FORMAT + tag + body)
    except OSError:
        return False
    return True


def _tag(secret: bytes, entry_key: str, suffix: str, body: bytes) -> bytes:
    """HMAC over the entry's name and body: a body moved to another name does not verify."""
    mac = hmac.new(secret, FORMAT, hashlib.sha256)
    mac.update(f"{suffix}\0{entry_key}\0".encode())
    mac.update(body)
    return mac.digest()


def _dir_key(create: bool) -> bytes | None:
    """The directory's HMAC key; made (atomically, mode 0600) on the first write.

    A key file that is not ours or is readable by others disables the directory
    (every read a miss, no writes) rather than being trusted; a damaged one is
    replaced on the next write (the entries it signed become misses).
    """
    path = cache_dir() / "key"
    try:
        secret, trusted = _read_key(path)
    except FileNotFoundError:
        return _new_key(path, replace=False) if create else None
    except OSError:
        return None
    if not trusted:
        return None
    if len(secret) == _KEY_BYTES:
        return secret
    return _new_key(path, replace=True) if create else None


def _new_key(path: Path, replace: bool) -> bytes | None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-key-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(_KEY_BYTES))
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # all of the key or nothing: the first writer's key wins
            except FileExistsError:
                pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    secret, trusted = _read_key(path)
    return secret if trusted and len(secret) == _KEY_BYTES else None


def _read_key(path: Path) -> tuple[bytes, bool]:
    """(contents, whether the file is ours and private)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        secret = f.read(_KEY_BYTES + 1)
    mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    private = os.name != "posix" or st.st_mode & 0o077 == 0
    return secret, mine and private


def _rejected() -> None:
    stats["rejected"] += 1
    return None


_digests: dict[tuple[str, ...], str] = {}


def source_digest(*packages: str | os.PathLike) -> str:
    """SHA-256 of the ``.py`` files under the given package directories (once per process)."""
    dirs = tuple(str(Path(p).resolve()) for p in packages)
    if dirs not in _digests:
        h = hashlib.sha256(FORMAT)
        for d in dirs:  # every module of the package, sub-packages included
            for path in sorted(Path(d).rglob("*.py")):
                name = path.relative_to(d).as_posix()
                h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
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
