"""symgrad.nn.schedules: Keras's learning-rate schedules as formulas of the step count.

A schedule writes its rate once, as a SymPy expression of the number of steps
taken (``step``, Keras's ``optimizer.iterations``).  Given to an optimizer as its
``learning_rate``, the formula (of ``t - 1``) goes into the update rule, so it is
compiled into the training step: the whole-epoch native call and ``symgrad.emit``
work with a schedule as with a constant rate.  Called on a number, a schedule
returns the rate at that step as a float (the same formula, evaluated by SymPy).

Example::

    >>> import sympy as sp
    >>> from symgrad.nn.schedules import ExponentialDecay
    >>> schedule = ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    >>> schedule(20)
    0.025
    >>> schedule.formula(sp.Symbol("step"))
    0.1*0.5**(0.1*step)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import sympy as sp

from symgrad.nn.validation import from_identifier


class LearningRateSchedule:
    """Base class: ``formula(step)`` (SymPy) and the arguments that rebuild the schedule."""

    def formula(self, step: sp.Expr) -> sp.Expr:
        raise NotImplementedError

    def __call__(self, step) -> float:
        """The rate after ``step`` steps, a float (``step`` an integer >= 0)."""
        return float(self.formula(sp.Integer(int(step))).evalf(20))

    def get_config(self) -> dict:
        return dict(self._config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({args})"


def _number(who: str, key: str, value, *, positive: bool = False, minimum=None) -> float:
    """``value`` as a float, finite (and > 0, or >= ``minimum``), else a ValueError quoting it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and positive:
        ok = value > 0
    if ok and minimum is not None:
        ok = value >= minimum
    if not ok:
        wanted = "> 0" if positive else (f">= {minimum}" if minimum is not None else "finite")
        raise ValueError(f"{who}: {key} must be a number {wanted}. Received: {key}={value!r}")
    return float(value)


class _StepDecay(LearningRateSchedule):
    """A decay of ``p = step / decay_steps`` (floored with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        who = type(self).__name__
        self.initial_learning_rate = _number(who, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(who, "decay_steps", decay_steps, positive=True)
        self.decay_rate = _number(who, "decay_rate", decay_rate, minimum=0)
        self.staircase = bool(staircase)
        self._config = {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        }

    def _progress(self, step):
        p = step / sp.Float(self.decay_steps)
        return sp.floor(p) if self.staircase else p


class ExponentialDecay(_StepDecay):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (floored with ``staircase``)."""

    def formula(self, step):
        return sp.Float(self.initial_learning_rate) * sp.Float(self.decay_rate) ** self._progress(
            step
        )


class InverseTimeDecay(_StepDecay):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (floored with ``staircase``)."""

    def formula(self, step):
        return sp.Float(self.initial_learning_rate) / (
            1 + sp.Float(self.decay_rate) * self._progress(step)
        )


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` up to ``boundaries[i]``, then
    ``values[-1]``; ``len(values) == len(boundaries) + 1``, boundaries increasing."""

    def __init__(self, boundaries: Sequence, values: Sequence):
        who = type(self).__name__
        boundaries, values = list(boundaries), list(values)
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"{who}: values must have one more entry than boundaries. Received: "
                f"{len(boundaries)} boundaries and {len(values)} values"
            )
        self.boundaries = [_number(who, "boundaries", b) for b in boundaries]
        self.values = [_number(who, "values", v) for v in values]
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(
                f"{who}: boundaries must be increasing. Received: boundaries={boundaries!r}"
            )
        self._config = {"boundaries": self.boundaries, "values": self.values}

    def formula(self, step):
        pieces = [(sp.Float(v), step <= sp.Float(b)) for v, b in zip(self.values, self.boundaries)]
        return sp.Piecewise(*pieces, (sp.Float(self.values[-1]), True))


