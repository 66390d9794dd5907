"""symgrad.nn.interrupts: a Ctrl-C during ``fit`` waits until the step in flight is complete.

A KeyboardInterrupt raised in the middle of a training step would leave part of
it done: with the NumPy backend some weights or slots written and others not, or
the step written but ``optimizer.iterations`` not advanced; with the LLVM
backend a whole native epoch written but its steps not counted. So ``fit``
installs, once for its duration and only on the main thread (where Python runs
signal handlers), a SIGINT handler that records a signal arriving inside a step
(``with deferred:`` around the step call and the counter update) and runs the
previous handler -- normally raising KeyboardInterrupt -- as soon as the step
is complete. Outside steps (callbacks, validation, progress output) the
previous handler runs at once, as without symgrad.

A step is one compiled call on the NumPy backend and for step-by-step LLVM
training, and a whole epoch when the LLVM backend runs the epoch as one native
call: Ctrl-C then takes effect at the end of that epoch. Nothing changes when
the process ignores SIGINT, uses the C default action, or calls ``fit`` from
another thread.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Deferred:
    """SIGINT handling for one ``fit``: ``with d.installed():`` around it, ``with d:`` per step."""

    def __init__(self):
        self._depth = 0  # steps in flight (nested: a callback that trains another model)
        self._pending = None  # (signum, frame) received during a step
        self._previous = None

    # -- a step: entered once per training step, so plain methods (no generator)
    def __enter__(self) -> Deferred:
        self._depth += 1
        return self

    def __exit__(self, *exc) -> bool:
        self._depth -= 1
        if self._depth == 0 and self._pending is not None:
            self._deliver()  # the step is complete: now the interrupt
        return False

    # -- the handler
    @contextlib.contextmanager
    def installed(self):
        """Defer SIGINT during steps for the duration of the block (main thread only)."""
        previous = signal.getsignal(signal.SIGINT)
        install = threading.current_thread() is threading.main_thread() and callable(previous)
        if install:  # SIG_IGN, SIG_DFL or a handler set outside Python: left as they are
            self._previous = previous
            signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            if install:
                signal.signal(signal.SIGINT, previous)
            if self._pending is not None:  # received during a step that raised: deliver it now
                self._deliver()

    def _handle(self, signum, frame) -> None:
        if self._depth:
            self._pending = (signum, frame)
        else:
            self._previous(signum, frame)

    def _deliver(self) -> None:
        signum, frame = self._pending
        self._pending = None
        self._previous(signum, frame)


IMMEDIATE = contextlib.nullcontext()
"""The step context outside ``fit`` (``train_on_batch`` installs its own)."""
