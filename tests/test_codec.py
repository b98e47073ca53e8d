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
    out = loads(dumps(v))
    assert type(out) is type(v)
    if isinstance(v, BaseException):
        assert out.args == v.args
    else:
        assert out == v


def test_pickled_object_shared_identity():
    f = fractions.Fraction(1, 7)
    out = loads(dumps([f, f]))
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
