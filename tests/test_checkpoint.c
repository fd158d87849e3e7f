/*
 * Tests of train/checkpoint.c: CRC-32 and bf16 against bitwise references, model and state file
 * round trips, retention, refusal of mismatched checkpoints, a fuzz test of the readers over many
 * mutated files (none may crash; every accepted file must be self-consistent), resharding (a
 * checkpoint of W ranks loaded by W' ranks, bit-exact, and refused when its shards are inconsistent),
 * and SIGKILLs of a process in the middle of saving checkpoints (the newest complete one must always
 * load).
 */
#include "train/checkpoint.h"
#include "model/params.h"
#include "common/rng.h"
#include "common/utils.h"
#include "tests/test.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp_dir[256];

static void make_config(ModelConfig *c, const char *json) {
    char err[512];
    if (config_parse(c, json, "test config", err, sizeof(err))) {
        printf("FAIL config: %s\n", err);
        exit(1);
    }
}

/* A small scalar-A model with a tokenizer note, and a diagonal-A one with ngroups = 2. */
static const char *SCALAR_JSON = "{\"name\":\"ck-scalar\",\"tokenizer\":\"gpt-neox-20b\",\"d_model\":16,\"n_layer\":2,"
                                 "\"vocab_size\":100,\"pad_vocab_multiple\":16,\"d_state\":8,\"d_conv\":4,\"expand\":2,"
                                 "\"headdim\":8,\"ngroups\":1,\"chunk_size\":8}";
static const char *DIAGONAL_JSON = "{\"name\":\"ck-diag\",\"d_model\":24,\"n_layer\":3,\"vocab_size\":77,"
                                   "\"pad_vocab_multiple\":8,\"d_state\":6,\"d_conv\":3,\"expand\":2,\"headdim\":12,"
                                   "\"ngroups\":2,\"chunk_size\":4,\"a_structure\":\"diagonal\",\"norm_eps\":1e-6}";

static float *make_params(const ModelConfig *c, uint64_t seed, size_t *n) {
    ParamLayout layout;
    param_layout_init(&layout, c);
    float *p = (float *)mallocCheck(layout.total * sizeof(float));
    params_init(c, p, seed);
    /* norms and D are all ones after init: perturb them so every tensor carries distinct values */
    uint64_t rng = rng_seed(seed + 99);
    for (size_t i = 0; i < layout.total; i++) p[i] += (float)(0.01 * rng_normal(&rng));
    *n = layout.total;
    return p;
}

/* ---- CRC-32 and bf16 against simple references ---- */

static uint32_t crc32_bitwise(const uint8_t *p, size_t n) {
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void test_crc32(void) {
    uint8_t buf[1000];
    uint64_t rng = rng_seed(5);
    for (int i = 0; i < 1000; i++) buf[i] = (uint8_t)rng_next(&rng);
    int bad = 0;
    for (size_t n = 0; n <= 1000; n += 37) {
        size_t split = n / 3;  /* chaining two calls must equal one call */
        uint32_t chained = checkpoint_crc32(checkpoint_crc32(0, buf, split), buf + split, n - split);
        if (chained != crc32_bitwise(buf, n)) bad++;
    }
    /* 0xCBF43926 is the published CRC-32 check value of "123456789" */
    uint32_t check = checkpoint_crc32(0, "123456789", 9);
    test_report(bad == 0 && check == 0xCBF43926u, "crc32_matches_bitwise", "%d mismatches over 28 lengths, check=%08x",
                bad, check);
}

/* Reference rounding: pick the nearer of the two bf16 neighbours in double arithmetic, ties to even. */
static float bf16_reference(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t lo_bits = u & 0xffff0000u, hi_bits = lo_bits + 0x10000u;
    float lo, hi;
    memcpy(&lo, &lo_bits, 4);
    memcpy(&hi, &hi_bits, 4); /* next bf16 away from zero; past the largest one it is inf, i.e. 2^128 */
    double hi_value = isinf(hi) ? copysign(ldexp(1.0, 128), x) : hi;
    double dlo = fabs((double)x - lo), dhi = fabs(hi_value - x);
    if (dlo < dhi) return lo;
    if (dhi < dlo) return hi;
    return (lo_bits >> 16) & 1 ? hi : lo;
}

static void test_bf16(void) {
    uint64_t rng = rng_seed(11);
    int bad = 0, total = 0;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)rng_next(&rng);
        if (i % 4 == 0) u = (u & 0xffff0000u) | 0x8000u; /* exact ties */
        float x;
        memcpy(&x, &u, 4);
        if (isnan(x) || isinf(x)) continue;
        total++;
        float got = bf16_to_float(float_to_bf16(x)), want = bf16_reference(x);
        if (memcmp(&got, &want, 4) != 0) bad++;
    }
    float nan_in = NAN, inf_in = INFINITY;
    int specials = isnan(bf16_to_float(float_to_bf16(nan_in))) && isinf(bf16_to_float(float_to_bf16(inf_in))) &&
                   bf16_to_float(float_to_bf16(1.0f)) == 1.0f;
    test_report(bad == 0 && specials, "bf16_round_nearest_even", "%d of %d random floats (1/4 exact ties) differ from "
                "the reference; NaN/inf/1.0 %s", bad, total, specials ? "kept" : "WRONG");
}

/* ---- model files ---- */

static int configs_identical(const ModelConfig *a, const ModelConfig *b) {
    return config_equal(a, b) && !strcmp(a->name, b->name) && !strcmp(a->tokenizer, b->tokenizer) &&
           a->dt_min == b->dt_min && a->dt_max == b->dt_max && a->dt_init_floor == b->dt_init_floor;
}

