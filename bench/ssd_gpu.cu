/* ssd_gpu.cu: times the scalar-decay linear mixers (cuda/ssd.cu) against our
 * softmax attention (cuda/attention.cu) on the GPU, BF16, forward and
 * forward+backward, with CUDA events on the context's stream: warm-up, then
 * the median of --reps runs.
 *
 * Shapes: B*T = 65536 tokens (--tokens), T in {2K, 4K, ..., 64K} (--quick:
 * up to 8K), model width H*D = 2048 (H = 16 at D = 128, H = 32 at D = 64),
 * G = H (one key group per head, as attention's K = H), chunk 64.
 * Variants: attn (causal softmax attention, scale 1/sqrt(D)), ssd (Mamba-2:
 * loga, no lam), ll (log-linear Mamba-2: loga and lam with
 * lmk_fenwick_levels(T) levels). The linear mixers' cost grows as T (ssd) or
 * T log T (ll) per token row, attention's as T^2: the point of the table is
 * where ll's forward+backward drops below attention's.
 *
 * Prints one line per (D, T):
 *   ours D T B H attn_fwd attn_fwdbwd ssd_fwd ssd_fwdbwd ll_fwd ll_fwdbwd   (ms)
 * then checks that outputs are finite. Exit 0, 1 on a failure, 2 on a
 * usage error. Usage: ssd_gpu [--quick] [--simple] [--no-attn] [--shape D T]
 * [--reps N] [--tokens N] (--simple: the linear mixers without tensor cores,
 * fp32 CUDA-core kernels; --no-attn: attention's columns left out, 0;
 * --shape: that row alone; the last two for profilers). */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <vector>

extern "C" {
#include "dtype.h"
#include "err.h"
#include "fenwick.h"
}
#include "attention.h"
#include "backend.h"
#include "cuda.h"
#include "ssd_cuda.h"

