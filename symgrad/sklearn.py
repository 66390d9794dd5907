"""symgrad.sklearn: symgrad models as scikit-learn estimators (``pip install "symgrad[sklearn]"``).

``import symgrad`` never imports scikit-learn; this module does, and is imported by
name.  :class:`SymgradClassifier` and :class:`SymgradRegressor` take the network as

- nothing: :func:`mlp`, ``hidden_layers`` Dense layers of ``units`` and the output layer;
- a build function returning an **uncompiled** model; each ``model__<name>``
  parameter goes to its argument ``<name>`` (scikeras's routing), and it also gets
  those of ``n_features_in``, ``n_outputs``, ``n_classes``, ``output_activation``
  that it names;
- a list of layers, or an uncompiled model (copied for each fit, never changed).

The estimator compiles the model with its own parameters (``optimizer``, ``loss``,
``learning_rate``, ``optimizer__<name>``, ``backend``, ``dtype``, ``random_state``) so
``get_params`` / ``set_params``, ``clone``, ``Pipeline`` and ``GridSearchCV`` see and
tune all of them; a build function that returns a compiled model is refused.

>>> clf = SymgradClassifier(model__units=32, learning_rate=0.01, epochs=20, random_state=0)
>>> clf.fit(x_train, y_train).score(x_test, y_test)

Each model structure is compiled once per process (``compilations()`` counts them; the
seed is part of the structure only with dropout, :func:`symgrad.distributed.trials.step_key`):
a fit whose structure was compiled before takes a compiled model no live estimator
holds and starts it over (:func:`symgrad.distributed.trials.reset_for_trial`): weights
drawn again from the seed, optimizer slots and step counter reset, so the result is
bit for bit that of a freshly compiled model.  ``model_`` belongs to the estimator
while the estimator lives.
"""

from __future__ import annotations

import copy
import inspect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from symgrad.distributed import trials
from symgrad.nn import optimizers as optimizers_module
from symgrad.nn import validation
from symgrad.nn.layers import Dense, Layer
from symgrad.nn.models import Model, Sequential

ROUTES = ("model__", "optimizer__")  # parameters handed on: to the build function, the optimizer
META = ("n_features_in", "n_outputs", "n_classes", "output_activation")
FLOATS = (np.float64, np.float32)  # X as validated: float32 stays float32, anything else float64


def mlp(
    n_features_in: int,
    n_outputs: int,
    output_activation: str | None = None,
    units: int = 64,
    hidden_layers: int = 1,
    activation: str = "relu",
) -> Sequential:
    """The estimators' default network: ``hidden_layers`` Dense layers of ``units``, then
    ``n_outputs`` units with ``output_activation`` (sigmoid / softmax for a classifier).

    >>> SymgradClassifier(model__units=32, model__hidden_layers=2)  # routed here
    """
    hidden_layers = validation.non_negative_int(hidden_layers, "hidden_layers")
    widths = [units] * hidden_layers
    activations = [activation] * hidden_layers + [output_activation]
    layers = [
        Dense(width, activation=act, input_dim=n_features_in if i == 0 else None)
        for i, (width, act) in enumerate(zip([*widths, n_outputs], activations))
    ]
    return Sequential(layers)


class _CompiledModels:
    """Compiled models by structure; each is lent to one estimator at a time.

    A model comes back when its estimator is garbage collected or fits another
    structure.  At most ``limit`` idle models are kept, the longest unused dropped first.
    """

    def __init__(self, limit: int = 16):
        self.limit, self.compilations = limit, 0
        self._idle: OrderedDict[str, list[Model]] = OrderedDict()
        self._loans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.RLock()  # a loan may come back (garbage collection) inside take

    def take(self, key: str) -> Model | None:
        with self._lock:
            idle = self._idle.get(key)
            if not idle:
                return None
            model = idle.pop()
            if not idle:
                del self._idle[key]
            return model

    def lend(self, estimator, key: str, model: Model) -> None:
        self.end_loan(estimator)
        loan = weakref.finalize(estimator, self._give_back, key, model)
        loan.atexit = False
        self._loans[estimator] = loan

    def end_loan(self, estimator) -> None:
        loan = self._loans.pop(estimator, None)
        if loan is not None:
            loan()  # gives the model back now, once

    def _give_back(self, key: str, model: Model) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(model)
            self._idle.move_to_end(key)
            while sum(len(models) for models in self._idle.values()) > self.limit:
                oldest = next(iter(self._idle))
                self._idle[oldest].pop(0)
                if not self._idle[oldest]:
                    del self._idle[oldest]


