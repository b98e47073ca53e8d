"""Workers started ahead of demand: ``ringport.prestart(n, backend=...)``.

A subinterpreter worker spends most of its start-up before it runs any of the user's code:
creating the interpreter (its builtins, sys, site) and importing ringport into it.  prestart
keeps ``n`` such interpreters ready, made by one background thread; a subinterpreter ``Worker``
(and so a ``WorkerPool`` on that backend) takes one when there is one, and the thread makes the
next.  Each spare serves one worker and is destroyed with it, as a fresh one would be: nothing
of one worker is ever seen by the next.

Off unless asked (each spare holds an interpreter's memory).  ``prestart(0)`` destroys the
spares; so does the interpreter's exit, before its finalization.
"""
import sys
import threading

from ringport import _context
from ringport._backends import _interpreters, resolve_backend

__all__ = ["prestart", "take_interpreter"]

# what a spare runs ahead of its worker (the worker's own sys.path is set again when it starts)
_BOOT = "import sys\nsys.path[:] = {!r}\nimport ringport._bootstrap\n"
MAX_SPARES = 64


class _Spares:
    def __init__(self):
        self.lock = threading.Lock()
        self.ready = []       # ids of interpreters with ringport._bootstrap imported
        self.want = 0
        self.filler = None    # the thread making spares, while it has some to make
        self.closed = False

    def set(self, n):
        with self.lock:
            if self.closed:
                raise RuntimeError("prestart() at interpreter shutdown")
            self.want = n
            extra, self.ready = self.ready[n:], self.ready[:n]
            self._fill()
        for iid in extra:
            _interpreters.destroy(iid)

    def count(self):
        with self.lock:
            return len(self.ready)

    def _fill(self):
        # with self.lock held
        if self.filler is not None or self.closed or len(self.ready) >= self.want:
            return
        t = threading.Thread(target=self._run, name="ringport-prestart",
                             daemon=not _context.in_subinterpreter_worker())
        t.start()
        self.filler = t

    def _run(self):
        while True:
            with self.lock:
                if self.closed or len(self.ready) >= self.want:
                    self.filler = None
                    return
                path = list(sys.path)
            iid = None
            try:
                iid = _interpreters.create()
                failed = _interpreters.exec(iid, _BOOT.format(path)) is not None
            except Exception:   # no interpreter to be had: workers make their own, and fail
                failed = True   # there with the reason
            with self.lock:
                keep = not failed and not self.closed and len(self.ready) < self.want
                if keep:
                    self.ready.append(iid)
                if failed:
                    self.want = 0
                    self.filler = None
            if not keep and iid is not None:
                _interpreters.destroy(iid)
            if failed:
                return

    def take(self):
        with self.lock:
            if not self.ready:
                return None
            iid = self.ready.pop(0)
            self._fill()
            return iid

    def close(self):
        """At exit, before finalization: no interpreter may outlive ours."""
        with self.lock:
            self.closed = True
            ready, self.ready = self.ready, []
            filler = self.filler
        if filler is not None and filler is not threading.current_thread():
            filler.join()   # it ends after the one interpreter it is making
        for iid in ready:
            try:
                _interpreters.destroy(iid)
            except Exception:
                pass


_spares = _Spares()


def take_interpreter():
    """A ready interpreter's id for a subinterpreter worker, or None (make a fresh one)."""
    return _spares.take()


def prestart(n=1, *, backend="auto"):
    """Keep ``n`` workers of ``backend`` ready ahead of demand, so that the next ``Worker`` (or
    ``WorkerPool`` worker) starts warm; returns at once (they are made in the background).
    ``prestart(0)`` drops the spares.  Only the subinterpreter backend has a start-up worth
    hiding this way; for "thread" and "process" (which forks from a zygote that already has
    ringport imported) it does nothing.  ``backend="auto"`` means the backend a ``Worker``
    with ``backend="auto"`` would get."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if not 0 <= n <= MAX_SPARES:
        raise ValueError(f"n must be between 0 and {MAX_SPARES}")
    if resolve_backend(backend) != "subinterpreter":
        return
    _spares.set(n)


def spare_count():
    """How many interpreters are ready now (for tests and statistics)."""
    return _spares.count()


def at_exit():
    _spares.close()


threading._register_atexit(at_exit)
