/* cuda.h: the C-callable face of the CUDA backend: device selection, the
 * per-context handles (stream, cuBLAS/cuBLASLt) that kernels run with, and
 * device memory (allocation, copies, fills) ordered on the context's stream.
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
/* Selects device, creates a stream, the cuBLAS handles, the cuBLASLt
 * workspace and the error word kernels report bad ids into.
 * @return : 0 or LMK_EDEVICE */
int lmk_cuda_init(void **backend, int device);
void lmk_cuda_free(void *backend);
/* Waits for the context's stream, then reports what kernels found wrong
 * since the last sync (an embedding id or a cross-entropy target outside
 * its range: the op cannot check device data without waiting, so its
 * kernel records it and treats the row as empty).
 * @return : 0, LMK_EINVAL for bad ids or targets, or LMK_EDEVICE */
int lmk_cuda_sync(void *backend);

/* Device memory on the current device (the one lmk_cuda_init selected).
 * mem_free waits for the whole device first, since kernels queued on any
 * stream may still use the memory. @return : 0 or LMK_ENOMEM */
int lmk_cuda_mem_alloc(void **p, size_t bytes);
void lmk_cuda_mem_free(void *p);
/* Fills bytes at p with byte, on the stream (asynchronous). */
int lmk_cuda_memset(void *backend, void *p, int byte, size_t bytes);
/* Host to device on the stream; src may be reused as soon as this returns
 * (pageable memory is staged before the call returns). */
int lmk_cuda_upload(void *backend, void *dst, const void *src, size_t bytes);
/* Device to host: waits for the stream (and for the copy), then reports
 * as lmk_cuda_sync does. */
int lmk_cuda_download(void *backend, void *dst, const void *src, size_t bytes);
/* Device to device on the stream. */
int lmk_cuda_copy(void *backend, void *dst, const void *src, size_t bytes);
/* out[r*T + t] = start + t for r < rows, t < T (int32, device): a batch's
 * positions, made on the stream instead of uploaded. @return : 0 or
 * LMK_EDEVICE */
int lmk_cuda_fill_positions(void *backend, void *out, long long rows, long long T, int start);
/* The address of the backend's scratch of reductions (NULL before the
 * first use), and in *bytes its size: a step recorded as a CUDA graph
 * holds on to it, and is stale once the scratch has grown. */
void *lmk_cuda_scratch_at(void *backend, size_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
