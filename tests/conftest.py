import faulthandler
import os
import sys
import threading

import pytest

# A hung test dumps every thread's stack and ends the run instead of hanging CI forever.
WATCHDOG_S = float(os.environ.get("RINGPORT_TEST_WATCHDOG", "300"))


@pytest.fixture(autouse=True)
def _watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
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


@pytest.fixture
def channel():
    import ringport

    ch = ringport.MessageChannel()
    yield ch
    ch.port1.close()


FREE_THREADED = bool(__import__("sysconfig").get_config_var("Py_GIL_DISABLED"))
HAS_SUBINTERPRETERS = sys.version_info >= (3, 13)
