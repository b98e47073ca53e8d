/* rp_worker.c - see rp_worker.h.  Two pieces of process-wide state live here on purpose, shared by
 * every interpreter of the process: the thread id counter (ids must be unique across
 * interpreters) and the BroadcastChannel registry (members of any interpreter must find each
 * other by name).  Neither holds interpreter objects. */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "rp_worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
#include <sys/eventfd.h>
#include <unistd.h>
#define RP_HAVE_EVENTFD 1
#elif !defined(_WIN32)
#include <fcntl.h>
#include <unistd.h>
#define RP_HAVE_PIPE 1
#endif

/* ------------------------------------------------------------------ wait sets */

struct rp_waitset {
    atomic_uint seq;
    atomic_int sleepers;
    atomic_int refs;
    atomic_int armed;
    int rfd, wfd; /* read and write ends (the same eventfd on Linux); -1 without */
};

rp_waitset *rp_waitset_new(int with_fd) {
    rp_waitset *ws = (rp_waitset *)calloc(1, sizeof *ws);
    if (!ws) return NULL;
    atomic_init(&ws->seq, 0u);
    atomic_init(&ws->sleepers, 0);
    atomic_init(&ws->refs, 1);
    atomic_init(&ws->armed, 0);
    ws->rfd = ws->wfd = -1;
    if (with_fd) {
#if RP_HAVE_EVENTFD
        ws->rfd = ws->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (ws->rfd < 0) {
            free(ws);
            return NULL;
        }
#elif RP_HAVE_PIPE
        int p[2];
        if (pipe(p) != 0) {
            free(ws);
            return NULL;
        }
        for (int i = 0; i < 2; i++) {
            fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
            fcntl(p[i], F_SETFD, FD_CLOEXEC);
        }
        ws->rfd = p[0];
        ws->wfd = p[1];
#else
        free(ws);
        return NULL;
#endif
    }
    return ws;
}

void rp_waitset_incref(rp_waitset *ws) { atomic_fetch_add_explicit(&ws->refs, 1, memory_order_relaxed); }

void rp_waitset_decref(rp_waitset *ws) {
    if (atomic_fetch_sub_explicit(&ws->refs, 1, memory_order_acq_rel) != 1) return;
#if RP_HAVE_EVENTFD || RP_HAVE_PIPE
    if (ws->rfd >= 0) close(ws->rfd);
    if (ws->wfd >= 0 && ws->wfd != ws->rfd) close(ws->wfd);
#endif
    free(ws);
}

void rp_waitset_signal(rp_waitset *ws) {
    /* Dekker with rp_waitset_wait: we bump then look for sleepers, it counts itself then looks
     * at the sequence; one of the two sees the other. */
    atomic_fetch_add_explicit(&ws->seq, 1u, memory_order_seq_cst);
    if (atomic_load_explicit(&ws->sleepers, memory_order_seq_cst) > 0) rp_addr_wake(&ws->seq, -1);
#if RP_HAVE_EVENTFD || RP_HAVE_PIPE
    if (ws->wfd >= 0 && atomic_load_explicit(&ws->armed, memory_order_seq_cst) &&
        atomic_exchange_explicit(&ws->armed, 0, memory_order_seq_cst)) {
        uint64_t one = 1;
        ssize_t n;
        do {
            n = write(ws->wfd, &one, ws->wfd == ws->rfd ? sizeof one : 1);
        } while (n < 0 && errno == EINTR);
        (void)n; /* EAGAIN: the fd is already readable, which is all we want */
    }
#endif
}

unsigned rp_waitset_seq(rp_waitset *ws) { return atomic_load_explicit(&ws->seq, memory_order_seq_cst); }

int rp_waitset_wait(rp_waitset *ws, unsigned seen, int64_t deadline_ns, int64_t slice_ns,
                    rp_cancel *cancel) {
    int r = RP_OK;
    atomic_fetch_add_explicit(&ws->sleepers, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&ws->seq, memory_order_seq_cst) == seen)
        r = rp_sleep_on(&ws->seq, seen, deadline_ns, slice_ns, cancel);
    else if (rp_cancel_fired(cancel))
        r = RP_ECANCELED;
    atomic_fetch_sub_explicit(&ws->sleepers, 1, memory_order_relaxed);
    return r;
}

int rp_waitset_fd(rp_waitset *ws) { return ws->rfd; }

void rp_waitset_arm(rp_waitset *ws) { atomic_store_explicit(&ws->armed, 1, memory_order_seq_cst); }

void rp_waitset_drain(rp_waitset *ws) {
#if RP_HAVE_EVENTFD || RP_HAVE_PIPE
    unsigned char buf[64];
    if (ws->rfd < 0) return;
    while (read(ws->rfd, buf, ws->rfd == ws->wfd ? 8 : sizeof buf) > 0) {
    }
#else
    (void)ws;
#endif
}

/* ------------------------------------------------------------------ worker control blocks */

rp_worker_ctl *rp_worker_ctl_new(void) {
    rp_worker_ctl *c = (rp_worker_ctl *)calloc(1, sizeof *c);
    if (!c) return NULL;
    atomic_init(&c->refs, 1);
    rp_cancel_init(&c->cancel);
    rp_lock_init(&c->lock);
    c->state = RP_W_STARTING;
    c->interp = NULL;
    c->ident = 0;
    atomic_init(&c->exit_code, -1);
    atomic_init(&c->error_token, (uintptr_t)0);
    c->thread_id = 0;
    return c;
}

void rp_worker_ctl_incref(rp_worker_ctl *c) { atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed); }

void rp_worker_ctl_decref(rp_worker_ctl *c) {
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) free(c);
}

static atomic_llong rp_thread_ids; /* process-wide on purpose: ids are unique across interpreters */

int64_t rp_next_thread_id(void) {
    return (int64_t)atomic_fetch_add_explicit(&rp_thread_ids, 1, memory_order_relaxed) + 1;
}

/* ------------------------------------------------------------------ BroadcastChannel registry */

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

int rp_bc_peers(rp_bc_member *self, rp_channel **out, int cap) {
    int n = 0;
    rp_lock_acquire(&rp_bc_lock, RP_FOREVER, 0, NULL);
    for (rp_bc_member *m = rp_bc_head; m; m = m->next)
        if (m != self && m->len == self->len && memcmp(m->name, self->name, m->len) == 0) n++;
    if (n <= cap) {
        int i = 0;
        for (rp_bc_member *m = rp_bc_head; m; m = m->next) {
            if (m != self && m->len == self->len && memcmp(m->name, self->name, m->len) == 0) {
                rp_channel_incref(m->ch, 0);
                out[i++] = m->ch;
            }
        }
    }
    rp_lock_release(&rp_bc_lock);
    return n;
}
