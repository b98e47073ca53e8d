# Shared memory: SharedArrayBuffer, the typed arrays over it, and how both cross in messages.
#
# A SharedArrayBuffer object holds one reference to an rp_sab block (csrc/rp_shm.c); a message
# carrying it holds another (an RP_H_SAB handle), so the block lives exactly as long as some
# holder in some interpreter can see it.  Typed arrays are views (buffer, byte_offset, length,
# element type); they never own memory themselves.
#
# Wire format after the codec's tag S:  <varint handle> <kind byte> [<varint byte_offset>
# <varint length + 1>].  Kind 0 is the SharedArrayBuffer itself; kind 1 + t a typed array of
# element type t (RP_T_*), with length + 1 == 0 for a length-tracking view.  A block that appears
# several times in one message (a buffer and views of it) travels as one handle, and the
# receiver builds one SharedArrayBuffer object for it, so `view.buffer is buffer` holds there
# too.
#
# Element reads and writes by indexing are relaxed atomics (a race with another thread is
# well-defined, values never tear); ringport.atomics gives the sequentially consistent ones.

from cpython.buffer cimport PyBUF_RECORDS, PyBUF_STRIDES, PyObject_CheckBuffer
from cpython.long cimport PyLong_AsUnsignedLongLong, PyLong_FromUnsignedLongLong
from cpython.number cimport PyIndex_Check, PyNumber_Index
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport INT64_MAX, INT64_MIN, uintptr_t
from libc cimport errno
from libc.string cimport strcmp, strncmp

cdef enum:
    SAB_ADOPTED = 0x5AB   # rp_handle.reserved once the receiver built the object (_r_sab)
    REPR_MAX = 1000       # elements shown by repr()


cdef class _Shared:
    """Base of objects that cross by sharing memory (SharedArrayBuffer and typed arrays)."""

    cdef int _encode_shared(self, Writer *w) except -1:
        raise DataCloneError(f"{type(self).__qualname__} cannot be shared")


# ---------------------------------------------------------------------------- argument helpers

cdef Py_ssize_t _as_size(object v, str what) except -1:
    """A non-negative int argument (anything with __index__)."""
    if not PyIndex_Check(v):
        raise TypeError(f"{what} must be an int, not {type(v).__name__}")
    v = PyNumber_Index(v)
    if v < 0:
        raise ValueError(f"{what} must not be negative")
    if v > <object>PY_SSIZE_T_MAX:
        raise ValueError(f"{what} is too large")
    return <Py_ssize_t>v


cdef Py_ssize_t _relative(object v, Py_ssize_t n, Py_ssize_t default, str what) except -1:
    """JavaScript's relative index (slice, subarray): negative counts from n, clamped to [0, n]."""
    if v is None:
        return default
    if not PyIndex_Check(v):
        raise TypeError(f"{what} must be an int or None, not {type(v).__name__}")
    v = PyNumber_Index(v)
    if v < 0:
        v = v + n
        return 0 if v < 0 else <Py_ssize_t>v
    return n if v > n else <Py_ssize_t>v


cdef Py_ssize_t *_new_dims(Py_ssize_t n, Py_ssize_t itemsize) except NULL:
    # per export: the length of a growable buffer (or a length-tracking view) may change
    # between exports, so the shape cannot live in the object
    cdef Py_ssize_t *d = <Py_ssize_t *>malloc(2 * sizeof(Py_ssize_t))
    if d == NULL:
        raise MemoryError()
    d[0] = n
    d[1] = itemsize
    return d


# ---------------------------------------------------------------------------- SharedArrayBuffer

