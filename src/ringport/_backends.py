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


def available_backends():
    """The backends that work on this interpreter, the default ("auto") first."""
    subinterp = _interpreters is not None and sys.version_info >= (3, 13) and not FREE_THREADED
    return ["subinterpreter", "thread"] if subinterp else ["thread"]


def resolve_backend(backend):
    """The backend a Worker(backend=...) runs on; ValueError if it is unknown or unavailable."""
    if backend == "auto":
        return available_backends()[0]
    if backend not in ("thread", "subinterpreter"):
        raise ValueError(f"backend must be 'auto', 'thread' or 'subinterpreter', not {backend!r}")
    if backend not in available_backends():
        why = ("this is a free-threaded build: use backend='thread', which runs in parallel"
               if FREE_THREADED else "subinterpreters with their own GIL need CPython 3.13+")
        raise ValueError(f"backend 'subinterpreter' is not available here ({why})")
    return backend
