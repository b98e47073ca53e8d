/* rp_shm.c - see rp_shm.h. */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include "rp_shm.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rp_wait.h"

#if !defined(_WIN32)
#include <sys/mman.h>
#include <unistd.h>
#define RP_SHM_MMAP 1
#endif
#if defined(__linux__)
#include <fcntl.h>
#include <sys/stat.h>
#if defined(MFD_CLOEXEC) && defined(MFD_ALLOW_SEALING) && defined(F_SEAL_SHRINK)
#define RP_SHM_MEMFD 1
#endif
#endif

/* The memfd's name: rp_sab_from_fd checks it (in /proc/self/fd) to refuse a descriptor that is
 * not a block's, such as another ringport memfd passed by mistake. */
#define RP_SHM_NAME "ringport-sab"

/* The start of a shareable block's mapping.  Shared with other processes: never trusted.
 * Nothing writes it at creation unless a growable block starts non-empty: touching the page
 * costs a page fault, a third of the cost of a small block. */
typedef struct rp_shm_hdr {
    _Atomic uint64_t length; /* growable blocks only */
    char pad[RP_SHM_LOT_OFFSET - sizeof(uint64_t)];
} rp_shm_hdr;
_Static_assert(sizeof(rp_shm_hdr) == RP_SHM_LOT_OFFSET, "the lot follows the header fields");

struct rp_sab {
    atomic_size_t refs;
    _Atomic uint64_t *length; /* grows only, with a CAS: &hdr->length, or &own_length */
    _Atomic uint64_t own_length;
    size_t max_length;
    int growable;
    int fd;            /* the memfd, or -1 for process-local memory */
    atomic_int exported; /* fd handed out (rp_sab_fd) or received: other processes may map it */
    void *data;
    void *map;         /* the mapping (header first when fd >= 0), NULL when calloc'ed */
    size_t mapped;     /* its size */
};

static size_t rp_page(void) {
#if RP_SHM_MMAP
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096u;
#else
    return 4096u;
#endif
}

/* ---------------------------------------------------------------- the registry
 * Which shareable block holds an address, for atomics.wait/notify (and the C API), which get
 * an address only.  Process-wide on purpose, like rp_park.c's lot: mappings are per process,
 * whichever interpreter made them.  A sorted array of data ranges under one lock: a lookup is a
 * binary search, an insertion a memmove. */
typedef struct rp_range {
    uintptr_t lo, hi; /* the data: [lo, hi) */
    rp_sab *s;
} rp_range;

static rp_lock rp_reg_lock;
static rp_range *rp_reg;
static size_t rp_reg_n, rp_reg_cap;

static void rp_reg_acquire(void) {
    while (rp_lock_acquire(&rp_reg_lock, RP_FOREVER, 0, NULL) != RP_OK) {
    }
}

/* The first index whose lo is > addr. */
static size_t rp_reg_upper(uintptr_t addr) {
    size_t a = 0, b = rp_reg_n;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (rp_reg[m].lo <= addr) a = m + 1;
        else b = m;
    }
    return a;
}

static int rp_reg_add(rp_sab *s) {
    uintptr_t lo = (uintptr_t)s->data;
    size_t i;
    rp_reg_acquire();
    if (rp_reg_n == rp_reg_cap) {
        size_t cap = rp_reg_cap ? 2 * rp_reg_cap : 64;
        rp_range *r = (rp_range *)realloc(rp_reg, cap * sizeof *r);
        if (r == NULL) {
            rp_lock_release(&rp_reg_lock);
            return RP_ENOMEM;
        }
        rp_reg = r;
        rp_reg_cap = cap;
    }
    i = rp_reg_upper(lo);
    memmove(&rp_reg[i + 1], &rp_reg[i], (rp_reg_n - i) * sizeof *rp_reg);
    rp_reg[i].lo = lo;
    rp_reg[i].hi = lo + s->max_length;
    rp_reg[i].s = s;
    rp_reg_n++;
    rp_lock_release(&rp_reg_lock);
    return RP_OK;
}

