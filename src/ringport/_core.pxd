# Layouts of ringport's cdef classes, for other Cython code to cimport.
from cpython.object cimport PyObject
from libc.stdint cimport int64_t
from ringport._csrc cimport rp_channel, rp_handle, rp_recv

cdef class MessagePort:
    # The channel pointers and busy/moving are read and written only inside the object's
    # critical section (a no-op under the GIL, a per-object lock on free-threaded builds).
    cdef rp_channel *ch          # the channel new operations use; NULL once transferred (or while
                                 # a post_message is transferring this object)
    cdef rp_channel *held        # the channel side this object holds its reference on: ch, or,
                                 # after a transfer, kept until the calls still running on it end
    cdef int side                # 0 or 1: which end of the channel this object is
    cdef int busy                # calls running on held (a blocked receive, a post, ...)
    cdef bint moving             # a post_message is transferring this object right now
    cdef bint started            # 'message' listeners are being fed
    cdef bint refed              # keeps the program alive while it has listeners
    cdef bint close_emitted      # 'close' was emitted to this object's listeners
    cdef public bint allow_pickle  # values without a native form travel pickled, both ways
    cdef object events           # Emitter, created on first on()/once()
    cdef object __weakref__
    cdef PyObject *scache[64]    # recently decoded short strings (guarded by the consumer lock)
    cdef bint exported           # moved to another process by its channel's memfd: letting go of
                                 # it detaches this process's side instead of closing the channel
    cdef object batch_error      # a message receive_many() could not decode after it had
                                 # collected others: raised by the next receive on this object

    @staticmethod
    cdef MessagePort _new(rp_channel *ch, int side)
    @staticmethod
    cdef MessagePort _adopt(rp_handle *h)
    cdef rp_channel *_enter(self, str what) except NULL
    cdef rp_channel *_try_enter(self) noexcept
    cdef void _leave(self) noexcept
    cdef bint _owns(self, rp_channel *ch) noexcept
    cdef rp_channel *_claim(self) noexcept
    cdef void _unclaim(self, bint moved) noexcept
    cdef object _receive(self, int64_t deadline, bint *got)
    cdef object _post_many(self, object iterable, object transfer, object timeout)
    cdef list _receive_many(self, Py_ssize_t max_count, int64_t deadline)
    cdef object _pop_batch_error(self)
    cdef object _ev(self)
    cdef object _post(self, object value, object transfer, object timeout)