static void test_model_roundtrip(const char *json, const char *label) {
    ModelConfig c, back;
    make_config(&c, json);
    size_t n;
    float *p = make_params(&c, 3, &n);
    char path[512], err[1024];
    snprintf(path, sizeof(path), "%s/%s_fp32.bin", tmp_dir, label);
    model_file_write(path, &c, p, 0);
    float *q;
    int status = model_file_try_read(path, &back, &q, NULL, err, sizeof(err));
    int exact = status == 0 && memcmp(p, q, n * sizeof(float)) == 0 && configs_identical(&c, &back);
    test_report(exact, "model_fp32_roundtrip", "%s: %zu params bit-exact, config (name '%s', tokenizer '%s') %s", label,
                n, back.name, back.tokenizer, status ? err : "equal");
    if (status == 0) free(q);

    snprintf(path, sizeof(path), "%s/%s_bf16.bin", tmp_dir, label);
    model_file_write(path, &c, p, 1);
    status = model_file_try_read(path, &back, &q, NULL, err, sizeof(err));
    size_t bad = 0;
    double max_rel = 0, tensor_rel = INFINITY;
    if (status == 0) {
        double *qd = (double *)mallocCheck(n * sizeof(double)), *pd = (double *)mallocCheck(n * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            if (q[i] != bf16_to_float(float_to_bf16(p[i]))) bad++;
            double rel = fabs(q[i] - p[i]) / fabs(p[i]);
            if (rel > max_rel) max_rel = rel;
            qd[i] = q[i];
            pd[i] = p[i];
        }
        tensor_rel = test_rel_error(qd, pd, (long)n);
        free(qd);
        free(pd);
        free(q);
    }
    struct stat st;
    stat(path, &st);
    test_report(status == 0 && bad == 0 && max_rel <= 1.0 / 256 && configs_identical(&c, &back), "model_bf16_roundtrip",
                "%s: %zu values differ from RNE rounding, max rel err %.2e per value (<= 2^-8), %.2e over the buffer, "
                "file %lld bytes", label, bad, max_rel, tensor_rel, (long long)st.st_size);

    int is_model = model_file_is_checkpoint(path);
    int json_is_model = model_file_is_checkpoint("configs/mamba2-tiny.json");
    test_report(is_model && !json_is_model, "model_file_is_checkpoint", "%s: model file %d, JSON config %d", label,
                is_model, json_is_model);
    free(p);
}

static uint8_t *slurp(const char *path, size_t *n) {
    char *text = read_text_file(path, n);
    if (text == NULL) {
        printf("FAIL slurp: cannot read %s\n", path);
        exit(1);
    }
    return (uint8_t *)text;
}

static void spit(const char *path, const uint8_t *data, size_t n) {
    FILE *fp = fopenCheck(path, "wb");
    if (n) fwriteCheck(data, 1, n, fp);
    fcloseCheck(fp);
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* Recomputes the model header CRC so that a mutation reaches the structural checks. */
static void fix_model_header_crc(uint8_t *b, size_t n) {
    uint32_t json_bytes = get32(b + 112);
    if (n < 128 || 128 + (size_t)json_bytes > n) return;
    put32(b + 124, checkpoint_crc32(checkpoint_crc32(0, b, 124), b + 128, json_bytes));
}

typedef struct {
    int tried, refused, accepted, accepted_bad, unnamed;
} FuzzStats;

/* Reads one mutated model file. An accepted one (e.g. a config edit that keeps every size, with the
 * header CRC fixed) must be self-consistent: its config gives the sizes and the file length its header
 * states, its numbers are finite and positive, and its tensors are the original ones. */
static void fuzz_one(FuzzStats *s, const char *path, const uint8_t *mutated, size_t n, const float *orig,
                     size_t orig_n) {
    spit(path, mutated, n);
    ModelConfig c;
    float *q;
    char err[1024] = "";
    s->tried++;
    if (model_file_try_read(path, &c, &q, NULL, err, sizeof(err))) {
        s->refused++;
        if (strstr(err, path) == NULL) s->unnamed++;
        return;
    }
    s->accepted++;
    ParamLayout layout;
    param_layout_init(&layout, &c);
    int consistent = layout.total == orig_n && memcmp(q, orig, orig_n * sizeof(float)) == 0 &&
                     get32(mutated + 112) + 128 + orig_n * 4 == n && isfinite(c.norm_eps) && c.norm_eps > 0 &&
                     isfinite(c.dt_max) && c.dt_min > 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        uint64_t stored;
        memcpy(&stored, mutated + 24 + 8 * i, 8);
        consistent = consistent && stored == layout.sizes[i];
    }
    if (!consistent) s->accepted_bad++;
    free(q);
}

static void test_model_fuzz(void) {
    ModelConfig c;
    make_config(&c, SCALAR_JSON);
    size_t n_params;
    float *p = make_params(&c, 4, &n_params);
    char path[512], fuzz_path[512];
    snprintf(path, sizeof(path), "%s/fuzz_orig.bin", tmp_dir);
    snprintf(fuzz_path, sizeof(fuzz_path), "%s/fuzz_mut.bin", tmp_dir);
    model_file_write(path, &c, p, 0);
    size_t n;
    uint8_t *orig = slurp(path, &n);
    uint8_t *b = (uint8_t *)mallocCheck(n + 64);
    size_t json_end = 128 + get32(orig + 112);
    uint64_t rng = rng_seed(2024);
    FuzzStats trunc = {0}, flips = {0}, header = {0}, structural = {0};

    /* every truncation length through the header and JSON, then every 7th byte of the data */
    for (size_t len = 0; len < n; len += len < json_end + 16 ? 1 : 7) fuzz_one(&trunc, fuzz_path, orig, len, p, n_params);
    memcpy(b, orig, n);
    memset(b + n, 0, 64);
    fuzz_one(&trunc, fuzz_path, b, n + 1, p, n_params); /* trailing byte */
    fuzz_one(&trunc, fuzz_path, b, n + 64, p, n_params);

    /* single and multiple bit flips: half in the header and JSON, half in the data */
    for (int i = 0; i < 3000; i++) {
        memcpy(b, orig, n);
        int flips_here = 1 + (int)(rng_next(&rng) % 3);
        for (int k = 0; k < flips_here; k++) {
            size_t pos = i % 2 ? rng_next(&rng) % json_end : json_end + rng_next(&rng) % (n - json_end);
            b[pos] ^= (uint8_t)(1u << (rng_next(&rng) % 8));
        }
        fuzz_one(&flips, fuzz_path, b, n, p, n_params);
    }
    /* random bytes over header fields, with the magic kept half of the time */
    for (int i = 0; i < 1000; i++) {
        memcpy(b, orig, n);
        size_t start = i % 2 ? 8 : 0, span = 1 + rng_next(&rng) % 40, at = start + rng_next(&rng) % (128 - start);
        for (size_t k = at; k < at + span && k < 128; k++) b[k] = (uint8_t)rng_next(&rng);
        fuzz_one(&header, fuzz_path, b, n, p, n_params);
    }
    /* structural mutations with the header CRC recomputed: they must be caught by the field checks */
    for (int i = 0; i < 1500; i++) {
        memcpy(b, orig, n);
        int what = (int)(rng_next(&rng) % 6);
        uint32_t r = (uint32_t)rng_next(&rng);
        if (what == 0) put32(b + 8 + 4 * (r % 2), get32(b + 8 + 4 * (r % 2)) + 1 + (r >> 28)); /* version / dtype */
        else if (what == 1) { uint64_t v; memcpy(&v, b + 16 + 8 * (r % 12), 8); v += (r >> 8) % 2 ? 1 : (uint64_t)-1; memcpy(b + 16 + 8 * (r % 12), &v, 8); }
        else if (what == 2) put32(b + 112, get32(b + 112) + (int32_t)(r % 9) - 4); /* JSON length */
        else if (what == 3) put32(b + 120, r | 1); /* reserved */
        else b[128 + r % (json_end - 128)] = (uint8_t)(what == 4 ? 32 + (r >> 8) % 95 : (uint32_t)"0123456789{}[]\":,"[(r >> 8) % 17]);
        fix_model_header_crc(b, n);
        fuzz_one(&structural, fuzz_path, b, n, p, n_params);
    }
    FuzzStats *all[] = {&trunc, &flips, &header, &structural};
    const char *names[] = {"truncations", "bit flips", "random header bytes", "structural (CRC fixed)"};
    for (int k = 0; k < 4; k++) {
        FuzzStats *s = all[k];
        test_report(s->accepted_bad == 0 && s->unnamed == 0 && s->refused > 0, "model_fuzz",
                    "%s: %d files, %d refused (all naming the file: %s), %d accepted, %d of them inconsistent", names[k],
                    s->tried, s->refused, s->unnamed ? "NO" : "yes", s->accepted, s->accepted_bad);
    }
    /* bit flips and truncations can never be accepted: both CRCs and the length forbid it */
    test_report(trunc.accepted == 0 && flips.accepted == 0, "model_fuzz_no_silent_corruption",
                "%d truncated and %d bit-flipped files accepted", trunc.accepted, flips.accepted);
    free(orig);
    free(b);
    free(p);
}

