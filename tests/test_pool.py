"""WorkerPool: a concurrent.futures Executor over ringport workers, on every backend."""
import asyncio
import concurrent.futures as cf
import contextlib
import os
import sys
import threading
import time

import pytest

import poolfuncs
import ringport
from conftest import wait_until
from ringport import Full, WorkerError, WorkerPool

SHUTDOWN_TIMEOUT = 60


@pytest.fixture
def make_pool(backend):
    """make_pool(**kw): a WorkerPool on the test's backend, shut down (cancelling what is still
    queued, with a timeout) at teardown; a pool that does not end fails the test."""
    pools = []

    def make(**kw):
        kw.setdefault("backend", backend)
        kw.setdefault("max_workers", 2)
        pool = WorkerPool(**kw)
        pools.append(pool)
        return pool

    yield make
    stuck = []
    for pool in pools:
        t = threading.Thread(target=pool.shutdown, kwargs={"cancel_futures": True}, daemon=True)
        t.start()
        t.join(SHUTDOWN_TIMEOUT)
        if t.is_alive():
            stuck.append(pool)
    assert not stuck, f"pools did not shut down: {stuck}"


def test_is_an_executor_with_results_and_kwargs(make_pool, backend):
    pool = make_pool()
    assert isinstance(pool, cf.Executor)
    assert pool.backend == backend
    fut = pool.submit(poolfuncs.add, 2, b=40)
    assert isinstance(fut, cf.Future)
    assert fut.result(30) == 42
    assert pool.submit(pow, 2, 10).result(30) == 1024   # a builtin


def test_map_keeps_order(make_pool):
    pool = make_pool()
    assert list(pool.map(poolfuncs.square, range(200))) == [i * i for i in range(200)]
    assert list(pool.map(poolfuncs.add, range(50), range(50), chunksize=7)) == \
        [2 * i for i in range(50)]
    assert list(pool.map(poolfuncs.square, [])) == []


def test_map_buffersize_is_lazy(make_pool):
    pool = make_pool()
    consumed = []

    def items():
        for i in range(1000):
            consumed.append(i)
            yield i

    it = pool.map(poolfuncs.square, items(), buffersize=4)
    assert next(it) == 0
    assert len(consumed) <= 6
    assert list(it) == [i * i for i in range(1, 1000)]
    with pytest.raises(ValueError):
        pool.map(poolfuncs.square, range(3), buffersize=0)
    with pytest.raises(ValueError):
        pool.map(poolfuncs.square, range(3), chunksize=0)


def test_map_timeout(make_pool):
    pool = make_pool(max_workers=1)
    it = pool.map(poolfuncs.sleep_then, [2.0], [1], timeout=0.05)
    with pytest.raises(TimeoutError):
        next(it)


def test_exceptions_keep_their_type(make_pool):
    pool = make_pool()
    with pytest.raises(poolfuncs.TaskFailed, match="boom"):
        pool.submit(poolfuncs.fail, "boom").result(30)
    with pytest.raises(ZeroDivisionError):
        pool.submit(divmod, 1, 0).result(30)
    with pytest.raises(poolfuncs.TaskFailed):
        list(pool.map(poolfuncs.fail, ["x"]))
    # the worker that raised still works
    assert pool.submit(poolfuncs.square, 3).result(30) == 9
    exc = pool.submit(poolfuncs.fail, "y").exception(30)
    assert isinstance(exc, poolfuncs.TaskFailed)


def test_allow_pickle_false_gives_worker_error(make_pool):
    pool = make_pool(allow_pickle=False)
    # the thread backend hands the exception object itself over: nothing is unpickled
    expected = poolfuncs.TaskFailed if pool.backend == "thread" else WorkerError
    with pytest.raises(expected) as info:
        pool.submit(poolfuncs.fail, "no unpickling").result(30)
    if expected is WorkerError:
        assert info.value.type_name == "TaskFailed"


def test_unclonable_result_fails_that_task_only(make_pool):
    pool = make_pool()
    with pytest.raises(Exception):
        pool.submit(poolfuncs.unclonable).result(30)
    assert pool.submit(poolfuncs.square, 5).result(30) == 25


def test_unclonable_argument_fails_its_future(make_pool):
    pool = make_pool()
    fut = None
    try:
        fut = pool.submit(poolfuncs.square, threading.Lock())
    except ringport.DataCloneError:
        pass
    if fut is not None:
        with pytest.raises((ringport.DataCloneError, TypeError)):
            fut.result(30)
    assert pool.submit(poolfuncs.square, 6).result(30) == 36


def _main_like():
    return 1


def test_functions_outside_importable_modules(make_pool, backend):
    pool = make_pool()
    local = lambda x: x + 1   # noqa: E731
    if backend == "thread":
        assert pool.submit(local, 1).result(30) == 2
        captured = []
        assert pool.submit(lambda: captured.append(1) or len(captured)).result(30) == 1
    else:
        with pytest.raises(ringport.DataCloneError, match="importable"):
            pool.submit(local, 1)
        _main_like.__module__ = "__main__"
        try:
            with pytest.raises(TypeError, match="importable"):
                pool.submit(_main_like)
        finally:
            _main_like.__module__ = __name__
    with pytest.raises(TypeError):
        pool.submit(42)


