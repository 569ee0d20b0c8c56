/* attention_wg.h: attention's BF16 forward and backward at head dims 64
 * and 128 on Hopper's warpgroup MMA (wgmma, sm_90a only): the kernels of
 * attention_wg.cu, which attention.cu launches in place of its mma.sync
 * kernels where it can.
 * Needs: the caller's scratch for the ordered dq sums (as attention.cu's
 * fused backward). Never: allocates, prints, synchronizes. */
#ifndef LMK_CUDA_ATTENTION_WG_H
#define LMK_CUDA_ATTENTION_WG_H

#include <cuda_runtime.h>
#include <stdint.h>

#include <cuda_bf16.h>

/* Keys a block, query rows a tile, warps a block: the counters of the
 * ordered dq sums are one per (batch, query head, query tile, warp). */
#define ATTN_WG_BC 128
#define ATTN_WG_BR 64
#define ATTN_WG_NW 8

/* Whether the sm_90a kernel runs on the current device (and the
 * environment does not turn it off: LMK_ATTENTION_WG=0). */
bool attention_wg_usable();

/* The fused deterministic backward of attention.cu's bwd_fused_mma<D,
 * true> on wgmma, D 64 or 128: adds into dk, dv (each may be NULL) and,
 * with dqw, into dq, or assigns those that assign names (bit 0 dq, 1 dk,
 * 2 dv). dqw (B,T,H,D) float32 scratch and sem (1 +
 * B*H*ceil(T/ATTN_WG_BR)*ATTN_WG_NW ints, zeroed) as there; rot as there.
 * q, dout, dq (B,T,H,D), k, v, dk, dv (B,T,K,D), lse and delta (B,H,T),
 * seg (B,T) or NULL.
 * @return : 0, or LMK_EDEVICE when the launch fails */
int attention_wg_backward(cudaStream_t st, float *dqw, __nv_bfloat16 *dq, int *sem,
			  __nv_bfloat16 *dk, __nv_bfloat16 *dv, const __nv_bfloat16 *dout,
			  const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
			  const float *lse, const float *delta, const int32_t *seg, int B, int T,
			  int H, int K, int D, float scale, int causal, int rot, int assign);

/* The forward of attention.cu's fwd_mma<D> on wgmma, D 64 or 128 (scale
 * > 0): out = softmax(scale q kᵀ + mask) v and lse as lmk_cuda_attention_
 * forward's. @return : 0, or LMK_EDEVICE when the launch fails */
int attention_wg_forward(cudaStream_t st, __nv_bfloat16 *out, float *lse,
			 const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
			 const int32_t *seg, int B, int T, int H, int K, int D, float scale,
			 int causal);

#endif
