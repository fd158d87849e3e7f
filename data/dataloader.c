/*
 * Token shard loader (see dataloader.h for the sample layout, the rank split and the shuffle).
 * Shards are read sequentially, a bounded block at a time, through ShardReader: fread for raw shards,
 * ZSTD_decompressStream for .zst shards, so both kinds give the same bytes and the same batches.
 */
#include "data/dataloader.h"

#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "common/rng.h"
#include "common/utils.h"

#define STATE_MAGIC 0x5353444c4f414452ULL /* "SSDLOADR" */
#define STATE_VERSION 2
#define STATE_WORDS 12
#define STATE_CONFIG_WORDS 9 /* the leading words that must match the loader */

static void data_error(const char *path, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "error: %s: ", path);
    vfprintf(stderr, fmt, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(1);
}

/* ------------------------------------------------------------------------------------------------ */
/* ShardReader: the bytes of one shard, in order */

static size_t reader_read_bytes(ShardReader *r, void *dst, size_t n) {
    const char *path = r->shard->path;
    if (!r->shard->is_zst) {
        size_t got = fread(dst, 1, n, r->fp);
        if (got < n && ferror(r->fp)) data_error(path, "read error");
        return got;
    }
    ZSTD_outBuffer out = {dst, n, 0};
    while (out.pos < out.size) {
        int at_eof = 0;
        if (r->in_pos == r->in_len) {
            r->in_len = fread(r->in_buf, 1, r->in_cap, r->fp);
            r->in_pos = 0;
            if (r->in_len == 0) {
                if (ferror(r->fp)) data_error(path, "read error");
                at_eof = 1;
            }
        }
        size_t before = out.pos;
        ZSTD_inBuffer in = {r->in_buf, r->in_len, r->in_pos};
        /* with no input left this flushes what the decoder still holds */
        size_t ret = ZSTD_decompressStream(r->dctx, &out, &in);
        if (ZSTD_isError(ret)) data_error(path, "corrupt zstd data: %s", ZSTD_getErrorName(ret));
        int progressed = in.pos != r->in_pos || out.pos != before;
        r->in_pos = in.pos;
        /* an idle call after a finished frame would report the start of a next one */
        if (progressed) r->last_ret = ret;
        if (at_eof && !progressed) {
            if (r->last_ret != 0) data_error(path, "truncated zstd stream: the file ends inside a frame");
            break;
        }
    }
    return out.pos;
}

static void reader_open(ShardReader *r, const Shard *shard) {
    memset(r, 0, sizeof(*r));
    r->shard = shard;
    r->fp = fopenCheck(shard->path, "rb");
    if (shard->is_zst) {
        r->dctx = ZSTD_createDCtx();
        if (r->dctx == NULL) data_error(shard->path, "ZSTD_createDCtx failed");
        r->in_cap = ZSTD_DStreamInSize();
        r->in_buf = (unsigned char *)mallocCheck(r->in_cap);
    }
    if (shard->mask_path) r->mask_fp = fopenCheck(shard->mask_path, "rb");
}

static void reader_close(ShardReader *r) {
    if (r->fp) fcloseCheck(r->fp);
    if (r->dctx) ZSTD_freeDCtx(r->dctx);
    if (r->mask_fp) fcloseCheck(r->mask_fp);
    free(r->in_buf);
    memset(r, 0, sizeof(*r));
}

/* reads and checks the header; returns the token count it declares */
static size_t reader_read_header(ShardReader *r, int *version) {
    const char *path = r->shard->path;
    int32_t header[SHARD_HEADER_INTS];
    size_t got = reader_read_bytes(r, header, sizeof(header));
    if (got < sizeof(header))
        data_error(path, "truncated: %zu bytes, shorter than the %zu-byte header", got, sizeof(header));
    if (header[0] != SHARD_MAGIC)
        data_error(path, "bad magic %d (expected %d): not a token shard", header[0], SHARD_MAGIC);
    if (header[1] != 1 && header[1] != 2)
        data_error(path, "unsupported version %d (expected 1 for uint16 or 2 for uint32 tokens)", header[1]);
    if (header[2] <= 0) data_error(path, "header declares %d tokens", header[2]);
    *version = header[1];
    return (size_t)header[2];
}

