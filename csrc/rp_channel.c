/* rp_channel.c - see rp_channel.h */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "rp_channel.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#include <windows.h>
#else
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "rp_registry.h"
#include "rp_shm.h"

/* ------------------------------------------------------------------ nodes and handles */

struct rp_node {
    rp_node *next;
    size_t len;
    alignas(16) unsigned char body[];
};

/* Nodes are warm blocks (rp_shm.h): a big message's node (the encoder's buffer, an overflow
 * node, a message put together from fragments) reuses memory that earlier ones touched.
 *
 * Mid-sized nodes (a few KiB up to RP_NODE_SPARE_MAX) are malloc'ed, and in a stream the
 * producer allocates each one while the consumer frees it: glibc then frees into the producer's
 * arena under that arena's lock, against the producer's own malloc, and the two threads sleep on
 * that lock (about 60 futex waits per 1000 8 KiB messages, and the swings between runs).  So a
 * freed mid-sized node goes to a few process-wide spare slots that the next allocation takes
 * back: one exchange each way, no lock, no malloc in a steady stream.  A slot is taken with an
 * exchange (whoever gets the pointer owns the block) and filled only when empty (a compare-
 * exchange from NULL), so there is no ABA.  They hold at most RP_NODE_SPARES (32) blocks of at most
 * RP_NODE_SPARE_MAX bytes, process-wide; no interpreter objects, so safe across interpreters. */
#define RP_NODE_SPARES 32
#define RP_NODE_SPARE_MIN 2048u
#define RP_NODE_SPARE_MAX 32768u /* below RP_WARM_MIN: always a malloc'ed warm block */
static _Atomic(rp_node *) rp_node_spare[RP_NODE_SPARES];

static int spare_fits(size_t cap, size_t need) { return cap >= need && cap / 2u <= need; }

/* A spare block of at least need bytes (and not more than twice that), or NULL. */
static rp_node *spare_take(size_t need) {
    for (int i = 0; i < RP_NODE_SPARES; i++) {
        if (!atomic_load_explicit(&rp_node_spare[i], memory_order_relaxed)) continue;
        rp_node *n = atomic_exchange_explicit(&rp_node_spare[i], NULL, memory_order_acquire);
        if (!n) continue;
        if (spare_fits(rp_warm_cap(n), need)) return n;
        /* a size nobody asks for now: let it go, or it would keep the slot from the sizes of
         * the stream (a stream frees blocks of one or two sizes) */
        rp_warm_free(n);
    }
    return NULL;
}

/* Keep n as a spare if it is mid-sized and a slot is free; 1 if kept. */
static int spare_put(rp_node *n) {
    size_t cap = rp_warm_cap(n);
    if (cap < RP_NODE_SPARE_MIN || cap > RP_NODE_SPARE_MAX) return 0;
    for (int i = 0; i < RP_NODE_SPARES; i++) {
        rp_node *empty = NULL;
        if (atomic_load_explicit(&rp_node_spare[i], memory_order_relaxed)) continue;
        if (atomic_compare_exchange_strong_explicit(&rp_node_spare[i], &empty, n,
                                                    memory_order_release, memory_order_relaxed))
            return 1;
    }
    return 0;
}

rp_node *rp_node_alloc(size_t body_len) {
    if (body_len > SIZE_MAX / 2u - sizeof(rp_node)) return NULL;
    size_t need = sizeof(rp_node) + body_len;
    rp_node *n = NULL;
    if (need >= RP_NODE_SPARE_MIN / 2u && need <= RP_NODE_SPARE_MAX) n = spare_take(need);
    if (!n) n = (rp_node *)rp_warm_alloc(need);
    if (n) {
        n->next = NULL;
        n->len = body_len;
    }
    return n;
}

rp_node *rp_node_realloc(rp_node *n, size_t body_len) {
    if (body_len > SIZE_MAX / 2u - sizeof(rp_node)) return NULL;
    rp_node *m = (rp_node *)rp_warm_realloc(n, sizeof(rp_node) + body_len,
                                            sizeof(rp_node) + n->len);
    if (m) m->len = body_len;
    return m;
}

void *rp_node_body(rp_node *n) { return n->body; }
size_t rp_node_len(const rp_node *n) { return n->len; }
void rp_node_set_len(rp_node *n, size_t body_len) {
    if (body_len <= n->len) n->len = body_len;
}
void rp_node_free(rp_node *n) {
    if (n && spare_put(n)) return;
    rp_warm_free(n);
}

void rp_block_release(void *ptr, uint64_t aux) {
    (void)aux;
    rp_warm_free(ptr);
}

void rp_msg_release_handles(rp_msg *m) {
    rp_handle *h = rp_msg_handles(m);
    for (uint32_t i = 0; i < m->nhandles; i++) {
        rp_release_fn f = h[i].release;
        h[i].release = NULL;
        if (f) f(h[i].ptr, h[i].aux);
    }
}

/* ------------------------------------------------------------------ tokens */

static void token_destroy(void *node) {
    rp_node *n = (rp_node *)node;
    if (rp_msg_valid((rp_msg *)n->body, n->len)) rp_msg_release_handles((rp_msg *)n->body);
    rp_node_free(n);
}

/* no incref: a token has one owner, the registry until it is taken */
static const rp_reg_ops token_ops = {NULL, token_destroy};

int64_t rp_token_new(rp_node *n) { return rp_registry_add(RP_REG_TOKEN, &token_ops, n); }

int rp_token_take(int64_t id, rp_node **out) {
    void *p = NULL;
    int r = rp_registry_take(id, RP_REG_TOKEN, &p);
    if (r == RP_OK) *out = (rp_node *)p;
    return r;
}

int rp_token_drop(int64_t id) { return rp_registry_decref(id, RP_REG_TOKEN); }

/* ------------------------------------------------------------------ ring memory
 *
 * A queue maps its ring when the first message that fits one is posted (never for a direction
 * nobody posts to), and never fills it: the system commits a page when a message first reaches
 * it.  Creating a channel allocates one small block and makes no system call; an idle channel
 * costs that block, a used one the ring pages its messages reached.  Once published, a ring
 * stays until the channel is freed, so a consumer that loads the pointer may use it freely. */

