# ringport.atomics: JavaScript's Atomics over typed arrays and writable buffers.
#
# The operations are the inline C11 ones of ringport/atomics.h, dispatched on the element type
# (csrc/rp_elem.h); wait/notify meet in the process-wide parking lot of csrc/rp_park.c (and, on
# a memfd-backed SharedArrayBuffer, in its wait cells, which every process mapping it shares),
# which C and Cython users reach through the capsule _C_API.  Waits release the GIL and come back every
# SLICE_NS for PyErr_CheckSignals() and the thread's cancel token, like every wait in ringport.

from cpython.buffer cimport PyBUF_RECORDS_RO
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int8_t, int16_t, int32_t, uint8_t, uint16_t

_C_API = PyCapsule_New(<void *>rp_park_capi(), b"ringport._core._C_API", NULL)


cdef struct _Span:
    char *base          # element 0
    Py_ssize_t n        # elements
    Py_ssize_t stride   # bytes between elements
    int code            # RP_T_*
    PyObject *owner     # the typed array whose method runs (borrowed), NULL for the functions
    bint has_view
    Py_buffer view      # held while has_view


cdef str _s(const char *c):
    """A C string as str, for error messages (hot paths pass function names as C strings:
    a str literal would cost a module-state lookup on every call)."""
    return c.decode("ascii")


cdef str _op_name(const _Span *s, const char *fn):
    """The operation as error messages name it: atomics.add, or Int32Array.add for a method."""
    if s.owner != NULL:
        return f"{type(<object>s.owner).__name__}.{_s(fn)}"
    return f"atomics.{_s(fn)}"


cdef inline void _typed_span(_TypedArray ta, _Span *s) noexcept:
    """The span of a typed array.  ta stays borrowed: a local `_TypedArray` variable would take
    a reference, and on a free-threaded build another thread's reference count change is an
    atomic operation on a field every thread using the array writes (see the methods)."""
    s.base = ta.base
    s.n = ta._len()
    s.stride = ta.itemsize
    s.code = ta.code
    s.owner = NULL
    s.has_view = False


cdef int _get_span(object arr, _Span *s, const char *fn) except -1:
    """Resolve arr (a typed array, or a writable 1-d buffer with a supported format) without
    touching its memory.  Release with _release_span once has_view is set."""
    cdef int code, size
    cdef Py_ssize_t st
    s.has_view = False
    s.owner = NULL
    if rp_is_typed_array(arr):
        _typed_span(<_TypedArray>arr, s)
        return 0
    if isinstance(arr, SharedArrayBuffer):
        raise TypeError(f"atomics.{_s(fn)}: a SharedArrayBuffer has no element type; use a typed "
                        f"array over it, e.g. Int32Array(buffer)")
    if not PyObject_CheckBuffer(arr):
        raise TypeError(f"atomics.{_s(fn)} takes a typed array or a writable buffer, not "
                        f"{type(arr).__name__}")
    try:
        PyObject_GetBuffer(arr, &s.view, PyBUF_RECORDS)
    except Exception as e:
        raise TypeError(f"atomics.{_s(fn)} needs a writable buffer ({type(arr).__name__}: {e})") \
            from None
    s.has_view = True
    try:
        if s.view.ndim != 1:
            raise TypeError(f"atomics.{_s(fn)} takes a one-dimensional buffer, not "
                            f"{s.view.ndim}-dimensional")
        code = _format_code(s.view.format, s.view.itemsize)
        if code < 0:
            fmt = "B" if s.view.format == NULL else s.view.format.decode("ascii", "replace")
            raise TypeError(f"atomics.{_s(fn)}: unsupported item format {fmt!r} "
                            f"(itemsize {s.view.itemsize}); need 1-, 2-, 4- or 8-byte integers, "
                            f"float32 or float64")
        size = rp_elem_size(code)
        st = s.view.strides[0] if s.view.strides != NULL else s.view.itemsize
        if (<uintptr_t>s.view.buf) % <uintptr_t>size or (st % size):
            raise ValueError(f"atomics.{_s(fn)}: the buffer's elements are not aligned to their "
                             f"size ({size} bytes)")
        s.base = <char *>s.view.buf
        s.n = s.view.shape[0] if s.view.shape != NULL else s.view.len // s.view.itemsize
        s.stride = st
        s.code = code
    except BaseException:
        _release_span(s)
        raise
    return 0


