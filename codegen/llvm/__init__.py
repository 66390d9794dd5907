"""codegen.llvm: the LLVM backend. A ``codegen.ir.Program`` becomes native code via llvmlite.

- :mod:`~codegen.llvm.backend`: compile a program (one native call per step) or an epoch;
- :mod:`~codegen.llvm.module`: the step function of a program, with its buffer layout;
- :mod:`~codegen.llvm.kernels`: one kernel per IR statement;
- :mod:`~codegen.llvm.scalar`: scalar bodies lowered to LLVM instructions;
- :mod:`~codegen.llvm.mathlib`: exp/log/tanh/sigmoid/softplus/erf in LLVM IR;
- :mod:`~codegen.llvm.loops`: loop and memory helpers;
- :mod:`~codegen.llvm.blas`: the GEMM provider (OpenBLAS, CBLAS) and the generated fallback;
- :mod:`~codegen.llvm.jit`: target machine, pass pipeline, loading object code;
- :mod:`~codegen.llvm.cpython`: the generated CPython entry that checks arguments natively;
- :mod:`~codegen.llvm.emit`: object files, shared libraries and C headers.
"""

from codegen.llvm.backend import (
    LLVMEpoch,
    LLVMFunction,
    compile_epoch,
    compile_ir,
    compile_program,
)

__all__ = ["LLVMEpoch", "LLVMFunction", "compile_epoch", "compile_ir", "compile_program"]
