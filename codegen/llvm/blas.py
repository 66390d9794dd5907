"""codegen.llvm.blas: which gemm the native code calls, and the generated fallback.

Resolution order (first found wins), chosen at run time:

1. ``numpy-openblas``: the OpenBLAS that NumPy wheels bundle (``numpy.libs``),
   ILP64 CBLAS symbols ``scipy_cblas_dgemm64_`` / ``scipy_cblas_sgemm64_``.
   When that library picked kernels narrower than the host supports (it
   runs its Haswell AVX2 kernels on AMD CPUs with AVX-512), a private copy
   of it is loaded with ``OPENBLAS_CORETYPE=SkylakeX`` (about 1.7x the
   gemm throughput on such a CPU); NumPy's own instance is left untouched.
   ``SYMGRAD_BLAS_CORETYPE`` overrides the choice (``keep`` = NumPy's
   instance, or an OpenBLAS core name); the copy is kept in
   ``$SYMGRAD_BLAS_DIR`` (default ``~/.cache/symgrad/blas``). An
   ``OPENBLAS_CORETYPE`` the user set is honoured: then no private copy is
   loaded (an older OpenBLAS can be wrong on a CPU it misdetects, which is
   why people set it), whatever ``SYMGRAD_BLAS_CORETYPE`` says;
2. ``scipy-cython-blas``: the Fortran ``dgemm`` / ``sgemm`` behind SciPy's
   ``scipy.linalg.cython_blas`` capsules (LP64);
3. ``system-cblas``: ``cblas_dgemm`` from ``find_library('cblas' | 'openblas' | 'blas')``;
4. ``generated``: a blocked loop nest emitted into the module (always works).

``SYMGRAD_NUM_THREADS=N`` is the thread count of the pool; a provider that is
not symgrad's own (NumPy's instance with ``SYMGRAD_BLAS_CORETYPE=keep``, SciPy's,
the system's) also gets N threads from the first time it is resolved on (the
first compile, or ``symgrad.config()``); then a product's blocks run one after
the other on the calling thread, each on the library's threads.
``SYMGRAD_BLAS=none`` (or ``compile_program(..., blas="none")``) forces the
fallback; ``numpy`` / ``scipy`` / ``system`` pin one provider. The resolved
address is registered with ``llvmlite.binding.add_symbol`` under a name that
encodes only the ABI (``symgrad_cblas64_dgemm``), so cached object code links
against whichever provider of that ABI the current process found.

    >>> from codegen import blas
    >>> blas.provider().name  # doctest: +SKIP
    'numpy-openblas'
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import llvmlite.binding as llvm
import llvmlite.ir as ir

from codegen.llvm.loops import I32, I64, PTR, REDUCE, element, for_range, i64, imin, load, store
from codegen.llvm.mathlib import FAST, FloatFormat

CHOICES = ("auto", "numpy", "scipy", "system", "none")


@dataclass(frozen=True)
class Provider:
    """A resolved gemm: ``abi`` is one of cblas64, cblas32, fortran32, generated."""

    name: str
    path: str | None
    abi: str
    addresses: tuple[tuple[str, int], ...] = ()  # (dtype, address of ?gemm)
    core: str = ""  # the kernels OpenBLAS runs (``SkylakeX``, ``Haswell``), when it says
    origin: str = ""  # why this library and these kernels, in words
    pooled: bool = False  # one thread per call (symgrad's own): the pool runs the GEMM blocks

    def symbol(self, dtype: str) -> str:
        return f"symgrad_{self.abi}_{'d' if dtype == 'float64' else 's'}gemm"

    def __str__(self) -> str:
        core = f", {self.core} kernels" if self.core else ""
        return self.name if self.path is None else f"{self.name} ({self.path}{core})"


GENERATED = Provider("generated", None, "generated", pooled=True)


def provider(choice: str | None = None) -> Provider:
    """The gemm the next compiled program will call (``choice`` overrides ``SYMGRAD_BLAS``)."""
    choice = (choice or os.environ.get("SYMGRAD_BLAS") or "auto").lower()
    if choice in ("generated", "fallback"):
        choice = "none"
    if choice not in CHOICES:
        raise ValueError(f"SYMGRAD_BLAS / blas must be one of {CHOICES}; received: {choice!r}")
    count = threads_from_environment()
    found = _resolve(choice)
    if count is not None and not found.pooled:  # symgrad's own instance keeps one thread
        _set_threads_once(found, count)
    return found


def threads_from_environment() -> int | None:
    """``SYMGRAD_NUM_THREADS`` as a thread count for the gemm, or None when it is unset."""
    value = os.environ.get("SYMGRAD_NUM_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(
            "SYMGRAD_NUM_THREADS must be a positive integer (threads of the gemm symgrad "
            f"calls); received: SYMGRAD_NUM_THREADS={value!r}"
        )
    return int(value)


@functools.cache
def _set_threads_once(found: Provider, count: int) -> None:
    """Apply ``SYMGRAD_NUM_THREADS`` when a provider is first used, so a later
    ``set_threads`` call is not undone by the next compile."""
    set_threads(found, count)


@functools.cache
def _resolve(choice: str) -> Provider:
    finders = {
        "auto": (_numpy_openblas, _scipy_cython_blas, _system_cblas),
        "numpy": (_numpy_openblas,),
        "scipy": (_scipy_cython_blas,),
        "system": (_system_cblas,),
        "none": (),
    }[choice]
    for find in finders:
        found = find()
        if found is not None:
            for dtype, address in found.addresses:
                llvm.add_symbol(found.symbol(dtype), address)
            return found
    return GENERATED


def _address(fn) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value


def _numpy_library():
    """(path, library, symbol prefix) of the OpenBLAS NumPy's wheel bundles, or None."""
    import numpy

    root = Path(numpy.__file__).parent
    for libdir in (root.parent / "numpy.libs", root / ".dylibs"):
        for path in sorted(libdir.glob("*openblas*")) if libdir.is_dir() else ():
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                continue
            for prefix in ("scipy_cblas_", "cblas_"):
                if hasattr(lib, f"{prefix}dgemm64_") and hasattr(lib, f"{prefix}sgemm64_"):
                    return path, lib, prefix
    return None


