/* decode.cu: the pieces of a captured one-token decoding step that the ops
 * cannot give, because a recorded graph replays the same arguments every
 * token: the position comes from a device word (the step state, see
 * decode_cuda.h) instead of the host. Rotary embedding with the KV-cache
 * append, attention over the cache up to that position, the greedy argmax,
 * and the graph and pinned-memory calls lib/llama.c replays the step with.
 * The kernels of the step are launched with pdl_launch (pdl.cuh), so each
 * one's launch overlaps the end of the one before.
 * Shape letters: H query heads, K key/value heads, D head dim, S cache
 * rows, V vocabulary, C hidden. */
#include <limits.h>

#include "common.cuh"
#include "decode_cuda.h"
#include "decode_scan.cuh"
#include "pdl.cuh"

/* ------------------------------------------------------------ embedding */

/* out (C) = w[state[0]], as embedding.cu's forward (an id outside [0,V)
 * sets LMK_CUDA_BAD_ID and gives zeros); eight elements a thread when VEC */
template <class T, bool VEC>
__global__ void embed_k(T *__restrict__ out, const T *__restrict__ w,
			const int32_t *__restrict__ state, int C, int V, unsigned *flags)
{
	pdl_trigger();
	pdl_wait();
	const int id = state[0];
	const bool bad = id < 0 || id >= V;
	if (bad && threadIdx.x == 0)
		atomicOr(flags, (unsigned)LMK_CUDA_BAD_ID);
	const T *row = w + (int64_t)(bad ? 0 : id) * C;
	if (VEC) {
		for (int c = 8 * threadIdx.x; c < C; c += 8 * blockDim.x) {
			float f[8] = {0, 0, 0, 0, 0, 0, 0, 0};
			if (!bad)
				ld8(f, row + c);
			st8(out + c, f);
		}
	} else {
		for (int c = threadIdx.x; c < C; c += blockDim.x)
			out[c] = bad ? fromf<T>(0.0f) : row[c];
	}
}

extern "C" int lmk_cuda_decode_embed(void *be, lmk_dtype dt, void *out, const void *w,
				     const int32_t *state, int64_t C, int64_t V)
{
	lmk_cuda_backend *b = LMK_BE(be);
	const bool vec = vec8_ok(C, out, w);
	cudaError_t e = cudaSuccess;
	LMK_DT_SWITCH(dt, "decode embedding",
		      e = vec ? pdl_launch(embed_k<T, true>, 1, 256, 0, b->stream, (T *)out,
					   (const T *)w, state, (int)C, (int)V, b->flags)
			      : pdl_launch(embed_k<T, false>, 1, 256, 0, b->stream, (T *)out,
					   (const T *)w, state, (int)C, (int)V, b->flags));
	LMK_CK(e);
	return 0;
}

/* ------------------------------------------------- rope and cache append */

/* Threads over (H + K) heads' D/2 rotation pairs, then K*D copies of v.
 * The rotation is rope.cu's (angle p * inv_freq[i] in float32, cosf and
 * sinf, times attn_factor), so q and k get the bits the rope op gives. */
template <class T>
__global__ void rope_append_k(T *q, const T *k, const T *v, T *kc, T *vc, const int32_t *state,
			      const float *inv_freq, float attn_factor, int H, int K, int D)
{
	pdl_trigger();
	pdl_wait();
	const int p = state[1], half = D / 2, npair = (H + K) * half, total = npair + K * D;
	const int64_t row = (int64_t)p * K * D;
	for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
		if (t >= npair) {
			vc[row + (t - npair)] = v[t - npair];
			continue;
		}
		const int i = t % half, head = t / half;
		const float a = (float)p * inv_freq[i];
		const float c = cosf(a) * attn_factor, s = sinf(a) * attn_factor;
		const T *x = head < H ? q + head * D : k + (head - H) * D;
		T *y = head < H ? q + head * D : kc + row + (head - H) * D;
		const float x0 = tof(x[i]), x1 = tof(x[i + half]);
		y[i] = fromf<T>(x0 * c - x1 * s);
		y[i + half] = fromf<T>(x1 * c + x0 * s);
	}
}

extern "C" int lmk_cuda_decode_rope_append(void *be, lmk_dtype dt, void *q, const void *k,
					   const void *v, void *kcache, void *vcache,
					   const int32_t *state, const float *inv_freq,
					   float attn_factor, int64_t H, int64_t K, int64_t D)
{
	const int64_t total = (H + K) * (D / 2) + K * D;
	cudaError_t e = cudaSuccess;
	LMK_DT_SWITCH(dt, "decode rope",
		      e = pdl_launch(rope_append_k<T>, grid_for(total, 256), 256, 0,
				     LMK_BE(be)->stream, (T *)q, (const T *)k, (const T *)v,
				     (T *)kcache, (T *)vcache, state, inv_freq, attn_factor, (int)H,
				     (int)K, (int)D));
	LMK_CK(e);
	return 0;
}

