"""BroadcastChannel: every member with the name, in any worker or interpreter, gets what one
posts; the poster does not."""
import threading

import pytest

import ringport
import workerfuncs


def test_members_in_one_interpreter():
    a, b, c = (ringport.BroadcastChannel("bc-local") for _ in range(3))
    other = ringport.BroadcastChannel("bc-other")
    try:
        a.post_message({"n": 1})
        assert b.receive(timeout=5) == {"n": 1}
        assert c.receive(timeout=5) == {"n": 1}
        with pytest.raises(ringport.Empty):
            a.receive(timeout=0.05)       # not the poster
        with pytest.raises(ringport.Empty):
            other.receive(timeout=0.05)   # not another name
        assert a.name == "bc-local"
    finally:
        for x in (a, b, c, other):
            x.close()


def test_close_and_context_manager():
    with ringport.BroadcastChannel("bc-close") as a:
        b = ringport.BroadcastChannel("bc-close")
        b.close()
        assert b.closed
        a.post_message("nobody listens")   # no members left: fine
        with pytest.raises(ringport.PortClosed):
            b.post_message("x")
        with pytest.raises(ringport.PortClosed):
            b.receive(timeout=1)
    assert a.closed
    with pytest.raises(ringport.DataCloneError):
        ringport.MessageChannel().port1.post_message(ringport.BroadcastChannel("bc-x"))


def test_on_message_listener():
    got = []
    done = threading.Event()
    with ringport.BroadcastChannel("bc-ev") as rx, ringport.BroadcastChannel("bc-ev") as tx:
        rx.on("message", lambda m: (got.append(m), len(got) == 3 and done.set()))
        for i in range(3):
            tx.post_message(i)
        assert done.wait(10)
    assert got == [0, 1, 2]


def test_broadcast_across_workers(start_worker):
    name = "bc-workers"
    ws = [start_worker(workerfuncs.broadcast_member, worker_data={"name": name})
          for _ in range(3)]
    with ringport.BroadcastChannel(name) as bc:
        for w in ws:
            assert w.receive(timeout=30) == "joined"
        bc.post_message("hello all")
        got = sorted(w.receive(timeout=30) for w in ws)
        assert got == sorted(("got", w.thread_id, "hello all") for w in ws)
        replies = set()
        while len(replies) < 3:
            kind, tid = bc.receive(timeout=30)
            assert kind == "reply"
            replies.add(tid)
        assert replies == {w.thread_id for w in ws}
    for w in ws:
        assert w.join(30) == 0
