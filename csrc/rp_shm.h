/* rp_shm.h - shared memory blocks: the memory behind a SharedArrayBuffer.
 *
 * Plain C11, no Python headers.  A block is reference counted with an atomic count: every
 * SharedArrayBuffer object (in any interpreter or thread) and every message in flight that
 * carries it holds one reference, so the memory lives exactly as long as somebody in this
 * process can see it.
 *
 * On Linux every block is a memfd (memfd_create, sealed against shrinking, mapped MAP_SHARED),
 * so another process can map the same memory from the file descriptor (rp_sab_fd, passed over a
 * Unix socket with SCM_RIGHTS, then rp_sab_from_fd).  The kernel frees the memory when the last
 * mapping and descriptor in any process go away, so a killed process leaks nothing and no name
 * in /dev/shm outlives a crash.  The mapping is
 *
 *     [ header: RP_SHM_HDR_BYTES ][ data: max_length bytes ]
 *
 * The header holds the current length (so a grow in one process is seen by all) and the wait
 * cells of the cross-process parking lot (rp_park.c); the data starts page-aligned.  Pages are
 * backed on first touch, so a growable block's reserved maximum, and the header's unused wait
 * cells, cost address space only.  Growing never moves the memory: views taken earlier stay
 * valid, as in JavaScript.  Bytes past the current length are never handed out, so they are
 * still zero when a grow exposes them.
 *
 * Fallback: where memfd_create is missing or fails (not Linux, an old kernel, seccomp, or
 * EMFILE: the process is at its RLIMIT_NOFILE, one descriptor per block), the block is plain
 * process-local memory (calloc, or an anonymous mapping when growable) and rp_sab_fd() is -1:
 * it still works in every thread and interpreter of this process, and only sending it to
 * another process fails (with a clear error in the layer above).  We do not raise the process's
 * descriptor limit behind the program's back.
 *
 * Small blocks that never left the process (rp_sab_fd never called) are recycled, zeroed,
 * instead of unmapped (rp_shm.c, "recycling"): a memfd block costs tens of microseconds of
 * system calls to make and drop.  A child made by os.fork() shares every block with its parent
 * (MAP_SHARED), unlike the copy it had of calloc'ed memory: start other processes with spawn.
 *
 * Nothing in the header is trusted: another process may write anything there.  The length read
 * from it is clamped to the maximum this process mapped, and rp_park.c bounds every index.
 */
#ifndef RP_SHM_H
#define RP_SHM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rp_sab rp_sab;

/* Data is aligned to at least 16 bytes (a page for shareable blocks). */
#define RP_SAB_ALIGN 16u

/* The header in front of a shareable block's data: 64 KiB, so the data stays aligned to the
 * largest page size in use (arm64 64 KiB pages); only its first page is touched unless many
 * threads wait on the block at once. */
#define RP_SHM_HDR_BYTES 65536u
/* The part of the header that belongs to rp_park.c (its wait cells). */
#define RP_SHM_LOT_OFFSET 64u
#define RP_SHM_LOT_BYTES (RP_SHM_HDR_BYTES - RP_SHM_LOT_OFFSET)

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
 * the current length (another thread or process may have grown it meanwhile), or beyond the
 * maximum. */
int rp_sab_grow(rp_sab *s, size_t new_length);

/* The block's memfd, for sending to another process, or -1 when the block is process-local
 * (the fallback above).  Borrowed: it stays open exactly as long as the block; do not close it.
 * The receiver needs it with rp_sab_max_length() and rp_sab_growable(). */
int rp_sab_fd(const rp_sab *s);
/* Map a block received from another process.  Checks, trusting nothing: fd is a regular file
 * sealed against shrinking, at least RP_SHM_HDR_BYTES + max_length long, and a memfd that
 * rp_sab_new made (by its name).  On success the block owns fd (closes it when it dies) and has one reference;
 * on failure returns NULL, sets errno (EINVAL: not such a block or too small; EBADF; ENOMEM)
 * and leaves fd to the caller. */
rp_sab *rp_sab_from_fd(int fd, size_t max_length, int growable);

/* ---- warm blocks: private memory for big message bodies, kept for reuse
 *
 * A fresh page costs a fault and a zeroing on first touch: 1 MiB of fresh memory takes about
 * 1 ms to fill on a VM, against 0.1 ms for memory touched before, and malloc hands big blocks
 * back to the system at free (munmap, or a heap trim), so every big message would pay it again.
 * rp_warm_alloc(n) gives at least n bytes, 16-aligned; blocks of RP_WARM_MIN bytes or more
 * are mappings that rp_warm_free keeps (up to RP_WARM_KEEP_N blocks, RP_WARM_KEEP_BYTES in all,
 * process-wide) for the next block of about the same size; smaller ones are malloc'ed.
 * rp_warm_realloc keeps the first `keep` bytes.  rp_warm_cap: the usable bytes of a block. */
#define RP_WARM_MIN 65536u
#define RP_WARM_KEEP_N 8
#define RP_WARM_KEEP_BYTES (16u << 20)
void *rp_warm_alloc(size_t n);
void *rp_warm_realloc(void *p, size_t n, size_t keep);
void rp_warm_free(void *p);
size_t rp_warm_cap(const void *p);

/* ---- for rp_park.c: the cross-process parking lot of shareable blocks */
typedef struct rp_shm_lot rp_shm_lot;
/* The shareable block whose data contains addr (its offset there in *offset), or NULL: then
 * addr is process-local memory.  Returns no reference: the caller keeps the memory alive
 * anyway (it is about to read addr). */
rp_sab *rp_sab_find(const void *addr, uint64_t *offset);
/* The block's RP_SHM_LOT_BYTES of wait cells in its header; NULL when process-local. */
rp_shm_lot *rp_sab_lot(const rp_sab *s);

#ifdef __cplusplus
}
#endif
#endif /* RP_SHM_H */
