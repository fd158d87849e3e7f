/*
 * The training loop shared by both trainers (see train_loop.h). Each iteration first does what is due
 * after `step` optimizer steps (checkpoint, val loss, sample), then trains one step.
 */
#include "train/train_loop.h"
#include "train/stop.h"
#include "model/cpu_sample.h"
#include "common/utils.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Mean loss over the first max_batches global batches of the val loader (-m k): each rank
 * evaluates its rows of each, and the mean is over all ranks' counted targets. */
static float evaluate_batches(TrainRun *run, TrainCompute *compute, int max_batches) {
    DataLoader *loader = &run->val_loader;
    dataloader_reset(loader);
    int n = (int)dataloader_num_batches(loader);
    if (max_batches >= 0 && max_batches < n) n = max_batches;
    int B = (int)loader->B, T = (int)loader->T;
    double sums[2] = {0.0, 0.0}; /* loss, tokens */
    for (int i = 0; i < n; i++) {
        dataloader_next_batch(loader);
        sums[0] += compute->eval.loss_sum(compute->eval.self, loader->inputs, loader->targets, B, T);
        sums[1] += (double)count_targets(loader->targets, (size_t)B * T);
    }
    run->comm->ops->sum_doubles(run->comm, sums, 2);
    return sums[1] > 0 ? (float)(sums[0] / sums[1]) : NAN;
}

/* The val loss after `step` steps; returns 0 if it is not finite (the run then stops). */
static int validate(TrainRun *run, TrainCompute *compute, int step) {
    const TrainArgs *args = run->args;
    double t0 = wall_seconds();
    float val_loss;
    if (run->full_val) {
        EvalResult r = eval_split_evaluate(&run->val_split, args->B, args->eval_carry, &compute->eval, run->comm);
        val_loss = (float)(r.loss_sum / r.tokens);
        if (step == run->max_steps) eval_result_report("val", step, r, args->eval_carry, &run->logger);
    } else {
        val_loss = evaluate_batches(run, compute, args->val_max_steps);
    }
    printf("val loss %.6f | ppl %.2f | %.2f s\n", val_loss, exp(val_loss), wall_seconds() - t0);
    logger_log_val(&run->logger, step, val_loss);
    if (!isfinite(val_loss)) {
        fprintf(stderr, "error: the val loss after step %d is not finite (%f): stopping\n", step, val_loss);
        return 0;
    }
    return 1;
}

static void score_task(TrainRun *run, TrainCompute *compute, int step) {
    TaskResult result = task_evaluate(&run->task, &run->task_window, &compute->eval, run->comm);
    task_result_report(&run->task, step, &result, &run->logger);
    if (run->args->task_rows_path && run->comm->rank == 0)
        task_result_write_rows(&run->task, &result, run->args->task_rows_path);
    task_result_free(&result);
}

