/* gdn.c: Gated DeltaNet and log-linear Gated DeltaNet (gdn.h): the op, its
 * CPU kernels and the decoding state. Every kernel works on one head (b,h)
 * at a time, reading q, k, v, loga, beta, lam through strides, so heads run
 * in parallel with results independent of the thread count.
 * Shape letters as in gdn.h; the per-head state is (nlev,Dk,Dv). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fenwick.h"
#include "gdn.h"
#include "op.h"
#include "ops_cpu.h"

/* the CUDA launchers, when this build has them */
#if LMK_CUDA && defined(__has_include)
#if __has_include("../cuda/gdn_cuda.h")
#include "../cuda/cuda.h"
#include "../cuda/gdn_cuda.h"
#define HAVE_CUDA_GDN 1
#endif
#endif
#ifndef HAVE_CUDA_GDN
#define HAVE_CUDA_GDN 0
#endif

/* One head's inputs: pointers at (b,0,h) and the strides between tokens. */
typedef struct head {
	const float *q, *k, *v, *la, *be, *lam;
	int64_t sk, sv, ss, sl; /* H*Dk, H*Dv, H, H*NL */
	int64_t Dk, Dv, NL;
	int ll;
} head;

static head head_at(const float *q, const float *k, const float *v, const float *la,
		    const float *be, const float *lam, int64_t b, int64_t h, int64_t T,
		    int64_t H, int64_t Dk, int64_t Dv, int64_t NL)
{
	head x;
	int64_t bt = b * T * H + h;
	x.q = q + bt * Dk;
	x.k = k + bt * Dk;
	x.v = v + bt * Dv;
	x.la = la ? la + bt : NULL;
	x.be = be + bt;
	x.lam = lam ? lam + bt * NL : NULL;
	x.sk = H * Dk;
	x.sv = H * Dv;
	x.ss = H;
	x.sl = H * NL;
	x.Dk = Dk;
	x.Dv = Dv;
	x.NL = NL;
	x.ll = lam != NULL;
	return x;
}

static int ctz64(int64_t t) { return __builtin_ctzll((unsigned long long)t); }

/* Whether level l holds keys for query t (after step t): level 0 always;
 * level l >= 1 when bit l-1 of t is set (the Fenwick bucket just below t). */
static int live(int64_t t, int l) { return l == 0 || ((t >> (l - 1)) & 1); }

/* S (Dk,Dv) = a (I - beta k kᵀ) S; p (Dv) scratch ends as kᵀ S before. */
static void apply_A(float *S, const float *k, float a, float beta, float *p, int64_t Dk,
		    int64_t Dv)
{
	memset(p, 0, sizeof(float) * (size_t)Dv);
	for (int64_t i = 0; i < Dk; i++)
		for (int64_t j = 0; j < Dv; j++)
			p[j] += k[i] * S[i * Dv + j];
	for (int64_t i = 0; i < Dk; i++) {
		float bk = beta * k[i];
		for (int64_t j = 0; j < Dv; j++)
			S[i * Dv + j] = a * (S[i * Dv + j] - bk * p[j]);
	}
}

/* The binary counter's carry before step t >= 1: the old levels 0..j,
 * j = ctz(t), are the keys of level j+1 for query t. */
static void merge_levels(float *S /*(nlev,Dk,Dv)*/, int64_t t, int64_t DD)
{
	int j = ctz64(t);
	float *dst = S + (int64_t)(j + 1) * DD;
	for (int l = 0; l <= j; l++) {
		float *src = S + (int64_t)l * DD;
		for (int64_t i = 0; i < DD; i++)
			dst[i] += src[i];
		memset(src, 0, sizeof(float) * (size_t)DD);
	}
}

/* One recurrent step at position t: S (nlev,Dk,Dv) from after t-1 to after
 * t, and o (Dv) when not NULL. lam (NL) or NULL. p (Dv) scratch. */
static void step_fwd(float *S, int nlev, int ll, int64_t t, const float *q, const float *k,
		     const float *v, float a, float beta, const float *lam, float *o, float scale,
		     int64_t Dk, int64_t Dv, float *p)
{
	int64_t DD = Dk * Dv;
	if (ll) {
		if (t > 0)
			merge_levels(S, t, DD);
		for (int l = 1; l < nlev; l++)
			if (live(t, l))
				apply_A(S + l * DD, k, a, beta, p, Dk, Dv);
		for (int64_t i = 0; i < Dk; i++)
			for (int64_t j = 0; j < Dv; j++)
				S[i * Dv + j] = beta * k[i] * v[j];
	} else {
		apply_A(S, k, a, beta, p, Dk, Dv);
		for (int64_t i = 0; i < Dk; i++)
			for (int64_t j = 0; j < Dv; j++)
				S[i * Dv + j] += beta * k[i] * v[j];
	}
	if (!o)
		return;
	memset(o, 0, sizeof(float) * (size_t)Dv);
	for (int l = 0; l < (ll ? nlev : 1); l++) {
		if (!live(t, l))
			continue;
		float w = scale * (ll ? lam[l] : 1.0f);
		const float *Sl = S + l * DD;
		for (int64_t i = 0; i < Dk; i++) {
			float wq = w * q[i];
			for (int64_t j = 0; j < Dv; j++)
				o[j] += wq * Sl[i * Dv + j];
		}
	}
}

static int nlev_of(int ll, int64_t T) { return ll ? lmk_fenwick_levels(T) : 1; }

/* ---------------------------------------------------------- recurrent */

static int head_recurrent(float *out /*(T) rows of stride H*Dv*/, const head *x, int64_t T,
			  float scale)
{
	int ll = x->ll, nlev = nlev_of(ll, T);
	int64_t Dk = x->Dk, Dv = x->Dv;
	float *S = calloc((size_t)(nlev * Dk * Dv + Dv), sizeof(float));
	if (!S)
		return LMK_ENOMEM;
	float *p = S + nlev * Dk * Dv;
	for (int64_t t = 0; t < T; t++)
		step_fwd(S, nlev, ll, t, x->q + t * x->sk, x->k + t * x->sk, x->v + t * x->sv,
			 x->la ? expf(x->la[t * x->ss]) : 1.0f, x->be[t * x->ss],
			 ll ? x->lam + t * x->sl : NULL, out + t * x->sv, scale, Dk, Dv, p);
	free(S);
	return 0;
}

static void vadd(float *dst, const float *src, int64_t n, float s)
{
	if (dst)
		for (int64_t i = 0; i < n; i++)
			dst[i] += s * src[i];
}

/* ------------------------------------------------------------ chunked */

/* The chunk products: lmk_cpu_mm (one OpenBLAS product on the calling
 * thread; the entry points set BLAS to one thread before their parallel
 * region, the heads being the parallelism). */
#define mm lmk_cpu_mm

/* One chunk's matrices, for chunks of at most C tokens. With n tokens from
 * t0, g the in-chunk cumulative log decay, gamma_i = exp(g_i):
 *   Tm = (I + M)^-1, M_ij = beta_i exp(g_i - g_j) k_i.k_j (j < i)
 *   P_ij = exp(g_i - g_j) q_i.k_j (j <= i), A = P Tm diag(beta)
 *   Wk = Tm diag(beta gamma) K, Wv = Tm diag(beta) V (pseudo-keys/values)
 *   Qe_i = gamma_i q_i - sum_j P_ij Wk_j (what reads the entering state)
 *   Kd_j = exp(g_n - g_j) k_j (what writes the leaving state)
 * so that with S the entering state: o_i = scale (sum_s A_is v_s + Qe_iᵀ S)
 * and the leaving state is gamma_n S - Kdᵀ Wk S + Kdᵀ Wv. The n x n
 * matrices are lower triangular and zero beyond n (P, Tm, A), so that
 * full products over them are the triangular sums. X (C,C) and Y (C,
 * max(Dk,Dv)) are scratch. */
