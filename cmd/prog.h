/* prog.h: the skeleton every program in cmd/ shares.
 * Owns: the program's name and usage text, its exit conventions (0 success,
 * 1 failure, 2 usage error), SIGPIPE restored to its default so that
 * `prog | head` ends quietly, and checks that stdout was written.
 * Needs: lib/err.h for library messages. Lives in cmd/, not lib/, because
 * it exits. */
#ifndef LMK_PROG_H
#define LMK_PROG_H

#include <stdint.h>
#include <stdnoreturn.h>

/* Options every program has, for getopt_long tables. */
enum { PROG_OPT_VERSION = 0x1000, PROG_OPT_SEED, PROG_OPT_FORCE, PROG_OPT_FIRST_FREE };

/* name: the program's name; usage: the whole -h text, whose first line is
 * "usage: ...". Restores SIGPIPE and registers the stdout check at exit. */
void prog_init(const char *name, const char *usage);
const char *prog_name(void);

/* "name: message" on stderr, exit 1. */
noreturn void prog_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "name: " + the library's last message, exit 1. */
noreturn void prog_die_lib(void);
/* "name: message", the usage line and a hint to --help, exit 2. */
noreturn void prog_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "name: warning: message" on stderr (not with --quiet). */
void prog_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void prog_set_quiet(int quiet);
int prog_quiet(void);

/* A getopt_long error (c is ':' or '?', with opterr 0 and optstring
 * starting with ':'), reported from arg, the element getopt was looking at
 * (argv[optind] before the call: optind moves differently for long options
 * and for clusters of short ones): unknown option, missing argument, or an
 * argument given to an option that takes none. Exits 2. */
struct option;
noreturn void prog_bad_option(const struct option *longopts, int c, const char *arg);

/* The whole usage text on stdout, exit 0. */
noreturn void prog_help(void);
/* "name (lmk) VERSION" on stdout, exit 0. */
noreturn void prog_version(void);

/* Number parsing for option arguments: a usage error naming the option
 * when arg is not a number in [lo, hi]. */
long prog_parse_long(const char *opt, const char *arg, long lo, long hi);
double prog_parse_double(const char *opt, const char *arg, double lo, double hi);
uint64_t prog_parse_seed(const char *arg);

/* Dies unless writing binary frames to path is sensible: path "-" with a
 * terminal on stdout is refused unless force is set. */
void prog_check_binary_out(const char *path, int force);

#endif
