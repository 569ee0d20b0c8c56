/* nccl_dp.h: the C-callable face of NCCL for data-parallel training: the
 * unique id that rank 0 makes (and lib/dist.h's rendezvous hands to the
 * others), one communicator per process on its context's device, averaging
 * all-reduces of slices of the float32 gradient buffer launched on a stream
 * of their own once the context's stream has queued the work before them
 * (so they overlap the rest of the backward), the context's stream made to
 * wait for them, and small blocking all-reduces of host doubles (losses,
 * counts, flags).
 * Owns: the communicator, its stream, two events, a small device buffer.
 * Needs: NCCL, the CUDA runtime, the context's backend (backend.h).
 * Never: prints or exits; failures are recorded through lib/err.h with the
 * failing statement. Only built when LMK_CUDA is 1. */
#ifndef LMK_CUDA_NCCL_DP_H
#define LMK_CUDA_NCCL_DP_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* NCCL_UNIQUE_ID_BYTES, without <nccl.h> (this header is not called
 * nccl.h: -Icuda would put it in the place of NCCL's own) */
#define LMK_NCCL_ID_BYTES 128
/* doubles one lmk_nccl_allreduce_host takes at most */
#define LMK_NCCL_HOST_MAX 16

typedef struct lmk_nccl lmk_nccl;
typedef enum { LMK_NCCL_SUM, LMK_NCCL_MAX } lmk_nccl_op;

/* Rank 0's id for the group (LMK_NCCL_ID_BYTES at id). Sets
 * NCCL_NVLS_ENABLE=0 unless the environment says otherwise.
 * @return : 0 or LMK_EDEVICE */
int lmk_nccl_get_id(void *id);
/* Joins the group of world ranks as rank (ncclCommInitRank: it returns
 * once every rank has called it) on the device of the context whose
 * backend is given; its all-reduces follow that context's stream. Sets
 * NCCL_NVLS_ENABLE=0 unless the environment says otherwise.
 * @return : 0, LMK_ENOMEM or LMK_EDEVICE */
int lmk_nccl_init(lmk_nccl **out, void *backend, const void *id, int rank, int world);
/* Waits for what is queued, then leaves the group. */
void lmk_nccl_free(lmk_nccl *c);

/* Queues buf[0..n) (float32, device, in place) := the mean over the ranks
 * of their buf, on the communication stream, after the work the context's
 * stream has queued so far. Returns at once. Every rank must queue the
 * same all-reduces in the same order. @return : 0 or LMK_EDEVICE */
int lmk_nccl_allreduce_avg_async(lmk_nccl *c, float *buf, size_t n);
/* Makes the context's stream wait for every all-reduce queued so far
 * (without the host waiting). @return : 0 or LMK_EDEVICE */
int lmk_nccl_wait(lmk_nccl *c);
/* v[0..n) := their sum (or max) over the ranks, n <= LMK_NCCL_HOST_MAX;
 * waits for it (and for the all-reduces queued before it). A collective:
 * every rank calls it. @return : 0, LMK_EINVAL or LMK_EDEVICE */
int lmk_nccl_allreduce_host(lmk_nccl *c, double *v, int n, lmk_nccl_op op);

#ifdef __cplusplus
}
#endif
#endif