/* ------------------------------------------------------------ attention */

/* The key scan of attention.cu's decode kernels (decode_scan.cuh: a group
 * of tpr threads per key, eight elements of the head dim each, online
 * softmax in log2 units), with the length read from the state:
 * block (s, h) reduces rows [s*chunk, (s+1)*chunk) of the first Tk, chunk
 * = ceil(Tk / nsplit), to (m, l, o); with one part it writes out. */
#define ATT_THREADS 512 /* 64 keys in flight at D 64: a short cache in one pass */
#define MERGE_THREADS 128
#define LOG2E_F 1.4426950408889634f

static __device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

template <class T, bool VEC>
__global__ void __launch_bounds__(ATT_THREADS)
	attn_part_k(T *__restrict__ out, float *__restrict__ part /*(H,nsplit,D+2)*/,
		    const T *__restrict__ q, const T *__restrict__ kc, const T *__restrict__ vc,
		    const int32_t *__restrict__ state, int H, int K, int D, float scale_log2, int tpr)
{
	/* G groups of D floats: G * D <= ATT_THREADS * 8 since tpr * 8 >= D */
	__shared__ float sm_m[ATT_THREADS], sm_l[ATT_THREADS], sm_f[ATT_THREADS];
	__shared__ float sm_o[ATT_THREADS * 8];
	pdl_trigger();
	pdl_wait();
	const int tid = threadIdx.x, lane = tid % 32, s = blockIdx.x, h = blockIdx.y;
	const int nsplit = gridDim.x;
	const int g = h / (H / K), G = ATT_THREADS / tpr, grp = tid / tpr, sub = tid % tpr;
	const int Tk = state[1] + 1, chunk = (Tk + nsplit - 1) / nsplit;
	const int jb = s * chunk, je = min(Tk, jb + chunk);
	dec_scan<T, VEC>(sm_m, sm_l, sm_o, q, kc, vc, h, g, K, D, scale_log2, jb, je, G, grp, sub,
			 tpr);
	__syncthreads();
	/* the groups merged in parallel, each sum in a fixed order: M and L
	 * by every warp over lane-strided groups, each group's factor once,
	 * then P threads per output element over groups j, j + P, ... */
	float M = -INFINITY;
	for (int x = lane; x < G; x += 32)
		M = fmaxf(M, sm_m[x]);
	M = warp_max(M);
	const float Mu = M == -INFINITY ? 0.f : M;
	for (int x = tid; x < G; x += ATT_THREADS)
		sm_f[x] = exp2f(sm_m[x] - Mu);
	__syncthreads();
	float L = 0.f;
	for (int x = lane; x < G; x += 32)
		L += sm_l[x] * sm_f[x];
	L = warp_sum(L);
	int P = 32;
	while (P * D > ATT_THREADS)
		P >>= 1;
	const int d = tid / P, jx = tid % P;
	float acc = 0.f;
	if (d < D)
		for (int x = jx; x < G; x += P)
			acc += sm_o[x * D + d] * sm_f[x];
	for (int w = P >> 1; w > 0; w >>= 1)
		acc += __shfl_xor_sync(0xffffffffu, acc, w);
	float *ph = part + ((int64_t)h * nsplit + s) * (D + 2);
	if (d < D && jx == 0) {
		if (nsplit == 1)
			out[(int64_t)h * D + d] = fromf<T>(L > 0.f ? acc / L : 0.f);
		else
			ph[2 + d] = acc;
	}
	if (nsplit > 1 && tid == 0) {
		ph[0] = M;
		ph[1] = L;
	}
}

/* out of head h from its nsplit parts; a part with no rows has l = 0 */
template <class T>
__global__ void __launch_bounds__(MERGE_THREADS)
	attn_merge_k(T *__restrict__ out, const float *__restrict__ part, int nsplit, int D)
{
	pdl_trigger();
	pdl_wait();
	const int h = blockIdx.x;
	dec_merge<MERGE_THREADS>(part + (int64_t)h * nsplit * (D + 2), nsplit, D,
				 [&](int d, float v) { out[(int64_t)h * D + d] = fromf<T>(v); });
}

extern "C" int lmk_cuda_decode_splits(void *be, int64_t H, int64_t S)
{
	/* one part (one launch, no merge) up to 1024 rows; longer caches in
	 * parts of at least 1024 rows, up to two waves of blocks */
	int64_t n = (2 * LMK_BE(be)->sm_count + H - 1) / H;
	int64_t most = (S + 1023) / 1024;
	return (int)(n < most ? (n > 1 ? n : 1) : (most > 1 ? most : 1));
}

