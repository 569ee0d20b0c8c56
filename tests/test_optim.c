/* test_optim.c: AdamW against a hand computation in double (one step and
 * several), no weight decay on 1-d tensors, clipping by global norm as
 * torch.nn.utils.clip_grad_norm_, results independent of the thread count,
 * and the learning-rate schedules. (tests/test_llama.c checks ten AdamW
 * steps of a whole model against torch.optim.AdamW.) */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "optim.h"

/* Shapes hitting 1, odd sizes, and one large enough for the parallel path. */
static const struct { int ndim; int64_t shape[2]; } shapes[] = {
	{1, {1, 0}}, {2, {1, 1}}, {2, {3, 5}}, {1, {17, 0}}, {2, {33, 31}}, {1, {7, 0}},
	{2, {300, 257}},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static void make_params(lmk_params *p)
{
	char name[32];
	lmk_params_init(p, 1);
	for (int i = 0; i < NSHAPES; i++) {
		snprintf(name, sizeof name, "t%d", i);
		ck_assert_int_eq(lmk_params_add(p, name, shapes[i].ndim, shapes[i].shape), i);
	}
	ck_assert_int_eq(lmk_params_alloc(p), 0);
	for (int i = 0; i < p->nt; i++) {
		float *d = p->t[i].data;
		for (int64_t j = 0; j < p->t[i].n; j++)
			d[j] = sinf(0.37f * (float)(j + 11 * i)) + 0.1f;
	}
}

static void fill_grad(lmk_params *p, int step)
{
	for (int i = 0; i < p->nt; i++) {
		float *g = p->t[i].grad;
		for (int64_t j = 0; j < p->t[i].n; j++)
			g[j] = 0.5f * cosf(0.11f * (float)j + 0.7f * (float)i + 1.3f * (float)step);
	}
}

/* AdamW by the book, in double. */
typedef struct { double *p, *m, *v; } ref_state;

static void ref_step(ref_state *r, const float *g, size_t n, int t, double lr, double b1,
		     double b2, double eps, double wd)
{
	for (size_t j = 0; j < n; j++) {
		r->p[j] *= 1.0 - lr * wd;
		r->m[j] = b1 * r->m[j] + (1 - b1) * g[j];
		r->v[j] = b2 * r->v[j] + (1 - b2) * (double)g[j] * g[j];
		double mh = r->m[j] / (1 - pow(b1, t)), vh = r->v[j] / (1 - pow(b2, t));
		r->p[j] -= lr * mh / (sqrt(vh) + eps);
	}
}

static void check_adamw(int steps, float b1, float b2)
{
	lmk_params p;
	lmk_adamw o;
	lmk_adamw_config cfg = {b1, b2, 1e-8f, 0.1f};
	const double lr = 0.01;
	make_params(&p);
	ck_assert_int_eq(lmk_adamw_init(&o, &p, &cfg), 0);
	ref_state r[NSHAPES];
	for (int i = 0; i < NSHAPES; i++) {
		size_t n = (size_t)p.t[i].n;
		r[i].p = malloc(n * sizeof(double));
		r[i].m = calloc(n, sizeof(double));
		r[i].v = calloc(n, sizeof(double));
		for (size_t j = 0; j < n; j++)
			r[i].p[j] = ((float *)p.t[i].data)[j];
		ck_assert_int_eq(o.decay[i], shapes[i].ndim >= 2);
	}
	for (int s = 1; s <= steps; s++) {
		fill_grad(&p, s);
		for (int i = 0; i < NSHAPES; i++)
			ref_step(&r[i], p.t[i].grad, (size_t)p.t[i].n, s, lr, b1, b2, 1e-8,
				 shapes[i].ndim >= 2 ? 0.1 : 0.0);
		lmk_adamw_step(&o, (float)lr);
	}
	ck_assert_int_eq(o.t, steps);
	for (int i = 0; i < NSHAPES; i++) {
		const float *d = p.t[i].data;
		double worst = 0;
		for (int64_t j = 0; j < p.t[i].n; j++) {
			double e = fabs(d[j] - r[i].p[j]);
			if (e > worst)
				worst = e;
		}
		/* float32 arithmetic on values near 1 moved by about lr per step */
		ck_assert_msg(worst < 2e-6 * steps, "tensor %d: max abs error %g", i, worst);
		free(r[i].p);
		free(r[i].m);
		free(r[i].v);
	}
	lmk_adamw_free(&o);
	lmk_params_free(&p);
}

START_TEST(test_adamw_one_step)
{
	check_adamw(1, 0.9f, 0.999f);
}
END_TEST

START_TEST(test_adamw_many_steps)
{
	check_adamw(7, 0.9f, 0.95f);
	check_adamw(3, 0.3f, 0.5f); /* lerp's other branch */
}
END_TEST

/* One step worked by hand for one element: g = 0.5, p = 2, lr 0.1,
 * betas (0.9, 0.999): m̂ = 0.5, v̂ = 0.25, the Adam step is lr * 0.5 / 0.5
 * = 0.1 whatever g; decay multiplies p by 1 - lr wd = 0.99 first. */
START_TEST(test_adamw_hand)
{
	lmk_params p;
	lmk_adamw o;
	lmk_adamw_config cfg;
	int64_t s2[2] = {1, 1}, s1[1] = {1};
	lmk_params_init(&p, 1);
	lmk_params_add(&p, "w", 2, s2);
	lmk_params_add(&p, "b", 1, s1);
	ck_assert_int_eq(lmk_params_alloc(&p), 0);
	lmk_adamw_config_default(&cfg);
	ck_assert_float_eq(cfg.beta1, 0.9f);
	ck_assert_float_eq(cfg.beta2, 0.999f);
	ck_assert_float_eq(cfg.eps, 1e-8f);
	ck_assert_float_eq(cfg.weight_decay, 0.01f);
	cfg.weight_decay = 0.1f;
	ck_assert_int_eq(lmk_adamw_init(&o, &p, &cfg), 0);
	float *w = p.t[0].data, *b = p.t[1].data;
	w[0] = b[0] = 2.0f;
	((float *)p.t[0].grad)[0] = ((float *)p.t[1].grad)[0] = 0.5f;
	lmk_adamw_step(&o, 0.1f);
	ck_assert_double_eq_tol(w[0], 2.0 * 0.99 - 0.1, 1e-6);
	ck_assert_double_eq_tol(b[0], 2.0 - 0.1, 1e-6); /* 1-d: no decay */
	/* zero gradient: only the decay moves the matrix */
	lmk_adamw_free(&o);
	ck_assert_int_eq(lmk_adamw_init(&o, &p, &cfg), 0);
	lmk_params_zero_grad(&p);
	w[0] = b[0] = 1.0f;
	lmk_adamw_step(&o, 0.1f);
	ck_assert_float_eq_tol(w[0], 0.99f, 1e-7f);
	ck_assert_float_eq(b[0], 1.0f);
	lmk_adamw_free(&o);

	cfg.beta1 = 1.0f;
	ck_assert_int_eq(lmk_adamw_init(&o, &p, &cfg), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "beta"));
	lmk_params_free(&p);
}
END_TEST

