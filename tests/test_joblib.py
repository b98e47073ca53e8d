"""ringport.joblib: joblib's Parallel on ringport workers, on every backend."""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

joblib = pytest.importorskip("joblib")

import ringport  # noqa: E402
import ringport.joblib as rpjoblib  # noqa: E402
from conftest import SRC_DIR  # noqa: E402
from joblib import Parallel, delayed, parallel_config  # noqa: E402

BACKENDS = ringport.available_backends()
THREADS_AND_PROCESSES = [b for b in BACKENDS if b in ("thread", "process")]


@pytest.fixture(scope="module", autouse=True)
def _shared_pools():
    yield
    # every pool the backend kept warm ends, within a bound
    with rpjoblib._shared_lock:
        pools = list(rpjoblib._shared_pools.values())
        rpjoblib._shared_pools.clear()
    for pool in pools:
        t = threading.Thread(target=pool.shutdown, kwargs={"cancel_futures": True}, daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive(), f"{pool!r} did not shut down"


@pytest.fixture(params=BACKENDS)
def worker_backend(request):
    by_value = request.param == "subinterpreter"
    if by_value:
        # This module imports joblib, which does not import in a subinterpreter (nor does
        # pytest): its functions go there by value, as a user's __main__ functions do.
        import cloudpickle
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield request.param
    if by_value:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def square(x):
    return x * x


class Oops(ValueError):
    pass


def fail_at(x, bad):
    if x == bad:
        raise Oops(f"task {x} failed")
    return x


class Unrebuildable(Exception):
    def __init__(self, a, b):   # pickles as Unrebuildable("a b") and cannot be rebuilt
        super().__init__(f"{a} {b}")


def fail_unrebuildable(x):
    raise Unrebuildable(x, "no")


def sleep_or_fail(x):
    if x == 0:
        time.sleep(0.2)   # the others are running when this fails
        raise Oops("first")
    deadline = time.monotonic() + 60   # (in slices: a subinterpreter stops between them)
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return x


def nested(x):
    from joblib.parallel import get_active_backend
    inner = Parallel(n_jobs=2)(delayed(square)(i) for i in range(x, x + 3))
    return inner, type(get_active_backend()[0]).__name__


def where():
    return ringport.is_main_thread, os.getpid()


def block_norms(block):
    import numpy as np
    return np.linalg.norm(block, axis=1), block.sum()


# ------------------------------------------------------------------ results


def test_results_in_order(worker_backend):
    with parallel_config(backend="ringport", n_jobs=2, worker_backend=worker_backend):
        out = Parallel()(delayed(square)(i) for i in range(200))
        one_by_one = Parallel(batch_size=1, pre_dispatch="n_jobs")(
            delayed(square)(i) for i in range(20))
        lambdas = Parallel()(delayed(lambda a, b=1: a + b)(i, b=10) for i in range(5))
    assert out == [i * i for i in range(200)]
    assert one_by_one == [i * i for i in range(20)]
    assert lambdas == [10, 11, 12, 13, 14]


def test_runs_in_workers(worker_backend):
    with parallel_config(backend="ringport", n_jobs=2, worker_backend=worker_backend):
        out = Parallel()(delayed(where)() for _ in range(4))
    assert all(main is False for main, _ in out)    # ringport workers, not the caller
    pids = {pid for _, pid in out}
    assert (pids != {os.getpid()}) == (worker_backend == "process")


def test_backend_string_and_legacy_parallel_backend():
    with joblib.parallel_backend("ringport", n_jobs=2, worker_backend="thread"):
        assert Parallel()(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
    out = Parallel(backend="ringport", n_jobs=2)(delayed(square)(i) for i in range(5))
    assert out == [0, 1, 4, 9, 16]


def test_n_jobs(worker_backend):
    backend = rpjoblib.RingportBackend(worker_backend=worker_backend)
    cpus = joblib.cpu_count()
    assert backend.effective_n_jobs(-1) == cpus
    assert backend.effective_n_jobs(-2) == max(cpus - 1, 1)
    assert backend.effective_n_jobs(None) == 1
    with pytest.raises(ValueError):
        backend.effective_n_jobs(0)
    with parallel_config(backend="ringport", n_jobs=-1, worker_backend=worker_backend):
        assert Parallel()(delayed(square)(i) for i in range(30)) == [i * i for i in range(30)]
        # n_jobs=1: joblib's sequential backend, in the caller
        assert Parallel(n_jobs=1)(delayed(where)() for _ in range(2)) == \
            [(True, os.getpid())] * 2


def test_return_as_generator(worker_backend):
    with parallel_config(backend="ringport", n_jobs=2, worker_backend=worker_backend):
        gen = Parallel(return_as="generator")(delayed(square)(i) for i in range(30))
        assert not isinstance(gen, list)
        assert list(gen) == [i * i for i in range(30)]
        unordered = Parallel(return_as="generator_unordered")(
            delayed(square)(i) for i in range(30))
        assert sorted(unordered) == [i * i for i in range(30)]


def test_managed_parallel_reuses_the_pool(worker_backend):
    backend = rpjoblib.RingportBackend(worker_backend=worker_backend)
    with Parallel(backend=backend, n_jobs=2) as parallel:
        first = parallel(delayed(square)(i) for i in range(10))
        second = parallel(delayed(square)(i) for i in range(10, 20))
        pool = backend._pool
    assert first + second == [i * i for i in range(20)]
    assert pool is not None and backend._pool is None


# ------------------------------------------------------------------ errors


def test_exception_keeps_its_type(worker_backend):
    with parallel_config(backend="ringport", n_jobs=2, worker_backend=worker_backend):
        with pytest.raises(Oops, match="task 7 failed") as info:
            Parallel(batch_size=1)(delayed(fail_at)(i, 7) for i in range(20))
        if worker_backend != "thread":
            # the worker's traceback, as loky gives it
            assert "fail_at" in str(info.value.__cause__)
        # the pool still works after the abort
        assert Parallel()(delayed(square)(i) for i in range(10)) == [i * i for i in range(10)]


@pytest.mark.parametrize("worker_backend", [b for b in BACKENDS if b != "thread"], indirect=True)
def test_exception_that_cannot_be_rebuilt(worker_backend):
    with parallel_config(backend="ringport", n_jobs=2, worker_backend=worker_backend):
        with pytest.raises(ringport.WorkerError, match="Unrebuildable") as info:
            Parallel()(delayed(fail_unrebuildable)(i) for i in range(2))
    assert "fail_unrebuildable" in info.value.traceback


@pytest.mark.parametrize("worker_backend", [b for b in BACKENDS if b != "thread"], indirect=True)
def test_error_stops_the_running_batches(worker_backend):
    # one batch fails while the other sleeps 60 s: that one is stopped (its worker replaced),
    # not waited for.  (Two warm workers, so the batches go to different workers.)
    with ringport.WorkerPool(max_workers=2, min_workers=2, backend=worker_backend) as pool:
        with parallel_config(backend="ringport", pool=pool, n_jobs=2):
            t0 = time.monotonic()
            with pytest.raises(Oops, match="first"):
                Parallel(batch_size=1, pre_dispatch="n_jobs")(
                    delayed(sleep_or_fail)(i) for i in range(2))
            assert time.monotonic() - t0 < 30
            assert Parallel()(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


@pytest.mark.parametrize("worker_backend", [b for b in BACKENDS if b != "thread"], indirect=True)
def test_timeout_stops_the_running_batches(worker_backend):
    import multiprocessing
    with ringport.WorkerPool(max_workers=2, min_workers=2, backend=worker_backend) as pool:
        with parallel_config(backend="ringport", pool=pool, n_jobs=2):
            t0 = time.monotonic()
            with pytest.raises((TimeoutError, multiprocessing.TimeoutError)):
                Parallel(timeout=0.5, batch_size=1, pre_dispatch="n_jobs")(
                    delayed(sleep_or_fail)(i) for i in (1, 2))
            assert time.monotonic() - t0 < 30
            assert Parallel()(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


# ------------------------------------------------------------------ __main__, nesting, numpy

MAIN_SCRIPT = """
import json, sys
sys.path.insert(0, {src!r})
import joblib, ringport, ringport.joblib

class Point:
    def __init__(self, x):
        self.x = x

class MainError(Exception):
    pass

def offset(x):
    return Point(x + 100)

def fail(x):
    raise MainError(x)

out = {{}}
for backend in ringport.available_backends():
    with joblib.parallel_config(backend="ringport", n_jobs=2, worker_backend=backend):
        points = joblib.Parallel()(joblib.delayed(offset)(i) for i in range(5))
        assert all(type(p) is Point for p in points), points
        try:
            joblib.Parallel()(joblib.delayed(fail)(i) for i in range(3))
        except MainError as exc:    # the very class of __main__
            caught = str(exc)
    out[backend] = [[p.x for p in points], caught]
print(json.dumps(out))
"""


def test_functions_and_classes_of_main(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(MAIN_SCRIPT.format(src=SRC_DIR))
    p = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert set(out) == set(BACKENDS)
    for backend in BACKENDS:
        assert out[backend][0] == [100, 101, 102, 103, 104], backend
        assert out[backend][1] in ("0", "1", "2"), backend


@pytest.mark.parametrize("worker_backend", THREADS_AND_PROCESSES)
def test_nested_parallel(worker_backend):
    # as under joblib's own backends: threads one level down (sequential with n_jobs unset)
    with parallel_config(backend="ringport", n_jobs=2, worker_backend=worker_backend):
        out = Parallel()(delayed(nested)(x) for x in range(4))
    for x, (inner, backend_name) in enumerate(out):
        assert inner == [i * i for i in range(x, x + 3)]
        assert backend_name == "ThreadingBackend"


@pytest.mark.parametrize("worker_backend", THREADS_AND_PROCESSES)
def test_numpy_blocks(worker_backend):
    np = pytest.importorskip("numpy")
    data = np.random.default_rng(0).standard_normal((400, 64))
    blocks = np.array_split(data, 16)
    with parallel_config(backend="ringport", n_jobs=2, worker_backend=worker_backend):
        out = Parallel()(delayed(block_norms)(b) for b in blocks)
    norms = np.concatenate([n for n, _ in out])
    np.testing.assert_allclose(norms, np.linalg.norm(data, axis=1))
    assert sum(s for _, s in out) == pytest.approx(data.sum())


def test_sharedmem_on_threads():
    seen = []
    with parallel_config(backend="ringport", n_jobs=2, worker_backend="thread"):
        Parallel(require="sharedmem")(delayed(seen.append)(i) for i in range(10))
    assert sorted(seen) == list(range(10))


# ------------------------------------------------------------------ options and pools


def test_options():
    with pytest.raises(TypeError, match="max_queue"):
        rpjoblib.RingportBackend(max_queue=3)
    with pytest.raises(ValueError, match="backend"):
        rpjoblib.RingportBackend(worker_backend="carrier-pigeon")
    with pytest.raises(ValueError):
        parallel_config(backend="ringport", worker_backend="carrier-pigeon")
    auto = rpjoblib.RingportBackend().worker_backend
    assert auto != "subinterpreter" and auto in BACKENDS
    assert rpjoblib.RingportBackend(worker_backend="thread").supports_sharedmem
    with pytest.raises(TypeError, match="WorkerPool"):
        rpjoblib.RingportBackend(pool=object())


def test_private_pool_with_options_ends_with_the_call():
    # initargs that are not hashable: a pool for this call alone, shut down after it
    before = dict(rpjoblib._shared_pools)
    backend = rpjoblib.RingportBackend(worker_backend="thread", initializer=list.append,
                                       initargs=([], 1))
    with Parallel(backend=backend, n_jobs=2) as parallel:
        assert parallel(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]
        pool = backend._pool
        assert pool is not None and backend._owns_pool
    assert backend._pool is None
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(square, 1)
    assert rpjoblib._shared_pools == before


def test_own_pool():
    with ringport.WorkerPool(max_workers=2, backend="thread") as pool:
        with parallel_config(backend="ringport", pool=pool, n_jobs=-1):
            out = Parallel()(delayed(square)(i) for i in range(20))
        assert out == [i * i for i in range(20)]
        assert pool.completed >= 1
        assert pool.submit(square, 3).result(timeout=30) == 9    # not shut down
    backend = rpjoblib.RingportBackend(pool=pool)
    assert backend.effective_n_jobs(-1) == 2 and backend.effective_n_jobs(8) == 2


def test_pickle_without_cloudpickle_refuses_main_functions():
    with pytest.raises(ringport.DataCloneError, match="cloudpickle"):
        rpjoblib._dumps_importable([(lambda: 0, (), {})])
    assert rpjoblib._dumps_importable([(square, (2,), {})])


# ------------------------------------------------------------------ joblib stays optional


def test_import_ringport_does_not_import_joblib():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC_DIR!r})
        import ringport
        assert "joblib" not in sys.modules and "ringport.joblib" not in sys.modules
        sys.modules["joblib"] = None     # as if it were not installed
        try:
            import ringport.joblib
        except ImportError as exc:
            print(exc)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "pip install joblib" in p.stdout
