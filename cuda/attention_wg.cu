/* attention_wg.cu: attention's BF16 backward at head dims 64 and 128 on
 * Hopper's warpgroup MMA (wgmma.mma_async, sm_90a), FlashAttention-3's
 * layout of FlashAttention-2's algorithm; attention.cu's bwd_fused_mma
 * (mma.sync) is the same computation, its dq sums the same protocol, and
 * it remains the kernel of every case this one does not take.
 *
 * Shape letters: B batch, T time, H query heads, K kv heads (query head h
 * reads kv head h/(H/K)), D head dim. q, dout, dq (B,T,H,D); k, v, dk, dv
 * (B,T,K,D); lse, delta (B,H,T).
 *
 * A block of two warpgroups owns 128 keys (64 a warpgroup: wgmma's M) with
 * K and V in shared memory, and walks query tiles of 64 rows (Q and dout
 * staged by cp.async). Per tile, in each warpgroup:
 *   Sᵀ = K Qᵀ, dPᵀ = V doutᵀ    A and B from shared memory (K-major),
 *   Pᵀ = exp(Sᵀ - lse), dSᵀ = Pᵀ ∘ (dPᵀ - delta)   in the accumulators,
 *   dV += Pᵀ dout, dK += dSᵀ Q  A from registers (the accumulators as bf16
 *                               A fragments), B N-major from shared memory;
 * and dSᵀ goes to shared memory, from where, past the next barrier, each
 * warpgroup computes half the columns of the tile's dQ part, dS K, over
 * all 128 keys (A = dS: dSᵀ read M-major; B = K's half: at D 128 a 64-column
 * panel, N-major; at D 64 a transposed copy of K, made once a block, so that
 * a 32-column half is whole 8-row groups of a K-major operand). The parts
 * of the key blocks are summed in a fixed order through a float32 buffer
 * (FlashAttention-3's deterministic mode, as attention.cu describes).
 *
 * Every tile in shared memory is panels of rows of 64 bf16 (128 bytes) in
 * the 128B swizzle (the 16-byte chunk index XOR the row mod 8, from a
 * 1024-aligned base), which wgmma reads either way: K-major, a k16 step is
 * 32 bytes on inside the rows (the next panel after 4); N- or M-major, 16
 * rows, 2048 bytes, on, and the panels of a 128-wide operand lbo apart. */
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "dtype.h"
#include "err.h"
}
#include "attention_sync.cuh"
#include "attention_wg.h"
#include "check.h"
#include "mma.cuh"

typedef __nv_bfloat16 bf16;

static constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

/* ------------------------------------------------------------ wgmma */

/* A shared-memory matrix descriptor for the 128B swizzle: start address;
 * the leading byte offset lbo (K-major: unused, 16; M/N-major: between the
 * 64-column panels of an operand wider than 64); the stride byte offset
 * between 8-row groups, 1024 (K-major: of M/N rows; M/N-major: of K rows);
 * base offset 0 (1024-aligned atoms); mode 1 (128B). */
