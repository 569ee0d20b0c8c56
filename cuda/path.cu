/* path.cu: PaTH attention on the GPU (cuda/path_cuda.h), the blockwise
 * algorithm of lib/path.c.
 *
 * The fast path (BF16 contexts with the tensor cores allowed, blocks of
 * C = 64, D 64 or 128): FlashAttention-2-style kernels on mma.sync
 * m16n8k16 (attention.cu's fwd_mma: ldmatrix from swizzled bf16 tiles,
 * cp.async double buffering, each warp's rows in registers, one product's
 * accumulators the A operand of the next). Forward: prep_mma (prep_block:
 * the UT form of each key block, also K~, U, Z in bf16), then fwd_mma
 * (intra_block and flash_block in one: Q~ and O of 16 query rows per warp
 * in registers while it walks the key blocks down). Backward: bwd_q_mma
 * (query_pass: the levels down, the adjoint up), bwd_k_mma (key_pass, in
 * two launches of two accumulators each), back_kernel (block_back) as a
 * sequence of split-bf16 products (smm3). The levels and adjoints that the
 * backward stores go in bf16, half of their float32 slots.
 *
 * Everything else (F32, LMK_PATH_BLOCKWISE_FP32, other blocks and head
 * dims) runs the general kernels, pass for pass with lib/path.c and with
 * its names: prep_block, intra_block and flash_block for the forward;
 * query_pass, key_pass and block_back for the backward. One thread block
 * per work item of the CPU loop (grid (blocks, heads, B)), 256 threads,
 * every tile in float32 shared memory whatever the storage dtype. In BF16
 * with D a multiple of 16 (not BLOCKWISE_FP32) the (C x D)(D x C) and
 * (C x C)(C x D) products of the O(T²) passes run on the tensor cores (wmma
 * m16n16k16, bf16 operands rounded from the float32 tiles, fp32
 * accumulation: tmm, and tacc for the key pass's accumulators kept as
 * fragments); everything else, and every product in F32, is smm on the
 * CUDA cores in float32 (no TF32, so F32 matches the CPU to 1e-5).
 * Not yet done: a backward whose stored levels cost less than T² D / C
 * values per head (fla keeps its query copies per 512-token chunk instead
 * of per block).
 *
 * Shape letters as in lib/path.h; C <= 64 the block, D <= 128, c <= C the
 * rows of a block, NT threads. A thread owns the elements tid + e NT (e <
 * C D / NT <= 32) of a (C, D) accumulator kept in registers. */

/* LMK_PATH_EMU: the kernels compiled as host C++ by a checking harness that
 * runs them without a GPU (one OS thread per CUDA thread, __syncthreads as
 * a barrier) and supplies what common.cuh would; the launchers and the
 * tensor-core code are left out. */
#ifndef LMK_PATH_EMU
#include <mma.h>

#include "common.cuh"
#endif

extern "C" {
#include "path.h"
}
#include "path_cuda.h"
#include "mma.cuh"

#ifndef NT
#define NT 256
#define MAXE 32 /* C * D / NT for C = 64, D = 128 */
#endif

/* ------------------------------------------------------------ helpers */

/* Cm (M,N ldc) = beta0 Cm + alpha op(A) op(B) over the block's threads;
 * operands in shared or global memory, Cm aliasing neither. The caller
 * synchronises before (operands written) and after (result read). */
template <bool TA, bool TB>
static __device__ void smm(float *Cm, int ldc, const float *A, int lda, const float *Bm, int ldb,
			   int M, int N, int Kk, float alpha, float beta0)
{
	for (int idx = threadIdx.x; idx < M * N; idx += blockDim.x) {
		const int i = idx / N, j = idx % N;
		float s = 0.f;
		for (int k = 0; k < Kk; k++)
			s += (TA ? A[k * lda + i] : A[i * lda + k]) * (TB ? Bm[j * ldb + k] : Bm[k * ldb + j]);
		Cm[i * ldc + j] = (beta0 == 0.f ? 0.f : beta0 * Cm[i * ldc + j]) + alpha * s;
	}
}

/* rows (C,D) <- src rows 0..c-1 of stride ld, zeros below. */
template <class E>
static __device__ void load_rows(float *dst, const E *src, int64_t ld, int c, int C, int D)
{
	for (int idx = threadIdx.x; idx < C * D; idx += blockDim.x) {
		const int r = idx / D, d = idx % D;
		dst[idx] = r < c ? tof(src[r * ld + d]) : 0.f;
	}
}

static __device__ void store_rows(float *dst, const float *src, int c, int D)
{
	for (int idx = threadIdx.x; idx < c * D; idx += blockDim.x)
		dst[idx] = src[idx];
}

static __device__ void zero(float *p, int n)
{
	for (int idx = threadIdx.x; idx < n; idx += blockDim.x)
		p[idx] = 0.f;
}

static __device__ __forceinline__ float sdot(const float *a, const float *b, int n)
{
	float s = 0.f;
	for (int i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* The workspace as the kernels see it (lmk_path_ws without the host-only
 * members). */
struct pws {
	int B, T, H, K, D, C, N;
	float *tm, *u, *z, *kt, *qt, *aloc, *g, *lse;
	float *lv, *adj, *dqt, *daloc, *dkt, *du, *dwp, *dgr, *dgc, *delta;
};

static pws to_pws(const lmk_path_ws *s)
{
	pws p;
	p.B = (int)s->B, p.T = (int)s->T, p.H = (int)s->H, p.K = (int)s->K, p.D = (int)s->D;
	p.C = (int)s->C, p.N = (int)s->N;
	p.tm = s->tm, p.u = s->u, p.z = s->z, p.kt = s->kt, p.qt = s->qt, p.aloc = s->aloc;
	p.g = s->g, p.lse = s->lse, p.lv = s->lv, p.adj = s->adj, p.dqt = s->dqt;
	p.daloc = s->daloc, p.dkt = s->dkt, p.du = s->du, p.dwp = s->dwp, p.dgr = s->dgr;
	p.dgc = s->dgc, p.delta = s->delta;
	return p;
}

static __device__ __forceinline__ int rows_of(const pws &s, int n)
{
	return min(s.C, s.T - n * s.C);
}

/* Offsets: (b,i,head) rows of a (B,T,NH,D) tensor; (b,head,t) of head-major
 * workspace arrays; (b,head,block) of (.., N, C, C) ones; level pairs. */
static __device__ __forceinline__ int64_t row(const pws &s, int b, int i, int hh, int NH)
{
	return (((int64_t)b * s.T + i) * NH + hh) * s.D;
}
static __device__ __forceinline__ int64_t hrow(const pws &s, int b, int hh, int NH, int t)
{
	return (((int64_t)b * NH + hh) * s.T + t) * s.D;
}
static __device__ __forceinline__ int64_t hblk(const pws &s, int b, int hh, int NH, int n)
{
	return (((int64_t)b * NH + hh) * s.N + n) * s.C * s.C;
}
static __device__ __forceinline__ int64_t lvat(const pws &s, int b, int h, int m, int n)
{
	const int64_t P = (int64_t)s.N * (s.N - 1) / 2;
	return (((int64_t)b * s.H + h) * P + (int64_t)m * (m - 1) / 2 + n) * s.C * s.D;
}
static __device__ __forceinline__ float gdiff(const pws &s, int b, int h, int i, int j)
{
	if (!s.g)
		return 0.f;
	const float *G = s.g + ((int64_t)b * s.H + h) * s.T;
	return G[i] - G[j];
}

/* ------------------------------------------------------------ forward */

/* One warp per (b, h): chunks of 32 steps, a scan in double within each
 * (butterfly order, fixed) plus the carry of the chunks before. */
template <class E>
__global__ void __launch_bounds__(NT) cumsum_kernel(float *g /*(B,H,T)*/, const E *logf /*(B,T,H)*/,
						    int B, int T, int H)
{
	const int x = blockIdx.x * (NT / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (x >= B * H)
		return;
	const int b = x / H, h = x % H;
	double carry = 0;
	for (int t0 = 0; t0 < T; t0 += 32) {
		const int t = t0 + lane;
		double a = t < T ? (double)tof(logf[((int64_t)b * T + t) * H + h]) : 0;
		for (int o = 1; o < 32; o <<= 1) {
			const double u = __shfl_up_sync(0xffffffffu, a, o);
			if (lane >= o)
				a += u;
		}
		a += carry;
		if (t < T)
			g[(int64_t)x * T + t] = (float)a;
		carry = __shfl_sync(0xffffffffu, a, 31);
	}
}

/* smem: W, K (C,D+1); L, M, T (C,C); beta (C). The rows of W and K are
 * padded by one float: the dot products of L and M read rows j = the
 * thread's column, which at a stride of D floats would all fall in one bank. */
template <class E>
__global__ void __launch_bounds__(NT) prep_kernel(pws s, const E *k, const E *w, const E *beta)
{
	extern __shared__ __align__(128) float sm[];
	const int n = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
	const int C = s.C, D = s.D, K = s.K, c = rows_of(s, n), j0 = n * C, LD = D + 1;
	float *sW = sm, *sK = sW + C * LD, *sL = sK + C * LD, *sM = sL + C * C, *sT = sM + C * C;
	float *sb = sT + C * C;
	for (int idx = threadIdx.x; idx < C * D; idx += blockDim.x) {
		const int r = idx / D, d = idx % D;
		const int64_t o = row(s, b, j0 + r, g, K) + d;
		sW[r * LD + d] = r < c ? tof(w[o]) : 0.f;
		sK[r * LD + d] = r < c ? tof(k[o]) : 0.f;
	}
	for (int r = threadIdx.x; r < C; r += blockDim.x)
		sb[r] = r < c ? tof(beta[((int64_t)b * s.T + j0 + r) * K + g]) : 0.f;
	__syncthreads();
	for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x) {
		const int r = idx / C, j = idx % C;
		const bool lo = j < r && r < c;
		sL[idx] = lo ? sb[r] * sdot(sW + r * LD, sW + j * LD, D) : 0.f;
		sM[idx] = lo ? sb[r] * sdot(sW + r * LD, sK + j * LD, D) : 0.f;
		sT[idx] = r == j && r < c ? 1.f : 0.f;
	}
	__syncthreads();
	/* (I + L) T = I, one row at a time: row r needs the rows above */
	for (int r = 1; r < c; r++) {
		for (int j = threadIdx.x; j < r; j += blockDim.x) {
			float a = 0.f;
			for (int t = j; t < r; t++)
				a += sL[r * C + t] * sT[t * C + j];
			sT[r * C + j] = -a;
		}
		__syncthreads();
	}
	float *Tm = s.tm + hblk(s, b, g, K, n), *Z = s.z + hblk(s, b, g, K, n);
	float *U = s.u + hrow(s, b, g, K, j0), *Kt = s.kt + hrow(s, b, g, K, j0);
	for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x)
		Tm[idx] = sT[idx];
	for (int idx = threadIdx.x; idx < c * D; idx += blockDim.x) {
		const int r = idx / D, d = idx % D;
		float a = 0.f;
		for (int j = 0; j <= r; j++)
			a += sT[r * C + j] * sb[j] * sW[j * LD + d];
		U[idx] = a;
	}
	/* Z = T M, into sL (L is no longer needed) */
	smm<false, false>(sL, C, sT, C, sM, C, C, C, C, 1.f, 0.f);
	__syncthreads();
	for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x)
		Z[idx] = sL[idx];
	for (int idx = threadIdx.x; idx < c * D; idx += blockDim.x) {
		const int j = idx / D, d = idx % D;
		float a = 0.f;
		for (int r = 0; r < c; r++)
			a += sL[r * C + j] * sW[r * LD + d];
		Kt[idx] = sK[j * LD + d] - a;
	}
}

/* smem: Q, W, K (C,D); X (C,C) */
template <class E>
__global__ void __launch_bounds__(NT) intra_kernel(pws s, const E *q, const E *k, const E *w)
{
	extern __shared__ __align__(128) float sm[];
	const int m = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
	const int C = s.C, D = s.D, H = s.H, K = s.K, g = h / (H / K), c = rows_of(s, m), i0 = m * C;
	float *sQ = sm, *sW = sQ + C * D, *sK = sW + C * D, *sX = sK + C * D;
	load_rows(sQ, q + row(s, b, i0, h, H), (int64_t)H * D, c, C, D);
	load_rows(sW, w + row(s, b, i0, g, K), (int64_t)K * D, c, C, D);
	load_rows(sK, k + row(s, b, i0, g, K), (int64_t)K * D, c, C, D);
	__syncthreads();
	for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x) {
		const int i = idx / C, j = idx % C;
		sX[idx] = j <= i ? sdot(sQ + i * D, sW + j * D, D) : 0.f;
	}
	__syncthreads();
	const float *U = s.u + hrow(s, b, g, K, i0), *Z = s.z + hblk(s, b, g, K, m);
	float *Qt = s.qt + hrow(s, b, h, H, i0), *A = s.aloc + hblk(s, b, h, H, m);
	for (int idx = threadIdx.x; idx < c * D; idx += blockDim.x) {
		const int i = idx / D, d = idx % D;
		float a = 0.f;
		for (int r = 0; r <= i; r++)
			a += sX[i * C + r] * U[r * D + d];
		Qt[idx] = sQ[idx] - a;
	}
	for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x) {
		const int i = idx / C, j = idx % C;
		float a = 0.f;
		if (i < c && j <= i) {
			a = sdot(sQ + i * D, sK + j * D, D);
			for (int r = j + 1; r <= i; r++)
				a -= sX[i * C + r] * Z[r * C + j];
		}
		A[idx] = a;
	}
}

/* S (c,C) of query block m against key block m (its own A): -inf past the
 * diagonal and past the block. */
static __device__ void diag_logits(const pws &s, float *S, int b, int h, int m, float scale)
{
	const int C = s.C, c = rows_of(s, m);
	const float *A = s.aloc + hblk(s, b, h, s.H, m);
	for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x) {
		const int i = idx / C, j = idx % C;
		S[idx] = i < c && j <= i ? scale * A[idx] + gdiff(s, b, h, m * C + i, m * C + j)
					 : -INFINITY;
	}
}

/* After S = scale lv K~ᵀ over (cm, cn): the forget-gate terms, -inf past
 * the block. */
static __device__ void fix_logits(const pws &s, float *S, int b, int h, int m, int n)
{
	const int C = s.C, cm = rows_of(s, m), cn = rows_of(s, n);
	for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x) {
		const int i = idx / C, j = idx % C;
		if (i < cm && j < cn)
			S[idx] += gdiff(s, b, h, m * C + i, n * C + j);
		else
			S[idx] = -INFINITY;
	}
}

#ifndef LMK_PATH_EMU
/* Tensor-core products (BF16 contexts, D a multiple of 16): op(A) (M,Kk)
 * and op(B) (Kk,N), float32 in shared memory, are rounded to bf16 into the
 * staging tiles sa (Mp,Kp) and sb (Kp,Np) (row-major, zero-padded to
 * multiples of 16, so transposes cost nothing), then each warp takes 16x16
 * tiles of the result with wmma m16n16k16 (fp32 accumulation) and writes
 * them through its 16x16 float tile of st into Cm = beta0 Cm + alpha AB.
 * Rounding the operands is what the BF16 mma kernels of attention.cu do;
 * the walk's Q~ itself stays float32 between products, as in fla. */
template <bool TA, bool TB>
static __device__ void tmm(float *Cm, int ldc, const float *A, int lda, const float *Bm, int ldb,
			   int M, int N, int Kk, float alpha, float beta0, bf16 *sa, bf16 *sb,
			   float *st)
{
	using namespace nvcuda;
	const int Mp = (M + 15) & ~15, Np = (N + 15) & ~15, Kp = (Kk + 15) & ~15;
	for (int idx = threadIdx.x; idx < Mp * Kp; idx += blockDim.x) {
		const int i = idx / Kp, k = idx % Kp;
		sa[idx] = __float2bfloat16_rn(i < M && k < Kk ? (TA ? A[k * lda + i] : A[i * lda + k])
							      : 0.f);
	}
	for (int idx = threadIdx.x; idx < Kp * Np; idx += blockDim.x) {
		const int k = idx / Np, j = idx % Np;
		sb[idx] = __float2bfloat16_rn(k < Kk && j < N ? (TB ? Bm[j * ldb + k] : Bm[k * ldb + j])
							      : 0.f);
	}
	__syncthreads();
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
	const int tn = Np / 16, nt = (Mp / 16) * tn;
	float *t = st + warp * 256;
	for (int tile = warp; tile < nt; tile += nw) {
		const int ti = tile / tn, tj = tile % tn;
		wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
		wmma::fill_fragment(acc, 0.f);
		for (int kk = 0; kk < Kp; kk += 16) {
			wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
			wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
			wmma::load_matrix_sync(fa, sa + ti * 16 * Kp + kk, Kp);
			wmma::load_matrix_sync(fb, sb + kk * Np + tj * 16, Np);
			wmma::mma_sync(acc, fa, fb, acc);
		}
		wmma::store_matrix_sync(t, acc, 16, wmma::mem_row_major);
		__syncwarp();
		for (int e = lane; e < 256; e += 32) {
			const int i = ti * 16 + e / 16, j = tj * 16 + e % 16;
			if (i < M && j < N)
				Cm[i * ldc + j] = (beta0 == 0.f ? 0.f : beta0 * Cm[i * ldc + j]) + alpha * t[e];
		}
		__syncwarp();
	}
}
#endif