static void *ring_map(size_t size) {
#if defined(_WIN32)
    return VirtualAlloc(NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
#else
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
#endif
}

static void ring_unmap(void *p, size_t size) {
#if defined(_WIN32)
    (void)size;
    VirtualFree(p, 0, MEM_RELEASE);
#else
    munmap(p, size);
#endif
}

/* ------------------------------------------------------------------ queues */

/* The words producers and consumers of one direction wait on.  A queue in memory has its own;
 * a queue whose ring is shared with another process points into the shared header. */
typedef struct rp_qwords {
    /* consumers asleep waiting for data.  `data_sleepy` is set by a consumer about to sleep and
     * taken (exchanged to 0) by the first producer that sees it, which then wakes everybody:
     * one system call per sleep, not one per message posted while a consumer wakes up. */
    alignas(64) atomic_uint data_seq;
    atomic_int data_sleepy;
    /* bounded mode: producers asleep waiting for room (and, shared, a flusher waiting) */
    alignas(64) _Atomic int64_t pending;
    atomic_uint space_seq;
    atomic_int space_sleepy;
} rp_qwords;

typedef struct rp_queue {
    alignas(64) rp_lock plock; /* producers */
    alignas(64) rp_lock clock; /* consumers */
    /* overflow list: touched by the lock-holding producer and the lock-holding consumer */
    alignas(64) rp_lock olock;
    atomic_uint ocount;
    rp_node *ohead, *otail;
    size_t osent; /* shared: bytes of ohead already written to the ring as fragments */
    rp_qwords *w; /* &own, or the direction's words in the shared header */
    int shared;   /* w and the ring are in memory shared with another process */
    rp_node *partial; /* shared, consumer: the fragmented message being put together */
    size_t pfill;
    alignas(64) rp_spin spin; /* read by every spinning consumer: a line of its own */
    rp_qwords own;
    _Atomic(rp_ring *) ring; /* NULL until the first post that fits it (under plock) */
    /* wait sets watching this queue (event loops; see rp_channel_watch), under plock */
    _Atomic(rp_waitset *) watch[2];
} rp_queue;

struct rp_channel {
    atomic_int refs[2];
    atomic_int sides_alive;
    atomic_int *closed; /* &closed_own, or the word in the shared header */
    atomic_int closed_own;
    uint64_t capacity;
    int64_t max_pending;
    rp_queue q[2]; /* q[s]: posted by side s, received by side 1 - s */
    /* shared with another process (see rp_channel_new_shared): only side `local` lives here */
    int shared, local, sock, memfd;
    rp_lock fdlock; /* receivers taking descriptors from sock */
    rp_lock alock;  /* producers here allocating in the arena (rp_channel_arena_alloc) */
    rp_xmap *xmap;  /* shared: the mapping, which views of arena records keep alive */
    atomic_int *spinners; /* shared: the header's count of spinners in both processes */
    atomic_int stop;     /* the channel is being freed: helper threads leave */
    atomic_int threads;  /* helper threads running (flusher, watcher) */
    atomic_int flushing; /* a flusher thread is running */
    atomic_int closing;  /* closed here; the other process sees it once the flusher is done */
    atomic_int zombie;   /* freed here while the flusher works: it frees the struct */
    atomic_int watching; /* a watcher thread is running */
    atomic_int unshared; /* one end reaches another machine: shared memory cannot cross */
    atomic_int detached; /* shared: this process's side moved to another process (its ring's
                          * messages are that process's to receive now) */
};

/* A ring shared with another process: the header at the start of the mapping, then ring 0, then
 * ring 1.  Records in a shared ring start with a fragment header, so a message bigger than a
 * record crosses in pieces (the consumer puts them together), and producers keep what does not
 * fit now in their own overflow list, which they (or their flusher thread) write out as the
 * consumer makes room: the consumer never reads the other process's memory. */
#define RP_ARENA_WARM (UINT64_C(4) << 20)
#define RP_XMAGIC UINT64_C(0x31786e6168637072) /* "rpchanx1" */
#define RP_XHDR_SIZE 4096u

typedef struct rp_xhdr {
    uint64_t magic;
    uint64_t capacity;
    alignas(64) atomic_int closed;
    alignas(64) atomic_int spinners; /* threads of both processes spinning on this channel */
    rp_qwords words[2]; /* words[s]: the queue posted by side s */
    /* the arena of each direction (see rp_channel_arena_alloc): where its producer allocates
     * next and its oldest record not reclaimed yet, both written by that producer only */
    alignas(64) _Atomic uint64_t arena_head[2];
    _Atomic uint64_t arena_tail[2];
} rp_xhdr;

/* A shared channel's mapping in this process: the channel holds one reference, and each view
 * of an arena record another, so a received array outlives the channel it came by. */
struct rp_xmap {
    _Atomic long refs;
    long pid; /* the process that mapped it: a child forked since must not free its records */
    void *map;
    size_t len;
    unsigned char *arena[2]; /* arena[s]: the direction posted by side s */
    _Atomic uint64_t touched[2]; /* arena[s]'s bytes this process has mapped in (arena_touch) */
};

static long this_pid(void) {
#if !defined(_WIN32)
    return (long)getpid();
#else
    return 0;
#endif
}

/* An arena record: this header, then its data (64-aligned, so 16 as numpy wants).  size: the
 * record's bytes with the header, written by the producer; state: 1 in use, 0 free (the
 * consumer frees it; the producer frees padding and what it could not send). */
typedef struct rp_arec {
    _Atomic uint32_t state;
    uint32_t reserved;
    uint64_t size;
} rp_arec;

enum { RP_FRAG_WHOLE = 1, RP_FRAG_FIRST = 2, RP_FRAG_MORE = 3 };
typedef struct rp_frag {
    uint32_t kind;
    uint32_t reserved;
    uint64_t total; /* RP_FRAG_FIRST: the whole message's length */
} rp_frag;

/* The longest message body a shared record carries whole (and the longest fragment). */
static size_t frag_room(uint64_t capacity) { return (size_t)(capacity / 4u) - 64u; }

static void *aligned_block(size_t size) {
    size_t rounded = (size + 63u) & ~(size_t)63u;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

static int queue_init(rp_queue *q, uint64_t capacity) {
    rp_lock_init(&q->plock);
    rp_lock_init(&q->clock);
    rp_lock_init(&q->olock);
    atomic_init(&q->ocount, 0u);
    q->ohead = q->otail = NULL;
    q->osent = 0;
    q->partial = NULL;
    q->pfill = 0;
    q->shared = 0;
    q->w = &q->own;
    atomic_init(&q->own.data_seq, 0u);
    atomic_init(&q->own.data_sleepy, 0);
    rp_spin_init(&q->spin);
    atomic_init(&q->own.pending, 0);
    atomic_init(&q->own.space_seq, 0u);
    atomic_init(&q->own.space_sleepy, 0);
    atomic_init(&q->watch[0], NULL);
    atomic_init(&q->watch[1], NULL);
    atomic_init(&q->ring, NULL);
    return rp_ring_size(capacity) ? RP_OK : RP_EINVAL;
}

static void check_peer(rp_channel *ch);

/* Closed, here or (shared) by the other process.  The shared flag is set by a closing process
 * only once everything it posted is in the ring, so the consumer never takes "closed and
 * empty" for the end while messages are still on their way. */
static int chan_closed(rp_channel *ch) {
    return atomic_load_explicit(ch->closed, memory_order_acquire) ||
           atomic_load_explicit(&ch->closing, memory_order_acquire);
}

static void q_wake(rp_queue *q, atomic_uint *word, int n) {
    if (q->shared) rp_addr_wake_shared(word, n);
    else rp_addr_wake(word, n);
}

static int q_sleep(rp_queue *q, atomic_uint *word, unsigned seen, int64_t deadline_ns,
                   int64_t slice_ns, rp_cancel *cancel) {
    if (q->shared) return rp_sleep_on_shared(word, seen, deadline_ns, slice_ns, cancel);
    return rp_sleep_on(word, seen, deadline_ns, slice_ns, cancel);
}

static rp_ring *ring_of(rp_queue *q) { return atomic_load_explicit(&q->ring, memory_order_acquire); }

/* With the producer lock held: the ring, mapped now if need be; NULL if that failed (the
 * message then takes the overflow path, as when the ring is full). */
static rp_ring *producer_ring(rp_queue *q, uint64_t capacity) {
    rp_ring *r = atomic_load_explicit(&q->ring, memory_order_relaxed);
    if (r) return r;
    r = (rp_ring *)ring_map(rp_ring_size(capacity));
    if (!r) return NULL;
    if (rp_ring_init(r, capacity) != RP_OK) {
        ring_unmap(r, rp_ring_size(capacity));
        return NULL;
    }
    atomic_store_explicit(&q->ring, r, memory_order_release);
    return r;
}

/* Drop every queued message, releasing what each one owns.  A shared queue: `consumer` says
 * whether this process receives from it (then its ring is drained; its messages own nothing in
 * this process) or posts to it (then only what waits in this process's overflow list). */
static void queue_drain(rp_queue *q, int consumer) {
    uint32_t len;
    rp_msg *m;
    rp_ring *ring = q->shared && !consumer ? NULL : ring_of(q);
    while (ring && (m = (rp_msg *)rp_ring_peek(ring, &len)) != NULL) {
        if (!q->shared && rp_msg_valid(m, len)) rp_msg_release_handles(m);
        rp_ring_consume(ring);
    }
    if (q->partial) {
        rp_node_free(q->partial);
        q->partial = NULL;
    }
    q->osent = 0;
    rp_lock_acquire(&q->olock, RP_FOREVER, 0, NULL);
    rp_node *n = q->ohead;
    q->ohead = q->otail = NULL;
    atomic_store_explicit(&q->ocount, 0u, memory_order_release);
    rp_lock_release(&q->olock);
    while (n) {
        rp_node *next = n->next;
        if (rp_msg_valid((rp_msg *)n->body, n->len)) rp_msg_release_handles((rp_msg *)n->body);
        rp_node_free(n);
        n = next;
    }
    if (!q->shared) atomic_store_explicit(&q->w->pending, 0, memory_order_release);
}

static void queue_free(rp_queue *q, uint64_t capacity, int consumer) {
    for (int i = 0; i < 2; i++) {
        rp_waitset *ws = atomic_exchange_explicit(&q->watch[i], NULL, memory_order_acq_rel);
        if (ws) rp_waitset_decref(ws);
    }
    queue_drain(q, consumer);
    rp_ring *ring = atomic_exchange_explicit(&q->ring, NULL, memory_order_acq_rel);
    if (ring && !q->shared) {
        rp_ring_destroy(ring);
        ring_unmap(ring, rp_ring_size(capacity));
    }
}

/* ------------------------------------------------------------------ channels */

rp_channel *rp_channel_new(uint64_t capacity, int64_t max_pending) {
    if (rp_ring_size(capacity) == 0 || max_pending < 0) return NULL;
    rp_channel *ch = (rp_channel *)aligned_block(sizeof(rp_channel));
    if (!ch) return NULL;
    atomic_init(&ch->refs[0], 1);
    atomic_init(&ch->refs[1], 1);
    atomic_init(&ch->sides_alive, 2);
    atomic_init(&ch->closed_own, 0);
    atomic_init(&ch->unshared, 0);
    atomic_init(&ch->detached, 0);
    ch->closed = &ch->closed_own;
    ch->capacity = capacity;
    ch->max_pending = max_pending;
    ch->sock = -1;
    ch->memfd = -1;
    rp_lock_init(&ch->fdlock);
    rp_lock_init(&ch->alock);
    ch->xmap = NULL;
    if (queue_init(&ch->q[0], capacity) != RP_OK || queue_init(&ch->q[1], capacity) != RP_OK) {
        queue_free(&ch->q[0], capacity, 1);
        queue_free(&ch->q[1], capacity, 1);
        free(ch);
        return NULL;
    }
    return ch;
}

uint64_t rp_channel_capacity(const rp_channel *ch) { return ch->capacity; }
int64_t rp_channel_max_pending(const rp_channel *ch) { return ch->max_pending; }
int64_t rp_channel_pending_bytes(rp_channel *ch, int side) {
    rp_queue *q = &ch->q[side & 1];
    if (ch->max_pending) return atomic_load_explicit(&q->w->pending, memory_order_acquire);
    /* unbounded queues do not count (it would cost a shared write per message): estimate */
    rp_ring *ring = ring_of(q);
    return (int64_t)(ring ? rp_ring_used(ring) : 0) +
           (atomic_load_explicit(&q->ocount, memory_order_acquire) ? 1 : 0);
}

void rp_channel_incref(rp_channel *ch, int side) {
    atomic_fetch_add_explicit(&ch->refs[side & 1], 1, memory_order_relaxed);
}

/* With the producer lock held (which keeps the sets attached): tell the watching loops. */
static void signal_watchers(rp_queue *q) {
    for (int i = 0; i < 2; i++) {
        rp_waitset *ws = atomic_load_explicit(&q->watch[i], memory_order_acquire);
        if (ws) rp_waitset_signal(ws);
    }
}

static void wake_all(rp_queue *q) {
    atomic_fetch_add_explicit(&q->w->data_seq, 1u, memory_order_seq_cst);
    q_wake(q, &q->w->data_seq, -1);
    atomic_fetch_add_explicit(&q->w->space_seq, 1u, memory_order_seq_cst);
    q_wake(q, &q->w->space_seq, -1);
}

void rp_channel_close(rp_channel *ch) {
    if (chan_closed(ch)) return;
    /* Close under both producer locks: a post either finished before the close, and will be
     * delivered, or sees the channel closed. */
    for (int s = 0; s < 2; s++) rp_lock_acquire(&ch->q[s].plock, RP_FOREVER, 0, NULL);
    if (ch->shared) {
        atomic_store_explicit(&ch->closing, 1, memory_order_release);
        /* what waits in this process's overflow goes first: the flusher closes when done */
        if (!atomic_load_explicit(&ch->flushing, memory_order_acquire))
            atomic_store_explicit(ch->closed, 1, memory_order_release);
    } else {
        atomic_store_explicit(ch->closed, 1, memory_order_release);
    }
    for (int s = 0; s < 2; s++) signal_watchers(&ch->q[s]);
    for (int s = 1; s >= 0; s--) rp_lock_release(&ch->q[s].plock);
    wake_all(&ch->q[0]);
    wake_all(&ch->q[1]);
}

int rp_channel_closed(rp_channel *ch) { return chan_closed(ch); }

void rp_channel_discard(rp_channel *ch, int side) {
    rp_queue *in = &ch->q[1 - (side & 1)];
    rp_lock_acquire(&in->clock, RP_FOREVER, 0, NULL);
    queue_drain(in, 1);
    rp_lock_release(&in->clock);
}

static void shared_stop_threads(rp_channel *ch);

static void channel_free_now(rp_channel *ch);

static void channel_free(rp_channel *ch) {
    if (ch->shared) {
        /* a flusher still writing what this process posted: it frees the struct when done */
        rp_queue *q = &ch->q[ch->local];
        rp_lock_acquire(&q->plock, RP_FOREVER, 0, NULL);
        int later = atomic_load_explicit(&ch->flushing, memory_order_acquire);
        if (later) atomic_store_explicit(&ch->zombie, 1, memory_order_release);
        rp_lock_release(&q->plock);
        if (later) return;
    }
    channel_free_now(ch);
}

static void channel_free_now(rp_channel *ch) {
    if (ch->shared) shared_stop_threads(ch);
    int moved = atomic_load_explicit(&ch->detached, memory_order_acquire);
    queue_free(&ch->q[0], ch->capacity, !ch->shared || (ch->local == 1 && !moved));
    queue_free(&ch->q[1], ch->capacity, !ch->shared || (ch->local == 0 && !moved));
#if !defined(_WIN32)
    if (ch->xmap) rp_xmap_decref(ch->xmap);
    if (ch->sock >= 0) close(ch->sock);
    if (ch->memfd >= 0) close(ch->memfd);
#endif
    free(ch);
}

void rp_channel_decref(rp_channel *ch, int side) {
    side &= 1;
    if (atomic_fetch_sub_explicit(&ch->refs[side], 1, memory_order_acq_rel) != 1) return;
    /* Nobody can receive on this side any more: close, and drop what was queued toward it, which
     * also breaks reference cycles made of ports queued into their own channel. */
    rp_channel_close(ch);
    rp_channel_discard(ch, side);
    if (atomic_fetch_sub_explicit(&ch->sides_alive, 1, memory_order_acq_rel) == 1)
        channel_free(ch);
}

void rp_port_release(void *ch, uint64_t side) { rp_channel_decref((rp_channel *)ch, (int)side); }

/* ------------------------------------------------------------------ sending */

/* Wake whoever said it is asleep on seq (by setting sleepy).  Pairs with the sleeper's store to
 * sleepy and re-check (Dekker): either the sleeper sees our change, or we see the flag and wake
 * it; the first waker takes the flag, so one system call per sleep. */
static void wake_sleepers(rp_queue *q, atomic_int *sleepy, atomic_uint *seq) {
    if (rp_load_after_stores(sleepy) && atomic_exchange_explicit(sleepy, 0, memory_order_seq_cst)) {
        atomic_fetch_add_explicit(seq, 1u, memory_order_seq_cst);
        q_wake(q, seq, -1);
    }
}

/* Data was posted: wake a consumer that sleeps for it. */
static void signal_consumers(rp_queue *q) {
    wake_sleepers(q, &q->w->data_sleepy, &q->w->data_seq);
}

/* Room was made: wake a producer (bounded mode) or flusher (shared) that sleeps for it. */
static void space_made(rp_queue *q) {
    wake_sleepers(q, &q->w->space_sleepy, &q->w->space_seq);
}

static int lock_producer(rp_queue *q, int64_t deadline_ns, int64_t slice_ns, rp_cancel *cancel) {
    if (rp_lock_try(&q->plock)) return RP_OK;
    return rp_lock_acquire(&q->plock, deadline_ns == 0 ? RP_FOREVER : deadline_ns, slice_ns, cancel);
}

/* With the producer lock held: wait (unlocking) until the bounded queue has room for len. */
static int wait_room(rp_channel *ch, rp_queue *q, size_t len, int64_t deadline_ns,
                     int64_t slice_ns, rp_cancel *cancel) {
    for (;;) {
        int64_t p = atomic_load_explicit(&q->w->pending, memory_order_acquire);
        /* one message may always go into an empty queue, however big */
        if (p == 0 || p + (int64_t)len <= ch->max_pending) return RP_OK;
        rp_lock_release(&q->plock);
        if (deadline_ns == 0) return RP_EFULL;
        unsigned seq = atomic_load_explicit(&q->w->space_seq, memory_order_acquire);
        atomic_store_explicit(&q->w->space_sleepy, 1, memory_order_seq_cst);
        int r = RP_OK;
        p = atomic_load_explicit(&q->w->pending, memory_order_seq_cst);
        if (!(p == 0 || p + (int64_t)len <= ch->max_pending) &&
            !chan_closed(ch))
            r = q_sleep(q, &q->w->space_seq, seq, deadline_ns, slice_ns, cancel);
        if (r != RP_OK) return r;
        int l = lock_producer(q, deadline_ns, slice_ns, cancel);
        if (l != RP_OK) return l;
        if (chan_closed(ch)) {
            rp_lock_release(&q->plock);
            return RP_ECLOSED;
        }
    }
}

static void overflow_push(rp_queue *q, rp_node *n) {
    n->next = NULL;
    rp_lock_acquire(&q->olock, RP_FOREVER, 0, NULL);
    if (q->otail) q->otail->next = n;
    else q->ohead = n;
    q->otail = n;
    atomic_fetch_add_explicit(&q->ocount, 1u, memory_order_release);
    rp_lock_release(&q->olock);
}

/* ------------------------------------------------------------------ shared queues: posting */

/* A message body in up to three pieces, sent as one (rp_channel_send_sg). */
typedef struct rp_sg {
    const unsigned char *p[3];
    size_t n[3];
} rp_sg;

/* len bytes of the body from offset off into dst, across the pieces. */
static void sg_copy(unsigned char *dst, const rp_sg *sg, size_t off, size_t len) {
    for (int i = 0; i < 3 && len; i++) {
        if (off >= sg->n[i]) {
            off -= sg->n[i];
            continue;
        }
        size_t k = sg->n[i] - off < len ? sg->n[i] - off : len;
        memcpy(dst, sg->p[i] + off, k);
        dst += k;
        len -= k;
        off = 0;
    }
}

static void *flusher_main(void *arg);
static int peer_gone(rp_channel *ch);

/* Flusher threads running in this process (rp_channel_flush_all waits for them). */
static atomic_int flushers_running;

/* With the producer lock held: write what waits in the overflow list into the shared ring, in
 * fragments where a message is bigger than a record, as far as the ring has room.  Returns
 * whether something is still waiting. */
static int shared_flush(rp_channel *ch, rp_queue *q) {
    rp_ring *ring = ring_of(q);
    size_t room = frag_room(ch->capacity);
    int wrote = 0;
    rp_node *n;
    while ((n = q->ohead) != NULL) {
        size_t left = n->len - q->osent;
        size_t chunk = left < room ? left : room;
        unsigned char *slot = (unsigned char *)rp_ring_reserve(ring, (uint32_t)(chunk + sizeof(rp_frag)));
        if (!slot) break;
        rp_frag f = {q->osent ? RP_FRAG_MORE : chunk == n->len ? RP_FRAG_WHOLE : RP_FRAG_FIRST, 0,
                     (uint64_t)n->len};
        memcpy(slot, &f, sizeof f);
        memcpy(slot + sizeof f, n->body + q->osent, chunk);
        rp_ring_commit(ring);
        wrote = 1;
        q->osent += chunk;
        if (q->osent == n->len) {
            rp_lock_acquire(&q->olock, RP_FOREVER, 0, NULL);
            q->ohead = n->next;
            if (!q->ohead) q->otail = NULL;
            atomic_fetch_sub_explicit(&q->ocount, 1u, memory_order_release);
            rp_lock_release(&q->olock);
            rp_node_free(n);
            q->osent = 0;
        }
    }
    if (wrote) signal_consumers(q);
    return q->ohead != NULL;
}

/* How long a big post to another process waits for room in the ring, while the consumer
 * takes nothing, before what is left goes to the overflow list.  Memory for the overflow list
 * is fresh memory for a burst (page faults: about 1 ms per MiB on a VM, against 0.1 ms to copy
 * into the ring's pages, warm after their first round), so while the consumer is taking
 * messages a big post waits for it, each fragment taken renewing the patience; a consumer that
 * is busy elsewhere (or in this very thread) costs one patience, then posting goes on without
 * waiting (nothing waits while the overflow list holds something). */
#define RP_ROOM_PATIENCE_NS (2 * 1000000)

/* With the producer lock held and the overflow list empty: write a big body into the ring in
 * fragments, waiting for room as above.  Returns the bytes written (len: all of it). */
static size_t shared_write(rp_channel *ch, rp_queue *q, const rp_sg *body, size_t len) {
    rp_ring *ring = ring_of(q);
    size_t room = frag_room(ch->capacity), sent = 0;
    int64_t give_up = 0;
    while (sent < len) {
        size_t left = len - sent;
        size_t chunk = left < room ? left : room;
        uint32_t rec = (uint32_t)(chunk + sizeof(rp_frag));
        unsigned seq = atomic_load_explicit(&q->w->space_seq, memory_order_acquire);
        unsigned char *slot = (unsigned char *)rp_ring_reserve(ring, rec);
        if (!slot) {
            int64_t now = rp_now_ns();
            if (!give_up) give_up = now + RP_ROOM_PATIENCE_NS;
            if (now >= give_up || chan_closed(ch) || atomic_load_explicit(&ch->stop, memory_order_acquire))
                break;
            /* say we sleep, then look again (pairs with space_made's wake_sleepers) */
            atomic_store_explicit(&q->w->space_sleepy, 1, memory_order_seq_cst);
            slot = (unsigned char *)rp_ring_reserve(ring, rec);
            if (!slot) {
                rp_addr_wait_shared(&q->w->space_seq, seq, give_up);
                if (atomic_load_explicit(&q->w->space_seq, memory_order_acquire) != seq)
                    give_up = 0; /* the consumer took something: patience again */
                continue;
            }
        }
        rp_frag f = {sent ? RP_FRAG_MORE : chunk == len ? RP_FRAG_WHOLE : RP_FRAG_FIRST, 0,
                     (uint64_t)len};
        memcpy(slot, &f, sizeof f);
        sg_copy(slot + sizeof f, body, sent, chunk);
        rp_ring_commit(ring);
        sent += chunk;
        signal_consumers(q);
    }
    return sent;
}

/* With the producer lock held: a shared queue's message goes into the ring now if it fits whole
 * and nothing waits before it, else into the overflow list, which a flusher thread writes out
 * as the consumer makes room (posting never waits for the other process). */
static int shared_post(rp_channel *ch, rp_queue *q, const void *body, size_t len, rp_node *node,
                       const rp_sg *pieces) {
    rp_ring *ring = ring_of(q);
    size_t sent = 0;
    rp_sg one = {{node ? (const unsigned char *)node->body : (const unsigned char *)body, NULL, NULL},
                 {len, 0, 0}};
    const rp_sg *src = pieces ? pieces : &one;
    if (atomic_load_explicit(&q->ocount, memory_order_acquire) == 0) {
        if (len <= frag_room(ch->capacity)) {
            unsigned char *slot = (unsigned char *)rp_ring_reserve(ring, (uint32_t)(len + sizeof(rp_frag)));
            if (slot) {
                rp_frag f = {RP_FRAG_WHOLE, 0, (uint64_t)len};
                memcpy(slot, &f, sizeof f);
                sg_copy(slot + sizeof f, src, 0, len);
                rp_ring_commit(ring);
                if (node) rp_node_free(node);
                return RP_OK;
            }
        }
        if (len >= RP_WARM_MIN) {
            sent = shared_write(ch, q, src, len);
            if (sent == len) {
                if (node) rp_node_free(node);
                return RP_OK;
            }
        }
    }
    if (!node) {
        /* what the ring could not take now waits whole in the overflow list (osent: how much of
         * it went already); the pieces are the caller's, so they are copied */
        node = rp_node_alloc(len);
        if (!node) return RP_ENOMEM;
        sg_copy(node->body, src, 0, len);
    }
    overflow_push(q, node);
    if (sent) q->osent = sent; /* (it is the list's head: the list was empty) */
    if (shared_flush(ch, q) && !atomic_load_explicit(&ch->flushing, memory_order_acquire)) {
#if !defined(_WIN32)
        pthread_t t;
        pthread_attr_t a;
        atomic_store_explicit(&ch->flushing, 1, memory_order_release);
        atomic_fetch_add_explicit(&ch->threads, 1, memory_order_acq_rel);
        atomic_fetch_add_explicit(&flushers_running, 1, memory_order_acq_rel);
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &a, flusher_main, ch) != 0) {
            /* what waits goes out with the next post */
            atomic_store_explicit(&ch->flushing, 0, memory_order_release);
            atomic_fetch_sub_explicit(&ch->threads, 1, memory_order_acq_rel);
            atomic_fetch_sub_explicit(&flushers_running, 1, memory_order_acq_rel);
        }
        pthread_attr_destroy(&a);
#endif
    }
    return RP_OK;
}

