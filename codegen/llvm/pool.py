"""codegen.llvm.pool: the native thread pool the generated loops split over.

One module, built here in LLVM IR on libc's POSIX threads, loaded once per
process (``codegen.llvm.backend.pool_runtime``) and linked into every
in-process module under ``symgrad_parallel_for``::

    void symgrad_parallel_for(void (*chunk)(void *ctx, i64 c), void *ctx, i64 chunks, i64 threads)

runs ``chunk(ctx, c)`` for every ``c < chunks`` and returns when all are done.
The calling thread works too; up to ``threads - 1`` workers help. The caller's
chunk boundaries never depend on ``threads`` except a product's blocks, which
are rows or columns of its output (``codegen.llvm.kernels``), and a chunk
computes the same bits on any thread, so results do not depend on the thread
count; no reduction is done with atomics (a reduction's chunks write their
own partials, combined in chunk order by the caller).

Design:

- a job is published by bumping the generation in the high 32 bits of one
  64-bit ``ticket``; its low 32 bits hand out chunk numbers (compare-and-swap
  that checks the generation, so a late worker can never take a chunk of the
  next job); a ``done`` counter tells the caller when every chunk finished;
- workers are started lazily by the first job that wants them (importing
  symgrad starts nothing), spin on the ticket for a while after each job
  (``SPIN_ROUNDS`` rounds of ``SPIN_LOADS`` loads and a ``sched_yield``), then
  sleep on a condition variable; the caller broadcasts only when one sleeps;
- one job at a time: a caller that finds the pool busy (another Python thread,
  or a chunk that itself calls ``symgrad_parallel_for``) runs its chunks
  inline, with the same bits;
- the GEMMs are split into blocks by the same pool, one per thread, each
  block a call of a one-thread BLAS (``codegen.llvm.kernels.lower_gemm``), so
  BLAS threads and pool workers never compete for the cores;
- ``fork``: a ``pthread_atfork`` child handler (registered by the loader: glibc
  exports ``pthread_atfork`` only to static links) forgets the workers (they do not
  exist in the child) and re-initializes the mutex and condition variable;
  the child's next job starts new workers; a fork from Python stops the pool
  first (``os.register_at_fork``), the parent's next job restarts it.
  ``symgrad_pool_stop`` (also registered with ``atexit``) wakes and joins the
  workers.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import threading
from collections.abc import Callable

import llvmlite.ir as ir

from codegen.llvm.loops import I32, I64, PTR, call_pointer, for_range, i64

MAX_WORKERS = 63  # workers beyond the calling thread
SPIN_LOADS = 256  # loads of the ticket between two sched_yield calls
SPIN_ROUNDS = 400  # sched_yield rounds before a worker sleeps
SYNC_BYTES = 128  # room for a pthread_mutex_t / pthread_cond_t on every libc (glibc: 40 / 48)
CHUNK_FN = ir.FunctionType(ir.VoidType(), [PTR, I64])  # chunk(ctx, c)
CHUNK_RUNNER = ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, I64])  # symgrad_parallel_for
ENTRY = "symgrad_parallel_for"
STOP = "symgrad_pool_stop"
WORKERS = "symgrad_pool_workers"
AFTER_FORK = "symgrad_pool_after_fork"  # registered with pthread_atfork by the loader
LOW32 = (1 << 32) - 1


class _Runtime:
    """The globals and libc functions of the pool module."""

    def __init__(self, module: ir.Module):
        self.m = module
        self.g = {}
        for name, ty in (
            ("ticket", I64),  # generation << 32 | next chunk
            ("done", I64),  # chunks finished in this job
            ("chunks", I64),
            ("fn", I64),  # pointers, as integers: atomic loads and stores of i64
            ("ctx", I64),
            ("active", I64),  # workers 0 .. active - 1 take part in this job
            ("started", I64),  # workers running
            ("stop", I64),
            ("sleepers", I64),
            ("busy", I64),  # a job is running (or the pool is being stopped)
            ("initialized", I64),
            ("mutex", ir.ArrayType(ir.IntType(8), SYNC_BYTES)),
            ("cond", ir.ArrayType(ir.IntType(8), SYNC_BYTES)),
            ("tids", ir.ArrayType(I64, MAX_WORKERS)),
        ):
            var = ir.GlobalVariable(module, ty, f"symgrad.pool.{name}")
            var.linkage = "internal"
            var.initializer = ir.Constant(ty, None)
            var.align = 64
            self.g[name] = var
        self.libc = {
            name: ir.Function(module, ir.FunctionType(ret, args), name=name)
            for name, ret, args in (
                ("pthread_create", I32, [PTR, PTR, PTR, PTR]),
                ("pthread_join", I32, [I64, PTR]),
                ("pthread_mutex_init", I32, [PTR, PTR]),
                ("pthread_mutex_lock", I32, [PTR]),
                ("pthread_mutex_unlock", I32, [PTR]),
                ("pthread_cond_init", I32, [PTR, PTR]),
                ("pthread_cond_wait", I32, [PTR, PTR]),
                ("pthread_cond_broadcast", I32, [PTR]),
                ("sched_yield", I32, []),
            )
        }

    def load(self, b, name, order="acquire"):
        return b.load_atomic(self.g[name], order, 8, typ=I64)

    def store(self, b, name, value, order="release"):
        b.store_atomic(value, self.g[name], order, 8)

    def call(self, b, name, *args):
        return b.call(self.libc[name], list(args))

    def broadcast(self, b):
        self.call(b, "pthread_mutex_lock", self.g["mutex"])
        self.call(b, "pthread_cond_broadcast", self.g["cond"])
        self.call(b, "pthread_mutex_unlock", self.g["mutex"])


def _function(module, name, ret, args, internal=True):
    fn = ir.Function(module, ir.FunctionType(ret, args), name=name)
    if internal:
        fn.linkage = "internal"
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def _run_chunks(rt: _Runtime) -> ir.Function:
    """Take chunks of generation ``gen`` and run them until none is left."""
    fn, b = _function(rt.m, "symgrad.pool.run_chunks", ir.VoidType(), [I64, I64, PTR, PTR])
    gen, chunks, chunk_fn, ctx = fn.args
    loop, take, run, out = (fn.append_basic_block(n) for n in ("loop", "take", "run", "out"))
    b.branch(loop)
    b.position_at_end(loop)
    t = rt.load(b, "ticket")
    same = b.icmp_unsigned("==", b.lshr(t, i64(32)), gen)
    left = b.icmp_unsigned("<", b.and_(t, i64(LOW32)), chunks)
    b.cbranch(b.and_(same, left), take, out)
    b.position_at_end(take)
    swapped = b.cmpxchg(rt.g["ticket"], t, b.add(t, i64(1)), "acq_rel", "acquire")
    b.cbranch(b.extract_value(swapped, 1), run, loop)
    b.position_at_end(run)
    call_pointer(b, chunk_fn, CHUNK_FN, [ctx, b.and_(t, i64(LOW32))])
    b.atomic_rmw("add", rt.g["done"], i64(1), "release")
    b.branch(loop)
    b.position_at_end(out)
    b.ret_void()
    return fn


def _worker(rt: _Runtime, run_chunks: ir.Function) -> ir.Function:
    """Spin on the ticket, then sleep; run the chunks of each new job it may take part in."""
    fn, b = _function(rt.m, "symgrad.pool.worker", PTR, [PTR])
    index = b.ptrtoint(fn.args[0], I64)
    seen, rounds = b.alloca(I64), b.alloca(I64)
    b.store(b.lshr(rt.load(b, "ticket"), i64(32)), seen)
    blocks = ("wait", "spin", "check", "yield", "sleep", "sleepcheck", "sleepwait", "woke", "job")
    wait, spin, check, yld, sleep, sleepcheck, sleepwait, woke, job = (
        fn.append_basic_block(n) for n in blocks
    )
    exit_ = fn.append_basic_block("exit")
    b.branch(wait)

    b.position_at_end(wait)  # a round counter, then spin
    b.store(i64(0), rounds)
    b.branch(spin)

    b.position_at_end(spin)
    (t,) = for_range(
        b,
        i64(SPIN_LOADS),
        lambda j, acc: [rt.load(b, "ticket")],
        init=[rt.load(b, "ticket")],
    )
    b.branch(check)
    b.position_at_end(check)
    new_job = b.icmp_unsigned("!=", b.lshr(t, i64(32)), b.load(seen))
    stop = b.icmp_unsigned("!=", rt.load(b, "stop"), i64(0))
    after_check = fn.append_basic_block("after_check")
    b.cbranch(stop, exit_, after_check)
    b.position_at_end(after_check)
    b.cbranch(new_job, job, yld)

    b.position_at_end(yld)
    rt.call(b, "sched_yield")
    r = b.add(b.load(rounds), i64(1))
    b.store(r, rounds)
    b.cbranch(b.icmp_unsigned("<", r, i64(SPIN_ROUNDS)), spin, sleep)

    b.position_at_end(sleep)
    rt.call(b, "pthread_mutex_lock", rt.g["mutex"])
    b.atomic_rmw("add", rt.g["sleepers"], i64(1), "seq_cst")
    b.branch(sleepcheck)
    b.position_at_end(sleepcheck)
    asleep = b.icmp_unsigned("==", b.lshr(rt.load(b, "ticket", "seq_cst"), i64(32)), b.load(seen))
    running = b.icmp_unsigned("==", rt.load(b, "stop", "seq_cst"), i64(0))
    b.cbranch(b.and_(asleep, running), sleepwait, woke)
    b.position_at_end(sleepwait)
    rt.call(b, "pthread_cond_wait", rt.g["cond"], rt.g["mutex"])
    b.branch(sleepcheck)
    b.position_at_end(woke)
    b.atomic_rmw("sub", rt.g["sleepers"], i64(1), "seq_cst")
    rt.call(b, "pthread_mutex_unlock", rt.g["mutex"])
    b.branch(wait)

    b.position_at_end(job)
    gen = b.lshr(t, i64(32))
    b.store(gen, seen)
    take_part, skip = fn.append_basic_block("take_part"), wait
    b.cbranch(b.icmp_unsigned("<", index, rt.load(b, "active")), take_part, skip)
    b.position_at_end(take_part)
    chunks = rt.load(b, "chunks", "monotonic")
    chunk_fn = b.inttoptr(rt.load(b, "fn", "monotonic"), PTR)
    ctx = b.inttoptr(rt.load(b, "ctx", "monotonic"), PTR)
    b.call(run_chunks, [gen, chunks, chunk_fn, ctx])
    b.branch(wait)

    b.position_at_end(exit_)
    b.ret(ir.Constant(PTR, None))
    return fn


def _acquire(rt: _Runtime, b: ir.IRBuilder, yield_while_busy: bool):
    """Take the pool (busy 0 -> 1): returns the success flag, or loops until taken."""
    fn = b.block.function
    if not yield_while_busy:
        got = b.cmpxchg(rt.g["busy"], i64(0), i64(1), "acquire", "monotonic")
        return b.extract_value(got, 1)
    retry, taken = fn.append_basic_block("retry"), fn.append_basic_block("taken")
    b.branch(retry)
    b.position_at_end(retry)
    got = b.cmpxchg(rt.g["busy"], i64(0), i64(1), "acquire", "monotonic")
    wait = fn.append_basic_block("busy_wait")
    b.cbranch(b.extract_value(got, 1), taken, wait)
    b.position_at_end(wait)
    rt.call(b, "sched_yield")
    b.branch(retry)
    b.position_at_end(taken)
    return None


def _after_fork(rt: _Runtime) -> None:
    """The child of a fork has no workers: forget them, make new synchronization objects."""
    fn, b = _function(rt.m, AFTER_FORK, ir.VoidType(), [], internal=False)
    for name in ("started", "stop", "sleepers", "busy"):
        rt.store(b, name, i64(0), "seq_cst")
    rt.call(b, "pthread_mutex_init", rt.g["mutex"], ir.Constant(PTR, None))
    rt.call(b, "pthread_cond_init", rt.g["cond"], ir.Constant(PTR, None))
    b.ret_void()


def _start_workers(rt: _Runtime, b: ir.IRBuilder, worker, wanted) -> None:
    """Start workers until ``wanted`` run (fewer if pthread_create fails); first time: init."""
    fn = b.block.function
    null = ir.Constant(PTR, None)
    init, ready = fn.append_basic_block("init"), fn.append_basic_block("ready")
    b.cbranch(b.icmp_unsigned("==", rt.load(b, "initialized"), i64(0)), init, ready)
    b.position_at_end(init)
    rt.call(b, "pthread_mutex_init", rt.g["mutex"], null)
    rt.call(b, "pthread_cond_init", rt.g["cond"], null)
    rt.store(b, "initialized", i64(1))
    b.branch(ready)
    b.position_at_end(ready)
    loop, create, done = (fn.append_basic_block(n) for n in ("start", "create", "started"))
    b.branch(loop)
    b.position_at_end(loop)
    n = rt.load(b, "started")
    b.cbranch(b.icmp_signed("<", n, wanted), create, done)
    b.position_at_end(create)
    slot = b.gep(rt.g["tids"], [i64(0), n], inbounds=True, source_etype=rt.g["tids"].value_type)
    rc = rt.call(b, "pthread_create", slot, null, worker, b.inttoptr(n, PTR))
    ok = fn.append_basic_block("created")
    b.cbranch(b.icmp_signed("==", rc, ir.Constant(I32, 0)), ok, done)
    b.position_at_end(ok)
    rt.store(b, "started", b.add(n, i64(1)))
    b.branch(loop)
    b.position_at_end(done)


def _parallel_for(rt: _Runtime, run_chunks, worker) -> None:
    fn = ir.Function(rt.m, CHUNK_RUNNER, name=ENTRY)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    chunk_fn, ctx, chunks, threads = fn.args
    for arg, name in zip(fn.args, ("chunk", "ctx", "chunks", "threads")):
        arg.name = name
    serial, pooled = fn.append_basic_block("serial"), fn.append_basic_block("pooled")
    helpers = b.sub(threads, i64(1))
    helpers = b.select(b.icmp_signed("<", helpers, i64(MAX_WORKERS)), helpers, i64(MAX_WORKERS))
    worth = b.and_(b.icmp_signed(">", helpers, i64(0)), b.icmp_signed(">", chunks, i64(1)))
    try_pool = fn.append_basic_block("try_pool")
    b.cbranch(worth, try_pool, serial)
    b.position_at_end(try_pool)
    b.cbranch(_acquire(rt, b, False), pooled, serial)

    b.position_at_end(pooled)
    _start_workers(rt, b, worker, helpers)
    rt.store(b, "fn", b.ptrtoint(chunk_fn, I64), "monotonic")
    rt.store(b, "ctx", b.ptrtoint(ctx, I64), "monotonic")
    rt.store(b, "chunks", chunks, "monotonic")
    rt.store(b, "active", helpers, "monotonic")
    rt.store(b, "done", i64(0), "monotonic")
    gen = b.and_(b.add(b.lshr(rt.load(b, "ticket"), i64(32)), i64(1)), i64(LOW32))
    rt.store(b, "ticket", b.shl(gen, i64(32)), "seq_cst")  # publishes everything above
    wake, work = fn.append_basic_block("wake"), fn.append_basic_block("work")
    b.cbranch(b.icmp_unsigned(">", rt.load(b, "sleepers", "seq_cst"), i64(0)), wake, work)
    b.position_at_end(wake)
    rt.broadcast(b)
    b.branch(work)
    b.position_at_end(work)
    b.call(run_chunks, [gen, chunks, chunk_fn, ctx])
    wait, yld, finished = (fn.append_basic_block(n) for n in ("wait", "yield", "finished"))
    b.branch(wait)
    b.position_at_end(wait)
    (done,) = for_range(b, i64(64), lambda j, acc: [rt.load(b, "done")], init=[rt.load(b, "done")])
    b.cbranch(b.icmp_signed("<", done, chunks), yld, finished)
    b.position_at_end(yld)
    rt.call(b, "sched_yield")
    b.branch(wait)
    b.position_at_end(finished)
    rt.store(b, "busy", i64(0))
    b.ret_void()

    b.position_at_end(serial)
    for_range(b, chunks, lambda c, _: call_pointer(b, chunk_fn, CHUNK_FN, [ctx, c]) and None)
    b.ret_void()


def _stop(rt: _Runtime) -> None:
    """Wake every worker, let it exit, join it; the next job starts new ones."""
    fn, b = _function(rt.m, STOP, ir.VoidType(), [], internal=False)
    _acquire(rt, b, True)
    rt.store(b, "stop", i64(1), "seq_cst")
    started = rt.load(b, "started")
    has, done = fn.append_basic_block("has_workers"), fn.append_basic_block("stopped")
    b.cbranch(b.icmp_signed(">", started, i64(0)), has, done)
    b.position_at_end(has)
    rt.broadcast(b)
    tids_ty = rt.g["tids"].value_type

    def join(n, _):
        tid = b.load(b.gep(rt.g["tids"], [i64(0), n], inbounds=True, source_etype=tids_ty), typ=I64)
        rt.call(b, "pthread_join", tid, ir.Constant(PTR, None))

    for_range(b, started, join)
    b.branch(done)
    b.position_at_end(done)
    rt.store(b, "started", i64(0))
    rt.store(b, "stop", i64(0), "seq_cst")
    rt.store(b, "busy", i64(0))
    b.ret_void()


def _workers(rt: _Runtime) -> None:
    fn, b = _function(rt.m, WORKERS, I64, [], internal=False)
    b.ret(rt.load(b, "started"))


def runtime_ir(triple: str, data_layout: str) -> str:
    """The pool module's LLVM IR text."""
    module = ir.Module(name="symgrad.pool")
    module.triple, module.data_layout = triple, data_layout
    rt = _Runtime(module)
    run_chunks = _run_chunks(rt)
    worker = _worker(rt, run_chunks)
    _after_fork(rt)
    _parallel_for(rt, run_chunks, worker)
    _stop(rt)
    _workers(rt)
    return str(module)


