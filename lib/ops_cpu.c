/* ops_cpu.c: CPU kernels, float32, OpenMP over rows, OpenBLAS for the matrix
 * products. Shape letters as in ops_cpu.h. Sums over rows into parameter
 * gradients (dw, db) run over column blocks, each block summing its rows in
 * order, so results are the same for any number of threads. Row statistics
 * (means, variances, logsumexps) are accumulated in double. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "ops_cpu.h"
#include "rng.h"

/* Below this many elements an op runs on one thread: the fork costs more. */
#define PAR_MIN 16384
/* Columns per block of the column sums. */
#define COLS 64

/* db[j] += sum over rows n of x[n,j] (x is (N,M)). */
static void colsum_acc(float *db /*(M)*/, const float *x /*(N,M)*/, int64_t N, int64_t M)
{
	int64_t nb = (M + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN && nb > 1)
	for (int64_t blk = 0; blk < nb; blk++) {
		int64_t j0 = blk * COLS, j1 = j0 + COLS < M ? j0 + COLS : M;
		double acc[COLS] = {0};
		for (int64_t n = 0; n < N; n++) {
			const float *xr = x + n * M;
			for (int64_t j = j0; j < j1; j++)
				acc[j - j0] += xr[j];
		}
		for (int64_t j = j0; j < j1; j++)
			db[j] += (float)acc[j - j0];
	}
}

/* ------------------------------------------------------------ embedding */

void lmk_cpu_embedding_forward(float *out, const int32_t *ids, const float *w, int64_t N,
			       int64_t C)
{
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN)
	for (int64_t n = 0; n < N; n++)
		memcpy(out + n * C, w + (int64_t)ids[n] * C, (size_t)C * sizeof(float));
}

void lmk_cpu_embedding_backward(float *dw, const float *dout, const int32_t *ids, int64_t N,
				int64_t C)
{
	if (!dw)
		return;
	/* Repeated ids add into one row: split the columns, not the rows. */
	int64_t nb = (C + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN && nb > 1)
	for (int64_t blk = 0; blk < nb; blk++) {
		int64_t j0 = blk * COLS, j1 = j0 + COLS < C ? j0 + COLS : C;
		for (int64_t n = 0; n < N; n++) {
			float *dr = dw + (int64_t)ids[n] * C;
			const float *g = dout + n * C;
			for (int64_t j = j0; j < j1; j++)
				dr[j] += g[j];
		}
	}
}

/* --------------------------------------------------------------- linear */

void lmk_cpu_linear_forward(float *out, const float *inp, const float *w, const float *b,
			    int64_t N, int64_t IC, int64_t OC)
{
	if (N == 0 || OC == 0)
		return;
	if (b) {
#pragma omp parallel for schedule(static) if (N * OC > PAR_MIN)
		for (int64_t n = 0; n < N; n++)
			memcpy(out + n * OC, b, (size_t)OC * sizeof(float));
	}
	if (IC == 0) {
		if (!b)
			memset(out, 0, (size_t)(N * OC) * sizeof(float));
		return;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)OC, (int)IC, 1.0f, inp,
		    (int)IC, w, (int)IC, b ? 1.0f : 0.0f, out, (int)OC);
}

void lmk_cpu_linear_backward(float *dinp, float *dw, float *db, const float *dout,
			     const float *inp, const float *w, int64_t N, int64_t IC, int64_t OC)
{
	if (N == 0 || OC == 0)
		return;
	if (db)
		colsum_acc(db, dout, N, OC);
	if (IC == 0)
		return;
	if (dinp) /* (N,IC) += (N,OC) (OC,IC) */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)IC, (int)OC,
			    1.0f, dout, (int)OC, w, (int)IC, 1.0f, dinp, (int)IC);
	if (dw) /* (OC,IC) += (N,OC)ᵀ (N,IC) */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)IC, (int)N, 1.0f,
			    dout, (int)OC, inp, (int)IC, 1.0f, dw, (int)IC);
}

/* ------------------------------------------------------------- rmsnorm */

void lmk_cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
			     int64_t N, int64_t C, float eps)
{
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN)
	for (int64_t n = 0; n < N; n++) {
		const float *x = inp + n * C;
		float *y = out + n * C;
		double ss = 0;
		for (int64_t i = 0; i < C; i++)
			ss += (double)x[i] * x[i];
		float r = (float)(1.0 / sqrt(ss / (double)C + eps));
		for (int64_t i = 0; i < C; i++)
			y[i] = x[i] * r * (w ? w[i] : 1.0f);
		rstd[n] = r;
	}
}