/* reads exactly n tokens into dst */
static void reader_read_tokens(ShardReader *r, void *dst, size_t n) {
    size_t tb = r->shard->token_bytes;
    size_t got = reader_read_bytes(r, dst, n * tb);
    if (got != n * tb)
        data_error(r->shard->path, "size does not match the header: the data ends at token %zu (+%zu bytes), but the "
                   "header declares %zu tokens", r->token_pos + got / tb, got % tb, r->shard->ntok);
    r->token_pos += n;
}

static void reader_skip_tokens(ShardReader *r, size_t n, unsigned char *scratch, size_t scratch_tokens) {
    if (!r->shard->is_zst) {
        if (fseek(r->fp, (long)(n * r->shard->token_bytes), SEEK_CUR) != 0) data_error(r->shard->path, "seek failed");
        r->token_pos += n;
        return;
    }
    while (n > 0) {
        size_t step = n < scratch_tokens ? n : scratch_tokens;
        reader_read_tokens(r, scratch, step);
        n -= step;
    }
}

/* opens a shard and positions the reader at its first token */
static void reader_start(ShardReader *r, const Shard *shard) {
    int version;
    reader_open(r, shard);
    reader_read_header(r, &version);
}

/* ------------------------------------------------------------------------------------------------ */
/* shard checks: headers and sizes of every shard at start-up (cost independent of the shard sizes), tokens
 * as they are read */

/* refuses anything but a regular file before opening it: opening a named pipe would block, a device or a
 * directory is never a shard */
static void shard_check_regular(const char *path, off_t *size) {
    struct stat st;
    if (stat(path, &st) != 0) data_error(path, "cannot stat: %s", strerror(errno));
    if (!S_ISREG(st.st_mode)) {
        const char *kind = S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a named pipe"
                         : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : S_ISSOCK(st.st_mode) ? "a socket"
                         : "not a regular file";
        data_error(path, "is %s, not a regular file: a shard must be a regular file", kind);
    }
    *size = st.st_size;
}

/* a zstd shard's first frame declares its decompressed size (the zstd tool writes it); more than the header
 * declares is refused now; less may be the first of several frames, and the true end is checked as the
 * shard is read (shard_finish) */
static void shard_check_zstd_frame(const Shard *shard, size_t expected_bytes) {
    FILE *fp = fopenCheck(shard->path, "rb");
    unsigned char head[18]; /* ZSTD_FRAMEHEADERSIZE_MAX, in the static-only API */
    size_t got = fread(head, 1, sizeof(head), fp);
    fcloseCheck(fp);
    unsigned long long content = ZSTD_getFrameContentSize(head, got);
    if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != ZSTD_CONTENTSIZE_ERROR && content > expected_bytes)
        data_error(shard->path, "size does not match the header: the zstd frame holds %llu bytes, but %zu tokens of "
                   "%zu bytes need %zu bytes", content, shard->ntok, shard->token_bytes, expected_bytes);
}

static void shard_check(Shard *shard) {
    const char *path = shard->path;
    off_t size;
    shard_check_regular(path, &size);
    ShardReader r;
    reader_open(&r, shard);
    shard->ntok = reader_read_header(&r, &shard->version);
    reader_close(&r);
    shard->token_bytes = shard->version == 1 ? 2 : 4;
    size_t expected_bytes = SHARD_HEADER_INTS * sizeof(int32_t) + shard->ntok * shard->token_bytes;
    if (shard->is_zst) {
        shard_check_zstd_frame(shard, expected_bytes);
    } else if ((size_t)size != expected_bytes) {
        data_error(path, "size %lld bytes does not match the header: %zu tokens of %zu bytes need %zu bytes",
                   (long long)size, shard->ntok, shard->token_bytes, expected_bytes);
    }
}

/* A shard's loss mask (dataloader.h): the side file's header against the shard's token count, and its size.
 * Sets mask_path when the file exists. */
