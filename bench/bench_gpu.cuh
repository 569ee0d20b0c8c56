/* bench_gpu.cuh: what the device benchmarks bw_gpu.cu and gemm_gpu.cu
 * share: CK (a CUDA call checked: one line naming the program, exit 1),
 * dalloc, inputs filled on the device from a hash of their index (random,
 * never all zeros, no host round trip), and hash_of, a hash of an
 * output's bits, by which two builds whose kernels give the same bits
 * print the same numbers. Define BENCH (the program's name, a string)
 * before including it. C++ only. */
#ifndef LMK_BENCH_GPU_CUH
#define LMK_BENCH_GPU_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                \
	do {                                                                                 \
		cudaError_t e_ = (x);                                                        \
		if (e_ != cudaSuccess) {                                                     \
			fprintf(stderr, BENCH ": %s:%d: %s: %s\n", __FILE__, __LINE__, #x,    \
				cudaGetErrorString(e_));                                     \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

static __device__ uint32_t mix(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	x ^= x >> 16;
	return x;
}

/* p[i] = lo + (hi - lo) u, u in [0, 1) from a hash of (seed, i); T bf16 or
 * float */
template <class T> __global__ void fill_uniform(T *p, int64_t n, uint32_t seed, float lo, float hi)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float u = (float)(mix((uint32_t)i * 2654435761U ^ seed ^ (uint32_t)(i >> 32)) >> 8) *
			  (1.0f / 16777216.0f);
		p[i] = (T)(lo + (hi - lo) * u);
	}
}

__global__ void hash_words(unsigned long long *h, const uint32_t *w, int64_t n)
{
	unsigned long long s = 0;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		s += (unsigned long long)w[i] * (0x9e3779b97f4a7c15ULL ^ (2 * (uint64_t)i + 1));
	atomicAdd(h, s); /* integers: any order gives the same sum */
}

static void *dalloc(size_t bytes)
{
	void *p;
	CK(cudaMalloc(&p, bytes));
	return p;
}

/* The hash of the bytes (a multiple of 4) at p: a sum of their 32-bit
 * words times odd keys of their positions, modulo 2^64. */
static unsigned long long hash_of(cudaStream_t st, const void *p, size_t bytes)
{
	static unsigned long long *dh;
	unsigned long long h = 0;
	if (!dh)
		dh = (unsigned long long *)dalloc(sizeof *dh);
	CK(cudaMemsetAsync(dh, 0, sizeof h, st));
	hash_words<<<1024, 256, 0, st>>>(dh, (const uint32_t *)p, (int64_t)(bytes / 4));
	CK(cudaGetLastError());
	CK(cudaMemcpyAsync(&h, dh, sizeof h, cudaMemcpyDeviceToHost, st));
	CK(cudaStreamSynchronize(st));
	return h;
}

#endif