static void rp_reg_remove(rp_sab *s) {
    size_t i;
    rp_reg_acquire();
    i = rp_reg_upper((uintptr_t)s->data);
    /* ranges never overlap, but an empty one (max_length 0) may share lo with its neighbour */
    while (i > 0 && rp_reg[i - 1].s != s) i--;
    if (i > 0) {
        memmove(&rp_reg[i - 1], &rp_reg[i], (rp_reg_n - i) * sizeof *rp_reg);
        rp_reg_n--;
    }
    if (rp_reg_n == 0) {
        free(rp_reg);
        rp_reg = NULL;
        rp_reg_cap = 0;
    }
    rp_lock_release(&rp_reg_lock);
}

rp_sab *rp_sab_find(const void *addr, uint64_t *offset) {
    uintptr_t a = (uintptr_t)addr;
    rp_sab *s = NULL;
    size_t i;
    rp_reg_acquire();
    i = rp_reg_upper(a);
    if (i > 0 && a < rp_reg[i - 1].hi) {
        s = rp_reg[i - 1].s;
        *offset = (uint64_t)(a - rp_reg[i - 1].lo);
    }
    rp_lock_release(&rp_reg_lock);
    return s;
}

rp_shm_lot *rp_sab_lot(const rp_sab *s) {
    return s->fd >= 0 ? (rp_shm_lot *)((char *)s->map + RP_SHM_LOT_OFFSET) : NULL;
}

/* ---------------------------------------------------------------- shareable blocks */

#if RP_SHM_MEMFD
/* The mapping size for max_length bytes of data, or 0 on overflow. */
static size_t rp_shm_span(size_t max_length) {
    size_t pg = rp_page();
    if (max_length > SIZE_MAX - RP_SHM_HDR_BYTES - pg) return 0;
    return (RP_SHM_HDR_BYTES + max_length + pg - 1) / pg * pg;
}

/* Map fd's header + max_length bytes into s and register it.  RP_OK, or an errno value. */
static int rp_shm_map(rp_sab *s, int fd, size_t span) {
    void *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) return errno ? errno : ENOMEM;
    s->map = p;
    s->mapped = span;
    s->data = (char *)p + RP_SHM_HDR_BYTES;
    s->fd = fd;
    s->length = &((rp_shm_hdr *)p)->length;
    if (rp_reg_add(s) != RP_OK) {
        munmap(p, span);
        s->map = NULL;
        s->fd = -1;
        return ENOMEM;
    }
    return 0;
}

