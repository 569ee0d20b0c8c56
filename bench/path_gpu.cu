/* path_gpu.cu: times PaTH attention (lib/path.h, cuda/path.cu) through the
 * op interface on the GPU, forward and forward+backward, BF16, against our
 * causal softmax attention (lmk_attention) on the same shapes, with CUDA
 * events on the context's stream: warm-up, then the median of --reps runs.
 * The inputs are made fresh after each lmk_ctx_reset, outside the timed
 * region; the times include the op's workspace allocation from the arena
 * (no cudaMalloc after the first run of a shape).
 *
 * Shapes: B*T = 16384 tokens (--quick: T up to 4K), T in {1K..16K}, model
 * width H*D = 1024, so H = 8 at D = 128 and 16 at D = 64, K = H; PaTH-FoX
 * with --fox. Memory: the backward stores the query walk's levels and
 * adjoints, 2 * B*H * N(N-1)/2 * C*D floats (N = T/64), in the backend's
 * scratch (which grows to 1.5 times a request): about 17 GB at T = 16K,
 * D = 128, 26 GB held; --max-t lowers the largest T.
 * FLOPs are not reported: PaTH's count depends on the algorithm (the walk
 * adds two products per block pair to attention's two).
 *
 * Prints one table, a line per shape:
 *   D T B H  path_fwd_ms path_fwdbwd_ms  attn_fwd_ms attn_fwdbwd_ms  ratio_fwd ratio_fwdbwd
 * Exit 0, 1 on a failure (or no device), 2 on a usage error.
 * Usage: path_gpu [--quick] [--reps N] [--fox] [--max-t T] */
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
#include "ops.h"
#include "path.h"
#include "tensor.h"
}
#include "backend.h"
#include "cuda.h"

