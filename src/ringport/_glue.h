/* _glue.h - the C of the Cython core that needs Python's C API.
 *
 * Kept out of Cython strings so it is compiled with -Wall -Wextra -Werror like csrc/ (_glue.c
 * includes this header, so the inline functions below are checked too).  The hot helpers stay
 * static inline here; the rest lives in _glue.c.  Declared to Cython in _core.pyx and the .pxi
 * files with `cdef extern from "_glue.h"`.
 */
#ifndef RINGPORT_GLUE_H
#define RINGPORT_GLUE_H

#include <Python.h>

#include <stdatomic.h>
#include <string.h>

#include "rp_workerctl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ type checks
 *
 * Is this object one of our types?  isinstance() against a cdef class costs a lookup in the
 * per-interpreter module state (a process-wide atomic operation) on every call; a slot function
 * of our types is the same code in every interpreter, so comparing it is exact and free.  Set
 * once per module load by rp_register_types; every load stores the same values. */
extern _Atomic(destructor) rp_port_dealloc_slot;
extern _Atomic(getbufferproc) rp_typed_getbuffer_slot;

void rp_register_types(PyObject *port_type, PyObject *typed_type);

static inline int rp_is_port(PyObject *o) { /* MessagePort is final: no subclasses */
    return Py_TYPE(o)->tp_dealloc ==
           atomic_load_explicit(&rp_port_dealloc_slot, memory_order_relaxed);
}

static inline int rp_is_typed_array(PyObject *o) { /* a typed array, or a subclass of one */
    PyBufferProcs *b = Py_TYPE(o)->tp_as_buffer;
    return b != NULL && b->bf_getbuffer != NULL &&
           b->bf_getbuffer == atomic_load_explicit(&rp_typed_getbuffer_slot, memory_order_relaxed);
}

/* A numpy array, recognized without importing numpy. */
static inline int rp_is_ndarray(PyObject *o) {
    return strcmp(Py_TYPE(o)->tp_name, "numpy.ndarray") == 0;
}

/* ------------------------------------------------------------------ small ints
 *
 * The value of an exact int that CPython stores in one digit (|o| < 2**30 on 64-bit builds):
 * the index or operand of nearly every atomic call.  1 and *out set, else 0 (any other object:
 * the caller takes its general path, which also raises the errors).  Reads the int in place,
 * no call: the atomics' hot path (_atomics.pxi). */
static inline int rp_compact_int(PyObject *o, long long *out) {
    if (!PyLong_CheckExact(o)) return 0;
#if PY_VERSION_HEX >= 0x030C0000
    if (!PyUnstable_Long_IsCompact((PyLongObject *)o)) return 0;
    *out = (long long)PyUnstable_Long_CompactValue((PyLongObject *)o);
    return 1;
#else
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) return 0;   /* an exact int: no other error is possible */
    *out = v;
    return 1;
#endif
}

/* ------------------------------------------------------------------ container items
 *
 * Items of a list or dict, as strong references, safely on every build: on free-threaded builds
 * under the container's lock, on GIL builds with bounds checked at each step (user code run by
 * the pickle fallback may mutate a container half-way through). */
#if PY_VERSION_HEX < 0x030D0000
#define RP_BEGIN_CRITICAL_SECTION(op) {
#define RP_END_CRITICAL_SECTION() }
#else
#define RP_BEGIN_CRITICAL_SECTION(op) Py_BEGIN_CRITICAL_SECTION(op)
#define RP_END_CRITICAL_SECTION() Py_END_CRITICAL_SECTION()
#endif

static inline PyObject *rp_list_item_ref(PyObject *l, Py_ssize_t i) {
    PyObject *v = NULL;
    RP_BEGIN_CRITICAL_SECTION(l);
    if (i < PyList_GET_SIZE(l)) {
        v = PyList_GET_ITEM(l, i);
        Py_INCREF(v);
    }
    RP_END_CRITICAL_SECTION();
    if (v == NULL) PyErr_SetString(PyExc_RuntimeError, "list changed size during post_message");
    return v;
}

static inline int rp_dict_next_ref(PyObject *d, Py_ssize_t *pos, PyObject **k, PyObject **v) {
    int r;
    RP_BEGIN_CRITICAL_SECTION(d);
    r = PyDict_Next(d, pos, k, v);
    if (r) {
        Py_INCREF(*k);
        Py_INCREF(*v);
    }
    RP_END_CRITICAL_SECTION();
    return r;
}

/* ------------------------------------------------------------------ workers
 *
 * The Python half of the control block's protocol (rp_workerctl.h holds the lock protocol):
 * the worker's enter/leave release the GIL while they wait for the lock, so the parent can
 * always get that GIL; terminate() raises WorkerTerminated in the worker's thread, from inside
 * the worker's interpreter when that is another one. */
int rp_py_worker_enter(rp_workerctl *c);
void rp_py_worker_leave(rp_workerctl *c);
/* Fire the cancel token (blocked ringport waits return) and raise WorkerTerminated in the
 * worker's thread at its next bytecode boundary.  1 if the exception was set. */
int rp_py_worker_terminate(rp_workerctl *c);

#ifdef __cplusplus
}
#endif
#endif /* RINGPORT_GLUE_H */
