/* rp_elem.h - one typed-array element: type codes and atomic operations dispatched on them.
 *
 * Plain C11 (inline, no Python).  The operations themselves are the public inline functions of
 * ringport/atomics.h (the same code C and Cython users get); this header only picks one by
 * element type, for the Python-facing functions that learn the type at run time.
 *
 * Values travel as rp_val: signed integers in .i (sign-extended), unsigned ones in .u, floats
 * in .d (float32 widened).  Callers check value ranges before calling; the arithmetic of
 * add/sub wraps modulo 2**bits (C11 atomics on integers are defined to wrap silently).
 */
#ifndef RP_ELEM_H
#define RP_ELEM_H

#include <stdatomic.h>
#include <stdint.h>

#include "ringport/atomics.h"

enum { /* element types, in the order of the typed array classes */
    RP_T_I8, RP_T_U8, RP_T_I16, RP_T_U16, RP_T_I32, RP_T_U32, RP_T_I64, RP_T_U64,
    RP_T_F32, RP_T_F64, RP_T_COUNT
};

enum { RP_OP_LOAD, RP_OP_STORE, RP_OP_ADD, RP_OP_SUB, RP_OP_AND, RP_OP_OR, RP_OP_XOR,
       RP_OP_XCHG };

typedef union rp_val {
    int64_t i;
    uint64_t u;
    double d;
} rp_val;

static inline int rp_elem_size(int t) {
    static const unsigned char sizes[RP_T_COUNT] = {1, 1, 2, 2, 4, 4, 8, 8, 4, 8};
    return (t >= 0 && t < RP_T_COUNT) ? sizes[t] : 0;
}
static inline int rp_elem_is_float(int t) { return t == RP_T_F32 || t == RP_T_F64; }
static inline int rp_elem_is_signed(int t) {
    return t == RP_T_I8 || t == RP_T_I16 || t == RP_T_I32 || t == RP_T_I64;
}

#define RP_INT_CASE(T, sfx, C, field)                                                   \
    case T: {                                                                             \
        C *q = (C *)p;                                                                    \
        C x = (C)v.field;                                                                 \
        switch (op) {                                                                     \
        case RP_OP_LOAD: r.field = ringport_load_##sfx(q); break;                         \
        case RP_OP_STORE: ringport_store_##sfx(q, x); r.field = x; break;                 \
        case RP_OP_ADD: r.field = ringport_add_##sfx(q, x); break;                        \
        case RP_OP_SUB: r.field = ringport_sub_##sfx(q, x); break;                        \
        case RP_OP_AND: r.field = ringport_and_##sfx(q, x); break;                        \
        case RP_OP_OR: r.field = ringport_or_##sfx(q, x); break;                          \
        case RP_OP_XOR: r.field = ringport_xor_##sfx(q, x); break;                        \
        default: r.field = ringport_exchange_##sfx(q, x); break;                          \
        }                                                                                 \
        return r;                                                                         \
    }

#define RP_FLOAT_CASE(T, sfx, C)                                                          \
    case T: {                                                                             \
        C *q = (C *)p;                                                                    \
        C x = (C)v.d;                                                                     \
        switch (op) {                                                                     \
        case RP_OP_LOAD: r.d = ringport_load_##sfx(q); break;                             \
        case RP_OP_STORE: ringport_store_##sfx(q, x); r.d = x; break;                     \
        case RP_OP_ADD: r.d = ringport_add_##sfx(q, x); break;                            \
        case RP_OP_SUB: r.d = ringport_sub_##sfx(q, x); break;                            \
        case RP_OP_XCHG: r.d = ringport_exchange_##sfx(q, x); break;                      \
        default: r.d = ringport_load_##sfx(q); break; /* bitwise ops: refused by callers */ \
        }                                                                                 \
        return r;                                                                         \
    }

/* Sequentially consistent read-modify-write: returns the old value (LOAD: the value; STORE:
 * the value stored, after conversion to the element type). */
static inline rp_val rp_elem_rmw(int t, int op, void *p, rp_val v) {
    rp_val r;
    r.u = 0;
    switch (t) {
        RP_INT_CASE(RP_T_I8, i8, int8_t, i)
        RP_INT_CASE(RP_T_U8, u8, uint8_t, u)
        RP_INT_CASE(RP_T_I16, i16, int16_t, i)
        RP_INT_CASE(RP_T_U16, u16, uint16_t, u)
        RP_INT_CASE(RP_T_I32, i32, int32_t, i)
        RP_INT_CASE(RP_T_U32, u32, uint32_t, u)
        RP_INT_CASE(RP_T_I64, i64, int64_t, i)
        RP_INT_CASE(RP_T_U64, u64, uint64_t, u)
        RP_FLOAT_CASE(RP_T_F32, f32, float)
        RP_FLOAT_CASE(RP_T_F64, f64, double)
    default: return r;
    }
}

