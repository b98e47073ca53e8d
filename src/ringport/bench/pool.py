"""Benchmark 9: worker pools.  Tasks per second for a no-op task and for a CPU-bound task of
about 1 ms, and the wall time of ``map`` over many small items, for ringport.WorkerPool on
every backend against ThreadPoolExecutor, ProcessPoolExecutor, InterpreterPoolExecutor (3.14),
multiprocessing.Pool, joblib (loky) and Node's piscina.

Every pool has the same number of workers (--workers, default 2), is started and has run a
warm-up (a few tasks long enough to bring every worker up, then 2000 no-ops) before the clock
starts: only the task flow is timed.  Every executor runs the same functions
(ringport.bench.poolfuncs), and every result is checked.  The CPU-bound task also runs on one
worker, so that each pool's speed-up shows as its row's ratio to its own one-worker row.
"""
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time

import ringport

from ringport.bench import poolfuncs
from ringport.bench.common import (FREE_THREADED, NODE_DIR, Bench, Sample, Skip, System, check,
                                   mp_context, node_path, run_node, worker_backends)

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 600           # seconds any one batch of results may take before the row fails
WARM_MS = 20            # each warm-up task spins this long, so that no worker can take them all

TPE = "ThreadPoolExecutor"
IPE = "InterpreterPoolExecutor"
JOBLIB = "joblib.Parallel (loky)"
PISCINA = "Node.js piscina"
ONE = ", 1 worker"


def _start_method():
    return mp_context().get_start_method()


def ppe_name():
    return f"ProcessPoolExecutor ({_start_method()})"


def mp_pool_name():
    return f"multiprocessing.Pool ({_start_method()})"


# ------------------------------------------------------------------ the CPU-bound task's size

_spin = {}


def spin_count(ms):
    """The number of poolfuncs.spin rounds that take about `ms` milliseconds here (median of 5
    timings), measured once per run: every executor of a row gets the same count."""
    if ms not in _spin:
        from time import perf_counter as pc
        n = 1000
        while True:
            t0 = pc()
            poolfuncs.spin(n)
            dt = pc() - t0
            if dt > 0.005:
                break
            n *= 4
        m = max(1, round(n * ms / 1e3 / dt))
        ts = []
        for _ in range(5):
            t0 = pc()
            poolfuncs.spin(m)
            ts.append(pc() - t0)
        ts.sort()
        _spin[ms] = max(1, round(m * ms / 1e3 / ts[2]))
    return _spin[ms]


# ------------------------------------------------------------------ pools (one interface)

class ExecutorPool:
    """A concurrent.futures.Executor: submit() per task, map() with the executor's own map."""

    def __init__(self, ex, chunksize=None):
        self.ex, self.chunksize = ex, chunksize

    def tasks(self, fn, args):
        submit = self.ex.submit
        futs = [submit(fn, a) for a in args]
        return [f.result(TIMEOUT) for f in futs]

    def map(self, fn, items):
        if self.chunksize is None:
            return list(self.ex.map(fn, items, timeout=TIMEOUT))
        return list(self.ex.map(fn, items, timeout=TIMEOUT, chunksize=self.chunksize))

    def close(self):
        self.ex.shutdown(wait=True)


class MpPool:
    """multiprocessing.Pool: apply_async() per task, Pool.map (its own chunk size)."""

    def __init__(self, w):
        self.pool = mp_context().Pool(w)

    def tasks(self, fn, args):
        apply = self.pool.apply_async
        rs = [apply(fn, (a,)) for a in args]
        return [r.get(TIMEOUT) for r in rs]

    def map(self, fn, items):
        return self.pool.map_async(fn, items).get(TIMEOUT)

    def close(self):
        self.pool.close()
        self.pool.join()


class JoblibPool:
    """joblib.Parallel on loky, kept open (one executor) for the warm-up and the timed run:
    tasks one per dispatch (batch_size=1, as every other pool submits them), map with joblib's
    automatic batching."""

    def __init__(self, w, batch_size):
        from joblib import Parallel, delayed
        self.delayed = delayed
        self.par = Parallel(n_jobs=w, backend="loky", batch_size=batch_size)
        self.par.__enter__()

    def tasks(self, fn, args):
        d = self.delayed(fn)
        return self.par(d(a) for a in args)

    map = tasks

    def close(self):
        self.par.__exit__(None, None, None)


