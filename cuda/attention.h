/* attention.h: scaled-dot-product attention on the GPU, the CUDA face of
 * lmk_cpu_attention_forward/backward (lib/ops_cpu.h) with the same arguments
 * and semantics, plus single-token decoding against a KV cache.
 * Owns: nothing (scratch for split decoding and the backward's dq sums is
 * the context's, or taken from the stream's pool and given back before
 * returning). Needs: cuda.h (the context's stream).
 * Never: prints, exits, synchronizes the stream.
 *
 * Shape letters: B batch, T time, H query heads, K key/value heads (H a
 * multiple of K; query head h reads kv head h/(H/K)), D head dim (<= 256),
 * Tk cached keys. All pointers are device pointers; q, k, v, out, dout, dq,
 * dk, dv, the cache are of dtype dt (LMK_F32 or LMK_BF16), lse and delta
 * are float32, seg int32. Query i sees key j when (!causal || j <= i) and,
 * with seg, seg[i] >= 0 and seg[j] == seg[i]; a query that sees nothing
 * outputs 0 and lse -inf. Every call runs on the context's stream. */
#ifndef LMK_CUDA_ATTENTION_H
#define LMK_CUDA_ATTENTION_H

#include <stdint.h>

#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out = softmax(scale q kᵀ + mask) v, lse the logsumexp of each row's
 * logits. @return : 0, LMK_EINVAL for a bad shape or dtype, LMK_EUNSUP for
 * D > 256, LMK_EDEVICE when a launch fails */
int lmk_cuda_attention_forward(void *be, lmk_dtype dt, void *out /*(B,T,H,D)*/,
			       float *lse /*(B,H,T)*/, const void *q /*(B,T,H,D)*/,
			       const void *k /*(B,T,K,D)*/, const void *v /*(B,T,K,D)*/,
			       const int32_t *seg /*(B,T) or NULL*/, int64_t B, int64_t T,
			       int64_t H, int64_t K, int64_t D, float scale, int causal);

/* Adds (+=) the gradients into dq, dk, dv (each may be NULL: not wanted),
 * or assigns (=) those that assign names (bit 0 dq, bit 1 dk, bit 2 dv:
 * gradients not yet written, whose old contents are not read); delta is
 * scratch that ends holding rowsum(dout * out). Deterministic (no
 * float atomics, every sum in a fixed order) unless the context was set
 * nondeterministic, where the BF16 kernels of head dims 64 and 128 sum dq
 * with float atomics instead of in order (its low bits then vary between
 * runs). @return : as the forward, or LMK_ENOMEM when the dq sums' scratch
 * cannot be had */
int lmk_cuda_attention_backward(void *be, lmk_dtype dt, void *dq /*(B,T,H,D)*/,
				void *dk /*(B,T,K,D)*/, void *dv /*(B,T,K,D)*/,
				float *delta /*(B,H,T) scratch*/, const void *dout /*(B,T,H,D)*/,
				const void *q /*(B,T,H,D)*/, const void *k /*(B,T,K,D)*/,
				const void *v /*(B,T,K,D)*/, const void *out /*(B,T,H,D)*/,
				const float *lse /*(B,H,T)*/, const int32_t *seg /*(B,T) or NULL*/,
				int64_t B, int64_t T, int64_t H, int64_t K, int64_t D, float scale,
				int causal, int assign);

/* on != 0 lets the backward of this context sum with float atomics (see
 * above); 0, the default, keeps it deterministic. */
void lmk_cuda_attention_set_nondeterministic(void *be, int on);

/* One new query per head against Tk cached keys, all of them visible (the
 * new token's own key is the cache's last row): the forward's last row of a
 * causal pass over the same keys. Long caches are split over blocks and the
 * parts merged by their logsumexp. Tk == 0 outputs 0.
 * @return : as the forward, or LMK_EDEVICE when scratch cannot be had */
int lmk_cuda_attention_decode(void *be, lmk_dtype dt, void *out /*(H,D)*/,
			      const void *q /*(H,D)*/, const void *kcache /*(Tk,K,D)*/,
			      const void *vcache /*(Tk,K,D)*/, int64_t Tk, int64_t H, int64_t K,
			      int64_t D, float scale);

#ifdef __cplusplus
}
#endif
#endif