@cython.final
cdef class SharedArrayBuffer(_Shared):
    """SharedArrayBuffer(byte_length, *, max_byte_length=None)

    Zero-filled memory shared, not copied, by every thread, worker and interpreter it is posted
    to (alone, or through a typed array over it, anywhere in a message).  The memory lives as
    long as any of them holds it.

    With max_byte_length it is growable: grow(n) extends it in place up to that maximum (which
    is reserved up front), so views taken earlier stay valid, as in JavaScript.

    It exposes a writable buffer: memoryview(sab) and numpy.frombuffer(sab, ...) see the same
    bytes, without a copy.  Errors: TypeError for arguments of the wrong type and for grow() on a
    buffer that is not growable (as JavaScript does); ValueError (JavaScript's RangeError) for
    negative lengths, byte_length > max_byte_length, and growing beyond the maximum or smaller.
    """
    cdef rp_sab *sab   # one reference to the block, held until this object dies

    def __init__(self, byte_length, *, max_byte_length=None):
        cdef Py_ssize_t n = _as_size(byte_length, "byte_length")
        cdef Py_ssize_t m = n
        cdef bint growable = max_byte_length is not None
        cdef rp_sab *s
        if self.sab != NULL:
            raise TypeError("SharedArrayBuffer is already initialized")
        if growable:
            m = _as_size(max_byte_length, "max_byte_length")
            if n > m:
                raise ValueError(f"byte_length ({n}) must not exceed max_byte_length ({m})")
        s = rp_sab_new(<size_t>n, <size_t>m, growable)
        if s == NULL:
            raise MemoryError(f"could not allocate a SharedArrayBuffer of {m} bytes")
        self.sab = s

    @staticmethod
    cdef SharedArrayBuffer _wrap(rp_sab *s):
        """Wrap s, taking over one reference."""
        cdef SharedArrayBuffer b = SharedArrayBuffer.__new__(SharedArrayBuffer)
        b.sab = s
        return b

    def __dealloc__(self):
        cdef rp_sab *s = self.sab
        self.sab = NULL
        if s != NULL:
            rp_sab_decref(s)

    cdef rp_sab *_s(self) except NULL:
        if self.sab == NULL:
            raise ValueError("SharedArrayBuffer is not initialized")
        return self.sab

    @property
    def byte_length(self):
        """The current length in bytes (read atomically: another thread may grow it)."""
        return rp_sab_length(self._s())

    @property
    def growable(self):
        return bool(rp_sab_growable(self._s()))

    @property
    def max_byte_length(self):
        """The maximum length; byte_length for a buffer that is not growable."""
        cdef rp_sab *s = self._s()
        return rp_sab_max_length(s) if rp_sab_growable(s) else rp_sab_length(s)

    def grow(self, new_length):
        """Grow to new_length bytes, in place; the new bytes are zero.  Never shrinks."""
        cdef rp_sab *s = self._s()
        cdef Py_ssize_t n = _as_size(new_length, "new_length")
        if not rp_sab_growable(s):
            raise TypeError("grow(): this SharedArrayBuffer is not growable "
                            "(create it with max_byte_length=...)")
        if <size_t>n > rp_sab_max_length(s):
            raise ValueError(f"grow(): {n} exceeds max_byte_length ({rp_sab_max_length(s)})")
        if rp_sab_grow(s, <size_t>n) != RP_OK:
            raise ValueError(f"grow(): {n} is smaller than the current byte_length "
                             f"({rp_sab_length(s)})")

    def slice(self, begin=0, end=None):
        """A new (not growable) SharedArrayBuffer with a copy of bytes [begin, end); negative
        indices count from the end, as in JavaScript."""
        cdef rp_sab *s = self._s()
        cdef Py_ssize_t n = <Py_ssize_t>rp_sab_length(s)
        cdef Py_ssize_t b = _relative(begin, n, 0, "begin")
        cdef Py_ssize_t e = _relative(end, n, n, "end")
        cdef Py_ssize_t k = e - b if e > b else 0
        cdef SharedArrayBuffer out = SharedArrayBuffer(k)
        if k:
            memcpy(rp_sab_data(out.sab), <char *>rp_sab_data(s) + b, <size_t>k)
        return out

    def __len__(self):
        return rp_sab_length(self._s())

    def __getbuffer__(self, Py_buffer *view, int flags):
        cdef rp_sab *s = self._s()
        cdef Py_ssize_t n = <Py_ssize_t>rp_sab_length(s)
        cdef Py_ssize_t *dims = NULL
        if (flags & PyBUF_ND) == PyBUF_ND:
            dims = _new_dims(n, 1)
        view.buf = rp_sab_data(s)
        view.obj = self
        view.len = n
        view.readonly = 0
        view.itemsize = 1
        view.format = <char *>_format_of(RP_T_U8) if (flags & PyBUF_FORMAT) else NULL
        view.ndim = 1
        view.shape = dims
        view.strides = &dims[1] if dims != NULL and (flags & PyBUF_STRIDES) == PyBUF_STRIDES \
            else NULL
        view.suboffsets = NULL
        view.internal = dims

    def __releasebuffer__(self, Py_buffer *view):
        free(view.internal)
        view.internal = NULL

    def __repr__(self):
        if self.sab == NULL:
            return "SharedArrayBuffer(<uninitialized>)"
        if rp_sab_growable(self.sab):
            return (f"SharedArrayBuffer({rp_sab_length(self.sab)}, "
                    f"max_byte_length={rp_sab_max_length(self.sab)})")
        return f"SharedArrayBuffer({rp_sab_length(self.sab)})"

    def __reduce__(self):
        raise TypeError("a SharedArrayBuffer cannot be pickled; post it on a MessagePort to "
                        "share it")

    cdef int _encode_shared(self, Writer *w) except -1:
        cdef uint32_t k = _w_sab(w, self._s())
        w_tag_varint(w, b'S', k)
        w_byte(w, 0)
        return 0


# ---------------------------------------------------------------------------- across processes
# Private, for the process backend: a SharedArrayBuffer crosses into another process as its
# memfd (sent with socket.send_fds, SCM_RIGHTS) plus _sab_layout's numbers, and the receiver
# maps the same memory with _sab_import_fd.  csrc/rp_shm.h says what is shared and checked.

def _sab_export_fd(SharedArrayBuffer sab not None):
    """The buffer's memfd, to send to another process.  Borrowed, not a dup: it stays open
    exactly as long as the buffer (keep `sab`, or a message holding it, alive until the send
    returns) and must not be closed; socket.send_fds copies it into the message.  OSError when
    the buffer is process-local (no memfd on this platform, or the process was at its open-file
    limit when the buffer was made)."""
    cdef int fd = rp_sab_fd(sab._s())
    if fd < 0:
        raise OSError("this SharedArrayBuffer lives in process-local memory and "
                      "cannot be shared with another process (no memfd on this platform, or "
                      "the process was at its open-file limit, RLIMIT_NOFILE, when it was made)")
    return fd