def _ipe(w):
    from concurrent.futures import InterpreterPoolExecutor
    # a new interpreter's sys.path lacks what was added to ours at run time (a source tree on
    # sys.path): add it there too (exec is a builtin, so it pickles by name)
    init = (f"import sys\nif {SRC_ROOT!r} not in sys.path: sys.path.insert(0, {SRC_ROOT!r})"
            if SRC_ROOT in sys.path else "")
    return ExecutorPool(InterpreterPoolExecutor(w, initializer=exec, initargs=(init,)))


def _ppe(w, chunksize=None):
    from concurrent.futures import ProcessPoolExecutor
    return ExecutorPool(ProcessPoolExecutor(w, mp_context=mp_context()), chunksize)


def _tpe(w):
    from concurrent.futures import ThreadPoolExecutor
    return ExecutorPool(ThreadPoolExecutor(w))


def _ringport(backend, w, chunksize=None):
    return ExecutorPool(ringport.WorkerPool(max_workers=w, min_workers=w, backend=backend,
                                            name=f"bench-{backend}"), chunksize)


# ------------------------------------------------------------------ measurements

def warm(pool, w, nwarm):
    """Run 2w tasks of WARM_MS each (every worker comes up and runs one), then nwarm no-ops
    (Node's JIT needs a few thousand); return how many distinct workers ran the first ones."""
    seen = set(pool.tasks(poolfuncs.who, [spin_count(WARM_MS)] * (2 * w)))
    check(pool.tasks(poolfuncs.noop, range(nwarm)) == list(range(nwarm)), "warm-up no-ops")
    return len(seen)


def m_noop(pool, n):
    args = range(n)
    t0 = time.perf_counter()
    rs = pool.tasks(poolfuncs.noop, args)
    dt = time.perf_counter() - t0
    check(rs == list(args), f"no-op: {sum(a == b for a, b in zip(rs, args))} right of {n}")
    return Sample(n / dt / 1e3, n)


def m_cpu(pool, n, spin):
    args = [spin] * n
    t0 = time.perf_counter()
    rs = pool.tasks(poolfuncs.spin, args)
    dt = time.perf_counter() - t0
    want = poolfuncs.spin_result(spin)
    check(len(rs) == n and all(r == want for r in rs), f"spin({spin}): wrong results")
    return Sample(n / dt, n)


def m_map(pool, n):
    items = range(n)
    t0 = time.perf_counter()
    rs = pool.map(poolfuncs.square, items)
    dt = time.perf_counter() - t0
    check(len(rs) == n and all(r == i * i for i, r in enumerate(rs)),
          f"map: {len(rs)} results for {n} items, or out of order")
    return Sample(dt, n)


MEASURES = {"noop": m_noop, "cpu": m_cpu, "map": m_map}


def measure(make, w, nwarm, what, *args):
    pool = make(w)
    try:
        seen = warm(pool, w, nwarm)
        s = MEASURES[what](pool, *args)
    finally:
        pool.close()
    if seen < w:
        s.note = f"only {seen} of {w} workers ran the warm-up"
    return s


# ------------------------------------------------------------------ piscina (npm)

PACKAGE_JSON = os.path.join(NODE_DIR, "package.json")
_modules = []           # [node_modules path] or [Skip] once looked at in this run