extern "C" size_t lmk_cuda_decode_scratch(int nsplit, int64_t H, int64_t D)
{
	return nsplit > 1 ? (size_t)H * nsplit * (D + 2) * sizeof(float) : 0;
}

template <class T>
static int attention(cudaStream_t st, T *out, const T *q, const T *kc, const T *vc,
		     const int32_t *state, int H, int K, int D, float scale, int nsplit, float *part)
{
	int tpr = 1;
	while (tpr * 8 < D)
		tpr <<= 1;
	const bool vec = D % 8 == 0 && al16(q) && al16(kc) && al16(vc);
	const dim3 grid(nsplit, H);
	LMK_CK(vec ? pdl_launch(attn_part_k<T, true>, grid, ATT_THREADS, 0, st, out, part, q, kc, vc,
				state, H, K, D, scale * LOG2E_F, tpr)
		   : pdl_launch(attn_part_k<T, false>, grid, ATT_THREADS, 0, st, out, part, q, kc,
				vc, state, H, K, D, scale * LOG2E_F, tpr));
	if (nsplit > 1)
		LMK_CK(pdl_launch(attn_merge_k<T>, H, MERGE_THREADS, 0, st, out, (const float *)part,
				  nsplit, D));
	return 0;
}

extern "C" int lmk_cuda_decode_attention(void *be, lmk_dtype dt, void *out, const void *q,
					 const void *kcache, const void *vcache,
					 const int32_t *state, int64_t H, int64_t K, int64_t D,
					 float scale, int nsplit, float *part)
{
	if (H < 1 || K < 1 || H % K || D < 1 || D > 256 || nsplit < 1 || (nsplit > 1 && !part))
		return lmk_err(LMK_EINVAL, "decode attention: H %lld, K %lld, D %lld, %d parts: "
			       "expected H a multiple of K, D <= 256 and scratch for the parts",
			       (long long)H, (long long)K, (long long)D, nsplit);
	LMK_DT_SWITCH(dt, "decode attention",
		      return attention<T>(LMK_BE(be)->stream, (T *)out, (const T *)q,
					  (const T *)kcache, (const T *)vcache, state, (int)H,
					  (int)K, (int)D, scale, nsplit, part));
	return 0;
}

/* --------------------------------------------------------------- argmax */

#define ARG_THREADS 1024

/* (v, i) beats (bv, bi): larger, or equal and a lower index */
static __device__ __forceinline__ bool beats(float v, int i, float bv, int bi)
{
	return v > bv || (v == bv && i < bi);
}

/* One block: each thread its strided elements in increasing order (the
 * first of equals kept; eight at a time, 16-byte loads, when VEC), then a
 * tree over the warp and the warps. */
template <class T, bool VEC>
__global__ void __launch_bounds__(ARG_THREADS) argmax_k(const T *__restrict__ x, int V,
							 int32_t *state)
{
	__shared__ float sv[ARG_THREADS / 32];
	__shared__ int si[ARG_THREADS / 32];
	pdl_trigger();
	pdl_wait();
	float bv = -INFINITY;
	int bi = INT_MAX;
	if (VEC) {
#pragma unroll 4
		for (int i = 8 * threadIdx.x; i < V; i += 8 * ARG_THREADS) {
			float f[8];
			ld8(f, x + i);
#pragma unroll
			for (int e = 0; e < 8; e++)
				if (bi == INT_MAX || f[e] > bv) {
					bv = f[e];
					bi = i + e;
				}
		}
	} else {
		for (int i = threadIdx.x; i < V; i += ARG_THREADS) {
			const float v = tof(x[i]);
			if (bi == INT_MAX || v > bv) {
				bv = v;
				bi = i;
			}
		}
	}
	for (int o = 16; o > 0; o >>= 1) {
		const float v = __shfl_xor_sync(0xffffffffu, bv, o);
		const int i = __shfl_xor_sync(0xffffffffu, bi, o);
		if (beats(v, i, bv, bi)) {
			bv = v;
			bi = i;
		}
	}
	const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
	if (lane == 0) {
		sv[w] = bv;
		si[w] = bi;
	}
	__syncthreads();
	if (w == 0) {
		bv = sv[lane];
		bi = si[lane];
		for (int o = 16; o > 0; o >>= 1) {
			const float v = __shfl_xor_sync(0xffffffffu, bv, o);
			const int i = __shfl_xor_sync(0xffffffffu, bi, o);
			if (beats(v, i, bv, bi)) {
				bv = v;
				bi = i;
			}
		}
		if (lane == 0) {
			state[2] = bi;
			state[0] = bi;
			state[1] += 1;
		}
	}
}

