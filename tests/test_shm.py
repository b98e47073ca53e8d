"""SharedArrayBuffer and typed arrays: construction, views, growth, buffers, sharing."""
import dataclasses
import gc
import pickle
import struct

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
)
from ringport._core import _export, _import

from conftest import needs_subinterpreters, run_in_subinterpreter

try:
    import numpy as np
except ImportError:
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")

# (class, struct format, itemsize, lowest, highest) per element type
TYPES = [
    (Int8Array, "b", 1, -(2**7), 2**7 - 1),
    (Uint8Array, "B", 1, 0, 2**8 - 1),
    (Int16Array, "h", 2, -(2**15), 2**15 - 1),
    (Uint16Array, "H", 2, 0, 2**16 - 1),
    (Int32Array, "i", 4, -(2**31), 2**31 - 1),
    (Uint32Array, "I", 4, 0, 2**32 - 1),
    (BigInt64Array, "q", 8, -(2**63), 2**63 - 1),
    (BigUint64Array, "Q", 8, 0, 2**64 - 1),
    (Float32Array, "f", 4, None, None),
    (Float64Array, "d", 8, None, None),
]
INT_TYPES = [t for t in TYPES if t[3] is not None]
ids = [t[0].__name__ for t in TYPES]
int_ids = [t[0].__name__ for t in INT_TYPES]


# ---------------------------------------------------------------- SharedArrayBuffer

def test_sab_basics():
    s = SharedArrayBuffer(16)
    assert s.byte_length == 16 == len(s)
    assert not s.growable and s.max_byte_length == 16
    assert bytes(s) == bytes(16)
    assert repr(s) == "SharedArrayBuffer(16)"
    m = memoryview(s)
    assert not m.readonly and m.format == "B" and m.nbytes == 16
    m[3] = 7
    assert bytes(s)[3] == 7
    assert SharedArrayBuffer(0).byte_length == 0
    g = SharedArrayBuffer(4, max_byte_length=64)
    assert g.growable and g.max_byte_length == 64 and g.byte_length == 4
    assert repr(g) == "SharedArrayBuffer(4, max_byte_length=64)"


@pytest.mark.parametrize("args, kwargs, exc", [
    ((-1,), {}, ValueError),
    ((1.5,), {}, TypeError),
    (("3",), {}, TypeError),
    ((8,), {"max_byte_length": 4}, ValueError),
    ((8,), {"max_byte_length": -4}, ValueError),
    ((2**80,), {}, ValueError),
])
def test_sab_bad_arguments(args, kwargs, exc):
    with pytest.raises(exc):
        SharedArrayBuffer(*args, **kwargs)


def test_sab_grow_keeps_views():
    s = SharedArrayBuffer(8, max_byte_length=4096)
    fixed = Int32Array(s, 0, 2)
    tracking = Int32Array(s)
    m = memoryview(s)
    fixed[1] = 42
    s.grow(4096)
    assert s.byte_length == 4096
    assert len(fixed) == 2 and fixed[1] == 42
    assert len(tracking) == 1024 and tracking[1] == 42
    assert all(v == 0 for v in tracking[2:])          # new bytes are zero
    m[0] = 9                                          # old export still valid, same memory
    assert tracking[0] == 9
    assert memoryview(s).nbytes == 4096
    s.grow(4096)                                      # same length: fine
    with pytest.raises(ValueError):
        s.grow(8)                                     # smaller
    with pytest.raises(ValueError):
        s.grow(4097)                                  # beyond the maximum
    with pytest.raises(TypeError):
        SharedArrayBuffer(8).grow(16)                 # not growable (TypeError as in JS)
    with pytest.raises(TypeError):
        s.grow(1.0)


def test_sab_slice_copies_with_js_semantics():
    s = SharedArrayBuffer(10)
    memoryview(s)[:] = bytes(range(10))
    assert bytes(s.slice()) == bytes(range(10))
    assert bytes(s.slice(2, 5)) == bytes([2, 3, 4])
    assert bytes(s.slice(-3)) == bytes([7, 8, 9])
    assert bytes(s.slice(-3, -1)) == bytes([7, 8])
    assert bytes(s.slice(5, 2)) == b""
    assert bytes(s.slice(-100, 100)) == bytes(range(10))
    c = s.slice(0, 2)
    memoryview(c)[0] = 99
    assert bytes(s)[0] == 0 and not c.growable


