/* attention.cu: scaled-dot-product attention kernels, the CUDA side of
 * lmk_cpu_attention_forward/backward (lib/ops_cpu.c is the specification),
 * and single-token decoding against a KV cache.
 *
 * Shape letters: B batch, T time, H query heads, K key/value heads (query
 * head h reads kv head g = h/(H/K)), D head dim, Tk cached keys. q, out,
 * dout, dq are (B,T,H,D); k, v, dk, dv (B,T,K,D); lse, delta (B,H,T).
 *
 * Two families of kernels:
 * - "mma": BF16 with D 64 or 128, FlashAttention-2. The forward gives a
 *   block BR query rows (16 per warp) and streams BC-key tiles of K and V
 *   through shared memory (cp.async, two stages), S = Q Kᵀ and O += P V on
 *   the tensor cores (mma.sync m16n8k16 bf16 -> fp32, operands by
 *   ldmatrix from XOR-swizzled tiles), online softmax in fp32 registers in
 *   the log2 domain. Causal blocks run heaviest first and stop at the
 *   diagonal; masks are applied only to tiles that need them. The backward
 *   starts with a pre-pass for delta = rowsum(dout * out), then one fused
 *   pass (FlashAttention-2's) that gives a block BC keys and walks the
 *   query tiles of every query head of its kv head, each in sub-tiles of
 *   32 queries (dK, dV and GQA summed inside the block), computing Sᵀ and
 *   dPᵀ directly so that a warp owns key rows, and each query tile's part
 *   of dQ = dS K. The parts of the key blocks are summed in float32
 *   through global memory: by default in a fixed order
 *   (FlashAttention-3's deterministic mode: each block waits
 *   for a per-tile counter to show that the parts before its own are in,
 *   so the bits never vary), the last block adding the sum into dq; in a
 *   context set nondeterministic with float atomics, rounded into dq by a
 *   last small kernel. The forward and the deterministic backward run
 *   instead on Hopper's warpgroup MMA where the device takes sm_90a code
 *   (attention_wg.cu: the same algorithms, walks and dq sums).
 * - "simple": any D <= 256, float32 or BF16 storage, fp32 on CUDA cores;
 *   one warp per query (or key) row, 32 keys (queries) at a time, one per
 *   lane. The float32 path, and BF16 for head dims without an mma kernel.
 * Decoding splits the cache over blocks (groups of threads per key, 16-byte
 * loads) and merges the parts by their logsumexp. */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

#include <algorithm>

/* err.h and dtype.h are C headers without extern "C" guards: include them
 * here first, with C linkage, so that check.h's lmk_err links to lib/err.c. */
extern "C" {
#include "dtype.h"
#include "err.h"
}
#include "attention.h"
#include "attention_sync.cuh"
#include "attention_wg.h"
#include "check.h"
#include "cuda.h"
#include "decode_scan.cuh"
#include "mma.cuh"

/* The context's stream: through the backend struct where cuda/backend.h
 * shares it with the kernel files, else through the C accessor. */
#if __has_include("backend.h")
#include "backend.h"
static cudaStream_t stream_of(void *be) { return ((lmk_cuda_backend *)be)->stream; }
static bool nondeterministic(void *be) { return ((lmk_cuda_backend *)be)->nondeterministic != 0; }
#define HAVE_BACKEND_H 1
#else
static cudaStream_t stream_of(void *be) { return (cudaStream_t)lmk_cuda_stream(be); }
static bool nondeterministic(void *be) { return false; }
#define HAVE_BACKEND_H 0
#endif

typedef __nv_bfloat16 bf16;

static constexpr unsigned FULL = 0xffffffffu;
static constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

/* ------------------------------------------------------------ helpers */

