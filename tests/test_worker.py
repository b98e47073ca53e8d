"""Workers on every available backend: identity, errors and exit codes, terminate, transfer,
environment data, late listeners, nesting."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import ringport
import workerfuncs
from conftest import wait_until


def test_main_thread_identity():
    assert ringport.parent_port is None
    assert ringport.is_main_thread is True
    assert ringport.thread_id == 0
    assert ringport.worker_data is None
    assert ringport.argv is sys.argv
    assert ringport.env is os.environ
    assert set(ringport.available_backends()) <= {"thread", "subinterpreter", "process"}
    assert "thread" in ringport.available_backends()
    with pytest.raises(AttributeError):
        ringport.no_such_attribute  # noqa: B018


def test_identity_in_worker(start_worker):
    ringport.set_environment_data("k", {"cloned": [1, 2]})
    try:
        w = start_worker(workerfuncs.identity, worker_data={"a": [1, (2, 3)]}, argv=["x", 5],
                         env={"RINGPORT_TEST_X": "42"})
    finally:
        ringport.set_environment_data("k", None)
    got = w.receive(timeout=20)
    assert w.join(20) == 0
    assert got["has_parent_port"] is True
    assert got["is_main_thread"] is False
    assert got["thread_id"] == w.thread_id > 0
    assert got["worker_data"] == {"a": [1, (2, 3)]}
    assert got["argv"][1:] == ["x", "5"]
    assert got["env_x"] == "42"
    assert got["env_data"] == {"cloned": [1, 2]}
    assert ringport.get_environment_data("k") is None


def test_env_defaults_to_a_copy_of_the_parent(start_worker, monkeypatch):
    monkeypatch.setenv("RINGPORT_TEST_X", "from parent")
    w = start_worker(workerfuncs.identity)
    assert w.receive(timeout=20)["env_x"] == "from parent"


def test_several_thread_workers_see_their_own_values():
    ws = [ringport.Worker(workerfuncs.identity, backend="thread", worker_data=i)
          for i in range(6)]
    try:
        got = [w.receive(timeout=20) for w in ws]
    finally:
        codes = [w.join(20) for w in ws]
    assert codes == [0] * 6
    assert [g["worker_data"] for g in got] == list(range(6))
    assert [g["thread_id"] for g in got] == [w.thread_id for w in ws]
    assert len({w.thread_id for w in ws}) == 6


def test_eval_source_and_post_message(start_worker):
    w = start_worker("import ringport\n"
                     "ringport.parent_port.post_message(ringport.parent_port.receive() * 2)",
                     eval=True)
    w.post_message(21)
    assert w.receive(timeout=20) == 42
    assert w.join(20) == 0


def test_script_file_target(start_worker, tmp_path):
    script = tmp_path / "w.py"
    script.write_text("import sys, ringport\n"
                      "ringport.parent_port.post_message((__name__, ringport.argv[1:]))\n")
    w = start_worker(script, argv=["a"])
    assert w.receive(timeout=20) == ("__main__", ["a"])
    assert w.join(20) == 0


def test_bad_targets():
    with pytest.raises(FileNotFoundError):
        ringport.Worker("/no/such/script.py", backend="thread")
    with pytest.raises(TypeError):
        ringport.Worker(42, backend="thread")
    with pytest.raises(ValueError):
        ringport.Worker(workerfuncs.echo, backend="nope")


@pytest.mark.skipif("subinterpreter" not in ringport.available_backends(),
                    reason="no subinterpreter backend on this interpreter")
def test_subinterpreter_function_must_be_importable():
    with pytest.raises(TypeError, match="importable by its module and qualified name"):
        ringport.Worker(lambda: None, backend="subinterpreter")

    def local():
        pass

    with pytest.raises(TypeError, match="importable"):
        ringport.Worker(local, backend="subinterpreter")


def test_error_event_then_exit(start_worker):
    events = []
    done = threading.Event()
    w = start_worker(workerfuncs.raise_value_error)
    w.on("error", lambda e: events.append(("error", e)))
    w.on("exit", lambda c: (events.append(("exit", c)), done.set()))
    assert w.join(20) == 1
    assert done.wait(20)
    assert [k for k, _ in events] == ["error", "exit"]
    err = events[0][1]
    assert type(err) is ValueError
    assert str(err) == "boom from worker"
    assert events[1][1] == 1


def test_error_without_listener_is_printed(start_worker, capfd):
    w = start_worker(workerfuncs.raise_value_error, name="printer")
    assert w.join(20) == 1
    err = capfd.readouterr().err
    assert "Exception in ringport worker" in err
    assert "ValueError: boom from worker" in err
    assert "raise_value_error" in err


def test_error_type_that_cannot_be_rebuilt(start_worker, backend):
    src = textwrap.dedent("""
        class LocalError(Exception):
            pass
        raise LocalError("only here")
    """)
    errors = []
    exited = threading.Event()
    w = start_worker(src, eval=True)
    w.on("error", errors.append)
    w.on("exit", lambda c: exited.set())
    assert w.join(20) == 1
    assert exited.wait(20)
    (err,) = errors
    if backend == "thread":
        assert type(err).__name__ == "LocalError"    # the very object, same interpreter
    else:
        assert isinstance(err, ringport.WorkerError)
        assert err.type_name == "LocalError"
        assert err.message == "only here"
        assert "LocalError" in err.traceback
    assert str(err).endswith("only here")


def test_sys_exit_ends_only_the_worker(start_worker):
    w = start_worker(workerfuncs.exit_3)
    assert w.join(20) == 3
    assert w.exit_code == 3
    w2 = start_worker("import sys; sys.exit()", eval=True)
    assert w2.join(20) == 0


def test_online_and_exit_events_in_order(start_worker):
    events = []
    done = threading.Event()
    w = start_worker("import ringport\nfor i in range(5): ringport.parent_port.post_message(i)",
                     eval=True)
    w.on("online", lambda: events.append("online"))
    w.on("message", events.append)
    w.on("exit", lambda c: (events.append(("exit", c)), done.set()))
    assert done.wait(20)
    assert events == ["online", 0, 1, 2, 3, 4, ("exit", 0)]


def test_online_comes_before_messages_every_time(start_worker):
    """The worker posts as soon as it runs: its 'online' (a control message posted before it
    ran) must still be emitted before its messages, whichever port the event loop looked at
    first.  (It came after them about once in 100 starts of a process worker.)"""
    for _ in range(30):
        events = []
        done = threading.Event()
        w = start_worker("import ringport\nringport.parent_port.post_message(1)", eval=True)
        # (in this order: a listener attached after its event fired gets it replayed, later;
        # 'exit' delivers the messages queued before it to the listeners there are)
        w.on("online", lambda: events.append("online"))
        w.on("message", events.append)
        w.on("exit", lambda c: done.set())
        assert done.wait(20)
        assert events == ["online", 1]


def test_listener_attached_late_gets_every_message(start_worker):
    w = start_worker("import ringport\nfor i in range(100): ringport.parent_port.post_message(i)",
                     eval=True)
    assert w.join(20) == 0
    got = []
    done = threading.Event()
    w.on("message", got.append)
    w.on("exit", lambda c: done.set())
    wait_until(lambda: len(got) == 100, 20)
    assert got == list(range(100))


def test_terminate_while_blocked_in_receive(start_worker):
    w = start_worker(workerfuncs.block_in_receive)
    assert w.receive(timeout=20) == "ready"
    t = time.monotonic()
    assert w.terminate(20) == 1
    assert time.monotonic() - t < 5
    assert w.exit_code == 1


def test_terminate_pure_python_loop(start_worker):
    w = start_worker(workerfuncs.spin_forever)
    assert w.receive(timeout=20) == "ready"
    t = time.monotonic()
    assert w.terminate(20) == 1
    assert time.monotonic() - t < 5


def test_terminate_in_atomics_wait(start_worker):
    w = start_worker("import ringport\nfrom ringport import atomics\n"
                     "a = ringport.worker_data\n"
                     "ringport.parent_port.post_message('ready')\n"
                     "atomics.wait(a, 0, 0)\n", eval=True,
                     worker_data=ringport.Int32Array(4))
    assert w.receive(timeout=20) == "ready"
    assert w.terminate(20) == 1


def test_terminate_after_exit_returns_its_code(start_worker):
    w = start_worker(workerfuncs.exit_3)
    assert w.join(20) == 3
    assert w.terminate() == 3


def test_join_timeout_and_context_manager(backend):
    with ringport.Worker(workerfuncs.block_in_receive, backend=backend) as w:
        assert w.receive(timeout=20) == "ready"
        assert w.join(0.05) is None
        assert w.is_alive()
    assert not w.is_alive()
    assert w.exit_code == 1


def test_port_transfer_in_worker_data(start_worker):
    ch = ringport.MessageChannel()
    w = start_worker(workerfuncs.use_transferred_port, worker_data={"port": ch.port2},
                     transfer=[ch.port2])
    with pytest.raises(ringport.PortClosed, match="transferred"):
        ch.port2.post_message(1)
    ch.port1.post_message("ping")
    assert ch.port1.receive(timeout=20) == ("from worker", "ping")
    assert w.join(20) == 0


def test_transfer_errors_send_nothing():
    ch = ringport.MessageChannel()
    with pytest.raises(ringport.DataCloneError):
        ringport.Worker(workerfuncs.echo, backend="thread", transfer=[object()])
    with pytest.raises(ringport.DataCloneError):
        ringport.Worker(workerfuncs.echo, backend="thread", worker_data=ch.port2,
                        transfer=[ch.port2, ch.port2])
    ch.port2.post_message("still usable")
    assert ch.port1.receive(timeout=5) == "still usable"


def test_transfer_port_in_message(start_worker):
    w = start_worker("import ringport\n"
                     "p = ringport.parent_port.receive()['p']\n"
                     "p.post_message('via transferred port')\n", eval=True)
    ch = ringport.MessageChannel()
    w.post_message({"p": ch.port2}, transfer=[ch.port2])
    assert ch.port1.receive(timeout=20) == "via transferred port"
    assert w.join(20) == 0


def test_echo_round_trips(start_worker):
    w = start_worker(workerfuncs.echo)
    for v in [1, "two", [3.0, None], {"task": "processData", "payload": [1, 2, 3, 4, 5]}]:
        w.post_message(v)
        assert w.receive(timeout=20) == v
    w.port.close()
    assert w.join(20) == 0


def test_nested_workers(start_worker, backend):
    inner = backend   # a worker of the same kind inside it
    w = start_worker(workerfuncs.nested, worker_data={"inner": inner})
    got = w.receive(timeout=30)
    assert w.join(30) == 0
    assert got["code"] == 0
    assert got["inner"]["is_main_thread"] is False
    assert got["inner"]["thread_id"] not in (0, got["outer_id"])


def test_worker_keeps_dispatching_until_port_closed(start_worker):
    w = start_worker("import ringport\n"
                     "def on(m):\n"
                     "    if m == 'stop':\n"
                     "        ringport.parent_port.close()\n"
                     "    else:\n"
                     "        ringport.parent_port.post_message(m + 1)\n"
                     "ringport.parent_port.on('message', on)\n", eval=True)
    for i in range(3):
        w.post_message(i)
        assert w.receive(timeout=20) == i + 1
    assert w.join(0.05) is None
    w.post_message("stop")
    assert w.join(20) == 0


def test_listener_exception_in_worker_is_its_error(start_worker):
    errors = []
    w = start_worker("import ringport\n"
                     "def on(m): raise KeyError(m)\n"
                     "ringport.parent_port.on('message', on)\n", eval=True)
    w.on("error", errors.append)
    w.post_message("k")
    assert w.join(20) == 1
    wait_until(lambda: errors, 20)
    assert type(errors[0]) is KeyError


@pytest.mark.skipif("subinterpreter" not in ringport.available_backends(),
                    reason="no subinterpreter backend on this interpreter")
def test_numpy_in_subinterpreter_says_what_to_do():
    pytest.importorskip("numpy")
    errors = []
    w = ringport.Worker(workerfuncs.import_numpy, backend="subinterpreter")
    w.on("error", errors.append)
    assert w.join(30) == 1
    wait_until(lambda: errors, 20)
    msg = str(errors[0])
    assert isinstance(errors[0], ImportError)
    assert "numpy" in msg and "backend='thread'" in msg


def test_64_workers(backend):
    ws = [ringport.Worker(workerfuncs.identity, backend=backend, worker_data=i)
          for i in range(64)]
    try:
        got = sorted(w.receive(timeout=60)["worker_data"] for w in ws)
    finally:
        codes = [w.join(60) for w in ws]
    assert got == list(range(64))
    assert codes == [0] * 64


def run_script(code, *args, timeout=60, **kw):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(ringport.__file__)), os.path.dirname(__file__)])
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def test_program_waits_for_referenced_worker_and_not_for_unreferenced(backend):
    r = run_script(textwrap.dedent("""
        import sys, ringport
        w = ringport.Worker("import time; time.sleep(0.3); print('worker done', flush=True)",
                            eval=True, backend=sys.argv[1])
        w.on("exit", lambda c: print("exit", c, flush=True))
    """), backend)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "worker done\nexit 0\n"
    t = time.monotonic()
    r = run_script(textwrap.dedent("""
        import sys, ringport
        w = ringport.Worker("import ringport; ringport.parent_port.receive()", eval=True,
                            backend=sys.argv[1])
        w.on("message", print)
        w.unref()
        print("main done", flush=True)
    """), backend)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "main done\n"
    assert time.monotonic() - t < 20


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_a_program_waiting_on_workers(backend):
    import signal
    code = textwrap.dedent("""
        import sys, ringport
        w = ringport.Worker("import ringport; ringport.parent_port.receive()", eval=True,
                            backend=sys.argv[1])
        w.on("online", lambda: print("online", flush=True))
        w.receive()
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(ringport.__file__))
    p = subprocess.Popen([sys.executable, "-c", code, backend], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline() == "online\n"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "KeyboardInterrupt" in err
    assert p.returncode != 0


def test_main_listeners_run_one_at_a_time_on_the_loop_thread(backend):
    src = "import ringport\nfor i in range(200): ringport.parent_port.post_message(i)"
    ws = [ringport.Worker(src, eval=True, backend=backend) for _ in range(3)]
    inside = [0]
    overlap = []
    threads = set()
    got = []
    done = threading.Event()

    def listener(m):
        inside[0] += 1
        if inside[0] > 1:
            overlap.append(m)
        threads.add(threading.current_thread().name)
        got.append(m)
        time.sleep(0)
        inside[0] -= 1
        if len(got) == 600:
            done.set()

    try:
        for w in ws:
            w.on("message", listener)
        assert done.wait(30)
    finally:
        for w in ws:
            w.join(30)
    assert not overlap
    assert threads == {"ringport-loop"}
    assert sorted(got) == sorted(list(range(200)) * 3)


def test_port_listeners_without_workers():
    ch = ringport.MessageChannel()
    got = []
    closed = threading.Event()
    ch.port1.on("message", got.append)
    ch.port1.on("close", closed.set)
    assert ch.port1.has_ref()
    for i in range(10):
        ch.port2.post_message(i)
    ch.port2.close()
    assert closed.wait(10)
    assert got == list(range(10))


@pytest.mark.stress
def test_stress_many_workers_count_every_message(backend):
    n_workers, n_msgs = 8, 20000
    ws = [ringport.Worker(workerfuncs.echo, backend=backend) for _ in range(n_workers)]
    try:
        for w in ws:
            for i in range(n_msgs):
                w.post_message(i)
        for w in ws:
            assert [w.receive(timeout=60) for _ in range(n_msgs)] == list(range(n_msgs))
            w.port.close()
    finally:
        assert [w.join(60) for w in ws] == [0] * n_workers


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_the_program_waits_for_its_listeners(backend):
    """The main module is done; only the loop keeps the program alive: Ctrl-C ends it."""
    import signal
    code = textwrap.dedent("""
        import sys, ringport
        w = ringport.Worker("import ringport\\n"
                            "ringport.parent_port.on('message', print)\\n"
                            "ringport.parent_port.post_message('up')", eval=True,
                            backend=sys.argv[1])
        w.on("message", lambda m: print(m, flush=True))
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(ringport.__file__))
    p = subprocess.Popen([sys.executable, "-c", code, backend], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline() == "up\n"
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "KeyboardInterrupt" in err
    assert p.returncode == -signal.SIGINT


def test_allow_pickle_false_on_a_worker(start_worker, backend):
    """Worker(allow_pickle=False): the worker's ports carry no pickles either way, and its
    errors are rebuilt without unpickling (on the thread backend they are the very object)."""
    w = start_worker(workerfuncs.post_needs_pickle, allow_pickle=False)
    assert w.receive(timeout=20) == ("refused", "DataCloneError")
    assert w.join(20) == 0
    w2 = start_worker(workerfuncs.post_needs_pickle)
    import fractions
    assert w2.receive(timeout=20) == fractions.Fraction(1, 3)
    assert w2.receive(timeout=20) == ("sent",)
    errors = []
    w3 = start_worker(workerfuncs.raise_value_error, allow_pickle=False)
    w3.on("error", errors.append)
    assert w3.join(20) == 1
    wait_until(lambda: errors, 10)
    if backend == "thread":
        assert type(errors[0]) is ValueError
    else:
        assert isinstance(errors[0], ringport.WorkerError)
        assert errors[0].type_name == "ValueError"
