/* path.c: PaTH attention (path.h): the op, its CPU kernels and the decoding
 * cache. Shape letters as in path.h; C the block, N = ceil(T/C) blocks,
 * c <= C the rows of one block (the last may be short).
 *
 * The blockwise algorithm (the paper's, as fla implements it). Within a
 * block, the product of its transforms in the UT/WY form is
 *   H_{last} ... H_{first} = I - Wᵀ T diag(beta) W = I - Wᵀ U,
 *   T = (I + strictlower(diag(beta) W Wᵀ))⁻¹ (unit lower triangular),
 * and a contiguous part (j, i] of it uses the same T restricted to rows
 * <= i and columns > j (a principal block of a triangular inverse is the
 * inverse of the block). So, per block:
 *   Z  = T strictlower(diag(beta) W Kᵀ)          (c,c)
 *   K~ = K - Zᵀ W       keys moved to the end of their block
 *   Q~ = Q - tril(Q Wᵀ) U   queries moved to the start of their block
 *   A  = tril(Q Kᵀ) - tril(Q Wᵀ) Z   the logits of pairs inside the block
 * (tril keeps the diagonal). A query block m then meets key block n < m
 * through S = scale Q~⁽ⁿ⁾ K~_nᵀ, walking down with
 *   Q~⁽ᵐ⁻¹⁾ = Q~,  Q~⁽ⁿ⁻¹⁾ = Q~⁽ⁿ⁾ (I - W_nᵀ U_n) = Q~⁽ⁿ⁾ - (Q~⁽ⁿ⁾ W_nᵀ) U_n,
 * as flash attention walks its key blocks, with an online softmax.
 *
 * Its backward needs each Q~⁽ⁿ⁾ of the walk again, in the opposite order
 * (the adjoint of Q~⁽ⁿ⁾ collects the blocks below n), and the maps are not
 * safely invertible (beta near 1). So it stores them: a query pass per
 * (b,h,m) walks down storing the levels lv(m,n), then up with the adjoint
 * A, storing adj(m,n) (the adjoint of level n-1 arriving at level n) and
 * ending with dQ~; a key pass per (b,g,n) sums over the query heads of g
 * and the query blocks m > n what block n receives (dK~, dV, dU, dW), so
 * that no two work items write the same gradient (deterministic, any
 * thread count); a block pass per (b,g,n) takes dQ~, dA, dK~, dU, dW back
 * through the UT form to dq, dk, dw, dbeta. The levels cost T² D / C
 * floats per head, as fla's query copies per 512-token chunk do per chunk.
 *
 * FoX: g_t = sum_{r<=t} logf_r (accumulated in double), the pair's term
 * g_i - g_j; dlogf_r = sum_{t>=r} dg_t (r >= 1; logf_0 meets no pair). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "op.h"
#include "path.h"

#if LMK_CUDA
#include "../cuda/cuda.h"
#include "../cuda/path_cuda.h"
#endif

/* ------------------------------------------------------------ helpers */

/* Cm (M,N ldc) = beta0 Cm + alpha op(A) op(B); op(A) is (M,Kk): A[i*lda+k],
 * or with ta A[k*lda+i]; op(B) is (Kk,N): B[k*ldb+j], or with tb B[j*ldb+k].
 * Each element summed in k order. */
static void mm(float *Cm, int64_t ldc, const float *A, int64_t lda, int ta, const float *Bm,
	       int64_t ldb, int tb, int64_t M, int64_t N, int64_t Kk, float alpha, float beta0)
{
	for (int64_t i = 0; i < M; i++)
		for (int64_t j = 0; j < N; j++) {
			float s = 0;
			for (int64_t k = 0; k < Kk; k++)
				s += (ta ? A[k * lda + i] : A[i * lda + k]) *
				     (tb ? Bm[j * ldb + k] : Bm[k * ldb + j]);
			Cm[i * ldc + j] = (beta0 == 0 ? 0 : beta0 * Cm[i * ldc + j]) + alpha * s;
		}
}

