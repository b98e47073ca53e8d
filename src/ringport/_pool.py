"""WorkerPool: a concurrent.futures Executor over ringport workers of any backend.

The parent side is one lock, a queue of tasks and one collector thread per pool.  ``submit``
posts a task straight to the least-loaded worker that has room (at most ``_limit`` tasks in
flight each, more for short tasks), else queues it; the collector sleeps on a C wait set that
every worker's port signals, takes results in batches, resolves their futures and hands each
freed worker its next queued tasks in one message.  A worker runs ``_serve`` (a plain worker
target): it takes its configuration from the first message, then runs tasks until it gets None;
while it holds results to post together, it writes how many tasks it started into a shared
int (its slot's mark), so the pool knows which task a dead worker was running.

Task messages (parent to worker): (kind, task id, function ref, args, kwargs) with kind 0 a
call, 1 a chunk of calls (args is a list of argument tuples) and 2 a ``run`` of the handler the
module at ``filename`` defines.  Results: (task id, ok, value or error report, start, run time).
"""
import collections
import concurrent.futures as _cf
import itertools
import os
import sys
import threading
import time
import weakref

from ringport import _context
from ringport._backends import resolve_backend
from ringport._core import Int32Array, SharedArrayBuffer, _new_waitset, _try_receive
from ringport._core import load as _load, store as _store
from ringport._errors import (DataCloneError, Full, PortClosed, WorkerError, WorkerTerminated,
                              error_report, rebuild_error)
from ringport._events import Emitter

__all__ = ["BrokenWorkerPool", "WorkerPool"]

#: Tasks in flight per worker: one for long tasks (an idle worker never waits behind a busy
#: one), more for short ones, whose round trip would otherwise leave the worker idle.
_LIMIT_LONG, _LIMIT_SHORT, _LIMIT_TINY = 1, 4, 16
#: ... and for tiny tasks behind a deep queue, up to this many in one message (a fair share of
#: the queue each): fewer messages and wake-ups per task, for the collector and the workers.
_LIMIT_DEEP = 64
#: Samples kept for the run- and wait-time percentiles.
STATS_WINDOW = 10_000

_CALL, _CHUNK, _RUN = 0, 1, 2
_MARK_MASK = 0x7FFFFFFF
#: A worker posts the results of tasks that were waiting for it together, up to _BATCH of
#: them or the ones done within _BATCH_S of the first, and only while they are short (below
#: _SHORT_S each), succeed and the next task calls the same function: a result never waits
#: behind a task that may be long (a function that is fast and then, for other arguments,
#: slow is the one case where a result waits for one more task).
_BATCH, _BATCH_S, _SHORT_S = 64, 200e-6, 20e-6
#: A submit() that finds the pool's lock taken hands its task in while fewer than this many
#: wait to be moved to the queue, and waits for the lock beyond: threads that submit faster
#: than the pool runs tasks then wait their turn, as they did before tasks were handed in,
#: rather than fill the deque faster than the collector can empty it (while it moves them
#: it handles no results).
_HAND_IN_MAX = 256
#: map() submits its tasks this many under one lock.
_MAP_GROUP = 256
#: Functions a worker keeps resolved.
_CACHE = 256

# the thread backend's functions, by key: its workers run in this interpreter and call the
# function itself (lambdas and closures work there, as in ThreadPoolExecutor)
_local_fns = {}
_keys = itertools.count(1)


class _NoPool:
    """The pool of a future whose submit failed: nothing to take it out of."""

    @staticmethod
    def _forget(task):
        pass


_NO_POOL = _NoPool()


class BrokenWorkerPool(_cf.BrokenExecutor):
    """A worker's initializer failed: the pool runs nothing more (as BrokenProcessPool)."""


def _cpu_count():
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return count() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _function_ref(fn, backend):
    """What a task message carries for fn: the thread backend's key is made by the caller; an
    importable function travels as (module, qualified name), other callables as themselves."""
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__!r} object is not callable")
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    plain = isinstance(qualname, str) and isinstance(module, str) and (
        type(fn).__name__ in ("function", "builtin_function_or_method"))
    if plain:
        if module == "__main__" or "<locals>" in qualname or "<lambda>" in qualname:
            raise DataCloneError(
                f"a function for a {backend} worker must be importable by its module and "
                f"qualified name (a module-level function of an importable module); "
                f"{qualname} in module {module!r} is not: move it to a module, or use "
                f"backend='thread'")
        return ("m", module, qualname)
    return ("o", fn)


def _lazy_list(slot):
    """A list attribute stored in slot, made on first use."""
    def get(self):
        lst = getattr(self, slot)
        if lst is None:
            lst = []
            setattr(self, slot, lst)
        return lst

    def put(self, value):
        setattr(self, slot, value)

    return property(get, put)


class _Future(_cf.Future):
    """A concurrent.futures.Future that leaves the pool's queue when it is cancelled, and
    shares one of the pool's conditions rather than making its own: a Condition costs more
    than the rest of a no-op task's round trip.  Waits loop on their own future's state, so a
    notification meant for another future of the same condition only wakes them early.

    It is also the pool's record of its task: the message's parts, what moves with it, when it was
    submitted, the thread backend's function key to release, whether abort() dropped it and
    whether it was started (it stays so when a dead worker's unstarted tasks are queued again).
    """

    __slots__ = ("_condition", "_state", "_result", "_rp_pool", "tid", "kind", "ref", "args",
                 "kwargs", "transfer", "submitted", "local", "started", "fn")

    # what most futures never set: class defaults, not stored per future (each store costs,
    # on a free-threaded 3.13 most).  Set, they go to the instance's dict (concurrent.futures.
    # Future has one), made then: one more object for the GC, so never for what every task sets.
    _exception = _rp_waiters = _rp_callbacks = None
    aborted = False

    def __init__(self, condition, pool, kind, ref, args, kwargs, transfer):
        self._condition = condition
        self._state = "PENDING"
        self._result = None
        self._rp_pool = pool
        # the task message's parts: the tuple is made when it is posted (one object fewer per
        # queued task for the GC to count and walk)
        self.kind = kind
        self.ref = ref
        self.args = args
        self.kwargs = kwargs
        self.transfer = transfer
        self.local = None
        self.started = False

    def message(self):
        return (self.kind, self.tid, self.ref, self.args, self.kwargs)

    # The stdlib's methods (add_done_callback, wait(), as_completed()) use these lists under
    # self._condition; most futures never need them, and two fewer objects per task is less
    # for the cyclic GC to walk (which, on a free-threaded build, walks every object).
    _waiters = _lazy_list("_rp_waiters")
    _done_callbacks = _lazy_list("_rp_callbacks")

    def _wait_done(self, timeout):
        # (under self._condition)
        if self._state in _DONE:
            return
        if timeout is None:
            while self._state not in _DONE:
                self._condition.wait()
            return
        deadline = time.monotonic() + timeout
        while self._state not in _DONE:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            self._condition.wait(left)

    def result(self, timeout=None):
        if self._state == "FINISHED" and self._exception is None:
            return self._result   # (set before the state, under the condition)
        try:
            with self._condition:
                self._wait_done(timeout)
                if self._state in _CANCELLED:
                    raise _cf.CancelledError()
                if self._exception is not None:
                    raise self._exception
                return self._result
        finally:
            self = None   # (as the stdlib: no cycle through the raised exception's frames)

    def exception(self, timeout=None):
        with self._condition:
            self._wait_done(timeout)
            if self._state in _CANCELLED:
                raise _cf.CancelledError()
            return self._exception

    def cancel(self):
        done = super().cancel()
        if done:
            self._rp_pool._forget(self)
        return done


