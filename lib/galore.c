/* galore.c: GaLore and the projectors of one-sided LoRA (galore.h).
 * Row-major float32 throughout; LAPACK (OpenBLAS's) is column-major, so a
 * row-major G (O,I) is handed to it as the column-major G^T (I,O). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "galore.h"
#include "lora.h"
#if LMK_CUDA
#include "../cuda/cuda.h"
#include "../cuda/blas_cuda.h"
#include "../cuda/ops_cuda.h"
#include "../cuda/optim_cuda.h"
#endif

/* LAPACK, as OpenBLAS exports it. */
void sgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, float *a,
	     const int *lda, float *s, float *u, const int *ldu, float *vt, const int *ldvt,
	     float *work, const int *lwork, int *info);
void sgeqrf_(const int *m, const int *n, float *a, const int *lda, float *tau, float *work,
	     const int *lwork, int *info);
void sorgqr_(const int *m, const int *n, const int *k, float *a, const int *lda,
	     const float *tau, float *work, const int *lwork, int *info);

static const char *const proj_names[] = {"svd", "rsvd", "gaussian", "rademacher"};

int lmk_proj_parse(const char *s, int *proj)
{
	if (!strcmp(s, "random")) {
		*proj = LMK_PROJ_GAUSSIAN;
		return 0;
	}
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, proj_names[i])) {
			*proj = i;
			return 0;
		}
	return lmk_err(LMK_EINVAL, "projector '%s': expected svd, rsvd, random, gaussian or "
		       "rademacher", s);
}

const char *lmk_proj_name(int proj)
{
	return proj >= 0 && proj < 4 ? proj_names[proj] : "?";
}

int lmk_proj_needs_grad(int proj) { return proj == LMK_PROJ_SVD || proj == LMK_PROJ_RSVD; }

/* The first r left singular vectors of the column-major (m,n) matrix a
 * (destroyed), into u (m,r) column-major, i.e. the first r columns of U.
 * @return : 0 or a negative code */
static int svd_left_cm(float *u, float *a, int m, int n, int r)
{
	int k = m < n ? m : n, lwork = -1, info = 0;
	float q, *s = malloc((size_t)k * sizeof *s);
	float *uu = malloc((size_t)m * (size_t)k * sizeof *uu);
	if (!s || !uu) {
		free(s);
		free(uu);
		return lmk_err(LMK_ENOMEM, "svd: cannot allocate %d x %d", m, k);
	}
	sgesvd_("S", "N", &m, &n, a, &m, s, uu, &m, NULL, &k, &q, &lwork, &info);
	lwork = info == 0 ? (int)q : 0;
	float *work = lwork > 0 ? malloc((size_t)lwork * sizeof *work) : NULL;
	if (!work) {
		free(s);
		free(uu);
		return info ? lmk_err(LMK_ENUM, "svd: LAPACK sgesvd query failed (info %d)", info)
			    : lmk_err(LMK_ENOMEM, "svd: cannot allocate the workspace");
	}
	sgesvd_("S", "N", &m, &n, a, &m, s, uu, &m, NULL, &k, work, &lwork, &info);
	free(work);
	free(s);
	if (info != 0) {
		free(uu);
		return lmk_err(LMK_ENUM, "svd: LAPACK sgesvd failed (info %d): a NaN or infinite "
			       "gradient?", info);
	}
	memcpy(u, uu, (size_t)m * (size_t)r * sizeof *u);
	free(uu);
	return 0;
}

/* Orthonormalises the columns of the column-major (m,k) matrix y in
 * place (Householder QR, then Q). */
static int orth_cm(float *y, int m, int k)
{
	int lwork = -1, info = 0;
	float q, *tau = malloc((size_t)k * sizeof *tau);
	if (!tau)
		return lmk_err(LMK_ENOMEM, "qr: cannot allocate");
	sgeqrf_(&m, &k, y, &m, tau, &q, &lwork, &info);
	lwork = (int)q;
	float q2;
	int l2 = -1;
	sorgqr_(&m, &k, &k, y, &m, tau, &q2, &l2, &info);
	if ((int)q2 > lwork)
		lwork = (int)q2;
	float *work = malloc((size_t)(lwork > 1 ? lwork : 1) * sizeof *work);
	if (!work) {
		free(tau);
		return lmk_err(LMK_ENOMEM, "qr: cannot allocate the workspace");
	}
	sgeqrf_(&m, &k, y, &m, tau, work, &lwork, &info);
	if (info == 0)
		sorgqr_(&m, &k, &k, y, &m, tau, work, &lwork, &info);
	free(work);
	free(tau);
	return info ? lmk_err(LMK_ENUM, "qr: LAPACK failed (info %d)", info) : 0;
}

