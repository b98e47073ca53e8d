/* rp_registry.h - process-wide handles: an id names a shared C object, never its address.
 *
 * Anything that must be named by plain data (a Python int handed to a new thread, interpolated
 * into the source a subinterpreter runs, later sent to another process) is registered here and
 * named by its id.  Ids come from a 64-bit counter and are never reused, so a stale id finds
 * nothing instead of somebody else's object; a lookup checks the kind as well, so an id of one
 * kind never yields an object of another.  Every failure is an error code, never a crash.
 *
 * An entry holds one reference to its object (given at rp_registry_add) and counts its own
 * references (rp_registry_incref/decref, as CPython's _interpqueues binds and releases queue
 * ids); when that count reaches zero the entry goes and drops the object's reference.
 * Lookups (rp_registry_get) give the caller a reference of the object's own.
 *
 * Plain C11: <stdatomic.h> and OS calls only, no Python headers.
 */
#ifndef RP_REGISTRY_H
#define RP_REGISTRY_H

#include <stdint.h>

#include "rp_wait.h" /* the return codes, RP_ENOENT among them */

#ifdef __cplusplus
extern "C" {
#endif

/* What an id names.  A kind supplies the reference counting of its objects. */
enum {
    RP_REG_TOKEN = 1,  /* an exported message (rp_node): taken exactly once, or dropped */
    RP_REG_WORKER = 2, /* a worker control block (rp_workerctl) */
    RP_REG_NKINDS
};

/* How the registry references objects of one kind.  incref may be NULL (the entry's reference
 * is then the only one, and rp_registry_get refuses: use rp_registry_take). */
typedef struct rp_reg_ops {
    void (*incref)(void *obj);
    void (*decref)(void *obj);
} rp_reg_ops;

/* Register obj, taking over one reference to it; the entry starts with one reference.
 * Returns the id (> 0), or RP_ENOMEM / RP_EINVAL (the object's reference is then still the
 * caller's). */
int64_t rp_registry_add(int kind, const rp_reg_ops *ops, void *obj);
/* One more / one fewer reference to the entry.  RP_OK or RP_ENOENT. */
int rp_registry_incref(int64_t id, int kind);
int rp_registry_decref(int64_t id, int kind);
/* The object, with a new reference of the object's own (ops->incref).  RP_OK or RP_ENOENT
 * (also for a kind that cannot be shared: no incref). */
int rp_registry_get(int64_t id, int kind, void **out);
/* Remove the entry whatever its count and hand its object reference to the caller (a token
 * is consumed this way, exactly once).  RP_OK or RP_ENOENT. */
int rp_registry_take(int64_t id, int kind, void **out);
/* Is there an entry with that id and kind now?  (A hint: it may go right after.) */
int rp_registry_contains(int64_t id, int kind);
/* Live entries (for tests that check nothing leaks). */
int64_t rp_registry_count(void);

#ifdef __cplusplus
}
#endif
#endif /* RP_REGISTRY_H */
