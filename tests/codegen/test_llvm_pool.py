"""The thread pool of the generated loops (codegen.llvm.pool): same bits at any thread count,
workers that exist when a long loop wants them, a clean fork and a clean exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symgrad
from codegen.llvm import pool
from symgrad import expr as E

ROWS, COLS = 700, 300  # 210000 elements: 13 chunks of codegen.llvm.kernels.CHUNK


def _program(threads: int, dtype: str = "float32"):
    n = E.batch()
    X = E.matrix("X", n, COLS)
    b = E.matrix("b", 1, COLS)
    e = sp.Symbol("e")
    h = E.elementwise(sp.Lambda(e, sp.tanh(e)), X + E.broadcast_rows(b, n))
    outputs = {
        "h": h,  # a map with a broadcast row
        "total": E.mean(h),  # a reduction to one number: partial sums per chunk
        "cols": E.col_sum(h),  # chunks of columns
        "rows": E.row_sum(h),  # chunks of rows
        "soft": E.softmax(h),  # chunks of rows
    }
    return symgrad.compile(
        [X, b], outputs, backend="llvm", dtype=dtype, threads=threads, cache=False, name="pooled"
    )


def _inputs(rng, dtype):
    return rng.normal(size=(ROWS, COLS)).astype(dtype), rng.normal(size=(1, COLS)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_bits_at_1_2_and_8_threads(rng, dtype):
    x, b = _inputs(rng, dtype)
    reference = _program(1, dtype)(x, b)
    h = np.tanh(x.astype(np.float64) + b)
    np.testing.assert_allclose(reference[0], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reference[1], [[h.mean()]], rtol=1e-4)
    np.testing.assert_allclose(reference[2], h.sum(0, keepdims=True), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reference[3], h.sum(1, keepdims=True), rtol=1e-4, atol=1e-4)
    soft = np.exp(h - h.max(1, keepdims=True))
    np.testing.assert_allclose(reference[4], soft / soft.sum(1, keepdims=True), rtol=1e-4)
    for threads in (2, 8):
        got = _program(threads, dtype)(x, b)
        for a, want in zip(got, reference, strict=True):
            np.testing.assert_array_equal(a, want, err_msg=f"{threads=}")


def test_a_long_loop_starts_the_workers_it_may_use(rng):
    x, b = _inputs(rng, "float32")
    _program(3)(x, b)
    assert pool.runtime().workers() >= 2


@pytest.mark.parametrize("threads", [0, -1, 2.0, "2", True])
def test_bad_thread_counts_are_refused(threads):
    with pytest.raises(ValueError, match=f"received: threads={threads!r}"):
        pool.thread_count(threads)


def test_default_is_the_cpus_the_process_may_use(monkeypatch):
    monkeypatch.delenv("SYMGRAD_NUM_THREADS", raising=False)
    import os

    assert pool.thread_count() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SYMGRAD_NUM_THREADS", "5")
    assert pool.thread_count() == 5
    monkeypatch.setenv("SYMGRAD_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="received: SYMGRAD_NUM_THREADS='many'"):
        pool.thread_count()


CHILD = textwrap.dedent(
    """
    import ctypes, multiprocessing, os, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from tests.codegen.test_llvm_pool import _inputs, _program
    from codegen.llvm import pool

    f = _program(2)
    x, b = _inputs(np.random.default_rng(0), "float32")
    want = f(x, b)
    assert pool.runtime().workers() == 1

    def run(queue):
        queue.put([np.array_equal(a, w) for a, w in zip(f(x, b), want)] + [pool.runtime().workers()])

    libc = ctypes.CDLL(None)
    pid = libc.fork()  # from C: no Python fork handler runs, the pool's native one does
    if pid == 0:
        before = pool.runtime().workers()
        same = all(np.array_equal(a, w) for a, w in zip(f(x, b), want))
        os._exit(0 if (before, same) == (0, True) else 4)
    _, c_status = os.waitpid(pid, 0)

    pid = os.fork()
    if pid == 0:  # the child has no workers until its first long loop starts one
        before = pool.runtime().workers()
        same = all(np.array_equal(a, w) for a, w in zip(f(x, b), want))
        os._exit(0 if (before, same, pool.runtime().workers()) == (0, True, 1) else 3)
    _, status = os.waitpid(pid, 0)
    stopped = pool.runtime().workers()  # joined before the fork
    f(x, b)
    restarted = pool.runtime().workers()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=run, args=(queue,))
    child.start()
    result = queue.get(timeout=60)
    child.join(60)
    codes = [os.waitstatus_to_exitcode(s) for s in (c_status, status)]
    print(*codes, result, child.exitcode, stopped, restarted)
    """
)


def run_child(code: str) -> subprocess.CompletedProcess:
    """``code`` (a template of ``{root}``, the repository) in a fresh interpreter."""
    import pathlib

    root = str(pathlib.Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-c", code.format(root=root)], capture_output=True, text=True, timeout=300
    )


def test_fork_and_exit_leave_no_thread_hanging():
    run = run_child(CHILD)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[0] == "0 0 [True, True, True, True, True, 1] 0 0 1"


def _train_cnn(threads: int, monkeypatch, x, y, backend="llvm"):
    """Two epochs of a small CNN (im2col, max-pool, col2im in the gradient), whole-epoch calls."""
    from symgrad.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
    from symgrad.models import Sequential

    monkeypatch.setenv("SYMGRAD_NUM_THREADS", str(threads))
    model = Sequential(
        [
            Input(shape=(10, 10, 3)),
            Conv2D(4, 3, padding="same", activation="relu"),
            Conv2D(4, 3, padding="same", activation="tanh"),  # its input gradient: col2im
            MaxPooling2D(),
            Flatten(),
            Dense(3, activation="softmax"),
        ],
        name="cnn",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", backend=backend, seed=0)
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model.get_weights(), history.history


def test_convolutions_give_the_same_bits_at_1_and_3_threads(rng, monkeypatch):
    """Batches of 64 images of 10 x 10 x 3: im2col and col2im split in chunks of images."""
    x = rng.random((150, 10, 10, 3))
    y = rng.integers(0, 3, 150)
    weights, history = _train_cnn(1, monkeypatch, x, y)
    got, got_history = _train_cnn(3, monkeypatch, x, y)
    assert got_history == history
    for a, want in zip(got, weights, strict=True):
        np.testing.assert_array_equal(a, want)
    reference, _ = _train_cnn(1, monkeypatch, x, y, backend="numpy")  # and the right values
    for a, want in zip(weights, reference, strict=True):
        np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6)  # float32, two epochs


GEMM_CHILD = """
import numpy as np
from codegen.ir import Gemm, Program, Value
from codegen.llvm import compile_program, pool

