/*
 * Tests of the shard loader and the tokenizer file reader (data/), on shards this program writes itself
 * (raw v1/v2 and zstd, compressed here with libzstd):
 *   - unshuffled batches follow llm.c's layout exactly (checked against the token array);
 *   - raw v1, raw v2, zstd v1 and zstd v2 shards give identical batches, shuffled or not, across blocks,
 *     shards and epochs;
 *   - ranks partition the rows: no overlap, no gap, the same number of batches on every rank;
 *   - the rows of each optimizer step depend only on the rows per step S = world x B x micro-batches, shuffled
 *     or not: W=2, W=4 with B/2, W=1 with two micro-batches and W=1 with 2B rows read the same steps, and a
 *     state saved by one of these splits resumes in another;
 *   - stream order (-cs 1): over 2 ranks x 2 micro-batches and several blocks each stream's row continues its
 *     previous step's row except at a block's first step (marked stream_start), and an epoch reads file order's rows;
 *   - the shuffled order is reproducible from the seed and changes with the seed and the epoch;
 *   - get_state/set_state resume exactly, reset restarts;
 *   - every kind of bad input, and a state of another configuration, exits non-zero with a message naming
 *     the file (run in a child process); a directory, a named pipe or a device matched by the glob is refused
 *     without blocking;
 *   - loss masks: targets are the tokens, -1 where the side file says 0, for raw and zstd shards, shuffled or not,
 *     over several ranks, blocks and shards; .mask files matched by the glob are not shards; a mask with another
 *     token count, a wrong magic, a wrong size or a byte other than 0/1, and a split where one shard lacks its
 *     mask are refused naming the files;
 *   - start-up reads only headers: 1,000 shards of 200 GB in all (sparse files) start in under 2 s, and a bad
 *     token is reported when it is read, with the shard and its position.
 *
 * It is also the small driver the Python tests and the benchmark use:
 *   test_data_loader dump PATTERN B T RANK WORLD SHUFFLE SEED VOCAB NBATCHES  -> int32 inputs+targets on stdout
 *   test_data_loader decode PATTERN TOKENIZER_BIN T VOCAB  -> the bytes of one unshuffled pass (B=1)
 *   test_data_loader bench PATTERN B T VOCAB BLOCK_TOKENS SECONDS  -> loader throughput in tokens/s
 */
#include "data/dataloader.h"
#include "data/tokenizer.h"
#include "common/rng.h"
#include "common/utils.h"
#include "tests/test.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

static char test_dir[256];

/* ---------------------------------------------------------------------------------------------- */
/* writing test shards */

/* header + tokens in the shard layout; ntok_header is what the header declares */
static unsigned char *shard_bytes(const uint32_t *tokens, size_t n, int version, int32_t ntok_header, size_t *len) {
    size_t tb = version == 1 ? 2 : 4;
    *len = SHARD_HEADER_INTS * sizeof(int32_t) + n * tb;
    unsigned char *buf = (unsigned char *)calloc(1, *len);
    int32_t header[SHARD_HEADER_INTS] = {SHARD_MAGIC, version, ntok_header};
    memcpy(buf, header, sizeof(header));
    for (size_t i = 0; i < n; i++) {
        unsigned char *dst = buf + sizeof(header) + i * tb;
        if (version == 1) { uint16_t t = (uint16_t)tokens[i]; memcpy(dst, &t, 2); }
        else memcpy(dst, &tokens[i], 4);
    }
    return buf;
}

static unsigned char *zstd_compress(const unsigned char *src, size_t len, size_t *out_len) {
    size_t cap = ZSTD_compressBound(len);
    unsigned char *dst = (unsigned char *)malloc(cap);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    *out_len = ZSTD_compress2(cctx, dst, cap, src, len);
    if (ZSTD_isError(*out_len)) { fprintf(stderr, "zstd: %s\n", ZSTD_getErrorName(*out_len)); exit(1); }
    ZSTD_freeCCtx(cctx);
    return dst;
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (fp == NULL || fwrite(data, 1, len, fp) != len || fclose(fp) != 0) { perror(path); exit(1); }
}

static const char *test_path(const char *name) {
    static char paths[8][512];
    static int next = 0;
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/%s", test_dir, name);
    return p;
}

/* writes the shard raw (name.bin) or compressed (name.bin.zst) */
static void write_shard(const char *name, const uint32_t *tokens, size_t n, int version, int zst) {
    size_t len;
    unsigned char *bytes = shard_bytes(tokens, n, version, (int32_t)n, &len);
    if (zst) {
        size_t clen;
        unsigned char *c = zstd_compress(bytes, len, &clen);
        write_file(test_path(name), c, clen);
        free(c);
    } else {
        write_file(test_path(name), bytes, len);
    }
    free(bytes);
}

/* non-zero tokens below `vocab`, different at every position */
static uint32_t *make_tokens(size_t n, uint32_t vocab, uint64_t seed) {
    uint32_t *t = (uint32_t *)malloc(n * sizeof(uint32_t));
    uint64_t rng = rng_seed(seed);
    for (size_t i = 0; i < n; i++) t[i] = 1 + (uint32_t)(rng_next(&rng) % (vocab - 1));
    return t;
}

static void remove_test_dir(void) {
    DIR *dir = opendir(test_dir);
    if (dir == NULL) return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && unlink(test_path(e->d_name)) != 0)
            rmdir(test_path(e->d_name));
    }
    closedir(dir);
    rmdir(test_dir);
}

/* ---------------------------------------------------------------------------------------------- */

/* the next n batches, inputs then targets of each */
static int *collect(DataLoader *loader, size_t n) {
    size_t bt = loader->B * loader->T;
    int *out = (int *)malloc(n * 2 * bt * sizeof(int));
    for (size_t i = 0; i < n; i++) {
        dataloader_next_batch(loader);
        memcpy(out + 2 * i * bt, loader->inputs, bt * sizeof(int));
        memcpy(out + (2 * i + 1) * bt, loader->targets, bt * sizeof(int));
    }
    return out;
}

static void test_layout(void) {
    const size_t N = 10007, B = 3, T = 16;
    uint32_t *tok = make_tokens(N, 50257, 1);
    write_shard("layout_000.bin", tok, N, 1, 0);
    DataLoader loader;
    /* blocks of 5 batches, so the pass crosses block boundaries */
    dataloader_init_blocks(&loader, test_path("layout_*.bin"), B, T, 0, 1, 0, 0, 50257, 5 * B * T);
    size_t nb = dataloader_num_batches(&loader);
    int ok = nb == ((N - 1) / T) / B;
    size_t bad = 0;
    for (size_t b = 0; b < nb; b++) {
        dataloader_next_batch(&loader);
        for (size_t j = 0; j < B * T; j++) {
            if (loader.inputs[j] != (int)tok[b * B * T + j] || loader.targets[j] != (int)tok[b * B * T + j + 1]) bad++;
        }
    }
    dataloader_next_batch(&loader);
    int wraps = 1;
    for (size_t j = 0; j < B * T; j++) wraps &= loader.inputs[j] == (int)tok[j] && loader.targets[j] == (int)tok[j + 1];
    test_report(ok && bad == 0, "loader_layout", "%zu batches of B=%zu T=%zu = contiguous spans of B*T+1 tokens; %zu mismatches",
                nb, B, T, bad);
    test_report(wraps, "loader_epoch_wrap", "batch %zu (next epoch) equals batch 0", nb);
    dataloader_reset(&loader);
    dataloader_next_batch(&loader);
    int reset_ok = loader.inputs[0] == (int)tok[0] && loader.targets[B * T - 1] == (int)tok[B * T];
    test_report(reset_ok, "loader_reset", "after reset the first batch is tokens [0, B*T]");
    dataloader_free(&loader);
    free(tok);
}

