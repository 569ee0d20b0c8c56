/* dist.h: the bookkeeping of data-parallel training with one process per
 * GPU: which rank of how many this process is (from the environment that
 * torchrun- and Slurm-style launchers set, or from lmk_dist_launch, which
 * starts N copies of a program on this machine), where the ranks meet (a
 * rendezvous: a file on a file system they share, or a TCP port of rank 0),
 * the one exchange done there (rank 0's bytes, the NCCL unique id, handed
 * to every other rank, each rank's fingerprint of its run checked against
 * rank 0's), and the gradient buckets' layout. Everything after the
 * rendezvous (all-reduce) is NCCL's, in cuda/nccl_dp.h.
 * Owns: the rank numbers and the rendezvous address, the launched
 * processes. Needs: err, POSIX files, sockets and processes.
 * Never: prints, exits, or touches a GPU. */
#ifndef LMK_DIST_H
#define LMK_DIST_H

#include <stddef.h>
#include <stdint.h>

/* Seconds a rank waits for the others at the rendezvous, unless
 * LMK_RENDEZVOUS_TIMEOUT says otherwise. */
#define LMK_DIST_TIMEOUT 300.0
/* Gradient bucket size (PyTorch DDP's default). */
#define LMK_DIST_BUCKET_BYTES ((size_t)25 << 20)

typedef enum { LMK_RDZV_NONE, LMK_RDZV_FILE, LMK_RDZV_TCP } lmk_rdzv_kind;

typedef struct lmk_dist {
	int rank;            /* 0 .. world-1; rank 0 publishes, saves, reports */
	int world;           /* number of ranks */
	int local_rank;      /* rank among those of this machine: its GPU */
	lmk_rdzv_kind kind;
	char path[4096];     /* FILE: the rendezvous file */
	char host[256];      /* TCP: rank 0's host name or address */
	int port;            /* TCP: rank 0's port */
	double timeout;      /* seconds to wait for the others */
	size_t bucket_bytes; /* gradient all-reduce granularity */
} lmk_dist;

/* Rank 0 of 1, no rendezvous, the default timeout and bucket size. */
void lmk_dist_init(lmk_dist *d);

/* Parses "file:PATH" or "tcp:HOST:PORT" (HOST a name, an IPv4 address or
 * an IPv6 one in brackets; PORT 1 to 65535) into d's rendezvous.
 * @return : 0, or LMK_EINVAL saying what was expected */
int lmk_dist_parse_rendezvous(lmk_dist *d, const char *s);

/* Reads the environment launchers set: RANK, WORLD_SIZE and LOCAL_RANK
 * (torchrun, lmk_dist_launch), else SLURM_PROCID, SLURM_NTASKS and
 * SLURM_LOCALID (srun); LOCAL_RANK defaults to RANK. Unless d has a
 * rendezvous already, MASTER_ADDR and MASTER_PORT give tcp:ADDR:PORT (PORT
 * + 1 when TORCHELASTIC_USE_AGENT_STORE is True: torchrun's own store holds
 * MASTER_PORT then). LMK_RENDEZVOUS_TIMEOUT sets the timeout in seconds,
 * LMK_BUCKET_BYTES the gradient buckets' size (for tests of many buckets).
 * The environment makes this process a rank of a group when WORLD_SIZE is
 * set, or when SLURM_NTASKS is and a rendezvous is known (given, or from
 * MASTER_ADDR): a Slurm job's single task stays a single process.
 * @return : 1 when it does (d filled), 0 when it does not (d's ranks
 * untouched), or LMK_EINVAL naming a malformed or inconsistent variable */
int lmk_dist_from_env(lmk_dist *d);

/* The rendezvous: rank 0 hands n bytes at id (which it filled) to every
 * other rank (whose id receives them), once all world ranks have come, or
 * fails after d->timeout seconds naming the ranks that did not. Each rank
 * gives a fingerprint of its run (options, data, initial weights); ranks
 * whose fingerprint differs from rank 0's fail, and so does rank 0.
 * FILE: rank 0 writes PATH (atomically, with a fresh random nonce), every
 * other rank answers with PATH.ack.R holding that nonce, and rank 0 removes
 * both once all have answered, which the others take as the go; a PATH
 * left by an earlier run is replaced by rank 0 and answered again, so it
 * does no harm. The directory must be shared by all ranks.
 * TCP: rank 0 listens on PORT (every interface), the others connect to
 * HOST:PORT (retrying until rank 0 listens) and say who they are; rank 0
 * answers all of them once all have come.
 * @return : 0, LMK_EIO (a file or socket failed; a peer missing within the
 * timeout), LMK_EINVAL (no rendezvous; a peer of another group or run) */
int lmk_dist_rendezvous(const lmk_dist *d, void *id, size_t n, uint64_t fingerprint);

/* 64-bit FNV-1a of n bytes, continued from h (start with
 * LMK_DIST_HASH_INIT): fingerprints of runs. */
#define LMK_DIST_HASH_INIT 0xcbf29ce484222325ull
uint64_t lmk_dist_hash(uint64_t h, const void *p, size_t n);

/* Gradient buckets over a buffer of n elements holding nt tensors that
 * start at element offsets off[0] < off[1] < ... (off[0] = 0): bucket 0
 * holds the last tensors (a backward pass finishes them first), each bucket
 * consecutive tensors of at most max_elems elements in all, or a single
 * larger tensor. Bucket k holds tensors first[k] .. end-1, where end is nt
 * for k = 0 and first[k-1] after, and so elements off[first[k]] up to
 * off[end] (or n): padding between tensors included, the buckets tile the
 * buffer. first has room for nt entries.
 * @return : the number of buckets (1 .. nt; 0 when nt is 0) */
int lmk_dist_buckets(const size_t *off, int nt, size_t n, size_t max_elems, int *first);

/* How a group of launched processes ended. */
typedef struct lmk_dist_exit {
	int status;          /* what the launcher exits with: 0 when every rank
			      * succeeded; the first failed rank's exit status
			      * (128 + signal when a signal killed it); else
			      * 128 + the signal that stopped the run */
	int rank;            /* the first rank that failed, or -1 */
	int signal;          /* the signal that killed that rank, or 0 when it
			      * exited (and said why itself) */
} lmk_dist_exit;

/* Runs n copies of the program exe (argv: NULL-ended, argv[0] included):
 * copy r with RANK=r, WORLD_SIZE=n, LOCAL_RANK=r and LOCAL_WORLD_SIZE=n in
 * its environment, in a process group of its own, sent SIGTERM if this
 * process dies. Waits for all of them. The first SIGINT or SIGTERM this
 * process gets is passed on to every copy (a training run then stops after
 * its step, as lmk_train_catch_signals says); a second kills them. When a
 * copy fails (exits non-zero, or is killed by a signal that was not passed
 * on), the others are sent SIGTERM, and SIGKILL grace seconds later:
 * ranks of a group cannot go on without one of theirs.
 * @return : 0 with *ex filled, or LMK_EIO when a copy cannot be started
 * (the ones started are stopped) or waiting fails */
int lmk_dist_launch(const char *exe, char *const argv[], int n, double grace, lmk_dist_exit *ex);

#endif
