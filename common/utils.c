#include "common/utils.h"

#include <errno.h>
#include <string.h>
#include <time.h>

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

char *read_text_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) return NULL;
    if (fseek(fp, 0, SEEK_END) != 0) { fclose(fp); return NULL; }
    long size = ftell(fp);
    if (size < 0 || fseek(fp, 0, SEEK_SET) != 0) { fclose(fp); return NULL; }
    char *text = (char *)mallocCheck((size_t)size + 1);
    if (fread(text, 1, (size_t)size, fp) != (size_t)size) { fclose(fp); free(text); return NULL; }
    fclose(fp);
    text[size] = '\0';
    if (len) *len = (size_t)size;
    return text;
}

double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