static void channel_free_now(rp_channel *ch);

/* With the producer lock held: the flusher is done (or gives up).  A close that waited for it
 * reaches the other process now. */
static void flusher_done(rp_channel *ch) {
    atomic_store_explicit(&ch->flushing, 0, memory_order_release);
    if (atomic_load_explicit(&ch->closing, memory_order_acquire) &&
        !atomic_load_explicit(ch->closed, memory_order_acquire)) {
        atomic_store_explicit(ch->closed, 1, memory_order_release);
        wake_all(&ch->q[0]);
        wake_all(&ch->q[1]);
    }
}

/* A flusher: writes the overflow list out while the consumer makes room, then leaves. */
static void *flusher_main(void *arg) {
    rp_channel *ch = (rp_channel *)arg;
    rp_queue *q = &ch->q[ch->local];
    for (;;) {
        unsigned seq = atomic_load_explicit(&q->w->space_seq, memory_order_acquire);
        atomic_store_explicit(&q->w->space_sleepy, 1, memory_order_seq_cst);
        rp_lock_acquire(&q->plock, RP_FOREVER, 0, NULL);
        int more = !atomic_load_explicit(&ch->stop, memory_order_acquire) && shared_flush(ch, q);
        if (!more) flusher_done(ch);
        rp_lock_release(&q->plock);
        if (!more) break;
        /* the consumer wakes space_seq after it consumed; the slice is a backstop, and the
         * moment to see whether a consumer is left at all (if not, what waits is dropped with
         * the channel) */
        if (rp_addr_wait_shared(&q->w->space_seq, seq, rp_now_ns() + 50 * 1000000) ==
                RP_ETIMEDOUT &&
            peer_gone(ch)) {
            rp_lock_acquire(&q->plock, RP_FOREVER, 0, NULL);
            flusher_done(ch);
            rp_lock_release(&q->plock);
            break;
        }
    }
    int zombie = atomic_load_explicit(&ch->zombie, memory_order_acquire);
    atomic_fetch_sub_explicit(&ch->threads, 1, memory_order_acq_rel);
    atomic_fetch_sub_explicit(&flushers_running, 1, memory_order_acq_rel);
    if (zombie) channel_free_now(ch); /* (flushing is 0: nobody else frees it) */
    return NULL;
}