cdef inline void _release_span(_Span *s) noexcept:
    if s.has_view:
        s.has_view = False
        PyBuffer_Release(&s.view)


cdef extern from "_glue.h":
    bint rp_compact_int(object o, long long *out) noexcept


cdef char *_element(_Span *s, object index, const char *fn) except NULL:
    cdef long long i
    if rp_compact_int(index, &i):
        # the common case in C comparisons (Python int constants live in module state, whose
        # lookup is a process-wide atomic operation)
        if 0 <= i < s.n:
            return s.base + i * s.stride
    elif type(index) is not int and not PyIndex_Check(index):
        raise TypeError(f"{_op_name(s, fn)}: index must be an int, not {type(index).__name__}")
    index = PyNumber_Index(index)
    if index < 0 or index >= s.n:
        raise IndexError(f"{_op_name(s, fn)}: index {index} out of range for length {s.n}")
    i = <Py_ssize_t>index
    return s.base + i * s.stride


cdef inline bint _small_operand(int code, object value, rp_val *v) noexcept:
    """value as an integer element, when it is a small exact int in the element type's range
    (the common case, without a call); else False and _to_val decides, or raises."""
    cdef long long x
    cdef int bits
    if rp_elem_is_float(code) or not rp_compact_int(value, &x):
        return False
    bits = 8 * rp_elem_size(code)
    if rp_elem_is_signed(code):
        if bits < 64 and (x < -(1LL << (bits - 1)) or x >= (1LL << (bits - 1))):
            return False
    elif x < 0 or (bits < 64 and x >= (1LL << bits)):
        return False
    v.i = x     # for an unsigned type, x >= 0: the same bits as v.u
    return True


cdef object _rmw_span(_Span *s, const char *fn, int op, object index, object value):
    cdef rp_val v
    cdef char *p = _element(s, index, fn)
    if rp_elem_is_float(s.code) and (op == RP_OP_AND or op == RP_OP_OR or op == RP_OP_XOR):
        raise TypeError(f"{_op_name(s, fn)} is not defined for {_TYPE_NAMES[s.code]} elements "
                        f"(bitwise operations need integers)")
    v.u = 0
    if op != RP_OP_LOAD and not _small_operand(s.code, value, &v):
        _to_val(s.code, value, &v)
    return _from_val(s.code, rp_elem_rmw(s.code, op, p, v))


cdef object _cas_span(_Span *s, const char *fn, object index, object expected,
                      object replacement):
    cdef rp_val e, d
    cdef char *p = _element(s, index, fn)
    if not _small_operand(s.code, expected, &e):
        _to_val(s.code, expected, &e)
    if not _small_operand(s.code, replacement, &d):
        _to_val(s.code, replacement, &d)
    if s.code == RP_T_F32:
        # compare the float32 bit pattern that expected rounds to
        e.d = <double>(<float>e.d)
    return _from_val(s.code, rp_elem_cas(s.code, p, e, d))


cdef object _rmw(const char *fn, int op, object arr, object index, object value):
    cdef _Span s
    _get_span(arr, &s, fn)
    try:
        return _rmw_span(&s, fn, op, index, value)
    finally:
        _release_span(&s)


# The methods of the typed arrays (arr.add(i, v) is atomics.add(arr, i, v)).  A method bound
# once, `add = arr.add`, is called with the array borrowed (self of a METH_FASTCALL method) and
# the bound method owned by the calling thread: a call writes to no object another thread
# uses, where atomics.add(arr, ...) takes and drops a reference to arr, and to the function,
# on every call.

cdef object _rmw_method(_TypedArray ta, const char *fn, int op, object index, object value):
    cdef _Span s
    cdef long long i
    cdef rp_val v
    v.u = 0
    if rp_compact_int(index, &i) and 0 <= i < ta._len() and \
            (op == RP_OP_LOAD or _small_operand(ta.code, value, &v)):
        # the common case in one function: a small index in range, a small int operand
        return _from_val(ta.code, rp_elem_rmw(ta.code, op, ta.base + i * ta.itemsize, v))
    _typed_span(ta, &s)
    s.owner = <PyObject *>ta
    return _rmw_span(&s, fn, op, index, value)