def _sab_layout(SharedArrayBuffer sab not None):
    """(max_length, growable): what _sab_import_fd needs besides the fd.  The current length
    travels in the shared memory itself."""
    cdef rp_sab *s = sab._s()
    return rp_sab_max_length(s), bool(rp_sab_growable(s))


def _sab_import_fd(fd, max_length, growable):
    """A SharedArrayBuffer over the memory of a memfd received from another process
    (_sab_export_fd's, after SCM_RIGHTS).  Takes ownership of fd whatever happens: on success
    the buffer closes it when it dies, on failure it is closed here.  Nothing about the fd is
    trusted: ValueError when it is not a SharedArrayBuffer's memfd or is smaller than
    max_length says, OSError for a bad descriptor."""
    cdef int cfd
    cdef Py_ssize_t m
    cdef rp_sab *s
    cdef int e
    if not PyIndex_Check(fd):
        raise TypeError(f"fd must be an int, not {type(fd).__name__}")
    cfd = PyNumber_Index(fd)
    try:
        m = _as_size(max_length, "max_length")
        s = rp_sab_from_fd(cfd, <size_t>m, 1 if growable else 0)
        if s == NULL:
            e = errno.errno
            if e == errno.EBADF:
                raise OSError(e, f"_sab_import_fd: {cfd} is not an open file descriptor")
            if e == errno.ENOMEM:
                raise MemoryError(f"_sab_import_fd: could not map {m} bytes")
            raise ValueError(f"_sab_import_fd: fd {cfd} is not a SharedArrayBuffer's memory of "
                             f"at least {m} bytes")
    except BaseException:
        if cfd >= 0:
            import os
            try:
                os.close(cfd)
            except OSError:
                pass
        raise
    return SharedArrayBuffer._wrap(s)


cdef uint32_t _w_sab(Writer *w, rp_sab *s) except? 0xFFFFFFFF:
    """The message's handle for block s: one per block, however often it appears."""
    cdef uint32_t i
    cdef uint64_t ticket
    cdef rp_xfd *x
    cdef int fd
    if w.unshared or w.port_hook != NULL:
        raise _unshared_error()
    for i in range(w.nhandles):
        if (w.handles[i].kind == RP_H_SAB or w.handles[i].kind == RP_H_XSAB) and \
                w.handles[i].ptr == <void *>s:
            return i
    if w.remote:   # to another process: its memfd, over the channel's socket
        fd = rp_sab_fd(s)
        if fd < 0:
            raise DataCloneError(
                "this SharedArrayBuffer lives in process-local memory and cannot be shared with "
                "another process (no memfd on this platform, or the process was at its open-file "
                "limit, RLIMIT_NOFILE, when it was made)")
        ticket = rp_channel_new_ticket()
        x = w_add_xfd(w, ticket)
        w_dup_into(x, fd)
        meta_put(x, rp_sab_max_length(s))
        meta_put(x, 1 if rp_sab_growable(s) else 0)
        return w_add_handle(w, NULL, <void *>s, ticket, RP_H_XSAB)
    rp_sab_incref(s)   # the message's own reference (w_add_handle drops it on failure)
    return w_add_handle(w, rp_sab_release, <void *>s, 0, RP_H_SAB)


cdef SharedArrayBuffer _r_sab(Reader *r):
    """The SharedArrayBuffer of handle k.  The first use adopts the handle's reference; later
    uses in the same message get the same object back (r.keep holds it until decoding ends,
    whatever the value being built, or a pickled object's code, does with it)."""
    cdef uint64_t k = r_varint(r)
    cdef rp_handle *h
    cdef SharedArrayBuffer b
    if k >= r.nhandles:
        raise _decode_error("handle index out of range")
    h = &r.handles[k]
    if r.xch != NULL:
        return _r_xsab(r, h)
    if h.kind != RP_H_SAB:
        raise _decode_error("handle of the wrong kind")
    if h.release == NULL:
        if h.reserved == SAB_ADOPTED:
            return <SharedArrayBuffer><PyObject *><uintptr_t>h.aux
        raise _decode_error("handle used twice")
    b = SharedArrayBuffer._wrap(<rp_sab *>h.ptr)
    h.release = NULL
    reader_keep(r, b)
    h.reserved = SAB_ADOPTED
    h.aux = <uint64_t><uintptr_t><PyObject *>b
    return b


cdef int reader_keep(Reader *r, SharedArrayBuffer b) except -1:
    """Keep b alive until decoding ends (its handle points at it)."""
    if r.keep == NULL:
        keep = []
        Py_INCREF(keep)
        r.keep = <PyObject *>keep
    (<list>r.keep).append(b)
    return 0


