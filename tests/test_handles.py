"""Handles that cross threads and interpreters are registry ids, never addresses: a wrong,
stale or reused id raises a clean exception, and internal classes cannot be built from Python."""
import gc
import time

import pytest

import ringport
from ringport import _core
from ringport._core import (
    BroadcastChannel,
    MessageChannel,
    _drop_token,
    _export,
    _import,
    _new_waitset,
    _new_worker_ctl,
    _registry_count,
    _worker_ctl,
    receive_message_on_port,
)


@pytest.mark.parametrize("token", [12345, 0, -1, 2**62, 1])
def test_import_of_a_made_up_token_raises(token):
    with pytest.raises(ValueError, match="not a live token"):
        _import(token)
    with pytest.raises(ValueError, match="not a live token"):
        _drop_token(token)


def test_tokens_that_are_not_ints_raise():
    with pytest.raises(OverflowError):
        _import(2**70)
    for bad in ("1", 1.0, None, b"1"):
        with pytest.raises(TypeError):
            _import(bad)
        with pytest.raises(TypeError):
            _drop_token(bad)


def test_a_token_is_imported_once():
    before = _registry_count()
    tok = _export({"a": [1, 2, 3]})
    assert _registry_count() == before + 1
    assert _import(tok) == {"a": [1, 2, 3]}
    assert _registry_count() == before
    with pytest.raises(ValueError, match="not a live token"):
        _import(tok)
    with pytest.raises(ValueError, match="not a live token"):
        _drop_token(tok)


def test_a_token_is_dropped_once_and_its_ports_close():
    ch = MessageChannel()
    tok = _export({"port": ch.port2}, [ch.port2])
    assert ch.port2.closed  # moved into the token
    _drop_token(tok)
    assert ch.port1.closed  # the moved port went with the token: its peer sees the close
    with pytest.raises(ValueError):
        _drop_token(tok)
    with pytest.raises(ValueError):
        _import(tok)


def _settled_count(timeout=10.0):
    """The registry's count once it has stopped moving: workers of earlier tests may still be
    ending (their tokens and control blocks leave the shared registry as they do)."""
    deadline = time.monotonic() + timeout
    last = _registry_count()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = _registry_count()
        if now == last:
            return now
        last = now
    return last


def test_tokens_from_many_threads_at_once(rethread):
    # the registry is shared by every thread and interpreter of the process
    gc.collect()
    before = _settled_count()

    def churn(k):
        for i in range(2000):
            tok = _export((k, i))
            if i % 3 == 0:
                _drop_token(tok)
            else:
                assert _import(tok) == (k, i)
        return k

    threads = [rethread(churn, k) for k in range(6)]
    assert sorted(t.join() for t in threads) == list(range(6))
    assert _settled_count() <= before   # every token churned was dropped or imported


def test_ids_are_never_reused():
    a = _export(1)
    _drop_token(a)
    b = _export(2)
    assert b != a
    with pytest.raises(ValueError):
        _import(a)
    assert _import(b) == 2


def test_ids_of_another_kind_are_refused():
    ctl = _new_worker_ctl()
    tok = _export("x")
    with pytest.raises(ValueError):
        _import(ctl.id)  # a worker id is no token
    with pytest.raises(ValueError):
        _drop_token(ctl.id)
    with pytest.raises(ValueError, match="worker control block"):
        _worker_ctl(tok)  # a token is no worker id
    assert _worker_ctl(ctl.id).thread_id == ctl.thread_id  # both still intact
    assert _import(tok) == "x"


def test_worker_ctl_ids():
    with pytest.raises(ValueError, match="worker control block"):
        _worker_ctl(12345)
    with pytest.raises(TypeError):
        _worker_ctl("1")
    ctl = _new_worker_ctl()
    mine = _worker_ctl(ctl.id)
    assert mine.thread_id == ctl.thread_id and not mine.done and mine.exit_code == -1
    mine.exit_code = 3
    assert ctl.exit_code == 3
    cid = ctl.id
    del ctl
    gc.collect()
    with pytest.raises(ValueError):
        _worker_ctl(cid)  # the parent's object is gone: its id is stale
    assert mine.exit_code == 3  # the worker's reference keeps the block itself


