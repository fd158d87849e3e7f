/*
 * Byte-level file I/O of the checkpoint formats: CRC-32, bf16 conversion, little-endian fields,
 * atomic files (write "<path>.tmp", fsync, rename over <path>, fsync the directory), and reads
 * that name the file and the part being read when they come up short.
 */
#include "common/fileio.h"
#include "common/utils.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IO_CHUNK (1 << 16) /* elements converted per bf16 chunk */

/* ---- CRC-32 (reflected polynomial 0xEDB88320), slice-by-8 ---- */

static uint32_t crc_table[8][256];
static int crc_table_ready = 0;

static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
    crc_table_ready = 1;
}

uint32_t checkpoint_crc32(uint32_t crc, const void *data, size_t n) {
    if (!crc_table_ready) crc_table_init();
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
              crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
    }
    while (n--) crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- bf16 ---- */

uint16_t float_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN, sign kept */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float bf16_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* ---- little-endian header fields ---- */

void le_put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
void le_put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
uint32_t le_get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
uint64_t le_get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- atomic files: write "<path>.tmp", fsync, rename over <path>, fsync the directory ---- */

static void atomic_file_fail(AtomicFile *f, const char *what) {
    fprintf(stderr, "error: %s '%s': %s\n", what, f->tmp_path, strerror(errno));
    if (f->fp) fclose(f->fp);
    unlink(f->tmp_path);
    exit(1);
}

void atomic_file_open(AtomicFile *f, const char *path) {
    if (strlen(path) + 5 > sizeof(f->path)) {
        fprintf(stderr, "error: checkpoint path too long: '%s'\n", path);
        exit(1);
    }
    snprintf(f->path, sizeof(f->path), "%s", path);
    snprintf(f->tmp_path, sizeof(f->tmp_path), "%s.tmp", path);
    /* a stale temporary file, or a named pipe left under its name, is replaced: the open never blocks */
    if (unlink(f->tmp_path) != 0 && errno != ENOENT) atomic_file_fail(f, "cannot remove the old");
    f->fp = fopen(f->tmp_path, "wbx");
    if (f->fp == NULL) atomic_file_fail(f, "cannot create");
}

void atomic_file_write(AtomicFile *f, const void *data, size_t n) {
    if (n > 0 && fwrite(data, 1, n, f->fp) != n) atomic_file_fail(f, "cannot write");
}

void atomic_file_write_at_start(AtomicFile *f, const void *data, size_t n) {
    if (fseek(f->fp, 0, SEEK_SET) != 0) atomic_file_fail(f, "cannot seek in");
    atomic_file_write(f, data, n);
}

void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        fprintf(stderr, "error: cannot open directory '%s' to sync it: %s\n", dir, strerror(errno));
        exit(1);
    }
    /* some file systems cannot sync a directory (EINVAL); the rename is then as durable as they allow */
    if (fsync(fd) != 0 && errno != EINVAL) {
        fprintf(stderr, "error: cannot sync directory '%s': %s\n", dir, strerror(errno));
        exit(1);
    }
    close(fd);
}

static void fsync_parent_dir(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) snprintf(dir, sizeof(dir), ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    fsync_dir(dir);
}

void atomic_file_commit(AtomicFile *f) {
    if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0) atomic_file_fail(f, "cannot flush");
    FILE *fp = f->fp;
    f->fp = NULL;
    if (fclose(fp) != 0) atomic_file_fail(f, "cannot close");
    if (rename(f->tmp_path, f->path) != 0) atomic_file_fail(f, "cannot rename into place");
    fsync_parent_dir(f->path);
}

/* Writes fp32 values, or bf16 if bf16 != 0, and chains their CRC. */
void atomic_file_write_floats(AtomicFile *f, const float *x, size_t n, int bf16, uint32_t *crc) {
    if (!bf16) {
        *crc = checkpoint_crc32(*crc, x, n * sizeof(float));
        atomic_file_write(f, x, n * sizeof(float));
        return;
    }
    uint16_t *buf = (uint16_t *)mallocCheck(IO_CHUNK * sizeof(uint16_t));
    for (size_t start = 0; start < n; start += IO_CHUNK) {
        size_t count = n - start < IO_CHUNK ? n - start : IO_CHUNK;
        for (size_t i = 0; i < count; i++) buf[i] = float_to_bf16(x[start + i]);
        *crc = checkpoint_crc32(*crc, buf, count * sizeof(uint16_t));
        atomic_file_write(f, buf, count * sizeof(uint16_t));
    }
    free(buf);
}

/* ---- reading helpers ---- */

/* Size of an open file, or -1. */
long long file_size_of(FILE *fp) {
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) return -1;
    return (long long)st.st_size;
}

/* Reads n bytes; non-zero with a message naming the file and what was being read on a short read. */
int read_exact(FILE *fp, void *dst, size_t n, const char *path, const char *what, char *err, size_t errlen) {
    if (n > 0 && fread(dst, 1, n, fp) != n) {
        snprintf(err, errlen, "%s: short read in %s (file truncated?)", path, what);
        return 1;
    }
    return 0;
}

/* Reads n floats stored as fp32 or bf16 into dst, chaining the CRC of the stored bytes. */
int read_floats(FILE *fp, float *dst, size_t n, int bf16, uint32_t *crc, const char *path, const char *what,
                       char *err, size_t errlen) {
    if (!bf16) {
        if (read_exact(fp, dst, n * sizeof(float), path, what, err, errlen)) return 1;
        *crc = checkpoint_crc32(*crc, dst, n * sizeof(float));
        return 0;
    }
    uint16_t *buf = (uint16_t *)mallocCheck(IO_CHUNK * sizeof(uint16_t));
    int status = 0;
    for (size_t start = 0; start < n && status == 0; start += IO_CHUNK) {
        size_t count = n - start < IO_CHUNK ? n - start : IO_CHUNK;
        status = read_exact(fp, buf, count * sizeof(uint16_t), path, what, err, errlen);
        if (status == 0) {
            *crc = checkpoint_crc32(*crc, buf, count * sizeof(uint16_t));
            for (size_t i = 0; i < count; i++) dst[start + i] = bf16_to_float(buf[i]);
        }
    }
    free(buf);
    return status;
}
