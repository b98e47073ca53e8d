"""Module-level task functions for tests/test_pool.py (importable by module and name, so they
run on every backend)."""
import os
import threading
import time

import ringport

state = {}


class TaskFailed(Exception):
    """A test's own exception type: it must come back through the future as itself."""


def add(a, b=0):
    return a + b


def square(x):
    return x * x


def fail(msg):
    raise TaskFailed(msg)


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def spin_forever():
    while True:
        pass


def who():
    """Something that tells one worker from another, in every backend."""
    return (os.getpid(), ringport.thread_id)


def kill_self():
    import signal
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def init(value):
    state["init"] = value


def init_fail():
    raise TaskFailed("initializer failed")


def read_init():
    return state.get("init")


def get_worker_data():
    return ringport.worker_data


def array_sum(arr):
    return float(arr.sum()), arr * 2


def sab_add(sab, index, times):
    view = ringport.Int32Array(sab)
    for _ in range(times):
        ringport.atomics.add(view, index, 1)
    return True


def wait_sab(sab, timeout):
    """Block until slot 0 of sab becomes nonzero (a test's gate)."""
    view = ringport.Int32Array(sab)
    ringport.atomics.wait(view, 0, 0, timeout)
    return int(view[0])


def nested_map(n):
    with ringport.WorkerPool(max_workers=2, backend="thread") as pool:
        return list(pool.map(square, range(n)))


def thread_name():
    return threading.current_thread().name


def unclonable():
    return threading.Lock()


def sleep_then_fail(seconds):
    time.sleep(seconds)
    raise TaskFailed("failed late")


def count_kill_at(sab, i, at):
    """Count a run of task i in slot i of sab; i back, except for i == at: the process dies
    (SIGKILL) then."""
    ringport.atomics.add(ringport.Int32Array(sab), i, 1)
    if i == at:
        kill_self()
    return i


def record(key, value):
    """Append value to this worker's list `key` (the order its tasks ran in); value back."""
    state.setdefault(key, []).append(value)
    return value


def recorded(key):
    return list(state.get(key, ()))