/* The staging of tmm: 2 tiles of 64 x 128 bf16 and a 16x16 float tile per
 * warp, in bytes. */
#define TC_BYTES (2 * 64 * 128 * 2 + (NT / 32) * 256 * 4)

/* Cm = beta0 Cm + alpha op(A) op(B), on the tensor cores when TC. */
template <bool TC, bool TA, bool TB>
static __device__ void mmul(float *Cm, int ldc, const float *A, int lda, const float *Bm, int ldb,
			    int M, int N, int Kk, float alpha, float beta0, unsigned char *stage)
{
#ifndef LMK_PATH_EMU
	if constexpr (TC) {
		bf16 *sa = (bf16 *)stage, *sb = sa + 64 * 128;
		tmm<TA, TB>(Cm, ldc, A, lda, Bm, ldb, M, N, Kk, alpha, beta0, sa, sb,
			    (float *)(sb + 64 * 128));
		return;
	}
#endif
	smm<TA, TB>(Cm, ldc, A, lda, Bm, ldb, M, N, Kk, alpha, beta0);
}

/* smem: Qt, tile, O (C,D); S, X (C,C); mx, l, cr (C); then, with TC, the
 * staging of tmm at a 128-byte boundary. */
template <class E, bool TC>
__global__ void __launch_bounds__(NT) flash_kernel(pws s, E *out, const E *v, const E *w,
						   float scale)
{
	extern __shared__ __align__(128) float sm[];
	const int m = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
	const int C = s.C, D = s.D, H = s.H, K = s.K, g = h / (H / K), cm = rows_of(s, m);
	const int i0 = m * C;
	float *sQ = sm, *sT = sQ + C * D, *sO = sT + C * D, *sS = sO + C * D, *sX = sS + C * C;
	float *mx = sX + C * C, *l = mx + C, *cr = l + C;
	unsigned char *stage = (unsigned char *)(sm + ((3 * C * D + 2 * C * C + 3 * C + 31) & ~31));
	load_rows(sQ, s.qt + hrow(s, b, h, H, i0), D, cm, C, D);
	zero(sO, C * D);
	for (int r = threadIdx.x; r < C; r += blockDim.x) {
		mx[r] = -INFINITY;
		l[r] = 0.f;
	}
	__syncthreads();
	for (int n = m; n >= 0; n--) {
		const int cn = rows_of(s, n), j0 = n * C;
		if (n == m) {
			diag_logits(s, sS, b, h, m, scale);
		} else {
			load_rows(sT, s.kt + hrow(s, b, g, K, j0), D, cn, C, D);
			__syncthreads();
			mmul<TC, false, true>(sS, C, sQ, D, sT, D, cm, cn, D, scale, 0.f, stage);
			__syncthreads();
			fix_logits(s, sS, b, h, m, n);
		}
		__syncthreads();
		for (int r = threadIdx.x; r < cm; r += blockDim.x) {
			float bm = mx[r];
			for (int j = 0; j < cn; j++)
				bm = fmaxf(bm, sS[r * C + j]);
			const float f = expf(mx[r] - bm); /* bm finite: the diagonal comes first */
			float a = l[r] * f;
			for (int j = 0; j < C; j++) {
				const float p = j < cn ? expf(sS[r * C + j] - bm) : 0.f;
				sS[r * C + j] = p;
				a += p;
			}
			mx[r] = bm;
			l[r] = a;
			cr[r] = f;
		}
		load_rows(sT, v + row(s, b, j0, g, K), (int64_t)K * D, cn, C, D);
		__syncthreads();
		for (int idx = threadIdx.x; idx < cm * D; idx += blockDim.x)
			sO[idx] *= cr[idx / D];
		__syncthreads();
		mmul<TC, false, false>(sO, D, sS, C, sT, D, cm, D, cn, 1.f, 1.f, stage);
		__syncthreads();
		if (n > 0 && n < m) {
			load_rows(sT, w + row(s, b, j0, g, K), (int64_t)K * D, cn, C, D);
			__syncthreads();
			mmul<TC, false, true>(sX, C, sQ, D, sT, D, cm, cn, D, 1.f, 0.f, stage);
			__syncthreads();
			load_rows(sT, s.u + hrow(s, b, g, K, j0), D, cn, C, D);
			__syncthreads();
			mmul<TC, false, false>(sQ, D, sX, C, sT, D, cm, D, cn, -1.f, 1.f, stage);
			__syncthreads();
		}
	}
	for (int idx = threadIdx.x; idx < cm * D; idx += blockDim.x)
		out[row(s, b, i0 + idx / D, h, H) + idx % D] = fromf<E>(sO[idx] / l[idx / D]);
	for (int r = threadIdx.x; r < cm; r += blockDim.x)
		s.lse[((int64_t)b * H + h) * s.T + i0 + r] = mx[r] + logf(l[r]);
}

#ifndef LMK_PATH_EMU
/* ------------------------------------------------ mma forward (BF16) */

/* The forward of BF16 contexts with C = 64 and D = 64 or 128 in one kernel,
 * FlashAttention-2 style (attention.cu's fwd_mma: mma.sync m16n8k16,
 * ldmatrix from swizzled bf16 tiles, cp.async double buffering, the
 * accumulators of one product the A operand of the next). A thread block
 * takes NB query blocks (PfCfg: 1 or 2), each warp 16 rows of one of them,
 * and keeps per warp in registers its rows of Q~ (float32, the level of the
 * walk), of O, and the running max and sum. It does intra_kernel's work
 * first, each warp for its rows (X = tril(Q Wᵀ), Q~ = Q - X U, A = Q Kᵀ -
 * X Z, written to qt and aloc for the backward), starts the online softmax
 * with the diagonal block's logits, then walks the key blocks n below:
 *   S = scale Q~ K~_nᵀ, O += P V_n,   Q~ -= (Q~ W_nᵀ) U_n  (n > 0),
 * the four products on the tensor cores (bf16 operands, Q~ and X rounded
 * as tmm rounds them, fp32 accumulation). K~, U and Z come in bf16 from
 * prep_kernel (kt16, u16, z16). A warp whose block is at or below n idles
 * through that step (only the upper block meets the lower one). */

static constexpr unsigned FULL = 0xffffffffu;
static constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

/* Element offset of (row, col) in a tile of W-wide bf16 rows, col a
 * multiple of 8: the 16-byte chunk index XORed with row % 8, so the 8 rows
 * an ldmatrix reads land in 8 different bank groups. */
template <int W> static __device__ __forceinline__ int swz(int row, int col)
{
	return row * W + ((((col >> 3) ^ (row & 7))) << 3);
}

/* Rows row0..row0+ROWS-1 of a bf16 matrix (row r at g + r ld) into a
 * swizzled ROWS x W tile; rows at or past lim zero-filled. */
template <int W, int ROWS, int NTH>
static __device__ __forceinline__ void load_tile(bf16 *sm, const bf16 *g, int64_t ld, int row0,
						 int lim, int tid)
{
	constexpr int CPR = W / 8, N = ROWS * CPR;
#pragma unroll
	for (int it = 0; it < (N + NTH - 1) / NTH; it++) {
		const int c = tid + it * NTH;
		if (N % NTH == 0 || c < N) {
			const int r = c / CPR, ch = c % CPR, gr = row0 + r;
			const bool ok = gr < lim;
			cp_async16(smem_u32(sm + swz<W>(r, ch * 8)), g + (int64_t)(ok ? gr : 0) * ld + ch * 8,
				   ok);
		}
	}
}

/* A operand (16 x 16 at r0, c0) from a swizzled tile. */
template <int W>
static __device__ __forceinline__ void ld_a(uint32_t (&a)[4], const bf16 *sm, int r0, int c0,
					    int lane)
{
	ldsm4(a, smem_u32(sm + swz<W>(r0 + (lane & 15), c0 + ((lane >> 4) << 3))));
}

/* B operands of two n8 tiles for a k16 step, tile stored [n][k] (S = Q Kᵀ):
 * b[0], b[1] for n0, b[2], b[3] for n0 + 8. */
template <int W>
static __device__ __forceinline__ void ld_b_nk(uint32_t (&b)[4], const bf16 *sm, int n0, int k0,
					       int lane)
{
	ldsm4(b, smem_u32(sm + swz<W>(n0 + (lane & 7) + ((lane >> 4) << 3),
				       k0 + (((lane >> 3) & 1) << 3))));
}

/* The same for a tile stored [k][n] (O = P V), transposed by ldmatrix. */
template <int W>
static __device__ __forceinline__ void ld_b_kn(uint32_t (&b)[4], const bf16 *sm, int k0, int n0,
					       int lane)
{
	ldsm4t(b, smem_u32(sm + swz<W>(k0 + (lane & 7) + (((lane >> 3) & 1) << 3),
					n0 + ((lane >> 4) << 3))));
}

/* acc (16 x 8 NN tiles) += A (16 x 16 KK, swizzled rows r0.. of sa, or
 * given fragments) times a [n][k] tile (rows 0..8 NN of sb). */
template <int W, int NN>
static __device__ __forceinline__ void mm_nk(float (&acc)[NN][4], const uint32_t (&a)[4],
					     const bf16 *sb, int k0, int lane)
{
#pragma unroll
	for (int np = 0; np < NN / 2; np++) {
		uint32_t bb[4];
		ld_b_nk<W>(bb, sb, np * 16, k0, lane);
		mma16816(acc[2 * np], a, bb[0], bb[1]);
		mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
	}
}

template <int W, int NN>
static __device__ __forceinline__ void mm_kn(float (&acc)[NN][4], const uint32_t (&a)[4],
					     const bf16 *sb, int k0, int lane)
{
#pragma unroll
	for (int np = 0; np < NN / 2; np++) {
		uint32_t bb[4];
		ld_b_kn<W>(bb, sb, k0, np * 16, lane);
		mma16816(acc[2 * np], a, bb[0], bb[1]);
		mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
	}
}

/* The online softmax of one key block: s (16 x 64, this thread's pieces)
 * already in log2 units, m, l the running max and this thread's part of
 * the running sum of rows lo and hi, o rescaled; s becomes P. */
template <int D>
static __device__ __forceinline__ void softmax_step(float (&s)[8][4], float (&o)[D / 8][4],
						    float &m_lo, float &m_hi, float &l_lo, float &l_hi)
{
	float mx_lo = m_lo, mx_hi = m_hi;
#pragma unroll
	for (int n = 0; n < 8; n++) {
		mx_lo = fmaxf(mx_lo, fmaxf(s[n][0], s[n][1]));
		mx_hi = fmaxf(mx_hi, fmaxf(s[n][2], s[n][3]));
	}
	mx_lo = fmaxf(mx_lo, __shfl_xor_sync(FULL, mx_lo, 1));
	mx_lo = fmaxf(mx_lo, __shfl_xor_sync(FULL, mx_lo, 2));
	mx_hi = fmaxf(mx_hi, __shfl_xor_sync(FULL, mx_hi, 1));
	mx_hi = fmaxf(mx_hi, __shfl_xor_sync(FULL, mx_hi, 2));
	/* finite: every row meets its diagonal first */
	const float c_lo = exp2f(m_lo - mx_lo), c_hi = exp2f(m_hi - mx_hi);
	m_lo = mx_lo;
	m_hi = mx_hi;
	l_lo *= c_lo;
	l_hi *= c_hi;
#pragma unroll
	for (int n = 0; n < D / 8; n++) {
		o[n][0] *= c_lo;
		o[n][1] *= c_lo;
		o[n][2] *= c_hi;
		o[n][3] *= c_hi;
	}
#pragma unroll
	for (int n = 0; n < 8; n++) {
		s[n][0] = exp2f(s[n][0] - mx_lo);
		s[n][1] = exp2f(s[n][1] - mx_lo);
		s[n][2] = exp2f(s[n][2] - mx_hi);
		s[n][3] = exp2f(s[n][3] - mx_hi);
		l_lo += s[n][0] + s[n][1];
		l_hi += s[n][2] + s[n][3];
	}
}

/* prep_kernel for fwd_mma (BF16, C = 64, D 64 or 128): the same outputs,
 * plus K~, U, Z in bf16 (kt16, u16, z16), with the products on the tensor
 * cores. 4 warps, warp w the rows 16w.. of every product. L = W Wᵀ and
 * W Kᵀ take bf16 inputs, so their products are exact and only the float32
 * sums differ from prep_kernel's; T = (I + L)⁻¹ is solved in float32 on
 * the CUDA cores; the products with T, Z and W Kᵀ (float32 values) split
 * each such operand x into bf16 parts hi + lo and sum hi y + lo y (and hi
 * lo' for two split operands), which keeps about 16 bits of x. */
static constexpr int PREP_NTH = 128, PLD = 72; /* float32 64 x 64 tiles, rows padded */

static __device__ __forceinline__ void split2(uint32_t &hi, uint32_t &lo, float x, float y)
{
	const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
	hi = *(const uint32_t *)&h;
	lo = pack_bf16(x - __low2float(h), y - __high2float(h));
}

/* A fragment (16 x 16 at r0, k0) of a float32 matrix stored [m][k] (ld),
 * or with TR stored [k][m], split. */
template <bool TR>
static __device__ __forceinline__ void frag_a32(uint32_t (&hi)[4], uint32_t (&lo)[4], const float *A,
						int ld, int r0, int k0, int lane)
{
	const int r = r0 + (lane >> 2), c = k0 + ((lane & 3) << 1);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		const int rr = r + (i & 1) * 8, cc = c + (i >> 1) * 8;
		const float x = TR ? A[cc * ld + rr] : A[rr * ld + cc];
		const float y = TR ? A[(cc + 1) * ld + rr] : A[rr * ld + cc + 1];
		split2(hi[i], lo[i], x, y);
	}
}

/* B fragment (k16 x n8 at k0, n0) of a float32 matrix stored [k][n], split. */
static __device__ __forceinline__ void frag_b32(uint32_t (&hi)[2], uint32_t (&lo)[2], const float *B,
						int ld, int k0, int n0, int lane)
{
	const int n = n0 + (lane >> 2), k = k0 + ((lane & 3) << 1);
#pragma unroll
	for (int i = 0; i < 2; i++)
		split2(hi[i], lo[i], B[(k + 8 * i) * ld + n], B[(k + 8 * i + 1) * ld + n]);
}

/* smem: W, K (64 x D bf16, swizzled); L, S = strictlower(W Kᵀ), T (64 x
 * PLD float32; Z later in L's place); beta (64); 3 16 x 16 sums. */
