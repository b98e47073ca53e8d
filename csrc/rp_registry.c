/* rp_registry.c - see rp_registry.h.  The table is process-wide on purpose (interpreters of one
 * process must resolve each other's ids); it holds C objects only, never Python ones.  A chained
 * hash table keyed by id, under one lock held only for the lookup and the reference update,
 * never while an object is freed. */
#include "rp_registry.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "rp_wait.h"

typedef struct rp_reg_entry {
    struct rp_reg_entry *next;
    int64_t id;
    int kind;
    int64_t refs;
    const rp_reg_ops *ops;
    void *obj;
} rp_reg_entry;

static rp_lock reg_lock;
static rp_reg_entry **reg_buckets; /* nbuckets of them, a power of two; NULL until first add */
static size_t reg_nbuckets;
static int64_t reg_count;
static int64_t reg_last_id; /* under reg_lock; 64 bits: never wraps in practice */

static size_t bucket_of(int64_t id, size_t n) {
    uint64_t h = (uint64_t)id * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 32) & (n - 1);
}

/* With the lock held: make room for one more entry.  Returns 0 on allocation failure. */
static int grow_if_needed(void) {
    if (reg_buckets && (size_t)reg_count < reg_nbuckets * 2) return 1;
    size_t n = reg_nbuckets ? reg_nbuckets * 2 : 64;
    rp_reg_entry **b = (rp_reg_entry **)calloc(n, sizeof *b);
    if (!b) return reg_buckets != NULL; /* a full table still works, only slower */
    for (size_t i = 0; i < reg_nbuckets; i++) {
        rp_reg_entry *e = reg_buckets[i];
        while (e) {
            rp_reg_entry *next = e->next;
            size_t k = bucket_of(e->id, n);
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    free(reg_buckets);
    reg_buckets = b;
    reg_nbuckets = n;
    return 1;
}

/* With the lock held: the link that points at the entry (id, kind), or NULL. */
static rp_reg_entry **find(int64_t id, int kind) {
    if (!reg_buckets || id <= 0) return NULL;
    rp_reg_entry **link = &reg_buckets[bucket_of(id, reg_nbuckets)];
    for (; *link; link = &(*link)->next)
        if ((*link)->id == id) return (*link)->kind == kind ? link : NULL;
    return NULL;
}

static void lock(void) { rp_lock_acquire(&reg_lock, RP_FOREVER, 0, NULL); }
static void unlock(void) { rp_lock_release(&reg_lock); }

int64_t rp_registry_add(int kind, const rp_reg_ops *ops, void *obj) {
    if (kind <= 0 || kind >= RP_REG_NKINDS || !ops || !ops->decref || !obj) return RP_EINVAL;
    rp_reg_entry *e = (rp_reg_entry *)malloc(sizeof *e);
    if (!e) return RP_ENOMEM;
    e->kind = kind;
    e->refs = 1;
    e->ops = ops;
    e->obj = obj;
    lock();
    if (!grow_if_needed()) {
        unlock();
        free(e);
        return RP_ENOMEM;
    }
    e->id = ++reg_last_id;
    size_t k = bucket_of(e->id, reg_nbuckets);
    e->next = reg_buckets[k];
    reg_buckets[k] = e;
    reg_count++;
    unlock();
    return e->id;
}

int rp_registry_incref(int64_t id, int kind) {
    lock();
    rp_reg_entry **link = find(id, kind);
    if (link) (*link)->refs++;
    unlock();
    return link ? RP_OK : RP_ENOENT;
}

/* With the lock held: unlink the entry at link (the caller frees it). */
static rp_reg_entry *unlink_at(rp_reg_entry **link) {
    rp_reg_entry *e = *link;
    *link = e->next;
    reg_count--;
    return e;
}

int rp_registry_decref(int64_t id, int kind) {
    rp_reg_entry *gone = NULL;
    lock();
    rp_reg_entry **link = find(id, kind);
    if (link && --(*link)->refs == 0) gone = unlink_at(link);
    unlock();
    if (!link) return RP_ENOENT;
    if (gone) {
        /* outside the lock: dropping the object may use the registry again */
        gone->ops->decref(gone->obj);
        free(gone);
    }
    return RP_OK;
}

int rp_registry_get(int64_t id, int kind, void **out) {
    lock();
    rp_reg_entry **link = find(id, kind);
    int ok = link && (*link)->ops->incref;
    if (ok) {
        /* under the lock: the entry's own reference keeps the object alive meanwhile */
        (*link)->ops->incref((*link)->obj);
        *out = (*link)->obj;
    }
    unlock();
    return ok ? RP_OK : RP_ENOENT;
}

int rp_registry_take(int64_t id, int kind, void **out) {
    lock();
    rp_reg_entry **link = find(id, kind);
    rp_reg_entry *e = link ? unlink_at(link) : NULL;
    unlock();
    if (!e) return RP_ENOENT;
    *out = e->obj;
    free(e);
    return RP_OK;
}

int rp_registry_contains(int64_t id, int kind) {
    lock();
    int found = find(id, kind) != NULL;
    unlock();
    return found;
}

int64_t rp_registry_count(void) {
    lock();
    int64_t n = reg_count;
    unlock();
    return n;
}
