"""The link that carries ports to another machine (ringport._raylink), over a socket pair here:
no Ray needed, so it runs on every interpreter.  Also the codec's ports hook and unshared
channels, which it is built on."""
import socket
import struct
import threading
import time

import pytest

import ringport
from ringport import DataCloneError, DecodeError, Full, MessageChannel, PortClosed
from ringport._core import _port_set_unshared, dumps, loads
from ringport._raylink import Link


# ---------------------------------------------------------------------------- codec hooks

def test_dumps_names_ports_through_the_hook_and_loads_gets_them_back():
    ch, other = MessageChannel(), MessageChannel()
    seen = []
    data = dumps({"a": [ch.port1, 1, ch.port1]}, ports=lambda p: seen.append(p) or 7)
    assert seen == [ch.port1]          # once per port, however often it appears
    asked = []
    value = loads(data, ports=lambda k: asked.append(k) or other.port1)
    assert asked == [7]
    assert value["a"][0] is value["a"][2] is other.port1 and value["a"][1] == 1


def test_ports_in_bytes_without_a_hook_are_refused():
    ch = MessageChannel()
    with pytest.raises(DataCloneError):
        dumps([ch.port1])
    data = dumps([ch.port1], ports=lambda p: 3)
    with pytest.raises(DecodeError):
        loads(data)


@pytest.mark.parametrize("bad", [-1, 1 << 62, "3", None, 2.0])
def test_a_ports_hook_that_returns_no_valid_id_raises(bad):
    ch = MessageChannel()
    with pytest.raises(TypeError):
        dumps([ch.port1], ports=lambda p: bad)
    ch.port1.post_message(1)           # the port is untouched and still works
    assert ch.port2.receive(1) == 1


@pytest.mark.parametrize("hook", [lambda k: 1 / 0, lambda k: "not a port", lambda k: None])
def test_a_loads_hook_that_fails_or_returns_no_port_is_a_decode_error(hook):
    data = dumps([MessageChannel().port1], ports=lambda p: 5)
    with pytest.raises(DecodeError):
        loads(data, ports=hook)


def test_shared_memory_cannot_be_written_for_another_machine():
    sab = ringport.SharedArrayBuffer(16)
    for value in (sab, ringport.Float64Array(sab), {"x": [ringport.Int32Array(sab)]}):
        with pytest.raises(DataCloneError, match="another machine"):
            dumps(value, ports=lambda p: 1)


def test_an_unshared_channel_refuses_shared_memory_at_post_and_stays_usable():
    ch = MessageChannel()
    assert _port_set_unshared(ch.port2)
    sab = ringport.SharedArrayBuffer(16)
    ringport.Int32Array(sab)[1] = 5
    for port in (ch.port1, ch.port2):   # both ends of the channel
        with pytest.raises(DataCloneError, match="memoryview"):
            port.post_message({"buf": ringport.Int32Array(sab)})
        with pytest.raises(DataCloneError):
            port.post_many([1, sab])
    assert ch.port2.receive(1) == 1     # post_many posted what came before the refused value
    ch.port1.post_message(memoryview(sab))   # the copy the error names goes through
    copy = ch.port2.receive(1)
    assert bytes(copy) == bytes(memoryview(sab))
    # a plain channel still shares
    plain = MessageChannel()
    plain.port1.post_message(sab)
    assert isinstance(plain.port2.receive(1), ringport.SharedArrayBuffer)


def test_marking_a_port_that_moved_away_says_so():
    ch, carrier = MessageChannel(), MessageChannel()
    carrier.port1.post_message(ch.port1, [ch.port1])
    assert _port_set_unshared(ch.port1) is False


# ---------------------------------------------------------------------------- links

class _Blobs:
    """A stand-in for the object store: what one end puts, the other fetches."""

    def __init__(self):
        self.store = {}
        self.n = 0

    def put(self, data):
        self.n += 1
        self.store[self.n] = bytes(data)
        return self.n

    def fetch(self, bid):
        return self.store.pop(bid, None)