static __device__ __forceinline__ float ldf(const float *p) { return *p; }
static __device__ __forceinline__ float ldf(const bf16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ void stf(float *p, float x) { *p = x; }
static __device__ __forceinline__ void stf(bf16 *p, float x) { *p = __float2bfloat16(x); }

static __device__ __forceinline__ float warp_max(float x)
{
	for (int o = 16; o > 0; o >>= 1)
		x = fmaxf(x, __shfl_xor_sync(FULL, x, o));
	return x;
}

static __device__ __forceinline__ float warp_sum(float x)
{
	for (int o = 16; o > 0; o >>= 1)
		x += __shfl_xor_sync(FULL, x, o);
	return x;
}

/* Element offset of (row, col) in a tile of W-wide bf16 rows, col a
 * multiple of 8: the 16-byte chunk index is XORed with a function of the
 * row, so that the 8 rows an ldmatrix reads at one column land in 8
 * different bank groups. Rows of 128 bytes or more (a multiple of the 32
 * banks) take row % 8; rows of 64 bytes (W 32: two rows span the banks)
 * take (row / 2) % 4 over their 4 chunks. */
template <int W> static __device__ __forceinline__ int swz(int row, int col)
{
	static_assert(W == 32 || W % 64 == 0, "tile width");
	if constexpr (W == 32)
		return row * W + ((((col >> 3) ^ ((row >> 1) & 3))) << 3);
	else
		return row * W + ((((col >> 3) ^ (row & 7))) << 3);
}

/* Rows row0.. of a (T, ld) bf16 matrix into a ROWS x D swizzled tile; rows
 * at or past T are zero-filled so that they add nothing (0 * NaN garbage
 * would poison the products). */
template <int D, int ROWS, int NT>
static __device__ __forceinline__ void load_tile(bf16 *sm, const bf16 *g, int64_t ld, int row0,
						 int T, int tid)
{
	constexpr int CPR = D / 8, N = ROWS * CPR;
#pragma unroll
	for (int it = 0; it < (N + NT - 1) / NT; it++) {
		int c = tid + it * NT;
		if (N % NT == 0 || c < N) {
			int r = c / CPR, ch = c % CPR, gr = row0 + r;
			bool ok = gr < T;
			const bf16 *src = g + (int64_t)(ok ? gr : 0) * ld + ch * 8;
			cp_async16(smem_u32(sm + swz<D>(r, ch * 8)), src, ok);
		}
	}
}

/* A operand (16 rows x 16 cols at row r0, col c0) from a swizzled tile. */
template <int D>
static __device__ __forceinline__ void ld_a(uint32_t (&a)[4], const bf16 *sm, int r0, int c0, int lane)
{
	ldsm4(a, smem_u32(sm + swz<D>(r0 + (lane & 15), c0 + ((lane >> 4) << 3))));
}

/* B operands of two n8 tiles for a k16 step when the tile is stored
 * [n][k] (keys x d for S = Q Kᵀ): rows n0..n0+15, cols k0..k0+15.
 * b[0],b[1] serve n-tile n0, b[2],b[3] n-tile n0+8. */
template <int D>
static __device__ __forceinline__ void ld_b_nk(uint32_t (&b)[4], const bf16 *sm, int n0, int k0, int lane)
{
	ldsm4(b, smem_u32(sm + swz<D>(n0 + (lane & 7) + ((lane >> 4) << 3), k0 + (((lane >> 3) & 1) << 3))));
}

/* The same when the tile is stored [k][n] (keys x d for O = P V): rows
 * k0..k0+15, cols n0..n0+15, transposed by ldmatrix. */
template <int D>
static __device__ __forceinline__ void ld_b_kn(uint32_t (&b)[4], const bf16 *sm, int k0, int n0, int lane)
{
	ldsm4t(b, smem_u32(sm + swz<D>(k0 + (lane & 7) + (((lane >> 3) & 1) << 3), n0 + ((lane >> 4) << 3))));
}

/* ------------------------------------------------ mma forward (BF16) */

/* A warp owns MT m16 tiles of query rows (MT 2: every K and V operand read
 * from shared memory serves two products); QREG keeps the warp's Q rows in
 * registers as A operands rather than reading them again for each tile. */
template <int D> struct FwdCfg;
template <> struct FwdCfg<64> {
	static constexpr int BR = 128, BC = 64, NW = 4, MT = 2, MINB = 2;
	static constexpr bool QREG = false;
};
template <> struct FwdCfg<128> {
	static constexpr int BR = 128, BC = 64, NW = 8, MT = 1, MINB = 1;
	static constexpr bool QREG = true;
};

template <int D>
__global__ void __launch_bounds__(FwdCfg<D>::NW * 32, FwdCfg<D>::MINB)
	fwd_mma(bf16 *__restrict__ out, float *__restrict__ lse, const bf16 *__restrict__ q,
		const bf16 *__restrict__ k, const bf16 *__restrict__ v,
		const int32_t *__restrict__ seg, int T, int H, int K, float scale_log2, int causal)
{
	constexpr int BR = FwdCfg<D>::BR, BC = FwdCfg<D>::BC, NT = FwdCfg<D>::NW * 32;
	constexpr int MT = FwdCfg<D>::MT;
	constexpr bool QREG = FwdCfg<D>::QREG;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bf16 *sQ = (bf16 *)smem_raw;  /* BR x D */
	bf16 *sK = sQ + BR * D;       /* 2 stages x BC x D */
	bf16 *sV = sK + 2 * BC * D;   /* 2 stages x BC x D */

	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int qt = causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x; /* heavy tiles first */
	const int h = blockIdx.y, b = blockIdx.z, g = h / (H / K), q0 = qt * BR;
	const int64_t ldq = (int64_t)H * D, ldk = (int64_t)K * D;
	const bf16 *qb = q + (int64_t)b * T * ldq + (int64_t)h * D;
	const bf16 *kb = k + (int64_t)b * T * ldk + (int64_t)g * D;
	const bf16 *vb = v + (int64_t)b * T * ldk + (int64_t)g * D;
	const int32_t *sg = seg ? seg + (int64_t)b * T : nullptr;

	const int kv_end = causal ? min(T, q0 + BR) : T;
	const int ntiles = (kv_end + BC - 1) / BC;

	load_tile<D, BR, NT>(sQ, qb, ldq, q0, T, tid);
	load_tile<D, BC, NT>(sK, kb, ldk, 0, T, tid);
	load_tile<D, BC, NT>(sV, vb, ldk, 0, T, tid);
	cp_commit();

	/* This thread's rows: r[mt][0] of m-tile mt and r[mt][1] = r[mt][0] + 8;
	 * wr0 the warp's first row. */
	const int wr0 = warp * 16 * MT;
	int r[MT][2], sr[MT][2];
	float m[MT][2], l[MT][2], o[MT][D / 8][4];
#pragma unroll
	for (int mt = 0; mt < MT; mt++)
#pragma unroll
		for (int hf = 0; hf < 2; hf++) {
			r[mt][hf] = q0 + wr0 + mt * 16 + (lane >> 2) + 8 * hf;
			sr[mt][hf] = sg && r[mt][hf] < T ? sg[r[mt][hf]] : -1;
			m[mt][hf] = -INFINITY;
			l[mt][hf] = 0.f;
#pragma unroll
			for (int n = 0; n < D / 8; n++)
				o[mt][n][2 * hf] = o[mt][n][2 * hf + 1] = 0.f;
		}

	uint32_t qa[QREG ? D / 16 : 1][MT][4];

	for (int t = 0; t < ntiles; t++) {
		const int kv0 = t * BC;
		/* One barrier a tile: past it, tile t has landed and every warp
		 * is done with tile t - 1, whose stage the next loads take. */
		cp_wait<0>();
		__syncthreads();
		if (t + 1 < ntiles) {
			const int nb = (t + 1) & 1;
			load_tile<D, BC, NT>(sK + nb * BC * D, kb, ldk, kv0 + BC, T, tid);
			load_tile<D, BC, NT>(sV + nb * BC * D, vb, ldk, kv0 + BC, T, tid);
			cp_commit();
		}
		const bf16 *cK = sK + (t & 1) * BC * D, *cV = sV + (t & 1) * BC * D;
		if (QREG && t == 0) {
#pragma unroll
			for (int kk = 0; kk < (QREG ? D / 16 : 1); kk++)
#pragma unroll
				for (int mt = 0; mt < MT; mt++)
					ld_a<D>(qa[kk][mt], sQ, wr0 + mt * 16, kk * 16, lane);
		}

		/* A warp whose rows all precede the tile's first key (causal)
		 * sees none of it. */
		if (causal && kv0 > q0 + wr0 + 16 * MT - 1)
			continue;

		float s[MT][BC / 8][4];
#pragma unroll
		for (int mt = 0; mt < MT; mt++)
#pragma unroll
			for (int n = 0; n < BC / 8; n++)
				s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
		for (int kk = 0; kk < D / 16; kk++) {
			const int qk = QREG ? kk : 0;
			if (!QREG) {
#pragma unroll
				for (int mt = 0; mt < MT; mt++)
					ld_a<D>(qa[0][mt], sQ, wr0 + mt * 16, kk * 16, lane);
			}
#pragma unroll
			for (int np = 0; np < BC / 16; np++) {
				uint32_t bb[4];
				ld_b_nk<D>(bb, cK, np * 16, kk * 16, lane);
#pragma unroll
				for (int mt = 0; mt < MT; mt++) {
					mma16816(s[mt][2 * np], qa[qk][mt], bb[0], bb[1]);
					mma16816(s[mt][2 * np + 1], qa[qk][mt], bb[2], bb[3]);
				}
			}
		}

		const bool need_mask = kv0 + BC > T || sg || (causal && kv0 + BC - 1 > q0 + wr0);
#pragma unroll
		for (int mt = 0; mt < MT; mt++) {
			if (need_mask) {
#pragma unroll
				for (int n = 0; n < BC / 8; n++) {
					const int j = kv0 + n * 8 + ((lane & 3) << 1);
#pragma unroll
					for (int e = 0; e < 4; e++) {
						const int jj = j + (e & 1), i = r[mt][e >> 1];
						const int si = sr[mt][e >> 1];
						bool ok = jj < T && (!causal || jj <= i) &&
							  (!sg || (si >= 0 && sg[jj] == si));
						if (!ok)
							s[mt][n][e] = -INFINITY;
					}
				}
			}

			/* Online softmax: m the running max of the unscaled
			 * logits (scale > 0 keeps it the max), l the running sum
			 * of this thread's columns, o rescaled by exp2((m_old -
			 * m_new) scale log2 e); a row with nothing visible yet
			 * keeps m = -inf and uses 0 as its reference so that no
			 * inf - inf appears. */
#pragma unroll
			for (int hf = 0; hf < 2; hf++) {
				float mx = m[mt][hf];
#pragma unroll
				for (int n = 0; n < BC / 8; n++)
					mx = fmaxf(mx, fmaxf(s[mt][n][2 * hf], s[mt][n][2 * hf + 1]));
				mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 1));
				mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 2));
				const float mu = mx == -INFINITY ? 0.f : mx * scale_log2;
				const float c = ex2(m[mt][hf] * scale_log2 - mu);
				m[mt][hf] = mx;
				float sum = 0.f;
#pragma unroll
				for (int n = 0; n < BC / 8; n++) {
					s[mt][n][2 * hf] = ex2(fmaf(s[mt][n][2 * hf], scale_log2, -mu));
					s[mt][n][2 * hf + 1] =
						ex2(fmaf(s[mt][n][2 * hf + 1], scale_log2, -mu));
					sum += s[mt][n][2 * hf] + s[mt][n][2 * hf + 1];
				}
				l[mt][hf] = l[mt][hf] * c + sum;
#pragma unroll
				for (int n = 0; n < D / 8; n++) {
					o[mt][n][2 * hf] *= c;
					o[mt][n][2 * hf + 1] *= c;
				}
			}
		}

#pragma unroll
		for (int kk = 0; kk < BC / 16; kk++) {
			uint32_t a[MT][4];
#pragma unroll
			for (int mt = 0; mt < MT; mt++)
				c_to_a(a[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
			for (int dp = 0; dp < D / 16; dp++) {
				uint32_t bb[4];
				ld_b_kn<D>(bb, cV, kk * 16, dp * 16, lane);
#pragma unroll
				for (int mt = 0; mt < MT; mt++) {
					mma16816(o[mt][2 * dp], a[mt], bb[0], bb[1]);
					mma16816(o[mt][2 * dp + 1], a[mt], bb[2], bb[3]);
				}
			}
		}
	}

	bf16 *ob = out + (int64_t)b * T * ldq + (int64_t)h * D + ((lane & 3) << 1);
	float *L = lse + ((int64_t)b * H + h) * T;
#pragma unroll
	for (int mt = 0; mt < MT; mt++)
#pragma unroll
		for (int hf = 0; hf < 2; hf++) {
			float sum = l[mt][hf];
			sum += __shfl_xor_sync(FULL, sum, 1);
			sum += __shfl_xor_sync(FULL, sum, 2);
			const float inv = sum > 0.f ? 1.f / sum : 0.f;
			const int i = r[mt][hf];
			if (i >= T)
				continue;
#pragma unroll
			for (int n = 0; n < D / 8; n++)
				*(__nv_bfloat162 *)(ob + i * ldq + n * 8) = __floats2bfloat162_rn(
					o[mt][n][2 * hf] * inv, o[mt][n][2 * hf + 1] * inv);
			if ((lane & 3) == 0)
				L[i] = sum > 0.f ? (m[mt][hf] * scale_log2 + log2f(sum)) * LN2 : -INFINITY;
		}
}

/* ------------------------------------------ mma fused backward (BF16) */

template <int D> struct BwdCfg;
/* A block owns BC keys (16 a warp) and walks query tiles of BR rows, each
 * in sub-tiles of BRS queries: the scores of one sub-tile are live in
 * registers at a time, while the barrier, the tile loads and the dQ part
 * (and its ordered sum) come once a tile. KVREG keeps the warp's K and V
 * rows in registers as A operands rather than reading them again for each
 * query tile. One block of 8 warps an SM (255 registers a thread). On the
 * H200 (causal, T 1K-16K, with the ordered dQ sum below) forward+backward
 * runs 15-25% faster at D 64 than with two blocks of 4 warps on 64 x 64
 * tiles, and 21-28% faster at D 128 than with 32-query tiles. */
template <> struct BwdCfg<64> {
	static constexpr int BC = 128, BR = 128, BRS = 32, NW = 8, MINB = 1;
	static constexpr bool KVREG = true;
};
template <> struct BwdCfg<128> {
	static constexpr int BC = 128, BR = 64, BRS = 32, NW = 8, MINB = 1;
	static constexpr bool KVREG = false;
};

