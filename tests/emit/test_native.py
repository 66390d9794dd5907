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
        for name in ("forward", "loss_and_gradients", "train_step")
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
    x, labels = example.load_digits(300)
    history = build_model().fit(x, labels, epochs=4, batch_size=32, shuffle=False, verbose=0)
    np.testing.assert_allclose(c_losses, history.history["loss"], rtol=1e-6)
    assert all(b < a for a, b in zip(c_losses, c_losses[1:]))  # it learns
