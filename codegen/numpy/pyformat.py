"""codegen.numpy.pyformat: lay out generated Python the way ``ruff format`` (black style) leaves it.

The NumPy backend prints code for reading: one statement per line, a formula
comment above each block. A standalone module written from that text should
also survive the formatter its user runs, so ``ruff_stable(text)`` rewrites
only what ``ruff format`` (line length 100) would change in such code:

- string quotes: ``'X'`` -> ``"X"`` when that needs no new escapes;
- powers of simple operands hug: ``beta_2 ** t`` -> ``beta_2**t``;
- a line longer than the limit is split black's way: a trailing comment moves
  above the statement; the code splits at its last bracket pair (the *right
  hand split*), then the bracket's content at its top-level delimiters: one item
  per line with a trailing comma for ``,``, one operand per line led by the
  operator for ``and`` / ``or`` / comparisons / arithmetic;
- the right-hand side of an assignment or ``return`` with several top-level
  operators (``a = b + c + d``, a conditional expression), or one that does not
  end in a bracket, is wrapped in parentheses first, as black's optional
  parentheses;
- a bracketed statement wrapped over several lines without a magic trailing
  comma (the fast argument check) is joined first, then split as above;
- a comment line longer than the limit continues on further comment lines
  (``ruff format`` leaves comments as they are, so this is stable).

Lines it cannot split (long strings, a single long name) stay as they are, as
``ruff format`` leaves them. Deterministic and idempotent; the emit tests run
``ruff format --check`` on its output. :func:`wrap_long_lines` applies only the
splitting, to the lines that are too long, and leaves every other byte alone
(the NumPy backend's own source).

    >>> ruff_stable("x = f('a', y ** 2)\\n")
    'x = f("a", y**2)\\n'
"""

from __future__ import annotations

import io
import keyword
import re
import tokenize
from dataclasses import dataclass

LINE_LENGTH = 100
INDENT = "    "
OPENING, CLOSING = "([{", ")]}"
SKIPPED = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
COMPARATORS = {"==", "!=", "<", ">", "<=", ">=", "in", "is", "not"}
# black's delimiter priorities (higher splits first); `not` only counts inside `not in` / `is not`
PRIORITY = {",": 18, "and": 14, "or": 14, "+": 5, "-": 5, "*": 4, "/": 4, "//": 4, "%": 4, "@": 4}
COMPARATOR_PRIORITY = 10
COMPREHENSION_PRIORITY, TERNARY_PRIORITY = 20, 16


def ruff_stable(text: str, line_length: int = LINE_LENGTH) -> str:
    """``text`` (a whole module) with quotes, powers and long lines laid out as ruff would."""
    return _relayout(_respace(text), line_length, only_long=False)


def wrap_long_lines(text: str, line_length: int = LINE_LENGTH) -> str:
    """``text`` with each statement or comment line longer than ``line_length`` split as in
    :func:`ruff_stable`; every other line stays byte for byte."""
    return _relayout(text, line_length, only_long=True)


def _relayout(text: str, line_length: int, only_long: bool) -> str:
    lines = text.splitlines()
    out: list[str] = []
    row = 1  # next source line (1-based) not yet copied
    for first, last, toks in _logical_lines(text):
        out += lines[row - 1 : first - 1]
        source = lines[first - 1 : last]
        if only_long and all(len(line) <= line_length for line in source):
            out += source
        else:
            out += _layout(source, toks, line_length)
        row = last + 1
    out += lines[row - 1 :]
    comment_rows = _comment_lines("\n".join(out))
    wrapped: list[str] = []
    for k, line in enumerate(out, 1):
        long = len(line) > line_length and k in comment_rows
        wrapped += wrap_comment(line, line_length) if long else [line]
    return "\n".join(wrapped) + "\n"


# --------------------------------------------------------------------------
# Comment lines


def _comment_lines(text: str) -> set[int]:
    """Rows (1-based) that hold nothing but a comment (not text inside a string)."""
    lines = text.splitlines()
    return {
        t.start[0]
        for t in _tokens(text + "\n")
        if t.type == tokenize.COMMENT and not lines[t.start[0] - 1][: t.start[1]].strip()
    }


