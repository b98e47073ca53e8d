/* rp_worker.h - what workers need beyond ports: wait sets, a worker's control block, process-wide
 * thread ids and the BroadcastChannel registry.
 *
 * Plain C11: <stdatomic.h> and OS calls only, no Python headers.
 */
#ifndef RP_WORKER_H
#define RP_WORKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "rp_channel.h"
#include "rp_wait.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ wait sets
 *
 * A wait set lets one thread sleep until any of many queues has something: each watched queue
 * holds a reference to the set and signals it after a post or a close (rp_channel_watch).
 * Signalling bumps a sequence word and makes a system call only when the owner says it sleeps
 * (sleepers > 0), or, for an asyncio loop, writes its eventfd/pipe only when the owner armed it,
 * so a busy stream costs one atomic increment per message and at most one fd write per batch.
 * Reference counted, allocated with malloc: queues of any interpreter may point at it. */
typedef struct rp_waitset rp_waitset;

/* with_fd: also own an eventfd (a pipe where there is none) for event loops to watch. */
rp_waitset *rp_waitset_new(int with_fd);
void rp_waitset_incref(rp_waitset *ws);
void rp_waitset_decref(rp_waitset *ws);
void rp_waitset_signal(rp_waitset *ws);
unsigned rp_waitset_seq(rp_waitset *ws);
/* Sleep while the sequence still equals seen (see rp_sleep_on for deadline, slice, cancel). */
int rp_waitset_wait(rp_waitset *ws, unsigned seen, int64_t deadline_ns, int64_t slice_ns,
                    rp_cancel *cancel);
/* The fd to watch for reading (-1 without one); arm() asks for one write on the next signal;
 * drain() consumes what was written. */
int rp_waitset_fd(rp_waitset *ws);
void rp_waitset_arm(rp_waitset *ws);
void rp_waitset_drain(rp_waitset *ws);

/* Make the queue that `side` receives from signal ws (slot 0: an event loop thread, slot 1: an
 * asyncio loop) after every post and on close; ws NULL detaches.  Attaching happens under the
 * queue's producer lock, so a producer never signals a set that is being released.  The new set
 * is signalled once, so its owner re-checks the queue. */
void rp_channel_watch(rp_channel *ch, int side, int slot, rp_waitset *ws);

/* ------------------------------------------------------------------ worker control block
 *
 * Shared by the parent (any interpreter) and the worker (possibly another interpreter); two
 * references, malloc'ed.  `lock` orders terminate() against the worker's end: the parent only
 * touches the worker's interpreter/thread while state is RP_W_RUNNING, under the lock, and the
 * worker takes the lock to leave that state, so the interpreter cannot be destroyed under it. */
enum { RP_W_STARTING = 0, RP_W_RUNNING = 1, RP_W_DONE = 2 };

typedef struct rp_worker_ctl {
    atomic_int refs;
    rp_cancel cancel;
    rp_lock lock;
    int state;             /* RP_W_*, under lock */
    void *interp;          /* the worker's interpreter (opaque here), valid while RUNNING */
    unsigned long ident;   /* the worker thread's ident, valid while RUNNING */
    atomic_int exit_code;
    atomic_uintptr_t error_token; /* an exported error report, or 0 */
    int64_t thread_id;
} rp_worker_ctl;

rp_worker_ctl *rp_worker_ctl_new(void);
void rp_worker_ctl_incref(rp_worker_ctl *c);
void rp_worker_ctl_decref(rp_worker_ctl *c);

/* A process-wide, never reused worker thread id (1, 2, ...; 0 is the main thread). */
int64_t rp_next_thread_id(void);

/* ------------------------------------------------------------------ BroadcastChannel registry
 *
 * Members of every interpreter, by name.  Each member receives on side 1 of its own channel;
 * the registry holds a side-0 reference to post into it. */
typedef struct rp_bc_member rp_bc_member;

/* Join name with ch (the registry takes over one side-0 reference of ch).  NULL: no memory. */
rp_bc_member *rp_bc_join(const char *name, size_t len, rp_channel *ch);
/* Leave (drops the side-0 reference).  Idempotent per member; frees the member. */
void rp_bc_leave(rp_bc_member *m);
/* The channels of the other members with self's name, each with a new side-0 reference, at most
 * cap of them written to out; returns how many there are (call again with more room if that is
 * above cap; nothing is referenced then). */
int rp_bc_peers(rp_bc_member *self, rp_channel **out, int cap);

#ifdef __cplusplus
}
#endif
#endif /* RP_WORKER_H */
