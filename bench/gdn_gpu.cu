/* gdn_gpu.cu: times our Gated DeltaNet kernels (cuda/gdn.cu) on the GPU,
 * forward and forward+backward, BF16, through the launchers of
 * cuda/gdn_cuda.h on the context's stream, with CUDA events: warm-up, then
 * the median of --reps runs.
 *
 * Shapes, as fla's benchmarks of chunk_gated_delta_rule: B*T = 65536
 * tokens, T in {2K, 4K, 8K, 16K, 32K, 64K} (--quick: up to 8K), width
 * H*D = 2048, so H = 16 at D = 128 and H = 32 at D = 64, Dk = Dv = D;
 * q, k unit norm, loga in (-0.1, 0), beta in (0, 1), lam in (0, 1).
 * Variants: the chunked and the recurrent kernels (algo), plain GDN and
 * log-linear (lam; in BF16 with Dk, Dv in {64, 128} both run on the
 * tensor cores).
 * The recurrent kernels are latency-bound (T sequential steps per head, a
 * second or more per call at 64K): they run at T <= 8K only, unless
 * --all-rec.
 *
 * Prints one line per shape and variant (what a script joins with
 * bench/gdn_torch.py's numbers):
 *   ours D T B H variant fwd_ms fwdbwd_ms fwd_Mtok/s fwdbwd_Mtok/s
 * and a check that the outputs are finite. Exit 0, or 1 on a failure.
 * --chunked: the plain chunked variant only; --ll: the log-linear chunked
 * one only; --fwd: forwards only (fwdbwd printed as 0); --T N: that T only.
 * Usage: gdn_gpu [--quick] [--all-rec] [--chunked] [--ll] [--fwd] [--T N]
 *                [--reps N] */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "dtype.h"
#include "err.h"
#include "fenwick.h"
}
#include "backend.h"
#include "cuda.h"
#include "gdn_cuda.h"

#define CK(x)                                                                              \
	do {                                                                               \
		cudaError_t e_ = (x);                                                      \
		if (e_ != cudaSuccess) {                                                   \
			fprintf(stderr, "gdn_gpu: %s:%d: %s: %s\n", __FILE__, __LINE__, #x,  \
				cudaGetErrorString(e_));                                   \
			exit(1);                                                           \
		}                                                                          \
	} while (0)

#define LMK(x)                                                                             \
	do {                                                                               \
		if ((x) < 0) {                                                             \
			fprintf(stderr, "gdn_gpu: %s: %s\n", #x, lmk_errmsg());             \
			exit(1);                                                           \
		}                                                                          \
	} while (0)

enum { ALGO_RECURRENT = 1, ALGO_CHUNKED = 3 }; /* LMK_GDN_* of lib/gdn.h */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float unif(float lo, float hi)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return lo + (hi - lo) * (float)((rng_state >> 40) * (1.0 / 16777216.0));
}

static __nv_bfloat16 *upload_bf16(const std::vector<float> &x)
{
	std::vector<__nv_bfloat16> h(x.size());
	for (size_t i = 0; i < x.size(); i++)
		h[i] = __float2bfloat16_rn(x[i]);
	__nv_bfloat16 *d;
	CK(cudaMalloc(&d, h.size() * sizeof h[0]));
	CK(cudaMemcpy(d, h.data(), h.size() * sizeof h[0], cudaMemcpyHostToDevice));
	return d;
}

