/* blas.c - choosing OpenBLAS's kernels and thread count, once, at start.
 *
 * Why a re-exec: Debian's DYNAMIC_ARCH OpenBLAS picks its kernels in a library
 * constructor, from OPENBLAS_CORETYPE or cpuid, before main() runs. Release
 * 0.3.21 does not know recent AVX-512 cores (e.g. Emerald Rapids) and falls
 * back to the SSE3 "Prescott" kernels, about 5x slower. The only way to change
 * the choice is to set the variable and load the library again, so when we
 * see a weak core on a CPU with AVX-512 F/BW/VL/DQ and the user set nothing,
 * we set OPENBLAS_CORETYPE=SkylakeX plus a guard variable and execv
 * /proc/self/exe with the same argv, once.
 *
 * Why a self-test: a forced core type could in principle pick kernels the
 * CPU mis-executes. One small sgemm against a naive loop costs microseconds;
 * if it disagrees we step down (SkylakeX -> Haswell -> OpenBLAS's own choice)
 * with another re-exec, and kt_blas_note() says what happened.
 *
 * Threads: one threading layer, kt's. OpenBLAS is told to use one thread;
 * kt's thread pool (resnet.c) splits each GEMM into single-threaded calls
 * (ops.c) and runs the elementwise loops between them. With OpenBLAS's own
 * threads on, its idle workers spin in sched_yield after every call and
 * take the cores from those loops.
 */
#include "blas.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>


/* Declared by hand: only ops.c includes cblas.h. The CBLAS enums are ints
 * (101 = row major, 111 = no transpose). */
char *openblas_get_corename(void);
char *openblas_get_config(void);
void openblas_set_num_threads(int n);
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* Set to the misdetected core name when kt forced a core type; "failed" after
 * every forced choice failed the self-test (so we never loop). */
#define GUARD "KT_BLAS_FORCED"

static char g_note[256];
static int g_threads = 1;

const char *kt_blas_core(void) { return openblas_get_corename(); }
const char *kt_blas_config(void) { return openblas_get_config(); }
const char *kt_blas_note(void) { return g_note; }
int kt_blas_threads(void) { return g_threads; }

static int is_avx512_core(const char *name)
{
    static const char *fast[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    for (size_t i = 0; i < sizeof fast / sizeof fast[0]; i++)
        if (strcasecmp(name, fast[i]) == 0) return 1;
    return 0;
}

static int cpu_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

/* One sgemm with odd sizes (so the kernels' edge paths run too) against a
 * double-precision loop. Inputs are small integers scaled by 1/8, so every
 * product and partial sum is exact in float32: any difference is a wrong
 * kernel, not rounding. */
static int sgemm_selftest(void)
{
    enum { M = 37, N = 29, K = 53 };
    static float a[M * K], b[K * N], c[M * N];
    for (int i = 0; i < M * K; i++) a[i] = (float)((i * 7 + 3) % 17 - 8) / 8.0f;
    for (int i = 0; i < K * N; i++) b[i] = (float)((i * 5 + 1) % 13 - 6) / 8.0f;
    cblas_sgemm(101, 111, 111, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int p = 0; p < K; p++) s += (double)a[i * K + p] * b[p * N + j];
            if ((double)c[i * N + j] != s) return 0;
        }
    return 1;
}

static void reexec(char **argv)
{
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* Still here: exec failed; carry on with the kernels we have. */
}

void kt_blas_init(char **argv)
{
    const char *user = getenv("OPENBLAS_CORETYPE");
    const char *guard = getenv(GUARD);
    const char *core = openblas_get_corename();
    int ok = sgemm_selftest();

    if (guard && strcmp(guard, "failed") != 0 && user) {
        /* We set the core type in an earlier exec of this process. */
        if (ok) {
            snprintf(g_note, sizeof g_note,
                     "forced %s: OpenBLAS misdetected this AVX-512 CPU as %s", user, guard);
        } else {
            if (strcasecmp(user, "Haswell") == 0) {
                unsetenv("OPENBLAS_CORETYPE");
                setenv(GUARD, "failed", 1);
            } else {
                setenv("OPENBLAS_CORETYPE", "Haswell", 1);
            }
            reexec(argv);
            snprintf(g_note, sizeof g_note, "%s kernels failed the self-test and re-exec failed",
                     user);
        }
    } else if (user) {
        /* Respected even when weaker than the CPU allows, but said so. */
        int weak = !is_avx512_core(core) && cpu_has_avx512();
        snprintf(g_note, sizeof g_note, "set by OPENBLAS_CORETYPE=%s%s%s", user,
                 weak ? "; SkylakeX kernels would be faster on this CPU" : "",
                 ok ? "" : "; WARNING: sgemm self-test failed");
    } else if (guard) {
        snprintf(g_note, sizeof g_note,
                 "detected (forced core types failed the sgemm self-test)%s",
                 ok ? "" : "; WARNING: sgemm self-test failed");
    } else if (!is_avx512_core(core) && cpu_has_avx512()) {
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        setenv(GUARD, core, 1);
        reexec(argv);
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv(GUARD);
        snprintf(g_note, sizeof g_note, "detected as %s; re-exec with SkylakeX failed", core);
    } else {
        snprintf(g_note, sizeof g_note, "detected%s",
                 ok ? "" : " (WARNING: sgemm self-test failed)");
    }
    kt_blas_set_threads(0);
}

void kt_blas_set_threads(int n)
{
    if (n <= 0) {
        cpu_set_t set;
        n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        if (n < 1) n = 1;
    }
    g_threads = n;
    openblas_set_num_threads(1);
}