void lmk_cpu_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
			      const float *w, const float *rstd, int64_t N, int64_t C)
{
	/* y = x r w:  dx = r (g w - x̂ mean(g w x̂)) with x̂ = x r;  dw = Σ g x̂ */
	if (dinp) {
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN)
		for (int64_t n = 0; n < N; n++) {
			const float *x = inp + n * C, *g = dout + n * C;
			float *dx = dinp + n * C, r = rstd[n];
			double dot = 0;
			for (int64_t i = 0; i < C; i++)
				dot += (double)g[i] * (w ? w[i] : 1.0f) * x[i] * r;
			float m = (float)(dot / (double)C);
			for (int64_t i = 0; i < C; i++)
				dx[i] += r * (g[i] * (w ? w[i] : 1.0f) - x[i] * r * m);
		}
	}
	if (dw) {
		int64_t nb = (C + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN && nb > 1)
		for (int64_t blk = 0; blk < nb; blk++) {
			int64_t j0 = blk * COLS, j1 = j0 + COLS < C ? j0 + COLS : C;
			double acc[COLS] = {0};
			for (int64_t n = 0; n < N; n++) {
				const float *x = inp + n * C, *g = dout + n * C;
				for (int64_t j = j0; j < j1; j++)
					acc[j - j0] += (double)g[j] * (x[j] * rstd[n]);
			}
			for (int64_t j = j0; j < j1; j++)
				dw[j] += (float)acc[j - j0];
		}
	}
}

/* ----------------------------------------------------------- layernorm */

void lmk_cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
			       const float *w, const float *b, int64_t N, int64_t C, float eps)
{
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN)
	for (int64_t n = 0; n < N; n++) {
		const float *x = inp + n * C;
		float *y = out + n * C;
		double s = 0, ss = 0;
		for (int64_t i = 0; i < C; i++)
			s += x[i];
		double mu = C ? s / (double)C : 0;
		for (int64_t i = 0; i < C; i++)
			ss += (x[i] - mu) * (x[i] - mu);
		float m = (float)mu, r = (float)(1.0 / sqrt((C ? ss / (double)C : 0) + eps));
		for (int64_t i = 0; i < C; i++)
			y[i] = (x[i] - m) * r * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
		mean[n] = m;
		rstd[n] = r;
	}
}

void lmk_cpu_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
				const float *inp, const float *w, const float *mean,
				const float *rstd, int64_t N, int64_t C)
{
	/* dx = r (gw - mean(gw) - x̂ mean(gw x̂));  dw = Σ g x̂;  db = Σ g */
	if (dinp) {
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN)
		for (int64_t n = 0; n < N; n++) {
			const float *x = inp + n * C, *g = dout + n * C;
			float *dx = dinp + n * C, m = mean[n], r = rstd[n];
			double s = 0, sx = 0;
			for (int64_t i = 0; i < C; i++) {
				float gw = g[i] * (w ? w[i] : 1.0f);
				s += gw;
				sx += (double)gw * ((x[i] - m) * r);
			}
			float ms = (float)(s / (double)C), msx = (float)(sx / (double)C);
			for (int64_t i = 0; i < C; i++)
				dx[i] += r * (g[i] * (w ? w[i] : 1.0f) - ms - (x[i] - m) * r * msx);
		}
	}
	if (db)
		colsum_acc(db, dout, N, C);
	if (dw) {
		int64_t nb = (C + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (N * C > PAR_MIN && nb > 1)
		for (int64_t blk = 0; blk < nb; blk++) {
			int64_t j0 = blk * COLS, j1 = j0 + COLS < C ? j0 + COLS : C;
			double acc[COLS] = {0};
			for (int64_t n = 0; n < N; n++) {
				const float *x = inp + n * C, *g = dout + n * C;
				for (int64_t j = j0; j < j1; j++)
					acc[j - j0] += (double)g[j] * ((x[j] - mean[n]) * rstd[n]);
			}
			for (int64_t j = j0; j < j1; j++)
				dw[j] += (float)acc[j - j0];
		}
	}
}

/* ---------------------------------------------------------------- rope */

/* sign +1 rotates by +angle (forward), -1 by -angle (backward: the
 * transpose of a rotation is the rotation back). */
