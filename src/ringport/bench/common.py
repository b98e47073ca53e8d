"""What every benchmark family shares: results, skips, the machine record, Node and
subprocess drivers, the multiprocessing context, and thread helpers."""
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field

import ringport

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


class VerifyError(AssertionError):
    """A benchmark's result was wrong (a lost, duplicated or corrupted message, a bad count)."""


class Skip(Exception):
    """This system cannot run this benchmark here; the message says why."""


def check(cond, what):
    if not cond:
        raise VerifyError(what)


_compiled = []   # [True] once ensure_bytecode() has run in this process
#: whether ringport's modules in this process were read from bytecode (None: not looked at, as
#: when the runner is called from Python rather than by python -m ringport.bench)
LOADED_FROM_BYTECODE = None
_FROM_BYTECODE = "RINGPORT_BENCH_FROM_BYTECODE"   # set in the run that re-executed itself


def ensure_bytecode():
    """Compile ringport's modules (the benchmarks' own included) to __pycache__, as an installed
    package has them: with PYTHONDONTWRITEBYTECODE set (some CI and agent machines), every
    process would otherwise compile them from source (start-up would time the compiler), and
    on free-threaded 3.13 the constants of code compiled from source are not immortal, so that
    threads running the same function contend on their reference counts (a 1 ms pure-Python
    task in two threads ran at 0.4x one thread, against 1.9x from bytecode)."""
    if _compiled:
        return
    _compiled.append(True)
    import compileall
    try:
        compileall.compile_dir(os.path.dirname(ringport.__file__), quiet=2)
    except OSError:   # a read-only install: it came with its bytecode
        pass


def run_from_bytecode(argv):
    """For `python -m ringport.bench`: if ringport's modules in this process were compiled
    from source (no bytecode was there to read), compile them and run again from the start in
    a fresh interpreter (execv), so that every row measures the package as installed."""
    global LOADED_FROM_BYTECODE
    mods = [m for name, m in list(sys.modules.items())
            if (name == "ringport" or name.startswith("ringport.")) and
            getattr(m, "__cached__", None)]
    stale = [m for m in mods if not os.path.exists(m.__cached__)]
    LOADED_FROM_BYTECODE = not stale
    ensure_bytecode()
    if (not stale or os.environ.get(_FROM_BYTECODE) or
            not all(os.path.exists(m.__cached__) for m in stale)):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "ringport.bench", *argv],
              dict(os.environ, **{_FROM_BYTECODE: "1"}))


@dataclass
class Sample:
    """One measurement of one system on one benchmark."""
    value: float                      # in the benchmark's unit
    n: int                            # iterations (messages, round trips, ops) it covers
    samples: list = field(default_factory=list)   # per-iteration latencies, same unit
    note: str = ""


@dataclass
class System:
    """A row of a benchmark: fn(params) -> Sample, or skip = the reason it cannot run."""
    name: str
    fn: object = None
    skip: str = ""
    note: str = ""
    base: tuple = ()                  # rows of the same benchmark this one is compared with


@dataclass
class Bench:
    """One benchmark (a table, a group of bars in its family's panel)."""
    id: str
    family: str
    title: str
    unit: str
    better: str                       # "lower" or "higher"
    systems: list
    latency: bool = False             # report p99 of per-iteration samples
    note: str = ""


# ------------------------------------------------------------------ the machine and versions

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def node_path():
    return shutil.which("node")


def _version(mod):
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


def machine_info():
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    node = node_path()
    node_v = None
    if node:
        try:
            node_v = subprocess.run([node, "--version"], capture_output=True, text=True,
                                    timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "python": {"version": platform.python_version(), "implementation":
                   platform.python_implementation(), "free_threaded": FREE_THREADED,
                   "from_bytecode": LOADED_FROM_BYTECODE,
                   "gil_enabled": gil, "executable": sys.executable},
        "versions": {"ringport": ringport.__version__, "numpy": _version("numpy"),
                     "node": node_v, "faster-fifo": _version("faster-fifo"),
                     "atomics": _version("atomics"), "matplotlib": _version("matplotlib"),
                     "Cython": _version("Cython")},
    }


# ------------------------------------------------------------------ helpers

def have_worker():
    return hasattr(ringport, "Worker") and hasattr(ringport, "available_backends")


def worker_backends():
    return list(ringport.available_backends()) if have_worker() else []


def auto_backend():
    """The backend Worker(backend="auto") picks: the first one available_backends() lists."""
    b = worker_backends()
    return b[0] if b else None


def has_numpy():
    try:
        import numpy  # noqa: F401
        return True
    except ImportError:
        return False


_mp_ctx = None


def mp_context():
    """forkserver on Linux: a child forks from a clean single-threaded server (no fork of this
    threaded process) and starts in milliseconds, with our modules preloaded; spawn elsewhere."""
    global _mp_ctx
    if _mp_ctx is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _mp_ctx = multiprocessing.get_context("forkserver")
            _mp_ctx.set_forkserver_preload(["ringport.bench.peers"])
        else:
            _mp_ctx = multiprocessing.get_context("spawn")
    return _mp_ctx


def run_threads(bodies):
    """Run each body in its own thread, started together on a barrier; return (seconds from the
    barrier to the last one's end, results).  Re-raises the first exception."""
    barrier = threading.Barrier(len(bodies) + 1)
    res = [None] * len(bodies)
    err = []

    def wrap(i, fn):
        try:
            barrier.wait()
            res[i] = fn()
        except BaseException as e:
            err.append(e)
            barrier.abort()

    ts = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(bodies)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    if err:
        raise err[0]
    return dt, res


def run_node(script, params, timeout=300):
    """Run node/<script> (next to this file) with params as a JSON argv; return its JSON result (last line of
    stdout).  The JS verifies its own results and says so in 'verified'."""
    node = node_path()
    if not node:
        raise Skip("node not on PATH")
    p = subprocess.run([node, os.path.join(NODE_DIR, script), json.dumps(params)],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"node {script} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if not out.get("verified"):
        raise VerifyError(f"node {script} {params}: {out.get('error', 'verification failed')}")
    return out


def run_driver(module, params, timeout=300):
    """Run `python -m module <json>` (a system that must live in its own process, e.g. one
    whose import would turn the GIL back on here) and return its JSON result."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(HERE))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONWARNINGS", "ignore")
    p = subprocess.run([sys.executable, "-m", module, json.dumps(params)], capture_output=True,
                       text=True, timeout=timeout, env=env)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{module} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    out = json.loads(lines[-1])
    if "skip" in out:
        raise Skip(out["skip"])
    if "verify_error" in out:
        raise VerifyError(out["verify_error"])
    return out


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None