_MODELS = _CompiledModels()


def compilations() -> int:
    """How many models the estimators of this process have compiled (one per structure
    when each structure is fitted by one estimator at a time)."""
    return _MODELS.compilations


def _call_build(build: Callable, routed: dict, meta: dict):
    """``build(**routed, **the meta it names)``; a routed name it lacks is an error naming both."""
    try:
        parameters = inspect.signature(build).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): hand over the routed only
        return build(**routed)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = [k for k in routed if k not in parameters and not takes_any]
    if missing:
        name = getattr(build, "__name__", repr(build))
        raise ValueError(
            f"model__{missing[0]} is routed to the build function {name}, which takes no "
            f"argument {missing[0]!r}. It takes: {', '.join(parameters) or 'nothing'}. "
            f"Received: model__{missing[0]}={routed[missing[0]]!r}"
        )
    known = {k: v for k, v in meta.items() if takes_any or k in parameters}
    return build(**{**known, **routed})


class _SymgradEstimator(BaseEstimator):
    """What the classifier and the regressor share: parameters, the model's life, fitting."""

    def __init__(
        self,
        model=None,
        *,
        loss=None,
        optimizer="adam",
        learning_rate=None,
        epochs=10,
        batch_size=32,
        shuffle=True,
        validation_split=0.0,
        callbacks=None,
        backend="numpy",
        dtype="float32",
        verbose=0,
        random_state=None,
        **routed,
    ):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.validation_split = validation_split
        self.callbacks = callbacks
        self.backend = backend
        self.dtype = dtype
        self.verbose = verbose
        self.random_state = random_state
        self._routed = routed  # model__<name>, optimizer__<name>: scikit-learn keeps no **kwargs

    # -- parameters: the routed ones are parameters too (clone, GridSearchCV)
    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        params.update(self._routed)
        return params

    def set_params(self, **params):
        for key in [k for k in params if k.startswith(ROUTES)]:
            self._routed[key] = params.pop(key)
        return super().set_params(**params)

    def _routed_to(self, prefix: str) -> dict:
        unknown = [k for k in self._routed if not k.startswith(ROUTES)]
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got an unexpected parameter {unknown[0]!r}: besides its "
                "own, it takes model__<name> (an argument of the build function) and "
                f"optimizer__<name> (of the optimizer). Received: {unknown[0]}={self._routed[unknown[0]]!r}"
            )
        return {k[len(prefix) :]: v for k, v in self._routed.items() if k.startswith(prefix)}

    # -- the model
    def _build(self, meta: dict) -> Model:
        """A fresh uncompiled model for rows of ``meta["n_features_in"]`` features."""
        spec, routed = self.model, self._routed_to("model__")
        if spec is None or (callable(spec) and not isinstance(spec, (Model, Layer))):
            model = _call_build(mlp if spec is None else spec, routed, meta)
        elif isinstance(spec, (Model, list, tuple)):
            if routed:
                raise ValueError(
                    "model__<name> parameters go to a build function; model is a "
                    f"{type(spec).__name__}. Received: {', '.join(f'model__{k}' for k in routed)}"
                )
            model = copy.deepcopy(spec) if isinstance(spec, Model) else self._stack(spec)
        else:
            raise TypeError(
                "model must be None (the default network, symgrad.sklearn.mlp), a build "
                "function returning an uncompiled model, a list of layers or an uncompiled "
                f"model. Received: model={spec!r} of type {type(spec).__name__}"
            )
        return self._checked(model, meta["n_features_in"])

    @staticmethod
    def _stack(layers) -> Sequential:
        bad = [layer for layer in layers if not isinstance(layer, Layer)]
        if bad or not layers:
            raise TypeError(
                "model given as a list must hold symgrad layers. "
                f"Received: {bad[0]!r} of type {type(bad[0]).__name__}"
                if bad
                else "model given as a list must hold symgrad layers. Received: model=[]"
            )
        return Sequential(copy.deepcopy(list(layers)))  # the parameter itself stays unbuilt

    def _checked(self, model, n_features: int) -> Model:
        if not isinstance(model, Model):
            raise TypeError(
                "The build function must return a symgrad model (Sequential or Model(inputs, "
                f"outputs)). Received: {model!r} of type {type(model).__name__}"
            )
        if model.compiled:
            raise ValueError(
                f"The build function returned a compiled model. Return it uncompiled: "
                f"{type(self).__name__} compiles it with its own parameters (optimizer, loss, "
                "learning_rate, backend, dtype, random_state), which GridSearchCV can tune. "
                f"Received: model {model.name!r}, compiled with loss={model.loss.name!r}"
            )
        if not model.built:
            model.build(input_shape=(None, n_features))
        shape = model.input_shape
        if shape is None or validation.width(shape) != n_features:
            raise ValueError(
                f"The model reads samples of shape {shape}; X has {n_features} features. "
                f"Received: model {model.name!r}"
            )
        return model

    def _make_optimizer(self) -> optimizers_module.Optimizer:
        """A fresh optimizer: ``optimizer`` (a name, Keras's defaults; or an instance, its
        settings) with ``learning_rate`` and ``optimizer__<name>`` over them."""
        base = optimizers_module.get(self.optimizer)
        config = base.get_config() if base is self.optimizer else {"name": base.name}
        given = self._routed_to("optimizer__")
        if self.learning_rate is not None:
            given["learning_rate"] = self.learning_rate
        return optimizers_module.from_config({**config, **given})

    def _seed(self) -> int | None:
        if self.random_state is None or isinstance(self.random_state, (int, np.integer)):
            if self.random_state is not None:
                validation.non_negative_int(self.random_state, "random_state")
            return self.random_state
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _start(self, meta: dict) -> None:
        """``model_``: compiled for this fit, from the pool when its structure was compiled."""
        model = self._build(meta)
        optimizer = self._make_optimizer()
        settings = trials.check_compile_settings(
            {
                "optimizer": optimizer,
                "loss": self._loss_for(model),
                "backend": self.backend,
                "dtype": self.dtype,
            }
        )
        seed = self._seed()
        key = trials.step_key(model, optimizer, settings, seed)
        if key is not None and key == getattr(self, "_structure", None):
            trials.reset_for_trial(self.model_, optimizer, seed)  # a refit of the same structure
            return
        cached = _MODELS.take(key) if key is not None else None
        if cached is not None:
            trials.reset_for_trial(cached, optimizer, seed)
            model = cached
        else:
            trials.compile_for_trial(model, optimizer, settings, seed)
            _MODELS.compilations += 1
        if key is not None:
            _MODELS.lend(self, key, model)
        else:
            _MODELS.end_loan(self)
        self.model_, self._structure = model, key

    def _train(self, x: np.ndarray, targets: np.ndarray, epochs: int, weights=None) -> None:
        history = self.model_.fit(
            x,
            targets,
            sample_weight=weights,
            batch_size=self.batch_size,
            epochs=epochs,
            verbose=self.verbose,
            callbacks=copy.deepcopy(self.callbacks),
            validation_split=self.validation_split,
            shuffle=self.shuffle,
        )
        self.history_ = history.history

    def _continue(self, x: np.ndarray, targets: np.ndarray, weights=None) -> None:
        """One more epoch on ``(x, targets)``, keeping the weights; ``history_`` grows."""
        before = getattr(self, "history_", {})
        self._train(x, targets, 1, weights)
        self.history_ = {k: [*before.get(k, []), *v] for k, v in self.history_.items()}

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self)
        x = validate_data(self, X, reset=False, dtype=FLOATS)
        return np.asarray(self.model_.predict(x, batch_size=max(self.batch_size, 1024)), float)


