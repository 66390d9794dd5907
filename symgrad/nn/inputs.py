"""symgrad.nn.inputs: data that comes in batches -- Python generators and ``Sequence`` objects.

``fit``, ``evaluate`` and ``predict`` take, instead of arrays, a
:class:`Sequence` (anything with ``__len__`` and ``__getitem__(index)``: batch
``index`` of ``len(seq)``, Keras's ``keras.utils.Sequence`` / ``PyDataset``) or a
generator (any iterator) of batches. A batch is ``(x, y)`` or ``(x, y,
sample_weight)`` -- for ``predict`` ``x`` alone, or a tuple whose first entry is
``x``. :class:`Batches` draws them and says which batch was wrong when one is.

Also :func:`to_categorical`, Keras's one-hot encoding of integer labels.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from symgrad.nn.validation import positive_int, show


class Sequence:
    """Base class of batch sequences: ``__len__`` batches, ``__getitem__(i)`` the i-th.

    ``fit`` visits the batches in a shuffled order each epoch (``shuffle=True``)
    and calls ``on_epoch_end()`` after each epoch, as Keras does.

    >>> class Halves(Sequence):
    ...     def __len__(self):
    ...         return 2
    ...     def __getitem__(self, i):
    ...         return x[50 * i : 50 * (i + 1)], y[50 * i : 50 * (i + 1)]
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int):
        raise NotImplementedError

    def on_epoch_end(self) -> None:
        """Called by ``fit`` after each epoch (a place to reshuffle the samples)."""


_ARRAYS = (np.ndarray, list, tuple, dict, str, bytes)


def is_sequence(x) -> bool:
    """A batch sequence: a :class:`Sequence`, or an object with ``__len__`` and
    ``__getitem__`` that is no array, list, tuple or dict (those are data)."""
    if isinstance(x, Sequence):
        return True
    return (
        hasattr(x, "__len__")
        and hasattr(x, "__getitem__")
        and not isinstance(x, _ARRAYS)
        and not hasattr(x, "__array__")  # a DataFrame, a tensor: arrays
    )


def is_batch_source(x) -> bool:
    """Whether ``x`` gives batches (a sequence or an iterator) rather than being the data."""
    return is_sequence(x) or (isinstance(x, Iterator) and not isinstance(x, _ARRAYS))


class Batches:
    """Batches of a sequence or a generator, each unpacked to ``(x, y, sample_weight)``.

    ``steps``: how many batches an epoch takes -- the sequence's length by default; a
    generator without a length needs it in ``fit`` (``steps_per_epoch``), and is
    otherwise drawn until it ends. ``what`` names the source in errors (``x``,
    ``validation_data``).
    """

    def __init__(self, source, steps: int | None, what: str = "x", steps_name: str = "steps"):
        self.what, self.sequence = what, source if is_sequence(source) else None
        self.iterator = None if self.sequence is not None else source
        if steps is not None:
            steps = positive_int(steps, steps_name)
        elif self.sequence is not None:
            steps = len(self.sequence)
        self.steps = steps
        self.first_size = 0  # rows of the first batch drawn by Trainer._drawn_arrays

    def first_has_weights(self) -> bool:
        """Whether the first batch is ``(x, y, sample_weight)`` (a generator's is put back)."""
        if self.sequence is not None:
            first = self.sequence[0] if len(self.sequence) else None
        else:
            try:
                first = next(self.iterator)
            except StopIteration:
                return False
            self.iterator = itertools.chain([first], self.iterator)
        return isinstance(first, tuple) and len(first) == 3

    def draw(self, order=None):
        """Yield ``(index, batch)`` for one epoch; ``order``: a sequence's batch order."""
        if self.sequence is not None:
            count = len(self.sequence) if self.steps is None else self.steps
            indices = range(count) if order is None else order
            for batch, index in enumerate(indices):
                yield batch, self.sequence[int(index)]
            return
        batch = 0
        while self.steps is None or batch < self.steps:
            try:
                item = next(self.iterator)
            except StopIteration:
                if self.steps is not None:
                    raise ValueError(
                        f"The generator given as {self.what} ran out of data after {batch} of "
                        f"the {self.steps} batches of this epoch: it must yield steps per epoch x "
                        "epochs batches (or stop only where an epoch ends)"
                    ) from None
                return
            yield batch, item
            batch += 1

    def end_epoch(self) -> None:
        if self.sequence is not None and hasattr(self.sequence, "on_epoch_end"):
            self.sequence.on_epoch_end()

    def unpack(self, item, batch: int, targets: bool = True):
        """``(x, y, sample_weight)`` of a batch (``targets`` False: ``(x, None, None)``)."""
        if not targets and not isinstance(item, tuple):
            return item, None, None
        if not isinstance(item, tuple) or not (2 <= len(item) <= 3 or not targets and item):
            size = f"a tuple of {len(item)}" if isinstance(item, tuple) else type(item).__name__
            raise ValueError(
                f"Batch {batch} of {self.what} must be a tuple (x, y) or (x, y, sample_weight). "
                f"Received: {size}"
            )
        if not targets:
            return item[0], None, None
        return item[0], item[1], item[2] if len(item) == 3 else None


def to_categorical(y, num_classes: int | None = None) -> np.ndarray:
    """Integer class labels as one-hot float64 rows (Keras's ``to_categorical``).

    ``y`` of shape ``s`` (a trailing axis of 1 dropped) gives ``s + (num_classes,)``;
    ``num_classes`` defaults to ``max(y) + 1``.

    >>> to_categorical([0, 2, 1])
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]])
    """
    labels = np.asarray(y)
    if labels.dtype.kind not in "biuf":
        raise ValueError(
            f"to_categorical expects integer class labels. Received: y with dtype {labels.dtype}"
        )
    shape = labels.shape[:-1] if labels.ndim > 1 and labels.shape[-1] == 1 else labels.shape
    flat = labels.reshape(-1)
    fractional = np.flatnonzero(flat != np.round(flat))
    if len(fractional):
        i = fractional[0]
        raise ValueError(
            f"to_categorical expects integer class labels. Received: y[{i}]={show(flat[i])}"
        )
    flat = flat.astype(np.int64)
    if num_classes is None:
        num_classes = int(flat.max()) + 1 if flat.size else 0
    else:
        num_classes = positive_int(num_classes, "num_classes")
    bad = np.flatnonzero((flat < 0) | (flat >= num_classes))
    if len(bad):
        i = bad[0]
        raise ValueError(
            f"to_categorical expects labels in [0, {num_classes}). Received: y[{i}]={show(flat[i])}"
        )
    out = np.zeros((flat.size, num_classes))
    out[np.arange(flat.size), flat] = 1.0
    return out.reshape(*shape, num_classes)
