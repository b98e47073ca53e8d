# MessageChannel and MessagePort: how a message crosses, Python side.
#
# post_message encodes into a stack buffer (a heap node once it outgrows it) and hands the body
# to rp_channel_send, which copies it into the ring; a big body travels as its node, uncopied.
# receive takes the oldest body in place, decodes it straight from the ring and frees the slot.
# Waits run without the GIL, in slices, so Ctrl-C (PyErr_CheckSignals) and worker.terminate()
# (the thread's cancel token) always get through.

from cpython.exc cimport PyErr_CheckSignals

cdef enum:
    SLICE_NS = 50000000          # come back to Python at least every 50 ms while blocked
    DEFAULT_CAPACITY = 262144    # ring bytes per direction


cdef int64_t timeout_to_deadline(object timeout) except? -2:
    """None: forever.  Seconds (int or float, >= 0): a deadline on the monotonic clock."""
    cdef double t
    if timeout is None:
        return RP_FOREVER
    try:
        t = timeout
    except TypeError:
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}") from None
    if not (t >= 0.0):
        raise ValueError("timeout must be a non-negative number of seconds")
    if t > 1e9:
        return RP_FOREVER
    return rp_deadline_after(<int64_t>(t * 1e9))


cdef int raise_for(int rc, str what) except -1:
    """The one place that turns C return codes into exceptions."""
    if rc == RP_ECLOSED:
        raise PortClosed(f"{what}: the port is closed")
    if rc == RP_ETIMEDOUT or rc == RP_EAGAIN:
        raise Empty(f"{what}: no message arrived in time")
    if rc == RP_EFULL:
        raise Full(f"{what}: the port's bound on pending bytes was reached")
    if rc == RP_ENOMEM:
        raise MemoryError(what)
    if rc == RP_ECANCELED:
        raise WorkerTerminated("the worker was terminated")
    if rc == RP_EINVAL:
        raise ValueError(what)
    raise SystemError(f"{what}: unexpected return code {rc}")


@cython.final
cdef class ReceivedMessage:
    """What receive_message_on_port() returns: the message is in .message (as Node's {message})."""
    cdef readonly object message

    def __repr__(self):
        return f"ReceivedMessage(message={self.message!r})"