typedef struct chunk_ws {
	float *g, *gam, *Tm, *P, *A, *X, *Wk, *Wv, *Qe, *Kd, *Y;
	/* forward: E (Dk,Dk), tmp and Sc (Dk,Dv); levels of states */
	float *E, *tmp, *Sc, *Sig;
} chunk_ws;

static float *ws_take(float **cur, int64_t n)
{
	float *r = *cur;
	*cur += n;
	return r;
}

static int64_t ws_size(int64_t C, int64_t Dk, int64_t Dv)
{
	return 2 * C + 4 * C * C + 3 * C * Dk + C * Dv + C * (Dk > Dv ? Dk : Dv);
}

static void ws_init(chunk_ws *w, float **cur, int64_t C, int64_t Dk, int64_t Dv)
{
	w->g = ws_take(cur, C);
	w->gam = ws_take(cur, C);
	w->Tm = ws_take(cur, C * C);
	w->P = ws_take(cur, C * C);
	w->A = ws_take(cur, C * C);
	w->X = ws_take(cur, C * C);
	w->Wk = ws_take(cur, C * Dk);
	w->Wv = ws_take(cur, C * Dv);
	w->Qe = ws_take(cur, C * Dk);
	w->Kd = ws_take(cur, C * Dk);
	w->Y = ws_take(cur, C * (Dk > Dv ? Dk : Dv));
}

static void chunk_prep(chunk_ws *w, const head *x, int64_t t0, int64_t n, int64_t C)
{
	int64_t Dk = x->Dk, Dv = x->Dv, sk = x->sk, ss = x->ss;
	const float *q = x->q + t0 * sk, *k = x->k + t0 * sk, *v = x->v + t0 * x->sv;
	const float *be = x->be + t0 * ss;
	float acc = 0;
	for (int64_t i = 0; i < n; i++) {
		acc += x->la ? x->la[(t0 + i) * ss] : 0.0f;
		w->g[i] = acc;
		w->gam[i] = expf(acc);
	}
	/* Tm by forward substitution, row by row, from X = K Kᵀ */
	mm(0, 1, n, n, Dk, 1.0f, k, sk, k, sk, 0.0f, w->X, C);
	for (int64_t i = 0; i < n; i++) {
		float *Ti = w->Tm + i * C, bi = be[i * ss];
		memset(Ti, 0, sizeof(float) * (size_t)C);
		Ti[i] = 1.0f;
		for (int64_t j = 0; j < i; j++) {
			float m = bi * expf(w->g[i] - w->g[j]) * w->X[i * C + j];
			const float *Tj = w->Tm + j * C;
			for (int64_t s = 0; s <= j; s++)
				Ti[s] -= m * Tj[s];
		}
	}
	mm(0, 1, n, n, Dk, 1.0f, q, sk, k, sk, 0.0f, w->P, C);
	for (int64_t i = 0; i < n; i++)
		for (int64_t j = 0; j < n; j++)
			w->P[i * C + j] = j <= i ? expf(w->g[i] - w->g[j]) * w->P[i * C + j] : 0.0f;
	mm(0, 0, n, n, n, 1.0f, w->P, C, w->Tm, C, 0.0f, w->A, C);
	for (int64_t i = 0; i < n; i++)
		for (int64_t s = 0; s < n; s++)
			w->A[i * C + s] *= be[s * ss];
	/* X = Tm diag(beta): Wv = X V; then X diag(gamma): Wk = X K */
	for (int64_t j = 0; j < n; j++)
		for (int64_t s = 0; s < n; s++)
			w->X[j * C + s] = w->Tm[j * C + s] * be[s * ss];
	mm(0, 0, n, Dv, n, 1.0f, w->X, C, v, x->sv, 0.0f, w->Wv, Dv);
	for (int64_t j = 0; j < n; j++)
		for (int64_t s = 0; s < n; s++)
			w->X[j * C + s] *= w->gam[s];
	mm(0, 0, n, Dk, n, 1.0f, w->X, C, k, sk, 0.0f, w->Wk, Dk);
	for (int64_t i = 0; i < n; i++)
		for (int64_t d = 0; d < Dk; d++)
			w->Qe[i * Dk + d] = w->gam[i] * q[i * sk + d];
	mm(0, 0, n, Dk, n, -1.0f, w->P, C, w->Wk, Dk, 1.0f, w->Qe, Dk);
	float gn = w->g[n - 1];
	for (int64_t j = 0; j < n; j++) {
		float dj = expf(gn - w->g[j]);
		for (int64_t d = 0; d < Dk; d++)
			w->Kd[j * Dk + d] = dj * k[j * sk + d];
	}
}

/* log2 of the (power of two) chunk of a log-linear head: the level offset
 * of the chunk-level buckets. */
static int log2_of(int64_t C)
{
	int lc = 0;
	while (((int64_t)1 << (lc + 1)) <= C)
		lc++;
	return lc;
}

/* Chunks of C tokens; for log-linear C is a power of two (chunk-aligned
 * Fenwick buckets), except for the materialised form's single chunk. */
static int head_chunked(float *out, const head *x, int64_t T, float scale, int64_t C)
{
	int ll = x->ll;
	int64_t Dk = x->Dk, Dv = x->Dv, DD = Dk * Dv, sv = x->sv;
	int64_t nch = (T + C - 1) / C;
	int lc = log2_of(C), nlevc = nlev_of(ll, nch);
	int64_t need = ws_size(C, Dk, Dv) + Dk * Dk + 2 * DD + (int64_t)nlevc * DD;
	float *mem = calloc((size_t)need, sizeof(float));
	if (!mem)
		return LMK_ENOMEM;
	float *cur = mem;
	chunk_ws w;
	ws_init(&w, &cur, C, Dk, Dv);
	w.E = ws_take(&cur, Dk * Dk);
	w.tmp = ws_take(&cur, DD);
	w.Sc = ws_take(&cur, DD);
	w.Sig = ws_take(&cur, (int64_t)nlevc * DD);

	for (int64_t ci = 0; ci < nch; ci++) {
		int64_t t0 = ci * C, n = T - t0 < C ? T - t0 : C;
		const float *v = x->v + t0 * sv;
		float *o = out + t0 * sv;
		if (ll && ci > 0)
			merge_levels(w.Sig, ci, DD);
		chunk_prep(&w, x, t0, n, C);
		/* intra-chunk: o = scale A V, each key at its level's weight */
		const float *Aw = w.A;
		if (ll) {
			for (int64_t i = 0; i < n; i++) {
				const float *lam = x->lam + (t0 + i) * x->sl;
				for (int64_t s = 0; s < n; s++)
					w.X[i * C + s] = s <= i ? w.A[i * C + s] *
						lam[lmk_fenwick_level(t0 + i, t0 + s)] : 0.0f;
			}
			Aw = w.X;
		}
		mm(0, 0, n, Dv, n, scale, Aw, C, v, sv, 0.0f, o, sv);
		/* inter-chunk: o_i += scale w_iL Qe_iᵀ Sigma_L */
		for (int l = ll ? 1 : 0; ci > 0 && l < nlevc; l++) {
			if (ll && !live(ci, l))
				continue;
			const float *Qw = w.Qe;
			if (ll) {
				for (int64_t i = 0; i < n; i++) {
					float lw = x->lam[(t0 + i) * x->sl + lc + l];
					for (int64_t d = 0; d < Dk; d++)
						w.Y[i * Dk + d] = lw * w.Qe[i * Dk + d];
				}
				Qw = w.Y;
			}
			mm(0, 0, n, Dv, Dk, scale, Qw, Dk, w.Sig + l * DD, Dv, 1.0f, o, sv);
		}
		if (ci == nch - 1)
			break;
		/* E = gamma_n I - Kdᵀ Wk carries a state through the chunk;
		 * Sc = Kdᵀ Wv is the chunk's own contribution */
		mm(1, 0, Dk, Dk, n, -1.0f, w.Kd, Dk, w.Wk, Dk, 0.0f, w.E, Dk);
		for (int64_t d = 0; d < Dk; d++)
			w.E[d * Dk + d] += w.gam[n - 1];
		mm(1, 0, Dk, Dv, n, 1.0f, w.Kd, Dk, w.Wv, Dv, 0.0f, w.Sc, Dv);
		for (int l = ll ? 1 : 0; l < nlevc; l++) {
			if (ll && !live(ci, l))
				continue;
			float *Sg = w.Sig + l * DD;
			mm(0, 0, Dk, Dv, Dk, 1.0f, w.E, Dk, Sg, Dv, 0.0f, w.tmp, Dv);
			memcpy(Sg, w.tmp, sizeof(float) * (size_t)DD);
		}
		for (int64_t i = 0; i < DD; i++)
			w.Sig[i] = ll ? w.Sc[i] : w.Sig[i] + w.Sc[i];
	}
	free(mem);
	return 0;
}

