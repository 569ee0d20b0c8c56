/* rng.h: a counter-based random generator (Philox4x32-10), so that every run
 * is reproducible from --seed and any stream position can be saved and
 * restored as two numbers (seed, counter), or computed directly
 * (lmk_philox) by parallel code and by CUDA kernels alike.
 * Owns: nothing but its two words of state. Needs: nothing. Never: allocates. */
#ifndef LMK_RNG_H
#define LMK_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmk_rng {
	uint64_t seed;
	uint64_t counter;    /* blocks of 4 words drawn so far */
	uint32_t buf[4];
	int left;            /* words of buf not yet used */
} lmk_rng;

/* The 4 words of block `counter` of stream `seed` (pure function). */
void lmk_philox(uint64_t seed, uint64_t counter, uint32_t out[4]);

void lmk_rng_init(lmk_rng *r, uint64_t seed);
/* Position of the stream as one number (words drawn), and back. */
uint64_t lmk_rng_tell(const lmk_rng *r);
void lmk_rng_seek(lmk_rng *r, uint64_t words);
uint32_t lmk_rng_u32(lmk_rng *r);
uint64_t lmk_rng_u64(lmk_rng *r);
/* Uniform in [0, n), unbiased. n must be > 0. */
uint64_t lmk_rng_below(lmk_rng *r, uint64_t n);
/* Uniform in [0, 1) with 24 random bits. */
float lmk_rng_uniform(lmk_rng *r);
/* Standard normal (Box-Muller). */
float lmk_rng_normal(lmk_rng *r);
/* Fisher-Yates shuffle of n ints. */
void lmk_rng_shuffle(lmk_rng *r, int *a, int n);

/* Stateless helpers for parallel code: the i-th uniform / normal number of
 * stream (seed, base), the same on the CPU and on the GPU. */
float lmk_philox_uniform(uint64_t seed, uint64_t base, uint64_t i);
float lmk_philox_normal(uint64_t seed, uint64_t base, uint64_t i);

#ifdef __cplusplus
}
#endif

#endif
