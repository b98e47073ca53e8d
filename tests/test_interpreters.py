"""Proofs for the claims about interpreters: no GIL on free-threaded builds, own-GIL
subinterpreters load the module and talk over channels."""
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import ringport
from conftest import FREE_THREADED, HAS_SUBINTERPRETERS

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ringport.__file__)))


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded build")
def test_import_keeps_the_gil_disabled():
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = ("import sys, ringport; ch = ringport.MessageChannel(); ch.port1.post_message(1); "
            "ch.port2.receive(); print(sys._is_gil_enabled())")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert "GIL" not in out.stderr


def _interp_api():
    try:
        import _interpreters as I
    except ImportError:
        pytest.skip("no _interpreters module")
    return I


@pytest.mark.skipif(not HAS_SUBINTERPRETERS, reason="own-GIL subinterpreters need 3.13+")
def test_module_works_in_an_isolated_subinterpreter():
    I = _interp_api()
    iid = I.create()  # the default configuration: isolated, with its own GIL
    try:
        code = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {SRC_ROOT!r})
            import ringport
            ch = ringport.MessageChannel()
            ch.port1.post_message({{"x": [1, 2]}})
            assert ch.port2.receive(timeout=5) == {{"x": [1, 2]}}
        """)
        err = I.exec(iid, code)
        assert err is None, err
    finally:
        I.destroy(iid)


@pytest.mark.skipif(not HAS_SUBINTERPRETERS, reason="own-GIL subinterpreters need 3.13+")
def test_channel_between_main_and_subinterpreters():
    I = _interp_api()
    ch = ringport.MessageChannel()
    tok = ringport._core._export({"port": ch.port2, "n": 3}, transfer=[ch.port2])
    iid = I.create()
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC_ROOT!r})
        import ringport
        d = ringport._core._import({tok})
        p = d["port"]
        for _ in range(d["n"]):
            v = p.receive(timeout=10)
            p.post_message(("echo", v))
    """)
    errs = []
    t = threading.Thread(target=lambda: errs.append(I.exec(iid, code)))
    t.start()
    try:
        for i in range(3):
            ch.port1.post_message(i)
            assert ch.port1.receive(timeout=10) == ("echo", i)
    finally:
        t.join(30)
        I.destroy(iid)
    assert errs == [None]


@pytest.mark.skipif(not HAS_SUBINTERPRETERS, reason="own-GIL subinterpreters need 3.13+")
def test_several_interpreters_load_the_module_at_once():
    I = _interp_api()
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC_ROOT!r})
        import ringport
        for _ in range(200):
            ch = ringport.MessageChannel()
            ch.port1.post_message([1, "two", 3.0])
            assert ch.port2.receive() == [1, "two", 3.0]
    """)
    ids = [I.create() for _ in range(4)]
    errs = []
    ts = [threading.Thread(target=lambda i=i: errs.append(I.exec(i, code))) for i in ids]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for i in ids:
        I.destroy(i)
    assert errs == [None] * 4