class SymgradClassifier(ClassifierMixin, _SymgradEstimator):
    """A symgrad network as a scikit-learn classifier: any labels (strings, any integers),
    two classes or more.

    Two classes take a model with one sigmoid output (``binary_crossentropy``) or two
    softmax outputs; k classes one of k softmax outputs (``sparse_categorical_crossentropy``,
    or ``categorical_crossentropy`` on one-hot rows).  ``loss=None`` picks by the output.
    ``class_weight`` (None, ``"balanced"``, or a dict by label) multiplies each sample's
    weight by its class's, as scikit-learn's classifiers do.
    ``classes_``, ``n_features_in_``, ``model_`` (the compiled symgrad model) and
    ``history_`` are set by ``fit``.

    >>> SymgradClassifier(model__units=32, epochs=20).fit(x, labels).predict_proba(x[:2])
    """

    def __init__(self, model=None, *, class_weight=None, **parameters):
        self.class_weight = class_weight
        super().__init__(model, **parameters)

    # scikit-learn reads the parameters off the signature: the shared ones and class_weight
    __init__.__signature__ = inspect.signature(_SymgradEstimator.__init__).replace(
        parameters=[
            *list(inspect.signature(_SymgradEstimator.__init__).parameters.values())[:-1],
            inspect.Parameter("class_weight", inspect.Parameter.KEYWORD_ONLY, default=None),
            inspect.Parameter("routed", inspect.Parameter.VAR_KEYWORD),
        ]
    )

    def fit(self, X, y, sample_weight=None):
        """Fresh weights, ``epochs`` epochs on ``(X, y)``; each sample's loss weighted by
        ``sample_weight`` times its class's ``class_weight``."""
        x, y = validate_data(self, X, y, reset=True, dtype=FLOATS)
        self._set_classes(y, None)
        weights = self._weights(y, sample_weight, balanced_ok=True)
        self._start(self._meta(x))
        self._train(x, self._targets(y), self.epochs, weights)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on ``(X, y)``, keeping the weights; the first call needs ``classes``
        (every label the model will see), as scikit-learn's incremental classifiers."""
        first = not hasattr(self, "model_")
        x, y = validate_data(self, X, y, reset=first, dtype=FLOATS)
        if first:
            if classes is None:
                raise ValueError(
                    "classes must be passed on the first call to partial_fit: every label "
                    "the model will see. Received: classes=None"
                )
            self._set_classes(y, classes)
            self._start(self._meta(x))
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes differ from those of the first call ({self.classes_.tolist()}). "
                f"Received: classes={np.asarray(classes).tolist()}"
            )
        self._continue(x, self._targets(y), self._weights(y, sample_weight, balanced_ok=False))
        return self

    def predict_proba(self, X) -> np.ndarray:
        """``(n, n_classes)`` probabilities, columns in the order of ``classes_``."""
        p = self._outputs(X)
        if self.model_.loss.from_logits:
            p = _sigmoid(p) if p.shape[1] == 1 else _softmax(p)
        if p.shape[1] == 1:
            p = np.clip(p, 0.0, 1.0)
            return np.hstack([1.0 - p, p])
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: an unfitted estimator has no classes_
        return self.classes_[np.argmax(proba, axis=1)]

    # -- labels
    def _set_classes(self, y: np.ndarray, classes) -> None:
        check_classification_targets(y)
        found = np.unique(y if classes is None else classes)
        if len(found) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes. "
                f"Received: 1 class ({found.tolist()})"
            )
        self.classes_ = found

    def _codes(self, y: np.ndarray) -> np.ndarray:
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y has labels outside classes_ {self.classes_.tolist()}. "
                f"Received: {unknown.tolist()}"
            )
        return np.searchsorted(self.classes_, y)

    def _weights(self, y: np.ndarray, sample_weight, balanced_ok: bool) -> np.ndarray | None:
        """Each sample's weight: ``sample_weight`` times its class's ``class_weight``."""
        weights = _sample_weights(sample_weight, len(y))
        per_class = self._class_weights(y, balanced_ok)
        if per_class is None:
            return weights
        by_row = per_class[self._codes(y)]
        return by_row if weights is None else weights * by_row

    def _class_weights(self, y: np.ndarray, balanced_ok: bool) -> np.ndarray | None:
        """``class_weight`` as one weight per entry of ``classes_`` (None: all 1)."""
        spec = self.class_weight
        if spec is None:
            return None
        if isinstance(spec, str) and spec == "balanced":
            if not balanced_ok:
                raise ValueError(
                    "class_weight='balanced' needs the class frequencies of all the data, "
                    "which partial_fit does not see: pass a dict, e.g. dict(zip(classes, "
                    "sklearn.utils.class_weight.compute_class_weight('balanced', "
                    "classes=classes, y=y_all))). Received: class_weight='balanced'"
                )
            counts = np.bincount(self._codes(y), minlength=len(self.classes_))
            return len(y) / (len(self.classes_) * counts)  # n / (k n_c), scikit-learn's
        if not isinstance(spec, Mapping):
            raise ValueError(
                "class_weight must be None, 'balanced' or a dict mapping class labels to "
                f"weights. Received: class_weight={spec!r}"
            )
        weights = np.ones(len(self.classes_))
        for label, value in spec.items():
            found = np.flatnonzero(self.classes_ == label) if np.ndim(label) == 0 else []
            if len(found) != 1:
                raise ValueError(
                    f"class_weight has a label that is no class of y ({self.classes_.tolist()}). "
                    f"Received: class_weight[{label!r}]={value!r}"
                )
            if not _is_weight(value):
                raise ValueError(
                    "class_weight values must be finite numbers >= 0. "
                    f"Received: class_weight[{label!r}]={value!r}"
                )
            weights[found[0]] = float(value)
        return weights

    def _meta(self, x: np.ndarray) -> dict:
        k = len(self.classes_)
        binary = k == 2
        return {
            "n_features_in": x.shape[1],
            "n_classes": k,
            "n_outputs": 1 if binary else k,
            "output_activation": "sigmoid" if binary else "softmax",
        }

    def _loss_for(self, model: Model):
        width, k = model.output_dim, len(self.classes_)
        if not (width == k or (width == 1 and k == 2)):
            raise ValueError(
                f"The model has {width} outputs for {k} classes: it needs {k} (softmax)"
                + (" or 1 (sigmoid)" if k == 2 else "")
                + f". Received: model {model.name!r} with output shape {model.output_shape}"
            )
        if self.loss is not None:
            return self.loss
        return "binary_crossentropy" if width == 1 else "sparse_categorical_crossentropy"

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Labels in the form the model's loss reads: 0/1 column, class indices or one-hot."""
        codes = self._codes(y)
        if self.model_.output_dim == 1:
            return codes[:, None].astype(float)
        if self.model_.loss.name == "sparse_categorical_crossentropy":
            return codes
        return np.eye(len(self.classes_))[codes]


