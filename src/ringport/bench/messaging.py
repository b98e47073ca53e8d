"""Benchmarks 1-4: ping-pong round trip, processData throughput, 1 MiB float64 arrays (copied
and transferred), byte strings by size.

Every system is a *transport*: a peer started per measurement (thread, Worker, process or
subinterpreter) that runs ringport.bench.peers over the system's own send/receive, and a main
side here that times and verifies.  Peers are started and answer a first message before the
clock starts, so start-up is never timed here (benchmark 7 times it).
"""
import os
import queue
import statistics
import sys
import threading
import time

import ringport

from ringport.bench import peers
from ringport.bench.common import (Bench, Sample, Skip, System, check, has_numpy, mp_context,
                                   run_driver, run_node, worker_backends)

WORKER_SRC = ("import ringport\nfrom ringport.bench import peers\n"
              "peers.serve_port(ringport.parent_port)\n")
SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------ transports

class Transport:
    """send/recv on the main side; start(op, args) sets the peer going; close() ends it."""

    def start(self, op, args):
        self.send((op, args))

    def ready(self):
        self.start("ready", {})
        check(self.recv() == "ready", "peer did not answer its first message")
        return self


class RingportThreads(Transport):
    """A plain threading.Thread on the other end of a MessageChannel (no Worker needed)."""
    name = "ringport (threads)"

    def __init__(self):
        self.ch = ringport.MessageChannel()
        self.send, self.recv = self.ch.port1.post_message, self.ch.port1.receive
        self.t = threading.Thread(target=peers.serve_port, args=(self.ch.port2,), daemon=True)
        self.t.start()

    def close(self):
        self.send(None)
        self.t.join(60)
        self.ch.port1.close()


class RingportWorker(Transport):
    def __init__(self, backend):
        self.w = ringport.Worker(WORKER_SRC, eval=True, backend=backend,
                                 name=f"bench-{backend}")
        self.send, self.recv = self.w.post_message, self.w.receive

    def close(self):
        self.send(None)
        code = self.w.join(60)
        if code is None:
            self.w.terminate()
            raise RuntimeError("worker did not exit within 60 s")
        check(code == 0, f"worker exited with code {code}")


class QueueThreads(Transport):
    """threading + two queue.Queue: objects pass by reference, nothing is copied."""
    name = "queue.Queue (threads)"

    def __init__(self):
        a, b = queue.Queue(), queue.Queue()
        self.send, self.recv = a.put, b.get
        self.t = threading.Thread(target=peers.serve_queues, args=(a, b), daemon=True)
        self.t.start()

    def close(self):
        self.send(None)
        self.t.join(60)


class MpPipe(Transport):
    """multiprocessing.Pipe to a child process (forkserver): pickled, between processes."""
    name = "multiprocessing.Pipe (processes)"

    def __init__(self):
        ctx = mp_context()
        self.c, child = ctx.Pipe()
        self.p = ctx.Process(target=peers.serve_conn, args=(child,), daemon=True)
        self.p.start()
        child.close()
        self.send, self.recv = self.c.send, self.c.recv

    def close(self):
        self.send(None)
        self.p.join(60)
        self.c.close()


class MpPipeBytes(MpPipe):
    """multiprocessing.Pipe moving raw bytes (send_bytes/recv_bytes): no pickling at all."""
    name = "multiprocessing.Pipe send_bytes (processes)"

    def ready(self):
        super().ready()                 # commands and the first answer are still pickled
        import numpy as np
        rb = self.c.recv_bytes
        self.recv = lambda: np.frombuffer(rb(), dtype=np.float64)
        return self