START_TEST(test_clip)
{
	lmk_params p;
	make_params(&p);
	fill_grad(&p, 0);
	double ss = 0;
	for (size_t j = 0; j < p.n; j++)
		ss += (double)p.grad[j] * p.grad[j];
	double norm = sqrt(ss);
	float *copy = malloc(p.n * sizeof(float));
	memcpy(copy, p.grad, p.n * sizeof(float));

	/* max_norm 0 only measures; a large max_norm changes nothing */
	ck_assert_double_eq_tol(lmk_clip_grad_norm(&p, 0), norm, 1e-9 * norm);
	ck_assert_double_eq_tol(lmk_clip_grad_norm(&p, 10 * norm), norm, 1e-9 * norm);
	ck_assert_int_eq(memcmp(copy, p.grad, p.n * sizeof(float)), 0);

	double max = 1.0, coef = max / (norm + 1e-6);
	ck_assert_double_eq_tol(lmk_clip_grad_norm(&p, max), norm, 1e-9 * norm);
	for (size_t j = 0; j < p.n; j++)
		ck_assert_float_eq_tol(p.grad[j], copy[j] * coef, 1e-7);
	ck_assert_double_eq_tol(lmk_clip_grad_norm(&p, 0), max * norm / (norm + 1e-6), 1e-6);

	lmk_params_zero_grad(&p);
	ck_assert_double_eq(lmk_clip_grad_norm(&p, 1.0), 0.0);
	free(copy);
	lmk_params_free(&p);
}
END_TEST

