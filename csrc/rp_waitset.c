/* rp_waitset.c - see rp_waitset.h */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "rp_waitset.h"

#include <stdatomic.h>
#include <errno.h>
#include <stdlib.h>

#if defined(__linux__)
#include <sys/eventfd.h>
#include <unistd.h>
#define RP_HAVE_EVENTFD 1
#elif !defined(_WIN32)
#include <fcntl.h>
#include <unistd.h>
#define RP_HAVE_PIPE 1
#endif

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
