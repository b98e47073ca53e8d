"""MessageChannel / MessagePort: delivery, order, blocking, close, transfer, errors, threads."""
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from fractions import Fraction

import pytest

import ringport
from ringport import (DataCloneError, DecodeError, Empty, Full, MessageChannel, MessagePort,
                      PortClosed, receive_message_on_port)

import test_port_races
from conftest import FREE_THREADED, wait_inside_call, wait_until


def test_both_directions(channel):
    channel.port1.post_message("to 2")
    channel.port2.post_message({"to": 1})
    assert channel.port2.receive() == "to 2"
    assert channel.port1.receive() == {"to": 1}


def test_channel_unpacks_and_ports_cannot_be_built_directly():
    p1, p2 = MessageChannel()
    assert isinstance(p1, MessagePort) and isinstance(p2, MessagePort)
    with pytest.raises(TypeError):
        MessagePort()


def test_receive_timeout_raises_empty(channel):
    t0 = time.monotonic()
    with pytest.raises(Empty) as ei:
        channel.port2.receive(timeout=0.05)
    assert time.monotonic() - t0 >= 0.045
    assert isinstance(ei.value, queue.Empty) and isinstance(ei.value, TimeoutError)
    with pytest.raises(Empty):
        channel.port2.receive(timeout=0)
    channel.port1.post_message(1)
    assert channel.port2.receive(timeout=0) == 1


@pytest.mark.parametrize("bad", [-1, float("nan"), "1", [1]])
def test_bad_timeouts(channel, bad):
    with pytest.raises((ValueError, TypeError)):
        channel.port2.receive(timeout=bad)
    channel.port1.post_message("still fine")
    assert channel.port2.receive() == "still fine"


def test_receive_message_on_port(channel):
    assert receive_message_on_port(channel.port2) is None
    channel.port1.post_message([1, 2])
    got = receive_message_on_port(channel.port2)
    assert got.message == [1, 2]
    assert "ReceivedMessage" in repr(got)
    assert receive_message_on_port(channel.port2) is None
    with pytest.raises(TypeError):
        receive_message_on_port("not a port")


def test_order_kept_through_ring_and_overflow():
    ch = MessageChannel(capacity=256)  # tiny ring: most messages take the overflow path
    big = b"x" * 1000
    for i in range(2000):
        ch.port1.post_message((i, big) if i % 7 == 0 else i)
    for i in range(2000):
        m = ch.port2.receive(timeout=5)
        assert (m[0] if isinstance(m, tuple) else m) == i
    with pytest.raises(Empty):
        ch.port2.receive(timeout=0)


def test_posting_never_blocks_without_a_bound():
    ch = MessageChannel(capacity=1024)
    for i in range(20000):
        ch.port1.post_message(i)
    assert [ch.port2.receive() for _ in range(20000)] == list(range(20000))


def test_big_message_64mib(channel):
    blob = os.urandom(1 << 20) * 64
    channel.port1.post_message(blob)
    out = channel.port2.receive(timeout=30)
    assert out == blob


def test_numpy_array_through_a_port(channel):
    np = pytest.importorskip("numpy")
    a = np.random.default_rng(1).random((256, 512))  # 1 MiB float64
    channel.port1.post_message(a)
    out = channel.port2.receive(timeout=10)
    assert out.dtype == a.dtype and out.shape == a.shape and (out == a).all()
    assert out.flags.writeable
    out[0, 0] = -1  # the receiver owns its copy
    assert a[0, 0] != -1


def test_close_delivers_earlier_messages_then_raises_port_closed():
    ch = MessageChannel()
    for i in range(5):
        ch.port1.post_message(i)
    ch.port1.close()
    assert ch.port1.closed and ch.port2.closed
    assert [m for m in ch.port2] == [0, 1, 2, 3, 4]
    with pytest.raises(PortClosed) as ei:
        ch.port2.receive()
    assert isinstance(ei.value, EOFError)
    with pytest.raises(PortClosed):
        ch.port1.post_message("after close")
    with pytest.raises(PortClosed):
        ch.port2.post_message("after close")
    ch.port1.close()  # idempotent


