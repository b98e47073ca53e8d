# What workers need from C: wait sets for the event loops, the worker control block (cancel
# token, terminate() across interpreters, exit code), process-wide thread ids, BroadcastChannel.
# The Python side (Worker, the loops, the per-worker context) is ringport/_worker.py.

cdef extern from *:
    """
    /* terminate() and the worker's enter/leave, with the thread-state juggling that needs the
     * C API.  The control block's lock orders them: the parent touches the worker's interpreter
     * only while the worker is RP_W_RUNNING, and the worker takes the lock (without its GIL, so
     * the parent can always get that GIL) to leave that state before its interpreter can go. */
    static int rp_py_worker_enter(rp_worker_ctl *c) {
        PyInterpreterState *interp = PyInterpreterState_Get();
        unsigned long ident = PyThread_get_thread_ident();
        int ok;
        Py_BEGIN_ALLOW_THREADS
        rp_lock_acquire(&c->lock, RP_FOREVER, 0, NULL);
        if (c->state == RP_W_STARTING && !rp_cancel_fired(&c->cancel)) {
            c->state = RP_W_RUNNING;
            c->interp = (void *)interp;
            c->ident = ident;
        }
        ok = c->state == RP_W_RUNNING;
        if (!ok) c->state = RP_W_DONE;
        rp_lock_release(&c->lock);
        Py_END_ALLOW_THREADS
        if (ok) rp_thread_set_cancel(&c->cancel);
        return ok;
    }

    static void rp_py_worker_leave(rp_worker_ctl *c) {
        int was_running;
        Py_BEGIN_ALLOW_THREADS
        rp_lock_acquire(&c->lock, RP_FOREVER, 0, NULL);
        was_running = c->state == RP_W_RUNNING;
        c->state = RP_W_DONE;
        c->interp = NULL;
        rp_lock_release(&c->lock);
        Py_END_ALLOW_THREADS
        rp_thread_set_cancel(NULL);
        /* a terminate() that raced the end may have left an exception pending: drop it */
        if (was_running) PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), NULL);
    }

    /* Fire the cancel token (blocked ringport waits return) and raise WorkerTerminated in the
     * worker's thread at its next bytecode boundary.  For a worker in another interpreter the
     * exception must be set from inside that interpreter: a temporary thread state there. */
    static int rp_py_worker_terminate(rp_worker_ctl *c) {
        PyInterpreterState *own = PyInterpreterState_Get();
        PyThreadState *save, *ts = NULL;
        int done = 0;
        rp_cancel_fire(&c->cancel);
        save = PyEval_SaveThread();
        rp_lock_acquire(&c->lock, RP_FOREVER, 0, NULL);
        if (c->state == RP_W_RUNNING) {
            PyInterpreterState *interp = (PyInterpreterState *)c->interp;
            if (interp == own) {
                PyEval_RestoreThread(save);
            } else {
                ts = PyThreadState_New(interp);
                if (ts != NULL) PyEval_RestoreThread(ts);
            }
            if (interp == own || ts != NULL) {
                PyObject *exc = NULL, *mod = PyImport_ImportModule("ringport._errors");
                if (mod != NULL) {
                    exc = PyObject_GetAttrString(mod, "WorkerTerminated");
                    Py_DECREF(mod);
                }
                if (exc != NULL) {
                    done = PyThreadState_SetAsyncExc(c->ident, exc);
                    Py_DECREF(exc);
                } else {
                    PyErr_Clear();
                }
                if (ts != NULL) {
                    PyThreadState_Clear(ts);
                    PyThreadState_DeleteCurrent();
                } else {
                    save = PyEval_SaveThread();
                }
            }
        }
        rp_lock_release(&c->lock);
        PyEval_RestoreThread(save);
        return done;
    }

    static int rp_ctl_exit_code(rp_worker_ctl *c) { return atomic_load(&c->exit_code); }
    static void rp_ctl_set_exit_code(rp_worker_ctl *c, int code) { atomic_store(&c->exit_code, code); }
    static uintptr_t rp_ctl_swap_error(rp_worker_ctl *c, uintptr_t token) {
        return atomic_exchange(&c->error_token, token);
    }
    """
    int rp_py_worker_enter(rp_worker_ctl *c)
    void rp_py_worker_leave(rp_worker_ctl *c)
    int rp_py_worker_terminate(rp_worker_ctl *c)
    int rp_ctl_exit_code(rp_worker_ctl *c)
    void rp_ctl_set_exit_code(rp_worker_ctl *c, int code)
    uintptr_t rp_ctl_swap_error(rp_worker_ctl *c, uintptr_t token)


