"""symgrad.nn.optimizers: Keras 3's update rules as symbolic elementwise formulas.

An optimizer writes its rule once, on *scalars*: ``w`` (a weight entry), ``g``
(its gradient), the old slot values (``momentum_old``...) and the new ones
(``momentum_new``), hyperparameters (``learning_rate``...) and the 1-based step
number ``t``.  :meth:`Optimizer.updates` lifts the rule to entry-by-entry maps
over the weight matrices, so the update is fused into the compiled training
step with the forward pass and the gradients.

Hyperparameters are runtime scalars of the compiled step: assigning
``model.optimizer.learning_rate = 0.01`` takes effect at the next step without
recompiling.  What changes the *shape* of the rule (``momentum > 0`` for SGD and
RMSprop, ``nesterov``, ``centered``) is fixed when the step is compiled.

Example::

    >>> from symgrad.nn.optimizers import SGD
    >>> opt = SGD(learning_rate=0.05, momentum=0.9, nesterov=True)
    >>> opt.rule_text()["variable"]
    '-g*learning_rate + momentum*momentum_new + w'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr, MatrixSymbol

from symgrad import compiler
from symgrad import core as E
from symgrad.nn import schedules
from symgrad.nn.initializers import Constant
from symgrad.nn.layers import Variable
from symgrad.nn.recent import Recent
from symgrad.nn.validation import from_identifier

COMMON = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm")
"""Arguments every optimizer takes (Keras's base optimizer); each is off when None."""

POSITIVE = ("learning_rate", "clipnorm", "clipvalue", "global_clipnorm")
NON_NEGATIVE = ("epsilon", "weight_decay", "initial_accumulator_value")
UNIT = (0.0, 1.0, True)  # in [0, 1]
UNIT_OPEN = (0.0, 1.0, False)  # in [0, 1): 1 - beta**t must not vanish

STEP = sp.Symbol("t", positive=True)
"""The 1-based step number (``optimizer.iterations + 1``), a runtime scalar named ``t``."""

_w, _g = sp.symbols("w g", real=True)


def hyperparameter(name: str) -> sp.Symbol:
    """The runtime scalar symbol of a hyperparameter (``learning_rate``, ``beta_1``...)."""
    return sp.Symbol(name, real=True)


class Optimizer:
    """Base class: hyperparameters, slot variables, and the update ``rules``.

    Subclasses set ``defaults`` (hyperparameter -> Keras default), ``slot_names()``
    and ``rules(w, g, old, new, h, t)``, which returns the new value of each slot
    (in order) and of the variable, as scalar SymPy expressions.
    """

    name = "optimizer"
    defaults: dict[str, float] = {}
    non_negative_slots: tuple[str, ...] = ()  # running sums of g^2: a negative value is corrupt
    ranges: dict[str, tuple[float, float, str]] = {}  # hyperparameter -> low, high, "[]" / "[)"

    def __init__(
        self,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        **hyperparameters,
    ):
        object.__setattr__(self, "_hyper", {})
        for key, default in self.defaults.items():
            setattr(self, key, hyperparameters.pop(key, default))
        if hyperparameters:
            raise TypeError(
                f"{type(self).__name__} got unexpected argument(s): {', '.join(sorted(hyperparameters))}. "
                f"It takes: {', '.join([*self.defaults, *COMMON])}"
            )
        common = {
            "weight_decay": weight_decay,
            "clipnorm": clipnorm,
            "clipvalue": clipvalue,
            "global_clipnorm": global_clipnorm,
        }
        clips = {k: v for k, v in common.items() if k != "weight_decay" and v is not None}
        if len(clips) > 1:  # Keras: one way of clipping
            raise ValueError(
                f"{type(self).__name__}: only one of clipnorm, clipvalue and global_clipnorm can "
                f"be set. Received: {', '.join(f'{k}={v!r}' for k, v in clips.items())}"
            )
        for key, value in common.items():
            if value is not None:  # fixed in the step's shape from here on
                setattr(self, key, value)
        self.iterations = 0
        self.slots: dict[tuple[str, str], Variable] = {}

    # -- hyperparameters: plain attributes backed by runtime scalars
    def __getattr__(self, key):
        hyper = self.__dict__.get("_hyper", {})
        if key in hyper:
            return hyper[key]
        if key in COMMON:  # not set: no clipping, no weight decay
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __setattr__(self, key, value):
        if key in type(self).defaults or (key in COMMON and value is not None):
            if key in COMMON and key not in self._hyper and "iterations" in vars(self):
                raise ValueError(  # a step compiled without it would not read it
                    f"{type(self).__name__}: {key} must be given when the optimizer is created. "
                    f"Received: {key}={value!r}"
                )
            self._hyper[key] = self._check_hyperparameter(key, value)
        elif key in COMMON and key in self._hyper:  # None: switched off
            raise ValueError(
                f"{type(self).__name__}: {key} was set when the optimizer was created and cannot "
                f"be removed. Received: {key}=None"
            )
        elif key == "iterations":
            object.__setattr__(self, key, self._check_iterations(value))
        else:
            object.__setattr__(self, key, value)

    def _check_iterations(self, value) -> int:
        """The number of steps taken: a non-negative integer (``t = iterations + 1`` >= 1)."""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(
                f"{type(self).__name__}: iterations must be a non-negative integer (the number "
                f"of steps taken). Received: iterations={value!r}"
            )
        if value < 0:
            raise ValueError(
                f"{type(self).__name__}: iterations must be a non-negative integer (the number "
                f"of steps taken). Received: iterations={value!r}"
            )
        return int(value)

    def _check_hyperparameter(self, key: str, value):
        if key == "learning_rate" and callable(value):
            return value  # a schedule: step -> learning rate
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.floating, np.integer)
        ):
            raise ValueError(
                f"{type(self).__name__}: {key} must be a number. Received: {key}={value!r}"
            )
        if not np.isfinite(value):
            raise ValueError(
                f"{type(self).__name__}: {key} must be finite. Received: {key}={value!r}"
            )
        if key in POSITIVE and not value > 0:
            raise ValueError(f"{type(self).__name__}: {key} must be > 0. Received: {key}={value!r}")
        if key in NON_NEGATIVE and not value >= 0:
            raise ValueError(
                f"{type(self).__name__}: {key} must be >= 0. Received: {key}={value!r}"
            )
        if key in type(self).ranges:
            low, high, closed = type(self).ranges[key]
            if not (low <= value <= high if closed else low <= value < high):
                interval = f"[{low}, {high}{']' if closed else ')'}"
                raise ValueError(
                    f"{type(self).__name__}: {key} must be in {interval}. Received: {key}={value!r}"
                )
        return float(value)

    def _check_rate(self, rate, dtype: str) -> float:
        """The learning rate of this step: a number, finite and > 0 once converted to ``dtype``."""
        schedule = callable(self._hyper.get("learning_rate"))
        where = f" (returned by the schedule at iterations={self.iterations})" if schedule else ""
        if isinstance(rate, (bool, np.bool_)) or not isinstance(
            rate, (int, float, np.floating, np.integer)
        ):
            raise TypeError(
                f"{type(self).__name__}: learning_rate must be a number. "
                f"Received: learning_rate={rate!r}{where}"
            )
        with np.errstate(over="ignore", under="ignore"):  # 1e39 -> inf, 1e-50 -> 0 in float32
            converted = np.dtype(dtype).type(rate)
        if not (np.isfinite(converted) and converted > 0):
            raise ValueError(
                f"{type(self).__name__}: learning_rate must be finite and > 0 in {dtype} "
                f"(it is {float(converted)!r} there). Received: learning_rate={rate!r}{where}"
            )
        return float(rate)

    def compiled_schedule(self) -> bool:
        """Whether the learning rate is a schedule compiled into the step (no Python per step)."""
        return isinstance(self._hyper.get("learning_rate"), schedules.LearningRateSchedule)

    def hyperparameter_values(self) -> dict[str, float]:
        """Current values; a learning-rate schedule is evaluated at ``iterations``."""
        values = dict(self._hyper)
        if callable(values.get("learning_rate")):
            values["learning_rate"] = values["learning_rate"](self.iterations)
        return values

    def scalar_values(self, symbols: Sequence[sp.Symbol], dtype: str = "float64") -> list[float]:
        """Values for the compiled step's scalar arguments, in its order.

        The learning rate (a schedule's too) is checked here, before the step: finite
        and > 0 once converted to the step's ``dtype`` (``1e39`` is inf in float32).
        """
        if self.compiled_schedule():  # its formula is in the step, not an argument
            values = {k: v for k, v in self._hyper.items() if k != "learning_rate"}
        else:
            values = self.hyperparameter_values()
        if "learning_rate" in values:
            values["learning_rate"] = self._check_rate(values["learning_rate"], dtype)
        values[STEP.name] = float(self.iterations + 1)
        try:
            return [values[s.name] for s in symbols]
        except KeyError as err:
            raise KeyError(
                f"{type(self).__name__} has no value for the scalar {err.args[0]!r}"
            ) from None

    # -- the rule
    def slot_names(self) -> tuple[str, ...]:
        return ()

    def global_slot_names(self) -> tuple[str, ...]:
        """Slots kept once for the whole model, (1, 1) each (Nadam's product of momenta)."""
        return ()

    def slot_initial_value(self, slot: str) -> float:
        return 0.0

    def rules(self, w, g, old, new, h, t) -> dict[str, sp.Expr]:
        raise NotImplementedError

    def _learning_rate(self) -> sp.Expr:
        """The symbol ``learning_rate``, or a schedule's formula of the step count ``t - 1``."""
        rate = self._hyper.get("learning_rate")
        if isinstance(rate, schedules.LearningRateSchedule):
            return rate.formula(STEP - 1)
        return hyperparameter("learning_rate")

    def _scalar_rules(self) -> dict[str, sp.Expr]:
        slots = (*self.global_slot_names(), *self.slot_names())
        old = SimpleNamespace(**{s: sp.Symbol(f"{s}_old", real=True) for s in slots})
        new = SimpleNamespace(**{s: sp.Symbol(f"{s}_new", real=True) for s in slots})
        h = SimpleNamespace(**{k: hyperparameter(k) for k in [*self.defaults, *self._hyper]})
        h.learning_rate = self._learning_rate()
        placeholders = {"w", "g"} | {str(v) for v in [*vars(old).values(), *vars(new).values()]}
        clash = placeholders & {*self.defaults, *COMMON, STEP.name}
        if clash:  # a hyperparameter would be read as a matrix entry
            raise ValueError(
                f"{type(self).__name__}: slot names clash with hyperparameters: {sorted(clash)}"
            )
        w = _w
        if self.weight_decay is not None:  # Keras: w <- w - lr wd w before every rule
            w = _w - h.learning_rate * h.weight_decay * _w
        g = _g
        if self.clipvalue is not None:  # Keras: clip(g, -clipvalue, clipvalue)
            g = sp.Min(sp.Max(_g, -h.clipvalue), h.clipvalue)
        return self.rules(w, g, old, new, h, STEP)

    def rule_text(self) -> dict[str, str]:
        """The update rule on scalars, as text: ``{"variable": "w - g*learning_rate"}``."""
        return {k: str(v) for k, v in self._scalar_rules().items()}

    # -- lifting to matrices
    def _slot(
        self, key: tuple[str, str], symbol: str, shape, dtype: str, vector: bool = False,
        layout=None,
    ) -> Variable:  # fmt: skip
        """The slot variable under ``key`` (created, or cast to ``dtype``); ``shape`` is the
        matrix the programs read, ``vector``: Keras shows it as a vector (a bias's slot),
        ``layout``: in another shape (a convolution kernel's slot)."""
        var = self.slots.get(key)
        if var is None or var.matrix_shape != tuple(shape):
            path = "/".join(part for part in key if part)
            initial = self.slot_initial_value(key[1])
            var = Variable(
                path,
                E.weight_matrix(symbol, *shape, path),
                Constant(initial),
                vector=vector,
                layout=layout,
            )
            var.value = np.full(shape, initial, dtype=dtype)
            self.slots[key] = var
        elif var.value.dtype != np.dtype(dtype):
            var.value = np.ascontiguousarray(var.value, dtype=dtype)
        return var

    def build(self, weights: Sequence[Variable], dtype: str) -> list[Variable]:
        """Create (once) and return the slot variables: the global ones, then per weight."""
        out = [
            self._slot(("", s), f"optimizer_{s}", (1, 1), dtype) for s in self.global_slot_names()
        ]
        for w in weights:
            for slot in self.slot_names():
                slot_symbol = f"{w.symbol.name}_{slot}"
                key = (w.path, slot)
                out.append(self._slot(key, slot_symbol, w.matrix_shape, dtype, w.vector, w.layout))
        return out

    @property
    def variables(self) -> list[Variable]:
        return list(self.slots.values())

    def clipped(
        self, weights: Sequence[Variable], gradients: dict[MatrixSymbol, MatrixExpr]
    ) -> dict[MatrixSymbol, MatrixExpr]:
        """The gradients after ``clipnorm`` / ``global_clipnorm`` (Keras: g c / max(|g|, c)).

        ``clipvalue`` is entry by entry, part of the scalar rule.
        """
        gradients = {w.symbol: gradients[w.symbol] for w in weights}
        if self.clipnorm is not None:  # each weight's gradient by its own norm
            bound = hyperparameter("clipnorm")
            return {
                w: _scaled(g, _clip_factor(E.total(E.hadamard(g, g)), bound))
                for w, g in gradients.items()
            }
        if self.global_clipnorm is not None:  # every gradient by the norm of all of them
            bound = hyperparameter("global_clipnorm")
            squares = E.add(*(E.total(E.hadamard(g, g)) for g in gradients.values()))
            factor = E.name("global_clip_factor", _clip_factor(squares, bound))
            return {w: _scaled(g, factor) for w, g in gradients.items()}
        return gradients

    def updates(
        self, weights: Sequence[Variable], gradients: dict[MatrixSymbol, MatrixExpr]
    ) -> dict[MatrixSymbol, MatrixExpr]:
        """``{symbol: new value}`` for every weight and slot: the rule, entry by entry."""
        rules = self._scalar_rules()
        gradients = self.clipped(weights, gradients)
        updates: dict[MatrixSymbol, MatrixExpr] = {}
        shared: dict[sp.Symbol, MatrixExpr] = {}  # global slots, old and new, (1, 1)
        for key in self.global_slot_names():
            target = self.slots[("", key)].symbol
            shared[sp.Symbol(f"{key}_old", real=True)] = target
            value = E.name(f"{target.name}_new", _lift(rules[key], shared))
            shared[sp.Symbol(f"{key}_new", real=True)] = value
            updates[target] = value
        for w in weights:
            env: dict[sp.Symbol, MatrixExpr] = {_w: w.symbol, _g: gradients[w.symbol]}
            env.update({s: E.fill(v, *w.matrix_shape) for s, v in shared.items()})
            for slot in self.slot_names():
                env[sp.Symbol(f"{slot}_old", real=True)] = self.slots[(w.path, slot)].symbol
            for key, body in rules.items():
                if key in self.global_slot_names():
                    continue
                if key == "variable":
                    updates[w.symbol] = _lift(body, env)
                    continue
                target = self.slots[(w.path, key)].symbol
                value = E.name(f"{target.name}_new", _lift(body, env))
                env[sp.Symbol(f"{key}_new", real=True)] = value
                updates[target] = value
        return updates

    # -- a step outside fit (Keras's custom training loop)
    def apply_gradients(self, grads_and_vars: Iterable) -> int:
        """One step of the rule on ``(gradient, variable)`` pairs, as Keras's ``apply_gradients``.

        ``optimizer.apply_gradients(zip(grads, model.trainable_weights))``: the update
        (weights and slots) is one compiled program, built once per set of weights,
        dtype and rule and reused; slots and ``iterations`` are those ``fit`` uses.
        Everything is checked first and a step whose gradients or new values are not
        finite writes nothing (FloatingPointError).  A ``None`` gradient skips its
        variable with a warning, as Keras does.  Returns ``iterations``.
        """
        pairs = _checked_pairs(self, grads_and_vars)
        weights = [v for _, v in pairs]
        dtype = weights[0].value.dtype.name
        slots = self.build(weights, dtype)
        # NumPy runs the update: it is entry by entry and small
        step, words = self._apply_step(weights, dtype, "numpy")
        grads = [np.ascontiguousarray(np.reshape(g, v.value.shape), dtype=dtype) for g, v in pairs]
        arrays = [*grads, *(w.value for w in weights), *(s.value for s in slots)]
        scalars = self.scalar_values(step.scalars, dtype)
        with np.errstate(all="ignore"):
            try:
                step(*arrays, *scalars)
            except FloatingPointError as err:
                raise FloatingPointError(
                    f"{type(self).__name__}.apply_gradients: {guard_words(err, words)} is nan "
                    f"or inf at step {self.iterations + 1}; no weight, slot or iterations was "
                    f"changed (iterations stays {self.iterations}). ({err})"
                ) from None
        self.iterations += 1
        return self.iterations

    def _apply_step(self, weights, dtype: str, backend: str):
        """The compiled update of ``weights`` (kept by structure: symbols, dtype, backend, rule)."""
        structure = repr(  # a schedule's config is a dict: the key holds its text
            [(k, v) for k, v in sorted(self.get_config().items()) if k not in self.defaults]
        )
        symbols = tuple(w.symbol for w in weights)
        key = (type(self), self.slot_names(), structure, symbols, dtype, backend)

        def make():
            gradients = {w.symbol: E.matrix(f"d_{w.symbol.name}", *w.symbol.shape) for w in weights}
            updates = self.updates(weights, gradients)
            slots = [  # as build orders them: the global ones first
                *(self.slots[("", slot)] for slot in self.global_slot_names()),
                *(self.slots[(w.path, slot)] for w in weights for slot in self.slot_names()),
            ]
            inputs = [*gradients.values(), *symbols, *(s.symbol for s in slots)]
            checks, words = update_checks(updates, [*weights, *slots])
            checks = {"gradient_sum": E.add(*(E.total(g) for g in gradients.values())), **checks}
            scalars = [s for s in E.scalar_params(list(updates.values())) if s != E.batch()]
            fn = compiler.compile(
                inputs,
                {},
                updates=updates,
                scalars=scalars,
                checks=checks,
                backend=backend,
                dtype=dtype,
                name="apply_gradients",
            )
            return fn, words

        return _APPLY_STEPS.get(key, make)

    def get_config(self) -> dict:
        config = {"name": self.name}
        for key, value in self._hyper.items():
            if isinstance(value, schedules.LearningRateSchedule):
                config[key] = schedules.serialize(value)
            elif not callable(value):  # a plain function has no config
                config[key] = value
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _clip_factor(squares: MatrixExpr, bound: sp.Symbol) -> MatrixExpr:
    """``c / max(sqrt(s), c)`` from the (1, 1) sum of squares ``s``: 1 when the norm is <= c."""
    s = sp.Symbol("s", nonnegative=True)
    return E.elementwise(sp.Lambda(s, bound / sp.Max(sp.sqrt(s), bound)), squares)


