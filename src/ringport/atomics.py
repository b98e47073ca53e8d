"""JavaScript's ``Atomics`` for ringport's typed arrays and any writable buffer.

Every function takes ``arr`` (a typed array such as ``Int32Array``, or a writable 1-d buffer
with a matching struct format and alignment: a numpy int32 array over a SharedArrayBuffer, a
``memoryview(...).cast("i")``) and an element ``index`` (0 <= index < len(arr), else IndexError;
negative indices are refused, as in JavaScript).  Errors never touch memory: wrong types and
read-only or unsupported buffers raise TypeError, misaligned buffers ValueError.

Values: integer elements take ints in the element type's range, otherwise OverflowError (an
operand is never silently wrapped); the arithmetic itself wraps modulo 2**bits, as in C and
JavaScript.  Float elements (Float32Array, Float64Array) support load, store, exchange,
compare_exchange (comparing bit patterns: -0.0 != 0.0, NaN == NaN with the same payload), add
and sub (compare-and-swap loops); bitwise operations on them raise TypeError.  Every operation
is sequentially consistent.

wait/notify work on Int32Array and BigInt64Array (int32/int64 buffers) and meet across threads,
workers and interpreters of the process, and C/Cython code using ``ringport/atomics.h``.
"""
from ringport._core import (
    _waiters,
    add,
    add_at,
    and_,
    compare_exchange,
    exchange,
    fill,
    is_lock_free,
    load,
    load_all,
    notify,
    or_,
    pause,
    store,
    sub,
    wait,
    wait_async,
    xor,
)

__all__ = [
    "add",
    "add_at",
    "and_",
    "compare_exchange",
    "exchange",
    "fill",
    "is_lock_free",
    "load",
    "load_all",
    "notify",
    "or_",
    "pause",
    "store",
    "sub",
    "wait",
    "wait_async",
    "xor",
]
