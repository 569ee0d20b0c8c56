/* test_dist.c: the data-parallel bookkeeping that needs no GPU: rendezvous
 * addresses, the ranks from the environment (torchrun's and Slurm's
 * variables), the gradient buckets, and the rendezvous itself among N
 * forked processes of this machine (N = 1, 2, 3), by a file and by TCP:
 * rank 0's bytes (as the NCCL unique id would be) reach every rank whatever
 * order they start in; a file left by an earlier run does no harm; a rank
 * that never comes ends everyone's wait at the timeout with a message that
 * names it; ranks whose fingerprints differ are refused; and the launcher
 * (lmk_dist_launch): the environment each copy gets, a failed copy stopping
 * the others, a copy killed by a signal, a program that cannot run, and a
 * SIGINT passed on. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dist.h"
#include "err.h"

static char dir[] = "/tmp/test_dist.XXXXXX";

static void setup(void) { ck_assert_ptr_nonnull(mkdtemp(dir)); }

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "test_dist: cannot remove %s\n", dir);
	strcpy(dir, "/tmp/test_dist.XXXXXX");
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void nap_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- addresses ---- */

static const struct {
	const char *s;
	int ok, kind, port;
	const char *where;   /* path or host */
} addrs[] = {
	{ "file:/tmp/x", 1, LMK_RDZV_FILE, 0, "/tmp/x" },
	{ "file:rel/path:with:colons", 1, LMK_RDZV_FILE, 0, "rel/path:with:colons" },
	{ "tcp:localhost:29500", 1, LMK_RDZV_TCP, 29500, "localhost" },
	{ "tcp:10.1.2.3:1", 1, LMK_RDZV_TCP, 1, "10.1.2.3" },
	{ "tcp:[::1]:65535", 1, LMK_RDZV_TCP, 65535, "::1" },
	{ "file:", 0, 0, 0, NULL },
	{ "tcp:host", 0, 0, 0, NULL },
	{ "tcp::80", 0, 0, 0, NULL },
	{ "tcp:host:0", 0, 0, 0, NULL },
	{ "tcp:host:65536", 0, 0, 0, NULL },
	{ "tcp:host:80x", 0, 0, 0, NULL },
	{ "tcp:::1:80", 0, 0, 0, NULL },
	{ "tcp:[::1:80", 0, 0, 0, NULL },
	{ "udp:host:80", 0, 0, 0, NULL },
	{ "", 0, 0, 0, NULL },
};

START_TEST(test_parse)
{
	lmk_dist d;
	lmk_dist_init(&d);
	int rc = lmk_dist_parse_rendezvous(&d, addrs[_i].s);
	if (!addrs[_i].ok) {
		ck_assert_int_eq(rc, LMK_EINVAL);
		ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "rendezvous '"));
		return;
	}
	ck_assert_msg(rc == 0, "%s: %s", addrs[_i].s, lmk_errmsg());
	ck_assert_int_eq(d.kind, addrs[_i].kind);
	if (d.kind == LMK_RDZV_FILE) {
		ck_assert_str_eq(d.path, addrs[_i].where);
	} else {
		ck_assert_str_eq(d.host, addrs[_i].where);
		ck_assert_int_eq(d.port, addrs[_i].port);
	}
}
END_TEST

/* ---- the environment ---- */

static void clear_env(void)
{
	static const char *const v[] = { "RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS",
					 "SLURM_LOCALID", "MASTER_ADDR", "MASTER_PORT",
					 "TORCHELASTIC_USE_AGENT_STORE", "LMK_RENDEZVOUS_TIMEOUT",
					 "LMK_BUCKET_BYTES" };
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		unsetenv(v[i]);
}

/* "NAME=VALUE NAME=VALUE ..." into the environment */
static void set_env(const char *list)
{
	char buf[512], *save, *tok;
	snprintf(buf, sizeof buf, "%s", list);
	for (tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(tok, '=');
		*eq = 0;
		setenv(tok, eq + 1, 1);
	}
}

