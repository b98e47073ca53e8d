# Declarations of the plain C layer (csrc/).  Every call that can block is nogil.
from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from "rp_wait.h" nogil:
    enum:
        RP_OK
        RP_EAGAIN
        RP_ETIMEDOUT
        RP_EINTR
        RP_ECLOSED
        RP_ENOMEM
        RP_ECANCELED
        RP_EINVAL
        RP_EFULL
        RP_ENOTEQUAL
        RP_ENOENT
    int64_t RP_FOREVER
    int64_t RP_NS_PER_SEC
    ctypedef struct rp_cancel:
        pass
    int64_t rp_now_ns()
    int64_t rp_deadline_after(int64_t timeout_ns)
    void rp_cancel_init(rp_cancel *c)
    void rp_cancel_fire(rp_cancel *c)
    int rp_cancel_fired(const rp_cancel *c)
    rp_cancel *rp_thread_cancel()
    void rp_thread_set_cancel(rp_cancel *c)
    int rp_ncpu()
    void rp_cpu_relax()

cdef extern from "rp_registry.h" nogil:
    int rp_registry_decref(int64_t id, int kind)
    int rp_registry_contains(int64_t id, int kind)
    int64_t rp_registry_count()
    enum:
        RP_REG_TOKEN
        RP_REG_WORKER

cdef extern from "rp_ring.h" nogil:
    ctypedef struct rp_ring:
        pass
    uint64_t RP_RING_MIN_CAPACITY
    uint64_t RP_RING_MAX_CAPACITY

cdef extern from "rp_waitset.h" nogil:
    ctypedef struct rp_waitset:
        pass
    rp_waitset *rp_waitset_new(int with_fd)
    void rp_waitset_incref(rp_waitset *ws)
    void rp_waitset_decref(rp_waitset *ws)
    void rp_waitset_signal(rp_waitset *ws)
    unsigned rp_waitset_seq(rp_waitset *ws)
    int rp_waitset_wait(rp_waitset *ws, unsigned seen, int64_t deadline_ns, int64_t slice_ns,
                        rp_cancel *cancel)
    int rp_waitset_fd(rp_waitset *ws)
    void rp_waitset_arm(rp_waitset *ws)
    void rp_waitset_drain(rp_waitset *ws)

