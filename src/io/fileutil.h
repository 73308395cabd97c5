/* File helpers: whole-file reads with a size cap, crash-safe writes, mkdir -p.
 *
 * Atomic writes put the data in "<path>.tmp" in the same directory (rename is only atomic within
 * one filesystem), fsync it, rename it over <path> and fsync the directory, so after a crash or
 * power loss <path> holds either its old contents or the complete new ones, never a mix.
 * All functions return 0 / non-NULL on success, -1 / NULL with an error naming the file. */
#ifndef LOQT_FILEUTIL_H
#define LOQT_FILEUTIL_H

#include <stddef.h>

/* Reads the regular file at path into a buffer from mem_try_alloc(MEM_DATA), NUL-terminated (the
 * NUL is not counted in *len).  Refuses files larger than max_bytes.  Release with mem_free. */
char *file_read_all(const char *path, size_t max_bytes, size_t *len);

/* Streaming atomic write, for files too large to build in memory first. */
typedef struct {
    int fd;
    char *path; /* final name */
    char *tmp;  /* "<path>.tmp" */
} atomic_file;

int atomic_file_open(atomic_file *a, const char *path);
int atomic_file_write(atomic_file *a, const void *data, size_t len);
/* fsync + close + rename + fsync of the directory.  On failure the temporary file is removed.
 * Either way `a` is released. */
int atomic_file_commit(atomic_file *a);
/* Closes and removes the temporary file; <path> is untouched.  Safe on a released `a`. */
void atomic_file_abort(atomic_file *a);

/* The whole of data[0..len) written atomically to path. */
int file_write_atomic(const char *path, const void *data, size_t len);

/* Creates path and any missing parents (like mkdir -p); existing directories are fine. */
int file_mkdir_p(const char *path);
/* Removes a directory tree that loqt itself wrote (a stale .tmp or .old checkpoint, a run's
 * checkpoints under --overwrite); symbolic links are removed, not followed. */
void file_remove_tree(const char *dir);
/* fsyncs a directory so that entries created or renamed in it are durable. */
int file_fsync_dir(const char *dir);
/* fsyncs the directory that contains path ("." for a bare name). */
int file_fsync_parent(const char *path);

#endif
