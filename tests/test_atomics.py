"""ringport.atomics: return values, ranges, buffers, contention, wait/notify, vector forms."""
import asyncio
import math
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import ringport
from ringport import (
    BigInt64Array,
    BigUint64Array,
    Float32Array,
    Float64Array,
    Int8Array,
    Int16Array,
    Int32Array,
    SharedArrayBuffer,
    Uint8Array,
    Uint16Array,
    Uint32Array,
    atomics,
)
from ringport._core import _export, _TestCancelToken

from conftest import SRC_DIR, ReThread, needs_subinterpreters, run_in_subinterpreter, \
    start_threads, wait_until

try:
    import numpy as np
except ImportError:
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")

INT_TYPES = [(Int8Array, 8, True), (Uint8Array, 8, False), (Int16Array, 16, True),
             (Uint16Array, 16, False), (Int32Array, 32, True), (Uint32Array, 32, False),
             (BigInt64Array, 64, True), (BigUint64Array, 64, False)]
FLOAT_TYPES = [Float32Array, Float64Array]
int_ids = [t[0].__name__ for t in INT_TYPES]


def wrap(v, bits, signed):
    v &= (1 << bits) - 1
    if signed and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


# ---------------------------------------------------------------- scalar operations

@pytest.mark.parametrize("cls, bits, signed", INT_TYPES, ids=int_ids)
def test_integer_operations_return_old_values(cls, bits, signed):
    a = cls(3)
    assert atomics.store(a, 1, 12) == 12 and a[1] == 12
    assert atomics.load(a, 1) == 12
    assert atomics.add(a, 1, 5) == 12 and a[1] == 17
    assert atomics.sub(a, 1, 2) == 17 and a[1] == 15
    assert atomics.and_(a, 1, 0b1100) == 15 and a[1] == 12
    assert atomics.or_(a, 1, 0b0011) == 12 and a[1] == 15
    assert atomics.xor(a, 1, 0b0101) == 15 and a[1] == 10
    assert atomics.exchange(a, 1, 3) == 10 and a[1] == 3
    assert atomics.compare_exchange(a, 1, 4, 9) == 3 and a[1] == 3     # no match
    assert atomics.compare_exchange(a, 1, 3, 9) == 3 and a[1] == 9     # match
    assert a[0] == 0 and a[2] == 0                                     # neighbours untouched
    # the arithmetic wraps like C and JavaScript; operands themselves must fit
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    lo = -(1 << (bits - 1)) if signed else 0
    atomics.store(a, 0, hi)
    assert atomics.add(a, 0, 1) == hi and a[0] == wrap(hi + 1, bits, signed)
    atomics.store(a, 0, lo)
    assert atomics.sub(a, 0, 1) == lo and a[0] == wrap(lo - 1, bits, signed)
    for fn in (atomics.add, atomics.store, atomics.exchange, atomics.and_):
        with pytest.raises(OverflowError):
            fn(a, 0, hi + 1)
        with pytest.raises(OverflowError):
            fn(a, 0, lo - 1)
        with pytest.raises(TypeError):
            fn(a, 0, 1.0)
    with pytest.raises(OverflowError):
        atomics.compare_exchange(a, 0, hi + 1, 0)


@pytest.mark.parametrize("cls", FLOAT_TYPES)
def test_float_operations(cls):
    a = cls(2)
    assert atomics.store(a, 0, 1.5) == 1.5
    assert atomics.add(a, 0, 0.25) == 1.5 and a[0] == 1.75
    assert atomics.sub(a, 0, 0.75) == 1.75 and a[0] == 1.0
    assert atomics.exchange(a, 0, 2) == 1.0 and a[0] == 2.0
    assert atomics.load(a, 0) == 2.0
    assert atomics.compare_exchange(a, 0, 3.0, 4.0) == 2.0 and a[0] == 2.0
    assert atomics.compare_exchange(a, 0, 2.0, 4.0) == 2.0 and a[0] == 4.0
    # bitwise comparison: -0.0 is not 0.0, NaN matches the same NaN
    atomics.store(a, 1, 0.0)
    assert atomics.compare_exchange(a, 1, -0.0, 5.0) == 0.0 and a[1] == 0.0
    atomics.store(a, 1, math.nan)
    old = atomics.compare_exchange(a, 1, math.nan, 6.0)
    assert math.isnan(old) and a[1] == 6.0
    for fn in (atomics.and_, atomics.or_, atomics.xor):
        with pytest.raises(TypeError):
            fn(a, 0, 1)
    with pytest.raises(TypeError):
        atomics.add(a, 0, "1")
    assert a[0] == 4.0