def test_cancel_a_queued_task(make_pool):
    pool = make_pool(max_workers=1)
    sab = ringport.SharedArrayBuffer(4)
    gate = pool.submit(poolfuncs.wait_sab, sab, 30)
    queued = [pool.submit(poolfuncs.square, i) for i in range(5)]
    wait_until(lambda: gate.running(), what="the gate task running")
    wait_until(lambda: pool.queue_size + sum(f.running() for f in queued) >= 5)
    victim = next(f for f in queued if not f.running())
    assert victim.cancel()
    assert victim.cancelled()
    ringport.atomics.store(ringport.Int32Array(sab), 0, 1)
    ringport.atomics.notify(ringport.Int32Array(sab), 0)
    assert gate.result(30) == 1
    for i, f in enumerate(queued):
        if f is not victim:
            assert f.result(30) == i * i
    with pytest.raises(cf.CancelledError):
        victim.result()


def test_abort_a_running_task_replaces_its_worker(make_pool, backend):
    if backend == "subinterpreter" and sys.version_info < (3, 13):
        pytest.skip("no subinterpreters")
    pool = make_pool(max_workers=1)
    running = pool.submit(poolfuncs.spin_forever)
    wait_until(running.running, what="the task running")
    first = pool.submit(poolfuncs.who)
    assert pool.abort(running)
    with pytest.raises(cf.CancelledError):
        running.result(30)
    # the task queued behind it runs on a fresh worker
    assert first.result(60)
    assert pool.submit(poolfuncs.square, 7).result(60) == 49
    assert not pool.abort(first)   # done already


def test_abort_a_queued_task_cancels_it(make_pool):
    pool = make_pool(max_workers=1)
    blocker = pool.submit(poolfuncs.sleep_then, 0.3, "ok")
    queued = [pool.submit(poolfuncs.square, 3) for _ in range(40)]
    last = queued[-1]
    assert pool.abort(last)
    with pytest.raises(cf.CancelledError):
        last.result(30)
    assert blocker.result(30) == "ok"
    assert all(f.result(30) == 9 for f in queued[:-1])


def test_max_queue_backpressure(make_pool):
    pool = make_pool(max_workers=1, max_queue=2, submit_timeout=0)
    sab = ringport.SharedArrayBuffer(4)
    drained = threading.Event()
    pool.on("drain", drained.set)
    gate = pool.submit(poolfuncs.wait_sab, sab, 30)
    wait_until(gate.running)
    # the worker may prefetch: fill until the queue itself is full
    futs = []
    with pytest.raises(Full):
        for i in range(50):
            futs.append(pool.submit(poolfuncs.square, i))
    assert pool.queue_size == 2
    assert pool.needs_drain
    assert len(futs) <= 2 + 16
    ringport.atomics.store(ringport.Int32Array(sab), 0, 1)
    ringport.atomics.notify(ringport.Int32Array(sab), 0)
    assert [f.result(30) for f in futs] == [i * i for i in range(len(futs))]
    assert drained.wait(30)
    assert not pool.needs_drain


def test_blocking_submit_times_out(make_pool):
    pool = make_pool(max_workers=1, max_queue=1, submit_timeout=0.2)
    sab = ringport.SharedArrayBuffer(4)
    gate = pool.submit(poolfuncs.wait_sab, sab, 30)
    wait_until(gate.running)
    t0 = time.monotonic()
    with pytest.raises(Full):
        for i in range(50):
            pool.submit(poolfuncs.square, i)
    assert time.monotonic() - t0 >= 0.15
    ringport.atomics.store(ringport.Int32Array(sab), 0, 1)
    ringport.atomics.notify(ringport.Int32Array(sab), 0)
    assert gate.result(30) == 1


def test_blocked_submit_goes_on_when_the_queue_drains(make_pool):
    pool = make_pool(max_workers=1, max_queue=1)
    futs = [pool.submit(poolfuncs.sleep_then, 0.02, i) for i in range(8)]
    assert [f.result(30) for f in futs] == list(range(8))


def test_idle_timeout_shrinks_the_pool(make_pool):
    pool = make_pool(max_workers=2, min_workers=1, idle_timeout=0.2)
    futs = [pool.submit(poolfuncs.sleep_then, 0.2, i) for i in range(2)]
    assert [f.result(30) for f in futs] == [0, 1]
    assert pool.workers == 2
    wait_until(lambda: pool.workers == 1, timeout=30, what="the idle worker leaving")
    assert pool.submit(poolfuncs.square, 4).result(30) == 16


def test_min_workers_start_at_once(make_pool):
    pool = make_pool(max_workers=2, min_workers=2)
    assert pool.workers == 2
    assert pool.idle_workers == 2


