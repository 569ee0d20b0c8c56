/* ssd.cu: the scalar-decay linear mixers on the GPU (ssd_cuda.h), the
 * chunked form of lib/ssd.c (the CPU kernels are the specification).
 *
 * Shape letters as in lib/ssd.h; per head bh = b*H + h; chunks n of C <= 64
 * tokens; M = Dk*Dv, the size of one state. Cumulative log decays are kept
 * in two parts so that long sequences keep their precision: acs (B,H,T),
 * float, the sum of loga from the token's chunk start to the token, and
 * E (B,H,N), double, the sum up to the end of each chunk; A_t - A_s is
 * (E[n(t)-1] - E[n(s)-1]) + acs_t - acs_s with the first difference in
 * double.
 *
 * States. U_n, the keys of chunk n at its end (sum exp(acs_end - acs_s) k vᵀ).
 * - Without lam one running state: a scan over the chunks (one thread per
 *   state element) turns U_n into the state before chunk n. On the tensor
 *   cores the plain form (no lam) runs it in one pass instead, the state in
 *   registers (tc_scan_kernel, bf16 states; few long heads in segments side
 *   by side), or, at Dk and chunk 64 where the heads fill the SMs, its
 *   forward as a single kernel with the output (tc_fused_kernel), without
 *   states in global memory.
 * - With lam (C = 2^c) chunk n reads, at chunk level j (token level c + j),
 *   for each j with bit j-1 of n set, the whole aligned block of 2^(j-1)
 *   chunks just below its own half: F[j-1][(n >> (j-1)) - 1]. These block
 *   states are an up-sweep of U over a binary tree (about 2N states per
 *   head), decayed to the block's end; the reader applies the decay from
 *   there to each token.
 * The backward mirrors this: the query side's state gradients (q dOᵀ weighted
 * by scale, lam and decay) summed over the chunks that read a block (parts of
 * at most PG chunks, then summed in order), a down-sweep of the tree (or the
 * reverse scan, or tc_scan_kernel's reverse pass), then per chunk the
 * intra-chunk gradients and the keys' and values' share of the state
 * gradient. The decay's gradient uses
 * dL/dA_t = q_t.dq_t - k_t.dk_t (per head, before heads of a group are
 * summed) and a suffix sum over t.
 * Every sum runs in a fixed order: no atomics, the same bits on every run.
 * Two families of chunk kernels, 256 threads (8 warps) per chunk:
 * - "simple": any dims <= 128 and chunk <= 64, F32 or BF16 storage, fp32
 *   products on CUDA cores from shared memory (rows padded by one float
 *   against bank conflicts); a warp owns rows i = warp + 8r, a lane the
 *   columns lane + 32a. The F32 path, and BF16 for shapes the other lacks.
 * - "tc": BF16 with Dk, Dv and the chunk multiples of 16, the products on
 *   the tensor cores (mma.sync); see the section's comment for where fp32 is
 *   kept. lmk_cuda_ssd_tensor_cores(0) switches it off (tests, benchmarks).
 * The simple family was checked, before any GPU run, by compiling this file
 * for the CPU against a small emulation of the CUDA subset it used and
 * comparing with lib/ssd.c; test_cuda_ssd checks both on the GPU. */
#include <type_traits>
#include <vector>

#include "common.cuh"
#include "cuda.h"
#include "ssd_cuda.h"
#include "mma.cuh"

#define NT 256    /* threads of the chunk kernels */
#define CMAX 64   /* largest chunk */
#define DMAX 128  /* largest head dim */
#define RW (CMAX / 8)
#define PG 16     /* chunks per partial sum of a block's query side */
#define HX 64     /* state rows at a time in the tensor-core backward */
#define MAXLC 40

struct geo {
	int64_t B, T, H, G, Dk, Dv, NL, M;
	int C, N, cbits, Lc, plain;
	int64_t tot;          /* states per head (F, dF) */
	int64_t off[MAXLC];   /* first state of each block level */
	float scale;
};

static __device__ __forceinline__ int fen_level(int64_t t, int64_t s)
{
	unsigned long long x = (unsigned long long)(t ^ s);
	return x ? 64 - __clzll((long long)x) : 0;
}

/* E[n-1], 0 before the first chunk */
static __device__ __forceinline__ double em1(const double *E, int64_t n) { return n > 0 ? E[n - 1] : 0.0; }

static __host__ __device__ __forceinline__ int64_t nblocks(const geo &g, int i)
{
	return ((int64_t)g.N + (1ll << i) - 1) >> i;
}

/* last chunk of block c at level i */
static __device__ __forceinline__ int64_t bend(const geo &g, int i, int64_t c)
{
	int64_t e = (c + 1) << i;
	return (e < g.N ? e : g.N) - 1;
}

/* ------------------------------------------------------------ decays */

/* A block per chunk (b, n), 64 heads at a time: the chunk's loga comes in
 * by coalesced loads (a token's heads side by side), a thread per head sums
 * it in token order in double, and acs leaves by coalesced stores (a
 * head's tokens side by side). */
template <class T>
__global__ void prep_chunk(float *acs /*(BH,T)*/, double *E /*(BH,N)*/, const T *loga /*(B,T,H)*/,
			   geo g)
{
	__shared__ float x[CMAX][65];
	int64_t b = blockIdx.x / g.N, n = blockIdx.x % g.N, t0 = n * g.C;
	int len = g.T - t0 < g.C ? (int)(g.T - t0) : g.C;
	for (int64_t h0 = 0; h0 < g.H; h0 += 64) {
		int nh = g.H - h0 < 64 ? (int)(g.H - h0) : 64;
		__syncthreads(); /* the last group's acs is stored */
		for (int idx = threadIdx.x; idx < len * 64; idx += blockDim.x) {
			int t = idx / 64, hh = idx % 64;
			x[t][hh] = loga && hh < nh ? tof(loga[(b * g.T + t0 + t) * g.H + h0 + hh]) : 0.0f;
		}
		__syncthreads();
		if (threadIdx.x < nh) {
			int hh = threadIdx.x;
			double a = 0;
			for (int t = 0; t < len; t++) {
				a += x[t][hh];
				x[t][hh] = (float)a;
			}
			E[(b * g.H + h0 + hh) * g.N + n] = a;
		}
		__syncthreads();
		for (int idx = threadIdx.x; idx < nh * len; idx += blockDim.x) {
			int hh = idx / len, t = idx % len;
			acs[(b * g.H + h0 + hh) * g.T + t0 + t] = x[t][hh];
		}
	}
}

__global__ void prep_prefix(double *E /*(BH,N)*/, geo g)
{
	int64_t bh = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (bh >= g.B * g.H)
		return;
	double s = 0;
	for (int64_t n = 0; n < g.N; n++) {
		s += E[bh * g.N + n];
		E[bh * g.N + n] = s;
	}
}

/* ------------------------------------------------- outer-product sums */

/* out[slot] = sum over the tokens t of chunks [na, nb) of w_t x_t y_tᵀ.
 * Keys (QRY false): x = k, y = v, one chunk per slot, w_t = exp(acs_end -
 * acs_t). Queries (QRY true): x = q, y = dout, w_t = scale * lam_t[c + lvl]
 * (1 when lvl < 0) * exp(A_t - A_{end of chunk na-1}). A thread owns the
 * elements x = warp + 8bx, y = lane + 32a. */
template <class T, bool QRY>
__global__ void __launch_bounds__(NT) acc_kernel(float *out /*(BH,ostride,M)*/, const T *X /*(B,T,G,Dk)*/,
						 const T *Y /*(B,T,H,Dv)*/, const float *acs,
						 const double *E, const T *lam /*(B,T,H,NL)*/,
						 const int4 *slots /*(nslots) or NULL*/,
						 int64_t ostride, geo g)
{
	__shared__ float xs[32][DMAX];
	__shared__ float ys[32][DMAX];
	__shared__ float ws[32];
	int si = blockIdx.x;
	int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, grp = h / (g.H / g.G);
	int na = si, nb = si + 1, lvl = -1;
	if (slots) {
		int4 s = slots[si];
		na = s.x;
		nb = s.y;
		lvl = s.z;
	}
	int64_t ta = (int64_t)na * g.C, tb = (int64_t)nb * g.C < g.T ? (int64_t)nb * g.C : g.T;
	const float *ac = acs + bh * g.T;
	const double *Eb = E + bh * g.N;
	int tid = threadIdx.x, lane = tid % 32, wp = tid / 32;
	float acc[DMAX / 8][DMAX / 32];
#pragma unroll
	for (int bx = 0; bx < DMAX / 8; bx++)
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++)
			acc[bx][a] = 0.0f;
	for (int64_t t0 = ta; t0 < tb; t0 += 32) {
		int nt = tb - t0 < 32 ? (int)(tb - t0) : 32;
		__syncthreads(); /* the previous tile is read */
		if (tid < nt) {
			int64_t t = t0 + tid;
			float w;
			if (QRY) {
				w = g.scale * expf((float)(em1(Eb, t / g.C) - em1(Eb, na)) + ac[t]);
				if (lvl >= 0)
					w *= tof(lam[((b * g.T + t) * g.H + h) * g.NL + g.cbits + lvl]);
			} else {
				w = expf(ac[tb - 1] - ac[t]);
			}
			ws[tid] = w;
		}
		__syncthreads();
		for (int idx = tid; idx < 32 * g.Dk; idx += NT) {
			int r = idx / (int)g.Dk, x = idx % (int)g.Dk;
			xs[r][x] = r < nt ? ws[r] * tof(X[((b * g.T + t0 + r) * g.G + grp) * g.Dk + x]) : 0.0f;
		}
		for (int idx = tid; idx < 32 * g.Dv; idx += NT) {
			int r = idx / (int)g.Dv, y = idx % (int)g.Dv;
			ys[r][y] = r < nt ? tof(Y[((b * g.T + t0 + r) * g.H + h) * g.Dv + y]) : 0.0f;
		}
		__syncthreads();
		for (int r = 0; r < nt; r++) {
			float yv[DMAX / 32];
#pragma unroll
			for (int a = 0; a < DMAX / 32; a++)
				yv[a] = ys[r][lane + 32 * a];
#pragma unroll
			for (int bx = 0; bx < DMAX / 8; bx++) {
				float xv = xs[r][wp + 8 * bx];
#pragma unroll
				for (int a = 0; a < DMAX / 32; a++)
					acc[bx][a] += xv * yv[a];
			}
		}
	}
	float *o = out + (bh * ostride + si) * g.M;
#pragma unroll
	for (int bx = 0; bx < DMAX / 8; bx++)
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++) {
			int x = wp + 8 * bx, y = lane + 32 * a;
			if (x < g.Dk && y < g.Dv)
				o[x * g.Dv + y] = acc[bx][a];
		}
}

/* ------------------------------------------------- state passes */

/* One thread per state element of a head. Without lam, U_n (in F) becomes
 * the state before chunk n; with lam, the up-sweep of the block states. */
__global__ void fwd_states(float *F /*(BH,tot,M)*/, const double *E, geo g)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= g.B * g.H * g.M)
		return;
	int64_t bh = i / g.M, e = i % g.M;
	float *f = F + bh * g.tot * g.M + e;
	const double *Eb = E + bh * g.N;
	if (g.plain) {
		/* eight loads in flight before their stores (the same sums) */
		float s = 0;
		for (int64_t n0 = 0; n0 < g.N; n0 += 8) {
			float u[8];
#pragma unroll
			for (int k = 0; k < 8; k++)
				u[k] = n0 + k < g.N ? f[(n0 + k) * g.M] : 0.0f;
#pragma unroll
			for (int k = 0; k < 8; k++) {
				int64_t n = n0 + k;
				if (n < g.N) {
					f[n * g.M] = s;
					s = expf((float)(Eb[n] - em1(Eb, n))) * s + u[k];
				}
			}
		}
		return;
	}
	for (int j = 1; j < g.Lc; j++) {
		int64_t nbj = nblocks(g, j), nbl = nblocks(g, j - 1);
		for (int64_t c = 0; c < nbj; c++) {
			int64_t c0 = 2 * c, c1 = 2 * c + 1;
			float v = f[(g.off[j - 1] + c0) * g.M];
			if (c1 < nbl)
				v = expf((float)(Eb[bend(g, j - 1, c1)] - Eb[bend(g, j - 1, c0)])) * v +
				    f[(g.off[j - 1] + c1) * g.M];
			f[(g.off[j] + c) * g.M] = v;
		}
	}
}

/* The gradients of the states after each chunk, dU_n, into dF's first N
 * states. Without lam dF holds the query sides R_n and is reverse-scanned in
 * place; with lam the parts are summed into the block states they read
 * (first: the first slot of each state's parts, -1 for none), then the tree
 * is walked down. */
__global__ void bwd_states(float *dF /*(BH,tot,M)*/, const float *parts /*(BH,nslots,M)*/,
			   const int *first /*(tot)*/, const double *E, int64_t nslots, geo g)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= g.B * g.H * g.M)
		return;
	int64_t bh = i / g.M, e = i % g.M;
	float *d = dF + bh * g.tot * g.M + e;
	const double *Eb = E + bh * g.N;
	if (g.plain) {
		float s = 0;
		for (int64_t n0 = g.N - 1; n0 >= 0; n0 -= 8) {
			float r[8];
#pragma unroll
			for (int k = 0; k < 8; k++)
				r[k] = n0 - k >= 0 ? d[(n0 - k) * g.M] : 0.0f;
#pragma unroll
			for (int k = 0; k < 8; k++) {
				int64_t n = n0 - k;
				if (n >= 0) {
					d[n * g.M] = s;
					s = expf((float)(Eb[n] - em1(Eb, n))) * s + r[k];
				}
			}
		}
		return;
	}
	/* Leaf by leaf, the values of its ancestors on a stack: level L's
	 * block c (c even: it reads the upper half of its parent's span, level
	 * L + 1's query sides, summed from its parts; plus what its parent
	 * passes down, decayed across the sibling) changes only when bit L of
	 * the leaf does, so each state is computed once and only the leaves
	 * are stored. The sums and their order are the tree's. */
	const float *p = parts + bh * nslots * g.M + e;
	float stk[MAXLC];
	for (int64_t n = 0; n < g.N; n++) {
		int top = g.Lc - 1;
		if (n > 0 && __ffsll((long long)n) - 1 < top)
			top = __ffsll((long long)n) - 1;
		for (int L = top; L >= 0; L--) {
			int64_t c = n >> L, nbl = nblocks(g, L);
			float v = 0.0f;
			int f = first[g.off[L] + c];
			if (f >= 0) {
				int64_t span = 2ll << L, ua = (c >> 1) * span + (span >> 1);
				int64_t ub = ((c >> 1) + 1) * span < g.N ? ((c >> 1) + 1) * span : g.N;
				float acc = 0;
				for (int64_t pa = ua; pa < ub; pa += PG)
					acc += expf((float)(em1(Eb, pa) - em1(Eb, ua))) * p[(f++) * g.M];
				v += acc;
			}
			if (L + 1 < g.Lc) {
				float dd = stk[L + 1];
				if (!(c & 1) && c + 1 < nbl)
					v += expf((float)(Eb[bend(g, L, c + 1)] - Eb[bend(g, L, c)])) * dd;
				else
					v += dd;
			}
			stk[L] = v;
		}
		d[n * g.M] = stk[0];
	}
}

/* The states chunk n reads: how many, and the r-th one's index in F, log
 * decay from its end to the end of chunk n-1, and lam level (-1: none). */
static __device__ __forceinline__ int nreads(const geo &g, int64_t n)
{
	if (g.N <= 1)
		return 0;
	return g.plain ? 1 : __popcll((unsigned long long)n);
}

static __device__ void read_state(const geo &g, const double *Eb, int64_t n, int r, int64_t *idx,
				  float *dlog, int *lv)
{
	if (g.plain) {
		*idx = n;
		*dlog = 0.0f;
		*lv = -1;
		return;
	}
	int seen = 0;
	for (int j = 1; j <= g.Lc; j++) {
		if (!((n >> (j - 1)) & 1))
			continue;
		if (seen++ < r)
			continue;
		int64_t up = n >> (j - 1);
		*idx = g.off[j - 1] + up - 1;
		*dlog = (float)(em1(Eb, n) - Eb[(up << (j - 1)) - 1]);
		*lv = g.cbits + j;
		return;
	}
}

/* ------------------------------------------------- chunk kernels */

struct tiles {
	float *Q, *K, *V, *O, *S, *Gm, *Mm, *Hs, *ac, *wr, *wn, *qd, *kd;
	int DKP, DVP, DMP, CP;
};

static __host__ __device__ size_t tiles_floats(int C, int64_t Dk, int64_t Dv, int bwd)
{
	int64_t DKP = Dk + 1, DVP = Dv + 1, DMP = (Dk > Dv ? Dk : Dv) + 1, CP = C + 1;
	size_t n = (size_t)(2 * C * DKP + C * DVP + C * CP + 32 * DMP + 2 * C);
	if (bwd)
		n += (size_t)(C * DVP + 2 * C * CP + 3 * C);
	return n;
}

static __device__ tiles carve(float *sm, int C, int64_t Dk, int64_t Dv, int bwd)
{
	tiles s;
	s.DKP = (int)Dk + 1;
	s.DVP = (int)Dv + 1;
	s.DMP = (int)(Dk > Dv ? Dk : Dv) + 1;
	s.CP = C + 1;
	float *p = sm;
	s.Q = p, p += C * s.DKP;
	s.K = p, p += C * s.DKP;
	s.V = p, p += C * s.DVP;
	s.S = p, p += C * s.CP;
	s.Hs = p, p += 32 * s.DMP;
	s.ac = p, p += C;
	s.wr = p, p += C;
	s.O = s.Gm = s.Mm = s.wn = s.qd = s.kd = NULL;
	if (bwd) {
		s.O = p, p += C * s.DVP;
		s.Gm = p, p += C * s.CP;
		s.Mm = p, p += C * s.CP;
		s.wn = p, p += C;
		s.qd = p, p += C;
		s.kd = p, p += C;
	}
	return s;
}

/* The chunk's q, k, v (and dout) rows and acs into shared memory, zero past
 * the sequence's end. */
