/* backend.h: the per-context backend state, shared by the kernel files of
 * cuda/ (C++ only; lib/ sees it as the opaque lmk_ctx.backend).
 * Owns: nothing beyond the struct. Needs: CUDA runtime, cuBLAS(Lt).
 * Never: prints or exits. */
#ifndef LMK_CUDA_BACKEND_H
#define LMK_CUDA_BACKEND_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

/* Bits of the error word that kernels set (atomicOr) when device data is
 * out of range; lmk_cuda_sync turns them into a message. */
enum { LMK_CUDA_BAD_ID = 1u, LMK_CUDA_BAD_TARGET = 2u };

/* cuBLASLt algorithms already chosen, keyed by everything the heuristic
 * looks at, so that a training step asks the heuristic only in its first
 * step. */
#define LMK_LT_CACHE 128
struct lmk_lt_key {
	int m, n, k, lda, ldb, ldd, ta, tb, abt, dt, epi, align;
};
struct lmk_lt_entry {
	lmk_lt_key key;
	cublasLtMatmulAlgo_t algo;
	int ok;                      /* 0: the heuristic found none (use GemmEx) */
};

struct lmk_cuda_backend {
	int device;
	int sm_count;
	cudaStream_t stream;
	cublasHandle_t blas;
	cublasLtHandle_t blaslt;
	void *lt_ws;                 /* cuBLASLt workspace */
	size_t lt_ws_bytes;
	unsigned *flags;             /* device word of LMK_CUDA_BAD_* bits */
	void *scratch;               /* device scratch of reductions, grown on demand */
	size_t scratch_bytes;
	int nondeterministic;        /* 1: kernels may sum with float atomics (faster attention backward) */
	lmk_lt_entry lt_cache[LMK_LT_CACHE];
	int lt_n, lt_next;
};

/* bytes of device scratch, valid until the next call (kernels using it are
 * ordered on the stream). Growing waits for the device once; the steady
 * state of a training step never grows it. @return : NULL with an error
 * recorded */
void *lmk_cuda_scratch(lmk_cuda_backend *b, size_t bytes);

#endif