/* A block owns BC keys of kv head g (key block j), each warp 16 of them,
 * and walks every query tile that can see them for each query head of g:
 * Sᵀ = K Qᵀ, Pᵀ = exp(Sᵀ - lse), dV += Pᵀ dO, dPᵀ = V dOᵀ,
 * dSᵀ = Pᵀ ∘ (dPᵀ - delta), dK += dSᵀ Q (GQA summed inside the block);
 * dSᵀ also goes to shared memory (two buffers), from where, one iteration
 * later, the warps split the query tile's part of dQ = dS K (16 query rows
 * x NQ = D/WPM columns each). One barrier an iteration.
 * The dQ parts of the key blocks are summed across blocks (dqw NULL: dq not
 * wanted), in one of two ways:
 * - DET false (nondeterministic): float atomics into the float32 buffer
 *   dqw (B,T,H,D), which dq_add then rounds into dq;
 * - DET true (the default), FlashAttention-3's deterministic mode: an
 *   ordered sum through dqw, in the order the key blocks reach the query
 *   tile (descending key block: see tile_of). The first block stores its
 *   part; each next one waits for its counter (b,h,i,warp) in sem to reach
 *   the number of parts before its own, adds its part to theirs and raises
 *   the counter; the last adds the sum times scale into dq. A warp covers
 *   the same piece of the tile in every block, so the counters are per
 *   warp. A warp reads its counter in the middle of the iteration before
 *   it needs it (before the last sub-tile's dV and dK products), so that
 *   when the part is due the count is usually in and only the load of the
 *   sum so far remains; it raises the count of the part it stored (a
 *   fence, then the counter's add) after the first sub-tile's products,
 *   once the stores have left, so that the fence seldom waits.
 *   Blocks take their (key block, kv head, batch) from a ticket, sem[0],
 *   in the order of start, descending key block first
 *   (ticket x + blocks (g + K b) is key block blocks - 1 - x): a block only
 *   waits for blocks with lower tickets, which have started (and hold their
 *   SM) before it, so the waits cannot deadlock, whatever order the
 *   hardware starts blocks in. */
