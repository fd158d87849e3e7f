/*
 * State files and checkpoint directories (format in checkpoint.h): atomic writes through a
 * temporary file + fsync + rename, and readers that validate every field and both checksums and
 * report what is wrong with which file instead of misreading it.
 */
#include "train/checkpoint.h"
#include "common/fileio.h"
#include "model/params.h"
#include "common/utils.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the state file stores tensors in little-endian byte order"
#endif

#define STATE_MAGIC "SSDSTATE"
#define STATE_FILE_VERSION 2  /* version 1 is version 2 without the carried states (flag bit 1) */
#define STATE_HEADER_BYTES 104
#define STATE_FLAG_MASTER 1u
#define STATE_FLAG_CARRY 2u
/* Bounds a marker's world size, so that a corrupt one cannot ask for an absurd allocation. */
#define MAX_WORLD_SIZE (1 << 20)

/* ---- training settings ---- */

static char *train_settings_to_json(const TrainSettings *s) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "B", s->B);
    cJSON_AddNumberToObject(root, "T", s->T);
    cJSON_AddNumberToObject(root, "total_batch_size", (double)s->total_batch_size);
    cJSON_AddNumberToObject(root, "max_steps", (double)s->max_steps);
    cJSON_AddNumberToObject(root, "warmup_steps", s->warmup_steps);
    cJSON_AddNumberToObject(root, "learning_rate", s->learning_rate);
    cJSON_AddNumberToObject(root, "final_lr_frac", s->final_lr_frac);
    cJSON_AddNumberToObject(root, "weight_decay", s->weight_decay);
    cJSON_AddNumberToObject(root, "grad_clip", s->grad_clip);
    cJSON_AddStringToObject(root, "lr_schedule", s->lr_schedule);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

/* A number in [lo, hi] (checked before the caller converts it: out of range, the conversion is undefined). */
static int settings_number(cJSON *root, const char *key, double lo, double hi, double *out, char *err, size_t errlen) {
    cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsNumber(item)) {
        snprintf(err, errlen, "training settings: missing or non-numeric field '%s'", key);
        return 1;
    }
    if (!(item->valuedouble >= lo && item->valuedouble <= hi)) {
        snprintf(err, errlen, "training settings: field '%s' is %g, outside [%g, %g]", key, item->valuedouble, lo, hi);
        return 1;
    }
    *out = item->valuedouble;
    return 0;
}

static int train_settings_parse(TrainSettings *s, const char *json, char *err, size_t errlen) {
    memset(s, 0, sizeof(*s));
    cJSON *root = cJSON_Parse(json);
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "training settings: not a JSON object");
        cJSON_Delete(root);
        return 1;
    }
    double B, T, total, max_steps, warmup, lr, final_frac, wd, clip;
    const double int_max = 2147483647.0, long_max = 9007199254740992.0, float_max = 3.4e38;
    int status = settings_number(root, "B", 0, int_max, &B, err, errlen) ||
                 settings_number(root, "T", 0, int_max, &T, err, errlen) ||
                 settings_number(root, "total_batch_size", -long_max, long_max, &total, err, errlen) ||
                 settings_number(root, "max_steps", -long_max, long_max, &max_steps, err, errlen) ||
                 settings_number(root, "warmup_steps", -int_max, int_max, &warmup, err, errlen) ||
                 settings_number(root, "learning_rate", -float_max, float_max, &lr, err, errlen) ||
                 settings_number(root, "final_lr_frac", -float_max, float_max, &final_frac, err, errlen) ||
                 settings_number(root, "weight_decay", -float_max, float_max, &wd, err, errlen) ||
                 settings_number(root, "grad_clip", -float_max, float_max, &clip, err, errlen);
    const char *schedule = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "lr_schedule"));
    if (status == 0 && (schedule == NULL || strlen(schedule) >= sizeof(s->lr_schedule))) {
        snprintf(err, errlen, "training settings: missing or too long field 'lr_schedule'");
        status = 1;
    }
    if (status == 0) {
        s->B = (int)B;
        s->T = (int)T;
        s->total_batch_size = (long long)total;
        s->max_steps = (long long)max_steps;
        s->warmup_steps = (int)warmup;
        s->learning_rate = (float)lr;
        s->final_lr_frac = (float)final_frac;
        s->weight_decay = (float)wd;
        s->grad_clip = (float)clip;
        snprintf(s->lr_schedule, sizeof(s->lr_schedule), "%s", schedule);
    }
    cJSON_Delete(root);
    return status;
}

int train_settings_compare(const TrainSettings *a, const TrainSettings *b, char *err, size_t errlen) {
#define CHECK_INT(field, hint)                                                                                     \
    if (a->field != b->field) {                                                                                    \
        snprintf(err, errlen, "training setting '%s' differs: the checkpoint has %lld, this run has %lld%s", #field, \
                 (long long)a->field, (long long)b->field, hint);                                                  \
        return 1;                                                                                                  \
    }
#define CHECK_FLOAT(field)                                                                                       \
    if (a->field != b->field) {                                                                                  \
        snprintf(err, errlen, "training setting '%s' differs: the checkpoint has %.9g, this run has %.9g", #field, \
                 (double)a->field, (double)b->field);                                                            \
        return 1;                                                                                                \
    }
    /* what a user who changed the number of ranks needs to hear */
    const char *batch_hint = "; resume with the checkpoint's -b and -d: with another number of ranks the gradient "
                             "accumulation adapts (-d must then be a multiple of B*T*ranks)";
    CHECK_INT(B, batch_hint)
    CHECK_INT(T, "")
    CHECK_INT(total_batch_size, batch_hint)
    CHECK_INT(max_steps, "; to resume, give the checkpoint's -x. To train a finished run for more steps, start a new "
                         "run from its last model file: -e <dir>/model_<step>.bin -o <new dir> -x <more steps> (the "
                         "weights carry over; the optimizer state, LR schedule and data order start afresh)")
    CHECK_INT(warmup_steps, "")
    CHECK_FLOAT(learning_rate)
    CHECK_FLOAT(final_lr_frac)
    CHECK_FLOAT(weight_decay)
    CHECK_FLOAT(grad_clip)
#undef CHECK_INT
#undef CHECK_FLOAT
    if (strcmp(a->lr_schedule, b->lr_schedule) != 0) {
        snprintf(err, errlen, "training setting 'lr_schedule' differs: the checkpoint has '%s', this run has '%s'",
                 a->lr_schedule, b->lr_schedule);
        return 1;
    }
    return 0;
}

