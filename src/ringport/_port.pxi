# MessageChannel and MessagePort: how a message crosses, Python side.
#
# post_message encodes into a stack buffer (a heap node once it outgrows it) and hands the body
# to rp_channel_send, which copies it into the ring; a big body travels as its node, uncopied.
# receive takes the oldest body in place, decodes it straight from the ring and frees the slot.
# Waits run without the GIL, in slices, so Ctrl-C (PyErr_CheckSignals) and worker.terminate()
# (the thread's cancel token) always get through.

from cpython.exc cimport PyErr_CheckSignals
from cpython.pyport cimport PY_SSIZE_T_MAX

cdef enum:
    SLICE_NS = 50000000          # come back to Python at least every 50 ms while blocked
    DEFAULT_CAPACITY = 262144    # ring bytes per direction
    RELAY_MIN_CAPACITY = 65536   # ring bytes of the shared channel that relays a port


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


cdef inline int64_t post_deadline(rp_channel *ch, object timeout) except? -2:
    """The deadline of a post: only a channel with max_pending_bytes ever waits for room; on
    any other a post never waits (0), and timeout is not looked at."""
    if rp_channel_max_pending(ch) != 0:
        return timeout_to_deadline(timeout)
    return 0


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


# ---------------------------------------------------------------------------- MessagePort
#
# A port object holds one reference on its side of the channel (`held`).  Any thread may use,
# close, transfer or drop the same port at once, so no call uses the channel through the field:
# each call enters (takes the pointer and counts itself in `busy`, in the object's critical
# section), works on its own copy, and leaves.  A transfer claims the object (`ch` becomes NULL,
# so later calls and a second transfer lose with PortClosed / DataCloneError); once the message
# is sent, the object's reference is given up by the last call still running on it, so a thread
# blocked in receive() never wakes on a freed channel.

