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

The one-element operations are also methods of the typed arrays, with the same names, checks
and errors: ``arr.add(i, v)`` is ``add(arr, i, v)``, likewise ``load``, ``store``, ``sub``,
``and_``, ``or_``, ``xor``, ``exchange`` and ``compare_exchange``.  For hot loops, bind the
method once in the thread that calls it::

    add = arr.add
    for _ in range(n):
        add(0, 1)

A call of a bound method passes the array borrowed; on a free-threaded build it then writes no
reference count that another thread also writes (``add(arr, ...)`` and ``arr.add(...)`` take a
reference to ``arr`` on every call, an atomic operation when other threads use it too).
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
