# A worker's control block (csrc/rp_workerctl.h): cancel token, terminate() across interpreters,
# exit code, error report.  The parent registers it and hands the worker its id (an int that can
# cross into another interpreter); the worker finds it again with _worker_ctl(id).  The Python
# side (Worker, the loops, the per-worker context) is ringport/_worker.py.

cdef extern from "_glue.h":
    int rp_py_worker_enter(rp_workerctl *c)
    void rp_py_worker_leave(rp_workerctl *c)
    int rp_py_worker_terminate(rp_workerctl *c)


cdef int64_t _check_token(int64_t token, str what) except -1:
    """token must name a live exported message (0 is "none" where a caller allows it)."""
    if not rp_registry_contains(token, RP_REG_TOKEN):
        raise ValueError(f"{what}: {token} is not a live token (imported, dropped, or never "
                         f"exported)")
    return token


@cython.final
cdef class _WorkerCtl:
    """A worker's control block, shared by the parent and the worker (any interpreters).
    Internal: made by _new_worker_ctl() (parent) or _worker_ctl(id) (worker)."""
    cdef rp_workerctl *c
    cdef readonly int64_t id   # its registry id
    cdef bint owns_id          # the parent's object: the id lives as long as it does

    def __cinit__(self, key):
        if key is not _PRIVATE:
            raise TypeError("_WorkerCtl objects are internal: ringport makes them itself")

    def __dealloc__(self):
        if self.owns_id:
            rp_registry_decref(self.id, RP_REG_WORKER)
            self.owns_id = False
        if self.c != NULL:
            rp_workerctl_decref(self.c)
            self.c = NULL

    cdef rp_workerctl *_c(self) except NULL:
        if self.c == NULL:
            raise ValueError("this _WorkerCtl was not made by _new_worker_ctl() or _worker_ctl()")
        return self.c

    @property
    def thread_id(self):
        return rp_workerctl_thread_id(self._c())

    @property
    def terminated(self):
        return rp_workerctl_terminated(self._c()) != 0

    @property
    def done(self):
        return rp_workerctl_state(self._c()) == RP_W_DONE

    @property
    def exit_code(self):
        """The worker's exit code, -1 until it ended."""
        return rp_workerctl_exit_code(self._c())

    @exit_code.setter
    def exit_code(self, int code):
        rp_workerctl_set_exit_code(self._c(), code)

    def swap_error(self, token_):
        """Store an exported error report (a token of _export, or 0 for none), returning the
        previous one (0: none).  A report left here is dropped with the control block."""
        cdef rp_workerctl *c = self._c()
        cdef int64_t token = _id_arg(token_, "swap_error")
        if token != 0:
            _check_token(token, "swap_error")
        return rp_workerctl_swap_error(c, token)

    def enter(self):
        """In the worker thread, before user code: False if terminate() came first."""
        return rp_py_worker_enter(self._c()) != 0

    def leave(self):
        """In the worker thread, after user code: from now on terminate() leaves it alone."""
        rp_py_worker_leave(self._c())

    def terminate(self):
        """Fire the cancel token and raise WorkerTerminated in the worker thread."""
        return rp_py_worker_terminate(self._c())


def _new_worker_ctl():
    """In the parent: a new control block, registered; pass its .id to the worker, and keep this
    object until the worker ended (the id names the block only while it lives)."""
    cdef _WorkerCtl ctl = _WorkerCtl.__new__(_WorkerCtl, _PRIVATE)
    cdef int64_t i
    ctl.c = rp_workerctl_new()
    if ctl.c == NULL:
        raise MemoryError()
    i = rp_workerctl_register(ctl.c)
    if i < 0:
        raise MemoryError()
    ctl.id = i
    ctl.owns_id = True
    return ctl


def _worker_ctl(id_):
    """In the worker: the control block the parent registered as id (ValueError if none)."""
    cdef int64_t id = _id_arg(id_, "_worker_ctl")
    cdef rp_workerctl *c = rp_workerctl_lookup(id)
    cdef _WorkerCtl ctl
    if c == NULL:
        raise ValueError(f"{id} is not the id of a live worker control block")
    ctl = _WorkerCtl.__new__(_WorkerCtl, _PRIVATE)
    ctl.c = c
    ctl.id = id
    return ctl


def _run_guarded(_WorkerCtl ctl not None, fn):
    """In the worker thread: run fn() while terminate() may interrupt it, and return
    (result, exception).  This is C, not bytecode, between fn's return and leave(), so a
    WorkerTerminated that terminate() raced in is dropped by leave(), never raised later in the
    worker's own clean-up."""
    if not rp_py_worker_enter(ctl._c()):
        return None, WorkerTerminated("the worker was terminated before it started")
    try:
        r = fn()
    except BaseException as e:
        rp_py_worker_leave(ctl.c)
        return None, e
    rp_py_worker_leave(ctl.c)
    return r, None


def _port_new_ref(MessagePort port not None):
    """A second MessagePort object on the same side of port's channel (one more reference):
    the worker's host thread posts 'exit' through one."""
    cdef rp_channel *ch = port._enter("_port_new_ref")
    rp_channel_incref(ch, port.side)
    port._leave()
    return MessagePort._new(ch, port.side)
