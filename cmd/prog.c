/* prog.c: the shared program skeleton (see prog.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "prog.h"

static const char *pname = "lmk";
static const char *ptext = "";
static int quiet;

/* At exit, a failed write to stdout (a full disk, a closed pipe with
 * SIGPIPE ignored) must not pass as success. */
static void check_stdout(void)
{
	if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0) {
		if (errno == EPIPE)
			_exit(1);
		fprintf(stderr, "%s: write error on standard output: %s\n", pname, strerror(errno));
		_exit(1);
	}
}

void prog_init(const char *name, const char *usage)
{
	pname = name;
	ptext = usage;
	signal(SIGPIPE, SIG_DFL);
	atexit(check_stdout);
}

const char *prog_name(void) { return pname; }
void prog_set_quiet(int q) { quiet = q; }
int prog_quiet(void) { return quiet; }

noreturn void prog_die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", pname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

noreturn void prog_die_lib(void)
{
	const char *m = lmk_errmsg();
	prog_die("%s", *m ? m : "unknown error");
}

noreturn void prog_usage_error(const char *fmt, ...)
{
	va_list ap;
	const char *nl = strchr(ptext, '\n');
	int len = nl ? (int)(nl - ptext) : (int)strlen(ptext);

	fprintf(stderr, "%s: ", pname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%.*s\nTry '%s --help' for more information.\n", len, ptext, pname);
	exit(2);
}

void prog_warn(const char *fmt, ...)
{
	va_list ap;
	if (quiet)
		return;
	fprintf(stderr, "%s: warning: ", pname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

noreturn void prog_bad_option(const struct option *longopts, int c, const char *arg)
{
	if (strncmp(arg, "--", 2) == 0) {
		int n = (int)strcspn(arg, "=");
		if (c == ':')
			prog_usage_error("option '%.*s' needs an argument", n, arg);
		if (arg[n] == '=')
			for (const struct option *lo = longopts; lo->name; lo++)
				if ((int)strlen(lo->name) == n - 2 && !strncmp(lo->name, arg + 2, n - 2))
					prog_usage_error("option '%.*s' takes no argument", n, arg);
		prog_usage_error("unknown option '%.*s'", n, arg);
	}
	if (c == ':')
		prog_usage_error("option '-%c' needs an argument", optopt);
	prog_usage_error("unknown option '-%c'", optopt);
}

noreturn void prog_help(void)
{
	fputs(ptext, stdout);
	exit(0);
}

noreturn void prog_version(void)
{
	printf("%s (lmk) %s%s\n", pname, LMK_VERSION, LMK_CUDA ? " cuda" : "");
	exit(0);
}

long prog_parse_long(const char *opt, const char *arg, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 0);
	if (errno || end == arg || *end)
		prog_usage_error("option '%s' needs a whole number, not '%s'", opt, arg);
	if (v < lo || v > hi)
		prog_usage_error("option '%s' must be between %ld and %ld, not %ld", opt, lo, hi, v);
	return v;
}

double prog_parse_double(const char *opt, const char *arg, double lo, double hi)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (errno || end == arg || *end || v != v)
		prog_usage_error("option '%s' needs a number, not '%s'", opt, arg);
	if (v < lo || v > hi)
		prog_usage_error("option '%s' must be between %g and %g, not %g", opt, lo, hi, v);
	return v;
}

uint64_t prog_parse_seed(const char *arg)
{
	char *end;
	uint64_t v;

	errno = 0;
	v = strtoull(arg, &end, 0);
	if (errno || end == arg || *end || arg[0] == '-')
		prog_usage_error("option '--seed' needs a whole number from 0 to 2^64-1, not '%s'", arg);
	return v;
}

void prog_check_binary_out(const char *path, int force)
{
	if (strcmp(path, "-") == 0 && !force && isatty(STDOUT_FILENO))
		prog_die("refusing to write binary frames to a terminal (use -o FILE, a pipe, or --force)");
}