template <int D>
__global__ void __launch_bounds__(PREP_NTH) prep_mma(pws s, const bf16 *__restrict__ k,
						     const bf16 *__restrict__ w,
						     const bf16 *__restrict__ beta, bf16 *kt16,
						     bf16 *u16, bf16 *z16)
{
	constexpr int C = 64;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bf16 *sW = (bf16 *)smem_raw, *sK = sW + C * D;
	float *sL = (float *)(sK + C * D), *sS = sL + C * PLD, *sT = sS + C * PLD, *sb = sT + C * PLD;
	float *sMt = sb + C; /* (3, 16, 16) */
	const int n = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, K = s.K;
	const int c = rows_of(s, n), j0 = n * C;
	const int64_t ldk = (int64_t)K * D;
	load_tile<D, C, PREP_NTH>(sW, w + row(s, b, j0, g, K), ldk, 0, c, tid);
	load_tile<D, C, PREP_NTH>(sK, k + row(s, b, j0, g, K), ldk, 0, c, tid);
	cp_commit();
	for (int r = tid; r < C; r += PREP_NTH)
		sb[r] = r < c ? tof(beta[((int64_t)b * s.T + j0 + r) * K + g]) : 0.f;
	cp_wait<0>();
	__syncthreads();
	const int r0 = warp * 16, rlo = r0 + (lane >> 2), c2 = (lane & 3) << 1;
	{
		float l[8][4], m[8][4];
#pragma unroll
		for (int i = 0; i < 8; i++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				l[i][e] = m[i][e] = 0.f;
#pragma unroll
		for (int kk = 0; kk < D / 16; kk++) {
			uint32_t af[4];
			ld_a<D>(af, sW, r0, kk * 16, lane);
			mm_nk<D, 8>(l, af, sW, kk * 16, lane);
			mm_nk<D, 8>(m, af, sK, kk * 16, lane);
		}
#pragma unroll
		for (int i = 0; i < 8; i++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				const int r = rlo + (e >> 1) * 8, j = i * 8 + c2 + (e & 1);
				const bool lo = j < r && r < c;
				sL[r * PLD + j] = lo ? sb[r] * l[i][e] : 0.f;
				sS[r * PLD + j] = lo ? m[i][e] : 0.f;
				sT[r * PLD + j] = r == j && r < c ? 1.f : 0.f;
			}
	}
	__syncthreads();
	/* (I + L) T = I by 16 x 16 blocks (rows past c: identity rows, their
	 * 1 dropped below): the diagonal blocks T_ii = (I + L_ii)⁻¹ by forward
	 * substitution, warp i, lane j its column (its own entries only: no
	 * barrier); then block rows i = 1..3, T_ij = -T_ii sum_{k=j..i-1} L_ik
	 * T_kj (the sums in sMt) */
	if (lane < 16) {
		const int o = warp * 16, j = o + lane;
		for (int r = 0; r < 16; r++) {
			float a = 0.f;
			for (int t = lane; t < r; t++)
				a += sL[(o + r) * PLD + o + t] * sT[(o + t) * PLD + j];
			sT[(o + r) * PLD + j] = r == lane ? 1.f : r > lane ? -a : 0.f;
		}
	}
	__syncthreads();
	for (int i = 1; i < 4; i++) {
		for (int idx = tid; idx < i * 256; idx += PREP_NTH) {
			const int j = idx / 256, r = i * 16 + idx % 256 / 16, cc = j * 16 + idx % 16;
			float a = 0.f;
			for (int t = j * 16; t < i * 16; t++)
				a += sL[r * PLD + t] * sT[t * PLD + cc];
			sMt[idx] = a;
		}
		__syncthreads();
		for (int idx = tid; idx < i * 256; idx += PREP_NTH) {
			const int j = idx / 256, r = i * 16 + idx % 256 / 16, col = idx % 16;
			float a = 0.f;
			for (int t = 0; t < 16; t++)
				a += sT[r * PLD + i * 16 + t] * sMt[j * 256 + t * 16 + col];
			sT[r * PLD + j * 16 + col] = -a;
		}
		__syncthreads();
	}
	/* Tm out (zero rows past c); then T diag(beta) in place */
	float *Tm = s.tm + hblk(s, b, g, K, n);
	for (int idx = tid; idx < C * C; idx += PREP_NTH) {
		const int r = idx / C, j = idx % C;
		Tm[idx] = r < c ? sT[r * PLD + j] : 0.f;
	}
	__syncthreads();
	for (int idx = tid; idx < C * C; idx += PREP_NTH) {
		const int r = idx / C, j = idx % C;
		sT[r * PLD + j] *= sb[j];
	}
	__syncthreads();
	/* U = T diag(beta) W and Z = T diag(beta) strictlower(W Kᵀ) = T M,
	 * rows r0.. */
	{
		float u[D / 8][4], z[8][4];
#pragma unroll
		for (int i = 0; i < D / 8; i++)
			u[i][0] = u[i][1] = u[i][2] = u[i][3] = 0.f;
#pragma unroll
		for (int i = 0; i < 8; i++)
			z[i][0] = z[i][1] = z[i][2] = z[i][3] = 0.f;
#pragma unroll
		for (int kk = 0; kk < 4; kk++) {
			uint32_t ah[4], al[4];
			frag_a32<false>(ah, al, sT, PLD, r0, kk * 16, lane);
			mm_kn<D, D / 8>(u, ah, sW, kk * 16, lane);
			mm_kn<D, D / 8>(u, al, sW, kk * 16, lane);
#pragma unroll
			for (int i = 0; i < 8; i++) {
				uint32_t bh[2], bl[2];
				frag_b32(bh, bl, sS, PLD, kk * 16, i * 8, lane);
				mma16816(z[i], ah, bh[0], bh[1]);
				mma16816(z[i], ah, bl[0], bl[1]);
				mma16816(z[i], al, bh[0], bh[1]);
			}
		}
		float *U = s.u + hrow(s, b, g, K, j0), *Z = s.z + hblk(s, b, g, K, n);
		bf16 *U16 = u16 + hrow(s, b, g, K, j0), *Z16 = z16 + hblk(s, b, g, K, n);
#pragma unroll
		for (int i = 0; i < D / 8; i++)
#pragma unroll
			for (int hf = 0; hf < 2; hf++) {
				const int r = rlo + hf * 8, d = i * 8 + c2;
				if (r < c) {
					*(float2 *)(U + r * D + d) = make_float2(u[i][2 * hf], u[i][2 * hf + 1]);
					*(__nv_bfloat162 *)(U16 + r * D + d) =
						__floats2bfloat162_rn(u[i][2 * hf], u[i][2 * hf + 1]);
				}
			}
#pragma unroll
		for (int i = 0; i < 8; i++)
#pragma unroll
			for (int hf = 0; hf < 2; hf++) {
				const int r = rlo + hf * 8, j = i * 8 + c2;
				const float z0 = z[i][2 * hf], z1 = z[i][2 * hf + 1];
				*(float2 *)(Z + r * C + j) = make_float2(z0, z1);
				*(__nv_bfloat162 *)(Z16 + r * C + j) = __floats2bfloat162_rn(z0, z1);
				sL[r * PLD + j] = z0;
				sL[r * PLD + j + 1] = z1;
			}
	}
	__syncthreads();
	/* K~ = K - Zᵀ W, rows j = r0.. */
	{
		float a[D / 8][4];
#pragma unroll
		for (int i = 0; i < D / 8; i++)
			a[i][0] = a[i][1] = a[i][2] = a[i][3] = 0.f;
#pragma unroll
		for (int kk = 0; kk < 4; kk++) {
			uint32_t ah[4], al[4];
			frag_a32<true>(ah, al, sL, PLD, r0, kk * 16, lane);
			mm_kn<D, D / 8>(a, ah, sW, kk * 16, lane);
			mm_kn<D, D / 8>(a, al, sW, kk * 16, lane);
		}
		float *Kt = s.kt + hrow(s, b, g, K, j0);
		bf16 *Kt16 = kt16 + hrow(s, b, g, K, j0);
#pragma unroll
		for (int i = 0; i < D / 8; i++)
#pragma unroll
			for (int hf = 0; hf < 2; hf++) {
				const int j = rlo + hf * 8, d = i * 8 + c2;
				if (j < c) {
					const __nv_bfloat162 kv =
						*(const __nv_bfloat162 *)(sK + swz<D>(j, i * 8) + c2);
					const float x0 = __low2float(kv) - a[i][2 * hf];
					const float x1 = __high2float(kv) - a[i][2 * hf + 1];
					*(float2 *)(Kt + j * D + d) = make_float2(x0, x1);
					*(__nv_bfloat162 *)(Kt16 + j * D + d) = __floats2bfloat162_rn(x0, x1);
				}
			}
	}
}

template <int D> static constexpr size_t prep_mma_smem()
{
	return (size_t)2 * 64 * D * 2 + (size_t)(3 * 64 * PLD + 64 + 3 * 256) * 4;
}

/* Cm (M,N ldc) = beta0 Cm + alpha op(A) op(B), as smm, on the tensor cores:
 * each float32 operand split into bf16 hi + lo and the product summed as
 * hi hi' + hi lo' + lo hi', which keeps about 16 bits of each operand (the
 * O(T) back_kernel in BF16, whose operands are float32 sums). Operands in
 * shared or global memory, Cm aliasing neither; warp w takes the 16 x 32
 * tiles w, w + (warps), ... of the result. AX, BX: A, B hold bf16 values
 * (the inputs), whose lo parts are zero: their products are left out. */
template <bool TA, bool TB, bool AX, bool BX>
static __device__ void smm3(float *Cm, int ldc, const float *A, int lda, const float *Bm, int ldb,
			    int M, int N, int Kk, float alpha, float beta0)
{
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	const int tn = (N + 31) / 32, nt = (M + 15) / 16 * tn, g8 = lane >> 2, c2 = (lane & 3) << 1;
	auto at = [&](int m, int k) {
		return m < M && k < Kk ? (TA ? A[k * lda + m] : A[m * lda + k]) : 0.f;
	};
	auto bt = [&](int k, int n) {
		return k < Kk && n < N ? (TB ? Bm[n * ldb + k] : Bm[k * ldb + n]) : 0.f;
	};
	/* the operands of one k step, loaded one step ahead (several operands
	 * and results are in global memory: one wait per step, not per load) */
	auto fetch = [&](int r0, int n0, int k0, float (&ra)[8], float (&rb)[16]) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			const int m = r0 + g8 + (i & 1) * 8, k = k0 + c2 + (i >> 1) * 8;
			ra[2 * i] = at(m, k);
			ra[2 * i + 1] = at(m, k + 1);
		}
#pragma unroll
		for (int t = 0; t < 4; t++)
#pragma unroll
			for (int i = 0; i < 2; i++) {
				const int n = n0 + t * 8 + g8, k = k0 + c2 + 8 * i;
				rb[4 * t + 2 * i] = bt(k, n);
				rb[4 * t + 2 * i + 1] = bt(k + 1, n);
			}
	};
	for (int tile = warp; tile < nt; tile += nw) {
		const int r0 = tile / tn * 16, n0 = tile % tn * 32;
		float acc[4][4], old[4][4];
#pragma unroll
		for (int t = 0; t < 4; t++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				const int i = r0 + g8 + (e >> 1) * 8, j = n0 + t * 8 + c2 + (e & 1);
				acc[t][e] = 0.f;
				old[t][e] = beta0 != 0.f && i < M && j < N ? Cm[i * ldc + j] : 0.f;
			}
		float ra[8], rb[16];
		fetch(r0, n0, 0, ra, rb);
		for (int k0 = 0; k0 < Kk; k0 += 16) {
			uint32_t ah[4], al[4], bh[8], bl[8];
#pragma unroll
			for (int i = 0; i < 4; i++)
				split2(ah[i], al[i], ra[2 * i], ra[2 * i + 1]);
#pragma unroll
			for (int i = 0; i < 8; i++)
				split2(bh[i], bl[i], rb[2 * i], rb[2 * i + 1]);
			if (k0 + 16 < Kk)
				fetch(r0, n0, k0 + 16, ra, rb);
#pragma unroll
			for (int t = 0; t < 4; t++) {
				mma16816(acc[t], ah, bh[2 * t], bh[2 * t + 1]);
				if (!BX)
					mma16816(acc[t], ah, bl[2 * t], bl[2 * t + 1]);
				if (!AX)
					mma16816(acc[t], al, bh[2 * t], bh[2 * t + 1]);
			}
		}
#pragma unroll
		for (int t = 0; t < 4; t++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				const int i = r0 + g8 + (e >> 1) * 8, j = n0 + t * 8 + c2 + (e & 1);
				if (i < M && j < N)
					Cm[i * ldc + j] = beta0 * old[t][e] + alpha * acc[t][e];
			}
	}
}
/* NB query blocks per thread block: 2 at D 128 (one block of 8 warps per
 * SM: its tiles serve twice the rows), 1 at D 64 (two blocks of 4 warps per
 * SM, so that one's diagonal block and loads overlap the other's walk). */
template <int D> struct PfCfg {
	static constexpr int NB = D == 64 ? 1 : 2, NW = 4 * NB, NTH = NW * 32, MINB = D == 64 ? 2 : 1;
	/* bf16 elements: 2 stages of K~ (or K), V, W, U (64 x D each), the
	 * queries (NB 64 x D), the Z of each block (64 x 64) */
	static constexpr int STAGE = 4 * 64 * D;
	static constexpr size_t SMEM = (size_t)(2 * STAGE + NB * 64 * D + NB * 64 * 64) * 2;
};