/* The same bits with 1 thread and with 4. */
START_TEST(test_threads)
{
	lmk_params p[2];
	lmk_adamw o[2];
	lmk_adamw_config cfg = {0.9f, 0.95f, 1e-8f, 0.1f};
	double norm[2];
	int saved = omp_get_max_threads();
	for (int k = 0; k < 2; k++) {
		omp_set_num_threads(k ? 4 : 1);
		make_params(&p[k]);
		ck_assert_int_eq(lmk_adamw_init(&o[k], &p[k], &cfg), 0);
		for (int s = 0; s < 3; s++) {
			fill_grad(&p[k], s);
			norm[k] = lmk_clip_grad_norm(&p[k], 1.0);
			lmk_adamw_step(&o[k], 1e-3f);
		}
	}
	omp_set_num_threads(saved);
	ck_assert(norm[0] == norm[1]);
	ck_assert_int_eq(memcmp(p[0].data, p[1].data, p[0].n * sizeof(float)), 0);
	ck_assert_int_eq(memcmp(o[0].v, o[1].v, p[0].n * sizeof(float)), 0);
	for (int k = 0; k < 2; k++) {
		lmk_adamw_free(&o[k]);
		lmk_params_free(&p[k]);
	}
}
END_TEST

START_TEST(test_schedule)
{
	lmk_schedule s = {LMK_SCHED_COSINE, 1.0f, 0.1f, 10, 110};
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 0), 0.1f, 1e-7f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 4), 0.5f, 1e-7f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 9), 1.0f, 1e-7f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 10), 1.0f, 1e-7f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 60), 0.55f, 1e-6f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 35), 0.1f + 0.45f * (1 + cosf(M_PI / 4)), 1e-6f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 109), 0.1f + 0.45f * (1 + cos(M_PI * 0.99)),
			       1e-6f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 110), 0.1f, 1e-7f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 1000), 0.1f, 1e-7f);
	for (int64_t i = 10; i < 110; i++) /* non-increasing after warm-up */
		ck_assert(lmk_schedule_lr(&s, i + 1) <= lmk_schedule_lr(&s, i));

	s.kind = LMK_SCHED_LINEAR;
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 4), 0.5f, 1e-7f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 10), 1.0f, 1e-7f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 60), 0.55f, 1e-6f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 85), 0.325f, 1e-6f);
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 110), 0.1f, 1e-7f);

	s.kind = LMK_SCHED_CONSTANT;
	ck_assert_float_eq_tol(lmk_schedule_lr(&s, 4), 0.5f, 1e-7f);
	ck_assert_float_eq(lmk_schedule_lr(&s, 10), 1.0f);
	ck_assert_float_eq(lmk_schedule_lr(&s, 5000), 1.0f);

	lmk_schedule nw = {LMK_SCHED_COSINE, 3e-4f, 0.0f, 0, 1};
	ck_assert_float_eq(lmk_schedule_lr(&nw, 0), 3e-4f);
	ck_assert_float_eq(lmk_schedule_lr(&nw, 1), 0.0f);

	lmk_sched_kind k;
	ck_assert_int_eq(lmk_schedule_parse("cosine", &k), 0);
	ck_assert_int_eq(k, LMK_SCHED_COSINE);
	ck_assert_int_eq(lmk_schedule_parse("linear", &k), 0);
	ck_assert_int_eq(k, LMK_SCHED_LINEAR);
	ck_assert_int_eq(lmk_schedule_parse("constant", &k), 0);
	ck_assert_int_eq(k, LMK_SCHED_CONSTANT);
	ck_assert_int_eq(lmk_schedule_parse("wsd", &k), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "'wsd'"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("optim");
	TCase *tc = tcase_create("optim");
	tcase_add_test(tc, test_adamw_hand);
	tcase_add_test(tc, test_adamw_one_step);
	tcase_add_test(tc, test_adamw_many_steps);
	tcase_add_test(tc, test_clip);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_schedule);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
