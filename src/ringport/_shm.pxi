# Shared memory: the codec's hooks for objects that are shared, not copied.

cdef class _Shared:
    """Base of objects that cross by sharing memory (SharedArrayBuffer and typed arrays)."""

    cdef int _encode_shared(self, Writer *w) except -1:
        raise DataCloneError(f"{type(self).__qualname__} cannot be shared")


cdef object _decode_shared(Reader *r):
    raise _decode_error("shared object support is not built in")
