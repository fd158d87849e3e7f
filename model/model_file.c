/*
 * Model files (format in model_file.h): written atomically through a temporary file + fsync +
 * rename; read by a reader that validates every field and both checksums and reports what is wrong
 * with which file instead of misreading it.
 */
#include "model/model_file.h"
#include "model/params.h"
#include "common/utils.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the model file stores tensors in little-endian byte order"
#endif

#define MODEL_MAGIC "SSDMODEL"
#define MODEL_FILE_VERSION 1
#define MODEL_HEADER_BYTES 128
#define DTYPE_FP32 0
#define DTYPE_BF16 1

/* Refuses configs whose parameter count would not fit the size arithmetic (only a corrupt or
 * hostile file gets here: config_parse accepts any positive sizes). */
int model_config_plausible(const ModelConfig *c) {
    double D = c->d_model, L = c->n_layer, E = (double)c->expand * c->d_model, N = c->d_state, G = c->ngroups;
    double H = E / c->headdim, conv = E + 2 * G * N;
    double per_layer = D + (2 * E + 2 * G * N + H) * D + conv * (c->d_conv + 1) + 3 * H + H * N + E + D * E;
    double total = (double)c->vocab_size * D + L * per_layer + D;
    return total < 1e15 && c->pad_vocab_multiple < (1 << 24) && c->vocab_size < (1 << 30);
}

int model_file_is_checkpoint(const char *path) {
    FILE *fp = fopen_regular(path, "model file", NULL, 0);
    if (fp == NULL) return 0;
    char magic[8];
    int is_model = fread(magic, 1, 8, fp) == 8 && memcmp(magic, MODEL_MAGIC, 8) == 0;
    fclose(fp);
    return is_model;
}

uint32_t model_file_write(const char *path, const ModelConfig *config, const float *params, int bf16) {
    ParamLayout layout;
    param_layout_init(&layout, config);
    char *json = config_to_json(config);
    size_t json_bytes = strlen(json);
    if (json_bytes > MODEL_FILE_MAX_JSON_BYTES) {
        fprintf(stderr, "error: config JSON for '%s' is %zu bytes, the format allows %d\n", path, json_bytes, MODEL_FILE_MAX_JSON_BYTES);
        exit(1);
    }
    AtomicFile f;
    atomic_file_open(&f, path);
    uint8_t header[MODEL_HEADER_BYTES] = {0};
    atomic_file_write(&f, header, sizeof(header)); /* placeholder until the data CRC is known */
    atomic_file_write(&f, json, json_bytes);
    uint32_t data_crc = 0;
    atomic_file_write_floats(&f, params, layout.total, bf16, &data_crc);

    memcpy(header, MODEL_MAGIC, 8);
    le_put_u32(header + 8, MODEL_FILE_VERSION);
    le_put_u32(header + 12, bf16 ? DTYPE_BF16 : DTYPE_FP32);
    le_put_u64(header + 16, layout.total);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) le_put_u64(header + 24 + 8 * i, layout.sizes[i]);
    le_put_u32(header + 112, (uint32_t)json_bytes);
    le_put_u32(header + 116, data_crc);
    le_put_u32(header + 120, 0);
    uint32_t header_crc = checkpoint_crc32(checkpoint_crc32(0, header, 124), json, json_bytes);
    le_put_u32(header + 124, header_crc);
    atomic_file_write_at_start(&f, header, sizeof(header));
    atomic_file_commit(&f);
    free(json);
    return data_crc;
}

/* Reads and checks the JSON config and tensor sizes shared by the model header; fills config. */
static int check_sizes(const char *path, const ModelConfig *config, uint64_t num_params, const uint8_t *sizes,
                       ParamLayout *layout, char *err, size_t errlen) {
    if (!model_config_plausible(config)) {
        snprintf(err, errlen, "%s: the embedded config gives an implausible parameter count", path);
        return 1;
    }
    param_layout_init(layout, config);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        uint64_t stored = le_get_u64(sizes + 8 * i);
        if (stored != layout->sizes[i]) {
            snprintf(err, errlen, "%s: tensor '%s' has %llu elements in the header but the config gives %zu", path,
                     PARAM_NAMES[i], (unsigned long long)stored, layout->sizes[i]);
            return 1;
        }
    }
    if (num_params != layout->total) {
        snprintf(err, errlen, "%s: header says %llu parameters but the tensor sizes add up to %zu", path,
                 (unsigned long long)num_params, layout->total);
        return 1;
    }
    return 0;
}