cdef SharedArrayBuffer _r_xsab(Reader *r, rp_handle *h):
    """_r_sab for a message from another process: map the buffer's memfd (h is the reader's
    private copy of the handle, so it may remember the object)."""
    cdef rp_xfd x
    cdef rp_sab *s
    cdef uint64_t maxlen, growable
    if h.kind != RP_H_XSAB:
        raise _decode_error("handle of the wrong kind")
    if h.reserved == SAB_ADOPTED:
        return <SharedArrayBuffer><PyObject *>h.ptr
    take_xfds(r, h, &x, 1, "a SharedArrayBuffer")
    try:
        maxlen = meta_get(&x, 8)
        growable = meta_get(&x, 16)
        if maxlen > <uint64_t>PY_SSIZE_T_MAX:
            raise _decode_error("bad descriptor for a SharedArrayBuffer")
        s = rp_sab_from_fd(x.fds[0], <size_t>maxlen, growable != 0)
        if s == NULL:
            raise _decode_error("a SharedArrayBuffer's memory from another process is not "
                                "what its message says")
    except BaseException:
        close_xfds(&x)
        raise
    b = SharedArrayBuffer._wrap(s)
    reader_keep(r, b)
    h.reserved = SAB_ADOPTED
    h.ptr = <void *><PyObject *>b
    return b


# ---------------------------------------------------------------------------- element values

cdef struct ElemKind:
    const char *name     # the class (Int8Array ...); NULL for a code that is no element type
    const char *format   # the buffer protocol's struct format
    int size             # bytes per element (BYTES_PER_ELEMENT)
    int64_t lo, hi       # the range of an integer type (hi of uint64: see _hi_obj)


cdef inline ElemKind _kind(int code) noexcept:
    """The table of element types, one row per RP_T_* code.  The typed array classes are one
    generic implementation (_TypedArray) parameterised by a row of it."""
    if code == RP_T_I8:
        return ElemKind(b"Int8Array", b"b", 1, -128, 127)
    if code == RP_T_U8:
        return ElemKind(b"Uint8Array", b"B", 1, 0, 255)
    if code == RP_T_I16:
        return ElemKind(b"Int16Array", b"h", 2, -32768, 32767)
    if code == RP_T_U16:
        return ElemKind(b"Uint16Array", b"H", 2, 0, 65535)
    if code == RP_T_I32:
        return ElemKind(b"Int32Array", b"i", 4, -2147483648, 2147483647)
    if code == RP_T_U32:
        return ElemKind(b"Uint32Array", b"I", 4, 0, 4294967295)
    if code == RP_T_I64:
        return ElemKind(b"BigInt64Array", b"q", 8, INT64_MIN, INT64_MAX)
    if code == RP_T_U64:
        return ElemKind(b"BigUint64Array", b"Q", 8, 0, INT64_MAX)
    if code == RP_T_F32:
        return ElemKind(b"Float32Array", b"f", 4, 0, 0)
    if code == RP_T_F64:
        return ElemKind(b"Float64Array", b"d", 8, 0, 0)
    return ElemKind(NULL, NULL, 0, 0, 0)


cdef int _code_of_type(type t) noexcept:
    """The element type of typed array class t (or of the class of ours it derives from), or -1
    for _TypedArray itself.  Found by the type's C name, so no module state is looked up (this
    runs for every typed array made, decoded ones too), and a class made in any interpreter
    maps the same."""
    cdef PyTypeObject *tp = <PyTypeObject *>t
    cdef const char *name
    cdef const char *row
    cdef int code
    while tp != NULL:
        name = tp.tp_name
        if strncmp(name, b"ringport._core.", 15) == 0:
            name += 15
            for code in range(RP_T_COUNT):
                row = _kind(code).name
                if row[0] == name[0] and strcmp(name, row) == 0:
                    return code
        tp = tp.tp_base
    return -1


cdef inline int64_t _lo(int code) noexcept:
    return _kind(code).lo


cdef inline int64_t _hi(int code) noexcept:
    return _kind(code).hi


cdef inline object _hi_obj(int code):
    return 0xFFFFFFFFFFFFFFFF if code == RP_T_U64 else _hi(code)


cdef inline const char *_format_of(int code) noexcept:
    return _kind(code).format


cdef str _kind_name(int code):
    return _kind(code).name.decode("ascii")


cdef int _format_code(const char *fmt, Py_ssize_t itemsize) noexcept:
    """The element type of a buffer's struct format, or -1 when unsupported."""
    cdef char c
    if fmt == NULL:
        c = b'B'
    else:
        if fmt[0] == b'@' or fmt[0] == b'=' or fmt[0] == b'<':
            fmt += 1   # native or little-endian: the same on every platform we build for
        if fmt[0] == 0 or fmt[1] != 0:
            return -1
        c = fmt[0]
    if c == b'b' or c == b'h' or c == b'i' or c == b'l' or c == b'q' or c == b'n':
        if itemsize == 1:
            return RP_T_I8
        if itemsize == 2:
            return RP_T_I16
        if itemsize == 4:
            return RP_T_I32
        if itemsize == 8:
            return RP_T_I64
        return -1
    if c == b'B' or c == b'H' or c == b'I' or c == b'L' or c == b'Q' or c == b'N':
        if itemsize == 1:
            return RP_T_U8
        if itemsize == 2:
            return RP_T_U16
        if itemsize == 4:
            return RP_T_U32
        if itemsize == 8:
            return RP_T_U64
        return -1
    if c == b'f' and itemsize == 4:
        return RP_T_F32
    if c == b'd' and itemsize == 8:
        return RP_T_F64
    return -1


