"""Event loops: what calls the listeners of ports and workers, one at a time.

Each context (the main thread, each worker) has one Loop.  In the main thread's context it runs
on a daemon dispatcher thread named ``ringport-loop`` that sleeps on a C wait set until a watched
port has something; in a worker, the worker's own thread runs it once the target returned,
until no referenced port with listeners (and no referenced child worker) remains.

The Cython core tells the loops which ports to watch through ``_core._loop_hook`` (a Hook):
ports call it when their listeners, started state or ref change.
"""
import collections
import sys
import threading
import time
import weakref

from ringport._core import _loop_state, _new_waitset

__all__ = ["Hook", "Loop"]

# How long the main context's dispatcher thread stays (asleep, costing nothing) once nothing is
# left to watch, before it ends: a program that starts worker after worker then reuses one
# thread rather than starting a new one for each (a thread start is most of a thread worker's).
LINGER_S = 2.0


class Loop:
    """Dispatches the events of the ports watched by one context, one listener at a time.

    Ports are watched through a C wait set: each watched port's incoming queue signals the set
    after every post and on close, and the loop sleeps on it (no polling)."""

    def __init__(self, threaded):
        self.ws = _new_waitset()
        self.threaded = threaded
        self.lock = threading.Lock()           # guards watched and the thread fields
        self.dispatch_lock = threading.Lock()  # one listener at a time, across thread hand-overs
        self.watched = {}
        self.calls = collections.deque()       # call_soon() callbacks
        self.thread = None
        self.stopped = False
        self.idle = _new_waitset()                 # signalled when what the loop watches changes

    def update(self, port):
        state = _loop_state(port)
        with self.lock:
            key = id(port)
            if state:
                if key not in self.watched:
                    self.watched[key] = port
                    self.ws.watch(port, 0)
            elif self.watched.pop(key, None) is not None:
                self.ws.unwatch(port, 0)
            if self.threaded:
                self._ensure_thread()
        self.ws.signal()
        self._changed()

    def _referenced(self):
        return bool(self.calls) or any(_loop_state(p) == 2 for p in self.watched.values())

    def call_soon(self, fn, *args):
        """Run fn(*args) on this loop, between listeners."""
        with self.lock:
            self.calls.append((fn, args))
            if self.threaded:
                self._ensure_thread()
        self.ws.signal()
        self._changed()

    def _ensure_thread(self):
        # with self.lock held.  The dispatcher is a daemon thread: what keeps the program alive
        # is ringport._exit.on_threading_shutdown, in the main thread, where Ctrl-C still gets
        # through (threading's own join of non-daemon threads cannot be interrupted on 3.13).
        if self.stopped or self.thread is not None or not (self.watched or self.calls):
            return
        t = threading.Thread(target=self._run_thread, name="ringport-loop", daemon=True)
        self.thread = t
        t.start()

    def _changed(self):
        self.idle.signal()  # whoever waits for the loop to go idle re-checks

    def _dispatch_all(self, ports, report):
        """One round over the ports; True if anything was delivered.  report: what to do with an
        exception a listener raised (None: let it propagate)."""
        busy = False
        with self.dispatch_lock:
            while self.calls:
                try:
                    fn, args = self.calls.popleft()
                except IndexError:
                    break
                busy = True
                try:
                    fn(*args)
                except Exception as exc:
                    if report is None:
                        raise
                    report(exc)
            for port in ports:
                try:
                    if port._dispatch(64):
                        busy = True
                except Exception as exc:
                    if report is None:
                        raise
                    report(exc)
                    busy = True
                if not _loop_state(port):
                    with self.lock:
                        if self.watched.pop(id(port), None) is not None:
                            self.ws.unwatch(port, 0)
                            busy = True
        return busy

    def _run_thread(self):
        me = threading.current_thread()
        idle_since = None
        while True:
            seen = self.ws.seq()
            with self.lock:
                if self.thread is not me or self.stopped:
                    return
                if not (self.watched or self.calls):
                    now = time.monotonic()
                    if idle_since is None:
                        idle_since = now
                    elif now - idle_since >= LINGER_S:
                        self.thread = None  # update() starts a new one when needed
                        self._changed()
                        return
                    ports = None
                else:
                    idle_since = None
                    ports = list(self.watched.values())
            if ports is None:
                self._changed()
                self.ws.wait(seen, LINGER_S - (now - idle_since), False)
                continue
            busy = self._dispatch_all(ports, report_listener_error)
            self._changed()
            if not busy:
                self.ws.wait(seen, None, False)

    def wait_idle(self):
        """In the main thread at exit: wait until nothing referenced is watched (Node's "the
        event loop is empty"), interruptibly."""
        while True:
            seen = self.idle.seq()
            with self.lock:
                if self.stopped or not self._referenced():
                    return
            # sliced: PyErr_CheckSignals() runs every 50 ms, so Ctrl-C gets through here even
            # where a threading.Event wait would not see it (interpreter shutdown, 3.11-3.14)
            self.idle.wait(seen, None, True)

    def run_inline(self):
        """A worker's loop, in the worker's own thread: until nothing referenced is watched."""
        while True:
            seen = self.ws.seq()
            with self.lock:
                if not self._referenced():
                    return
                ports = list(self.watched.values())
            if self._dispatch_all(ports, None):
                continue
            self.ws.wait(seen, None, False)

    def stop(self):
        with self.lock:
            self.stopped = True
        self.ws.signal()
        self._changed()

    def close(self):
        """The worker that owns this loop ended: stop it and close every port it watched (their
        peers see 'close'), and drop the references so the ports, their listeners and this loop
        can be freed."""
        with self.lock:
            self.stopped = True
            ports = list(self.watched.values())
            self.watched.clear()
            self.calls.clear()
        for port in ports:
            self.ws.unwatch(port, 0)
            port.close()
        self.ws.signal()
        self._changed()


def report_listener_error(exc):
    """A main-thread listener raised: print it, as an uncaught exception in a thread is."""
    import traceback
    print("Exception in a ringport listener:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


class Hook:
    """Set as ringport._core._loop_hook: ports tell it when their listeners or ref change, and
    it hands each port to the loop of the context that first watched it.  current_loop() gives
    the loop of the calling context."""

    def __init__(self, current_loop):
        self.current_loop = current_loop
        self.owners = weakref.WeakKeyDictionary()  # port -> the loop that watches it
        self.lock = threading.Lock()

    def update(self, port):
        with self.lock:
            loop = self.owners.get(port)
        if loop is None:
            if not _loop_state(port):
                return
            loop = self.current_loop()
            with self.lock:
                loop = self.owners.setdefault(port, loop)
        loop.update(port)