int rp_channel_flush_all(int64_t deadline_ns) {
    while (atomic_load_explicit(&flushers_running, memory_order_acquire) > 0) {
        if (rp_now_ns() >= deadline_ns) return RP_ETIMEDOUT;
#if !defined(_WIN32)
        usleep(1000);
#endif
    }
    return RP_OK;
}

static int send_xfds(rp_channel *ch, const rp_xfd *x, int nx);

static int send_common(rp_channel *ch, int side, const void *body, size_t len, rp_node *node,
                       const rp_sg *pieces, const rp_xfd *xfds, int nx, int64_t deadline_ns,
                       int64_t slice_ns, rp_cancel *cancel) {
    rp_queue *q = &ch->q[side & 1];
    if (nx && !ch->shared) return RP_EINVAL;
    if ((len > UINT32_MAX || (pieces && !ch->shared)) && !node) {
        /* too long for a record's length, or pieces where only a shared queue writes them as
         * they are: the body is put together in a node first */
        node = rp_node_alloc(len);
        if (!node) return RP_ENOMEM;
        if (pieces)
            sg_copy(node->body, pieces, 0, len);
        else
            memcpy(node->body, body, len);
        int r = send_common(ch, side, NULL, len, node, NULL, xfds, nx, deadline_ns, slice_ns,
                            cancel);
        if (r != RP_OK) rp_node_free(node);
        return r;
    }
    int r = lock_producer(q, deadline_ns, slice_ns, cancel);
    if (r != RP_OK) return r;
    if (chan_closed(ch)) {
        rp_lock_release(&q->plock);
        return RP_ECLOSED;
    }
    if (ch->max_pending) {
        r = wait_room(ch, q, len, deadline_ns, slice_ns, cancel);
        if (r != RP_OK) return r; /* the lock was released */
    }
    if (ch->shared) {
        /* the descriptors go first, under the producer lock: they reach the other process in
         * the order of the messages, before the message that names them */
        r = nx ? send_xfds(ch, xfds, nx) : RP_OK;
        if (r == RP_OK) r = shared_post(ch, q, body, len, node, pieces);
        if (r == RP_OK && ch->max_pending)
            atomic_fetch_add_explicit(&q->w->pending, (int64_t)len, memory_order_acq_rel);
        rp_lock_release(&q->plock);
        signal_consumers(q);
        return r;
    }
    void *slot = NULL;
    rp_ring *ring = NULL;
    /* the ring only while nothing waits in the overflow list: that keeps the order; a message
     * too big for any record of the ring does not make it map one */
    if (atomic_load_explicit(&q->ocount, memory_order_acquire) == 0 && len <= UINT32_MAX &&
        (uint64_t)len <= ch->capacity / 4u && (ring = producer_ring(q, ch->capacity)) != NULL)
        slot = rp_ring_reserve(ring, (uint32_t)len);
    if (slot) {
        memcpy(slot, node ? (const void *)node->body : body, len);
        rp_ring_commit(ring);
        if (node) rp_node_free(node);
    } else {
        if (!node) {
            node = rp_node_alloc(len);
            if (!node) {
                rp_lock_release(&q->plock);
                return RP_ENOMEM;
            }
            memcpy(node->body, body, len);
        }
        overflow_push(q, node);
    }
    if (ch->max_pending) atomic_fetch_add_explicit(&q->w->pending, (int64_t)len, memory_order_acq_rel);
    signal_watchers(q);
    rp_lock_release(&q->plock);
    signal_consumers(q);
    return RP_OK;
}

