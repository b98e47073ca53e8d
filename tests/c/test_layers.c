/* C-level tests of the layers around channels: the id registry, wait sets, worker control
 * blocks and the BroadcastChannel registry.  Built by run.sh like test_channel.c. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rp_broadcast.h"
#include "rp_channel.h"
#include "rp_registry.h"
#include "rp_waitset.h"
#include "rp_workerctl.h"

#include "check.h"

/* ------------------------------------------------------------------ registry */

typedef struct {
    int refs;
} counted;
static void c_incref(void *p) { __atomic_add_fetch(&((counted *)p)->refs, 1, __ATOMIC_RELAXED); }
static void c_decref(void *p) { __atomic_sub_fetch(&((counted *)p)->refs, 1, __ATOMIC_RELAXED); }
static const rp_reg_ops counted_ops = {c_incref, c_decref};

static void test_registry_refs_and_kinds(void) {
    int64_t base = rp_registry_count();
    counted obj = {1}; /* the reference the registry takes over */
    CHECK(rp_registry_add(0, &counted_ops, &obj) == RP_EINVAL);
    CHECK(rp_registry_add(RP_REG_NKINDS, &counted_ops, &obj) == RP_EINVAL);
    CHECK(rp_registry_add(RP_REG_WORKER, NULL, &obj) == RP_EINVAL);
    int64_t id = rp_registry_add(RP_REG_WORKER, &counted_ops, &obj);
    CHECK(id > 0 && rp_registry_count() == base + 1);
    void *out = NULL;
    CHECK(rp_registry_get(id, RP_REG_TOKEN, &out) == RP_ENOENT); /* wrong kind */
    CHECK(rp_registry_contains(id, RP_REG_WORKER) && !rp_registry_contains(id, RP_REG_TOKEN));
    CHECK(rp_registry_get(id, RP_REG_WORKER, &out) == RP_OK && out == &obj && obj.refs == 2);
    c_decref(&obj);
    CHECK(rp_registry_incref(id, RP_REG_WORKER) == RP_OK);
    CHECK(rp_registry_incref(id, RP_REG_TOKEN) == RP_ENOENT);
    CHECK(rp_registry_decref(id, RP_REG_WORKER) == RP_OK && obj.refs == 1); /* entry stays */
    CHECK(rp_registry_contains(id, RP_REG_WORKER));
    CHECK(rp_registry_decref(id, RP_REG_WORKER) == RP_OK && obj.refs == 0); /* entry goes */
    CHECK(rp_registry_decref(id, RP_REG_WORKER) == RP_ENOENT);
    CHECK(rp_registry_get(id, RP_REG_WORKER, &out) == RP_ENOENT);
    CHECK(rp_registry_count() == base);
}

/* Many threads add, look up and remove at once (ThreadSanitizer checks the locking); the table
 * grows past its first size on the way. */
enum { REG_THREADS = 4, REG_PER = 3000 };
static void *registry_churn(void *arg) {
    (void)arg;
    static counted objs[REG_THREADS][64];
    int64_t ids[64];
    int slot = (int)(intptr_t)arg;
    for (int round = 0; round < REG_PER / 64; round++) {
        for (int i = 0; i < 64; i++) {
            objs[slot][i].refs = 1;
            ids[i] = rp_registry_add(RP_REG_WORKER, &counted_ops, &objs[slot][i]);
            CHECK(ids[i] > 0);
        }
        for (int i = 0; i < 64; i++) {
            void *out;
            CHECK(rp_registry_get(ids[i], RP_REG_WORKER, &out) == RP_OK);
            CHECK(out == &objs[slot][i]);
            c_decref(out);
            CHECK(rp_registry_decref(ids[i], RP_REG_WORKER) == RP_OK);
            CHECK(rp_registry_get(ids[i], RP_REG_WORKER, &out) == RP_ENOENT);
        }
    }
    return NULL;
}

static void test_registry_threads(void) {
    int64_t base = rp_registry_count();
    pthread_t t[REG_THREADS];
    for (int i = 0; i < REG_THREADS; i++)
        pthread_create(&t[i], NULL, registry_churn, (void *)(intptr_t)i);
    for (int i = 0; i < REG_THREADS; i++) pthread_join(t[i], NULL);
    CHECK(rp_registry_count() == base);
}

/* ------------------------------------------------------------------ wait sets */

static void test_waitset_watches_a_channel(void) {
    rp_waitset *ws = rp_waitset_new(1);
    CHECK(ws);
    rp_channel *ch = rp_channel_new(1024, 0);
    unsigned seen = rp_waitset_seq(ws);
    rp_channel_watch(ch, 1, 0, ws); /* signalled once on attach */
    CHECK(rp_waitset_seq(ws) != seen);
    seen = rp_waitset_seq(ws);
    CHECK(rp_waitset_wait(ws, seen, rp_now_ns() + 1000000, 0, NULL) == RP_ETIMEDOUT);
    rp_waitset_arm(ws);
    unsigned char body[64] = {0};
    rp_msg *m = (rp_msg *)body;
    m->data_len = 8;
    CHECK(rp_channel_send(ch, 0, body, rp_msg_size(8, 0), RP_FOREVER, 0, NULL) == RP_OK);
    CHECK(rp_waitset_wait(ws, seen, RP_FOREVER, 0, NULL) == RP_OK); /* already moved on */
    CHECK(rp_waitset_seq(ws) != seen);
    rp_waitset_drain(ws);
    rp_channel_watch(ch, 1, 0, NULL);
    rp_channel_decref(ch, 0);
    rp_channel_decref(ch, 1);
    rp_waitset_decref(ws); /* the channel let go of its reference: this one frees it */
}

