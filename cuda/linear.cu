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
 * call costs more than streaming such a product's weights takes.
 * Algorithm choice (tune below): the heuristic's first pick is not always
 * the fastest of its list (bench/gemm_gpu.cu: at the 110M model's shapes
 * others of the same split-K were up to 25% faster, with the same output
 * bits). So the first product of each descriptor (beta 0 or not is part
 * of it), outside a graph capture and when large enough (TUNE_MIN_MACS),
 * runs the pick and up to TUNE_ALGOS - 1 other candidates on its real
 * data, keeps those of the pick's split-K and reduction scheme whose
 * output hashes to the pick's bits, times them, and caches the fastest;
 * the product's output is then computed again by the one chosen (from a
 * copy of D saved first when the product accumulates into it). Results
 * are thus the pick's bits, and the same from run to run whichever
 * candidate wins. LMK_CUBLASLT_TUNE=0 in the environment turns it off (the
 * pick alone, as before). */
#include <stdlib.h>
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

/* Candidates asked of the heuristic; the largest D saved for a trial of
 * a product that accumulates into it (beyond it: the pick alone); the
 * fewest multiply-adds (m n k) of a product worth trials: the trials cost
 * about 30 of its calls once, which a short product (a prompt's prefill of
 * a new length) would feel and hardly gain from. */
#define TUNE_ALGOS 8
#define TUNE_SAVE_MAX ((size_t)256 << 20)
#define TUNE_MIN_MACS 4294967296.0

/* *h += a sum over the 16-bit words of p, each times an odd key of its
 * position: integers, so any order of adding gives the same value. */
__global__ void tune_hash(unsigned long long *h, const uint16_t *w, int64_t n)
{
	unsigned long long s = 0;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		s += (unsigned long long)w[i] * (0x9e3779b97f4a7c15ULL ^ (2 * (uint64_t)i + 1));
	atomicAdd(h, s);
}

struct tune_run {
	cublasLtHandle_t lt;
	cublasLtMatmulDesc_t op;
	cublasLtMatrixLayout_t la, lb, lc, ld;
	const void *A, *B, *C;
	void *D;
	float beta;
	void *ws;
	size_t ws_bytes;
	cudaStream_t st;
};

static bool tune_call(const tune_run &r, const cublasLtMatmulAlgo_t *algo)
{
	const float alpha = 1.0f;
	return cublasLtMatmul(r.lt, r.op, &alpha, r.A, r.la, r.B, r.lb, &r.beta, r.C, r.lc, r.D, r.ld,
			      algo, r.ws, r.ws_bytes, r.st) == CUBLAS_STATUS_SUCCESS;
}

static int algo_cfg(const cublasLtMatmulAlgo_t *a, cublasLtMatmulAlgoConfigAttributes_t at)
{
	uint32_t v = 0; /* SPLITK_NUM is int32, REDUCTION_SCHEME uint32 */
	size_t got;
	if (cublasLtMatmulAlgoConfigGetAttribute(a, at, &v, sizeof v, &got) !=
	    CUBLAS_STATUS_SUCCESS)
		return -1;
	return (int)v;
}

/* The candidates of a product whose pick is *best (run on r's data):
 * *best becomes the fastest of those giving the pick's bits. D's bytes
 * (dbytes) are saved first and put back after each trial when the product
 * accumulates into them (acc); on return D holds what it held on entry
 * (acc) or the output of a candidate with the pick's bits. Any failure
 * leaves *best the pick. Nothing is recorded as an error. */
