"""Native libraries for other CPUs: AArch64 and ARMv7 under qemu, a Cortex-M4 freestanding image,
the static variant without an allocator, one header for every triple, the sizes the CLI prints."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import symgrad
from codegen.llvm import emit as native_emit
from codegen.llvm.emit import c_compiler
from codegen.llvm.targets import TRIPLES, arch, tool
from tests.emit.helpers import ROOT

EXAMPLE = ROOT / "examples" / "c_train"
sys.path.insert(0, str(EXAMPLE))
import make_data_and_library as example  # noqa: E402
from digits_model import build_model  # noqa: E402

# What a freestanding program needs of a C library: the library calls these two.
MEMORY_FUNCTIONS = r"""
void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = dst; const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}
void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}
"""

STUB_MAIN = (
    r"""
/* A freestanding image: no C library, no allocator; the library's static arena. */
#include <stddef.h>
#include "digits.h"
"""
    + MEMORY_FUNCTIONS
    + r"""/* the ARM EABI names of the two (a C library for the target provides them too) */
void __aeabi_memcpy(void *d, const void *s, size_t n) { memcpy(d, s, n); }
void __aeabi_memcpy4(void *d, const void *s, size_t n) { memcpy(d, s, n); }
void __aeabi_memcpy8(void *d, const void *s, size_t n) { memcpy(d, s, n); }
void __aeabi_memclr(void *d, size_t n) { memset(d, 0, n); }
void __aeabi_memclr4(void *d, size_t n) { memset(d, 0, n); }
void __aeabi_memclr8(void *d, size_t n) { memset(d, 0, n); }
void __aeabi_memset(void *d, size_t n, int c) { memset(d, c, n); }

static float x[DIGITS_MAX_BATCH * DIGITS_INPUT_DIM], y[DIGITS_MAX_BATCH * DIGITS_OUTPUT_DIM];
static float w0[64 * 32], w1[32], w2[32 * 10], w3[10];
static float s[8][64 * 32];
volatile int status;

int main(void) {
    float loss;
    status = digits_train_step(DIGITS_MAX_BATCH, x, y, w0, w1, w2, w3, s[0], s[1], s[2], s[3],
                               s[4], s[5], s[6], s[7], DIGITS_BETA_1, DIGITS_BETA_2,
                               DIGITS_EPSILON, DIGITS_LEARNING_RATE, 1.0f, &loss, NULL);
    return status;
}
"""
)


# A freestanding RV32 Linux program (no C library, no allocator: the static arena): trains
# STEPS steps on the batches of data.h and writes the losses and final weights to stdout as
# raw bytes, through the Linux system calls write (64) and exit (93) that qemu-riscv32 serves.
RISCV_HARNESS = (
    r"""
#include <stddef.h>
#include <stdint.h>
#include "digits.h"
#include "data.h"

__asm__(
    ".section .text._start\n"
    ".global _start\n"
    "_start:\n"
    ".option push\n"
    ".option norelax\n"
    "    la gp, __global_pointer$\n"
    ".option pop\n"
    "    call run\n"
    "    li a7, 93\n"
    "    ecall\n");
"""
    + MEMORY_FUNCTIONS
    + r"""

static long system_call(long number, long a, long b, long c) {
    register long a0 __asm__("a0") = a;
    register long a1 __asm__("a1") = b;
    register long a2 __asm__("a2") = c;
    register long a7 __asm__("a7") = number;
    __asm__ volatile("ecall" : "+r"(a0) : "r"(a1), "r"(a2), "r"(a7) : "memory");
    return a0;
}

static int put(const void *data, size_t bytes) {
    const char *p = data;
    while (bytes) {
        long done = system_call(64, 1, (long)p, (long)bytes);
        if (done <= 0) return 1;
        p += done;
        bytes -= (size_t)done;
    }
    return 0;
}

static T slots[DIGITS_N_SLOTS][64 * 32];