static __device__ __forceinline__ uint64_t desc128(uint32_t addr, uint32_t lbo = 16)
{
	return (uint64_t)(addr >> 4) | ((uint64_t)(lbo >> 4) << 16) |
	       ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

/* The descriptor d moved on by off bytes (shared memory is under 256 KB,
 * so the address field never carries): descriptors are made once, outside
 * the loops, and moved on by constants, an add each. */
static __device__ __forceinline__ uint64_t dmove(uint64_t d, uint32_t off) { return d + (off >> 4); }

static __device__ __forceinline__ void wg_fence()
{
	asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

static __device__ __forceinline__ void wg_commit()
{
	asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

template <int N> static __device__ __forceinline__ void wg_wait()
{
	asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

/* Registers an asynchronous wgmma writes (or reads): touched here, after
 * the wait, so that the compiler keeps their other uses on the right side
 * of it. */
template <int N> static __device__ __forceinline__ void keep(float (&d)[N][4])
{
#pragma unroll
	for (int n = 0; n < N; n++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			asm volatile("" : "+f"(d[n][e])::"memory");
}

template <int N> static __device__ __forceinline__ void keep(uint32_t (&d)[N][2])
{
#pragma unroll
	for (int n = 0; n < N; n++)
#pragma unroll
		for (int e = 0; e < 2; e++)
			asm volatile("" : "+r"(d[n][e])::"memory");
}

template <int N> static __device__ __forceinline__ void keep(uint32_t (&d)[N][4])
{
#pragma unroll
	for (int n = 0; n < N; n++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			asm volatile("" : "+r"(d[n][e])::"memory");
}

/* Ordinary stores to shared memory (cp.async's too) that wgmma reads next
 * need this in the writing thread, before the barrier. */
static __device__ __forceinline__ void fence_async_smem()
{
	asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* d (64 x 64: 8 n8 tiles) = A B (ACC false) or d + A B, A and B from
 * shared memory; TA, TB 1 for an M- (N-) major operand. (The first product
 * of a sum writes d without reading it, so that d needs no zeroing.) */
template <bool ACC, int TA, int TB>
static __device__ __forceinline__ void wg_ss64(float (&d)[8][4], uint64_t da, uint64_t db)
{
	if constexpr (ACC)
		asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
			     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
			     "%32, %33, 1, 1, 1, %34, %35;\n"
			     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
			     : "l"(da), "l"(db), "n"(TA), "n"(TB));
	else
		asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
			     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
			     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
			     "%32, %33, p, 1, 1, %35, %36;\n}\n"
			     : "=f"(d[0][0]), "=f"(d[0][1]), "=f"(d[0][2]), "=f"(d[0][3]), "=f"(d[1][0]), "=f"(d[1][1]), "=f"(d[1][2]), "=f"(d[1][3]), "=f"(d[2][0]), "=f"(d[2][1]), "=f"(d[2][2]), "=f"(d[2][3]), "=f"(d[3][0]), "=f"(d[3][1]), "=f"(d[3][2]), "=f"(d[3][3]), "=f"(d[4][0]), "=f"(d[4][1]), "=f"(d[4][2]), "=f"(d[4][3]), "=f"(d[5][0]), "=f"(d[5][1]), "=f"(d[5][2]), "=f"(d[5][3]), "=f"(d[6][0]), "=f"(d[6][1]), "=f"(d[6][2]), "=f"(d[6][3]), "=f"(d[7][0]), "=f"(d[7][1]), "=f"(d[7][2]), "=f"(d[7][3])
			     : "l"(da), "l"(db), "r"(0), "n"(TA), "n"(TB));
}

/* d (64 x 32: 4 n8 tiles) = A B (ACC false) or d + A B, A and B from
 * shared memory; TA, TB 1 for an M- (N-) major operand. (The first product
 * of a sum writes d without reading it, so that d needs no zeroing.) */
template <bool ACC, int TA, int TB>
static __device__ __forceinline__ void wg_ss32(float (&d)[4][4], uint64_t da, uint64_t db)
{
	if constexpr (ACC)
		asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
			     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
			     "%16, %17, 1, 1, 1, %18, %19;\n"
			     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
			     : "l"(da), "l"(db), "n"(TA), "n"(TB));
	else
		asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
			     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
			     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
			     "%16, %17, p, 1, 1, %19, %20;\n}\n"
			     : "=f"(d[0][0]), "=f"(d[0][1]), "=f"(d[0][2]), "=f"(d[0][3]), "=f"(d[1][0]), "=f"(d[1][1]), "=f"(d[1][2]), "=f"(d[1][3]), "=f"(d[2][0]), "=f"(d[2][1]), "=f"(d[2][2]), "=f"(d[2][3]), "=f"(d[3][0]), "=f"(d[3][1]), "=f"(d[3][2]), "=f"(d[3][3])
			     : "l"(da), "l"(db), "r"(0), "n"(TA), "n"(TB));
}

/* d (64 x 64) += A B, A from registers (the m64k16 fragment: in each warp
 * mma.sync's m16k16 A layout), B N-major from shared memory. */
static __device__ __forceinline__ void wg_rs64(float (&d)[8][4], const uint32_t (&a)[4], uint64_t db)
{
	asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
		     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
		     "{%32,%33,%34,%35}, %36, 1, 1, 1, 1;\n"
		     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}

/* d (64 x 128) += A B, A from registers, B N-major from shared memory. */
static __device__ __forceinline__ void wg_rs128(float (&d)[16][4], const uint32_t (&a)[4], uint64_t db)
{
	asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
		     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
		     "{%64,%65,%66,%67}, %68, 1, 1, 1, 1;\n"
		     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}


/* d (64 x 128) = A B (ACC false) or d + A B, A and B K-major from shared
 * memory. */
template <bool ACC>
static __device__ __forceinline__ void wg_ss128(float (&d)[16][4], uint64_t da, uint64_t db)
{
	if constexpr (ACC)
		asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
			     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
			     "%64, %65, 1, 1, 1, 0, 0;\n"
			     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
			     : "l"(da), "l"(db));
	else
		asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
			     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
			     "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
			     "%64, %65, p, 1, 1, 0, 0;\n}\n"
			     : "=f"(d[0][0]), "=f"(d[0][1]), "=f"(d[0][2]), "=f"(d[0][3]), "=f"(d[1][0]), "=f"(d[1][1]), "=f"(d[1][2]), "=f"(d[1][3]), "=f"(d[2][0]), "=f"(d[2][1]), "=f"(d[2][2]), "=f"(d[2][3]), "=f"(d[3][0]), "=f"(d[3][1]), "=f"(d[3][2]), "=f"(d[3][3]), "=f"(d[4][0]), "=f"(d[4][1]), "=f"(d[4][2]), "=f"(d[4][3]), "=f"(d[5][0]), "=f"(d[5][1]), "=f"(d[5][2]), "=f"(d[5][3]), "=f"(d[6][0]), "=f"(d[6][1]), "=f"(d[6][2]), "=f"(d[6][3]), "=f"(d[7][0]), "=f"(d[7][1]), "=f"(d[7][2]), "=f"(d[7][3]), "=f"(d[8][0]), "=f"(d[8][1]), "=f"(d[8][2]), "=f"(d[8][3]), "=f"(d[9][0]), "=f"(d[9][1]), "=f"(d[9][2]), "=f"(d[9][3]), "=f"(d[10][0]), "=f"(d[10][1]), "=f"(d[10][2]), "=f"(d[10][3]), "=f"(d[11][0]), "=f"(d[11][1]), "=f"(d[11][2]), "=f"(d[11][3]), "=f"(d[12][0]), "=f"(d[12][1]), "=f"(d[12][2]), "=f"(d[12][3]), "=f"(d[13][0]), "=f"(d[13][1]), "=f"(d[13][2]), "=f"(d[13][3]), "=f"(d[14][0]), "=f"(d[14][1]), "=f"(d[14][2]), "=f"(d[14][3]), "=f"(d[15][0]), "=f"(d[15][1]), "=f"(d[15][2]), "=f"(d[15][3])
			     : "l"(da), "l"(db), "r"(0));
}

/* ------------------------------------------------------------ helpers */

/* Byte offset of 16-byte chunk ch of row r in a tile of 128-byte rows,
 * 128B-swizzled. */
static __device__ __forceinline__ uint32_t sw128(int r, int ch)
{
	return (uint32_t)(r * 128 + ((ch ^ (r & 7)) << 4));
}

/* Rows row0.. of a (T, ld) bf16 matrix of 64 PN columns into a ROWS-row
 * tile at shared address dst, as PN panels of 64 columns one after the
 * other; rows at or past T zero-filled. */
template <int ROWS, int PN = 1>
static __device__ __forceinline__ void load_rows(uint32_t dst, const bf16 *g, int64_t ld, int row0,
						 int T, int tid)
{
#pragma unroll
	for (int it = 0; it < ROWS * 8 * PN / 256; it++) {
		const int c = tid + it * 256, r = c / (8 * PN), ch = c % (8 * PN), gr = row0 + r;
		const bool ok = gr < T;
		cp_async16(dst + (ch >> 3) * ROWS * 128 + sw128(r, ch & 7),
			   g + (int64_t)(ok ? gr : 0) * ld + ch * 8, ok);
	}
}

/* --------------------------------------------------------------- kernel */

/* The kernel's shared memory at head dim D, in bytes from a 1024-aligned
 * base, and its stages of the query tiles (Q, dout, lse, delta). Tiles of
 * 128 columns are two panels of 64. D 64: three stages (the one in use,
 * the next one loading, and the one before, which the last iteration's dV
 * and dK products may still read), Kᵀ (KT), and dk's and dv's old values
 * (DK, DV); D 128: two stages, and the sums of the earlier key blocks'
 * dQ parts (W) that the next part adds to. S holds two buffers of dSᵀ,
 * L the stages of lse, then those of delta. */
template <int D> struct Smem;
template <> struct Smem<64> {
	static constexpr int NST = 3;
	static constexpr uint32_t K = 0, V = 16384, KT = 32768, Q = 49152, O = 73728, S = 98304,
				  L = 131072, DK = 133120, DV = 149504, W = 0, BYTES = 165888;
};
template <> struct Smem<128> {
	static constexpr int NST = 2;
	static constexpr uint32_t K = 0, V = 32768, Q = 65536, O = 98304, S = 131072, W = 163840,
				  L = 196608, KT = 0, DK = 0, DV = 0, BYTES = 197632;
};

/* The block of key block jb, kv head g, batch b and its walk over the query
 * tiles are bwd_fused_mma's (attention.cu), with BC = 128 and BR = 64: see
 * there for the order of the walk, the tickets and the counters. Warp w
 * (warpgroup w/4) owns keys 16w.. of the block in Sᵀ, dPᵀ, dK and dV, and
 * rows 16 (w%4).. and columns D/2 (w/4).. of each tile's dQ part. */
template <int D>
__global__ void __launch_bounds__(256, 1)
	bwd_wg(float *__restrict__ dqw, bf16 *__restrict__ dq, int *__restrict__ sem,
		 bf16 *__restrict__ dk, bf16 *__restrict__ dv, const bf16 *__restrict__ dout,
		 const bf16 *__restrict__ q, const bf16 *__restrict__ k, const bf16 *__restrict__ v,
		 const float *__restrict__ lse, const float *__restrict__ delta,
		 const int32_t *__restrict__ seg, int T, int H, int K, float scale, float scale_log2,
		 int causal, int rot, int assign)
{
	using SM = Smem<D>;
	constexpr int BC = ATTN_WG_BC, BR = ATTN_WG_BR, NW = ATTN_WG_NW, NQ = D / 2, PN = D / 64;
	constexpr int NST = SM::NST;
	extern __shared__ __align__(16) unsigned char smem_raw[];
	const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023) & ~1023u;
	unsigned char *sm = smem_raw + (base - raw);
	float *sL = (float *)(sm + SM::L), *sDl = sL + NST * BR;

	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2, wl = warp & 3;
	int bx = blockIdx.x, by = blockIdx.y, bz = blockIdx.z;
	if (dqw) {
		__shared__ int ticket;
		if (tid == 0)
			ticket = atomicAdd(sem, 1);
		__syncthreads();
		bx = ticket % gridDim.x;
		by = ticket / gridDim.x % K;
		bz = ticket / gridDim.x / K;
	}
	const int nkb = gridDim.x, jb = nkb - 1 - bx;
	const int g = by, b = bz, rep = H / K, k0 = jb * BC;
	const int64_t ldq = (int64_t)H * D, ldk = (int64_t)K * D;
	const int64_t koff = (int64_t)b * T * ldk + (int64_t)g * D;
	const int32_t *sg = seg ? seg + (int64_t)b * T : nullptr;
	const int nqa = (T + BR - 1) / BR, qt0 = causal || rot ? k0 / BR : 0;
	const int nqt = causal ? nqa - qt0 : nqa;
	const int nit = rep * nqt;
	/* Iteration it's query head h and query tile qi (the walk computes
	 * each once: the divisions cost) */
	struct Tile {
		int h, qi;
	};
	auto tile_at = [&](int it) {
		const int t = qt0 + it % nqt;
		return Tile{g * rep + it / nqt, t < nqa ? t : t - nqa};
	};
	/* the tile after t on the walk (tile_at(it + 1) from tile_at(it),
	 * without the divisions): causal, the next head's qt0 after the last
	 * tile; else tile 0 after the last, and the next head at qt0 */
	auto tile_next = [&](Tile t) {
		int qi = t.qi + 1;
		if (qi == nqa)
			qi = causal ? qt0 : 0;
		return Tile{qi == qt0 ? t.h + 1 : t.h, qi};
	};
	/* Q, dout and delta of tile t into stage stage */
	auto load_q = [&](Tile t, int stage) {
		const int q0 = t.qi * BR;
		const int64_t qoff = (int64_t)b * T * ldq + (int64_t)t.h * D;
		load_rows<BR, PN>(base + SM::Q + stage * BR * 128 * PN, q + qoff, ldq, q0, T, tid);
		load_rows<BR, PN>(base + SM::O + stage * BR * 128 * PN, dout + qoff, ldq, q0, T, tid);
		if (tid < BR) {
			const int i = q0 + tid;
			cp_async4(smem_u32(sDl + stage * BR + tid),
				  delta + ((int64_t)b * H + t.h) * T + (i < T ? i : 0), i < T);
		}
	};
	/* lse of tile t's row q0 + r as read (-inf past T), and as staged in
	 * sL: in log2 units, +inf for a row that sees nothing, so that
	 * exp2(s - L) is 0 on it */
	auto lse_raw = [&](Tile t, int r) {
		const int i = t.qi * BR + r;
		return i < T ? lse[((int64_t)b * H + t.h) * T + i] : -INFINITY;
	};
	auto lse_staged = [](float l) { return l == -INFINITY ? INFINITY : l * LOG2E; };

	load_rows<BC, PN>(base + SM::K, k + koff, ldk, k0, T, tid);
	load_rows<BC, PN>(base + SM::V, v + koff, ldk, k0, T, tid);
	load_q(tile_at(0), 0);
	/* (the loads of the prologue are all in flight before anything
	 * waits for one: lse here, staged at the end) */
	const float l0 = tid < BR ? lse_raw(tile_at(0), tid) : 0.f;
	if constexpr (D == 64) {
		/* dk's and dv's old values now, so that the sums at the end do
		 * not wait for them */
		if (dk && !(assign & 2))
			load_rows<BC>(base + SM::DK, dk + koff, ldk, k0, T, tid);
		if (dv && !(assign & 4))
			load_rows<BC>(base + SM::DV, dv + koff, ldk, k0, T, tid);
	}
	cp_commit();
	if constexpr (D == 64) {
		/* Kᵀ: element (d, key j) in panel j/64, row d, column j%64. A
		 * warp's lanes take 32 keys of one 8-column chunk, so that their
		 * stores fall in distinct banks (two lanes a word). */
		constexpr int NL = BC * 8 / 256;
		uint4 x[NL];
#pragma unroll
		for (int l = 0; l < NL; l++) {
			const int c = tid + l * 256, j = c % BC, ch = c / BC;
			x[l] = make_uint4(0u, 0u, 0u, 0u);
			if (k0 + j < T)
				x[l] = *(const uint4 *)(k + koff + (int64_t)(k0 + j) * ldk + ch * 8);
		}
#pragma unroll
		for (int l = 0; l < NL; l++) {
			const int c = tid + l * 256, j = c % BC, ch = c / BC;
			const bf16 *e = (const bf16 *)&x[l];
			unsigned char *p = sm + SM::KT + (j >> 6) * 8192 + (j & 7) * 2;
#pragma unroll
			for (int u = 0; u < 8; u++)
				*(bf16 *)(p + sw128(ch * 8 + u, (j & 63) >> 3)) = e[u];
		}
	}
	if (tid < BR)
		sL[tid] = lse_staged(l0);

	/* this thread's keys (rows of Sᵀ, dK, dV): j_lo and j_hi = j_lo + 8;
	 * the warpgroup's first key kw0 */
	const int kr = wg * 64 + wl * 16 + (lane >> 2), kw0 = k0 + wg * 64;
	const int j_lo = k0 + kr, j_hi = j_lo + 8;
	const int seg_lo = sg && j_lo < T ? sg[j_lo] : -1, seg_hi = sg && j_hi < T ? sg[j_hi] : -1;
	const int t2 = (lane & 3) << 1;
	float ak[D / 8][4], av[D / 8][4];
#pragma unroll
	for (int n = 0; n < D / 8; n++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			ak[n][e] = av[n][e] = 0.f;

	/* The ordered dq sum, as bwd_fused_mma's: this warp's piece of a tile
	 * is rows m0.. (this thread's m0 + lane/4 and 8 more), columns n0..
	 * The sum of the earlier parts (0 for the first block of a tile) and,
	 * for the last block, dq's old values: D 64 in registers (wsum, dold),
	 * D 128 in the warp's piece of W (16 rows of NQ floats, the 16-byte
	 * chunks XOR-swizzled by row) and read from dq when due. */
	const int m0 = wl * 16, n0 = wg * NQ;
	float wsum[D == 64 ? NQ / 8 : 1][4];
	uint32_t dold[D == 64 ? NQ / 8 : 1][2];
	const uint32_t wp = base + SM::W + warp * 16 * NQ * 4;
	auto wchunk = [](int r, int ch) { return (uint32_t)(r * NQ * 4 + ((ch ^ (r & 7)) << 4)); };
	auto tile_of = [&](Tile t, int &i0, int &pos, int &nc, int *&cnt) {
		const int jr = causal || rot ? t.qi / (BC / BR) : nkb - 1;
		i0 = t.qi * BR + m0 + (lane >> 2);
		nc = causal ? jr + 1 : nkb;
		pos = jr >= jb ? jr - jb : jr - jb + nkb;
		cnt = sem + 1 + (((int64_t)b * H + t.h) * nqa + t.qi) * NW + warp;
	};
	/* lane 0's last read of a counter (relaxed: acquired by the fence
	 * when the part is due); the tile whose part this warp stored last
	 * and has still to count (relv: there is one) */
	int seen = 0;
	Tile relt = {0, 0};
	bool relv = false;
	auto dq_poll = [&](Tile t) {
		int i0, pos, nc;
		int *cnt;
		tile_of(t, i0, pos, nc, cnt);
		if (lane == 0 && pos > 0)
			seen = ld_relaxed(cnt);
	};
	/* when iteration it's part is due: wait for the parts before this
	 * block's, then fetch their sum */
	auto dq_fetch = [&](Tile t) {
		int i0, pos, nc;
		int *cnt;
		tile_of(t, i0, pos, nc, cnt);
		const int64_t off = (int64_t)b * T * ldq + (int64_t)t.h * D + n0;
		if (lane == 0 && pos > 0) {
			while (seen < pos)
				seen = ld_relaxed(cnt);
			fence_acquire();
		}
		__syncwarp();
		if constexpr (D == 64) {
#pragma unroll
			for (int hf = 0; hf < 2; hf++) {
				const int i = i0 + 8 * hf;
#pragma unroll
				for (int n = 0; n < NQ / 8; n++) {
					const int64_t o = off + t2 + i * ldq + n * 8;
					float2 w = make_float2(0.f, 0.f);
					if (pos > 0 && i < T)
						w = __ldcg((const float2 *)(dqw + o));
					wsum[n][2 * hf] = w.x;
					wsum[n][2 * hf + 1] = w.y;
					dold[n][hf] = pos == nc - 1 && i < T && !(assign & 1) ?
							      *(const uint32_t *)(dq + o) : 0u;
				}
			}
		} else if (pos > 0) {
			/* the warp's 16 rows x NQ floats, 16 bytes a lane at a time */
			const int r0 = i0 - (lane >> 2);
#pragma unroll
			for (int u = 0; u < 16 * NQ / 4 / 32; u++) {
				const int c = lane + 32 * u, r = c / (NQ / 4), ch = c % (NQ / 4);
				const bool ok = r0 + r < T;
				cp_async16(wp + wchunk(r, ch),
					   dqw + off + (int64_t)(ok ? r0 + r : 0) * ldq + ch * 4, ok);
			}
		}
	};
	/* iteration it's part acc added to the fetched sum: passed on, or into
	 * dq by the last block. (D 128: after cp_wait and a __syncwarp.) */
	auto dq_out = [&](Tile t, const float (&acc)[NQ / 8][4]) {
		int i0, pos, nc;
		int *cnt;
		tile_of(t, i0, pos, nc, cnt);
		const int64_t off = (int64_t)b * T * ldq + (int64_t)t.h * D + n0 + t2;
		/* the sum of row half hf, column group n */
		auto sum = [&](int hf, int n) {
			float2 w;
			if constexpr (D == 64) {
				w = make_float2(wsum[n][2 * hf], wsum[n][2 * hf + 1]);
			} else {
				const int r = (lane >> 2) + 8 * hf, c = n * 8 + t2;
				w = pos > 0 ? *(const float2 *)(sm + (wp - base) + wchunk(r, c >> 2) +
								(c & 3) * 4) :
					      make_float2(0.f, 0.f);
			}
			return make_float2(acc[n][2 * hf] + w.x, acc[n][2 * hf + 1] + w.y);
		};
		/* (the test of the block's place outside the loops over the
		 * columns, which the compiler does not hoist) */
#pragma unroll
		for (int hf = 0; hf < 2; hf++) {
			const int i = i0 + 8 * hf;
			if (i >= T)
				continue;
			const int64_t oi = off + i * ldq;
			if (pos < nc - 1) {
#pragma unroll
				for (int n = 0; n < NQ / 8; n++)
					__stcg((float2 *)(dqw + oi + n * 8), sum(hf, n));
			} else {
#pragma unroll
				for (int n = 0; n < NQ / 8; n++) {
					const float2 x = sum(hf, n);
					const int64_t o = oi + n * 8;
					uint32_t u;
					if constexpr (D == 64)
						u = dold[n][hf];
					else
						u = assign & 1 ? 0u : *(const uint32_t *)(dq + o);
					const float2 f = __bfloat1622float2(*(const __nv_bfloat162 *)&u);
					*(__nv_bfloat162 *)(dq + o) =
						__floats2bfloat162_rn(f.x + scale * x.x, f.y + scale * x.y);
				}
			}
		}
		if (pos < nc - 1) {
			relt = t;
			relv = true;
		}
	};
	/* raise the count of the part stored last: every lane's stores, then
	 * lane 0's fence */
	auto dq_release = [&]() {
		__syncwarp();
		if (lane == 0 && relv) {
			int i0, pos, nc;
			int *cnt;
			tile_of(relt, i0, pos, nc, cnt);
			fence_release();
			red_relaxed(cnt);
		}
		relv = false;
	};

	/* The products, their operands by descriptors made here: this
	 * warpgroup's rows of K and V (K-major A), Kᵀ's (D 64) or K's (D 128)
	 * columns of its half of dQ, the dSᵀ buffers, the Q and dout stages
	 * K-major and N-major. */
	const uint64_t dK = desc128(base + SM::K + wg * 8192), dV = desc128(base + SM::V + wg * 8192);
	const uint64_t dKq = D == 64 ? desc128(base + SM::KT + wg * 4096) :
				       desc128(base + SM::K + wg * BC * 128);
	const uint64_t dS = desc128(base + SM::S);
	const uint64_t dQk = desc128(base + SM::Q), dOk = desc128(base + SM::O);
	const uint64_t dQn = desc128(base + SM::Q, PN > 1 ? BR * 128 : 16);
	const uint64_t dOn = desc128(base + SM::O, PN > 1 ? BR * 128 : 16);
	/* sdp_issue: Sᵀ and dPᵀ of the tile in the Q and dout stages cQ, cO
	 * (K-major), as two wgmma groups (also where every key of the
	 * warpgroup lies past T or after the tile's last query: skipping them
	 * there makes ptxas serialize every wgmma of the kernel). */
	auto sdp_issue = [&](float (&s)[BR / 8][4], float (&dp)[BR / 8][4], uint64_t cQ, uint64_t cO) {
#pragma unroll
		for (int kk = 0; kk < D / 16; kk++) {
			const uint32_t ka = (kk >> 2) * BC * 128 + (kk & 3) * 32,
				       qa = (kk >> 2) * BR * 128 + (kk & 3) * 32;
			if (kk)
				wg_ss64<true, 0, 0>(s, dmove(dK, ka), dmove(cQ, qa));
			else
				wg_ss64<false, 0, 0>(s, dmove(dK, ka), dmove(cQ, qa));
		}
		wg_commit();
#pragma unroll
		for (int kk = 0; kk < D / 16; kk++) {
			const uint32_t ka = (kk >> 2) * BC * 128 + (kk & 3) * 32,
				       qa = (kk >> 2) * BR * 128 + (kk & 3) * 32;
			if (kk)
				wg_ss64<true, 0, 0>(dp, dmove(dV, ka), dmove(cO, qa));
			else
				wg_ss64<false, 0, 0>(dp, dmove(dV, ka), dmove(cO, qa));
		}
		wg_commit();
	};
	/* Pᵀ = exp(Sᵀ - lse) (into s, masked) of the tile at query q0, lse in
	 * cL, and as bf16 pairs in the accumulator layout: pp[n][0] key j_lo,
	 * pp[n][1] key j_hi, queries 8n + t2 and one more */
	auto p_of = [&](float (&s)[BR / 8][4], uint32_t (&pp)[BR / 8][2], int q0, const float *cL) {
		const bool need_mask = q0 + BR > T || kw0 + 64 > T || sg || (causal && q0 < kw0 + 63);
#pragma unroll
		for (int n = 0; n < BR / 8; n++) {
			const float2 l = *(const float2 *)(cL + n * 8 + t2);
#pragma unroll
			for (int e = 0; e < 4; e++)
				s[n][e] = ex2(s[n][e] * scale_log2 - (e & 1 ? l.y : l.x));
		}
		if (need_mask) {
#pragma unroll
			for (int n = 0; n < BR / 8; n++)
#pragma unroll
				for (int e = 0; e < 4; e++) {
					const int i = q0 + n * 8 + t2 + (e & 1);
					const int j = e < 2 ? j_lo : j_hi;
					const int sj = e < 2 ? seg_lo : seg_hi;
					const bool ok = i < T && j < T && (!causal || j <= i) &&
							(!sg || (sj >= 0 && sg[i] == sj));
					if (!ok)
						s[n][e] = 0.f;
				}
		}
#pragma unroll
		for (int n = 0; n < BR / 8; n++) {
			pp[n][0] = pack_bf16(s[n][0], s[n][1]);
			pp[n][1] = pack_bf16(s[n][2], s[n][3]);
		}
	};
	/* dSᵀ = Pᵀ ∘ (dPᵀ - delta), delta in cD, as bf16 pairs as pp */
	auto ds_of = [&](const float (&s)[BR / 8][4], const float (&dp)[BR / 8][4],
			 uint32_t (&ds)[BR / 8][2], const float *cD) {
#pragma unroll
		for (int n = 0; n < BR / 8; n++) {
			const float2 d2 = *(const float2 *)(cD + n * 8 + t2);
			float de[4];
#pragma unroll
			for (int e = 0; e < 4; e++)
				de[e] = s[n][e] * (dp[n][e] - (e & 1 ? d2.y : d2.x));
			ds[n][0] = pack_bf16(de[0], de[1]);
			ds[n][1] = pack_bf16(de[2], de[3]);
		}
	};
	/* dV += Pᵀ dout, dK += dSᵀ Q (B N-major: at D 128 two panels, lbo
	 * apart), each one wgmma group */
	auto dv_issue = [&](const uint32_t (&pp)[BR / 8][2], uint64_t cO) {
#pragma unroll
		for (int kk = 0; kk < BR / 16; kk++) {
			const uint32_t a[4] = {pp[2 * kk][0], pp[2 * kk][1], pp[2 * kk + 1][0],
					       pp[2 * kk + 1][1]};
			if constexpr (D == 64)
				wg_rs64(av, a, dmove(cO, kk * 2048));
			else
				wg_rs128(av, a, dmove(cO, kk * 2048));
		}
		wg_commit();
	};
	auto dk_issue = [&](const uint32_t (&ds)[BR / 8][2], uint64_t cQ) {
#pragma unroll
		for (int kk = 0; kk < BR / 16; kk++) {
			const uint32_t a[4] = {ds[2 * kk][0], ds[2 * kk][1], ds[2 * kk + 1][0],
					       ds[2 * kk + 1][1]};
			if constexpr (D == 64)
				wg_rs64(ak, a, dmove(cQ, kk * 2048));
			else
				wg_rs128(ak, a, dmove(cQ, kk * 2048));
		}
		wg_commit();
	};
	/* dSᵀ to buffer buf of S */
	auto ds_store = [&](const uint32_t (&ds)[BR / 8][2], int buf) {
		unsigned char *cS = sm + SM::S + buf * 16384;
#pragma unroll
		for (int n = 0; n < BR / 8; n++) {
			*(uint32_t *)(cS + sw128(kr, n) + 2 * t2) = ds[n][0];
			*(uint32_t *)(cS + sw128(kr + 8, n) + 2 * t2) = ds[n][1];
		}
	};
	/* the dQ part of the tile whose dSᵀ is in buffer buf (A M-major), this
	 * warpgroup's NQ columns, as one wgmma group: B = Kᵀ (D 64, K-major) or
	 * K's panel wg (D 128, N-major) */
	auto dq_issue = [&](float (&acc)[NQ / 8][4], int buf) {
#pragma unroll
		for (int kk = 0; kk < BC / 16; kk++) {
			const uint64_t da = dmove(dS, buf * 16384 + kk * 2048);
			if constexpr (D == 64) {
				const uint64_t db = dmove(dKq, (kk >> 2) * 8192 + (kk & 3) * 32);
				if (kk)
					wg_ss32<true, 1, 0>(acc, da, db);
				else
					wg_ss32<false, 1, 0>(acc, da, db);
			} else {
				const uint64_t db = dmove(dKq, kk * 2048);
				if (kk)
					wg_ss64<true, 1, 1>(acc, da, db);
				else
					wg_ss64<false, 1, 1>(acc, da, db);
			}
		}
		wg_commit();
	};

	/* Iteration it issues the products of its query tile and the dQ part
	 * of iteration it - 1's, whose dSᵀ the barrier at its start has made
	 * visible: one barrier an iteration. The dQ part goes first at D 64,
	 * so that the tensor cores have it to do while the exponentials are
	 * computed, and the dV and dK products are waited for only with the
	 * next iteration's Sᵀ, so that the barrier does not drain the tensor
	 * cores; Pᵀ and dSᵀ (their A operands) live until then. The ordered
	 * sum's fences come where the tensor cores have work queued: the
	 * count of the part stored in the last iteration is raised past the
	 * products' issue (its memory barrier waits for those stores); then
	 * the part due now is fetched, and the counter of the tile whose part
	 * is due in the next iteration read (relaxed: nothing waits for it
	 * before the next iteration; the block before this one in the tile's
	 * order, two iterations ahead on the walk and started no later, has
	 * raised it at the same point of its iteration). At D 128
	 * (registers allow no more) the dQ part goes after dK, once Sᵀ and
	 * dPᵀ are dead, and the iteration waits for all its products. */
	uint32_t pp[BR / 8][2], ds[BR / 8][2];
	/* the tiles of iterations it - 1, it and it + 1 */
	Tile tp = {0, 0}, tc = tile_at(0);
	for (int it = 0; it < nit; it++) {
		const Tile tn = it + 1 < nit ? tile_next(tc) : tc;
		const int q0 = tc.qi * BR, st = it % NST, sb = it & 1;
		/* Past the barrier iteration it's tiles have landed (and Kᵀ is
		 * written), iteration it - 1's dSᵀ is in, and every warp is done
		 * with the dQ part of iteration it - 2. */
		cp_wait<0>();
		fence_async_smem();
		__syncthreads();
		/* lse of the next tile into its stage (lnx: this thread's) */
		const bool lnx = tid < BR && it + 1 < nit;
		float *const sLn = sL + ((it + 1) % NST) * BR;
		const uint32_t so = st * BR * 128 * PN;
		const uint64_t cQ = dmove(dQk, so), cO = dmove(dOk, so);
		const uint64_t cQn = dmove(dQn, so), cOn = dmove(dOn, so);
		const float *cL = sL + st * BR, *cD = sDl + st * BR;
		float s[BR / 8][4], dp[BR / 8][4];
		if constexpr (D == 64) {
			float acc[NQ / 8][4];
			wg_fence();
			if (dqw && it > 0)
				dq_issue(acc, sb ^ 1);
			sdp_issue(s, dp, cQ, cO);
			if (dqw) {
				dq_release();
				if (it > 0)
					dq_fetch(tp);
				dq_poll(tc);
			}
			/* (read past the dq sum's fences, which wait for every
			 * load in flight) */
			const float lnext = lnx ? lse_raw(tn, tid) : 0.f;
			if (it + 1 < nit)
				load_q(tn, (it + 1) % NST);
			cp_commit();
			/* (The groups finish in order: the last iteration's dV and
			 * dK, dQ, Sᵀ, then dPᵀ.) */
			wg_wait<1>();
			keep(s);
			keep(acc);
			keep(av);
			keep(ak);
			keep(pp);
			keep(ds);
			p_of(s, pp, q0, cL);
			wg_fence();
			dv_issue(pp, cOn);
			if (dqw && it > 0)
				dq_out(tp, acc);
			if (lnx)
				sLn[tid] = lse_staged(lnext);
			wg_wait<1>();
			keep(dp);
			ds_of(s, dp, ds, cD);
			wg_fence();
			dk_issue(ds, cQn);
			if (dqw)
				ds_store(ds, sb);
		} else {
			const float lnext = lnx ? lse_raw(tn, tid) : 0.f;
			wg_fence();
			sdp_issue(s, dp, cQ, cO);
			if (dqw)
				dq_release();
			if (it + 1 < nit)
				load_q(tn, (it + 1) % NST);
			cp_commit();
			wg_wait<1>();
			keep(s);
			p_of(s, pp, q0, cL);
			wg_fence();
			dv_issue(pp, cOn);
			wg_wait<1>();
			keep(dp);
			ds_of(s, dp, ds, cD);
			wg_fence();
			dk_issue(ds, cQn);
			if (dqw) {
				ds_store(ds, sb);
				if (it > 0) {
					float acc[NQ / 8][4];
					dq_issue(acc, sb ^ 1);
					dq_fetch(tp);
					cp_commit();
					dq_poll(tc);
					wg_wait<0>();
					keep(acc);
					cp_wait<0>();
					__syncwarp();
					dq_out(tp, acc);
				}
			}
			wg_wait<0>();
			keep(av);
			keep(ak);
			keep(pp);
			keep(ds);
			if (lnx)
				sLn[tid] = lse_staged(lnext);
		}
		tp = tc;
		tc = tn;
	}
	/* the last iteration's dQ part (tile tp) */
	if (dqw && nit > 0) {
		fence_async_smem();
		__syncthreads();
		float acc[NQ / 8][4];
		wg_fence();
		dq_issue(acc, (nit - 1) & 1);
		dq_release();
		dq_fetch(tp);
		cp_commit();
		wg_wait<0>();
		keep(acc);
		cp_wait<0>();
		__syncwarp();
		dq_out(tp, acc);
		dq_release();
	}
	wg_wait<0>();
	keep(av);
	keep(ak);
	keep(pp);
	keep(ds);

	/* dk += scale dK, dv += dV, or = where assign says (D 64: the old
	 * values from shared memory, landed before the first iteration's
	 * barrier) */
	const int64_t c0 = koff + t2;
#pragma unroll
	for (int n = 0; n < D / 8; n++) {
#pragma unroll
		for (int half = 0; half < 2; half++) {
			const int j = half ? j_hi : j_lo;
			if (j >= T)
				continue;
			const int64_t off = c0 + j * ldk + n * 8;
			const uint32_t so = sw128(kr + 8 * half, n & 7) + 2 * t2;
			if (dk) {
				const __nv_bfloat162 *po = D == 64 ?
					(const __nv_bfloat162 *)(sm + SM::DK + so) :
					(const __nv_bfloat162 *)(dk + off);
				const float2 old = assign & 2 ? make_float2(0.f, 0.f) :
								__bfloat1622float2(*po);
				*(__nv_bfloat162 *)(dk + off) = __floats2bfloat162_rn(
					old.x + scale * ak[n][2 * half], old.y + scale * ak[n][2 * half + 1]);
			}
			if (dv) {
				const __nv_bfloat162 *po = D == 64 ?
					(const __nv_bfloat162 *)(sm + SM::DV + so) :
					(const __nv_bfloat162 *)(dv + off);
				const float2 old = assign & 4 ? make_float2(0.f, 0.f) :
								__bfloat1622float2(*po);
				*(__nv_bfloat162 *)(dv + off) = __floats2bfloat162_rn(
					old.x + av[n][2 * half], old.y + av[n][2 * half + 1]);
			}
		}
	}
}

/* ------------------------------------------------------------ forward */

/* The forward (attention.cu's fwd_mma, FlashAttention-2's, on wgmma): a
 * block of two warpgroups owns 128 query rows (64 a warpgroup) with Q in
 * shared memory and walks the key tiles of 128 (K and V double-buffered by
 * cp.async; causal blocks heaviest first, stopping at the diagonal):
 * S = Q Kᵀ (A and B K-major from shared memory), the online softmax in the
 * accumulators, O += P V (A = P from registers, B = V N-major). Every
 * warpgroup computes every tile (its rows never all precede a tile's first
 * key: the tiles start at multiples of 128, as the blocks do). */
template <int D> struct FwdSmem {
	static constexpr uint32_t Q = 0, K = 16384 * (D / 64), V = K + 32768 * (D / 64),
				  BYTES = V + 32768 * (D / 64);
};

template <int D>
__global__ void __launch_bounds__(256, 1)
	fwd_wg(bf16 *__restrict__ out, float *__restrict__ lse, const bf16 *__restrict__ q,
	       const bf16 *__restrict__ k, const bf16 *__restrict__ v,
	       const int32_t *__restrict__ seg, int T, int H, int K, float scale_log2, int causal)
{
	using SM = FwdSmem<D>;
	constexpr int BR = 128, BC = 128, PN = D / 64;
	constexpr unsigned FULL = 0xffffffffu;
	extern __shared__ __align__(16) unsigned char smem_raw[];
	const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023) & ~1023u;

	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2, wl = warp & 3;
	const int qt = causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x; /* heavy tiles first */
	const int h = blockIdx.y, b = blockIdx.z, g = h / (H / K), q0 = qt * BR;
	const int64_t ldq = (int64_t)H * D, ldk = (int64_t)K * D;
	const bf16 *qb = q + (int64_t)b * T * ldq + (int64_t)h * D;
	const bf16 *kb = k + (int64_t)b * T * ldk + (int64_t)g * D;
	const bf16 *vb = v + (int64_t)b * T * ldk + (int64_t)g * D;
	const int32_t *sg = seg ? seg + (int64_t)b * T : nullptr;
	const int kv_end = causal ? min(T, q0 + BR) : T;
	const int ntiles = (kv_end + BC - 1) / BC;

	load_rows<BR, PN>(base + SM::Q, qb, ldq, q0, T, tid);
	load_rows<BC, PN>(base + SM::K, kb, ldk, 0, T, tid);
	load_rows<BC, PN>(base + SM::V, vb, ldk, 0, T, tid);
	cp_commit();

	/* this thread's rows r[0] and r[1] = r[0] + 8; the warp's first rw0 */
	const int rw0 = q0 + wg * 64 + wl * 16;
	int r[2], sr[2];
	float m[2], l[2], o[D / 8][4];
#pragma unroll
	for (int hf = 0; hf < 2; hf++) {
		r[hf] = rw0 + (lane >> 2) + 8 * hf;
		sr[hf] = sg && r[hf] < T ? sg[r[hf]] : -1;
		m[hf] = -INFINITY;
		l[hf] = 0.f;
	}
#pragma unroll
	for (int n = 0; n < D / 8; n++)
		o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
	const uint64_t dQ = desc128(base + SM::Q + wg * 8192), dK = desc128(base + SM::K);
	const uint64_t dV = desc128(base + SM::V, PN > 1 ? BC * 128 : 16);
	uint32_t pa[BC / 16][4];

	for (int t = 0; t < ntiles; t++) {
		const int kv0 = t * BC;
		/* past the barrier tile t has landed and every warp is done
		 * with tile t - 1, whose stage the next loads take */
		cp_wait<0>();
		fence_async_smem();
		__syncthreads();
		if (t + 1 < ntiles) {
			const uint32_t nb = ((t + 1) & 1) * BC * 128 * PN;
			load_rows<BC, PN>(base + SM::K + nb, kb, ldk, kv0 + BC, T, tid);
			load_rows<BC, PN>(base + SM::V + nb, vb, ldk, kv0 + BC, T, tid);
		}
		cp_commit();
		const uint32_t so = (t & 1) * BC * 128 * PN;

		float s[BC / 8][4];
		wg_fence();
#pragma unroll
		for (int kk = 0; kk < D / 16; kk++) {
			const uint32_t qa = (kk >> 2) * BR * 128 + (kk & 3) * 32,
				       ka = so + (kk >> 2) * BC * 128 + (kk & 3) * 32;
			if (kk)
				wg_ss128<true>(s, dmove(dQ, qa), dmove(dK, ka));
			else
				wg_ss128<false>(s, dmove(dQ, qa), dmove(dK, ka));
		}
		wg_commit();
		wg_wait<0>();
		keep(s);

		const bool need_mask = kv0 + BC > T || sg || (causal && kv0 + BC - 1 > rw0);
		if (need_mask) {
#pragma unroll
			for (int n = 0; n < BC / 8; n++) {
				const int j = kv0 + n * 8 + ((lane & 3) << 1);
#pragma unroll
				for (int e = 0; e < 4; e++) {
					const int jj = j + (e & 1), i = r[e >> 1], si = sr[e >> 1];
					const bool ok = jj < T && (!causal || jj <= i) &&
							(!sg || (si >= 0 && sg[jj] == si));
					if (!ok)
						s[n][e] = -INFINITY;
				}
			}
		}
		/* the online softmax, as fwd_mma's: m the running max of the
		 * unscaled logits, l the running sum of this thread's columns,
		 * o rescaled; a row with nothing visible yet keeps m = -inf and
		 * uses 0 as its reference */
#pragma unroll
		for (int hf = 0; hf < 2; hf++) {
			float mx = m[hf];
#pragma unroll
			for (int n = 0; n < BC / 8; n++)
				mx = fmaxf(mx, fmaxf(s[n][2 * hf], s[n][2 * hf + 1]));
			mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 1));
			mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 2));
			const float mu = mx == -INFINITY ? 0.f : mx * scale_log2;
			const float c = ex2(m[hf] * scale_log2 - mu);
			m[hf] = mx;
			float sum = 0.f;
