"""codegen.llvm.jit: the host target, the optimization pipeline, object loading.

Every compiled function goes through the same three steps, whether its object
code comes from LLVM or from the disk cache:

1. ``optimize_and_emit_parts(ir_text, opt, parts)``: parse, verify, run the
   new-pass-manager ``default<O3>`` pipeline for the host CPU, emit an object file;
   for a large module and ``parts`` > 1, on two threads: the step with its kernels
   and the entry points optimized as two modules, the step's machine code in two
   parts (``codegen.llvm.split``);
2. (the cache stores those object files and the optimized IR text);
3. ``LoadedObject(objects)``: link the objects into a fresh MCJIT engine and look up
   symbols. Nothing is optimized or code-generated in this step.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import llvmlite
import llvmlite.binding as llvm


@dataclass(frozen=True)
class Host:
    """What the generated code is specialized for; part of every cache key."""

    triple: str
    cpu: str
    features: str
    data_layout: str

    def fingerprint(self) -> str:
        """The host and the pass pipeline: what object code depends on besides the IR."""
        return (
            f"{self.triple}|{self.cpu}|{self.features}|llvmlite {llvmlite.__version__}|{PIPELINE}"
        )


@functools.cache
def host() -> Host:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    cpu = llvm.get_host_cpu_name()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # not every platform reports features; the CPU name still tunes
        features = ""
    tm = new_target_machine(cpu, features, 3, jit=True)
    return Host(llvm.get_process_triple(), cpu, features, str(tm.target_data))


def new_target_machine(cpu: str, features: str, opt: int, **options) -> llvm.TargetMachine:
    """A machine for this process's triple; ``options``: ``jit=True`` for the engine and the
    in-process code, ``reloc="pic"`` for object files that go into shared libraries."""
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=cpu, features=features, opt=opt, **options)


@functools.cache
def target_machine(opt: int = 3) -> llvm.TargetMachine:
    """Shared machine for optimization and code emission (never handed to an engine)."""
    h = host()
    return new_target_machine(h.cpu, h.features, opt, jit=True)


def parse(ir_text: str, context=None) -> llvm.ModuleRef:
    module = llvm.parse_assembly(ir_text, context)
    try:
        module.verify()
    except RuntimeError:
        module.close()  # before its context goes, which would otherwise delete it too
        raise
    return module


@contextlib.contextmanager
def parsed(ir_text: str) -> Iterator[llvm.ModuleRef]:
    """The module of ``ir_text`` in an LLVM context of its own; module and context are
    freed when the block ends.

    A context keeps every name, constant and type a module interns in it after the
    module is gone: in llvmlite's global context that was 2 to 3 kB per small model,
    for as long as the process runs.
    """
    context = llvm.create_context()
    try:
        module = parse(ir_text, context)
        try:
            yield module
        finally:
            module.close()
    finally:
        context.close()


PIPELINE = "default<O{opt}>"  # part of every cache key, with the host


def unlocked(name: str):
    """llvmlite's C function ``name`` without llvmlite's process-wide lock (the locked
    wrapper on an llvmlite that does not expose the raw function). For calls on LLVM
    objects no other thread uses (``codegen.llvm.split``'s threads)."""
    wrapper = getattr(llvm.ffi.lib, name)
    return getattr(wrapper, "_cfn", wrapper)


def optimize(module: llvm.ModuleRef, tm: llvm.TargetMachine, opt: int, unlocked_run=False) -> None:
    """Run ``PIPELINE`` at level ``opt`` on ``module`` in place, tuned for ``tm``
    (``unlocked_run``: without llvmlite's lock, see ``unlocked``)."""
    if opt > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=opt)
        pto.loop_vectorization = pto.slp_vectorization = opt >= 2
        pb = llvm.create_pass_builder(tm, pto)
        mpm = pb.getModulePassManager()
        try:
            if unlocked_run:
                unlocked("LLVMPY_RunNewModulePassManager")(mpm, module, pb)
            else:
                mpm.run(module, pb)
        finally:
            release_pass_manager(mpm)
            pb.close()
            pto.close()


def release_pass_manager(mpm: llvm.ModulePassManager) -> None:
    """Free the C++ pipeline behind ``mpm`` now, exactly once.

    llvmlite's ``ModulePassManager`` never frees it: its base ``ObjectRef`` comes first
    in the method resolution order, so ``ObjectRef._dispose`` (which does nothing)
    hides ``NewPassManager._dispose``. Each ``default<O3>`` pipeline left behind holds
    about 115 kB (its passes and what they grow while running). ``detach`` afterwards
    keeps an llvmlite that fixes this from freeing it a second time.
    """
    if not mpm.closed:
        llvm.NewPassManager._dispose(mpm)
        mpm.detach()


def optimize_and_emit(ir_text: str, opt: int) -> tuple[bytes, str]:
    """Optimized object code and optimized IR text for ``ir_text``."""
    tm = target_machine(opt)
    with parsed(ir_text) as module:
        optimize(module, tm, opt)
        return tm.emit_object(module), str(module)


def optimize_and_emit_parts(ir_text: str, opt: int, parts: int) -> tuple[tuple[bytes, ...], str]:
    """The object files of ``ir_text`` and its optimized IR text: one object, or for a
    module large enough up to ``parts`` objects generated on as many threads."""
    from codegen.llvm import split  # which imports this module

    h = host()
    roles = split.by_role(ir_text) if parts > 1 else None
    if roles is not None:
        return split.optimize_and_emit_roles(roles, h.cpu, h.features, opt)
    tm = target_machine(opt)
    with parsed(ir_text) as module:
        optimize(module, tm, opt)
        optimized = str(module)
        texts = split.split(optimized, parts) if parts > 1 else None
        if texts is None:
            return (tm.emit_object(module),), optimized
    return split.emit_parts(texts, h.cpu, h.features, opt), optimized


MODULE_SEPARATOR = "\n; symgrad: the next module\n"  # between two modules' optimized texts


def emit_assembly(optimized_ir: str, opt: int) -> str:
    """Host assembly of optimized IR text (of each module, when it holds several)."""
    texts = optimized_ir.split(MODULE_SEPARATOR)
    out = []
    for text in texts:
        with parsed(text) as module:
            out.append(target_machine(opt).emit_assembly(module))
    return "".join(out)


class LoadedObject:
    """Object files linked into one MCJIT engine of their own; keeps the code alive.

    ``objects``: one object file, or several that call each other's functions
    (``codegen.llvm.split``): the engine resolves those calls between them.

    When the object is collected its engine is closed, which frees the code
    (``released`` is the finalizer; whoever calls the code must hold this object).
    """

    def __init__(self, objects: bytes | tuple[bytes, ...], opt: int = 3):
        h = host()
        empty = llvm.parse_assembly("")
        empty.triple = h.triple
        empty.data_layout = h.data_layout
        # The engine takes ownership of its target machine, so each gets a fresh one.
        self._engine = llvm.create_mcjit_compiler(
            empty, new_target_machine(h.cpu, h.features, opt, jit=True)
        )
        objects = (objects,) if isinstance(objects, bytes) else objects
        for obj in objects:
            self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.parts = len(objects)
        self._engine.finalize_object()
        self.released = weakref.finalize(self, self._engine.close)

    def address(self, symbol: str) -> int:
        addr = self._engine.get_function_address(symbol)
        if not addr:
            raise RuntimeError(f"symbol {symbol!r} not found in the compiled object")
        return addr

    def global_address(self, symbol: str) -> int:
        addr = self._engine.get_global_value_address(symbol)
        if not addr:
            raise RuntimeError(f"global {symbol!r} not found in the compiled object")
        return addr
