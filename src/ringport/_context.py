"""Per-worker context: what ringport.parent_port, worker_data, thread_id, argv, env and the
environment data say in the calling worker (or in the main program), and its event loop.

A thread-backend worker's context lives in a thread-local (several workers share one
interpreter); a subinterpreter worker's context is its whole interpreter's.
"""
import os
import sys
import threading
import weakref

from ringport import _core
from ringport._loop import Hook, Loop

__all__ = ["Context", "context_attr", "current", "get_environment_data", "set_environment_data"]


class Context:
    """What ringport.parent_port, worker_data, thread_id... say in one worker (or the main).
    ctl: the worker's control block (None in the main program)."""

    def __init__(self, *, parent_port=None, worker_data=None, thread_id=0, is_main_thread=True,
                 env=None, argv=None, env_data=None, name=None, loop=None, ctl=None):
        self.parent_port = parent_port
        self.worker_data = worker_data
        self.thread_id = thread_id
        self.is_main_thread = is_main_thread
        self.env = env
        self.argv = argv
        self.env_data = {} if env_data is None else env_data
        self.name = name
        self.loop = loop
        self.ctl = ctl
        self.children = weakref.WeakSet()
        self.lock = threading.Lock()

    def get_loop(self):
        with self.lock:
            if self.loop is None:  # only the main context creates its loop lazily
                self.loop = Loop(threaded=True)
            return self.loop


_tls = threading.local()     # thread-backend workers: each worker thread's context
_interp_ctx = None           # a subinterpreter worker: the context of its whole interpreter
main_ctx = Context(env=os.environ, argv=sys.argv)


def current():
    """The context of the calling thread."""
    ctx = getattr(_tls, "ctx", None)
    if ctx is not None:
        return ctx
    return _interp_ctx if _interp_ctx is not None else main_ctx


def enter(ctx, backend):
    """Make ctx the calling worker's context (the thread's, or the whole interpreter's)."""
    global _interp_ctx
    if backend == "thread":
        _tls.ctx = ctx
    else:
        _interp_ctx = ctx


def leave(backend):
    global _interp_ctx
    if backend == "thread":
        _tls.ctx = None
    else:
        # Let the worker's context (its loop, ports, env) go now, while the interpreter is
        # whole: freed later, during its teardown, it keeps blocks of the interpreter's
        # allocator alive (2 MiB RSS per worker on 3.14).
        _interp_ctx = None


def in_subinterpreter_worker():
    return _interp_ctx is not None


def context_attr(name):
    """ringport.<name> for the per-worker attributes (see ringport.__getattr__)."""
    return getattr(current(), name)


def set_environment_data(key, value):
    """Set (value None: delete) an entry cloned into every worker started afterwards from this
    context, as Node's setEnvironmentData."""
    env = current().env_data
    if value is None:
        env.pop(key, None)
    else:
        env[key] = value


def get_environment_data(key):
    """What set_environment_data(key, ...) stored here or in a parent before this worker started
    (None if nothing)."""
    return current().env_data.get(key)


_core._loop_hook = Hook(lambda: current().get_loop())
