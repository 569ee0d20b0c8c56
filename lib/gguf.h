/* gguf.h: GGUF files (llama.cpp's model format), versions 2 and 3: metadata
 * of every type including arrays, tensor infos, alignment, memory-mapped
 * data, and dequantization of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q2_K, Q3_K, Q4_K, Q5_K and Q6_K to float32 (or bf16).
 * Every field is hostile: counts are checked against the file size before
 * anything is allocated, sizes and offsets for overflow, names for
 * duplicates, tensor data for alignment and bounds.
 * Owns: the mapping and the parsed metadata. Needs: dtype, err.
 * Never: prints or exits. */
#ifndef LMK_GGUF_H
#define LMK_GGUF_H

#include <stddef.h>
#include <stdint.h>

/* Metadata value types, as numbered in the GGUF specification. */
typedef enum {
	LMK_GGUF_U8 = 0, LMK_GGUF_I8 = 1, LMK_GGUF_U16 = 2, LMK_GGUF_I16 = 3,
	LMK_GGUF_U32 = 4, LMK_GGUF_I32 = 5, LMK_GGUF_F32 = 6, LMK_GGUF_BOOL = 7,
	LMK_GGUF_STRING = 8, LMK_GGUF_ARRAY = 9, LMK_GGUF_U64 = 10,
	LMK_GGUF_I64 = 11, LMK_GGUF_F64 = 12,
} lmk_gguf_vtype;

/* Tensor types (ggml_type numbering). */
enum {
	LMK_GGML_F32 = 0, LMK_GGML_F16 = 1, LMK_GGML_Q4_0 = 2, LMK_GGML_Q4_1 = 3,
	LMK_GGML_Q5_0 = 6, LMK_GGML_Q5_1 = 7, LMK_GGML_Q8_0 = 8,
	LMK_GGML_Q2_K = 10, LMK_GGML_Q3_K = 11, LMK_GGML_Q4_K = 12,
	LMK_GGML_Q5_K = 13, LMK_GGML_Q6_K = 14, LMK_GGML_BF16 = 30,
};

typedef struct lmk_gguf_str {
	uint64_t len;
	const char *s;       /* not NUL-terminated: inside the mapping */
} lmk_gguf_str;

typedef struct lmk_gguf_kv {
	char *key;           /* NUL-terminated copy */
	lmk_gguf_vtype type;
	lmk_gguf_vtype atype; /* element type when type is ARRAY */
	uint64_t n;          /* elements when ARRAY, else 1 */
	const void *data;    /* scalar or array elements in the file (little
			      * endian, any alignment); for STRING arrays, see
			      * lmk_gguf_arr_str */
	lmk_gguf_str *strs;  /* STRING or array of STRING: parsed strings */
} lmk_gguf_kv;

typedef struct lmk_gguf_tensor {
	char *name;
	int ndim;
	int64_t ne[4];       /* GGUF order: ne[0] is the fastest dimension */
	int type;            /* LMK_GGML_* */
	uint64_t offset;     /* from the start of the data section */
	size_t nbytes;
	const void *data;
} lmk_gguf_tensor;

typedef struct lmk_gguf {
	char *path;
	uint32_t version;
	uint64_t alignment;
	int nkv, ntensors;
	lmk_gguf_kv *kv;
	lmk_gguf_tensor *t;
	const unsigned char *map;
	size_t size;
	void *heap;          /* when the file was read, not mapped */
	int mapped;          /* map came from mmap and close unmaps it */
	uint64_t data_offset; /* start of the data section in the file */
} lmk_gguf;

/* Nested arrays (arrays of arrays) are parsed and skipped down to this
 * depth; their kv has atype ARRAY, data at the first nested array's header
 * and no parsed elements. */
#define LMK_GGUF_MAX_DEPTH 8

/* Maps path and parses it. @return : 0, or a negative code with a message
 * naming the file, the key or tensor, and what was wrong */
int lmk_gguf_open(lmk_gguf *g, const char *path);
/* Parses a file image held in memory (not copied; buf must outlive g). */
int lmk_gguf_parse(lmk_gguf *g, const void *buf, size_t len, const char *name);
void lmk_gguf_close(lmk_gguf *g);

/* Lookups: NULL when absent. */
const lmk_gguf_kv *lmk_gguf_find(const lmk_gguf *g, const char *key);
const lmk_gguf_tensor *lmk_gguf_find_tensor(const lmk_gguf *g, const char *name);
/* Typed getters: convert any integer type (or BOOL) to the asked one when
 * the value fits. @return : 0, or LMK_EFORMAT (wrong type or absent) */
int lmk_gguf_get_i64(const lmk_gguf *g, const char *key, int64_t *v);
int lmk_gguf_get_f32(const lmk_gguf *g, const char *key, float *v);
/* A malloc'ed NUL-terminated copy of a STRING value. */
int lmk_gguf_get_str(const lmk_gguf *g, const char *key, char **v);

/* Array elements. @return : the i-th string of a STRING array (NULL when kv
 * is not one or i is out of range) */
const lmk_gguf_str *lmk_gguf_arr_str(const lmk_gguf_kv *kv, uint64_t i);
/* The i-th element of an array of integers (or BOOL) or of floats.
 * @return : 0, or LMK_EFORMAT (wrong type, out of range, does not fit) */
int lmk_gguf_arr_i64(const lmk_gguf_kv *kv, uint64_t i, int64_t *v);
int lmk_gguf_arr_f32(const lmk_gguf_kv *kv, uint64_t i, float *v);
/* @return : bytes of one scalar of value type t, 0 for STRING, ARRAY and
 * unknown types */
size_t lmk_gguf_vtype_size(int t);
const char *lmk_gguf_vtype_name(int t);
/* @return : the number of elements of t (1 for 0-d) */
int64_t lmk_gguf_tensor_numel(const lmk_gguf_tensor *t);

/* @return : elements per block and bytes per block of a tensor type, 0 if
 * the type is unknown. Every ggml type that gguf-py knows has sizes, so that
 * files with other quantizations still open; only the types listed at the
 * top can be dequantized (lmk_ggml_can_dequantize). */
int lmk_ggml_block_elems(int type);
size_t lmk_ggml_block_bytes(int type);
const char *lmk_ggml_type_name(int type);
/* @return : 1 if lmk_ggml_dequantize handles type, else 0 */
int lmk_ggml_can_dequantize(int type);
/* Dequantizes n elements (a multiple of the block size) of type from src.
 * @return : 0, or LMK_EUNSUP for a type not listed above */
int lmk_ggml_dequantize(int type, const void *src, float *dst, int64_t n);
/* A whole tensor to float32 (dst has numel room). */
int lmk_gguf_tensor_f32(const lmk_gguf_tensor *t, float *dst);
/* The same rounded to bfloat16 (nearest even; a BF16 tensor is copied as
 * is), for GPU weights. @return : 0, LMK_EUNSUP, or LMK_ENOMEM */
int lmk_gguf_tensor_bf16(const lmk_gguf_tensor *t, uint16_t *dst);

#endif