/* P (O,r) row-major: the first r left singular vectors of G (O,I), exactly
 * (svd) or through a randomized range finder (rsvd, Halko et al.: the
 * range of G Omega with 8 extra columns, one QR, the SVD of the small
 * projected matrix). */
static int left_vectors(float *P, const float *G, int64_t rows, int64_t cols, int r, int rsvd,
			lmk_rng *rng)
{
	int rc = 0;
	if (!rsvd || r + 8 >= (int)(rows < cols ? rows : cols)) {
		/* LAPACK wants G column-major */
		float *a = malloc((size_t)(rows * cols) * sizeof *a);
		float *u = malloc((size_t)(rows * r) * sizeof *u);
		if (!a || !u) {
			free(a);
			free(u);
			return lmk_err(LMK_ENOMEM, "svd: cannot allocate %lld x %lld", (long long)rows,
				       (long long)cols);
		}
		for (int64_t i = 0; i < rows; i++)
			for (int64_t j = 0; j < cols; j++)
				a[i + j * rows] = G[i * cols + j];
		rc = svd_left_cm(u, a, (int)rows, (int)cols, r);
		for (int64_t i = 0; rc == 0 && i < rows; i++)
			for (int k = 0; k < r; k++)
				P[i * r + k] = u[i + (int64_t)k * rows];
		free(a);
		free(u);
		return rc;
	}
	const int k = r + 8;
	float *om = malloc((size_t)(cols * k) * sizeof *om);
	float *y = malloc((size_t)(rows * k) * sizeof *y);  /* column-major (O,k) */
	float *b = malloc((size_t)(k * cols) * sizeof *b);  /* column-major (k,I) */
	float *ub = malloc((size_t)(k * r) * sizeof *ub);
	if (!om || !y || !b || !ub) {
		rc = lmk_err(LMK_ENOMEM, "rsvd: cannot allocate");
		goto out;
	}
	for (int64_t i = 0; i < cols * k; i++)
		om[i] = lmk_rng_normal(rng);
	/* y = G om (O,k), column-major. G row-major is G^T column-major (I,O)
	 * with ld I, so G is its transpose; om row-major (I,k) likewise. */
	cblas_sgemm(CblasColMajor, CblasTrans, CblasTrans, (int)rows, k, (int)cols, 1.0f, G, (int)cols, om,
		    k, 0.0f, y, (int)rows);
	if ((rc = orth_cm(y, (int)rows, k)) < 0)
		goto out;
	/* b = y^T G (k,I), column-major */
	cblas_sgemm(CblasColMajor, CblasTrans, CblasTrans, k, (int)cols, (int)rows, 1.0f, y, (int)rows, G,
		    (int)cols, 0.0f, b, k);
	if ((rc = svd_left_cm(ub, b, k, (int)cols, r)) < 0)
		goto out;
	/* P = y ub (O,r) row-major: y and ub column-major are the transposes
	 * of row-major (k,O) and (r,k) */
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, (int)rows, r, k, 1.0f, y, (int)rows, ub, k,
		    0.0f, P, r);
out:
	free(om);
	free(y);
	free(b);
	free(ub);
	return rc;
}

