"""The waiting policy of a blocking receive: spin briefly, then sleep on the futex.

Properties, not benchmarks: an idle receiver costs little CPU even right after a steady stream
has grown its spin budget to the maximum; a wake-up is never lost whichever side of the
spin/sleep boundary the message lands on; timeouts still end the wait on time.
"""
import threading
import time

import pytest

import ringport
from conftest import ReThread

IDLE_S = 0.5


def _stream(ch, size, n):
    """n byte strings of size from a producer thread to ch.port1, checked."""
    pay = (bytes(size), b"\x01" * size)

    def produce():
        for i in range(n):
            ch.port2.post_message(pay[i & 1])

    t = ReThread(produce)
    t.start()
    for i in range(n):
        m = ch.port1.receive(10)
        assert len(m) == size and m[:1] == pay[i & 1][:1]
    t.join(30)


def _idle_cpu_share(port):
    """CPU time of this thread over wall time of one receive(IDLE_S) that gets nothing."""
    c0, w0 = time.thread_time(), time.perf_counter()
    with pytest.raises(ringport.Empty):
        port.receive(IDLE_S)
    wall = time.perf_counter() - w0
    assert wall >= IDLE_S * 0.95
    return (time.thread_time() - c0) / wall


def test_idle_receive_costs_little_cpu(channel):
    assert _idle_cpu_share(channel.port1) < 0.2


@pytest.mark.parametrize("size", [1024, 8192])
def test_idle_receive_after_steady_stream_costs_little_cpu(channel, size):
    # a steady stream grows the spin budget to its cap; the spin must still end (bounded) and
    # the receiver sleep, not spin away its core, once the stream stops
    _stream(channel, size, 3000)
    assert _idle_cpu_share(channel.port1) < 0.2
    # and it adapts back: a second idle wait is as cheap
    assert _idle_cpu_share(channel.port1) < 0.2


def test_receive_timeout_ends_on_time(channel):
    _stream(channel, 8192, 500)
    for timeout in (0.001, 0.02, 0.1):
        t0 = time.perf_counter()
        with pytest.raises(ringport.Empty):
            channel.port1.receive(timeout)
        took = time.perf_counter() - t0
        assert timeout * 0.9 <= took < timeout + 0.5


def _pause(kind):
    if kind == 1:                      # inside any spin budget
        end = time.perf_counter() + 20e-6
        while time.perf_counter() < end:
            pass
    elif kind == 2:                    # around the spin cap: the receiver may be going to sleep
        time.sleep(0.0001)
    elif kind == 3:                    # well past it: the receiver sleeps
        time.sleep(0.002)


def test_no_lost_wakeup_ping_pong():
    # Each side blocks in receive with a timeout: a lost wake-up shows as Empty after 10 s
    # (instead of a hang).  Pauses before each reply put the post before, during and after the
    # other side's spin, and on both sides of its decision to sleep.
    a, b = ringport.MessageChannel(), ringport.MessageChannel()
    rounds = 1200

    def echo():
        for i in range(rounds):
            m = a.port2.receive(10)
            assert m[0] == i
            _pause((i * 7) % 4)
            b.port2.post_message(m)

    t = ReThread(echo)
    t.start()
    try:
        for i in range(rounds):
            _pause(i % 4)
            a.port1.post_message((i, b"x" * (1024 if i & 1 else 8192)))
            assert b.port1.receive(10)[0] == i
        t.join(30)
    finally:
        a.port1.close()
        b.port1.close()


def test_no_lost_wakeup_bursty_stream(channel):
    # bursts with gaps of every length, with several receivers racing on one port: every
    # message arrives exactly once and each receiver sees its messages in order
    n, receivers = 2000, 2
    got = [[] for _ in range(receivers)]
    done = threading.Event()

    def consume(k):
        while True:
            try:
                got[k].append(channel.port1.receive(0.05))
            except ringport.Empty:
                if done.is_set():
                    return

    ts = [ReThread(consume, k) for k in range(receivers)]
    for t in ts:
        t.start()
    for i in range(n):
        channel.port2.post_message(i)
        if i % 50 == 49:
            _pause((i // 50) % 4)
    # wait until everything was taken (bounded), then let the receivers time out
    deadline = time.monotonic() + 30
    while sum(map(len, got)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    for t in ts:
        t.join(30)
    for g in got:
        assert g == sorted(g)
    assert sorted(x for g in got for x in g) == list(range(n))
