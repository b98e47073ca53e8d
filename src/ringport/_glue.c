/* _glue.c - see _glue.h */
#include "_glue.h"

_Atomic(destructor) rp_port_dealloc_slot;
_Atomic(getbufferproc) rp_typed_getbuffer_slot;

void rp_register_types(PyObject *port_type, PyObject *typed_type) {
    atomic_store(&rp_port_dealloc_slot,
                 (destructor)PyType_GetSlot((PyTypeObject *)port_type, Py_tp_dealloc));
    atomic_store(&rp_typed_getbuffer_slot,
                 (getbufferproc)PyType_GetSlot((PyTypeObject *)typed_type, Py_bf_getbuffer));
}

int rp_py_worker_enter(rp_workerctl *c) {
    PyInterpreterState *interp = PyInterpreterState_Get();
    unsigned long ident = PyThread_get_thread_ident();
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = rp_workerctl_enter(c, (void *)interp, ident);
    Py_END_ALLOW_THREADS
    return ok;
}

void rp_py_worker_leave(rp_workerctl *c) {
    int was_running;
    Py_BEGIN_ALLOW_THREADS
    was_running = rp_workerctl_leave(c);
    Py_END_ALLOW_THREADS
    /* a terminate() that raced the end may have left an exception pending: drop it (only after
     * a terminate(): the call walks every thread state of the interpreter) */
    if (was_running && rp_workerctl_terminated(c))
        PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), NULL);
}

typedef struct {
    PyInterpreterState *own; /* the caller's interpreter */
    PyThreadState *save;     /* the caller's thread state, detached while the lock is held */
    int done;
} terminate_arg;

/* Under the control block's lock, the worker running: raise WorkerTerminated in its thread.
 * For a worker in another interpreter the exception must be set from inside that interpreter:
 * a temporary thread state there. */
static void raise_terminated(void *interp_, unsigned long ident, void *arg_) {
    terminate_arg *arg = (terminate_arg *)arg_;
    PyInterpreterState *interp = (PyInterpreterState *)interp_;
    PyThreadState *ts = NULL;
    if (interp == arg->own) {
        PyEval_RestoreThread(arg->save);
    } else {
        ts = PyThreadState_New(interp);
        if (ts == NULL) return;
        PyEval_RestoreThread(ts);
    }
    PyObject *exc = NULL, *mod = PyImport_ImportModule("ringport._errors");
    if (mod != NULL) {
        exc = PyObject_GetAttrString(mod, "WorkerTerminated");
        Py_DECREF(mod);
    }
    if (exc != NULL) {
        arg->done = PyThreadState_SetAsyncExc(ident, exc);
        Py_DECREF(exc);
    } else {
        PyErr_Clear();
    }
    if (ts != NULL) {
        PyThreadState_Clear(ts);
        PyThreadState_DeleteCurrent();
    } else {
        arg->save = PyEval_SaveThread();
    }
}

int rp_py_worker_terminate(rp_workerctl *c) {
    terminate_arg arg;
    arg.own = PyInterpreterState_Get();
    arg.done = 0;
    /* the lock is taken without the GIL: the worker may hold the lock waiting for nothing else */
    arg.save = PyEval_SaveThread();
    rp_workerctl_terminate(c, raise_terminated, &arg);
    PyEval_RestoreThread(arg.save);
    return arg.done;
}