@cython.final
cdef class MessagePort:
    """One end of a MessageChannel.  What one end posts, the other receives, in order.

    Ports come from MessageChannel(), from a worker (parent_port) or from a message that
    transferred them; they cannot be created directly.
    """

    def __init__(self):
        raise TypeError("MessagePort objects come from MessageChannel() or a transfer; "
                        "they cannot be created directly")

    @staticmethod
    cdef MessagePort _new(rp_channel *ch, int side):
        """Wrap one side of ch, taking over one reference to that side."""
        cdef MessagePort p = MessagePort.__new__(MessagePort)
        memset(p.scache, 0, sizeof(p.scache))
        p.ch = ch
        p.side = side
        p.started = False
        p.refed = True
        p.close_emitted = False
        p.allow_pickle = True
        return p

    @staticmethod
    cdef MessagePort _adopt(rp_handle *h):
        cdef MessagePort p = MessagePort._new(<rp_channel *>h.ptr, <int>h.aux)
        p.allow_pickle = h.reserved != PORT_NO_PICKLE
        h.release = NULL
        return p

    def __dealloc__(self):
        cdef rp_channel *ch = self.ch
        cdef int i
        for i in range(STRCACHE):
            Py_XDECREF(self.scache[i])
            self.scache[i] = NULL
        self.ch = NULL
        if ch != NULL:
            rp_channel_decref(ch, self.side)

    cdef rp_channel *_live(self, str what) except NULL:
        cdef rp_channel *ch = self.ch
        if ch == NULL:
            raise PortClosed(f"{what}: this MessagePort was transferred and can no longer be used")
        return ch

    # ------------------------------------------------------------------ sending

    def post_message(self, value, transfer=None, timeout=None, /, **kwargs):
        """post_message(value, transfer=(), timeout=None)

        Send a structured clone of value to the other end.

        transfer: ports to move to the receiver (they must appear in value, or they are moved
        and dropped); after the call the sender's port objects are unusable.  Never blocks on an
        unbounded channel.  On a channel with max_pending_bytes, waits for room until timeout
        (None: forever; 0: not at all) and raises Full when there is none.
        """
        # Keywords are taken from **kwargs by hand: Cython's keyword parsing looks the argument
        # names up in the per-interpreter module state on every call, a process-wide atomic
        # operation that costs more than the rest of a small post.
        if kwargs:
            transfer, timeout = take_kwargs("post_message", kwargs, transfer, timeout)
        return self._post(value, transfer, timeout)

    cdef object _post(self, object value, object transfer, object timeout):
        cdef rp_channel *ch = self._live("post_message")
        cdef uint64_t stackbuf[STACK_WORDS]
        cdef void *mk[MEMO_STACK]
        cdef Py_ssize_t mv[MEMO_STACK]
        cdef Writer w
        cdef int rc
        cdef int64_t deadline = 0
        cdef rp_cancel *cancel
        cdef dict ports = None
        cdef rp_node *node
        if transfer:
            ports = check_transfer(self, transfer)
        w_init(&w, <unsigned char *>stackbuf, STACK_BYTES, mk, mv)
        w.allow_pickle = self.allow_pickle
        try:
            encode_value(&w, value, ports)
            if ports:
                # ports listed but not in the value are moved too (and dropped by the receiver)
                for p in ports.values():
                    if memo_get(&w, <void *>p) < 0 and not _in_handles(&w, <MessagePort>p):
                        enc_port_handle_only(&w, <MessagePort>p)
            w_finish(&w)
            if rp_channel_max_pending(ch) == 0:
                rc = _send(ch, self.side, &w, 0, NULL)
            else:
                deadline = timeout_to_deadline(timeout)
                cancel = rp_thread_cancel()
                while True:
                    with nogil:
                        rc = _send(ch, self.side, &w, deadline, cancel)
                    if rc != RP_EINTR:
                        break
                    PyErr_CheckSignals()
            if rc != RP_OK:
                if rc == RP_ETIMEDOUT:
                    rc = RP_EFULL
                raise_for(rc, "post_message")
            # sent: the message owns the handles now, and the node if it was queued whole
            w.nhandles = 0
            w.node = NULL
        finally:
            w_release(&w)
        if ports:
            for p in ports.values():
                _detach(<MessagePort>p)

    postMessage = post_message

    # ------------------------------------------------------------------ receiving

    cdef object _finish(self, rp_recv *r):
        """Decode the message r points at, then give its slot back."""
        cdef rp_msg *m = r.msg
        cdef rp_node *copy = NULL
        cdef Reader rd
        cdef uint32_t i
        cdef rp_channel *ch = self.ch
        if not rp_msg_valid(m, r.len):
            rp_channel_recv_end(ch, self.side, r)
            raise DecodeError("invalid message: sizes do not agree")
        if m.flags & RP_MSG_CODE:
            # decoding runs user code (unpickling): decode a private copy, so that code never
            # runs while this port's consumer lock is held
            copy = rp_node_alloc(r.len)
            if copy == NULL:
                rp_channel_recv_end(ch, self.side, r)
                raise MemoryError()
            memcpy(rp_node_body(copy), m, r.len)
            for i in range(m.nhandles):
                rp_msg_handles(m)[i].release = NULL
            rp_channel_recv_end(ch, self.side, r)
            m = <rp_msg *>rp_node_body(copy)
        # the string cache is guarded by the consumer lock: not used on a private copy
        r_init(&rd, rp_msg_data(m), <size_t>m.data_len, rp_msg_handles(m), m.nhandles,
               self.scache if copy == NULL else NULL)
        rd.allow_pickle = self.allow_pickle
        try:
            return decode_checked(&rd)
        finally:
            if copy != NULL:
                rp_msg_release_handles(m)
                rp_node_free(copy)
            else:
                rp_channel_recv_end(ch, self.side, r)

    cdef object _receive(self, int64_t deadline, bint *got):
        """The next message; *got is False when deadline is 0 and nothing was there."""
        cdef rp_channel *ch = self._live("receive")
        cdef rp_recv r
        cdef int rc = rp_channel_try_recv(ch, self.side, &r)
        cdef rp_cancel *cancel
        got[0] = True
        if rc == RP_OK:
            return self._finish(&r)
        if rc == RP_ECLOSED:
            raise PortClosed("receive: the port is closed and every message was delivered")
        if deadline == 0:
            got[0] = False
            return None
        cancel = rp_thread_cancel()
        while True:
            with nogil:
                rc = rp_channel_recv_begin(ch, self.side, &r, deadline, SLICE_NS, cancel)
            if rc == RP_OK:
                return self._finish(&r)
            if rc == RP_EINTR:
                PyErr_CheckSignals()
                continue
            if rc == RP_ECLOSED:
                raise PortClosed("receive: the port is closed and every message was delivered")
            if rc == RP_ETIMEDOUT:
                raise Empty("receive: no message arrived in time")
            raise_for(rc, "receive")

    def receive(self, timeout=None, /, **kwargs):
        """receive(timeout=None)

        The next message.  Blocks until one arrives; with a timeout (seconds), raises
        ringport.Empty when none came in time.  Raises ringport.PortClosed once the port is
        closed and every message posted before the close was delivered."""
        cdef bint got
        if kwargs:
            if timeout is not None or list(kwargs) != ["timeout"]:
                raise TypeError(f"receive() takes one argument, timeout; got {timeout!r} and "
                                f"keywords {sorted(kwargs)}")
            timeout = kwargs["timeout"]
        if timeout is None:
            return self._receive(RP_FOREVER, &got)
        return self._receive(timeout_to_deadline(timeout), &got)

    def __iter__(self):
        return self

    def __next__(self):
        cdef bint got
        try:
            return self._receive(RP_FOREVER, &got)
        except PortClosed:
            raise StopIteration from None

    # asyncio (ringport._aio): waits ride on the event loop's eventfd, no thread per port

    def receive_async(self, timeout=None):
        """Awaitable receive(): the next message, without blocking the asyncio event loop."""
        from ringport._aio import receive_async
        return receive_async(self, timeout)

    def __aiter__(self):
        return self

    def __anext__(self):
        from ringport._aio import anext_port
        return anext_port(self)

    # ------------------------------------------------------------------ closing and state

    def close(self):
        """Close the channel, both directions.  Messages posted before are still delivered;
        posting afterwards raises PortClosed.  'close' is emitted on both ends."""
        cdef rp_channel *ch = self.ch
        if ch != NULL:
            rp_channel_close(ch)   # signals the wait sets watching either side

    @property
    def closed(self):
        """True once either end closed the channel (or this port was transferred)."""
        cdef rp_channel *ch = self.ch
        return ch == NULL or rp_channel_closed(ch) != 0

    @property
    def capacity(self):
        return rp_channel_capacity(self._live("capacity"))

    @property
    def max_pending_bytes(self):
        cdef int64_t m = rp_channel_max_pending(self._live("max_pending_bytes"))
        return None if m == 0 else m

    @property
    def pending_bytes(self):
        """Bytes this end posted that the other end has not received yet (exact on bounded
        channels, an estimate on unbounded ones)."""
        return rp_channel_pending_bytes(self._live("pending_bytes"), self.side)

    def poll(self):
        """True if receive() would not block (a message, or the end of the stream, is there)."""
        cdef rp_channel *ch = self.ch
        return ch == NULL or rp_channel_poll(ch, self.side) != 0

    def __reduce__(self):
        raise DataCloneError("a MessagePort can only be moved with post_message(..., "
                             "transfer=[port]); it cannot be pickled")

    def __repr__(self):
        if self.ch == NULL:
            state = "transferred"
        elif rp_channel_closed(self.ch):
            state = "closed"
        else:
            state = "open"
        return f"<ringport.MessagePort side={self.side} {state} at {id(self):#x}>"

    # ------------------------------------------------------------------ events

    cdef object _ev(self):
        if self.events is None:
            self.events = Emitter()
        return self.events

    def on(self, event, listener):
        """Call listener(value) for each 'message', listener(exc) on 'messageerror', listener()
        on 'close'.  Attaching a 'message' listener starts the port, as in Node."""
        self._ev().on(event, listener)
        if event == "message":
            self.start()
        return self

    add_listener = on

    def once(self, event, listener):
        self._ev().once(event, listener)
        if event == "message":
            self.start()
        return self

    def off(self, event, listener=None):
        self._ev().off(event, listener)
        if event == "message" and self._ev().count("message") == 0:
            self.started = False
            _loop_update(self)
        return self

    remove_listener = off

    def start(self):
        """Start delivering messages to 'message' listeners (on() does this by itself)."""
        self._live("start")
        self.started = True
        _loop_update(self)

    def ref(self):
        """Keep the program alive while this port has 'message' listeners (the default)."""
        self.refed = True
        _loop_update(self)

    def unref(self):
        """Do not keep the program alive for this port's listeners."""
        self.refed = False
        _loop_update(self)

    def has_ref(self):
        return self.refed

    hasRef = has_ref

    def _dispatch(self, int limit=-1):
        """Deliver the messages queued now to the listeners (at most limit; -1: all), emit
        'close' once the stream ended.  Returns how many messages were delivered.  Never blocks.
        The event loop calls this; tests and embedders may too."""
        cdef int n = 0
        cdef object v
        cdef bint got
        if self.ch == NULL or self.events is None:
            return 0
        while limit < 0 or n < limit:
            if self.events.count("message") == 0:   # no listener: messages wait for one
                if rp_channel_closed(self.ch) and not self.close_emitted:
                    self.close_emitted = True
                    self.events.emit("close")
                break
            try:
                v = self._receive(0, &got)
            except PortClosed:
                if not self.close_emitted:
                    self.close_emitted = True
                    self.events.emit("close")
                break
            except DecodeError as e:
                if not self.events.emit("messageerror", e):
                    raise
                continue
            if not got:
                break
            n += 1
            self.events.emit("message", v)
        return n