#pragma unroll
			for (int n = 0; n < BC / 8; n++) {
				s[n][2 * hf] = ex2(fmaf(s[n][2 * hf], scale_log2, -mu));
				s[n][2 * hf + 1] = ex2(fmaf(s[n][2 * hf + 1], scale_log2, -mu));
				sum += s[n][2 * hf] + s[n][2 * hf + 1];
			}
			l[hf] = l[hf] * c + sum;
#pragma unroll
			for (int n = 0; n < D / 8; n++) {
				o[n][2 * hf] *= c;
				o[n][2 * hf + 1] *= c;
			}
		}
#pragma unroll
		for (int kk = 0; kk < BC / 16; kk++)
			c_to_a(pa[kk], s[2 * kk], s[2 * kk + 1]);
		wg_fence();
#pragma unroll
		for (int kk = 0; kk < BC / 16; kk++) {
			if constexpr (D == 64)
				wg_rs64(o, pa[kk], dmove(dV, so + kk * 2048));
			else
				wg_rs128(o, pa[kk], dmove(dV, so + kk * 2048));
		}
		wg_commit();
		wg_wait<0>();
		keep(o);
		keep(pa);
	}

	bf16 *ob = out + (int64_t)b * T * ldq + (int64_t)h * D + ((lane & 3) << 1);
	float *L = lse + ((int64_t)b * H + h) * T;
