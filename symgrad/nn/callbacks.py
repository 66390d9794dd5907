"""symgrad.nn.callbacks: Keras's training hooks.

``fit`` calls ``on_train_begin``, then per epoch ``on_epoch_begin``, per batch
``on_train_batch_begin`` / ``on_train_batch_end`` (logs: running means of the
epoch so far), the validation as ``evaluate`` runs it (``on_test_begin``, per
batch ``on_test_batch_begin`` / ``on_test_batch_end``, ``on_test_end``) and
``on_epoch_end`` (logs: the epoch's loss, metrics and ``val_*`` values), then
``on_train_end``.  ``evaluate(callbacks=...)`` calls the ``on_test_*`` hooks,
``predict(callbacks=...)`` the ``on_predict_*`` ones.  A callback stops training
by setting ``self.model.stop_training = True``.

With the LLVM backend a whole epoch runs as one native call, and the batch
hooks are not called -- unless a callback uses them (overrides
``on_train_batch_begin`` / ``on_train_batch_end``, or is a ``LambdaCallback``
given one): then ``fit`` runs step by step, as with the NumPy backend.  With the
progress bar (``verbose=1``) the epoch runs as native calls of about 0.2 s each, and
the batch hooks of callbacks that do not need every batch (the bar) are called
between them with the last batch of each call, as Keras's ``steps_per_execution``.

Example::

    >>> from symgrad.nn.callbacks import EarlyStopping
    >>> stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    >>> # model.fit(x, y, validation_split=0.2, callbacks=[stop])
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from codegen.files import write_atomic


class Callback:
    """Base class; every hook is a no-op. ``self.model`` and ``self.params`` are set by fit."""

    def __init__(self) -> None:
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs=None): ...

    def on_train_end(self, logs=None): ...

    def on_epoch_begin(self, epoch, logs=None): ...

    def on_epoch_end(self, epoch, logs=None): ...

    def on_train_batch_begin(self, batch, logs=None): ...

    def on_train_batch_end(self, batch, logs=None): ...

    def on_test_begin(self, logs=None): ...

    def on_test_end(self, logs=None): ...

    def on_test_batch_begin(self, batch, logs=None): ...

    def on_test_batch_end(self, batch, logs=None): ...

    def on_predict_begin(self, logs=None): ...

    def on_predict_end(self, logs=None): ...

    def on_predict_batch_begin(self, batch, logs=None): ...

    def on_predict_batch_end(self, batch, logs=None): ...

    terminates_on_nan = False
    """Whether a nan / inf loss ends ``fit`` quietly (the last good weights) instead of raising."""

    def uses_batch_hooks(self) -> bool:
        """Whether a batch hook does something: then ``fit`` runs step by step to call it."""
        for hook in ("on_train_batch_begin", "on_train_batch_end"):
            if hook in vars(self) or getattr(type(self), hook) is not getattr(Callback, hook):
                return True
        return False


HOOKS = tuple(name for name in vars(Callback) if name.startswith("on_"))
"""Every hook a callback may define, as Keras names them."""


def check(callbacks) -> list[Callback]:
    """``callbacks`` as a list, each a :class:`Callback` (else a TypeError naming it)."""
    callbacks = list(callbacks or [])
    for c in callbacks:
        if not isinstance(c, Callback):
            raise TypeError(
                f"callbacks must be symgrad.nn.callbacks.Callback instances. Received: {c!r}"
            )
    return callbacks


class CallbackList:
    """Calls the same hook on each callback, in order."""

    def __init__(self, callbacks, model, params: dict):
        self.callbacks = check(callbacks)
        for c in self.callbacks:
            c.set_model(model)
            c.set_params(params)

    def __getattr__(self, hook: str):
        if hook not in HOOKS:
            raise AttributeError(hook)

        indexed = hook.startswith(("on_epoch", "on_train_batch", "on_test_batch", "on_predict_b"))

        def call(*args):
            if len(args) < 1 + indexed:  # Keras passes logs to every hook, {} when there are none
                args = (*args, {})
            for c in self.callbacks:
                getattr(c, hook)(*args)

        return call


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is the per-epoch loss list."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def plot(self, keys: Sequence[str] | None = None, path: str | os.PathLike | None = None):
        """The curves of ``keys`` (default: the loss and every metric), one panel each with
        its ``val_`` curve; returns the matplotlib axes.  ``path``: also written there as an
        image (atomically; the format from the suffix) and the figure closed.

        Needs matplotlib (``pip install "symgrad[examples]"``), imported on first use.

        >>> history = model.fit(x, y, epochs=20, validation_split=0.2)
        >>> history.plot(path="loss.png")
        """
        keys = [k for k in self.history if not k.startswith("val_")] if keys is None else keys
        unknown = [k for k in keys if k not in self.history]
        if not keys or unknown:
            raise ValueError(
                f"History.plot: no such curve {unknown[0] if unknown else None!r}. "
                f"Recorded: {', '.join(self.history) or 'nothing (fit ran no epoch)'}. "
                f"Received: keys={keys!r}"
            )
        plt = _pyplot("History.plot")
        fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        for ax, key in zip(axes[0], keys):
            ax.plot(epochs, self.history[key], label=key)
            if f"val_{key}" in self.history:
                ax.plot(epochs, self.history[f"val_{key}"], label=f"val_{key}")
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.legend()
        fig.tight_layout()
        if path is not None:
            suffix = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
            image = io.BytesIO()
            fig.savefig(image, format=suffix)
            write_atomic(path, image.getvalue())
            plt.close(fig)
        return axes[0]


def _pyplot(who: str):
    """matplotlib.pyplot, imported on first use, or an ImportError that says how to get it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            f"{who} needs matplotlib, which is not installed: "
            'pip install "symgrad[examples]" (or pip install matplotlib)'
        ) from err
    return plt


