"""Workers on a Ray cluster (backend="ray"): a local cluster of two nodes on this machine,
started once for the module and torn down after it.  Skipped, loudly, where Ray is not installed
(it has no wheels for free-threaded builds, for instance)."""
import os
import signal
import sys
import time

import pytest

import ringport
from ringport import DataCloneError, MessageChannel, PortClosed, WorkerError

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError as exc:
    if os.environ.get("RINGPORT_REQUIRE_RAY"):   # (.ci/run's Ray step: never a silent skip)
        raise
    print(f"\n!!!!! RAY TESTS SKIPPED on Python {sys.version.split()[0]} "
          f"({sys.implementation.cache_tag}): Ray is not installed ({exc}) !!!!!",
          file=sys.__stderr__)
    pytest.skip(f"Ray is not installed here: {exc}", allow_module_level=True)

import ringport.ray  # noqa: E402 - after the skip
from conftest import wait_until  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(ringport.__file__)))
# the second node: a worker asked onto it with ray_options={"resources": {"far": 0.01}}
FAR = {"resources": {"far": 0.01}}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1, resources={"far": 1})
    path = os.pathsep.join([SRC_DIR, TESTS_DIR, os.environ.get("PYTHONPATH", "")])
    ringport.ray.init(address=c.address, log_to_driver=False,
                      runtime_env={"env_vars": {"PYTHONPATH": path}})
    c.wait_for_nodes()
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


ECHO = """
import ringport
p = ringport.parent_port
p.post_message(("ready", ringport.worker_data, ringport.argv, ringport.env.get("RP_X"),
                ringport.get_environment_data("k")))
while True:
    m = p.receive()
    if m is None:
        break
    p.post_message(m)
"""


def _node_of_self():
    return ray.get_runtime_context().get_node_id()


def test_echo_with_worker_data_argv_env_and_environment_data():
    ringport.set_environment_data("k", [1, 2])
    try:
        w = ringport.Worker(ECHO, eval=True, backend="ray", worker_data={"a": (1, "x")},
                            argv=["--n", 3], env={"RP_X": "y"}, ray_options=FAR)
    finally:
        ringport.set_environment_data("k", None)
    events = []
    w.on("online", lambda: events.append("online"))
    w.on("exit", lambda code: events.append(("exit", code)))
    assert w.receive(120) == ("ready", {"a": (1, "x")}, ["-c", "--n", "3"], "y", [1, 2])
    for value in ("hi", {"nested": [1.5, None, b"b"]}, 10 ** 30):
        w.post_message(value)
        assert w.receive(30) == value
    w.post_message(None)
    assert w.join(60) == 0
    wait_until(lambda: len(events) >= 2, 10, "'error' and 'exit' (or 'online' and 'exit')")
    assert events == ["online", ("exit", 0)]
    assert w.pid is None


def square_worker():
    import ringport
    p = ringport.parent_port
    p.post_message(p.receive() ** 2)


def test_an_importable_function_and_a_script_as_targets(tmp_path):
    w = ringport.Worker(square_worker, backend="ray")
    w.post_message(12)
    assert w.receive(120) == 144
    assert w.join(60) == 0
    script = tmp_path / "remote_script.py"
    script.write_text("import ringport, os\n"
                      "ringport.parent_port.post_message((__name__, os.path.basename(__file__)))\n")
    w = ringport.Worker(str(script), backend="ray")
    assert w.receive(120) == ("__main__", "remote_script.py")
    assert w.join(60) == 0


def test_100k_messages_each_way_in_order_exactly_once():
    w = ringport.Worker("""
import ringport
p = ringport.parent_port
n = p.receive()
got = 0
expect = 0
while got < n:
    for m in p.receive_many(10000):
        assert m == expect, (m, expect)
        expect += 1
        got += 1
p.post_many(range(n))
""", eval=True, backend="ray", ray_options=FAR)
    n = 100_000
    w.post_message(n)
    for i in range(0, n, 1000):
        w.port.post_many(range(i, i + 1000))
    got = []
    while len(got) < n:
        got.extend(w.port.receive_many(10000, 60))
    assert got == list(range(n))
    assert w.join(60) == 0


RELAY = """
import ringport
p = ringport.parent_port
port = ringport.worker_data["port"]
while True:
    m = port.receive()
    if m is None:
        break
    port.post_message(("relayed", m))
p.post_message("done")
"""


