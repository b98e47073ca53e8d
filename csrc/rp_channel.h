/* rp_channel.h - how a message crosses: two entangled ports, one queue per direction.
 *
 * A queue is a lock-free SPSC ring (rp_ring) plus an ordered overflow list for messages that
 * do not fit (ring full, or bigger than a ring record may be).  Producers serialize on one
 * small lock, consumers on another, so any number of threads may post and receive; a single
 * producer and a single consumer never contend.  Posting never blocks unless the queue was
 * given a bound on pending bytes; messages are never dropped.
 *
 * Waiting: a consumer spins (adaptive budget) and then sleeps on a sequence word; a producer
 * only makes the wake-up system call when a consumer has said it is asleep, so a busy stream
 * makes no system calls.
 *
 * A message body is an rp_msg header, its handle table, then codec bytes.  Handles are the
 * things a message owns outside its bytes (out-of-band blocks, transferred ports, shared
 * buffers); the C layer releases them when a message is dropped unread, so nothing leaks when a
 * channel dies with messages in it.
 *
 * Reference counting: each side of a channel counts the references to it (port objects in any
 * interpreter, and handles in flight).  When a side loses its last reference the channel
 * closes; when both sides have, the channel is freed.
 */
#ifndef RP_CHANNEL_H
#define RP_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "rp_ring.h"
#include "rp_wait.h"
#include "rp_waitset.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ messages */

typedef void (*rp_release_fn)(void *ptr, uint64_t aux);

typedef struct rp_handle {
    rp_release_fn release; /* NULL once the receiver adopted it */
    void *ptr;
    uint64_t aux;  /* e.g. the side of a port, the size of a block */
    uint32_t kind; /* RP_H_* */
    uint32_t reserved;
} rp_handle;

enum { RP_H_BLOCK = 1, RP_H_PORT = 2, RP_H_SAB = 3,
       /* in a message to another process (aux: the ticket of its descriptors) */
       RP_H_XSAB = 4, RP_H_XPORT = 5,
       /* aux: the offset of a record in the arena of the direction it came by */
       RP_H_XARENA = 6 };

/* flags of rp_msg */
enum {
    RP_MSG_CODE = 1 /* decoding may run user code (pickle): copy out, then decode unlocked */
};

typedef struct rp_msg {
    uint32_t nhandles;
    uint32_t flags;
    uint64_t data_len; /* codec bytes right after this header */
    /* then, at the next multiple of 8: rp_handle handles[nhandles] */
} rp_msg;

static inline size_t rp_align8(size_t n) { return (n + 7u) & ~(size_t)7u; }
static inline unsigned char *rp_msg_data(rp_msg *m) { return (unsigned char *)(m + 1); }
static inline rp_handle *rp_msg_handles(rp_msg *m) {
    return (rp_handle *)((unsigned char *)(m + 1) + rp_align8((size_t)m->data_len));
}
static inline size_t rp_msg_size(uint64_t data_len, uint32_t nhandles) {
    return sizeof(rp_msg) + rp_align8((size_t)data_len) + (size_t)nhandles * sizeof(rp_handle);
}
/* Is a body of len bytes a well-formed rp_msg (sizes agree)?  Bodies are written by this
 * library only, but a cheap check keeps a bug from turning into an over-read. */
static inline int rp_msg_valid(const rp_msg *m, size_t len) {
    if (len < sizeof(rp_msg) || m->data_len > len) return 0;
    return rp_msg_size(m->data_len, m->nhandles) == len;
}
/* Release every handle the receiver did not adopt. */
void rp_msg_release_handles(rp_msg *m);

/* A message that lives in its own block: the overflow path, and big messages built in place.
 * Allocate with rp_node_alloc(body_len), fill rp_node_body(), hand to rp_channel_send_node(). */
typedef struct rp_node rp_node;
rp_node *rp_node_alloc(size_t body_len);
rp_node *rp_node_realloc(rp_node *n, size_t body_len);
void *rp_node_body(rp_node *n);
size_t rp_node_len(const rp_node *n);
/* Shrink the message length after building in place (never above the allocated length). */
void rp_node_set_len(rp_node *n, size_t body_len);
void rp_node_free(rp_node *n); /* does not release handles */

