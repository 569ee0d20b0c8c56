/* ckpt.h: model checkpoints as Hugging Face directories: config.json plus
 * model.safetensors (Hugging Face Llama tensor names), which transformers
 * opens as is; the same loader reads Hugging Face checkpoints, one file or
 * sharded (model.safetensors.index.json), in F32, F16 or BF16.
 * Owns: nothing after it returns. Needs: frame, llama. Never: prints. */
#ifndef LMK_CKPT_H
#define LMK_CKPT_H

#include "dtype.h"
#include "llama.h"

/* Writes dir/config.json and dir/model.safetensors (weights in dt: F32,
 * F16 or BF16; a tied lm_head is not written), each atomically; creates dir
 * if needed. @return : 0 or a negative code naming the file */
int lmk_ckpt_save(const char *dir, const lmk_llama *m, lmk_dtype dt);
/* Reads dir's config and weights into a new model (lmk_llama_init with
 * trainable). Every tensor the model needs must be present with its shape;
 * unexpected tensors are refused (rotary inv_freq buffers are ignored).
 * A tied model's checkpoint may also hold lm_head.weight (some writers keep
 * both copies): it is accepted only if it equals model.embed_tokens.weight
 * after conversion, and refused otherwise, since preferring either copy
 * silently could hide a wrong config. F32, F16 and BF16 are read (widened to
 * float32); model.safetensors wins over an index, as in transformers.
 * @return : 0 or a negative code naming the file and the tensor */
int lmk_ckpt_load(const char *dir, lmk_llama *m, int trainable);

#endif