template <class T>
static __device__ void load_chunk(const tiles &s, const geo &g, const T *q, const T *k,
				  const T *v, const T *dout, const float *acs, int64_t b,
				  int64_t h, int64_t t0, int len)
{
	int64_t grp = h / (g.H / g.G), bh = b * g.H + h;
	int Dk = (int)g.Dk, Dv = (int)g.Dv;
	for (int idx = threadIdx.x; idx < g.C * Dk; idx += NT) {
		int i = idx / Dk, x = idx % Dk;
		int64_t r = ((b * g.T + t0 + i) * g.G + grp) * g.Dk + x;
		s.Q[i * s.DKP + x] = i < len ? tof(q[r]) : 0.0f;
		s.K[i * s.DKP + x] = i < len ? tof(k[r]) : 0.0f;
	}
	for (int idx = threadIdx.x; idx < g.C * Dv; idx += NT) {
		int i = idx / Dv, y = idx % Dv;
		int64_t r = ((b * g.T + t0 + i) * g.H + h) * g.Dv + y;
		s.V[i * s.DVP + y] = i < len ? tof(v[r]) : 0.0f;
		if (dout)
			s.O[i * s.DVP + y] = i < len ? tof(dout[r]) : 0.0f;
	}
	for (int i = threadIdx.x; i < g.C; i += NT)
		s.ac[i] = i < len ? acs[bh * g.T + t0 + i] : 0.0f;
}

/* The weights of a read state for each row: wr with lam, wn without. */
template <class T>
static __device__ void read_weights(const tiles &s, const geo &g, const T *lam, int64_t b,
				    int64_t h, int64_t t0, int len, float dlog, int lv, float *wn)
{
	for (int i = threadIdx.x; i < g.C; i += NT) {
		float e = i < len ? g.scale * expf(dlog + s.ac[i]) : 0.0f;
		if (wn)
			wn[i] = e;
		if (lv >= 0 && i < len)
			e *= tof(lam[((b * g.T + t0 + i) * g.H + h) * g.NL + lv]);
		s.wr[i] = e;
	}
}

/* A tile of 32 rows (from x0) of the state St (Dk,Dv) into s.Hs. */
static __device__ void load_state_tile(const tiles &s, const geo &g, const float *St, int x0)
{
	int Dv = (int)g.Dv;
	for (int idx = threadIdx.x; idx < 32 * Dv; idx += NT) {
		int xx = idx / Dv, y = idx % Dv;
		s.Hs[xx * s.DMP + y] = x0 + xx < g.Dk ? St[(int64_t)(x0 + xx) * Dv + y] : 0.0f;
	}
}

template <class T>
__global__ void __launch_bounds__(NT) out_kernel(T *out /*(B,T,H,Dv)*/, const T *q, const T *k,
						 const T *v, const T *lam, const float *acs,
						 const double *E, const float *F /*(BH,tot,M) or NULL*/,
						 geo g)
{
	extern __shared__ float sm[];
	tiles s = carve(sm, g.C, g.Dk, g.Dv, 0);
	int64_t n = blockIdx.x, bh = blockIdx.y, b = bh / g.H, h = bh % g.H, t0 = n * g.C;
	int len = g.T - t0 < g.C ? (int)(g.T - t0) : g.C, C = g.C;
	int tid = threadIdx.x, lane = tid % 32, wp = tid / 32;
	load_chunk<T>(s, g, q, k, v, (const T *)NULL, acs, b, h, t0, len);
	__syncthreads();
	for (int idx = tid; idx < C * C; idx += NT) {
		int i = idx / C, j = idx % C;
		float val = 0.0f;
		if (j <= i && i < len) {
			float p = 0.0f;
			for (int x = 0; x < g.Dk; x++)
				p += s.Q[i * s.DKP + x] * s.K[j * s.DKP + x];
			float w = g.scale * expf(s.ac[i] - s.ac[j]);
			if (lam)
				w *= tof(lam[((b * g.T + t0 + i) * g.H + h) * g.NL + fen_level(t0 + i, t0 + j)]);
			val = w * p;
		}
		s.S[i * s.CP + j] = val;
	}
	__syncthreads();
	float acc[RW][DMAX / 32];
#pragma unroll
	for (int r = 0; r < RW; r++)
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++)
			acc[r][a] = 0.0f;
	for (int j = 0; j < len; j++)
#pragma unroll
		for (int r = 0; r < RW; r++) {
			int i = wp + 8 * r;
			if (i >= len || j > i)
				continue;
			float sv = s.S[i * s.CP + j];
#pragma unroll
			for (int a = 0; a < DMAX / 32; a++)
				if (lane + 32 * a < g.Dv)
					acc[r][a] += sv * s.V[j * s.DVP + lane + 32 * a];
		}
	const double *Eb = E + bh * g.N;
	int nr = F ? nreads(g, n) : 0;
	for (int rr = 0; rr < nr; rr++) {
		int64_t sidx = 0;
		float dlog = 0.0f;
		int lv = -1;
		read_state(g, Eb, n, rr, &sidx, &dlog, &lv);
		const float *St = F + (bh * g.tot + sidx) * g.M;
		__syncthreads(); /* wr and Hs of the previous state are read */
		read_weights<T>(s, g, lam, b, h, t0, len, dlog, lv, NULL);
		for (int x0 = 0; x0 < g.Dk; x0 += 32) {
			__syncthreads();
			load_state_tile(s, g, St, x0);
			__syncthreads();
			int nx = g.Dk - x0 < 32 ? (int)(g.Dk - x0) : 32;
			for (int xx = 0; xx < nx; xx++)
#pragma unroll
				for (int r = 0; r < RW; r++) {
					int i = wp + 8 * r;
					if (i >= len)
						continue;
					float qv = s.Q[i * s.DKP + x0 + xx] * s.wr[i];
#pragma unroll
					for (int a = 0; a < DMAX / 32; a++)
						if (lane + 32 * a < g.Dv)
							acc[r][a] += qv * s.Hs[xx * s.DMP + lane + 32 * a];
				}
		}
	}
#pragma unroll
	for (int r = 0; r < RW; r++) {
		int i = wp + 8 * r;
		if (i >= len)
			continue;
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++) {
			int y = lane + 32 * a;
			if (y < g.Dv)
				out[((b * g.T + t0 + i) * g.H + h) * g.Dv + y] = fromf<T>(acc[r][a]);
		}
	}
}

/* Per chunk: dq, dk (per head, float32, written), dv and dlam (added), the
 * decay's dL/dA per token and its chunk sum. */
template <class T>
__global__ void __launch_bounds__(NT) bwd_kernel(float *dqh /*(B,T,H,Dk)*/, float *dkh /*(B,T,H,Dk)*/,
						 gacc dv, gacc dlam, float *dA /*(BH,T)*/,
						 double *dAsum /*(BH,N)*/, const T *dout, const T *q,
						 const T *k, const T *v, const T *lam, const float *acs,
						 const double *E, const float *F, const float *dF, geo g)
{
	extern __shared__ float sm[];
	tiles s = carve(sm, g.C, g.Dk, g.Dv, 1);
	int64_t n = blockIdx.x, bh = blockIdx.y, b = bh / g.H, h = bh % g.H, t0 = n * g.C;
	int len = g.T - t0 < g.C ? (int)(g.T - t0) : g.C, C = g.C;
	int tid = threadIdx.x, lane = tid % 32, wp = tid / 32;
	load_chunk<T>(s, g, q, k, v, dout, acs, b, h, t0, len);
	__syncthreads();
	for (int idx = tid; idx < C * C; idx += NT) {
		int i = idx / C, j = idx % C;
		float sv = 0.0f, gv = 0.0f, mv = 0.0f;
		if (j <= i && i < len) {
			float p = 0.0f, ds = 0.0f;
			for (int x = 0; x < g.Dk; x++)
				p += s.Q[i * s.DKP + x] * s.K[j * s.DKP + x];
			for (int y = 0; y < g.Dv; y++)
				ds += s.O[i * s.DVP + y] * s.V[j * s.DVP + y];
			float e = g.scale * expf(s.ac[i] - s.ac[j]), w = e;
			if (lam)
				w *= tof(lam[((b * g.T + t0 + i) * g.H + h) * g.NL + fen_level(t0 + i, t0 + j)]);
			sv = w * p;
			gv = w * ds;
			mv = e * p * ds;
		}
		s.S[i * s.CP + j] = sv;
		s.Gm[i * s.CP + j] = gv;
		s.Mm[i * s.CP + j] = mv;
	}
	__syncthreads();
	/* lam's intra-chunk levels: 0..c with several chunks (the levels above
	 * are the reads', added below), 0..6 within a single chunk */
	if (dlam.p) {
		int maxl = g.N > 1 ? g.cbits + 1 : 7;
		for (int i = tid; i < len; i += NT) {
			float lvs[8] = {0, 0, 0, 0, 0, 0, 0, 0};
			for (int j = 0; j <= i; j++) {
				int l = fen_level(t0 + i, t0 + j);
#pragma unroll
				for (int u = 0; u < 8; u++)
					if (u == l)
						lvs[u] += s.Mm[i * s.CP + j];
			}
			for (int l = 0; l < maxl && l < g.NL; l++)
				gadd(dlam, ((b * g.T + t0 + i) * g.H + h) * g.NL + l, lvs[l]);
		}
	}
	const double *Eb = E + bh * g.N;
	float acc[RW][DMAX / 32];

	/* ---- dq: intra, then the reads (and lam's read levels) */
#pragma unroll
	for (int r = 0; r < RW; r++)
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++)
			acc[r][a] = 0.0f;
	for (int j = 0; j < len; j++)
#pragma unroll
		for (int r = 0; r < RW; r++) {
			int i = wp + 8 * r;
			if (i >= len || j > i)
				continue;
			float gv = s.Gm[i * s.CP + j];
#pragma unroll
			for (int a = 0; a < DMAX / 32; a++)
				if (lane + 32 * a < g.Dk)
					acc[r][a] += gv * s.K[j * s.DKP + lane + 32 * a];
		}
	int nr = F ? nreads(g, n) : 0;
	for (int rr = 0; rr < nr; rr++) {
		int64_t sidx = 0;
		float dlog = 0.0f;
		int lv = -1;
		read_state(g, Eb, n, rr, &sidx, &dlog, &lv);
		const float *St = F + (bh * g.tot + sidx) * g.M;
		__syncthreads();
		read_weights<T>(s, g, lam, b, h, t0, len, dlog, lv, s.wn);
		float dl[RW];
#pragma unroll
		for (int r = 0; r < RW; r++)
			dl[r] = 0.0f;
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++) {
			if (32 * a >= g.Dk)
				break;
			__syncthreads();
			load_state_tile(s, g, St, 32 * a);
			__syncthreads();
			int x = 32 * a + lane;
#pragma unroll
			for (int r = 0; r < RW; r++) {
				int i = wp + 8 * r;
				if (i >= len)
					continue;
				float tx = 0.0f;
				for (int y = 0; y < g.Dv; y++)
					tx += s.Hs[lane * s.DMP + y] * s.O[i * s.DVP + y];
				if (x < g.Dk) {
					acc[r][a] += s.wr[i] * tx;
					dl[r] += s.Q[i * s.DKP + x] * tx;
				}
			}
		}
		if (dlam.p && lv >= 0)
#pragma unroll
			for (int r = 0; r < RW; r++) {
				int i = wp + 8 * r;
				float sum = warp_sum(dl[r]); /* every lane: i is uniform in the warp */
				if (lane == 0 && i < len && lv < g.NL)
					gadd(dlam, ((b * g.T + t0 + i) * g.H + h) * g.NL + lv, s.wn[i] * sum);
			}
	}
#pragma unroll
	for (int r = 0; r < RW; r++) {
		int i = wp + 8 * r;
		float d = 0.0f;
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++) {
			int x = lane + 32 * a;
			if (x < g.Dk && i < len) {
				d += s.Q[i * s.DKP + x] * acc[r][a];
				dqh[((b * g.T + t0 + i) * g.H + h) * g.Dk + x] = acc[r][a];
			}
		}
		d = warp_sum(d);
		if (lane == 0 && i < C)
			s.qd[i] = d;
	}

	/* ---- dk: intra, then the state gradient after this chunk, dU */
	const float *dU = dF ? dF + (bh * g.tot + n) * g.M : NULL;
	__syncthreads();
	for (int i = tid; i < C; i += NT)
		s.wr[i] = i < len ? expf(s.ac[len - 1] - s.ac[i]) : 0.0f;
#pragma unroll
	for (int r = 0; r < RW; r++)
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++)
			acc[r][a] = 0.0f;
	for (int i = 0; i < len; i++)
#pragma unroll
		for (int r = 0; r < RW; r++) {
			int j = wp + 8 * r;
			if (j > i)
				continue;
			float gv = s.Gm[i * s.CP + j];
#pragma unroll
			for (int a = 0; a < DMAX / 32; a++)
				if (lane + 32 * a < g.Dk)
					acc[r][a] += gv * s.Q[i * s.DKP + lane + 32 * a];
		}
	if (dU) {
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++) {
			if (32 * a >= g.Dk)
				break;
			__syncthreads();
			load_state_tile(s, g, dU, 32 * a);
			__syncthreads();
#pragma unroll
			for (int r = 0; r < RW; r++) {
				int j = wp + 8 * r;
				if (j >= len)
					continue;
				float tx = 0.0f;
				for (int y = 0; y < g.Dv; y++)
					tx += s.Hs[lane * s.DMP + y] * s.V[j * s.DVP + y];
				acc[r][a] += s.wr[j] * tx;
			}
		}
	}
#pragma unroll
	for (int r = 0; r < RW; r++) {
		int j = wp + 8 * r;
		float d = 0.0f;
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++) {
			int x = lane + 32 * a;
			if (x < g.Dk && j < len) {
				d += s.K[j * s.DKP + x] * acc[r][a];
				dkh[((b * g.T + t0 + j) * g.H + h) * g.Dk + x] = acc[r][a];
			}
		}
		d = warp_sum(d);
		if (lane == 0 && j < C)
			s.kd[j] = d;
	}

	/* ---- dv: intra, then dU's share */
#pragma unroll
	for (int r = 0; r < RW; r++)
#pragma unroll
		for (int a = 0; a < DMAX / 32; a++)
			acc[r][a] = 0.0f;
	for (int i = 0; i < len; i++)
#pragma unroll
		for (int r = 0; r < RW; r++) {
			int j = wp + 8 * r;
			if (j > i)
				continue;
			float sv = s.S[i * s.CP + j];
#pragma unroll
			for (int a = 0; a < DMAX / 32; a++)
				if (lane + 32 * a < g.Dv)
					acc[r][a] += sv * s.O[i * s.DVP + lane + 32 * a];
		}
	if (dU) {
		for (int x0 = 0; x0 < g.Dk; x0 += 32) {
			__syncthreads();
			load_state_tile(s, g, dU, x0);
			__syncthreads();
			int nx = g.Dk - x0 < 32 ? (int)(g.Dk - x0) : 32;
			for (int xx = 0; xx < nx; xx++)
#pragma unroll
				for (int r = 0; r < RW; r++) {
					int j = wp + 8 * r;
					if (j >= len)
						continue;
					float kv = s.K[j * s.DKP + x0 + xx] * s.wr[j];
#pragma unroll
					for (int a = 0; a < DMAX / 32; a++)
						if (lane + 32 * a < g.Dv)
							acc[r][a] += kv * s.Hs[xx * s.DMP + lane + 32 * a];
				}
		}
	}
	if (dv.p)
#pragma unroll
		for (int r = 0; r < RW; r++) {
			int j = wp + 8 * r;
			if (j >= len)
				continue;
#pragma unroll
			for (int a = 0; a < DMAX / 32; a++) {
				int y = lane + 32 * a;
				if (y < g.Dv)
					gadd(dv, ((b * g.T + t0 + j) * g.H + h) * g.Dv + y, acc[r][a]);
			}
		}

	/* ---- dL/dA per token and the chunk's sum, in token order */
	__syncthreads();
	if (dA) {
		for (int i = tid; i < len; i += NT)
			dA[bh * g.T + t0 + i] = s.qd[i] - s.kd[i];
		if (tid == 0) {
			double sum = 0;
			for (int i = 0; i < len; i++)
				sum += (double)(s.qd[i] - s.kd[i]);
			dAsum[bh * g.N + n] = sum;
		}
	}
}

/* A chunk's tokens t1 - 1 down to t0 of dloga (stride H) += s, the suffix
 * sum continued over dA: eight tokens' loads in flight before their stores
 * (the roundings of gadd). */
template <class G>
static __device__ void dloga_chunk(G *dl, int64_t H, const float *dA, int64_t t0, int64_t t1, double s)
{
	for (int64_t tb = t1 - 1; tb >= t0; tb -= 8) {
		float a[8], c[8];
#pragma unroll
		for (int k = 0; k < 8; k++)
			if (tb - k >= t0) {
				a[k] = dA[tb - k];
				c[k] = tof(dl[(tb - k) * H]);
			}
#pragma unroll
		for (int k = 0; k < 8; k++)
			if (tb - k >= t0) {
				s += a[k];
				dl[(tb - k) * H] = fromf<G>(c[k] + (float)s);
			}
	}
}

/* dloga_r += sum over t >= r of dL/dA_t: one thread per chunk. */
__global__ void dloga_kernel(gacc dloga /*(B,T,H)*/, const float *dA, const double *dAsum, geo g)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= g.B * g.H * g.N)
		return;
	int64_t bh = i / g.N, n = i % g.N, b = bh / g.H, h = bh % g.H;
	double s = 0;
	for (int64_t m = g.N - 1; m > n; m--)
		s += dAsum[bh * g.N + m];
	int64_t t0 = n * g.C, t1 = t0 + g.C < g.T ? t0 + g.C : g.T, o = b * g.T * g.H + h;
	if (dloga.f32)
		dloga_chunk((float *)dloga.p + o, g.H, dA + bh * g.T, t0, t1, s);
	else
		dloga_chunk((bf16 *)dloga.p + o, g.H, dA + bh * g.T, t0, t1, s);
}

/* dq[b,t,grp] += the heads of the group, in head order; w (1, or 8 where
 * Dk and every pointer allow) consecutive elements a thread. */