def _break_points(text: str) -> list[str]:
    """``text`` in the pieces a comment line may break between: words (an operator joins the
    word after it, ``- y``), and long words after each ``*``, ``/`` or ``,`` (not in ``**``)."""
    pieces = []
    for word in re.findall(r"(?:[-+] )?\S+ *", text):
        pieces += [p for p in re.split(r"(?<=[/,])|(?<=(?<!\*)\*)(?!\*)", word) if p]
    return pieces


def wrap_comment(line: str, line_length: int = LINE_LENGTH) -> list[str]:
    """One comment line as several, each within ``line_length`` where the text allows:
    continuation lines are indented four more spaces after the ``#``."""
    indent = line[: len(line) - len(line.lstrip())]
    return _fill(line.strip()[1:].strip(), f"{indent}# ", f"{indent}#     ", line_length)


def wrap_text(line: str, line_length: int = LINE_LENGTH) -> list[str]:
    """A line of docstring text (a formula, a list) within ``line_length``, broken as
    :func:`wrap_comment` breaks comments and continued four spaces deeper."""
    if len(line) <= line_length:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    return _fill(line.strip(), indent, indent + "    ", line_length)


def _fill(text: str, first: str, more: str, line_length: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for piece in _break_points(text):
        prefix = more if lines else first
        if current.strip() and len(prefix + current + piece.rstrip()) > line_length:
            lines.append((prefix + current).rstrip())
            current = piece.lstrip()
        else:
            current += piece
    lines.append(((more if lines else first) + current).rstrip())
    return lines


# --------------------------------------------------------------------------
# Token edits: quotes and power operators


def _respace(text: str) -> str:
    edits: dict[int, list[tuple[int, int, str]]] = {}  # row -> (start col, end col, new text)
    toks = [t for t in _tokens(text) if t.type not in SKIPPED and t.type != tokenize.COMMENT]
    for k, t in enumerate(toks):
        if t.type == tokenize.STRING and t.start[0] == t.end[0]:
            new = _double_quoted(t.string)
            if new != t.string:
                edits.setdefault(t.start[0], []).append((t.start[1], t.end[1], new))
        elif t.type == tokenize.OP and t.string == "**" and 0 < k < len(toks) - 1:
            left, right = toks[k - 1], toks[k + 1]
            if left.end[0] != t.start[0] or right.start[0] != t.end[0] or not _operand_end(left):
                continue  # `**kwargs`, or a power split over lines
            hug = _simple_left(toks, k) and _simple_right(toks, k)
            new = "**" if hug else " ** "
            edits.setdefault(t.start[0], []).append((left.end[1], right.start[1], new))
    if not edits:
        return text
    lines = text.split("\n")
    for row, changes in edits.items():
        line = lines[row - 1]
        for start, end, new in sorted(changes, reverse=True):
            line = line[:start] + new + line[end:]
        lines[row - 1] = line
    return "\n".join(lines)


def _double_quoted(literal: str) -> str:
    """``'abc'`` -> ``"abc"`` (prefixes kept) unless the body holds a double quote."""
    k = 0
    while k < len(literal) and literal[k].isalpha():
        k += 1
    prefix, rest = literal[:k], literal[k:]
    if not rest.startswith("'") or rest.startswith("'''"):
        return literal
    body = rest[1:-1]
    if '"' in body or "\\'" in body.replace("\\\\", ""):
        return literal
    return f'{prefix}"{body}"'


def _operand_end(t: tokenize.TokenInfo) -> bool:
    """Whether ``t`` can end an operand (so a following ``**`` is the binary power)."""
    if t.type == tokenize.NAME:
        return not keyword.iskeyword(t.string) or t.string in ("True", "False", "None")
    return t.type in (tokenize.NUMBER, tokenize.STRING) or t.string in CLOSING


def _simple_left(toks, k: int) -> bool:
    """black's simple power operand, left of ``**``: a name, number or attribute chain."""
    j = k - 1
    if toks[j].type not in (tokenize.NAME, tokenize.NUMBER) or keyword.iskeyword(toks[j].string):
        return False
    while j >= 2 and toks[j - 1].string == "." and toks[j - 2].type == tokenize.NAME:
        j -= 2
    return not (j >= 1 and toks[j - 1].string == ".")


def _simple_right(toks, k: int) -> bool:
    j = k + 1
    if toks[j].string in "+-" and toks[j].type == tokenize.OP:
        j += 1
    if j >= len(toks) or toks[j].type not in (tokenize.NAME, tokenize.NUMBER):
        return False
    if keyword.iskeyword(toks[j].string):
        return False
    while j + 2 < len(toks) and toks[j + 1].string == "." and toks[j + 2].type == tokenize.NAME:
        j += 2
    return not (j + 1 < len(toks) and toks[j + 1].string in ("(", "["))


def _tokens(text: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(text).readline))


