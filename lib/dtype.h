/* dtype.h: element types shared by frames, tensors and checkpoints.
 * Owns: the dtype enum, its safetensors names and sizes, and the f16/bf16
 * conversions. Needs: nothing. Never: allocates. */
#ifndef LMK_DTYPE_H
#define LMK_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
	LMK_F64, LMK_F32, LMK_F16, LMK_BF16,
	LMK_I64, LMK_I32, LMK_I16, LMK_I8,
	LMK_U8, LMK_U16, LMK_U32, LMK_BOOL,
	LMK_NDTYPE
} lmk_dtype;

/* @return : bytes per element */
size_t lmk_dtype_size(lmk_dtype t);
/* @return : the safetensors spelling ("F32", "BF16", ...) */
const char *lmk_dtype_name(lmk_dtype t);
/* @return : the dtype for a safetensors name, or -1 if unknown */
int lmk_dtype_parse(const char *name);

/* IEEE half and bfloat16; round to nearest even, NaN kept NaN. */
float lmk_f16_to_f32(uint16_t h);
uint16_t lmk_f32_to_f16(float f);
float lmk_bf16_to_f32(uint16_t b);
uint16_t lmk_f32_to_bf16(float f);

/* Converts n elements of type t at src (any alignment) to float32.
 * Integers and BOOL convert by value. */
void lmk_dtype_to_f32(lmk_dtype t, const void *src, float *dst, size_t n);
/* Converts n float32 to type t (F32, F16, BF16 or F64 only).
 * @return : 0, or LMK_EINVAL for another type */
int lmk_dtype_from_f32(lmk_dtype t, const float *src, void *dst, size_t n);

#ifdef __cplusplus
}
#endif

#endif
