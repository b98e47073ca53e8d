# Layouts of ringport's cdef classes, for other Cython code to cimport.
from cpython.object cimport PyObject
from libc.stdint cimport int64_t
from ringport._csrc cimport rp_channel, rp_handle, rp_recv

cdef class MessagePort:
    cdef rp_channel *ch          # the channel; NULL once this object was transferred away
    cdef int side                # 0 or 1: which end of the channel this object is
    cdef bint started            # 'message' listeners are being fed
    cdef bint refed              # keeps the program alive while it has listeners
    cdef bint close_emitted      # 'close' was emitted to this object's listeners
    cdef public bint allow_pickle  # values without a native form travel pickled, both ways
    cdef object events           # Emitter, created on first on()/once()
    cdef object __weakref__
    cdef PyObject *scache[64]    # recently decoded short strings (guarded by the consumer lock)

    @staticmethod
    cdef MessagePort _new(rp_channel *ch, int side)
    @staticmethod
    cdef MessagePort _adopt(rp_handle *h)
    cdef rp_channel *_live(self, str what) except NULL
    cdef object _finish(self, rp_recv *r)
    cdef object _receive(self, int64_t deadline, bint *got)
    cdef object _ev(self)
    cdef object _post(self, object value, object transfer, object timeout)
