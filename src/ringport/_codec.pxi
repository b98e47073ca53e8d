# The structured-clone codec: Python values <-> bytes, written straight into a message body.
#
# Wire format: a flags byte (bit 0: the value has back-references, so the decoder must keep a
# memo; other bits must be 0), then one tag byte per value and its payload; counts and lengths
# are LEB128 varints.
#   N T F           None, True, False
#   i <8>           int that fits int64 (little endian)      I <varint n> <n bytes>  any other int
#   f <8>           float64                                   c <8><8>                complex
#   a <n> <bytes>   ASCII str                                 u <kind> <n> <pad> <n*kind bytes> str
#   b <n> <bytes>   bytes                                     B <n> <bytes>           bytearray
#   l t d s z <n>   list, tuple, dict (n pairs), set, frozenset, followed by their items
#   R <k>           the k-th memoized object again (shared references and cycles)
#   D <d> <k>       right after a tuple completed at nesting depth d: the tuple was memoized
#                   while its items were encoded (a cycle through it): use object k instead.
#                   The depth tells apart nested tuples that complete at the same position.
#   P <n> <pickle> <m> then m entries: the pickle's buffers, o <n> <bytes> (in band) | h <k>
#                   (handle k: a block), and the shared objects it holds, S ... as below
#                   (the pickle names them by their order; only with allow_pickle)
#   A <dtype> <order> <ndim> <shape...> then o <n> <bytes> | h <k>   a numpy array of plain
#                   dtype: its bytes in memory order, copied once (a big one in its own block)
#   Y <typecode> then o | h                                  an array.array (exact type)
#   M <n> <format> <readonly> <ndim> <shape...> then o | h    a memoryview (exact type) of one
#                   native item format: its items in C order (a strided one copied once)
#   X o | h         a bytearray of OOB_MIN bytes or more, out of band like the arrays
#   H <k>           a MessagePort, moved in by handle k
#   S <k>           a shared object (SharedArrayBuffer, typed array) by handle k: see _shm.pxi
# Memoized (in this order on both sides): list, dict, set, bytearray, array.array, memoryview,
# numpy arrays and shared objects when their
# tag is written; tuple and frozenset once complete; pickled objects once pickled.
#
# Encoding and decoding are iterative (an explicit stack of frames, one per open container), so
# nesting depth is bounded by memory, not by the C stack.  The decoder treats its input as
# untrusted: every read is bounds-checked, counts are checked against the bytes left (each value
# still expected takes at least one byte, so memory and time stay proportional to the input),
# a pickle frame is refused unless the receiver allows pickle, and bad input raises DecodeError.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.buffer cimport (PyBUF_ANY_CONTIGUOUS, PyBUF_FORMAT, PyBUF_ND, PyBUF_SIMPLE,
                             PyBUF_WRITABLE,
                             PyBuffer_Release, PyObject_GetBuffer)
from cpython.dict cimport PyDict_New, PyDict_Next, PyDict_SetItem, PyDict_Size
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.set cimport PySet_Add, PySet_New, PyFrozenSet_New
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    int PyUnicode_KIND(object o)
    void *PyUnicode_DATA(object o)
    object PyUnicode_FromKindAndData(int kind, const void *buffer, Py_ssize_t size)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    object PyByteArray_FromStringAndSize(const char *s, Py_ssize_t n)
    object PyComplex_FromDoubles(double real, double imag)
    double PyComplex_RealAsDouble(object op) except? -1.0
    double PyComplex_ImagAsDouble(object op) except? -1.0
    PyObject *PyTuple_GET_ITEM(PyObject *p, Py_ssize_t pos)
    Py_ssize_t PyTuple_GET_SIZE(PyObject *p)
    PyObject *PyList_GET_ITEM(PyObject *p, Py_ssize_t pos)
    Py_ssize_t PyList_GET_SIZE(object o)
    int PyList_Append(object lst, object item) except -1
    object PySequence_Tuple(object o)

# pickle is imported on first use: it pulls in re, enum and more, and every subinterpreter
# worker would pay that at start-up (~10 ms) even if it never meets a pickled value.
cdef object _pickle_module():
    import pickle
    return pickle

# Out-of-band buffers of a pickled object at least this big travel in their own block (copied
# once, adopted by the receiver without a copy); smaller ones are inlined in the message.
cdef enum:
    STRCACHE = 64           # per-port cache of decoded short ASCII strings (a power of two)
    STRCACHE_MAXLEN = 32
    OOB_MIN = 65536
    STACK_BYTES = 1024
    STACK_WORDS = STACK_BYTES // 8
    MEMO_STACK = 32
    MEMO_LINEAR = 8
    FRAMES_STACK = 32
    PORT_NO_PICKLE = 1      # rp_handle.reserved of a port handle: the port refuses pickle

# ---------------------------------------------------------------------------- writer

cdef struct Writer:
    unsigned char *buf
    size_t pos
    size_t cap
    rp_node *node          # the heap node buf lives in, once the stack buffer overflowed
    rp_handle *handles
    uint32_t nhandles
    uint32_t hcap
    uint32_t flags
    bint allow_handles     # False for dumps(): bytes cannot carry ports or shared memory
    bint remote            # for a channel shared with another process: no pointers; shared
                           # buffers and ports go as descriptors (xfds)
    rp_xfd *xfds           # remote: what goes over the channel's socket (descriptors owned)
    int nx
    int xcap
    PyObject *relays       # remote: a list of (local port, shared port) to relay once sent
    bint unshared          # the channel reaches another machine: no shared memory in it
    PyObject *port_hook    # dumps(ports=...): port -> int, written as H <int>; else NULL
    bint allow_pickle      # False: a value without a native form is a DataCloneError
    # memo: open addressing, object address -> index
    void **mkeys
    Py_ssize_t *mvals
    size_t mcap
    size_t mcount
    Py_ssize_t next_index
    bint memo_heap
    bint has_refs          # an R or D was written: the decoder must keep a memo
    # remote (a message to another process, sent by _send): one big numpy array's bytes are
    # not copied into buf but sent from the array itself (rp_channel_send_sg), as the piece
    # between buf[:sg_at] and buf[sg_at:pos]; sg_view holds the array's buffer until then
    bint sg_ok
    const void *sg_ptr
    size_t sg_at
    size_t sg_len
    Py_buffer sg_view
    # remote, posted on an unbounded channel: big arrays may go through its arena (enc_arena)
    rp_channel *xch
    int xside


cdef inline void w_init(Writer *w, unsigned char *stackbuf, size_t stackcap,
                        void **mkeys, Py_ssize_t *mvals) noexcept:
    w.buf = stackbuf
    w.cap = stackcap
    w.buf[sizeof(rp_msg)] = 0   # the codec's flags byte, filled in by w_flags()
    w.pos = sizeof(rp_msg) + 1
    w.node = NULL
    w.handles = NULL
    w.nhandles = 0
    w.hcap = 0
    w.flags = 0
    w.allow_handles = True
    w.remote = False
    w.xfds = NULL
    w.nx = 0
    w.xcap = 0
    w.relays = NULL
    w.unshared = False
    w.port_hook = NULL
    w.allow_pickle = True
    w.mkeys = mkeys
    w.mvals = mvals
    w.mcount = 0
    w.next_index = 0
    w.memo_heap = False
    w.has_refs = False
    # the memo table is cleared on first use: most messages never memoize anything
    w.mcap = 0
    w.sg_ok = False
    w.sg_ptr = NULL
    w.sg_at = 0
    w.sg_len = 0
    w.xch = NULL
    w.xside = 0


cdef inline void w_flags(Writer *w) noexcept:
    w.buf[sizeof(rp_msg)] = 1 if w.has_refs else 0


cdef void w_release(Writer *w) noexcept:
    """Free what the writer owns, releasing handles not yet sent."""
    cdef uint32_t i
    cdef rp_release_fn f
    cdef int j
    if w.xch != NULL:   # not sent: the arena records it took are free again
        arena_leftovers(w.xch, w.handles, w.nhandles, w.xside)
    for i in range(w.nhandles):
        f = w.handles[i].release
        w.handles[i].release = NULL
        if f != NULL:
            f(w.handles[i].ptr, w.handles[i].aux)
    w.nhandles = 0
    for i in range(<uint32_t>w.nx):
        for j in range(w.xfds[i].nfds):
            close(w.xfds[i].fds[j])
    w.nx = 0
    free(w.xfds)
    w.xfds = NULL
    Py_XDECREF(w.relays)
    w.relays = NULL
    if w.handles != NULL:
        free(w.handles)
        w.handles = NULL
    if w.node != NULL:
        rp_node_free(w.node)
        w.node = NULL
    if w.memo_heap:
        free(w.mkeys)
        free(w.mvals)
        w.memo_heap = False
    if w.sg_ptr != NULL:
        w.sg_ptr = NULL
        w.sg_len = 0
        PyBuffer_Release(&w.sg_view)


cdef int w_grow(Writer *w, size_t need) except -1:
    cdef size_t newcap = w.cap * 2
    cdef rp_node *n
    if need > (<size_t>-1) - w.pos - 64:
        raise MemoryError("message too large")
    while newcap < w.pos + need:
        newcap *= 2
    if w.node == NULL:
        n = rp_node_alloc(newcap)
        if n == NULL:
            raise MemoryError()
        memcpy(rp_node_body(n), w.buf, w.pos)
    else:
        n = rp_node_realloc(w.node, newcap)
        if n == NULL:
            raise MemoryError()
    w.node = n
    w.buf = <unsigned char *>rp_node_body(n)
    w.cap = newcap
    return 0


cdef inline int w_need(Writer *w, size_t n) except -1:
    if w.pos + n > w.cap:
        w_grow(w, n)
    return 0


cdef inline int w_byte(Writer *w, unsigned char b) except -1:
    if w.pos + 1 > w.cap:
        w_grow(w, 1)
    w.buf[w.pos] = b
    w.pos += 1
    return 0


