/* cuda.h: the C-callable face of the CUDA backend: device selection and the
 * per-context handles (stream, cuBLAS/cuBLASLt) that kernels run with.
 * Owns: the backend state behind lmk_ctx.backend. Needs: CUDA runtime,
 * cuBLAS. Never: prints or exits; failures are recorded through lib/err.h
 * with the failing statement. Only built when LMK_CUDA is 1. */
#ifndef LMK_CUDA_H
#define LMK_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmk_cuda_info {
	char name[256];
	int major, minor;        /* compute capability */
	int sm_count;
	size_t global_mem, l2_bytes, smem_per_block_optin;
} lmk_cuda_info;

/* @return : the number of devices, 0 when there is none or no driver */
int lmk_cuda_device_count(void);
/* @return : 0, or LMK_EDEVICE with the CUDA error's text */
int lmk_cuda_device_info(int device, lmk_cuda_info *info);
/* Selects device, creates a stream and the cuBLAS handles.
 * @return : 0 or LMK_EDEVICE */
int lmk_cuda_init(void **backend, int device);
void lmk_cuda_free(void *backend);
/* Waits for the context's stream. @return : 0 or LMK_EDEVICE */
int lmk_cuda_sync(void *backend);
/* @return : the context's stream (a cudaStream_t), for kernel launches */
void *lmk_cuda_stream(void *backend);

#ifdef __cplusplus
}
#endif
#endif
