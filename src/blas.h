/* blas.h - choosing OpenBLAS's kernels and thread count, once, at start.
 *
 * Debian's DYNAMIC_ARCH OpenBLAS 0.3.21 does not recognise recent AVX-512
 * cores and falls back to its SSE3 "Prescott" kernels (about 5x slower). The
 * core type is read from OPENBLAS_CORETYPE when the library loads, before
 * main(), so kt_blas_init re-executes kt once with the right value set when it
 * detects that case. A core type the user set is respected.
 */
#ifndef KT_BLAS_H
#define KT_BLAS_H

/* Call first thing in main with main's argv. May not return (re-exec). */
void kt_blas_init(char **argv);
/* Kernel in use, e.g. "SkylakeX", and OpenBLAS's config string. */
const char *kt_blas_core(void);
const char *kt_blas_config(void);
/* Why the core was chosen ("detected", "set by OPENBLAS_CORETYPE",
 * "forced SkylakeX: OpenBLAS misdetected this AVX-512 CPU as Prescott"). */
const char *kt_blas_note(void);
/* Threads for BLAS and kt's own parallel loops; n <= 0 means all cores. */
void kt_blas_set_threads(int n);
int kt_blas_threads(void);

#endif