static double dotd(const float *a, const float *b, int64_t n)
{
	double s = 0;
	for (int64_t i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

static float dotf(const float *a, const float *b, int64_t n)
{
	float s = 0;
	for (int64_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* ------------------------------------------------------------ naive */

void lmk_path_cpu_naive_forward(float *out, float *lse, const float *q, const float *k,
				const float *v, const float *w, const float *beta, const float *logf,
				int64_t B, int64_t T, int64_t H, int64_t K, int64_t D, float scale)
{
	int64_t rep = H / K;
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++) {
			int64_t g = h / rep;
			float u[D];
			double acc[D];
			for (int64_t i = 0; i < T; i++) {
				const float *qi = q + ((b * T + i) * H + h) * D;
				memcpy(u, qi, sizeof(float) * (size_t)D);
				for (int64_t d = 0; d < D; d++)
					acc[d] = 0;
				double mx = -INFINITY, l = 0, bias = 0;
				for (int64_t j = i; j >= 0; j--) {
					const float *kj = k + ((b * T + j) * K + g) * D;
					const float *vj = v + ((b * T + j) * K + g) * D;
					double s = scale * dotd(u, kj, D) + bias;
					if (s > mx) {
						double c = exp(mx - s);
						l *= c;
						for (int64_t d = 0; d < D; d++)
							acc[d] *= c;
						mx = s;
					}
					double p = exp(s - mx);
					l += p;
					for (int64_t d = 0; d < D; d++)
						acc[d] += p * vj[d];
					if (j == 0)
						break;
					/* u <- H_j u, bias += logf_j: the pair (i, j-1) */
					const float *wj = w + ((b * T + j) * K + g) * D;
					float f = beta[(b * T + j) * K + g] * (float)dotd(wj, u, D);
					for (int64_t d = 0; d < D; d++)
						u[d] -= f * wj[d];
					if (logf)
						bias += logf[(b * T + j) * H + h];
				}
				float *oi = out + ((b * T + i) * H + h) * D;
				for (int64_t d = 0; d < D; d++)
					oi[d] = (float)(acc[d] / l);
				lse[(b * H + h) * T + i] = (float)(mx + log(l));
			}
		}
}

int64_t lmk_path_cpu_naive_scratch(int64_t B, int64_t T, int64_t H, int64_t K, int64_t D)
{
	return B * K * (T * D + 3 * T + 2 * D);
}

void lmk_path_cpu_naive_backward(float *dq, float *dk, float *dv, float *dw, float *dbeta,
				 float *dlogf, float *scratch, const float *dout, const float *q,
				 const float *k, const float *v, const float *w, const float *beta,
				 const float *logf, int64_t B, int64_t T, int64_t H, int64_t K,
				 int64_t D, float scale)
{
	int64_t rep = H / K;
	/* one work item per key head: it alone adds into dk, dv, dw, dbeta
	 * of that head, its query heads one after the other */
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
	for (int64_t b = 0; b < B; b++)
		for (int64_t g = 0; g < K; g++) {
			float *U = scratch + (b * K + g) * (T * D + 3 * T + 2 * D);
			float *s = U + T * D, *p = s + T, *ds = p + T, *a = ds + T, *dov = a + D;
			(void)dov;
			for (int64_t h = g * rep; h < (g + 1) * rep; h++)
				for (int64_t i = 0; i < T; i++) {
					const float *qi = q + ((b * T + i) * H + h) * D;
					const float *doi = dout + ((b * T + i) * H + h) * D;
					memcpy(U + i * D, qi, sizeof(float) * (size_t)D);
					double bias = 0, mx = -INFINITY;
					for (int64_t j = i; j >= 0; j--) {
						const float *kj = k + ((b * T + j) * K + g) * D;
						float *uj = U + j * D;
						s[j] = (float)(scale * dotd(uj, kj, D) + bias);
						if (s[j] > mx)
							mx = s[j];
						if (j == 0)
							break;
						const float *wj = w + ((b * T + j) * K + g) * D;
						float f = beta[(b * T + j) * K + g] * (float)dotd(wj, uj, D);
						for (int64_t d = 0; d < D; d++)
							U[(j - 1) * D + d] = uj[d] - f * wj[d];
						if (logf)
							bias += logf[(b * T + j) * H + h];
					}
					double l = 0;
					for (int64_t j = 0; j <= i; j++)
						l += exp(s[j] - mx);
					double delta = 0;
					for (int64_t j = 0; j <= i; j++) {
						const float *vj = v + ((b * T + j) * K + g) * D;
						p[j] = (float)(exp(s[j] - mx) / l);
						ds[j] = (float)dotd(doi, vj, D); /* dP for now */
						delta += (double)p[j] * ds[j];
					}
					for (int64_t j = 0; j <= i; j++) {
						ds[j] = p[j] * (ds[j] - (float)delta);
						if (dv) {
							float *dvj = dv + ((b * T + j) * K + g) * D;
							for (int64_t d = 0; d < D; d++)
								dvj[d] += p[j] * doi[d];
						}
					}
					if (dlogf) {
						/* logf_r is in the pairs (i, j) with j < r <= i */
						double pre = 0;
						for (int64_t r = 1; r <= i; r++) {
							pre += ds[r - 1];
							dlogf[(b * T + r) * H + h] += (float)pre;
						}
					}
					for (int64_t d = 0; d < D; d++)
						a[d] = 0;
					for (int64_t j = 0; j <= i; j++) {
						const float *kj = k + ((b * T + j) * K + g) * D;
						float *uj = U + j * D;
						if (j > 0) {
							/* a is the adjoint of u_{j-1} = H_j u_j */
							const float *wj = w + ((b * T + j) * K + g) * D;
							float bj = beta[(b * T + j) * K + g];
							float wa = (float)dotd(wj, a, D),
							      wu = (float)dotd(wj, uj, D);
							if (dbeta)
								dbeta[(b * T + j) * K + g] -= wu * wa;
							if (dw) {
								float *dwj = dw + ((b * T + j) * K + g) * D;
								for (int64_t d = 0; d < D; d++)
									dwj[d] -= bj * (wa * uj[d] + wu * a[d]);
							}
							for (int64_t d = 0; d < D; d++)
								a[d] -= bj * wa * wj[d];
						}
						float f = scale * ds[j];
						for (int64_t d = 0; d < D; d++)
							a[d] += f * kj[d];
						if (dk) {
							float *dkj = dk + ((b * T + j) * K + g) * D;
							for (int64_t d = 0; d < D; d++)
								dkj[d] += f * uj[d];
						}
					}
					if (dq) {
						float *dqi = dq + ((b * T + i) * H + h) * D;
						for (int64_t d = 0; d < D; d++)
							dqi[d] += a[d];
					}
				}
		}
}

/* ------------------------------------------------------------ blockwise */

int64_t lmk_path_cpu_tmp(int64_t C, int64_t D) { return 10 * C * D + 10 * C * C + 8 * C; }

#define RD(t, b, i, hh, NH) ((t) + (((b) * s->T + (i)) * (NH) + (hh)) * s->D)

static int64_t rows_of(const lmk_path_ws *s, int64_t n)
{
	int64_t r = s->T - n * s->C;
	return r < s->C ? r : s->C;
}

static int64_t pair_of(int64_t m, int64_t n) { return m * (m - 1) / 2 + n; }

static float *tmp_of(const lmk_path_ws *s)
{
	return s->tmp + (int64_t)omp_get_thread_num() * lmk_path_cpu_tmp(s->C, s->D);
}

/* T, U, Z, K~ of block n of key head g. */
static void prep_block(lmk_path_ws *s, const float *k, const float *w, const float *beta,
		       int64_t b, int64_t g, int64_t n)
{
	const int64_t C = s->C, D = s->D, K = s->K, c = rows_of(s, n), j0 = n * C;
	const int64_t ld = K * D;
	const float *W = RD(w, b, j0, g, K), *Kb = RD(k, b, j0, g, K);
	const float *be = beta + (b * s->T + j0) * K + g;
	float *t = tmp_of(s), *L = t, *M = L + C * C;
	float *Tm = s->tm + ((b * K + g) * s->N + n) * C * C;
	float *Z = s->z + ((b * K + g) * s->N + n) * C * C;
	float *U = s->u + ((b * K + g) * s->T + j0) * D;
	float *Kt = s->kt + ((b * K + g) * s->T + j0) * D;
	memset(L, 0, sizeof(float) * (size_t)(2 * C * C));
	for (int64_t r = 0; r < c; r++)
		for (int64_t j = 0; j < r; j++) {
			L[r * C + j] = be[r * K] * dotf(W + r * ld, W + j * ld, D);
			M[r * C + j] = be[r * K] * dotf(W + r * ld, Kb + j * ld, D);
		}
	/* (I + L) T = I, row by row */
	memset(Tm, 0, sizeof(float) * (size_t)(C * C));
	for (int64_t r = 0; r < c; r++) {
		Tm[r * C + r] = 1;
		for (int64_t j = 0; j < r; j++) {
			float a = 0;
			for (int64_t t2 = j; t2 < r; t2++)
				a += L[r * C + t2] * Tm[t2 * C + j];
			Tm[r * C + j] = -a;
		}
	}
	for (int64_t r = 0; r < c; r++)
		for (int64_t d = 0; d < D; d++) {
			float a = 0;
			for (int64_t j = 0; j <= r; j++)
				a += Tm[r * C + j] * be[j * K] * W[j * ld + d];
			U[r * D + d] = a;
		}
	memset(Z, 0, sizeof(float) * (size_t)(C * C));
	mm(Z, C, Tm, C, 0, M, C, 0, c, c, c, 1, 0);
	for (int64_t j = 0; j < c; j++)
		for (int64_t d = 0; d < D; d++) {
			float a = 0;
			for (int64_t r = 0; r < c; r++)
				a += Z[r * C + j] * W[r * ld + d];
			Kt[j * D + d] = Kb[j * ld + d] - a;
		}
}

/* Q~ and A of query block m of head h. */
static void intra_block(lmk_path_ws *s, const float *q, const float *k, const float *w,
			int64_t b, int64_t h, int64_t m)
{
	const int64_t C = s->C, D = s->D, H = s->H, K = s->K, c = rows_of(s, m), i0 = m * C;
	const int64_t g = h / (H / K);
	const float *Q = RD(q, b, i0, h, H), *W = RD(w, b, i0, g, K), *Kb = RD(k, b, i0, g, K);
	const float *U = s->u + ((b * K + g) * s->T + i0) * D;
	const float *Z = s->z + ((b * K + g) * s->N + m) * C * C;
	float *Qt = s->qt + ((b * H + h) * s->T + i0) * D;
	float *A = s->aloc + ((b * H + h) * s->N + m) * C * C;
	float *X = tmp_of(s);
	mm(X, C, Q, H * D, 0, W, K * D, 1, c, c, D, 1, 0);
	for (int64_t i = 0; i < c; i++)
		for (int64_t j = i + 1; j < c; j++)
			X[i * C + j] = 0;
	for (int64_t i = 0; i < c; i++)
		for (int64_t d = 0; d < D; d++)
			Qt[i * D + d] = Q[i * H * D + d];
	mm(Qt, D, X, C, 0, U, D, 0, c, D, c, -1, 1);
	memset(A, 0, sizeof(float) * (size_t)(C * C));
	for (int64_t i = 0; i < c; i++)
		for (int64_t j = 0; j <= i; j++) {
			float a = dotf(Q + i * H * D, Kb + j * K * D, D);
			for (int64_t r = j + 1; r <= i; r++)
				a -= X[i * C + r] * Z[r * C + j];
			A[i * C + j] = a;
		}
}

static float gdiff(const lmk_path_ws *s, int64_t b, int64_t h, int64_t i, int64_t j)
{
	if (!s->g)
		return 0;
	const float *G = s->g + (b * s->H + h) * s->T;
	return G[i] - G[j];
}

/* Logits of query block m against key block n (n < m: through level lv,
 * rows of D; n == m: the block's own A) into S (c,C), -inf where j > i. */
static void logits(const lmk_path_ws *s, float *S, const float *lv, int64_t b, int64_t h,
		   int64_t m, int64_t n, float scale)
{
	const int64_t C = s->C, D = s->D, K = s->K, g = h / (s->H / K);
	const int64_t cm = rows_of(s, m), cn = rows_of(s, n);
	if (n == m) {
		const float *A = s->aloc + ((b * s->H + h) * s->N + m) * C * C;
		for (int64_t i = 0; i < cm; i++)
			for (int64_t j = 0; j < cn; j++)
				S[i * C + j] = j <= i ? scale * A[i * C + j] +
							       gdiff(s, b, h, m * C + i, n * C + j)
						      : -INFINITY;
		return;
	}
	const float *Kt = s->kt + ((b * K + g) * s->T + n * C) * D;
	mm(S, C, lv, D, 0, Kt, D, 1, cm, cn, D, scale, 0);
	if (s->g)
		for (int64_t i = 0; i < cm; i++)
			for (int64_t j = 0; j < cn; j++)
				S[i * C + j] += gdiff(s, b, h, m * C + i, n * C + j);
}

/* lv -= (lv W_nᵀ) U_n: one level down, from key block n to n-1. */
static void level_down(const lmk_path_ws *s, float *lv, float *X, const float *w, int64_t b,
		       int64_t g, int64_t cm, int64_t n)
{
	const int64_t C = s->C, D = s->D, K = s->K, cn = rows_of(s, n);
	const float *W = RD(w, b, n * C, g, K);
	const float *U = s->u + ((b * K + g) * s->T + n * C) * D;
	mm(X, C, lv, D, 0, W, K * D, 1, cm, cn, D, 1, 0);
	mm(lv, D, X, C, 0, U, D, 0, cm, D, cn, -1, 1);
}

static void flash_block(lmk_path_ws *s, float *out, const float *v, const float *w, int64_t b,
			int64_t h, int64_t m, float scale)
{
	const int64_t C = s->C, D = s->D, H = s->H, K = s->K, g = h / (H / K);
	const int64_t cm = rows_of(s, m), i0 = m * C;
	float *t = tmp_of(s), *Qt = t, *O = Qt + C * D, *S = O + C * D, *X = S + C * C;
	float *mx = X + C * C, *l = mx + C;
	memcpy(Qt, s->qt + ((b * H + h) * s->T + i0) * D, sizeof(float) * (size_t)(cm * D));
	memset(O, 0, sizeof(float) * (size_t)(cm * D));
	for (int64_t i = 0; i < cm; i++) {
		mx[i] = -INFINITY;
		l[i] = 0;
	}
	for (int64_t n = m; n >= 0; n--) {
		const int64_t cn = rows_of(s, n);
		logits(s, S, Qt, b, h, m, n, scale);
		for (int64_t i = 0; i < cm; i++) {
			float bm = mx[i];
			for (int64_t j = 0; j < cn; j++)
				bm = fmaxf(bm, S[i * C + j]);
			float cr = expf(mx[i] - bm); /* bm finite: the diagonal comes first */
			mx[i] = bm;
			l[i] *= cr;
			for (int64_t d = 0; d < D; d++)
				O[i * D + d] *= cr;
			for (int64_t j = 0; j < cn; j++) {
				float p = expf(S[i * C + j] - bm);
				l[i] += p;
				const float *vj = RD(v, b, n * C + j, g, K);
				for (int64_t d = 0; d < D; d++)
					O[i * D + d] += p * vj[d];
			}
		}
		if (n > 0 && n < m)
			level_down(s, Qt, X, w, b, g, cm, n);
	}
	for (int64_t i = 0; i < cm; i++) {
		float *oi = RD(out, b, i0 + i, h, H);
		for (int64_t d = 0; d < D; d++)
			oi[d] = O[i * D + d] / l[i];
		s->lse[(b * H + h) * s->T + i0 + i] = mx[i] + logf(l[i]);
	}
}

static void cumsum_g(lmk_path_ws *s, const float *logf)
{
	const int64_t T = s->T, H = s->H;
#pragma omp parallel for collapse(2) if (s->B * H * T > 65536)
	for (int64_t b = 0; b < s->B; b++)
		for (int64_t h = 0; h < H; h++) {
			double a = 0;
			for (int64_t t = 0; t < T; t++) {
				a += logf[(b * T + t) * H + h];
				s->g[(b * H + h) * T + t] = (float)a;
			}
		}
}

void lmk_path_cpu_forward(lmk_path_ws *s, float *out, const float *q, const float *k,
			  const float *v, const float *w, const float *beta, const float *logf,
			  float scale)
{
	const int64_t B = s->B, H = s->H, K = s->K, N = s->N;
	if (logf)
		cumsum_g(s, logf);
#pragma omp parallel for schedule(dynamic, 1) collapse(3)
	for (int64_t b = 0; b < B; b++)
		for (int64_t g = 0; g < K; g++)
			for (int64_t n = 0; n < N; n++)
				prep_block(s, k, w, beta, b, g, n);
#pragma omp parallel for schedule(dynamic, 1) collapse(3)
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t m = 0; m < N; m++)
				intra_block(s, q, k, w, b, h, m);
	/* heaviest query blocks first */
#pragma omp parallel for schedule(dynamic, 1) collapse(3)
	for (int64_t m = N - 1; m >= 0; m--)
		for (int64_t b = 0; b < B; b++)
			for (int64_t h = 0; h < H; h++)
				flash_block(s, out, v, w, b, h, m, scale);
}

/* P and dS of query block m against key block n into S and dP (c,C);
 * the row sums of dS into rs (may be NULL). */
static void probs(const lmk_path_ws *s, float *S, float *dP, const float *lv, const float *dout,
		  const float *v, int64_t b, int64_t h, int64_t m, int64_t n, float scale)
{
	const int64_t C = s->C, D = s->D, H = s->H, K = s->K, g = h / (H / K);
	const int64_t cm = rows_of(s, m), cn = rows_of(s, n);
	logits(s, S, lv, b, h, m, n, scale);
	mm(dP, C, RD(dout, b, m * C, h, H), H * D, 0, RD(v, b, n * C, g, K), K * D, 1, cm, cn, D,
	   1, 0);
	for (int64_t i = 0; i < cm; i++) {
		float L = s->lse[(b * H + h) * s->T + m * C + i];
		float dl = s->delta[(b * H + h) * s->T + m * C + i];
		for (int64_t j = 0; j < cn; j++) {
			float p = expf(S[i * C + j] - L); /* exp(-inf) = 0 above the diagonal */
			S[i * C + j] = p;
			dP[i * C + j] = p * (dP[i * C + j] - dl);
		}
	}
}

static float *lv_at(const lmk_path_ws *s, float *base, int64_t b, int64_t h, int64_t m, int64_t n)
{
	int64_t P = s->N * (s->N - 1) / 2;
	return base + ((b * s->H + h) * P + pair_of(m, n)) * s->C * s->D;
}

static void query_pass(lmk_path_ws *s, const float *dout, const float *v, const float *w,
		       int64_t b, int64_t h, int64_t m, float scale)
{
	const int64_t C = s->C, D = s->D, H = s->H, K = s->K, g = h / (H / K);
	const int64_t cm = rows_of(s, m), i0 = m * C;
	float *dQt = s->dqt + ((b * H + h) * s->T + i0) * D;
	float *dgr = s->dgr + (b * H + h) * s->T + i0;
	memset(dQt, 0, sizeof(float) * (size_t)(cm * D));
	memset(dgr, 0, sizeof(float) * (size_t)cm);
	if (m == 0)
		return;
	float *t = tmp_of(s), *S = t, *dP = S + C * C, *X = dP + C * C, *A = X + C * C;
	float *lv = lv_at(s, s->lv, b, h, m, m - 1);
	memcpy(lv, s->qt + ((b * H + h) * s->T + i0) * D, sizeof(float) * (size_t)(cm * D));
	for (int64_t n = m - 1; n > 0; n--) {
		float *nx = lv_at(s, s->lv, b, h, m, n - 1);
		memcpy(nx, lv, sizeof(float) * (size_t)(cm * D));
		level_down(s, nx, X, w, b, g, cm, n);
		lv = nx;
	}
	memset(A, 0, sizeof(float) * (size_t)(cm * D));
	for (int64_t n = 0; n < m; n++) {
		const int64_t cn = rows_of(s, n);
		if (n > 0) {
			/* A, the adjoint of level n-1 = lv - (lv W_nᵀ) U_n, back
			 * to level n: A - (A U_nᵀ) W_n */
			memcpy(lv_at(s, s->adj, b, h, m, n), A, sizeof(float) * (size_t)(cm * D));
			const float *U = s->u + ((b * K + g) * s->T + n * C) * D;
			mm(X, C, A, D, 0, U, D, 1, cm, cn, D, 1, 0);
			mm(A, D, X, C, 0, RD(w, b, n * C, g, K), K * D, 0, cm, D, cn, -1, 1);
		}
		probs(s, S, dP, lv_at(s, s->lv, b, h, m, n), dout, v, b, h, m, n, scale);
		for (int64_t i = 0; i < cm; i++) {
			float r = 0;
			for (int64_t j = 0; j < cn; j++)
				r += dP[i * C + j];
			dgr[i] += r;
		}
		const float *Kt = s->kt + ((b * K + g) * s->T + n * C) * D;
		mm(A, D, dP, C, 0, Kt, D, 0, cm, D, cn, scale, 1);
	}
	memcpy(dQt, A, sizeof(float) * (size_t)(cm * D));
}

static void key_pass(lmk_path_ws *s, float *dv, const float *dout, const float *v,
		     const float *w, int64_t b, int64_t g, int64_t n, float scale)
{
	const int64_t C = s->C, D = s->D, H = s->H, K = s->K, N = s->N, rep = H / K;
	const int64_t cn = rows_of(s, n), j0 = n * C;
	float *dKt = s->dkt + ((b * K + g) * s->T + j0) * D;
	float *dU = s->du + ((b * K + g) * s->T + j0) * D;
	float *dW = s->dwp + ((b * K + g) * s->T + j0) * D;
	const float *U = s->u + ((b * K + g) * s->T + j0) * D;
	const float *W = RD(w, b, j0, g, K);
	float *t = tmp_of(s), *S = t, *dP = S + C * C, *X = dP + C * C, *Y = X + C * C;
	float *dV = Y + C * C;
	memset(dKt, 0, sizeof(float) * (size_t)(cn * D));
	memset(dU, 0, sizeof(float) * (size_t)(cn * D));
	memset(dW, 0, sizeof(float) * (size_t)(cn * D));
	memset(dV, 0, sizeof(float) * (size_t)(cn * D));
	for (int64_t h = g * rep; h < (g + 1) * rep; h++) {
		float *dgc = s->dgc + (b * H + h) * s->T;
		for (int64_t j = 0; j < cn; j++)
			dgc[j0 + j] = 0;
		for (int64_t m = n; m < N; m++) {
			const int64_t cm = rows_of(s, m);
			const float *lv = m > n ? lv_at(s, s->lv, b, h, m, n) : NULL;
			probs(s, S, dP, lv, dout, v, b, h, m, n, scale);
			mm(dV, D, S, C, 1, RD(dout, b, m * C, h, H), H * D, 0, cn, D, cm, 1, 1);
			for (int64_t i = 0; i < cm; i++)
				for (int64_t j = 0; j < cn; j++) {
					dgc[j0 + j] -= dP[i * C + j];
					if (m == n)
						dgc[j0 + i] += dP[i * C + j];
				}
			if (m == n) {
				float *dA = s->daloc + ((b * H + h) * N + n) * C * C;
				memset(dA, 0, sizeof(float) * (size_t)(C * C));
				for (int64_t i = 0; i < cm; i++)
					for (int64_t j = 0; j <= i; j++)
						dA[i * C + j] = scale * dP[i * C + j];
				continue;
			}
			mm(dKt, D, dP, C, 1, lv, D, 0, cn, D, cm, scale, 1);
			if (n == 0)
				continue;
			/* level n-1 = lv - X U_n with X = lv W_nᵀ; A its adjoint */
			const float *A = lv_at(s, s->adj, b, h, m, n);
			mm(X, C, lv, D, 0, W, K * D, 1, cm, cn, D, 1, 0);
			mm(Y, C, A, D, 0, U, D, 1, cm, cn, D, 1, 0);
			mm(dU, D, X, C, 1, A, D, 0, cn, D, cm, -1, 1);
			mm(dW, D, Y, C, 1, lv, D, 0, cn, D, cm, -1, 1);
		}
	}
	if (dv)
		for (int64_t j = 0; j < cn; j++) {
			float *d = RD(dv, b, j0 + j, g, K);
			for (int64_t e = 0; e < D; e++)
				d[e] += dV[j * D + e];
		}
}

/* dQ~, dA (per query head), dK~, dU, dW of block n back to q, k, w, beta. */
static void block_back(lmk_path_ws *s, float *dq, float *dk, float *dw, float *dbeta,
		       const float *q, const float *k, const float *w, const float *beta,
		       int64_t b, int64_t g, int64_t n)
{
	const int64_t C = s->C, D = s->D, H = s->H, K = s->K, N = s->N, rep = H / K;
	const int64_t c = rows_of(s, n), j0 = n * C, ld = K * D;
	const float *W = RD(w, b, j0, g, K), *Kb = RD(k, b, j0, g, K);
	const float *be = beta + (b * s->T + j0) * K + g;
	const float *Tm = s->tm + ((b * K + g) * N + n) * C * C;
	const float *Z = s->z + ((b * K + g) * N + n) * C * C;
	const float *U = s->u + ((b * K + g) * s->T + j0) * D;
	const float *dKt = s->dkt + ((b * K + g) * s->T + j0) * D;
	float *t = tmp_of(s);
	float *dU = t, *dW = dU + C * D, *dK = dW + C * D, *dQ = dK + C * D, *Tb = dQ + C * D;
	float *Xq = Tb + C * D, *dX = Xq + C * C, *dZ = dX + C * C, *dT = dZ + C * C;
	float *Mk = dT + C * C, *dM = Mk + C * C, *E = dM + C * C, *db = E + C * C;
	memcpy(dU, s->du + ((b * K + g) * s->T + j0) * D, sizeof(float) * (size_t)(c * D));
	memcpy(dW, s->dwp + ((b * K + g) * s->T + j0) * D, sizeof(float) * (size_t)(c * D));
	memcpy(dK, dKt, sizeof(float) * (size_t)(c * D));
	memset(dZ, 0, sizeof(float) * (size_t)(C * C));
	for (int64_t r = 0; r < c; r++)
		db[r] = 0;
	for (int64_t h = g * rep; h < (g + 1) * rep; h++) {
		const float *Q = RD(q, b, j0, h, H);
		const float *dQt = s->dqt + ((b * H + h) * s->T + j0) * D;
		const float *dA = s->daloc + ((b * H + h) * N + n) * C * C;
		/* Q~ = Q - Xq U, A = tril(Q Kᵀ) - Xq Z, Xq = tril(Q Wᵀ) */
		mm(Xq, C, Q, H * D, 0, W, ld, 1, c, c, D, 1, 0);
		memcpy(dQ, dQt, sizeof(float) * (size_t)(c * D));
		mm(dQ, D, dA, C, 0, Kb, ld, 0, c, D, c, 1, 1);
		mm(dK, D, dA, C, 1, Q, H * D, 0, c, D, c, 1, 1);
		mm(dX, C, dQt, D, 0, U, D, 1, c, c, D, -1, 0);
		mm(dX, C, dA, C, 0, Z, C, 1, c, c, c, -1, 1);
		for (int64_t i = 0; i < c; i++)
			for (int64_t j = i + 1; j < c; j++)
				Xq[i * C + j] = dX[i * C + j] = 0;
		mm(dU, D, Xq, C, 1, dQt, D, 0, c, D, c, -1, 1);
		mm(dZ, C, Xq, C, 1, dA, C, 0, c, c, c, -1, 1);
		mm(dQ, D, dX, C, 0, W, ld, 0, c, D, c, 1, 1);
		mm(dW, D, dX, C, 1, Q, H * D, 0, c, D, c, 1, 1);
		if (dq)
			for (int64_t i = 0; i < c; i++) {
				float *d = RD(dq, b, j0 + i, h, H);
				for (int64_t e = 0; e < D; e++)
					d[e] += dQ[i * D + e];
			}
	}
	/* K~ = K - Zᵀ W */
	mm(dZ, C, W, ld, 0, dKt, D, 1, c, c, D, -1, 1);
	mm(dW, D, Z, C, 0, dKt, D, 0, c, D, c, -1, 1);
	/* Z = T Mk, Mk = strictlower(diag(beta) W Kᵀ) */
	for (int64_t r = 0; r < c; r++)
		for (int64_t j = 0; j < c; j++)
			Mk[r * C + j] = j < r ? be[r * K] * dotf(W + r * ld, Kb + j * ld, D) : 0;
	mm(dT, C, dZ, C, 0, Mk, C, 1, c, c, c, 1, 0);
	mm(dM, C, Tm, C, 1, dZ, C, 0, c, c, c, 1, 0);
	for (int64_t r = 0; r < c; r++)
		for (int64_t j = 0; j < c; j++) {
			float e = j < r ? dM[r * C + j] : 0;
			if (e == 0)
				continue;
			db[r] += e * dotf(W + r * ld, Kb + j * ld, D);
			for (int64_t d = 0; d < D; d++) {
				dW[r * D + d] += be[r * K] * e * Kb[j * ld + d];
				dK[j * D + d] += be[r * K] * e * W[r * ld + d];
			}
		}
	/* U = T diag(beta) W */
	mm(Tb, D, Tm, C, 1, dU, D, 0, c, D, c, 1, 0);
	for (int64_t r = 0; r < c; r++) {
		db[r] += dotf(Tb + r * D, W + r * ld, D);
		for (int64_t d = 0; d < D; d++)
			dW[r * D + d] += be[r * K] * Tb[r * D + d];
	}
	for (int64_t r = 0; r < c; r++)
		for (int64_t j = 0; j < c; j++)
			dT[r * C + j] += be[j * K] * dotf(dU + r * D, W + j * ld, D);
	/* T = (I + L)⁻¹: dL = -Tᵀ dT Tᵀ, L = strictlower(diag(beta) W Wᵀ) */
	mm(E, C, Tm, C, 1, dT, C, 0, c, c, c, 1, 0);
	mm(dM, C, E, C, 0, Tm, C, 1, c, c, c, -1, 0);
	for (int64_t r = 0; r < c; r++)
		for (int64_t j = 0; j < r; j++) {
			float e = dM[r * C + j];
			db[r] += e * dotf(W + r * ld, W + j * ld, D);
			for (int64_t d = 0; d < D; d++) {
				dW[r * D + d] += be[r * K] * e * W[j * ld + d];
				dW[j * D + d] += be[r * K] * e * W[r * ld + d];
			}
		}
	for (int64_t r = 0; r < c; r++) {
		if (dk) {
			float *d = RD(dk, b, j0 + r, g, K);
			for (int64_t e = 0; e < D; e++)
				d[e] += dK[r * D + e];
		}
		if (dw) {
			float *d = RD(dw, b, j0 + r, g, K);
			for (int64_t e = 0; e < D; e++)
				d[e] += dW[r * D + e];
		}
		if (dbeta)
			dbeta[(b * s->T + j0 + r) * K + g] += db[r];
	}
}

void lmk_path_cpu_backward(lmk_path_ws *s, float *dq, float *dk, float *dv, float *dw,
			   float *dbeta, float *dlogf, const float *dout, const float *out,
			   const float *q, const float *k, const float *v, const float *w,
			   const float *beta, const float *logf, float scale)
{
	const int64_t B = s->B, T = s->T, H = s->H, K = s->K, N = s->N, D = s->D;
#pragma omp parallel for collapse(2) if (B * H * T * D > 65536)
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < T; i++)
				s->delta[(b * H + h) * T + i] =
					(float)dotd(RD(dout, b, i, h, H), RD(out, b, i, h, H), D);
#pragma omp parallel for schedule(dynamic, 1) collapse(3)
	for (int64_t m = N - 1; m >= 0; m--)
		for (int64_t b = 0; b < B; b++)
			for (int64_t h = 0; h < H; h++)
				query_pass(s, dout, v, w, b, h, m, scale);
#pragma omp parallel for schedule(dynamic, 1) collapse(3)
	for (int64_t n = 0; n < N; n++)
		for (int64_t b = 0; b < B; b++)
			for (int64_t g = 0; g < K; g++)
				key_pass(s, dv, dout, v, w, b, g, n, scale);
	if (dq || dk || dw || dbeta) {
#pragma omp parallel for schedule(dynamic, 1) collapse(3)
		for (int64_t b = 0; b < B; b++)
			for (int64_t g = 0; g < K; g++)
				for (int64_t n = 0; n < N; n++)
					block_back(s, dq, dk, dw, dbeta, q, k, w, beta, b, g, n);
	}
	if (dlogf && logf) {
#pragma omp parallel for collapse(2)
		for (int64_t b = 0; b < B; b++)
			for (int64_t h = 0; h < H; h++) {
				const float *r = s->dgr + (b * H + h) * T, *c = s->dgc + (b * H + h) * T;
				double a = 0;
				for (int64_t t = T - 1; t >= 1; t--) {
					a += (double)r[t] + c[t];
					dlogf[(b * T + t) * H + h] += (float)a;
				}
			}
	}
}

/* ------------------------------------------------------------ the op */

static int on_cuda(const lmk_ctx *c) { return c->dev == LMK_DEV_CUDA; }

static float *falloc(lmk_ctx *c, int64_t n)
{
	return lmk_arena_alloc(&c->arena, sizeof(float) * (size_t)(n > 0 ? n : 1));
}

/* The forward's part of the workspace (saved for the backward). */
static lmk_path_ws *ws_new(lmk_ctx *c, int64_t B, int64_t T, int64_t H, int64_t K, int64_t D,
			   int64_t C, int fox)
{
	lmk_path_ws *s = lmk_arena_alloc(&c->meta, sizeof *s);
	if (!s)
		return NULL;
	memset(s, 0, sizeof *s);
	s->B = B, s->T = T, s->H = H, s->K = K, s->D = D, s->C = C;
	s->N = (T + C - 1) / C;
	int64_t N = s->N;
	s->tm = falloc(c, B * K * N * C * C);
	s->u = falloc(c, B * K * T * D);
	s->z = falloc(c, B * K * N * C * C);
	s->kt = falloc(c, B * K * T * D);
	s->qt = falloc(c, B * H * T * D);
	s->aloc = falloc(c, B * H * N * C * C);
	s->lse = falloc(c, B * H * T);
	s->g = fox ? falloc(c, B * H * T) : NULL;
	if (!s->tm || !s->u || !s->z || !s->kt || !s->qt || !s->aloc || !s->lse || (fox && !s->g))
		return NULL;
	if (!on_cuda(c)) {
		s->nthr = omp_get_max_threads();
		s->tmp = falloc(c, s->nthr * lmk_path_cpu_tmp(C, D));
		if (!s->tmp)
			return NULL;
	}
	return s;
}

/* The backward-only arrays, each at a multiple of 32 floats from base
 * (NULL: all NULL, only counted). @return : the floats they take */
int64_t lmk_path_bwd_carve(lmk_path_ws *s, float *base)
{
	int64_t B = s->B, T = s->T, H = s->H, K = s->K, D = s->D, C = s->C, N = s->N;
	int64_t P = N * (N - 1) / 2, o = 0;
	float **dst[10] = {&s->lv, &s->adj, &s->dqt, &s->daloc, &s->dkt,
			   &s->du, &s->dwp, &s->dgr, &s->dgc, &s->delta};
	int64_t len[10] = {B * H * P * C * D, B * H * P * C * D, B * H * T * D, B * H * N * C * C,
			   B * K * T * D, B * K * T * D, B * K * T * D, B * H * T, B * H * T, B * H * T};
	for (int i = 0; i < 10; i++) {
		*dst[i] = base ? base + o : NULL;
		o += (len[i] + 31) / 32 * 32;
	}
	return o;
}

enum { IN_Q, IN_K, IN_V, IN_W, IN_BETA, IN_LOGF };

static int path_bw(lmk_ctx *c, lmk_node *n)
{
	lmk_tensor **in = n->in;
	lmk_tensor *out = n->out;
	float scale = n->f[0];
	int64_t B = n->i[0], T = n->i[1], H = n->i[2], K = n->i[3], D = n->i[4];
	if (n->i[5] == LMK_PATH_NAIVE) {
		float *scr = falloc(c, lmk_path_cpu_naive_scratch(B, T, H, K, D));
		if (!scr)
			return lmk_errcode();
		lmk_path_cpu_naive_backward(lmk_op_g(in[0]), lmk_op_g(in[1]), lmk_op_g(in[2]),
					    lmk_op_g(in[3]), lmk_op_g(in[4]), lmk_op_g(in[5]), scr,
					    out->grad, lmk_op_f(in[0]), lmk_op_f(in[1]),
					    lmk_op_f(in[2]), lmk_op_f(in[3]), lmk_op_f(in[4]),
					    lmk_op_f(in[5]), B, T, H, K, D, scale);
		return 0;
	}
	lmk_path_ws *s = n->saved;
	if (on_cuda(c)) {
#if LMK_CUDA
		return lmk_cuda_path_backward(c->backend, c->dtype, lmk_op_gb(in[0]), lmk_op_gb(in[1]),
					      lmk_op_gb(in[2]), lmk_op_gb(in[3]), lmk_op_gb(in[4]),
					      lmk_op_gb(in[5]), out->grad, out->data,
					      lmk_op_x(c, in[0]), lmk_op_x(c, in[1]),
					      lmk_op_x(c, in[2]), lmk_op_x(c, in[3]),
					      lmk_op_x(c, in[4]), lmk_op_x(c, in[5]), s, scale);
#else
		return lmk_err(LMK_EUNSUP, "path_attention: cuda in a cpu-only build");
#endif
	}
	/* the levels are the bulk (T² D / C per head) and live only through
	 * this call: heap, not arena, so that a model's layers do not pile
	 * theirs up in one step (on CUDA the launcher takes the backend's
	 * scratch for the same reason) */
	size_t bytes = sizeof(float) * (size_t)lmk_path_bwd_carve(s, NULL);
	float *base = malloc(bytes);
	if (!base)
		return lmk_err(LMK_ENOMEM, "path_attention: backward: cannot allocate %zu bytes",
			       bytes);
	lmk_path_bwd_carve(s, base);
	lmk_path_cpu_backward(s, lmk_op_g(in[0]), lmk_op_g(in[1]), lmk_op_g(in[2]),
			      lmk_op_g(in[3]), lmk_op_g(in[4]), lmk_op_g(in[5]), out->grad,
			      out->data, lmk_op_f(in[0]), lmk_op_f(in[1]), lmk_op_f(in[2]),
			      lmk_op_f(in[3]), lmk_op_f(in[4]), lmk_op_f(in[5]), scale);
	free(base);
	lmk_path_bwd_carve(s, NULL);
	return 0;
}

static int path_bw_empty(lmk_ctx *c, lmk_node *n) { return 0; }

lmk_tensor *lmk_path_attention(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v,
			       lmk_tensor *w, lmk_tensor *beta, lmk_tensor *logf, float scale,
			       const lmk_path_opts *o)
{
	if (!q || !k || !v || !w || !beta)
		return NULL;
	lmk_tensor *in[6] = {q, k, v, w, beta, logf};
	if (lmk_op_check_inputs(c, "path_attention", 6, in,
				(const char *[]){"q", "k", "v", "w", "beta", "logf"},
				(lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32, LMK_F32, LMK_F32, LMK_F32}) <
	    0)
		return NULL;
	if (q->ndim != 4 || k->ndim != 4 || !lmk_op_same_shape(k, v) || !lmk_op_same_shape(k, w) ||
	    k->shape[0] != q->shape[0] || k->shape[1] != q->shape[1] ||
	    k->shape[3] != q->shape[3] || k->shape[2] < 1 || q->shape[2] % k->shape[2]) {
		lmk_err(LMK_EINVAL,
			"path_attention: q %s, k %s, v %s, w %s: expected q (B,T,H,D), k, v and w "
			"(B,T,K,D), H a multiple of K",
			LMK_SHP(q), LMK_SHP(k), LMK_SHP(v), LMK_SHP(w));
		return NULL;
	}
	int64_t B = q->shape[0], T = q->shape[1], H = q->shape[2], K = k->shape[2],
		D = q->shape[3];
	if (beta->ndim != 3 || beta->shape[0] != B || beta->shape[1] != T || beta->shape[2] != K) {
		lmk_err(LMK_EINVAL, "path_attention: beta %s: expected (%lld,%lld,%lld)",
			LMK_SHP(beta), (long long)B, (long long)T, (long long)K);
		return NULL;
	}
	if (logf && (logf->ndim != 3 || logf->shape[0] != B || logf->shape[1] != T ||
		     logf->shape[2] != H)) {
		lmk_err(LMK_EINVAL, "path_attention: logf %s: expected (%lld,%lld,%lld)",
			LMK_SHP(logf), (long long)B, (long long)T, (long long)H);
		return NULL;
	}
	if (!isfinite(scale)) {
		lmk_err(LMK_EINVAL, "path_attention: expected a finite scale, found %g",
			(double)scale);
		return NULL;
	}
	int algo = o ? o->algo : LMK_PATH_AUTO;
	int64_t C = o && o->block ? o->block : 64;
	if (algo < LMK_PATH_AUTO || algo > LMK_PATH_BLOCKWISE_FP32 || C < 1) {
		lmk_err(LMK_EINVAL, "path_attention: algo %d, block %lld: expected algo 0..3 and a "
			"positive block", algo, (long long)C);
		return NULL;
	}
	if (algo == LMK_PATH_AUTO)
		algo = LMK_PATH_BLOCKWISE;
	if (on_cuda(c)) {
		if (algo == LMK_PATH_NAIVE || C > 64 || D > 128) {
			lmk_err(LMK_EUNSUP, "path_attention: algo %d, block %lld, head dim %lld: "
				"cuda runs the blockwise algorithm with block <= 64, D <= 128",
				algo, (long long)C, (long long)D);
			return NULL;
		}
	}
	if (C > T && T > 0)
		C = T;
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, 4, q->shape,
					     lmk_op_wants_grad(c, 6, in));
	if (!out)
		return NULL;
	lmk_path_ws *s = NULL;
	if (T > 0 && algo == LMK_PATH_NAIVE) {
		float *lse = falloc(c, B * H * T);
		if (!lse)
			return NULL;
		lmk_path_cpu_naive_forward(out->data, lse, q->data, k->data, v->data, w->data,
					   beta->data, lmk_op_f(logf), B, T, H, K, D, scale);
	} else if (T > 0) {
		s = ws_new(c, B, T, H, K, D, C, logf != NULL);
		if (!s)
			return NULL;
		s->tc = algo != LMK_PATH_BLOCKWISE_FP32;
		if (on_cuda(c)) {
#if LMK_CUDA
			if (lmk_cuda_path_forward(c->backend, c->dtype, out->data, lmk_op_x(c, q),
						  lmk_op_x(c, k), lmk_op_x(c, v), lmk_op_x(c, w),
						  lmk_op_x(c, beta), lmk_op_x(c, logf), s, scale) < 0)
				return NULL;
#endif
		} else {
			lmk_path_cpu_forward(s, out->data, q->data, k->data, v->data, w->data,
					     beta->data, lmk_op_f(logf), scale);
		}
	}
	int fail;
	lmk_node *n = lmk_op_record(c, "path_attention", out, path_bw, &fail);
	if (fail)
		return NULL;
	if (n && T > 0) {
		for (int i = 0; i < 6; i++)
			n->in[i] = in[i];
		n->saved = s;
		n->i[0] = B, n->i[1] = T, n->i[2] = H, n->i[3] = K, n->i[4] = D;
		n->i[5] = algo;
		n->f[0] = scale;
	} else if (n) {
		n->backward = path_bw_empty;
	}
	return out;
}

