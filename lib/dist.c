/* dist.c: ranks, rendezvous, buckets and the local launcher of data-parallel
 * training (see dist.h). The rendezvous speaks two small binary protocols,
 * little-endian whatever the machine:
 *   file record  "LMKRDZV1" u32 world, u32 n, u64 nonce, u64 fingerprint,
 *                u32 status (0 come, 1 rank 0 gave up), u32 0, n bytes
 *   file answer  "LMKRACK1" u32 rank, u32 0, u64 nonce, u64 fingerprint
 *   tcp hello    "LMKRDZV1" u32 rank, u32 world, u32 n, u32 0, u64 fingerprint
 *   tcp reply    "LMKRDZV1" u32 status (0 ok, else -code: gave up), u32 len,
 *                u64 rank 0's fingerprint, len bytes (the id, or why not) */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dist.h"
#include "err.h"

#define MAGIC "LMKRDZV1"
#define MAGIC_ACK "LMKRACK1"
#define REC_HDR 40   /* file record before the bytes */
#define ACK_LEN 32
#define HELLO_LEN 32
#define REPLY_HDR 24
#define MAX_ID ((size_t)1 << 20)
#define POLL_MS 10
/* A rank that rank 0 has heard of waits this much longer than rank 0
 * itself may, so that it hears rank 0's verdict rather than giving up
 * on its own. */
#define VERDICT_S 5.0

void lmk_dist_init(lmk_dist *d)
{
	memset(d, 0, sizeof *d);
	d->world = 1;
	d->kind = LMK_RDZV_NONE;
	d->timeout = LMK_DIST_TIMEOUT;
	d->bucket_bytes = LMK_DIST_BUCKET_BYTES;
}

int lmk_dist_parse_rendezvous(lmk_dist *d, const char *s)
{
	const char *hp, *colon;
	char *end;
	long port;
	size_t hl;

	if (strncmp(s, "file:", 5) == 0) {
		if (!s[5])
			return lmk_err(LMK_EINVAL, "rendezvous '%s': expected file:PATH with a path", s);
		if (strlen(s + 5) >= sizeof d->path - 16)
			return lmk_err(LMK_EINVAL, "rendezvous '%s': the path is too long", s);
		d->kind = LMK_RDZV_FILE;
		snprintf(d->path, sizeof d->path, "%s", s + 5);
		return 0;
	}
	if (strncmp(s, "tcp:", 4) != 0)
		return lmk_err(LMK_EINVAL, "rendezvous '%s': expected file:PATH or tcp:HOST:PORT", s);
	hp = s + 4;
	colon = strrchr(hp, ':');
	if (!colon || colon == hp)
		return lmk_err(LMK_EINVAL, "rendezvous '%s': expected tcp:HOST:PORT", s);
	hl = (size_t)(colon - hp);
	if (hp[0] == '[') { /* [v6]:port */
		if (hl < 3 || hp[hl - 1] != ']')
			return lmk_err(LMK_EINVAL, "rendezvous '%s': expected tcp:[ADDRESS]:PORT", s);
		hp++;
		hl -= 2;
	} else if (memchr(hp, ':', hl)) {
		return lmk_err(LMK_EINVAL, "rendezvous '%s': an IPv6 address goes in brackets, "
			       "tcp:[ADDRESS]:PORT", s);
	}
	if (hl >= sizeof d->host)
		return lmk_err(LMK_EINVAL, "rendezvous '%s': the host name is too long", s);
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || port < 1 || port > 65535)
		return lmk_err(LMK_EINVAL, "rendezvous '%s': port '%s', expected a number from 1 to 65535",
			       s, colon + 1);
	d->kind = LMK_RDZV_TCP;
	memcpy(d->host, hp, hl);
	d->host[hl] = 0;
	d->port = (int)port;
	return 0;
}

/* ---- the environment ---- */

/* 1 and *out when name is set to a whole number in [lo, hi], 0 when it is
 * not set (or empty), LMK_EINVAL when it is something else. */
static int env_long(const char *name, long lo, long hi, long *out)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (!s || !*s)
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return lmk_err(LMK_EINVAL, "environment: %s is '%s', expected a whole number from %ld to %ld",
			       name, s, lo, hi);
	*out = v;
	return 1;
}

