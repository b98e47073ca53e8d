"""Relays: a port of a channel in this process's memory, moved to another process.

Such a channel's rings are private to this process, so the other process gets a new channel
shared with it instead, and a relay thread here pumps messages both ways between the port that
stays behind (``local``, the moved port's side) and this process's end of the new channel
(``near``).  Messages are decoded and posted again, so ports and shared buffers inside them move
on as in any post.  When one side closes (after what it sent was pumped), the relay closes the
other, so the peers see 'close' as they would had the port itself moved.
"""
import threading

from ringport._core import (DataCloneError, DecodeError, MessagePort, PortClosed, _new_waitset,
                            _try_receive)

__all__ = ["flush", "start"]

_relays = set()
_lock = threading.Lock()


class _Relay:
    def __init__(self, local, near):
        self.local = local
        self.near = near
        self.ws = _new_waitset()
        self.passes = 0
        self.cond = threading.Condition()

    def run(self):
        ws = self.ws
        ws.watch(self.local, 0)
        ws.watch(self.near, 0)
        try:
            while True:
                seen = ws.seq()
                if not (_move(self.local, self.near) and _move(self.near, self.local)):
                    break
                with self.cond:
                    self.passes += 1
                    self.cond.notify_all()
                ws.wait(seen, None)
        finally:
            for p in (self.local, self.near):
                try:
                    ws.unwatch(p, 0)
                except Exception:   # noqa: BLE001 - closed meanwhile
                    pass
                p.close()
            with self.cond:
                self.passes = -1
                self.cond.notify_all()
            with _lock:
                _relays.discard(self)

    def flush(self, timeout):
        """Wait until a whole pass ran after this call (what was queued then is pumped)."""
        with self.cond:
            start = self.passes
            if start < 0:
                return
            self.ws.signal()
            self.cond.wait_for(lambda: self.passes < 0 or self.passes >= start + 2, timeout)


def start(local, near):
    r = _Relay(local, near)
    with _lock:
        _relays.add(r)
    from ringport._context import in_subinterpreter_worker
    # (isolated subinterpreters refuse daemon threads)
    threading.Thread(target=r.run, name="ringport-relay",
                     daemon=not in_subinterpreter_worker()).start()


def flush(timeout=2.0):
    """Pump what the relays of this process hold now (a process worker, before it exits)."""
    with _lock:
        relays = list(_relays)
    for r in relays:
        r.flush(timeout)


def _ports_in(value):
    """The MessagePorts inside a decoded value (listed in transfer, they move on)."""
    out, seen, stack = [], set(), [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is MessagePort:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        elif t in (list, tuple, set, frozenset, dict):
            if id(v) not in seen:
                seen.add(id(v))
                stack.extend(v.items() if t is dict else v)
    return out


def _move(src, dst):
    """Pump what src holds now into dst; False once either is closed (src drained first)."""
    while True:
        try:
            got, value = _try_receive(src)
        except PortClosed:
            return False
        except DecodeError:   # dropped, as a port without 'messageerror' listeners would
            continue
        if not got:
            return True
        try:
            dst.post_message(value, _ports_in(value))
        except PortClosed:
            return False
        except DataCloneError:   # cannot go on (e.g. pickle off): dropped
            pass