def test_float32_rounding():
    a = Float32Array(1)
    r = struct.unpack("f", struct.pack("f", 0.1))[0]
    assert atomics.store(a, 0, 0.1) == r
    # compare_exchange compares with expected rounded to float32
    assert atomics.compare_exchange(a, 0, 0.1, 1.0) == r and a[0] == 1.0


def test_index_errors_touch_nothing():
    a = Int32Array([1, 2])
    for bad in (2, -1, 2**70):
        with pytest.raises(IndexError):
            atomics.add(a, bad, 1)
    with pytest.raises(TypeError):
        atomics.load(a, 1.0)
    with pytest.raises(TypeError):
        atomics.load(a, "0")
    assert a == [1, 2]


def test_is_lock_free_and_pause():
    assert atomics.is_lock_free(4) is True
    for n in (1, 2, 8):
        assert isinstance(atomics.is_lock_free(n), bool)
    assert atomics.is_lock_free(3) is False and atomics.is_lock_free(16) is False
    with pytest.raises(TypeError):
        atomics.is_lock_free(4.0)
    assert atomics.pause() is None and atomics.pause(10) is None
    with pytest.raises(ValueError):
        atomics.pause(-1)


# ---------------------------------------------------------------- other buffers

def test_memoryview_buffers():
    s = SharedArrayBuffer(16)
    m = memoryview(s).cast("i")
    assert atomics.add(m, 1, 5) == 0 and Int32Array(s)[1] == 5
    q = memoryview(s).cast("q")
    assert atomics.compare_exchange(q, 1, 0, -7) == 0 and BigInt64Array(s)[1] == -7
    d = memoryview(bytearray(16)).cast("d")
    assert atomics.add(d, 0, 1.5) == 0.0 and d[0] == 1.5
    assert atomics.load(memoryview(bytearray(4)).cast("B"), 3) == 0


def test_bad_buffers():
    with pytest.raises(TypeError):
        atomics.load(b"\0\0\0\0", 0)                        # read-only
    with pytest.raises(TypeError):
        atomics.load(memoryview(bytes(8)).cast("i"), 0)     # read-only
    with pytest.raises(TypeError):
        atomics.add([1, 2], 0, 1)                           # not a buffer
    with pytest.raises(TypeError):
        atomics.add(SharedArrayBuffer(8), 0, 1)             # no element type
    with pytest.raises(TypeError):
        atomics.load(memoryview(bytearray(8)).cast("?"), 0)  # unsupported format
    with pytest.raises(TypeError):
        atomics.load(memoryview(bytearray(8)).cast("i", (1, 2)), 0)    # 2-d
    raw = memoryview(bytearray(12))[1:9].cast("i")                      # misaligned
    with pytest.raises(ValueError):
        atomics.add(raw, 0, 1)
    assert bytes(raw.cast("B")) == bytes(8)


@needs_numpy
def test_numpy_buffers():
    s = SharedArrayBuffer(64)
    n32 = np.frombuffer(s, dtype=np.int32)
    assert atomics.add(n32, 3, 4) == 0 and Int32Array(s)[3] == 4
    n64 = np.frombuffer(s, dtype=np.int64)                # format 'l' on Linux
    assert atomics.exchange(n64, 7, -1) == 0 and BigInt64Array(s)[7] == -1
    f64 = np.zeros(4)
    assert atomics.add(f64, 2, 0.5) == 0.0 and f64[2] == 0.5
    ro = np.zeros(4, dtype=np.int32)
    ro.flags.writeable = False
    with pytest.raises(TypeError):
        atomics.add(ro, 0, 1)
    with pytest.raises(TypeError):
        atomics.add(np.zeros(4, dtype=np.complex128), 0, 1)
    with pytest.raises(TypeError):
        atomics.add(np.zeros((2, 2), dtype=np.int32), 0, 1)
    strided = np.zeros(8, dtype=np.int32)[::2]
    atomics.add(strided, 1, 3)
    assert strided[1] == 3
    assert atomics.wait(np.zeros(2, dtype=np.int32), 0, 1, 0) == "not-equal"


# ---------------------------------------------------------------- contention

N = 20000


def _adder(i, barrier, arr, value, n):
    barrier.wait()
    add = atomics.add
    for _ in range(n):
        add(arr, 0, value)


