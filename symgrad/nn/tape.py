"""symgrad.nn.tape: Keras's ``GradientTape``, with gradients derived symbolically.

Inside ``with GradientTape() as tape:`` what runs on tape tensors is recorded as
a matrix graph, not as numbers: a model call (``model(x)``), a loss function of
:mod:`symgrad.losses`, the operators ``+ - * / ** @`` and ``.T``, and the ops of
:mod:`symgrad.ops`.  The arrays it reads are the graph's leaves: a model's input
is ``X`` (its rows the batch symbol ``n``), a loss's targets ``Y``, any other
array ``C``, and a model's weights their own symbols (``dense_kernel``...), read
once, when first used.  Example::

    >>> with symgrad.GradientTape() as tape:
    ...     probabilities = model(x)
    ...     loss = symgrad.losses.categorical_crossentropy(y, probabilities)
    >>> grads = tape.gradient(loss, model.trainable_weights)  # arrays, Keras shapes

``tape.gradient(target, sources)`` derives the gradient of the target (summed
when it is not a scalar, as TensorFlow does) with :func:`symgrad.formulas.gradients`
-- the fusions of ``fit`` included (softmax + cross-entropy gives ``(P - Y)/n``) --
and compiles it with the target's value into one program.  The program is kept
under the graph itself: the same structure (any batch size), dtype and backend
runs the same compiled function, so a training loop compiles once.
``tape.gradient_formulas(target, sources)`` and ``tape.explain(...)`` show the
formulas behind it.  A source may also be an intermediate tensor (a layer's output,
``layer(x)`` being recorded too, or what ops computed): it is replaced by a symbol in
the target's graph for its own derivation, then put back (:meth:`GradientTape._derived`).

As in Keras: a non-persistent tape computes one gradient (a second call raises
``RuntimeError``); trainable variables read inside the tape are watched, arrays
and other variables only through ``tape.watch``; a source the target does not
depend on, or that is not watched, gets ``None``.  A tensor's value
(``numpy()``, ``float()``) is computed when asked for, by a compiled program of
its own (the target's comes with its gradient).  Python numbers in the graph are
constants of the program: a new number is a new program.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr, MatrixSymbol

from symgrad import compiler, formulas
from symgrad import core as E
from symgrad.nn.layers import Names, declared_shape, snake_case
from symgrad.nn.recent import Recent
from symgrad.nn.validation import width

BATCH = E.batch()
_PROGRAMS = Recent(256)  # compiled tape programs
_GRAPHS = Recent(4096)  # recorded ops: (op, operands) -> graph, so a step in a loop
# rebuilds no SymPy expression
_RECORDING: list[GradientTape] = []  # the tapes of the enclosing ``with`` blocks


def recording() -> GradientTape | None:
    """The innermost tape whose ``with`` block is running, else None."""
    return _RECORDING[-1] if _RECORDING else None


def records(value) -> bool:
    """Whether a model call on ``value`` is recorded: a tape tensor, or an array while a tape
    records (symbolic tensors of the functional API are not: a model can be built in a tape);
    for several inputs, a list or dict of them."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return bool(value) and all(records(v) for v in value)
    return isinstance(value, Tensor) or (bool(_RECORDING) and isinstance(value, np.ndarray))


def arrays(value) -> bool:
    """Whether a layer call on ``value`` outside a tape runs eagerly: an array, or a list or
    tuple of arrays (a merging layer's inputs)."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(v, np.ndarray) for v in value)
    return isinstance(value, np.ndarray)


def leaves(expr: MatrixExpr) -> tuple[MatrixSymbol, ...]:
    """The leaves a graph reads (first-seen order), remembered for the graph."""
    return _GRAPHS.get(("leaves", expr), lambda: tuple(E.leaves([expr])))


def nodes(expr: MatrixExpr) -> frozenset:
    """Every node of a graph (its leaves and intermediates), remembered for the graph."""
    return _GRAPHS.get(("nodes", expr), lambda: frozenset(E.topological([expr])))


def record(op, build: Callable[..., MatrixExpr], *operands: MatrixExpr) -> MatrixExpr:
    """``build(*operands)``, remembered under ``op`` and the operands' graphs."""
    return _GRAPHS.get((op, operands), lambda: build(*operands))


# --------------------------------------------------------------------------
# Tensors