static float median(std::vector<float> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

int main(int argc, char **argv)
{
	int quick = 0, allrec = 0, chunked = 0, llonly = 0, fwdonly = 0, reps = 10;
	int64_t only_t = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			quick = 1;
		} else if (!strcmp(argv[i], "--all-rec")) {
			allrec = 1;
		} else if (!strcmp(argv[i], "--chunked")) {
			chunked = 1;
		} else if (!strcmp(argv[i], "--ll")) {
			llonly = 1;
		} else if (!strcmp(argv[i], "--fwd")) {
			fwdonly = 1;
		} else if (!strcmp(argv[i], "--T") && i + 1 < argc) {
			only_t = atoll(argv[++i]);
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			reps = atoi(argv[++i]);
			if (reps < 1) {
				fprintf(stderr, "gdn_gpu: --reps: expected a count >= 1\n");
				return 2;
			}
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("usage: gdn_gpu [--quick] [--all-rec] [--chunked] [--ll] [--fwd] "
			       "[--T N] [--reps N]\n");
			return 0;
		} else {
			fprintf(stderr, "gdn_gpu: unknown option '%s'\n", argv[i]);
			return 2;
		}
	}
	if (lmk_cuda_device_count() == 0) {
		fprintf(stderr, "gdn_gpu: no CUDA device\n");
		return 1;
	}
	void *be;
	LMK(lmk_cuda_init(&be, 0));
	cudaStream_t st = ((lmk_cuda_backend *)be)->stream;
	lmk_cuda_info info;
	LMK(lmk_cuda_device_info(0, &info));
	fprintf(stderr, "gdn_gpu: %s, %d SMs; bf16, B*T = 65536, H*D = 2048, median of %d\n",
		info.name, info.sm_count, reps);
	const int64_t tokens = 65536, width = 2048;
	cudaEvent_t e0, e1;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	int fail = 0;
	for (int D = 64; D <= 128; D *= 2) {
		int64_t H = width / D;
		for (int64_t T = 2048; T <= (quick ? 8192 : 65536); T *= 2) {
			if (only_t && T != only_t)
				continue;
			int64_t B = tokens / T, NL = lmk_fenwick_levels(T);
			int64_t nq = B * T * H * D, ns = B * T * H;
			std::vector<float> q(nq), k(nq), v(nq), la(ns), bt(ns), lam(ns * NL), dout(nq);
			for (int64_t i = 0; i < nq; i += D) {
				double a = 0, c = 0;
				for (int d = 0; d < D; d++) {
					q[i + d] = unif(-1, 1);
					k[i + d] = unif(-1, 1);
					a += q[i + d] * q[i + d];
					c += k[i + d] * k[i + d];
				}
				for (int d = 0; d < D; d++) {
					q[i + d] = (float)(q[i + d] / sqrt(a));
					k[i + d] = (float)(k[i + d] / sqrt(c));
				}
			}
			for (int64_t i = 0; i < nq; i++) {
				v[i] = unif(-1, 1);
				dout[i] = unif(-1, 1);
			}
			for (int64_t i = 0; i < ns; i++) {
				la[i] = unif(-0.1f, 0.0f);
				bt[i] = unif(0.0f, 1.0f);
			}
			for (auto &x : lam)
				x = unif(0.0f, 1.0f);
			__nv_bfloat16 *dq_in = upload_bf16(q), *dk_in = upload_bf16(k),
				      *dv_in = upload_bf16(v), *dla = upload_bf16(la),
				      *dbt = upload_bf16(bt), *dlam = upload_bf16(lam),
				      *ddo = upload_bf16(dout), *out, *gq, *gk, *gv, *gla, *gbt, *glam;
			CK(cudaMalloc(&out, nq * 2));
			CK(cudaMalloc(&gq, nq * 2));
			CK(cudaMalloc(&gk, nq * 2));
			CK(cudaMalloc(&gv, nq * 2));
			CK(cudaMalloc(&gla, ns * 2));
			CK(cudaMalloc(&gbt, ns * 2));
			CK(cudaMalloc(&glam, ns * NL * 2));
			/* the backward adds into them: zeros keep them finite */
			CK(cudaMemset(gq, 0, nq * 2));
			CK(cudaMemset(gk, 0, nq * 2));
			CK(cudaMemset(gv, 0, nq * 2));
			CK(cudaMemset(gla, 0, ns * 2));
			CK(cudaMemset(gbt, 0, ns * 2));
			CK(cudaMemset(glam, 0, ns * NL * 2));
			const float scale = 1.0f / sqrtf((float)D);
			for (int var = 0; var < 4; var++) {
				int algo = var % 2 ? ALGO_RECURRENT : ALGO_CHUNKED, ll = var / 2;
				if (algo == ALGO_RECURRENT && !allrec && T > 8192)
					continue;
				if ((chunked && var != 0) || (llonly && var != 2))
					continue;
				const char *name[4] = {"chunked", "recurrent", "ll-chunked", "ll-recurrent"};
				lmk_gbuf g[6] = {{gq, LMK_BF16},  {gk, LMK_BF16},  {gv, LMK_BF16},
						 {gla, LMK_BF16}, {gbt, LMK_BF16}, {ll ? glam : NULL, LMK_BF16}};
				std::vector<float> tf, tb;
				for (int r = -2; r < reps; r++) {
					CK(cudaEventRecord(e0, st));
					LMK(lmk_cuda_gdn_forward(be, LMK_BF16, out, dq_in, dk_in, dv_in, dla,
								 dbt, ll ? dlam : NULL, B, T, H, D, D,
								 ll ? NL : 0, scale, algo, 64));
					CK(cudaEventRecord(e1, st));
					CK(cudaEventSynchronize(e1));
					float ms;
					CK(cudaEventElapsedTime(&ms, e0, e1));
					if (r >= 0)
						tf.push_back(ms);
					if (fwdonly) {
						tb.push_back(0.0f);
						continue;
					}
					CK(cudaEventRecord(e0, st));
					LMK(lmk_cuda_gdn_forward(be, LMK_BF16, out, dq_in, dk_in, dv_in, dla,
								 dbt, ll ? dlam : NULL, B, T, H, D, D,
								 ll ? NL : 0, scale, algo, 64));
					LMK(lmk_cuda_gdn_backward(be, LMK_BF16, g[0], g[1], g[2], g[3], g[4],
								  g[5], ddo, dq_in, dk_in, dv_in, dla, dbt,
								  ll ? dlam : NULL, B, T, H, D, D,
								  ll ? NL : 0, scale, algo, 64));
					CK(cudaEventRecord(e1, st));
					CK(cudaEventSynchronize(e1));
					CK(cudaEventElapsedTime(&ms, e0, e1));
					if (r >= 0)
						tb.push_back(ms);
				}
				std::vector<__nv_bfloat16> ho(nq);
				CK(cudaMemcpy(ho.data(), out, nq * 2, cudaMemcpyDeviceToHost));
				for (int64_t i = 0; i < nq; i++)
					if (!isfinite(__bfloat162float(ho[i]))) {
						fprintf(stderr, "gdn_gpu: D=%d T=%lld %s: non-finite output\n", D,
							(long long)T, name[var]);
						fail = 1;
						break;
					}
				float f = median(tf), fb = median(tb);
				printf("ours %d %lld %lld %lld %s %.3f %.3f %.1f %.1f\n", D, (long long)T,
				       (long long)B, (long long)H, name[var], f, fb,
				       tokens / (f * 1e3), tokens / (fb * 1e3));
				fflush(stdout);
			}
			cudaFree(dq_in), cudaFree(dk_in), cudaFree(dv_in), cudaFree(dla), cudaFree(dbt);
			cudaFree(dlam), cudaFree(ddo), cudaFree(out), cudaFree(gq), cudaFree(gk);
			cudaFree(gv), cudaFree(gla), cudaFree(gbt), cudaFree(glam);
		}
	}
	lmk_cuda_free(be);
	return fail;
}
