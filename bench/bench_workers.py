"""Worker benchmarks: ping-pong round trip through a worker on each backend, against
concurrent.interpreters/_interpreters queues, multiprocessing.Pipe and queue.Queue; worker
start-up time and memory per backend.

    python bench/bench_workers.py [--count N] [--repeat R] [--backend thread|subinterpreter|all]
                                  [--workers W]

Each round trip is timed on its own (perf_counter_ns) and the median is reported; every line
also gives its ratio to ringport's median for that backend, measured in the same run.  Peers
start on a barrier (threads) or on a first message (other interpreters and processes).
"""
import argparse
import multiprocessing
import os
import queue
import statistics
import sys
import threading
import time

import ringport

ECHO = """
import ringport
port = ringport.parent_port
for msg in port:
    port.post_message(msg)
"""


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def timed_round_trips(post, receive, count, repeat):
    samples = []
    post(0)
    receive()  # warm up: the peer is running
    for _ in range(repeat):
        for i in range(count):
            t = time.perf_counter_ns()
            post(i)
            receive()
            samples.append(time.perf_counter_ns() - t)
    return samples


def bench_ringport(backend, count, repeat):
    w = ringport.Worker(ECHO, eval=True, backend=backend)
    try:
        return timed_round_trips(w.post_message, w.receive, count, repeat)
    finally:
        w.port.close()
        w.join(30)


def bench_queue_queue(count, repeat):
    a, b = queue.Queue(), queue.Queue()
    barrier = threading.Barrier(2)

    def echo():
        barrier.wait()
        while True:
            m = a.get()
            if m is None:
                return
            b.put(m)

    t = threading.Thread(target=echo)
    t.start()
    barrier.wait()
    try:
        return timed_round_trips(a.put, b.get, count, repeat)
    finally:
        a.put(None)
        t.join()


def _pipe_echo(conn):
    while True:
        m = conn.recv()
        if m is None:
            return
        conn.send(m)


def bench_mp_pipe(count, repeat):
    parent, child = multiprocessing.Pipe()
    p = multiprocessing.get_context("spawn").Process(target=_pipe_echo, args=(child,))
    p.start()
    try:
        return timed_round_trips(parent.send, parent.recv, count, repeat)
    finally:
        parent.send(None)
        p.join()


def bench_interp_queues(count, repeat):
    """The stdlib's own cross-interpreter queues (their blocking get polls with a 10 ms sleep)."""
    try:
        from concurrent import interpreters
        queues = interpreters
        create_queue = interpreters.create_queue
    except ImportError:
        try:
            from test.support import interpreters
            from test.support.interpreters import queues
            create_queue = queues.create
        except ImportError:
            return None
    interp = interpreters.create()
    qa, qb = create_queue(), create_queue()
    code = (f"from {queues.__name__} import Queue\n"
            f"a, b = Queue({qa.id}), Queue({qb.id})\n"
            "while True:\n"
            "    m = a.get()\n"
            "    if m is None: break\n"
            "    b.put(m)\n")
    t = threading.Thread(target=interp.exec, args=(code,))
    t.start()
    try:
        return timed_round_trips(qa.put, qb.get, count, repeat)
    finally:
        qa.put(None)
        t.join()
        interp.close()


def bench_startup(backend, n):
    """Median time from Worker() to its first message, and RSS growth per idle worker."""
    times = []
    before = rss_bytes()
    ws = []
    for _ in range(n):
        t = time.perf_counter_ns()
        w = ringport.Worker("import ringport\nringport.parent_port.post_message(1)\n"
                            "for _ in ringport.parent_port: pass", eval=True, backend=backend)
        w.receive()
        times.append(time.perf_counter_ns() - t)
        ws.append(w)
    grown = rss_bytes() - before
    for w in ws:
        w.port.close()
    for w in ws:
        w.join(30)
    return statistics.median(times), grown / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000, help="round trips per repeat")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backend", default="all", help="thread, subinterpreter or all")
    ap.add_argument("--workers", type=int, default=16, help="workers for start-up/memory")
    ap.add_argument("--baseline-count", type=int, default=2000,
                    help="round trips for queue.Queue and multiprocessing.Pipe")
    args = ap.parse_args()
    backends = ringport.available_backends() if args.backend == "all" else [args.backend]
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"Python {sys.version.split()[0]} ({'GIL' if gil else 'free-threaded'}), "
          f"{os.cpu_count()} CPUs")
    print(f"{'round trip (small int)':<44} {'median':>10} {'vs ringport':>12}")
    ref = {}
    for b in backends:
        med = statistics.median(bench_ringport(b, args.count, args.repeat))
        ref[b] = med
        print(f"{'ringport Worker, ' + b:<44} {med / 1e3:>8.2f} us {1.0:>11.2f}x")
    base = min(ref.values())

    def line(name, samples):
        if samples is None:
            print(f"{name:<44} {'n/a':>10}")
            return
        med = statistics.median(samples)
        print(f"{name:<44} {med / 1e3:>8.2f} us {med / base:>11.2f}x")

    line("queue.Queue between threads", bench_queue_queue(args.baseline_count, 1))
    line("multiprocessing.Pipe (spawned process)", bench_mp_pipe(args.baseline_count, 1))
    line("interpreters queues (polls, few iterations)", bench_interp_queues(20, 1))
    print()
    print(f"{'worker start-up (to first message)':<44} {'median':>10} {'RSS/worker':>12}")
    for b in backends:
        med, mem = bench_startup(b, args.workers)
        print(f"{'ringport Worker, ' + b:<44} {med / 1e6:>7.2f} ms {mem / 2**20:>9.2f} MiB")


if __name__ == "__main__":
    main()
