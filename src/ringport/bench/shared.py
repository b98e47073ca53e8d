"""Benchmarks 5 and 6: two workers incrementing one shared Int32 element (total ops/s, exact
count), and a wait/notify ping-pong on one Int32 element.

The cimported rows use the small Cython extension of ringport.bench.userext (built once into a
cache directory outside the source tree, never into the repository).
"""
import json
import statistics
import sys
import threading
import time

import ringport
from ringport import Int32Array, atomics

from ringport.bench import peers
from ringport.bench.common import (Bench, Sample, Skip, System, check, run_driver, run_node,
                                   run_threads, worker_backends)
from ringport.bench.messaging import WORKER_SRC

_ext = None


def userext(allowed=True):
    """The cimporting extension, built on first use; Skip if it cannot be built here."""
    global _ext
    if _ext is None:
        if not allowed:
            _ext = Skip("cimported loop not built (--no-cimport)")
        else:
            from ringport.bench import userext as ue
            if not ue.have_compiler():
                _ext = Skip("no C compiler to build the cimported loop")
            else:
                try:
                    _ext = ue.build_cached()
                except Exception as e:  # Cython missing, headers missing...
                    _ext = Skip(f"cimported loop does not build here: {str(e)[:300]}")
    if isinstance(_ext, Skip):
        raise _ext
    return _ext


# ------------------------------------------------------------------ counter

def counter_py(n):
    a = Int32Array(1)
    add = atomics.add

    def work():
        for _ in range(n):
            add(a, 0, 1)

    dt, _ = run_threads([work, work])
    check(a[0] == 2 * n, f"atomics.add count {a[0]} != {2 * n}")
    return Sample(2 * n / dt / 1e6, 2 * n)


def counter_method(n):
    """The same count through the typed array's method, bound once in each thread: a call
    passes the array borrowed, so no reference count is shared between the threads."""
    a = Int32Array(1)

    def work():
        add = a.add
        for _ in range(n):
            add(0, 1)

    dt, _ = run_threads([work, work])
    check(a[0] == 2 * n, f"Int32Array.add count {a[0]} != {2 * n}")
    return Sample(2 * n / dt / 1e6, 2 * n)


def counter_cimport(n, allowed):
    ext = userext(allowed)
    a = Int32Array(1)
    dt, _ = run_threads([lambda: ext.add_loop(a, 0, n)] * 2)
    check(a[0] == 2 * n, f"cimported add count {a[0]} != {2 * n}")
    return Sample(2 * n / dt / 1e6, 2 * n)


def counter_lock(n):
    lock = threading.Lock()
    box = [0]

    def work():
        for _ in range(n):
            with lock:
                box[0] += 1

    dt, _ = run_threads([work, work])
    check(box[0] == 2 * n, f"locked count {box[0]} != {2 * n}")
    return Sample(2 * n / dt / 1e6, 2 * n)


def counter_pypi(n):
    """In its own process: the atomics package is cffi-based and could turn the GIL back on."""
    out = run_driver("ringport.bench.shared", {"what": "pypi", "n": n})
    return Sample(out["value"], out["n"])


def _counter_pypi_here(n):
    import atomics as pypi
    buf = bytearray(4)

    def work():
        with pypi.atomicview(buffer=buf, atype=pypi.INT) as v:
            for _ in range(n):
                v.inc()

    dt, _ = run_threads([work, work])
    got = int.from_bytes(buf, sys.byteorder, signed=True)
    check(got == 2 * n, f"PyPI atomics count {got} != {2 * n}")
    return Sample(2 * n / dt / 1e6, 2 * n)


def counter_workers(backend, n):
    """Two ringport Workers share the Int32Array (posted in a message: shared, not copied)."""
    a = Int32Array(1)
    ws = [ringport.Worker(WORKER_SRC, eval=True, backend=backend) for _ in range(2)]
    try:
        for w in ws:
            w.post_message(("add", {"n": n, "arr": a}))
        for w in ws:
            check(w.receive(60) == "ready", "worker not ready")
        t0 = time.perf_counter()
        for w in ws:
            w.post_message("go")
        for w in ws:
            check(w.receive(600) == "done", "worker did not finish")
        dt = time.perf_counter() - t0
    finally:
        for w in ws:
            w.post_message(None)
        for w in ws:
            if w.join(60) is None:
                w.terminate()
    check(a[0] == 2 * n, f"Worker atomics.add count {a[0]} != {2 * n}")
    return Sample(2 * n / dt / 1e6, 2 * n)


def node_counter(n):
    out = run_node("shared.js", {"case": "add", "n": n})
    return Sample(out["value"], out["n"])


# ------------------------------------------------------------------ wait/notify

