"""Ports between two threads: ringport against queue.Queue and multiprocessing.Pipe.

    python bench/bench_ports.py [--count N] [--repeat R] [--quick] [--only NAME]

Three workloads: ping-pong round trip of a small int; one-way throughput of
{"task": "processData", "payload": [1, 2, 3, 4, 5]}; one-way 1 MiB float64 numpy arrays.
Each repeat runs every system once, interleaved, so drift hits all alike; the report gives
medians and each baseline's ratio to ringport.  Threads start on a barrier.  Every run checks
its result (counts, checksums) and fails loudly if it is wrong.
"""
import argparse
import multiprocessing
import platform
import queue
import statistics
import sys
import sysconfig
import threading
import time

import ringport

MSG = {"task": "processData", "payload": [1, 2, 3, 4, 5]}


# ---------------------------------------------------------------- transports: (send, recv) pairs

def ringport_pair():
    ch = ringport.MessageChannel()
    return (ch.port1.post_message, ch.port1.receive), (ch.port2.post_message, ch.port2.receive), ch


def queue_pair():
    a, b = queue.Queue(), queue.Queue()
    return (a.put, b.get), (b.put, a.get), None


def pipe_pair():
    c1, c2 = multiprocessing.Pipe()
    return (c1.send, c1.recv), (c2.send, c2.recv), (c1, c2)


SYSTEMS = {"ringport": ringport_pair, "queue.Queue": queue_pair, "multiprocessing.Pipe": pipe_pair}


def run_threads(main_fn, peer_fn):
    barrier = threading.Barrier(2)
    err = []

    def peer():
        try:
            barrier.wait()
            peer_fn()
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=peer)
    t.start()
    barrier.wait()
    t0 = time.perf_counter()
    result = main_fn()
    dt = time.perf_counter() - t0
    t.join()
    if err:
        raise err[0]
    return dt, result


def cleanup(keep):
    if isinstance(keep, ringport.MessageChannel):
        keep.port1.close()
    elif isinstance(keep, tuple):
        for c in keep:
            c.close()


# ---------------------------------------------------------------- workloads

def pingpong(make, n):
    (s1, r1), (s2, r2), keep = make()

    def peer():
        for _ in range(n):
            s2(r2() + 1)

    def main():
        total = 0
        for i in range(n):
            s1(i)
            total += r1() - i
        return total

    dt, total = run_threads(main, peer)
    cleanup(keep)
    if total != n:
        raise AssertionError(f"ping-pong lost or corrupted replies: {total} != {n}")
    return dt / n * 1e6  # microseconds per round trip


def throughput(make, n):
    (s1, r1), (s2, r2), keep = make()

    def peer():
        for _ in range(n):
            s1(MSG)

    def main():
        ok = 0
        for _ in range(n):
            m = r2()
            ok += m["payload"][4] == 5
        return ok

    dt, ok = run_threads(main, peer)
    cleanup(keep)
    if ok != n:
        raise AssertionError(f"throughput run received {ok} good messages of {n}")
    return n / dt / 1e6  # million messages per second


def arrays(make, n):
    import numpy as np
    a = np.arange(131072, dtype=np.float64)  # 1 MiB
    (s1, r1), (s2, r2), keep = make()

    def peer():
        for i in range(n):
            a[0] = i
            s1(a)

    def main():
        total = 0.0
        for _ in range(n):
            m = r2()
            total += m[0] + m[-1]
        return total

    # a[0] changes under the sender's feet for queue.Queue (it passes a reference): only the
    # copying systems can be checked exactly
    dt, total = run_threads(main, peer)
    cleanup(keep)
    expected = sum(range(n)) + n * 131071.0
    if make is not queue_pair and total != expected:
        raise AssertionError(f"array checksum {total} != {expected}")
    return n * a.nbytes / dt / 1e9  # GB/s


WORKLOADS = {
    "ping-pong round trip (us, lower is better)": (pingpong, 20000, "lower"),
    "processData dicts one way (M msg/s)": (throughput, 200000, "higher"),
    "1 MiB float64 arrays one way (GB/s)": (arrays, 400, "higher"),
}


def machine():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os
    ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}"
            f"{' free-threaded' if ft else ''}; ringport {ringport.__version__}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=float, default=1.0, help="scale the message counts")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="small counts, 3 repeats")
    ap.add_argument("--only", help="run only workloads whose name contains this")
    args = ap.parse_args(argv)
    if args.quick:
        args.count, args.repeat = min(args.count, 0.1), 3
    try:
        import numpy  # noqa: F401
    except ImportError:
        numpy = None
    print(machine())
    for wname, (fn, n, better) in WORKLOADS.items():
        if args.only and args.only not in wname:
            continue
        if fn is arrays and numpy is None:
            print(f"\n{wname}: skipped (numpy not installed)")
            continue
        n = max(10, int(n * args.count))
        res = {s: [] for s in SYSTEMS}
        for _ in range(args.repeat):
            for s, make in SYSTEMS.items():
                res[s].append(fn(make, n))
        print(f"\n{wname}, n={n}, median of {args.repeat}:")
        base = statistics.median(res["ringport"])
        for s, vals in res.items():
            med = statistics.median(vals)
            ratio = (med / base) if better == "lower" else (base / med)
            extra = "" if s == "ringport" else f"   ringport is {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'}"
            print(f"  {s:22s} {med:10.3f}{extra}")


if __name__ == "__main__":
    sys.exit(main())
