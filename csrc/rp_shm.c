/* rp_shm.c - see rp_shm.h. */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "rp_shm.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rp_wait.h"

#if !defined(_WIN32)
#include <sys/mman.h>
#include <unistd.h>
#define RP_SHM_MMAP 1
#endif

struct rp_sab {
    atomic_size_t refs;
    atomic_size_t length; /* grows only, with a CAS: concurrent grows from any interpreter */
    size_t max_length;
    size_t mapped;        /* bytes mapped (growable blocks), 0 when calloc'ed */
    int growable;
    void *data;
};

rp_sab *rp_sab_new(size_t length, size_t max_length, int growable) {
    rp_sab *s;
    if (!growable) max_length = length;
    if (length > max_length) return NULL;
    s = (rp_sab *)malloc(sizeof *s);
    if (s == NULL) return NULL;
    s->max_length = max_length;
    s->growable = growable;
    s->mapped = 0;
    s->data = NULL;
#if RP_SHM_MMAP
    if (growable) {
        long page = sysconf(_SC_PAGESIZE);
        size_t pg = page > 0 ? (size_t)page : 4096u;
        size_t len = max_length == 0 ? pg : max_length;
        if (len > SIZE_MAX - pg) {
            free(s);
            return NULL;
        }
        len = (len + pg - 1) / pg * pg;
        /* reserve the maximum now: the OS backs pages on first touch, so an unused maximum
         * costs address space only */
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            free(s);
            return NULL;
        }
        s->data = p;
        s->mapped = len;
    }
#endif
    if (s->data == NULL) {
        /* calloc: zeroed, aligned for any type (>= 16 bytes on the platforms we build for) */
        s->data = calloc(max_length == 0 ? 1 : max_length, 1);
        if (s->data == NULL) {
            free(s);
            return NULL;
        }
    }
    atomic_init(&s->refs, 1u);
    atomic_init(&s->length, length);
    atomic_thread_fence(memory_order_release);
    return s;
}

void rp_sab_incref(rp_sab *s) { atomic_fetch_add_explicit(&s->refs, 1u, memory_order_relaxed); }

void rp_sab_decref(rp_sab *s) {
    if (atomic_fetch_sub_explicit(&s->refs, 1u, memory_order_acq_rel) != 1u) return;
#if RP_SHM_MMAP
    if (s->mapped) {
        munmap(s->data, s->mapped);
        free(s);
        return;
    }
#endif
    free(s->data);
    free(s);
}

void rp_sab_release(void *s, uint64_t aux) {
    (void)aux;
    rp_sab_decref((rp_sab *)s);
}

void *rp_sab_data(const rp_sab *s) { return s->data; }

size_t rp_sab_length(const rp_sab *s) {
    return atomic_load_explicit(&((rp_sab *)s)->length, memory_order_acquire);
}

size_t rp_sab_max_length(const rp_sab *s) { return s->max_length; }

int rp_sab_growable(const rp_sab *s) { return s->growable; }

int rp_sab_grow(rp_sab *s, size_t new_length) {
    size_t cur;
    if (!s->growable || new_length > s->max_length) return RP_EINVAL;
    cur = atomic_load_explicit(&s->length, memory_order_acquire);
    do {
        if (new_length < cur) return RP_EINVAL;
        if (new_length == cur) return RP_OK;
    } while (!atomic_compare_exchange_weak_explicit(&s->length, &cur, new_length,
                                                    memory_order_acq_rel, memory_order_acquire));
    return RP_OK;
}
