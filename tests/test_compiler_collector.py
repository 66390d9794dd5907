"""symgrad.compile pauses Python's cyclic garbage collector while it works, and only then."""

from __future__ import annotations

import gc

import pytest
import sympy as sp

import symgrad
from symgrad import compiler
from symgrad import expr as E


def _compile():
    n = E.batch()
    X = E.matrix("X", n, 3)
    e = sp.Symbol("e")
    return symgrad.compile([X], {"y": E.elementwise(sp.Lambda(e, e**2), X)}, cache=False)


@pytest.fixture
def seen(monkeypatch):
    """gc.isenabled() as the compiler's simplification stage found it, per compile."""
    found = []
    simplify = compiler.simplify

    def spy(*args, **kwargs):
        found.append(gc.isenabled())
        return simplify(*args, **kwargs)

    monkeypatch.setattr(compiler, "simplify", spy)
    yield found
    gc.enable()


def test_the_collector_is_off_while_compiling_and_on_after(seen):
    assert gc.isenabled()
    _compile()
    assert seen == [False] and gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off(seen):
    gc.disable()
    _compile()
    assert seen == [False] and not gc.isenabled()


def test_a_failed_compile_turns_the_collector_on_again(seen, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("lowering failed")

    monkeypatch.setattr(compiler, "_lower", fail)
    with pytest.raises(RuntimeError, match="lowering failed"):
        _compile()
    assert gc.isenabled()
