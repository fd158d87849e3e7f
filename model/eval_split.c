/*
 * Full-split evaluation windows (see eval_split.h): the shard loader read one (input, target) pair
 * at a time, grouped into windows of T pairs that stop at shard boundaries.
 */
#include "eval_split.h"
#include "utils.h"

#include <string.h>

/* the loader reads this many tokens per block; pairs are read sequentially, so small blocks suffice */
#define EVAL_BLOCK_TOKENS ((size_t)1 << 20)

void eval_split_init(EvalSplit *split, const char *pattern, int T, int vocab_size) {
    memset(split, 0, sizeof(*split));
    if (T < 1) {
        fprintf(stderr, "error: %s: evaluation window length T=%d must be positive\n", pattern, T);
        exit(1);
    }
    dataloader_init_blocks(&split->pairs, pattern, 1, 1, 0, 1, 0, 0, vocab_size, EVAL_BLOCK_TOKENS);
    split->T = T;
    split->total_targets = dataloader_num_batches(&split->pairs);
    split->inputs = (int *)mallocCheck(sizeof(int) * T);
    split->targets = (int *)mallocCheck(sizeof(int) * T);
    eval_split_reset(split);
}

void eval_split_reset(EvalSplit *split) {
    dataloader_reset(&split->pairs);
    split->consumed = 0;
    split->length = 0;
    split->starts_stream = 0;
}

/* 1 when the loader has handed out the last pair of its current shard */
static int at_shard_end(const DataLoader *loader) {
    const Shard *shard = &loader->shards[loader->shard_order[loader->shard_pos]];
    return loader->batch_in_shard == shard->num_batches;
}

int eval_split_next(EvalSplit *split) {
    split->length = 0;
    if (split->consumed == split->total_targets) return 0;
    DataLoader *loader = &split->pairs;
    /* before the first pair of a split, or right after a shard's last pair, a new stream begins */
    split->starts_stream = split->consumed == 0 || at_shard_end(loader);
    while (split->length < split->T) {
        dataloader_next_batch(loader);
        split->inputs[split->length] = loader->inputs[0];
        split->targets[split->length] = loader->targets[0];
        split->length++;
        split->consumed++;
        if (at_shard_end(loader)) break;
    }
    return 1;
}

void eval_split_free(EvalSplit *split) {
    dataloader_free(&split->pairs);
    free(split->inputs);
    free(split->targets);
    memset(split, 0, sizeof(*split));
}

void eval_result_report(const char *split_name, int step, EvalResult result, int carry, Logger *logger) {
    double mean = result.tokens > 0 ? result.loss_sum / (double)result.tokens : 0.0;
    printf("eval %s loss %.9f tokens %zu carry %d\n", split_name, mean, result.tokens, carry);
    if (logger->file) {
        fprintf(logger->file, "s:%d eval:%s loss:%.9f tokens:%zu carry:%d\n", step, split_name, mean, result.tokens,
                carry);
        fflush(logger->file);
    }
}
