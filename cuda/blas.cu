/* blas.cu: row-major float32 products through cuBLAS, and GaLore's
 * elementwise Adam (blas_cuda.h). The Adam arithmetic is lib/galore.c's
 * with rounded intrinsics (no FMA contraction), as cuda/optim.cu does. */
#include "blas_cuda.h"
#include "common.cuh"

#define THREADS 256

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the
 * same call with the operands swapped. */
extern "C" int lmk_cuda_sgemm(void *be, int ta, int tb, int M, int N, int K, float alpha,
			      const float *A, int lda, const float *B, int ldb, float beta,
			      float *C, int ldc)
{
	lmk_cuda_backend *b = LMK_BE(be);
	if (M == 0 || N == 0)
		return 0;
	LMK_CK(cublasSetStream(b->blas, b->stream));
	LMK_CK(cublasSgemm(b->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
			   N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
	return 0;
}

__global__ void adam_direction_k(float *out, const float *x, float *m, float *v, int64_t n,
				 float w1, float om1, int small_w, float w2, float b2, float eps,
				 float bc2_sqrt)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float gi = x[i], mi = m[i], vi = v[i];
		if (small_w)
			mi = __fadd_rn(mi, __fmul_rn(w1, __fsub_rn(gi, mi)));
		else
			mi = __fsub_rn(gi, __fmul_rn(__fsub_rn(gi, mi), om1));
		vi = __fadd_rn(__fmul_rn(vi, b2), __fmul_rn(w2, __fmul_rn(gi, gi)));
		m[i] = mi;
		v[i] = vi;
		out[i] = __fdiv_rn(mi, __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps));
	}
}

extern "C" int lmk_cuda_adam_direction(void *be, float *out, const float *x, float *m, float *v,
				       size_t n, float w1, float om1, int small_w, float w2,
				       float b2, float eps, float bc2_sqrt)
{
	lmk_cuda_backend *b = LMK_BE(be);
	if (n == 0)
		return 0;
	adam_direction_k<<<grid_for((int64_t)n, THREADS), THREADS, 0, b->stream>>>(
		out, x, m, v, (int64_t)n, w1, om1, small_w, w2, b2, eps, bc2_sqrt);
	LMK_CK_LAUNCH();
	return 0;
}

__global__ void adam_apply_k(float *p, const float *dir, bf16 *lp, int64_t n, int decay,
			     float keep, float neg_step)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float pi = p[i];
		if (decay)
			pi = __fmul_rn(pi, keep);
		pi = __fadd_rn(pi, __fmul_rn(neg_step, dir[i]));
		p[i] = pi;
		if (lp)
			lp[i] = __float2bfloat16_rn(pi);
	}
}

extern "C" int lmk_cuda_adam_apply(void *be, float *p, const float *dir, void *lp, size_t n,
				   int decay, float keep, float neg_step)
{
	lmk_cuda_backend *b = LMK_BE(be);
	if (n == 0)
		return 0;
	adam_apply_k<<<grid_for((int64_t)n, THREADS), THREADS, 0, b->stream>>>(
		p, dir, (bf16 *)lp, (int64_t)n, decay, keep, neg_step);
	LMK_CK_LAUNCH();
	return 0;
}
