/* ringport/atomics.h - atomic operations on shared memory, for C and Cython users of ringport.
 *
 * Include with the directory returned by ringport.get_include() on the include path.  Cython
 * users cimport ringport.atomics instead (it declares everything here).
 *
 * 1. Inline, lock-free operations on a raw element address (no Python, callable without the
 *    GIL): ringport_{load,store,add,sub,and,or,xor,exchange,cas}_{i8,u8,i16,u16,i32,u32,i64,u64}
 *    and ringport_{load,store,add,sub,exchange,cas}_{f32,f64}.  Read-modify-write operations
 *    return the old value, as JavaScript's Atomics do; cas returns the old value too (the swap
 *    happened iff it equals `expected`; floats compare bit patterns: -0.0 != 0.0, a NaN equals
 *    a NaN with the same payload).  Every operation is sequentially consistent.  Integer
 *    arithmetic wraps modulo 2**bits.  The address must be aligned to the element size.
 *
 *    Assumption (documented, checked where it can be): an _Atomic integer of N bytes has the
 *    size, alignment and representation of the plain integer, so the address of a plain element
 *    may be cast to a pointer to the _Atomic type.  This holds for GCC, Clang and MSVC on every
 *    platform ringport builds for; the static assertions below check the sizes, and
 *    ringport.atomics.is_lock_free() reports lock-freedom.
 *
 * 2. wait/notify that meet ringport.atomics.wait()/notify() (the same process-wide parking
 *    lot), through function pointers that ringport exports in the capsule
 *    "ringport._core._C_API".  Call ringport_import_atomics() once, with the GIL held (e.g. at
 *    module import), before ringport_wait_i32/_i64/ringport_notify.  These never need the GIL.
 *    A wait comes back on notify, on its timeout, or when the thread's worker is terminated;
 *    it cannot see Ctrl-C (it has no GIL to run signal handlers): pass finite timeouts and loop
 *    if you need that.
 */
#ifndef RINGPORT_ATOMICS_H
#define RINGPORT_ATOMICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

_Static_assert(sizeof(_Atomic int8_t) == 1 && sizeof(_Atomic int16_t) == 2 &&
                   sizeof(_Atomic int32_t) == 4 && sizeof(_Atomic int64_t) == 8,
               "ringport assumes _Atomic integers have the size of the plain integers");

#define RINGPORT_SC memory_order_seq_cst

#define RINGPORT_INT_OPS(sfx, T)                                                              \
    static inline T ringport_load_##sfx(const T *p) {                                         \
        return atomic_load_explicit((_Atomic T *)(T *)p, RINGPORT_SC);                        \
    }                                                                                         \
    static inline T ringport_load_relaxed_##sfx(const T *p) {                                 \
        return atomic_load_explicit((_Atomic T *)(T *)p, memory_order_relaxed);               \
    }                                                                                         \
    static inline void ringport_store_##sfx(T *p, T v) {                                      \
        atomic_store_explicit((_Atomic T *)p, v, RINGPORT_SC);                                \
    }                                                                                         \
    static inline void ringport_store_relaxed_##sfx(T *p, T v) {                              \
        atomic_store_explicit((_Atomic T *)p, v, memory_order_relaxed);                       \
    }                                                                                         \
    static inline T ringport_add_##sfx(T *p, T v) {                                           \
        return atomic_fetch_add_explicit((_Atomic T *)p, v, RINGPORT_SC);                     \
    }                                                                                         \
    static inline T ringport_sub_##sfx(T *p, T v) {                                           \
        return atomic_fetch_sub_explicit((_Atomic T *)p, v, RINGPORT_SC);                     \
    }                                                                                         \
    static inline T ringport_and_##sfx(T *p, T v) {                                           \
        return atomic_fetch_and_explicit((_Atomic T *)p, v, RINGPORT_SC);                     \
    }                                                                                         \
    static inline T ringport_or_##sfx(T *p, T v) {                                            \
        return atomic_fetch_or_explicit((_Atomic T *)p, v, RINGPORT_SC);                      \
    }                                                                                         \
    static inline T ringport_xor_##sfx(T *p, T v) {                                           \
        return atomic_fetch_xor_explicit((_Atomic T *)p, v, RINGPORT_SC);                     \
    }                                                                                         \
    static inline T ringport_exchange_##sfx(T *p, T v) {                                      \
        return atomic_exchange_explicit((_Atomic T *)p, v, RINGPORT_SC);                      \
    }                                                                                         \
    static inline T ringport_cas_##sfx(T *p, T expected, T desired) {                         \
        atomic_compare_exchange_strong_explicit((_Atomic T *)p, &expected, desired,           \
                                                RINGPORT_SC, RINGPORT_SC);                    \
        return expected; /* the old value, whether or not the swap happened */               \
    }