/* ------------------------------------------------------------------ worker control blocks */

static int calls;
static void on_terminate(void *interp, unsigned long ident, void *arg) {
    CHECK(interp == (void *)&calls && ident == 42 && arg == (void *)&calls);
    calls++;
}

static void test_workerctl_protocol(void) {
    rp_workerctl *c = rp_workerctl_new();
    CHECK(c);
    rp_workerctl *d = rp_workerctl_new();
    CHECK(rp_workerctl_thread_id(d) > rp_workerctl_thread_id(c)); /* never reused */
    rp_workerctl_decref(d);
    CHECK(rp_workerctl_state(c) == RP_W_STARTING && rp_workerctl_exit_code(c) == -1);
    /* while the worker runs, terminate() calls back under the lock with what enter recorded */
    CHECK(rp_workerctl_enter(c, &calls, 42) == 1);
    CHECK(rp_thread_cancel() == rp_workerctl_cancel(c));
    CHECK(rp_workerctl_state(c) == RP_W_RUNNING);
    CHECK(rp_workerctl_terminate(c, on_terminate, &calls) == 1 && calls == 1);
    CHECK(rp_workerctl_terminated(c));
    CHECK(rp_workerctl_leave(c) == 1);
    CHECK(rp_thread_cancel() == NULL);
    CHECK(rp_workerctl_state(c) == RP_W_DONE);
    CHECK(rp_workerctl_terminate(c, on_terminate, &calls) == 0 && calls == 1); /* ended */
    rp_workerctl_set_exit_code(c, 3);
    CHECK(rp_workerctl_exit_code(c) == 3);
    rp_workerctl_decref(c);

    /* terminated before it started: fires the token, calls nothing, and enter refuses */
    c = rp_workerctl_new();
    CHECK(rp_workerctl_terminate(c, on_terminate, &calls) == 0 && calls == 1);
    CHECK(rp_workerctl_enter(c, &calls, 42) == 0);
    CHECK(rp_workerctl_state(c) == RP_W_DONE && rp_thread_cancel() == NULL);
    rp_workerctl_decref(c);
}

static void test_workerctl_ids_and_error_report(void) {
    int64_t base = rp_registry_count();
    rp_workerctl *c = rp_workerctl_new();
    int64_t id = rp_workerctl_register(c);
    CHECK(id > 0);
    rp_workerctl *w = rp_workerctl_lookup(id); /* the worker's own reference */
    CHECK(w == c);
    CHECK(rp_workerctl_lookup(id + 1000) == NULL);
    /* an error report nobody collected goes with the block */
    rp_node *n = rp_node_alloc(rp_msg_size(0, 0));
    rp_msg *m = (rp_msg *)rp_node_body(n);
    memset(m, 0, sizeof *m);
    int64_t tok = rp_token_new(n);
    CHECK(rp_workerctl_swap_error(w, tok) == 0);
    CHECK(rp_registry_decref(id, RP_REG_WORKER) == RP_OK); /* the parent's id goes */
    CHECK(rp_workerctl_lookup(id) == NULL);                 /* stale from now on */
    rp_workerctl_decref(c);
    CHECK(rp_registry_contains(tok, RP_REG_TOKEN)); /* the worker still holds it */
    rp_workerctl_decref(w);
    CHECK(!rp_registry_contains(tok, RP_REG_TOKEN));
    CHECK(rp_registry_count() == base);
}

/* ------------------------------------------------------------------ BroadcastChannel registry */

static void test_broadcast_registry(void) {
    rp_channel *a = rp_channel_new(1024, 0), *b = rp_channel_new(1024, 0),
               *c = rp_channel_new(1024, 0);
    rp_bc_member *ma = rp_bc_join("news", 4, a);
    rp_bc_member *mb = rp_bc_join("news", 4, b);
    rp_bc_member *mc = rp_bc_join("newsx", 5, c);
    rp_channel *out[4];
    CHECK(rp_bc_peers(ma, out, 0) == 1); /* too little room: counted, not referenced */
    CHECK(rp_bc_peers(ma, out, 4) == 1 && out[0] == b);
    rp_channel_decref(out[0], 0);
    CHECK(rp_bc_peers(mc, out, 4) == 0);
    rp_bc_leave(mb); /* drops b's side-0 reference: b closes */
    CHECK(rp_channel_closed(b));
    CHECK(rp_bc_peers(ma, out, 4) == 0);
    rp_bc_leave(ma);
    rp_bc_leave(mc);
    rp_channel_decref(a, 1);
    rp_channel_decref(b, 1);
    rp_channel_decref(c, 1);
}

int main(void) {
    test_registry_refs_and_kinds();
    test_registry_threads();
    test_waitset_watches_a_channel();
    test_workerctl_protocol();
    test_workerctl_ids_and_error_report();
    test_broadcast_registry();
    printf("layer tests: 6 passed, 0 failed\n");
    return 0;
}