class MpQueue(Transport):
    """Two multiprocessing.Queue to a child process (forkserver)."""
    name = "multiprocessing.Queue (processes)"

    def __init__(self):
        ctx = mp_context()
        self.a, self.b = ctx.Queue(), ctx.Queue()
        self.p = ctx.Process(target=peers.serve_queues, args=(self.a, self.b), daemon=True)
        self.p.start()
        self.send, self.recv = self.a.put, self.b.get

    def close(self):
        self.send(None)
        self.p.join(60)
        for q in (self.a, self.b):
            q.close()
            q.join_thread()


class FasterFifo(Transport):
    """faster-fifo queues to a forked child.  Only ever built inside ringport.bench.ffdriver's
    own process: importing faster_fifo turns the GIL back on in a free-threaded interpreter."""
    name = "faster-fifo (processes)"

    def __init__(self):
        import multiprocessing
        from faster_fifo import Queue
        ctx = multiprocessing.get_context("fork")     # the driver process has no threads
        self.a, self.b = Queue(max_size_bytes=16 << 20), Queue(max_size_bytes=16 << 20)
        self.p = ctx.Process(target=peers.serve_queues, args=(self.a, self.b), daemon=True)
        self.p.start()
        self.send = self.a.put
        self.recv = lambda: self.b.get(timeout=60)

    def close(self):
        self.send(None)
        self.p.join(60)


def interp_api():
    """(create_interpreter, create_queue, label) of the stdlib's interpreters, or None."""
    try:
        from concurrent import interpreters
        return interpreters.create, interpreters.create_queue, "concurrent.interpreters queues"
    except ImportError:
        pass
    if sys.version_info >= (3, 13):
        try:
            from test.support import interpreters
            from test.support.interpreters import queues
            return (interpreters.create, queues.create,
                    "_interpreters/_interpqueues queues")
        except ImportError:
            pass
    return None


class InterpQueues(Transport):
    """The stdlib's cross-interpreter queues to a subinterpreter run by a thread.  Their blocking
    get() polls with a ~10 ms sleep, so they get few iterations."""

    def __init__(self):
        create, create_queue, self.name = interp_api()
        self.a, self.b = create_queue(), create_queue()
        self.interp = create()
        # the queues are reopened by id inside (3.13's prepare_main cannot pass them)
        cls = type(self.a)
        code = (f"import sys\nsys.path.insert(0, {SRC_ROOT!r})\n"
                f"from {cls.__module__} import {cls.__name__} as Q\n"
                f"qin, qout = Q({self.a.id}), Q({self.b.id})\n"
                "from ringport.bench import peers\npeers.serve_queues(qin, qout)\n")
        self.err = []
        self.t = threading.Thread(target=self._run, args=(code,), daemon=True)
        self.t.start()
        self.send, self.recv = self.a.put, self._get

    def _run(self, code):
        try:
            self.interp.exec(code)
        except BaseException as e:
            self.err.append(e)

    def _get(self):
        while True:
            try:
                return self.b.get(timeout=1)
            except Exception:
                if self.err:
                    raise RuntimeError(f"interpreter peer failed: {self.err[0]}")
                if not self.t.is_alive():
                    raise RuntimeError("interpreter peer ended")

    def close(self):
        self.send(None)
        self.t.join(60)
        self.interp.close()


# ------------------------------------------------------------------ measurements (main side)

def m_pingpong(t, n):
    t.start("echo", {"n": n})
    send, recv, pc = t.send, t.recv, time.perf_counter_ns
    lat = []
    ok = 0
    for i in range(n):
        t0 = pc()
        send(i)
        v = recv()
        lat.append(pc() - t0)
        ok += v == i + 1
    check(ok == n, f"ping-pong: {ok} good replies of {n}")
    us = [x / 1e3 for x in lat]
    return Sample(statistics.median(us), n, us)


def _oneway(t, op, args, n, accept):
    """Time n messages of one kind from the peer; accept(m) -> a number summed for checking."""
    recv = t.recv
    total = 0
    t0 = time.perf_counter()
    t.start(op, dict(args, n=n))
    for _ in range(n):
        total += accept(recv())
    return time.perf_counter() - t0, total


