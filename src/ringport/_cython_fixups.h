/* _cython_fixups.h - C that works around the code Cython generates, so it cannot live in
 * _glue.c (which is compiled on its own with -Werror): it reads Cython's own configuration
 * macros (CYTHON_*), defined only inside the generated _core.c that includes this header.
 * Listed in docs/architecture.md under "Private and fragile APIs". */
#ifndef RINGPORT_CYTHON_FIXUPS_H
#define RINGPORT_CYTHON_FIXUPS_H

#include <string.h>

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

#endif /* RINGPORT_CYTHON_FIXUPS_H */
