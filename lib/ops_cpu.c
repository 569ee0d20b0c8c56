/* ops_cpu.c: CPU kernels, float32, OpenMP over rows, OpenBLAS for the matrix
 * products. Shape letters as in ops_cpu.h. Sums over rows into parameter
 * gradients (dw, db) run over column blocks, each block summing its rows in
 * order, so results are the same for any number of threads. Row statistics
 * (means, variances, logsumexps) are accumulated in double.
 *
 * Threads: one pool, OpenMP's. Every BLAS call runs on one thread, inside
 * an OpenMP loop over blocks of its output whose bounds depend on the shape
 * alone (so the result does not depend on the number of threads). OpenBLAS's
 * own pool, run beside OpenMP's, made the two spin against each other for
 * the same cores: on 2 loaded cores a training step on two threads took 1.4
 * times as long as on one, and decoding 37 times (docs/benchmarks.md). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "ops_cpu.h"
#include "rng.h"

/* Floating-point exceptions are never inspected here; without this GCC
 * keeps the compares of float selects (x < a ? a : x) as branches, and the
 * loops of vexpf below would not be vectorised. It changes no result. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

/* Below this many elements an op runs on one thread: the fork costs more. */
#define PAR_MIN 16384
/* Columns per block of the column sums. */
#define COLS 64
/* Rows (or columns) per block of a matrix product, at most: a block packs
 * the other operand once, so fewer rows spend more time copying (64 rows
 * took 10% longer than 256 on one thread, bench_ops). */
#define GEMM_BLK 256
/* Below this many multiply-adds a matrix product runs on one thread. */
#define GEMM_PAR_MIN 262144

static int64_t max1(int64_t x) { return x > 1 ? x : 1; }

/* e^x in float, written so that a loop over it vectorises (no calls, no
 * branches), for the exponentials of softmax and sigmoid, where a call of
 * expf per element cost more than the matrix products around it. Cephes'
 * expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two so that n ln2 is
 * exact), e^r by its degree-7 polynomial, 2^n from the exponent bits.
 * Within 2 ulp of e^x (1.4 ulp measured over [-100, 90]); 0 below -86.5,
 * where expf would give under 3e-38 (so e^-inf = 0); inf above 88.72. */
static inline float vexpf(float x)
{
	float xc = x < -86.5f ? -86.5f : x;
	xc = xc > 88.72f ? 88.72f : xc;
	float t = xc * 1.44269504088896341f + 12582912.0f; /* 1.5 2^23: round to integer */
	float n = t - 12582912.0f;
	float r = xc - n * 0.693359375f;
	r = r - n * -2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	float y = p * r * r + r + 1.0f;
	/* 2^(n-1) then 2: n reaches 128 at the top of the range */
	union { int32_t i; float f; } two = {.i = ((int32_t)n + 126) << 23};
	y = y * two.f * 2.0f;
	y = x < -86.5f ? 0.0f : y;
	return x > 88.72f ? INFINITY : y;
}

/* BLAS single-threaded: the parallelism is ours (see the top). A global
 * setting of OpenBLAS's pthread build, so it is checked before each
 * parallel product, in case someone (lmk_train_set_threads) raised it
 * since. OpenBLAS's OpenMP build runs on one thread inside a parallel
 * region by itself, and there the setting would be omp_set_num_threads. */
void lmk_cpu_blas_one_thread(void)
{
	if (openblas_get_parallel() == OPENBLAS_THREAD && openblas_get_num_threads() != 1)
		openblas_set_num_threads(1);
}

void lmk_cpu_mm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
		int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
	if (M <= 0 || N <= 0)
		return;
	if (K <= 0) {
		for (int64_t i = 0; i < M; i++)
			for (int64_t j = 0; j < N; j++)
				C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
		return;
	}
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
		    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* The number of blocks of at most GEMM_BLK that split n: at least two from
 * 64 on, and even, so that two threads get the same share. Block b is
 * [n b / nb, n (b+1) / nb). */
