/*
 * The host side of a training run, shared by train_ssd (CPU) and train_ssdcu (CUDA): the model's
 * starting weights (fresh init from a JSON config, a model file to fine-tune, or the newest
 * checkpoint to resume), the data loaders and evaluation splits, the batch arithmetic, the LR
 * schedule, logging, the tokenizer for samples, and checkpoint saving. Only the compute differs
 * between the two trainers.
 */
#ifndef SSD_TRAIN_TRAIN_RUN_H
#define SSD_TRAIN_TRAIN_RUN_H

#include <stdint.h>

#include "train/args.h"
#include "train/checkpoint.h"
#include "train/comm.h"
#include "model/config.h"
#include "model/cpu_sample.h"
#include "data/dataloader.h"
#include "data/tokenizer.h"
#include "train/eval_split.h"
#include "train/logger.h"
#include "train/schedule.h"
#include "train/task_eval.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const TrainArgs *args;
    Comm *comm;                  /* the ranks of this run (a world of 1 for one process) */
    ModelConfig config;
    float *params;               /* starting weights (fp32); the trainer copies them, then train_run_release_params */
    int train;                   /* 0 with -x 0: evaluation only, no train data read */
    DataLoader train_loader;
    int use_val, full_val;       /* val loss every -v steps; full_val: -m -1, the whole split */
    DataLoader val_loader;       /* -m k: the first k batches */
    EvalSplit val_split, test_split;
    int use_task;                /* -ta: a task scored every -tv steps and after the last */
    TaskSet task;
    TaskWindow task_window;
    long total_batch;            /* tokens per optimizer step, over all ranks */
    int grad_accum;              /* micro-batches per step on each rank */
    int max_steps;
    LRSchedule schedule;
    TrainSettings settings;      /* what a resume must match */
    int start_step;
    uint64_t sample_rng;
    uint64_t run_id;
    int resumed;                 /* 1: resume_state holds the AdamW moments of [moments_offset, +moments_count) */
    TrainState resume_state;     /* with -cs 1 its carry holds this rank's carried states */
    size_t moments_offset, moments_count;  /* the moments this rank keeps: its shard with -z 1, else all */
    Logger logger;
    int init_from_model_file;    /* 1: -e named a model file (fine-tune), 0: a JSON config (fresh weights) */
    char model_tokenizer_path[4096]; /* a tokenizer.bin that matches the model ("" if none found); copied into -o */
    Tokenizer tokenizer;         /* decodes samples (rank 0): the model's own, see train_run.c */
    int doc_eot;                 /* -db 1: the end-of-text id of the data's tokenizer.bin; -1 without -db */
    int *prompt;                 /* -gp / -gf: the token ids samples continue (NULL: none) */
    int prompt_len;
} TrainRun;

/* Sets up the run on every rank of comm; ranks other than 0 print nothing to stdout from here on. A fresh
 * run (no -y 1) into an output dir that holds a run is refused, or with -ow 1 replaces it; the memory a
 * config's parameters need is checked before they are allocated. */
void train_run_init(TrainRun *run, const TrainArgs *args, Comm *comm);
void train_run_release_params(TrainRun *run);
/* Whether step (optimizer steps done so far) is one where the loop checkpoints, evaluates, samples. */
int train_run_checkpoint_due(const TrainRun *run, int step);
int train_run_val_due(const TrainRun *run, int step);
int train_run_sample_due(const TrainRun *run, int step);
int train_run_task_due(const TrainRun *run, int step);
/* What a sample reads and draws (model/cpu_sample.h): end of text (token 0 if the tokenizer has none), the
 * prompt, and -g tokens with -st, -sk and -ge. */
SampleSettings train_run_sample_settings(const TrainRun *run);
/* Every rank, together: saves the checkpoint after `step` steps. Rank 0 writes the model file (params:
 * all parameters; ignored elsewhere), each rank the state file of its checkpoint shard (m, v: the
 * moments of checkpoint_shard_range of this rank; carry: its carried states, -cs 1), and rank 0 the DONE
 * marker once all are written. */
void train_run_save_checkpoint(TrainRun *run, int step, const float *params, const float *m, const float *v,
                               const float *carry, size_t carry_count);
void train_run_free(TrainRun *run);

#ifdef __cplusplus
}
#endif
#endif
