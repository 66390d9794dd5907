"""codegen.names: every user-named string that reaches generated text passes through here.

Names of models, layers, symbols and programs, and the formulas and docstrings
built from them, end up inside generated Python, C and LLVM IR. Each target
has one function per kind of text, and the generators use nothing else:

- Python (``codegen.numpy`` and the modules ``symgrad.emit`` writes):
  ``python_identifier``, ``python_comment``, ``python_docstring``,
  ``python_string``;
- C (the header of a native library): ``c_identifier``, ``c_comment``,
  ``check_c_prefix``;
- LLVM IR: ``llvm_name`` (symbols and values), ``llvm_comment``.

Identifiers are mapped, never trusted: a name becomes a valid identifier of
the target (ASCII for C and LLVM; NFKC-normalized for Python, which compares
identifiers after NFKC, so the generator's de-duplication sees the names as
Python does). Free text is escaped: no character of a name can end a comment,
a docstring or a string literal, and characters that are not printable
(newlines, NUL, line and paragraph separators) appear as ``\\n``, ``\\x00``,
``\\u2028``. Long names (LLVM truncates local names beyond 1,024 characters)
are shortened with a stable hash of the whole name.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata

# --------------------------------------------------------------------------
# Shared pieces


def printable(text: str) -> str:
    """``text`` with every character that is not printable as its Python escape (``\\n``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def digest(text: str, length: int = 12) -> str:
    """A stable hex digest of ``text`` (SHA-256, ``length`` hex digits)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def shortened(name: str, original: str, limit: int) -> str:
    """``name`` if within ``limit`` characters, else its head, ``_`` and a digest of ``original``."""
    if len(name) <= limit:
        return name
    tail = "_" + digest(original)
    return name[: limit - len(tail)] + tail


def ascii_name(text: str, allowed: str) -> str:
    """``text`` in ASCII, readably: compatibility forms and accents folded (``ｄé`` -> ``de``),
    then every character not in the regex class ``allowed`` as ``_``."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return re.sub(f"[^{allowed}]", "_", folded, flags=re.ASCII)


def _lines(text: str) -> list[str]:
    """``text`` split at its newlines; other line breaks (``\\r``, ``\\u2028``) are escaped later."""
    return text.split("\n")


# --------------------------------------------------------------------------
# Python

PYTHON_NAME_LIMIT = 80  # characters; longer names keep their head and a digest


def python_identifier(text: str) -> str:
    """``text`` as the identifier Python reads: NFKC-normalized, other characters ``_``.

    Python normalizes identifiers (PEP 3131), so ``ｄ`` and ``d`` name one
    variable; generators compare the returned names when they make them unique.
    A leading digit (or nothing left) gets ``v_``; keywords and builtins are the
    generator's to avoid (it reserves them).
    """
    name = unicodedata.normalize("NFKC", text)
    name = "".join(c if ("_" + c).isidentifier() else "_" for c in name)
    if not name.isidentifier():
        name = "v_" + name
    if unicodedata.normalize("NFKC", name) != name:  # a mapped character changed the normal form
        name = "".join(c if c.isascii() else f"_u{ord(c):04x}" for c in name)
    return shortened(name, text, PYTHON_NAME_LIMIT)


def python_string(text: str, quote: str = "'") -> str:
    """``text`` as a Python string literal: ``repr`` (every quote and control character
    escaped); ``quote='"'`` prefers double quotes where that needs no escape."""
    literal = repr(text)
    if quote == '"' and literal[0] == "'" and '"' not in text:  # then text holds no ' either
        return f'"{literal[1:-1]}"'
    return literal


def python_comment(text: str) -> list[str]:
    """``# `` lines showing ``text``: one per line of it, unprintable characters escaped."""
    return [f"# {printable(line)}".rstrip() for line in _lines(text)]


def python_docstring(text: str, indent: str = "") -> str:
    """A docstring literal showing ``text``; no character of ``text`` can end it.

    Backslashes are doubled, a quote followed by a quote (or by the closing
    quotes) is escaped, unprintable characters other than newlines become escapes. One
    line gives ``\"\"\"text\"\"\"``; more put the closing quotes on a line of their own.
    """
    body = [_docstring_line(line) for line in _lines(text.strip("\n"))]
    if len(body) == 1:  # the closing quotes follow the text: a last quote is escaped too
        line = body[0][:-1] + '\\"' if body[0].endswith('"') else body[0]
        return f'{indent}"""{line}"""'
    rest = [f"{indent}{line}".rstrip() for line in body[1:]]
    return "\n".join([f'{indent}"""{body[0]}', *rest, f'{indent}"""'])


def _docstring_line(line: str) -> str:
    line = printable(line.replace("\\", "\\\\"))
    return re.sub(r'"(?=")', r'\\"', line)


# --------------------------------------------------------------------------
# C

C_NAME_LIMIT = 63  # significant initial characters the C standard guarantees
C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch typedef "
    "union unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic "
    "_Imaginary _Noreturn _Static_assert _Thread_local alignas alignof bool false nullptr "
    "static_assert thread_local true typeof typeof_unqual".split()
)
# The headers of the C standard library and of POSIX that a header named PREFIX.h
# next to the user's sources would shadow (`#include <stdint.h>` finds ./stdint.h
# when the directory is on the include path).
SYSTEM_HEADERS = frozenset(
    "assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal "
    "stdalign stdarg stdatomic stdbit stdbool stdckdint stddef stdint stdio stdlib stdnoreturn "
    "string tgmath threads time uchar wchar wctype "
    "aio arpa cpio dirent dlfcn fcntl fnmatch ftw glob grp iconv langinfo libgen monetary mqueue "
    "ndbm netdb nl_types poll pthread pwd regex sched search semaphore spawn strings stropts "
    "syslog tar termios trace ulimit unistd utime utmpx wordexp alloca malloc memory features "
    "endian byteswap sys net netinet linux omp".split()
)


