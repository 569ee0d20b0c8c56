/* progress.c: the progress line (see progress.h). */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"

double lmk_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void lmk_progress_init(lmk_progress *p, const char *label, const char *unit, int64_t done0,
		       int64_t total, int enabled)
{
	p->label = label;
	p->unit = unit;
	p->total = total;
	p->done0 = done0;
	p->t0 = p->last = lmk_now();
	p->enabled = enabled < 0 ? isatty(STDERR_FILENO) : enabled;
	p->drawn = 0;
}

static void fmt_time(char *buf, size_t n, double s)
{
	long t = (long)(s + 0.5);
	if (t >= 3600)
		snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
	else
		snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

void lmk_progress_update(lmk_progress *p, int64_t done, const char *extra)
{
	double now = lmk_now(), dt = now - p->t0, rate;
	char eta[40] = "", el[32];

	if (!p->enabled || (now - p->last < 0.1 && (p->total == 0 || done < p->total)))
		return;
	p->last = now;
	rate = dt > 0 ? (double)(done - p->done0) / dt : 0;
	fmt_time(el, sizeof el, dt);
	if (p->total > 0 && rate > 0) {
		char t[32]; /* fmt_time needs up to 25 bytes */
		fmt_time(t, sizeof t, (double)(p->total - done) / rate);
		snprintf(eta, sizeof eta, " ETA %s", t);
	}
	if (p->total > 0)
		fprintf(stderr, "\r\033[K%s %lld/%lld %s, %.3g/s, %s%s%s%s", p->label,
			(long long)done, (long long)p->total, p->unit, rate, el, eta,
			extra ? ", " : "", extra ? extra : "");
	else
		fprintf(stderr, "\r\033[K%s %lld %s, %.3g/s, %s%s%s", p->label, (long long)done,
			p->unit, rate, el, extra ? ", " : "", extra ? extra : "");
	fflush(stderr);
	p->drawn = 1;
}

void lmk_progress_end(lmk_progress *p)
{
	if (p->enabled && p->drawn) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	p->drawn = 0;
}