def numpy_core() -> str:
    """The kernels NumPy's own OpenBLAS runs (``Haswell``...), "" if unknown."""
    found = _numpy_library()
    return _core(found[1]) if found else ""


def _numpy_openblas() -> Provider | None:
    found = _numpy_library()
    if found is None:
        return None
    path, lib, prefix = found
    current = _core(lib)
    wanted, origin = _wanted_core(current) if current else (None, "NumPy's instance")
    tuned = _host_tuned_copy(path, lib, prefix, wanted) if wanted else None
    if tuned is not None:
        path, lib = tuned
    elif wanted:
        origin = f"NumPy's instance (a private copy with {wanted} kernels failed to load)"
    d, s = getattr(lib, f"{prefix}dgemm64_"), getattr(lib, f"{prefix}sgemm64_")
    addrs = (("float64", _address(d)), ("float32", _address(s)))
    return Provider(
        "numpy-openblas", str(path), "cblas64", addrs, _core(lib), origin, tuned is not None
    )


# OpenBLAS cores whose sgemm / dgemm use AVX-512; the first is what an AVX-512 host gets.
AVX512_CORES = ("SkylakeX", "Cooperlake", "SapphireRapids")
AVX512_FEATURES = ("+avx512f", "+avx512bw", "+avx512dq", "+avx512vl")


def _core(lib) -> str:
    """The core name OpenBLAS selected (``Haswell``, ``SkylakeX``...), or "" if it does not say."""
    for name in (
        "scipy_openblas_get_corename64_",
        "openblas_get_corename64_",
        "openblas_get_corename",
    ):
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            return (fn() or b"").decode()
    return ""


def user_coretype() -> str | None:
    """``OPENBLAS_CORETYPE`` as set in the environment (every OpenBLAS that loads obeys it)."""
    return os.environ.get("OPENBLAS_CORETYPE") or None


