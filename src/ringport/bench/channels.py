"""Benchmark 10: what a channel costs before it carries anything.  Creation: the time to make a
two-way channel and let it go, n in a row.  Memory: the growth of the process's RSS per live,
unused channel, n kept alive at once.  Every system makes the same thing: one two-way pair of
endpoints (two queues for queue.Queue, one duplex pipe for multiprocessing)."""
import multiprocessing
import queue
import time

import ringport

from ringport.bench.common import Bench, Sample, Skip, System, rss_bytes, run_node


def _ringport():
    return ringport.MessageChannel()


def _queues():
    return queue.Queue(), queue.Queue()


def _pipe():
    return multiprocessing.Pipe()


def _close(c):
    if isinstance(c, ringport.MessageChannel):
        c.port1.close()
        c.port2.close()
    elif isinstance(c, tuple) and hasattr(c[0], "close"):
        c[0].close()
        c[1].close()


def create(make, n):
    """Microseconds per channel made and dropped (each dropped before the next is made)."""
    make()
    t0 = time.perf_counter()
    for _ in range(n):
        make()
    return Sample((time.perf_counter() - t0) / n * 1e6, n)


def memory(make, n):
    """KiB of RSS per live channel that has carried nothing."""
    before = rss_bytes()
    if before is None:
        raise Skip("no /proc/self/statm to read RSS from")
    keep = [make() for _ in range(n)]
    grown = rss_bytes() - before
    for c in keep:
        _close(c)
    return Sample(grown / n / 1024, n)


def node(case, n):
    out = run_node("channels.js", {"case": case, "n": n})
    return Sample(out["value"], out["n"])


def benchmarks(p):
    n = p["channels"]
    benches = []
    for what, fn, unit, title in (("new", create, "us", "created and dropped"),
                                  ("memory", memory, "KiB/channel", "RSS per live, unused channel")):
        rows = [System("ringport MessageChannel()", lambda fn=fn: fn(_ringport, n)),
                System("queue.Queue pair", lambda fn=fn: fn(_queues, n)),
                System("multiprocessing.Pipe()", lambda fn=fn: fn(_pipe, n))
                if what == "new" else
                System("multiprocessing.Pipe()", skip="its buffers are kernel memory, not in the "
                       "process's RSS"),
                System("Node.js new MessageChannel()", lambda what=what: node(what, n))]
        benches.append(Bench(f"channel-{what}", "channel", title, unit, "lower", rows,
                             note=f"{n} channels; a two-way pair of endpoints in every row"
                             + ("; Node's are freed by its garbage collector later, ringport's "
                                "at once" if what == "new" else "")))
    return benches

