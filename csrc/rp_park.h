/* rp_park.h - the parking lot behind atomics.wait / atomics.notify (JavaScript semantics).
 *
 * Plain C11, no Python headers.  A fixed table of buckets hashed by address; each bucket has
 * an rp_lock and an intrusive FIFO list of waiters.  The table is deliberately process-wide:
 * threads of different interpreters waiting on the same SharedArrayBuffer must meet in it, and
 * it holds no interpreter state (waiters are C structs owned by the threads that wait).
 *
 * A wait is enqueue + wait + leave:
 *   rp_park_enqueue  under the bucket lock, compares the whole 4- or 8-byte value at addr with
 *                    the expected one and appends the waiter (or returns RP_ENOTEQUAL).
 *                    Notifiers take the same lock, so a store followed by notify can never slip
 *                    between the comparison and the enqueue.
 *   rp_park_wait     spins briefly on the waiter's own word, then sleeps on it in slices.
 *   rp_park_leave    after a timeout, cancel or exception: removes the waiter under the lock,
 *                    unless a notify already dequeued it (then the wait counts as woken).
 * rp_park_notify dequeues up to count waiters on addr in FIFO order, marks them woken, and only
 * makes the wake-up system call for those that said they sleep.
 *
 * Across processes: a waiter on a shareable block's memory (rp_shm.h) is a cell in that block's
 * header instead of a list node, so a notify from any process that maps the block finds it.  A
 * cell is claimed and released with a CAS on (generation << 3 | state), and holds the word's
 * offset in the block, a FIFO ticket, the owner's pid and a futex word.  notify takes the oldest
 * matching cell (tickets before its own start only) with one CAS WAITING -> WOKEN, then bumps the
 * cell's word and wakes it with a process-shared futex (rp_addr_wake_shared).  Waiter and
 * notifier each win or lose that one CAS, so notify's count is exact, as between threads: every
 * waiter it counts returns "ok", every other one times out, is interrupted, or was not equal.
 * Waiters whose process died (SIGKILL) are not counted: notify checks kill(pid, 0) before it
 * takes another process's cell and reclaims the cell instead (processes sharing a block must
 * share a pid namespace, as spawned children do).  A block holds RP_PARK_XCELLS cells; one more
 * concurrent waiter gets RP_ENOMEM.  Such thread waits see worker.terminate()'s cancel at the
 * next slice end rather than at once (the token wakes private futexes only).  Async waiters
 * take cells too (so FIFO order holds between them and threads), but their fd means something
 * in their own process only: only notifies from that process count and wake them.
 *
 * Async waiters (atomics.wait_async) have an fd (an eventfd, or a pipe's write end) instead:
 * notify writes to it under the bucket lock, and the event loop watches the read end.  Their
 * owner always calls rp_park_leave before closing the fd, so no notify can touch a closed fd.
 */
#ifndef RP_PARK_H
#define RP_PARK_H

#include <stdatomic.h>
#include <stdint.h>

#include "rp_wait.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rp_waiter {
    struct rp_waiter *next, *prev; /* guarded by the bucket lock */
    const void *addr;
    int queued;                    /* guarded by the bucket lock */
    int fd;                        /* async waiters: notify writes here; -1 for threads */
    atomic_uint woken;             /* 0 waiting; 1 dequeued by notify; 2 notify is done with us */
    atomic_uint sleeping;          /* a thread waiter said it goes to sleep on seq */
    atomic_uint seq;               /* the word a thread waiter sleeps on (bumped by notify) */
    int64_t since;                 /* when the thread waiter started waiting (spin feedback) */
    struct rp_xcell *xcell;        /* a cross-process waiter's cell (see above), else NULL */
    uint64_t xgen;                 /* the cell's generation while this waiter holds it */
    int xdone;                     /* 0 holds the cell; 1 left it woken; 2 left it not woken */
} rp_waiter;

/* Concurrent cross-process waiters one shareable block holds. */
#define RP_PARK_XCELLS 2045

void rp_waiter_init(rp_waiter *w, int fd);
/* size is 4 or 8.  RP_OK (enqueued) or RP_ENOTEQUAL (not enqueued); for a thread waiter on a
 * shareable block also RP_ENOMEM (all RP_PARK_XCELLS cells taken; not enqueued). */
int rp_park_enqueue(rp_waiter *w, void *addr, int size, uint64_t expected);
/* Thread waiters only.  RP_OK once woken by notify; RP_EINTR at the end of a slice;
 * RP_ETIMEDOUT; RP_ECANCELED (the cancel token fired).  Still enqueued unless RP_OK. */
int rp_park_wait(rp_waiter *w, int64_t deadline_ns, int64_t slice_ns, rp_cancel *cancel);
/* Is the waiter woken (notify dequeued it)? */
int rp_park_woken(rp_waiter *w);
/* Leave the queue.  Returns 1 when a notify had already dequeued the waiter (the wait then
 * counts as woken), else 0.  After it returns no notify touches the waiter any more. */
int rp_park_leave(rp_waiter *w);
/* Wake up to count waiters on addr, oldest first (count < 0: all).  Returns how many. */
int64_t rp_park_notify(void *addr, int64_t count);
/* How many waiters wait on addr now (a test and introspection hook). */
int64_t rp_park_waiters(void *addr);

/* A whole blocking wait, for callers without signals to check (the C API): RP_OK,
 * RP_ENOTEQUAL, RP_ETIMEDOUT or RP_ECANCELED.  timeout_ns < 0: none. */
int rp_park_wait_value(void *addr, int size, uint64_t expected, int64_t timeout_ns);

/* Async waiters' fds: *rfd to watch for readability, *wfd for the waiter.  They may be the
 * same fd (eventfd).  RP_OK or RP_ENOMEM. */
int rp_park_fd_open(int *rfd, int *wfd);
void rp_park_fd_close(int rfd, int wfd);

/* The table of function pointers exported to other extensions (ringport/atomics.h). */
const void *rp_park_capi(void);

#ifdef __cplusplus
}
#endif
#endif /* RP_PARK_H */