template <int D, bool DET>
__global__ void __launch_bounds__(BwdCfg<D>::NW * 32, BwdCfg<D>::MINB)
	bwd_fused_mma(float *__restrict__ dqw, bf16 *__restrict__ dq, int *__restrict__ sem,
		      bf16 *__restrict__ dk, bf16 *__restrict__ dv, const bf16 *__restrict__ dout,
		      const bf16 *__restrict__ q, const bf16 *__restrict__ k,
		      const bf16 *__restrict__ v, const float *__restrict__ lse,
		      const float *__restrict__ delta, const int32_t *__restrict__ seg, int T,
		      int H, int K, float scale, float scale_log2, int causal, int rot)
{
	constexpr int BC = BwdCfg<D>::BC, BR = BwdCfg<D>::BR, NW = BwdCfg<D>::NW, NT = NW * 32;
	constexpr int WPM = NW / (BR / 16), NQ = D / WPM; /* dQ: warps per 16 rows, their columns */
	constexpr int BRS = BwdCfg<D>::BRS;
	constexpr bool KVREG = BwdCfg<D>::KVREG;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bf16 *sK = (bf16 *)smem_raw;  /* BC x D */
	bf16 *sV = sK + BC * D;       /* BC x D */
	bf16 *sQ = sV + BC * D;       /* 2 x BR x D */
	bf16 *sO = sQ + 2 * BR * D;   /* 2 x BR x D, dout */
	bf16 *sS = sO + 2 * BR * D;   /* 2 x BC x BR, dSᵀ */
	float *sL = (float *)(sS + 2 * BC * BR); /* 2 x BR lse */
	float *sD = sL + 2 * BR;             /* 2 x BR delta */

	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	int bx = blockIdx.x, by = blockIdx.y, bz = blockIdx.z;
	if (DET && dqw) {
		__shared__ int ticket;
		if (tid == 0)
			ticket = atomicAdd(sem, 1);
		__syncthreads();
		bx = ticket % gridDim.x;
		by = ticket / gridDim.x % K;
		bz = ticket / gridDim.x / K;
	}
	const int nkb = gridDim.x, jb = DET ? nkb - 1 - bx : bx;
	const int g = by, b = bz, rep = H / K, k0 = jb * BC;
	const int64_t ldq = (int64_t)H * D, ldk = (int64_t)K * D;
	const int64_t koff = (int64_t)b * T * ldk + (int64_t)g * D;
	const int32_t *sg = seg ? seg + (int64_t)b * T : nullptr;
	/* The walk over the query tiles: causal, from the key block's diagonal
	 * tile qt0 to the last; not causal, over all tiles, from tile 0, or
	 * with rot from tile qt0, wrapping around to tile 0 after the last.
	 * Causal or rotated, each key block reaches a tile at least an
	 * iteration after the one before it in the order of the tile's dQ sum
	 * (see tile_of), so that the ordered sum seldom waits; from tile 0,
	 * each waits for the one before it, and the last for all. */
	const int nqa = (T + BR - 1) / BR, qt0 = causal || rot ? k0 / BR : 0;
	const int nqt = causal ? nqa - qt0 : nqa;
	const int nit = rep * nqt;
	auto qtile = [&](int it) {
		const int t = qt0 + it % nqt;
		return t < nqa ? t : t - nqa;
	};

	/* Iteration it: query head g*rep + it/nqt, query tile qtile(it). */
	auto load_q = [&](int it, int stage) {
		const int h = g * rep + it / nqt, q0 = qtile(it) * BR;
		const int64_t qoff = (int64_t)b * T * ldq + (int64_t)h * D;
		load_tile<D, BR, NT>(sQ + stage * BR * D, q + qoff, ldq, q0, T, tid);
		load_tile<D, BR, NT>(sO + stage * BR * D, dout + qoff, ldq, q0, T, tid);
		if (tid < BR) {
			const int i = q0 + tid;
			const float *src = delta + ((int64_t)b * H + h) * T;
			cp_async4(smem_u32(sD + stage * BR + tid), src + (i < T ? i : 0), i < T);
		}
	};
	/* lse of iteration it's row q0 + r, as read from global memory (-inf
	 * past T), and as staged: in log2 units, +inf for a row that sees
	 * nothing so that exp2(s - L) is 0 on it */
	auto lse_of = [&](int it, int r) {
		const int h = g * rep + it / nqt, i = qtile(it) * BR + r;
		return i < T ? lse[((int64_t)b * H + h) * T + i] : -INFINITY;
	};
	auto lse_staged = [](float L) { return L == -INFINITY ? INFINITY : L * LOG2E; };

	load_tile<D, BC, NT>(sK, k + koff, ldk, k0, T, tid);
	load_tile<D, BC, NT>(sV, v + koff, ldk, k0, T, tid);
	load_q(0, 0);
	cp_commit();
	if (tid < BR)
		sL[tid] = lse_staged(lse_of(0, tid));

	const int j_lo = k0 + warp * 16 + (lane >> 2), j_hi = j_lo + 8;
	const int seg_lo = sg && j_lo < T ? sg[j_lo] : -1, seg_hi = sg && j_hi < T ? sg[j_hi] : -1;
	float ak[D / 8][4], av[D / 8][4];
#pragma unroll
	for (int n = 0; n < D / 8; n++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			ak[n][e] = av[n][e] = 0.f;
	uint32_t ka[KVREG ? D / 16 : 1][4], va[KVREG ? D / 16 : 1][4];

	/* This warp's piece of a dQ tile: rows m0.. (this thread's rows
	 * m0 + lane/4 and 8 more), columns n0.. */
	const int m0 = warp / WPM * 16, n0 = warp % WPM * NQ;
	/* DET: the sum of the earlier parts (0 for the first block of a tile)
	 * and, for key block 0, dq's old values, fetched by dq_fetch */
	float wsum[NQ / 8][4];
	uint32_t dold[NQ / 8][2];

	/* The part of query head h, rows q0.. from dSᵀ in buffer cS: A = dS
	 * from the stored dSᵀ (ldmatrix transposing), B = K as stored. */
	auto dq_part = [&](float (&acc)[NQ / 8][4], const bf16 *cS) {
#pragma unroll
		for (int n = 0; n < NQ / 8; n++)
			acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
		for (int kk = 0; kk < BC / 16; kk++) {
			uint32_t a[4];
			ldsm4t(a, smem_u32(cS + swz<BR>(kk * 16 + (lane & 7) + ((lane >> 4) << 3),
							m0 + (((lane >> 3) & 1) << 3))));
#pragma unroll
			for (int np = 0; np < NQ / 16; np++) {
				uint32_t bb[4];
				ld_b_kn<D>(bb, sK, kk * 16, n0 + np * 16, lane);
				mma16816(acc[2 * np], a, bb[0], bb[1]);
				mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
			}
		}
	};
	/* Iteration it's query head h, this thread's first row i0, and (DET)
	 * the tile's sum, whose order is the order in which the key blocks
	 * reach query tile qi: causal, jr (the block whose diagonal tile it
	 * is) down to 0; not causal, nkb - 1 down to 0, or with rot jr down to
	 * 0 then nkb - 1 down to jr + 1. This block comes at position pos of
	 * nc; cnt is the counter of this warp's piece. */
	auto tile_of = [&](int it, int &h, int &i0, int &pos, int &nc, int *&cnt) {
		const int qi = qtile(it), jr = causal || rot ? qi / (BC / BR) : nkb - 1;
		h = g * rep + it / nqt;
		i0 = qi * BR + m0 + (lane >> 2);
		nc = causal ? jr + 1 : nkb;
		pos = jr >= jb ? jr - jb : jr - jb + nkb;
		cnt = sem + 1 + (((int64_t)b * H + h) * nqa + qi) * NW + warp;
	};
	/* DET: lane 0's early read of the counter of iteration it's tile (when
	 * the block is not the tile's first) */
	int seen = 0;
	/* DET: the iteration whose part this warp stored last and has still to
	 * count (-1: none) */
	int rel = -1;
	auto dq_poll = [&](int it) {
		int h, i0, pos, nc;
		int *cnt;
		tile_of(it, h, i0, pos, nc, cnt);
		if (lane == 0 && pos > 0)
			seen = ld_acquire(cnt);
	};
	/* DET, when iteration it's part is due: wait for the parts before this
	 * block's in iteration it's tile and load their sum (and, in the last
	 * block, dq's old values). */
	auto dq_fetch = [&](int it) {
		int h, i0, pos, nc;
		int *cnt;
		tile_of(it, h, i0, pos, nc, cnt);
		const int64_t off = (int64_t)b * T * ldq + (int64_t)h * D + n0 + ((lane & 3) << 1);
		if (lane == 0 && pos > 0) {
			while (seen < pos)
				seen = ld_acquire(cnt);
		}
		__syncwarp();
#pragma unroll
		for (int hf = 0; hf < 2; hf++) {
			const int i = i0 + 8 * hf;
#pragma unroll
			for (int n = 0; n < NQ / 8; n++) {
				float2 w = make_float2(0.f, 0.f);
				if (pos > 0 && i < T)
					w = __ldcg((const float2 *)(dqw + off + i * ldq + n * 8));
				wsum[n][2 * hf] = w.x;
				wsum[n][2 * hf + 1] = w.y;
				dold[n][hf] = pos == nc - 1 && i < T ?
						      *(const uint32_t *)(dq + off + i * ldq + n * 8) : 0u;
			}
		}
	};
	/* iteration it's part acc: into dqw with atomics, or (DET) added to
	 * the fetched sum and passed on, or into dq by the last block */
	auto dq_out = [&](int it, const float (&acc)[NQ / 8][4]) {
		int h, i0, pos, nc;
		int *cnt;
		tile_of(it, h, i0, pos, nc, cnt);
		const int64_t off = (int64_t)b * T * ldq + (int64_t)h * D + n0 + ((lane & 3) << 1);
#pragma unroll
		for (int hf = 0; hf < 2; hf++) {
			const int i = i0 + 8 * hf;
			if (i >= T)
				continue;
#pragma unroll
			for (int n = 0; n < NQ / 8; n++) {
				float2 x = make_float2(acc[n][2 * hf], acc[n][2 * hf + 1]);
				float2 *w = (float2 *)(dqw + off + i * ldq + n * 8);
				if (!DET) {
					atomicAdd(w, x);
					continue;
				}
				x.x += wsum[n][2 * hf];
				x.y += wsum[n][2 * hf + 1];
				if (pos < nc - 1) {
					__stcg(w, x);
				} else {
					__nv_bfloat162 o = *(const __nv_bfloat162 *)&dold[n][hf];
					float2 of = __bfloat1622float2(o);
					*(__nv_bfloat162 *)(dq + off + i * ldq + n * 8) =
						__floats2bfloat162_rn(of.x + scale * x.x, of.y + scale * x.y);
				}
			}
		}
		if (DET && pos < nc - 1)
			rel = it;
	};
	/* DET: raise the count of the part stored last (rel): every lane's
	 * stores, then lane 0's fence */
	auto dq_release = [&]() {
		__syncwarp();
		if (lane == 0 && rel >= 0) {
			int h, i0, pos, nc;
			int *cnt;
			tile_of(rel, h, i0, pos, nc, cnt);
			fence_acq_rel();
			red_relaxed(cnt);
		}
		rel = -1;
	};

	for (int it = 0; it < nit; it++) {
		const int q0 = qtile(it) * BR, st = it & 1;
		/* Past the barrier iteration it's tiles have landed and every
		 * warp is done with iteration it - 1: with its stage of Q and
		 * dout (the next loads take it) and its dSᵀ buffer written. */
		cp_wait<0>();
		__syncthreads();
		/* the next lse read now, staged at the end of the iteration */
		float lnext = 0.f;
		if (it + 1 < nit) {
			load_q(it + 1, st ^ 1);
			cp_commit();
			if (tid < BR)
				lnext = lse_of(it + 1, tid);
		}
		if (dqw && it > 0) {
			float acc[NQ / 8][4];
			dq_part(acc, sS + ((it - 1) & 1) * BC * BR);
			if (DET)
				dq_fetch(it - 1);
			dq_out(it - 1, acc);
		}
		const bf16 *cQ = sQ + st * BR * D, *cO = sO + st * BR * D;
		const float *cL = sL + st * BR, *cD = sD + st * BR;

		if (KVREG && it == 0) {
#pragma unroll
			for (int kk = 0; kk < (KVREG ? D / 16 : 1); kk++) {
				ld_a<D>(ka[kk], sK, warp * 16, kk * 16, lane);
				ld_a<D>(va[kk], sV, warp * 16, kk * 16, lane);
			}
		}
		/* The query tile in sub-tiles of BRS queries: Sᵀ, dPᵀ, then Pᵀ, dSᵀ and
		 * their dV, dK products. */
#pragma unroll 1
		for (int hq = 0; hq < BR / BRS; hq++) {
			const int c0 = hq * BRS, qs = q0 + c0;
			/* A warp whose keys all lie past T or (causal) after the sub-tile's
			 * last query has Pᵀ = dSᵀ = 0: it only writes its zeros for dQ. */
			const bool live = k0 + warp * 16 < T && !(causal && k0 + warp * 16 > qs + BRS - 1);

			float s[BRS / 8][4], dp[BRS / 8][4];
#pragma unroll
			for (int n = 0; n < BRS / 8; n++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					s[n][e] = dp[n][e] = 0.f;
			if (live) {
#pragma unroll
				for (int kk = 0; kk < D / 16; kk++) {
					const int x = KVREG ? kk : 0;
					if (!KVREG) {
						ld_a<D>(ka[0], sK, warp * 16, kk * 16, lane);
						ld_a<D>(va[0], sV, warp * 16, kk * 16, lane);
					}
#pragma unroll
					for (int np = 0; np < BRS / 16; np++) {
						uint32_t bb[4];
						ld_b_nk<D>(bb, cQ, c0 + np * 16, kk * 16, lane);
						mma16816(s[2 * np], ka[x], bb[0], bb[1]);
						mma16816(s[2 * np + 1], ka[x], bb[2], bb[3]);
						ld_b_nk<D>(bb, cO, c0 + np * 16, kk * 16, lane);
						mma16816(dp[2 * np], va[x], bb[0], bb[1]);
						mma16816(dp[2 * np + 1], va[x], bb[2], bb[3]);
					}
				}
			}

			const bool need_mask = qs + BRS > T || k0 + warp * 16 + 16 > T || sg ||
					       (causal && qs < k0 + warp * 16 + 15);
			/* Pᵀ and dSᵀ, columns are queries, packed to bf16 pairs in the C
			 * layout: pp[n][0] row lo, pp[n][1] row hi (0 for a warp that is not
			 * live). */
			uint32_t pp[BRS / 8][2], ds[BRS / 8][2];
#pragma unroll
			for (int n = 0; n < BRS / 8; n++)
				pp[n][0] = pp[n][1] = ds[n][0] = ds[n][1] = 0u;
			if (live) {
				/* Pᵀ into s; the masks in a loop of their own, so that the
				 * tiles without them run straight through */
#pragma unroll
				for (int n = 0; n < BRS / 8; n++)
#pragma unroll
					for (int e = 0; e < 4; e++)
						s[n][e] = ex2(s[n][e] * scale_log2 -
							      cL[c0 + n * 8 + ((lane & 3) << 1) + (e & 1)]);
				if (need_mask) {
#pragma unroll
					for (int n = 0; n < BRS / 8; n++)
#pragma unroll
						for (int e = 0; e < 4; e++) {
							const int i = qs + n * 8 + ((lane & 3) << 1) + (e & 1);
							const int j = e < 2 ? j_lo : j_hi;
							const int sj = e < 2 ? seg_lo : seg_hi;
							bool ok = i < T && j < T && (!causal || j <= i) &&
								  (!sg || (sj >= 0 && sg[i] == sj));
							if (!ok)
								s[n][e] = 0.f;
						}
				}
#pragma unroll
				for (int n = 0; n < BRS / 8; n++) {
					const int c = c0 + n * 8 + ((lane & 3) << 1);
					float de[4];
#pragma unroll
					for (int e = 0; e < 4; e++)
						de[e] = s[n][e] * (dp[n][e] - cD[c + (e & 1)]);
					pp[n][0] = pack_bf16(s[n][0], s[n][1]);
					pp[n][1] = pack_bf16(s[n][2], s[n][3]);
					ds[n][0] = pack_bf16(de[0], de[1]);
					ds[n][1] = pack_bf16(de[2], de[3]);
				}
			}
			if (dqw) {
				bf16 *cS = sS + st * BC * BR;
				const int r = warp * 16 + (lane >> 2), c = (lane & 3) << 1;
#pragma unroll
				for (int n = 0; n < BRS / 8; n++) {
					*(uint32_t *)(cS + swz<BR>(r, c0 + n * 8) + c) = ds[n][0];
					*(uint32_t *)(cS + swz<BR>(r + 8, c0 + n * 8) + c) = ds[n][1];
				}
			}

			if (DET && dqw && hq == BR / BRS - 1)
				dq_poll(it);
			if (DET && dqw && hq == 0)
				dq_release();
			if (live) {
#pragma unroll
				for (int kk = 0; kk < BRS / 16; kk++) {
					/* two n8 tiles of C as one k16 A operand */
					const uint32_t ap[4] = {pp[2 * kk][0], pp[2 * kk][1], pp[2 * kk + 1][0],
								pp[2 * kk + 1][1]};
					const uint32_t as[4] = {ds[2 * kk][0], ds[2 * kk][1], ds[2 * kk + 1][0],
								ds[2 * kk + 1][1]};
#pragma unroll
					for (int dd = 0; dd < D / 16; dd++) {
						uint32_t bb[4];
						ld_b_kn<D>(bb, cO, c0 + kk * 16, dd * 16, lane);
						mma16816(av[2 * dd], ap, bb[0], bb[1]);
						mma16816(av[2 * dd + 1], ap, bb[2], bb[3]);
						ld_b_kn<D>(bb, cQ, c0 + kk * 16, dd * 16, lane);
						mma16816(ak[2 * dd], as, bb[0], bb[1]);
						mma16816(ak[2 * dd + 1], as, bb[2], bb[3]);
					}
				}
			}
		}
		if (it + 1 < nit && tid < BR)
			sL[(st ^ 1) * BR + tid] = lse_staged(lnext);
	}
	/* the last iteration's dQ */
	if (dqw && nit > 0) {
		__syncthreads();
		float acc[NQ / 8][4];
		dq_part(acc, sS + ((nit - 1) & 1) * BC * BR);
		if (DET)
			dq_fetch(nit - 1);
		dq_out(nit - 1, acc);
		if (DET)
			dq_release();
	}

	const int64_t c0 = koff + ((lane & 3) << 1);
#pragma unroll
	for (int n = 0; n < D / 8; n++) {
#pragma unroll
		for (int half = 0; half < 2; half++) {
			const int j = half ? j_hi : j_lo;
			if (j >= T)
				continue;
			const int64_t off = c0 + j * ldk + n * 8;
			if (dk) {
				__nv_bfloat162 *p = (__nv_bfloat162 *)(dk + off);
				float2 old = __bfloat1622float2(*p);
				*p = __floats2bfloat162_rn(old.x + scale * ak[n][2 * half],
							   old.y + scale * ak[n][2 * half + 1]);
			}
			if (dv) {
				__nv_bfloat162 *p = (__nv_bfloat162 *)(dv + off);
				float2 old = __bfloat1622float2(*p);
				*p = __floats2bfloat162_rn(old.x + av[n][2 * half],
							   old.y + av[n][2 * half + 1]);
			}
		}
	}
}

/* dq += scale w, 8 elements a thread (w the float32 sums of bwd_fused_mma's
 * atomics). */
__global__ void dq_add(bf16 *__restrict__ dq, const float *__restrict__ w, int64_t n8, float scale)
{
	for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < n8;
	     x += (int64_t)gridDim.x * blockDim.x) {
		const float4 lo = ((const float4 *)w)[2 * x], hi = ((const float4 *)w)[2 * x + 1];
		uint4 u = ((const uint4 *)dq)[x];
		__nv_bfloat162 *h2 = (__nv_bfloat162 *)&u;
		const float f[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
		for (int e = 0; e < 4; e++) {
			float2 o = __bfloat1622float2(h2[e]);
			h2[e] = __floats2bfloat162_rn(o.x + scale * f[2 * e], o.y + scale * f[2 * e + 1]);
		}
		((uint4 *)dq)[x] = u;
	}
}

/* ------------------------------------------------ simple kernels (any D) */

/* One warp per row; lane l holds elements d = l + 32 t of a D-vector, t <
 * NT = ceil(D/32) <= 8. WPB warps per block. */
#define WPB 4

/* Block (x, h, b): its warps take consecutive queries i of head h, so that
 * their key rows meet in L1. */
template <typename Tin, int NT>
__global__ void __launch_bounds__(WPB * 32)
	fwd_simple(Tin *__restrict__ out, float *__restrict__ lse, const Tin *__restrict__ q,
		   const Tin *__restrict__ k, const Tin *__restrict__ v,
		   const int32_t *__restrict__ seg, int B, int T, int H, int K, int D, float scale,
		   int causal)
{
	__shared__ float sq[WPB][NT * 32], sp[WPB][32];
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int i = blockIdx.x * WPB + warp, h = blockIdx.y, b = blockIdx.z;
	if (i >= T)
		return;
	const int g = h / (H / K);
	const int64_t ldk = (int64_t)K * D, row = ((int64_t)b * T + i) * H + h;
	const Tin *kb = k + (int64_t)b * T * ldk + (int64_t)g * D;
	const Tin *vb = v + (int64_t)b * T * ldk + (int64_t)g * D;
	const int32_t *sg = seg ? seg + (int64_t)b * T : nullptr;
	float *qs = sq[warp];
#pragma unroll
	for (int t = 0; t < NT; t++) {
		const int d = lane + 32 * t;
		qs[d] = d < D ? ldf(q + row * D + d) : 0.f;
	}
	__syncwarp();

	int jend = causal ? i + 1 : T;
	const int si = sg ? sg[i] : 0;
	if (sg && si < 0)
		jend = 0;
	float m = -INFINITY, l = 0.f, o[NT];
#pragma unroll
	for (int t = 0; t < NT; t++)
		o[t] = 0.f;
	for (int j0 = 0; j0 < jend; j0 += 32) {
		const int j = j0 + lane;
		const bool ok = j < jend && (!sg || sg[j] == si);
		float s = -INFINITY;
		if (ok) {
			const Tin *kj = kb + j * ldk;
			float acc = 0.f;
			for (int d = 0; d < D; d++)
				acc += qs[d] * ldf(kj + d);
			s = scale * acc;
		}
		const float mn = fmaxf(m, warp_max(s));
		if (mn == -INFINITY)
			continue; /* nothing visible yet (uniform over the warp) */
		const float corr = expf(m - mn), p = ok ? expf(s - mn) : 0.f;
		l = l * corr + warp_sum(p);
		m = mn;
#pragma unroll
		for (int t = 0; t < NT; t++)
			o[t] *= corr;
		/* the weights through shared memory rather than shuffles, so
		 * that the loop below may skip zeros without a divergent
		 * shuffle (whose slow path costs stack) */
		sp[warp][lane] = p;
		__syncwarp();
		const int nj = min(32, jend - j0);
		for (int jj = 0; jj < nj; jj++) {
			const float pj = sp[warp][jj];
			if (pj == 0.f)
				continue;
			const Tin *vj = vb + (j0 + jj) * ldk;
#pragma unroll
			for (int t = 0; t < NT; t++) {
				const int d = lane + 32 * t;
				if (d < D)
					o[t] += pj * ldf(vj + d);
			}
		}
		__syncwarp();
	}
	const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
	for (int t = 0; t < NT; t++) {
		const int d = lane + 32 * t;
		if (d < D)
			stf(out + row * D + d, o[t] * inv);
	}
	if (lane == 0)
		lse[((int64_t)b * H + h) * T + i] = l > 0.f ? m + logf(l) : -INFINITY;
}

/* delta[b,h,i] = dout_i · out_i, 0 for a row that sees nothing (as the CPU
 * kernel leaves it). One warp per (b,i,h) row. */
template <typename Tin>
__global__ void __launch_bounds__(WPB * 32)
	delta_kernel(float *__restrict__ delta, const Tin *__restrict__ dout,
		     const Tin *__restrict__ out, const float *__restrict__ lse, int B, int T, int H,
		     int D)
{
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int i = blockIdx.x * WPB + warp, h = blockIdx.y, b = blockIdx.z;
	if (i >= T)
		return;
	const int64_t row = ((int64_t)b * T + i) * H + h;
	const int64_t at = ((int64_t)b * H + h) * T + i;
	float s = 0.f;
	for (int d = lane; d < D; d += 32)
		s += ldf(dout + row * D + d) * ldf(out + row * D + d);
	s = warp_sum(s);
	if (lane == 0)
		delta[at] = lse[at] == -INFINITY ? 0.f : s;
}

/* The same for BF16 rows of D = 8 TPR elements (TPR a power of two up to
 * 32, rows 16-byte aligned): a thread per 16 bytes, 32/TPR rows a warp. */
template <int TPR>
__global__ void __launch_bounds__(256)
	delta_bf16(float *__restrict__ delta, const bf16 *__restrict__ dout,
		   const bf16 *__restrict__ out, const float *__restrict__ lse, int64_t rows, int T,
		   int H)
{
	const int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, r = t / TPR;
	float s = 0.f;
	if (r < rows) {
		const uint4 a = ((const uint4 *)dout)[t], c = ((const uint4 *)out)[t];
		const __nv_bfloat162 *x = (const __nv_bfloat162 *)&a, *y = (const __nv_bfloat162 *)&c;
#pragma unroll
		for (int e = 0; e < 4; e++) {
			const float2 fx = __bfloat1622float2(x[e]), fy = __bfloat1622float2(y[e]);
			s += fx.x * fy.x + fx.y * fy.y;
		}
	}
#pragma unroll
	for (int o = TPR / 2; o > 0; o >>= 1)
		s += __shfl_xor_sync(FULL, s, o);
	if (r < rows && t % TPR == 0) {
		/* row r is (b, i, h) */
		const int64_t bi = r / H, at = ((bi / T) * H + r % H) * T + bi % T;
		delta[at] = lse[at] == -INFINITY ? 0.f : s;
	}
}

template <int TPR>
static int delta_bf16_launch(cudaStream_t st, float *delta, const void *dout, const void *out,
			     const float *lse, int64_t rows, int T, int H)
{
	const int64_t n = rows * TPR;
	delta_bf16<TPR><<<(unsigned)((n + 255) / 256), 256, 0, st>>>(
		delta, (const bf16 *)dout, (const bf16 *)out, lse, rows, T, H);
	LMK_CK_LAUNCH();
	return 0;
}

/* dq_i += scale Σ_j p_ij (dout_i·v_j - delta_i) k_j, a warp per query row. */
template <typename Tin, int NT>
__global__ void __launch_bounds__(WPB * 32)
	dq_simple(Tin *__restrict__ dq, const Tin *__restrict__ dout, const Tin *__restrict__ q,
		  const Tin *__restrict__ k, const Tin *__restrict__ v,
		  const float *__restrict__ lse, const float *__restrict__ delta,
		  const int32_t *__restrict__ seg, int B, int T, int H, int K, int D, float scale,
		  int causal)
{
	__shared__ float sq[WPB][NT * 32], so[WPB][NT * 32], sds[WPB][32];
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int i = blockIdx.x * WPB + warp, h = blockIdx.y, b = blockIdx.z;
	if (i >= T)
		return;
	const int g = h / (H / K);
	const int64_t ldk = (int64_t)K * D, row = ((int64_t)b * T + i) * H + h;
	const int64_t at = ((int64_t)b * H + h) * T + i;
	const float L = lse[at], di = delta[at];
	if (L == -INFINITY)
		return;
	const Tin *kb = k + (int64_t)b * T * ldk + (int64_t)g * D;
	const Tin *vb = v + (int64_t)b * T * ldk + (int64_t)g * D;
	const int32_t *sg = seg ? seg + (int64_t)b * T : nullptr;
	float *qs = sq[warp], *os = so[warp];
#pragma unroll
	for (int t = 0; t < NT; t++) {
		const int d = lane + 32 * t;
		qs[d] = d < D ? ldf(q + row * D + d) : 0.f;
		os[d] = d < D ? ldf(dout + row * D + d) : 0.f;
	}
	__syncwarp();
	const int jend = causal ? i + 1 : T;
	const int si = sg ? sg[i] : 0;
	float acc[NT];
#pragma unroll
	for (int t = 0; t < NT; t++)
		acc[t] = 0.f;
	for (int j0 = 0; j0 < jend; j0 += 32) {
		const int j = j0 + lane;
		float ds = 0.f;
		if (j < jend && (!sg || sg[j] == si)) {
			const Tin *kj = kb + j * ldk, *vj = vb + j * ldk;
			float s = 0.f, dp = 0.f;
			for (int d = 0; d < D; d++) {
				s += qs[d] * ldf(kj + d);
				dp += os[d] * ldf(vj + d);
			}
			ds = expf(scale * s - L) * (dp - di);
		}
		sds[warp][lane] = ds;
		__syncwarp();
		const int nj = min(32, jend - j0);
		for (int jj = 0; jj < nj; jj++) {
			const float dsj = sds[warp][jj];
			if (dsj == 0.f)
				continue;
			const Tin *kj = kb + (j0 + jj) * ldk;
#pragma unroll
			for (int t = 0; t < NT; t++) {
				const int d = lane + 32 * t;
				if (d < D)
					acc[t] += dsj * ldf(kj + d);
			}
		}
		__syncwarp();
	}
#pragma unroll
	for (int t = 0; t < NT; t++) {
		const int d = lane + 32 * t;
		if (d < D)
			stf(dq + row * D + d, ldf(dq + row * D + d) + scale * acc[t]);
	}
}

/* dk_j += scale Σ_{h,i} ds_ij q_i, dv_j += Σ_{h,i} p_ij dout_i over the query
 * heads h of kv head g: a warp per key row (b, j, g). */
template <typename Tin, int NT>
__global__ void __launch_bounds__(WPB * 32)
	dkdv_simple(Tin *__restrict__ dk, Tin *__restrict__ dv, const Tin *__restrict__ dout,
		    const Tin *__restrict__ q, const Tin *__restrict__ k,
		    const Tin *__restrict__ v, const float *__restrict__ lse,
		    const float *__restrict__ delta, const int32_t *__restrict__ seg, int B, int T,
		    int H, int K, int D, float scale, int causal)
{
	__shared__ float sk[WPB][NT * 32], sv[WPB][NT * 32], sp[WPB][32], sds[WPB][32];
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int j = blockIdx.x * WPB + warp, g = blockIdx.y, b = blockIdx.z;
	if (j >= T)
		return;
	const int rep = H / K;
	const int64_t ldq = (int64_t)H * D, krow = (((int64_t)b * T + j) * K + g) * D;
	const int32_t *sg = seg ? seg + (int64_t)b * T : nullptr;
	const int sj = sg ? sg[j] : 0;
	if (sg && sj < 0)
		return; /* no query sees a padding key */
	float *ks = sk[warp], *vs = sv[warp];
#pragma unroll
	for (int t = 0; t < NT; t++) {
		const int d = lane + 32 * t;
		ks[d] = d < D ? ldf(k + krow + d) : 0.f;
		vs[d] = d < D ? ldf(v + krow + d) : 0.f;
	}
	__syncwarp();
	float ak[NT], av[NT];
#pragma unroll
	for (int t = 0; t < NT; t++)
		ak[t] = av[t] = 0.f;
	for (int h = g * rep; h < (g + 1) * rep; h++) {
		const Tin *qh = q + (int64_t)b * T * ldq + (int64_t)h * D;
		const Tin *oh = dout + (int64_t)b * T * ldq + (int64_t)h * D;
		const float *Lh = lse + ((int64_t)b * H + h) * T, *Dh = delta + ((int64_t)b * H + h) * T;
		for (int i0 = causal ? j : 0; i0 < T; i0 += 32) {
			const int i = i0 + lane;
			float p = 0.f, ds = 0.f;
			if (i < T && (!sg || sg[i] == sj) && Lh[i] != -INFINITY) {
				const Tin *qi = qh + i * ldq, *oi = oh + i * ldq;
				float s = 0.f, dp = 0.f;
				for (int d = 0; d < D; d++) {
					s += ldf(qi + d) * ks[d];
					dp += ldf(oi + d) * vs[d];
				}
				p = expf(scale * s - Lh[i]);
				ds = p * (dp - Dh[i]);
			}
			sp[warp][lane] = p;
			sds[warp][lane] = ds;
			__syncwarp();
			const int ni = min(32, T - i0);
			for (int ii = 0; ii < ni; ii++) {
				const float pi = sp[warp][ii], dsi = sds[warp][ii];
				if (pi == 0.f && dsi == 0.f)
					continue;
				const Tin *qi = qh + (i0 + ii) * ldq, *oi = oh + (i0 + ii) * ldq;
#pragma unroll
				for (int t = 0; t < NT; t++) {
					const int d = lane + 32 * t;
					if (d < D) {
						av[t] += pi * ldf(oi + d);
						ak[t] += dsi * ldf(qi + d);
					}
				}
			}
			__syncwarp();
		}
	}
#pragma unroll
	for (int t = 0; t < NT; t++) {
		const int d = lane + 32 * t;
		if (d >= D)
			continue;
		if (dk)
			stf(dk + krow + d, ldf(dk + krow + d) + scale * ak[t]);
		if (dv)
			stf(dv + krow + d, ldf(dv + krow + d) + av[t]);
	}
}

/* ------------------------------------------------------------- decode */

/* Block (s, h) reduces keys [s*chunk, (s+1)*chunk) of the cache to (m, l, o)
 * in log2 units by the key scan of decode_scan.cuh (DEC_THREADS / tpr keys
 * in flight); with one split it writes out directly. */
#define DEC_THREADS 128

template <typename Tin, bool VEC>
__global__ void __launch_bounds__(DEC_THREADS)
	decode_part(Tin *__restrict__ out, float *__restrict__ part /*(H,nsplit,D+2)*/,
		    const Tin *__restrict__ q, const Tin *__restrict__ kc,
		    const Tin *__restrict__ vc, int Tk, int H, int K, int D, float scale_log2,
		    int chunk, int tpr)
{
	__shared__ float sm_m[DEC_THREADS], sm_l[DEC_THREADS], sm_o[DEC_THREADS * 8];
	const int tid = threadIdx.x, s = blockIdx.x, h = blockIdx.y, nsplit = gridDim.x;
	const int g = h / (H / K), G = DEC_THREADS / tpr, grp = tid / tpr, sub = tid % tpr;
	const int jb = s * chunk, je = min(Tk, jb + chunk);
	dec_scan<Tin, VEC>(sm_m, sm_l, sm_o, q, kc, vc, h, g, K, D, scale_log2, jb, je, G, grp,
			   sub, tpr);
	__syncthreads();
	float M = -INFINITY;
	for (int x = 0; x < G; x++)
		M = fmaxf(M, sm_m[x]);
	const float Mu = M == -INFINITY ? 0.f : M;
	float L = 0.f;
	for (int x = 0; x < G; x++)
		L += sm_l[x] * exp2f(sm_m[x] - Mu);
	for (int d = tid; d < D; d += DEC_THREADS) {
		float acc = 0.f;
		for (int x = 0; x < G; x++)
			acc += sm_o[x * D + d] * exp2f(sm_m[x] - Mu);
		if (nsplit == 1)
			stf(out + (int64_t)h * D + d, L > 0.f ? acc / L : 0.f);
		else
			part[((int64_t)h * nsplit + s) * (D + 2) + 2 + d] = acc;
	}
	if (nsplit > 1 && tid == 0) {
		part[((int64_t)h * nsplit + s) * (D + 2)] = M;
		part[((int64_t)h * nsplit + s) * (D + 2) + 1] = L;
	}
}

template <typename Tin>
__global__ void __launch_bounds__(DEC_THREADS)
	decode_merge(Tin *__restrict__ out, const float *__restrict__ part, int nsplit, int D)
{
	const int h = blockIdx.x;
	dec_merge<DEC_THREADS>(part + (int64_t)h * nsplit * (D + 2), nsplit, D,
			       [&](int d, float v) { stf(out + (int64_t)h * D + d, v); });
}

/* --------------------------------------------------------------- host */

static int check_shape(const char *fn, lmk_dtype dt, int64_t B, int64_t T, int64_t H, int64_t K,
		       int64_t D)
{
	if (dt != LMK_F32 && dt != LMK_BF16)
		return lmk_err(LMK_EINVAL, "%s: dtype %s: expected F32 or BF16", fn,
			       lmk_dtype_name(dt));
	if (B < 0 || T < 0 || H < 1 || K < 1 || D < 1 || H % K)
		return lmk_err(LMK_EINVAL,
			       "%s: B %lld, T %lld, H %lld, K %lld, D %lld: expected positive "
			       "heads and dims, H a multiple of K",
			       fn, (long long)B, (long long)T, (long long)H, (long long)K,
			       (long long)D);
	if (D > 256)
		return lmk_err(LMK_EUNSUP, "%s: head dim %lld: expected at most 256", fn,
			       (long long)D);
	/* int indices inside the kernels; grids of at most 2^30 blocks */
	if (T > INT32_MAX / 2 || B > 65535 || H > 65535 || B * H * T > ((int64_t)1 << 32))
		return lmk_err(LMK_EUNSUP, "%s: B %lld, T %lld, H %lld: too large", fn,
			       (long long)B, (long long)T, (long long)H);
	return 0;
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* The mma kernels need BF16, a specialised head dim and 16-byte rows. */
static bool use_mma(lmk_dtype dt, int64_t D, const void *a, const void *b, const void *c,
		    const void *d, const void *e)
{
	return dt == LMK_BF16 && (D == 64 || D == 128) && aligned16(a) && aligned16(b) &&
	       aligned16(c) && aligned16(d) && (!e || aligned16(e));
}

template <typename K> static int set_smem(K kernel, size_t bytes)
{
	LMK_CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)bytes));
	return 0;
}