/* ---- state files ---- */

void state_file_write(const char *path, const ModelConfig *config, const TrainSettings *settings,
                      const TrainState *state) {
    ParamLayout layout;
    param_layout_init(&layout, config);
    if (state->shard_offset > layout.total || state->shard_count > layout.total - state->shard_offset ||
        state->world_size < 1 || state->rank < 0 || state->rank >= state->world_size || state->step < 0 ||
        (state->loader_state_bytes > 0 && state->loader_state == NULL)) {
        fprintf(stderr, "error: state for '%s' is inconsistent (step %lld, rank %d of %d, shard %zu+%zu of %zu)\n", path,
                state->step, state->rank, state->world_size, state->shard_offset, state->shard_count, layout.total);
        exit(1);
    }
    char *config_json = config_to_json(config);
    char *settings_json = train_settings_to_json(settings);
    size_t config_bytes = strlen(config_json), settings_bytes = strlen(settings_json);
    AtomicFile f;
    atomic_file_open(&f, path);
    uint8_t header[STATE_HEADER_BYTES] = {0};
    atomic_file_write(&f, header, sizeof(header));
    atomic_file_write(&f, config_json, config_bytes);
    atomic_file_write(&f, settings_json, settings_bytes);
    uint32_t data_crc = 0;
    atomic_file_write_floats(&f, state->m, state->shard_count, 0, &data_crc);
    atomic_file_write_floats(&f, state->v, state->shard_count, 0, &data_crc);
    if (state->master) atomic_file_write_floats(&f, state->master, state->shard_count, 0, &data_crc);
    if (state->loader_state_bytes > 0) {
        data_crc = checkpoint_crc32(data_crc, state->loader_state, state->loader_state_bytes);
        atomic_file_write(&f, state->loader_state, state->loader_state_bytes);
    }
    if (state->carry_count > 0) atomic_file_write_floats(&f, state->carry, state->carry_count, 0, &data_crc);

    memcpy(header, STATE_MAGIC, 8);
    /* a file without carried states is a version 1 file, which earlier builds read */
    le_put_u32(header + 8, state->carry_count > 0 ? STATE_FILE_VERSION : 1);
    le_put_u32(header + 12, (state->master ? STATE_FLAG_MASTER : 0) | (state->carry_count > 0 ? STATE_FLAG_CARRY : 0));
    le_put_u64(header + 16, (uint64_t)state->step);
    le_put_u64(header + 24, state->rng_state);
    le_put_u64(header + 32, state->run_id);
    le_put_u32(header + 40, (uint32_t)state->world_size);
    le_put_u32(header + 44, (uint32_t)state->rank);
    le_put_u64(header + 48, layout.total);
    le_put_u64(header + 56, state->shard_offset);
    le_put_u64(header + 64, state->shard_count);
    le_put_u64(header + 72, state->loader_state_bytes);
    le_put_u32(header + 80, (uint32_t)config_bytes);
    le_put_u32(header + 84, (uint32_t)settings_bytes);
    le_put_u32(header + 88, data_crc);
    uint32_t header_crc = checkpoint_crc32(0, header, 96);
    header_crc = checkpoint_crc32(checkpoint_crc32(header_crc, config_json, config_bytes), settings_json, settings_bytes);
    le_put_u32(header + 96, header_crc);
    atomic_file_write_at_start(&f, header, sizeof(header));
    atomic_file_commit(&f);
    free(config_json);
    free(settings_json);
}

void train_state_free(TrainState *state) {
    free(state->m);
    free(state->v);
    free(state->master);
    free(state->loader_state);
    free(state->carry);
    state->m = state->v = state->master = state->carry = NULL;
    state->loader_state = NULL;
}

/* What a state file's header says about the data part that follows it. */
typedef struct {
    uint8_t header[STATE_HEADER_BYTES]; /* as stored: a second open can check it is the same file */
    long long data_start;               /* file offset of m[0] */
    int has_master;
    size_t carry_count;                 /* floats of carried states after the loader state (version 2) */
    uint32_t data_crc;
} StateFileInfo;

/* Reads and checks a state file's header and JSON texts, leaving fp at the data part. Fills config,
 * settings, info and the scalar fields of state (no buffers are allocated). */