cdef object _cas_method(_TypedArray ta, object index, object expected, object replacement):
    cdef _Span s
    _typed_span(ta, &s)
    s.owner = <PyObject *>ta
    return _cas_span(&s, "compare_exchange", index, expected, replacement)


def add(arr, index, value, /):
    """Atomically add value to arr[index]; return the old value.  Integer arithmetic wraps
    modulo 2**bits (value itself must fit the element type, else OverflowError); floats use a
    compare-and-swap loop."""
    return _rmw("add", RP_OP_ADD, arr, index, value)


def sub(arr, index, value, /):
    """Atomically subtract value from arr[index]; return the old value."""
    return _rmw("sub", RP_OP_SUB, arr, index, value)


def and_(arr, index, value, /):
    """Atomically arr[index] &= value (integers only); return the old value."""
    return _rmw("and_", RP_OP_AND, arr, index, value)


def or_(arr, index, value, /):
    """Atomically arr[index] |= value (integers only); return the old value."""
    return _rmw("or_", RP_OP_OR, arr, index, value)


def xor(arr, index, value, /):
    """Atomically arr[index] ^= value (integers only); return the old value."""
    return _rmw("xor", RP_OP_XOR, arr, index, value)


def exchange(arr, index, value, /):
    """Atomically set arr[index] to value; return the old value."""
    return _rmw("exchange", RP_OP_XCHG, arr, index, value)


def load(arr, index, /):
    """Atomically read arr[index] (sequentially consistent)."""
    return _rmw("load", RP_OP_LOAD, arr, index, None)


def store(arr, index, value, /):
    """Atomically write value to arr[index]; return the value stored (for float32, rounded)."""
    return _rmw("store", RP_OP_STORE, arr, index, value)


def compare_exchange(arr, index, expected, replacement, /):
    """Atomically: if arr[index] == expected, set it to replacement.  Return the old value
    (the exchange happened iff it equals expected).  Floats compare bit patterns: -0.0 does not
    match 0.0, and a NaN matches a NaN with the same payload."""
    cdef _Span s
    _get_span(arr, &s, "compare_exchange")
    try:
        return _cas_span(&s, "compare_exchange", index, expected, replacement)
    finally:
        _release_span(&s)


def is_lock_free(size):
    """True when atomic operations on size-byte elements are lock-free (1, 2, 4, 8 here)."""
    if not PyIndex_Check(size):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    size = PyNumber_Index(size)
    if size not in (1, 2, 4, 8):
        return False
    return bool(rp_is_lock_free(<int>size))


def pause(iterations=1):
    """A CPU spin-wait hint (x86 pause / arm yield), iterations times, for hand-written spin
    loops (JavaScript's Atomics.pause)."""
    cdef Py_ssize_t n, i
    if iterations is None:
        n = 1
    else:
        n = _as_size(iterations, "iterations")
    for i in range(n):
        rp_cpu_relax()


# ---------------------------------------------------------------------------- wait / notify

cdef int _waitable(_Span *s, const char *fn) except -1:
    if s.code != RP_T_I32 and s.code != RP_T_I64:
        raise TypeError(f"{_op_name(s, fn)} works on Int32Array and BigInt64Array (int32 or int64 "
                        f"buffers), not {_TYPE_NAMES[s.code]} elements")
    return 0


cdef uint64_t _wait_bits(_Span *s, object value) except? 0xFFFFFFFFFFFFFFFF:
    cdef rp_val v
    _to_val(s.code, value, &v)
    if s.code == RP_T_I32:
        return <uint64_t><uint32_t><int32_t>v.i
    return v.u