static const struct {
	const char *env;
	const char *given;   /* --rendezvous, or NULL */
	int rc, rank, world, local, kind, port;
	const char *msg;     /* in the error, or the host */
} envs[] = {
	{ "", NULL, 0, 0, 1, 0, LMK_RDZV_NONE, 0, NULL },
	{ "RANK=1 WORLD_SIZE=4 LOCAL_RANK=1 MASTER_ADDR=node7 MASTER_PORT=29500", NULL, 1, 1, 4, 1,
	  LMK_RDZV_TCP, 29500, "node7" },
	{ "RANK=3 WORLD_SIZE=4", "file:/tmp/r", 1, 3, 4, 3, LMK_RDZV_FILE, 0, NULL },
	{ "RANK=5 WORLD_SIZE=8 LOCAL_RANK=1 MASTER_ADDR=fe80::1 MASTER_PORT=80", NULL, 1, 5, 8, 1,
	  LMK_RDZV_TCP, 80, "fe80::1" },
	/* torchrun's agent holds MASTER_PORT */
	{ "RANK=0 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=29500 TORCHELASTIC_USE_AGENT_STORE=True", NULL, 1, 0,
	  2, 0, LMK_RDZV_TCP, 29501, "h" },
	/* the option wins over MASTER_* */
	{ "RANK=0 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=29500", "tcp:other:7", 1, 0, 2, 0, LMK_RDZV_TCP, 7,
	  "other" },
	/* Slurm: a rank when a rendezvous is known, else a single process */
	{ "SLURM_PROCID=2 SLURM_NTASKS=3 SLURM_LOCALID=0 MASTER_ADDR=h MASTER_PORT=1", NULL, 1, 2, 3, 0,
	  LMK_RDZV_TCP, 1, "h" },
	{ "SLURM_PROCID=2 SLURM_NTASKS=3", "file:/tmp/r", 1, 2, 3, 2, LMK_RDZV_FILE, 0, NULL },
	{ "SLURM_PROCID=0 SLURM_NTASKS=1", NULL, 0, 0, 1, 0, LMK_RDZV_NONE, 0, NULL },
	/* torchrun's variables win over Slurm's */
	{ "RANK=1 WORLD_SIZE=2 SLURM_PROCID=0 SLURM_NTASKS=1", "file:/tmp/r", 1, 1, 2, 1, LMK_RDZV_FILE, 0, NULL },
	{ "WORLD_SIZE=2", "file:/tmp/r", LMK_EINVAL, 0, 0, 0, 0, 0, "WORLD_SIZE is set but RANK is not" },
	{ "RANK=2 WORLD_SIZE=2", "file:/tmp/r", LMK_EINVAL, 0, 0, 0, 0, 0,
	  "RANK is '2', expected a whole number from 0 to 1" },
	{ "RANK=x WORLD_SIZE=2", "file:/tmp/r", LMK_EINVAL, 0, 0, 0, 0, 0, "RANK is 'x'" },
	{ "RANK=0 WORLD_SIZE=0", "file:/tmp/r", LMK_EINVAL, 0, 0, 0, 0, 0, "WORLD_SIZE is '0'" },
	{ "RANK=0 WORLD_SIZE=2 LOCAL_RANK=-1", "file:/tmp/r", LMK_EINVAL, 0, 0, 0, 0, 0, "LOCAL_RANK is '-1'" },
	{ "RANK=0 WORLD_SIZE=2", NULL, LMK_EINVAL, 0, 0, 0, 0, 0, "there is no rendezvous" },
	{ "RANK=0 WORLD_SIZE=2 MASTER_ADDR=h", NULL, LMK_EINVAL, 0, 0, 0, 0, 0,
	  "MASTER_ADDR is set but MASTER_PORT is not" },
	{ "RANK=0 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=99999", NULL, LMK_EINVAL, 0, 0, 0, 0, 0,
	  "MASTER_PORT is '99999'" },
	{ "RANK=0 WORLD_SIZE=2 LMK_RENDEZVOUS_TIMEOUT=0", "file:/tmp/r", LMK_EINVAL, 0, 0, 0, 0, 0,
	  "LMK_RENDEZVOUS_TIMEOUT is '0'" },
	{ "LMK_BUCKET_BYTES=2", NULL, LMK_EINVAL, 0, 0, 0, 0, 0, "LMK_BUCKET_BYTES is '2'" },
};

