"""Native targets: the shared library agrees with the model and needs no Python; the C example."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import symgrad
from codegen.llvm.emit import c_compiler
from tests.emit.helpers import ROOT, build, data

CC = c_compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc, clang or $CC) found")
P = ctypes.c_void_p
LIBC = {"malloc", "free", "memcpy", "memmove", "memset", "__cxa_finalize"}  # and weak symbols


def pointer(a: np.ndarray):
    return a.ctypes.data_as(P)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """The Adam model's shared library (and the model, still untrained)."""
    if CC is None:
        pytest.skip("no C compiler (cc, gcc, clang or $CC) found")
    folder = tmp_path_factory.mktemp("native")
    model = build("adam")
    written = symgrad.emit(model, folder / "libmlp.so", target="shared")
    assert written == [folder / "libmlp.so", folder / "mlp.h"]
    return ctypes.CDLL(str(folder / "libmlp.so")), model, folder


def test_shared_library_matches_the_model(library):
    lib, model, _ = library
    x, labels = data("adam")
    y = np.eye(3)[labels]  # the C functions take the targets as one-hot rows
    weights = [np.ascontiguousarray(w) for w in model.get_weights()]
    n = len(x)

    p = np.empty((n, 3))
    assert (
        lib.mlp_forward(ctypes.c_int64(n), pointer(x), *map(pointer, weights), pointer(p), None)
        == 0
    )
    np.testing.assert_allclose(p, model.predict(x), rtol=1e-9)

    loss, grads = np.empty((1, 1)), [np.empty_like(w) for w in weights]
    args = [pointer(x), pointer(y), *map(pointer, weights), pointer(loss), *map(pointer, grads)]
    assert lib.mlp_loss_and_gradients(ctypes.c_int64(n), *args, None) == 0
    np.testing.assert_allclose(loss[0, 0], model.test_on_batch(x, labels), rtol=1e-9)
    for g, expected in zip(grads, model.compute_gradients(x, labels)):
        np.testing.assert_allclose(g, expected, rtol=1e-9, atol=1e-12)

    # three Adam steps with a caller-owned workspace sized for the largest batch
    lib.mlp_train_step_workspace_size.restype = ctypes.c_size_t
    workspace = np.zeros(lib.mlp_train_step_workspace_size(ctypes.c_int64(16)), np.uint8)
    slots = [np.zeros_like(w) for w in weights for _ in range(2)]  # momentum, velocity per weight
    h = model.optimizer.hyperparameter_values()
    for step, (start, stop) in enumerate([(0, 16), (16, 32), (32, 40)], start=1):
        rows = [np.ascontiguousarray(a[start:stop]) for a in (x, y)]
        scalars = [h["beta_1"], h["beta_2"], h["epsilon"], h["learning_rate"], float(step)]
        status = lib.mlp_train_step(
            ctypes.c_int64(stop - start),
            *map(pointer, rows),
            *map(pointer, weights + slots),
            *map(ctypes.c_double, scalars),
            pointer(loss),
            pointer(workspace),
        )
        assert status == 0
        expected = model.train_on_batch(x[start:stop], labels[start:stop])
        np.testing.assert_allclose(loss[0, 0], expected, rtol=1e-9)
    for w, expected in zip(weights, model.get_weights()):
        np.testing.assert_allclose(w, expected, rtol=1e-9, atol=1e-12)


def test_a_failed_guard_returns_its_index_and_writes_nothing(library):
    lib, model, _ = library
    x, labels = data("adam", rows=4)
    x[2, 1] = np.nan
    y = np.eye(3)[labels]
    weights = [np.ascontiguousarray(w) for w in model.get_weights()]
    before = [w.copy() for w in weights]
    slots = [np.zeros_like(w) for w in weights for _ in range(2)]
    loss = np.empty((1, 1))
    status = lib.mlp_train_step(
        ctypes.c_int64(4),
        *map(pointer, [x, y, *weights, *slots]),
        *map(ctypes.c_double, [0.9, 0.999, 1e-7, 0.01, 1.0]),
        pointer(loss),
        None,
    )
    assert status == 1 and np.isnan(loss[0, 0])
    assert all((w == b).all() for w, b in zip(weights, before))
    assert not any(s.any() for s in slots)


