"""The structured-clone codec: exact round trips, identity, errors, untrusted input."""
import collections
import decimal
import enum
import fractions
import math
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ringport
from ringport import DataCloneError, DecodeError, dumps, loads


def same(a, b):
    """Equal in type and value, recursively (floats bitwise: nan, -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and (a == b or (a != a and b != b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items()) and list(a) == list(b)
    return a == b


SCALARS = [
    None, True, False, 0, 1, -1, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**200, -(3**150),
    0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), 1e-310,
    complex(1, -2), complex(float("nan"), -0.0),
    "", "a", "ascii text", "héllo", "日本語", "\U0001F600 emoji", "\ud800 lone surrogate", "\x00\x7f\x80\xff",
    b"", b"\x00\xff" * 10, bytearray(b"abc"), bytearray(),
]


@pytest.mark.parametrize("v", SCALARS, ids=repr)
def test_scalars_round_trip(v):
    assert same(loads(dumps(v)), v)


@pytest.mark.parametrize("v", [
    [], (), {}, set(), frozenset(), [1, [2, [3]]], (1, (2,)), {"a": [1, {"b": (2, 3)}]},
    {1, "x", (1, 2)}, frozenset({1, frozenset({2})}), {(1, 2): "tuple key", 3.5: None, None: 1},
    {"task": "processData", "payload": [1, 2, 3, 4, 5]}, [SCALARS, tuple(SCALARS[:10])],
], ids=repr)
def test_containers_round_trip(v):
    out = loads(dumps(v))
    assert same(out, v) or out == v
    assert type(out) is type(v)


def test_dict_order_kept():
    d = {k: k for k in "zyxwvu"}
    assert list(loads(dumps(d))) == list("zyxwvu")


def test_shared_references_preserved():
    inner = [1, 2]
    ba = bytearray(b"x")
    d = {"k": 1}
    v = [inner, inner, (inner,), ba, ba, d, {"again": d}]
    out = loads(dumps(v))
    assert out[0] is out[1] is out[2][0]
    assert out[3] is out[4]
    assert out[5] is out[6]["again"]


def test_cycles_preserved():
    a = [1]
    a.append(a)
    out = loads(dumps(a))
    assert out[1] is out

    d = {}
    d["self"] = d
    out = loads(dumps(d))
    assert out["self"] is out

    lst = []
    t = (lst,)
    lst.append(t)
    out = loads(dumps(t))
    assert out[0][0] is out

    # nested tuples completing at the same position, both through the same cycle
    lst2 = []
    t2 = ((lst2,),)
    lst2.append(t2)
    out = loads(dumps(t2))
    assert out[0][0][0] is out


def test_deep_nesting_is_not_limited_by_the_c_stack():
    depth = 200_000
    root = cur = []
    for _ in range(depth):
        nxt = []
        cur.append(nxt)
        cur = nxt
    out = loads(dumps(root))
    n = 0
    while out:
        out = out[0]
        n += 1
    assert n == depth
    t = ()
    for _ in range(50_000):
        t = (t,)
    out = loads(dumps(t))
    for _ in range(50_000):
        out = out[0]
    assert out == ()


class Point(collections.namedtuple("Point", "x y")):
    pass


class Color(enum.IntEnum):
    RED = 1


class Sub(dict):
    pass


@pytest.mark.parametrize("v", [
    collections.OrderedDict(a=1), Point(1, 2), Color.RED, Sub(a=1), decimal.Decimal("1.10"),
    fractions.Fraction(1, 3), collections.Counter("hello"), range(3), ValueError("boom"),
], ids=repr)
def test_other_types_go_through_pickle_with_type_kept(v):
    out = loads(dumps(v), allow_pickle=True)
    assert type(out) is type(v)
    if isinstance(v, BaseException):
        assert out.args == v.args
    else:
        assert out == v


def test_pickled_object_shared_identity():
    f = fractions.Fraction(1, 7)
    out = loads(dumps([f, f]), allow_pickle=True)
    assert out[0] is out[1]


@pytest.mark.parametrize("bad", [lambda: 1, __import__("threading").Lock(), open(os.devnull)],
                         ids=["lambda", "lock", "file"])
def test_uncloneable_raises_dataclone_error_naming_the_type(bad):
    with pytest.raises(DataCloneError) as ei:
        dumps({"nested": [1, bad]})
    assert isinstance(ei.value, TypeError)
    assert type(bad).__name__ in str(ei.value)
    if hasattr(bad, "close"):
        bad.close()


def test_ports_cannot_be_dumped_to_bytes():
    ch = ringport.MessageChannel()
    with pytest.raises(DataCloneError):
        dumps(ch.port1)


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.complex_numbers()
    | st.text() | st.binary() | st.binary().map(bytearray)
    | st.characters(min_codepoint=0, max_codepoint=0x10FFFF).map(str),
    lambda children: st.lists(children) | st.lists(children).map(tuple)
    | st.dictionaries(st.text() | st.integers(), children)
    | st.frozensets(st.integers() | st.text()) | st.sets(st.integers() | st.text()),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_property_round_trip(v):
    assert same(loads(dumps(v)), v)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data):
    try:
        loads(data)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_truncated_or_corrupted_messages_raise_cleanly(v, data):
    blob = bytearray(dumps(v))
    if not blob:
        return
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(DecodeError):
        loads(bytes(blob[:cut]))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] = data.draw(st.integers(0, 255))
    try:
        loads(bytes(blob))
    except DecodeError:
        pass


@pytest.mark.parametrize("blob", [
    b"l\xff\xff\xff\xff\xff\xff\xff\xff\x7f",   # a huge count
    b"a\x05ab", b"u\x04\x01\x00\x00\x00" + b"\xff\xff\xff\xff",  # truncated, bad code point
    b"u\x03\x01a", b"R\x00", b"l\x01R\x05", b"Z", b"NN", b"H\x00", b"P\x01x\x00",
    b"i\x01", b"t\x01D\x01\x00", b"\x80",
])
def test_specific_bad_inputs(blob):
    with pytest.raises(DecodeError):
        loads(blob)


def test_non_ascii_bytes_in_ascii_string_rejected():
    with pytest.raises(DecodeError):
        loads(b"a\x02\xc3\xa9")




def _np():
    return pytest.importorskip("numpy")


@pytest.mark.parametrize("dtype", ["float64", "int8", "uint16", "complex128", "bool", "<U3", "datetime64[ns]"])
def test_numpy_arrays_keep_dtype_and_shape(dtype):
    np = _np()
    a = (np.arange(24) % 3).astype(dtype).reshape(2, 3, 4)
    out = loads(dumps(a))
    assert out.dtype == a.dtype and out.shape == a.shape
    assert (out == a).all()


def test_numpy_non_contiguous_arrives_as_contiguous_copy():
    np = _np()
    a = np.arange(100.0).reshape(10, 10)[::2, ::3]
    out = loads(dumps(a))
    assert out.shape == a.shape and (out == a).all()
    assert out.flags.c_contiguous or out.flags.f_contiguous


def test_numpy_fortran_order_kept():
    np = _np()
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    out = loads(dumps(a))
    assert (out == a).all()


def test_numpy_dtype_outside_the_plain_kinds_is_refused():
    np = _np()
    blob = bytearray(dumps(np.zeros(2, dtype="<i4")))
    assert b"<i4" in blob
    for ds in [b"(i4,", b"i4,i4", b"O", b"<i4)", b"[('a','i4')]", b"<M8[xs]", b"<f8[ns]"]:
        i = blob.index(b"<i4")
        bad = bytes(blob[:i - 1]) + bytes([len(ds)]) + ds + bytes(blob[i + 3:])
        with pytest.raises(DecodeError) as ei:
            loads(bad)
        assert type(ei.value) is DecodeError


def test_numpy_array_that_numpy_refuses_is_a_decode_error_chained_to_the_cause():
    np = _np()
    blob = dumps(np.zeros(3, dtype="<i4"))
    bad = blob.replace(b"C\x01\x03", b"C\x01\x05")      # a shape the data does not fill
    with pytest.raises(DecodeError) as ei:
        loads(bad)
    assert ei.value.__cause__ is not None


# ---------------------------------------------------------------------------- trust: pickle


class RunsCode:
    """Unpickling this runs a shell command (what a hostile message would do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class RaisesOnLoad:
    def __init__(self, exc):
        self.exc = exc

    def __reduce__(self):
        return (exec, (f"raise {self.exc}",))


def test_loads_does_not_unpickle_by_default(tmp_path):
    marker = tmp_path / "ran"
    blob = dumps({"x": [1, RunsCode(marker)]})
    with pytest.raises(DecodeError, match="allow_pickle"):
        loads(blob)
    assert not marker.exists()
    loads(blob, allow_pickle=True)          # trusted: the same bytes do run
    assert marker.exists()


def test_dumps_allow_pickle_false_refuses_what_needs_pickle():
    with pytest.raises(DataCloneError, match="allow_pickle"):
        dumps([1, fractions.Fraction(1, 3)], allow_pickle=False)
    assert loads(dumps([1, "x"], allow_pickle=False)) == [1, "x"]


@pytest.mark.parametrize("exc", ["SystemExit(3)", "KeyboardInterrupt"])
def test_exit_and_interrupt_from_a_pickle_never_escape_loads(exc):
    blob = dumps(RaisesOnLoad(exc))
    with pytest.raises(DecodeError):
        loads(blob)                          # nothing runs at all
    if exc.startswith("SystemExit"):
        # trusted pickle: the message still cannot end the program
        with pytest.raises(DecodeError) as ei:
            loads(blob, allow_pickle=True)
        assert isinstance(ei.value.__cause__, SystemExit)


def test_channel_allow_pickle_false(tmp_path):
    marker = tmp_path / "ran"
    ch = ringport.MessageChannel(allow_pickle=False)
    with pytest.raises(DataCloneError, match="allow_pickle"):
        ch.port1.post_message(fractions.Fraction(1, 3))
    ch.port1.post_message({"plain": [1, 2.5, "x"]})     # native values still travel
    assert ch.port2.receive(timeout=5) == {"plain": [1, 2.5, "x"]}
    # a lenient sender and a strict receiver: the pickle frame is refused, nothing runs
    lenient = ringport.MessageChannel()
    lenient.port2.allow_pickle = False
    lenient.port1.post_message([RunsCode(marker)])
    with pytest.raises(DecodeError, match="allow_pickle"):
        lenient.port2.receive(timeout=5)
    assert not marker.exists()
    lenient.port1.post_message("after")                   # the port stays usable
    assert lenient.port2.receive(timeout=5) == "after"
    for c in (ch, lenient):
        c.port1.close()


def test_channel_default_keeps_the_pickle_fallback():
    ch = ringport.MessageChannel()
    ch.port1.post_message(fractions.Fraction(1, 3))
    assert ch.port2.receive(timeout=5) == fractions.Fraction(1, 3)
    ch.port1.close()


def test_allow_pickle_false_travels_with_a_transferred_port():
    strict = ringport.MessageChannel(allow_pickle=False)
    carrier = ringport.MessageChannel()
    carrier.port1.post_message(strict.port2, [strict.port2])
    moved = carrier.port2.receive(timeout=5)
    assert moved.allow_pickle is False
    with pytest.raises(DataCloneError):
        moved.post_message(fractions.Fraction(1, 2))
    strict.port1.close()
    carrier.port1.close()


# ---------------------------------------------------------------------------- bounded decoding

def run_limited(code, budget_mb=256, timeout=60):
    """Run code in a child whose address space may grow by budget_mb at most (RLIMIT_AS)."""
    import subprocess
    import textwrap
    pre = textwrap.dedent(f"""
        import os, resource
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        import ringport
        from ringport import loads, DecodeError
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (vm + ({budget_mb} << 20), resource.RLIM_INFINITY))
    """)
    return subprocess.run([sys.executable, "-c", pre + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout)


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))
from fuzz_codec import pickle_frame, varint  # noqa: E402


