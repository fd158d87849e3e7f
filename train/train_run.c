#include "train/train_run.h"
#include "model/params.h"
#include "common/fileio.h"
#include "common/rng.h"
#include "common/utils.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <glob.h>
#include <string.h>
#include <unistd.h>

/* An input named on the command line cannot be read: say where a relative path was looked for. */
static void die_input_missing(const char *flag, const char *path, const char *what_to_do) {
    char cwd[4096];
    int err = errno;
    if (getcwd(cwd, sizeof(cwd)) == NULL) snprintf(cwd, sizeof(cwd), "?");
    fprintf(stderr, "error: %s %s: %s", flag, path, err ? strerror(err) : "matches no file");
    if (path[0] != '/') fprintf(stderr, " (a relative path is taken from the current directory, %s)", cwd);
    fprintf(stderr, "; %s\n", what_to_do);
    exit(1);
}

static void load_starting_weights(TrainRun *run) {
    const TrainArgs *args = run->args;
    if (access(args->init_from, R_OK) != 0)
        die_input_missing("-e", args->init_from, "run from the repository root or give the full path of a JSON "
                                                 "config (configs/) or of a model file (model_*.bin)");
    char err[8192];
    FILE *fp = fopen_regular(args->init_from, "-e file", err, sizeof(err));
    if (fp == NULL) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
    fclose(fp);
    if (model_file_is_checkpoint(args->init_from)) {
        model_file_read(args->init_from, &run->config, &run->params);
        run->init_from_model_file = 1;
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

/* The directory part of a path or glob, "." when it has none. */
static void dir_of(const char *path, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (slash == path) snprintf(out, n, "/");
    else if (slash) snprintf(out, n, "%.*s", (int)(slash - path), path);
    else snprintf(out, n, ".");
}

static void tokenizer_beside(const char *path, char *out, size_t n) {
    char dir[4096];
    dir_of(path, dir, sizeof(dir));
    if (snprintf(out, n, "%s/tokenizer.bin", dir) >= (int)n) {
        fprintf(stderr, "error: path too long: %s\n", path);
        exit(1);
    }
}

/* The shard globs this run reads must match files; say how to make them when they do not. */
static void check_data_patterns(TrainRun *run) {
    const TrainArgs *args = run->args;
    const char *flags[3] = {"-i", "-j", "-ti"};
    const char *patterns[3] = {args->max_steps != 0 ? args->train_pattern : NULL,
                               args->val_every > 0 && args->val_pattern[0] ? args->val_pattern : NULL, args->test_pattern};
    const char *advice[3] = {"prepare shards with scripts/prepro.py (from the repository root: python3 scripts/prepro.py "
                             "--recipe tinyshakespeare --tokenizer gpt2 makes the default ones) or point -i at yours",
                             "prepare them with scripts/prepro.py, point -j at yours, or give -v 0 for no val loss",
                             "point -ti at the test shards scripts/prepro.py wrote (*_test_*.bin)"};
    for (int i = 0; i < 3; i++) {
        if (patterns[i] == NULL) continue;
        glob_t found;
        int status = glob(patterns[i], 0, NULL, &found);
        globfree(&found);
        if (status == GLOB_NOMATCH) {
            errno = 0;
            die_input_missing(flags[i], patterns[i], advice[i]);
        }
    }
}

static const char *PREPRO_NAMES[] = {"bytes", "gpt2", "neox", "word"};

/* The tokenizer.bin beside the shards the run reads first must be the model's: the same ids must mean
 * the same text. A config without a "tokenizer" note takes the data's, so that the model files written
 * by this run record it. */
static void check_data_tokenizer(TrainRun *run) {
    const TrainArgs *args = run->args;
    const char *pattern = args->max_steps != 0                          ? args->train_pattern
                          : args->val_every > 0 && args->val_pattern[0] ? args->val_pattern
                                                                        : args->test_pattern;
    if (pattern == NULL) return;
    char path[4096];
    tokenizer_beside(pattern, path, sizeof(path));
    if (access(path, R_OK) != 0) return; /* shards without a tokenizer.bin (e.g. llm.c's): nothing to check */
    Tokenizer t;
    tokenizer_init(&t, path);
    ModelConfig *c = &run->config;
    char why[512], name[64];
    tokenizer_name(&t, name, sizeof(name));
    if (tokenizer_match_note(&t, c->tokenizer, c->vocab_size, why, sizeof(why)) == TOKENIZER_MISMATCH) {
        fprintf(stderr, "error: the data %s was prepared with another tokenizer than the model (-e %s) uses: %s (%s). ",
                pattern, args->init_from, path, why);
        if (t.vocab_size > c->vocab_size && tokenizer_note_kind(c->tokenizer) < 0)
            fprintf(stderr, "Train from a config whose vocab_size is at least %d (configs/mamba2-tiny.json has 50257, "
                            "enough for GPT-2 and byte tokens), or prepare the data with a tokenizer of at most %d ids\n",
                    t.vocab_size, c->vocab_size);
        else if (tokenizer_note_kind(c->tokenizer) >= 0)
            fprintf(stderr, "Prepare the data with the model's tokenizer (python3 scripts/prepro.py ... --tokenizer %s), "
                            "or train a new model on this data from a config (-e configs/<name>.json)\n",
                    PREPRO_NAMES[tokenizer_note_kind(c->tokenizer)]);
        else
            fprintf(stderr, "Prepare the data with the model's tokenizer, or train from a config\n");
        exit(1);
    }
    if (c->tokenizer[0] == '\0') snprintf(c->tokenizer, sizeof(c->tokenizer), "%s", name);
    snprintf(run->model_tokenizer_path, sizeof(run->model_tokenizer_path), "%s", path);
    tokenizer_free(&t);
}

/* Seconds between the progress lines of a full-split evaluation: 10, or SSD_EVAL_PROGRESS_SECONDS. */
static double eval_progress_seconds(void) {
    const char *env = getenv("SSD_EVAL_PROGRESS_SECONDS");
    char *end = NULL;
    double seconds = env ? strtod(env, &end) : 10.0;
    if (env && (end == env || *end != '\0' || !(seconds >= 0) || !isfinite(seconds))) {
        fprintf(stderr, "error: SSD_EVAL_PROGRESS_SECONDS='%s' is not a finite number of seconds >= 0\n", env);
        exit(1);
    }
    return seconds;
}

static void open_data(TrainRun *run) {
    const TrainArgs *args = run->args;
    int vocab = run->config.vocab_size, rank = run->comm->rank, world = run->comm->world;
    run->train = args->max_steps != 0;
    if (args->carry_state && args->shuffle) {
        fprintf(stderr, "error: -cs 1 (carried state) reads each row's stream in order: give -sh 0 with it\n");
        exit(1);
    }
    if (run->train) {
        dataloader_init_steps(&run->train_loader, args->train_pattern, args->B, args->T, rank, world, run->grad_accum,
                              args->shuffle, (uint64_t)args->seed, vocab);
        if (args->carry_state) dataloader_set_streams(&run->train_loader);
    }
    run->use_val = args->val_every > 0 && args->val_pattern[0] != '\0';
    run->full_val = run->use_val && args->val_max_steps < 0;
    if (run->full_val) {
        eval_split_init(&run->val_split, args->val_pattern, args->T, vocab);
        eval_split_show_progress(&run->val_split, "val", eval_progress_seconds());
    }
    else if (run->use_val)
        dataloader_init(&run->val_loader, args->val_pattern, args->B, args->T, rank, world, 0, 0, vocab);
    if (args->test_pattern) {
        eval_split_init(&run->test_split, args->test_pattern, args->T, vocab);
        eval_split_show_progress(&run->test_split, "test", eval_progress_seconds());
    }
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
    if (stored.tokenizer[0] == '\0') /* written before model files recorded their tokenizer */
        snprintf(stored.tokenizer, sizeof(stored.tokenizer), "%s", run->config.tokenizer);
    run->config = stored;
    run->start_step = (int)run->resume_state.step;
    run->sample_rng = run->resume_state.rng_state;
    run->run_id = run->resume_state.run_id;
    if (run->train)
        dataloader_set_state(&run->train_loader, run->resume_state.loader_state, run->resume_state.loader_state_bytes);
    if (args->carry_state && run->train) {
        /* each rank's streams are its rows: the carried states go back to the same ranks */
        if (stored_world != comm->world) {
            fprintf(stderr, "error: -cs 1: the checkpoint in %s was written by %d rank%s; resume with as many (the "
                            "carried states belong to each rank's rows)\n", args->output_dir, stored_world,
                    stored_world == 1 ? "" : "s");
            exit(1);
        }
        checkpoint_load_carry(args->output_dir, latest, comm->rank, &run->resume_state.carry,
                              &run->resume_state.carry_count);
    }
    run->resumed = 1;
    printf("resumed from %s at step %d", args->output_dir, run->start_step);
    if (stored_world != comm->world)
        printf(" (written by %d rank%s, optimizer state resharded for %d)", stored_world, stored_world == 1 ? "" : "s",
               comm->world);
    printf("\n");
}

/* -ta: the task must be in the model's tokens, and its endings must fit the window T */
static void open_task(TrainRun *run) {
    const TrainArgs *args = run->args;
    run->use_task = args->task_path != NULL;
    if (!run->use_task) return;
    TaskSet *task = &run->task;
    task_set_load(task, args->task_path);
    const char *model_tokenizer = run->config.tokenizer;
    if (task->tokenizer[0] && model_tokenizer[0] && strcmp(task->tokenizer, model_tokenizer) != 0) {
        fprintf(stderr, "error: task %s was tokenized with %s but the model uses %s; prepare it again with "
                        "scripts/prepare_task.py --tokenizer %s\n", args->task_path, task->tokenizer, model_tokenizer,
                model_tokenizer);
        exit(1);
    }
    if (task->vocab_size > run->config.vocab_size) {
        fprintf(stderr, "error: task %s uses a vocabulary of %d tokens, the model has %d\n", args->task_path,
                task->vocab_size, run->config.vocab_size);
        exit(1);
    }
    char err[1024];
    if (task_window_choose(task, args->B, args->T, run->config.chunk_size, &run->task_window, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
    printf("task file %s: %d %s items, %d rows, longest %d tokens; rows packed by length, up to %d per forward\n",
           task->name, task->num_items, task->kind == TASK_MULTIPLE_CHOICE ? "multiple-choice" : "last-word",
           task->num_rows, task->max_len, run->task_window.max_rows);
}

static int samples_wanted(const TrainArgs *args) { return args->gen_T > 0 && args->sample_every != 0; }

/* -db 1: the end-of-text id of the tokenizer.bin beside the train shards; exits when there is none. */
static int document_eot(const TrainArgs *args) {
    if (!args->doc_boundaries) return -1;
    char path[4096];
    args_tokenizer_path(args, path, sizeof(path));
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "error: -db 1 needs the data's end-of-text id from %s, which cannot be read: prepare the data "
                        "with scripts/prepro.py, or leave out -db\n", path);
        exit(1);
    }
    Tokenizer t;
    tokenizer_init(&t, path);
    int eot = tokenizer_eot(&t);
    tokenizer_free(&t);
    if (eot < 0) {
        fprintf(stderr, "error: -db 1: %s has no end-of-text token (a byte tokenizer marks no document boundary), so "
                        "there are no boundaries to keep: leave out -db\n", path);
        exit(1);
    }
    return eot;
}

/* The tokenizer that decodes samples: -tk, which must be the model's; else the first tokenizer.bin that
 * matches the model's note, looked for beside the model file (-e), beside the data the run reads, and
 * beside the train shards. None found: the samples print token ids. */
static void open_sample_tokenizer(TrainRun *run) {
    const TrainArgs *args = run->args;
    const ModelConfig *c = &run->config;
    memset(&run->tokenizer, 0, sizeof(run->tokenizer));
    run->tokenizer.eot_id = -1;
    if (!samples_wanted(args)) return;
    char why[512];
    if (args->tokenizer_path) {
        tokenizer_init(&run->tokenizer, args->tokenizer_path);
        if (run->tokenizer.loaded &&
            tokenizer_match_note(&run->tokenizer, c->tokenizer, c->vocab_size, why, sizeof(why)) == TOKENIZER_MISMATCH) {
            fprintf(stderr, "error: -tk %s is not the model's tokenizer (%s); leave out -tk to decode with the model's "
                            "own, which is looked for beside the model file and the data\n", args->tokenizer_path, why);
            exit(1);
        }
        return;
    }
    char candidates[3][4096];
    int n = 0;
    if (run->init_from_model_file) tokenizer_beside(args->init_from, candidates[n++], sizeof(candidates[0]));
    if (run->model_tokenizer_path[0]) snprintf(candidates[n++], sizeof(candidates[0]), "%s", run->model_tokenizer_path);
    args_tokenizer_path(args, candidates[n++], sizeof(candidates[0])); /* beside the train shards */
    int tried = 0;
    for (int i = 0; i < n; i++) {
        if (access(candidates[i], R_OK) != 0) continue;
        tried++;
        Tokenizer t;
        tokenizer_init(&t, candidates[i]);
        TokenizerMatch match = tokenizer_match_note(&t, c->tokenizer, c->vocab_size, why, sizeof(why));
        if (match != TOKENIZER_MISMATCH) {
            if (match == TOKENIZER_UNCHECKED && c->tokenizer[0])
                printf("note: the model's tokenizer '%s' is not one this program can check; samples are decoded with %s\n",
                       c->tokenizer, candidates[i]);
            run->tokenizer = t;
            if (!run->model_tokenizer_path[0]) memcpy(run->model_tokenizer_path, candidates[i], sizeof(candidates[i]));
            return;
        }
        printf("note: %s is not the model's tokenizer (%s), not used for samples\n", candidates[i], why);
        tokenizer_free(&t);
    }
    fprintf(stderr, "warning: no tokenizer.bin of the model's tokenizer '%s' %s; samples are printed as token ids "
                    "(give -tk, e.g. the tokenizer.bin that scripts/prepro.py wrote beside the model's training data)\n",
            c->tokenizer[0] ? c->tokenizer : "(not recorded)",
            tried ? "beside the model file or the data" : "found (none beside the model file or the data)");
}

/* -gp ids or the file of -gf: token ids separated by commas or white space, each inside the vocabulary. */
static void read_prompt(TrainRun *run) {
    const TrainArgs *args = run->args;
    if (!args->prompt && !args->prompt_file) return;
    char source[4200];
    char *text;
    if (args->prompt) {
        snprintf(source, sizeof(source), "-gp");
        text = strdup(args->prompt);
    } else {
        char err[512];
        size_t len;
        snprintf(source, sizeof(source), "-gf %s", args->prompt_file);
        text = read_text_file_limited(args->prompt_file, "prompt file", (size_t)1 << 28, &len, err, sizeof(err));
        if (text == NULL) {
            fprintf(stderr, "error: %s\n", err);
            exit(1);
        }
    }
    run->prompt = (int *)mallocCheck((strlen(text) / 2 + 1) * sizeof(int)); /* ids take 2 characters at least */
    const char *p = text;
    for (;;) {
        while (*p == ',' || isspace((unsigned char)*p)) p++;
        if (*p == '\0') break;
        char *end;
        errno = 0;
        long id = strtol(p, &end, 10);
        if (end == p || errno != 0 || id < 0 || id >= run->config.vocab_size ||
            !(*end == '\0' || *end == ',' || isspace((unsigned char)*end))) {
            fprintf(stderr, "error: %s: prompt token %d ('%.20s') is not a token id in [0, %d) (the model's vocab_size)\n",
                    source, run->prompt_len + 1, p, run->config.vocab_size);
            exit(1);
        }
        run->prompt[run->prompt_len++] = (int)id;
        p = end;
    }
    free(text);
    if (run->prompt_len == 0) {
        fprintf(stderr, "error: %s holds no token ids\n", source);
        exit(1);
    }
    printf("prompt: %d tokens from %s\n", run->prompt_len, source);
}

SampleSettings train_run_sample_settings(const TrainRun *run) {
    const TrainArgs *a = run->args;
    int eot = tokenizer_eot(&run->tokenizer);
    int has_eot = eot >= 0 && eot < run->config.vocab_size;
    SampleSettings s = {has_eot ? eot : 0, run->prompt, run->prompt_len, a->gen_T, a->temperature, a->top_k,
                        a->stop_at_eot && has_eot ? eot : -1};
    return s;
}

/* Beside the model files of the output dir: -e <dir>/model_*.bin then finds the tokenizer that decodes it. */
static void copy_tokenizer_to_output(const TrainRun *run) {
    const char *dir = run->args->output_dir;
    if (dir == NULL || run->comm->rank != 0 || !run->model_tokenizer_path[0]) return;
    char dest[4096];
    snprintf(dest, sizeof(dest), "%s/tokenizer.bin", dir);
    size_t len = 0, old_len = 0;
    char *bytes = read_text_file(run->model_tokenizer_path, &len);
    if (bytes == NULL) return;
    char *old = read_text_file(dest, &old_len);
    if (old == NULL || old_len != len || memcmp(old, bytes, len) != 0) {
        AtomicFile f;
        atomic_file_open(&f, dest);
        atomic_file_write(&f, bytes, len);
        atomic_file_commit(&f);
    }
    free(old);
    free(bytes);
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
    check_data_patterns(run);
    check_data_tokenizer(run);
    open_data(run);
    plan_steps(run);
    resume_if_asked(run);
    if (!run->resumed && run->init_from_model_file)
        printf("init: weights from the model file %s (%s)\n", args->init_from,
               run->train ? "fine-tuning: the optimizer state and the LR schedule start afresh" : "evaluation only");
    else if (!run->resumed)
        printf("init: fresh weights from the config %s (seed %d)\n", args->init_from, args->seed);
    open_task(run);
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
    if (run->resumed && comm->rank == 0) logger_drop_from_step(args->output_dir, run->start_step);
    logger_init(&run->logger, args->output_dir, comm->rank, run->resumed);
    open_sample_tokenizer(run);
    read_prompt(run);
    run->doc_eot = document_eot(args);
    if (run->doc_eot >= 0 && comm->rank == 0)
        printf("document boundaries: the conv and the SSD state restart after every input %d (end of text)\n",
               run->doc_eot);
    copy_tokenizer_to_output(run);
}

void train_run_release_params(TrainRun *run) {
    free(run->params);
    run->params = NULL;
    if (run->resumed) train_state_free(&run->resume_state);
    memset(&run->resume_state, 0, sizeof(run->resume_state));
}

int train_run_checkpoint_due(const TrainRun *run, int step) {
    int every = run->args->checkpoint_every;
    if (run->args->output_dir == NULL || step <= run->start_step) return 0;
    return (every > 0 && step % every == 0) || step == run->max_steps; /* with -o, the last step always */
}

int train_run_val_due(const TrainRun *run, int step) {
    return run->use_val && (step % run->args->val_every == 0 || step == run->max_steps);
}

int train_run_sample_due(const TrainRun *run, int step) {
    const TrainArgs *a = run->args;
    if (!samples_wanted(a)) return 0; /* -s 0 or -g 0: never */
    return (a->sample_every > 0 && step % a->sample_every == 0 && step > run->start_step) || step == run->max_steps;
}

int train_run_task_due(const TrainRun *run, int step) {
    int every = run->args->task_every;
    return run->use_task && ((every > 0 && step % every == 0) || step == run->max_steps);
}

void train_run_save_checkpoint(TrainRun *run, int step, const float *params, const float *m, const float *v,
                               const float *carry, size_t carry_count) {
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
                        .loader_state_bytes = loader_bytes, .carry = (float *)carry, .carry_count = carry_count};
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
    if (run->use_task) task_set_free(&run->task);
    tokenizer_free(&run->tokenizer);
    free(run->prompt);
    logger_free(&run->logger);
    if (run->train) dataloader_free(&run->train_loader);
    if (run->full_val) eval_split_free(&run->val_split);
    else if (run->use_val) dataloader_free(&run->val_loader);
}
