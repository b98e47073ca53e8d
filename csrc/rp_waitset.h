/* rp_waitset.h - sleep until any of many queues has something.
 *
 * Below the channels: a channel signals the wait sets that watch it (rp_channel_watch in
 * rp_channel.h); a wait set knows nothing of channels.
 *
 * Plain C11: <stdatomic.h> and OS calls only, no Python headers.
 */
#ifndef RP_WAITSET_H
#define RP_WAITSET_H

#include <stdint.h>

#include "rp_wait.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A wait set lets one thread sleep until any of many queues has something: each watched queue
 * holds a reference to the set and signals it after a post or a close (rp_channel_watch).
 * Signalling bumps a sequence word and makes a system call only when the owner says it sleeps
 * (sleepers > 0), or, for an asyncio loop, writes its eventfd/pipe only when the owner armed it,
 * so a busy stream costs one atomic increment per message and at most one fd write per batch.
 * Reference counted, allocated with malloc: queues of any interpreter may point at it. */
typedef struct rp_waitset rp_waitset;

/* with_fd: also own an eventfd (a pipe where there is none) for event loops to watch. */
rp_waitset *rp_waitset_new(int with_fd);
void rp_waitset_incref(rp_waitset *ws);
void rp_waitset_decref(rp_waitset *ws);
void rp_waitset_signal(rp_waitset *ws);
unsigned rp_waitset_seq(rp_waitset *ws);
/* Sleep while the sequence still equals seen (see rp_sleep_on for deadline, slice, cancel). */
int rp_waitset_wait(rp_waitset *ws, unsigned seen, int64_t deadline_ns, int64_t slice_ns,
                    rp_cancel *cancel);
/* The fd to watch for reading (-1 without one); arm() asks for one write on the next signal;
 * drain() consumes what was written. */
int rp_waitset_fd(rp_waitset *ws);
void rp_waitset_arm(rp_waitset *ws);
void rp_waitset_drain(rp_waitset *ws);

#ifdef __cplusplus
}
#endif
#endif /* RP_WAITSET_H */