def waitnotify_py(rounds):
    a = Int32Array(1)
    lat = []
    dt, _ = run_threads([lambda: peers.wn_side(a, rounds, 1),
                         lambda: peers.wn_side(a, rounds, 0, lat)])
    check(a[0] == 2 * rounds, f"wait/notify ping-pong ended at {a[0]} != {2 * rounds}")
    return Sample(statistics.median(lat) if lat else dt / rounds * 1e6, rounds, lat)


def waitnotify_worker(backend, rounds):
    """The same ping-pong with side 1 in a ringport Worker (the Int32Array posted: shared)."""
    a = Int32Array(1)
    lat = []
    w = ringport.Worker(WORKER_SRC, eval=True, backend=backend)
    try:
        w.post_message(("waitnotify", {"n": rounds, "arr": a}))
        check(w.receive(60) == "ready", "worker not ready")
        peers.wn_side(a, rounds, 0, lat)
        check(w.receive(60) == "done", "worker did not finish")
    finally:
        w.post_message(None)
        if w.join(60) is None:
            w.terminate()
    check(a[0] == 2 * rounds, f"Worker wait/notify ping-pong ended at {a[0]} != {2 * rounds}")
    return Sample(statistics.median(lat), rounds, lat)


def waitnotify_cimport(rounds, allowed):
    ext = userext(allowed)
    a = Int32Array(1)
    dt, _ = run_threads([lambda: ext.ping_pong(a, rounds, 1), lambda: ext.ping_pong(a, rounds, 0)])
    check(a[0] == 2 * rounds, f"cimported ping-pong ended at {a[0]} != {2 * rounds}")
    return Sample(dt / rounds * 1e6, rounds, note="mean (no per-round samples from nogil code)")


def waitnotify_cond(rounds):
    """The stdlib way: a threading.Condition around a shared int."""
    cond = threading.Condition()
    box = [0]

    def side(me):
        for i in range(rounds):
            want = 2 * i + me
            with cond:
                while box[0] != want:
                    cond.wait(5)
                box[0] = want + 1
                cond.notify()

    dt, _ = run_threads([lambda: side(1), lambda: side(0)])
    check(box[0] == 2 * rounds, f"Condition ping-pong ended at {box[0]}")
    return Sample(dt / rounds * 1e6, rounds)


def node_waitnotify(rounds):
    out = run_node("shared.js", {"case": "waitnotify", "n": rounds})
    return Sample(out["value"], out["n"], out.get("samples", []))


# ------------------------------------------------------------------ the benchmarks

def benchmarks(p):
    n, nf, r = p["counter"], p["counter_fast"], p["waitnotify"]
    cim = p["cimport"]
    import importlib.util
    pypi = importlib.util.find_spec("atomics") is not None
    rows = [System("ringport arr.add, bound once (Python, threads)", lambda: counter_method(n)),
            System("ringport.atomics.add (Python, threads)", lambda: counter_py(n)),
            System("ringport cimported nogil add (threads)", lambda: counter_cimport(nf, cim))]
    for b in worker_backends():
        rows.append(System(f"ringport.atomics.add (Python, Worker {b})",
                           lambda b=b: counter_workers(b, n)))
    rows.append(System("threading.Lock + int (threads)", lambda: counter_lock(n)))
    rows.append(System("PyPI atomics (threads)", lambda: counter_pypi(n)) if pypi else
                System("PyPI atomics (threads)", skip="atomics not installed "
                       "(pip install ringport[bench])"))
    rows.append(System("Node.js Atomics.add (workers)", lambda: node_counter(nf)))
    counter = Bench("counter", "shared counter", "two workers, one Int32 element", "M ops/s",
                    "higher", rows, note="total increments per second; exact count verified")
    rows = [System("ringport.atomics wait/notify (Python, threads)", lambda: waitnotify_py(r)),
            System("ringport cimported nogil wait/notify (threads)",
                   lambda: waitnotify_cimport(r, cim))]
    for b in worker_backends():
        rows.append(System(f"ringport.atomics wait/notify (Python, main <-> Worker {b})",
                           lambda b=b: waitnotify_worker(b, r)))
    rows += [System("threading.Condition (threads)", lambda: waitnotify_cond(r)),
             System("Node.js Atomics.wait/notify (workers)", lambda: node_waitnotify(r))]
    wn = Bench("waitnotify", "wait/notify", "wait/notify ping-pong round trip", "us", "lower",
               rows, latency=True, note="one round trip = two hand-offs")
    return [counter, wn]


if __name__ == "__main__":      # driver for rows that must run in their own process
    params = json.loads(sys.argv[1])
    try:
        import atomics  # noqa: F401
    except Exception as e:
        print(json.dumps({"skip": f"atomics does not import: {e}"}))
        sys.exit(0)
    try:
        s = _counter_pypi_here(params["n"])
        print(json.dumps({"value": s.value, "n": s.n}))
    except AssertionError as e:
        print(json.dumps({"verify_error": str(e)}))