static int64_t gemm_nblocks(int64_t n)
{
	int64_t nb = (n + GEMM_BLK - 1) / GEMM_BLK;
	if (nb == 1 && n >= 64)
		nb = 2;
	return nb > 1 && nb % 2 ? nb + 1 : nb;
}

/* A matrix product C = alpha op(A) op(B) + beta C, row-major: C (M,N),
 * op(A) (M,Kd), op(B) (Kd,N). */
typedef struct {
	int ta, tb;
	int64_t M, N, Kd;
	float alpha;
	const float *A;
	int64_t lda;
	const float *B;
	int64_t ldb;
	float beta;
	float *C;
	int64_t ldc;
} gemm_op;

/* Block b of nb of g's product: rows (or columns, when C is wider than
 * tall) [n b / nb, n (b+1) / nb) of C, on the calling thread. One row
 * (M = 1, as in decoding) goes to gemv: gemm would copy all of B into its
 * packed layout to use it once. */
static void gemm_block(const gemm_op *g, int64_t b, int64_t nb)
{
	int rows = g->M >= g->N;
	int64_t n = rows ? g->M : g->N, s = n * b / nb, e = n * (b + 1) / nb;
	const float *a = g->A, *bb = g->B;
	float *c;
	if (rows) {
		a = g->ta ? g->A + s : g->A + s * g->lda;
		c = g->C + s * g->ldc;
	} else {
		bb = g->tb ? g->B + s * g->ldb : g->B + s;
		c = g->C + s;
	}
	int lda = (int)max1(g->lda), ldb = (int)max1(g->ldb);
	if (g->M == 1 && !rows) { /* c = op(B)ᵀ a */
		cblas_sgemv(CblasRowMajor, g->tb ? CblasNoTrans : CblasTrans,
			    (int)(g->tb ? e - s : g->Kd), (int)(g->tb ? g->Kd : e - s), g->alpha, bb,
			    ldb, a, g->ta ? lda : 1, g->beta, c, 1);
		return;
	}
	cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans,
		    g->tb ? CblasTrans : CblasNoTrans, (int)(rows ? e - s : g->M),
		    (int)(rows ? g->N : e - s), (int)g->Kd, g->alpha, a, lda, bb, ldb, g->beta, c,
		    (int)max1(g->ldc));
}

/* Runs n <= 2 independent products (no one's output is another's input) as
 * blocks of the longer side of each C, all in one parallel loop, one
 * single-threaded BLAS call per block: one fork and join for the two
 * products of a linear layer's backward rather than two. */
static void gemm_par(const gemm_op *g, int n)
{
	int64_t nb[2], total = 0, work = 0;
	for (int i = 0; i < n; i++) {
		nb[i] = g[i].M && g[i].N ? gemm_nblocks(g[i].M >= g[i].N ? g[i].M : g[i].N) : 0;
		total += nb[i];
		work += g[i].M * g[i].N * g[i].Kd;
	}
	lmk_cpu_blas_one_thread();
#pragma omp parallel for schedule(dynamic, 1) if (total > 1 && work > GEMM_PAR_MIN)
	for (int64_t t = 0; t < total; t++) {
		int i = 0;
		int64_t b = t;
		while (b >= nb[i])
			b -= nb[i++];
		gemm_block(&g[i], b, nb[i]);
	}
}

/* One product on the calling thread, inside a parallel loop of our own. */
static void gemm1(int ta, int tb, int64_t M, int64_t N, int64_t Kd, float alpha,
		  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
		  int64_t ldc)
{
	if (M == 0 || N == 0)
		return;
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
		    (int)M, (int)N, (int)Kd, alpha, A, (int)max1(lda), B, (int)max1(ldb), beta, C,
		    (int)max1(ldc));
}

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
	gemm_op g = {0, 1, N, OC, IC, 1.0f, inp, IC, w, IC, b ? 1.0f : 0.0f, out, OC};
	gemm_par(&g, 1);
}