def format_value(value) -> str:
    """A logged value as the bar shows it; an array (``F1Score(average=None)``: one per
    class) entry by entry in brackets."""
    if np.ndim(value):
        return "[" + " ".join(format_value(v) for v in np.ravel(value)) + "]"
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.4e}"


def _format_logs(logs: dict) -> str:
    return "".join(f" - {k}: {format_value(v)}" for k, v in logs.items())


def _format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(seconds)}s"


def _format_step_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


class ProgbarLogger(Callback):
    """Keras-style progress output on stdout: a ``\\r``-updated bar (verbose=1) or a line per epoch (2)."""

    def __init__(self, verbose: int = 1, width: int = 30, interval: float = 0.05):
        super().__init__()
        self.verbose, self.width, self.interval = verbose, width, interval
        self._last_length = 0

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self._write(f"Epoch {epoch + 1}/{self.params.get('epochs')}\n")
        self._start = time.perf_counter()
        self._last_update = 0.0
        self._last_length = 0

    def _bar(self, done: int, total: int) -> str:
        digits = len(str(total))
        filled = int(self.width * done / total) if total else self.width
        arrow = ">" if filled < self.width else ""
        bar = "=" * max(0, filled - (1 if arrow else 0)) + arrow
        return f"{done:>{digits}}/{total} [{bar:<{self.width}}]"

    def uses_batch_hooks(self) -> bool:
        return False  # the bar can also advance once per epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.verbose != 1:
            return
        now = time.perf_counter()
        steps = self.params.get("steps") or 0
        if batch + 1 >= steps or now - self._last_update < self.interval:
            return  # the last batch is printed by on_epoch_end
        self._last_update = now
        elapsed = now - self._start
        eta = elapsed / (batch + 1) * (steps - batch - 1)
        line = f"{self._bar(batch + 1, steps)} - ETA: {_format_duration(eta)}{_format_logs(logs or {})}"
        self._write("\r" + line.ljust(self._last_length))
        self._last_length = len(line)

    def on_epoch_end(self, epoch, logs=None):
        steps = self.params.get("steps") or 0
        elapsed = time.perf_counter() - self._start
        per_step = _format_step_time(elapsed / max(1, steps))
        if self.verbose == 1:
            line = f"{self._bar(steps, steps)} - {_format_duration(elapsed)} {per_step}{_format_logs(logs or {})}"
            self._write("\r" + line.ljust(self._last_length) + "\n")
        else:
            line = f"{steps}/{steps} - {_format_duration(elapsed)} - {per_step}{_format_logs(logs or {})}"
            self._write(line + "\n")


def _resolve_mode(mode: str, monitor: str, who: str) -> Callable[[float, float], bool]:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.startswith(("fmeasure", "auc"))) else "min"
    return np.greater if mode == "max" else np.less


