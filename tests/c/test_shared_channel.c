/* C-level tests of channels shared with another process (rp_channel_new_shared): a forked
 * child attaches side 1 by the memfd and the two processes exchange messages, small and far
 * bigger than a record, in order and exactly, with waits on process-shared futexes.  Built by
 * run.sh like test_channel.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rp_channel.h"

#include "check.h"

#define CAP 4096u      /* a small ring: a 64 KiB message crosses in many fragments */
#define COUNT 20000
#define BIG (64u * 1024u + 24u)

static void post(rp_channel *ch, int side, uint64_t seq, size_t len) {
    size_t total = rp_msg_size(len, 0);
    unsigned char *buf = calloc(1, total);
    CHECK(buf);
    rp_msg *m = (rp_msg *)buf;
    m->data_len = len;
    for (size_t i = 0; i < len; i++) rp_msg_data(m)[i] = (unsigned char)(seq + i);
    if (len >= 8) memcpy(rp_msg_data(m), &seq, 8);
    CHECK(rp_channel_send(ch, side, buf, total, RP_FOREVER, 0, NULL) == RP_OK);
    free(buf);
}

/* post(), the body given to rp_channel_send_sg in three pieces of their own (a head, the data,
 * a tail), as a big array goes from the codec; the pieces are scribbled over once it returns. */
static void post_sg(rp_channel *ch, int side, uint64_t seq, size_t len) {
    size_t total = rp_msg_size(len, 0);
    unsigned char *buf = calloc(1, total);
    CHECK(buf && total > 64);
    rp_msg *m = (rp_msg *)buf;
    m->data_len = len;
    for (size_t i = 0; i < len; i++) rp_msg_data(m)[i] = (unsigned char)(seq + i);
    memcpy(rp_msg_data(m), &seq, 8);
    size_t hn = 40, dn = total - 64, tn = total - hn - dn;
    unsigned char *h = malloc(hn), *d = malloc(dn), *t = malloc(tn);
    CHECK(h && d && t);
    memcpy(h, buf, hn);
    memcpy(d, buf + hn, dn);
    memcpy(t, buf + hn + dn, tn);
    CHECK(rp_channel_send_sg(ch, side, h, hn, d, dn, t, tn, NULL, 0, RP_FOREVER, 0, NULL) == RP_OK);
    memset(h, 0xEE, hn);
    memset(d, 0xEE, dn);
    memset(t, 0xEE, tn);
    free(h);
    free(d);
    free(t);
    free(buf);
}

/* Receive one message; check it is seq with len bytes. */
static void expect(rp_channel *ch, int side, uint64_t seq, size_t len) {
    rp_recv r;
    CHECK(rp_channel_recv_begin(ch, side, &r, rp_deadline_after(10 * RP_NS_PER_SEC), 0, NULL) ==
          RP_OK);
    CHECK(r.remote == 1);
    CHECK(rp_msg_valid(r.msg, r.len) && r.msg->data_len == len);
    uint64_t got;
    memcpy(&got, rp_msg_data(r.msg), 8);
    CHECK(got == seq);
    for (size_t i = 8; i < len; i++) CHECK(rp_msg_data(r.msg)[i] == (unsigned char)(seq + i));
    rp_channel_recv_end(ch, side, &r);
}

int main(void) {
    int fd = -1, sock = -1;
    rp_channel *ch = rp_channel_new_shared(CAP, 0, &fd, &sock);
#if defined(RP_PORTABLE_WAIT)
    CHECK(ch == NULL); /* the portable waits cannot wake another process */
    puts("test_shared_channel: ok (no shared channels with portable waits)");
    return 0;
#endif
    CHECK(ch && fd >= 0 && sock >= 0 && rp_channel_shared(ch) && rp_channel_local_side(ch) == 0);
    /* a file that is not such a channel, or the wrong capacity, is refused */
    CHECK(rp_channel_attach_shared(fd, sock, CAP * 2, 0, 1) == NULL);
    CHECK(rp_channel_attach_shared(0, sock, CAP, 0, 1) == NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        rp_channel *c = rp_channel_attach_shared(fd, sock, CAP, 0, 1);
        CHECK(c && rp_channel_local_side(c) == 1);
        /* descriptors cross with the message that names them; older ones are dropped */
        rp_xfd x;
        expect(c, 1, 999999, 16);
        CHECK(rp_channel_take_fds(c, 42, &x) == RP_OK && x.nfds == 1 && x.len == 12);
        CHECK(memcmp(x.meta + 8, "pipe", 4) == 0);
        CHECK(write(x.fds[0], "hi", 2) == 2);
        close(x.fds[0]);
        /* echo every message back, then the big ones */
        for (uint64_t i = 0; i < COUNT; i++) {
            expect(c, 1, i, 16 + (i % 200));
            post(c, 1, i, 16 + (i % 200));
        }
        for (uint64_t i = 0; i < 8; i++) (i % 2 ? post_sg : post)(c, 1, 1000 + i, BIG + i);
        /* the parent closes: a blocked receive ends with RP_ECLOSED */
        rp_recv r;
        CHECK(rp_channel_recv_begin(c, 1, &r, rp_deadline_after(10 * RP_NS_PER_SEC), 0, NULL) ==
              RP_ECLOSED);
        rp_channel_decref(c, 1);
        _exit(0);
    }
    close(fd);
    close(sock);
    {
        int pfd[2];
        CHECK(pipe(pfd) == 0);
        rp_xfd x[2];
        memset(x, 0, sizeof x);
        uint64_t t0 = 41, t1 = 42;
        memcpy(x[0].meta, &t0, 8); /* one the receiver skips */
        x[0].len = 8;
        memcpy(x[1].meta, &t1, 8);
        memcpy(x[1].meta + 8, "pipe", 4);
        x[1].len = 12;
        x[1].fds[0] = pfd[1];
        x[1].nfds = 1;
        unsigned char buf[64] = {0};
        rp_msg *m = (rp_msg *)buf;
        m->data_len = 16;
        uint64_t seq = 999999;
        memcpy(rp_msg_data(m), &seq, 8);
        for (size_t i = 8; i < 16; i++) rp_msg_data(m)[i] = (unsigned char)(seq + i);
        CHECK(rp_channel_send_x(ch, 0, buf, rp_msg_size(16, 0), NULL, x, 2, RP_FOREVER, 0, NULL) ==
              RP_OK);
        close(pfd[1]);
        char got[2];
        CHECK(read(pfd[0], got, 2) == 2 && got[0] == 'h' && got[1] == 'i');
        close(pfd[0]);
    }
    /* ping-pong, then a stream the child echoes */
    for (uint64_t i = 0; i < 1000; i++) {
        post(ch, 0, i, 16 + (i % 200));
        expect(ch, 0, i, 16 + (i % 200));
    }
    for (uint64_t i = 1000; i < COUNT; i++) post(ch, 0, i, 16 + (i % 200));
    for (uint64_t i = 1000; i < COUNT; i++) expect(ch, 0, i, 16 + (i % 200));
    for (uint64_t i = 0; i < 8; i++) expect(ch, 0, 1000 + i, BIG + i);
    rp_channel_close(ch);
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    rp_channel_decref(ch, 0);
    puts("test_shared_channel: ok");
    return 0;
}