@pytest.fixture
def linked():
    """Two links over a socket pair, stream 0 bound on each to a channel: (near port, far port,
    near link, far link)."""
    a, b = socket.socketpair()
    blobs = _Blobs()
    controls = []
    la = Link(a, odd=False, allow_pickle=False, blobs=blobs)
    lb = Link(b, odd=True, allow_pickle=False, blobs=blobs,
              on_control=lambda k, d: controls.append((k, d)))
    near, far = MessageChannel(), MessageChannel()
    la.bind(0, near.port2)
    lb.bind(0, far.port2)
    la.start()
    lb.start()
    lb.controls = controls
    yield near.port1, far.port1, la, lb
    la.close()
    lb.close()
    la.join(10)
    lb.join(10)


def test_messages_cross_in_order_exactly_once_both_ways(linked):
    near, far, _, _ = linked
    n = 20000

    def produce(port, tag):
        for i in range(0, n, 100):
            port.post_many([(tag, j) for j in range(i, i + 100)])

    threads = [threading.Thread(target=produce, args=(near, "a")),
               threading.Thread(target=produce, args=(far, "b"))]
    for t in threads:
        t.start()
    for port, tag in ((far, "a"), (near, "b")):
        got = []
        while len(got) < n:
            got.extend(port.receive_many(1000, 30))
        assert got == [(tag, j) for j in range(n)]
    for t in threads:
        t.join(30)


def test_a_transferred_port_keeps_working_on_the_other_side(linked):
    near, far, _, _ = linked
    x = MessageChannel()
    near.post_message({"port": x.port1, "n": 1}, [x.port1])
    msg = far.receive(10)
    p = msg["port"]
    p.post_message("from far")
    assert x.port2.receive(10) == "from far"
    x.port2.post_many(range(100))
    assert [p.receive(10) for _ in range(100)] == list(range(100))
    # a port sent back the other way over the transferred one
    y = MessageChannel()
    p.post_message([y.port1], [y.port1])
    (back,) = x.port2.receive(10)
    back.post_message("y")
    assert y.port2.receive(10) == "y"
    # closing one end reaches the other, after what was posted
    x.port2.post_message("last")
    x.port2.close()
    assert p.receive(10) == "last"
    with pytest.raises(PortClosed):
        p.receive(10)


def test_the_bridged_channel_refuses_shared_memory_at_post(linked):
    near, _, _, _ = linked
    sab = ringport.SharedArrayBuffer(8)
    with pytest.raises(DataCloneError, match="another machine"):
        near.post_message(sab)
    x = MessageChannel()
    near.post_message(x.port1, [x.port1])   # a port that went over is bridged too
    time.sleep(0)
    deadline = time.monotonic() + 10
    while True:
        try:
            x.port2.post_message(ringport.Float64Array(sab))
        except DataCloneError:
            break
        assert time.monotonic() < deadline, "the transferred port's channel was not marked"
        time.sleep(0.01)


def test_big_messages_go_by_blob_and_arrive_whole(linked):
    near, far, _, _ = linked
    big = bytes(range(256)) * (5 << 12)   # 5 MiB
    near.post_message(big)
    far.post_message({"b": big})
    assert far.receive(30) == big
    assert near.receive(30) == {"b": big}


def test_control_frames_reach_the_owner(linked):
    near, _, la, lb = linked
    la.send_control(b"Z", b"payload")
    deadline = time.monotonic() + 10
    while not lb.controls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lb.controls == [(b"Z", b"payload")]


def test_a_bounded_stream_pushes_back_across_the_link(linked):
    """Nobody reads the far end of a bounded channel: the near producer's posts end in Full
    after about the channel's bound on each side plus the stream's window, and nothing is lost
    once the reader comes."""
    near, far, _, _ = linked
    bound = 64 << 10
    x = MessageChannel(max_pending_bytes=bound)
    far.post_message(x.port1, [x.port1])
    p = near.receive(10)                   # the far side's bounded port, now on the near side
    item = b"x" * 1000
    posted = 0
    with pytest.raises(Full):
        while posted < 10000:
            p.post_message(item, None, 0.5)
            posted += 1
    assert posted < 10000
    # (the receiving side's bound, the stream's window and the sending side's bound)
    assert posted * 1000 <= 3 * bound + 64 * 1024
    got = [x.port2.receive(10) for _ in range(posted)]
    assert got == [item] * posted
    p.post_message(b"after", None, 5)       # room again
    assert x.port2.receive(10) == b"after"


