/*
 * Token shard loader: yields batches of B rows x T tokens (inputs, and targets = inputs shifted by one)
 * from shard files written by scripts/prepro.py.
 *
 * Shard formats (llm.c's layout): a header of 256 int32 (magic 20240520, version, ntok at [2]) then ntok
 * tokens, uint16 for version 1 and uint32 for version 2. A name ending in ".zst" holds the same bytes
 * zstd-compressed; it is read with streaming decompression and gives the same batches as the raw file.
 *
 * Samples: a shard of ntok tokens holds R = (ntok - 1) / T rows; row r is the window of T + 1 tokens
 * starting at r * T (consecutive rows share one token).
 *
 * Steps: W ranks (world), each reading micro-batches of B rows, with micro_per_step micro-batches per
 * optimizer step (gradient accumulation), consume S = W * B * micro_per_step rows per step. The row
 * sequence (which rows, in which order, grouped into steps) depends only on S, T, shuffle, seed and the
 * shards, never on how S splits into W * B * micro_per_step: micro-batch m of step s gives rank k the rows
 * [s*S + m*W*B + k*B, ... + B) of that sequence, i.e. global micro-batches of W*B rows in order. So W=2
 * with one micro-batch per step, W=1 with two and W=1 with 2B rows all train on the same rows per step.
 * Within a shard, rows are taken in blocks (the only part of a shard held in memory) of a bounded number
 * of tokens rounded down to a whole number of steps (a multiple of S rows, at least one step); only the
 * shard's last block may be shorter. Unshuffled, rows are in file order, so each rank's micro-batch is one
 * contiguous span of B*T+1 tokens (llm.c's layout); shuffled, the shard order is permuted every epoch and
 * the rows of each block are permuted, both from the seed. Raw and zstd shards share this code path, so
 * they give identical batches in both modes. A shard gives floor(R / S) steps; the rows that do not fill a
 * last whole step (fewer than S) are left out in that epoch: unshuffled the shard's last rows, shuffled
 * whichever rows the last block's permutation puts last. Every rank sees the same shards and the same
 * number of micro-batches, and the ranks' rows are disjoint and together cover every used row.
 *
 * Loss masks: a shard P may have a side file P + ".mask" (uncompressed, also beside a .zst shard): a header of
 * 256 int32 (magic 20261201, version 1, the shard's token count at [2]) then one byte per token, 1 if token i
 * counts as a prediction target (the loss term predicting it from the tokens before it), 0 if not. Either every
 * shard of a pattern has one or none has (a mix is refused, naming a shard with and one without). A target
 * that does not count is handed out as IGNORE_TARGET (-1) in `targets`: the loss and its gradient skip it.
 * Without mask files every target counts. Files ending in ".mask" matched by the pattern are never shards.
 *
 * Checks, each exiting with a message naming the file: dataloader_init takes only regular files (a directory,
 * named pipe or device matched by the pattern is refused before it is opened) and reads only each shard's
 * header: magic, version, token count, the file size against it for raw shards and the first frame's declared
 * size for zstd shards; so start-up does not depend on the shards' sizes. The tokens are checked as blocks are
 * read (every token < vocab_size, with the shard and token position named), and when a shard's last used block
 * is read, the rest of the shard is read too: the data must end where the header says, and for zstd the
 * frames must be complete with valid checksums.
 */
#ifndef SSD_DATA_DATALOADER_H
#define SSD_DATA_DATALOADER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHARD_MAGIC 20240520
#define MASK_MAGIC 20261201
#define MASK_VERSION 1
/* a target that does not count (its mask byte is 0): no loss term, no gradient */
#define IGNORE_TARGET (-1)
#define SHARD_HEADER_INTS 256
/* default block size in tokens (rounded down to whole optimizer steps, at least one) */
#define DATALOADER_BLOCK_TOKENS ((size_t)1 << 24)

typedef struct {
    char *path;
    char *mask_path;      /* path + ".mask", NULL when the shard has no loss mask */
    int is_zst;
    int version;          /* 1: uint16 tokens, 2: uint32 tokens */
    size_t token_bytes;
    size_t ntok;
    size_t num_rows;      /* (ntok - 1) / T */
    size_t num_batches;   /* micro-batches of world*B rows: floor(num_rows / step rows) * micro_per_step */
} Shard;

/* a sequential reader of one shard's token bytes (after the header), raw or zstd */
typedef struct ZSTD_DCtx_s ShardZstdContext;
typedef struct {
    const Shard *shard;
    FILE *fp;
    ShardZstdContext *dctx;
    unsigned char *in_buf;     /* compressed input (zstd only) */
    size_t in_cap, in_len, in_pos;
    size_t last_ret;           /* last ZSTD_decompressStream result: 0 at the end of a frame */
    size_t token_pos;          /* tokens consumed after the header */
    FILE *mask_fp;             /* the shard's mask file, NULL without one */
} ShardReader;

