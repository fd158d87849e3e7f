/*
 * Task files (format in task.h): read whole, then every field, length and token checked before use.
 */
#include "data/task.h"
#include "common/fileio.h"
#include "common/utils.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK_MAGIC "SSDTASK\0"
#define TASK_VERSION 1
#define TASK_HEADER_BYTES 72
/* bounds a corrupt header's sizes before anything is allocated from them */
#define TASK_MAX_BODY_BYTES ((uint64_t)1 << 34)

static void task_name_from_path(char *name, size_t n, const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(name, n, "%s", base);
    char *dot = strrchr(name, '.');
    if (dot && dot != name) *dot = '\0';
}

/* 1 (and the token) if one of tokens[n] is not below vocab_size */
static int first_token_outside(const uint32_t *tokens, int n, int vocab_size, uint32_t *token) {
    for (int i = 0; i < n; i++) {
        if (tokens[i] >= (uint32_t)vocab_size) {
            *token = tokens[i];
            return 1;
        }
    }
    return 0;
}

/* Walks the body, checking every length and token, and fills task->items. */
static int task_parse_body(TaskSet *task, const uint32_t *words, size_t nwords, const char *path, char *err,
                           size_t errlen) {
    size_t at = 0;
    int rows = 0, max_len = 0;
    for (int i = 0; i < task->num_items; i++) {
        if (at + 3 > nwords) {
            snprintf(err, errlen, "%s: item %d: the body ends inside its header", path, i);
            return 1;
        }
        TaskItem item;
        memset(&item, 0, sizeof(item));
        uint32_t label = words[at], choices = words[at + 1], context_len = words[at + 2];
        at += 3;
        if (choices < 1 || choices > TASK_MAX_CHOICES || (task->kind == TASK_LAST_WORD && choices != 1)) {
            snprintf(err, errlen, "%s: item %d: %u choices (a %s item has %s)", path, i, choices,
                     task->kind == TASK_LAST_WORD ? "last-word" : "multiple-choice",
                     task->kind == TASK_LAST_WORD ? "1" : "1 to 64");
            return 1;
        }
        if (label >= choices) {
            snprintf(err, errlen, "%s: item %d: label %u but only %u choices", path, i, label, choices);
            return 1;
        }
        if (context_len < 1 || context_len > nwords - at) {
            snprintf(err, errlen, "%s: item %d: context of %u tokens (at least 1, within the file)", path, i,
                     context_len);
            return 1;
        }
        item.label = (int)label;
        item.num_choices = (int)choices;
        item.context = words + at;
        item.context_len = (int)context_len;
        at += context_len;
        for (uint32_t c = 0; c < choices; c++) {
            uint32_t len = at < nwords ? words[at] : 0;
            if (at >= nwords || len < 1 || len > nwords - at - 1) {
                snprintf(err, errlen, "%s: item %d: ending %u: length %u (at least 1, within the file)", path, i, c,
                         len);
                return 1;
            }
            item.endings[c] = words + at + 1;
            item.ending_lens[c] = (int)len;
            at += 1 + len;
            if ((size_t)context_len + len > (size_t)1 << 30) {
                snprintf(err, errlen, "%s: item %d: ending %u makes a sequence of over 2^30 tokens", path, i, c);
                return 1;
            }
            int seq = (int)(context_len + len);
            if (seq > max_len) max_len = seq;
        }
        uint32_t bad_token;
        int bad = first_token_outside(item.context, item.context_len, task->vocab_size, &bad_token);
        for (int c = 0; !bad && c < item.num_choices; c++)
            bad = first_token_outside(item.endings[c], item.ending_lens[c], task->vocab_size, &bad_token);
        if (bad) {
            snprintf(err, errlen, "%s: item %d: token %u is outside the vocabulary of %d", path, i, bad_token,
                     task->vocab_size);
            return 1;
        }
        rows += item.num_choices;
        task->items[i] = item;
    }
    if (at != nwords) {
        snprintf(err, errlen, "%s: %zu bytes after the last item", path, (nwords - at) * 4);
        return 1;
    }
    task->num_rows = rows;
    task->max_len = max_len;
    return 0;
}

