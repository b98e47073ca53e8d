/* rp_shm.h - shared memory blocks: the memory behind a SharedArrayBuffer.
 *
 * Plain C11, no Python headers.  A block is reference counted with an atomic count: every
 * SharedArrayBuffer object (in any interpreter or thread) and every message in flight that
 * carries it holds one reference, so the memory lives exactly as long as somebody can see it.
 *
 * Growable blocks reserve their maximum size up front (an anonymous mapping, whose pages the
 * OS only backs once touched), so growing never moves the memory: views taken earlier stay
 * valid, as in JavaScript.  Bytes past the current length are never handed out, so they are
 * still the mapping's zeros when a grow exposes them.
 */
#ifndef RP_SHM_H
#define RP_SHM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rp_sab rp_sab;

/* Data is aligned to at least 16 bytes. */
#define RP_SAB_ALIGN 16u

/* A zero-filled block of `length` bytes that may grow to `max_length` (== length when not
 * growable).  Returns NULL when out of memory (or length > max_length).  One reference. */
rp_sab *rp_sab_new(size_t length, size_t max_length, int growable);
void rp_sab_incref(rp_sab *s);
void rp_sab_decref(rp_sab *s);
/* The release function of a message handle that holds a reference (aux unused). */
void rp_sab_release(void *s, uint64_t aux);

void *rp_sab_data(const rp_sab *s);
/* The current length (acquire: bytes below it are zeroed and visible). */
size_t rp_sab_length(const rp_sab *s);
size_t rp_sab_max_length(const rp_sab *s);
int rp_sab_growable(const rp_sab *s);
/* Grow to new_length (never shrinks): RP_OK, or RP_EINVAL when not growable, smaller than
 * the current length (another thread may have grown it meanwhile), or beyond the maximum. */
int rp_sab_grow(rp_sab *s, size_t new_length);

#ifdef __cplusplus
}
#endif
#endif /* RP_SHM_H */
