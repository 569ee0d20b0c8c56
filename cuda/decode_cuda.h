/* decode_cuda.h: what a captured one-token decoding step needs beyond the
 * ops (lib/llama.c replays it as a CUDA graph): kernels that take the
 * token's position from device memory instead of the host, so that one
 * recorded step serves every position, a device argmax, and the graph and
 * pinned-memory plumbing.
 * The step state is three int32 in device memory: [0] the token, [1] its
 * position (= the cache's length before the step), [2] the argmax of the
 * step's logits (written by lmk_cuda_decode_argmax).
 * Shape letters: H query heads, K key/value heads (query head h reads kv
 * head h/(H/K)), D head dim (even, <= 256), S the cache's rows (max_t), V
 * vocabulary. q, k, v, out, the cache and the logits are of dtype dt
 * (LMK_F32 or LMK_BF16); the cache is (S,K,D) for one layer.
 * Owns: nothing but the graphs and pinned buffers it hands out. Needs: the
 * backend's stream (cuda.h). Never: waits (but lmk_cuda_event_wait),
 * prints. */
#ifndef LMK_DECODE_CUDA_H
#define LMK_DECODE_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "dtype.h" /* a C header without extern "C" guards of its own */

/* out (C) = the row state[0] of w (V,C), as lmk_cuda_embedding_forward
 * (an id outside [0,V) sets LMK_CUDA_BAD_ID, reported at the next sync,
 * and gives zeros). @return : 0 or LMK_EDEVICE */
int lmk_cuda_decode_embed(void *be, lmk_dtype dt, void *out, const void *w, const int32_t *state,
			  int64_t C, int64_t V);

/* Rotary embedding at position p = state[1], as lmk_cuda_rope_forward
 * (the same float32 angle and rounding): q rotated in place; k rotated and
 * written to row p of kcache; v copied to row p of vcache. inv_freq (D/2)
 * is device memory. @return : 0 or LMK_EDEVICE */
int lmk_cuda_decode_rope_append(void *be, lmk_dtype dt, void *q /*(H,D)*/, const void *k /*(K,D)*/,
				const void *v /*(K,D)*/, void *kcache /*(S,K,D)*/,
				void *vcache /*(S,K,D)*/, const int32_t *state,
				const float *inv_freq /*(D/2)*/, float attn_factor, int64_t H,
				int64_t K, int64_t D);

/* The number of parts a cache of S rows is split into by
 * lmk_cuda_decode_attention (fixed when the step is recorded), and the
 * float32 scratch it then needs (0 for one part). */
int lmk_cuda_decode_splits(void *be, int64_t H, int64_t S);
size_t lmk_cuda_decode_scratch(int nsplit, int64_t H, int64_t D);
/* out = softmax(scale q kᵀ) v of the one new query per head over the
 * first state[1] + 1 rows of the cache (the new token's own row last):
 * what lmk_cuda_attention_decode gives for that length, the rows split
 * into nsplit equal parts whose results merge by their logsumexp. part is
 * the scratch above (NULL when nsplit is 1). @return : 0, LMK_EINVAL or
 * LMK_EDEVICE */
int lmk_cuda_decode_attention(void *be, lmk_dtype dt, void *out /*(H,D)*/, const void *q /*(H,D)*/,
			      const void *kcache, const void *vcache, const int32_t *state,
			      int64_t H, int64_t K, int64_t D, float scale, int nsplit,
			      float *part);

/* state[2] = the index of the largest of the V logits, the lowest among
 * equals (lmk_sample's greedy choice); then the state moves on to the next
 * step: state[0] = that token, state[1] += 1. @return : 0 or LMK_EDEVICE */
int lmk_cuda_decode_argmax(void *be, lmk_dtype dt, const void *logits, int64_t V,
			   int32_t *state);

/* out (n float32, device) = x (n of dt, device), queued on the stream.
 * @return : 0 or LMK_EDEVICE */
int lmk_cuda_decode_to_f32(void *be, lmk_dtype dt, float *out, const void *x, int64_t n);

/* Recording the work queued on the backend's stream between begin and end
 * (nothing runs meanwhile) into an executable graph; end also closes a
 * capture that failed, and then returns its error. launch queues one
 * replay on the stream. @return : 0 or LMK_EDEVICE */
int lmk_cuda_capture_begin(void *be);
int lmk_cuda_capture_end(void *be, void **graph);
int lmk_cuda_graph_launch(void *be, void *graph);
void lmk_cuda_graph_free(void *graph);

/* Whether this thread is recording its stream (set by capture_begin,
 * cleared by capture_end). Meanwhile what would wait for the device or
 * allocate device memory (lmk_cuda_sync, lmk_cuda_download,
 * lmk_cuda_mem_alloc, growing the scratch) fails with LMK_EUNSUP and a
 * message of its own instead of calling CUDA, which would break the
 * recording with an API error: the recording then ends cleanly, and its
 * caller runs the work eagerly. */
void lmk_cuda_set_recording(int on);

/* Page-locked host memory (copies from and to it need no staging).
 * @return : 0 or LMK_ENOMEM */
int lmk_cuda_host_alloc(void **p, size_t bytes);
void lmk_cuda_host_free(void *p);
/* Device to host (pinned dst) on the stream, without waiting.
 * @return : 0 or LMK_EDEVICE */
int lmk_cuda_fetch_async(void *be, void *dst, const void *src, size_t bytes);
/* Events: record marks the stream's work queued so far; wait blocks the
 * host until that work is done. @return : 0 or LMK_EDEVICE */
int lmk_cuda_event_new(void **ev);
int lmk_cuda_event_record(void *be, void *ev);
int lmk_cuda_event_wait(void *ev);
void lmk_cuda_event_free(void *ev);

#ifdef __cplusplus
}
#endif
#endif