@cython.final
cdef class MessagePort:
    """One end of a MessageChannel.  What one end posts, the other receives, in order.

    Ports come from MessageChannel(), from a worker (parent_port) or from a message that
    transferred them; they cannot be created directly.  Every method may be called from any
    thread, at the same time as any other.
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
        p.held = ch
        p.side = side
        p.refed = True
        p.allow_pickle = True
        return p

    @staticmethod
    cdef MessagePort _adopt(rp_handle *h):
        cdef MessagePort p = MessagePort._new(<rp_channel *>h.ptr, <int>h.aux)
        p.allow_pickle = h.reserved != PORT_NO_PICKLE
        h.release = NULL
        return p

    def __dealloc__(self):
        # no call can be running: each holds a reference to the object
        cdef int i
        for i in range(STRCACHE):
            Py_XDECREF(self.scache[i])
            self.scache[i] = NULL
        self.ch = NULL
        if self.held != NULL:
            rp_channel_decref(self.held, self.side)
            self.held = NULL

    # ------------------------------------------------------------------ the hold on the channel

    cdef rp_channel *_try_enter(self) noexcept:
        """The channel, kept alive until _leave(); NULL (and no _leave() due) if transferred."""
        cdef rp_channel *ch
        with cython.critical_section(self):
            ch = self.ch
            if ch != NULL:
                self.busy += 1
        return ch

    cdef rp_channel *_enter(self, str what) except NULL:
        cdef rp_channel *ch = self._try_enter()
        if ch == NULL:
            raise PortClosed(f"{what}: this MessagePort was transferred and can no longer be used")
        return ch

    cdef void _leave(self) noexcept:
        cdef rp_channel *drop = NULL
        with cython.critical_section(self):
            self.busy -= 1
            if self.busy == 0 and self.ch == NULL and not self.moving:
                drop = self.held   # transferred while this call ran: the reference goes now
                self.held = NULL
        if drop != NULL:
            port_let_go(self, drop)

    cdef bint _owns(self, rp_channel *ch) noexcept:
        """Is ch still this object's channel (not transferred meanwhile)?"""
        cdef bint same
        with cython.critical_section(self):
            same = self.ch == ch
        return same

    cdef rp_channel *_claim(self) noexcept:
        """Start transferring this object: its channel (kept while claimed), or NULL if it was
        transferred or is being transferred by another call."""
        cdef rp_channel *ch
        with cython.critical_section(self):
            ch = self.ch
            if ch != NULL:
                self.ch = NULL
                self.moving = True
        return ch

    cdef void _unclaim(self, bint moved) noexcept:
        """End a transfer: moved, the message holds its own reference and this object lets go
        of its one (or its last running call will); not moved, the object is usable again."""
        cdef rp_channel *drop = NULL
        with cython.critical_section(self):
            self.moving = False
            if not moved:
                self.ch = self.held
                self.exported = False
            else:
                rp_channel_signal(self.held, self.side)   # asyncio waiters: PortClosed
                if self.busy == 0:
                    drop = self.held
                    self.held = NULL
        if drop != NULL:
            port_let_go(self, drop)
        if moved:
            with cython.critical_section(self):
                self.started = False
        _loop_update(self)   # its event loop lets go of it, or watches it again

    # ------------------------------------------------------------------ sending

    def post_message(self, value, transfer=None, timeout=None, /, **kwargs):
        """post_message(value, transfer=None, timeout=None)

        Send a structured clone of value to the other end.

        transfer: an iterable of ports to move to the receiver (they must appear in value, or
        they are moved and dropped); after the call the sender's port objects are unusable.
        None or empty: nothing moves.  Never blocks on an unbounded channel.  On a channel with
        max_pending_bytes, waits for room until timeout (None: forever; 0: not at all) and
        raises Full when there is none.
        """
        # Keywords are taken from **kwargs by hand: Cython's keyword parsing looks the argument
        # names up in the per-interpreter module state on every call, a process-wide atomic
        # operation that costs more than the rest of a small post.
        if kwargs:
            transfer, timeout = take_kwargs("post_message", kwargs, transfer, timeout)
        return self._post(value, transfer, timeout)

    cdef object _post(self, object value, object transfer, object timeout):
        cdef rp_channel *ch = self._enter("post_message")
        cdef dict ports = None
        cdef int64_t deadline = 0
        cdef int rc = RP_ECLOSED
        try:
            deadline = post_deadline(ch, timeout)
            if transfer is not None:
                ports = claim_transfer(ch, transfer)
            rc = send_value(ch, self.side, value, ports, deadline, self.allow_pickle)
        finally:
            if ports:
                release_transfer(ports, rc == RP_OK)
            self._leave()
        if rc != RP_OK:
            raise_for(RP_EFULL if rc == RP_ETIMEDOUT else rc, "post_message")

    postMessage = post_message

    def post_many(self, iterable, transfer=None, timeout=None, /, **kwargs):
        """post_many(iterable, transfer=None, timeout=None)

        Post each value of iterable, in order, as post_message would one by one; returns how
        many were posted.  Small values are encoded into a batch and published together (one
        ring cursor store and one wake-up per batch), which is much cheaper per message.

        If the iterable raises, or a value cannot be cloned (DataCloneError), the values before
        it are posted, none after it, and the exception propagates; the port stays usable.
        On a channel with max_pending_bytes, waits for room (timeout as post_message) and
        raises Full with .posted set to how many values were posted before.  transfer: ports
        to move; each moves with the first value that contains it; listed ports that no value
        contains are not moved (they stay usable).
        """
        if kwargs:
            transfer, timeout = take_kwargs("post_many", kwargs, transfer, timeout)
        return self._post_many(iterable, transfer, timeout)

    cdef object _post_many(self, object iterable, object transfer, object timeout):
        cdef rp_channel *ch = self._enter("post_many")
        cdef dict ports = None
        cdef Batch *b = NULL
        cdef int rc = RP_OK
        cdef Py_ssize_t posted = 0
        try:
            b = <Batch *>malloc(sizeof(Batch))
            if b == NULL:
                raise MemoryError()
            b.buf = NULL
            b.n = b.off = 0
            b.ch = ch
            b.side = self.side
            b.remote = rp_channel_shared(ch) != 0
            b.allow_pickle = self.allow_pickle
            b.deadline = post_deadline(ch, timeout)
            it = iter(iterable)
            b.buf = <unsigned char *>malloc(BATCH_BYTES)
            if b.buf == NULL:
                raise MemoryError()
            if transfer is not None:
                ports = claim_transfer(ch, transfer)
            try:
                for value in it:
                    rc = batch_add(b, value, ports, &posted)
                    if rc != RP_OK:
                        break
            except BaseException:
                # the values before the one that failed (or before the iterator raised) go
                rc = batch_flush(b, &posted)
                if rc != RP_OK:
                    raise_posted(rc, posted)
                raise
            if rc == RP_OK:
                rc = batch_flush(b, &posted)
        finally:
            if b != NULL:
                free(b.buf)
                free(b)
            if ports:
                release_transfer(ports, False)   # (the ports that moved left the dict)
            self._leave()
        if rc != RP_OK:
            raise_posted(rc, posted)
        return posted

    # ------------------------------------------------------------------ receiving

    cdef object _receive(self, int64_t deadline, bint *got):
        """The next message; *got is False when deadline is 0 and nothing was there."""
        cdef rp_channel *ch = self._enter("receive")
        cdef rp_recv r
        cdef int rc
        try:
            if self.batch_error is not None:
                raise self._pop_batch_error()
            rc = rp_channel_try_recv(ch, self.side, &r)
            if rc == RP_EAGAIN and deadline != 0:
                rc = wait_message(self, ch, &r, deadline)
            got[0] = rc != RP_EAGAIN
            if rc == RP_OK:
                return finish_receive(self, ch, &r)
            if rc != RP_EAGAIN:
                raise_for(rc, "receive")
            return None
        finally:
            self._leave()

    cdef list _receive_many(self, Py_ssize_t max_count, int64_t deadline):
        cdef rp_channel *ch = self._enter("receive_many")
        cdef rp_recv r
        cdef rp_msg *m
        cdef Reader rd
        cdef list out = []
        cdef int rc
        try:
            if self.batch_error is not None:
                raise self._pop_batch_error()
            rc = rp_channel_try_recv(ch, self.side, &r)
            if rc == RP_EAGAIN and deadline != 0:
                rc = wait_message(self, ch, &r, deadline)
            if rc != RP_OK:
                raise_for(rc, "receive_many")
            # the consumer lock is held from here until the batch ends
            while True:
                m = r.msg
                try:
                    if not rp_msg_valid(m, r.len) or (m.flags & RP_MSG_CODE) or \
                            (r.remote and m.nhandles):
                        # the one-message path: it ends the batch (a pickle is decoded unlocked)
                        out.append(finish_receive(self, ch, &r))
                        if len(out) >= max_count or \
                                rp_channel_try_recv(ch, self.side, &r) != RP_OK:
                            return out
                        continue
                    r_init(&rd, rp_msg_data(m), <size_t>m.data_len, rp_msg_handles(m),
                           m.nhandles, self.scache)
                    rd.allow_pickle = self.allow_pickle
                    if r.remote:
                        rd.xch = ch
                    try:
                        out.append(decode_checked(&rd))
                    except BaseException:
                        rp_channel_recv_end(ch, self.side, &r)
                        raise
                except BaseException as e:
                    if not out:
                        raise
                    # what was collected is returned; the error comes with the next receive
                    with cython.critical_section(self):
                        self.batch_error = e
                    return out
                if len(out) >= max_count:
                    rp_channel_recv_end(ch, self.side, &r)
                    return out
                if not rp_channel_recv_next(ch, self.side, &r):
                    return out
        finally:
            self._leave()

    cdef object _pop_batch_error(self):
        with cython.critical_section(self):
            e = self.batch_error
            self.batch_error = None
        return e

    def receive_many(self, max_count, timeout=None, /, **kwargs):
        """receive_many(max_count, timeout=None)

        A list of up to max_count messages, oldest first: blocks (as receive, up to timeout)
        only while none is there, and returns as soon as at least one is, with all those
        queued then (up to max_count).  Raises Empty when none came in time, PortClosed once
        the port is closed and drained.  Messages are taken in batches (one ring cursor store
        per batch).  A message that cannot be decoded after others were collected ends the
        list; its error (DecodeError) is raised by the next receive call on this object."""
        if kwargs:
            if timeout is not None or list(kwargs) != ["timeout"]:
                raise TypeError(f"receive_many() takes max_count and timeout; got keywords "
                                f"{sorted(kwargs)}")
            timeout = kwargs["timeout"]
        if type(max_count) is not int:
            raise TypeError(f"max_count must be an int, not {type(max_count).__name__}")
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        return self._receive_many(min(max_count, PY_SSIZE_T_MAX),
                                  RP_FOREVER if timeout is None else timeout_to_deadline(timeout))

    def receive(self, timeout=None, /, **kwargs):
        """receive(timeout=None)

        The next message.  Blocks until one arrives; with a timeout (seconds), raises
        ringport.Empty when none came in time.  Raises ringport.PortClosed once the port is
        closed and every message posted before the close was delivered, or once this object
        was transferred (also to a call blocked in it meanwhile)."""
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
        """Close the channel, both directions; 'close' is emitted on both ends.  The other end
        still receives what this end posted before; the messages this end had not read are
        dropped (as in Node), closing the ports they carried.  Posting afterwards raises
        PortClosed.  A transferred port: does nothing."""
        cdef rp_channel *ch = self._try_enter()
        if ch == NULL:
            return
        rp_channel_close(ch)
        with nogil:   # may wait for a receiver of this side that is decoding (with the GIL)
            rp_channel_discard(ch, self.side)
        self._leave()

    @property
    def closed(self):
        """True once either end closed the channel (or this port was transferred)."""
        cdef bint c
        cdef rp_channel *ch = self._try_enter()
        if ch == NULL:
            return True
        c = rp_channel_closed(ch) != 0
        self._leave()
        return c

    @property
    def capacity(self):
        cdef rp_channel *ch = self._enter("capacity")
        cdef uint64_t c = rp_channel_capacity(ch)
        self._leave()
        return c

    @property
    def max_pending_bytes(self):
        cdef rp_channel *ch = self._enter("max_pending_bytes")
        cdef int64_t m = rp_channel_max_pending(ch)
        self._leave()
        return None if m == 0 else m

    @property
    def pending_bytes(self):
        """Bytes this end posted that the other end has not received yet (exact on bounded
        channels, an estimate on unbounded ones)."""
        cdef rp_channel *ch = self._enter("pending_bytes")
        cdef int64_t n = rp_channel_pending_bytes(ch, self.side)
        self._leave()
        return n

    def poll(self):
        """True if receive() would not block (a message, or the end of the stream, is there)."""
        cdef bint ready
        cdef rp_channel *ch = self._try_enter()
        if ch == NULL:
            return True
        ready = rp_channel_poll(ch, self.side) != 0
        self._leave()
        return ready

    def __reduce__(self):
        raise DataCloneError("a MessagePort can only be moved with post_message(..., "
                             "transfer=[port]); it cannot be pickled")

    def __repr__(self):
        cdef rp_channel *ch = self._try_enter()
        if ch == NULL:
            state = "transferred"
        else:
            state = "closed" if rp_channel_closed(ch) else "open"
            self._leave()
        return f"<ringport.MessagePort side={self.side} {state} at {<size_t><void *>self:#x}>"

    # ------------------------------------------------------------------ events

    cdef object _ev(self):
        if self.events is None:
            with cython.critical_section(self):
                if self.events is None:
                    self.events = Emitter()
        return self.events

    def on(self, event, listener):
        """Call listener(value) for each 'message', listener(exc) on 'messageerror', listener()
        on 'close'.  Attaching a 'message' listener starts the port, as in Node."""
        self._ev().on(event, listener)
        listener_added(self, event)
        return self

    add_listener = on

    def once(self, event, listener):
        self._ev().once(event, listener)
        listener_added(self, event)
        return self

    def off(self, event, listener=None):
        self._ev().off(event, listener)
        if event == "message" and self._ev().count("message") == 0:
            with cython.critical_section(self):
                self.started = False
        _loop_update(self)
        return self

    remove_listener = off

    def start(self):
        """Start delivering messages to 'message' listeners (on() does this by itself)."""
        self._enter("start")
        with cython.critical_section(self):
            self.started = True
        self._leave()
        _loop_update(self)

    def ref(self):
        """Keep the program alive while this port has 'message' listeners (the default)."""
        with cython.critical_section(self):   # (the loop thread reads it: _loop_state)
            self.refed = True
        _loop_update(self)

    def unref(self):
        """Do not keep the program alive for this port's listeners."""
        with cython.critical_section(self):
            self.refed = False
        _loop_update(self)

    def has_ref(self):
        cdef bint refed
        with cython.critical_section(self):
            refed = self.refed
        return refed

    hasRef = has_ref

    def _dispatch(self, int limit=-1):
        """Deliver the messages queued now to the listeners (at most limit; -1: all), emit
        'close' once the stream ended.  Returns how many messages were delivered.  Never blocks.
        The event loop calls this; tests and embedders may too."""
        cdef rp_channel *ch
        if self.events is None:
            return 0
        ch = self._try_enter()
        if ch == NULL:
            return 0
        try:
            return dispatch(self, ch, limit)
        finally:
            self._leave()