template <int D>
__global__ void __launch_bounds__(PfCfg<D>::NTH, PfCfg<D>::MINB)
	fwd_mma(pws s, bf16 *__restrict__ out, const bf16 *__restrict__ q,
		const bf16 *__restrict__ k, const bf16 *__restrict__ v, const bf16 *__restrict__ w,
		const bf16 *__restrict__ kt16, const bf16 *__restrict__ u16,
		const bf16 *__restrict__ z16, float scale)
{
	using Cfg = PfCfg<D>;
	constexpr int NB = Cfg::NB, NTH = Cfg::NTH, ST = Cfg::STAGE, C = 64;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bf16 *sStage = (bf16 *)smem_raw;     /* stage x: sStage + x ST: K~, V, W, U */
	bf16 *sQ = sStage + 2 * ST;          /* NB 64 x D */
	bf16 *sZ = sQ + NB * C * D;          /* NB x 64 x 64 */
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int T = s.T, H = s.H, K = s.K, N = s.N;
	const int m0 = (gridDim.x - 1 - blockIdx.x) * NB, h = blockIdx.y, b = blockIdx.z;
	const int g = h / (H / K);
	const int mtop = min(m0 + NB, N) - 1; /* the highest block of the tile */
	const int64_t ldq = (int64_t)H * D, ldk = (int64_t)K * D;
	const bf16 *qb = q + (int64_t)b * T * ldq + (int64_t)h * D;
	const bf16 *kb = k + (int64_t)b * T * ldk + (int64_t)g * D;
	const bf16 *vb = v + (int64_t)b * T * ldk + (int64_t)g * D;
	const bf16 *wb = w + (int64_t)b * T * ldk + (int64_t)g * D;
	const bf16 *ktb = kt16 + ((int64_t)b * K + g) * T * D;
	const bf16 *ub = u16 + ((int64_t)b * K + g) * T * D;
	const float scale2 = scale * LOG2E;

	/* the diagonal blocks' tiles: block m0 + x into stage x */
	load_tile<D, NB * C, NTH>(sQ, qb, ldq, m0 * C, T, tid);
	for (int x = 0; x < NB && m0 + x < N; x++) {
		const int j0 = (m0 + x) * C;
		bf16 *st = sStage + x * ST;
		load_tile<D, C, NTH>(st, kb, ldk, j0, T, tid);
		load_tile<D, C, NTH>(st + C * D, vb, ldk, j0, T, tid);
		load_tile<D, C, NTH>(st + 2 * C * D, wb, ldk, j0, T, tid);
		load_tile<D, C, NTH>(st + 3 * C * D, ub, D, j0, T, tid);
		load_tile<64, C, NTH>(sZ + x * C * C, z16 + (((int64_t)b * K + g) * N + m0 + x) * C * C,
				      C, 0, C, tid);
	}
	cp_commit();

	const int mw = m0 + warp / 4;               /* this warp's block */
	const bool live = mw < N;
	const int cm = live ? min(C, T - mw * C) : 0;
	const int il_lo = (warp % 4) * 16 + (lane >> 2), il_hi = il_lo + 8; /* rows in the block */
	const int i_lo = mw * C + il_lo, i_hi = mw * C + il_hi;
	const int c2 = (lane & 3) << 1; /* this thread's first column of an n8 tile */
	const float *G = s.g ? s.g + ((int64_t)b * H + h) * T : nullptr;
	const float g_lo = G && il_lo < cm ? G[i_lo] : 0.f, g_hi = G && il_hi < cm ? G[i_hi] : 0.f;

	float qt[D / 8][4], o[D / 8][4];
	float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;
	cp_wait<0>();
	__syncthreads();
	if (live) {
		const bf16 *tK = sStage + (warp / 4) * ST, *tV = tK + C * D, *tW = tV + C * D;
		const bf16 *tU = tW + C * D, *tZ = sZ + (warp / 4) * C * C;
		uint32_t xa[4][4]; /* -X as A operands */
		{
			float x[8][4];
#pragma unroll
			for (int n = 0; n < 8; n++)
				x[n][0] = x[n][1] = x[n][2] = x[n][3] = 0.f;
#pragma unroll
			for (int kk = 0; kk < D / 16; kk++) {
				uint32_t af[4];
				ld_a<D>(af, sQ, warp * 16, kk * 16, lane);
				mm_nk<D, 8>(x, af, tW, kk * 16, lane);
			}
			/* X = tril(Q Wᵀ), the diagonal kept */
#pragma unroll
			for (int n = 0; n < 8; n++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					if (n * 8 + c2 + (e & 1) > (e < 2 ? il_lo : il_hi))
						x[n][e] = 0.f;
#pragma unroll
			for (int kk = 0; kk < 4; kk++)
				c_to_a(xa[kk], x[2 * kk], x[2 * kk + 1], -1.f);
		}
		/* A = Q Kᵀ - X Z, Q~ = Q - X U */
		float a[8][4];
#pragma unroll
		for (int n = 0; n < 8; n++)
			a[n][0] = a[n][1] = a[n][2] = a[n][3] = 0.f;
#pragma unroll
		for (int kk = 0; kk < D / 16; kk++) {
			uint32_t af[4];
			ld_a<D>(af, sQ, warp * 16, kk * 16, lane);
			mm_nk<D, 8>(a, af, tK, kk * 16, lane);
		}
#pragma unroll
		for (int kk = 0; kk < 4; kk++)
			mm_kn<64, 8>(a, xa[kk], tZ, kk * 16, lane);
		const int tr = warp * 16 + (lane >> 2);
#pragma unroll
		for (int n = 0; n < D / 8; n++) {
			const __nv_bfloat162 lo = *(const __nv_bfloat162 *)(sQ + swz<D>(tr, n * 8) + c2);
			const __nv_bfloat162 hi = *(const __nv_bfloat162 *)(sQ + swz<D>(tr + 8, n * 8) + c2);
			qt[n][0] = __low2float(lo);
			qt[n][1] = __high2float(lo);
			qt[n][2] = __low2float(hi);
			qt[n][3] = __high2float(hi);
		}
#pragma unroll
		for (int kk = 0; kk < 4; kk++)
			mm_kn<D, D / 8>(qt, xa[kk], tU, kk * 16, lane);
		/* for the backward: A (zero past the diagonal and the rows),
		 * and Q~ */
		float *A = s.aloc + hblk(s, b, h, H, mw);
#pragma unroll
		for (int n = 0; n < 8; n++) {
			const int j = n * 8 + c2;
			const bool ok_lo = il_lo < cm, ok_hi = il_hi < cm;
			*(float2 *)(A + il_lo * C + j) = make_float2(ok_lo && j <= il_lo ? a[n][0] : 0.f,
								     ok_lo && j + 1 <= il_lo ? a[n][1] : 0.f);
			*(float2 *)(A + il_hi * C + j) = make_float2(ok_hi && j <= il_hi ? a[n][2] : 0.f,
								     ok_hi && j + 1 <= il_hi ? a[n][3] : 0.f);
		}
		float *Qt = s.qt + hrow(s, b, h, H, mw * C);
#pragma unroll
		for (int n = 0; n < D / 8; n++) {
			if (il_lo < cm)
				*(float2 *)(Qt + il_lo * D + n * 8 + c2) = make_float2(qt[n][0], qt[n][1]);
			if (il_hi < cm)
				*(float2 *)(Qt + il_hi * D + n * 8 + c2) = make_float2(qt[n][2], qt[n][3]);
		}
		/* the diagonal block's logits start the softmax; rows past cm
		 * (zero queries) see finite logits, never stored */
#pragma unroll
		for (int n = 0; n < 8; n++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				const int j = n * 8 + c2 + (e & 1), il = e < 2 ? il_lo : il_hi;
				float sv = a[n][e] * scale2;
				if (G && j < cm)
					sv += ((e < 2 ? g_lo : g_hi) - G[mw * C + j]) * LOG2E;
				a[n][e] = j <= il && j < cm ? sv : -INFINITY;
			}
#pragma unroll
		for (int n = 0; n < D / 8; n++)
			o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
		softmax_step<D>(a, o, m_lo, m_hi, l_lo, l_hi);
#pragma unroll
		for (int kk = 0; kk < 4; kk++) {
			uint32_t pa[4];
			c_to_a(pa, a[2 * kk], a[2 * kk + 1]);
			mm_kn<D, D / 8>(o, pa, tV, kk * 16, lane);
		}
	}
	__syncthreads(); /* the stages are the walk's now */

	/* the walk: key blocks mtop - 1 down to 0 */
	if (mtop > 0) {
		const int j0 = (mtop - 1) * C;
		load_tile<D, C, NTH>(sStage, ktb, D, j0, T, tid);
		load_tile<D, C, NTH>(sStage + C * D, vb, ldk, j0, T, tid);
		load_tile<D, C, NTH>(sStage + 2 * C * D, wb, ldk, j0, T, tid);
		load_tile<D, C, NTH>(sStage + 3 * C * D, ub, D, j0, T, tid);
	}
	cp_commit();
	for (int n = mtop - 1, it = 0; n >= 0; n--, it++) {
		if (n > 0) {
			const int j0 = (n - 1) * C;
			bf16 *st = sStage + ((it + 1) & 1) * ST;
			load_tile<D, C, NTH>(st, ktb, D, j0, T, tid);
			load_tile<D, C, NTH>(st + C * D, vb, ldk, j0, T, tid);
			load_tile<D, C, NTH>(st + 2 * C * D, wb, ldk, j0, T, tid);
			load_tile<D, C, NTH>(st + 3 * C * D, ub, D, j0, T, tid);
		}
		cp_commit();
		cp_wait<1>();
		__syncthreads();
		if (live && n < mw) {
			const bf16 *cK = sStage + (it & 1) * ST, *cV = cK + C * D, *cW = cV + C * D;
			const bf16 *cU = cW + C * D;
			float sc[8][4];
#pragma unroll
			for (int nn = 0; nn < 8; nn++)
				sc[nn][0] = sc[nn][1] = sc[nn][2] = sc[nn][3] = 0.f;
#pragma unroll
			for (int kk = 0; kk < D / 16; kk++) {
				uint32_t af[4];
				c_to_a(af, qt[2 * kk], qt[2 * kk + 1]);
				mm_nk<D, 8>(sc, af, cK, kk * 16, lane);
			}
#pragma unroll
			for (int nn = 0; nn < 8; nn++) {
				const int j = n * C + nn * 8 + c2;
				const float gj0 = G ? G[j] : 0.f, gj1 = G ? G[j + 1] : 0.f;
				sc[nn][0] = sc[nn][0] * scale2 + (g_lo - gj0) * LOG2E;
				sc[nn][1] = sc[nn][1] * scale2 + (g_lo - gj1) * LOG2E;
				sc[nn][2] = sc[nn][2] * scale2 + (g_hi - gj0) * LOG2E;
				sc[nn][3] = sc[nn][3] * scale2 + (g_hi - gj1) * LOG2E;
			}
			softmax_step<D>(sc, o, m_lo, m_hi, l_lo, l_hi);
#pragma unroll
			for (int kk = 0; kk < 4; kk++) {
				uint32_t pa[4];
				c_to_a(pa, sc[2 * kk], sc[2 * kk + 1]);
				mm_kn<D, D / 8>(o, pa, cV, kk * 16, lane);
			}
			if (n > 0) {
				/* Q~ -= (Q~ W_nᵀ) U_n */
				float x[8][4];
#pragma unroll
				for (int nn = 0; nn < 8; nn++)
					x[nn][0] = x[nn][1] = x[nn][2] = x[nn][3] = 0.f;
#pragma unroll
				for (int kk = 0; kk < D / 16; kk++) {
					uint32_t af[4];
					c_to_a(af, qt[2 * kk], qt[2 * kk + 1]);
					mm_nk<D, 8>(x, af, cW, kk * 16, lane);
				}
#pragma unroll
				for (int kk = 0; kk < 4; kk++) {
					uint32_t xa[4];
					c_to_a(xa, x[2 * kk], x[2 * kk + 1], -1.f);
					mm_kn<D, D / 8>(qt, xa, cU, kk * 16, lane);
				}
			}
		}
		__syncthreads(); /* the next loads overwrite this stage */
	}
	cp_wait<0>();
	if (!live)
		return;
	l_lo += __shfl_xor_sync(FULL, l_lo, 1);
	l_lo += __shfl_xor_sync(FULL, l_lo, 2);
	l_hi += __shfl_xor_sync(FULL, l_hi, 1);
	l_hi += __shfl_xor_sync(FULL, l_hi, 2);
	const float inv_lo = 1.f / l_lo, inv_hi = 1.f / l_hi;
	bf16 *ob = out + (int64_t)b * T * ldq + (int64_t)h * D + c2;
#pragma unroll
	for (int n = 0; n < D / 8; n++) {
		if (il_lo < cm)
			*(__nv_bfloat162 *)(ob + i_lo * ldq + n * 8) =
				__floats2bfloat162_rn(o[n][0] * inv_lo, o[n][1] * inv_lo);
		if (il_hi < cm)
			*(__nv_bfloat162 *)(ob + i_hi * ldq + n * 8) =
				__floats2bfloat162_rn(o[n][2] * inv_hi, o[n][3] * inv_hi);
	}
	if ((lane & 3) == 0) {
		float *L = s.lse + ((int64_t)b * H + h) * T;
		if (il_lo < cm)
			L[i_lo] = (m_lo + log2f(l_lo)) * LN2;
		if (il_hi < cm)
			L[i_hi] = (m_hi + log2f(l_hi)) * LN2;
	}
}
#endif

/* ------------------------------------------------------------ backward */

template <class E>
__global__ void __launch_bounds__(NT) delta_kernel(pws s, const E *dout, const E *out)
{
	const int64_t rowi = (int64_t)blockIdx.x * (NT / 32) + threadIdx.x / 32;
	const int lane = threadIdx.x % 32;
	if (rowi >= (int64_t)s.B * s.T * s.H)
		return;
	float a = 0.f;
	for (int d = lane; d < s.D; d += 32)
		a += tof(dout[rowi * s.D + d]) * tof(out[rowi * s.D + d]);
	a = warp_sum(a);
	/* rowi = (b T + i) H + h */
	const int h = (int)(rowi % s.H), i = (int)((rowi / s.H) % s.T), b = (int)(rowi / s.H / s.T);
	if (lane == 0)
		s.delta[((int64_t)b * s.H + h) * s.T + i] = a;
}

/* P = exp(S - lse) into S and dS = P (dP - delta) into dP over (C,C);
 * zero outside (cm, cn). lse and delta are the rows' (smem, C). */
static __device__ void probs(float *S, float *dP, const float *L, const float *dl, int C, int cm,
			     int cn)
{
	for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x) {
		const int i = idx / C, j = idx % C;
		float p = 0.f, ds = 0.f;
		if (i < cm && j < cn) {
			p = expf(S[idx] - L[i]);
			ds = p * (dP[idx] - dl[i]);
		}
		S[idx] = p;
		dP[idx] = ds;
	}
}

/* smem: level, A, tile, dO (C,D); S, dP, X (C,C); lse, delta, dgr (C);
 * then, with TC, the staging of tmm at a 128-byte boundary. */
template <class E, bool TC>
__global__ void __launch_bounds__(NT) query_kernel(pws s, const E *dout, const E *v, const E *w,
						   float scale)
{
	extern __shared__ __align__(128) float sm[];
	const int m = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
	const int C = s.C, D = s.D, H = s.H, K = s.K, g = h / (H / K), cm = rows_of(s, m);
	const int i0 = m * C;
	float *dQt = s.dqt + hrow(s, b, h, H, i0);
	float *dgr = s.dgr + ((int64_t)b * H + h) * s.T + i0;
	if (m == 0) {
		for (int idx = threadIdx.x; idx < cm * D; idx += blockDim.x)
			dQt[idx] = 0.f;
		for (int r = threadIdx.x; r < cm; r += blockDim.x)
			dgr[r] = 0.f;
		return;
	}
	float *sL = sm, *sA = sL + C * D, *sT = sA + C * D, *sO = sT + C * D, *sS = sO + C * D;
	float *sP = sS + C * C, *sX = sP + C * C, *sl = sX + C * C, *sd = sl + C, *sg = sd + C;
	unsigned char *stage = (unsigned char *)(sm + ((4 * C * D + 3 * C * C + 3 * C + 31) & ~31));
	load_rows(sL, s.qt + hrow(s, b, h, H, i0), D, cm, C, D);
	__syncthreads();
	store_rows(s.lv + lvat(s, b, h, m, m - 1), sL, cm, D);
	for (int n = m - 1; n > 0; n--) {
		const int cn = rows_of(s, n), j0 = n * C;
		load_rows(sT, w + row(s, b, j0, g, K), (int64_t)K * D, cn, C, D);
		__syncthreads();
		mmul<TC, false, true>(sX, C, sL, D, sT, D, cm, cn, D, 1.f, 0.f, stage);
		__syncthreads();
		load_rows(sT, s.u + hrow(s, b, g, K, j0), D, cn, C, D);
		__syncthreads();
		mmul<TC, false, false>(sL, D, sX, C, sT, D, cm, D, cn, -1.f, 1.f, stage);
		__syncthreads();
		store_rows(s.lv + lvat(s, b, h, m, n - 1), sL, cm, D);
	}
	load_rows(sO, dout + row(s, b, i0, h, H), (int64_t)H * D, cm, C, D);
	for (int r = threadIdx.x; r < C; r += blockDim.x) {
		sl[r] = r < cm ? s.lse[((int64_t)b * H + h) * s.T + i0 + r] : 0.f;
		sd[r] = r < cm ? s.delta[((int64_t)b * H + h) * s.T + i0 + r] : 0.f;
		sg[r] = 0.f;
	}
	zero(sA, C * D);
	__syncthreads();
	for (int n = 0; n < m; n++) {
		const int cn = rows_of(s, n), j0 = n * C;
		if (n > 0) {
			/* A, the adjoint of level n-1 = lv - (lv W_nᵀ) U_n, back
			 * to level n: A - (A U_nᵀ) W_n */
			store_rows(s.adj + lvat(s, b, h, m, n), sA, cm, D);
			load_rows(sT, s.u + hrow(s, b, g, K, j0), D, cn, C, D);
			__syncthreads();
			mmul<TC, false, true>(sX, C, sA, D, sT, D, cm, cn, D, 1.f, 0.f, stage);
			__syncthreads();
			load_rows(sT, w + row(s, b, j0, g, K), (int64_t)K * D, cn, C, D);
			__syncthreads();
			mmul<TC, false, false>(sA, D, sX, C, sT, D, cm, D, cn, -1.f, 1.f, stage);
			__syncthreads();
		}
		load_rows(sL, s.lv + lvat(s, b, h, m, n), D, cm, C, D);
		load_rows(sT, v + row(s, b, j0, g, K), (int64_t)K * D, cn, C, D);
		__syncthreads();
		mmul<TC, false, true>(sP, C, sO, D, sT, D, cm, cn, D, 1.f, 0.f, stage);
		__syncthreads();
		load_rows(sT, s.kt + hrow(s, b, g, K, j0), D, cn, C, D);
		__syncthreads();
		mmul<TC, false, true>(sS, C, sL, D, sT, D, cm, cn, D, scale, 0.f, stage);
		__syncthreads();
		fix_logits(s, sS, b, h, m, n);
		__syncthreads();
		probs(sS, sP, sl, sd, C, cm, cn);
		__syncthreads();
		for (int r = threadIdx.x; r < cm; r += blockDim.x) {
			float a = 0.f;
			for (int j = 0; j < cn; j++)
				a += sP[r * C + j];
			sg[r] += a;
		}
		mmul<TC, false, false>(sA, D, sP, C, sT, D, cm, D, cn, scale, 1.f, stage);
		__syncthreads();
	}
	store_rows(dQt, sA, cm, D);
	for (int r = threadIdx.x; r < cm; r += blockDim.x)
		dgr[r] = sg[r];
}

#ifndef LMK_PATH_EMU
typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> facc;

/* The key pass's accumulators on the tensor cores: f += alpha op(A)ᵀ Bm,
 * A (cm, cn) with ld C, Bm (cm, D) with ld D, float32 in shared memory,
 * staged as bf16 sa (Cp, Kp) = alpha Aᵀ and sb (Kp, D), zero-padded to
 * multiples of 16; warp w owns the 16x16 tiles w + 8 e (e < 4) of the
 * (Cp, D) result, the same tiles at every call of a block. */
static __device__ void tacc(facc (&f)[4], const float *A, float alpha, const float *Bm, int cm,
			    int cn, int C, int D, bf16 *sa, bf16 *sb)
{
	using namespace nvcuda;
	const int Cp = (cn + 15) & ~15, Kp = (cm + 15) & ~15;
	for (int idx = threadIdx.x; idx < Cp * Kp; idx += blockDim.x) {
		const int j = idx / Kp, i = idx % Kp;
		sa[idx] = __float2bfloat16_rn(j < cn && i < cm ? alpha * A[i * C + j] : 0.f);
	}
	for (int idx = threadIdx.x; idx < Kp * D; idx += blockDim.x)
		sb[idx] = __float2bfloat16_rn(idx / D < cm ? Bm[idx] : 0.f);
	__syncthreads();
	const int warp = threadIdx.x / 32, td = D / 16, nt = (Cp / 16) * td;
#pragma unroll
	for (int e = 0; e < 4; e++) {
		const int t = warp + 8 * e;
		if (t < nt) {
			const int tj = t / td, tc = t % td;
			for (int kk = 0; kk < Kp; kk += 16) {
				wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
				wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
				wmma::load_matrix_sync(fa, sa + tj * 16 * Kp + kk, Kp);
				wmma::load_matrix_sync(fb, sb + kk * D + tc * 16, D);
				wmma::mma_sync(f[e], fa, fb, f[e]);
			}
		}
	}
	__syncthreads();
}

/* Each warp's tiles of f, rows < cn, through its 16x16 float tile st
 * (st + warp * 256), to put(j, d, value). */
template <class F>
static __device__ void tacc_out(facc (&f)[4], int cn, int D, float *st, F put)
{
	using namespace nvcuda;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, td = D / 16;
	const int nt = (((cn + 15) & ~15) / 16) * td;
	float *t = st + warp * 256;
#pragma unroll
	for (int e = 0; e < 4; e++) {
		const int tl = warp + 8 * e;
		if (tl < nt) {
			wmma::store_matrix_sync(t, f[e], 16, wmma::mem_row_major);
			__syncwarp();
			for (int x = lane; x < 256; x += 32) {
				const int j = (tl / td) * 16 + x / 16, d = (tl % td) * 16 + x % 16;
				if (j < cn)
					put(j, d, t[x]);
			}
			__syncwarp();
		}
	}
}
#endif

/* tacc stages (64, 64) and (64, 128) bf16 tiles, inside TC_BYTES. */

