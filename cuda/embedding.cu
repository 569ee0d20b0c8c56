/* embedding.cu: out[n] = w[ids[n]] for N ids into a (V,C) table, and its
 * backward without float atomics: the ids are sorted (CUB's radix sort is
 * stable, so equal ids keep their positions in order), then one block per
 * distinct id sums that id's rows of dout in position order and adds the
 * sum into dw. Every run gives the same bits. */
#include <cub/device/device_radix_sort.cuh>

#include "common.cuh"

#define THREADS 128

template <class T>
__global__ void embedding_fwd(T *out, const int32_t *ids, const T *w, int64_t N, int64_t C,
			      int64_t V, unsigned *flags)
{
	for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
		int32_t id = ids[n];
		int bad = id < 0 || id >= V;
		if (bad && threadIdx.x == 0)
			atomicOr(flags, (unsigned)LMK_CUDA_BAD_ID);
		for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
			out[n * C + c] = bad ? fromf<T>(0.0f) : w[(int64_t)id * C + c];
	}
}

__global__ void iota_k(int32_t *v, int64_t N)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N;
	     i += (int64_t)gridDim.x * blockDim.x)
		v[i] = (int32_t)i;
}

/* Block i owns the run of equal sorted ids that starts at i (others leave). */
template <class T>
__global__ void embedding_bwd_runs(gacc dw, const T *dout, const int32_t *keys,
				   const int32_t *rows, int64_t N, int64_t C, int64_t V)
{
	for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
		int32_t id = keys[i];
		if ((i > 0 && keys[i - 1] == id) || id < 0 || id >= V)
			continue;
		for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
			float acc = 0.0f;
			for (int64_t j = i; j < N && keys[j] == id; j++)
				acc += tof(dout[(int64_t)rows[j] * C + c]);
			gadd(dw, (int64_t)id * C + c, acc);
		}
	}
}

static unsigned row_grid(int64_t N) { return (unsigned)(N < (1 << 30) ? (N < 1 ? 1 : N) : (1 << 30)); }

extern "C" int lmk_cuda_embedding_forward(void *be, lmk_dtype dt, void *out, const int32_t *ids,
					  const void *w, int64_t N, int64_t C, int64_t V)
{
	lmk_cuda_backend *b = LMK_BE(be);
	if (N == 0 || C == 0)
		return 0;
	LMK_DT_SWITCH(dt, "embedding",
		      embedding_fwd<T><<<row_grid(N), THREADS, 0, b->stream>>>(
			      (T *)out, ids, (const T *)w, N, C, V, b->flags));
	LMK_CK_LAUNCH();
	return 0;
}

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

extern "C" int lmk_cuda_embedding_backward(void *be, lmk_dtype dt, lmk_gbuf dw, const void *dout,
					   const int32_t *ids, int64_t N, int64_t C, int64_t V)
{
	lmk_cuda_backend *b = LMK_BE(be);
	if (N == 0 || C == 0 || !dw.p)
		return 0;
	if (check_gbuf("embedding", dt, dw) < 0)
		return lmk_errcode();
	if (N > INT32_MAX)
		return lmk_err(LMK_EUNSUP, "embedding: backward of %lld ids (at most 2^31 - 1)",
			       (long long)N);
	size_t temp = 0;
	LMK_CK(cub::DeviceRadixSort::SortPairs(NULL, temp, (const int32_t *)NULL, (int32_t *)NULL,
					       (const int32_t *)NULL, (int32_t *)NULL, (int)N, 0,
					       32, b->stream));
	size_t arr = align256((size_t)N * sizeof(int32_t));
	char *s = (char *)lmk_cuda_scratch(b, 3 * arr + temp);
	if (!s)
		return lmk_errcode();
	int32_t *keys = (int32_t *)s, *rows_in = (int32_t *)(s + arr), *rows = (int32_t *)(s + 2 * arr);
	void *tmp = s + 3 * arr;
	iota_k<<<grid_for(N, 256), 256, 0, b->stream>>>(rows_in, N);
	LMK_CK_LAUNCH();
	LMK_CK(cub::DeviceRadixSort::SortPairs(tmp, temp, ids, keys, (const int32_t *)rows_in, rows,
					       (int)N, 0, 32, b->stream));
	LMK_DT_SWITCH(dt, "embedding",
		      embedding_bwd_runs<T><<<row_grid(N), THREADS, 0, b->stream>>>(
			      to_gacc(dw), (const T *)dout, keys, rows, N, C, V));
	LMK_CK_LAUNCH();
	return 0;
}
