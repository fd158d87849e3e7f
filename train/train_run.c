#include "train/train_run.h"
#include "model/params.h"
#include "common/rng.h"
#include "common/utils.h"

#include <string.h>

static void load_starting_weights(TrainRun *run) {
    const TrainArgs *args = run->args;
    char err[8192];
    FILE *fp = fopen_regular(args->init_from, "-e file", err, sizeof(err));
    if (fp == NULL) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
    fclose(fp);
    if (model_file_is_checkpoint(args->init_from)) {
        model_file_read(args->init_from, &run->config, &run->params);
        return;
    }
    config_load(&run->config, args->init_from);
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    char what[128];
    snprintf(what, sizeof(what), "a model of %zu parameters (%s; two fp32 copies)", layout.total, args->init_from);
    memory_check_or_exit(8.0 * (double)layout.total, what);
    run->params = (float *)mallocCheck(sizeof(float) * layout.total);
    params_init(&run->config, run->params, (uint64_t)args->seed);
}

/* A run's output dir: a fresh run (no -y 1) into a directory that already holds a run is refused, unless
 * -ow 1 says to replace it (its main.log and checkpoints are deleted first). Rank 0 looks; all decide. */
static void claim_output_dir(TrainRun *run) {
    const TrainArgs *args = run->args;
    Comm *comm = run->comm;
    if (args->output_dir == NULL || args->resume) return;
    char found[512] = "";
    double holds = comm->rank == 0 ? checkpoint_dir_holds_run(args->output_dir, found, sizeof(found)) : 0.0;
    comm->ops->sum_doubles(comm, &holds, 1);
    if (holds == 0) return;
    if (!args->overwrite) {
        if (comm->rank == 0)
            fprintf(stderr, "error: output dir -o %s already holds a run (%s): resume it with -y 1, replace it with "
                            "-ow 1, or give another -o\n", args->output_dir, found);
        exit(1);
    }
    if (comm->rank == 0) {
        checkpoint_dir_clear(args->output_dir);
        printf("-ow 1: deleted the run in %s (main.log and checkpoints)\n", args->output_dir);
    }
    comm->ops->barrier(comm);
}

/* Tokens per step over all ranks (-d, default one micro-batch per rank) and the accumulation it needs. */
static void plan_batch(TrainRun *run) {
    const TrainArgs *args = run->args;
    int world = run->comm->world;
    long unit = (long)args->B * args->T * world;
    run->total_batch = args->total_batch_size > 0 ? args->total_batch_size : unit;
    if (run->total_batch % unit != 0) {
        long below = run->total_batch / unit * unit, above = below + unit;
        char nearest[64];
        if (below > 0) snprintf(nearest, sizeof(nearest), "values are %ld and %ld", below, above);
        else snprintf(nearest, sizeof(nearest), "value is %ld", above);
        fprintf(stderr, "error: total batch size -d %ld is not a multiple of B*T*ranks = %d*%d*%d = %ld; the nearest valid %s\n",
                run->total_batch, args->B, args->T, world, unit, nearest);
        exit(1);
    }
    if (run->total_batch / unit > ARGS_MAX_ACCUM) {
        fprintf(stderr, "error: total batch size -d %ld is %ld micro-batches of B*T*ranks = %ld per step, more than %d\n",
                run->total_batch, run->total_batch / unit, unit, ARGS_MAX_ACCUM);
        exit(1);
    }
    run->grad_accum = (int)(run->total_batch / unit);
}

static void open_data(TrainRun *run) {
    const TrainArgs *args = run->args;
    int vocab = run->config.vocab_size, rank = run->comm->rank, world = run->comm->world;
    run->train = args->max_steps != 0;
    if (run->train)
        dataloader_init_steps(&run->train_loader, args->train_pattern, args->B, args->T, rank, world, run->grad_accum,
                              args->shuffle, (uint64_t)args->seed, vocab);
    run->use_val = args->val_every > 0 && args->val_pattern[0] != '\0';
    run->full_val = run->use_val && args->val_max_steps < 0;
    if (run->full_val) eval_split_init(&run->val_split, args->val_pattern, args->T, vocab);
    else if (run->use_val)
        dataloader_init(&run->val_loader, args->val_pattern, args->B, args->T, rank, world, 0, 0, vocab);
    if (args->test_pattern) eval_split_init(&run->test_split, args->test_pattern, args->T, vocab);
}