cdef tuple take_kwargs(str fn, dict kwargs, object transfer, object timeout):
    """The keyword forms of transfer= and timeout= (each may also be given by position)."""
    for key, val in kwargs.items():
        if key == "transfer" and transfer is None:
            transfer = val
        elif key == "timeout" and timeout is None:
            timeout = val
        elif key in ("transfer", "timeout"):
            raise TypeError(f"{fn}() got multiple values for argument {key!r}")
        else:
            raise TypeError(f"{fn}() got an unexpected keyword argument {key!r}")
    return transfer, timeout


cdef dict check_transfer(MessagePort source, object transfer):
    """Validate a transfer list: ports only, no duplicates, not the sending port or its peer."""
    cdef dict ports = {}
    cdef MessagePort p
    try:
        items = list(transfer)
    except TypeError:
        raise DataCloneError("transfer must be a list of MessagePort objects") from None
    for obj in items:
        if type(obj) is not MessagePort:
            raise DataCloneError(f"{type(obj).__qualname__} object is not transferable "
                                 f"(transfer takes MessagePort objects)")
        p = <MessagePort>obj
        if id(p) in ports:
            raise DataCloneError("the same MessagePort is listed twice in transfer")
        if p.ch == NULL:
            raise DataCloneError("a MessagePort in transfer was already transferred")
        if source is not None and p.ch == source.ch:
            raise DataCloneError("transfer contains the sending port or its peer")
        ports[id(p)] = p
    return ports