def _monitored(logs: dict, monitor: str, who: str) -> float | None:
    value = (logs or {}).get(monitor)
    if value is None:
        warnings.warn(
            f"{who} is conditioned on metric {monitor!r}, which is not available. "
            f"Available metrics are: {', '.join(logs or {})}",
            stacklevel=3,
        )
    return value


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``restore_best_weights=True`` puts back the weights of the best epoch when
    it stops (Keras 3 semantics).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ):
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.baseline, self.restore_best_weights = baseline, bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.monitor_op = _resolve_mode(mode, monitor, "EarlyStopping")
        self.min_delta = abs(min_delta) if self.monitor_op is np.greater else -abs(min_delta)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = -math.inf if self.monitor_op is np.greater else math.inf
        self.best_weights = None
        self.best_epoch = 0

    def _is_improvement(self, value: float, reference: float) -> bool:
        return bool(self.monitor_op(value - self.min_delta, reference))

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored(logs, self.monitor, "EarlyStopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                if self.verbose:
                    print(
                        f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}."
                    )
                self.model.set_weights(self.best_weights)

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) after each epoch, or only when ``monitor`` improves.

    ``filepath`` may contain ``{epoch:02d}`` and log keys (``{val_loss:.3f}``).
    Files are written atomically: to a temporary file, then ``os.replace``.
    """

    def __init__(
        self,
        filepath: str,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        initial_value_threshold: float | None = None,
    ):
        super().__init__()
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = bool(save_best_only), bool(save_weights_only)
        self.monitor_op = _resolve_mode(mode, monitor, "ModelCheckpoint")
        default = -math.inf if self.monitor_op is np.greater else math.inf
        self.best = default if initial_value_threshold is None else float(initial_value_threshold)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = _monitored(logs, self.monitor, "ModelCheckpoint")
            if current is None or not self.monitor_op(current, self.best):
                return
            if self.verbose:
                print(
                    f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}, saving model to {path}"
                )
            self.best = current
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.

    Any hook of :data:`HOOKS` may be given; ``on_batch_begin`` / ``on_batch_end`` are
    Keras's older names for the train-batch hooks.
    """

    def __init__(self, on_batch_begin=None, on_batch_end=None, **hooks):
        super().__init__()
        unknown = sorted(set(hooks) - set(HOOKS))
        if unknown:
            raise TypeError(
                f"LambdaCallback got unknown hook(s): {', '.join(unknown)}. "
                f"Known hooks: {', '.join(HOOKS)}"
            )
        hooks.setdefault("on_train_batch_begin", on_batch_begin)
        hooks.setdefault("on_train_batch_end", on_batch_end)
        for hook, fn in hooks.items():
            if fn is not None:
                setattr(self, hook, fn)


