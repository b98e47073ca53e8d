"""A link: the ports of one process bridged to another machine over one TCP connection.

The Ray backend (``ringport._ray``) sets the connection up; this module only carries messages.
Each bridged port is a *stream*: a local MessagePort here whose messages are taken (decoded), re-
encoded with ``dumps(..., ports=...)`` and written as frames, and whose incoming frames are
decoded (``loads``, untrusted bytes) and posted into it.  A port inside a message becomes a new
stream (the sender names it by an id of its own parity: the side that connected uses odd ids),
so transferred ports reach the other machine and keep working, each in order, each message once.

Frames: ``<length u32><stream u32><kind u8>`` then length bytes.  Kinds:
  M  a message on a stream (codec bytes)        C  the stream's sender closed its port
  A  credit: the receiver posted this many more bytes of the stream (u64)
  J  a large message on a stream, as a blob the peer's ``fetch_blob`` gets (u64 id)
  N  before the message that carries a new stream: its channel's max_pending_bytes (u64, 0
     for unbounded), so the channel made for it on the other side is bounded the same
  anything else: a control frame for the owner of the link (``on_control(kind, data)``)

Flow control is per stream: a sender has at most WINDOW bytes (a bounded channel's
max_pending_bytes, if smaller, but at least MIN_WINDOW) of a stream that the receiver has not yet
posted.  A receiver whose local port is bounded (``max_pending_bytes``) and full keeps
what arrived and acknowledges it only once posted, so a full consumer on one machine makes the
producer's ``post_message`` on the other raise ``Full``, and other streams are not held up.
"""
import select
import socket
import struct
import threading
import time
from itertools import count

from ringport._core import (DecodeError, Full, MessageChannel, PortClosed, _new_waitset,
                            _port_set_unshared, _try_receive, dumps, loads)

__all__ = ["Link", "WINDOW"]

_HEADER = struct.Struct("<IIB")
_U64 = struct.Struct("<Q")
#: Unacknowledged bytes a stream may have in flight.
WINDOW = 4 << 20
MIN_WINDOW = 64 << 10
#: A message at least this big goes by blob (the owner's object store), not in the byte stream.
BLOB_MIN = 1 << 20
_MAX_FRAME = 1 << 31
_BATCH_BYTES = 256 << 10
#: After a close, how long the reader waits for the peer's end of the connection.
LINGER_S = 30.0
#: drain(timeout) waits at most this many times timeout in all, however credit comes.
DRAIN_CAP = 10
_PARENT, _BROADCAST = 0, 1    # the streams every link has
_DONE, _STARVED, _MORE = 0, 1, 2


class _Stream:
    __slots__ = ("id", "port", "window", "sent", "acked", "backlog", "owed", "closing")

    def __init__(self, sid, port):
        self.id = sid
        self.port = port
        bound = port.max_pending_bytes
        self.window = WINDOW if bound is None else max(MIN_WINDOW, min(WINDOW, bound))
        self.sent = 0            # bytes sent (the writer's count) ...
        self.acked = 0           # ... and acknowledged by the peer (the reader's)
        self.backlog = []        # (value, ports, size) received, not yet posted (port was full)
        self.owed = 0            # bytes posted here, not yet acknowledged to the peer
        self.closing = False     # the peer closed: close the port once the backlog is posted