cdef inline int w_varint(Writer *w, uint64_t v) except -1:
    if w.pos + 10 > w.cap:
        w_grow(w, 10)
    while v >= 0x80:
        w.buf[w.pos] = <unsigned char>(v | 0x80)
        w.pos += 1
        v >>= 7
    w.buf[w.pos] = <unsigned char>v
    w.pos += 1
    return 0


cdef inline int w_tag_varint(Writer *w, unsigned char tag, uint64_t v) except -1:
    w_byte(w, tag)
    return w_varint(w, v)


cdef inline int w_ref(Writer *w, uint64_t idx) except -1:
    w.has_refs = True
    return w_tag_varint(w, b'R', idx)


cdef inline int w_raw(Writer *w, const void *p, size_t n) except -1:
    if w.pos + n > w.cap:
        w_grow(w, n)
    memcpy(w.buf + w.pos, p, n)
    w.pos += n
    return 0


cdef inline int w_u64(Writer *w, unsigned char tag, uint64_t v) except -1:
    # Fixed-size numbers travel in native byte order, which is little endian on every platform
    # ringport builds for (see RP_STATIC_ASSERT_LE in rp_channel.h): messages never leave the
    # process, and dumps() output is documented as not portable across byte orders.
    if w.pos + 9 > w.cap:
        w_grow(w, 9)
    w.buf[w.pos] = tag
    memcpy(w.buf + w.pos + 1, &v, 8)
    w.pos += 9
    return 0


cdef uint32_t w_add_handle(Writer *w, rp_release_fn release, void *ptr, uint64_t aux,
                           uint32_t kind) except? 0xFFFFFFFF:
    cdef rp_handle *h
    cdef uint32_t newcap
    if w.nhandles == w.hcap:
        newcap = 8 if w.hcap == 0 else w.hcap * 2
        h = <rp_handle *>realloc(w.handles, newcap * sizeof(rp_handle))
        if h == NULL:
            # the caller still owns ptr: release it so nothing leaks
            if release != NULL:
                release(ptr, aux)
            raise MemoryError()
        w.handles = h
        w.hcap = newcap
    w.handles[w.nhandles].release = release
    w.handles[w.nhandles].ptr = ptr
    w.handles[w.nhandles].aux = aux
    w.handles[w.nhandles].kind = kind
    w.handles[w.nhandles].reserved = 0
    w.nhandles += 1
    return w.nhandles - 1


# ---- memo (address -> index): a short list scanned linearly (most messages memoize a few
# containers at most), then an open-addressing table with linear probing

cdef inline size_t _mhash(void *p, size_t mask) noexcept:
    cdef size_t h = <size_t>p
    h = (h >> 4) * <size_t>0x9E3779B97F4A7C15
    return (h >> 16) & mask


cdef inline Py_ssize_t memo_get(Writer *w, void *key) noexcept:
    cdef size_t i
    if w.mcap == 0:
        for i in range(w.mcount):
            if w.mkeys[i] == key:
                return w.mvals[i]
        return -1
    return memo_find(w, key)


cdef Py_ssize_t memo_find(Writer *w, void *key) noexcept:
    cdef size_t mask = w.mcap - 1
    cdef size_t i = _mhash(key, mask)
    while w.mkeys[i] != NULL:
        if w.mkeys[i] == key:
            return w.mvals[i]
        i = (i + 1) & mask
    return -1


cdef int memo_rehash(Writer *w, size_t newcap, void **ok, Py_ssize_t *ov,
                     size_t n) except -1:
    """Insert the n old entries (ok, ov) into a fresh table of newcap slots."""
    cdef void **nk
    cdef Py_ssize_t *nv
    cdef size_t j, i, mask = newcap - 1
    if newcap <= MEMO_STACK and not w.memo_heap:
        nk = w.mkeys
        nv = w.mvals
    else:
        nk = <void **>malloc(newcap * sizeof(void *))
        nv = <Py_ssize_t *>malloc(newcap * sizeof(Py_ssize_t))
        if nk == NULL or nv == NULL:
            free(nk)
            free(nv)
            raise MemoryError()
    memset(nk, 0, newcap * sizeof(void *))
    for j in range(n):
        if ok[j] != NULL:
            i = _mhash(ok[j], mask)
            while nk[i] != NULL:
                i = (i + 1) & mask
            nk[i] = ok[j]
            nv[i] = ov[j]
    if nk != w.mkeys and w.memo_heap:
        free(w.mkeys)
        free(w.mvals)
    if nk != w.mkeys:
        w.memo_heap = True
    w.mkeys = nk
    w.mvals = nv
    w.mcap = newcap
    return 0


cdef int memo_put(Writer *w, void *key) except -1:
    cdef size_t mask, i
    cdef void *tk[MEMO_LINEAR]
    cdef Py_ssize_t tv[MEMO_LINEAR]
    if w.mcap == 0:
        if w.mcount < MEMO_LINEAR:
            w.mkeys[w.mcount] = key
            w.mvals[w.mcount] = w.next_index
            w.next_index += 1
            w.mcount += 1
            return 0
        memcpy(tk, w.mkeys, sizeof(tk))
        memcpy(tv, w.mvals, sizeof(tv))
        memo_rehash(w, MEMO_STACK, tk, tv, MEMO_LINEAR)
    elif (w.mcount + 1) * 2 > w.mcap:
        memo_rehash(w, w.mcap * 2, w.mkeys, w.mvals, w.mcap)
    mask = w.mcap - 1
    i = _mhash(key, mask)
    while w.mkeys[i] != NULL:
        i = (i + 1) & mask
    w.mkeys[i] = key
    w.mvals[i] = w.next_index
    w.next_index += 1
    w.mcount += 1
    return 0


# ---- encoding of leaves

cdef int enc_str(Writer *w, object v) except -1:
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(v)
    cdef int kind
    cdef size_t pad
    if PyUnicode_IS_COMPACT_ASCII(v):
        w_tag_varint(w, b'a', <uint64_t>n)
        return w_raw(w, PyUnicode_DATA(v), <size_t>n)
    kind = PyUnicode_KIND(v)
    w_byte(w, b'u')
    w_byte(w, <unsigned char>kind)
    w_varint(w, <uint64_t>n)
    # align the code units to their size, relative to the (8-aligned) start of the body
    pad = (<size_t>kind - (w.pos % <size_t>kind)) % <size_t>kind
    w_need(w, pad)
    memset(w.buf + w.pos, 0, pad)
    w.pos += pad
    return w_raw(w, PyUnicode_DATA(v), <size_t>n * <size_t>kind)


cdef int enc_bigint(Writer *w, object v) except -1:
    cdef Py_ssize_t nbytes = (v.bit_length() + 8) // 8
    cdef bytes b = v.to_bytes(nbytes, "little", signed=True)
    w_tag_varint(w, b'I', <uint64_t>nbytes)
    return w_raw(w, PyBytes_AS_STRING(b), <size_t>nbytes)