def _start_all(tasks):
    """set_running_or_notify_cancel() for tasks (sharing conditions in runs); the ones to send
    (cancelled ones are left out, as their own method would)."""
    out = []
    i, n = 0, len(tasks)
    while i < n:
        cond = tasks[i]._condition
        with cond:
            while i < n and tasks[i]._condition is cond:
                task = tasks[i]
                i += 1
                state = task._state
                if state == "PENDING" or task.started:
                    task._state = "RUNNING"
                    task.started = True
                    out.append(task)
                elif state == "CANCELLED":
                    task._state = "CANCELLED_AND_NOTIFIED"
                    for waiter in task._rp_waiters or ():
                        waiter.add_cancelled(task)
    return out


def _finish(resolved):
    """set_result()/set_exception() for (future, ok, value) items, under each shared condition
    once for a run of futures that share it, with one notify_all; futures done already (an
    aborted task's) are skipped."""
    i, n = 0, len(resolved)
    while i < n:
        cond = resolved[i][0]._condition
        start = i
        callbacks = False
        with cond:
            while i < n:
                fut, ok, value = resolved[i]
                if fut._condition is not cond:
                    break
                i += 1
                if fut._state in _DONE:
                    continue
                if ok:
                    fut._result = value
                else:
                    fut._exception = value
                fut._state = "FINISHED"
                waiters = fut._rp_waiters
                if waiters:
                    for waiter in waiters:
                        if ok:
                            waiter.add_result(fut)
                        else:
                            waiter.add_exception(fut)
                if fut._rp_callbacks:
                    callbacks = True
            if cond._waiters:   # (threading.Condition's own list: notify_all() costs a call)
                cond.notify_all()
        if callbacks:
            for j in range(start, i):
                fut = resolved[j][0]
                if fut._rp_callbacks:
                    fut._invoke_callbacks()


_DONE = ("FINISHED", "CANCELLED", "CANCELLED_AND_NOTIFIED")
_get_ident = threading.get_ident
_perf = time.perf_counter
_CANCELLED = ("CANCELLED", "CANCELLED_AND_NOTIFIED")
#: Conditions a pool's futures share (by the thread that submitted them): few, so that making a
#: future costs no Condition, enough that threads waiting on their futures rarely wake others.
_CONDITIONS = 8


class _Slot:
    """One worker of the pool and what it holds."""

    __slots__ = ("worker", "port", "inflight", "done", "idle_since", "retiring", "ended", "mark")

    def __init__(self, worker, mark):
        self.worker = worker
        self.mark = mark   # what the worker started: see running()
        self.port = worker.port
        self.inflight = collections.deque()
        self.done = 0
        self.idle_since = time.monotonic()
        self.retiring = False
        self.ended = False

    def running(self):
        """Where in inflight the task the worker runs (or ran last) is.  Usually 0; a worker
        that holds the finished results of short tasks to post them together writes, before it
        starts the next one, how many tasks it has started (modulo 2**31) into mark: the tasks
        ahead of that one finished but their results never came if the worker dies now."""
        ahead = (_load(self.mark, 0) - self.done) & _MARK_MASK
        return ahead - 1 if 1 <= ahead <= len(self.inflight) else 0