#pragma unroll
	for (int hf = 0; hf < 2; hf++) {
		float sum = l[hf];
		sum += __shfl_xor_sync(FULL, sum, 1);
		sum += __shfl_xor_sync(FULL, sum, 2);
		const float inv = sum > 0.f ? 1.f / sum : 0.f;
		const int i = r[hf];
		if (i >= T)
			continue;
#pragma unroll
		for (int n = 0; n < D / 8; n++)
			*(__nv_bfloat162 *)(ob + i * ldq + n * 8) =
				__floats2bfloat162_rn(o[n][2 * hf] * inv, o[n][2 * hf + 1] * inv);
		if ((lane & 3) == 0)
			L[i] = sum > 0.f ? (m[hf] * scale_log2 + log2f(sum)) * LN2 : -INFINITY;
	}
}

/* --------------------------------------------------------------- host */

bool attention_wg_usable()
{
	/* -1 unknown, 0 no, 1 yes: the process's first call decides */
	static int ok = -1;
	if (ok < 0) {
		const char *e = getenv("LMK_ATTENTION_WG");
		cudaFuncAttributes a;
		ok = 0;
		if (!(e && !strcmp(e, "0"))) {
			ok = cudaFuncGetAttributes(&a, bwd_wg<64>) == cudaSuccess;
			/* clear the error of a device without sm_90a code */
			if (!ok)
				(void)cudaGetLastError();
		}
	}
	return ok == 1;
}

