/* bench_ops.c: the CPU kernels that dominate a Llama training step, one at
 * a time, at the shapes of bench_cpu, with their arithmetic: FLOPs (2 per
 * multiply-add) and GFLOP/s. Prints one line per kernel.
 *   B batch, T time, C hidden, F intermediate, H heads, K kv heads,
 *   D head dim, V vocabulary; N = B T rows.
 * Linear (N,IC)->(N,OC): forward 2 N IC OC, backward twice that (dinp, dw).
 * Causal attention: S = Q Kᵀ and O = P V are each 2 B H D T(T+1)/2 exactly
 * (the floor); the backward does 5 such products (S again, dP, dQ, dK, dV).
 * usage: bench_ops [--hidden C] [--intermediate F] [--heads H] [--kv-heads K]
 *        [--vocab V] [--batch B] [--seq T] [--reps R] [--threads N]
 *        [--only linear|attention|swiglu] */
#include <omp.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "ops_cpu.h"
#include "progress.h"
#include "rng.h"
#include "train.h"

static float *randv(lmk_rng *r, int64_t n)
{
	float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
	for (int64_t i = 0; i < n; i++)
		p[i] = 2.0f * lmk_rng_uniform(r) - 1.0f;
	return p;
}

static int reps = 10;
static const char *only = ""; /* run only the kernels whose name has this */

/* CPU time of the process: on a shared machine, where other programs take
 * turns on our cores, it is what one thread's run really cost. */
static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_secs;

static void sort(double *t, int n)
{
	for (int a = 0; a < n; a++)
		for (int b = a + 1; b < n; b++)
			if (t[b] < t[a]) {
				double x = t[a];
				t[a] = t[b];
				t[b] = x;
			}
}

/* The median of reps timings of what (wall into secs, CPU into cpu_secs)
 * after one warm-up. */
#define TIME(secs, what)                                               \
	do {                                                           \
		double t_[64], c_[64];                                 \
		what;                                                  \
		for (int r_ = 0; r_ < reps; r_++) {                    \
			double t0_ = lmk_now(), c0_ = cpu_now();       \
			what;                                          \
			t_[r_] = lmk_now() - t0_;                      \
			c_[r_] = cpu_now() - c0_;                      \
		}                                                      \
		sort(t_, reps);                                        \
		sort(c_, reps);                                        \
		secs = t_[reps / 2];                                   \
		cpu_secs = c_[reps / 2];                               \
	} while (0)

static void line(const char *what, double flops, double secs)
{
	printf("%-28s %9.3f ms %8.1f GFLOP/s %9.3f ms CPU %8.1f GFLOP/s per CPU s\n", what,
	       secs * 1e3, flops / secs * 1e-9, cpu_secs * 1e3, flops / cpu_secs * 1e-9);
}

static double total;

static void linear(lmk_rng *r, const char *name, int64_t N, int64_t IC, int64_t OC)
{
	float *x = randv(r, N * IC), *w = randv(r, OC * IC), *y = randv(r, N * OC);
	float *dx = randv(r, N * IC), *dw = randv(r, OC * IC);
	double f = 2.0 * N * IC * OC, s;
	char buf[64];
	TIME(s, lmk_cpu_linear_forward(y, x, w, NULL, N, IC, OC));
	snprintf(buf, sizeof buf, "linear %s fwd", name);
	line(buf, f, s);
	total += s;
	TIME(s, lmk_cpu_linear_backward(dx, dw, NULL, y, x, w, N, IC, OC, 0));
	snprintf(buf, sizeof buf, "linear %s bwd", name);
	line(buf, 2 * f, s);
	total += s;
	free(x); free(w); free(y); free(dx); free(dw);
}

int main(int argc, char **argv)
{
	int64_t C = 256, F = 688, H = 4, K = 4, V = 259, B = 8, T = 256;
	int threads = 2;
	for (int i = 1; i + 1 < argc; i += 2) {
		long v = atol(argv[i + 1]);
		const char *o = argv[i];
		if (!strcmp(o, "--hidden")) C = v;
		else if (!strcmp(o, "--intermediate")) F = v;
		else if (!strcmp(o, "--heads")) H = v;
		else if (!strcmp(o, "--kv-heads")) K = v;
		else if (!strcmp(o, "--vocab")) V = v;
		else if (!strcmp(o, "--batch")) B = v;
		else if (!strcmp(o, "--seq")) T = v;
		else if (!strcmp(o, "--reps")) reps = (int)(v < 1 ? 1 : v > 64 ? 64 : v);
		else if (!strcmp(o, "--threads")) threads = (int)v;
		else if (!strcmp(o, "--only")) only = argv[i + 1];
		else { fprintf(stderr, "bench_ops: unknown option '%s'\n", o); return 2; }
	}
	lmk_train_set_threads(threads);
	int64_t N = B * T, D = C / H;
	lmk_rng r;
	lmk_rng_init(&r, 3);
	printf("# B %lld T %lld C %lld F %lld H %lld K %lld V %lld, %d threads\n", (long long)B,
	       (long long)T, (long long)C, (long long)F, (long long)H, (long long)K, (long long)V,
	       omp_get_max_threads());
	if (strstr("linear", only)) {
		linear(&r, "q (C->HD)", N, C, H * D);
		linear(&r, "gate (C->F)", N, C, F);
		linear(&r, "down (F->C)", N, F, C);
		linear(&r, "lm_head (C->V)", N, C, V);
	}

	float *q = randv(&r, N * H * D), *k = randv(&r, N * K * D), *v = randv(&r, N * K * D);
	float *o = randv(&r, N * H * D), *go = randv(&r, N * H * D), *lse = randv(&r, B * H * T);
	float *dq = randv(&r, N * H * D), *dk = randv(&r, N * K * D), *dv = randv(&r, N * K * D);
	float *delta = randv(&r, B * H * T);
	double f = 2.0 * B * H * D * (double)T * (T + 1) / 2, s;
	if (strstr("attention", only)) {
		TIME(s, lmk_cpu_attention_forward(o, lse, q, k, v, NULL, B, T, H, K, D, 0.125f, 1));
		line("attention fwd", 2 * f, s);
		total += s;
		TIME(s, lmk_cpu_attention_backward(dq, dk, dv, delta, go, q, k, v, o, lse, NULL, B,
						   T, H, K, D, 0.125f, 1));
		line("attention bwd", 5 * f, s);
		total += s;
	}

	int64_t n = N * F;
	float *a = randv(&r, n), *bb = randv(&r, n), *c = randv(&r, n), *da = randv(&r, n);
	float *db = randv(&r, n);
	if (strstr("swiglu", only)) {
		TIME(s, lmk_cpu_swiglu_forward(c, a, bb, n));
		line("swiglu fwd (N,F)", 0, s);
		total += s;
		TIME(s, lmk_cpu_swiglu_backward(da, db, c, a, bb, n, 0));
		line("swiglu bwd (N,F)", 0, s);
		total += s;
	}
	printf("%-28s %9.3f ms (one of each; a layer runs the q line 4 times, gate 2)\n", "sum",
	       total * 1e3);
	free(q); free(k); free(v); free(o); free(go); free(lse); free(dq); free(dk); free(dv);
	free(delta); free(a); free(bb); free(c); free(da); free(db);
	return 0;
}