def m_msg(t, n):
    def acc(m):
        return m["task"] == "processData" and m["payload"] == [1, 2, 3, 4, 5]
    dt, ok = _oneway(t, "msg", {}, n, acc)
    check(ok == n, f"processData: {ok} good messages of {n}")
    return Sample(n / dt / 1e6, n)


def m_bytes(t, n, size):
    def acc(m):
        return len(m) * 2 + m[0]
    dt, total = _oneway(t, "bytes", {"size": size}, n, acc)
    check(total == 2 * n * size + n // 2, f"bytes {size}: checksum {total} != "
          f"{2 * n * size + n // 2}")
    return Sample(n * size / dt / 1e6, n)


def _arrays(t, n, op, args):
    """Time n float64 arrays of args["len"] (default 1 MiB) elements from the peer, checked."""
    length = args.get("len", peers.ARRAY_LEN)

    def acc(m):
        check(len(m) == length, f"array of {len(m)} elements, not {length}")
        return m[0] + m[-1]
    # one untimed message first, so that the peer's import of numpy (tens of ms in a fresh
    # process) is not timed as transport
    _oneway(t, op, args, 1, acc)
    dt, total = _oneway(t, op, args, n, acc)
    want = sum(range(n)) + n * float(length - 1)
    check(total == want, f"{op}: checksum {total} != {want}")
    return dt, length


def m_array(t, n, op, args=None):
    dt, length = _arrays(t, n, op, args or {})
    return Sample(n * length * 8 / dt / 1e9, n)


def m_share(t, n, length):
    """Time per message of a fresh SharedArrayBuffer-backed array of `length` float64s."""
    dt, _ = _arrays(t, n, "array_shared", {"len": length})
    return Sample(dt / n * 1e6, n)


def m_msg_many(t, n):
    """processData through post_many (peer) and receive_many (here): ringport ports only."""
    port = t.ch.port1 if isinstance(t, RingportThreads) else t.w._port
    recv_many = port.receive_many
    ok = 0
    t0 = time.perf_counter()
    t.start("msg_many", {"n": n})
    while ok < n:
        for m in recv_many(1024):
            ok += m["task"] == "processData" and m["payload"] == [1, 2, 3, 4, 5]
    dt = time.perf_counter() - t0
    check(ok == n, f"processData via post_many: {ok} good messages of {n}")
    return Sample(n / dt / 1e6, n)


MEASURES = {"pingpong": m_pingpong, "msg": m_msg, "msg_many": m_msg_many, "bytes": m_bytes, "array": m_array,
            "share": m_share}


def measure(make, what, *args):
    t = make()
    try:
        t.ready()
        return MEASURES[what](t, *args)
    finally:
        t.close()


def ff_system(what, *args):
    """faster-fifo rows run in ringport.bench.ffdriver's own process (see FasterFifo)."""
    def fn():
        out = run_driver("ringport.bench.ffdriver", {"what": what, "args": list(args)})
        return Sample(out["value"], out["n"], out.get("samples", []))
    return fn


def node_system(case, params):
    def fn():
        out = run_node("messaging.js", dict(params, case=case))
        return Sample(out["value"], out["n"], out.get("samples", []))
    return fn


# ------------------------------------------------------------------ the benchmarks

BYTE_SIZES = [1024, 2048, 4096, 8192, 65536]
PIPE = MpPipe.name