def _scaled(g: MatrixExpr, factor: MatrixExpr) -> MatrixExpr:
    """``g`` times the (1, 1) ``factor`` in every entry."""
    return E.hadamard(g, E.fill(factor, *g.shape))


_APPLY_STEPS = Recent(64)  # compiled ``apply_gradients`` updates


def _checked_pairs(opt: Optimizer, grads_and_vars) -> list[tuple[np.ndarray, Variable]]:
    """The (gradient, variable) pairs with a gradient, each checked: nothing runs on bad input."""
    where = f"{type(opt).__name__}.apply_gradients"
    pairs, skipped, seen = [], [], set()
    for item in grads_and_vars:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(
                f"{where} takes (gradient, variable) pairs, e.g. zip(grads, model.trainable_weights). "
                f"Received: {item!r}"
            )
        grad, var = item
        if not isinstance(var, Variable):
            raise TypeError(
                f"{where}: the second of each pair must be a variable. Received: {var!r}"
            )
        if id(var) in seen:
            raise ValueError(f"{where}: the variable {var.path} appears twice")
        seen.add(id(var))
        if grad is None:
            skipped.append(var.path)
            continue
        if var.value is None:
            raise ValueError(f"{where}: the variable {var.path} has no value yet (build its model)")
        grad = np.asarray(grad)
        if grad.dtype.kind not in "biuf":
            raise TypeError(
                f"{where}: the gradient of {var.path} must be an array of numbers. "
                f"Received: dtype {grad.dtype}"
            )
        allowed = {tuple(var.value.shape), tuple(getattr(var, "shape", var.value.shape))}
        if grad.shape not in allowed:
            raise ValueError(
                f"{where}: the gradient of {var.path} must have the variable's shape "
                f"{tuple(var.shape)}. Received: a gradient of shape {grad.shape}"
            )
        pairs.append((grad, var))
    if not pairs:
        raise ValueError(
            f"{where}: no gradients provided for any variable"
            + (f" (all None: {', '.join(skipped)})" if skipped else "")
        )
    if skipped:
        warnings.warn(
            f"{where}: gradients do not exist for {', '.join(skipped)}; they are not updated",
            UserWarning,
            stacklevel=3,
        )
    dtypes = {v.value.dtype for _, v in pairs}
    if len(dtypes) > 1:
        raise ValueError(f"{where}: the variables have several dtypes: {sorted(map(str, dtypes))}")
    return pairs