/* ---- state files ---- */

static TrainSettings make_settings(void) {
    TrainSettings s = {.B = 4, .T = 64, .total_batch_size = 512, .max_steps = 1000, .warmup_steps = 10,
                       .learning_rate = 3e-4f, .final_lr_frac = 0.1f, .weight_decay = 0.1f, .grad_clip = 1.0f};
    snprintf(s.lr_schedule, sizeof(s.lr_schedule), "cosine");
    return s;
}

/* A state whose moments, master weights and loader bytes are derived from step and rank. */
static TrainState make_state(const ModelConfig *c, long long step, int rank, int world, int master, uint64_t run_id) {
    ParamLayout layout;
    param_layout_init(&layout, c);
    TrainState st = {0};
    st.step = step;
    st.rng_state = 0x1234567890abcdefULL ^ (uint64_t)step;
    st.run_id = run_id;
    st.world_size = world;
    st.rank = rank;
    st.shard_count = layout.total / world + (rank < (int)(layout.total % world));
    st.shard_offset = rank * (layout.total / world) + (rank < (int)(layout.total % world) ? (size_t)rank : layout.total % world);
    st.m = (float *)mallocCheck(st.shard_count * sizeof(float));
    st.v = (float *)mallocCheck(st.shard_count * sizeof(float));
    st.master = master ? (float *)mallocCheck(st.shard_count * sizeof(float)) : NULL;
    uint64_t rng = rng_seed((uint64_t)step * 131 + rank);
    for (size_t i = 0; i < st.shard_count; i++) {
        uint64_t r = rng_next(&rng);
        st.m[i] = (float)(int32_t)(uint32_t)r * 1e-9f;
        st.v[i] = (float)(r >> 40) * 1e-7f;
        if (master) st.master[i] = (float)(int16_t)(r >> 8) * 1e-4f;
    }
    st.loader_state_bytes = 40 + (size_t)rank;
    st.loader_state = mallocCheck(st.loader_state_bytes);
    for (size_t i = 0; i < st.loader_state_bytes; i++) ((uint8_t *)st.loader_state)[i] = (uint8_t)(step * 7 + i);
    return st;
}

static int states_equal(const TrainState *a, const TrainState *b) {
    size_t n = a->shard_count * sizeof(float);
    return a->step == b->step && a->rng_state == b->rng_state && a->run_id == b->run_id &&
           a->world_size == b->world_size && a->rank == b->rank && a->shard_offset == b->shard_offset &&
           a->shard_count == b->shard_count && !memcmp(a->m, b->m, n) && !memcmp(a->v, b->v, n) &&
           (a->master == NULL) == (b->master == NULL) && (a->master == NULL || !memcmp(a->master, b->master, n)) &&
           a->loader_state_bytes == b->loader_state_bytes &&
           !memcmp(a->loader_state, b->loader_state, a->loader_state_bytes);
}

static void test_state_roundtrip(void) {
    ModelConfig c, back;
    make_config(&c, DIAGONAL_JSON);
    TrainSettings s = make_settings(), s_back;
    char path[512], err[1024];
    for (int master = 0; master <= 1; master++) {
        TrainState st = make_state(&c, 17, 1, 3, master, 0xabcdef), rd;
        snprintf(path, sizeof(path), "%s/state_rt_%d.bin", tmp_dir, master);
        state_file_write(path, &c, &s, &st);
        int status = state_file_try_read(path, &back, &s_back, &rd, err, sizeof(err));
        int same = status == 0 && states_equal(&st, &rd) && config_equal(&c, &back) &&
                   train_settings_compare(&s_back, &s, err, sizeof(err)) == 0;
        test_report(same, "state_roundtrip", "master weights %s: %zu of the moments (shard at %zu), %zu loader bytes, "
                    "settings and config %s", master ? "present" : "absent", st.shard_count, st.shard_offset,
                    st.loader_state_bytes, same ? "equal" : err);
        if (status == 0) train_state_free(&rd);
        train_state_free(&st);
    }
    /* state file fuzz: truncations and bit flips must all be refused, naming the file */
    TrainState st = make_state(&c, 5, 0, 1, 1, 77);
    snprintf(path, sizeof(path), "%s/state_fuzz.bin", tmp_dir);
    state_file_write(path, &c, &s, &st);
    size_t n;
    uint8_t *orig = slurp(path, &n);
    uint8_t *b = (uint8_t *)mallocCheck(n);
    uint64_t rng = rng_seed(9);
    char mut[512];
    snprintf(mut, sizeof(mut), "%s/state_mut.bin", tmp_dir);
    int tried = 0, accepted = 0, unnamed = 0;
    for (int i = 0; i < 1500; i++) {
        size_t len = n;
        memcpy(b, orig, n);
        if (i % 3 == 0) len = rng_next(&rng) % n;
        else b[rng_next(&rng) % (i % 3 == 1 ? 600 : n)] ^= (uint8_t)(1u << (rng_next(&rng) % 8));
        spit(mut, b, len);
        TrainState rd;
        tried++;
        if (state_file_try_read(mut, &back, &s_back, &rd, err, sizeof(err)) == 0) {
            accepted++;
            train_state_free(&rd);
        } else if (!strstr(err, mut)) {
            unnamed++;
        }
    }
    test_report(accepted == 0 && unnamed == 0, "state_fuzz", "%d truncated or bit-flipped state files: %d accepted, "
                "%d errors without the file name", tried, accepted, unnamed);
    free(orig);
    free(b);
    train_state_free(&st);
}

