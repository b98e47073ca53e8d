/* rp_park.c - see rp_park.h. */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "rp_park.h"

#include <errno.h>
#include <stddef.h>

#include "rp_shm.h"

#if !defined(_WIN32)
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>
#endif

#if defined(__linux__)
#include <sys/eventfd.h>
#include <unistd.h>
#define RP_PARK_EVENTFD 1
#elif !defined(_WIN32)
#include <fcntl.h>
#include <unistd.h>
#define RP_PARK_PIPE 1
#endif

#define RINGPORT_BUILDING_CORE 1
#include "ringport/atomics.h"

#define RP_PARK_BUCKETS 256

typedef struct rp_bucket {
    rp_lock lock;
    rp_spin spin; /* how long waiters on this bucket spin before they sleep */
    rp_waiter *head, *tail;
} rp_bucket;

/* Process-wide on purpose (see rp_park.h): waiters from every interpreter of the process meet
 * here.  Zero-initialized is a valid state for every field (free lock, empty lists). */
static rp_bucket rp_lot[RP_PARK_BUCKETS];

static rp_bucket *rp_bucket_of(const void *addr) {
    uint64_t h = (uint64_t)(uintptr_t)addr;
    h ^= h >> 29;
    h *= UINT64_C(0x9E3779B97F4A7C15);
    return &rp_lot[(h >> 40) % RP_PARK_BUCKETS];
}

static void rp_bucket_lock(rp_bucket *b) {
    /* holders never block while holding it; RP_EINTR (a signal) only means try again */
    while (rp_lock_acquire(&b->lock, RP_FOREVER, 0, NULL) != RP_OK) {
    }
}

void rp_waiter_init(rp_waiter *w, int fd) {
    w->next = w->prev = NULL;
    w->addr = NULL;
    w->queued = 0;
    w->fd = fd;
    w->since = 0;
    w->xcell = NULL;
    w->xgen = 0;
    w->xdone = 0;
    atomic_init(&w->woken, 0u);
    atomic_init(&w->sleeping, 0u);
    atomic_init(&w->seq, 0u);
}

static uint64_t rp_load_value(void *addr, int size) {
    if (size == 4)
        return (uint64_t)(uint32_t)atomic_load_explicit((_Atomic uint32_t *)addr,
                                                        memory_order_seq_cst);
    return atomic_load_explicit((_Atomic uint64_t *)addr, memory_order_seq_cst);
}

/* ---------------------------------------------------------------- across processes
 * The wait cells in a shareable block's header (see rp_park.h).  Everything here is in memory
 * that other processes write: indices are bounded, and a state this process did not expect is
 * never followed anywhere (a cell in a foreign state is simply not ours any more). */

/* A thread waiter's cell goes FREE -> OWNED (claimed) -> WAITING -> WOKEN (a notify took it) or
 * back to FREE (it left).  An async waiter's goes through WAITING_ASYNC, and a notify moves it
 * to WOKEN, writes to its fd, then marks it SIGNALED: only then may the owner close the fd.  Its
 * fd means something in its own process only, so only notifies from that process take it. */
enum {
    RP_X_FREE = 0,
    RP_X_OWNED = 1,
    RP_X_WAITING = 2,
    RP_X_WOKEN = 3,
    RP_X_WAITING_ASYNC = 4,
    RP_X_SIGNALED = 5
};
#define RP_X_STATE(s) ((unsigned)((s) & 7u))
#define RP_X_GEN(s) ((s) >> 3)
#define RP_X_MAKE(g, st) (((g) << 3) | (uint64_t)(st))

typedef struct rp_xcell {
    _Atomic uint64_t st;     /* generation << 2 | state; the generation changes at every claim */
    _Atomic uint64_t off;    /* the waited word's offset in the block's data */
    _Atomic uint64_t ticket; /* FIFO order among the block's waiters */
    atomic_uint wake;        /* the process-shared futex word the waiter sleeps on (async: fd) */
    _Atomic uint32_t pid;    /* the waiter's process */
} rp_xcell;