cdef extern from "rp_channel.h" nogil:
    ctypedef void (*rp_release_fn)(void *ptr, uint64_t aux) noexcept nogil
    ctypedef struct rp_handle:
        rp_release_fn release
        void *ptr
        uint64_t aux
        uint32_t kind
        uint32_t reserved
    enum:
        RP_H_BLOCK
        RP_H_PORT
        RP_H_SAB
        RP_H_XSAB
        RP_H_XPORT
        RP_H_XARENA
        RP_MSG_CODE
    ctypedef struct rp_msg:
        uint32_t nhandles
        uint32_t flags
        uint64_t data_len
    size_t rp_align8(size_t n)
    unsigned char *rp_msg_data(rp_msg *m)
    rp_handle *rp_msg_handles(rp_msg *m)
    size_t rp_msg_size(uint64_t data_len, uint32_t nhandles)
    int rp_msg_valid(const rp_msg *m, size_t length)
    void rp_msg_release_handles(rp_msg *m)

    ctypedef struct rp_node:
        pass
    rp_node *rp_node_alloc(size_t body_len)
    rp_node *rp_node_realloc(rp_node *n, size_t body_len)
    void *rp_node_body(rp_node *n)
    size_t rp_node_len(const rp_node *n)
    void rp_node_set_len(rp_node *n, size_t body_len)
    void rp_node_free(rp_node *n)
    void rp_block_release(void *ptr, uint64_t aux)
    int64_t rp_token_new(rp_node *n)
    int rp_token_take(int64_t id, rp_node **out)
    int rp_token_drop(int64_t id)

    ctypedef struct rp_channel:
        pass
    rp_channel *rp_channel_new(uint64_t capacity, int64_t max_pending)
    void rp_channel_incref(rp_channel *ch, int side)
    void rp_channel_decref(rp_channel *ch, int side)
    void rp_port_release(void *ch, uint64_t side)
    uint64_t rp_channel_capacity(const rp_channel *ch)
    int64_t rp_channel_max_pending(const rp_channel *ch)
    int64_t rp_channel_pending_bytes(rp_channel *ch, int side)
    void rp_channel_close(rp_channel *ch)
    void rp_channel_discard(rp_channel *ch, int side)
    void rp_channel_signal(rp_channel *ch, int side)
    int rp_channel_closed(rp_channel *ch)
    int rp_channel_send(rp_channel *ch, int side, const void *body, size_t length,
                        int64_t deadline_ns, int64_t slice_ns, rp_cancel *cancel)
    int rp_channel_send_node(rp_channel *ch, int side, rp_node *node, int64_t deadline_ns,
                             int64_t slice_ns, rp_cancel *cancel)
    ctypedef struct rp_recv:
        rp_msg *msg
        size_t len
        rp_node *node
        int remote
        int room_owed
        size_t done_bytes
    int rp_channel_recv_begin(rp_channel *ch, int side, rp_recv *out, int64_t deadline_ns,
                              int64_t slice_ns, rp_cancel *cancel)
    int rp_channel_try_recv(rp_channel *ch, int side, rp_recv *out)
    void rp_channel_recv_end(rp_channel *ch, int side, rp_recv *r)
    int rp_channel_recv_next(rp_channel *ch, int side, rp_recv *r)
    int rp_channel_send_batch(rp_channel *ch, int side, const unsigned char *bodies,
                              const size_t *lens, size_t n, size_t *sent, int64_t deadline_ns,
                              int64_t slice_ns, rp_cancel *cancel)
    int rp_channel_poll(rp_channel *ch, int side)
    void rp_channel_watch(rp_channel *ch, int side, int slot, rp_waitset *ws)
    rp_channel *rp_channel_new_shared(uint64_t capacity, int64_t max_pending, int *fd_out,
                                      int *sock_out)
    rp_channel *rp_channel_attach_shared(int fd, int sock, uint64_t capacity, int64_t max_pending,
                                         int side)
    int rp_channel_shared(const rp_channel *ch)
    void rp_channel_set_unshared(rp_channel *ch)
    int rp_channel_unshared(rp_channel *ch)
    int rp_channel_local_side(const rp_channel *ch)
    ctypedef struct rp_xmap:
        pass
    int64_t rp_channel_arena_alloc(rp_channel *ch, int side, uint64_t n, void **data)
    rp_xmap *rp_channel_arena_xmap(rp_channel *ch)
    void *rp_xmap_view(rp_xmap *m, int side, uint64_t off, uint64_t n)
    void rp_xmap_incref(rp_xmap *m)
    void rp_xmap_decref(rp_xmap *m)
    void rp_xmap_free(rp_xmap *m, int side, uint64_t off)
    enum:
        RP_XFD_MAX
        RP_XFD_META
    ctypedef struct rp_xfd:
        int fds[2]
        int nfds
        size_t len
        unsigned char meta[64]
    uint64_t rp_channel_new_ticket()
    int rp_channel_send_x(rp_channel *ch, int side, const void *body, size_t len, rp_node *node,
                          const rp_xfd *xfds, int nx, int64_t deadline_ns, int64_t slice_ns,
                          rp_cancel *cancel)
    int rp_channel_send_sg(rp_channel *ch, int side, const void *head, size_t head_len,
                           const void *data, size_t data_len, const void *tail, size_t tail_len,
                           const rp_xfd *xfds, int nx, int64_t deadline_ns, int64_t slice_ns,
                           rp_cancel *cancel)
    int rp_channel_take_fds(rp_channel *ch, uint64_t ticket, rp_xfd *out)
    int rp_channel_export(rp_channel *ch, int *memfd, int *sock)
    void rp_channel_detach(rp_channel *ch, int side)
    int rp_channel_flush_all(int64_t deadline_ns)