class Tensor:
    """A value recorded on a tape: its graph ``expr`` over the tape's leaves, its Keras shape.

    A 0-d tensor is a (1, 1) matrix, a 1-d tensor a column (per-sample values, a
    loss) or a row (a bias), a 2-d one a matrix.  ``numpy()`` computes the value.
    """

    __array_priority__ = 1000  # ndarray <op> Tensor calls Tensor's reflected operator

    def __init__(self, tape: GradientTape, expr: MatrixExpr, shape: tuple[int, ...]):
        self.tape, self.expr, self.shape = tape, expr, tuple(shape)
        self._value: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.tape.dtype()

    def numpy(self) -> np.ndarray:
        """The value, in ``shape``: computed on first use by a compiled program."""
        if self._value is None:
            self._value = self.tape.evaluate(self.expr)
        return self._value.reshape(self.shape).copy()

    def __array__(self, dtype=None, copy=None):
        value = self.numpy()
        return value if dtype is None else value.astype(dtype)

    def __float__(self) -> float:
        if int(np.prod(self.shape)) != 1:
            raise TypeError(
                f"Only a tensor with one entry converts to float. Received: shape {self.shape}"
            )
        return float(self.numpy().reshape(()))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<symgrad.Tensor shape={self.shape} expr={E.sstr(self.expr)}>"

    # -- operators (NumPy broadcasting; see symgrad.nn.ops)
    def __add__(self, other):
        return binary("add", self, other)

    def __radd__(self, other):
        return binary("add", other, self)

    def __sub__(self, other):
        return binary("subtract", self, other)

    def __rsub__(self, other):
        return binary("subtract", other, self)

    def __mul__(self, other):
        return binary("multiply", self, other)

    def __rmul__(self, other):
        return binary("multiply", other, self)

    def __truediv__(self, other):
        return binary("divide", self, other)

    def __rtruediv__(self, other):
        return binary("divide", other, self)

    def __pow__(self, other):
        return binary("power", self, other)

    def __neg__(self):
        return self.tape.tensor(record("negative", lambda a: E.scale(-1, a), self.expr), self.shape)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    @property
    def T(self) -> Tensor:  # noqa: N802 - NumPy's name
        return self.tape.tensor(record("transpose", E.transpose, self.expr), self.shape[::-1])


def is_orientation_column(t: Tensor) -> bool:
    return t.ndim == 1 and t.expr.shape[1] == 1


_a, _b = sp.symbols("a b", real=True)
BINARY: dict[str, Callable[[sp.Expr, sp.Expr], sp.Expr]] = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
    "power": lambda a, b: a**b,
}
"""The elementwise binary operators, on scalars; NumPy's names."""


def _matrix_of(expr: MatrixExpr, rows, cols) -> MatrixExpr:
    """``expr`` broadcast to (rows, cols): a (1, 1), a row (1, cols) or a column (rows, 1)."""
    r, c = expr.shape
    if (r, c) == (rows, cols):
        return expr
    if (r, c) == (1, 1):
        return E.fill(expr, rows, cols)
    if r == 1 and c == cols:
        return E.broadcast_rows(expr, rows)
    if c == 1 and r == rows:
        return E.broadcast_cols(expr, cols)
    raise ValueError(f"cannot broadcast shape {(r, c)} to {(rows, cols)}")  # pragma: no cover


def binary(op: str, x, y) -> Tensor:
    """``x <op> y`` entry by entry with NumPy's broadcasting; a Python number is a constant."""
    tape = _tape_of(x, y)
    numbers = {i: v for i, v in enumerate((x, y)) if _is_number(v)}
    if len(numbers) == 2:  # pragma: no cover - Python evaluates number <op> number itself
        raise TypeError(f"{op} of two numbers is not a tape operation")
    tensors = [tape.as_tensor(v, like=_other(v, x, y)) for v in (x, y) if not _is_number(v)]
    shape = _broadcast_shape(op, *(t.shape for t in tensors))
    rows, cols = _result_matrix(shape, tensors)
    operands = tuple(_matrix_of(_oriented(t, shape), rows, cols) for t in tensors)
    constants = tuple(sorted((i, sp.sympify(v)) for i, v in numbers.items()))

    def build(*ms):
        args = list(ms)
        for i, c in constants:
            args.insert(i, c)
        if op in ("add", "subtract") and not constants:
            return E.add(args[0], E.scale(-1, args[1])) if op == "subtract" else E.add(*args)
        if op == "multiply" and not constants:
            return E.hadamard(*args)
        variables = [v for v, a in zip((_a, _b), args) if isinstance(a, MatrixExpr)]
        body = BINARY[op](*(v if isinstance(a, MatrixExpr) else a for v, a in zip((_a, _b), args)))
        return E.elementwise(sp.Lambda(tuple(variables), body), *ms)

    return tape.tensor(record((op, constants), build, *operands), shape)