template <int D>
static int fwd_mma_launch(cudaStream_t st, void *out, float *lse, const void *q, const void *k,
			  const void *v, const int32_t *seg, int B, int T, int H, int K,
			  float scale, int causal)
{
	using C = FwdCfg<D>;
	const size_t smem = (size_t)(C::BR + 4 * C::BC) * D * sizeof(bf16);
	int rc = set_smem(fwd_mma<D>, smem);
	if (rc < 0)
		return rc;
	dim3 grid((T + C::BR - 1) / C::BR, H, B);
	fwd_mma<D><<<grid, C::NW * 32, smem, st>>>((bf16 *)out, lse, (const bf16 *)q,
						   (const bf16 *)k, (const bf16 *)v, seg, T, H, K,
						   scale * LOG2E, causal);
	LMK_CK_LAUNCH();
	return 0;
}

template <typename Tin, int NT>
static int fwd_simple_launch(cudaStream_t st, void *out, float *lse, const void *q,
			     const void *k, const void *v, const int32_t *seg, int B, int T,
			     int H, int K, int D, float scale, int causal)
{
	dim3 grid((T + WPB - 1) / WPB, H, B);
	fwd_simple<Tin, NT><<<grid, WPB * 32, 0, st>>>(
		(Tin *)out, lse, (const Tin *)q, (const Tin *)k, (const Tin *)v, seg, B, T, H, K,
		D, scale, causal);
	LMK_CK_LAUNCH();
	return 0;
}