class Pool:
    """The loaded pool of this process (``runtime()``); keeps its code alive."""

    def __init__(self, code):
        self.code = code  # a codegen.llvm.jit.LoadedObject
        self.address = code.address(ENTRY)
        self._stop = ctypes.CFUNCTYPE(None)(code.address(STOP))
        self._workers = ctypes.CFUNCTYPE(ctypes.c_int64)(code.address(WORKERS))
        self.after_fork = code.address(AFTER_FORK)

    def workers(self) -> int:
        """Worker threads running now (0 until a job wants them, and after ``stop``)."""
        return int(self._workers())

    def stop(self) -> None:
        """Join every worker (at interpreter exit; the next job starts new ones)."""
        self._stop()


def _register_at_fork(handler: int) -> None:
    """The native child handler for every fork, Python's and C's alike."""
    libc = ctypes.CDLL(None)
    register = getattr(libc, "pthread_atfork", None)
    args = [None, None, ctypes.c_void_p(handler)]
    if register is None:  # glibc: pthread_atfork lives in libc_nonshared.a; this is its body
        register = libc.__register_atfork
        args.append(None)  # the DSO handle: none, the handler stays for the process
    register.restype = ctypes.c_int
    register.argtypes = [ctypes.c_void_p] * len(args)
    if register(*args) != 0:
        raise OSError("pthread_atfork failed: the thread pool cannot survive a fork")