struct rp_shm_lot {
    _Atomic uint64_t ticket;
    _Atomic uint32_t hw; /* cells [0, hw) have been claimed at some point: notify looks no further */
    uint32_t unused[5];
    rp_xcell cells[RP_PARK_XCELLS];
};
_Static_assert(sizeof(struct rp_shm_lot) <= RP_SHM_LOT_BYTES, "the lot fits the block header");
#if ATOMIC_LLONG_LOCK_FREE != 2 || ATOMIC_INT_LOCK_FREE != 2
#error "cross-process cells need address-free (lock-free) 32- and 64-bit atomics"
#endif

static void rp_fd_signal(int fd);

static void rp_yield_cpu(void) {
#if !defined(_WIN32)
    sched_yield();
#endif
}

#if !defined(_WIN32)
/* getpid() is a system call, once per wait: cache it, and forget it in a forked child. */
static _Atomic uint32_t rp_pid_cache;
static pthread_once_t rp_pid_once = PTHREAD_ONCE_INIT;
static void rp_pid_forget(void) { atomic_store_explicit(&rp_pid_cache, 0u, memory_order_relaxed); }
static void rp_pid_hook(void) { pthread_atfork(NULL, NULL, rp_pid_forget); }
#endif

static uint32_t rp_self_pid(void) {
#if !defined(_WIN32)
    uint32_t pid = atomic_load_explicit(&rp_pid_cache, memory_order_relaxed);
    if (pid != 0u) return pid;
    pthread_once(&rp_pid_once, rp_pid_hook);
    pid = (uint32_t)getpid();
    atomic_store_explicit(&rp_pid_cache, pid, memory_order_relaxed);
    return pid;
#else
    return 0u;
#endif
}

/* Only a process known to be gone: a pid we may not signal (EPERM), or a garbage one, is alive. */
static int rp_pid_dead(uint32_t pid) {
#if !defined(_WIN32)
    if ((pid_t)pid <= 0) return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
#else
    (void)pid;
    return 0;
#endif
}

/* The full barrier of the waiter/notifier handshake (see rp_x_enqueue).  ThreadSanitizer does
 * not model fences; under it both sides do a seq_cst read-modify-write of the same word instead,
 * which orders them just as well. */