def _lift(body: sp.Expr, env: dict[sp.Symbol, MatrixExpr]) -> MatrixExpr:
    """A scalar rule as an entry-by-entry map over the matrices bound in ``env``."""
    used = [s for s in env if body.has(s)]
    if not used:  # a rule that ignores every matrix (not expected from optimizers)
        raise ValueError(f"update rule {body} reads no variable")
    return E.elementwise(sp.Lambda(tuple(used), body), *[env[s] for s in used])


class SGD(Optimizer):
    """Keras 3 SGD: ``m <- momentum m - lr g``; ``w <- w + m`` (Nesterov: ``w + momentum m - lr g``)."""

    name = "SGD"
    defaults = {"learning_rate": 0.01, "momentum": 0.0}
    ranges = {"momentum": UNIT}

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False, **common):
        super().__init__(learning_rate=learning_rate, momentum=momentum, **common)
        self.nesterov = bool(nesterov)

    def slot_names(self):
        return ("momentum",) if self.momentum != 0 else ()

    def rules(self, w, g, old, new, h, t):
        if not self.slot_names():
            return {"variable": w - h.learning_rate * g}
        m = h.momentum * old.momentum - h.learning_rate * g
        if self.nesterov:
            return {"momentum": m, "variable": w + h.momentum * new.momentum - h.learning_rate * g}
        return {"momentum": m, "variable": w + new.momentum}

    def get_config(self):
        return {**super().get_config(), "nesterov": self.nesterov}


