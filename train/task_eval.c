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
    window->T = T;
    window->tokens = (long long)B * T;
    window->max_rows = B * ((T + chunk_size - 1) / chunk_size);
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
    int item, choice, len; /* len: the row's inputs, at most T */
} TaskRow;

static int compare_row_lengths(const void *a, const void *b) {
    const TaskRow *x = (const TaskRow *)a, *y = (const TaskRow *)b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    if (x->item != y->item) return x->item < y->item ? -1 : 1;
    return x->choice < y->choice ? -1 : x->choice > y->choice;
}

TaskResult task_evaluate(const TaskSet *task, const TaskWindow *window, const EvalForward *forward, Comm *comm) {
    double t0 = wall_seconds();
    int rank = comm ? comm->rank : 0, world = comm ? comm->world : 1;
    int num_rows = task->num_rows;
    TaskRow *rows = (TaskRow *)mallocCheck(sizeof(TaskRow) * num_rows);
    int *row_index = (int *)mallocCheck(sizeof(int) * task->num_items); /* an item's first row */
    int r = 0;
    for (int i = 0; i < task->num_items; i++) {
        row_index[i] = r;
        for (int c = 0; c < task->items[i].num_choices; c++) {
            int len = task->items[i].context_len + task->items[i].ending_lens[c] - 1;
            rows[r++] = (TaskRow){i, c, len < window->T ? len : window->T};
        }
    }
    /* rows of similar length share a forward, as wide as its longest row */
    qsort(rows, num_rows, sizeof(TaskRow), compare_row_lengths);
    /* [0, num_rows): ll, [num_rows, 2 num_rows): greedy as 0/1, summed over ranks in one collective */
    double *scores = (double *)callocCheck(2 * (size_t)num_rows, sizeof(double));
    int *inputs = (int *)mallocCheck(sizeof(int) * window->tokens);
    int *targets = (int *)mallocCheck(sizeof(int) * window->tokens);
    int *first = (int *)mallocCheck(sizeof(int) * window->max_rows);
    double *losses = (double *)mallocCheck(sizeof(double) * window->tokens);
    unsigned char *hits = (unsigned char *)mallocCheck(window->tokens);
    for (int begin = 0, batch = 0; begin < num_rows; batch++) {
        int count = 1;
        while (begin + count < num_rows && count < window->max_rows &&
               (long long)(count + 1) * rows[begin + count].len <= window->tokens)
            count++;
        int len = rows[begin + count - 1].len;
        if (batch % world == rank) {
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
                int at = row_index[row->item] + row->choice;
                scores[at] = ll;
                scores[num_rows + at] = greedy;
            }
        }
        begin += count;
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
    free(row_index);
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
