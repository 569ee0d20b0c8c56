/* lora.h: low-rank adapters over the linear layers of any model whose
 * weights live in an lmk_params under Hugging Face names
 * ("model.layers.0.self_attn.q_proj.weight"): LoRA, y = W x + b + s B A x
 * with A (r,I) and B (O,r) trained and s = alpha/r (alpha/sqrt(r) with
 * rslora), and one-sided LoRA, where one factor is a frozen projector P (a
 * Gaussian or Rademacher sketch, or the top-r singular vectors of a
 * gradient: lib/galore.h) and the other is trained from zero. One-sided
 * LoRA trained with Adam gives GaLore's iterates with the same P
 * (tests/test_lora.c shows it), and GaLore's refresh of P is a merge into
 * the base followed by a new projector (lmk_lora_merge).
 * An adapter is its own small lmk_params (the trained factors) plus a
 * frozen one (a one-sided adapter's projectors), so that many adapters
 * over one base live side by side, and making, training, merging, saving
 * or dropping one touches nothing else; a model applies the adapter it is
 * given (lmk_lora_linear) and the base is never written except by a merge.
 * Files are Hugging Face PEFT's: adapter_model.safetensors with tensors
 * "base_model.model.MODULE.lora_A.weight" (r,I) and ".lora_B.weight"
 * (O,r), and adapter_config.json, so that peft.PeftModel.from_pretrained
 * loads ours and we load PEFT's.
 * Owns: the adapter's factors, its slots and names. Needs: tensor, ops,
 * galore (projectors), frame, jansson, OpenBLAS, and in a CUDA build cuda/.
 * Never: prints or exits. */
#ifndef LMK_LORA_H
#define LMK_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "tensor.h"

#define LMK_LORA_TARGETS 256

/* Which factor a one-sided adapter freezes. AUTO follows GaLore: a weight
 * with O >= I is projected on the right (A = P (r,I) frozen, B trained),
 * else on the left (B = P (O,r) frozen, A trained). */
enum { LMK_SIDE_AUTO, LMK_SIDE_LEFT, LMK_SIDE_RIGHT };

typedef struct lmk_lora_config {
	int r;               /* rank */
	float alpha;         /* scale numerator */
	float dropout;       /* on the adapter's input, training only */
	int rslora;          /* s = alpha / sqrt(r) instead of alpha / r */
	char targets[LMK_LORA_TARGETS]; /* comma-separated: q,k,v,o,gate,up,down
				  * (the modules *_proj), "all" (every 2-d
				  * weight of the layers), or globs over module
				  * names ("model.layers.1*.mlp.*") */
	int onesided;        /* 0: LoRA; 1: one-sided */
	int side;            /* one-sided: LMK_SIDE_* */
	int proj;            /* one-sided: how P is made (LMK_PROJ_* of galore.h) */
} lmk_lora_config;

typedef struct lmk_lora_slot {
	char *module;        /* "model.layers.0.self_attn.q_proj" */
	lmk_tensor *base;    /* W (O,I) of the base model */
	size_t boff;         /* W's element offset in the base's parameters */
	lmk_tensor *a, *b;   /* lora_A (r,I) and lora_B (O,r), each in params or
			      * (one-sided, the frozen one) in frozen */
	int frozen;          /* 0: none; LMK_SIDE_LEFT: b is P; LMK_SIDE_RIGHT: a is P */
} lmk_lora_slot;

typedef struct lmk_lora {
	lmk_lora_config cfg;
	float scale;         /* s */
	lmk_params params;   /* the trained factors (trainable) */
	lmk_params frozen;   /* one-sided: the projectors (empty for LoRA) */
	lmk_lora_slot *slots;
	int n;
} lmk_lora;

/* Whether module (a parameter's name without ".weight") matches targets:
 * a comma-separated list of short names (q, k, v, o, gate, up, down: the
 * module's last component is NAME_proj), "all" (any module under
 * "model.layers."), or globs (fnmatch) over the whole module name. */
int lmk_module_match(const char *targets, const char *module);
/* MODULE of a parameter named MODULE.weight into buf (size bytes).
 * @return : 1, or 0 when name is not a weight or buf is too small */
int lmk_module_of(const char *name, char *buf, size_t size);

