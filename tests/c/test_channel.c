/* C-level tests of csrc/: the ring, the channel (several producers, several consumers, order,
 * overflow, close), waits with deadlines and cancel tokens.  Built by run.sh with the futex and
 * with the portable waits, and under ThreadSanitizer. */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rp_channel.h"
#include "rp_registry.h"

#include "check.h"

enum { PRODUCERS = 3, CONSUMERS = 2, PER = 20000 };

typedef struct {
    rp_channel *ch;
    int id;
    long got;
    long last[PRODUCERS];
} arg_t;

static void *produce(void *p) {
    arg_t *a = p;
    unsigned char body[sizeof(rp_msg) + 512];
    for (int i = 0; i < PER; i++) {
        size_t extra = (size_t)(i * 7 % 300); /* variable lengths: records wrap the ring */
        rp_msg *m = (rp_msg *)body;
        m->nhandles = 0;
        m->flags = 0;
        m->data_len = 8 + extra;
        int32_t v[2] = {a->id, i};
        memcpy(rp_msg_data(m), v, 8);
        memset(rp_msg_data(m) + 8, (int)(i & 0xff), extra);
        size_t len = rp_msg_size(m->data_len, 0);
        int rc;
        do { /* a slice end (RP_EINTR) while another producer holds the lock: try again */
            rc = rp_channel_send(a->ch, 0, body, len, RP_FOREVER, 50000000, NULL);
        } while (rc == RP_EINTR);
        CHECK(rc == RP_OK);
    }
    return NULL;
}

static void *consume(void *p) {
    arg_t *a = p;
    for (int k = 0; k < PRODUCERS; k++) a->last[k] = -1;
    for (;;) {
        rp_recv r;
        int rc = rp_channel_recv_begin(a->ch, 1, &r, RP_FOREVER, 50000000, NULL);
        if (rc == RP_EINTR) continue;
        if (rc == RP_ECLOSED) break;
        CHECK(rc == RP_OK);
        CHECK(rp_msg_valid(r.msg, r.len));
        int32_t v[2];
        memcpy(v, rp_msg_data(r.msg), 8);
        size_t extra = (size_t)r.msg->data_len - 8;
        CHECK(extra == (size_t)(v[1] * 7 % 300));
        for (size_t j = 0; j < extra; j++) CHECK(rp_msg_data(r.msg)[8 + j] == (unsigned char)(v[1] & 0xff));
        CHECK(v[0] >= 0 && v[0] < PRODUCERS);
        CHECK(v[1] > a->last[v[0]]); /* per-producer order */
        a->last[v[0]] = v[1];
        a->got++;
        rp_channel_recv_end(a->ch, 1, &r);
    }
    return NULL;
}

static void test_mpmc(uint64_t capacity) {
    rp_channel *ch = rp_channel_new(capacity, 0);
    CHECK(ch);
    pthread_t pt[PRODUCERS], ct[CONSUMERS];
    arg_t pa[PRODUCERS], ca[CONSUMERS];
    memset(ca, 0, sizeof ca);
    for (int i = 0; i < CONSUMERS; i++) {
        ca[i].ch = ch;
        pthread_create(&ct[i], NULL, consume, &ca[i]);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pa[i].ch = ch;
        pa[i].id = i;
        pthread_create(&pt[i], NULL, produce, &pa[i]);
    }
    for (int i = 0; i < PRODUCERS; i++) pthread_join(pt[i], NULL);
    rp_channel_close(ch);
    long total = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        pthread_join(ct[i], NULL);
        total += ca[i].got;
    }
    CHECK(total == (long)PRODUCERS * PER);
    rp_channel_decref(ch, 0);
    rp_channel_decref(ch, 1);
}

static int released;
static void count_release(void *p, uint64_t aux) {
    (void)p;
    released += (int)aux;
}

