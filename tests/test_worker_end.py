"""How workers end: terminate() that cannot be swallowed, a bounded exit with workers stuck in
calls nothing interrupts, boot failures that always surface, and the ports of a worker that
ended closing."""
import gc
import os
import subprocess
import sys
import textwrap
import time

import pytest

import ringport
import workerfuncs
from conftest import wait_until


def run_script(code, *args, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(ringport.__file__)), os.path.dirname(__file__)])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


# ---------------------------------------------------------------------------- terminate


def test_terminate_is_not_swallowed_by_finalizers(start_worker, capfd):
    """WorkerTerminated raised inside __del__ is only reported as unraisable: terminate() must
    deliver it again until the worker ends."""
    for _ in range(3):
        w = start_worker(workerfuncs.finalizers_forever)
        assert w.receive(timeout=20) == "ready"
        t = time.monotonic()
        assert w.terminate(10) == 1
        assert time.monotonic() - t < 5
    assert "WorkerTerminated" not in capfd.readouterr().err   # no "Exception ignored" noise


def test_terminate_delivered_again_after_a_bare_except(start_worker):
    w = start_worker(workerfuncs.swallow_terminate_once)
    assert w.receive(timeout=20) == "ready"
    assert w.terminate(10) == 1
    assert w.receive(timeout=5) == "swallowed"


def test_terminate_without_waiting_still_ends_the_worker(start_worker):
    w = start_worker(workerfuncs.finalizers_forever)
    assert w.receive(timeout=20) == "ready"
    assert w.terminate(0) is None or w.exit_code == 1
    assert w.join(10) == 1     # nobody waits in terminate(): it is delivered again anyway


# ---------------------------------------------------------------------------- interpreter exit


@pytest.mark.parametrize("kind", ["thread", "subinterpreter"])
def test_exit_waits_for_stuck_workers_together(kind):
    if kind not in ringport.available_backends():
        pytest.skip(f"no {kind} backend on this interpreter")
    # select() with no fds: a blocking C call that neither terminate() nor its redelivery
    # interrupts (no signal reaches a worker thread)
    r = run_script("""
        import sys, time, ringport, ringport._exit
        ringport._exit.EXIT_GRACE_S = 3.0
        for i in range(3):
            w = ringport.Worker("import ringport, select\\n"
                                "ringport.parent_port.post_message('in')\\n"
                                "select.select([], [], [], 100)", eval=True,
                                backend=sys.argv[1])
            assert w.receive(timeout=30) == 'in'
            w.unref()
        print("main done", time.monotonic(), flush=True)
    """, kind)
    end = time.monotonic()
    assert r.stdout.startswith("main done"), r.stderr
    assert r.returncode == 0, r.stderr   # (a redelivery racing finalization used to crash it)
    waited = end - float(r.stdout.split()[2])
    # one after another this took 3 x 3 s; together at most one grace period (+ slack)
    assert waited < 7.5, (waited, r.stderr)


# ---------------------------------------------------------------------------- boot failures


def one_error_then_exit_1(w):
    """w fails: exactly one 'error', then 'exit' with code 1; returns the error."""
    errors, exits = [], []
    w.on("error", errors.append)
    w.on("exit", exits.append)
    assert w.join(20) == 1
    wait_until(lambda: exits, 10)
    assert exits == [1]
    assert len(errors) == 1
    return errors[0]


def test_boot_failure_is_an_error_and_exit_1(start_worker):
    """worker_data that cannot be rebuilt in the worker fails it before its target runs."""
    w = start_worker(workerfuncs.identity, worker_data=workerfuncs.BadOnArrival())
    error = one_error_then_exit_1(w)
    assert "worker_data refused to arrive" in str(error) + getattr(error, "traceback", "")


def test_boot_failure_without_listener_is_printed(backend):
    r = run_script("""
        import sys, ringport, workerfuncs
        w = ringport.Worker(workerfuncs.identity, worker_data=workerfuncs.BadOnArrival(),
                            backend=sys.argv[1])
        w.on("exit", lambda c: print("exit", c, flush=True))
    """, backend)
    assert r.stdout == "exit 1\n", r.stderr
    assert "worker_data refused to arrive" in r.stderr