# a 16-byte message whose pickle announces a 400 MiB bytearray, and one whose memo index makes
# the unpickler size its memo for 2**31 entries
PICKLE_BOMBS = [
    pickle_frame(b"\x80\x05\x96" + (400 << 20).to_bytes(8, "little") + b"."),
    pickle_frame(b"\x80\x05N" + b"r" + (2**31).to_bytes(4, "little") + b"."),
    pickle_frame(b"\x80\x05\x8e" + (2**40).to_bytes(8, "little") + b"."),
    pickle_frame(b"\x80\x05\x95" + (2**40).to_bytes(8, "little") + b"N."),
    pickle_frame(b"(p99999999999\n."),
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_pickle_bombs_are_refused_cheaply():
    r = run_limited(f"""
        import time
        for blob in {PICKLE_BOMBS!r}:
            assert len(blob) < 32
            for allow in (False, True):
                t = time.perf_counter()
                try:
                    loads(blob, allow_pickle=allow)
                except DecodeError:
                    pass
                else:
                    raise AssertionError("decoded")
                assert time.perf_counter() - t < 1.0
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


NESTED_HEADER_BOMB = """
def nested_header_bomb(kind, size):
    # nested container headers (4 bytes each) that each claim as many items as bytes remain
    k = (size - 1) // 4
    body = bytearray()
    for j in range(k):
        left = 4 * (k - j - 1)
        body += kind + bytes([0x80 | (left & 0x7F), 0x80 | ((left >> 7) & 0x7F), left >> 14])
    return b"\\x00" + bytes(body)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
@pytest.mark.parametrize("kind", [b"l", b"t", b"z"])
def test_container_headers_cannot_claim_more_than_the_input_holds(kind):
    # 48 KiB of such headers made the decoder take 2.3 GiB and 7 s
    r = run_limited(NESTED_HEADER_BOMB + f"""
import time
blob = nested_header_bomb({kind!r}, 48 * 1024)
t = time.perf_counter()
try:
    loads(blob)
except DecodeError:
    pass
assert time.perf_counter() - t < 0.5, time.perf_counter() - t
print("ok")
""", budget_mb=128)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_count_check_still_accepts_every_valid_shape():
    deep = []
    cur = deep
    for _ in range(100):
        nxt = [1, 2, (3, {4: frozenset({5})})]
        cur.append(nxt)
        cur = nxt
    assert loads(dumps(deep)) == deep
    assert loads(dumps([[], [[]], {}, (), ((),), set(), frozenset()])) == \
        [[], [[]], {}, (), ((),), set(), frozenset()]


def test_every_decoding_failure_is_a_decode_error():
    # an unhashable key made by the input: TypeError inside, DecodeError outside
    blob = b"\x00d\x01l\x00i" + (1).to_bytes(8, "little")
    with pytest.raises(DecodeError) as ei:
        loads(blob)
    assert isinstance(ei.value.__cause__, TypeError)


# ---- array.array, memoryview, bytearray: native, out of band when big (no pickle, no numpy)

import array  # noqa: E402

BIG = 1 << 17   # items: 1 MiB of float64, well above the out-of-band threshold


def post_and_receive(v):
    ch = ringport.MessageChannel()
    try:
        ch.port1.post_message(v)
        return ch.port2.receive(timeout=10)
    finally:
        ch.port1.close()
        ch.port2.close()


@pytest.mark.parametrize("tc", sorted(set(array.typecodes) - {"u"}))
@pytest.mark.parametrize("n", [0, 3, BIG])
@pytest.mark.parametrize("via", ["bytes", "port"])
def test_array_array_round_trips_with_its_typecode(tc, n, via):
    a = array.array(tc, "xé\U0001F600" * (n // 3 + 1) if tc == "w" else [(i % 100) for i in range(n)])
    del a[n:]
    b = loads(dumps(a, allow_pickle=False)) if via == "bytes" else post_and_receive(a)
    assert type(b) is array.array and b.typecode == tc and b == a


def test_array_array_does_not_go_through_pickle():
    # allow_pickle=False would refuse it if it did; the native form is short, too
    blob = dumps(array.array("d", [1.0, 2.0]), allow_pickle=False)
    assert blob[1:3] == b"Yd" and len(blob) < 30


def test_array_array_subclass_still_pickled_with_its_type():
    class Sub(array.array):
        pass
    globals()["Sub"] = Sub
    Sub.__qualname__ = "Sub"
    try:
        b = loads(dumps(Sub("i", [1, 2])), allow_pickle=True)
        assert type(b) is Sub and b == Sub("i", [1, 2])
    finally:
        del globals()["Sub"]


@pytest.mark.parametrize("via", ["bytes", "port"])
@pytest.mark.parametrize("make", [
    lambda: memoryview(b"abc"),                                       # readonly, 'B'
    lambda: memoryview(bytearray(b"abcdefgh")),                       # writable
    lambda: memoryview(bytearray(range(48))).cast("i", [3, 4]),       # 2-D
    lambda: memoryview(bytearray(range(8))).cast("d", []),            # 0-D
    lambda: memoryview(array.array("d", range(BIG))),                 # big: out of band
    lambda: memoryview(array.array("h", range(50))).toreadonly(),
    lambda: memoryview(bytes(range(100))).cast("c"),
    lambda: memoryview(bytearray(0)).cast("q"),                        # empty 1-D
    lambda: memoryview(bytearray(range(60))).cast("i")[1::3],         # strided
    lambda: memoryview(bytearray(range(60)))[::-2].toreadonly(),      # negative stride
    lambda: memoryview(array.array("d", range(BIG)))[::2],            # strided, big
])
def test_memoryview_round_trips_format_shape_readonly(make, via):
    m = make()
    b = loads(dumps(m, allow_pickle=False)) if via == "bytes" else post_and_receive(m)
    assert type(b) is memoryview
    assert (b.format, b.shape, b.readonly, b.itemsize) == (m.format, m.shape, m.readonly, m.itemsize)
    assert b.c_contiguous and b.tolist() == m.tolist()


def test_memoryview_arrives_as_a_copy():
    src = bytearray(b"abcd")
    b = post_and_receive(memoryview(src))
    src[0] = ord("z")
    assert bytes(b) == b"abcd"
    b[1] = ord("Y")     # writable, and not the sender's memory
    assert src == bytearray(b"zbcd")


def test_memoryview_other_formats_still_refused():
    import ctypes
    m = memoryview((ctypes.c_int32 * 2)())     # format '<i': not a native single-item code
    with pytest.raises(DataCloneError):
        dumps(m)
    try:
        import numpy
    except ImportError:
        pass
    else:   # a zero in a shape of two or more dimensions: memoryview.cast() cannot rebuild it
        with pytest.raises(DataCloneError):
            dumps(memoryview(numpy.zeros((0, 3))))
    released = memoryview(b"x")
    released.release()
    with pytest.raises(DataCloneError):
        dumps(released)


@pytest.mark.parametrize("n", [0, 5, 70000, 1 << 20])
def test_bytearray_round_trips_small_and_big(n):
    v = bytearray(os.urandom(n))
    for b in (loads(dumps(v)), post_and_receive(v)):
        assert type(b) is bytearray and b == v


def test_buffers_keep_identity_inside_a_message():
    a = array.array("d", range(BIG))
    m = memoryview(b"xyz")
    ba = bytearray(1 << 20)
    b = post_and_receive([a, m, ba, a, m, ba])
    assert b[0] is b[3] and b[1] is b[4] and b[2] is b[5]
    assert b[0] == a and b[1] == m and b[2] == ba


@pytest.mark.parametrize("blob", [
    b"\x00YZo\x00",                                    # unknown typecode
    b"\x00Y\x00o\x00",                                 # NUL typecode
    b"\x00Ydo\x03abc",                                 # not a whole number of items
    b"\x00Ydo\xff\xff\xff\xff\x0f",                    # length beyond the input
    b"\x00Yd",                                         # truncated
    b"\x00Ydh\x00",                                    # a block handle in bytes
    b"\x00M\x02<d\x00\x01\x01o\x08" + b"\x00" * 8,     # non-native format
    b"\x00M\x02ii\x00\x01\x01o\x08" + b"\x00" * 8,     # struct format
    b"\x00M\x00\x00\x01\x00o\x00",                     # empty format
    b"\x00M\x01d\x00\x02\x80\x80\x80\x80\x80\x80\x80\x80@\x80\x80\x80\x80\x80\x80\x80\x80@o\x00",
    b"\x00M\x01d\x00\x01\x02o\x08" + b"\x00" * 8,      # shape says 16 bytes, 8 there
    b"\x00M\x01B\x00\xff\xff\xff\xff\x0f\x01",         # ndim beyond the input
    b"\x00M\x01B\x00A" + b"\x01" * 65 + b"o\x01\x00",  # 65 dimensions
    b"\x00M\x01d\x00\x02\x00\x03o\x00",                # zero in a 2-D shape
    b"\x00M\x01B\x02\x01\x00o\x00",                    # readonly flag not 0/1
    b"\x00M\x01B\x00\x01\x01x\x00",                    # bad data tag
    b"\x00Xh\x00", b"\x00Xo\x05ab",                    # bytearray: handle in bytes, truncated
])
def test_bad_buffer_inputs_raise_decode_error(blob):
    with pytest.raises(DecodeError):
        loads(blob)


def test_decoding_a_huge_claimed_array_allocates_nothing_big():
    import tracemalloc
    tracemalloc.start()
    try:
        for blob in (b"\x00Ydo\xff\xff\xff\xff\x0f", b"\x00M\x01d\x00\x01\xff\xff\xff\x7fo\x00"):
            with pytest.raises(DecodeError):
                loads(blob)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_buffers_cross_every_worker_backend_both_ways(start_worker):
    """array.array and memoryview need neither numpy nor pickle, so they cross into a
    subinterpreter (where numpy does not load) and back with their types."""
    import workerfuncs
    w = start_worker(workerfuncs.echo)
    vals = [array.array("d", range(BIG)), array.array("i", [1, -2, 3]),
            memoryview(array.array("d", range(BIG))).toreadonly(),
            memoryview(bytearray(range(48))).cast("i", [3, 4]), bytearray(1 << 20)]
    for v in vals:
        w.post_message(v)
        b = w.receive(timeout=30)
        assert type(b) is type(v) and b == v
        if isinstance(v, memoryview):
            assert (b.format, b.shape, b.readonly) == (v.format, v.shape, v.readonly)
    w.terminate(10)
