/* bench_cpu.c: our side of bench/cpu.sh. Times, on the CPU in float32 with a
 * fixed number of threads, (1) a training step of a Llama-shaped model
 * (forward, backward, clipping, AdamW) on a (B,T) batch and (2) greedy
 * decoding at batch 1 with the KV cache, and prints one JSON object per
 * measurement, in the same form as bench/torch_cpu.py: wall seconds (the
 * median step) and CPU seconds of the process over the same step (on a
 * machine shared with other programs, the wall time counts their turns on
 * our cores too; CPU time counts only ours, spinning threads included).
 * usage: bench_cpu [--hidden C] [--intermediate F] [--layers L] [--heads H]
 *        [--kv-heads K] [--vocab V] [--batch B] [--seq T] [--steps N]
 *        [--prompt P] [--new N] [--threads N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "llama.h"
#include "ops.h"
#include "optim.h"
#include "progress.h"
#include "train.h"

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(void)
{
	fprintf(stderr, "bench_cpu: %s\n", lmk_errmsg());
	exit(1);
}

int main(int argc, char **argv)
{
	int C = 256, F = 688, L = 4, H = 4, K = 4, V = 259, B = 8, T = 256, steps = 5;
	int P = 16, NEW = 128, threads = 2;
	for (int i = 1; i + 1 < argc; i += 2) {
		int v = atoi(argv[i + 1]);
		const char *o = argv[i];
		if (!strcmp(o, "--hidden")) C = v;
		else if (!strcmp(o, "--intermediate")) F = v;
		else if (!strcmp(o, "--layers")) L = v;
		else if (!strcmp(o, "--heads")) H = v;
		else if (!strcmp(o, "--kv-heads")) K = v;
		else if (!strcmp(o, "--vocab")) V = v;
		else if (!strcmp(o, "--batch")) B = v;
		else if (!strcmp(o, "--seq")) T = v;
		else if (!strcmp(o, "--steps")) steps = v;
		else if (!strcmp(o, "--prompt")) P = v;
		else if (!strcmp(o, "--new")) NEW = v;
		else if (!strcmp(o, "--threads")) threads = v;
		else { fprintf(stderr, "bench_cpu: unknown option '%s'\n", o); return 2; }
	}
	lmk_train_set_threads(threads);

	lmk_llama_config cfg;
	lmk_llama_config_default(&cfg);
	cfg.hidden_size = C; cfg.intermediate_size = F; cfg.num_hidden_layers = L;
	cfg.num_attention_heads = H; cfg.num_key_value_heads = K; cfg.head_dim = C / H;
	cfg.vocab_size = V; cfg.tie_word_embeddings = 1;
	cfg.max_position_embeddings = T > P + NEW ? T : P + NEW;
	lmk_llama m;
	if (lmk_llama_init(&m, &cfg, 1) < 0)
		die();
	lmk_llama_init_weights(&m, 1);
	lmk_adamw opt;
	lmk_adamw_config ac;
	lmk_adamw_config_default(&ac);
	ac.beta2 = 0.95f; ac.weight_decay = 0.1f;
	if (lmk_adamw_init(&opt, &m.params, &ac) < 0)
		die();

	lmk_ctx c;
	if (lmk_ctx_init(&c, LMK_DEV_CPU) < 0)
		die();
	int32_t *x = malloc(sizeof *x * B * T), *y = malloc(sizeof *y * B * T);
	lmk_rng r;
	lmk_rng_init(&r, 7);
	for (int i = 0; i < B * T; i++) {
		x[i] = (int32_t)lmk_rng_below(&r, V);
		y[i] = (int32_t)lmk_rng_below(&r, V);
	}
	int64_t shp[2] = {B, T};
	double *t = malloc(sizeof *t * (steps + 1)), *cpu = malloc(sizeof *cpu * (steps + 1));
	for (int s = 0; s <= steps; s++) { /* step 0 warms up */
		double t0 = lmk_now(), c0 = cpu_now();
		lmk_ctx_reset(&c);
		lmk_params_zero_grad(&m.params);
		lmk_tensor *ids = lmk_tensor_wrap(&c, LMK_I32, 2, shp, x);
		lmk_tensor *tg = lmk_tensor_wrap(&c, LMK_I32, 2, shp, y);
		lmk_tensor *loss = lmk_cross_entropy(&c, lmk_llama_forward(&c, &m, ids, NULL, NULL),
						     tg, -1, NULL);
		if (!loss || lmk_backward(&c, loss, 1.0f) < 0)
			die();
		lmk_clip_grad_norm(&m.params, 1.0);
		lmk_adamw_step(&opt, 1e-3f);
		t[s] = lmk_now() - t0;
		cpu[s] = cpu_now() - c0;
	}
	qsort(t + 1, steps, sizeof *t, cmp);
	qsort(cpu + 1, steps, sizeof *cpu, cmp);
	double med = t[1 + steps / 2], cmed = cpu[1 + steps / 2];
	printf("{\"impl\": \"lmk\", \"what\": \"train_step\", \"seconds\": %.6f, \"tokens_per_s\": %.1f, "
	       "\"cpu_seconds\": %.6f, \"tokens_per_cpu_s\": %.1f}\n",
	       med, B * T / med, cmed, B * T / cmed);

	/* decoding: greedy, no end-of-sequence stop */
	lmk_ctx_reset(&c);
	c.grad_enabled = 0;
	/* room for the warm-up's 8 tokens too */
	int32_t *prompt = malloc(sizeof *prompt * P), *out = malloc(sizeof *out * (NEW > 8 ? NEW : 8));
	for (int i = 0; i < P; i++)
		prompt[i] = (int32_t)lmk_rng_below(&r, V);
	lmk_sampler smp = {.temperature = 0, .top_k = 0, .top_p = 1};
	lmk_rng_init(&smp.rng, 1);
	cfg.neos = 0;
	m.cfg.neos = 0;
	if (lmk_llama_generate(&c, &m, prompt, P, 8, &smp, NULL, 0, NULL, NULL, out) < 0)
		die();
	double t0 = lmk_now(), c0 = cpu_now();
	int n = lmk_llama_generate(&c, &m, prompt, P, NEW, &smp, NULL, 0, NULL, NULL, out);
	double dt = lmk_now() - t0, dc = cpu_now() - c0;
	if (n < 0)
		die();
	printf("{\"impl\": \"lmk\", \"what\": \"decode\", \"seconds\": %.6f, \"tokens\": %d, \"tokens_per_s\": %.1f, "
	       "\"cpu_seconds\": %.6f, \"tokens_per_cpu_s\": %.1f}\n",
	       dt, n, n / dt, dc, n / dc);
	free(prompt); free(out); free(x); free(y); free(t); free(cpu);
	lmk_ctx_free(&c);
	lmk_adamw_free(&opt);
	lmk_llama_free(&m);
	return 0;
}
