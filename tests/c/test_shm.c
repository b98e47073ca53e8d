/* C-level tests of shareable SharedArrayBuffer blocks (rp_shm) and the cross-process parking
 * lot (rp_park): a forked child maps the same block, waits and notifies across the process
 * boundary; rp_sab_from_fd refuses what is not a block.  Built by run.sh like test_channel.c. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rp_park.h"
#include "rp_shm.h"

#include "check.h"

#define SEC INT64_C(1000000000)

static void test_blocks_and_fds(void) {
    rp_sab *s = rp_sab_new(100, 1 << 20, 1);
    CHECK(s != NULL && rp_sab_fd(s) >= 0);
    CHECK((uintptr_t)rp_sab_data(s) % 4096u == 0);
    CHECK(rp_sab_length(s) == 100 && rp_sab_max_length(s) == 1u << 20);
    /* a second mapping of the same memory, as another process makes it */
    rp_sab *t = rp_sab_from_fd(dup(rp_sab_fd(s)), 1 << 20, 1);
    CHECK(t != NULL && rp_sab_data(t) != rp_sab_data(s));
    ((char *)rp_sab_data(s))[50] = 7;
    CHECK(((char *)rp_sab_data(t))[50] == 7);
    CHECK(rp_sab_grow(t, 5000) == RP_OK && rp_sab_length(s) == 5000);
    CHECK(rp_sab_grow(s, 4000) == RP_EINVAL);
    uint64_t off = 0;
    CHECK(rp_sab_find((char *)rp_sab_data(t) + 123, &off) == t && off == 123);
    CHECK(rp_sab_find((char *)rp_sab_data(s) + 9, &off) == s && off == 9);
    CHECK(rp_sab_find(&off, &off) == NULL);
    rp_sab_decref(t);
    CHECK(rp_sab_find((char *)rp_sab_data(s) + 9, &off) == s);

    /* nothing about a received fd is trusted */
    int fd = rp_sab_fd(s);
    int d = dup(fd);
    errno = 0;
    CHECK(rp_sab_from_fd(d, (size_t)1 << 40, 1) == NULL && errno == EINVAL);
    CHECK(rp_sab_from_fd(d, SIZE_MAX - 10, 1) == NULL && errno == EINVAL);
    close(d);
    CHECK(rp_sab_from_fd(-1, 0, 0) == NULL && errno == EBADF);
    CHECK(rp_sab_from_fd(1000000, 0, 0) == NULL && errno == EBADF);
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(rp_sab_from_fd(p[0], 0, 0) == NULL && errno == EINVAL);
    close(p[0]);
    close(p[1]);
    int m = memfd_create("ringport-sab", MFD_CLOEXEC); /* the right name, but not sealed */
    CHECK(m >= 0 && ftruncate(m, 1 << 20) == 0);
    CHECK(rp_sab_from_fd(m, 0, 0) == NULL && errno == EINVAL);
    close(m);
    rp_sab_decref(s);

    rp_sab *z = rp_sab_new(0, 0, 0); /* empty, not growable */
    CHECK(z != NULL && rp_sab_length(z) == 0);
    rp_sab_decref(z);
}

/* The child waits on word `which` of the block (inherited mapping), exits with the result. */
static pid_t child_waits(rp_sab *s, int size, int64_t timeout_ns) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int r = rp_park_wait_value(rp_sab_data(s), size, 0, timeout_ns);
        _exit(r == RP_OK ? 0 : r == RP_ETIMEDOUT ? 2 : r == RP_ENOTEQUAL ? 3 : 4);
    }
    return pid;
}