def benchmarks(p):
    """p: sizes from the runner (counts already scaled)."""
    numpy = has_numpy()
    backends = worker_backends()
    api = interp_api()
    ff = _ff_available()
    thread_ts = [("ringport (threads)", RingportThreads)]
    for b in backends:
        thread_ts.append((f"ringport Worker ({b})", (lambda b=b: RingportWorker(b))))
    base_ts = [("queue.Queue (threads)", QueueThreads),
               ("multiprocessing.Pipe (processes)", MpPipe),
               ("multiprocessing.Queue (processes)", MpQueue)]

    def rows(what, args_for, interp_n=None, node=None, ff_ok=True, extra=(), base=()):
        """base: the rows the process worker's row is compared with (equal work, both
        between two processes)."""
        out = []
        for name, make in thread_ts + base_ts:
            a = args_for(name)
            if isinstance(a, str):
                out.append(System(name, skip=a))
            else:
                out.append(System(name, (lambda make=make, a=a: measure(make, what, *a)),
                                  base=base if name == "ringport Worker (process)" else ()))
        out.extend(extra)
        if not ff_ok:
            out.append(System("faster-fifo (processes)",
                              skip="no zero-copy transfer between processes in this API"))
        elif ff is True and isinstance(args_for("ff"), str):
            out.append(System("faster-fifo (processes)", skip=args_for("ff")))
        elif ff is True:
            out.append(System("faster-fifo (processes)", ff_system(what, *args_for("ff"))))
        else:
            out.append(System("faster-fifo (processes)", skip=ff))
        if api is None:
            out.append(System("interpreters queues", skip="no concurrent.interpreters (3.14) "
                              "or _interpreters/_interpqueues (3.13) on this Python"))
        elif interp_n is not None:
            out.append(System(api[2], (lambda: measure(InterpQueues, what, interp_n)),
                              note=f"{interp_n} iterations: get() polls with ~10 ms sleeps"))
        else:
            out.append(System(api[2], skip="polling queues (~10 ms per blocking get): run "
                              "for ping-pong and processData only"))
        if node:
            out.append(System("Node.js worker_threads", node_system(*node)))
        return out

    benches = []
    n = p["pingpong"]
    benches.append(Bench(
        "pingpong", "pingpong", "ping-pong round trip, small int", "us", "lower",
        rows("pingpong", lambda s: (n,), interp_n=p["interp"],
             node=("pingpong", {"n": n}), base=(PIPE,)),
        latency=True, note="per-round-trip samples; median and p99 over all repeats"))
    n = p["msg"]
    benches.append(Bench(
        "processData", "processData", "one-way {'task': 'processData', 'payload': [1..5]}",
        "M msg/s", "higher",
        rows("msg", lambda s: (n,), interp_n=p["interp"] * 10, node=("msg", {"n": n}),
             base=("multiprocessing.Queue (processes)", "faster-fifo (processes)")),
        note="every system pickles or encodes each dict on the sending side and decodes it "
             "on the receiving side, one get()/receive() per message"))
    benches.append(Bench(
        "processData_many", "processData",
        "one-way {'task': 'processData', 'payload': [1..5]}, batches of 256 / up to 1024",
        "M msg/s", "higher",
        # (n bound now: it names the array count further down)
        [System(name + " via post_many/receive_many",
                (lambda make=make, n=n: measure(make, "msg_many", n)))
         for name, make in thread_ts] +
        [System("queue.Queue (threads)", (lambda n=n: measure(QueueThreads, "msg", n))),
         System("Node.js worker_threads", node_system("msg", {"n": n}))],
        note="ringport rows batch on both sides; the baselines are the one-message rows' "
             "systems, in the same run"))

    n = p["array"]

    def copy_args(name):
        if name == "ringport Worker (subinterpreter)":
            return (n, "array_copy", {"numpy": False})
        if not numpy:
            return "numpy not installed"
        if name in ("queue.Queue (threads)", "multiprocessing.Queue (processes)"):
            return (n, "array_copy", {"copy_each": True})
        return (n, "array_copy", {})

    raw = [System(MpPipeBytes.name, (lambda: measure(MpPipeBytes, "array", n, "array_bytes")))
           if numpy else System(MpPipeBytes.name, skip="numpy not installed")]
    benches.append(Bench(
        "array-copy", "1 MiB float64 arrays", "copied", "GB/s", "higher",
        rows("array", copy_args, node=("array_copy", {"n": n}), extra=raw,
             base=(MpPipeBytes.name, PIPE)),
        note="numpy arrays (array.array('d') from a subinterpreter, where numpy does not "
             "load); the senders of queue.Queue (which passes references) and "
             "multiprocessing.Queue (which pickles later, in a feeder thread) copy each array "
             "themselves; send_bytes: the array's bytes, received as bytes and viewed by "
             "numpy.frombuffer"))

    # the same copies without numpy: array.array('d') and a memoryview of one, on every system
    # that can send them (equal work: the same 1 MiB float64 array, n times)
    for kind, label in (("array", "array.array('d')"), ("memoryview", "memoryview of one")):
        def plain_args(name, kind=kind):
            if (name == "ff" or name.startswith("multiprocessing")) and kind == "memoryview":
                return "pickle cannot send a memoryview"
            if name in ("queue.Queue (threads)", "multiprocessing.Queue (processes)"):
                return (n, "array_copy", {"kind": kind, "copy_each": True})
            return (n, "array_copy", {"kind": kind})
        benches.append(Bench(
            f"array-copy-{kind}", "1 MiB float64 arrays", f"copied, {label}", "GB/s", "higher",
            rows("array", plain_args, node=("array_copy", {"n": n}), ff_ok=True,
                 base=(PIPE,) if kind == "array" else ()),
            note=f"{label} on every ringport backend (no numpy needed); the senders of queue.Queue "
                 "and multiprocessing.Queue copy each; Node: the same Float64Array, structured-cloned"))

    def xfer_args(name):
        if name.startswith("ringport"):
            return (n, "array_shared", {})
        if name == "queue.Queue (threads)":
            return (n, "array_fresh", {}) if numpy else "numpy not installed"
        return "no zero-copy transfer between processes in this API"

    benches.append(Bench(
        "array-transfer", "1 MiB float64 arrays", "transferred", "GB/s", "higher",
        rows("array", xfer_args, node=("array_transfer", {"n": n}), ff_ok=False),
        note="ringport: a fresh SharedArrayBuffer-backed Float64Array per message, shared "
             "(not copied) and dropped by the sender; Node: postMessage(arr, [arr.buffer]); "
             "queue.Queue: a fresh numpy array by reference"))
    big = 64 * peers.ARRAY_LEN
    share = []
    for name, make in thread_ts:
        one = f"{name}, 1 MiB"
        share += [System(one, (lambda make=make: measure(make, "share", n, peers.ARRAY_LEN))),
                  System(f"{name}, 64 MiB", (lambda make=make: measure(make, "share", n, big)),
                         base=(one,))]
    share.append(System("Node.js worker_threads", skip="measured at 1 MiB only (transferred)"))
    benches.append(Bench(
        "array-share-size", "1 MiB float64 arrays", "shared, 64 MiB vs 1 MiB", "us/msg", "lower",
        share, note="a fresh SharedArrayBuffer-backed Float64Array per message, as in "
        "'transferred'; the time per message should not grow with the size (the 64 MiB "
        "row's 'vs' ratio near 1)"))
    for size in BYTE_SIZES:
        nb = max(2, int(p["bytes"] * min(1.0, 8192 / size) * (4 if size <= 2048 else 1)))
        label = f"{size // 1024} KiB"
        benches.append(Bench(
            f"bytes-{size // 1024}k", "byte strings", label, "MB/s", "higher",
            rows("bytes", lambda s, nb=nb, size=size: (nb, size),
                 node=("bytes", {"n": nb, "size": size}), base=(PIPE,))))
    return benches


def _ff_available():
    import importlib.util
    if sys.platform != "linux":
        return "faster-fifo is Linux-only"
    if importlib.util.find_spec("faster_fifo") is None:
        return "faster-fifo not installed (pip install ringport[bench])"
    return True
