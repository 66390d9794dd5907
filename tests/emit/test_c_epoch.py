"""The C libraries' epoch function (PREFIX_train_epoch) through ctypes: it trains as the
model's train_on_batch on the batches its order gives, and refuses bad input unchanged."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import symgrad
from codegen.llvm.emit import c_compiler
from tests.emit.helpers import build, data

pytestmark = pytest.mark.skipif(
    c_compiler() is None, reason="no C compiler (cc, gcc, clang or $CC) found"
)
P = ctypes.c_void_p
HYPER = ("beta_1", "beta_2", "epsilon", "learning_rate")  # Adam's scalars but t, in order


def pointer(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(P)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("epoch")
    model = build("adam")
    symgrad.emit(model, folder / "libmlp.so", target="shared")
    lib = ctypes.CDLL(str(folder / "libmlp.so"))
    lib.mlp_train_epoch_workspace_size.restype = ctypes.c_size_t
    return lib, model, (folder / "mlp.h").read_text()


class Epoch:
    """The arguments of one mlp_train_epoch call, kept to check what the call changed."""

    def __init__(self, model, rows: int = 40):
        x, labels = data("adam", rows)
        self.x, self.labels, self.y = x, labels, np.eye(3)[labels]
        self.weights = [np.ascontiguousarray(w) for w in model.get_weights()]
        self.slots = [np.zeros_like(w) for w in self.weights for _ in range(2)]
        h = model.optimizer.hyperparameter_values()
        self.scalars = [ctypes.c_double(h[k]) for k in HYPER]
        self.loss, self.steps = np.full(1, -7.0), np.full(1, -7, np.int64)

    def arrays(self):
        return [self.x, self.y, *self.weights, *self.slots, self.loss, self.steps]

    def call(self, lib, order, batch_size, steps_before=0, workspace=None, rows=None, null=None):
        """``null``: the index in ``arrays()`` (or "order") passed as NULL."""
        x, y, *rest = [None if k == null else a for k, a in enumerate(self.arrays())]
        fixed, (loss, steps) = rest[:-2], rest[-2:]
        return lib.mlp_train_epoch(
            ctypes.c_int64(len(self.x) if rows is None else rows),
            ctypes.c_int64(batch_size),
            pointer(x),
            pointer(y),
            None if null == "order" else pointer(order),
            *map(pointer, fixed),
            *self.scalars,
            ctypes.c_int64(steps_before),
            pointer(loss),
            pointer(steps),
            workspace,
        )


def test_epochs_train_as_the_model_on_the_same_batches(library):
    """Two epochs of 40 rows in batches of 16 (16, 16, 8) by NumPy permutations: the weights
    after each equal the model's train_on_batch on the same rows to 1e-9, *loss is the mean
    over the rows of the steps' losses, *steps = 3 and the second epoch goes on at t = 4."""
    lib, model, _ = library
    call = Epoch(model)
    workspace = np.zeros(lib.mlp_train_epoch_workspace_size(ctypes.c_int64(16)), np.uint8)
    rng = np.random.default_rng(5)
    for epoch, given in enumerate([pointer(workspace), None]):  # caller's, then malloc'ed
        order = rng.permutation(40).astype(np.int64)
        assert call.call(lib, order, 16, steps_before=3 * epoch, workspace=given) == 0
        losses = [
            model.train_on_batch(call.x[order[k : k + 16]], call.labels[order[k : k + 16]])
            for k in range(0, 40, 16)
        ]
        assert call.steps[0] == 3 and model.optimizer.iterations == 3 * (epoch + 1)
        expected = np.dot(losses, [16, 16, 8]) / 40
        np.testing.assert_allclose(call.loss[0], expected, rtol=1e-9)
        for w, m in zip(call.weights, model.get_weights()):
            np.testing.assert_allclose(w, m, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("entry", [-1, 40, 2**62])
def test_an_order_entry_outside_the_rows_returns_bad_order_and_changes_nothing(library, entry):
    lib, model, header = library
    assert "#define MLP_STATUS_BAD_ORDER (-5)" in header
    call = Epoch(model)
    order = np.arange(40, dtype=np.int64)
    order[37] = entry  # in the last batch: checked before the first step runs
    before = [a.copy() for a in call.arrays()]
    workspace = np.zeros(lib.mlp_train_epoch_workspace_size(ctypes.c_int64(16)), np.uint8)
    assert call.call(lib, order, 16, workspace=pointer(workspace)) == -5
    assert all(np.array_equal(a, b) for a, b in zip(call.arrays(), before))
    assert not workspace.any()


def test_null_arrays_and_bad_sizes_return_their_codes_and_change_nothing(library):
    lib, model, _ = library
    call = Epoch(model, rows=8)
    order = np.arange(8, dtype=np.int64)
    before = [a.copy() for a in call.arrays()]
    for null in [*range(len(before)), "order"]:
        assert call.call(lib, order, 4, null=null) == -3, null
    for rows, batch_size in [(-1, 4), (8, 0), (8, -3)]:
        assert call.call(lib, order, batch_size, rows=rows) == -2, (rows, batch_size)
    assert lib.mlp_train_epoch_workspace_size(ctypes.c_int64(-1)) == 2**64 - 1
    assert all(np.array_equal(a, b) for a, b in zip(call.arrays(), before))
    assert call.call(lib, order, 4, rows=0) == 0 and call.steps[0] == 0  # no rows: no steps


def test_the_header_declares_the_epoch_and_its_workspace_query(library):
    _, _, header = library
    assert "size_t mlp_train_epoch_workspace_size(int64_t batch_size);" in header
    assert "    const int64_t *order," in header and "    int64_t *steps," in header
    assert "    int64_t steps_before," in header
    assert "step k runs with t = steps_before + k + 1" in header
    assert "-5  BAD_ORDER      (epoch functions) an entry of order is not in [0, rows)." in header
    declaration = header[header.index("int32_t mlp_train_epoch(") :]
    assert "double t," not in declaration.split(");")[0]  # the counter is no argument


def test_the_static_epoch_uses_the_arena_up_to_max_batch(tmp_path):
    """max_batch=8: a NULL workspace serves the epoch's batches of 8 rows from the arena
    (sized for them too); batches of 9 return BATCH_TOO_LARGE and change nothing."""
    model = build("adam")
    symgrad.emit(model, tmp_path / "libmlp.so", target="shared", max_batch=8)
    lib = ctypes.CDLL(str(tmp_path / "libmlp.so"))
    lib.mlp_train_epoch_workspace_size.restype = ctypes.c_size_t
    header = (tmp_path / "mlp.h").read_text()
    arena = int(header.split("#define MLP_ARENA_BYTES ")[1].split()[0])
    assert lib.mlp_train_epoch_workspace_size(ctypes.c_int64(8)) == arena  # the largest need
    call = Epoch(model, rows=20)
    order = np.arange(20, dtype=np.int64)[::-1].copy()
    before = [a.copy() for a in call.arrays()]
    assert call.call(lib, order, 9) == -4
    assert all(np.array_equal(a, b) for a, b in zip(call.arrays(), before))
    assert call.call(lib, order, 8) == 0 and call.steps[0] == 3
    for k in range(0, 20, 8):
        model.train_on_batch(call.x[order[k : k + 8]], call.labels[order[k : k + 8]])
    for w, m in zip(call.weights, model.get_weights()):
        np.testing.assert_allclose(w, m, rtol=1e-9, atol=1e-12)