def test_when_the_connection_dies_every_bridged_port_closes(linked):
    near, far, la, lb = linked
    x = MessageChannel()
    near.post_message(x.port1, [x.port1])
    p = far.receive(10)
    near.post_message("before")
    assert far.receive(10) == "before"
    lb.sock.shutdown(socket.SHUT_RDWR)     # as when the other process dies
    la.join(10)
    with pytest.raises(PortClosed):
        near.receive(10)
    with pytest.raises(PortClosed):
        x.port2.receive(10)
    with pytest.raises(PortClosed):
        p.receive(10)


@pytest.mark.parametrize("garbage", [
    b"\xff" * 64,                                             # a frame too large
    struct.pack("<IIB", 3, 0, ord("A")) + b"abc",             # a credit frame of 3 bytes
    struct.pack("<IIB", 4, 0, ord("M")) + b"\x00zz\x01",      # bad codec bytes
    struct.pack("<IIB", 4, 0, ord("M")) + b"\x00H\x02N",      # a port named by our parity
    struct.pack("<IIB", 8, 5, ord("N")) + struct.pack("<Q", 1 << 63)
    + struct.pack("<IIB", 3, 0, ord("M")) + b"\x00H\x05",     # an impossible bound
])
def test_untrusted_frames_never_crash_and_leave_good_traffic_intact(garbage):
    a, b = socket.socketpair()
    link = Link(a, odd=False, allow_pickle=False)
    ch = MessageChannel()
    link.bind(0, ch.port2)
    link.start()
    b.sendall(garbage + struct.pack("<IIB", 3, 0, ord("M")) + dumps(7))
    b.settimeout(10)
    try:
        got = ch.port1.receive(2)
    except (PortClosed, ringport.Empty):
        got = None                      # the link gave up on the peer: ports closed
    assert got in (7, None)
    try:
        ch.port1.post_message("still usable?")
    except PortClosed:
        pass
    b.close()
    link.close()
    link.join(10)



def test_a_link_closed_before_it_started_lets_its_socket_go():
    a, b = socket.socketpair()
    ch = MessageChannel()
    link = Link(a, odd=False, allow_pickle=False)
    link.bind(0, ch.port2)
    link.close()
    assert a.fileno() == -1
    with pytest.raises(PortClosed):
        ch.port1.receive(1)
    b.close()


def _started(sock, odd, chan, on_control=None):
    """A started link over sock whose stream 0 is bridged to chan (its port2)."""
    link = Link(sock, odd=odd, allow_pickle=False, on_control=on_control)
    link.bind(0, chan.port2)
    link.start()
    return link


def test_a_link_that_closes_first_still_delivers_everything_it_sent():
    """The side that ends (a Ray worker: drain, the exit frame, close) while the peer has not
    read yet, and the peer's credit still arriving: the close must not reset the connection
    (a socket closed with unread bytes sends RST, and the kernel drops what it had not sent
    yet: the peer read PortClosed short of the end, as test_ray's 100k messages did in CI)."""
    server = socket.create_server(("127.0.0.1", 0))
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)   # keep it in the sender
    slow.connect(server.getsockname())
    fast, _ = server.accept()
    server.close()
    out = MessageChannel()
    ending = _started(fast, True, out)
    n, size = 300, 10 << 10          # 3 MiB: under the window, so no credit is needed
    for i in range(n):
        out.port1.post_message((i, bytes([i % 251]) * size))
    out.port1.close()
    ending.drain()
    ending.send_control(b"X", b"end")
    ending.close()
    # what the peer owes the ending side (credit) arrives after it closed
    slow.sendall(struct.pack("<IIB", 8, 0, ord("A")) + struct.pack("<Q", 1 << 20))
    time.sleep(0.2)
    controls = []
    got = MessageChannel()
    peer = _started(slow, False, got, on_control=lambda k, d: controls.append((k, bytes(d))))
    for i in range(n):
        assert got.port1.receive(10) == (i, bytes([i % 251]) * size)
    with pytest.raises(PortClosed):
        got.port1.receive(10)
    peer.join(10)                       # (the end of the connection: the control frame came)
    ending.join(10)
    assert controls == [(b"X", b"end")]
    assert not any(t.is_alive() for t in ending._threads + peer._threads)