# --------------------------------------------------------------------------
# Logical lines


@dataclass(frozen=True)
class Tok:
    text: str
    space: bool  # whitespace before it when rendered after another token
    kind: str  # "open", "close", "comma", "string", "comment", "op", "name", "other"


def _kind(t: tokenize.TokenInfo) -> str:
    if t.type == tokenize.OP:
        if t.string in OPENING:
            return "open"
        if t.string in CLOSING:
            return "close"
        return "comma" if t.string == "," else "op"
    return {tokenize.STRING: "string", tokenize.COMMENT: "comment", tokenize.NAME: "name"}.get(
        t.type, "other"
    )


def _logical_lines(text: str):
    """(first row, last row, tokens) per logical line; tokens carry their spacing."""
    current: list[tokenize.TokenInfo] = []
    for t in _tokens(text):
        if t.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        if t.type == tokenize.NL and not current:
            continue  # blank line or a comment line
        if t.type == tokenize.COMMENT and not current:
            continue
        if t.type == tokenize.NEWLINE:
            if current:
                yield current[0].start[0], t.start[0], current
            current = []
            continue
        current.append(t)


def _layout(source: list[str], raw: list[tokenize.TokenInfo], line_length: int) -> list[str]:
    if len(source) == 1 and len(source[0]) <= line_length:
        return source
    if any(t.type == tokenize.STRING and t.start[0] != t.end[0] for t in raw):
        return source  # a multi-line string (docstring): nothing to split
    comments = [t for t in raw if t.type == tokenize.COMMENT]
    if comments and (len(comments) > 1 or comments[0] is not raw[-1]):
        return source  # comments inside brackets: leave the layout to its author
    code = [t for t in raw if t.type not in (tokenize.NL, tokenize.COMMENT)]
    fits = all(len(line) <= line_length for line in source)
    if len(source) > 1 and _magic_trailing_comma(code) and fits:
        return source  # already exploded on purpose (one item per line)
    if any(a.type == b.type == tokenize.STRING for a, b in zip(code, code[1:])):
        return source  # implicitly concatenated strings: laid out by hand
    toks = []
    for prev, t in zip([None, *code], code):
        if prev is None:
            space = False
        elif prev.end[0] == t.start[0]:
            space = t.start[1] > prev.end[1]
        else:  # joined across a line break
            space = prev.string not in OPENING and t.string not in CLOSING
        toks.append(Tok(t.string, space, _kind(t)))
    indent = source[0][: len(source[0]) - len(source[0].lstrip())]
    lines = []
    if comments:
        lines.append(indent + comments[0].string)
    return lines + _split(toks, indent, False, line_length)


def _render(toks: list[Tok]) -> str:
    return "".join((" " if t.space and k else "") + t.text for k, t in enumerate(toks))


def _magic_trailing_comma(toks) -> bool:
    """A ``,`` right before a closing bracket, other than a one-element tuple's."""
    text = [getattr(t, "string", getattr(t, "text", "")) for t in toks]
    for k in range(1, len(text)):
        if text[k] in CLOSING and text[k - 1] == ",":
            if text[k] == ")" and _items_before(text, k) == 1:
                continue
            return True
    return False


