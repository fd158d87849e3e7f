/*
 * Downstream task scoring (data/task.h, train/task_eval.h), in double:
 *  - each row's log-likelihood and greedy flag from task_evaluate, rows packed by length many to a
 *    forward, equal those of a separate forward over the row's own sequence (its last T + 1 tokens
 *    when it is longer than the window), for both kinds, scalar and diagonal A, several windows;
 *  - accuracy and perplexity follow from the rows by their definitions;
 *  - corrupt and hostile task files are refused with a message, nothing loaded.
 */
#include "common/fileio.h"
#include "common/rng.h"
#include "common/utils.h"
#include "data/task.h"
#include "train/cpu_evaluator.h"
#include "train/task_eval.h"
#include "tests/model_fixtures.h"
#include "tests/test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    uint32_t *words;
    size_t n, cap;
} Words;

static void words_push(Words *w, uint32_t x) {
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 256;
        w->words = (uint32_t *)realloc(w->words, w->cap * sizeof(uint32_t));
    }
    w->words[w->n++] = x;
}

/* A task file as scripts/prepare_task.py writes it; header fields may be overridden for the tests. */
static void write_task_file(const char *path, int kind, int items, int vocab, const Words *body, int corrupt_crc) {
    uint8_t header[72] = {0};
    memcpy(header, "SSDTASK\0", 8);
    le_put_u32(header + 8, 1);
    le_put_u32(header + 12, (uint32_t)kind);
    le_put_u32(header + 16, (uint32_t)items);
    le_put_u32(header + 20, (uint32_t)vocab);
    le_put_u64(header + 24, body->n * 4);
    memcpy(header + 32, "test", 4);
    le_put_u32(header + 64, checkpoint_crc32(0, body->words, body->n * 4) ^ (corrupt_crc ? 1u : 0u));
    le_put_u32(header + 68, checkpoint_crc32(0, header, 68));
    FILE *fp = fopenCheck(path, "wb");
    fwriteCheck(header, 1, sizeof(header), fp);
    fwriteCheck(body->words, 4, body->n, fp);
    fcloseCheck(fp);
}

/* Random items: contexts of 1..max_context tokens, endings of 1..max_ending. */
static Words random_body(int kind, int items, int vocab, int max_context, int max_ending, uint64_t *rng) {
    Words w = {NULL, 0, 0};
    for (int i = 0; i < items; i++) {
        int choices = kind == TASK_LAST_WORD ? 1 : 2 + (int)(rng_next(rng) % 3);
        words_push(&w, (uint32_t)(rng_next(rng) % choices));
        words_push(&w, (uint32_t)choices);
        int context_len = 1 + (int)(rng_next(rng) % max_context);
        words_push(&w, (uint32_t)context_len);
        for (int k = 0; k < context_len; k++) words_push(&w, (uint32_t)(rng_next(rng) % vocab));
        for (int c = 0; c < choices; c++) {
            int len = 1 + (int)(rng_next(rng) % max_ending);
            words_push(&w, (uint32_t)len);
            for (int k = 0; k < len; k++) words_push(&w, (uint32_t)(rng_next(rng) % vocab));
        }
    }
    return w;
}

/* Every other item's endings become the model's greedy continuation of its context, token by token,
 * so that greedy rows occur (a random model's rarely are). */
static void make_greedy_endings(Mamba *model, Words *body, int items) {
    int V = model->config.vocab_size, Vp = model->config.padded_vocab;
    size_t at = 0;
    int *seq = (int *)mallocCheck(sizeof(int) * body->n);
    for (int i = 0; i < items; i++) {
        int choices = (int)body->words[at + 1], context_len = (int)body->words[at + 2];
        uint32_t *context = body->words + at + 3;
        at += 3 + context_len;
        for (int c = 0; c < choices; c++) {
            int len = (int)body->words[at];
            uint32_t *ending = body->words + at + 1;
            for (int k = 0; i % 2 == 0 && k < len; k++) {
                for (int j = 0; j < context_len + k; j++) seq[j] = (int)(j < context_len ? context[j] : ending[j - context_len]);
                mamba_forward(model, seq, seq, 1, context_len + k);
                const real *logits = model->acts.logits + (size_t)(context_len + k - 1) * Vp;
                int best = 0;
                for (int v = 1; v < V; v++)
                    if (logits[v] > logits[best]) best = v;
                ending[k] = (uint32_t)best;
            }
            at += 1 + len;
        }
    }
    free(seq);
}

