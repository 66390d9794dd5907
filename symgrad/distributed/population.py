"""symgrad.distributed.population: K copies of one model trained in one native call per epoch.

A sweep over a small model (the digits MLP: 64-32-10) leaves a core mostly idle:
each step is a few small matrix products and the per-call overhead is a large part
of it.  A :class:`Population` trains K *members* -- one model structure, each with
its own hyperparameters and seed -- as one program: the graph holds the K copies of
the layers side by side (member ``k``'s weights are named ``m<k>_<layer>_kernel``...),
all reading the same rows ``X`` and targets ``Y``; the step's loss is the sum of the
members' losses, whose gradients are disjoint, so each member's gradient is its solo
gradient; each member's update reads its own runtime hyperparameters
(``learning_rate_m3``, ``momentum_m3``...), so one compiled program serves any values.
With the LLVM backend an epoch of all K members is one native call.

Members share the batch order (one order per epoch for all of them): a member's
weights and history are bit for bit those of the same model trained alone with
``compile(seed=member's seed)`` and ``fit(..., shuffle=False)`` -- or given the same
order.  A step in which any member's loss, gradients or new weights are not finite
writes nothing for any member; :class:`MemberNonFinite` names the members at fault
(their hyperparameters) and the others can be trained again without them
(``sweep(..., population=K)`` does that, and runs the failed ones alone).
"""

from __future__ import annotations

import copy
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import sympy as sp

from symgrad import compiler
from symgrad import core as E
from symgrad.distributed import trials
from symgrad.nn import losses as losses_module
from symgrad.nn import models
from symgrad.nn import optimizers as optimizers_module
from symgrad.nn import validation as data
from symgrad.nn.layers import Input
from symgrad.nn.trainer import (
    GUARD_UPDATES,
    NonFiniteLossError,
    Tracker,
    _loss_and_gradients,
    runtime_scalars,
)


class MemberNonFinite(NonFiniteLossError):
    """A step of the population was not finite: ``members`` are the indices at fault.

    Nothing of the failing step was written, for any member: weights, slots and the
    step counter are those after the last good step.  ``histories`` holds every
    member's completed epochs.
    """

    def __init__(self, message: str, epoch: int, batch: int, members: list[int], histories):
        super().__init__(message, epoch, batch)
        self.members, self.histories = members, histories


def member_prefix(k: int) -> str:
    return f"m{k}"


def _metric_key(name: str, stat: str, prefix: str) -> str:
    """The step's output of a member's metric statistic (``accuracy_total_m3``)."""
    word = re.sub(r"\W", "_", name)
    return f"{word}_{stat}_{prefix}"


def _renamed_config(config: dict, prefix: str) -> dict:
    """A Sequential's config with the model and each layer named ``<prefix>_...``."""
    config = copy.deepcopy(config)
    config["name"] = prefix
    for layer in config["layers"]:
        layer["config"]["name"] = f"{prefix}_{layer['config']['name']}"
    return config