/* Calls F<Tin, NT> for NT = ceil(D/32), D <= 256. */
#define SIMPLE_DISPATCH(F, Tin, D, ...)                                  \
	switch ((int)(((D) + 31) / 32)) {                                  \
	case 1: return F<Tin, 1>(__VA_ARGS__);                             \
	case 2: return F<Tin, 2>(__VA_ARGS__);                             \
	case 3: return F<Tin, 3>(__VA_ARGS__);                             \
	case 4: return F<Tin, 4>(__VA_ARGS__);                             \
	case 5: return F<Tin, 5>(__VA_ARGS__);                             \
	case 6: return F<Tin, 6>(__VA_ARGS__);                             \
	case 7: return F<Tin, 7>(__VA_ARGS__);                             \
	default: return F<Tin, 8>(__VA_ARGS__);                            \
	}

extern "C" int lmk_cuda_attention_forward(void *be, lmk_dtype dt, void *out, float *lse,
					  const void *q, const void *k, const void *v,
					  const int32_t *seg, int64_t B, int64_t T, int64_t H,
					  int64_t K, int64_t D, float scale, int causal)
{
	int rc = check_shape("attention forward", dt, B, T, H, K, D);
	if (rc < 0 || B == 0 || T == 0)
		return rc;
	cudaStream_t st = stream_of(be);
	causal = causal != 0;
	/* the mma forward keeps its running max on the unscaled logits */
	if (use_mma(dt, D, out, q, k, v, nullptr) && scale > 0.f) {
		if (attention_wg_usable())
			return attention_wg_forward(st, (bf16 *)out, lse, (const bf16 *)q,
						    (const bf16 *)k, (const bf16 *)v, seg, (int)B,
						    (int)T, (int)H, (int)K, (int)D, scale, causal);
		if (D == 64)
			return fwd_mma_launch<64>(st, out, lse, q, k, v, seg, (int)B, (int)T, (int)H,
						  (int)K, scale, causal);
		return fwd_mma_launch<128>(st, out, lse, q, k, v, seg, (int)B, (int)T, (int)H,
					   (int)K, scale, causal);
	}
	if (dt == LMK_BF16) {
		SIMPLE_DISPATCH(fwd_simple_launch, bf16, D, st, out, lse, q, k, v, seg, (int)B,
				(int)T, (int)H, (int)K, (int)D, scale, causal)
	}
	SIMPLE_DISPATCH(fwd_simple_launch, float, D, st, out, lse, q, k, v, seg, (int)B, (int)T,
			(int)H, (int)K, (int)D, scale, causal)
}