/* The chunked backward: the states entering each chunk (after the
 * log-linear carry) from a forward pass, then the chunks in reverse, each
 * taking the gradient of the states leaving it (dSig) to that of the states
 * entering it, through the matrices of chunk_prep: every product of the
 * forward has its two products here (dX = dY Bᵀ, dB = Xᵀ dY), the rest is
 * elementwise. g* as in hgrad. */
static int head_chunked_bwd(float *gq, float *gk, float *gv, float *gla, float *gbe,
			    float *glam, const float *dout, const head *x, int64_t T,
			    float scale, int64_t C)
{
	int ll = x->ll;
	int64_t Dk = x->Dk, Dv = x->Dv, DD = Dk * Dv, sk = x->sk, sv = x->sv, ss = x->ss;
	int64_t nch = (T + C - 1) / C;
	int lc = log2_of(C), nlevc = nlev_of(ll, nch);
	int64_t SZ = (int64_t)nlevc * DD;
	int64_t need = ws_size(C, Dk, Dv) + nch * SZ + SZ + 5 * C * C + 3 * C * Dk +
		       2 * C * Dv + 2 * C;
	float *mem = calloc((size_t)need, sizeof(float));
	if (!mem)
		return LMK_ENOMEM;
	float *cur = mem;
	chunk_ws w;
	ws_init(&w, &cur, C, Dk, Dv);
	float *ent = ws_take(&cur, nch * SZ);  /* states entering each chunk */
	float *dSig = ws_take(&cur, SZ);       /* gradient of the states */
	float *dP = ws_take(&cur, C * C), *dTm = ws_take(&cur, C * C), *PT = ws_take(&cur, C * C);
	float *dA = ws_take(&cur, C * C), *Z = ws_take(&cur, C * C);
	float *dWk = ws_take(&cur, C * Dk), *dKd = ws_take(&cur, C * Dk), *dQe = ws_take(&cur, C * Dk);
	float *dWv = ws_take(&cur, C * Dv), *YZ = ws_take(&cur, C * Dv);
	float *dg = ws_take(&cur, C), *dgam = ws_take(&cur, C);

	/* forward: the entering states (the forward of head_chunked without
	 * outputs; E is applied as gamma_n S - Kdᵀ (Wk S) to need no Dk x Dk) */
	float *S = dSig; /* the running states, before the backward needs dSig */
	for (int64_t ci = 0; ci < nch; ci++) {
		int64_t t0 = ci * C, n = T - t0 < C ? T - t0 : C;
		if (ll && ci > 0)
			merge_levels(S, ci, DD);
		memcpy(ent + ci * SZ, S, sizeof(float) * (size_t)SZ);
		if (ci == nch - 1)
			break;
		chunk_prep(&w, x, t0, n, C);
		float gn = w.gam[n - 1];
		for (int l = ll ? 1 : 0; l < nlevc; l++) {
			if (ll && !live(ci, l))
				continue;
			float *Sg = S + l * DD;
			mm(0, 0, n, Dv, Dk, 1.0f, w.Wk, Dk, Sg, Dv, 0.0f, YZ, Dv);
			mm(1, 0, Dk, Dv, n, -1.0f, w.Kd, Dk, YZ, Dv, gn, Sg, Dv);
		}
		mm(1, 0, Dk, Dv, n, 1.0f, w.Kd, Dk, w.Wv, Dv, ll ? 0.0f : 1.0f, S, Dv);
	}
	memset(dSig, 0, sizeof(float) * (size_t)SZ);

	for (int64_t ci = nch - 1; ci >= 0; ci--) {
		int64_t t0 = ci * C, n = T - t0 < C ? T - t0 : C;
		const float *q = x->q + t0 * sk, *k = x->k + t0 * sk, *v = x->v + t0 * sv;
		const float *be = x->be + t0 * ss, *dO = dout + t0 * sv;
		const float *Sin = ent + ci * SZ;
		chunk_prep(&w, x, t0, n, C);
		memset(dP, 0, sizeof(float) * (size_t)(C * C));
		memset(dTm, 0, sizeof(float) * (size_t)(C * C));
		memset(dWk, 0, sizeof(float) * (size_t)(C * Dk));
		memset(dKd, 0, sizeof(float) * (size_t)(C * Dk));
		memset(dQe, 0, sizeof(float) * (size_t)(C * Dk));
		memset(dWv, 0, sizeof(float) * (size_t)(C * Dv));
		memset(dg, 0, sizeof(float) * (size_t)C);
		memset(dgam, 0, sizeof(float) * (size_t)C);
		float gn = w.gam[n - 1];
		/* the leaving states: own contribution Sc = Kdᵀ Wv (dSig_0, or the
		 * single state), transitions gamma_n S - Kdᵀ Wk S */
		if (ci < nch - 1) {
			const float *dSc = dSig; /* level 0 either way */
			mm(0, 1, n, Dk, Dv, 1.0f, w.Wv, Dv, dSc, Dv, 1.0f, dKd, Dk);
			mm(0, 0, n, Dv, Dk, 1.0f, w.Kd, Dk, dSc, Dv, 1.0f, dWv, Dv);
			for (int l = ll ? 1 : 0; l < nlevc; l++) {
				if (ll && !live(ci, l))
					continue;
				const float *Sg = Sin + l * DD;
				float *dS = dSig + l * DD;
				float dot = 0;
				for (int64_t i = 0; i < DD; i++)
					dot += Sg[i] * dS[i];
				dgam[n - 1] += dot;
				/* YZ = Wk Sg: dKd -= YZ dSᵀ; YZ = Kd dS: dWk -= YZ Sgᵀ */
				mm(0, 0, n, Dv, Dk, 1.0f, w.Wk, Dk, Sg, Dv, 0.0f, YZ, Dv);
				mm(0, 1, n, Dk, Dv, -1.0f, YZ, Dv, dS, Dv, 1.0f, dKd, Dk);
				mm(0, 0, n, Dv, Dk, 1.0f, w.Kd, Dk, dS, Dv, 0.0f, YZ, Dv);
				mm(0, 1, n, Dk, Dv, -1.0f, YZ, Dv, Sg, Dv, 1.0f, dWk, Dk);
				/* dS (entering) = gamma_n dS - Wkᵀ (Kd dS) */
				mm(1, 0, Dk, Dv, n, -1.0f, w.Wk, Dk, YZ, Dv, gn, dS, Dv);
			}
		} else {
			memset(dSig, 0, sizeof(float) * (size_t)SZ);
		}
		/* intra: o_i = scale sum_s lam_i[l(i,s)] A_is v_s; dA (the
		 * gradient of A) and Z = the weights o takes of each v */
		mm(0, 1, n, n, Dv, scale, dO, sv, v, sv, 0.0f, dA, C);
		for (int64_t i = 0; i < n; i++) {
			const float *lam = ll ? x->lam + (t0 + i) * x->sl : NULL;
			float *glm = glam && ll ? glam + (t0 + i) * x->sl : NULL;
			for (int64_t s = 0; s < n; s++) {
				if (s > i) {
					dA[i * C + s] = Z[i * C + s] = 0.0f;
					continue;
				}
				float dov = dA[i * C + s], lw = 1.0f;
				if (ll) {
					int lv = lmk_fenwick_level(t0 + i, t0 + s);
					lw = lam[lv];
					if (glm)
						glm[lv] += w.A[i * C + s] * dov;
				}
				dA[i * C + s] = lw * dov;
				Z[i * C + s] = scale * lw * w.A[i * C + s];
			}
		}
		if (gv)
			mm(1, 0, n, Dv, n, 1.0f, Z, C, dO, sv, 1.0f, gv + t0 * sv, sv);
		/* A = P Tm diag(beta): with DB = dA diag(beta) (in Z), dP += DB
		 * Tmᵀ, dTm += Pᵀ DB, and d beta_s = sum_i dA_is (P Tm)_is */
		if (gbe) {
			mm(0, 0, n, n, n, 1.0f, w.P, C, w.Tm, C, 0.0f, PT, C);
			for (int64_t s = 0; s < n; s++) {
				float a = 0;
				for (int64_t i = s; i < n; i++)
					a += dA[i * C + s] * PT[i * C + s];
				gbe[(t0 + s) * ss] += a;
			}
		}
		for (int64_t i = 0; i < n; i++)
			for (int64_t s = 0; s < n; s++)
				Z[i * C + s] = dA[i * C + s] * be[s * ss];
		mm(0, 1, n, n, n, 1.0f, Z, C, w.Tm, C, 1.0f, dP, C);
		mm(1, 0, n, n, n, 1.0f, w.P, C, Z, C, 1.0f, dTm, C);
		/* inter: o_i += scale w_iL Qe_iᵀ Sigma_L; Y = dO Sigmaᵀ, then the
		 * weighted Qe for dSigma += Qwᵀ dO */
		for (int l = ll ? 1 : 0; ci > 0 && l < nlevc; l++) {
			if (ll && !live(ci, l))
				continue;
			const float *Sg = Sin + l * DD;
			float *dS = dSig + l * DD;
			mm(0, 1, n, Dk, Dv, 1.0f, dO, sv, Sg, Dv, 0.0f, w.Y, Dk);
			for (int64_t i = 0; i < n; i++) {
				float wl = scale * (ll ? x->lam[(t0 + i) * x->sl + lc + l] : 1.0f);
				float dl = 0, *y = w.Y + i * Dk;
				const float *qe = w.Qe + i * Dk;
				for (int64_t d = 0; d < Dk; d++) {
					dQe[i * Dk + d] += wl * y[d];
					dl += qe[d] * y[d];
					y[d] = wl * qe[d];
				}
				if (glam && ll)
					glam[(t0 + i) * x->sl + lc + l] += scale * dl;
			}
			mm(1, 0, Dk, Dv, n, 1.0f, w.Y, Dk, dO, sv, 1.0f, dS, Dv);
		}
		/* Qe_i = gamma_i q_i - sum_j P_ij Wk_j */
		if (ci > 0) {
			for (int64_t i = 0; i < n; i++) {
				float s = 0;
				for (int64_t d = 0; d < Dk; d++)
					s += q[i * sk + d] * dQe[i * Dk + d];
				dgam[i] += s;
				if (gq)
					vadd(gq + (t0 + i) * sk, dQe + i * Dk, Dk, w.gam[i]);
			}
			mm(0, 1, n, n, Dk, -1.0f, dQe, Dk, w.Wk, Dk, 1.0f, dP, C);
			mm(1, 0, n, Dk, n, -1.0f, w.P, C, dQe, Dk, 1.0f, dWk, Dk);
		}
		/* Wv = Tm diag(beta) V, Wk = Tm diag(beta gamma) K: a1 (in Z) =
		 * dWv Vᵀ, a2 (in dA) = dWk Kᵀ */
		mm(0, 1, n, n, Dv, 1.0f, dWv, Dv, v, sv, 0.0f, Z, C);
		mm(0, 1, n, n, Dk, 1.0f, dWk, Dk, k, sk, 0.0f, dA, C);
		for (int64_t s = 0; s < n; s++) {
			float bs = be[s * ss], gs = w.gam[s], b2 = 0, g2 = 0;
			for (int64_t j = s; j < n; j++) {
				float tjs = w.Tm[j * C + s], a1 = Z[j * C + s], a2 = dA[j * C + s];
				dTm[j * C + s] += bs * a1 + bs * gs * a2;
				b2 += tjs * (a1 + gs * a2);
				g2 += tjs * bs * a2;
			}
			if (gbe)
				gbe[(t0 + s) * ss] += b2;
			dgam[s] += g2;
		}
		if (gv || gk) {
			for (int64_t j = 0; j < n; j++)
				for (int64_t s = 0; s < n; s++)
					Z[j * C + s] = w.Tm[j * C + s] * be[s * ss];
			if (gv)
				mm(1, 0, n, Dv, n, 1.0f, Z, C, dWv, Dv, 1.0f, gv + t0 * sv, sv);
			if (gk) {
				for (int64_t j = 0; j < n; j++)
					for (int64_t s = 0; s < n; s++)
						Z[j * C + s] *= w.gam[s];
				mm(1, 0, n, Dk, n, 1.0f, Z, C, dWk, Dk, 1.0f, gk + t0 * sk, sk);
			}
		}
		/* dM = -Tmᵀ dTm Tmᵀ (strictly lower), over dTm's lower triangle:
		 * PT = Tmᵀ dTm, Z = dM */
		for (int64_t j = 0; j < n; j++)
			for (int64_t s = j + 1; s < n; s++)
				dTm[j * C + s] = 0.0f;
		mm(1, 0, n, n, n, 1.0f, w.Tm, C, dTm, C, 0.0f, PT, C);
		mm(0, 1, n, n, n, -1.0f, PT, C, w.Tm, C, 0.0f, Z, C);
		/* M_ij = beta_i exp(g_i - g_j) k_i.k_j: dA = K Kᵀ, then Z the
		 * weights of dk_i += Z_ij k_j and dk_j += Z_ij k_i */
		mm(0, 1, n, n, Dk, 1.0f, k, sk, k, sk, 0.0f, dA, C);
		for (int64_t i = 0; i < n; i++)
			for (int64_t j = 0; j < n; j++) {
				if (j >= i) {
					Z[i * C + j] = 0.0f;
					continue;
				}
				float dm = Z[i * C + j], kk = dA[i * C + j];
				float ex = expf(w.g[i] - w.g[j]), bi = be[i * ss], mij = bi * ex * kk;
				if (gbe)
					gbe[(t0 + i) * ss] += dm * ex * kk;
				dg[i] += dm * mij;
				dg[j] -= dm * mij;
				Z[i * C + j] = dm * bi * ex;
			}
		if (gk) {
			mm(0, 0, n, Dk, n, 1.0f, Z, C, k, sk, 1.0f, gk + t0 * sk, sk);
			mm(1, 0, n, Dk, n, 1.0f, Z, C, k, sk, 1.0f, gk + t0 * sk, sk);
		}
		/* P_ij = exp(g_i - g_j) q_i.k_j: Z = dP exp(g_i - g_j), j <= i */
		for (int64_t i = 0; i < n; i++)
			for (int64_t j = 0; j < n; j++) {
				if (j > i) {
					Z[i * C + j] = 0.0f;
					continue;
				}
				float dp = dP[i * C + j];
				dg[i] += dp * w.P[i * C + j];
				dg[j] -= dp * w.P[i * C + j];
				Z[i * C + j] = dp * expf(w.g[i] - w.g[j]);
			}
		if (gq)
			mm(0, 0, n, Dk, n, 1.0f, Z, C, k, sk, 1.0f, gq + t0 * sk, sk);
		if (gk)
			mm(1, 0, n, Dk, n, 1.0f, Z, C, q, sk, 1.0f, gk + t0 * sk, sk);
		/* Kd_j = exp(g_n - g_j) k_j */
		for (int64_t j = 0; j < n; j++) {
			float s = 0, ex = expf(w.g[n - 1] - w.g[j]);
			for (int64_t d = 0; d < Dk; d++)
				s += dKd[j * Dk + d] * w.Kd[j * Dk + d];
			dg[n - 1] += s;
			dg[j] -= s;
			if (gk)
				vadd(gk + (t0 + j) * sk, dKd + j * Dk, Dk, ex);
		}
		/* gamma_i = exp(g_i); g_i = sum_{r<=i} loga_r */
		float acc = 0;
		for (int64_t i = n - 1; i >= 0; i--) {
			acc += dg[i] + w.gam[i] * dgam[i];
			if (gla && x->la)
				gla[(t0 + i) * ss] += acc;
		}
		if (ll && ci > 0) { /* the carry's backward */
			int j = ctz64(ci);
			for (int l = 0; l <= j; l++)
				memcpy(dSig + l * DD, dSig + (int64_t)(j + 1) * DD,
				       sizeof(float) * (size_t)DD);
		}
	}
	free(mem);
	return 0;
}

