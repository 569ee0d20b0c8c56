/* gdn_gpu.cu: times our Gated DeltaNet kernels (cuda/gdn.cu) on the GPU,
 * forward and forward+backward, BF16, through the launchers of
 * cuda/gdn_cuda.h on the context's stream, with CUDA events: warm-up, then
 * the median of --reps runs.
 *
 * Shapes, as fla's benchmarks of chunk_gated_delta_rule: B*T = 65536
 * tokens, T in {2K, 4K, 8K, 16K, 32K, 64K} (--quick: up to 8K), width
 * H*D = 2048, so H = 16 at D = 128 and H = 32 at D = 64, Dk = Dv = D;
 * q, k unit norm, loga in (-0.1, 0), beta in (0, 1), lam in (0, 1), made
 * on the device (a hash of the index, no host time).
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

/* Uniform in [lo, hi) from a hash (splitmix64) of the seed and the index:
 * the inputs are made on the device, so that a shape costs no host time. */
static __device__ float unif(uint64_t seed, int64_t i, float lo, float hi)
{
	uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z ^= z >> 31;
	return lo + (hi - lo) * (float)((z >> 40) * (1.0 / 16777216.0));
}

__global__ void fill_unif(__nv_bfloat16 *x, int64_t n, float lo, float hi, uint64_t seed)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		x[i] = __float2bfloat16_rn(unif(seed, i, lo, hi));
}

/* Rows of D (<= 128) uniform in (-1, 1), then of unit norm: a warp a row. */
__global__ void fill_unit_rows(__nv_bfloat16 *x, int64_t rows, int D, uint64_t seed)
{
	const int lane = threadIdx.x & 31;
	for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32; r < rows;
	     r += (int64_t)gridDim.x * blockDim.x / 32) {
		float e[4], a = 0.0f;
		for (int j = 0; j < 4; j++) {
			int d = lane + 32 * j;
			e[j] = d < D ? unif(seed, r * D + d, -1.0f, 1.0f) : 0.0f;
			a += e[j] * e[j];
		}
		for (int o = 16; o > 0; o >>= 1)
			a += __shfl_xor_sync(0xffffffffu, a, o);
		const float inv = rsqrtf(a);
		for (int j = 0; j < 4; j++)
			if (lane + 32 * j < D)
				x[r * D + lane + 32 * j] = __float2bfloat16_rn(e[j] * inv);
	}
}

static __nv_bfloat16 *make_unif(int64_t n, float lo, float hi, uint64_t seed)
{
	__nv_bfloat16 *d;
	CK(cudaMalloc(&d, n * sizeof *d));
	fill_unif<<<1024, 256>>>(d, n, lo, hi, seed);
	CK(cudaGetLastError());
	return d;
}

static __nv_bfloat16 *make_unit_rows(int64_t rows, int D, uint64_t seed)
{
	__nv_bfloat16 *d;
	CK(cudaMalloc(&d, rows * D * sizeof *d));
	fill_unit_rows<<<1024, 256>>>(d, rows, D, seed);
	CK(cudaGetLastError());
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
			__nv_bfloat16 *dq_in = make_unit_rows(ns, D, 1), *dk_in = make_unit_rows(ns, D, 2),
				      *dv_in = make_unif(nq, -1.0f, 1.0f, 3),
				      *dla = make_unif(ns, -0.1f, 0.0f, 4),
				      *dbt = make_unif(ns, 0.0f, 1.0f, 5),
				      *dlam = make_unif(ns * NL, 0.0f, 1.0f, 6),
				      *ddo = make_unif(nq, -1.0f, 1.0f, 7), *out, *gq, *gk, *gv, *gla,
				      *gbt, *glam;
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
