/* decode_scan.cuh: the key scan shared by the one-query attention kernels
 * over a KV cache (attention.cu's decode_part, with the cache length from
 * the host; decode.cu's attn_part_k, with it from device memory). A group
 * of tpr threads per key, eight elements of the head dim each (one 16-byte
 * load for BF16 when VEC), G groups in flight; each group runs an online
 * softmax in log2 units over its keys of [jb, je) and leaves its running
 * max, sum and D outputs in shared memory for the caller's merge. With the
 * keys split across blocks, dec_merge then joins the blocks' parts. */
#pragma once

#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

/* f = p[0..n) as floats, zeros after; n == 8 with VEC is one 16-byte load
 * (two for float32) */
template <typename T, bool VEC>
static __device__ __forceinline__ void dec_load8(float (&f)[8], const T *p, int n)
{
	if (VEC && n == 8) {
		if constexpr (sizeof(T) == 2) {
			uint4 u = *(const uint4 *)p;
			const __nv_bfloat162 *h2 = (const __nv_bfloat162 *)&u;
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float2 x = __bfloat1622float2(h2[e]);
				f[2 * e] = x.x;
				f[2 * e + 1] = x.y;
			}
		} else {
			float4 a = *(const float4 *)p, c = *((const float4 *)p + 1);
			f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
			f[4] = c.x, f[5] = c.y, f[6] = c.z, f[7] = c.w;
		}
		return;
	}
#pragma unroll
	for (int e = 0; e < 8; e++) {
		if constexpr (sizeof(T) == 2)
			f[e] = e < n ? __bfloat162float(p[e]) : 0.f;
		else
			f[e] = e < n ? (float)p[e] : 0.f;
	}
}

/* Query head h (kv head g) against keys [jb, je) of the caches (rows of
 * K * D): group grp's (m, l) to sm_m[grp], sm_l[grp] (written by its sub 0)
 * and its outputs to sm_o[grp * D ..]. The caller synchronises. */
template <typename T, bool VEC>
static __device__ __forceinline__ void dec_scan(float *sm_m, float *sm_l, float *sm_o,
						const T *__restrict__ q, const T *__restrict__ kc,
						const T *__restrict__ vc, int h, int g, int K,
						int D, float scale_log2, int jb, int je, int G,
						int grp, int sub, int tpr)
{
	const int d0 = sub * 8, nd = max(0, min(8, D - d0));
	const int64_t ldk = (int64_t)K * D;
	float qf[8], o[8];
	dec_load8<T, VEC>(qf, q + (int64_t)h * D + d0, nd);
#pragma unroll
	for (int e = 0; e < 8; e++) {
		qf[e] *= scale_log2;
		o[e] = 0.f;
	}
	float m = -INFINITY, l = 0.f;
	/* the same trip count for every group: the shuffles have the whole warp */
	for (int base = jb; base < je; base += G) {
		const int j = base + grp;
		const bool ok = j < je;
		float kf[8], vf[8];
		const int64_t off = (int64_t)(ok ? j : jb) * ldk + (int64_t)g * D + d0;
		dec_load8<T, VEC>(kf, kc + off, ok ? nd : 0);
		dec_load8<T, VEC>(vf, vc + off, ok ? nd : 0);
		float x = 0.f;
#pragma unroll
		for (int e = 0; e < 8; e++)
			x += qf[e] * kf[e];
		for (int w = tpr >> 1; w > 0; w >>= 1)
			x += __shfl_xor_sync(0xffffffffu, x, w);
		if (ok) {
			const float mn = fmaxf(m, x), c = exp2f(m - mn), p = exp2f(x - mn);
			l = l * c + p;
#pragma unroll
			for (int e = 0; e < 8; e++)
				o[e] = o[e] * c + p * vf[e];
			m = mn;
		}
	}
	if (sub == 0) {
		sm_m[grp] = m;
		sm_l[grp] = l;
	}
#pragma unroll
	for (int e = 0; e < 8; e++)
		if (e < nd)
			sm_o[grp * D + d0 + e] = o[e];
}

/* One head's nsplit parts (m, l and D outputs each, m in log2 units; a
 * part with no keys has l = 0) merged into its D outputs: put(d, value)
 * for d from threadIdx.x in steps of NT, the block's threads. */
template <int NT, class Put>
static __device__ __forceinline__ void dec_merge(const float *ph, int nsplit, int D, Put put)
{
	float M = -INFINITY;
	for (int s = 0; s < nsplit; s++)
		M = fmaxf(M, ph[s * (D + 2)]);
	const float Mu = M == -INFINITY ? 0.f : M;
	float L = 0.f;
	for (int s = 0; s < nsplit; s++)
		L += ph[s * (D + 2) + 1] * exp2f(ph[s * (D + 2)] - Mu);
	for (int d = threadIdx.x; d < D; d += NT) {
		float acc = 0.f;
		for (int s = 0; s < nsplit; s++)
			acc += ph[s * (D + 2) + 2 + d] * exp2f(ph[s * (D + 2)] - Mu);
		put(d, L > 0.f ? acc / L : 0.f);
	}
}
