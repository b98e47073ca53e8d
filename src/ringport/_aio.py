"""asyncio support: await ports without blocking the event loop and without a thread per port.

One hub per event loop owns a C wait set with an eventfd (a pipe where there is none) that the
loop watches with add_reader.  A port being awaited has its incoming queue watch that set; the C
layer writes the fd only when the hub armed it (once per batch, and only while a coroutine
waits), and the hub then hands queued messages to the waiting futures in order.
"""
import asyncio
import collections
import weakref

from ringport._core import _new_waitset, receive_message_on_port
from ringport._errors import Empty, PortClosed

__all__ = ["anext_port", "receive_async"]

_hubs = weakref.WeakKeyDictionary()


def _try_receive(port):
    """(True, message) or (False, None) without blocking; raises PortClosed once it ended."""
    m = receive_message_on_port(port)
    if m is not None:
        return True, m.message
    if port.closed:
        return True, port.receive(0)  # drained: PortClosed; else the message that raced in
    return False, None


class _Hub:
    def __init__(self, loop):
        self.loop = loop
        self.ws = _new_waitset(True)
        self.waiters = {}  # port -> deque of futures, oldest first
        self.ws.arm()
        loop.add_reader(self.ws.fd, self._ready)

    def wait(self, port):
        fut = self.loop.create_future()
        q = self.waiters.get(port)
        if q is None:
            q = self.waiters[port] = collections.deque()
            self.ws.watch(port, 1)  # signals the set once: _ready re-checks the port
        q.append(fut)
        return fut

    def discard(self, port, fut):
        q = self.waiters.get(port)
        if q is None:
            return
        try:
            q.remove(fut)
        except ValueError:
            pass
        if not q:
            del self.waiters[port]
            self.ws.unwatch(port, 1)

    def _ready(self):
        self.ws.drain()
        self.ws.arm()  # before looking: a post after this point writes the fd again
        for port, q in list(self.waiters.items()):
            while q:
                fut = q[0]
                if fut.done():
                    q.popleft()
                    continue
                try:
                    got, msg = _try_receive(port)
                except BaseException as exc:
                    q.popleft()
                    fut.set_exception(exc)
                    continue
                if not got:
                    break
                q.popleft()
                fut.set_result(msg)
            if not q:
                del self.waiters[port]
                self.ws.unwatch(port, 1)


def _hub():
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = _Hub(loop)
    return hub


async def receive_async(port, timeout=None):
    """The next message of port, awaited.  ringport.Empty on timeout (seconds), PortClosed
    once the port is closed and drained."""
    got, msg = _try_receive(port)
    if got:
        return msg
    hub = _hub()
    fut = hub.wait(port)
    try:
        if timeout is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Empty("receive_async: no message arrived in time") from None
    finally:
        if not fut.done():
            fut.cancel()
        hub.discard(port, fut)


async def anext_port(port):
    try:
        return await receive_async(port)
    except PortClosed:
        raise StopAsyncIteration from None