#define CK(x)                                                                                \
	do {                                                                                 \
		cudaError_t e_ = (x);                                                        \
		if (e_ != cudaSuccess) {                                                     \
			fprintf(stderr, "path_gpu: %s:%d: %s: %s\n", __FILE__, __LINE__, #x,  \
				cudaGetErrorString(e_));                                     \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

#define NN(x)                                                                                \
	do {                                                                                 \
		if (!(x)) {                                                                  \
			fprintf(stderr, "path_gpu: %s: %s\n", #x, lmk_errmsg());             \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

/* lo + (hi - lo) * uniform, from a hash of the index. */
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

/* Rows of D to unit length (one thread per row: not timed). */
__global__ void normalize_kernel(__nv_bfloat16 *p, size_t rows, int D)
{
	for (size_t r = blockIdx.x * (size_t)blockDim.x + threadIdx.x; r < rows;
	     r += (size_t)gridDim.x * blockDim.x) {
		float s = 0.f;
		for (int d = 0; d < D; d++)
			s += __bfloat162float(p[r * D + d]) * __bfloat162float(p[r * D + d]);
		s = rsqrtf(s);
		for (int d = 0; d < D; d++)
			p[r * D + d] = __float2bfloat16(__bfloat162float(p[r * D + d]) * s);
	}
}

__global__ void log_kernel(__nv_bfloat16 *p, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		p[i] = __float2bfloat16(logf(__bfloat162float(p[i])));
}

static lmk_tensor *make(lmk_ctx *c, int nd, const int64_t *shape, uint32_t seed, float lo,
			float hi)
{
	lmk_tensor *t = lmk_tensor_new(c, LMK_BF16, nd, shape, 1);
	NN(t);
	fill_kernel<<<1024, 256, 0, ((lmk_cuda_backend *)c->backend)->stream>>>(
		(__nv_bfloat16 *)t->data, (size_t)t->n, seed, lo, hi);
	CK(cudaGetLastError());
	return t;
}

static float median(std::vector<float> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

int main(int argc, char **argv)
{
	int quick = 0, reps = 5, fox = 0;
	int64_t maxt = 16384;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick"))
			quick = 1;
		else if (!strcmp(argv[i], "--fox"))
			fox = 1;
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--max-t") && i + 1 < argc)
			maxt = atoll(argv[++i]);
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("usage: path_gpu [--quick] [--reps N] [--fox] [--max-t T]\n");
			return 0;
		} else {
			fprintf(stderr, "path_gpu: unknown option '%s'\n", argv[i]);
			return 2;
		}
	}
	if (reps < 1)
		reps = 1;
	if (quick && maxt > 4096)
		maxt = 4096;
	if (lmk_cuda_device_count() == 0) {
		fprintf(stderr, "path_gpu: no CUDA device\n");
		return 1;
	}
	lmk_ctx c;
	if (lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 0, LMK_BF16) < 0) {
		fprintf(stderr, "path_gpu: %s\n", lmk_errmsg());
		return 1;
	}
	cudaStream_t st = ((lmk_cuda_backend *)c.backend)->stream;
	lmk_cuda_info info;
	if (lmk_cuda_device_info(0, &info) < 0) {
		fprintf(stderr, "path_gpu: %s\n", lmk_errmsg());
		return 1;
	}
	const int64_t tokens = 16384, width = 1024;
	fprintf(stderr, "path_gpu: %s, %d SMs; bf16, B*T = %lld, H*D = %lld, K = H, %s, median of %d\n",
		info.name, info.sm_count, (long long)tokens, (long long)width,
		fox ? "PaTH-FoX" : "PaTH", reps);
	float *dout;
	CK(cudaMalloc((void **)&dout, (size_t)tokens * width * sizeof(float)));
	{
		std::vector<float> h((size_t)tokens * width);
		for (size_t i = 0; i < h.size(); i++)
			h[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
		CK(cudaMemcpy(dout, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
	}
	cudaEvent_t e0, e1, e2;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	CK(cudaEventCreate(&e2));
	printf("%4s %6s %3s %3s  %12s %15s  %12s %15s  %9s %12s\n", "D", "T", "B", "H", "path_fwd_ms",
	       "path_fwdbwd_ms", "attn_fwd_ms", "attn_fwdbwd_ms", "ratio_fwd", "ratio_fwdbwd");
	int bad = 0;
	const int Ds[] = {64, 128};
	for (int D : Ds) {
		const int64_t H = width / D, K = H;
		for (int64_t T = 1024; T <= maxt; T *= 2) {
			const int64_t B = tokens / T;
			const float scale = 1.0f / sqrtf((float)D);
			int64_t sq[4] = {B, T, H, D}, sk[4] = {B, T, K, D};
			int64_t sb[3] = {B, T, K}, sf[3] = {B, T, H};
			float ms[2][2];
			for (int which = 0; which < 2; which++) {
				std::vector<float> tf, tfb;
				for (int r = 0; r < reps + 2; r++) {
					lmk_ctx_reset(&c);
					lmk_tensor *q = make(&c, 4, sq, 1 + r, -1, 1);
					lmk_tensor *k = make(&c, 4, sk, 2 + r, -1, 1);
					lmk_tensor *v = make(&c, 4, sk, 3 + r, -1, 1);
					lmk_tensor *y;
					CK(cudaStreamSynchronize(st));
					if (which == 0) {
						lmk_tensor *w = make(&c, 4, sk, 4 + r, -1, 1);
						normalize_kernel<<<1024, 256, 0, st>>>(
							(__nv_bfloat16 *)w->data, (size_t)(B * T * K), (int)D);
						lmk_tensor *be = make(&c, 3, sb, 5 + r, 0.1f, 1.9f);
						lmk_tensor *lf = NULL;
						if (fox) {
							lf = make(&c, 3, sf, 6 + r, 0.9f, 1.0f);
							log_kernel<<<1024, 256, 0, st>>>((__nv_bfloat16 *)lf->data,
											 (size_t)lf->n);
						}
						CK(cudaStreamSynchronize(st));
						CK(cudaEventRecord(e0, st));
						y = lmk_path_attention(&c, q, k, v, w, be, lf, scale, NULL);
					} else {
						CK(cudaEventRecord(e0, st));
						y = lmk_attention(&c, q, k, v, NULL, scale);
					}
					NN(y);
					CK(cudaEventRecord(e1, st));
					NN(lmk_backward_from(&c, y, dout) == 0);
					CK(cudaEventRecord(e2, st));
					CK(cudaEventSynchronize(e2));
					if (lmk_ctx_sync(&c) < 0) {
						fprintf(stderr, "path_gpu: %s\n", lmk_errmsg());
						return 1;
					}
					float a, b2;
					CK(cudaEventElapsedTime(&a, e0, e1));
					CK(cudaEventElapsedTime(&b2, e0, e2));
					if (r >= 2) {
						tf.push_back(a);
						tfb.push_back(b2);
					}
					if (r == reps + 1) {
						/* a broken kernel can be fast: the output and a
						 * gradient must be finite */
						std::vector<float> h((size_t)y->n), g((size_t)q->n);
						NN(lmk_tensor_read_f32(&c, y, 0, h.data()) == 0);
						NN(lmk_tensor_read_f32(&c, q, 1, g.data()) == 0);
						for (size_t i = 0; i < h.size(); i++)
							if (!isfinite(h[i]) || !isfinite(g[i])) {
								fprintf(stderr, "path_gpu: %s D=%d T=%lld: "
									"non-finite output or gradient\n",
									which ? "attention" : "path", D,
									(long long)T);
								bad = 1;
								break;
							}
					}
				}
				ms[which][0] = median(tf);
				ms[which][1] = median(tfb);
			}
			printf("%4d %6lld %3lld %3lld  %12.3f %15.3f  %12.3f %15.3f  %9.2f %12.2f\n", D,
			       (long long)T, (long long)B, (long long)H, ms[0][0], ms[0][1], ms[1][0],
			       ms[1][1], ms[0][0] / ms[1][0], ms[0][1] / ms[1][1]);
			fflush(stdout);
		}
	}
	CK(cudaFree(dout));
	lmk_ctx_free(&c);
	return bad;
}