static int state_file_read_header(FILE *fp, const char *path, ModelConfig *config, TrainSettings *settings,
                                  TrainState *state, StateFileInfo *info, char *err, size_t errlen) {
    memset(state, 0, sizeof(*state));
    long long size = file_size_of(fp);
    uint8_t *header = info->header;
    if (size < STATE_HEADER_BYTES || read_exact(fp, header, STATE_HEADER_BYTES, path, "the header", err, errlen)) {
        snprintf(err, errlen, "%s: %lld bytes, too short for a state file header (%d bytes)", path, size,
                 STATE_HEADER_BYTES);
        return 1;
    }
    if (memcmp(header, STATE_MAGIC, 8) != 0) {
        snprintf(err, errlen, "%s: not an ssd.c state file (bad magic)", path);
        return 1;
    }
    uint32_t version = le_get_u32(header + 8), flags = le_get_u32(header + 12);
    uint32_t config_bytes = le_get_u32(header + 80), settings_bytes = le_get_u32(header + 84);
    if (version < 1 || version > STATE_FILE_VERSION) {
        snprintf(err, errlen, "%s: state file version %u, this build reads versions 1 to %d", path, version,
                 STATE_FILE_VERSION);
        return 1;
    }
    if ((flags & ~(STATE_FLAG_MASTER | (version >= 2 ? STATE_FLAG_CARRY : 0))) != 0 || le_get_u32(header + 92) != 0 || le_get_u32(header + 100) != 0) {
        snprintf(err, errlen, "%s: unknown flags or non-zero reserved fields (corrupt header)", path);
        return 1;
    }
    if (config_bytes < 2 || config_bytes > MODEL_FILE_MAX_JSON_BYTES || settings_bytes < 2 || settings_bytes > MODEL_FILE_MAX_JSON_BYTES ||
        STATE_HEADER_BYTES + (long long)config_bytes + settings_bytes > size) {
        snprintf(err, errlen, "%s: JSON lengths %u and %u are impossible for a file of %lld bytes", path, config_bytes,
                 settings_bytes, size);
        return 1;
    }
    char *config_json = (char *)mallocCheck(config_bytes + 1);
    char *settings_json = (char *)mallocCheck(settings_bytes + 1);
    int status = read_exact(fp, config_json, config_bytes, path, "the config JSON", err, errlen) ||
                 read_exact(fp, settings_json, settings_bytes, path, "the settings JSON", err, errlen);
    config_json[config_bytes] = settings_json[settings_bytes] = '\0';
    if (status == 0) {
        uint32_t crc = checkpoint_crc32(0, header, 96);
        crc = checkpoint_crc32(checkpoint_crc32(crc, config_json, config_bytes), settings_json, settings_bytes);
        if (crc != le_get_u32(header + 96)) {
            snprintf(err, errlen, "%s: header checksum mismatch (corrupt header or JSON)", path);
            status = 1;
        }
    }
    char inner[512];
    if (status == 0 && (config_parse(config, config_json, "embedded config", inner, sizeof(inner)) ||
                        train_settings_parse(settings, settings_json, inner, sizeof(inner)))) {
        snprintf(err, errlen, "%s: %s", path, inner);
        status = 1;
    }
    free(config_json);
    free(settings_json);
    if (status) return 1;
    if (!model_config_plausible(config)) {
        snprintf(err, errlen, "%s: the embedded config gives an implausible parameter count", path);
        return 1;
    }
    ParamLayout layout;
    param_layout_init(&layout, config);
    state->step = (long long)le_get_u64(header + 16);
    state->rng_state = le_get_u64(header + 24);
    state->run_id = le_get_u64(header + 32);
    state->world_size = (int)le_get_u32(header + 40);
    state->rank = (int)le_get_u32(header + 44);
    uint64_t num_params = le_get_u64(header + 48), offset = le_get_u64(header + 56), count = le_get_u64(header + 64);
    uint64_t loader_bytes = le_get_u64(header + 72);
    if (num_params != layout.total) {
        snprintf(err, errlen, "%s: header says %llu parameters but its config gives %zu", path,
                 (unsigned long long)num_params, layout.total);
        return 1;
    }
    if (state->step < 0 || state->world_size < 1 || state->rank < 0 || state->rank >= state->world_size) {
        snprintf(err, errlen, "%s: impossible step %lld or rank %d of world size %d", path, state->step, state->rank,
                 state->world_size);
        return 1;
    }
    if (offset > num_params || count > num_params - offset) {
        snprintf(err, errlen, "%s: optimizer shard [%llu, +%llu) lies outside the %llu parameters", path,
                 (unsigned long long)offset, (unsigned long long)count, (unsigned long long)num_params);
        return 1;
    }
    info->has_master = (flags & STATE_FLAG_MASTER) != 0;
    info->data_crc = le_get_u32(header + 88);
    info->data_start = STATE_HEADER_BYTES + (long long)config_bytes + settings_bytes;
    long long payload = (long long)count * 4 * (info->has_master ? 3 : 2);
    long long expected = info->data_start + payload;
    /* the carried states fill what follows the loader state */
    long long carry_bytes = loader_bytes > (uint64_t)size ? 0 : size - expected - (long long)loader_bytes;
    info->carry_count = 0;
    if ((flags & STATE_FLAG_CARRY) && carry_bytes > 0 && carry_bytes % 4 == 0) {
        info->carry_count = (size_t)(carry_bytes / 4);
        expected += carry_bytes;
    }
    if (loader_bytes > (uint64_t)size || size != expected + (long long)loader_bytes) {
        snprintf(err, errlen, "%s: file is %lld bytes but its header describes %lld bytes (truncated or trailing data)",
                 path, size, expected + (long long)(loader_bytes > (uint64_t)size ? 0 : loader_bytes));
        return 1;
    }
    state->shard_offset = offset;
    state->shard_count = count;
    state->loader_state_bytes = loader_bytes;
    state->carry_count = info->carry_count;
    return 0;
}

/* 0 if x[0..n), a section (m, v or master) of the parameters [first, first + n), holds only finite values
 * (and the second moments none below zero); else a message naming the file, the section and the tensor. */
static int check_section(const char *path, const char *section, const float *x, size_t n, size_t first,
                         const ParamLayout *layout, char *err, size_t errlen) {
    size_t element;
    int tensor = params_find_nonfinite(layout, x, first, n, !strcmp(section, "second moments"), &element);
    if (tensor < 0) return 0;
    snprintf(err, errlen, "%s: the %s of tensor '%s' hold %s value at element %zu", path, section, PARAM_NAMES[tensor],
             !strcmp(section, "second moments") ? "a non-finite or negative" : "a non-finite", element);
    return 1;
}

