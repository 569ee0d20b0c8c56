/* linear.cu: out = inp wᵀ + b and its backward through cuBLASLt, with fp32
 * accumulation (CUBLAS_COMPUTE_32F: plain fp32 in the F32 mode, never TF32;
 * bf16 tensor cores in the BF16 mode) and the bias added in the epilogue.
 * A row-major (R,C) matrix is a column-major (C x R) one, so every product
 * below is written in cuBLAS's column-major terms (op_T: transposed):
 *   forward  out  (OC x N)  = op_T(w  (IC x OC)) * inp  (IC x N)   (+ b)
 *   dinp     dinp (IC x N) += w (IC x OC) * dout (OC x N)
 *   dw       dw   (IC x OC) += inp (IC x N) * op_T(dout (OC x N))
 * dw (and db) accumulate into the parameter's fp32 gradient (beta = 1, C/D
 * float32 with bf16 A/B is one of cuBLASLt's supported type sets); a
 * gradient the tape left unwritten (an assign bit: an activation's dinp) is
 * written with beta = 0 instead, so that it is neither zeroed nor read. Where the
 * heuristic offers no algorithm (unusual sizes or alignments) the product
 * falls back to cublasGemmEx with the same types, and the bias to a kernel.
 * db is a deterministic column sum (common.cuh). A forward of at most
 * LMK_GEMV_MAX_ROWS rows (decoding) goes to gemv.cu instead: a cuBLASLt
 * call costs more than streaming such a product's weights takes. */
#include <string.h>

#include "common.cuh"
#include "gemv_cuda.h"