static void shard_find_mask(Shard *shard) {
    size_t n = strlen(shard->path);
    char *mask_path = (char *)mallocCheck(n + sizeof(".mask"));
    memcpy(mask_path, shard->path, n);
    memcpy(mask_path + n, ".mask", sizeof(".mask"));
    struct stat st;
    if (stat(mask_path, &st) != 0) {
        free(mask_path);
        return;
    }
    off_t size;
    shard_check_regular(mask_path, &size);
    int32_t header[SHARD_HEADER_INTS];
    FILE *fp = fopenCheck(mask_path, "rb");
    size_t got = fread(header, 1, sizeof(header), fp);
    fcloseCheck(fp);
    if (got < sizeof(header))
        data_error(mask_path, "truncated loss mask: %zu bytes, shorter than the %zu-byte header", got, sizeof(header));
    if (header[0] != MASK_MAGIC)
        data_error(mask_path, "bad magic %d (expected %d): not a loss mask", header[0], MASK_MAGIC);
    if (header[1] != MASK_VERSION)
        data_error(mask_path, "unsupported loss mask version %d (expected %d)", header[1], MASK_VERSION);
    if (header[2] < 0 || (size_t)header[2] != shard->ntok)
        data_error(mask_path, "the mask declares %d tokens but its shard %s holds %zu", header[2], shard->path,
                   shard->ntok);
    size_t expected = sizeof(header) + shard->ntok;
    if ((size_t)size != expected)
        data_error(mask_path, "size %lld bytes does not match the header: %zu tokens need %zu bytes", (long long)size,
                   shard->ntok, expected);
    shard->mask_path = mask_path;
}

/* reads the mask bytes of tokens [first, first + n) of the open shard, each 0 or 1 */
static void reader_read_mask(ShardReader *r, unsigned char *dst, size_t first, size_t n) {
    const char *path = r->shard->mask_path;
    if (fseek(r->mask_fp, (long)(SHARD_HEADER_INTS * sizeof(int32_t) + first), SEEK_SET) != 0)
        data_error(path, "seek failed");
    if (fread(dst, 1, n, r->mask_fp) != n) data_error(path, "read error or truncated at token %zu", first);
    for (size_t i = 0; i < n; i++)
        if (dst[i] > 1) data_error(path, "mask byte %u at token %zu: must be 0 or 1", dst[i], first + i);
}

/* checks n tokens read from the shard, the first at token position `first` */
static void check_tokens(const Shard *shard, const unsigned char *tokens, size_t n, size_t first, int vocab_size) {
    for (size_t i = 0; i < n; i++) {
        uint32_t tok = shard->token_bytes == 2 ? ((const uint16_t *)tokens)[i] : ((const uint32_t *)tokens)[i];
        if (tok >= (uint32_t)vocab_size)
            data_error(shard->path, "token %u at position %zu is out of range for vocab_size %d%s", tok, first + i,
                       vocab_size, shard->is_zst ? " (or the compressed data is corrupt)" : "");
    }
}

/* reads the rest of the open shard (the rows no step uses) with the same checks, then confirms that the data
 * ends where the header says: for zstd this also completes the frame, so its checksum is verified */
static void shard_finish(ShardReader *r, int vocab_size) {
    const Shard *shard = r->shard;
    const size_t scratch_tokens = 1 << 16;
    unsigned char *scratch = (unsigned char *)mallocCheck(scratch_tokens * shard->token_bytes);
    while (r->token_pos < shard->ntok) {
        size_t n = shard->ntok - r->token_pos < scratch_tokens ? shard->ntok - r->token_pos : scratch_tokens;
        size_t first = r->token_pos;
        reader_read_tokens(r, scratch, n);
        check_tokens(shard, scratch, n, first, vocab_size);
    }
    free(scratch);
    unsigned char extra;
    if (reader_read_bytes(r, &extra, 1) != 0)
        data_error(shard->path, "size does not match the header: data continues after the declared %zu tokens",
                   shard->ntok);
}

/* ------------------------------------------------------------------------------------------------ */
/* seeded orders */

static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* an RNG state for one purpose in the current epoch: the shard order (shard = block = UINT64_MAX) or the rows
 * of one block of one shard */