cdef bint _in_handles(Writer *w, MessagePort p) noexcept:
    cdef uint32_t i
    for i in range(w.nhandles):
        if w.handles[i].kind == RP_H_PORT and w.handles[i].ptr == <void *>p.ch \
                and w.handles[i].aux == <uint64_t>p.side:
            return True
    return False


cdef int enc_port_handle_only(Writer *w, MessagePort p) except -1:
    w_port_handle(w, p)
    return 0


cdef void _detach(MessagePort p) noexcept:
    """After a transfer: the sender's object lets go of its reference (the message holds one)."""
    cdef rp_channel *ch = p.ch
    p.ch = NULL
    p.started = False
    if ch != NULL:
        rp_channel_decref(ch, p.side)
    _loop_update(p)   # its event loop lets go of it


cdef int _send(rp_channel *ch, int side, Writer *w, int64_t deadline,
               rp_cancel *cancel) noexcept nogil:
    cdef int rc
    if w.node == NULL:
        return rp_channel_send(ch, side, w.buf, w.pos, deadline, SLICE_NS, cancel)
    rp_node_set_len(w.node, w.pos)
    rc = rp_channel_send_node(ch, side, w.node, deadline, SLICE_NS, cancel)
    return rc


@cython.final
cdef class MessageChannel:
    """Two entangled ports: what port1 posts, port2 receives, and the other way round.

    capacity: ring bytes per direction (a power of two from 256 to 2**30, default 256 KiB; the
    system commits ring pages as messages first reach them, so an idle channel costs a few KiB);
    bigger messages, or messages posted while the ring is full, take an ordered overflow path,
    so posting never blocks and nothing is dropped.  max_pending_bytes: bound each direction instead; post_message
    then waits for room (with its timeout) and raises ringport.Full.

    allow_pickle: values the codec has no native form for travel pickled (the default: both
    ends are the same program).  With allow_pickle=False both ports, wherever they are moved,
    refuse pickle: posting such a value raises DataCloneError, and a pickled value received
    raises DecodeError without running anything.
    """
    cdef readonly MessagePort port1
    cdef readonly MessagePort port2

    def __init__(self, capacity=DEFAULT_CAPACITY, max_pending_bytes=None, *, allow_pickle=True):
        cdef uint64_t cap
        cdef int64_t maxp = 0
        cdef rp_channel *ch
        if type(capacity) is not int:
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        if capacity < RP_RING_MIN_CAPACITY or capacity > RP_RING_MAX_CAPACITY \
                or (capacity & (capacity - 1)):
            raise ValueError(f"capacity must be a power of two between {RP_RING_MIN_CAPACITY} "
                             f"and {RP_RING_MAX_CAPACITY} (2**30), not {capacity}")
        cap = capacity
        if max_pending_bytes is not None:
            if type(max_pending_bytes) is not int:
                raise TypeError("max_pending_bytes must be an int or None")
            if max_pending_bytes <= 0:
                raise ValueError("max_pending_bytes must be positive")
            maxp = max_pending_bytes
        ch = rp_channel_new(cap, maxp)
        if ch == NULL:
            raise MemoryError("could not allocate the channel")
        # the new channel holds one reference per side: each port takes one over
        self.port1 = MessagePort._new(ch, 0)
        self.port2 = MessagePort._new(ch, 1)
        self.port1.allow_pickle = self.port2.allow_pickle = bool(allow_pickle)

    def __iter__(self):
        return iter((self.port1, self.port2))

    def __repr__(self):
        return f"<ringport.MessageChannel port1={self.port1!r} port2={self.port2!r}>"