int lmk_proj_make(float *out, int left, const float *G, int64_t rows, int64_t cols, int r, int proj,
		  lmk_rng *rng)
{
	if (r < 1 || rows < 1 || cols < 1)
		return lmk_err(LMK_EINVAL, "projector: expected r, rows, cols >= 1, found %d, %lld, %lld", r,
			       (long long)rows, (long long)cols);
	if (proj == LMK_PROJ_GAUSSIAN || proj == LMK_PROJ_RADEMACHER) {
		const int64_t n = r * (left ? rows : cols);
		const float sd = 1.0f / sqrtf((float)(left ? rows : cols));
		for (int64_t i = 0; i < n; i++)
			out[i] = proj == LMK_PROJ_GAUSSIAN ? sd * lmk_rng_normal(rng)
							   : (lmk_rng_u32(rng) & 1 ? sd : -sd);
		return 0;
	}
	if (!G)
		return lmk_err(LMK_EINVAL, "projector %s needs a gradient", lmk_proj_name(proj));
	if (r > (rows < cols ? rows : cols))
		return lmk_err(LMK_EINVAL, "projector %s: rank %d exceeds min(%lld, %lld)",
			       lmk_proj_name(proj), r, (long long)rows, (long long)cols);
	/* LAPACK may never return on a NaN */
	for (int64_t i = 0; i < rows * cols; i++)
		if (!isfinite(G[i]))
			return lmk_err(LMK_ENUM, "projector %s: the gradient has a non-finite value at "
				       "(%lld,%lld)", lmk_proj_name(proj), (long long)(i / cols),
				       (long long)(i % cols));
	if (left)
		return left_vectors(out, G, rows, cols, r, proj == LMK_PROJ_RSVD, rng);
	/* right: Q (r,I) = the first r left vectors of G^T, transposed */
	float *gt = malloc((size_t)(rows * cols) * sizeof *gt), *pt = malloc((size_t)(cols * r) * sizeof *pt);
	int rc = gt && pt ? 0 : lmk_err(LMK_ENOMEM, "projector: cannot allocate");
	for (int64_t i = 0; rc == 0 && i < rows; i++)
		for (int64_t j = 0; j < cols; j++)
			gt[j * rows + i] = G[i * cols + j];
	if (rc == 0)
		rc = left_vectors(pt, gt, cols, rows, r, proj == LMK_PROJ_RSVD, rng);
	for (int64_t j = 0; rc == 0 && j < cols; j++)
		for (int k = 0; k < r; k++)
			out[(int64_t)k * cols + j] = pt[j * r + k];
	free(gt);
	free(pt);
	return rc;
}

/* ---- configuration ---------------------------------------------------- */

void lmk_galore_config_default(lmk_galore_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->rank = 128;
	cfg->every = 200;
	cfg->proj = LMK_PROJ_SVD;
	cfg->scale = 0.25f;
	snprintf(cfg->targets, sizeof cfg->targets, "q,k,v,o,gate,up,down");
}

int lmk_galore_config_parse(lmk_galore_config *cfg, const char *spec)
{
	char kind[32];
	const char *rest;
	int rc = lmk_spec_begin(spec, kind, sizeof kind, &rest);
	if (rc < 0)
		return rc;
	if (strcmp(kind, "galore") && strcmp(kind, "adamw"))
		return lmk_err(LMK_EINVAL, "optimizer '%s': expected adamw or galore:KEY=VALUE,...",
			       spec);
	if (!strcmp(kind, "adamw")) {
		cfg->rank = 0;
		return *rest ? lmk_err(LMK_EINVAL, "optimizer '%s': adamw takes no settings", spec) : 0;
	}
	char key[32], val[LMK_LORA_TARGETS];
	while ((rc = lmk_spec_next(&rest, key, sizeof key, val, sizeof val)) > 0) {
		char *end;
		if (!strcmp(key, "r") || !strcmp(key, "rank")) {
			long v = strtol(val, &end, 10);
			if (*end || v < 1 || v > 65536)
				return lmk_err(LMK_EINVAL, "galore: r=%s: expected 1..65536", val);
			cfg->rank = (int)v;
		} else if (!strcmp(key, "every")) {
			long v = strtol(val, &end, 10);
			if (*end || v < 0 || v > 1000000000)
				return lmk_err(LMK_EINVAL, "galore: every=%s: expected a step count >= 0",
					       val);
			cfg->every = (int)v;
		} else if (!strcmp(key, "proj")) {
			if ((rc = lmk_proj_parse(val, &cfg->proj)) < 0)
				return rc;
		} else if (!strcmp(key, "scale")) {
			float v = strtof(val, &end);
			if (*end || !(v > 0) || !isfinite(v))
				return lmk_err(LMK_EINVAL, "galore: scale=%s: expected a number > 0", val);
			cfg->scale = v;
		} else if (!strcmp(key, "targets")) {
			snprintf(cfg->targets, sizeof cfg->targets, "%s", val);
		} else if (!strcmp(key, "layer_r")) {
			char *slash = strrchr(val, '/');
			long v = slash ? strtol(slash + 1, &end, 10) : 0;
			if (!slash || slash == val || !slash[1] || *end || v < 1 || v > 65536 ||
			    (size_t)(slash - val) >= sizeof cfg->layer_pat[0])
				return lmk_err(LMK_EINVAL, "galore: layer_r=%s: expected PATTERN/RANK", val);
			if (cfg->nlayer_r == 8)
				return lmk_err(LMK_EINVAL, "galore: more than 8 layer_r settings");
			snprintf(cfg->layer_pat[cfg->nlayer_r], sizeof cfg->layer_pat[0], "%.*s",
				 (int)(slash - val), val);
			cfg->layer_r[cfg->nlayer_r++] = (int)v;
		} else {
			return lmk_err(LMK_EINVAL, "galore: unknown setting '%s' (expected r, every, "
				       "proj, scale, targets, layer_r)", key);
		}
	}
	return rc;
}