static uint64_t order_rng(const DataLoader *loader, uint64_t shard, uint64_t block) {
    uint64_t key = mix64(mix64(mix64(loader->seed) ^ loader->epoch) ^ shard);
    return rng_seed(mix64(key ^ block));
}

static void shuffle_ints(int *a, size_t n, uint64_t *rng) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next(rng) % i);
        int tmp = a[i - 1]; a[i - 1] = a[j]; a[j] = tmp;
    }
}

static void shuffle_sizes(size_t *a, size_t n, uint64_t *rng) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next(rng) % i);
        size_t tmp = a[i - 1]; a[i - 1] = a[j]; a[j] = tmp;
    }
}

static void set_shard_order(DataLoader *loader) {
    for (int i = 0; i < loader->num_shards; i++) loader->shard_order[i] = i;
    if (loader->shuffle) {
        uint64_t rng = order_rng(loader, UINT64_MAX, UINT64_MAX);
        shuffle_ints(loader->shard_order, (size_t)loader->num_shards, &rng);
    }
}

/* ------------------------------------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

void dataloader_init_steps_blocks(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                                  int micro_per_step, int shuffle, uint64_t seed, int vocab_size, size_t block_tokens) {
    memset(loader, 0, sizeof(*loader));
    if (B == 0 || T == 0) data_error(pattern, "batch shape B=%zu T=%zu: both must be positive", B, T);
    if (world < 1 || rank < 0 || rank >= world) data_error(pattern, "rank %d is not in [0, world=%d)", rank, world);
    if (micro_per_step < 1) data_error(pattern, "micro-batches per step %d must be positive", micro_per_step);
    if (vocab_size <= 0) data_error(pattern, "vocab_size %d must be positive", vocab_size);
    if (block_tokens == 0) data_error(pattern, "block size must be positive");
    loader->B = B;
    loader->T = T;
    loader->rank = rank;
    loader->world = world;
    loader->micro_per_step = micro_per_step;
    loader->step_rows = (size_t)world * B * (size_t)micro_per_step;
    loader->shuffle = shuffle;
    loader->seed = seed;
    loader->vocab_size = vocab_size;

    glob_t found;
    int status = glob(pattern, 0, NULL, &found);
    if (status == GLOB_NOMATCH || (status == 0 && found.gl_pathc == 0))
        data_error(pattern, "no shard files match this pattern");
    if (status != 0) data_error(pattern, "glob failed (status %d)", status);
    loader->shards = (Shard *)callocCheck(found.gl_pathc, sizeof(Shard));
    size_t S = loader->step_rows;
    size_t max_token_bytes = 2;
    const char *with_mask = NULL, *without_mask = NULL;
    for (size_t i = 0; i < found.gl_pathc; i++) {
        const char *path = found.gl_pathv[i];
        if (ends_with(path, ".mask")) continue; /* a shard's side file */
        Shard *shard = &loader->shards[loader->num_shards++];
        shard->path = strdup(path);
        if (shard->path == NULL) data_error(path, "out of memory");
        shard->is_zst = ends_with(path, ".zst");
        shard_check(shard);
        shard_find_mask(shard);
        if (shard->mask_path) with_mask = shard->path;
        else without_mask = shard->path;
        if (with_mask && without_mask)
            data_error(without_mask, "has no loss mask (%s.mask) but %s has one: either every shard of a split has a "
                       "mask or none has", without_mask, with_mask);
        shard->num_rows = (shard->ntok - 1) / T;
        shard->num_batches = shard->num_rows / S * (size_t)micro_per_step;
        if (shard->num_batches == 0)
            data_error(path, "too short for an optimizer step: %zu tokens, but %d rank(s) x B=%zu x %d micro-batch(es) "
                       "x T=%zu need %zu + 1", shard->ntok, world, B, micro_per_step, T, S * T);
        if (shard->token_bytes > max_token_bytes) max_token_bytes = shard->token_bytes;
    }
    globfree(&found);
    if (loader->num_shards == 0) data_error(pattern, "only loss mask files (.mask) match this pattern, no shards");
    loader->has_masks = with_mask != NULL;

    /* whole steps, so the blocks (and the shuffle within them) do not depend on how S is split */
    size_t steps_per_block = block_tokens / (S * T) > 0 ? block_tokens / (S * T) : 1;
    loader->block_rows = steps_per_block * S;
    loader->block_tokens = (unsigned char *)mallocCheck((loader->block_rows * T + 1) * max_token_bytes);
    if (loader->has_masks) loader->block_mask = (unsigned char *)mallocCheck(loader->block_rows * T + 1);
    loader->row_order = (size_t *)mallocCheck(loader->block_rows * sizeof(size_t));
    loader->shard_order = (int *)mallocCheck((size_t)loader->num_shards * sizeof(int));
    loader->inputs = (int *)mallocCheck(B * T * sizeof(int));
    loader->targets = (int *)mallocCheck(B * T * sizeof(int));
    loader->reader_shard = -1;
    loader->loaded_block = -1;
    dataloader_reset(loader);
}

