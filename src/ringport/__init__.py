"""ringport: Node.js-style worker threads for Python.

MessageChannel / MessagePort over lock-free rings with a structured-clone codec,
SharedArrayBuffer and typed arrays with atomics, and Workers that run truly in parallel: threads
on free-threaded CPython, subinterpreters with their own GIL on standard CPython 3.13+.
"""
from ringport._core import (
    MessageChannel,
    MessagePort,
    ReceivedMessage,
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

__all__ = [
    "DataCloneError",
    "DecodeError",
    "Empty",
    "Full",
    "MessageChannel",
    "MessagePort",
    "PortClosed",
    "ReceivedMessage",
    "WorkerError",
    "WorkerTerminated",
    "dumps",
    "loads",
    "receive_message_on_port",
]
