/*
 * The training loop, shared by train_ssd (CPU) and train_ssdcu (CUDA), over any number of ranks.
 * The compute sits behind TrainCompute (a CPU model or a GPU model) and the collectives behind
 * Comm (train/comm.h); the loop holds everything else: the step's gradient accumulation and
 * learning rate, evaluation (the first -m val batches, or full splits), samples, checkpoints,
 * main.log and the step lines.
 *
 * One optimizer step over W ranks with micro-batch B and grad_accum micro-batches each covers the
 * total batch (-d) of W x grad_accum x B x T tokens: rank k's micro-batch m reads global micro-batch
 * m's rows [k B, (k+1) B) (data/dataloader.h), so it is the step that one rank with W-fold more
 * accumulation takes. The step's loss is the mean over the targets that count in all its micro-batches
 * on all ranks (every target, unless the data has loss masks: data/dataloader.h): the loop reads the
 * step's micro-batches first, sums their counted targets over the ranks, and weights each counted
 * target's loss by 1 / that count; the gradients are summed over ranks. A step with no counted target
 * anywhere is skipped: no forward, no update (its data is consumed and the LR schedule moves on).
 *
 * With -cs 1 (carried state) the train loader reads streams (data/dataloader.h, dataloader_set_streams) and the
 * compute carries each stream's states from step to step; the loop restarts them where the streams start (a
 * block's first step) and after a step that was skipped (empty, or not finite: its states cannot go on), and
 * saves them in the checkpoint, each rank its own.
 */
#ifndef SSD_TRAIN_TRAIN_LOOP_H
#define SSD_TRAIN_TRAIN_LOOP_H

#include <stddef.h>

#include "train/eval_split.h"
#include "train/train_run.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ADAM_BETA1 0.9f
#define ADAM_BETA2 0.95f
#define ADAM_EPS 1e-8f

typedef struct {
    float lr, beta1, beta2, eps, weight_decay, grad_clip;
    int step;  /* 1-based */
} AdamWSettings;

/* What the loop needs of a model on some device. Parameters are the flat fp32 layout of
 * model/params.h; the AdamW moments a compute holds are either all of them or, with ZeRO-1, its
 * rank's shard (train/comm.h), [moments_offset, moments_offset + moments_count). */
typedef struct {
    void *self;
    size_t moments_offset, moments_count;
    void (*zero_grad)(void *self);
    /* forward and backward of one micro-batch of B x T tokens: the gradients of loss_scale x the sum of
     * the losses of its counted targets (a target -1 does not count) accumulated; last: the step's last
     * micro-batch (its backward may start the reduction over ranks) */
    void (*train_micro)(void *self, const int *inputs, const int *targets, float loss_scale, int last);
    /* the mean loss over the counted targets of the last micro-batch (waits for it; called only when
     * some target counts) */
    double (*micro_loss)(void *self);
    /* the gradients summed over ranks and their global norm (before clipping), the same on every rank */
    float (*grad_norm)(void *self);
    /* clipping to h->grad_clip by the norm grad_norm returned, and AdamW; the loop calls it only when
     * the step's loss and norm are finite (otherwise the step is skipped: parameters and moments stay) */
    void (*update)(void *self, const AdamWSettings *h, float grad_norm);
    EvalForward eval;
    /* every parameter, fp32 */
    void (*get_params)(void *self, float *out);
    /* moments of [offset, offset + count), a range inside what this compute holds */
    void (*get_moments)(void *self, size_t offset, size_t count, float *m, float *v);
    void (*set_moments)(void *self, size_t offset, size_t count, const float *m, const float *v);
    /* samples are drawn through this (model/cpu_sample.h); feed NULL: on the CPU from a copy of get_params */
    TokenFeeder feeder;
    /* -cs 1: the states carried from one step's windows to the next, carry_count floats (0: none carried);
     * restart_carry zeroes them (new streams, or a step whose states cannot go on), get_carry copies them out
     * for a checkpoint */
    size_t carry_count;
    void (*restart_carry)(void *self);
    void (*get_carry)(void *self, float *out);
    void (*set_carry)(void *self, const float *in); /* carry_count floats in get_carry's order */
} TrainCompute;

/* A resumed run's AdamW moments and carried states (run->resume_state) into the compute; nothing for a
 * fresh run. Exits with a message when the checkpoint's carried states are not this run's streams' (their
 * count differs: another -b, -d or number of ranks). Call it before train_run_release_params. */
void train_loop_restore(TrainRun *run, TrainCompute *compute);

/* Runs the steps of run from run->start_step to run->max_steps (evaluations, samples and
 * checkpoints included), then the test split. Returns the trainer's exit status (train/args.h): 0;
 * EXIT_NONFINITE after -nf skipped steps in a row, a non-finite evaluation, or non-finite parameters or
 * moments at a checkpoint (nothing saved then); EXIT_INTERRUPTED after a stop signal (train/stop.h),
 * the checkpoint of the step it stopped after saved when there is an output dir. Every rank returns
 * the same status after the same step. */
int train_loop_run(TrainRun *run, TrainCompute *compute);

#ifdef __cplusplus
}
#endif
#endif