def test_sab_not_picklable_nor_dumpable():
    s = SharedArrayBuffer(4)
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        pickle.dumps(Int32Array(s))
    with pytest.raises(ringport.DataCloneError):
        ringport.dumps(s)
    with pytest.raises(ringport.DataCloneError):
        ringport.dumps([Int32Array(s)])


# ---------------------------------------------------------------- typed arrays

@pytest.mark.parametrize("cls, fmt, size, lo, hi", TYPES, ids=ids)
def test_typed_array_constructors_and_buffer(cls, fmt, size, lo, hi):
    assert cls.BYTES_PER_ELEMENT == size
    a = cls(5)
    assert len(a) == a.length == 5 and a.byte_length == 5 * size and a.byte_offset == 0
    assert a.buffer.byte_length == 5 * size
    assert a.tolist() == [0] * 5
    b = cls([1, 2, 3])
    assert b == [1, 2, 3] and b.tolist() == [1, 2, 3] and list(b) == [1, 2, 3]
    assert repr(b) == (f"{cls.__name__}([1.0, 2.0, 3.0])" if lo is None
                       else f"{cls.__name__}([1, 2, 3])")
    s = SharedArrayBuffer(8 * size)
    v = cls(s, 2 * size, 3)
    assert v.byte_offset == 2 * size and len(v) == 3 and v.buffer is s
    v[0] = 7
    w = cls(s)
    assert len(w) == 8 and w[2] == 7
    m = memoryview(v)
    assert m.format == fmt and m.itemsize == size and m.shape == (3,) and not m.readonly
    assert struct.unpack_from(fmt, s, 2 * size)[0] == 7
    assert cls() == []
    assert cls(iter([4, 5])) == (4, 5)
    assert cls(b) == b
    k = cls(buffer=s, byte_offset=size, length=2)
    assert k.byte_offset == size and len(k) == 2


@pytest.mark.parametrize("cls, fmt, size, lo, hi", TYPES, ids=ids)
def test_typed_array_bad_construction(cls, fmt, size, lo, hi):
    s = SharedArrayBuffer(4 * size + (1 if size > 1 else 0))
    if size > 1:
        with pytest.raises(ValueError):
            cls(s, 1)                     # misaligned byte_offset
        with pytest.raises(ValueError):
            cls(s)                        # byte length not a multiple of the element size
    with pytest.raises(ValueError):
        cls(s, 0, 5)                      # longer than the buffer
    with pytest.raises(ValueError):
        cls(s, 8 * size)                  # offset past the end
    with pytest.raises(ValueError):
        cls(-1)
    with pytest.raises(TypeError):
        cls(1.5)
    with pytest.raises(TypeError):
        cls("abc")
    with pytest.raises(TypeError):
        cls(4, 4)                         # offset without a buffer
    with pytest.raises(TypeError):
        cls([1], length=1)
    with pytest.raises(TypeError):
        cls(s, 0.0)
    with pytest.raises(TypeError):
        cls(object())


@pytest.mark.parametrize("cls, fmt, size, lo, hi", TYPES, ids=ids)
def test_indexing(cls, fmt, size, lo, hi):
    a = cls([1, 2, 3, 4])
    assert a[0] == 1 and a[-1] == 4 and a[-4] == 1
    for bad in (4, -5, 2**70):
        with pytest.raises(IndexError):
            a[bad]
        with pytest.raises(IndexError):
            a[bad] = 1
    with pytest.raises(TypeError):
        a["0"]
    with pytest.raises(TypeError):
        a[1.0]
    a[-1] = 9
    assert a[3] == 9
    # slices are copies, over a new buffer
    c = a[1:3]
    assert type(c) is cls and c == [2, 3] and c.buffer is not a.buffer
    c[0] = 100
    assert a[1] == 2
    assert a[::-1] == [9, 3, 2, 1] and a[::2] == [1, 3]
    # subarray is a view, JS relative indices
    v = a.subarray(1, -1)
    assert v == [2, 3] and v.buffer is a.buffer and v.byte_offset == size
    v[0] = 50
    assert a[1] == 50
    assert a.subarray(-2) == [3, 9] and a.subarray(3, 1) == []
    # slice assignment converts everything first
    a[0:2] = [5, 6]
    assert a[:2] == [5, 6]
    with pytest.raises(ValueError):
        a[0:2] = [1]
    with pytest.raises(TypeError):
        a[0:2] = [1, "x"]
    assert a[:2] == [5, 6]
    with pytest.raises(Exception):
        del a[0]