class Adagrad(Optimizer):
    """Keras 3 Adagrad: ``a <- a + g^2``; ``w <- w - lr g / sqrt(a + eps)``."""

    name = "Adagrad"
    defaults = {"learning_rate": 0.001, "epsilon": 1e-7}
    non_negative_slots = ("accumulator",)

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        **common,
    ):
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, **common)
        self.initial_accumulator_value = self._check_hyperparameter(
            "initial_accumulator_value", initial_accumulator_value
        )

    def slot_names(self):
        return ("accumulator",)

    def slot_initial_value(self, slot):
        return self.initial_accumulator_value

    def rules(self, w, g, old, new, h, t):
        return {
            "accumulator": old.accumulator + g**2,
            "variable": w - h.learning_rate * g / sp.sqrt(new.accumulator + h.epsilon),
        }

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value}


class RMSprop(Optimizer):
    """Keras 3 RMSprop: ``v <- rho v + (1 - rho) g^2``; ``w <- w - lr g / sqrt(v + eps)``.

    With ``momentum > 0``: ``m <- momentum m + lr g / sqrt(v + eps)``, ``w <- w - m``.
    ``centered`` subtracts the square of a running mean gradient from ``v``.
    """

    name = "RMSprop"
    defaults = {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7}
    ranges = {"rho": UNIT, "momentum": UNIT}
    non_negative_slots = ("velocity",)

    def __init__(
        self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **common
    ):
        super().__init__(
            learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, **common
        )
        self.centered = bool(centered)

    def slot_names(self):
        return (
            ("velocity",)
            + (("momentum",) if self.momentum > 0 else ())
            + (("average_gradient",) if self.centered else ())
        )

    def rules(self, w, g, old, new, h, t):
        out = {"velocity": h.rho * old.velocity + (1 - h.rho) * g**2}
        denominator = new.velocity + h.epsilon
        if self.centered:
            out["average_gradient"] = h.rho * old.average_gradient + (1 - h.rho) * g
            denominator = new.velocity - new.average_gradient**2 + h.epsilon
        increment = h.learning_rate * g / sp.sqrt(denominator)
        if "momentum" in self.slot_names():
            out["momentum"] = h.momentum * old.momentum + increment
            out["variable"] = w - new.momentum
        else:
            out["variable"] = w - increment
        return dict(sorted(out.items(), key=lambda kv: kv[0] == "variable"))

    def get_config(self):
        return {**super().get_config(), "centered": self.centered}