def test_swap_error_takes_tokens_only():
    ctl = _new_worker_ctl()
    with pytest.raises(ValueError, match="not a live token"):
        ctl.swap_error(12345)
    with pytest.raises(ValueError, match="not a live token"):
        ctl.swap_error(ctl.id)
    before = _registry_count()
    tok = _export({"report": 1})
    assert ctl.swap_error(tok) == 0
    assert ctl.swap_error(0) == tok
    assert _import(tok) == {"report": 1}
    # a report nobody collected goes with the control block
    ctl.swap_error(_export("lost"))
    assert _registry_count() == before + 1
    del ctl
    gc.collect()
    assert _registry_count() == before - 1  # ctl's own id went too


INTERNAL_ARGS = [(), (0,), (1,), (True,), (12345,), (None,), ("x",), (object(),), (1, 2)]


@pytest.mark.parametrize("args", INTERNAL_ARGS)
def test_internal_classes_refuse_construction(args):
    for cls in (_core._WaitSet, _core._WorkerCtl):
        with pytest.raises(TypeError):
            cls(*args)
        with pytest.raises(TypeError):
            cls.__new__(cls, *args)
    with pytest.raises(TypeError):
        _core._WaitSet(with_fd=True)
    with pytest.raises(TypeError):
        _core._WorkerCtl(address=1)


def test_internal_classes_never_crash_even_with_the_key():
    # whoever digs out the module's private key gets objects that raise, never crash
    ws = _core._WaitSet.__new__(_core._WaitSet, _core._PRIVATE)
    for call in (ws.seq, ws.signal, ws.arm, ws.drain, lambda: ws.fd, lambda: ws.wait(0, 0),
                 lambda: ws.watch(MessageChannel().port1, 0)):
        with pytest.raises(ValueError):
            call()
    ctl = _core._WorkerCtl.__new__(_core._WorkerCtl, _core._PRIVATE)
    for call in (lambda: ctl.thread_id, lambda: ctl.done, lambda: ctl.exit_code,
                 lambda: ctl.terminated, ctl.enter, ctl.leave, ctl.terminate,
                 lambda: ctl.swap_error(0), lambda: _core._run_guarded(ctl, lambda: 1)):
        with pytest.raises(ValueError):
            call()


def test_factories_make_working_objects():
    ws = _new_waitset(True)
    assert ws.fd >= 0
    seen = ws.seq()
    ws.signal()
    assert ws.wait(seen, 0)
    ctl = _new_worker_ctl()
    assert ctl.id > 0 and ctl.thread_id > 0 and not ctl.terminated
    assert ctl.terminate() == 0  # not running: only the cancel token fires
    assert ctl.terminated


# ---------------------------------------------------------------------------- receive_message_on_port


def test_receive_message_on_port_takes_a_broadcast_channel():
    with BroadcastChannel("handles-rmop") as a, BroadcastChannel("handles-rmop") as b:
        assert receive_message_on_port(b) is None
        a.post_message({"n": 1})
        a.post_message({"n": 2})
        got = receive_message_on_port(b)
        assert isinstance(got, ringport.ReceivedMessage) and got.message == {"n": 1}
        assert receive_message_on_port(b).message == {"n": 2}
        assert receive_message_on_port(b) is None
        assert receive_message_on_port(a) is None  # the poster does not receive its own
    assert receive_message_on_port(b) is None  # closed


def test_receive_message_on_port_refuses_other_things():
    for bad in (None, 1, object(), MessageChannel(), BroadcastChannel.__new__(BroadcastChannel)):
        with pytest.raises(TypeError):
            receive_message_on_port(bad)
