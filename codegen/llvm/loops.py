"""codegen.llvm.loops: counted loops and memory helpers for the generated kernels.

Loops are plain ``for (i = start; i < stop; i += step)`` over i64 with the
induction variable and any loop-carried values as phis: the shape LLVM's loop
rotation and vectorizer recognize. ``REDUCE`` is the flag set for accumulating
adds: ``reassoc`` lets the vectorizer keep partial sums per lane (the sum then
differs from a sequential one in the last bits, as NumPy's pairwise sum does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import llvmlite.ir as ir

# the LLVM types every module of the backend uses
I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F64 = ir.DoubleType()
PTR = ir.PointerType()
REDUCE = ("reassoc", "contract")


def i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


def for_range(
    b: ir.IRBuilder,
    stop: ir.Value,
    body: Callable[[ir.Value, list], Sequence[ir.Value] | None],
    *,
    start: ir.Value | int = 0,
    step: int = 1,
    init: Sequence[ir.Value] = (),
) -> list[ir.Value]:
    """Emit the loop; ``body(i, carried) -> new carried`` (None: nothing carried); returns the carried values at exit."""
    fn = b.block.function
    start = i64(start) if isinstance(start, int) else start
    pre = b.block
    head = fn.append_basic_block("loop")
    work = fn.append_basic_block("body")
    done = fn.append_basic_block("done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name="i")
    i.add_incoming(start, pre)
    carried = []
    for value in init:
        phi = b.phi(value.type)
        phi.add_incoming(value, pre)
        carried.append(phi)
    b.cbranch(b.icmp_signed("<", i, stop), work, done)
    b.position_at_end(work)
    updated = list(body(i, list(carried)) or ())
    latch = b.block
    nxt = b.add(i, i64(step), flags=("nsw",))
    i.add_incoming(nxt, latch)
    for phi, value in zip(carried, updated):
        phi.add_incoming(value, latch)
    b.branch(head)
    b.position_at_end(done)
    return carried


def imin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def element(b: ir.IRBuilder, ty: ir.Type, ptr: ir.Value, index: ir.Value) -> ir.Value:
    """Address of ``ptr[index]`` for elements of type ``ty``."""
    return b.gep(ptr, [index], inbounds=True, source_etype=ty)


def load(b: ir.IRBuilder, ty: ir.Type, ptr: ir.Value, index: ir.Value, name: str = "") -> ir.Value:
    return b.load(element(b, ty, ptr, index), typ=ty, name=name)


def freeze(b: ir.IRBuilder, value: ir.Value, name: str = "") -> ir.Value:
    """``freeze value`` (llvmlite's builder has no method for it): the value itself,
    opaque to the patterns LLVM matches through it (see ``kernels.Operands``)."""
    frozen = ir.Instruction(b.block, value.type, "freeze", [value], name=name)
    b._insert(frozen)
    return frozen


def store(b: ir.IRBuilder, ty: ir.Type, value: ir.Value, ptr: ir.Value, index: ir.Value) -> None:
    b.store(value, element(b, ty, ptr, index))


def copy(b: ir.IRBuilder, ty: ir.Type, src: ir.Value, dst: ir.Value, count: ir.Value) -> None:
    """dst[0:count] = src[0:count] (LLVM turns the loop into a memcpy or vector moves)."""
    for_range(b, count, lambda j, _: store(b, ty, load(b, ty, src, j), dst, j))


class _Callee:
    """A function pointer as the callee of ``IRBuilder.call``: with opaque pointers the
    builder cannot see a function type through a ``ptr`` value, so it is given here."""

    def __init__(self, pointer: ir.Value, fnty: ir.FunctionType):
        self.pointer, self.function_type, self.type = pointer, fnty, pointer.type

    def get_reference(self) -> str:
        return self.pointer.get_reference()


def call_pointer(b: ir.IRBuilder, pointer: ir.Value, fnty: ir.FunctionType, args) -> ir.Value:
    """An indirect call of ``pointer`` (a function of type ``fnty``)."""
    return b.call(_Callee(pointer, fnty), list(args))