/* three shards of different lengths, written as v1/v2 raw/zstd */
static const size_t multi_len[3] = {6001, 150001, 4321}; /* the long one spans several zstd input buffers */

static void write_multi(const char *kind, int version, int zst, uint32_t vocab) {
    for (int s = 0; s < 3; s++) {
        uint32_t *tok = make_tokens(multi_len[s], vocab, 100 + s);
        char name[64];
        snprintf(name, sizeof(name), "multi%s_%03d.bin%s", kind, s, zst ? ".zst" : "");
        write_shard(name, tok, multi_len[s], version, zst);
        free(tok);
    }
}

static void test_raw_vs_zstd(void) {
    const uint32_t vocab = 50257;
    write_multi("v1raw", 1, 0, vocab);
    write_multi("v1zst", 1, 1, vocab);
    write_multi("v2raw", 2, 0, vocab);
    write_multi("v2zst", 2, 1, vocab);
    const char *patterns[4] = {"multiv1raw_*.bin", "multiv1zst_*.bin.zst", "multiv2raw_*.bin", "multiv2zst_*.bin.zst"};
    const size_t B = 2, T = 32;
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        int *ref = NULL;
        size_t n = 0, diff = 0;
        for (int p = 0; p < 4; p++) {
            DataLoader loader;
            dataloader_init_blocks(&loader, test_path(patterns[p]), B, T, 1, 2, shuffle, 42, (int)vocab, 7 * 2 * B * T);
            if (p == 0) n = dataloader_num_batches(&loader) * 5 / 2;
            int *got = collect(&loader, n);
            if (p == 0) ref = got;
            else {
                for (size_t i = 0; i < n * 2 * B * T; i++) diff += got[i] != ref[i];
                free(got);
            }
            dataloader_free(&loader);
        }
        test_report(diff == 0 && n > 0, shuffle ? "loader_raw_vs_zstd_shuffled" : "loader_raw_vs_zstd",
                    "v1/v2 x raw/zstd give identical batches over %zu batches (2.5 epochs, rank 1 of 2): %zu differ", n, diff);
        free(ref);
    }
}

/* shards whose tokens are their global positions, so a row's first token says where it came from */
static void test_partition(void) {
    const size_t lens[3] = {5003, 7777, 3049}; /* 625, 972, 381 rows: tails of 1, 0, 3 rows after 6-row steps, 1, 0, 9 after 12 */
    size_t total = 0;
    for (int s = 0; s < 3; s++) {
        uint32_t *tok = (uint32_t *)malloc(lens[s] * sizeof(uint32_t));
        for (size_t i = 0; i < lens[s]; i++) tok[i] = (uint32_t)(total + i);
        char name[64];
        snprintf(name, sizeof(name), "part_%03d.bin%s", s, s == 1 ? ".zst" : "");
        write_shard(name, tok, lens[s], 2, s == 1);
        free(tok);
        total += lens[s];
    }
    const size_t B = 2, T = 8;
    const int world = 3;
    for (int test = 0; test < 4; test++) {
        int shuffle = test % 2, micro = 1 + test / 2;
        size_t S = world * B * micro;
        unsigned char *seen = (unsigned char *)calloc(total, 1);
        size_t rows = 0, dup = 0, broken = 0, non_contiguous = 0, per_rank_batches[3];
        for (int rank = 0; rank < world; rank++) {
            DataLoader loader;
            dataloader_init_steps_blocks(&loader, test_path("part_*"), B, T, rank, world, micro, shuffle, 9, (int)total,
                                         4 * world * B * T);
            per_rank_batches[rank] = dataloader_num_batches(&loader);
            for (size_t b = 0; b < per_rank_batches[rank]; b++) {
                dataloader_next_batch(&loader);
                for (size_t r = 0; r < B; r++) {
                    const int *in = loader.inputs + r * T, *tg = loader.targets + r * T;
                    for (size_t t = 0; t < T; t++) broken += tg[t] != in[t] + 1 || (t > 0 && in[t] != in[t - 1] + 1);
                    if (seen[in[0]]) dup++;
                    seen[in[0]] = 1;
                    rows++;
                    if (!shuffle && r > 0 && in[0] != loader.inputs[(r - 1) * T] + (int)T) non_contiguous++;
                }
            }
            dataloader_free(&loader);
        }
        /* expected rows: in each shard, floor(rows / S) * S rows of T+1 tokens at multiples of T */
        size_t expected = 0, misplaced = 0, gaps = 0, offset = 0;
        for (int s = 0; s < 3; s++) {
            size_t shard_rows = (lens[s] - 1) / T, used = shard_rows / S * S, used_here = 0;
            expected += used;
            for (size_t i = 0; i < lens[s]; i++) {
                if (!seen[offset + i]) continue;
                used_here++;
                if (i % T != 0 || i / T >= shard_rows) misplaced++;
                if (!shuffle && i / T >= used) misplaced++;
            }
            if (used_here != used) gaps++;
            offset += lens[s];
        }
        int same = per_rank_batches[0] == per_rank_batches[1] && per_rank_batches[1] == per_rank_batches[2];
        static const char *const names[4] = {"loader_rank_partition", "loader_rank_partition_shuffled",
                                             "loader_rank_partition_accum2", "loader_rank_partition_accum2_shuffled"};
        test_report(same && rows == expected && dup == 0 && broken == 0 && misplaced == 0 && gaps == 0 && non_contiguous == 0,
                    names[test], "%d ranks x %zu batches (%d per step): %zu rows (expected %zu), %zu duplicated, %zu misplaced, %zu shards with a gap, "
                    "%zu broken windows",
                    world, per_rank_batches[0], micro, rows, expected, dup, misplaced, gaps, broken);
        free(seen);
    }
}

static int batches_equal(const int *a, const int *b, size_t n) { return memcmp(a, b, n * sizeof(int)) == 0; }

