/* rp_workerctl.h - a worker's control block, and process-wide worker thread ids.
 *
 * Shared by the parent (any interpreter) and the worker (possibly another interpreter);
 * reference counted, malloc'ed, opaque: every field is read through an accessor.  Its lock
 * orders terminate() against the worker's end, and the whole protocol is here: the parent
 * touches the worker's interpreter/thread only while the worker is RP_W_RUNNING, under the lock
 * (rp_workerctl_terminate), and the worker takes the lock to leave that state
 * (rp_workerctl_leave), so its interpreter cannot be destroyed under the parent.
 *
 * Plain C11: <stdatomic.h> and OS calls only, no Python headers (the interpreter and thread are
 * opaque values here; src/ringport/_glue.c does the Python side).
 */
#ifndef RP_WORKERCTL_H
#define RP_WORKERCTL_H

#include <stdint.h>

#include "rp_wait.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { RP_W_STARTING = 0, RP_W_RUNNING = 1, RP_W_DONE = 2 };

typedef struct rp_workerctl rp_workerctl;

/* A new block (one reference), with a fresh thread id; NULL: no memory. */
rp_workerctl *rp_workerctl_new(void);
void rp_workerctl_incref(rp_workerctl *c);
void rp_workerctl_decref(rp_workerctl *c);

/* Process-wide ids (rp_registry.h): register c (the registry takes a reference of its own;
 * returns the id > 0 or RP_ENOMEM), and find it again (a new reference, or NULL for an id that
 * names no live control block).  The registry entry goes with rp_registry_decref(id,
 * RP_REG_WORKER). */
int64_t rp_workerctl_register(rp_workerctl *c);
rp_workerctl *rp_workerctl_lookup(int64_t id);

int64_t rp_workerctl_thread_id(const rp_workerctl *c);
/* The worker's cancel token: fired by terminate(); blocked ringport waits return on it. */
rp_cancel *rp_workerctl_cancel(rp_workerctl *c);
int rp_workerctl_terminated(const rp_workerctl *c);
/* RP_W_*, read under the lock. */
int rp_workerctl_state(rp_workerctl *c);
/* The exit code, -1 until the worker stored one. */
int rp_workerctl_exit_code(const rp_workerctl *c);
void rp_workerctl_set_exit_code(rp_workerctl *c, int code);
/* Store the registry id of an exported error report (0: none) and return the previous one.
 * A report still stored when the block is freed is dropped then. */
int64_t rp_workerctl_swap_error(rp_workerctl *c, int64_t token_id);

/* In the worker thread, before user code: STARTING -> RUNNING unless terminate() came first
 * (then DONE).  Records the worker's interpreter and thread (opaque here) and installs the
 * cancel token as this thread's.  Returns 1 if running.  May block briefly on the lock: call
 * it without holding any lock the parent may need meanwhile (e.g. a GIL). */
int rp_workerctl_enter(rp_workerctl *c, void *interp, unsigned long ident);
/* In the worker thread, after user code: -> DONE, forgets the interpreter, uninstalls the
 * cancel token.  Returns 1 if it was running (a terminate() may have raced the end). */
int rp_workerctl_leave(rp_workerctl *c);

/* Called by rp_workerctl_terminate under the lock, only while the worker runs: interp and ident
 * are those rp_workerctl_enter recorded, and stay valid until it returns. */
typedef void (*rp_workerctl_fn)(void *interp, unsigned long ident, void *arg);
/* Fire the cancel token; then, if the worker runs, call fn under the lock.  Returns 1 if fn
 * was called. */
int rp_workerctl_terminate(rp_workerctl *c, rp_workerctl_fn fn, void *arg);

/* A process-wide, never reused worker thread id (1, 2, ...; 0 is the main thread). */
int64_t rp_next_thread_id(void);

#ifdef __cplusplus
}
#endif
#endif /* RP_WORKERCTL_H */
