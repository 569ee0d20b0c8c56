/* metrics.h: metrics as JSON lines, one object per event, flushed at once so
 * that a plot script can follow a running job ("step", "loss", ...).
 * Non-finite numbers are written as null, keeping every line valid JSON.
 * Owns: its FILE. Needs: nothing. Never: writes to stdout unless given "-". */
#ifndef LMK_METRICS_H
#define LMK_METRICS_H

#include <stdint.h>
#include <stdio.h>

typedef struct lmk_metrics {
	FILE *f;             /* NULL: metrics off, every call does nothing */
	int first;           /* no field written yet on this line */
	int own;
} lmk_metrics;

/* path NULL: off; "-": stdout; else appended to (a resumed run continues
 * its file). @return : 0 or LMK_EIO */
int lmk_metrics_open(lmk_metrics *m, const char *path);
void lmk_metrics_begin(lmk_metrics *m);
void lmk_metrics_int(lmk_metrics *m, const char *key, int64_t v);
void lmk_metrics_num(lmk_metrics *m, const char *key, double v);
void lmk_metrics_str(lmk_metrics *m, const char *key, const char *v);
/* Ends the line and flushes. @return : 0 or LMK_EIO */
int lmk_metrics_end(lmk_metrics *m);
int lmk_metrics_close(lmk_metrics *m);

#endif