int rp_channel_send(rp_channel *ch, int side, const void *body, size_t len, int64_t deadline_ns,
                    int64_t slice_ns, rp_cancel *cancel) {
    return send_common(ch, side, body, len, NULL, NULL, NULL, 0, deadline_ns, slice_ns, cancel);
}

int rp_channel_send_node(rp_channel *ch, int side, rp_node *node, int64_t deadline_ns,
                         int64_t slice_ns, rp_cancel *cancel) {
    return send_common(ch, side, NULL, node->len, node, NULL, NULL, 0, deadline_ns, slice_ns,
                       cancel);
}

int rp_channel_send_x(rp_channel *ch, int side, const void *body, size_t len, rp_node *node,
                      const rp_xfd *xfds, int nx, int64_t deadline_ns, int64_t slice_ns,
                      rp_cancel *cancel) {
    if (node) len = node->len;
    return send_common(ch, side, body, len, node, NULL, xfds, nx, deadline_ns, slice_ns, cancel);
}

int rp_channel_send_sg(rp_channel *ch, int side, const void *head, size_t head_len,
                       const void *data, size_t data_len, const void *tail, size_t tail_len,
                       const rp_xfd *xfds, int nx, int64_t deadline_ns, int64_t slice_ns,
                       rp_cancel *cancel) {
    rp_sg sg = {{(const unsigned char *)head, (const unsigned char *)data,
                 (const unsigned char *)tail}, {head_len, data_len, tail_len}};
    if (data_len > SIZE_MAX - head_len || tail_len > SIZE_MAX - head_len - data_len)
        return RP_EINVAL;
    return send_common(ch, side, NULL, head_len + data_len + tail_len, NULL, &sg, xfds, nx,
                       deadline_ns, slice_ns, cancel);
}

/* A batch: n bodies under one producer lock, published with one cursor store (for a ring in
 * memory) and one wake-up.  Bounded queues publish what is reserved before waiting for room. */
int rp_channel_send_batch(rp_channel *ch, int side, const unsigned char *bodies,
                          const size_t *lens, size_t n, size_t *sent, int64_t deadline_ns,
                          int64_t slice_ns, rp_cancel *cancel) {
    rp_queue *q = &ch->q[side & 1];
    rp_ring *ring = NULL;
    size_t i = 0, off = 0;
    int reserved = 0, r;
    *sent = 0;
    if (n == 0) return RP_OK;
    r = lock_producer(q, deadline_ns, slice_ns, cancel);
    if (r != RP_OK) return r;
    if (chan_closed(ch)) {
        rp_lock_release(&q->plock);
        return RP_ECLOSED;
    }
    for (; i < n; off += rp_align8(lens[i]), i++) {
        size_t len = lens[i];
        const unsigned char *body = bodies + off;
        if (ch->max_pending) {
            int64_t p = atomic_load_explicit(&q->w->pending, memory_order_acquire);
            if (!(p == 0 || p + (int64_t)len <= ch->max_pending)) {
                /* no room: publish what is reserved, then wait (unlocked) */
                if (reserved) rp_ring_commit(ring);
                reserved = 0;
                if (i > *sent) {
                    signal_watchers(q);
                    signal_consumers(q);
                    *sent = i;
                }
                r = wait_room(ch, q, len, deadline_ns, slice_ns, cancel);
                if (r != RP_OK) return r; /* the lock was released */
            }
        }
        if (ch->shared) {
            /* (a shared ring publishes each record: fragments and the flusher assume it) */
            r = shared_post(ch, q, body, len, NULL, NULL);
            if (r != RP_OK) break;
        } else {
            void *slot = NULL;
            if (atomic_load_explicit(&q->ocount, memory_order_acquire) == 0 &&
                (uint64_t)len <= ch->capacity / 4u &&
                (ring || (ring = producer_ring(q, ch->capacity)) != NULL))
                slot = reserved ? rp_ring_reserve_more(ring, (uint32_t)len)
                                : rp_ring_reserve(ring, (uint32_t)len);
            if (slot) {
                memcpy(slot, body, len);
                reserved = 1;
            } else {
                rp_node *node = rp_node_alloc(len);
                if (!node) {
                    r = RP_ENOMEM;
                    break;
                }
                memcpy(node->body, body, len);
                /* what the ring holds goes first: publish it before the overflow list grows */
                if (reserved) rp_ring_commit(ring);
                reserved = 0;
                overflow_push(q, node);
            }
        }
        if (ch->max_pending)
            atomic_fetch_add_explicit(&q->w->pending, (int64_t)len, memory_order_acq_rel);
    }
    if (reserved) rp_ring_commit(ring);
    int posted = i > *sent;
    if (posted) signal_watchers(q);
    rp_lock_release(&q->plock);
    if (posted) signal_consumers(q);
    *sent = i;
    return i == n ? RP_OK : r;
}

/* ------------------------------------------------------------------ receiving */

static int queue_readable(void *arg) {
    rp_queue *q = (rp_queue *)arg;
    rp_ring *ring = ring_of(q);
    return (ring && rp_ring_readable(ring)) || atomic_load_explicit(&q->ocount, memory_order_acquire);
}

/* take() for a shared queue: a whole record is returned in place; fragments are put together in
 * q->partial until the last one is there.  The other process wrote these bytes: a record that
 * does not make sense is skipped, never followed. */
static int take_shared(rp_queue *q, rp_recv *out) {
    rp_ring *ring = ring_of(q);
    uint32_t len;
    const unsigned char *p;
    while ((p = (const unsigned char *)rp_ring_peek(ring, &len)) != NULL) {
        rp_frag f;
        if (len < sizeof f) {
            rp_ring_consume(ring);
            space_made(q);
            continue;
        }
        memcpy(&f, p, sizeof f);
        const unsigned char *body = p + sizeof f;
        size_t blen = len - sizeof f;
        if (!q->partial && f.kind == RP_FRAG_WHOLE) {
            out->msg = (rp_msg *)(void *)body;
            out->len = blen;
            out->node = NULL;
            out->remote = 1;
            return 1; /* consumed by rp_channel_recv_end */
        }
        if (!q->partial && f.kind == RP_FRAG_FIRST && q->pfill == 0 && f.total > blen &&
            f.total <= (uint64_t)(SIZE_MAX / 2)) {
            q->partial = rp_node_alloc((size_t)f.total);
            if (q->partial) memcpy(q->partial->body, body, blen);
            q->pfill = q->partial ? blen : (size_t)f.total - blen; /* no memory: skip it */
        } else if (f.kind == RP_FRAG_MORE && q->pfill) {
            if (!q->partial) { /* skipping a message we had no memory for */
                q->pfill = blen < q->pfill ? q->pfill - blen : 0;
            } else if (blen <= q->partial->len - q->pfill) {
                memcpy(q->partial->body + q->pfill, body, blen);
                q->pfill += blen;
            }
        }
        rp_ring_consume(ring);
        space_made(q);
        if (q->partial && q->pfill == q->partial->len) {
            out->msg = (rp_msg *)(void *)q->partial->body;
            out->len = q->partial->len;
            out->node = q->partial;
            out->remote = 1;
            q->partial = NULL;
            q->pfill = 0;
            return 1;
        }
    }
    return 0;
}