@pytest.mark.parametrize("cls, bits, signed", INT_TYPES, ids=int_ids)
def test_contended_integer_adds_are_exact(cls, bits, signed):
    a = cls(1)
    for t in start_threads(_adder, 3, a, 1, N):
        t.join(60)
    assert a[0] == wrap(3 * N, bits, signed)


@pytest.mark.parametrize("cls", FLOAT_TYPES)
def test_contended_float_adds_are_exact(cls):
    a = cls(1)
    for t in start_threads(_adder, 2, a, 0.5, 100000 if cls is Float64Array else N):
        t.join(60)
    assert a[0] == (100000.0 if cls is Float64Array else float(N))


def test_contended_compare_exchange_counter():
    a = Int32Array(1)

    def cas_loop(i, barrier):
        barrier.wait()
        for _ in range(N // 2):
            while True:
                old = atomics.load(a, 0)
                if atomics.compare_exchange(a, 0, old, old + 1) == old:
                    break

    for t in start_threads(cas_loop, 2):
        t.join(60)
    assert a[0] == N


def test_contended_bitwise():
    a = Uint32Array(1)

    def setbits(i, barrier):
        barrier.wait()
        for k in range(2000):
            atomics.or_(a, 0, 1 << ((k + i) % 32))
            atomics.and_(a, 0, ~(1 << ((k + i + 16) % 32)) & 0xFFFFFFFF)

    for t in start_threads(setbits, 2):
        t.join(60)
    a[0] = 0
    for t in start_threads(lambda i, b: [b.wait()] + [atomics.xor(a, 0, 0xFF) for _ in range(1001)], 2):
        t.join(60)
    assert a[0] == 0          # an even number of xors of the same mask


@needs_subinterpreters
def test_contended_adds_with_a_subinterpreter():
    a = Int32Array(1)
    f = Float64Array(1)
    tok = _export([a, f])
    sub = run_in_subinterpreter(f"""
from ringport import atomics
from ringport._core import _import
a, f = _import({tok})
for _ in range({N}):
    atomics.add(a, 0, 1)
    atomics.add(f, 0, 0.5)
""")
    for _ in range(N):
        atomics.add(a, 0, 1)
        atomics.add(f, 0, 0.5)
    sub.join(60)
    assert a[0] == 2 * N and f[0] == float(N)


# ---------------------------------------------------------------- wait / notify

def test_wait_not_equal_and_timeout():
    a = Int32Array([1])
    assert atomics.wait(a, 0, 0) == "not-equal"
    assert atomics.wait(a, 0, 1, 0) == "timed-out"
    t0 = time.monotonic()
    assert atomics.wait(a, 0, 1, 0.05) == "timed-out"
    assert 0.04 < time.monotonic() - t0 < 2.0
    assert atomics._waiters(a, 0) == 0
    assert atomics.notify(a, 0) == 0 and atomics.notify(a, 0, 0) == 0


def test_wait_bad_arguments():
    a = Int32Array(2)
    for cls in (Uint32Array, Int16Array, BigUint64Array, Float64Array, Float32Array):
        with pytest.raises(TypeError):
            atomics.wait(cls(1), 0, 0, 0)
        with pytest.raises(TypeError):
            atomics.notify(cls(1), 0)
    with pytest.raises(IndexError):
        atomics.wait(a, 2, 0, 0)
    with pytest.raises(ValueError):
        atomics.wait(a, 0, 0, -1)
    with pytest.raises(TypeError):
        atomics.wait(a, 0, 0, "1")
    with pytest.raises(OverflowError):
        atomics.wait(a, 0, 2**31, 0)
    with pytest.raises(ValueError):
        atomics.notify(a, 0, -1)
    with pytest.raises(TypeError):
        atomics.notify(a, 0, 1.0)


def test_wait_64bit_compares_the_whole_value():
    a = BigInt64Array([1 << 40])
    assert atomics.wait(a, 0, 0, 0) == "not-equal"          # same low 32 bits
    assert atomics.wait(a, 0, 1 << 40, 0) == "timed-out"


@pytest.mark.parametrize("cls", [Int32Array, BigInt64Array])
def test_wait_woken_by_notify(cls):
    a = cls(2)
    t = ReThread(atomics.wait, a, 1, 0, 10)
    t.start()
    wait_until(lambda: atomics._waiters(a, 1) == 1)
    assert atomics._waiters(a, 0) == 0
    assert atomics.notify(a, 0) == 0                  # another index: nobody
    atomics.store(a, 1, 1)
    assert atomics.notify(a, 1) == 1
    assert t.join() == "ok"


def test_notify_counts_and_fifo_order():
    a = Int32Array(1)
    order = []

    def waiter(k):
        r = atomics.wait(a, 0, 0, 10)
        order.append(k)
        return r

    ts = []
    for k in range(4):               # registered one after the other: FIFO order is known
        t = ReThread(waiter, k)
        t.start()
        ts.append(t)
        wait_until(lambda: atomics._waiters(a, 0) == k + 1)
    assert atomics.notify(a, 0, 1) == 1
    assert ts[0].join() == "ok" and order == [0]
    assert atomics.notify(a, 0, 2) == 2
    assert ts[1].join() == "ok" and ts[2].join() == "ok"
    assert sorted(order) == [0, 1, 2]
    assert atomics._waiters(a, 0) == 1
    assert atomics.notify(a, 0) == 1 and ts[3].join() == "ok"
    assert atomics.notify(a, 0) == 0


def test_many_waiters_notify_all():
    a = Int32Array(1)
    ts = [ReThread(atomics.wait, a, 0, 0, 10) for _ in range(6)]
    for t in ts:
        t.start()
    wait_until(lambda: atomics._waiters(a, 0) == 6)
    assert atomics.notify(a, 0, None) == 6
    assert [t.join() for t in ts] == ["ok"] * 6


def _ping_pong(rounds, join_timeout):
    """Two threads take turns through wait/notify on one element; every hand-off is counted."""
    a = Int32Array(1)

    def pong():
        for i in range(rounds):
            while atomics.load(a, 0) != 2 * i + 1:
                atomics.wait(a, 0, 2 * i, 5)
            atomics.store(a, 0, 2 * i + 2)
            atomics.notify(a, 0)

    t = ReThread(pong)
    t.start()
    for i in range(rounds):
        atomics.store(a, 0, 2 * i + 1)
        atomics.notify(a, 0)
        while atomics.load(a, 0) != 2 * i + 2:
            atomics.wait(a, 0, 2 * i + 1, 5)
    t.join(join_timeout)
    assert a[0] == 2 * rounds


def test_ping_pong():
    _ping_pong(300, 60)


def test_wait_raises_worker_terminated_on_cancel():
    a = Int32Array(1)
    tok = _TestCancelToken()

    def victim():
        tok.install()
        try:
            return atomics.wait(a, 0, 0, 10)
        finally:
            tok.uninstall()

    t = ReThread(victim)
    t.start()
    wait_until(lambda: atomics._waiters(a, 0) == 1)
    tok.fire()
    with pytest.raises(ringport.WorkerTerminated):
        t.join()
    assert atomics._waiters(a, 0) == 0


@needs_subinterpreters
def test_wait_in_subinterpreter_notify_from_main():
    a = Int32Array(1)
    tok = _export(a)
    sub = run_in_subinterpreter(f"""
from ringport import atomics
from ringport._core import _import
a = _import({tok})
r = atomics.wait(a, 0, 0, 10)
assert r == "ok", r
atomics.store(a, 0, 7)
""")
    wait_until(lambda: atomics._waiters(a, 0) == 1, 20)
    assert atomics.notify(a, 0) == 1
    sub.join(30)
    assert a[0] == 7


def test_ctrl_c_interrupts_wait():
    code = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        sys.path.insert(0, {SRC_DIR!r})
        from ringport import Int32Array, atomics
        a = Int32Array(1)
        main = threading.get_ident()
        threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT)).start()
        t0 = time.monotonic()
        try:
            atomics.wait(a, 0, 0, 30)
        except KeyboardInterrupt:
            dt = time.monotonic() - t0
            assert atomics._waiters(a, 0) == 0
            print("interrupted", round(dt, 2))
            sys.exit(0 if dt < 3 else 3)
        sys.exit(2)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "interrupted" in p.stdout


