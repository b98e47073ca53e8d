"""Shared fixtures: every worker a test starts is joined with a timeout (a failure cannot hang
CI), and a per-test watchdog dumps every thread's stack and exits if a test hangs anyway."""
import faulthandler
import os
import sys

import pytest

import ringport

TEST_TIMEOUT = float(os.environ.get("RINGPORT_TEST_TIMEOUT", "120"))
JOIN_TIMEOUT = 20.0


def pytest_addoption(parser, pluginmanager):
    # pyproject's timeout_func_only belongs to pytest-timeout; without that plugin, declare the
    # option so filterwarnings=error does not turn "unknown option" into a failure.  The
    # watchdog below is the timeout then.
    if not pluginmanager.hasplugin("timeout"):
        parser.addini("timeout_func_only", "pytest-timeout's option (plugin not installed)",
                      type="bool", default=False)


@pytest.fixture(autouse=True)
def _watchdog():
    faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


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


def pytest_collection_modifyitems(config, items):
    # As pyproject's marker says: stress runs are deselected unless asked for with -m.
    if config.getoption("markexpr"):
        return
    skip = pytest.mark.skip(reason="stress run: select with -m stress")
    for item in items:
        if "stress" in item.keywords:
            item.add_marker(skip)