__global__ void heads_kernel(gacc dq, gacc dk, const float *dqh, const float *dkh, int w, geo g)
{
	int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * w;
	if (i >= g.B * g.T * g.G * g.Dk)
		return;
	int64_t x = i % g.Dk, bt = i / (g.G * g.Dk), grp = (i / g.Dk) % g.G, hpg = g.H / g.G;
	float sq[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sk[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	for (int64_t u = 0; u < hpg; u++) {
		int64_t r = (bt * g.H + grp * hpg + u) * g.Dk + x;
		if (w == 8) {
			float a[8], c[8];
			ld8(a, dqh + r);
			ld8(c, dkh + r);
#pragma unroll
			for (int e = 0; e < 8; e++) {
				sq[e] += a[e];
				sk[e] += c[e];
			}
		} else {
			sq[0] += dqh[r];
			sk[0] += dkh[r];
		}
	}
	if (w == 8) {
		if (dq.p)
			gadd8(dq, i, sq);
		if (dk.p)
			gadd8(dk, i, sk);
	} else {
		if (dq.p)
			gadd(dq, i, sq[0]);
		if (dk.p)
			gadd(dk, i, sk[0]);
	}
}

/* ------------------------------------------------- decoding */

/* One block per head; a thread owns column y of every level's state, so
 * no two threads touch one element. */
template <class T>
__global__ void step_kernel(T *out, float *S, const T *q, const T *k, const T *v, const T *loga,
			    const T *lam, int64_t B, int64_t T_, int64_t t, int64_t pos, int64_t H,
			    int64_t G, int64_t Dk, int64_t Dv, int64_t NL, float scale)
{
	int64_t bh = blockIdx.x, b = bh / H, h = bh % H, grp = h / (H / G);
	int64_t NLs = NL ? NL : 1, M = Dk * Dv, bt = b * T_ + t;
	float *Sb = S + bh * NLs * M;
	const T *qr = q + (bt * G + grp) * Dk, *kr = k + (bt * G + grp) * Dk;
	float a = loga ? expf(tof(loga[bt * H + h])) : 1.0f;
	int jm = NL && pos > 0 ? __ffsll((long long)pos) - 1 : -1; /* levels 0..jm merge into jm+1 */
	for (int64_t y = threadIdx.x; y < Dv; y += blockDim.x) {
		float vy = tof(v[(bt * H + h) * Dv + y]), o = 0.0f;
		for (int64_t x = 0; x < Dk; x++) {
			if (jm >= 0) {
				float m = Sb[(jm + 1) * M + x * Dv + y];
				for (int l = 0; l <= jm; l++) {
					m += Sb[l * M + x * Dv + y];
					Sb[l * M + x * Dv + y] = 0.0f;
				}
				Sb[(jm + 1) * M + x * Dv + y] = m;
			}
			for (int64_t l = 0; l < NLs; l++)
				Sb[l * M + x * Dv + y] *= a;
			Sb[x * Dv + y] += tof(kr[x]) * vy;
		}
		for (int64_t l = 0; l < NLs; l++) {
			float w = scale * (lam ? tof(lam[(bt * H + h) * NL + l]) : 1.0f), ol = 0.0f;
			for (int64_t x = 0; x < Dk; x++)
				ol += tof(qr[x]) * Sb[l * M + x * Dv + y];
			o += w * ol;
		}
		out[(bt * H + h) * Dv + y] = fromf<T>(o);
	}
}

/* ------------------------------------------------- tensor cores (BF16) */

/* The same chunk kernels for BF16 with Dk, Dv and C multiples of 16, their
 * products on the tensor cores (mma.sync m16n8k16 on register fragments,
 * bf16 operands loaded from shared memory by ldmatrix, fp32 accumulators
 * in registers): q kᵀ, dO vᵀ, the masked scores times v and dO, and every
 * product with a state. Scores, weighted rows and states are rounded to
 * bf16 for the products (as the inputs already are); masks, decays, lam
 * and every sum stay fp32. Tiles come in by cp.async, 16 bytes a copy.
 * Rows are padded by 8 bf16 (4 fp32) against bank conflicts, each array
 * starts on 128 bytes. */

/* Byte offsets of the shared arrays of the tensor-core kernels. */
struct tco {
	size_t Qb, Kb, Vb, Ob, Sb, Gb, Hb, Z, ac, wr, kd, da, qi, lm, total;
	int lk, lv, lc;
};

static __host__ __device__ size_t bump(size_t *o, size_t bytes)
{
	size_t at = *o;
	*o = (at + bytes + 127) / 128 * 128;
	return at;
}

static __host__ __device__ size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

/* kind 0: out, 1: bwd, 2: acc (C is then the token tile), 4: bwd with the
 * plain form's four state halves. out: K's tile then holds the states
 * (Hb); bwd: HX state rows in Hb (bwd 4: the four halves, Dk rows each),
 * Z (20 C floats) for the block sums of the scores, then the reads'
 * weights and row dots (2 C + 2 C). */
static __host__ __device__ tco tc_layout(int C, int Dk, int Dv, int kind)
{
	tco L;
	bool bwd = kind == 1 || kind == 4;
	L.lk = Dk + 8, L.lv = Dv + 8, L.lc = C + 8;
	size_t o = 0, b2 = 2, b4 = 4;
	L.Ob = L.Sb = L.Gb = L.Hb = L.Z = 0;
	L.Qb = bump(&o, (size_t)C * L.lk * b2);
	if (kind == 2) {
		L.Kb = bump(&o, (size_t)C * L.lk * b2); /* the low half of Xw */
		L.Vb = bump(&o, (size_t)C * L.lv * b2);
	} else if (kind == 0) {
		L.Kb = L.Hb = bump(&o, zmax((size_t)C * L.lk, (size_t)Dk * L.lv) * b2);
		L.Vb = bump(&o, (size_t)C * L.lv * b2);
	} else {
		L.Kb = bump(&o, (size_t)C * L.lk * b2);
		L.Vb = bump(&o, (size_t)C * L.lv * b2);
		L.Ob = bump(&o, (size_t)C * L.lv * b2);
		L.Sb = bump(&o, (size_t)C * L.lc * b2);
		L.Gb = bump(&o, (size_t)C * L.lc * b2);
		L.Hb = bump(&o, (size_t)(kind == 4 ? 4 * Dk : Dk < HX ? Dk : HX) * L.lv * b2);
		L.Z = bump(&o, (size_t)20 * C * b4);
	}
	L.ac = L.wr = L.kd = L.da = L.qi = L.lm = 0;
	if (kind != 2)
		L.ac = bump(&o, (size_t)C * b4);
	if (!bwd)
		L.wr = bump(&o, (size_t)C * b4);
	if (bwd) {
		L.kd = bump(&o, (size_t)C * b4);
		L.da = bump(&o, (size_t)C * b4);
		L.qi = bump(&o, (size_t)C * b4);
	}
	if (kind != 2)
		L.lm = bump(&o, (size_t)C * 8 * b4);
	L.total = o;
	return L;
}

#define SMB(type, off) ((type *)(tcsm + (off)))

/* 16 bytes from global to shared memory, zeros when !valid (src must still
 * be a mapped address) */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid)
{
	int n = valid ? 16 : 0;
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
		     "r"(n)
		     : "memory");
}

/* This thread's copies have landed; a barrier after it shows all of them. */
static __device__ __forceinline__ void cp_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

static __device__ __forceinline__ uint32_t pack_bf(bf16 lo, bf16 hi)
{
	return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}

/* ---- mma.sync m16n8k16 (bf16 in, fp32 accumulators) on register fragments,
 * operands from padded shared tiles by ldmatrix. Lane l: gq = l / 4,
 * tq = l % 4; an accumulator tile c (16x8) holds (gq, 2tq..2tq+1) in c[0..1]
 * and (gq + 8, 2tq..2tq+1) in c[2..3]. */
static __device__ __forceinline__ void ldsm4(uint32_t (&r)[4], const bf16 *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p))
		     : "memory");
}

static __device__ __forceinline__ void ldsm4t(uint32_t (&r)[4], const bf16 *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p))
		     : "memory");
}

/* two floats rounded to bf16, lo in the low half */
static __device__ __forceinline__ uint32_t pack2f(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	return *(uint32_t *)&v;
}

/* A fragment (rows 16, k 16) of the row-major tile X (ld) at (r0, k0). */
static __device__ __forceinline__ void frag_a(uint32_t (&a)[4], const bf16 *X, int ld, int r0, int k0)
{
	int l = threadIdx.x % 32;
	ldsm4(a, X + (r0 + l % 16) * ld + k0 + l / 16 * 8);
}

/* A fragment (rows m 16, k 16) of the transpose of a tile stored as (k, m)
 * rows, at (m0, k0). */
static __device__ __forceinline__ void frag_a_t(uint32_t (&a)[4], const bf16 *X, int ld, int m0, int k0)
{
	int l = threadIdx.x % 32;
	ldsm4t(a, X + (k0 + l % 8 + l / 16 * 8) * ld + m0 + (l / 8) % 2 * 8);
}

/* B fragments of two n8 tiles (n0, n0 + 8), k 16 from k0: from a tile
 * stored as (n, k) rows (nk) or as (k, n) rows (kn, transposed by
 * ldmatrix). b[0..1]: the first tile, b[2..3]: the second. */
static __device__ __forceinline__ void frag_b_nk(uint32_t (&b)[4], const bf16 *X, int ld, int n0, int k0)
{
	int l = threadIdx.x % 32;
	ldsm4(b, X + (n0 + l % 8 + l / 16 * 8) * ld + k0 + (l / 8) % 2 * 8);
}

static __device__ __forceinline__ void frag_b_kn(uint32_t (&b)[4], const bf16 *X, int ld, int n0, int k0)
{
	int l = threadIdx.x % 32;
	ldsm4t(b, X + (k0 + l % 8 + (l / 8) % 2 * 8) * ld + n0 + l / 16 * 8);
}

/* the rows of an A fragment scaled (w0: rows gq, w1: rows gq + 8) and
 * rounded again: bf16(w x), as a scaled copy of the tile would hold */
static __device__ __forceinline__ void scale_a(uint32_t (&a)[4], float w0, float w1)
{
#pragma unroll
	for (int e = 0; e < 4; e++) {
		float w = e % 2 ? w1 : w0;
		float lo = __uint_as_float(a[e] << 16), hi = __uint_as_float(a[e] & 0xffff0000u);
		a[e] = pack2f(w * lo, w * hi);
	}
}

/* Rows of a chunk (bf16, zero past len) into Xb (C, ld), 16 bytes a copy,
 * in flight together (X, the row stride and D keep 16-byte alignment: the
 * launcher checks the pointers). A thread keeps one column x and steps
 * over the rows, NT / (D / 8) at a time (no division a copy). The caller
 * ends them with cp_wait_all and a barrier. */
static __device__ void tc_rows(bf16 *Xb, int ld, const bf16 *X, int64_t row0, int64_t rstride,
			       int D, int C, int len)
{
	int d8 = D / 8, rp = NT / d8, i = threadIdx.x / d8, x = threadIdx.x % d8 * 8;
	if (i >= rp)
		return;
	const bf16 *src = X + (row0 + i) * rstride + x, *first = X + row0 * rstride + x;
	int64_t step = (int64_t)rp * rstride;
	for (; i < C; i += rp, src += step)
		cp_async16(Xb + i * ld + x, i < len ? src : first, i < len);
}

/* A state (Dk,Dv) fp32 from global into Hb (Dk, ld) bf16: its rounding,
 * or (lo) what the rounding left out, so that two products, one with each,
 * come within about 2^-16 of the fp32 product. Four 16-byte loads a
 * thread in flight. */
static __device__ void tc_state(bf16 *Hb, int ld, const float *St, int Dk, int Dv, int lo = 0)
{
	int n4 = Dk * Dv / 4;
	for (int i0 = threadIdx.x; i0 < n4; i0 += 4 * NT) {
		float4 r[4];
#pragma unroll
		for (int u = 0; u < 4; u++)
			r[u] = i0 + u * NT < n4 ? ((const float4 *)St)[i0 + u * NT] : make_float4(0, 0, 0, 0);
#pragma unroll
		for (int u = 0; u < 4; u++) {
			int idx = 4 * (i0 + u * NT);
			if (idx >= Dk * Dv)
				break;
			float x[4] = {r[u].x, r[u].y, r[u].z, r[u].w};
			bf16 o[4];
#pragma unroll
			for (int e = 0; e < 4; e++) {
				bf16 hi = __float2bfloat16_rn(x[e]);
				o[e] = lo ? __float2bfloat16_rn(x[e] - __bfloat162float(hi)) : hi;
			}
			*(uint2 *)(Hb + (idx / Dv) * ld + idx % Dv) = make_uint2(pack_bf(o[0], o[1]), pack_bf(o[2], o[3]));
		}
	}
}

/* The same from a state kept as its two bf16 halves (the rounding at St,
 * what it left out at St + lo_off): 16-byte cp.async copies, waited for
 * (the caller's barrier then shows all of them). */
static __device__ void tc_state(bf16 *Hb, int ld, const bf16 *St, int Dk, int Dv, int lo,
				int64_t lo_off)
{
	tc_rows(Hb, ld, St + (lo ? lo_off : 0), 0, Dv, Dv, Dk, Dk);
	cp_wait_all();
}

/* lam of the chunk's rows at the levels inside a chunk into lm (C, 8): a
 * pair of tokens of one chunk is at most 6 levels apart (C <= 64, chunks
 * aligned to a power of two or a single chunk from 0). Zero past len and
 * NL, or without lam. */
static __device__ void tc_lam(float *lm, const geo &g, const bf16 *lam, int64_t b, int64_t h,
			      int64_t t0, int len)
{
	for (int idx = threadIdx.x; idx < g.C * 8; idx += NT) {
		int i = idx / 8, l = idx % 8;
		lm[idx] = lam && i < len && l < g.NL
				  ? __bfloat162float(lam[((b * g.T + t0 + i) * g.H + h) * g.NL + l])
				  : 0.0f;
	}
}

static __device__ void tc_read_weights(float *wr, float *wn, const float *ac, const geo &g,
				       const bf16 *lam, int64_t b, int64_t h, int64_t t0, int len,
				       float dlog, int lv)
{
	for (int i = threadIdx.x; i < g.C; i += NT) {
		float e = i < len ? g.scale * expf(dlog + ac[i]) : 0.0f;
		if (wn)
			wn[i] = e;
		if (lv >= 0 && i < len)
			e *= __bfloat162float(lam[((b * g.T + t0 + i) * g.H + h) * g.NL + lv]);
		wr[i] = e;
	}
}

/* The output of a chunk on register fragments (FS: float, the fp32
 * states F of either form, or bf16, the plain form's one state per chunk,
 * copied by cp.async into K's tile once the scores are done, landing while
 * P v runs: the smaller tiles let three blocks share an SM at D 128).
 * Warp w owns the rows
 * 16 (w % 4) .. + 15 and the 16-column groups w / 4, w / 4 + 2, ... of the
 * output; the two warps of a row block both compute its scores (S = q kᵀ
 * up to the diagonal block, masked and weighted in registers, then the
 * bf16 A operand of P v). The reads add (wr q) H with wr applied to q's
 * fragments. The output leaves through shared memory (V's tile) in 16-byte
 * stores. */
template <class FS>
__global__ void __launch_bounds__(NT, std::is_same<FS, bf16>::value ? 3 : 2)
	tc_out_kernel(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, const bf16 *lam,
		      const float *acs, const double *E, const FS *F, geo g)
{
	extern __shared__ __align__(128) unsigned char tcsm[];
	constexpr bool PB = std::is_same<FS, bf16>::value;
	int C = g.C, Dk = (int)g.Dk, Dv = (int)g.Dv;
	tco L = tc_layout(C, Dk, Dv, 0);
	bf16 *Qb = SMB(bf16, L.Qb), *Kb = SMB(bf16, L.Kb), *Vb = SMB(bf16, L.Vb), *Hb = SMB(bf16, L.Hb);
	float *ac = SMB(float, L.ac), *wr = SMB(float, L.wr), *lm = SMB(float, L.lm);
	int64_t n = blockIdx.x, bh = blockIdx.y, b = bh / g.H, h = bh % g.H, t0 = n * g.C;
	int64_t grp = h / (g.H / g.G);
	int len = g.T - t0 < g.C ? (int)(g.T - t0) : g.C;
	int lane = threadIdx.x % 32, wp = threadIdx.x / 32, rb = wp % 4, hf = wp / 4;
	int gq = lane / 4, tq = lane % 4, r0 = 16 * rb, ng = Dv / 16;
	bool act = r0 < C;
	tc_rows(Qb, L.lk, q + grp * g.Dk, b * g.T + t0, g.G * g.Dk, Dk, C, len);
	tc_rows(Kb, L.lk, k + grp * g.Dk, b * g.T + t0, g.G * g.Dk, Dk, C, len);
	tc_rows(Vb, L.lv, v + h * g.Dv, b * g.T + t0, g.H * g.Dv, Dv, C, len);
	cp_commit();
	for (int i = threadIdx.x; i < C; i += NT)
		ac[i] = i < len ? acs[bh * g.T + t0 + i] : 0.0f;
	tc_lam(lm, g, lam, b, h, t0, len);
	cp_wait<0>();
	__syncthreads();
	float o[4][2][4];
#pragma unroll
	for (int u = 0; u < 4; u++)
#pragma unroll
		for (int e = 0; e < 8; e++)
			o[u][e / 4][e % 4] = 0.0f;
	float sc[4][2][4];
#pragma unroll
	for (int jg = 0; jg < 4; jg++)
#pragma unroll
		for (int e = 0; e < 8; e++)
			sc[jg][e / 4][e % 4] = 0.0f;
	if (act)
		for (int kk = 0; kk < Dk; kk += 16) {
			uint32_t a[4];
			frag_a(a, Qb, L.lk, r0, kk);
#pragma unroll
			for (int jg = 0; jg < 4; jg++) {
				if (jg > rb)
					break;
				uint32_t bb[4];
				frag_b_nk(bb, Kb, L.lk, 16 * jg, kk);
				mma16816(sc[jg][0], a, bb[0], bb[1]);
				mma16816(sc[jg][1], a, bb[2], bb[3]);
			}
		}
	if (PB) {
		/* the state into K's tile, landing during P v */
		__syncthreads(); /* K is read */
		if (F)
			tc_rows(Hb, L.lv, (const bf16 *)F + (bh * g.tot + n) * g.M, 0, Dv, Dv, Dk, Dk);
		cp_commit();
	}
	if (act) {
#pragma unroll
		for (int jg = 0; jg < 4; jg++) {
			if (jg > rb)
				break;
			uint32_t pa[4];
#pragma unroll
			for (int e = 0; e < 8; e++) {
				int nn = e / 4, c = e % 4;
				int i = r0 + gq + (c >= 2 ? 8 : 0), j = 16 * jg + 8 * nn + 2 * tq + (c & 1);
				float val = 0.0f;
				if (j <= i && i < len) {
					val = g.scale * __expf(ac[i] - ac[j]) * sc[jg][nn][c];
					if (lam)
						val *= lm[i * 8 + fen_level(t0 + i, t0 + j)];
				}
				sc[jg][nn][c] = val;
			}
			pa[0] = pack2f(sc[jg][0][0], sc[jg][0][1]);
			pa[1] = pack2f(sc[jg][0][2], sc[jg][0][3]);
			pa[2] = pack2f(sc[jg][1][0], sc[jg][1][1]);
			pa[3] = pack2f(sc[jg][1][2], sc[jg][1][3]);
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int gi = hf + 2 * u;
				if (gi >= ng)
					break;
				uint32_t bb[4];
				frag_b_kn(bb, Vb, L.lv, 16 * gi, 16 * jg);
				mma16816(o[u][0], pa, bb[0], bb[1]);
				mma16816(o[u][1], pa, bb[2], bb[3]);
			}
		}
	}
	const double *Eb = E + bh * g.N;
	if (PB) {
		cp_wait<0>();
		__syncthreads();
	}
	if (PB && F && act) {
		/* the state before the chunk, rows weighted scale exp(acs) */
		int i0 = r0 + gq, i1 = r0 + gq + 8;
		float w0 = i0 < len ? g.scale * expf(ac[i0]) : 0.0f;
		float w1 = i1 < len ? g.scale * expf(ac[i1]) : 0.0f;
		for (int kk = 0; kk < Dk; kk += 16) {
			uint32_t a[4];
			frag_a(a, Qb, L.lk, r0, kk);
			scale_a(a, w0, w1);
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int gi = hf + 2 * u;
				if (gi >= ng)
					break;
				uint32_t bb[4];
				frag_b_kn(bb, Hb, L.lv, 16 * gi, kk);
				mma16816(o[u][0], a, bb[0], bb[1]);
				mma16816(o[u][1], a, bb[2], bb[3]);
			}
		}
	}
	int nr = F && !PB ? nreads(g, n) : 0;
	for (int rr = 0; rr < nr; rr++) {
		int64_t sidx = 0;
		float dlog = 0.0f;
		int lv = -1;
		read_state(g, Eb, n, rr, &sidx, &dlog, &lv);
		__syncthreads(); /* K (the first time), Hb and wr are read */
		tc_read_weights(wr, NULL, ac, g, lam, b, h, t0, len, dlog, lv);
		tc_state(Hb, L.lv, (const float *)F + (bh * g.tot + sidx) * g.M, Dk, Dv);
		__syncthreads();
		if (!act)
			continue;
		float w0 = wr[r0 + gq], w1 = wr[r0 + gq + 8];
		for (int kk = 0; kk < Dk; kk += 16) {
			uint32_t a[4];
			frag_a(a, Qb, L.lk, r0, kk);
			scale_a(a, w0, w1);
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int gi = hf + 2 * u;
				if (gi >= ng)
					break;
				uint32_t bb[4];
				frag_b_kn(bb, Hb, L.lv, 16 * gi, kk);
				mma16816(o[u][0], a, bb[0], bb[1]);
				mma16816(o[u][1], a, bb[2], bb[3]);
			}
		}
	}
	__syncthreads(); /* V is read */
	if (act)
