/* ssd.c: the scalar-decay linear mixer op of ssd.h, its CPU kernels and the
 * decoding state.
 *
 * Three CPU forms, one per head (b,h), each head run whole by one thread so
 * that results do not depend on the thread count:
 * - recurrent: token by token, one Dk x Dv state (or one per Fenwick level,
 *   merged as a binary counter). The specification of the forward.
 * - chunked: chunks of C tokens. Inside a chunk the C x C masked score
 *   matrix (decay and the exact Fenwick level of every pair); across chunks
 *   states. Without lam one running state. With lam and C = 2^c every key
 *   of an earlier chunk m seen from chunk n sits at token level
 *   c + fenwick_level(n, m), and the chunks at chunk level j of chunk n are
 *   the lower half of n's aligned block of 2^j chunks, read when bit j-1 of
 *   n is set; so level j is one running state that is written by the lower
 *   half of each 2^j block, read by its upper half and cleared at the
 *   block's end: O(T log T) in all.
 * - materialised: the chunked form with one chunk of T tokens (the T x T
 *   masked matrix).
 * Backward of every form: the chunked one (the recurrent form's is the
 * chunked one with C = 1, a reverse-time recurrence). The decay's gradient
 * uses, for the cumulative log decay A_t, dL/dA_t = dO_t.o_t - v_t.dv_t
 * (row sum minus column sum of S * dS, for any weights exp(A_t - A_s) f(t,s)),
 * then dloga_r = sum_{t>=r} dL/dA_t.
 * Shape letters as in ssd.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fenwick.h"
#include "op.h"
#include "ops_cpu.h"
#include "ssd.h"

#if LMK_CUDA
#include "../cuda/cuda.h"
#include "../cuda/ssd_cuda.h"
#endif

/* ------------------------------------------------------------ one head */

/* The inputs of head (b,h) as strided rows over t. */
typedef struct head {
	const float *q, *k;  /* row t at q + t*sq */
	const float *v;      /* row t at v + t*sv */
	const float *la;     /* la[t*sa], or NULL */
	const float *lam;    /* lam + t*sl, or NULL */
	int64_t sq, sv, sa, sl;
	int64_t T, Dk, Dv, NL;
	float scale;
} head;

static head head_of(const float *q, const float *k, const float *v, const float *loga,
		    const float *lam, int64_t b, int64_t h, int64_t T, int64_t H, int64_t G,
		    int64_t Dk, int64_t Dv, int64_t NL, float scale)
{
	int64_t g = h / (H / G);
	head hd = {
		.q = q + (b * T * G + g) * Dk,
		.k = k + (b * T * G + g) * Dk,
		.v = v + (b * T * H + h) * Dv,
		.la = loga ? loga + b * T * H + h : NULL,
		.lam = lam ? lam + (b * T * H + h) * NL : NULL,
		.sq = G * Dk, .sv = H * Dv, .sa = H, .sl = H * NL,
		.T = T, .Dk = Dk, .Dv = Dv, .NL = NL, .scale = scale,
	};
	return hd;
}