/* With the consumer lock held: take the oldest message, if any.  more: within a batch, after
 * ring records peeked and not consumed yet (out->room_owed). */
static int take_from(rp_queue *q, rp_recv *out, int more) {
    uint32_t len;
    if (q->shared) return take_shared(q, out);
    out->remote = 0;
    rp_ring *ring = ring_of(q);
    void *p = ring ? (void *)(more && out->room_owed ? rp_ring_peek_more(ring, &len)
                                                     : rp_ring_peek(ring, &len))
                   : NULL;
    if (p) {
        out->msg = (rp_msg *)p;
        out->len = len;
        out->node = NULL;
        return 1;
    }
    if (atomic_load_explicit(&q->ocount, memory_order_acquire) == 0) return 0;
    rp_lock_acquire(&q->olock, RP_FOREVER, 0, NULL);
    rp_node *n = q->ohead;
    if (n) {
        q->ohead = n->next;
        if (!q->ohead) q->otail = NULL;
        atomic_fetch_sub_explicit(&q->ocount, 1u, memory_order_release);
    }
    rp_lock_release(&q->olock);
    if (!n) return 0;
    out->msg = (rp_msg *)n->body;
    out->len = n->len;
    out->node = n;
    return 1;
}

static int take(rp_queue *q, rp_recv *out) {
    out->room_owed = 0;
    out->done_bytes = 0;
    return take_from(q, out, 0);
}

/* Try once: lock the consumer side and take a message.  RP_OK (lock held), RP_EAGAIN, or an
 * error from waiting for the lock. */
static int try_take(rp_queue *q, rp_recv *out, int64_t deadline_ns, int64_t slice_ns,
                    rp_cancel *cancel) {
    if (!rp_lock_try(&q->clock)) {
        /* another consumer is decoding: it holds the lock only briefly */
        int r = rp_lock_acquire(&q->clock, deadline_ns == 0 ? RP_FOREVER : deadline_ns, slice_ns,
                                cancel);
        if (r != RP_OK) return r;
    }
    if (take(q, out)) return RP_OK;
    rp_lock_release(&q->clock);
    return RP_EAGAIN;
}

int rp_channel_poll(rp_channel *ch, int side) {
    rp_queue *q = &ch->q[1 - (side & 1)];
    return queue_readable(q) || chan_closed(ch);
}

int rp_channel_recv_begin(rp_channel *ch, int side, rp_recv *out, int64_t deadline_ns,
                          int64_t slice_ns, rp_cancel *cancel) {
    rp_queue *q = &ch->q[1 - (side & 1)];
    int r = try_take(q, out, deadline_ns, slice_ns, cancel);
    if (r != RP_EAGAIN) return r;
    if (deadline_ns == 0 || chan_closed(ch)) {
        /* closed: everything posted before the close is visible now; re-check once */
        if (!chan_closed(ch)) return RP_EAGAIN;
        r = try_take(q, out, 0, slice_ns, cancel);
        return r == RP_EAGAIN ? RP_ECLOSED : r;
    }
    int64_t start = rp_now_ns();
    if (rp_cancel_fired(cancel)) return RP_ECANCELED;
    if (rp_spin_until_shared(&q->spin, queue_readable, q, ch->spinners)) {
        r = try_take(q, out, deadline_ns, slice_ns, cancel);
        if (r != RP_EAGAIN) {
            if (r == RP_OK) rp_spin_feedback(&q->spin, 1, 0);
            return r;
        }
    }
    for (;;) {
        unsigned seq = atomic_load_explicit(&q->w->data_seq, memory_order_acquire);
        atomic_store_explicit(&q->w->data_sleepy, 1, memory_order_seq_cst);
        int w = RP_OK;
        if (!queue_readable(q) && !chan_closed(ch))
            w = q_sleep(q, &q->w->data_seq, seq, deadline_ns, slice_ns, cancel);
        r = try_take(q, out, deadline_ns, slice_ns, cancel);
        if (r == RP_OK) {
            rp_spin_feedback(&q->spin, 0, rp_now_ns() - start);
            return RP_OK;
        }
        if (r != RP_EAGAIN) return r;
        if (chan_closed(ch)) {
            r = try_take(q, out, 0, slice_ns, cancel);
            return r == RP_EAGAIN ? RP_ECLOSED : r;
        }
        if (w != RP_OK) {
            if (ch->shared) check_peer(ch);
            if (w == RP_ETIMEDOUT) rp_spin_feedback(&q->spin, 0, rp_now_ns() - start);
            return w; /* RP_ETIMEDOUT, RP_EINTR (slice end or signal), RP_ECANCELED */
        }
    }
}

int rp_channel_try_recv(rp_channel *ch, int side, rp_recv *out) {
    rp_queue *q = &ch->q[1 - (side & 1)];
    if (!queue_readable(q)) {
        if (!chan_closed(ch)) return RP_EAGAIN;
    }
    if (!rp_lock_try(&q->clock)) return RP_EAGAIN;
    if (take(q, out)) return RP_OK;
    rp_lock_release(&q->clock);
    return chan_closed(ch) && !queue_readable(q)
               ? RP_ECLOSED
               : RP_EAGAIN;
}

/* Finish r's message: release the handles the caller did not adopt; its room is given back now
 * (a node) or owed until the batch ends (a ring record). */
static void recv_done(rp_queue *q, rp_recv *r) {
    if (!q->shared && rp_msg_valid(r->msg, r->len)) rp_msg_release_handles(r->msg);
    r->done_bytes += r->len;
    if (r->node) {
        rp_node_free(r->node);
    } else if (q->shared) {
        rp_ring_consume(ring_of(q)); /* take_shared reads from the published head */
        r->room_owed = 1;
    } else {
        r->room_owed = 1;
    }
    r->msg = NULL;
    r->node = NULL;
}

/* End a receive or a batch: give the ring room back (one cursor store), unlock, wake producers. */
static void recv_close(rp_channel *ch, rp_queue *q, rp_recv *r) {
    if (r->room_owed) {
        if (!q->shared) rp_ring_consume(ring_of(q));
        else space_made(q);
    }
    rp_lock_release(&q->clock);
    if (ch->max_pending) {
        atomic_fetch_sub_explicit(&q->w->pending, (int64_t)r->done_bytes, memory_order_seq_cst);
        space_made(q);
    }
    r->room_owed = 0;
    r->done_bytes = 0;
}

void rp_channel_recv_end(rp_channel *ch, int side, rp_recv *r) {
    rp_queue *q = &ch->q[1 - (side & 1)];
    /* a shared message's handles are the other process's: never released from here */
    recv_done(q, r);
    recv_close(ch, q, r);
}

int rp_channel_recv_next(rp_channel *ch, int side, rp_recv *r) {
    rp_queue *q = &ch->q[1 - (side & 1)];
    recv_done(q, r);
    if (take_from(q, r, 1)) return 1;
    recv_close(ch, q, r);
    return 0;
}

/* ------------------------------------------------------------------ wait sets (rp_waitset.h) */

void rp_channel_signal(rp_channel *ch, int side) {
    rp_queue *q = &ch->q[1 - (side & 1)];
    rp_lock_acquire(&q->plock, RP_FOREVER, 0, NULL); /* keeps the sets attached */
    signal_watchers(q);
    rp_lock_release(&q->plock);
}

static void *watcher_main(void *arg);

void rp_channel_watch(rp_channel *ch, int side, int slot, rp_waitset *ws) {
    rp_queue *q = &ch->q[1 - (side & 1)];
    if (ws && q->shared && !atomic_exchange_explicit(&ch->watching, 1, memory_order_acq_rel)) {
#if !defined(_WIN32)
        pthread_t t;
        pthread_attr_t a;
        atomic_fetch_add_explicit(&ch->threads, 1, memory_order_acq_rel);
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &a, watcher_main, ch) != 0) {
            atomic_store_explicit(&ch->watching, 0, memory_order_release);
            atomic_fetch_sub_explicit(&ch->threads, 1, memory_order_acq_rel);
        }
        pthread_attr_destroy(&a);
#endif
    }
    if (ws) rp_waitset_incref(ws);
    rp_lock_acquire(&q->plock, RP_FOREVER, 0, NULL);
    rp_waitset *old = atomic_exchange_explicit(&q->watch[slot & 1], ws, memory_order_acq_rel);
    rp_lock_release(&q->plock);
    if (old) rp_waitset_decref(old);
    if (ws) rp_waitset_signal(ws);
}