@functools.cache
def runtime() -> Pool:
    """Compile (or load from the disk cache) and link the pool, once per process."""
    import llvmlite.binding as llvm

    from codegen.llvm.backend import compile_ir
    from codegen.llvm.jit import host

    h = host()
    pool = Pool(compile_ir(runtime_ir(h.triple, h.data_layout)).code)
    llvm.add_symbol(ENTRY, pool.address)
    _register_at_fork(pool.after_fork)
    # a fork from Python joins the workers first: the child is single-threaded by
    # construction (and Python 3.12+ has no threads to warn about); the native handler
    # above covers forks from C
    os.register_at_fork(before=pool.stop)
    atexit.register(pool.stop)
    return pool


def runtime_soon() -> Callable[[], Pool]:
    """Start loading the pool (``runtime``) on a thread of its own, if it is not loaded yet;
    returns the function that waits for it and returns it.

    In a cold process the pool's module is compiled while the caller goes on with
    Python work (generating its own module's IR text): LLVM runs in C without the GIL.
    A failure is raised by the waiting function, which then loads on the caller's thread.
    """
    if runtime.cache_info().currsize:
        return runtime
    loading = threading.Thread(target=_load_quietly, name="symgrad-pool-load")
    loading.start()

    def wait() -> Pool:
        loading.join()
        return runtime()  # the loaded pool, or the load again here, raising its error

    return wait


def _load_quietly() -> None:
    with contextlib.suppress(Exception):  # reported by runtime() on the waiting thread
        runtime()


def thread_count(threads: int | None = None) -> int:
    """``threads`` checked, else ``SYMGRAD_NUM_THREADS``, else the CPUs this process may use."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(
                f"threads must be a positive integer (threads of the generated loops and "
                f"GEMMs); received: threads={threads!r}"
            )
        return threads
    value = os.environ.get("SYMGRAD_NUM_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(
                "SYMGRAD_NUM_THREADS must be a positive integer (threads of the generated loops "
                f"and GEMMs); received: SYMGRAD_NUM_THREADS={value!r}"
            )
        return int(value)
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1
