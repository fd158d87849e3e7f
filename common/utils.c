#include "common/utils.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

FILE *fopen_check(const char *path, const char *mode, const char *file, int line) {
    FILE *fp = fopen(path, mode);
    if (fp == NULL) {
        fprintf(stderr, "error: cannot open '%s' (mode %s): %s [%s:%d]\n", path, mode, strerror(errno), file, line);
        exit(1);
    }
    return fp;
}

void fread_check(void *ptr, size_t size, size_t nmemb, FILE *stream, const char *file, int line) {
    size_t got = fread(ptr, size, nmemb, stream);
    if (got != nmemb) {
        fprintf(stderr, "error: short read (%zu of %zu elements of %zu bytes): %s [%s:%d]\n", got, nmemb, size,
                feof(stream) ? "unexpected end of file" : "read error", file, line);
        exit(1);
    }
}

void fwrite_check(const void *ptr, size_t size, size_t nmemb, FILE *stream, const char *file, int line) {
    size_t put = fwrite(ptr, size, nmemb, stream);
    if (put != nmemb) {
        fprintf(stderr, "error: short write (%zu of %zu elements): %s [%s:%d]\n", put, nmemb, strerror(errno), file, line);
        exit(1);
    }
}

void fclose_check(FILE *fp, const char *file, int line) {
    if (fclose(fp) != 0) {
        fprintf(stderr, "error: fclose failed: %s [%s:%d]\n", strerror(errno), file, line);
        exit(1);
    }
}

void *malloc_check(size_t size, const char *file, int line) {
    void *ptr = malloc(size);
    if (ptr == NULL && size > 0) {
        fprintf(stderr, "error: malloc of %zu bytes failed [%s:%d]\n", size, file, line);
        exit(1);
    }
    return ptr;
}

void *calloc_check(size_t nmemb, size_t size, const char *file, int line) {
    void *ptr = calloc(nmemb, size);
    if (ptr == NULL && nmemb * size > 0) {
        fprintf(stderr, "error: calloc of %zu x %zu bytes failed [%s:%d]\n", nmemb, size, file, line);
        exit(1);
    }
    return ptr;
}

static const char *file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a named pipe";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

FILE *fopen_regular(const char *path, const char *what, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (err) snprintf(err, errlen, "cannot open %s '%s': %s", what, path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        if (err) snprintf(err, errlen, "%s '%s' is %s, not a regular file", what, path, file_kind(st.st_mode));
        return NULL;
    }
    /* it may have been replaced since the stat: O_NONBLOCK keeps a named pipe from blocking the open */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (err) snprintf(err, errlen, "cannot open %s '%s': %s", what, path, strerror(errno));
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        if (err) snprintf(err, errlen, "%s '%s' is not a regular file", what, path);
        close(fd);
        return NULL;
    }
    FILE *fp = fdopen(fd, "rb");
    if (fp == NULL) {
        if (err) snprintf(err, errlen, "cannot open %s '%s': %s", what, path, strerror(errno));
        close(fd);
    }
    return fp;
}

FILE *fopen_regular_write(const char *path, int append, const char *what, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s '%s' is %s, not a regular file", what, path, file_kind(st.st_mode));
        return NULL;
    }
    /* it may have been replaced since the stat: O_NONBLOCK keeps a named pipe from blocking the open */
    int fd = open(path, O_WRONLY | O_CREAT | O_NONBLOCK | O_CLOEXEC | (append ? O_APPEND : 0), 0644);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot open %s '%s' for writing: %s", what, path, strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (!S_ISREG(st.st_mode) || flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
        (!append && ftruncate(fd, 0) != 0)) {
        snprintf(err, errlen, "%s '%s' is %s, not a regular file", what, path, file_kind(st.st_mode));
        close(fd);
        return NULL;
    }
    FILE *fp = fdopen(fd, append ? "ab" : "wb");
    if (fp == NULL) {
        snprintf(err, errlen, "cannot open %s '%s' for writing: %s", what, path, strerror(errno));
        close(fd);
    }
    return fp;
}

char *read_text_file_limited(const char *path, const char *what, size_t max_bytes, size_t *len, char *err,
                             size_t errlen) {
    FILE *fp = fopen_regular(path, what, err, errlen);
    if (fp == NULL) return NULL;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        if (err) snprintf(err, errlen, "cannot read %s '%s': %s", what, path, strerror(errno));
        fclose(fp);
        return NULL;
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        if (err) snprintf(err, errlen, "%s '%s' is %lld bytes, more than the %zu bytes it may have", what, path,
                          (long long)st.st_size, max_bytes);
        fclose(fp);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *text = (char *)mallocCheck(size + 1);
    if (fread(text, 1, size, fp) != size) {
        if (err) snprintf(err, errlen, "cannot read %s '%s': short read", what, path);
        fclose(fp);
        free(text);
        return NULL;
    }
    fclose(fp);
    text[size] = '\0';
    if (len) *len = size;
    return text;
}

char *read_text_file(const char *path, size_t *len) {
    return read_text_file_limited(path, "file", (size_t)-1 - 1, len, NULL, 0);
}

unsigned long long physical_memory_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    return pages > 0 && page_size > 0 ? (unsigned long long)pages * (unsigned long long)page_size : 0;
}

void memory_check_or_exit(double bytes, const char *what) {
    double have = (double)physical_memory_bytes();
    if (have > 0 && bytes > have) {
        fprintf(stderr, "error: %s needs %.3g GiB of memory, more than this machine's %.3g GiB\n", what,
                bytes / 1073741824.0, have / 1073741824.0);
        exit(1);
    }
}

double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
