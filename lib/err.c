/* err.c: the per-thread error message. */
#include <stdio.h>
#include <string.h>

#include "err.h"

#define MSG_MAX 1024

static _Thread_local char msg[MSG_MAX];
static _Thread_local int last;

int lmk_verr(int code, const char *fmt, va_list ap)
{
	vsnprintf(msg, sizeof msg, fmt, ap);
	last = code;
	return code;
}

int lmk_err(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	lmk_verr(code, fmt, ap);
	va_end(ap);
	return code;
}

int lmk_err_wrap(int code, const char *fmt, ...)
{
	char prefix[MSG_MAX], old[MSG_MAX];
	va_list ap;

	memcpy(old, msg, sizeof old);
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof prefix, fmt, ap);
	va_end(ap);
	/* truncation is acceptable: the message stays a prefix of the truth */
	size_t n = strnlen(prefix, sizeof prefix - 3);
	memcpy(msg, prefix, n);
	memcpy(msg + n, ": ", 2);
	size_t m = strnlen(old, sizeof msg - n - 3);
	memcpy(msg + n + 2, old, m);
	msg[n + 2 + m] = 0;
	last = code;
	return code;
}

const char *lmk_errmsg(void) { return msg; }
int lmk_errcode(void) { return last; }
void lmk_err_clear(void) { msg[0] = 0; last = 0; }