void lmk_cpu_linear_backward(float *dinp, float *dw, float *db, const float *dout,
			     const float *inp, const float *w, int64_t N, int64_t IC, int64_t OC,
			     int assign)
{
	if (N == 0 || OC == 0)
		return;
	if (db)
		colsum_acc(db, dout, N, OC);
	if (IC == 0)
		return;
	gemm_op g[2];
	int n = 0;
	/* beta 0 assigns (BLAS never reads C then) */
	if (dw) /* (OC,IC) += (N,OC)ᵀ (N,IC); first: its blocks are the longer */
		g[n++] = (gemm_op){1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, assign & 2 ? 0.0f : 1.0f,
				   dw, IC};
	if (dinp) /* (N,IC) += (N,OC) (OC,IC) */
		g[n++] = (gemm_op){0, 0, N, IC, OC, 1.0f, dout, OC, w, IC, assign & 1 ? 0.0f : 1.0f,
				   dinp, IC};
	gemm_par(g, n);
}

void lmk_cpu_linear_add_forward(float *out, const float *inp, const float *w, const float *b,
				const float *r, int64_t N, int64_t IC, int64_t OC)
{
	lmk_cpu_linear_forward(out, inp, w, b, N, IC, OC);
	lmk_cpu_add_forward(out, r, out, 1, N * OC);
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
			      const float *w, const float *rstd, int64_t N, int64_t C, int assign)
{
	/* y = x r w:  dx = r (g w - x̂ mean(g w x̂)) with x̂ = x r;  dw = Σ g x̂
	 * (rows for dx, column blocks for dw, in one parallel region) */
	int64_t nb = (C + COLS - 1) / COLS;
	int set = assign & 1, setw = assign & 2;
#pragma omp parallel if (N * C > PAR_MIN)
	{
		if (dinp) {
#pragma omp for schedule(static) nowait
			for (int64_t n = 0; n < N; n++) {
				const float *x = inp + n * C, *g = dout + n * C;
				float *dx = dinp + n * C, r = rstd[n];
				double dot = 0;
				for (int64_t i = 0; i < C; i++)
					dot += (double)g[i] * (w ? w[i] : 1.0f) * x[i] * r;
				float m = (float)(dot / (double)C);
				for (int64_t i = 0; i < C; i++)
					dx[i] = (set ? 0.0f : dx[i]) +
						r * (g[i] * (w ? w[i] : 1.0f) - x[i] * r * m);
			}
		}
		if (dw) {
#pragma omp for schedule(static) nowait
			for (int64_t blk = 0; blk < nb; blk++) {
				int64_t j0 = blk * COLS, j1 = j0 + COLS < C ? j0 + COLS : C;
				double acc[COLS] = {0};
				for (int64_t n = 0; n < N; n++) {
					const float *x = inp + n * C, *g = dout + n * C;
					for (int64_t j = j0; j < j1; j++)
						acc[j - j0] += (double)g[j] * (x[j] * rstd[n]);
				}
				for (int64_t j = j0; j < j1; j++)
					dw[j] = (setw ? 0.0f : dw[j]) + (float)acc[j - j0];
			}
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
				const float *rstd, int64_t N, int64_t C, int assign)
{
	/* dx = r (gw - mean(gw) - x̂ mean(gw x̂));  dw = Σ g x̂;  db = Σ g */
	int set = assign & 1;
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
				dx[i] = (set ? 0.0f : dx[i]) +
					r * (g[i] * (w ? w[i] : 1.0f) - ms - (x[i] - m) * r * msx);
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
			   const float *inv_freq, float attn_factor, int64_t N, int64_t H, int64_t D,
			   int assign)
{
	if (dinp)
		rope_rotate(dinp, dout, pos, inv_freq, attn_factor, N, H, D, -1.0f, !(assign & 1));
}

/* ----------------------------------------------------------- attention */

/* Attention runs as matrix products over blocks of QB query rows and KB
 * keys of one (batch row, head), as flash attention does: the scores of a
 * block, S = scale Q Kᵀ (QB,KB), live on the thread's stack, never the
 * whole (T,T). Causal blocks stop at the block's last query. The blocks
 * depend on T alone, so the results do not depend on the thread count. */
#define QB 64
#define KB 128

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

/* Sets s[jj] (key j0+jj, jj < nk) to -inf where query i does not see it;
 * @return : the end of the keys it may see, causal (all of them before). */
static int64_t mask_row(float *s, const int32_t *seg, int64_t i, int64_t j0, int64_t nk,
			int causal)
{
	int64_t end = nk;
	if (causal && i + 1 - j0 < nk)
		end = i + 1 - j0 > 0 ? i + 1 - j0 : 0;
	for (int64_t jj = end; jj < nk; jj++)
		s[jj] = -INFINITY;
	if (seg)
		for (int64_t jj = 0; jj < end; jj++)
			if (!sees(seg, i, j0 + jj, causal))
				s[jj] = -INFINITY;
	return end;
}

/* The largest of m and x[0..n), with eight running maxima, so that the
 * loop vectorises (GCC 12 keeps an omp simd max reduction in memory). */
static float rowmax(const float *x, int64_t n, float m)
{
	float m8[8] = {m, m, m, m, m, m, m, m};
	int64_t j = 0;
	for (; j + 8 <= n; j += 8)
		for (int u = 0; u < 8; u++)
			m8[u] = x[j + u] > m8[u] ? x[j + u] : m8[u];
	for (; j < n; j++)
		m = x[j] > m ? x[j] : m;
	for (int u = 0; u < 8; u++)
		m = m8[u] > m ? m8[u] : m;
	return m;
}

void lmk_cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
			       const float *v, const int32_t *seg, int64_t B, int64_t T,
			       int64_t H, int64_t K, int64_t D, float scale, int causal)
{
	int64_t rep = K ? H / K : 1, nq = (T + QB - 1) / QB;
	lmk_cpu_blas_one_thread();
#pragma omp parallel for collapse(3) schedule(dynamic, 1) if (B * H * T * T * D > PAR_MIN)
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t qb = 0; qb < nq; qb++) {
				const int32_t *sg = seg ? seg + b * T : NULL;
				int64_t i0 = qb * QB, n = T - i0 < QB ? T - i0 : QB, g = h / rep;
				int64_t jend = causal ? i0 + n : T;
				const float *qi = q + ((b * T + i0) * H + h) * D;
				const float *kb = k + (b * T * K + g) * D, *vb = v + (b * T * K + g) * D;
				float *oi = out + ((b * T + i0) * H + h) * D;
				/* online softmax over key blocks: m the running max of
				 * each row, l the sum of exp(s - m), oi the sum of
				 * exp(s - m) v */
				float s[QB * KB], m[QB], l[QB];
				for (int64_t r = 0; r < n; r++) {
					m[r] = -INFINITY;
					l[r] = 0;
					memset(oi + r * H * D, 0, (size_t)D * sizeof(float));
				}
				for (int64_t j0 = 0; j0 < jend; j0 += KB) {
					int64_t nk = jend - j0 < KB ? jend - j0 : KB;
					gemm1(0, 1, n, nk, D, scale, qi, H * D, kb + j0 * K * D, K * D,
					      0.0f, s, nk);
					for (int64_t r = 0; r < n; r++) {
						float *sr = s + r * nk, sum = 0;
						int64_t end = mask_row(sr, sg, i0 + r, j0, nk, causal);
						float mx = rowmax(sr, end, m[r]);
						if (mx == -INFINITY) { /* nothing seen yet */
							memset(sr, 0, (size_t)nk * sizeof(float));
							continue;
						}
#pragma omp simd reduction(+ : sum)
						for (int64_t jj = 0; jj < end; jj++) {
							sr[jj] = vexpf(sr[jj] - mx);
							sum += sr[jj];
						}
						memset(sr + end, 0, (size_t)(nk - end) * sizeof(float));
						if (mx > m[r]) {
							float corr = expf(m[r] - mx);
							for (int64_t d = 0; d < D; d++)
								oi[r * H * D + d] *= corr;
							l[r] *= corr;
							m[r] = mx;
						}
						l[r] += sum;
					}
					gemm1(0, 0, n, D, nk, 1.0f, s, nk, vb + j0 * K * D, K * D, 1.0f, oi,
					      H * D);
				}
				for (int64_t r = 0; r < n; r++) {
					float *L = lse + (b * H + h) * T + i0 + r;
					if (l[r] > 0) {
						for (int64_t d = 0; d < D; d++)
							oi[r * H * D + d] /= l[r];
						*L = m[r] + logf(l[r]);
					} else {
						*L = -INFINITY;
					}
				}
			}
}