void dataloader_init_blocks(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                            int shuffle, uint64_t seed, int vocab_size, size_t block_tokens) {
    dataloader_init_steps_blocks(loader, pattern, B, T, rank, world, 1, shuffle, seed, vocab_size, block_tokens);
}

void dataloader_init_steps(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                           int micro_per_step, int shuffle, uint64_t seed, int vocab_size) {
    dataloader_init_steps_blocks(loader, pattern, B, T, rank, world, micro_per_step, shuffle, seed, vocab_size,
                                 DATALOADER_BLOCK_TOKENS);
}

void dataloader_init(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                     int shuffle, uint64_t seed, int vocab_size) {
    dataloader_init_steps(loader, pattern, B, T, rank, world, 1, shuffle, seed, vocab_size);
}

void dataloader_reset(DataLoader *loader) {
    loader->epoch = 0;
    loader->shard_pos = 0;
    loader->batch_in_shard = 0;
    set_shard_order(loader);
}

/* makes block `block` of shard `s` the loaded block, with its rows ordered for the current epoch */
static void ensure_block(DataLoader *loader, int s, size_t block) {
    const Shard *shard = &loader->shards[s];
    size_t T = loader->T, tb = shard->token_bytes;
    if (loader->reader_shard != s || loader->loaded_block != (long)block) {
        ShardReader *r = &loader->reader;
        if (loader->reader_shard != s) {
            if (loader->reader_shard >= 0) reader_close(r);
            reader_start(r, shard);
            loader->reader_shard = s;
            loader->loaded_block = -1;
        }
        size_t first_row = block * loader->block_rows;
        size_t num_rows = shard->num_rows - first_row < loader->block_rows ? shard->num_rows - first_row : loader->block_rows;
        size_t start = first_row * T;
        if (block > 0 && loader->loaded_block == (long)block - 1 && r->token_pos == start + 1) {
            /* the next block in the stream: its first token is the previous block's last one */
            memmove(loader->block_tokens, loader->block_tokens + loader->block_num_rows * T * tb, tb);
            reader_read_tokens(r, loader->block_tokens + tb, num_rows * T);
            check_tokens(shard, loader->block_tokens + tb, num_rows * T, start + 1, loader->vocab_size);
        } else {
            if (r->token_pos > start) {
                reader_close(r);
                reader_start(r, shard);
            }
            reader_skip_tokens(r, start - r->token_pos, loader->block_tokens, loader->block_rows * T + 1);
            reader_read_tokens(r, loader->block_tokens, num_rows * T + 1);
            check_tokens(shard, loader->block_tokens, num_rows * T + 1, start, loader->vocab_size);
        }
        if (shard->mask_path) reader_read_mask(r, loader->block_mask, start, num_rows * T + 1);
        /* the block with the shard's last used row: check the tail now, so every shard read is checked whole */
        if (first_row + num_rows >= shard->num_rows / loader->step_rows * loader->step_rows)
            shard_finish(r, loader->vocab_size);
        loader->loaded_block = (long)block;
        loader->block_num_rows = num_rows;
        loader->rows_ordered = 0;
    }
    if (!loader->rows_ordered || loader->rows_epoch != loader->epoch) {
        size_t S = loader->step_rows, K = loader->block_num_rows / S; /* whole steps in the block */
        for (size_t i = 0; i < loader->block_num_rows; i++)
            loader->row_order[i] = loader->streams && i < K * S ? (i % S) * K + i / S : i;
        if (loader->shuffle) {
            uint64_t rng = order_rng(loader, (uint64_t)s, (uint64_t)block);
            shuffle_sizes(loader->row_order, loader->block_num_rows, &rng);
        }
        loader->rows_ordered = 1;
        loader->rows_epoch = loader->epoch;
    }
}