class AdamFamily(Optimizer):
    """Adam's hyperparameters, Keras defaults and ranges (Adam, Adamax, Nadam)."""

    defaults = {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    ranges = {"beta_1": UNIT_OPEN, "beta_2": UNIT_OPEN}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **common):
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **common
        )


class Adam(AdamFamily):
    """Keras 3 Adam (epsilon outside the square root, bias correction folded into lr).

    ``m <- m + (g - m)(1 - beta_1)``, ``v <- v + (g^2 - v)(1 - beta_2)``,
    ``w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + eps)``.
    ``amsgrad=True`` divides by the running maximum of ``v`` instead (``velocity_hat``).
    """

    name = "Adam"
    non_negative_slots = ("velocity", "velocity_hat")

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad: bool = False,
        **common,
    ):
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **common
        )
        self.amsgrad = bool(amsgrad)

    def slot_names(self):
        return (
            ("momentum", "velocity", "velocity_hat") if self.amsgrad else ("momentum", "velocity")
        )

    def rules(self, w, g, old, new, h, t):
        alpha = h.learning_rate * sp.sqrt(1 - h.beta_2**t) / (1 - h.beta_1**t)
        out = {
            "momentum": old.momentum + (g - old.momentum) * (1 - h.beta_1),
            "velocity": old.velocity + (g**2 - old.velocity) * (1 - h.beta_2),
        }
        v = new.velocity
        if self.amsgrad:  # the largest v so far
            out["velocity_hat"] = sp.Max(old.velocity_hat, new.velocity)
            v = new.velocity_hat
        out["variable"] = w - alpha * new.momentum / (sp.sqrt(v) + h.epsilon)
        return out

    def get_config(self):
        config = super().get_config()
        return {**config, "amsgrad": True} if self.amsgrad else config


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras 3): ``w <- w - lr wd w`` before the Adam step."""

    name = "AdamW"

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad: bool = False,
        **common,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            weight_decay=weight_decay,
            **common,
        )


class Adamax(AdamFamily):
    """Keras 3 Adamax (Adam with the infinity norm).

    ``m <- m + (g - m)(1 - beta_1)``, ``u <- max(beta_2 u, |g|)``,
    ``w <- w - lr m / ((1 - beta_1^t)(u + eps))``.
    """

    name = "Adamax"
    non_negative_slots = ("norm",)

    def slot_names(self):
        return ("momentum", "norm")

    def rules(self, w, g, old, new, h, t):
        return {
            "momentum": old.momentum + (g - old.momentum) * (1 - h.beta_1),
            "norm": sp.Max(h.beta_2 * old.norm, sp.Abs(g)),
            "variable": w
            - h.learning_rate * new.momentum / ((1 - h.beta_1**t) * (new.norm + h.epsilon)),
        }


class Nadam(AdamFamily):
    """Keras 3 Nadam (Adam with Nesterov momentum, Dozat's momentum schedule).

    ``u_t = beta_1 (1 - 0.96^t / 2)``; the product ``prod_{s <= t} u_s`` is one (1, 1)
    slot of the whole model (``u_product``); with ``u_{t+1}`` and ``beta_2^t``:
    ``m_hat = u_{t+1} m / (1 - u_product u_{t+1}) + (1 - u_t) g / (1 - u_product)``,
    ``w <- w - lr m_hat / (sqrt(v / (1 - beta_2^t)) + eps)``.
    """

    name = "Nadam"
    non_negative_slots = ("velocity",)

    def global_slot_names(self):
        return ("u_product",)

    def slot_initial_value(self, slot):
        return 1.0 if slot == "u_product" else 0.0

    def slot_names(self):
        return ("momentum", "velocity")

    def rules(self, w, g, old, new, h, t):
        u_t = h.beta_1 * (1 - sp.Rational(1, 2) * sp.Float("0.96") ** t)
        u_next = h.beta_1 * (1 - sp.Rational(1, 2) * sp.Float("0.96") ** (t + 1))
        m_hat = u_next * new.momentum / (1 - new.u_product * u_next) + (1 - u_t) * g / (
            1 - new.u_product
        )
        v_hat = new.velocity / (1 - h.beta_2**t)
        return {
            "u_product": old.u_product * u_t,
            "momentum": old.momentum + (g - old.momentum) * (1 - h.beta_1),
            "velocity": old.velocity + (g**2 - old.velocity) * (1 - h.beta_2),
            "variable": w - h.learning_rate * m_hat / (sp.sqrt(v_hat) + h.epsilon),
        }


class Lion(Optimizer):
    """Keras 3 Lion (sign of an interpolated momentum).

    ``w <- w - lr sign(beta_1 m + (1 - beta_1) g)``, then ``m <- beta_2 m + (1 - beta_2) g``.
    """

    name = "Lion"
    defaults = {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.99}
    ranges = {"beta_1": UNIT, "beta_2": UNIT}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, **common):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, **common)

    def slot_names(self):
        return ("momentum",)

    def rules(self, w, g, old, new, h, t):
        direction = sp.sign(h.beta_1 * old.momentum + (1 - h.beta_1) * g)
        return {
            "momentum": h.beta_2 * old.momentum + (1 - h.beta_2) * g,
            "variable": w - h.learning_rate * direction,  # reads the old momentum
        }


OPTIMIZERS: dict[str, Callable[[], Optimizer]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
    "adamax": Adamax,
    "nadam": Nadam,
    "lion": Lion,
}


def get(identifier) -> Optimizer:
    """An optimizer from a name (``"adam"``, Keras defaults) or an instance."""
    return from_identifier(identifier, Optimizer, OPTIMIZERS, "optimizer")


GUARD_WORDS = {"loss": "the loss", "gradient_sum": "the sum of the gradients"}
"""What the step's fixed guards check, in words (``update_checks`` adds one per new value)."""


def update_checks(updates: dict, variables: Iterable[Variable]) -> tuple[dict, dict]:
    """One guarded total per new weight or slot, and what every guard checks, in words.

    A separate check per array (instead of one sum of all) names the weight or slot
    that was not finite; it costs the same reductions.  Returns ``(checks, words)``:
    check name -> (1, 1) total, guard name (also ``loss``, ``gradient_sum``) -> text.
    """
    paths = {v.symbol: v.path for v in variables}
    checks, words = {}, dict(GUARD_WORDS)
    for symbol, new in updates.items():
        key = f"new_{symbol.name}"
        checks[key] = E.total(new)
        words[key] = f"the new value of {paths.get(symbol, symbol.name)}"
    return checks, words


def guard_words(err: BaseException, words: dict) -> str:
    """What a failed guard (``err.guard``, set by every backend) checked, in words."""
    guard = getattr(err, "guard", None)
    return words.get(guard, "the loss, a gradient or a new weight or slot")


def check_state(state: dict[str, np.ndarray], optimizer: Optimizer | None, where: str) -> None:
    """Raise ValueError unless ``state`` (slot path -> array, ``iterations``) is a sound state.

    Checked before a file's state is used: ``iterations`` a 0-d non-negative integer, every
    slot a finite numeric array, and non-negative where the rule keeps a running sum of
    squares (``optimizer.non_negative_slots``; for no optimizer yet, those of every
    optimizer here, which no other slot shares a name with).
    """
    if "iterations" in state:
        it = np.asarray(state["iterations"])
        if it.shape != () or it.dtype.kind not in "iu" or it < 0:
            shown = it.item() if it.shape == () else f"an array of shape {it.shape}"
            raise ValueError(
                f"{where}: optimizer/iterations must be a non-negative integer (the number of "
                f"steps taken). Received: iterations={shown!r}"
            )
    owners = [type(optimizer)] if optimizer is not None else list(OPTIMIZERS.values())
    non_negative = {slot for cls in owners for slot in cls.non_negative_slots}
    for path, value in state.items():
        if path == "iterations":
            continue
        if value.dtype.kind not in "fiu" or not np.all(np.isfinite(value)):
            raise ValueError(
                f"{where}: optimizer slot {path} must hold finite numbers. "
                f"Received: {_describe(value)}"
            )
        if path.rsplit("/", 1)[-1] in non_negative and np.any(value < 0):
            raise ValueError(
                f"{where}: optimizer slot {path} is a running sum of squared gradients and "
                f"cannot be negative. Received: min {value.min()!r}"
            )


def _describe(value: np.ndarray) -> str:
    if value.dtype.kind not in "fiu":
        return f"an array of dtype {value.dtype}"
    bad = value[~np.isfinite(value)]
    return f"{bad.size} non-finite entries (first: {bad.flat[0]!r}) in shape {value.shape}"


def from_config(config: dict) -> Optimizer:
    config = dict(config)
    name = config.pop("name")
    cls = {c.name: c for c in OPTIMIZERS.values()}.get(name)
    if cls is None:
        raise ValueError(f"Unknown optimizer in a saved model: {name!r}")
    if isinstance(config.get("learning_rate"), dict):
        config["learning_rate"] = schedules.deserialize(config["learning_rate"])
    return cls(**config)