cdef int enc_buffer(Writer *w, unsigned char tag, object v) except -1:
    cdef Py_buffer view
    PyObject_GetBuffer(v, &view, PyBUF_SIMPLE)
    try:
        w_tag_varint(w, tag, <uint64_t>view.len)
        w_raw(w, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int enc_pickled(Writer *w, object v) except -1:
    """The pickle fallback: P <n> <pickle> <m> then its m out-of-band buffers and the shared
    objects (SharedArrayBuffer, typed arrays) it holds, which stay shared: the pickle refers to
    them by their place in this list, and they travel by handle like any other."""
    cdef list bufs = [], shared = []
    cdef bytes data
    cdef Py_buffer view
    if not w.allow_pickle:
        raise DataCloneError(
            f"{type(v).__module__}.{type(v).__qualname__} object could not be cloned: the "
            f"codec has no native form for it and pickle is off (allow_pickle=False)")
    try:
        if w.allow_handles or w.remote:
            data = _pickle_sharing(v, bufs, shared)
        else:
            data = _pickle_module().dumps(v, protocol=5, buffer_callback=bufs.append)
    except BaseException as e:
        if not isinstance(e, Exception):
            raise
        raise DataCloneError(
            f"{type(v).__module__}.{type(v).__qualname__} object could not be cloned: {e}") from e
    w.flags |= RP_MSG_CODE
    w_tag_varint(w, b'P', <uint64_t>PyBytes_GET_SIZE(data))
    w_raw(w, PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))
    w_varint(w, <uint64_t>(len(bufs) + len(shared)))
    for pb in bufs:
        try:
            raw = pb.raw()
        except BufferError:
            raw = memoryview(bytes(pb))   # non-contiguous: its contiguous copy
        PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE)
        try:
            enc_data(w, view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
            pb.release()
    for s in shared:
        (<_Shared>s)._encode_shared(w)
    return 0


def _shared_slot(index):
    """Stands for the index-th shared object of a ringport message inside its pickle: only the
    message's own unpickler resolves it (see _unpickle_sharing)."""
    raise DecodeError("a ringport shared-object reference can only be unpickled from the "
                      "message that carried it")


# The pickler and unpickler classes that keep shared objects shared, made on first use (pickle
# is imported lazily) and cached per interpreter.
_sharing_classes = None


cdef tuple _sharing_pickle_classes():
    global _sharing_classes
    if _sharing_classes is not None:
        return _sharing_classes
    pickle = _pickle_module()
    slot = _shared_slot

    class SharingPickler(pickle.Pickler):
        # reducer_override is not consulted for the built-in types (int, str, list, ...),
        # so it costs a call only per object of another type
        def reducer_override(self, obj):
            if isinstance(obj, _Shared):
                self.shared.append(obj)
                return slot, (len(self.shared) - 1,)
            return NotImplemented

    class SharingUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "ringport._core" and name == "_shared_slot":
                return self.shared.__getitem__
            return super().find_class(module, name)

    _sharing_classes = (SharingPickler, SharingUnpickler)
    return _sharing_classes


cdef bytes _pickle_sharing(object v, list bufs, list shared):
    import io
    f = io.BytesIO()
    p = _sharing_pickle_classes()[0](f, protocol=5, buffer_callback=bufs.append)
    p.shared = shared
    p.dump(v)
    return f.getvalue()


cdef object _unpickle_sharing(bytes data, list buffers, list shared):
    import io
    u = _sharing_pickle_classes()[1](io.BytesIO(data), buffers=buffers)
    u.shared = shared
    return u.load()


# ---- bounds on a pickle before the unpickler sees it
#
# The unpickler allocates what some opcodes announce before it reads their bytes (a 13-byte
# BYTEARRAY8 can ask for gigabytes), and sizes its memo by the largest index a PUT names.  A
# trusted pickle never does either, so such a pickle is refused here: every counted length must
# fit in the bytes left, every memo index must be below the pickle's length.  What the objects a
# pickle builds allocate when they run (bytearray(10**12)) cannot be bounded here: that is why
# pickle is for trusted peers only (allow_pickle).

cdef enum:
    PK_NONE = 0      # no argument
    PK_FIX = 1       # a fixed-size argument of `size` bytes
    PK_COUNT = 2     # a little-endian count of `size` bytes, then that many bytes
    PK_LINE = 3      # a line ending in a newline
    PK_LINES = 4     # two lines
    PK_MEMO = 5      # a memo index of `size` bytes (or a line, size 0)
    PK_FRAME = 6     # an 8-byte frame length: the frame must fit in the bytes left


cdef int _pickle_op(unsigned char op, int *size) noexcept:
    """How the argument of pickle opcode op is laid out (PK_*), or -1 for no such opcode.
    (Opcodes from 0x80 up are listed as numbers: a bytes literal would compare as signed.)"""
    size[0] = 0
    if op in b"(.0123NQRabd}el]ost)u" or op in (0x81, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8f,
                                                 0x90, 0x91, 0x92, 0x93, 0x94, 0x97, 0x98):
        return PK_NONE
    if op in b"K" or op in (0x80, 0x82):       # BININT1, PROTO, EXT1
        size[0] = 1
        return PK_FIX
    if op in b"M" or op == 0x83:               # BININT2, EXT2
        size[0] = 2
        return PK_FIX
    if op in b"J" or op == 0x84:               # BININT, EXT4
        size[0] = 4
        return PK_FIX
    if op == b'G':                             # BINFLOAT
        size[0] = 8
        return PK_FIX
    if op in b"UC" or op in (0x8a, 0x8c):      # SHORT_BINSTRING/BYTES/UNICODE, LONG1
        size[0] = 1
        return PK_COUNT
    if op in b"TBX" or op == 0x8b:             # BINSTRING, BINBYTES, BINUNICODE, LONG4
        size[0] = 4
        return PK_COUNT
    if op in (0x8d, 0x8e, 0x96):               # BINUNICODE8, BINBYTES8, BYTEARRAY8
        size[0] = 8
        return PK_COUNT
    if op in b"ILSVFP":
        return PK_LINE
    if op in b"ci":                            # GLOBAL, INST
        return PK_LINES
    if op in b"hq":                            # BINGET, BINPUT
        size[0] = 1
        return PK_MEMO
    if op in b"jr":                            # LONG_BINGET, LONG_BINPUT
        size[0] = 4
        return PK_MEMO
    if op in b"gp":                            # GET, PUT
        return PK_MEMO
    if op == 0x95:                             # FRAME
        size[0] = 8
        return PK_FRAME
    return -1


cdef inline uint64_t _le(const unsigned char *p, int size) noexcept:
    cdef uint64_t v = 0
    cdef int i
    for i in range(size):
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


cdef int pickle_check(const unsigned char *p, size_t n) except -1:
    """Walk the opcodes of pickle p[0:n] up to STOP; DecodeError when one announces more than the
    pickle holds."""
    cdef const unsigned char *end = p + n
    cdef const unsigned char *q
    cdef unsigned char op
    cdef int how, size, lines
    cdef uint64_t v
    while p < end:
        op = p[0]
        p += 1
        how = _pickle_op(op, &size)
        if how < 0:
            raise _decode_error(f"bad pickle opcode {op:#04x}")
        if op == b'.':
            return 0
        if how == PK_LINE or how == PK_LINES or (how == PK_MEMO and size == 0):
            lines = 2 if how == PK_LINES else 1
            v = 0
            while lines:
                q = <const unsigned char *>memchr(p, b'\n', <size_t>(end - p))
                if q == NULL:
                    raise _decode_error("truncated pickle")
                if how == PK_MEMO:
                    if q - p > 18:
                        raise _decode_error("pickle memo index out of range")
                    while p < q:
                        if p[0] < b'0' or p[0] > b'9':
                            raise _decode_error("bad pickle memo index")
                        v = v * 10 + (p[0] - b'0')
                        p += 1
                    if v >= n:
                        raise _decode_error("pickle memo index out of range")
                p = q + 1
                lines -= 1
            continue
        if <size_t>(end - p) < <size_t>size:
            raise _decode_error("truncated pickle")
        v = _le(p, size)
        p += size
        if how == PK_COUNT or how == PK_FRAME:
            if v > <uint64_t>(end - p):
                raise _decode_error("a pickle opcode announces more bytes than it holds")
            if how == PK_COUNT:
                p += v
        elif how == PK_MEMO and v >= n:
            raise _decode_error("pickle memo index out of range")
    raise _decode_error("truncated pickle (no STOP)")


# ---- numpy arrays (without importing numpy: recognized by their type's name)

cdef extern from "Python.h":
    ctypedef struct PyTypeObject:
        const char *tp_name
        PyTypeObject *tp_base

cdef extern from "_glue.h":
    bint rp_is_ndarray(object o) noexcept


cdef inline int varint_len(uint64_t v) noexcept:
    cdef int k = 1
    while v >= 0x80:
        v >>= 7
        k += 1
    return k


cdef int w_varint_padded(Writer *w, uint64_t v, int extra) except -1:
    """v as a varint extra bytes longer than it needs: its last byte gets the continuation bit
    and zero digits follow, which r_varint reads as the same value (at most 10 bytes in all)."""
    if varint_len(v) + extra > 10:
        extra = 0
    w_varint(w, v)   # (which made room for 10 bytes from where it started)
    if extra > 0:
        w.buf[w.pos - 1] |= 0x80
        while extra > 1:
            w.buf[w.pos] = 0x80
            w.pos += 1
            extra -= 1
        w.buf[w.pos] = 0
        w.pos += 1
    return 0


cdef inline int remote_pad(size_t pos, size_t n) noexcept:
    """To another process, big data goes 16-aligned in the message where its varint can be
    padded that far (the receiver may then keep it where it is: r_in_node): the padding for data
    o <n> whose tag is at pos."""
    cdef int k = <int>((16 - (pos + 1 + <size_t>varint_len(n)) % 16) % 16)
    return k if varint_len(n) + k <= 10 else 0


cdef int enc_data(Writer *w, const void *buf, size_t n) except -1:
    """Bytes that may travel out of band: o <n> <bytes> inline, or h <k> in a block of their own."""
    cdef void *block
    cdef uint32_t hidx
    if w.remote and n >= OOB_MIN:
        w_byte(w, b'o')
        w_varint_padded(w, <uint64_t>n, remote_pad(w.pos - 1, n))
        return w_raw(w, buf, n)
    if w.allow_handles and n >= OOB_MIN:
        block = rp_warm_alloc(n)
        if block == NULL:
            raise MemoryError()
        with nogil:
            memcpy(block, buf, n)
        hidx = w_add_handle(w, rp_block_release, block, <uint64_t>n, RP_H_BLOCK)
        return w_tag_varint(w, b'h', hidx)
    w_tag_varint(w, b'o', <uint64_t>n)
    return w_raw(w, buf, n)


cdef object dec_data(Reader *r):
    """The counterpart of enc_data: a writable buffer (bytearray, or the adopted block)."""
    cdef unsigned char how = r_byte(r)
    if how == b'o':
        if r.xch != NULL:
            return r_block(r)
        return r_bytearray(r)
    if how == b'h':
        return _Block._adopt(r_handle(r, RP_H_BLOCK))
    if how == b'a':
        return r_arena(r)
    raise _decode_error("bad data tag")


# ---- arenas (rp_channel.h): a big array to another process over an unbounded channel is
# copied once, into the arena of the channel's direction, and viewed there by the receiver

cdef enum:
    ARENA_TAKEN = 0xA7E   # rp_handle.reserved (the reader's copy) once a view owns the record


cdef bint enc_arena(Writer *w, const void *buf, size_t n) except -1:
    """n bytes copied into the arena, the message naming the record: a <k> <n>; False when
    the arena has no room (or the channel is bounded): the caller sends them otherwise."""
    cdef void *dst = NULL
    cdef int64_t off
    cdef uint32_t k
    with nogil:   # (it may map in the arena's next pages)
        off = rp_channel_arena_alloc(w.xch, w.xside, <uint64_t>n, &dst)
    if off < 0:
        return False
    try:
        k = w_add_handle(w, NULL, NULL, <uint64_t>off, RP_H_XARENA)
    except BaseException:
        rp_xmap_free(rp_channel_arena_xmap(w.xch), w.xside, <uint64_t>off)
        raise
    # (from here w_release frees the record if the message is not sent)
    with nogil:
        memcpy(dst, buf, n)
    w_byte(w, b'a')
    w_varint(w, k)
    w_varint(w, <uint64_t>n)
    return True


cdef void arena_leftovers(rp_channel *ch, rp_handle *hs, uint32_t nh, int side=-1) noexcept:
    """Free the arena records of handles hs[:nh] that no view took: side -1, a message
    received on ch (records of the other side's arena), else one posted from side."""
    cdef rp_xmap *xm = rp_channel_arena_xmap(ch)
    cdef uint32_t i
    if xm == NULL:
        return
    if side < 0:
        side = 1 - rp_channel_local_side(ch)
    for i in range(nh):
        if hs[i].kind == RP_H_XARENA and hs[i].reserved != ARENA_TAKEN:
            rp_xmap_free(xm, side, hs[i].aux)


cdef class _ArenaRecord:
    """An arena record a received array views: freed, and the mapping let go, when it dies."""
    cdef rp_xmap *xm
    cdef int side
    cdef uint64_t off

    def __init__(self):
        raise TypeError("ringport._core._ArenaRecord cannot be created from Python")

    def __dealloc__(self):
        if self.xm != NULL:
            rp_xmap_free(self.xm, self.side, self.off)
            rp_xmap_decref(self.xm)
            self.xm = NULL


cdef object r_arena(Reader *r):
    """dec_data's a <k> <n>: the n bytes of an arena record, in place (a _Block whose base
    frees the record)."""
    cdef uint64_t k = r_varint(r)
    cdef uint64_t n = r_varint(r)
    cdef rp_handle *h
    cdef rp_xmap *xm
    cdef void *p
    cdef int side
    cdef _ArenaRecord rec
    cdef _Block b
    if r.xch == NULL or k >= r.nhandles or n > <uint64_t>PY_SSIZE_T_MAX:
        raise _decode_error("bad arena reference")
    h = &r.handles[k]
    if h.kind != RP_H_XARENA or h.reserved == ARENA_TAKEN:
        raise _decode_error("handle of the wrong kind, or used twice")
    xm = rp_channel_arena_xmap(r.xch)
    side = 1 - rp_channel_local_side(r.xch)
    p = NULL if xm == NULL else rp_xmap_view(xm, side, h.aux, n)
    if p == NULL:
        raise _decode_error("an arena reference outside the arena")
    rec = _ArenaRecord.__new__(_ArenaRecord)
    rp_xmap_incref(xm)
    rec.xm = xm
    rec.side = side
    rec.off = h.aux
    h.reserved = ARENA_TAKEN
    b = _Block.__new__(_Block)
    b.ptr = p
    b.size = <Py_ssize_t>n
    b.base = rec
    return b


def _in_arena(obj):
    """Private (tests): does obj (a numpy array, a memoryview) view an arena record, that is,
    did it arrive from another process copied once?"""
    while obj is not None and not isinstance(obj, _Block):
        obj = getattr(obj, "obj" if type(obj) is memoryview else "base", None)
    return obj is not None and isinstance((<_Block>obj).base, _ArenaRecord)


cdef int enc_ndarray(Writer *w, object a) except -1:
    """Encode a numpy array of plain dtype; returns 0, or 1 when it must be pickled instead."""
    cdef Py_buffer view
    cdef bytes ds
    cdef size_t at
    cdef int pad
    cdef bint taken = False
    dt = a.dtype
    if dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        return 1
    flags = a.flags
    if flags.c_contiguous:
        order = b'C'
    elif flags.f_contiguous:
        order = b'F'
    else:
        a = a.copy(order="C")   # non-contiguous: its contiguous copy
        order = b'C'
    ds = dt.str.encode("ascii")
    PyObject_GetBuffer(a, &view, PyBUF_ANY_CONTIGUOUS)
    try:
        w_tag_varint(w, b'A', <uint64_t>len(ds))
        w_raw(w, PyBytes_AS_STRING(ds), <size_t>len(ds))
        w_byte(w, order[0])
        shape = a.shape
        pad = 0
        if w.remote and <size_t>view.len >= OOB_MIN:
            # where enc_data's padding falls short of 16-alignment, pad the ndim varint too
            at = w.pos + varint_len(<uint64_t>a.ndim)
            for d in shape:
                at += varint_len(<uint64_t>d)
            pad = <int>((16 - (at + 1 + varint_len(<uint64_t>view.len)) % 16) % 16) - \
                (10 - varint_len(<uint64_t>view.len))
        w_varint_padded(w, <uint64_t>a.ndim, pad if pad > 0 else 0)
        for d in shape:
            w_varint(w, <uint64_t>d)
        if w.xch != NULL and <size_t>view.len >= OOB_MIN and \
                enc_arena(w, view.buf, <size_t>view.len):
            pass
        elif w.sg_ok and w.sg_ptr == NULL and <size_t>view.len >= OOB_MIN and view.len % 16 == 0:
            # to another process: the bytes go from the array itself when the message is sent
            # (a multiple of 16, so that what follows keeps its alignment in the message)
            w_byte(w, b'o')
            w_varint_padded(w, <uint64_t>view.len, remote_pad(w.pos - 1, <size_t>view.len))
            w.sg_at = w.pos
            w.sg_len = <size_t>view.len
            w.sg_view = view
            w.sg_ptr = view.buf   # (from here w_release releases the view)
            taken = True
        else:
            enc_data(w, view.buf, <size_t>view.len)
    finally:
        if not taken:
            PyBuffer_Release(&view)
    return 0


cdef object dec_ndarray(Reader *r):
    cdef Py_ssize_t ndim, j
    cdef bytes ds = r_bytes(r)
    cdef unsigned char order
    cdef list shape = []
    order = r_byte(r)
    if order != b'C' and order != b'F':
        raise _decode_error("bad array order")
    ndim = r_len(r, 1)
    for j in range(ndim):
        shape.append(r_varint(r))
    data = dec_data(r)
    if not _plain_dtype(ds):
        raise _decode_error(f"not a plain numpy dtype: {ds!r}")
    try:
        import numpy
    except ImportError as e:
        raise DecodeError(f"a numpy array arrived but numpy cannot be imported here: {e}") from e
    try:
        dt = numpy.dtype(ds.decode("ascii"))
        return numpy.frombuffer(data, dtype=dt).reshape(shape, order="C" if order == b'C' else "F")
    except Exception as e:
        raise DecodeError(f"invalid array in the message: {e}") from e


cdef bint _plain_dtype(bytes ds) noexcept:
    """Is ds the str of a plain numpy dtype, as enc_ndarray writes it: a byte order, a kind
    among b i u f c S U V m M, an item size, and for m and M an optional [unit]?  Nothing else
    reaches numpy.dtype(), which would parse any type description (objects, fields, ...)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(ds)
    cdef const unsigned char *end = p + PyBytes_GET_SIZE(ds)
    cdef const unsigned char *d
    cdef unsigned char kind
    if end - p < 3 or p[0] not in b"<>|=" or p[1] not in b"biufcSUVmM":
        return False
    kind = p[1]
    p += 2
    d = p
    while p < end and b'0' <= p[0] <= b'9':
        p += 1
    if p == d or p - d > 9:
        return False
    if p == end:
        return True
    if kind != b'm' and kind != b'M' or (end - 1)[0] != b']' or p[0] != b'[':
        return False
    p += 1
    while p < end - 1 and b'0' <= p[0] <= b'9':   # a multiplier, as in [10ns]
        p += 1
    return (end - 1) - p <= 2 and (end - 1) - p >= 1 and _time_unit(p, <size_t>((end - 1) - p))


cdef bint _time_unit(const unsigned char *p, size_t n) noexcept:
    """Y M W D h m s, or ms us ns ps fs as."""
    if n == 1:
        return p[0] in b"YMWDhms"
    return n == 2 and p[1] == b's' and p[0] in b"munpfa"


# ---- buffers without numpy: array.array, memoryview, big bytearrays
#
# Their bytes go through enc_data like a numpy array's: a big one (OOB_MIN and up) is copied
# once into a block of its own and adopted by the receiver, so neither side copies it into or
# out of the message ring.  A memoryview arrives over that block with no further copy; an
# array.array and a bytearray own their memory, so the receiver copies the block into them once.

cdef extern from "Python.h":
    int PyBuffer_ToContiguous(void *buf, Py_buffer *src, Py_ssize_t len, char order) except -1
    int PyBuffer_IsContiguous(Py_buffer *view, char fort) noexcept
    enum: PyBUF_FULL_RO
    enum: PyBUF_READ
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)

cdef extern from "<string.h>":
    int strcmp(const char *a, const char *b) noexcept

cdef enum:
    VIEW_MAXDIM = 64        # PyBUF_MAX_NDIM


cdef object _array_type():
    import array            # a built-in module: cheap, and loads in any interpreter
    return array


cdef inline bint is_pyarray(type t) noexcept:
    """Is t array.array (not a subclass)?  The name is checked first so that other leaves do
    not look the module up."""
    return strcmp((<PyTypeObject *>t).tp_name, b"array.array") == 0


cdef int enc_view_data(Writer *w, Py_buffer *view) except -1:
    """enc_data for a buffer that may be strided: its items in C order, copied once."""
    cdef size_t n = <size_t>view.len
    cdef void *block
    cdef uint32_t hidx
    if PyBuffer_IsContiguous(view, b'C'):
        return enc_data(w, view.buf, n)
    if w.allow_handles and n >= OOB_MIN:
        block = rp_warm_alloc(n)
        if block == NULL:
            raise MemoryError()
        try:
            PyBuffer_ToContiguous(block, view, view.len, b'C')
        except BaseException:
            rp_warm_free(block)
            raise
        hidx = w_add_handle(w, rp_block_release, block, <uint64_t>n, RP_H_BLOCK)
        return w_tag_varint(w, b'h', hidx)
    w_tag_varint(w, b'o', <uint64_t>n)
    w_need(w, n)
    PyBuffer_ToContiguous(w.buf + w.pos, view, view.len, b'C')
    w.pos += n
    return 0


cdef int enc_pyarray(Writer *w, object a) except -1:
    """Y <typecode> then o <n> <bytes> | h <k>: an array.array."""
    cdef Py_buffer view
    cdef bytes tc = (<str>a.typecode).encode("ascii")
    PyObject_GetBuffer(a, &view, PyBUF_SIMPLE)
    try:
        w_byte(w, b'Y')
        w_byte(w, <unsigned char>tc[0])
        enc_data(w, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef object dec_pyarray(Reader *r):
    cdef unsigned char tc = r_byte(r)
    # the typecodes array.array has had; array.typecodes on this Python is the final word
    if tc == 0 or memchr(b"bBuwhHiIlLqQfd", tc, 14) == NULL:
        raise _decode_error(f"bad array.array typecode {bytes([tc])!r}")
    cdef Py_ssize_t n
    array = _array_type()
    if chr(tc) not in array.typecodes:
        raise _decode_error(f"array.array typecode {chr(tc)!r} is not known to this Python")
    a = array.array(chr(tc))
    if r_peek(r) == b'o':       # in the message: copied straight from it into the array
        r.p += 1
        n = r_len(r, 1)
        data = PyMemoryView_FromMemory(<char *>r.p, n, PyBUF_READ)
        r.p += n
    else:
        data = dec_data(r)
    try:
        if len(data) % a.itemsize:
            raise _decode_error("array.array bytes not a whole number of items")
        a.frombytes(data)
    finally:
        if type(data) is memoryview:
            data.release()
    return a


cdef bint _view_format(const char *f, Py_ssize_t n) noexcept:
    """Is f (n bytes) a format dec_memoryview accepts: one native item code, maybe after '@'?"""
    if n == 2 and f[0] == b'@':
        f += 1
        n = 1
    # the native single-item struct formats memoryview.cast() accepts
    return n == 1 and f[0] != 0 and memchr(b"cbB?hHiIlLqQnNfdeP", f[0], 18) != NULL


cdef int enc_memoryview(Writer *w, object m) except -1:
    """M <format> <readonly> <ndim> <shape...> then o <n> <bytes> | h <k>: a memoryview of one
    native item format (what memoryview.cast() can rebuild), its items in C order; returns 1
    when it has another format or a zero in a shape of two or more dimensions (pickle then
    refuses it)."""
    cdef Py_buffer view
    cdef Py_ssize_t j
    cdef bytes fmt
    try:
        PyObject_GetBuffer(m, &view, PyBUF_FULL_RO)
    except ValueError as e:     # a released memoryview
        raise DataCloneError(f"memoryview could not be cloned: {e}") from e
    try:
        fmt = view.format if view.format != NULL else b"B"
        if not _view_format(fmt, len(fmt)) or view.ndim > VIEW_MAXDIM:
            return 1
        if view.ndim > 1:
            for j in range(view.ndim):
                if view.shape[j] == 0:
                    return 1
        w_tag_varint(w, b'M', <uint64_t>len(fmt))
        w_raw(w, PyBytes_AS_STRING(fmt), <size_t>len(fmt))
        w_byte(w, 1 if view.readonly else 0)
        w_varint(w, <uint64_t>view.ndim)
        for j in range(view.ndim):
            w_varint(w, <uint64_t>view.shape[j])
        enc_view_data(w, &view)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef object dec_memoryview(Reader *r):
    cdef Py_ssize_t n = r_len(r, 1), ndim, j
    cdef const char *f = <const char *>r.p
    cdef unsigned char readonly
    cdef uint64_t d, items = 1
    cdef bint zero = False
    cdef list shape = []
    if not _view_format(f, n):
        raise _decode_error("bad memoryview format")
    fmt = PyUnicode_FromKindAndData(1, f, n)
    r.p += n
    readonly = r_byte(r)
    if readonly > 1:
        raise _decode_error("bad memoryview flag")
    ndim = r_len(r, 1)
    if ndim > VIEW_MAXDIM:
        raise _decode_error("memoryview of too many dimensions")
    for j in range(ndim):
        d = r_varint(r)
        if d == 0:
            zero = True
        elif items <= <uint64_t>PY_SSIZE_T_MAX // d:
            items *= d
        else:
            raise _decode_error("memoryview shape too large")
        shape.append(<Py_ssize_t>d)
    if zero:
        if ndim > 1:
            raise _decode_error("memoryview of two or more dimensions with a zero in its shape")
        items = 0
    data = dec_data(r)
    m = memoryview(data)
    itemsize = m[:0].cast(fmt).itemsize
    if <uint64_t>len(m) != items * <uint64_t>itemsize:
        raise _decode_error("memoryview bytes do not match its shape")
    m = m.cast(fmt) if ndim == 1 else m.cast(fmt, shape)
    return m.toreadonly() if readonly else m


cdef int enc_bytearray(Writer *w, object b) except -1:
    """B <n> <bytes> in the message, or, when big and handles are allowed, X h <k>."""
    cdef Py_buffer view
    if not w.allow_handles or len(b) < OOB_MIN:
        return enc_buffer(w, b'B', b)
    PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
    try:
        w_byte(w, b'X')
        enc_data(w, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef object dec_bytearray_oob(Reader *r):
    cdef Py_buffer view
    data = dec_data(r)
    if type(data) is bytearray:
        return data
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return PyByteArray_FromStringAndSize(<const char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# ---- the iterative encoder

# Items of a list or dict as strong references, safe against concurrent mutation (_glue.h)
cdef extern from "_glue.h":
    object rp_list_item_ref(object l, Py_ssize_t i)
    int rp_dict_next_ref(object d, Py_ssize_t *pos, PyObject **k, PyObject **v) noexcept


cdef struct EFrame:
    PyObject *obj       # strong: the container
    PyObject *items     # strong: a tuple snapshot of a set's items, else NULL
    PyObject *pending   # strong: a dict value to encode after its key, else NULL
    Py_ssize_t i        # items taken so far (pairs, for a dict)
    Py_ssize_t n        # items announced in the header
    Py_ssize_t pos      # PyDict_Next position
    char kind           # b't' tuple and b'z' frozenset are memoized when complete


cdef void *frames_grow(void *stack, void *stack0, Py_ssize_t *cap, size_t size) except NULL:
    """Double a frame stack of *cap frames of size bytes; stack0 is the caller's array on the C
    stack (never freed).  Shared by the encoder and the decoder."""
    cdef void *grown = malloc(<size_t>cap[0] * 2 * size)
    if grown == NULL:
        raise MemoryError()
    memcpy(grown, stack, <size_t>cap[0] * size)
    if stack != stack0:
        free(stack)
    cap[0] *= 2
    return grown


cdef object _size_changed(EFrame *f):
    kind = {b'l': "list", b'd': "dict"}.get(bytes([f.kind]), "container")
    return RuntimeError(f"{kind} changed size during post_message")


cdef int enc_open(Writer *w, EFrame *f, object v, type t) except -1:
    """Write the header of container v (not seen before) and fill in its frame."""
    cdef object items = None
    cdef Py_ssize_t k
    cdef char kind
    if t is list:
        kind = b'l'
        k = PyList_GET_SIZE(v)
    elif t is tuple:
        kind = b't'
        k = PyTuple_GET_SIZE(<PyObject *>v)
    elif t is dict:
        kind = b'd'
        k = PyDict_Size(v)
    else:
        # a set is iterated from a snapshot: user code cannot change what we walk
        kind = b's' if t is set else b'z'
        items = PySequence_Tuple(v)
        k = PyTuple_GET_SIZE(<PyObject *>items)
    w_tag_varint(w, <unsigned char>kind, <uint64_t>k)
    if kind != b't' and kind != b'z':
        memo_put(w, <void *>v)
    Py_INCREF(v)
    f.obj = <PyObject *>v
    f.items = NULL
    if items is not None:
        Py_INCREF(items)
        f.items = <PyObject *>items
    f.pending = NULL
    f.i = 0
    f.n = k
    f.pos = 0
    f.kind = kind
    return 0


cdef bint enc_next(EFrame *f, PyObject **out) except -1:
    """The frame's next item as a new reference in *out (True), or False once all were taken."""
    cdef PyObject *dk
    cdef PyObject *dv
    cdef object v
    if f.pending != NULL:           # a dict value after its key
        out[0] = f.pending
        f.pending = NULL
        return True
    if f.i >= f.n:
        return False
    if f.kind == b'l':
        v = rp_list_item_ref(<object>f.obj, f.i)
    elif f.kind == b'd':
        if not rp_dict_next_ref(<object>f.obj, &f.pos, &dk, &dv):
            raise _size_changed(f)
        v = <object>dk
        Py_DECREF(v)
        f.pending = dv
    elif f.kind == b't':
        v = <object>PyTuple_GET_ITEM(f.obj, f.i)
    else:
        v = <object>PyTuple_GET_ITEM(f.items, f.i)
    f.i += 1
    Py_INCREF(v)
    out[0] = <PyObject *>v
    return True


cdef int enc_close(Writer *w, EFrame *f, Py_ssize_t depth) except -1:
    """A container's items are all written: check it did not change, memoize a tuple or
    frozenset, and drop the frame's references."""
    cdef Py_ssize_t idx
    if f.kind == b'l' and PyList_GET_SIZE(<object>f.obj) != f.n:
        raise _size_changed(f)
    if f.kind == b'd' and PyDict_Size(<object>f.obj) != f.n:
        raise _size_changed(f)
    if f.kind == b't' or f.kind == b'z':
        idx = memo_get(w, <void *>f.obj)
        if idx >= 0:
            w.has_refs = True
            w_tag_varint(w, b'D', <uint64_t>depth)   # built through a cycle
            w_varint(w, <uint64_t>idx)
        else:
            memo_put(w, <void *>f.obj)
    frame_clear(f)
    return 0


cdef inline void frame_clear(EFrame *f) noexcept:
    Py_XDECREF(f.items)
    f.items = NULL
    Py_XDECREF(f.pending)
    f.pending = NULL
    Py_XDECREF(f.obj)
    f.obj = NULL


cdef int enc_leaf(Writer *w, object v, type t, object transfer_ports) except -1:
    """Encode anything but a list, tuple, dict, set or frozenset."""
    cdef long long ll
    cdef int overflow
    cdef double dd[2]
    cdef Py_ssize_t idx
    if t is str:
        return enc_str(w, v)
    if t is int:
        ll = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow == 0:
            return w_u64(w, b'i', <uint64_t>ll)
        return enc_bigint(w, v)
    if v is None:
        return w_byte(w, b'N')
    if t is bool:
        return w_byte(w, b'T' if v is True else b'F')
    if t is float:
        dd[0] = PyFloat_AS_DOUBLE(v)
        w_byte(w, b'f')
        return w_raw(w, dd, 8)
    if t is bytes:
        w_tag_varint(w, b'b', <uint64_t>PyBytes_GET_SIZE(v))
        return w_raw(w, PyBytes_AS_STRING(v), <size_t>PyBytes_GET_SIZE(v))
    if t is complex:
        dd[0] = PyComplex_RealAsDouble(v)
        dd[1] = PyComplex_ImagAsDouble(v)
        w_byte(w, b'c')
        return w_raw(w, dd, 16)
    if rp_is_port(v):
        return enc_port(w, <MessagePort>v, transfer_ports)
    # the rest is memoized: a second occurrence is a back-reference
    idx = memo_get(w, <void *>v)
    if idx >= 0:
        return w_ref(w, <uint64_t>idx)
    if t is bytearray:
        enc_bytearray(w, v)
    elif t is memoryview:
        if enc_memoryview(w, v):
            enc_pickled(w, v)
    elif is_pyarray(t) and t is _array_type().array:
        enc_pyarray(w, v)
    elif isinstance(v, _Shared):
        if w.port_hook != NULL:
            raise _unshared_error()
        if not w.allow_handles and not w.remote:
            raise DataCloneError(
                f"{t.__qualname__} shares memory and cannot be serialized to bytes")
        (<_Shared>v)._encode_shared(w)
    else:
        if isinstance(v, MessagePort):
            raise DataCloneError("subclasses of MessagePort cannot be transferred")
        if not rp_is_ndarray(v) or enc_ndarray(w, v):
            enc_pickled(w, v)
    return memo_put(w, <void *>v)


cdef int encode_value(Writer *w, object root, object transfer_ports) except -1:
    """Encode root after w.pos.  transfer_ports: a dict {obj_key(port): port} of the ports that may be
    moved (None: ports are not allowed), as in Node's transfer list.

    Iterative: containers push a frame (enc_open), their items are taken one at a time
    (enc_next), and a container whose items are all written is closed (enc_close)."""
    cdef EFrame stack0[FRAMES_STACK]
    cdef EFrame *stack = stack0
    cdef Py_ssize_t depth = 0, cap = FRAMES_STACK, idx
    cdef PyObject *item
    cdef object v = root
    cdef type t
    try:
        while True:
            t = type(v)
            if t is list or t is dict or t is tuple or t is set or t is frozenset:
                idx = memo_get(w, <void *>v)
                if idx >= 0:
                    w_ref(w, <uint64_t>idx)
                else:
                    if depth == cap:
                        stack = <EFrame *>frames_grow(stack, stack0, &cap, sizeof(EFrame))
                    enc_open(w, &stack[depth], v, t)
                    depth += 1
            else:
                enc_leaf(w, v, t, transfer_ports)
            # the next item, closing the containers that are complete
            while depth > 0:
                if enc_next(&stack[depth - 1], &item):
                    v = <object>item
                    Py_DECREF(v)                # v holds the reference now
                    break
                enc_close(w, &stack[depth - 1], depth)
                depth -= 1
            else:
                return 0
    finally:
        while depth > 0:
            depth -= 1
            frame_clear(&stack[depth])
        if stack != stack0:
            free(stack)


cdef int enc_port(Writer *w, MessagePort p, object transfer_ports) except -1:
    cdef Py_ssize_t idx = memo_get(w, <void *>p)
    if idx >= 0:
        return w_ref(w, <uint64_t>idx)   # the same port again: one object on arrival
    if w.port_hook != NULL:   # dumps(ports=...): the hook takes the port, names it by an int
        w_tag_varint(w, b'H', _hook_port_id((<object>w.port_hook)(p)))
        return memo_put(w, <void *>p)
    if transfer_ports is None or obj_key(p) not in transfer_ports:
        raise DataCloneError(
            "a MessagePort in the message must also be listed in transfer=[...]")
    if w.remote:
        w_tag_varint(w, b'H', xport_handle(w, p))
        return memo_put(w, <void *>p)
    if not w.allow_handles:
        raise DataCloneError("MessagePort cannot be serialized to bytes")
    # transfer_ports were claimed by the sender (claim_transfer in _port.pxi)
    w_tag_varint(w, b'H', port_handle(w, p))
    return memo_put(w, <void *>p)


cdef int w_finish(Writer *w) except -1:
    """Append the handle table and fill in the header: the body is buf[0:pos] (with sg_len
    bytes from sg_ptr at sg_at, a multiple of 16: alignments in buf are those of the body)."""
    cdef uint64_t data_len = w.pos + w.sg_len - sizeof(rp_msg)
    cdef size_t total = rp_msg_size(data_len, w.nhandles) - w.sg_len
    cdef rp_msg *m
    w_flags(w)
    w_need(w, total - w.pos)
    memset(w.buf + w.pos, 0, rp_align8(w.pos) - w.pos)
    if w.nhandles:
        memcpy(w.buf + rp_align8(w.pos), w.handles, w.nhandles * sizeof(rp_handle))
    m = <rp_msg *>w.buf
    m.nhandles = w.nhandles
    m.flags = w.flags
    m.data_len = data_len
    w.pos = total
    return 0


# ---------------------------------------------------------------------------- reader

cdef struct Reader:
    const unsigned char *base   # start of the codec bytes (8-aligned in a message)
    const unsigned char *p
    const unsigned char *end
    rp_handle *handles
    uint32_t nhandles
    PyObject **scache           # STRCACHE recently decoded short ASCII strings, or NULL
    bint allow_pickle           # False: a pickle frame is a DecodeError and nothing runs
    rp_channel *xch             # a message from another process: the channel its descriptors
                                # come through (its handles are a private copy); else NULL
    PyObject *keep              # strong, or NULL: a list of the SharedArrayBuffers adopted so
                                # far, alive until decoding ends (their handles point at them)
    PyObject *port_hook         # loads(ports=...): int -> MessagePort for H <int>; else NULL
    rp_recv *xrecv              # a message from another process put together in a node of its
                                # own (rp_channel.c, take_shared): big data may be decoded in
                                # place, the node handed to a _Block (r_block); else NULL
    PyObject *xowner            # strong, or NULL: the _Block that took xrecv's node


cdef inline void r_init(Reader *r, const unsigned char *data, size_t n, rp_handle *handles,
                        uint32_t nhandles, PyObject **scache) noexcept:
    r.base = data
    r.p = data
    r.end = data + n
    r.handles = handles
    r.nhandles = nhandles
    r.scache = scache
    r.allow_pickle = True   # messages within the program; loads() and strict ports set False
    r.keep = NULL
    r.xch = NULL
    r.xrecv = NULL
    r.xowner = NULL
    r.port_hook = NULL


cdef inline size_t _shash(const unsigned char *p, size_t n) noexcept:
    """A cheap hash of a short byte string (its length and up to 16 of its bytes)."""
    cdef uint64_t a = 0, b = 0
    if n >= 8:
        memcpy(&a, p, 8)
        memcpy(&b, p + n - 8, 8)
    else:
        memcpy(&a, p, n)
    a = (a ^ (b * <uint64_t>0x9E3779B97F4A7C15) ^ n) * <uint64_t>0xFF51AFD7ED558CCD
    return <size_t>(a >> 40)


cdef object dec_ascii(Reader *r):
    """An ASCII string.  Short ones come from the port's cache when the same text was decoded
    before, which also keeps their hash: repeated dict keys cost neither allocation nor hashing."""
    cdef Py_ssize_t n = r_len(r, 1)
    cdef const unsigned char *p = r.p
    cdef size_t h, i, idx = 0
    cdef unsigned char acc = 0
    cdef PyObject *c
    cdef object s
    r.p += n
    if r.scache != NULL and n <= STRCACHE_MAXLEN:
        idx = _shash(p, <size_t>n) & (STRCACHE - 1)
        c = r.scache[idx]
        if c != NULL and PyUnicode_GET_LENGTH(<object>c) == n \
                and memcmp(PyUnicode_DATA(<object>c), p, <size_t>n) == 0:
            return <object>c
    for i in range(<size_t>n):
        acc |= p[i]
    if acc & 0x80:
        raise _decode_error("non-ASCII byte in an ASCII string")
    s = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(s), p, <size_t>n)
    if r.scache != NULL and n <= STRCACHE_MAXLEN:
        Py_XDECREF(r.scache[idx])
        Py_INCREF(s)
        r.scache[idx] = <PyObject *>s
    return s