def test_max_tasks_per_worker_recycles(make_pool):
    pool = make_pool(max_workers=1, max_tasks_per_worker=2)
    ids = [pool.submit(poolfuncs.who).result(60) for _ in range(6)]
    assert len(set(ids)) == 3
    assert list(pool.map(poolfuncs.square, range(6))) == [i * i for i in range(6)]


def test_a_killed_process_worker_fails_one_task(make_pool, backend):
    if backend != "process":
        pytest.skip("only a process worker can be killed on its own")
    pool = make_pool(max_workers=2)
    doomed = pool.submit(poolfuncs.kill_self)
    others = [pool.submit(poolfuncs.sleep_then, 0.01, i) for i in range(20)]
    with pytest.raises(WorkerError, match="ended"):
        doomed.result(60)
    assert [f.result(60) for f in others] == list(range(20))
    assert pool.submit(poolfuncs.square, 8).result(60) == 64


def test_a_task_posted_to_a_worker_already_gone_is_not_failed_with_port_closed(make_pool):
    # a worker whose port closed before the collector saw it end (the stress test hit this
    # with SIGKILLed process workers): tasks posted to it go the way of its in-flight tasks
    # (requeued, or failed with WorkerError), never fail with PortClosed
    pool = make_pool(max_workers=1)
    assert pool.submit(poolfuncs.square, 3).result(60) == 9
    pool._slots[0].port.close()
    futs = [pool.submit(poolfuncs.square, i) for i in range(10)]
    for i, f in enumerate(futs):
        try:
            assert f.result(60) == i * i
        except WorkerError:
            pass
    assert pool.submit(poolfuncs.square, 8).result(60) == 64


def test_shutdown_waits_for_queued_tasks(make_pool):
    pool = make_pool(max_workers=1)
    futs = [pool.submit(poolfuncs.sleep_then, 0.01, i) for i in range(10)]
    pool.shutdown(wait=True)
    assert all(f.done() for f in futs)
    assert [f.result() for f in futs] == list(range(10))
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(poolfuncs.square, 1)
    assert pool.workers == 0