/* The chunk of the chunked forms: the whole sequence when materialised,
 * a power of two for log-linear. */
static int64_t chunk_of(int algo, int chunk, int64_t T, int ll)
{
	int64_t C = chunk > 0 ? chunk : 64;
	if (algo == LMK_GDN_MATERIALIZED) {
		C = T;
	} else if (ll) {
		int64_t p = 1;
		while (2 * p <= C)
			p *= 2;
		C = p;
	}
	return C < 1 ? 1 : C;
}

int lmk_cpu_gdn_forward(float *out, const float *q, const float *k, const float *v,
			const float *loga, const float *beta, const float *lam, int64_t B,
			int64_t T, int64_t H, int64_t Dk, int64_t Dv, int64_t NL, float scale,
			int algo, int chunk)
{
	int64_t C = chunk_of(algo, chunk, T, lam != NULL);
	int fail = 0;
	lmk_cpu_blas_one_thread();
#pragma omp parallel for schedule(dynamic, 1)
	for (int64_t bh = 0; bh < B * H; bh++) {
		int64_t b = bh / H, h = bh % H;
		head x = head_at(q, k, v, loga, beta, lam, b, h, T, H, Dk, Dv, NL);
		float *o = out + (b * T * H + h) * Dv;
		int r = algo == LMK_GDN_RECURRENT ? head_recurrent(o, &x, T, scale)
						  : head_chunked(o, &x, T, scale, C);
		if (r < 0) {
#pragma omp atomic write
			fail = 1;
		}
	}
	return fail ? lmk_err(LMK_ENOMEM, "gdn: out of memory for the forward's scratch") : 0;
}