/* Settings strings "kind:key=value,key=value": begin splits off the kind
 * (the whole string when there is no ':'), next yields each key and value
 * in turn; a value runs to the next item that has a '=' (so "targets=q,v"
 * is one item). @return : begin 0 or LMK_EINVAL; next 1 (an item), 0 (the
 * end) or LMK_EINVAL */
int lmk_spec_begin(const char *spec, char *kind, size_t size, const char **rest);
int lmk_spec_next(const char **rest, char *key, size_t ksize, char *val, size_t vsize);

/* LoRA's defaults (the LoRA paper and PEFT): r 8, alpha 16, dropout 0,
 * targets q,v; one-sided: side AUTO, a Gaussian projector. */
void lmk_lora_config_default(lmk_lora_config *cfg);
/* Parses "lora:r=16,alpha=32,targets=q,v" or "onesided:r=8,proj=rademacher"
 * (keys r, alpha, dropout, rslora, targets, side=auto|left|right,
 * proj=gaussian|rademacher|svd|rsvd); the items after targets= that have
 * no '=' are more targets. Unset keys keep cfg's values.
 * @return : 0 or LMK_EINVAL naming the item */
int lmk_lora_config_parse(lmk_lora_config *cfg, const char *spec);
/* "lora:r=8,alpha=16,dropout=0,targets=q,v" for messages and metadata. */
void lmk_lora_config_str(const lmk_lora_config *cfg, char *buf, size_t size);

/* An adapter over the 2-d weights of base named MODULE.weight whose
 * MODULE matches cfg->targets, with its factors initialised: LoRA as PEFT
 * (A uniform in +-1/sqrt(I), kaiming_uniform with a = sqrt(5); B zero);
 * one-sided: the trained factor zero and P from seed (a sketch) or zero
 * (svd and rsvd need a gradient: lmk_lora_set_projectors). The adapter's
 * tensors are on the host: to train on a device, move params (the
 * trainer does) and frozen (lmk_params_to_device) to it.
 * @return : 0, LMK_EINVAL (no weight matches, a bad size) or LMK_ENOMEM */
int lmk_lora_init(lmk_lora *a, const lmk_lora_config *cfg, lmk_params *base, uint64_t seed);
void lmk_lora_free(lmk_lora *a);

/* x W^T + b, plus s (dropout(x) A^T) B^T when a has a slot for w: the one
 * call a model makes for each linear layer. a may be NULL. */
lmk_tensor *lmk_lora_linear(lmk_ctx *c, const lmk_lora *a, lmk_tensor *x, lmk_tensor *w,
			    lmk_tensor *b);
/* The slot whose base weight is w, or NULL. */
const lmk_lora_slot *lmk_lora_find(const lmk_lora *a, const lmk_tensor *w);

/* One-sided: new projectors for every slot, in the base's order: from the
 * gradients of the base weights (grads: base->n float32 in base's layout,
 * on the host; NULL for a sketch, which proj then must be) by cfg->proj,
 * drawing from rng as lmk_galore_step does (so that the same generator
 * gives the same projectors). @return : 0 or a negative code */
int lmk_lora_set_projectors(lmk_lora *a, const float *grads, lmk_rng *rng);

/* W += s B A for every slot, into the base's float32 weights (and its bf16
 * copy on a device). With reinit, the trained factors are then zeroed (and
 * for LoRA, A drawn again from seed) so that the model is unchanged and the
 * adapter starts afresh: GaLore's refresh for a one-sided adapter, whose
 * new projectors the caller then sets. @return : 0 or a negative code */
int lmk_lora_merge(lmk_lora *a, int reinit, uint64_t seed);

/* Writes dir/adapter_model.safetensors and dir/adapter_config.json as PEFT
 * does (each atomically), dir made if missing. base_name goes to
 * base_model_name_or_path (may be NULL).
 * @return : 0 or a negative code naming the file */
int lmk_lora_save(const lmk_lora *a, const char *dir, const char *base_name);
/* Reads a PEFT LoRA adapter from dir over base: every tensor must name a
 * 2-d weight of base with the shapes r x I and O x r; lora_dropout,
 * use_rslora and lora_alpha are honoured, fan_in_fan_out, DoRA, biases
 * and modules_to_save are refused. The adapter is a two-sided LoRA on the
 * host. @return : 0 or a negative code naming the file and the tensor */
int lmk_lora_load(lmk_lora *a, const char *dir, lmk_params *base);

#endif