def test_close_from_the_receiving_side_wakes_a_blocked_receiver(rethread):
    ch = MessageChannel()

    def receive_until_closed():
        with pytest.raises(PortClosed):
            ch.port2.receive()

    t = rethread(receive_until_closed)
    wait_inside_call(t, "receive")
    ch.port2.close()
    t.join(5)


def test_peer_garbage_collected_closes_the_stream():
    ch = MessageChannel()
    p1, p2 = ch.port1, ch.port2
    del ch
    p1.post_message("last words")
    del p1
    assert p2.receive(timeout=1) == "last words"
    with pytest.raises(PortClosed):
        p2.receive(timeout=1)


def test_bounded_mode_raises_full_and_recovers():
    ch = MessageChannel(max_pending_bytes=4096)
    assert ch.port1.max_pending_bytes == 4096
    n = 0
    with pytest.raises(Full) as ei:
        while True:
            ch.port1.post_message(b"x" * 100, timeout=0)
            n += 1
    assert isinstance(ei.value, queue.Full)
    assert 10 < n < 50
    t0 = time.monotonic()
    with pytest.raises(Full):
        ch.port1.post_message(b"x" * 100, timeout=0.05)
    assert time.monotonic() - t0 >= 0.045
    ch.port2.receive()
    ch.port1.post_message(b"y", timeout=0)
    assert len([ch.port2.receive() for _ in range(n)]) == n


def test_bounded_mode_blocks_until_room(rethread):
    ch = MessageChannel(max_pending_bytes=1000)
    total = 300
    probe = MessageChannel(max_pending_bytes=1000)
    probe.port1.post_message(0)
    size = probe.port1.pending_bytes        # what one such message counts against the bound
    probe.port1.close()

    def consume():
        # start only once the channel is full, so the producer's next post has to wait
        wait_until(lambda: ch.port1.pending_bytes + size > 1000, what="a full channel")
        return [ch.port2.receive(timeout=10) for _ in range(total)]

    t = rethread(consume)
    for i in range(total):
        ch.port1.post_message(i, timeout=10)
    assert t.join(20) == list(range(total))


def test_uncloneable_value_sends_nothing_and_port_stays_usable(channel):
    with pytest.raises(DataCloneError, match="lock"):
        channel.port1.post_message({"ok": 1, "bad": threading.Lock()})
    assert receive_message_on_port(channel.port2) is None
    channel.port1.post_message("fine")
    assert channel.port2.receive(timeout=1) == "fine"


class _Boom:
    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise RuntimeError("cannot rebuild")


def test_message_that_fails_to_decode_raises_and_the_next_one_arrives(channel):
    channel.port1.post_message([1, _Boom()])
    channel.port1.post_message("next")
    with pytest.raises(DecodeError, match="cannot rebuild"):
        channel.port2.receive(timeout=1)
    assert channel.port2.receive(timeout=1) == "next"


def test_transfer_moves_a_port():
    a = MessageChannel()
    b = MessageChannel()
    a.port1.post_message({"reply_to": b.port2}, transfer=[b.port2])
    with pytest.raises(PortClosed, match="transferred"):
        b.port2.receive(timeout=0)
    moved = a.port2.receive(timeout=1)["reply_to"]
    assert isinstance(moved, MessagePort)
    b.port1.post_message("through the moved port")
    assert moved.receive(timeout=1) == "through the moved port"
    moved.post_message("back")
    assert b.port1.receive(timeout=1) == "back"


