/* rp_workerctl.c - see rp_workerctl.h.  The thread id counter is process-wide on purpose: ids
 * must be unique across interpreters. */
#include "rp_workerctl.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "rp_registry.h"

struct rp_workerctl {
    atomic_int refs;
    rp_cancel cancel;
    rp_lock lock;
    int state;           /* RP_W_*, under lock */
    void *interp;        /* the worker's interpreter, under lock, valid while RUNNING */
    unsigned long ident; /* the worker thread's ident, under lock, valid while RUNNING */
    atomic_int exit_code;
    _Atomic int64_t error_id; /* registry id of an exported error report, or 0 */
    int64_t thread_id;        /* read-only after new */
};

rp_workerctl *rp_workerctl_new(void) {
    rp_workerctl *c = (rp_workerctl *)calloc(1, sizeof *c);
    if (!c) return NULL;
    atomic_init(&c->refs, 1);
    rp_cancel_init(&c->cancel);
    rp_lock_init(&c->lock);
    c->state = RP_W_STARTING;
    c->interp = NULL;
    c->ident = 0;
    atomic_init(&c->exit_code, -1);
    atomic_init(&c->error_id, 0);
    c->thread_id = rp_next_thread_id();
    return c;
}

void rp_workerctl_incref(rp_workerctl *c) {
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void rp_workerctl_decref(rp_workerctl *c) {
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
    int64_t err = atomic_load_explicit(&c->error_id, memory_order_acquire);
    if (err) rp_registry_decref(err, RP_REG_TOKEN); /* a report nobody collected */
    free(c);
}

static void reg_incref(void *c) { rp_workerctl_incref((rp_workerctl *)c); }
static void reg_decref(void *c) { rp_workerctl_decref((rp_workerctl *)c); }
static const rp_reg_ops reg_ops = {reg_incref, reg_decref};

int64_t rp_workerctl_register(rp_workerctl *c) {
    rp_workerctl_incref(c);
    int64_t id = rp_registry_add(RP_REG_WORKER, &reg_ops, c);
    if (id < 0) rp_workerctl_decref(c);
    return id;
}

rp_workerctl *rp_workerctl_lookup(int64_t id) {
    void *c = NULL;
    return rp_registry_get(id, RP_REG_WORKER, &c) == RP_OK ? (rp_workerctl *)c : NULL;
}

int64_t rp_workerctl_thread_id(const rp_workerctl *c) { return c->thread_id; }
rp_cancel *rp_workerctl_cancel(rp_workerctl *c) { return &c->cancel; }
int rp_workerctl_terminated(const rp_workerctl *c) { return rp_cancel_fired(&c->cancel); }

int rp_workerctl_state(rp_workerctl *c) {
    rp_lock_acquire(&c->lock, RP_FOREVER, 0, NULL);
    int s = c->state;
    rp_lock_release(&c->lock);
    return s;
}

int rp_workerctl_exit_code(const rp_workerctl *c) {
    return atomic_load_explicit(&c->exit_code, memory_order_acquire);
}

void rp_workerctl_set_exit_code(rp_workerctl *c, int code) {
    atomic_store_explicit(&c->exit_code, code, memory_order_release);
}

int64_t rp_workerctl_swap_error(rp_workerctl *c, int64_t token_id) {
    return atomic_exchange_explicit(&c->error_id, token_id, memory_order_acq_rel);
}

int rp_workerctl_enter(rp_workerctl *c, void *interp, unsigned long ident) {
    rp_lock_acquire(&c->lock, RP_FOREVER, 0, NULL);
    if (c->state == RP_W_STARTING && !rp_cancel_fired(&c->cancel)) {
        c->state = RP_W_RUNNING;
        c->interp = interp;
        c->ident = ident;
    }
    int ok = c->state == RP_W_RUNNING;
    if (!ok) c->state = RP_W_DONE;
    rp_lock_release(&c->lock);
    if (ok) rp_thread_set_cancel(&c->cancel);
    return ok;
}

int rp_workerctl_leave(rp_workerctl *c) {
    rp_lock_acquire(&c->lock, RP_FOREVER, 0, NULL);
    int was_running = c->state == RP_W_RUNNING;
    c->state = RP_W_DONE;
    c->interp = NULL;
    rp_lock_release(&c->lock);
    rp_thread_set_cancel(NULL);
    return was_running;
}

int rp_workerctl_terminate(rp_workerctl *c, rp_workerctl_fn fn, void *arg) {
    int called = 0;
    rp_cancel_fire(&c->cancel);
    rp_lock_acquire(&c->lock, RP_FOREVER, 0, NULL);
    if (c->state == RP_W_RUNNING) {
        fn(c->interp, c->ident, arg);
        called = 1;
    }
    rp_lock_release(&c->lock);
    return called;
}

static atomic_llong rp_thread_ids; /* process-wide on purpose: ids are unique across interpreters */

int64_t rp_next_thread_id(void) {
    return (int64_t)atomic_fetch_add_explicit(&rp_thread_ids, 1, memory_order_relaxed) + 1;
}
