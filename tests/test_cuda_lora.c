/* test_cuda_lora.c: adapters and GaLore on the GPU against the CPU.
 *  - LoRA: a tiny Llama's frozen base and a LoRA adapter on the device (F32
 *    compute), 6 AdamW steps of the adapter: losses and factors equal the
 *    CPU's to 1e-4 relative; then merging into the base on the device
 *    equals merging on the CPU; and 6 steps in BF16 lower the loss.
 *  - GaLore: 6 steps over the whole model with Gaussian projectors
 *    refreshed every 3 steps (the same draws on both sides), on the device
 *    and on the CPU: the same weights to 1e-4; with SVD projectors (made on
 *    the host from the device's gradients) the loss goes down.
 * LMK_TEST_SMALL=1 (for compute-sanitizer): 4 steps instead of 6 (the
 * projectors still refreshed once), a model of one layer instead of two.
 * Exits 77 without a device or in a CPU-only build. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "galore.h"
#include "llama.h"
#include "lora.h"
#include "ops.h"
#include "optim.h"

#if LMK_CUDA
#include "../cuda/blas_cuda.h"
#include "../cuda/cuda.h"

#define B_ 2
#define T_ 9
#define V_ 37
#define STEPS 6

static int g_steps = STEPS; /* LMK_TEST_SMALL: 4 */
static int g_layers = 2;     /* LMK_TEST_SMALL: 1 */

static void tiny(lmk_llama *m, int trainable)
{
	lmk_llama_config cfg;
	lmk_llama_config_default(&cfg);
	cfg.hidden_size = 48;
	cfg.intermediate_size = 80;
	cfg.num_hidden_layers = g_layers;
	cfg.num_attention_heads = 4;
	cfg.num_key_value_heads = 2;
	cfg.head_dim = 12;
	cfg.vocab_size = V_;
	cfg.max_position_embeddings = 64;
	cfg.initializer_range = 0.1f;
	ck_assert_msg(lmk_llama_init(m, &cfg, trainable) == 0, "%s", lmk_errmsg());
	lmk_llama_init_weights(m, 5);
}

static void batch(int32_t *x, int32_t *y, uint64_t seed)
{
	lmk_rng r;
	lmk_rng_init(&r, seed);
	for (int i = 0; i < B_ * T_; i++) {
		x[i] = (int32_t)lmk_rng_below(&r, V_);
		y[i] = (x[i] * 7 + 3) % V_; /* learnable */
	}
}

static double step_loss(lmk_ctx *c, lmk_llama *m, const int32_t *x, const int32_t *y)
{
	int64_t sh[2] = {B_, T_};
	lmk_ctx_reset(c);
	c->grad_enabled = 1;
	lmk_tensor *ids = lmk_tensor_upload(c, LMK_I32, 2, sh, x);
	lmk_tensor *tg = lmk_tensor_upload(c, LMK_I32, 2, sh, y);
	lmk_tensor *l = lmk_cross_entropy(c, lmk_llama_forward(c, m, ids, NULL, NULL), tg, -1, NULL);
	ck_assert_msg(l != NULL, "%s", lmk_errmsg());
	ck_assert_msg(lmk_backward(c, l, 1.0f) == 0, "%s", lmk_errmsg());
	float v;
	ck_assert_msg(lmk_tensor_read_f32(c, l, 0, &v) == 0, "%s", lmk_errmsg());
	return v;
}

static double relerr(const float *a, const float *b, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(a[i]) || !isfinite(b[i]))
			return INFINITY;
		num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		den += (double)b[i] * b[i];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float *host_of(const lmk_params *p)
{
	float *h = malloc(p->n * sizeof *h);
	ck_assert_msg(lmk_params_copy_to_host(p, 0, h) == 0, "%s", lmk_errmsg());
	return h;
}

