/*
 * The training loop shared by both trainers (see train_loop.h). Each iteration first does what is due
 * after `step` optimizer steps (checkpoint, val loss, sample), then trains one step.
 */
#include "train/train_loop.h"
#include "model/cpu_sample.h"
#include "common/utils.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Mean loss over the first max_batches global batches of the val loader (-m k): each rank
 * evaluates its rows of each, and the mean is over all ranks' batches. */
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
        sums[1] += (double)B * T;
    }
    run->comm->ops->sum_doubles(run->comm, sums, 2);
    return sums[1] > 0 ? (float)(sums[0] / sums[1]) : NAN;
}

static void validate(TrainRun *run, TrainCompute *compute, int step) {
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
}

static void score_task(TrainRun *run, TrainCompute *compute, int step) {
    TaskResult result = task_evaluate(&run->task, &run->task_window, &compute->eval, run->comm);
    task_result_report(&run->task, step, &result, &run->logger);
    if (run->args->task_rows_path && run->comm->rank == 0)
        task_result_write_rows(&run->task, &result, run->args->task_rows_path);
    task_result_free(&result);
}

/* Rank 0 samples on the CPU from a copy of the weights: generation is one token at a time. */
static void sample(TrainRun *run, TrainCompute *compute, float *params) {
    if (run->comm->rank != 0) return;
    compute->get_params(compute->self, params);
    Mamba cpu_model;
    mamba_build(&cpu_model, &run->config, params);
    sample_print(&cpu_model, &run->tokenizer, run->args->gen_T, run->args->temperature, run->args->top_k,
                 &run->sample_rng);
    mamba_free(&cpu_model);
}

static void save_checkpoint(TrainRun *run, TrainCompute *compute, int step, float *params) {
    Comm *comm = run->comm;
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    size_t offset, count;
    checkpoint_shard_range(layout.total, comm->world, comm->rank, &offset, &count);
    float *m = (float *)mallocCheck(sizeof(float) * (count ? count : 1));
    float *v = (float *)mallocCheck(sizeof(float) * (count ? count : 1));
    compute->get_moments(compute->self, offset, count, m, v);
    if (comm->rank == 0) compute->get_params(compute->self, params);
    train_run_save_checkpoint(run, step, params, m, v);
    free(m);
    free(v);
}

/* One optimizer step; returns the mean loss over all ranks' micro-batches and sets *grad_norm. */
static double train_step(TrainRun *run, TrainCompute *compute, const AdamWSettings *h, float *grad_norm) {
    int accum = run->grad_accum;
    float loss_scale = 1.0f / (float)(accum * run->comm->world);
    compute->zero_grad(compute->self);
    double loss = 0.0;
    for (int micro = 0; micro < accum; micro++) {
        dataloader_next_batch(&run->train_loader);
        compute->train_micro(compute->self, run->train_loader.inputs, run->train_loader.targets, loss_scale,
                             micro == accum - 1);
        loss += compute->micro_loss(compute->self);
    }
    *grad_norm = compute->update(compute->self, h);
    run->comm->ops->sum_doubles(run->comm, &loss, 1);
    return loss / (accum * run->comm->world);
}

void train_loop_run(TrainRun *run, TrainCompute *compute) {
    const TrainArgs *args = run->args;
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    float *params = (float *)mallocCheck(sizeof(float) * layout.total);
    AdamWSettings h = {0.0f, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, args->weight_decay, args->grad_clip, 0};
    double timed_seconds = 0.0;
    int timed_steps = 0;
    for (int step = run->start_step; step <= run->max_steps; step++) {
        if (train_run_checkpoint_due(run, step)) save_checkpoint(run, compute, step, params);
        if (train_run_val_due(run, step)) validate(run, compute, step);
        if (train_run_task_due(run, step)) score_task(run, compute, step);
        if (train_run_sample_due(run, step)) sample(run, compute, params);
        if (step == run->max_steps) break;

        double t0 = wall_seconds();
        h.lr = schedule_lr(&run->schedule, step);
        h.step = step + 1;
        float norm;
        double loss = train_step(run, compute, &h, &norm);
        double seconds = wall_seconds() - t0;
        if (step > run->start_step) { /* the first step pays for warm-ups (cuBLASLt, allocators, NCCL) */
            timed_seconds += seconds;
            timed_steps++;
        }
        printf("step %5d/%d | loss %.6f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s\n", step + 1, run->max_steps,
               loss, norm, h.lr, 1e3 * seconds, run->total_batch / seconds);
        logger_log_train(&run->logger, step, (float)loss, h.lr, norm);
    }
    if (timed_steps > 0)
        printf("average %.2f ms per step, %.0f tok/s (steps after the first)\n", 1e3 * timed_seconds / timed_steps,
               run->total_batch * timed_steps / timed_seconds);
    if (args->test_pattern) {
        EvalResult r = eval_split_evaluate(&run->test_split, args->B, args->eval_carry, &compute->eval, run->comm);
        eval_result_report("test", run->max_steps, r, args->eval_carry, &run->logger);
    }
    free(params);
}
