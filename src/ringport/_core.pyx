# cython: freethreading_compatible=True
# cython: subinterpreters_compatible=own_gil
"""ringport's Cython core: the codec, ports, shared memory and atomics.

All state lives in objects or in per-interpreter module state; the module loads in any number
of interpreters at once and never turns the GIL back on.
"""
cimport cython
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from ringport._csrc cimport *

from ringport._errors import (DataCloneError, DecodeError, Empty, Full, PortClosed,
                              WorkerTerminated)
from ringport._events import Emitter

# Set by ringport._loop once the event loop exists (per interpreter: a module global).
_loop_hook = None


cdef inline void _loop_update(object port) noexcept:
    hook = _loop_hook
    if hook is not None:
        try:
            hook.update(port)
        except BaseException:
            pass


cdef inline void _loop_wake() noexcept:
    hook = _loop_hook
    if hook is not None:
        try:
            hook.wake()
        except BaseException:
            pass


include "_codec.pxi"
include "_shm.pxi"
include "_port.pxi"
include "_worker.pxi"
