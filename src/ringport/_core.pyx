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



cdef extern from *:
    """
    /* Two references Cython (3.1 to 3.3, multi-phase init with module state) leaves on the
     * module would keep it, its state, everything they hold and so the interpreter's whole object
     * allocator alive after a subinterpreter is destroyed (about 4 MB per interpreter):
     *
     * 1. The exec function takes a reference to the module for its interpreter -> module lookup
     *    table and keeps it when the body succeeds (only its error path gives it back).  The
     *    table needs none: the module removes itself from it when it is cleared.
     * 2. Cython's shared metatype of its function and generator types is made with the module
     *    as its ht_module.  Its instances (those types) own references to it that no
     *    tp_traverse reports (type_traverse does not visit Py_TYPE), so the collector always
     *    sees it as referenced from outside, and through ht_module the module too: the cycle
     *    module -> state -> types -> module is never collected.  Nothing looks the module up
     *    through the metatype (it has no methods), so it lets go of it.
     *
     * Only from 3.12 (the first with own-GIL subinterpreters; 3.13 for ringport's workers):
     * before it, Cython builds that metatype's instances by swapping their type and drops a
     * reference to the static `type` it never took, harmless only while the module is never
     * freed (freeing it there ends the process in a crash at exit).
     *
     * Called last in the module body: nothing after it can fail and take the error path. */
    static void rp_module_init_done(PyObject *our_type, PyObject *a_function) {
    #if CYTHON_PEP489_MULTI_PHASE_INIT && CYTHON_USE_MODULE_STATE && \
        CYTHON_HEX_VERSION < 0x03040000 && PY_VERSION_HEX >= 0x030C0000
        PyTypeObject *meta = Py_TYPE((PyObject *)Py_TYPE(a_function));
        if (PyType_HasFeature(meta, Py_TPFLAGS_HEAPTYPE) &&
                strstr(meta->tp_name, "_common_types_metatype") != NULL) {
            Py_CLEAR(((PyHeapTypeObject *)meta)->ht_module);
        }
        Py_DECREF(PyType_GetModule((PyTypeObject *)our_type));
    #else
        (void)our_type; (void)a_function;
    #endif
    }
    """
    void rp_module_init_done(object our_type, object a_function)

rp_module_init_done(MessagePort, _export)   # keep last
