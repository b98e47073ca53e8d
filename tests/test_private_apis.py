"""The private and fragile APIs ringport relies on (docs/architecture.md, "Private and fragile
APIs") are still there on every supported interpreter: if one goes, this fails loudly instead
of a feature going quietly."""
import sys
import sysconfig
import threading

import pytest

import ringport
import ringport._exit


def test_threading_register_atexit():
    """Without it the program would no longer stay alive for its workers (what it does is
    test_worker.py::test_program_waits_for_referenced_worker_and_not_for_unreferenced)."""
    assert callable(threading._register_atexit)
    assert callable(ringport._exit.on_threading_shutdown)


@pytest.mark.skipif(sys.version_info < (3, 13) or sysconfig.get_config_var("Py_GIL_DISABLED"),
                    reason="subinterpreters with their own GIL need a GIL build of 3.13+")
def test_subinterpreter_backend_present():
    import _interpreters
    for name in ("create", "exec", "destroy"):
        assert callable(getattr(_interpreters, name)), name
    assert ringport.available_backends()[0] == "subinterpreter"


def test_hooks_for_swallowed_termination():
    assert callable(sys.unraisablehook) and callable(sys.__unraisablehook__)
    assert sys._getframe(0).f_code is test_hooks_for_swallowed_termination.__code__
    assert callable(sys.settrace) and callable(sys.gettrace)


def test_private_signal_module():
    import _signal
    assert callable(_signal.signal) and _signal.SIGINT


@pytest.mark.skipif(not sysconfig.get_config_var("Py_GIL_DISABLED"),
                    reason="only a free-threaded build reports its GIL")
def test_free_threaded_build_reports_its_gil():
    assert callable(sys._is_gil_enabled)


def test_shared_memory_handoff_present():
    """The process backend passes SharedArrayBuffers to other processes with these (what they
    do is tests/test_shm_xproc.py)."""
    from ringport._core import _sab_export_fd, _sab_import_fd, _sab_layout
    assert callable(_sab_export_fd) and callable(_sab_import_fd) and callable(_sab_layout)