/* ---- checkpoint directories ---- */

static int file_exists(const char *dir, const char *fmt, long long step) {
    char name[256], path[800];
    snprintf(name, sizeof(name), fmt, step);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}

static void test_retention(void) {
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/run_retention", tmp_dir);
    test_report(checkpoint_latest_step(dir) == -1, "latest_step_missing_dir", "-1 for a directory that does not exist");
    ModelConfig c;
    make_config(&c, SCALAR_JSON);
    TrainSettings s = make_settings();
    size_t n;
    float *p = make_params(&c, 1, &n);
    for (long long step = 1; step <= 10; step++) {
        TrainState st = make_state(&c, step, 0, 1, 0, 42);
        checkpoint_save(dir, &c, p, 0, &s, &st, 3, 4);
        train_state_free(&st);
    }
    /* keep the newest 3 (8, 9, 10) and every multiple of 4 (4, 8) */
    int ok = 1;
    char kept[128] = "";
    for (long long step = 1; step <= 10; step++) {
        int want = step >= 8 || step % 4 == 0;
        int have = file_exists(dir, "DONE_%08lld", step), model = file_exists(dir, "model_%08lld.bin", step),
            state = file_exists(dir, "state_%08lld_00000.bin", step);
        if (have != want || model != want || state != want) ok = 0;
        if (have) snprintf(kept + strlen(kept), sizeof(kept) - strlen(kept), "%lld ", step);
    }
    test_report(ok && count_files(dir) == 12 && checkpoint_latest_step(dir) == 10, "retention_keep_last_and_every",
                "-nk 3 -nm 4 over steps 1..10 keeps steps [%s] (want 4 8 9 10), %d files", kept, count_files(dir));

    /* an unfinished newer checkpoint (no marker) and a stray temp file do not count */
    TrainState st = make_state(&c, 11, 0, 1, 0, 42);
    checkpoint_save_model(dir, 11, &c, p, 0);
    checkpoint_save_state(dir, &c, &s, &st);
    char stray[600];
    snprintf(stray, sizeof(stray), "%s/model_00000012.bin.tmp", dir);
    spit(stray, (const uint8_t *)"partial", 7);
    long long latest = checkpoint_latest_step(dir);
    test_report(latest == 10, "latest_step_ignores_unfinished", "model+state of step 11 without marker, a .tmp of step "
                "12: latest = %lld", latest);
    train_state_free(&st);
    /* after resuming from 10 and saving 12, the orphaned step 11 goes, step 12's .tmp is replaced */
    st = make_state(&c, 12, 0, 1, 0, 42);
    checkpoint_save(dir, &c, p, 0, &s, &st, 2, 4);
    int orphans_gone = !file_exists(dir, "model_%08lld.bin", 11) && !file_exists(dir, "state_%08lld_00000.bin", 11) &&
                       !file_exists(dir, "model_%08lld.bin.tmp", 12);
    test_report(orphans_gone && file_exists(dir, "DONE_%08lld", 12) && !file_exists(dir, "DONE_%08lld", 9),
                "prune_removes_orphans", "unfinished step 11 and the stale .tmp removed; with -nk 2 step 9 pruned (kept 10, 12 and 4, 8)");
    train_state_free(&st);
    free(p);
}