int lmk_dist_from_env(lmk_dist *d)
{
	const char *rk = "RANK", *ws = "WORLD_SIZE", *lr = "LOCAL_RANK", *t, *addr;
	long world = 0, rank = 0, local = 0, port = 0, bucket = 0;
	int rc, slurm = 0;

	if ((rc = env_long("LMK_BUCKET_BYTES", 4, 1L << 40, &bucket)) < 0)
		return rc;
	if (rc == 1)
		d->bucket_bytes = (size_t)bucket;
	if ((rc = env_long(ws, 1, 1 << 20, &world)) < 0)
		return rc;
	if (rc == 0) {
		rk = "SLURM_PROCID";
		ws = "SLURM_NTASKS";
		lr = "SLURM_LOCALID";
		slurm = 1;
		if ((rc = env_long(ws, 1, 1 << 20, &world)) < 0)
			return rc;
		if (rc == 0)
			return 0;
	}
	if ((t = getenv("LMK_RENDEZVOUS_TIMEOUT")) && *t) {
		char *end;
		double v;
		errno = 0;
		v = strtod(t, &end);
		if (errno || end == t || *end || !(v > 0 && v <= 1e7))
			return lmk_err(LMK_EINVAL, "environment: LMK_RENDEZVOUS_TIMEOUT is '%s', expected "
				       "seconds above 0", t);
		d->timeout = v;
	}
	if (d->kind == LMK_RDZV_NONE && (addr = getenv("MASTER_ADDR")) && *addr) {
		const char *ag = getenv("TORCHELASTIC_USE_AGENT_STORE");
		char buf[320];
		if ((rc = env_long("MASTER_PORT", 1, 65535, &port)) < 0)
			return rc;
		if (rc == 0)
			return lmk_err(LMK_EINVAL, "environment: MASTER_ADDR is set but MASTER_PORT is not");
		/* torchrun's agent hosts its own store on MASTER_PORT */
		if (ag && strcmp(ag, "True") == 0) {
			if (port == 65535)
				return lmk_err(LMK_EINVAL, "environment: MASTER_PORT 65535 is torchrun's store "
					       "and there is no port after it");
			port++;
		}
		snprintf(buf, sizeof buf, strchr(addr, ':') ? "tcp:[%.256s]:%ld" : "tcp:%.256s:%ld", addr, port);
		if ((rc = lmk_dist_parse_rendezvous(d, buf)) < 0)
			return lmk_err_wrap(rc, "environment: MASTER_ADDR and MASTER_PORT");
	}
	if (slurm && d->kind == LMK_RDZV_NONE)
		return 0; /* a Slurm task on its own */
	if ((rc = env_long(rk, 0, world - 1, &rank)) < 0)
		return rc;
	if (rc == 0)
		return lmk_err(LMK_EINVAL, "environment: %s is set but %s is not", ws, rk);
	if ((rc = env_long(lr, 0, world - 1, &local)) < 0)
		return rc;
	if (rc == 0)
		local = rank;
	if (d->kind == LMK_RDZV_NONE)
		return lmk_err(LMK_EINVAL, "environment: %s is set but there is no rendezvous (set "
			       "MASTER_ADDR and MASTER_PORT, or give one)", ws);
	d->rank = (int)rank;
	d->world = (int)world;
	d->local_rank = (int)local;
	return 1;
}

/* ---- small helpers ---- */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void nap(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

uint64_t lmk_dist_hash(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* A nonce no earlier run of the rendezvous file can have had. */
static uint64_t fresh_nonce(void)
{
	uint64_t v;
	if (getrandom(&v, sizeof v, 0) == (ssize_t)sizeof v)
		return v;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	v = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 40;
	return lmk_dist_hash(LMK_DIST_HASH_INIT, &v, sizeof v);
}

/* ---- the file rendezvous ---- */

/* Writes len bytes at path through a temporary file and a rename, so that
 * a reader finds the whole file or none. */
static int write_atomic(const char *path, const void *buf, size_t len)
{
	char tmp[4200];
	const char *p = buf;
	int fd;

	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
		return lmk_err(LMK_EIO, "cannot create '%s': %s", tmp, strerror(errno));
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int e = errno;
			close(fd);
			unlink(tmp);
			return lmk_err(LMK_EIO, "cannot write '%s': %s", tmp, strerror(e));
		}
		p += w;
		len -= (size_t)w;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return lmk_err(LMK_EIO, "cannot write '%s': %s", path, strerror(e));
	}
	return 0;
}