/* ----------------------------------------------------------- backward */

/* Gradients of one head, pointers at (b,0,h) like head's. */
typedef struct hgrad {
	float *q, *k, *v, *la, *be, *lam;
} hgrad;


/* Backward of step t. Sold (nlev,Dk,Dv) is the state before the step; dS
 * (nlev,Dk,Dv) holds the gradient of the state after it and ends holding the
 * gradient of the state before. N (nlev,Dk,Dv) and sc (4 Dv + 2 Dk) are
 * scratch. Token gradients accumulate into gq..glam (NULL: not wanted);
 * *ga gets d/dloga. */
static void step_bwd(const float *Sold, float *dS, float *N, float *sc, int nlev, int ll,
		     int64_t t, const float *q, const float *k, const float *v, float a,
		     float beta, const float *lam, const float *dout, float scale, int64_t Dk,
		     int64_t Dv, float *gq, float *gk, float *gv, float *ga, float *gb,
		     float *glam)
{
	int64_t DD = Dk * Dv;
	float *p = sc, *r = sc + Dv, *dox = sc + 2 * Dv, *y = sc + 4 * Dv, *z = y + Dk;
	memcpy(N, Sold, sizeof(float) * (size_t)(nlev * DD));
	if (ll && t > 0)
		merge_levels(N, t, DD);
	float da = 0, db = 0;
	float vdo = 0;
	for (int64_t j = 0; j < Dv; j++) {
		dox[j] = scale * dout[j];
		vdo += v[j] * dox[j];
	}
	/* the output: o = sum_l w_l S_lᵀ q with S_l the state after the step */
	for (int l = 0; l < nlev; l++) {
		if (!live(t, l) || (!ll && l > 0))
			continue;
		float wl = ll ? lam[l] : 1.0f;
		float *Nl = N + l * DD, *dSl = dS + l * DD;
		/* y = S_l dox, from N_l: S_l = a (N_l - beta k pᵀ) (+ beta k vᵀ) */
		for (int64_t i = 0; i < Dk; i++)
			y[i] = 0;
		if (!(ll && l == 0)) {
			float pdo = 0;
			memset(p, 0, sizeof(float) * (size_t)Dv);
			for (int64_t i = 0; i < Dk; i++)
				for (int64_t j = 0; j < Dv; j++)
					p[j] += k[i] * Nl[i * Dv + j];
			for (int64_t j = 0; j < Dv; j++)
				pdo += p[j] * dox[j];
			for (int64_t i = 0; i < Dk; i++) {
				float s = 0;
				for (int64_t j = 0; j < Dv; j++)
					s += Nl[i * Dv + j] * dox[j];
				y[i] = a * (s - beta * k[i] * pdo);
			}
		}
		if (!ll || l == 0)
			for (int64_t i = 0; i < Dk; i++)
				y[i] += beta * k[i] * vdo;
		if (gq)
			vadd(gq, y, Dk, wl);
		if (glam) {
			float s = 0;
			for (int64_t i = 0; i < Dk; i++)
				s += q[i] * y[i];
			glam[l] += s;
		}
		for (int64_t i = 0; i < Dk; i++) {
			float wq = wl * q[i];
			for (int64_t j = 0; j < Dv; j++)
				dSl[i * Dv + j] += wq * dox[j];
		}
	}
	/* the input term beta k vᵀ (level 0, or the single state) */
	{
		const float *dS0 = dS;
		memset(r, 0, sizeof(float) * (size_t)Dv);
		for (int64_t i = 0; i < Dk; i++) {
			float zi = 0;
			for (int64_t j = 0; j < Dv; j++) {
				r[j] += k[i] * dS0[i * Dv + j];
				zi += dS0[i * Dv + j] * v[j];
			}
			z[i] = zi;
		}
		for (int64_t j = 0; j < Dv; j++)
			db += r[j] * v[j];
		if (gv)
			vadd(gv, r, Dv, beta);
		if (gk)
			vadd(gk, z, Dk, beta);
	}
	/* the transitions: Y = a (N - beta k pᵀ), p = Nᵀk, r = dYᵀk */
	for (int l = ll ? 1 : 0; l < nlev; l++) {
		if (!live(t, l) || (!ll && l > 0))
			continue;
		float *Nl = N + l * DD, *dY = dS + l * DD;
		memset(p, 0, sizeof(float) * (size_t)Dv);
		memset(r, 0, sizeof(float) * (size_t)Dv);
		float dyn = 0;
		for (int64_t i = 0; i < Dk; i++)
			for (int64_t j = 0; j < Dv; j++) {
				p[j] += k[i] * Nl[i * Dv + j];
				r[j] += k[i] * dY[i * Dv + j];
				dyn += dY[i * Dv + j] * Nl[i * Dv + j];
			}
		float rp = 0;
		for (int64_t j = 0; j < Dv; j++)
			rp += r[j] * p[j];
		da += dyn - beta * rp;
		db -= a * rp;
		if (gk)
			for (int64_t i = 0; i < Dk; i++) {
				float s = 0;
				for (int64_t j = 0; j < Dv; j++)
					s += dY[i * Dv + j] * p[j] + Nl[i * Dv + j] * r[j];
				gk[i] -= a * beta * s;
			}
		for (int64_t i = 0; i < Dk; i++) {
			float bk = beta * k[i];
			for (int64_t j = 0; j < Dv; j++)
				dY[i * Dv + j] = a * (dY[i * Dv + j] - bk * r[j]);
		}
	}
	if (ll && t > 0) {
		/* the carry's backward: levels 0..j all fed level j+1 */
		int j = ctz64(t);
		const float *G = dS + (int64_t)(j + 1) * DD;
		for (int l = 0; l <= j; l++)
			memcpy(dS + l * DD, G, sizeof(float) * (size_t)DD);
	}
	*ga = da * a;
	if (gb)
		*gb += db;
}