static int model_file_read_open(FILE *fp, const char *path, ModelConfig *config, float **params, uint32_t *data_crc,
                                char *err, size_t errlen) {
    long long size = file_size_of(fp);
    uint8_t header[MODEL_HEADER_BYTES];
    if (size < MODEL_HEADER_BYTES || read_exact(fp, header, sizeof(header), path, "the header", err, errlen)) {
        snprintf(err, errlen, "%s: %lld bytes, too short for a model file header (%d bytes)", path, size,
                 MODEL_HEADER_BYTES);
        return 1;
    }
    if (memcmp(header, MODEL_MAGIC, 8) != 0) {
        snprintf(err, errlen, "%s: not an ssd.c model file (bad magic)", path);
        return 1;
    }
    uint32_t version = le_get_u32(header + 8), dtype = le_get_u32(header + 12), json_bytes = le_get_u32(header + 112);
    if (version != MODEL_FILE_VERSION) {
        snprintf(err, errlen, "%s: model file version %u, this build reads version %d", path, version, MODEL_FILE_VERSION);
        return 1;
    }
    if (dtype != DTYPE_FP32 && dtype != DTYPE_BF16) {
        snprintf(err, errlen, "%s: unknown dtype %u (0 = fp32, 1 = bf16)", path, dtype);
        return 1;
    }
    if (json_bytes < 2 || json_bytes > MODEL_FILE_MAX_JSON_BYTES || MODEL_HEADER_BYTES + (long long)json_bytes > size) {
        snprintf(err, errlen, "%s: config JSON length %u is impossible for a file of %lld bytes", path, json_bytes, size);
        return 1;
    }
    if (le_get_u32(header + 120) != 0) {
        snprintf(err, errlen, "%s: reserved header field is not zero (corrupt header)", path);
        return 1;
    }
    char *json = (char *)mallocCheck(json_bytes + 1);
    if (read_exact(fp, json, json_bytes, path, "the config JSON", err, errlen)) {
        free(json);
        return 1;
    }
    json[json_bytes] = '\0';
    if (checkpoint_crc32(checkpoint_crc32(0, header, 124), json, json_bytes) != le_get_u32(header + 124)) {
        snprintf(err, errlen, "%s: header checksum mismatch (corrupt header or config JSON)", path);
        free(json);
        return 1;
    }
    char inner[512];
    int status = config_parse(config, json, "embedded config", inner, sizeof(inner));
    int has_nul = strlen(json) != json_bytes;
    free(json);
    if (status || has_nul) {
        snprintf(err, errlen, "%s: %s", path, status ? inner : "embedded config contains a NUL byte");
        return 1;
    }
    ParamLayout layout;
    uint64_t num_params = le_get_u64(header + 16);
    if (check_sizes(path, config, num_params, header + 24, &layout, err, errlen)) return 1;
    size_t elem_bytes = dtype == DTYPE_BF16 ? 2 : 4;
    long long expected = MODEL_HEADER_BYTES + (long long)json_bytes + (long long)(layout.total * elem_bytes);
    if (size != expected) {
        snprintf(err, errlen, "%s: file is %lld bytes but its header describes %lld bytes (%s)", path, size, expected,
                 size < expected ? "truncated" : "trailing data");
        return 1;
    }
    float *data = (float *)mallocCheck(layout.total * sizeof(float));
    uint32_t crc = 0;
    if (read_floats(fp, data, layout.total, dtype == DTYPE_BF16, &crc, path, "the tensor data", err, errlen)) {
        free(data);
        return 1;
    }
    if (crc != le_get_u32(header + 116)) {
        snprintf(err, errlen, "%s: tensor data checksum mismatch (corrupt data)", path);
        free(data);
        return 1;
    }
    size_t element;
    int tensor = params_find_nonfinite(&layout, data, 0, layout.total, 0, &element);
    if (tensor >= 0) {
        snprintf(err, errlen, "%s: tensor '%s' holds a non-finite value (%g at element %zu)", path, PARAM_NAMES[tensor],
                 (double)data[layout.offsets[tensor] + element], element);
        free(data);
        return 1;
    }
    *params = data;
    if (data_crc) *data_crc = crc;
    return 0;
}

int model_file_try_read(const char *path, ModelConfig *config, float **params, uint32_t *data_crc, char *err,
                        size_t errlen) {
    *params = NULL;
    FILE *fp = fopen_regular(path, "model file", err, errlen);
    if (fp == NULL) return 1;
    int status = model_file_read_open(fp, path, config, params, data_crc, err, errlen);
    fclose(fp);
    return status;
}

void model_file_read(const char *path, ModelConfig *config, float **params) {
    char err[1024];
    if (model_file_try_read(path, config, params, NULL, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
}