class Link:
    """One end of a link.  sock: a connected stream socket (owned from now on); odd: this end
    names new streams by odd ids; allow_pickle: may what arrives unpickle (run code)?  blobs:
    an object with put(data) -> id (keep it for the peer) and fetch(id) -> bytes (the peer's),
    or None to carry every message in the byte stream.  expect: stream ids bound later whose
    messages wait here until then."""

    def __init__(self, sock, *, odd, allow_pickle, on_control=None, on_closed=None, blobs=None,
                 expect=()):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.allow_pickle = allow_pickle
        self.on_control = on_control
        self.on_closed = on_closed
        self.blobs = blobs
        self._ids = count(3 if odd else 2, 2)
        self._peer_parity = 0 if odd else 1
        self._streams = {}
        self._lock = threading.Lock()        # _streams
        self._posting = threading.Lock()     # the backlogs (the reader's, and close's last try)
        self._send_lock = threading.Lock()   # whole frames on the socket
        self._ws = _new_waitset()
        self._closed = False
        self._passes = 0
        self._eof = False                    # the peer's end came: no more acknowledgements
        self._credits = 0                    # credit frames taken (drain sees progress by it)
        self._starved = False                # the last pass left messages for want of credit
        self._cond = threading.Condition()
        self.dropped = 0                     # messages that could not cross (DataCloneError)
        self._owing = set()                  # streams with bytes to acknowledge (reader only)
        self._acks = bytearray()             # acknowledgements for the writer to send
        self._acks_lock = threading.Lock()
        self._made = []                      # ports a message being decoded brought (reader)
        self._early = {sid: [] for sid in expect}   # messages for streams not bound yet
        self._new = []                       # streams made by the message being encoded
        self._bounds = {}                    # the peer's announced streams: max_pending_bytes
        self._threads = []

    # ------------------------------------------------------------------ set-up

    def bind(self, sid, port):
        """Bridge port as stream sid (the two fixed streams, or one the owner named)."""
        _port_set_unshared(port)
        s = _Stream(sid, port)
        with self._lock:
            if self._closed:
                port.close()
                return
            s.backlog = self._early.pop(sid, [])
            self._streams[sid] = s
        self._ws.watch(port, 0)
        self._ws.signal()

    def start(self):
        # the writer first: the reader, which may end at once (a peer gone, a malformed frame),
        # joins it on the way out
        self._threads = [threading.Thread(target=target, name=name, daemon=True)
                         for target, name in ((self._read_loop, "ringport-ray-in"),
                                              (self._write_loop, "ringport-ray-out"))]
        self._threads[1].start()
        self._threads[0].start()

    def send_control(self, kind, data=b""):
        self._send(_HEADER.pack(len(data), 0, kind[0]) + data)

    def _send(self, data):
        with self._send_lock:
            self.sock.sendall(data)

    def drain(self, timeout=30.0):
        """Wait until the writer made a whole pass after this call that left nothing behind
        for want of credit: what the bridged ports held then is on the wire.  Gives up after
        timeout seconds in which no credit came (a peer that stopped reading), not after
        timeout seconds in all: a slow peer still gets everything (within DRAIN_CAP times
        timeout in all)."""
        with self._cond:
            start = self._passes
            if start < 0:
                return
        credits = self._credits
        deadline = time.monotonic() + timeout
        cap = deadline + (DRAIN_CAP - 1) * timeout
        with self._cond:
            while not (self._passes < 0 or (self._passes >= start + 2 and not self._starved)):
                now = time.monotonic()
                if self._credits != credits:
                    credits = self._credits
                    deadline = min(now + timeout, cap)
                left = deadline - now
                if left <= 0:
                    return
                self._ws.signal()   # (a pass ends in a wait: each needs its own wake-up)
                self._cond.wait(min(left, 0.05))

    def close(self, hard=False):
        """Close the connection and every bridged port (their peers read what was delivered,
        then PortClosed).  What was written goes out whole: the connection is shut for writing
        only, and the reader reads (and drops) what still comes until the peer closes too, or
        LINGER_S passes.  A socket closed with bytes unread would reset the connection, and the
        kernel would drop what it had not sent yet.  hard: shut both ways at once (a peer given
        up on: nothing more is owed to it, and the reader ends now)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams = list(self._streams.values())
            self._streams.clear()
        try:
            self.sock.shutdown(socket.SHUT_WR if self._threads and not hard
                               else socket.SHUT_RDWR)
        except OSError:
            pass
        if not self._threads:   # never started: no reader to close the descriptor
            self.sock.close()
        for s in streams:
            self._flush_backlog(s, final=True)
            s.port.close()
        self._ws.signal()
        with self._cond:
            self._passes = -1
            self._cond.notify_all()
        if self.on_closed is not None:
            self.on_closed()

    def join(self, timeout=None):
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)

    # ------------------------------------------------------------------ outgoing

    def _port_out(self, port):
        """dumps() met a port in a message: it becomes a new stream."""
        sid = next(self._ids)
        self._new.append((sid, port.max_pending_bytes or 0))
        self.bind(sid, port)
        return sid

    def _write_loop(self):
        ws = self._ws
        try:
            while not self._closed:
                seen = ws.seq()
                with self._acks_lock:
                    out, self._acks = self._acks, bytearray()
                with self._lock:
                    streams = list(self._streams.values())
                starved = more = False
                for s in streams:
                    state = self._take(s, out)
                    starved |= state == _STARVED
                    more |= state == _MORE
                    if len(out) >= _BATCH_BYTES:
                        self._send(bytes(out))
                        out.clear()
                if out:
                    self._send(bytes(out))
                if more:     # a full batch left messages behind: another pass at once
                    continue
                with self._cond:
                    self._passes += 1
                    self._starved = starved
                    self._cond.notify_all()
                ws.wait(seen, None)
        except OSError:
            pass
        finally:
            self.close()

    def _take(self, s, out):
        """Frames for what s's port holds now (as far as its credit goes) into out.  Returns
        _DONE (nothing left, or closed), _STARVED (stopped for want of credit) or _MORE (out is
        full)."""
        while True:
            if s.sent - s.acked >= s.window:
                return _STARVED
            try:
                got, value = _try_receive(s.port)
            except PortClosed:
                self._forget(s)
                out += _HEADER.pack(0, s.id, ord("C"))
                return _DONE
            except DecodeError:   # dropped, as for a port without 'messageerror' listeners
                self.dropped += 1
                continue
            if not got:
                return _DONE
            self._new = []
            try:
                data = dumps(value, allow_pickle=self.allow_pickle, ports=self._port_out)
            except Exception:   # noqa: BLE001 - e.g. shared memory posted before it was bridged
                for sid, _ in self._new:
                    self._peer_closed(sid)
                self.dropped += 1
                continue
            for sid, bound in self._new:
                out += _HEADER.pack(8, sid, ord("N")) + _U64.pack(bound)
            n = len(data)
            s.sent += n
            if n >= BLOB_MIN and self.blobs is not None:
                out += _HEADER.pack(8, s.id, ord("J")) + _U64.pack(self.blobs.put(data))
            else:
                if n + 9 > _MAX_FRAME:
                    self.dropped += 1
                    continue
                out += _HEADER.pack(n, s.id, ord("M"))
                out += data
            if len(out) >= _BATCH_BYTES:
                return _MORE

    def _forget(self, s):
        with self._lock:
            if self._streams.get(s.id) is s:
                del self._streams[s.id]
        try:
            self._ws.unwatch(s.port, 0)
        except Exception:   # noqa: BLE001 - closed meanwhile
            pass
        s.port.close()

    # ------------------------------------------------------------------ incoming

    def _read_loop(self):
        # The socket stays blocking: a timeout on it would hold for the writer's sendall too
        # (a peer slow to read would then look gone).  The reader waits in poll instead.
        buf = bytearray()
        sock = self.sock
        poller = select.poll()
        linger_end = None
        try:
            poller.register(sock, select.POLLIN)
            while True:
                if self._closed:   # closed here: wait for the peer's end, dropping what comes
                    if linger_end is None:
                        linger_end = time.monotonic() + LINGER_S
                        buf.clear()
                    left = linger_end - time.monotonic()
                    if left <= 0:
                        return
                    if poller.poll(min(left, 1.0) * 1000) and not sock.recv(1 << 16):
                        return
                    continue
                # (a backlog, or a stream still to be bound: come back to post it soon; else
                # wake now and then to see whether this side closed)
                pending = bool(self._early) or self._has_backlog()
                chunk = None
                if poller.poll(2 if pending else 1000):
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        self._post_backlogs()
                        return
                    buf += chunk
                    pos = self._frames(buf)
                    if pos:
                        del buf[:pos]
                    self._send_acks()
                if pending or chunk is None:
                    self._retry_backlogs()
        except (OSError, ValueError, struct.error):   # gone, or a malformed frame: it ends here
            pass
        finally:
            self.close()
            self._threads[1].join()   # the writer leaves once closed; then the descriptor goes
            sock.close()

    def _frames(self, buf):
        """Handle the whole frames at the start of buf; how many bytes they took."""
        pos, n_buf = 0, len(buf)
        hsize = _HEADER.size
        mv = memoryview(buf)
        try:
            while n_buf - pos >= hsize:
                n, sid, kind = _HEADER.unpack_from(buf, pos)
                if n > _MAX_FRAME:
                    raise OSError("a frame of the link is too large")
                end = pos + hsize + n
                if end > n_buf:
                    break
                data = mv[pos + hsize:end]
                pos = end
                if kind == 77:        # M
                    self._incoming(sid, data, len(data))
                elif kind == 74:      # J
                    blob = self.blobs.fetch(_U64.unpack(data)[0]) if self.blobs else None
                    if blob is not None:
                        self._incoming(sid, blob, len(blob))
                elif kind == 65:      # A
                    self._credit(sid, _U64.unpack(data)[0])
                elif kind == 67:      # C
                    self._peer_closed(sid)
                elif kind == 78:      # N
                    if len(self._bounds) < 4096:
                        self._bounds[sid] = _U64.unpack(data)[0]
                elif sid == 0 and self.on_control is not None:
                    self.on_control(bytes((kind,)), bytes(data))
        finally:
            mv.release()
        return pos

    def _incoming(self, sid, data, size):
        made = self._made = []
        try:
            value = loads(data, allow_pickle=self.allow_pickle, ports=self._port_in)
        except DecodeError:
            for p in made:
                p.close()
            self.dropped += 1
            with self._lock:
                s = self._streams.get(sid)
            if s is not None:
                self._owe(s, size)   # dropped, as a port drops what it cannot decode
            return
        with self._lock:
            s = self._streams.get(sid)
            if s is None and sid in self._early:
                self._early[sid].append((value, made, size))
                return
        if s is None:          # a stream closed here meanwhile: what it carried is dropped
            for p in made:
                p.close()
            return
        with self._posting:
            if s.backlog or not self._post(s, value, made, size):
                s.backlog.append((value, made, size))

    def decode(self, data):
        """(value, ports) of codec bytes from the peer whose ports are new streams (a control
        frame's; call it in on_control, so the streams exist before their first frames)."""
        made = self._made = []
        try:
            return loads(data, allow_pickle=self.allow_pickle, ports=self._port_in), made
        except BaseException:
            for p in made:
                p.close()
            raise

    def _port_in(self, k):
        """loads() met a port the peer sent: a new stream of the peer's parity, bridged to a new
        channel here whose other port goes into the message."""
        if k % 2 != self._peer_parity or k < 2:
            raise DecodeError(f"stream id {k} is not the peer's to name")
        with self._lock:
            if k in self._streams:
                raise DecodeError(f"stream id {k} is already in use")
        bound = self._bounds.pop(k, 0)
        ch = MessageChannel(max_pending_bytes=bound or None, allow_pickle=self.allow_pickle)
        self.bind(k, ch.port2)
        self._made.append(ch.port1)
        return ch.port1

    def _post(self, s, value, ports, size):
        try:
            s.port.post_message(value, ports, 0)
        except Full:
            return False
        except PortClosed:    # nobody reads it any more: the writer tells the peer
            pass
        self._owe(s, size)
        return True

    def _owe(self, s, size):
        if self._closed:   # (nobody acknowledges any more; close's last flush runs in another
            return         # thread than the reader, which alone may touch _owing)
        s.owed += size
        self._owing.add(s)

    def _send_acks(self):
        """Acknowledge what was posted here since the last time, one frame per stream."""
        if not self._owing or self._eof:   # (nobody reads them after the peer's end)
            return
        out = bytearray()
        for s in self._owing:
            if s.owed:
                out += _HEADER.pack(8, s.id, ord("A")) + _U64.pack(s.owed)
                s.owed = 0
        self._owing.clear()
        # the writer sends them: a reader that waited for the socket could deadlock both ends
        # (each writer blocked on a full socket whose reader waits to send)
        with self._acks_lock:
            self._acks += out
        self._ws.signal()

    def _post_backlogs(self):
        """The peer ended: what waits here for room in a bounded port is still posted as its
        reader makes room (the ports close after it), unless this side closes first."""
        self._eof = True
        pause = 0.001
        while not self._closed and self._has_backlog():
            self._retry_backlogs()
            time.sleep(pause)
            pause = min(pause * 2, 0.05)   # (a reader that takes its time costs few wake-ups)

    def _has_backlog(self):
        with self._lock:
            return any(s.backlog for s in self._streams.values())

    def _retry_backlogs(self):
        with self._lock:
            streams = [s for s in self._streams.values() if s.backlog]
        for s in streams:
            self._flush_backlog(s)
        self._send_acks()

    def _flush_backlog(self, s, final=False):
        with self._posting:
            while s.backlog:
                value, ports, size = s.backlog[0]
                if not self._post(s, value, ports, size):
                    if final:      # the link is gone: what could not be posted is lost with it
                        for p in ports:
                            p.close()
                        s.backlog.clear()
                    return
                s.backlog.pop(0)
            if s.closing and not final:
                self._forget(s)

    def _credit(self, sid, n):
        with self._lock:
            s = self._streams.get(sid)
        if s is not None:
            s.acked += n
            if n:
                self._credits += 1
            self._ws.signal()

    def _peer_closed(self, sid):
        with self._lock:
            s = self._streams.get(sid)
        if s is None:
            return
        s.closing = True
        if not s.backlog:
            self._forget(s)