def test_a_full_local_port_does_not_make_a_slow_peer_look_gone():
    """While a bounded port here is full (its messages wait in a backlog), the reader polls.
    It used to do that with a timeout on the socket, which held for the writer's sendall too:
    a peer that did not read for 2 ms closed the link."""
    a, b = socket.socketpair()
    link = Link(a, odd=False, allow_pickle=False)
    full, big = MessageChannel(max_pending_bytes=1024), MessageChannel()
    link.bind(0, full.port2)
    link.bind(2, big.port2)
    link.start()
    for i in range(4):                  # more than the bounded port takes: a backlog
        data = dumps((i, b"q" * 600))
        b.sendall(struct.pack("<IIB", len(data), 0, ord("M")) + data)
    deadline = time.monotonic() + 10
    while not link._has_backlog():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    n, size = 300, 10 << 10             # far more than the socket holds: sendall waits
    for i in range(n):
        big.port1.post_message((i, bytes([i % 251]) * size))
    time.sleep(0.5)                     # the peer reads nothing meanwhile
    peer = Link(b, odd=True, allow_pickle=False)
    got = MessageChannel()
    peer.bind(2, got.port2)
    peer.start()
    for i in range(n):
        assert got.port1.receive(10) == (i, bytes([i % 251]) * size)
    assert [full.port1.receive(10)[0] for _ in range(4)] == [0, 1, 2, 3]
    link.close()
    peer.join(10)
    link.join(10)


def test_drain_waits_for_a_slow_peer_while_it_makes_progress():
    """An ending worker drains its link before it closes it: a peer that reads slowly but
    steadily gets everything, although that takes longer than drain's timeout in all."""
    a, b = socket.socketpair()
    out, got = MessageChannel(), MessageChannel(max_pending_bytes=1 << 20)
    ending, peer = _started(a, True, out), _started(b, False, got)
    n, size = 40, 256 << 10           # 10 MiB: more than the window, so credit must come
    for i in range(n):
        out.port1.post_message((i, bytes([i]) * size))
    seen = []

    def consume():
        for _ in range(n):
            seen.append(got.port1.receive(30)[0])
            time.sleep(0.03)

    t = threading.Thread(target=consume)
    t.start()
    start = time.monotonic()
    ending.drain(timeout=0.3)
    assert time.monotonic() - start > 0.3   # (it did wait past its timeout)
    ending.close()
    t.join(60)
    assert seen == list(range(n))
    peer.join(10)
    ending.join(10)


def test_drain_gives_up_on_a_peer_that_sends_empty_credit():
    """Credit for no bytes is not progress: a peer that reads nothing it is owed (here it only
    sends credit frames of 0 bytes) cannot keep an ending worker's drain waiting."""
    a, b = socket.socketpair()
    out = MessageChannel()
    link = _started(a, True, out)
    for i in range(24):               # 6 MiB: more than the window
        out.port1.post_message(bytes(256 << 10))
    stop = threading.Event()

    def peer():
        b.settimeout(0.01)
        while not stop.is_set():
            try:
                b.recv(1 << 20)       # (read, so the writer is starved, not blocked)
            except socket.timeout:
                pass
            except OSError:
                return
            try:
                b.sendall(struct.pack("<IIB", 8, 0, ord("A")) + struct.pack("<Q", 0))
            except OSError:
                return

    t = threading.Thread(target=peer)
    t.start()
    try:
        start = time.monotonic()
        link.drain(timeout=0.3)
        assert time.monotonic() - start < 3
    finally:
        stop.set()
        t.join(10)
        link.close()
        b.close()
        link.join(10)


def test_a_hard_close_does_not_wait_for_the_peer():
    """close(hard=True), for a peer given up on (its node gone, TCP silent): the reader ends at
    once instead of lingering for the peer's end of the connection."""
    a, b = socket.socketpair()
    link = _started(a, True, MessageChannel())
    link.close(hard=True)
    link.join(5)
    assert not any(t.is_alive() for t in link._threads)
    assert a.fileno() == -1
    b.close()