RINGPORT_INT_OPS(i8, int8_t)
RINGPORT_INT_OPS(u8, uint8_t)
RINGPORT_INT_OPS(i16, int16_t)
RINGPORT_INT_OPS(u16, uint16_t)
RINGPORT_INT_OPS(i32, int32_t)
RINGPORT_INT_OPS(u32, uint32_t)
RINGPORT_INT_OPS(i64, int64_t)
RINGPORT_INT_OPS(u64, uint64_t)

/* Floats: the element's bit pattern in an _Atomic unsigned integer of the same size;
 * add and sub are compare-and-swap loops. */
#define RINGPORT_FLOAT_OPS(sfx, F, U)                                                         \
    static inline U ringport_bits_##sfx(F v) {                                                \
        U u;                                                                                  \
        memcpy(&u, &v, sizeof u);                                                             \
        return u;                                                                             \
    }                                                                                         \
    static inline F ringport_from_bits_##sfx(U u) {                                           \
        F v;                                                                                  \
        memcpy(&v, &u, sizeof v);                                                             \
        return v;                                                                             \
    }                                                                                         \
    static inline F ringport_load_##sfx(const F *p) {                                         \
        return ringport_from_bits_##sfx(                                                      \
            atomic_load_explicit((_Atomic U *)(F *)p, RINGPORT_SC));                          \
    }                                                                                         \
    static inline F ringport_load_relaxed_##sfx(const F *p) {                                 \
        return ringport_from_bits_##sfx(                                                      \
            atomic_load_explicit((_Atomic U *)(F *)p, memory_order_relaxed));                 \
    }                                                                                         \
    static inline void ringport_store_##sfx(F *p, F v) {                                      \
        atomic_store_explicit((_Atomic U *)p, ringport_bits_##sfx(v), RINGPORT_SC);           \
    }                                                                                         \
    static inline void ringport_store_relaxed_##sfx(F *p, F v) {                              \
        atomic_store_explicit((_Atomic U *)p, ringport_bits_##sfx(v), memory_order_relaxed);  \
    }                                                                                         \
    static inline F ringport_exchange_##sfx(F *p, F v) {                                      \
        return ringport_from_bits_##sfx(                                                      \
            atomic_exchange_explicit((_Atomic U *)p, ringport_bits_##sfx(v), RINGPORT_SC));   \
    }                                                                                         \
    static inline F ringport_cas_##sfx(F *p, F expected, F desired) {                         \
        U e = ringport_bits_##sfx(expected);                                                  \
        atomic_compare_exchange_strong_explicit((_Atomic U *)p, &e, ringport_bits_##sfx(desired), \
                                                RINGPORT_SC, RINGPORT_SC);                    \
        return ringport_from_bits_##sfx(e);                                                   \
    }                                                                                         \
    static inline F ringport_add_##sfx(F *p, F v) {                                           \
        U old = atomic_load_explicit((_Atomic U *)p, memory_order_relaxed);                   \
        while (!atomic_compare_exchange_weak_explicit(                                        \
            (_Atomic U *)p, &old, ringport_bits_##sfx(ringport_from_bits_##sfx(old) + v),     \
            RINGPORT_SC, memory_order_relaxed)) {                                             \
        }                                                                                     \
        return ringport_from_bits_##sfx(old);                                                 \
    }                                                                                         \
    static inline F ringport_sub_##sfx(F *p, F v) {                                           \
        U old = atomic_load_explicit((_Atomic U *)p, memory_order_relaxed);                   \
        while (!atomic_compare_exchange_weak_explicit(                                        \
            (_Atomic U *)p, &old, ringport_bits_##sfx(ringport_from_bits_##sfx(old) - v),     \
            RINGPORT_SC, memory_order_relaxed)) {                                             \
        }                                                                                     \
        return ringport_from_bits_##sfx(old);                                                 \
    }

