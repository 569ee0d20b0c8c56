/* fenwick.h: the Fenwick-tree partition of the past that log-linear token
 * mixers (ll-mamba2, ll-gdn) share: key s belongs to level 0 for the query
 * t == s itself, else to level 1 + floor(log2(t XOR s)), so that query t
 * sees O(log t) buckets of keys, each summarised by one state.
 * Owns: nothing. Needs: nothing. Never: allocates, prints or exits. */
#ifndef LMK_FENWICK_H
#define LMK_FENWICK_H

#include <stdint.h>

/* The level of key s for query t (0 <= s <= t). */
static inline int lmk_fenwick_level(int64_t t, int64_t s)
{
	uint64_t x = (uint64_t)t ^ (uint64_t)s;
	return x ? 64 - __builtin_clzll(x) : 0;
}

/* The number of levels that sequences of T tokens use: 1 + the level of
 * the farthest pair, so lmk_fenwick_levels(1) == 1, (2) == 2, (3..4) == 3,
 * (5..8) == 4. */
static inline int lmk_fenwick_levels(int64_t T)
{
	return T <= 1 ? 1 : 1 + (64 - __builtin_clzll((uint64_t)(T - 1)));
}

#endif
