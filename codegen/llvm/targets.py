"""codegen.llvm.targets: the CPUs a native library can be emitted for, and their tools.

``TRIPLES`` maps the name a user passes (``triple="aarch64-linux-gnu"``) to an
``Arch``: the LLVM triple, the baseline CPU and features the code is generated
for, the calling convention's ABI where the CPU has several (``abi``: RISC-V's
ilp32, ilp32f, ilp32d), the pointer width (``size_t`` in the header), whether the
target has a C library with ``malloc`` and shared libraries (``hosted``), and the
tool that links for it with the Debian package that provides it. ``HOST`` is this
machine. The same LLVM IR serves every target; only the triple and data layout
at its top differ, so the C header is identical across targets.

    >>> arch("thumbv7em-none-eabihf").cpu
    'cortex-m4'
    >>> tool(arch("aarch64-linux-gnu").linker)  # doctest: +SKIP
    '/usr/bin/aarch64-linux-gnu-gcc'
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass

import llvmlite.binding as llvm


@dataclass(frozen=True)
class Tool:
    """A program found on the PATH, and the Debian package that provides it."""

    command: str
    package: str

    def missing(self, purpose: str) -> str:
        return (
            f"{self.command} not found on the PATH; it is needed to {purpose}. "
            f"On Debian or Ubuntu: apt-get install {self.package}"
        )


@dataclass(frozen=True)
class Arch:
    """One CPU a library can be written for (see the module docstring)."""

    name: str
    triple: str
    cpu: str
    features: str
    pointer_bits: int
    hosted: bool  # a C library with malloc, shared libraries
    linker: Tool | None
    runner: Tool | None = None  # runs its Linux executables on this machine
    no_sqrt: tuple[str, ...] = ()  # dtypes the FPU has no sqrt instruction for
    about: str = ""
    abi: str = ""  # the target ABI (LLVM's "target-abi"); "": the triple's default
    link_flags: tuple[str, ...] = ()  # gcc flags for C code linked with it: CPU, float ABI


WASM_LD = Tool("wasm-ld", "lld")
RISCV_GCC = Tool("riscv64-unknown-elf-gcc", "gcc-riscv64-unknown-elf")  # has the rv32 multilibs
QEMU_RISCV32 = Tool("qemu-riscv32", "qemu-user")  # runs a freestanding image's Linux system calls

TRIPLES = {
    a.name: a
    for a in (
        Arch(
            "wasm32",
            "wasm32-unknown-unknown",
            "generic",
            "+simd128,+bulk-memory,+nontrapping-fptoint,+sign-ext,+mutable-globals",
            32,
            False,
            WASM_LD,
            about="WebAssembly with SIMD128, for browsers and Node",
        ),
        Arch(
            "aarch64-linux-gnu",
            "aarch64-unknown-linux-gnu",
            "generic",
            "+neon",
            64,
            True,
            Tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
            Tool("qemu-aarch64", "qemu-user"),
            about="64-bit ARM Linux (Raspberry Pi 4/5, Jetson, Graviton)",
        ),
        Arch(
            "armv7-linux-gnueabihf",
            "armv7-unknown-linux-gnueabihf",
            "generic",
            "+vfp3d16,+thumb2,-neon",
            32,
            True,
            Tool("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf"),
            Tool("qemu-arm", "qemu-user"),
            about="32-bit ARM Linux, hard float (Raspberry Pi 2/3 on a 32-bit OS)",
        ),
        Arch(
            "thumbv7em-none-eabihf",
            "thumbv7em-unknown-none-eabihf",
            "cortex-m4",
            "",
            32,
            False,
            Tool("arm-none-eabi-gcc", "gcc-arm-none-eabi"),
            no_sqrt=("float64",),
            about="Cortex-M4F/M7 microcontrollers, no OS (single-precision FPU)",
            link_flags=("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
        ),
        Arch(
            "riscv32-unknown-elf",
            "riscv32-unknown-unknown-elf",
            "generic-rv32",
            "+m,+a,+c",
            32,
            False,
            RISCV_GCC,
            QEMU_RISCV32,
            no_sqrt=("float32", "float64"),
            about="32-bit RISC-V microcontrollers (RV32IMAC, ilp32 ABI), no OS, soft float",
            abi="ilp32",
            link_flags=("-march=rv32imac", "-mabi=ilp32"),
        ),
        Arch(
            "riscv32imafc-unknown-elf",
            "riscv32-unknown-unknown-elf",
            "generic-rv32",
            "+m,+a,+f,+c",
            32,
            False,
            RISCV_GCC,
            QEMU_RISCV32,
            no_sqrt=("float64",),
            about="32-bit RISC-V with a single-precision FPU (RV32IMAFC, ilp32f ABI), no OS",
            abi="ilp32f",
            link_flags=("-march=rv32imafc", "-mabi=ilp32f"),
        ),
        Arch(
            "riscv32imafdc-unknown-elf",
            "riscv32-unknown-unknown-elf",
            "generic-rv32",
            "+m,+a,+f,+d,+c",
            32,
            False,
            RISCV_GCC,
            QEMU_RISCV32,
            about="32-bit RISC-V with a double-precision FPU (RV32IMAFDC, ilp32d ABI), no OS",
            abi="ilp32d",
            link_flags=("-march=rv32imafdc", "-mabi=ilp32d"),
        ),
    )
}


@functools.cache
def _initialized() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def arch(name: str) -> Arch:
    """The target called ``name``; a ValueError lists the known ones."""
    found = TRIPLES.get(name) if isinstance(name, str) else None
    if found is None:
        known = ", ".join(f"{k!r} ({a.about})" for k, a in TRIPLES.items())
        raise ValueError(f"Unknown triple: {name!r}. Known triples: {known}")
    return found


def target_machine(a: Arch, opt: int = 3) -> llvm.TargetMachine:
    """A machine for ``a``'s baseline CPU; position-independent where shared libraries exist."""
    _initialized()
    target = llvm.Target.from_triple(a.triple)
    reloc = "pic" if a.hosted else "static"
    return target.create_target_machine(
        cpu=a.cpu, features=a.features, opt=opt, reloc=reloc, codemodel="default", abiname=a.abi
    )


def tool(t: Tool) -> str | None:
    """The full path of ``t`` on the PATH, or None."""
    return shutil.which(t.command)