class WorkerPool(_cf.Executor):
    """A pool of ringport workers that runs tasks: a ``concurrent.futures.Executor``.

    ``WorkerPool(*, max_workers=None, min_workers=None, backend="auto", idle_timeout=None,
    max_queue=None, max_tasks_per_worker=None, initializer=None, initargs=(),
    worker_data=None, name=None, filename=None, submit_timeout=None, allow_pickle=True)``

    max_workers: at most this many workers (default: the usable CPUs), started on demand;
    min_workers (default 0) start at once and stay; the others leave after idle_timeout seconds
    without work (None: they stay).  max_queue bounds the tasks waiting for a worker ("auto":
    max_workers squared, as piscina): submit then waits submit_timeout seconds (None: as long as
    it takes, 0: not at all) and raises ringport.Full.  max_tasks_per_worker: a worker that ran
    that many tasks is replaced by a fresh one.  initializer(*initargs) runs first in each
    worker; if it raises, the pool is broken (BrokenWorkerPool, as BrokenProcessPool).
    worker_data is each worker's ringport.worker_data.  filename: a module whose functions
    ``run(task, name=...)`` calls (piscina's style).  allow_pickle=False: results and errors
    never unpickle in this process (errors come back as WorkerError).

    Arguments and results travel through ringport's codec (structured clone, pickle fallback):
    arrays are copied, SharedArrayBuffers shared, ports move with run(transfer=...).  Functions
    on the thread backend may be any callable; on the others, a function importable by module
    and qualified name (others raise DataCloneError, a TypeError), or a callable object that
    pickles.
    """

    def __init__(self, *, max_workers=None, min_workers=None, backend="auto", idle_timeout=None,
                 max_queue=None, max_tasks_per_worker=None, initializer=None, initargs=(),
                 worker_data=None, name=None, filename=None, submit_timeout=None,
                 allow_pickle=True, ray_options=None):
        self.backend = backend = resolve_backend(backend)
        self._ray_options = None
        if backend == "ray":
            from ringport._ray import pool_defaults
            default_workers, self._ray_options = pool_defaults(ray_options)
            if max_workers is None:
                max_workers = default_workers
        elif ray_options is not None:
            raise ValueError("ray_options is for backend='ray' only")
        if max_workers is None:
            max_workers = _cpu_count()
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError("max_workers must be an int >= 1")
        if min_workers is None:
            min_workers = 0
        if not isinstance(min_workers, int) or not 0 <= min_workers <= max_workers:
            raise ValueError("min_workers must be an int between 0 and max_workers")
        if idle_timeout is not None and not idle_timeout >= 0:
            raise ValueError("idle_timeout must be None or a number of seconds >= 0")
        if max_queue == "auto":
            max_queue = max_workers * max_workers
        if max_queue is not None and (not isinstance(max_queue, int) or max_queue < 0):
            raise ValueError("max_queue must be None, 'auto' or an int >= 0")
        if max_tasks_per_worker is not None and (
                not isinstance(max_tasks_per_worker, int) or max_tasks_per_worker < 1):
            raise ValueError("max_tasks_per_worker must be None or an int >= 1")
        if submit_timeout is not None and not submit_timeout >= 0:
            raise ValueError("submit_timeout must be None or a number of seconds >= 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be callable")
        if filename is not None:
            filename = os.path.abspath(os.fspath(filename))
            if not os.path.isfile(filename):
                raise FileNotFoundError(f"pool handler module not found: {filename}")
        self.max_workers = max_workers
        self.min_workers = min_workers
        self.idle_timeout = idle_timeout
        self.max_queue = max_queue
        self.max_tasks_per_worker = max_tasks_per_worker
        self.submit_timeout = submit_timeout
        self.name = name
        self.filename = filename
        self._allow_pickle = bool(allow_pickle)
        self._worker_data = worker_data
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)   # the queue shrank, or the pool shut down
        self._conditions = [threading.Condition() for _ in range(_CONDITIONS)]
        self._queue = collections.deque()
        self._incoming = collections.deque()   # tasks handed in while the lock was taken
        self._slots = []
        self._starting = 0
        self._tids = itertools.count(1)
        self._local_ids = {}            # thread backend: id(fn) -> [key, tasks using it, id]
        self._local_keys = {}           # ... and the same lists by key
        self._refs = {}                 # other backends: fn -> its ref (importable functions)
        self._shutdown = False
        self._broken = None
        self._limit = 2
        self._ema_run = None
        self._completed = 0
        self._run_total = 0.0
        self._run_times = collections.deque(maxlen=STATS_WINDOW)
        self._wait_times = collections.deque(maxlen=STATS_WINDOW)
        self._created = time.perf_counter()
        self._events = Emitter()
        self._drain_pending = False
        self._async_space = []
        self._ws = _new_waitset()
        self._ended = collections.deque()   # slots whose worker ended (from host threads)
        self._init = None
        if initializer is not None:
            self._init = (self._ref(initializer, pin=True), tuple(initargs))
        self._calls = collections.deque()   # run by the collector thread ('drain' listeners)
        self._collector = threading.Thread(
            # isolated subinterpreters refuse daemon threads (the exit hook stops it there)
            target=self._collect, daemon=not _context.in_subinterpreter_worker(),
            name="ringport-pool" + (f" ({name})" if name else f"-{id(self):x}"))
        self._collector.start()
        _pools.add(self)
        for _ in range(min_workers):
            self._start_worker()

    # ------------------------------------------------------------------ functions

    def _ref(self, fn, pin=False):
        """The function part of a task message; thread backend: (ref, key to release)."""
        if self.backend == "thread":
            if not callable(fn):
                raise TypeError(f"{type(fn).__name__!r} object is not callable")
            with self._lock:
                return self._local_ref(fn, 1 + pin)
        try:
            ref = self._refs.get(fn)
        except TypeError:   # (not hashable)
            ref = None
        if ref is None:
            ref = _function_ref(fn, self.backend)
            if ref[0] == "m" and len(self._refs) < 1024:
                self._refs[fn] = ref
        return ref

    def _local_ref(self, fn, uses=1):
        # (under self._lock) the thread backend's ref of fn, counting uses more tasks of it
        entry = self._local_entry(fn)
        entry[1] += uses
        return entry[3]

    def _local_entry(self, fn):
        # (under self._lock) [key, tasks using it, id(fn), ref] of fn, made at its first use
        entry = self._local_ids.get(id(fn))
        if entry is None:
            key = next(_keys)
            _local_fns[key] = fn
            entry = self._local_ids[id(fn)] = self._local_keys[key] = [key, 0, id(fn), ("l", key)]
        return entry

    def _release(self, ref, uses=1):
        # (under self._lock) uses tasks of ref ended
        # (the workers read _local_fns: on a free-threaded build, touching it for every task
        # would make them wait on its lock)
        if ref is not None and ref[0] == "l":
            entry = self._local_keys.get(ref[1])
            if entry is not None:
                entry[1] -= uses
                if entry[1] <= 0:
                    del self._local_keys[entry[0]]
                    del self._local_ids[entry[2]]
                    _local_fns.pop(entry[0], None)

    # ------------------------------------------------------------------ submitting

    def submit(self, fn, /, *args, **kwargs):
        """Run fn(*args, **kwargs) in a worker; a concurrent.futures.Future of its result."""
        if self._shutdown or self._broken is not None:
            self._check_open()
        if self.backend == "thread":   # (its key is counted under the lock _enqueue takes)
            if not callable(fn):
                raise TypeError(f"{type(fn).__name__!r} object is not callable")
            return self._enqueue(fn, _CALL, None, args, kwargs or None, ())
        return self._enqueue(None, _CALL, self._ref(fn), args, kwargs or None, ())

    def run(self, task, *, transfer=(), name="default"):
        """piscina's style: call the function called name (default ``default``) of the module
        the pool was made with (filename=) with task; a Future of its result.  Ports in
        transfer move to the worker."""
        if self.filename is None:
            raise TypeError("run() needs a pool made with filename= (a module of handlers); "
                            "use submit() for functions")
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        self._check_open()
        return self._enqueue(None, _RUN, name, task, None, tuple(transfer or ()))

    def _check_open(self):
        if self._broken is not None:
            raise BrokenWorkerPool(self._broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _enqueue(self, fn, kind, ref, args, kwargs, transfer, wait=True):
        """Queue (or post at once) the task (kind, ref, args, kwargs); fn: the thread
        backend's callable, whose key (ref) is taken here, under the lock this takes anyway."""
        fut = _Future(self._conditions[_get_ident() % _CONDITIONS], self, kind, ref, args,
                      kwargs, transfer)
        lock = self._lock
        if not lock.acquire(False):
            if self.max_queue is None and len(self._incoming) < _HAND_IN_MAX:
                return self._hand_in(fut, fn)
            lock.acquire()
        starts = 0
        deadline = None
        try:
            try:
                if self._incoming:
                    starts = self._take_incoming()
                while True:
                    if self._broken is not None:
                        raise BrokenWorkerPool(self._broken)
                    if self._shutdown:
                        raise RuntimeError("cannot schedule new futures after shutdown")
                    queue = self._queue
                    slot = None if queue else self._slot_for_task()
                    if slot is not None or self.max_queue is None or \
                            len(queue) < self.max_queue or not wait:
                        break
                    if self._room_for_worker():   # a worker on its way takes queued tasks
                        break
                    timeout = self.submit_timeout
                    if timeout is not None:
                        if deadline is None:
                            deadline = time.monotonic() + timeout
                        timeout = deadline - time.monotonic()
                        if timeout <= 0:
                            raise Full(f"the pool's queue is full ({self.max_queue} tasks)")
                    self._space.wait(timeout if timeout is not None else 0.25)
                if slot is None and not wait and self.max_queue is not None and \
                        len(queue) >= self.max_queue:
                    raise Full(f"the pool's queue is full ({self.max_queue} tasks)")
                if fn is not None:
                    fut.ref = fut.local = self._local_ref(fn)
                fut.tid = next(self._tids)
                fut.submitted = _perf()
                if slot is not None:
                    self._dispatch(slot, fut)
                else:
                    queue.append(fut)
                    if self.max_queue is not None and len(queue) >= self.max_queue:
                        self._drain_pending = True
                    if self._room_for_worker():
                        self._starting += 1
                        starts += 1
            finally:
                lock.release()
        except BaseException:
            fut._rp_pool = _NO_POOL
            self._start_workers(starts)
            raise
        self._start_workers(starts)
        return fut

    def _hand_in(self, fut, fn):
        """Queue the task without waiting for the pool's lock, held by another thread (the
        collector handling results, most often): it goes into _incoming, which the next
        holder of the lock moves into the queue before anything else, so tasks keep their
        order.  On a free-threaded build, waiting for that lock parked the submitting thread
        about once every ten tasks, for 100 us each.  Only without max_queue, whose
        backpressure counts the queue under the lock."""
        fut.fn = fn
        fut.submitted = _perf()
        self._incoming.append(fut)
        self._ws.signal()   # (the collector moves it, if nobody else takes the lock first)
        if self._shutdown or self._broken is not None:
            # shutdown() and _break() took in what was handed in before them, under the lock;
            # a task handed in since is left to this thread to take back
            with self._lock:
                try:
                    self._incoming.remove(fut)
                except ValueError:   # taken in time: it runs (or fails) with the queue
                    return fut
            fut._rp_pool = _NO_POOL
            self._check_open()
        return fut

    def _move_incoming(self, everything=False):
        """(under self._lock) The handed-in tasks to the end of the queue, in order, each with
        its id and (thread backend) its function's key counted.  Only what was there when it
        began: submitters hand in more while the lock is held, and chasing them would hold it
        for as long as they keep up.  everything (shutdown and _break, once their flag is
        set): until the deque's own lock finds it empty; a submitter hands in at most one
        more task after that, then sees the flag and takes it back."""
        incoming = self._incoming
        queue = self._queue
        tids = self._tids
        left = len(incoming)
        last = entry = None
        while everything or left > 0:
            left -= 1
            try:
                task = incoming.popleft()
            except IndexError:
                break
            task.tid = next(tids)
            fn = task.fn
            if fn is not None:
                task.fn = None
                if fn is not last:   # (a run of tasks of one function: one lookup for them all)
                    entry = self._local_entry(fn)
                    last = fn
                entry[1] += 1
                task.ref = task.local = entry[3]
            queue.append(task)

    def _take_incoming(self, closing=False):
        """(under self._lock) Move the handed-in tasks into the queue and hand them to workers
        as _enqueue would have: to idle ones, to busy ones with room when no worker more may
        start; how many workers to start (counted in _starting: the caller starts them, outside
        the lock).  Once the pool is shut down or broken, nothing (but for shutdown() itself,
        closing): what is handed in later is its submitter's to take back."""
        if (self._shutdown and not closing) or self._broken is not None:
            return 0
        self._move_incoming(everything=closing)
        queue = self._queue
        while queue:
            slot = self._slot_for_task()
            if slot is None:
                break
            left = len(queue)
            self._feed(slot)
            if len(queue) == left:
                break
        # (the workers already starting take queued tasks too)
        starts = min(len(queue) - self._starting,
                     self.max_workers - len(self._slots) - self._starting)
        if starts <= 0:
            return 0
        self._starting += starts
        return starts

    def _start_workers(self, n):
        for _ in range(n):
            try:
                self._start_worker(counted=True)
            except BaseException as exc:
                self._start_failed(exc)

    def _enqueue_many(self, fn, kind, ref, argss):
        """map's tasks (kind, ref, args) for each args in argss, under one lock: as _enqueue
        for each, in order.  With max_queue (backpressure, task by task), _enqueue each."""
        if self.max_queue is not None:
            return [self._enqueue(fn, kind, ref, args, None, ()) for args in argss]
        cond = self._conditions[_get_ident() % _CONDITIONS]
        futs = [_Future(cond, self, kind, ref, args, None, ()) for args in argss]
        starts = 0
        try:
            with self._lock:
                if self._broken is not None:
                    raise BrokenWorkerPool(self._broken)
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                if self._incoming:
                    starts = self._take_incoming()
                if fn is not None:
                    ref = self._local_ref(fn, len(futs))
                queue = self._queue
                tids = self._tids
                now = _perf()
                for fut in futs:
                    if fn is not None:
                        fut.ref = fut.local = ref
                    fut.tid = next(tids)
                    fut.submitted = now
                    slot = None if queue else self._slot_for_task()
                    if slot is not None:
                        self._dispatch(slot, fut)
                    else:
                        queue.append(fut)
                        if self._room_for_worker():
                            self._starting += 1
                            starts += 1
        except BaseException:
            for fut in futs:
                fut._rp_pool = _NO_POOL
            self._start_workers(starts)
            raise
        self._start_workers(starts)
        return futs

    def _start_failed(self, exc):
        """No new worker could start: with none left, what is queued would wait forever, so
        the pool is broken and the queued tasks fail with BrokenWorkerPool."""
        resolved = []
        with self._lock:
            if self._slots or self._starting:
                return
            self._break(exc, resolved, why="no worker could start:")
        if resolved:
            _finish(resolved)

    def _room_for_worker(self):
        # (under self._lock)
        return len(self._slots) + self._starting < self.max_workers

    def _free_slot(self):
        # (under self._lock) the least loaded worker with room
        best = None
        limit = self._limit
        for slot in self._slots:
            n = len(slot.inflight)
            if n < limit and not slot.retiring and not slot.ended and (
                    best is None or n < len(best.inflight)):
                best = slot
                if n == 0:
                    break
        return best

    def _slot_for_task(self):
        # (under self._lock) the worker a task goes to now, or None: the least loaded one with
        # room, unless it is busy and a new worker may start (rather than a task queueing
        # behind a busy one)
        slot = self._free_slot()
        if slot is not None and slot.inflight and self._room_for_worker():
            return None
        return slot

    def _dispatch(self, slot, task):
        # (under self._lock)
        if not task.started:
            if not task.set_running_or_notify_cancel():
                self._release(task.local)
                return False
            task.started = True
        try:
            slot.port.post_message(task.message(), task.transfer)
        except PortClosed:
            # the worker is gone (a process worker killed, say) and the collector has not seen
            # it end yet: the task joins its in-flight ones, which _lost fails or requeues then
            slot.inflight.append(task)
            return True
        except BaseException as exc:   # what the codec cannot carry fails this task only
            self._release(task.local)
            # (its done callbacks run on the collector thread, not under the pool's lock)
            self._loop_call(_finish, [(task, False, exc)])
            return False
        slot.inflight.append(task)
        self._check_retire(slot)
        return True

    def _dispatch_batch(self, slot, batch):
        # (under self._lock) several started tasks in one message; ports to transfer, or what
        # the codec cannot carry, go one by one
        if any(t.transfer for t in batch):
            for task in batch:
                self._dispatch(slot, task)
            return
        try:
            slot.port.post_message([(t.kind, t.tid, t.ref, t.args, t.kwargs) for t in batch])
        except BaseException:
            for task in batch:
                self._dispatch(slot, task)
            return
        slot.inflight.extend(batch)
        self._check_retire(slot)

    def _check_retire(self, slot):
        # (under self._lock) max_tasks_per_worker: its last task is on its way
        if self.max_tasks_per_worker is not None and \
                slot.done + len(slot.inflight) >= self.max_tasks_per_worker:
            slot.retiring = True
            self._post_stop(slot)

    def _post_stop(self, slot):
        try:
            slot.port.post_message(None)
        except (PortClosed, ValueError):
            pass

    def _forget(self, task):
        """A queued task's future was cancelled: take it out of the queue."""
        with self._lock:
            try:
                self._queue.remove(task)
            except ValueError:
                try:   # (handed in, not moved yet: its function key is not counted yet)
                    self._incoming.remove(task)
                    task.fn = None
                except ValueError:
                    pass
                return
            self._release(task.local)
            self._queue_shrank()

    def _queue_shrank(self):
        # (under self._lock)
        if self._space._waiters:
            self._space.notify_all()
        if self._async_space:
            waiters, self._async_space = self._async_space, []
            for loop, fut in waiters:
                try:
                    loop.call_soon_threadsafe(_resolve, fut)
                except RuntimeError:
                    pass

    def _rebuild(self, report):
        if self.backend == "ray":   # from another machine: unpickled only if trusted
            from ringport._ray import rebuild_remote_error, remote_pickle_allowed
            return rebuild_remote_error(report, self._allow_pickle and remote_pickle_allowed())
        return rebuild_error(report, self._allow_pickle)

    # ------------------------------------------------------------------ workers

    def _start_worker(self, counted=False):
        if not counted:
            with self._lock:
                self._starting += 1
        try:
            from ringport._worker import Worker
            worker = Worker(_serve, worker_data=self._worker_data, backend=self.backend,
                            name=f"{self.name}-worker" if self.name else None,
                            allow_pickle=self._allow_pickle,
                            **({"ray_options": self._ray_options} if self._ray_options else {}))
            worker.unref()   # the pool's own exit hook waits for its tasks instead
            # a worker that dies fails its task with a WorkerError that says why (_lost):
            # not printed as an uncaught worker error as well
            worker.on("error", _ignore)
            mark = SharedArrayBuffer(4)
            # (a Ray worker is on another machine: no shared mark, so a worker that dies
            # holding results gets its first unreported task blamed, as before marks)
            worker.port.post_message(
                {"init": self._init, "filename": self.filename, "backend": self.backend,
                 "mark": None if self.backend == "ray" else mark}, ())
        except BaseException:
            with self._lock:
                self._starting -= 1
                self._space.notify_all()
            raise
        slot = _Slot(worker, Int32Array(mark))
        worker._end_hooks.append(lambda: self._worker_ended(slot))
        with self._lock:
            self._starting -= 1
            self._slots.append(slot)
            if self._shutdown and not self._queue:
                slot.retiring = True
                self._post_stop(slot)
            else:
                self._feed(slot)
        self._ws.watch(slot.port, 0)
        self._ws.signal()
        return slot

    def _worker_ended(self, slot):
        # (in the worker's host thread, once its exit code is known)
        self._ended.append(slot)
        self._ws.signal()

    def _feed(self, slot):
        # (under self._lock) hand slot queued tasks while it has room
        queue = self._queue
        limit = self._limit
        if limit == _LIMIT_TINY and len(queue) > limit:
            limit = max(limit, min(_LIMIT_DEEP, len(queue) // max(1, len(self._slots))))
        room = limit - len(slot.inflight)
        if self.max_tasks_per_worker is not None:
            room = min(room, self.max_tasks_per_worker - slot.done - len(slot.inflight))
        if not queue or room <= 0 or slot.retiring:
            return
        taken = [queue.popleft() for _ in range(min(room, len(queue)))]
        batch = _start_all(taken)
        if len(batch) < len(taken):
            for task in taken:
                if not task.started:
                    self._release(task.local)
        shrank = True
        if len(batch) == 1:
            self._dispatch(slot, batch[0])
        elif batch:
            self._dispatch_batch(slot, batch)
        if shrank:
            if self._drain_pending and len(queue) < (self.max_queue or 0):
                self._drain_pending = False
                self._loop_call(self._events.emit, "drain")
            self._queue_shrank()

    def _loop_call(self, fn, *args):
        self._calls.append((fn, args))
        self._ws.signal()

    # ------------------------------------------------------------------ the collector thread

    def _collect(self):
        ws = self._ws
        while True:
            seen = ws.seq()
            got = False
            if self._incoming and not self._shutdown and self._broken is None:
                with self._lock:
                    starts = self._take_incoming()
                self._start_workers(starts)
                got = True
            resolved = []
            for slot in list(self._slots):
                if slot.ended:
                    continue
                came, closed = self._drain(slot, resolved)
                got = got or came
                if closed:
                    self._lost(slot, resolved)
            while self._ended:
                slot = self._ended.popleft()
                if not slot.ended:
                    self._drain(slot, resolved)
                    self._lost(slot, resolved)
                got = True
            if resolved:
                _finish(resolved)
            resolved = None
            while self._calls:
                fn, args = self._calls.popleft()
                try:
                    fn(*args)
                except Exception:
                    import traceback
                    traceback.print_exc()
            if got:
                continue
            with self._lock:
                if self._shutdown and not self._slots and not self._starting:
                    return
                timeout = self._retire_idle()
            ws.wait(seen, timeout, sliced=False)

    def _drain(self, slot, resolved):
        """Take every batch of results slot's worker posted; (whether any came, whether its
        port is closed)."""
        msgs = []
        closed = False
        try:
            while True:
                ok, batch = _try_receive(slot.port)
                if not ok:
                    break
                msgs.extend(batch)
        except (PortClosed, ValueError):
            closed = True
        if msgs:
            self._results(slot, msgs, resolved)
        return bool(msgs), closed

    def _results(self, slot, msgs, resolved):
        # (per task only what must be: the counters and the thread backend's key uses are
        # summed over the batch, attributes read once)
        with self._lock:
            inflight = slot.inflight
            run_times = self._run_times.append
            wait_times = self._wait_times.append
            out = resolved.append
            ema = self._ema_run
            done = completed = uses = 0
            run_total = 0.0
            local = None
            for tid, ok, value, t0, run in msgs:
                if tid < 0:   # the initializer failed: nothing more runs
                    self._break(self._rebuild(value), resolved)
                    continue
                task = inflight.popleft() if inflight else None
                if task is None or task.tid != tid:   # (cannot happen: messages keep order)
                    continue
                done += 1
                task.args = task.kwargs = None   # (what a finished future keeps, the GC walks)
                ref = task.local
                if ref is not None:
                    if ref is not local:
                        if local is not None:
                            self._release(local, uses)
                        local, uses = ref, 0
                    uses += 1
                if task.aborted:
                    continue
                completed += 1
                run_total += run
                run_times(run)
                wait = t0 - task.submitted
                wait_times(wait if wait > 0.0 else 0.0)
                ema = run if ema is None else ema * 0.9 + run * 0.1
                if not ok:
                    value = self._rebuild(value)
                out((task, ok, value))
            if local is not None:
                self._release(local, uses)
            slot.done += done
            self._completed += completed
            self._run_total += run_total
            self._ema_run = ema
            if ema is not None:
                self._limit = _LIMIT_TINY if ema < 50e-6 else (
                    _LIMIT_SHORT if ema < 1e-3 else _LIMIT_LONG)
            if not inflight:
                slot.idle_since = time.monotonic()
            if not slot.retiring:
                self._feed(slot)
            if self._shutdown and not self._queue and not slot.retiring and not inflight:
                slot.retiring = True
                self._post_stop(slot)

    def _lost(self, slot, resolved):
        """slot's worker ended (retired, terminated by abort, or died): fail the task it was
        running, queue again the ones it had not started, and replace it if work is waiting."""
        slot.ended = True
        worker = slot.worker
        code = worker.join(5)
        self._ws.unwatch(slot.port, 0)
        slot.port.close()
        with self._lock:
            try:
                self._slots.remove(slot)
            except ValueError:
                pass
            pending = list(slot.inflight)
            ran = slot.running() if pending else 0
            slot.inflight.clear()
            if pending:
                why = worker._error
                why = f": {type(why).__name__}: {why}" if why is not None else ""
                for task in pending[:ran]:   # finished, but their results never came
                    self._release(task.local)
                    if not task.aborted:
                        resolved.append((task, False, WorkerError(
                            "WorkerExit", f"the {self.backend} worker that ran this task "
                            f"ended (exit code {code}) before it sent the result{why}", "")))
                first = pending[ran]
                del pending[:ran + 1]
                self._release(first.local)
                if not first.aborted:
                    resolved.append((first, False, WorkerError(
                        "WorkerExit", f"the {self.backend} worker running this task ended "
                        f"(exit code {code}) before it finished{why}", "")))
                for task in reversed(pending):   # not started: first in line again
                    if task.aborted:
                        self._release(task.local)
                    else:
                        self._queue.appendleft(task)
            need = (self._queue and not self._shutdown) or (
                self._shutdown and self._queue) or (
                not self._shutdown and len(self._slots) + self._starting < self.min_workers)
            start = bool(need) and self._room_for_worker() and self._broken is None
            if start:
                self._starting += 1
            self._space.notify_all()
        if start:
            try:
                self._start_worker(counted=True)
            except BaseException as exc:
                self._break(exc, resolved, lock=True, why="no worker could start:")

    def _break(self, exc, resolved, lock=False, why="a worker's initializer raised"):
        """The pool cannot run tasks (an initializer raised, or no worker starts)."""
        if lock:
            with self._lock:
                return self._break(exc, resolved, why=why)
        if self._broken is None:
            self._broken = f"{why} {type(exc).__name__}: {exc}"
            # what was handed in before, fails with the queue (the flag first: a task handed
            # in after this is its submitter's to take back)
            self._move_incoming(everything=True)
        err = BrokenWorkerPool(self._broken)
        err.__cause__ = exc
        while self._queue:
            task = self._queue.popleft()
            self._release(task.local)
            if task.started or task.set_running_or_notify_cancel():
                resolved.append((task, False, err))
        for slot in self._slots:
            for task in slot.inflight:
                if not task.aborted:
                    task.aborted = True
                    resolved.append((task, False, err))
            if not slot.retiring:
                slot.retiring = True
                self._post_stop(slot)
        self._space.notify_all()

    def _retire_idle(self):
        # (under self._lock) stop workers idle past idle_timeout beyond min_workers; how long
        # until the next may be due (None: nothing to watch)
        if self.idle_timeout is None or self._shutdown:
            return None
        now = time.monotonic()
        due = None
        live = [s for s in self._slots if not s.retiring and not s.ended]
        spare = len(live) - self.min_workers
        for slot in live:
            if spare <= 0:
                break
            if slot.inflight:
                continue
            left = slot.idle_since + self.idle_timeout - now
            if left <= 0:
                slot.retiring = True
                self._post_stop(slot)
                spare -= 1
            elif due is None or left < due:
                due = left
        return due

    # ------------------------------------------------------------------ control

    def abort(self, future):
        """Stop the task of future: a queued one is cancelled; a running one is stopped by
        terminating its worker (a fresh one takes its place) and its future raises
        concurrent.futures.CancelledError.  True if the task was cancelled or stopped."""
        if future.cancel():
            return True
        if not isinstance(future, _Future) or future._rp_pool is not self:
            return False
        task = future
        with self._lock:
            if future.done():
                return False
            owner = None
            for slot in self._slots:
                if task in slot.inflight:
                    owner = slot
                    break
            if owner is None:
                return False
            task.aborted = True
            running = owner.inflight[owner.running()] is task
            if running:   # no task more for a worker on its way out (its port closes)
                owner.retiring = True
        try:
            future.set_exception(_cf.CancelledError("aborted by WorkerPool.abort()"))
        except _cf.InvalidStateError:   # it finished meanwhile
            return False
        if running:   # (one that was not started yet is skipped: its result is dropped)
            owner.worker._stop()
        return True

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Like Executor.map (3.14): results in order, lazily; chunksize items per task;
        buffersize bounds the tasks submitted ahead of the results consumed."""
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and (not isinstance(buffersize, int) or buffersize < 1):
            raise ValueError("buffersize must be None or > 0.")
        deadline = None if timeout is None else time.monotonic() + timeout
        self._check_open()
        ref = self._ref(fn)   # (the thread backend's key stays while map submits)
        local = fn if ref[0] == "l" else None
        try:
            kind = _CALL if chunksize == 1 else _CHUNK
            items = zip(*iterables) if kind == _CALL else _chunks(zip(*iterables), chunksize)
            enqueue = self._enqueue

            def submit(args):
                return enqueue(local, kind, ref, args, None, ())
            # (the tasks go in under one lock per _MAP_GROUP, not one each)
            futures = collections.deque()
            ahead = buffersize
            while ahead is None or ahead > 0:
                group = []
                try:
                    group.extend(itertools.islice(items, _MAP_GROUP if ahead is None else
                                                  min(ahead, _MAP_GROUP)))
                except BaseException:   # (the items before the failing one still run)
                    self._enqueue_many(local, kind, ref, group)
                    raise
                if not group:
                    break
                futures.extend(self._enqueue_many(local, kind, ref, group))
                if ahead is not None:
                    ahead -= len(group)
        finally:
            if local is not None:
                with self._lock:
                    self._release(ref)
        return _map_results(futures, items if buffersize is not None else None, submit,
                            deadline, chunksize > 1)

    def shutdown(self, wait=True, *, cancel_futures=False):
        """No new tasks; queued ones still run unless cancel_futures; with wait, return once
        every task ran and every worker ended."""
        cancelled = []
        with self._lock:
            first = not self._shutdown and self._broken is None
            self._shutdown = True
            starts = 0
            if first:
                # what was handed in before is queued, and runs or is cancelled with the queue
                # (the flag first: a task handed in after this is its submitter's to take back)
                if cancel_futures:
                    self._move_incoming(everything=True)
                else:
                    starts = self._take_incoming(closing=True)
            if cancel_futures:
                while self._queue:
                    task = self._queue.popleft()
                    self._release(task.local)
                    cancelled.append(task)
            if not self._queue:
                for slot in self._slots:
                    if not slot.retiring and not slot.inflight:
                        slot.retiring = True
                        self._post_stop(slot)
            self._space.notify_all()
        for task in cancelled:   # (outside the lock: done callbacks may submit)
            _cf.Future.cancel(task)   # (not _Future.cancel: the task left the queue already)
        self._start_workers(starts)
        self._ws.signal()
        if wait and threading.current_thread() is not self._collector:
            self._collector.join()
        _pools.discard(self)

    def on(self, event, listener):
        """'drain': the queue went below max_queue again after it was full (listeners run on
        the pool's collector thread)."""
        if event != "drain":
            raise ValueError(f"WorkerPool has no event {event!r} (it has 'drain')")
        self._events.on(event, listener)
        return self

    def off(self, event, listener=None):
        self._events.off(event, listener)
        return self

    def once(self, event, listener):
        if event != "drain":
            raise ValueError(f"WorkerPool has no event {event!r} (it has 'drain')")
        self._events.once(event, listener)
        return self

    # ------------------------------------------------------------------ asyncio

    async def submit_async(self, fn, /, *args, **kwargs):
        """Await fn(*args, **kwargs) run in a worker, without a thread per call (a full queue
        is awaited, not blocked on)."""
        self._check_open()
        ref = self._ref(fn)
        local = fn if ref[0] == "l" else None
        try:
            fut = await self._await(local, _CALL, ref, args, kwargs or None, ())
        finally:
            if local is not None:
                with self._lock:
                    self._release(ref)
        return await fut

    async def run_async(self, task, *, transfer=(), name="default"):
        """Await run(task, transfer=..., name=...)."""
        if self.filename is None:
            raise TypeError("run_async() needs a pool made with filename= (a module of "
                            "handlers); use submit_async() for functions")
        self._check_open()
        fut = await self._await(None, _RUN, name, task, None, tuple(transfer or ()))
        return await fut

    async def _await(self, fn, kind, ref, args, kwargs, transfer):
        # the asyncio future of a task queued without blocking the loop: a full queue is
        # awaited (woken when it shrinks)
        import asyncio
        loop = asyncio.get_running_loop()
        while True:
            try:
                fut = self._enqueue(fn, kind, ref, args, kwargs, transfer, wait=False)
                break
            except Full:
                waiter = loop.create_future()
                with self._lock:
                    self._async_space.append((loop, waiter))
                    full = self.max_queue is not None and len(self._queue) >= self.max_queue
                if full:
                    try:
                        await asyncio.wait_for(asyncio.shield(waiter), 0.5)
                    except asyncio.TimeoutError:
                        pass
        return asyncio.wrap_future(fut)

    # ------------------------------------------------------------------ statistics

    @property
    def queue_size(self):
        """Tasks waiting for a worker."""
        return len(self._queue) + len(self._incoming)

    @property
    def needs_drain(self):
        """True while the queue is full (max_queue tasks wait): stop submitting until 'drain'."""
        return self.max_queue is not None and len(self._queue) >= self.max_queue

    @property
    def completed(self):
        """Tasks that finished (returned or raised)."""
        return self._completed

    @property
    def idle_workers(self):
        """Workers with no task."""
        with self._lock:
            return sum(1 for s in self._slots if not s.inflight and not s.retiring)

    @property
    def workers(self):
        """How many workers the pool has now."""
        with self._lock:
            return sum(1 for s in self._slots if not s.ended)

    @property
    def utilization(self):
        """Time spent running tasks over the time the pool has existed times max_workers
        (0 to 1), as piscina's."""
        elapsed = time.perf_counter() - self._created
        return min(1.0, self._run_total / (elapsed * self.max_workers)) if elapsed > 0 else 0.0

    @property
    def run_time(self):
        """Percentiles of the tasks' run times in seconds over the last STATS_WINDOW tasks:
        ``pool.run_time.p50`` or ``["p50"]``; also p75, p90, p99, min, max, mean, count."""
        with self._lock:   # (the collector appends under it: a free-threaded build would
            data = list(self._run_times)   # raise "deque mutated during iteration" otherwise)
        return _percentiles(data)

    @property
    def wait_time(self):
        """Percentiles of the time tasks waited from submit to start, in seconds."""
        with self._lock:
            data = list(self._wait_times)
        return _percentiles(data)

    @property
    def stats(self):
        return {"completed": self.completed, "queue_size": self.queue_size,
                "idle_workers": self.idle_workers, "workers": self.workers,
                "utilization": self.utilization, "run_time": self.run_time,
                "wait_time": self.wait_time}

    def __repr__(self):
        name = f" {self.name!r}" if self.name else ""
        state = "shut down" if self._shutdown else f"{self.workers}/{self.max_workers} workers"
        return f"<ringport.WorkerPool{name} {self.backend} {state}>"


def _ignore(*args):
    pass


def _hashable(fn):
    try:
        hash(fn)
        return True
    except TypeError:
        return False


def _resolve(fut):
    if not fut.done():
        fut.set_result(None)


def _chunks(items, size):
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield chunk


def _map_results(futures, rest, submit, deadline, chunked):
    try:
        while futures:
            fut = futures.popleft()
            if rest is not None:
                for args in itertools.islice(rest, 1):
                    futures.append(submit(args))
            if deadline is None:
                value = fut.result()
            else:
                value = fut.result(max(0.0, deadline - time.monotonic()))
            if chunked:
                yield from value
            else:
                yield value
    finally:
        for fut in futures:
            fut.cancel()


class Percentiles(dict):
    """Run- or wait-time figures in seconds: a dict (``["p50"]``) whose keys are also
    attributes (``.p50``), as piscina's histograms: p50, p75, p90, p99, min, max, mean, count."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _percentiles(samples):
    data = sorted(samples)
    n = len(data)
    if not n:
        return Percentiles(p50=0.0, p75=0.0, p90=0.0, p99=0.0, min=0.0, max=0.0, mean=0.0,
                           count=0)
    pick = lambda q: data[min(n - 1, int(q * n))]   # noqa: E731
    return Percentiles(p50=pick(0.5), p75=pick(0.75), p90=pick(0.9), p99=pick(0.99),
                       min=data[0], max=data[-1], mean=sum(data) / n, count=n)


# ---------------------------------------------------------------------------- interpreter exit

_pools = weakref.WeakSet()


def _at_exit():
    # as concurrent.futures: the program ends after the tasks it submitted
    for pool in list(_pools):
        try:
            pool.shutdown(wait=True)
        except Exception:
            pass


threading._register_atexit(_at_exit)


# ---------------------------------------------------------------------------- in a worker


def _serve():
    """A pool worker: its configuration, its initializer, then tasks until None."""
    import ringport
    port = ringport.parent_port
    recv = port.receive
    post = port.post_message
    cfg = recv()
    backend = cfg["backend"]
    mark = ringport.Int32Array(cfg["mark"] if cfg["mark"] is not None
                               else ringport.SharedArrayBuffer(4))
    store = ringport.atomics.store
    perf = time.perf_counter
    cache = {}

    def resolve(ref):
        fn = cache.get(ref)
        if fn is None:
            kind = ref[0]
            if kind == "o":
                return ref[1]
            if len(cache) >= _CACHE:
                cache.clear()
            if kind == "l":   # (keys are never reused)
                fn = _local_fns[ref[1]]
            else:
                import importlib
                fn = importlib.import_module(ref[1])
                for part in ref[2].split("."):
                    fn = getattr(fn, part)
            cache[ref] = fn
        return fn

    handlers = None
    if cfg["filename"] is not None:
        handlers = _load_handlers(cfg["filename"])
    init = cfg["init"]
    if init is not None:
        try:
            resolve(init[0])(*init[1])
        except WorkerTerminated:
            raise
        except BaseException as exc:
            post([(-1, False, error_report(exc, backend, ("init", id(exc))), 0.0, 0.0)])
            return
    del cfg, init
    done = []          # results not posted yet: posted together while more tasks wait
    first = 0.0
    last = None        # the function of the task before
    started = 0        # tasks started (mod 2**31): written to mark when results are held
    while True:
        try:
            if done:
                got, msg = _try_receive(port)
                if not got:
                    _post_results(post, done, backend)
                    done = []
                    msg = recv()
            else:
                msg = recv()
        except PortClosed:
            return
        if msg is None:
            if done:
                _post_results(post, done, backend)
            return
        for task in (msg if type(msg) is list else (msg,)):
            kind, tid, ref, args, kwargs = task
            task = None
            started = (started + 1) & _MARK_MASK
            if done:
                if ref != last:
                    _post_results(post, done, backend)
                    done = []
                else:   # (if this task kills the worker, the pool knows which one ran)
                    store(mark, 0, started)
            last = ref
            t0 = perf()
            try:
                if kind == _CALL:
                    value = resolve(ref)(*args, **kwargs) if kwargs else resolve(ref)(*args)
                elif kind == _CHUNK:
                    fn = resolve(ref)
                    value = [fn(*a) for a in args]
                else:
                    fn = getattr(handlers, ref, None)
                    if fn is None:
                        raise AttributeError(f"the pool's module has no handler {ref!r}")
                    value = fn(args)
                ok = True
            except WorkerTerminated:
                raise
            except BaseException as exc:
                ok = False
                value = error_report(exc, backend, ("task", tid, id(exc)))
            args = kwargs = None
            t1 = perf()
            if not done:
                first = t1
            done.append((tid, ok, value, t0, t1 - t0))
            value = None
            if len(done) >= _BATCH or t1 - first > _BATCH_S or t1 - t0 > _SHORT_S or not ok:
                _post_results(post, done, backend)
                done = []
        msg = None


def _post_results(post, done, backend):
    try:
        post(done)
    except (WorkerTerminated, PortClosed):
        raise
    except BaseException:   # a result the codec cannot carry: post them one by one
        for tid, ok, value, t0, run in done:
            try:
                post([(tid, ok, value, t0, run)])
            except (WorkerTerminated, PortClosed):
                raise
            except BaseException as exc:
                post([(tid, False, error_report(exc, backend, ("task", tid, id(exc))), t0,
                       run)])


def _load_handlers(path):
    import importlib.util
    name = "ringport_pool_handlers_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, os.path.dirname(path))
    spec.loader.exec_module(module)
    return module
