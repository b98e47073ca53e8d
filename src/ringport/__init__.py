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
    Float32Array,
    Float64Array,
    Int8Array,
    Int16Array,
    Int32Array,
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

__version__ = "0.1.0"


def get_include():
    """The directory holding ringport's C headers (ringport/atomics.h), for
    Extension(include_dirs=[ringport.get_include()]) in C or Cython extensions."""
    return _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "include")


__all__ = [
    "BigInt64Array",
    "BigUint64Array",
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
    "WorkerError",
    "WorkerTerminated",
    "atomics",
    "dumps",
    "get_include",
    "loads",
    "receive_message_on_port",
]