# ---------------------------------------------------------------------------- receiving, continued

cdef int wait_message(MessagePort p, rp_channel *ch, rp_recv *r, int64_t deadline) except 1:
    """Wait for a message for p without the GIL, in slices: between them, signals get through
    and a transfer of p from another thread ends the wait."""
    cdef rp_cancel *cancel = rp_thread_cancel()
    cdef int rc
    while True:
        with nogil:
            rc = rp_channel_recv_begin(ch, p.side, r, deadline, SLICE_NS, cancel)
        if rc != RP_EINTR:
            return rc
        PyErr_CheckSignals()
        if not p._owns(ch):
            raise PortClosed("receive: this MessagePort was transferred while waiting")


cdef object finish_receive(MessagePort p, rp_channel *ch, rp_recv *r):
    """Decode the message r points at, then give its slot back."""
    cdef rp_msg *m = r.msg
    cdef rp_msg hdr
    cdef rp_node *copy = NULL
    cdef Reader rd
    cdef uint32_t i
    cdef uint32_t nh
    cdef rp_handle *hs
    # the header read once: a message from another process may be in a ring that process can
    # still write, so what was checked is what is used
    memcpy(&hdr, m, sizeof(rp_msg))
    if not rp_msg_valid(&hdr, r.len):
        rp_channel_recv_end(ch, p.side, r)
        raise DecodeError("invalid message: sizes do not agree")
    nh = hdr.nhandles
    hs = <rp_handle *>(rp_msg_data(m) + rp_align8(hdr.data_len))
    if hdr.flags & RP_MSG_CODE:
        # decoding runs user code (unpickling): decode a private copy, so that code never
        # runs while this port's consumer lock is held
        copy = rp_node_alloc(r.len)
        if copy == NULL:
            if r.remote:
                arena_leftovers(ch, hs, nh)
            rp_channel_recv_end(ch, p.side, r)
            raise MemoryError()
        memcpy(rp_node_body(copy), m, r.len)
        if not r.remote:
            # a local message's handles belong to the copy now (another process's are never
            # released here, and its ring is not this process's to write)
            for i in range(nh):
                hs[i].release = NULL
        rp_channel_recv_end(ch, p.side, r)
        m = <rp_msg *>rp_node_body(copy)
        memcpy(m, &hdr, sizeof(rp_msg))
        if r.remote:
            m.nhandles = 0   # the other process's handles: nothing to release here
        hs = <rp_handle *>(rp_msg_data(m) + rp_align8(hdr.data_len))
    # the string cache is guarded by the consumer lock: not used on a private copy
    r_init(&rd, rp_msg_data(m), <size_t>hdr.data_len, hs, nh,
           p.scache if copy == NULL else NULL)
    rd.allow_pickle = p.allow_pickle
    cdef rp_handle *xh = NULL
    if r.remote:
        # from another process: its handles name descriptors by ticket; work on a private copy
        # of them (the ring is the other process's to write)
        rd.xch = ch
        if copy == NULL and r.node != NULL:
            rd.xrecv = r   # put together from fragments: big data may stay in place (r_block)
        if nh:
            xh = <rp_handle *>malloc(nh * sizeof(rp_handle))
            if xh == NULL:
                # no handles to decode with: the arena records they name are free again now
                # (decoding may hand the node they are in to a block that dies before the end)
                arena_leftovers(ch, hs, nh)
                rd.nhandles = 0
            else:
                memcpy(xh, hs, nh * sizeof(rp_handle))
                for i in range(nh):
                    xh[i].release = NULL
                    xh[i].ptr = NULL
                    xh[i].reserved = 0
            rd.handles = xh
    try:
        return decode_checked(&rd)
    finally:
        if xh != NULL:
            # arena records the value did not take (decoding failed) are free again
            arena_leftovers(ch, xh, nh)
        free(xh)
        if copy != NULL:
            rp_msg_release_handles(m)
            rp_node_free(copy)
        else:
            rp_channel_recv_end(ch, p.side, r)


