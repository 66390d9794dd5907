"""codegen.serial: IR programs and SymPy expressions as JSON that decodes without running code.

The disk cache keeps lowered programs in this form, and hashes programs through
it, instead of pickle: a pickle names any callable for the loader to call,
while this decoder only builds

- JSON scalars (None, bool, int, float, str), lists, tuples and dicts;
- dataclasses from the codec's table (``records``), called with their fields;
- SymPy objects: a few atom kinds (symbols, names, numbers, singletons) rebuilt
  from their parts, and every other node as ``cls(*args)`` where ``cls`` is a
  ``sympy.Basic`` subclass already imported from one of the codec's packages
  and every argument is itself a decoded SymPy object.

So no text read from an entry reaches ``sympify`` (which parses strings with
``eval``): strings become only dataclass fields, ``Symbol`` and ``Str`` names.

    >>> codec = Codec(records=[Value])                          # doctest: +SKIP
    >>> codec.loads(codec.dumps(value)) == value                # doctest: +SKIP

Layout: ``{"format": 1, "nodes": [...], "root": value}``. SymPy objects are
written once each (graphs share subexpressions) as rows of ``nodes``, children
before parents, and values refer to them as ``{"ref": index}``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable

import sympy as sp
from sympy.core.singleton import Singleton
from sympy.core.symbol import Str

FORMAT = 1

SYMPY_PACKAGES = (
    "sympy.core.",
    "sympy.functions.",
    "sympy.logic.",
    "sympy.matrices.expressions.",
    "sympy.codegen.cfunctions",  # log1p, expm1
)
"""Where the SymPy classes of IR bodies, shapes and matrix graphs come from (module prefixes)."""


def records_of(*modules) -> list[type]:
    """The dataclasses defined in ``modules`` (a codec's ``records``)."""
    return [
        c
        for m in modules
        for c in vars(m).values()
        if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == m.__name__
    ]


class Unsupported(TypeError):
    """A value the codec cannot write (an unknown class, a set, a user's function class)."""


class Codec:
    """Writes and reads values made of JSON scalars, containers, ``records`` and SymPy objects."""

    def __init__(self, records: Iterable[type] = (), packages: Iterable[str] = SYMPY_PACKAGES):
        self.records = {_qualified(c): c for c in records}
        self.fields = {
            c: frozenset(f.name for f in dataclasses.fields(c) if f.init) for c in records
        }
        self.packages = tuple(packages)
        self._classes: dict[str, type] = {}  # names already resolved by sympy_class

    # ------------------------------------------------------------------ writing

    def dumps(self, value) -> bytes:
        """Deterministic bytes for ``value`` (same value, same bytes); raises ``Unsupported``."""
        writer = _Writer(self)
        root = writer.value(value)
        doc = {"format": FORMAT, "nodes": writer.nodes, "root": root}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()

    # ------------------------------------------------------------------ reading

    def loads(self, data: bytes):
        """The value written by :meth:`dumps`; ``ValueError`` for anything else."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a codegen.serial document of this format")
        nodes: list = []
        for row in _expect(doc.get("nodes"), list):
            nodes.append(self._node(_expect(row, list), nodes))
        return self._value(doc.get("root"), nodes)

    def _value(self, v, nodes):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self._value(x, nodes) for x in v]
        kind, body = _single(_expect(v, dict))
        if kind == "ref":
            return _ref(body, nodes)
        if kind == "tuple":
            return tuple(self._value(x, nodes) for x in _expect(body, list))
        if kind == "dict":
            pairs = [_expect(p, list) for p in _expect(body, list)]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("a dict item is not a [key, value] pair")
            return {self._value(k, nodes): self._value(x, nodes) for k, x in pairs}
        if kind == "record":
            return self._record(_expect(body, list), nodes)
        raise ValueError(f"unknown value kind {kind!r}")

    def _record(self, body: list, nodes: list):
        name, fields = body
        cls = self.records.get(_expect(name, str))
        if cls is None:
            raise ValueError(f"unknown record {name!r}")
        fields = _expect(fields, dict)
        if not self.fields[cls].issuperset(fields):
            raise ValueError(f"unknown fields of {name}: {sorted(set(fields) - self.fields[cls])}")
        return cls(**{k: self._value(x, nodes) for k, x in fields.items()})

    def _node(self, row: list, nodes: list):
        if not row:
            raise ValueError("empty node row")
        tag, *rest = row
        if tag == "record":
            return self._record(rest, nodes)
        build = _READERS.get(tag)
        if build is None:
            raise ValueError(f"unknown node kind {tag!r}")
        return build(self, rest, nodes)

    def sympy_class(self, name: str) -> type:
        """The already imported ``sympy.Basic`` subclass called ``module:qualname``, or ValueError."""
        found = self._classes.get(name)
        if found is None:
            found = self._classes[name] = self._find_class(name)
        return found

    def _find_class(self, name: str) -> type:
        module, _, qualname = _expect(name, str).partition(":")
        parts = qualname.split(".")
        if not module.startswith(self.packages) or any(not p or p.startswith("__") for p in parts):
            raise ValueError(f"class {name!r} is not in {self.packages}")
        obj = sys.modules.get(module)
        for p in parts:
            obj = getattr(obj, p, None)
        if not (isinstance(obj, type) and issubclass(obj, sp.Basic)) or _qualified(obj) != name:
            raise ValueError(f"class {name!r} is not a SymPy class of {self.packages}")
        return obj


class _Writer:
    def __init__(self, codec: Codec):
        self.codec = codec
        self.nodes: list[list] = []
        self.index: dict = {}  # SymPy object or hashable record -> its row

    def value(self, v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, sp.Basic):
            return {"ref": self.basic(v)}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, tuple):
            return {"tuple": [self.value(x) for x in v]}
        if isinstance(v, dict):
            return {"dict": [[self.value(k), self.value(x)] for k, x in v.items()]}
        if dataclasses.is_dataclass(v) and _qualified(type(v)) in self.codec.records:
            return self.record(v)
        raise Unsupported(f"cannot serialize {type(v).__name__}: {v!r:.80}")

    def record(self, v):
        """A dataclass: a shared row when it is hashable (IR values recur), else inline."""
        if v.__hash__ is not None and v in self.index:
            return {"ref": self.index[v]}
        fields = {f.name: self.value(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        row = [_qualified(type(v)), fields]
        if v.__hash__ is None:
            return {"record": row}
        self.nodes.append(["record", *row])
        self.index[v] = len(self.nodes) - 1
        return {"ref": self.index[v]}

    def basic(self, root: sp.Basic) -> int:
        """Index of ``root``'s row, writing the rows of its subexpressions first (no recursion)."""
        stack = [root]
        while stack:
            e = stack[-1]
            if e in self.index:
                stack.pop()
                continue
            pending = [a for a in e.args if isinstance(a, sp.Basic) and a not in self.index]
            if pending and not _is_leaf(e):
                stack.extend(pending)
                continue
            stack.pop()
            self.nodes.append(self.row(e))
            self.index[e] = len(self.nodes) - 1
        return self.index[root]

    def row(self, e: sp.Basic) -> list:
        cls = type(e)
        name = _qualified(cls)
        writer = _LEAF_WRITERS.get(cls)
        if writer is not None:
            return writer(e)
        _check_class(self.codec, cls)
        if isinstance(cls, Singleton):
            return ["singleton", name]
        if not e.args or not all(isinstance(a, sp.Basic) for a in e.args):
            raise Unsupported(f"cannot serialize the SymPy atom {name}: {e!r:.80}")
        return ["basic", name, [self.index[a] for a in e.args]]


def _check_class(codec: Codec, cls: type) -> None:
    try:
        codec.sympy_class(_qualified(cls))
    except ValueError as err:
        raise Unsupported(str(err)) from None


# --------------------------------------------------------------------------
# Leaves: written from their parts, rebuilt without calling a constructor on text


def _symbol_row(e: sp.Symbol) -> list:
    assumptions = dict(sorted(e._assumptions_orig.items()))
    index = e.dummy_index if isinstance(e, sp.Dummy) else None
    return ["symbol", type(e).__name__, e.name, assumptions, index]


def _float_row(e: sp.Float) -> list:
    sign, man, exp, bc = e._mpf_
    return ["float", int(sign), int(man), int(exp), int(bc), int(e._prec)]


_LEAF_WRITERS = {
    sp.Symbol: _symbol_row,
    sp.Dummy: _symbol_row,
    Str: lambda e: ["str", e.name],
    sp.Integer: lambda e: ["integer", int(e.p)],
    sp.Rational: lambda e: ["rational", int(e.p), int(e.q)],
    sp.Float: _float_row,
}


def _is_leaf(e: sp.Basic) -> bool:
    return type(e) in _LEAF_WRITERS or isinstance(type(e), Singleton)


def _read_symbol(codec, rest, nodes):
    kind, name, assumptions, index = rest
    _expect(name, str)
    facts = _expect(assumptions, dict)
    if not all(isinstance(v, bool) for v in facts.values()):
        raise ValueError("symbol assumptions must be true or false")
    if kind == "Symbol" and index is None:
        return sp.Symbol(name, **facts)
    if kind == "Dummy" and _is_int(index):
        return sp.Dummy(name, dummy_index=index, **facts)
    raise ValueError(f"unknown symbol kind {kind!r}")


def _read_float(codec, rest, nodes):
    sign, man, exp, bc, prec = rest
    if not all(_is_int(x) for x in rest) or sign not in (0, 1) or not 0 < prec <= 4096:
        raise ValueError(f"not a float: {rest!r:.80}")
    return sp.Float._new((sign, man, exp, bc), prec)


def _read_integer(codec, rest, nodes):
    (p,) = rest
    if not _is_int(p):
        raise ValueError(f"not an integer: {p!r:.80}")
    return sp.Integer(p)


def _read_rational(codec, rest, nodes):
    p, q = rest
    if not (_is_int(p) and _is_int(q) and q > 0):
        raise ValueError(f"not a rational: {rest!r:.80}")
    return sp.Rational(p, q)


def _read_str(codec, rest, nodes):
    (name,) = rest
    return Str(_expect(name, str))


def _read_singleton(codec, rest, nodes):
    (name,) = rest
    cls = codec.sympy_class(name)
    if not isinstance(cls, Singleton):
        raise ValueError(f"{name} is not a SymPy singleton")
    return cls()


def _read_basic(codec, rest, nodes):
    name, refs = rest
    cls = codec.sympy_class(name)
    if isinstance(cls, Singleton) or cls in _LEAF_WRITERS:
        raise ValueError(f"{name} is not built from arguments")
    args = [_ref(r, nodes) for r in _expect(refs, list)]
    if not all(isinstance(a, sp.Basic) for a in args):
        raise ValueError(f"an argument of {name} is not a SymPy object")
    return cls(*args)


_READERS = {
    "symbol": _read_symbol,
    "float": _read_float,
    "integer": _read_integer,
    "rational": _read_rational,
    "str": _read_str,
    "singleton": _read_singleton,
    "basic": _read_basic,
}


# --------------------------------------------------------------------------
# Small checks


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _expect(v, kind: type):
    if not isinstance(v, kind):
        raise ValueError(f"expected a {kind.__name__}; found {type(v).__name__}")
    return v


def _single(d: dict):
    if len(d) != 1:
        raise ValueError(f"expected one key; found {sorted(d)!r:.80}")
    return next(iter(d.items()))


def _ref(r, nodes: list):
    """An earlier row (rows refer only backwards, so a document has no cycles)."""
    if not (_is_int(r) and 0 <= r < len(nodes)):
        raise ValueError(f"bad node reference {r!r:.80}")
    return nodes[r]