/* ------------------------------------------------------------ decoding */

void lmk_path_cpu_cache_update(float *kc, float *vc, float *bias, const float *k, const float *v,
			       const float *w, const float *beta, const float *logf, int64_t B,
			       int64_t cap, int64_t len, int64_t H, int64_t K, int64_t D)
{
#pragma omp parallel for collapse(2) if (B * K * len * D > 65536)
	for (int64_t b = 0; b < B; b++)
		for (int64_t g = 0; g < K; g++) {
			const float *wt = w + (b * K + g) * D;
			float bt = beta[b * K + g];
			for (int64_t j = 0; j < len; j++) {
				float *kj = kc + ((b * cap + j) * K + g) * D;
				float f = bt * (float)dotd(wt, kj, D);
				for (int64_t d = 0; d < D; d++)
					kj[d] -= f * wt[d];
			}
			memcpy(kc + ((b * cap + len) * K + g) * D, k + (b * K + g) * D,
			       sizeof(float) * (size_t)D);
			memcpy(vc + ((b * cap + len) * K + g) * D, v + (b * K + g) * D,
			       sizeof(float) * (size_t)D);
		}
	if (bias)
		for (int64_t b = 0; b < B; b++)
			for (int64_t h = 0; h < H; h++) {
				for (int64_t j = 0; j < len; j++)
					bias[(b * cap + j) * H + h] += logf[b * H + h];
				bias[(b * cap + len) * H + h] = 0;
			}
}

