/* rp_park.c - see rp_park.h. */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "rp_park.h"

#include <errno.h>
#include <stddef.h>

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

int rp_park_enqueue(rp_waiter *w, void *addr, int size, uint64_t expected) {
    rp_bucket *b = rp_bucket_of(addr);
    if (size == 4) expected = (uint64_t)(uint32_t)expected;
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
    int64_t n = 0;
    if (count == 0) return 0;
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
    return n;
}

int64_t rp_park_waiters(void *addr) {
    rp_bucket *b = rp_bucket_of(addr);
    int64_t n = 0;
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
    if (rp_park_enqueue(&w, addr, size, expected) != RP_OK) return RP_ENOTEQUAL;
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