static int state_file_read_open(FILE *fp, const char *path, ModelConfig *config, TrainSettings *settings,
                                TrainState *state, char *err, size_t errlen) {
    StateFileInfo info;
    if (state_file_read_header(fp, path, config, settings, state, &info, err, errlen)) return 1;
    size_t count = state->shard_count, loader_bytes = state->loader_state_bytes;
    state->m = (float *)mallocCheck(count * sizeof(float));
    state->v = (float *)mallocCheck(count * sizeof(float));
    state->master = info.has_master ? (float *)mallocCheck(count * sizeof(float)) : NULL;
    state->loader_state = loader_bytes ? mallocCheck(loader_bytes) : NULL;
    state->carry = info.carry_count ? (float *)mallocCheck(info.carry_count * sizeof(float)) : NULL;
    uint32_t crc = 0;
    int status =
        read_floats(fp, state->m, count, 0, &crc, path, "the first moments", err, errlen) ||
        read_floats(fp, state->v, count, 0, &crc, path, "the second moments", err, errlen) ||
        (info.has_master && read_floats(fp, state->master, count, 0, &crc, path, "the master weights", err, errlen)) ||
        read_exact(fp, state->loader_state, loader_bytes, path, "the data loader state", err, errlen);
    if (status == 0) crc = checkpoint_crc32(crc, state->loader_state, loader_bytes);
    status = status || read_floats(fp, state->carry, info.carry_count, 0, &crc, path, "the carried states", err, errlen);
    if (status == 0) {
        if (crc != info.data_crc) {
            snprintf(err, errlen, "%s: data checksum mismatch (corrupt optimizer or loader state)", path);
            status = 1;
        }
    }
    if (status == 0) {
        ParamLayout layout;
        param_layout_init(&layout, config);
        size_t offset = state->shard_offset;
        status = check_section(path, "first moments", state->m, count, offset, &layout, err, errlen) ||
                 check_section(path, "second moments", state->v, count, offset, &layout, err, errlen) ||
                 (state->master && check_section(path, "master weights", state->master, count, offset, &layout, err,
                                                 errlen));
    }
    if (status) train_state_free(state);
    return status;
}

int state_file_try_read(const char *path, ModelConfig *config, TrainSettings *settings, TrainState *state, char *err,
                        size_t errlen) {
    memset(state, 0, sizeof(*state));
    FILE *fp = fopen_regular(path, "state file", err, errlen);
    if (fp == NULL) return 1;
    int status = state_file_read_open(fp, path, config, settings, state, err, errlen);
    fclose(fp);
    return status;
}

/* ---- checkpoint directories ---- */

uint64_t checkpoint_new_run_id(void) {
    uint64_t id = 0;
    FILE *fp = fopen("/dev/urandom", "rb");
    if (fp != NULL) {
        if (fread(&id, sizeof(id), 1, fp) != 1) id = 0;
        fclose(fp);
    }
    if (id == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        id = ((uint64_t)ts.tv_sec * 1000000007ULL) ^ ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid();
    }
    return id ? id : 1;
}

static void make_dir(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "error: cannot create checkpoint directory '%s': %s\n", dir, strerror(errno));
        exit(1);
    }
}

static void model_path(char *out, size_t n, const char *dir, long long step) {
    snprintf(out, n, "%s/model_%08lld.bin", dir, step);
}
static void state_path(char *out, size_t n, const char *dir, long long step, int rank) {
    snprintf(out, n, "%s/state_%08lld_%05d.bin", dir, step, rank);
}
static void done_path(char *out, size_t n, const char *dir, long long step) {
    snprintf(out, n, "%s/DONE_%08lld", dir, step);
}

uint32_t checkpoint_save_model(const char *dir, long long step, const ModelConfig *config, const float *params,
                               int bf16) {
    char path[4096];
    make_dir(dir);
    model_path(path, sizeof(path), dir, step);
    return model_file_write(path, config, params, bf16);
}

void checkpoint_save_state(const char *dir, const ModelConfig *config, const TrainSettings *settings,
                           const TrainState *state) {
    char path[4096];
    make_dir(dir);
    state_path(path, sizeof(path), dir, state->step, state->rank);
    state_file_write(path, config, settings, state);
}

static void remove_stale_states(const char *dir, long long step, int world_size);

void checkpoint_mark_done(const char *dir, long long step, uint64_t run_id, int world_size, uint32_t model_crc) {
    char path[4096], text[256];
    remove_stale_states(dir, step, world_size);
    done_path(path, sizeof(path), dir, step);
    int n = snprintf(text, sizeof(text), "step %lld run_id %llu world_size %d model_crc %u\n", step,
                     (unsigned long long)run_id, world_size, model_crc);
    AtomicFile f;
    atomic_file_open(&f, path);
    atomic_file_write(&f, text, (size_t)n);
    atomic_file_commit(&f);
}

void checkpoint_save(const char *dir, const ModelConfig *config, const float *params, int bf16,
                     const TrainSettings *settings, const TrainState *state, int keep_last, int keep_every) {
    uint32_t crc = checkpoint_save_model(dir, state->step, config, params, bf16);
    checkpoint_save_state(dir, config, settings, state);
    checkpoint_mark_done(dir, state->step, state->run_id, state->world_size, crc);
    checkpoint_prune(dir, keep_last, keep_every);
}

/* Kinds of file in a checkpoint directory, recognised by name. */
enum { CKPT_NONE, CKPT_MODEL, CKPT_STATE, CKPT_DONE };

