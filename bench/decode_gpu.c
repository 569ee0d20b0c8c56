/* decode_gpu.c: batch-1 greedy decoding speed on one GPU in bf16
 * (lmk_llama_decode with the KV cache on the device), random weights, and
 * the share of the device's copy bandwidth that it reaches.
 *
 * Shapes: smollm (SmolLM2-135M: C 576, F 1536, L 30, H 9, K 3, D 64,
 * V 49152, tied, rope_theta 100000) and llama1b (Llama-3.2-1B: C 2048,
 * F 8192, L 16, H 32, K 8, D 64, V 128256, tied, rope_theta 500000; its
 * llama3 rope scaling left out: it changes no work).
 * For each shape: a warm-up generation, then --reps times
 *   generate  lmk_llama_generate (prompt --prompt tokens, --gen new ones,
 *             greedy, no end-of-sequence token): new tokens / wall time,
 *             the prompt's pass included;
 *   decode    after the prompt, the --gen - 1 one-token steps alone (each
 *             waits for its logits on the host and takes their argmax):
 *             ms per token;
 * the best rep of each. Both run one-token steps as lmk_llama_decode does
 * by default: a recorded CUDA graph replayed each token (generate takes the
 * greedy token from the device's argmax; decode reads the logits back).
 * --ops also times both with LMK_DECODE_GRAPH=0 (every step op by op, the
 * path before the graph) and prints them on an "ops" line.
 * Weight bytes per token: every parameter once in
 * bf16 (the tied embedding once, as the lm_head's matrix; the embedding
 * lookup reads one row). Copy bandwidth: cudaMemcpyAsync of 1 GiB device
 * to device, best of 5, counting bytes read and written (2 GiB).
 * bandwidth share = weight bytes / decode time per token / copy bandwidth.
 * Prints lines
 *   copy_bw GBPS
 *   ours SHAPE params_M weight_MB gen_tok_s decode_ms_per_tok decode_tok_s bw_share
 *   ops SHAPE gen_tok_s decode_ms_per_tok decode_tok_s          (--ops)
 * usage: decode_gpu [--shape smollm|llama1b|all] [--prompt N] [--gen N]
 *        [--reps R] [--device I] [--ops] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "llama.h"
#include "tensor.h"

#if LMK_CUDA
#include "../cuda/cuda.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "decode_gpu: %s: %s\n", what, lmk_errmsg());
	exit(1);
}

static void shape_of(const char *name, lmk_llama_config *cfg)
{
	lmk_llama_config_default(cfg);
	cfg->head_dim = 64;
	cfg->tie_word_embeddings = 1;
	cfg->rms_norm_eps = 1e-5f;
	cfg->max_position_embeddings = 8192;
	cfg->initializer_range = 0.02f;
	cfg->neos = 0; /* generate exactly --gen tokens */
	cfg->bos_token_id = -1;
	if (!strcmp(name, "smollm")) {
		cfg->hidden_size = 576;
		cfg->intermediate_size = 1536;
		cfg->num_hidden_layers = 30;
		cfg->num_attention_heads = 9;
		cfg->num_key_value_heads = 3;
		cfg->vocab_size = 49152;
		cfg->rope_theta = 100000.0f;
	} else {
		cfg->hidden_size = 2048;
		cfg->intermediate_size = 8192;
		cfg->num_hidden_layers = 16;
		cfg->num_attention_heads = 32;
		cfg->num_key_value_heads = 8;
		cfg->vocab_size = 128256;
		cfg->rope_theta = 500000.0f;
	}
}

/* Device-to-device copy bandwidth in bytes/s (read + written). */
static double copy_bw(lmk_ctx *c)
{
	const size_t bytes = (size_t)1 << 30;
	void *a = NULL, *b = NULL;
	if (lmk_cuda_mem_alloc(&a, bytes) < 0 || lmk_cuda_mem_alloc(&b, bytes) < 0)
		die("copy bandwidth");
	if (lmk_cuda_memset(c->backend, a, 1, bytes) < 0 || lmk_cuda_copy(c->backend, b, a, bytes) < 0 ||
	    lmk_cuda_sync(c->backend) < 0)
		die("copy bandwidth");
	double best = 1e30;
	for (int r = 0; r < 5; r++) {
		double t0 = now();
		if (lmk_cuda_copy(c->backend, b, a, bytes) < 0 || lmk_cuda_sync(c->backend) < 0)
			die("copy bandwidth");
		double t = now() - t0;
		if (t < best)
			best = t;
	}
	lmk_cuda_mem_free(a);
	lmk_cuda_mem_free(b);
	return 2.0 * (double)bytes / best;
}

static int argmax(const float *x, int n)
{
	int b = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > x[b])
			b = i;
	return b;
}

/* Best generate tokens/s and best decode seconds per token over reps. */
static void measure(lmk_ctx *c, lmk_llama *m, const int32_t *prompt, int np, int ngen, int reps,
		    int32_t *out, float *logits, double *gen_best, double *dec_best)
{
	const int V = m->cfg.vocab_size;
	lmk_sampler s;
	memset(&s, 0, sizeof s);
	/* warm-up: the arena, cuBLASLt's choices, the attention scratch */
	if (lmk_llama_generate(c, m, prompt, np, ngen < 32 ? ngen : 32, &s, NULL, 0, NULL, NULL,
			       out) < 0)
		die("warm-up");
	*gen_best = 0;
	for (int r = 0; r < reps; r++) {
		double a = now();
		int n = lmk_llama_generate(c, m, prompt, np, ngen, &s, NULL, 0, NULL, NULL, out);
		double t = now() - a;
		if (n != ngen)
			die("generate");
		if (n / t > *gen_best)
			*gen_best = n / t;
	}

	lmk_kvcache kv;
	if (lmk_kvcache_init_ctx(&kv, m, np + ngen, c) < 0)
		die("kv cache");
	*dec_best = 1e30;
	for (int r = 0; r < reps; r++) {
		kv.len = 0;
		lmk_ctx_reset(c);
		if (lmk_llama_decode(c, m, &kv, prompt, np, logits) < 0)
			die("decode prompt");
		double a = now();
		for (int i = 0; i < ngen - 1; i++) {
			int32_t tok = argmax(logits, V);
			lmk_ctx_reset(c);
			if (lmk_llama_decode(c, m, &kv, &tok, 1, logits) < 0)
				die("decode");
		}
		double t = (now() - a) / (ngen - 1);
		if (t < *dec_best)
			*dec_best = t;
	}
	lmk_ctx_reset(c);
	lmk_kvcache_free(&kv);
}