/* An out-of-band block of bytes (e.g. a big buffer of a pickled array): released by free. */
void rp_block_release(void *ptr, uint64_t aux);

/* Tokens: a message in its own node, named by a process-wide id (rp_registry.h) so that plain
 * data (an int handed to a new thread or interpreter) can carry it.  Each token is taken exactly
 * once, or dropped; a stale, reused or wrong id is RP_ENOENT, never a crash.
 * rp_token_new registers n (the registry owns it then) and returns its id, or RP_ENOMEM (n is
 * still the caller's).  rp_token_take hands the node back (the caller decodes, releases the
 * handles it did not adopt, frees it).  rp_token_drop releases its handles and frees it. */
int64_t rp_token_new(rp_node *n);
int rp_token_take(int64_t id, rp_node **out);
int rp_token_drop(int64_t id);

/* ------------------------------------------------------------------ channels */

typedef struct rp_channel rp_channel;

/* capacity: ring bytes per direction (a power of two, RP_RING_MIN_CAPACITY to
 * RP_RING_MAX_CAPACITY).  A ring is mapped at the first post in its direction and its pages are
 * committed as messages reach them: an idle channel costs about 2 KiB, and creating one makes
 * no system call.  max_pending: 0 for unbounded, else the
 * bound on bytes posted and not yet received in each direction. */
rp_channel *rp_channel_new(uint64_t capacity, int64_t max_pending);
/* Reference counting per side (see above).  The new channel holds one reference per side. */
void rp_channel_incref(rp_channel *ch, int side);
void rp_channel_decref(rp_channel *ch, int side);
/* A port handle's release function: aux is the side. */
void rp_port_release(void *ch, uint64_t side);

uint64_t rp_channel_capacity(const rp_channel *ch);
int64_t rp_channel_max_pending(const rp_channel *ch);
/* Messages and bytes posted by `side` and not yet received (racy, for introspection). */
int64_t rp_channel_pending_bytes(rp_channel *ch, int side);

/* Close both directions.  Messages already posted are still delivered.  Idempotent. */
void rp_channel_close(rp_channel *ch);
/* Drop the messages waiting for `side`, releasing what they carry (transferred ports close,
 * out-of-band blocks are freed): a port that closed itself never reads them (as in Node).
 * Waits for the consumer lock: call without the GIL.  Meant for a closed channel. */
void rp_channel_discard(rp_channel *ch, int side);
/* Signal the wait sets watching what `side` receives, so the loops look at the port again (for
 * one: its port object was transferred away, and an asyncio waiter must learn it). */
void rp_channel_signal(rp_channel *ch, int side);
int rp_channel_closed(rp_channel *ch);

/* Post a body of len bytes from `side`: copied into the ring, or into an overflow node.
 * Unbounded queues never block.  Bounded ones wait for room until deadline_ns, coming back
 * with RP_EINTR at each slice end; RP_EFULL if the deadline is "now" (non-blocking).
 * Returns RP_OK, RP_ECLOSED, RP_ENOMEM, RP_EFULL, RP_ETIMEDOUT, RP_EINTR or RP_ECANCELED. */
int rp_channel_send(rp_channel *ch, int side, const void *body, size_t len, int64_t deadline_ns,
                    int64_t slice_ns, rp_cancel *cancel);
/* Same, but the body is already in a node: the ring gets a copy when it is small and the ring
 * has room (and the node is freed), else the node itself is queued.  On error the node is still
 * the caller's. */
int rp_channel_send_node(rp_channel *ch, int side, rp_node *node, int64_t deadline_ns,
                         int64_t slice_ns, rp_cancel *cancel);

/* Receiving on `side` (the messages the other side posted).  A receive is begin + end:
 * begin waits until a message is there (or deadline/slice/cancel/closed-and-drained), locks
 * the consumer side and points *body at the message in place; end gives its room back and
 * unlocks.  Between the two the caller decodes (and adopts handles).
 * deadline_ns == 0 means do not wait at all. */
