# ringport.atomics for Cython: inline, nogil atomic operations on raw element pointers, and
# wait/notify that meet ringport.atomics.wait()/notify() (and each other) across threads,
# workers and interpreters.
#
#     from ringport.atomics cimport add_i32, wait_i32, notify, import_atomics
#     import_atomics()          # once, at module level (needed by wait_*/notify only)
#
#     cdef int32_t[::1] counts = ringport.Int32Array(1024)  # the recommended way to get at a
#     with nogil:                                            # typed array's memory: a typed
#         add_i32(&counts[0], 1)                             # memoryview (zero-copy, writable;
#                                                            # counts.shape[0] is the length)
# Use the fixed-width types (int32_t[::1], int64_t[::1], float[::1], double[::1]) so the
# element pointers match these functions' signatures.
#
# Build with include_dirs=[ringport.get_include()].  See ringport/atomics.h for the semantics:
# read-modify-writes return the old value, everything is sequentially consistent, integer
# arithmetic wraps, floats' cas compares bit patterns.  wait_* return WAIT_OK, WAIT_NOT_EQUAL,
# WAIT_TIMED_OUT, WAIT_CANCELED (the worker was terminated) or WAIT_NO_API (import_atomics()
# was not called); timeout_ns < 0 waits without a timeout.  Without the GIL a wait cannot see
# Ctrl-C: prefer finite timeouts in a loop.
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "ringport/atomics.h" nogil:
    enum:
        WAIT_OK "RINGPORT_WAIT_OK"
        WAIT_NOT_EQUAL "RINGPORT_WAIT_NOT_EQUAL"
        WAIT_TIMED_OUT "RINGPORT_WAIT_TIMED_OUT"
        WAIT_CANCELED "RINGPORT_WAIT_CANCELED"
        WAIT_NO_API "RINGPORT_WAIT_NO_API"

    int32_t load_i32 "ringport_load_i32"(const int32_t *p)
    void store_i32 "ringport_store_i32"(int32_t *p, int32_t v)
    int32_t add_i32 "ringport_add_i32"(int32_t *p, int32_t v)
    int32_t sub_i32 "ringport_sub_i32"(int32_t *p, int32_t v)
    int32_t and_i32 "ringport_and_i32"(int32_t *p, int32_t v)
    int32_t or_i32 "ringport_or_i32"(int32_t *p, int32_t v)
    int32_t xor_i32 "ringport_xor_i32"(int32_t *p, int32_t v)
    int32_t exchange_i32 "ringport_exchange_i32"(int32_t *p, int32_t v)
    int32_t compare_exchange_i32 "ringport_cas_i32"(int32_t *p, int32_t expected, int32_t desired)

    uint32_t load_u32 "ringport_load_u32"(const uint32_t *p)
    void store_u32 "ringport_store_u32"(uint32_t *p, uint32_t v)
    uint32_t add_u32 "ringport_add_u32"(uint32_t *p, uint32_t v)
    uint32_t sub_u32 "ringport_sub_u32"(uint32_t *p, uint32_t v)
    uint32_t exchange_u32 "ringport_exchange_u32"(uint32_t *p, uint32_t v)
    uint32_t compare_exchange_u32 "ringport_cas_u32"(uint32_t *p, uint32_t expected,
                                                      uint32_t desired)

    int64_t load_i64 "ringport_load_i64"(const int64_t *p)
    void store_i64 "ringport_store_i64"(int64_t *p, int64_t v)
    int64_t add_i64 "ringport_add_i64"(int64_t *p, int64_t v)
    int64_t sub_i64 "ringport_sub_i64"(int64_t *p, int64_t v)
    int64_t and_i64 "ringport_and_i64"(int64_t *p, int64_t v)
    int64_t or_i64 "ringport_or_i64"(int64_t *p, int64_t v)
    int64_t xor_i64 "ringport_xor_i64"(int64_t *p, int64_t v)
    int64_t exchange_i64 "ringport_exchange_i64"(int64_t *p, int64_t v)
    int64_t compare_exchange_i64 "ringport_cas_i64"(int64_t *p, int64_t expected, int64_t desired)

    uint64_t load_u64 "ringport_load_u64"(const uint64_t *p)
    void store_u64 "ringport_store_u64"(uint64_t *p, uint64_t v)
    uint64_t add_u64 "ringport_add_u64"(uint64_t *p, uint64_t v)
    uint64_t sub_u64 "ringport_sub_u64"(uint64_t *p, uint64_t v)
    uint64_t exchange_u64 "ringport_exchange_u64"(uint64_t *p, uint64_t v)
    uint64_t compare_exchange_u64 "ringport_cas_u64"(uint64_t *p, uint64_t expected,
                                                      uint64_t desired)

    float load_f32 "ringport_load_f32"(const float *p)
    void store_f32 "ringport_store_f32"(float *p, float v)
    float add_f32 "ringport_add_f32"(float *p, float v)
    float sub_f32 "ringport_sub_f32"(float *p, float v)
    float exchange_f32 "ringport_exchange_f32"(float *p, float v)
    float compare_exchange_f32 "ringport_cas_f32"(float *p, float expected, float desired)

    double load_f64 "ringport_load_f64"(const double *p)
    void store_f64 "ringport_store_f64"(double *p, double v)
    double add_f64 "ringport_add_f64"(double *p, double v)
    double sub_f64 "ringport_sub_f64"(double *p, double v)
    double exchange_f64 "ringport_exchange_f64"(double *p, double v)
    double compare_exchange_f64 "ringport_cas_f64"(double *p, double expected, double desired)

    int wait_i32 "ringport_wait_i32"(int32_t *addr, int32_t expected, int64_t timeout_ns)
    int wait_i64 "ringport_wait_i64"(int64_t *addr, int64_t expected, int64_t timeout_ns)
    int64_t notify "ringport_notify"(void *addr, int64_t count)

cdef extern from "ringport/atomics.h":
    # needs the GIL (imports ringport._core)
    int _import_atomics "ringport_import_atomics"() except -1


cdef inline int import_atomics() except -1:
    """Fetch ringport's C API (capsule ringport._core._C_API); call once with the GIL held."""
    return _import_atomics()