static void rp_x_barrier(rp_shm_lot *lot) {
#ifdef RP_TSAN
    atomic_fetch_add_explicit(&lot->ticket, 0u, memory_order_seq_cst);
#else
    (void)lot;
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

static uint32_t rp_x_hw(rp_shm_lot *lot) {
    uint32_t hw = atomic_load_explicit(&lot->hw, memory_order_acquire);
    return hw > RP_PARK_XCELLS ? RP_PARK_XCELLS : hw;
}

/* Reclaim the cells of waiters whose process died while waiting. */
static void rp_x_reap(rp_shm_lot *lot) {
    uint32_t hw = rp_x_hw(lot), me = rp_self_pid();
    for (uint32_t i = 0; i < hw; i++) {
        rp_xcell *c = &lot->cells[i];
        uint64_t s = atomic_load_explicit(&c->st, memory_order_acquire);
        if (RP_X_STATE(s) != RP_X_WAITING && RP_X_STATE(s) != RP_X_WAITING_ASYNC) continue;
        uint32_t pid = atomic_load_explicit(&c->pid, memory_order_relaxed);
        if (pid != me && rp_pid_dead(pid))
            atomic_compare_exchange_strong_explicit(&c->st, &s, RP_X_MAKE(RP_X_GEN(s), RP_X_FREE),
                                                    memory_order_acq_rel, memory_order_relaxed);
    }
}

static int rp_x_enqueue(rp_waiter *w, rp_shm_lot *lot, uint64_t off, void *addr, int size,
                        uint64_t expected) {
    rp_xcell *c = NULL;
    uint64_t s = 0, g;
    uint32_t i = 0;
    for (int pass = 0; pass < 2 && c == NULL; pass++) {
        if (pass == 1) rp_x_reap(lot);
        for (i = 0; i < RP_PARK_XCELLS; i++) {
            s = atomic_load_explicit(&lot->cells[i].st, memory_order_relaxed);
            if (RP_X_STATE(s) != RP_X_FREE) continue;
            if (atomic_compare_exchange_strong_explicit(
                    &lot->cells[i].st, &s, RP_X_MAKE(RP_X_GEN(s) + 1u, RP_X_OWNED),
                    memory_order_acq_rel, memory_order_relaxed)) {
                c = &lot->cells[i];
                break;
            }
        }
    }
    if (c == NULL) return RP_ENOMEM;
    g = RP_X_GEN(s) + 1u;
    uint32_t hw = atomic_load_explicit(&lot->hw, memory_order_relaxed);
    while (hw < i + 1u && !atomic_compare_exchange_weak_explicit(&lot->hw, &hw, i + 1u,
                                                                 memory_order_release,
                                                                 memory_order_relaxed)) {
    }
    atomic_store_explicit(&c->off, off, memory_order_relaxed);
    atomic_store_explicit(&c->pid, rp_self_pid(), memory_order_relaxed);
    atomic_store_explicit(&c->ticket,
                          atomic_fetch_add_explicit(&lot->ticket, 1u, memory_order_relaxed),
                          memory_order_relaxed);
    if (w->fd >= 0) atomic_store_explicit(&c->wake, (unsigned)w->fd, memory_order_relaxed);
    w->addr = addr;
    w->xcell = c;
    w->xgen = g;
    w->xdone = 0;
    unsigned waiting = w->fd >= 0 ? RP_X_WAITING_ASYNC : RP_X_WAITING;
    /* publish, then compare: a notifier stores the value, then looks for WAITING cells.  The
     * fences make it Dekker's handshake, whatever order the user's store had: either we see the
     * new value, or the notifier sees this cell. */
    atomic_store_explicit(&c->st, RP_X_MAKE(g, waiting), memory_order_seq_cst);
    rp_x_barrier(lot);
    if (rp_load_value(addr, size) != expected) {
        s = RP_X_MAKE(g, waiting);
        if (atomic_compare_exchange_strong_explicit(&c->st, &s, RP_X_MAKE(g, RP_X_FREE),
                                                    memory_order_acq_rel, memory_order_acquire)) {
            w->xcell = NULL;
            return RP_ENOTEQUAL;
        }
        /* a notify counted this cell already: the wait is enqueued and woken (an async
         * waiter's fd is signalled too) */
    }
    return RP_OK;
}

/* The waiter's cell is no longer WAITING, so a notify took it: give it back.  (A state other
 * than WOKEN means another process wrote the cell: it is not ours any more; leave it.) */
static void rp_x_settle(rp_waiter *w) {
    uint64_t s = RP_X_MAKE(w->xgen, w->fd >= 0 ? RP_X_SIGNALED : RP_X_WOKEN);
    if (w->fd >= 0) {
        /* the notifier (in this process) is between WOKEN and its write to our fd: we may
         * close the fd only after it is done */
        for (unsigned i = 0; atomic_load_explicit(&w->xcell->st, memory_order_acquire) ==
                            RP_X_MAKE(w->xgen, RP_X_WOKEN);
             i++) {
            if (i < 64u) rp_cpu_relax();
            else rp_yield_cpu();
        }
    }
    atomic_compare_exchange_strong_explicit(&w->xcell->st, &s, RP_X_MAKE(w->xgen, RP_X_FREE),
                                            memory_order_acq_rel, memory_order_acquire);
    w->xdone = 1;
}

static int rp_x_woken(rp_waiter *w) {
    if (w->xdone) return w->xdone == 1;
    return atomic_load_explicit(&w->xcell->st, memory_order_acquire) !=
           RP_X_MAKE(w->xgen, w->fd >= 0 ? RP_X_WAITING_ASYNC : RP_X_WAITING);
}

static int rp_x_ready(void *w) { return rp_x_woken((rp_waiter *)w); }

static int rp_x_wait(rp_waiter *w, int64_t deadline_ns, int64_t slice_ns, rp_cancel *cancel) {
    rp_bucket *b = rp_bucket_of(w->addr); /* this process's spin budget for the address */
    rp_xcell *c = w->xcell;
    if (w->xdone) return w->xdone == 1 ? RP_OK : RP_ETIMEDOUT;
    if (!atomic_load_explicit(&w->sleeping, memory_order_relaxed)) {
        w->since = rp_now_ns();
        if (deadline_ns > w->since && rp_spin_until(&b->spin, rp_x_ready, w)) {
            rp_spin_feedback(&b->spin, 1, 0);
            rp_x_settle(w);
            return RP_OK;
        }
        atomic_store_explicit(&w->sleeping, 1u, memory_order_relaxed);
    }
    for (;;) {
        unsigned seen = atomic_load_explicit(&c->wake, memory_order_seq_cst);
        if (rp_x_woken(w)) break;
        if (rp_cancel_fired(cancel)) return RP_ECANCELED;
        int64_t now = rp_now_ns(), until = deadline_ns;
        if (now >= deadline_ns) {
            rp_spin_feedback(&b->spin, 0, now - w->since);
            return RP_ETIMEDOUT;
        }
        if (slice_ns > 0 && slice_ns < deadline_ns - now) until = now + slice_ns;
        int r = rp_addr_wait_shared(&c->wake, seen, until);
        if (rp_x_woken(w)) break;
        if (r == RP_EINTR || (r == RP_ETIMEDOUT && until != deadline_ns)) return RP_EINTR;
    }
    rp_spin_feedback(&b->spin, 0, rp_now_ns() - w->since);
    rp_x_settle(w);
    return RP_OK;
}

static int rp_x_leave(rp_waiter *w) {
    uint64_t s = RP_X_MAKE(w->xgen, w->fd >= 0 ? RP_X_WAITING_ASYNC : RP_X_WAITING);
    if (w->xdone) return w->xdone == 1;
    if (atomic_compare_exchange_strong_explicit(&w->xcell->st, &s,
                                                RP_X_MAKE(w->xgen, RP_X_FREE),
                                                memory_order_acq_rel, memory_order_acquire)) {
        w->xdone = 2;
        return 0;
    }
    rp_x_settle(w);
    return 1;
}

/* Wake the oldest waiter on off (count > 0), or every one (count < 0), until count. */
static int64_t rp_x_notify(rp_shm_lot *lot, uint64_t off, int64_t count) {
    uint32_t hw, me = 0; /* our pid, looked up only once a waiter is found (a system call) */
    int64_t n = 0;
    rp_x_barrier(lot); /* pairs with the waiter's (see rp_x_enqueue) */
    hw = rp_x_hw(lot);
    if (hw == 0) return 0;
    /* only waiters that came before this notify: one that waits again at once after being woken
     * must not keep a notify-all going forever */
    uint64_t limit = atomic_load_explicit(&lot->ticket, memory_order_acquire);
    while (count < 0 || n < count) {
        rp_xcell *best = NULL;
        uint64_t bs = 0, bt = UINT64_MAX;
        for (uint32_t i = 0; i < hw; i++) {
            rp_xcell *c = &lot->cells[i];
            uint64_t s = atomic_load_explicit(&c->st, memory_order_acquire);
            unsigned k = RP_X_STATE(s);
            if ((k != RP_X_WAITING && k != RP_X_WAITING_ASYNC) ||
                atomic_load_explicit(&c->off, memory_order_relaxed) != off)
                continue;
            if (k == RP_X_WAITING_ASYNC) {
                if (me == 0) me = rp_self_pid();
                if (atomic_load_explicit(&c->pid, memory_order_relaxed) != me)
                    continue; /* its fd is another process's */
            }
            uint64_t t = atomic_load_explicit(&c->ticket, memory_order_relaxed);
            if (t >= limit) continue;
            if (best == NULL || t < bt) {
                best = c;
                bs = s;
                bt = t;
                if (count < 0) break; /* all of them: the order does not matter */
            }
        }
        if (best == NULL) break;
        if (me == 0) me = rp_self_pid();
        uint32_t pid = atomic_load_explicit(&best->pid, memory_order_relaxed);
        if (pid != me && rp_pid_dead(pid)) {
            /* its process died waiting: reclaim the cell, do not count it */
            atomic_compare_exchange_strong_explicit(&best->st, &bs,
                                                    RP_X_MAKE(RP_X_GEN(bs), RP_X_FREE),
                                                    memory_order_acq_rel, memory_order_relaxed);
            continue;
        }
        if (!atomic_compare_exchange_strong_explicit(&best->st, &bs,
                                                     RP_X_MAKE(RP_X_GEN(bs), RP_X_WOKEN),
                                                     memory_order_acq_rel, memory_order_relaxed))
            continue; /* it timed out, or another notifier took it: look again */
        n++;
        if (RP_X_STATE(bs) == RP_X_WAITING_ASYNC) {
            /* the owner closes the fd only after it sees SIGNALED (rp_x_settle) */
            rp_fd_signal((int)atomic_load_explicit(&best->wake, memory_order_relaxed));
            atomic_store_explicit(&best->st, RP_X_MAKE(RP_X_GEN(bs), RP_X_SIGNALED),
                                  memory_order_release);
            continue;
        }
        /* the cell lives as long as the mapping (which the caller holds), so touching it after
         * the waiter may have returned is safe: at worst a spurious wake of its next owner */
        atomic_fetch_add_explicit(&best->wake, 1u, memory_order_seq_cst);
        rp_addr_wake_shared(&best->wake, 1);
    }
    return n;
}

static int64_t rp_x_waiters(rp_shm_lot *lot, uint64_t off) {
    uint32_t hw = rp_x_hw(lot);
    int64_t n = 0;
    for (uint32_t i = 0; i < hw; i++) {
        uint64_t s = atomic_load_explicit(&lot->cells[i].st, memory_order_acquire);
        if ((RP_X_STATE(s) == RP_X_WAITING || RP_X_STATE(s) == RP_X_WAITING_ASYNC) &&
            atomic_load_explicit(&lot->cells[i].off, memory_order_relaxed) == off)
            n++;
    }
    return n;
}

/* The cross-process lot holding thread waiters on addr, or NULL (process-local memory). */
static rp_shm_lot *rp_x_lot_of(const void *addr, uint64_t *off) {
    rp_sab *s = rp_sab_find(addr, off);
    return s != NULL ? rp_sab_lot(s) : NULL;
}

/* ---------------------------------------------------------------- the parking lot */

int rp_park_enqueue(rp_waiter *w, void *addr, int size, uint64_t expected) {
    rp_bucket *b = rp_bucket_of(addr);
    uint64_t off;
    rp_shm_lot *lot;
    if (size == 4) expected = (uint64_t)(uint32_t)expected;
    /* waiters on a shareable block wait in its cells, where other processes find them */
    if ((lot = rp_x_lot_of(addr, &off)) != NULL)
        return rp_x_enqueue(w, lot, off, addr, size, expected);
    rp_bucket_lock(b);
    if (rp_load_value(addr, size) != expected) {
        rp_lock_release(&b->lock);
        return RP_ENOTEQUAL;
    }
    w->addr = addr;
    w->next = NULL;
    w->prev = b->tail;
    if (b->tail) b->tail->next = w;
    else b->head = w;
    b->tail = w;
    w->queued = 1;
    rp_lock_release(&b->lock);
    return RP_OK;
}

static void rp_unlink(rp_bucket *b, rp_waiter *w) {
    if (w->prev) w->prev->next = w->next;
    else b->head = w->next;
    if (w->next) w->next->prev = w->prev;
    else b->tail = w->prev;
    w->next = w->prev = NULL;
    w->queued = 0;
}

int rp_park_woken(rp_waiter *w) {
    if (w->xcell != NULL) return rp_x_woken(w);
    return atomic_load_explicit(&w->woken, memory_order_acquire) != 0u;
}

static int rp_woken_ready(void *w) { return rp_park_woken((rp_waiter *)w); }

/* A notifier marks a waiter woken (1) before its last touch (the wake-up call) and done (2)
 * after it; a woken waiter may only return (and its stack frame go away) once it reads 2. */
static void rp_wait_notifier_done(rp_waiter *w) {
    for (unsigned i = 0; atomic_load_explicit(&w->woken, memory_order_acquire) != 2u; i++) {
        if (i < 64u) rp_cpu_relax();
        else rp_addr_wait(&w->woken, 1u, rp_now_ns() + 100000); /* the notifier was preempted */
    }
}

int rp_park_wait(rp_waiter *w, int64_t deadline_ns, int64_t slice_ns, rp_cancel *cancel) {
    rp_bucket *b = rp_bucket_of(w->addr);
    if (w->xcell != NULL) return rp_x_wait(w, deadline_ns, slice_ns, cancel);
    if (!atomic_load_explicit(&w->sleeping, memory_order_relaxed)) {
        /* first call: spin a little (a notify often comes within microseconds) */
        w->since = rp_now_ns();
        if (deadline_ns > w->since && rp_spin_until(&b->spin, rp_woken_ready, w)) {
            rp_spin_feedback(&b->spin, 1, 0);
            rp_wait_notifier_done(w);
            return RP_OK;
        }
        /* from now on notifiers must make the wake-up call (seq_cst: pairs with notify's
         * store of woken, then load of sleeping) */
        atomic_store_explicit(&w->sleeping, 1u, memory_order_seq_cst);
    }
    for (;;) {
        unsigned seen = atomic_load_explicit(&w->seq, memory_order_seq_cst);
        if (rp_park_woken(w)) break;
        int r = rp_sleep_on(&w->seq, seen, deadline_ns, slice_ns, cancel);
        if (r == RP_OK) continue; /* woken, spurious, or a cancel bump: look again */
        if (rp_park_woken(w)) break;
        if (r == RP_ETIMEDOUT) rp_spin_feedback(&b->spin, 0, rp_now_ns() - w->since);
        return r;
    }
    rp_spin_feedback(&b->spin, 0, rp_now_ns() - w->since);
    rp_wait_notifier_done(w);
    return RP_OK;
}

int rp_park_leave(rp_waiter *w) {
    rp_bucket *b = rp_bucket_of(w->addr);
    int woken;
    if (w->xcell != NULL) return rp_x_leave(w);
    rp_bucket_lock(b);
    if (w->queued) rp_unlink(b, w);
    woken = rp_park_woken(w);
    rp_lock_release(&b->lock);
    if (woken) rp_wait_notifier_done(w);
    return woken;
}

static void rp_fd_signal(int fd) {
#if RP_PARK_EVENTFD
    uint64_t one = 1;
    ssize_t r;
    do r = write(fd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
#elif RP_PARK_PIPE
    char c = 1;
    ssize_t r;
    do r = write(fd, &c, 1);
    while (r < 0 && errno == EINTR);
#else
    (void)fd;
#endif
}

int64_t rp_park_notify(void *addr, int64_t count) {
    rp_bucket *b = rp_bucket_of(addr);
    rp_waiter *w, *next;
    int64_t n = 0, x = 0;
    uint64_t off;
    rp_shm_lot *lot;
    if (count == 0) return 0;
    /* threads in any process first (oldest first among them), then this process's async
     * waiters on the same word */
    if ((lot = rp_x_lot_of(addr, &off)) != NULL) {
        x = rp_x_notify(lot, off, count);
        if (count > 0 && x == count) return x;
        if (count > 0) count -= x;
    }
    rp_bucket_lock(b);
    for (w = b->head; w != NULL && (count < 0 || n < count); w = next) {
        next = w->next;
        if (w->addr != addr) continue;
        rp_unlink(b, w);
        n++;
        if (w->fd >= 0) {
            /* async: the owner closes the fd only after rp_park_leave took this lock */
            atomic_store_explicit(&w->woken, 2u, memory_order_seq_cst);
            rp_fd_signal(w->fd);
            continue;
        }
        atomic_store_explicit(&w->woken, 1u, memory_order_seq_cst);
        if (atomic_load_explicit(&w->sleeping, memory_order_seq_cst)) {
            atomic_fetch_add_explicit(&w->seq, 1u, memory_order_seq_cst);
            rp_addr_wake(&w->seq, 1);
        }
        /* last touch: from here on the waiter may return and its frame disappear.  The wake
         * on `woken` below is for a waiter that slept in rp_wait_notifier_done; it is made on
         * an address that may already be reused, which is harmless for futex/WaitOnAddress
         * (at worst a spurious wake-up of whoever waits there, and every waiter re-checks). */
        atomic_store_explicit(&w->woken, 2u, memory_order_seq_cst);
        rp_addr_wake(&w->woken, -1);
    }
    rp_lock_release(&b->lock);
    return x + n;
}

int64_t rp_park_waiters(void *addr) {
    rp_bucket *b = rp_bucket_of(addr);
    int64_t n = 0;
    uint64_t off;
    rp_shm_lot *lot = rp_x_lot_of(addr, &off);
    if (lot != NULL) n = rp_x_waiters(lot, off);
    rp_bucket_lock(b);
    for (rp_waiter *w = b->head; w != NULL; w = w->next)
        if (w->addr == addr) n++;
    rp_lock_release(&b->lock);
    return n;
}

#define RP_CAPI_SLICE_NS INT64_C(50000000)

int rp_park_wait_value(void *addr, int size, uint64_t expected, int64_t timeout_ns) {
    rp_waiter w;
    int64_t deadline = rp_deadline_after(timeout_ns);
    rp_cancel *cancel = rp_thread_cancel();
    int r;
    if (rp_cancel_fired(cancel)) return RP_ECANCELED;
    rp_waiter_init(&w, -1);
    r = rp_park_enqueue(&w, addr, size, expected);
    if (r != RP_OK) return r; /* RP_ENOTEQUAL, or RP_ENOMEM (no free cross-process cell) */
    do r = rp_park_wait(&w, deadline, RP_CAPI_SLICE_NS, cancel);
    while (r == RP_EINTR);
    if (r == RP_OK) return RP_OK;
    return rp_park_leave(&w) ? RP_OK : r;
}

int rp_park_fd_open(int *rfd, int *wfd) {
#if RP_PARK_EVENTFD
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return RP_ENOMEM;
    *rfd = *wfd = fd;
    return RP_OK;
#elif RP_PARK_PIPE
    int p[2];
    if (pipe(p) != 0) return RP_ENOMEM;
    for (int i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
    }
    *rfd = p[0];
    *wfd = p[1];
    return RP_OK;
#else
    (void)rfd;
    (void)wfd;
    return RP_ENOMEM;
#endif
}

void rp_park_fd_close(int rfd, int wfd) {
#if RP_PARK_EVENTFD || RP_PARK_PIPE
    if (rfd >= 0) close(rfd);
    if (wfd >= 0 && wfd != rfd) close(wfd);
#else
    (void)rfd;
    (void)wfd;
#endif
}

/* ---------------------------------------------------------------- the C API */

static int rp_capi_result(int r) {
    switch (r) {
    case RP_OK: return RINGPORT_WAIT_OK;
    case RP_ENOTEQUAL: return RINGPORT_WAIT_NOT_EQUAL;
    case RP_ETIMEDOUT: return RINGPORT_WAIT_TIMED_OUT;
    default: return RINGPORT_WAIT_CANCELED;
    }
}

static int rp_capi_wait_i32(int32_t *addr, int32_t expected, int64_t timeout_ns) {
    return rp_capi_result(rp_park_wait_value(addr, 4, (uint64_t)(uint32_t)expected, timeout_ns));
}

static int rp_capi_wait_i64(int64_t *addr, int64_t expected, int64_t timeout_ns) {
    return rp_capi_result(rp_park_wait_value(addr, 8, (uint64_t)expected, timeout_ns));
}

static const ringport_atomics_api rp_capi_table = {
    RINGPORT_API_VERSION, (unsigned)sizeof(ringport_atomics_api),
    rp_capi_wait_i32,     rp_capi_wait_i64,
    rp_park_notify,       rp_park_waiters,
};

const void *rp_park_capi(void) { return &rp_capi_table; }
