"""A user extension cimports ringport.atomics: nogil atomics and wait/notify that interoperate
with ringport.atomics."""
import sys
import threading

import pytest

import ringport
from ringport import BigInt64Array, Float64Array, Int32Array, atomics

from ringport.bench import userext
from conftest import ReThread, start_threads, wait_until

pytestmark = pytest.mark.skipif(not userext.have_compiler(), reason="no C compiler")


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    return userext.build(tmp_path_factory.mktemp("userext"))


def test_get_include_has_the_header():
    import os
    assert os.path.isfile(os.path.join(ringport.get_include(), "ringport", "atomics.h"))
    assert os.path.isfile(os.path.join(os.path.dirname(ringport.__file__), "atomics.pxd"))


def test_nogil_add_loop_from_two_threads(ext):
    a = Int32Array(4)
    n = 200000

    def work(i, barrier):
        barrier.wait()
        ext.add_loop(a, 2, n)

    for t in start_threads(work, 2):
        t.join(60)
    assert a.tolist() == [0, 0, 2 * n, 0]


def test_nogil_float_and_int64_loops(ext):
    f = Float64Array(1)
    q = BigInt64Array(1)

    def work(i, barrier):
        barrier.wait()
        ext.add_loop_f64(f, 0, 50000, 0.5)
        ext.add_loop_i64(q, 0, 50000, 1 << 33)

    for t in start_threads(work, 2):
        t.join(60)
    assert f[0] == 50000.0 and q[0] == 100000 << 33


def test_cas_and_wait_codes(ext):
    a = Int32Array([5])
    assert ext.cas(a, 0, 5, 6) == 5 and a[0] == 6
    assert ext.wait32(a, 0, 0, 0) == ext.CODES["not-equal"]
    assert ext.wait32(a, 0, 6, 1000000) == ext.CODES["timed-out"]


def test_c_wait_woken_by_python_notify_and_back(ext):
    a = Int32Array(1)
    t = ReThread(ext.wait32, a, 0, 0, 10 * 10**9)
    t.start()
    wait_until(lambda: atomics._waiters(a, 0) == 1)
    assert atomics.notify(a, 0) == 1
    assert t.join() == ext.CODES["ok"]
    t = ReThread(atomics.wait, a, 0, 0, 10)
    t.start()
    wait_until(lambda: atomics._waiters(a, 0) == 1)
    assert ext.notify32(a, 0, 1) == 1
    assert t.join() == "ok"


def test_nogil_ping_pong(ext):
    a = Int32Array(1)
    ts = [ReThread(ext.ping_pong, a, 2000, me) for me in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert a[0] == 4000


def test_user_extension_keeps_the_gil_off(ext):
    if hasattr(sys, "_is_gil_enabled"):
        import sysconfig
        if sysconfig.get_config_var("Py_GIL_DISABLED"):
            assert not sys._is_gil_enabled()