def product(m, k, n):
    a, b, c = Value("A", (m, k)), Value("B", (k, n)), Value("C", (m, n))
    fn = compile_program(Program("g", (a, b), (), (Gemm(c, a, b),), (c,)), cache=False, threads=2)
    A, B = np.ones((m, k)), np.ones((k, n))
    assert np.array_equal(fn(A, B)[0], A @ B)

product(32, 64, 128)  # 262144 multiply-adds: one block, on the calling thread
print(pool.runtime().workers())
product(256, 256, 512)  # two blocks of 256 columns, one per thread: the pool
print(pool.runtime().workers())
"""


def test_a_small_product_runs_whole_and_a_large_one_on_the_pool():
    run = subprocess.run(
        [sys.executable, "-c", GEMM_CHILD], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    expected = "0 1" if blas_is_pooled() else "0 0"
    assert " ".join(run.stdout.split()) == expected


# (m, k, n), trans_a, trans_b: above kernels.GEMM_WORK, sides that are not multiples of
# kernels.GEMM_ALIGN, split by rows (m >= n) and by columns, an inner dimension longer
# than OpenBLAS's panels (GEMM_Q, a few hundred), all four transpose flags
GEMM_SHAPES = [
    ((301, 173, 203), False, False),
    ((97, 211, 389), False, True),
    ((389, 131, 97), True, False),
    ((173, 301, 255), True, True),
    ((97, 1000, 133), False, False),
]


def _gemm(shape, trans_a, trans_b, dtype, threads, blas=None):
    from codegen.ir import Gemm, Program, Value
    from codegen.llvm import compile_program

    m, k, n = shape
    a = Value("A", (k, m) if trans_a else (m, k))
    b = Value("B", (n, k) if trans_b else (k, n))
    c = Value("C", (m, n))
    body = (Gemm(c, a, b, trans_a, trans_b, sp.Rational(1, 3)),)  # alpha 1/3: rounded
    program = Program("odd_gemm", (a, b), (), body, (c,), dtype=dtype)
    return compile_program(program, cache=False, threads=threads, blas=blas)


@pytest.mark.parametrize("blas", [None, "none"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_products_of_odd_sides_give_the_same_bits_at_1_2_3_and_8_threads(rng, dtype, blas):
    """A product splits into one block per thread: every output element must still be
    the same dot product, whatever block computes it."""
    for shape, trans_a, trans_b in GEMM_SHAPES:
        m, k, n = shape
        A = rng.normal(size=(k, m) if trans_a else (m, k)).astype(dtype)
        B = rng.normal(size=(n, k) if trans_b else (k, n)).astype(dtype)
        (want,) = _gemm(shape, trans_a, trans_b, dtype, 1, blas)(A, B)
        exact = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B) / 3
        np.testing.assert_allclose(want, exact, rtol=1e-4, atol=1e-4 * np.sqrt(k))
        for threads in (2, 3, 8):
            (got,) = _gemm(shape, trans_a, trans_b, dtype, threads, blas)(A, B)
            what = f"{shape=} {trans_a=} {trans_b=} {threads=}"
            np.testing.assert_array_equal(got, want, err_msg=what)


def blas_is_pooled() -> bool:
    from codegen.llvm import blas

    return blas.provider().pooled


def test_compile_refuses_a_bad_thread_count():
    n = E.batch()
    X = E.matrix("X", n, 2)
    with pytest.raises(ValueError, match=r"received: threads=0"):
        symgrad.compile([X], {"s": E.mean(X)}, backend="llvm", threads=0, cache=False)


LOAD_SOON = textwrap.dedent(
    """
    import os, sys, tempfile, threading
    os.environ["SYMGRAD_CACHE_DIR"] = tempfile.mkdtemp()
    sys.path.insert(0, {root!r})
    from codegen.llvm import pool

    original = pool.runtime_ir
    pool.runtime_ir = lambda *a: (_ for _ in ()).throw(OSError("no pool today"))
    wait = pool.runtime_soon()
    try:
        wait()
    except OSError as e:
        print("raised:", e)
    pool.runtime_ir = original
    wait = pool.runtime_soon()
    loading = [t.name for t in threading.enumerate() if t.name == "symgrad-pool-load"]
    loaded = wait()
    print(loading, loaded is pool.runtime(), pool.runtime_soon() is pool.runtime)
    print([t.name for t in threading.enumerate()])
    """
)


def test_the_pool_loads_on_a_thread_of_its_own_while_the_caller_works():
    run = run_child(LOAD_SOON)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "raised: no pool today",  # a failed load raises on the waiting thread
        "['symgrad-pool-load'] True True",  # loaded once; loaded, nothing starts again
        "['MainThread']",  # and the loading thread has ended
    ]