static void test_unread_handles_released(void) {
    rp_channel *ch = rp_channel_new(256, 0);
    unsigned char body[256];
    rp_msg *m = (rp_msg *)body;
    m->nhandles = 1;
    m->flags = 0;
    m->data_len = 3;
    rp_handle *h = rp_msg_handles(m);
    memset(h, 0, sizeof *h);
    h->release = count_release;
    h->aux = 1;
    size_t len = rp_msg_size(3, 1);
    for (int i = 0; i < 10; i++) CHECK(rp_channel_send(ch, 0, body, len, RP_FOREVER, 0, NULL) == RP_OK);
    rp_node *n = rp_node_alloc(100000); /* a big one, straight to the overflow list */
    memcpy(rp_node_body(n), body, len);
    rp_node_set_len(n, len);
    CHECK(rp_channel_send_node(ch, 0, n, RP_FOREVER, 0, NULL) == RP_OK);
    rp_channel_decref(ch, 0);
    CHECK(released == 0);
    rp_channel_decref(ch, 1); /* the receiving side goes: unread messages are dropped */
    CHECK(released == 11);
}

/* rp_channel_send_sg on a channel in memory: the pieces are put together into one body, whole
 * in the ring or (too big for a record) in the overflow list, the caller's pieces untouched. */
static void test_send_in_pieces(void) {
    rp_channel *ch = rp_channel_new(4096, 0);
    for (size_t len = 24; len <= 20000; len += 19976) {
        size_t total = rp_msg_size(len, 0);
        unsigned char *buf = calloc(1, total);
        CHECK(buf);
        rp_msg *m = (rp_msg *)buf;
        m->data_len = len;
        for (size_t i = 0; i < len; i++) rp_msg_data(m)[i] = (unsigned char)(i * 7 + 1);
        size_t hn = 16, dn = total - 24;
        CHECK(rp_channel_send_sg(ch, 0, buf, hn, buf + hn, dn, buf + hn + dn, total - hn - dn, NULL,
                                 0, RP_FOREVER, 0, NULL) == RP_OK);
        /* descriptors only cross to another process */
        rp_xfd x;
        memset(&x, 0, sizeof x);
        CHECK(rp_channel_send_sg(ch, 0, buf, hn, buf + hn, dn, buf + hn + dn, total - hn - dn, &x,
                                 1, RP_FOREVER, 0, NULL) == RP_EINVAL);
        rp_recv r;
        CHECK(rp_channel_recv_begin(ch, 1, &r, rp_deadline_after(RP_NS_PER_SEC), 0, NULL) == RP_OK);
        CHECK(r.len == total && memcmp(r.msg, buf, total) == 0);
        rp_channel_recv_end(ch, 1, &r);
        CHECK(rp_channel_try_recv(ch, 1, &r) != RP_OK);
        free(buf);
    }
    rp_channel_decref(ch, 0);
    rp_channel_decref(ch, 1);
}

/* A port that closes itself drops what it had not read (rp_channel_discard), releasing the
 * handles; what it posted stays for the other side. */
static void test_discard_releases_unread_handles(void) {
    rp_channel *ch = rp_channel_new(256, 0);
    unsigned char body[256];
    rp_msg *m = (rp_msg *)body;
    m->nhandles = 1;
    m->flags = 0;
    m->data_len = 3;
    rp_handle *h = rp_msg_handles(m);
    memset(h, 0, sizeof *h);
    h->release = count_release;
    h->aux = 1;
    size_t len = rp_msg_size(3, 1);
    released = 0;
    for (int i = 0; i < 3; i++) CHECK(rp_channel_send(ch, 0, body, len, RP_FOREVER, 0, NULL) == RP_OK);
    CHECK(rp_channel_send(ch, 1, body, len, RP_FOREVER, 0, NULL) == RP_OK);
    rp_channel_close(ch);
    rp_channel_discard(ch, 1); /* side 1 closed itself: the 3 messages side 0 posted go */
    CHECK(released == 3);
    rp_recv r;
    CHECK(rp_channel_recv_begin(ch, 1, &r, 0, 0, NULL) == RP_ECLOSED);
    CHECK(rp_channel_recv_begin(ch, 0, &r, 0, 0, NULL) == RP_OK); /* side 0 still reads its one */
    rp_channel_recv_end(ch, 0, &r);
    CHECK(released == 4);
    rp_channel_decref(ch, 0);
    rp_channel_decref(ch, 1);
    released = 0;
}