/* ------------------------------------------------------------------ shared with a process
 *
 * A producer in the other process cannot signal this process's wait sets, so a channel whose
 * loop watches a shared queue gets a watcher thread: it sleeps on the queue's data word (as a
 * blocked receiver would) and signals the local sets whenever the producer cursor moved or the
 * channel closed. */

/* A shared channel whose other process is gone (every holder of the other end of its socket
 * closed it: it ended, was killed, crashed) closes, as if that side had closed: what it posted
 * before is still delivered.  Looked at when a wait's slice ends and by the watcher thread. */
static int peer_gone(rp_channel *ch) {
#if defined(__linux__)
    if (!ch->shared || ch->sock < 0) return 0;
    struct pollfd p = {ch->sock, POLLRDHUP, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL));
#else
    (void)ch;
    return 0;
#endif
}

static void check_peer(rp_channel *ch) {
    if (!chan_closed(ch) && peer_gone(ch))
        rp_channel_close(ch);
}

static void *watcher_main(void *arg) {
    rp_channel *ch = (rp_channel *)arg;
    rp_queue *q = &ch->q[1 - ch->local];
    rp_ring *ring = ring_of(q);
    uint64_t last = UINT64_MAX;
    int was_closed = -1;
    while (!atomic_load_explicit(&ch->stop, memory_order_acquire)) {
        unsigned seq = atomic_load_explicit(&q->w->data_seq, memory_order_acquire);
        atomic_store_explicit(&q->w->data_sleepy, 1, memory_order_seq_cst);
        uint64_t t = rp_ring_produced(ring);
        int cl = chan_closed(ch);
        if (t != last || cl != was_closed) {
            last = t;
            was_closed = cl;
            rp_lock_acquire(&q->plock, RP_FOREVER, 0, NULL);
            signal_watchers(q);
            rp_lock_release(&q->plock);
            continue;
        }
        if (rp_addr_wait_shared(&q->w->data_seq, seq, rp_now_ns() + 100 * 1000000) == RP_ETIMEDOUT)
            check_peer(ch);
    }
    atomic_fetch_sub_explicit(&ch->threads, 1, memory_order_acq_rel);
    return NULL;
}

static void shared_stop_threads(rp_channel *ch) {
    atomic_store_explicit(&ch->stop, 1, memory_order_seq_cst);
    while (atomic_load_explicit(&ch->threads, memory_order_acquire) > 0) {
        for (int s = 0; s < 2; s++) {
            atomic_fetch_add_explicit(&ch->q[s].w->data_seq, 1u, memory_order_seq_cst);
            rp_addr_wake_shared(&ch->q[s].w->data_seq, -1);
            atomic_fetch_add_explicit(&ch->q[s].w->space_seq, 1u, memory_order_seq_cst);
            rp_addr_wake_shared(&ch->q[s].w->space_seq, -1);
        }
#if !defined(_WIN32)
        usleep(200);
#endif
    }
}

/* process-shared waits need the futex (the portable waits are per process) */
#if defined(__linux__) && !defined(RP_PORTABLE_WAIT)
static size_t page_round(size_t n) { return (n + 4095u) & ~(size_t)4095u; }

static size_t shared_map_len(uint64_t capacity) {
    return RP_XHDR_SIZE + 2 * page_round(rp_ring_size(capacity)) + 2 * (size_t)RP_ARENA_SIZE;
}

static rp_channel *shared_channel(void *map, size_t len, uint64_t capacity, int64_t max_pending,
                                  int local) {
    rp_xhdr *h = (rp_xhdr *)map;
    rp_xmap *xm = (rp_xmap *)malloc(sizeof *xm);
    if (!xm) return NULL;
    rp_channel *ch = rp_channel_new(capacity, max_pending);
    if (!ch) {
        free(xm);
        return NULL;
    }
    atomic_init(&xm->refs, 1);
    xm->pid = this_pid();
    atomic_init(&xm->touched[0], 0);
    atomic_init(&xm->touched[1], 0);
    xm->map = map;
    xm->len = len;
    for (int s = 0; s < 2; s++)
        xm->arena[s] = (unsigned char *)map + len - (size_t)(2 - s) * (size_t)RP_ARENA_SIZE;
    ch->xmap = xm;
    ch->shared = 1;
    ch->local = local & 1;
    ch->closed = &h->closed;
    ch->spinners = &h->spinners;
    atomic_store_explicit(&ch->sides_alive, 1, memory_order_relaxed); /* the other is elsewhere */
    for (int s = 0; s < 2; s++) {
        ch->q[s].shared = 1;
        ch->q[s].w = &h->words[s];
        atomic_store_explicit(&ch->q[s].ring,
                              (rp_ring *)((char *)map + RP_XHDR_SIZE +
                                          (size_t)s * page_round(rp_ring_size(capacity))),
                              memory_order_release);
    }
    return ch;
}

rp_channel *rp_channel_new_shared(uint64_t capacity, int64_t max_pending, int *fd_out,
                                  int *sock_out) {
    if (rp_ring_size(capacity) == 0 || max_pending < 0) return NULL;
    size_t len = shared_map_len(capacity);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return NULL;
    /* sealed at its size: the other process cannot shrink the file under this one's mapping
     * (which would make reading it a SIGBUS) */
    int fd = memfd_create("ringport-channel", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    void *map = MAP_FAILED;
    if (fd >= 0 && ftruncate(fd, (off_t)len) == 0 &&
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0)
        map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        if (fd >= 0) close(fd);
        close(sv[0]);
        close(sv[1]);
        return NULL;
    }
    rp_xhdr *h = (rp_xhdr *)map; /* the file's pages are zeros: the words start at 0 */
    h->magic = RP_XMAGIC;
    h->capacity = capacity;
    for (int s = 0; s < 2; s++)
        rp_ring_init((char *)map + RP_XHDR_SIZE + (size_t)s * page_round(rp_ring_size(capacity)),
                     capacity);
    rp_channel *ch = shared_channel(map, len, capacity, max_pending, 0);
    if (!ch) {
        munmap(map, len);
        close(fd);
        close(sv[0]);
        close(sv[1]);
        return NULL;
    }
    ch->memfd = fd;
    ch->sock = sv[0];
    *fd_out = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (*fd_out < 0) {
        close(sv[1]);
        rp_channel_detach(ch, 0);
        return NULL;
    }
    *sock_out = sv[1];
    return ch;
}

rp_channel *rp_channel_attach_shared(int fd, int sock, uint64_t capacity, int64_t max_pending,
                                     int side) {
    struct stat st;
    if (rp_ring_size(capacity) == 0 || max_pending < 0) return NULL;
    size_t len = shared_map_len(capacity);
    if (fstat(fd, &st) != 0 || st.st_size < 0 || (size_t)st.st_size != len) return NULL;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) return NULL;
    void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return NULL;
    rp_xhdr *h = (rp_xhdr *)map;
    rp_channel *ch = NULL;
    if (h->magic == RP_XMAGIC && h->capacity == capacity)
        ch = shared_channel(map, len, capacity, max_pending, side);
    if (!ch) {
        munmap(map, len);
        return NULL;
    }
    ch->memfd = fd;
    ch->sock = sock;
    return ch;
}
#else
rp_channel *rp_channel_new_shared(uint64_t capacity, int64_t max_pending, int *fd_out,
                                  int *sock_out) {
    (void)capacity, (void)max_pending, (void)fd_out, (void)sock_out;
    return NULL;
}
rp_channel *rp_channel_attach_shared(int fd, int sock, uint64_t capacity, int64_t max_pending,
                                     int side) {
    (void)fd, (void)sock, (void)capacity, (void)max_pending, (void)side;
    return NULL;
}
#endif

int rp_channel_shared(const rp_channel *ch) { return ch->shared; }
void rp_channel_set_unshared(rp_channel *ch) { atomic_store(&ch->unshared, 1); }
int rp_channel_unshared(rp_channel *ch) {
    return atomic_load_explicit(&ch->unshared, memory_order_relaxed);
}
int rp_channel_local_side(const rp_channel *ch) { return ch->shared ? ch->local : -1; }

/* ------------------------------------------------------------------ arenas (see rp_channel.h) */

rp_xmap *rp_channel_arena_xmap(rp_channel *ch) { return ch->xmap; }

void rp_xmap_incref(rp_xmap *m) { atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed); }

void rp_xmap_decref(rp_xmap *m) {
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
#if !defined(_WIN32)
    munmap(m->map, m->len);
#endif
    free(m);
}

/* Does [off, off + n) lie in an arena, with off the data of a record (after its header)? */
static int arena_span_ok(uint64_t off, uint64_t n) {
    return off >= RP_ARENA_HDR && off % 64u == 0 && off < RP_ARENA_SIZE &&
           n <= RP_ARENA_SIZE - off;
}

/* Map in arena pages up to end ahead of use, a MiB at a time, with one system call rather
 * than a page fault per page (the first pass over an arena's pages costs about as much as the
 * copies themselves on a VM, fault by fault).  What another thread is mapping in, or a kernel
 * without MADV_POPULATE_WRITE, leaves the pages to fault in as usual. */