def receive_message_on_port(port, /):
    """Never blocks: None when nothing is queued (or the stream ended), else a ReceivedMessage
    whose .message is the message (Node's receiveMessageOnPort).  port: a MessagePort or a
    BroadcastChannel."""
    cdef object v
    cdef bint got
    cdef ReceivedMessage m
    if not rp_is_port(port):
        if type(port) is BroadcastChannel and (<BroadcastChannel>port)._port is not None:
            port = (<BroadcastChannel>port)._port
        else:
            raise TypeError(f"receive_message_on_port() takes a MessagePort or a "
                            f"BroadcastChannel, not {type(port).__name__}")
    try:
        v = (<MessagePort>port)._receive(0, &got)
    except PortClosed:
        return None
    if not got:
        return None
    m = ReceivedMessage.__new__(ReceivedMessage)
    m.message = v
    return m


# ---------------------------------------------------------------------------- across interpreters
#
# A new interpreter (or thread) can only be handed plain data, such as an int.  _export() encodes
# a value (ports moved with transfer, as by post_message) into a message in its own block,
# registers it (csrc/rp_registry.h) and returns its id: a token.  _import() in the receiving
# interpreter takes the token, decodes it and frees the block.  Each token is imported exactly
# once, or dropped with _drop_token(); a stale, reused or made-up token raises ValueError.