void lmk_cpu_attention_backward(float *dq, float *dk, float *dv, float *delta,
				const float *dout, const float *q, const float *k, const float *v,
				const float *out, const float *lse, const int32_t *seg, int64_t B,
				int64_t T, int64_t H, int64_t K, int64_t D, float scale, int causal)
{
	/* With P = exp(S - lse), dP = dO Vᵀ, delta_i = dO_i·O_i:
	 * dS = P∘(dP - delta); dQ += scale dS K; dK += scale dSᵀ Q; dV += Pᵀ dO.
	 * One task per (batch row, key/value head) owns the rows of dk and dv
	 * of that head and the rows of dq and delta of its query heads, so no
	 * two threads add into one row. */
	int64_t rep = K ? H / K : 1, nq = (T + QB - 1) / QB;
	lmk_cpu_blas_one_thread();
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (B * H * T * T * D > PAR_MIN)
	for (int64_t b = 0; b < B; b++)
		for (int64_t g = 0; g < K; g++) {
			const int32_t *sg = seg ? seg + b * T : NULL;
			const float *kb = k + (b * T * K + g) * D, *vb = v + (b * T * K + g) * D;
			float p[QB * KB], ds[QB * KB];
			for (int64_t h = g * rep; h < (g + 1) * rep; h++)
				for (int64_t i = 0; i < T; i++) {
					int64_t row = (b * T + i) * H + h;
					float L = lse[(b * H + h) * T + i];
					delta[(b * H + h) * T + i] =
						L == -INFINITY ? 0 : dotf(dout + row * D, out + row * D, D);
				}
			if (!dq && !dk && !dv)
				continue;
			for (int64_t h = g * rep; h < (g + 1) * rep; h++)
				for (int64_t qb = 0; qb < nq; qb++) {
					int64_t i0 = qb * QB, n = T - i0 < QB ? T - i0 : QB;
					int64_t jend = causal ? i0 + n : T, off = ((b * T + i0) * H + h) * D;
					const float *L = lse + (b * H + h) * T + i0;
					const float *dl = delta + (b * H + h) * T + i0;
					const float *qi = q + off, *go = dout + off;
					for (int64_t j0 = 0; j0 < jend; j0 += KB) {
						int64_t nk = jend - j0 < KB ? jend - j0 : KB;
						int64_t koff = j0 * K * D;
						gemm1(0, 1, n, nk, D, scale, qi, H * D, kb + koff, K * D,
						      0.0f, p, nk);
						for (int64_t r = 0; r < n; r++) {
							float *pr = p + r * nk;
							if (L[r] == -INFINITY) {
								memset(pr, 0, (size_t)nk * sizeof(float));
								continue;
							}
							int64_t end = mask_row(pr, sg, i0 + r, j0, nk, causal);
#pragma omp simd
							for (int64_t jj = 0; jj < end; jj++)
								pr[jj] = vexpf(pr[jj] - L[r]);
							memset(pr + end, 0, (size_t)(nk - end) * sizeof(float));
						}
						if (dv)
							gemm1(1, 0, nk, D, n, 1.0f, p, nk, go, H * D, 1.0f,
							      dv + (b * T + j0) * K * D + g * D, K * D);
						if (!dq && !dk)
							continue;
						gemm1(0, 1, n, nk, D, 1.0f, go, H * D, vb + koff, K * D, 0.0f,
						      ds, nk);
						for (int64_t r = 0; r < n; r++) {
							float *dr = ds + r * nk, *pr = p + r * nk;
#pragma omp simd
							for (int64_t jj = 0; jj < nk; jj++)
								dr[jj] = pr[jj] * (dr[jj] - dl[r]);
						}
						if (dq)
							gemm1(0, 0, n, D, nk, scale, ds, nk, kb + koff, K * D,
							      1.0f, dq + off, H * D);
						if (dk)
							gemm1(1, 0, nk, D, n, scale, ds, nk, qi, H * D, 1.0f,
							      dk + (b * T + j0) * K * D + g * D, K * D);
					}
				}
		}
}

