"""codegen.backends: each backend as an object with one small interface, found by name.

    >>> from codegen.backends import backend
    >>> fn = backend("llvm").compile(program)          # doctest: +SKIP
    >>> backend("numpy").epochs, backend("llvm").epochs
    (False, True)

A backend compiles a ``codegen.ir.Program`` to a function ``fn(*inputs, *scalars)``
(the call convention of ``codegen.ir``) and says what else it supports:

- ``epochs``: ``compile_epoch`` builds a whole training epoch into one native call
  (batch gathering, every step, the sums of chosen outputs);
- ``targets``: the standalone files ``symgrad.emit`` writes from its code
  (target name -> what is written), and ``cpus``: what native ones can be tuned for;
- ``compile(program, cache=...)``: whether compiled code is kept in the disk cache
  (backends without compiled code to keep ignore it).

The backend's package is imported on first use, so asking which backends exist
imports no compiler (llvmlite only when the LLVM backend compiles something).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType, ModuleType

from codegen.ir import Program


class Backend:
    """What every backend offers; subclasses implement ``compile`` (and ``compile_epoch``)."""

    name: str = ""
    package: str = ""  # the module that implements it, imported on first use
    epochs: bool = False
    targets: Mapping[str, str] = MappingProxyType({})
    cpus: tuple[str, ...] = ()

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(self.package)

    def compile(self, program: Program, *, cache: bool = True, threads: int | None = None):
        """``fn(*inputs, *scalars) -> outputs`` for ``program``; updates applied in place.
        ``threads``: how many threads its loops may use (backends without a pool ignore it)."""
        raise NotImplementedError(f"backend {self.name!r} does not implement compile")

    def compile_epoch(self, program: Program, *, cache: bool = True, **spec):
        """A whole-epoch native loop over ``program`` (``epochs`` backends only)."""
        raise NotImplementedError(
            f"backend {self.name!r} has no whole-epoch loop; backends with one: "
            f"{', '.join(b.name for b in BACKENDS.values() if b.epochs)}"
        )

    def entry(self, fn):
        """The fastest way to call ``fn`` (same arguments, same results)."""
        return fn

    def source(self, fn) -> str:
        """The generated text of ``fn`` that users read."""
        return fn.source

    def __repr__(self) -> str:
        return f"<Backend {self.name}>"


class NumpyBackend(Backend):
    """Generated Python source on NumPy (``codegen.numpy``)."""

    name, package = "numpy", "codegen.numpy"
    targets = MappingProxyType({"python": "a NumPy-only Python module (.py)"})

    def compile(self, program: Program, *, cache: bool = True, threads: int | None = None):
        # nothing to keep: generating the source costs less than reading it back
        return self.module.compile_program(program)


class LLVMBackend(Backend):
    """Native code through llvmlite (``codegen.llvm``); object code in the disk cache."""

    name, package = "llvm", "codegen.llvm"
    epochs = True
    targets = MappingProxyType(
        {
            "llvm-ir": "LLVM IR text (.ll)",
            "object": "an object file (.o) and a C header (.h)",
            "shared": "a shared library (.so) and a C header (.h)",
            "wasm": "a WebAssembly module (.wasm) and the ES module that runs it (.js)",
        }
    )
    cpus = ("host", "generic")  # this machine, or the baseline of its architecture

    def compile(self, program: Program, *, cache: bool = True, threads: int | None = None):
        return self.module.compile_program(program, cache=cache, threads=threads)

    def compile_epoch(self, program: Program, *, cache: bool = True, **spec):
        return self.module.compile_epoch(program, cache=cache, **spec)

    def entry(self, fn):
        return fn.fast  # the native entry that checks its arguments natively

    def source(self, fn) -> str:
        return fn.llvm_ir


BACKENDS: Mapping[str, Backend] = MappingProxyType(
    {b.name: b for b in (NumpyBackend(), LLVMBackend())}
)


def backend(name: str) -> Backend:
    """The backend called ``name``; a ValueError lists the known ones."""
    found = BACKENDS.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"Unknown backend: {name!r}. Known backends: {', '.join(BACKENDS)}")
    return found


def target_backend(target: str) -> Backend:
    """The backend whose code an emission ``target`` is written from."""
    for b in BACKENDS.values():
        if target in b.targets:
            return b
    known = ", ".join(f"{t!r} ({what})" for b in BACKENDS.values() for t, what in b.targets.items())
    raise ValueError(f"Unknown emit target: {target!r}. Known targets: {known}")
