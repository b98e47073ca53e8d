/* rp_ring.c - see rp_ring.h */
#include "rp_ring.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <string.h>

#include "rp_wait.h"

enum { RP_REC_MSG = 1, RP_REC_PAD = 2 };

typedef struct {
    uint32_t len;  /* payload bytes (for a pad: bytes after this header up to the end) */
    uint32_t kind; /* RP_REC_MSG or RP_REC_PAD */
} rp_rec;

struct rp_ring {
    /* producer's line: its cursor and its last view of the consumer's cursor */
    alignas(64) _Atomic uint64_t tail;
    uint64_t head_cache;
    uint64_t reserved_next; /* tail after the reserved record, until commit */
    /* consumer's line */
    alignas(64) _Atomic uint64_t head;
    uint64_t tail_cache;
    uint64_t peeked_next; /* head after the peeked record, until consume */
    /* read-only after init */
    alignas(64) uint64_t capacity;
    uint64_t mask;
    alignas(64) unsigned char data[];
};

static int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

size_t rp_ring_size(uint64_t capacity) {
    if (!is_pow2(capacity) || capacity < RP_RING_MIN_CAPACITY || capacity > RP_RING_MAX_CAPACITY)
        return 0;
    if (capacity > SIZE_MAX - sizeof(rp_ring)) return 0;
    return sizeof(rp_ring) + (size_t)capacity;
}

int rp_ring_init(void *mem, uint64_t capacity) {
    if (mem == NULL || rp_ring_size(capacity) == 0) return RP_EINVAL;
    if (((uintptr_t)mem) % RP_RING_ALIGN) return RP_EINVAL;
    rp_ring *r = (rp_ring *)mem;
    atomic_init(&r->tail, 0);
    atomic_init(&r->head, 0);
    r->head_cache = r->tail_cache = 0;
    r->reserved_next = r->peeked_next = 0;
    r->capacity = capacity;
    r->mask = capacity - 1;
    return RP_OK;
}

void rp_ring_destroy(rp_ring *r) { (void)r; /* owns nothing: the caller frees the block */ }

uint64_t rp_ring_capacity(const rp_ring *r) { return r->capacity; }
uint64_t rp_ring_max_record(const rp_ring *r) { return r->capacity / 4u - sizeof(rp_rec); }

/* Records start on their own cache line, so the producer writing the next record never
 * touches the line the consumer is reading (false sharing would bounce it between cores). */
#define RP_REC_ALIGN UINT64_C(64)
static inline uint64_t rec_span(uint32_t len) {
    return (sizeof(rp_rec) + (uint64_t)len + RP_REC_ALIGN - 1) & ~(RP_REC_ALIGN - 1);
}

/* Reserve len payload bytes at cursor t (the published tail, or the end of the records reserved
 * and not yet committed). */
static void *reserve_at(rp_ring *r, uint64_t t, uint32_t len) {
    if ((uint64_t)len > rp_ring_max_record(r)) return NULL;
    uint64_t off = t & r->mask;
    uint64_t need = rec_span(len);
    uint64_t contig = r->capacity - off;
    uint64_t pad = need > contig ? contig : 0; /* offsets are multiples of 8: contig >= 8 */
    uint64_t total = pad + need;
    if (total > r->capacity - (t - r->head_cache)) {
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        if (total > r->capacity - (t - r->head_cache)) return NULL;
    }
    if (pad) {
        rp_rec *p = (rp_rec *)(r->data + off);
        p->len = (uint32_t)(pad - sizeof(rp_rec));
        p->kind = RP_REC_PAD;
        off = 0;
    }
    rp_rec *h = (rp_rec *)(r->data + off);
    h->len = len;
    h->kind = RP_REC_MSG;
    r->reserved_next = t + total;
    return h + 1;
}

void *rp_ring_reserve(rp_ring *r, uint32_t len) {
    return reserve_at(r, atomic_load_explicit(&r->tail, memory_order_relaxed), len);
}

void *rp_ring_reserve_more(rp_ring *r, uint32_t len) { return reserve_at(r, r->reserved_next, len); }

void rp_ring_commit(rp_ring *r) {
    atomic_store_explicit(&r->tail, r->reserved_next, memory_order_release);
}

/* The record at cursor h (the published head, or the end of the records peeked and not yet
 * consumed), or NULL when none is published there. */
static const void *peek_at(rp_ring *r, uint64_t h, uint32_t *len) {
    if (h == r->tail_cache) {
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (h == r->tail_cache) return NULL;
    }
    const rp_rec *rec = (const rp_rec *)(r->data + (h & r->mask));
    if (rec->kind == RP_REC_PAD) {
        h += sizeof(rp_rec) + rec->len; /* a pad is always published with the record after it */
        rec = (const rp_rec *)(r->data + (h & r->mask));
    }
    *len = rec->len;
    r->peeked_next = h + rec_span(rec->len);
    return rec + 1;
}

const void *rp_ring_peek(rp_ring *r, uint32_t *len) {
    return peek_at(r, atomic_load_explicit(&r->head, memory_order_relaxed), len);
}

const void *rp_ring_peek_more(rp_ring *r, uint32_t *len) { return peek_at(r, r->peeked_next, len); }

void rp_ring_consume(rp_ring *r) {
    atomic_store_explicit(&r->head, r->peeked_next, memory_order_release);
}

int rp_ring_readable(rp_ring *r) {
    return atomic_load_explicit(&r->head, memory_order_relaxed) !=
           atomic_load_explicit(&r->tail, memory_order_acquire);
}

uint64_t rp_ring_used(rp_ring *r) {
    return atomic_load_explicit(&r->tail, memory_order_acquire) -
           atomic_load_explicit(&r->head, memory_order_acquire);
}

uint64_t rp_ring_produced(rp_ring *r) { return atomic_load_explicit(&r->tail, memory_order_acquire); }