/* Windows of W steps: states checkpointed at window starts, then each
 * window recomputed forwards and walked backwards. */
static int head_backward(const hgrad *g, const float *dout, const head *x, int64_t T,
			 float scale, int64_t W)
{
	int ll = x->ll, nlev = nlev_of(ll, T);
	int64_t Dk = x->Dk, Dv = x->Dv, SZ = nlev * Dk * Dv;
	int64_t nw = (T + W - 1) / W;
	size_t n = (size_t)(nw * SZ + W * SZ + 3 * SZ + 4 * Dv + 2 * Dk);
	float *mem = calloc(n, sizeof(float));
	if (!mem)
		return LMK_ENOMEM;
	float *ck = mem, *win = ck + nw * SZ, *S = win + W * SZ, *dS = S + SZ, *N = dS + SZ,
	      *sc = N + SZ;
#define A_AT(t) (x->la ? expf(x->la[(t) * x->ss]) : 1.0f)
#define STEP(St, t)                                                                        \
	step_fwd(St, nlev, ll, t, x->q + (t) * x->sk, x->k + (t) * x->sk, x->v + (t) * x->sv, \
		 A_AT(t), x->be[(t) * x->ss], NULL, NULL, scale, Dk, Dv, sc)
	for (int64_t t = 0; t < T; t++) {
		if (t % W == 0)
			memcpy(ck + (t / W) * SZ, S, sizeof(float) * (size_t)SZ);
		STEP(S, t);
	}
	for (int64_t wi = nw - 1; wi >= 0; wi--) {
		int64_t t0 = wi * W, t1 = t0 + W < T ? t0 + W : T;
		memcpy(win, ck + wi * SZ, sizeof(float) * (size_t)SZ);
		for (int64_t t = t0; t + 1 < t1; t++) {
			memcpy(win + (t + 1 - t0) * SZ, win + (t - t0) * SZ,
			       sizeof(float) * (size_t)SZ);
			STEP(win + (t + 1 - t0) * SZ, t);
		}
		for (int64_t t = t1 - 1; t >= t0; t--) {
			float ga = 0;
			step_bwd(win + (t - t0) * SZ, dS, N, sc, nlev, ll, t, x->q + t * x->sk,
				 x->k + t * x->sk, x->v + t * x->sv, A_AT(t), x->be[t * x->ss],
				 ll ? x->lam + t * x->sl : NULL, dout + t * x->sv, scale, Dk, Dv,
				 g->q ? g->q + t * x->sk : NULL, g->k ? g->k + t * x->sk : NULL,
				 g->v ? g->v + t * x->sv : NULL, &ga,
				 g->be ? g->be + t * x->ss : NULL,
				 g->lam ? g->lam + t * x->sl : NULL);
			if (g->la && x->la)
				g->la[t * x->ss] += ga;
		}
	}
#undef STEP
#undef A_AT
	free(mem);
	return 0;
}

int lmk_cpu_gdn_backward(float *dq, float *dk, float *dv, float *dloga, float *dbeta,
			 float *dlam, const float *dout, const float *q, const float *k,
			 const float *v, const float *loga, const float *beta, const float *lam,
			 int64_t B, int64_t T, int64_t H, int64_t Dk, int64_t Dv, int64_t NL,
			 float scale, int algo, int chunk)
{
	int64_t W = chunk > 0 ? chunk : 64, C = chunk_of(algo, chunk, T, lam != NULL);
	int fail = 0;
	lmk_cpu_blas_one_thread();
#pragma omp parallel for schedule(dynamic, 1)
	for (int64_t bh = 0; bh < B * H; bh++) {
		int64_t b = bh / H, h = bh % H, bt = b * T * H + h;
		head x = head_at(q, k, v, loga, beta, lam, b, h, T, H, Dk, Dv, NL);
		hgrad g = {dq ? dq + bt * Dk : NULL,     dk ? dk + bt * Dk : NULL,
			   dv ? dv + bt * Dv : NULL,     dloga ? dloga + bt : NULL,
			   dbeta ? dbeta + bt : NULL,    dlam && lam ? dlam + bt * NL : NULL};
		int r = algo == LMK_GDN_RECURRENT
				? head_backward(&g, dout + bt * Dv, &x, T, scale, W)
				: head_chunked_bwd(g.q, g.k, g.v, g.la, g.be, g.lam, dout + bt * Dv,
						   &x, T, scale, C);
		if (r < 0) {
#pragma omp atomic write
			fail = 1;
		}
	}
	return fail ? lmk_err(LMK_ENOMEM, "gdn: out of memory for the backward's scratch") : 0;
}

/* ----------------------------------------------------------------- op */

static int on_cuda(const lmk_ctx *c) { return c->dev == LMK_DEV_CUDA; }