cdef object _range_error(int code, object v):
    return OverflowError(f"{v!r} is out of range for {_kind_name(code)} elements "
                         f"({_lo(code)}..{_hi_obj(code)})")


cdef int _to_val(int code, object v, rp_val *out) except -1:
    """Convert a Python number to an element value.  Integer elements take ints (anything with
    __index__) in the element type's range, else OverflowError: values are not wrapped.  Float
    elements take anything float() takes, rounded to the element type (float32 overflows to
    inf)."""
    cdef long long s
    cdef int overflow = 0
    if code == RP_T_F32 or code == RP_T_F64:
        if not isinstance(v, float) and not PyIndex_Check(v) and not hasattr(v, "__float__"):
            raise TypeError(f"{_kind_name(code)} elements are numbers, not "
                            f"{type(v).__name__}")
        out.d = <double>v
        return 0
    if type(v) is not int:
        if not PyIndex_Check(v):
            raise TypeError(f"{_kind_name(code)} elements are integers, not "
                            f"{type(v).__name__}")
        v = PyNumber_Index(v)
    if code == RP_T_U64:
        if v < 0:
            raise _range_error(code, v)
        try:
            out.u = PyLong_AsUnsignedLongLong(v)
        except OverflowError:
            raise _range_error(code, v) from None
        return 0
    s = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or s < _lo(code) or s > _hi(code):
        raise _range_error(code, v)
    if rp_elem_is_signed(code):
        out.i = s
    else:
        out.u = <uint64_t>s
    return 0


cdef inline object _from_val(int code, rp_val v):
    if code == RP_T_F32 or code == RP_T_F64:
        return PyFloat_FromDouble(v.d)
    if rp_elem_is_signed(code):
        return PyLong_FromLongLong(v.i)
    return PyLong_FromUnsignedLongLong(v.u)


# ---------------------------------------------------------------------------- typed arrays

