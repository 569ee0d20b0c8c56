/* rng.c: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011), with the constants of that paper. */
#include <math.h>

#include "rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void lmk_philox(uint64_t seed, uint64_t counter, uint32_t out[4])
{
	uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
	uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);

	for (int r = 0; r < 10; r++) {
		uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
		uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
		uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
		c0 = n0; c1 = n1; c2 = n2; c3 = n3;
		k0 += PHILOX_W0;
		k1 += PHILOX_W1;
	}
	out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void lmk_rng_init(lmk_rng *r, uint64_t seed)
{
	r->seed = seed;
	r->counter = 0;
	r->left = 0;
}

uint64_t lmk_rng_tell(const lmk_rng *r) { return r->counter * 4 - (uint64_t)r->left; }

void lmk_rng_seek(lmk_rng *r, uint64_t words)
{
	r->counter = words / 4;
	r->left = 0;
	if (words % 4) {
		lmk_philox(r->seed, r->counter++, r->buf);
		r->left = 4 - (int)(words % 4);
	}
}

uint32_t lmk_rng_u32(lmk_rng *r)
{
	if (r->left == 0) {
		lmk_philox(r->seed, r->counter++, r->buf);
		r->left = 4;
	}
	return r->buf[4 - r->left--];
}

uint64_t lmk_rng_u64(lmk_rng *r)
{
	uint64_t hi = lmk_rng_u32(r);
	return hi << 32 | lmk_rng_u32(r);
}

uint64_t lmk_rng_below(lmk_rng *r, uint64_t n)
{
	/* rejection above the largest multiple of n keeps it unbiased */
	uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
	do
		x = lmk_rng_u64(r);
	while (x >= lim);
	return x % n;
}

static float u24(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

float lmk_rng_uniform(lmk_rng *r) { return u24(lmk_rng_u32(r)); }

static float box_muller(uint32_t a, uint32_t b)
{
	float u1 = ((float)(a >> 8) + 1.0f) * (1.0f / 16777216.0f); /* (0, 1] */
	float u2 = u24(b);
	return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

float lmk_rng_normal(lmk_rng *r)
{
	uint32_t a = lmk_rng_u32(r);
	return box_muller(a, lmk_rng_u32(r));
}

void lmk_rng_shuffle(lmk_rng *r, int *a, int n)
{
	for (int i = n - 1; i > 0; i--) {
		int j = (int)lmk_rng_below(r, (uint64_t)i + 1), t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
}

float lmk_philox_uniform(uint64_t seed, uint64_t base, uint64_t i)
{
	uint32_t o[4];
	lmk_philox(seed, base + i / 4, o);
	return u24(o[i % 4]);
}

float lmk_philox_normal(uint64_t seed, uint64_t base, uint64_t i)
{
	uint32_t o[4];
	lmk_philox(seed, base + i / 2, o);
	return box_muller(o[2 * (i % 2)], o[2 * (i % 2) + 1]);
}
