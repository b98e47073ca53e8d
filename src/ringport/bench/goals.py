"""The performance targets the project's issues set (10: process workers, 12: performance; the
pool's, issue 11, are in ringport.bench.pool), judged against one run's results.

Each goal names a row and either another row of the same benchmark (a ratio, equal work: both
rows' medians) or an absolute figure in the benchmark's unit.  A goal whose row did not run here
(another interpreter, another backend) is left out; one whose baseline did not run is printed as
n/a.  Nothing here looks at the interpreter running it, so `--load` judges a saved run the same.
"""

PROC = "ringport Worker (process)"
SUB = "ringport Worker (subinterpreter)"

# (issue, bench, system, kind, argument, minimum or maximum)
#   kind "vs": the system is at least <min> times better than the row <argument>
#   kind "max" / "min": the system's median is at most / at least <bound> (the bench's unit)
#   kind "speedup": the system's scaling speed-up over its own one-worker time is at least <min>
GOALS = (
    # issue 10, on every interpreter (it names 3.11 and 3.13t)
    (10, "pingpong", PROC, "vs", "multiprocessing.Pipe (processes)", 10.0),
    (10, "pingpong", PROC, "max", None, 5.0),
    (10, "processData", PROC, "vs", "multiprocessing.Queue (processes)", 5.0),
    (10, "processData", PROC, "vs", "faster-fifo (processes)", 2.0),
    (10, "array-copy", PROC, "vs", "multiprocessing.Pipe (processes)", 10.0),
    (10, "array-share-size", f"{PROC}, 64 MiB", "vs", f"{PROC}, 1 MiB", 0.5),
    (10, "worker-startup", PROC, "vs", "multiprocessing.Process (forkserver)", 1.0),
    (10, "scaling-2", PROC, "speedup", None, 1.8),
    # issue 12: the subinterpreter rows (3.13, 3.14) and every parallel backend's scaling
    (12, "worker-startup", "ringport Worker (subinterpreter, prestart)", "max", None, 10.0),
    (12, "worker-startup", SUB, "max", None, 25.0),
    (12, "array-copy-array", SUB, "min", None, 10.0),
    (12, "scaling-2", SUB, "speedup", None, 1.9),
    (12, "scaling-2", PROC, "speedup", None, 1.9),
    (12, "channel-new", "ringport MessageChannel()", "max", None, 10.0),
    (12, "channel-memory", "ringport MessageChannel()", "max", None, 16.0),
)

# issue 12's targets measured on the free-threaded build (where a thread worker is parallel)
FREE_THREADED_GOALS = (
    (12, "processData", "ringport Worker (thread)", "vs", "Node.js worker_threads", 3.0),
    (12, "processData", "ringport Worker (thread)", "vs", "queue.Queue (threads)", 5.0),
    (12, "processData_many", "ringport (threads) via post_many/receive_many", "min", None, 5.0),
    (12, "processData_many", "ringport Worker (thread) via post_many/receive_many", "min", None,
     5.0),
    (12, "processData_many", f"{PROC} via post_many/receive_many", "min", None, 5.0),
    (12, "counter", "ringport arr.add, bound once (Python, threads)", "vs",
     "threading.Lock + int (threads)", 5.0),
    (12, "worker-startup", "ringport Worker (thread)", "max", None, 0.5),
    (12, "scaling-2", "ringport Worker (thread)", "speedup", None, 1.9),
)


def _goals_for(python):
    ft = bool((python or {}).get("free_threaded")) and not (python or {}).get("gil_enabled")
    return GOALS + (FREE_THREADED_GOALS if ft else ())


def _better(b, mine, other):
    return other / mine if b["better"] == "lower" else mine / other


def judge(benchmarks, python=None):
    """[{issue, bench, system, goal, value, min or max, unit?, met}] for one run's benchmarks
    (the "benchmarks" of its JSON) and its "python" record."""
    out = []
    for issue, bid, name, kind, arg, bound in _goals_for(python):
        b = benchmarks.get(bid)
        d = b["systems"].get(name) if b else None
        if d is None or d.get("median") is None:
            continue
        t = {"issue": issue, "bench": bid, "system": name}
        if kind == "vs":
            o = b["systems"].get(arg)
            t["value"] = _better(b, d["median"], o["median"]) \
                if o and o.get("median") and d["median"] else None
            t["goal"] = f">= {bound:g}x {arg} ({bid})"
            t["min"] = bound
        elif kind == "speedup":
            t["value"] = d.get("speedup")
            t["goal"] = f">= {bound:g}x its own 1-worker time ({bid})"
            t["min"] = bound
        else:
            t["value"] = d["median"]
            t["unit"] = b["unit"]
            t["goal"] = f"{'<=' if kind == 'max' else '>='} {bound:g} {b['unit']} ({bid})"
            t["max" if kind == "max" else "min"] = bound
        v = t["value"]
        t["met"] = None if v is None else v <= t["max"] if "max" in t else v >= t["min"]
        t["goal"] += f" [issue {issue}]"
        out.append(t)
    return out
