# BroadcastChannel: every channel with the same name, in any worker or interpreter of the process,
# receives what one of them posts.  Members find each other in csrc/rp_broadcast.h's registry; each
# receives on a MessagePort of its own.

cdef enum:
    BC_CAPACITY = 65536


@cython.final
cdef class BroadcastChannel:
    """BroadcastChannel(name)

    Every BroadcastChannel with the same name, in any worker or interpreter of the process,
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
        """Send a structured clone of value to every other channel with this name (in process
        workers too)."""
        cdef rp_bc_member *m = self._live("post_message")
        cdef bytes key = self.name.encode("utf-8", "surrogatepass")
        bc_deliver(key, m, value)
        if rp_bc_bridges() > 0:
            from ringport._bcbridge import forward
            forward(self.name, value, None)

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


def _bc_bridges_add(int delta):
    """A bridge to another process was made (+1) or closed (-1), in any interpreter."""
    rp_bc_bridges_add(delta)


def _bc_deliver(str name, value):
    """Post value to every BroadcastChannel named name in this process (what a bridge brought
    from another process)."""
    bc_deliver(name.encode("utf-8", "surrogatepass"), NULL, value)


cdef int bc_deliver(bytes key, rp_bc_member *m, object value) except -1:
    """Post value to the members named key in this process (m, the poster, left out)."""
    cdef rp_channel *stack[16]
    cdef rp_channel **peers = stack
    cdef int n, cap = 16, i
    while True:
        n = rp_bc_named(key, len(key), m, peers, cap)
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
    return 0


cdef int _post_value(rp_channel *ch, int side, object value) except -1:
    """Encode value and post it to ch from side (unbounded: never blocks)."""
    cdef int rc = send_value(ch, side, value, None, 0)
    if rc != RP_OK and rc != RP_ECLOSED:   # RP_ECLOSED: that member left meanwhile
        raise_for(rc, "post_message")
    return 0
