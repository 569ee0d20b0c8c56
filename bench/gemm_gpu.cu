/* gemm_gpu.cu: every matrix product of the 110M Llama's training step
 * (bench/train_gpu.sh: N = B T = 32768 tokens, C 768, F 2048 with gate and
 * up as one product of 4096, V 32768, tied lm head), through cuBLASLt as
 * cuda/linear.cu calls it: the same descriptors (CUBLAS_COMPUTE_32F, float
 * scales, bf16 A and B, D bf16, or float32 for a weight's gradient), beta 1
 * where the step adds (dx of k, v: the `badd` kernels), C apart from D for
 * the residual products (o, down: D = r + x wᵀ), the backend's workspace
 * and the buffers' alignment as preferences. For each product it asks the
 * heuristic for up to --algos algorithms (16) and times each: CUDA events
 * around --reps calls in a row (5), after a warm-up call, the median of 3
 * such runs. Each line: the algorithm's rank in the heuristic's list,
 * marked * when it is the one a request for a single algorithm returns
 * (what linear.cu runs), TFLOP/s (2 m n k), microseconds a call, its
 * configuration (cublasLtMatmulAlgoConfigAttributes_t: algorithm id, tile
 * id, stages id, split-K count and reduction scheme, swizzle, custom
 * option, cluster shape id; the heuristic's waves count and workspace
 * bytes), and a hash of its
 * output after one call from the same inputs (C or D refilled), twice: a
 * hash that differs between the two is marked "varies" (not reproducible
 * run to run). Then the product's best against rank 0, and at the end what
 * the best of each would save a step (the calls a step makes of each).
 * Shapes in cuBLAS's column-major terms (linear.cu's header):
 *   forward  D (OC x N)  = op_T(w (IC x OC)) x (IC x N)       m OC, n N, k IC
 *   dx       D (IC x N)  = w (IC x OC) dy (OC x N)            m IC, n N, k OC
 *   dw       D (IC x OC) = x (IC x N) op_T(dy (OC x N))       m IC, n OC, k N
 * Usage: gemm_gpu [--reps R] [--algos K] [--only NAME]   Exit 0, 1 on a
 * failure, 2 on a usage error. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
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
#define BENCH "gemm_gpu"
#include "bench_gpu.cuh"

#define LT(x)                                                                                \
	do {                                                                                 \
		cublasStatus_t s_ = (x);                                                     \
		if (s_ != CUBLAS_STATUS_SUCCESS) {                                           \
			fprintf(stderr, "gemm_gpu: %s:%d: %s: %s\n", __FILE__, __LINE__, #x,  \
				cublasGetStatusString(s_));                                  \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

/* The largest power of two (up to 256) dividing the address, as linear.cu */
static uint32_t align_of(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	uint32_t al = 256;
	while (al > 1 && a % al)
		al /= 2;
	return al;
}

/* One product of the step: D (m x n) = op(A) op(B) (+ beta C), calls a step */
struct shape {
	const char *name;
	int ta, tb, m, n, k;
	int d32;       /* D float32 (a weight's gradient), else bf16 */
	float beta;
	int sep_c;     /* C apart from D (the residual: beta 1) */
	int calls;
};

