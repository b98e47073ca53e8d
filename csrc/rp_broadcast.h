/* rp_broadcast.h - the BroadcastChannel registry: members of every interpreter, by name.
 *
 * Plain C11: <stdatomic.h> and OS calls only, no Python headers.
 */
#ifndef RP_BROADCAST_H
#define RP_BROADCAST_H

#include <stddef.h>

#include "rp_channel.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Members of every interpreter, by name.  Each member receives on side 1 of its own channel;
 * the registry holds a side-0 reference to post into it. */
typedef struct rp_bc_member rp_bc_member;

/* Join name with ch (the registry takes over one side-0 reference of ch).  NULL: no memory. */
rp_bc_member *rp_bc_join(const char *name, size_t len, rp_channel *ch);
/* Leave (drops the side-0 reference).  Idempotent per member; frees the member. */
void rp_bc_leave(rp_bc_member *m);
/* The channels of the other members with self's name, each with a new side-0 reference, at most
 * cap of them written to out; returns how many there are (call again with more room if that is
 * above cap; nothing is referenced then). */
int rp_bc_peers(rp_bc_member *self, rp_channel **out, int cap);
/* Bridges to other processes (ringport._bcbridge) in this process, all interpreters: a post
 * looks for them only while there are some. */
void rp_bc_bridges_add(int delta);
int rp_bc_bridges(void);
/* The same for the members named name (self, if not NULL, left out): what came from another
 * process (see ringport._bcbridge) goes to every member here. */
int rp_bc_named(const char *name, size_t len, const rp_bc_member *self, rp_channel **out,
                int cap);

#ifdef __cplusplus
}
#endif
#endif /* RP_BROADCAST_H */