static void test_load_checks(void) {
    char dir[512], other[512], err[1024];
    snprintf(dir, sizeof(dir), "%s/run_load", tmp_dir);
    snprintf(other, sizeof(other), "%s/run_other", tmp_dir);
    ModelConfig c, back;
    make_config(&c, DIAGONAL_JSON);
    TrainSettings s = make_settings();
    size_t n;
    float *p = make_params(&c, 8, &n);
    const int world = 2;
    uint64_t run_id = checkpoint_new_run_id();
    for (long long step = 100; step <= 200; step += 100) {
        p[0] = (float)step; /* the model differs between steps */
        uint32_t crc = checkpoint_save_model(dir, step, &c, p, 1);
        for (int rank = 0; rank < world; rank++) {
            TrainState st = make_state(&c, step, rank, world, 1, run_id);
            checkpoint_save_state(dir, &c, &s, &st);
            train_state_free(&st);
        }
        checkpoint_mark_done(dir, step, run_id, world, crc);
    }
    /* the same step from another run */
    TrainState foreign = make_state(&c, 200, 1, world, 1, run_id + 1);
    uint32_t other_crc = checkpoint_save_model(other, 200, &c, p, 1);
    checkpoint_save_state(other, &c, &s, &foreign);
    checkpoint_mark_done(other, 200, run_id + 1, world, other_crc);

    long long latest = checkpoint_latest_step(dir);
    int all_ok = latest == 200;
    for (int rank = 0; rank < world; rank++) {
        float *q;
        TrainState st, want = make_state(&c, 200, rank, world, 1, run_id);
        int status = checkpoint_try_load(dir, latest, &c, &s, world, rank, &back, &q, &st, err, sizeof(err));
        if (status || !states_equal(&st, &want) || q[0] != 200.0f || q[1] != bf16_to_float(float_to_bf16(p[1]))) all_ok = 0;
        if (status == 0) { free(q); train_state_free(&st); }
        train_state_free(&want);
    }
    test_report(all_ok, "checkpoint_load_two_ranks", "step %lld, 2 ranks, bf16 model: state and params as saved", latest);

    /* each mismatch must be refused, naming what differs */
    TrainSettings s_other = s;
    s_other.B = 8;
    ModelConfig c_other;
    make_config(&c_other, SCALAR_JSON);
    char path[600], saved[600];
    struct {
        const char *what, *expect;
        const char *dir;
        const ModelConfig *config;
        const TrainSettings *settings;
        int world, rank;
    } cases[] = {
        {"other settings", "'B' differs", dir, &c, &s_other, world, 0},
        {"other world size", "written by 2 processes", dir, &c, &s, 4, 0},
        {"other config", "different model config", dir, &c_other, &s, world, 0},
    };
    for (int k = 0; k < 3; k++) {
        float *q;
        TrainState st;
        int status = checkpoint_try_load(cases[k].dir, 200, cases[k].config, cases[k].settings, cases[k].world,
                                         cases[k].rank, &back, &q, &st, err, sizeof(err));
        test_report(status != 0 && strstr(err, cases[k].expect) != NULL, "checkpoint_load_refuses",
                    "%s: %s", cases[k].what, err);
    }
    /* a state file of another run swapped in, and a model file of another step swapped in */
    snprintf(path, sizeof(path), "%s/state_00000200_00001.bin", dir);
    snprintf(saved, sizeof(saved), "%s/state_saved.bin", tmp_dir);
    rename(path, saved);
    char foreign_path[600];
    snprintf(foreign_path, sizeof(foreign_path), "%s/state_00000200_00001.bin", other);
    size_t fn;
    uint8_t *fb = slurp(foreign_path, &fn);
    spit(path, fb, fn);
    free(fb);
    float *q;
    TrainState st;
    int status = checkpoint_try_load(dir, 200, &c, &s, world, 1, &back, &q, &st, err, sizeof(err));
    test_report(status != 0 && strstr(err, "another run") != NULL, "checkpoint_load_refuses", "state file of another "
                "run: %s", err);
    rename(saved, path);
    char model200[600], model100[600], model_saved[600];
    snprintf(model200, sizeof(model200), "%s/model_00000200.bin", dir);
    snprintf(model100, sizeof(model100), "%s/model_00000100.bin", dir);
    snprintf(model_saved, sizeof(model_saved), "%s/model_saved.bin", tmp_dir);
    rename(model200, model_saved);
    fb = slurp(model100, &fn);
    spit(model200, fb, fn);
    free(fb);
    status = checkpoint_try_load(dir, 200, &c, &s, world, 0, &back, &q, &st, err, sizeof(err));
    test_report(status != 0 && strstr(err, "does not belong") != NULL, "checkpoint_load_refuses",
                "model file of step 100 under step 200's name: %s", err);
    rename(model_saved, model200);
    status = checkpoint_try_load(dir, 200, NULL, &s, world, 0, &back, &q, &st, err, sizeof(err));
    test_report(status == 0 && config_equal(&back, &c), "checkpoint_load_restored", "after putting the files back the "
                "checkpoint loads again (config taken from the file)");
    if (status == 0) { free(q); train_state_free(&st); }
    train_state_free(&foreign);
    free(p);
}

/* ---- resharding: a checkpoint written by W ranks loaded by W' ranks ---- */

/* 2329 parameters: odd, so the shards of 2 and 3 ranks differ in size. */
static const char *ODD_JSON = "{\"name\":\"ck-odd\",\"d_model\":15,\"n_layer\":1,\"vocab_size\":37,\"pad_vocab_multiple\":1,"
                              "\"d_state\":5,\"d_conv\":3,\"expand\":2,\"headdim\":10,\"ngroups\":1,\"chunk_size\":4}";

/* The stored m (which 0), v (1) or master (2) of parameter i at step: a function of the global index,
 * so that a range assembled from any shards can be checked against it. */
/* which: 0 first moments, 1 second moments (never negative: a state file with one is refused), 2 master */
static float shard_value(int which, long long step, size_t i) {
    uint64_t rng = rng_seed((uint64_t)step * 1000003u + i * 3 + (uint64_t)which);
    float x = (float)(int32_t)(uint32_t)rng_next(&rng) * 1e-9f;
    return which == 1 ? fabsf(x) : x;
}

static uint8_t loader_byte(long long step, int rank, size_t i) { return (uint8_t)(step * 7 + i + 13 * rank); }

/* Rank `rank` of `world` at step, holding [offset, offset + count); rng and loader state differ by rank. */
static TrainState make_shard_state(long long step, int rank, int world, size_t offset, size_t count, int master,
                                   uint64_t run_id) {
    TrainState st = {.step = step, .rng_state = 0xfeedULL + (uint64_t)step * 31 + (uint64_t)rank, .run_id = run_id,
                     .world_size = world, .rank = rank, .shard_offset = offset, .shard_count = count};
    st.m = (float *)mallocCheck(count * sizeof(float));
    st.v = (float *)mallocCheck(count * sizeof(float));
    st.master = master ? (float *)mallocCheck(count * sizeof(float)) : NULL;
    for (size_t k = 0; k < count; k++) {
        st.m[k] = shard_value(0, step, offset + k);
        st.v[k] = shard_value(1, step, offset + k);
        if (master) st.master[k] = shard_value(2, step, offset + k);
    }
    st.loader_state_bytes = 40 + (size_t)rank;
    st.loader_state = mallocCheck(st.loader_state_bytes);
    for (size_t i = 0; i < st.loader_state_bytes; i++) ((uint8_t *)st.loader_state)[i] = loader_byte(step, rank, i);
    return st;
}

/* Saves a complete checkpoint of `world` ranks as a data-parallel run does. ranges: offset/count pairs
 * per rank, or NULL for checkpoint_shard_range. master: 0 none, 1 every rank, 2 every rank but rank 1. */
static void save_sharded(const char *dir, const ModelConfig *c, const float *p, long long step, int world,
                         const size_t *ranges, int master, uint64_t run_id) {
    ParamLayout layout;
    param_layout_init(&layout, c);
    TrainSettings s = make_settings();
    uint32_t crc = checkpoint_save_model(dir, step, c, p, 0);
    for (int r = 0; r < world; r++) {
        size_t offset, count;
        if (ranges) offset = ranges[2 * r], count = ranges[2 * r + 1];
        else checkpoint_shard_range(layout.total, world, r, &offset, &count);
        TrainState st = make_shard_state(step, r, world, offset, count, master == 1 || (master == 2 && r != 1), run_id);
        checkpoint_save_state(dir, c, &s, &st);
        train_state_free(&st);
    }
    checkpoint_mark_done(dir, step, run_id, world, crc);
}

/* Whether a loaded state is the range [offset, offset + count) of a checkpoint of `world` ranks at step;
 * says what differs in why. */