START_TEST(test_env)
{
	lmk_dist d;
	int rc;

	clear_env();
	set_env(envs[_i].env);
	lmk_dist_init(&d);
	if (envs[_i].given)
		ck_assert_int_eq(lmk_dist_parse_rendezvous(&d, envs[_i].given), 0);
	rc = lmk_dist_from_env(&d);
	ck_assert_msg(rc == envs[_i].rc, "%s: %d, expected %d (%s)", envs[_i].env, rc, envs[_i].rc, lmk_errmsg());
	if (rc < 0) {
		ck_assert_msg(strstr(lmk_errmsg(), envs[_i].msg), "%s: '%s'", envs[_i].env, lmk_errmsg());
		ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "environment: "));
		return;
	}
	ck_assert_int_eq(d.rank, envs[_i].rank);
	ck_assert_int_eq(d.world, envs[_i].world);
	ck_assert_int_eq(d.local_rank, envs[_i].local);
	ck_assert_int_eq(d.kind, envs[_i].kind);
	if (d.kind == LMK_RDZV_TCP) {
		ck_assert_str_eq(d.host, envs[_i].msg);
		ck_assert_int_eq(d.port, envs[_i].port);
	}
	clear_env();
}
END_TEST

START_TEST(test_env_timeout)
{
	lmk_dist d;
	clear_env();
	set_env("RANK=0 WORLD_SIZE=1 LMK_RENDEZVOUS_TIMEOUT=2.5 LMK_BUCKET_BYTES=4096");
	lmk_dist_init(&d);
	ck_assert_double_eq(d.timeout, LMK_DIST_TIMEOUT);
	ck_assert_uint_eq(d.bucket_bytes, LMK_DIST_BUCKET_BYTES);
	ck_assert_int_eq(lmk_dist_parse_rendezvous(&d, "file:/tmp/r"), 0);
	ck_assert_int_eq(lmk_dist_from_env(&d), 1);
	ck_assert_double_eq(d.timeout, 2.5);
	ck_assert_uint_eq(d.bucket_bytes, 4096);
	clear_env();
}
END_TEST

/* ---- buckets ---- */

/* tensor sizes (in floats, each padded to 16 as lmk_params does), the
 * bucket limit */
static const struct {
	int nt;
	size_t size[8];
	size_t max;
} layouts[] = {
	{ 1, { 1 }, 1 },
	{ 1, { 1000 }, 16 },                        /* larger than a bucket */
	{ 3, { 16, 16, 16 }, 1 << 20 },              /* one bucket */
	{ 3, { 16, 16, 16 }, 0 },                    /* one bucket each */
	{ 5, { 7, 33, 100, 1, 64 }, 100 },           /* odd sizes */
	{ 8, { 4096, 17, 17, 4096, 17, 17, 4096, 1 }, 4160 },
	{ 4, { 96 << 20, 9 << 20, 9 << 20, 1 << 10 }, (25u << 20) / 4 }, /* a small model's */
};

START_TEST(test_buckets)
{
	const int nt = layouts[_i].nt;
	size_t off[8], n = 0;
	int first[8], nb, seen[8] = { 0 };

	for (int i = 0; i < nt; i++) {
		off[i] = n;
		n += (layouts[_i].size[i] + 15) / 16 * 16;
	}
	nb = lmk_dist_buckets(off, nt, n, layouts[_i].max, first);
	ck_assert_int_ge(nb, 1);
	ck_assert_int_le(nb, nt);
	/* bucket 0 ends the buffer, each starts where the next ends, the
	 * last starts at 0: they tile it, from its end */
	size_t end = n;
	for (int k = 0; k < nb; k++) {
		int lo = first[k], hi = k ? first[k - 1] : nt;
		ck_assert_int_lt(lo, hi);
		ck_assert_int_ge(lo, 0);
		size_t elems = end - off[lo];
		/* within the limit, or one tensor alone */
		ck_assert_msg(elems <= layouts[_i].max || hi - lo == 1, "bucket %d: %zu elements", k, elems);
		/* as large as it may be: one more tensor would not fit */
		if (lo > 0)
			ck_assert_uint_gt(end - off[lo - 1], layouts[_i].max);
		for (int i = lo; i < hi; i++)
			seen[i]++;
		end = off[lo];
	}
	ck_assert_uint_eq(end, 0);
	for (int i = 0; i < nt; i++)
		ck_assert_int_eq(seen[i], 1);
	ck_assert_int_eq(lmk_dist_buckets(off, 0, 0, 1, first), 0);
}
END_TEST

