/* bw_gpu.cu: times the memory-bound kernels of a training step, one op at
 * a time through its launcher (ops_cuda.h), at the 110M Llama's shapes
 * (bench/train_gpu.sh): N = B T = 32768 rows, C 768, H 12 heads of D 64,
 * V 32768, BF16. CUDA events on the backend's stream around --reps calls
 * in a row (as a training step queues them: no launch latency between),
 * after a warm-up; the time is a call's, the median of 5 such runs.
 * Bytes are what the op must move at least, so GB/s is against the
 * H200's ~4.3 TB/s that a copy reaches:
 *   cross_entropy  the logits read and their gradient written, 2 N V 2
 *   rmsnorm_fwd    x read, y written, 2 N C 2
 *   rmsnorm_bwd    x, dy and dx read, dx written (the residual stream's
 *                  gradient accumulates): 4 N C 2 (the dw parts: small)
 *   rope_fwd/bwd   q read, written (bwd: the gradient assigned), 2 N H D 2
 * Each line ends with a hash of the op's outputs (a sum of their 32-bit
 * words times odd position keys, modulo 2^64; the backwards' also after a
 * call in their other modes: rmsnorm's dx assigned without w, rope's dx
 * added into): two builds whose kernels give the same bits print the same
 * hashes. Inputs are fixed (a hash of
 * the index), so the hashes depend on the kernels alone.
 * Usage: bw_gpu [--reps R] [--only NAME]   Exit 0, 1 on a failure. */
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
#include "backend.h"
#include "cuda.h"
#include "ops_cuda.h"
#define BENCH "bw_gpu"
#include "bench_gpu.cuh"