static void test_shuffle(void) {
    const size_t B = 4, T = 16;
    DataLoader a, b, c, plain;
    size_t block = 3 * B * T;
    dataloader_init_blocks(&a, test_path("multiv1zst_*"), B, T, 0, 1, 1, 1234, 50257, block);
    dataloader_init_blocks(&b, test_path("multiv1zst_*"), B, T, 0, 1, 1, 1234, 50257, block);
    dataloader_init_blocks(&c, test_path("multiv1zst_*"), B, T, 0, 1, 1, 1235, 50257, block);
    dataloader_init_blocks(&plain, test_path("multiv1zst_*"), B, T, 0, 1, 0, 0, 50257, block);
    size_t nb = dataloader_num_batches(&a), bt = 2 * B * T;
    int *ea = collect(&a, 2 * nb), *eb = collect(&b, 2 * nb), *ec = collect(&c, 2 * nb), *ep = collect(&plain, nb);
    int same_seed = batches_equal(ea, eb, 2 * nb * bt);
    int other_seed = !batches_equal(ea, ec, nb * bt);
    int other_epoch = !batches_equal(ea, ea + nb * bt, nb * bt);
    int unshuffled = !batches_equal(ea, ep, nb * bt);
    test_report(same_seed && other_seed && other_epoch && unshuffled, "loader_shuffle_seeded",
                "same seed -> same %zu batches; other seed differs: %d; epoch 1 differs from epoch 0: %d; differs from unshuffled: %d",
                2 * nb, other_seed, other_epoch, unshuffled);
    dataloader_free(&a); dataloader_free(&b); dataloader_free(&c); dataloader_free(&plain);
    free(ea); free(eb); free(ec); free(ep);
}

static void test_state(void) {
    const size_t B = 2, T = 16;
    const char *pattern = test_path("multiv2zst_*");
    DataLoader a, b;
    dataloader_init_blocks(&a, pattern, B, T, 1, 2, 1, 77, 50257, 5 * 2 * B * T);
    size_t nb = dataloader_num_batches(&a);
    int *skipped = collect(&a, nb - 3);
    free(skipped);
    size_t size = dataloader_state_size(&a);
    unsigned char *state = (unsigned char *)malloc(size);
    dataloader_get_state(&a, state);
    size_t n = 2 * nb;
    int *ref = collect(&a, n);
    /* a fresh loader, and the same loader moved back to an earlier position */
    dataloader_init_blocks(&b, pattern, B, T, 1, 2, 1, 77, 50257, 5 * 2 * B * T);
    dataloader_set_state(&b, state, size);
    int *got_b = collect(&b, n);
    dataloader_set_state(&a, state, size);
    int *got_a = collect(&a, n);
    size_t bt = 2 * B * T;
    test_report(batches_equal(ref, got_b, n * bt) && batches_equal(ref, got_a, n * bt), "loader_state_resume",
                "state (%zu bytes) saved 3 batches before an epoch end resumes the next %zu batches exactly, in a fresh "
                "loader and in the same loader moved back", size, n);
    dataloader_free(&a); dataloader_free(&b);
    free(ref); free(got_a); free(got_b); free(state);
}

/* ---------------------------------------------------------------------------------------------- */
/* splits of an optimizer step: world x B x micro-batches per step */

#define MAX_WORLD 4

/* the loaders of all ranks of one split, read an optimizer step at a time */
typedef struct {
    DataLoader ranks[MAX_WORLD];
    int world, micro;
} StepRun;

static void step_run_init(StepRun *run, size_t B, size_t T, int world, int micro, int shuffle) {
    run->world = world;
    run->micro = micro;
    /* 3.5 steps of tokens, rounded down to 3 steps; the old rounding to global batches of world x B rows gave
     * 3 steps for W=2 but 3.5 for W=1 with 2 micro-batches */
    size_t S = (size_t)world * B * (size_t)micro;
    for (int k = 0; k < world; k++)
        dataloader_init_steps_blocks(&run->ranks[k], test_path("split_*"), B, T, k, world, micro, shuffle, 31, 50257,
                                     7 * S * T / 2);
}

static size_t step_run_steps(const StepRun *run) { return dataloader_num_batches(&run->ranks[0]) / (size_t)run->micro; }

/* the rows of the next n steps: in each step its micro-batches in order, in each micro-batch the ranks in order,
 * and for each row its T inputs then its T targets */
static int *step_run_collect(StepRun *run, size_t n) {
    size_t B = run->ranks[0].B, T = run->ranks[0].T;
    int *out = (int *)malloc(n * run->ranks[0].step_rows * 2 * T * sizeof(int)), *dst = out;
    for (size_t s = 0; s < n; s++) {
        for (int m = 0; m < run->micro; m++) {
            for (int k = 0; k < run->world; k++) {
                DataLoader *l = &run->ranks[k];
                dataloader_next_batch(l);
                for (size_t b = 0; b < B; b++) {
                    memcpy(dst, l->inputs + b * T, T * sizeof(int));
                    memcpy(dst + T, l->targets + b * T, T * sizeof(int));
                    dst += 2 * T;
                }
            }
        }
    }
    return out;
}

static void step_run_set_state(StepRun *run, const void *state, size_t size) {
    for (int k = 0; k < run->world; k++) dataloader_set_state(&run->ranks[k], state, size);
}

static void step_run_free(StepRun *run) {
    for (int k = 0; k < run->world; k++) dataloader_free(&run->ranks[k]);
}

/* shards whose row counts leave tails of 0, 1 or 2 rows after steps of 4 or 6 rows (T=8), raw and zstd */
static void write_split_shards(void) {
    const size_t lens[3] = {1011, 2517, 779};
    for (int s = 0; s < 3; s++) {
        uint32_t *tok = make_tokens(lens[s], 50257, 300 + s);
        char name[64];
        snprintf(name, sizeof(name), "split_%03d.bin%s", s, s == 1 ? ".zst" : "");
        write_shard(name, tok, lens[s], 2, s == 1);
        free(tok);
    }
}

typedef struct { int world, micro; size_t B; } Split;

/* the splits of S = 2B rows per step: {W=2, B}, {W=1, B, 2 micro-batches}, {W=1, 2B} and, for even B,
 * {W=4, B/2} and {W=2, B/2, 2 micro-batches}; returns how many */
static int splits_of(size_t B, Split *out) {
    int n = 0;
    out[n++] = (Split){2, 1, B};
    out[n++] = (Split){1, 2, B};
    out[n++] = (Split){1, 1, 2 * B};
    if (B % 2 == 0) {
        out[n++] = (Split){4, 1, B / 2};
        out[n++] = (Split){2, 2, B / 2};
    }
    return n;
}

static void test_step_splits(void) {
    const size_t T = 8, Bs[2] = {2, 3};
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        for (int bi = 0; bi < 2; bi++) {
            size_t B = Bs[bi];
            Split splits[5];
            int num_splits = splits_of(B, splits);
            int *ref = NULL;
            size_t steps = 0, n = 0, bad_steps = 0, differ = 0;
            for (int i = 0; i < num_splits; i++) {
                StepRun run;
                step_run_init(&run, splits[i].B, T, splits[i].world, splits[i].micro, shuffle);
                if (i == 0) {
                    steps = step_run_steps(&run);
                    n = steps * 5 / 2;
                }
                bad_steps += step_run_steps(&run) != steps;
                int *got = step_run_collect(&run, n);
                if (i == 0) ref = got;
                else {
                    differ += !batches_equal(ref, got, n * 2 * B * 2 * T);
                    free(got);
                }
                step_run_free(&run);
            }
            char name[64];
            snprintf(name, sizeof(name), "loader_step_splits_B%zu%s", B, shuffle ? "_shuffled" : "");
            test_report(bad_steps == 0 && differ == 0 && n > 0, name,
                        "%d splits of %zu rows per step read the same %zu steps (2.5 epochs of %zu, blocks of 3 steps): "
                        "%zu with another epoch length, %zu with other rows", num_splits, 2 * B, n, steps, bad_steps,
                        differ);
            free(ref);
        }
    }
}

