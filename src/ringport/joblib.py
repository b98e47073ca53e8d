"""A joblib parallel backend on ringport workers.  Importing this module registers it as
``"ringport"``::

    import joblib
    import ringport.joblib

    with joblib.parallel_config(backend="ringport", n_jobs=4):
        squares = joblib.Parallel()(joblib.delayed(pow)(i, 2) for i in range(100))

Options go with the backend's name (``parallel_config(backend="ringport", n_jobs=4,
worker_backend="process")``): ``worker_backend`` picks the ringport backend, ``pool=`` runs on a
``WorkerPool`` of your own, and ``min_workers``, ``idle_timeout``, ``max_tasks_per_worker``,
``initializer``, ``initargs``, ``worker_data`` and ``name`` go to the pool.  See
``RingportBackend``.

joblib is an optional dependency: ``import ringport`` never imports it.
"""
try:
    import joblib as _joblib
    from joblib.parallel import (FallbackToBackend, ParallelBackendBase, SequentialBackend,
                                 register_parallel_backend)
    from joblib._parallel_backends import AutoBatchingMixin
except ImportError as _exc:
    raise ImportError(f"ringport.joblib needs joblib (pip install joblib): {_exc}") from _exc

import pickle
import threading
import types

import ringport
from ringport._backends import FREE_THREADED, available_backends, resolve_backend
from ringport._errors import DataCloneError, WorkerError
from ringport._joblib_task import run_batch

__all__ = ["RingportBackend", "default_worker_backend"]

#: The WorkerPool options the backend passes on.  (max_workers is n_jobs; max_queue and
#: filename do not fit joblib: it bounds its own queue with pre_dispatch, and it submits
#: from the pool's collector thread, which a full queue would block.)
POOL_OPTIONS = frozenset({"min_workers", "idle_timeout", "max_tasks_per_worker", "initializer",
                          "initargs", "worker_data", "name"})
#: How long a shared pool's idle workers stay (loky's default idle_worker_timeout).
SHARED_IDLE_TIMEOUT = 300.0


def default_worker_backend():
    """What worker_backend="auto" picks: thread on a free-threaded build, else process where
    there is one, else thread.  Never subinterpreter: numpy (so scikit-learn) and joblib itself
    do not import in a subinterpreter; name it to get it."""
    backends = available_backends()
    if FREE_THREADED:
        return "thread"
    return "process" if "process" in backends else "thread"


