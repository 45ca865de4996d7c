// paths.c: checks of the paths a program is given (see paths.h).
#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

int path_printf(char *buf, size_t cap, const char *fmt, ...) {
    CHECK(cap > 0);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < cap) return 0;
    return errorf("%.80s...: path too long (%d characters, at most %zu)", buf, n, cap - 1);
}

static const char *not_regular(mode_t mode) {
    return S_ISDIR(mode) ? "is a folder" : "is not a regular file (a FIFO, socket or device)";
}

int regular_file(const char *path, const char **why) {
    struct stat st;
    const char *r = NULL;
    if (stat(path, &st) != 0) r = strerror(errno);
    else if (!S_ISREG(st.st_mode)) r = not_regular(st.st_mode);
    if (r && why) *why = r;
    return r ? -1 : 0;
}

FILE *fopen_regular(const char *path, const char **why) {
    const char *r = NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) r = strerror(errno);
    else if (!S_ISREG(st.st_mode)) r = not_regular(st.st_mode);
    FILE *f = NULL;
    if (!r) {
        // A regular file ignores O_NONBLOCK; cleared so the stream is an ordinary one.
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        if (!(f = fdopen(fd, "rb"))) r = strerror(errno);
    }
    if (!f && fd >= 0) close(fd);
    if (r && why) *why = r;
    return f;
}

// The folder `path` is in: a copy, to free ("." when there is no slash).
static char *parent_of(const char *path) {
    const char *slash = strrchr(path, '/');
    size_t n = !slash ? 0 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = xmalloc(n + 2);
    if (n) memcpy(dir, path, n), dir[n] = '\0';
    else strcpy(dir, ".");
    return dir;
}

int check_output_path(PathArg out, OutKind kind, const PathArg *inputs, int n_inputs) {
    const char *p = out.path;
    size_t len = strlen(p);
    const char *slash = strrchr(p, '/');
    const char *name = slash ? slash + 1 : p;
    if (len == 0) return errorf("%s: an empty path", out.flag);
    if (len > PATH_MAX - PATH_DERIVED_MAX)
        return errorf("%.80s...: %s is %zu characters long; the files named after it need "
                      "it to be at most %d", p, out.flag, len, PATH_MAX - PATH_DERIVED_MAX);
    if (kind == OUT_FILE && strlen(name) > NAME_MAX - PATH_DERIVED_MAX)
        return errorf("%s: %s's file name is %zu characters long; the files named after it "
                      "need it to be at most %d", p, out.flag, strlen(name),
                      NAME_MAX - PATH_DERIVED_MAX);
    struct stat st;
    if (stat(p, &st) == 0) {
        if (kind == OUT_FILE && !S_ISREG(st.st_mode))
            return errorf("%s: %s %s; expected a file to write", p, out.flag,
                          not_regular(st.st_mode));
        if (kind == OUT_DIR && !S_ISDIR(st.st_mode))
            return errorf("%s: %s exists and is not a folder", p, out.flag);
        for (int i = 0; i < n_inputs; i++) {
            struct stat in;
            if (inputs[i].path && stat(inputs[i].path, &in) == 0 && in.st_dev == st.st_dev &&
                in.st_ino == st.st_ino)
                return errorf("%s: %s is the same file as %s %s; writing it would destroy "
                              "the input", p, out.flag, inputs[i].flag, inputs[i].path);
        }
    } else if (errno != ENOENT) {
        return errorf("%s: %s cannot be written: %s", p, out.flag, strerror(errno));
    }
    if (kind == OUT_DIR) return 0; // created with its parents when missing
    if (*name == '\0') return errorf("%s: %s names a folder; expected a file", p, out.flag);
    char *dir = parent_of(p);
    int rc = 0;
    if (stat(dir, &st) != 0)
        rc = errorf("%s: %s cannot be written: folder %s: %s", p, out.flag, dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        rc = errorf("%s: %s cannot be written: %s is not a folder", p, out.flag, dir);
    else if (access(dir, W_OK) != 0)
        rc = errorf("%s: %s cannot be written: folder %s: %s", p, out.flag, dir, strerror(errno));
    free(dir);
    return rc;
}
