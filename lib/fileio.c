/* fileio.c: atomic whole-file writes and mkdir -p (fileio.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fileio.h"

/* Writes len bytes to path through a temporary file beside it, fsynced and
 * renamed, so a reader never sees half a file. */
int lmk_write_file_atomic(const char *path, const void *data, size_t len)
{
	size_t pl = strlen(path);
	char *tmp = malloc(pl + 16);
	if (!tmp)
		return lmk_err(LMK_ENOMEM, "%s: cannot allocate", path);
	memcpy(tmp, path, pl);
	memcpy(tmp + pl, ".tmp.XXXXXX", 12);
	int fd = mkstemp(tmp);
	if (fd < 0) {
		int rc = lmk_err(LMK_EIO, "cannot create '%s': %s", tmp, strerror(errno));
		free(tmp);
		return rc;
	}
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, (const char *)data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto fail;
		off += (size_t)w;
	}
	if (fchmod(fd, 0644) != 0 || fsync(fd) != 0)
		goto fail;
	if (close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto fail;
	free(tmp);
	return 0;
fail:;
	int rc = lmk_err(LMK_EIO, "cannot write '%s': %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return rc;
}

/* mkdir -p */
int lmk_mkdirs(const char *dir)
{
	char *p = strdup(dir);
	if (!p)
		return lmk_err(LMK_ENOMEM, "cannot allocate a path");
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != 0)
			continue;
		char keep = *s;
		*s = 0;
		if (mkdir(p, 0777) != 0 && errno != EEXIST) {
			int rc = lmk_err(LMK_EIO, "cannot create directory '%s': %s", p,
					 strerror(errno));
			free(p);
			return rc;
		}
		if (keep == 0)
			break;
		*s = keep;
	}
	free(p);
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return lmk_err(LMK_EIO, "'%s' is not a directory", dir);
	return 0;
}

char *lmk_path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);
	if (!p) {
		lmk_err(LMK_ENOMEM, "cannot allocate a path");
		return NULL;
	}
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}
