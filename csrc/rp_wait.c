/* rp_wait.c - see rp_wait.h.  The only process-wide state here is deliberate and shared by
 * every interpreter in the process: the count of spinning threads (a CPU-occupancy hint), the
 * CPU count, and, on the portable path only, the fixed table of wait buckets.  None of it
 * holds interpreter objects, so loading the module in several interpreters is safe. */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "rp_wait.h"

#include <errno.h>
#include <limits.h>
#include <time.h>

#if defined(_WIN32)
#include <windows.h>
#define RP_WAIT_WINDOWS 1
#elif defined(__linux__) && !defined(RP_PORTABLE_WAIT)
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#define RP_WAIT_FUTEX 1
#else
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#define RP_WAIT_PTHREAD 1
#endif

int64_t rp_now_ns(void) {
#if defined(_WIN32)
    static LARGE_INTEGER freq; /* constant for the life of the system */
    LARGE_INTEGER c;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&c);
    return (int64_t)((double)c.QuadPart * 1e9 / (double)freq.QuadPart);
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * RP_NS_PER_SEC + ts.tv_nsec;
#endif
}

int64_t rp_deadline_after(int64_t timeout_ns) {
    if (timeout_ns < 0) return RP_FOREVER;
    int64_t now = rp_now_ns();
    if (timeout_ns > RP_FOREVER - now) return RP_FOREVER;
    return now + timeout_ns;
}

/* ---------------------------------------------------------------- wait on address */