#pragma unroll
		for (int u = 0; u < 4; u++) {
			int gi = hf + 2 * u;
			if (gi >= ng)
				break;
#pragma unroll
			for (int nn = 0; nn < 2; nn++) {
				int y = 16 * gi + 8 * nn + 2 * tq;
				*(uint32_t *)(Vb + (r0 + gq) * L.lv + y) = pack2f(o[u][nn][0], o[u][nn][1]);
				*(uint32_t *)(Vb + (r0 + gq + 8) * L.lv + y) = pack2f(o[u][nn][2], o[u][nn][3]);
			}
		}
	__syncthreads();
	for (int idx = threadIdx.x; idx < len * Dv / 8; idx += NT) {
		int i = idx / (Dv / 8), y = idx % (Dv / 8) * 8;
		*(uint4 *)(out + ((b * g.T + t0 + i) * g.H + h) * g.Dv + y) = *(const uint4 *)(Vb + i * L.lv + y);
	}
}

/* acc_kernel on the tensor cores: tiles of 64 tokens, Xwᵀ Y accumulated in
 * registers: warp w owns the 16x16 output tiles t = w, w + 8, ... (row
 * block t / (Dv / 16), column group t % (Dv / 16)), at most TW of them. */
template <bool QRY, int TW>
__global__ void __launch_bounds__(NT, 2) tc_acc_kernel(float *out, const bf16 *X, const bf16 *Y,
						    const float *acs, const double *E,
						    const bf16 *lam, const int4 *slots,
						    int64_t ostride, geo g)
{
	extern __shared__ __align__(128) unsigned char tcsm[];
	const int TT = 64;
	int Dk = (int)g.Dk, Dv = (int)g.Dv;
	tco L = tc_layout(TT, Dk, Dv, 2);
	bf16 *Xw = SMB(bf16, L.Qb), *Xl = SMB(bf16, L.Kb), *Yb = SMB(bf16, L.Vb);
	float *ws = SMB(float, L.wr);
	int wp = threadIdx.x / 32, gq = threadIdx.x % 32 / 4, tq = threadIdx.x % 4;
	int ng = Dv / 16, ntile = Dk / 16 * ng;
	float acc[TW][2][4];
#pragma unroll
	for (int u = 0; u < TW; u++)
#pragma unroll
		for (int e = 0; e < 8; e++)
			acc[u][e / 4][e % 4] = 0.0f;
	int si = blockIdx.x;
	int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, grp = h / (g.H / g.G);
	int na = si, nb = si + 1, lvl = -1;
	if (slots) {
		int4 s = slots[si];
		na = s.x, nb = s.y, lvl = s.z;
	}
	int64_t ta = (int64_t)na * g.C, tb = (int64_t)nb * g.C < g.T ? (int64_t)nb * g.C : g.T;
	const float *ac = acs + bh * g.T;
	const double *Eb = E + bh * g.N;
	for (int64_t t0 = ta; t0 < tb; t0 += TT) {
		int nt = tb - t0 < TT ? (int)(tb - t0) : TT;
		__syncthreads();
		for (int r = threadIdx.x; r < TT; r += NT) {
			float w = 0.0f;
			if (r < nt) {
				int64_t t = t0 + r;
				if (QRY) {
					w = g.scale * expf((float)(em1(Eb, t / g.C) - em1(Eb, na)) + ac[t]);
					if (lvl >= 0)
						w *= __bfloat162float(
							lam[((b * g.T + t) * g.H + h) * g.NL + g.cbits + lvl]);
				} else {
					w = expf(ac[tb - 1] - ac[t]);
				}
			}
			ws[r] = w;
		}
		__syncthreads();
		tc_rows(Yb, L.lv, Y + h * g.Dv, b * g.T + t0, g.H * g.Dv, Dv, TT, nt);
		/* the weighted rows in two bf16 halves: the states feed the
		 * decay's gradient, a difference of large terms. Eight
		 * elements a load, four loads a thread in flight. */
		int d8 = Dk / 8, nv = TT * d8;
		for (int i0 = threadIdx.x; i0 < nv; i0 += 4 * NT) {
			uint4 raw[4];
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int idx = i0 + u * NT, r = idx / d8;
				raw[u] = make_uint4(0, 0, 0, 0);
				if (idx < nv && r < nt)
					raw[u] = *(const uint4 *)(X + ((b * g.T + t0 + r) * g.G + grp) * g.Dk +
								  idx % d8 * 8);
			}
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int idx = i0 + u * NT, r = idx / d8, x = idx % d8 * 8;
				if (idx >= nv)
					break;
				const uint32_t *xr = (const uint32_t *)&raw[u];
				uint32_t hw[4], lw[4];
#pragma unroll
				for (int e = 0; e < 4; e++) {
					bf16 hi2[2], lo2[2];
#pragma unroll
					for (int f = 0; f < 2; f++) {
						float xv = __bfloat162float(__ushort_as_bfloat16(
							(unsigned short)(xr[e] >> (16 * f))));
						float wx = ws[r] * xv;
						hi2[f] = __float2bfloat16_rn(wx);
						lo2[f] = __float2bfloat16_rn(wx - __bfloat162float(hi2[f]));
					}
					hw[e] = pack_bf(hi2[0], hi2[1]);
					lw[e] = pack_bf(lo2[0], lo2[1]);
				}
				*(uint4 *)(Xw + r * L.lk + x) = make_uint4(hw[0], hw[1], hw[2], hw[3]);
				*(uint4 *)(Xl + r * L.lk + x) = make_uint4(lw[0], lw[1], lw[2], lw[3]);
			}
		}
		cp_wait_all();
		__syncthreads();
#pragma unroll
		for (int u = 0; u < TW; u++) {
			int t = wp + 8 * u, mb = t / ng, gi = t % ng;
			if (t >= ntile)
				break;
			for (int kt = 0; kt < TT; kt += 16) {
				uint32_t ah[4], al[4], bb[4];
				frag_a_t(ah, Xw, L.lk, 16 * mb, kt);
				frag_a_t(al, Xl, L.lk, 16 * mb, kt);
				frag_b_kn(bb, Yb, L.lv, 16 * gi, kt);
				mma16816(acc[u][0], ah, bb[0], bb[1]);
				mma16816(acc[u][1], ah, bb[2], bb[3]);
				mma16816(acc[u][0], al, bb[0], bb[1]);
				mma16816(acc[u][1], al, bb[2], bb[3]);
			}
		}
	}
	float *o = out + (bh * ostride + si) * g.M;
#pragma unroll
	for (int u = 0; u < TW; u++) {
		int t = wp + 8 * u, mb = t / ng, gi = t % ng;
		if (t >= ntile)
			break;
#pragma unroll
		for (int nn = 0; nn < 2; nn++)
#pragma unroll
			for (int hr = 0; hr < 2; hr++) {
				int x = 16 * mb + gq + 8 * hr, y = 16 * gi + 8 * nn + 2 * tq;
				*(float2 *)(o + x * Dv + y) = make_float2(acc[u][nn][2 * hr], acc[u][nn][2 * hr + 1]);
			}
	}
}

/* A warp's share of the row dots x_i . A_i (x bf16 rows in shared memory,
 * A the warp's accumulators over its column groups) into pt (two halves of
 * C: one per column half), for rows r0 + gq and r0 + gq + 8. */
static __device__ __forceinline__ void row_dots(float *pt, const bf16 *X, int ld, const float (&A)[4][2][4],
						int r0, int hf, int ng, int C)
{
	int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
	float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
	for (int u = 0; u < 4; u++) {
		int gi = hf + 2 * u;
		if (gi >= ng)
			break;
#pragma unroll
		for (int nn = 0; nn < 2; nn++) {
			int x = 16 * gi + 8 * nn + 2 * tq;
			float2 x0 = __bfloat1622float2(*(const __nv_bfloat162 *)(X + (r0 + gq) * ld + x));
			float2 x1 = __bfloat1622float2(*(const __nv_bfloat162 *)(X + (r0 + gq + 8) * ld + x));
			d0 += x0.x * A[u][nn][0] + x0.y * A[u][nn][1];
			d1 += x1.x * A[u][nn][2] + x1.y * A[u][nn][3];
		}
	}
	d0 += __shfl_xor_sync(0xffffffffu, d0, 1);
	d0 += __shfl_xor_sync(0xffffffffu, d0, 2);
	d1 += __shfl_xor_sync(0xffffffffu, d1, 1);
	d1 += __shfl_xor_sync(0xffffffffu, d1, 2);
	if (tq == 0) {
		pt[hf * C + r0 + gq] = d0;
		pt[hf * C + r0 + gq + 8] = d1;
	}
}

static __device__ __forceinline__ void zero_acc(float (&A)[4][2][4])
{
#pragma unroll
	for (int u = 0; u < 4; u++)
#pragma unroll
		for (int e = 0; e < 8; e++)
			A[u][e / 4][e % 4] = 0.0f;
}

/* A (the warp's column groups gi in [g0, g1)) += X (rows r0.., kd wide)
 * times the transpose of the state rows 16 g0 .. 16 g1 - 1, held in Hm as
 * (x, kd) rows from x = 16 g0. */
static __device__ __forceinline__ void mma_xht(float (&A)[4][2][4], const bf16 *X, int ldx, const bf16 *Hm,
					       int ldh, int r0, int hf, int g0, int g1, int kd)
{
	for (int kk = 0; kk < kd; kk += 16) {
		uint32_t a[4];
		frag_a(a, X, ldx, r0, kk);
#pragma unroll
		for (int u = 0; u < 4; u++) {
			int gi = hf + 2 * u;
			if (gi >= g1)
				break;
			if (gi < g0)
				continue;
			uint32_t bb[4];
			frag_b_nk(bb, Hm, ldh, 16 * (gi - g0), kk);
			mma16816(A[u][0], a, bb[0], bb[1]);
			mma16816(A[u][1], a, bb[2], bb[3]);
		}
	}
}

/* A (the warp's column groups of ng) += (w X) (rows r0.., X's columns
 * x0 .. x1 - 1, rows scaled by w0, w1) times the state rows x0 .. x1 - 1,
 * held in Hm as (x, n) rows from x0. */
static __device__ __forceinline__ void mma_xh(float (&A)[4][2][4], const bf16 *X, int ldx, const bf16 *Hm,
					      int ldh, int r0, int hf, int ng, int x0, int x1, float w0,
					      float w1)
{
	for (int kk = x0; kk < x1; kk += 16) {
		uint32_t a[4];
		frag_a(a, X, ldx, r0, kk);
		scale_a(a, w0, w1);
#pragma unroll
		for (int u = 0; u < 4; u++) {
			int gi = hf + 2 * u;
			if (gi >= ng)
				break;
			uint32_t bb[4];
			frag_b_kn(bb, Hm, ldh, 16 * gi, kk - x0);
			mma16816(A[u][0], a, bb[0], bb[1]);
			mma16816(A[u][1], a, bb[2], bb[3]);
		}
	}
}

/* xa = X (rows r0.., Dv wide) times the transpose of the state St (Dk,
 * Dv), in its bf16 high and low halves (whose two products come within
 * about 2^-16 of the fp32 one; FS float: rounded here, bf16: the halves
 * stored, the low one lo_off further), HX rows of it at a time through
 * Hb. Every thread calls it; it begins with a barrier (Hb's earlier
 * readers). */
template <class FS>
static __device__ void xa_state(float (&xa)[4][2][4], const bf16 *X, int ldx, bf16 *Hb, int ldh,
				const FS *St, int64_t lo_off, int Dk, int Dv, int r0, int hf, bool act)
{
	zero_acc(xa);
	for (int lo = 0; lo < 2; lo++)
		for (int x0 = 0; x0 < Dk; x0 += HX) {
			int rows = Dk - x0 < HX ? Dk - x0 : HX;
			__syncthreads();
			if constexpr (std::is_same<FS, bf16>::value)
				tc_state(Hb, ldh, St + (int64_t)x0 * Dv, rows, Dv, lo, lo_off);
			else
				tc_state(Hb, ldh, St + (int64_t)x0 * Dv, rows, Dv, lo);
			__syncthreads();
			if (act)
				mma_xht(xa, X, ldx, Hb, ldh, r0, hf, x0 / 16, (x0 + rows) / 16, Dv);
		}
}

/* acc rows r0 + gq (+ 8) of the warp's column groups, fp32, into global
 * rows (row0 + i) * rs, i < len, two floats a store */
static __device__ __forceinline__ void store_acc(float *dst, int64_t row0, int64_t rs,
						 const float (&A)[4][2][4], int r0, int hf, int ng, int len)
{
	int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
#pragma unroll
	for (int u = 0; u < 4; u++) {
		int gi = hf + 2 * u;
		if (gi >= ng)
			break;
#pragma unroll
		for (int nn = 0; nn < 2; nn++)
#pragma unroll
			for (int hr = 0; hr < 2; hr++) {
				int i = r0 + gq + 8 * hr, x = 16 * gi + 8 * nn + 2 * tq;
				if (i < len)
					*(float2 *)(dst + (row0 + i) * rs + x) =
						make_float2(A[u][nn][2 * hr], A[u][nn][2 * hr + 1]);
			}
	}
}

static __device__ __forceinline__ float2 ld2(const float *p) { return *(const float2 *)p; }
static __device__ __forceinline__ float2 ld2(const bf16 *p)
{
	return __bfloat1622float2(*(const __nv_bfloat162 *)p);
}
static __device__ __forceinline__ void st2(float *p, float a, float b) { *(float2 *)p = make_float2(a, b); }
static __device__ __forceinline__ void st2(bf16 *p, float a, float b)
{
	*(__nv_bfloat162 *)p = __floats2bfloat162_rn(a, b);
}

/* As store_acc, but added into a gradient of either dtype (the roundings of
 * gadd): the loads of UB column groups (bf16: two, every group at Dk 64)
 * issued before their stores, one round trip to memory for them. */
template <class G>
static __device__ __forceinline__ void add_acc_t(G *dst, int64_t row0, int64_t rs,
						 const float (&A)[4][2][4], int r0, int hf, int ng, int len)
{
	using G2 = typename std::conditional<std::is_same<G, float>::value, float2, __nv_bfloat162>::type;
	constexpr int UB = std::is_same<G, float>::value ? 1 : 2;
	int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
#pragma unroll
	for (int ub = 0; ub < 4; ub += UB) {
		G2 c[UB][2][2];
#pragma unroll
		for (int du = 0; du < UB; du++) {
			int gi = hf + 2 * (ub + du);
#pragma unroll
			for (int nn = 0; nn < 2; nn++)
#pragma unroll
				for (int hr = 0; hr < 2; hr++) {
					int i = r0 + gq + 8 * hr, x = 16 * gi + 8 * nn + 2 * tq;
					if (gi < ng && i < len)
						c[du][nn][hr] = *(const G2 *)(dst + (row0 + i) * rs + x);
				}
		}
#pragma unroll
		for (int du = 0; du < UB; du++) {
			int u = ub + du, gi = hf + 2 * u;
#pragma unroll
			for (int nn = 0; nn < 2; nn++)
#pragma unroll
				for (int hr = 0; hr < 2; hr++) {
					int i = r0 + gq + 8 * hr, x = 16 * gi + 8 * nn + 2 * tq;
					if (gi < ng && i < len) {
						float2 o = ld2((const G *)&c[du][nn][hr]);
						st2(dst + (row0 + i) * rs + x, o.x + A[u][nn][2 * hr],
						    o.y + A[u][nn][2 * hr + 1]);
					}
				}
		}
	}
}

/* A chunk's dq or dk: into the per-head rows dh when there is one, else
 * (one head a group) added into the gradient gd (when wanted). */
