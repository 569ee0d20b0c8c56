/* attention_gpu.cu: times our attention kernels (cuda/attention.cu) on the
 * GPU, forward and forward+backward, BF16, causal, with CUDA events on the
 * context's stream: warm-up, then the median of --reps runs.
 *
 * Shapes, as in FlashAttention's benchmark: B*T = 16384 tokens, T in
 * {1K, 2K, 4K, 8K, 16K} (--quick: up to 4K), model width H*D = 2048, so
 * H = 16 at D = 128 and H = 32 at D = 64, K = H (no grouping).
 * FLOPs, FlashAttention's convention: the forward is two products of
 * 2*T*T*D each per (b, h), halved for causal: 4*B*H*T*T*D / 2; the backward
 * counts 2.5 times that (five products where the forward has two), so
 * forward+backward is 3.5 times the forward. Both of our backward modes
 * do the five products in one pass; they differ in how dq's parts from the
 * key blocks are summed.
 *
 * Prints two lines per shape, the default (deterministic: dq summed in a
 * fixed order) backward's, which bench/attention.sh joins with the torch
 * numbers, and the nondeterministic one's (float atomics in dq):
 *   ours D T B H fwd_ms fwd_TFLOPs fwdbwd_ms fwdbwd_TFLOPs
 *   atomic D T B H fwd_ms fwd_TFLOPs fwdbwd_ms fwdbwd_TFLOPs
 * and a check that the outputs are finite. Exit 0, or 1 on a failure.
 * --shape B T H K D times that one shape instead (K kv heads; e.g. a
 * training step's attention: --shape 32 1024 12 12 64).
 * Usage: attention_gpu [--quick] [--reps N] [--shape B T H K D] */
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
}
#include "attention.h"
#include "cuda.h"

/* The context's stream, as cuda/attention.cu finds it. */
#if __has_include("backend.h")
#include "backend.h"
static cudaStream_t stream_of(void *be) { return ((lmk_cuda_backend *)be)->stream; }
#else
static cudaStream_t stream_of(void *be) { return (cudaStream_t)lmk_cuda_stream(be); }
#endif

