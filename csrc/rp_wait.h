/* rp_wait.h - clocks, wait-on-address, adaptive spinning and cancellation.
 *
 * Plain C11: <stdatomic.h> and OS calls only, no Python headers.
 *
 * Layer 0 is "wait on address": rp_addr_wait() sleeps while a 32-bit word still holds an
 * expected value, rp_addr_wake() wakes sleepers on that word.  On Linux this is the futex; on
 * Windows WaitOnAddress; elsewhere (macOS, BSDs, or -DRP_PORTABLE_WAIT) a table of
 * mutex + condition variable buckets hashed by address.  Everything else (ring waits, locks,
 * atomics.wait) is built on that one primitive.
 *
 * No call here blocks for longer than the slice the caller passes, so the Cython layer can
 * come back, run PyErr_CheckSignals() and retry: Ctrl-C always works.
 */
#ifndef RP_WAIT_H
#define RP_WAIT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes shared by the whole C layer: 0 is success, negatives are errors. */
enum {
    RP_OK = 0,
    RP_EAGAIN = -1,    /* nothing there (non-blocking call), or value changed */
    RP_ETIMEDOUT = -2, /* the deadline passed */
    RP_EINTR = -3,     /* a signal or a slice end: caller should check signals and retry */
    RP_ECLOSED = -4,   /* the port or channel is closed */
    RP_ENOMEM = -5,    /* allocation failed */
    RP_ECANCELED = -6, /* the waiting thread's cancel token fired (worker.terminate()) */
    RP_EINVAL = -7,    /* bad argument */
    RP_EFULL = -8,     /* bounded queue full */
    RP_ENOTEQUAL = -9, /* atomics.wait: value was not the expected one */
    RP_ENOENT = -10    /* no such id (rp_registry): stale, wrong kind, or never issued */
};

#define RP_NS_PER_SEC INT64_C(1000000000)
#define RP_FOREVER INT64_MAX /* a deadline that never comes */

/* Monotonic clock in nanoseconds. */
int64_t rp_now_ns(void);

/* Deadline helper: now + timeout (timeout < 0 means forever). */
int64_t rp_deadline_after(int64_t timeout_ns);

/* Sleep while *addr == expected, until woken, until deadline_ns (absolute, rp_now_ns clock),
 * or a signal.  Returns RP_OK (woken or value differed), RP_ETIMEDOUT, or RP_EINTR.
 * Spurious RP_OK returns are allowed: callers re-check their condition. */
int rp_addr_wait(atomic_uint *addr, unsigned expected, int64_t deadline_ns);

/* Wake up to n sleepers on addr (n < 0: all).  Returns how many were woken where the OS
 * says so (futex), else n. */
int rp_addr_wake(atomic_uint *addr, int n);

/* The same for a word in memory shared with other processes (a MAP_SHARED mapping): the
 * futex without FUTEX_PRIVATE_FLAG (keyed by the file and offset, not the address), so a waker
 * in one process wakes sleepers in another.  Shared and private futexes never meet: wake a word
 * the same way its sleepers wait on it.  Elsewhere these are the in-process versions. */
int rp_addr_wait_shared(atomic_uint *addr, unsigned expected, int64_t deadline_ns);
int rp_addr_wake_shared(atomic_uint *addr, int n);

/* A cancel token belongs to one thread (a worker).  Waits that are given it come back with
 * RP_ECANCELED once it fires; rp_cancel_fire() also wakes the word the owner sleeps on. */
typedef struct rp_cancel {
    atomic_int fired;
    atomic_int touching; /* firers currently touching the word in sleeping_on */
    _Atomic(atomic_uint *) sleeping_on;
    atomic_int sleeping_shared; /* the word is in process-shared memory */
} rp_cancel;

void rp_cancel_init(rp_cancel *c);
void rp_cancel_fire(rp_cancel *c);
static inline int rp_cancel_fired(const rp_cancel *c) {
    return c != NULL && atomic_load_explicit(&((rp_cancel *)c)->fired, memory_order_acquire);
}

/* The cancel token of the calling thread (NULL for threads that are not workers).  A worker's
 * bootstrap sets it; every blocking call of the library picks it up. */
rp_cancel *rp_thread_cancel(void);
void rp_thread_set_cancel(rp_cancel *c);

/* rp_sleep_on: the wait used by every blocking call in the library.
 * Sleeps on *word while it equals `seen`, until deadline_ns, but for at most slice_ns at a
 * time (returns RP_EINTR at the end of a slice so the caller can check for signals).
 * Honors the cancel token (may be NULL). */
