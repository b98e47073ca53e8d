"""Module-level worker targets (importable by module and name, so they also run in
subinterpreter workers).  Imports only ringport: subinterpreters stay cheap."""
import sys

import ringport


def echo():
    """Answer every message with itself until the parent closes."""
    port = ringport.parent_port
    for msg in port:
        port.post_message(msg)


def identity():
    ringport.parent_port.post_message({
        "has_parent_port": ringport.parent_port is not None,
        "is_main_thread": ringport.is_main_thread,
        "thread_id": ringport.thread_id,
        "worker_data": ringport.worker_data,
        "argv": list(ringport.argv),
        "env_x": ringport.env.get("RINGPORT_TEST_X"),
        "env_data": ringport.get_environment_data("k"),
    })


def raise_value_error():
    raise ValueError("boom from worker")


def exit_3():
    sys.exit(3)


def block_in_receive():
    ringport.parent_port.post_message("ready")
    ringport.parent_port.receive()


def spin_forever():
    ringport.parent_port.post_message("ready")
    n = 0
    while True:
        n += 1


def use_transferred_port():
    port = ringport.worker_data["port"]
    port.post_message(("from worker", port.receive()))


def nested():
    inner = ringport.Worker(identity, backend=ringport.worker_data["inner"])
    msg = inner.receive(timeout=30)
    code = inner.join(30)
    ringport.parent_port.post_message({"inner": msg, "code": code,
                                       "outer_id": ringport.thread_id})


def broadcast_member():
    name = ringport.worker_data["name"]
    with ringport.BroadcastChannel(name) as bc:
        ringport.parent_port.post_message("joined")
        msg = bc.receive(timeout=30)
        while isinstance(msg, tuple):   # another member's reply may come first
            msg = bc.receive(timeout=30)
        ringport.parent_port.post_message(("got", ringport.thread_id, msg))
        bc.post_message(("reply", ringport.thread_id))


def import_numpy():
    import numpy  # noqa: F401