void lmk_galore_config_str(const lmk_galore_config *cfg, char *buf, size_t size)
{
	if (cfg->rank <= 0)
		snprintf(buf, size, "adamw");
	else
	{
		int n = snprintf(buf, size, "galore:r=%d,every=%d,proj=%s,scale=%g", cfg->rank,
				 cfg->every, lmk_proj_name(cfg->proj), cfg->scale);
		for (int i = 0; i < cfg->nlayer_r && n > 0 && (size_t)n < size; i++)
			n += snprintf(buf + n, size - (size_t)n, ",layer_r=%s/%d", cfg->layer_pat[i],
				      cfg->layer_r[i]);
		/* targets last: its value runs to the end */
		if (n > 0 && (size_t)n < size)
			snprintf(buf + n, size - (size_t)n, ",targets=%s", cfg->targets);
	}
}

/* ---- the optimizer ---------------------------------------------------- */

static float *zalloc(size_t n)
{
	void *p = NULL;
	size_t bytes = ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
	if (posix_memalign(&p, 64, bytes) != 0)
		return NULL;
	memset(p, 0, bytes);
	return p;
}

void lmk_galore_free(lmk_galore *g)
{
	/* nslots, not p->nt: p may be freed already */
	for (int i = 0; g->slots && i < g->nslots; i++) {
		lmk_galore_slot *s = &g->slots[i];
#if LMK_CUDA
		if (g->dev == LMK_DEV_CUDA) {
			lmk_cuda_mem_free(s->P);
			lmk_cuda_mem_free(s->m);
			lmk_cuda_mem_free(s->v);
			continue;
		}
#endif
		free(s->P);
		free(s->m);
		free(s->v);
	}
#if LMK_CUDA
	if (g->dev == LMK_DEV_CUDA)
		lmk_cuda_mem_free(g->dwork);
#endif
	free(g->slots);
	free(g->work);
	memset(g, 0, sizeof *g);
}

static int galloc(lmk_galore *g, float **p, size_t n)
{
#if LMK_CUDA
	if (g->dev == LMK_DEV_CUDA) {
		int rc = lmk_cuda_mem_alloc((void **)p, (n ? n : 1) * sizeof(float));
		return rc < 0 ? rc : lmk_cuda_memset(g->backend, *p, 0, (n ? n : 1) * sizeof(float));
	}
#endif
	*p = zalloc(n);
	return *p ? 0 : lmk_err(LMK_ENOMEM, "galore: cannot allocate %zu floats", n);
}

