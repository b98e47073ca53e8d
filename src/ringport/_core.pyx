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
from cpython.long cimport PyLong_FromVoidPtr

from ringport._csrc cimport *

# Give back the code objects Cython caches for tracebacks when the module is freed, so a
# destroyed subinterpreter in which an exception passed through the core frees its allocator
# (_cython_fixups.h, item 3).  Set first: the module body may fail after it, and then the
# module is freed as well.
cdef extern from "_cython_fixups.h":
    ctypedef void (*freefunc)(void *)
    int rp_module_set_free(object our_type, freefunc module_free) except -1
    void RP_CLEAR_CODE_CACHE(void *state) noexcept nogil
    void *rp_module_state "PyModule_GetState"(void *module) noexcept nogil


cdef void rp_module_free(void *module) noexcept nogil:
    # module_dealloc: the module's refcount is 0, so no `object` may touch it here
    RP_CLEAR_CODE_CACHE(rp_module_state(module))

rp_module_set_free(MessagePort, rp_module_free)


from ringport._errors import (DataCloneError, DecodeError, Empty, Full, PortClosed,
                              WorkerTerminated)
from ringport._events import Emitter

# ringport._context sets this to a ringport._loop.Hook when it is imported (per interpreter: a
# module global); ports tell it when their listeners, started state or ref change.
_loop_hook = None


cdef inline void _loop_update(object port) noexcept:
    hook = _loop_hook
    if hook is not None:
        try:
            hook.update(port)
        except BaseException:
            pass


# Our type checks without isinstance() (see _glue.h, which holds the C of this core that needs
# Python's headers, compiled with warnings as errors).
cdef extern from "_glue.h":
    void rp_register_types(object port_type, object typed_type)
    bint rp_is_port(object o) noexcept
    bint rp_is_typed_array(object o) noexcept


# The key that internal classes (_WaitSet, _WorkerCtl) demand of their constructor: this module's
# factory functions make them.  (A module global, so each interpreter has its own; whoever digs
# it out still gets exceptions, never a crash: the methods check what they were given.)
_PRIVATE = object()


cdef inline object obj_key(object o):
    """id(o), without the builtin: Cython keeps the builtins a module uses in process-wide C
    statics, and id is a different object in every interpreter (see test_interpreters.py)."""
    return PyLong_FromVoidPtr(<void *>o)


include "_codec.pxi"
include "_shm.pxi"
include "_port.pxi"
include "_atomics.pxi"
include "_waitset.pxi"
include "_workerctl.pxi"
include "_broadcast.pxi"

rp_register_types(MessagePort, _TypedArray)



# Let go of two references Cython leaves on the module, so a destroyed subinterpreter frees it
# (_cython_fixups.h says which and why).
cdef extern from "_cython_fixups.h":
    void rp_module_init_done(object our_type, object a_function)

rp_module_init_done(MessagePort, _export)   # keep last
