/* gdn_cuda.h: Gated DeltaNet and log-linear Gated DeltaNet on the GPU, the
 * CUDA face of lmk_cpu_gdn_forward/backward and lmk_cpu_gdn_step (lib/gdn.h)
 * with the same arguments and semantics, after the backend and the compute
 * dtype dt (LMK_F32 or LMK_BF16: inputs, output and activation gradients
 * in dt, every sum and every state in float32).
 * Owns: nothing (the backward's checkpoints come from the backend's scratch).
 * Needs: common.cuh (the backend's stream and scratch).
 * Never: prints, exits, synchronizes the stream, allocates a step's memory.
 *
 * Shape letters as in gdn.h. Limits of these kernels: Dk <= 128, Dv <= 128.
 * Two sets of kernels, picked by algo (lmk_gdn_opts.algo):
 *  - LMK_GDN_RECURRENT: the recurrence with the state split by value column
 *    (each column of S evolves on its own given k, beta, a): the forward
 *    and the decoding step in blocks of 8 or 16 columns, the backward in
 *    one block per head (the gradients of q, k, beta, loga and lam are sums
 *    over the columns, reduced in a fixed order), from states checkpointed
 *    every ~sqrt(T) steps in scratch (2 sqrt(T) nlev Dk Dv float32 a head);
 *  - any other algo: the chunked form of lib/gdn.c with chunks of 64 (the
 *    chunk option is ignored), float32 on CUDA cores: per-chunk matrices
 *    in parallel over chunks, then the (per-level) states through the
 *    chunks; backward: the entering states and the leaving-state gradients
 *    of every chunk (sequential passes over the chunks), then every
 *    chunk's token gradients in parallel. Scratch: about (3 Dk + 2 Dv)
 *    floats a token forward; backward (6 Dk + 5 Dv) + 2 nlevc Dk Dv / 64,
 *    nlevc the chunk-level Fenwick levels (1 for plain GDN). In BF16 with
 *    Dk, Dv in {64, 128} the same algebra runs on the tensor cores (WY/UT
 *    form, bf16 operands, float32 sums and states): plain GDN with scratch
 *    about Dk + Dv bf16 a token forward, Dk + 3 Dv + 66 + Dk Dv / 32
 *    backward; log-linear GDN (up to 2^15 chunks) with the intra-chunk
 *    levels as a mask on the chunk's attention matrix and one state per
 *    chunk level in shared memory, scratch about 2 Dk + Dv + 66 bf16 a
 *    token forward, plus Dk Dv (log2(T/64) + 1) / 64 backward (the saved
 *    per-level states and their gradients).
 * Both are deterministic: no atomics, every sum in a fixed order.
 * @return (every launcher) : 0, LMK_EUNSUP (a head dim over 128, too many
 * levels, a gradient dtype) or LMK_EDEVICE / LMK_ENOMEM with a message */
#ifndef LMK_CUDA_GDN_H
#define LMK_CUDA_GDN_H

#include <stdint.h>

#include "ops_cuda.h" /* lmk_gbuf, dtype.h */

#ifdef __cplusplus
extern "C" {
#endif

int lmk_cuda_gdn_forward(void *be, lmk_dtype dt, void *out /*(B,T,H,Dv)*/,
			 const void *q /*(B,T,H,Dk)*/, const void *k /*(B,T,H,Dk)*/,
			 const void *v /*(B,T,H,Dv)*/, const void *loga /*(B,T,H) or NULL*/,
			 const void *beta /*(B,T,H)*/, const void *lam /*(B,T,H,NL) or NULL*/,
			 int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv, int64_t NL,
			 float scale, int algo, int chunk);

/* Adds (+=) into the gradients whose pointer is not NULL. */
int lmk_cuda_gdn_backward(void *be, lmk_dtype dt, lmk_gbuf dq /*(B,T,H,Dk)*/,
			  lmk_gbuf dk /*(B,T,H,Dk)*/, lmk_gbuf dv /*(B,T,H,Dv)*/,
			  lmk_gbuf dloga /*(B,T,H)*/, lmk_gbuf dbeta /*(B,T,H)*/,
			  lmk_gbuf dlam /*(B,T,H,NL)*/, const void *dout /*(B,T,H,Dv)*/,
			  const void *q, const void *k, const void *v, const void *loga,
			  const void *beta, const void *lam, int64_t B, int64_t T, int64_t H,
			  int64_t Dk, int64_t Dv, int64_t NL, float scale, int algo, int chunk);

/* One token at position t for every (b,h); S (float32, device) in and out. */
int lmk_cuda_gdn_step(void *be, lmk_dtype dt, float *S /*(B,H,nlev,Dk,Dv)*/,
		      void *out /*(B,H,Dv)*/, const void *q /*(B,H,Dk)*/, const void *k /*(B,H,Dk)*/,
		      const void *v /*(B,H,Dv)*/, const void *loga /*(B,H) or NULL*/,
		      const void *beta /*(B,H)*/, const void *lam /*(B,H,NL) or NULL*/, int64_t B,
		      int64_t H, int64_t Dk, int64_t Dv, int64_t NL, int nlev, int64_t t,
		      float scale);

#ifdef __cplusplus
}
#endif
#endif