@pytest.mark.parametrize("cls, fmt, size, lo, hi", INT_TYPES, ids=int_ids)
def test_integer_ranges_raise(cls, fmt, size, lo, hi):
    a = cls(2)
    a[0] = lo
    a[1] = hi
    assert a == [lo, hi]
    with pytest.raises(OverflowError):
        a[0] = lo - 1
    with pytest.raises(OverflowError):
        a[0] = hi + 1
    with pytest.raises(OverflowError):
        cls([hi + 1])
    with pytest.raises(TypeError):
        a[0] = 1.0
    with pytest.raises(TypeError):
        a[0] = "1"
    a[0] = True                     # bool is an int
    assert a == [1, hi]


def test_float_elements():
    f = Float32Array(2)
    f[0] = 0.1
    assert f[0] == struct.unpack("f", struct.pack("f", 0.1))[0]
    f[1] = 3                        # ints are fine for float arrays
    assert f[1] == 3.0 and isinstance(f[1], float)
    f[0] = 1e300                    # float32 overflows to inf, as in JavaScript
    assert f[0] == float("inf")
    with pytest.raises(TypeError):
        f[0] = "1.0"
    d = Float64Array([0.1, -0.0])
    assert d[0] == 0.1 and str(d[1]) == "-0.0"


def test_equality_and_hash():
    a = Int32Array([1, 2])
    assert a == [1, 2] and a == (1, 2) and a == Int32Array([1, 2]) and a == Float64Array([1, 2])
    assert a != [1, 2, 3] and a != [2, 1]
    assert (a == "ab") is False and a != 5
    with pytest.raises(TypeError):
        hash(a)
    long = Uint8Array(2000)
    assert repr(long).endswith(", ...])")


def test_length_tracking_view():
    s = SharedArrayBuffer(6, max_byte_length=64)     # not a multiple of 4: fine for tracking
    t = Int32Array(s, 4)
    assert len(t) == 0
    s.grow(10)
    assert len(t) == 1
    s.grow(64)
    assert len(t) == 15 and t.byte_length == 60
    assert memoryview(t).shape == (15,)


def test_views_keep_the_memory_alive():
    a = Int32Array(SharedArrayBuffer(16), 4)
    gc.collect()
    a[2] = 5
    m = memoryview(a)
    del a
    gc.collect()
    assert m.tolist() == [0, 0, 5]


# ---------------------------------------------------------------- sharing through messages

def test_post_sab_and_typed_arrays_shares_memory(channel):
    s = SharedArrayBuffer(32)
    i32 = Int32Array(s, 0, 4)
    f64 = Float64Array(s, 16, 2)
    channel.port1.post_message({"s": s, "views": [i32, f64], "again": s, "i32": i32})
    got = channel.port2.receive()
    rs, (ri, rf), again = got["s"], got["views"], got["again"]
    assert type(rs) is SharedArrayBuffer and rs is again and got["i32"] is ri
    assert type(ri) is Int32Array and type(rf) is Float64Array
    assert ri.buffer is rs and rf.buffer is rs            # one buffer object per block
    assert ri.byte_offset == 0 and len(ri) == 4 and rf.byte_offset == 16 and len(rf) == 2
    ri[1] = 123
    assert i32[1] == 123
    f64[1] = 2.5
    assert rf[1] == 2.5
    memoryview(rs)[0] = 7
    assert i32[0] == 7


def test_shared_memory_outlives_the_sender(channel):
    a = Int32Array([1, 2, 3])
    channel.port1.post_message(a)
    del a
    gc.collect()
    b = channel.port2.receive()
    assert b == [1, 2, 3]
    b[0] = 10
    assert b[0] == 10


def test_unread_message_releases_its_reference():
    ch = ringport.MessageChannel()
    a = Int32Array([5])
    ch.port1.post_message(a)
    ch.port1.close()
    del ch
    gc.collect()
    assert a == [5]                      # our reference is still good


def test_length_tracking_view_crosses(channel):
    s = SharedArrayBuffer(8, max_byte_length=32)
    channel.port1.post_message(Int32Array(s))
    t = channel.port2.receive()
    assert len(t) == 2
    s.grow(32)
    assert len(t) == 8 and t.buffer.byte_length == 32 and t.buffer.growable


def test_growable_buffer_grows_for_the_receiver(channel):
    s = SharedArrayBuffer(4, max_byte_length=16)
    channel.port1.post_message(s)
    r = channel.port2.receive()
    r.grow(16)
    assert s.byte_length == 16 and r.max_byte_length == 16


# ---------------------------------------------------------------- numpy

