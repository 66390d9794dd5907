"""symgrad.distributed.trials: one training of a sweep, and the compiled models it reuses.

A trial is a dict of hyperparameters.  Some of its keys are *runtime values* of
the compiled training step -- the optimizer's hyperparameters (``learning_rate``,
``momentum``, ``beta_1``...), ``seed`` (initial weights and shuffling),
``epochs`` and ``batch_size`` -- and everything else is handed to the user's
``build(hp)``, which returns the (uncompiled) model.  Two trials have the same
*structure* when their models have the same config and their compile settings
the same update rule (:func:`structure_key`): :class:`TrialRunner` compiles each
structure once and, for every further trial of it, resets the compiled model's
weights, optimizer slots, step counter and random generators instead -- the
result is bit for bit the one of a fresh model trained alone.

This module needs no Ray: the sweep's workers, the Tune trainable and
``sweep(..., num_workers=0)`` all run trials through it.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from symgrad import core as E
from symgrad.nn import losses as losses_module
from symgrad.nn import optimizers as optimizers_module
from symgrad.nn.callbacks import Callback
from symgrad.nn.trainer import NonFiniteLossError

COMPILE_KEYS = ("optimizer", "loss", "metrics", "backend", "dtype")


def expand(space) -> list[dict]:
    """The trials of ``space``: a dict of lists (their product, in order) or a list of dicts.

    >>> expand({"learning_rate": [0.1, 0.01], "seed": [0, 1]})[1]
    {'learning_rate': 0.1, 'seed': 1}
    """
    if isinstance(space, Mapping):
        keys = list(space)
        for k in keys:
            if isinstance(space[k], (str, bytes)) or not isinstance(space[k], (Sequence, range)):
                raise TypeError(
                    f"space values must be lists of the values to try. Received: {k}={space[k]!r}"
                )
        return [dict(zip(keys, values)) for values in itertools.product(*space.values())]
    if isinstance(space, Sequence) and all(isinstance(t, Mapping) for t in space):
        return [dict(t) for t in space]
    raise TypeError(
        "space must be a dict of lists (every combination is a trial) or a list of dicts "
        f"(one per trial). Received: space of type {type(space).__name__}"
    )


def check_compile_settings(settings: Mapping) -> dict:
    """The fixed compile arguments of a sweep (``optimizer``, ``loss``, ...), checked."""
    unknown = sorted(set(settings) - set(COMPILE_KEYS))
    if unknown:
        raise ValueError(
            f"compile takes {', '.join(COMPILE_KEYS)} (seed comes from each trial). "
            f"Received: {', '.join(unknown)}"
        )
    if settings.get("loss") is None:
        raise ValueError(
            f"compile needs a loss. Known losses: {', '.join(sorted(losses_module.LOSSES))}"
        )
    return dict(settings)


def trial_optimizer(settings: Mapping, hp: Mapping) -> optimizers_module.Optimizer:
    """A fresh optimizer for the trial: ``hp["optimizer"]`` or the sweep's, with its
    hyperparameters taken from ``hp`` where it names them."""
    identifier = hp.get("optimizer", settings.get("optimizer", "rmsprop"))
    if isinstance(identifier, optimizers_module.Optimizer):
        identifier = copy.deepcopy(identifier)  # never share slots between trials
    optimizer = optimizers_module.get(identifier)
    for key in type(optimizer).defaults:
        if key in hp:
            setattr(optimizer, key, hp[key])
    return optimizer


def structure_key(model, optimizer: optimizers_module.Optimizer, settings: Mapping) -> str | None:
    """What the compiled training step depends on, as text; None when it cannot be told.

    The model's config (layers, sizes, activations as formulas, names), the update
    rule on scalars (which holds what is fixed at compile time: momentum zero or
    not, ``nesterov``, ``centered``), the optimizer's other settings, the loss,
    metrics, backend and dtype.  Runtime hyperparameters are not in it.
    """
    try:
        config = model.get_config()
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return None
    runtime = type(optimizer).defaults
    fixed = {k: v for k, v in optimizer.get_config().items() if k not in runtime}
    loss = losses_module.get(settings["loss"])
    described = {
        "model": config,
        "optimizer": [type(optimizer).__name__, fixed, optimizer.rule_text()],
        "loss": [type(loss).__name__, loss.name, bool(getattr(loss, "from_logits", False))],
        "metrics": [m if isinstance(m, str) else repr(m) for m in settings.get("metrics") or []],
        "backend": settings.get("backend", "numpy"),
        "dtype": settings.get("dtype", "float32"),
    }
    try:
        return json.dumps(described, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None


def draws_masks(model) -> bool:
    """Whether the model's training step draws dropout masks: their seed is compiled into
    the step, so a compiled step serves only trials of the seed it was compiled with."""
    if not getattr(model, "built", False):
        return True  # cannot tell: assume it does
    graph = model._forward()
    roots = [graph.output, *graph.penalties, *graph.states.values()]
    return any(isinstance(node, E.DropoutMask) for node in E.topological(roots))


def step_key(model, optimizer: optimizers_module.Optimizer, settings: Mapping, seed) -> str | None:
    """The compiled training step a trial needs, as text; None when no other trial can share it.

    :func:`structure_key`, and the seed when the step draws dropout masks (a model with
    dropout and no seed gets fresh masks: its step is shared with no one).
    """
    key = structure_key(model, optimizer, settings)
    if key is None or not draws_masks(model):
        return key
    return None if seed is None else f"{key} seed={seed}"


def reset_for_trial(model, optimizer: optimizers_module.Optimizer, seed) -> None:
    """Make a compiled model start over as a fresh one compiled with ``optimizer`` and ``seed``.

    Weights are dropped (drawn again from the reseeded generator on first use, as
    after ``compile``), the slots refilled with their initial value, the step
    counter zeroed and the hyperparameters copied: the compiled programs stay.
    """
    current = model.optimizer
    for key in type(current).defaults:
        setattr(current, key, getattr(optimizer, key))
    for (_, slot), var in current.slots.items():
        var.value.fill(current.slot_initial_value(slot))
    current.iterations = 0
    for w in model.weights:
        w.value = None
    model._seed_rngs(seed)
    model._pending_optimizer_state = None
    model.stop_training = False


def built(model, input_shape):
    """``model`` built for samples of ``input_shape`` when it is not built yet (and one is given):
    its structure (weights, and whether it draws dropout masks) is known from then on."""
    if input_shape and not getattr(model, "built", True):  # () from data that is not rows
        model.build(input_shape=(None, *input_shape))
    return model


def compile_for_trial(
    model, optimizer: optimizers_module.Optimizer, settings: Mapping, seed
) -> None:
    """Compile the (built) ``model`` with ``optimizer``, ``seed`` and the other ``settings`` now.

    A model compiled here can start over for a later trial of its structure through
    :func:`reset_for_trial`.
    """
    args = {k: v for k, v in settings.items() if k != "optimizer"}
    model.compile(optimizer=optimizer, seed=seed, **args)
    model._train_step()  # compile now (an unbuilt model compiles on its first batch)


class TrialRunner:
    """Runs trials in this process, compiling each structure once (``compilations``).

    ``build(hp)`` returns an uncompiled model; ``settings`` are the compile
    arguments common to all trials; ``fit_args`` the arguments of ``fit``
    (``epochs``, ``batch_size``, ``validation_data``, ...), a trial's ``epochs`` and
    ``batch_size`` override them.
    """

    def __init__(self, build: Callable, settings: Mapping, x, y, fit_args: Mapping, models=None):
        self.build, self.settings = build, check_compile_settings(settings)
        self.x, self.y, self.fit_args = x, y, dict(fit_args)
        # compiled models by (step key, sample shape); a kept sweep worker passes the dict
        # it keeps for this build, so a later sweep of it reuses them
        self.models: dict[tuple, object] = {} if models is None else models
        self.compilations = 0
        self.compile_seconds = 0.0

    def model_for(self, hp: Mapping) -> tuple[object, bool]:
        """(the compiled model for the trial, whether it was compiled for it)."""
        model = self.build(dict(hp))  # build sees the whole trial
        shape = np.shape(self.x)[1:]
        model = built(model, shape)  # a model without input_dim: the data's
        optimizer = trial_optimizer(self.settings, hp)
        seed = hp.get("seed")
        key = step_key(model, optimizer, self.settings, seed)
        cached = self.models.get((key, shape)) if key is not None else None
        if cached is not None:
            reset_for_trial(cached, optimizer, seed)
            return cached, False
        start = time.perf_counter()
        compile_for_trial(model, optimizer, self.settings, seed)
        self.compile_seconds += time.perf_counter() - start
        self.compilations += 1
        if key is not None:
            self.models[(key, shape)] = model
        return model, True

    def fit(self, hp: Mapping, callbacks: Sequence[Callback] = ()):
        """(model, History, whether it compiled): the trial's training."""
        model, compiled = self.model_for(hp)
        args = dict(self.fit_args)
        args.update({k: hp[k] for k in ("epochs", "batch_size") if k in hp})
        args.setdefault("verbose", 0)
        history = model.fit(self.x, self.y, callbacks=list(callbacks), **args)
        return model, history, compiled

    def run(self, trial: int, hp: Mapping) -> dict:
        """The trial's row: ``status`` ``ok`` / ``non_finite`` / ``error``, its final logs,
        ``history`` (per-epoch lists), ``seconds`` (``compile_seconds`` of them compiling),
        ``compiled``, ``worker`` (pid)."""
        start = time.perf_counter()
        row = {"trial": trial, "hp": dict(hp), "worker": os.getpid(), "compiled": False}
        compiles_before, compiling_before = self.compilations, self.compile_seconds
        try:
            _, history, _ = self.fit(hp)
            row.update(status="ok", error=None, history=history.history)
        except NonFiniteLossError as err:
            row.update(status="non_finite", error=str(err), history=_history_of(err))
        except Exception as err:  # noqa: BLE001 - a bad trial is reported, the sweep goes on
            row.update(status="error", error=f"{type(err).__name__}: {err}", history={})
        row["compiled"] = self.compilations > compiles_before
        row["compile_seconds"] = self.compile_seconds - compiling_before
        row["metrics"] = {k: v[-1] for k, v in row["history"].items() if v}
        row["seconds"] = time.perf_counter() - start
        return row


def _history_of(err: NonFiniteLossError) -> dict:
    return err.history.history if err.history is not None else {}
