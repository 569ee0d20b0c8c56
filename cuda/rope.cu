/* rope.cu: rotary embedding, rotate_half pairing (i, i + D/2), over N rows
 * of H heads of D dims; one thread per (row, head, pair). The backward is
 * the rotation by the opposite angle, added into dinp (or assigned: gput).
 * Eight pairs a thread in four heads of a row (16-byte accesses, the
 * angles computed once for the four) when D is a multiple of 16 and the
 * rows are aligned. */
#include "common.cuh"

#define THREADS 256

/* sign +1: forward (out =), -1: backward (gout += or, set, =). */
template <class T, int BACK>
__global__ void rope_k(T *out, gacc gout, bool set, const T *inp, const int32_t *pos,
		       const float *inv_freq, float attn_factor, int64_t N, int64_t H, int64_t D)
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
			gput(gout, set, nh * D + i, y0);
			gput(gout, set, nh * D + i + half, y1);
		} else {
			out[nh * D + i] = fromf<T>(y0);
			out[nh * D + i + half] = fromf<T>(y1);
		}
	}
}

/* The same, eight pairs a thread (i .. i+7 with their partners) in RH
 * heads of a row: D a multiple of 16 and aligned rows (rope_vec). The
 * angles depend on the row's position and i alone, so a thread computes
 * its eight sines and cosines once for its RH heads (one sincosf each: the
 * bits of sinf and cosf), then loads the heads' pairs together (raw words,
 * no branch between the loads) and rotates them. The index arithmetic in
 * I: int where N*H*D fits (64-bit divisions cost more than the rotation).
 * On the H200 at the 110M model's q (32768 x 12 x 64, bench/bw_gpu.cu):
 * 30.2 us forward, 31.9 backward, 32.9 and 32.7 with a thread a head
 * (eight sincosf for 16 elements); all twelve heads a thread: 31.9, 32.0. */
#define RH 4

/* rope8_k's threads: one a (row, RH heads, eight pairs) */
static int64_t rope8_items(int64_t N, int64_t H, int64_t D)
{
	return N * ((H + RH - 1) / RH) * (D / 16);
}

template <class T, int BACK, class I>
__global__ void rope8_k(T *out, gacc gout, bool set, const T *inp, const int32_t *pos,
			const float *inv_freq, float attn_factor, int64_t N_, int64_t H_, int64_t D_)
{
	const I H = (I)H_, D = (I)D_, half = D / 2, g8 = half / 8, HQ = (H + RH - 1) / RH,
		total = (I)N_ * HQ * g8;
	for (I t = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; t < total;
	     t += (I)gridDim.x * (I)blockDim.x) {
		I i = t % g8 * 8, h0 = t / g8 % HQ * RH, n = t / g8 / HQ;
		float p = (float)pos[n], c[8], s[8];
		for (int k = 0; k < 8; k++) {
			float a = p * inv_freq[i + k], sn, cs;
			sincosf(a, &sn, &cs);
			c[k] = cs * attn_factor;
			s[k] = (BACK ? -1.0f : 1.0f) * sn * attn_factor;
		}
		/* past the last head, loads of the last again */
		packed8<T> a[RH], b[RH];
#pragma unroll
		for (int r = 0; r < RH; r++) {
			I h = h0 + r < H ? h0 + r : H - 1;
			const T *x = inp + ((int64_t)n * H + h) * D;
			ld_packed8(a[r], x + i);
			ld_packed8(b[r], x + i + half);
		}
#pragma unroll
		for (int r = 0; r < RH; r++)
			if (h0 + r < H) {
				float x0[8], x1[8], y0[8], y1[8];
				unpack8(x0, a[r]);
				unpack8(x1, b[r]);
				for (int k = 0; k < 8; k++) {
					y0[k] = x0[k] * c[k] - x1[k] * s[k];
					y1[k] = x1[k] * c[k] + x0[k] * s[k];
				}
				int64_t at = ((int64_t)n * H + h0 + r) * D + i;
				if (BACK) {
					gput8(gout, set, at, y0);
					gput8(gout, set, at + half, y1);
				} else {
					st8(out + at, y0);
					st8(out + at + half, y1);
				}
			}
	}
}

/* rope8_k's index type */
static bool rope_small(int64_t N, int64_t H, int64_t D) { return N * H * D < INT32_MAX; }

static bool rope_vec(int64_t D, const void *a, const void *b) { return D % 16 == 0 && al16(a) && al16(b); }

extern "C" int lmk_cuda_rope_forward(void *be, lmk_dtype dt, void *out, const void *inp,
				     const int32_t *pos, const float *inv_freq, float attn_factor,
				     int64_t N, int64_t H, int64_t D)
{
	int64_t total = N * H * (D / 2);
	if (total == 0)
		return 0;
	unsigned grid8 = grid_for(rope8_items(N, H, D), THREADS);
	if (rope_vec(D, out, inp) && rope_small(N, H, D))
		LMK_DT_SWITCH(dt, "rope",
			      rope8_k<T, 0, int><<<grid8, THREADS, 0,
						   LMK_BE(be)->stream>>>((T *)out, gacc{NULL, 1}, false,
									 (const T *)inp, pos, inv_freq,
									 attn_factor, N, H, D));
	else if (rope_vec(D, out, inp))
		LMK_DT_SWITCH(dt, "rope",
			      rope8_k<T, 0, int64_t><<<grid8, THREADS, 0,
						       LMK_BE(be)->stream>>>(
				      (T *)out, gacc{NULL, 1}, false, (const T *)inp, pos, inv_freq,
				      attn_factor, N, H, D));
	else
		LMK_DT_SWITCH(dt, "rope",
			      rope_k<T, 0><<<grid_for(total, THREADS), THREADS, 0,
					     LMK_BE(be)->stream>>>((T *)out, gacc{NULL, 1}, false,
								   (const T *)inp, pos, inv_freq,
								   attn_factor, N, H, D));
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_rope_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, const void *dout,
				      const int32_t *pos, const float *inv_freq, float attn_factor,
				      int64_t N, int64_t H, int64_t D, int assign)
{
	int64_t total = N * H * (D / 2);
	if (total == 0 || !dinp.p)
		return 0;
	if (check_gbuf("rope", dt, dinp) < 0)
		return lmk_errcode();
	unsigned grid8 = grid_for(rope8_items(N, H, D), THREADS);
	if (rope_vec(D, dinp.p, dout) && rope_small(N, H, D))
		LMK_DT_SWITCH(dt, "rope",
			      rope8_k<T, 1, int><<<grid8, THREADS, 0,
						   LMK_BE(be)->stream>>>((T *)NULL, to_gacc(dinp),
									 assign & 1, (const T *)dout, pos,
									 inv_freq, attn_factor, N, H, D));
	else if (rope_vec(D, dinp.p, dout))
		LMK_DT_SWITCH(dt, "rope",
			      rope8_k<T, 1, int64_t><<<grid8, THREADS, 0,
						       LMK_BE(be)->stream>>>(
				      (T *)NULL, to_gacc(dinp), assign & 1, (const T *)dout, pos,
				      inv_freq, attn_factor, N, H, D));
	else
		LMK_DT_SWITCH(dt, "rope",
			      rope_k<T, 1><<<grid_for(total, THREADS), THREADS, 0,
					     LMK_BE(be)->stream>>>((T *)NULL, to_gacc(dinp),
								   assign & 1, (const T *)dout, pos,
								   inv_freq, attn_factor, N, H, D));
	LMK_CK_LAUNCH();
	return 0;
}