START_TEST(test_hash)
{
	/* FNV-1a's published values */
	ck_assert_uint_eq(lmk_dist_hash(LMK_DIST_HASH_INIT, "", 0), 0xcbf29ce484222325ull);
	ck_assert_uint_eq(lmk_dist_hash(LMK_DIST_HASH_INIT, "a", 1), 0xaf63dc4c8601ec8cull);
	ck_assert_uint_eq(lmk_dist_hash(LMK_DIST_HASH_INIT, "foobar", 6), 0x85944171f73967e8ull);
	/* in pieces as in one */
	ck_assert_uint_eq(lmk_dist_hash(lmk_dist_hash(LMK_DIST_HASH_INIT, "foo", 3), "bar", 3),
			  0x85944171f73967e8ull);
}
END_TEST

/* ---- the rendezvous among forked processes ---- */

#define IDN 128

struct outcome {
	int rc;
	unsigned char id[IDN];
	char msg[400];
	double seconds;
};

/* rank 0's id: what every rank should end up with */
static void rank0_id(unsigned char *id, int salt)
{
	for (int i = 0; i < IDN; i++)
		id[i] = (unsigned char)(i * 7 + 13 + salt);
}

/* A port nobody listens on now. */
static int free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;
	ck_assert_int_ge(fd, 0);
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

struct rank_plan {
	int start;           /* 1: this rank comes */
	int delay_ms;        /* before it calls the rendezvous */
	int world;           /* 0: the group's */
	uint64_t fp;         /* 0: the group's */
};

/* Forks a process for each rank that comes, runs the rendezvous there with
 * d's address and timeout, and collects each one's outcome. */
