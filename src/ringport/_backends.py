"""Which worker backends this interpreter offers, and what backend="auto" picks."""
import sys

try:
    import _interpreters
except ImportError:  # before 3.13
    _interpreters = None

__all__ = ["FREE_THREADED", "available_backends", "resolve_backend"]


def _free_threaded():
    if sys.platform != "win32":
        return "t" in sys.abiflags
    import sysconfig
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


FREE_THREADED = _free_threaded()


BACKENDS = ("thread", "subinterpreter", "process", "ray")


def _ray_installed():
    import importlib.util
    return importlib.util.find_spec("ray") is not None


def available_backends():
    """The backends that work on this interpreter, the one backend="auto" picks first: thread on
    a free-threaded build, subinterpreter on a standard 3.13+, process on 3.11/3.12 (the only
    one that runs Python in parallel there)."""
    subinterp = _interpreters is not None and sys.version_info >= (3, 13) and not FREE_THREADED
    process = sys.platform.startswith("linux")   # memfd rings and process-shared futexes
    if FREE_THREADED:
        order = ["thread", "process"]
    elif subinterp:
        order = ["subinterpreter", "thread", "process"]
    else:
        order = ["process", "thread"]
    return [b for b in order if b != "process" or process]


def resolve_backend(backend):
    """The backend a Worker(backend=...) runs on; ValueError if it is unknown or unavailable."""
    if backend == "auto":
        return available_backends()[0]
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto', 'thread', 'subinterpreter', 'process' or "
                         f"'ray', not {backend!r}")
    if backend == "ray":   # a cluster's, not this interpreter's: never listed nor picked by auto
        if not _ray_installed():
            raise ValueError("backend 'ray' is not available here (Ray is not installed: "
                             "pip install 'ringport[ray]')")
        return backend
    if backend not in available_backends():
        if backend == "process":
            why = "process workers need Linux (memfd and process-shared futexes)"
        elif FREE_THREADED:
            why = "this is a free-threaded build: use backend='thread', which runs in parallel"
        else:
            why = "subinterpreters with their own GIL need CPython 3.13+"
        raise ValueError(f"backend {backend!r} is not available here ({why})")
    return backend
