/* C-level tests of message nodes (csrc/rp_channel.c): a mid-sized node freed by one thread is
 * taken back by the next allocation of its size (no malloc, so no arena lock shared by a
 * producer that allocates and a consumer that frees), and nodes handed between threads while
 * sizes change keep their contents (run under ThreadSanitizer and AddressSanitizer too). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rp_channel.h"

#include "check.h"

static void test_freed_node_is_reused(void) {
    rp_node *a = rp_node_alloc(16384);
    CHECK(a != NULL);
    void *was = a;
    rp_node_free(a);
    /* malloc would hand the freed chunk to the next request of its size; a spare is not in
     * malloc's hands, so this takes other memory and the node allocation gets the spare */
    void *other = malloc(sizeof(void *) * 2 + 16384 + 64);
    CHECK(other != NULL);
    rp_node *b = rp_node_alloc(16384);
    free(other);
    CHECK((void *)b == was);
    /* a smaller message may take it too (not under half its size) */
    rp_node_free(b);
    rp_node *c = rp_node_alloc(9000);
    CHECK((void *)c == was);
    CHECK(rp_node_len(c) == 9000);
    rp_node_free(c);
    /* growing in place and past the block still works on a reused node */
    rp_node *e = rp_node_alloc(16000);
    memset(rp_node_body(e), 7, 16000);
    e = rp_node_realloc(e, 100000);
    CHECK(e != NULL);
    CHECK(((unsigned char *)rp_node_body(e))[15999] == 7);
    rp_node_free(e);
}

enum { HANDOFF = 64, ROUNDS = 20000 };
static _Atomic(rp_node *) box[HANDOFF];

static size_t size_of(int i) { return (size_t)(1000 + (i * 2654435761u) % 40000u); }

static void *producer(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        size_t n = size_of(i);
        rp_node *x = rp_node_alloc(n);
        CHECK(x != NULL);
        memset(rp_node_body(x), i & 0xff, n);
        while (atomic_load_explicit(&box[i % HANDOFF], memory_order_acquire) != NULL) {
        }
        atomic_store_explicit(&box[i % HANDOFF], x, memory_order_release);
    }
    return NULL;
}

static void test_nodes_across_threads(void) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, producer, NULL) == 0);
    for (int i = 0; i < ROUNDS; i++) {
        rp_node *x;
        while ((x = atomic_exchange_explicit(&box[i % HANDOFF], NULL, memory_order_acquire)) ==
               NULL) {
        }
        size_t n = size_of(i);
        CHECK(rp_node_len(x) == n);
        unsigned char *b = rp_node_body(x);
        CHECK(b[0] == (unsigned char)(i & 0xff) && b[n - 1] == (unsigned char)(i & 0xff));
        rp_node_free(x);
    }
    CHECK(pthread_join(t, NULL) == 0);
}

int main(void) {
    test_freed_node_is_reused();
    test_nodes_across_threads();
    printf("node tests: 2 passed, 0 failed\n");
    return 0;
}