# ---------------------------------------------------------------- wait_async

def test_wait_async():
    a = Int32Array(1)

    async def main():
        assert await atomics.wait_async(a, 0, 1) == "not-equal"
        assert await atomics.wait_async(a, 0, 0, 0) == "timed-out"
        assert await atomics.wait_async(a, 0, 0, 0.02) == "timed-out"
        # registered at the call: a notify before the await counts
        fut = atomics.wait_async(a, 0, 0, 5)
        assert atomics._waiters(a, 0) == 1
        assert atomics.notify(a, 0) == 1
        assert await fut == "ok"
        # woken from another thread while the loop keeps running
        fut = atomics.wait_async(a, 0, 0, 5)
        threading.Timer(0.02, atomics.notify, (a, 0)).start()
        ticks = 0
        while not fut.done():
            ticks += 1
            await asyncio.sleep(0.001)
        assert await fut == "ok" and ticks > 1
        # a thread waiter and an async waiter are both counted, FIFO
        fut = atomics.wait_async(a, 0, 0, 5)
        t = ReThread(atomics.wait, a, 0, 0, 5)
        t.start()
        wait_until(lambda: atomics._waiters(a, 0) == 2)
        assert atomics.notify(a, 0, 1) == 1
        assert await fut == "ok"
        assert atomics.notify(a, 0) == 1 and t.join() == "ok"
        # cancelling the future removes the waiter
        fut = atomics.wait_async(a, 0, 0, 5)
        fut.cancel()
        await asyncio.sleep(0)
        assert atomics._waiters(a, 0) == 0
        with pytest.raises(TypeError):
            atomics.wait_async(Float64Array(1), 0, 0)

    asyncio.run(main())
    assert atomics._waiters(a, 0) == 0


