"""codegen.llvm.split: code generation of one optimized module as several objects, in parallel.

LLVM's code generation (instruction selection, register allocation, encoding)
takes about half of a cold compile and works one function at a time, so it can
run on several threads (what LLVM's parallel LTO code generation does). The
module is optimized whole first, as before (every interprocedural decision of
the ``default<O3>`` pipeline is the same); then ``split`` deals its functions
to ``parts`` texts, largest first to the part with the fewest lines. Each part
defines its own functions and declares the others'; a function called from
another part loses its ``internal`` linkage; a global variable is defined in
part 0 and ``available_externally`` in the others (so it stays one variable).
``emit_parts`` generates each part's object in an LLVM context and with a
target machine of its own, on its own thread; the objects are linked into one
engine (``jit.LoadedObject``), which resolves the calls between them. Each
function's machine code is the whole module's (tests/codegen/test_llvm_split.py
compares the assembly).

llvmlite guards every call into LLVM with one process-wide lock, so the
emission calls go to its C functions directly (``_unlocked``): the threads
share no LLVM object, and ``_emitting`` keeps two compiles in the process from
sharing the lanes' target machines.
"""

from __future__ import annotations

import ctypes
import functools
import re
import threading

import llvmlite.binding as llvm

MIN_PART_LINES = 1500  # optimized IR lines per part below which a thread does not pay

_NAME = r'@("(?:[^"\\]|\\.)*"|[-\w$.]+)'
_DEFINE = re.compile(rf"define (?:(internal|private) )?[^@]*{_NAME}\(")
# linkages a part cannot simply define or declare: left whole
_OTHER_LINKAGE = re.compile(
    r"= (?:weak|weak_odr|linkonce|linkonce_odr|common|appending|extern_weak|available_externally)"
    r" |define (?:weak|weak_odr|linkonce|linkonce_odr|available_externally|extern_weak) "
    r"| alias | ifunc | comdat| personality | prefix | prologue | section "
)


def split(optimized: str, parts: int) -> list[str] | None:
    """The texts of ``parts`` modules that together define ``optimized``'s functions once;
    None when the module is too small for ``parts`` (or holds a construct not handled)."""
    lines = optimized.split("\n")
    functions = _functions(lines)
    total = sum(end - start for _, _, start, end in functions)
    parts = min(parts, total // MIN_PART_LINES)
    if parts < 2 or any(_OTHER_LINKAGE.search(line) for line in lines if line[:1] in "@d"):
        return None
    if any(_local_variable(line) for line in lines if line.startswith("@")):
        return None  # a module-local variable would be two variables in two parts
    home = _deal(functions, parts)
    called = _called_elsewhere(lines, functions, home)
    return [_part(lines, functions, home, called, k) for k in range(parts)]


def _functions(lines: list[str]) -> list[tuple[str, bool, int, int]]:
    """(name, local, first line, line after the closing brace) of each definition."""
    found, i = [], 0
    while i < len(lines):
        m = _DEFINE.match(lines[i])
        if m is None:
            i += 1
            continue
        end = lines.index("}", i) + 1
        found.append((m.group(2), m.group(1) is not None, i, end))
        i = end
    return found


def _local_variable(line: str) -> bool:
    """An ``internal``/``private`` global that is not a constant (one copy per part would
    split its value)."""
    after = line.partition(" = ")[2]
    return after.startswith(("internal ", "private ")) and " constant " not in after


def _deal(functions, parts: int) -> dict[str, int]:
    """Each function's part: the largest first, each to the part with the fewest lines so
    far (the first such part on a tie), so the dealing depends on the text alone."""
    loads, home = [0] * parts, {}
    by_size = sorted(range(len(functions)), key=lambda f: (-(functions[f][3] - functions[f][2]), f))
    for f in by_size:
        k = loads.index(min(loads))
        name, _, start, end = functions[f]
        home[name] = k
        loads[k] += end - start
    return home


def _part(lines, functions, home, called, k: int) -> str:
    """Part ``k``: its own definitions, a declaration of every other one, variables
    defined in part 0 only."""
    out, at = [], 0
    for name, local, start, end in functions:
        out += [_variable(line, k) for line in lines[at:start]]
        header = lines[start]
        if local and (home[name] != k or name in called):
            header = _DEFINE_LINKAGE.sub("define ", header, count=1)
        if home[name] == k:
            out += [header] + lines[start + 1 : end]
        else:
            out.append("declare " + header[len("define ") :].removesuffix(" {"))
        at = end
    out += [_variable(line, k) for line in lines[at:]]
    return "\n".join(out)


_DEFINE_LINKAGE = re.compile(r"^define (?:internal|private) ")
_REFERENCE = re.compile(_NAME)


def _called_elsewhere(lines, functions, home) -> set[str]:
    """Functions named in the body of a function of another part (local ones among
    them become external)."""
    called = set()
    for name, _, start, end in functions:
        body = "\n".join(lines[start + 1 : end])
        called.update(
            m.group(1)
            for m in _REFERENCE.finditer(body)
            if home.get(m.group(1), home[name]) != home[name]
        )
    return called


def _variable(line: str, k: int) -> str:
    """A global variable's line in part ``k``: external definitions live in part 0."""
    name, sep, after = line.partition(" = ")
    if (
        k == 0
        or not line.startswith("@")
        or not sep
        or after.startswith(("external ", "internal ", "private "))
    ):
        return line
    return f"{name} = available_externally {after}"


# --------------------------------------------------------------------------
# Parallel emission


def _unlocked(name: str):
    """llvmlite's C function ``name`` without llvmlite's process-wide lock (the locked
    wrapper on an llvmlite that does not expose the raw function)."""
    wrapper = getattr(llvm.ffi.lib, name)
    return getattr(wrapper, "_cfn", wrapper)


_emitting = threading.Lock()


@functools.cache
def _lane_machine(cpu: str, features: str, opt: int, lane: int) -> llvm.TargetMachine:
    """Lane ``lane``'s target machine (a machine is not safe to share between threads)."""
    del lane  # part of the cache key only
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=cpu, features=features, opt=opt, jit=True)


def emit_parts(texts: list[str], cpu: str, features: str, opt: int) -> tuple[bytes, ...]:
    """The object of each text, each on a thread of its own (the first on the caller's)."""
    from codegen.llvm.jit import parse

    objects: list[bytes | None] = [None] * len(texts)
    errors: list[BaseException] = []

    def lane(k: int) -> None:
        try:
            context = llvm.create_context()
            try:
                module = parse(texts[k], context)
                try:
                    objects[k] = _emit_object(_lane_machine(cpu, features, opt, k), module)
                finally:
                    module.close()
            finally:
                context.close()
        except BaseException as exc:  # re-raised on the caller's thread
            errors.append(exc)

    with _emitting:
        threads = [threading.Thread(target=lane, args=(k,)) for k in range(1, len(texts))]
        for t in threads:
            t.start()
        lane(0)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return tuple(objects)


def _emit_object(tm: llvm.TargetMachine, module: llvm.ModuleRef) -> bytes:
    """``tm.emit_object(module)`` through the unlocked C functions."""
    with llvm.ffi.OutputString() as error:
        buffer = _unlocked("LLVMPY_TargetMachineEmitToMemory")(tm, module, 1, error)
        if not buffer:
            raise RuntimeError(str(error))
    try:
        start = _unlocked("LLVMPY_GetBufferStart")(buffer)
        return ctypes.string_at(start, _unlocked("LLVMPY_GetBufferSize")(buffer))
    finally:
        _unlocked("LLVMPY_DisposeMemoryBuffer")(buffer)