static void plan_steps(TrainRun *run) {
    const TrainArgs *args = run->args;
    run->max_steps = args->max_steps;
    if (run->max_steps < 0) {
        size_t epoch_steps = dataloader_num_batches(&run->train_loader) / run->grad_accum;
        run->max_steps = epoch_steps < 1 ? 1 : epoch_steps > ARGS_MAX_COUNT ? ARGS_MAX_COUNT : (int)epoch_steps;
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

/* The newest complete checkpoint in the output dir replaces the starting weights; this rank takes the
 * moments it keeps, whatever number of ranks wrote them. */
static void resume_if_asked(TrainRun *run) {
    const TrainArgs *args = run->args;
    Comm *comm = run->comm;
    run->start_step = 0;
    run->sample_rng = rng_seed((uint64_t)args->seed + 7);
    run->run_id = checkpoint_new_run_id();
    comm->ops->broadcast(comm, &run->run_id, sizeof(run->run_id));
    run->resumed = 0;
    memset(&run->resume_state, 0, sizeof(run->resume_state));
    if (!args->resume) return;
    long long latest = checkpoint_latest_step(args->output_dir);
    /* every rank must take the same step (a DONE marker could appear while the ranks look) */
    double step_of_rank0 = comm->rank == 0 ? (double)latest : 0.0;
    comm->ops->sum_doubles(comm, &step_of_rank0, 1);
    latest = (long long)step_of_rank0;
    if (latest < 0) {
        printf("resume: no complete checkpoint in %s, starting fresh\n", args->output_dir);
        return;
    }
    ModelConfig stored;
    float *stored_params = NULL;
    int stored_world = 0;
    checkpoint_load_shard(args->output_dir, latest, &run->config, &run->settings, run->moments_offset,
                          run->moments_count, &stored, &stored_params, &run->resume_state, &stored_world);
    if (run->resume_state.step > run->max_steps) {
        fprintf(stderr, "error: the checkpoint in %s is at step %lld, beyond this run's %d steps (-x)\n",
                args->output_dir, run->resume_state.step, run->max_steps);
        exit(1);
    }
    free(run->params);
    run->params = stored_params;
    run->config = stored;
    run->start_step = (int)run->resume_state.step;
    run->sample_rng = run->resume_state.rng_state;
    run->run_id = run->resume_state.run_id;
    if (run->train)
        dataloader_set_state(&run->train_loader, run->resume_state.loader_state, run->resume_state.loader_state_bytes);
    run->resumed = 1;
    printf("resumed from %s at step %d", args->output_dir, run->start_step);
    if (stored_world != comm->world)
        printf(" (written by %d rank%s, optimizer state resharded for %d)", stored_world, stored_world == 1 ? "" : "s",
               comm->world);
    printf("\n");
}

void train_run_init(TrainRun *run, const TrainArgs *args, Comm *comm) {
    memset(run, 0, sizeof(*run));
    run->args = args;
    run->comm = comm;
    /* one rank speaks for the run; errors (stderr) stay visible from every rank */
    if (comm->rank != 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "error: rank %d cannot silence its stdout\n", comm->rank);
        exit(1);
    }
    claim_output_dir(run);
    load_starting_weights(run);
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    if (args->zero) {
        size_t shard = comm_shard_size(layout.total, comm->world);
        size_t begin = shard * (size_t)comm->rank;
        run->moments_offset = begin < layout.total ? begin : layout.total;
        run->moments_count = begin + shard < layout.total ? shard : layout.total - run->moments_offset;
    } else {
        run->moments_offset = 0;
        run->moments_count = layout.total;
    }
    plan_batch(run);
    open_data(run);
    plan_steps(run);
    resume_if_asked(run);
    if (strcmp(comm->backend, "single") != 0)
        printf("ranks %d (%s)%s\n", comm->world, comm->backend, args->zero ? ", ZeRO-1: optimizer state sharded" : "");
    config_print(&run->config);
    printf("parameters: %zu (%zu with the padded vocab rows)\n", params_count_effective(&run->config), layout.total);
    printf("B %d T %d ranks %d | grad accum %d | tokens per step %ld | steps %d\n", args->B, args->T, comm->world,
           run->grad_accum, run->total_batch, run->max_steps);
    if (run->train)
        printf("train batches per epoch %zu%s\n", dataloader_num_batches(&run->train_loader),
               run->use_val ? "" : " | no val loss (-v 0 or no -j)");
    else
        printf("evaluation only (-x 0)\n");
    logger_init(&run->logger, args->output_dir, comm->rank, run->resumed);
    char tokenizer_path[4096];
    args_tokenizer_path(args, tokenizer_path, sizeof(tokenizer_path));
    if (comm->rank == 0) tokenizer_init(&run->tokenizer, tokenizer_path);
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

void train_run_save_checkpoint(TrainRun *run, int step, const float *params, const float *m, const float *v) {
    Comm *comm = run->comm;
    const char *dir = run->args->output_dir;
    ParamLayout layout;
    param_layout_init(&layout, &run->config);
    size_t offset, count;
    checkpoint_shard_range(layout.total, comm->world, comm->rank, &offset, &count);
    size_t loader_bytes = dataloader_state_size(&run->train_loader);
    void *loader_state = mallocCheck(loader_bytes);
    dataloader_get_state(&run->train_loader, loader_state);
    TrainState state = {.step = step, .rng_state = run->sample_rng, .run_id = run->run_id, .world_size = comm->world,
                        .rank = comm->rank, .shard_offset = offset, .shard_count = count, .m = (float *)m,
                        .v = (float *)v, .master = NULL, .loader_state = loader_state,
                        .loader_state_bytes = loader_bytes};
    uint32_t model_crc = 0;
    if (comm->rank == 0) model_crc = checkpoint_save_model(dir, step, &run->config, params, 0);
    checkpoint_save_state(dir, &run->config, &run->settings, &state);
    /* the marker makes the checkpoint count: only once every rank's state file is in place */
    comm->ops->barrier(comm);
    if (comm->rank == 0) {
        checkpoint_mark_done(dir, step, run->run_id, comm->world, model_crc);
        checkpoint_prune(dir, run->args->keep_last, run->args->keep_every);
    }
    printf("checkpoint: step %d saved to %s\n", step, dir);
    free(loader_state);
}

void train_run_free(TrainRun *run) {
    train_run_release_params(run);
    if (run->args->test_pattern) eval_split_free(&run->test_split);
    if (run->comm->rank == 0) tokenizer_free(&run->tokenizer);
    logger_free(&run->logger);
    if (run->train) dataloader_free(&run->train_loader);
    if (run->full_val) eval_split_free(&run->val_split);
    else if (run->use_val) dataloader_free(&run->val_loader);
}