def _wanted_core(current: str) -> tuple[str | None, str]:
    """(the core a private OpenBLAS instance should run or None for NumPy's own, why)."""
    if user_coretype() is not None:  # the user's choice, for NumPy's instance and ours
        return None, f"NumPy's instance: OPENBLAS_CORETYPE={user_coretype()} is set"
    choice = os.environ.get("SYMGRAD_BLAS_CORETYPE", "auto")
    if choice.lower() in ("keep", "numpy", "off", "none", ""):
        return None, f"NumPy's instance: SYMGRAD_BLAS_CORETYPE={choice}"
    if choice.lower() != "auto":
        if choice.lower() == current.lower():
            return None, f"NumPy's instance: it runs SYMGRAD_BLAS_CORETYPE={choice}"
        return choice, f"private copy: SYMGRAD_BLAS_CORETYPE={choice}, NumPy's runs {current}"
    from codegen.llvm.jit import host

    features = host().features.split(",")
    if current in AVX512_CORES or not all(f in features for f in AVX512_FEATURES):
        return current, f"private copy: NumPy's {current} kernels, one thread per call"
    wanted = AVX512_CORES[0]
    return wanted, f"private copy: the host has AVX-512, NumPy's instance runs {current}"


def blas_dir() -> Path:
    """Where the private OpenBLAS copy lives: ``$SYMGRAD_BLAS_DIR``, default ``~/.cache/symgrad/blas``.

    Not under ``$SYMGRAD_CACHE_DIR``: it is a copy of an installed library
    (~25 MB, made once), not a compiled entry.
    """
    return Path(os.environ.get("SYMGRAD_BLAS_DIR") or Path.home() / ".cache" / "symgrad" / "blas")


def _host_tuned_copy(path: Path, lib, prefix: str, wanted: str):
    """(path, library) of a private copy of NumPy's OpenBLAS running the ``wanted`` kernels.

    OpenBLAS picks its kernels once, when the library loads (``OPENBLAS_CORETYPE``
    is read then). Loading a *copy* of the file gives a second instance with its
    own kernel table and thread pool, so NumPy keeps its own choice. The copy
    lives in ``blas_dir()`` and is made once; any failure (a read-only
    directory, a core OpenBLAS does not know) returns None.
    """
    copy = blas_dir() / f"{path.stat().st_size}-{path.name}"
    saved = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")}
    try:
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=copy.parent, prefix=".tmp-", suffix=".so")
            os.close(fd)
            shutil.copyfile(path, tmp)
            os.replace(tmp, copy)
        os.environ["OPENBLAS_CORETYPE"] = wanted
        # one thread: the pool (codegen.llvm.pool) splits the GEMMs in blocks, a call each
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        private = ctypes.CDLL(str(copy), mode=os.RTLD_LOCAL)
    except OSError:
        return None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if _core(private).lower() != wanted.lower() or not hasattr(private, f"{prefix}sgemm64_"):
        return None
    return copy, private