extern "C" int lmk_cuda_decode_argmax(void *be, lmk_dtype dt, const void *logits, int64_t V,
				      int32_t *state)
{
	if (V < 1 || V > INT_MAX)
		return lmk_err(LMK_EINVAL, "decode argmax: V %lld", (long long)V);
	cudaStream_t st = LMK_BE(be)->stream;
	const bool vec = vec8_ok(V, logits);
	cudaError_t e = cudaSuccess;
	LMK_DT_SWITCH(dt, "decode argmax",
		      e = vec ? pdl_launch(argmax_k<T, true>, 1, ARG_THREADS, 0, st, (const T *)logits,
					   (int)V, state)
			      : pdl_launch(argmax_k<T, false>, 1, ARG_THREADS, 0, st,
					   (const T *)logits, (int)V, state));
	LMK_CK(e);
	return 0;
}

/* ------------------------------------------------------ logits as float */

template <class T>
__global__ void to_f32_k(float *__restrict__ out, const T *__restrict__ x, int64_t n)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		out[i] = tof(x[i]);
}

extern "C" int lmk_cuda_decode_to_f32(void *be, lmk_dtype dt, float *out, const void *x, int64_t n)
{
	cudaStream_t st = LMK_BE(be)->stream;
	if (dt == LMK_F32) {
		LMK_CK(cudaMemcpyAsync(out, x, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, st));
		return 0;
	}
	LMK_DT_SWITCH(dt, "decode logits",
		      to_f32_k<T><<<grid_for(n, 256), 256, 0, st>>>(out, (const T *)x, n));
	LMK_CK_LAUNCH();
	return 0;
}

/* ------------------------------------------------- graphs, pinned memory */

extern "C" int lmk_cuda_capture_begin(void *be)
{
	/* thread-local: another thread's unrelated CUDA calls neither break
	 * the capture nor are refused */
	LMK_CK(cudaStreamBeginCapture(LMK_BE(be)->stream, cudaStreamCaptureModeThreadLocal));
	lmk_cuda_set_recording(1);
	return 0;
}

extern "C" int lmk_cuda_capture_end(void *be, void **graph)
{
	cudaGraph_t g = NULL;
	cudaGraphExec_t x = NULL;
	*graph = NULL;
	lmk_cuda_set_recording(0);
	cudaError_t e = cudaStreamEndCapture(LMK_BE(be)->stream, &g);
	if (e == cudaSuccess)
		e = cudaGraphInstantiate(&x, g, 0);
	if (g)
		cudaGraphDestroy(g);
	if (e != cudaSuccess) {
		cudaGetLastError();
		return lmk_err(LMK_EDEVICE, "cuda graph: cannot record the step: %s",
			       cudaGetErrorString(e));
	}
	*graph = x;
	return 0;
}

extern "C" int lmk_cuda_graph_launch(void *be, void *graph)
{
	LMK_CK(cudaGraphLaunch((cudaGraphExec_t)graph, LMK_BE(be)->stream));
	return 0;
}

extern "C" void lmk_cuda_graph_free(void *graph)
{
	if (graph)
		cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

extern "C" int lmk_cuda_host_alloc(void **p, size_t bytes)
{
	if (cudaMallocHost(p, bytes ? bytes : 1) != cudaSuccess) {
		cudaGetLastError();
		*p = NULL;
		return lmk_err(LMK_ENOMEM, "cuda: cannot allocate %zu bytes of pinned memory", bytes);
	}
	return 0;
}

extern "C" void lmk_cuda_host_free(void *p)
{
	if (p)
		cudaFreeHost(p);
}

extern "C" int lmk_cuda_fetch_async(void *be, void *dst, const void *src, size_t bytes)
{
	LMK_CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, LMK_BE(be)->stream));
	return 0;
}

extern "C" int lmk_cuda_event_new(void **ev)
{
	cudaEvent_t e;
	*ev = NULL;
	LMK_CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
	*ev = e;
	return 0;
}

extern "C" int lmk_cuda_event_record(void *be, void *ev)
{
	LMK_CK(cudaEventRecord((cudaEvent_t)ev, LMK_BE(be)->stream));
	return 0;
}

extern "C" int lmk_cuda_event_wait(void *ev)
{
	LMK_CK(cudaEventSynchronize((cudaEvent_t)ev));
	return 0;
}

extern "C" void lmk_cuda_event_free(void *ev)
{
	if (ev)
		cudaEventDestroy((cudaEvent_t)ev);
}