int task_set_try_load(TaskSet *task, const char *path, char *err, size_t errlen) {
    memset(task, 0, sizeof(*task));
    FILE *fp = fopen_regular(path, "task file", err, errlen);
    if (fp == NULL) return 1;
    uint8_t header[TASK_HEADER_BYTES];
    long long size = file_size_of(fp);
    if (size < TASK_HEADER_BYTES || read_exact(fp, header, sizeof(header), path, "the header", err, errlen)) {
        if (size < TASK_HEADER_BYTES) snprintf(err, errlen, "%s: %lld bytes, shorter than a task file's header", path, size);
        fclose(fp);
        return 1;
    }
    if (memcmp(header, TASK_MAGIC, 8) != 0) {
        snprintf(err, errlen, "%s: not a task file (scripts/prepare_task.py writes them)", path);
        fclose(fp);
        return 1;
    }
    if (checkpoint_crc32(0, header, 68) != le_get_u32(header + 68)) {
        snprintf(err, errlen, "%s: header checksum mismatch (corrupt file)", path);
        fclose(fp);
        return 1;
    }
    uint32_t version = le_get_u32(header + 8), kind = le_get_u32(header + 12), items = le_get_u32(header + 16);
    uint32_t vocab = le_get_u32(header + 20);
    uint64_t body_bytes = le_get_u64(header + 24);
    const char *problem = NULL;
    if (version != TASK_VERSION) problem = "version";
    else if (kind != TASK_MULTIPLE_CHOICE && kind != TASK_LAST_WORD) problem = "kind";
    else if (items < 1 || items > (1u << 30)) problem = "item count";
    else if (vocab < 2 || vocab > (1u << 30)) problem = "vocab_size";
    else if (body_bytes % 4 != 0 || body_bytes > TASK_MAX_BODY_BYTES || (long long)body_bytes != size - TASK_HEADER_BYTES)
        problem = "body size (the file may be truncated)";
    else if (header[63] != '\0') problem = "tokenizer name";
    if (problem) {
        snprintf(err, errlen, "%s: bad %s in the header", path, problem);
        fclose(fp);
        return 1;
    }
    task_name_from_path(task->name, sizeof(task->name), path);
    task->kind = (int)kind;
    task->num_items = (int)items;
    task->vocab_size = (int)vocab;
    memcpy(task->tokenizer, header + 32, 32);
    size_t nwords = (size_t)(body_bytes / 4);
    task->words = (uint32_t *)malloc(body_bytes ? body_bytes : 1);
    if (task->words == NULL) {
        snprintf(err, errlen, "%s: cannot allocate %llu bytes for the body", path, (unsigned long long)body_bytes);
        fclose(fp);
        return 1;
    }
    int bad = read_exact(fp, task->words, body_bytes, path, "the body", err, errlen);
    fclose(fp);
    if (!bad && checkpoint_crc32(0, task->words, body_bytes) != le_get_u32(header + 64)) {
        snprintf(err, errlen, "%s: body checksum mismatch (corrupt file)", path);
        bad = 1;
    }
    /* every item takes at least 5 words (label, choices, context length, a token, an ending length) */
    if (!bad && (size_t)task->num_items > nwords / 5) {
        snprintf(err, errlen, "%s: %d items cannot fit in a body of %zu bytes", path, task->num_items, nwords * 4);
        bad = 1;
    }
    if (!bad) {
        task->items = (TaskItem *)malloc(sizeof(TaskItem) * task->num_items);
        if (task->items == NULL) {
            snprintf(err, errlen, "%s: cannot allocate %d items", path, task->num_items);
            bad = 1;
        }
    }
    if (!bad) bad = task_parse_body(task, task->words, nwords, path, err, errlen);
    if (bad) task_set_free(task);
    return bad;
}

void task_set_load(TaskSet *task, const char *path) {
    char err[1024];
    if (task_set_try_load(task, path, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
}

void task_set_free(TaskSet *task) {
    free(task->words);
    free(task->items);
    memset(task, 0, sizeof(*task));
}
