"""Benchmark 10: what a channel costs before it carries anything.  Creation: the time to make a
two-way channel and let it go, n in a row.  Memory: the growth of the process's RSS per live,
unused channel, n kept alive at once.  Every system makes the same thing: one two-way pair of
endpoints (two queues for queue.Queue, one duplex pipe for multiprocessing)."""
import json
import multiprocessing
import queue
import sys
import time

import ringport

from ringport.bench.common import Bench, Sample, System, rss_bytes, run_driver, run_node


def _ringport():
    return ringport.MessageChannel()


def _queues():
    return queue.Queue(), queue.Queue()


def _pipe():
    return multiprocessing.Pipe()


def create(make, n):
    """Microseconds per channel made and dropped (each dropped before the next is made)."""
    make()
    t0 = time.perf_counter()
    for _ in range(n):
        make()
    return Sample((time.perf_counter() - t0) / n * 1e6, n)


MAKERS = {"ringport": _ringport, "queues": _queues}


def memory(kind, n):
    """KiB of RSS per live channel that has carried nothing, measured in a fresh process of this
    interpreter (in this one, the memory earlier benchmarks freed would be used again first, and
    the growth could come out at nothing or below)."""
    out = run_driver("ringport.bench.channels", {"kind": kind, "n": n})
    return Sample(out["value"], out["n"])


def _memory_here(make, n):
    before = rss_bytes()
    keep = [make() for _ in range(n)]
    grown = rss_bytes() - before   # (with all n alive)
    del keep
    return grown / n / 1024


def node(case, n):
    out = run_node("channels.js", {"case": case, "n": n})
    return Sample(out["value"], out["n"])


def benchmarks(p):
    n = p["channels"]
    note = f"{n} channels; a two-way pair of endpoints in every row"
    new = Bench("channel-new", "channel", "created and dropped", "us", "lower", [
        System("ringport MessageChannel()", lambda: create(_ringport, n)),
        System("queue.Queue pair", lambda: create(_queues, n)),
        System("multiprocessing.Pipe()", lambda: create(_pipe, n)),
        System("Node.js new MessageChannel()", lambda: node("new", n)),
    ], note=note + "; Node's are freed by its garbage collector later, ringport's at once")
    memory_ = Bench("channel-memory", "channel", "RSS per live, unused channel", "KiB/channel",
                    "lower", [
                        System("ringport MessageChannel()", lambda: memory("ringport", n)),
                        System("queue.Queue pair", lambda: memory("queues", n)),
                        System("multiprocessing.Pipe()", skip="its buffers are kernel memory, "
                               "not in the process's RSS"),
                        System("Node.js new MessageChannel()", lambda: node("memory", n)),
                    ], note=note)
    return [new, memory_]


def main(argv):
    """In a fresh process (run_driver): the memory row of one system, as JSON."""
    params = json.loads(argv[0])
    make, n = MAKERS[params["kind"]], params["n"]
    make()   # (whatever the first one imports or caches is not counted)
    if rss_bytes() is None:
        print(json.dumps({"skip": "no /proc/self/statm to read RSS from"}))
        return 0
    print(json.dumps({"value": _memory_here(make, n), "n": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
