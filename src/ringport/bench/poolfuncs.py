"""The tasks of the pool benchmarks, one copy for every executor: module-level functions of an
importable module, so that a process or subinterpreter worker (ringport's, ProcessPoolExecutor's,
InterpreterPoolExecutor's, multiprocessing.Pool's, loky's) imports them by name.

This module must import in a subinterpreter: nothing but the stdlib, and only on demand.
"""


def noop(x):
    """The no-op task: its argument back."""
    return x


def spin(n):
    """The CPU-bound task: n rounds of a pure-Python loop (the runner calibrates n to about
    1 ms); returns a value that depends on every round, checked against spin_result(n)."""
    c = 0
    for i in range(n):
        c = (c + i * i) & 0xFFFF
    return c


def spin_result(n):
    """What spin(n) returns, by a closed form (the sum of squares below n, modulo 2**16)."""
    return ((n - 1) * n * (2 * n - 1) // 6) & 0xFFFF


def square(x):
    """The map benchmark's small item."""
    return x * x


def who(n):
    """Warm-up: spin a while, then say which worker ran it (process, interpreter, thread)."""
    import os
    import threading
    spin(n)
    try:
        from concurrent import interpreters
        interp = interpreters.get_current().id
    except ImportError:
        interp = 0
    return os.getpid(), interp, threading.get_ident()
