/* nccl.cu: NCCL for data-parallel training (see nccl_dp.h). One communicator
 * per process and GPU; gradient all-reduces run on a stream of their own at
 * the highest priority, ordered after the context's stream by an event, so
 * that NCCL's kernels start as soon as a bucket's gradients are complete and
 * run beside the backward kernels that follow. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "nccl_dp.h"

static_assert(LMK_NCCL_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "the id's size");

struct lmk_nccl {
	ncclComm_t comm;
	int rank, world;
	cudaStream_t compute;   /* the context's stream (not ours) */
	cudaStream_t stream;    /* the all-reduces' */
	cudaEvent_t ready;      /* compute stream's work so far, for stream */
	cudaEvent_t done;       /* stream's work so far, for compute */
	double *dbuf;           /* LMK_NCCL_HOST_MAX doubles */
};

/* NVLink SHARP (NVLS, NVLink multicast) needs multicast memory that the
 * fabric of the machines we train on does not provide safely: NCCL would
 * try it by itself on NVSwitch systems, and either fail at init, hang, or
 * reserve gigabytes for its buffers. Off unless the user asks for it. Set
 * before NCCL first reads its parameters (the id, or the communicator). */
static void nvls_off(void)
{
	setenv("NCCL_NVLS_ENABLE", "0", 0);
}

extern "C" int lmk_nccl_get_id(void *id)
{
	ncclUniqueId u;
	nvls_off();
	LMK_CK(ncclGetUniqueId(&u));
	memcpy(id, &u, sizeof u);
	return 0;
}

static int setup(lmk_nccl *c, lmk_cuda_backend *b, const void *id)
{
	ncclUniqueId u;
	int lo, hi;

	memcpy(&u, id, sizeof u);
	LMK_CK(cudaSetDevice(b->device));
	LMK_CK(ncclCommInitRank(&c->comm, c->world, u, c->rank));
	/* greatest priority is the lowest number: NCCL's kernels first when
	 * both streams have work ready */
	LMK_CK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
	LMK_CK(cudaStreamCreateWithPriority(&c->stream, cudaStreamNonBlocking, hi));
	LMK_CK(cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming));
	LMK_CK(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming));
	LMK_CK(cudaMalloc((void **)&c->dbuf, LMK_NCCL_HOST_MAX * sizeof(double)));
	return 0;
}

extern "C" int lmk_nccl_init(lmk_nccl **out, void *backend, const void *id, int rank, int world)
{
	lmk_cuda_backend *b = (lmk_cuda_backend *)backend;
	lmk_nccl *c;
	int rc;

	*out = NULL;
	if (!b || world < 1 || rank < 0 || rank >= world)
		return lmk_err(LMK_EINVAL, "nccl: rank %d of %d", rank, world);
	nvls_off();
	if (!(c = (lmk_nccl *)calloc(1, sizeof *c)))
		return lmk_err(LMK_ENOMEM, "out of memory");
	c->rank = rank;
	c->world = world;
	c->compute = b->stream;
	if ((rc = setup(c, b, id)) < 0) {
		if (c->comm)
			ncclCommAbort(c->comm);
		c->comm = NULL;
		lmk_nccl_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

extern "C" void lmk_nccl_free(lmk_nccl *c)
{
	if (!c)
		return;
	if (c->stream)
		cudaStreamSynchronize(c->stream);
	if (c->comm)
		ncclCommDestroy(c->comm);
	if (c->dbuf)
		cudaFree(c->dbuf);
	if (c->ready)
		cudaEventDestroy(c->ready);
	if (c->done)
		cudaEventDestroy(c->done);
	if (c->stream)
		cudaStreamDestroy(c->stream);
	free(c);
}

extern "C" int lmk_nccl_allreduce_avg_async(lmk_nccl *c, float *buf, size_t n)
{
	if (n == 0)
		return 0;
	/* the wait captures the compute stream's work queued until now; the
	 * event may be recorded again at once */
	LMK_CK(cudaEventRecord(c->ready, c->compute));
	LMK_CK(cudaStreamWaitEvent(c->stream, c->ready, 0));
	/* ncclAvg: with one rank the data is left as it is, bit for bit */
	LMK_CK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclAvg, c->comm, c->stream));
	return 0;
}

extern "C" int lmk_nccl_wait(lmk_nccl *c)
{
	LMK_CK(cudaEventRecord(c->done, c->stream));
	LMK_CK(cudaStreamWaitEvent(c->compute, c->done, 0));
	return 0;
}

extern "C" int lmk_nccl_allreduce_host(lmk_nccl *c, double *v, int n, lmk_nccl_op op)
{
	if (n < 1 || n > LMK_NCCL_HOST_MAX)
		return lmk_err(LMK_EINVAL, "nccl: %d host values, expected 1 to %d", n, LMK_NCCL_HOST_MAX);
	LMK_CK(cudaMemcpyAsync(c->dbuf, v, (size_t)n * sizeof *v, cudaMemcpyHostToDevice, c->stream));
	LMK_CK(ncclAllReduce(c->dbuf, c->dbuf, (size_t)n, ncclFloat64, op == LMK_NCCL_MAX ? ncclMax : ncclSum,
			     c->comm, c->stream));
	LMK_CK(cudaMemcpyAsync(v, c->dbuf, (size_t)n * sizeof *v, cudaMemcpyDeviceToHost, c->stream));
	LMK_CK(cudaStreamSynchronize(c->stream));
	return 0;
}
