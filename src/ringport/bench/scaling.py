"""Benchmark 8: a CPU-bound pure-Python job split over 1, 2 and 4 workers; the speed-up is each
system's own time with one worker over its time with k (the runner derives it per system).
Every system, Node included, counts the same points: the times are totals, so a ratio between
two rows is only honest when both did the same work (Sample.n, the points counted).

The job counts lattice points inside a quarter circle of radius G (4 * count / G**2 estimates
pi), rows dealt round-robin to the workers; the total is checked against a closed form.  Peers
are started and have answered before the clock starts.
"""
import threading
import time

import ringport

from ringport.bench import peers
from ringport.bench.common import Bench, Sample, System, check, mp_context, run_node, \
    worker_backends
from ringport.bench.messaging import WORKER_SRC

KS = (1, 2, 4)


def _ringport_threads(k):
    chans = [ringport.MessageChannel() for _ in range(k)]
    ts = [threading.Thread(target=peers.serve_port, args=(c.port2,), daemon=True) for c in chans]
    for t in ts:
        t.start()
    ends = [(c.port1.post_message, c.port1.receive) for c in chans]

    def stop():
        for c in chans:
            c.port1.post_message(None)
        for t in ts:
            t.join(60)
    return ends, stop


def _ringport_workers(backend, k):
    ws = [ringport.Worker(WORKER_SRC, eval=True, backend=backend) for _ in range(k)]

    def stop():
        for w in ws:
            w.post_message(None)
        for w in ws:
            if w.join(60) is None:
                w.terminate()
    return [(w.post_message, w.receive) for w in ws], stop


def _processes(k):
    ctx = mp_context()
    pairs = [ctx.Pipe() for _ in range(k)]
    ps = [ctx.Process(target=peers.serve_conn, args=(child,), daemon=True) for _, child in pairs]
    for p in ps:
        p.start()

    def stop():
        for c, _ in pairs:
            c.send(None)
        for p in ps:
            p.join(60)
    return [(c.send, c.recv) for c, _ in pairs], stop


def job(start, k, g):
    ends, stop = start(k)
    try:
        for send, recv in ends:                 # every peer is up before the clock starts
            send(("ready", {}))
            check(recv() == "ready", "peer did not answer")
        for send, _ in ends:
            send(("grid", {}))
        t0 = time.perf_counter()
        for w, (send, _) in enumerate(ends):
            send((w, k, g))
        total = sum(recv() for _, recv in ends)
        dt = time.perf_counter() - t0
        for send, _ in ends:
            send(None)                          # ends the "grid" loop
    finally:
        stop()
    check(total == peers.grid_exact(g), f"grid count {total} != {peers.grid_exact(g)}")
    return Sample(dt, g * g)


def node(k, g):
    out = run_node("scaling.js", {"k": k, "g": g})
    check(out["n"] == g * g, f"Node counted {out['n']} points, not {g * g}")
    return Sample(out["value"], out["n"])


def benchmarks(p):
    g = p["grid"]
    benches = []
    for k in KS:
        rows = [System("ringport (threads)", lambda k=k: job(_ringport_threads, k, g))]
        for b in worker_backends():
            rows.append(System(f"ringport Worker ({b})",
                               lambda k=k, b=b: job(lambda k: _ringport_workers(b, k), k, g)))
        rows.append(System("multiprocessing (processes)", lambda k=k: job(_processes, k, g)))
        rows.append(System("Node.js worker_threads", lambda k=k: node(k, g)))
        benches.append(Bench(f"scaling-{k}", "scaling", f"{k} worker{'s' if k > 1 else ''}",
                             "s", "lower", rows,
                             note=f"lattice points in a quarter circle, radius {g}, the same for "
                             "every system (pure Python; JavaScript is JIT-compiled)"))
    return benches