static __device__ __forceinline__ void put_grad(float *dh, gacc gd, const geo &g, int64_t b, int64_t h,
						int64_t t0, const float (&A)[4][2][4], int r0, int hf,
						int len)
{
	int nk = (int)g.Dk / 16;
	if (dh)
		store_acc(dh + h * g.Dk, b * g.T + t0, g.H * g.Dk, A, r0, hf, nk, len);
	else if (gd.p && gd.f32)
		add_acc_t((float *)gd.p + h * g.Dk, b * g.T + t0, g.H * g.Dk, A, r0, hf, nk, len);
	else if (gd.p)
		add_acc_t((bf16 *)gd.p + h * g.Dk, b * g.T + t0, g.H * g.Dk, A, r0, hf, nk, len);
}

/* The backward of a chunk on register fragments. Warp w owns the rows
 * 16 (w % 4) .. + 15 of every product and the 16-column groups w / 4,
 * w / 4 + 2, ... of dq, dk and dv; for the scores it takes the key blocks
 * w / 4, w / 4 + 2 of its row block up to the diagonal. The masked scores
 * S and dS (bf16) go through shared memory, as the products read them
 * transposed too; the sums of S * dS (dL/dA's intra-chunk part: row sums
 * minus column sums) and of e p ds by lam level (dlam) are reduced in
 * registers per block, then over the blocks in a fixed order. A pair of
 * tokens of two different 16-row blocks is at level 4 + bit length of
 * (block ^ block), the levels 0..4 are inside the diagonal blocks (chunks
 * aligned to a power of two, or one chunk from 0). States come in HX rows
 * at a time (hi, then lo where the decay's gradient needs fp32), FS as in
 * xa_state (bf16: the plain form's halves from tc_scan_kernel); with PRE
 * (the plain form, Dk <= 64) the four halves of F[n] and dF[n] come in
 * whole by cp.async with the chunk's rows, landing while the scores run,
 * and the state products read them without further loads. dq and dk
 * go to dqh and dkh, or with those NULL (G = H) straight into their
 * gradients; dv is added from the registers. */
template <class FS, bool PRE>
__global__ void __launch_bounds__(NT, 2) tc_bwd_kernel(float *dqh, float *dkh, gacc dq, gacc dk,
						       gacc dv, int dv8, gacc dlam, float *dA,
						       double *dAsum, const bf16 *dout, const bf16 *q,
						       const bf16 *k, const bf16 *v, const bf16 *lam,
						       const float *acs, const double *E, const FS *F,
						       const FS *dF, int64_t lo_off, geo g)
{
	extern __shared__ __align__(128) unsigned char tcsm[];
	int C = g.C, Dk = (int)g.Dk, Dv = (int)g.Dv;
	tco L = tc_layout(C, Dk, Dv, PRE ? 4 : 1);
	bf16 *Qb = SMB(bf16, L.Qb), *Kb = SMB(bf16, L.Kb), *Vb = SMB(bf16, L.Vb), *Ob = SMB(bf16, L.Ob);
	bf16 *Sb = SMB(bf16, L.Sb), *Gb = SMB(bf16, L.Gb), *Hb = SMB(bf16, L.Hb);
	float *ac = SMB(float, L.ac), *kd = SMB(float, L.kd), *da = SMB(float, L.da), *qi = SMB(float, L.qi);
	float *lm = SMB(float, L.lm), *Z = SMB(float, L.Z);
	/* Z: the scores' block sums, then the reads' weights and row dots */
	float *rowp = Z, *colp = Z + 4 * C, *lvp = Z + 8 * C, *dlv = Z + 12 * C;
	float *pt = Z, *wr = Z + 2 * C, *wn = Z + 3 * C;
	int64_t n = blockIdx.x, bh = blockIdx.y, b = bh / g.H, h = bh % g.H, t0 = n * g.C;
	int64_t grp = h / (g.H / g.G);
	int len = g.T - t0 < g.C ? (int)(g.T - t0) : g.C;
	int lane = threadIdx.x % 32, wp = threadIdx.x / 32, rb = wp % 4, hf = wp / 4;
	int gq = lane / 4, tq = lane % 4, r0 = 16 * rb, nc = C / 16, nk = Dk / 16, nv = Dv / 16;
	bool act = r0 < C;
	tc_rows(Qb, L.lk, q + grp * g.Dk, b * g.T + t0, g.G * g.Dk, Dk, C, len);
	tc_rows(Kb, L.lk, k + grp * g.Dk, b * g.T + t0, g.G * g.Dk, Dk, C, len);
	tc_rows(Vb, L.lv, v + h * g.Dv, b * g.T + t0, g.H * g.Dv, Dv, C, len);
	tc_rows(Ob, L.lv, dout + h * g.Dv, b * g.T + t0, g.H * g.Dv, Dv, C, len);
	cp_commit();
	/* PRE: F[n] (the plain form reads its own chunk's state) and dF[n],
	 * high and low halves, at Hb + j Dk ld, j = 0..3 */
	const bf16 *pre[4] = {NULL, NULL, NULL, NULL};
	if (PRE) {
		int64_t at = (bh * g.tot + n) * g.M;
		if (F)
			pre[0] = (const bf16 *)F + at, pre[1] = pre[0] + lo_off;
		if (dF)
			pre[2] = (const bf16 *)dF + at, pre[3] = pre[2] + lo_off;
		for (int j = 0; j < 4; j++)
			if (pre[j])
				tc_rows(Hb + j * Dk * L.lv, L.lv, pre[j], 0, Dv, Dv, Dk, Dk);
	}
	cp_commit();
	for (int i = threadIdx.x; i < C; i += NT)
		ac[i] = i < len ? acs[bh * g.T + t0 + i] : 0.0f;
	tc_lam(lm, g, lam, b, h, t0, len);
	cp_wait<1>();
	__syncthreads();

	/* ---- scores: S = q kᵀ and dS' = dO vᵀ of the key blocks hf, hf + 2;
	 * wl: the sums by lam level for dlam, only when it is wanted */
	bool wl = dlam.p != NULL;
	if (act)
		for (int jg = hf; jg <= rb; jg += 2) {
			float sa[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}}, sd[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
			for (int kk = 0; kk < Dk; kk += 16) {
				uint32_t a[4], bb[4];
				frag_a(a, Qb, L.lk, r0, kk);
				frag_b_nk(bb, Kb, L.lk, 16 * jg, kk);
				mma16816(sa[0], a, bb[0], bb[1]);
				mma16816(sa[1], a, bb[2], bb[3]);
			}
			for (int ky = 0; ky < Dv; ky += 16) {
				uint32_t a[4], bb[4];
				frag_a(a, Ob, L.lv, r0, ky);
				frag_b_nk(bb, Vb, L.lv, 16 * jg, ky);
				mma16816(sd[0], a, bb[0], bb[1]);
				mma16816(sd[1], a, bb[2], bb[3]);
			}
			/* row and column sums of S * dS, e p ds by row (off the
			 * diagonal: one level) or by row and level (on it) */
			float rs[2] = {0, 0}, cs[2][2] = {{0, 0}, {0, 0}}, ms[2] = {0, 0};
			float dg[2][5] = {{0, 0, 0, 0, 0}, {0, 0, 0, 0, 0}};
#pragma unroll
			for (int nn = 0; nn < 2; nn++)
#pragma unroll
				for (int hr = 0; hr < 2; hr++) {
					int i = r0 + gq + 8 * hr, j = 16 * jg + 8 * nn + 2 * tq;
					float sv[2] = {0, 0}, gv[2] = {0, 0};
#pragma unroll
					for (int e = 0; e < 2; e++) {
						int jj = j + e;
						if (jj <= i && i < len) {
							float p = sa[nn][2 * hr + e], ds = sd[nn][2 * hr + e];
							float ew = g.scale * __expf(ac[i] - ac[jj]), w = ew;
							int l = fen_level(t0 + i, t0 + jj);
							if (lam)
								w *= lm[i * 8 + l];
							sv[e] = w * p;
							gv[e] = w * ds;
							float sds = sv[e] * ds, mv = ew * p * ds;
							rs[hr] += sds;
							cs[nn][e] += sds;
							if (!wl)
								continue;
							if (jg < rb)
								ms[hr] += mv;
							else
#pragma unroll
								for (int u = 0; u < 5; u++)
									if (u == l)
										dg[hr][u] += mv;
						}
					}
					*(uint32_t *)(Sb + i * L.lc + j) = pack2f(sv[0], sv[1]);
					*(uint32_t *)(Gb + i * L.lc + j) = pack2f(gv[0], gv[1]);
				}
#pragma unroll
			for (int hr = 0; hr < 2; hr++) {
				for (int o = 1; o <= 2; o <<= 1) {
					rs[hr] += __shfl_xor_sync(0xffffffffu, rs[hr], o);
					if (!wl)
						continue;
					ms[hr] += __shfl_xor_sync(0xffffffffu, ms[hr], o);
#pragma unroll
					for (int u = 0; u < 5; u++)
						dg[hr][u] += __shfl_xor_sync(0xffffffffu, dg[hr][u], o);
				}
#pragma unroll
				for (int e = 0; e < 2; e++)
					for (int o = 4; o <= 16; o <<= 1)
						cs[hr][e] += __shfl_xor_sync(0xffffffffu, cs[hr][e], o);
			}
#pragma unroll
			for (int hr = 0; hr < 2; hr++) {
				int i = r0 + gq + 8 * hr;
				if (tq == 0) {
					rowp[jg * C + i] = rs[hr];
					if (wl && jg < rb)
						lvp[jg * C + i] = ms[hr];
					else if (wl)
#pragma unroll
						for (int u = 0; u < 5; u++)
							dlv[i * 8 + u] = dg[hr][u];
				}
				if (gq == 0)
#pragma unroll
					for (int e = 0; e < 2; e++)
						colp[rb * C + 16 * jg + 8 * hr + 2 * tq + e] = cs[hr][e];
			}
		}
	__syncthreads();
	/* dL/dA's intra-chunk part in fp32 (q.dq - k.dk from the bf16-rounded
	 * products would cancel their rounding into it), and dlam's levels
	 * 5, 6, over the blocks in order */
	for (int i = threadIdx.x; i < C; i += NT) {
		int ib = i / 16;
		float r = 0.0f, l5 = 0.0f, l6 = 0.0f;
		for (int jg = 0; jg <= ib; jg++)
			r += rowp[jg * C + i];
		for (int ig = ib; ig < nc; ig++)
			r -= colp[ig * C + i];
		da[i] = r;
		qi[i] = 0.0f;
		kd[i] = 0.0f;
		if (!wl)
			continue;
		for (int jg = 0; jg < ib; jg++) {
			if ((ib ^ jg) == 1)
				l5 += lvp[jg * C + i];
			else
				l6 += lvp[jg * C + i];
		}
		dlv[i * 8 + 5] = l5;
		dlv[i * 8 + 6] = l6;
	}
	if (dlam.p) {
		/* lam's intra-chunk levels: 0..c with several chunks (the levels
		 * above are the reads', added below), 0..6 within a single chunk */
		int maxl = g.N > 1 ? g.cbits + 1 : 7;
		maxl = maxl < g.NL ? maxl : (int)g.NL;
		__syncthreads();
		for (int idx = threadIdx.x; idx < len * maxl; idx += NT) {
			int i = idx / maxl, l = idx % maxl;
			gadd(dlam, ((b * g.T + t0 + i) * g.H + h) * g.NL + l, dlv[i * 8 + l]);
		}
	}
	const double *Eb = E + bh * g.N;
	float acc[4][2][4], xa[4][2][4];

	/* ---- dq: dS k, then per read (wr dO Hᵀ) */
	zero_acc(acc);
	if (act)
		for (int jg = 0; jg <= rb; jg++) {
			uint32_t a[4];
			frag_a(a, Gb, L.lc, r0, 16 * jg);
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int gi = hf + 2 * u;
				if (gi >= nk)
					break;
				uint32_t bb[4];
				frag_b_kn(bb, Kb, L.lk, 16 * gi, 16 * jg);
				mma16816(acc[u][0], a, bb[0], bb[1]);
				mma16816(acc[u][1], a, bb[2], bb[3]);
			}
		}
	int nr = F ? nreads(g, n) : 0;
	for (int rr = 0; rr < nr; rr++) {
		int64_t sidx = 0;
		float dlog = 0.0f;
		int lv = -1;
		read_state(g, Eb, n, rr, &sidx, &dlog, &lv);
		/* its barriers also end the last readers of Z */
		if (PRE) {
			cp_wait<0>();
			__syncthreads();
			zero_acc(xa);
			if (act) {
				mma_xht(xa, Ob, L.lv, Hb, L.lv, r0, hf, 0, nk, Dv);
				mma_xht(xa, Ob, L.lv, Hb + Dk * L.lv, L.lv, r0, hf, 0, nk, Dv);
			}
		} else {
			xa_state(xa, Ob, L.lv, Hb, L.lv, F + (bh * g.tot + sidx) * g.M, lo_off, Dk, Dv,
				 r0, hf, act);
		}
		tc_read_weights(wr, wn, ac, g, lam, b, h, t0, len, dlog, lv);
		__syncthreads();
		if (act) {
			float w0 = wr[r0 + gq], w1 = wr[r0 + gq + 8];
#pragma unroll
			for (int u = 0; u < 4; u++)
#pragma unroll
				for (int e = 0; e < 8; e++)
					acc[u][e / 4][e % 4] += (e % 4 < 2 ? w0 : w1) * xa[u][e / 4][e % 4];
			row_dots(pt, Qb, L.lk, xa, r0, hf, nk, C);
		}
		__syncthreads();
		for (int i = threadIdx.x; i < C; i += NT) {
			float d = pt[i] + pt[C + i];
			qi[i] += wr[i] * d;
			if (dlam.p && lv >= 0 && lv < g.NL && i < len)
				gadd(dlam, ((b * g.T + t0 + i) * g.H + h) * g.NL + lv, wn[i] * d);
		}
	}
	if (act)
		put_grad(dqh, dq, g, b, h, t0, acc, r0, hf, len);

	/* ---- dk: dSᵀ q, then (ww v dUᵀ) with the state gradient after this
	 * chunk */
	const FS *dU = dF ? dF + (bh * g.tot + n) * g.M : NULL;
	__syncthreads(); /* Z is read */
	for (int i = threadIdx.x; i < C; i += NT)
		wr[i] = i < len ? expf(ac[len - 1] - ac[i]) : 0.0f;
	zero_acc(acc);
	if (act)
		for (int ig = rb; ig < nc; ig++) {
			uint32_t a[4];
			frag_a_t(a, Gb, L.lc, r0, 16 * ig);
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int gi = hf + 2 * u;
				if (gi >= nk)
					break;
				uint32_t bb[4];
				frag_b_kn(bb, Qb, L.lk, 16 * gi, 16 * ig);
				mma16816(acc[u][0], a, bb[0], bb[1]);
				mma16816(acc[u][1], a, bb[2], bb[3]);
			}
		}
	if (dU) {
		if (PRE) {
			cp_wait<0>();
			__syncthreads(); /* wr is written */
			zero_acc(xa);
			if (act) {
				mma_xht(xa, Vb, L.lv, Hb + 2 * Dk * L.lv, L.lv, r0, hf, 0, nk, Dv);
				mma_xht(xa, Vb, L.lv, Hb + 3 * Dk * L.lv, L.lv, r0, hf, 0, nk, Dv);
			}
		} else {
			xa_state(xa, Vb, L.lv, Hb, L.lv, dU, lo_off, Dk, Dv, r0, hf, act);
		}
		if (act) {
			float w0 = wr[r0 + gq], w1 = wr[r0 + gq + 8];
#pragma unroll
			for (int u = 0; u < 4; u++)
#pragma unroll
				for (int e = 0; e < 8; e++)
					acc[u][e / 4][e % 4] += (e % 4 < 2 ? w0 : w1) * xa[u][e / 4][e % 4];
			row_dots(pt, Kb, L.lk, xa, r0, hf, nk, C);
		}
		__syncthreads();
		for (int j = threadIdx.x; j < C; j += NT)
			kd[j] = wr[j] * (pt[j] + pt[C + j]);
	}
	if (act)
		put_grad(dkh, dk, g, b, h, t0, acc, r0, hf, len);

	/* ---- dv: Sᵀ dO, then (ww k) dU with dU's high half */
	zero_acc(acc);
	if (act)
		for (int ig = rb; ig < nc; ig++) {
			uint32_t a[4];
			frag_a_t(a, Sb, L.lc, r0, 16 * ig);
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int gi = hf + 2 * u;
				if (gi >= nv)
					break;
				uint32_t bb[4];
				frag_b_kn(bb, Ob, L.lv, 16 * gi, 16 * ig);
				mma16816(acc[u][0], a, bb[0], bb[1]);
				mma16816(acc[u][1], a, bb[2], bb[3]);
			}
		}
	if (dU && PRE && act)
		mma_xh(acc, Kb, L.lk, Hb + 2 * Dk * L.lv, L.lv, r0, hf, nv, 0, Dk, wr[r0 + gq],
		       wr[r0 + gq + 8]);
	if (dU && !PRE)
		for (int x0 = 0; x0 < Dk; x0 += HX) {
			int rows = Dk - x0 < HX ? Dk - x0 : HX;
			__syncthreads(); /* Hb is read; wr is written */
			if constexpr (std::is_same<FS, bf16>::value)
				tc_state(Hb, L.lv, dU + (int64_t)x0 * Dv, rows, Dv, 0, lo_off);
			else
				tc_state(Hb, L.lv, dU + (int64_t)x0 * Dv, rows, Dv);
			__syncthreads();
			if (act)
				mma_xh(acc, Kb, L.lk, Hb, L.lv, r0, hf, nv, x0, x0 + rows, wr[r0 + gq],
				       wr[r0 + gq + 8]);
		}
	if (act && dv.p) {
		if (dv8 && dv.f32)
			add_acc_t((float *)dv.p + h * g.Dv, b * g.T + t0, g.H * g.Dv, acc, r0, hf, nv, len);
		else if (dv8)
			add_acc_t((bf16 *)dv.p + h * g.Dv, b * g.T + t0, g.H * g.Dv, acc, r0, hf, nv, len);
		else
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int gi = hf + 2 * u;
				if (gi >= nv)
					break;
#pragma unroll
				for (int e = 0; e < 8; e++) {
					int j = r0 + gq + (e % 4 >= 2 ? 8 : 0), y = 16 * gi + 8 * (e / 4) + 2 * tq + e % 2;
					if (j < len)
						gadd(dv, ((b * g.T + t0 + j) * g.H + h) * g.Dv + y, acc[u][e / 4][e % 4]);
				}
			}
	}
	if (dA) {
		__syncthreads(); /* kd, qi and da of every row */
		for (int i = threadIdx.x; i < len; i += NT)
			dA[bh * g.T + t0 + i] = da[i] + qi[i] - kd[i];
		if (threadIdx.x == 0) {
			double sum = 0;
			for (int i = 0; i < len; i++)
				sum += (double)(da[i] + qi[i] - kd[i]);
			dAsum[bh * g.N + n] = sum;
		}
	}
}

