/* frame.h: tensor frames, the one binary format every program reads and writes.
 * A frame is byte for byte a safetensors file: an 8-byte little-endian header
 * length N, N bytes of JSON header ({"name": {"dtype", "shape",
 * "data_offsets"}, "__metadata__": {string: string}}), then the raw
 * little-endian data. A stream is a sequence of frames. Readers stream (no
 * seek), accept gzip transparently, map large regular files, and treat every
 * byte as hostile. Writers write atomically (temporary file, fsync, rename).
 * Owns: frames, readers, writers. Needs: jansson, zlib, dtype, err.
 * Never: prints, exits, or refuses a terminal (that is the program's call). */
#ifndef LMK_FRAME_H
#define LMK_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define LMK_FRAME_MAXDIM 8
/* Largest header accepted, as in the safetensors reference (100 MB). */
#define LMK_FRAME_MAXHEADER (100u << 20)

typedef struct {
	char *name;
	lmk_dtype dtype;
	int ndim;
	int64_t shape[LMK_FRAME_MAXDIM];
	size_t nbytes;
	const void *data;   /* inside the frame's storage; any alignment */
} lmk_ftensor;

struct lmk_blob;        /* reference-counted storage (heap or a mapping) */

typedef struct {
	int ntensors;
	lmk_ftensor *t;     /* read frames: in order of data offset */
	int nmeta;
	char **key, **val;  /* __metadata__, in header order */
	struct lmk_blob **blobs; /* storage this frame holds references to */
	int nblobs;
	int cap, metacap, blobcap;
} lmk_frame;

/* Building and inspecting a frame. */
void lmk_frame_init(lmk_frame *f);
void lmk_frame_free(lmk_frame *f);
/* Adds a tensor whose data the caller keeps alive until the frame is
 * written or freed. shape may be NULL when ndim is 0; data may be NULL when
 * the tensor is empty. Names are non-empty UTF-8, not "__metadata__".
 * @return : 0, LMK_EINVAL (bad name, dtype, ndim, or duplicate), LMK_ENOMEM */
int lmk_frame_add(lmk_frame *f, const char *name, lmk_dtype dt, int ndim,
		  const int64_t *shape, const void *data);
/* Same, copying the data into storage the frame owns. */
int lmk_frame_add_copy(lmk_frame *f, const char *name, lmk_dtype dt, int ndim,
		       const int64_t *shape, const void *data);
/* Sets (or replaces) a metadata entry.
 * @return : 0, LMK_EINVAL (NULL or not UTF-8) or LMK_ENOMEM */
int lmk_frame_set_meta(lmk_frame *f, const char *key, const char *val);
/* @return : the value for key, or NULL */
const char *lmk_frame_meta(const lmk_frame *f, const char *key);
/* @return : the tensor called name, or NULL */
const lmk_ftensor *lmk_frame_find(const lmk_frame *f, const char *name);
/* @return : the number of elements (1 for 0-d) */
int64_t lmk_ftensor_numel(const lmk_ftensor *t);
/* Makes dst hold references to all the storage src holds, so that tensors
 * added to dst with lmk_frame_add pointing into src's data stay valid after
 * src is freed (e.g. a frame made of some tensors of a read frame).
 * @return : 0 or LMK_ENOMEM */
int lmk_frame_keep(lmk_frame *dst, const lmk_frame *src);

/* Reading. Frames returned by next keep the storage they point into alive
 * by reference, so they outlive the reader. Frames are numbered from 0 in
 * messages. Input starting with the gzip magic 1f 8b 08 is inflated (any
 * number of concatenated members); a plain regular file of 1 MiB or more is
 * mapped (tensors then point into the mapping: truncating the file while a
 * frame is alive is undefined, as with any mapping). Tensors without data
 * point to a static empty buffer, never NULL. As in safetensors, fields of
 * a tensor entry other than dtype, shape and data_offsets are ignored, and
 * "__metadata__": null means no metadata. */
typedef struct lmk_reader lmk_reader;
/* path "-" reads standard input (messages call it "<stdin>").
 * @return : 0, or LMK_EIO with a message naming the path */
int lmk_reader_open(lmk_reader **r, const char *path);
/* Reads from fd, which the reader closes (unless it is 0, 1 or 2, which
 * stay open); name is used in messages. If fd is a large regular file it is
 * mapped from its current offset. @return : 0, LMK_EIO, LMK_ENOMEM */
int lmk_reader_fdopen(lmk_reader **r, int fd, const char *name);
/* *f is overwritten (initialised first): free the previous frame before.
 * After 0 or an error *f is empty. After an error every further call fails.
 * @return : 1 and a frame in *f, 0 at a clean end of stream, or a negative
 * code with a message "NAME: frame I: tensor 'T': expected X, found Y"
 * (LMK_EFORMAT for bad content, LMK_EIO for a failed read) */
int lmk_reader_next(lmk_reader *r, lmk_frame *f);
void lmk_reader_close(lmk_reader *r);
/* Parses one frame held in memory (no gzip); used by fuzzing and tests.
 * buf must hold exactly one frame (bytes after it are an error, as in
 * safetensors); the data is copied, so buf may go away afterwards.
 * @return : 0 or a negative code (*f is then empty) */
int lmk_frame_parse(const void *buf, size_t len, const char *name, lmk_frame *f);

/* Writing. */
typedef struct lmk_writer lmk_writer;
enum { LMK_WRITE_GZIP = 1 };
/* path "-" writes standard output; any other path is written to a
 * temporary file beside it (".NAME.tmpXXXXXXXX") and renamed into place by
 * close. LMK_WRITE_GZIP compresses the whole stream as one gzip member.
 * @return : 0 or LMK_EIO */
int lmk_writer_open(lmk_writer **w, const char *path, int flags);
/* Writes to fd, which close and abort close (unless it is 0, 1 or 2).
 * Frames written to an fd are flushed by each put (for gzip, with a zlib sync
 * flush), so a reader at the other end of a pipe gets each frame at once. */
int lmk_writer_fdopen(lmk_writer **w, int fd, const char *name, int flags);
/* Appends one frame: tensors in the frame's order, contiguous; the header
 * has "__metadata__" (first) only when there is metadata. The frame is
 * checked before anything is written, so after LMK_EINVAL the writer is
 * still usable; after LMK_EIO every further put and close fail.
 * @return : 0, LMK_EIO (EPIPE included), LMK_EINVAL */
int lmk_writer_put(lmk_writer *w, const lmk_frame *f);
/* Flushes, fsyncs and renames into place; frees w whatever happens.
 * @return : 0, or LMK_EIO, in which case nothing is left at the final name */
int lmk_writer_close(lmk_writer *w);
/* Discards everything written; removes the temporary file; frees w. */
void lmk_writer_abort(lmk_writer *w);

/* One frame to or from a path (a whole .safetensors file, gzip accepted).
 * save writes atomically; load reads the first frame and requires the
 * stream to end after it (empty input is an error too). */
int lmk_frame_save(const char *path, const lmk_frame *f, int flags);
int lmk_frame_load(const char *path, lmk_frame *f);

#endif
