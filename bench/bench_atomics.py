"""Atomic counters and wait/notify round trips: ringport.atomics against a lock baseline.

    python bench/bench_atomics.py --count 200000 --repeat 5

Two threads increment one Int32Array element, started on a barrier:
  lock        a threading.Lock-protected Python int (the baseline)
  py-atomics  ringport.atomics.add from Python
  pypi        the PyPI `atomics` package (if importable)
  cimport     a Cython loop using ringport.atomics' nogil add_i32 (built into a temp dir)
Then a ping-pong: two threads alternate through atomics.wait/notify (one round trip = two
hand-offs).  Medians over --repeat runs; ratios are against the lock baseline.
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))   # userext build helper

import ringport  # noqa: E402
from ringport import Int32Array, atomics  # noqa: E402


def run_pair(work, count):
    """Seconds for two threads each running work(count), started together on a barrier."""
    barrier = threading.Barrier(3)
    done = []

    def body():
        barrier.wait()
        work(count)
        done.append(time.perf_counter())

    ts = [threading.Thread(target=body) for _ in range(2)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return max(done) - t0


def bench_lock(count):
    lock = threading.Lock()
    box = [0]

    def work(n):
        for _ in range(n):
            with lock:
                box[0] += 1

    dt = run_pair(work, count)
    return dt, box[0]


def bench_py_atomics(count):
    a = Int32Array(1)
    add = atomics.add

    def work(n):
        for _ in range(n):
            add(a, 0, 1)

    dt = run_pair(work, count)
    return dt, a[0]


def bench_pypi_atomics(count):
    import atomics as pypi

    buf = bytearray(4)

    def work(n):
        with pypi.atomicview(buffer=buf, atype=pypi.INT) as v:
            for _ in range(n):
                v.inc()

    dt = run_pair(work, count)
    return dt, int.from_bytes(buf, sys.byteorder, signed=True)


def make_cimport(ext):
    def bench(count):
        a = Int32Array(1)
        dt = run_pair(lambda n: ext.add_loop(a, 0, n), count)
        return dt, a[0]
    return bench


def bench_ping_pong(rounds):
    a = Int32Array(1)

    def side(me):
        for i in range(rounds):
            want = 2 * i + me
            while True:
                v = atomics.load(a, 0)
                if v == want:
                    break
                atomics.wait(a, 0, v, 5)
            atomics.store(a, 0, want + 1)
            atomics.notify(a, 0)

    ts = [threading.Thread(target=side, args=(me,)) for me in (1, 0)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    assert a[0] == 2 * rounds
    return dt / rounds * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200000, help="increments per thread")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5000, help="ping-pong round trips")
    ap.add_argument("--no-cimport", action="store_true", help="skip building the Cython loop")
    args = ap.parse_args()

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"Python {platform.python_version()} ({'GIL' if gil else 'free-threaded'}), "
          f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or ''}".rstrip())

    cases = [("lock", bench_lock), ("py-atomics", bench_py_atomics)]
    try:
        import atomics as _pypi  # noqa: F401
        cases.append(("pypi-atomics", bench_pypi_atomics))
    except ImportError:
        print("(PyPI 'atomics' not installed: skipped)")
    tmp = None
    if not args.no_cimport:
        import userext
        if userext.have_compiler():
            tmp = tempfile.TemporaryDirectory()
            cases.append(("cimport-nogil", make_cimport(userext.build(tmp.name))))

    expected = 2 * args.count
    results = {}
    for name, fn in cases:
        times = []
        for _ in range(args.repeat):
            dt, total = fn(args.count)
            if total != expected:
                raise SystemExit(f"{name}: count {total} != {expected}")
            times.append(dt)
        results[name] = statistics.median(times)
    base = expected / results["lock"]
    print(f"\n{'counter (2 threads)':<20}{'Mops/s':>10}{'vs lock':>10}   exact count {expected}")
    for name, dt in results.items():
        ops = expected / dt
        print(f"{name:<20}{ops / 1e6:>10.2f}{ops / base:>9.2f}x")

    pp = statistics.median(bench_ping_pong(args.rounds) for _ in range(args.repeat))
    print(f"\nwait/notify ping-pong round trip: {pp:.1f} us (median of {args.repeat})")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
