/*
 * train_ssd: the CPU reference trainer for Mamba-2 (scalar A) and SSD-Mamba (diagonal A)
 * language models. Readable first; OpenMP for speed. Shares every host-side piece (config, CLI,
 * data, checkpoints, schedule, logging) with the CUDA trainer train_ssd.cu.
 *
 * One optimizer step: grad_accum micro-batches of B x T tokens (forward, backward with the loss
 * scaled by 1/grad_accum), global-norm clipping, AdamW with the warmup + cosine learning rate.
 * Evaluation: the first -m batches of the val split, or (-m -1) every target of it exactly once, and
 * the test split (-ti) in full after training (model/eval_split.h); -x 0 only evaluates.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataloader.h"
#include "model/args.h"
#include "model/cpu_model.h"
#include "model/cpu_sample.h"
#include "model/train_run.h"
#include "model/utils.h"

#define ADAM_BETA1 0.9f
#define ADAM_BETA2 0.95f
#define ADAM_EPS 1e-8f

static float evaluate(Mamba *model, DataLoader *loader, int max_batches) {
    dataloader_reset(loader);
    int batches = (int)dataloader_num_batches(loader);
    if (max_batches >= 0 && max_batches < batches) batches = max_batches;
    double total = 0;
    for (int i = 0; i < batches; i++) {
        dataloader_next_batch(loader);
        mamba_forward(model, loader->inputs, loader->targets, (int)loader->B, (int)loader->T);
        total += model->mean_loss;
    }
    return (float)(total / batches);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* step lines appear as they happen, also in a piped log */
    TrainArgs args;
    args_defaults(&args);
    args_parse(&args, argc, argv, "train_ssd");
    if (args.num_threads > 0) omp_set_num_threads(args.num_threads);

    TrainRun run;
    train_run_init(&run, &args);
    printf("CPU threads: %d\n", omp_get_max_threads());
    Mamba model;
    mamba_build(&model, &run.config, run.params);
    size_t n = model.layout.total;
    if (run.resumed) {
        mamba_update(&model, 0, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, 0, 0, 1); /* allocates the moments */
        for (size_t i = 0; i < n; i++) {
            model.params[i] = run.params[i];
            model.adam_m[i] = run.resume_state.m[i];
            model.adam_v[i] = run.resume_state.v[i];
        }
    }
    train_run_release_params(&run);

    float *snapshot = (float *)mallocCheck(sizeof(float) * n);
    float *m = (float *)mallocCheck(sizeof(float) * n), *v = (float *)mallocCheck(sizeof(float) * n);
    double train_seconds = 0;
    long trained_tokens = 0;
    for (int step = run.start_step; step <= run.max_steps; step++) {
        int last_step = step == run.max_steps;
        if (train_run_checkpoint_due(&run, step)) {
            mamba_get_params(&model, snapshot);
            for (size_t i = 0; i < n; i++) {
                m[i] = (float)model.adam_m[i];
                v[i] = (float)model.adam_v[i];
            }
            train_run_save_checkpoint(&run, step, snapshot, m, v, NULL);
        }
        if (train_run_val_due(&run, step)) {
            float val_loss;
            if (run.full_val) {
                EvalResult r = mamba_evaluate_split(&model, &run.val_split, args.B, args.eval_carry);
                val_loss = (float)(r.loss_sum / r.tokens);
                if (last_step) eval_result_report("val", step, r, args.eval_carry, &run.logger);
            } else {
                val_loss = evaluate(&model, &run.val_loader, args.val_max_steps);
            }
            printf("val loss %.6f\n", val_loss);
            logger_log_val(&run.logger, step, val_loss);
        }
        if (train_run_sample_due(&run, step))
            sample_print(&model, &run.tokenizer, args.gen_T, args.temperature, args.top_k, &run.sample_rng);
        if (last_step) break;

        double t0 = wall_seconds();
        mamba_zero_grad(&model);
        double loss = 0;
        for (int micro = 0; micro < run.grad_accum; micro++) {
            dataloader_next_batch(&run.train_loader);
            mamba_forward(&model, run.train_loader.inputs, run.train_loader.targets, args.B, args.T);
            loss += model.mean_loss / run.grad_accum;
            mamba_backward(&model, (real)1 / run.grad_accum);
        }
        float grad_norm = (float)mamba_grad_norm(&model);
        float clip_scale = args.grad_clip > 0 && grad_norm > args.grad_clip ? args.grad_clip / grad_norm : 1.0f;
        float lr = schedule_lr(&run.schedule, step);
        mamba_update(&model, lr, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, args.weight_decay, clip_scale, step + 1);
        double dt = wall_seconds() - t0;
        train_seconds += dt;
        trained_tokens += run.total_batch;
        printf("step %5d/%d | loss %.6f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s\n", step + 1, run.max_steps, loss,
               grad_norm, lr, 1000 * dt, run.total_batch / dt);
        logger_log_train(&run.logger, step, (float)loss, lr, grad_norm);
    }
    if (trained_tokens > 0)
        printf("trained %ld tokens in %.1f s: %.0f tokens/s\n", trained_tokens, train_seconds, trained_tokens / train_seconds);
    if (args.test_pattern) {
        EvalResult r = mamba_evaluate_split(&model, &run.test_split, args.B, args.eval_carry);
        eval_result_report("test", run.max_steps, r, args.eval_carry, &run.logger);
    }

    free(snapshot);
    free(m);
    free(v);
    train_run_free(&run);
    mamba_free(&model);
    return 0;
}