def test_wait_async_needs_a_running_loop():
    with pytest.raises(RuntimeError):
        atomics.wait_async(Int32Array(1), 0, 0)


# ---------------------------------------------------------------- vector forms

def test_add_at():
    a = Int32Array(4)
    atomics.add_at(a, [0, 1, 1, 3], [1, 2, 3, 4])
    assert a == [1, 5, 0, 4]
    atomics.add_at(a, (2, 2), 10)                    # scalar broadcast
    assert a == [1, 5, 20, 4]
    f = Float64Array(3)
    atomics.add_at(f, [0, 0, 2], [0.5, 0.25, 1])
    assert f == [0.75, 0.0, 1.0]
    atomics.add_at(f, Int32Array([1, 1]), Float64Array([1.5, 1.5]))   # buffers
    assert f[1] == 3.0
    atomics.add_at(a, [], [])


def test_add_at_errors_touch_nothing():
    a = Int32Array(4)
    with pytest.raises(IndexError):
        atomics.add_at(a, [0, 4], 1)
    with pytest.raises(IndexError):
        atomics.add_at(a, [0, -1], 1)
    with pytest.raises(ValueError):
        atomics.add_at(a, [0, 1], [1])
    with pytest.raises(TypeError):
        atomics.add_at(a, [0, 1.0], 1)
    with pytest.raises(TypeError):
        atomics.add_at(a, [0], [1.5])
    with pytest.raises(TypeError):
        atomics.add_at(a, [0, 1], Float64Array([1, 2]))
    with pytest.raises(OverflowError):
        atomics.add_at(a, [0, 1], [1, 2**40])
    with pytest.raises(IndexError):
        atomics.add_at(a, Int32Array([0, 9]), 1)
    assert a == [0, 0, 0, 0]


def test_add_at_contended_histogram():
    h = Int32Array(16)
    idx = [k % 16 for k in range(4000)]

    def work(i, barrier):
        barrier.wait()
        for _ in range(5):
            atomics.add_at(h, idx, 1)

    for t in start_threads(work, 3):
        t.join(60)
    assert h == [3 * 5 * 250] * 16


@needs_numpy
def test_add_at_numpy():
    h = Float64Array(8)
    idx = np.arange(1000) % 8
    atomics.add_at(h, idx, np.full(1000, 0.5))
    assert h == [62.5] * 8
    atomics.add_at(np.frombuffer(h.buffer), np.array([0], dtype=np.int16), 0.5)
    assert h[0] == 63.0


def test_load_all_and_fill():
    a = Int16Array([1, -2, 3])
    assert atomics.load_all(a) == [1, -2, 3]
    atomics.fill(a, 7)
    assert a == [7, 7, 7]
    with pytest.raises(OverflowError):
        atomics.fill(a, 2**20)
    assert a == [7, 7, 7]
    f = Float32Array(2)
    atomics.fill(f, 0.5)
    assert atomics.load_all(memoryview(f)) == [0.5, 0.5]


@pytest.mark.stress
def test_stress_wait_notify_many_rounds():
    _ping_pong(20000, 120)