static int gdn_bw(lmk_ctx *c, lmk_node *n)
{
	int64_t B = n->i[0], T = n->i[1], H = n->i[2], Dk = n->i[3], Dv = n->i[4], NL = n->i[5];
	int chunk = (int)n->f[1], algo = (int)n->f[2];
	lmk_tensor **in = n->in;
	if (on_cuda(c)) {
#if HAVE_CUDA_GDN
		return lmk_cuda_gdn_backward(c->backend, c->dtype, lmk_op_gb(in[0]),
					     lmk_op_gb(in[1]), lmk_op_gb(in[2]), lmk_op_gb(in[3]),
					     lmk_op_gb(in[4]), lmk_op_gb(in[5]), n->out->grad,
					     lmk_op_x(c, in[0]), lmk_op_x(c, in[1]),
					     lmk_op_x(c, in[2]), lmk_op_x(c, in[3]),
					     lmk_op_x(c, in[4]), lmk_op_x(c, in[5]), B, T, H, Dk,
					     Dv, NL, n->f[0], algo, chunk);
#else
		return lmk_err(LMK_EUNSUP, "gdn: no cuda kernel in this build");
#endif
	}
	return lmk_cpu_gdn_backward(lmk_op_g(in[0]), lmk_op_g(in[1]), lmk_op_g(in[2]),
				    lmk_op_g(in[3]), lmk_op_g(in[4]), lmk_op_g(in[5]),
				    n->out->grad, lmk_op_f(in[0]), lmk_op_f(in[1]),
				    lmk_op_f(in[2]), lmk_op_f(in[3]), lmk_op_f(in[4]),
				    lmk_op_f(in[5]), B, T, H, Dk, Dv, NL, n->f[0], algo, chunk);
}

static int is_shape(const lmk_tensor *t, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
	int64_t s[4] = {a, b, c, d};
	if (t->ndim != nd)
		return 0;
	for (int i = 0; i < nd; i++)
		if (t->shape[i] != s[i])
			return 0;
	return 1;
}

/* Shapes of the op's (or a step's, T = 1) inputs; *NL gets lam's levels. */
static int check_shapes(const char *op, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v,
			lmk_tensor *loga, lmk_tensor *beta, lmk_tensor *lam, int64_t *NL)
{
	if (q->ndim != 4 || v->ndim != 4 || q->shape[3] < 1 || v->shape[3] < 1)
		return lmk_err(LMK_EINVAL, "%s: q %s, v %s: expected q (B,T,H,Dk), v (B,T,H,Dv)",
			       op, LMK_SHP(q), LMK_SHP(v));
	int64_t B = q->shape[0], T = q->shape[1], H = q->shape[2], Dk = q->shape[3];
	if (!is_shape(k, 4, B, T, H, Dk) || !is_shape(v, 4, B, T, H, v->shape[3]))
		return lmk_err(LMK_EINVAL, "%s: q %s, k %s, v %s: expected k as q and v (%lld,%lld,%lld,Dv)",
			       op, LMK_SHP(q), LMK_SHP(k), LMK_SHP(v), (long long)B,
			       (long long)T, (long long)H);
	if (!is_shape(beta, 3, B, T, H, 0) || (loga && !is_shape(loga, 3, B, T, H, 0)))
		return lmk_err(LMK_EINVAL, "%s: q %s: expected beta%s (%lld,%lld,%lld), found %s%s%s",
			       op, LMK_SHP(q), loga ? " and loga" : "", (long long)B,
			       (long long)T, (long long)H, LMK_SHP(beta), loga ? " and " : "",
			       loga ? LMK_SHP(loga) : "");
	*NL = 0;
	if (lam) {
		if (lam->ndim != 4 || !is_shape(lam, 4, B, T, H, lam->shape[3]))
			return lmk_err(LMK_EINVAL, "%s: q %s, lam %s: expected lam (%lld,%lld,%lld,NL)",
				       op, LMK_SHP(q), LMK_SHP(lam), (long long)B, (long long)T,
				       (long long)H);
		*NL = lam->shape[3];
	}
	return 0;
}

lmk_tensor *lmk_gdn(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v, lmk_tensor *loga,
		    lmk_tensor *beta, lmk_tensor *lam, const lmk_gdn_opts *o)
{
	if (!q || !k || !v || !beta)
		return NULL;
	lmk_tensor *in[6] = {q, k, v, loga, beta, lam};
	if (lmk_op_check_inputs(c, "gdn", 6, in,
				(const char *[]){"q", "k", "v", "loga", "beta", "lam"},
				(lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32, LMK_F32, LMK_F32,
					      LMK_F32}) < 0)
		return NULL;
	int64_t NL;
	if (check_shapes("gdn", q, k, v, loga, beta, lam, &NL) < 0)
		return NULL;
	int64_t B = q->shape[0], T = q->shape[1], H = q->shape[2], Dk = q->shape[3],
		Dv = v->shape[3];
	if (lam && NL < lmk_fenwick_levels(T)) {
		lmk_err(LMK_EINVAL, "gdn: lam %s: expected at least %d levels for %lld tokens",
			LMK_SHP(lam), lmk_fenwick_levels(T), (long long)T);
		return NULL;
	}
	lmk_gdn_opts def = {0, LMK_GDN_AUTO, 0};
	if (!o)
		o = &def;
	if (o->chunk < 0 || o->chunk > (1 << 20) || o->algo < LMK_GDN_AUTO ||
	    o->algo > LMK_GDN_CHUNKED || !isfinite(o->scale)) {
		lmk_err(LMK_EINVAL, "gdn: expected chunk in [0,2^20], a known algo and a finite "
			"scale, found chunk %d, algo %d, scale %g", o->chunk, o->algo,
			(double)o->scale);
		return NULL;
	}
	float scale = o->scale != 0 ? o->scale : 1.0f / sqrtf((float)Dk);
	int chunk = o->chunk ? o->chunk : 64;
	/* the CUDA kernels take gradients in the compute dtype or float32 */
	for (int i = 0; on_cuda(c) && i < 6; i++)
		if (in[i] && in[i]->requires_grad && in[i]->gdtype != c->dtype &&
		    in[i]->gdtype != LMK_F32) {
			lmk_err(LMK_EUNSUP, "gdn: an input has a %s gradient in a %s context",
				lmk_dtype_name(in[i]->gdtype), lmk_dtype_name(c->dtype));
			return NULL;
		}
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, 4, (int64_t[]){B, T, H, Dv},
					     lmk_op_wants_grad(c, 6, in));
	if (!out)
		return NULL;
	if (on_cuda(c)) {
#if HAVE_CUDA_GDN
		if (lmk_cuda_gdn_forward(c->backend, c->dtype, out->data, lmk_op_x(c, q),
					 lmk_op_x(c, k), lmk_op_x(c, v), lmk_op_x(c, loga),
					 lmk_op_x(c, beta), lmk_op_x(c, lam), B, T, H, Dk, Dv, NL,
					 scale, o->algo, chunk) < 0)
			return NULL;
#else
		lmk_err(LMK_EUNSUP, "gdn: no cuda kernel in this build");
		return NULL;
#endif
	} else if (lmk_cpu_gdn_forward(out->data, q->data, k->data, v->data, lmk_op_f(loga),
				       beta->data, lmk_op_f(lam), B, T, H, Dk, Dv, NL, scale,
				       o->algo, chunk) < 0) {
		return NULL;
	}
	int fail;
	lmk_node *n = lmk_op_record(c, "gdn", out, gdn_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		for (int i = 0; i < 6; i++)
			n->in[i] = in[i];
		n->i[0] = B;
		n->i[1] = T;
		n->i[2] = H;
		n->i[3] = Dk;
		n->i[4] = Dv;
		n->i[5] = NL;
		n->f[0] = scale;
		n->f[1] = (float)chunk;
		n->f[2] = (float)o->algo;
	}
	return out;
}

