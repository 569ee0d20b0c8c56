/* metrics.c: JSON-lines metrics (see metrics.h). */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "err.h"
#include "metrics.h"

int lmk_metrics_open(lmk_metrics *m, const char *path)
{
	m->f = NULL;
	m->own = 0;
	m->first = 1;
	if (!path)
		return 0;
	if (strcmp(path, "-") == 0) {
		m->f = stdout;
		return 0;
	}
	m->f = fopen(path, "a");
	if (!m->f)
		return lmk_err(LMK_EIO, "cannot open '%s': %s", path, strerror(errno));
	m->own = 1;
	return 0;
}

static void key(lmk_metrics *m, const char *k)
{
	fputs(m->first ? "{" : ",", m->f);
	m->first = 0;
	fprintf(m->f, "\"%s\":", k);
}

void lmk_metrics_begin(lmk_metrics *m) { m->first = 1; }

void lmk_metrics_int(lmk_metrics *m, const char *k, int64_t v)
{
	if (!m->f)
		return;
	key(m, k);
	fprintf(m->f, "%lld", (long long)v);
}

void lmk_metrics_num(lmk_metrics *m, const char *k, double v)
{
	if (!m->f)
		return;
	key(m, k);
	if (isfinite(v))
		fprintf(m->f, "%.9g", v);
	else
		fputs("null", m->f);
}

void lmk_metrics_str(lmk_metrics *m, const char *k, const char *v)
{
	if (!m->f)
		return;
	key(m, k);
	fputc('"', m->f);
	for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(m->f, "\\%c", *s);
		else if (*s < 0x20)
			fprintf(m->f, "\\u%04x", *s);
		else
			fputc(*s, m->f);
	}
	fputc('"', m->f);
}

int lmk_metrics_end(lmk_metrics *m)
{
	if (!m->f)
		return 0;
	fputs(m->first ? "{}\n" : "}\n", m->f);
	m->first = 1;
	if (fflush(m->f) != 0 || ferror(m->f))
		return lmk_err(LMK_EIO, "cannot write metrics: %s", strerror(errno));
	return 0;
}

int lmk_metrics_close(lmk_metrics *m)
{
	int rc = 0;
	if (m->f && m->own && fclose(m->f) != 0)
		rc = lmk_err(LMK_EIO, "cannot close metrics: %s", strerror(errno));
	m->f = NULL;
	return rc;
}
