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
#include "data/tokenizer.h"
#include "model/args.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/cpu_model.h"
#include "model/cpu_sample.h"
#include "model/eval_split.h"
#include "model/logger.h"
#include "model/params.h"
#include "model/rng.h"
#include "model/schedule.h"
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

    /* the model: a JSON config (fresh init) or a model file (fine-tune) */
    ModelConfig config;
    float *params = NULL;
    int fine_tune = model_file_is_checkpoint(args.init_from);
    if (fine_tune) {
        model_file_read(args.init_from, &config, &params);
    } else {
        config_load(&config, args.init_from);
        ParamLayout layout;
        param_layout_init(&layout, &config);
        params = (float *)mallocCheck(sizeof(float) * layout.total);
        params_init(&config, params, (uint64_t)args.seed);
    }

    /* -x 0 evaluates only: no train data is read */
    int train = args.max_steps != 0;
    DataLoader train_loader, val_loader;
    if (train)
        dataloader_init(&train_loader, args.train_pattern, args.B, args.T, 0, 1, args.shuffle, (uint64_t)args.seed,
                        config.vocab_size);
    int use_val = args.val_every > 0 && args.val_pattern[0] != '\0';
    int full_val = use_val && args.val_max_steps < 0;
    EvalSplit val_split, test_split;
    if (full_val) eval_split_init(&val_split, args.val_pattern, args.T, config.vocab_size);
    else if (use_val) dataloader_init(&val_loader, args.val_pattern, args.B, args.T, 0, 1, 0, 0, config.vocab_size);
    if (args.test_pattern) eval_split_init(&test_split, args.test_pattern, args.T, config.vocab_size);

    long tokens_per_micro = (long)args.B * args.T;
    long total_batch = args.total_batch_size > 0 ? args.total_batch_size : tokens_per_micro;
    if (total_batch % tokens_per_micro != 0) {
        fprintf(stderr, "error: total batch size -d %ld is not a multiple of B*T = %ld\n", total_batch, tokens_per_micro);
        exit(1);
    }
    int grad_accum = (int)(total_batch / tokens_per_micro);
    int max_steps = args.max_steps;
    if (max_steps < 0) {
        max_steps = (int)(dataloader_num_batches(&train_loader) / grad_accum);
        if (max_steps < 1) max_steps = 1;
    }
    LRSchedule schedule = {args.learning_rate, args.warmup_steps, max_steps, args.final_lr_frac};
    TrainSettings settings = {.B = args.B, .T = args.T, .total_batch_size = total_batch, .max_steps = max_steps,
                              .warmup_steps = args.warmup_steps, .learning_rate = args.learning_rate,
                              .final_lr_frac = args.final_lr_frac, .weight_decay = args.weight_decay,
                              .grad_clip = args.grad_clip};
    snprintf(settings.lr_schedule, sizeof(settings.lr_schedule), "cosine");

    /* resume: the newest complete checkpoint in the output dir replaces the fresh model */
    int start_step = 0;
    uint64_t sample_rng = rng_seed((uint64_t)args.seed + 7);
    uint64_t run_id = checkpoint_new_run_id();
    TrainState resumed;
    memset(&resumed, 0, sizeof(resumed));
    long long latest = args.resume ? checkpoint_latest_step(args.output_dir) : -1;
    if (args.resume && latest < 0) printf("resume: no complete checkpoint in %s, starting fresh\n", args.output_dir);
    if (latest >= 0) {
        ModelConfig stored;
        float *stored_params = NULL;
        checkpoint_load(args.output_dir, latest, &config, &settings, 1, 0, &stored,
                        &stored_params, &resumed);
        free(params);
        params = stored_params;
        config = stored;
        start_step = (int)resumed.step;
        sample_rng = resumed.rng_state;
        run_id = resumed.run_id;
        if (train) dataloader_set_state(&train_loader, resumed.loader_state, resumed.loader_state_bytes);
        printf("resumed from %s at step %d\n", args.output_dir, start_step);
    }

    Mamba model;
    mamba_build(&model, &config, params);
    if (latest >= 0) {
        mamba_update(&model, 0, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, 0, 0, 1); /* allocates the moments */
        for (size_t i = 0; i < model.layout.total; i++) {
            model.params[i] = params[i];
            model.adam_m[i] = resumed.m[i];
            model.adam_v[i] = resumed.v[i];
        }
        train_state_free(&resumed);
    }
    free(params);

    config_print(&config);
    printf("parameters: %zu (%zu with the padded vocab rows)\n", params_count_effective(&config), model.layout.total);
    printf("B %d T %d | grad accum %d | tokens per step %ld | steps %d | %d threads\n", args.B, args.T, grad_accum,
           total_batch, max_steps, omp_get_max_threads());
    if (train)
        printf("train batches per epoch %zu%s\n", dataloader_num_batches(&train_loader),
               use_val ? "" : " | no val loss (-v 0 or no -j)");
    else
        printf("evaluation only (-x 0)\n");

    Logger logger;
    logger_init(&logger, args.output_dir, 0, latest >= 0);
    Tokenizer tokenizer;
    char tokenizer_path[4096];
    args_tokenizer_path(&args, tokenizer_path, sizeof(tokenizer_path));
    tokenizer_init(&tokenizer, tokenizer_path);

    float *snapshot = (float *)mallocCheck(sizeof(float) * model.layout.total);
    double train_seconds = 0;
    long trained_tokens = 0;
    for (int step = start_step; step <= max_steps; step++) {
        int last_step = step == max_steps;
        if (args.checkpoint_every > 0 && step > start_step && (step % args.checkpoint_every == 0 || last_step)) {
            size_t loader_bytes = dataloader_state_size(&train_loader);
            void *loader_state = mallocCheck(loader_bytes);
            dataloader_get_state(&train_loader, loader_state);
            mamba_get_params(&model, snapshot);
            float *m = (float *)mallocCheck(sizeof(float) * model.layout.total);
            float *v = (float *)mallocCheck(sizeof(float) * model.layout.total);
            for (size_t i = 0; i < model.layout.total; i++) {
                m[i] = (float)model.adam_m[i];
                v[i] = (float)model.adam_v[i];
            }
            TrainState state = {.step = step, .rng_state = sample_rng, .run_id = run_id, .world_size = 1, .rank = 0,
                                .shard_offset = 0, .shard_count = model.layout.total, .m = m, .v = v, .master = NULL,
                                .loader_state = loader_state, .loader_state_bytes = loader_bytes};
            checkpoint_save(args.output_dir, &config, snapshot, 0, &settings, &state, args.keep_last, args.keep_every);
            printf("checkpoint: step %d saved to %s\n", step, args.output_dir);
            free(m);
            free(v);
            free(loader_state);
        }
        if (use_val && (step % args.val_every == 0 || last_step)) {
            float val_loss;
            if (full_val) {
                EvalResult r = mamba_evaluate_split(&model, &val_split, args.B, args.eval_carry);
                val_loss = (float)(r.loss_sum / r.tokens);
                if (last_step) eval_result_report("val", step, r, args.eval_carry, &logger);
            } else {
                val_loss = evaluate(&model, &val_loader, args.val_max_steps);
            }
            printf("val loss %.6f\n", val_loss);
            logger_log_val(&logger, step, val_loss);
        }
        if (args.gen_T > 0 && ((args.sample_every > 0 && step % args.sample_every == 0 && step > start_step) || last_step))
            sample_print(&model, &tokenizer, args.gen_T, args.temperature, args.top_k, &sample_rng);
        if (last_step) break;

        double t0 = wall_seconds();
        mamba_zero_grad(&model);
        double loss = 0;
        for (int micro = 0; micro < grad_accum; micro++) {
            dataloader_next_batch(&train_loader);
            mamba_forward(&model, train_loader.inputs, train_loader.targets, args.B, args.T);
            loss += model.mean_loss / grad_accum;
            mamba_backward(&model, (real)1 / grad_accum);
        }
        float grad_norm = (float)mamba_grad_norm(&model);
        float clip_scale = args.grad_clip > 0 && grad_norm > args.grad_clip ? args.grad_clip / grad_norm : 1.0f;
        float lr = schedule_lr(&schedule, step);
        mamba_update(&model, lr, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, args.weight_decay, clip_scale, step + 1);
        double dt = wall_seconds() - t0;
        train_seconds += dt;
        trained_tokens += total_batch;
        printf("step %5d/%d | loss %.6f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s\n", step + 1, max_steps, loss,
               grad_norm, lr, 1000 * dt, total_batch / dt);
        logger_log_train(&logger, step, (float)loss, lr, grad_norm);
    }
    if (trained_tokens > 0)
        printf("trained %ld tokens in %.1f s: %.0f tokens/s\n", trained_tokens, train_seconds, trained_tokens / train_seconds);
    if (args.test_pattern) {
        EvalResult r = mamba_evaluate_split(&model, &test_split, args.B, args.eval_carry);
        eval_result_report("test", max_steps, r, args.eval_carry, &logger);
        eval_split_free(&test_split);
    }

    free(snapshot);
    tokenizer_free(&tokenizer);
    logger_free(&logger);
    if (train) dataloader_free(&train_loader);
    if (full_val) eval_split_free(&val_split);
    else if (use_val) dataloader_free(&val_loader);
    mamba_free(&model);
    return 0;
}