def wait(arr, index, value, timeout=None):
    """Sleep while arr[index] == value, until notify() wakes this thread or timeout seconds pass
    (None: no timeout).  Returns "ok" (woken by notify), "not-equal" (the value differed at the
    call) or "timed-out", as JavaScript's Atomics.wait.  Only Int32Array and BigInt64Array (int32
    or int64 buffers); the whole value is compared.  Releases the GIL; Ctrl-C interrupts it
    (KeyboardInterrupt), and worker.terminate() raises WorkerTerminated in the waiting worker.
    On a SharedArrayBuffer shared with other processes, a notify in any of them wakes it."""
    cdef _Span s
    cdef char *p
    cdef uint64_t bits
    cdef int64_t deadline
    cdef int size, rc
    cdef rp_cancel *cancel = rp_thread_cancel()
    cdef rp_waiter w
    _get_span(arr, &s, "wait")
    try:
        _waitable(&s, "wait")
        p = _element(&s, index, "wait")
        bits = _wait_bits(&s, value)
        deadline = timeout_to_deadline(timeout)
        size = rp_elem_size(s.code)
        if rp_cancel_fired(cancel):
            raise_for(RP_ECANCELED, "atomics.wait")
        rp_waiter_init(&w, -1)
        with nogil:
            rc = rp_park_enqueue(&w, p, size, bits)
        if rc == RP_ENOTEQUAL:
            return "not-equal"
        if rc == RP_ENOMEM:
            raise MemoryError(f"atomics.wait: {RP_PARK_XCELLS} threads already wait on this "
                              f"SharedArrayBuffer (the limit of concurrent waiters per buffer)")
        while True:
            with nogil:
                rc = rp_park_wait(&w, deadline, SLICE_NS, cancel)
            if rc == RP_OK:
                return "ok"
            if rc == RP_EINTR:
                try:
                    PyErr_CheckSignals()
                except BaseException:
                    rp_park_leave(&w)
                    raise
                continue
            if rp_park_leave(&w):
                return "ok"   # a notify came in just as the wait ended
            if rc == RP_ETIMEDOUT:
                return "timed-out"
            raise_for(rc, "atomics.wait")
    finally:
        _release_span(&s)


def notify(arr, index, count=None):
    """Wake up to count threads (and wait_async waiters) waiting on arr[index], oldest first
    (None: all).  Returns how many were woken.  On a SharedArrayBuffer shared with other
    processes it wakes and counts their threads too (not the wait_async waiters of other
    processes, nor waiters whose process has died)."""
    cdef _Span s
    cdef char *p
    cdef int64_t n = -1
    cdef int64_t woken
    _get_span(arr, &s, "notify")
    try:
        _waitable(&s, "notify")
        p = _element(&s, index, "notify")
        if count is not None:
            if not PyIndex_Check(count):
                raise TypeError(f"count must be an int or None, not {type(count).__name__}")
            count = PyNumber_Index(count)
            if count < 0:
                raise ValueError("count must not be negative")
            n = count if count < INT64_MAX else INT64_MAX
        with nogil:
            woken = rp_park_notify(p, n)
        return woken
    finally:
        _release_span(&s)


def _waiters(arr, index, /):
    """How many waiters (threads and wait_async) wait on arr[index] right now (a test hook)."""
    cdef _Span s
    cdef char *p
    _get_span(arr, &s, "_waiters")
    try:
        p = _element(&s, index, "_waiters")
        return rp_park_waiters(p)
    finally:
        _release_span(&s)


