/* device.cu: device selection and the per-context backend state. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "cuda.h"

struct lmk_cuda_backend {
	int device;
	cudaStream_t stream;
	cublasHandle_t blas;
	cublasLtHandle_t blaslt;
};

extern "C" int lmk_cuda_device_count(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		cudaGetLastError(); /* clear the sticky "no device" error */
		return 0;
	}
	return n;
}

extern "C" int lmk_cuda_device_info(int device, lmk_cuda_info *info)
{
	cudaDeviceProp p;
	LMK_CK(cudaGetDeviceProperties(&p, device));
	memset(info, 0, sizeof *info);
	snprintf(info->name, sizeof info->name, "%s", p.name);
	info->major = p.major;
	info->minor = p.minor;
	info->sm_count = p.multiProcessorCount;
	info->global_mem = p.totalGlobalMem;
	info->l2_bytes = (size_t)p.l2CacheSize;
	info->smem_per_block_optin = p.sharedMemPerBlockOptin;
	return 0;
}

static int backend_setup(lmk_cuda_backend *b, int device)
{
	LMK_CK(cudaSetDevice(device));
	LMK_CK(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));
	LMK_CK(cublasCreate(&b->blas));
	LMK_CK(cublasSetStream(b->blas, b->stream));
	LMK_CK(cublasLtCreate(&b->blaslt));
	return 0;
}

extern "C" int lmk_cuda_init(void **backend, int device)
{
	int n = lmk_cuda_device_count();
	if (n == 0)
		return lmk_err(LMK_EDEVICE, "no CUDA device found");
	if (device < 0 || device >= n)
		return lmk_err(LMK_EINVAL, "CUDA device %d does not exist (%d found)", device, n);
	lmk_cuda_backend *b = (lmk_cuda_backend *)calloc(1, sizeof *b);
	if (!b)
		return lmk_err(LMK_ENOMEM, "out of memory");
	b->device = device;
	int rc = backend_setup(b, device);
	if (rc < 0) {
		lmk_cuda_free(b);
		return rc;
	}
	*backend = b;
	return 0;
}

extern "C" void lmk_cuda_free(void *backend)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	if (!b)
		return;
	if (b->blaslt)
		cublasLtDestroy(b->blaslt);
	if (b->blas)
		cublasDestroy(b->blas);
	if (b->stream)
		cudaStreamDestroy(b->stream);
	free(b);
}

extern "C" int lmk_cuda_sync(void *backend)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	LMK_CK(cudaStreamSynchronize(b->stream));
	return 0;
}

extern "C" void *lmk_cuda_stream(void *backend)
{
	return ((lmk_cuda_backend *)backend)->stream;
}