class SymgradRegressor(RegressorMixin, _SymgradEstimator):
    """A symgrad network as a scikit-learn regressor: one target or several (``y`` of
    shape ``(n,)`` or ``(n, k)``); ``loss=None`` is ``mse``; ``score`` is R².

    >>> SymgradRegressor(model__units=16, epochs=50).fit(x, y).predict(x[:2])
    """

    def fit(self, X, y, sample_weight=None):
        """Fresh weights, ``epochs`` epochs on ``(X, y)``; each sample's loss weighted by
        ``sample_weight``."""
        x, y = validate_data(
            self, X, y, reset=True, dtype=FLOATS, y_numeric=True, multi_output=True
        )
        weights = _sample_weights(sample_weight, len(y))
        self._set_outputs(y)
        self._start(self._meta(x))
        self._train(x, self._targets(y), self.epochs, weights)
        return self

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on ``(X, y)``, keeping the weights (the first call starts them)."""
        first = not hasattr(self, "model_")
        x, y = validate_data(
            self, X, y, reset=first, dtype=FLOATS, y_numeric=True, multi_output=True
        )
        if first:
            self._set_outputs(y)
            self._start(self._meta(x))
        self._continue(x, self._targets(y), _sample_weights(sample_weight, len(y)))
        return self

    def predict(self, X) -> np.ndarray:
        p = self._outputs(X)
        return p[:, 0] if self._one_target else p

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _set_outputs(self, y: np.ndarray) -> None:
        self._one_target = y.ndim == 1
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]

    def _meta(self, x: np.ndarray) -> dict:
        return {
            "n_features_in": x.shape[1],
            "n_outputs": self.n_outputs_,
            "output_activation": None,
        }

    def _loss_for(self, model: Model):
        if model.output_dim != self.n_outputs_:
            raise ValueError(
                f"The model has {model.output_dim} outputs for {self.n_outputs_} targets. "
                f"Received: model {model.name!r} with output shape {model.output_shape}"
            )
        return "mse" if self.loss is None else self.loss

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        y = y[:, None] if y.ndim == 1 else y
        if y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y.shape[1]} targets; the first fit had {self.n_outputs_}. "
                f"Received: y of shape {y.shape}"
            )
        return y


def _sample_weights(sample_weight, n: int) -> np.ndarray | None:
    """``sample_weight`` as float64 of shape ``(n,)`` (the model checks its values), or None."""
    if sample_weight is None:
        return None
    return _check_sample_weight(sample_weight, np.empty((n, 0)), dtype=np.float64)


def _is_weight(value) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and np.isfinite(value)
        and value >= 0
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # 1/(1 + e^-z), no overflow at -1000


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


__all__ = ["SymgradClassifier", "SymgradRegressor", "compilations", "mlp"]
