"""Benchmark 7: worker start-up time (from the constructor to the worker's first message) and
memory (growth of the process's RSS per idle live worker, N workers alive at once)."""
import os
import queue
import statistics
import threading
import time

import ringport

from ringport.bench import peers
from ringport.bench.common import (Bench, Sample, Skip, System, check, ensure_bytecode, have_worker,
                                   mp_context, rss_bytes, run_node, worker_backends)
from ringport.bench.messaging import WORKER_SRC

READY_SRC = "import ringport\nringport.parent_port.post_message('ready')\n" + WORKER_SRC


def _start_ringport(backend):
    w = ringport.Worker(READY_SRC, eval=True, backend=backend)
    check(w.receive(120) == "ready", "worker did not say ready")
    return w, lambda: (w.post_message(None), w.join(60))


def _start_thread():
    q = queue.Queue()
    stop = threading.Event()

    def body():
        q.put("ready")
        stop.wait()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    check(q.get(timeout=60) == "ready", "thread did not say ready")
    return t, lambda: (stop.set(), t.join(60))


def _start_process():
    ctx = mp_context()
    c, child = ctx.Pipe()
    p = ctx.Process(target=peers.serve_conn, args=(child,), daemon=True)
    p.start()
    c.send(("ready", {}))
    check(c.recv() == "ready", "process did not say ready")
    return p, lambda: (c.send(None), p.join(60), c.close())


def _start_pool():
    """A fresh ProcessPoolExecutor (forkserver, one process) up to its first result."""
    from concurrent.futures import ProcessPoolExecutor
    ex = ProcessPoolExecutor(1, mp_context=mp_context())
    check(ex.submit(peers.ready).result(120) == "ready", "pool did not return its first result")
    return ex, lambda: ex.shutdown(wait=True)


def child_pss(handle):
    """The proportional set size (bytes) of a worker's own process, if it has one: its share of
    the pages it holds, so that pages shared with a forkserver or a sibling count once."""
    pid = getattr(handle, "pid", None)
    if not pid or pid == os.getpid():
        return 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    raise Skip(f"cannot read the memory of process {pid}")


def startup(start, n):
    ensure_bytecode()
    times, stops = [], []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            _, stop = start()
            times.append((time.perf_counter() - t0) * 1e3)
            stops.append(stop)
    finally:
        for s in stops:
            s()
    return Sample(statistics.median(times), n, times)


def startup_warm(backend, n):
    """Start-up with ringport.prestart(n): n interpreters made ahead (and waited for), then n
    workers started one after another, each taking one."""
    from ringport import _prestart
    ensure_bytecode()   # (before the spares import ringport)
    ringport.prestart(n, backend=backend)
    try:
        deadline = time.monotonic() + 120
        while _prestart.spare_count() < n:
            check(time.monotonic() < deadline, "prestart() made no interpreters")
            time.sleep(0.01)
        return startup(lambda: _start_ringport(backend), n)
    finally:
        ringport.prestart(0, backend=backend)


def memory(start, n):
    """Growth of this process's RSS per live idle worker, plus each worker process's own PSS."""
    before = rss_bytes()
    if before is None:
        raise Skip("no /proc/self/statm to read RSS from")
    stops, handles = [], []
    try:
        for _ in range(n):
            handle, stop = start()
            handles.append(handle)
            stops.append(stop)
        grown = rss_bytes() - before
        grown += sum(child_pss(h) for h in handles)
    finally:
        for s in stops:
            s()
    return Sample(grown / n / 2**20, n)


def node(case, n):
    out = run_node("workers.js", {"case": case, "n": n})
    return Sample(out["value"], out["n"], out.get("samples", []))


def benchmarks(p):
    n = p["workers"]
    benches = []
    forkserver = "multiprocessing.Process (forkserver)"
    pool = "ProcessPoolExecutor (forkserver, fresh pool)"
    for what, fn, unit, title in (("startup", startup, "ms", "to first message"),
                                  ("memory", memory, "MiB/worker", "RSS per idle worker")):
        rows = []
        if have_worker():
            for b in worker_backends():
                rows.append(System(f"ringport Worker ({b})",
                                   lambda b=b, fn=fn: fn(lambda: _start_ringport(b), n),
                                   base=(forkserver, pool) if b == "process" else ()))
                if b == "subinterpreter" and what == "startup":
                    rows.append(System(f"ringport Worker ({b}, prestart)",
                                       lambda b=b: startup_warm(b, n)))
        else:
            rows.append(System("ringport Worker", skip="ringport.Worker is not available in "
                               "this build yet (issue 3)"))
        rows.append(System("threading.Thread", lambda fn=fn: fn(_start_thread, n)))
        rows.append(System(forkserver, lambda fn=fn: fn(_start_process, n)))
        if what == "startup":
            rows.append(System(pool, lambda fn=fn: fn(_start_pool, n)))
        rows.append(System("Node.js worker_threads", lambda what=what: node(what, n)))
        benches.append(Bench(f"worker-{what}", "worker start-up" if what == "startup"
                             else "worker memory", title, unit, "lower", rows,
                             latency=(what == "startup"),
                             note=f"{n} workers started one after another" +
                             ("" if what == "startup" else "; a worker process counts its "
                              "own proportional set size (PSS) too")))
    return benches
