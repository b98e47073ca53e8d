"""ringport: Node.js-style worker threads for Python.

MessageChannel / MessagePort over lock-free rings with a structured-clone codec,
SharedArrayBuffer and typed arrays with atomics, and Workers that run truly in parallel: threads
on free-threaded CPython, subinterpreters with their own GIL on standard CPython 3.13+.
"""
import os as _os

from ringport import atomics
from ringport._core import (
    BigInt64Array,
    BigUint64Array,
    BroadcastChannel,
    Float32Array,
    Float64Array,
    Int16Array,
    Int32Array,
    Int8Array,
    MessageChannel,
    MessagePort,
    ReceivedMessage,
    SharedArrayBuffer,
    Uint8Array,
    Uint16Array,
    Uint32Array,
    dumps,
    loads,
    receive_message_on_port,
)
from ringport._errors import (
    DataCloneError,
    DecodeError,
    Empty,
    Full,
    PortClosed,
    WorkerError,
    WorkerTerminated,
)

from ringport._backends import available_backends
from ringport._context import get_environment_data, set_environment_data

__version__ = "0.1.0"


def get_include():
    """The directory holding ringport's C headers (ringport/atomics.h), for
    Extension(include_dirs=[ringport.get_include()]) in C or Cython extensions."""
    return _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "include")


__all__ = [
    "BigInt64Array",
    "BigUint64Array",
    "BroadcastChannel",
    "DataCloneError",
    "DecodeError",
    "Empty",
    "Float32Array",
    "Float64Array",
    "Full",
    "Int16Array",
    "Int32Array",
    "Int8Array",
    "MessageChannel",
    "MessagePort",
    "PortClosed",
    "ReceivedMessage",
    "SharedArrayBuffer",
    "Uint16Array",
    "Uint32Array",
    "Uint8Array",
    "Worker",
    "WorkerError",
    "WorkerPool",
    "BrokenWorkerPool",
    "WorkerTerminated",
    "argv",
    "atomics",
    "available_backends",
    "dumps",
    "env",
    "get_environment_data",
    "get_include",
    "is_main_thread",
    "loads",
    "parent_port",
    "prestart",
    "receive_message_on_port",
    "set_environment_data",
    "thread_id",
    "worker_data",
]

# Per worker, read at each access (PEP 562): each worker, including several thread-backend
# workers in one interpreter, sees its own.  In the main thread: parent_port None, worker_data
# None, is_main_thread True, thread_id 0, argv sys.argv, env os.environ.
_PER_WORKER = frozenset({"argv", "env", "is_main_thread", "parent_port", "thread_id", "worker_data"})


def __getattr__(name):
    if name == "prestart":
        from ringport._prestart import prestart

        return prestart
    if name == "Worker":
        # imported when first used: a worker that starts no worker of its own (most of them)
        # does not pay for it in its start-up
        from ringport._worker import Worker

        return Worker
    if name in ("WorkerPool", "BrokenWorkerPool"):
        # imported when first used: concurrent.futures (and logging) would slow every
        # subinterpreter worker's start-up
        from ringport import _pool

        return getattr(_pool, name)
    if name in _PER_WORKER:
        from ringport._context import context_attr

        return context_attr(name)
    if name in ("isMainThread", "parentPort", "threadId", "workerData"):
        from ringport._context import context_attr

        return context_attr({"isMainThread": "is_main_thread", "parentPort": "parent_port",
                             "threadId": "thread_id", "workerData": "worker_data"}[name])
    raise AttributeError(f"module 'ringport' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _PER_WORKER | {"Worker", "WorkerPool", "BrokenWorkerPool", "prestart"})