@cython.final
cdef class _AsyncWaiter:
    """One wait_async: a parking-lot waiter whose notify writes to an fd the event loop watches.
    Being fd-based, it works whichever thread or interpreter calls notify."""
    cdef rp_waiter *w       # malloc'ed: notify may touch it until rp_park_leave returns
    cdef int rfd, wfd
    cdef bint enqueued
    cdef object arr         # keeps the memory alive while enqueued
    cdef object loop
    cdef object future
    cdef object timer

    def __cinit__(self):
        self.w = NULL
        self.rfd = -1
        self.wfd = -1
        self.enqueued = False

    cdef void _close(self) noexcept:
        """Leave the queue (so no notify touches us any more), then free everything."""
        if self.w != NULL:
            if self.enqueued:
                rp_park_leave(self.w)
                self.enqueued = False
            free(self.w)
            self.w = NULL
        if self.rfd >= 0:
            rp_park_fd_close(self.rfd, self.wfd)
            self.rfd = self.wfd = -1
        self.arr = None

    cdef void _settle(self, str result):
        loop = self.loop
        if loop is not None and self.rfd >= 0:
            try:
                loop.remove_reader(self.rfd)
            except Exception:
                pass
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._close()
        self.loop = None
        fut = self.future
        self.future = None
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _on_ready(self):
        self._settle("ok")

    def _on_timeout(self):
        self.timer = None
        woken = self.w != NULL and self.enqueued and rp_park_leave(self.w)
        self.enqueued = False
        self._settle("ok" if woken else "timed-out")

    def _on_done(self, fut):
        if fut.cancelled():
            self._settle("cancelled")

    def __dealloc__(self):
        self._close()


def wait_async(arr, index, value, timeout=None):
    """The asyncio form of wait(): returns an awaitable (an asyncio.Future of the running loop)
    resolving to "ok", "not-equal" or "timed-out".  The waiter is registered at the call (as
    JavaScript's Atomics.waitAsync), so a notify() between the call and the await counts.  Never
    blocks the event loop: notify() signals the loop through an fd, from any thread or
    interpreter of this process (a notify from another process does not wake it).  Call it from a coroutine or callback running in the loop."""
    import asyncio
    cdef _Span s
    cdef char *p
    cdef uint64_t bits
    cdef int rc
    cdef _AsyncWaiter a
    cdef double t = -1.0
    loop = asyncio.get_running_loop()
    _get_span(arr, &s, "wait_async")
    try:
        _waitable(&s, "wait_async")
        p = _element(&s, index, "wait_async")
        bits = _wait_bits(&s, value)
        if timeout is not None:
            timeout_to_deadline(timeout)   # validates
            t = timeout
        fut = loop.create_future()
        a = _AsyncWaiter.__new__(_AsyncWaiter)
        a.w = <rp_waiter *>malloc(sizeof(rp_waiter))
        if a.w == NULL:
            raise MemoryError()
        if rp_park_fd_open(&a.rfd, &a.wfd) != RP_OK:
            raise OSError("atomics.wait_async: could not create an event fd")
        rp_waiter_init(a.w, a.wfd)
        rc = rp_park_enqueue(a.w, p, rp_elem_size(s.code), bits)
        if rc == RP_ENOTEQUAL:
            a._close()
            fut.set_result("not-equal")
            return fut
        if rc == RP_ENOMEM:
            a._close()
            raise MemoryError(f"atomics.wait_async: {RP_PARK_XCELLS} waiters already wait on "
                              f"this SharedArrayBuffer (the limit of concurrent waiters per buffer)")
        a.enqueued = True
        a.arr = arr
        a.loop = loop
        a.future = fut
        if t == 0.0:
            a._on_timeout()
            return fut
        try:
            loop.add_reader(a.rfd, a._on_ready)
        except BaseException:
            a._close()
            raise
        if t > 0.0:
            a.timer = loop.call_later(t, a._on_timeout)
        fut.add_done_callback(a._on_done)
        return fut
    finally:
        _release_span(&s)


# ---------------------------------------------------------------------------- vector forms

