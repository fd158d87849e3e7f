/*
 * Full-split evaluation windows, shared by both trainers: every target of a split exactly once.
 *
 * The split is the shards matching a glob, in sorted order (the loader's unshuffled order). A shard
 * of n tokens has n - 1 targets: token i+1 predicted from tokens 0..i (its first token is context
 * only). Each shard is cut into consecutive windows of T (input, target) pairs, inputs
 * tokens[kT .. kT+T) and targets shifted by one; the shard's last window is shorter when T does not
 * divide n - 1. Windows never cross a shard boundary, and the first window of a shard is flagged so
 * that an evaluation that carries the recurrent state from window to window starts that shard from
 * a zero state (each shard is an independent token stream).
 *
 * Two conventions, both covering each target once:
 *   carry 0: every window starts from a zero state (independent windows; they may be batched);
 *   carry 1: one stream, the state after window k is the initial state of window k+1, which equals
 *            one forward pass over the whole shard.
 *
 * With loss masks (data/dataloader.h) only the counted targets enter the loss and the target count.
 *
 * Result lines (stdout, parsed by scripts/compare.py; ppl = exp(mean loss), per target):
 *   eval <split> loss <mean nats per target> tokens <targets> carry <0|1> ppl <perplexity>
 * and in main.log:
 *   s:<step> eval:<split> loss:<mean> tokens:<targets> carry:<0|1>
 * While it runs, an evaluation with progress on prints every few seconds (rank 0's stdout):
 *   evaluating <split>: <percent>% (<done>/<targets> targets) | <seconds> s | about <seconds> s left
 */
#ifndef SSD_TRAIN_EVAL_SPLIT_H
#define SSD_TRAIN_EVAL_SPLIT_H

#include <stddef.h>

#include "train/comm.h"
#include "data/dataloader.h"
#include "train/logger.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    DataLoader pairs;      /* B = 1, T = 1, unshuffled: batch i is pair i of the current shard */
    int T;                 /* window length */
    size_t total_targets;  /* sum over shards of ntok - 1 */
    size_t consumed;       /* targets handed out since the last reset */
    int *inputs, *targets; /* the current window [T] */
    int length;            /* of the current window: T, or less at the end of a shard */
    int starts_stream;     /* 1 if the current window is the first of its shard */
    const char *label;     /* name in the progress lines ("val", "test"); NULL: no progress lines */
    double progress_every; /* seconds between progress lines */
} EvalSplit;

typedef struct {
    double loss_sum;  /* summed cross-entropy in nats */
    size_t tokens;    /* number of counted targets (all, unless loss masks leave some out) */
} EvalResult;

/* Validates every shard (as the loader does) and exits with a message naming the file on error. */
void eval_split_init(EvalSplit *split, const char *pattern, int T, int vocab_size);
/* Fills the next window; returns 0 (and leaves the window empty) once every target was handed out. */
int eval_split_next(EvalSplit *split);
/* Progress lines during eval_split_evaluate, one every `seconds` (0: after every forward). */
void eval_split_show_progress(EvalSplit *split, const char *label, double seconds);
void eval_split_reset(EvalSplit *split);
void eval_split_free(EvalSplit *split);

/* The forward passes an evaluation needs, from whichever compute runs them. The first two return
 * the cross-entropy summed over every counted target of the batch (a target -1 adds 0), in double. */
typedef struct {
    void *self;
    /* B independent windows of T tokens, each from a zero state */
    double (*loss_sum)(void *self, const int *inputs, const int *targets, int B, int T);
    /* one window of T tokens continuing the carried state (zeroed first when reset), which it updates */
    double (*loss_sum_carry)(void *self, const int *inputs, const int *targets, int T, int reset);
    /* B independent windows of T tokens: each position's cross-entropy (losses[B * T]) and whether its
     * target is a greedy choice, no logit above the target's (hits[B * T], 0 or 1); for tasks */
    void (*token_scores)(void *self, const int *inputs, const int *targets, int B, int T, double *losses,
                         unsigned char *hits);
} EvalForward;

/* Every target of the split once (the whole split, from its start). carry 0: full windows batched
 * B at a time, a shard's short last window alone; carry 1: one stream per shard, B = 1.
 * Over several ranks (comm, NULL for one process) each rank runs a share of the forwards (batches
 * round robin; with carry, whole shards round robin) and the sums are combined so that every rank
 * returns exactly the one-rank result: per-forward sums, added in the one-rank order. */
EvalResult eval_split_evaluate(EvalSplit *split, int B, int carry, const EvalForward *forward, Comm *comm);

/* Prints the stdout line and, when the logger has a file, the main.log line (formats above). */
void eval_result_report(const char *split_name, int step, EvalResult result, int carry, Logger *logger);

#ifdef __cplusplus
}
#endif
#endif