/* smem: level, dO, adjoint, tile (C,D); S, dP (C,C), later X, Y; lse,
 * delta, dgc (C); then, with TC, the staging of tmm and tacc at a 128-byte
 * boundary.
 * Accumulators dK~, dU, dW, dV of key block n in registers: per-thread
 * elements, or with TC wmma fragments of the warps' tiles. */
template <class E, bool TC>
__global__ void __launch_bounds__(NT) key_kernel(pws s, gacc dv, const E *dout, const E *v,
						 const E *w, float scale)
{
	extern __shared__ __align__(128) float sm[];
	const int n = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
	const int C = s.C, D = s.D, H = s.H, K = s.K, N = s.N, rep = H / K, cn = rows_of(s, n);
	const int j0 = n * C;
	float *sL = sm, *sO = sL + C * D, *sA = sO + C * D, *sT = sA + C * D, *sS = sT + C * D;
	/* X and Y are made after P and dS are spent: they take their places */
	float *sP = sS + C * C, *sX = sS, *sY = sP, *sl = sP + C * C, *sd = sl + C, *sg = sd + C;
	unsigned char *stage = (unsigned char *)(sm + ((4 * C * D + 2 * C * C + 3 * C + 31) & ~31));
	constexpr int NE = TC ? 1 : MAXE;
	float akt[NE], au[NE], aw[NE], av[NE];
#pragma unroll
	for (int e = 0; e < NE; e++)
		akt[e] = au[e] = aw[e] = av[e] = 0.f;
#ifndef LMK_PATH_EMU
	bf16 *sa = (bf16 *)stage, *sb = sa + 64 * 64;
	facc fkt[4], fu[4], fw[4], fv[4];
	if constexpr (TC)
		for (int e = 0; e < 4; e++) {
			nvcuda::wmma::fill_fragment(fkt[e], 0.f);
			nvcuda::wmma::fill_fragment(fu[e], 0.f);
			nvcuda::wmma::fill_fragment(fw[e], 0.f);
			nvcuda::wmma::fill_fragment(fv[e], 0.f);
		}
#endif
	for (int h = g * rep; h < (g + 1) * rep; h++) {
		for (int r = threadIdx.x; r < C; r += blockDim.x)
			sg[r] = 0.f;
		for (int m = n; m < N; m++) {
			const int cm = rows_of(s, m), i0 = m * C;
			__syncthreads();
			load_rows(sO, dout + row(s, b, i0, h, H), (int64_t)H * D, cm, C, D);
			for (int r = threadIdx.x; r < C; r += blockDim.x) {
				sl[r] = r < cm ? s.lse[((int64_t)b * H + h) * s.T + i0 + r] : 0.f;
				sd[r] = r < cm ? s.delta[((int64_t)b * H + h) * s.T + i0 + r] : 0.f;
			}
			if (m > n)
				load_rows(sL, s.lv + lvat(s, b, h, m, n), D, cm, C, D);
			load_rows(sT, v + row(s, b, j0, g, K), (int64_t)K * D, cn, C, D);
			__syncthreads();
			mmul<TC, false, true>(sP, C, sO, D, sT, D, cm, cn, D, 1.f, 0.f, stage);
			__syncthreads();
			if (m == n) {
				diag_logits(s, sS, b, h, m, scale);
			} else {
				load_rows(sT, s.kt + hrow(s, b, g, K, j0), D, cn, C, D);
				__syncthreads();
				mmul<TC, false, true>(sS, C, sL, D, sT, D, cm, cn, D, scale, 0.f, stage);
				__syncthreads();
				fix_logits(s, sS, b, h, m, n);
			}
			__syncthreads();
			probs(sS, sP, sl, sd, C, cm, cn);
			__syncthreads();
			for (int t = threadIdx.x; t < C; t += blockDim.x) {
				float a = 0.f;
				for (int i = 0; i < cm; i++)
					a -= sP[i * C + t];
				if (m == n)
					for (int j = 0; j < cn; j++)
						a += sP[t * C + j];
				sg[t] += a;
			}
			if constexpr (TC) {
#ifndef LMK_PATH_EMU
				tacc(fv, sS, 1.f, sO, cm, cn, C, D, sa, sb);
				if (m > n)
					tacc(fkt, sP, scale, sL, cm, cn, C, D, sa, sb);
#endif
			} else {
#pragma unroll
				for (int e = 0; e < NE; e++) {
					const int idx = threadIdx.x + e * NT, j = idx / D, d = idx % D;
					if (idx < cn * D) {
						float a = 0.f, bk = 0.f;
						for (int i = 0; i < cm; i++) {
							a += sS[i * C + j] * sO[i * D + d];
							bk += sP[i * C + j] * sL[i * D + d];
						}
						av[e] += a;
						if (m > n)
							akt[e] += scale * bk;
					}
				}
			}
			if (m == n) {
				float *dA = s.daloc + hblk(s, b, h, H, n);
				for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x) {
					const int i = idx / C, j = idx % C;
					dA[idx] = j <= i ? scale * sP[idx] : 0.f;
				}
				continue;
			}
			if (n == 0)
				continue;
			/* level n-1 = lv - X U_n with X = lv W_nᵀ; A its adjoint */
			__syncthreads();
			load_rows(sT, w + row(s, b, j0, g, K), (int64_t)K * D, cn, C, D);
			load_rows(sA, s.adj + lvat(s, b, h, m, n), D, cm, C, D);
			__syncthreads();
			mmul<TC, false, true>(sX, C, sL, D, sT, D, cm, cn, D, 1.f, 0.f, stage);
			__syncthreads();
			load_rows(sT, s.u + hrow(s, b, g, K, j0), D, cn, C, D);
			__syncthreads();
			mmul<TC, false, true>(sY, C, sA, D, sT, D, cm, cn, D, 1.f, 0.f, stage);
			__syncthreads();
			if constexpr (TC) {
#ifndef LMK_PATH_EMU
				tacc(fu, sX, -1.f, sA, cm, cn, C, D, sa, sb);
				tacc(fw, sY, -1.f, sL, cm, cn, C, D, sa, sb);
#endif
			} else {
#pragma unroll
				for (int e = 0; e < NE; e++) {
					const int idx = threadIdx.x + e * NT, j = idx / D, d = idx % D;
					if (idx < cn * D) {
						float a = 0.f, c2 = 0.f;
						for (int i = 0; i < cm; i++) {
							a += sX[i * C + j] * sA[i * D + d];
							c2 += sY[i * C + j] * sL[i * D + d];
						}
						au[e] -= a;
						aw[e] -= c2;
					}
				}
			}
		}
		__syncthreads();
		float *dgc = s.dgc + ((int64_t)b * H + h) * s.T + j0;
		for (int t = threadIdx.x; t < cn; t += blockDim.x)
			dgc[t] = sg[t];
	}
	float *dKt = s.dkt + hrow(s, b, g, K, j0), *dU = s.du + hrow(s, b, g, K, j0);
	float *dW = s.dwp + hrow(s, b, g, K, j0);
	if constexpr (TC) {
#ifndef LMK_PATH_EMU
		float *st = (float *)sa; /* the staging is free now: 8 tiles of 16x16 */
		tacc_out(fkt, cn, D, st, [&](int j, int d, float x) { dKt[j * D + d] = x; });
		tacc_out(fu, cn, D, st, [&](int j, int d, float x) { dU[j * D + d] = x; });
		tacc_out(fw, cn, D, st, [&](int j, int d, float x) { dW[j * D + d] = x; });
		if (dv.p)
			tacc_out(fv, cn, D, st, [&](int j, int d, float x) {
				gadd(dv, row(s, b, j0 + j, g, K) + d, x);
			});
#endif
	} else {
#pragma unroll
		for (int e = 0; e < NE; e++) {
			const int idx = threadIdx.x + e * NT, j = idx / D, d = idx % D;
			if (idx < cn * D) {
				dKt[idx] = akt[e];
				dU[idx] = au[e];
				dW[idx] = aw[e];
				if (dv.p)
					gadd(dv, row(s, b, j0 + j, g, K) + d, av[e]);
			}
		}
	}
}

#ifndef LMK_PATH_EMU
/* ------------------------------------------------ mma backward (BF16) */

/* The backward's O(T²) passes for the same contexts as fwd_mma, in its
 * style. The levels and adjoints of the query walk go to lv and adj in
 * bf16 (row-major (C, D) per pair of blocks, all C rows, zeros past T, in
 * the first half of each float32 slot): bf16 is what the products round
 * them to anyway. K~ and U come in bf16 from the launcher (kt16, u16). */

/* bwd_q_mma's stage: K~, V, W, U, and the levels of its two query blocks
 * (bf16 elements). */
template <int D> static constexpr int BQ_STAGE = 6 * 64 * D;

/* This thread's rows r, r + 8 of x (16 x D, C layout) to a bf16 row-major
 * (., D) matrix. */
template <int D>
static __device__ __forceinline__ void st_rows16(bf16 *dst, const float (&x)[D / 8][4], int r, int c2)
{
#pragma unroll
	for (int n = 0; n < D / 8; n++) {
		*(__nv_bfloat162 *)(dst + r * D + n * 8 + c2) = __floats2bfloat162_rn(x[n][0], x[n][1]);
		*(__nv_bfloat162 *)(dst + (r + 8) * D + n * 8 + c2) =
			__floats2bfloat162_rn(x[n][2], x[n][3]);
	}
}

/* query_kernel's work: per warp, 16 rows of a query block m; down the walk
 * storing the levels lv(m, n) (from the forward's Q~), then up it with the
 * adjoint A of the level in registers, storing adj(m, n), to dQ~ and the
 * rows' part of dg. Tiles as in fwd_mma (K~, V, W, U per stage). */
/* bwd_q_mma: two query blocks per thread block of 8 warps. */
struct PqCfg {
	static constexpr int NB = 2, NTH = 256;
};