int lmk_galore_init(lmk_galore *g, lmk_params *p, const lmk_adamw_config *acfg,
		    const lmk_galore_config *cfg, uint64_t seed)
{
	memset(g, 0, sizeof *g);
	if (!p || !p->data || !p->grad)
		return lmk_err(LMK_EINVAL, "galore: parameters are not allocated or not trainable");
	if (cfg->rank < 1)
		return lmk_err(LMK_EINVAL, "galore: expected a rank >= 1, found %d", cfg->rank);
	g->cfg = *cfg;
	g->acfg = *acfg;
	g->p = p;
	g->dev = p->dev;
	g->backend = p->backend;
	lmk_rng_init(&g->rng, seed);
	g->slots = calloc((size_t)(p->nt ? p->nt : 1), sizeof *g->slots);
	if (!g->slots)
		return lmk_err(LMK_ENOMEM, "galore: cannot allocate %d slots", p->nt);
	g->nslots = p->nt;
	size_t work = 0, dwork = (size_t)1 << 20;
	int rc = 0;
	for (int i = 0; i < p->nt && rc == 0; i++) {
		const lmk_tensor *t = &p->t[i];
		lmk_galore_slot *s = &g->slots[i];
		char mod[256];
		s->mode = -1;
		if (t->ndim == 2 && lmk_module_of(t->name, mod, sizeof mod) &&
		    lmk_module_match(cfg->targets, mod)) {
			s->rows = t->shape[0];
			s->cols = t->shape[1];
			int want = cfg->rank;
			for (int k = 0; k < cfg->nlayer_r; k++)
				if (lmk_module_match(cfg->layer_pat[k], mod)) {
					want = cfg->layer_r[k];
					break;
				}
			s->r = (int)(want < s->rows ? want : s->rows);
			if (s->r > s->cols)
				s->r = (int)s->cols;
			s->mode = lmk_galore_left(s->rows, s->cols);
			s->nm = (size_t)s->r * (size_t)(s->mode ? s->cols : s->rows);
			size_t np = (size_t)s->r * (size_t)(s->mode ? s->rows : s->cols);
			rc = galloc(g, &s->P, np);
			/* host: R and N; on a device, a copy of G and P for the
			 * refresh (made on the host), R and N on the device */
			size_t w = g->dev == LMK_DEV_CUDA ? (size_t)t->n + np : 2 * s->nm;
			if (w > work)
				work = w;
			if (2 * s->nm > dwork)
				dwork = 2 * s->nm;
			g->ntarget++;
		} else {
			s->nm = (size_t)t->n;
		}
		if (rc == 0)
			rc = galloc(g, &s->m, s->nm);
		if (rc == 0)
			rc = galloc(g, &s->v, s->nm);
	}
	if (rc == 0 && g->ntarget == 0)
		rc = lmk_err(LMK_EINVAL, "galore: no 2-d weight matches the targets '%s'",
			     cfg->targets);
	if (work < 65536) /* plain tensors are updated in pieces of it */
		work = 65536;
	if (rc == 0 && !(g->work = zalloc(work)))
		rc = lmk_err(LMK_ENOMEM, "galore: cannot allocate %zu floats of scratch", work);
	g->nwork = work;
	if (rc == 0 && g->dev == LMK_DEV_CUDA && (rc = galloc(g, &g->dwork, dwork)) == 0)
		g->ndwork = dwork;
	if (rc < 0)
		lmk_galore_free(g);
	return rc;
}

int lmk_galore_set_projector(lmk_galore *g, int i, const float *P)
{
	if (i < 0 || i >= g->p->nt || g->slots[i].mode < 0)
		return lmk_err(LMK_EINVAL, "galore: tensor %d is not a target", i);
	const lmk_galore_slot *s = &g->slots[i];
	size_t bytes = (size_t)s->r * (size_t)(s->mode ? s->rows : s->cols) * sizeof(float);
	g->fixed = 1;
#if LMK_CUDA
	if (g->dev == LMK_DEV_CUDA)
		return lmk_cuda_upload(g->backend, s->P, P, bytes);
#endif
	memcpy(s->P, P, bytes);
	return 0;
}

size_t lmk_galore_state_bytes(const lmk_galore *g)
{
	size_t n = 0;
	for (int i = 0; i < g->p->nt; i++) {
		const lmk_galore_slot *s = &g->slots[i];
		n += 2 * s->nm;
		if (s->mode >= 0)
			n += (size_t)s->r * (size_t)(s->mode ? s->rows : s->cols);
	}
	return n * sizeof(float);
}

/* Adam's moments and direction over n elements of gradient x, with the
 * arithmetic of lmk_adamw_step (optim.c), writing the direction
 * m_hat/(sqrt(v_hat)+eps) times bc1 (step_size carries 1/bc1) into out. */
static void adam_direction(float *out, const float *x, float *m, float *v, size_t n,
			   const lmk_adamw_config *c, float bc2_sqrt)
{
	const float w1 = (float)(1.0 - (double)c->beta1), w2 = (float)(1.0 - (double)c->beta2);
	const float b2 = c->beta2, eps = c->eps;
	const int small_w = 1.0 - (double)c->beta1 < 0.5;
	#pragma omp parallel for schedule(static) if (n > 65536)
	for (size_t i = 0; i < n; i++) {
		float gi = x[i];
		if (small_w)
			m[i] = m[i] + w1 * (gi - m[i]);
		else
			m[i] = gi - (gi - m[i]) * (1.0f - w1);
		v[i] = v[i] * b2 + w2 * (gi * gi);
		out[i] = m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
	}
}