void lmk_path_cpu_decode_attend(float *out, const float *q, const float *kc, const float *vc,
				const float *bias, int64_t B, int64_t cap, int64_t len, int64_t H,
				int64_t K, int64_t D, float scale)
{
	int64_t rep = H / K;
#pragma omp parallel for collapse(2) if (B * H * len * D > 65536)
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++) {
			int64_t g = h / rep;
			const float *qh = q + (b * H + h) * D;
			double mx = -INFINITY, l = 0;
			double acc[D];
			for (int64_t d = 0; d < D; d++)
				acc[d] = 0;
			for (int64_t j = 0; j < len; j++) {
				double s = scale * dotd(qh, kc + ((b * cap + j) * K + g) * D, D) +
					   (bias ? bias[(b * cap + j) * H + h] : 0);
				if (s > mx) {
					double cr = exp(mx - s);
					l *= cr;
					for (int64_t d = 0; d < D; d++)
						acc[d] *= cr;
					mx = s;
				}
				double p = exp(s - mx);
				l += p;
				const float *vj = vc + ((b * cap + j) * K + g) * D;
				for (int64_t d = 0; d < D; d++)
					acc[d] += p * vj[d];
			}
			for (int64_t d = 0; d < D; d++)
				out[(b * H + h) * D + d] = l > 0 ? (float)(acc[d] / l) : 0;
		}
}

