"""codegen: everything that turns a ``codegen.ir.Program`` into runnable code.

``codegen.ir`` is the program contract; ``codegen.numpy`` and ``codegen.llvm`` are the
backends (``compile_program(program)`` in each), found by name in ``codegen.backends``
(``backend("llvm").compile(program)``, and what each supports).  Nothing here imports
the training API.
"""