cdef object _decode_error(str what):
    return DecodeError(f"invalid message bytes: {what}")


cdef inline int r_need(Reader *r, size_t n) except -1:
    if <size_t>(r.end - r.p) < n:
        raise _decode_error("truncated")
    return 0


cdef inline unsigned char r_byte(Reader *r) except? 0xFF:
    cdef unsigned char b
    if r.p >= r.end:
        raise _decode_error("truncated")
    b = r.p[0]
    r.p += 1
    return b


cdef inline int r_peek(Reader *r) except -1:
    if r.p >= r.end:
        raise _decode_error("truncated")
    return r.p[0]


cdef inline uint64_t r_varint(Reader *r) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v = 0
    cdef unsigned char b
    cdef int shift = 0
    while True:
        if r.p >= r.end:
            raise _decode_error("truncated")
        b = r.p[0]
        r.p += 1
        if shift == 63 and b > 1:
            raise _decode_error("varint overflow")
        v |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            return v
        shift += 7
        if shift > 63:
            raise _decode_error("varint overflow")


cdef inline uint64_t r_u64(Reader *r) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v
    r_need(r, 8)
    memcpy(&v, r.p, 8)
    r.p += 8
    return v


cdef inline Py_ssize_t r_len(Reader *r, size_t unit) except -1:
    """A length or count of items each taking at least `unit` bytes: checked against the rest."""
    cdef uint64_t n = r_varint(r)
    if unit and n > <uint64_t>(r.end - r.p) // unit:
        raise _decode_error("length exceeds the message")
    return <Py_ssize_t>n