def test_transfer_errors_send_nothing():
    a = MessageChannel()
    b = MessageChannel()
    with pytest.raises(DataCloneError, match="transfer"):
        a.port1.post_message(b.port1)  # a port must be listed in transfer
    with pytest.raises(DataCloneError, match="twice"):
        a.port1.post_message(b.port1, transfer=[b.port1, b.port1])
    with pytest.raises(DataCloneError, match="not transferable"):
        a.port1.post_message(1, transfer=[b"bytes"])
    with pytest.raises(DataCloneError, match="sending port"):
        a.port1.post_message(a.port2, transfer=[a.port2])
    assert receive_message_on_port(a.port2) is None
    b.port1.post_message("b still works")
    assert b.port2.receive(timeout=1) == "b still works"


def test_ports_cannot_be_pickled(channel):
    import pickle
    with pytest.raises(DataCloneError):
        pickle.dumps(channel.port1)


def test_listeners_are_fed_by_the_event_loop(channel):
    got, closed = [], []
    channel.port2.on("message", got.append)
    channel.port2.on("close", lambda: closed.append(True))
    channel.port1.post_message(1)
    channel.port1.post_message(2)
    wait_until(lambda: got == [1, 2])
    channel.port2.off("message", got.append)
    channel.port2.once("message", got.append)
    channel.port1.post_message(3)
    channel.port1.post_message(4)   # once(): only 3 reaches the listener; 4 stays queued
    wait_until(lambda: got == [1, 2, 3])
    assert channel.port2.receive(timeout=5) == 4
    channel.port1.close()
    wait_until(lambda: closed == [True])
    assert channel.port2.has_ref()
    channel.port2.unref()
    assert not channel.port2.has_ref()


def test_messageerror_event(channel):
    errors = []
    channel.port2.on("messageerror", errors.append)
    channel.port2.on("message", lambda m: None)
    channel.port1.post_message(_Boom())
    wait_until(lambda: len(errors) == 1)
    assert isinstance(errors[0], DecodeError)


def test_many_producers_and_consumers_deliver_exactly_once_in_order(rethread):
    _mpmc(producers=4, consumers=2, per_producer=5000, rethread=rethread)


@pytest.mark.stress
def test_stress_mpmc(rethread):
    _mpmc(producers=8, consumers=4, per_producer=100_000, rethread=rethread, capacity=4096)


def _mpmc(producers, consumers, per_producer, rethread, capacity=65536):
    ch = MessageChannel(capacity=capacity)
    start = threading.Barrier(producers + consumers)

    def produce(pid):
        start.wait()
        for i in range(per_producer):
            ch.port1.post_message((pid, i, b"p" * (i % 50)))

    def consume():
        start.wait()
        seen = []
        while True:
            try:
                m = ch.port2.receive(timeout=20)
            except PortClosed:
                return seen
            seen.append(m[:2])

    cs = [rethread(consume) for _ in range(consumers)]
    ps = [rethread(produce, p) for p in range(producers)]
    for t in ps:
        t.join(120)
    ch.port1.close()
    results = [t.join(120) for t in cs]
    everything = [m for r in results for m in r]
    assert len(everything) == producers * per_producer
    assert len(set(everything)) == len(everything)
    for r in results:  # each consumer sees every producer's messages in posting order
        last = {}
        for pid, i in r:
            assert i > last.get(pid, -1)
            last[pid] = i


