"""A thread worker's start-up does no work it can skip: no compile of a source it already
compiled, no decoding of os.environ it already decoded (issue 12's start-up target)."""
import os

import ringport

# the worker posts the id of its own code object, then waits: both workers stay alive, so two
# code objects could not share an id
SRC = ("import ringport, sys\n"
       "ringport.parent_port.post_message(id(sys._getframe().f_code))\n"
       "ringport.parent_port.receive()\n")


def _start(target, **kw):
    w = ringport.Worker(target, backend="thread", **kw)
    return w, w.receive(30)


def test_eval_source_compiled_once():
    (a, ida), (b, idb) = _start(SRC, eval=True), _start(SRC, eval=True)
    try:
        assert ida == idb
    finally:
        for w in (a, b):
            w.post_message(None)
            assert w.join(30) == 0


def test_script_recompiled_when_it_changes(tmp_path):
    path = tmp_path / "w.py"
    path.write_text("import ringport\nringport.parent_port.post_message(1)\n")
    w, got = _start(str(path))
    assert (got, w.join(30)) == (1, 0)
    path.write_text("import ringport\nringport.parent_port.post_message(2)\n")
    w, got = _start(str(path))
    assert (got, w.join(30)) == (2, 0)


def test_main_env_not_decoded_again(monkeypatch):
    monkeypatch.setenv("RINGPORT_TEST_STARTUP", "1")
    w, got = _start("import ringport\nringport.parent_port.post_message(dict(ringport.env))\n",
                    eval=True)
    assert w.join(30) == 0
    assert got == dict(os.environ)
    calls = []
    decode = os.environ.decodevalue
    monkeypatch.setattr(os.environ, "decodevalue", lambda v: (calls.append(v), decode(v))[1])
    w, got = _start("import ringport\nringport.parent_port.post_message(dict(ringport.env))\n",
                    eval=True)
    assert w.join(30) == 0
    assert calls == []
    assert got == dict(os.environ)
    # a change to os.environ still reaches the next worker
    monkeypatch.setenv("RINGPORT_TEST_STARTUP", "2")
    w, got = _start("import ringport\nringport.parent_port.post_message(ringport.env"
                    "['RINGPORT_TEST_STARTUP'])\n", eval=True)
    assert (got, w.join(30)) == ("2", 0)


def test_thread_worker_env_is_its_own_copy():
    # a thread worker's env no longer goes through the token: it must still be a copy
    env = {"A": "1"}
    w, got = _start("import ringport\nringport.env['A'] = '2'\nringport.env['B'] = '3'\n"
                    "ringport.parent_port.post_message(dict(ringport.env))\n", eval=True, env=env)
    assert (got, w.join(30)) == ({"A": "2", "B": "3"}, 0)
    assert env == {"A": "1"}
    assert os.environ.get("B") != "3"