@cython.final
cdef class _WaitSet:
    """A C wait set: sleep until any watched port has something (see rp_worker.h).  With
    with_fd, it also owns an eventfd (a pipe elsewhere) that an asyncio loop can watch."""
    cdef rp_waitset *ws

    def __cinit__(self, bint with_fd=False):
        self.ws = rp_waitset_new(with_fd)
        if self.ws == NULL:
            raise OSError("could not create a wait set")

    def __dealloc__(self):
        if self.ws != NULL:
            rp_waitset_decref(self.ws)
            self.ws = NULL

    def seq(self):
        return rp_waitset_seq(self.ws)

    def signal(self):
        rp_waitset_signal(self.ws)

    def wait(self, unsigned seen, timeout=None, bint sliced=True):
        """Sleep while seq() == seen, until timeout (None: forever).  True if woken.  In a
        terminated worker raises WorkerTerminated; with sliced, Ctrl-C gets through."""
        cdef int64_t deadline = timeout_to_deadline(timeout)
        cdef rp_cancel *cancel = rp_thread_cancel()
        cdef int rc
        cdef int64_t slice_ns = SLICE_NS if sliced else 0
        while True:
            with nogil:
                rc = rp_waitset_wait(self.ws, seen, deadline, slice_ns, cancel)
            if rc == RP_EINTR:
                PyErr_CheckSignals()
                if rp_waitset_seq(self.ws) != seen:
                    return True
                continue
            if rc == RP_ECANCELED:
                raise_for(rc, "wait")
            return rc == RP_OK

    def watch(self, MessagePort port not None, int slot):
        """Have port's incoming queue signal this set (slot 0: loop thread, 1: asyncio)."""
        cdef rp_channel *ch = port._try_enter()
        if ch != NULL:
            rp_channel_watch(ch, port.side, slot, self.ws)
            port._leave()

    def unwatch(self, MessagePort port not None, int slot):
        cdef rp_channel *ch = port._try_enter()
        if ch != NULL:
            rp_channel_watch(ch, port.side, slot, NULL)
            port._leave()

    @property
    def fd(self):
        return rp_waitset_fd(self.ws)

    def arm(self):
        rp_waitset_arm(self.ws)

    def drain(self):
        rp_waitset_drain(self.ws)


def _loop_state(MessagePort port not None):
    """0: nothing for an event loop to do; 1: watch it (listeners) without keeping the program
    alive; 2: watch it and keep the program alive ('message' listeners on a ref'ed port)."""
    if port.events is None or port.close_emitted or port._owns(NULL):   # _owns(NULL): transferred
        return 0
    if port.started and port.events.count("message"):
        return 2 if port.refed else 1
    if port.events.count("close"):
        return 1
    return 0


def _port_new_ref(MessagePort port not None):
    """A second MessagePort object on the same side of port's channel (one more reference)."""
    cdef rp_channel *ch = port._enter("_port_new_ref")
    rp_channel_incref(ch, port.side)
    port._leave()
    return MessagePort._new(ch, port.side)


@cython.final
cdef class _WorkerCtl:
    """A worker's control block, shared by the parent and the worker (any interpreters)."""
    cdef rp_worker_ctl *c

    def __cinit__(self, uintptr_t address=0):
        if address:
            self.c = <rp_worker_ctl *>address
            rp_worker_ctl_incref(self.c)
        else:
            self.c = rp_worker_ctl_new()
            if self.c == NULL:
                raise MemoryError()
            self.c.thread_id = rp_next_thread_id()

    def __dealloc__(self):
        if self.c != NULL:
            rp_worker_ctl_decref(self.c)
            self.c = NULL

    @property
    def address(self):
        """Pass this to the worker; it wraps it with _WorkerCtl(address) (one more reference).
        The caller keeps its object alive until the worker took its reference."""
        return <uintptr_t>self.c

    @property
    def thread_id(self):
        return self.c.thread_id

    @property
    def terminated(self):
        return rp_cancel_fired(&self.c.cancel) != 0

    @property
    def done(self):
        return self.c.state == RP_W_DONE

    @property
    def exit_code(self):
        """The worker's exit code, -1 until it ended."""
        return rp_ctl_exit_code(self.c)

    @exit_code.setter
    def exit_code(self, int code):
        rp_ctl_set_exit_code(self.c, code)

    def swap_error(self, uintptr_t token):
        """Store an exported error report (a token of _export), returning the previous one."""
        return rp_ctl_swap_error(self.c, token)

    def enter(self):
        """In the worker thread, before user code: False if terminate() came first."""
        return rp_py_worker_enter(self.c) != 0

    def leave(self):
        """In the worker thread, after user code: from now on terminate() leaves it alone."""
        rp_py_worker_leave(self.c)

    def terminate(self):
        """Fire the cancel token and raise WorkerTerminated in the worker thread."""
        return rp_py_worker_terminate(self.c)


