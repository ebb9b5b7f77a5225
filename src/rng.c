/* rng.c - counter-based generator (see rng.h).
 *
 * The inputs are mixed with the SplitMix64 finaliser, a bijection with good
 * avalanche: chaining it over the four words gives independent-looking outputs
 * for neighbouring counters. Statistical quality far beyond what shuffling and
 * augmentation need, and no state to save in checkpoints beyond the seed.
 */
#include "rng.h"

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t kt_rng_u64(uint64_t seed, uint32_t stream, uint64_t a, uint64_t b)
{
    uint64_t h = mix(seed ^ 0x6b74u);
    h = mix(h ^ stream);
    h = mix(h ^ a);
    return mix(h ^ b);
}

double kt_rng_uniform(uint64_t seed, uint32_t stream, uint64_t a, uint64_t b)
{
    return (double)(kt_rng_u64(seed, stream, a, b) >> 11) * 0x1.0p-53;
}

uint64_t kt_rng_below(uint64_t seed, uint32_t stream, uint64_t a, uint64_t b, uint64_t n)
{
    /* Rejection keeps every value equally likely; the retry counter goes into
     * the high bits of b so draws stay a pure function of the inputs. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (uint64_t retry = 0;; retry++) {
        uint64_t r = kt_rng_u64(seed, stream, a, b ^ (retry << 48));
        if (r < limit)
            return r % n;
    }
}

void kt_rng_permutation(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t epoch)
{
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)kt_rng_below(seed, KT_RNG_SHUFFLE, epoch, i, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
