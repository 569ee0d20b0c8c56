/* err.h: error codes and the per-thread error message of the library.
 * Owns: the last error message of the calling thread. Needs: nothing.
 * Never: prints or exits; callers decide what to do with a failure. */
#ifndef LMK_ERR_H
#define LMK_ERR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
	LMK_OK = 0,
	LMK_EIO = -1,      /* a read, write, open or rename failed */
	LMK_EFORMAT = -2,  /* the input is not what it claims to be */
	LMK_ENOMEM = -3,   /* an allocation failed */
	LMK_EINVAL = -4,   /* a caller passed a bad argument or shape */
	LMK_EDEVICE = -5,  /* CUDA, cuBLAS or NCCL failed */
	LMK_ENUM = -6,     /* NaN or inf where a finite number was needed */
	LMK_EUNSUP = -7,   /* valid input that this build does not support */
};

/* Records a printf-style message for the calling thread and returns code,
 * so that `return lmk_err(LMK_EFORMAT, "...")` reads naturally.
 * @return : code */
int lmk_err(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int lmk_verr(int code, const char *fmt, va_list ap);

/* Prefixes the current message with "prefix: ", keeping the code. Used by
 * outer layers to add the file name to an error found deep inside.
 * @return : code */
int lmk_err_wrap(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* @return : the calling thread's last message ("" if none) */
const char *lmk_errmsg(void);
/* @return : the calling thread's last code (0 if none) */
int lmk_errcode(void);
void lmk_err_clear(void);

#ifdef __cplusplus
}
#endif

#endif