/* saves a state after k steps of split `from` (rank 0's), and checks the next n steps of `from` equal those of a
 * fresh loader of split `to` restored from it; also checks every rank of `from` gives the same state */
static int resume_across(const Split *from, const Split *to, size_t T, int shuffle, size_t k, size_t *n_out) {
    StepRun a, b;
    step_run_init(&a, from->B, T, from->world, from->micro, shuffle);
    size_t n = step_run_steps(&a) + 5;
    free(step_run_collect(&a, k));
    size_t size = dataloader_state_size(&a.ranks[0]);
    unsigned char *state = (unsigned char *)malloc(size), *other = (unsigned char *)malloc(size);
    dataloader_get_state(&a.ranks[0], state);
    int same_on_ranks = 1;
    for (int r = 1; r < a.world; r++) {
        dataloader_get_state(&a.ranks[r], other);
        same_on_ranks &= memcmp(state, other, size) == 0;
    }
    int *ref = step_run_collect(&a, n);
    step_run_init(&b, to->B, T, to->world, to->micro, shuffle);
    step_run_set_state(&b, state, size);
    int *got = step_run_collect(&b, n);
    int ok = same_on_ranks && batches_equal(ref, got, n * a.ranks[0].step_rows * 2 * T);
    step_run_free(&a); step_run_free(&b);
    free(ref); free(got); free(state); free(other);
    *n_out = n;
    return ok;
}

