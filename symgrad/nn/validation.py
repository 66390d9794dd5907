"""symgrad.nn.validation: checks on user data and arguments, before anything is changed.

Every check raises ``ValueError`` (``TypeError`` for wrong kinds of objects)
naming the argument, the offending value and what was expected, in Keras's
style (``Received: batch_size=0``).  The fit loop runs all of them before it
touches the model, so a rejected call leaves the weights as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np


def from_identifier(
    identifier,
    base: type,
    table: Mapping[str, Callable],
    kind: str,
    *,
    make: Callable = lambda cls, name: cls(),
    known: Iterable[str] | None = None,
    expected: str | None = None,
):
    """Keras's ``get``: an instance of ``base`` as it is, a subclass instantiated, or a name.

    Names are looked up case-insensitively in ``table`` and built with
    ``make(table[name], identifier)``; an unknown name raises a ValueError listing
    ``known`` (default: the table's names), anything else a TypeError naming
    ``expected`` (default: a name or a ``base``).
    """
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, base):
        return identifier()
    plural = kind + ("es" if kind.endswith("s") else "s")
    if isinstance(identifier, str):
        found = table.get(identifier.lower())
        if found is not None:
            return make(found, identifier)
        names = ", ".join(sorted(table) if known is None else known)
        raise ValueError(f"Unknown {kind}: {identifier!r}. Known {plural}: {names}")
    article = "An" if kind[0] in "aeiou" else "A"
    expected = expected or f"a name or a {base.__module__}.{base.__name__}"
    raise TypeError(
        f"{article} {kind} must be {expected}. "
        f"Received: {kind}={identifier!r} of type {type(identifier).__name__}"
    )


def _numeric_array(data, name: str) -> np.ndarray:
    """``np.asarray(data)``, rejecting None, ragged nesting and non-numeric dtypes by name."""
    if data is None:
        raise ValueError(f"Expected {name} to be an array of numbers. Received: {name}=None")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{name} must be a rectangular array of numbers. Received: {err}"
        ) from None
    if array.dtype.kind not in "biuf":
        example = f" (first entry: {show(array.flat[0])})" if array.size else ""
        raise ValueError(
            f"{name} must be numeric. Received: {name} with dtype {array.dtype}{example}"
        )
    return array


def as_float(array: np.ndarray) -> np.ndarray:
    """Floating arrays as they are (float32 rows stay float32: no float64 copy of the data
    set); integers and booleans as float64. The model's dtype is applied once, later."""
    return array if array.dtype.kind == "f" else array.astype(np.float64)


def as_matrix(data, name: str) -> np.ndarray:
    """``data`` as a finite 2-D floating array (a 1-D array becomes one column)."""
    array = _numeric_array(data, name)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D, one row per sample: (samples, features). "
            f"Received: {name} with shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} has no samples. Received: {name} with shape {array.shape}")
    array = as_float(array)
    check_finite(array, name)
    return array


def as_labels(data, name: str) -> np.ndarray:
    """Targets as a floating array of 1 or 2 dimensions (the loss reshapes them)."""
    array = _numeric_array(data, name)
    if array.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be 1-D or 2-D, one row per sample. Received: {name} with shape {array.shape}"
        )
    array = as_float(array)
    check_finite(array, name)
    return array


def show(value) -> str:
    """A NumPy scalar as plain Python text: ``nan``, ``inf``, ``3.0``, ``'a'``."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def check_finite(array: np.ndarray, name: str) -> None:
    # a nan or inf entry makes the sum nan or inf: one pass, no boolean copy of the data;
    # only a non-finite sum (or an overflow of finite values) looks entry by entry
    if array.dtype.kind != "f":
        return
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(array)):
            return
    bad = ~np.isfinite(array)
    if not bad.any():
        return
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        index = ", ".join(map(str, where))
        raise ValueError(
            f"{name} must contain only finite numbers. Received: {name}[{index}]={show(array[where])} "
            f"({int(bad.sum())} NaN or inf value(s))"
        )


def check_same_length(x: np.ndarray, y: np.ndarray, x_name: str = "x", y_name: str = "y") -> None:
    if len(x) != len(y):
        raise ValueError(
            f"{x_name} and {y_name} must have the same number of samples. "
            f"Received: {x_name} with {len(x)} samples and {y_name} with {len(y)} samples"
        )


def check_features(x: np.ndarray, input_dim: int | None, name: str = "x") -> None:
    if input_dim is not None and x.shape[1] != input_dim:
        raise ValueError(
            f"The model expects {input_dim} input feature(s) per sample. "
            f"Received: {name} with shape {x.shape} ({x.shape[1]} feature(s))"
        )


def positive_int(value, name: str) -> int:
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value <= 0
    ):
        raise ValueError(
            f"Invalid value for argument {name}: expected a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def non_negative_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(
            f"Invalid value for argument {name}: expected an integer >= 0. Received: {name}={value!r}"
        )
    return int(value)


def check_verbose(verbose) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(
            f"Invalid value for argument verbose: expected 0, 1, 2 or 'auto'. Received: verbose={verbose!r}"
        )
    return int(verbose)


def check_split(fraction) -> float:
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.floating))
        or not 0 <= fraction < 1
    ):
        raise ValueError(
            "Invalid value for argument validation_split: expected a number in [0, 1). "
            f"Received: validation_split={fraction!r}"
        )
    return float(fraction)


def batches(count: int, batch_size: int):
    """Slices of consecutive batches; the last one may be smaller.

    Row slices of a C-contiguous array are C-contiguous views: no copies.
    """
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def sample_shape(value, name: str = "input_shape") -> tuple[int, ...]:
    """A per-sample shape: a positive int ``d`` (rows of ``d`` features) or a tuple of them
    (``(8, 8, 1)``: an 8x8 image of one channel, ``(steps, channels)``: a sequence)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return (positive_int(value, name),)
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(
            f"Invalid value for argument {name}: expected a tuple of positive integers, "
            f"one per axis of a sample, such as (8, 8, 1). Received: {name}={value!r}"
        )
    return tuple(positive_int(d, f"{name}[{i}]") for i, d in enumerate(value))