static void rope_rotate(float *out, const float *inp, const int32_t *pos,
			const float *inv_freq, float attn_factor, int64_t N, int64_t H,
			int64_t D, float sign, int accumulate)
{
	int64_t half = D / 2;
#pragma omp parallel for schedule(static) if (N * H * D > PAR_MIN)
	for (int64_t n = 0; n < N; n++) {
		float p = (float)pos[n];
		for (int64_t i = 0; i < half; i++) {
			float a = p * inv_freq[i];
			float c = cosf(a) * attn_factor, s = sign * sinf(a) * attn_factor;
			for (int64_t h = 0; h < H; h++) {
				const float *x = inp + (n * H + h) * D;
				float *y = out + (n * H + h) * D;
				float x0 = x[i], x1 = x[i + half];
				float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
				if (accumulate) {
					y[i] += y0;
					y[i + half] += y1;
				} else {
					y[i] = y0;
					y[i + half] = y1;
				}
			}
		}
	}
}

void lmk_cpu_rope_forward(float *out, const float *inp, const int32_t *pos,
			  const float *inv_freq, float attn_factor, int64_t N, int64_t H, int64_t D)
{
	rope_rotate(out, inp, pos, inv_freq, attn_factor, N, H, D, 1.0f, 0);
}

void lmk_cpu_rope_backward(float *dinp, const float *dout, const int32_t *pos,
			   const float *inv_freq, float attn_factor, int64_t N, int64_t H, int64_t D)
{
	if (dinp)
		rope_rotate(dinp, dout, pos, inv_freq, attn_factor, N, H, D, -1.0f, 1);
}

/* ----------------------------------------------------------- attention */

static float dotf(const float *a, const float *b, int64_t D)
{
	float s = 0;
	for (int64_t d = 0; d < D; d++)
		s += a[d] * b[d];
	return s;
}

/* Does query i see key j? (seg rows already offset to the batch row) */
static int sees(const int32_t *seg, int64_t i, int64_t j, int causal)
{
	if (causal && j > i)
		return 0;
	return !seg || (seg[i] >= 0 && seg[j] == seg[i]);
}

void lmk_cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
			       const float *v, const int32_t *seg, int64_t B, int64_t T,
			       int64_t H, int64_t K, int64_t D, float scale, int causal)
{
	int64_t rep = H / K;
#pragma omp parallel for collapse(3) schedule(dynamic, 8) if (B * H * T * T * D > PAR_MIN)
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < T; i++) {
				const int32_t *sg = seg ? seg + b * T : NULL;
				const float *qi = q + ((b * T + i) * H + h) * D;
				float *oi = out + ((b * T + i) * H + h) * D;
				int64_t g = h / rep, jend = causal ? i + 1 : T;
				/* online softmax: m the running max, l the sum of
				 * exp(s - m), oi the sum of exp(s - m) v */
				float m = -INFINITY, l = 0;
				memset(oi, 0, (size_t)D * sizeof(float));
				for (int64_t j = 0; j < jend; j++) {
					if (!sees(sg, i, j, causal))
						continue;
					const float *kj = k + ((b * T + j) * K + g) * D;
					const float *vj = v + ((b * T + j) * K + g) * D;
					float s = scale * dotf(qi, kj, D);
					if (s > m) {
						float corr = expf(m - s);
						l *= corr;
						for (int64_t d = 0; d < D; d++)
							oi[d] *= corr;
						m = s;
					}
					float p = expf(s - m);
					l += p;
					for (int64_t d = 0; d < D; d++)
						oi[d] += p * vj[d];
				}
				float *L = lse + (b * H + h) * T + i;
				if (l > 0) {
					for (int64_t d = 0; d < D; d++)
						oi[d] /= l;
					*L = m + logf(l);
				} else {
					*L = -INFINITY;
				}
			}
}