static int shard_is(const TrainState *st, long long step, int world, size_t offset, size_t count, int master,
                    uint64_t run_id, char *why, size_t whylen) {
    snprintf(why, whylen, "ok");
    if (st->step != step || st->run_id != run_id || st->world_size != world || st->rank != 0 ||
        st->shard_offset != offset || st->shard_count != count || st->rng_state != 0xfeedULL + (uint64_t)step * 31) {
        snprintf(why, whylen, "step/run/world/rank/range/rng wrong: %lld %d %d [%zu +%zu)", st->step, st->world_size,
                 st->rank, st->shard_offset, st->shard_count);
        return 0;
    }
    if ((st->master != NULL) != master) {
        snprintf(why, whylen, "master %s, expected %s", st->master ? "present" : "absent", master ? "present" : "absent");
        return 0;
    }
    for (size_t k = 0; k < count; k++) {
        float m = shard_value(0, step, offset + k), v = shard_value(1, step, offset + k), w = shard_value(2, step, offset + k);
        if (memcmp(&st->m[k], &m, 4) || memcmp(&st->v[k], &v, 4) || (master && memcmp(&st->master[k], &w, 4))) {
            snprintf(why, whylen, "parameter %zu differs", offset + k);
            return 0;
        }
    }
    int loader_ok = st->loader_state_bytes == 40;
    for (size_t i = 0; i < st->loader_state_bytes && loader_ok; i++)
        loader_ok = ((const uint8_t *)st->loader_state)[i] == loader_byte(step, 0, i);
    if (!loader_ok) snprintf(why, whylen, "loader state is not rank 0's (%zu bytes)", st->loader_state_bytes);
    return loader_ok;
}

/* Loads every shard of new_world ranks (or only the listed ranks) from dir and checks each. */
static void check_reshard(const char *label, const char *dir, const ModelConfig *c, const float *p, long long step,
                          int world, int new_world, const int *ranks, int nranks, int master, uint64_t run_id) {
    ParamLayout layout;
    param_layout_init(&layout, c);
    TrainSettings s = make_settings();
    int ok = 1;
    char why[1100] = "ok", err[1024], sizes[256] = "";
    for (int k = 0; k < (ranks ? nranks : new_world) && ok; k++) {
        int r = ranks ? ranks[k] : k;
        size_t offset, count;
        checkpoint_shard_range(layout.total, new_world, r, &offset, &count);
        if (strlen(sizes) < 200) snprintf(sizes + strlen(sizes), sizeof(sizes) - strlen(sizes), "%s%zu", k ? "+" : "", count);
        ModelConfig back;
        float *q;
        TrainState st;
        int stored_world = 0;
        if (checkpoint_try_load_shard(dir, step, c, &s, offset, count, &back, &q, &st, &stored_world, err, sizeof(err))) {
            snprintf(why, sizeof(why), "rank %d: %s", r, err);
            ok = 0;
            continue;
        }
        ok = shard_is(&st, step, world, offset, count, master, run_id, why, sizeof(why)) && stored_world == world &&
             memcmp(q, p, layout.total * sizeof(float)) == 0 && config_equal(&back, c);
        free(q);
        train_state_free(&st);
    }
    test_report(ok, "checkpoint_reshard", "%s: %d -> %d ranks (shards %s of %zu), master %s: %s", label, world, new_world,
                sizes, layout.total, master ? "present" : "absent", why);
}

static void test_shard_range(void) {
    int bad = 0, empties = 0;
    for (size_t n = 0; n <= 40; n++) {
        for (int world = 1; world <= 12; world++) {
            size_t covered = 0, most = n / (size_t)world + (n % (size_t)world != 0);
            for (int r = 0; r < world; r++) {
                size_t offset, count;
                checkpoint_shard_range(n, world, r, &offset, &count);
                if (count > 0 ? offset != covered || count > most : offset > n) bad++;
                if (count > 0 && count < most && covered + count != n) bad++; /* only the last may be short */
                empties += count == 0;
                covered += count;
            }
            if (covered != n) bad++;
        }
    }
    size_t offset, count;
    checkpoint_shard_range(3, 5, 4, &offset, &count);
    test_report(bad == 0 && offset == 3 && count == 0, "checkpoint_shard_range", "n 0..40 x W 1..12: %d ranges that do "
                "not tile [0, n) in rank order with ceil(n/W) each; %d empty shards (n < W and the like), rank 4 of 5 "
                "for n = 3 is [%zu, +%zu)", bad, empties, offset, count);
}

static void test_reshard(void) {
    ModelConfig c;
    make_config(&c, ODD_JSON);
    size_t n;
    float *p = make_params(&c, 21, &n);
    uint64_t run_id = 0x5eed;
    char w2[512], w3[512], w2_plain[512], w2_mixed[512], w54[512];
    snprintf(w2, sizeof(w2), "%s/reshard_w2", tmp_dir);
    snprintf(w3, sizeof(w3), "%s/reshard_w3", tmp_dir);
    snprintf(w2_plain, sizeof(w2_plain), "%s/reshard_w2_plain", tmp_dir);
    snprintf(w2_mixed, sizeof(w2_mixed), "%s/reshard_w2_mixed", tmp_dir);
    snprintf(w54, sizeof(w54), "%s/reshard_w54", tmp_dir);
    save_sharded(w2, &c, p, 30, 2, NULL, 1, run_id);
    save_sharded(w3, &c, p, 30, 3, NULL, 1, run_id);
    save_sharded(w2_plain, &c, p, 30, 2, NULL, 0, run_id);
    save_sharded(w2_mixed, &c, p, 30, 2, NULL, 2, run_id);
    /* 54 ranks of ceil(2329 / 54) = 44 leave the last one empty */
    save_sharded(w54, &c, p, 30, 54, NULL, 1, run_id);
    check_reshard("full range", w2, &c, p, 30, 2, 1, NULL, 0, 1, run_id);
    check_reshard("more ranks", w2, &c, p, 30, 2, 3, NULL, 0, 1, run_id);
    check_reshard("same ranks", w2, &c, p, 30, 2, 2, NULL, 0, 1, run_id);
    check_reshard("fewer ranks", w3, &c, p, 30, 3, 2, NULL, 0, 1, run_id);
    check_reshard("no master", w2_plain, &c, p, 30, 2, 3, NULL, 0, 0, run_id);
    check_reshard("master on rank 0 only", w2_mixed, &c, p, 30, 2, 1, NULL, 0, 0, run_id);
    check_reshard("empty stored shard", w54, &c, p, 30, 54, 1, NULL, 0, 1, run_id);
    check_reshard("empty stored shard", w54, &c, p, 30, 54, 5, NULL, 0, 1, run_id);
    int tail[] = {0, (int)n - 1, (int)n, (int)n + 2};
    check_reshard("n < W, empty wanted shards", w2, &c, p, 30, 2, (int)n + 3, tail, 4, 1, run_id);

    /* the same world size gives exactly what checkpoint_try_load gives */
    TrainSettings s = make_settings();
    int same = 1;
    char err[1024] = "";
    for (int r = 0; r < 2; r++) {
        ModelConfig back;
        float *q1, *q2;
        TrainState a, b;
        int sa = checkpoint_try_load(w2, 30, &c, &s, 2, r, &back, &q1, &a, err, sizeof(err));
        int sb = checkpoint_try_load_shard(w2, 30, &c, &s, a.shard_offset, a.shard_count, &back, &q2, &b, NULL, err,
                                           sizeof(err));
        size_t bytes = a.shard_count * sizeof(float);
        same = same && sa == 0 && sb == 0 && b.shard_offset == a.shard_offset && b.shard_count == a.shard_count &&
               !memcmp(a.m, b.m, bytes) && !memcmp(a.v, b.v, bytes) && !memcmp(a.master, b.master, bytes) &&
               !memcmp(q1, q2, n * sizeof(float));
        if (sa == 0) { free(q1); train_state_free(&a); }
        if (sb == 0) { free(q2); train_state_free(&b); }
    }
    test_report(same, "checkpoint_reshard_same_world", "2 -> 2 ranks: moments, master and params bit-exact with "
                "checkpoint_try_load %s", err);
    free(p);
}