static void tune(lmk_cuda_backend *b, const tune_run &r, bool acc, size_t dbytes,
		 const cublasLtMatmulHeuristicResult_t *cand, int ncand, cublasLtMatmulAlgo_t *best)
{
	void *save = NULL;
	unsigned long long *hd = NULL, h0 = 0, h;
	cudaEvent_t e0 = NULL, e1 = NULL;
	const cublasLtMatmulAlgo_t pick = *best;
	const int sk = algo_cfg(&pick, CUBLASLT_ALGO_CONFIG_SPLITK_NUM);
	const int red = algo_cfg(&pick, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME);
	float tbest = 0;
	if ((acc && dbytes > TUNE_SAVE_MAX) || dbytes % 2)
		return;
	if (cudaMalloc((void **)&hd, sizeof *hd) != cudaSuccess ||
	    (acc && cudaMalloc(&save, dbytes) != cudaSuccess) ||
	    cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess ||
	    (acc && cudaMemcpyAsync(save, r.D, dbytes, cudaMemcpyDeviceToDevice, r.st) != cudaSuccess))
		goto done;
	/* the pick first (i = -1), then the others */
	for (int i = -1; i < ncand; i++) {
		const cublasLtMatmulAlgo_t *a = i < 0 ? &pick : &cand[i].algo;
		if (i >= 0 && (cand[i].state != CUBLAS_STATUS_SUCCESS ||
			       !memcmp(a, &pick, sizeof pick) ||
			       algo_cfg(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) != sk ||
			       algo_cfg(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME) != red))
			continue;
		if (acc && cudaMemcpyAsync(r.D, save, dbytes, cudaMemcpyDeviceToDevice, r.st) !=
				   cudaSuccess)
			goto done;
		if (!tune_call(r, a) || cudaMemsetAsync(hd, 0, sizeof *hd, r.st) != cudaSuccess)
			goto skip;
		tune_hash<<<1024, 256, 0, r.st>>>(hd, (const uint16_t *)r.D, (int64_t)(dbytes / 2));
		if (cudaGetLastError() != cudaSuccess ||
		    cudaMemcpyAsync(&h, hd, sizeof h, cudaMemcpyDeviceToHost, r.st) != cudaSuccess ||
		    cudaStreamSynchronize(r.st) != cudaSuccess)
			goto done;
		if (i < 0)
			h0 = h;
		else if (h != h0)
			continue; /* other bits: never chosen */
		/* three calls in a row, timed */
		{
			bool ok = cudaEventRecord(e0, r.st) == cudaSuccess;
			for (int k = 0; k < 3 && ok; k++)
				ok = tune_call(r, a);
			float ms;
			if (!ok || cudaEventRecord(e1, r.st) != cudaSuccess ||
			    cudaEventSynchronize(e1) != cudaSuccess ||
			    cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
				goto skip;
			if (i < 0 || ms < tbest) {
				tbest = ms;
				*best = *a;
			}
		}
		continue;
	skip:
		if (i < 0)
			goto done; /* the pick itself failed here: no tuning */
		(void)cudaGetLastError();
	}
done:
	(void)cudaGetLastError();
	/* D as on entry for the caller's run of *best (an accumulation), or
	 * already a candidate's output (the pick's bits) */
	if (acc && save)
		cudaMemcpyAsync(r.D, save, dbytes, cudaMemcpyDeviceToDevice, r.st);
	cudaStreamSynchronize(r.st);
	if (e0)
		cudaEventDestroy(e0);
	if (e1)
		cudaEventDestroy(e1);
	cudaFree(save);
	cudaFree(hd);
	(void)cudaGetLastError();
}

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
	/* beta 0 or not in the key too: the tuned choice is checked on one */
	int epi = (bias ? 1 : 0) | (C ? 2 : 0) | (beta != 0.0f ? 4 : 0);
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
		cublasLtMatmulHeuristicResult_t res, cand[TUNE_ALGOS];
		int found = 0, ncand = 0;
		cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
		const char *tv = getenv("LMK_CUBLASLT_TUNE");
		/* no trials (they wait for the device) while a graph records */
		bool capturing = cudaStreamIsCapturing(b->stream, &cs) != cudaSuccess ||
				 cs != cudaStreamCaptureStatusNone;
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
		if (hit->ok == 1 && !capturing && !(tv && !strcmp(tv, "0")) &&
		    (double)m * n * k >= TUNE_MIN_MACS &&
		    cublasLtMatmulAlgoGetHeuristic(b->blaslt, op, la, lb, ld, ld, pref, TUNE_ALGOS,
						   cand, &ncand) == CUBLAS_STATUS_SUCCESS &&
		    ncand > 1) {
			tune_run r = {b->blaslt, op, la, lb, ld, ld, A, B, C ? C : D, D, beta,
				      b->lt_ws, b->lt_ws_bytes, b->stream};
			bool acc = beta != 0.0f && (!C || C == D);
			size_t dbytes = (size_t)ldd * (size_t)n * (ddt == LMK_F32 ? 4 : 2);
			tune(b, r, acc, dbytes, cand, ncand, &hit->algo);
		}
		if (capturing) { /* the pick, asked again after the capture */
			res.algo = hit->algo;
			int ok = hit->ok;
			hit->ok = -1;
			if (ok == 1 && cublasLtMatmul(b->blaslt, op, &alpha, A, la, B, lb, &beta,
						      C ? C : D, ld, D, ld, &res.algo, b->lt_ws,
						      b->lt_ws_bytes, b->stream) == CUBLAS_STATUS_SUCCESS)
				goto done;
			if (ok == 1)
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