cdef class _TypedArray(_Shared):
    """A typed array: elements of one numeric type viewing a SharedArrayBuffer, as in
    JavaScript.  The concrete classes are Int8Array ... Float64Array: each is this class with
    one row of the element table (_kind), found from the class when an object is made.

    Constructors (the buffer is always a SharedArrayBuffer):
      T(buffer, byte_offset=0, length=None)   a view; length None means "to the end" (and, for
                                              a growable buffer, tracks its length as it grows)
      T(length)                               a new zero-filled buffer of length elements
      T(iterable)                             a new buffer holding the values
    byte_offset must be a multiple of BYTES_PER_ELEMENT and the view must fit in the buffer,
    else ValueError (JavaScript's RangeError).

    Indexing takes negative indices; an index out of range raises IndexError.  A slice returns
    a *copy* (a new typed array over a new buffer), like Python sequences; subarray(begin, end)
    returns a view, like JavaScript.  Integer elements take ints in the element type's range
    (OverflowError otherwise: nothing wraps silently); float elements take floats and ints.
    Equal to any list, tuple or typed array with equal elements.  Exposes its memory through
    the buffer protocol with the element's struct format (b B h H i I q Q f d), so numpy.asarray()
    and memoryview() are zero-copy.  Posting one on a MessagePort shares its memory.
    """
    cdef readonly SharedArrayBuffer buffer   # None until initialized
    cdef char *base          # the first element; the block never moves
    cdef Py_ssize_t offset   # byte_offset
    cdef Py_ssize_t fixed    # element count, or -1: tracks the (growable) buffer's length
    cdef int code            # RP_T_*, from the concrete class; -1 for _TypedArray itself
    cdef int itemsize        # 0 when code is -1

    def __cinit__(self, *args, **kwargs):
        self.code = _code_of_type(type(self))
        self.itemsize = _kind(self.code).size

    def __init__(self, buffer=0, byte_offset=0, length=None):
        cdef Py_ssize_t off, n, i
        cdef list values
        if self.code < 0:
            raise TypeError(f"{type(self).__name__} has no element type: use one of the typed "
                            f"array classes (Int8Array ... Float64Array) or a subclass of one")
        if self.buffer is not None:
            raise TypeError(f"{type(self).__name__} is already initialized")
        if isinstance(buffer, SharedArrayBuffer):
            off = _as_size(byte_offset, "byte_offset")
            n = -1 if length is None else _as_size(length, "length")
            self._setup(<SharedArrayBuffer>buffer, off, n)
            return
        if (byte_offset is not None and byte_offset != 0) or length is not None:
            raise TypeError(f"{type(self).__name__}(): byte_offset and length apply only to a "
                            f"SharedArrayBuffer")
        if PyIndex_Check(buffer):
            self._alloc(_as_size(buffer, "length"))
            return
        if isinstance(buffer, (str, bytes, bytearray, memoryview)) or \
                not hasattr(buffer, "__iter__"):
            raise TypeError(f"{type(self).__name__}() takes a SharedArrayBuffer, a length or an "
                            f"iterable of numbers, not {type(buffer).__name__}")
        values = list(buffer)
        self._alloc(len(values))
        for i in range(len(values)):
            self._set(i, values[i])

    cdef int _setup(self, SharedArrayBuffer buf, Py_ssize_t off, Py_ssize_t n) except -1:
        cdef rp_sab *s = buf._s()
        cdef Py_ssize_t blen = <Py_ssize_t>rp_sab_length(s)
        cdef str name = type(self).__name__
        if off % self.itemsize:
            raise ValueError(f"{name}: byte_offset ({off}) must be a multiple of "
                             f"BYTES_PER_ELEMENT ({self.itemsize})")
        if off > blen:
            raise ValueError(f"{name}: byte_offset ({off}) is past the end of the buffer "
                             f"({blen} bytes)")
        if n < 0:
            if not rp_sab_growable(s):
                if (blen - off) % self.itemsize:
                    raise ValueError(f"{name}: the buffer's byte_length minus byte_offset "
                                     f"({blen - off}) must be a multiple of BYTES_PER_ELEMENT "
                                     f"({self.itemsize})")
                n = (blen - off) // self.itemsize
        elif n > (blen - off) // self.itemsize:
            raise ValueError(f"{name}: length {n} at byte_offset {off} does not fit in the "
                             f"buffer ({blen} bytes)")
        self.buffer = buf
        self.base = <char *>rp_sab_data(s) + off
        self.offset = off
        self.fixed = n
        return 0

    cdef int _alloc(self, Py_ssize_t n) except -1:
        if n > PY_SSIZE_T_MAX // self.itemsize:
            raise ValueError("length is too large")
        return self._setup(SharedArrayBuffer(n * self.itemsize), 0, n)

    cdef int _ready(self) except -1:
        if self.buffer is None:
            raise ValueError(f"{type(self).__name__} is not initialized")
        return 0

    cdef inline Py_ssize_t _len(self) noexcept:
        if self.fixed >= 0:
            return self.fixed
        return (<Py_ssize_t>rp_sab_length(self.buffer.sab) - self.offset) // self.itemsize

    cdef Py_ssize_t _index(self, object key, Py_ssize_t n) except -1:
        key = PyNumber_Index(key)
        if key < 0:
            key = key + n
        if key < 0 or key >= n:
            raise IndexError(f"{type(self).__name__} index out of range")
        return <Py_ssize_t>key

    cdef inline object _get(self, Py_ssize_t i):
        return _from_val(self.code, rp_elem_get(self.code, self.base + i * self.itemsize))

    cdef inline int _set(self, Py_ssize_t i, object v) except -1:
        cdef rp_val x
        _to_val(self.code, v, &x)
        rp_elem_set(self.code, self.base + i * self.itemsize, x)
        return 0

    def __len__(self):
        return self._len()

    @property
    def length(self):
        return self._len()

    @property
    def byte_offset(self):
        return self.offset

    @property
    def byte_length(self):
        return self._len() * self.itemsize

    def __getitem__(self, key):
        cdef Py_ssize_t n = self._len(), i, j
        cdef _TypedArray out
        self._ready()
        if PyIndex_Check(key):
            return self._get(self._index(key, n))
        if isinstance(key, slice):
            r = range(*(<slice>key).indices(n))
            out = _new_typed(self.code, len(r))
            j = 0
            for i in r:
                rp_elem_set(self.code, out.base + j * self.itemsize,
                            rp_elem_get(self.code, self.base + i * self.itemsize))
                j += 1
            return out
        raise TypeError(f"{type(self).__name__} indices must be integers or slices, not "
                        f"{type(key).__name__}")

    def __setitem__(self, key, value):
        cdef Py_ssize_t n = self._len(), i, j, m
        cdef rp_val *vals
        self._ready()
        if PyIndex_Check(key):
            self._set(self._index(key, n), value)
            return
        if not isinstance(key, slice):
            raise TypeError(f"{type(self).__name__} indices must be integers or slices, not "
                            f"{type(key).__name__}")
        r = range(*(<slice>key).indices(n))
        values = list(value)
        m = len(r)
        if len(values) != m:
            raise ValueError(f"cannot assign {len(values)} values to a slice of {m} elements "
                             f"(typed arrays cannot be resized)")
        # convert everything first: a bad value leaves the array untouched
        vals = <rp_val *>malloc(<size_t>(m if m else 1) * sizeof(rp_val))
        if vals == NULL:
            raise MemoryError()
        try:
            for j in range(m):
                _to_val(self.code, values[j], &vals[j])
            j = 0
            for i in r:
                rp_elem_set(self.code, self.base + i * self.itemsize, vals[j])
                j += 1
        finally:
            free(vals)

    def __iter__(self):
        cdef Py_ssize_t i = 0
        while i < self._len():
            yield self._get(i)
            i += 1

    def tolist(self):
        """The elements as a list of ints or floats."""
        cdef Py_ssize_t n = self._len(), i
        cdef list out = PyList_New(n)
        for i in range(n):
            v = self._get(i)
            Py_INCREF(v)
            PyList_SET_ITEM(out, i, v)
        return out

    def subarray(self, begin=0, end=None):
        """A view of elements [begin, end) over the same memory (negative indices count from
        the end, as in JavaScript)."""
        cdef Py_ssize_t n = self._len()
        cdef Py_ssize_t b = _relative(begin, n, 0, "begin")
        cdef Py_ssize_t e = _relative(end, n, n, "end")
        cdef _TypedArray out
        self._ready()
        out = _TA_TYPES[self.code].__new__(_TA_TYPES[self.code])
        out._setup(self.buffer, self.offset + b * self.itemsize, e - b if e > b else 0)
        return out

    # Atomic operations on one element, as methods (see _atomics.pxi): arr.add(i, v) is
    # atomics.add(arr, i, v), with the same checks and errors; bound once per thread
    # (add = arr.add) they are the fastest way to reach the atomics from Python.  Not binding:
    # a plain C method binds to a builtin method, whose call passes self borrowed, where the
    # interpreter unpacks a bound Cython function and takes references to self and the function
    # (on a free-threaded build, atomic writes to fields every thread using the array writes).

    @cython.binding(False)
    def load(self, index, /):
        """Atomically read self[index] (atomics.load)."""
        return _rmw_method(self, "load", RP_OP_LOAD, index, None)

    @cython.binding(False)
    def store(self, index, value, /):
        """Atomically write value to self[index]; return the value stored (atomics.store)."""
        return _rmw_method(self, "store", RP_OP_STORE, index, value)

    @cython.binding(False)
    def add(self, index, value, /):
        """Atomically add value to self[index]; return the old value (atomics.add)."""
        return _rmw_method(self, "add", RP_OP_ADD, index, value)

    @cython.binding(False)
    def sub(self, index, value, /):
        """Atomically subtract value from self[index]; return the old value (atomics.sub)."""
        return _rmw_method(self, "sub", RP_OP_SUB, index, value)

    @cython.binding(False)
    def and_(self, index, value, /):
        """Atomically self[index] &= value (integers only); return the old value (atomics.and_)."""
        return _rmw_method(self, "and_", RP_OP_AND, index, value)

    @cython.binding(False)
    def or_(self, index, value, /):
        """Atomically self[index] |= value (integers only); return the old value (atomics.or_)."""
        return _rmw_method(self, "or_", RP_OP_OR, index, value)

    @cython.binding(False)
    def xor(self, index, value, /):
        """Atomically self[index] ^= value (integers only); return the old value (atomics.xor)."""
        return _rmw_method(self, "xor", RP_OP_XOR, index, value)

    @cython.binding(False)
    def exchange(self, index, value, /):
        """Atomically set self[index] to value; return the old value (atomics.exchange)."""
        return _rmw_method(self, "exchange", RP_OP_XCHG, index, value)

    @cython.binding(False)
    def compare_exchange(self, index, expected, replacement, /):
        """Atomically: if self[index] == expected, set it to replacement; return the old value
        (atomics.compare_exchange)."""
        return _cas_method(self, index, expected, replacement)

    def __eq__(self, other):
        if isinstance(other, _TypedArray) or isinstance(other, (list, tuple, range)):
            return self.tolist() == list(other)
        return NotImplemented

    def __ne__(self, other):
        if isinstance(other, _TypedArray) or isinstance(other, (list, tuple, range)):
            return self.tolist() != list(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        cdef Py_ssize_t n = self._len()
        if n <= REPR_MAX:
            items = ", ".join([repr(v) for v in self.tolist()])
        else:
            items = ", ".join([repr(self._get(i)) for i in range(REPR_MAX)]) + ", ..."
        return f"{type(self).__name__}([{items}])"

    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} cannot be pickled; post it on a MessagePort "
                        f"to share it")

    def __getbuffer__(self, Py_buffer *view, int flags):
        cdef Py_ssize_t n = self._len()
        cdef Py_ssize_t *dims = NULL
        self._ready()
        view.buf = self.base
        view.obj = self
        view.len = n * self.itemsize
        view.readonly = 0
        if (flags & PyBUF_ND) == PyBUF_ND:
            dims = _new_dims(n, self.itemsize)
            view.itemsize = self.itemsize
            view.format = <char *>_format_of(self.code) if (flags & PyBUF_FORMAT) else NULL
            view.shape = dims
            view.strides = &dims[1] if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        else:
            # a simple (bytes) request: the raw bytes
            view.itemsize = 1
            view.format = <char *>_format_of(RP_T_U8) if (flags & PyBUF_FORMAT) else NULL
            view.shape = NULL
            view.strides = NULL
        view.ndim = 1
        view.suboffsets = NULL
        view.internal = dims

    def __releasebuffer__(self, Py_buffer *view):
        free(view.internal)
        view.internal = NULL

    cdef int _encode_shared(self, Writer *w) except -1:
        cdef uint32_t k
        if self.buffer is None:
            raise DataCloneError(f"{type(self).__name__} is not initialized")
        k = _w_sab(w, self.buffer.sab)
        w_tag_varint(w, b'S', k)
        w_byte(w, <unsigned char>(1 + self.code))
        w_varint(w, <uint64_t>self.offset)
        w_varint(w, 0 if self.fixed < 0 else <uint64_t>self.fixed + 1)
        return 0