# ---------------------------------------------------------------------------- events

cdef int listener_added(MessagePort p, object event) except -1:
    if event == "message":
        p.start()             # as in Node
    elif event == "close":
        _loop_update(p)       # 'close' comes from the event loop, whatever other listeners
    return 0


cdef int dispatch(MessagePort p, rp_channel *ch, int limit) except -1:
    """_dispatch, with ch held."""
    cdef int n = 0
    cdef object v
    cdef bint got
    while limit < 0 or n < limit:
        if p.events.count("message") == 0:   # no listener: messages wait for one
            if rp_channel_closed(ch):
                emit_close(p)
            break
        try:
            v = p._receive(0, &got)
        except PortClosed:
            if rp_channel_closed(ch):    # else the object was transferred meanwhile
                emit_close(p)
            break
        except DecodeError as e:
            if not p.events.emit("messageerror", e):
                raise
            continue
        if not got:
            break
        n += 1
        p.events.emit("message", v)
    return n


cdef int emit_close(MessagePort p) except -1:
    cdef bint first
    with cython.critical_section(p):
        first = not p.close_emitted
        p.close_emitted = True
    if first:
        p.events.emit("close")
    return 0


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


# ---------------------------------------------------------------------------- transfer lists

cdef list transfer_items(object transfer):
    """The ports of a transfer list, checked: an iterable of distinct MessagePorts."""
    cdef list items
    cdef set seen = set()
    if transfer is None:
        return []
    if isinstance(transfer, (str, bytes, bytearray, int, float)):
        items = None     # iterable or not, never a list of transferables (0 and False included)
    else:
        try:
            items = list(transfer)
        except TypeError:
            items = None
    if items is None:
        raise DataCloneError(f"transfer must be an iterable of MessagePort objects, not "
                             f"{type(transfer).__name__}")
    for obj in items:
        if not rp_is_port(obj):
            raise DataCloneError(f"{type(obj).__qualname__} object is not transferable "
                                 f"(transfer takes MessagePort objects)")
        if obj_key(obj) in seen:
            raise DataCloneError("the same MessagePort is listed twice in transfer")
        seen.add(obj_key(obj))
    return items