void dataloader_next_batch(DataLoader *loader) {
    if (loader->batch_in_shard == loader->shards[loader->shard_order[loader->shard_pos]].num_batches) {
        loader->batch_in_shard = 0;
        loader->shard_pos++;
        if (loader->shard_pos == loader->num_shards) {
            loader->shard_pos = 0;
            loader->epoch++;
            set_shard_order(loader);
        }
    }
    int s = loader->shard_order[loader->shard_pos];
    size_t B = loader->B, T = loader->T;
    /* blocks are whole steps, so a global micro-batch never straddles two */
    size_t row = loader->batch_in_shard * (size_t)loader->world * B;
    ensure_block(loader, s, row / loader->block_rows);
    size_t first = row % loader->block_rows + (size_t)loader->rank * B;
    loader->stream_start = row % loader->block_rows < loader->step_rows;
    int two_bytes = loader->shards[s].token_bytes == 2;
    for (size_t b = 0; b < B; b++) {
        size_t offset = loader->row_order[first + b] * T;
        int *inp = loader->inputs + b * T, *tgt = loader->targets + b * T;
        if (two_bytes) {
            const uint16_t *row = (const uint16_t *)loader->block_tokens + offset;
            for (size_t t = 0; t < T; t++) { inp[t] = row[t]; tgt[t] = row[t + 1]; }
        } else {
            const uint32_t *row = (const uint32_t *)loader->block_tokens + offset;
            for (size_t t = 0; t < T; t++) { inp[t] = (int)row[t]; tgt[t] = (int)row[t + 1]; }
        }
        if (loader->has_masks) {
            const unsigned char *mask = loader->block_mask + offset + 1;
            for (size_t t = 0; t < T; t++)
                if (!mask[t]) tgt[t] = IGNORE_TARGET;
        }
    }
    loader->batch_in_shard++;
}

void dataloader_set_streams(DataLoader *loader) {
    if (loader->shuffle) data_error(loader->shards[0].path, "stream order needs unshuffled rows (-sh 0)");
    loader->streams = 1;
    loader->rows_ordered = 0;
}

size_t count_targets(const int *targets, size_t n) {
    size_t counted = 0;
    for (size_t i = 0; i < n; i++) counted += targets[i] != IGNORE_TARGET;
    return counted;
}

void document_segments(const int *inputs, int B, int T, int eot, int *segment) {
    for (int b = 0; b < B; b++) {
        int seg = 0;
        for (int t = 0; t < T; t++) {
            if (t > 0 && inputs[(size_t)b * T + t - 1] == eot) seg++;
            segment[(size_t)b * T + t] = seg;
        }
    }
}

size_t dataloader_num_batches(const DataLoader *loader) {
    size_t total = 0;
    for (int i = 0; i < loader->num_shards; i++) total += loader->shards[i].num_batches;
    return total;
}

/* ------------------------------------------------------------------------------------------------ */
/* state: uint64 words [magic, version, T, step rows, shuffle, seed, shards, tokens, block rows,
 *                      epoch, shard position, rows consumed in the shard] */