class Population:
    """K members of one structure, trained together: ``fit`` runs one native call per epoch.

    ``build(hp)`` returns an uncompiled ``Sequential`` for a member's hyperparameters
    (as for :func:`symgrad.distributed.sweep`); ``members`` is a list of such dicts
    (``learning_rate``, ``momentum``, ``beta_1``..., ``seed``); ``compile`` the compile
    settings all members share (``optimizer``, ``loss``, ``metrics``, ``backend``,
    ``dtype``).  Every member must have the same structure
    (:func:`~symgrad.distributed.trials.structure_key`).

    >>> pop = Population(build, [{"learning_rate": lr, "seed": s} for lr in (0.1, 0.3)
    ...                          for s in range(8)], compile=settings)
    >>> histories = pop.fit(x, y, epochs=10, batch_size=32)   # one dict of lists per member
    >>> pop.member_weights(3)    # member 3's weights, as its solo model.get_weights()
    """

    def __init__(
        self,
        build: Callable,
        members: Sequence[Mapping],
        *,
        compile: Mapping,  # noqa: A002 - the settings of model.compile, by that name
        input_shape: Sequence[int] | None = None,
    ):
        self.settings = trials.check_compile_settings(compile)
        self.members = [dict(hp) for hp in members]
        if not self.members:
            raise ValueError("A population needs at least one member. Received: members=[]")
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.build = lambda hp: trials.built(build(hp), self.input_shape)
        self.optimizers = [trials.trial_optimizer(self.settings, hp) for hp in self.members]
        self.reference = self.build(dict(self.members[0]))  # a solo model: draws, evaluates
        if not getattr(self.reference, "built", False):
            raise ValueError(
                "A population needs the input shape: give the first layer input_dim (or "
                "input_shape), or pass Population(..., input_shape=(features,)). "
                f"Received: input_shape={input_shape!r}"
            )
        self._check_members()
        self.iterations = 0
        self.compilations = 0
        self._step = None
        self._diagnosis = None
        self.histories: list[dict[str, list[float]]] = [{} for _ in self.members]

    # -- structure
    def _structure(self, members: list[dict], optimizers: list, first=None) -> str:
        """The members' common structure key; an error names the member that differs or that
        a population cannot train.  ``first``: member 0's model, already built."""
        key = None
        for k, (hp, opt) in enumerate(zip(members, optimizers)):
            model = first if k == 0 and first is not None else self.build(dict(hp))
            if not isinstance(model, models.Sequential):
                raise TypeError(
                    "A population's build must return a Sequential. "
                    f"Received: {type(model).__name__} for member {k}"
                )
            if opt.global_slot_names() or opt.global_clipnorm is not None:
                raise ValueError(  # one value for the whole model: it would be shared
                    f"A population cannot train {type(opt).__name__} with a state kept once per "
                    f"model (Nadam's momentum product, global_clipnorm). Received: optimizer={opt!r}"
                )
            if callable(opt._hyper.get("learning_rate")) and not opt.compiled_schedule():
                raise ValueError(
                    "A population needs learning rates the step can read (numbers or "
                    f"symgrad schedules). Received: learning_rate={opt.learning_rate!r} for "
                    f"member {k}"
                )
            this = trials.structure_key(model, opt, self.settings)
            if this is None:
                raise ValueError(f"The model of member {k} has no config: {model!r}")
            if key is not None and this != key:
                raise ValueError(
                    "Every member of a population must have the same structure (model config "
                    "and update rule). Received: member 0 and member "
                    f"{k} ({members[k]!r}) differ"
                )
            key = this
        return key

    def _check_members(self) -> None:
        self.key = self._structure(self.members, self.optimizers, self.reference)
        args = {k: v for k, v in self.settings.items() if k != "optimizer"}
        self.reference.compile(optimizer=copy.deepcopy(self.optimizers[0]), **args)
        if trials.draws_masks(self.reference):
            raise ValueError(
                "A population cannot train models with dropout (the masks' seed is compiled "
                "into the step, one per member)"
            )
        self.dtype, self.backend = self.reference.dtype, self.reference.backend
        config = self.reference.get_config()
        self.copies = [
            models.model_from_config(_renamed_config(config, member_prefix(k)))
            for k in range(len(self.members))
        ]
        shape = tuple(self.reference.input_shape)
        x = Input(shape=shape[1:] if shape and shape[0] is None else shape, name="x")
        self.model = models.Model(x, [m(x) for m in self.copies], name="population")
        self._draw_initial_weights()

    def reset(self, members: Sequence[Mapping]) -> None:
        """Start over with other members of the same structure and number: the compiled
        program stays; weights are drawn from their seeds, slots refilled, the step
        counter zeroed, the histories emptied (a sweep's worker reuses a population so)."""
        members = [dict(hp) for hp in members]
        if len(members) != len(self.members):
            raise ValueError(
                f"reset takes as many members as the population has ({len(self.members)}). "
                f"Received: {len(members)} members"
            )
        optimizers = [trials.trial_optimizer(self.settings, hp) for hp in members]
        if self._structure(members, optimizers) != self.key:
            raise ValueError(
                "reset takes members of the population's structure (model config and update "
                f"rule). Received: members={members!r}"
            )
        for current, new in zip(self.optimizers, optimizers):
            for key in type(current).defaults:
                setattr(current, key, getattr(new, key))
            for (_, slot), var in current.slots.items():
                var.value.fill(current.slot_initial_value(slot))
            current.iterations = 0
        self.members, self.iterations = members, 0
        self.histories = [{} for _ in members]
        self._draw_initial_weights()

    def _draw_initial_weights(self) -> None:
        """Each member's initial weights: those ``compile(seed=its seed)`` draws alone."""
        ref = self.reference
        for k, hp in enumerate(self.members):
            ref._seed_rngs(hp.get("seed"))
            for w in ref.weights:
                w.value = None
            ref._materialize()
            for mine, solo in zip(self.copies[k].weights, ref.weights):
                mine.value = solo.value.copy()
        for w in ref.weights:
            w.value = None

    # -- the program
    def _graph(self):
        graph = self.model._forward()
        parts = graph.output.body.args  # P = [P_m0 | P_m1 | ...]
        loss = losses_module.get(self.settings["loss"])
        n, classes = parts[0].shape
        y = loss.labels(n, classes)
        metrics = self.reference._metric_objects()
        members = []
        for copy_k, output in zip(self.copies, parts):
            weights = [w for w in copy_k.weights if w.trainable]
            own = {w.symbol for w in copy_k.weights}
            penalties = [p for p in graph.penalties if p.free_symbols & own]
            _, simplified, gradients, _ = _loss_and_gradients(
                loss, y, output, penalties, [w.symbol for w in weights]
            )
            means = {}
            for metric in metrics:
                formulas = metric.batch_means(loss.target_part(y), output)
                if formulas is None:
                    raise ValueError(
                        f"A population needs metrics computed in the step. Received: "
                        f"metric {metric.name!r}"
                    )
                means[metric.name] = formulas
            self._metric_stats = [list(stats) for stats in means.values()]
            members.append((weights, simplified, gradients, means))
        return graph, y, members

    def _rename(self, k: int, exprs: dict) -> tuple[dict, dict]:
        """Member ``k``'s updates with its hyperparameters renamed ``<name>_m<k>``."""
        found = runtime_scalars(list(exprs.values()))
        table = {
            s: sp.Symbol(f"{s.name}_{member_prefix(k)}", real=True)
            for s in found
            if s != optimizers_module.STEP
        }
        renamed = {target: value.xreplace(table) for target, value in exprs.items()}
        return renamed, {new: (k, old) for old, new in table.items()}

    def _compile(self):
        graph, y, members = self._graph()
        outputs, updates, self._scalar_owner = {}, dict(graph.states), {}
        self.slots = []
        gradient_sums, losses = [], []
        for k, (weights, loss_k, gradients, means) in enumerate(members):
            opt = self.optimizers[k]
            self.slots += opt.build(weights, self.dtype)
            renamed, owners = self._rename(k, opt.updates(weights, gradients))
            updates.update(renamed)
            self._scalar_owner.update(owners)
            prefix = member_prefix(k)
            outputs[f"loss_{prefix}"] = loss_k
            outputs.update(
                {
                    _metric_key(name, stat, prefix): mean
                    for name, stats in means.items()
                    for stat, mean in stats.items()
                }
            )
            losses.append(loss_k)
            gradient_sums += [E.total(d) for d in gradients.values()]
        outputs = {"loss": E.add(*losses), **outputs}
        sums = tuple(outputs)
        inputs = [
            graph.x,
            y,
            *(w.symbol for w in self.model.weights),
            *(s.symbol for s in self.slots),
        ]
        scalars = runtime_scalars([*outputs.values(), *updates.values()])
        checks = {"gradient_sum": E.add(*gradient_sums)} if gradient_sums else {}
        if GUARD_UPDATES and updates:
            checks["update_sum"] = E.add(*(E.total(u) for u in updates.values()))
        epoch = None
        if self.reference._programs().backend.epochs:
            counter = optimizers_module.STEP.name
            counter = counter if counter in {s.name for s in scalars} else None
            epoch = {"x_input": graph.x.name, "y_input": y.name, "sums": sums, "counter": counter}
        self._step = compiler.compile(
            inputs,
            outputs,
            updates=updates,
            scalars=scalars,
            guards=("loss",),
            checks=checks,
            epoch=epoch,
            backend=self.backend,
            dtype=self.dtype,
            name="population_step",
        )
        self.compilations += 1
        self._outputs = list(outputs)
        return self._step

    def train_step(self):
        """The compiled step of all members (compiled on first use)."""
        return self._step if self._step is not None else self._compile()

    def scalar_values(self, symbols) -> list[float]:
        """The step's scalars: each member's hyperparameters, and the shared step ``t``."""
        values = []
        for s in symbols:
            if s == optimizers_module.STEP:
                values.append(float(self.iterations + 1))
                continue
            k, base = self._scalar_owner[s]
            opt = self.optimizers[k]
            opt.iterations = self.iterations  # a schedule reads it
            values.append(opt.scalar_values([base], self.dtype)[0])
        return values

    # -- training
    def fit(
        self,
        x,
        y,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        validation_data=None,
        shuffle: bool = False,
        seed: int | None = None,
    ) -> list[dict[str, list[float]]]:
        """Train every member for ``epochs``; returns one history (dict of lists) per member.

        ``shuffle=True`` draws one order per epoch for all members from ``seed``; the
        default keeps the rows' order, as ``fit(..., shuffle=False)`` of a solo model.
        """
        epochs = data.non_negative_int(epochs, "epochs")
        batch_size = data.positive_int(batch_size, "batch_size")
        ref = self.reference
        x, y = ref._prepare_xy(x, y)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(
                    "validation_data must be a tuple (x_val, y_val). "
                    f"Received: validation_data of type {type(validation_data).__name__}"
                )
            val = ref._prepare_xy(*validation_data, names=("x_val", "y_val"))
        fn = self.train_step()
        rng = np.random.default_rng(seed)
        trackers = [Tracker(copy.deepcopy(ref._metric_objects())) for _ in self.members]
        for epoch in range(epochs):
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            sums = self._epoch(fn, x, y, order, batch_size, epoch)
            for k, tracker in enumerate(trackers):
                logs = self._member_logs(k, tracker, sums, len(order))
                if val is not None:
                    logs.update(self._validation(k, val, batch_size))
                for key, value in logs.items():
                    self.histories[k].setdefault(key, []).append(value)
        return self.histories

    def _arrays(self) -> list[np.ndarray]:
        return [*(w.value for w in self.model.weights), *(s.value for s in self.slots)]

    def _epoch(self, fn, x, y, order, batch_size: int, epoch: int) -> dict:
        steps = -(-len(order) // batch_size)
        if fn.epoch is None:  # NumPy: one call per step of every member
            return self._python_epoch(fn, x, y, order, batch_size, epoch)
        values = self.scalar_values(fn.scalars)
        counter = fn.epoch.counter
        scalars = [v for s, v in zip(fn.scalars, values) if s.name != counter]
        try:
            result = fn.epoch(
                x,
                y,
                *self._arrays(),
                *scalars,
                batch_size=batch_size,
                order=order,
                counter_start=self.iterations,
            )
        except FloatingPointError as err:
            failed = getattr(err, "batch", 0)
            self.iterations += failed
            raise self._non_finite(x, y, order, batch_size, epoch, failed, steps) from err
        self.iterations += result.steps
        return dict(result.sums)

    def _python_epoch(self, fn, x, y, order, batch_size, epoch) -> dict:
        steps = -(-len(order) // batch_size)
        sums = dict.fromkeys(self._outputs, 0.0)  # each: rows x batch mean, in float64
        for batch in range(steps):
            rows = order[batch * batch_size : (batch + 1) * batch_size]
            values = self.scalar_values(fn.scalars)
            try:
                with np.errstate(all="ignore"):
                    outs = fn(x[rows], y[rows], *self._arrays(), *values)
            except FloatingPointError as err:
                raise self._non_finite(x, y, order, batch_size, epoch, batch, steps) from err
            self.iterations += 1
            for key, value in zip(self._outputs, outs):
                sums[key] = sums[key] + value[0].astype(np.float64) * len(rows)
        return sums

    def _member_logs(self, k: int, tracker: Tracker, sums: dict, rows: int) -> dict:
        prefix = member_prefix(k)
        tracker.reset()
        loss = np.asarray(sums[f"loss_{prefix}"], dtype=np.float64).reshape(-1)[0]
        keys = [
            {stat: _metric_key(m.name, stat, prefix) for stat in stats}
            for m, stats in zip(tracker.metrics, self._metric_stats)
        ]
        tracker.add_epoch({**sums, "loss": float(loss)}, rows, keys)
        return tracker.logs()

    def _with_member(self, k: int):
        """The reference model holding member ``k``'s weights (the same arrays)."""
        for solo, mine in zip(self.reference.weights, self.copies[k].weights):
            solo.value = mine.value
        return self.reference

    def _validation(self, k: int, val, batch_size: int) -> dict:
        ref = self._with_member(k)
        tracker = Tracker(copy.deepcopy(ref._metric_objects()), "val_")
        return ref._evaluate_arrays(val[0], val[1], batch_size, tracker)

    def member_weights(self, k: int) -> list[np.ndarray]:
        """Member ``k``'s weights, as ``get_weights()`` of its solo model gives them."""
        return self._with_member(k).get_weights()

    # -- a step that was not finite
    def _non_finite(self, x, y, order, batch_size, epoch, batch, steps) -> MemberNonFinite:
        rows = order[batch * batch_size : (batch + 1) * batch_size]
        bad = self._members_at_fault(x[rows], y[rows])
        named = ", ".join(f"{k} {self.members[k]!r}" for k in bad) or "none found"
        return MemberNonFinite(
            f"The loss, a gradient or a new weight of member(s) {named} became nan or inf at "
            f"epoch {epoch + 1}, batch {batch + 1} of {steps}; nothing of that step was "
            f"written for any member (step counter {self.iterations}). Train the others "
            "again without them.",
            epoch + 1,
            batch + 1,
            bad,
            self.histories,
        )

    def _members_at_fault(self, xb, yb) -> list[int]:
        """Members whose loss, gradients or new weights are not finite on this batch."""
        if self._diagnosis is None:
            graph, y, members = self._graph()
            outputs = {}
            for k, (weights, loss_k, gradients, _) in enumerate(members):
                opt = self.optimizers[k]
                renamed, _ = self._rename(k, opt.updates(weights, gradients))
                terms = [loss_k, *(E.total(d) for d in gradients.values())]
                terms += [E.total(u) for u in renamed.values()]
                outputs[member_prefix(k)] = E.add(*terms)
            inputs = [graph.x, y, *(w.symbol for w in self.model.weights)]
            inputs += [s.symbol for s in self.slots]
            self._diagnosis = compiler.compile(
                inputs,
                outputs,
                scalars=self._step.scalars,
                backend="numpy",
                dtype=self.dtype,
                name="population_check",
            )
        with np.errstate(all="ignore"):
            outs = self._diagnosis(xb, yb, *self._arrays(), *self.scalar_values(self._step.scalars))
        return [k for k, v in enumerate(outs) if not np.isfinite(v).all()]


# --------------------------------------------------------------------------
# In a sweep


def groups(
    build: Callable,
    settings: Mapping,
    plan: Sequence[Mapping],
    size: int,
    input_shape: Sequence[int] | None = None,
) -> list[list[int]]:
    """The trials of ``plan`` as populations of up to ``size``: trials of one compiled step
    (:func:`~symgrad.distributed.trials.step_key`), epochs and batch size, in plan order;
    a trial whose step no other can share is a group of its own.  With ``size > 1`` it calls
    ``build(hp)`` once per trial (layers only, built for ``input_shape``, no compilation) to
    tell the structures."""
    if size == 1:  # no structure to tell: build is not called here
        return [[i] for i in range(len(plan))]
    open_groups: dict[str, list[int]] = {}
    out: list[list[int]] = []
    for i, hp in enumerate(plan):
        model = trials.built(build(dict(hp)), input_shape)
        optimizer = trials.trial_optimizer(settings, hp)
        key = trials.step_key(model, optimizer, settings, hp.get("seed"))
        if key is None:
            out.append([i])
            continue
        key = f"{key} epochs={hp.get('epochs')} batch_size={hp.get('batch_size')}"
        group = open_groups.get(key)
        if group is None or len(group) == size:
            group = open_groups[key] = []
            out.append(group)
        group.append(i)
    return out


class PopulationRunner:
    """Runs a group of trials as one population on a :class:`TrialRunner`'s data and settings.

    Populations are kept by structure and size and reused (``Population.reset``).  A
    group of fewer than ``size`` trials is padded to ``size`` with copies of its first
    trial, whose rows are dropped, so one population per structure is compiled.  A
    group a population cannot train (dropout, Nadam, a model that is not a Sequential)
    runs trial by trial; members named by :class:`MemberNonFinite` run alone (their
    rows are their solo runs' rows) and the others train again as a population without
    them.  Every row is the one its trial alone with ``shuffle=False`` gives.
    """

    def __init__(self, runner: trials.TrialRunner, size: int = 1, populations=None):
        self.runner, self.size = runner, size
        # by (step key, size, sample shape); a kept sweep worker passes the dict it keeps
        self.populations: dict[tuple, Population] = {} if populations is None else populations

    def run(self, indexed: Sequence[tuple[int, Mapping]]) -> list[dict]:
        pending = [(i, dict(hp)) for i, hp in indexed]
        rows: dict[int, dict] = {}
        owed = 0.0  # seconds of a population compiled here: the first row written says so
        compiled_here = False
        while pending:
            if len(pending) == 1:
                rows.update(self._alone(pending))
                break
            start = time.perf_counter()
            members = [hp for _, hp in pending]
            members += [members[0]] * (self.size - len(members))  # inert: trained, dropped
            try:
                pop, compiled = self._population(members)
            except (TypeError, ValueError):  # nothing to share: each trial alone
                rows.update(self._alone(pending))
                break
            if compiled:
                compiled_here, owed = True, owed + time.perf_counter() - start
            try:
                histories = pop.fit(self.runner.x, self.runner.y, **self._fit_args(pending[0][1]))
            except MemberNonFinite as err:
                # a padding copy fails exactly when the member it copies does
                named = sorted({k if k < len(pending) else 0 for k in err.members})
                bad = [pending[k] for k in named] or pending
                rows.update(self._alone(bad))
                pending = [p for p in pending if p not in bad]
                continue
            except Exception as err:  # noqa: BLE001 - reported in every member's row
                message = f"{type(err).__name__}: {err}"
                histories, status = [{} for _ in pending], ("error", message)
            else:
                status = ("ok", None)
            seconds = (time.perf_counter() - start) / len(pending)
            for k, (i, hp) in enumerate(pending):
                first = compiled_here and k == 0
                rows[i] = self._row(i, hp, *status, histories[k], seconds, first, len(members))
                rows[i]["compile_seconds"] = owed if first else 0.0
            break
        return [rows[i] for i, _ in indexed]

    def _fit_args(self, hp: Mapping) -> dict:
        args = self.runner.fit_args
        if args.get("shuffle", True):
            raise ValueError(
                "A population trains its members in one batch order: sweep(..., population=K) "
                "needs shuffle=False. Received: shuffle=True"
            )
        return {
            "epochs": hp.get("epochs", args.get("epochs", 1)),
            "batch_size": hp.get("batch_size", args.get("batch_size", 32)),
            "validation_data": args.get("validation_data"),
        }

    def _population(self, members: list[dict]) -> tuple[Population, bool]:
        """A population for ``members`` (a kept one reset, or a new one) and whether it is new."""
        runner = self.runner
        shape = np.shape(runner.x)[1:]
        model = trials.built(runner.build(dict(members[0])), shape)
        optimizer = trials.trial_optimizer(runner.settings, members[0])
        key = (
            trials.step_key(model, optimizer, runner.settings, members[0].get("seed")),
            len(members),
            shape,
        )
        kept = self.populations.get(key) if key[0] is not None else None
        if kept is not None:
            kept.reset(members)
            return kept, False
        start = time.perf_counter()
        pop = Population(runner.build, members, compile=runner.settings, input_shape=shape)
        pop.train_step()
        runner.compilations += 1
        runner.compile_seconds += time.perf_counter() - start
        if key[0] is not None:
            self.populations[key] = pop
        return pop, True

    def _alone(self, indexed) -> dict[int, dict]:
        return {i: {**self.runner.run(i, hp), "population": 1} for i, hp in indexed}

    @staticmethod
    def _row(i, hp, status, error, history, seconds, compiled, size) -> dict:
        return {
            "trial": i,
            "hp": dict(hp),
            "worker": os.getpid(),
            "compiled": compiled,
            "status": status,
            "error": error,
            "history": history,
            "metrics": {k: v[-1] for k, v in history.items() if v},
            "seconds": seconds,
            "compile_seconds": 0.0,
            "population": size,
        }
