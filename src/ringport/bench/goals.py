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
    (12, "processData", "ringport Worker (thread)", "vs", "Node.js worker_threads", 3.0),
    (12, "processData", "ringport Worker (thread)", "vs", "queue.Queue (threads)", 5.0),
    (12, "processData_many", "ringport (threads) via post_many/receive_many", "min", None, 5.0),
    (12, "processData_many", "ringport Worker (thread) via post_many/receive_many", "min", None,
     5.0),
    (12, "processData_many", f"{PROC} via post_many/receive_many", "min", None, 5.0),
    (12, "counter", "ringport arr.add, bound once (Python, threads)", "vs",
     "threading.Lock + int (threads)", 5.0),
    (12, "worker-startup", "ringport Worker (subinterpreter, prestart)", "max", None, 10.0),
    (12, "worker-startup", SUB, "max", None, 25.0),
    (12, "array-copy-array", SUB, "min", None, 10.0),
    (12, "channel-new", "ringport MessageChannel()", "max", None, 10.0),
    (12, "channel-memory", "ringport MessageChannel()", "max", None, 16.0),
    (10, "pingpong", PROC, "vs", "multiprocessing.Pipe (processes)", 10.0),
    (10, "pingpong", PROC, "max", None, 5.0),
    (10, "processData", PROC, "vs", "multiprocessing.Queue (processes)", 5.0),
    (10, "processData", PROC, "vs", "faster-fifo (processes)", 2.0),
    (10, "array-copy", PROC, "vs", "multiprocessing.Pipe (processes)", 10.0),
    (10, "array-share-size", f"{PROC}, 64 MiB", "vs", f"{PROC}, 1 MiB", 0.5),
    (10, "worker-startup", PROC, "vs", "multiprocessing.Process (forkserver)", 1.0),
    (10, "scaling-2", PROC, "speedup", None, 1.8),
)


def _free_threaded_goals(res_python):
    """Goals for the free-threaded build only: thread workers start in 0.5 ms and scale."""
    if not (res_python or {}).get("free_threaded") or res_python.get("gil_enabled"):
        return ()
    return ((12, "worker-startup", "ringport Worker (thread)", "max", None, 0.5),
            (12, "scaling-2", "ringport Worker (thread)", "speedup", None, 1.9))


def _better(b, mine, other):
    return other / mine if b["better"] == "lower" else mine / other


def judge(benchmarks, python=None):
    """[{issue, bench, system, goal, value, min or max, unit?, met}] for one run's benchmarks
    (the "benchmarks" of its JSON) and its "python" record."""
    out = []
    for issue, bid, name, kind, arg, bound in GOALS + _free_threaded_goals(python) + (
            (12, "scaling-2", SUB, "speedup", None, 1.9),):
        b = benchmarks.get(bid)
        d = b["systems"].get(name) if b else None
        if d is None or not d.get("median"):
            continue
        t = {"issue": issue, "bench": bid, "system": name}
        if kind == "vs":
            o = b["systems"].get(arg)
            t["value"] = _better(b, d["median"], o["median"]) if o and o.get("median") else None
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
