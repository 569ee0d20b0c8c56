/* test_lora.c: LoRA and one-sided LoRA adapters (lib/lora.h) and GaLore
 * (lib/galore.h) on a tiny Llama, on the CPU.
 * The duality: N Adam steps of GaLore with projector P equal N Adam steps
 * of a one-sided LoRA adapter whose frozen factor is P (W = W0 + s P B or
 * W0 + s B Q), merged: the same weights to float rounding (the tolerance
 * below), when GaLore's scale is the adapter's s and the adapter's Adam eps
 * is s times GaLore's (Adam over s R is Adam over R with eps / s: the one
 * place the two differ). With a refresh every T steps GaLore equals the
 * adapter merged and re-initialised at the same steps, the moments kept.
 * Also: settings strings, target matching, a fresh adapter changes
 * nothing, an adapter's output equals the merged model's, finite-difference
 * gradients of the factors, PEFT files round-trip, and two adapters over
 * one base. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "galore.h"
#include "llama.h"
#include "lora.h"
#include "ops.h"
#include "optim.h"

#define B_ 2
#define T_ 7

static void tiny(lmk_llama *m, int trainable, uint64_t seed)
{
	lmk_llama_config cfg;
	lmk_llama_config_default(&cfg);
	cfg.hidden_size = 16;
	cfg.intermediate_size = 40;
	cfg.num_hidden_layers = 2;
	cfg.num_attention_heads = 4;
	cfg.num_key_value_heads = 2;
	cfg.head_dim = 4;
	cfg.vocab_size = 29;
	cfg.max_position_embeddings = 64;
	cfg.initializer_range = 0.2f;
	ck_assert_msg(lmk_llama_init(m, &cfg, trainable) == 0, "%s", lmk_errmsg());
	lmk_llama_init_weights(m, seed);
}

static void batch(int32_t *x, int32_t *y, uint64_t seed)
{
	lmk_rng r;
	lmk_rng_init(&r, seed);
	for (int i = 0; i < B_ * T_; i++) {
		x[i] = (int32_t)lmk_rng_below(&r, 29);
		y[i] = (int32_t)lmk_rng_below(&r, 29);
	}
}

/* The loss of one batch; with grad, its backward too. */
static double loss_of(lmk_ctx *c, lmk_llama *m, const int32_t *x, const int32_t *y, int grad)
{
	int64_t sh[2] = {B_, T_};
	lmk_ctx_reset(c);
	c->grad_enabled = grad;
	lmk_tensor *ids = lmk_tensor_wrap(c, LMK_I32, 2, sh, (void *)x);
	lmk_tensor *tg = lmk_tensor_wrap(c, LMK_I32, 2, sh, (void *)y);
	lmk_tensor *l = lmk_cross_entropy(c, lmk_llama_forward(c, m, ids, NULL, NULL), tg, -1, NULL);
	ck_assert_msg(l != NULL, "%s", lmk_errmsg());
	if (grad)
		ck_assert_msg(lmk_backward(c, l, 1.0f) == 0, "%s", lmk_errmsg());
	return ((float *)l->data)[0];
}

