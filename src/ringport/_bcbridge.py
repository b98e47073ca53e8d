"""BroadcastChannel across processes: each process-worker link carries a bridge channel.

A BroadcastChannel's members find each other in a process-wide registry (csrc/rp_broadcast.h),
which another process cannot see.  So every process worker and its parent share one more channel,
a bridge: what a member posts goes to the members of its own process, and, as (name, value), over
every bridge of that process; a bridge thread delivers what comes in to the local members and
passes it on over the process's other bridges.  Process workers form a tree, so every process gets
each message once.
"""
import _thread
import threading

from ringport._core import PortClosed, _bc_bridges_add, _bc_deliver

__all__ = ["add", "forward"]

_bridges = []            # the ports of this process's bridges
_lock = threading.Lock()


def add(port):
    """Make port (one side of a channel shared with another process) a bridge, pumped by a
    thread of its own.  The pump is a bare thread (the constructor does not wait for it to start:
    threading.Thread.start's wait was 0.5-0.9 ms of a process worker's ~3.5 ms start on 2
    cores), except in a subinterpreter worker, whose isolated interpreter refuses daemon threads
    and so gets a non-daemon threading.Thread."""
    with _lock:
        _bridges.append(port)
        _bc_bridges_add(1)
    from ringport._context import in_subinterpreter_worker
    if not in_subinterpreter_worker():
        _thread.start_new_thread(_pump, (port,))
        return
    threading.Thread(target=_pump, args=(port,), name="ringport-broadcast", daemon=False).start()


def forward(name, value, came_from):
    """Send (name, value) over every bridge but came_from."""
    with _lock:
        bridges = [b for b in _bridges if b is not came_from]
    for b in bridges:
        try:
            b.post_message((name, value))
        except PortClosed:
            pass


def _pump(port):
    try:
        while True:
            try:
                name, value = port.receive()
            except PortClosed:
                return
            except Exception:   # noqa: BLE001 - a message that cannot be decoded is dropped
                continue
            _bc_deliver(name, value)
            forward(name, value, port)
    finally:
        with _lock:
            if port in _bridges:
                _bridges.remove(port)
                _bc_bridges_add(-1)
        port.close()