cdef int64_t *_index_vector(object indices, Py_ssize_t n, Py_ssize_t *count) except NULL:
    """indices (a sequence of ints, or an integer buffer) as a malloc'ed array, each checked to
    lie in [0, n)."""
    cdef Py_buffer view
    cdef int64_t *out
    cdef Py_ssize_t m, k, st
    cdef int code
    cdef rp_val v
    cdef char *q
    if PyObject_CheckBuffer(indices) and not isinstance(indices, (bytes, bytearray)):
        PyObject_GetBuffer(indices, &view, PyBUF_RECORDS_RO)
        try:
            if view.ndim != 1:
                raise TypeError("add_at: indices must be one-dimensional")
            code = _format_code(view.format, view.itemsize)
            if code < 0 or rp_elem_is_float(code):
                raise TypeError("add_at: indices must be integers")
            m = view.shape[0]
            st = view.strides[0]
            out = <int64_t *>malloc(<size_t>(m if m else 1) * sizeof(int64_t))
            if out == NULL:
                raise MemoryError()
            for k in range(m):
                q = <char *>view.buf + k * st
                v = _read_plain(code, q)
                if (rp_elem_is_signed(code) and (v.i < 0 or v.i >= n)) or \
                        (not rp_elem_is_signed(code) and v.u >= <uint64_t>n):
                    free(out)
                    raise IndexError(f"add_at: index {_from_val(code, v)} out of range for "
                                     f"length {n}")
                out[k] = v.i
        finally:
            PyBuffer_Release(&view)
        count[0] = m
        return out
    seq = list(indices)
    m = len(seq)
    out = <int64_t *>malloc(<size_t>(m if m else 1) * sizeof(int64_t))
    if out == NULL:
        raise MemoryError()
    try:
        for k in range(m):
            x = seq[k]
            if not PyIndex_Check(x):
                raise TypeError(f"add_at: indices must be integers, not {type(x).__name__}")
            x = PyNumber_Index(x)
            if x < 0 or x >= n:
                raise IndexError(f"add_at: index {x} out of range for length {n}")
            out[k] = <int64_t>x
    except BaseException:
        free(out)
        raise
    count[0] = m
    return out


cdef rp_val _read_plain(int code, const char *q) noexcept:
    """A buffer element (not shared with a concurrent writer: plain read), widened."""
    cdef rp_val v
    if code == RP_T_I8:
        v.i = (<const int8_t *>q)[0]
    elif code == RP_T_U8:
        v.u = (<const uint8_t *>q)[0]
    elif code == RP_T_I16:
        v.i = (<const int16_t *>q)[0]
    elif code == RP_T_U16:
        v.u = (<const uint16_t *>q)[0]
    elif code == RP_T_I32:
        v.i = (<const int32_t *>q)[0]
    elif code == RP_T_U32:
        v.u = (<const uint32_t *>q)[0]
    elif code == RP_T_I64:
        v.i = (<const int64_t *>q)[0]
    elif code == RP_T_U64:
        v.u = (<const uint64_t *>q)[0]
    elif code == RP_T_F32:
        v.d = (<const float *>q)[0]
    else:
        v.d = (<const double *>q)[0]
    return v


cdef int _convert_elem(int dst, int src, rp_val x, rp_val *out) except -1:
    """A value read from a buffer of type src, as an element of type dst (range-checked)."""
    if rp_elem_is_float(dst):
        if rp_elem_is_float(src):
            out.d = x.d
        elif rp_elem_is_signed(src):
            out.d = <double>x.i
        else:
            out.d = <double>x.u
        return 0
    if rp_elem_is_float(src):
        raise TypeError(f"add_at: float values cannot be added to {_TYPE_NAMES[dst]} elements")
    if dst == RP_T_U64:
        if rp_elem_is_signed(src) and x.i < 0:
            raise _range_error(dst, x.i)
        out.u = x.u
        return 0
    if not rp_elem_is_signed(src) and x.u > <uint64_t>INT64_MAX:
        raise _range_error(dst, x.u)
    if x.i < _lo(dst) or x.i > _hi(dst):
        raise _range_error(dst, x.i)
    if rp_elem_is_signed(dst):
        out.i = x.i
    else:
        out.u = <uint64_t>x.i
    return 0