/* Parses a directory entry name; sets the step, the rank (of a state file, else -1) and whether it is
 * a ".tmp" leftover. */
static int checkpoint_name_kind(const char *name, long long *step, int *rank, int *is_tmp) {
    const char *p;
    int kind;
    if (!strncmp(name, "model_", 6)) kind = CKPT_MODEL, p = name + 6;
    else if (!strncmp(name, "state_", 6)) kind = CKPT_STATE, p = name + 6;
    else if (!strncmp(name, "DONE_", 5)) kind = CKPT_DONE, p = name + 5;
    else return CKPT_NONE;
    *rank = -1;
    char *end;
    if (*p < '0' || *p > '9') return CKPT_NONE;
    *step = strtoll(p, &end, 10);
    p = end;
    if (kind == CKPT_STATE) {
        if (*p != '_' || p[1] < '0' || p[1] > '9') return CKPT_NONE;
        *rank = (int)strtol(p + 1, &end, 10);
        p = end;
    }
    if (kind != CKPT_DONE) {
        if (strncmp(p, ".bin", 4) != 0) return CKPT_NONE;
        p += 4;
    }
    *is_tmp = !strcmp(p, ".tmp");
    return (*p == '\0' || *is_tmp) ? kind : CKPT_NONE;
}

static int compare_steps(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* The steps with a DONE marker, ascending (caller frees); -1 if the directory cannot be read. */
static long long list_done_steps(const char *dir, long long **steps) {
    *steps = NULL;
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT) return 0;
        fprintf(stderr, "error: cannot read checkpoint directory '%s': %s\n", dir, strerror(errno));
        exit(1);
    }
    long long n = 0, cap = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        long long step;
        int rank, is_tmp;
        if (checkpoint_name_kind(entry->d_name, &step, &rank, &is_tmp) != CKPT_DONE || is_tmp) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            long long *grown = (long long *)realloc(*steps, (size_t)cap * sizeof(long long));
            if (grown == NULL) {
                fprintf(stderr, "error: out of memory listing '%s'\n", dir);
                exit(1);
            }
            *steps = grown;
        }
        (*steps)[n++] = step;
    }
    closedir(d);
    if (n > 0) qsort(*steps, (size_t)n, sizeof(long long), compare_steps);
    return n;
}

long long checkpoint_latest_step(const char *dir) {
    long long *steps;
    long long n = list_done_steps(dir, &steps);
    long long latest = n > 0 ? steps[n - 1] : -1;
    free(steps);
    return latest;
}

static void remove_file(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (unlink(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "error: cannot delete old checkpoint file '%s': %s\n", path, strerror(errno));
        exit(1);
    }
}

/* opendir that exits with a message naming the directory on failure */
static DIR *open_checkpoint_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "error: cannot read checkpoint directory '%s': %s\n", dir, strerror(errno));
        exit(1);
    }
    return d;
}

int checkpoint_dir_holds_run(const char *dir, char *found, size_t n) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT) return 0;
        fprintf(stderr, "error: cannot read output dir '%s': %s\n", dir, strerror(errno));
        exit(1);
    }
    int holds = 0;
    struct dirent *entry;
    while (!holds && (entry = readdir(d)) != NULL) {
        long long step;
        int rank, is_tmp;
        holds = !strcmp(entry->d_name, "main.log") ||
                checkpoint_name_kind(entry->d_name, &step, &rank, &is_tmp) != CKPT_NONE;
        if (holds) snprintf(found, n, "%s", entry->d_name);
    }
    closedir(d);
    return holds;
}

void checkpoint_dir_clear(const char *dir) {
    for (int pass = 0; pass < 2; pass++) { /* the markers first: a crash midway leaves no marker without its files */
        DIR *d = open_checkpoint_dir(dir);
        struct dirent *entry;
        while ((entry = readdir(d)) != NULL) {
            long long step;
            int rank, is_tmp;
            int kind = checkpoint_name_kind(entry->d_name, &step, &rank, &is_tmp);
            if (pass == 0 ? kind == CKPT_DONE : kind != CKPT_NONE || !strcmp(entry->d_name, "main.log"))
                remove_file(dir, entry->d_name);
        }
        closedir(d);
        fsync_dir(dir);
    }
}

/* Deletes state files of this step from ranks >= world_size: left by an unfinished earlier attempt at
 * the step with more processes, they would otherwise outlive it beside a marker that ignores them. */
static void remove_stale_states(const char *dir, long long step, int world_size) {
    DIR *d = open_checkpoint_dir(dir);
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        long long file_step;
        int rank, is_tmp;
        if (checkpoint_name_kind(entry->d_name, &file_step, &rank, &is_tmp) == CKPT_STATE && file_step == step &&
            rank >= world_size)
            remove_file(dir, entry->d_name);
    }
    closedir(d);
}

static int step_is_done(long long step, const long long *done, long long n) {
    return bsearch(&step, done, (size_t)n, sizeof(long long), compare_steps) != NULL;
}

void checkpoint_prune(const char *dir, int keep_last, int keep_every) {
    long long *done;
    long long n = list_done_steps(dir, &done);
    if (n == 0) return;
    long long newest = done[n - 1];
    /* the markers go first (and are synced), so a crash mid-prune leaves no marker without its files */
    long long kept = 0;
    for (long long i = 0; i < n; i++) {
        int keep = keep_last <= 0 || i >= n - keep_last || (keep_every > 0 && done[i] % keep_every == 0);
        if (keep) {
            done[kept++] = done[i];
        } else {
            char path[4096];
            done_path(path, sizeof(path), dir, done[i]);
            remove_file(dir, strrchr(path, '/') + 1);
        }
    }
    if (kept < n) fsync_dir(dir);
    DIR *d = open_checkpoint_dir(dir);
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        long long step;
        int rank, is_tmp;
        int kind = checkpoint_name_kind(entry->d_name, &step, &rank, &is_tmp);
        if (kind == CKPT_NONE || (kind == CKPT_DONE && !is_tmp)) continue;
        /* files of a step that is not (or no longer) a complete checkpoint, older than the newest one */
        if (step < newest && !step_is_done(step, done, kept)) remove_file(dir, entry->d_name);
        else if (step == newest && is_tmp) remove_file(dir, entry->d_name);
    }
    closedir(d);
    free(done);
}