/* A fresh memfd block; 0 when memfd is not available (the caller falls back). */
static int rp_shm_create(rp_sab *s, size_t length) {
    size_t span = rp_shm_span(s->max_length);
    int fd;
    if (span == 0) return 0;
    fd = memfd_create(RP_SHM_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return 0; /* ENOSYS, EMFILE, ENFILE, EPERM (seccomp): process-local memory */
    /* sealed against shrinking, so no process can make another's accesses fault (SIGBUS) */
    if (ftruncate(fd, (off_t)span) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0 ||
        rp_shm_map(s, fd, span) != 0) {
        close(fd);
        return 0;
    }
    if (length != 0) atomic_store_explicit(s->length, (uint64_t)length, memory_order_release);
    return 1;
}
#endif

static rp_sab *rp_sab_alloc(size_t max_length, int growable) {
    rp_sab *s = (rp_sab *)malloc(sizeof *s);
    if (s == NULL) return NULL;
    s->max_length = max_length;
    s->growable = growable;
    s->fd = -1;
    s->data = NULL;
    s->map = NULL;
    s->mapped = 0;
    s->length = &s->own_length;
    atomic_init(&s->own_length, 0u);
    atomic_init(&s->refs, 1u);
    atomic_init(&s->exported, 0);
    return s;
}

#if RP_SHM_MEMFD
/* ---------------------------------------------------------------- recycling
 * A memfd block costs about 25 us to make and drop (memfd_create, ftruncate, mmap, the header's
 * page fault, munmap, close: system calls that are slow on a VM), against 0.3 us for calloc.
 * A small block that never left this process (its fd never handed out: nobody else can map it)
 * is zeroed and kept for the next block of the same mapping size instead: programs that make
 * and drop small buffers in a loop pay the system calls once.  Bounded: RP_SHM_CACHE_N blocks
 * of at most RP_SHM_CACHE_DATA bytes (so also that many descriptors).  Guarded by the registry's
 * lock.  A block inherited by a child of os.fork() is shared with it, so a forked child must
 * not keep SharedArrayBuffers of its parent that the parent drops (spawn, not fork). */
#define RP_SHM_CACHE_N 32
#define RP_SHM_CACHE_DATA 65536u

static rp_sab *rp_cache[RP_SHM_CACHE_N];
static int rp_cache_n;

/* A cached block for max_length bytes, zeroed, with one reference, unregistered; or NULL. */
static rp_sab *rp_cache_get(size_t max_length, int growable, size_t length) {
    size_t span;
    rp_sab *s = NULL;
    if (max_length > RP_SHM_CACHE_DATA) return NULL;
    span = rp_shm_span(max_length);
    rp_reg_acquire();
    for (int i = rp_cache_n - 1; i >= 0; i--) {
        if (rp_cache[i]->mapped == span) {
            s = rp_cache[i];
            rp_cache[i] = rp_cache[--rp_cache_n];
            break;
        }
    }
    rp_lock_release(&rp_reg_lock);
    if (s == NULL) return NULL;
    s->max_length = max_length;
    s->growable = growable;
    atomic_store_explicit(&s->refs, 1u, memory_order_relaxed);
    if (rp_reg_add(s) != RP_OK) {
        close(s->fd);
        munmap(s->map, s->mapped);
        free(s);
        return NULL;
    }
    atomic_store_explicit(s->length, (uint64_t)length, memory_order_release);
    return s;
}

/* Keep s (no references left, never exported) for reuse; 0 when the cache is full. */
static int rp_cache_put(rp_sab *s) {
    int kept = 0;
    if (s->max_length > RP_SHM_CACHE_DATA ||
        atomic_load_explicit(&s->exported, memory_order_acquire))
        return 0;
    rp_reg_remove(s);
    /* every byte below the length may have been written; none above it was handed out */
    memset(s->data, 0, rp_sab_length(s));
    atomic_store_explicit(s->length, 0u, memory_order_relaxed);
    rp_reg_acquire();
    if (rp_cache_n < RP_SHM_CACHE_N) {
        rp_cache[rp_cache_n++] = s;
        kept = 1;
    }
    rp_lock_release(&rp_reg_lock);
    if (!kept) {
        close(s->fd);
        munmap(s->map, s->mapped);
        free(s);
    }
    return 1;
}
#endif

rp_sab *rp_sab_new(size_t length, size_t max_length, int growable) {
    rp_sab *s;
    if (!growable) max_length = length;
    if (length > max_length) return NULL;
#if RP_SHM_MEMFD
    if ((s = rp_cache_get(max_length, growable, length)) != NULL) return s;
#endif
    s = rp_sab_alloc(max_length, growable);
    if (s == NULL) return NULL;
#if RP_SHM_MEMFD
    if (rp_shm_create(s, length)) {
        atomic_thread_fence(memory_order_release);
        return s;
    }
#endif
#if RP_SHM_MMAP
    if (growable) {
        size_t pg = rp_page();
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
        s->data = s->map = p;
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
    atomic_store_explicit(s->length, (uint64_t)length, memory_order_release);
    return s;
}

#if RP_SHM_MEMFD
/* Is fd a memfd made by rp_shm_create?  Its link reads "/memfd:ringport-sab (deleted)".  Without
 * /proc (a bare chroot) this cannot be told, and the other checks still keep every access
 * inside the file. */
static int rp_shm_named(int fd) {
    char path[64], name[64];
    static const char want[] = "/memfd:" RP_SHM_NAME " ";
    ssize_t n;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    n = readlink(path, name, sizeof name - 1);
    if (n < 0) return errno == ENOENT && access("/proc/self", F_OK) != 0;
    name[n] = 0;
    return strncmp(name, want, sizeof want - 1) == 0;
}
#endif

rp_sab *rp_sab_from_fd(int fd, size_t max_length, int growable) {
#if RP_SHM_MEMFD
    struct stat st;
    size_t span = rp_shm_span(max_length);
    int seals, e;
    rp_sab *s;
    if (fd < 0) {
        errno = EBADF;
        return NULL;
    }
    if (fstat(fd, &st) != 0) return NULL; /* EBADF */
    seals = fcntl(fd, F_GET_SEALS);
    if (!S_ISREG(st.st_mode) || span == 0 || st.st_size < 0 || !rp_shm_named(fd) ||
        (uint64_t)st.st_size < (uint64_t)RP_SHM_HDR_BYTES + max_length || seals < 0 ||
        !(seals & F_SEAL_SHRINK)) {
        errno = EINVAL;
        return NULL;
    }
    /* a file shorter than the page-rounded span still maps: only its last, partial page is
     * past the end, and that page reads as zeros */
    s = rp_sab_alloc(max_length, growable);
    if (s == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    e = rp_shm_map(s, fd, span);
    if (e != 0) {
        free(s);
        errno = e;
        return NULL;
    }
    atomic_store_explicit(&s->exported, 1, memory_order_relaxed); /* another process made it */
    return s;
#else
    (void)fd;
    (void)max_length;
    (void)growable;
    errno = EINVAL;
    return NULL;
#endif
}

void rp_sab_incref(rp_sab *s) { atomic_fetch_add_explicit(&s->refs, 1u, memory_order_relaxed); }

void rp_sab_decref(rp_sab *s) {
    if (atomic_fetch_sub_explicit(&s->refs, 1u, memory_order_acq_rel) != 1u) return;
#if RP_SHM_MMAP
    if (s->map != NULL) {
#if RP_SHM_MEMFD
        if (s->fd >= 0 && rp_cache_put(s)) return;
#endif
        if (s->fd >= 0) {
            rp_reg_remove(s);
            close(s->fd);
        }
        munmap(s->map, s->mapped);
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
    uint64_t n;
    if (!s->growable) return s->max_length;
    /* another process may have written anything into a shared header */
    n = atomic_load_explicit(s->length, memory_order_acquire);
    return n < (uint64_t)s->max_length ? (size_t)n : s->max_length;
}

size_t rp_sab_max_length(const rp_sab *s) { return s->max_length; }

int rp_sab_growable(const rp_sab *s) { return s->growable; }

int rp_sab_fd(const rp_sab *s) {
    /* from now on another process may map the block: never recycle it (rp_cache_put) */
    if (s->fd >= 0) atomic_store_explicit(&((rp_sab *)s)->exported, 1, memory_order_release);
    return s->fd;
}

int rp_sab_grow(rp_sab *s, size_t new_length) {
    uint64_t cur;
    if (!s->growable || new_length > s->max_length) return RP_EINVAL;
    cur = atomic_load_explicit(s->length, memory_order_acquire);
    do {
        if (new_length < cur) return RP_EINVAL;
        if (new_length == cur) return RP_OK;
    } while (!atomic_compare_exchange_weak_explicit(s->length, &cur, (uint64_t)new_length,
                                                    memory_order_acq_rel, memory_order_acquire));
    return RP_OK;
}

/* ---------------------------------------------------------------- warm blocks
 * Each block starts with a 16-byte header (its usable size, and whether it is a mapping), so
 * rp_warm_free needs only the pointer.  Kept mappings sit in a small array under one lock: a
 * lookup takes the smallest kept block that fits and wastes at most half of it. */
typedef struct rp_warm_hdr {
    uint64_t cap;    /* usable bytes after the header */
    uint64_t mapped; /* 1: an anonymous mapping of cap + header bytes; 0: malloc'ed */
} rp_warm_hdr;

static rp_lock rp_warm_lock;
static rp_warm_hdr *rp_warm_kept[RP_WARM_KEEP_N];
static int rp_warm_n;
static size_t rp_warm_bytes;

static void rp_warm_acquire(void) {
    while (rp_lock_acquire(&rp_warm_lock, RP_FOREVER, 0, NULL) != RP_OK) {
    }
}

static rp_warm_hdr *rp_warm_take(size_t cap) {
    rp_warm_hdr *h = NULL;
    int best = -1;
    rp_warm_acquire();
    for (int i = 0; i < rp_warm_n; i++) {
        uint64_t c = rp_warm_kept[i]->cap;
        if (c >= cap && c / 2u <= cap && (best < 0 || c < rp_warm_kept[best]->cap)) best = i;
    }
    if (best >= 0) {
        h = rp_warm_kept[best];
        rp_warm_kept[best] = rp_warm_kept[--rp_warm_n];
        rp_warm_bytes -= (size_t)h->cap;
    }
    rp_lock_release(&rp_warm_lock);
    return h;
}

void *rp_warm_alloc(size_t n) {
    rp_warm_hdr *h;
    if (n > SIZE_MAX / 2u) return NULL;
    if (n < RP_WARM_MIN) {
        h = (rp_warm_hdr *)malloc(sizeof(rp_warm_hdr) + n);
        if (!h) return NULL;
        h->cap = n;
        h->mapped = 0;
        return h + 1;
    }
#if RP_SHM_MMAP
    /* whole 64 KiB units, so that sizes that differ a little share kept blocks */
    size_t cap = ((n + sizeof(rp_warm_hdr) + RP_WARM_MIN - 1u) & ~(size_t)(RP_WARM_MIN - 1u)) -
                 sizeof(rp_warm_hdr);
    h = rp_warm_take(cap);
    if (h) return h + 1;
    void *m = mmap(NULL, cap + sizeof(rp_warm_hdr), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    h = (rp_warm_hdr *)m;
    h->cap = cap;
    h->mapped = 1;
    return h + 1;
#else
    h = (rp_warm_hdr *)malloc(sizeof(rp_warm_hdr) + n);
    if (!h) return NULL;
    h->cap = n;
    h->mapped = 0;
    return h + 1;
#endif
}

size_t rp_warm_cap(const void *p) { return (size_t)((const rp_warm_hdr *)p - 1)->cap; }

void rp_warm_free(void *p) {
    if (!p) return;
    rp_warm_hdr *h = (rp_warm_hdr *)p - 1;
    if (!h->mapped) {
        free(h);
        return;
    }
#if RP_SHM_MMAP
    int kept = 0;
    rp_warm_acquire();
    if (rp_warm_n < RP_WARM_KEEP_N && rp_warm_bytes + h->cap <= RP_WARM_KEEP_BYTES) {
        rp_warm_kept[rp_warm_n++] = h;
        rp_warm_bytes += (size_t)h->cap;
        kept = 1;
    }
    rp_lock_release(&rp_warm_lock);
    if (!kept) munmap(h, (size_t)h->cap + sizeof(rp_warm_hdr));
#endif
}

void *rp_warm_realloc(void *p, size_t n, size_t keep) {
    if (!p) return rp_warm_alloc(n);
    rp_warm_hdr *h = (rp_warm_hdr *)p - 1;
    if (n <= h->cap && (h->mapped || n < RP_WARM_MIN)) return p;
    if (!h->mapped && n < RP_WARM_MIN) {
        rp_warm_hdr *m = (rp_warm_hdr *)realloc(h, sizeof(rp_warm_hdr) + n);
        if (!m) return NULL;
        m->cap = n;
        return m + 1;
    }
    void *q = rp_warm_alloc(n);
    if (!q) return NULL;
    if (keep > h->cap) keep = (size_t)h->cap;
    if (keep > n) keep = n;
    memcpy(q, p, keep);
    rp_warm_free(p);
    return q;
}