/* A new projector for slot i from its current gradient. On a device an
 * SVD projector comes from cuSOLVER (cuda/svd.cu) when the library can be
 * loaded; otherwise, and for rsvd, the gradient comes to the host and
 * LAPACK makes P there (every T steps, so the copy is amortised), then P
 * goes back. */
static int refresh(lmk_galore *g, int i)
{
	lmk_galore_slot *s = &g->slots[i];
	const lmk_tensor *t = &g->p->t[i];
	if (g->dev == LMK_DEV_CPU)
		return lmk_proj_make(s->P, s->mode, t->grad, s->rows, s->cols, s->r, g->cfg.proj,
				     &g->rng);
#if LMK_CUDA
	if (g->cfg.proj == LMK_PROJ_SVD && g->svd_where != 1) {
		/* cuSOLVER on the device when it can be loaded, else LAPACK here */
		int rc = lmk_cuda_svd_projector(g->backend, s->P, t->grad, (int)s->rows, (int)s->cols,
						s->r, s->mode);
		if (rc != LMK_EUNSUP) {
			g->svd_where = 2;
			return rc;
		}
		g->svd_where = 1;
	}
	float *G = g->work, *P = g->work + t->n;
	size_t np = (size_t)s->r * (size_t)(s->mode ? s->rows : s->cols);
	int rc = 0;
	if (lmk_proj_needs_grad(g->cfg.proj))
		rc = lmk_cuda_download(g->backend, G, t->grad, (size_t)t->n * sizeof(float));
	if (rc == 0)
		rc = lmk_proj_make(P, s->mode, lmk_proj_needs_grad(g->cfg.proj) ? G : NULL, s->rows,
				   s->cols, s->r, g->cfg.proj, &g->rng);
	return rc < 0 ? rc : lmk_cuda_upload(g->backend, s->P, P, np * sizeof(float));
#else
	return lmk_err(LMK_EUNSUP, "galore: cuda in a cpu-only build");
#endif
}

#if LMK_CUDA
/* The step of lmk_galore_step on a device: the same arithmetic through
 * cuBLAS and the kernels of blas_cuda.h, queued on p's stream. */
static int step_device(lmk_galore *g, float lr, int again, float step_size, float bc2_sqrt)
{
	lmk_params *p = g->p;
	void *be = g->backend;
	const lmk_adamw_config *c = &g->acfg;
	const float w1 = (float)(1.0 - (double)c->beta1), w2 = (float)(1.0 - (double)c->beta2);
	const int small_w = 1.0 - (double)c->beta1 < 0.5;
	const float keep = (float)(1.0 - (double)lr * (double)c->weight_decay);
	int rc = 0;
	for (int i = 0; rc == 0 && i < p->nt; i++) {
		lmk_galore_slot *s = &g->slots[i];
		lmk_tensor *t = &p->t[i];
		float *w = t->data, *gr = t->grad;
		const int decay = t->ndim >= 2 && c->weight_decay != 0.0f;
		if (s->mode < 0) {
			for (size_t j0 = 0; rc == 0 && j0 < (size_t)t->n; j0 += g->ndwork) {
				size_t n = (size_t)t->n - j0 < g->ndwork ? (size_t)t->n - j0 : g->ndwork;
				rc = lmk_cuda_adam_direction(be, g->dwork, gr + j0, s->m + j0, s->v + j0, n,
							     w1, 1.0f - w1, small_w, w2, c->beta2, c->eps,
							     bc2_sqrt);
				if (rc == 0)
					rc = lmk_cuda_adam_apply(be, w + j0, g->dwork,
								 t->lp ? (uint16_t *)t->lp + j0 : NULL, n,
								 decay, keep, -step_size);
			}
			continue;
		}
		if (again && (rc = refresh(g, i)) < 0)
			return lmk_err_wrap(rc, "galore: %s", t->name);
		float *R = g->dwork, *N = g->dwork + s->nm;
		const int nr = (int)s->rows, nc = (int)s->cols, r = s->r;
		rc = s->mode ? lmk_cuda_sgemm(be, 1, 0, r, nc, nr, 1.0f, s->P, r, gr, nc, 0.0f, R, nc)
			     : lmk_cuda_sgemm(be, 0, 1, nr, r, nc, 1.0f, gr, nc, s->P, nc, 0.0f, R, r);
		if (rc == 0)
			rc = lmk_cuda_adam_direction(be, N, R, s->m, s->v, s->nm, w1, 1.0f - w1, small_w,
						     w2, c->beta2, c->eps, bc2_sqrt);
		if (rc == 0 && decay)
			rc = lmk_cuda_grad_scale(be, w, (size_t)t->n, keep);
		const float a = -step_size * g->cfg.scale;
		if (rc == 0)
			rc = s->mode ? lmk_cuda_sgemm(be, 0, 0, nr, nc, r, a, s->P, r, N, nc, 1.0f, w, nc)
				     : lmk_cuda_sgemm(be, 0, 0, nr, nc, r, a, N, r, s->P, nc, 1.0f, w, nc);
		if (rc == 0 && t->lp)
			rc = lmk_cuda_convert(be, t->lp, LMK_BF16, w, LMK_F32, t->n);
	}
	return rc;
}
#endif

