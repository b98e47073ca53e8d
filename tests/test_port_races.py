"""Races on one MessagePort: transfer, close and drop from one thread while another uses it.

Each scenario runs in a child process (python tests/test_port_races.py SCENARIO ROUNDS), so a
crash (a segfault, an abort) fails the test with the child's output and faulthandler's trace
instead of killing pytest.  The loser of a race must get PortClosed (or DataCloneError for a
second transfer), never a crash, a hang or a lost or duplicated message.
"""
import gc
import os
import subprocess
import sys
import threading

import pytest

from ringport import DataCloneError, Empty, MessageChannel, PortClosed

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD_TIMEOUT = 240


def run_child(scenario, rounds, timeout=CHILD_TIMEOUT):
    env = dict(os.environ)
    # the ringport this process imported (the installed one in CI, the source tree in place)
    import ringport
    src = os.path.dirname(os.path.dirname(os.path.abspath(ringport.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), scenario, str(rounds)],
        env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{scenario} died with rc {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
        f"\n--- stderr\n{proc.stderr[-8000:]}")
    assert proc.stdout.strip().endswith(f"{scenario} ok"), proc.stdout[-2000:]


class Thread(threading.Thread):
    """A thread that re-raises its exception in join(), which insists on a timeout."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.exc, self.result = fn, args, None, None

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:
            self.exc = e

    def join(self, timeout=30):
        super().join(timeout)
        if self.is_alive():
            raise TimeoutError(f"{self.fn.__name__} still running after {timeout} s")
        if self.exc is not None:
            raise self.exc
        return self.result


def in_call(t, name, deadline_s=10.0):
    """Wait until thread t's innermost Python frame is on a line calling name (for a C call
    such as receive(), that means it is in the call, or about to make it).  A free-threaded
    build cannot read a running thread's frame safely (ThreadSanitizer: CPython's
    PyFrame_GetCode against the owner clearing it): there only wait for it to have started,
    as conftest.inside_call does; every scenario holds whichever comes first."""
    import linecache
    import sysconfig
    import time
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        while t.ident is None:
            time.sleep(0)
        return
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        f = sys._current_frames().get(t.ident)
        if f is not None and f"{name}(" in linecache.getline(f.f_code.co_filename, f.f_lineno):
            return
        if not t.is_alive():
            return
        time.sleep(0)   # let the thread run: the GIL (if any) is handed over
    raise TimeoutError(f"{name}() was not reached")


def started(fn, *args):
    t = Thread(fn, *args)
    t.start()
    return t


def receiving(port):
    """A thread, started and past a barrier with the caller, that receives one message from
    port; its result is the message, or "closed" if the receive raised PortClosed."""
    go = threading.Barrier(2)

    def receiver():
        go.wait()
        try:
            return port.receive()
        except PortClosed:
            return "closed"

    t = started(receiver)
    go.wait()
    return t


# ---------------------------------------------------------------------------- scenarios
# Each takes the number of rounds and raises on a wrong outcome.

def receive_vs_transfer(rounds):
    """A thread blocked in receive() while another thread transfers the port away; then the
    moved port (and sometimes the other end) is dropped, which frees the channel."""
    for i in range(rounds):
        a = MessageChannel()
        carrier = MessageChannel()
        t = receiving(a.port2)
        if i % 2 == 0:
            in_call(t, "receive")
        if i % 3 == 0:
            a.port1.post_message(i)
        carrier.port1.post_message(a.port2, transfer=[a.port2])
        if i % 3 == 1:
            a.port1.post_message(i)   # wakes the old receiver, if it still waits
        moved = carrier.port2.receive(timeout=10)
        got = None
        if i % 3 != 2:
            # the message went to exactly one of the two: the blocked receiver or the moved port
            try:
                got = moved.receive(timeout=0)
            except Empty:
                pass
        del moved
        if i % 2:
            del a
        gc.collect()
        r = t.join()
        if i % 3 != 2:
            assert (r == i) != (got == i), (r, got)
        else:
            assert r == "closed", r


def transfer_vs_transfer(rounds):
    """Two threads transfer the same port at once: one wins, the other gets DataCloneError."""
    c1, c2 = MessageChannel(), MessageChannel()
    for i in range(rounds):
        a = MessageChannel()
        go = threading.Barrier(2)

        def move(carrier, port=a.port1):
            go.wait()
            try:
                carrier.post_message(port, transfer=[port])
                return True
            except DataCloneError:
                return False

        ts = [started(move, c1.port1), started(move, c2.port1)]
        wins = [t.join() for t in ts]
        assert wins.count(True) == 1, wins
        winner = c1.port2 if wins[0] else c2.port2
        other = c2.port2 if wins[0] else c1.port2
        moved = winner.receive(timeout=10)
        assert other.poll() is False
        a.port2.post_message(i)
        assert moved.receive(timeout=10) == i
        with pytest.raises(PortClosed):
            a.port1.post_message("old object")


def close_vs_receive(rounds):
    for i in range(rounds):
        a = MessageChannel()
        n = i % 4
        for k in range(n):
            a.port1.post_message(k)
        go = threading.Barrier(2)

        def receiver(port=a.port2):
            go.wait()
            got = []
            try:
                while True:
                    got.append(port.receive())
            except PortClosed:
                return got

        t = started(receiver)
        go.wait()
        (a.port1 if i % 2 else a.port2).close()
        got = t.join()
        assert got == list(range(len(got))), got
        if i % 2:           # the sender closed: everything it posted before is delivered
            assert got == list(range(n)), got


def close_vs_post(rounds):
    for i in range(rounds):
        a = MessageChannel(max_pending_bytes=4096) if i % 3 == 0 else MessageChannel()
        go = threading.Barrier(2)

        def sender(port=a.port1):
            go.wait()
            sent = 0
            try:
                while True:
                    port.post_message(sent, timeout=5)
                    sent += 1
                    if sent % 64 == 0:
                        # make room on a bounded channel, as a reader would
                        while port.pending_bytes > 2048 and not port.closed:
                            threading.Event().wait(0)
            except PortClosed:
                return sent

        t = started(sender)
        go.wait()
        a.port1.close()
        sent = t.join()
        got = list(a.port2)
        assert got == list(range(sent)), (sent, got[-3:])


def drop_vs_receive(rounds):
    """The other end is dropped (del + gc) while a thread is blocked in receive()."""
    for i in range(rounds):
        a = MessageChannel()
        p1, p2 = a.port1, a.port2
        del a
        t = receiving(p2)
        in_call(t, "receive")
        if i % 2:
            p1.post_message("last")
        del p1
        gc.collect()
        r = t.join()
        assert r == "closed" or (i % 2 and r == "last"), r
        if r == "last":
            with pytest.raises(PortClosed):
                p2.receive(timeout=5)


def everything_vs_transfer(rounds):
    """Every other operation on the port, in a thread, while the main thread transfers it."""
    carrier = MessageChannel()

    def poke(port, stop):
        while not stop.is_set():
            for op in (lambda: port.post_message(1), lambda: port.receive(timeout=0),
                       port.poll, lambda: port.closed, lambda: repr(port),
                       lambda: port.pending_bytes, lambda: port.on("message", print),
                       lambda: port.off("message"), port.start, port.ref, port.unref,
                       lambda: port._dispatch(4), lambda: list(zip(range(2), port))):
                try:
                    op()
                except (PortClosed, Empty):
                    pass

    for i in range(rounds):
        a = MessageChannel()
        stop = threading.Event()
        t = started(poke, a.port2, stop)
        carrier.port1.post_message(a.port2, transfer=[a.port2])
        moved = carrier.port2.receive(timeout=10)
        if i % 2:
            moved.close()
        del moved
        gc.collect()
        stop.set()
        t.join()


SCENARIOS = {f.__name__: f for f in (receive_vs_transfer, transfer_vs_transfer, close_vs_receive,
                                     close_vs_post, drop_vs_receive, everything_vs_transfer)}


# ---------------------------------------------------------------------------- tests

# The quick runs of each scenario are in test_port.py (test_race).

@pytest.mark.stress
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_race_stress(scenario):
    # about 40 ms a round on a loaded 2-core machine for the scenarios that wait for a blocked
    # receive (gc.collect() each round): 1000 rounds (40 s) stay well inside the child's time
    # and keep CI's stress step short; the double transfer crashed the old code within 3000
    rounds = {"everything_vs_transfer": 300, "transfer_vs_transfer": 8000}.get(scenario, 1000)
    run_child(scenario, rounds, timeout=900)


if __name__ == "__main__":
    name, n = sys.argv[1], int(sys.argv[2])
    SCENARIOS[name](n)
    print(f"{name} ok")


def test_post_many_producers_receive_many_consumer_exact_counts_and_order():
    import ringport as _rp
    a, b = _rp.MessageChannel(capacity=8192)
    producers, per, chunk = 4, 5000, 97
    try:
        def produce(pid):
            for start in range(0, per, chunk):
                a.post_many((pid, i) for i in range(start, min(per, start + chunk)))

        ts = [threading.Thread(target=produce, args=(pid,)) for pid in range(producers)]
        for t in ts:
            t.start()
        last = [-1] * producers
        total = 0
        while total < producers * per:
            for pid, i in b.receive_many(500, timeout=10):
                assert i == last[pid] + 1
                last[pid] = i
                total += 1
        for t in ts:
            t.join(30)
        assert last == [per - 1] * producers
        with pytest.raises(_rp.Empty):
            b.receive(timeout=0)
    finally:
        a.close()
