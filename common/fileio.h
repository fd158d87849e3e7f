/*
 * Byte-level file I/O shared by the checkpoint formats (train/checkpoint.c).
 */
#ifndef SSD_COMMON_FILEIO_H
#define SSD_COMMON_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CRC-32 (IEEE, same as zlib.crc32): start with crc = 0 and chain calls. */
uint32_t checkpoint_crc32(uint32_t crc, const void *data, size_t n);
/* fp32 <-> bf16, round to nearest even; NaN stays NaN. */
uint16_t float_to_bf16(float x);
float bf16_to_float(uint16_t b);

void le_put_u32(uint8_t *p, uint32_t v);
void le_put_u64(uint8_t *p, uint64_t v);
uint32_t le_get_u32(const uint8_t *p);
uint64_t le_get_u64(const uint8_t *p);

/* A file written atomically: everything goes to "<path>.tmp"; commit flushes, fsyncs, renames it
 * over <path> and fsyncs the directory. Any failure removes the temporary file and exits. */
typedef struct {
    FILE *fp;
    char path[4096];
    char tmp_path[4096];
} AtomicFile;

void atomic_file_open(AtomicFile *f, const char *path);
void atomic_file_write(AtomicFile *f, const void *data, size_t n);
void atomic_file_write_at_start(AtomicFile *f, const void *data, size_t n);
/* Writes fp32 values, or bf16 if bf16 != 0, and chains their CRC. */
void atomic_file_write_floats(AtomicFile *f, const float *x, size_t n, int bf16, uint32_t *crc);
void atomic_file_commit(AtomicFile *f);
void fsync_dir(const char *dir);

/* Size of an open file, or -1. */
long long file_size_of(FILE *fp);
/* Reads n bytes; non-zero with a message naming the file and what was being read on a short read. */
int read_exact(FILE *fp, void *dst, size_t n, const char *path, const char *what, char *err, size_t errlen);
/* Reads n floats stored as fp32 or bf16 into dst, chaining the CRC of the stored bytes. */
int read_floats(FILE *fp, float *dst, size_t n, int bf16, uint32_t *crc, const char *path, const char *what, char *err,
                size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