def test_shutdown_cancel_futures(make_pool):
    pool = make_pool(max_workers=1)
    first = pool.submit(poolfuncs.sleep_then, 0.2, "first")
    wait_until(first.running)
    rest = [pool.submit(poolfuncs.square, i) for i in range(30)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert first.result() == "first"
    assert any(f.cancelled() for f in rest)
    for f in rest:
        assert f.done()


def test_context_manager_and_wait_as_completed(make_pool):
    with make_pool() as pool:
        futs = [pool.submit(poolfuncs.sleep_then, 0.01 * (i % 3), i) for i in range(12)]
        done, not_done = cf.wait(futs, timeout=30)
        assert not not_done
        assert sorted(f.result() for f in cf.as_completed(futs, timeout=30)) == list(range(12))
        first = cf.wait([pool.submit(poolfuncs.sleep_then, 0.01, "x")],
                        return_when=cf.FIRST_COMPLETED, timeout=30)[0]
        assert {f.result() for f in first} == {"x"}
    assert pool.workers == 0


def test_many_clients_submit_at_once(make_pool):
    pool = make_pool()
    results = {}

    def client(k):
        results[k] = [pool.submit(poolfuncs.add, k, i).result(60) for i in range(100)]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {k: [k + i for i in range(100)] for k in range(4)}


def test_done_callbacks(make_pool):
    pool = make_pool()
    seen = []
    ev = threading.Event()
    fut = pool.submit(poolfuncs.square, 9)
    fut.add_done_callback(lambda f: (seen.append(f.result()), ev.set()))
    assert ev.wait(30)
    assert seen == [81]


def test_initializer_and_worker_data(make_pool):
    pool = make_pool(initializer=poolfuncs.init, initargs=("ready",), worker_data={"k": [1, 2]})
    assert pool.submit(poolfuncs.read_init).result(60) == "ready"
    assert pool.submit(poolfuncs.get_worker_data).result(60) == {"k": [1, 2]}


def test_failing_initializer_breaks_the_pool(make_pool):
    pool = make_pool(initializer=poolfuncs.init_fail)
    fut = pool.submit(poolfuncs.square, 2)
    with pytest.raises(ringport.BrokenWorkerPool):
        fut.result(60)
    assert isinstance(ringport.BrokenWorkerPool(), cf.BrokenExecutor)
    with pytest.raises(ringport.BrokenWorkerPool):
        pool.submit(poolfuncs.square, 2)


def test_nested_pool_in_a_task(make_pool):
    pool = make_pool()
    assert pool.submit(poolfuncs.nested_map, 10).result(120) == [i * i for i in range(10)]


def test_shared_array_buffer_is_shared_not_copied(make_pool):
    pool = make_pool()
    sab = ringport.SharedArrayBuffer(8)
    futs = [pool.submit(poolfuncs.sab_add, sab, 1, 500) for _ in range(4)]
    assert all(f.result(60) for f in futs)
    assert ringport.Int32Array(sab)[1] == 2000


def test_numpy_arguments_and_results(make_pool, backend):
    np = pytest.importorskip("numpy")
    if backend == "subinterpreter":
        pytest.skip("numpy does not load in subinterpreters")
    pool = make_pool()
    arr = np.arange(1000, dtype=np.float64)
    total, doubled = pool.submit(poolfuncs.array_sum, arr).result(60)
    assert total == float(arr.sum())
    assert isinstance(doubled, np.ndarray)
    np.testing.assert_array_equal(doubled, arr * 2)


def test_asyncio(make_pool):
    pool = make_pool()

    async def main():
        results = await asyncio.gather(*(pool.submit_async(poolfuncs.square, i)
                                          for i in range(50)))
        with pytest.raises(poolfuncs.TaskFailed):
            await pool.submit_async(poolfuncs.fail, "async")
        return results

    assert asyncio.run(main()) == [i * i for i in range(50)]


def test_asyncio_waits_for_room_in_a_full_queue(make_pool):
    pool = make_pool(max_workers=1, max_queue=1)

    async def main():
        return await asyncio.gather(*(pool.submit_async(poolfuncs.sleep_then, 0.005, i)
                                      for i in range(10)))

    assert asyncio.run(main()) == list(range(10))


HANDLERS = """
import ringport

def default(task):
    return {"got": task}

def double(task):
    return task * 2

def use_port(task):
    port = task["port"]
    port.post_message("hello from the handler")
    port.close()
    return "posted"
"""


def test_filename_handlers(make_pool, tmp_path):
    path = tmp_path / "handlers.py"
    path.write_text(HANDLERS)
    pool = make_pool(filename=str(path))
    assert pool.run({"a": 1}).result(60) == {"got": {"a": 1}}
    assert pool.run(21, name="double").result(60) == 42
    ch = ringport.MessageChannel()
    assert pool.run({"port": ch.port2}, transfer=[ch.port2], name="use_port").result(60) == \
        "posted"
    assert ch.port1.receive(30) == "hello from the handler"
    with pytest.raises(AttributeError):
        pool.run(1, name="missing").result(60)

    async def main():
        return await pool.run_async(5, name="double")

    assert asyncio.run(main()) == 10


def test_run_needs_filename(make_pool):
    pool = make_pool()
    with pytest.raises(TypeError, match="filename"):
        pool.run(1)


def test_statistics(make_pool):
    pool = make_pool()
    list(pool.map(poolfuncs.sleep_then, [0.002] * 20, range(20)))
    assert pool.completed == 20
    assert 0 < pool.utilization <= 1
    rt = pool.run_time
    assert 0.0015 < rt["p50"] <= rt["p90"] <= rt["p99"] <= rt["max"]
    assert rt.p50 == rt["p50"] and rt.count == 20 and rt.min <= rt.mean <= rt.max
    assert pool.wait_time["p50"] >= 0
    assert pool.queue_size == 0
    wait_until(lambda: pool.idle_workers == pool.workers)
    stats = pool.stats
    assert stats["completed"] == 20 and "run_time" in stats


def test_bad_arguments():
    with pytest.raises(ValueError):
        WorkerPool(max_workers=0)
    with pytest.raises(ValueError):
        WorkerPool(max_workers=2, min_workers=3)
    with pytest.raises(ValueError):
        WorkerPool(backend="nope")
    with pytest.raises(TypeError):
        WorkerPool(initializer=3)
    with pytest.raises(FileNotFoundError):
        WorkerPool(filename="/nonexistent/handlers.py")
    with pytest.raises(ValueError):
        WorkerPool(max_queue=-1)
    pool = WorkerPool(max_workers=1, backend="thread")
    with pytest.raises(ValueError):
        pool.on("nope", print)
    pool.shutdown()


def test_default_max_workers_is_the_usable_cpus():
    pool = WorkerPool(backend="thread")
    try:
        expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            os.cpu_count()
        if hasattr(os, "process_cpu_count"):
            expected = os.process_cpu_count()
        assert pool.max_workers == expected
    finally:
        pool.shutdown()


def test_unreferenced_pool_lets_the_program_exit(tmp_path):
    """A pool the program never shut down: the program still ends, after its tasks (as
    concurrent.futures' executors)."""
    import subprocess
    script = tmp_path / "prog.py"
    script.write_text(
        "import sys\nsys.path.insert(0, %r)\nimport ringport, poolfuncs\n"
        "pool = ringport.WorkerPool(max_workers=2)\n"
        "f = pool.submit(poolfuncs.sleep_then, 0.2, 'late')\n"
        "f.add_done_callback(lambda f: print(f.result(), flush=True))\n"
        "print('main done', flush=True)\n" % os.path.dirname(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["main", "done", "late"]


def test_a_worker_that_cannot_start_breaks_the_pool_not_hangs(monkeypatch, backend):
    import ringport._worker

    def no_worker(*args, **kwargs):
        raise OSError("no more workers here")

    monkeypatch.setattr(ringport._worker, "Worker", no_worker)
    pool = WorkerPool(max_workers=1, backend=backend)
    try:
        fut = pool.submit(poolfuncs.square, 2)
        with pytest.raises(ringport.BrokenWorkerPool, match="no more workers"):
            fut.result(30)
    finally:
        pool.shutdown()


def test_done_callbacks_may_submit(make_pool):
    """Done callbacks never run under the pool's lock: one that submits does not deadlock, also
    for a future the pool itself fails (an argument the codec cannot carry) or cancels
    (shutdown with cancel_futures)."""
    pool = make_pool(max_workers=1)
    chained = []

    def again(f):
        chained.append(pool.submit(poolfuncs.square, len(chained) + 2))

    pool.submit(poolfuncs.square, 1).add_done_callback(again)
    bad = pool.submit(poolfuncs.square, threading.Lock())
    bad.add_done_callback(again)
    with pytest.raises(TypeError):
        bad.result(30)
    wait_until(lambda: len(chained) == 2, timeout=30)
    assert sorted(f.result(30) for f in chained) == [4, 9]
    sab = ringport.SharedArrayBuffer(4)
    gate = pool.submit(poolfuncs.wait_sab, sab, 30)
    wait_until(gate.running)
    queued = [pool.submit(poolfuncs.square, 5) for _ in range(40)][-1]   # (some prefetched)
    late = []
    queued.add_done_callback(lambda f: late.append(pool.queue_size))
    t = threading.Thread(target=pool.shutdown, kwargs={"cancel_futures": True})
    t.start()
    wait_until(queued.cancelled)
    ringport.atomics.store(ringport.Int32Array(sab), 0, 1)
    ringport.atomics.notify(ringport.Int32Array(sab), 0)
    t.join(30)
    assert not t.is_alive()
    assert late == [0]


@pytest.mark.stress
@pytest.mark.parametrize("max_queue", [64, None])
def test_stress_submit_cancel_abort_from_four_clients(make_pool, backend, max_queue):
    """Four threads submit 2000 tasks each while a fifth cancels and aborts at random (and, on
    the process backend, kills workers): every future ends, every result that came is right,
    and the pool still works.  Without max_queue, submits that find the pool's lock taken hand
    their tasks in (_hand_in) instead of waiting for it."""
    import random
    pool = make_pool(max_workers=2, max_queue=max_queue)
    futures = [[] for _ in range(4)]
    stop = threading.Event()

    def client(k):
        rnd = random.Random(k)
        for i in range(2000):
            if rnd.random() < 0.01:
                futures[k].append((None, pool.submit(poolfuncs.sleep_then, 0.002, i)))
            else:
                futures[k].append((k * 10_000 + i, pool.submit(poolfuncs.add, k * 10_000, i)))

    def chaos():
        rnd = random.Random(99)
        while not stop.is_set():
            k = rnd.randrange(4)
            if futures[k]:
                _, fut = futures[k][rnd.randrange(len(futures[k]))]
                roll = rnd.random()
                if roll < 0.05:
                    pool.abort(fut)
                elif roll < 0.5:
                    fut.cancel()
            if backend == "process" and rnd.random() < 0.01:
                import signal
                for slot in list(pool._slots):
                    if slot.worker.pid:
                        try:
                            os.kill(slot.worker.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        break
            time.sleep(0.001)

    chaos_thread = threading.Thread(target=chaos)
    chaos_thread.start()
    clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(300)
    stop.set()
    chaos_thread.join(30)
    outcomes = {"ok": 0, "cancelled": 0, "worker": 0}
    for lst in futures:
        for expected, fut in lst:
            try:
                value = fut.result(120)
            except cf.CancelledError:
                outcomes["cancelled"] += 1
                continue
            except WorkerError:
                outcomes["worker"] += 1
                continue
            if expected is not None:
                assert value == expected
            outcomes["ok"] += 1
    print(outcomes)
    assert sum(outcomes.values()) == 8000
    assert outcomes["ok"] > 4000, outcomes
    assert list(pool.map(poolfuncs.square, range(100))) == [i * i for i in range(100)]


@pytest.mark.parametrize("backend", ["thread"])
def test_abort_sends_no_task_to_the_worker_it_stops(make_pool):
    # Regression (found by ringport.joblib, which aborts and then reuses the pool): a task
    # submitted right after abort() went to the worker being stopped and failed with
    # PortClosed once that worker's port closed.  The stopped task here sits in a C wait,
    # so its worker cannot end before release is set.
    pool = make_pool(max_workers=1)
    started, release = threading.Event(), threading.Event()

    def blocked():
        started.set()
        release.wait(30)

    running = pool.submit(blocked)
    try:
        assert started.wait(30)
        assert pool.abort(running)
        after = pool.submit(abs, -7)
        assert pool.queue_size == 1      # it waits for the fresh worker
    finally:
        release.set()
    assert after.result(60) == 7


def test_a_result_never_waits_behind_the_next_task(make_pool):
    """A worker that holds several tasks posts each one's result when it is done, not after
    the task behind it (a failure after 0.2 s, then a task that blocks: the failure is seen at
    once).  Its fellow with a fast result followed by a blocking task, likewise."""
    pool = make_pool(max_workers=1)
    sab = ringport.SharedArrayBuffer(4)
    pool.submit(poolfuncs.square, 1).result(60)   # (a started worker that prefetches)
    fail = pool.submit(poolfuncs.sleep_then_fail, 0.2)
    fast = pool.submit(poolfuncs.square, 3)
    blocked = [pool.submit(poolfuncs.wait_sab, sab, 30) for _ in range(3)]
    try:
        with pytest.raises(poolfuncs.TaskFailed):
            fail.result(10)
        assert fast.result(10) == 9
        assert not any(f.done() for f in blocked)
    finally:
        ringport.atomics.store(ringport.Int32Array(sab), 0, 1)
        ringport.atomics.notify(ringport.Int32Array(sab), 0)
    assert [f.result(30) for f in blocked] == [1, 1, 1]


def test_a_deep_queue_of_tiny_tasks_goes_out_in_bigger_messages(make_pool):
    """Tiny tasks behind a deep queue go to a worker up to _LIMIT_DEEP in one message (a fair
    share of the queue), not _LIMIT_TINY; results stay in order and complete."""
    from ringport import _pool
    pool = make_pool(max_workers=1)
    assert list(pool.map(poolfuncs.square, range(200))) == [i * i for i in range(200)]
    assert pool._limit == _pool._LIMIT_TINY   # (no-ops measured as tiny)
    sizes = []
    real = pool._dispatch_batch

    def record(slot, batch):
        sizes.append(len(batch))
        return real(slot, batch)

    pool._dispatch_batch = record
    sab = ringport.SharedArrayBuffer(4)
    gate = pool.submit(poolfuncs.wait_sab, sab, 30)   # holds the worker: the rest queue up
    futs = [pool.submit(poolfuncs.square, i) for i in range(1000)]
    ringport.atomics.store(ringport.Int32Array(sab), 0, 1)
    ringport.atomics.notify(ringport.Int32Array(sab), 0)
    assert gate.result(60) == 1
    assert [f.result(60) for f in futs] == [i * i for i in range(1000)]
    assert max(sizes) > _pool._LIMIT_TINY
    assert max(sizes) <= _pool._LIMIT_DEEP


def test_a_killed_process_worker_with_a_deep_queue_fails_one_task(make_pool, backend):
    """A process worker killed while it holds a batch of queued tasks: the task it ran fails,
    the ones it had not started run on its replacement."""
    if backend != "process":
        pytest.skip("only a process worker can be killed on its own")
    pool = make_pool(max_workers=1)
    assert list(pool.map(poolfuncs.square, range(200))) == [i * i for i in range(200)]
    sab = ringport.SharedArrayBuffer(4)
    gate = pool.submit(poolfuncs.wait_sab, sab, 30)
    before = [pool.submit(poolfuncs.square, i) for i in range(100)]
    doomed = pool.submit(poolfuncs.kill_self)
    after = [pool.submit(poolfuncs.square, i) for i in range(100)]
    ringport.atomics.store(ringport.Int32Array(sab), 0, 1)
    ringport.atomics.notify(ringport.Int32Array(sab), 0)
    assert gate.result(60) == 1
    assert [f.result(60) for f in before] == [i * i for i in range(100)]
    with pytest.raises(WorkerError, match="ended"):
        doomed.result(60)
    assert [f.result(60) for f in after] == [i * i for i in range(100)]


def test_a_killed_process_worker_fails_the_task_it_ran_not_one_it_finished(make_pool, backend):
    """A process worker posts the results of short tasks of one function together.  Killed
    while it holds finished results it has not posted, it must not blame one of those tasks
    for its death, nor have them run again: the killer fails as the task that was running,
    the finished ones whose results were lost fail saying so, every other task succeeds and
    every task runs once."""
    if backend != "process":
        pytest.skip("only a process worker can be killed on its own")
    pool = make_pool(max_workers=1)
    assert list(pool.map(poolfuncs.square, range(200))) == [i * i for i in range(200)]
    gate, runs = ringport.SharedArrayBuffer(4), ringport.SharedArrayBuffer(4 * 300)
    held = pool.submit(poolfuncs.wait_sab, gate, 30)
    futs = [pool.submit(poolfuncs.count_kill_at, runs, i, 150) for i in range(300)]
    ringport.atomics.store(ringport.Int32Array(gate), 0, 1)
    ringport.atomics.notify(ringport.Int32Array(gate), 0)
    assert held.result(60) == 1
    lost = []
    for i, f in enumerate(futs):
        if i == 150:
            with pytest.raises(WorkerError, match="running this task ended"):
                f.result(60)
            continue
        try:
            assert f.result(60) == i
        except WorkerError as e:
            assert "before it sent the result" in str(e)
            lost.append(i)
    assert all(i < 150 for i in lost), lost
    assert list(ringport.Int32Array(runs)) == [1] * 300


def test_map_whose_iterable_fails_still_runs_the_items_before(make_pool):
    """map() submits its tasks in groups under one lock; an iterable that raises part-way
    through a group still gets the items before the failure run (as Executor.map, which
    submits item by item), each once, and the error comes out of map()."""
    import itertools
    pool = make_pool()
    runs = ringport.SharedArrayBuffer(4 * 600)

    def indices():
        yield from range(300)
        raise KeyError("the iterable failed")

    with pytest.raises(KeyError, match="the iterable failed"):
        pool.map(poolfuncs.count_kill_at, itertools.repeat(runs), indices(),
                 itertools.repeat(-1))
    pool.shutdown(wait=True)
    assert list(ringport.Int32Array(runs)) == [1] * 300 + [0] * 300


def test_statistics_read_while_tasks_finish(make_pool):
    """run_time and wait_time read from another thread while the collector records results
    (on a free-threaded build, sorting the sample deque as it grew raised 'deque mutated
    during iteration')."""
    pool = make_pool()
    errors, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                assert pool.run_time.count >= 0 and pool.wait_time.count >= 0
            except Exception as exc:   # (re-raised in the test's thread below)
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(4):
            futs = [pool.submit(poolfuncs.square, i) for i in range(3000)]
            assert [f.result(60) for f in futs] == [i * i for i in range(3000)]
            if errors:
                break
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors[0]


# ---------------------------------------------------------------- tasks handed in (_hand_in)
# A submit() that finds the pool's lock taken (by the collector handling results, most often)
# puts its task in pool._incoming instead of waiting, when the pool has no max_queue.  Holding
# the lock in the test makes every submit() take that path.

@contextlib.contextmanager
def _lock_held(pool):
    pool._lock.acquire()
    try:
        yield
    finally:
        pool._lock.release()


def test_tasks_handed_in_while_the_lock_is_taken_keep_their_order(make_pool):
    pool = make_pool(max_workers=1)
    key = "order"
    assert pool.submit(poolfuncs.record, key, -1).result(60) == -1   # (the worker is up)
    for rnd in range(3):
        base = rnd * 100
        with _lock_held(pool):
            early = [pool.submit(poolfuncs.record, key, base + i) for i in range(50)]
            assert len(pool._incoming) == 50
            assert pool.queue_size == 50
        late = [pool.submit(poolfuncs.record, key, base + i) for i in range(50, 100)]
        assert [f.result(60) for f in early + late] == list(range(base, base + 100))
    assert pool.submit(poolfuncs.recorded, key).result(60) == [-1] + list(range(300))
    assert not pool._incoming and pool.queue_size == 0


def test_tasks_handed_in_start_workers_on_demand(make_pool):
    pool = make_pool(max_workers=2)
    with _lock_held(pool):
        futs = [pool.submit(poolfuncs.sleep_then, 0.05, i) for i in range(6)]
        assert not pool._slots and not pool._starting
    assert [f.result(60) for f in futs] == list(range(6))
    assert pool.workers == 2


@pytest.mark.parametrize("cancel_futures", [False, True])
def test_shutdown_runs_or_cancels_tasks_handed_in_before_it(make_pool, cancel_futures):
    """Whichever takes the lock first (the collector, or shutdown), every task handed in
    before shutdown() runs, or with cancel_futures may be cancelled: none is left pending."""
    for _ in range(3):
        pool = make_pool(max_workers=1)
        with _lock_held(pool):
            futs = [pool.submit(poolfuncs.square, i) for i in range(20)]
            stopper = threading.Thread(target=pool.shutdown,
                                       kwargs={"cancel_futures": cancel_futures})
            stopper.start()
            time.sleep(0.02)   # (most often, shutdown() then waits for the lock too)
        stopper.join(SHUTDOWN_TIMEOUT)
        assert not stopper.is_alive()
        for i, f in enumerate(futs):
            assert f.done()
            if not cancel_futures or not f.cancelled():
                assert f.result() == i * i
        assert not pool._incoming and not pool._queue
        with pytest.raises(RuntimeError, match="after shutdown"):
            pool.submit(poolfuncs.square, 1)


def test_a_task_handed_in_as_the_pool_shuts_down_is_refused_not_lost(make_pool, backend):
    """A submit that found the pool open, then the lock taken by shutdown(): its task came
    after shutdown() took in the others, so submit raises (as after shutdown) and nothing of
    it stays in the pool."""
    from ringport import _pool
    pool = make_pool(max_workers=1)
    assert pool.submit(poolfuncs.square, 2).result(60) == 4
    fn, ref = (poolfuncs.square, None) if backend == "thread" else \
        (None, pool._ref(poolfuncs.square))
    outcome = []

    def late_submit():   # (past submit()'s own check, as if shutdown began just after it)
        try:
            outcome.append(pool._enqueue(fn, _pool._CALL, ref, (3,), None, ()))
        except RuntimeError as exc:
            outcome.append(exc)

    with _lock_held(pool):
        pool._shutdown = True   # (what shutdown() sets under the lock, after taking in)
        t = threading.Thread(target=late_submit)
        t.start()
        wait_until(lambda: len(pool._incoming) == 1, timeout=10)
    t.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError), outcome
    assert "after shutdown" in str(outcome[0])
    assert not pool._incoming and not pool._queue
    if backend == "thread":   # (its function's key was never counted)
        assert all(f is not poolfuncs.square for f in _pool._local_fns.values())


def test_cancel_a_task_handed_in_before_it_is_queued(make_pool):
    pool = make_pool(max_workers=1)
    outcome = []
    with _lock_held(pool):
        futs = [pool.submit(poolfuncs.square, i) for i in range(5)]
        t = threading.Thread(target=lambda: outcome.append(futs[2].cancel()))
        t.start()
        wait_until(futs[2].cancelled, timeout=10)   # (then it waits for the lock)
    t.join(30)
    assert outcome == [True]
    for i, f in enumerate(futs):
        if i == 2:
            with pytest.raises(cf.CancelledError):
                f.result(0)
        else:
            assert f.result(60) == i * i
    wait_until(lambda: pool.queue_size == 0, timeout=10)
    assert not pool._incoming


def test_tasks_handed_in_fail_when_the_pool_breaks(make_pool):
    pool = make_pool(initializer=poolfuncs.init_fail)
    with _lock_held(pool):
        futs = [pool.submit(poolfuncs.square, i) for i in range(5)]
    for f in futs:
        with pytest.raises(ringport.BrokenWorkerPool):
            f.result(60)
    with pytest.raises(ringport.BrokenWorkerPool):
        pool.submit(poolfuncs.square, 2)
    assert not pool._incoming


def _submit_during_take_in(pool, caller):
    """Make the pool's next take-in of handed-in tasks, by caller (shutdown or _break), submit
    one more task from another thread right after it: what a thread that submits at that moment
    gets.  The list it returns gets the future, or the exception submit raised."""
    import sys
    late = []
    real = pool._move_incoming

    def move(*args, **kwargs):
        real(*args, **kwargs)
        up = sys._getframe(1)   # (who called this, and its caller)
        names = {up.f_code.co_name, up.f_back.f_code.co_name}
        if caller in names and not late:
            def submit():
                try:
                    late.append(pool.submit(poolfuncs.square, 7))
                except (RuntimeError, ringport.BrokenWorkerPool) as exc:
                    late.append(exc)
            t = threading.Thread(target=submit)
            t.start()
            t.join(30)

    pool._move_incoming = move
    return late


@pytest.mark.parametrize("cancel_futures", [False, True])
def test_a_submit_while_shutdown_takes_in_is_refused_or_runs(make_pool, cancel_futures):
    """A task handed in while shutdown() took in the others, before it set its flag, was
    never run (and shutdown returned): now the flag comes first, and such a submit raises."""
    pool = make_pool(max_workers=1)
    assert pool.submit(poolfuncs.square, 2).result(60) == 4
    late = _submit_during_take_in(pool, "shutdown")
    pool.shutdown(wait=True, cancel_futures=cancel_futures)
    assert len(late) == 1
    if not isinstance(late[0], RuntimeError):
        assert late[0].result(10) == 49
    assert not pool._incoming and not pool._queue


def test_a_submit_while_a_breaking_pool_takes_in_is_refused_or_fails(make_pool):
    pool = make_pool(initializer=poolfuncs.init_fail)
    late = _submit_during_take_in(pool, "_break")
    with pytest.raises(ringport.BrokenWorkerPool):
        pool.submit(poolfuncs.square, 2).result(60)
    wait_until(lambda: late, timeout=30, what="the submit made during _break")
    if not isinstance(late[0], ringport.BrokenWorkerPool):
        with pytest.raises(ringport.BrokenWorkerPool):
            late[0].result(10)
    assert not pool._incoming


def test_threads_that_submit_as_the_pool_shuts_down_lose_no_task(make_pool):
    """Three threads submit until submit() raises, while shutdown() runs: every future they got
    ends (a task handed in as shutdown() took in the others once stayed pending forever)."""
    for _ in range(5):
        pool = make_pool()
        futures = [[] for _ in range(3)]
        go = threading.Event()

        def client(k):
            go.wait()
            while True:
                try:
                    futures[k].append(pool.submit(poolfuncs.add, k, 1))
                except RuntimeError:
                    return

        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        go.set()
        time.sleep(0.02)
        pool.shutdown(wait=True)
        for t in threads:
            t.join(60)
        for k, futs in enumerate(futures):
            assert all(f.done() for f in futs), f"client {k}: {sum(not f.done() for f in futs)} pending"
            assert all(f.result() == k + 1 for f in futs)
        assert not pool._incoming and not pool._queue


@pytest.mark.stress
def test_results_keep_coming_while_threads_flood_submit(make_pool):
    """Three threads submit no-op tasks as fast as they can: the pool keeps completing them
    (tasks handed in once came faster than the collector moved them, and it handled no result
    for seconds)."""
    pool = make_pool()
    assert pool.submit(poolfuncs.add, 1).result(60) == 1
    stop = threading.Event()

    def client():
        while not stop.is_set():
            pool.submit(poolfuncs.add, 1)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        start = pool.completed
        wait_until(lambda: pool.completed - start >= 2000, timeout=10,
                   what="2000 tasks completed during the flood")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
