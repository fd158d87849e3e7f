/*
 * Task scoring (see task_eval.h): rows packed into windows, log-likelihoods summed per ending.
 */
#include "train/task_eval.h"
#include "common/fileio.h"
#include "common/utils.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int task_window_choose(const TaskSet *task, int B, int T, int chunk_size, TaskWindow *window, char *err,
                       size_t errlen) {
    for (int i = 0; i < task->num_items; i++) {
        for (int c = 0; c < task->items[i].num_choices; c++) {
            if (task->items[i].ending_lens[c] > T) {
                snprintf(err, errlen, "task %s: item %d: ending %d has %d tokens, more than the window of T=%d (-t)",
                         task->name, i, c, task->items[i].ending_lens[c], T);
                return 1;
            }
        }
    }
    int need = task->max_len - 1 < T ? task->max_len - 1 : T; /* inputs of the longest row */
    int len = (need + chunk_size - 1) / chunk_size * chunk_size;
    if (len > T) len = T;
    window->len = len;
    window->rows = (int)(((long long)B * T) / len);
    return 0;
}

/* The row's window: inputs and targets of its last len + 1 tokens, zero after its end. Returns the
 * position (in the window) that predicts the ending's first token. */
static int task_row_fill(const TaskItem *item, int choice, int len, int *inputs, int *targets) {
    int context_len = item->context_len, ending_len = item->ending_lens[choice];
    int n = context_len + ending_len;
    int start = n - 1 > len ? n - 1 - len : 0;
    memset(inputs, 0, sizeof(int) * len);
    memset(targets, 0, sizeof(int) * len);
    for (int j = 0; start + j + 1 < n; j++) {
        int k = start + j;
        inputs[j] = (int)(k < context_len ? item->context[k] : item->endings[choice][k - context_len]);
        k++;
        targets[j] = (int)(k < context_len ? item->context[k] : item->endings[choice][k - context_len]);
    }
    return context_len - 1 - start;
}

typedef struct {
    int item, choice;
} TaskRow;

