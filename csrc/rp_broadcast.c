/* rp_broadcast.c - see rp_broadcast.h.  The registry is process-wide on purpose: members of
 * any interpreter must find each other by name.  It holds no interpreter objects. */
#include "rp_broadcast.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rp_wait.h"

struct rp_bc_member {
    rp_bc_member *prev, *next;
    rp_channel *ch;
    size_t len;
    char name[];
};

/* Process-wide on purpose: members of every interpreter must find each other.  The lock is held
 * only to link, unlink and collect references, never while a message is encoded or sent. */
static rp_lock rp_bc_lock;
static rp_bc_member *rp_bc_head;

rp_bc_member *rp_bc_join(const char *name, size_t len, rp_channel *ch) {
    rp_bc_member *m = (rp_bc_member *)malloc(sizeof *m + len + 1);
    if (!m) return NULL;
    memcpy(m->name, name, len);
    m->name[len] = '\0';
    m->len = len;
    m->ch = ch;
    m->prev = NULL;
    rp_lock_acquire(&rp_bc_lock, RP_FOREVER, 0, NULL);
    m->next = rp_bc_head;
    if (rp_bc_head) rp_bc_head->prev = m;
    rp_bc_head = m;
    rp_lock_release(&rp_bc_lock);
    return m;
}

void rp_bc_leave(rp_bc_member *m) {
    rp_lock_acquire(&rp_bc_lock, RP_FOREVER, 0, NULL);
    if (m->prev) m->prev->next = m->next;
    else rp_bc_head = m->next;
    if (m->next) m->next->prev = m->prev;
    rp_lock_release(&rp_bc_lock);
    rp_channel_decref(m->ch, 0);
    free(m);
}

static atomic_int rp_bc_nbridges;

void rp_bc_bridges_add(int delta) {
    atomic_fetch_add_explicit(&rp_bc_nbridges, delta, memory_order_acq_rel);
}

int rp_bc_bridges(void) { return atomic_load_explicit(&rp_bc_nbridges, memory_order_acquire); }

int rp_bc_peers(rp_bc_member *self, rp_channel **out, int cap) {
    return rp_bc_named(self->name, self->len, self, out, cap);
}

int rp_bc_named(const char *name, size_t len, const rp_bc_member *self, rp_channel **out,
                int cap) {
    int n = 0;
    rp_lock_acquire(&rp_bc_lock, RP_FOREVER, 0, NULL);
    for (rp_bc_member *m = rp_bc_head; m; m = m->next)
        if (m != self && m->len == len && memcmp(m->name, name, len) == 0) n++;
    if (n <= cap) {
        int i = 0;
        for (rp_bc_member *m = rp_bc_head; m; m = m->next) {
            if (m != self && m->len == len && memcmp(m->name, name, len) == 0) {
                rp_channel_incref(m->ch, 0);
                out[i++] = m->ch;
            }
        }
    }
    rp_lock_release(&rp_bc_lock);
    return n;
}
