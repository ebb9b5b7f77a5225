/* test.h - minimal test harness shared by test/t_*.c.
 *
 * Each check prints "ok <name>" or "FAIL <name>: <why>"; test/run.sh counts
 * those lines over every test program and script and prints the final
 * "N passed, N failed". A test program exits non-zero if any check failed.
 * Test programs run with the repository root as the working directory and
 * may write under test/out/ (git-ignored).
 */
#ifndef KT_TEST_H
#define KT_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int kt_test_failed;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (cond) {                                                          \
            printf("ok ");                                                   \
            printf(__VA_ARGS__);                                             \
            printf("\n");                                                    \
        } else {                                                             \
            kt_test_failed++;                                                \
            printf("FAIL ");                                                 \
            printf(__VA_ARGS__);                                             \
            printf(" (%s:%d: %s)\n", __FILE__, __LINE__, #cond);             \
        }                                                                    \
        fflush(stdout);                                                      \
    } while (0)

#define TEST_EXIT() return kt_test_failed ? 1 : 0

#endif