cdef inline bytes r_bytes(Reader *r):
    """A length-prefixed run of bytes, as bytes."""
    cdef Py_ssize_t n = r_len(r, 1)
    cdef bytes v = PyBytes_FromStringAndSize(<const char *>r.p, n)
    r.p += n
    return v


cdef inline bytearray r_bytearray(Reader *r):
    """A length-prefixed run of bytes, as a bytearray."""
    cdef Py_ssize_t n = r_len(r, 1)
    cdef bytearray v = PyByteArray_FromStringAndSize(<const char *>r.p, n)
    r.p += n
    return v


cdef object r_block(Reader *r):
    """A length-prefixed run of bytes as a writable buffer; a big one in a warm block (rp_shm.h:
    memory that earlier big messages touched, not fresh pages a bytearray would fault in)."""
    cdef Py_ssize_t n = r_len(r, 1)
    cdef void *p
    cdef _Block b
    if n < OOB_MIN:
        v = PyByteArray_FromStringAndSize(<const char *>r.p, n)
        r.p += n
        return v
    if r.xrecv != NULL and <size_t>r.p % 16 == 0 and <size_t>n * 2 >= r.xrecv.len:
        b = r_in_node(r, n)
        if b is not None:
            return b
    p = rp_warm_alloc(<size_t>n)
    if p == NULL:
        raise MemoryError()
    with nogil:
        memcpy(p, r.p, <size_t>n)
    r.p += n
    return _Block._own(p, n)