static cudaDataType_t cuda_type(lmk_dtype dt) { return dt == LMK_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* The largest power of two (up to 256) dividing the address. */
static int align_of(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	int al = 256;
	while (al > 1 && a % (uintptr_t)al)
		al /= 2;
	return al;
}

#define LT(stmt)                                                                     \
	do {                                                                         \
		cublasStatus_t st_ = (stmt);                                         \
		if (st_ != CUBLAS_STATUS_SUCCESS) {                                  \
			rc = lmk_err(LMK_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, \
				     #stmt, cublasGetStatusString(st_));             \
			goto done;                                                   \
		}                                                                    \
	} while (0)

#define NO_EPILOGUE 1

/* D (m x n, ldd) = op(A) op(B) + beta C, + bias (m) when bias is given; C
 * is D itself when NULL, else a matrix of D's type and layout. A, B in abt;
 * D in ddt; column-major. @return : 0, NO_EPILOGUE when a bias or a C was
 * given and no cuBLASLt algorithm takes it (nothing was done), or < 0 */
static int matmul(lmk_cuda_backend *b, lmk_dtype abt, lmk_dtype ddt, int ta, int tb, int m, int n,
		  int k, const void *A, int lda, const void *B, int ldb, void *D, int ldd,
		  float beta, const void *bias, const void *C = NULL)
{
	const float alpha = 1.0f;
	int rc = 0;
	cublasLtMatmulDesc_t op = NULL;
	cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
	cublasLtMatmulPreference_t pref = NULL;
	cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	cudaDataType_t at = cuda_type(abt), dtt = cuda_type(ddt);
	int epi = (bias ? 1 : 0) | (C ? 2 : 0);
	int align = align_of(A);
	if (align_of(B) < align)
		align = align_of(B);
	if (align_of(D) < align)
		align = align_of(D);
	if (C && align_of(C) < align)
		align = align_of(C);
	lmk_lt_key key = lmk_lt_key{m, n, k, lda, ldb, ldd, ta, tb, (int)abt, (int)ddt, epi, align};
	lmk_lt_entry *hit = NULL;
	for (int i = 0; i < b->lt_n; i++)
		if (!memcmp(&b->lt_cache[i].key, &key, sizeof key)) {
			hit = &b->lt_cache[i];
			break;
		}
	if (!hit) {
		hit = &b->lt_cache[b->lt_next];
		b->lt_next = (b->lt_next + 1) % LMK_LT_CACHE;
		if (b->lt_n < LMK_LT_CACHE)
			b->lt_n++;
		memset(hit, 0, sizeof *hit);
		hit->key = key;
		hit->ok = -1; /* not asked yet */
	}

	LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
	LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
	if (bias) {
		cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_BIAS;
		LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
		LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
						  sizeof bias));
	}
	LT(cublasLtMatrixLayoutCreate(&la, at, ta ? k : m, ta ? m : k, lda));
	LT(cublasLtMatrixLayoutCreate(&lb, at, tb ? n : k, tb ? k : n, ldb));
	LT(cublasLtMatrixLayoutCreate(&ld, dtt, m, n, ldd));
	if (hit->ok < 0) {
		uint32_t al = (uint32_t)align;
		cublasLtMatmulHeuristicResult_t res;
		int found = 0;
		LT(cublasLtMatmulPreferenceCreate(&pref));
		LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
							&b->lt_ws_bytes, sizeof b->lt_ws_bytes));
		LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
							&al, sizeof al));
		LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
							&al, sizeof al));
		LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
							&al, sizeof al));
		LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
							&al, sizeof al));
		cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(b->blaslt, op, la, lb, ld, ld, pref,
								   1, &res, &found);
		if (st == CUBLAS_STATUS_SUCCESS && found > 0 && res.state == CUBLAS_STATUS_SUCCESS) {
			hit->algo = res.algo;
			hit->ok = 1;
		} else {
			hit->ok = 0;
		}
	}
	if (hit->ok == 1) {
		if (cublasLtMatmul(b->blaslt, op, &alpha, A, la, B, lb, &beta, C ? C : D, ld, D, ld,
				   &hit->algo, b->lt_ws, b->lt_ws_bytes,
				   b->stream) == CUBLAS_STATUS_SUCCESS)
			goto done;
		/* an algorithm the heuristic offered but that refuses to run: the
		 * fallback below, from now on, for this key */
		hit->ok = 0;
	}
	/* cublasGemmEx has no epilogue and C is D: the caller adds the bias or
	 * the separate C */
	if (bias || C) {
		rc = NO_EPILOGUE;
		goto done;
	}
	LT(cublasGemmEx(b->blas, opa, opb, m, n, k, &alpha, A, at, lda, B, at, ldb, &beta, D, dtt, ldd,
			CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
done:
	if (pref)
		cublasLtMatmulPreferenceDestroy(pref);
	if (ld)
		cublasLtMatrixLayoutDestroy(ld);
	if (lb)
		cublasLtMatrixLayoutDestroy(lb);
	if (la)
		cublasLtMatrixLayoutDestroy(la);
	if (op)
		cublasLtMatmulDescDestroy(op);
	return rc;
}

/* out[n, o] = b[o] */
template <class T>
__global__ void bias_fill(T *out, const T *b, int64_t N, int64_t OC)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N * OC;
	     i += (int64_t)gridDim.x * blockDim.x)
		out[i] = b[i % OC];
}

extern "C" int lmk_cuda_linear_forward(void *be, lmk_dtype dt, void *out, const void *inp,
				       const void *w, const void *b, int64_t N, int64_t IC,
				       int64_t OC)
{
	lmk_cuda_backend *bk = LMK_BE(be);
	if (N == 0 || OC == 0)
		return 0;
	if (dt != LMK_F32 && dt != LMK_BF16)
		return lmk_err(LMK_EUNSUP, "linear: no cuda kernel for %s", lmk_dtype_name(dt));
	if (IC == 0) {
		if (!b) {
			LMK_CK(cudaMemsetAsync(out, 0, (size_t)(N * OC) * lmk_dtype_size(dt), bk->stream));
			return 0;
		}
		LMK_DT_SWITCH(dt, "linear",
			      bias_fill<T><<<grid_for(N * OC, 256), 256, 0, bk->stream>>>(
				      (T *)out, (const T *)b, N, OC));
		LMK_CK_LAUNCH();
		return 0;
	}
	if (N <= LMK_GEMV_MAX_ROWS)
		return lmk_cuda_gemv(be, dt, out, inp, w, b, N, IC, OC);
	int m = (int)OC, n = (int)N, k = (int)IC;
	if (b) {
		/* Try the epilogue; where cuBLASLt has no algorithm for it, fill
		 * the bias and accumulate onto it with beta = 1. */
		int rc = matmul(bk, dt, dt, 1, 0, m, n, k, w, k, inp, k, out, m, 0.0f, b);
		if (rc != NO_EPILOGUE)
			return rc;
		LMK_DT_SWITCH(dt, "linear",
			      bias_fill<T><<<grid_for(N * OC, 256), 256, 0, bk->stream>>>(
				      (T *)out, (const T *)b, N, OC));
		LMK_CK_LAUNCH();
		return matmul(bk, dt, dt, 1, 0, m, n, k, w, k, inp, k, out, m, 1.0f, NULL);
	}
	return matmul(bk, dt, dt, 1, 0, m, n, k, w, k, inp, k, out, m, 0.0f, NULL);
}