cdef rp_val *_value_vector(int dst, object values, Py_ssize_t m, bint *scalar) except NULL:
    """values (a number, a sequence, or a numeric buffer) as m element values (one if a
    scalar is broadcast)."""
    cdef Py_buffer view
    cdef rp_val *out
    cdef Py_ssize_t k
    cdef int code
    if PyObject_CheckBuffer(values) and not isinstance(values, (bytes, bytearray)):
        PyObject_GetBuffer(values, &view, PyBUF_RECORDS_RO)
        try:
            if view.ndim != 1:
                raise TypeError("add_at: values must be one-dimensional")
            code = _format_code(view.format, view.itemsize)
            if code < 0:
                raise TypeError("add_at: unsupported values format")
            if view.shape[0] != m:
                raise ValueError(f"add_at: {view.shape[0]} values for {m} indices")
            out = <rp_val *>malloc(<size_t>(m if m else 1) * sizeof(rp_val))
            if out == NULL:
                raise MemoryError()
            try:
                for k in range(m):
                    _convert_elem(dst, code,
                                  _read_plain(code, <char *>view.buf + k * view.strides[0]),
                                  &out[k])
            except BaseException:
                free(out)
                raise
        finally:
            PyBuffer_Release(&view)
        scalar[0] = False
        return out
    out = <rp_val *>malloc(<size_t>(m if m else 1) * sizeof(rp_val))
    if out == NULL:
        raise MemoryError()
    try:
        if isinstance(values, (int, float)) or PyIndex_Check(values) or \
                not hasattr(values, "__iter__"):
            _to_val(dst, values, &out[0])
            scalar[0] = True
            return out
        seq = list(values)
        if len(seq) != m:
            raise ValueError(f"add_at: {len(seq)} values for {m} indices")
        for k in range(m):
            _to_val(dst, seq[k], &out[k])
        scalar[0] = False
        return out
    except BaseException:
        free(out)
        raise


def add_at(arr, indices, values):
    """Atomically arr[indices[k]] += values[k] for every k (values may be one number, added at
    every index): numpy.add.at, but safe while other threads and workers add into the same
    array (a shared histogram).  indices and values may be sequences or buffers (numpy arrays).
    Everything is checked before any element is touched; the loop runs without the GIL."""
    cdef _Span s
    cdef int64_t *idx = NULL
    cdef rp_val *vals = NULL
    cdef Py_ssize_t m = 0, k
    cdef bint scalar = False
    cdef int code
    _get_span(arr, &s, "add_at")
    try:
        idx = _index_vector(indices, s.n, &m)
        vals = _value_vector(s.code, values, m, &scalar)
        code = s.code
        with nogil:
            for k in range(m):
                rp_elem_rmw(code, RP_OP_ADD, s.base + idx[k] * s.stride,
                            vals[0] if scalar else vals[k])
    finally:
        free(idx)
        free(vals)
        _release_span(&s)


def load_all(arr):
    """A list of every element, each read atomically (sequentially consistent)."""
    cdef _Span s
    cdef Py_ssize_t k
    cdef rp_val zero
    zero.u = 0
    _get_span(arr, &s, "load_all")
    try:
        out = PyList_New(s.n)
        for k in range(s.n):
            v = _from_val(s.code, rp_elem_rmw(s.code, RP_OP_LOAD, s.base + k * s.stride, zero))
            Py_INCREF(v)
            PyList_SET_ITEM(out, k, v)
        return out
    finally:
        _release_span(&s)


def fill(arr, value):
    """Atomically store value into every element (each store is atomic, the whole is not)."""
    cdef _Span s
    cdef Py_ssize_t k
    cdef rp_val v
    cdef int code
    _get_span(arr, &s, "fill")
    try:
        _to_val(s.code, value, &v)
        code = s.code
        with nogil:
            for k in range(s.n):
                rp_elem_rmw(code, RP_OP_STORE, s.base + k * s.stride, v)
    finally:
        _release_span(&s)


@cython.final
cdef class _TestCancelToken:
    """A cancel token for tests (a worker's bootstrap installs the real one): install() makes it
    the calling thread's token, fire() fires it from any thread, as worker.terminate() does."""
    cdef rp_cancel *c
    cdef bint installed

    def __cinit__(self):
        self.c = <rp_cancel *>malloc(sizeof(rp_cancel))
        if self.c == NULL:
            raise MemoryError()
        rp_cancel_init(self.c)
        self.installed = False

    def install(self):
        rp_thread_set_cancel(self.c)
        self.installed = True

    def uninstall(self):
        if rp_thread_cancel() == self.c:
            rp_thread_set_cancel(NULL)
        self.installed = False

    def fire(self):
        rp_cancel_fire(self.c)

    def __dealloc__(self):
        # the owner must uninstall first; a token still installed is leaked, not freed
        if not self.installed:
            free(self.c)