int lmk_path_cache_init(lmk_path_cache *pc, lmk_ctx *c, int64_t B, int64_t cap, int64_t H,
			int64_t K, int64_t D, int fox)
{
	memset(pc, 0, sizeof *pc);
	if (B < 1 || cap < 1 || H < 1 || K < 1 || D < 1 || H % K)
		return lmk_err(LMK_EINVAL, "path cache: B %lld, cap %lld, H %lld, K %lld, D %lld: "
			       "expected positive sizes, H a multiple of K", (long long)B,
			       (long long)cap, (long long)H, (long long)K, (long long)D);
	pc->dev = c->dev;
	pc->dt = c->dtype;
	pc->B = B, pc->cap = cap, pc->H = H, pc->K = K, pc->D = D, pc->fox = fox != 0;
	pc->backend = c->backend;
	size_t kk = (size_t)(B * cap * K * D) * sizeof(float);
	size_t kv = (size_t)(B * cap * K * D) * lmk_dtype_size(c->dtype);
	size_t nb = pc->fox ? (size_t)(B * cap * H) * sizeof(float) : 0;
	if (on_cuda(c)) {
#if LMK_CUDA
		if (lmk_cuda_mem_alloc((void **)&pc->k, kk) < 0 || lmk_cuda_mem_alloc(&pc->v, kv) < 0 ||
		    (nb && lmk_cuda_mem_alloc((void **)&pc->bias, nb) < 0)) {
			lmk_path_cache_free(pc);
			return lmk_errcode();
		}
		return 0;
#else
		return lmk_err(LMK_EUNSUP, "path cache: cuda in a cpu-only build");
#endif
	}
	pc->k = malloc(kk);
	pc->v = malloc(kv);
	pc->bias = nb ? malloc(nb) : NULL;
	if (!pc->k || !pc->v || (nb && !pc->bias)) {
		lmk_path_cache_free(pc);
		return lmk_err(LMK_ENOMEM, "path cache: cannot allocate %zu bytes", kk + kv + nb);
	}
	return 0;
}

