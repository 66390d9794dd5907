"""One op, one row: every node class, IR statement and scalar function has a row in every table.

Node classes, statement classes and the scalar vocabulary are enumerated by
introspection, so an op that is added to one table and forgotten in another
fails here, with the op and the table named, and not at a user's call site.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import pytest
import sympy as sp

import symgrad
from codegen import ir
from codegen.llvm import compile_program as llvm_compile
from codegen.llvm import kernels
from codegen.llvm import scalar as llvm_scalar
from codegen.numpy import backend as numpy_backend
from codegen.numpy import scalar as numpy_scalar
from symgrad import core as E
from symgrad import formulas
from symgrad.core.nodes import _Node
from symgrad.diff import rules
from symgrad.lower import lowering
from symgrad.simplify import rebuild
from tests.codegen import test_llvm_statements as llvm_statements
from tests.diff import test_vjp_rules as vjp_cases

n = E.batch()
A = E.matrix("A", n, 3)


class Doubled(_Node):
    """A node type that is not in the tables (2 A, entry by entry)."""

    def __new__(cls, a):
        return sp.Basic.__new__(cls, a)

    @property
    def shape(self):
        return self.args[0].shape

    def _text(self, printer):
        return f"doubled({printer._print(self.args[0])})"


def _doubled_vjp(node, out, ct):
    return [E.scale(2, ct)]


def test_missing_vjp_rule_names_the_op_and_the_table(monkeypatch):
    monkeypatch.setitem(rebuild.REBUILD, Doubled, lambda node, kids: Doubled(*kids))
    with pytest.raises(NotImplementedError, match=r"no VJP rule for Doubled .*rules\.VJP_RULES"):
        symgrad.grad(E.total(Doubled(A)), A)


def test_missing_rebuild_row_names_the_op_and_the_table(monkeypatch):
    monkeypatch.setitem(rules.VJP_RULES, Doubled, _doubled_vjp)
    monkeypatch.setitem(rules.RULE_MATH, Doubled, "d(2 A)/dA: 2 G")
    with pytest.raises(NotImplementedError, match=r"no row for Doubled .*rebuild\.REBUILD"):
        symgrad.grad(E.total(Doubled(A)), A)


def test_missing_lowering_row_names_the_op_and_the_table(monkeypatch):
    """A node with a VJP rule and a rebuild row but no lowering: an error, not a RecursionError."""
    monkeypatch.setitem(rules.VJP_RULES, Doubled, _doubled_vjp)
    monkeypatch.setitem(rules.RULE_MATH, Doubled, "d(2 A)/dA: 2 G")
    monkeypatch.setitem(rebuild.REBUILD, Doubled, lambda node, kids: Doubled(*kids))
    loss = E.total(Doubled(A))
    symgrad.grad(loss, A)  # derivable
    with pytest.raises(
        NotImplementedError,
        match=r"no row for Doubled \(node doubled\(A\)\) in .*lowering\.STATEMENT",
    ):
        symgrad.compile([A], {"loss": loss})


# --------------------------------------------------------------------------
# Enumeration by introspection


def node_classes() -> list[type]:
    """symgrad's node classes (every concrete subclass of its node base) and the SymPy
    matrix classes its constructors build."""
    found, stack = [], [_Node, *E.SYMPY_NODES]  # and symgrad's subclasses of SymPy's (Hadamard)
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith("symgrad.") and not sub.__name__.startswith("_"):
                found.append(sub)
    return sorted(set(found), key=lambda c: c.__name__) + list(E.SYMPY_NODES)


def _names(classes) -> list[str]:
    return sorted(c if isinstance(c, str) else c.__name__ for c in classes)


def _base_has_row(rows: dict, key) -> bool:
    """A node table finds a class's row along its MRO (a Hadamard uses HadamardProduct's)."""
    return isinstance(key, type) and E.row_for(rows, key) is not None


def _check_rows(table: str, rows: dict, required, what: str, exact: bool) -> None:
    """Every ``required`` key has a row (and, if ``exact``, nothing else has one)."""
    missing = [k for k in required if k not in rows and not _base_has_row(rows, k)]
    assert not missing, f"{table} has no row for the {what} {_names(missing)}"
    extra = [k for k in rows if k not in required]
    assert not (exact and extra), f"{table} has rows for {_names(extra)}, which are not {what}"


NODE_TABLES = {
    "symgrad.diff.rules.VJP_RULES": rules.VJP_RULES,
    "symgrad.diff.rules.RULE_MATH": rules.RULE_MATH,
    "symgrad.simplify.rebuild.REBUILD": rebuild.REBUILD,
    "symgrad.lower.lowering.STATEMENT": lowering.STATEMENT,
    "symgrad.formulas.OP_COUNTS": formulas.OP_COUNTS,
}


@pytest.mark.parametrize("table", sorted(NODE_TABLES))
def test_every_node_class_has_a_row(table):
    _check_rows(table, NODE_TABLES[table], node_classes(), "node classes", exact=False)


def test_every_node_class_prints():
    """Each symgrad node class has its own text (str, LaTeX) and pretty form."""
    missing = [
        c
        for c in node_classes()
        if c.__module__.startswith("symgrad.")
        and not issubclass(c, E.SYMPY_NODES)  # Hadamard: its own str, SymPy's LaTeX and pretty
        and (c._text is _Node._text or "_pretty" not in dir(c))
    ]
    assert not missing, f"no printing (_text / _pretty) for the node classes {_names(missing)}"
    for case in sorted(vjp_cases.CASES):
        node = vjp_cases.CASES[case][0]()
        for show in (sp.sstr, sp.latex, sp.pretty):
            assert show(node), f"{show.__name__} of case {case} is empty"


def _case_graph_classes(cases) -> set[type]:
    return {type(node) for build, *_ in cases.values() for node in E.topological([build()])}


def test_every_node_class_has_an_op_case():
    """Each node class occurs in a case of the op table (finite differences, backend parity)."""
    covered = _case_graph_classes(vjp_cases.CASES)
    missing = [c for c in node_classes() if not any(issubclass(k, c) for k in covered)]
    assert not missing, (
        f"tests/diff/test_vjp_rules.py CASES has no case with the node classes {_names(missing)}"
    )


def test_constructors_build_only_enumerated_classes():
    """What the smart constructors build is an enumerated node class or a leaf: SYMPY_NODES is
    complete. Checked on every op case and on a whole training step's gradients."""
    model = symgrad.models.Sequential(
        [symgrad.layers.Dense(4, input_dim=3, activation="tanh"), symgrad.layers.Dense(2)]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    graphs = [*model.forward_formulas().values(), *model.gradient_formulas().values()]
    seen = _case_graph_classes(vjp_cases.CASES)
    seen |= {type(node) for node in E.topological(graphs)}
    known = set(node_classes())
    unknown = [c for c in seen if c not in known and not issubclass(c, rules.LEAVES)]
    assert not unknown, f"constructors build classes outside the node tables: {_names(unknown)}"


# --------------------------------------------------------------------------
# IR statements


STATEMENT_TABLES = {
    "codegen.ir.FORMAT": ir.FORMAT,
    "codegen.numpy.backend.STATEMENTS": numpy_backend.STATEMENTS,
    "codegen.llvm.kernels.LOWERINGS": kernels.LOWERINGS,
}


@pytest.mark.parametrize("table", sorted(STATEMENT_TABLES))
def test_every_statement_class_has_a_row(table):
    _check_rows(table, STATEMENT_TABLES[table], ir.STATEMENTS, "IR statements", exact=True)


@dataclass(frozen=True)
class Scatter:
    """An IR statement class that is in no table."""

    out: ir.Value
    a: ir.Value

    in_place: ClassVar[bool] = False
    aborts: ClassVar[bool] = False

    @property
    def reads(self) -> tuple[ir.Value, ...]:
        return (self.a,)


def test_missing_statement_rows_name_the_statement_and_the_table():
    a, out = ir.Value("A", (2, 3)), ir.Value("B", (2, 3))
    program = ir.Program("scatter", (a,), (), (Scatter(out, a),), (out,))
    with pytest.raises(NotImplementedError, match=r"codegen\.ir\.FORMAT has no row for .* Scatter"):
        ir.format_stmt(program.body[0])
    with pytest.raises(
        NotImplementedError, match=r"Scatter in codegen\.numpy\.backend\.STATEMENTS"
    ):
        numpy_backend.compile_program(program)
    with pytest.raises(NotImplementedError, match=r"Scatter \(no row in codegen\.llvm\.kernels"):
        llvm_compile(program, cache=False)


def test_every_statement_class_states_its_buffer_rules():
    for c in ir.STATEMENTS:
        for rule in ("in_place", "aborts"):
            assert isinstance(getattr(c, rule, None), bool), f"{c.__name__}.{rule} is not set"


def test_every_statement_class_has_a_parity_case():
    cases = llvm_statements.STATEMENT_CASES
    missing = [c for c in ir.STATEMENTS if c not in cases]
    assert not missing, (
        f"tests/codegen/test_llvm_statements.py STATEMENT_CASES has no case for {_names(missing)}"
    )
    for c, test in cases.items():
        assert "compare_backends" in inspect.getsource(test), (
            f"the case of {c.__name__} ({test.__name__}) does not compare the backends"
        )


# --------------------------------------------------------------------------
# Scalar vocabulary


SCALAR_TABLES = {  # table -> the part of the vocabulary it must cover
    "codegen.numpy.scalar.PY": (numpy_scalar.PY, ir.SCALAR_VOCABULARY),
    # atoms never become a ufunc call: an argument is an array, the rest a Python scalar
    "codegen.numpy.scalar.LOWER": (numpy_scalar.LOWER, ir.SCALAR_FUNCTIONS),
    "codegen.llvm.scalar.RULES": (llvm_scalar.RULES, ir.SCALAR_VOCABULARY),
}


@pytest.mark.parametrize("table", sorted(SCALAR_TABLES))
def test_every_scalar_function_has_a_row(table):
    rows, vocabulary = SCALAR_TABLES[table]
    _check_rows(table, rows, vocabulary, "scalar vocabulary entries (codegen.ir)", exact=True)


def _entry_of(e: sp.Basic):
    """The vocabulary entry a scalar node instantiates (by MRO, or by name)."""
    name = type(e).__name__
    if name in ir.NAMED_FUNCTIONS:
        return name
    return next((c for c in type(e).__mro__ if c in ir.SCALAR_VOCABULARY), None)


def test_every_scalar_function_has_a_parity_case():
    bodies = [c[1] for c in llvm_statements.SCALAR_CASES + llvm_statements.BOOLEAN_CASES]
    covered = {_entry_of(e) for body in bodies for e in sp.preorder_traversal(body)}
    missing = [k for k in ir.SCALAR_VOCABULARY if k not in covered]
    assert not missing, (
        f"tests/codegen/test_llvm_statements.py has no scalar case with {_names(missing)}"
    )