class _ImportFailsFirst:
    """_interpreters, with a failing import in front of the code a new interpreter runs."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def exec(self, iid, code, *args, **kwargs):
        return self.real.exec(iid, "import ringport_no_such_module\n" + code, *args, **kwargs)


def _failing_ctl(ctl_id):
    raise RuntimeError("injected: the control block could not be attached")


def test_worker_that_fails_before_its_bootstrap_is_an_error(backend, monkeypatch):
    """Failures before the bootstrap took the token: the subinterpreter cannot import what it
    needs, or the thread worker fails to attach its control block.  'error' + exit code 1,
    and the token is freed once (no double free)."""
    import ringport._bootstrap
    import ringport._worker
    if backend == "subinterpreter":
        monkeypatch.setattr(ringport._worker, "_interpreters",
                            _ImportFailsFirst(ringport._worker._interpreters))
        expect = "ringport_no_such_module"
    elif backend == "process":   # the new process dies before ringport's bootstrap runs
        import ringport._process
        monkeypatch.setenv("RINGPORT_PROCESS_START", "spawn")   # the zygote runs no command
        real = ringport._process._child_command
        monkeypatch.setattr(ringport._process, "_child_command",
                            lambda: real()[:-1] + ["import ringport_no_such_module"])
        expect = "exited with status 1"
    else:
        monkeypatch.setattr(ringport._bootstrap, "_worker_ctl", _failing_ctl)
        expect = "control block could not be attached"
    ch = ringport.MessageChannel()
    w = ringport.Worker(workerfuncs.identity, backend=backend, worker_data=ch.port2,
                        transfer=[ch.port2])
    assert expect in str(one_error_then_exit_1(w))
    with pytest.raises(ringport.PortClosed):   # the port in the dropped token was released
        ch.port1.receive(timeout=10)


# ---------------------------------------------------------------------------- ports of a worker


def _start_listener(start_worker, target):
    ch = ringport.MessageChannel()
    w = start_worker(target, worker_data=ch.port2, transfer=[ch.port2])
    assert w.receive(timeout=20) == "listening"
    return w, ch.port1


def _assert_left_nothing_behind(backend):
    if backend != "thread":
        return   # the worker's whole interpreter is gone
    refs = list(workerfuncs.LEFT_BEHIND)
    workerfuncs.LEFT_BEHIND.clear()
    gc.collect()
    assert [r() for r in refs] == [None, None]   # its port and its loop were freed


def test_terminated_worker_closes_the_ports_it_listened_on(start_worker, backend):
    w, port = _start_listener(start_worker, workerfuncs.listen_on_transferred_port)
    assert w.terminate(20) == 1
    with pytest.raises(ringport.PortClosed):
        port.receive(timeout=10)
    _assert_left_nothing_behind(backend)


def test_worker_whose_listener_raised_closes_its_ports(start_worker, backend):
    w, port = _start_listener(start_worker, workerfuncs.listen_and_raise)
    errors = []
    w.on("error", errors.append)
    port.post_message("k")
    assert w.join(20) == 1
    with pytest.raises(ringport.PortClosed):
        port.receive(timeout=10)
    wait_until(lambda: errors, 10)
    assert [type(e) for e in errors] == [KeyError]
    errors.clear()
    _assert_left_nothing_behind(backend)


@pytest.mark.parametrize("target", ["hold_port_and_block", "raise_value_error_holding_port"])
def test_ports_a_worker_held_close_when_it_ends(start_worker, target):
    """Not listened on, only referenced from the worker's frames: they close too (also when
    the worker's exception, which keeps its frames, lives on in the parent)."""
    if target == "hold_port_and_block":
        w, port = _start_listener(start_worker, workerfuncs.hold_port_and_block)
        assert w.terminate(20) == 1
    else:
        ch = ringport.MessageChannel()
        errors = []
        w = start_worker(workerfuncs.raise_value_error_holding_port, worker_data=ch.port2,
                         transfer=[ch.port2])
        w.on("error", errors.append)
        port = ch.port1
        assert w.join(20) == 1
    with pytest.raises(ringport.PortClosed):
        port.receive(timeout=10)