def test_a_port_transferred_to_a_remote_worker():
    ch = MessageChannel()
    w = ringport.Worker(RELAY, eval=True, backend="ray", worker_data={"port": ch.port1},
                        transfer=[ch.port1], ray_options=FAR)
    for i in range(100):
        ch.port2.post_message(i)
    assert [ch.port2.receive(120) for _ in range(100)] == [("relayed", i) for i in range(100)]
    # and one posted to it later, over its parent port
    ch2 = MessageChannel()
    w2 = ringport.Worker("""
import ringport
port = ringport.parent_port.receive()
port.post_message(("via", port.receive()))
""", eval=True, backend="ray")
    w2.post_message(ch2.port1, [ch2.port1])
    ch2.port2.post_message("x")
    assert ch2.port2.receive(120) == ("via", "x")
    ch.port2.post_message(None)
    assert w.receive(60) == "done"
    assert w.join(60) == 0 and w2.join(60) == 0


def test_a_port_between_two_remote_workers():
    ch = MessageChannel()
    ping = ringport.Worker("""
import ringport
port = ringport.worker_data
for i in range(1000):
    port.post_message(i)
    assert port.receive() == i + 1
ringport.parent_port.post_message("ping done")
""", eval=True, backend="ray", worker_data=ch.port1, transfer=[ch.port1], ray_options=FAR)
    pong = ringport.Worker("""
import ringport
port = ringport.worker_data
for _ in range(1000):
    port.post_message(port.receive() + 1)
""", eval=True, backend="ray", worker_data=ch.port2, transfer=[ch.port2])
    assert ping.receive(120) == "ping done"
    assert ping.join(60) == 0 and pong.join(60) == 0


class Custom(Exception):
    pass


def raise_custom():
    raise Custom("mine")


def test_errors_come_back_by_type_without_unpickling():
    w = ringport.Worker("raise KeyError('missing')", eval=True, backend="ray")
    seen = []
    w.on("error", seen.append)
    assert w.join(120) == 1
    wait_until(lambda: seen, 10, "'error'")
    assert type(seen[0]) is KeyError and "missing" in str(seen[0])
    # a type of the user's: not unpickled from another machine unless trusted
    w = ringport.Worker(raise_custom, backend="ray")
    seen = []
    w.on("error", seen.append)
    assert w.join(120) == 1
    wait_until(lambda: seen, 10, "'error'")
    assert isinstance(seen[0], WorkerError) and "Custom" in str(seen[0])
    w = ringport.Worker("import sys; sys.exit(7)", eval=True, backend="ray")
    assert w.join(120) == 7


def test_what_cannot_cross_is_refused_at_post():
    w = ringport.Worker(ECHO, eval=True, backend="ray")
    w.receive(120)
    sab = ringport.SharedArrayBuffer(32)
    ringport.Float64Array(sab)[0] = 2.5
    with pytest.raises(DataCloneError, match="another machine"):
        w.post_message(sab)
    with pytest.raises(DataCloneError, match="another machine"):
        w.post_message({"view": ringport.Float64Array(sab)})
    with pytest.raises(DataCloneError):       # pickle is off between machines by default
        w.post_message(Custom("x"))
    w.post_message(memoryview(sab))           # the explicit copy
    copy = w.receive(30)
    assert bytes(copy) == bytes(memoryview(sab))
    w.post_message(None)
    assert w.join(60) == 0
    with pytest.raises(DataCloneError, match="another machine"):
        ringport.Worker(ECHO, eval=True, backend="ray", worker_data=sab)


def test_big_messages_through_the_object_store():
    w = ringport.Worker(ECHO, eval=True, backend="ray", ray_options=FAR)
    w.receive(120)
    big = os.urandom(3 << 20)
    w.post_message({"big": big})
    assert w.receive(60) == {"big": big}
    w.post_message(None)
    assert w.join(60) == 0


def test_broadcast_channel_reaches_a_worker_on_another_node():
    bc = ringport.BroadcastChannel("ray-test")
    try:
        w = ringport.Worker("""
import ringport
bc = ringport.BroadcastChannel("ray-test")
ringport.parent_port.post_message("listening")
m = bc.receive()
bc.post_message(("back", m))
bc.close()
""", eval=True, backend="ray", ray_options=FAR)
        assert w.receive(120) == "listening"
        deadline = time.monotonic() + 60
        got = None
        while got is None and time.monotonic() < deadline:
            bc.post_message("hello")
            try:
                got = bc.receive(0.5)
            except ringport.Empty:
                pass
        assert got == ("back", "hello")
        assert w.join(60) == 0
    finally:
        bc.close()