def test_ctrl_c_interrupts_a_blocking_receive():
    code = textwrap.dedent("""
        import os, signal, threading, time, ringport
        ch = ringport.MessageChannel()
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        try:
            ch.port2.receive()
        except KeyboardInterrupt:
            print("interrupted after", round(time.monotonic() - t0, 2))
            ch.port1.post_message("still usable")
            print(ch.port2.receive(timeout=1))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0].startswith("interrupted after")
    assert float(lines[0].split()[-1]) < 2
    assert lines[1] == "still usable"


def test_keyword_and_positional_arguments(channel):
    a = MessageChannel()
    channel.port1.post_message({"p": a.port2}, transfer=[a.port2])
    assert isinstance(channel.port2.receive(timeout=1)["p"], MessagePort)
    channel.port1.post_message(1, [], None)
    channel.port1.post_message(2, timeout=1)
    assert channel.port2.receive(1) == 1
    assert channel.port2.receive(timeout=1) == 2
    with pytest.raises(TypeError, match="unexpected keyword"):
        channel.port1.post_message(3, transferlist=[])
    with pytest.raises(TypeError, match="multiple values"):
        channel.port1.post_message(3, [], transfer=[])
    with pytest.raises(TypeError):
        channel.port2.receive(1, timeout=1)
    with pytest.raises(TypeError):
        channel.port1.post_message()
    assert receive_message_on_port(channel.port2) is None


class _Mutator:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        self.target.clear()  # user code run by the pickle fallback mutates the message
        return (int, (1,))


@pytest.mark.parametrize("make", [list, dict])
def test_container_mutated_while_encoding_raises_and_sends_nothing(channel, make):
    if make is list:
        value = [1, 2, 3]
        value.insert(1, _Mutator(value))
    else:
        value = {"a": 1}
        value["m"] = _Mutator(value)
        value["b"] = 2
    with pytest.raises(RuntimeError, match="changed size"):
        channel.port1.post_message(value)
    assert receive_message_on_port(channel.port2) is None
    channel.port1.post_message("ok")
    assert channel.port2.receive(timeout=1) == "ok"


# ---------------------------------------------------------------------------- capacity and footprint


@pytest.mark.parametrize("bad", [2**40, 2**31, 2**64, 0, -1, -(2**40), 255, 257, 3 << 20])
def test_capacity_out_of_range_or_not_a_power_of_two_raises_value_error(bad):
    with pytest.raises(ValueError, match="capacity must be a power of two between 256 and"):
        MessageChannel(capacity=bad)


@pytest.mark.parametrize("bad", [1.5, "1024", None, True, 1024.0])
def test_capacity_that_is_not_an_int_raises_type_error(bad):
    with pytest.raises(TypeError, match="capacity must be an int"):
        MessageChannel(capacity=bad)


def test_capacity_bounds_are_accepted():
    for cap in (256, 2**30):
        ch = MessageChannel(capacity=cap)
        assert ch.port1.capacity == cap
        ch.port1.post_message(b"x" * 32)
        assert ch.port2.receive() == b"x" * 32


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_idle_channels_cost_little_memory():
    # Rings are mapped at the first post and their pages committed as messages reach them: a
    # thousand idle default channels once cost 510 MiB (two zero-filled 256 KiB rings each).
    before = _rss_bytes()
    chans = [MessageChannel() for _ in range(1000)]
    grown = _rss_bytes() - before
    assert grown < 1000 * 16 * 1024, f"1000 idle channels cost {grown / 2**20:.1f} MiB"
    # used a little, they stay small: only the ring pages the messages reached
    for ch in chans:
        ch.port1.post_message(1)
        assert ch.port2.receive() == 1
    grown = _rss_bytes() - before
    assert grown < 1000 * 32 * 1024, f"1000 lightly used channels cost {grown / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------- races (issue 9)
# Each scenario runs in a child process (see test_port_races.py): a crash fails the test.

@pytest.mark.parametrize("scenario", sorted(test_port_races.SCENARIOS))
def test_race(scenario):
    test_port_races.run_child(scenario, 40 if scenario == "everything_vs_transfer" else 150)


def test_a_receive_blocked_while_its_port_is_transferred_ends_with_port_closed(rethread):
    a, carrier = MessageChannel(), MessageChannel()

    def blocked():
        with pytest.raises(PortClosed, match="transferred"):
            a.port2.receive()

    t = rethread(blocked)
    test_port_races.in_call(t, "receive")
    carrier.port1.post_message(a.port2, transfer=[a.port2])
    t.join(5)
    moved = carrier.port2.receive(timeout=5)
    a.port1.post_message("to the new owner")
    assert moved.receive(timeout=5) == "to the new owner"


def test_a_second_transfer_of_the_same_port_raises_data_clone_error():
    a, c1, c2 = MessageChannel(), MessageChannel(), MessageChannel()
    c1.port1.post_message(a.port1, transfer=[a.port1])
    with pytest.raises(DataCloneError, match="already transferred"):
        c2.port1.post_message(a.port1, transfer=[a.port1])
    assert c2.port2.poll() is False


# ---------------------------------------------------------------------------- Node semantics

@pytest.mark.parametrize("closer", [1, 2])
def test_close_listener_alone_fires_on_both_ends(closer):
    ch = MessageChannel()
    fired = []
    ch.port1.on("close", lambda: fired.append(1))
    ch.port2.once("close", lambda: fired.append(2))
    (ch.port1 if closer == 1 else ch.port2).close()
    wait_until(lambda: sorted(fired) == [1, 2])


def test_a_port_twice_in_one_message_arrives_as_one_object(channel):
    a = MessageChannel()
    channel.port1.post_message({"a": a.port2, "b": [a.port2]}, transfer=[a.port2])
    got = channel.port2.receive(timeout=5)
    assert got["a"] is got["b"][0]
    a.port1.post_message("once")
    assert got["a"].receive(timeout=5) == "once"


@pytest.mark.parametrize("bad", [0, False, 1, 2.5, "ab", b"", object()])
def test_transfer_must_be_an_iterable_of_ports(channel, bad):
    with pytest.raises(TypeError, match="transfer"):
        channel.port1.post_message("x", bad)
    for none in (None, (), []):
        channel.port1.post_message("y", none)
        assert channel.port2.receive(timeout=5) == "y"
    assert receive_message_on_port(channel.port2) is None


def test_transferring_a_closed_port_raises_and_moves_nothing(channel):
    closed, other = MessageChannel(), MessageChannel()
    closed.port1.close()
    with pytest.raises(DataCloneError, match="closed"):
        channel.port1.post_message([other.port1, closed.port2],
                                   transfer=[other.port1, closed.port2])
    assert receive_message_on_port(channel.port2) is None
    other.port1.post_message("not moved")
    assert other.port2.receive(timeout=5) == "not moved"


@pytest.mark.parametrize("how", ["close", "drop"])
def test_ports_in_unread_messages_close_when_the_receiver_goes(how):
    import gc
    ch, b = MessageChannel(), MessageChannel()
    closed = []
    b.port1.on("close", lambda: closed.append(True))
    ch.port1.post_message({"peer": b.port2, "blob": bytearray(1 << 20)}, transfer=[b.port2])
    receiver = ch.port2
    if how == "close":
        receiver.close()
        with pytest.raises(PortClosed):
            receiver.receive(timeout=0)   # what it had not read is gone
    else:
        del ch, receiver
        gc.collect()
    wait_until(lambda: closed == [True])
    assert b.port1.closed


def test_a_port_in_a_message_a_worker_never_read_closes_when_it_ends(start_worker):
    b = MessageChannel()
    closed = threading.Event()
    b.port1.on("close", closed.set)
    # the worker waits until the message is there, and ends without reading it
    w = start_worker("import ringport, time\n"
                     "while not ringport.parent_port.poll():\n"
                     "    time.sleep(0.001)\n", eval=True)
    w.post_message({"p": b.port2}, transfer=[b.port2])
    assert w.join(30) == 0
    assert closed.wait(10)


# ---------------------------------------------------------------- post_many / receive_many

def test_post_many_receive_many_order_and_counts():
    a, b = ringport.MessageChannel(capacity=4096)
    try:
        # enough to overflow the ring: order holds across ring and overflow
        assert a.post_many({"i": i, "s": "x" * (i % 50)} for i in range(3000)) == 3000
        got = []
        while len(got) < 3000:
            got.extend(m["i"] for m in b.receive_many(700, timeout=5))
        assert got == list(range(3000))
        with pytest.raises(ringport.Empty):
            b.receive_many(10, timeout=0)
    finally:
        a.close()


def test_post_many_big_and_handles_keep_order():
    a, b = ringport.MessageChannel()
    c, d = ringport.MessageChannel()
    try:
        vals = [1, b"x" * 300000, 2, c, 3]
        assert a.post_many(vals, transfer=[c]) == 5
        got = b.receive_many(10, timeout=5)
        assert got[0] == 1 and got[1] == b"x" * 300000 and got[2] == 2 and got[4] == 3
        assert isinstance(got[3], ringport.MessagePort)
        got[3].post_message("hi")
        assert d.receive(timeout=5) == "hi"
        assert c.closed   # moved
    finally:
        a.close()
        d.close()


def test_post_many_midway_errors_post_what_came_before():
    a, b = ringport.MessageChannel()
    try:
        def gen():
            yield 1
            yield 2
            raise KeyError("boom")
        with pytest.raises(KeyError):
            a.post_many(gen())
        assert b.receive_many(10, timeout=5) == [1, 2]
        with pytest.raises(ringport.DataCloneError):
            a.post_many([3, 4, lambda: 0, 5])
        assert b.receive_many(10, timeout=5) == [3, 4]
        assert a.post_many([6]) == 1     # still usable
        assert b.receive_many(10, timeout=5) == [6]
        with pytest.raises(ringport.Empty):
            b.receive(timeout=0)         # nothing after the failing value was posted
        with pytest.raises(TypeError):
            a.post_many(5)
    finally:
        a.close()


def test_post_many_bounded_full_reports_posted():
    a, b = ringport.MessageChannel(max_pending_bytes=1000)
    try:
        with pytest.raises(ringport.Full) as ei:
            a.post_many([b"x" * 300] * 10, timeout=0)
        posted = ei.value.posted
        assert 1 <= posted < 10
        got = b.receive_many(100, timeout=5)
        assert len(got) == posted
        assert a.pending_bytes == 0
        assert a.post_many([b"y" * 300] * 2, timeout=0) == 2
    finally:
        a.close()


def test_receive_many_closed_and_args():
    a, b = ringport.MessageChannel()
    a.post_many(range(5))
    a.close()
    assert b.receive_many(3) == [0, 1, 2]
    assert b.receive_many(30) == [3, 4]
    with pytest.raises(ringport.PortClosed):
        b.receive_many(3)
    c, d = ringport.MessageChannel()
    try:
        with pytest.raises(ValueError):
            d.receive_many(0)
        with pytest.raises(TypeError):
            d.receive_many(1.5)
        with pytest.raises(ringport.PortClosed):
            ringport.MessageChannel().port1.post_many  # noqa: B018  (attribute exists)
            c.close()
            c.post_many([1])
    finally:
        c.close()


def test_receive_many_decode_error_after_others_is_deferred():
    a, b = ringport.MessageChannel()
    b.allow_pickle = False
    try:
        a.post_many([1, 2, Fraction(1, 3), 4])
        assert b.receive_many(10, timeout=5) == [1, 2]
        with pytest.raises(ringport.DecodeError):
            b.receive(timeout=5)
        assert b.receive_many(10, timeout=5) == [4]
    finally:
        a.close()


def test_post_many_receive_many_across_worker_backends(start_worker):
    # the worker echoes in batches over its parent port (a shared channel for process workers)
    src = ("import ringport\np = ringport.parent_port\nn = 0\n"
           "while n < 3000:\n"
           "    got = p.receive_many(400)\n"
           "    n += len(got)\n"
           "    p.post_many(m['i'] for m in got)\n")
    w = start_worker(src, eval=True)
    w.post_message({"i": 0})
    for start in range(1, 3000, 250):
        w._port.post_many({"i": i} for i in range(start, min(3000, start + 250)))
    got = []
    while len(got) < 3000:
        got.extend(w._port.receive_many(1000, timeout=20))
    assert got == list(range(3000))
    assert w.join(20) == 0