#if RP_WAIT_FUTEX
static int futex_wait(atomic_uint *addr, unsigned expected, int64_t deadline_ns, int op) {
    struct timespec ts, *tsp = NULL;
    if (deadline_ns != RP_FOREVER) {
        if (deadline_ns <= rp_now_ns()) return RP_ETIMEDOUT;
        ts.tv_sec = (time_t)(deadline_ns / RP_NS_PER_SEC);
        ts.tv_nsec = (long)(deadline_ns % RP_NS_PER_SEC);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline: no drift across retries. */
    long r = syscall(SYS_futex, (void *)addr, op, expected, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
    if (r == 0) return RP_OK;
    switch (errno) {
    case EAGAIN: return RP_OK; /* value already differed */
    case ETIMEDOUT: return RP_ETIMEDOUT;
    case EINTR: return RP_EINTR;
    default: return RP_OK; /* treat as spurious: callers re-check */
    }
}

int rp_addr_wait(atomic_uint *addr, unsigned expected, int64_t deadline_ns) {
    return futex_wait(addr, expected, deadline_ns, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG);
}

int rp_addr_wait_shared(atomic_uint *addr, unsigned expected, int64_t deadline_ns) {
    return futex_wait(addr, expected, deadline_ns, FUTEX_WAIT_BITSET);
}

static int futex_wake(atomic_uint *addr, int n, int op) {
    long r = syscall(SYS_futex, (void *)addr, op, n < 0 ? INT_MAX : n, NULL, NULL, 0);
    return r < 0 ? 0 : (int)r;
}

int rp_addr_wake(atomic_uint *addr, int n) {
    return futex_wake(addr, n, FUTEX_WAKE | FUTEX_PRIVATE_FLAG);
}
int rp_addr_wake_shared(atomic_uint *addr, int n) { return futex_wake(addr, n, FUTEX_WAKE); }

#elif RP_WAIT_WINDOWS
int rp_addr_wait(atomic_uint *addr, unsigned expected, int64_t deadline_ns) {
    DWORD ms = INFINITE;
    if (deadline_ns != RP_FOREVER) {
        int64_t left = deadline_ns - rp_now_ns();
        if (left <= 0) return RP_ETIMEDOUT;
        ms = (DWORD)((left + 999999) / 1000000);
    }
    if (WaitOnAddress((volatile VOID *)addr, &expected, sizeof expected, ms)) return RP_OK;
    return GetLastError() == ERROR_TIMEOUT ? RP_ETIMEDOUT : RP_OK;
}

int rp_addr_wake(atomic_uint *addr, int n) {
    if (n == 1) WakeByAddressSingle((PVOID)addr);
    else WakeByAddressAll((PVOID)addr);
    return n;
}

#else /* RP_WAIT_PTHREAD: buckets of mutex + condition variable, hashed by address */
#define RP_BUCKETS 64
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
} rp_bucket;

#define RP_B {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER}
#define RP_B8 RP_B, RP_B, RP_B, RP_B, RP_B, RP_B, RP_B, RP_B
static rp_bucket rp_buckets[RP_BUCKETS] = {RP_B8, RP_B8, RP_B8, RP_B8, RP_B8, RP_B8, RP_B8, RP_B8};

static rp_bucket *rp_bucket_for(const void *addr) {
    uintptr_t h = (uintptr_t)addr;
    h ^= h >> 17;
    h *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return &rp_buckets[(h >> 7) % RP_BUCKETS];
}

int rp_addr_wait(atomic_uint *addr, unsigned expected, int64_t deadline_ns) {
    rp_bucket *b = rp_bucket_for(addr);
    int rc = RP_OK;
    pthread_mutex_lock(&b->mu);
    if (atomic_load_explicit(addr, memory_order_seq_cst) == expected) {
        if (deadline_ns == RP_FOREVER) {
            pthread_cond_wait(&b->cv, &b->mu);
        } else {
            /* condition variables use the realtime clock by default: convert the remaining
             * monotonic time into a realtime deadline for this one wait. */
            int64_t left = deadline_ns - rp_now_ns();
            if (left <= 0) {
                rc = RP_ETIMEDOUT;
            } else {
                struct timespec now, abs;
                clock_gettime(CLOCK_REALTIME, &now);
                int64_t t = (int64_t)now.tv_sec * RP_NS_PER_SEC + now.tv_nsec + left;
                abs.tv_sec = (time_t)(t / RP_NS_PER_SEC);
                abs.tv_nsec = (long)(t % RP_NS_PER_SEC);
                if (pthread_cond_timedwait(&b->cv, &b->mu, &abs) == ETIMEDOUT) rc = RP_ETIMEDOUT;
            }
        }
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int rp_addr_wake(atomic_uint *addr, int n) {
    rp_bucket *b = rp_bucket_for(addr);
    pthread_mutex_lock(&b->mu);
    pthread_cond_broadcast(&b->cv); /* a bucket is shared by several addresses: wake all */
    pthread_mutex_unlock(&b->mu);
    return n < 0 ? 0 : n;
}
#endif

#if !RP_WAIT_FUTEX
int rp_addr_wait_shared(atomic_uint *addr, unsigned expected, int64_t deadline_ns) {
    return rp_addr_wait(addr, expected, deadline_ns);
}
int rp_addr_wake_shared(atomic_uint *addr, int n) { return rp_addr_wake(addr, n); }
#endif

/* ---------------------------------------------------------------- cancel tokens */

void rp_cancel_init(rp_cancel *c) {
    atomic_init(&c->fired, 0);
    atomic_init(&c->touching, 0);
    atomic_init(&c->sleeping_on, NULL);
    atomic_init(&c->sleeping_shared, 0);
}

static _Thread_local rp_cancel *rp_tls_cancel; /* per thread, so per worker: not shared */

rp_cancel *rp_thread_cancel(void) { return rp_tls_cancel; }
void rp_thread_set_cancel(rp_cancel *c) { rp_tls_cancel = c; }

/* The owner publishes the word it sleeps on; fire() bumps that word and wakes it.  The word
 * must be a sequence counter (a spurious change is harmless to its sleepers).  The owner
 * clears sleeping_on and then waits until no firer is still touching the word, so the word
 * (and the object around it, which the owner keeps alive while it waits) outlives the touch. */
void rp_cancel_fire(rp_cancel *c) {
    atomic_store_explicit(&c->fired, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&c->touching, 1, memory_order_seq_cst);
    atomic_uint *w = atomic_load_explicit(&c->sleeping_on, memory_order_seq_cst);
    if (w != NULL) {
        atomic_fetch_add_explicit(w, 1u, memory_order_seq_cst);
        if (atomic_load_explicit(&c->sleeping_shared, memory_order_seq_cst))
            rp_addr_wake_shared(w, -1);
        else
            rp_addr_wake(w, -1);
    }
    atomic_fetch_sub_explicit(&c->touching, 1, memory_order_seq_cst);
}

static void rp_cancel_leave(rp_cancel *c) {
    atomic_store_explicit(&c->sleeping_on, NULL, memory_order_seq_cst);
    while (atomic_load_explicit(&c->touching, memory_order_seq_cst) > 0) rp_cpu_relax();
}

static int sleep_on(atomic_uint *word, unsigned seen, int64_t deadline_ns, int64_t slice_ns,
                    rp_cancel *cancel, int shared) {
    int64_t now = rp_now_ns();
    if (now >= deadline_ns) return RP_ETIMEDOUT;
    int64_t until = deadline_ns;
    if (slice_ns > 0 && slice_ns < deadline_ns - now) until = now + slice_ns;
    if (cancel != NULL) {
        atomic_store_explicit(&cancel->sleeping_shared, shared, memory_order_seq_cst);
        atomic_store_explicit(&cancel->sleeping_on, word, memory_order_seq_cst);
        if (atomic_load_explicit(&cancel->fired, memory_order_seq_cst)) {
            rp_cancel_leave(cancel);
            return RP_ECANCELED;
        }
    }
    int r = shared ? rp_addr_wait_shared(word, seen, until) : rp_addr_wait(word, seen, until);
    if (cancel != NULL) {
        rp_cancel_leave(cancel);
        if (atomic_load_explicit(&cancel->fired, memory_order_acquire))
            return RP_ECANCELED;
    }
    if (r == RP_ETIMEDOUT && until != deadline_ns) return RP_EINTR; /* end of a slice */
    return r;
}

int rp_sleep_on(atomic_uint *word, unsigned seen, int64_t deadline_ns, int64_t slice_ns,
                rp_cancel *cancel) {
    return sleep_on(word, seen, deadline_ns, slice_ns, cancel, 0);
}

int rp_sleep_on_shared(atomic_uint *word, unsigned seen, int64_t deadline_ns, int64_t slice_ns,
                       rp_cancel *cancel) {
    return sleep_on(word, seen, deadline_ns, slice_ns, cancel, 1);
}

/* ---------------------------------------------------------------- spinning */

static atomic_int rp_spinners; /* threads spinning right now, process-wide */
static atomic_int rp_ncpu_cached;

int rp_ncpu(void) {
    int n = atomic_load_explicit(&rp_ncpu_cached, memory_order_relaxed);
    if (n > 0) return n;
#if defined(_WIN32)
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    n = (int)si.dwNumberOfProcessors;
#else
    long v = sysconf(_SC_NPROCESSORS_ONLN);
    n = v > 0 ? (int)v : 1;
#endif
    if (n < 1) n = 1;
    atomic_store_explicit(&rp_ncpu_cached, n, memory_order_relaxed);
    return n;
}

void rp_spin_init(rp_spin *s) { atomic_init(&s->budget_ns, RP_SPIN_START_NS); }

static void rp_yield(void) {
#if defined(_WIN32)
    SwitchToThread();
#else
    sched_yield();
#endif
}

int rp_spin_until(rp_spin *s, int (*ready)(void *), void *arg) {
    return rp_spin_until_shared(s, ready, arg, NULL);
}

/* Spinners in this process, plus those another process counts in `shared` (which counts this
 * thread too, while it spins). */
static int spinners_now(atomic_int *shared) {
    int n = atomic_load_explicit(&rp_spinners, memory_order_relaxed);
    if (shared) n += atomic_load_explicit(shared, memory_order_relaxed) - 1;
    return n;
}

int rp_spin_until_shared(rp_spin *s, int (*ready)(void *), void *arg, atomic_int *shared) {
    int64_t budget = atomic_load_explicit(&s->budget_ns, memory_order_relaxed);
    int ncpu = rp_ncpu();
    int ok = 0;
    atomic_fetch_add_explicit(&rp_spinners, 1, memory_order_relaxed);
    if (shared) atomic_fetch_add_explicit(shared, 1, memory_order_relaxed);
    int crowd = spinners_now(shared) >= ncpu;
    int64_t end = rp_now_ns() + (crowd ? budget / 4 : budget);
    for (unsigned i = 1;; i++) {
        if (ready(arg)) { ok = 1; break; }
        if ((i & 7u) == 0u) {
            if (rp_now_ns() >= end) break;
            /* too many spinners: a spinning thread may keep the very thread it waits for off
             * the CPU, so give the core away instead of pausing */
            crowd = spinners_now(shared) >= ncpu;
            if (crowd) { rp_yield(); continue; }
        }
        rp_cpu_relax();
    }
    atomic_fetch_sub_explicit(&rp_spinners, 1, memory_order_relaxed);
    if (shared) atomic_fetch_sub_explicit(shared, 1, memory_order_relaxed);
    return ok;
}

void rp_spin_feedback(rp_spin *s, int spun_ok, int64_t waited_ns) {
    int64_t b = atomic_load_explicit(&s->budget_ns, memory_order_relaxed), nb;
    if (spun_ok) {
        nb = b + b / 8 + 100; /* spinning paid off: allow a little more next time */
    } else if (waited_ns < RP_SPIN_MAX_NS) {
        nb = 2 * b + 1000; /* slept, but a spin within the cap would have caught the event */
    } else {
        nb = b / 2; /* a long wait: the spin was wasted CPU */
    }
    if (nb > RP_SPIN_MAX_NS) nb = RP_SPIN_MAX_NS;
    if (nb < RP_SPIN_MIN_NS) nb = RP_SPIN_MIN_NS;
    if (nb != b) atomic_store_explicit(&s->budget_ns, nb, memory_order_relaxed);
}

/* ---------------------------------------------------------------- lock */

int rp_lock_acquire(rp_lock *l, int64_t deadline_ns, int64_t slice_ns, rp_cancel *cancel) {
    (void)cancel; /* lock holders never block for long; a cancel waits for the holder */
    for (unsigned i = 0; i < 200u; i++) {
        if (rp_lock_try(l)) return RP_OK;
        rp_cpu_relax();
    }
    /* Drepper's three-state futex mutex */
    unsigned c = atomic_exchange_explicit(&l->state, 2u, memory_order_acquire);
    while (c != 0u) {
        int r = rp_sleep_on(&l->state, 2u, deadline_ns, slice_ns, NULL);
        if (r == RP_ETIMEDOUT || r == RP_EINTR) {
            /* leave the state as "maybe sleepers": the next release wakes somebody, which is
             * harmless, and keeps a real sleeper from being forgotten */
            return r;
        }
        c = atomic_exchange_explicit(&l->state, 2u, memory_order_acquire);
    }
    return RP_OK;
}

void rp_lock_release(rp_lock *l) {
    if (atomic_exchange_explicit(&l->state, 0u, memory_order_release) == 2u)
        rp_addr_wake(&l->state, 1);
}
