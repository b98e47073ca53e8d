/* _cython_fixups.h - C that works around the code Cython generates, so it cannot live in
 * _glue.c (which is compiled on its own with -Werror): it reads Cython's own configuration
 * macros (CYTHON_*), defined only inside the generated _core.c that includes this header.
 * Listed in docs/architecture.md under "Private and fragile APIs". */
#ifndef RINGPORT_CYTHON_FIXUPS_H
#define RINGPORT_CYTHON_FIXUPS_H

#include <string.h>
#if defined(_MSC_VER) && !defined(__clang__)
#include <windows.h>
#endif

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

/* A third reference of the same kind, on what the module state holds rather than on the module:
 *
 * 3. Cython's cache of the code objects it makes for the tracebacks of exceptions raised in
 *    compiled code lives in the module state, but no m_clear or m_free gives it back: a
 *    subinterpreter in which any exception passed through the core (a PortClosed caught by
 *    the event loop when a port with a 'message' listener closes, an error of the worker's
 *    target passing through _run_guarded) keeps those code objects, and through them its
 *    whole allocator (about 3 MB per worker on 3.14).  The module's m_free (Cython leaves it
 *    NULL) gives them back: module_dealloc calls it while the state and the interpreter are
 *    still whole, after the last code that could fill the cache ran.  From 3.12, as 1 and 2.
 *
 * The PyModuleDef is one static shared by every interpreter that loads the module: the first
 * exec sets its m_free (compare-and-swap from NULL), every later one only reads it, so no
 * interpreter writes the field while another reads it in module_dealloc.  Called first in the
 * module body (before anything can fail and free the module): module_free is _core.pyx's
 * rp_module_free, which expands RP_CLEAR_CODE_CACHE where Cython's state struct is declared. */
#if CYTHON_PEP489_MULTI_PHASE_INIT && CYTHON_USE_MODULE_STATE && \
    CYTHON_HEX_VERSION >= 0x03010000 && CYTHON_HEX_VERSION < 0x03040000 && \
    PY_VERSION_HEX >= 0x030C0000
#define RP_FIX_CODE_CACHE 1
#define RP_CLEAR_CODE_CACHE(state) do {                                                     \
        struct __Pyx_CodeObjectCache *rp_cache_ =                                             \
            &((__pyx_mstatetype *)(state))->__pyx_code_cache;                                 \
        for (int rp_i_ = 0; rp_i_ < rp_cache_->count; rp_i_++) {                            \
            Py_XDECREF(rp_cache_->entries[rp_i_].code_object);                               \
        }                                                                                     \
        PyMem_Free(rp_cache_->entries);                                                       \
        rp_cache_->entries = NULL;                                                            \
        rp_cache_->count = rp_cache_->max_count = 0;                                          \
    } while (0)
#else
#define RP_FIX_CODE_CACHE 0
#define RP_CLEAR_CODE_CACHE(state) ((void)(state))
#endif

static int rp_module_set_free(PyObject *our_type, freefunc module_free) {
#if RP_FIX_CODE_CACHE
    PyObject *module = PyType_GetModule((PyTypeObject *)our_type);
    PyModuleDef *def;
    freefunc none = NULL;
    if (module == NULL) return -1;
    def = PyModule_GetDef(module);
    if (def == NULL) {
        PyErr_SetString(PyExc_SystemError, "ringport._core has no module definition");
        return -1;
    }
    /* (an m_free already there, this fix-up's or a later Cython's own, stays) */
#if defined(_MSC_VER) && !defined(__clang__)
    (void)none;
    InterlockedCompareExchangePointer((void *volatile *)&def->m_free, (void *)module_free, NULL);
#else
    if (__atomic_load_n(&def->m_free, __ATOMIC_ACQUIRE) == NULL) {
        __atomic_compare_exchange_n(&def->m_free, &none, module_free, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    }
#endif
#else
    (void)our_type; (void)module_free;
#endif
    return 0;
}

#endif /* RINGPORT_CYTHON_FIXUPS_H */