void checkpoint_shard_range(size_t n, int world, int rank, size_t *offset, size_t *count) {
    size_t shard = n / (size_t)world + (n % (size_t)world != 0);
    size_t start = shard * (size_t)rank, end = start + shard;
    *offset = start < n ? start : n;
    *count = (end < n ? end : n) - *offset;
}

/* Reads DONE_<step>: the run id, world size and model CRC of the checkpoint. */
static int read_marker(const char *dir, long long step, uint64_t *run_id, int *world_size, uint32_t *model_crc,
                       char *err, size_t errlen) {
    char path[4096];
    done_path(path, sizeof(path), dir, step);
    char inner[8192];
    char *marker = read_text_file_limited(path, "checkpoint marker", 4096, NULL, inner, sizeof(inner));
    if (marker == NULL) {
        snprintf(err, errlen, "checkpoint at step %lld is not complete: %s", step, inner);
        return 1;
    }
    long long marker_step;
    unsigned long long id;
    unsigned int crc;
    int consumed = 0;
    int fields = sscanf(marker, "step %lld run_id %llu world_size %d model_crc %u\n%n", &marker_step, &id, world_size,
                        &crc, &consumed);
    int bad_marker = fields != 4 || marker[consumed] != '\0' || marker_step != step || *world_size < 1 ||
                     *world_size > MAX_WORLD_SIZE;
    free(marker);
    if (bad_marker) {
        snprintf(err, errlen, "%s: malformed checkpoint marker", path);
        return 1;
    }
    *run_id = id;
    *model_crc = crc;
    return 0;
}

/* Reads model_<step>.bin and checks it is the marker's and, if expected_config, holds that config. */
static int load_model(const char *dir, long long step, uint32_t model_crc, const ModelConfig *expected_config,
                      ModelConfig *config, float **params, char *err, size_t errlen) {
    char path[4096];
    model_path(path, sizeof(path), dir, step);
    uint32_t crc;
    if (model_file_try_read(path, config, params, &crc, err, errlen)) return 1;
    const char *problem = NULL;
    if (crc != model_crc) problem = "does not belong to this checkpoint (its checksum differs from the marker's)";
    else if (expected_config && !config_equal(config, expected_config))
        problem = "holds a different model config than this run's";
    if (problem) {
        snprintf(err, errlen, "%s: model file %s", path, problem);
        free(*params);
        *params = NULL;
        return 1;
    }
    return 0;
}

/* Checks that the state file at path, read into state_config, stored and state, is rank `rank` of the
 * checkpoint (config, run id, step, world size) and was written with the current settings. */
static int check_state(const char *path, const ModelConfig *state_config, const TrainSettings *stored,
                       const TrainState *state, const ModelConfig *config, const TrainSettings *settings,
                       uint64_t run_id, long long step, int world_size, int rank, char *err, size_t errlen) {
    char inner[512];
    if (!config_equal(state_config, config)) snprintf(err, errlen, "%s: model config differs from the model file's", path);
    else if (state->run_id != run_id) snprintf(err, errlen, "%s: belongs to another run (run id %llu, the checkpoint's is %llu)",
                                               path, (unsigned long long)state->run_id, (unsigned long long)run_id);
    else if (state->step != step) snprintf(err, errlen, "%s: holds step %lld, expected %lld", path, state->step, step);
    else if (state->rank != rank || state->world_size != world_size)
        snprintf(err, errlen, "%s: written by rank %d of %d, expected rank %d of %d", path, state->rank,
                 state->world_size, rank, world_size);
    else if (train_settings_compare(stored, settings, inner, sizeof(inner))) snprintf(err, errlen, "%s: %s", path, inner);
    else return 0;
    return 1;
}

int checkpoint_try_load(const char *dir, long long step, const ModelConfig *expected_config,
                        const TrainSettings *settings, int world_size, int rank, ModelConfig *config,
                        float **params, TrainState *state, char *err, size_t errlen) {
    char path[4096];
    *params = NULL;
    memset(state, 0, sizeof(*state));
    uint64_t run_id;
    int marker_world;
    uint32_t model_crc;
    if (read_marker(dir, step, &run_id, &marker_world, &model_crc, err, errlen)) return 1;
    if (marker_world != world_size) {
        done_path(path, sizeof(path), dir, step);
        snprintf(err, errlen, "%s: the checkpoint was written by %d processes, this run has %d; resume with the same "
                 "number of processes", path, marker_world, world_size);
        return 1;
    }
    if (load_model(dir, step, model_crc, expected_config, config, params, err, errlen)) return 1;
    ModelConfig state_config;
    TrainSettings stored;
    state_path(path, sizeof(path), dir, step, rank);
    int status = state_file_try_read(path, &state_config, &stored, state, err, errlen);
    if (status == 0) {
        status = check_state(path, &state_config, &stored, state, config, settings, run_id, step, world_size, rank,
                             err, errlen);
        if (status) train_state_free(state);
    }
    if (status) {
        free(*params);
        *params = NULL;
    }
    return status;
}

