/* ssd.cu: the scalar-decay linear mixers on the GPU (ssd_cuda.h). */
#include "common.cuh"
#include "ssd_cuda.h"

extern "C" int lmk_cuda_ssd_forward(void *be, lmk_dtype dt, void *out, const void *q,
				    const void *k, const void *v, const void *loga,
				    const void *lam, int64_t B, int64_t T, int64_t H, int64_t G,
				    int64_t Dk, int64_t Dv, int64_t NL, float scale, int chunk)
{
	return lmk_err(LMK_EUNSUP, "ssd: no cuda kernel yet");
}

extern "C" int lmk_cuda_ssd_backward(void *be, lmk_dtype dt, lmk_gbuf dq, lmk_gbuf dk,
				     lmk_gbuf dv, lmk_gbuf dloga, lmk_gbuf dlam,
				     const void *dout, const void *q, const void *k,
				     const void *v, const void *loga, const void *lam,
				     const void *out, int64_t B, int64_t T, int64_t H, int64_t G,
				     int64_t Dk, int64_t Dv, int64_t NL, float scale, int chunk)
{
	return lmk_err(LMK_EUNSUP, "ssd: no cuda kernel yet");
}

extern "C" int lmk_cuda_ssd_step(void *be, lmk_dtype dt, void *out, float *S, const void *q,
				 const void *k, const void *v, const void *loga,
				 const void *lam, int64_t B, int64_t T, int64_t t, int64_t pos,
				 int64_t H, int64_t G, int64_t Dk, int64_t Dv, int64_t NL,
				 float scale)
{
	return lmk_err(LMK_EUNSUP, "ssd: no cuda kernel yet");
}