/* --------------------------------------------------------- elementwise */

static inline float sigmoidf(float x) { return 1.0f / (1.0f + vexpf(-x)); }

void lmk_cpu_silu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = inp[i] * sigmoidf(inp[i]);
}

void lmk_cpu_silu_backward(float *dinp, const float *dout, const float *inp, int64_t n,
			   int assign)
{
	if (!dinp)
		return;
	int set = assign & 1;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++) {
		float x = inp[i], s = sigmoidf(x);
		dinp[i] = (set ? 0.0f : dinp[i]) + dout[i] * s * (1.0f + x * (1.0f - s));
	}
}

/* gelu(x) = x Phi(x), written without the cancellation of 1 + erf or
 * 1 + tanh for negative x (at x = -2.9 that sum is 0.0037, so one ulp of
 * erf became 2e-5 of the result): 0.5 x erfc(-x / sqrt 2), and the tanh
 * form's 0.5 (1 + tanh z) as the logistic of 2z, its 1 - t^2 as
 * 4 s(2z) s(-2z) */
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
			out[i] = x / (1.0f + expf(-2.0f * GELU_K * (x + GELU_C * x * x * x)));
		else
			out[i] = 0.5f * x * erfcf(-x * INV_SQRT2);
	}
}

void lmk_cpu_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n,
			   int approx, int assign)
{
	int set = assign & 1;
	if (!dinp)
		return;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++) {
		float x = inp[i], d;
		if (approx) {
			float z = 2.0f * GELU_K * (x + GELU_C * x * x * x);
			float s = 1.0f / (1.0f + expf(-z)), s1 = 1.0f / (1.0f + expf(z));
			d = s + 2.0f * x * s * s1 * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
		} else {
			d = 0.5f * erfcf(-x * INV_SQRT2) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
		}
		dinp[i] = (set ? 0.0f : dinp[i]) + dout[i] * d;
	}
}