cdef _TypedArray _new_typed(int code, Py_ssize_t n):
    """A new typed array of n zeroed elements of type code, over a new buffer."""
    cdef _TypedArray out = _TA_TYPES[code].__new__(_TA_TYPES[code])
    out._alloc(n)
    return out


# The public classes: _TypedArray with one row of the element table each (_code_of_type finds
# the row by the class name), so a class is its docstring and its BYTES_PER_ELEMENT.

cdef class Int8Array(_TypedArray):
    """Int8Array(buffer, byte_offset=0, length=None) | Int8Array(length) | Int8Array(iterable):
    int8 elements over a SharedArrayBuffer (struct format 'b')."""
    BYTES_PER_ELEMENT = 1


cdef class Uint8Array(_TypedArray):
    """Uint8Array(buffer, byte_offset=0, length=None) | Uint8Array(length) | Uint8Array(iterable):
    uint8 elements over a SharedArrayBuffer (struct format 'B')."""
    BYTES_PER_ELEMENT = 1


cdef class Int16Array(_TypedArray):
    """Int16Array(buffer, byte_offset=0, length=None) | Int16Array(length) | Int16Array(iterable):
    int16 elements over a SharedArrayBuffer (struct format 'h')."""
    BYTES_PER_ELEMENT = 2