typedef struct {
    /* configuration */
    size_t B, T;
    int rank, world;
    int micro_per_step;         /* micro-batches per optimizer step (gradient accumulation) */
    size_t step_rows;           /* S = world * B * micro_per_step */
    int shuffle;
    int streams;                /* rows in stream order (dataloader_set_streams) */
    uint64_t seed;
    int vocab_size;
    size_t block_rows;          /* rows per block: a multiple of step_rows that depends only on it and T */
    Shard *shards;              /* in sorted glob order */
    int num_shards;
    int has_masks;              /* the shards have loss masks: some targets may be IGNORE_TARGET */
    /* position: the next micro-batch is global micro-batch batch_in_shard (of world*B rows) of
     * shard_order[shard_pos] in epoch */
    uint64_t epoch;
    int shard_pos;
    size_t batch_in_shard;
    int *shard_order;
    /* the open shard and its loaded block */
    ShardReader reader;
    int reader_shard;           /* index into shards of the open reader, -1 if none */
    long loaded_block;          /* block index held in block_tokens, -1 if none */
    unsigned char *block_tokens;/* (block_rows*T + 1) tokens of the shard's token size */
    unsigned char *block_mask;  /* the mask bytes of those tokens (NULL without masks) */
    size_t block_num_rows;
    size_t *row_order;          /* row order of the loaded block in epoch rows_epoch (valid if rows_ordered) */
    int rows_ordered;
    uint64_t rows_epoch;
    /* outputs */
    int *inputs;                /* B*T */
    int *targets;               /* B*T; IGNORE_TARGET where the shard's mask says the target does not count */
    int stream_start;           /* streams: this micro-batch's rows start their streams (a block's first step) */
} DataLoader;

/* the targets of targets[n] that count (not IGNORE_TARGET) */
size_t count_targets(const int *targets, size_t n);
/* Document boundaries (-db 1): segment[b*T + t] = the documents started at or before t in row b of inputs [B, T],
 * a document starting after every input equal to eot (so segment[b*T] = 0: a row's first position continues what
 * came before it). Both trainers' models mask the conv and the SSD state with it (model/cpu_model.h). */
void document_segments(const int *inputs, int B, int T, int eot, int *segment);
/* one micro-batch per optimizer step: dataloader_init_steps with micro_per_step = 1 */
void dataloader_init(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                     int shuffle, uint64_t seed, int vocab_size);
/* rank `rank` of `world`, micro_per_step micro-batches of B rows per optimizer step (see Steps above) */
void dataloader_init_steps(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                           int micro_per_step, int shuffle, uint64_t seed, int vocab_size);
/* the same with a chosen block size in tokens (tests use small blocks to cross block boundaries);
 * dataloader_init_blocks has micro_per_step = 1 */
void dataloader_init_blocks(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                            int shuffle, uint64_t seed, int vocab_size, size_t block_tokens);
void dataloader_init_steps_blocks(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                                  int micro_per_step, int shuffle, uint64_t seed, int vocab_size, size_t block_tokens);
/* Stream order (training with a carried state, -cs 1), unshuffled only, set before the first batch: the S rows of
 * a step are S parallel streams, and each stream reads a contiguous stretch of the block: with K = steps in the
 * block, stream j (global position j of the step: micro-batch m, rank k, row b is j = m*W*B + k*B + b) reads rows
 * j*K, j*K + 1, ..., j*K + K-1 of the block at the block's steps 0..K-1, so row b of a rank's micro-batch m
 * continues, step after step, where it stopped. A stream ends with its block (a block is at most
 * DATALOADER_BLOCK_TOKENS tokens, so a stream at most that / S); stream_start marks the first step of each block,
 * where the caller restarts its carried states. The rows used per block and epoch are those of file order. */
void dataloader_set_streams(DataLoader *loader);
/* fills inputs/targets with the next micro-batch; after the last one of an epoch it starts the next epoch */
void dataloader_next_batch(DataLoader *loader);
/* back to the first micro-batch of epoch 0 */
void dataloader_reset(DataLoader *loader);
/* micro-batches in one epoch (the same on every rank, a multiple of micro_per_step) */
size_t dataloader_num_batches(const DataLoader *loader);
/* The position state: epoch, shard position and rows consumed in the shard (the same on every rank), plus
 * the configuration the row sequence depends on: T, step rows S, row order (shuffle, or streams), seed, shard count, total tokens
 * and block rows; not world, B or micro_per_step. Any rank's state restores any rank of any loader with the
 * same configuration, whatever its world x B x micro_per_step split of S, as long as the position lies on
 * that loader's micro-batch grid (a multiple of its world*B rows): checkpoints store a state taken at an
 * optimizer step boundary, which is on every split's grid. */
size_t dataloader_state_size(const DataLoader *loader);
void dataloader_get_state(const DataLoader *loader, void *buf);
/* exits with a message naming the field that differs (and what to keep equal) if buf is not a state of a
 * loader with this configuration and these shards, or if its position is off this loader's grid */
void dataloader_set_state(DataLoader *loader, const void *buf, size_t n);
void dataloader_free(DataLoader *loader);

#ifdef __cplusplus
}
#endif
#endif
