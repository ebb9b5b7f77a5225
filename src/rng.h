/* rng.h - counter-based random numbers: a draw is a pure function of
 * (seed, stream, index, draw), so thread scheduling, resumes and caches never
 * change results. Streams separate purposes (shuffle, augment, dropout, init).
 */
#ifndef KT_RNG_H
#define KT_RNG_H

#include <stdint.h>

enum { KT_RNG_SHUFFLE = 1, KT_RNG_AUGMENT, KT_RNG_DROPOUT, KT_RNG_INIT, KT_RNG_SPLIT };

/* 64 random bits for (seed, stream, a, b); e.g. a = epoch, b = sample*16 + draw. */
uint64_t kt_rng_u64(uint64_t seed, uint32_t stream, uint64_t a, uint64_t b);
/* Uniform double in [0, 1) with 53 random bits. */
double kt_rng_uniform(uint64_t seed, uint32_t stream, uint64_t a, uint64_t b);
/* Uniform integer in [0, n) without modulo bias (n > 0). */
uint64_t kt_rng_below(uint64_t seed, uint32_t stream, uint64_t a, uint64_t b, uint64_t n);
/* Fisher-Yates permutation of 0..n-1 into perm, a function of (seed, epoch). */
void kt_rng_permutation(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t epoch);

#endif