cdef object r_in_node(Reader *r, Py_ssize_t n):
    """The n bytes at r.p as a _Block over the message's own node, without a copy (a message
    from another process that was put together from fragments: nothing else will see that node,
    and the sender's later writes cannot reach it); None to copy instead.  The node goes to the
    first such block (the others keep it alive); the receive gets an empty node to free in its
    place.  Only for data that is most of the message (so that a small array does not keep a
    big message alive) and 16-aligned (numpy's alignment for every plain dtype), which the
    encoder arranges (enc_data)."""
    cdef rp_node *empty
    cdef _Block owner
    cdef _Block b
    if r.xowner == NULL:
        empty = rp_node_alloc(0)
        if empty == NULL:
            return None
        owner = _Block._own_node(r.xrecv.node)
        r.xrecv.node = empty
        r.xowner = <PyObject *>owner
        Py_INCREF(owner)
    owner = <_Block>r.xowner
    b = _Block.__new__(_Block)
    b.ptr = <void *>r.p
    b.size = n
    b.base = owner
    r.p += n
    return b


cdef rp_handle *r_handle(Reader *r, uint32_t kind) except NULL:
    cdef uint64_t k = r_varint(r)
    cdef rp_handle *h
    if k >= r.nhandles:
        raise _decode_error("handle index out of range")
    h = &r.handles[k]
    if h.kind != kind or h.release == NULL:
        raise _decode_error("handle of the wrong kind, or used twice")
    return h


