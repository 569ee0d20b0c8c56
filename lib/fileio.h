/* fileio.h: the small file chores that several modules share: writing a
 * whole file atomically (temporary file beside it, fsync, rename, so that a
 * reader never sees half a file) and making a directory with its parents.
 * Owns: nothing. Needs: err, POSIX. Never: prints or exits. */
#ifndef LMK_FILEIO_H
#define LMK_FILEIO_H

#include <stddef.h>

/* Writes len bytes to path atomically, mode 0644.
 * @return : 0, LMK_ENOMEM or LMK_EIO naming the file */
int lmk_write_file_atomic(const char *path, const void *data, size_t len);
/* mkdir -p. @return : 0, LMK_ENOMEM or LMK_EIO naming the directory */
int lmk_mkdirs(const char *dir);
/* dir + "/" + name, malloc'd. @return : NULL with LMK_ENOMEM recorded */
char *lmk_path_join(const char *dir, const char *name);

#endif