def node_cache():
    """Where npm installs the Node scripts' packages: $RINGPORT_BENCH_CACHE/node, else
    ~/.cache/ringport/bench/node (the package's own folder may be read-only)."""
    base = os.environ.get("RINGPORT_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "ringport", "bench")
    return os.path.join(base, "node")


def _installed(mods, deps):
    for name, version in deps.items():
        try:
            with open(os.path.join(mods, name, "package.json")) as f:
                if json.load(f).get("version") != version:
                    return False
        except (OSError, ValueError):
            return False
    return True


def node_modules():
    """The node_modules folder with node/package.json's pinned packages, installed by
    `npm install` into node_cache() the first time; Skip (with the reason) if that cannot be
    done.  Looked at once per run."""
    if not _modules:
        try:
            _modules.append(_install())
        except Skip as e:
            _modules.append(e)
    if isinstance(_modules[0], Skip):
        raise _modules[0]
    return _modules[0]


def _install():
    with open(PACKAGE_JSON) as f:
        deps = json.load(f)["dependencies"]
    where = node_cache()
    mods = os.path.join(where, "node_modules")
    if _installed(mods, deps):
        return mods
    npm = shutil.which("npm")
    if npm is None:
        raise Skip("npm not on PATH (piscina is installed from npm)")
    try:
        os.makedirs(where, exist_ok=True)
        shutil.copyfile(PACKAGE_JSON, os.path.join(where, "package.json"))
        p = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--omit=optional",
                            "--fetch-retries=1", "--fetch-timeout=30000"],
                           cwd=where, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        raise Skip(f"npm install in {where} failed: {e}")
    if p.returncode != 0 or not _installed(mods, deps):
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise Skip(f"npm install in {where} failed ({p.returncode}): {err}")
    return mods


def piscina(case, w, nwarm, n):
    def fn():
        out = run_node("pool.js", {"case": case, "n": n, "workers": w, "warm": nwarm,
                                   "modules": node_modules()}, timeout=TIMEOUT)
        check(out["n"] == n, f"piscina ran {out['n']} tasks, not {n}")
        dt = out["seconds"]
        value = {"noop": n / dt / 1e3, "cpu": n / dt, "map": dt}[case]
        note = f"JS loop of {out['spin']} rounds (~1 ms, JIT)" if case == "cpu" else \
            "one pool.run per item (piscina has no map)" if case == "map" else ""
        if out.get("warm_workers", w) < w:
            note = (note + "; " if note else "") + \
                f"only {out['warm_workers']} of {w} workers ran the warm-up"
        return Sample(value, n, note=note)
    return fn


# ------------------------------------------------------------------ the benchmarks

def parallel_backends():
    """The ringport backends that run Python in parallel here (the targets apply to them)."""
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return [b for b in worker_backends()
            if b in ("process", "subinterpreter") or (b == "thread" and FREE_THREADED
                                                      and not gil)]


def _systems(w, chunksize=None):
    """(name, make(w) or a skip reason) for every Python pool, ringport's first."""
    out = []
    if hasattr(ringport, "WorkerPool"):
        for b in worker_backends():
            out.append((f"ringport WorkerPool ({b})",
                        lambda w, b=b: _ringport(b, w, chunksize)))
    else:
        out.append(("ringport WorkerPool", "ringport.WorkerPool is not in this build yet "
                    "(issue 11)"))
    out.append((TPE, _tpe))
    out.append((ppe_name(), lambda w: _ppe(w, chunksize)))
    try:
        from concurrent.futures import InterpreterPoolExecutor  # noqa: F401
        out.append((IPE, _ipe))
    except ImportError:
        out.append((IPE, "needs Python 3.14 (concurrent.futures.InterpreterPoolExecutor)"))
    out.append((mp_pool_name(), MpPool))
    if importlib.util.find_spec("joblib") is not None:
        out.append((JOBLIB, None))
    else:
        out.append((JOBLIB, "joblib not installed (pip install joblib)"))
    return out


def _rows(w, nwarm, what, args, *, one_worker=False):
    """The rows of one benchmark: every pool with w workers (and, with one_worker, with 1);
    each ringport row is compared with every other pool's row (and its own one-worker row)."""
    pools = _systems(w)
    names = [n for n, _ in pools]
    others = tuple(n for n in names if not n.startswith("ringport")) + (PISCINA,)
    one_worker = one_worker and w > 1
    rows = []
    for ws in ((w, 1) if one_worker else (w,)):
        suffix = ONE if ws != w else ""
        for name, make in pools:
            if isinstance(make, str):
                rows.append(System(name + suffix, skip=make))
                continue
            if name == JOBLIB and ws == 1:
                rows.append(System(name + suffix, skip="joblib runs n_jobs=1 in the calling "
                                   "process, without a worker"))
                continue
            if name == JOBLIB:
                make = (lambda w, bs=(1 if what != "map" else "auto"): JoblibPool(w, bs))
            base = ()
            if name.startswith("ringport") and not suffix:
                base = others + ((name + ONE,) if one_worker else ())
            elif one_worker and not suffix and name != JOBLIB:
                base = (name + ONE,)
            rows.append(System(name + suffix, (lambda make=make, ws=ws:
                                               measure(make, ws, nwarm, what, *args)),
                               base=base))
        rows.append(System(PISCINA + suffix, piscina(what, ws, nwarm, args[0]),
                           base=((PISCINA + ONE,) if one_worker and not suffix else ())))
    return rows