def test_the_library_needs_only_libc(library):
    _, _, folder = library
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    listing = subprocess.run(
        [nm, "-D", "--undefined-only", str(folder / "libmlp.so")], capture_output=True, text=True
    ).stdout
    needed = {line.split()[-1].split("@")[0] for line in listing.splitlines() if " U " in line}
    assert needed <= LIBC, needed - LIBC  # no BLAS, no Python, no NumPy
    defined = subprocess.run(
        [nm, "-D", "--defined-only", str(folder / "libmlp.so")], capture_output=True, text=True
    ).stdout
    exported = {line.split()[-1] for line in defined.splitlines() if " T " in line}
    assert exported == {
        f"mlp_{name}{suffix}"
        for name in ("forward", "loss_and_gradients", "train_step", "train_epoch")
        for suffix in ("", "_workspace_size")
    }


@needs_cc
def test_object_file_and_header_compile_into_a_c_program(tmp_path):
    model = build("sgd")
    symgrad.emit(model, tmp_path / "mlp.o", target="object", cpu="generic")
    header = (tmp_path / "mlp.h").read_text()
    assert "int32_t mlp_train_step(" in header and "#define MLP_LEARNING_RATE 0.1" in header
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "mlp.h"\n'
        "int main(void) {\n"
        "    double x[2 * MLP_INPUT_DIM] = {0.5, -1.0, 2.0, 0.25, 1.0, 1.0, -1.0, 0.0};\n"
        "    double w0[24] = {0}, b0[6] = {0}, w1[18] = {0}, b1[3] = {0.5, -0.5, 1.0}, p[6];\n"
        "    int32_t status = mlp_forward(2, x, w0, b0, w1, b1, p, NULL);\n"
        '    printf("%d %g %g %g\\n", (int)status, p[3], p[4], p[5]);\n'
        "    return status;\n}\n"
    )
    exe = tmp_path / "main"
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"]
    subprocess.run([CC, *flags, "-o", str(exe), "main.c", "mlp.o", "-lm"], cwd=tmp_path, check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "0.5", "-0.5", "1"]  # zero weights: P is the output bias


def test_llvm_ir_text(tmp_path):
    symgrad.emit(build("sgd"), tmp_path / "mlp.ll", target="llvm-ir")
    text = (tmp_path / "mlp.ll").read_text()
    assert text.startswith("; symgrad native library: mlp_forward, mlp_loss_and_gradients")
    assert 'define i32 @"mlp_train_step"(i64 %"n", ptr %"X", ptr %"Y"' in text
    assert "; d_dense_1_kernel(6, 3) = gemm(" in text  # each kernel under its statement
    assert "cblas" not in text and "Py" not in text


@needs_cc
def test_c_example_trains_like_the_python_model(tmp_path):
    """examples/c_train: same data, initial weights and batch order -> the same epoch losses."""
    sys.path.insert(0, str(ROOT / "examples" / "c_train"))
    try:
        import make_data_and_library as example
        from digits_model import build_model
    finally:
        sys.path.pop(0)
    assert example.main(["--out", str(tmp_path), "--samples", "300"]) == 0
    built = subprocess.run(
        ["sh", str(ROOT / "examples" / "c_train" / "build.sh")],
        env={**os.environ, "BUILD": str(tmp_path), "CC": CC},
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    assert built.stderr == ""  # -Wall -Wextra: no warnings
    files = [str(tmp_path / name) for name in ("digits_data.bin", "digits_weights.bin")]
    run = subprocess.run(
        [str(tmp_path / "train"), *files, "4", "32"], capture_output=True, text=True, check=True
    )
    c_losses = [float(line.split()[-1]) for line in run.stdout.splitlines()]
    epochs = subprocess.run(  # one digits_train_epoch call per epoch: the same numbers
        [str(tmp_path / "train"), *files, "4", "32", "epoch"],
        capture_output=True,
        text=True,
        check=True,
    )
    np.testing.assert_allclose(
        [float(line.split()[-1]) for line in epochs.stdout.splitlines()], c_losses, rtol=1e-12
    )
    x, labels = example.load_digits(300)
    history = build_model().fit(x, labels, epochs=4, batch_size=32, shuffle=False, verbose=0)
    np.testing.assert_allclose(c_losses, history.history["loss"], rtol=1e-6)
    assert all(b < a for a, b in zip(c_losses, c_losses[1:]))  # it learns


def _entry_arguments(model, n: int):
    """(function name, arguments) of each entry point for a batch of ``n`` rows."""
    x, labels = data("adam", rows=max(n, 1))
    y = np.eye(3)[labels]
    weights = [np.ascontiguousarray(w) for w in model.get_weights()]
    slots = [np.zeros_like(w) for w in weights for _ in range(2)]
    grads = [np.empty_like(w) for w in weights]
    loss, p = np.empty((1, 1)), np.empty((max(n, 1), 3))
    scalars = [ctypes.c_double(v) for v in (0.9, 0.999, 1e-7, 0.01, 1.0)]
    return {
        "mlp_forward": [x, *weights, p],
        "mlp_loss_and_gradients": [x, y, *weights, loss, *grads],
        "mlp_train_step": [x, y, *weights, *slots, *scalars, loss],
    }


def _call(lib, name, n, arguments, workspace=None):
    converted = [a if isinstance(a, ctypes.c_double) else pointer(a) for a in arguments]
    return getattr(lib, name)(ctypes.c_int64(n), *converted, workspace)


@pytest.mark.parametrize("n", [-1, -(2**63), 2**58, 2**62, 2**63 - 1])
def test_bad_batch_sizes_return_bad_batch_and_touch_nothing(library, n):
    lib, model, folder = library
    header = (folder / "mlp.h").read_text()
    assert "#define MLP_STATUS_BAD_BATCH (-2)" in header and "-2  BAD_BATCH" in header
    for name, arguments in _entry_arguments(model, 4).items():
        size = getattr(lib, f"{name}_workspace_size")
        size.restype = ctypes.c_size_t
        assert size(ctypes.c_int64(n)) == 2**64 - 1, name  # SIZE_MAX: no size to allocate
        before = [a.copy() for a in arguments if isinstance(a, np.ndarray)]
        workspace = np.zeros(64, np.uint8)  # a too-small workspace is never written either
        for given in (None, pointer(workspace)):
            assert _call(lib, name, n, arguments, given) == -2, name
        after = [a for a in arguments if isinstance(a, np.ndarray)]
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(after, before)), name
        assert not workspace.any()