/* Rank 0 samples through the compute's feeder (the GPU model), or on the CPU from a copy of the weights. */
static void sample(TrainRun *run, TrainCompute *compute, float *params) {
    if (run->comm->rank != 0) return;
    SampleSettings settings = train_run_sample_settings(run);
    if (compute->feeder.feed) {
        sample_generate(&compute->feeder, &run->config, &settings, &run->sample_rng, &run->tokenizer, NULL);
        return;
    }
    compute->get_params(compute->self, params);
    Mamba cpu_model;
    mamba_build(&cpu_model, &run->config, params);
    CPUFeeder cpu;
    TokenFeeder feeder = sample_cpu_feeder_init(&cpu, &cpu_model);
    sample_generate(&feeder, &run->config, &settings, &run->sample_rng, &run->tokenizer, NULL);
    sample_cpu_feeder_free(&cpu);
    mamba_free(&cpu_model);
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Every rank: the checkpoint after `step` steps, unless a parameter or moment is not finite (a checkpoint
 * that would not load); returns 0 then, the same on every rank, and nothing is written. */
static int save_checkpoint(TrainRun *run, TrainCompute *compute, int step, float *params) {
    Comm *comm = run->comm;
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    size_t offset, count;
    checkpoint_shard_range(layout.total, comm->world, comm->rank, &offset, &count);
    float *m = (float *)mallocCheck(sizeof(float) * (count ? count : 1));
    float *v = (float *)mallocCheck(sizeof(float) * (count ? count : 1));
    compute->get_moments(compute->self, offset, count, m, v);
    float *carry = compute->carry_count ? (float *)mallocCheck(sizeof(float) * compute->carry_count) : NULL;
    if (carry) compute->get_carry(compute->self, carry);
    if (comm->rank == 0) compute->get_params(compute->self, params);
    double bad = !all_finite(m, count) || !all_finite(v, count) || (comm->rank == 0 && !all_finite(params, layout.total)) ||
                 !all_finite(carry, compute->carry_count);
    comm->ops->sum_doubles(comm, &bad, 1);
    if (bad == 0) train_run_save_checkpoint(run, step, params, m, v, carry, compute->carry_count);
    else fprintf(stderr, "error: parameters or optimizer moments after step %d are not finite: no checkpoint written, "
                         "the last one is left as it was\n", step);
    free(m);
    free(v);
    free(carry);
    return bad == 0;
}

void train_loop_restore(TrainRun *run, TrainCompute *compute) {
    if (!run->resumed) return;
    compute->set_moments(compute->self, run->moments_offset, run->moments_count, run->resume_state.m,
                         run->resume_state.v);
    if (compute->carry_count == 0) return; /* a run without -cs 1 starts its windows from zero states */
    if (run->resume_state.carry_count != compute->carry_count) {
        fprintf(stderr, "error: -cs 1: the checkpoint in %s holds %zu floats of carried states, this run's streams need "
                        "%zu: resume with the checkpoint's -b, -d and ranks\n", run->args->output_dir,
                run->resume_state.carry_count, compute->carry_count);
        exit(1);
    }
    compute->set_carry(compute->self, run->resume_state.carry);
}

/* Whether any rank received a stop signal (train/stop.h): the same answer on every rank. */
static int stop_requested(TrainRun *run) {
    double stop = stop_signal_received() != 0;
    run->comm->ops->sum_doubles(run->comm, &stop, 1);
    return stop > 0;
}

typedef struct {
    double loss;  /* mean over all ranks' counted targets */
    float norm;   /* global gradient norm before clipping */
    int finite;   /* loss and norm finite on every rank: the update was applied */
    int empty;    /* no counted target on any rank: nothing computed, no update */
    int stop;     /* a rank received a stop signal */
} StepResult;

/* The step's micro-batches, read before any backward: the loss weight needs their counted targets. */
typedef struct {
    int *inputs, *targets;  /* [grad_accum, B * T] */
    double *counted;        /* [grad_accum]: the counted targets of each micro-batch */
    size_t tokens;          /* B * T */
} StepBatches;

/* Reads the step's micro-batches; returns the targets that count in them, summed over the ranks. */
static double step_batches_read(StepBatches *s, TrainRun *run) {
    DataLoader *loader = &run->train_loader;
    double counted = 0.0;
    for (int micro = 0; micro < run->grad_accum; micro++) {
        dataloader_next_batch(loader);
        memcpy(s->inputs + micro * s->tokens, loader->inputs, s->tokens * sizeof(int));
        memcpy(s->targets + micro * s->tokens, loader->targets, s->tokens * sizeof(int));
        s->counted[micro] = (double)count_targets(loader->targets, s->tokens);
        counted += s->counted[micro];
    }
    /* without masks every rank counts every target: no collective needed */
    if (loader->has_masks) run->comm->ops->sum_doubles(run->comm, &counted, 1);
    else counted *= run->comm->world;
    return counted;
}

/* One optimizer step: forward and backward of the micro-batches, the gradient norm, and the update
 * when the loss and the norm are finite on every rank. Loss, finiteness and stop requests are summed
 * over the ranks in one call, so every rank takes the same decisions. */
static StepResult train_step(TrainRun *run, TrainCompute *compute, const AdamWSettings *h, StepBatches *batches) {
    int accum = run->grad_accum;
    StepResult r = {0.0, 0.0f, 0, 0, 0};
    double counted = step_batches_read(batches, run);
    if (compute->carry_count && run->train_loader.stream_start) compute->restart_carry(compute->self);
    if (counted == 0) {
        r.empty = 1;
        r.stop = stop_requested(run);
        return r;
    }
    float loss_scale = (float)(1.0 / counted);
    compute->zero_grad(compute->self);
    double loss = 0.0;
    for (int micro = 0; micro < accum; micro++) {
        compute->train_micro(compute->self, batches->inputs + micro * batches->tokens,
                             batches->targets + micro * batches->tokens, loss_scale, micro == accum - 1);
        if (batches->counted[micro] > 0) loss += compute->micro_loss(compute->self) * batches->counted[micro];
    }
    r.norm = compute->grad_norm(compute->self);
    double sums[3] = {loss, !isfinite(r.norm), stop_signal_received() != 0};
    run->comm->ops->sum_doubles(run->comm, sums, 3);
    r.loss = sums[0] / counted;
    r.finite = isfinite(r.loss) && sums[1] == 0;
    r.stop = sums[2] > 0;
    if (r.finite) compute->update(compute->self, h, r.norm);
    return r;
}

int train_loop_run(TrainRun *run, TrainCompute *compute) {
    const TrainArgs *args = run->args;
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    float *params = (float *)mallocCheck(sizeof(float) * layout.total);
    AdamWSettings h = {0.0f, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, args->weight_decay, args->grad_clip, 0};
    double timed_seconds = 0.0;
    int timed_steps = 0, status = 0, skipped_in_a_row = 0, skipped = 0;
    int stop = stop_requested(run);
    StepBatches batches;
    batches.tokens = (size_t)run->train_loader.B * run->train_loader.T;
    batches.inputs = (int *)mallocCheck(sizeof(int) * run->grad_accum * batches.tokens);
    batches.targets = (int *)mallocCheck(sizeof(int) * run->grad_accum * batches.tokens);
    batches.counted = (double *)mallocCheck(sizeof(double) * run->grad_accum);
    for (int step = run->start_step; step <= run->max_steps; step++) {
        /* none while steps are being skipped: the last checkpoint stays the newest */
        int save = (train_run_checkpoint_due(run, step) || (stop && args->output_dir && step > run->start_step)) &&
                   skipped_in_a_row == 0;
        if (save && !save_checkpoint(run, compute, step, params)) {
            status = EXIT_NONFINITE;
            break;
        }
        if (stop) {
            printf("stopped by a signal after step %d%s%s; resume with -y 1\n", step,
                   save ? ", checkpoint saved to " : "", save ? args->output_dir : "");
            status = EXIT_INTERRUPTED;
            break;
        }
        if (train_run_val_due(run, step) && !validate(run, compute, step)) {
            status = EXIT_NONFINITE;
            break;
        }
        if (train_run_task_due(run, step)) score_task(run, compute, step);
        if (train_run_sample_due(run, step)) sample(run, compute, params);
        if (step == run->max_steps) break;

        double t0 = wall_seconds();
        h.lr = schedule_lr(&run->schedule, step);
        h.step = step + 1;
        StepResult r = train_step(run, compute, &h, &batches);
        stop = r.stop;
        if (compute->carry_count && (r.empty || !r.finite)) compute->restart_carry(compute->self);
        double seconds = wall_seconds() - t0;
        if (step > run->start_step) { /* the first step pays for warm-ups (cuBLASLt, allocators, NCCL) */
            timed_seconds += seconds;
            timed_steps++;
        }
        if (r.empty) {
            printf("step %5d/%d | no target counts in this step (loss masks): no update\n", step + 1, run->max_steps);
            continue;
        }
        if (!r.finite) {
            skipped++;
            skipped_in_a_row++;
            printf("step %5d/%d | loss %.6f | norm %.4f | skipped: not finite, no update (%d in a row of -nf %d)\n",
                   step + 1, run->max_steps, r.loss, r.norm, skipped_in_a_row, args->max_nonfinite);
            logger_log_skip(&run->logger, step, (float)r.loss, r.norm);
            if (skipped_in_a_row >= args->max_nonfinite) {
                fprintf(stderr, "error: %d steps in a row (up to step %d) had a non-finite loss or gradient norm "
                                "(-nf %d): stopping; the last checkpoint is left as it was\n",
                        skipped_in_a_row, step + 1, args->max_nonfinite);
                status = EXIT_NONFINITE;
                break;
            }
            continue;
        }
        skipped_in_a_row = 0;
        printf("step %5d/%d | loss %.6f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s\n", step + 1, run->max_steps,
               r.loss, r.norm, h.lr, 1e3 * seconds, run->total_batch / seconds);
        logger_log_train(&run->logger, step, (float)r.loss, h.lr, r.norm);
    }
    if (timed_steps > 0)
        printf("average %.2f ms per step, %.0f tok/s (steps after the first)\n", 1e3 * timed_seconds / timed_steps,
               run->total_batch * timed_steps / timed_seconds);
    if (skipped > 0) printf("%d step%s skipped: non-finite loss or gradient norm\n", skipped, skipped == 1 ? "" : "s");
    if (status == 0 && args->test_pattern) {
        EvalResult r = eval_split_evaluate(&run->test_split, args->B, args->eval_carry, &compute->eval, run->comm);
        eval_result_report("test", run->max_steps, r, args->eval_carry, &run->logger);
        if (!isfinite(r.loss_sum / r.tokens)) {
            fprintf(stderr, "error: the test loss is not finite\n");
            status = EXIT_NONFINITE;
        }
    }
    free(batches.inputs);
    free(batches.targets);
    free(batches.counted);
    free(params);
    return status;
}