cdef dict claim_transfer(rp_channel *source, object transfer):
    """Claim every port in transfer for one message ({obj_key(port): port}), or none of them:
    DataCloneError if one was transferred (or is being transferred by another thread), is
    closed, or is the sending port (source) or its peer."""
    cdef dict ports = {}
    cdef rp_channel *ch
    cdef MessagePort p
    for obj in transfer_items(transfer):
        p = <MessagePort>obj
        ch = p._claim()
        if ch == NULL:
            release_transfer(ports, False)
            raise DataCloneError("a MessagePort in transfer was already transferred")
        ports[obj_key(p)] = p
        if ch == source:
            release_transfer(ports, False)
            raise DataCloneError("transfer contains the sending port or its peer")
        if rp_channel_closed(ch):
            release_transfer(ports, False)
            raise DataCloneError("a MessagePort in transfer is closed")
    return ports


cdef void release_transfer(dict ports, bint moved) noexcept:
    """After the message was sent (moved) or not: see MessagePort._unclaim."""
    for p in ports.values():
        (<MessagePort>p)._unclaim(moved)


cdef uint32_t port_handle(Writer *w, MessagePort p) except? 0xFFFFFFFF:
    """Put a claimed port in the message being written: the handle holds a reference of its
    own (the object gives its reference up once the message is sent).  The port's allow_pickle
    setting travels with it (in the handle's reserved field)."""
    cdef uint32_t hidx
    rp_channel_incref(p.held, p.side)
    hidx = w_add_handle(w, rp_port_release, <void *>p.held, <uint64_t>p.side, RP_H_PORT)
    if not p.allow_pickle:
        w.handles[hidx].reserved = PORT_NO_PICKLE
    return hidx


# ---------------------------------------------------------------------------- encode and send
#
# The one path from a value to a message: post_message, BroadcastChannel, the hand-over to a
# new interpreter (_export) and dumps() all encode through encode_send.

cdef enum:
    TO_PORT = 0     # send on a channel side (waiting for room on a bounded one)
    TO_NODE = 1     # a message in a block of its own, for another interpreter
    TO_BYTES = 2    # the codec bytes only (dumps): no handles


cdef struct Dest:
    int kind
    rp_channel *ch      # TO_PORT: where to, and from which side
    int side
    int64_t deadline    # TO_PORT: 0 to never wait (unbounded channels never need to)
    int rc              # TO_PORT: what the send returned
    bint allow_pickle   # may values the codec has no native form for be pickled?
    rp_node *node       # TO_NODE: the message
    PyObject *port_hook # TO_BYTES: dumps(ports=...), or NULL


cdef object encode_send(object value, dict ports, Dest *d):
    """Encode value, moving the claimed ports in ports (listed but not in value: moved too,
    and dropped by the receiver), and deliver it to d.  Returns the bytes for TO_BYTES."""
    cdef uint64_t stackbuf[STACK_WORDS]
    cdef void *mk[MEMO_STACK]
    cdef Py_ssize_t mv[MEMO_STACK]
    cdef Writer w
    w_init(&w, <unsigned char *>stackbuf, STACK_BYTES, mk, mv)
    # a channel shared with another process carries no pointers: no out-of-band blocks, ports
    # or shared memory in its messages
    w.remote = d.kind == TO_PORT and rp_channel_shared(d.ch)
    w.allow_handles = d.kind != TO_BYTES and not w.remote
    w.sg_ok = w.remote
    if w.remote:
        w.xch = d.ch
        w.xside = d.side
    w.unshared = d.kind == TO_PORT and rp_channel_unshared(d.ch)
    w.port_hook = d.port_hook if d.kind == TO_BYTES else NULL
    w.allow_pickle = d.allow_pickle
    try:
        encode_value(&w, value, ports)
        if d.kind == TO_BYTES:
            w_flags(&w)
            return PyBytes_FromStringAndSize(<const char *>w.buf + sizeof(rp_msg),
                                             <Py_ssize_t>(w.pos - sizeof(rp_msg)))
        if ports and not w.remote:   # (remote: a listed port not in the value just closes
            for p in ports.values():   # here when its object lets go once moved)
                if memo_get(&w, <void *>p) < 0:
                    port_handle(&w, <MessagePort>p)
        if w.remote:
            xhandles_seal(&w)
        w_finish(&w)
        if d.kind == TO_NODE:
            if w.node == NULL:
                w_grow(&w, 1)   # move the body into a heap node
            rp_node_set_len(w.node, w.pos)
            d.node = w.node
            d.rc = RP_OK
        else:
            d.rc = send_writer(d.ch, d.side, &w, d.deadline)
        if d.rc == RP_OK:
            # the message owns the handles now, and the node if it was queued whole (sent in
            # pieces, it was copied: the node stays the writer's to free)
            w.nhandles = 0
            if w.sg_ptr == NULL:
                w.node = NULL
            if w.remote:
                xsent(&w)
        return None
    finally:
        w_release(&w)


cdef int send_value(rp_channel *ch, int side, object value, dict ports,
                    int64_t deadline, bint allow_pickle=True) except? -100:
    """encode_send to a channel side; returns the send's return code (the caller raises)."""
    cdef Dest d
    d.kind = TO_PORT
    d.ch = ch
    d.side = side
    d.deadline = deadline
    d.allow_pickle = allow_pickle
    d.rc = RP_EINVAL
    encode_send(value, ports, &d)
    return d.rc