typedef struct rp_recv {
    rp_msg *msg;
    size_t len;
    rp_node *node; /* the overflow node holding it, or NULL when it is in the ring */
    int remote;    /* it came from another process: its handles' pointers mean nothing here */
    /* batches (rp_channel_recv_next): ring room and pending bytes given back at the end */
    int room_owed;
    size_t done_bytes;
} rp_recv;

int rp_channel_recv_begin(rp_channel *ch, int side, rp_recv *out, int64_t deadline_ns,
                          int64_t slice_ns, rp_cancel *cancel);
/* Never waits, not even for the consumer lock (safe to call holding the GIL): RP_OK (locked, as
 * after begin), RP_EAGAIN (nothing, or another consumer busy), RP_ECLOSED (closed, drained). */
int rp_channel_try_recv(rp_channel *ch, int side, rp_recv *out);
/* Releases the handles the caller did not adopt (release set to NULL), frees the slot. */
void rp_channel_recv_end(rp_channel *ch, int side, rp_recv *r);
/* Batches: with the consumer lock held (after begin, try_recv or next returned a message),
 * finish r's message as recv_end would and take the next one without unlocking or giving ring
 * room back: 1 (r points at it), or 0 when none is there (then the batch ended as by recv_end:
 * all the room given back at once, unlocked).  Never waits. */
int rp_channel_recv_next(rp_channel *ch, int side, rp_recv *r);
/* Post n bodies (each starting at the next multiple of 8 in `bodies`, lens[i] bytes long) as n
 * messages under one producer lock, published together with one wake-up.  *sent: how many
 * were posted, in order (all of them on RP_OK; on an error the ones before it).  Waiting and
 * return codes as rp_channel_send. */
int rp_channel_send_batch(rp_channel *ch, int side, const unsigned char *bodies,
                          const size_t *lens, size_t n, size_t *sent, int64_t deadline_ns,
                          int64_t slice_ns, rp_cancel *cancel);
/* Is a message (or the end of the stream) ready for `side` now? */
int rp_channel_poll(rp_channel *ch, int side);

/* Make the queue that `side` receives from signal ws (slot 0: an event loop thread, slot 1: an
 * asyncio loop) after every post and on close; ws NULL detaches.  Attaching happens under the
 * queue's producer lock, so a producer never signals a set that is being released.  The new set
 * is signalled once, so its owner re-checks the queue. */
void rp_channel_watch(rp_channel *ch, int side, int slot, rp_waitset *ws);

/* ------------------------------------------------------------------ channels shared with a process
 *
 * The same channel, with both rings and the words producers and consumers wait on in one memfd
 * mapping (Linux), so that one side can live in another process: rp_channel_new_shared makes it
 * with side 0 here and returns the memfd and the other end of the channel's socket pair (both
 * close-on-exec, the caller's to pass on and close) that the other process gives
 * rp_channel_attach_shared with side 1 (which owns them from then on).  Each process
 * holds its own struct with one live side; closing either side closes both.  Waits use process-
 * shared futexes; a message too big for a record crosses in fragments; posting never waits for
 * the other process (what does not fit waits in this process and a flusher thread writes it out).
 * Messages on such a channel must carry no pointers: every handle is released = NULL and means
 * something only by its kind and aux (the receiver never calls a release function).
 * NULL: out of memory, no memfd, or (attach) a file that is not such a channel of that capacity. */
rp_channel *rp_channel_new_shared(uint64_t capacity, int64_t max_pending, int *fd_out,
                                  int *sock_out);
rp_channel *rp_channel_attach_shared(int fd, int sock, uint64_t capacity, int64_t max_pending,
                                     int side);
int rp_channel_shared(const rp_channel *ch);
/* Mark a channel one of whose ends is relayed to another machine (the Ray backend): messages
 * posted on it may not hold shared memory (SharedArrayBuffer), which cannot cross.  Never
 * cleared. */
void rp_channel_set_unshared(rp_channel *ch);
int rp_channel_unshared(rp_channel *ch);
/* The side that lives in this process (-1 for a channel in memory). */
int rp_channel_local_side(const rp_channel *ch);

/* Descriptors that travel with a message to the other process (see rp_channel.c): up to
 * RP_XFD_MAX descriptors and RP_XFD_META bytes that start with the 64-bit ticket the message's
 * handle names.  The descriptors stay the caller's (the kernel copies them). */