class _RemoteTraceback(Exception):
    """The worker's formatted traceback, set as the __cause__ of the exception it raised."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text

    def __str__(self):
        return "\n\n" + self.text.rstrip("\n")


class RingportBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's ``"ringport"`` backend: each batch of calls is a task of a ringport WorkerPool.

    ``RingportBackend(worker_backend="auto", pool=None, **pool_options)``

    worker_backend: "thread", "subinterpreter" or "process" (ringport.available_backends()),
    or "auto": thread on a free-threaded build, else process (see default_worker_backend).
    On the thread backend batches are called directly, so any callable works and arguments are
    shared, not copied; on the others a batch travels as cloudpickle bytes (as under loky), so
    functions defined in ``__main__``, lambdas and closures work, and arguments are copied.
    A subinterpreter worker needs the cloudpickle package for those (else only importable
    functions go), cannot import numpy, and cannot use joblib itself (it does not import there).

    Pools: by default the backend shares one pool per (worker backend, n_jobs, options) across
    Parallel calls, as loky reuses its executor; its idle workers leave after idle_timeout
    (default 300 s).  A Parallel call made inside a ringport worker, and one whose options
    cannot be a dictionary key, gets a pool of its own, shut down when the call ends.
    pool=: a WorkerPool of yours (worker_backend and the pool options then do not apply); it
    is never shut down here, and n_jobs=-1 means its max_workers.

    Nested Parallel calls inside a task run on joblib's threading backend one level down and
    sequentially below that, as under joblib's own backends.  When a batch raises, the batches
    still queued are cancelled and, on the subinterpreter and process backends, those running
    are stopped (their workers are replaced); the exception comes out of Parallel with its own
    type and the worker's traceback as its __cause__.
    """

    supports_retrieve_callback = True   # (so return_as="generator" and timeout work too)

    def __init__(self, nesting_level=None, inner_max_num_threads=None, *,
                 worker_backend="auto", pool=None, **pool_options):
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        unknown = set(pool_options) - POOL_OPTIONS
        if unknown:
            raise TypeError(f"the ringport joblib backend takes no option "
                            f"{', '.join(sorted(unknown))} (it takes worker_backend, pool, "
                            f"{', '.join(sorted(POOL_OPTIONS))})")
        if pool is not None:
            if not isinstance(pool, ringport.WorkerPool):
                raise TypeError(f"pool must be a ringport.WorkerPool, not "
                                f"{type(pool).__name__}")
            if pool_options:
                raise TypeError("pool= and pool options do not go together (the pool has "
                                "its own)")
            if worker_backend not in ("auto", pool.backend):
                raise ValueError(f"worker_backend={worker_backend!r} but the pool runs on "
                                 f"{pool.backend!r}")
            if getattr(pool, "max_queue", None) is not None:
                raise ValueError("a pool with max_queue cannot run joblib's batches: joblib "
                                 "submits from the pool's collector thread, which a full "
                                 "queue would block")
            worker_backend = pool.backend
        elif worker_backend == "auto":
            worker_backend = default_worker_backend()
        self.worker_backend = resolve_backend(worker_backend)
        self.pool_options = pool_options
        # joblib reads these two: require="sharedmem" needs threads, and prefer="threads"
        # keeps a thread backend
        self.uses_threads = self.supports_sharedmem = self.worker_backend == "thread"
        self._given_pool = pool
        self._pool = None
        self._owns_pool = False
        self._lock = threading.Lock()
        self._futures = set()        # this backend's tasks not done yet (for abort_everything)
        # the pickler of batches and results, one the workers can load: cloudpickle (joblib
        # 1.6 depends on it), else the copy older joblibs kept in joblib.externals, which a
        # subinterpreter cannot import (it imports joblib), else pickle
        if self.worker_backend == "thread":
            self._codec = None
        elif _cloudpickle() is not None:
            self._codec = "cloudpickle"
        elif self.worker_backend == "process" and _vendored_cloudpickle() is not None:
            self._codec = "joblib"
        else:
            self._codec = "pickle"

    def __repr__(self):
        return f"RingportBackend(worker_backend={self.worker_backend!r})"

    # ------------------------------------------------------------------ joblib's calls

    def effective_n_jobs(self, n_jobs):
        """n_jobs as a number of workers: -1 all CPUs (all the given pool's workers), -2 all
        but one, and so on; None 1."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        pool = self._given_pool
        total = pool.max_workers if pool is not None else _joblib.cpu_count()
        if n_jobs < 0:
            n_jobs = max(total + 1 + n_jobs, 1)
        if pool is not None:
            n_jobs = min(n_jobs, pool.max_workers)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **memmap_options):
        """The pool for a Parallel call; its number of workers.  (joblib's memmapping options,
        max_nbytes and the like, do not apply: arguments travel through ringport's codec.)"""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        if self._pool is None:
            self._pool, self._owns_pool = self._acquire_pool(n_jobs)
        return n_jobs

    def submit(self, func, callback=None):
        """Run one batch (a joblib BatchedCalls) as a pool task; its Future."""
        pool = self._pool
        if self._codec is None:
            future = pool.submit(func)
        else:
            future = pool.submit(run_batch, self._codec, self._dumps(func))
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    apply_async = submit   # what joblib before 1.5 calls

    def retrieve_result_callback(self, future):
        """The batch's results, or its exception raised (called on the pool's thread)."""
        out = future.result()
        if self._codec is None:
            return out
        ok, *rest = pickle.loads(out)
        if ok:
            return rest[0]
        exc, text = rest
        if isinstance(exc, tuple):   # it did not survive pickling
            raise WorkerError(exc[0], exc[1], text)
        exc.__cause__ = _RemoteTraceback(text)
        raise exc

    def abort_everything(self, ensure_ready=True):
        """A batch failed: cancel this backend's queued batches and, on the subinterpreter and
        process backends, stop its running ones (their workers are replaced; a thread cannot
        be stopped without harm to the state it shares, so a running thread batch finishes
        and its result is dropped)."""
        with self._lock:
            futures = list(self._futures)
            self._futures.clear()
        pool = self._pool
        for future in futures:
            if not future.cancel() and pool is not None and self._codec is not None:
                pool.abort(future)
        # (ensure_ready or not, the pool stays usable; joblib calls terminate() next)

    def terminate(self):
        """The Parallel call ended: shut down its own pool (a shared one stays warm)."""
        pool, owned = self._pool, self._owns_pool
        self._pool, self._owns_pool = None, False
        if pool is not None and owned:
            pool.shutdown(wait=True, cancel_futures=True)
        self.reset_batch_stats()

    # ------------------------------------------------------------------ internals

    def _forget(self, future):
        with self._lock:
            self._futures.discard(future)

    def _dumps(self, batch):
        if self.worker_backend == "subinterpreter":
            batch = list(batch.items)   # it cannot import joblib: the calls alone
        if self._codec == "cloudpickle":
            return _cloudpickle().dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        if self._codec == "joblib":
            return _vendored_cloudpickle().dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        return _dumps_importable(batch)

    def _acquire_pool(self, n_jobs):
        """(pool, owned): the given pool, a shared one, or one for this call alone."""
        if self._given_pool is not None:
            return self._given_pool, False
        options = dict(self.pool_options)
        key = None
        if ringport.is_main_thread:   # (in a worker, a shared pool could wait on itself)
            try:
                key = (self.worker_backend, n_jobs, frozenset(options.items()))
                hash(key)
            except TypeError:
                key = None
        if key is None:
            return _new_pool(self.worker_backend, n_jobs, options), True
        options.setdefault("idle_timeout", SHARED_IDLE_TIMEOUT)
        with _shared_lock:
            pool = _shared_pools.get(key)
            if pool is None:
                pool = _shared_pools[key] = _new_pool(self.worker_backend, n_jobs, options)
        return pool, False


_shared_lock = threading.Lock()
_shared_pools = {}


def _new_pool(backend, n_jobs, options):
    return ringport.WorkerPool(max_workers=n_jobs, backend=backend,
                               name=options.pop("name", None) or "joblib", **options)


def _cloudpickle():
    """The cloudpickle package, or None."""
    try:
        import cloudpickle
    except ImportError:
        return None
    return cloudpickle


def _vendored_cloudpickle():
    """The cloudpickle that joblib before 1.6 kept in joblib.externals, or None."""
    try:
        from joblib.externals import cloudpickle
    except ImportError:
        return None
    return cloudpickle


class _ImportablePickler(pickle.Pickler):
    """pickle that refuses functions a worker could not import (no cloudpickle to carry them)."""

    def reducer_override(self, obj):
        if isinstance(obj, types.FunctionType):
            module, qualname = obj.__module__, obj.__qualname__
            if module == "__main__" or "<locals>" in qualname or "<lambda>" in qualname:
                raise DataCloneError(
                    f"{qualname} (module {module!r}) cannot go to a worker without the "
                    f"cloudpickle package: pip install cloudpickle, or move it to a module")
        return NotImplemented


def _dumps_importable(obj):
    import io
    buf = io.BytesIO()
    _ImportablePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


register_parallel_backend("ringport", RingportBackend)