#define CK(x)                                                                            \
	do {                                                                             \
		cudaError_t e_ = (x);                                                    \
		if (e_ != cudaSuccess) {                                                 \
			fprintf(stderr, "attention_gpu: %s:%d: %s: %s\n", __FILE__, __LINE__, \
				#x, cudaGetErrorString(e_));                              \
			exit(1);                                                         \
		}                                                                        \
	} while (0)

#define LMK(x)                                                                           \
	do {                                                                             \
		if ((x) < 0) {                                                           \
			fprintf(stderr, "attention_gpu: %s: %s\n", #x, lmk_errmsg());    \
			exit(1);                                                         \
		}                                                                        \
	} while (0)

/* Uniform in [-amp, amp) from a hash of the index: random data without a
 * host round trip (never all zeros: the tensor cores and caches see real
 * values). */
__global__ void fill_kernel(__nv_bfloat16 *p, size_t n, uint32_t seed, float amp)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		uint32_t x = (uint32_t)i * 0x9E3779B9u ^ seed;
		x ^= x >> 16;
		x *= 0x7feb352du;
		x ^= x >> 15;
		x *= 0x846ca68bu;
		x ^= x >> 16;
		p[i] = __float2bfloat16(((float)(x >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * amp);
	}
}

static void fill(__nv_bfloat16 *p, size_t n, uint32_t seed, float amp)
{
	fill_kernel<<<1024, 256>>>(p, n, seed, amp);
	CK(cudaGetLastError());
}

static float median(std::vector<float> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

int main(int argc, char **argv)
{
	int quick = 0, reps = 20;
	struct shape {
		int64_t B, T, H, K, D;
	};
	std::vector<shape> shapes;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = 1;
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--shape") && i + 5 < argc) {
			shape sh = {atoll(argv[i + 1]), atoll(argv[i + 2]), atoll(argv[i + 3]),
				    atoll(argv[i + 4]), atoll(argv[i + 5])};
			i += 5;
			if (sh.B < 1 || sh.T < 1 || sh.H < 1 || sh.K < 1 || sh.D < 1 || sh.H % sh.K) {
				fprintf(stderr, "attention_gpu: bad --shape\n");
				return 2;
			}
			shapes.push_back(sh);
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("usage: attention_gpu [--quick] [--reps N] [--shape B T H K D]\n");
			return 0;
		} else {
			fprintf(stderr, "attention_gpu: unknown option '%s'\n", argv[i]);
			return 2;
		}
	}
	if (reps < 1)
		reps = 1;
	if (lmk_cuda_device_count() == 0) {
		fprintf(stderr, "attention_gpu: no CUDA device\n");
		return 1;
	}
	void *be = NULL;
	LMK(lmk_cuda_init(&be, 0));
	cudaStream_t st = stream_of(be);
	lmk_cuda_info info;
	LMK(lmk_cuda_device_info(0, &info));
	fprintf(stderr, "attention_gpu: %s, %d SMs; bf16, causal, %s, median of %d\n", info.name,
		info.sm_count, shapes.empty() ? "B*T = 16384, H*D = 2048" : "--shape", reps);

	const int64_t tokens = 16384, width = 2048;
	if (shapes.empty())
		for (int64_t D = 64; D <= 128; D *= 2)
			for (int64_t T = 1024; T <= (quick ? 4096 : 16384); T *= 2)
				shapes.push_back({tokens / T, T, width / D, width / D, D});
	/* buffers for the largest shape */
	size_t n = 0, nl = 0;
	for (const shape &sh : shapes) {
		n = std::max(n, (size_t)(sh.B * sh.T * sh.H * sh.D));
		nl = std::max(nl, (size_t)(sh.B * sh.H * sh.T));
	}
	__nv_bfloat16 *q, *k, *v, *o, *dout, *dq, *dk, *dv;
	float *lse, *delta;
	__nv_bfloat16 **bufs[] = {&q, &k, &v, &o, &dout, &dq, &dk, &dv};
	for (auto b : bufs)
		CK(cudaMalloc((void **)b, n * sizeof(__nv_bfloat16)));
	CK(cudaMalloc((void **)&lse, nl * sizeof(float)));
	CK(cudaMalloc((void **)&delta, nl * sizeof(float)));
	fill(q, n, 1, 1.0f);
	fill(k, n, 2, 1.0f);
	fill(v, n, 3, 1.0f);
	fill(dout, n, 4, 1.0f);
	CK(cudaMemset(dq, 0, n * 2));
	CK(cudaMemset(dk, 0, n * 2));
	CK(cudaMemset(dv, 0, n * 2));
	CK(cudaDeviceSynchronize());

	cudaEvent_t e0, e1;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	int bad = 0;
	for (const shape &sh : shapes) {
		const int64_t B = sh.B, T = sh.T, H = sh.H, K = sh.K, D = sh.D;
		const size_t ne = (size_t)(B * T * H * D);
		const float scale = 1.0f / sqrtf((float)D);
		auto fwd = [&]() {
			LMK(lmk_cuda_attention_forward(be, LMK_BF16, o, lse, q, k, v, NULL, B, T,
						       H, K, D, scale, 1));
		};
		auto bwd = [&]() {
			LMK(lmk_cuda_attention_backward(be, LMK_BF16, dq, dk, dv, delta, dout, q,
							k, v, o, lse, NULL, B, T, H, K, D,
							scale, 1, 0));
		};
		/* the default (deterministic) backward, then the nondeterministic
		 * one (float atomics in dq) */
		for (int mode = 0; mode < 2; mode++) {
			lmk_cuda_attention_set_nondeterministic(be, mode);
			std::vector<float> tf, tfb;
			for (int w = 0; w < 3; w++) {
				fwd();
				bwd();
			}
			for (int r = 0; r < reps; r++) {
				float ms;
				CK(cudaEventRecord(e0, st));
				fwd();
				CK(cudaEventRecord(e1, st));
				CK(cudaEventSynchronize(e1));
				CK(cudaEventElapsedTime(&ms, e0, e1));
				tf.push_back(ms);
				CK(cudaEventRecord(e0, st));
				fwd();
				bwd();
				CK(cudaEventRecord(e1, st));
				CK(cudaEventSynchronize(e1));
				CK(cudaEventElapsedTime(&ms, e0, e1));
				tfb.push_back(ms);
			}
			/* the outputs must be finite (a broken kernel can be fast) */
			std::vector<uint16_t> h(std::min<size_t>(4096, ne));
			CK(cudaMemcpy(h.data(), o + ne - h.size(), h.size() * 2, cudaMemcpyDeviceToHost));
			int finite = 1;
			for (uint16_t x : h)
				finite &= isfinite(lmk_bf16_to_f32(x)) != 0;
			CK(cudaMemcpy(h.data(), dq, h.size() * 2, cudaMemcpyDeviceToHost));
			for (uint16_t x : h)
				finite &= isfinite(lmk_bf16_to_f32(x)) != 0;
			if (!finite) {
				fprintf(stderr, "attention_gpu: D=%lld T=%lld%s: non-finite output\n",
					(long long)D, (long long)T, mode ? " atomic" : "");
				bad = 1;
			}
			const double flops = 4.0 * B * H * T * T * D / 2;
			const float mf = median(tf), mfb = median(tfb);
			printf("%s %lld %lld %lld %lld %.3f %.1f %.3f %.1f\n", mode ? "atomic" : "ours",
			       (long long)D, (long long)T, (long long)B, (long long)H, mf,
			       flops / mf * 1e-9, mfb, 3.5 * flops / mfb * 1e-9);
			fflush(stdout);
		}
		lmk_cuda_attention_set_nondeterministic(be, 0);
	}
	for (auto b : bufs)
		CK(cudaFree(*b));
	CK(cudaFree(lse));
	CK(cudaFree(delta));
	lmk_cuda_free(be);
	return bad;
}