static void logits_of(lmk_ctx *c, lmk_llama *m, const int32_t *x, float *out)
{
	int64_t sh[2] = {B_, T_};
	lmk_ctx_reset(c);
	c->grad_enabled = 0;
	lmk_tensor *ids = lmk_tensor_wrap(c, LMK_I32, 2, sh, (void *)x);
	lmk_tensor *y = lmk_llama_forward(c, m, ids, NULL, NULL);
	ck_assert_msg(y != NULL, "%s", lmk_errmsg());
	memcpy(out, y->data, (size_t)y->n * sizeof(float));
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

START_TEST(test_parse)
{
	lmk_lora_config c;
	lmk_lora_config_default(&c);
	ck_assert_int_eq(lmk_lora_config_parse(&c, "lora:r=16,alpha=32,targets=q,v"), 0);
	ck_assert_int_eq(c.r, 16);
	ck_assert(c.alpha == 32.0f);
	ck_assert_str_eq(c.targets, "q,v");
	ck_assert_int_eq(lmk_lora_config_parse(&c, "lora:targets=q,k,v,o,r=4,dropout=0.1"), 0);
	ck_assert_str_eq(c.targets, "q,k,v,o");
	ck_assert_int_eq(c.r, 4);
	ck_assert(fabsf(c.dropout - 0.1f) < 1e-7f);
	ck_assert_int_eq(lmk_lora_config_parse(&c, "onesided:r=2,proj=rademacher,side=left"), 0);
	ck_assert(c.onesided && c.proj == LMK_PROJ_RADEMACHER && c.side == LMK_SIDE_LEFT);
	const char *bad[] = {"lora:r=0", "lora:r=1.5", "lora:rank=3", "lora:alpha=x", "dora:r=2",
			     "lora:r=2,", "lora:=3", "onesided:proj=qr", "lora:dropout=1"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ck_assert_msg(lmk_lora_config_parse(&c, bad[i]) == LMK_EINVAL, "accepted '%s'", bad[i]);
	ck_assert_msg(strstr(lmk_errmsg(), "dropout") != NULL, "%s", lmk_errmsg());

	lmk_galore_config g;
	lmk_galore_config_default(&g);
	ck_assert_int_eq(g.rank, 128);
	ck_assert_int_eq(g.every, 200);
	ck_assert(g.scale == 0.25f && g.proj == LMK_PROJ_SVD);
	ck_assert_int_eq(lmk_galore_config_parse(&g, "galore:r=64,every=50,proj=random,scale=1"), 0);
	ck_assert(g.rank == 64 && g.every == 50 && g.proj == LMK_PROJ_GAUSSIAN && g.scale == 1.0f);
	ck_assert_int_eq(lmk_galore_config_parse(&g, "galore:r=8,layer_r=down/4,layer_r=model.layers.0.*/2"), 0);
	ck_assert_int_eq(g.nlayer_r, 2);
	char buf[512];
	lmk_galore_config_str(&g, buf, sizeof buf);
	ck_assert_str_eq(buf, "galore:r=8,every=50,proj=gaussian,scale=1,layer_r=down/4,"
			 "layer_r=model.layers.0.*/2,targets=q,k,v,o,gate,up,down");
	lmk_galore_config g2;
	lmk_galore_config_default(&g2);
	ck_assert_int_eq(lmk_galore_config_parse(&g2, buf), 0);
	ck_assert(g2.nlayer_r == 2 && g2.layer_r[1] == 2 && !strcmp(g2.layer_pat[1], "model.layers.0.*"));
	{
		lmk_llama m;
		lmk_galore gg;
		lmk_adamw_config ac;
		lmk_adamw_config_default(&ac);
		tiny(&m, 1, 1);
		ck_assert_int_eq(lmk_galore_init(&gg, &m.params, &ac, &g2, 1), 0);
		lmk_tensor *d1 = lmk_params_find(&m.params, "model.layers.1.mlp.down_proj.weight");
		lmk_tensor *q0 = lmk_params_find(&m.params, "model.layers.0.self_attn.q_proj.weight");
		lmk_tensor *q1 = lmk_params_find(&m.params, "model.layers.1.self_attn.q_proj.weight");
		ck_assert_int_eq(gg.slots[d1 - m.params.t].r, 4);
		ck_assert_int_eq(gg.slots[q0 - m.params.t].r, 2);
		ck_assert_int_eq(gg.slots[q1 - m.params.t].r, 8);
		lmk_galore_free(&gg);
		lmk_llama_free(&m);
	}
	ck_assert_int_eq(lmk_galore_config_parse(&g, "galore:layer_r=down"), LMK_EINVAL);
	ck_assert_int_eq(lmk_galore_config_parse(&g, "galore:r=0"), LMK_EINVAL);
	ck_assert_int_eq(lmk_galore_config_parse(&g, "sgd"), LMK_EINVAL);
	ck_assert_int_eq(lmk_galore_config_parse(&g, "adamw"), 0);
	ck_assert_int_eq(g.rank, 0);
}
END_TEST

START_TEST(test_match)
{
	ck_assert(lmk_module_match("q,v", "model.layers.3.self_attn.q_proj"));
	ck_assert(lmk_module_match("q,v", "model.layers.3.self_attn.v_proj"));
	ck_assert(!lmk_module_match("q,v", "model.layers.3.self_attn.k_proj"));
	ck_assert(lmk_module_match("down", "model.layers.0.mlp.down_proj"));
	ck_assert(!lmk_module_match("o", "model.layers.0.mlp.down_proj"));
	ck_assert(lmk_module_match("all", "model.layers.0.mlp.down_proj"));
	ck_assert(!lmk_module_match("all", "lm_head"));
	ck_assert(lmk_module_match("model.layers.1*.mlp.*", "model.layers.12.mlp.up_proj"));
	ck_assert(!lmk_module_match("model.layers.1*.mlp.*", "model.layers.2.mlp.up_proj"));
	ck_assert(lmk_module_match("gate_proj", "model.layers.2.mlp.gate_proj"));
}
END_TEST

/* A fresh LoRA changes nothing; with B drawn at random, the adapted
 * model's logits are those of the base with the adapter merged. */
START_TEST(test_merge)
{
	lmk_llama m;
	lmk_lora a;
	lmk_ctx c;
	lmk_lora_config lc;
	int32_t x[B_ * T_], y[B_ * T_];
	float l0[B_ * T_ * 29], l1[B_ * T_ * 29], l2[B_ * T_ * 29];
	tiny(&m, 0, 1);
	lmk_ctx_init(&c, LMK_DEV_CPU);
	batch(x, y, 2);
	lmk_lora_config_default(&lc);
	ck_assert_int_eq(lmk_lora_config_parse(&lc, "lora:r=3,alpha=5,targets=all"), 0);
	ck_assert_msg(lmk_lora_init(&a, &lc, &m.params, 7) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(a.n, 2 * 7);
	logits_of(&c, &m, x, l0);
	m.lora = &a;
	logits_of(&c, &m, x, l1);
	ck_assert_msg(relerr(l1, l0, sizeof l0 / 4) == 0, "a fresh adapter changed the logits");
	lmk_rng r;
	lmk_rng_init(&r, 3);
	for (int i = 0; i < a.n; i++)
		for (int64_t j = 0; j < a.slots[i].b->n; j++)
			((float *)a.slots[i].b->data)[j] = 0.3f * lmk_rng_normal(&r);
	logits_of(&c, &m, x, l1);
	ck_assert_msg(relerr(l1, l0, sizeof l0 / 4) > 1e-3, "the adapter does nothing");
	ck_assert_int_eq(lmk_lora_merge(&a, 1, 9), 0);
	m.lora = NULL;
	logits_of(&c, &m, x, l2);
	double e = relerr(l2, l1, sizeof l0 / 4);
	ck_assert_msg(e < 1e-5, "merged logits differ from the adapter's by %g", e);
	/* re-initialised: B zero again, so applying it changes nothing */
	m.lora = &a;
	logits_of(&c, &m, x, l1);
	ck_assert_msg(relerr(l1, l2, sizeof l0 / 4) == 0, "re-initialised adapter is not fresh");
	lmk_lora_free(&a);
	lmk_ctx_free(&c);
	lmk_llama_free(&m);
}
END_TEST

/* Central differences of the loss in double steps, against the tape's
 * gradients of the adapter's factors (both of them, and a frozen base). */
START_TEST(test_gradient)
{
	lmk_llama m;
	lmk_lora a;
	lmk_ctx c;
	lmk_lora_config lc;
	int32_t x[B_ * T_], y[B_ * T_];
	tiny(&m, 0, 4);
	lmk_ctx_init(&c, LMK_DEV_CPU);
	batch(x, y, 5);
	lmk_lora_config_default(&lc);
	ck_assert_int_eq(lmk_lora_config_parse(&lc, "lora:r=2,alpha=3,targets=q,v,down"), 0);
	ck_assert_int_eq(lmk_lora_init(&a, &lc, &m.params, 8), 0);
	lmk_rng r;
	lmk_rng_init(&r, 6);
	for (size_t j = 0; j < a.params.n; j++)
		a.params.data[j] += 0.2f * lmk_rng_normal(&r);
	m.lora = &a;
	lmk_params_zero_grad(&a.params);
	loss_of(&c, &m, x, y, 1);
	float *g = malloc(a.params.n * sizeof *g);
	memcpy(g, a.params.grad, a.params.n * sizeof *g);
	double worst = 0;
	for (int k = 0; k < 40; k++) {
		size_t j = (size_t)lmk_rng_below(&r, a.params.n);
		float keep = a.params.data[j];
		const float h = 1e-2f;
		a.params.data[j] = keep + h;
		double lp = loss_of(&c, &m, x, y, 0);
		a.params.data[j] = keep - h;
		double lm = loss_of(&c, &m, x, y, 0);
		a.params.data[j] = keep;
		double fd = (lp - lm) / (2 * h), e = fabs(fd - g[j]) / (fabs(fd) + fabs(g[j]) + 1e-3);
		if (e > worst)
			worst = e;
	}
	ck_assert_msg(worst < 2e-2, "adapter gradient vs finite differences: worst %g", worst);
	free(g);
	lmk_lora_free(&a);
	lmk_ctx_free(&c);
	lmk_llama_free(&m);
}
END_TEST

/* The duality, with a fixed projector (fixed = 1, from the SVD of a first
 * gradient) or refreshed with Gaussian sketches every T steps. */
static void duality(int refresh_every)
{
	const int steps = 12, r = 3;
	const float lr = 3e-3f, s = 0.5f;
	lmk_llama full, base;
	lmk_lora a;
	lmk_galore g;
	lmk_adamw opt;
	lmk_ctx c;
	lmk_lora_config lc;
	lmk_galore_config gc;
	lmk_adamw_config ac;
	int32_t x[B_ * T_], y[B_ * T_];

	tiny(&full, 1, 11);
	tiny(&base, 0, 11);
	lmk_ctx_init(&c, LMK_DEV_CPU);
	lmk_adamw_config_default(&ac);
	ac.weight_decay = 0;
	lmk_galore_config_default(&gc);
	gc.rank = r;
	gc.scale = s;
	gc.every = refresh_every;
	gc.proj = refresh_every ? LMK_PROJ_GAUSSIAN : LMK_PROJ_SVD;
	snprintf(gc.targets, sizeof gc.targets, "all");
	ck_assert_msg(lmk_galore_init(&g, &full.params, &ac, &gc, 77) == 0, "%s", lmk_errmsg());

	lmk_lora_config_default(&lc);
	lc.onesided = 1;
	lc.r = r;
	lc.alpha = s * (float)r; /* s = alpha / r */
	lc.proj = gc.proj;
	snprintf(lc.targets, sizeof lc.targets, "all");
	ck_assert_msg(lmk_lora_init(&a, &lc, &base.params, 5) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(a.n, g.ntarget);
	base.lora = &a;
	lmk_adamw_config lac = ac;
	lac.eps = ac.eps * s;
	ck_assert_int_eq(lmk_adamw_init(&opt, &a.params, &lac), 0);

	lmk_rng lrng; /* the adapter's draws: GaLore's generator, same seed */
	lmk_rng_init(&lrng, 77);
	if (!refresh_every) {
		/* P from the SVD of the full model's first gradient, for both */
		batch(x, y, 100);
		lmk_params_zero_grad(&full.params);
		loss_of(&c, &full, x, y, 1);
		ck_assert_int_eq(lmk_lora_set_projectors(&a, full.params.grad, &lrng), 0);
		for (int i = 0; i < a.n; i++) {
			const lmk_lora_slot *sl = &a.slots[i];
			int ti = (int)(sl->base - base.params.t);
			const lmk_tensor *P = sl->frozen == LMK_SIDE_LEFT ? sl->b : sl->a;
			ck_assert_int_eq(lmk_galore_set_projector(&g, ti, P->data), 0);
		}
	}
	for (int k = 0; k < steps; k++) {
		batch(x, y, 1000 + (uint64_t)k);
		/* GaLore over the whole model, the non-targets' gradients zeroed
		 * (Adam then leaves them: the adapter's base is frozen) */
		lmk_params_zero_grad(&full.params);
		loss_of(&c, &full, x, y, 1);
		for (int i = 0; i < full.params.nt; i++)
			if (g.slots[i].mode < 0)
				memset(full.params.t[i].grad, 0, (size_t)full.params.t[i].n * 4);
		ck_assert_msg(lmk_galore_step(&g, lr) == 0, "%s", lmk_errmsg());
		/* the adapter: merge and new projectors where GaLore refreshes */
		if (refresh_every && k % refresh_every == 0) {
			if (k > 0)
				ck_assert_int_eq(lmk_lora_merge(&a, 1, 0), 0);
			ck_assert_int_eq(lmk_lora_set_projectors(&a, NULL, &lrng), 0);
		}
		lmk_params_zero_grad(&a.params);
		loss_of(&c, &base, x, y, 1);
		lmk_adamw_step(&opt, lr);
	}
	ck_assert_int_eq(lmk_lora_merge(&a, 0, 0), 0);
	double e = relerr(base.params.data, full.params.data, full.params.n);
	/* and the weights did move, far more than the difference */
	float *w0 = NULL;
	lmk_llama init;
	tiny(&init, 0, 11);
	w0 = init.params.data;
	double moved = relerr(full.params.data, w0, full.params.n);
	fprintf(stderr, "test_lora: duality (%s): %d steps, weights moved %.3g, GaLore vs one-sided "
		"LoRA %.3g\n", refresh_every ? "refresh every 4, gaussian" : "fixed svd projector",
		steps, moved, e);
	ck_assert_msg(moved > 1e-3, "the weights hardly moved (%g)", moved);
	ck_assert_msg(e < 1e-6, "GaLore and one-sided LoRA differ by %g", e);
	lmk_llama_free(&init);
	lmk_adamw_free(&opt);
	lmk_lora_free(&a);
	lmk_galore_free(&g);
	lmk_ctx_free(&c);
	lmk_llama_free(&full);
	lmk_llama_free(&base);
}

START_TEST(test_duality_fixed) { duality(0); }
END_TEST

START_TEST(test_duality_refresh) { duality(4); }
END_TEST

/* Projectors: SVD's are orthonormal and span G's top singular subspace;
 * rsvd's nearly so; sketches have the stated scale. */
START_TEST(test_projectors)
{
	const int O = 23, I = 37, r = 4;
	float *G = malloc(sizeof(float) * O * I), *P = malloc(sizeof(float) * I * r);
	lmk_rng rng;
	lmk_rng_init(&rng, 1);
	/* G = U diag(10, 8, 6, 4) V^T + small noise: rank 4 dominant */
	for (int i = 0; i < O * I; i++)
		G[i] = 0.01f * lmk_rng_normal(&rng);
	for (int k = 0; k < r; k++) {
		float u[64], v[64];
		for (int i = 0; i < O; i++)
			u[i] = lmk_rng_normal(&rng) / sqrtf((float)O);
		for (int j = 0; j < I; j++)
			v[j] = lmk_rng_normal(&rng) / sqrtf((float)I);
		for (int i = 0; i < O; i++)
			for (int j = 0; j < I; j++)
				G[i * I + j] += (10.0f - 2 * k) * u[i] * v[j];
	}
	for (int proj = LMK_PROJ_SVD; proj <= LMK_PROJ_RSVD; proj++) {
		for (int left = 0; left < 2; left++) {
			ck_assert_msg(lmk_proj_make(P, left, G, O, I, r, proj, &rng) == 0, "%s",
				      lmk_errmsg());
			int n = left ? O : I;
			/* orthonormal: P^T P = I (left: columns; right: rows) */
			double worst = 0;
			for (int a = 0; a < r; a++)
				for (int b = 0; b < r; b++) {
					double d = 0;
					for (int i = 0; i < n; i++)
						d += left ? (double)P[i * r + a] * P[i * r + b]
							  : (double)P[a * I + i] * P[b * I + i];
					worst = fmax(worst, fabs(d - (a == b)));
				}
			ck_assert_msg(worst < 1e-4, "%s %s: not orthonormal (%g)", lmk_proj_name(proj),
				      left ? "left" : "right", worst);
			/* captures G: ||P P^T G|| / ||G|| close to 1 */
			double num = 0, den = 0;
			for (int i = 0; i < O * I; i++)
				den += (double)G[i] * G[i];
			if (left) {
				for (int j = 0; j < I; j++)
					for (int a = 0; a < r; a++) {
						double d = 0;
						for (int i = 0; i < O; i++)
							d += P[i * r + a] * G[i * I + j];
						num += d * d;
					}
			} else {
				for (int i = 0; i < O; i++)
					for (int a = 0; a < r; a++) {
						double d = 0;
						for (int j = 0; j < I; j++)
							d += P[a * I + j] * G[i * I + j];
						num += d * d;
					}
			}
			ck_assert_msg(num / den > 0.999, "%s: captures %.4f of G", lmk_proj_name(proj),
				      num / den);
		}
	}
	ck_assert_int_eq(lmk_proj_make(P, 1, NULL, O, I, r, LMK_PROJ_SVD, &rng), LMK_EINVAL);
	ck_assert_int_eq(lmk_proj_make(P, 1, G, O, I, 30, LMK_PROJ_SVD, &rng), LMK_EINVAL);
	ck_assert_int_eq(lmk_proj_make(P, 1, NULL, O, I, r, LMK_PROJ_RADEMACHER, &rng), 0);
	for (int i = 0; i < O * r; i++)
		ck_assert(fabsf(fabsf(P[i]) - 1.0f / sqrtf((float)O)) < 1e-6f);
	G[5] = NAN;
	ck_assert_int_ne(lmk_proj_make(P, 1, G, O, I, r, LMK_PROJ_SVD, &rng), 0);
	free(G);
	free(P);
}
END_TEST

/* PEFT files: saved, loaded over the same base, the same logits; bad files
 * are refused with the file named. */
START_TEST(test_files)
{
	char dir[] = "/tmp/test_lora.XXXXXX";
	ck_assert(mkdtemp(dir) != NULL);
	lmk_llama m;
	lmk_lora a, b;
	lmk_ctx c;
	lmk_lora_config lc;
	int32_t x[B_ * T_], y[B_ * T_];
	float l1[B_ * T_ * 29], l2[B_ * T_ * 29];
	tiny(&m, 0, 21);
	lmk_ctx_init(&c, LMK_DEV_CPU);
	batch(x, y, 22);
	lmk_lora_config_default(&lc);
	ck_assert_int_eq(lmk_lora_config_parse(&lc, "lora:r=4,alpha=8,targets=q,k,v,o,gate,up,down"), 0);
	ck_assert_int_eq(lmk_lora_init(&a, &lc, &m.params, 23), 0);
	for (size_t j = 0; j < a.params.n; j++)
		a.params.data[j] += 0.05f * (float)((j * 7919) % 13) - 0.3f;
	m.lora = &a;
	logits_of(&c, &m, x, l1);
	ck_assert_msg(lmk_lora_save(&a, dir, "tiny") == 0, "%s", lmk_errmsg());
	ck_assert_msg(lmk_lora_load(&b, dir, &m.params) == 0, "%s", lmk_errmsg());
	ck_assert_int_eq(b.n, a.n);
	ck_assert_int_eq(b.cfg.r, 4);
	ck_assert(b.scale == a.scale);
	m.lora = &b;
	logits_of(&c, &m, x, l2);
	ck_assert_msg(relerr(l2, l1, sizeof l1 / 4) == 0, "loaded adapter differs");
	/* two adapters over one base, switched by a pointer; the base untouched */
	m.lora = NULL;
	logits_of(&c, &m, x, l2);
	ck_assert(relerr(l2, l1, sizeof l1 / 4) > 1e-4);
	m.lora = &a;
	logits_of(&c, &m, x, l2);
	ck_assert(relerr(l2, l1, sizeof l1 / 4) == 0);
	lmk_lora_free(&b);

	/* a config that asks for what we do not do, and a tensor of no module */
	char path[512], cmd[1200];
	snprintf(path, sizeof path, "%s/adapter_config.json", dir);
	snprintf(cmd, sizeof cmd, "sed -i 's/\"use_dora\": false/\"use_dora\": true/' %s", path);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(lmk_lora_load(&b, dir, &m.params), LMK_EUNSUP);
	ck_assert_msg(strstr(lmk_errmsg(), "use_dora") && strstr(lmk_errmsg(), "adapter_config.json"),
		      "%s", lmk_errmsg());
	snprintf(cmd, sizeof cmd, "sed -i 's/\"use_dora\": true/\"use_dora\": false/' %s", path);
	ck_assert_int_eq(system(cmd), 0);
	lmk_llama other;
	lmk_llama_config oc = m.cfg;
	oc.num_hidden_layers = 1;
	ck_assert_int_eq(lmk_llama_init(&other, &oc, 0), 0);
	ck_assert_int_eq(lmk_lora_load(&b, dir, &other.params), LMK_EFORMAT);
	ck_assert_msg(strstr(lmk_errmsg(), "no linear layer 'model.layers.1."), "%s", lmk_errmsg());
	lmk_llama_free(&other);
	snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
	FILE *f = fopen(path, "r+b");
	ck_assert(f && ftruncate(fileno(f), 100) == 0);
	fclose(f);
	ck_assert_int_lt(lmk_lora_load(&b, dir, &m.params), 0);
	ck_assert_msg(strstr(lmk_errmsg(), "adapter_model.safetensors"), "%s", lmk_errmsg());
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
	lmk_lora_free(&a);
	lmk_ctx_free(&c);
	lmk_llama_free(&m);
}
END_TEST

Suite *lora_suite(void)
{
	Suite *s = suite_create("lora");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_parse);
	tcase_add_test(tc, test_match);
	tcase_add_test(tc, test_merge);
	tcase_add_test(tc, test_gradient);
	tcase_add_test(tc, test_projectors);
	tcase_add_test(tc, test_duality_fixed);
	tcase_add_test(tc, test_duality_refresh);
	tcase_add_test(tc, test_files);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(lora_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
