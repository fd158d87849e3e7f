/*
 * Full-split evaluation windows (see eval_split.h): the shard loader read one (input, target) pair
 * at a time, grouped into windows of T pairs that stop at shard boundaries.
 */
#include "train/eval_split.h"
#include "common/utils.h"

#include <math.h>
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

/* Sums of the forwards in split order: entry u is forward u's (loss sum, targets), zero on the ranks
 * that did not run it, so summing over ranks and then over u in order repeats the one-rank sum. */
typedef struct {
    double *sums;  /* [2 * count]: loss sum, targets */
    size_t count, capacity;
} ForwardSums;

static void forward_sums_add(ForwardSums *f, int mine, double loss_sum, double targets) {
    if (f->count == f->capacity) {
        f->capacity = f->capacity ? 2 * f->capacity : 256;
        f->sums = (double *)realloc(f->sums, 2 * f->capacity * sizeof(double));
        if (!f->sums) {
            fprintf(stderr, "error: out of memory for %zu evaluation sums\n", f->capacity);
            exit(1);
        }
    }
    f->sums[2 * f->count] = mine ? loss_sum : 0.0;
    f->sums[2 * f->count + 1] = mine ? targets : 0.0;
    f->count++;
}

void eval_split_show_progress(EvalSplit *split, const char *label, double seconds) {
    split->label = label;
    split->progress_every = seconds;
}

typedef struct {
    double start, last;
} Progress;

/* A progress line when progress_every seconds passed since the last one (the targets handed out so far
 * measure the work done: every rank walks every window). */
static void progress_tick(const EvalSplit *split, Progress *p) {
    if (split->label == NULL || split->total_targets == 0) return;
    double now = wall_seconds();
    if (now - p->last < split->progress_every || split->consumed == split->total_targets) return;
    p->last = now;
    double done = (double)split->consumed / (double)split->total_targets, elapsed = now - p->start;
    printf("evaluating %s: %.0f%% (%zu/%zu targets) | %.1f s | about %.1f s left\n", split->label, 100.0 * done,
           split->consumed, split->total_targets, elapsed, done > 0 ? elapsed * (1.0 - done) / done : 0.0);
    fflush(stdout);
}

EvalResult eval_split_evaluate(EvalSplit *split, int B, int carry, const EvalForward *forward, Comm *comm) {
    int rank = comm ? comm->rank : 0, world = comm ? comm->world : 1;
    int T = split->T;
    ForwardSums sums = {NULL, 0, 0};
    Progress progress = {wall_seconds(), wall_seconds()};
    eval_split_reset(split);
    if (carry) {
        long stream = -1;
        while (eval_split_next(split)) {
            stream += split->starts_stream;
            int mine = stream % world == rank;
            double loss = mine ? forward->loss_sum_carry(forward->self, split->inputs, split->targets, split->length,
                                                         split->starts_stream)
                               : 0.0;
            forward_sums_add(&sums, mine, loss, (double)count_targets(split->targets, (size_t)split->length));
            progress_tick(split, &progress);
        }
    } else {
        /* full windows are gathered into batches of B rows; a shorter window (a shard's end) runs alone */
        int *inputs = (int *)mallocCheck(sizeof(int) * B * T);
        int *targets = (int *)mallocCheck(sizeof(int) * B * T);
        int rows = 0;
        for (;;) {
            int more = eval_split_next(split);
            int full = more && split->length == T;
            if (full) {
                memcpy(inputs + (size_t)rows * T, split->inputs, sizeof(int) * T);
                memcpy(targets + (size_t)rows * T, split->targets, sizeof(int) * T);
                rows++;
            }
            if (rows > 0 && (rows == B || !full)) {
                int mine = sums.count % world == (size_t)rank;
                double loss = mine ? forward->loss_sum(forward->self, inputs, targets, rows, T) : 0.0;
                forward_sums_add(&sums, mine, loss, (double)count_targets(targets, (size_t)rows * T));
                rows = 0;
                progress_tick(split, &progress);
            }
            if (more && !full) {
                int mine = sums.count % world == (size_t)rank;
                double loss = mine ? forward->loss_sum(forward->self, split->inputs, split->targets, 1, split->length) : 0.0;
                forward_sums_add(&sums, mine, loss, (double)count_targets(split->targets, (size_t)split->length));
            }
            if (!more) break;
        }
        free(inputs);
        free(targets);
    }
    if (world > 1) comm->ops->sum_doubles(comm, sums.sums, (int)(2 * sums.count));
    EvalResult result = {0, 0};
    for (size_t u = 0; u < sums.count; u++) {
        result.loss_sum += sums.sums[2 * u];
        result.tokens += (size_t)sums.sums[2 * u + 1];
    }
    free(sums.sums);
    return result;
}

void eval_result_report(const char *split_name, int step, EvalResult result, int carry, Logger *logger) {
    double mean = result.tokens > 0 ? result.loss_sum / (double)result.tokens : 0.0;
    printf("eval %s loss %.9f tokens %zu carry %d ppl %.2f\n", split_name, mean, result.tokens, carry, exp(mean));
    if (logger->file) {
        fprintf(logger->file, "s:%d eval:%s loss:%.9f tokens:%zu carry:%d\n", step, split_name, mean, result.tokens,
                carry);
        fflush(logger->file);
    }
}