TaskResult task_evaluate(const TaskSet *task, const TaskWindow *window, const EvalForward *forward, Comm *comm) {
    double t0 = wall_seconds();
    int rank = comm ? comm->rank : 0, world = comm ? comm->world : 1;
    int num_rows = task->num_rows, len = window->len, per_forward = window->rows;
    TaskRow *rows = (TaskRow *)mallocCheck(sizeof(TaskRow) * num_rows);
    int r = 0;
    for (int i = 0; i < task->num_items; i++)
        for (int c = 0; c < task->items[i].num_choices; c++) rows[r++] = (TaskRow){i, c};
    /* [0, num_rows): ll, [num_rows, 2 num_rows): greedy as 0/1, summed over ranks in one collective */
    double *scores = (double *)callocCheck(2 * (size_t)num_rows, sizeof(double));
    int *inputs = (int *)mallocCheck(sizeof(int) * per_forward * len);
    int *targets = (int *)mallocCheck(sizeof(int) * per_forward * len);
    int *first = (int *)mallocCheck(sizeof(int) * per_forward);
    double *losses = (double *)mallocCheck(sizeof(double) * per_forward * len);
    unsigned char *hits = (unsigned char *)mallocCheck((size_t)per_forward * len);
    for (int begin = 0, batch = 0; begin < num_rows; begin += per_forward, batch++) {
        if (batch % world != rank) continue;
        int count = num_rows - begin < per_forward ? num_rows - begin : per_forward;
        for (int b = 0; b < count; b++) {
            const TaskRow *row = &rows[begin + b];
            first[b] = task_row_fill(&task->items[row->item], row->choice, len, inputs + (size_t)b * len,
                                     targets + (size_t)b * len);
        }
        forward->token_scores(forward->self, inputs, targets, count, len, losses, hits);
        for (int b = 0; b < count; b++) {
            const TaskRow *row = &rows[begin + b];
            int ending_len = task->items[row->item].ending_lens[row->choice];
            double ll = 0.0;
            int greedy = 1;
            for (int j = first[b]; j < first[b] + ending_len; j++) {
                ll -= losses[(size_t)b * len + j];
                greedy &= hits[(size_t)b * len + j];
            }
            scores[begin + b] = ll;
            scores[num_rows + begin + b] = greedy;
        }
    }
    if (world > 1) comm->ops->sum_doubles(comm, scores, 2 * num_rows);

    TaskResult result;
    memset(&result, 0, sizeof(result));
    result.kind = task->kind;
    result.items = task->num_items;
    result.row_ll = (double *)mallocCheck(sizeof(double) * num_rows);
    result.row_greedy = (unsigned char *)mallocCheck(num_rows);
    for (int i = 0; i < num_rows; i++) {
        result.row_ll[i] = scores[i];
        result.row_greedy[i] = scores[num_rows + i] > 0.5;
    }
    int correct = 0, correct_mean = 0;
    double nll_sum = 0.0;
    r = 0;
    for (int i = 0; i < task->num_items; i++) {
        const TaskItem *item = &task->items[i];
        if (task->kind == TASK_LAST_WORD) {
            correct += result.row_greedy[r];
            nll_sum -= result.row_ll[r];
        } else {
            int best = 0, best_mean = 0;
            for (int c = 1; c < item->num_choices; c++) {
                if (result.row_ll[r + c] > result.row_ll[r + best]) best = c;
                if (result.row_ll[r + c] / item->ending_lens[c] >
                    result.row_ll[r + best_mean] / item->ending_lens[best_mean])
                    best_mean = c;
            }
            correct += best == item->label;
            correct_mean += best_mean == item->label;
        }
        r += item->num_choices;
    }
    result.acc = (double)correct / task->num_items;
    result.acc_mean = task->kind == TASK_MULTIPLE_CHOICE ? (double)correct_mean / task->num_items : NAN;
    result.ppl = task->kind == TASK_LAST_WORD ? exp(nll_sum / task->num_items) : NAN;
    result.seconds = wall_seconds() - t0;
    free(rows);
    free(scores);
    free(inputs);
    free(targets);
    free(first);
    free(losses);
    free(hits);
    return result;
}

void task_result_report(const TaskSet *task, int step, const TaskResult *result, Logger *logger) {
    int choice = task->kind == TASK_MULTIPLE_CHOICE;
    const char *second = choice ? "acc_mean" : "ppl";
    double value = choice ? result->acc_mean : result->ppl;
    printf("task %s | acc %.4f | %s %.4f | %d items | %.2f s\n", task->name, result->acc, second, value,
           result->items, result->seconds);
    if (logger->file) {
        fprintf(logger->file, "s:%d task:%s acc:%.6f %s:%.6f items:%d\n", step, task->name, result->acc, second, value,
                result->items);
        fflush(logger->file);
    }
}

void task_result_write_rows(const TaskSet *task, const TaskResult *result, const char *path) {
    AtomicFile f;
    atomic_file_open(&f, path);
    char line[256];
    int n = snprintf(line, sizeof(line), "item\tchoice\tlabel\tll\tlength\tgreedy\n");
    atomic_file_write(&f, line, (size_t)n);
    int r = 0;
    for (int i = 0; i < task->num_items; i++) {
        const TaskItem *item = &task->items[i];
        for (int c = 0; c < item->num_choices; c++, r++) {
            n = snprintf(line, sizeof(line), "%d\t%d\t%d\t%.9g\t%d\t%d\n", i, c, item->label, result->row_ll[r],
                         item->ending_lens[c], result->row_greedy[r]);
            atomic_file_write(&f, line, (size_t)n);
        }
    }
    atomic_file_commit(&f);
}

void task_result_free(TaskResult *result) {
    free(result->row_ll);
    free(result->row_greedy);
    memset(result, 0, sizeof(*result));
}
