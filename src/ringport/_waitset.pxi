# What an event loop needs from the core: wait sets (csrc/rp_waitset.h) and a port's loop state.
# The loops themselves are Python: the worker's event loop (ringport._worker) and asyncio's
# (ringport._aio).


@cython.final
cdef class _WaitSet:
    """A C wait set: sleep until any watched port has something (see rp_waitset.h).  With
    with_fd, it also owns an eventfd (a pipe elsewhere) that an asyncio loop can watch.
    Internal: made by _new_waitset(), never constructed from Python."""
    cdef rp_waitset *ws

    def __cinit__(self, key):
        if key is not _PRIVATE:
            raise TypeError("_WaitSet objects are internal: ringport makes them itself")

    def __dealloc__(self):
        if self.ws != NULL:
            rp_waitset_decref(self.ws)
            self.ws = NULL

    cdef rp_waitset *_ws(self) except NULL:
        if self.ws == NULL:
            raise ValueError("this _WaitSet was not made by _new_waitset()")
        return self.ws

    def seq(self):
        return rp_waitset_seq(self._ws())

    def signal(self):
        rp_waitset_signal(self._ws())

    def wait(self, unsigned seen, timeout=None, bint sliced=True):
        """Sleep while seq() == seen, until timeout (None: forever).  True if woken.  In a
        terminated worker raises WorkerTerminated; with sliced, Ctrl-C gets through."""
        cdef rp_waitset *ws = self._ws()
        cdef int64_t deadline = timeout_to_deadline(timeout)
        cdef rp_cancel *cancel = rp_thread_cancel()
        cdef int rc
        cdef int64_t slice_ns = SLICE_NS if sliced else 0
        while True:
            with nogil:
                rc = rp_waitset_wait(ws, seen, deadline, slice_ns, cancel)
            if rc == RP_EINTR:
                PyErr_CheckSignals()
                if rp_waitset_seq(ws) != seen:
                    return True
                continue
            if rc == RP_ECANCELED:
                raise_for(rc, "wait")
            return rc == RP_OK

    def watch(self, MessagePort port not None, int slot):
        """Have port's incoming queue signal this set (slot 0: loop thread, 1: asyncio)."""
        cdef rp_waitset *ws = self._ws()
        cdef rp_channel *ch = port._try_enter()
        if ch != NULL:
            rp_channel_watch(ch, port.side, slot, ws)
            port._leave()

    def unwatch(self, MessagePort port not None, int slot):
        self._ws()
        cdef rp_channel *ch = port._try_enter()
        if ch != NULL:
            rp_channel_watch(ch, port.side, slot, NULL)
            port._leave()

    @property
    def fd(self):
        return rp_waitset_fd(self._ws())

    def arm(self):
        rp_waitset_arm(self._ws())

    def drain(self):
        rp_waitset_drain(self._ws())


def _new_waitset(bint with_fd=False):
    """A new wait set (with_fd: with an fd for an asyncio loop to watch)."""
    cdef _WaitSet s = _WaitSet.__new__(_WaitSet, _PRIVATE)
    s.ws = rp_waitset_new(with_fd)
    if s.ws == NULL:
        raise OSError("could not create a wait set")
    return s


def _loop_state(MessagePort port not None):
    """0: nothing for an event loop to do; 1: watch it (listeners) without keeping the program
    alive; 2: watch it and keep the program alive ('message' listeners on a ref'ed port)."""
    cdef bint closed, started, refed
    # (the flags are written by other threads: ref()/unref(), on()/off(), close)
    with cython.critical_section(port):
        events = port.events
        closed = port.close_emitted
        started = port.started
        refed = port.refed
    if events is None or closed or port._owns(NULL):   # _owns(NULL): transferred
        return 0
    if started and events.count("message"):
        return 2 if refed else 1
    if events.count("close"):
        return 1
    return 0
