/* check.h - the C tests' one assertion: CHECK(c) prints the failed condition and exits 1. */
#ifndef RP_TEST_CHECK_H
#define RP_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

#endif /* RP_TEST_CHECK_H */