template <int D>
static int launch(cudaStream_t st, float *dqw, bf16 *dq, int *sem, bf16 *dk, bf16 *dv,
		  const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
		  const float *delta, const int32_t *seg, int B, int T, int H, int K, float scale,
		  int causal, int rot, int assign)
{
	const size_t smem = Smem<D>::BYTES + 1024; /* and the alignment to 1024 */
	LMK_CK(cudaFuncSetAttribute(bwd_wg<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)smem));
	dim3 grid((T + ATTN_WG_BC - 1) / ATTN_WG_BC, K, B);
	bwd_wg<D><<<grid, 256, smem, st>>>(dqw, dq, sem, dk, dv, dout, q, k, v, lse, delta, seg, T,
					   H, K, scale, scale * LOG2E, causal, rot, assign);
	LMK_CK_LAUNCH();
	return 0;
}

int attention_wg_backward(cudaStream_t st, float *dqw, bf16 *dq, int *sem, bf16 *dk, bf16 *dv,
			  const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
			  const float *lse, const float *delta, const int32_t *seg, int B, int T,
			  int H, int K, int D, float scale, int causal, int rot, int assign)
{
	if (D == 64)
		return launch<64>(st, dqw, dq, sem, dk, dv, dout, q, k, v, lse, delta, seg, B, T, H,
				  K, scale, causal, rot, assign);
	return launch<128>(st, dqw, dq, sem, dk, dv, dout, q, k, v, lse, delta, seg, B, T, H, K,
			   scale, causal, rot, assign);
}

template <int D>
static int fwd_launch(cudaStream_t st, bf16 *out, float *lse, const bf16 *q, const bf16 *k,
		      const bf16 *v, const int32_t *seg, int B, int T, int H, int K, float scale,
		      int causal)
{
	const size_t smem = FwdSmem<D>::BYTES + 1024; /* and the alignment to 1024 */
	LMK_CK(cudaFuncSetAttribute(fwd_wg<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)smem));
	dim3 grid((T + 127) / 128, H, B);
	fwd_wg<D><<<grid, 256, smem, st>>>(out, lse, q, k, v, seg, T, H, K, scale * LOG2E, causal);
	LMK_CK_LAUNCH();
	return 0;
}

int attention_wg_forward(cudaStream_t st, bf16 *out, float *lse, const bf16 *q, const bf16 *k,
			 const bf16 *v, const int32_t *seg, int B, int T, int H, int K, int D,
			 float scale, int causal)
{
	if (D == 64)
		return fwd_launch<64>(st, out, lse, q, k, v, seg, B, T, H, K, scale, causal);
	return fwd_launch<128>(st, out, lse, q, k, v, seg, B, T, H, K, scale, causal);
}
