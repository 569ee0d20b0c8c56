/* device.cu: device selection, the per-context backend state, device memory
 * and copies on the context's stream, and the error word of the kernels. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "cuda.h"
#include "decode_cuda.h"

/* cuBLASLt's own recommendation for Hopper is 32 MiB. */
#define LT_WORKSPACE ((size_t)32 << 20)

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
	LMK_CK(cudaDeviceGetAttribute(&b->sm_count, cudaDevAttrMultiProcessorCount, device));
	LMK_CK(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));
	LMK_CK(cublasCreate(&b->blas));
	LMK_CK(cublasSetStream(b->blas, b->stream));
	/* fp32 mode means fp32: no TF32 behind the caller's back */
	LMK_CK(cublasSetMathMode(b->blas, CUBLAS_DEFAULT_MATH));
	LMK_CK(cublasLtCreate(&b->blaslt));
	LMK_CK(cudaMalloc(&b->lt_ws, LT_WORKSPACE));
	b->lt_ws_bytes = LT_WORKSPACE;
	LMK_CK(cudaMalloc((void **)&b->flags, sizeof *b->flags));
	LMK_CK(cudaMemsetAsync(b->flags, 0, sizeof *b->flags, b->stream));
	LMK_CK(cudaStreamSynchronize(b->stream));
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
	if (b->stream)
		cudaStreamSynchronize(b->stream);
	cudaFree(b->scratch);
	cudaFree(b->lt_ws);
	cudaFree(b->flags);
	if (b->blaslt)
		cublasLtDestroy(b->blaslt);
	if (b->blas)
		cublasDestroy(b->blas);
	if (b->stream)
		cudaStreamDestroy(b->stream);
	free(b);
}

/* Reads and clears the error word; the stream has been waited for. */
static int check_flags(lmk_cuda_backend *b)
{
	unsigned f = 0;
	LMK_CK(cudaMemcpyAsync(&f, b->flags, sizeof f, cudaMemcpyDeviceToHost, b->stream));
	LMK_CK(cudaStreamSynchronize(b->stream));
	if (!f)
		return 0;
	LMK_CK(cudaMemsetAsync(b->flags, 0, sizeof *b->flags, b->stream));
	LMK_CK(cudaStreamSynchronize(b->stream));
	return lmk_err(LMK_EINVAL, "%s%s%s (found on the device; those rows were left empty)",
		       f & LMK_CUDA_BAD_ID ? "embedding: an id was outside [0,V)" : "",
		       (f & LMK_CUDA_BAD_ID) && (f & LMK_CUDA_BAD_TARGET) ? "; " : "",
		       f & LMK_CUDA_BAD_TARGET
			       ? "cross_entropy: a target was outside [0,V) and not the ignore index"
			       : "");
}

/* this thread records its stream into a graph (decode_cuda.h) */
static thread_local int recording;

extern "C" void lmk_cuda_set_recording(int on) { recording = on; }

static int refused(const char *what)
{
	return lmk_err(LMK_EUNSUP, "cuda: %s while the stream is recorded as a graph", what);
}

extern "C" int lmk_cuda_sync(void *backend)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	if (recording)
		return refused("cannot wait for the device");
	LMK_CK(cudaStreamSynchronize(b->stream));
	return check_flags(b);
}

extern "C" int lmk_cuda_mem_alloc(void **p, size_t bytes)
{
	*p = NULL;
	if (recording)
		return refused("cannot allocate device memory");
	cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
	if (e != cudaSuccess) {
		cudaGetLastError();
		*p = NULL;
		return lmk_err(LMK_ENOMEM, "cuda: cannot allocate %zu bytes of device memory: %s",
			       bytes, cudaGetErrorString(e));
	}
	return 0;
}

extern "C" void lmk_cuda_mem_free(void *p)
{
	if (!p)
		return;
	cudaDeviceSynchronize();
	cudaFree(p);
}

extern "C" int lmk_cuda_memset(void *backend, void *p, int byte, size_t bytes)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	if (bytes)
		LMK_CK(cudaMemsetAsync(p, byte, bytes, b->stream));
	return 0;
}

extern "C" int lmk_cuda_upload(void *backend, void *dst, const void *src, size_t bytes)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	if (bytes)
		LMK_CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, b->stream));
	return 0;
}

extern "C" int lmk_cuda_download(void *backend, void *dst, const void *src, size_t bytes)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	if (recording)
		return refused("cannot copy to the host");
	if (bytes)
		LMK_CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, b->stream));
	LMK_CK(cudaStreamSynchronize(b->stream));
	return check_flags(b);
}

extern "C" int lmk_cuda_copy(void *backend, void *dst, const void *src, size_t bytes)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	if (bytes)
		LMK_CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, b->stream));
	return 0;
}

__global__ void positions_k(int32_t *out, int64_t n, int64_t T, int start)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		out[i] = start + (int32_t)(i % T);
}

extern "C" int lmk_cuda_fill_positions(void *backend, void *out, long long rows, long long T,
				       int start)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	const int64_t n = (int64_t)rows * T;
	if (n <= 0)
		return 0;
	const int64_t blocks = (n + 255) / 256;
	positions_k<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, b->stream>>>(
		(int32_t *)out, n, (int64_t)T, start);
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" void *lmk_cuda_scratch_at(void *backend, size_t *bytes)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	*bytes = b->scratch_bytes;
	return b->scratch;
}

void *lmk_cuda_scratch(lmk_cuda_backend *b, size_t bytes)
{
	if (bytes <= b->scratch_bytes)
		return b->scratch;
	if (recording) {
		refused("cannot grow the scratch buffer");
		return NULL;
	}
	/* grow by half again, so a slowly growing need settles quickly */
	size_t want = bytes + bytes / 2;
	if (b->scratch) {
		cudaError_t e = cudaStreamSynchronize(b->stream);
		if (e != cudaSuccess) {
			lmk_err(LMK_EDEVICE, "cuda scratch: %s", cudaGetErrorString(e));
			return NULL;
		}
		cudaFree(b->scratch);
		b->scratch = NULL;
		b->scratch_bytes = 0;
	}
	void *p = NULL;
	if (cudaMalloc(&p, want) != cudaSuccess) {
		cudaGetLastError();
		lmk_err(LMK_ENOMEM, "cuda scratch: cannot allocate %zu bytes", want);
		return NULL;
	}
	b->scratch = p;
	b->scratch_bytes = want;
	return p;
}
