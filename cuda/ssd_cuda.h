/* ssd_cuda.h: the CUDA face of lmk_ssd (lib/ssd.h), the chunked form of the
 * scalar-decay linear mixers (linear attention, Mamba-2/SSD, log-linear
 * Mamba-2), with the arguments of lmk_cpu_ssd_forward/backward after the
 * backend and the compute dtype dt (LMK_F32 or LMK_BF16), plus one token of
 * the decoding recurrence.
 * Inputs and the output are in dt, gradients are lmk_gbufs (dt or F32) that
 * the backward adds (+=) into; every sum is accumulated in float32 in a fixed
 * order (no float atomics), so two runs give the same bits.
 * Owns: nothing (scratch comes from the backend). Needs: cuda.h, backend.h.
 * Never: allocates memory of a step, checks shapes (lib/ssd.c does), prints,
 * synchronizes the stream.
 * @return (every launcher) : 0, LMK_EUNSUP (Dk or Dv > 128, B*H > 65535, a
 * dtype other than F32 and BF16) or LMK_EDEVICE, with a message */
#ifndef LMK_CUDA_SSD_H
#define LMK_CUDA_SSD_H

#include <stdint.h>

#include "ops_cuda.h" /* lmk_gbuf */

#ifdef __cplusplus
extern "C" {
#endif

/* chunk is the requested chunk: at most 64 is used, rounded down to a power
 * of two with lam and more than one chunk, as on the CPU. */
int lmk_cuda_ssd_forward(void *be, lmk_dtype dt, void *out /*(B,T,H,Dv)*/,
			 const void *q /*(B,T,G,Dk)*/, const void *k /*(B,T,G,Dk)*/,
			 const void *v /*(B,T,H,Dv)*/, const void *loga /*(B,T,H) or NULL*/,
			 const void *lam /*(B,T,H,NL) or NULL*/, int64_t B, int64_t T, int64_t H,
			 int64_t G, int64_t Dk, int64_t Dv, int64_t NL, float scale, int chunk);

/* out is the forward's output (for the decay's gradient). */
int lmk_cuda_ssd_backward(void *be, lmk_dtype dt, lmk_gbuf dq /*(B,T,G,Dk)*/,
			  lmk_gbuf dk /*(B,T,G,Dk)*/, lmk_gbuf dv /*(B,T,H,Dv)*/,
			  lmk_gbuf dloga /*(B,T,H)*/, lmk_gbuf dlam /*(B,T,H,NL)*/,
			  const void *dout /*(B,T,H,Dv)*/, const void *q, const void *k,
			  const void *v, const void *loga, const void *lam,
			  const void *out /*(B,T,H,Dv)*/, int64_t B, int64_t T, int64_t H,
			  int64_t G, int64_t Dk, int64_t Dv, int64_t NL, float scale, int chunk);

/* Token t (of T in the inputs' time dim) at absolute position pos of the
 * recurrence on the float32 states S (B,H,max(NL,1),Dk,Dv): binary-counter
 * merge (NL > 0), decay, k vᵀ, and row t of out. */
int lmk_cuda_ssd_step(void *be, lmk_dtype dt, void *out /*(B,T,H,Dv)*/,
		      float *S /*(B,H,max(NL,1),Dk,Dv)*/, const void *q /*(B,T,G,Dk)*/,
		      const void *k /*(B,T,G,Dk)*/, const void *v /*(B,T,H,Dv)*/,
		      const void *loga /*(B,T,H) or NULL*/, const void *lam /*(B,T,H,NL) or NULL*/,
		      int64_t B, int64_t T, int64_t t, int64_t pos, int64_t H, int64_t G,
		      int64_t Dk, int64_t Dv, int64_t NL, float scale);

/* BF16 with Dk, Dv and the chunk multiples of 16 runs the chunk products
 * on the tensor cores (mma.sync, bf16 operands, fp32 accumulation) unless this
 * turns them off (on 0) for the whole process: for tests and benchmarks
 * that compare the two kernel families. F32 always runs fp32 CUDA cores. */
void lmk_cuda_ssd_tensor_cores(int on);

#ifdef __cplusplus
}
#endif
#endif