static void lora_run(lmk_dtype dt)
{
	lmk_llama m[2];
	lmk_lora a[2];
	lmk_adamw o[2];
	lmk_ctx c[2];
	lmk_lora_config lc;
	lmk_adamw_config ac;
	int32_t x[B_ * T_], y[B_ * T_];
	double loss[2][STEPS];

	lmk_lora_config_default(&lc);
	ck_assert_int_eq(lmk_lora_config_parse(&lc, "lora:r=4,alpha=8,targets=q,k,v,o,gate,up,down"), 0);
	lmk_adamw_config_default(&ac);
	for (int d = 0; d < 2; d++) {
		tiny(&m[d], 0);
		ck_assert_int_eq(lmk_lora_init(&a[d], &lc, &m[d].params, 9), 0);
		/* B non-zero so that A's gradient is too from the start */
		for (int i = 0; i < a[d].n; i++)
			for (int64_t j = 0; j < a[d].slots[i].b->n; j++)
				((float *)a[d].slots[i].b->data)[j] = 0.01f * (float)((j * 37 + i) % 11) - 0.05f;
		m[d].lora = &a[d];
		if (d == 0) {
			ck_assert_int_eq(lmk_ctx_init(&c[0], LMK_DEV_CPU), 0);
		} else {
			ck_assert_msg(lmk_ctx_init_ex(&c[1], LMK_DEV_CUDA, 0, dt) == 0, "%s", lmk_errmsg());
			ck_assert_msg(lmk_params_to_device(&m[1].params, &c[1]) == 0, "%s", lmk_errmsg());
			ck_assert_msg(lmk_params_to_device(&a[1].params, &c[1]) == 0, "%s", lmk_errmsg());
		}
		ck_assert_int_eq(lmk_adamw_init(&o[d], &a[d].params, &ac), 0);
	}
	for (int k = 0; k < g_steps; k++) {
		batch(x, y, 100 + (uint64_t)k);
		for (int d = 0; d < 2; d++) {
			lmk_params_zero_grad(&a[d].params);
			loss[d][k] = step_loss(&c[d], &m[d], x, y);
			lmk_adamw_step(&o[d], 3e-2f);
		}
		ck_assert_int_eq(lmk_ctx_sync(&c[1]), 0);
	}
	float *h = host_of(&a[1].params);
	double e = relerr(h, a[0].params.data, a[0].params.n);
	const int last = g_steps - 1;
	printf("test_cuda_lora: LoRA %s: %d steps, losses %.5f -> %.5f (cpu %.5f -> %.5f), factors "
	       "vs cpu %.2e\n", lmk_dtype_name(dt), g_steps, loss[1][0], loss[1][last], loss[0][0],
	       loss[0][last], e);
	if (dt == LMK_F32) {
		for (int k = 0; k < g_steps; k++)
			ck_assert_msg(fabs(loss[1][k] - loss[0][k]) <= 1e-4 * fabs(loss[0][k]),
				      "step %d: loss %.7f on the gpu, %.7f on the cpu", k, loss[1][k],
				      loss[0][k]);
		ck_assert_msg(e < 1e-4, "LoRA factors after %d steps: %.2e from the cpu's", g_steps, e);
		/* merging on each side */
		ck_assert_int_eq(lmk_lora_merge(&a[0], 1, 3), 0);
		ck_assert_msg(lmk_lora_merge(&a[1], 1, 3) == 0, "%s", lmk_errmsg());
		float *hb = host_of(&m[1].params);
		double eb = relerr(hb, m[0].params.data, m[0].params.n);
		printf("test_cuda_lora: merged base vs cpu %.2e\n", eb);
		ck_assert_msg(eb < 1e-5, "merged base: %.2e from the cpu's", eb);
		free(hb);
	} else {
		ck_assert_msg(loss[1][last] < loss[1][0], "BF16 LoRA: the loss went from %g to %g",
			      loss[1][0], loss[1][last]);
	}
	free(h);
	for (int d = 1; d >= 0; d--) {
		lmk_adamw_free(&o[d]);
		lmk_lora_free(&a[d]);
		lmk_llama_free(&m[d]);
		lmk_ctx_free(&c[d]);
	}
}