cdef extern from "rp_shm.h" nogil:
    ctypedef struct rp_sab:
        pass
    rp_sab *rp_sab_new(size_t length, size_t max_length, int growable)
    void rp_sab_incref(rp_sab *s)
    void rp_sab_decref(rp_sab *s)
    void rp_sab_release(void *s, uint64_t aux)
    void *rp_sab_data(const rp_sab *s)
    size_t rp_sab_length(const rp_sab *s)
    size_t rp_sab_max_length(const rp_sab *s)
    int rp_sab_growable(const rp_sab *s)
    int rp_sab_grow(rp_sab *s, size_t new_length)
    void *rp_warm_alloc(size_t n)
    void rp_warm_free(void *p)
    int rp_sab_fd(const rp_sab *s)
    rp_sab *rp_sab_from_fd(int fd, size_t max_length, int growable)

cdef extern from "rp_elem.h" nogil:
    enum:
        RP_T_I8
        RP_T_U8
        RP_T_I16
        RP_T_U16
        RP_T_I32
        RP_T_U32
        RP_T_I64
        RP_T_U64
        RP_T_F32
        RP_T_F64
        RP_T_COUNT
    enum:
        RP_OP_LOAD
        RP_OP_STORE
        RP_OP_ADD
        RP_OP_SUB
        RP_OP_AND
        RP_OP_OR
        RP_OP_XOR
        RP_OP_XCHG
    ctypedef union rp_val:
        int64_t i
        uint64_t u
        double d
    int rp_elem_size(int t)
    bint rp_elem_is_float(int t)
    bint rp_elem_is_signed(int t)
    rp_val rp_elem_rmw(int t, int op, void *p, rp_val v)
    rp_val rp_elem_cas(int t, void *p, rp_val e, rp_val d)
    rp_val rp_elem_get(int t, const void *p)
    void rp_elem_set(int t, void *p, rp_val v)
    bint rp_is_lock_free(int size)

cdef extern from "rp_park.h" nogil:
    enum:
        RP_PARK_XCELLS
    ctypedef struct rp_waiter:
        pass
    void rp_waiter_init(rp_waiter *w, int fd)
    int rp_park_enqueue(rp_waiter *w, void *addr, int size, uint64_t expected)
    int rp_park_wait(rp_waiter *w, int64_t deadline_ns, int64_t slice_ns, rp_cancel *cancel)
    bint rp_park_woken(rp_waiter *w)
    bint rp_park_leave(rp_waiter *w)
    int64_t rp_park_notify(void *addr, int64_t count)
    int64_t rp_park_waiters(void *addr)
    int rp_park_fd_open(int *rfd, int *wfd)
    void rp_park_fd_close(int rfd, int wfd)
    const void *rp_park_capi()

cdef extern from "rp_workerctl.h" nogil:
    enum:
        RP_W_STARTING
        RP_W_RUNNING
        RP_W_DONE
    ctypedef struct rp_workerctl:
        pass
    rp_workerctl *rp_workerctl_new()
    void rp_workerctl_incref(rp_workerctl *c)
    void rp_workerctl_decref(rp_workerctl *c)
    int64_t rp_workerctl_register(rp_workerctl *c)
    rp_workerctl *rp_workerctl_lookup(int64_t id)
    int64_t rp_workerctl_thread_id(const rp_workerctl *c)
    rp_cancel *rp_workerctl_cancel(rp_workerctl *c)
    int rp_workerctl_terminated(const rp_workerctl *c)
    int rp_workerctl_state(rp_workerctl *c)
    int rp_workerctl_exit_code(const rp_workerctl *c)
    void rp_workerctl_set_exit_code(rp_workerctl *c, int code)
    int64_t rp_workerctl_swap_error(rp_workerctl *c, int64_t token_id)
    int64_t rp_next_thread_id()

cdef extern from "rp_broadcast.h" nogil:
    ctypedef struct rp_bc_member:
        pass
    rp_bc_member *rp_bc_join(const char *name, size_t length, rp_channel *ch)
    void rp_bc_leave(rp_bc_member *m)
    int rp_bc_peers(rp_bc_member *self, rp_channel **out, int cap)
    void rp_bc_bridges_add(int delta)
    int rp_bc_bridges()
    int rp_bc_named(const char *name, size_t len, const rp_bc_member *self, rp_channel **out,
                    int cap)


cdef extern from "fcntl.h" nogil:
    int fcntl(int fd, int cmd, ...)
    int F_DUPFD_CLOEXEC

cdef extern from "unistd.h" nogil:
    int close(int fd)
