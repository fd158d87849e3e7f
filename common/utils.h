/*
 * Checked wrappers for host calls (llm.c style): each one prints the file, line and the failing
 * call's arguments, then exits with status 1.
 */
#ifndef SSD_COMMON_UTILS_H
#define SSD_COMMON_UTILS_H

#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

FILE *fopen_check(const char *path, const char *mode, const char *file, int line);
void fread_check(void *ptr, size_t size, size_t nmemb, FILE *stream, const char *file, int line);
void fwrite_check(const void *ptr, size_t size, size_t nmemb, FILE *stream, const char *file, int line);
void fclose_check(FILE *fp, const char *file, int line);
void *malloc_check(size_t size, const char *file, int line);
void *calloc_check(size_t nmemb, size_t size, const char *file, int line);
/* Opens path for reading if it is a regular file; a directory, named pipe, device or socket is refused
 * without blocking (stat first, then an O_NONBLOCK open checked with fstat). NULL with a message in err
 * (may be NULL) naming `what` (e.g. "config"), the file and, when it is not a regular file, what it is. */
FILE *fopen_regular(const char *path, const char *what, char *err, size_t errlen);
/* Opens path for writing (appending if append, else truncating), creating it if missing, if it is or
 * becomes a regular file; a named pipe, device or directory there is refused without blocking. NULL with
 * a message in err naming `what` and the file. */
FILE *fopen_regular_write(const char *path, int append, const char *what, char *err, size_t errlen);
/* Reads a whole regular file of at most max_bytes into a NUL-terminated buffer (caller frees); NULL with
 * a message in err (may be NULL) naming `what` and the file if it cannot be read. */
char *read_text_file_limited(const char *path, const char *what, size_t max_bytes, size_t *len, char *err,
                             size_t errlen);
/* read_text_file_limited of any size, without a message. */
char *read_text_file(const char *path, size_t *len);
/* Physical memory of this machine in bytes (0 if unknown). */
unsigned long long physical_memory_bytes(void);
/* Exits with a message naming `what`, the bytes it needs and the machine's memory when `bytes` (an
 * estimate made before allocating, in double so that it cannot overflow) exceeds the physical memory. */
void memory_check_or_exit(double bytes, const char *what);
/* Seconds on a monotonic clock. */
double wall_seconds(void);

#define fopenCheck(path, mode) fopen_check(path, mode, __FILE__, __LINE__)
#define freadCheck(ptr, size, nmemb, stream) fread_check(ptr, size, nmemb, stream, __FILE__, __LINE__)
#define fwriteCheck(ptr, size, nmemb, stream) fwrite_check(ptr, size, nmemb, stream, __FILE__, __LINE__)
#define fcloseCheck(fp) fclose_check(fp, __FILE__, __LINE__)
#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)
#define callocCheck(nmemb, size) calloc_check(nmemb, size, __FILE__, __LINE__)

#ifdef __cplusplus
}
#endif
#endif
