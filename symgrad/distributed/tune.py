"""symgrad.distributed.tune: symgrad trainings as a Ray Tune trainable.

:func:`trainable` returns a function trainable for ``tune.Tuner``: Tune's search
algorithms choose the trials, its schedulers (ASHA...) stop them early, and each
trial reports its logs after every epoch with ``tune.report`` (``epoch`` is the
1-based epoch count, so ``time_attr="epoch"`` works).  Trials are run by a
:class:`~symgrad.distributed.trials.TrialRunner` kept per worker process, so a
process that runs several trials of one structure compiles it once (and a new
process finds the code in its disk cache).  The data goes into Ray's object
store once (``tune.with_parameters``).
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable, Mapping

from symgrad.distributed import runtime, trials, workers
from symgrad.nn.callbacks import Callback

_RUNNERS: dict[str, trials.TrialRunner] = {}  # per worker process: one per trainable


class TuneReport(Callback):
    """Reports each epoch's logs (loss, metrics, val_*) and ``epoch`` to Tune."""

    def __init__(self, report: Callable):
        super().__init__()
        self.report = report

    def on_epoch_end(self, epoch, logs=None):
        self.report({**(logs or {}), "epoch": epoch + 1})


class _Setup:
    """What every trial of a trainable shares, apart from the data."""

    def __init__(self, build: Callable, settings: Mapping, fit_args: Mapping):
        self.token = uuid.uuid4().hex
        self.build, self.settings, self.fit_args = build, dict(settings), dict(fit_args)

    def runner(self, data) -> trials.TrialRunner:
        if self.token not in _RUNNERS:
            x, y, validation_data = data
            args = dict(self.fit_args, validation_data=validation_data)
            _RUNNERS[self.token] = trials.TrialRunner(self.build, self.settings, x, y, args)
        return _RUNNERS[self.token]


def _train(config: dict, setup: _Setup, data) -> None:
    tune = importlib.import_module("ray.tune")
    setup.runner(data).fit(config, callbacks=[TuneReport(tune.report)])


def trainable(
    build: Callable,
    x,
    y,
    *,
    compile: Mapping,  # noqa: A002 - the settings of model.compile, by that name
    epochs: int = 1,
    batch_size: int = 32,
    validation_data=None,
    shuffle: bool = True,
):
    """A Tune trainable training ``build(config)`` as :func:`symgrad.distributed.sweep` does.

    >>> from ray import tune
    >>> from ray.tune.schedulers import ASHAScheduler
    >>> train = trainable(build, x, y, compile={"optimizer": "sgd", "loss": "mse"}, epochs=20,
    ...                   validation_data=(x_val, y_val))
    >>> tuner = tune.Tuner(train, param_space={"learning_rate": tune.loguniform(1e-3, 0.3)},
    ...     tune_config=tune.TuneConfig(metric="val_loss", mode="min", num_samples=32,
    ...                                 scheduler=ASHAScheduler(time_attr="epoch", max_t=20)))
    >>> best = tuner.fit().get_best_result()
    """
    runtime.ray()
    workers.shutdown()  # Tune's trials need the CPUs that kept sweep workers hold
    tune = importlib.import_module("ray.tune")
    settings = trials.check_compile_settings(compile)
    fit_args = {"epochs": epochs, "batch_size": batch_size, "shuffle": shuffle}
    setup = _Setup(build, settings, fit_args)
    return tune.with_parameters(_train, setup=setup, data=(x, y, validation_data))