static void test_waits(void) {
    rp_channel *ch = rp_channel_new(1024, 0);
    rp_recv r;
    int64_t t0 = rp_now_ns();
    int rc;
    do {
        rc = rp_channel_recv_begin(ch, 1, &r, t0 + 30000000, 10000000, NULL);
    } while (rc == RP_EINTR);
    CHECK(rc == RP_ETIMEDOUT);
    int64_t dt = rp_now_ns() - t0;
    CHECK(dt >= 30000000 && dt < 1000000000);
    CHECK(rp_channel_recv_begin(ch, 1, &r, 0, 0, NULL) == RP_EAGAIN);
    rp_cancel c;
    rp_cancel_init(&c);
    rp_cancel_fire(&c);
    CHECK(rp_channel_recv_begin(ch, 1, &r, RP_FOREVER, 0, &c) == RP_ECANCELED);
    rp_channel_decref(ch, 0);
    rp_channel_decref(ch, 1);
}

static rp_cancel cancel_tok;
static void *fire_later(void *p) {
    (void)p;
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    rp_cancel_fire(&cancel_tok);
    return NULL;
}

static void test_cancel_wakes_a_sleeper(void) {
    rp_channel *ch = rp_channel_new(1024, 0);
    rp_cancel_init(&cancel_tok);
    pthread_t t;
    pthread_create(&t, NULL, fire_later, NULL);
    rp_recv r;
    int64_t t0 = rp_now_ns();
    int rc = rp_channel_recv_begin(ch, 1, &r, RP_FOREVER, 0 /* no slices */, &cancel_tok);
    CHECK(rc == RP_ECANCELED);
    CHECK(rp_now_ns() - t0 < 2000000000);
    pthread_join(t, NULL);
    rp_channel_decref(ch, 0);
    rp_channel_decref(ch, 1);
}

static void test_bounded(void) {
    rp_channel *ch = rp_channel_new(1024, 100);
    unsigned char body[64] = {0};
    rp_msg *m = (rp_msg *)body;
    m->data_len = 40;
    size_t len = rp_msg_size(40, 0);
    CHECK(rp_channel_send(ch, 0, body, len, 0, 0, NULL) == RP_OK);
    CHECK(rp_channel_send(ch, 0, body, len, 0, 0, NULL) == RP_EFULL);
    CHECK(rp_channel_send(ch, 0, body, len, rp_now_ns() + 1000000, 0, NULL) == RP_ETIMEDOUT);
    rp_recv r;
    CHECK(rp_channel_recv_begin(ch, 1, &r, 0, 0, NULL) == RP_OK);
    rp_channel_recv_end(ch, 1, &r);
    CHECK(rp_channel_send(ch, 0, body, len, 0, 0, NULL) == RP_OK);
    rp_channel_decref(ch, 0);
    rp_channel_decref(ch, 1);
}

/* Resident pages of this process (Linux; -1 elsewhere). */
static long resident_pages(void) {
    long size = -1, rss = -1;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = -1;
    fclose(f);
    return rss;
}

/* Rings are mapped at the first post and committed as messages reach them: a channel nobody
 * used costs its small control block, not its two rings (which were zero-filled up front:
 * 2 MiB for these). */
static void test_idle_channels_are_small(void) {
    enum { N = 200 };
    static rp_channel *chans[N];
    long before = resident_pages();
    for (int i = 0; i < N; i++) CHECK((chans[i] = rp_channel_new(1 << 20, 0)) != NULL);
    long after = resident_pages();
    if (before > 0 && after > 0) {
        long per_channel = (after - before) * 4096 / N;
        if (per_channel > 8 * 1024) {
            fprintf(stderr, "an idle channel costs %ld bytes of RSS\n", per_channel);
            CHECK(0);
        }
    }
    /* and a used one still works across its whole ring */
    unsigned char body[sizeof(rp_msg) + 4096] = {0};
    rp_msg *m = (rp_msg *)body;
    m->data_len = 4096;
    size_t len = rp_msg_size(4096, 0);
    for (int k = 0; k < 1000; k++) {
        CHECK(rp_channel_send(chans[0], 0, body, len, RP_FOREVER, 0, NULL) == RP_OK);
        rp_recv r;
        CHECK(rp_channel_recv_begin(chans[0], 1, &r, 0, 0, NULL) == RP_OK);
        CHECK(r.len == len);
        rp_channel_recv_end(chans[0], 1, &r);
    }
    for (int i = 0; i < N; i++) {
        rp_channel_decref(chans[i], 0);
        rp_channel_decref(chans[i], 1);
    }
}