/* The states of the plain form (no lam) on the tensor cores, one pass over
 * the chunks that keeps the running state in registers (instead of the
 * per-chunk sums of tc_acc_kernel and a separate scan). A block owns a
 * head bh and the state columns y0 .. y0 + BV - 1; warp w its rows
 * 16w .. 16w + 15 (Dk / 16 warps). Chunk after chunk (the last first
 * with REV) it stores St[n] = the running state, then runs
 * St = exp(the chunk's log decay) St + (w X)ᵀ Y over the chunk's tokens:
 * - forward: X = k, Y = v, w_t = exp(acs_last - acs_t): St[n] is the state
 *   before chunk n (F);
 * - REV: X = q, Y = dout, w_t = scale exp(acs_t): St[n] is the gradient of
 *   the state after chunk n (dF), the query sides of the later chunks.
 * States are stored in bf16. With LO (the backward's states, which feed
 * the decay's gradient) the weighted rows go in as bf16 high and low
 * halves, and each state is stored as its rounding and, lo_off = B H tot M
 * further, what the rounding left out: together within about 2^-16 of
 * fp32. Without LO (the forward's) one rounding each. The chunks' tiles
 * come in by cp.async, SCS - 1 chunks ahead; the states leave through a
 * tile of the warp's own in shared memory, in 16-byte stores of whole rows.
 * Few long heads split the walk into gridDim.z segments of seglen chunks,
 * side by side, in two launches: the first (St NULL, first_pass) runs n1
 * parts of the chunks before the last segment, f parts a segment, each
 * from a zero state, and stores only its end, U[part], and its summed log
 * decay, Ud[part]; the second starts segment s from U[0 .. s f - 1] folded
 * in order and stores the states. SCS stages: two where that lets more
 * blocks share an SM. Every sum in a fixed order. */

static __host__ __device__ size_t scan_stage_bytes(int C, int Dk, int BV)
{
	return ((size_t)C * (Dk + 8) * 2 + (size_t)C * (BV + 8) * 2 + (size_t)C * 4 + 127) / 128 * 128;
}

/* the stages and the warps' store tiles (16 rows of BV + 8) */
static __host__ __device__ size_t scan_bytes(int C, int Dk, int BV, int SS)
{
	return SS * scan_stage_bytes(C, Dk, BV) + (size_t)(Dk / 16) * 16 * (BV + 8) * 2;
}

template <bool REV, bool LO, int BV, int SCS>
__global__ void __launch_bounds__(256, LO ? 2 : 3) tc_scan_kernel(bf16 *St /*(BH,tot,M) (x2 with LO) or NULL*/,
						      float *U /*(BH,nseg,M)*/, float *Ud /*(BH,nseg)*/,
						      const bf16 *X, const bf16 *Y, const float *acs,
						      int seglen, int f, int n1, geo g)
{
	extern __shared__ __align__(128) unsigned char tcsm[];
	int C = g.C, Dk = (int)g.Dk, Dv = (int)g.Dv, lx = Dk + 8, ly = BV + 8;
	size_t sb = scan_stage_bytes(C, Dk, BV);
	int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, grp = h / (g.H / g.G);
	int y0 = blockIdx.x * BV, nt = blockDim.x, nseg = gridDim.z, sg = blockIdx.z;
	int it0 = sg * seglen, it1 = it0 + seglen < g.N ? it0 + seglen : g.N;
	int lane = threadIdx.x % 32, wp = threadIdx.x / 32, gq = lane / 4, tq = lane % 4;
	const bf16 *Xh = X + grp * g.Dk, *Yh = Y + h * g.Dv + y0;
	int64_t xs = g.G * g.Dk, ys = g.H * g.Dv;
	/* the element (16 wp + gq + 8 hr, y0 + 8 j + 2 tq) of a state */
	int64_t eo = (int64_t)(16 * wp + gq) * Dv + y0 + 2 * tq;
	bf16 *stg = (bf16 *)(tcsm + SCS * sb) + wp * 16 * ly; /* the warp's store tile */
	int xp = nt / (Dk / 8), xr = threadIdx.x / (Dk / 8), xc = threadIdx.x % (Dk / 8) * 8;
	if (xr >= xp)
		xr = C; /* no copies for the threads past whole rows */
	/* chunk it of the walk into stage (it - it0) % SCS (an empty group
	 * past the segment) */
	auto fetch = [&](int it) {
		if (it < it1) {
			int64_t n = REV ? g.N - 1 - it : it, t0 = n * C;
			int len = g.T - t0 < C ? (int)(g.T - t0) : C;
			unsigned char *base = tcsm + (size_t)((it - it0) % SCS) * sb;
			bf16 *Xs = (bf16 *)base, *Ys = Xs + C * lx;
			float *as = (float *)(Ys + C * ly);
			int v8 = BV / 8;
			/* X: a thread keeps one column, the rows nt / (Dk / 8) apart */
			const bf16 *first = Xh + (b * g.T + t0) * xs + xc;
			for (int i = xr; i < C; i += xp)
				cp_async16(smem_u32(Xs + i * lx + xc), i < len ? first + i * xs : first, i < len);
			for (int idx = threadIdx.x; idx < C * v8; idx += nt) {
				int i = idx / v8, y = idx % v8 * 8;
				cp_async16(smem_u32(Ys + i * ly + y),
					   Yh + (b * g.T + t0 + (i < len ? i : 0)) * ys + y, i < len);
			}
			for (int i = threadIdx.x; i < C; i += nt)
				cp_async4(smem_u32(as + i), acs + bh * g.T + t0 + (i < len ? i : 0), i < len);
		}
		cp_commit();
	};
#pragma unroll
	for (int s = 0; s < SCS - 1; s++)
		fetch(it0 + s);
	float acc[BV / 8][4];
#pragma unroll
	for (int j = 0; j < BV / 8; j++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			acc[j][e] = 0.0f;
	if (St)
		for (int s = 0; s < sg * f; s++) {
			const float *u = U + (bh * n1 + s) * g.M + eo;
			float d = expf(Ud[bh * n1 + s]);
#pragma unroll
			for (int j = 0; j < BV / 8; j++) {
				float2 u0 = ld2(u + 8 * j), u1 = ld2(u + 8 * Dv + 8 * j);
				acc[j][0] = d * acc[j][0] + u0.x;
				acc[j][1] = d * acc[j][1] + u0.y;
				acc[j][2] = d * acc[j][2] + u1.x;
				acc[j][3] = d * acc[j][3] + u1.y;
			}
		}
	float dsum = 0.0f;
	for (int it = it0; it < it1; it++) {
		int64_t n = REV ? g.N - 1 - it : it, t0 = n * C;
		int len = g.T - t0 < C ? (int)(g.T - t0) : C;
		if (St) {
			/* the running state into St[n]: the warp's rows through its
			 * tile, high half then (LO) low half */
			bf16 *o = St + (bh * g.tot + n) * g.M + (int64_t)(16 * wp) * Dv + y0;
			int64_t lo_off = g.B * g.H * g.tot * g.M;
#pragma unroll
			for (int half = 0; half < (LO ? 2 : 1); half++) {
#pragma unroll
				for (int j = 0; j < BV / 8; j++)
#pragma unroll
					for (int hr = 0; hr < 2; hr++) {
						float x0 = acc[j][2 * hr], x1 = acc[j][2 * hr + 1];
						__nv_bfloat162 r = __floats2bfloat162_rn(x0, x1);
						if (half)
							r = __floats2bfloat162_rn(x0 - __low2float(r),
										  x1 - __high2float(r));
						*(__nv_bfloat162 *)(stg + (gq + 8 * hr) * ly + 8 * j + 2 * tq) = r;
					}
				__syncwarp();
#pragma unroll
				for (int c = lane; c < 16 * (BV / 8); c += 32) {
					int r = c / (BV / 8), y = c % (BV / 8) * 8;
					*(uint4 *)(o + half * lo_off + (int64_t)r * Dv + y) =
						*(const uint4 *)(stg + r * ly + y);
				}
				__syncwarp();
			}
		}
		cp_wait<SCS - 2>();
		__syncthreads(); /* chunk it landed; chunk it - 1's stage is free */
		fetch(it + SCS - 1);
		const unsigned char *base = tcsm + (size_t)((it - it0) % SCS) * sb;
		const bf16 *Xs = (const bf16 *)base, *Ys = Xs + C * lx;
		const float *as = (const float *)(Ys + C * ly);
		float last = as[len - 1], dec = expf(last);
		dsum += last;
#pragma unroll
		for (int j = 0; j < BV / 8; j++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				acc[j][e] *= dec;
		/* the tokens' weights, lane l: tokens l and l + 32, shuffled to
		 * the lanes that scale them */
		float wl[2];
#pragma unroll
		for (int hh = 0; hh < 2; hh++) {
			int t = lane + 32 * hh;
			wl[hh] = t < len ? (REV ? g.scale * expf(as[t]) : expf(last - as[t])) : 0.0f;
		}
		for (int kt = 0; kt < C; kt += 16) {
			uint32_t a[4];
			frag_a_t(a, Xs, lx, 16 * wp, kt);
			/* token columns kt + 2tq (+1) in a[0..1], + 8 in a[2..3] */
			float w[4];
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int t = kt + 2 * tq + (e / 2) * 8 + e % 2;
				w[e] = __shfl_sync(0xffffffffu, kt < 32 ? wl[0] : wl[1], t % 32);
			}
			uint32_t ah[4], al[4];
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float lo = __uint_as_float(a[e] << 16), hi = __uint_as_float(a[e] & 0xffff0000u);
				float w0 = w[(e / 2) * 2], w1 = w[(e / 2) * 2 + 1];
				float x0 = w0 * lo, x1 = w1 * hi;
				__nv_bfloat162 r = __floats2bfloat162_rn(x0, x1);
				ah[e] = *(uint32_t *)&r;
				if (LO)
					al[e] = pack2f(x0 - __low2float(r), x1 - __high2float(r));
			}
#pragma unroll
			for (int j = 0; j < BV / 16; j++) {
				uint32_t bb[4];
				frag_b_kn(bb, Ys, ly, 16 * j, kt);
				mma16816(acc[2 * j], ah, bb[0], bb[1]);
				mma16816(acc[2 * j + 1], ah, bb[2], bb[3]);
				if (LO) {
					mma16816(acc[2 * j], al, bb[0], bb[1]);
					mma16816(acc[2 * j + 1], al, bb[2], bb[3]);
				}
			}
		}
	}
	cp_wait<0>();
	if (!St) {
		float *u = U + (bh * nseg + sg) * g.M + eo;
#pragma unroll
		for (int j = 0; j < BV / 8; j++) {
			st2(u + 8 * j, acc[j][0], acc[j][1]);
			st2(u + 8 * Dv + 8 * j, acc[j][2], acc[j][3]);
		}
		if (blockIdx.x == 0 && threadIdx.x == 0)
			Ud[bh * nseg + sg] = dsum;
	}
}

/* The plain form's forward in one pass (BF16 on the tensor cores), for
 * Dk = 64 and chunks of 64: a block owns a head bh and the output and state
 * columns y0 .. y0 + BV - 1, walks the chunks with the running state St
 * (64, BV) in registers and, per chunk (tiles by cp.async, FST - 1 chunks
 * ahead):
 * 1. the masked, weighted scores S = scale exp(acs_i - acs_j) q_i.k_j
 *    (j <= i) into shared memory as bf16, and St as bf16 (Hs);
 * 2. out = S v + scale exp(acs_i) (q_i St), straight to global memory;
 * 3. St = exp(the chunk's log decay) St + (exp(acs_last - acs_t) k_t)ᵀ v_t.
 * The products of tc_scan_kernel (without LO) then tc_out_kernel, without
 * the states in global memory, but q St weighted after the product (fp32,
 * not a bf16 copy of the weighted rows). Warp w works on the
 * row block rb = w % 4 (of the scores and the output: key blocks and
 * column groups hf = w / 4, hf + 2, ...; of the state: column groups hf,
 * hf + 2, ...), so that its products share their A fragments and run as
 * independent chains. Few long heads split the walk into gridDim.z
 * segments of seglen chunks side by side: segment s starts from the ends
 * U, Ud of the first s f parts of seglen / f chunks (tc_scan_kernel's
 * first launch, n1 parts a head) folded in order. */
#define FST 3  /* pipeline stages of tc_fused_kernel */
#define FC 64  /* its chunk and Dk */

static __host__ __device__ size_t fused_stage_bytes(int BV)
{
	return ((size_t)FC * (FC + 8) * 4 + (size_t)FC * (BV + 8) * 2 + (size_t)FC * 4 + 127) / 128 * 128;
}

static __host__ __device__ size_t fused_bytes(int BV)
{
	return FST * fused_stage_bytes(BV) + (size_t)FC * (FC + 8) * 2 + (size_t)FC * (BV + 8) * 2;
}