static void test_state_across_splits(void) {
    const size_t T = 8, B = 2;
    Split splits[5];
    splits_of(B, splits);
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        StepRun probe;
        step_run_init(&probe, B, T, 2, 1, shuffle);
        size_t steps = step_run_steps(&probe);
        step_run_free(&probe);
        size_t n;
        /* W=2 -> W=1 x 2 micro-batches 3 steps before the epoch end; and back from the middle of a shard */
        int forward = resume_across(&splits[0], &splits[1], T, shuffle, steps - 3, &n);
        int backward = resume_across(&splits[1], &splits[0], T, shuffle, steps / 2 + 1, &n);
        int to_w4 = resume_across(&splits[1], &splits[3], T, shuffle, 5, &n);
        test_report(forward && backward && to_w4, shuffle ? "loader_state_across_splits_shuffled" : "loader_state_across_splits",
                    "a state of W=2 x B=%zu restores into W=1 x 2 micro-batches: %d, back: %d, into W=4 x B=%zu: %d "
                    "(the next %zu steps, across an epoch end)", B, forward, backward, B / 2, to_w4, n);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* bad inputs: each case runs in a child process, which must exit non-zero with a message */

typedef struct {
    const char *pattern;
    size_t B, T;
    int rank, world, micro, vocab;
} LoaderCase;

static void run_loader_case(const LoaderCase *c) {
    DataLoader loader;
    dataloader_init_steps(&loader, c->pattern, c->B, c->T, c->rank, c->world, c->micro, 1, 1, c->vocab);
    for (size_t i = 0; i <= dataloader_num_batches(&loader); i++) dataloader_next_batch(&loader);
    dataloader_free(&loader);
}

/* a loader of rank 0 on good.bin (shuffled) */
typedef struct {
    size_t B, T;
    int world, micro;
    uint64_t seed;
} LoaderShape;

/* `saved` reads `batches` micro-batches and gives its state (`truncate` bytes short) to a fresh `restored` */
typedef struct {
    const char *pattern;
    LoaderShape saved, restored;
    size_t batches, truncate;
} StateCase;

static void shape_init(DataLoader *loader, const char *pattern, const LoaderShape *s) {
    dataloader_init_steps(loader, pattern, s->B, s->T, 0, s->world, s->micro, 1, s->seed, 50257);
}

static void state_case_fn(const void *arg) {
    const StateCase *c = (const StateCase *)arg;
    DataLoader saved, restored;
    shape_init(&saved, c->pattern, &c->saved);
    for (size_t i = 0; i < c->batches; i++) dataloader_next_batch(&saved);
    size_t size = dataloader_state_size(&saved);
    unsigned char *state = (unsigned char *)malloc(size);
    dataloader_get_state(&saved, state);
    shape_init(&restored, c->pattern, &c->restored);
    dataloader_set_state(&restored, state, size - c->truncate);
    dataloader_next_batch(&restored);
    free(state);
    dataloader_free(&saved);
    dataloader_free(&restored);
}

/* runs fn(arg) in a child; returns its exit status (-1 for a signal) and the first line of its stderr in msg */
static int run_child(void (*fn)(const void *), const void *arg, char *msg, size_t msglen) {
    int fds[2];
    if (pipe(fds) != 0) { perror("pipe"); exit(1); }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(1); }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        fn(arg);
        exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t got;
    while ((got = read(fds[0], msg + len, msglen - 1 - len)) > 0) len += (size_t)got;
    msg[len] = '\0';
    char *newline = strchr(msg, '\n');
    if (newline) *newline = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void loader_case_fn(const void *arg) { run_loader_case((const LoaderCase *)arg); }

static void expect_child_refused(const char *name, void (*fn)(const void *), const void *arg, const char *file,
                                 const char *keyword) {
    char msg[2048];
    int status = run_child(fn, arg, msg, sizeof(msg));
    int ok = status > 0 && strstr(msg, file) != NULL && strstr(msg, keyword) != NULL;
    test_report(ok, name, "exit %d, message: %s", status, msg);
}

static void expect_refused(const char *name, const LoaderCase *c, const char *file, const char *keyword) {
    expect_child_refused(name, loader_case_fn, c, file, keyword);
}

/* a version-1 state (13 words) with this loader's magic */
static void old_state_fn(const void *pattern) {
    DataLoader loader;
    dataloader_init(&loader, (const char *)pattern, 2, 16, 0, 1, 1, 1, 50257);
    uint64_t old[13] = {0};
    dataloader_get_state(&loader, old);
    old[1] = 1;
    dataloader_set_state(&loader, old, sizeof(old));
}

/* states of another configuration, or off this loader's micro-batch grid, are refused with what to keep equal */
static void test_state_refused(const char *pattern) {
    const LoaderShape base = {2, 16, 2, 1, 1};
    /* the control: the same S split as W=1 x 2 micro-batches is accepted */
    StateCase c = {pattern, base, {2, 16, 1, 2, 1}, 4, 0};
    char msg[2048];
    int status = run_child(state_case_fn, &c, msg, sizeof(msg));
    test_report(status == 0, "accept_state_other_split", "a W=2 state restores into W=1 x 2 micro-batches: exit %d %s",
                status, msg);
    c.restored = base;
    c.batches = 3;
    c.truncate = 8;
    expect_child_refused("refuse_state_wrong_size", state_case_fn, &c, "good.bin", "does not fit");
    expect_child_refused("refuse_state_old_version", old_state_fn, pattern, "good.bin",
                         "version is 1 in the state but 2 in this loader");
    c.truncate = 0;
    c.restored.world = 1;
    expect_child_refused("refuse_state_other_step_rows", state_case_fn, &c, "good.bin",
                         "rows per optimizer step is 4 in the state but 2 in this loader: keep world x B x grad accum "
                         "equal to resume");
    c.restored = base;
    c.restored.T = 8;
    expect_child_refused("refuse_state_other_T", state_case_fn, &c, "good.bin",
                         "T is 16 in the state but 8 in this loader: keep T equal");
    c.restored = base;
    c.restored.seed = 2;
    expect_child_refused("refuse_state_other_seed", state_case_fn, &c, "good.bin",
                         "seed is 1 in the state but 2 in this loader: keep the seed");
    /* W=1 x B=2 x 2 micro-batches, after one micro-batch (row 2), into W=1 x B=4: same S, off the 4-row grid */
    c.saved = (LoaderShape){2, 16, 1, 2, 1};
    c.restored = (LoaderShape){4, 16, 1, 1, 1};
    c.batches = 1;
    expect_child_refused("refuse_state_off_grid", state_case_fn, &c, "good.bin",
                         "row 2 is not a multiple of this loader's world x B = 4 rows");
}

static void test_bad_inputs(void) {
    const size_t N = 3000;
    uint32_t *tok = make_tokens(N, 50257, 5);
    size_t len, clen;
    unsigned char *good = shard_bytes(tok, N, 1, (int32_t)N, &len);
    unsigned char *comp = zstd_compress(good, len, &clen);
    LoaderCase c = {NULL, 2, 16, 0, 1, 1, 50257};
    const char *path;

    unsigned char *bad = (unsigned char *)malloc(len + 64);
    memcpy(bad, good, len);
    ((int32_t *)bad)[0] = 20240519;
    write_file(path = test_path("bad_magic.bin"), bad, len);
    c.pattern = path;
    expect_refused("refuse_wrong_magic", &c, "bad_magic.bin", "magic");

    memcpy(bad, good, len);
    ((int32_t *)bad)[1] = 3;
    write_file(path = test_path("bad_version.bin"), bad, len);
    c.pattern = path;
    expect_refused("refuse_wrong_version", &c, "bad_version.bin", "version");

    write_file(path = test_path("short_header.bin"), good, 600);
    c.pattern = path;
    expect_refused("refuse_truncated_header", &c, "short_header.bin", "truncated");

    write_file(path = test_path("truncated.bin"), good, len - 100);
    c.pattern = path;
    expect_refused("refuse_truncated_raw", &c, "truncated.bin", "does not match the header");

    memcpy(bad, good, len);
    memset(bad + len, 7, 64);
    write_file(path = test_path("too_long.bin"), bad, len + 64);
    c.pattern = path;
    expect_refused("refuse_size_mismatch_raw", &c, "too_long.bin", "does not match the header");

    unsigned char *cbad = (unsigned char *)malloc(clen);
    memcpy(cbad, comp, clen);
    for (size_t i = clen / 2; i < clen / 2 + 16; i++) cbad[i] ^= 0x5A;
    write_file(path = test_path("corrupt.bin.zst"), cbad, clen);
    c.pattern = path;
    /* found by the zstd decoder or by the token check of what it decoded, whichever comes first */
    expect_refused("refuse_corrupt_zstd", &c, "corrupt.bin.zst", "corrupt");

    write_file(path = test_path("cut.bin.zst"), comp, clen - 40);
    c.pattern = path;
    expect_refused("refuse_truncated_zstd", &c, "cut.bin.zst", "truncated");

    write_file(path = test_path("not_zstd.bin.zst"), good, len);
    c.pattern = path;
    expect_refused("refuse_not_zstd", &c, "not_zstd.bin.zst", "corrupt zstd");

    size_t mlen, mclen;
    unsigned char *more = shard_bytes(tok, N, 1, (int32_t)N + 10, &mlen);
    unsigned char *mcomp = zstd_compress(more, mlen, &mclen);
    write_file(path = test_path("zst_short.bin.zst"), mcomp, mclen);
    c.pattern = path;
    expect_refused("refuse_size_mismatch_zstd_short", &c, "zst_short.bin.zst", "does not match the header");
    free(more); free(mcomp);
    more = shard_bytes(tok, N, 1, (int32_t)N - 10, &mlen);
    mcomp = zstd_compress(more, mlen, &mclen);
    write_file(path = test_path("zst_long.bin.zst"), mcomp, mclen);
    c.pattern = path;
    expect_refused("refuse_size_mismatch_zstd_long", &c, "zst_long.bin.zst", "does not match the header");
    free(more); free(mcomp);

    /* a token >= vocab_size near the end, in raw v1, raw v2 and zstd */
    uint32_t *big = (uint32_t *)malloc(N * sizeof(uint32_t));
    memcpy(big, tok, N * sizeof(uint32_t));
    big[N - 5] = 50257;
    write_shard("vocab_v1.bin", big, N, 1, 0);
    c.pattern = test_path("vocab_v1.bin");
    expect_refused("refuse_token_out_of_range_v1", &c, "vocab_v1.bin", "out of range");
    big[N - 5] = 70000;
    write_shard("vocab_v2.bin.zst", big, N, 2, 1);
    c.pattern = test_path("vocab_v2.bin.zst");
    c.vocab = 65536;
    expect_refused("refuse_token_out_of_range_zstd_v2", &c, "vocab_v2.bin.zst", "out of range");
    c.vocab = 50257;
    free(big);

    c.pattern = test_path("no_such_shard_*.bin");
    expect_refused("refuse_empty_glob", &c, "no_such_shard_", "no shard files");

    write_shard("short_shard.bin", tok, 2 * 16, 1, 0);
    c.pattern = test_path("short_shard.bin");
    expect_refused("refuse_shard_too_short", &c, "short_shard.bin", "too short");
    write_shard("good.bin", tok, N, 1, 0);
    c.pattern = test_path("good.bin");
    c.B = 50;
    c.world = 4;
    c.rank = 3;
    expect_refused("refuse_shard_too_short_for_ranks", &c, "good.bin", "too short");
    c.world = 1;
    c.rank = 0;
    c.micro = 4;
    expect_refused("refuse_shard_too_short_for_step", &c, "good.bin", "too short for an optimizer step");
    c.micro = 1;
    c.world = 4;
    c.rank = 4;
    expect_refused("refuse_rank_out_of_range", &c, "good.bin", "rank 4");
    c.B = 0;
    c.rank = 0;
    c.world = 1;
    expect_refused("refuse_zero_batch", &c, "good.bin", "B=0");
    test_state_refused(test_path("good.bin"));

    free(bad); free(cbad); free(good); free(comp); free(tok);
}

/* a directory, a named pipe or a device is refused by name before it is opened (opening a pipe would block;
 * the child's alarm turns a block into a failure instead of a hang) */
/* ---------------------------------------------------------------------------------------------- */
/* loss masks */

/* the mask side file of shard `name`: header [magic, version, ntok_header], then mask[n] */
static void write_mask(const char *name, const unsigned char *mask, size_t n, int32_t magic, int32_t ntok_header) {
    char mask_name[256];
    snprintf(mask_name, sizeof(mask_name), "%s.mask", name);
    size_t len = SHARD_HEADER_INTS * sizeof(int32_t) + n;
    unsigned char *buf = (unsigned char *)calloc(1, len);
    int32_t header[SHARD_HEADER_INTS] = {magic, MASK_VERSION, ntok_header};
    memcpy(buf, header, sizeof(header));
    memcpy(buf + sizeof(header), mask, n);
    write_file(test_path(mask_name), buf, len);
    free(buf);
}

/* a mask that counts about two targets in three, seeded */
static unsigned char *make_mask(size_t n, uint64_t seed) {
    unsigned char *m = (unsigned char *)malloc(n);
    uint64_t rng = rng_seed(seed);
    for (size_t i = 0; i < n; i++) m[i] = rng_next(&rng) % 3 != 0;
    return m;
}

/* Masked shards give the same inputs and targets as the same shards without masks, except for -1 targets (about
 * a third); mask_exact_positions checks which targets those are. */
static void test_masks(void) {
    static const size_t lens[2] = {5001, 7321};
    const size_t B = 2, T = 16;
    uint32_t *tok[2];
    unsigned char *mask[2];
    char name[64];
    for (int zst = 0; zst < 2; zst++) {
        for (int i = 0; i < 2; i++) {
            tok[i] = make_tokens(lens[i], 50257, 40 + (uint64_t)i);
            mask[i] = make_mask(lens[i], 50 + (uint64_t)i);
            snprintf(name, sizeof(name), "masked%d_%d.bin%s", zst, i, zst ? ".zst" : "");
            write_shard(name, tok[i], lens[i], 2, zst);
            write_mask(name, mask[i], lens[i], MASK_MAGIC, (int32_t)lens[i]);
            snprintf(name, sizeof(name), "plain%d_%d.bin%s", zst, i, zst ? ".zst" : "");
            write_shard(name, tok[i], lens[i], 2, zst);
        }
        for (int shuffle = 0; shuffle < 2; shuffle++) {
            for (int world = 1; world <= 2; world++) {
                int ok = 1;
                size_t masked_seen = 0, total = 0;
                for (int rank = 0; rank < world; rank++) {
                    char masked_glob[512], plain_glob[512];
                    snprintf(masked_glob, sizeof(masked_glob), "%s/masked%d_*", test_dir, zst);
                    snprintf(plain_glob, sizeof(plain_glob), "%s/plain%d_*", test_dir, zst);
                    DataLoader m, p;
                    /* small blocks: several per shard; the masked glob also matches the .mask files */
                    dataloader_init_steps_blocks(&m, masked_glob, B, T, rank, world, 1, shuffle, 7, 50257, 1000);
                    dataloader_init_steps_blocks(&p, plain_glob, B, T, rank, world, 1, shuffle, 7, 50257, 1000);
                    ok &= m.has_masks && !p.has_masks && m.num_shards == 2;
                    size_t n = dataloader_num_batches(&m) + 3; /* into the next epoch */
                    for (size_t b = 0; b < n && ok; b++) {
                        dataloader_next_batch(&m);
                        dataloader_next_batch(&p);
                        ok &= memcmp(m.inputs, p.inputs, B * T * sizeof(int)) == 0;
                        for (size_t i = 0; i < B * T; i++) {
                            ok &= m.targets[i] == p.targets[i] || m.targets[i] == IGNORE_TARGET;
                            masked_seen += m.targets[i] == IGNORE_TARGET;
                            total++;
                        }
                    }
                    dataloader_free(&m);
                    dataloader_free(&p);
                }
                snprintf(name, sizeof(name), "mask_targets_%s_shuffle%d_world%d", zst ? "zstd" : "raw", shuffle, world);
                /* about a third of the targets are masked: between a quarter and 40% */
                ok &= masked_seen * 4 > total && masked_seen * 5 < total * 2;
                test_report(ok, name, "%zu of %zu targets masked", masked_seen, total);
            }
        }
        for (int i = 0; i < 2; i++) {
            free(tok[i]);
            free(mask[i]);
        }
    }
    /* exact positions: one unshuffled row, every target's mask byte */
    {
        const size_t N = 4 * 16 + 1;
        uint32_t *t = make_tokens(N, 50257, 60);
        unsigned char *mk = make_mask(N, 61);
        write_shard("exact.bin", t, N, 1, 0);
        write_mask("exact.bin", mk, N, MASK_MAGIC, (int32_t)N);
        DataLoader loader;
        dataloader_init(&loader, test_path("exact.bin"), 4, 16, 0, 1, 0, 1, 50257);
        dataloader_next_batch(&loader);
        int ok = 1;
        for (size_t i = 0; i < 4 * 16; i++) {
            int want = mk[i + 1] ? (int)t[i + 1] : IGNORE_TARGET;
            ok &= loader.targets[i] == want && loader.inputs[i] == (int)t[i];
        }
        test_report(ok, "mask_exact_positions", "target i is token i+1, or -1 where mask[i+1] is 0 (%zu counted)",
                    count_targets(loader.targets, 4 * 16));
        dataloader_free(&loader);
        free(t);
        free(mk);
    }
}

static void test_masks_refused(void) {
    const size_t N = 3000;
    uint32_t *tok = make_tokens(N, 50257, 70);
    unsigned char *mk = make_mask(N, 71);
    LoaderCase c = {NULL, 2, 16, 0, 1, 1, 50257};
    char pattern[512];

    write_shard("mcount.bin", tok, N, 1, 0);
    write_mask("mcount.bin", mk, N - 1, MASK_MAGIC, (int32_t)N - 1);
    c.pattern = test_path("mcount.bin");
    expect_refused("refuse_mask_count", &c, "mcount.bin.mask", "mcount.bin holds 3000");

    write_shard("mmagic.bin", tok, N, 1, 0);
    write_mask("mmagic.bin", mk, N, 12345, (int32_t)N);
    c.pattern = test_path("mmagic.bin");
    expect_refused("refuse_mask_magic", &c, "mmagic.bin.mask", "magic");

    write_shard("msize.bin", tok, N, 1, 0);
    write_mask("msize.bin", mk, N - 5, MASK_MAGIC, (int32_t)N);
    c.pattern = test_path("msize.bin");
    expect_refused("refuse_mask_size", &c, "msize.bin.mask", "size");

    mk[100] = 2;
    write_shard("mbyte.bin", tok, N, 1, 0);
    write_mask("mbyte.bin", mk, N, MASK_MAGIC, (int32_t)N);
    c.pattern = test_path("mbyte.bin");
    expect_refused("refuse_mask_byte", &c, "mbyte.bin.mask", "must be 0 or 1");
    mk[100] = 1;

    write_shard("mmix_a.bin", tok, N, 1, 0);
    write_mask("mmix_a.bin", mk, N, MASK_MAGIC, (int32_t)N);
    write_shard("mmix_b.bin.zst", tok, N, 1, 1);
    snprintf(pattern, sizeof(pattern), "%s/mmix_*.bin*", test_dir);
    c.pattern = pattern;
    expect_refused("refuse_mask_missing_for_one_shard", &c, "mmix_b.bin.zst", "mmix_a.bin has one");
    free(tok);
    free(mk);
}

static void special_file_fn(const void *arg) {
    alarm(10);
    loader_case_fn(arg);
}

static void test_special_files(void) {
    LoaderCase c = {NULL, 2, 16, 0, 1, 1, 50257};
    const char *path;
    char msg[2048];
    if (mkdir(path = test_path("dir_shard.bin"), 0700) != 0) { perror(path); exit(1); }
    c.pattern = path;
    expect_child_refused("refuse_directory_shard", special_file_fn, &c, "dir_shard.bin", "is a directory");
    if (mkfifo(path = test_path("fifo_shard.bin"), 0600) != 0) { perror(path); exit(1); }
    c.pattern = path;
    int status = run_child(special_file_fn, &c, msg, sizeof(msg));
    test_report(status > 0 && strstr(msg, "fifo_shard.bin") && strstr(msg, "is a named pipe"), "refuse_named_pipe_shard",
                "exit %d (-1: killed, e.g. blocked until the alarm), message: %s", status, msg);
    c.pattern = "/dev/nul[l]";
    expect_child_refused("refuse_device_shard", special_file_fn, &c, "/dev/null", "is a device");
}

/* start-up checks headers and sizes only: tokens are checked when read, with the shard and position named */
static void test_lazy_token_check(void) {
    const size_t N = 3000;
    uint32_t *tok = make_tokens(N, 50257, 9);
    tok[1234] = 50257;
    write_shard("late_bad.bin", tok, N, 1, 0);
    LoaderCase c = {test_path("late_bad.bin"), 2, 16, 0, 1, 1, 50257};
    DataLoader loader;
    dataloader_init(&loader, c.pattern, c.B, c.T, 0, 1, 1, 1, 50257);
    dataloader_free(&loader);
    test_report(1, "start_without_reading_tokens", "a shard with a bad token at position 1234 starts");
    expect_refused("refuse_bad_token_when_read", &c, "late_bad.bin", "token 50257 at position 1234 is out of range");
    free(tok);
}

/* 1,000 sparse raw shards of 100 M (zero) tokens each: start-up must not depend on their size */
static void test_startup_many_shards(void) {
    const int num = 1000;
    const size_t ntok = 100000000;
    int32_t header[SHARD_HEADER_INTS] = {SHARD_MAGIC, 1, (int32_t)ntok};
    char name[64];
    for (int i = 0; i < num; i++) {
        snprintf(name, sizeof(name), "many_%04d.bin", i);
        FILE *fp = fopen(test_path(name), "wb");
        if (fp == NULL || fwrite(header, sizeof(header), 1, fp) != 1 ||
            ftruncate(fileno(fp), (off_t)(sizeof(header) + ntok * 2)) != 0 || fclose(fp) != 0) {
            perror(name);
            exit(1);
        }
    }
    DataLoader loader;
    double t0 = wall_seconds();
    dataloader_init(&loader, test_path("many_*.bin"), 8, 1024, 0, 1, 1, 1, 50257);
    double seconds = wall_seconds() - t0;
    size_t expected = (size_t)num * ((ntok - 1) / 1024 / 8);
    test_report(seconds < 2.0 && dataloader_num_batches(&loader) == expected, "startup_1000_shards",
                "%d shards of %zu tokens (%.0f GB) start in %.3f s; %zu batches (expected %zu)", num, ntok,
                (double)num * (double)ntok * 2 / 1e9, seconds, dataloader_num_batches(&loader), expected);
    dataloader_free(&loader);
    for (int i = 0; i < num; i++) {
        snprintf(name, sizeof(name), "many_%04d.bin", i);
        unlink(test_path(name));
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* tokenizer.bin */

static void write_tokenizer(const char *path, int32_t magic, int32_t vocab, int32_t eot, int count, const char *const *tokens) {
    FILE *fp = fopen(path, "wb");
    int32_t header[TOKENIZER_HEADER_INTS] = {magic, 1, vocab, eot, TOKENIZER_WORD};
    fwrite(header, sizeof(header), 1, fp);
    for (int i = 0; i < count; i++) {
        uint32_t n = (uint32_t)strlen(tokens[i]);
        fwrite(&n, sizeof(n), 1, fp);
        fwrite(tokens[i], 1, n, fp);
    }
    fclose(fp);
}

static void tokenizer_init_fn(const void *path) {
    Tokenizer t;
    tokenizer_init(&t, (const char *)path);
    tokenizer_free(&t);
}

static void test_tokenizer(void) {
    const char *const words[3] = {"\n", "the ", "cat "};
    const char *path = test_path("tok.bin");
    write_tokenizer(path, TOKENIZER_MAGIC, 3, 0, 3, words);
    Tokenizer t;
    tokenizer_init(&t, path);
    int ok = t.loaded && tokenizer_eot(&t) == 0 && strcmp(tokenizer_decode(&t, 2), "cat ") == 0 &&
             strcmp(tokenizer_decode(&t, 1), "the ") == 0 && strcmp(tokenizer_decode(&t, 3), "<3>") == 0;
    test_report(ok, "tokenizer_decode", "ids 1, 2 -> \"the \", \"cat \"; id 3 (outside the vocabulary) -> \"%s\"; eot %d",
                tokenizer_decode(&t, 3), tokenizer_eot(&t));
    tokenizer_free(&t);

    char msg[2048];
    const char *missing = test_path("missing_tokenizer.bin");
    int status = run_child(tokenizer_init_fn, missing, msg, sizeof(msg));
    tokenizer_init(&t, missing);
    ok = status == 0 && strstr(msg, "warning") && strstr(msg, "missing_tokenizer.bin") && !t.loaded &&
         strcmp(tokenizer_decode(&t, 50256), "<50256>") == 0 && tokenizer_eot(&t) == -1;
    test_report(ok, "tokenizer_missing_file", "warns and decodes 50256 as \"%s\"", tokenizer_decode(&t, 50256));
    tokenizer_free(&t);

    const char *bad = test_path("tok_magic.bin");
    write_tokenizer(bad, 12345, 3, 0, 3, words);
    status = run_child(tokenizer_init_fn, bad, msg, sizeof(msg));
    test_report(status > 0 && strstr(msg, "tok_magic.bin") && strstr(msg, "magic"), "tokenizer_refuse_bad_magic", "exit %d: %s",
                status, msg);
    const char *short_file = test_path("tok_short.bin");
    write_tokenizer(short_file, TOKENIZER_MAGIC, 5, 0, 3, words);
    status = run_child(tokenizer_init_fn, short_file, msg, sizeof(msg));
    test_report(status > 0 && strstr(msg, "tok_short.bin") && strstr(msg, "truncated"), "tokenizer_refuse_truncated",
                "exit %d: %s", status, msg);
}

/* ---------------------------------------------------------------------------------------------- */
/* driver modes */

static int dump_main(int argc, char **argv) {
    if (argc != 11) { fprintf(stderr, "usage: dump PATTERN B T RANK WORLD SHUFFLE SEED VOCAB NBATCHES\n"); return 2; }
    DataLoader loader;
    size_t B = strtoul(argv[3], NULL, 10), T = strtoul(argv[4], NULL, 10);
    dataloader_init(&loader, argv[2], B, T, atoi(argv[5]), atoi(argv[6]), atoi(argv[7]), strtoull(argv[8], NULL, 10),
                    atoi(argv[9]));
    long n = atol(argv[10]);
    if (n < 0) n = (long)dataloader_num_batches(&loader);
    for (long i = 0; i < n; i++) {
        dataloader_next_batch(&loader);
        fwrite(loader.inputs, sizeof(int), B * T, stdout);
        fwrite(loader.targets, sizeof(int), B * T, stdout);
    }
    dataloader_free(&loader);
    return 0;
}

static int decode_main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: decode PATTERN TOKENIZER_BIN T VOCAB\n"); return 2; }
    DataLoader loader;
    Tokenizer tok;
    size_t T = strtoul(argv[4], NULL, 10);
    dataloader_init(&loader, argv[2], 1, T, 0, 1, 0, 0, atoi(argv[5]));
    tokenizer_init(&tok, argv[3]);
    size_t nb = dataloader_num_batches(&loader);
    for (size_t b = 0; b < nb; b++) {
        dataloader_next_batch(&loader);
        for (size_t t = 0; t < T; t++) fputs(tokenizer_decode(&tok, (uint32_t)loader.inputs[t]), stdout);
    }
    fputs(tokenizer_decode(&tok, (uint32_t)loader.targets[T - 1]), stdout);
    tokenizer_free(&tok);
    dataloader_free(&loader);
    return 0;
}

static int bench_main(int argc, char **argv) {
    if (argc != 8) { fprintf(stderr, "usage: bench PATTERN B T VOCAB BLOCK_TOKENS SECONDS\n"); return 2; }
    size_t B = strtoul(argv[3], NULL, 10), T = strtoul(argv[4], NULL, 10), block = strtoul(argv[6], NULL, 10);
    double seconds = atof(argv[7]);
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        DataLoader loader;
        double t0 = wall_seconds();
        dataloader_init_blocks(&loader, argv[2], B, T, 0, 1, shuffle, 1, atoi(argv[5]), block);
        double t_init = wall_seconds() - t0;
        size_t batches = 0;
        long checksum = 0;
        t0 = wall_seconds();
        double elapsed = 0;
        while (elapsed < seconds) {
            dataloader_next_batch(&loader);
            checksum += loader.inputs[batches % (B * T)];
            batches++;
            if (batches % 16 == 0) elapsed = wall_seconds() - t0;
        }
        elapsed = wall_seconds() - t0;
        printf("%s shuffle=%d B=%zu T=%zu block=%zu rows: init %.3f s; %zu batches (%.1f epochs) in %.2f s = "
               "%.1f M tokens/s (checksum %ld)\n", argv[2], shuffle, B, T, loader.block_rows, t_init, batches,
               (double)batches / (double)dataloader_num_batches(&loader), elapsed,
               (double)batches * (double)(B * T) / elapsed / 1e6, checksum);
        dataloader_free(&loader);
    }
    return 0;
}

/* rows of T ints, compared as a whole (qsort) */
static size_t row_ints;
static int compare_rows(const void *a, const void *b) { return memcmp(a, b, row_ints * sizeof(int)); }

/* the rows of one epoch on every rank of world with micro micro-batches per step, in stream order or file order;
 * checks in stream order that each stream's row continues its previous step's row within a block */
static int *epoch_rows(const char *pattern, size_t B, size_t T, int world, int micro, int streams, size_t block_tokens,
                       size_t *nrows, size_t *broken, size_t *starts) {
    DataLoader loaders[2];
    for (int k = 0; k < world; k++) {
        dataloader_init_steps_blocks(&loaders[k], pattern, B, T, k, world, micro, 0, 0, 50257, block_tokens);
        if (streams) dataloader_set_streams(&loaders[k]);
    }
    size_t batches = dataloader_num_batches(&loaders[0]), S = (size_t)world * B * micro;
    int *rows = (int *)malloc(batches * world * B * T * sizeof(int));
    int *last = (int *)malloc(S * sizeof(int)); /* each stream's last target */
    *nrows = 0;
    *broken = *starts = 0;
    for (size_t i = 0; i < batches; i++) {
        int m = (int)(i % (size_t)micro);
        for (int k = 0; k < world; k++) {
            DataLoader *l = &loaders[k];
            dataloader_next_batch(l);
            if (k == 0 && m == 0) *starts += l->stream_start;
            for (size_t b = 0; b < B; b++) {
                size_t j = (size_t)m * world * B + (size_t)k * B + b;
                if (!l->stream_start && l->inputs[b * T] != last[j]) (*broken)++;
                last[j] = l->targets[b * T + T - 1];
                memcpy(rows + (*nrows)++ * T, l->inputs + b * T, T * sizeof(int));
            }
        }
    }
    for (int k = 0; k < world; k++) dataloader_free(&loaders[k]);
    free(last);
    row_ints = T;
    qsort(rows, *nrows, T * sizeof(int), compare_rows);
    return rows;
}

/* stream order (-cs 1): each stream's rows are contiguous text within a block, and an epoch reads the same rows
 * as file order */
static void test_streams(void) {
    const size_t N = 10007, B = 2, T = 16;
    uint32_t *tok = make_tokens(N, 50257, 5);
    write_shard("streams_000.bin", tok, N, 2, 0);
    size_t block_tokens = 5 * 8 * T; /* 5 steps of S = 8 rows: the epoch crosses blocks, the last one shorter */
    size_t n_stream, n_file, broken, starts, unused, unused2;
    int *stream_rows = epoch_rows(test_path("streams_*.bin"), B, T, 2, 2, 1, block_tokens, &n_stream, &broken, &starts);
    int *file_rows = epoch_rows(test_path("streams_*.bin"), B, T, 2, 2, 0, block_tokens, &n_file, &unused, &unused2);
    size_t steps = (N - 1) / T / 8, blocks = (steps + 4) / 5;
    int same = n_stream == n_file && memcmp(stream_rows, file_rows, n_stream * T * sizeof(int)) == 0;
    test_report(broken == 0 && starts == blocks && same, "loader_streams",
                "2 ranks x B 2 x 2 micro-batches, %zu steps in %zu blocks: %zu stream breaks inside a block, %zu stream "
                "starts, the epoch's %zu rows %s file order's", steps, blocks, broken, starts, n_stream,
                same ? "equal" : "differ from");
    free(stream_rows);
    free(file_rows);
    free(tok);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "dump") == 0) return dump_main(argc, argv);
    if (argc > 1 && strcmp(argv[1], "decode") == 0) return decode_main(argc, argv);
    if (argc > 1 && strcmp(argv[1], "bench") == 0) return bench_main(argc, argv);
    snprintf(test_dir, sizeof(test_dir), "/tmp/ssd_test_data_XXXXXX");
    if (mkdtemp(test_dir) == NULL) { perror("mkdtemp"); return 1; }
    test_layout();
    test_raw_vs_zstd();
    test_partition();
    test_shuffle();
    test_state();
    write_split_shards();
    test_step_splits();
    test_state_across_splits();
    test_streams();
    test_bad_inputs();
    test_masks();
    test_masks_refused();
    test_special_files();
    test_lazy_token_check();
    test_startup_many_shards();
    test_tokenizer();
    remove_test_dir();
    return test_exit_code();
}
