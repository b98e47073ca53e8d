"""The typed arrays' atomic methods (arr.add(i, v) ...): the same results, checks and errors as
the ringport.atomics functions, exact under contention, and bound as builtin methods (a call
passes the array borrowed, so it writes no shared reference count)."""
import gc
import math
import struct
import types

import pytest

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

from ringport._core import _export

from conftest import needs_subinterpreters, run_in_subinterpreter, start_threads

INT_TYPES = [(Int8Array, 8, True), (Uint8Array, 8, False), (Int16Array, 16, True),
             (Uint16Array, 16, False), (Int32Array, 32, True), (Uint32Array, 32, False),
             (BigInt64Array, 64, True), (BigUint64Array, 64, False)]
FLOAT_TYPES = [Float32Array, Float64Array]
ALL_TYPES = [t[0] for t in INT_TYPES] + FLOAT_TYPES
int_ids = [t[0].__name__ for t in INT_TYPES]
METHODS = ["load", "store", "add", "sub", "and_", "or_", "xor", "exchange", "compare_exchange"]


def wrap(v, bits, signed):
    v &= (1 << bits) - 1
    if signed and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


def outcome(fn, *args):
    """fn(*args) as ("ok", result) or ("raised", exception type)."""
    try:
        return "ok", fn(*args)
    except Exception as e:
        return "raised", type(e)


def test_every_element_function_has_a_method_of_the_same_name():
    for cls in ALL_TYPES:
        a = cls(1)
        for name in METHODS:
            assert callable(getattr(atomics, name))
            bound = getattr(a, name)
            # a builtin method: calling it passes the array borrowed; a bound Python-level
            # function would take a reference to the array (and the function) on every call
            assert type(bound) is types.BuiltinMethodType, name
            assert bound.__self__ is a
    assert Int32Array.add.__doc__.startswith("add(self, index, value, /)\n")
    assert Int32Array.compare_exchange.__doc__.startswith(
        "compare_exchange(self, index, expected, replacement, /)\n")


@pytest.mark.parametrize("cls, bits, signed", INT_TYPES, ids=int_ids)
def test_integer_methods_match_the_functions(cls, bits, signed):
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    lo = -(1 << (bits - 1)) if signed else 0
    # operands on both sides of every fast-path boundary: the element range, CPython's one-digit
    # ints (2**30), the 64-bit range; plus bools and other __index__ objects
    values = sorted({0, 1, 5, 12, 0b1100, hi, hi + 1, lo, lo - 1, 2**30 - 1, 2**30, -2**30,
                     -2**30 - 1, 2**63 - 1, 2**63, 2**64, -2**63, -2**63 - 1})
    values += [True, 1.0, "1", None]
    a, b = cls(3), cls(3)
    for name in METHODS:
        fn, meth = getattr(atomics, name), getattr(b, name)
        for v in values:
            for index in (0, 1, 2, 3, -1, 2**40, True):
                args = (index,) if name == "load" else \
                    (index, v, v) if name == "compare_exchange" else (index, v)
                got = outcome(meth, *args)
                want = outcome(fn, a, *args)
                assert got == want, (name, args)
                assert b.tolist() == a.tolist(), (name, args)
            if name == "compare_exchange":
                old = atomics.load(a, 1)
                assert outcome(b.compare_exchange, 1, old, v) == \
                    outcome(atomics.compare_exchange, a, 1, old, v)
                assert b.tolist() == a.tolist()
    # the arithmetic wraps like the functions'
    b.store(0, hi)
    assert b.add(0, 1) == hi and b[0] == wrap(hi + 1, bits, signed)
    b.store(0, lo)
    assert b.sub(0, 1) == lo and b[0] == wrap(lo - 1, bits, signed)


@pytest.mark.parametrize("cls", FLOAT_TYPES)
def test_float_methods(cls):
    a = cls(2)
    assert a.store(0, 1.5) == 1.5
    assert a.add(0, 0.25) == 1.5 and a[0] == 1.75
    assert a.sub(0, 1) == 1.75 and a[0] == 0.75
    assert a.exchange(0, 2) == 0.75 and a[0] == 2.0
    assert a.load(0) == 2.0 and type(a.load(0)) is float
    assert a.compare_exchange(0, 3.0, 4.0) == 2.0 and a[0] == 2.0
    assert a.compare_exchange(0, 2, 4.0) == 2.0 and a[0] == 4.0
    a.store(1, 0.0)
    assert a.compare_exchange(1, -0.0, 5.0) == 0.0 and a[1] == 0.0     # bit patterns
    a.store(1, math.nan)
    assert math.isnan(a.compare_exchange(1, math.nan, 6.0)) and a[1] == 6.0
    for name in ("and_", "or_", "xor"):
        with pytest.raises(TypeError, match=rf"^{cls.__name__}\.{name} is not defined for "):
            getattr(a, name)(0, 1)
    with pytest.raises(TypeError):
        a.add(0, "1")
    assert a.tolist() == [4.0, 6.0]
    if cls is Float32Array:
        r = struct.unpack("f", struct.pack("f", 0.1))[0]
        assert a.store(0, 0.1) == r
        assert a.compare_exchange(0, 0.1, 1.0) == r and a[0] == 1.0