int lmk_galore_step(lmk_galore *g, float lr)
{
	const int again = !g->fixed && (g->t == 0 || (g->cfg.every > 0 && g->t % g->cfg.every == 0));
	g->t++;
	const double bc1 = 1.0 - pow((double)g->acfg.beta1, (double)g->t);
	const double bc2 = 1.0 - pow((double)g->acfg.beta2, (double)g->t);
	const float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
	lmk_params *p = g->p;
	int rc;
#if LMK_CUDA
	if (g->dev == LMK_DEV_CUDA)
		return step_device(g, lr, again, step_size, bc2_sqrt);
#endif
	for (int i = 0; i < p->nt; i++) {
		lmk_galore_slot *s = &g->slots[i];
		lmk_tensor *t = &p->t[i];
		float *w = t->data, *gr = t->grad;
		const int decay = t->ndim >= 2 && g->acfg.weight_decay != 0.0f;
		const float keep = (float)(1.0 - (double)lr * (double)g->acfg.weight_decay);
		if (s->mode < 0) {
			/* plain AdamW, in adamw_span's order: decay, moments, update */
			float *d = g->work;
			for (int64_t j0 = 0; j0 < t->n; j0 += (int64_t)g->nwork) {
				int64_t n = t->n - j0 < (int64_t)g->nwork ? t->n - j0 : (int64_t)g->nwork;
				adam_direction(d, gr + j0, s->m + j0, s->v + j0, (size_t)n, &g->acfg, bc2_sqrt);
				for (int64_t j = 0; j < n; j++) {
					if (decay)
						w[j0 + j] *= keep;
					w[j0 + j] = w[j0 + j] + (-step_size) * d[j];
				}
			}
			continue;
		}
		if (again && (rc = refresh(g, i)) < 0)
			return lmk_err_wrap(rc, "galore: %s", t->name);
		float *R = g->work, *N = g->work + s->nm;
		const int rows = (int)s->rows, cols = (int)s->cols, r = s->r;
		if (s->mode) /* R = P^T G: (r,O)(O,I) */
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, cols, rows, 1.0f, s->P, r, gr,
				    cols, 0.0f, R, cols);
		else /* R = G Q^T: (O,I)(I,r) */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r, cols, 1.0f, gr, cols, s->P,
				    cols, 0.0f, R, r);
		adam_direction(N, R, s->m, s->v, s->nm, &g->acfg, bc2_sqrt);
		if (decay)
			for (int64_t j = 0; j < t->n; j++)
				w[j] *= keep;
		const float a = -step_size * g->cfg.scale;
		if (s->mode) /* W += a P N: (O,r)(r,I) */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, r, a, s->P, r, N, cols,
				    1.0f, w, cols);
		else /* W += a N Q: (O,r)(r,I) */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, r, a, N, r, s->P, cols,
				    1.0f, w, cols);
	}
	return 0;
}

/* ---- state files ------------------------------------------------------- */

/* n floats at src (on g's device) into the frame as name, copied. */
static int put(const lmk_galore *g, lmk_frame *f, const char *name, const float *src, int ndim,
	       const int64_t *shape, size_t n)
{
	const float *h = src;
	float *tmp = NULL;
#if LMK_CUDA
	if (g->dev == LMK_DEV_CUDA) {
		if (!(tmp = malloc((n ? n : 1) * sizeof *tmp)))
			return lmk_err(LMK_ENOMEM, "galore: cannot allocate %zu floats", n);
		int rc = lmk_cuda_download(g->backend, tmp, src, n * sizeof *tmp);
		if (rc < 0) {
			free(tmp);
			return rc;
		}
		h = tmp;
	}
#endif
	int rc = lmk_frame_add_copy(f, name, LMK_F32, ndim, shape, h);
	free(tmp);
	return rc;
}

