import os
import sys
import threading

import pytest

import ringport

SRC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(ringport.__file__)))


class ReThread(threading.Thread):
    """A thread whose exception is re-raised by join()."""

    def __init__(self, target, *args):
        super().__init__(target=self._run, daemon=True)
        self._rt_fn, self._rt_args, self.exc, self.result = target, args, None, None

    def _run(self):
        try:
            self.result = self._rt_fn(*self._rt_args)
        except BaseException as e:  # re-raised in join
            self.exc = e

    def join(self, timeout=10.0):
        super().join(timeout)
        if self.is_alive():
            raise TimeoutError("thread did not finish in time")
        if self.exc is not None:
            raise self.exc
        return self.result


def start_threads(fn, n, *args):
    """n ReThreads running fn(i, barrier, *args), started together on a barrier."""
    barrier = threading.Barrier(n)
    ts = [ReThread(fn, i, barrier, *args) for i in range(n)]
    for t in ts:
        t.start()
    return ts


def wait_until(cond, timeout=5.0):
    import time

    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.001)


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


@pytest.fixture
def channel():
    ch = ringport.MessageChannel()
    yield ch
    ch.port1.close()


def pytest_collection_modifyitems(config, items):
    """Stress tests run only when asked for (-m stress)."""
    if "stress" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="stress test: run with -m stress")
    for item in items:
        if "stress" in item.keywords:
            item.add_marker(skip)