#define RP_XFD_MAX 2
#define RP_XFD_META 64
typedef struct rp_xfd {
    int fds[RP_XFD_MAX];
    int nfds;
    size_t len;
    unsigned char meta[RP_XFD_META];
} rp_xfd;
/* A ticket no other message from this process uses. */
uint64_t rp_channel_new_ticket(void);
/* rp_channel_send / send_node with descriptors (node may be NULL: then body is copied).
 * RP_EFULL when the socket has no room for them (too many in flight). */
int rp_channel_send_x(rp_channel *ch, int side, const void *body, size_t len, rp_node *node,
                      const rp_xfd *xfds, int nx, int64_t deadline_ns, int64_t slice_ns,
                      rp_cancel *cancel);
/* rp_channel_send_x of one body given in three pieces (head, data, tail), which stay the
 * caller's: a shared queue copies them into its ring without putting them together first (one
 * copy of a big array fewer); elsewhere they are put together into a node. */
int rp_channel_send_sg(rp_channel *ch, int side, const void *head, size_t head_len,
                       const void *data, size_t data_len, const void *tail, size_t tail_len,
                       const rp_xfd *xfds, int nx, int64_t deadline_ns, int64_t slice_ns,
                       rp_cancel *cancel);
/* Receiver: the descriptors (now the caller's) and meta of ticket; RP_ENOENT if they are not
 * there. */
int rp_channel_take_fds(rp_channel *ch, uint64_t ticket, rp_xfd *out);
/* Big data copied once (arenas).  Each direction of a shared channel has an arena of
 * RP_ARENA_SIZE bytes at the end of the channel's mapping, which both processes map from the
 * start (its pages are committed only as data reaches them).  A producer copies a big array's
 * bytes into a record there and the message names the record (a handle of kind RP_H_XARENA);
 * the receiver views the bytes in place, and frees the record when that view dies (one copy in
 * all, where the ring's fragments take two).  Records are freed in any order; the producer
 * reclaims the oldest freed ones, so one view kept for long makes later posts take the
 * fragment path until it dies.  Only on an unbounded channel (a bounded one counts every byte
 * in the ring).  Both sides check every offset and size they read from the shared memory.
 *
 * rp_channel_arena_alloc: posting from `side` (this process's): a record for n bytes; its
 * data's offset in the arena (and *data), or -1 (not shared, bounded, closed, too big, no
 * room).  The caller fills it and sends the offset, or gives it back with rp_xmap_free.
 * rp_channel_arena_xmap: the mapping of a shared channel (NULL for one in memory), which
 * outlives the channel while references to it are held (rp_xmap_incref/decref).
 * rp_xmap_view: receiving what `side` posted: the data of the record at offset off, n bytes,
 * or NULL when that does not lie in the arena.  rp_xmap_free: the record at offset off (its
 * data's) is free again; an offset that names no record is ignored. */
#define RP_ARENA_SIZE (UINT64_C(16) << 20)
#define RP_ARENA_HDR 64u
typedef struct rp_xmap rp_xmap;
int64_t rp_channel_arena_alloc(rp_channel *ch, int side, uint64_t n, void **data);
rp_xmap *rp_channel_arena_xmap(rp_channel *ch);
void *rp_xmap_view(rp_xmap *m, int side, uint64_t off, uint64_t n);
void rp_xmap_incref(rp_xmap *m);
void rp_xmap_decref(rp_xmap *m);
void rp_xmap_free(rp_xmap *m, int side, uint64_t off);

/* Transferring a side to a third process: new descriptors of the mapping and of this side's
 * socket (the caller's); then rp_channel_detach drops this process's reference without closing
 * the channel (the side lives on over there). */
int rp_channel_export(rp_channel *ch, int *memfd, int *sock);
void rp_channel_detach(rp_channel *ch, int side);
/* Before a process ends: wait until every message posted here to another process is in its
 * ring (the flushers are done), or deadline_ns (RP_ETIMEDOUT).  Whatever waits for a consumer
 * that is gone is dropped rather than waited for. */
int rp_channel_flush_all(int64_t deadline_ns);

#ifdef __cplusplus
}
#endif
#endif /* RP_CHANNEL_H */