static float dotf(const float *a, const float *b, int64_t n)
{
	float s = 0;
	for (int64_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* in double where a difference of two dots is taken (the decay's gradient) */
static double dotd(const float *a, const float *b, int64_t n)
{
	double s = 0;
	for (int64_t i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

/* One token of the recurrence on the states S (NLs,Dk,Dv) of a head that
 * has seen t tokens: binary-counter merge (log-linear), decay, the token's
 * key-value outer product, then the output o (Dv). lam (NLs) or NULL. */
static void rec_step(float *S, int64_t t, int64_t NLs, const float *q /*(Dk)*/,
		     const float *k /*(Dk)*/, const float *v /*(Dv)*/, float loga,
		     const float *lam, int64_t Dk, int64_t Dv, float scale, float *o /*(Dv)*/)
{
	int64_t M = Dk * Dv;
	if (lam && t > 0) {
		/* t-1 had j trailing ones: the keys of levels 0..j (seen from
		 * t-1) are all at level j+1 from t, which was empty */
		int j = __builtin_ctzll((unsigned long long)t);
		float *dst = S + (int64_t)(j + 1) * M;
		for (int l = 0; l <= j; l++) {
			float *src = S + (int64_t)l * M;
			for (int64_t i = 0; i < M; i++) {
				dst[i] += src[i];
				src[i] = 0;
			}
		}
	}
	float a = expf(loga);
	for (int64_t i = 0; i < NLs * M; i++)
		S[i] *= a;
	for (int64_t x = 0; x < Dk; x++)
		for (int64_t y = 0; y < Dv; y++)
			S[x * Dv + y] += k[x] * v[y];
	for (int64_t y = 0; y < Dv; y++)
		o[y] = 0;
	for (int64_t l = 0; l < NLs; l++) {
		float w = scale * (lam ? lam[l] : 1.0f);
		const float *Sl = S + l * M;
		for (int64_t x = 0; x < Dk; x++) {
			float qx = w * q[x];
			for (int64_t y = 0; y < Dv; y++)
				o[y] += qx * Sl[x * Dv + y];
		}
	}
}

static void rec_forward(const head *hd, float *out, int64_t so, float *S)
{
	int64_t NLs = hd->lam ? hd->NL : 1;
	memset(S, 0, sizeof(float) * (size_t)(NLs * hd->Dk * hd->Dv));
	for (int64_t t = 0; t < hd->T; t++)
		rec_step(S, t, NLs, hd->q + t * hd->sq, hd->k + t * hd->sq, hd->v + t * hd->sv,
			 hd->la ? hd->la[t * hd->sa] : 0.0f, hd->lam ? hd->lam + t * hd->sl : NULL,
			 hd->Dk, hd->Dv, hd->scale, out + t * so);
}

/* ---- the chunked form */

typedef struct chunking {
	int64_t C, N;        /* chunk, chunks */
	int cbits;           /* log2(C) with lam */
	int nlev;            /* inter-chunk states: 1 without lam, else the chunk
			      * levels 1..nlev */
	int plain;           /* no lam: one running state */
} chunking;

static chunking chunking_of(int64_t T, int chunk, int loglinear)
{
	chunking ck = {0};
	ck.C = lmk_ssd_effective_chunk(chunk, T, loglinear);
	if (ck.C > T)
		ck.C = T > 0 ? T : 1;
	ck.N = (T + ck.C - 1) / ck.C;
	ck.plain = !loglinear;
	if (loglinear) {
		while ((1ll << (ck.cbits + 1)) <= ck.C)
			ck.cbits++;
		ck.nlev = ck.N > 1 ? lmk_fenwick_levels(ck.N) - 1 : 0;
	} else {
		ck.nlev = 1;
	}
	return ck;
}

/* Chunk n reads level index li (chunk level li+1), writes it, or clears it
 * after itself. */
static int lv_read(const chunking *ck, int64_t n, int li) { return ck->plain || ((n >> li) & 1); }
static int lv_write(const chunking *ck, int64_t n, int li) { return ck->plain || !((n >> li) & 1); }
static int lv_reset(const chunking *ck, int64_t n, int li)
{
	return !ck->plain && ((n + 1) & ((2ll << li) - 1)) == 0;
}

/* lam's weight of level li at row lam_t (1 without lam) */
static float lv_lam(const chunking *ck, const float *lam_t, int li)
{
	return ck->plain ? 1.0f : lam_t[ck->cbits + 1 + li];
}

/* Workspace of one thread. */
typedef struct cwork {
	double *acs;         /* (C) log decay from the chunk's start, inclusive */
	float *P, *W, *dS;   /* (C,C) q.k, weight, dO.v; then the products of them */
	float *Hs, *dH;      /* (nlev,Dk,Dv) */
	float *U;            /* (Dk,Dv) */
	float *Y;            /* (C, max(Dk,Dv)): rows scaled for a product */
} cwork;

static size_t cwork_floats(const chunking *ck, int64_t Dk, int64_t Dv)
{
	int64_t M = Dk * Dv, nl = ck->nlev > 0 ? ck->nlev : 1;
	return (size_t)(2 * ck->C + 3 * ck->C * ck->C + 2 * nl * M + M + 16 +
			ck->C * (Dk > Dv ? Dk : Dv));
}

static void cwork_carve(cwork *w, float *p, const chunking *ck, int64_t Dk, int64_t Dv)
{
	int64_t M = Dk * Dv, nl = ck->nlev > 0 ? ck->nlev : 1, C = ck->C;
	w->acs = (double *)p;
	p += 2 * C;
	w->P = p;
	p += C * C;
	w->W = p;
	p += C * C;
	w->dS = p;
	p += C * C;
	w->Hs = p;
	p += nl * M;
	w->dH = p;
	p += nl * M;
	w->U = p;
	p += M;
	w->Y = p;
}

static void chunk_acs(const head *hd, int64_t t0, int64_t len, double *acs)
{
	double a = 0;
	for (int64_t i = 0; i < len; i++) {
		a += hd->la ? hd->la[(t0 + i) * hd->sa] : 0.0f;
		acs[i] = a;
	}
}

/* P and W of chunk [t0, t0+len): rows i, keys s <= i (P = Q Kᵀ in full). */
static void chunk_scores(const head *hd, const chunking *ck, int64_t t0, int64_t len,
			 const cwork *w)
{
	int64_t C = ck->C;
	lmk_cpu_mm(0, 1, len, len, hd->Dk, 1.0f, hd->q + t0 * hd->sq, hd->sq, hd->k + t0 * hd->sq,
		   hd->sq, 0.0f, w->P, C);
	for (int64_t i = 0; i < len; i++) {
		const float *li = hd->lam ? hd->lam + (t0 + i) * hd->sl : NULL;
		for (int64_t s = 0; s <= i; s++) {
			float lw = li ? li[lmk_fenwick_level(t0 + i, t0 + s)] : 1.0f;
			w->W[i * C + s] = hd->scale * (float)exp(w->acs[i] - w->acs[s]) * lw;
		}
	}
}

/* U = sum_s exp(acs_end - acs_s) k_s v_sᵀ: the chunk's keys at its end. */
static void chunk_state(const head *hd, int64_t t0, int64_t len, const cwork *w)
{
	int64_t Dk = hd->Dk, Dv = hd->Dv;
	for (int64_t s = 0; s < len; s++) {
		float e = (float)exp(w->acs[len - 1] - w->acs[s]);
		const float *ks = hd->k + (t0 + s) * hd->sq;
		for (int64_t x = 0; x < Dk; x++)
			w->Y[s * Dk + x] = e * ks[x];
	}
	lmk_cpu_mm(1, 0, Dk, Dv, len, 1.0f, w->Y, Dk, hd->v + t0 * hd->sv, hd->sv, 0.0f, w->U, Dv);
}

/* The states after chunk n: decay over the chunk, the writes, the clears. */
static void states_advance(const head *hd, const chunking *ck, int64_t n, int64_t len,
			   const cwork *w)
{
	int64_t M = hd->Dk * hd->Dv;
	float g = (float)exp(w->acs[len - 1]);
	for (int li = 0; li < ck->nlev; li++) {
		float *Hl = w->Hs + li * M;
		int wr = lv_write(ck, n, li);
		if (lv_reset(ck, n, li)) {
			memset(Hl, 0, sizeof(float) * (size_t)M);
			continue;
		}
		for (int64_t i = 0; i < M; i++)
			Hl[i] = g * Hl[i] + (wr ? w->U[i] : 0.0f);
	}
}

/* Y (len,Dk) = the chunk's queries as they read level l's state: row i
 * is scale exp(acs_i) lam_i(l) q_i. */
static void read_rows(const head *hd, const chunking *ck, int64_t t0, int64_t len, int l,
		      const cwork *w)
{
	int64_t Dk = hd->Dk;
	for (int64_t i = 0; i < len; i++) {
		const float *qi = hd->q + (t0 + i) * hd->sq;
		const float *li = hd->lam ? hd->lam + (t0 + i) * hd->sl : NULL;
		float f = hd->scale * (float)exp(w->acs[i]) * lv_lam(ck, li, l);
		for (int64_t x = 0; x < Dk; x++)
			w->Y[i * Dk + x] = f * qi[x];
	}
}

static void chunked_forward(const head *hd, const chunking *ck, float *out, int64_t so,
			    const cwork *w)
{
	int64_t C = ck->C, Dk = hd->Dk, Dv = hd->Dv, M = Dk * Dv;
	memset(w->Hs, 0, sizeof(float) * (size_t)((ck->nlev > 0 ? ck->nlev : 1) * M));
	for (int64_t n = 0; n < ck->N; n++) {
		int64_t t0 = n * C, len = hd->T - t0 < C ? hd->T - t0 : C;
		chunk_acs(hd, t0, len, w->acs);
		chunk_scores(hd, ck, t0, len, w);
		/* intra: o = (W P, lower) V; inter: o_i += f_i q_iᵀ H_l per level */
		float *o = out + t0 * so;
		for (int64_t i = 0; i < len; i++)
			for (int64_t s = 0; s < len; s++)
				w->dS[i * C + s] = s <= i ? w->W[i * C + s] * w->P[i * C + s] : 0.0f;
		lmk_cpu_mm(0, 0, len, Dv, len, 1.0f, w->dS, C, hd->v + t0 * hd->sv, hd->sv, 0.0f, o,
			   so);
		for (int l = 0; l < ck->nlev; l++) {
			if (!lv_read(ck, n, l))
				continue;
			read_rows(hd, ck, t0, len, l, w);
			lmk_cpu_mm(0, 0, len, Dv, Dk, 1.0f, w->Y, Dk, w->Hs + l * M, Dv, 1.0f, o, so);
		}
		chunk_state(hd, t0, len, w);
		states_advance(hd, ck, n, len, w);
	}
}

/* Local gradients of one head: dq, dk (T,Dk), dv (T,Dv); dlam (row t at
 * dlam + t*sl) is added into directly. */
static void chunked_backward(const head *hd, const chunking *ck, const float *dout, int64_t so,
			     float *dq, float *dk, float *dv, float *dlam, const cwork *w)
{
	int64_t C = ck->C, Dk = hd->Dk, Dv = hd->Dv, M = Dk * Dv, T = hd->T;
	int64_t nl = ck->nlev > 0 ? ck->nlev : 1;
	/* in chunk order: intra-chunk gradients, and dq, dlam of the reads */
	memset(w->Hs, 0, sizeof(float) * (size_t)(nl * M));
	for (int64_t n = 0; n < ck->N; n++) {
		int64_t t0 = n * C, len = T - t0 < C ? T - t0 : C;
		chunk_acs(hd, t0, len, w->acs);
		chunk_scores(hd, ck, t0, len, w);
		const float *Q = hd->q + t0 * hd->sq, *K = hd->k + t0 * hd->sq;
		const float *V = hd->v + t0 * hd->sv, *dO = dout + t0 * so;
		/* intra: dS = dO Vᵀ; then P holds W P (what o takes of each v)
		 * and dS holds W dS (the gradient of the scores q.k) */
		lmk_cpu_mm(0, 1, len, len, Dv, 1.0f, dO, so, V, hd->sv, 0.0f, w->dS, C);
		for (int64_t i = 0; i < len; i++) {
			float *dli = dlam ? dlam + (t0 + i) * hd->sl : NULL;
			for (int64_t s = 0; s < len; s++) {
				if (s > i) {
					w->P[i * C + s] = w->dS[i * C + s] = 0.0f;
					continue;
				}
				float P = w->P[i * C + s], W = w->W[i * C + s], dS = w->dS[i * C + s];
				if (dli)
					dli[lmk_fenwick_level(t0 + i, t0 + s)] +=
						hd->scale * (float)exp(w->acs[i] - w->acs[s]) * P * dS;
				w->P[i * C + s] = W * P;
				w->dS[i * C + s] = W * dS;
			}
		}
		lmk_cpu_mm(1, 0, len, Dv, len, 1.0f, w->P, C, dO, so, 1.0f, dv + t0 * Dv, Dv);
		lmk_cpu_mm(0, 0, len, Dk, len, 1.0f, w->dS, C, K, hd->sq, 1.0f, dq + t0 * Dk, Dk);
		lmk_cpu_mm(1, 0, len, Dk, len, 1.0f, w->dS, C, Q, hd->sq, 1.0f, dk + t0 * Dk, Dk);
		/* the reads of the states: Y = dO H_lᵀ, y_i = e_i Y_i */
		for (int l = 0; l < ck->nlev; l++) {
			if (!lv_read(ck, n, l))
				continue;
			lmk_cpu_mm(0, 1, len, Dk, Dv, 1.0f, dO, so, w->Hs + l * M, Dv, 0.0f, w->Y, Dk);
			for (int64_t i = 0; i < len; i++) {
				const float *qi = Q + i * hd->sq;
				const float *li = hd->lam ? hd->lam + (t0 + i) * hd->sl : NULL;
				float *dqi = dq + (t0 + i) * Dk, *y = w->Y + i * Dk;
				float e = hd->scale * (float)exp(w->acs[i]), f = lv_lam(ck, li, l);
				for (int64_t x = 0; x < Dk; x++) {
					y[x] *= e;
					dqi[x] += f * y[x];
				}
				if (dlam)
					dlam[(t0 + i) * hd->sl + ck->cbits + 1 + l] += dotf(qi, y, Dk);
			}
		}
		chunk_state(hd, t0, len, w);
		states_advance(hd, ck, n, len, w);
	}
	/* in reverse: the gradients of the states reach the keys and values */
	memset(w->dH, 0, sizeof(float) * (size_t)(nl * M));
	for (int64_t n = ck->N - 1; n >= 0; n--) {
		int64_t t0 = n * C, len = T - t0 < C ? T - t0 : C;
		chunk_acs(hd, t0, len, w->acs);
		memset(w->U, 0, sizeof(float) * (size_t)M); /* here: dU */
		for (int l = 0; l < ck->nlev; l++) {
			float *dHl = w->dH + l * M;
			if (lv_reset(ck, n, l))
				memset(dHl, 0, sizeof(float) * (size_t)M);
			if (lv_write(ck, n, l))
				for (int64_t i = 0; i < M; i++)
					w->U[i] += dHl[i];
		}
		/* U = sum_s e_s k_s v_sᵀ: dk_s += e_s dU v_s, dv_s += e_s dUᵀ k_s */
		const float *K = hd->k + t0 * hd->sq, *V = hd->v + t0 * hd->sv;
		lmk_cpu_mm(0, 1, len, Dk, Dv, 1.0f, V, hd->sv, w->U, Dv, 0.0f, w->Y, Dk);
		for (int64_t s = 0; s < len; s++) {
			float e = (float)exp(w->acs[len - 1] - w->acs[s]);
			float *dks = dk + (t0 + s) * Dk;
			for (int64_t x = 0; x < Dk; x++)
				dks[x] += e * w->Y[s * Dk + x];
		}
		lmk_cpu_mm(0, 0, len, Dv, Dk, 1.0f, K, hd->sq, w->U, Dv, 0.0f, w->Y, Dv);
		for (int64_t s = 0; s < len; s++) {
			float e = (float)exp(w->acs[len - 1] - w->acs[s]);
			float *dvs = dv + (t0 + s) * Dv;
			for (int64_t y = 0; y < Dv; y++)
				dvs[y] += e * w->Y[s * Dv + y];
		}
		float g = (float)exp(w->acs[len - 1]);
		for (int l = 0; l < ck->nlev; l++) {
			float *dHl = w->dH + l * M;
			for (int64_t i = 0; i < M; i++)
				dHl[i] *= g;
			if (!lv_read(ck, n, l))
				continue;
			read_rows(hd, ck, t0, len, l, w);
			lmk_cpu_mm(1, 0, Dk, Dv, len, 1.0f, w->Y, Dk, dout + t0 * so, so, 1.0f, dHl, Dv);
		}
	}
}

/* ------------------------------------------------------------ kernels */

int lmk_ssd_effective_chunk(int chunk, int64_t T, int loglinear)
{
	if (chunk <= 0)
		chunk = 64;
	if (!loglinear || chunk >= T)
		return chunk;
	int p = 1;
	while (2 * p <= chunk)
		p *= 2;
	return p;
}

/* The chunk a form runs with. */
static int algo_chunk(int algo, int chunk, int64_t T)
{
	if (algo == LMK_SSD_RECURRENT)
		return 1;
	if (algo == LMK_SSD_MATERIALIZED)
		return T > 0 ? (int)(T < (1 << 30) ? T : (1 << 30)) : 1;
	return chunk > 0 ? chunk : 64;
}

int lmk_cpu_ssd_forward(float *out, const float *q, const float *k, const float *v,
			const float *loga, const float *lam, int64_t B, int64_t T, int64_t H,
			int64_t G, int64_t Dk, int64_t Dv, int64_t NL, float scale, int algo,
			int chunk)
{
	if (B * T * H == 0)
		return 0;
	chunking ck = chunking_of(T, algo_chunk(algo, chunk, T), lam != NULL);
	size_t nf = algo == LMK_SSD_RECURRENT
			    ? (size_t)((lam ? NL : 1) * Dk * Dv)
			    : cwork_floats(&ck, Dk, Dv);
	int fail = 0;
	lmk_cpu_blas_one_thread();
#pragma omp parallel
	{
		float *ws = malloc(sizeof(float) * nf);
		if (!ws) {
#pragma omp atomic write
			fail = 1;
		}
		cwork w;
		if (ws && algo != LMK_SSD_RECURRENT)
			cwork_carve(&w, ws, &ck, Dk, Dv);
#pragma omp for schedule(dynamic, 1)
		for (int64_t bh = 0; bh < B * H; bh++) {
			if (!ws)
				continue;
			int64_t b = bh / H, h = bh % H;
			head hd = head_of(q, k, v, loga, lam, b, h, T, H, G, Dk, Dv, NL, scale);
			float *o = out + (b * T * H + h) * Dv;
			if (algo == LMK_SSD_RECURRENT)
				rec_forward(&hd, o, H * Dv, ws);
			else
				chunked_forward(&hd, &ck, o, H * Dv, &w);
		}
		free(ws);
	}
	return fail ? lmk_err(LMK_ENOMEM, "ssd: cannot allocate the workspace") : 0;
}

int lmk_cpu_ssd_backward(float *dq, float *dk, float *dv, float *dloga, float *dlam,
			 const float *dout, const float *q, const float *k, const float *v,
			 const float *loga, const float *lam, const float *out, int64_t B, int64_t T,
			 int64_t H, int64_t G, int64_t Dk, int64_t Dv, int64_t NL, float scale,
			 int algo, int chunk)
{
	if (B * T * H == 0)
		return 0;
	chunking ck = chunking_of(T, algo_chunk(algo, chunk, T), lam != NULL);
	/* several heads of a group add into one dq, dk row: per-head partials,
	 * summed in head order afterwards */
	int grouped = G != H && (dq || dk);
	float *part = NULL;
	if (grouped) {
		part = malloc(sizeof(float) * (size_t)(2 * B * H * T * Dk));
		if (!part)
			return lmk_err(LMK_ENOMEM, "ssd: cannot allocate %lld floats",
				       (long long)(2 * B * H * T * Dk));
	}
	/* the doubles of dA start at an even float offset */
	size_t dA_at = (cwork_floats(&ck, Dk, Dv) + (size_t)(T * (2 * Dk + Dv)) + 1) / 2 * 2;
	size_t nf = dA_at + (size_t)(2 * T);
	int fail = 0;
	lmk_cpu_blas_one_thread();
#pragma omp parallel
	{
		float *ws = malloc(sizeof(float) * nf);
		if (!ws) {
#pragma omp atomic write
			fail = 1;
		}
		cwork w;
		float *dql = NULL, *dkl = NULL, *dvl = NULL;
		double *dA = NULL;
		if (ws) {
			cwork_carve(&w, ws, &ck, Dk, Dv);
			dql = ws + cwork_floats(&ck, Dk, Dv);
			dkl = dql + T * Dk;
			dvl = dkl + T * Dk;
			dA = (double *)(ws + dA_at);
		}
#pragma omp for schedule(dynamic, 1)
		for (int64_t bh = 0; bh < B * H; bh++) {
			if (!ws)
				continue;
			int64_t b = bh / H, h = bh % H, g = h / (H / G);
			head hd = head_of(q, k, v, loga, lam, b, h, T, H, G, Dk, Dv, NL, scale);
			int64_t so = H * Dv, base = (b * T * H + h) * Dv;
			memset(dql, 0, sizeof(float) * (size_t)(T * (2 * Dk + Dv)));
			chunked_backward(&hd, &ck, dout + base, so, dql, dkl, dvl,
					 dlam ? dlam + (b * T * H + h) * NL : NULL, &w);
			if (dv)
				for (int64_t t = 0; t < T; t++)
					for (int64_t y = 0; y < Dv; y++)
						dv[base + t * so + y] += dvl[t * Dv + y];
			if (dloga) {
				double acc = 0;
				for (int64_t t = T - 1; t >= 0; t--) {
					acc += dotd(dout + base + t * so, out + base + t * so, Dv) -
					       dotd(hd.v + t * so, dvl + t * Dv, Dv);
					dA[t] = acc;
				}
				for (int64_t t = 0; t < T; t++)
					dloga[(b * T + t) * H + h] += (float)dA[t];
			}
			for (int64_t t = 0; t < T && (dq || dk); t++) {
				int64_t r = ((b * T + t) * G + g) * Dk;
				for (int64_t x = 0; x < Dk; x++) {
					if (grouped) {
						part[((b * H + h) * T + t) * Dk + x] = dql[t * Dk + x];
						part[((B + b) * H + h) * T * Dk + t * Dk + x] =
							dkl[t * Dk + x];
					} else {
						if (dq)
							dq[r + x] += dql[t * Dk + x];
						if (dk)
							dk[r + x] += dkl[t * Dk + x];
					}
				}
			}
		}
		free(ws);
	}
	if (grouped && !fail) {
		int64_t hpg = H / G;
#pragma omp parallel for schedule(static)
		for (int64_t bt = 0; bt < B * T; bt++) {
			int64_t b = bt / T, t = bt % T;
			for (int64_t g = 0; g < G; g++)
				for (int64_t hh = 0; hh < hpg; hh++) {
					int64_t h = g * hpg + hh;
					const float *pq = part + ((b * H + h) * T + t) * Dk;
					const float *pk = part + ((B + b) * H + h) * T * Dk + t * Dk;
					float *rq = dq ? dq + (bt * G + g) * Dk : NULL;
					float *rk = dk ? dk + (bt * G + g) * Dk : NULL;
					for (int64_t x = 0; x < Dk; x++) {
						if (rq)
							rq[x] += pq[x];
						if (rk)
							rk[x] += pk[x];
					}
				}
		}
	}
	free(part);
	return fail ? lmk_err(LMK_ENOMEM, "ssd: cannot allocate the workspace") : 0;
}

/* ------------------------------------------------------------------ op */

typedef struct dims {
	int64_t B, T, H, G, Dk, Dv, NL;
} dims;

/* The shapes of lmk_ssd and lmk_ssd_step; op names the caller. */
static int check_shapes(const char *op, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v,
			lmk_tensor *loga, lmk_tensor *lam, dims *d)
{
#define SHP LMK_SHP
	if (q->ndim != 4 || !lmk_op_same_shape(q, k) || v->ndim != 4 ||
	    v->shape[0] != q->shape[0] || v->shape[1] != q->shape[1] || q->shape[2] < 1 ||
	    v->shape[2] % q->shape[2])
		return lmk_err(LMK_EINVAL,
			       "%s: q %s, k %s, v %s: expected q and k (B,T,G,Dk), v (B,T,H,Dv), "
			       "H a multiple of G",
			       op, SHP(q), SHP(k), SHP(v));
	d->B = q->shape[0];
	d->T = q->shape[1];
	d->G = q->shape[2];
	d->Dk = q->shape[3];
	d->H = v->shape[2];
	d->Dv = v->shape[3];
	d->NL = 0;
	if (loga && (loga->ndim != 3 || loga->shape[0] != d->B || loga->shape[1] != d->T ||
		     loga->shape[2] != d->H))
		return lmk_err(LMK_EINVAL, "%s: v %s and loga %s: expected loga (%lld,%lld,%lld)",
			       op, SHP(v), SHP(loga), (long long)d->B, (long long)d->T,
			       (long long)d->H);
	if (lam) {
		if (lam->ndim != 4 || lam->shape[0] != d->B || lam->shape[1] != d->T ||
		    lam->shape[2] != d->H || lam->shape[3] < 1)
			return lmk_err(LMK_EINVAL, "%s: v %s and lam %s: expected lam (%lld,%lld,%lld,NL)",
				       op, SHP(v), SHP(lam), (long long)d->B, (long long)d->T,
				       (long long)d->H);
		d->NL = lam->shape[3];
	}
	return 0;
#undef SHP
}

static int ssd_bw(lmk_ctx *c, lmk_node *n)
{
	lmk_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2], *la = n->in[3], *lam = n->in[4];
	dims d;
	if (check_shapes("ssd", q, k, v, la, lam, &d) < 0)
		return lmk_errcode();
	if (c->dev == LMK_DEV_CUDA) {
#if LMK_CUDA
		return lmk_cuda_ssd_backward(
			c->backend, c->dtype, lmk_op_gb(q), lmk_op_gb(k), lmk_op_gb(v),
			lmk_op_gb(la), lmk_op_gb(lam), n->out->grad, lmk_op_x(c, q),
			lmk_op_x(c, k), lmk_op_x(c, v), lmk_op_x(c, la), lmk_op_x(c, lam),
			n->out->data, d.B, d.T, d.H, d.G, d.Dk, d.Dv, d.NL, n->f[0], (int)n->i[1]);
#else
		return lmk_err(LMK_EUNSUP, "ssd: cuda in a cpu-only build");
#endif
	}
	return lmk_cpu_ssd_backward(lmk_op_g(q), lmk_op_g(k), lmk_op_g(v), lmk_op_g(la),
				    lmk_op_g(lam), n->out->grad, q->data, k->data, v->data,
				    lmk_op_f(la), lmk_op_f(lam), n->out->data, d.B, d.T, d.H, d.G,
				    d.Dk, d.Dv, d.NL, n->f[0], (int)n->i[0], (int)n->i[1]);
}

static int read_opts(const char *op, const lmk_ssd_opts *o, int *algo, int *chunk,
		     float *scale)
{
	*algo = o ? o->algo : LMK_SSD_AUTO;
	*chunk = o && o->chunk ? o->chunk : 64;
	*scale = o && o->scale != 0 ? o->scale : 1.0f;
	if (*algo < LMK_SSD_AUTO || *algo > LMK_SSD_CHUNKED)
		return lmk_err(LMK_EINVAL, "%s: unknown algo %d", op, *algo);
	if (*chunk < 1)
		return lmk_err(LMK_EINVAL, "%s: expected a chunk >= 1, found %d", op, *chunk);
	if (!isfinite(*scale))
		return lmk_err(LMK_EINVAL, "%s: expected a finite scale, found %g", op,
			       (double)*scale);
	return 0;
}

lmk_tensor *lmk_ssd(lmk_ctx *c, lmk_tensor *q, lmk_tensor *k, lmk_tensor *v, lmk_tensor *loga,
		    lmk_tensor *lam, const lmk_ssd_opts *o)
{
	if (!q || !k || !v)
		return NULL;
	lmk_tensor *in[5] = {q, k, v, loga, lam};
	if (lmk_op_check_inputs(c, "ssd", 5, in, (const char *[]){"q", "k", "v", "loga", "lam"},
				(lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32, LMK_F32, LMK_F32}) < 0)
		return NULL;
	dims d;
	int algo, chunk;
	float scale;
	if (check_shapes("ssd", q, k, v, loga, lam, &d) < 0 ||
	    read_opts("ssd", o, &algo, &chunk, &scale) < 0)
		return NULL;
	if (lam && d.NL < lmk_fenwick_levels(d.T)) {
		lmk_err(LMK_EINVAL, "ssd: lam %s: expected at least %d levels for %lld tokens",
			LMK_SHP(lam), lmk_fenwick_levels(d.T), (long long)d.T);
		return NULL;
	}
	lmk_tensor *out = lmk_tensor_new_out(c, c->dtype, 4, (int64_t[]){d.B, d.T, d.H, d.Dv},
					     lmk_op_wants_grad(c, 5, in));
	if (!out)
		return NULL;
	int rc;
	if (c->dev == LMK_DEV_CUDA) {
#if LMK_CUDA
		rc = lmk_cuda_ssd_forward(c->backend, c->dtype, out->data, lmk_op_x(c, q),
					  lmk_op_x(c, k), lmk_op_x(c, v), lmk_op_x(c, loga),
					  lmk_op_x(c, lam), d.B, d.T, d.H, d.G, d.Dk, d.Dv, d.NL, scale,
					  chunk);
#else
		rc = lmk_err(LMK_EUNSUP, "ssd: cuda in a cpu-only build");
#endif
	} else {
		rc = lmk_cpu_ssd_forward(out->data, q->data, k->data, v->data, lmk_op_f(loga),
					 lmk_op_f(lam), d.B, d.T, d.H, d.G, d.Dk, d.Dv, d.NL, scale,
					 algo, chunk);
	}
	if (rc < 0)
		return NULL;
	int fail;
	lmk_node *n = lmk_op_record(c, "ssd", out, ssd_bw, &fail);
	if (fail)
		return NULL;
	if (n) {
		for (int i = 0; i < 5; i++)
			n->in[i] = in[i];
		n->i[0] = algo;
		n->i[1] = chunk;
		n->f[0] = scale;
	}
	return out;
}

/* ------------------------------------------------------------ decoding */

int lmk_ssd_state_init(lmk_ssd_state *s, lmk_ctx *c, int64_t B, int64_t H, int64_t Dk,
		       int64_t Dv, int64_t NL)
{
	memset(s, 0, sizeof *s);
	if (B < 1 || H < 1 || Dk < 1 || Dv < 1 || NL < 0 || NL > 62)
		return lmk_err(LMK_EINVAL,
			       "ssd state: expected B, H, Dk, Dv >= 1 and 0 <= NL <= 62, found "
			       "%lld, %lld, %lld, %lld, %lld",
			       (long long)B, (long long)H, (long long)Dk, (long long)Dv,
			       (long long)NL);
	s->B = B;
	s->H = H;
	s->Dk = Dk;
	s->Dv = Dv;
	s->NL = NL;
	s->dev = c->dev;
	s->backend = c->backend;
	size_t bytes = sizeof(float) * (size_t)(B * H * (NL ? NL : 1) * Dk * Dv);
	if (c->dev == LMK_DEV_CUDA) {
#if LMK_CUDA
		if (lmk_cuda_mem_alloc((void **)&s->S, bytes) < 0)
			return lmk_errcode();
#else
		return lmk_err(LMK_EUNSUP, "ssd state: cuda in a cpu-only build");
#endif
	} else {
		s->S = malloc(bytes);
		if (!s->S)
			return lmk_err(LMK_ENOMEM, "ssd state: cannot allocate %zu bytes", bytes);
	}
	return lmk_ssd_state_reset(c, s);
}

int lmk_ssd_state_reset(lmk_ctx *c, lmk_ssd_state *s)
{
	size_t bytes = sizeof(float) * (size_t)(s->B * s->H * (s->NL ? s->NL : 1) * s->Dk * s->Dv);
	s->t = 0;
	if (s->dev == LMK_DEV_CUDA) {
#if LMK_CUDA
		return lmk_cuda_memset(c->backend, s->S, 0, bytes);
#else
		return lmk_err(LMK_EUNSUP, "ssd state: cuda in a cpu-only build");
#endif
	}
	memset(s->S, 0, bytes);
	return 0;
}

void lmk_ssd_state_free(lmk_ssd_state *s)
{
	if (!s->S)
		return;
#if LMK_CUDA
	if (s->dev == LMK_DEV_CUDA)
		lmk_cuda_mem_free(s->S);
	else
#endif
		free(s->S);
	s->S = NULL;
}

lmk_tensor *lmk_ssd_step(lmk_ctx *c, lmk_ssd_state *s, lmk_tensor *q, lmk_tensor *k,
			 lmk_tensor *v, lmk_tensor *loga, lmk_tensor *lam,
			 const lmk_ssd_opts *o)
{
	if (!q || !k || !v)
		return NULL;
	lmk_tensor *in[5] = {q, k, v, loga, lam};
	if (lmk_op_check_inputs(c, "ssd_step", 5, in,
				(const char *[]){"q", "k", "v", "loga", "lam"},
				(lmk_dtype[]){LMK_F32, LMK_F32, LMK_F32, LMK_F32, LMK_F32}) < 0)
		return NULL;
	dims d;
	int algo, chunk;
	float scale;
	if (check_shapes("ssd_step", q, k, v, loga, lam, &d) < 0 ||
	    read_opts("ssd_step", o, &algo, &chunk, &scale) < 0)
		return NULL;
	if (!s->S || s->dev != c->dev || d.B != s->B || d.H != s->H || d.Dk != s->Dk ||
	    d.Dv != s->Dv || d.NL != s->NL) {
		lmk_err(LMK_EINVAL,
			"ssd_step: q %s, v %s, lam NL %lld: expected a state of B %lld, H %lld, Dk "
			"%lld, Dv %lld, NL %lld on this device",
			LMK_SHP(q), LMK_SHP(v), (long long)d.NL, (long long)s->B, (long long)s->H,
			(long long)s->Dk, (long long)s->Dv, (long long)s->NL);
		return NULL;
	}
	if (s->NL && s->t + d.T > (1ll << (s->NL - 1))) {
		lmk_err(LMK_EINVAL, "ssd_step: %lld levels hold %lld tokens, asked for %lld",
			(long long)s->NL, 1ll << (s->NL - 1), (long long)(s->t + d.T));
		return NULL;
	}
	lmk_tensor *out = lmk_tensor_new(c, c->dtype, 4, (int64_t[]){d.B, d.T, d.H, d.Dv}, 0);
	if (!out)
		return NULL;
	int64_t NLs = s->NL ? s->NL : 1, M = d.Dk * d.Dv;
	if (c->dev == LMK_DEV_CUDA) {
#if LMK_CUDA
		for (int64_t t = 0; t < d.T; t++)
			if (lmk_cuda_ssd_step(c->backend, c->dtype, out->data, s->S, lmk_op_x(c, q),
					      lmk_op_x(c, k), lmk_op_x(c, v), lmk_op_x(c, loga),
					      lmk_op_x(c, lam), d.B, d.T, t, s->t + t, d.H, d.G, d.Dk,
					      d.Dv, s->NL, scale) < 0)
				return NULL;
#else
		lmk_err(LMK_EUNSUP, "ssd_step: cuda in a cpu-only build");
		return NULL;
#endif
	} else {
		const float *qf = q->data, *kf = k->data, *vf = v->data, *lf = lmk_op_f(loga),
			    *mf = lmk_op_f(lam);
		float *of = out->data;
#pragma omp parallel for schedule(static) if (d.B * d.H * NLs * M > 65536)
		for (int64_t bh = 0; bh < d.B * d.H; bh++) {
			int64_t b = bh / d.H, h = bh % d.H, g = h / (d.H / d.G);
			for (int64_t t = 0; t < d.T; t++) {
				int64_t bt = b * d.T + t;
				rec_step(s->S + bh * NLs * M, s->t + t, NLs, qf + (bt * d.G + g) * d.Dk,
					 kf + (bt * d.G + g) * d.Dk, vf + (bt * d.H + h) * d.Dv,
					 lf ? lf[bt * d.H + h] : 0.0f,
					 mf ? mf + (bt * d.H + h) * d.NL : NULL, d.Dk, d.Dv, scale,
					 of + (bt * d.H + h) * d.Dv);
			}
		}
	}
	s->t += d.T;
	return out;
}