#define RP_CAS_CASE(T, sfx, C, field)                                                     \
    case T: r.field = ringport_cas_##sfx((C *)p, (C)e.field, (C)d.field); return r;

/* Compare-and-swap, returns the old value (floats compare bit patterns). */
static inline rp_val rp_elem_cas(int t, void *p, rp_val e, rp_val d) {
    rp_val r;
    r.u = 0;
    switch (t) {
        RP_CAS_CASE(RP_T_I8, i8, int8_t, i)
        RP_CAS_CASE(RP_T_U8, u8, uint8_t, u)
        RP_CAS_CASE(RP_T_I16, i16, int16_t, i)
        RP_CAS_CASE(RP_T_U16, u16, uint16_t, u)
        RP_CAS_CASE(RP_T_I32, i32, int32_t, i)
        RP_CAS_CASE(RP_T_U32, u32, uint32_t, u)
        RP_CAS_CASE(RP_T_I64, i64, int64_t, i)
        RP_CAS_CASE(RP_T_U64, u64, uint64_t, u)
        RP_CAS_CASE(RP_T_F32, f32, float, d)
        RP_CAS_CASE(RP_T_F64, f64, double, d)
    default: return r;
    }
}

/* Plain element access (indexing a typed array): relaxed atomics, so a concurrent writer in
 * another thread is a well-defined race (no torn values), not undefined behaviour. */
static inline rp_val rp_elem_get(int t, const void *p) {
    rp_val r;
    switch (t) {
    case RP_T_I8: r.i = ringport_load_relaxed_i8((const int8_t *)p); break;
    case RP_T_U8: r.u = ringport_load_relaxed_u8((const uint8_t *)p); break;
    case RP_T_I16: r.i = ringport_load_relaxed_i16((const int16_t *)p); break;
    case RP_T_U16: r.u = ringport_load_relaxed_u16((const uint16_t *)p); break;
    case RP_T_I32: r.i = ringport_load_relaxed_i32((const int32_t *)p); break;
    case RP_T_U32: r.u = ringport_load_relaxed_u32((const uint32_t *)p); break;
    case RP_T_I64: r.i = ringport_load_relaxed_i64((const int64_t *)p); break;
    case RP_T_U64: r.u = ringport_load_relaxed_u64((const uint64_t *)p); break;
    case RP_T_F32: r.d = ringport_load_relaxed_f32((const float *)p); break;
    default: r.d = ringport_load_relaxed_f64((const double *)p); break;
    }
    return r;
}

static inline void rp_elem_set(int t, void *p, rp_val v) {
    switch (t) {
    case RP_T_I8: ringport_store_relaxed_i8((int8_t *)p, (int8_t)v.i); break;
    case RP_T_U8: ringport_store_relaxed_u8((uint8_t *)p, (uint8_t)v.u); break;
    case RP_T_I16: ringport_store_relaxed_i16((int16_t *)p, (int16_t)v.i); break;
    case RP_T_U16: ringport_store_relaxed_u16((uint16_t *)p, (uint16_t)v.u); break;
    case RP_T_I32: ringport_store_relaxed_i32((int32_t *)p, (int32_t)v.i); break;
    case RP_T_U32: ringport_store_relaxed_u32((uint32_t *)p, (uint32_t)v.u); break;
    case RP_T_I64: ringport_store_relaxed_i64((int64_t *)p, v.i); break;
    case RP_T_U64: ringport_store_relaxed_u64((uint64_t *)p, v.u); break;
    case RP_T_F32: ringport_store_relaxed_f32((float *)p, (float)v.d); break;
    default: ringport_store_relaxed_f64((double *)p, v.d); break;
    }
}

/* Are atomics on size-byte integers lock-free (always, on this build)? */
static inline int rp_is_lock_free(int size) {
    switch (size) {
    case 1: return ATOMIC_CHAR_LOCK_FREE == 2;
    case 2: return ATOMIC_SHORT_LOCK_FREE == 2;
    case 4: return ATOMIC_INT_LOCK_FREE == 2;
    case 8: return ATOMIC_LLONG_LOCK_FREE == 2;
    default: return 0;
    }
}

#endif /* RP_ELEM_H */