int lmk_galore_to_frame(const lmk_galore *g, lmk_frame *f)
{
	char name[512];
	int64_t t = g->t, r[2] = {(int64_t)g->rng.seed, (int64_t)lmk_rng_tell(&g->rng)};
	const int64_t two = 2;
	int rc = lmk_frame_add_copy(f, "galore.t", LMK_I64, 0, NULL, &t);
	if (rc == 0)
		rc = lmk_frame_add_copy(f, "galore.rng", LMK_I64, 1, &two, r);
	for (int i = 0; rc == 0 && i < g->p->nt; i++) {
		const lmk_galore_slot *s = &g->slots[i];
		const char *pn = g->p->t[i].name;
		int64_t nm = (int64_t)s->nm;
		snprintf(name, sizeof name, "galore.m/%s", pn);
		rc = put(g, f, name, s->m, 1, &nm, s->nm);
		snprintf(name, sizeof name, "galore.v/%s", pn);
		if (rc == 0)
			rc = put(g, f, name, s->v, 1, &nm, s->nm);
		if (rc < 0 || s->mode < 0)
			continue;
		int64_t sh[2] = {s->mode ? s->rows : s->r, s->mode ? s->r : s->cols};
		snprintf(name, sizeof name, "galore.P/%s", pn);
		rc = put(g, f, name, s->P, 2, sh, (size_t)(sh[0] * sh[1]));
	}
	return rc;
}

/* Tensor name of st: F32 (or I64 when i64) with n elements, into dst (on
 * g's device). */
static int get(lmk_galore *g, const lmk_frame *st, const char *path, const char *name, void *dst,
	       size_t n, int i64)
{
	const lmk_ftensor *t = lmk_frame_find(st, name);
	lmk_dtype dt = i64 ? LMK_I64 : LMK_F32;
	if (!t)
		return lmk_err(LMK_EFORMAT, "%s: no tensor '%s' (saved with another optimizer?)", path,
			       name);
	if (t->dtype != dt || (size_t)lmk_ftensor_numel(t) != n)
		return lmk_err(LMK_EFORMAT, "%s: tensor '%s': expected %s with %zu elements", path, name,
			       lmk_dtype_name(dt), n);
#if LMK_CUDA
	if (g->dev == LMK_DEV_CUDA && !i64) {
		/* frame data may be unaligned: stage through an aligned copy */
		float *tmp = malloc((n ? n : 1) * sizeof *tmp);
		if (!tmp)
			return lmk_err(LMK_ENOMEM, "galore: cannot allocate %zu floats", n);
		memcpy(tmp, t->data, n * sizeof *tmp);
		int rc = lmk_cuda_upload(g->backend, dst, tmp, n * sizeof *tmp);
		free(tmp);
		return rc;
	}
#endif
	memcpy(dst, t->data, n * (i64 ? 8 : 4));
	return 0;
}

int lmk_galore_from_frame(lmk_galore *g, const lmk_frame *st, const char *path)
{
	char name[512];
	int64_t t, r[2];
	int rc = get(g, st, path, "galore.t", &t, 1, 1);
	if (rc == 0)
		rc = get(g, st, path, "galore.rng", r, 2, 1);
	if (rc < 0)
		return rc;
	if (t < 0 || r[1] < 0)
		return lmk_err(LMK_EFORMAT, "%s: galore.t or galore.rng is negative", path);
	for (int i = 0; rc == 0 && i < g->p->nt; i++) {
		lmk_galore_slot *s = &g->slots[i];
		const char *pn = g->p->t[i].name;
		snprintf(name, sizeof name, "galore.m/%s", pn);
		rc = get(g, st, path, name, s->m, s->nm, 0);
		snprintf(name, sizeof name, "galore.v/%s", pn);
		if (rc == 0)
			rc = get(g, st, path, name, s->v, s->nm, 0);
		if (rc < 0 || s->mode < 0)
			continue;
		snprintf(name, sizeof name, "galore.P/%s", pn);
		rc = get(g, st, path, name, s->P,
			 (size_t)s->r * (size_t)(s->mode ? s->rows : s->cols), 0);
	}
	if (rc < 0)
		return rc;
	g->t = t;
	lmk_rng_init(&g->rng, (uint64_t)r[0]);
	lmk_rng_seek(&g->rng, (uint64_t)r[1]);
	return 0;
}
