/*
 * Downstream tasks, tokenized (scripts/prepare_task.py writes them; train/task_eval.h scores them).
 *
 * Two kinds of item:
 *   multiple choice  a context and 2 or more endings, one of them right (HellaSwag, PIQA, ARC, ...):
 *                    each ending is scored by its log-likelihood given the context;
 *   last word        a passage whose last word is the target (LAMBADA): the context is the passage
 *                    without it and the one ending is the word (its tokens, with the space before it).
 * An item's sequence is its context followed by one ending; every context holds at least one token.
 *
 * TASK FILE (all integers little-endian, CRC-32 as zlib.crc32)
 *   offset size  field
 *   0      8     magic "SSDTASK\0"
 *   8      4     u32 version = 1
 *   12     4     u32 kind: 0 = multiple choice, 1 = last word
 *   16     4     u32 num_items
 *   20     4     u32 vocab_size of the tokenizer: every token is below it
 *   24     8     u64 body_bytes
 *   32     32    tokenizer name, NUL-padded (e.g. "gpt2", "gpt-neox-20b")
 *   64     4     u32 body_crc: CRC-32 of the body
 *   68     4     u32 header_crc: CRC-32 of bytes 0..67
 *   72     ...   body: per item u32 label, u32 num_choices, u32 context_len, context tokens (u32 each),
 *                then per choice u32 length (>= 1) and its tokens. Last-word items: label 0, 1 choice.
 * The file ends exactly after the body.
 */
#ifndef SSD_DATA_TASK_H
#define SSD_DATA_TASK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { TASK_MULTIPLE_CHOICE = 0, TASK_LAST_WORD = 1 };

#define TASK_MAX_CHOICES 64

typedef struct {
    int label;                      /* index of the right ending */
    int num_choices;
    const uint32_t *context;        /* into TaskSet.words */
    int context_len;
    const uint32_t *endings[TASK_MAX_CHOICES];
    int ending_lens[TASK_MAX_CHOICES];
} TaskItem;

typedef struct {
    char name[64];                  /* the file's name without folder and extension */
    int kind;
    int vocab_size;
    char tokenizer[33];
    int num_items;
    int num_rows;                   /* sum over items of num_choices: the sequences to score */
    int max_len;                    /* longest context + ending, in tokens */
    uint32_t *words;                /* the body */
    TaskItem *items;
} TaskSet;

/* Reads and checks a task file (magic, version, CRCs, every length and token); 0, or non-zero with a
 * message naming the file and the item in err (nothing allocated then). */
int task_set_try_load(TaskSet *task, const char *path, char *err, size_t errlen);
/* task_set_try_load that prints the message and exits on error. */
void task_set_load(TaskSet *task, const char *path);
void task_set_free(TaskSet *task);

#ifdef __cplusplus
}
#endif
#endif
