#include "train_run.h"
#include "params.h"
#include "rng.h"
#include "utils.h"

#include <string.h>

static void load_starting_weights(TrainRun *run) {
    const TrainArgs *args = run->args;
    if (model_file_is_checkpoint(args->init_from)) {
        model_file_read(args->init_from, &run->config, &run->params);
        return;
    }
    config_load(&run->config, args->init_from);
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    run->params = (float *)mallocCheck(sizeof(float) * layout.total);
    params_init(&run->config, run->params, (uint64_t)args->seed);
}

static void open_data(TrainRun *run) {
    const TrainArgs *args = run->args;
    int vocab = run->config.vocab_size;
    run->train = args->max_steps != 0;
    if (run->train)
        dataloader_init(&run->train_loader, args->train_pattern, args->B, args->T, 0, 1, args->shuffle,
                        (uint64_t)args->seed, vocab);
    run->use_val = args->val_every > 0 && args->val_pattern[0] != '\0';
    run->full_val = run->use_val && args->val_max_steps < 0;
    if (run->full_val) eval_split_init(&run->val_split, args->val_pattern, args->T, vocab);
    else if (run->use_val) dataloader_init(&run->val_loader, args->val_pattern, args->B, args->T, 0, 1, 0, 0, vocab);
    if (args->test_pattern) eval_split_init(&run->test_split, args->test_pattern, args->T, vocab);
}

static void plan_steps(TrainRun *run) {
    const TrainArgs *args = run->args;
    long tokens_per_micro = (long)args->B * args->T;
    run->total_batch = args->total_batch_size > 0 ? args->total_batch_size : tokens_per_micro;
    if (run->total_batch % tokens_per_micro != 0) {
        fprintf(stderr, "error: total batch size -d %ld is not a multiple of B*T = %ld\n", run->total_batch,
                tokens_per_micro);
        exit(1);
    }
    run->grad_accum = (int)(run->total_batch / tokens_per_micro);
    run->max_steps = args->max_steps;
    if (run->max_steps < 0) {
        run->max_steps = (int)(dataloader_num_batches(&run->train_loader) / run->grad_accum);
        if (run->max_steps < 1) run->max_steps = 1;
    }
    run->schedule = (LRSchedule){args->learning_rate, args->warmup_steps, run->max_steps, args->final_lr_frac};
    TrainSettings *s = &run->settings;
    memset(s, 0, sizeof(*s));
    s->B = args->B;
    s->T = args->T;
    s->total_batch_size = run->total_batch;
    s->max_steps = run->max_steps;
    s->warmup_steps = args->warmup_steps;
    s->learning_rate = args->learning_rate;
    s->final_lr_frac = args->final_lr_frac;
    s->weight_decay = args->weight_decay;
    s->grad_clip = args->grad_clip;
    snprintf(s->lr_schedule, sizeof(s->lr_schedule), "cosine");
}

/* The newest complete checkpoint in the output dir replaces the starting weights. */
static void resume_if_asked(TrainRun *run) {
    const TrainArgs *args = run->args;
    run->start_step = 0;
    run->sample_rng = rng_seed((uint64_t)args->seed + 7);
    run->run_id = checkpoint_new_run_id();
    run->resumed = 0;
    memset(&run->resume_state, 0, sizeof(run->resume_state));
    if (!args->resume) return;
    long long latest = checkpoint_latest_step(args->output_dir);
    if (latest < 0) {
        printf("resume: no complete checkpoint in %s, starting fresh\n", args->output_dir);
        return;
    }
    ModelConfig stored;
    float *stored_params = NULL;
    TrainState *state = &run->resume_state;
    checkpoint_load(args->output_dir, latest, &run->config, &run->settings, 1, 0, &stored, &stored_params, state);
    if (state->master) memcpy(stored_params, state->master, sizeof(float) * state->shard_count);
    free(run->params);
    run->params = stored_params;
    run->config = stored;
    run->start_step = (int)state->step;
    run->sample_rng = state->rng_state;
    run->run_id = state->run_id;
    if (run->train) dataloader_set_state(&run->train_loader, state->loader_state, state->loader_state_bytes);
    run->resumed = 1;
    printf("resumed from %s at step %d\n", args->output_dir, run->start_step);
}

void train_run_init(TrainRun *run, const TrainArgs *args) {
    memset(run, 0, sizeof(*run));
    run->args = args;
    load_starting_weights(run);
    open_data(run);
    plan_steps(run);
    resume_if_asked(run);
    config_print(&run->config);
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    printf("parameters: %zu (%zu with the padded vocab rows)\n", params_count_effective(&run->config), layout.total);
    printf("B %d T %d | grad accum %d | tokens per step %ld | steps %d\n", args->B, args->T, run->grad_accum,
           run->total_batch, run->max_steps);
    if (run->train)
        printf("train batches per epoch %zu%s\n", dataloader_num_batches(&run->train_loader),
               run->use_val ? "" : " | no val loss (-v 0 or no -j)");
    else
        printf("evaluation only (-x 0)\n");
    logger_init(&run->logger, args->output_dir, 0, run->resumed);
    char tokenizer_path[4096];
    args_tokenizer_path(args, tokenizer_path, sizeof(tokenizer_path));
    tokenizer_init(&run->tokenizer, tokenizer_path);
}

void train_run_release_params(TrainRun *run) {
    free(run->params);
    run->params = NULL;
    if (run->resumed) train_state_free(&run->resume_state);
    memset(&run->resume_state, 0, sizeof(run->resume_state));
}

int train_run_checkpoint_due(const TrainRun *run, int step) {
    int every = run->args->checkpoint_every;
    return every > 0 && step > run->start_step && (step % every == 0 || step == run->max_steps);
}

int train_run_val_due(const TrainRun *run, int step) {
    return run->use_val && (step % run->args->val_every == 0 || step == run->max_steps);
}

int train_run_sample_due(const TrainRun *run, int step) {
    const TrainArgs *a = run->args;
    if (a->gen_T <= 0) return 0;
    return (a->sample_every > 0 && step % a->sample_every == 0 && step > run->start_step) || step == run->max_steps;
}

void train_run_save_checkpoint(TrainRun *run, int step, const float *params, const float *m, const float *v,
                               const float *master) {
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    size_t loader_bytes = dataloader_state_size(&run->train_loader);
    void *loader_state = mallocCheck(loader_bytes);
    dataloader_get_state(&run->train_loader, loader_state);
    TrainState state = {.step = step, .rng_state = run->sample_rng, .run_id = run->run_id, .world_size = 1,
                        .rank = 0, .shard_offset = 0, .shard_count = layout.total, .m = (float *)m, .v = (float *)v,
                        .master = (float *)master, .loader_state = loader_state, .loader_state_bytes = loader_bytes};
    checkpoint_save(run->args->output_dir, &run->config, params, 0, &run->settings, &state, run->args->keep_last,
                    run->args->keep_every);
    printf("checkpoint: step %d saved to %s\n", step, run->args->output_dir);
    free(loader_state);
}

void train_run_free(TrainRun *run) {
    train_run_release_params(run);
    if (run->args->test_pattern) eval_split_free(&run->test_split);
    tokenizer_free(&run->tokenizer);
    logger_free(&run->logger);
    if (run->train) dataloader_free(&run->train_loader);
    if (run->full_val) eval_split_free(&run->val_split);
    else if (run->use_val) dataloader_free(&run->val_loader);
}