def _other(v, x, y):
    return y if v is x else x


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def _broadcast_shape(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(
            f"{op}: operands could not be broadcast together. Received: shapes "
            f"{' and '.join(str(s) for s in shapes)}"
        ) from None


def _result_matrix(shape, tensors: list[Tensor]):
    """The matrix (rows, cols) of a broadcast result, with the batch symbol where an operand has it."""
    if len(shape) == 2:
        rows = next(
            (t.expr.shape[0] for t in tensors if t.ndim == 2 and t.shape[0] == shape[0]), shape[0]
        )
        cols = next(
            (t.expr.shape[1] for t in tensors if t.ndim == 2 and t.shape[1] == shape[1]), shape[1]
        )
        return rows, cols
    if len(shape) == 1:
        vectors = [t for t in tensors if t.ndim == 1 and t.shape[0] == shape[0]]
        first = vectors[0] if vectors else tensors[0]
        if is_orientation_column(first):
            return first.expr.shape[0], 1
        return 1, (first.expr.shape[1] if vectors else shape[0])
    return 1, 1


def _oriented(t: Tensor, shape) -> MatrixExpr:
    """``t``'s graph laid out for a result of Keras ``shape`` (a 1-d operand of a 2-d result is a row)."""
    if t.ndim == 1 and len(shape) == 2 and is_orientation_column(t) and t.shape[0] != 1:
        return record("transpose", E.transpose, t.expr)
    return t.expr


def matmul(x, y) -> Tensor:
    """``x @ y`` of two 2-d operands (tensors or arrays)."""
    tape = _tape_of(x, y)
    a, b = tape.as_tensor(x, like=y), tape.as_tensor(y, like=x)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(
            f"matmul takes two matrices (m, k) @ (k, p). Received: shapes {a.shape} and {b.shape}"
        )
    return tape.tensor(record("matmul", E.matmul, a.expr, b.expr), (a.shape[0], b.shape[1]))


def _tape_of(*values) -> GradientTape:
    tapes = {id(v.tape): v.tape for v in values if isinstance(v, Tensor)}
    if len(tapes) > 1:
        raise ValueError("Tensors of two different GradientTapes cannot be combined")
    if tapes:
        return next(iter(tapes.values()))
    tape = recording()
    if tape is None:
        raise TypeError(
            "symgrad ops take a tape tensor, or run inside `with symgrad.GradientTape():`"
        )
    return tape


# --------------------------------------------------------------------------
# The tape


class GradientTape:
    """Records what runs inside its ``with`` block; ``gradient`` derives and runs its gradient.

    ``persistent=True`` allows several ``gradient`` calls; ``watch_accessed_variables=False``
    watches only what ``watch`` names.  ``backend`` (``"numpy"``, ``"llvm"``): the
    backend of its programs; by default that of the first compiled model it calls,
    else NumPy.
    """

    def __init__(
        self,
        persistent: bool = False,
        watch_accessed_variables: bool = True,
        backend: str | None = None,
    ):
        if backend is not None:
            compiler.backend(backend)
        self.persistent = bool(persistent)
        self.watch_accessed_variables = bool(watch_accessed_variables)
        self.backend = backend
        self.leaves: dict[MatrixSymbol, np.ndarray] = {}  # symbol -> value (matrix layout)
        self._sources: dict[int, tuple[object, MatrixSymbol]] = {}  # id of array/variable -> leaf
        self._watched: set[MatrixSymbol] = set()
        self._variable_dtype: np.dtype | None = None
        self._batch: int | None = None  # the number of rows the batch symbol n stands for
        self._names: set[str] = set()
        self.outputs: list[MatrixExpr] = []  # models' outputs: their names are kept in formulas
        self._step: int | None = None  # t of the training graphs recorded (dropout masks)
        self._layer_names = Names()  # the numbering of layers called on the tape
        self._used = False

    def __enter__(self) -> GradientTape:
        _RECORDING.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _RECORDING.remove(self)

    # -- leaves
    def watch(self, value) -> None:
        """Watch an array or a variable (or a nested list of them): gradients may be taken for it."""
        if isinstance(value, (list, tuple)):
            for v in value:
                self.watch(v)
            return
        if isinstance(value, Tensor):
            return  # an intermediate: gradients are taken for it as it is
        symbol = self.variable(value) if _is_variable(value) else self._constant(value, "C")
        self._watched.add(symbol)

    def variable(self, var) -> MatrixSymbol:
        """The leaf of a weight: its symbol, its value read now (trainable ones are watched)."""
        found = self._sources.get(id(var))
        if found is not None:
            return found[1]
        if var.symbol in self.leaves:  # two weights of one name would be one leaf
            other = next(v for v, sym in self._sources.values() if sym == var.symbol)
            raise ValueError(
                f"Two different variables named {var.path} were read on one GradientTape "
                f"(of layers {_owner(other)} and {_owner(var)}): give the layers distinct "
                "names (name=...)"
            )
        if var.value is None and hasattr(var, "_require_value"):
            var._require_value()  # a built model's weights get their initial values
        if var.value is None:
            raise ValueError(f"Variable {var.path} has no value yet: build its model first")
        self.leaves[var.symbol] = var.value.copy()
        self._sources[id(var)] = (var, var.symbol)
        self._names.add(var.symbol.name)
        self._variable_dtype = self._variable_dtype or var.value.dtype
        if self.watch_accessed_variables and getattr(var, "trainable", True):
            self._watched.add(var.symbol)
        return var.symbol

    def _constant(self, value, base: str, batch: bool = False, kind: Callable = E.matrix):
        """The leaf of an array (the same array object is one leaf); ``batch``: its rows are ``n``."""
        found = self._sources.get(id(value))
        if found is not None:
            return found[1]
        array = _as_matrix(value)
        rows, cols = array.shape
        if batch and self._batch in (None, rows):
            self._batch, rows = rows, BATCH
        symbol = kind(E.fresh_name(base, self._names, first=2), rows, cols)
        self._names.add(symbol.name)
        self.leaves[symbol] = array
        self._sources[id(value)] = (value, symbol)
        return symbol

    def as_tensor(
        self, value, like: object = None, base: str = "C", kind=E.matrix, batch: bool = False
    ) -> Tensor:
        """``value`` as a tensor of this tape; an array whose rows are the batch's (as ``like``'s)
        becomes a leaf with ``n`` rows, so another batch size runs the same program."""
        if isinstance(value, Tensor):
            if value.tape is not self:
                raise ValueError("Tensors of two different GradientTapes cannot be combined")
            return value
        if _is_variable(value):
            return self.tensor(self.variable(value), tuple(value.shape))
        shape = np.shape(value)
        batch = batch or (
            isinstance(like, Tensor)
            and len(shape) >= 1
            and like.ndim >= 1
            and like.expr.shape[0] == BATCH
            and shape[0] == self._batch
        )
        return self.tensor(self._constant(value, base, batch=batch, kind=kind), shape)

    def tensor(self, expr: MatrixExpr, shape) -> Tensor:
        return Tensor(self, expr, shape)

    def dtype(self) -> np.dtype:
        """The programs' dtype: the weights' if a variable was read, else float32 when every
        array is float32, else float64 (arrays are converted to it, as Keras casts inputs)."""
        if self._variable_dtype is not None:
            return np.dtype(self._variable_dtype)
        kinds = {a.dtype for a in self.leaves.values()}
        return np.dtype("float32") if kinds == {np.dtype("float32")} else np.dtype("float64")

    def _backend(self, inputs=()) -> str:
        """The backend of a program reading ``inputs``: NumPy when none has the batch's rows
        (such programs are small: updates and sums of watched arrays)."""
        if not any(BATCH in s.shape for s in inputs):
            return "numpy"
        return self.backend or "numpy"

    def _arguments(self, inputs, dtype, given: dict | None = None) -> list[np.ndarray]:
        given = given or {}
        return [np.ascontiguousarray(given.get(s, self.leaves[s]), dtype=dtype) for s in inputs]

    def _scalars(self, fn) -> list[float]:
        """The scalars of a program: the step number ``t`` of a model called with
        ``training=True`` (its dropout masks are those of that step of ``fit``)."""
        from symgrad.nn.optimizers import STEP  # it imports this module

        values = []
        for s in fn.scalars:
            if s.name != STEP.name or self._step is None:  # pragma: no cover - the graphs' make
                raise ValueError(f"a tape program has a scalar {s.name!r} nothing gives a value")
            values.append(float(self._step))
        return values

    # -- state of layers (batch normalization's moving statistics)
    def update_states(self, states: dict, holders, operands) -> None:
        """A training call's state updates, applied now, as Keras's forward call does:
        ``states`` maps a state's symbol to its new value in the ``holders`` that stand
        for the call's inputs (``moving_mean * momentum + batch mean * (1 - momentum)``);
        they are computed on ``operands`` by one program (kept by structure) from the
        variables' current values (a second call in the tape starts from the first's
        result) and written all at once, none if one is not finite."""
        symbols = tuple(states)

        def build(*a):  # every new value side by side, on the call's inputs
            given = {**dict(zip(holders, a)), BATCH: a[0].shape[0]}
            return E.concat(*(states[s].xreplace(given) for s in symbols))

        key = ("states", symbols, tuple(states.values()), tuple(holders))
        news = record(key, build, *operands)
        variables = {sym: var for var, sym in self._sources.values() if _is_variable(var)}
        current = {s: variables[s].value for s in symbols}
        value = self.evaluate(news, given=current)
        if not np.all(np.isfinite(value)):
            raise FloatingPointError(
                "GradientTape: the moving statistics of this training call are not finite "
                f"({', '.join(variables[s].path for s in symbols)}); none was changed"
            )
        start = 0
        for s in symbols:
            width = int(s.shape[1])
            variables[s].value[...] = value[:, start : start + width]
            start += width

    # -- values and gradients
    def evaluate(self, expr: MatrixExpr, given: dict | None = None) -> np.ndarray:
        """The value of a graph on this tape's leaves (a compiled program, kept by structure);
        ``given``: values of some leaves instead of the tape's."""
        dtype = self.dtype()
        inputs = leaves(expr)
        backend = self._backend(inputs)
        key = ("value", expr, inputs, dtype.name, backend)

        def make():
            return compiler.compile(
                inputs,
                {"value": expr},
                backend=backend,
                dtype=dtype.name,
                name="tape_value",
            )

        fn = _PROGRAMS.get(key, make)
        with np.errstate(all="ignore"):
            return fn(*self._arguments(inputs, dtype, given), *self._scalars(fn))[0]

    def gradient(self, target, sources, unconnected_gradients: str = "none"):
        """d target / d source for each source, as arrays shaped like the sources (Keras shapes).

        ``sources``: a variable, an array given to ``watch``, a tape tensor (an
        intermediate), or a nested list / tuple / dict of them (the result has the
        same structure).  A source the target does not depend on, or one not watched,
        gets ``None`` (``unconnected_gradients="zero"``: zeros, as in TensorFlow).
        """
        if unconnected_gradients not in ("none", "zero"):
            raise ValueError(
                "unconnected_gradients must be 'none' or 'zero'. "
                f"Received: unconnected_gradients={unconnected_gradients!r}"
            )
        self._take()
        loss, flat, symbols, rebuild = self._problem(target, sources)
        wrt = _unique(s for s in symbols if s is not None)
        program = self._gradient_program(loss, wrt)
        with np.errstate(all="ignore"):
            outs = program(*self._arguments(program.inputs, self.dtype()), *self._scalars(program))
        if loss is target.expr:  # a scalar target: its value came with the gradient
            target._value = outs[0]
        found = dict(zip(wrt, outs[1:]))
        grads = [
            self._shaped(s, found.get(sym), unconnected_gradients) for s, sym in zip(flat, symbols)
        ]
        return rebuild(grads)

    def gradient_formulas(self, target, sources) -> dict[str, MatrixExpr]:
        """The simplified formula of each connected source's gradient, by name: a leaf's
        symbol, an intermediate's name (``A1``, ``P``; ``T`` for an unnamed one). A leaf's
        is shown as ``model.gradient_formulas()`` shows it (a normalization's gradient by
        its rule: :func:`symgrad.formulas.readable_gradients`)."""
        loss, _, symbols, _ = self._problem(target, sources)
        wrt = _unique(s for s in symbols if s is not None)
        _, grads = self._derived(loss, wrt)
        leaf = [w for w in wrt if isinstance(w, MatrixSymbol)]
        shown = formulas.readable_gradients(loss, leaf, context=self.outputs) if leaf else {}
        grads = [shown.get(w, g) for w, g in zip(wrt, grads)]
        return dict(zip(self._source_names(loss, wrt), grads))

    def explain(self, target, sources) -> str:
        """The chain rule behind ``gradient``, step by step (:func:`symgrad.explain`); for an
        intermediate source, the sweep down to its stand-in symbol (its name)."""
        loss, _, symbols, _ = self._problem(target, sources)
        wrt = _unique(s for s in symbols if s is not None)
        leaf = [w for w in wrt if isinstance(w, MatrixSymbol)]
        parts = [formulas.explain(loss, leaf, context=self.outputs)] if leaf else []
        for node, stand_in in self._stand_ins(loss, wrt).items():
            swap = {node: stand_in}
            cut = [o.xreplace(swap) for o in self.outputs]
            parts.append(formulas.explain(loss.xreplace(swap), [stand_in], context=cut))
        return parts[0] if len(parts) == 1 else "\n\n".join(parts)

    def _take(self) -> None:
        if self._used and not self.persistent:
            raise RuntimeError(
                "A non-persistent GradientTape can only be used to compute one set of gradients. "
                "Create a new tape for each gradient, or use GradientTape(persistent=True)"
            )
        self._used = True

    def _problem(self, target, sources):
        """(the scalar loss, the flattened sources, the leaf of each or None, the structure's rebuild)."""
        if not isinstance(target, Tensor):
            raise TypeError(
                "tape.gradient takes a target computed on the tape (a symgrad.Tensor). "
                f"Received: target of type {type(target).__name__}"
            )
        if target.tape is not self:
            raise ValueError("tape.gradient: the target was recorded on another GradientTape")
        loss = target.expr
        if tuple(loss.shape) != (1, 1):  # TensorFlow: the gradient of the sum
            loss = record("total", E.total, loss)
        flat, rebuild = flatten(sources)
        depends = nodes(loss)
        symbols = []
        for s in flat:
            symbol = self._source_symbol(s)
            symbols.append(symbol if symbol in depends else None)
        return loss, flat, symbols, rebuild

    def _source_symbol(self, source) -> MatrixExpr | None:
        """The node of the graph a source stands for: a leaf's symbol, or an intermediate
        tensor's graph; None for an array or variable that is not watched."""
        if isinstance(source, Tensor):
            if source.tape is not self:
                raise ValueError("tape.gradient: a source was recorded on another GradientTape")
            return source.expr
        found = self._sources.get(id(source))
        if found is None:
            if not (_is_variable(source) or isinstance(source, np.ndarray)):
                raise TypeError(
                    "tape.gradient sources must be variables, watched arrays or tape tensors. "
                    f"Received: {type(source).__name__}"
                )
            return None
        symbol = found[1]
        return symbol if symbol in self._watched else None

    def _stand_ins(self, loss: MatrixExpr, wrt) -> dict[MatrixExpr, MatrixSymbol]:
        """A symbol for each intermediate source, named after it (``A1``; ``T`` if unnamed),
        unlike every leaf of the loss."""
        key = ("stand-ins", loss, tuple(wrt))

        def make():
            taken = {s.name for s in leaves(loss)}
            return {
                node: E.matrix(
                    E.fresh_name(node.name if isinstance(node, E.Named) else "T", taken, first=2),
                    *node.shape,
                )
                for node in wrt
                if not isinstance(node, MatrixSymbol)
            }

        return _GRAPHS.get(key, make)

    def _source_names(self, loss: MatrixExpr, wrt) -> list[str]:
        stand_ins = self._stand_ins(loss, wrt)
        return [w.name if isinstance(w, MatrixSymbol) else stand_ins[w].name for w in wrt]

    def _derived(self, loss: MatrixExpr, wrt) -> tuple[MatrixExpr, list[MatrixExpr]]:
        """(the loss's simplified value, the simplified gradient for each node of ``wrt``).

        A leaf's gradient comes from the sweep over the loss.  An intermediate ``T`` is
        replaced by a symbol ``S`` in the loss (in every use: ``T`` is one node however many
        tensors compute it), ``dloss/dS`` derived and ``T`` put back for ``S``: the
        formula reads the leaves only, and no fusion of the simplifier (log of a
        softmax...) can take ``T`` out of the graph before its cotangent is known.  Each
        intermediate has its own sweep, so a path through another intermediate source
        counts, as in TensorFlow.
        """
        context = tuple(self.outputs)
        leaf = [w for w in wrt if isinstance(w, MatrixSymbol)]
        derived = formulas.gradients(loss, leaf, context=context)
        found = {w: derived.simplified[w] for w in leaf}
        for node, stand_in in self._stand_ins(loss, wrt).items():
            swap = {node: stand_in}
            cut = tuple(o.xreplace(swap) for o in context)  # the outputs' names, above S
            through = formulas.gradients(loss.xreplace(swap), [stand_in], cut)
            found[node] = through.simplified[stand_in].xreplace({stand_in: node})
        return derived.loss, [found[w] for w in wrt]

    def _gradient_program(self, loss: MatrixExpr, wrt: list[MatrixExpr]):
        dtype = self.dtype()
        inputs = leaves(loss)
        context = tuple(self.outputs)
        backend = self._backend(inputs)
        key = ("gradient", loss, tuple(wrt), inputs, context, dtype.name, backend)

        def make():
            value, grads = self._derived(loss, wrt)
            outputs = {"value": value}
            outputs.update({f"d_{i}": g for i, g in enumerate(grads)})
            return compiler.compile(
                inputs, outputs, backend=backend, dtype=dtype.name, name="tape_gradient"
            )

        return _PROGRAMS.get(key, make)

    def _shaped(self, source, gradient, unconnected: str):
        shape = _keras_shape(source)
        if gradient is None:
            return None if unconnected == "none" else np.zeros(shape, dtype=self.dtype())
        return gradient.reshape(shape)


def _keras_shape(source) -> tuple[int, ...]:
    if isinstance(source, Tensor):
        return source.shape
    return tuple(np.shape(source)) if isinstance(source, np.ndarray) else tuple(source.shape)


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def _is_variable(value) -> bool:
    return hasattr(value, "symbol") and hasattr(value, "path") and hasattr(value, "value")


def _as_matrix(value) -> np.ndarray:
    """An array of numbers, 0-d to 2-d, in the matrix layout: () -> (1, 1), (k,) -> (k, 1)."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf" or array.ndim > 2:
        raise ValueError(
            "A tape operand must be an array of numbers with at most 2 dimensions. "
            f"Received: an array of dtype {array.dtype} and shape {array.shape}"
        )
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    return array.reshape(array.shape + (1,) * (2 - array.ndim)) if array.ndim < 2 else array


def flatten(structure):
    """(leaves of nested lists / tuples / dicts, in order; a function that rebuilds the structure)."""
    if isinstance(structure, dict):
        keys = list(structure)
        parts = [flatten(structure[k]) for k in keys]
        sizes = [len(p[0]) for p in parts]
        leaves = [x for p in parts for x in p[0]]

        def rebuild_dict(values):
            out, at = {}, 0
            for k, (_, again), size in zip(keys, parts, sizes):
                out[k] = again(values[at : at + size])
                at += size
            return out

        return leaves, rebuild_dict
    if isinstance(structure, (list, tuple)):
        kind = type(structure)
        parts = [flatten(x) for x in structure]
        sizes = [len(p[0]) for p in parts]
        leaves = [x for p in parts for x in p[0]]

        def rebuild_sequence(values):
            out, at = [], 0
            for (_, again), size in zip(parts, sizes):
                out.append(again(values[at : at + size]))
                at += size
            return out if kind is list else tuple(out)

        return leaves, rebuild_sequence
    return [structure], lambda values: values[0]


# --------------------------------------------------------------------------
# Model calls


def call_model(model, x, training: bool = False):
    """``model(x)`` on the tape: the model's forward graph on ``x`` (a tape tensor, or an array
    whose rows become the batch ``X``; a list or dict of them for several inputs), its weights
    read as leaves. One tensor, or a list of them for several outputs (as Keras returns).

    ``training``: the graph of ``fit`` (dropout masks of the step the next update makes,
    ``optimizer.iterations + 1``; batch statistics), else that of ``predict``."""
    inputs = model.inputs if len(getattr(model, "inputs", ())) > 1 else None
    given = model._arrays(x, model.input_names, "x", "input") if inputs else [x]
    tape = _tape_of(*given)
    if not model.built:  # a Sequential without an input size: from the first call's samples
        first = given[0].shape if isinstance(given[0], Tensor) else np.shape(given[0])
        if len(first) < 2:
            raise ValueError(
                f"Model {model.name!r} takes rows of features (samples, features). "
                f"Received: an input of shape {tuple(first)}"
            )
        model.build(input_shape=(None, *first[1:]))
    graph = _forward_of(model, training)
    if training:
        _training_step(tape, model)
    widths = [t.dim for t in inputs] if inputs else [int(graph.x.shape[1])]
    shapes = [t.sample_shape for t in inputs] if inputs else [tuple(model.input_shape)]
    tensors = [
        _input_rows(model, tape, v, width, shape) for v, width, shape in zip(given, widths, shapes)
    ]
    if tape.backend is None and model.compiled:  # the model's own backend
        tape.backend = model.backend
    model._materialize()
    for w in graph.weights:
        tape.variable(w)
    body = graph.output.body if isinstance(graph.output, E.Named) else graph.output
    blocks = model.input_blocks(graph.x)
    several = len(getattr(model, "outputs", ())) > 1
    parts = list(body.args) if several else [body]
    names = [f"P_{t.name}" for t in model.outputs] if several else ["P"]
    rows = tensors[0].shape[0]
    out = []
    for part, base in zip(parts, names):
        part = part.body if isinstance(part, E.Named) else part

        def build(*a, part=part):  # the graph on a (its rows: n, or a number when not the batch)
            return part.xreplace({**dict(zip(blocks, a)), BATCH: a[0].shape[0]})

        name = E.fresh_name(base, tape._names, first=2)  # named as in fit's formulas
        tape._names.add(name)
        key = ("model", graph.x, part, name, training)
        output = record(key, lambda *a, name=name, build=build: E.name(name, build(*a)),
                        *(t.expr for t in tensors))  # fmt: skip
        tape.outputs.append(output)
        out.append(tape.tensor(output, (rows, int(part.shape[1]))))
    if training and graph.states:
        tape.update_states(graph.states, blocks, [t.expr for t in tensors])
    return out if several else out[0]


def _training_step(tape: GradientTape, model) -> None:
    """A training graph's step ``t``: the one the next update makes (its dropout masks); for
    a layer in no model, the next of a count of such tapes, so each draws new masks."""
    if tape._step is None and model is None:
        tape._step = next(_STANDALONE_STEPS)
    if tape._step is None:
        optimizer = getattr(model, "optimizer", None)
        tape._step = (optimizer.iterations if optimizer is not None else 0) + 1


_STANDALONE_STEPS = itertools.count(1)  # the steps of training calls of layers in no model


_STANDALONE_NAMES: set[str] = set()  # names of the layers called while in no model


def _name_standalone(layer) -> None:
    """A layer in no model called for the first time gets Keras's next free name among such
    layers (``dense``, ``dense_1``...), so two of them never share weight symbols; a name
    given by the user is taken as it is."""
    if layer.model is not None or layer.built:
        return
    if layer._name is None:
        base = snake_case(type(layer).__name__)
        layer._name, layer._auto_named = E.fresh_name(base, _STANDALONE_NAMES), True
    else:
        _STANDALONE_NAMES.add(layer._name)


def _owner(var) -> str:
    layer = getattr(var, "layer", None)
    return repr(layer.name) if layer is not None else "none"


def run_layer(layer, x, training: bool = False):
    """``layer(x)`` on arrays outside a tape, as Keras's eager call: the output for the rows
    of ``x`` (a list of arrays for a merging layer) as an array shaped ``(samples, *output
    shape)``, one per output.  The layer's formula is recorded on a tape of its own and
    evaluated by a compiled program kept by structure, dtype and backend (the backend of the
    layer's compiled model, else NumPy), so calls on any number of rows compile once."""
    if training:
        raise NotImplementedError(
            f"Layer {layer.name!r} called on arrays with training=True: fit runs the training "
            "graph; inside a GradientTape, layer(x, training=True) records it"
        )
    model = layer.model
    backend = model.backend if model is not None and getattr(model, "compiled", False) else None
    with GradientTape(backend=backend, watch_accessed_variables=False):
        tensors, shapes = _record_layer(layer, x, training=False)
    out = []
    for t, shape in zip(tensors, shapes):
        value = t.numpy()
        rows = value.shape[0]
        out.append(value.reshape(rows, *shape) if width(shape) == value.shape[1] else value)
    return out[0] if len(out) == 1 else out


def call_layer(layer, x, training: bool = False):
    """``layer(x)`` on the tape: the layer's formula on ``x`` (a tape tensor, or an array whose
    rows become the batch ``X``; a list of them for a merging layer), its weights read as
    leaves. Its intermediates are numbered along the tape as in a model's formulas (the
    first Dense's ``Z1``, ``A1``, the next one's ``Z2``...), so calling a model's layers
    one after the other records the graph of the model's own call.  A layer in no model is
    built by its first call (:func:`_name_standalone`, ``Layer._initialize``).

    ``training``: the layer as in ``fit`` (dropout, batch statistics), else as in ``predict``."""
    tensors, _ = _record_layer(layer, x, training)
    return tensors[0] if len(tensors) == 1 else tensors


def _record_layer(layer, x, training: bool):
    """(the output tensors of ``layer(x)`` on the tape, the shapes of their samples)."""
    several = isinstance(x, (list, tuple))
    given = list(x) if several else [x]
    tape = _tape_of(*given)
    _name_standalone(layer)
    inputs = [_layer_input(layer, tape, v) for v in given]
    shapes = layer._connect([shape for _, shape in inputs])  # checks them, builds the weights
    model = layer.model
    if model is not None and model.built:
        model._materialize()
    for w in layer.weights:
        tape.variable(w)
    if training:
        _training_step(tape, model)
    names = tape._layer_names
    names.training, names.seed = training, getattr(model, "_mask_seed", 0)
    holders = tuple(E.matrix(f"_in{i}", BATCH, t.expr.shape[1]) for i, (t, _) in enumerate(inputs))
    key = ("layer", layer, tuple(w.symbol for w in layer.weights), holders, training,
           names.seed, _numbering(names))  # fmt: skip

    def make():
        names.states = {}
        outs = layer._apply(list(holders), names)
        return outs, _numbering(names), names.states

    outs, after, states = _GRAPHS.get(key, make)
    _renumber(names, after)
    if training and states:
        tape.update_states(states, holders, [t.expr for t, _ in inputs])
    rows = inputs[0][0].shape[0]
    tensors = []
    for out in outs:

        def build(*a, out=out):  # the formula on a (its rows: n, or a number when not the batch)
            return out.xreplace({**dict(zip(holders, a)), BATCH: a[0].shape[0]})

        expr = record(("layer", holders, out), build, *(t.expr for t, _ in inputs))
        tape.outputs.append(expr)
        tensors.append(tape.tensor(expr, (rows, int(expr.shape[1]))))
    return tensors, [tuple(s) for s in shapes]


def _numbering(names) -> tuple:
    """What a ``Names`` has handed out (the next names follow from it)."""
    return names.layer, names.merges, names.pools, names.masks, frozenset(names.used)


def _renumber(names, numbering: tuple) -> None:
    names.layer, names.merges, names.pools, names.masks, used = numbering
    names.used = set(used)


def _layer_input(layer, tape: GradientTape, value) -> tuple[Tensor, tuple[int, ...]]:
    """(one input of a layer as a tape tensor of rows, the shape of its samples): an array
    of images or sequences becomes its rows; a tensor's rows have the shape the layer
    was built for when their widths agree."""
    given = tuple(value.shape if isinstance(value, Tensor) else np.shape(value))
    if len(given) > 2 and not isinstance(value, Tensor):
        return tape.as_tensor(np.reshape(value, (given[0], -1)), base="X", batch=True), given[1:]
    if len(given) != 2:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) takes rows of samples "
            f"(samples, features...). Received: an input of shape {given}"
        )
    expected = layer.input_shape if layer.built else declared_shape(layer)
    shape = tuple(expected) if expected and int(np.prod(expected)) == given[1] else given[1:]
    return tape.as_tensor(value, base="X", batch=True), shape


def _input_rows(model, tape: GradientTape, value, width: int, shape) -> Tensor:
    """One input as a tape tensor of rows: an array of samples of ``shape`` (images, sequences)
    becomes its rows, channels last; its width is checked."""
    given = value.shape if isinstance(value, Tensor) else np.shape(value)
    if len(given) > 2 and tuple(given[1:]) == tuple(shape):
        value = np.reshape(value, (given[0], -1))
    elif len(given) != 2 or given[1] != width:
        raise ValueError(
            f"Model {model.name!r} expects rows of {width} features"
            + (f" (samples of shape {tuple(shape)})" if len(shape) > 1 else "")
            + f". Received: an input of shape {tuple(given)}"
        )
    return tape.as_tensor(value, base="X", batch=True)


def _forward_of(model, training: bool = False):
    """The model's forward graph ``X -> P`` in fit's form (``training``) or predict's, built
    once for its current weights (kept on it)."""
    kept = getattr(model, "_tape_forward", {})
    weights = tuple(model.weights)
    if kept.get(training, (None,))[0] != weights:
        kept = {**kept, training: (weights, model._forward(training=training))}
        model._tape_forward = kept
    return kept[training][1]