static void state_words(const DataLoader *loader, uint64_t *w) {
    uint64_t total_tokens = 0;
    for (int i = 0; i < loader->num_shards; i++) total_tokens += loader->shards[i].ntok;
    w[0] = STATE_MAGIC;
    w[1] = STATE_VERSION;
    w[2] = loader->T;
    w[3] = loader->step_rows;
    w[4] = loader->streams ? 2 : (uint64_t)loader->shuffle; /* 1: shuffled, 2: stream order, 0: file order */
    w[5] = loader->seed;
    w[6] = (uint64_t)loader->num_shards;
    w[7] = total_tokens;
    w[8] = loader->block_rows;
    w[9] = loader->epoch;
    w[10] = (uint64_t)loader->shard_pos;
    w[11] = loader->batch_in_shard * (size_t)loader->world * loader->B;
}

size_t dataloader_state_size(const DataLoader *loader) {
    (void)loader;
    return STATE_WORDS * sizeof(uint64_t);
}

void dataloader_get_state(const DataLoader *loader, void *buf) {
    uint64_t w[STATE_WORDS];
    state_words(loader, w);
    memcpy(buf, w, sizeof(w));
}

/* exits unless the first n configuration words of a state equal this loader's */
static void check_state_config(const DataLoader *loader, const uint64_t *saved, int n) {
    static const char *const names[STATE_CONFIG_WORDS] = {
        "magic", "version", "T", "rows per optimizer step", "row order (1 shuffle, 2 streams of -cs 1)", "seed", "number of shards", "total tokens",
        "block rows"};
    static const char *const keep[STATE_CONFIG_WORDS] = {
        "not a loader state", "a state written by another version of the loader", "keep T equal to resume",
        "keep world x B x grad accum equal to resume", "keep -sh and -cs as they were to resume",
        "keep the seed to resume", "resume on the same shards", "resume on the same shards",
        "keep the loader's block size to resume"};
    uint64_t mine[STATE_WORDS];
    state_words(loader, mine);
    for (int i = 0; i < n; i++) {
        if (saved[i] != mine[i])
            data_error(loader->shards[0].path, "loader state does not fit: %s is %llu in the state but %llu in this "
                       "loader: %s", names[i], (unsigned long long)saved[i], (unsigned long long)mine[i], keep[i]);
    }
}

void dataloader_set_state(DataLoader *loader, const void *buf, size_t n) {
    const char *where = loader->shards[0].path;
    uint64_t saved[STATE_WORDS] = {0};
    memcpy(saved, buf, n < sizeof(saved) ? n : sizeof(saved));
    /* magic and version first: a state of another version has another size */
    if (n >= 2 * sizeof(uint64_t)) check_state_config(loader, saved, 2);
    if (n != dataloader_state_size(loader))
        data_error(where, "loader state of %zu bytes does not fit (expected %zu)", n, dataloader_state_size(loader));
    check_state_config(loader, saved, STATE_CONFIG_WORDS);
    uint64_t shard_pos = saved[10], row = saved[11];
    if (shard_pos >= (uint64_t)loader->num_shards)
        data_error(where, "loader state does not fit: shard position %llu of %d shards", (unsigned long long)shard_pos,
                   loader->num_shards);
    loader->epoch = saved[9];
    loader->shard_pos = (int)shard_pos;
    set_shard_order(loader);
    const Shard *shard = &loader->shards[loader->shard_order[shard_pos]];
    size_t global_rows = (size_t)loader->world * loader->B;
    size_t used_rows = shard->num_batches * global_rows;
    if (row > used_rows)
        data_error(where, "loader state does not fit: row %llu of a shard with %zu used rows", (unsigned long long)row,
                   used_rows);
    if (row % global_rows != 0)
        data_error(where, "loader state does not fit: row %llu is not a multiple of this loader's world x B = %zu rows: "
                   "resume from a state taken at an optimizer step boundary", (unsigned long long)row, global_rows);
    loader->batch_in_shard = row / global_rows;
}

void dataloader_free(DataLoader *loader) {
    if (loader->reader_shard >= 0) reader_close(&loader->reader);
    for (int i = 0; i < loader->num_shards; i++) {
        free(loader->shards[i].path);
        free(loader->shards[i].mask_path);
    }
    free(loader->shards);
    free(loader->shard_order);
    free(loader->block_tokens);
    free(loader->block_mask);
    free(loader->row_order);
    free(loader->inputs);
    free(loader->targets);
    memset(loader, 0, sizeof(*loader));
}