static void arena_touch(rp_xmap *m, int side, uint64_t end) {
    uint64_t from = atomic_load_explicit(&m->touched[side], memory_order_relaxed);
    if (end <= from) return;
    uint64_t to = (end + (UINT64_C(1) << 20) - 1u) & ~((UINT64_C(1) << 20) - 1u);
    if (to > RP_ARENA_SIZE) to = RP_ARENA_SIZE;
    if (!atomic_compare_exchange_strong_explicit(&m->touched[side], &from, to,
                                                 memory_order_relaxed, memory_order_relaxed))
        return;
#if defined(MADV_POPULATE_WRITE)
    from &= ~(uint64_t)4095u;
    (void)madvise(m->arena[side] + from, (size_t)(to - from), MADV_POPULATE_WRITE);
#endif
}

void *rp_xmap_view(rp_xmap *m, int side, uint64_t off, uint64_t n) {
    side &= 1;
    if (!arena_span_ok(off, n)) return NULL;
    return m->arena[side] + off;
}

void rp_xmap_free(rp_xmap *m, int side, uint64_t off) {
    /* (a forked child's copies of the parent's arrays free nothing: the parent still views
     * them, and frees each record once itself) */
    if (!arena_span_ok(off, 0) || this_pid() != m->pid) return;
    rp_arec *r = (rp_arec *)(void *)(m->arena[side & 1] + off - RP_ARENA_HDR);
    /* the consumer's reads of the data come before the producer's next writes there */
    atomic_store_explicit(&r->state, 0u, memory_order_release);
}

int64_t rp_channel_arena_alloc(rp_channel *ch, int side, uint64_t n, void **data) {
    side &= 1;
    if (!ch->xmap || side != ch->local || ch->max_pending || n == 0 ||
        n > RP_ARENA_SIZE / 2 || chan_closed(ch) || this_pid() != ch->xmap->pid)
        return -1;
    const uint64_t A = RP_ARENA_SIZE;
    uint64_t total = (RP_ARENA_HDR + n + 63u) & ~(uint64_t)63u;
    rp_xhdr *h = (rp_xhdr *)ch->xmap->map;
    unsigned char *base = ch->xmap->arena[side];
    int64_t out = -1;
    rp_lock_acquire(&ch->alock, RP_FOREVER, 0, NULL);
    uint64_t head = atomic_load_explicit(&h->arena_head[side], memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&h->arena_tail[side], memory_order_relaxed);
    /* (the other process can write these words and the records' headers: whatever is out of
     * shape leaves the arena unused, and big data takes the fragment path) */
    if (head % 64u || tail % 64u || head < tail || head - tail > A) goto done;
    /* reclaim the oldest records that are free again */
    while (tail != head) {
        uint64_t o = tail % A;
        rp_arec *r = (rp_arec *)(void *)(base + o);
        if (atomic_load_explicit(&r->state, memory_order_acquire) != 0u) break;
        uint64_t sz = r->size;
        if (sz < RP_ARENA_HDR || sz % 64u || sz > A - o || sz > head - tail) goto done;
        tail += sz;
    }
    if (tail == head) head = tail = 0; /* empty: start over where memory is warm */
    uint64_t o = head % A;
    /* past the first RP_ARENA_WARM bytes, go back to the start when it is free: a stream whose
     * receiver keeps up then reuses the same few MiB (pages already mapped in and in cache)
     * and maps in more only while its receiver lags */
    int wrap = o + total > A ||
               (o != 0 && o + total > RP_ARENA_WARM && head - tail + (A - o) + total <= A);
    if (wrap) { /* pad to the end, go on at the start */
        uint64_t pad = A - o;
        if (head - tail + pad + total > A) goto done;
        rp_arec *p = (rp_arec *)(void *)(base + o);
        p->size = pad;
        atomic_store_explicit(&p->state, 0u, memory_order_relaxed);
        head += pad;
        o = 0;
    }
    if (head - tail + total > A) goto done;
    arena_touch(ch->xmap, side, o + total);
    rp_arec *r = (rp_arec *)(void *)(base + o);
    r->size = total;
    atomic_store_explicit(&r->state, 1u, memory_order_relaxed);
    head += total;
    *data = base + o + RP_ARENA_HDR;
    out = (int64_t)(o + RP_ARENA_HDR);
done:
    atomic_store_explicit(&h->arena_head[side], head, memory_order_relaxed);
    atomic_store_explicit(&h->arena_tail[side], tail, memory_order_relaxed);
    rp_lock_release(&ch->alock);
    return out;
}

/* ------------------------------------------------------------------ descriptors across processes
 *
 * What a message to another process holds that is not bytes (a SharedArrayBuffer's memfd, a
 * transferred port's memfd and socket) crosses over the channel's Unix socket (SOCK_SEQPACKET,
 * SCM_RIGHTS), one socket message per handle, named by a ticket that the ring message's handle
 * carries.  They are sent under the producer lock before the message itself, so they arrive in
 * the order of the messages: a receiver looking for a ticket drops what comes before it (the
 * descriptors of messages that were discarded unread, or whose send failed). */

uint64_t rp_channel_new_ticket(void) {
    static _Atomic uint64_t counter;
#if !defined(_WIN32)
    uint64_t pid = (uint64_t)getpid();
#else
    uint64_t pid = 0;
#endif
    return (pid << 40) ^ (atomic_fetch_add_explicit(&counter, 1u, memory_order_relaxed) + 1u);
}

#if defined(__linux__) && !defined(RP_PORTABLE_WAIT)
static int send_xfds(rp_channel *ch, const rp_xfd *x, int nx) {
    for (int i = 0; i < nx; i++) {
        if (x[i].nfds < 0 || x[i].nfds > RP_XFD_MAX || x[i].len > RP_XFD_META) return RP_EINVAL;
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int) * RP_XFD_MAX)];
        } u;
        memset(&u, 0, sizeof u);
        struct iovec iov = {(void *)x[i].meta, x[i].len};
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        if (x[i].nfds) {
            m.msg_control = u.buf;
            m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)x[i].nfds);
            struct cmsghdr *h = CMSG_FIRSTHDR(&m);
            h->cmsg_level = SOL_SOCKET;
            h->cmsg_type = SCM_RIGHTS;
            h->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)x[i].nfds);
            memcpy(CMSG_DATA(h), x[i].fds, sizeof(int) * (size_t)x[i].nfds);
        }
        ssize_t r;
        do r = sendmsg(ch->sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS ? RP_EFULL
                                                                               : RP_ECLOSED;
    }
    return RP_OK;
}

int rp_channel_take_fds(rp_channel *ch, uint64_t ticket, rp_xfd *out) {
    if (!ch->shared || ch->sock < 0) return RP_EINVAL;
    rp_lock_acquire(&ch->fdlock, RP_FOREVER, 0, NULL);
    int rc = RP_ENOENT;
    for (;;) {
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int) * RP_XFD_MAX)];
        } u;
        struct iovec iov = {out->meta, RP_XFD_META};
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = u.buf;
        m.msg_controllen = sizeof u.buf;
        ssize_t r;
        do r = recvmsg(ch->sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        while (r < 0 && errno == EINTR);
        if (r <= 0) break; /* nothing (more) there */
        int fds[RP_XFD_MAX];
        int n = 0;
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
            if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
            size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *p = (int *)(void *)CMSG_DATA(h);
            for (size_t j = 0; j < k; j++) {
                if (n < RP_XFD_MAX) fds[n++] = p[j];
                else close(p[j]);
            }
        }
        uint64_t t = 0;
        if ((size_t)r >= sizeof t) memcpy(&t, out->meta, sizeof t);
        if (t == ticket && !(m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
            out->nfds = n;
            memcpy(out->fds, fds, sizeof(int) * (size_t)n);
            out->len = (size_t)r;
            rc = RP_OK;
            break;
        }
        for (int j = 0; j < n; j++) close(fds[j]); /* an earlier message's: it is gone */
    }
    rp_lock_release(&ch->fdlock);
    return rc;
}
#else
static int send_xfds(rp_channel *ch, const rp_xfd *x, int nx) {
    (void)ch, (void)x, (void)nx;
    return RP_EINVAL;
}
int rp_channel_take_fds(rp_channel *ch, uint64_t ticket, rp_xfd *out) {
    (void)ch, (void)ticket, (void)out;
    return RP_EINVAL;
}
#endif

int rp_channel_export(rp_channel *ch, int *memfd, int *sock) {
#if defined(__linux__)
    if (!ch->shared || ch->memfd < 0 || ch->sock < 0) return RP_EINVAL;
    *memfd = fcntl(ch->memfd, F_DUPFD_CLOEXEC, 0);
    if (*memfd < 0) return RP_ENOMEM;
    *sock = fcntl(ch->sock, F_DUPFD_CLOEXEC, 0);
    if (*sock < 0) {
        close(*memfd);
        return RP_ENOMEM;
    }
    return RP_OK;
#else
    (void)ch, (void)memfd, (void)sock;
    return RP_EINVAL;
#endif
}

void rp_channel_detach(rp_channel *ch, int side) {
    side &= 1;
    if (atomic_fetch_sub_explicit(&ch->refs[side], 1, memory_order_acq_rel) != 1) return;
    /* the side lives on in another process: free this process's struct without closing, and
     * without draining the ring it received from (what waits there is the new owner's; a
     * message this process had begun to put together from fragments is lost with it) */
    atomic_store_explicit(&ch->detached, 1, memory_order_release);
    channel_free(ch);
}