def width(shape: tuple[int, ...]) -> int:
    """How many columns a sample of ``shape`` fills in a row (channels last, row-major)."""
    return int(np.prod(shape, dtype=np.int64))


def as_samples(data, name: str, shape: tuple[int, ...] | None, who: str = "The model"):
    """``data`` as floating rows ``(samples, width(shape))`` and the per-sample shape it has.

    A model whose samples are vectors takes ``(samples, features)`` (a 1-D array is one
    feature); a model of images or sequences takes ``(samples, *shape)`` arrays, each
    sample flattened row-major, channels last, into one row.  ``shape`` None (a model not
    built yet) takes the samples' shape from the data.  ``who`` names the layer that reads
    the input in errors.
    """
    array = _numeric_array(data, name)
    if shape is None and array.ndim > 2:
        shape = tuple(array.shape[1:])
    if shape is None or len(shape) == 1:
        rows = as_matrix(array, name)
        check_features(rows, None if shape is None else shape[0], name)
        return rows, (rows.shape[1],)
    if tuple(array.shape[1:]) != tuple(shape):
        axes = ", ".join(map(str, shape))
        raise ValueError(
            f"{who} expects samples of shape {tuple(shape)}: arrays of shape "
            f"(samples, {axes}). Received: {name} with shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} has no samples. Received: {name} with shape {array.shape}")
    array = as_float(array)
    check_finite(array, name)
    return array.reshape(array.shape[0], -1), tuple(shape)


def sample_weights(
    y: np.ndarray, sample_weight, class_weight, names: tuple[str, str] = ("y", "sample_weight")
) -> np.ndarray | None:
    """Each sample's weight: ``sample_weight`` (>= 0, one per row of the prepared targets
    ``y``) times ``class_weight[class of the row]`` (1 for classes not in it); None if neither.

    A row's class is the index of its largest target (one-hot rows), or for one target
    column, 1 where it is > 0.5 and 0 elsewhere. A class_weight key that is no class of
    the model, or that no row of ``y`` has, is an error naming it.
    """
    if sample_weight is None and class_weight is None:
        return None
    weights = np.ones(len(y))
    if sample_weight is not None:
        given = _numeric_array(sample_weight, names[1])
        if given.ndim == 2 and given.shape[1] == 1:
            given = given[:, 0]
        if given.shape != (len(y),):
            raise ValueError(
                f"{names[1]} must hold one weight per sample: shape ({len(y)},). "
                f"Received: {names[1]} with shape {given.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(given) | (given < 0))
        if len(bad):
            i = bad[0]
            raise ValueError(
                f"{names[1]} must be finite and >= 0. Received: {names[1]}[{i}]={show(given[i])}"
            )
        weights = weights * given
    if class_weight is not None:
        weights = weights * _class_weights(y, class_weight, names[0])
    return weights


def _class_weights(y: np.ndarray, class_weight, y_name: str) -> np.ndarray:
    if not isinstance(class_weight, Mapping):
        raise TypeError(
            f"class_weight must be a dict mapping classes to weights, e.g. {{0: 1.0, 1: 5.0}}. "
            f"Received: class_weight={class_weight!r}"
        )
    classes = np.argmax(y, axis=1) if y.shape[1] > 1 else (y[:, 0] > 0.5).astype(int)
    known = range(max(2, y.shape[1]))
    present = sorted({int(c) for c in np.unique(classes)})
    table = np.ones(len(known))
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key not in known:
            raise ValueError(
                f"class_weight has a key that is no class of the model: {key!r}. "
                f"Classes: {', '.join(map(str, known))}"
            )
        if int(key) not in present:
            raise ValueError(
                f"class_weight has class {key}, which no sample of {y_name} has. "
                f"Classes in {y_name}: {', '.join(map(str, present))}"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.number))
            or not (np.isfinite(value) and value >= 0)
        ):
            raise ValueError(
                f"class_weight values must be finite and >= 0. Received: class_weight[{key}]={value!r}"
            )
        table[int(key)] = float(value)
    return table[classes]