# ---------------------------------------------------------------------------- BroadcastChannel

cdef enum:
    BC_CAPACITY = 65536


@cython.final
cdef class BroadcastChannel:
    """Every BroadcastChannel with the same name, in any worker or interpreter of the process,
    receives what one of them posts (not the poster itself), as in Node.

    receive(timeout) blocks for the next message; on('message', listener) delivers them as
    events.  close() leaves the channel.  A context manager closes it on exit.
    """
    cdef rp_bc_member *member
    cdef readonly str name
    cdef MessagePort _port
    cdef object __weakref__

    def __init__(self, name):
        cdef bytes key
        cdef rp_channel *ch
        if self.member != NULL:
            raise RuntimeError("BroadcastChannel.__init__ called twice")
        self.name = str(name)
        key = self.name.encode("utf-8", "surrogatepass")
        ch = rp_channel_new(BC_CAPACITY, 0)
        if ch == NULL:
            raise MemoryError()
        self._port = MessagePort._new(ch, 1)          # takes over the side-1 reference
        self.member = rp_bc_join(key, len(key), ch)   # takes over the side-0 reference
        if self.member == NULL:
            rp_channel_decref(ch, 0)
            raise MemoryError()

    def __dealloc__(self):
        cdef rp_bc_member *m = self.member
        self.member = NULL
        if m != NULL:
            rp_bc_leave(m)

    cdef rp_bc_member *_live(self, str what) except NULL:
        if self.member == NULL:
            raise PortClosed(f"{what}: the BroadcastChannel {self.name!r} is closed")
        return self.member

    def post_message(self, value):
        """Send a structured clone of value to every other channel with this name."""
        cdef rp_bc_member *m = self._live("post_message")
        cdef rp_channel *stack[16]
        cdef rp_channel **peers = stack
        cdef int n, cap = 16, i
        cdef int rc = RP_OK
        while True:
            n = rp_bc_peers(m, peers, cap)
            if n <= cap:
                break
            if peers != stack:
                free(peers)
            cap = n + 16
            peers = <rp_channel **>malloc(cap * sizeof(rp_channel *))
            if peers == NULL:
                raise MemoryError()
        try:
            for i in range(n):
                # one encoding per receiver, so each owns its handles (shared buffers, blocks)
                _post_value(peers[i], 0, value)
        finally:
            for i in range(n):
                rp_channel_decref(peers[i], 0)
            if peers != stack:
                free(peers)

    postMessage = post_message

    def receive(self, timeout=None):
        """The next message another member posted (ringport.Empty on timeout, PortClosed once
        this channel is closed and drained)."""
        return self._port.receive(timeout)

    async def receive_async(self, timeout=None):
        return await self._port.receive_async(timeout)

    def on(self, event, listener):
        self._port.on(event, listener)
        return self

    def once(self, event, listener):
        self._port.once(event, listener)
        return self

    def off(self, event, listener=None):
        self._port.off(event, listener)
        return self

    def ref(self):
        self._port.ref()

    def unref(self):
        self._port.unref()

    def has_ref(self):
        return self._port.has_ref()

    def close(self):
        """Leave the channel: nothing more is received (messages still queued are dropped)."""
        cdef rp_bc_member *m = self.member
        self.member = NULL
        if m != NULL:
            rp_bc_leave(m)   # its side-0 reference goes: the channel closes, 'close' fires
            self._port.close()

    @property
    def closed(self):
        return self.member == NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return iter(self._port)

    def __reduce__(self):
        raise DataCloneError("a BroadcastChannel cannot be sent; create one with the same name "
                             "in the receiver")

    def __repr__(self):
        return f"<ringport.BroadcastChannel {self.name!r}{' closed' if self.member == NULL else ''}>"


cdef int _post_value(rp_channel *ch, int side, object value) except -1:
    """Encode value and post it to ch from side (unbounded: never blocks)."""
    cdef int rc = send_value(ch, side, value, None, 0)
    if rc != RP_OK and rc != RP_ECLOSED:   # RP_ECLOSED: that member left meanwhile
        raise_for(rc, "post_message")
    return 0


def _run_guarded(_WorkerCtl ctl not None, fn):
    """In the worker thread: run fn() while terminate() may interrupt it, and return
    (result, exception).  This is C, not bytecode, between fn's return and leave(), so a
    WorkerTerminated that terminate() raced in is dropped by leave(), never raised later in the
    worker's own clean-up."""
    if not rp_py_worker_enter(ctl.c):
        return None, WorkerTerminated("the worker was terminated before it started")
    try:
        r = fn()
    except BaseException as e:
        rp_py_worker_leave(ctl.c)
        return None, e
    rp_py_worker_leave(ctl.c)
    return r, None