def c_identifier(text: str) -> str:
    """``text`` as an ASCII C identifier: other characters ``_``, a leading digit ``_``.

    Longer than 63 characters: the head and a digest of ``text``. Where mapped
    names must stay distinct (the parameters of one function) the header makes
    them unique.
    """
    name = ascii_name(text, "A-Za-z0-9_")
    if not name or name[0].isdigit():
        name = "_" + name
    return shortened(name, text, C_NAME_LIMIT)


def c_parameter(text: str) -> str:
    """A parameter name: a C identifier that is not a keyword (nor ``workspace``)."""
    name = c_identifier(text)
    return name + "_" if name in C_KEYWORDS or name == "workspace" else name


def check_c_prefix(prefix: str) -> str:
    """``prefix`` if it can name the functions and the header of a library, else ValueError."""
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z]\w*|_[a-z0-9]\w*", prefix, re.A):
        raise ValueError(
            "prefix must be an ASCII C identifier not reserved by C (no leading __ or _ and a "
            "capital letter; it names the C "
            f"functions PREFIX_... and the header PREFIX.h). Received: prefix={prefix!r}"
        )
    if len(prefix) > 40:
        raise ValueError(
            f"prefix must be at most 40 characters (the C names built from it stay within "
            f"{C_NAME_LIMIT + 40 + 16}). Received: prefix of {len(prefix)} characters"
        )
    if prefix.lower() in SYSTEM_HEADERS or prefix in C_KEYWORDS:
        raise ValueError(
            f"prefix {prefix!r} would write {prefix}.h, which shadows the system header "
            f"<{prefix}.h> (or is a C keyword); choose another prefix. Received: prefix={prefix!r}"
        )
    return prefix


def c_double(value: float, what: str) -> str:
    """``value`` as a C double literal that reads back the same bits (``repr`` is the shortest
    such decimal); ``what`` names it in the error a nan or an infinity gets, which have none."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number to be written as C. Received: {value!r}")
    text = repr(value)
    return text if any(c in text for c in ".e") else text + ".0"


def c_comment(text: str) -> list[str]:
    """The lines of a ``/* ... */`` block showing ``text``: no ``*/`` inside, escapes as Python's."""
    return [printable(line).replace("*/", "* /").replace("/*", "/ *") for line in _lines(text)]


# --------------------------------------------------------------------------
# LLVM IR

LLVM_NAME_LIMIT = 200  # characters; LLVM truncates (and then confuses) local names beyond 1,024
_LLVM_SAFE = re.compile(r"[A-Za-z0-9_.]+")


def llvm_name(text: str) -> str:
    """``text`` as an LLVM symbol or value name: ``[A-Za-z0-9_.]``, at most 200 characters.

    A name that had to change ends in a digest of ``text``, so distinct names
    (``a-b`` and ``a_b``) stay distinct; safe short names are kept as they are.
    """
    if _LLVM_SAFE.fullmatch(text) and len(text) <= LLVM_NAME_LIMIT:
        return text
    name = ascii_name(text, "A-Za-z0-9_.")[: LLVM_NAME_LIMIT - 13]
    return f"{name}_{digest(text)}"


def llvm_comment(text: str) -> list[str]:
    """``; `` lines showing ``text``: one per line of it, unprintable characters escaped."""
    return [f"; {printable(line)}".rstrip() for line in _lines(text)]