cdef class Uint16Array(_TypedArray):
    """Uint16Array(buffer, byte_offset=0, length=None) | Uint16Array(length) |
    Uint16Array(iterable): uint16 elements over a SharedArrayBuffer (struct format 'H')."""
    BYTES_PER_ELEMENT = 2


cdef class Int32Array(_TypedArray):
    """Int32Array(buffer, byte_offset=0, length=None) | Int32Array(length) | Int32Array(iterable):
    int32 elements over a SharedArrayBuffer (struct format 'i')."""
    BYTES_PER_ELEMENT = 4


cdef class Uint32Array(_TypedArray):
    """Uint32Array(buffer, byte_offset=0, length=None) | Uint32Array(length) |
    Uint32Array(iterable): uint32 elements over a SharedArrayBuffer (struct format 'I')."""
    BYTES_PER_ELEMENT = 4


cdef class BigInt64Array(_TypedArray):
    """BigInt64Array(buffer, byte_offset=0, length=None) | BigInt64Array(length) |
    BigInt64Array(iterable): int64 elements over a SharedArrayBuffer (struct format 'q')."""
    BYTES_PER_ELEMENT = 8


cdef class BigUint64Array(_TypedArray):
    """BigUint64Array(buffer, byte_offset=0, length=None) | BigUint64Array(length) |
    BigUint64Array(iterable): uint64 elements over a SharedArrayBuffer (struct format 'Q')."""
    BYTES_PER_ELEMENT = 8


cdef class Float32Array(_TypedArray):
    """Float32Array(buffer, byte_offset=0, length=None) | Float32Array(length) |
    Float32Array(iterable): float32 elements over a SharedArrayBuffer (struct format 'f')."""
    BYTES_PER_ELEMENT = 4


cdef class Float64Array(_TypedArray):
    """Float64Array(buffer, byte_offset=0, length=None) | Float64Array(length) |
    Float64Array(iterable): float64 elements over a SharedArrayBuffer (struct format 'd')."""
    BYTES_PER_ELEMENT = 8


cdef tuple _kind_names():
    return tuple([_kind_name(code) for code in range(RP_T_COUNT)])


# indexed by RP_T_* (module globals: per interpreter, as the types themselves).  No loop or
# comprehension at module level: Cython keeps the loop variable of module-level code in a
# process-wide C static, which interpreters initialising the module at once overwrite under
# each other (a None, or another interpreter's type, where this one's was).  Inside a function
# it is a C local.
_TA_TYPES = (Int8Array, Uint8Array, Int16Array, Uint16Array, Int32Array, Uint32Array,
             BigInt64Array, BigUint64Array, Float32Array, Float64Array)
_TYPE_NAMES = _kind_names()


# ---------------------------------------------------------------------------- decoding

cdef object _decode_shared(Reader *r):
    cdef SharedArrayBuffer b = _r_sab(r)
    cdef unsigned char kind = r_byte(r)
    cdef uint64_t off, n1, blen
    cdef int code
    cdef _TypedArray out
    if kind == 0:
        return b
    if kind > RP_T_COUNT:
        raise _decode_error("bad shared object kind")
    code = kind - 1
    off = r_varint(r)
    n1 = r_varint(r)
    blen = rp_sab_length(b.sab)
    if off > blen or (n1 != 0 and n1 - 1 > blen):
        raise _decode_error("typed array out of its buffer's bounds")
    out = _TA_TYPES[code].__new__(_TA_TYPES[code])
    try:
        out._setup(b, <Py_ssize_t>off, -1 if n1 == 0 else <Py_ssize_t>(n1 - 1))
    except ValueError as e:
        raise _decode_error(str(e)) from None
    return out