void lmk_cpu_attention_backward(float *dq, float *dk, float *dv, float *delta,
				const float *dout, const float *q, const float *k, const float *v,
				const float *out, const float *lse, const int32_t *seg, int64_t B,
				int64_t T, int64_t H, int64_t K, int64_t D, float scale, int causal)
{
	/* With p = exp(s - lse), dp = dout·v_j, delta_i = dout_i·out_i:
	 * ds = p (dp - delta_i); dq_i += scale Σ_j ds k_j;
	 * dk_j += scale Σ_{h,i} ds q_i; dv_j += Σ_{h,i} p dout_i.
	 * Pass 1 owns the query rows, pass 2 the key rows, so no two threads
	 * add into one row. */
	int64_t rep = H / K;
	int par = B * H * T * T * D > PAR_MIN;
#pragma omp parallel for collapse(3) schedule(dynamic, 8) if (par)
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < T; i++) {
				const int32_t *sg = seg ? seg + b * T : NULL;
				int64_t row = (b * T + i) * H + h, g = h / rep;
				float L = lse[(b * H + h) * T + i];
				float *di = delta + (b * H + h) * T + i;
				if (L == -INFINITY) {
					*di = 0;
					continue;
				}
				const float *go = dout + row * D, *qi = q + row * D;
				*di = dotf(go, out + row * D, D);
				if (!dq)
					continue;
				float *dqi = dq + row * D;
				int64_t jend = causal ? i + 1 : T;
				for (int64_t j = 0; j < jend; j++) {
					if (!sees(sg, i, j, causal))
						continue;
					const float *kj = k + ((b * T + j) * K + g) * D;
					const float *vj = v + ((b * T + j) * K + g) * D;
					float p = expf(scale * dotf(qi, kj, D) - L);
					float ds = p * (dotf(go, vj, D) - *di);
					for (int64_t d = 0; d < D; d++)
						dqi[d] += scale * ds * kj[d];
				}
			}
	if (!dk && !dv)
		return;
#pragma omp parallel for collapse(3) schedule(dynamic, 8) if (par)
	for (int64_t b = 0; b < B; b++)
		for (int64_t g = 0; g < K; g++)
			for (int64_t j = 0; j < T; j++) {
				const int32_t *sg = seg ? seg + b * T : NULL;
				int64_t row = (b * T + j) * K + g;
				const float *kj = k + row * D, *vj = v + row * D;
				for (int64_t h = g * rep; h < (g + 1) * rep; h++)
					for (int64_t i = causal ? j : 0; i < T; i++) {
						if (!sees(sg, i, j, causal))
							continue;
						float L = lse[(b * H + h) * T + i];
						if (L == -INFINITY)
							continue;
						int64_t qrow = (b * T + i) * H + h;
						const float *qi = q + qrow * D, *go = dout + qrow * D;
						float p = expf(scale * dotf(qi, kj, D) - L);
						if (dv)
							for (int64_t d = 0; d < D; d++)
								dv[row * D + d] += p * go[d];
						if (dk) {
							float di = delta[(b * H + h) * T + i];
							float ds = p * (dotf(go, vj, D) - di);
							for (int64_t d = 0; d < D; d++)
								dk[row * D + d] += scale * ds * qi[d];
						}
					}
			}
}

/* --------------------------------------------------------- elementwise */

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void lmk_cpu_silu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = inp[i] * sigmoidf(inp[i]);
}

void lmk_cpu_silu_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{
	if (!dinp)
		return;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++) {
		float x = inp[i], s = sigmoidf(x);
		dinp[i] += dout[i] * s * (1.0f + x * (1.0f - s));
	}
}

#define GELU_K 0.7978845608028654f   /* sqrt(2/pi) */
#define GELU_C 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

void lmk_cpu_gelu_forward(float *out, const float *inp, int64_t n, int approx)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++) {
		float x = inp[i];
		if (approx)
			out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + GELU_C * x * x * x)));
		else
			out[i] = 0.5f * x * (1.0f + erff(x * INV_SQRT2));
	}
}

void lmk_cpu_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n,
			   int approx)
{
	if (!dinp)
		return;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++) {
		float x = inp[i], d;
		if (approx) {
			float t = tanhf(GELU_K * (x + GELU_C * x * x * x));
			d = 0.5f * (1.0f + t) +
			    0.5f * x * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
		} else {
			d = 0.5f * (1.0f + erff(x * INV_SQRT2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
		}
		dinp[i] += dout[i] * d;
	}
}

void lmk_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

void lmk_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
			     const float *up, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++) {
		float x = gate[i], s = sigmoidf(x);
		if (dgate)
			dgate[i] += dout[i] * up[i] * s * (1.0f + x * (1.0f - s));
		if (dup)
			dup[i] += dout[i] * x * s;
	}
}

void lmk_cpu_add_forward(float *out, const float *a, const float *b, int64_t N, int64_t M)
{
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN)
	for (int64_t i = 0; i < N * M; i++)
		out[i] = a[i] + b[i % M];
}