#define CK(x)                                                                                \
	do {                                                                                 \
		cudaError_t e_ = (x);                                                        \
		if (e_ != cudaSuccess) {                                                     \
			fprintf(stderr, "ssd_gpu: %s:%d: %s: %s\n", __FILE__, __LINE__, #x,  \
				cudaGetErrorString(e_));                                     \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

#define LMK(x)                                                                               \
	do {                                                                                 \
		if ((x) < 0) {                                                               \
			fprintf(stderr, "ssd_gpu: %s: %s\n", #x, lmk_errmsg());              \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

/* Uniform in [lo, hi) from a hash of the index. */
__global__ void fill_kernel(__nv_bfloat16 *p, size_t n, uint32_t seed, float lo, float hi)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		uint32_t x = (uint32_t)i * 0x9E3779B9u ^ seed;
		x ^= x >> 16;
		x *= 0x7feb352du;
		x ^= x >> 15;
		x *= 0x846ca68bu;
		x ^= x >> 16;
		p[i] = __float2bfloat16(lo + (hi - lo) * ((float)(x >> 8) * (1.0f / 16777216.0f)));
	}
}

static void fill(__nv_bfloat16 *p, size_t n, uint32_t seed, float lo, float hi)
{
	fill_kernel<<<1024, 256>>>(p, n, seed, lo, hi);
	CK(cudaGetLastError());
}

static float median(std::vector<float> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

static int finite_tail(const __nv_bfloat16 *p, size_t n)
{
	std::vector<uint16_t> h(4096 < n ? 4096 : n);
	CK(cudaMemcpy(h.data(), p + n - h.size(), h.size() * 2, cudaMemcpyDeviceToHost));
	int ok = 1;
	for (uint16_t x : h)
		ok &= isfinite(lmk_bf16_to_f32(x)) != 0;
	return ok;
}

int main(int argc, char **argv)
{
	int quick = 0, reps = 10, simple = 0, attn = 1, oD = 0;
	int64_t tokens = 65536, oT = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = 1;
		else if (!strcmp(argv[i], "--simple"))
			simple = 1;
		else if (!strcmp(argv[i], "--no-attn"))
			attn = 0;
		else if (!strcmp(argv[i], "--shape") && i + 2 < argc) {
			oD = atoi(argv[++i]);
			oT = atoll(argv[++i]);
		}
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
			tokens = atoll(argv[++i]);
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("usage: ssd_gpu [--quick] [--simple] [--no-attn] [--shape D T] [--reps N] "
			       "[--tokens N]\n");
			return 0;
		} else {
			fprintf(stderr, "ssd_gpu: unknown option '%s'\n", argv[i]);
			return 2;
		}
	}
	if (reps < 1)
		reps = 1;
	if (tokens < 2048)
		tokens = 2048;
	if (lmk_cuda_device_count() == 0) {
		fprintf(stderr, "ssd_gpu: no CUDA device\n");
		return 1;
	}
	lmk_cuda_ssd_tensor_cores(!simple);
	void *be = NULL;
	LMK(lmk_cuda_init(&be, 0));
	cudaStream_t st = ((lmk_cuda_backend *)be)->stream;
	lmk_cuda_info info;
	LMK(lmk_cuda_device_info(0, &info));
	fprintf(stderr, "ssd_gpu: %s, %d SMs; bf16, B*T = %lld, H*D = 2048, chunk 64, %s, median "
		"of %d\n", info.name, info.sm_count, (long long)tokens,
		simple ? "CUDA cores" : "tensor cores", reps);

	const int64_t width = 2048, maxT = oT ? oT : quick ? 8192 : 65536;
	const size_t n = (size_t)tokens * width;
	const int64_t NLmax = lmk_fenwick_levels(maxT);
	__nv_bfloat16 *q, *k, *v, *o, *dout, *dq, *dk, *dv, *la, *dla, *lam, *dlam;
	__nv_bfloat16 **big[] = {&q, &k, &v, &o, &dout, &dq, &dk, &dv};
	for (auto b : big)
		CK(cudaMalloc((void **)b, n * sizeof(__nv_bfloat16)));
	const size_t nh = (size_t)tokens * 32; /* at most 32 heads */
	CK(cudaMalloc((void **)&la, nh * 2));
	CK(cudaMalloc((void **)&dla, nh * 2));
	CK(cudaMalloc((void **)&lam, nh * NLmax * 2));
	CK(cudaMalloc((void **)&dlam, nh * NLmax * 2));
	float *lse, *delta;
	CK(cudaMalloc((void **)&lse, nh * sizeof(float)));
	CK(cudaMalloc((void **)&delta, nh * sizeof(float)));
	fill(q, n, 1, -1, 1);
	fill(k, n, 2, -1, 1);
	fill(v, n, 3, -1, 1);
	fill(dout, n, 4, -1, 1);
	fill(la, nh, 5, -0.1f, -0.001f);
	fill(lam, nh * NLmax, 6, 0.2f, 1.2f);
	CK(cudaMemset(dq, 0, n * 2));
	CK(cudaMemset(dk, 0, n * 2));
	CK(cudaMemset(dv, 0, n * 2));
	CK(cudaMemset(dla, 0, nh * 2));
	CK(cudaMemset(dlam, 0, nh * NLmax * 2));
	CK(cudaDeviceSynchronize());

	cudaEvent_t e0, e1;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	auto time_ms = [&](const std::function<void()> &f) {
		std::vector<float> t;
		for (int w = 0; w < 2; w++)
			f();
		for (int r = 0; r < reps; r++) {
			float ms;
			CK(cudaEventRecord(e0, st));
			f();
			CK(cudaEventRecord(e1, st));
			CK(cudaEventSynchronize(e1));
			CK(cudaEventElapsedTime(&ms, e0, e1));
			t.push_back(ms);
		}
		return median(t);
	};
	int bad = 0;
	printf("%4s %6s %4s %3s | %9s %9s | %9s %9s | %9s %9s   (ms)\n", "D", "T", "B", "H",
	       "attn fwd", "attn f+b", "ssd fwd", "ssd f+b", "ll fwd", "ll f+b");
	const int Ds[] = {64, 128};
	for (int D : Ds) {
		const int64_t H = width / D;
		if (oD && D != oD)
			continue;
		for (int64_t T = oT ? oT : 2048; T <= maxT && T <= tokens; T *= 2) {
			const int64_t B = tokens / T, NL = lmk_fenwick_levels(T);
			const float as = 1.0f / sqrtf((float)D);
			lmk_gbuf gq = {dq, LMK_BF16}, gk = {dk, LMK_BF16}, gv = {dv, LMK_BF16};
			lmk_gbuf gla = {dla, LMK_BF16}, glam = {dlam, LMK_BF16}, none = {NULL, LMK_BF16};
			auto attn_f = [&]() {
				LMK(lmk_cuda_attention_forward(be, LMK_BF16, o, lse, q, k, v, NULL, B, T, H,
							       H, D, as, 1));
			};
			auto attn_fb = [&]() {
				attn_f();
				LMK(lmk_cuda_attention_backward(be, LMK_BF16, dq, dk, dv, delta, dout, q, k,
								v, o, lse, NULL, B, T, H, H, D, as, 1, 0));
			};
			auto ssd_f = [&](int ll) {
				LMK(lmk_cuda_ssd_forward(be, LMK_BF16, o, q, k, v, la, ll ? lam : NULL, B, T,
							 H, H, D, D, NL, as, 64));
			};
			auto ssd_fb = [&](int ll) {
				ssd_f(ll);
				LMK(lmk_cuda_ssd_backward(be, LMK_BF16, gq, gk, gv, gla, ll ? glam : none,
							  dout, q, k, v, la, ll ? lam : NULL, o, B, T, H,
							  H, D, D, NL, as, 64));
			};
			float t[6] = {0, 0, 0, 0, 0, 0};
			if (attn) {
				t[0] = time_ms(attn_f);
				t[1] = time_ms(attn_fb);
			}
			t[2] = time_ms([&]() { ssd_f(0); });
			t[3] = time_ms([&]() { ssd_fb(0); });
			t[4] = time_ms([&]() { ssd_f(1); });
			t[5] = time_ms([&]() { ssd_fb(1); });
			if (!finite_tail(o, n) || !finite_tail(dq, n) || !finite_tail(dla, nh)) {
				fprintf(stderr, "ssd_gpu: D=%d T=%lld: non-finite output\n", D, (long long)T);
				bad = 1;
			}
			printf("%4d %6lld %4lld %3lld | %9.3f %9.3f | %9.3f %9.3f | %9.3f %9.3f\n", D,
			       (long long)T, (long long)B, (long long)H, t[0], t[1], t[2], t[3], t[4],
			       t[5]);
			fflush(stdout);
		}
	}
	lmk_cuda_free(be);
	return bad;
}