/* The row's log-likelihood and greedy flag from one forward over its own (last T + 1) tokens. */
static void reference_row(Mamba *model, const TaskItem *item, int choice, int T, double *ll, int *greedy) {
    int n = item->context_len + item->ending_lens[choice];
    int *seq = (int *)mallocCheck(sizeof(int) * n);
    for (int k = 0; k < n; k++)
        seq[k] = (int)(k < item->context_len ? item->context[k] : item->endings[choice][k - item->context_len]);
    int start = n - 1 > T ? n - 1 - T : 0, len = n - 1 - start;
    mamba_forward(model, seq + start, seq + start + 1, 1, len);
    int V = model->config.vocab_size, Vp = model->config.padded_vocab;
    *ll = 0.0;
    *greedy = 1;
    for (int j = item->context_len - 1 - start; j < len; j++) {
        *ll -= model->acts.losses[j];
        const real *logits = model->acts.logits + (size_t)j * Vp;
        for (int v = 0; v < V; v++)
            if (logits[v] > logits[seq[start + j + 1]]) *greedy = 0;
    }
    free(seq);
}

static void check_scores(const char *label, int diagonal, int kind, int B, int T) {
    ModelConfig c = fixture_config(diagonal);
    float *params = fixture_params(&c, 41 + diagonal);
    Mamba model;
    mamba_build(&model, &c, params);
    uint64_t rng = rng_seed(7 + kind);
    Words body = random_body(kind, 23, c.vocab_size, 14, 6, &rng);
    make_greedy_endings(&model, &body, 23);
    char path[] = "/tmp/ssd_task_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    write_task_file(path, kind, 23, c.vocab_size, &body, 0);
    TaskSet task;
    task_set_load(&task, path);
    TaskWindow window;
    char err[256];
    int refused = task_window_choose(&task, B, T, c.chunk_size, &window, err, sizeof(err));
    MambaEvaluator evaluator;
    EvalForward forward = mamba_evaluator_init(&evaluator, &model);
    TaskResult result = task_evaluate(&task, &window, &forward, NULL);
    double worst = 0.0;
    int greedy_mismatch = 0, greedy_rows = 0, correct = 0, correct_mean = 0, r = 0;
    double nll = 0.0;
    for (int i = 0; i < task.num_items; i++) {
        const TaskItem *item = &task.items[i];
        int best = 0, best_mean = 0;
        for (int k = 0; k < item->num_choices; k++, r++) {
            double ll;
            int greedy;
            reference_row(&model, item, k, T, &ll, &greedy);
            double diff = fabs(ll - result.row_ll[r]);
            if (!(diff <= worst)) worst = isnan(diff) ? INFINITY : diff > worst ? diff : worst;
            greedy_mismatch += greedy != result.row_greedy[r];
            greedy_rows += greedy;
            if (result.row_ll[r] > result.row_ll[r - k + best]) best = k;
            if (result.row_ll[r] / item->ending_lens[k] >
                result.row_ll[r - k + best_mean] / item->ending_lens[best_mean])
                best_mean = k;
        }
        if (kind == TASK_LAST_WORD) {
            correct += result.row_greedy[r - 1];
            nll -= result.row_ll[r - 1];
        } else {
            correct += best == item->label;
            correct_mean += best_mean == item->label;
        }
    }
    double acc = (double)correct / task.num_items;
    int summary_ok = fabs(acc - result.acc) < 1e-12 &&
                     (kind == TASK_LAST_WORD ? fabs(exp(nll / task.num_items) - result.ppl) <= 1e-9 * result.ppl
                                             : fabs((double)correct_mean / task.num_items - result.acc_mean) < 1e-12);
    test_report(!refused && worst <= 1e-10 && greedy_mismatch == 0 && greedy_rows > 0 && summary_ok, "task_scores",
                "%s: %d rows, up to %d per forward (B=%d T=%d): max |ll - own forward| %.2e (<= 1e-10), "
                "%d greedy rows, %d mismatches, acc %.3f, %s %.4f", label, task.num_rows, window.max_rows, B, T,
                worst, greedy_rows, greedy_mismatch, result.acc, kind == TASK_LAST_WORD ? "ppl" : "acc_mean",
                kind == TASK_LAST_WORD ? result.ppl : result.acc_mean);
    task_result_free(&result);
    mamba_evaluator_free(&evaluator);
    task_set_free(&task);
    mamba_free(&model);
    free(params);
    free(body.words);
    unlink(path);
}