def _learning_rate(model, who: str) -> float:
    """The optimizer's rate as a number (a schedule has none to change)."""
    rate = model.optimizer.learning_rate
    if callable(rate):
        raise TypeError(
            f"{who} changes a fixed learning rate; the optimizer's is a schedule. "
            f"Received: learning_rate={rate!r}"
        )
    return float(rate)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs; wait ``cooldown`` epochs after a cut; never below
    ``min_lr`` (Keras 3 semantics). The epoch logs gain ``learning_rate``."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        super().__init__()
        if not 0 < factor < 1:
            raise ValueError(
                f"ReduceLROnPlateau: factor must be in (0, 1) (the rate is multiplied by it). "
                f"Received: factor={factor!r}"
            )
        if min_lr < 0:
            raise ValueError(f"ReduceLROnPlateau: min_lr must be >= 0. Received: min_lr={min_lr!r}")
        self.monitor, self.factor, self.patience = monitor, float(factor), int(patience)
        self.verbose, self.min_delta, self.cooldown = verbose, abs(min_delta), int(cooldown)
        self.min_lr = float(min_lr)
        self.monitor_op = _resolve_mode(mode, monitor, "ReduceLROnPlateau")

    def on_train_begin(self, logs=None):
        self.wait, self.cooldown_counter = 0, 0
        self.best = -math.inf if self.monitor_op is np.greater else math.inf

    def _improved(self, current: float) -> bool:
        if self.monitor_op is np.greater:
            return current > self.best + self.min_delta
        return current < self.best - self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        rate = _learning_rate(self.model, "ReduceLROnPlateau")
        logs["learning_rate"] = rate
        current = _monitored(logs, self.monitor, "ReduceLROnPlateau")
        if current is None:
            return
        cooling = self.cooldown_counter > 0
        if cooling:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best, self.wait = current, 0
            return
        if cooling:
            return
        self.wait += 1
        if self.wait >= self.patience and rate > self.min_lr:
            new_rate = max(rate * self.factor, self.min_lr)
            self.model.optimizer.learning_rate = new_rate
            if self.verbose:
                print(
                    f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_rate}."
                )
            self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch to ``schedule(epoch, rate)`` (or
    ``schedule(epoch)``), a number > 0; the epoch logs gain ``learning_rate``."""

    def __init__(self, schedule: Callable, verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                f"LearningRateScheduler needs a function epoch -> rate. Received: "
                f"schedule={schedule!r}"
            )
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        rate = _learning_rate(self.model, "LearningRateScheduler")
        try:
            new_rate = self.schedule(epoch, rate)
        except TypeError:  # Keras's older one-argument form
            new_rate = self.schedule(epoch)
        if isinstance(new_rate, (bool, np.bool_)) or not isinstance(
            new_rate, (int, float, np.floating, np.integer)
        ):
            raise ValueError(
                f"LearningRateScheduler: the schedule must return a number. Received: "
                f"{new_rate!r} at epoch {epoch}"
            )
        self.model.optimizer.learning_rate = float(new_rate)  # checked there: finite, > 0
        if self.verbose:
            print(
                f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {new_rate}."
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class CSVLogger(Callback):
    """One CSV row per epoch (``epoch`` and the sorted log keys); the whole file is rewritten
    atomically after each epoch, so it is never half-written. ``append=True`` continues an
    existing file (its header is kept)."""

    def __init__(self, filename, separator: str = ",", append: bool = False):
        super().__init__()
        if not isinstance(separator, str) or len(separator) != 1 or separator in '\n\r"':
            raise ValueError(
                f"CSVLogger: separator must be one character other than a quote or a line "
                f"break. Received: separator={separator!r}"
            )
        self.filename, self.separator, self.append = Path(filename), separator, bool(append)

    def on_train_begin(self, logs=None):
        self._text = ""
        self._keys = None
        if self.append and self.filename.exists():
            self._text = self.filename.read_text(encoding="utf-8")
            header = self._text.splitlines()[0] if self._text.strip() else ""
            self._keys = header.split(self.separator)[1:] if header else None

    def _cell(self, value) -> str:
        if isinstance(value, str):
            return f'"{value}"' if self.separator in value else value
        return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            self._text += self.separator.join(["epoch", *self._keys]) + "\n"
        row = [str(epoch), *(self._cell(logs.get(k, "NA")) for k in self._keys)]
        self._text += self.separator.join(row) + "\n"
        write_atomic(self.filename, self._text.encode("utf-8"))


class TerminateOnNaN(Callback):
    """End ``fit`` quietly when the loss becomes nan or inf (Keras prints
    ``Batch N: Invalid loss, terminating training``). The failing step writes nothing, so
    the weights are those after the last good step; the native epoch stays on."""

    terminates_on_nan = True

    def __init__(self) -> None:
        super().__init__()
        self.stopped_batch: int | None = None

    def on_non_finite(self, batch: int) -> None:
        """Called by ``fit`` with the 0-based batch whose loss (or update) was not finite."""
        self.stopped_batch = batch
        print(f"Batch {batch}: Invalid loss, terminating training")
        self.model.stop_training = True


class BackupAndRestore(Callback):
    """Resume an interrupted ``fit``: after every epoch (or every ``save_freq`` batches) the
    weights, optimizer state and epoch go to ``backup_dir``; a later ``fit`` with the same
    directory loads them and continues from the next epoch. The backup is deleted when
    training ends normally (``delete_checkpoint=True``). Files are written atomically.
    The shuffling order is not restored (the model's generator goes on from where it is)."""

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint: bool = True):
        super().__init__()
        if save_freq != "epoch" and (
            isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq <= 0
        ):
            raise ValueError(
                f"BackupAndRestore: save_freq must be 'epoch' or a number of batches > 0. "
                f"Received: save_freq={save_freq!r}"
            )
        self.backup_dir, self.save_freq = Path(backup_dir), save_freq
        self.delete_checkpoint = bool(delete_checkpoint)
        self._weights = self.backup_dir / "latest.weights.npz"
        self._metadata = self.backup_dir / "training_metadata.json"

    def uses_batch_hooks(self) -> bool:
        return self.save_freq != "epoch"

    def on_train_begin(self, logs=None):
        self._epoch, self._batches = 0, 0
        if self._weights.exists() and self._metadata.exists():
            self.model.load_weights(self._weights)
            metadata = json.loads(self._metadata.read_text(encoding="utf-8"))
            self.model._initial_epoch = int(metadata["epoch"])
            self._epoch = int(metadata["epoch"])

    def _save(self, epoch: int) -> None:
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_weights(self._weights)
        write_atomic(self._metadata, json.dumps({"epoch": epoch}).encode("utf-8"))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.save_freq != "epoch" and self._batches % self.save_freq == 0:
            self._save(self._epoch)  # mid-epoch: that epoch is run again from its start

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch + 1)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and self.backup_dir.exists():
            for path in (self._weights, self._metadata):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: the user's files stay
                self.backup_dir.rmdir()