cdef object dec_str(Reader *r):
    cdef int kind = r_byte(r)
    cdef Py_ssize_t n, k
    cdef size_t pad
    cdef const unsigned char *data
    cdef void *tmp
    cdef const uint32_t *u4
    cdef object s
    if kind != 1 and kind != 2 and kind != 4:
        raise _decode_error("bad string kind")
    n = r_len(r, <size_t>kind)
    pad = (<size_t>kind - (<size_t>(r.p - r.base) % <size_t>kind)) % <size_t>kind
    r_need(r, pad + <size_t>n * <size_t>kind)
    r.p += pad
    data = r.p
    r.p += <size_t>n * <size_t>kind
    tmp = NULL
    if (<size_t>data) % <size_t>kind:
        # not aligned in memory (dumps() bytes can sit anywhere): decode from an aligned copy
        tmp = malloc(<size_t>n * <size_t>kind + 1)
        if tmp == NULL:
            raise MemoryError()
        memcpy(tmp, data, <size_t>n * <size_t>kind)
        data = <const unsigned char *>tmp
    try:
        if kind == 4:
            u4 = <const uint32_t *>data
            for k in range(n):
                if u4[k] > 0x10FFFF:
                    raise _decode_error("code point out of range")
        s = PyUnicode_FromKindAndData(kind, data, n)
    finally:
        free(tmp)
    return s


cdef object dec_pickled(Reader *r):
    """P <n> <pickle> <m> then m entries: the pickle's out-of-band buffers (o | h, see
    enc_data) and the shared objects it refers to (S ..., see _Shared._encode_shared)."""
    cdef Py_ssize_t n, nb, j
    cdef const unsigned char *data
    cdef list buffers = [], shared = None
    if not r.allow_pickle:
        # nothing of the pickle is looked at: no code runs, nothing is allocated
        raise DecodeError("the message holds a pickled object and this receiver does not "
                          "accept pickle (allow_pickle=False)")
    n = r_len(r, 1)
    data = r.p
    r.p += n
    pickle_check(data, <size_t>n)
    nb = r_len(r, 2)
    for j in range(nb):
        if r_peek(r) == b'S':
            r.p += 1
            if shared is None:
                shared = []
            shared.append(_decode_shared(r))
        else:
            buffers.append(dec_data(r))
    try:
        if shared is None:
            return _pickle_module().loads(PyBytes_FromStringAndSize(<const char *>data, n),
                                          buffers=buffers)
        return _unpickle_sharing(PyBytes_FromStringAndSize(<const char *>data, n), buffers,
                                 shared)
    except (Exception, SystemExit) as e:
        # SystemExit too: a message must not end the receiving program.  KeyboardInterrupt and
        # WorkerTerminated come from outside the message and go through.
        raise DecodeError(f"a pickled object in the message could not be rebuilt: {e!r}") from e


cdef bint dup_marker(Reader *r, Py_ssize_t depth) except -1:
    """Is the next thing a D marker for the tuple completing at this depth?  Consumes it if so."""
    cdef const unsigned char *save = r.p
    if r.p >= r.end or r.p[0] != b'D':
        return False
    r.p += 1
    if r_varint(r) == <uint64_t>depth:
        return True
    r.p = save
    return False


cdef inline object memo_at(list memo, uint64_t k):
    if memo is None or k >= <uint64_t>len(memo):
        raise _decode_error("back-reference to an unknown object")
    return memo[k]


cdef object dec_leaf(Reader *r, unsigned char tag, list memo):
    """Decode the value after tag, anything but a list, tuple, dict, set or frozenset."""
    cdef double dd[2]
    cdef Py_ssize_t n
    cdef object v
    if tag == b'a':
        return dec_ascii(r)
    if tag == b'i':
        return PyLong_FromLongLong(<long long>r_u64(r))
    if tag == b'N':
        return None
    if tag == b'T':
        return True
    if tag == b'F':
        return False
    if tag == b'f':
        r_need(r, 8)
        memcpy(dd, r.p, 8)
        r.p += 8
        return PyFloat_FromDouble(dd[0])
    if tag == b'u':
        return dec_str(r)
    if tag == b'R':
        return memo_at(memo, r_varint(r))
    if tag == b'I':
        return int.from_bytes(r_bytes(r), "little", signed=True)
    if tag == b'b':
        return r_bytes(r)
    if tag == b'c':
        r_need(r, 16)
        memcpy(dd, r.p, 16)
        r.p += 16
        return PyComplex_FromDoubles(dd[0], dd[1])
    # the rest is memoized
    if tag == b'H':      # a port: memoized, so a port twice in a message arrives as one object
        if r.port_hook != NULL:
            v = _hook_port(r)
        elif r.xch != NULL:
            v = xport_adopt(r)
        else:
            v = MessagePort._adopt(r_handle(r, RP_H_PORT))
    elif tag == b'B':
        v = r_bytearray(r)
    elif tag == b'P':
        v = dec_pickled(r)
    elif tag == b'A':
        v = dec_ndarray(r)
    elif tag == b'Y':
        v = dec_pyarray(r)
    elif tag == b'M':
        v = dec_memoryview(r)
    elif tag == b'X':
        v = dec_bytearray_oob(r)
    elif tag == b'S':
        v = _decode_shared(r)
    else:
        raise _decode_error(f"unknown tag {tag!r}")
    if memo is not None:
        memo.append(v)
    return v


cdef struct DFrame:
    PyObject *obj     # strong: the container being filled (a tuple for tuple and frozenset)
    PyObject *key     # strong: a dict key waiting for its value
    Py_ssize_t i      # items delivered (keys and values, for a dict)
    Py_ssize_t n      # items announced (twice the pairs, for a dict)
    char kind


cdef inline bint is_container_tag(unsigned char tag) noexcept:
    return tag == b'l' or tag == b't' or tag == b'd' or tag == b's' or tag == b'z'


cdef Py_ssize_t dec_count(Reader *r, unsigned char tag, Py_ssize_t owed) except -1:
    """The item count of a container header (keys and values, for a dict).  Every value still
    to come takes at least one byte: the items announced, plus the `owed` values the enclosing
    containers still expect, must fit in the bytes left.  So a header cannot make the decoder
    allocate more than the input could fill (nested headers that each claim the whole rest
    would otherwise cost memory quadratic in the input)."""
    cdef uint64_t n = r_varint(r)
    cdef Py_ssize_t left = <Py_ssize_t>(r.end - r.p) - owed
    if tag == b'd':
        if n > <uint64_t>PY_SSIZE_T_MAX // 2:
            raise _decode_error("length exceeds the message")
        n *= 2
    if left < 0 or n > <uint64_t>left:
        raise _decode_error("length exceeds the message")
    return <Py_ssize_t>n


