"""ringport.prestart(): subinterpreters made ahead of demand, each serving one worker."""
import os
import subprocess
import sys
import time

import pytest

import ringport
from ringport import _prestart

from conftest import SRC_DIR

SUB = "subinterpreter" in ringport.available_backends()
needs_sub = pytest.mark.skipif(not SUB, reason="no subinterpreter backend on this interpreter")

# each worker says whether it saw a global left by an earlier worker, then leaves one
PROBE = """
import builtins, ringport
seen = getattr(builtins, "_ringport_probe", None)
builtins._ringport_probe = ringport.worker_data
ringport.parent_port.post_message((seen, ringport.worker_data))
"""


def _wait_spares(n, timeout=60):
    deadline = time.monotonic() + timeout
    while _prestart.spare_count() != n:
        assert time.monotonic() < deadline, f"{_prestart.spare_count()} spares, not {n}"
        time.sleep(0.01)


@pytest.fixture
def spares():
    yield
    ringport.prestart(0)
    assert _prestart.spare_count() == 0


@needs_sub
def test_workers_take_spares_and_the_spares_are_made_again(spares):
    ringport.prestart(2, backend="subinterpreter")
    _wait_spares(2)
    for i in range(4):
        w = ringport.Worker(PROBE, eval=True, backend="subinterpreter", worker_data=i)
        # every worker gets an interpreter of its own: nothing left by the one before
        assert w.receive(60) == (None, i)
        assert w.join(60) == 0
    _wait_spares(2)   # refilled in the background


@needs_sub
def test_a_spare_worker_has_its_own_sys_path_and_env(spares, tmp_path):
    ringport.prestart(1, backend="subinterpreter")
    _wait_spares(1)
    (tmp_path / "rp_prestart_mod.py").write_text("VALUE = 42\n")
    sys.path.insert(0, str(tmp_path))
    try:
        w = ringport.Worker("import ringport, rp_prestart_mod\n"
                            "ringport.parent_port.post_message("
                            "(rp_prestart_mod.VALUE, ringport.env['RP_PRESTART']))",
                            eval=True, backend="subinterpreter", env={"RP_PRESTART": "yes"})
        assert w.receive(60) == (42, "yes")
        assert w.join(60) == 0
    finally:
        sys.path.remove(str(tmp_path))


@needs_sub
def test_prestart_zero_destroys_the_spares(spares):
    ringport.prestart(3, backend="subinterpreter")
    _wait_spares(3)
    ringport.prestart(1, backend="subinterpreter")
    assert _prestart.spare_count() == 1
    ringport.prestart(0)
    assert _prestart.spare_count() == 0
    w = ringport.Worker(PROBE, eval=True, backend="subinterpreter", worker_data="cold")
    assert w.receive(60) == (None, "cold")
    assert w.join(60) == 0


@needs_sub
def test_spares_are_destroyed_at_exit():
    # a program that exits with spares ready (and one being made) ends cleanly: no "remaining
    # subinterpreters" warning, no crash at finalization
    code = ("import ringport, time\nringport.prestart(2, backend='subinterpreter')\ntime.sleep(0.05)\n"
            "w = ringport.Worker('import ringport; ringport.parent_port.post_message(1)', "
            "eval=True, backend='subinterpreter')\nassert w.receive(60) == 1\n")
    for _ in range(2):
        out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                             text=True, timeout=120,
                             env=dict(os.environ, PYTHONPATH=SRC_DIR))
        assert out.returncode == 0, out.stderr
        assert out.stderr == ""


def test_prestart_bad_arguments():
    for bad in (-1, _prestart.MAX_SPARES + 1):
        with pytest.raises(ValueError):
            ringport.prestart(bad)
    for bad in (1.5, "2", True, None):
        with pytest.raises(TypeError):
            ringport.prestart(bad)
    with pytest.raises(ValueError):
        ringport.prestart(1, backend="nonsense")


def test_prestart_is_a_no_op_for_thread_and_process_backends():
    for b in ringport.available_backends():
        if b != "subinterpreter":
            ringport.prestart(2, backend=b)
    assert _prestart.spare_count() == 0
