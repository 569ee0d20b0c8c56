/* check.h: one check macro for CUDA, cuBLAS and NCCL calls. LMK_CK(stmt)
 * evaluates stmt; on failure it records "file:line: stmt: error text" with
 * LMK_EDEVICE and returns that code from the enclosing function (which must
 * return int). Overloads pick the error text for each library. */
#ifndef LMK_CUDA_CHECK_H
#define LMK_CUDA_CHECK_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdarg.h>

/* lib/err.h is a C header without extern "C" guards */
extern "C" {
#include "err.h"
}

static inline const char *lmk_ck_text(cudaError_t e) { return cudaGetErrorString(e); }
static inline bool lmk_ck_ok(cudaError_t e) { return e == cudaSuccess; }
static inline const char *lmk_ck_text(cublasStatus_t s) { return cublasGetStatusString(s); }
static inline bool lmk_ck_ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }
static inline const char *lmk_ck_text(ncclResult_t r) { return ncclGetErrorString(r); }
static inline bool lmk_ck_ok(ncclResult_t r) { return r == ncclSuccess; }

#define LMK_CK(stmt)                                                              \
	do {                                                                      \
		auto lmk_ck_r_ = (stmt);                                          \
		if (!lmk_ck_ok(lmk_ck_r_))                                        \
			return lmk_err(LMK_EDEVICE, "%s:%d: %s: %s", __FILE__,     \
				       __LINE__, #stmt, lmk_ck_text(lmk_ck_r_));   \
	} while (0)

/* After a kernel launch: the launch error, if any. */
#define LMK_CK_LAUNCH() LMK_CK(cudaGetLastError())

#endif