cdef int send_writer(rp_channel *ch, int side, Writer *w, int64_t deadline) except? -100:
    """Send a finished message; with a deadline, wait for room without the GIL, in slices."""
    cdef rp_cancel *cancel
    cdef int rc
    if deadline == 0:
        # never waits for room; RP_EINTR: the producer lock stayed busy for a whole slice
        # (other producers): wait for it without the GIL, coming back for signals.  A big body
        # goes without the GIL at once: copying it takes a while, and to another process it may
        # wait a moment for the consumer to make room (rp_channel.c, shared_write)
        if w.pos + w.sg_len >= OOB_MIN:
            with nogil:
                rc = _send(ch, side, w, 0, NULL)
        else:
            rc = _send(ch, side, w, 0, NULL)
        while rc == RP_EINTR:
            PyErr_CheckSignals()
            with nogil:
                rc = _send(ch, side, w, 0, NULL)
        return rc
    cancel = rp_thread_cancel()
    while True:
        with nogil:
            rc = _send(ch, side, w, deadline, cancel)
        if rc != RP_EINTR:
            return rc
        PyErr_CheckSignals()


cdef int _send(rp_channel *ch, int side, Writer *w, int64_t deadline,
               rp_cancel *cancel) noexcept nogil:
    if w.sg_ptr != NULL:
        return rp_channel_send_sg(ch, side, w.buf, w.sg_at, w.sg_ptr, w.sg_len, w.buf + w.sg_at,
                                  w.pos - w.sg_at, w.xfds, w.nx, deadline, SLICE_NS, cancel)
    if w.nx:
        if w.node != NULL:
            rp_node_set_len(w.node, w.pos)
        return rp_channel_send_x(ch, side, w.buf, w.pos, w.node, w.xfds, w.nx, deadline,
                                 SLICE_NS, cancel)
    if w.node == NULL:
        return rp_channel_send(ch, side, w.buf, w.pos, deadline, SLICE_NS, cancel)
    rp_node_set_len(w.node, w.pos)
    return rp_channel_send_node(ch, side, w.node, deadline, SLICE_NS, cancel)


# ---------------------------------------------------------------------------- post_many
#
# Values are encoded one after another into one buffer (each body at a multiple of 8) and handed
# to rp_channel_send_batch together.  A value whose message carries handles (ports, out-of-band
# blocks, shared memory) or outgrew its room goes alone, after the batch before it: the batch
# itself never owns anything to release when a send fails.

cdef enum:
    BATCH_BYTES = 65536
    BATCH_MAX = 512


cdef struct Batch:
    unsigned char *buf
    size_t off                  # bytes used in buf
    size_t n                    # bodies in buf
    size_t lens[BATCH_MAX]
    rp_channel *ch
    int side
    bint remote
    bint allow_pickle
    int64_t deadline


cdef int batch_flush(Batch *b, Py_ssize_t *posted) except? -100:
    """Send what is batched; *posted grows by how many went.  Returns the send's code."""
    cdef size_t sent = 0, k, i, off = 0
    cdef int rc = RP_OK
    cdef rp_cancel *cancel = rp_thread_cancel() if b.deadline != 0 else NULL
    while sent < b.n:
        k = 0
        if b.deadline == 0:
            rc = rp_channel_send_batch(b.ch, b.side, b.buf + off, &b.lens[sent], b.n - sent,
                                       &k, 0, SLICE_NS, NULL)
        else:
            with nogil:
                rc = rp_channel_send_batch(b.ch, b.side, b.buf + off, &b.lens[sent],
                                           b.n - sent, &k, b.deadline, SLICE_NS, cancel)
        for i in range(sent, sent + k):
            off += rp_align8(b.lens[i])
        sent += k
        posted[0] += <Py_ssize_t>k
        if rc != RP_EINTR:
            break
        PyErr_CheckSignals()
    b.n = 0
    b.off = 0
    return rc


cdef int batch_add(Batch *b, object value, dict ports, Py_ssize_t *posted) except? -100:
    """Encode value into the batch (or send it alone, after the batch, when it cannot join)."""
    cdef void *mk[MEMO_STACK]
    cdef Py_ssize_t mv[MEMO_STACK]
    cdef Writer w
    cdef int rc
    if b.n == BATCH_MAX or BATCH_BYTES - b.off < STACK_BYTES:
        rc = batch_flush(b, posted)
        if rc != RP_OK:
            return rc
    w_init(&w, b.buf + b.off, BATCH_BYTES - b.off, mk, mv)
    w.remote = b.remote
    w.allow_handles = not b.remote
    w.unshared = rp_channel_unshared(b.ch)
    w.allow_pickle = b.allow_pickle
    try:
        encode_value(&w, value, ports)
        if w.remote:
            xhandles_seal(&w)
        w_finish(&w)
        if w.node == NULL and w.nhandles == 0 and w.nx == 0:
            b.lens[b.n] = w.pos
            b.n += 1
            b.off += rp_align8(w.pos)
            return RP_OK
        rc = batch_flush(b, posted)   # (the body stays where it is: flushing writes nothing)
        if rc != RP_OK:
            return rc
        rc = send_writer(b.ch, b.side, &w, b.deadline)
        if rc == RP_OK:
            w.nhandles = 0
            w.node = NULL
            if w.remote:
                xsent(&w)
            posted[0] += 1
            if ports:
                for key in [k for k, p in ports.items() if memo_get(&w, <void *>p) >= 0]:
                    (<MessagePort>ports.pop(key))._unclaim(True)
        return rc
    finally:
        w_release(&w)


cdef int raise_posted(int rc, Py_ssize_t posted) except -1:
    """raise_for, telling how many values were posted before (exc.posted)."""
    try:
        raise_for(RP_EFULL if rc == RP_ETIMEDOUT else rc, "post_many")
    except (Full, PortClosed) as e:
        e.posted = posted
        raise


cdef uint64_t checked_capacity(object capacity) except 0:
    if type(capacity) is not int:
        raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
    if capacity < RP_RING_MIN_CAPACITY or capacity > RP_RING_MAX_CAPACITY \
            or (capacity & (capacity - 1)):
        raise ValueError(f"capacity must be a power of two between {RP_RING_MIN_CAPACITY} "
                         f"and {RP_RING_MAX_CAPACITY} (2**30), not {capacity}")
    return capacity