/* ------------------------------------------------------------- decoding */

int lmk_gdn_state_init(lmk_gdn_state *s, lmk_ctx *c, int64_t B, int64_t H, int64_t Dk,
		       int64_t Dv, int loglinear, int64_t max_t)
{
	memset(s, 0, sizeof *s);
	if (B < 1 || H < 1 || Dk < 1 || Dv < 1 || (loglinear && max_t < 1))
		return lmk_err(LMK_EINVAL, "gdn state: expected B, H, Dk, Dv >= 1%s, found %lld, "
			       "%lld, %lld, %lld", loglinear ? " and max_t >= 1" : "",
			       (long long)B, (long long)H, (long long)Dk, (long long)Dv);
	s->dev = c->dev;
	s->B = B;
	s->H = H;
	s->Dk = Dk;
	s->Dv = Dv;
	s->loglinear = loglinear != 0;
	s->nlev = nlev_of(s->loglinear, max_t);
	s->max_t = loglinear ? max_t : INT64_MAX;
	s->backend = c->backend;
	size_t bytes = sizeof(float) * (size_t)(B * H * s->nlev * Dk * Dv);
	if (on_cuda(c)) {
#if HAVE_CUDA_GDN
		void *p = NULL;
		int r = lmk_cuda_mem_alloc(&p, bytes);
		if (r < 0)
			return r;
		s->S = p;
		if ((r = lmk_cuda_memset(c->backend, p, 0, bytes)) < 0) {
			lmk_cuda_mem_free(p);
			s->S = NULL;
			return r;
		}
#else
		return lmk_err(LMK_EUNSUP, "gdn state: no cuda kernel in this build");
#endif
	} else {
		s->S = calloc(1, bytes);
		if (!s->S)
			return lmk_err(LMK_ENOMEM, "gdn state: cannot allocate %zu bytes", bytes);
	}
	return 0;
}

int lmk_gdn_state_reset(lmk_gdn_state *s)
{
	size_t bytes = sizeof(float) * (size_t)(s->B * s->H * s->nlev * s->Dk * s->Dv);
	s->t = 0;
	if (!s->S)
		return 0;
	if (s->dev == LMK_DEV_CUDA) {
#if HAVE_CUDA_GDN
		return lmk_cuda_memset(s->backend, s->S, 0, bytes);
#else
		return lmk_err(LMK_EUNSUP, "gdn state: no cuda kernel in this build");
#endif
	}
	memset(s->S, 0, bytes);
	return 0;
}

void lmk_gdn_state_free(lmk_gdn_state *s)
{
	if (s->S) {
		if (s->dev == LMK_DEV_CUDA) {
#if HAVE_CUDA_GDN
			lmk_cuda_mem_free(s->S);
#endif
		} else {
			free(s->S);
		}
	}
	memset(s, 0, sizeof *s);
}

void lmk_cpu_gdn_step(float *S, float *out, const float *q, const float *k, const float *v,
		      const float *loga, const float *beta, const float *lam, int64_t B,
		      int64_t H, int64_t Dk, int64_t Dv, int64_t NL, int nlev, int64_t t,
		      float scale)
{
	int64_t SZ = (int64_t)nlev * Dk * Dv;
#pragma omp parallel for schedule(static)
	for (int64_t bh = 0; bh < B * H; bh++) {
		float p[Dv > 0 ? Dv : 1];
		step_fwd(S + bh * SZ, nlev, lam != NULL, t, q + bh * Dk, k + bh * Dk, v + bh * Dv,
			 loga ? expf(loga[bh]) : 1.0f, beta[bh], lam ? lam + bh * NL : NULL,
			 out + bh * Dv, scale, Dk, Dv, p);
	}
}

lmk_tensor *lmk_gdn_step(lmk_ctx *c, lmk_gdn_state *s, lmk_tensor *q, lmk_tensor *k,
			 lmk_tensor *v, lmk_tensor *loga, lmk_tensor *beta, lmk_tensor *lam,
			 float scale)
{
	if (!q || !k || !v || !beta)
		return NULL;
	lmk_tensor *in[6] = {q, k, v, loga, beta, lam};
	if (lmk_op_check_inputs(c, "gdn step", 6, in,
				(const char *[]){"q", "k", "v", "loga", "beta", "lam"},
				(lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32, LMK_F32, LMK_F32,
					      LMK_F32}) < 0)
		return NULL;
	int64_t NL;
	if (check_shapes("gdn step", q, k, v, loga, beta, lam, &NL) < 0)
		return NULL;
	if (c->dev != s->dev || !s->S || q->shape[0] != s->B || q->shape[1] != 1 ||
	    q->shape[2] != s->H || q->shape[3] != s->Dk || v->shape[3] != s->Dv ||
	    (lam != NULL) != s->loglinear) {
		lmk_err(LMK_EINVAL, "gdn step: q %s, v %s%s: expected q (%lld,1,%lld,%lld), v "
			"(%lld,1,%lld,%lld)%s on the state's device",
			LMK_SHP(q), LMK_SHP(v), lam ? " with lam" : "", (long long)s->B,
			(long long)s->H, (long long)s->Dk, (long long)s->B, (long long)s->H,
			(long long)s->Dv, s->loglinear ? " and lam" : " and no lam");
		return NULL;
	}
	if (s->t >= s->max_t || (lam && NL < lmk_fenwick_levels(s->t + 1))) {
		lmk_err(LMK_EINVAL, "gdn step: token %lld: expected fewer than %lld tokens and lam "
			"of at least %d levels, found %lld", (long long)s->t,
			(long long)s->max_t, lmk_fenwick_levels(s->t + 1), (long long)NL);
		return NULL;
	}
	if (!isfinite(scale)) {
		lmk_err(LMK_EINVAL, "gdn step: expected a finite scale, found %g", (double)scale);
		return NULL;
	}
	if (scale == 0)
		scale = 1.0f / sqrtf((float)s->Dk);
	int ge = c->grad_enabled;
	c->grad_enabled = 0;
	lmk_tensor *out = lmk_tensor_new(c, c->dtype, 4, (int64_t[]){s->B, 1, s->H, s->Dv}, 0);
	c->grad_enabled = ge;
	if (!out)
		return NULL;
	if (on_cuda(c)) {
#if HAVE_CUDA_GDN
		if (lmk_cuda_gdn_step(c->backend, c->dtype, s->S, out->data, lmk_op_x(c, q),
				      lmk_op_x(c, k), lmk_op_x(c, v), lmk_op_x(c, loga),
				      lmk_op_x(c, beta), lmk_op_x(c, lam), s->B, s->H, s->Dk,
				      s->Dv, NL, s->nlev, s->t, scale) < 0)
			return NULL;
#else
		lmk_err(LMK_EUNSUP, "gdn step: no cuda kernel in this build");
		return NULL;
#endif
	} else {
		lmk_cpu_gdn_step(s->S, out->data, q->data, k->data, v->data, lmk_op_f(loga),
				 beta->data, lmk_op_f(lam), s->B, s->H, s->Dk, s->Dv, NL, s->nlev,
				 s->t, scale);
	}
	s->t++;
	return out;
}
