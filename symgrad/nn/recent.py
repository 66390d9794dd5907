"""Bounded tables of things made once and reused: compiled programs, recorded graphs.

A training loop asks for the same program or graph on every step; a long session
that builds many models must not keep every one of them alive.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any


class Recent:
    """``get(key, make)`` makes a value once per key and keeps the ``limit`` most recently used."""

    def __init__(self, limit: int):
        self.limit = limit
        self._table: OrderedDict = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value kept for ``key``; on a miss ``make()``'s, and the least recently used
        entry beyond ``limit`` is dropped."""
        try:
            self._table.move_to_end(key)
            return self._table[key]
        except KeyError:
            value = self._table[key] = make()
            while len(self._table) > self.limit:
                self._table.popitem(last=False)
            return value

    def keys(self) -> list:
        """Keys from the least to the most recently used."""
        return list(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator:
        return iter(self._table)

    def clear(self) -> None:
        self._table.clear()
