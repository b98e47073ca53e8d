/* rp_ring.h - a single-producer single-consumer ring of variable-length records.
 *
 * One contiguous block: a header with the producer cursor and the consumer cursor on cache
 * lines of their own, then the data area.  Cursors are 64-bit byte counts that only grow; the
 * offset in the data area is cursor & (capacity - 1).  A record is an 8-byte header
 * (length, kind) and its payload, padded to 8 bytes; a record never wraps: when it does not fit
 * before the end, the producer writes a padding record and starts again at offset 0.
 *
 * The struct is opaque and position independent (no pointers inside), so the same ring can
 * live in malloc'ed memory or in a shared mapping: rp_ring_size() says how many bytes to give
 * rp_ring_init().  Several producers or consumers must serialize among themselves (rp_channel
 * does that with one lock per side); one producer and one consumer need no lock.
 */
#ifndef RP_RING_H
#define RP_RING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rp_ring rp_ring;

#define RP_RING_MIN_CAPACITY 256u
/* 1 GiB per ring: far above what a queue in memory needs, low enough that a typo fails. */
#define RP_RING_MAX_CAPACITY (UINT64_C(1) << 30)
#define RP_RING_ALIGN 64u

/* Bytes needed for a ring whose data area holds `capacity` bytes (a power of two), or 0 if the
 * capacity is not acceptable. */
size_t rp_ring_size(uint64_t capacity);
/* mem must be RP_RING_ALIGN-aligned and rp_ring_size(capacity) bytes long. */
int rp_ring_init(void *mem, uint64_t capacity);
void rp_ring_destroy(rp_ring *r);

uint64_t rp_ring_capacity(const rp_ring *r);
/* The largest payload one record may carry (a quarter of the capacity, so that a big record
 * never starves small ones for long). */
uint64_t rp_ring_max_record(const rp_ring *r);

/* Producer: reserve room for a payload of len bytes.  Returns a pointer to write it to, or NULL
 * when the ring has no room now.  rp_ring_commit() publishes it (release order). */
void *rp_ring_reserve(rp_ring *r, uint32_t len);
void rp_ring_commit(rp_ring *r);
/* Batches: reserve another record after those reserved and not committed yet; one
 * rp_ring_commit() then publishes them all (one cursor store for the batch). */
void *rp_ring_reserve_more(rp_ring *r, uint32_t len);

/* Consumer: the oldest record, or NULL when empty (acquire order).  The payload stays valid and
 * unchanged until rp_ring_consume() gives its room back to the producer. */
const void *rp_ring_peek(rp_ring *r, uint32_t *len);
void rp_ring_consume(rp_ring *r);
/* Batches: the record after the one peeked last, which stays unconsumed (valid) as well; one
 * rp_ring_consume() then gives the room of every record peeked so far back at once. */
const void *rp_ring_peek_more(rp_ring *r, uint32_t *len);

/* Racy hints, for waiting loops: is anything published?  how many bytes are in use? */
int rp_ring_readable(rp_ring *r);
uint64_t rp_ring_used(rp_ring *r);
/* The producer's cursor: bytes published so far (it changes whenever a record is published). */
uint64_t rp_ring_produced(rp_ring *r);

#ifdef __cplusplus
}
#endif
#endif /* RP_RING_H */
