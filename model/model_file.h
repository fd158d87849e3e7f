/*
 * Model files: a model's config and weights in one file, written atomically (to "<path>.tmp",
 * flushed, fsync'd, renamed over <path>, directory fsync'd). All integers are little-endian.
 * CRC-32 is the IEEE/zlib one (python: zlib.crc32).
 *
 * MODEL FILE (model_file_write / model_file_read; scripts/ssd_model_file.py reads and writes it too)
 *   offset size  field
 *   0      8     magic "SSDMODEL"
 *   8      4     u32 version = 1
 *   12     4     u32 dtype: 0 = fp32, 1 = bf16 (round-to-nearest-even of fp32; read back as fp32)
 *   16     8     u64 num_params: total elements, the sum of sizes[]
 *   24     88    u64 sizes[11]: elements of each tensor, in the order of model/params.h
 *   112    4     u32 json_bytes J: length of the config JSON below (no NUL), 2 <= J <= 65536
 *   116    4     u32 data_crc: CRC-32 of the tensor bytes exactly as stored
 *   120    4     u32 reserved, 0
 *   124    4     u32 header_crc: CRC-32 of bytes 0..123 followed by the J bytes of JSON
 *   128    J     the model config as JSON (config_to_json; it may carry "tokenizer", e.g. "gpt-neox-20b")
 *   128+J  ...   the 11 tensors back to back, num_params elements of 4 (fp32) or 2 (bf16) bytes
 * The file ends exactly after the last tensor. The reader checks the magic, version, dtype, both
 * CRCs, that the JSON parses to a valid config whose parameter layout equals sizes[], and the size.
 */
#ifndef SSD_MODEL_MODEL_FILE_H
#define SSD_MODEL_MODEL_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "common/fileio.h" /* checkpoint_crc32, float_to_bf16, bf16_to_float */
#include "model/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* the largest config JSON a model or state file holds */
#define MODEL_FILE_MAX_JSON_BYTES 65536

/* 1 if the sizes a config implies fit the size arithmetic (a corrupt file's config may not). */
int model_config_plausible(const ModelConfig *c);
/* 1 if the file starts with the model file magic (a model file rather than a JSON config). */
int model_file_is_checkpoint(const char *path);
/* Writes atomically; bf16 != 0 stores bf16. Returns the data CRC. Exits with a message on error. */
uint32_t model_file_write(const char *path, const ModelConfig *config, const float *params, int bf16);
/* Reads into a malloc'd fp32 buffer. Returns 0, or non-zero with a message naming the file in err
 * (nothing allocated then). data_crc may be NULL. */
int model_file_try_read(const char *path, ModelConfig *config, float **params, uint32_t *data_crc, char *err,
                        size_t errlen);
/* model_file_try_read that prints the message and exits on error. */
void model_file_read(const char *path, ModelConfig *config, float **params);

#ifdef __cplusplus
}
#endif
#endif