static void run_group(const lmk_dist *base, int world, const struct rank_plan *plan, struct outcome *out)
{
	pid_t pid[8];
	int fd[8][2];

	ck_assert_int_le(world, 8);
	for (int r = 0; r < world; r++) {
		pid[r] = -1;
		if (!plan[r].start)
			continue;
		ck_assert_int_eq(pipe(fd[r]), 0);
		pid[r] = fork();
		ck_assert_int_ge(pid[r], 0);
		if (pid[r] == 0) {
			struct outcome o;
			lmk_dist d = *base;
			double t0;
			memset(&o, 0, sizeof o);
			close(fd[r][0]);
			d.rank = r;
			d.world = plan[r].world ? plan[r].world : world;
			nap_ms(plan[r].delay_ms);
			if (r == 0)
				rank0_id(o.id, 0);
			t0 = now();
			o.rc = lmk_dist_rendezvous(&d, o.id, IDN, plan[r].fp ? plan[r].fp : 0x1234);
			o.seconds = now() - t0;
			snprintf(o.msg, sizeof o.msg, "%s", lmk_errmsg());
			if (write(fd[r][1], &o, sizeof o) != (ssize_t)sizeof o)
				_exit(3);
			_exit(0);
		}
		close(fd[r][1]);
	}
	for (int r = 0; r < world; r++) {
		int st;
		if (pid[r] < 0)
			continue;
		ck_assert_int_eq(read(fd[r][0], &out[r], sizeof out[r]), (ssize_t)sizeof out[r]);
		close(fd[r][0]);
		ck_assert_int_eq(waitpid(pid[r], &st, 0), pid[r]);
		ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
}

static void base_of(lmk_dist *d, int tcp, double timeout)
{
	char a[300];
	lmk_dist_init(d);
	if (tcp)
		snprintf(a, sizeof a, "tcp:127.0.0.1:%d", free_port());
	else
		snprintf(a, sizeof a, "file:%s/rdzv", dir);
	ck_assert_int_eq(lmk_dist_parse_rendezvous(d, a), 0);
	d->timeout = timeout;
}

/* file and tcp, each with N = 1, 2, 3 and ranks starting in either order */
static const struct {
	int tcp, world, late0;
} groups[] = {
	{ 0, 1, 0 }, { 0, 2, 0 }, { 0, 3, 0 }, { 0, 2, 1 }, { 0, 3, 1 },
	{ 1, 1, 0 }, { 1, 2, 0 }, { 1, 3, 0 }, { 1, 2, 1 }, { 1, 3, 1 },
};

START_TEST(test_rendezvous)
{
	const int W = groups[_i].world;
	struct rank_plan plan[3];
	struct outcome out[3];
	unsigned char want[IDN];
	lmk_dist d;
	struct stat sb;

	base_of(&d, groups[_i].tcp, 10);
	for (int r = 0; r < W; r++)
		plan[r] = (struct rank_plan){ 1, groups[_i].late0 ? (r == 0 ? 300 : 0) : 100 * r, 0, 0 };
	run_group(&d, W, plan, out);
	rank0_id(want, 0);
	for (int r = 0; r < W; r++) {
		ck_assert_msg(out[r].rc == 0, "rank %d: %s", r, out[r].msg);
		ck_assert_msg(!memcmp(out[r].id, want, IDN), "rank %d: another id", r);
	}
	/* the file and the answers are gone */
	if (!groups[_i].tcp) {
		char p[4200];
		ck_assert_int_ne(stat(d.path, &sb), 0);
		snprintf(p, sizeof p, "%s.ack.1", d.path);
		ck_assert_int_ne(stat(p, &sb), 0);
	}
}
END_TEST

/* Rank 2 of 3 never comes: everyone stops at the timeout, rank 0 naming it. */
START_TEST(test_missing_peer)
{
	struct rank_plan plan[3] = { { 1, 0, 0, 0 }, { 1, 0, 0, 0 }, { 0, 0, 0, 0 } };
	struct outcome out[3];
	lmk_dist d;

	base_of(&d, _i, 1.0);
	run_group(&d, 3, plan, out);
	ck_assert_int_eq(out[0].rc, LMK_EIO);
	ck_assert_msg(strstr(out[0].msg, "rank 2 of 3 did not come within 1 s"), "%s", out[0].msg);
	ck_assert_msg(strstr(out[0].msg, _i ? "rendezvous tcp:127.0.0.1:" : "rendezvous file:"), "%s", out[0].msg);
	ck_assert_int_eq(out[1].rc, LMK_EIO);
	ck_assert_msg(strstr(out[1].msg, _i ? "rank 1 of 3: rank 0 gave up: rank 2 of 3 did not come"
				       : "rank 1 of 3: rank 0 gave up"), "%s", out[1].msg);
	for (int r = 0; r < 2; r++)
		ck_assert_msg(out[r].seconds > 0.9 && out[r].seconds < 5, "rank %d: %g s", r, out[r].seconds);
}
END_TEST

/* Rank 0 never comes. */
START_TEST(test_missing_rank0)
{
	struct rank_plan plan[2] = { { 0, 0, 0, 0 }, { 1, 0, 0, 0 } };
	struct outcome out[2];
	lmk_dist d;

	base_of(&d, _i, 0.5);
	run_group(&d, 2, plan, out);
	ck_assert_int_eq(out[1].rc, LMK_EIO);
	ck_assert_msg(strstr(out[1].msg, _i ? "rank 1 of 2: cannot reach rank 0 within 0.5 s"
				       : "rank 1 of 2: rank 0 did not come within 0.5 s"), "%s", out[1].msg);
	ck_assert(out[1].seconds < 5);
}
END_TEST

/* A rendezvous file of an earlier run (another id, another fingerprint),
 * found first by rank 1: rank 0 replaces it, and rank 1 takes the new one. */
START_TEST(test_stale_file)
{
	struct rank_plan plan[2] = { { 1, 400, 0, 0 }, { 1, 0, 0, 0 } };
	struct outcome out[2];
	unsigned char rec[40 + IDN], want[IDN];
	lmk_dist d;
	FILE *f;

	base_of(&d, 0, 10);
	memcpy(rec, "LMKRDZV1", 8);
	memset(rec + 8, 0, 32);
	rec[8] = 2;          /* world 2 */
	rec[12] = IDN;       /* n */
	rec[16] = 99;        /* a nonce */
	rec[24] = 77;        /* a fingerprint */
	rank0_id(rec + 40, 5);
	ck_assert_ptr_nonnull(f = fopen(d.path, "wb"));
	ck_assert_uint_eq(fwrite(rec, 1, sizeof rec, f), sizeof rec);
	fclose(f);
	run_group(&d, 2, plan, out);
	rank0_id(want, 0);
	for (int r = 0; r < 2; r++) {
		ck_assert_msg(out[r].rc == 0, "rank %d: %s", r, out[r].msg);
		ck_assert_msg(!memcmp(out[r].id, want, IDN), "rank %d: the stale id", r);
	}
}
END_TEST

/* Rank 1 runs another training: both hear of it. */
START_TEST(test_fingerprint)
{
	struct rank_plan plan[2] = { { 1, 0, 0, 0 }, { 1, 0, 0, 0x999 } };
	struct outcome out[2];
	lmk_dist d;

	base_of(&d, _i, 10);
	run_group(&d, 2, plan, out);
	for (int r = 0; r < 2; r++) {
		ck_assert_int_eq(out[r].rc, LMK_EINVAL);
		ck_assert_msg(strstr(out[r].msg, "rank 1 runs another training than rank 0"), "%s", out[r].msg);
	}
}
END_TEST

/* A rank that counts another group size is refused at once (TCP). */
START_TEST(test_world_mismatch)
{
	struct rank_plan plan[2] = { { 1, 0, 0, 0 }, { 1, 100, 3, 0 } };
	struct outcome out[2];
	lmk_dist d;

	base_of(&d, 1, 10);
	run_group(&d, 2, plan, out);
	ck_assert_int_eq(out[0].rc, LMK_EINVAL);
	ck_assert_msg(strstr(out[0].msg, "a rank 1 of a group of 3 ranks came (this group has 2)"), "%s",
		      out[0].msg);
	ck_assert_int_eq(out[1].rc, LMK_EINVAL);
	ck_assert_msg(strstr(out[1].msg, "rank 1 of 3: rank 0 gave up: rank 0's group has 2 ranks"), "%s",
		      out[1].msg);
	ck_assert(out[0].seconds < 5 && out[1].seconds < 5);
}
END_TEST

START_TEST(test_rendezvous_args)
{
	lmk_dist d;
	unsigned char id[4];
	lmk_dist_init(&d);
	ck_assert_int_eq(lmk_dist_rendezvous(&d, id, 4, 0), LMK_EINVAL);
	ck_assert_ptr_nonnull(strstr(lmk_errmsg(), "none given"));
	d.rank = 2;
	ck_assert_int_eq(lmk_dist_parse_rendezvous(&d, "file:/nonexistent/dir/r"), 0);
	ck_assert_int_eq(lmk_dist_rendezvous(&d, id, 4, 0), LMK_EINVAL);
	d.rank = 0;
	ck_assert_int_eq(lmk_dist_rendezvous(&d, id, 4, 0), LMK_EIO);
	ck_assert_msg(strstr(lmk_errmsg(), "rendezvous file:/nonexistent/dir/r: cannot create"), "%s",
		      lmk_errmsg());
}
END_TEST

/* ---- the launcher ---- */

static char *sh_argv[4];

static char *const *sh(const char *script)
{
	sh_argv[0] = "sh";
	sh_argv[1] = "-c";
	sh_argv[2] = (char *)script;
	sh_argv[3] = NULL;
	return sh_argv;
}

START_TEST(test_launch_env)
{
	char script[512], path[300], line[128];
	lmk_dist_exit ex;

	setenv("RANK", "77", 1); /* replaced, not doubled */
	snprintf(script, sizeof script,
		 "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $(env | grep -c '^RANK=')\" >%s/r$RANK",
		 dir);
	ck_assert_int_eq(lmk_dist_launch("/bin/sh", sh(script), 3, 1, &ex), 0);
	ck_assert_int_eq(ex.status, 0);
	ck_assert_int_eq(ex.rank, -1);
	for (int r = 0; r < 3; r++) {
		char want[64];
		FILE *f;
		snprintf(path, sizeof path, "%s/r%d", dir, r);
		ck_assert_ptr_nonnull(f = fopen(path, "r"));
		ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
		fclose(f);
		snprintf(want, sizeof want, "%d 3 %d 3 1\n", r, r);
		ck_assert_str_eq(line, want);
	}
	unsetenv("RANK");
}
END_TEST

/* Rank 1 fails: the others, which would wait for it for ever, are stopped. */
START_TEST(test_launch_failure)
{
	lmk_dist_exit ex;
	double t0 = now();
	ck_assert_int_eq(lmk_dist_launch("/bin/sh", sh("[ $RANK = 1 ] && exit 3; exec sleep 30"), 3, 1, &ex), 0);
	ck_assert_int_eq(ex.status, 3);
	ck_assert_int_eq(ex.rank, 1);
	ck_assert_int_eq(ex.signal, 0);
	ck_assert_msg(now() - t0 < 10, "%g s", now() - t0);
}
END_TEST

/* Rank 0 is killed; a rank that ignores SIGTERM gets SIGKILL after the grace. */
START_TEST(test_launch_killed)
{
	lmk_dist_exit ex;
	double t0 = now();
	ck_assert_int_eq(lmk_dist_launch("/bin/sh",
					 sh("if [ $RANK = 0 ]; then sleep 0.2; kill -9 $$; fi; trap '' TERM; "
					    "while :; do sleep 0.1; done"),
					 2, 0.5, &ex),
			 0);
	ck_assert_int_eq(ex.status, 128 + SIGKILL);
	ck_assert_int_eq(ex.rank, 0);
	ck_assert_int_eq(ex.signal, SIGKILL);
	ck_assert_msg(now() - t0 < 10, "%g s", now() - t0);
}
END_TEST

START_TEST(test_launch_noexec)
{
	lmk_dist_exit ex;
	char *argv[] = { "x", NULL };
	ck_assert_int_eq(lmk_dist_launch("/nonexistent/program", argv, 2, 1, &ex), LMK_EIO);
	ck_assert_msg(strstr(lmk_errmsg(), "cannot run '/nonexistent/program': No such file"), "%s",
		      lmk_errmsg());
	ck_assert_int_eq(lmk_dist_launch("/bin/sh", argv, 0, 1, &ex), LMK_EINVAL);
}
END_TEST

/* A SIGINT to the launcher reaches every copy once; they end as they
 * choose (here 130, as lla-train after saving), and so does the launcher. */
START_TEST(test_launch_sigint)
{
	char script[512], path[300];
	struct stat sb;
	pid_t pid;
	int st;

	snprintf(script, sizeof script,
		 "trap 'echo $RANK >>%s/int; exit 130' INT; touch %s/up$RANK; while :; do sleep 0.05; done", dir, dir);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		lmk_dist_exit ex;
		if (lmk_dist_launch("/bin/sh", sh(script), 2, 5, &ex) < 0)
			_exit(99);
		_exit(ex.rank < 0 ? ex.status : 98);
	}
	for (int i = 0; i < 200; i++) {
		int up = 0;
		for (int r = 0; r < 2; r++) {
			snprintf(path, sizeof path, "%s/up%d", dir, r);
			up += stat(path, &sb) == 0;
		}
		if (up == 2)
			break;
		nap_ms(25);
	}
	kill(pid, SIGINT);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(WEXITSTATUS(st), 130);
	snprintf(path, sizeof path, "%s/int", dir);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_size, 4); /* "0\n1\n" in some order: once each */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dist");
	TCase *tc = tcase_create("dist");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_parse, 0, (int)(sizeof addrs / sizeof addrs[0]));
	tcase_add_loop_test(tc, test_env, 0, (int)(sizeof envs / sizeof envs[0]));
	tcase_add_test(tc, test_env_timeout);
	tcase_add_loop_test(tc, test_buckets, 0, (int)(sizeof layouts / sizeof layouts[0]));
	tcase_add_test(tc, test_hash);
	tcase_add_loop_test(tc, test_rendezvous, 0, (int)(sizeof groups / sizeof groups[0]));
	tcase_add_loop_test(tc, test_missing_peer, 0, 2);
	tcase_add_loop_test(tc, test_missing_rank0, 0, 2);
	tcase_add_test(tc, test_stale_file);
	tcase_add_loop_test(tc, test_fingerprint, 0, 2);
	tcase_add_test(tc, test_world_mismatch);
	tcase_add_test(tc, test_rendezvous_args);
	tcase_add_test(tc, test_launch_env);
	tcase_add_test(tc, test_launch_failure);
	tcase_add_test(tc, test_launch_killed);
	tcase_add_test(tc, test_launch_noexec);
	tcase_add_test(tc, test_launch_sigint);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