static const int N = 32768, C = 768, F2 = 4096, F = 2048, V = 32768;
static const shape shapes[] = {
	{"fwd qkv", 1, 0, C, N, C, 0, 0, 0, 36},
	{"fwd o+r", 1, 0, C, N, C, 0, 1, 1, 12},
	{"fwd gate_up", 1, 0, F2, N, C, 0, 0, 0, 12},
	{"fwd down+r", 1, 0, C, N, F, 0, 1, 1, 12},
	{"fwd lm_head", 1, 0, V, N, C, 0, 0, 0, 1},
	{"dx q o", 0, 0, C, N, C, 0, 0, 0, 24},
	{"dx k v (add)", 0, 0, C, N, C, 0, 1, 0, 24},
	{"dx gate_up", 0, 0, C, N, F2, 0, 0, 0, 12},
	{"dx down", 0, 0, F, N, C, 0, 0, 0, 12},
	{"dx lm_head", 0, 0, C, N, V, 0, 0, 0, 1},
	{"dw qkv o", 0, 1, C, C, N, 1, 0, 0, 48},
	{"dw gate_up", 0, 1, C, F2, N, 1, 0, 0, 12},
	{"dw down", 0, 1, F, C, N, 1, 0, 0, 12},
	{"dw lm_head", 0, 1, C, V, N, 1, 0, 0, 1},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static int reps = 5, nalgos = 16;
static const char *only = "";

/* The time of one call in microseconds: the median of 3 runs of reps calls
 * after a warm-up call; < 0 when the algorithm refuses to run. */
template <class G> static double time_us(cudaStream_t st, G call)
{
	if (!call())
		return -1;
	cudaEvent_t e0, e1;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	std::vector<float> t;
	for (int r = 0; r < 3; r++) {
		CK(cudaEventRecord(e0, st));
		for (int i = 0; i < reps; i++)
			call();
		CK(cudaEventRecord(e1, st));
		CK(cudaEventSynchronize(e1));
		float ms;
		CK(cudaEventElapsedTime(&ms, e0, e1));
		t.push_back(ms / (float)reps);
	}
	CK(cudaEventDestroy(e0));
	CK(cudaEventDestroy(e1));
	std::sort(t.begin(), t.end());
	return 1e3 * t[1];
}

static int parse_count(const char *opt, const char *s, int lo, int hi)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*end || end == s || v < lo || v > hi) {
		fprintf(stderr, "gemm_gpu: %s '%s': expected a count from %d to %d\n", opt, s, lo, hi);
		exit(2);
	}
	return (int)v;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			reps = parse_count("--reps", argv[++i], 1, 10000);
		} else if (!strcmp(argv[i], "--algos") && i + 1 < argc) {
			nalgos = parse_count("--algos", argv[++i], 1, 64);
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			only = argv[++i];
		} else {
			fprintf(stderr, "usage: gemm_gpu [--reps R] [--algos K] [--only NAME]\n");
			return 2;
		}
	}
	int known = 0;
	for (int s = 0; s < NSHAPES; s++)
		known += strstr(shapes[s].name, only) != NULL;
	if (!known) {
		fprintf(stderr, "gemm_gpu: --only '%s' names no product (fwd, dx, dw, qkv, o, "
			"gate_up, down, lm_head)\n", only);
		return 2;
	}
	if (lmk_cuda_device_count() == 0) {
		fprintf(stderr, "gemm_gpu: no CUDA device\n");
		return 1;
	}
	void *be;
	if (lmk_cuda_init(&be, 0) < 0) {
		fprintf(stderr, "gemm_gpu: %s\n", lmk_errmsg());
		return 1;
	}
	lmk_cuda_backend *b = (lmk_cuda_backend *)be;
	cudaStream_t st = b->stream;
	printf("gemm_gpu: N %d C %d F %d (gate and up: %d) V %d, bf16 A B, fp32 accumulate; "
	       "workspace %zu bytes; %d calls in a row, median of 3; up to %d algorithms\n",
	       N, C, F, F2, V, b->lt_ws_bytes, reps, nalgos);
	double step_first = 0, step_best = 0;

	for (int s = 0; s < NSHAPES; s++) {
		const shape &sh = shapes[s];
		if (!strstr(sh.name, only))
			continue;
		const int m = sh.m, n = sh.n, k = sh.k;
		const int lda = sh.ta ? k : m, ldb = sh.tb ? n : k, ldd = m;
		const size_t na = (size_t)m * k, nb = (size_t)k * n, nd = (size_t)m * n;
		const size_t dbytes = nd * (sh.d32 ? 4 : 2);
		__nv_bfloat16 *A = (__nv_bfloat16 *)dalloc(na * 2), *B = (__nv_bfloat16 *)dalloc(nb * 2);
		void *D = dalloc(dbytes), *D0 = dalloc(dbytes);
		__nv_bfloat16 *Cs = sh.sep_c ? (__nv_bfloat16 *)dalloc(nd * 2) : NULL;
		fill_uniform<<<4096, 256, 0, st>>>(A, (int64_t)na, 11u + (uint32_t)s, -1.0f, 1.0f);
		fill_uniform<<<4096, 256, 0, st>>>(B, (int64_t)nb, 23u + (uint32_t)s, -1.0f, 1.0f);
		if (sh.d32)
			fill_uniform<<<4096, 256, 0, st>>>((float *)D0, (int64_t)nd, 37u, -1.0f, 1.0f);
		else
			fill_uniform<<<4096, 256, 0, st>>>((__nv_bfloat16 *)D0, (int64_t)nd, 37u, -1.0f, 1.0f);
		if (Cs)
			fill_uniform<<<4096, 256, 0, st>>>(Cs, (int64_t)nd, 41u, -1.0f, 1.0f);
		CK(cudaGetLastError());

		cublasLtMatmulDesc_t op;
		cublasLtMatrixLayout_t la, lb, ld;
		cublasOperation_t opa = sh.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
		cublasOperation_t opb = sh.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
		cudaDataType_t dtt = sh.d32 ? CUDA_R_32F : CUDA_R_16BF;
		LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
		LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
		LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
		LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, sh.ta ? k : m, sh.ta ? m : k, lda));
		LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, sh.tb ? n : k, sh.tb ? k : n, ldb));
		LT(cublasLtMatrixLayoutCreate(&ld, dtt, m, n, ldd));
		uint32_t al = std::min(std::min(align_of(A), align_of(B)), align_of(D));
		cublasLtMatmulPreference_t pref;
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
		std::vector<cublasLtMatmulHeuristicResult_t> res((size_t)nalgos);
		cublasLtMatmulHeuristicResult_t one;
		int found = 0, found1 = 0;
		LT(cublasLtMatmulAlgoGetHeuristic(b->blaslt, op, la, lb, ld, ld, pref, nalgos,
						  res.data(), &found));
		LT(cublasLtMatmulAlgoGetHeuristic(b->blaslt, op, la, lb, ld, ld, pref, 1, &one,
						  &found1));
		const double flop = 2.0 * m * n * (double)k;
		printf("\n%s: m %d n %d k %d, %s%s, D %s, %.1f GFLOP, %d calls a step: %d algorithms\n",
		       sh.name, m, n, k, sh.ta ? "T" : "N", sh.tb ? "T" : "N", sh.d32 ? "f32" : "bf16",
		       flop * 1e-9, sh.calls, found);
		double first = -1, best = -1;
		int ibest = -1;
		for (int a = 0; a < found; a++) {
			const cublasLtMatmulHeuristicResult_t &r = res[(size_t)a];
			if (r.state != CUBLAS_STATUS_SUCCESS)
				continue;
			const float alpha = 1.0f, beta = sh.beta;
			const void *Cp = Cs ? (const void *)Cs : D;
			auto call = [&]() {
				return cublasLtMatmul(b->blaslt, op, &alpha, A, la, B, lb, &beta, Cp, ld, D,
						      ld, &r.algo, b->lt_ws, b->lt_ws_bytes,
						      st) == CUBLAS_STATUS_SUCCESS;
			};
			CK(cudaMemcpyAsync(D, D0, dbytes, cudaMemcpyDeviceToDevice, st));
			double us = time_us(st, call);
			unsigned long long h[2] = {0, 0};
			for (int t = 0; t < 2 && us >= 0; t++) {
				CK(cudaMemcpyAsync(D, D0, dbytes, cudaMemcpyDeviceToDevice, st));
				call();
				h[t] = hash_of(st, D, dbytes);
			}
			int32_t id = -1, splitk = 0;
			uint32_t tile = 0, stages = 0, red = 0, swz = 0, cust = 0;
			uint16_t cluster = 0;
			size_t got;
			cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &got);
			cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &got);
			cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &got);
			cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &got);
			cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &got);
			cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz, &got);
			cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &cust, sizeof cust, &got);
			cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, &got);
			int is1 = found1 > 0 && !memcmp(&r.algo, &one.algo, sizeof one.algo);
			if (us < 0) {
				printf("  %2d%s refuses to run (algo %d tile %u stages %u splitK %d)\n", a,
				       is1 ? "*" : " ", id, tile, stages, splitk);
				continue;
			}
			printf("  %2d%s %6.1f TFLOP/s %8.1f us  algo %3d tile %3u stages %3u splitK %2d "
			       "red %u swz %u cust %2u cluster %2u waves %5.2f ws %9zu  %016llx%s\n",
			       a, is1 ? "*" : " ", flop / us * 1e-6, us, id, tile, stages, splitk, red,
			       swz, cust, (unsigned)cluster, r.wavesCount, r.workspaceSize, h[0],
			       h[0] != h[1] ? " varies" : "");
			fflush(stdout);
			if (a == 0)
				first = us;
			if (best < 0 || us < best) {
				best = us;
				ibest = a;
			}
		}
		if (first > 0 && best > 0) {
			printf("%s: rank 0 %.1f us, best rank %d %.1f us (%.1f%% less); a step: %.3f -> "
			       "%.3f ms\n", sh.name, first, ibest, best, 100.0 * (first - best) / first,
			       first * sh.calls * 1e-3, best * sh.calls * 1e-3);
			step_first += first * sh.calls;
			step_best += best * sh.calls;
		}
		fflush(stdout);
		cublasLtMatmulPreferenceDestroy(pref);
		cublasLtMatrixLayoutDestroy(ld);
		cublasLtMatrixLayoutDestroy(lb);
		cublasLtMatrixLayoutDestroy(la);
		cublasLtMatmulDescDestroy(op);
		CK(cudaFree(A));
		CK(cudaFree(B));
		CK(cudaFree(D));
		CK(cudaFree(D0));
		if (Cs)
			CK(cudaFree(Cs));
	}
	printf("\nthe products of a step: rank 0 %.2f ms, the best of each %.2f ms\n",
	       step_first * 1e-3, step_best * 1e-3);
	lmk_cuda_free(be);
	return 0;
}