class PolynomialDecay(LearningRateSchedule):
    """``(initial - end) * (1 - step / decay_steps) ** power + end``, ``step`` capped at
    ``decay_steps``; with ``cycle`` the horizon is the next multiple of ``decay_steps`` instead."""

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        end_learning_rate=0.0001,
        power=1.0,
        cycle=False,
    ):
        who = type(self).__name__
        self.initial_learning_rate = _number(who, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(who, "decay_steps", decay_steps, positive=True)
        self.end_learning_rate = _number(who, "end_learning_rate", end_learning_rate)
        self.power = _number(who, "power", power)
        self.cycle = bool(cycle)
        self._config = {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
        }

    def formula(self, step):
        steps = sp.Float(self.decay_steps)
        if self.cycle:  # the first multiple of decay_steps at or above step (1 at step 0)
            steps = steps * sp.Max(-sp.floor(-step / steps), 1)
        else:
            step = sp.Min(step, steps)
        start, end = sp.Float(self.initial_learning_rate), sp.Float(self.end_learning_rate)
        return (start - end) * (1 - step / steps) ** sp.Float(self.power) + end


class CosineDecay(LearningRateSchedule):
    """Cosine decay from ``initial_learning_rate`` (or, after ``warmup_steps`` of linear
    warm-up, from ``warmup_target``) to ``alpha`` times that over ``decay_steps``:
    ``rate * ((1 - alpha) * (1 + cos(pi * step / decay_steps)) / 2 + alpha)``."""

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        alpha=0.0,
        warmup_target=None,
        warmup_steps=0,
    ):
        who = type(self).__name__
        self.initial_learning_rate = _number(who, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _number(who, "decay_steps", decay_steps, positive=True)
        self.alpha = _number(who, "alpha", alpha)
        self.warmup_target = (
            None if warmup_target is None else _number(who, "warmup_target", warmup_target)
        )
        self.warmup_steps = _number(who, "warmup_steps", warmup_steps, minimum=0)
        if self.warmup_target is not None and self.warmup_steps == 0:
            raise ValueError(
                f"{who}: a warm-up needs warmup_steps > 0. Received: warmup_steps={warmup_steps!r}"
            )
        self._config = {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }

    def _decay(self, step, rate):
        fraction = step / sp.Float(self.decay_steps)
        cosine = (1 + sp.cos(sp.pi * fraction)) / 2
        return rate * ((1 - sp.Float(self.alpha)) * cosine + sp.Float(self.alpha))

    def formula(self, step):
        start = sp.Float(self.initial_learning_rate)
        if self.warmup_target is None:
            return self._decay(sp.Min(step, sp.Float(self.decay_steps)), start)
        warmup, target = sp.Float(self.warmup_steps), sp.Float(self.warmup_target)
        step = sp.Min(step, sp.Float(self.decay_steps) + warmup)
        rising = (target - start) * step / warmup + start
        return sp.Piecewise((rising, step < warmup), (self._decay(step - warmup, target), True))


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR): period ``first_decay_steps``, each next
    period ``t_mul`` times longer and its peak ``m_mul`` times lower; floor ``alpha``."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
        who = type(self).__name__
        self.initial_learning_rate = _number(who, "initial_learning_rate", initial_learning_rate)
        self.first_decay_steps = _number(who, "first_decay_steps", first_decay_steps, positive=True)
        self.t_mul = _number(who, "t_mul", t_mul, positive=True)
        self.m_mul = _number(who, "m_mul", m_mul, minimum=0)
        self.alpha = _number(who, "alpha", alpha)
        self._config = {
            "initial_learning_rate": self.initial_learning_rate,
            "first_decay_steps": self.first_decay_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "alpha": self.alpha,
        }

    def formula(self, step):
        fraction = step / sp.Float(self.first_decay_steps)
        t_mul = sp.Float(self.t_mul)
        if self.t_mul == 1.0:  # periods of equal length
            restarts = sp.floor(fraction)
            fraction = fraction - restarts
        else:  # the period i starts at (1 - t_mul^i) / (1 - t_mul) periods
            restarts = sp.floor(sp.log(1 - fraction * (1 - t_mul)) / sp.log(t_mul))
            start = (1 - t_mul**restarts) / (1 - t_mul)
            fraction = (fraction - start) / t_mul**restarts
        peak = sp.Float(self.m_mul) ** restarts
        cosine = peak * (1 + sp.cos(sp.pi * fraction)) / 2
        alpha = sp.Float(self.alpha)
        return sp.Float(self.initial_learning_rate) * ((1 - alpha) * cosine + alpha)


SCHEDULES: dict[str, type] = {
    cls.__name__.lower(): cls
    for cls in (
        ExponentialDecay,
        InverseTimeDecay,
        PiecewiseConstantDecay,
        PolynomialDecay,
        CosineDecay,
        CosineDecayRestarts,
    )
}


def serialize(schedule: LearningRateSchedule) -> dict:
    """``{"class_name": "CosineDecay", "config": {...}}``, as Keras writes a schedule."""
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config: dict) -> LearningRateSchedule:
    """A schedule from :func:`serialize`'s dict; an unknown class name lists the known ones."""
    return from_identifier(
        str(config.get("class_name")),
        LearningRateSchedule,
        SCHEDULES,
        "learning-rate schedule",
        make=lambda cls, name: cls(**config.get("config", {})),
        known=[cls.__name__ for cls in SCHEDULES.values()],
    )
