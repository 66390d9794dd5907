"""symgrad.config(): what compiled code runs on in this process.

    >>> print(symgrad.config())  # doctest: +SKIP
    default backend     numpy (available: numpy, llvm)
    llvm                LLVM 15.0.7 (llvmlite 0.44.0), host znver4
    blas                numpy-openblas, 2 threads
    blas library        .../numpy.libs/libscipy_openblas64_-32a4b2a6.so
    blas kernels        Haswell (NumPy's instance: OPENBLAS_CORETYPE=Haswell is set)
    OPENBLAS_CORETYPE   Haswell
    threads             2 (generated loops and GEMM blocks)

Asking resolves the BLAS exactly as the next LLVM compile would (loading the
private OpenBLAS copy if that is the choice), so what it says is what runs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Backends, LLVM and the BLAS behind the LLVM backend's matrix products."""

    default_backend: str
    backends: tuple[str, ...]
    llvm: str  # LLVM and llvmlite versions, the host CPU code is compiled for
    blas: str  # provider name: numpy-openblas, scipy-cython-blas, system-cblas, generated
    blas_library: str | None  # the file the gemm comes from (None for the generated one)
    blas_kernels: str  # the kernels OpenBLAS runs (``Haswell``...), "" when it does not say
    blas_origin: str  # why this library and these kernels
    blas_threads: int | None  # threads of that gemm now, None when unknown
    openblas_coretype: str | None  # the environment variable, as the user set it
    threads: int = 1  # of the generated loops and GEMM blocks (codegen.llvm.pool), next compile

    def rows(self) -> list[tuple[str, str]]:
        threads = "" if self.blas_threads is None else f", {self.blas_threads} threads"
        kernels = (
            f"{self.blas_kernels or 'unknown'} ({self.blas_origin})" if self.blas_origin else "-"
        )
        return [
            ("default backend", f"{self.default_backend} (available: {', '.join(self.backends)})"),
            ("llvm", self.llvm),
            ("blas", f"{self.blas}{threads}"),
            ("blas library", self.blas_library or "- (generated loop nest)"),
            ("blas kernels", kernels),
            ("OPENBLAS_CORETYPE", self.openblas_coretype or "unset"),
            ("threads", f"{self.threads} (generated loops and GEMM blocks)"),
        ]

    def __str__(self) -> str:
        return "\n".join(f"{key:<19} {value}" for key, value in self.rows())

    def summary(self) -> str:
        """One line, for benchmark headers."""
        kernels = f" {self.blas_kernels} kernels" if self.blas_kernels else ""
        threads = "" if self.blas_threads is None else f", {self.blas_threads} threads"
        coretype = self.openblas_coretype or "unset"
        return (
            f"blas {self.blas}{kernels} ({self.blas_origin}){threads}, OPENBLAS_CORETYPE {coretype}"
        )


def config() -> Config:
    """What ``symgrad.compile`` uses in this process: backends, LLVM, the BLAS and its kernels."""
    import llvmlite
    import llvmlite.binding as llvm

    from codegen.llvm import blas, pool
    from codegen.llvm.jit import host
    from symgrad.compiler import BACKENDS, compile

    found = blas.provider()
    version = ".".join(map(str, llvm.llvm_version_info))
    return Config(
        default_backend=inspect.signature(compile).parameters["backend"].default,
        backends=tuple(BACKENDS),
        llvm=f"LLVM {version} (llvmlite {llvmlite.__version__}), host {host().cpu}",
        blas=found.name,
        blas_library=found.path,
        blas_kernels=found.core,
        blas_origin=found.origin,
        blas_threads=blas.threads(found),
        openblas_coretype=blas.user_coretype(),
        threads=pool.thread_count(),
    )
