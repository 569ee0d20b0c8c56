/* rope.cu: rotary embedding, rotate_half pairing (i, i + D/2), over N rows
 * of H heads of D dims; one thread per (row, head, pair). The backward is
 * the rotation by the opposite angle, added into dinp. */
#include "common.cuh"

#define THREADS 256

/* sign +1: forward (out =), -1: backward (gout +=). */
template <class T, int BACK>
__global__ void rope_k(T *out, gacc gout, const T *inp, const int32_t *pos, const float *inv_freq,
		       float attn_factor, int64_t N, int64_t H, int64_t D)
{
	int64_t half = D / 2, total = N * H * half;
	for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
	     t += (int64_t)gridDim.x * blockDim.x) {
		int64_t i = t % half, nh = t / half, n = nh / H;
		/* the angle in float32, as the CPU (and Hugging Face) compute it */
		float a = (float)pos[n] * inv_freq[i];
		float c = cosf(a) * attn_factor, s = (BACK ? -1.0f : 1.0f) * sinf(a) * attn_factor;
		const T *x = inp + nh * D;
		float x0 = tof(x[i]), x1 = tof(x[i + half]);
		float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
		if (BACK) {
			gadd(gout, nh * D + i, y0);
			gadd(gout, nh * D + i + half, y1);
		} else {
			out[nh * D + i] = fromf<T>(y0);
			out[nh * D + i + half] = fromf<T>(y1);
		}
	}
}

extern "C" int lmk_cuda_rope_forward(void *be, lmk_dtype dt, void *out, const void *inp,
				     const int32_t *pos, const float *inv_freq, float attn_factor,
				     int64_t N, int64_t H, int64_t D)
{
	int64_t total = N * H * (D / 2);
	if (total == 0)
		return 0;
	LMK_DT_SWITCH(dt, "rope",
		      rope_k<T, 0><<<grid_for(total, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      (T *)out, gacc{NULL, 1}, (const T *)inp, pos, inv_freq, attn_factor, N,
			      H, D));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_rope_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout,
				      const int32_t *pos, const float *inv_freq, float attn_factor,
				      int64_t N, int64_t H, int64_t D)
{
	int64_t total = N * H * (D / 2);
	if (total == 0 || !dinp.p)
		return 0;
	if (check_gbuf("rope", dt, dinp) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "rope",
		      rope_k<T, 1><<<grid_for(total, THREADS), THREADS, 0, LMK_BE(be)->stream>>>(
			      (T *)NULL, to_gacc(dinp), (const T *)dout, pos, inv_freq, attn_factor,
			      N, H, D));
	LMK_CK_LAUNCH();
	return 0;
}
