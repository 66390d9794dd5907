"""Native libraries for other CPUs: AArch64 and ARMv7 under qemu, a Cortex-M4 freestanding image,
RV32 soft and hard float under qemu, the static variant without an allocator (with and without
the epoch function), one header for every triple, the sizes the CLI prints."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import struct
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


def link_freestanding(gcc: str, flags: list[str], harness: Path, out: Path) -> None:
    """Link the C file ``harness`` with the emitted ``digits.o`` beside it (and ``digits.h``)
    into the program ``out``: C99, no C library (only libgcc), not a word from the compiler."""
    folder = harness.parent
    command = [gcc, *flags, "-std=c99", "-Wall", "-Wextra", "-ffreestanding", "-nostdlib"]
    command += [f"-I{folder}", "-o", str(out), str(harness), str(folder / "digits.o"), "-lgcc"]
    linked = subprocess.run(command, capture_output=True, text=True)
    assert linked.returncode == 0 and linked.stderr == "", linked.stderr


def defined_symbols(obj: Path, nm: str = "nm") -> set[str]:
    listed = subprocess.run([nm, "-g", "--defined-only", str(obj)], capture_output=True, text=True)
    return {line.split()[-1] for line in listed.stdout.splitlines() if line.strip()}


def arena_define(header: Path) -> int:
    """DIGITS_ARENA_BYTES as the header defines it."""
    return int(header.read_text().split("#define DIGITS_ARENA_BYTES ")[1].split()[0])


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


AARCH64, ARMV7, M4, RISCV, RISCV_F, RISCV_D = (
    arch(n)
    for n in (
        "aarch64-linux-gnu",
        "armv7-linux-gnueabihf",
        "thumbv7em-none-eabihf",
        "riscv32-unknown-elf",
        "riscv32imafc-unknown-elf",
        "riscv32imafdc-unknown-elf",
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
    flags = [*M4.link_flags, "-Os", "-Wl,-e,main"]
    flags.append("-Wl,--no-warn-execstack")  # libgcc's soft-float objects lack the stack note
    link_freestanding(gcc, flags, tmp_path / "stub.c", tmp_path / "image.elf")
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
    assert sizes["library"]["bss"] == arena_define(tmp_path / "digits.h")


# e_flags of an RV32 ELF file: the float ABI, bits 1-2 (the psABI's EF_RISCV_FLOAT_ABI_*)
FLOAT_ABI_FLAGS = {"ilp32": 0x0, "ilp32f": 0x2, "ilp32d": 0x4}
# libgcc's software multiply, which an object calls when its FPU lacks the precision
SOFT_MULTIPLY = {"float32": "__mulsf3", "float64": "__muldf3"}


@pytest.mark.parametrize(
    ("a", "dtype", "epoch"),
    [
        pytest.param(RISCV, "float64", True, id="rv32imac-float64"),
        pytest.param(RISCV, "float32", False, id="rv32imac-float32-no-epoch"),
        pytest.param(RISCV_F, "float32", True, id="rv32imafc-float32"),
        pytest.param(RISCV_F, "float64", False, id="rv32imafc-float64-no-epoch"),
        pytest.param(RISCV_D, "float64", False, id="rv32imafdc-float64-no-epoch"),
        pytest.param(RISCV_D, "float32", True, id="rv32imafdc-float32"),
    ],
)
def test_riscv32_static_library_trains_under_qemu_as_the_host(tmp_path, a, dtype, epoch):
    """The no-allocator RV32 object, linked into a freestanding program (its own _start, memcpy
    and memset, libgcc's soft float where the FPU lacks the precision) for its -march and
    -mabi, trains three steps under qemu-riscv32: the losses and weights of the host's model.
    The object's float ABI is the triple's, its FPU does the arithmetic it has instructions
    for, and epoch=False leaves digits_train_epoch out of object and header."""
    require(a.linker, a.runner)
    tolerance = {"float64": 1e-12, "float32": 1e-5}[dtype]
    model = build_model() if dtype == "float64" else float32_digits()
    written = symgrad.emit(
        model, tmp_path / "digits.o", target="object", triple=a.name, max_batch=32, epoch=epoch
    )
    assert written == [tmp_path / "digits.o", tmp_path / "digits.h"]
    obj = (tmp_path / "digits.o").read_bytes()
    assert struct.unpack_from("<I", obj, 0x24)[0] & 0x6 == FLOAT_ABI_FLAGS[a.abi]
    nm = tool(a.linker).removesuffix("gcc") + "nm"
    undefined = subprocess.run(
        [nm, "-u", str(tmp_path / "digits.o")], capture_output=True, text=True, check=True
    ).stdout.split()
    hardware = {"float32": "+f" in a.features.split(","), "float64": "+d" in a.features.split(",")}
    assert (SOFT_MULTIPLY[dtype] in undefined) != hardware[dtype], undefined
    assert ("digits_train_epoch" in defined_symbols(tmp_path / "digits.o", nm)) == epoch
    assert ("digits_train_epoch(" in (tmp_path / "digits.h").read_text()) == epoch
    x, labels = example.load_digits(96)
    lines = ["typedef double T;" if dtype == "float64" else "typedef float T;"]
    lines += ["#define STEPS 3", "#define ROWS 32", c_array("X", x, dtype)]
    lines.append(c_array("Y", np.eye(10)[labels], dtype))
    lines += [c_array(f"W{k}", w, dtype) for k, w in enumerate(model.get_weights())]
    (tmp_path / "data.h").write_text("\n".join(lines) + "\n")
    (tmp_path / "harness.c").write_text(RISCV_HARNESS)
    flags = [*a.link_flags, "-O2", "-static"]
    link_freestanding(tool(a.linker), flags, tmp_path / "harness.c", tmp_path / "train")
    run = subprocess.run([tool(a.runner), str(tmp_path / "train")], capture_output=True)
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
    lib = static_library(tmp_path / "libdigits.so")
    arena = arena_define(tmp_path / "digits.h")
    big = next(n for n in range(9, 64) if lib.digits_train_step_workspace_size(n) > arena)
    x, labels = example.load_digits(big)
    step = StepCaller(lib, model, x, labels)
    before = step.state()
    assert step(big) == -4
    assert all(np.array_equal(a, b) for a, b in zip(step.state(), before)) and step.loss == 0
    workspace = np.zeros(lib.digits_train_step_workspace_size(ctypes.c_int64(big)), np.uint8)
    assert step(big, workspace.ctypes.data_as(ctypes.c_void_p)) == 0  # a caller's workspace
    step.restore(before)
    assert step(8) == 0  # in the arena
    np.testing.assert_allclose(step.loss, model.train_on_batch(x[:8], labels[:8]), rtol=1e-12)
    for w, expected in zip(step.weights, model.get_weights()):
        np.testing.assert_allclose(w, expected, rtol=0, atol=1e-12)


def static_library(path: Path) -> ctypes.CDLL:
    """The static shared library at ``path``, checked to need no allocator."""
    undefined = subprocess.run(["nm", "-u", "-D", str(path)], capture_output=True, text=True)
    assert "malloc" not in undefined.stdout and "free" not in undefined.stdout
    lib = ctypes.CDLL(str(path))
    lib.digits_train_step_workspace_size.restype = ctypes.c_size_t
    return lib


class StepCaller:
    """``digits_train_step`` of ``lib`` through ctypes on the first rows of (x, labels), with the
    float64 weights and Adam slots of ``model`` (which it updates in place) at t = 1."""

    def __init__(self, lib, model, x, labels):
        self.lib, self.x, self.y = lib, x, np.eye(10)[labels]
        self.weights = [np.ascontiguousarray(w) for w in model.get_weights()]
        self.slots = [np.zeros_like(w) for w in self.weights for _ in range(2)]
        h = model.optimizer.hyperparameter_values()
        names = ("beta_1", "beta_2", "epsilon", "learning_rate")
        self.scalars = [ctypes.c_double(h[k]) for k in names]
        self.out = np.zeros((1, 1))

    @property
    def loss(self) -> float:
        return float(self.out[0, 0])

    def state(self) -> list[np.ndarray]:
        return [a.copy() for a in self.weights + self.slots]

    def restore(self, state) -> None:
        for a, b in zip(self.weights + self.slots, state):
            a[...] = b

    def __call__(self, n: int, workspace=None) -> int:
        rows = [np.ascontiguousarray(a[:n]) for a in (self.x, self.y)]
        arrays = [a.ctypes.data_as(ctypes.c_void_p) for a in [*rows, *self.weights, *self.slots]]
        return self.lib.digits_train_step(
            ctypes.c_int64(n),
            *arrays,
            *self.scalars,
            ctypes.c_double(1.0),
            self.out.ctypes.data_as(ctypes.c_void_p),
            workspace,
        )


@pytest.mark.skipif(c_compiler() is None, reason="no C compiler (cc, gcc, clang or $CC) found")
def test_static_library_without_the_epoch_has_the_step_arena_and_trains(tmp_path):
    """epoch=False: no digits_train_epoch in the library or the header, which says so; the arena
    is the largest workspace of the three functions at max_batch rows (the training step's),
    less than the epoch's; the step trains in it as the Python model does."""
    model = build_model()
    libraries = {}
    for epoch in (True, False):
        folder = tmp_path / str(epoch)
        folder.mkdir()
        symgrad.emit(model, folder / "libdigits.so", target="shared", max_batch=8, epoch=epoch)
        libraries[epoch] = static_library(folder / "libdigits.so")
    without, full = libraries[False], libraries[True]
    header = (tmp_path / "False" / "digits.h").read_text()
    note = (
        " * Emitted without the epoch function (epoch=False, --no-epoch): digits_train_epoch is\n"
    )
    assert note in header and header.count("digits_train_epoch") == 1
    assert "DIGITS_STATUS_BAD_ORDER" not in header
    assert "digits_train_epoch" not in defined_symbols(tmp_path / "False" / "libdigits.so")
    assert "digits_train_epoch" in defined_symbols(tmp_path / "True" / "libdigits.so")
    sizes = {}
    for name in ("forward", "loss_and_gradients", "train_step"):
        query = getattr(without, f"digits_{name}_workspace_size")
        query.restype = ctypes.c_size_t
        sizes[name] = query(ctypes.c_int64(8))
    arena = arena_define(tmp_path / "False" / "digits.h")
    assert arena == max(sizes.values()) == sizes["train_step"]
    full.digits_train_epoch_workspace_size.restype = ctypes.c_size_t
    epoch_bytes = full.digits_train_epoch_workspace_size(ctypes.c_int64(8))
    assert arena < epoch_bytes == arena_define(tmp_path / "True" / "digits.h")
    x, labels = example.load_digits(9)
    step = StepCaller(without, model, x, labels)
    before = step.state()
    assert step(9) == -4  # the step's own arena: 8 rows, not one more
    assert all(np.array_equal(a, b) for a, b in zip(step.state(), before))
    assert step(8) == 0
    np.testing.assert_allclose(step.loss, model.train_on_batch(x[:8], labels[:8]), rtol=1e-12)
    for w, expected in zip(step.weights, model.get_weights()):
        np.testing.assert_allclose(w, expected, rtol=0, atol=1e-12)


def test_bad_triples_and_missing_tools_say_what_to_do(tmp_path, monkeypatch):
    model = build_model()
    with pytest.raises(
        ValueError,
        match=r"Unknown triple: 'mips-linux-gnu'\. Known triples: "
        r"'wasm32' .*'aarch64-linux-gnu' .*'thumbv7em-none-eabihf' .*'riscv32-unknown-elf' "
        r"\(.*soft float\), 'riscv32imafc-unknown-elf' \(.*ilp32f ABI.*\), "
        r"'riscv32imafdc-unknown-elf' \(.*ilp32d ABI.*\)",
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


def cli_sizes(folder: Path, *options: str) -> tuple[list[str], dict[str, list[int]]]:
    """What ``symgrad emit ... --size`` prints for the static riscv32 digits object of 4 rows,
    written into ``folder``: its lines and the table's rows by name."""
    from symgrad.__main__ import main

    folder.mkdir()
    command = ["emit", str(EXAMPLE / "digits_model.py"), "--target", "object"]
    command += ["--triple", "riscv32-unknown-elf", "--max-batch", "4", *options]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main([*command, "-o", str(folder / "digits.o"), "--size"])
    assert status == 0
    lines = buffer.getvalue().splitlines()
    return lines, {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines[4:]}


def test_cli_prints_the_code_size_of_each_function(tmp_path):
    out = tmp_path / "full" / "digits.o"
    lines, rows = cli_sizes(out.parent)
    assert lines[:3] == [
        f"wrote {out}",
        f"wrote {out.parent / 'digits.h'}",
        "code size in bytes, riscv32-unknown-elf:",
    ]
    assert lines[3].split() == ["code", "rodata", "data", "bss"]
    assert list(rows) == [
        "library",
        "digits_forward",
        "digits_loss_and_gradients",
        "digits_train_step",
        "digits_train_epoch",
    ]
    assert all(0 < r[0] <= rows["library"][0] for r in rows.values())
    assert (
        rows["library"][3] == arena_define(out.parent / "digits.h") == rows["digits_train_epoch"][3]
    )


def test_cli_no_epoch_shrinks_the_code_and_the_arena_to_the_step(tmp_path):
    """--no-epoch: the same functions, measured the same, without the epoch row; the library's
    code loses the epoch function's and its arena (the header's) is the training step's."""
    _, full = cli_sizes(tmp_path / "full")
    _, lean = cli_sizes(tmp_path / "lean", "--no-epoch")
    assert list(lean) == [
        "library",
        "digits_forward",
        "digits_loss_and_gradients",
        "digits_train_step",
    ]
    assert {k: lean[k] for k in lean if k != "library"} == {
        k: full[k] for k in lean if k != "library"
    }
    assert lean["library"][3] == arena_define(tmp_path / "lean" / "digits.h")
    assert lean["library"][3] == lean["digits_train_step"][3] < full["library"][3]
    assert lean["digits_train_step"][0] <= lean["library"][0] < full["library"][0]
    assert "digits_train_epoch" not in defined_symbols(
        tmp_path / "lean" / "digits.o", "riscv64-unknown-elf-nm"
    )


def test_epoch_option_is_checked(tmp_path, capsys):
    from symgrad.__main__ import main

    model = build_model()
    with pytest.raises(TypeError, match=r"epoch must be True or False; Received: epoch='no'"):
        symgrad.emit(model, tmp_path / "digits.o", target="object", epoch="no")
    with pytest.raises(
        ValueError,
        match=r"epoch=False leaves the epoch function out of a C library \(llvm-ir, object, "
        r"shared\); target='wasm' needs it \(the ES module's fit calls it\)\. Received: epoch=False",
    ):
        symgrad.emit(model, tmp_path / "digits.wasm", target="wasm", epoch=False)
    with pytest.raises(ValueError, match=r"target='python' has none\. Received: epoch=False"):
        symgrad.emit(model, tmp_path / "digits.py", epoch=False)
    with pytest.raises(ValueError, match=r"target='wasm' needs it"):
        symgrad.emission.writer.code_sizes(model, tmp_path / "digits.wasm", "wasm", epoch=False)
    command = ["emit", str(EXAMPLE / "digits_model.py"), "--target", "wasm", "--no-epoch"]
    assert main([*command, "-o", str(tmp_path / "digits.wasm")]) == 2
    assert (
        "symgrad emit: error: epoch=False leaves the epoch function out" in capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []  # nothing written
