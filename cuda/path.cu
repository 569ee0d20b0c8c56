/* path.cu: PaTH attention on the GPU (cuda/path_cuda.h). Placeholder until
 * the kernels land: every launcher reports LMK_EUNSUP. */
#include <stdint.h>

extern "C" {
#include "dtype.h"
#include "err.h"
#include "path.h"
}
#include "path_cuda.h"

extern "C" int lmk_cuda_path_forward(void *be, lmk_dtype dt, void *out, const void *q,
				     const void *k, const void *v, const void *w, const void *beta,
				     const void *logf, struct lmk_path_ws *ws, float scale)
{
	return lmk_err(LMK_EUNSUP, "path_attention: no cuda kernel yet");
}

extern "C" int lmk_cuda_path_backward(void *be, lmk_dtype dt, lmk_gbuf dq, lmk_gbuf dk,
				      lmk_gbuf dv, lmk_gbuf dw, lmk_gbuf dbeta, lmk_gbuf dlogf,
				      const void *dout, const void *out, const void *q,
				      const void *k, const void *v, const void *w,
				      const void *beta, const void *logf, struct lmk_path_ws *ws,
				      float scale)
{
	return lmk_err(LMK_EUNSUP, "path_attention: no cuda kernel yet");
}

extern "C" int lmk_cuda_path_cache_update(void *be, lmk_dtype dt, void *kc, void *vc,
					  float *bias, const void *k, const void *v,
					  const void *w, const void *beta, const void *logf,
					  int64_t B, int64_t cap, int64_t len, int64_t H,
					  int64_t K, int64_t D)
{
	return lmk_err(LMK_EUNSUP, "path_decode: no cuda kernel yet");
}

extern "C" int lmk_cuda_path_decode_attend(void *be, lmk_dtype dt, void *out, const void *q,
					   const void *kc, const void *vc, const float *bias,
					   int64_t B, int64_t cap, int64_t len, int64_t H,
					   int64_t K, int64_t D, float scale)
{
	return lmk_err(LMK_EUNSUP, "path_decode: no cuda kernel yet");
}