def test_terminate_kills_the_actor_and_nothing_hangs():
    w = ringport.Worker("import time\nimport ringport\nringport.parent_port.post_message(1)\n"
                        "time.sleep(1000)", eval=True, backend="ray")
    assert w.receive(120) == 1
    exits = []
    w.on("exit", exits.append)
    assert w.terminate(60) == 1
    with pytest.raises(PortClosed):
        w.receive(30)
    wait_until(lambda: exits, 10, "'exit'")
    assert exits == [1]


def test_an_actor_killed_mid_stream_gives_error_then_exit():
    w = ringport.Worker("""
import os, ringport
p = ringport.parent_port
p.post_message(os.getpid())
i = 0
while True:
    p.post_message(i)
    i += 1
    if i % 1000 == 0:
        import time; time.sleep(0.001)
""", eval=True, backend="ray", ray_options=FAR)
    pid = w.receive(120)
    events = []
    w.on("error", lambda e: events.append(("error", e)))
    w.on("exit", lambda c: events.append(("exit", c)))
    assert w.receive(30) == 0
    os.kill(pid, signal.SIGKILL)
    expect = 1
    with pytest.raises(PortClosed):
        while True:
            assert w.receive(60) == expect   # what got out arrives in order, then PortClosed
            expect += 1
    assert w.join(60) == 1
    wait_until(lambda: len(events) >= 2, 10, "'error' and 'exit' (or 'online' and 'exit')")
    assert [e[0] for e in events] == ["error", "exit"]
    assert isinstance(events[0][1], WorkerError) and "Ray actor" in str(events[0][1])


def test_pool_map_runs_on_both_nodes():
    with ringport.WorkerPool(backend="ray", max_workers=2, ray_options={"num_cpus": 1}) as pool:
        assert list(pool.map(abs, range(-50, 50))) == [abs(i) for i in range(-50, 50)]
        nodes = set(pool.map(_node_of_self_task, range(20)))
        assert len(nodes) == 2
        with pytest.raises(ZeroDivisionError):
            pool.submit(divmod, 1, 0).result(60)
        assert pool.completed >= 120


def _node_of_self_task(_):
    import ray as ray_
    return ray_.get_runtime_context().get_node_id()


def test_pool_cancel_abort_and_max_queue():
    import concurrent.futures as cf
    with ringport.WorkerPool(backend="ray", max_workers=1, max_queue=2,
                             submit_timeout=0) as pool:
        running = pool.submit(time.sleep, 1000)
        wait_until(running.running, 120, "the first task running")
        queued = []
        with pytest.raises(ringport.Full):
            for i in range(10):
                queued.append(pool.submit(abs, -i))
        assert 2 <= len(queued) < 10              # max_queue (plus what a worker took ahead)
        assert queued[-1].cancel()                # the last one waits in the queue
        pool.abort(running)
        with pytest.raises(cf.CancelledError):
            running.result(60)
        assert [f.result(120) for f in queued[:-1]] == list(range(len(queued) - 1))
        assert pool.submit(abs, -3).result(120) == 3   # a fresh worker took over


def test_a_node_that_dies_ends_its_worker_with_error_then_exit(cluster):
    """(Last in this module: it takes the second node down, then puts a new one in its place.)"""
    w = ringport.Worker(ECHO, eval=True, backend="ray", ray_options=FAR)
    assert w.receive(120)[0] == "ready"
    events = []
    w.on("error", lambda e: events.append(("error", e)))
    w.on("exit", lambda c: events.append(("exit", c)))
    far = [n for n in cluster.list_all_nodes() if n is not cluster.head_node]
    assert len(far) == 1
    cluster.remove_node(far[0], allow_graceful=False)
    try:
        assert w.join(120) == 1
        with pytest.raises(PortClosed):
            w.receive(30)
        wait_until(lambda: len(events) >= 2, 10, "'error' and 'exit' (or 'online' and 'exit')")
        assert [e[0] for e in events] == ["error", "exit"]
        assert isinstance(events[0][1], WorkerError)
    finally:
        cluster.add_node(num_cpus=1, resources={"far": 1})
        cluster.wait_for_nodes()


def test_bad_ray_options_raise_at_the_constructor_and_free_what_moved():
    ch = MessageChannel()
    with pytest.raises((TypeError, ValueError)):
        ringport.Worker(ECHO, eval=True, backend="ray", worker_data=ch.port1,
                        transfer=[ch.port1], ray_options={"no_such_option": 1})
    with pytest.raises(PortClosed):   # the moved port was let go: its peer reads it as closed
        ch.port2.receive(10)
    with pytest.raises(TypeError):
        ringport.Worker(ECHO, eval=True, backend="ray", ray_options=[("num_cpus", 1)])