def test_null_arrays_return_null_argument(library):
    lib, model, folder = library
    assert "#define MLP_STATUS_NULL_ARGUMENT (-3)" in (folder / "mlp.h").read_text()
    for name, arguments in _entry_arguments(model, 4).items():
        arrays = [k for k, a in enumerate(arguments) if isinstance(a, np.ndarray)]
        for k in arrays:
            before = [a.copy() for a in arguments if isinstance(a, np.ndarray)]
            converted = [
                None if i == k else a if isinstance(a, ctypes.c_double) else pointer(a)
                for i, a in enumerate(arguments)
            ]
            assert getattr(lib, name)(ctypes.c_int64(4), *converted, None) == -3, (name, k)
            after = [a for a in arguments if isinstance(a, np.ndarray)]
            assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(after, before))


def test_an_empty_batch_is_no_error(library):
    """n = 0 is a valid batch (not BAD_BATCH): no rows to predict, no scratch needed."""
    lib, model, _ = library
    arguments = _entry_arguments(model, 0)
    size = lib.mlp_forward_workspace_size
    size.restype = ctypes.c_size_t
    assert size(ctypes.c_int64(0)) == 0  # the work buffers all have n rows
    assert _call(lib, "mlp_forward", 0, arguments["mlp_forward"]) == 0
    # the mean loss over no rows is nan: the guard refuses the step, as for any nan loss
    assert _call(lib, "mlp_train_step", 0, arguments["mlp_train_step"]) == 1


@needs_cc
def test_a_functional_model_with_a_concatenation_as_a_shared_library(tmp_path):
    from symgrad.layers import Concatenate, Dense, Input
    from symgrad.models import Model

    x = Input(shape=(4,), name="features")
    a = Dense(3, activation="tanh", name="a")(x)
    h = Concatenate(name="cat")([a, x, a])
    model = Model(x, Dense(3, activation="softmax", name="out")(h), name="cat")
    model.compile(optimizer="adam", loss="categorical_crossentropy", dtype="float64", seed=0)
    symgrad.emit(model, tmp_path / "libcat.so", target="shared")
    lib = ctypes.CDLL(str(tmp_path / "libcat.so"))
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((10, 4)), np.eye(3)[rng.integers(0, 3, 10)]
    weights = [np.ascontiguousarray(w) for w in model.get_weights()]
    p = np.empty((10, 3))
    assert (
        lib.cat_forward(ctypes.c_int64(10), pointer(xs), *map(pointer, weights), pointer(p), None)
        == 0
    )
    np.testing.assert_allclose(p, model.predict(xs), rtol=1e-9)
    loss, grads = np.empty((1, 1)), [np.empty_like(w) for w in weights]
    args = [pointer(xs), pointer(ys), *map(pointer, weights), pointer(loss), *map(pointer, grads)]
    assert lib.cat_loss_and_gradients(ctypes.c_int64(10), *args, None) == 0
    for g, expected in zip(grads, model.compute_gradients(xs, ys)):
        np.testing.assert_allclose(g, expected, rtol=1e-9, atol=1e-12)