/* Each corruption of a valid file is refused with a message naming the file. */
static void check_refusals(void) {
    uint64_t rng = rng_seed(3);
    Words good = random_body(TASK_MULTIPLE_CHOICE, 4, 37, 5, 3, &rng);
    char path[] = "/tmp/ssd_task_bad_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    struct {
        const char *name;
        int items, vocab, corrupt_crc;
        int word_index;
        uint32_t word_value; /* replaces body word word_index (-1: none) */
        size_t truncate;     /* words dropped from the end */
    } cases[] = {
        {"body checksum", 4, 37, 1, -1, 0, 0},
        {"token outside the vocabulary", 4, 37, 0, 3, 37, 0},
        {"label not below the choices", 4, 37, 0, 0, 9, 0},
        {"no choices", 4, 37, 0, 1, 0, 0},
        {"empty context", 4, 37, 0, 2, 0, 0},
        {"more items than the body holds", 5, 37, 0, -1, 0, 0},
        {"truncated body", 4, 37, 0, -1, 0, 2},
        {"vocab_size 0", 4, 0, 0, -1, 0, 0},
    };
    int ok = 1;
    char failures[512] = "";
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        Words w = {NULL, 0, 0};
        for (size_t i = 0; i < good.n - cases[k].truncate; i++) words_push(&w, good.words[i]);
        if (cases[k].word_index >= 0) w.words[cases[k].word_index] = cases[k].word_value;
        write_task_file(path, TASK_MULTIPLE_CHOICE, cases[k].items, cases[k].vocab, &w, cases[k].corrupt_crc);
        TaskSet task;
        char err[512] = "";
        int refused = task_set_try_load(&task, path, err, sizeof(err)) != 0;
        int named = strstr(err, path) != NULL;
        if (!refused || !named) {
            ok = 0;
            snprintf(failures + strlen(failures), sizeof(failures) - strlen(failures), " [%s: %s]", cases[k].name,
                     refused ? "message does not name the file" : "loaded");
        }
        if (!refused) task_set_free(&task);
        free(w.words);
    }
    /* a directory is not a task file; the header's magic is checked */
    TaskSet task;
    char err[512] = "";
    int dir_refused = task_set_try_load(&task, "/tmp", err, sizeof(err)) != 0 && strstr(err, "not a regular file");
    FILE *fp = fopenCheck(path, "wb");
    fwriteCheck("SSDMODEL and the rest of something else, long enough for a header...........", 1, 78, fp);
    fcloseCheck(fp);
    int magic_refused = task_set_try_load(&task, path, err, sizeof(err)) != 0 && strstr(err, "not a task file");
    test_report(ok && dir_refused && magic_refused, "task_file_refusals",
                "8 corrupt bodies and headers, a directory and a wrong magic refused with the file named%s",
                ok ? "" : failures);
    free(good.words);
    unlink(path);
}

int main(void) {
    check_scores("multiple choice, scalar", 0, TASK_MULTIPLE_CHOICE, 4, 32);
    check_scores("multiple choice, diagonal", 1, TASK_MULTIPLE_CHOICE, 2, 16);
    check_scores("multiple choice, truncated to T=7", 0, TASK_MULTIPLE_CHOICE, 3, 7);
    check_scores("last word, scalar", 0, TASK_LAST_WORD, 4, 32);
    check_scores("last word, diagonal, truncated to T=9", 1, TASK_LAST_WORD, 1, 9);
    check_refusals();
    return test_exit_code();
}
