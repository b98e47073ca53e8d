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


class _Finalized:
    def __del__(self):
        n = 0
        for i in range(300):   # most of the worker's time is spent in here
            n += i


def finalizers_forever():
    """A loop whose time goes to __del__: terminate() mostly lands inside a finalizer."""
    ringport.parent_port.post_message("ready")
    while True:
        _Finalized()


def swallow_terminate_once():
    """Catches the first WorkerTerminated and carries on."""
    try:
        # (inside the try: the parent terminates as soon as it reads 'ready', which may be
        # before this call has returned)
        ringport.parent_port.post_message("ready")
        while True:
            pass
    except BaseException:
        while True:   # a redelivery may land in the post itself (a loaded machine): post again
            try:
                ringport.parent_port.post_message("swallowed")
                break
            except BaseException:
                pass
    while True:
        pass


def listen_on_transferred_port():
    """Listens on the port in worker_data (and keeps a weak reference to it and to its loop in
    LEFT_BEHIND, thread backend only), then waits in its loop."""
    import weakref

    port = ringport.worker_data
    from ringport import _context

    port.on("message", lambda m: None)
    LEFT_BEHIND[:] = [weakref.ref(port), weakref.ref(_context.current().loop)]
    ringport.parent_port.post_message("listening")


LEFT_BEHIND = []


def listen_and_raise():
    import weakref

    from ringport import _context

    port = ringport.worker_data
    port.on("message", _raise_key_error)
    LEFT_BEHIND[:] = [weakref.ref(port), weakref.ref(_context.current().loop)]
    ringport.parent_port.post_message("listening")


def _raise_key_error(m):
    raise KeyError(m)


class BadOnArrival:
    """Pickles fine; unpickling raises (in the worker, while it boots)."""

    def __reduce__(self):
        return (_fail_on_arrival, ())


def _fail_on_arrival():
    raise RuntimeError("worker_data refused to arrive")


def hold_port_and_block():
    """Holds the port from worker_data in a local only (no listener), blocked in receive()."""
    port = ringport.worker_data
    ringport.parent_port.post_message("listening")
    ringport.parent_port.receive()
    port.post_message("never")


def raise_value_error_holding_port():
    port = ringport.worker_data  # noqa: F841 (held by this frame, which the error keeps)
    raise ValueError("boom holding a port")


def post_needs_pickle():
    """Post a value only the pickle fallback can carry; report what posting it did."""
    import fractions
    try:
        ringport.parent_port.post_message(fractions.Fraction(1, 3))
    except Exception as e:
        ringport.parent_port.post_message(("refused", type(e).__name__))
    else:
        ringport.parent_port.post_message(("sent",))