def _items_before(text: list[str], close: int) -> int:
    """How many top-level commas the bracket pair that ``close`` ends holds."""
    depth, commas = 0, 0
    for k in range(close - 1, -1, -1):
        if text[k] in CLOSING:
            depth += 1
        elif text[k] in OPENING:
            if depth == 0:
                return commas
            depth -= 1
        elif text[k] == "," and depth == 0:
            commas += 1
    return commas


# --------------------------------------------------------------------------
# Splitting one line


def _split(toks: list[Tok], indent: str, inside: bool, line_length: int) -> list[str]:
    text = indent + _render(toks)
    if len(text) <= line_length and not _magic_trailing_comma(toks):
        return [text]
    if inside:
        parts = _delimiter_split(toks)
        if parts is not None and len(parts) > 1:  # one part: an item with its comma
            return [line for part in parts for line in _split(part, indent, True, line_length)]
    if toks[-1].kind == "open":  # the head of a split (a very long name): left as it is
        return [text]
    width = line_length - len(indent)
    found = (None if inside else _optional_parens(toks, width)) or _right_hand_split(toks)
    if found is None:
        return [text]
    head, body, tail = found
    lines = _split(head, indent, inside, line_length)
    parts = _delimiter_split(body) if _is_display(head) else None
    if parts is not None and max(_priorities(body)) == PRIORITY[","]:
        # a literal list / dict / tuple that does not fit: one item per line
        for part in parts:
            lines += _split(part, indent + INDENT, True, line_length)
    else:
        lines += _split(body, indent + INDENT, True, line_length)
    return lines + _split(tail, indent, inside, line_length)


def _is_display(head: list[Tok]) -> bool:
    """Whether the bracket ending ``head`` opens a literal (not a call, subscript or def)."""
    if head[-1].text == "{" or len(head) == 1:
        return True
    before = head[-2]
    if before.kind == "name":
        return keyword.iskeyword(before.text) and before.text not in ("True", "False", "None")
    return before.kind not in ("close", "string")


def _right_hand_split(toks: list[Tok]):
    """(head ending in the opening bracket, body, tail from the closing bracket) or None."""
    close = next((k for k in range(len(toks) - 1, -1, -1) if toks[k].kind == "close"), None)
    if close is None:
        return _wrap_right_side(toks)
    depth = 0
    for k in range(close, -1, -1):
        if toks[k].kind == "close":
            depth += 1
        elif toks[k].kind == "open":
            depth -= 1
            if depth == 0:
                opening = k
                break
    else:  # pragma: no cover - tokenize guarantees balanced brackets
        return None
    body = toks[opening + 1 : close]
    if not body:
        return None
    body = [Tok(body[0].text, False, body[0].kind), *body[1:]]
    tail = [Tok(toks[close].text, False, "close"), *toks[close + 1 :]]
    return toks[: opening + 1], body, tail


def _optional_parens(toks: list[Tok], line_length: int):
    """``x = (`` / right-hand side / ``)`` where black keeps its invisible parentheses: the
    right-hand side of ``=`` or ``return`` has several top-level operators of its highest
    priority, or one and does not end in a bracket whose opening fits on the first line,
    or it is one call whose opening does not fit after a long target (``x[0, 0] = f(``).
    ``line_length``: the width left after the statement's indent."""
    k = _assignment(toks)
    if k is None:
        return None
    rhs = toks[k + 1 :]
    priorities = [p for p in _priorities(rhs) if p]
    if not priorities:  # one call or name: split at its brackets, if their opening fits
        if _assignment(rhs) is not None:
            return None  # `a = b[k] = (...)`: a chain of targets takes no parentheses
        found = _right_hand_split(toks)
        if found is None or len(_render(found[0])) <= line_length:
            return None
        if len(_render([*toks[: k + 1], Tok("(", True, "open")])) > line_length:
            return None  # the target alone is too long: nothing fits, keep the split
    elif priorities.count(max(priorities)) == 1 and rhs[-1].kind == "close":
        found = _right_hand_split(toks)
        if found is not None and len(_render(found[0])) <= line_length:
            return None  # `x = a + f(...)`: the last bracket's opening fits, split there
    body = [Tok(rhs[0].text, False, rhs[0].kind), *rhs[1:]]
    return [*toks[: k + 1], Tok("(", True, "open")], body, [Tok(")", False, "close")]