void lmk_path_cache_free(lmk_path_cache *pc)
{
	if (pc->dev == LMK_DEV_CUDA) {
#if LMK_CUDA
		lmk_cuda_mem_free(pc->k);
		lmk_cuda_mem_free(pc->v);
		lmk_cuda_mem_free(pc->bias);
#endif
	} else {
		free(pc->k);
		free(pc->v);
		free(pc->bias);
	}
	memset(pc, 0, sizeof *pc);
}

void lmk_path_cache_reset(lmk_path_cache *pc) { pc->len = 0; }

lmk_tensor *lmk_path_decode(lmk_ctx *c, lmk_path_cache *pc, lmk_tensor *q, lmk_tensor *k,
			    lmk_tensor *v, lmk_tensor *w, lmk_tensor *beta, lmk_tensor *logf,
			    float scale)
{
	if (!q || !k || !v || !w || !beta)
		return NULL;
	lmk_tensor *in[6] = {q, k, v, w, beta, logf};
	if (lmk_op_check_inputs(c, "path_decode", 6, in,
				(const char *[]){"q", "k", "v", "w", "beta", "logf"},
				(lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32, LMK_F32, LMK_F32, LMK_F32}) <
	    0)
		return NULL;
	const int64_t B = pc->B, H = pc->H, K = pc->K, D = pc->D;
	int bad = c->dev != pc->dev || c->dtype != pc->dt || q->n != B * H * D ||
		  k->n != B * K * D || v->n != B * K * D || w->n != B * K * D || beta->n != B * K ||
		  (logf != NULL) != (pc->fox != 0) || (logf && logf->n != B * H) || q->ndim != 4 ||
		  q->shape[1] != 1;
	if (bad) {
		lmk_err(LMK_EINVAL, "path_decode: q %s, k %s, beta %s, logf %s: expected q "
			"(%lld,1,%lld,%lld), k, v, w (%lld,1,%lld,%lld), beta (%lld,1,%lld), logf "
			"%s, on the cache's device and dtype", LMK_SHP(q), LMK_SHP(k),
			LMK_SHP(beta), logf ? LMK_SHP(logf) : "none", (long long)B, (long long)H,
			(long long)D, (long long)B, (long long)K, (long long)D, (long long)B,
			(long long)K, pc->fox ? "(B,1,H)" : "none");
		return NULL;
	}
	if (pc->len >= pc->cap) {
		lmk_err(LMK_EINVAL, "path_decode: the cache is full (%lld tokens)",
			(long long)pc->cap);
		return NULL;
	}
	if (!isfinite(scale)) {
		lmk_err(LMK_EINVAL, "path_decode: expected a finite scale, found %g", (double)scale);
		return NULL;
	}
	lmk_tensor *out = lmk_tensor_new(c, c->dtype, 4, q->shape, 0);
	if (!out)
		return NULL;
	if (on_cuda(c)) {
#if LMK_CUDA
		if (lmk_cuda_path_cache_update(c->backend, c->dtype, pc->k, pc->v, pc->bias,
					       lmk_op_x(c, k), lmk_op_x(c, v), lmk_op_x(c, w),
					       lmk_op_x(c, beta), lmk_op_x(c, logf), B, pc->cap,
					       pc->len, H, K, D) < 0 ||
		    lmk_cuda_path_decode_attend(c->backend, c->dtype, out->data, lmk_op_x(c, q),
						pc->k, pc->v, pc->bias, B, pc->cap, pc->len + 1, H,
						K, D, scale) < 0)
			return NULL;
#endif
	} else {
		lmk_path_cpu_cache_update(pc->k, pc->v, pc->bias, k->data, v->data, w->data,
					  beta->data, lmk_op_f(logf), B, pc->cap, pc->len, H, K, D);
		lmk_path_cpu_decode_attend(out->data, q->data, pc->k, pc->v, pc->bias, B, pc->cap,
					   pc->len + 1, H, K, D, scale);
	}
	pc->len++;
	return out;
}
