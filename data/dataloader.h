/*
 * Token shard loader: yields batches of B rows x T tokens (inputs, and targets = inputs shifted by one)
 * from shard files written by scripts/prepro.py.
 *
 * Shard formats (llm.c's layout): a header of 256 int32 (magic 20240520, version, ntok at [2]) then ntok
 * tokens, uint16 for version 1 and uint32 for version 2. A name ending in ".zst" holds the same bytes
 * zstd-compressed; it is read with streaming decompression and gives the same batches as the raw file.
 *
 * Samples: a shard of ntok tokens holds R = (ntok - 1) / T rows; row r is the window of T + 1 tokens
 * starting at r * T (consecutive rows share one token). The rows are taken in blocks of a bounded number
 * of tokens (the only part of a shard held in memory); a block is a whole number of global batches of
 * world * B rows, and global batch g of a block gives rank k its rows [g*world*B + k*B, ... + B). Unshuffled,
 * rows are in file order, so each rank's batch is one contiguous span of B*T+1 tokens (llm.c's layout);
 * shuffled, the shard order is permuted every epoch and the rows of each block are permuted, both from
 * the seed. Raw and zstd shards share this code path, so they give identical batches in both modes.
 * Rows that do not fill a last global batch of a shard (fewer than world*B) are skipped in that epoch.
 * Every rank sees the same shards and the same number of batches, and the ranks' rows are disjoint and
 * together cover every used row.
 *
 * dataloader_init validates every shard completely (header, size, zstd integrity, every token < vocab_size)
 * and exits with a message naming the file on any problem.
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
#define SHARD_HEADER_INTS 256
/* default block size in tokens (rounded to whole global batches, at least one) */
#define DATALOADER_BLOCK_TOKENS ((size_t)1 << 24)

typedef struct {
    char *path;
    int is_zst;
    int version;          /* 1: uint16 tokens, 2: uint32 tokens */
    size_t token_bytes;
    size_t ntok;
    size_t num_rows;      /* (ntok - 1) / T */
    size_t num_batches;   /* global batches of world*B rows */
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
} ShardReader;

typedef struct {
    /* configuration */
    size_t B, T;
    int rank, world;
    int shuffle;
    uint64_t seed;
    int vocab_size;
    size_t block_rows;          /* rows per block: a multiple of world*B */
    size_t batches_per_block;
    Shard *shards;              /* in sorted glob order */
    int num_shards;
    /* position: the next batch is global batch batch_in_shard of shard_order[shard_pos] in epoch */
    uint64_t epoch;
    int shard_pos;
    size_t batch_in_shard;
    int *shard_order;
    /* the open shard and its loaded block */
    ShardReader reader;
    int reader_shard;           /* index into shards of the open reader, -1 if none */
    long loaded_block;          /* block index held in block_tokens, -1 if none */
    unsigned char *block_tokens;/* (block_rows*T + 1) tokens of the shard's token size */
    size_t block_num_rows;
    size_t *row_order;          /* row order of the loaded block in epoch rows_epoch (valid if rows_ordered) */
    int rows_ordered;
    uint64_t rows_epoch;
    /* outputs */
    int *inputs;                /* B*T */
    int *targets;               /* B*T */
} DataLoader;

void dataloader_init(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                     int shuffle, uint64_t seed, int vocab_size);
/* the same with a chosen block size in tokens (tests use small blocks to cross block boundaries) */
void dataloader_init_blocks(DataLoader *loader, const char *pattern, size_t B, size_t T, int rank, int world,
                            int shuffle, uint64_t seed, int vocab_size, size_t block_tokens);
/* fills inputs/targets with the next batch; after the last batch of an epoch it starts the next epoch */
void dataloader_next_batch(DataLoader *loader);
/* back to the first batch of epoch 0 */
void dataloader_reset(DataLoader *loader);
/* batches in one epoch (the same on every rank) */
size_t dataloader_num_batches(const DataLoader *loader);
/* the position state (epoch, shard, batch, plus the configuration it belongs to); it is the same on
 * every rank, so rank 0's state restores any rank */
size_t dataloader_state_size(const DataLoader *loader);
void dataloader_get_state(const DataLoader *loader, void *buf);
/* exits with a message if buf is not a state of a loader with this configuration and these shards */
void dataloader_set_state(DataLoader *loader, const void *buf, size_t n);
void dataloader_free(DataLoader *loader);

#ifdef __cplusplus
}
#endif
#endif
