"""symgrad.nn.callbacks: Keras's training hooks.

``fit`` calls ``on_train_begin``, then per epoch ``on_epoch_begin``, per batch
``on_train_batch_begin`` / ``on_train_batch_end`` (logs: running means of the
epoch so far) and ``on_epoch_end`` (logs: the epoch's loss, metrics and
``val_*`` values), then ``on_train_end``.  A callback stops training by setting
``self.model.stop_training = True``.

With the LLVM backend a whole epoch runs as one native call, and the batch
hooks are not called -- unless a callback uses them (overrides
``on_train_batch_begin`` / ``on_train_batch_end``, or is a ``LambdaCallback``
given one): then ``fit`` runs step by step, as with the NumPy backend.

Example::

    >>> from symgrad.nn.callbacks import EarlyStopping
    >>> stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    >>> # model.fit(x, y, validation_split=0.2, callbacks=[stop])
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np


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

    def uses_batch_hooks(self) -> bool:
        """Whether a batch hook does something: then ``fit`` runs step by step to call it."""
        for hook in ("on_train_batch_begin", "on_train_batch_end"):
            if hook in vars(self) or getattr(type(self), hook) is not getattr(Callback, hook):
                return True
        return False


class CallbackList:
    """Calls the same hook on each callback, in order."""

    def __init__(self, callbacks, model, params: dict):
        self.callbacks = list(callbacks)
        for c in self.callbacks:
            c.set_model(model)
            c.set_params(params)

    def __getattr__(self, hook: str):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args):
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


def _format_value(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.4e}"


def _format_logs(logs: dict) -> str:
    return "".join(f" - {k}: {_format_value(v)}" for k, v in logs.items())


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

    ``on_batch_begin`` / ``on_batch_end`` are Keras's older names for the
    train-batch hooks.
    """

    def __init__(
        self,
        on_epoch_begin=None,
        on_epoch_end=None,
        on_train_begin=None,
        on_train_end=None,
        on_train_batch_begin=None,
        on_train_batch_end=None,
        on_batch_begin=None,
        on_batch_end=None,
    ):
        super().__init__()
        on_train_batch_begin = on_train_batch_begin or on_batch_begin
        on_train_batch_end = on_train_batch_end or on_batch_end
        hooks = {
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
            "on_train_batch_begin": on_train_batch_begin,
            "on_train_batch_end": on_train_batch_end,
        }
        for hook, fn in hooks.items():
            if fn is not None:
                setattr(self, hook, fn)