int rp_sleep_on(atomic_uint *word, unsigned seen, int64_t deadline_ns, int64_t slice_ns,
                rp_cancel *cancel);
/* The same on a word in process-shared memory (see rp_addr_wait_shared). */
int rp_sleep_on_shared(atomic_uint *word, unsigned seen, int64_t deadline_ns, int64_t slice_ns,
                       rp_cancel *cancel);

/* Adaptive spinning.  Waking a sleeping thread on another core costs tens of microseconds on
 * a VM, while two spinning threads hand off in well under one, so every blocking call spins
 * first, for a time budget that adapts per object: it grows when a spin (or a short sleep) shows
 * that the event comes soon, and halves when the wait turned out long.  While at least as many
 * threads spin as there are cores, spinners give their core away (sched_yield) instead of
 * pausing, so 64 waiting workers on 2 cores still let the one that matters run.
 *
 * The cap: on a 2-vCPU VM, waking a receiver that sleeps cost the *sender* 15-25 us per
 * message (the futex wake sends an IPI to a halted vCPU), on top of the receiver's own 30-60 us
 * to run again.  A stream of 1 MiB arrays (one every ~100 us) paid that on every message with a
 * 60 us cap: 9.3 GB/s against 12.5 with this one, and the no-op pool tasks 58 against 74 k/s.
 * The budget grows only when the event came within the cap (a longer spin would have caught
 * it), so a receiver whose messages come further apart than the cap soon sleeps at once.
 * Measured on 3.13t, the CPU share of a receiver of messages 200 us apart or more is what it
 * was with the 60 us cap (under 10%); 100 us apart, it now spins through (98%, was 64%). */
typedef struct rp_spin {
    _Atomic int64_t budget_ns; /* length of the next spin */
} rp_spin;

#define RP_SPIN_MIN_NS INT64_C(500)
#define RP_SPIN_MAX_NS INT64_C(150000)
#define RP_SPIN_START_NS INT64_C(20000)

void rp_spin_init(rp_spin *s);
/* Spin until ready(arg) returns non-zero (then return 1) or the budget is spent (return 0). */
int rp_spin_until(rp_spin *s, int (*ready)(void *), void *arg);
/* The same, counting the spinners of another process too: shared (NULL: none) is a counter in
 * memory shared with it, which every spinner on both sides holds up while it spins. */
int rp_spin_until_shared(rp_spin *s, int (*ready)(void *), void *arg, atomic_int *shared);
/* After a wait that went on to sleep: how long the whole wait took. */
void rp_spin_feedback(rp_spin *s, int spun_ok, int64_t waited_ns);

/* Dekker handshake helper: a full barrier between the caller's earlier stores and this load.
 * ThreadSanitizer does not model fences, so under it a seq_cst read-modify-write of the loaded
 * word gives the same order (at the price of taking its cache line exclusively). */
#if defined(__SANITIZE_THREAD__)
#define RP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RP_TSAN 1
#endif
#endif
static inline int rp_load_after_stores(atomic_int *w) {
#ifdef RP_TSAN
    return atomic_fetch_add_explicit(w, 0, memory_order_seq_cst);
#else
    atomic_thread_fence(memory_order_seq_cst);
    return atomic_load_explicit(w, memory_order_relaxed);
#endif
}

/* CPU relax hint. */
static inline void rp_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* Online CPU count, read once per process at first use. */
int rp_ncpu(void);

/* A small mutex built on rp_addr_wait: 0 = free, 1 = locked, 2 = locked with sleepers. */
typedef struct rp_lock {
    atomic_uint state;
} rp_lock;

static inline void rp_lock_init(rp_lock *l) { atomic_init(&l->state, 0u); }
static inline int rp_lock_try(rp_lock *l) {
    unsigned z = 0;
    return atomic_compare_exchange_strong_explicit(&l->state, &z, 1u, memory_order_acquire,
                                                   memory_order_relaxed);
}
/* Blocks until acquired, or deadline/slice/cancel (returns RP_ETIMEDOUT/RP_EINTR/RP_ECANCELED). */
int rp_lock_acquire(rp_lock *l, int64_t deadline_ns, int64_t slice_ns, rp_cancel *cancel);
void rp_lock_release(rp_lock *l);

#ifdef __cplusplus
}
#endif
#endif /* RP_WAIT_H */