@needs_numpy
def test_numpy_zero_copy():
    s = SharedArrayBuffer(32)
    n = np.frombuffer(s, dtype=np.int32)
    n[3] = 11
    assert Int32Array(s)[3] == 11
    f = Float64Array([1.0, 2.0])
    arr = np.asarray(f)
    assert arr.dtype == np.float64 and arr.shape == (2,)
    arr[1] = 5.5
    assert f[1] == 5.5
    assert np.shares_memory(arr, np.frombuffer(f.buffer, dtype=np.float64))
    for cls, fmt, size, lo, hi in TYPES:
        a = np.asarray(cls(3))
        assert a.dtype == np.dtype(fmt) and a.flags.writeable


# ---------------------------------------------------------------- subinterpreters

@needs_subinterpreters
def test_typed_array_in_subinterpreter():
    a = Int32Array(4)
    f = Float64Array(1)
    tok = _export([a, f])
    t = run_in_subinterpreter(f"""
import ringport
from ringport._core import _import
a, f = _import({tok})
assert type(a).__name__ == "Int32Array" and a.buffer.byte_length == 16
a[0] = 41
ringport.atomics.add(a, 0, 1)
f[0] = 0.25
r = ringport.Uint8Array([1, 2])     # typed arrays need no numpy
assert r == [1, 2]
""")
    t.join(30)
    assert a[0] == 42 and f[0] == 0.25


@dataclasses.dataclass
class Holder:
    """Goes through the pickle fallback, with shared memory inside."""
    name: str
    buf: SharedArrayBuffer
    view: Int32Array
    more: list


def test_shared_memory_inside_a_pickled_object_stays_shared(channel):
    sab = SharedArrayBuffer(16)
    view = Int32Array(sab)
    h = Holder("h", sab, view, [view, Float64Array(sab, 8, 1)])
    channel.port1.post_message([h, sab])
    out, top = channel.port2.receive(timeout=5)
    assert type(out) is Holder and out.name == "h"
    assert out.buf is top                     # one SharedArrayBuffer object per block
    assert out.view.buffer is out.buf and out.more[0] is out.view
    out.view[1] = 42                          # the receiver writes ...
    assert view[1] == 42                      # ... the sender sees it: shared, not copied
    out.more[1][0] = 2.5
    assert Float64Array(sab, 8, 1)[0] == 2.5


def test_shared_memory_inside_a_pickled_object_cannot_go_to_bytes():
    with pytest.raises(ringport.DataCloneError):
        ringport.dumps(Holder("h", SharedArrayBuffer(4), Int32Array(1), []))


def test_typed_array_base_class_refuses_construction():
    base = type(Int32Array(1)).__mro__[1]
    with pytest.raises(TypeError, match="element type"):
        base(4)
    with pytest.raises(TypeError):
        base(SharedArrayBuffer(8))
    raw = base.__new__(base)                  # never initialized: no memory to touch
    assert len(raw) == 0 and raw.tolist() == []
    for call in (lambda: raw[0:1], lambda: raw.subarray(0), lambda: memoryview(raw),
                 lambda: raw.__setitem__(slice(None), [])):
        with pytest.raises(ValueError, match="not initialized"):
            call()


@pytest.mark.parametrize("cls, fmt, size, lo, hi", TYPES, ids=ids)
def test_uninitialized_typed_array_is_safe(cls, fmt, size, lo, hi):
    raw = cls.__new__(cls)
    assert len(raw) == 0 and list(raw) == []
    with pytest.raises(ValueError):
        raw.subarray(0)
    with pytest.raises(ValueError):
        memoryview(raw)


def test_subclass_of_a_typed_array_keeps_its_element_type():
    class Mine(Int16Array):
        pass
    m = Mine([1, -2])
    assert m.BYTES_PER_ELEMENT == 2 and memoryview(m).format == "h"
    assert isinstance(m, Int16Array) and m.tolist() == [1, -2]


def forget(x):
    """Unpickling calls this with a SharedArrayBuffer and drops it."""
    return "forgotten"


class DropsItsBuffer:
    def __init__(self, sab):
        self.sab = sab

    def __reduce__(self):
        return (forget, (self.sab,))


def test_buffer_dropped_by_unpickled_code_is_still_valid_later_in_the_message(channel):
    sab = SharedArrayBuffer(8)
    channel.port1.post_message([DropsItsBuffer(sab), sab, Int8Array(sab)])
    gone, again, view = channel.port2.receive(timeout=5)
    gc.collect()
    assert gone == "forgotten"
    assert type(again) is SharedArrayBuffer and again.byte_length == 8 and view.buffer is again
    view[0] = 9
    assert Int8Array(sab)[0] == 9