def _workers(k):
    return f"{k} worker{'s' if k != 1 else ''}"


def benchmarks(p):
    w, nwarm = p["pool_workers"], p["pool_warm"]
    benches = []
    n = p["pool_noop"]
    benches.append(Bench(
        "pool-noop", "pool", f"no-op task, {_workers(w)}", "k tasks/s", "higher",
        _rows(w, nwarm, "noop", (n,)),
        note=f"{n} tasks (x -> x) submitted one by one, then every result awaited; joblib "
             "with batch_size=1"))
    n = p["pool_cpu"]
    spin = spin_count(1)
    benches.append(Bench(
        "pool-cpu", "pool", "1 ms CPU-bound task, " + (f"{w} workers and 1" if w > 1 else "1 worker"), "tasks/s", "higher",
        _rows(w, nwarm, "cpu", (n, spin), one_worker=True),
        note=f"{n} tasks of a pure-Python loop of {spin} rounds (about 1 ms here), the same "
             "for every Python pool; each pool's ratio to its own one-worker row is its "
             "speed-up"))
    n = p["pool_map"]
    rows = _rows(w, nwarm, "map", (n,))
    # the Executors' map defaults to one item per task; multiprocessing.Pool and joblib chunk
    # by themselves: the same chunking for ringport and ProcessPoolExecutor, for comparison
    cs = max(1, math.ceil(n / (4 * w)))
    chunked = [(name, make) for name, make in _systems(w, cs)
               if name.startswith("ringport") or name == ppe_name()]
    for name, make in chunked:
        if isinstance(make, str):
            continue
        label = f"{name}, chunksize={cs}"
        rows.append(System(label, (lambda make=make: measure(make, w, nwarm, "map", n)),
                           base=(f"{ppe_name()}, chunksize={cs}", mp_pool_name(), JOBLIB)
                           if name.startswith("ringport") else ()))
    benches.append(Bench(
        "pool-map", "pool", f"map over {n} small items, {_workers(w)}", "s", "lower", rows,
        note=f"map(x -> x * x, range({n})), every result in order; each pool's own defaults "
             f"(one item per task for the Executors and piscina, chunks chosen by "
             f"multiprocessing.Pool and joblib), and chunksize={cs} rows"))
    return benches


# ------------------------------------------------------------------ the targets

def targets(res, p):
    """The targets of issue 11, for each ringport backend that is parallel here: a list of
    {bench, system, goal, value, met} (value None where a side did not run)."""
    w = p["pool_workers"]
    out = []
    bench = res.get("pool-noop")
    cpu = res.get("pool-cpu")
    for b in parallel_backends():
        name = f"ringport WorkerPool ({b})"
        if bench and name in bench["systems"]:
            vs = bench["systems"][name].get("vs", {})
            for other, goal in ((ppe_name(), 10.0), (IPE, 10.0), (PISCINA, 1.0)):
                out.append({"bench": "pool-noop", "system": name,
                            "goal": f">= {goal:g}x {other} (no-op tasks/s)",
                            "value": vs.get(other), "min": goal})
        if cpu and name in cpu["systems"] and w > 1:
            goal = round(0.9 * w, 2)
            out.append({"bench": "pool-cpu", "system": name,
                        "goal": f">= {goal:g}x its own 1-worker rate ({w} workers)",
                        "value": cpu["systems"][name].get("vs", {}).get(name + ONE),
                        "min": goal})
    for t in out:
        t["met"] = None if t["value"] is None else t["value"] >= t["min"]
    return out