/* The fused backward; det picks the ordered dQ sum over the atomic one. */
template <int D>
static int bwd_fused_launch(void *be, cudaStream_t st, bool det, bool wg, void *dq, void *dk,
			    void *dv, const float *delta, const void *dout, const void *q,
			    const void *k, const void *v, const float *lse, const int32_t *seg,
			    int B, int T, int H, int K, float scale, int causal, int assign)
{
	using C = BwdCfg<D>;
	/* wg: the ordered sum on Hopper, attention_wg.cu's wgmma kernel (its
	 * blocks the same keys, its query tiles ATTN_WG_BR rows) */
	static_assert(ATTN_WG_BC == C::BC && ATTN_WG_NW == C::NW, "wg blocks");
	const int br = wg ? ATTN_WG_BR : C::BR;
	const size_t smem = (size_t)(2 * C::BC + 4 * C::BR + 2 * C::BC * C::BR / D) * D * sizeof(bf16) +
			    4 * C::BR * sizeof(float);
	int rc = wg ? 0 : det ? set_smem(bwd_fused_mma<D, true>, smem) :
			       set_smem(bwd_fused_mma<D, false>, smem);
	if (rc < 0)
		return rc;
	/* dq's float32 sums (B,T,H,D): zeroed for the atomics, which dq_add
	 * then rounds into dq; for the ordered sum, followed by the ticket and
	 * the counters (B,H,query tiles,warps), zeroed */
	const int64_t n = (int64_t)B * T * H * D;
	const int64_t nsem = det ? 1 + (int64_t)B * H * ((T + br - 1) / br) * C::NW : 0;
	const size_t bytes = (size_t)(n + nsem) * sizeof(float);
	float *w = nullptr;
	int *sem = nullptr;
	if (dq) {
#if HAVE_BACKEND_H
		w = (float *)lmk_cuda_scratch((lmk_cuda_backend *)be, bytes);
		if (!w)
			return lmk_errcode();
#else
		LMK_CK(cudaMallocAsync((void **)&w, bytes, st));
#endif
		sem = (int *)(w + n);
		if (det)
			LMK_CK(cudaMemsetAsync(sem, 0, (size_t)nsem * sizeof(int), st));
		else
			LMK_CK(cudaMemsetAsync(w, 0, (size_t)n * sizeof(float), st));
	}
	dim3 grid((T + C::BC - 1) / C::BC, K, B);
	/* Not causal, the ordered sum's rotated walk makes a key block wait
	 * for the one after it in the order of start at the wrap: it cannot
	 * deadlock when all key blocks of a head fit on the device at once
	 * (with half of it to spare for other streams' kernels). */
#if HAVE_BACKEND_H
	const int rot = !causal && 2 * (int)grid.x <= ((lmk_cuda_backend *)be)->sm_count;
#else
	const int rot = 0;
#endif
	if (wg) {
		rc = attention_wg_backward(st, w, (bf16 *)dq, sem, (bf16 *)dk, (bf16 *)dv,
					   (const bf16 *)dout, (const bf16 *)q, (const bf16 *)k,
					   (const bf16 *)v, lse, delta, seg, B, T, H, K, D, scale,
					   causal, rot, assign);
#if !HAVE_BACKEND_H
		if (w)
			LMK_CK(cudaFreeAsync(w, st));
#endif
		return rc;
	}
	if (det)
		bwd_fused_mma<D, true><<<grid, C::NW * 32, smem, st>>>(
			w, (bf16 *)dq, sem, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
			(const bf16 *)q, (const bf16 *)k, (const bf16 *)v, lse, delta, seg, T, H, K,
			scale, scale * LOG2E, causal, rot);
	else
		bwd_fused_mma<D, false><<<grid, C::NW * 32, smem, st>>>(
			w, nullptr, nullptr, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
			(const bf16 *)q, (const bf16 *)k, (const bf16 *)v, lse, delta, seg, T, H, K,
			scale, scale * LOG2E, causal, rot);
	cudaError_t e = cudaGetLastError();
	if (e == cudaSuccess && dq && !det) {
		const int64_t n8 = n / 8;
		const int blocks = (int)std::min<int64_t>((n8 + 255) / 256, 8192);
		dq_add<<<blocks, 256, 0, st>>>((bf16 *)dq, w, n8, scale);
		e = cudaGetLastError();
	}
#if !HAVE_BACKEND_H
	if (w)
		LMK_CK(cudaFreeAsync(w, st));
#endif
	LMK_CK(e);
	return 0;
}