template <int BV>
__global__ void __launch_bounds__(NT, 2)
	tc_fused_kernel(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, const float *acs,
			const float *U /*(BH,n1,M)*/, const float *Ud /*(BH,n1)*/, int seglen, int f, int n1,
			geo g)
{
	extern __shared__ __align__(128) unsigned char tcsm[];
	constexpr int NG = BV / 16, NU = (NG + 1) / 2, lx = FC + 8, ly = BV + 8, lc = FC + 8;
	size_t sb = fused_stage_bytes(BV);
	bf16 *Ss = (bf16 *)(tcsm + FST * sb), *Hs = Ss + FC * lc;
	int64_t bh = blockIdx.y, b = bh / g.H, h = bh % g.H, grp = h / (g.H / g.G);
	int y0 = blockIdx.x * BV, sg = blockIdx.z;
	int it0 = sg * seglen, it1 = it0 + seglen < g.N ? it0 + seglen : g.N;
	int lane = threadIdx.x % 32, wp = threadIdx.x / 32, gq = lane / 4, tq = lane % 4;
	int rb = wp % 4, hf = wp / 4, r0 = 16 * rb;
	const bf16 *qh = q + grp * FC, *kh = k + grp * FC, *vh = v + h * g.Dv + y0;
	int64_t xs = g.G * FC, ys = g.H * g.Dv;
	auto fetch = [&](int it) {
		if (it < it1) {
			int64_t t0 = (int64_t)it * FC;
			int len = g.T - t0 < FC ? (int)(g.T - t0) : FC;
			unsigned char *base = tcsm + (size_t)((it - it0) % FST) * sb;
			bf16 *Qs = (bf16 *)base, *Ks = Qs + FC * lx, *Vs = Ks + FC * lx;
			float *as = (float *)(Vs + FC * ly);
#pragma unroll
			for (int idx = threadIdx.x; idx < FC * 8; idx += NT) {
				int i = idx / 8, x = idx % 8 * 8;
				int64_t r = (b * g.T + t0 + (i < len ? i : 0)) * xs + x;
				cp_async16(smem_u32(Qs + i * lx + x), qh + r, i < len);
				cp_async16(smem_u32(Ks + i * lx + x), kh + r, i < len);
			}
#pragma unroll
			for (int idx = threadIdx.x; idx < FC * (BV / 8); idx += NT) {
				int i = idx / (BV / 8), y = idx % (BV / 8) * 8;
				cp_async16(smem_u32(Vs + i * ly + y),
					   vh + (b * g.T + t0 + (i < len ? i : 0)) * ys + y, i < len);
			}
			if (threadIdx.x < FC) {
				int i = threadIdx.x;
				cp_async4(smem_u32(as + i), acs + bh * g.T + t0 + (i < len ? i : 0), i < len);
			}
		}
		cp_commit();
	};
#pragma unroll
	for (int s = 0; s < FST - 1; s++)
		fetch(it0 + s);
	float st[NU][2][4];
#pragma unroll
	for (int u = 0; u < NU; u++)
#pragma unroll
		for (int e = 0; e < 8; e++)
			st[u][e / 4][e % 4] = 0.0f;
	/* the state before the segment (the first pass's parts before it
	 * folded in order): rows 16 rb.., column groups hf + 2u */
#pragma unroll 1
	for (int s = 0; s < sg * f; s++) {
		const float *us = U + (bh * n1 + s) * g.M + (int64_t)(r0 + gq) * g.Dv + y0 + 2 * tq;
		float d = expf(Ud[bh * n1 + s]);
#pragma unroll
		for (int u = 0; u < NU; u++) {
			int gi = hf + 2 * u;
			if (gi >= NG)
				break;
#pragma unroll
			for (int nn = 0; nn < 2; nn++) {
				float2 a0 = ld2(us + 16 * gi + 8 * nn), a1 = ld2(us + 8 * g.Dv + 16 * gi + 8 * nn);
				st[u][nn][0] = d * st[u][nn][0] + a0.x;
				st[u][nn][1] = d * st[u][nn][1] + a0.y;
				st[u][nn][2] = d * st[u][nn][2] + a1.x;
				st[u][nn][3] = d * st[u][nn][3] + a1.y;
			}
		}
	}
	for (int it = it0; it < it1; it++) {
		int64_t t0 = (int64_t)it * FC;
		int len = g.T - t0 < FC ? (int)(g.T - t0) : FC;
		cp_wait<FST - 2>();
		__syncthreads(); /* chunk it landed; chunk it - 1's stage, Ss and Hs are free */
		fetch(it + FST - 1);
		const unsigned char *base = tcsm + (size_t)((it - it0) % FST) * sb;
		const bf16 *Qs = (const bf16 *)base, *Ks = Qs + FC * lx, *Vs = Ks + FC * lx;
		const float *as = (const float *)(Vs + FC * ly);

		/* 1. the scores of the key blocks hf, hf + 2 up to the diagonal */
		{
			float sc[2][2][4];
#pragma unroll
			for (int u = 0; u < 2; u++)
#pragma unroll
				for (int e = 0; e < 8; e++)
					sc[u][e / 4][e % 4] = 0.0f;
#pragma unroll
			for (int kk = 0; kk < FC; kk += 16) {
				uint32_t a[4];
				frag_a(a, Qs, lx, r0, kk);
#pragma unroll
				for (int u = 0; u < 2; u++) {
					int jg = hf + 2 * u;
					if (jg > rb)
						break;
					uint32_t bb[4];
					frag_b_nk(bb, Ks, lx, 16 * jg, kk);
					mma16816(sc[u][0], a, bb[0], bb[1]);
					mma16816(sc[u][1], a, bb[2], bb[3]);
				}
			}
#pragma unroll
			for (int u = 0; u < 2; u++) {
				int jg = hf + 2 * u;
				if (jg > rb)
					break;
#pragma unroll
				for (int nn = 0; nn < 2; nn++)
#pragma unroll
					for (int hr = 0; hr < 2; hr++) {
						int i = r0 + gq + 8 * hr, j = 16 * jg + 8 * nn + 2 * tq;
						float ai = as[i];
						float v0 = j <= i && i < len ? g.scale * __expf(ai - as[j]) * sc[u][nn][2 * hr] : 0.0f;
						float v1 = j + 1 <= i && i < len
								   ? g.scale * __expf(ai - as[j + 1]) * sc[u][nn][2 * hr + 1]
								   : 0.0f;
						*(uint32_t *)(Ss + i * lc + j) = pack2f(v0, v1);
					}
			}
		}
		/* St as bf16: rows 16 rb.., column groups hf + 2u */
#pragma unroll
		for (int u = 0; u < NU; u++) {
			int gi = hf + 2 * u;
			if (gi >= NG)
				break;
#pragma unroll
			for (int nn = 0; nn < 2; nn++) {
				int x = r0 + gq, y = 16 * gi + 8 * nn + 2 * tq;
				*(uint32_t *)(Hs + x * ly + y) = pack2f(st[u][nn][0], st[u][nn][1]);
				*(uint32_t *)(Hs + (x + 8) * ly + y) = pack2f(st[u][nn][2], st[u][nn][3]);
			}
		}
		__syncthreads();

		/* 2. the output rows 16 rb.., column groups hf + 2u: q St, its
		 * rows scaled by scale exp(acs), then S v */
		{
			float o[NU][2][4];
#pragma unroll
			for (int u = 0; u < NU; u++)
#pragma unroll
				for (int e = 0; e < 8; e++)
					o[u][e / 4][e % 4] = 0.0f;
			int i0 = r0 + gq, i1 = i0 + 8;
			float w0 = i0 < len ? g.scale * expf(as[i0]) : 0.0f;
			float w1 = i1 < len ? g.scale * expf(as[i1]) : 0.0f;
#pragma unroll
			for (int kk = 0; kk < FC; kk += 16) {
				uint32_t a[4];
				frag_a(a, Qs, lx, r0, kk);
#pragma unroll
				for (int u = 0; u < NU; u++) {
					int gi = hf + 2 * u;
					if (gi >= NG)
						break;
					uint32_t bb[4];
					frag_b_kn(bb, Hs, ly, 16 * gi, kk);
					mma16816(o[u][0], a, bb[0], bb[1]);
					mma16816(o[u][1], a, bb[2], bb[3]);
				}
			}
#pragma unroll
			for (int u = 0; u < NU; u++)
#pragma unroll
				for (int e = 0; e < 8; e++)
					o[u][e / 4][e % 4] *= e % 4 < 2 ? w0 : w1;
#pragma unroll
			for (int jg = 0; jg < 4; jg++) {
				if (jg > rb)
					break;
				uint32_t a[4];
				frag_a(a, Ss, lc, r0, 16 * jg);
#pragma unroll
				for (int u = 0; u < NU; u++) {
					int gi = hf + 2 * u;
					if (gi >= NG)
						break;
					uint32_t bb[4];
					frag_b_kn(bb, Vs, ly, 16 * gi, 16 * jg);
					mma16816(o[u][0], a, bb[0], bb[1]);
					mma16816(o[u][1], a, bb[2], bb[3]);
				}
			}
#pragma unroll
			for (int u = 0; u < NU; u++) {
				int gi = hf + 2 * u;
				if (gi >= NG)
					break;
#pragma unroll
				for (int nn = 0; nn < 2; nn++) {
					int64_t y = h * g.Dv + y0 + 16 * gi + 8 * nn + 2 * tq;
					if (i0 < len)
						*(uint32_t *)(out + (b * g.T + t0 + i0) * ys + y) = pack2f(o[u][nn][0], o[u][nn][1]);
					if (i1 < len)
						*(uint32_t *)(out + (b * g.T + t0 + i1) * ys + y) = pack2f(o[u][nn][2], o[u][nn][3]);
				}
			}
		}

		/* 3. the state after the chunk: rows 16 rb.., column groups hf + 2u */
		float last = as[len - 1], dec = expf(last);
#pragma unroll
		for (int u = 0; u < NU; u++)
#pragma unroll
			for (int e = 0; e < 8; e++)
				st[u][e / 4][e % 4] *= dec;
		float wl[2]; /* lane l: the weights of tokens l and l + 32 */
#pragma unroll
		for (int hh = 0; hh < 2; hh++) {
			int tt = lane + 32 * hh;
			wl[hh] = tt < len ? expf(last - as[tt]) : 0.0f;
		}
#pragma unroll
		for (int kt = 0; kt < FC; kt += 16) {
			uint32_t a[4];
			frag_a_t(a, Ks, lx, r0, kt);
			float w[4];
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int tt = kt + 2 * tq + (e / 2) * 8 + e % 2;
				w[e] = __shfl_sync(0xffffffffu, kt < 32 ? wl[0] : wl[1], tt % 32);
			}
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float lo = __uint_as_float(a[e] << 16), hi = __uint_as_float(a[e] & 0xffff0000u);
				a[e] = pack2f(w[(e / 2) * 2] * lo, w[(e / 2) * 2 + 1] * hi);
			}
#pragma unroll
			for (int u = 0; u < NU; u++) {
				int gi = hf + 2 * u;
				if (gi >= NG)
					break;
				uint32_t bb[4];
				frag_b_kn(bb, Vs, ly, 16 * gi, kt);
				mma16816(st[u][0], a, bb[0], bb[1]);
				mma16816(st[u][1], a, bb[2], bb[3]);
			}
		}
	}
	cp_wait<0>();
}

/* How tc_scan_kernel splits a shape: column blocks of bv (the widest of
 * 64, 32, 16 that divides Dv), and, where the heads' blocks leave SMs idle,
 * the walk into nseg segments of seglen chunks (at least 4), as many as
 * run at once (one wave: the blocks an SM holds, by its 228 KB of shared
 * memory and 64K registers); ss stages. */
struct scan_split {
	int bv, nseg, seglen, ss;
	int f, n1, len1; /* the first pass: n1 parts of len1 chunks, f a segment */
};

/* The first pass of a walk in nseg segments of seglen chunks: over the
 * chunks before the last segment (its end is never read), in parts of
 * seglen / f chunks; seglen becomes f times the parts' length. f is the
 * one of 1 .. 64 with the fewest steps: the waves of part blocks (base a
 * part, per_sm an SM) times their chunks, plus the reads of the parts' ends
 * before a segment, one after the other, about 0.85 of a chunk's step each
 * (H200, D 128 at 32K and 64K tokens a head). */
static void first_pass(scan_split *p, int N, int64_t base, int64_t per_sm, int sm)
{
	p->f = 1;
	p->n1 = 0;
	p->len1 = p->seglen;
	if (p->nseg < 2)
		return;
	int64_t slots = per_sm * sm, best = -1;
	int seglen = p->seglen, bestf = 1;
	for (int fx = 1; fx <= 64 && fx <= seglen; fx++) {
		int len1 = (seglen + fx - 1) / fx, f = (seglen + len1 - 1) / len1;
		int nseg = (N + f * len1 - 1) / (f * len1);
		int64_t n1 = (int64_t)(nseg - 1) * f, waves = (n1 * base + slots - 1) / slots;
		int64_t cost = 20 * waves * len1 + 17 * n1;
		if (best < 0 || cost < best)
			best = cost, bestf = fx;
	}
	p->len1 = (seglen + bestf - 1) / bestf;
	p->f = (seglen + p->len1 - 1) / p->len1;
	p->seglen = p->f * p->len1;
	p->nseg = (N + p->seglen - 1) / p->seglen;
	p->n1 = (p->nseg - 1) * p->f;
}

/* tc_scan_kernel's blocks an SM (its shared memory, and its registers:
 * at most 128 a thread with LO, 80 without) */
static int64_t scan_per_sm(const geo &g, const scan_split &p, bool lo)
{
	int64_t by_smem = 228 * 1024 / (scan_bytes(g.C, (int)g.Dk, p.bv, p.ss) + 1024);
	int64_t by_regs = 65536 / ((lo ? 128 : 80) * 2 * g.Dk);
	return by_smem < by_regs ? by_smem : by_regs;
}

static scan_split scan_split_of(const geo &g, int sm, bool lo)
{
	scan_split p;
	p.bv = g.Dv % 64 == 0 ? 64 : g.Dv % 32 == 0 ? 32 : 16;
	/* two stages where that lets more blocks share an SM */
	p.ss = 3;
	int64_t per3 = scan_per_sm(g, p, lo);
	p.ss = 2;
	if (scan_per_sm(g, p, lo) <= per3)
		p.ss = 3;
	int64_t per_sm = scan_per_sm(g, p, lo);
	int64_t base = g.B * g.H * (g.Dv / p.bv), want = per_sm * sm / base;
	int64_t most = g.N / 4 > 1 ? g.N / 4 : 1;
	want = want > 1 ? want : 1;
	p.nseg = (int)(want < most ? want : most);
	p.seglen = (g.N + p.nseg - 1) / p.nseg;
	p.nseg = (g.N + p.seglen - 1) / p.seglen;
	first_pass(&p, g.N, base, per_sm, sm);
	return p;
}

/* Bytes of the segments' ends and decays (none without segments). */
static size_t scan_scratch(const geo &g, int sm, bool lo)
{
	scan_split p = scan_split_of(g, sm, lo);
	return p.n1 > 0 ? (size_t)(g.B * g.H * p.n1) * (size_t)(g.M + 1) * 4 : 0;
}

/* ------------------------------------------------- launchers */

static int eff_chunk(int chunk, int64_t T, int loglinear)
{
	if (chunk <= 0 || chunk > CMAX)
		chunk = CMAX;
	if (!loglinear || chunk >= T)
		return chunk;
	int p = 1;
	while (2 * p <= chunk)
		p *= 2;
	return p;
}

static int fenwick_levels(int64_t n)
{
	int l = 1;
	while (n > 1 && (1ll << (l - 1)) < n)
		l++;
	return l;
}

static int make_geo(geo *g, const char *who, lmk_dtype dt, int64_t B, int64_t T, int64_t H,
		    int64_t G, int64_t Dk, int64_t Dv, int64_t NL, float scale, int chunk,
		    int loglinear)
{
	memset(g, 0, sizeof *g);
	if (dt != LMK_F32 && dt != LMK_BF16)
		return lmk_err(LMK_EUNSUP, "%s: no cuda kernel for %s", who, lmk_dtype_name(dt));
	if (Dk > DMAX || Dv > DMAX)
		return lmk_err(LMK_EUNSUP, "%s: head dims Dk %lld, Dv %lld: the cuda kernels take at "
			       "most %d", who, (long long)Dk, (long long)Dv, DMAX);
	if (B * H > 65535)
		return lmk_err(LMK_EUNSUP, "%s: B*H = %lld: the cuda kernels take at most 65535", who,
			       (long long)(B * H));
	g->B = B, g->T = T, g->H = H, g->G = G, g->Dk = Dk, g->Dv = Dv, g->NL = NL;
	g->M = Dk * Dv;
	g->scale = scale;
	int64_t C = eff_chunk(chunk, T, loglinear);
	if (C > T)
		C = T;
	g->C = (int)C;
	g->N = (int)((T + C - 1) / C);
	g->plain = !loglinear;
	while ((1ll << (g->cbits + 1)) <= C)
		g->cbits++;
	if (g->plain) {
		g->tot = g->N;
	} else {
		g->Lc = g->N > 1 ? fenwick_levels(g->N) - 1 : 0;
		if (g->Lc >= MAXLC)
			return lmk_err(LMK_EUNSUP, "%s: %lld tokens is too many", who, (long long)T);
		int64_t o = 0;
		for (int j = 0; j < g->Lc; j++) {
			g->off[j] = o;
			o += nblocks(*g, j);
		}
		g->tot = o > g->N ? o : g->N;
	}
	return 0;
}

/* One thread per element, no cap on the grid (the kernels above are not
 * grid-stride loops, so common.cuh's capped grid_for would leave elements
 * out on huge shapes). */
static unsigned blocks_for(int64_t n, int threads)
{
	int64_t b = (n + threads - 1) / threads;
	return (unsigned)(b < 1 ? 1 : b);
}

/* Bump allocation inside one scratch region, 256-byte aligned. */
static size_t al(size_t b) { return (b + 255) / 256 * 256; }

template <class T>
static int smem_set(void (*kernel)(T *, const T *, const T *, const T *, const T *,
				   const float *, const double *, const float *, geo),
		    size_t bytes)
{
	LMK_CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
	return 0;
}

/* Shared memory for a tensor-core kernel: its size, and the largest
 * carveout, so that two (bwd at D 128) or more blocks fit an SM. */
template <class K>
static int tc_smem(K kernel, size_t bytes)
{
	LMK_CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
	LMK_CK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
				    cudaSharedmemCarveoutMaxShared));
	return 0;
}

static int g_tensor_cores = 1;

extern "C" void lmk_cuda_ssd_tensor_cores(int on) { g_tensor_cores = on != 0; }

/* Whether the tensor-core kernels take this shape: BF16, the tensor cores
 * not switched off, dims and chunk multiples of 16, the rows (a, b, c, d)
 * they copy 16 bytes at a time aligned, and the backward's shared memory
 * within the device's limit. */
template <class T>
static int use_tc(const geo &g, const void *a, const void *b, const void *c, const void *d)
{
	if (!std::is_same<T, bf16>::value || !g_tensor_cores || g.Dk % 16 || g.Dv % 16 || g.C % 16 ||
	    !vec8_ok(8, a, b, c, d))
		return 0;
	int dev = 0, optin = 0;
	if (cudaGetDevice(&dev) != cudaSuccess ||
	    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
		cudaGetLastError();
		return 0;
	}
	return tc_layout(g.C, (int)g.Dk, (int)g.Dv, 1).total <= (size_t)optin;
}

/* acc_kernel or its tensor-core twin over nslots slots (per chunk when
 * slots is NULL). */
template <class T, bool QRY>
static int launch_acc(cudaStream_t st, const geo &g, int tc, float *out, const T *X, const T *Y,
		      const float *acs, const double *E, const T *lam, const int4 *slots,
		      int64_t nslots, int64_t ostride)
{
	dim3 grid((unsigned)nslots, (unsigned)(g.B * g.H));
	if constexpr (std::is_same<T, bf16>::value) {
		if (tc) {
			/* 16x16 output tiles per warp: two up to 64 x 64 */
			size_t sb = tc_layout(64, (int)g.Dk, (int)g.Dv, 2).total;
			auto kern = g.M <= 64 * 64 ? tc_acc_kernel<QRY, 2> : tc_acc_kernel<QRY, 8>;
			if (tc_smem(kern, sb) < 0)
				return lmk_errcode();
			kern<<<grid, NT, sb, st>>>(out, X, Y, acs, E, lam, slots, ostride, g);
			LMK_CK_LAUNCH();
			return 0;
		}
	}
	acc_kernel<T, QRY><<<grid, NT, 0, st>>>(out, X, Y, acs, E, lam, slots, ostride, g);
	LMK_CK_LAUNCH();
	return 0;
}

/* tc_scan_kernel into St (its two halves with LO) split as p says (U:
 * the first pass's ends, scan_scratch's bytes), or with St NULL only the
 * first pass. */
template <bool REV, bool LO>
static int run_scan(lmk_cuda_backend *bk, const geo &g, scan_split p, bf16 *St, float *U,
		    const bf16 *X, const bf16 *Y, const float *acs)
{
	auto kern = p.ss == 2 ? (p.bv == 64   ? tc_scan_kernel<REV, LO, 64, 2>
				 : p.bv == 32 ? tc_scan_kernel<REV, LO, 32, 2>
					      : tc_scan_kernel<REV, LO, 16, 2>)
			      : (p.bv == 64   ? tc_scan_kernel<REV, LO, 64, 3>
				 : p.bv == 32 ? tc_scan_kernel<REV, LO, 32, 3>
					      : tc_scan_kernel<REV, LO, 16, 3>);
	size_t sb = scan_bytes(g.C, (int)g.Dk, p.bv, p.ss);
	if (tc_smem(kern, sb) < 0)
		return lmk_errcode();
	float *Ud = p.n1 > 0 ? U + g.B * g.H * p.n1 * g.M : NULL;
	if (p.n1 > 0) {
		dim3 grid((unsigned)(g.Dv / p.bv), (unsigned)(g.B * g.H), (unsigned)p.n1);
		kern<<<grid, (unsigned)(2 * g.Dk), sb, bk->stream>>>(NULL, U, Ud, X, Y, acs, p.len1, 1,
								    p.n1, g);
		LMK_CK_LAUNCH();
	}
	if (St) {
		dim3 grid((unsigned)(g.Dv / p.bv), (unsigned)(g.B * g.H), (unsigned)p.nseg);
		kern<<<grid, (unsigned)(2 * g.Dk), sb, bk->stream>>>(St, U, Ud, X, Y, acs, p.seglen, p.f,
								    p.n1, g);
		LMK_CK_LAUNCH();
	}
	return 0;
}

template <bool REV, bool LO>
static int launch_scan(lmk_cuda_backend *bk, const geo &g, bf16 *St, float *U, const bf16 *X,
		       const bf16 *Y, const float *acs)
{
	return run_scan<REV, LO>(bk, g, scan_split_of(g, bk->sm_count, LO), St, U, X, Y, acs);
}

/* How tc_fused_kernel runs a shape (Dk and the chunk 64): its column block
 * bv, the widest of 64, 32, 16 that divides Dv (narrower blocks to fill the
 * SMs would each recompute the scores), and where the heads' blocks leave
 * SMs idle, the walk in nseg segments of seglen chunks (at least 4), as
 * many as run at once. The starts of segments 1 .. nseg - 1 come from
 * tc_scan_kernel's first launch (first_pass: n1 parts, f a segment). */
struct fused_split {
	int bv, nseg, seglen, f, n1;
	scan_split p1;
};