static void test_capacity_limits(void) {
    CHECK(rp_channel_new(0, 0) == NULL);
    CHECK(rp_channel_new(RP_RING_MIN_CAPACITY / 2, 0) == NULL);
    CHECK(rp_channel_new(RP_RING_MIN_CAPACITY + 8, 0) == NULL); /* not a power of two */
    CHECK(rp_channel_new(RP_RING_MAX_CAPACITY * 2, 0) == NULL);
    CHECK(rp_channel_new(UINT64_C(1) << 40, 0) == NULL);
    CHECK(rp_channel_new(UINT64_MAX, 0) == NULL);
    CHECK(rp_ring_size(RP_RING_MAX_CAPACITY) != 0);
    rp_channel *ch = rp_channel_new(RP_RING_MIN_CAPACITY, 0);
    CHECK(ch);
    rp_channel_decref(ch, 0);
    rp_channel_decref(ch, 1);
}

/* Tokens: an exported message named by an id; taken once, dropped once, never by a stale or
 * wrong id. */
static void test_tokens(void) {
    released = 0;
    int64_t before = rp_registry_count();
    size_t len = rp_msg_size(3, 1);
    rp_node *n = rp_node_alloc(len);
    rp_msg *m = (rp_msg *)rp_node_body(n);
    m->nhandles = 1;
    m->flags = 0;
    m->data_len = 3;
    rp_handle *h = rp_msg_handles(m);
    memset(h, 0, sizeof *h);
    h->release = count_release;
    h->aux = 1;
    int64_t id = rp_token_new(n);
    CHECK(id > 0);
    CHECK(rp_registry_count() == before + 1);
    rp_node *got = NULL;
    CHECK(rp_token_take(id + 1000, &got) == RP_ENOENT); /* never issued */
    CHECK(rp_token_take(0, &got) == RP_ENOENT);
    CHECK(rp_token_take(-5, &got) == RP_ENOENT);
    void *obj = NULL;
    CHECK(rp_registry_get(id, RP_REG_TOKEN, &obj) == RP_ENOENT); /* tokens are not shared */
    CHECK(rp_registry_take(id, RP_REG_WORKER, &obj) == RP_ENOENT); /* wrong kind */
    CHECK(rp_token_take(id, &got) == RP_OK && got == n);
    CHECK(rp_token_take(id, &got) == RP_ENOENT); /* taken once */
    CHECK(rp_token_drop(id) == RP_ENOENT);
    CHECK(released == 0);
    int64_t id2 = rp_token_new(got);
    CHECK(id2 > id); /* ids are never reused */
    CHECK(rp_token_drop(id2) == RP_OK);
    CHECK(released == 1); /* dropping releases what the message owned */
    CHECK(rp_token_drop(id2) == RP_ENOENT);
    CHECK(rp_registry_count() == before);
}

int main(void) {
    test_waits();
    test_cancel_wakes_a_sleeper();
    test_bounded();
    test_discard_releases_unread_handles();
    test_unread_handles_released();
    test_send_in_pieces();
    test_mpmc(256);     /* nearly everything through the overflow list */
    test_mpmc(4096);    /* ring and overflow mixed */
    test_mpmc(1 << 20); /* ring only */
    test_idle_channels_are_small();
    test_capacity_limits();
    test_tokens();
    printf("channel tests: 11 passed, 0 failed\n");
    return 0;
}