void lmk_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

void lmk_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
			     const float *up, int64_t n, int assign)
{
	int sg = assign & 1, su = assign & 2;
	/* two loops, so that each vectorises, in one parallel region */
#pragma omp parallel if (n > PAR_MIN)
	{
		if (dgate) {
#pragma omp for simd schedule(static) nowait
			for (int64_t i = 0; i < n; i++) {
				float x = gate[i], s = sigmoidf(x);
				dgate[i] = (sg ? 0.0f : dgate[i]) +
					   dout[i] * up[i] * s * (1.0f + x * (1.0f - s));
			}
		}
		if (dup) {
#pragma omp for simd schedule(static) nowait
			for (int64_t i = 0; i < n; i++)
				dup[i] = (su ? 0.0f : dup[i]) + dout[i] * gate[i] * sigmoidf(gate[i]);
		}
	}
}

void lmk_cpu_swiglu_cat_forward(float *out, const float *gu, int64_t N, int64_t F)
{
#pragma omp parallel for schedule(static) if (N * F > PAR_MIN)
	for (int64_t r = 0; r < N; r++) {
		const float *gate = gu + r * 2 * F, *up = gate + F;
		float *y = out + r * F;
#pragma omp simd
		for (int64_t j = 0; j < F; j++)
			y[j] = gate[j] * sigmoidf(gate[j]) * up[j];
	}
}