static int fused_plan(const geo &g, int sm, fused_split *f)
{
	f->bv = g.Dv % 64 == 0 ? 64 : g.Dv % 32 == 0 ? 32 : 16;
	f->nseg = 1;
	f->seglen = g.N;
	f->f = 1;
	f->n1 = 0;
	if (g.Dk != FC || g.C != FC)
		return 0;
	int per_sm = 0, bv = f->bv;
	size_t sb = fused_bytes(bv);
	auto kern = bv == 64 ? tc_fused_kernel<64> : bv == 32 ? tc_fused_kernel<32> : tc_fused_kernel<16>;
	if (tc_smem(kern, sb) < 0)
		return lmk_errcode();
	LMK_CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, NT, sb));
	int64_t base = g.B * g.H * (g.Dv / bv), want = (int64_t)(per_sm > 0 ? per_sm : 1) * sm / base;
	int64_t most = g.N / 4 > 1 ? g.N / 4 : 1;
	want = want > 1 ? want : 1;
	f->nseg = (int)(want < most ? want : most);
	f->seglen = (g.N + f->nseg - 1) / f->nseg;
	f->nseg = (g.N + f->seglen - 1) / f->seglen;
	f->p1 = scan_split_of(g, sm, false);
	f->p1.nseg = f->nseg;
	f->p1.seglen = f->seglen;
	first_pass(&f->p1, g.N, g.B * g.H * (g.Dv / f->p1.bv), scan_per_sm(g, f->p1, false), sm);
	f->nseg = f->p1.nseg;
	f->seglen = f->p1.seglen;
	f->f = f->p1.f;
	f->n1 = f->p1.n1;
	return 1;
}

/* Bytes of the first pass's ends and decays (none without segments). */
static size_t fused_scratch(const geo &g, const fused_split &f)
{
	return f.n1 > 0 ? (size_t)(g.B * g.H * f.n1) * (size_t)(g.M + 1) * 4 : 0;
}

/* The first pass (tc_scan_kernel's first launch), then tc_fused_kernel. */
static int launch_fused(lmk_cuda_backend *bk, const geo &g, const fused_split &f, float *U,
			bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, const float *acs)
{
	const float *Ud = f.n1 > 0 ? U + g.B * g.H * f.n1 * g.M : NULL;
	if (f.n1 > 0 && run_scan<false, false>(bk, g, f.p1, NULL, U, k, v, acs) < 0)
		return lmk_errcode();
	int bv = f.bv;
	size_t sb = fused_bytes(bv);
	auto kern = bv == 64 ? tc_fused_kernel<64> : bv == 32 ? tc_fused_kernel<32> : tc_fused_kernel<16>;
	if (tc_smem(kern, sb) < 0)
		return lmk_errcode();
	kern<<<dim3((unsigned)(g.Dv / bv), (unsigned)(g.B * g.H), (unsigned)f.nseg), NT, sb,
	       bk->stream>>>(out, q, k, v, acs, U, Ud, f.seglen, f.f, f.n1, g);
	LMK_CK_LAUNCH();
	return 0;
}

template <class T>
static int forward_t(lmk_cuda_backend *bk, const geo &g, T *out, const T *q, const T *k,
		     const T *v, const T *loga, const T *lam)
{
	int64_t BH = g.B * g.H;
	/* the plain form on the tensor cores (pb): in one pass (fused), or
	 * bf16 states by tc_scan_kernel, then tc_out_kernel */
	int tc = use_tc<T>(g, q, k, v, out), pb = tc && g.plain, fused = 0;
	fused_split fs = {};
	if (pb && (fused = fused_plan(g, bk->sm_count, &fs)) < 0)
		return lmk_errcode();
	size_t b_acs = al((size_t)(BH * g.T) * 4), b_E = al((size_t)(BH * g.N) * 8);
	size_t b_F = g.N > 1 && !fused ? al((size_t)(BH * g.tot * g.M) * (pb ? 2 : 4)) : 0;
	size_t b_U = fused ? al(fused_scratch(g, fs)) : b_F && pb ? al(scan_scratch(g, bk->sm_count, false)) : 0;
	char *p = (char *)lmk_cuda_scratch(bk, b_acs + b_E + b_F + b_U);
	if (!p)
		return lmk_errcode();
	float *acs = (float *)p;
	double *E = (double *)(p + b_acs);
	float *F = b_F ? (float *)(p + b_acs + b_E) : NULL;
	float *U = b_U ? (float *)(p + b_acs + b_E + b_F) : NULL;
	cudaStream_t st = bk->stream;
	prep_chunk<T><<<(unsigned)(g.B * g.N), 256, 0, st>>>(acs, E, loga, g);
	LMK_CK_LAUNCH();
	if (!pb) { /* the plain form on the tensor cores reads no E */
		prep_prefix<<<blocks_for(BH, 128), 128, 0, st>>>(E, g);
		LMK_CK_LAUNCH();
	}
	if constexpr (std::is_same<T, bf16>::value) {
		if (fused)
			return launch_fused(bk, g, fs, U, out, q, k, v, acs);
		if (pb) {
			bf16 *Fb = (bf16 *)F;
			if (F && launch_scan<false, false>(bk, g, Fb, U, k, v, acs) < 0)
				return lmk_errcode();
			size_t sb = tc_layout(g.C, (int)g.Dk, (int)g.Dv, 0).total;
			if (tc_smem(tc_out_kernel<bf16>, sb) < 0)
				return lmk_errcode();
			tc_out_kernel<bf16><<<dim3((unsigned)g.N, (unsigned)BH), NT, sb, st>>>(
				out, q, k, v, lam, acs, E, Fb, g);
			LMK_CK_LAUNCH();
			return 0;
		}
	}
	if (F) {
		if (launch_acc<T, false>(st, g, tc, F, k, v, acs, E, lam, NULL, g.N, g.tot) < 0)
			return lmk_errcode();
		fwd_states<<<blocks_for(BH * g.M, 256), 256, 0, st>>>(F, E, g);
		LMK_CK_LAUNCH();
	}
	if constexpr (std::is_same<T, bf16>::value) {
		if (tc) {
			size_t sb = tc_layout(g.C, (int)g.Dk, (int)g.Dv, 0).total;
			if (tc_smem(tc_out_kernel<float>, sb) < 0)
				return lmk_errcode();
			tc_out_kernel<float><<<dim3((unsigned)g.N, (unsigned)BH), NT, sb, st>>>(
				out, q, k, v, lam, acs, E, F, g);
			LMK_CK_LAUNCH();
			return 0;
		}
	}
	size_t sb = tiles_floats(g.C, g.Dk, g.Dv, 0) * sizeof(float);
	if (smem_set<T>(out_kernel<T>, sb) < 0)
		return lmk_errcode();
	out_kernel<T><<<dim3((unsigned)g.N, (unsigned)BH), NT, sb, st>>>(out, q, k, v, lam, acs, E,
									 F, g);
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_ssd_forward(void *be, lmk_dtype dt, void *out, const void *q,
				    const void *k, const void *v, const void *loga,
				    const void *lam, int64_t B, int64_t T, int64_t H, int64_t G,
				    int64_t Dk, int64_t Dv, int64_t NL, float scale, int chunk)
{
	if (B * T * H == 0)
		return 0;
	geo g;
	if (make_geo(&g, "ssd", dt, B, T, H, G, Dk, Dv, NL, scale, chunk, lam != NULL) < 0)
		return lmk_errcode();
	LMK_DT_SWITCH(dt, "ssd",
		      return forward_t<T>(LMK_BE(be), g, (T *)out, (const T *)q, (const T *)k,
					  (const T *)v, (const T *)loga, (const T *)lam));
}

/* tc_bwd_kernel<FS, PRE> with its shared memory */
template <class FS, bool PRE>
static int launch_tc_bwd(cudaStream_t st, const geo &g, float *dqh, float *dkh, lmk_gbuf dq,
			 lmk_gbuf dk, lmk_gbuf dv, lmk_gbuf dlam, float *dA, double *dAsum,
			 const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
			 const bf16 *lam, const float *acs, const double *E, const FS *F,
			 const FS *dF, int64_t lo_off)
{
	size_t sb = tc_layout(g.C, (int)g.Dk, (int)g.Dv, PRE ? 4 : 1).total;
	if (tc_smem(tc_bwd_kernel<FS, PRE>, sb) < 0)
		return lmk_errcode();
	tc_bwd_kernel<FS, PRE><<<dim3((unsigned)g.N, (unsigned)(g.B * g.H)), NT, sb, st>>>(
		dqh, dkh, to_gacc(dq), to_gacc(dk), to_gacc(dv), al16(dv.p), to_gacc(dlam), dA, dAsum,
		dout, q, k, v, lam, acs, E, F, dF, lo_off, g);
	LMK_CK_LAUNCH();
	return 0;
}

template <class T>
static int backward_t(lmk_cuda_backend *bk, const geo &g, lmk_gbuf dq, lmk_gbuf dk, lmk_gbuf dv,
		      lmk_gbuf dloga, lmk_gbuf dlam, const T *dout, const T *q, const T *k,
		      const T *v, const T *loga, const T *lam)
{
	int64_t BH = g.B * g.H;
	/* the blocks the query sides are summed into, and the first slot of
	 * each block state (level j - 1, block 2c) that reads them */
	std::vector<int4> slots;
	std::vector<int> first;
	if (!g.plain) {
		first.assign((size_t)g.tot, -1);
		for (int j = 1; j <= g.Lc; j++) {
			int64_t span = 1ll << j, half = span >> 1;
			for (int64_t c = 0; c * span < g.N; c++) {
				int64_t ua = c * span + half, ub = (c + 1) * span < g.N ? (c + 1) * span : g.N;
				if (ua < g.N)
					first[(size_t)(g.off[j - 1] + 2 * c)] = (int)slots.size();
				for (int64_t pa = ua; pa < ub; pa += PG)
					slots.push_back(make_int4((int)pa, (int)(pa + PG < ub ? pa + PG : ub), j, 0));
			}
		}
	}
	int64_t ns = (int64_t)slots.size();
	int states = g.N > 1, tc = use_tc<T>(g, q, k, v, dout);
	/* one head a group: the tensor cores add dq and dk straight into their
	 * gradients, without per-head rows */
	int direct = tc && g.G == g.H && vec8_ok(8, dq.p, dk.p);
	/* the plain form on the tensor cores: the states by tc_scan_kernel,
	 * which (like the chunk kernels of that form) reads no E */
	int pb = tc && g.plain, scan = pb && states;
	size_t b_acs = al((size_t)(BH * g.T) * 4), b_E = al((size_t)(BH * g.N) * 8);
	size_t b_F = states ? al((size_t)(BH * g.tot * g.M) * 4) : 0;
	size_t b_U = scan ? al(scan_scratch(g, bk->sm_count, true)) : 0;
	size_t b_parts = al((size_t)(BH * ns * g.M) * 4), b_slots = al((size_t)ns * sizeof(int4));
	size_t b_first = al(first.size() * sizeof(int));
	size_t b_dh = direct ? 0 : al((size_t)(BH * g.T * g.Dk) * 4), b_dA = al((size_t)(BH * g.T) * 4);
	size_t b_dAs = al((size_t)(BH * g.N) * 8);
	size_t total = b_acs + b_E + 2 * b_F + b_U + b_parts + b_slots + b_first + 2 * b_dh + b_dA +
		       b_dAs;
	char *p = (char *)lmk_cuda_scratch(bk, total);
	if (!p)
		return lmk_errcode();
	float *acs = (float *)p;
	p += b_acs;
	double *E = (double *)p;
	p += b_E;
	float *F = states ? (float *)p : NULL;
	p += b_F;
	float *dF = states ? (float *)p : NULL;
	p += b_F;
	float *U = b_U ? (float *)p : NULL;
	p += b_U;
	float *parts = (float *)p;
	p += b_parts;
	int4 *dslots = (int4 *)p;
	p += b_slots;
	int *dfirst = (int *)p;
	p += b_first;
	float *dqh = (float *)p;
	p += b_dh;
	float *dkh = (float *)p;
	p += b_dh;
	float *dA = (float *)p;
	p += b_dA;
	double *dAsum = (double *)p;
	cudaStream_t st = bk->stream;

	prep_chunk<T><<<(unsigned)(g.B * g.N), 256, 0, st>>>(acs, E, loga, g);
	LMK_CK_LAUNCH();
	if (!pb) {
		prep_prefix<<<blocks_for(BH, 128), 128, 0, st>>>(E, g);
		LMK_CK_LAUNCH();
	}
	if constexpr (std::is_same<T, bf16>::value) {
		if (scan && (launch_scan<false, true>(bk, g, (bf16 *)F, U, k, v, acs) < 0 ||
			     launch_scan<true, true>(bk, g, (bf16 *)dF, U, q, dout, acs) < 0))
			return lmk_errcode();
	}
	if (states && !scan) {
		if (launch_acc<T, false>(st, g, tc, F, k, v, acs, E, lam, NULL, g.N, g.tot) < 0)
			return lmk_errcode();
		fwd_states<<<blocks_for(BH * g.M, 256), 256, 0, st>>>(F, E, g);
		LMK_CK_LAUNCH();
		if (g.plain) {
			if (launch_acc<T, true>(st, g, tc, dF, q, dout, acs, E, lam, NULL, g.N, g.tot) < 0)
				return lmk_errcode();
		} else if (ns > 0) {
			if (lmk_cuda_upload(bk, dslots, slots.data(), (size_t)ns * sizeof(int4)) < 0 ||
			    lmk_cuda_upload(bk, dfirst, first.data(), first.size() * sizeof(int)) < 0 ||
			    launch_acc<T, true>(st, g, tc, parts, q, dout, acs, E, lam, dslots, ns, ns) < 0)
				return lmk_errcode();
		}
		bwd_states<<<blocks_for(BH * g.M, 256), 256, 0, st>>>(dF, parts, dfirst, E, ns, g);
		LMK_CK_LAUNCH();
	}
	int launched = 0;
	if constexpr (std::is_same<T, bf16>::value) {
		if (tc) {
			/* the plain form's states are bf16 halves (tc_scan_kernel),
			 * prefetched whole where two blocks still share an SM */
			float *dqp = direct ? NULL : dqh, *dkp = direct ? NULL : dkh;
			float *dAp = dloga.p ? dA : NULL;
			const bf16 *Fb = (const bf16 *)F, *dFb = (const bf16 *)dF;
			int64_t lo = BH * g.tot * g.M;
			int pre = pb && tc_layout(g.C, (int)g.Dk, (int)g.Dv, 4).total <= 113 * 1024;
			int r = pre ? launch_tc_bwd<bf16, true>(st, g, dqp, dkp, dq, dk, dv, dlam, dAp, dAsum,
								dout, q, k, v, lam, acs, E, Fb, dFb, lo)
				: pb ? launch_tc_bwd<bf16, false>(st, g, dqp, dkp, dq, dk, dv, dlam, dAp,
								  dAsum, dout, q, k, v, lam, acs, E, Fb, dFb, lo)
				     : launch_tc_bwd<float, false>(st, g, dqp, dkp, dq, dk, dv, dlam, dAp,
								   dAsum, dout, q, k, v, lam, acs, E, F, dF, 0);
			if (r < 0)
				return r;
			launched = 1;
		}
	}
	if (!launched) {
		size_t sb = tiles_floats(g.C, g.Dk, g.Dv, 1) * sizeof(float);
		LMK_CK(cudaFuncSetAttribute(bwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
					    (int)sb));
		bwd_kernel<T><<<dim3((unsigned)g.N, (unsigned)BH), NT, sb, st>>>(
			dqh, dkh, to_gacc(dv), to_gacc(dlam), dloga.p ? dA : NULL, dAsum, dout, q, k, v,
			lam, acs, E, F, dF, g);
		LMK_CK_LAUNCH();
	}
	if (dloga.p) {
		dloga_kernel<<<blocks_for(BH * g.N, 128), 128, 0, st>>>(to_gacc(dloga), dA, dAsum, g);
		LMK_CK_LAUNCH();
	}
	if ((dq.p || dk.p) && !direct) {
		int w = g.Dk % 8 == 0 && vec8_ok(8, dq.p, dk.p, dqh, dkh) ? 8 : 1;
		heads_kernel<<<blocks_for(g.B * g.T * g.G * g.Dk / w, 256), 256, 0, st>>>(
			to_gacc(dq), to_gacc(dk), dqh, dkh, w, g);
		LMK_CK_LAUNCH();
	}
	return 0;
}

extern "C" int lmk_cuda_ssd_backward(void *be, lmk_dtype dt, lmk_gbuf dq, lmk_gbuf dk,
				     lmk_gbuf dv, lmk_gbuf dloga, lmk_gbuf dlam,
				     const void *dout, const void *q, const void *k,
				     const void *v, const void *loga, const void *lam,
				     const void *out, int64_t B, int64_t T, int64_t H, int64_t G,
				     int64_t Dk, int64_t Dv, int64_t NL, float scale, int chunk)
{
	if (B * T * H == 0)
		return 0;
	if (check_gbuf("ssd", dt, dq) < 0 || check_gbuf("ssd", dt, dk) < 0 ||
	    check_gbuf("ssd", dt, dv) < 0 || check_gbuf("ssd", dt, dloga) < 0 ||
	    check_gbuf("ssd", dt, dlam) < 0)
		return lmk_errcode();
	if (!dq.p && !dk.p && !dv.p && !dloga.p && !dlam.p)
		return 0;
	geo g;
	if (make_geo(&g, "ssd", dt, B, T, H, G, Dk, Dv, NL, scale, chunk, lam != NULL) < 0)
		return lmk_errcode();
	if (!loga)
		dloga.p = NULL;
	LMK_DT_SWITCH(dt, "ssd",
		      return backward_t<T>(LMK_BE(be), g, dq, dk, dv, dloga, dlam, (const T *)dout,
					   (const T *)q, (const T *)k, (const T *)v,
					   (const T *)loga, (const T *)lam));
}

extern "C" int lmk_cuda_ssd_step(void *be, lmk_dtype dt, void *out, float *S, const void *q,
				 const void *k, const void *v, const void *loga,
				 const void *lam, int64_t B, int64_t Tn, int64_t t, int64_t pos,
				 int64_t H, int64_t G, int64_t Dk, int64_t Dv, int64_t NL,
				 float scale)
{
	if (B * H == 0)
		return 0;
	if (B * H > (1ll << 31) - 1)
		return lmk_err(LMK_EUNSUP, "ssd_step: too many heads");
	int threads = Dv >= 128 ? 128 : (int)((Dv + 31) / 32 * 32);
	cudaStream_t st = LMK_BE(be)->stream;
	LMK_DT_SWITCH(dt, "ssd_step",
		      step_kernel<T><<<(unsigned)(B * H), threads, 0, st>>>(
			      (T *)out, S, (const T *)q, (const T *)k, (const T *)v,
			      (const T *)loga, (const T *)lam, B, Tn, t, pos, H, G, Dk, Dv, NL,
			      scale));
	LMK_CK_LAUNCH();
	return 0;
}