def _export(value, transfer=()):
    cdef uint64_t stackbuf[STACK_WORDS]
    cdef void *mk[MEMO_STACK]
    cdef Py_ssize_t mv[MEMO_STACK]
    cdef Writer w
    cdef dict ports = None
    cdef rp_node *node
    cdef int64_t token
    if transfer:
        ports = check_transfer(None, transfer)
    w_init(&w, <unsigned char *>stackbuf, STACK_BYTES, mk, mv)
    try:
        encode_value(&w, value, ports)
        if ports:
            for p in ports.values():
                if not _in_handles(&w, <MessagePort>p):
                    enc_port_handle_only(&w, <MessagePort>p)
        w_finish(&w)
        if w.node == NULL:
            w_grow(&w, 1)   # move the body into a heap node
        node = w.node
        rp_node_set_len(node, w.pos)
        token = rp_token_new(node)
        if token < 0:
            raise MemoryError("could not register the token")
        # registered: the registry owns the node and the handles in it
        w.nhandles = 0
        w.node = NULL
    finally:
        w_release(&w)
    if ports:
        for p in ports.values():
            _detach(<MessagePort>p)
    return token


cdef int64_t _id_arg(object id, str what) except? -1:
    """An id argument: an int (not a float or a string that happens to convert)."""
    if not isinstance(id, int):
        raise TypeError(f"{what}: an id is an int, not {type(id).__name__}")
    return id


def _import(token_):
    """Decode the value of a token of _export() and consume the token."""
    cdef int64_t token = _id_arg(token_, "_import")
    cdef rp_node *node = NULL
    cdef rp_msg *m
    cdef Reader rd
    if rp_token_take(token, &node) != RP_OK:
        raise ValueError(f"_import: {token} is not a live token (imported, dropped, or never "
                         f"exported)")
    m = <rp_msg *>rp_node_body(node)
    try:
        if not rp_msg_valid(m, rp_node_len(node)):
            raise DecodeError("invalid token")
        r_init(&rd, rp_msg_data(m), <size_t>m.data_len, rp_msg_handles(m), m.nhandles, NULL)
        return decode_checked(&rd)
    finally:
        if rp_msg_valid(m, rp_node_len(node)):
            rp_msg_release_handles(m)
        rp_node_free(node)


def _drop_token(token_):
    """Consume a token of _export() without decoding it (its ports close, its blocks go)."""
    cdef int64_t token = _id_arg(token_, "_drop_token")
    if rp_token_drop(token) != RP_OK:
        raise ValueError(f"_drop_token: {token} is not a live token (imported, dropped, or "
                         f"never exported)")


def _registry_count():
    """Live ids in the process-wide registry (tokens and worker control blocks), for tests
    that check nothing leaks."""
    return rp_registry_count()