extern "C" int lmk_cuda_linear_add_forward(void *be, lmk_dtype dt, void *out, const void *inp,
					   const void *w, const void *b, const void *r, int64_t N,
					   int64_t IC, int64_t OC)
{
	lmk_cuda_backend *bk = LMK_BE(be);
	if (N == 0 || OC == 0)
		return 0;
	if (dt != LMK_F32 && dt != LMK_BF16)
		return lmk_err(LMK_EUNSUP, "linear_add: no cuda kernel for %s", lmk_dtype_name(dt));
	if (IC > 0 && N <= LMK_GEMV_MAX_ROWS) {
		lmk_gemv_out o = {out, w, b, r, OC};
		return lmk_cuda_gemv_multi(be, dt, inp, NULL, 0.f, N, IC, &o, 1);
	}
	if (IC > 0) {
		int rc = matmul(bk, dt, dt, 1, 0, (int)OC, (int)N, (int)IC, w, (int)IC, inp, (int)IC,
				out, (int)OC, 1.0f, b, r);
		if (rc != NO_EPILOGUE)
			return rc;
	}
	/* no algorithm takes C apart from D (or an empty product): the two ops */
	int rc = lmk_cuda_linear_forward(be, dt, out, inp, w, b, N, IC, OC);
	return rc < 0 ? rc : lmk_cuda_add_forward(be, dt, out, r, out, 1, N * OC);
}

extern "C" int lmk_cuda_linear_backward(void *be, lmk_dtype dt, lmk_gbuf dinp, lmk_gbuf dw,
					lmk_gbuf db, const void *dout, const void *inp,
					const void *w, int64_t N, int64_t IC, int64_t OC,
					int assign)
{
	lmk_cuda_backend *bk = LMK_BE(be);
	int rc;
	if (N == 0 || OC == 0)
		return 0;
	if (dt != LMK_F32 && dt != LMK_BF16)
		return lmk_err(LMK_EUNSUP, "linear: no cuda kernel for %s", lmk_dtype_name(dt));
	if (check_gbuf("linear", dt, dinp) < 0 || check_gbuf("linear", dt, dw) < 0 ||
	    check_gbuf("linear", dt, db) < 0)
		return lmk_errcode();
	if (db.p)
		LMK_DT_SWITCH(dt, "linear", {
			if ((rc = colsum<COLSUM_G, T>(bk, db, (const T *)dout, (const T *)NULL, NULL,
						      NULL, N, OC)) < 0)
				return rc;
		});
	if (IC == 0)
		return 0;
	if (dinp.p && (rc = matmul(bk, dt, dinp.dt, 0, 0, (int)IC, (int)N, (int)OC, w, (int)IC, dout,
				   (int)OC, dinp.p, (int)IC, assign & 1 ? 0.0f : 1.0f, NULL)) < 0)
		return rc;
	if (dw.p && (rc = matmul(bk, dt, dw.dt, 0, 1, (int)IC, (int)OC, (int)N, inp, (int)IC, dout,
				 (int)OC, dw.p, (int)IC, assign & 2 ? 0.0f : 1.0f, NULL)) < 0)
		return rc;
	return 0;
}
