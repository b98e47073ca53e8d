"""No class reachable from ringport may crash the interpreter when constructed or called with any
arguments: bad arguments raise a Python exception.

Every class reachable from ``ringport`` and ``ringport._core`` (their attributes, and the
__mro__ and __subclasses__() of each) is constructed with a set of argument shapes, also
through ``cls.__new__(cls)`` without __init__; each public method of what was built is then
called with the same shapes.  The probes run in a child process (this file run as a script),
so a crash fails the test naming the probe instead of killing pytest; a crashed child is
restarted after the probe that crashed, so one run reports every crash.
"""
import os
import signal
import subprocess
import sys

import pytest

ARGS = [
    (), (0,), (1,), (-1,), (7,), (2**31,), (2**63,), (2**64 + 1,), (-(2**63) - 1,), (None,),
    (b"",), (b"\x00" * 16,), (bytearray(8),), (memoryview(b"abcd"),), ("x",), (1.5,),
    (float("nan"),), ([1, 2],), ((),), ({},), (object(),), (0, 0), (-1, -1), (None, None),
    (1, 2, 3), (0, 2**63, None),
]
METHOD_ARGS = [(), (0,), (-1,), (2**64 + 1,), (None,), (b"",), (memoryview(b"abcd"),),
               ("x",), (1, 2, 3)]
KWARGS = [{"timeout": -1}, {"nonsense": 1}]
# methods that wait: a probe that blocks is fine; the alarm ends it (waits here come back for
# signals at least every 50 ms)
ALARM_S = 0.3
SKIP_METHODS = {
    "__init_subclass__", "__subclasshook__", "__class_getitem__", "__getattribute__",
    "__setattr__", "__delattr__", "__dir__", "__sizeof__", "__format__", "__reduce_ex__",
    "__getstate__", "__new__", "__init__",
}


def reachable_classes():
    import ringport
    import ringport._core

    seen = {}
    todo = []
    for mod in (ringport, ringport._core):
        for name in dir(mod):
            obj = getattr(mod, name, None)
            if isinstance(obj, type):
                todo.append(obj)
    while todo:
        cls = todo.pop()
        if cls in seen.values() or not (cls.__module__ or "").startswith("ringport"):
            continue
        seen[f"{cls.__module__}.{cls.__qualname__}"] = cls
        todo.extend(cls.__mro__)
        try:
            todo.extend(cls.__subclasses__())
        except TypeError:
            pass
    return dict(sorted(seen.items()))


def probes():
    """(label, thunk) for every probe, in a fixed order."""
    out = []
    groups = {}
    for name, cls in reachable_classes().items():
        # classes that differ only in a table row (the typed arrays) share their methods: a
        # few of them are enough for the method probes
        group = (cls.__mro__[1], frozenset(cls.__dict__) - {"__doc__", "BYTES_PER_ELEMENT"})
        groups[group] = groups.get(group, 0) + 1
        for args in ARGS:
            out.append((f"{name}{args!r}", lambda cls=cls, args=args: cls(*args)))
        out.append((f"{name}.__new__", lambda cls=cls: cls.__new__(cls)))
        for kw in KWARGS:
            out.append((f"{name}(**{kw})", lambda cls=cls, kw=kw: cls(**kw)))
        if groups[group] > 3 or issubclass(cls, BaseException):
            continue    # exceptions: plain Python classes, their methods are the stdlib's
        for meth in sorted(set(dir(cls)) - SKIP_METHODS):
            if meth.startswith("_") and not (meth.startswith("__") and meth.endswith("__")):
                continue
            for how in ("built", "raw"):
                for args in METHOD_ARGS:
                    out.append((f"{name}[{how}].{meth}{args!r}",
                                lambda cls=cls, how=how, meth=meth, args=args:
                                call_method(cls, how, meth, args)))
    return out


_instances = {}


def instance(cls, how):
    key = (cls, how)
    if key not in _instances:
        obj = None
        if how == "raw":
            try:
                obj = cls.__new__(cls)
            except Exception:
                pass
        else:
            for args in [(8,), (), (b"\x00" * 8,), ([1, 2],)]:
                try:
                    obj = cls(*args)
                    break
                except Exception:
                    pass
        _instances[key] = obj
    return _instances[key]


def call_method(cls, how, meth, args):
    obj = instance(cls, how)
    if obj is None:
        return
    attr = getattr(obj, meth, None)
    if callable(attr):
        attr(*args)


class Blocked(BaseException):
    pass


def child(start):
    armed = [False]

    def on_alarm(signum, frame):
        if armed[0]:   # only while a probe runs: never in the bookkeeping around it
            armed[0] = False
            raise Blocked
    signal.signal(signal.SIGALRM, on_alarm)
    all_probes = probes()
    print(f"N {len(all_probes)}", flush=True)
    for i in range(start, len(all_probes)):
        label, thunk = all_probes[i]
        print(f"P {i} {label}", flush=True)
        try:
            armed[0] = True
            signal.setitimer(signal.ITIMER_REAL, ALARM_S)
            try:
                thunk()
            finally:
                armed[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except (Exception, Blocked):   # (a slow probe, e.g. 2 GiB under ASan, is Blocked)
            pass
    print("D", flush=True)
    sys.stdout.flush()
    os._exit(0)     # workers or threads a probe may have started do not matter here


def run_probes():
    crashes = []
    start = 0
    total = None
    while True:
        proc = subprocess.run([sys.executable, "-X", "faulthandler", __file__, str(start)],
                              capture_output=True, text=True, timeout=600)
        last = None
        done = False
        for line in proc.stdout.splitlines():
            if line.startswith("N "):
                total = int(line[2:])
            elif line.startswith("P "):
                last = line[2:]
            elif line == "D":
                done = True
        if done and proc.returncode == 0:
            return total, crashes
        if last is None:
            raise AssertionError(f"the probing child failed to start:\n{proc.stderr[-3000:]}")
        idx, label = last.split(" ", 1)
        why = (signal.Signals(-proc.returncode).name if proc.returncode < 0
               else f"exit status {proc.returncode}")
        crashes.append(f"{label}: {why}\n{proc.stderr[-1500:]}")
        start = int(idx) + 1


@pytest.mark.skipif(sys.platform == "win32", reason="SIGALRM")
def test_no_class_crashes_when_constructed_or_called():
    total, crashes = run_probes()
    assert total and total > 1000
    assert not crashes, f"{len(crashes)} probe(s) crashed the interpreter:\n\n" + "\n\n".join(
        crashes)


def test_the_walk_reaches_the_internal_classes():
    import ringport

    names = reachable_classes()
    base = type(ringport.Int32Array(1)).__mro__[1]
    assert f"{base.__module__}.{base.__qualname__}" in names
    assert "ringport._core.MessagePort" in names and "ringport._core.SharedArrayBuffer" in names


if __name__ == "__main__":
    child(int(sys.argv[1]))
