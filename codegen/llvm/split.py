"""codegen.llvm.split: one large module compiled as several modules, on two threads.

LLVM's O3 pipeline and its code generation take about half of a cold compile
each, on one core. Two ways of cutting the module, both keeping every
function's machine code:

- ``by_role`` cuts the unoptimized module into the local functions (the step
  ``step_impl``, its kernels, their chunk functions, the math functions) and
  the entry points (C, ``.py``, ``.epoch``, ``.fast``), which declare the
  step. The kernels keep their only callers and every argument those pass, so
  O3's interprocedural decisions for them are the whole module's; the two
  modules are optimized in parallel (``optimize_and_emit_roles``).
- ``split`` deals an optimized module's functions to parts, largest first to
  the part with the fewest lines: code generation works one function at a
  time (what LLVM's parallel LTO code generation relies on), so the parts are
  emitted in parallel (``emit_parts``; the step's module in
  ``optimize_and_emit_roles``).

Each part defines its own functions and declares the others'; a local
function called from another part becomes external; a global variable is
defined in part 0 and ``available_externally`` in the others (so it stays one
variable). Each module is parsed, optimized and emitted in an LLVM context and
with a target machine of its own, on its own thread; the objects are linked
into one engine (``jit.LoadedObject``), which resolves the calls between them
(tests/codegen/test_llvm_split.py compares the assembly with the whole
module's).

llvmlite guards every call into LLVM with one process-wide lock, so the
pipeline runs and the emissions go to its C functions directly
(``jit.unlocked``): the threads share no LLVM object, and ``_emitting`` keeps
two compiles in the process from sharing the lanes' target machines.
"""

from __future__ import annotations

import ctypes
import functools
import queue
import re
import threading

import llvmlite.binding as llvm

from codegen.llvm import jit

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
    if parts < 2 or _unsplittable(lines):
        return None
    home = _deal(functions, parts)
    called = _called_elsewhere(lines, functions, home)
    return [_part(lines, functions, home, called, k) for k in range(parts)]


def by_role(ir_text: str) -> list[str] | None:
    """The unoptimized module as [its local functions (the step and its kernels), its
    entry points], so the two can be optimized in parallel; None when it is smaller than
    two parts, has no entry point, or an entry calls a local function that is to be
    inlined into it.

    The kernels keep their callers (the step) and every argument those pass them, so
    the interprocedural passes decide for them as in the whole module; only the step
    itself, now called from the other module, keeps its signature.
    """
    lines = ir_text.split("\n")
    functions = _functions(lines)
    if sum(end - start for _, _, start, end in functions) < 2 * MIN_PART_LINES:
        return None
    home = {name: 0 if local else 1 for name, local, _, _ in functions}
    if 1 not in home.values() or _unsplittable(lines):
        return None
    called = _called_elsewhere(lines, functions, home)
    headers = {name: lines[start] for name, _, start, _ in functions}
    if any("alwaysinline" in headers[name] for name in called if name in headers):
        return None
    return [_part(lines, functions, home, called, k) for k in range(2)]


def _unsplittable(lines: list[str]) -> bool:
    """A linkage or construct ``_part`` does not handle, or a module-local variable
    (which would be two variables in two parts)."""
    if any(_OTHER_LINKAGE.search(line) for line in lines if line[:1] in "@d"):
        return True
    return any(_local_variable(line) for line in lines if line.startswith("@"))


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


_emitting = threading.Lock()


@functools.cache
def _lane_machine(cpu: str, features: str, opt: int, lane: int) -> llvm.TargetMachine:
    """Lane ``lane``'s target machine (a machine is not safe to share between threads)."""
    del lane  # part of the cache key only
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=cpu, features=features, opt=opt, jit=True)


def emit_parts(texts: list[str], cpu: str, features: str, opt: int) -> tuple[bytes, ...]:
    """The object of each text, each on a thread of its own (the first on the caller's)."""
    objects: list[bytes | None] = [None] * len(texts)

    def lane(k: int) -> None:
        with jit.parsed(texts[k]) as module:
            objects[k] = _emit_object(_lane_machine(cpu, features, opt, k), module)

    with _emitting:
        _run_lanes([functools.partial(lane, k) for k in range(len(texts))])
    return tuple(objects)


def optimize_and_emit_roles(
    texts: list[str], cpu: str, features: str, opt: int
) -> tuple[tuple[bytes, ...], str]:
    """The objects and the optimized text of ``by_role``'s two modules, on two threads.

    Lane 0 (the caller's thread) optimizes the step's module, the larger; lane 1
    optimizes and emits the entries' module meanwhile. The step's optimized module is
    then emitted in two parts (``split``), the second on lane 1.
    """
    machines = [_lane_machine(cpu, features, opt, k) for k in range(2)]
    handoff: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    out: dict[str, object] = {}

    def step_module() -> None:
        handed = False
        try:
            with jit.parsed(texts[0]) as module:
                jit.optimize(module, machines[0], opt, unlocked_run=True)
                out["step_ir"] = optimized = str(module)
                pieces = split(optimized, 2)
                if pieces is None:
                    out["step"] = (_emit_object(machines[0], module),)
                    return
            handoff.put(pieces[1])
            handed = True
            with jit.parsed(pieces[0]) as module:
                out["step"] = (_emit_object(machines[0], module),)
        finally:
            if not handed:
                handoff.put(None)

    def entries_module() -> None:
        with jit.parsed(texts[1]) as module:
            jit.optimize(module, machines[1], opt, unlocked_run=True)
            out["entries_ir"] = str(module)
            out["entries"] = _emit_object(machines[1], module)
        piece = handoff.get()
        if piece is not None:
            with jit.parsed(piece) as module:
                out["step_rest"] = _emit_object(machines[1], module)

    with _emitting:
        _run_lanes([step_module, entries_module])
    rest = (out["step_rest"],) if "step_rest" in out else ()
    objects = (*out["step"], *rest, out["entries"])
    return objects, out["step_ir"] + jit.MODULE_SEPARATOR + out["entries_ir"]


def _run_lanes(lanes) -> None:
    """Run each function on a thread of its own, the first on the caller's; re-raise the
    first error on the caller's thread once every thread has ended."""
    errors: list[BaseException] = []

    def guarded(lane) -> None:
        try:
            lane()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(lane,)) for lane in lanes[1:]]
    for t in threads:
        t.start()
    guarded(lanes[0])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _emit_object(tm: llvm.TargetMachine, module: llvm.ModuleRef) -> bytes:
    """``tm.emit_object(module)`` through the unlocked C functions."""
    with llvm.ffi.OutputString() as error:
        buffer = jit.unlocked("LLVMPY_TargetMachineEmitToMemory")(tm, module, 1, error)
        if not buffer:
            raise RuntimeError(str(error))
    try:
        start = jit.unlocked("LLVMPY_GetBufferStart")(buffer)
        return ctypes.string_at(start, jit.unlocked("LLVMPY_GetBufferSize")(buffer))
    finally:
        jit.unlocked("LLVMPY_DisposeMemoryBuffer")(buffer)