static void run_shape(lmk_ctx *c, const char *name, int np, int ngen, int reps, double bw,
		      int ops)
{
	lmk_llama_config cfg;
	lmk_llama m;
	shape_of(name, &cfg);
	if (lmk_llama_init(&m, &cfg, 0) < 0)
		die(name);
	double t0 = now();
	lmk_llama_init_weights(&m, 1234);
	if (lmk_params_to_device(&m.params, c) < 0)
		die(name);
	double setup = now() - t0;
	double nparam = 0;
	for (int i = 0; i < m.params.nt; i++)
		nparam += (double)m.params.t[i].n;
	double wbytes = 2.0 * (nparam - (cfg.tie_word_embeddings ? 0.0 : (double)m.wte->n));

	const int V = cfg.vocab_size;
	int32_t *prompt = malloc(sizeof(int32_t) * (size_t)np);
	int32_t *out = malloc(sizeof(int32_t) * (size_t)ngen);
	float *logits = malloc(sizeof(float) * (size_t)V);
	if (!prompt || !out || !logits) {
		fprintf(stderr, "decode_gpu: out of memory\n");
		exit(1);
	}
	for (int i = 0; i < np; i++)
		prompt[i] = (int32_t)((i * 7919 + 13) % V);
	double gen_best, dec_best, gen_ops = 0, dec_ops = 0;
	if (ops) {
		setenv("LMK_DECODE_GRAPH", "0", 1);
		measure(c, &m, prompt, np, ngen, reps, out, logits, &gen_ops, &dec_ops);
		unsetenv("LMK_DECODE_GRAPH");
	}
	measure(c, &m, prompt, np, ngen, reps, out, logits, &gen_best, &dec_best);
	fprintf(stderr, "decode_gpu: %s: %.1fM parameters, set up in %.1f s, first tokens %d %d %d\n",
		name, nparam / 1e6, setup, out[0], out[1], out[2]);
	printf("ours %s %.1f %.1f %.1f %.3f %.1f %.3f\n", name, nparam / 1e6, wbytes / 1e6, gen_best,
	       dec_best * 1e3, 1.0 / dec_best, wbytes / dec_best / bw);
	if (ops)
		printf("ops %s %.1f %.3f %.1f\n", name, gen_ops, dec_ops * 1e3, 1.0 / dec_ops);
	fflush(stdout);
	free(prompt);
	free(out);
	free(logits);
	lmk_llama_free(&m);
}

int main(int argc, char **argv)
{
	const char *shape = "all";
	int np = 16, ngen = 256, reps = 3, dev = 0, ops = 0;
	static const struct option opts[] = {
		{"shape", required_argument, 0, 's'}, {"prompt", required_argument, 0, 'p'},
		{"gen", required_argument, 0, 'g'},   {"reps", required_argument, 0, 'r'},
		{"device", required_argument, 0, 'd'}, {"ops", no_argument, 0, 'o'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 's': shape = optarg; break;
		case 'p': np = atoi(optarg); break;
		case 'g': ngen = atoi(optarg); break;
		case 'r': reps = atoi(optarg); break;
		case 'd': dev = atoi(optarg); break;
		case 'o': ops = 1; break;
		case 'h':
			printf("usage: decode_gpu [--shape smollm|llama1b|all] [--prompt N] [--gen N] "
			       "[--reps R] [--device I] [--ops]\n");
			return 0;
		default: return 2;
		}
	}
	if (np < 1 || ngen < 2 || reps < 1 ||
	    (strcmp(shape, "all") && strcmp(shape, "smollm") && strcmp(shape, "llama1b"))) {
		fprintf(stderr, "decode_gpu: expected --prompt >= 1, --gen >= 2, --reps >= 1 and a "
			"shape smollm, llama1b or all\n");
		return 2;
	}
	if (lmk_cuda_device_count() == 0) {
		fprintf(stderr, "decode_gpu: no CUDA device\n");
		return 1;
	}
	lmk_ctx c;
	if (lmk_ctx_init_ex(&c, LMK_DEV_CUDA, dev, LMK_BF16) < 0)
		die("context");
	c.grad_enabled = 0;
	double bw = copy_bw(&c);
	printf("copy_bw %.1f\n", bw / 1e9);
	fflush(stdout);
	if (!strcmp(shape, "all") || !strcmp(shape, "smollm"))
		run_shape(&c, "smollm", np, ngen, reps, bw, ops);
	if (!strcmp(shape, "all") || !strcmp(shape, "llama1b"))
		run_shape(&c, "llama1b", np, ngen, reps, bw, ops);
	lmk_ctx_free(&c);
	return 0;
}
#else
int main(void)
{
	fprintf(stderr, "decode_gpu: CPU-only build (CUDA=0)\n");
	return 1;
}
#endif
