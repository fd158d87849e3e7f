/*
 * Zero-shot scoring of a downstream task (data/task.h), shared by both trainers.
 *
 * Each (item, ending) is one row: the context followed by the ending, run from a zero state. Its
 * score is the ending's log-likelihood given the context, ll = sum over the ending's tokens of
 * log p(token | everything before it), and it is greedy when every one of those tokens is the
 * model's top choice (no logit above it). A sequence longer than the window keeps its last tokens.
 *   multiple choice: acc       the right ending has the largest ll (ties: the first wins);
 *                    acc_mean  the largest ll / ending length (the per-token mean);
 *   last word:       acc       the word is greedy; ppl = exp(mean over items of -ll).
 * Rows are sorted by length and packed into forwards of several windows, each forward as wide as its
 * longest row, within the training batch's B x T tokens and B x ceil(T / chunk) SSD chunks (what
 * every compute's buffers hold). Over several ranks the forwards are shared round robin and each row's score is
 * computed by one rank, then summed over ranks, so every rank gets exactly the one-rank figures.
 *
 * Result lines: stdout "task <name> | acc .. | acc_mean .. | <n> items | .. s" (last word: ppl in place
 * of acc_mean), main.log "s:<step> task:<name> acc:<..> acc_mean:<..> items:<n>" (or ppl:<..>).
 */
#ifndef SSD_TRAIN_TASK_EVAL_H
#define SSD_TRAIN_TASK_EVAL_H

#include "data/task.h"
#include "train/comm.h"
#include "train/eval_split.h"
#include "train/logger.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int T;              /* the longest window: a longer row keeps its last T + 1 tokens */
    long long tokens;   /* a forward's B x T */
    int max_rows;       /* windows per forward, at most B x ceil(T / chunk): the SSD workspace's chunks */
} TaskWindow;

typedef struct {
    int kind, items;
    double acc, acc_mean, ppl;  /* acc_mean: multiple choice only; ppl: last word only */
    double *row_ll;             /* [num_rows] each row's log-likelihood */
    unsigned char *row_greedy;  /* [num_rows] */
    double seconds;
} TaskResult;

/* The windows for a task on a compute whose buffers hold B x T tokens, its SSD chunk chunk_size.
 * Non-zero with a message in err when an ending is longer than T. */
int task_window_choose(const TaskSet *task, int B, int T, int chunk_size, TaskWindow *window, char *err,
                       size_t errlen);
TaskResult task_evaluate(const TaskSet *task, const TaskWindow *window, const EvalForward *forward, Comm *comm);
/* Prints the stdout line and, when the logger has a file, the main.log line. */
void task_result_report(const TaskSet *task, int step, const TaskResult *result, Logger *logger);
/* Writes one line per row, "item choice label ll length greedy" (a header line first), atomically. */
void task_result_write_rows(const TaskSet *task, const TaskResult *result, const char *path);
void task_result_free(TaskResult *result);

#ifdef __cplusplus
}
#endif
#endif