START_TEST(test_lora_f32) { lora_run(LMK_F32); }
END_TEST

START_TEST(test_lora_bf16) { lora_run(LMK_BF16); }
END_TEST

static void galore_run(int proj)
{
	lmk_llama m[2];
	lmk_galore g[2];
	lmk_ctx c[2];
	lmk_galore_config gc;
	lmk_adamw_config ac;
	int32_t x[B_ * T_], y[B_ * T_];
	double loss[2][STEPS];

	lmk_galore_config_default(&gc);
	gc.rank = 8;
	gc.every = 3;
	gc.proj = proj;
	lmk_adamw_config_default(&ac);
	for (int d = 0; d < 2; d++) {
		tiny(&m[d], 1);
		if (d == 0) {
			ck_assert_int_eq(lmk_ctx_init(&c[0], LMK_DEV_CPU), 0);
		} else {
			ck_assert_msg(lmk_ctx_init_ex(&c[1], LMK_DEV_CUDA, 0, LMK_F32) == 0, "%s",
				      lmk_errmsg());
			ck_assert_msg(lmk_params_to_device(&m[1].params, &c[1]) == 0, "%s", lmk_errmsg());
		}
		ck_assert_msg(lmk_galore_init(&g[d], &m[d].params, &ac, &gc, 21) == 0, "%s",
			      lmk_errmsg());
	}
	for (int k = 0; k < g_steps; k++) {
		batch(x, y, 200 + (uint64_t)k);
		for (int d = 0; d < 2; d++) {
			lmk_params_zero_grad(&m[d].params);
			loss[d][k] = step_loss(&c[d], &m[d], x, y);
			ck_assert_msg(lmk_galore_step(&g[d], 1e-2f) == 0, "%s", lmk_errmsg());
		}
		ck_assert_int_eq(lmk_ctx_sync(&c[1]), 0);
	}
	float *h = host_of(&m[1].params);
	double e = relerr(h, m[0].params.data, m[0].params.n);
	const int last = g_steps - 1;
	printf("test_cuda_lora: GaLore %s: %d steps, losses %.5f -> %.5f (cpu %.5f -> %.5f), weights "
	       "vs cpu %.2e%s\n", lmk_proj_name(proj), g_steps, loss[1][0], loss[1][last], loss[0][0],
	       loss[0][last], e,
	       g[1].svd_where == 2 ? " (projectors by cuSOLVER)"
	       : g[1].svd_where == 1 ? " (projectors by LAPACK on the host)" : "");
	if (proj == LMK_PROJ_GAUSSIAN)
		ck_assert_msg(e < 1e-4, "GaLore weights after %d steps: %.2e from the cpu's", g_steps,
			      e);
	else
		ck_assert_msg(loss[1][last] < loss[1][0], "GaLore svd: the loss went from %g to %g",
			      loss[1][0], loss[1][last]);
	free(h);
	for (int d = 1; d >= 0; d--) {
		lmk_galore_free(&g[d]);
		lmk_llama_free(&m[d]);
		lmk_ctx_free(&c[d]);
	}
}

START_TEST(test_galore_gaussian) { galore_run(LMK_PROJ_GAUSSIAN); }
END_TEST

START_TEST(test_galore_svd) { galore_run(LMK_PROJ_SVD); }
END_TEST

/* cuSOLVER's projector spans LAPACK's subspace: P P^T (left) or Q^T Q
 * (right) equal to 1e-4, for a gradient with a clear gap after rank r. */