template <int D>
__global__ void __launch_bounds__(PqCfg::NTH, 1)
	bwd_q_mma(pws s, const bf16 *__restrict__ dout, const bf16 *__restrict__ v,
		  const bf16 *__restrict__ w, const bf16 *__restrict__ kt16,
		  const bf16 *__restrict__ u16, float scale)
{
	constexpr int NB = PqCfg::NB, NTH = PqCfg::NTH, C = 64, ST = BQ_STAGE<D>;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bf16 *sStage = (bf16 *)smem_raw; /* stage x: sStage + x ST: K~, V, W, U, L of each block */
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int T = s.T, H = s.H, K = s.K, N = s.N;
	const int m0 = (gridDim.x - 1 - blockIdx.x) * NB, h = blockIdx.y, b = blockIdx.z;
	const int g = h / (H / K);
	const int mtop = min(m0 + NB, N) - 1;
	const int64_t ldq = (int64_t)H * D, ldk = (int64_t)K * D;
	const bf16 *dob = dout + (int64_t)b * T * ldq + (int64_t)h * D;
	const bf16 *vb = v + (int64_t)b * T * ldk + (int64_t)g * D;
	const bf16 *wb = w + (int64_t)b * T * ldk + (int64_t)g * D;
	const bf16 *ktb = kt16 + ((int64_t)b * K + g) * T * D;
	const bf16 *ub = u16 + ((int64_t)b * K + g) * T * D;
	bf16 *lv16 = (bf16 *)s.lv, *adj16 = (bf16 *)s.adj;
	const float scale2 = scale * LOG2E;

	const int mw = m0 + warp / 4;
	const bool live = mw < N;
	const int cm = live ? min(C, T - mw * C) : 0;
	const int il_lo = (warp % 4) * 16 + (lane >> 2), il_hi = il_lo + 8;
	const int i_lo = mw * C + il_lo, i_hi = mw * C + il_hi;
	const int c2 = (lane & 3) << 1;
	const bool ok_lo = il_lo < cm, ok_hi = il_hi < cm;

	/* down: the levels */
	float x[D / 8][4];
	if (live) {
		const float *Qt = s.qt + hrow(s, b, h, H, mw * C);
#pragma unroll
		for (int n = 0; n < D / 8; n++) {
			const float2 lo = ok_lo ? *(const float2 *)(Qt + il_lo * D + n * 8 + c2)
						: make_float2(0.f, 0.f);
			const float2 hi = ok_hi ? *(const float2 *)(Qt + il_hi * D + n * 8 + c2)
						: make_float2(0.f, 0.f);
			x[n][0] = lo.x, x[n][1] = lo.y, x[n][2] = hi.x, x[n][3] = hi.y;
		}
		if (mw > 0)
			st_rows16<D>(lv16 + lvat(s, b, h, mw, mw - 1), x, il_lo, c2);
	}
	if (mtop > 1) {
		load_tile<D, C, NTH>(sStage + 2 * C * D, wb, ldk, (mtop - 1) * C, T, tid);
		load_tile<D, C, NTH>(sStage + 3 * C * D, ub, D, (mtop - 1) * C, T, tid);
	}
	cp_commit();
	for (int n = mtop - 1, it = 0; n >= 1; n--, it++) {
		if (n > 1) {
			bf16 *st = sStage + ((it + 1) & 1) * ST;
			load_tile<D, C, NTH>(st + 2 * C * D, wb, ldk, (n - 1) * C, T, tid);
			load_tile<D, C, NTH>(st + 3 * C * D, ub, D, (n - 1) * C, T, tid);
		}
		cp_commit();
		cp_wait<1>();
		__syncthreads();
		if (live && n < mw) {
			const bf16 *cW = sStage + (it & 1) * ST + 2 * C * D, *cU = cW + C * D;
			float xw[8][4];
#pragma unroll
			for (int nn = 0; nn < 8; nn++)
				xw[nn][0] = xw[nn][1] = xw[nn][2] = xw[nn][3] = 0.f;
#pragma unroll
			for (int kk = 0; kk < D / 16; kk++) {
				uint32_t af[4];
				c_to_a(af, x[2 * kk], x[2 * kk + 1]);
				mm_nk<D, 8>(xw, af, cW, kk * 16, lane);
			}
#pragma unroll
			for (int kk = 0; kk < 4; kk++) {
				uint32_t xa[4];
				c_to_a(xa, xw[2 * kk], xw[2 * kk + 1], -1.f);
				mm_kn<D, D / 8>(x, xa, cU, kk * 16, lane);
			}
			st_rows16<D>(lv16 + lvat(s, b, h, mw, n - 1), x, il_lo, c2);
		}
		__syncthreads();
	}
	cp_wait<0>();
	__syncthreads(); /* the levels are written (each thread reads its own) */

	/* up: x is now the adjoint A */
#pragma unroll
	for (int n = 0; n < D / 8; n++)
		x[n][0] = x[n][1] = x[n][2] = x[n][3] = 0.f;
	const float *G = s.g ? s.g + ((int64_t)b * H + h) * T : nullptr;
	const float *Lse = s.lse + ((int64_t)b * H + h) * T, *Dl = s.delta + ((int64_t)b * H + h) * T;
	const float g_lo = G && ok_lo ? G[i_lo] : 0.f, g_hi = G && ok_hi ? G[i_hi] : 0.f;
	const float l_lo = ok_lo ? Lse[i_lo] * LOG2E : 0.f, l_hi = ok_hi ? Lse[i_hi] * LOG2E : 0.f;
	const float d_lo = ok_lo ? Dl[i_lo] : 0.f, d_hi = ok_hi ? Dl[i_hi] : 0.f;
	float gr_lo = 0.f, gr_hi = 0.f;
	bf16 *sdO = sStage + 2 * ST; /* the tile's dO rows, (NB 64, D) */
	load_tile<D, NB * C, NTH>(sdO, dob, ldq, m0 * C, T, tid);
	/* the levels of key block nn of the tile's query blocks */
	auto load_levels = [&](bf16 *st, int nn) {
		for (int xb = 0; xb < NB; xb++)
			if (nn < m0 + xb && m0 + xb < N)
				load_tile<D, C, NTH>(st + (4 + xb) * C * D,
						     lv16 + lvat(s, b, h, m0 + xb, nn), D, 0, C, tid);
	};
	if (mtop > 0) {
		load_tile<D, C, NTH>(sStage, ktb, D, 0, T, tid);
		load_tile<D, C, NTH>(sStage + C * D, vb, ldk, 0, T, tid);
		load_levels(sStage, 0);
	}
	cp_commit();
	for (int n = 0; n < mtop; n++) {
		if (n + 1 < mtop) {
			const int j0 = (n + 1) * C;
			bf16 *st = sStage + ((n + 1) & 1) * ST;
			load_tile<D, C, NTH>(st, ktb, D, j0, T, tid);
			load_tile<D, C, NTH>(st + C * D, vb, ldk, j0, T, tid);
			load_tile<D, C, NTH>(st + 2 * C * D, wb, ldk, j0, T, tid);
			load_tile<D, C, NTH>(st + 3 * C * D, ub, D, j0, T, tid);
			load_levels(st, n + 1);
		}
		cp_commit();
		cp_wait<1>();
		__syncthreads();
		if (live && n < mw) {
			const bf16 *cK = sStage + (n & 1) * ST, *cV = cK + C * D, *cW = cV + C * D;
			const bf16 *cU = cW + C * D;
			if (n > 0) {
				/* A, the adjoint of level n-1 = L - (L W_nᵀ) U_n, back
				 * to level n: A - (A U_nᵀ) W_n */
				st_rows16<D>(adj16 + lvat(s, b, h, mw, n), x, il_lo, c2);
				float y[8][4];
#pragma unroll
				for (int nn = 0; nn < 8; nn++)
					y[nn][0] = y[nn][1] = y[nn][2] = y[nn][3] = 0.f;
#pragma unroll
				for (int kk = 0; kk < D / 16; kk++) {
					uint32_t af[4];
					c_to_a(af, x[2 * kk], x[2 * kk + 1]);
					mm_nk<D, 8>(y, af, cU, kk * 16, lane);
				}
#pragma unroll
				for (int kk = 0; kk < 4; kk++) {
					uint32_t ya[4];
					c_to_a(ya, y[2 * kk], y[2 * kk + 1], -1.f);
					mm_kn<D, D / 8>(x, ya, cW, kk * 16, lane);
				}
			}
			float sc[8][4], dp[8][4];
#pragma unroll
			for (int nn = 0; nn < 8; nn++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					sc[nn][e] = dp[nn][e] = 0.f;
			const bf16 *cL = cK + (4 + warp / 4) * C * D;
#pragma unroll
			for (int kk = 0; kk < D / 16; kk++) {
				uint32_t af[4];
				ld_a<D>(af, cL, (warp % 4) * 16, kk * 16, lane);
				mm_nk<D, 8>(sc, af, cK, kk * 16, lane);
				uint32_t of[4];
				ld_a<D>(of, sdO, warp * 16, kk * 16, lane);
				mm_nk<D, 8>(dp, of, cV, kk * 16, lane);
			}
#pragma unroll
			for (int nn = 0; nn < 8; nn++) {
				const int j = n * C + nn * 8 + c2;
				const float gj0 = G ? G[j] : 0.f, gj1 = G ? G[j + 1] : 0.f;
				const float p0 = ok_lo ? exp2f(sc[nn][0] * scale2 + (g_lo - gj0) * LOG2E - l_lo) : 0.f;
				const float p1 = ok_lo ? exp2f(sc[nn][1] * scale2 + (g_lo - gj1) * LOG2E - l_lo) : 0.f;
				const float p2 = ok_hi ? exp2f(sc[nn][2] * scale2 + (g_hi - gj0) * LOG2E - l_hi) : 0.f;
				const float p3 = ok_hi ? exp2f(sc[nn][3] * scale2 + (g_hi - gj1) * LOG2E - l_hi) : 0.f;
				sc[nn][0] = p0 * (dp[nn][0] - d_lo);
				sc[nn][1] = p1 * (dp[nn][1] - d_lo);
				sc[nn][2] = p2 * (dp[nn][2] - d_hi);
				sc[nn][3] = p3 * (dp[nn][3] - d_hi);
				gr_lo += sc[nn][0] + sc[nn][1];
				gr_hi += sc[nn][2] + sc[nn][3];
			}
			/* A += scale dS K~_n */
#pragma unroll
			for (int kk = 0; kk < 4; kk++) {
				uint32_t da[4];
				c_to_a(da, sc[2 * kk], sc[2 * kk + 1], scale);
				mm_kn<D, D / 8>(x, da, cK, kk * 16, lane);
			}
		}
		__syncthreads();
	}
	cp_wait<0>();
	if (!live)
		return;
	float *dQt = s.dqt + hrow(s, b, h, H, mw * C);
#pragma unroll
	for (int n = 0; n < D / 8; n++) {
		if (ok_lo)
			*(float2 *)(dQt + il_lo * D + n * 8 + c2) = make_float2(x[n][0], x[n][1]);
		if (ok_hi)
			*(float2 *)(dQt + il_hi * D + n * 8 + c2) = make_float2(x[n][2], x[n][3]);
	}
	gr_lo += __shfl_xor_sync(FULL, gr_lo, 1);
	gr_lo += __shfl_xor_sync(FULL, gr_lo, 2);
	gr_hi += __shfl_xor_sync(FULL, gr_hi, 1);
	gr_hi += __shfl_xor_sync(FULL, gr_hi, 2);
	if ((lane & 3) == 0) {
		float *dgr = s.dgr + ((int64_t)b * H + h) * T;
		if (ok_lo)
			dgr[i_lo] = gr_lo;
		if (ok_hi)
			dgr[i_hi] = gr_hi;
	}
}

/* key_kernel's work for key block n of key head g, over the query heads of
 * g and the query blocks m >= n, in two launches of two accumulators each
 * (four would not fit the registers at D 128): MODE 0 dV and dK~ (and dg
 * as key, and dA of the diagonal), MODE 1 dU and dW. Each warp owns 16 key
 * rows j and works in the transposed orientation, Sᵀ = K~ Lᵀ, so that Pᵀ
 * and dSᵀ are A operands of dV += Pᵀ dO, dK~ += scale dSᵀ L (MODE 0), and
 * Xᵀ = W Lᵀ, Yᵀ = U Aᵀ those of dU -= Xᵀ A, dW -= Yᵀ L (MODE 1), with
 * L = lv(m, n), A = adj(m, n). Tiles: the block's two (K~, V or W, U),
 * then per (h, m) L and dO (or A) and, MODE 0, the rows' lse, delta, g. */
template <int D> struct PkCfg {
	static constexpr int NTH = 128;
	static constexpr int STAGE = 2 * 64 * D + 3 * 64 * 2; /* bf16 elements */
	static constexpr size_t SMEM = (size_t)(2 * 64 * D + 2 * STAGE) * 2 + 4 * 64 * 4;
};

template <int D, int MODE>
__global__ void __launch_bounds__(128, 2)
	bwd_k_mma(pws s, gacc dv, const bf16 *__restrict__ dout, const bf16 *__restrict__ v,
		  const bf16 *__restrict__ w, const bf16 *__restrict__ kt16,
		  const bf16 *__restrict__ u16, float scale)
{
	using Cfg = PkCfg<D>;
	constexpr int NTH = Cfg::NTH, ST = Cfg::STAGE, C = 64;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bf16 *sA0 = (bf16 *)smem_raw, *sA1 = sA0 + C * D, *sStage = sA1 + C * D;
	float *sred = (float *)(sStage + 2 * ST); /* (4 warps, 64) */
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int T = s.T, H = s.H, K = s.K, N = s.N, rep = H / K;
	const int n = blockIdx.x, g = blockIdx.y, b = blockIdx.z, j0 = n * C;
	const int cn = min(C, T - j0);
	const int64_t ldq = (int64_t)H * D, ldk = (int64_t)K * D;
	const bf16 *lv16 = (const bf16 *)s.lv, *adj16 = (const bf16 *)s.adj;
	const float scale2 = scale * LOG2E;
	const int c2 = (lane & 3) << 1, jl_lo = warp * 16 + (lane >> 2), jl_hi = jl_lo + 8;

	if (MODE == 0) {
		load_tile<D, C, NTH>(sA0, kt16 + ((int64_t)b * K + g) * T * D, D, j0, T, tid);
		load_tile<D, C, NTH>(sA1, v + (int64_t)b * T * ldk + (int64_t)g * D, ldk, j0, T, tid);
	} else {
		load_tile<D, C, NTH>(sA0, w + (int64_t)b * T * ldk + (int64_t)g * D, ldk, j0, T, tid);
		load_tile<D, C, NTH>(sA1, u16 + ((int64_t)b * K + g) * T * D, D, j0, T, tid);
	}
	const int mst = MODE == 0 ? n : n + 1;
	const int per = N - mst, items = MODE == 1 && n == 0 ? 0 : rep * per;
	/* item t: head g rep + t / per, query block mst + t % per */
	auto fetch = [&](int t) {
		const int hh = g * rep + t / per, m = mst + t % per, i0 = m * C;
		bf16 *st = sStage + (t & 1) * ST;
		if (m > n)
			load_tile<D, C, NTH>(st, lv16 + lvat(s, b, hh, m, n), D, 0, C, tid);
		if (MODE == 0) {
			load_tile<D, C, NTH>(st + C * D, dout + (int64_t)b * T * ldq + (int64_t)hh * D,
					     ldq, i0, T, tid);
			float *rows = (float *)(st + 2 * C * D); /* lse, delta, g */
			if (tid < C) {
				const int i = i0 + tid;
				const int64_t o = ((int64_t)b * H + hh) * T + (i < T ? i : 0);
				cp_async4(smem_u32(rows + tid), s.lse + o, i < T);
				cp_async4(smem_u32(rows + C + tid), s.delta + o, i < T);
				if (s.g)
					cp_async4(smem_u32(rows + 2 * C + tid), s.g + o, i < T);
			}
		} else {
			load_tile<D, C, NTH>(st + C * D, adj16 + lvat(s, b, hh, m, n), D, 0, C, tid);
		}
	};
	if (items > 0)
		fetch(0);
	cp_commit();

	float a0[D / 8][4], a1[D / 8][4];
#pragma unroll
	for (int i = 0; i < D / 8; i++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			a0[i][e] = a1[i][e] = 0.f;
	float gc_lo = 0.f, gc_hi = 0.f; /* MODE 0: dg of the rows as keys */
	const float *G = nullptr;
	float gj_lo = 0.f, gj_hi = 0.f;
	for (int t = 0; t < items; t++) {
		const int hh = g * rep + t / per, m = mst + t % per, i0 = m * C;
		const int cm = min(C, T - i0);
		if (t + 1 < items)
			fetch(t + 1);
		cp_commit();
		cp_wait<1>();
		__syncthreads();
		const bf16 *cL = sStage + (t & 1) * ST, *cB = cL + C * D;
		if (MODE == 0) {
			const float *rows = (const float *)(cB + C * D);
			if (m == n) {
				G = s.g ? s.g + ((int64_t)b * H + hh) * T : nullptr;
				gj_lo = G && jl_lo < cn ? G[j0 + jl_lo] : 0.f;
				gj_hi = G && jl_hi < cn ? G[j0 + jl_hi] : 0.f;
			}
			float st_[8][4], dp[8][4];
#pragma unroll
			for (int i = 0; i < 8; i++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					st_[i][e] = dp[i][e] = 0.f;
			if (m > n) {
#pragma unroll
				for (int kk = 0; kk < D / 16; kk++) {
					uint32_t af[4];
					ld_a<D>(af, sA0, warp * 16, kk * 16, lane);
					mm_nk<D, 8>(st_, af, cL, kk * 16, lane);
				}
			} else {
				const float *Al = s.aloc + hblk(s, b, hh, H, n);
#pragma unroll
				for (int i = 0; i < 8; i++)
#pragma unroll
					for (int e = 0; e < 4; e++) {
						const int il = i * 8 + c2 + (e & 1), jl = e < 2 ? jl_lo : jl_hi;
						st_[i][e] = jl <= il ? Al[il * C + jl] : 0.f;
					}
			}
#pragma unroll
			for (int kk = 0; kk < D / 16; kk++) {
				uint32_t af[4];
				ld_a<D>(af, sA1, warp * 16, kk * 16, lane);
				mm_nk<D, 8>(dp, af, cB, kk * 16, lane);
			}
			float cs[8][2]; /* MODE 0 diagonal: column sums of dSᵀ */
#pragma unroll
			for (int i = 0; i < 8; i++) {
				cs[i][0] = cs[i][1] = 0.f;
#pragma unroll
				for (int e = 0; e < 4; e++) {
					const int il = i * 8 + c2 + (e & 1), jl = e < 2 ? jl_lo : jl_hi;
					const bool ok = il < cm && jl < cn && (m > n || jl <= il);
					const float gi = s.g ? rows[2 * C + il] : 0.f;
					const float p = ok ? exp2f(st_[i][e] * scale2 +
								   (gi - (e < 2 ? gj_lo : gj_hi)) * LOG2E -
								   rows[il] * LOG2E)
							   : 0.f;
					const float ds = p * (dp[i][e] - rows[C + il]);
					st_[i][e] = p;
					dp[i][e] = ds;
					if (e < 2)
						gc_lo -= ds;
					else
						gc_hi -= ds;
					cs[i][e & 1] += ds;
				}
			}
			if (m == n) {
				/* dA = scale dS (zero past the diagonal and the rows);
				 * the rows' sums of dS, as queries, through sred */
				float *dA = s.daloc + hblk(s, b, hh, H, n);
#pragma unroll
				for (int i = 0; i < 8; i++)
#pragma unroll
					for (int e = 0; e < 4; e++) {
						const int il = i * 8 + c2 + (e & 1), jl = e < 2 ? jl_lo : jl_hi;
						dA[il * C + jl] = scale * dp[i][e];
					}
#pragma unroll
				for (int i = 0; i < 8; i++)
#pragma unroll
					for (int q = 0; q < 2; q++) {
						float x = cs[i][q];
						x += __shfl_xor_sync(FULL, x, 4);
						x += __shfl_xor_sync(FULL, x, 8);
						x += __shfl_xor_sync(FULL, x, 16);
						if (lane < 4)
							sred[warp * C + i * 8 + c2 + q] = x;
					}
			}
#pragma unroll
			for (int kk = 0; kk < 4; kk++) {
				uint32_t pa[4];
				c_to_a(pa, st_[2 * kk], st_[2 * kk + 1]);
				mm_kn<D, D / 8>(a0, pa, cB, kk * 16, lane);
			}
			if (m > n) {
#pragma unroll
				for (int kk = 0; kk < 4; kk++) {
					uint32_t da[4];
					c_to_a(da, dp[2 * kk], dp[2 * kk + 1], scale);
					mm_kn<D, D / 8>(a1, da, cL, kk * 16, lane);
				}
			}
			if (m == N - 1) {
				/* the head's last block: dg of the rows, as keys and
				 * (the diagonal) as queries */
				__syncthreads();
				float x_lo = gc_lo, x_hi = gc_hi;
				x_lo += __shfl_xor_sync(FULL, x_lo, 1);
				x_lo += __shfl_xor_sync(FULL, x_lo, 2);
				x_hi += __shfl_xor_sync(FULL, x_hi, 1);
				x_hi += __shfl_xor_sync(FULL, x_hi, 2);
				if ((lane & 3) == 0) {
					float *dgc = s.dgc + ((int64_t)b * H + hh) * T + j0;
					if (jl_lo < cn)
						dgc[jl_lo] = x_lo + sred[jl_lo] + sred[C + jl_lo] +
							     sred[2 * C + jl_lo] + sred[3 * C + jl_lo];
					if (jl_hi < cn)
						dgc[jl_hi] = x_hi + sred[jl_hi] + sred[C + jl_hi] +
							     sred[2 * C + jl_hi] + sred[3 * C + jl_hi];
				}
				gc_lo = gc_hi = 0.f;
			}
		} else {
			float xt[8][4], yt[8][4];
#pragma unroll
			for (int i = 0; i < 8; i++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					xt[i][e] = yt[i][e] = 0.f;
#pragma unroll
			for (int kk = 0; kk < D / 16; kk++) {
				uint32_t af[4];
				ld_a<D>(af, sA0, warp * 16, kk * 16, lane);
				mm_nk<D, 8>(xt, af, cL, kk * 16, lane);
				ld_a<D>(af, sA1, warp * 16, kk * 16, lane);
				mm_nk<D, 8>(yt, af, cB, kk * 16, lane);
			}
#pragma unroll
			for (int kk = 0; kk < 4; kk++) {
				uint32_t xa[4], ya[4];
				c_to_a(xa, xt[2 * kk], xt[2 * kk + 1], -1.f);
				mm_kn<D, D / 8>(a0, xa, cB, kk * 16, lane);
				c_to_a(ya, yt[2 * kk], yt[2 * kk + 1], -1.f);
				mm_kn<D, D / 8>(a1, ya, cL, kk * 16, lane);
			}
		}
		__syncthreads();
	}
	cp_wait<0>();
	/* MODE 0: dV (added), dK~; MODE 1: dU, dW (assigned), rows < cn */
	float *o0 = MODE == 0 ? nullptr : s.du + hrow(s, b, g, K, j0);
	float *o1 = MODE == 0 ? s.dkt + hrow(s, b, g, K, j0) : s.dwp + hrow(s, b, g, K, j0);
#pragma unroll
	for (int i = 0; i < D / 8; i++)
#pragma unroll
		for (int hf = 0; hf < 2; hf++) {
			const int jl = jl_lo + hf * 8, d = i * 8 + c2;
			if (jl >= cn)
				continue;
			if (MODE == 0) {
				if (dv.p) {
					gadd(dv, row(s, b, j0 + jl, g, K) + d, a0[i][2 * hf]);
					gadd(dv, row(s, b, j0 + jl, g, K) + d + 1, a0[i][2 * hf + 1]);
				}
			} else {
				*(float2 *)(o0 + jl * D + d) = make_float2(a0[i][2 * hf], a0[i][2 * hf + 1]);
			}
			*(float2 *)(o1 + jl * D + d) = make_float2(a1[i][2 * hf], a1[i][2 * hf + 1]);
		}
}

/* dst = bf16(src), n elements. */
__global__ void to_bf16_kernel(bf16 *dst, const float *src, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		dst[i] = __float2bfloat16_rn(src[i]);
}
#endif

/* smm, or with TC smm3 (AX, BX as there). */
template <bool TC, bool TA, bool TB, bool AX = false, bool BX = false>
static __device__ void bmm(float *Cm, int ldc, const float *A, int lda, const float *Bm, int ldb,
			   int M, int N, int Kk, float alpha, float beta0)
{
#ifndef LMK_PATH_EMU
	if constexpr (TC) {
		smm3<TA, TB, AX, BX>(Cm, ldc, A, lda, Bm, ldb, M, N, Kk, alpha, beta0);
		return;
	}
#endif
	smm<TA, TB>(Cm, ldc, A, lda, Bm, ldb, M, N, Kk, alpha, beta0);
}

/* smem: W, K, Q, dQ (C,D+1); dZ, dT, X1, X2 (C,C+1); beta, dbeta (C). Rows
 * padded by one float (threads reading different rows at one column fall in
 * different banks); U, dA, dK~ and T staged in free tiles where a product
 * reads them. The workspace's dkt, du, dwp rows of this block are this
 * block's alone: they become the accumulators of dK, dU, dW (dkt after its
 * last read as dK~). Every product is a bmm: with TC (BF16, where the
 * forward used the tensor cores) on the tensor cores in split bf16. */
template <class E, bool TC>
__global__ void __launch_bounds__(NT) back_kernel(pws s, gacc dq, gacc dk, gacc dw, gacc dbeta,
						  const E *q, const E *k, const E *w, const E *beta)
{
	extern __shared__ __align__(128) float sm[];
	const int n = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
	const int C = s.C, D = s.D, H = s.H, K = s.K, rep = H / K, c = rows_of(s, n), j0 = n * C;
	const int LD = D + 1, CP = C + 1;
	float *sW = sm, *sK = sW + C * LD, *sQ = sK + C * LD, *sD = sQ + C * LD, *sZd = sD + C * LD;
	float *sTd = sZd + C * CP, *sX1 = sTd + C * CP, *sX2 = sX1 + C * CP, *sb = sX2 + C * CP;
	float *sdb = sb + C;
	const float *Tm = s.tm + hblk(s, b, g, K, n), *Z = s.z + hblk(s, b, g, K, n);
	const float *U = s.u + hrow(s, b, g, K, j0);
	float *dKt = s.dkt + hrow(s, b, g, K, j0), *dU = s.du + hrow(s, b, g, K, j0);
	float *dW = s.dwp + hrow(s, b, g, K, j0);
	for (int idx = threadIdx.x; idx < C * D; idx += blockDim.x) {
		const int r = idx / D, d = idx % D;
		const int64_t o = row(s, b, j0 + r, g, K) + d;
		sW[r * LD + d] = r < c ? tof(w[o]) : 0.f;
		sK[r * LD + d] = r < c ? tof(k[o]) : 0.f;
		sD[r * LD + d] = r < c ? dKt[r * D + d] : 0.f;
	}
	for (int r = threadIdx.x; r < C; r += blockDim.x) {
		sb[r] = r < c ? tof(beta[((int64_t)b * s.T + j0 + r) * K + g]) : 0.f;
		sdb[r] = 0.f;
	}
	__syncthreads();
	/* K~ = K - Zᵀ W (dK~ staged in sD): dZ = -W dK~ᵀ, dW -= Z dK~ */
	bmm<TC, false, true, true, false>(sZd, CP, sW, LD, sD, LD, c, c, D, -1.f, 0.f);
	bmm<TC, false, false>(dW, D, Z, C, sD, LD, c, D, c, -1.f, 1.f);
	__syncthreads();
	for (int h = g * rep; h < (g + 1) * rep; h++) {
		const float *dQt = s.dqt + hrow(s, b, h, H, j0), *dA = s.daloc + hblk(s, b, h, H, n);
		/* Q; U into sD and dA into sTd for the products below */
		for (int idx = threadIdx.x; idx < c * D; idx += blockDim.x) {
			const int r = idx / D, d = idx % D;
			sQ[r * LD + d] = tof(q[row(s, b, j0 + r, h, H) + d]);
			sD[r * LD + d] = U[idx];
		}
		for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x)
			sTd[(idx / C) * CP + idx % C] = dA[idx];
		__syncthreads();
		/* Xq = tril(Q Wᵀ); dXq = tril(-dQ~ Uᵀ - dA Zᵀ) */
		bmm<TC, false, true, true, true>(sX1, CP, sQ, LD, sW, LD, c, c, D, 1.f, 0.f);
		bmm<TC, false, true>(sX2, CP, dQt, D, sD, LD, c, c, D, -1.f, 0.f);
		__syncthreads();
		bmm<TC, false, true>(sX2, CP, sTd, CP, Z, C, c, c, c, -1.f, 1.f);
		__syncthreads();
		for (int idx = threadIdx.x; idx < c * c; idx += blockDim.x) {
			const int i = idx / c, j = idx % c;
			if (j > i)
				sX1[i * CP + j] = sX2[i * CP + j] = 0.f;
		}
		/* dQ = dQ~ + dA K + dXq W, into sD */
		for (int idx = threadIdx.x; idx < c * D; idx += blockDim.x)
			sD[(idx / D) * LD + idx % D] = dQt[idx];
		__syncthreads();
		bmm<TC, false, false, false, true>(sD, LD, sTd, CP, sK, LD, c, D, c, 1.f, 1.f);
		__syncthreads();
		bmm<TC, false, false, false, true>(sD, LD, sX2, CP, sW, LD, c, D, c, 1.f, 1.f);
		/* dK += dAᵀ Q, dU -= Xqᵀ dQ~, dW += dXqᵀ Q (rows of this block);
		 * dZ -= Xqᵀ dA */
		bmm<TC, true, false, false, true>(dKt, D, sTd, CP, sQ, LD, c, D, c, 1.f, 1.f);
		bmm<TC, true, false>(dU, D, sX1, CP, dQt, D, c, D, c, -1.f, 1.f);
		bmm<TC, true, false, false, true>(dW, D, sX2, CP, sQ, LD, c, D, c, 1.f, 1.f);
		bmm<TC, true, false>(sZd, CP, sX1, CP, sTd, CP, c, c, c, -1.f, 1.f);
		__syncthreads();
		if (dq.p)
			for (int idx = threadIdx.x; idx < c * D; idx += blockDim.x) {
				const int i = idx / D, d = idx % D;
				gadd(dq, row(s, b, j0 + i, h, H) + d, sD[i * LD + d]);
			}
		__syncthreads();
	}
	/* M = strictlower(diag(beta) W Kᵀ), Z = T M: with X1 = strictlower(W
	 * Kᵀ), dT = dZ Mᵀ = (dZ X1ᵀ) diag(beta), dM = Tᵀ dZ (X2) */
	bmm<TC, false, true, true, true>(sX1, CP, sW, LD, sK, LD, c, c, D, 1.f, 0.f);
	__syncthreads();
	for (int idx = threadIdx.x; idx < c * c; idx += blockDim.x) {
		const int r = idx / c, j = idx % c;
		if (j >= r)
			sX1[r * CP + j] = 0.f;
	}
	__syncthreads();
	bmm<TC, false, true>(sTd, CP, sZd, CP, sX1, CP, c, c, c, 1.f, 0.f);
	bmm<TC, true, false>(sX2, CP, Tm, C, sZd, CP, c, c, c, 1.f, 0.f);
	__syncthreads();
	/* through M: dbeta_r += (dM ∘ X1) row sums; E = diag(beta)
	 * strictlower(dM) into dZ's tile: dW += E K, dK += Eᵀ W */
	for (int idx = threadIdx.x; idx < c * c; idx += blockDim.x) {
		const int r = idx / c, j = idx % c;
		sTd[r * CP + j] *= sb[j];
		sZd[r * CP + j] = j < r ? sb[r] * sX2[r * CP + j] : 0.f;
	}
	for (int r = threadIdx.x; r < c; r += blockDim.x) {
		float a = 0.f;
		for (int j = 0; j < r; j++)
			a += sX2[r * CP + j] * sX1[r * CP + j];
		sdb[r] += a;
	}
	__syncthreads();
	bmm<TC, false, false, false, true>(dW, D, sZd, CP, sK, LD, c, D, c, 1.f, 1.f);
	bmm<TC, true, false, false, true>(dKt, D, sZd, CP, sW, LD, c, D, c, 1.f, 1.f);
	/* U = T diag(beta) W: Tb = Tᵀ dU into Q's tile; dT += (dU Wᵀ) diag(beta)
	 * (dU Wᵀ into X2) */
	bmm<TC, true, false>(sQ, LD, Tm, C, dU, D, c, D, c, 1.f, 0.f);
	bmm<TC, false, true, false, true>(sX2, CP, dU, D, sW, LD, c, c, D, 1.f, 0.f);
	__syncthreads();
	for (int idx = threadIdx.x; idx < c * c; idx += blockDim.x) {
		const int r = idx / c, j = idx % c;
		sTd[r * CP + j] += sb[j] * sX2[r * CP + j];
	}
	for (int r = threadIdx.x; r < c; r += blockDim.x)
		sdb[r] += sdot(sQ + r * LD, sW + r * LD, D);
	for (int idx = threadIdx.x; idx < c * D; idx += blockDim.x)
		dW[idx] += sb[idx / D] * sQ[(idx / D) * LD + idx % D];
	/* T in dZ's tile */
	for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x)
		sZd[(idx / C) * CP + idx % C] = Tm[idx];
	__syncthreads();
	/* T = (I + L)⁻¹: dL = -Tᵀ dT Tᵀ (X2), L = strictlower(diag(beta) W Wᵀ)
	 * (W Wᵀ into dT's tile once dT is spent) */
	bmm<TC, true, false>(sX1, CP, sZd, CP, sTd, CP, c, c, c, 1.f, 0.f);
	__syncthreads();
	bmm<TC, false, true>(sX2, CP, sX1, CP, sZd, CP, c, c, c, -1.f, 0.f);
	bmm<TC, false, true, true, true>(sTd, CP, sW, LD, sW, LD, c, c, D, 1.f, 0.f);
	__syncthreads();
	/* dbeta_r += (dL ∘ W Wᵀ) lower row sums; E = diag(beta)
	 * strictlower(dL) into X1: dW += E W + Eᵀ W */
	for (int r = threadIdx.x; r < c; r += blockDim.x) {
		float a = 0.f;
		for (int j = 0; j < r; j++)
			a += sX2[r * CP + j] * sTd[r * CP + j];
		sdb[r] += a;
	}
	for (int idx = threadIdx.x; idx < c * c; idx += blockDim.x) {
		const int r = idx / c, j = idx % c;
		sX1[r * CP + j] = j < r ? sb[r] * sX2[r * CP + j] : 0.f;
	}
	__syncthreads();
	bmm<TC, false, false, false, true>(dW, D, sX1, CP, sW, LD, c, D, c, 1.f, 1.f);
	__syncthreads();
	bmm<TC, true, false, false, true>(dW, D, sX1, CP, sW, LD, c, D, c, 1.f, 1.f);
	__syncthreads();
	for (int idx = threadIdx.x; idx < c * D; idx += blockDim.x) {
		const int r = idx / D, d = idx % D;
		if (dk.p)
			gadd(dk, row(s, b, j0 + r, g, K) + d, dKt[idx]);
		if (dw.p)
			gadd(dw, row(s, b, j0 + r, g, K) + d, dW[idx]);
	}
	if (dbeta.p)
		for (int r = threadIdx.x; r < c; r += blockDim.x)
			gadd(dbeta, ((int64_t)b * s.T + j0 + r) * K + g, sdb[r]);
}

/* dlogf_t += sum over t' >= t of dgr + dgc (t >= 1): one warp per (b, h),
 * chunks of 32 from the end, as cumsum_kernel. */
__global__ void __launch_bounds__(NT) dlogf_kernel(pws s, gacc dlogf)
{
	const int x = blockIdx.x * (NT / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (x >= s.B * s.H)
		return;
	const int b = x / s.H, h = x % s.H;
	const float *r = s.dgr + (int64_t)x * s.T, *c = s.dgc + (int64_t)x * s.T;
	double carry = 0;
	for (int t0 = (s.T - 1) / 32 * 32; t0 >= 0; t0 -= 32) {
		const int t = t0 + lane;
		const bool ok = t >= 1 && t < s.T;
		double a = ok ? (double)r[t] + c[t] : 0;
		for (int o = 1; o < 32; o <<= 1) {
			const double u = __shfl_down_sync(0xffffffffu, a, o);
			if (lane + o < 32)
				a += u;
		}
		a += carry;
		if (ok)
			gadd(dlogf, ((int64_t)b * s.T + t) * s.H + h, (float)a);
		carry = __shfl_sync(0xffffffffu, a, 0);
	}
}

#ifndef LMK_PATH_EMU
/* ------------------------------------------------------------ launchers */

static int check(const char *who, lmk_dtype dt, const lmk_path_ws *s)
{
	if (dt != LMK_F32 && dt != LMK_BF16)
		return lmk_err(LMK_EINVAL, "%s: dtype %s: expected F32 or BF16", who, lmk_dtype_name(dt));
	if (s->C > 64 || s->D > 128 || s->C * s->D > MAXE * NT)
		return lmk_err(LMK_EUNSUP, "%s: block %lld, head dim %lld: expected block <= 64, D <= 128",
			       who, (long long)s->C, (long long)s->D);
	if (s->T > INT32_MAX / 2 || s->B > 65535 || s->H > 65535 || s->N > INT32_MAX / 2)
		return lmk_err(LMK_EUNSUP, "%s: B %lld, T %lld, H %lld: too large", who, (long long)s->B,
			       (long long)s->T, (long long)s->H);
	return 0;
}

template <typename F> static int set_smem(F kernel, size_t bytes)
{
	LMK_CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
	return 0;
}

#define LAUNCH(kern, grid, bytes, st, ...)                          \
	do {                                                        \
		int rc_ = set_smem(kern, bytes);                    \
		if (rc_ < 0)                                        \
			return rc_;                                 \
		kern<<<grid, NT, bytes, st>>>(__VA_ARGS__);         \
		LMK_CK_LAUNCH();                                    \
	} while (0)

/* The mma forward (fwd_mma) applies: BF16 with the tensor cores allowed,
 * blocks of 64, D 64 or 128, 16-byte aligned rows. */
static bool use_fwd_mma(const pws &p, bool tc, const void *out, const void *q, const void *k,
			const void *v, const void *w)
{
	const void *ptr[5] = {out, q, k, v, w};
	for (int i = 0; i < 5; i++)
		if ((uintptr_t)ptr[i] & 15)
			return false;
	return tc && p.C == 64 && (p.D == 64 || p.D == 128);
}

template <int D>
static int fwd_mma_launch(cudaStream_t st, void *be, pws p, void *out, const void *q, const void *k,
			  const void *v, const void *w, const void *beta, float scale)
{
	const size_t C = p.C;
	/* K~, U (B,K,T,D) and Z (B,K,N,C,C) in bf16, for this call only */
	const size_t nkt = (size_t)p.B * p.K * p.T * D, nz = (size_t)p.B * p.K * p.N * C * C;
	bf16 *kt16 = (bf16 *)lmk_cuda_scratch(LMK_BE(be), (2 * nkt + nz) * sizeof(bf16));
	if (!kt16)
		return lmk_errcode();
	bf16 *u16 = kt16 + nkt, *z16 = u16 + nkt;
	int rc = set_smem(prep_mma<D>, prep_mma_smem<D>());
	if (rc < 0)
		return rc;
	prep_mma<D><<<dim3(p.N, p.K, p.B), PREP_NTH, prep_mma_smem<D>(), st>>>(
		p, (const bf16 *)k, (const bf16 *)w, (const bf16 *)beta, kt16, u16, z16);
	LMK_CK_LAUNCH();
	using Cfg = PfCfg<D>;
	rc = set_smem(fwd_mma<D>, Cfg::SMEM);
	if (rc < 0)
		return rc;
	fwd_mma<D><<<dim3((p.N + Cfg::NB - 1) / Cfg::NB, p.H, p.B), Cfg::NTH, Cfg::SMEM, st>>>(
		p, (bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, (const bf16 *)w,
		kt16, u16, z16, scale);
	LMK_CK_LAUNCH();
	return 0;
}

template <class E>
static int forward_t(cudaStream_t st, void *be, pws p, bool tc, void *out, const void *q,
		     const void *k, const void *v, const void *w, const void *beta, const void *logf,
		     float scale)
{
	const size_t C = p.C, D = p.D, f = sizeof(float);
	if (logf) {
		cumsum_kernel<E><<<(p.B * p.H + NT / 32 - 1) / (NT / 32), NT, 0, st>>>(
			p.g, (const E *)logf, p.B, p.T, p.H);
		LMK_CK_LAUNCH();
	}
	if constexpr (sizeof(E) == 2) {
		if (use_fwd_mma(p, tc, out, q, k, v, w))
			return p.D == 64 ? fwd_mma_launch<64>(st, be, p, out, q, k, v, w, beta, scale)
					 : fwd_mma_launch<128>(st, be, p, out, q, k, v, w, beta, scale);
	}
	LAUNCH(prep_kernel<E>, dim3(p.N, p.K, p.B), (2 * C * (D + 1) + 3 * C * C + C) * f, st, p,
	       (const E *)k, (const E *)w, (const E *)beta);
	LAUNCH(intra_kernel<E>, dim3(p.N, p.H, p.B), (3 * C * D + C * C) * f, st, p, (const E *)q,
	       (const E *)k, (const E *)w);
	const size_t fb = ((3 * C * D + 2 * C * C + 3 * C + 31) & ~(size_t)31) * f;
	auto flash_tc = flash_kernel<E, true>, flash_f32 = flash_kernel<E, false>;
	if (tc)
		LAUNCH(flash_tc, dim3(p.N, p.H, p.B), fb + TC_BYTES, st, p, (E *)out, (const E *)v,
		       (const E *)w, scale);
	else
		LAUNCH(flash_f32, dim3(p.N, p.H, p.B), fb, st, p, (E *)out, (const E *)v,
		       (const E *)w, scale);
	return 0;
}

extern "C" int lmk_cuda_path_forward(void *be, lmk_dtype dt, void *out, const void *q,
				     const void *k, const void *v, const void *w, const void *beta,
				     const void *logf, struct lmk_path_ws *ws, float scale)
{
	int rc = check("path_attention forward", dt, ws);
	if (rc < 0 || ws->B == 0 || ws->T == 0)
		return rc;
	cudaStream_t st = LMK_BE(be)->stream;
	pws p = to_pws(ws);
	/* the tensor cores take bf16 operands: BF16 contexts only */
	if (dt == LMK_BF16)
		return forward_t<bf16>(st, be, p, ws->tc && p.D % 16 == 0, out, q, k, v, w, beta,
				       logf, scale);
	return forward_t<float>(st, be, p, false, out, q, k, v, w, beta, logf, scale);
}

/* The O(T²) passes on mma.sync (bwd_q_mma, bwd_k_mma): K~ and U to bf16
 * first (kt16, then u16, in the scratch after the workspace). */
template <int D>
static int bwd_mma_launch(cudaStream_t st, pws p, lmk_gbuf dv, const void *dout, const void *v,
			  const void *w, bf16 *kt16, float scale)
{
	const int64_t nkt = (int64_t)p.B * p.K * p.T * D;
	bf16 *u16 = kt16 + nkt;
	to_bf16_kernel<<<grid_for(nkt, NT), NT, 0, st>>>(kt16, p.kt, nkt);
	LMK_CK_LAUNCH();
	to_bf16_kernel<<<grid_for(nkt, NT), NT, 0, st>>>(u16, p.u, nkt);
	LMK_CK_LAUNCH();
	using Cq = PqCfg;
	const size_t qsm = (size_t)(2 * BQ_STAGE<D> + Cq::NB * 64 * D) * sizeof(bf16);
	int rc = set_smem(bwd_q_mma<D>, qsm);
	if (rc < 0)
		return rc;
	bwd_q_mma<D><<<dim3((p.N + Cq::NB - 1) / Cq::NB, p.H, p.B), Cq::NTH, qsm, st>>>(
		p, (const bf16 *)dout, (const bf16 *)v, (const bf16 *)w, kt16, u16, scale);
	LMK_CK_LAUNCH();
	using Ck = PkCfg<D>;
	if ((rc = set_smem(bwd_k_mma<D, 0>, Ck::SMEM)) < 0 ||
	    (rc = set_smem(bwd_k_mma<D, 1>, Ck::SMEM)) < 0)
		return rc;
	bwd_k_mma<D, 0><<<dim3(p.N, p.K, p.B), Ck::NTH, Ck::SMEM, st>>>(
		p, to_gacc(dv), (const bf16 *)dout, (const bf16 *)v, (const bf16 *)w, kt16, u16, scale);
	LMK_CK_LAUNCH();
	bwd_k_mma<D, 1><<<dim3(p.N, p.K, p.B), Ck::NTH, Ck::SMEM, st>>>(
		p, to_gacc(dv), (const bf16 *)dout, (const bf16 *)v, (const bf16 *)w, kt16, u16, scale);
	LMK_CK_LAUNCH();
	return 0;
}

template <class E>
static int backward_t(cudaStream_t st, pws p, bool tc, bool mma, bf16 *kt16, lmk_gbuf dq, lmk_gbuf dk, lmk_gbuf dv, lmk_gbuf dw,
		      lmk_gbuf dbeta, lmk_gbuf dlogf, const void *dout, const void *out,
		      const void *q, const void *k, const void *v, const void *w, const void *beta,
		      const void *logf, float scale)
{
	const size_t C = p.C, D = p.D, f = sizeof(float);
	const int64_t rows = (int64_t)p.B * p.T * p.H;
	delta_kernel<E><<<(unsigned)((rows + NT / 32 - 1) / (NT / 32)), NT, 0, st>>>(
		p, (const E *)dout, (const E *)out);
	LMK_CK_LAUNCH();
	bool done = false;
	if constexpr (sizeof(E) == 2) {
		if (mma) {
			int rc = p.D == 64 ? bwd_mma_launch<64>(st, p, dv, dout, v, w, kt16, scale)
					   : bwd_mma_launch<128>(st, p, dv, dout, v, w, kt16, scale);
			if (rc < 0)
				return rc;
			done = true;
		}
	}
	if (!done) {
		const size_t qb = ((4 * C * D + 3 * C * C + 3 * C + 31) & ~(size_t)31) * f;
		auto query_tc = query_kernel<E, true>, query_f32 = query_kernel<E, false>;
		if (tc)
			LAUNCH(query_tc, dim3(p.N, p.H, p.B), qb + TC_BYTES, st, p, (const E *)dout,
			       (const E *)v, (const E *)w, scale);
		else
			LAUNCH(query_f32, dim3(p.N, p.H, p.B), qb, st, p, (const E *)dout,
			       (const E *)v, (const E *)w, scale);
		const size_t kb = ((4 * C * D + 2 * C * C + 3 * C + 31) & ~(size_t)31) * f;
		auto key_tc = key_kernel<E, true>, key_f32 = key_kernel<E, false>;
		if (tc)
			LAUNCH(key_tc, dim3(p.N, p.K, p.B), kb + TC_BYTES, st, p, to_gacc(dv),
			       (const E *)dout, (const E *)v, (const E *)w, scale);
		else
			LAUNCH(key_f32, dim3(p.N, p.K, p.B), kb, st, p, to_gacc(dv),
			       (const E *)dout, (const E *)v, (const E *)w, scale);
	}
	if (dq.p || dk.p || dw.p || dbeta.p) {
		const size_t bb = (4 * C * (D + 1) + 4 * C * (C + 1) + 2 * C) * f;
		auto back_tc = back_kernel<E, true>, back_f32 = back_kernel<E, false>;
		if (tc)
			LAUNCH(back_tc, dim3(p.N, p.K, p.B), bb, st, p, to_gacc(dq), to_gacc(dk),
			       to_gacc(dw), to_gacc(dbeta), (const E *)q, (const E *)k, (const E *)w,
			       (const E *)beta);
		else
			LAUNCH(back_f32, dim3(p.N, p.K, p.B), bb, st, p, to_gacc(dq), to_gacc(dk),
			       to_gacc(dw), to_gacc(dbeta), (const E *)q, (const E *)k, (const E *)w,
			       (const E *)beta);
	}
	if (dlogf.p && logf) {
		dlogf_kernel<<<(p.B * p.H + NT / 32 - 1) / (NT / 32), NT, 0, st>>>(p, to_gacc(dlogf));
		LMK_CK_LAUNCH();
	}
	return 0;
}

extern "C" int lmk_cuda_path_backward(void *be, lmk_dtype dt, lmk_gbuf dq, lmk_gbuf dk,
				      lmk_gbuf dv, lmk_gbuf dw, lmk_gbuf dbeta, lmk_gbuf dlogf,
				      const void *dout, const void *out, const void *q,
				      const void *k, const void *v, const void *w,
				      const void *beta, const void *logf, struct lmk_path_ws *ws,
				      float scale)
{
	int rc = check("path_attention backward", dt, ws);
	if (rc < 0 || ws->B == 0 || ws->T == 0)
		return rc;
	const lmk_gbuf gs[6] = {dq, dk, dv, dw, dbeta, dlogf};
	for (int i = 0; i < 6; i++)
		if ((rc = check_gbuf("path_attention backward", dt, gs[i])) < 0)
			return rc;
	cudaStream_t st = LMK_BE(be)->stream;
	/* the levels (T² D / C floats per head) live only through this call:
	 * the backend's scratch, which the next op's backward reuses */
	pws p = to_pws(ws);
	const bool tc = dt == LMK_BF16 && ws->tc && p.D % 16 == 0;
	const bool mma = dt == LMK_BF16 && use_fwd_mma(p, tc, dout, v, v, v, w);
	const size_t fl = (size_t)lmk_path_bwd_carve(ws, NULL);
	const size_t b16 = mma ? 2 * (size_t)p.B * p.K * p.T * p.D * sizeof(bf16) : 0;
	float *base = (float *)lmk_cuda_scratch(LMK_BE(be), sizeof(float) * fl + b16);
	if (!base)
		return lmk_errcode();
	lmk_path_bwd_carve(ws, base);
	p = to_pws(ws);
	lmk_path_bwd_carve(ws, NULL);
	bf16 *kt16 = mma ? (bf16 *)(base + fl) : nullptr;
	/* the query pass repeats the forward's walk, with the same products */
	if (dt == LMK_BF16)
		return backward_t<bf16>(st, p, tc, mma, kt16, dq, dk, dv, dw, dbeta, dlogf, dout, out,
					q, k, v, w, beta, logf, scale);
	return backward_t<float>(st, p, false, false, nullptr, dq, dk, dv, dw, dbeta, dlogf, dout,
				 out, q, k, v, w, beta, logf, scale);
}

#endif /* LMK_PATH_EMU */

/* ------------------------------------------------------------ decoding */

/* Block (g, b): each warp moves cached keys j by H_t (a warp sum per key),
 * then row len gets k and v. The keys are float32 in any dtype: each is
 * rewritten at every step, and bf16 would round it that many times. */
template <class E>
__global__ void __launch_bounds__(NT) cache_update_kernel(float *kc, E *vc, const E *k, const E *v,
							  const E *w, const E *beta, int cap, int len,
							  int K, int D)
{
	const int g = blockIdx.x, b = blockIdx.y, lane = threadIdx.x % 32, wp = threadIdx.x / 32;
	const E *wt = w + ((int64_t)b * K + g) * D;
	const float bt = tof(beta[(int64_t)b * K + g]);
	for (int j = wp; j < len; j += NT / 32) {
		float *kj = kc + (((int64_t)b * cap + j) * K + g) * D;
		float a = 0.f;
		for (int d = lane; d < D; d += 32)
			a += tof(wt[d]) * kj[d];
		a = bt * warp_sum(a);
		for (int d = lane; d < D; d += 32)
			kj[d] -= a * tof(wt[d]);
	}
	const int64_t o = (((int64_t)b * cap + len) * K + g) * D;
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		kc[o + d] = tof(k[((int64_t)b * K + g) * D + d]);
		vc[o + d] = v[((int64_t)b * K + g) * D + d];
	}
}

template <class E>
__global__ void __launch_bounds__(NT) bias_update_kernel(float *bias, const E *logf, int B, int cap,
							 int len, int H)
{
	const int x = blockIdx.x * blockDim.x + threadIdx.x;
	if (x >= B * H)
		return;
	const int b = x / H, h = x % H;
	const float f = tof(logf[x]);
	for (int j = 0; j < len; j++)
		bias[((int64_t)b * cap + j) * H + h] += f;
	bias[((int64_t)b * cap + len) * H + h] = 0.f;
}

#ifndef LMK_PATH_EMU
extern "C" int lmk_cuda_path_cache_update(void *be, lmk_dtype dt, float *kc, void *vc,
					  float *bias, const void *k, const void *v,
					  const void *w, const void *beta, const void *logf,
					  int64_t B, int64_t cap, int64_t len, int64_t H,
					  int64_t K, int64_t D)
{
	cudaStream_t st = LMK_BE(be)->stream;
	if (cap > INT32_MAX || B > 65535 || K > 65535)
		return lmk_err(LMK_EUNSUP, "path_decode: cache too large");
	LMK_DT_SWITCH(dt, "path_decode", {
		cache_update_kernel<T><<<dim3((unsigned)K, (unsigned)B), NT, 0, st>>>(
			(float *)kc, (T *)vc, (const T *)k, (const T *)v, (const T *)w,
			(const T *)beta, (int)cap, (int)len, (int)K, (int)D);
		LMK_CK_LAUNCH();
		if (bias && logf) {
			bias_update_kernel<T><<<(unsigned)((B * H + NT - 1) / NT), NT, 0, st>>>(
				bias, (const T *)logf, (int)B, (int)cap, (int)len, (int)H);
			LMK_CK_LAUNCH();
		}
	});
	return 0;
}

#endif

#define DECODE_SMEM ((NT / 32) * (2 + 128) * sizeof(float))

/* Block (h, b): warp wp takes keys wp, wp + 8, ... with an online softmax
 * (lane l holds elements l + 32 e of q and of its sum, D <= 128), then the
 * warps' parts merge by their maxima, in warp order. */
template <class E>
__global__ void __launch_bounds__(NT) decode_kernel(E *out, const E *q, const float *kc, const E *vc,
						    const float *bias, int cap, int len, int H, int K,
						    int D, float scale)
{
	extern __shared__ __align__(128) float sm[]; /* DECODE_SMEM bytes */
	float *sm_m = sm, *sm_l = sm_m + NT / 32, *sm_o = sm_l + NT / 32; /* sm_o (NT/32,128) */
	const int h = blockIdx.x, b = blockIdx.y, lane = threadIdx.x % 32, wp = threadIdx.x / 32;
	const int g = h / (H / K);
	float qv[4], acc[4] = {0.f, 0.f, 0.f, 0.f}, m = -INFINITY, l = 0.f;
#pragma unroll
	for (int e = 0; e < 4; e++) {
		const int d = lane + 32 * e;
		qv[e] = d < D ? tof(q[((int64_t)b * H + h) * D + d]) : 0.f;
	}
	for (int j = wp; j < len; j += NT / 32) {
		const float *kj = kc + (((int64_t)b * cap + j) * K + g) * D;
		const E *vj = vc + (((int64_t)b * cap + j) * K + g) * D;
		float a = 0.f;
#pragma unroll
		for (int e = 0; e < 4; e++) {
			const int d = lane + 32 * e;
			if (d < D)
				a += qv[e] * kj[d];
		}
		float sc = scale * warp_sum(a) + (bias ? bias[((int64_t)b * cap + j) * H + h] : 0.f);
		const float mn = fmaxf(m, sc), f = expf(m - mn), p = expf(sc - mn);
		l = l * f + p;
#pragma unroll
		for (int e = 0; e < 4; e++) {
			const int d = lane + 32 * e;
			acc[e] = acc[e] * f + (d < D ? p * tof(vj[d]) : 0.f);
		}
		m = mn;
	}
	if (lane == 0) {
		sm_m[wp] = m;
		sm_l[wp] = l;
	}
#pragma unroll
	for (int e = 0; e < 4; e++)
		if (lane + 32 * e < 128)
			sm_o[wp * 128 + lane + 32 * e] = acc[e];
	__syncthreads();
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		float M = -INFINITY;
		for (int x = 0; x < NT / 32; x++)
			M = fmaxf(M, sm_m[x]);
		float L = 0.f, o = 0.f;
		for (int x = 0; x < NT / 32; x++) {
			if (sm_m[x] == -INFINITY)
				continue;
			const float f = expf(sm_m[x] - M);
			L += sm_l[x] * f;
			o += sm_o[x * 128 + d] * f;
		}
		out[((int64_t)b * H + h) * D + d] = fromf<E>(L > 0.f ? o / L : 0.f);
	}
}

#ifndef LMK_PATH_EMU
extern "C" int lmk_cuda_path_decode_attend(void *be, lmk_dtype dt, void *out, const void *q,
					   const float *kc, const void *vc, const float *bias,
					   int64_t B, int64_t cap, int64_t len, int64_t H,
					   int64_t K, int64_t D, float scale)
{
	if (D > 128)
		return lmk_err(LMK_EUNSUP, "path_decode: head dim %lld: expected at most 128",
			       (long long)D);
	if (cap > INT32_MAX || B > 65535 || H > 65535)
		return lmk_err(LMK_EUNSUP, "path_decode: cache too large");
	cudaStream_t st = LMK_BE(be)->stream;
	LMK_DT_SWITCH(dt, "path_decode", {
		decode_kernel<T><<<dim3((unsigned)H, (unsigned)B), NT, DECODE_SMEM, st>>>(
			(T *)out, (const T *)q, (const float *)kc, (const T *)vc, bias, (int)cap,
			(int)len, (int)H, (int)K, (int)D, scale);
		LMK_CK_LAUNCH();
	});
	return 0;
}
#endif