def test_errors_name_the_method_and_touch_nothing():
    a = Int32Array([1, 2])
    for bad in (2, -1, 2**30, 2**70):
        with pytest.raises(IndexError, match=rf"^Int32Array\.add: index {bad} out of range "
                                             rf"for length 2$"):
            a.add(bad, 1)
    with pytest.raises(TypeError, match=r"^Int32Array\.load: index must be an int, not float$"):
        a.load(1.0)
    with pytest.raises(TypeError):
        a.compare_exchange("0", 1, 2)
    with pytest.raises(OverflowError):
        a.add(0, 2**31)
    with pytest.raises(OverflowError):
        a.compare_exchange(0, 1, -2**31 - 1)
    with pytest.raises(TypeError):
        a.store(0, 1.0)
    with pytest.raises(TypeError):
        a.add(0)                        # too few
    with pytest.raises(TypeError):
        a.add(0, 1, 2)                  # too many
    with pytest.raises(TypeError):
        a.add(index=0, value=1)         # positional only, as the functions
    with pytest.raises(TypeError):
        Int32Array.add([1], 0, 1)      # the unbound method checks self
    assert a == [1, 2]

    class Counter(Int32Array):
        pass

    c = Counter(1)
    with pytest.raises(IndexError, match=r"^Counter\.add: index 1 out of range"):
        c.add(1, 1)
    assert c.add(0, 3) == 0 and c.load(0) == 3


def test_uninitialized_array_raises_as_the_functions_do():
    for cls in (Int32Array, Float64Array):
        a = cls.__new__(cls)
        for name in METHODS:
            args = (0,) if name == "load" else (0, 1, 1) if name == "compare_exchange" else (0, 1)
            got = outcome(getattr(a, name), *args)
            assert got == outcome(getattr(atomics, name), a, *args) == ("raised", IndexError)


def test_views_and_growable_buffers():
    s = SharedArrayBuffer(16, max_byte_length=32)
    whole = Int32Array(s)                  # tracks the buffer's length
    part = whole.subarray(1, 3)
    assert part.add(1, 7) == 0 and whole[2] == 7
    with pytest.raises(IndexError):
        part.add(2, 1)
    add = whole.add
    with pytest.raises(IndexError):
        add(4, 1)
    s.grow(32)
    assert add(7, 5) == 0 and whole[7] == 5


def test_a_bound_method_keeps_its_array_alive():
    add = Int32Array(1).add
    gc.collect()
    assert [add(0, 2) for _ in range(3)] == [0, 2, 4]
    assert add.__self__.load(0) == 6


# ---------------------------------------------------------------- contention

N = 20000


def _bound_adder(i, barrier, arr, value, n):
    add = arr.add           # bound in the thread that calls it, as the docs advise
    barrier.wait()
    for _ in range(n):
        add(0, value)


@pytest.mark.parametrize("cls, bits, signed", INT_TYPES, ids=int_ids)
def test_contended_method_adds_are_exact(cls, bits, signed):
    a = cls(1)
    for t in start_threads(_bound_adder, 3, a, 1, N):
        t.join(60)
    assert a[0] == wrap(3 * N, bits, signed)


@pytest.mark.parametrize("cls", FLOAT_TYPES)
def test_contended_float_method_adds_are_exact(cls):
    a = cls(1)
    for t in start_threads(_bound_adder, 2, a, 0.5, N):
        t.join(60)
    assert a[0] == float(N)


def test_contended_methods_shared_and_unbound():
    """One bound method shared by every thread, and arr.add(...) looked up on each call: slower
    forms, still exact; mixed with the functions on the same element."""
    a = BigInt64Array(1)
    shared_sub = a.sub

    def work(i, barrier):
        barrier.wait()
        for _ in range(N):
            if i == 0:
                a.add(0, 3)
            elif i == 1:
                shared_sub(0, 1)
            else:
                atomics.add(a, 0, 2**40)

    for t in start_threads(work, 3):
        t.join(60)
    assert a[0] == N * (3 - 1 + 2**40)


def test_contended_compare_exchange_and_bitwise_methods():
    a = Int32Array(1)
    m = Uint32Array(1)

    def work(i, barrier):
        load, cas, or_, xor = a.load, a.compare_exchange, m.or_, m.xor
        barrier.wait()
        for k in range(N // 2):
            while True:
                old = load(0)
                if cas(0, old, old + 1) == old:
                    break
            or_(0, 1 << ((k + i) % 32))
        barrier.wait()              # every or_ done before the xors
        for _ in range(1001):
            xor(0, 0xFF)

    for t in start_threads(work, 2):
        t.join(60)
    assert a[0] == N
    assert m[0] == 0xFFFFFFFF        # every bit set by or_; an even number of xors of 0xFF


@needs_subinterpreters
def test_contended_methods_with_a_subinterpreter():
    """The methods of an array decoded in another interpreter (its own types), against this
    interpreter's, on the same memory; their errors there as here."""
    a = Int32Array(1)
    f = Float64Array(1)
    tok = _export([a, f])
    sub = run_in_subinterpreter(f"""
from ringport._core import _import
a, f = _import({tok})
add, fadd = a.add, f.add
for _ in range({N}):
    add(0, 1)
    fadd(0, 0.5)
try:
    a.add(1, 1)
except IndexError as e:
    assert str(e) == "Int32Array.add: index 1 out of range for length 1", e
else:
    raise AssertionError("no IndexError")
""")
    add, fadd = a.add, f.add
    for _ in range(N):
        add(0, 1)
        fadd(0, 0.5)
    sub.join(60)
    assert a[0] == 2 * N and f[0] == float(N)