template <typename Tin, int NT>
static int bwd_simple_launch(cudaStream_t st, void *dq, void *dk, void *dv, const float *delta,
			     const void *dout, const void *q, const void *k, const void *v,
			     const float *lse, const int32_t *seg, int B, int T, int H, int K, int D,
			     float scale, int causal)
{
	if (dq) {
		dim3 grid((T + WPB - 1) / WPB, H, B);
		dq_simple<Tin, NT><<<grid, WPB * 32, 0, st>>>(
			(Tin *)dq, (const Tin *)dout, (const Tin *)q, (const Tin *)k,
			(const Tin *)v, lse, delta, seg, B, T, H, K, D, scale, causal);
		LMK_CK_LAUNCH();
	}
	if (dk || dv) {
		dim3 grid((T + WPB - 1) / WPB, K, B);
		dkdv_simple<Tin, NT><<<grid, WPB * 32, 0, st>>>(
			(Tin *)dk, (Tin *)dv, (const Tin *)dout, (const Tin *)q, (const Tin *)k,
			(const Tin *)v, lse, delta, seg, B, T, H, K, D, scale, causal);
		LMK_CK_LAUNCH();
	}
	return 0;
}

extern "C" int lmk_cuda_attention_backward(void *be, lmk_dtype dt, void *dq, void *dk, void *dv,
					   float *delta, const void *dout, const void *q,
					   const void *k, const void *v, const void *out,
					   const float *lse, const int32_t *seg, int64_t B,
					   int64_t T, int64_t H, int64_t K, int64_t D, float scale,
					   int causal, int assign)
{
	int rc = check_shape("attention backward", dt, B, T, H, K, D);
	if (rc < 0 || B == 0 || T == 0)
		return rc;
	cudaStream_t st = stream_of(be);
	causal = causal != 0;
	const dim3 nb((unsigned)((T + WPB - 1) / WPB), (unsigned)H, (unsigned)B);
	const int64_t rows = B * T * H;
	if (dt == LMK_BF16 && D % 8 == 0 && 32 % (D / 8) == 0 && aligned16(dout) && aligned16(out)) {
		switch ((int)D / 8) {
		case 1: rc = delta_bf16_launch<1>(st, delta, dout, out, lse, rows, (int)T, (int)H); break;
		case 2: rc = delta_bf16_launch<2>(st, delta, dout, out, lse, rows, (int)T, (int)H); break;
		case 4: rc = delta_bf16_launch<4>(st, delta, dout, out, lse, rows, (int)T, (int)H); break;
		case 8: rc = delta_bf16_launch<8>(st, delta, dout, out, lse, rows, (int)T, (int)H); break;
		case 16: rc = delta_bf16_launch<16>(st, delta, dout, out, lse, rows, (int)T, (int)H); break;
		default: rc = delta_bf16_launch<32>(st, delta, dout, out, lse, rows, (int)T, (int)H);
		}
		if (rc < 0)
			return rc;
	} else {
		if (dt == LMK_BF16)
			delta_kernel<bf16><<<nb, WPB * 32, 0, st>>>(delta, (const bf16 *)dout,
								    (const bf16 *)out, lse, (int)B,
								    (int)T, (int)H, (int)D);
		else
			delta_kernel<float><<<nb, WPB * 32, 0, st>>>(delta, (const float *)dout,
								     (const float *)out, lse, (int)B,
								     (int)T, (int)H, (int)D);
		LMK_CK_LAUNCH();
	}
	if (!dq && !dk && !dv)
		return 0;
	const bool mma = use_mma(dt, D, dout, q, k, v, dq) && (!dk || aligned16(dk)) &&
			 (!dv || aligned16(dv));
	const bool det = !nondeterministic(be), wg = mma && det && attention_wg_usable();
	/* The wgmma kernel assigns the gradients assign names; the others
	 * add, so those are zeroed first. */
	if (!wg) {
		const size_t es = dt == LMK_BF16 ? 2 : 4;
		void *g[3] = {dq, dk, dv};
		const int64_t ng[3] = {B * T * H * D, B * T * K * D, B * T * K * D};
		for (int i = 0; i < 3; i++)
			if (assign >> i & 1 && g[i])
				LMK_CK(cudaMemsetAsync(g[i], 0, (size_t)ng[i] * es, st));
	}
	if (mma) {
		if (D == 64)
			return bwd_fused_launch<64>(be, st, det, wg, dq, dk, dv, delta, dout, q, k, v,
						    lse, seg, (int)B, (int)T, (int)H, (int)K, scale,
						    causal, assign);
		return bwd_fused_launch<128>(be, st, det, wg, dq, dk, dv, delta, dout, q, k, v, lse,
					     seg, (int)B, (int)T, (int)H, (int)K, scale, causal,
					     assign);
	}
	if (dt == LMK_BF16) {
		SIMPLE_DISPATCH(bwd_simple_launch, bf16, D, st, dq, dk, dv, delta, dout, q, k, v,
				lse, seg, (int)B, (int)T, (int)H, (int)K, (int)D, scale, causal)
	}
	SIMPLE_DISPATCH(bwd_simple_launch, float, D, st, dq, dk, dv, delta, dout, q, k, v, lse,
			seg, (int)B, (int)T, (int)H, (int)K, (int)D, scale, causal)
}

extern "C" void lmk_cuda_attention_set_nondeterministic(void *be, int on)
{
#if HAVE_BACKEND_H
	((lmk_cuda_backend *)be)->nondeterministic = on != 0;
#else
	(void)be;
	(void)on;
#endif
}

template <typename Tin, bool VEC>
static int decode_launch(void *be, cudaStream_t st, void *out, const void *q, const void *kc,
			 const void *vc, int Tk, int H, int K, int D, float scale)
{
	int dev = 0, sms = 132;
	LMK_CK(cudaGetDevice(&dev));
	LMK_CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
	int tpr = 1;
	while (tpr * 8 < D)
		tpr <<= 1;
	/* Enough blocks for two waves, but at least 256 keys per block so
	 * that the merge stays cheap. */
	int nsplit = (2 * sms + H - 1) / H;
	nsplit = max(1, min(nsplit, (Tk + 255) / 256));
	const int chunk = (Tk + nsplit - 1) / nsplit;
	nsplit = (Tk + chunk - 1) / chunk;
	/* the parts: (m, l, o[D]) per (head, split) */
	const size_t bytes = (size_t)H * nsplit * (D + 2) * sizeof(float);
	float *part = nullptr;
	if (nsplit > 1) {
#if HAVE_BACKEND_H
		part = (float *)lmk_cuda_scratch((lmk_cuda_backend *)be, bytes);
		if (!part)
			return lmk_errcode();
#else
		LMK_CK(cudaMallocAsync((void **)&part, bytes, st));
#endif
	}
	dim3 grid(nsplit, H);
	decode_part<Tin, VEC><<<grid, DEC_THREADS, 0, st>>>((Tin *)out, part, (const Tin *)q,
							    (const Tin *)kc, (const Tin *)vc, Tk, H,
							    K, D, scale * LOG2E, chunk, tpr);
	cudaError_t e = cudaGetLastError();
	if (e == cudaSuccess && nsplit > 1) {
		decode_merge<Tin><<<H, DEC_THREADS, 0, st>>>((Tin *)out, part, nsplit, D);
		e = cudaGetLastError();
	}
#if !HAVE_BACKEND_H
	if (part)
		LMK_CK(cudaFreeAsync(part, st));
#endif
	LMK_CK(e);
	return 0;
}

extern "C" int lmk_cuda_attention_decode(void *be, lmk_dtype dt, void *out, const void *q,
					 const void *kcache, const void *vcache, int64_t Tk,
					 int64_t H, int64_t K, int64_t D, float scale)
{
	int rc = check_shape("attention decode", dt, 1, Tk, H, K, D);
	if (rc < 0)
		return rc;
	cudaStream_t st = stream_of(be);
	if (Tk == 0) {
		LMK_CK(cudaMemsetAsync(out, 0, (size_t)(H * D) * lmk_dtype_size(dt), st));
		return 0;
	}
	const bool vec = D % 8 == 0 && aligned16(q) && aligned16(kcache) && aligned16(vcache);
	if (dt == LMK_BF16)
		return vec ? decode_launch<bf16, true>(be, st, out, q, kcache, vcache, (int)Tk, (int)H,
						       (int)K, (int)D, scale)
			   : decode_launch<bf16, false>(be, st, out, q, kcache, vcache, (int)Tk,
							(int)H, (int)K, (int)D, scale);
	return vec ? decode_launch<float, true>(be, st, out, q, kcache, vcache, (int)Tk, (int)H, (int)K,
						(int)D, scale)
		   : decode_launch<float, false>(be, st, out, q, kcache, vcache, (int)Tk, (int)H,
						 (int)K, (int)D, scale);
}