void checkpoint_load(const char *dir, long long step, const ModelConfig *expected_config,
                     const TrainSettings *settings, int world_size, int rank, ModelConfig *config,
                     float **params, TrainState *state) {
    char err[8192]; /* room for a message around a path of up to 4096 bytes */
    if (checkpoint_try_load(dir, step, expected_config, settings, world_size, rank, config, params, state, err,
                            sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
}

/* ---- loading with another world size ---- */

/* A stored rank's state file as its header describes it (first pass of checkpoint_try_load_shard). */
typedef struct {
    TrainState state; /* scalar fields only */
    StateFileInfo info;
} StoredShard;

static int compare_shard_offsets(const void *a, const void *b) {
    const StoredShard *x = *(const StoredShard *const *)a, *y = *(const StoredShard *const *)b;
    return (x->state.shard_offset > y->state.shard_offset) - (x->state.shard_offset < y->state.shard_offset);
}

/* Checks that the non-empty stored shards cover [0, n) without gap or overlap (empty ones may be anywhere). */
static int check_tiling(const char *dir, long long step, const StoredShard *shards, int world, size_t n, char *err,
                        size_t errlen) {
    const StoredShard **sorted = (const StoredShard **)mallocCheck((size_t)world * sizeof(*sorted));
    int used = 0;
    for (int r = 0; r < world; r++)
        if (shards[r].state.shard_count > 0) sorted[used++] = &shards[r];
    qsort(sorted, (size_t)used, sizeof(*sorted), compare_shard_offsets);
    size_t covered = 0;
    int status = 0;
    char path[4096];
    for (int k = 0; k < used && status == 0; k++) {
        const TrainState *s = &sorted[k]->state;
        if (s->shard_offset != covered) {
            state_path(path, sizeof(path), dir, step, s->rank);
            snprintf(err, errlen, "%s: its shard [%zu, %zu) %s the stored shards do not tile the %zu parameters", path,
                     s->shard_offset, s->shard_offset + s->shard_count,
                     s->shard_offset < covered ? "overlaps the one before it:" : "leaves a gap before it:", n);
            status = 1;
        }
        covered = s->shard_offset + s->shard_count;
    }
    if (status == 0 && covered != n) {
        state_path(path, sizeof(path), dir, step, used ? sorted[used - 1]->state.rank : 0);
        snprintf(err, errlen, "%s: the stored shards end at parameter %zu, not at %zu: they do not tile the parameters",
                 path, covered, n);
        status = 1;
    }
    free(sorted);
    return status;
}

/* First pass: reads and checks the header of every stored rank's state file, and the tiling. */
static int read_stored_shards(const char *dir, long long step, const ModelConfig *config,
                              const TrainSettings *settings, uint64_t run_id, int world, StoredShard *shards,
                              char *err, size_t errlen) {
    char path[4096];
    for (int r = 0; r < world; r++) {
        state_path(path, sizeof(path), dir, step, r);
        char inner[8192];
        FILE *fp = fopen_regular(path, "state file", inner, sizeof(inner));
        if (fp == NULL) {
            snprintf(err, errlen, "%s (rank %d of the %d that wrote step %lld)", inner, r, world, step);
            return 1;
        }
        ModelConfig state_config;
        TrainSettings stored;
        int status = state_file_read_header(fp, path, &state_config, &stored, &shards[r].state, &shards[r].info, err,
                                            errlen) ||
                     check_state(path, &state_config, &stored, &shards[r].state, config, settings, run_id, step, world,
                                 r, err, errlen);
        fclose(fp);
        if (status) return 1;
    }
    ParamLayout layout;
    param_layout_init(&layout, config);
    return check_tiling(dir, step, shards, world, layout.total, err, errlen);
}

#define SHARD_CHUNK ((size_t)1 << 20) /* floats streamed at a time by read_section */

/* Reads one section (m, v or master) of a stored shard holding parameters [offset, offset + count),
 * chaining its CRC, and copies the part inside [want_offset, want_offset + want_count) to dst (NULL:
 * nothing). Streams through buf so that memory stays bounded whatever the shard size. */
static int read_section(FILE *fp, float *buf, size_t offset, size_t count, size_t want_offset, size_t want_count,
                        float *dst, uint32_t *crc, const ParamLayout *layout, const char *path, const char *what,
                        char *err, size_t errlen) {
    for (size_t start = 0; start < count; start += SHARD_CHUNK) {
        size_t n = count - start < SHARD_CHUNK ? count - start : SHARD_CHUNK;
        if (read_floats(fp, buf, n, 0, crc, path, what, err, errlen) ||
            check_section(path, what, buf, n, offset + start, layout, err, errlen))
            return 1;
        size_t lo = offset + start, hi = lo + n;
        if (lo < want_offset) lo = want_offset;
        if (hi > want_offset + want_count) hi = want_offset + want_count;
        if (dst != NULL && lo < hi) memcpy(dst + (lo - want_offset), buf + (lo - offset - start), (hi - lo) * sizeof(float));
    }
    return 0;
}

/* Second pass over one stored file: streams its whole data part (to check the CRC), copies the moments
 * (and master, if out->master) that fall in out's shard, and keeps the loader state if keep_loader. */
static int read_stored_data(const char *path, const StoredShard *s, const ParamLayout *layout, float *buf,
                            int keep_loader, TrainState *out, char *err, size_t errlen) {
    FILE *fp = fopen_regular(path, "state file", err, errlen);
    if (fp == NULL) return 1;
    uint8_t header[STATE_HEADER_BYTES];
    int status = read_exact(fp, header, sizeof(header), path, "the header", err, errlen);
    if (status == 0 && (memcmp(header, s->info.header, sizeof(header)) != 0 || fseeko(fp, s->info.data_start, SEEK_SET))) {
        snprintf(err, errlen, "%s: changed while the checkpoint was being loaded", path);
        status = 1;
    }
    size_t offset = s->state.shard_offset, count = s->state.shard_count, bytes = s->state.loader_state_bytes;
    size_t want_offset = out->shard_offset, want_count = out->shard_count;
    uint32_t crc = 0;
    status = status ||
             read_section(fp, buf, offset, count, want_offset, want_count, out->m, &crc, layout, path, "first moments",
                          err, errlen) ||
             read_section(fp, buf, offset, count, want_offset, want_count, out->v, &crc, layout, path,
                          "second moments", err, errlen) ||
             (s->info.has_master && read_section(fp, buf, offset, count, want_offset, want_count, out->master, &crc,
                                                 layout, path, "master weights", err, errlen));
    void *loader = bytes ? mallocCheck(bytes) : NULL;
    status = status || read_exact(fp, loader, bytes, path, "the data loader state", err, errlen);
    if (status == 0) crc = checkpoint_crc32(crc, loader, bytes);
    /* the carried states (checkpoint_load_carry takes them): read for the checksum only */
    for (size_t start = 0; status == 0 && start < s->info.carry_count; start += SHARD_CHUNK) {
        size_t n = s->info.carry_count - start < SHARD_CHUNK ? s->info.carry_count - start : SHARD_CHUNK;
        status = read_floats(fp, buf, n, 0, &crc, path, "the carried states", err, errlen);
    }
    fclose(fp);
    if (status == 0 && crc != s->info.data_crc) {
        snprintf(err, errlen, "%s: data checksum mismatch (corrupt optimizer or loader state)", path);
        status = 1;
    }
    if (status == 0 && keep_loader) {
        out->loader_state = loader;
        out->loader_state_bytes = bytes;
    } else {
        free(loader);
    }
    return status;
}

/* Second pass: fills out's buffers from the stored files that overlap its shard, and rank 0's. */
static int assemble_shard(const char *dir, long long step, const StoredShard *shards, int world,
                          const ParamLayout *layout, TrainState *out, char *err, size_t errlen) {
    int has_master = 1;
    for (int r = 0; r < world; r++) has_master = has_master && shards[r].info.has_master;
    size_t count = out->shard_count;
    out->m = (float *)mallocCheck(count * sizeof(float));
    out->v = (float *)mallocCheck(count * sizeof(float));
    out->master = has_master ? (float *)mallocCheck(count * sizeof(float)) : NULL;
    float *buf = (float *)mallocCheck(SHARD_CHUNK * sizeof(float));
    size_t want_end = out->shard_offset + count;
    int status = 0;
    char path[4096];
    for (int r = 0; r < world && status == 0; r++) {
        const TrainState *s = &shards[r].state;
        int overlaps = s->shard_offset < want_end && out->shard_offset < s->shard_offset + s->shard_count;
        if (!overlaps && r != 0) continue;
        state_path(path, sizeof(path), dir, step, r);
        status = read_stored_data(path, &shards[r], layout, buf, r == 0, out, err, errlen);
    }
    free(buf);
    return status;
}

int checkpoint_try_load_shard(const char *dir, long long step, const ModelConfig *expected_config,
                              const TrainSettings *settings, size_t want_offset, size_t want_count, ModelConfig *config,
                              float **params, TrainState *state, int *stored_world, char *err, size_t errlen) {
    *params = NULL;
    memset(state, 0, sizeof(*state));
    uint64_t run_id;
    int world;
    uint32_t model_crc;
    if (read_marker(dir, step, &run_id, &world, &model_crc, err, errlen)) return 1;
    if (load_model(dir, step, model_crc, expected_config, config, params, err, errlen)) return 1;
    ParamLayout layout;
    param_layout_init(&layout, config);
    int status = 0;
    if (want_offset > layout.total || want_count > layout.total - want_offset) {
        snprintf(err, errlen, "wanted optimizer shard [%zu, +%zu) lies outside the %zu parameters of the checkpoint "
                 "at step %lld", want_offset, want_count, layout.total, step);
        status = 1;
    }
    StoredShard *shards = (StoredShard *)mallocCheck((size_t)world * sizeof(StoredShard));
    status = status || read_stored_shards(dir, step, config, settings, run_id, world, shards, err, errlen);
    if (status == 0) {
        state->step = step;
        state->rng_state = shards[0].state.rng_state;
        state->run_id = run_id;
        state->world_size = world;
        state->rank = 0;
        state->shard_offset = want_offset;
        state->shard_count = want_count;
        status = assemble_shard(dir, step, shards, world, &layout, state, err, errlen);
        if (status) train_state_free(state);
    }
    free(shards);
    if (status) {
        free(*params);
        *params = NULL;
    } else if (stored_world) {
        *stored_world = world;
    }
    return status;
}

void checkpoint_load_carry(const char *dir, long long step, int rank, float **carry, size_t *count) {
    char path[4096], err[8192];
    state_path(path, sizeof(path), dir, step, rank);
    ModelConfig config;
    TrainSettings settings;
    TrainState state;
    if (state_file_try_read(path, &config, &settings, &state, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
    for (size_t i = 0; i < state.carry_count; i++)
        if (!isfinite(state.carry[i])) {
            fprintf(stderr, "error: %s: carried state %zu is not finite\n", path, i);
            exit(1);
        }
    *carry = state.carry;
    *count = state.carry_count;
    state.carry = NULL;
    train_state_free(&state);
}

void checkpoint_load_shard(const char *dir, long long step, const ModelConfig *expected_config,
                           const TrainSettings *settings, size_t want_offset, size_t want_count, ModelConfig *config,
                           float **params, TrainState *state, int *stored_world) {
    char err[8192]; /* room for a message around a path of up to 4096 bytes */
    if (checkpoint_try_load_shard(dir, step, expected_config, settings, want_offset, want_count, config, params, state,
                                  stored_world, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
}