_THREAD_COUNTS = (
    "scipy_openblas_get_num_threads64_",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
)
_SET_THREAD_COUNTS = (
    "scipy_openblas_set_num_threads64_",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def _library_function(found: Provider, names: tuple[str, ...]):
    """The first of ``names`` in the very library the compiled code calls, or None.

    Loading an already loaded path again gives the same instance (``dlopen``
    counts references), so this reaches the provider's own thread pool.
    """
    if found.path is None or found.abi == "fortran32":
        return None
    try:
        lib = ctypes.CDLL(found.path, mode=os.RTLD_LOCAL)
    except OSError:
        return None
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


def threads(found: Provider) -> int | None:
    """How many threads the provider's gemm uses now (OpenBLAS says; None when unknown)."""
    if found is GENERATED:
        return 1
    fn = _library_function(found, _THREAD_COUNTS)
    if fn is None:
        return None
    fn.restype = ctypes.c_int
    return int(fn())


def set_threads(found: Provider, count: int) -> bool:
    """Let the provider's gemm use ``count`` threads from now on (OpenBLAS); False if it cannot.

    Only symgrad's instance changes when it is a private copy; NumPy's own
    instance (when that is the provider) changes for NumPy too.
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer; received: count={count!r}")
    fn = _library_function(found, _SET_THREAD_COUNTS)
    if fn is None:
        return False
    fn.argtypes, fn.restype = [ctypes.c_int], None
    fn(count)
    return True


def _scipy_cython_blas() -> Provider | None:
    try:
        from scipy.linalg import cython_blas
    except ImportError:
        return None
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    addrs = []
    for dtype, routine in (("float64", "dgemm"), ("float32", "sgemm")):
        capsule = cython_blas.__pyx_capi__[routine]
        name = get_name(capsule)
        if b"int *" not in name:  # only the LP64 interface is wired up below
            return None
        addrs.append((dtype, get_pointer(capsule, name)))
    return Provider("scipy-cython-blas", cython_blas.__file__, "fortran32", tuple(addrs))


def _system_cblas() -> Provider | None:
    for name in ("cblas", "openblas", "blas"):
        path = ctypes.util.find_library(name)
        if not path:
            continue
        try:
            lib = ctypes.CDLL(path)
            d, s = lib.cblas_dgemm, lib.cblas_sgemm
        except (OSError, AttributeError):
            continue
        abi = "cblas32"
        config = getattr(lib, "openblas_get_config", None)
        if config is not None:
            config.restype = ctypes.c_char_p
            if b"USE64BITINT" in (config() or b""):
                abi = "cblas64"
        return Provider(
            "system-cblas", path, abi, (("float64", _address(d)), ("float32", _address(s)))
        )
    return None


# --------------------------------------------------------------------------
# Emitting a row-major C = alpha op(A) op(B) (m x n, inner dimension k).

CBLAS_COL_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 102, 111, 112

# Where a block of a row-major product's rows may start and leave every element the bits
# of the whole product: a multiple of the width of the column-major micro-kernel's tiles
# (OpenBLAS's GEMM_UNROLL_N; rows of the row-major output are its columns). 24 is a
# multiple of every width OpenBLAS's x86-64 kernels use (2 to 12); a finer one for the
# kernels where it was checked: NumPy's Haswell sgemm (OpenBLAS 0.3.31) splits without a
# change of bits at every multiple of 12 and at no other multiple of 4, on 256 x 1024 x
# 1024, 1024 x 256 x 1024 and 301 x 203 x 173 products. Two blocks of a 256-row product
# are then 132 + 124 rows instead of 120 + 136.
DEFAULT_BLOCK_ALIGN = 24
BLOCK_ALIGN = {("Haswell", "float32"): 12}  # (Provider.core, dtype) -> rows


def block_align(prov: Provider, dtype: str) -> int:
    """The multiple of rows at which a product may be split into blocks (see above)."""
    return BLOCK_ALIGN.get((prov.core, dtype), DEFAULT_BLOCK_ALIGN)


@dataclass(frozen=True)
class GemmCall:
    """Row-major ``c = alpha op(a) @ op(bm) + beta c``, ``c`` m x n, inner dimension k (i64
    values); ``beta`` None: c is only written (its old contents may be anything)."""

    trans_a: bool
    trans_b: bool
    m: ir.Value
    n: ir.Value
    k: ir.Value
    alpha: ir.Value
    a: ir.Value
    bm: ir.Value
    c: ir.Value
    beta: ir.Value | None = None

    def beta_or_zero(self, ty: ir.Type) -> ir.Value:
        return ir.Constant(ty, 0.0) if self.beta is None else self.beta


def leading_dimensions(b: ir.IRBuilder, trans_a: bool, trans_b: bool, m, n, k) -> tuple:
    """(lda, ldb, ldc) of a row-major m x n product with inner dimension k."""
    one = i64(1)

    def ld(x):  # leading dimensions must be >= 1 even for empty matrices
        return b.select(b.icmp_signed(">", x, one), x, one)

    return ld(m if trans_a else k), ld(k if trans_b else n), ld(n)


def emit_gemm(b: ir.IRBuilder, prov: Provider, fmt: FloatFormat, g: GemmCall, lds=None) -> None:
    """Emit the provider's gemm call (or the generated loop nest) for ``g``; ``lds``: the
    leading dimensions when ``g`` is a block of a larger product."""
    lds = lds or leading_dimensions(b, g.trans_a, g.trans_b, g.m, g.n, g.k)
    CALLS[prov.abi](b, prov, fmt, g, *lds)


def _cblas_call(b, prov, fmt, g: GemmCall, lda, ldb, ldc):
    """cblas_?gemm(ColMajor, transB, transA, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc)

    Column-major view: C^T (n x m) = op(B)^T op(A)^T, the arguments OpenBLAS turns a
    row-major call into. Asked row-major (no transposes, alpha 1), an AVX-512 OpenBLAS
    takes its ``sgemm_direct`` kernel below 28 * 512^2 multiply-adds: a choice by the
    call's size, which would give a product other bits when it is split into more blocks.
    """
    ty = fmt.ftype
    it = I64 if prov.abi == "cblas64" else I32
    fnty = ir.FunctionType(
        ir.VoidType(), [I32] * 3 + [it] * 3 + [ty, PTR, it, PTR, it, ty, PTR, it]
    )
    fn = _declare(b.module, prov.symbol(fmt.name), fnty)

    def cast(x):
        return x if it is I64 else b.trunc(x, it)

    flags = [ir.Constant(I32, CBLAS_TRANS if t else CBLAS_NO_TRANS) for t in (g.trans_b, g.trans_a)]
    head = [ir.Constant(I32, CBLAS_COL_MAJOR), *flags, cast(g.n), cast(g.m), cast(g.k)]
    tail = [g.alpha, g.bm, cast(ldb), g.a, cast(lda), g.beta_or_zero(ty), g.c, cast(ldc)]
    b.call(fn, head + tail)


def _fortran_call(b, prov, fmt, g: GemmCall, lda, ldb, ldc):
    """?gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), all by reference.

    Column-major view: C^T (n x m) = op(B)^T op(A)^T, so B goes first.
    """
    ty = fmt.ftype
    fn = _declare(b.module, prov.symbol(fmt.name), ir.FunctionType(ir.VoidType(), [PTR] * 13))

    def ref(value, typ):  # the kernel is called once, so these allocas are not in a loop
        slot = b.alloca(typ)
        b.store(value, slot)
        return slot

    def ref_int(x):
        return ref(b.trunc(x, I32), I32)

    char = ir.IntType(8)
    ta, tb = (ref(ir.Constant(char, ord("T" if t else "N")), char) for t in (g.trans_a, g.trans_b))
    head = [tb, ta, ref_int(g.n), ref_int(g.m), ref_int(g.k), ref(g.alpha, ty)]
    tail = [g.bm, ref_int(ldb), g.a, ref_int(lda), ref(g.beta_or_zero(ty), ty), g.c, ref_int(ldc)]
    b.call(fn, head + tail)


def _generated_call(b, prov, fmt, g: GemmCall, lda, ldb, ldc):
    """The fallback loop nest; op(A) is read through strides (sa_i, sa_p)."""
    sa_i, sa_p = (i64(1), lda) if g.trans_a else (lda, i64(1))
    accumulate = g.beta is not None
    fn = _fallback_function(b.module, fmt, "dot" if g.trans_b else "axpy", accumulate)
    b.call(fn, [g.m, g.n, g.k, g.alpha, g.beta_or_zero(fmt.ftype), g.a, sa_i, sa_p, g.bm, g.c])


CALLS = {
    "cblas64": _cblas_call,
    "cblas32": _cblas_call,
    "fortran32": _fortran_call,
    "generated": _generated_call,
}


def _declare(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, fnty, name=name)


# --------------------------------------------------------------------------
# The fallback: two loop nests that LLVM vectorizes.
#   axpy form (B not transposed): C[i, :] += (alpha A[i, p]) B[p, :], blocked over p and j
#   dot form (B transposed):      C[i, j] = alpha sum_p A[i, p] B[j, p]
# op(A)[i, p] is read through strides (sa_i, sa_p), so one nest serves both trans_a.
# The accumulating variants (``.acc``) start from beta C instead of 0 (C is read: without
# them, an uninitialized C times a zero beta could be nan).

BLOCK_K, BLOCK_N = 64, 256


def _fallback_function(
    module: ir.Module, fmt: FloatFormat, form: str, accumulate: bool = False
) -> ir.Function:
    name = f"symgrad.gemm_{form}{'.acc' if accumulate else ''}.{fmt.suffix}"
    if name in module.globals:
        return module.globals[name]
    ty = fmt.ftype
    fn = ir.Function(
        module,
        ir.FunctionType(ir.VoidType(), [I64, I64, I64, ty, ty, PTR, I64, I64, PTR, PTR]),
        name=name,
    )
    fn.linkage = "internal"
    m, n, k, alpha, beta, a, sa_i, sa_p, bm, c = fn.args
    for p in (a, bm, c):
        p.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    nest = _axpy_nest if form == "axpy" else _dot_nest
    nest(b, ty, m, n, k, alpha, beta if accumulate else None, a, sa_i, sa_p, bm, c)
    b.ret_void()
    return fn


def _start(b, ty, c, i, beta) -> None:
    """C[i] = beta C[i], or 0 when there is no beta."""
    value = ir.Constant(ty, 0.0) if beta is None else b.fmul(beta, load(b, ty, c, i), flags=FAST)
    store(b, ty, value, c, i)


def _axpy_nest(b, ty, m, n, k, alpha, beta, a, sa_i, sa_p, bm, c):
    for_range(b, b.mul(m, n), lambda i, _: _start(b, ty, c, i, beta))

    def j_block(j0, _):
        j_end = imin(b, b.add(j0, i64(BLOCK_N)), n)

        def p_block(p0, _):
            p_end = imin(b, b.add(p0, i64(BLOCK_K)), k)

            def row(i, _):
                a_row = b.mul(i, sa_i)
                c_row = element(b, ty, c, b.mul(i, n))

                def p_step(p, _):
                    scaled = b.fmul(alpha, load(b, ty, a, b.add(a_row, b.mul(p, sa_p))), flags=FAST)
                    b_row = element(b, ty, bm, b.mul(p, n))

                    def axpy(j, _):  # C[i, j] += alpha A[i, p] B[p, j]
                        term = b.fmul(scaled, load(b, ty, b_row, j), flags=FAST)
                        store(b, ty, b.fadd(load(b, ty, c_row, j), term, flags=FAST), c_row, j)

                    for_range(b, j_end, axpy, start=j0)

                for_range(b, p_end, p_step, start=p0)

            for_range(b, m, row)

        for_range(b, k, p_block, step=BLOCK_K)

    for_range(b, n, j_block, step=BLOCK_N)


def _dot_nest(b, ty, m, n, k, alpha, beta, a, sa_i, sa_p, bm, c):
    def row(i, _):
        a_row = b.mul(i, sa_i)

        def col(j, _):
            b_row = element(b, ty, bm, b.mul(j, k))

            def dot(p, acc):  # acc += A[i, p] B[j, p]
                prod = b.fmul(
                    load(b, ty, a, b.add(a_row, b.mul(p, sa_p))), load(b, ty, b_row, p), flags=FAST
                )
                return [b.fadd(acc[0], prod, flags=REDUCE)]

            (total,) = for_range(b, k, dot, init=[ir.Constant(ty, 0.0)])
            at = b.add(b.mul(i, n), j)
            value = b.fmul(alpha, total, flags=FAST)
            if beta is not None:  # beta C[i, j] + alpha sum, as a BLAS computes it
                value = b.fadd(b.fmul(beta, load(b, ty, c, at), flags=FAST), value, flags=FAST)
            store(b, ty, value, c, at)

        for_range(b, n, col)

    for_range(b, m, row)
