"""Benchmark 7: worker start-up time (from the constructor to the worker's first message) and
memory (growth of the process's RSS per idle live worker, N workers alive at once)."""
import queue
import statistics
import threading
import time

import ringport

from ringport.bench import peers
from ringport.bench.common import (Bench, Sample, System, check, have_worker, mp_context,
                                   rss_bytes, run_node, worker_backends)
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


def startup(start, n):
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


def memory(start, n):
    before = rss_bytes()
    if before is None:
        from ringport.bench.common import Skip
        raise Skip("no /proc/self/statm to read RSS from")
    stops = []
    try:
        for _ in range(n):
            stops.append(start()[1])
        grown = rss_bytes() - before
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
    for what, fn, unit, title in (("startup", startup, "ms", "to first message"),
                                  ("memory", memory, "MiB/worker", "RSS per idle worker")):
        rows = []
        if have_worker():
            for b in worker_backends():
                rows.append(System(f"ringport Worker ({b})",
                                   lambda b=b, fn=fn: fn(lambda: _start_ringport(b), n)))
        else:
            rows.append(System("ringport Worker", skip="ringport.Worker is not available in "
                               "this build yet (issue 3)"))
        rows.append(System("threading.Thread", lambda fn=fn: fn(_start_thread, n)))
        if what == "startup":
            rows.append(System("multiprocessing.Process (forkserver)",
                               lambda fn=fn: fn(_start_process, n)))
        else:
            rows.append(System("multiprocessing.Process (forkserver)",
                               skip="a child's memory is not in this process's RSS"))
        rows.append(System("Node.js worker_threads", lambda what=what: node(what, n)))
        benches.append(Bench(f"worker-{what}", "worker start-up" if what == "startup"
                             else "worker memory", title, unit, "lower", rows,
                             latency=(what == "startup"),
                             note=f"{n} workers started one after another"))
    return benches