cdef int64_t checked_max_pending(object max_pending_bytes) except -1:
    if max_pending_bytes is None:
        return 0
    if type(max_pending_bytes) is not int:
        raise TypeError("max_pending_bytes must be an int or None")
    if max_pending_bytes <= 0:
        raise ValueError("max_pending_bytes must be positive")
    return max_pending_bytes


@cython.final
cdef class MessageChannel:
    """MessageChannel(capacity=262144, max_pending_bytes=None, *, allow_pickle=True)

    Two entangled ports: what port1 posts, port2 receives, and the other way round.

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
        cdef uint64_t cap = checked_capacity(capacity)
        cdef int64_t maxp = checked_max_pending(max_pending_bytes)
        cdef rp_channel *ch
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


def _try_receive(MessagePort port not None):
    """(True, message) or (False, None) when nothing is queued; never waits.  PortClosed once
    the port is closed and drained (for relays, which must tell the two apart)."""
    cdef bint got = False
    v = port._receive(0, &got)
    return (True, v) if got else (False, None)


# ---------------------------------------------------------------------------- across processes
#
# A process worker's parent port is one side of a channel whose rings live in a memfd mapping
# (csrc/rp_channel.h, "channels shared with a process"): the parent makes it, passes the file
# descriptor to the new process, and each process wraps its own side in a MessagePort.

def _process_channel(capacity=DEFAULT_CAPACITY, max_pending_bytes=None, *, allow_pickle=True):
    """(port, memfd, sock): side 0 of a new channel shared with a process, and the two
    descriptors (close-on-exec, the caller's to pass on and close) that the other process gives
    _process_port."""
    cdef uint64_t cap = checked_capacity(capacity)
    cdef int64_t maxp = checked_max_pending(max_pending_bytes)
    cdef int fd = -1, sock = -1
    cdef rp_channel *ch = rp_channel_new_shared(cap, maxp, &fd, &sock)
    if ch == NULL:
        raise OSError("could not make a channel shared with a process (memfd)")
    cdef MessagePort p = MessagePort._new(ch, 0)
    p.allow_pickle = bool(allow_pickle)
    return p, fd, sock


def _process_port(int fd, int sock, capacity, max_pending_bytes=None, *, allow_pickle=True):
    """Side 1 of the channel whose memfd and socket are fd and sock (the port owns them from
    then on; on error they are still the caller's)."""
    cdef uint64_t cap = checked_capacity(capacity)
    cdef int64_t maxp = checked_max_pending(max_pending_bytes)
    cdef rp_channel *ch = rp_channel_attach_shared(fd, sock, cap, maxp, 1)
    if ch == NULL:
        raise ValueError("that file descriptor is not a ringport channel of that capacity")
    cdef MessagePort p = MessagePort._new(ch, 1)
    p.allow_pickle = bool(allow_pickle)
    return p


def _flush_shared(timeout=None):
    """Wait until what this process posted to other processes is in their rings (before a
    process worker ends: what waits in this process's memory would die with it).  False on
    timeout."""
    cdef int64_t deadline = timeout_to_deadline(timeout)
    cdef int rc
    while True:
        with nogil:
            rc = rp_channel_flush_all(min(deadline, rp_deadline_after(SLICE_NS)))
        if rc == RP_OK:
            return True
        if rp_now_ns() >= deadline:
            return False
        PyErr_CheckSignals()


def _port_peer_gone(MessagePort port not None):
    """The process at the other end of port's channel is gone: close the channel (what it
    posted before is still delivered; then receive raises PortClosed)."""
    cdef rp_channel *ch = port._try_enter()
    if ch == NULL:
        return
    try:
        rp_channel_close(ch)
    finally:
        port._leave()


def _port_set_unshared(MessagePort port not None):
    """Port's channel reaches another machine (the Ray backend relays one of its ends there):
    from now on posting shared memory on either end raises DataCloneError.  False if the
    port object has no channel any more (it moved)."""
    cdef rp_channel *ch = port._try_enter()
    if ch == NULL:
        return False
    try:
        rp_channel_set_unshared(ch)
    finally:
        port._leave()
    return True


# Ports and shared buffers in a message to another process travel as descriptors over the
# channel's socket (rp_channel_send_x), each named by a ticket in the message's handle.  A port
# whose channel is already shared moves as its memfd and socket (full speed over there); a port
# of a channel in this process's memory is relayed: a thread here pumps messages between it and
# a new shared channel whose other side goes to the other process.

cdef rp_xfd *w_add_xfd(Writer *w, uint64_t ticket) except NULL:
    cdef rp_xfd *x
    if w.nx == w.xcap:
        x = <rp_xfd *>realloc(w.xfds, (w.xcap * 2 + 4) * sizeof(rp_xfd))
        if x == NULL:
            raise MemoryError()
        w.xfds = x
        w.xcap = w.xcap * 2 + 4
    x = &w.xfds[w.nx]
    w.nx += 1
    x.nfds = 0
    x.len = 8
    memcpy(x.meta, &ticket, 8)
    return x


cdef void meta_put(rp_xfd *x, uint64_t v) noexcept:
    memcpy(x.meta + x.len, &v, 8)
    x.len += 8


cdef uint64_t meta_get(rp_xfd *x, size_t off) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v
    if x.len < off + 8:
        raise _decode_error("descriptor message too short")
    memcpy(&v, x.meta + off, 8)
    return v


cdef int w_dup_into(rp_xfd *x, int fd) except -1:
    cdef int d = fcntl(fd, F_DUPFD_CLOEXEC, 0)
    if d < 0:
        raise OSError("could not duplicate a descriptor to send it")
    x.fds[x.nfds] = d
    x.nfds += 1
    return 0


cdef uint32_t xport_handle(Writer *w, MessagePort p) except? 0xFFFFFFFF:
    """A claimed port going to another process: its channel's descriptors (or those of a new
    shared channel that a relay will pump) over the socket, a ticket in the message."""
    cdef rp_channel *ch = p.held
    cdef uint64_t ticket = rp_channel_new_ticket()
    cdef rp_xfd *x = w_add_xfd(w, ticket)
    cdef int memfd = -1, sock = -1, side = p.side
    cdef rp_channel *s
    cdef MessagePort local, near
    cdef uint64_t cap = rp_channel_capacity(ch)
    cdef int64_t maxp = rp_channel_max_pending(ch)
    if rp_channel_shared(ch):
        if rp_channel_export(ch, &memfd, &sock) != RP_OK:
            raise DataCloneError("could not duplicate the port's descriptors to send it")
        x.fds[0] = memfd
        x.fds[1] = sock
        x.nfds = 2
        p.exported = True   # once sent, this process lets go of its side without closing it
    else:
        if cap < RELAY_MIN_CAPACITY:
            cap = RELAY_MIN_CAPACITY
        s = rp_channel_new_shared(cap, maxp, &memfd, &sock)
        if s == NULL:
            raise DataCloneError("could not make a channel shared with the other process")
        x.fds[0] = memfd
        x.fds[1] = sock
        x.nfds = 2
        near = MessagePort._new(s, 0)
        near.allow_pickle = p.allow_pickle
        rp_channel_incref(ch, side)
        local = MessagePort._new(ch, side)
        local.allow_pickle = p.allow_pickle
        if w.relays == NULL:
            relays = []
            Py_INCREF(relays)
            w.relays = <PyObject *>relays
        (<list>w.relays).append((local, near))
        side = 1
    meta_put(x, cap)
    meta_put(x, <uint64_t>maxp)
    meta_put(x, <uint64_t>side | (0 if p.allow_pickle else 2))
    return w_add_handle(w, NULL, <void *>p, ticket, RP_H_XPORT)


cdef void xhandles_seal(Writer *w) noexcept:
    """Before a message to another process is finished: its handles carry tickets only (the
    pointers that told them apart while encoding mean nothing over there)."""
    cdef uint32_t i
    for i in range(w.nhandles):
        w.handles[i].ptr = NULL
        w.handles[i].release = NULL


cdef int xsent(Writer *w) except -1:
    """A message to another process was sent: start its relays."""
    relays = <list>w.relays if w.relays != NULL else None
    if relays:
        from ringport._relay import start
        for local, near in relays:
            start(local, near)
        relays.clear()
    return 0


cdef void port_let_go(MessagePort p, rp_channel *ch) noexcept:
    if p.exported:
        rp_channel_detach(ch, p.side)
    else:
        rp_channel_decref(ch, p.side)


cdef int take_xfds(Reader *r, rp_handle *h, rp_xfd *x, int nfds, str what) except -1:
    """The descriptors that handle h of a message from another process names, exactly nfds of
    them (now the caller's); DecodeError otherwise (anything received is closed)."""
    if rp_channel_take_fds(r.xch, h.aux, x) != RP_OK:
        raise _decode_error(f"the descriptors of {what} did not arrive")
    if x.nfds != nfds:
        close_xfds(x)
        raise _decode_error(f"bad descriptors for {what}")
    return 0


cdef void close_xfds(rp_xfd *x) noexcept:
    cdef int i
    for i in range(x.nfds):
        close(x.fds[i])
    x.nfds = 0


cdef object xport_adopt(Reader *r):
    """A port that came from another process: map its channel from the descriptors."""
    cdef uint64_t k = r_varint(r)
    cdef rp_handle *h
    cdef rp_xfd x
    cdef rp_channel *ch
    cdef uint64_t cap, flags
    cdef int64_t maxp
    cdef MessagePort p
    if k >= r.nhandles:
        raise _decode_error("handle index out of range")
    h = &r.handles[k]
    if h.kind != RP_H_XPORT or h.reserved != 0:
        raise _decode_error("handle of the wrong kind, or used twice")
    h.reserved = 1
    take_xfds(r, h, &x, 2, "a transferred port")
    try:
        cap = meta_get(&x, 8)
        maxp = <int64_t>meta_get(&x, 16)
        flags = meta_get(&x, 24)
        if maxp < 0 or cap > RP_RING_MAX_CAPACITY:
            raise _decode_error("bad descriptors for a transferred port")
        ch = rp_channel_attach_shared(x.fds[0], x.fds[1], cap, maxp, <int>(flags & 1))
        if ch == NULL:
            raise _decode_error("a transferred port's memory is not a ringport channel")
    except BaseException:
        close_xfds(&x)
        raise
    p = MessagePort._new(ch, <int>(flags & 1))
    p.allow_pickle = not (flags & 2)
    return p


# ---------------------------------------------------------------------------- across interpreters
#
# A new interpreter (or thread) can only be handed plain data, such as an int.  _export() encodes
# a value (ports moved with transfer, as by post_message) into a message in its own block,
# registers it (csrc/rp_registry.h) and returns its id: a token.  _import() in the receiving
# interpreter takes the token, decodes it and frees the block.  Each token is imported exactly
# once, or dropped with _drop_token(); a stale, reused or made-up token raises ValueError.

def _export(value, transfer=()):
    cdef dict ports = claim_transfer(NULL, transfer) if transfer else None
    cdef Dest d
    cdef int64_t token = -1
    d.kind = TO_NODE
    d.node = NULL
    d.allow_pickle = True
    try:
        encode_send(value, ports, &d)
        if d.node != NULL:
            token = rp_token_new(d.node)
            if token < 0:   # not registered: the node and the handles in it are still ours
                rp_msg_release_handles(<rp_msg *>rp_node_body(d.node))
                rp_node_free(d.node)
                d.node = NULL
                raise MemoryError("could not register the token")
    finally:
        if ports:
            release_transfer(ports, d.node != NULL)
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
