"""codegen: everything that turns a ``codegen.ir.Program`` into runnable code.

``codegen.ir`` is the program contract; ``codegen.numpy`` and ``codegen.llvm`` are the
backends (``compile_program(program)`` in each).  Nothing here imports the training API.
"""