cdef object dec_empty(unsigned char tag, list memo):
    """A container of no items (memoized as a full one would be)."""
    cdef object c
    if tag == b'l':
        c = PyList_New(0)
    elif tag == b'd':
        c = PyDict_New()
    elif tag == b's':
        c = set()
    elif tag == b'z':
        c = frozenset()
    else:
        c = ()
    if memo is not None:
        memo.append(c)
    return c


cdef int dec_open(DFrame *f, unsigned char tag, Py_ssize_t n, list memo) except -1:
    """Start filling a container of n items (n > 0)."""
    cdef object c
    if tag == b'l':
        c = PyList_New(n)
    elif tag == b'd':
        c = PyDict_New()
    elif tag == b's':
        c = set()
    else:
        c = PyTuple_New(n)   # a frozenset is built from a tuple of its items once complete
    if memo is not None and (tag == b'l' or tag == b'd' or tag == b's'):
        memo.append(c)   # before its items: they may refer back to it
    Py_INCREF(c)
    f.obj = <PyObject *>c
    f.key = NULL
    f.i = 0
    f.n = n
    f.kind = <char>tag
    return 0


cdef bint dec_add(DFrame *f, object v) except -1:
    """Deliver v to the frame's container; True once the container is full."""
    cdef object c = <object>f.obj
    if f.kind == b'l':
        Py_INCREF(v)
        PyList_SET_ITEM(c, f.i, v)
    elif f.kind == b't' or f.kind == b'z':
        Py_INCREF(v)
        PyTuple_SET_ITEM(c, f.i, v)
    elif f.kind == b'd':
        if f.i % 2 == 0:
            Py_INCREF(v)
            f.key = <PyObject *>v
        else:
            PyDict_SetItem(c, <object>f.key, v)
            Py_DECREF(<object>f.key)
            f.key = NULL
    else:
        PySet_Add(c, v)
    f.i += 1
    return f.i == f.n


cdef object dec_close(Reader *r, DFrame *f, Py_ssize_t depth, list memo):
    """The full container of the frame, which is dropped (a tuple may be replaced by the object
    a D marker names)."""
    cdef object c = <object>f.obj
    cdef object v = c
    Py_DECREF(c)
    f.obj = NULL
    if f.kind == b'z':
        v = PyFrozenSet_New(c)
    if f.kind == b't' and memo is not None and dup_marker(r, depth):
        return memo_at(memo, r_varint(r))
    if memo is not None and (f.kind == b't' or f.kind == b'z'):
        memo.append(v)
    return v


cdef object decode_value(Reader *r):
    """Decode one value.  Iterative: a container header pushes a frame (dec_open), each value
    decoded is delivered to the innermost frame (dec_add), and a full container is popped
    (dec_close) and delivered in turn."""
    cdef DFrame stack0[FRAMES_STACK]
    cdef DFrame *stack = stack0
    cdef Py_ssize_t depth = 0, cap = FRAMES_STACK, n
    cdef Py_ssize_t owed = 1   # values still to start: each needs at least one more byte
    cdef list memo = None
    cdef object v
    cdef unsigned char tag
    cdef unsigned char flags = r_byte(r)
    if flags > 1:
        raise _decode_error("unknown codec flags (made by a newer ringport?)")
    if flags & 1:
        memo = []   # the value has back-references: remember what they may point at
    try:
        while True:
            tag = r_byte(r)
            owed -= 1
            if is_container_tag(tag):
                n = dec_count(r, tag, owed)
                if n:
                    if depth == cap:
                        stack = <DFrame *>frames_grow(stack, stack0, &cap, sizeof(DFrame))
                    dec_open(&stack[depth], tag, n, memo)
                    depth += 1
                    owed += n
                    continue
                v = dec_empty(tag, memo)
            else:
                v = dec_leaf(r, tag, memo)
            # deliver v, completing the containers that fill up
            while True:
                if depth == 0:
                    if r.p != r.end:
                        raise _decode_error("trailing bytes")
                    return v
                if not dec_add(&stack[depth - 1], v):
                    break
                v = dec_close(r, &stack[depth - 1], depth, memo)
                depth -= 1
    finally:
        while depth > 0:
            depth -= 1
            Py_XDECREF(stack[depth].obj)
            Py_XDECREF(stack[depth].key)
        if stack != stack0:
            free(stack)


cdef object decode_checked(Reader *r):
    """decode_value, with every failure caused by the bytes reported as DecodeError (chained to
    the cause).  MemoryError goes through as itself: it says the process is short of memory,
    and the decoder allocates in proportion to its input, never to what the input claims."""
    try:
        return decode_value(r)
    except (DecodeError, MemoryError):
        raise
    except Exception as e:  # bad text, unhashable keys, an array numpy refuses, ...
        raise DecodeError(f"invalid message bytes: {type(e).__name__}: {e}") from e
    finally:
        Py_XDECREF(r.keep)
        r.keep = NULL
        Py_XDECREF(r.xowner)
        r.xowner = NULL


# ---------------------------------------------------------------------------- out-of-band blocks

@cython.final
@cython.no_gc_clear   # (a cleared base would make __dealloc__ free memory the base owns)
cdef class _Block:
    """A block of bytes that arrived out of band; owns it and exposes it as a writable buffer."""
    cdef void *ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t exports
    cdef rp_node *node      # not NULL: ptr is in this node, which the block frees (r_in_node)
    cdef object base        # not None: ptr is in base's memory, which base frees

    def __init__(self):
        raise TypeError("ringport._core._Block cannot be created from Python")

    @staticmethod
    cdef _Block _own_node(rp_node *node):
        """Take node, a message put together from fragments: its whole body."""
        cdef _Block b = _Block.__new__(_Block)
        b.ptr = rp_node_body(node)
        b.size = <Py_ssize_t>rp_node_len(node)
        b.node = node
        return b

    @staticmethod
    cdef _Block _own(void *ptr, Py_ssize_t size):
        """Take ptr, an rp_warm_alloc'ed block of size bytes."""
        cdef _Block b = _Block.__new__(_Block)
        b.ptr = ptr
        b.size = size
        return b

    @staticmethod
    cdef _Block _adopt(rp_handle *h):
        cdef _Block b = _Block.__new__(_Block)
        b.ptr = h.ptr
        b.size = <Py_ssize_t>h.aux
        h.release = NULL
        return b

    def __getbuffer__(self, Py_buffer *view, int flags):
        self.shape[0] = self.size
        view.buf = self.ptr
        view.obj = self
        view.len = self.size
        view.readonly = 0
        view.itemsize = 1
        view.format = NULL
        if flags & PyBUF_FORMAT:
            view.format = b"B"
        view.ndim = 1
        view.shape = self.shape if (flags & PyBUF_ND) else NULL
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __len__(self):
        return self.size

    def __dealloc__(self):
        if self.node != NULL:
            rp_node_free(self.node)
        elif self.base is None:
            rp_warm_free(self.ptr)


# ---------------------------------------------------------------------------- bytes API

cdef object _unshared_error():
    return DataCloneError(
        "a SharedArrayBuffer (or a typed array over one) cannot be shared with a worker on "
        "another machine (backend='ray'): memory is shared only within one machine.  To send a "
        "copy of its contents, post memoryview(buffer) (or bytes(buffer)) instead")


cdef uint64_t _hook_port_id(object k) except? 0xFFFFFFFFFFFFFFFF:
    if type(k) is not int or k < 0 or k >= (1 << 62):
        raise TypeError(f"the ports hook of dumps() must return an int in [0, 2**62), not {k!r}")
    return <uint64_t>k


cdef object _hook_port(Reader *r):
    """H <k> in bytes read with loads(ports=hook): the port hook(k) returns."""
    cdef uint64_t k = r_varint(r)
    try:
        v = (<object>r.port_hook)(k)
    except DecodeError:
        raise
    except Exception as e:
        raise _decode_error(f"port {k}: {e}") from e
    if type(v) is not MessagePort:
        raise _decode_error(f"the ports hook returned {type(v).__name__}, not a MessagePort")
    return v


def dumps(obj, *, allow_pickle=True, ports=None):
    """Encode obj with ringport's structured-clone codec into bytes.

    The same encoding post_message uses, without shared memory (it lives in the process and
    cannot be written to bytes: DataCloneError).  Values the codec has no native form for are
    pickled; allow_pickle=False refuses them (DataCloneError) instead, so the bytes can be read
    by loads() without allow_pickle.

    ports: None (a MessagePort in obj is a DataCloneError), or a function called with each
    MessagePort obj holds (once per port) that returns an int naming it in the bytes; loads()
    gives the int to its own ports function to get a port back.  (The Ray backend carries
    ports to other machines this way.)
    """
    cdef Dest d
    d.kind = TO_BYTES
    d.allow_pickle = bool(allow_pickle)
    d.port_hook = <PyObject *>ports if ports is not None else NULL
    return encode_send(obj, None, &d)


def loads(data, *, allow_pickle=False, ports=None):
    """Decode bytes made by dumps().  Bad input raises DecodeError (chained to its cause), never
    crashes; memory and time stay in proportion to len(data).

    The bytes are untrusted by default: a pickled value in them raises DecodeError and no code
    runs.  allow_pickle=True unpickles it, which runs whatever code the bytes name: only for
    bytes from a trusted source.  Then an exception the unpickled code raises becomes
    DecodeError, SystemExit included (KeyboardInterrupt goes through); a pickle whose opcodes
    announce more bytes than it holds, or a memo larger than itself, is refused before
    unpickling, but what the code it names allocates when it runs is not bounded.

    ports: None (bytes that name a port are a DecodeError), or a function called with each
    int that dumps(ports=...) wrote for a port, which returns the MessagePort to put there
    (anything else, or an exception it raises, is a DecodeError).
    """
    cdef Py_buffer view
    cdef Reader r
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        r_init(&r, <const unsigned char *>view.buf, <size_t>view.len, NULL, 0, NULL)
        r.allow_pickle = bool(allow_pickle)
        r.port_hook = <PyObject *>ports if ports is not None else NULL
        return decode_checked(&r)
    finally:
        PyBuffer_Release(&view)