#define OK(x)                                                                                \
	do {                                                                                 \
		if ((x) < 0) {                                                               \
			fprintf(stderr, "bw_gpu: %s: %s\n", #x, lmk_errmsg());               \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

__global__ void fill_targets(int32_t *t, int64_t n, int32_t V)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		t[i] = (int32_t)(mix((uint32_t)i ^ 0x5bd1e995U) % (uint32_t)V);
}

/* The hash of the bytes at p, added to *acc. */
static void hash_add(cudaStream_t st, unsigned long long *acc, const void *p, size_t bytes)
{
	*acc = *acc * 31 + hash_of(st, p, bytes);
}

static int reps = 20;
static const char *only = "";

/* The time of one call of what in microseconds: the median of 5 runs of
 * reps calls. */
template <class F> static double time_us(cudaStream_t st, F what)
{
	cudaEvent_t e0, e1;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	what();
	std::vector<float> t;
	for (int r = 0; r < 5; r++) {
		CK(cudaEventRecord(e0, st));
		for (int k = 0; k < reps; k++)
			what();
		CK(cudaEventRecord(e1, st));
		CK(cudaEventSynchronize(e1));
		float ms;
		CK(cudaEventElapsedTime(&ms, e0, e1));
		t.push_back(ms / (float)reps);
	}
	CK(cudaEventDestroy(e0));
	CK(cudaEventDestroy(e1));
	std::sort(t.begin(), t.end());
	return 1e3 * t[t.size() / 2];
}

static void line(const char *name, double us, double bytes, unsigned long long h)
{
	printf("%-16s %9.1f us %7.0f GB/s  %016llx\n", name, us, bytes / us * 1e-3, h);
	fflush(stdout);
}

static bool want(const char *name) { return strstr(name, only) != NULL; }

int main(int argc, char **argv)
{
	static const char *const names[] = { "cross_entropy", "rmsnorm_fwd", "rmsnorm_bwd",
					     "rope_fwd", "rope_bwd" };
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			char *end;
			long r = strtol(argv[++i], &end, 10);
			if (*end || end == argv[i] || r < 1 || r > 100000) {
				fprintf(stderr, "bw_gpu: --reps '%s': expected a count from 1 to 100000\n",
					argv[i]);
				return 2;
			}
			reps = (int)r;
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			only = argv[++i];
		} else {
			fprintf(stderr, "usage: bw_gpu [--reps R] [--only NAME]\n");
			return 2;
		}
	}
	int known = 0;
	for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
		known += want(names[k]);
	if (!known) {
		fprintf(stderr, "bw_gpu: --only '%s' names none of cross_entropy, rmsnorm_fwd, "
			"rmsnorm_bwd, rope_fwd, rope_bwd\n", only);
		return 2;
	}
	if (lmk_cuda_device_count() == 0) {
		fprintf(stderr, "bw_gpu: no CUDA device\n");
		return 1;
	}
	void *be;
	OK(lmk_cuda_init(&be, 0));
	cudaStream_t st = ((lmk_cuda_backend *)be)->stream;
	const int64_t B = 32, T = 1024, N = B * T, C = 768, H = 12, D = 64, V = 32768;
	const lmk_dtype dt = LMK_BF16;
	printf("bw_gpu: N %lld C %lld H %lld D %lld V %lld bf16, %d calls in a row, median of 5\n",
	       (long long)N, (long long)C, (long long)H, (long long)D, (long long)V, reps);

	if (want("cross_entropy")) {
		__nv_bfloat16 *x = (__nv_bfloat16 *)dalloc((size_t)(N * V) * 2);
		__nv_bfloat16 *dx = (__nv_bfloat16 *)dalloc((size_t)(N * V) * 2);
		int32_t *tg = (int32_t *)dalloc((size_t)N * 4);
		float *loss = (float *)dalloc(4), *lse = (float *)dalloc((size_t)N * 4);
		float *rowloss = (float *)dalloc((size_t)N * 4);
		int64_t *count = (int64_t *)dalloc(8);
		fill_uniform<<<4096, 256, 0, st>>>(x, N * V, 1, -6.0f, 6.0f);
		fill_targets<<<256, 256, 0, st>>>(tg, N, (int32_t)V);
		CK(cudaGetLastError());
		double us = time_us(st, [&] {
			OK(lmk_cuda_cross_entropy_forward(be, dt, loss, lse, count, rowloss, x, tg, N, V,
							  -100, dx));
		});
		unsigned long long h = 0;
		hash_add(st, &h, loss, 4);
		hash_add(st, &h, lse, (size_t)N * 4);
		hash_add(st, &h, dx, (size_t)(N * V) * 2);
		line("cross_entropy", us, 2.0 * (double)(N * V) * 2, h);
		CK(cudaFree(x));
		CK(cudaFree(dx));
		CK(cudaFree(tg));
		CK(cudaFree(loss));
		CK(cudaFree(lse));
		CK(cudaFree(rowloss));
		CK(cudaFree(count));
	}

	size_t act = (size_t)(N * C) * 2;
	__nv_bfloat16 *x = (__nv_bfloat16 *)dalloc(act), *y = (__nv_bfloat16 *)dalloc(act);
	__nv_bfloat16 *dy = (__nv_bfloat16 *)dalloc(act), *dx = (__nv_bfloat16 *)dalloc(act);
	__nv_bfloat16 *w = (__nv_bfloat16 *)dalloc((size_t)C * 2);
	float *rstd = (float *)dalloc((size_t)N * 4), *dw = (float *)dalloc((size_t)C * 4);
	fill_uniform<<<4096, 256, 0, st>>>(x, N * C, 2, -2.0f, 2.0f);
	fill_uniform<<<4096, 256, 0, st>>>(dy, N * C, 3, -1.0f, 1.0f);
	fill_uniform<<<16, 256, 0, st>>>(w, C, 4, 0.5f, 1.5f);
	CK(cudaGetLastError());

	if (want("rmsnorm_fwd")) {
		double us = time_us(st, [&] {
			OK(lmk_cuda_rmsnorm_forward(be, dt, y, rstd, x, w, N, C, 1e-5f));
		});
		unsigned long long h = 0;
		hash_add(st, &h, y, act);
		hash_add(st, &h, rstd, (size_t)N * 4);
		line("rmsnorm_fwd", us, 2.0 * (double)act, h);
	}
	if (want("rmsnorm_bwd")) {
		OK(lmk_cuda_rmsnorm_forward(be, dt, y, rstd, x, w, N, C, 1e-5f));
		/* dx accumulates: start it from the same values before each call
		 * of the hashed run (the timed calls keep adding) */
		double us = time_us(st, [&] {
			OK(lmk_cuda_rmsnorm_backward(be, dt, lmk_gbuf{dx, dt}, lmk_gbuf{dw, LMK_F32}, dy,
						     x, w, rstd, N, C, 2));
		});
		unsigned long long h = 0;
		fill_uniform<<<4096, 256, 0, st>>>(dx, N * C, 5, -1.0f, 1.0f);
		OK(lmk_cuda_rmsnorm_backward(be, dt, lmk_gbuf{dx, dt}, lmk_gbuf{dw, LMK_F32}, dy, x, w,
					     rstd, N, C, 2));
		hash_add(st, &h, dx, act);
		hash_add(st, &h, dw, (size_t)C * 4);
		/* and the other modes, untimed: dx assigned, dw added, no w */
		OK(lmk_cuda_rmsnorm_backward(be, dt, lmk_gbuf{dx, dt}, lmk_gbuf{dw, LMK_F32}, dy, x,
					     NULL, rstd, N, C, 1));
		hash_add(st, &h, dx, act);
		hash_add(st, &h, dw, (size_t)C * 4);
		line("rmsnorm_bwd", us, 4.0 * (double)act, h);
	}
	if (want("rope")) {
		std::vector<int32_t> pos((size_t)N);
		std::vector<float> inv((size_t)(D / 2));
		for (int64_t n = 0; n < N; n++)
			pos[(size_t)n] = (int32_t)(n % T);
		for (int64_t i = 0; i < D / 2; i++)
			inv[(size_t)i] = (float)pow(10000.0, -2.0 * (double)i / (double)D);
		int32_t *dpos = (int32_t *)dalloc((size_t)N * 4);
		float *dinv = (float *)dalloc((size_t)(D / 2) * 4);
		CK(cudaMemcpy(dpos, pos.data(), (size_t)N * 4, cudaMemcpyHostToDevice));
		CK(cudaMemcpy(dinv, inv.data(), (size_t)(D / 2) * 4, cudaMemcpyHostToDevice));
		/* q of (N, H, D) is (N, C) here: C = H D */
		double us = time_us(st, [&] {
			OK(lmk_cuda_rope_forward(be, dt, y, x, dpos, dinv, 1.0f, N, H, D));
		});
		unsigned long long h = 0;
		hash_add(st, &h, y, act);
		line("rope_fwd", us, 2.0 * (double)act, h);
		us = time_us(st, [&] {
			OK(lmk_cuda_rope_backward(be, dt, lmk_gbuf{dx, dt}, dy, dpos, dinv, 1.0f, N, H, D,
						  1));
		});
		h = 0;
		hash_add(st, &h, dx, act);
		/* and added into, untimed */
		OK(lmk_cuda_rope_backward(be, dt, lmk_gbuf{dx, dt}, dy, dpos, dinv, 1.0f, N, H, D, 0));
		hash_add(st, &h, dx, act);
		line("rope_bwd", us, 2.0 * (double)act, h);
		CK(cudaFree(dpos));
		CK(cudaFree(dinv));
	}
	OK(lmk_cuda_sync(be));
	lmk_cuda_free(be);
	return 0;
}