int run(void) {
    static const double initial[] = DIGITS_SLOT_INITIAL_VALUES;
    static const long slot_sizes[] = DIGITS_SLOT_SIZES;
    for (int k = 0; k < DIGITS_N_SLOTS; k++)
        for (long i = 0; i < slot_sizes[k]; i++) slots[k][i] = (T)initial[k];
    for (int step = 0; step < STEPS; step++) {
        T loss;
        int32_t status = digits_train_step(
            ROWS, X + step * ROWS * DIGITS_INPUT_DIM, Y + step * ROWS * DIGITS_OUTPUT_DIM,
            W0, W1, W2, W3, slots[0], slots[1], slots[2], slots[3], slots[4], slots[5],
            slots[6], slots[7], DIGITS_BETA_1, DIGITS_BETA_2, DIGITS_EPSILON,
            DIGITS_LEARNING_RATE, (T)(step + 1), &loss, NULL);
        if (status != 0) return 10 + status;
        if (put(&loss, sizeof loss)) return 2;
    }
    return put(W0, sizeof W0) || put(W1, sizeof W1) || put(W2, sizeof W2) || put(W3, sizeof W3);
}
"""
)


def c_array(name: str, values, dtype: str) -> str:
    """A C array of ``values`` as exact hexadecimal floating-point literals."""
    suffix = "f" if dtype == "float32" else ""
    items = ", ".join(float(v).hex() + suffix for v in np.ravel(values))
    return f"static T {name}[{np.size(values)}] = {{{items}}};"


def require(*tools):
    """Skip (or, with SYMGRAD_REQUIRE_TOOLS set, as CI sets it, fail) unless every tool is on
    the PATH."""
    missing = [t.missing("run this test") for t in tools if tool(t) is None]
    if missing:
        (pytest.fail if os.environ.get("SYMGRAD_REQUIRE_TOOLS") else pytest.skip)(
            "; ".join(missing)
        )


def float32_digits():
    model = build_model()
    model.compile(optimizer=model.optimizer, loss=model.loss, dtype="float32", seed=0)
    return model


def needs(*names: str):
    """Skip unless every tool (a target's linker or runner, by attribute) is on the PATH."""
    missing = [t for t in names if tool(t) is None]
    return pytest.mark.skipif(
        bool(missing), reason="; ".join(t.missing("run this test") for t in missing)
    )


AARCH64, ARMV7, M4, RISCV = (
    arch(n)
    for n in (
        "aarch64-linux-gnu",
        "armv7-linux-gnueabihf",
        "thumbv7em-none-eabihf",
        "riscv32-unknown-elf",
    )
)


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    """The data and initial weights of examples/c_train, and the Python model's epoch losses."""
    folder = tmp_path_factory.mktemp("digits_data")
    x, labels = example.load_digits(600)
    model = build_model()
    example.write_data(folder / "digits_data.bin", x, labels)
    example.write_weights(folder / "digits_weights.bin", model)
    history = model.fit(x, labels, epochs=3, batch_size=32, shuffle=False, verbose=0)
    return folder, history.history["loss"]


def epoch_losses(stdout: str) -> list[float]:
    return [float(line.split()[-1]) for line in stdout.splitlines()]


@pytest.mark.parametrize(
    ("a", "target"),
    [
        pytest.param(AARCH64, "shared", marks=needs(AARCH64.linker, AARCH64.runner), id="aarch64"),
        pytest.param(ARMV7, "object", marks=needs(ARMV7.linker, ARMV7.runner), id="armv7"),
    ],
)
def test_cross_compiled_training_under_qemu_matches_the_host(tmp_path, digits_data, a, target):
    data, python_losses = digits_data
    name = "libdigits.so" if target == "shared" else "digits.o"
    symgrad.emit(build_model(), tmp_path / name, target=target, triple=a.name)
    cc = tool(a.linker)
    command = [
        cc,
        "-O2",
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-o",
        str(tmp_path / "train"),
        str(EXAMPLE / "train.c"),
        f"-I{tmp_path}",
    ]
    if target == "shared":
        command += [f"-L{tmp_path}", "-ldigits", "-lm"]
    else:  # a static executable: no target libraries needed at run time
        command += [str(tmp_path / name), "-lm", "-static"]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0 and built.stderr == "", built.stderr
    sysroot = f"/usr/{Path(cc).name.removesuffix('-gcc')}"
    for mode in ("step", "epoch"):  # digits_train_step per batch, digits_train_epoch per epoch
        run = subprocess.run(
            [
                tool(a.runner),
                "-L",
                sysroot,
                str(tmp_path / "train"),
                str(data / "digits_data.bin"),
                str(data / "digits_weights.bin"),
                "3",
                "32",
                mode,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path)},
            timeout=600,
        )
        assert run.returncode == 0, run.stderr
        losses = epoch_losses(run.stdout)
        np.testing.assert_allclose(losses, python_losses, rtol=1e-12, err_msg=mode)
    if c_compiler() is not None:  # the same program on this machine
        host = tmp_path / "host"
        host.mkdir()
        symgrad.emit(build_model(), host / "libdigits.so", target="shared")
        built = subprocess.run(
            ["sh", str(EXAMPLE / "build.sh")],
            env={**os.environ, "BUILD": str(host)},
            capture_output=True,
            text=True,
        )
        assert built.returncode == 0, built.stderr
        native = subprocess.run(
            [
                str(host / "train"),
                str(data / "digits_data.bin"),
                str(data / "digits_weights.bin"),
                "3",
                "32",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        np.testing.assert_allclose(losses, epoch_losses(native.stdout), rtol=1e-12)


@needs(M4.linker)
def test_thumbv7em_freestanding_image_links_without_libc_libm_or_malloc(tmp_path):
    written = symgrad.emit(
        float32_digits(), tmp_path / "digits.o", target="object", triple=M4.name, max_batch=32
    )
    assert written == [tmp_path / "digits.o", tmp_path / "digits.h"]
    (tmp_path / "stub.c").write_text(STUB_MAIN)
    gcc = tool(M4.linker)
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
    linked = subprocess.run(
        [
            gcc,
            *flags,
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Os",
            "-ffreestanding",
            "-nostdlib",
            "-Wl,-e,main",
            "-Wl,--no-warn-execstack",  # libgcc's soft-float objects lack the stack note
            f"-I{tmp_path}",
            "-o",
            str(tmp_path / "image.elf"),
            str(tmp_path / "stub.c"),
            str(tmp_path / "digits.o"),
            "-lgcc",
        ],
        capture_output=True,
        text=True,
    )
    assert linked.returncode == 0 and linked.stderr == "", linked.stderr
    undefined = subprocess.run(
        [gcc.removesuffix("gcc") + "nm", "-u", str(tmp_path / "digits.o")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    libm = {"sqrt", "sqrtf", "expf", "exp", "logf", "log", "tanhf", "fmaxf", "fmax"}
    assert not libm & set(undefined) and "malloc" not in undefined, undefined
    sizes = dict(
        symgrad.emission.writer.code_sizes(
            float32_digits(), tmp_path / "digits.o", triple=M4.name, max_batch=32
        )
    )
    assert sizes["digits_train_step"]["code"] < 16 * 1024  # the training step fits small flash
    assert sizes["library"]["bss"] == int(
        next(
            line.split()[2]
            for line in (tmp_path / "digits.h").read_text().splitlines()
            if line.startswith("#define DIGITS_ARENA_BYTES")
        )
    )


@pytest.mark.parametrize(("dtype", "tolerance"), [("float64", 1e-12), ("float32", 1e-5)])
def test_riscv32_static_library_trains_under_qemu_as_the_host(tmp_path, dtype, tolerance):
    """The no-allocator RV32IMAC object, linked into a freestanding program (its own _start,
    memcpy and memset, libgcc's soft float), trains three steps under qemu-riscv32: the losses
    and weights of the host's model."""
    require(RISCV.linker, RISCV.runner)
    model = build_model() if dtype == "float64" else float32_digits()
    written = symgrad.emit(
        model, tmp_path / "digits.o", target="object", triple=RISCV.name, max_batch=32
    )
    assert written == [tmp_path / "digits.o", tmp_path / "digits.h"]
    x, labels = example.load_digits(96)
    lines = ["typedef double T;" if dtype == "float64" else "typedef float T;"]
    lines += ["#define STEPS 3", "#define ROWS 32", c_array("X", x, dtype)]
    lines.append(c_array("Y", np.eye(10)[labels], dtype))
    lines += [c_array(f"W{k}", w, dtype) for k, w in enumerate(model.get_weights())]
    (tmp_path / "data.h").write_text("\n".join(lines) + "\n")
    (tmp_path / "harness.c").write_text(RISCV_HARNESS)
    built = subprocess.run(
        [
            tool(RISCV.linker),
            "-march=rv32imac",
            "-mabi=ilp32",
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-O2",
            "-ffreestanding",
            "-nostdlib",
            "-static",
            f"-I{tmp_path}",
            "-o",
            str(tmp_path / "train"),
            str(tmp_path / "harness.c"),
            str(tmp_path / "digits.o"),
            "-lgcc",
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0 and built.stderr == "", built.stderr
    run = subprocess.run([tool(RISCV.runner), str(tmp_path / "train")], capture_output=True)
    assert run.returncode == 0, (run.returncode, run.stderr)
    got = np.frombuffer(run.stdout, dtype=dtype)
    losses = [float(model.train_on_batch(x[k : k + 32], labels[k : k + 32])) for k in (0, 32, 64)]
    expected = np.concatenate([losses, *(w.ravel() for w in model.get_weights())])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got[:3], losses, rtol=tolerance)
    np.testing.assert_allclose(got[3:], expected[3:], rtol=0, atol=tolerance)


def test_the_header_is_the_same_for_every_triple(tmp_path):
    model = build_model()
    headers = {}
    for name in [None, *(t for t in TRIPLES if t != "wasm32")]:
        folder = tmp_path / (name or "host")
        folder.mkdir()
        symgrad.emit(model, folder / "digits.o", target="object", triple=name, max_batch=16)
        headers[name] = (folder / "digits.h").read_text()
    assert len(set(headers.values())) == 1, [k for k, v in headers.items() if v != headers[None]]
    assert "#define DIGITS_MAX_BATCH 16" in headers[None]
    assert "#define DIGITS_STATUS_BATCH_TOO_LARGE (-4)" in headers[None]


@pytest.mark.skipif(c_compiler() is None, reason="no C compiler (cc, gcc, clang or $CC) found")
def test_static_arena_refuses_a_batch_above_its_maximum(tmp_path):
    """max_batch=8: NULL workspace runs up to 8 rows in the arena; a batch whose workspace
    exceeds DIGITS_ARENA_BYTES (sized for the epoch function's 8 rows, more than the step's)
    -> -4, nothing written."""
    model = build_model()
    symgrad.emit(model, tmp_path / "libdigits.so", target="shared", max_batch=8)
    lib = ctypes.CDLL(str(tmp_path / "libdigits.so"))
    undefined = subprocess.run(
        ["nm", "-u", "-D", str(tmp_path / "libdigits.so")], capture_output=True, text=True
    ).stdout
    assert "malloc" not in undefined and "free" not in undefined
    lib.digits_train_step_workspace_size.restype = ctypes.c_size_t
    header = (tmp_path / "digits.h").read_text()
    arena = int(header.split("#define DIGITS_ARENA_BYTES ")[1].split()[0])
    big = next(n for n in range(9, 64) if lib.digits_train_step_workspace_size(n) > arena)
    x, labels = example.load_digits(big)
    y = np.eye(10)[labels]
    weights = [np.ascontiguousarray(w) for w in model.get_weights()]
    slots = [np.zeros_like(w) for w in weights for _ in range(2)]
    h = model.optimizer.hyperparameter_values()
    scalars = [ctypes.c_double(h[k]) for k in ("beta_1", "beta_2", "epsilon", "learning_rate")]
    loss = np.zeros((1, 1))

    def step(n, workspace=None):
        rows = [np.ascontiguousarray(a[:n]) for a in (x, y)]
        arrays = [a.ctypes.data_as(ctypes.c_void_p) for a in [*rows, *weights, *slots]]
        return lib.digits_train_step(
            ctypes.c_int64(n),
            *arrays,
            *scalars,
            ctypes.c_double(1.0),
            loss.ctypes.data_as(ctypes.c_void_p),
            workspace,
        )

    before = [w.copy() for w in weights + slots]
    assert step(big) == -4
    assert all(np.array_equal(a, b) for a, b in zip(weights + slots, before)) and loss[0, 0] == 0
    workspace = np.zeros(lib.digits_train_step_workspace_size(ctypes.c_int64(big)), np.uint8)
    assert step(big, workspace.ctypes.data_as(ctypes.c_void_p)) == 0  # a caller's workspace
    for w, b in zip(weights + slots, before):
        w[...] = b
    assert step(8) == 0  # in the arena
    np.testing.assert_allclose(loss[0, 0], model.train_on_batch(x[:8], labels[:8]), rtol=1e-12)
    for w, expected in zip(weights, model.get_weights()):
        np.testing.assert_allclose(w, expected, rtol=0, atol=1e-12)


def test_bad_triples_and_missing_tools_say_what_to_do(tmp_path, monkeypatch):
    model = build_model()
    with pytest.raises(
        ValueError,
        match=r"Unknown triple: 'mips-linux-gnu'\. Known triples: "
        r"'wasm32' .*'aarch64-linux-gnu' .*'thumbv7em-none-eabihf'",
    ):
        symgrad.emit(model, tmp_path / "digits.o", target="object", triple="mips-linux-gnu")
    with pytest.raises(ValueError, match="thumbv7em-none-eabihf has no shared libraries"):
        symgrad.emit(model, tmp_path / "libdigits.so", target="shared", triple=M4.name)
    with pytest.raises(
        ValueError, match=r"max_batch must be a positive integer; Received: max_batch=0"
    ):
        symgrad.emit(model, tmp_path / "digits.o", target="object", max_batch=0)
    with pytest.raises(ValueError, match=r"triple is for the native targets; Received: triple="):
        symgrad.emit(model, tmp_path / "digits.py", triple="aarch64-linux-gnu")
    monkeypatch.setattr(native_emit, "tool", lambda t: None)  # nothing on the PATH
    with pytest.raises(
        RuntimeError,
        match=r"aarch64-linux-gnu-gcc not found on the PATH; it is "
        r"needed to link a shared library for aarch64-linux-gnu\. On Debian or "
        r"Ubuntu: apt-get install gcc-aarch64-linux-gnu",
    ):
        symgrad.emit(model, tmp_path / "libdigits.so", target="shared", triple=AARCH64.name)
    with pytest.raises(
        RuntimeError,
        match=r"wasm-ld not found on the PATH; it is needed to link "
        r"a WebAssembly module\. On Debian or Ubuntu: apt-get install lld",
    ):
        symgrad.emit(model, tmp_path / "digits.wasm", target="wasm")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_cli_prints_the_code_size_of_each_function(tmp_path):
    from symgrad.__main__ import main

    out = tmp_path / "digits.o"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(
            [
                "emit",
                str(EXAMPLE / "digits_model.py"),
                "--target",
                "object",
                "--triple",
                "riscv32-unknown-elf",
                "--max-batch",
                "4",
                "-o",
                str(out),
                "--size",
            ]
        )
    assert status == 0
    lines = buffer.getvalue().splitlines()
    assert lines[:3] == [
        f"wrote {out}",
        f"wrote {tmp_path / 'digits.h'}",
        "code size in bytes, riscv32-unknown-elf:",
    ]
    assert lines[3].split() == ["code", "rodata", "data", "bss"]
    rows = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines[4:]}
    assert list(rows) == [
        "library",
        "digits_forward",
        "digits_loss_and_gradients",
        "digits_train_step",
        "digits_train_epoch",
    ]
    assert all(0 < r[0] <= rows["library"][0] for r in rows.values())
    assert rows["library"][3] == int(
        next(
            line.split()[2]
            for line in (tmp_path / "digits.h").read_text().splitlines()
            if line.startswith("#define DIGITS_ARENA_BYTES")
        )
    )