static int exit_code(pid_t pid) {
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

static void wait_for_waiters(void *addr, int64_t n) {
    int64_t end = rp_now_ns() + 30 * SEC;
    while (rp_park_waiters(addr) != n) {
        CHECK(rp_now_ns() < end);
        usleep(1000);
    }
}

static void test_wait_notify_across_processes(void) {
    rp_sab *s = rp_sab_new(64, 64, 0);
    void *a = rp_sab_data(s);
    CHECK(s != NULL);
    for (int size = 4; size <= 8; size += 4) {
        pid_t c1 = child_waits(s, size, 30 * SEC);
        wait_for_waiters(a, 1);
        pid_t c2 = child_waits(s, size, 30 * SEC);
        wait_for_waiters(a, 2);
        CHECK(rp_park_notify((char *)a + 8, -1) == 0); /* another word: nobody */
        CHECK(rp_park_notify(a, 1) == 1);              /* the older one */
        CHECK(exit_code(c1) == 0);
        CHECK(rp_park_waiters(a) == 1);
        CHECK(rp_park_notify(a, -1) == 1 && exit_code(c2) == 0);
        CHECK(rp_park_notify(a, -1) == 0);
    }
    /* a timeout leaves nothing behind; a changed value is "not equal" */
    CHECK(exit_code(child_waits(s, 4, SEC / 50)) == 2);
    CHECK(rp_park_waiters(a) == 0 && rp_park_notify(a, -1) == 0);
    *(volatile int32_t *)a = 1;
    CHECK(exit_code(child_waits(s, 4, SEC)) == 3);
    *(volatile int32_t *)a = 0;
    /* a waiter killed while waiting is not counted, and its cell is reclaimed */
    pid_t k = child_waits(s, 4, -1);
    wait_for_waiters(a, 1);
    kill(k, SIGKILL);
    CHECK(exit_code(k) == 100 + SIGKILL);
    CHECK(rp_park_notify(a, -1) == 0 && rp_park_waiters(a) == 0);
    rp_sab_decref(s);
}

/* The parent waits, the child notifies: the count comes back as its exit status. */
static void test_parent_waits_child_notifies(void) {
    rp_sab *s = rp_sab_new(64, 64, 0);
    void *a = rp_sab_data(s);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int64_t end = rp_now_ns() + 30 * SEC;
        while (rp_park_waiters(a) != 1 && rp_now_ns() < end) usleep(1000);
        _exit((int)rp_park_notify(a, -1));
    }
    CHECK(rp_park_wait_value(a, 4, 0, 30 * SEC) == RP_OK);
    CHECK(exit_code(pid) == 1);
    rp_sab_decref(s);
}

/* The cells are bounded: one waiter more than RP_PARK_XCELLS is refused, not overrun; leaving
 * gives the cells back; a notify counts exactly the waiters enqueued. */
static void test_cells_are_bounded(void) {
    rp_sab *s = rp_sab_new(64, 64, 0);
    char *a = rp_sab_data(s);
    static rp_waiter w[RP_PARK_XCELLS + 1];
    for (int i = 0; i < RP_PARK_XCELLS; i++) {
        rp_waiter_init(&w[i], -1);
        CHECK(rp_park_enqueue(&w[i], a + 8 * (i % 4), 4, 0) == RP_OK);
    }
    rp_waiter_init(&w[RP_PARK_XCELLS], -1);
    CHECK(rp_park_enqueue(&w[RP_PARK_XCELLS], a, 4, 0) == RP_ENOMEM);
    CHECK(rp_park_waiters(a) == (RP_PARK_XCELLS + 3) / 4);
    CHECK(rp_park_notify(a + 8, 3) == 3);
    int woken = 0;
    for (int i = 0; i < RP_PARK_XCELLS; i++) woken += rp_park_leave(&w[i]);
    CHECK(woken == 3);
    CHECK(rp_park_waiters(a) == 0 && rp_park_waiters(a + 8) == 0);
    rp_waiter_init(&w[0], -1);
    CHECK(rp_park_enqueue(&w[0], a, 4, 0) == RP_OK && rp_park_leave(&w[0]) == 0);
    rp_sab_decref(s);
}

int main(void) {
    test_cells_are_bounded();
    test_blocks_and_fds();
    test_wait_notify_across_processes();
    test_parent_waits_child_notifies();
    printf("shm tests: 4 passed, 0 failed\n");
    return 0;
}