def _assignment(toks: list[Tok]) -> int | None:
    """Index of the ``=`` (or of a leading ``return``) at bracket depth 0, or None."""
    if toks[0].text == "return" and len(toks) > 1:
        return 0
    depth = 0
    for k, t in enumerate(toks):
        depth += (t.kind == "open") - (t.kind == "close")
        if depth == 0 and t.text == "=" and t.kind == "op" and k + 1 < len(toks):
            return k
    return None


def _wrap_right_side(toks: list[Tok]):
    """``x = a + b`` (no bracket to split at) -> ``x = (`` / ``a + b`` / ``)``."""
    for k, t in enumerate(toks):
        if (t.text == "=" or (t.text == "return" and k == 0)) and k + 1 < len(toks):
            head = [*toks[: k + 1], Tok("(", True, "open")]
            body = [Tok(toks[k + 1].text, False, toks[k + 1].kind), *toks[k + 2 :]]
            return head, body, [Tok(")", False, "close")]
    return None


def _priorities(toks: list[Tok]) -> list[int]:
    """The delimiter priority of each token at bracket depth 0 (0: not a delimiter)."""
    depth, out, comprehension = 0, [], False
    for k, t in enumerate(toks):
        priority = 0
        if t.kind == "open":
            depth += 1
        elif t.kind == "close":
            depth -= 1
        elif depth == 0 and k > 0:
            if t.kind == "name" and t.text == "for":
                comprehension, priority = True, COMPREHENSION_PRIORITY
            elif t.kind == "name" and t.text == "if":
                priority = COMPREHENSION_PRIORITY if comprehension else TERNARY_PRIORITY
            elif t.kind == "name" and t.text == "else":
                priority = TERNARY_PRIORITY
            elif not comprehension:
                priority = _priority(toks, k)
        out.append(priority)
    return out


def _delimiter_split(toks: list[Tok]) -> list[list[Tok]] | None:
    """Split at the highest-priority delimiters at bracket depth 0 (None: there are none)."""
    found = [(p, k) for k, p in enumerate(_priorities(toks)) if p]
    if not found:
        return None
    top = max(p for p, _ in found)
    cuts = [k for p, k in found if p == top]
    parts, start = [], 0
    for k in cuts:
        end = k + 1 if top == PRIORITY[","] else k  # after a comma, before an operator
        if end > start:
            parts.append(toks[start:end])
        start = end
    if start < len(toks):
        parts.append(toks[start:])
    if top == PRIORITY[","] and toks[-1].kind != "comma":
        parts[-1] = [*parts[-1], Tok(",", False, "comma")]
    return [[Tok(p[0].text, False, p[0].kind), *p[1:]] for p in parts]


def _priority(toks: list[Tok], k: int) -> int:
    t, prev = toks[k], toks[k - 1]
    if t.kind == "comma":
        return PRIORITY[","]
    if t.kind == "name" and t.text in ("and", "or"):
        return PRIORITY[t.text]
    if t.text in COMPARATORS and t.kind in ("op", "name"):
        if t.text == "not" and not (k + 1 < len(toks) and toks[k + 1].text == "in"):
            return 0  # unary `not`
        if prev.text in ("is", "not"):
            return 0  # the second word of `is not` / `not in`
        return COMPARATOR_PRIORITY
    if t.kind == "op" and t.text in PRIORITY:
        binary = prev.kind in ("name", "close", "string", "other") and prev.text not in (
            "and",
            "or",
            "not",
            "in",
            "is",
            "return",
            "if",
            "else",
        )
        return PRIORITY[t.text] if binary else 0
    return 0