void lmk_cpu_add_backward(float *da, float *db, const float *dout, int64_t N, int64_t M)
{
	if (da) {
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN)
		for (int64_t i = 0; i < N * M; i++)
			da[i] += dout[i];
	}
	if (db && N == 1) {
#pragma omp parallel for schedule(static) if (M > PAR_MIN)
		for (int64_t i = 0; i < M; i++)
			db[i] += dout[i];
	} else if (db) {
		colsum_acc(db, dout, N, M);
	}
}

void lmk_cpu_mul_forward(float *out, const float *a, const float *b, int64_t N, int64_t M)
{
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN)
	for (int64_t i = 0; i < N * M; i++)
		out[i] = a[i] * b[i % M];
}

void lmk_cpu_mul_backward(float *da, float *db, const float *dout, const float *a,
			  const float *b, int64_t N, int64_t M)
{
	if (da) {
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN)
		for (int64_t i = 0; i < N * M; i++)
			da[i] += dout[i] * b[i % M];
	}
	if (!db)
		return;
	int64_t nb = (M + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN && nb > 1)
	for (int64_t blk = 0; blk < nb; blk++) {
		int64_t j0 = blk * COLS, j1 = j0 + COLS < M ? j0 + COLS : M;
		double acc[COLS] = {0};
		for (int64_t r = 0; r < N; r++)
			for (int64_t j = j0; j < j1; j++)
				acc[j - j0] += (double)dout[r * M + j] * a[r * M + j];
		for (int64_t j = j0; j < j1; j++)
			db[j] += (float)acc[j - j0];
	}
}

void lmk_cpu_scale_forward(float *out, const float *inp, float s, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = s * inp[i];
}

void lmk_cpu_scale_backward(float *dinp, const float *dout, float s, int64_t n)
{
	if (!dinp)
		return;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		dinp[i] += s * dout[i];
}

static void dropout_apply(float *out, const float *inp, int64_t n, float p, uint64_t seed,
			  uint64_t counter, int accumulate)
{
	float keep = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
#pragma omp parallel for schedule(static) if (n > PAR_MIN / 8)
	for (int64_t i = 0; i < n; i++) {
		float y = lmk_philox_uniform(seed, counter, (uint64_t)i) < p ? 0.0f : inp[i] * keep;
		if (accumulate)
			out[i] += y;
		else
			out[i] = y;
	}
}

void lmk_cpu_dropout_forward(float *out, const float *inp, int64_t n, float p, uint64_t seed,
			     uint64_t counter)
{
	dropout_apply(out, inp, n, p, seed, counter, 0);
}

void lmk_cpu_dropout_backward(float *dinp, const float *dout, int64_t n, float p,
			      uint64_t seed, uint64_t counter)
{
	if (dinp)
		dropout_apply(dinp, dout, n, p, seed, counter, 1);
}

/* ------------------------------------------------------- cross-entropy */

int64_t lmk_cpu_cross_entropy_forward(float *loss, float *lse, const float *logits,
				      const int32_t *targets, int64_t N, int64_t V, int ignore)
{
#pragma omp parallel for schedule(static) if (N * V > PAR_MIN)
	for (int64_t n = 0; n < N; n++) {
		const float *x = logits + n * V;
		if (targets[n] == ignore) {
			lse[n] = 0;
			continue;
		}
		float m = -INFINITY;
		for (int64_t j = 0; j < V; j++)
			m = x[j] > m ? x[j] : m;
		double s = 0;
		for (int64_t j = 0; j < V; j++)
			s += exp((double)(x[j] - m));
		lse[n] = m + (float)log(s);
	}
	/* the mean in row order, so it is the same on any number of threads */
	double sum = 0;
	int64_t count = 0;
	for (int64_t n = 0; n < N; n++) {
		if (targets[n] == ignore)
			continue;
		sum += (double)lse[n] - logits[n * V + targets[n]];
		count++;
	}
	loss[0] = count ? (float)(sum / (double)count) : 0.0f;
	return count;
}

void lmk_cpu_cross_entropy_backward(float *dlogits, const float *dloss, const float *logits,
				    const float *lse, const int32_t *targets, int64_t N, int64_t V,
				    int ignore, int64_t count)
{
	if (!dlogits || count == 0)
		return;
	float f = dloss[0] / (float)count;
#pragma omp parallel for schedule(static) if (N * V > PAR_MIN)
	for (int64_t n = 0; n < N; n++) {
		if (targets[n] == ignore)
			continue;
		const float *x = logits + n * V;
		float *dx = dlogits + n * V;
		for (int64_t j = 0; j < V; j++)
			dx[j] += f * expf(x[j] - lse[n]);
		dx[targets[n]] -= f;
	}
}
