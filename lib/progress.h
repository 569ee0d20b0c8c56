/* progress.h: a one-line progress display on stderr (count, rate, ETA), shown
 * only when stderr is a terminal, redrawn at most ten times a second.
 * Owns: its timing state. Needs: nothing. Never: writes to stdout. */
#ifndef LMK_PROGRESS_H
#define LMK_PROGRESS_H

#include <stdint.h>

typedef struct lmk_progress {
	const char *label;
	const char *unit;    /* what is counted ("step", "token") */
	int64_t total;       /* 0 if unknown */
	double t0, last;     /* seconds (monotonic) */
	int64_t done0;       /* count at start, so a resumed run's rate is right */
	int enabled;
	int drawn;
} lmk_progress;

/* enabled: -1 to decide by isatty(2), 0 or 1 to force. */
void lmk_progress_init(lmk_progress *p, const char *label, const char *unit, int64_t done0,
		       int64_t total, int enabled);
/* extra, if not NULL, is appended (e.g. "loss 1.234"). */
void lmk_progress_update(lmk_progress *p, int64_t done, const char *extra);
/* Clears the line so that later messages start clean. */
void lmk_progress_end(lmk_progress *p);
/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double lmk_now(void);

#endif