/* Runs checkpoint_try_load_shard for the full range and checks the refusal names `file` and says `expect`. */
static void expect_shard_refusal(const char *what, const char *dir, const ModelConfig *c, size_t want_offset,
                                 size_t want_count, const char *file, const char *expect) {
    TrainSettings s = make_settings();
    ModelConfig back;
    float *q;
    TrainState st;
    char err[2048] = "";
    int status = checkpoint_try_load_shard(dir, 30, c, &s, want_offset, want_count, &back, &q, &st, NULL, err,
                                           sizeof(err));
    if (status == 0) { free(q); train_state_free(&st); }
    test_report(status != 0 && strstr(err, file) && strstr(err, expect), "checkpoint_reshard_refuses", "%s: %s", what,
                status ? err : "accepted");
}

static void test_reshard_refusals(void) {
    ModelConfig c;
    make_config(&c, ODD_JSON);
    size_t n;
    float *p = make_params(&c, 22, &n);
    char dir[512], other[512], file[700], name[64];
    snprintf(name, sizeof(name), "state_%08d_%05d.bin", 30, 1);

    snprintf(dir, sizeof(dir), "%s/refuse_missing", tmp_dir);
    save_sharded(dir, &c, p, 30, 2, NULL, 1, 7);
    snprintf(file, sizeof(file), "%s/%s", dir, name);
    unlink(file);
    expect_shard_refusal("missing state file of rank 1", dir, &c, 0, n, file, "cannot open");

    snprintf(dir, sizeof(dir), "%s/refuse_run", tmp_dir);
    snprintf(other, sizeof(other), "%s/refuse_run_other", tmp_dir);
    save_sharded(dir, &c, p, 30, 2, NULL, 1, 7);
    save_sharded(other, &c, p, 30, 2, NULL, 1, 8);
    char other_file[700];
    snprintf(file, sizeof(file), "%s/%s", dir, name);
    snprintf(other_file, sizeof(other_file), "%s/%s", other, name);
    size_t len;
    uint8_t *bytes = slurp(other_file, &len);
    spit(file, bytes, len);
    expect_shard_refusal("state file of another run", dir, &c, 0, 1, file, "another run");

    /* a flipped bit in rank 1's master weights: refused by a load that reads that file, not by one that does not */
    snprintf(dir, sizeof(dir), "%s/refuse_crc", tmp_dir);
    save_sharded(dir, &c, p, 30, 2, NULL, 1, 7);
    snprintf(file, sizeof(file), "%s/%s", dir, name);
    free(bytes);
    bytes = slurp(file, &len);
    bytes[len - 100] ^= 4;
    spit(file, bytes, len);
    expect_shard_refusal("corrupt master weights of rank 1", dir, &c, 0, n, file, "checksum mismatch");
    TrainSettings s = make_settings();
    ModelConfig back;
    float *q;
    TrainState st;
    char err[1024] = "";
    int status = checkpoint_try_load_shard(dir, 30, &c, &s, 0, 100, &back, &q, &st, NULL, err, sizeof(err));
    if (status == 0) { free(q); train_state_free(&st); }
    test_report(status == 0, "checkpoint_reshard_reads_only_overlap", "a range inside rank 0's shard loads although "
                "rank 1's file is corrupt (that file is not read): %s", status ? err : "ok");

    /* shards that do not tile [0, n): overlapping, with a gap, ending short */
    size_t half = n / 2;
    size_t overlap[] = {0, half + 1, half, n - half}, gap[] = {0, half, half + 1, n - half - 1},
           short_end[] = {0, half, half, n - half - 1};
    const size_t *layouts[] = {overlap, gap, short_end};
    const char *labels[] = {"overlapping shards", "shards with a gap", "shards ending short"};
    const char *expect[] = {"overlaps", "gap", "do not tile"};
    for (int k = 0; k < 3; k++) {
        snprintf(dir, sizeof(dir), "%s/refuse_tiling_%d", tmp_dir, k);
        save_sharded(dir, &c, p, 30, 2, layouts[k], 1, 7);
        snprintf(file, sizeof(file), "%s/%s", dir, name);
        expect_shard_refusal(labels[k], dir, &c, 0, n, file, expect[k]);
    }
    expect_shard_refusal("wanted range past the parameters", dir, &c, n - 1, 2, "parameters", "outside");
    free(bytes);
    free(p);
}

/* Saving step 40 with 2 ranks over an unfinished attempt with 3 removes the third rank's file; a
 * checkpoint written by 2 ranks counts, prunes and loads the same as any other. */