void lmk_cpu_swiglu_cat_backward(float *dgu, const float *dout, const float *gu, int64_t N,
				 int64_t F, int assign)
{
	int set = assign & 1;
#pragma omp parallel for schedule(static) if (N * F > PAR_MIN)
	for (int64_t r = 0; r < N; r++) {
		const float *gate = gu + r * 2 * F, *up = gate + F, *g = dout + r * F;
		float *dgate = dgu + r * 2 * F, *dup = dgate + F;
#pragma omp simd
		for (int64_t j = 0; j < F; j++) {
			float x = gate[j], s = sigmoidf(x);
			dgate[j] = (set ? 0.0f : dgate[j]) + g[j] * up[j] * s * (1.0f + x * (1.0f - s));
		}
#pragma omp simd
		for (int64_t j = 0; j < F; j++)
			dup[j] = (set ? 0.0f : dup[j]) + g[j] * gate[j] * sigmoidf(gate[j]);
	}
}

void lmk_cpu_add_forward(float *out, const float *a, const float *b, int64_t N, int64_t M)
{
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN)
	for (int64_t i = 0; i < N * M; i++)
		out[i] = a[i] + b[i % M];
}

void lmk_cpu_add_backward(float *da, float *db, const float *dout, int64_t N, int64_t M,
			  int assign)
{
	int sa = assign & 1, sb = assign & 2; /* sb with N == 1 only */
	/* a residual add (N = 1) in one parallel region */
#pragma omp parallel if (N * M > PAR_MIN)
	{
		if (da) {
#pragma omp for simd schedule(static) nowait
			for (int64_t i = 0; i < N * M; i++)
				da[i] = (sa ? 0.0f : da[i]) + dout[i];
		}
		if (db && N == 1) {
#pragma omp for simd schedule(static) nowait
			for (int64_t i = 0; i < M; i++)
				db[i] = (sb ? 0.0f : db[i]) + dout[i];
		}
	}
	if (db && N > 1)
		colsum_acc(db, dout, N, M);
}

void lmk_cpu_mul_forward(float *out, const float *a, const float *b, int64_t N, int64_t M)
{
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN)
	for (int64_t i = 0; i < N * M; i++)
		out[i] = a[i] * b[i % M];
}

void lmk_cpu_mul_backward(float *da, float *db, const float *dout, const float *a,
			  const float *b, int64_t N, int64_t M, int assign)
{
	int sa = assign & 1;
	if (da) {
#pragma omp parallel for schedule(static) if (N * M > PAR_MIN)
		for (int64_t i = 0; i < N * M; i++)
			da[i] = (sa ? 0.0f : da[i]) + dout[i] * b[i % M];
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

void lmk_cpu_scale_backward(float *dinp, const float *dout, float s, int64_t n, int assign)
{
	int set = assign & 1;
	if (!dinp)
		return;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		dinp[i] = (set ? 0.0f : dinp[i]) + s * dout[i];
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
			      uint64_t seed, uint64_t counter, int assign)
{
	if (dinp)
		dropout_apply(dinp, dout, n, p, seed, counter, !(assign & 1));
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
				    int ignore, int64_t count, int assign)
{
	int set = assign & 1;
	if (!dlogits || (count == 0 && !set))
		return;
	float f = count ? dloss[0] / (float)count : 0.0f;
#pragma omp parallel for schedule(static) if (N * V > PAR_MIN)
	for (int64_t n = 0; n < N; n++) {
		float *dx = dlogits + n * V;
		if (targets[n] == ignore || count == 0) {
			if (set) /* a row that adds nothing */
				memset(dx, 0, (size_t)V * sizeof(float));
			continue;
		}
		const float *x = logits + n * V;
#pragma omp simd
		for (int64_t j = 0; j < V; j++)
			dx[j] = (set ? 0.0f : dx[j]) + f * vexpf(x[j] - lse[n]);
		dx[targets[n]] -= f;
	}
}
