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


cdef extern from *:
    """
    /* Is this object one of our types?  isinstance() against a cdef class costs a lookup in the
     * per-interpreter module state (a process-wide atomic operation) on every call; a slot
     * function of our types is the same code in every interpreter, so comparing it is exact
     * and free.  Set once per module load; every load stores the same values. */
    static _Atomic(destructor) rp_port_dealloc_slot;
    static _Atomic(getbufferproc) rp_typed_getbuffer_slot;
    static void rp_register_types(PyObject *port_type, PyObject *typed_type) {
        atomic_store(&rp_port_dealloc_slot,
                     (destructor)PyType_GetSlot((PyTypeObject *)port_type, Py_tp_dealloc));
        atomic_store(&rp_typed_getbuffer_slot,
                     (getbufferproc)PyType_GetSlot((PyTypeObject *)typed_type, Py_bf_getbuffer));
    }
    static int rp_is_port(PyObject *o) {  /* MessagePort is final: no subclasses */
        return Py_TYPE(o)->tp_dealloc == atomic_load_explicit(&rp_port_dealloc_slot, memory_order_relaxed);
    }
    static int rp_is_typed_array(PyObject *o) {  /* a typed array, or a subclass of one */
        PyBufferProcs *b = Py_TYPE(o)->tp_as_buffer;
        return b != NULL && b->bf_getbuffer != NULL &&
               b->bf_getbuffer == atomic_load_explicit(&rp_typed_getbuffer_slot, memory_order_relaxed);
    }
    """
    void rp_register_types(object port_type, object typed_type)
    bint rp_is_port(object o) noexcept
    bint rp_is_typed_array(object o) noexcept


include "_codec.pxi"
include "_shm.pxi"
include "_port.pxi"
include "_atomics.pxi"
include "_worker.pxi"

rp_register_types(MessagePort, _TypedArray)
