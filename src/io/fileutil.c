#include "io/fileutil.h"

#include "core/error.h"
#include "core/mem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *file_read_all(const char *path, size_t max_bytes, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        loqt_set_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        loqt_set_error("%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)sb.st_size;
    if ((unsigned long long)sb.st_size > (unsigned long long)max_bytes) {
        loqt_set_error("%s: file is %llu bytes, more than the limit of %zu", path,
                       (unsigned long long)sb.st_size, max_bytes);
        close(fd);
        return NULL;
    }
    char *buf = mem_try_alloc(MEM_DATA, size + 1);
    if (!buf) {
        close(fd);
        return NULL;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r < 0) loqt_set_error("%s: read failed: %s", path, strerror(errno));
            else loqt_set_error("%s: file shrank while being read", path);
            mem_free(buf);
            close(fd);
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[size] = 0;
    if (len) *len = size;
    return buf;
}

/* Writes all of data, retrying short writes and EINTR; chunks stay under Linux's 2 GiB cap. */
static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void release(atomic_file *a) {
    free(a->path);
    free(a->tmp);
    a->path = a->tmp = NULL;
    a->fd = -1;
}

int atomic_file_open(atomic_file *a, const char *path) {
    a->fd = -1;
    a->path = strdup(path);
    a->tmp = malloc(strlen(path) + 5);
    if (!a->path || !a->tmp) {
        release(a);
        return loqt_set_error("%s: out of memory", path);
    }
    sprintf(a->tmp, "%s.tmp", path);
    /* O_TRUNC, not O_EXCL: a stale .tmp left by a crashed run must not block the next save. */
    a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (a->fd < 0) {
        int e = errno;
        release(a);
        return loqt_set_error("%s: cannot create temporary file: %s", path, strerror(e));
    }
    return 0;
}

int atomic_file_write(atomic_file *a, const void *data, size_t len) {
    if (a->fd < 0) return loqt_set_error("atomic_file_write on a closed file");
    if (write_all(a->fd, data, len) != 0)
        return loqt_set_error("%s: write failed: %s", a->tmp, strerror(errno));
    return 0;
}

void atomic_file_abort(atomic_file *a) {
    if (a->fd >= 0) close(a->fd);
    if (a->tmp) unlink(a->tmp);
    release(a);
}

int atomic_file_commit(atomic_file *a) {
    if (a->fd < 0) return loqt_set_error("atomic_file_commit on a closed file");
    if (fsync(a->fd) != 0) {
        loqt_set_error("%s: fsync failed: %s", a->tmp, strerror(errno));
        atomic_file_abort(a);
        return -1;
    }
    int fd = a->fd;
    a->fd = -1;
    if (close(fd) != 0) { /* NFS and friends report deferred write errors here */
        loqt_set_error("%s: close failed: %s", a->tmp, strerror(errno));
        atomic_file_abort(a);
        return -1;
    }
    if (rename(a->tmp, a->path) != 0) {
        loqt_set_error("%s: cannot rename temporary file into place: %s", a->path, strerror(errno));
        atomic_file_abort(a);
        return -1;
    }
    int rc = file_fsync_parent(a->path);
    release(a);
    return rc;
}

int file_write_atomic(const char *path, const void *data, size_t len) {
    atomic_file a;
    if (atomic_file_open(&a, path)) return -1;
    if (atomic_file_write(&a, data, len)) {
        atomic_file_abort(&a);
        return -1;
    }
    return atomic_file_commit(&a);
}

int file_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return loqt_set_error("%s: cannot open directory: %s", dir, strerror(errno));
    int rc = 0;
    /* Some filesystems cannot fsync directories (EINVAL): nothing more can be done there. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP)
        rc = loqt_set_error("%s: fsync of directory failed: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

int file_fsync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return file_fsync_dir(".");
    if (slash == path) return file_fsync_dir("/");
    size_t n = (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (!dir) return loqt_set_error("%s: out of memory", path);
    memcpy(dir, path, n);
    dir[n] = 0;
    int rc = file_fsync_dir(dir);
    free(dir);
    return rc;
}

int file_mkdir_p(const char *path) {
    size_t n = strlen(path);
    if (n == 0) return loqt_set_error("mkdir: empty path");
    char *buf = malloc(n + 1);
    if (!buf) return loqt_set_error("%s: out of memory", path);
    memcpy(buf, path, n + 1);
    /* Create each prefix ending before a '/', then the whole path. */
    for (size_t i = 1; i <= n; i++) {
        if (i < n && buf[i] != '/') continue;
        if (i < n && buf[i - 1] == '/') continue; /* "a//b" */
        char saved = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            loqt_set_error("%s: cannot create directory: %s", buf, strerror(e));
            free(buf);
            return -1;
        }
        struct stat sb;
        if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            loqt_set_error("%s: exists and is not a directory", buf);
            free(buf);
            return -1;
        }
        buf[i] = saved;
    }
    free(buf);
    return 0;
}

void file_remove_tree(const char *dir) {
    struct stat top;
    if (lstat(dir, &top) == 0 && !S_ISDIR(top.st_mode)) { /* a link (or file): not followed */
        unlink(dir);
        return;
    }
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) file_remove_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}
