import faulthandler
import linecache
import os
import sys
import sysconfig
import threading
import time

import pytest

import ringport

SRC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(ringport.__file__)))
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
HAS_SUBINTERPRETERS = sys.version_info >= (3, 13)

# A hung test dumps every thread's stack and ends the run instead of hanging CI forever.
WATCHDOG_S = float(os.environ.get("RINGPORT_TEST_WATCHDOG", "300"))


@pytest.fixture(autouse=True)
def _watchdog():
    # sys.__stderr__: pytest's --capture=sys (used by .ci/run under sanitizers) leaves
    # sys.stderr without a file descriptor
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


class ReThread(threading.Thread):
    """A thread whose exception is re-raised in join(); join() insists on a timeout."""

    def __init__(self, target, *args, **kwargs):
        super().__init__(daemon=True)
        self._fn, self._args, self._kwargs = target, args, kwargs
        self.exc = None
        self.result = None

    def run(self):
        try:
            self.result = self._fn(*self._args, **self._kwargs)
        except BaseException as e:  # re-raised in join
            self.exc = e

    def join(self, timeout=60):
        super().join(timeout)
        if self.is_alive():
            raise TimeoutError(f"thread {self.name} did not finish within {timeout} s")
        if self.exc is not None:
            raise self.exc
        return self.result


@pytest.fixture
def rethread():
    started = []

    def start(target, *args, **kwargs):
        t = ReThread(target, *args, **kwargs)
        t.start()
        started.append(t)
        return t

    yield start
    for t in started:
        t.join(60)


def start_threads(fn, n, *args):
    """n ReThreads running fn(i, barrier, *args), started together on a barrier."""
    barrier = threading.Barrier(n)
    ts = [ReThread(fn, i, barrier, *args) for i in range(n)]
    for t in ts:
        t.start()
    return ts


def wait_until(predicate, timeout=10.0, what=None):
    """Wait until predicate() is true; fail the test if it is not within timeout seconds.

    The one helper for a test that waits on a condition it cannot be signalled about (a waiter
    count, a listener having run): polls, backing off from 0.1 ms to 10 ms, against a deadline
    on the monotonic clock."""
    end = time.monotonic() + timeout
    pause = 0.0001
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what or 'condition'} not reached within {timeout} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.01)


def inside_call(thread, name):
    """True while thread is inside a call of name (e.g. "receive"): its innermost Python frame
    is on a line that calls .name(.  ringport's blocking methods are Cython and make no frame
    of their own, so the caller's frame stays on that line for as long as the call lasts; on a
    GIL build a thread seen there from another thread has released the GIL, i.e. it is waiting
    inside the call.  Use with wait_until, instead of sleeping and hoping it got there.

    A free-threaded build cannot read another running thread's frame safely (ThreadSanitizer
    reports CPython's frame_getlineno racing the frame's owner): there it only waits for the
    thread to have started, and tests using it must pass whichever comes first."""
    if FREE_THREADED:
        return thread.ident is not None
    frame = sys._current_frames().get(thread.ident)
    if frame is None:
        return False
    return f".{name}(" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)


def wait_inside_call(thread, name, timeout=10.0):
    wait_until(lambda: inside_call(thread, name), timeout,
               f"thread {thread.name} blocked in {name}()")


def _interpreters():
    try:
        import _interpreters
    except ImportError:
        return None
    return _interpreters


needs_subinterpreters = pytest.mark.skipif(
    _interpreters() is None, reason="needs the _interpreters module (CPython 3.13+)")


def run_in_subinterpreter(code):
    """Run code in a new interpreter (in a thread); return a ReThread to join."""
    I = _interpreters()
    prelude = f"import sys\nsys.path.insert(0, {SRC_DIR!r})\n"

    def run():
        iid = I.create()
        try:
            err = I.run_string(iid, prelude + code)
            if err is not None:
                raise RuntimeError(f"subinterpreter failed: {err}")
        finally:
            I.destroy(iid)

    t = ReThread(run)
    t.start()
    return t


JOIN_TIMEOUT = 20.0


@pytest.fixture(params=ringport.available_backends())
def backend(request):
    """Each backend that works on this interpreter."""
    return request.param


@pytest.fixture
def start_worker(backend):
    """start_worker(target, **kw): a Worker on the test's backend, terminated and joined (with a
    timeout) at teardown; a worker that does not end fails the test."""
    started = []

    def start(target, **kw):
        kw.setdefault("backend", backend)
        w = ringport.Worker(target, **kw)
        started.append(w)
        return w

    yield start
    stuck = []
    for w in started:
        if w.join(JOIN_TIMEOUT) is None:
            w.terminate(JOIN_TIMEOUT)
            if w.is_alive():
                stuck.append(w)
    assert not stuck, f"workers did not end: {stuck}"


@pytest.fixture
def channel():
    ch = ringport.MessageChannel()
    yield ch
    ch.port1.close()
