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
/* Reads a whole file into a NUL-terminated buffer (caller frees); NULL if it cannot be read. */
char *read_text_file(const char *path, size_t *len);
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