START_TEST(test_svd_projector)
{
	if (!lmk_cuda_svd_available()) {
		printf("test_cuda_lora: cuSOLVER not loadable here: SVD projectors are made on the "
		       "host (skipped)\n");
		return;
	}
	const int r = 5;
	const int shapes[2][2] = {{48, 80}, {80, 48}};
	lmk_ctx c;
	ck_assert_int_eq(lmk_ctx_init_ex(&c, LMK_DEV_CUDA, 0, LMK_F32), 0);
	for (int si = 0; si < 2; si++) {
		const int R = shapes[si][0], C = shapes[si][1], left = R < C, n = left ? R : C;
		float *G = malloc(sizeof(float) * R * C), *ph = malloc(sizeof(float) * n * r);
		float *pd = malloc(sizeof(float) * n * r);
		lmk_rng rng;
		lmk_rng_init(&rng, 9 + (uint64_t)si);
		for (int i = 0; i < R * C; i++)
			G[i] = 0.01f * lmk_rng_normal(&rng);
		for (int k = 0; k < r; k++) {
			float u[128], v[128];
			for (int i = 0; i < R; i++)
				u[i] = lmk_rng_normal(&rng);
			for (int j = 0; j < C; j++)
				v[j] = lmk_rng_normal(&rng);
			for (int i = 0; i < R; i++)
				for (int j = 0; j < C; j++)
					G[i * C + j] += (float)(r - k) * u[i] * v[j] / 10.0f;
		}
		ck_assert_int_eq(lmk_proj_make(ph, left, G, R, C, r, LMK_PROJ_SVD, &rng), 0);
		void *dg, *dp;
		ck_assert_int_eq(lmk_cuda_mem_alloc(&dg, sizeof(float) * R * C), 0);
		ck_assert_int_eq(lmk_cuda_mem_alloc(&dp, sizeof(float) * n * r), 0);
		ck_assert_int_eq(lmk_cuda_upload(c.backend, dg, G, sizeof(float) * R * C), 0);
		ck_assert_msg(lmk_cuda_svd_projector(c.backend, dp, dg, R, C, r, left) == 0, "%s",
			      lmk_errmsg());
		ck_assert_int_eq(lmk_cuda_download(c.backend, pd, dp, sizeof(float) * n * r), 0);
		double num = 0, den = 0;
		for (int a = 0; a < n; a++)
			for (int b = 0; b < n; b++) {
				double h = 0, d = 0;
				for (int k = 0; k < r; k++) {
					h += left ? (double)ph[a * r + k] * ph[b * r + k]
						  : (double)ph[k * n + a] * ph[k * n + b];
					d += left ? (double)pd[a * r + k] * pd[b * r + k]
						  : (double)pd[k * n + a] * pd[k * n + b];
				}
				num += (h - d) * (h - d);
				den += h * h;
			}
		double e = sqrt(num / den);
		printf("test_cuda_lora: cuSOLVER %s projector of %d x %d, rank %d: subspace vs LAPACK "
		       "%.2e\n", left ? "left" : "right", R, C, r, e);
		ck_assert_msg(e < 1e-4, "cuSOLVER's projector spans another subspace (%.2e)", e);
		lmk_cuda_mem_free(dg);
		lmk_cuda_mem_free(dp);
		free(G);
		free(ph);
		free(pd);
	}
	lmk_ctx_free(&c);
}
END_TEST

int main(void)
{
	if (lmk_cuda_device_count() == 0) {
		printf("test_cuda_lora: skipped: no CUDA device on this machine\n");
		return 77;
	}
	const char *sm = getenv("LMK_TEST_SMALL");
	if (sm && *sm && strcmp(sm, "0") != 0) {
		g_steps = 4;
		g_layers = 1;
		printf("test_cuda_lora: LMK_TEST_SMALL: %d steps instead of %d, one layer\n", g_steps,
		       STEPS);
		fflush(stdout);
	}
	Suite *s = suite_create("cuda_lora");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_lora_f32);
	tcase_add_test(tc, test_lora_bf16);
	tcase_add_test(tc, test_galore_gaussian);
	tcase_add_test(tc, test_galore_svd);
	tcase_add_test(tc, test_svd_projector);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
#else
int main(void)
{
	printf("test_cuda_lora: skipped: CPU-only build (CUDA=0)\n");
	return 77;
}
#endif