/* 1 with *len bytes read (at most cap), 0 when path does not exist. */
static int read_small(const char *path, void *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		return lmk_err(LMK_EIO, "cannot open '%s': %s", path, strerror(errno));
	}
	while (got < cap) {
		ssize_t r = read(fd, (char *)buf + got, cap - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			return lmk_err(LMK_EIO, "cannot read '%s': %s", path, strerror(e));
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return 1;
}

static void ack_path(char *buf, size_t cap, const char *path, int rank)
{
	snprintf(buf, cap, "%s.ack.%d", path, rank);
}

/* "2, 5 and 7" of the ranks 1..world-1 not marked in joined. */
static void missing_list(char *buf, size_t cap, const unsigned char *joined, int world, int *count)
{
	size_t k = 0;
	int shown = 0, miss = 0;

	buf[0] = 0;
	for (int r = 1; r < world; r++)
		miss += !joined[r];
	for (int r = 1; r < world && k + 32 < cap; r++) {
		if (joined[r])
			continue;
		shown++;
		if (shown > 8) {
			snprintf(buf + k, cap - k, " and %d more", miss - 8);
			break;
		}
		k += (size_t)snprintf(buf + k, cap - k, "%s%d", shown == 1 ? "" : shown == miss ? " and " : ", ", r);
	}
	*count = miss;
}

static int file_rank0(const lmk_dist *d, const void *id, size_t n, uint64_t fp)
{
	const int W = d->world;
	const uint64_t nonce = fresh_nonce();
	const double deadline = now() + d->timeout;
	unsigned char *rec = malloc(REC_HDR + n), *joined = calloc((size_t)W, 1), ack[ACK_LEN + 1];
	char ap[4200], who[128];
	int rc = 0, mismatch = -1, miss;

	if (!rec || !joined) {
		free(rec);
		free(joined);
		return lmk_err(LMK_ENOMEM, "out of memory");
	}
	memcpy(rec, MAGIC, 8);
	put32(rec + 8, (uint32_t)W);
	put32(rec + 12, (uint32_t)n);
	put64(rec + 16, nonce);
	put64(rec + 24, fp);
	put32(rec + 32, 0);
	put32(rec + 36, 0);
	memcpy(rec + REC_HDR, id, n);
	if ((rc = write_atomic(d->path, rec, REC_HDR + n)) < 0)
		goto out;
	for (;;) {
		int left = 0;
		for (int r = 1; r < W; r++) {
			size_t len;
			if (joined[r])
				continue;
			ack_path(ap, sizeof ap, d->path, r);
			if ((rc = read_small(ap, ack, sizeof ack, &len)) < 0)
				goto out_unlink;
			/* an answer to another nonce is left from an earlier run */
			if (rc == 1 && len == ACK_LEN && !memcmp(ack, MAGIC_ACK, 8) && get32(ack + 8) == (uint32_t)r &&
			    get64(ack + 16) == nonce) {
				joined[r] = 1;
				if (get64(ack + 24) != fp && mismatch < 0)
					mismatch = r;
				unlink(ap);
			} else {
				left++;
			}
		}
		rc = 0;
		if (!left)
			break;
		if (now() > deadline) {
			missing_list(who, sizeof who, joined, W, &miss);
			rc = lmk_err(LMK_EIO, "%s %s of %d did not come within %g s", miss == 1 ? "rank" : "ranks",
				     who, W, d->timeout);
			goto out_unlink;
		}
		nap(POLL_MS);
	}
	if (mismatch >= 0) {
		rc = lmk_err(LMK_EINVAL, "rank %d runs another training than rank 0 (other options, data "
			     "or initial weights)", mismatch);
		goto out_unlink;
	}
	/* its removal tells the others that everyone came */
	unlink(d->path);
	goto out;
out_unlink:
	/* the others that came must not go on: a record that says so, for
	 * this nonce (ranks of a later run ignore it, and its rank 0
	 * replaces it) */
	put32(rec + 32, 1);
	write_atomic(d->path, rec, REC_HDR + n);
out:
	free(rec);
	free(joined);
	return rc;
}

static int file_peer(const lmk_dist *d, void *id, size_t n, uint64_t fp)
{
	double deadline = now() + d->timeout;
	const size_t cap = REC_HDR + n + 1;
	unsigned char *rec = malloc(cap), ack[ACK_LEN];
	char ap[4200];
	uint64_t nonce = 0, fp0 = 0;
	int rc, acked = 0, other = 0;

	if (!rec)
		return lmk_err(LMK_ENOMEM, "out of memory");
	ack_path(ap, sizeof ap, d->path, d->rank);
	for (;;) {
		size_t len;
		if ((rc = read_small(d->path, rec, cap, &len)) < 0)
			break;
		if (rc == 1) {
			if (len == REC_HDR + n && !memcmp(rec, MAGIC, 8) && get32(rec + 8) == (uint32_t)d->world &&
			    get32(rec + 12) == (uint32_t)n) {
				if (get32(rec + 32) != 0) {
					/* rank 0 gave up: on this rank's record, or on
					 * one of an earlier run (ignored) */
					if (acked && get64(rec + 16) == nonce) {
						if (fp0 != fp)
							rc = lmk_err(LMK_EINVAL, "rank %d runs another training than "
								     "rank 0 (other options, data or initial "
								     "weights)", d->rank);
						else
							rc = lmk_err(LMK_EIO, "rank %d of %d: rank 0 gave up (a rank "
								     "did not come in time, or runs another "
								     "training)", d->rank, d->world);
						break;
					}
				} else if (!acked || get64(rec + 16) != nonce) {
					/* a new record: from this run's rank 0, or the
					 * first one seen, perhaps left by an earlier run */
					nonce = get64(rec + 16);
					fp0 = get64(rec + 24);
					memcpy(id, rec + REC_HDR, n);
					memcpy(ack, MAGIC_ACK, 8);
					put32(ack + 8, (uint32_t)d->rank);
					put32(ack + 12, 0);
					put64(ack + 16, nonce);
					put64(ack + 24, fp);
					if ((rc = write_atomic(ap, ack, sizeof ack)) < 0)
						break;
					acked = 1;
					/* rank 0 wrote the record before: it gives
					 * up by then */
					deadline = now() + d->timeout + VERDICT_S;
				}
			} else if (len >= 16 && !memcmp(rec, MAGIC, 8)) {
				other = (int)get32(rec + 8);
			}
		} else if (acked) {
			/* gone after this rank answered: rank 0 has all of them */
			rc = 0;
			if (fp0 != fp)
				rc = lmk_err(LMK_EINVAL, "rank %d runs another training than rank 0 (other "
					     "options, data or initial weights)", d->rank);
			break;
		}
		if (now() > deadline) {
			if (acked)
				rc = lmk_err(LMK_EIO, "rank %d of %d: the group did not complete within %g s (rank 0 "
					     "waits for ranks that did not come, or the file was left by an "
					     "earlier run)", d->rank, d->world, d->timeout);
			else if (other)
				rc = lmk_err(LMK_EIO, "rank %d of %d: the file is for a group of %d ranks (left by "
					     "another run?) and rank 0 did not replace it within %g s", d->rank,
					     d->world, other, d->timeout);
			else
				rc = lmk_err(LMK_EIO, "rank %d of %d: rank 0 did not come within %g s", d->rank,
					     d->world, d->timeout);
			unlink(ap);
			break;
		}
		nap(POLL_MS);
	}
	free(rec);
	return rc;
}

/* ---- the TCP rendezvous ---- */

static int ms_left(double deadline)
{
	double s = deadline - now();
	return s <= 0 ? 0 : s > 3600 ? 3600000 : (int)(s * 1000) + 1;
}

/* n bytes from fd by deadline. @return : 1, 0 at end of stream, -1 error,
 * -2 timeout */
static int recv_all(int fd, void *buf, size_t n, double deadline)
{
	size_t got = 0;
	while (got < n) {
		struct pollfd pf = { fd, POLLIN, 0 };
		int ms = ms_left(deadline), r;
		if (ms == 0)
			return -2;
		r = poll(&pf, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			return -2;
		ssize_t k = recv(fd, (char *)buf + got, n - got, 0);
		if (k < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (k < 0)
			return -1;
		if (k == 0)
			return 0;
		got += (size_t)k;
	}
	return 1;
}

static int send_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int tcp_listen(const lmk_dist *d)
{
	struct addrinfo hints, *res, *ai;
	char port[16];
	int fd = -1, err = 0, rc, one = 1;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(port, sizeof port, "%d", d->port);
	if ((rc = getaddrinfo(NULL, port, &hints, &res)) != 0)
		return lmk_err(LMK_EIO, "cannot listen on port %s: %s", port, gai_strerror(rc));
	/* IPv6 first: on Linux it takes IPv4 peers too */
	for (int pass = 0; pass < 2 && fd < 0; pass++)
		for (ai = res; ai && fd < 0; ai = ai->ai_next) {
			if ((pass == 0) != (ai->ai_family == AF_INET6))
				continue;
			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
			if (fd < 0) {
				err = errno;
				continue;
			}
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
			if (ai->ai_family == AF_INET6) {
				int zero = 0;
				setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
			}
			if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
				err = errno;
				close(fd);
				fd = -1;
			}
		}
	freeaddrinfo(res);
	if (fd < 0) {
		if (err == EADDRINUSE)
			return lmk_err(LMK_EIO, "port %d is in use (another run, or a launcher's own store: "
				       "choose another port)", d->port);
		return lmk_err(LMK_EIO, "cannot listen on port %d: %s", d->port, strerror(err));
	}
	return fd;
}

/* Tells a rank that came why the rendezvous failed (code: lib/err.h's). */
static void refuse(int fd, int code, const char *why)
{
	unsigned char r[REPLY_HDR + 200];
	size_t len = strlen(why) < 200 ? strlen(why) : 200;
	memcpy(r, MAGIC, 8);
	put32(r + 8, (uint32_t)-code);
	put32(r + 12, (uint32_t)len);
	put64(r + 16, 0);
	memcpy(r + REPLY_HDR, why, len);
	send_all(fd, r, REPLY_HDR + len);
	close(fd);
}

static int tcp_rank0(const lmk_dist *d, const void *id, size_t n, uint64_t fp)
{
	const int W = d->world;
	const double deadline = now() + d->timeout;
	int *fds = malloc((size_t)W * sizeof *fds), lfd, rc = 0, mismatch = -1, joined_n = 1, miss;
	unsigned char *joined = calloc((size_t)W, 1), *reply = malloc(REPLY_HDR + n);
	char who[128];

	if (!fds || !joined || !reply) {
		rc = lmk_err(LMK_ENOMEM, "out of memory");
		goto out;
	}
	for (int r = 0; r < W; r++)
		fds[r] = -1;
	joined[0] = 1;
	if ((lfd = tcp_listen(d)) < 0) {
		rc = lfd;
		goto out;
	}
	while (joined_n < W) {
		struct pollfd pf = { lfd, POLLIN, 0 };
		unsigned char h[HELLO_LEN];
		int ms = ms_left(deadline), r, cfd, one = 1;
		if (ms == 0 || (r = poll(&pf, 1, ms)) == 0) {
			missing_list(who, sizeof who, joined, W, &miss);
			rc = lmk_err(LMK_EIO, "%s %s of %d did not come within %g s", miss == 1 ? "rank" : "ranks",
				     who, W, d->timeout);
			break;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			rc = lmk_err(LMK_EIO, "poll: %s", strerror(errno));
			break;
		}
		if ((cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0)
			continue;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		/* a connection that says nothing is not a rank: at most 10 s */
		r = recv_all(cfd, h, sizeof h, now() + 10 < deadline ? now() + 10 : deadline);
		if (r != 1 || memcmp(h, MAGIC, 8)) {
			close(cfd);
			continue;
		}
		uint32_t hr = get32(h + 8), hw = get32(h + 12), hn = get32(h + 16);
		if (hw != (uint32_t)W || hn != (uint32_t)n) {
			char why[160];
			snprintf(why, sizeof why, "rank 0's group has %d ranks and %zu bytes to hand out", W, n);
			refuse(cfd, LMK_EINVAL, why);
			rc = lmk_err(LMK_EINVAL, "a rank %u of a group of %u ranks came (this group has %d): "
				     "check WORLD_SIZE and the rendezvous address", hr, hw, W);
			break;
		}
		if (hr == 0 || hr >= (uint32_t)W || joined[hr]) {
			refuse(cfd, LMK_EINVAL, hr == 0 ? "rank 0 is here already" : "this rank came twice");
			rc = lmk_err(LMK_EINVAL, "rank %u came %s", hr, hr == 0 ? "twice: two processes say "
				     "they are rank 0" : "twice: two processes have the same RANK");
			break;
		}
		joined[hr] = 1;
		joined_n++;
		fds[hr] = cfd;
		if (get64(h + 24) != fp && mismatch < 0)
			mismatch = (int)hr;
	}
	close(lfd);
	if (rc == 0 && mismatch >= 0)
		rc = lmk_err(LMK_EINVAL, "rank %d runs another training than rank 0 (other options, "
			     "data or initial weights)", mismatch);
	if (rc == 0) {
		memcpy(reply, MAGIC, 8);
		put32(reply + 8, 0);
		put32(reply + 12, (uint32_t)n);
		put64(reply + 16, fp);
		memcpy(reply + REPLY_HDR, id, n);
		for (int r = 1; r < W && rc == 0; r++)
			if (send_all(fds[r], reply, REPLY_HDR + n) < 0)
				rc = lmk_err(LMK_EIO, "rank %d went away: %s", r, strerror(errno));
	} else {
		/* the ranks that came hear why they will not go on */
		char why[200];
		snprintf(why, sizeof why, "%s", lmk_errmsg());
		for (int r = 1; r < W; r++)
			if (fds[r] >= 0) {
				refuse(fds[r], rc, why);
				fds[r] = -1;
			}
	}
out:
	if (fds)
		for (int r = 1; r < W; r++)
			if (fds[r] >= 0)
				close(fds[r]);
	free(fds);
	free(joined);
	free(reply);
	return rc;
}

/* A connected socket to host:port, trying until deadline while nobody
 * listens there yet. */
static int tcp_connect(const lmk_dist *d, double deadline)
{
	struct addrinfo hints, *res, *ai;
	char port[16];
	int err = 0, rc;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof port, "%d", d->port);
	for (;;) {
		if ((rc = getaddrinfo(d->host, port, &hints, &res)) != 0) {
			if (rc != EAI_AGAIN || now() > deadline)
				return lmk_err(LMK_EIO, "cannot resolve '%s': %s", d->host, gai_strerror(rc));
			nap(100);
			continue;
		}
		for (ai = res; ai; ai = ai->ai_next) {
			int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
			if (fd < 0) {
				err = errno;
				continue;
			}
			if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
				err = errno;
				close(fd);
				continue;
			}
			/* a host that does not answer at all: a few seconds a try */
			struct pollfd pf = { fd, POLLOUT, 0 };
			int ms = ms_left(deadline), soerr = 0;
			socklen_t sl = sizeof soerr;
			if (ms > 5000)
				ms = 5000;
			if (poll(&pf, 1, ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
			    soerr == 0) {
				int fl = fcntl(fd, F_GETFL), one = 1;
				fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				freeaddrinfo(res);
				return fd;
			}
			err = soerr ? soerr : ETIMEDOUT;
			close(fd);
		}
		freeaddrinfo(res);
		if (now() > deadline)
			return lmk_err(LMK_EIO, "rank %d of %d: cannot reach rank 0 within %g s: %s", d->rank,
				       d->world, d->timeout, strerror(err));
		nap(100);
	}
}

static int tcp_peer(const lmk_dist *d, void *id, size_t n, uint64_t fp)
{
	double deadline = now() + d->timeout;
	unsigned char h[HELLO_LEN], rh[REPLY_HDR];
	char why[201];
	int fd, r, rc = 0;

	if ((fd = tcp_connect(d, deadline)) < 0)
		return fd;
	/* rank 0 listened before: it gives up by then */
	deadline = now() + d->timeout + VERDICT_S;
	memcpy(h, MAGIC, 8);
	put32(h + 8, (uint32_t)d->rank);
	put32(h + 12, (uint32_t)d->world);
	put32(h + 16, (uint32_t)n);
	put32(h + 20, 0);
	put64(h + 24, fp);
	if (send_all(fd, h, sizeof h) < 0) {
		rc = lmk_err(LMK_EIO, "rank %d of %d: cannot talk to rank 0: %s", d->rank, d->world, strerror(errno));
		goto out;
	}
	r = recv_all(fd, rh, sizeof rh, deadline);
	if (r == -2) {
		rc = lmk_err(LMK_EIO, "rank %d of %d: no answer from rank 0 within %g s (it waits for ranks "
			     "that did not come?)", d->rank, d->world, d->timeout);
		goto out;
	}
	if (r != 1 || memcmp(rh, MAGIC, 8)) {
		rc = lmk_err(LMK_EIO, "rank %d of %d: rank 0 closed the connection (a rank did not come in "
			     "time, or rank 0 failed)", d->rank, d->world);
		goto out;
	}
	if (get32(rh + 8) != 0) {
		uint32_t len = get32(rh + 12), code = get32(rh + 8);
		if (len > 200)
			len = 200;
		if (recv_all(fd, why, len, deadline) != 1)
			len = 0;
		why[len] = 0;
		rc = lmk_err(code == (uint32_t)-LMK_EINVAL ? LMK_EINVAL : LMK_EIO, "rank %d of %d: rank 0 gave up: %s",
			     d->rank, d->world, why);
		goto out;
	}
	if (get32(rh + 12) != (uint32_t)n || recv_all(fd, id, n, deadline) != 1) {
		rc = lmk_err(LMK_EIO, "rank %d of %d: a short answer from rank 0", d->rank, d->world);
		goto out;
	}
	if (get64(rh + 16) != fp)
		rc = lmk_err(LMK_EINVAL, "rank %d runs another training than rank 0 (other options, data "
			     "or initial weights)", d->rank);
out:
	close(fd);
	return rc;
}

int lmk_dist_rendezvous(const lmk_dist *d, void *id, size_t n, uint64_t fingerprint)
{
	int rc;

	if (d->world < 1 || d->rank < 0 || d->rank >= d->world)
		return lmk_err(LMK_EINVAL, "rendezvous: rank %d of %d", d->rank, d->world);
	if (n > MAX_ID)
		return lmk_err(LMK_EINVAL, "rendezvous: %zu bytes to hand out, at most %zu", n, MAX_ID);
	if (d->kind == LMK_RDZV_FILE) {
		rc = d->rank == 0 ? file_rank0(d, id, n, fingerprint) : file_peer(d, id, n, fingerprint);
		if (rc < 0)
			return lmk_err_wrap(rc, "rendezvous file:%s", d->path);
		return 0;
	}
	if (d->kind == LMK_RDZV_TCP) {
		rc = d->rank == 0 ? tcp_rank0(d, id, n, fingerprint) : tcp_peer(d, id, n, fingerprint);
		if (rc < 0)
			return lmk_err_wrap(rc, strchr(d->host, ':') ? "rendezvous tcp:[%s]:%d" : "rendezvous tcp:%s:%d",
					    d->host, d->port);
		return 0;
	}
	return lmk_err(LMK_EINVAL, "rendezvous: none given (file:PATH or tcp:HOST:PORT)");
}

/* ---- buckets ---- */

int lmk_dist_buckets(const size_t *off, int nt, size_t n, size_t max_elems, int *first)
{
	int nb = 0, i = nt - 1;
	size_t end = n;

	while (i >= 0) {
		int j = i;
		while (j > 0 && end - off[j - 1] <= max_elems)
			j--;
		first[nb++] = j;
		end = off[j];
		i = j - 1;
	}
	return nb;
}

/* ---- the local launcher ---- */

extern char **environ;

/* environ without the variables a rank is told, then those. */
static char **rank_env(int r, int n)
{
	static const char *const mine[] = { "RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=" };
	size_t ne = 0, k = 0;
	char **e;

	while (environ[ne])
		ne++;
	if (!(e = calloc(ne + 5, sizeof *e)))
		return NULL;
	for (size_t i = 0; i < ne; i++) {
		int skip = 0;
		for (int j = 0; j < 4; j++)
			skip |= strncmp(environ[i], mine[j], strlen(mine[j])) == 0;
		if (!skip)
			e[k++] = environ[i];
	}
	for (int j = 0; j < 4; j++) {
		char buf[64];
		snprintf(buf, sizeof buf, "%s%d", mine[j], j == 0 || j == 2 ? r : n);
		if (!(e[k++] = strdup(buf))) {
			free(e);
			return NULL;
		}
	}
	e[k] = NULL;
	return e;
}

static void free_env(char **e)
{
	size_t ne = 0;
	if (!e)
		return;
	while (e[ne])
		ne++;
	for (size_t i = ne >= 4 ? ne - 4 : 0; i < ne; i++)
		free(e[i]);
	free(e);
}

static void kill_all(const pid_t *pid, const int *alive, int n, int sig)
{
	for (int r = 0; r < n; r++)
		if (alive[r])
			kill(pid[r], sig);
}

int lmk_dist_launch(const char *exe, char *const argv[], int n, double grace, lmk_dist_exit *ex)
{
	sigset_t set, old;
	pid_t *pid = calloc((size_t)(n > 0 ? n : 1), sizeof *pid), self = getpid();
	int *alive = calloc((size_t)(n > 0 ? n : 1), sizeof *alive);
	char ***envs = calloc((size_t)(n > 0 ? n : 1), sizeof *envs);
	int rc = 0, started = 0, nalive = 0, stop = 0, nsig = 0, hard = 0, terminated = 0, status0 = 0;
	double kill_at = 0;

	ex->status = 0;
	ex->rank = -1;
	ex->signal = 0;
	if (!pid || !alive || !envs) {
		rc = lmk_err(LMK_ENOMEM, "out of memory");
		goto out;
	}
	if (n < 1) {
		rc = lmk_err(LMK_EINVAL, "launch: %d copies", n);
		goto out;
	}
	/* everything a child needs is made before fork: after it, a child
	 * of a process with threads may only exec */
	for (int r = 0; r < n; r++)
		if (!(envs[r] = rank_env(r, n))) {
			rc = lmk_err(LMK_ENOMEM, "out of memory");
			goto out;
		}
	/* signals are taken with sigtimedwait below, never by a handler */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);

	for (int r = 0; r < n; r++) {
		int pfd[2], e = 0;
		ssize_t k;
		if (pipe2(pfd, O_CLOEXEC) < 0) {
			rc = lmk_err(LMK_EIO, "cannot start rank %d: %s", r, strerror(errno));
			break;
		}
		pid[r] = fork();
		if (pid[r] < 0) {
			rc = lmk_err(LMK_EIO, "cannot start rank %d: %s", r, strerror(errno));
			close(pfd[0]);
			close(pfd[1]);
			break;
		}
		if (pid[r] == 0) {
			close(pfd[0]);
			sigprocmask(SIG_SETMASK, &old, NULL);
			/* its own group: a terminal's ^C reaches the launcher,
			 * which passes it on once */
			setpgid(0, 0);
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() != self)
				_exit(127);
			execve(exe, argv, envs[r]);
			e = errno;
			if (write(pfd[1], &e, sizeof e) < 0)
				_exit(127);
			_exit(127);
		}
		setpgid(pid[r], pid[r]);
		close(pfd[1]);
		/* the pipe closes on a successful exec, or says why not */
		do
			k = read(pfd[0], &e, sizeof e);
		while (k < 0 && errno == EINTR);
		close(pfd[0]);
		alive[r] = 1;
		nalive++;
		started++;
		if (k == (ssize_t)sizeof e) {
			rc = lmk_err(LMK_EIO, "cannot run '%s': %s", exe, strerror(e));
			break;
		}
	}
	if (rc < 0) {
		kill_all(pid, alive, n, SIGKILL);
		for (int r = 0; r < started; r++)
			while (waitpid(pid[r], NULL, 0) < 0 && errno == EINTR)
				;
		sigprocmask(SIG_SETMASK, &old, NULL);
		goto out;
	}

	while (nalive > 0) {
		struct timespec tick = { 0, 50 * 1000000L };
		siginfo_t si;
		int sig;

		for (int r = 0; r < n; r++) {
			int st, code, by_us;
			pid_t w;
			if (!alive[r])
				continue;
			w = waitpid(pid[r], &st, WNOHANG);
			if (w == 0 || (w < 0 && errno == EINTR))
				continue;
			alive[r] = 0;
			nalive--;
			if (w < 0) /* not ours any more: nothing to learn */
				continue;
			code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			if (r == 0)
				status0 = code;
			/* what we asked for is not a failure: ending after the
			 * stop we passed on, or being ended by us */
			by_us = (stop && code == 128 + stop) ||
				(WIFSIGNALED(st) && (terminated || hard) &&
				 (WTERMSIG(st) == SIGTERM || WTERMSIG(st) == SIGKILL)) ||
				(WIFSIGNALED(st) && stop && WTERMSIG(st) == stop);
			if (code != 0 && !by_us && ex->rank < 0) {
				ex->rank = r;
				ex->status = code;
				ex->signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
				if (nalive > 0) {
					kill_all(pid, alive, n, SIGTERM);
					terminated = 1;
					kill_at = now() + grace;
				}
			}
		}
		if (nalive == 0)
			break;
		if (kill_at > 0 && now() >= kill_at) {
			kill_all(pid, alive, n, SIGKILL);
			kill_at = 0;
		}
		sig = sigtimedwait(&set, &si, &tick);
		if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
			nsig++;
			if (nsig == 1 && !terminated) {
				/* the ranks treat a hang-up as a request to stop */
				stop = sig == SIGHUP ? SIGTERM : sig;
				kill_all(pid, alive, n, stop);
			} else {
				if (!stop)
					stop = sig;
				hard = 1;
				kill_all(pid, alive, n, SIGKILL);
			}
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (ex->rank < 0) {
		if (hard)
			ex->status = 128 + stop;
		else if (stop)
			ex->status = status0;
	}
out:
	if (envs)
		for (int r = 0; r < n; r++)
			free_env(envs[r]);
	free(envs);
	free(pid);
	free(alive);
	return rc;
}