static void test_sharded_save(void) {
    ModelConfig c;
    make_config(&c, ODD_JSON);
    size_t n;
    float *p = make_params(&c, 23, &n);
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/sharded_save", tmp_dir);
    TrainSettings s = make_settings();
    for (int r = 0; r < 3; r++) {
        size_t offset, count;
        checkpoint_shard_range(n, 3, r, &offset, &count);
        TrainState st = make_shard_state(40, r, 3, offset, count, 1, 9);
        checkpoint_save_state(dir, &c, &s, &st); /* crashed before its marker */
        train_state_free(&st);
    }
    save_sharded(dir, &c, p, 20, 2, NULL, 1, 9);
    save_sharded(dir, &c, p, 30, 2, NULL, 1, 9);
    save_sharded(dir, &c, p, 40, 2, NULL, 1, 9);
    checkpoint_prune(dir, 1, 0);
    int stale_gone = !file_exists(dir, "state_%08lld_00002.bin", 40) && file_exists(dir, "state_%08lld_00001.bin", 40);
    int pruned = !file_exists(dir, "state_%08lld_00000.bin", 30) && !file_exists(dir, "state_%08lld_00001.bin", 20) &&
                 !file_exists(dir, "model_%08lld.bin", 30) && count_files(dir) == 4;
    long long latest = checkpoint_latest_step(dir);
    test_report(stale_gone && pruned && latest == 40, "checkpoint_sharded_save", "the 3rd rank's state of an "
                "unfinished attempt removed by the marker %s; -nk 1 leaves %d files (model, 2 states, marker); "
                "latest %lld", stale_gone ? "yes" : "NO", count_files(dir), latest);
    check_reshard("after prune", dir, &c, p, 40, 2, 1, NULL, 0, 1, 9);
    free(p);
}

/* ---- crash safety: SIGKILL a process that keeps saving checkpoints ---- */

static const char *CRASH_JSON = "{\"d_model\":64,\"n_layer\":2,\"vocab_size\":8000,\"pad_vocab_multiple\":16,"
                                "\"d_state\":16,\"d_conv\":4,\"expand\":2,\"headdim\":16,\"ngroups\":1,\"chunk_size\":16}";

/* Parameters of step s: the base parameters with the first entries set to s. */
static void params_at_step(float *p, const float *base, size_t n, long long step) {
    memcpy(p, base, n * sizeof(float));
    for (int i = 0; i < 16; i++) p[i] = (float)step;
    p[n - 1] = (float)-step;
}

static void test_crash_safety(void) {
    ModelConfig c;
    make_config(&c, CRASH_JSON);
    TrainSettings s = make_settings();
    size_t n;
    float *base = make_params(&c, 6, &n);
    float *p = (float *)mallocCheck(n * sizeof(float));
    int trials = 24, failures = 0, resumed_from_zero = 0, killed_mid_write = 0;
    long long min_latest = -1, max_latest = 0;
    uint64_t rng = rng_seed(77);
    char msg[1200] = "";
    for (int trial = 0; trial < trials; trial++) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/crash_%02d", tmp_dir, trial);
        pid_t pid = fork();
        if (pid == 0) {
            for (long long step = 1;; step++) {
                params_at_step(p, base, n, step);
                TrainState st = make_state(&c, step, 0, 1, trial % 2, 1000 + trial);
                checkpoint_save(dir, &c, p, trial % 3 == 0, &s, &st, 2, 0);
                train_state_free(&st);
            }
        }
        /* wait for the first complete checkpoint, then kill at a random moment of the later saves */
        for (int wait = 0; wait < 2000 && checkpoint_latest_step(dir) < 1; wait++) usleep(5000);
        usleep((useconds_t)(rng_next(&rng) % 60000));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        DIR *d = opendir(dir);
        struct dirent *e;
        int tmp_left = 0;
        while (d && (e = readdir(d)) != NULL) tmp_left |= strstr(e->d_name, ".tmp") != NULL;
        if (d) closedir(d);
        killed_mid_write += tmp_left;
        long long latest = checkpoint_latest_step(dir);
        if (latest < 1) {
            resumed_from_zero++;
            continue;
        }
        ModelConfig back;
        float *q;
        TrainState st;
        char err[1024];
        int status = checkpoint_try_load(dir, latest, &c, &s, 1, 0, &back, &q, &st, err, sizeof(err));
        int good = status == 0;
        if (good) {
            params_at_step(p, base, n, latest);
            TrainState want = make_state(&c, latest, 0, 1, trial % 2, 1000 + trial);
            for (size_t i = 0; i < n && good; i++)
                good = q[i] == (trial % 3 == 0 ? bf16_to_float(float_to_bf16(p[i])) : p[i]);
            good = good && states_equal(&st, &want);
            train_state_free(&want);
            free(q);
            train_state_free(&st);
        } else if (!msg[0]) {
            snprintf(msg, sizeof(msg), "trial %d: %s", trial, err);
        }
        if (!good) failures++;
        if (min_latest < 0 || latest < min_latest) min_latest = latest;
        if (latest > max_latest) max_latest = latest;
    }
    test_report(failures == 0 && resumed_from_zero == 0, "crash_safety_sigkill",
                "%d SIGKILLs 0-60 ms after the first checkpoint: the newest complete one (steps %lld..%lld) loaded "
                "exactly in %d, failed in %d, none found in %d; %d kills left a half-written .tmp %s", trials,
                min_latest, max_latest, trials - failures - resumed_from_zero, failures, resumed_from_zero,
                killed_mid_write, msg);
    free(base);
    free(p);
}

/* test_checkpoint --rewrite IN OUT fp32|bf16: read a model file with the C reader and write it back
 * with the C writer (tests/test_checkpoint_hf.py checks the C and python sides against each other). */
static int rewrite_model_file(const char *in, const char *out, const char *dtype) {
    ModelConfig c;
    float *p;
    model_file_read(in, &c, &p);
    model_file_write(out, &c, p, !strcmp(dtype, "bf16"));
    free(p);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "--rewrite")) return rewrite_model_file(argv[2], argv[3], argv[4]);
    /* tmpfs when there is one: fsync is then free, and a SIGKILL tests the same thing on any file system */
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/ssd_test_checkpoint_XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (mkdtemp(tmp_dir) == NULL) {
        printf("FAIL setup: cannot create a temporary directory\n");
        return 1;
    }
    test_crc32();
    test_bf16();
    test_model_roundtrip(SCALAR_JSON, "scalar");
    test_model_roundtrip(DIAGONAL_JSON, "diagonal");
    test_model_fuzz();
    test_state_roundtrip();
    test_retention();
    test_load_checks();
    test_shard_range();
    test_reshard();
    test_reshard_refusals();
    test_sharded_save();
    test_crash_safety();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmp_dir);
    return test_exit_code();
}