RINGPORT_FLOAT_OPS(f32, float, uint32_t)
RINGPORT_FLOAT_OPS(f64, double, uint64_t)

/* ------------------------------------------------------------------ wait / notify (C API) */

/* Results of ringport_wait_*: */
enum {
    RINGPORT_WAIT_OK = 0,        /* woken by a notify */
    RINGPORT_WAIT_NOT_EQUAL = 1, /* *addr did not hold `expected` */
    RINGPORT_WAIT_TIMED_OUT = 2,
    RINGPORT_WAIT_CANCELED = -1, /* the calling worker was terminated */
    RINGPORT_WAIT_NO_API = -2    /* ringport_import_atomics() was not called (or failed) */
};

#define RINGPORT_API_VERSION 1u

/* What the capsule "ringport._core._C_API" points to.  Fields are only ever appended;
 * `size` is sizeof the struct of the ringport that made it. */
typedef struct ringport_atomics_api {
    unsigned version;
    unsigned size;
    /* Wait while *addr == expected, for at most timeout_ns (< 0: no timeout). */
    int (*wait_i32)(int32_t *addr, int32_t expected, int64_t timeout_ns);
    int (*wait_i64)(int64_t *addr, int64_t expected, int64_t timeout_ns);
    /* Wake up to count waiters on addr (count < 0: all); returns how many were woken. */
    int64_t (*notify)(void *addr, int64_t count);
    /* How many threads (and async waiters) wait on addr right now. */
    int64_t (*waiters)(void *addr);
} ringport_atomics_api;

#if defined(Py_PYTHON_H) && !defined(RINGPORT_BUILDING_CORE)
/* One pointer per extension module that includes this header, to a constant table inside
 * ringport's core: the same for every interpreter of the process, so holding it in a static
 * is safe with subinterpreters and free-threading. */
static const ringport_atomics_api *ringport_atomics_capi = NULL;

/* Call with the GIL held.  Returns 0, or -1 with a Python exception set. */
static inline int ringport_import_atomics(void) {
    const ringport_atomics_api *api;
    if (ringport_atomics_capi != NULL) return 0;
    api = (const ringport_atomics_api *)PyCapsule_Import("ringport._core._C_API", 0);
    if (api == NULL) return -1;
    if (api->version < RINGPORT_API_VERSION) {
        PyErr_SetString(PyExc_ImportError, "ringport's C API is older than this header");
        return -1;
    }
    ringport_atomics_capi = api;
    return 0;
}

static inline int ringport_wait_i32(int32_t *addr, int32_t expected, int64_t timeout_ns) {
    const ringport_atomics_api *api = ringport_atomics_capi;
    return api == NULL ? RINGPORT_WAIT_NO_API : api->wait_i32(addr, expected, timeout_ns);
}
static inline int ringport_wait_i64(int64_t *addr, int64_t expected, int64_t timeout_ns) {
    const ringport_atomics_api *api = ringport_atomics_capi;
    return api == NULL ? RINGPORT_WAIT_NO_API : api->wait_i64(addr, expected, timeout_ns);
}
/* Returns how many waiters were woken, or -1 when the API was not imported. */
static inline int64_t ringport_notify(void *addr, int64_t count) {
    const ringport_atomics_api *api = ringport_atomics_capi;
    return api == NULL ? -1 : api->notify(addr, count);
}
#endif

#ifdef __cplusplus
}
#endif
#endif /* RINGPORT_ATOMICS_H */
