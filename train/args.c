#include "train/args.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void args_defaults(TrainArgs *a) {
    memset(a, 0, sizeof(*a));
    a->train_pattern = "datasets/tinyshakespeare/*_train_*.bin";
    a->val_pattern = "datasets/tinyshakespeare/*_val_*.bin";
    a->test_pattern = NULL;
    a->output_dir = NULL;
    a->init_from = "configs/mamba2-tiny.json";
    a->tokenizer_path = NULL;
    a->B = 4;
    a->T = 256;
    a->total_batch_size = -1;
    a->max_steps = -1;
    a->learning_rate = 1e-3f;
    a->warmup_steps = 0;
    a->final_lr_frac = 0.0f;
    a->weight_decay = 0.1f;
    a->grad_clip = 1.0f;
    a->val_every = 20;
    a->val_max_steps = 20;
    a->eval_carry = 0;
    a->doc_boundaries = 0;
    a->carry_state = 0;
    a->task_path = NULL;
    a->task_every = 0;
    a->task_rows_path = NULL;
    a->sample_every = -1; /* not given: one sample at the end */
    a->gen_T = 64;
    a->temperature = 1.0f;
    a->top_k = 0;
    a->prompt = NULL;
    a->prompt_file = NULL;
    a->stop_at_eot = 0;
    a->checkpoint_every = 0;
    a->resume = 0;
    a->keep_last = 0;
    a->keep_every = 0;
    a->seed = 1337;
    a->shuffle = 1;
    a->num_threads = 0;
    a->zero = 0;
    a->recompute = 0;
    a->rendezvous_dir = NULL;
    a->rank_timeout = 30.0f;
    a->collective_timeout = 900.0f;
    a->max_nonfinite = 5;
    a->overwrite = 0;
}

void args_print_help(const char *program) {
    fprintf(stdout,
            "usage: %s [options]\n"
            "Trains a Mamba-2 (scalar A) or SSD-Mamba (diagonal A) language model.\n"
            "Each value must lie in the range shown in brackets; anything else is refused.\n\n"
            "data\n"
            "  -i <glob>    train shards (default datasets/tinyshakespeare/*_train_*.bin)\n"
            "  -j <glob>    val shards (default datasets/tinyshakespeare/*_val_*.bin)\n"
            "  -ti <glob>   test shards, evaluated in full after training (default: none)\n"
            "  -tk <file>   tokenizer.bin for decoding samples; must be the model's (default: the model's own,\n"
            "               found beside the model file or the data)\n"
            "  -sh <0|1>    shuffle train shards and samples (default 1)\n"
            "  -db <0|1>    document boundaries: the conv and the SSD state restart after every end-of-text\n"
            "               input (the id in tokenizer.bin beside the train shards), in training and\n"
            "               evaluation (default 0)\n"
            "  -cs <0|1>    carried state: each row of each micro-batch reads one contiguous stream of the train\n"
            "               data, and its conv and SSD state pass from one step's window to the next (the gradient\n"
            "               stops at the window start), so a model of window T learns from context beyond T;\n"
            "               needs -sh 0 (default 0; docs/data.md)\n"
            "model\n"
            "  -e <file>    JSON config (fresh init; fields and ranges: docs/config.md) or model file\n"
            "               (fine-tune) (default configs/mamba2-tiny.json)\n"
            "  -R <int>     seed for init, data order and sampling [0, 2147483647] (default 1337)\n"
            "optimisation\n"
            "  -b <int>     micro-batch size B [1, 65536] (default 4)\n"
            "  -t <int>     sequence length T [1, 1048576]; B*T at most %ld (default 256)\n"
            "  -d <int>     total batch size in tokens over all ranks; a multiple of B*T*ranks of at most\n"
            "               %d micro-batches per rank and step, or -1 (default -1: B*T*ranks, no accumulation)\n"
            "  -x <int>     optimizer steps [-1, %d] (default -1: one epoch; 0: evaluate -e and exit)\n"
            "  -l <float>   peak learning rate [0, 10] (default 1e-3)\n"
            "  -u <int>     linear warmup steps [0, %d] (default 0)\n"
            "  -q <float>   final learning rate as a fraction of the peak, cosine decay [0, 1] (default 0.0)\n"
            "  -c <float>   AdamW weight decay on in_proj, out_proj and conv weights [0, 100] (default 0.1)\n"
            "  -C <float>   global gradient-norm clip, 0 for none [0, 1e6] (default 1.0)\n"
            "  -r <0|1|2>   activation recomputation (train_ssdcu): the backward re-runs the cheap parts of\n"
            "               each layer's forward instead of keeping them: 1 the norms, conv and gated norm,\n"
            "               2 also the SSD scan; the losses and gradients stay bit-identical. train_ssd\n"
            "               accepts it and keeps every activation (default 0: keep everything)\n"
            "  -nf <int>    a step whose loss or gradient norm is not finite is skipped (no update) and\n"
            "               logged; this many in a row stop the run with exit status %d [1, 1000000] (default 5)\n"
            "evaluation and sampling\n"
            "  -v <int>     val loss every N steps, 0 for never [0, %d] (default 20)\n"
            "  -m <int>     val batches per evaluation [1, %d], or -1 for every target of the split once\n"
            "               (default 20)\n"
            "  -ec <0|1>    full-split evaluation (-m -1, -ti) carries the recurrent state across\n"
            "               consecutive windows of T tokens: 1, or starts each window fresh: 0 (default 0)\n"
            "  -ta <file>   downstream task to score zero-shot (scripts/prepare_task.py; default: none)\n"
            "  -tv <int>    score the task every N steps, 0 for only after the last [0, %d] (default 0)\n"
            "  -tp <file>   write every row's task score (item, ending, log-likelihood, greedy) to file\n"
            "  -s <int>     sample every N steps and at the end [0, %d], 0 for never (default: at the end only)\n"
            "  -g <int>     tokens to generate per sample [0, 1048576] (default 64)\n"
            "  -st <float>  sampling temperature, 0 for greedy [0, 100] (default 1.0)\n"
            "  -sk <int>    top-k sampling, 0 for the full distribution [0, %d] (default 0)\n"
            "  -gp <ids>    prompt: the samples continue these token ids, comma-separated (scripts/generate.py\n"
            "               encodes text); each sample reads end of text, then the prompt (default: none)\n"
            "  -gf <file>   prompt token ids from a file (separated by commas or white space)\n"
            "  -ge <0|1>    a sample ends at an end-of-text token, e.g. the end of an answer (default 0)\n"
            "output and checkpoints\n"
            "  -o <dir>     output dir for main.log, checkpoints and the final model (default: none); a\n"
            "               directory that holds a run (main.log or checkpoints) is refused unless -y 1\n"
            "               resumes it or -ow 1 replaces it\n"
            "  -ow <0|1>    1: a fresh run replaces the run in -o (deletes its main.log and checkpoints)\n"
            "               (default 0)\n"
            "  -n <int>     checkpoint every N steps; with -o the last step is always saved [0, %d]\n"
            "               (default 0: only it)\n"
            "  -y <0|1>     resume from the newest complete checkpoint in -o (default 0)\n"
            "  -nk <int>    keep only the last K checkpoints, 0 for all [0, %d] (default 0)\n"
            "  -nm <int>    also keep every M-th step's checkpoint [0, %d] (default 0)\n"
            "several processes (one per GPU; launched by torchrun, srun or mpirun: README)\n"
            "  -z <0|1>     ZeRO-1: each rank keeps and updates 1/W of the optimizer state (default 0)\n"
            "  -rd <dir>    meet through a file in this shared directory instead of TCP at\n"
            "               MASTER_ADDR:MASTER_PORT (default: TCP)\n"
            "  -to <sec>    a rank silent this long counts as failed; the others exit [1, 86400] (default 30)\n"
            "  -tc <sec>    longest wait inside one collective before the run aborts [1, 604800] (default 900)\n"
            "other\n"
            "  -th <int>    CPU threads (OpenMP), 0 for all [0, 1024] (default 0)\n"
            "  -h           this help\n"
            "signals\n"
            "  SIGINT, SIGTERM and SIGUSR1 (Slurm's warning before preemption) finish the current step, write\n"
            "  a checkpoint when -o is set, and exit with status %d; -y 1 then continues exactly. A second\n"
            "  SIGINT ends the process at once. All ranks stop at the same step.\n"
            "exit status\n"
            "  0 done; 1 an error (flag, config, file, data); %d stopped after -nf non-finite steps in a row\n"
            "  or a non-finite evaluation (the last checkpoint is left as it was); %d stopped by a signal\n",
            program, ARGS_MAX_TOKENS, ARGS_MAX_ACCUM, ARGS_MAX_COUNT, ARGS_MAX_COUNT, EXIT_NONFINITE, ARGS_MAX_COUNT,
            ARGS_MAX_COUNT, ARGS_MAX_COUNT, ARGS_MAX_COUNT, ARGS_MAX_COUNT, ARGS_MAX_COUNT, ARGS_MAX_COUNT,
            ARGS_MAX_COUNT, EXIT_INTERRUPTED, EXIT_NONFINITE, EXIT_INTERRUPTED);
}

/* A flag's value: where it goes in TrainArgs and, for a number, its valid range. */
typedef enum { FLAG_TEXT, FLAG_INT, FLAG_LONG, FLAG_FLOAT } FlagType;
typedef struct {
    const char *name; /* without the dash */
    FlagType type;
    size_t offset;
    double lo, hi;
    int minus_one;    /* -1 is valid too (a special value outside [lo, hi]) */
} FlagSpec;

#define TEXT(name, field) {name, FLAG_TEXT, offsetof(TrainArgs, field), 0, 0, 0}
#define INT(name, field, lo, hi) {name, FLAG_INT, offsetof(TrainArgs, field), lo, hi, 0}
#define FLOAT(name, field, lo, hi) {name, FLAG_FLOAT, offsetof(TrainArgs, field), lo, hi, 0}
static const FlagSpec FLAGS[] = {
    TEXT("i", train_pattern), TEXT("j", val_pattern), TEXT("ti", test_pattern), TEXT("o", output_dir),
    TEXT("e", init_from), TEXT("tk", tokenizer_path), TEXT("rd", rendezvous_dir), TEXT("ta", task_path),
    TEXT("tp", task_rows_path), TEXT("gp", prompt), TEXT("gf", prompt_file), INT("ge", stop_at_eot, 0, 1), INT("tv", task_every, 0, ARGS_MAX_COUNT),
    INT("b", B, 1, 65536), INT("t", T, 1, 1048576),
    {"d", FLAG_LONG, offsetof(TrainArgs, total_batch_size), 1, 1125899906842624.0 /* 2^50 */, 1},
    INT("x", max_steps, -1, ARGS_MAX_COUNT), FLOAT("l", learning_rate, 0, 10), INT("u", warmup_steps, 0, ARGS_MAX_COUNT),
    FLOAT("q", final_lr_frac, 0, 1), FLOAT("c", weight_decay, 0, 100), FLOAT("C", grad_clip, 0, 1e6),
    INT("nf", max_nonfinite, 1, 1000000), INT("v", val_every, 0, ARGS_MAX_COUNT),
    {"m", FLAG_INT, offsetof(TrainArgs, val_max_steps), 1, ARGS_MAX_COUNT, 1}, INT("ec", eval_carry, 0, 1),
    INT("db", doc_boundaries, 0, 1), INT("cs", carry_state, 0, 1),
    INT("s", sample_every, 0, ARGS_MAX_COUNT), INT("g", gen_T, 0, 1048576), FLOAT("st", temperature, 0, 100),
    INT("sk", top_k, 0, ARGS_MAX_COUNT), INT("n", checkpoint_every, 0, ARGS_MAX_COUNT), INT("y", resume, 0, 1),
    INT("nk", keep_last, 0, ARGS_MAX_COUNT), INT("nm", keep_every, 0, ARGS_MAX_COUNT), INT("ow", overwrite, 0, 1),
    INT("R", seed, 0, 2147483647), INT("sh", shuffle, 0, 1), INT("th", num_threads, 0, 1024), INT("z", zero, 0, 1),
    INT("r", recompute, 0, 2),
    FLOAT("to", rank_timeout, 1, 86400), FLOAT("tc", collective_timeout, 1, 604800),
};
#undef TEXT
#undef INT
#undef FLOAT

static void die_bad_value(const char *program, const char *flag, const char *value, const FlagSpec *spec) {
    char expect[128];
    const char *or_minus_one = spec->minus_one ? "-1 or " : "";
    if (spec->type == FLAG_FLOAT) snprintf(expect, sizeof(expect), "a finite number in [%g, %g]", spec->lo, spec->hi);
    else if (spec->lo == 0 && spec->hi == 1) snprintf(expect, sizeof(expect), "0 or 1");
    else snprintf(expect, sizeof(expect), "%san integer in [%.0f, %.0f]", or_minus_one, spec->lo, spec->hi);
    fprintf(stderr, "%s: bad value '%s' for %s (expected %s); see -h\n", program, value, flag, expect);
    exit(1);
}

/* Stores value into the field of spec, or exits naming the flag, the value and the range. */
static void set_flag(TrainArgs *a, const FlagSpec *spec, const char *program, const char *flag, const char *value) {
    char *field = (char *)a + spec->offset;
    if (spec->type == FLAG_TEXT) {
        *(const char **)field = value;
        return;
    }
    char *end = NULL;
    errno = 0;
    if (spec->type == FLAG_FLOAT) {
        double v = strtod(value, &end);
        if (errno != 0 || end == value || *end != '\0' || !(v >= spec->lo && v <= spec->hi))
            die_bad_value(program, flag, value, spec);
        *(float *)field = (float)v;
        return;
    }
    long long v = strtoll(value, &end, 10);
    int in_range = (v >= (long long)spec->lo && v <= (long long)spec->hi) || (spec->minus_one && v == -1);
    if (errno != 0 || end == value || *end != '\0' || !in_range) die_bad_value(program, flag, value, spec);
    if (spec->type == FLAG_LONG) *(long *)field = (long)v;
    else *(int *)field = (int)v;
}

void args_parse(TrainArgs *a, int argc, char **argv, const char *program) {
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            args_print_help(program);
            exit(0);
        }
        if (flag[0] != '-' || flag[1] == '\0') {
            fprintf(stderr, "%s: unexpected argument '%s'; see -h\n", program, flag);
            exit(1);
        }
        const FlagSpec *spec = NULL;
        for (size_t k = 0; k < sizeof(FLAGS) / sizeof(FLAGS[0]) && spec == NULL; k++)
            if (!strcmp(flag + 1, FLAGS[k].name)) spec = &FLAGS[k];
        if (spec == NULL) {
            fprintf(stderr, "%s: unknown flag %s; see -h\n", program, flag);
            exit(1);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: flag %s needs a value; see -h\n", program, flag);
            exit(1);
        }
        set_flag(a, spec, program, flag, argv[++i]);
    }
    if ((long)a->B * a->T > ARGS_MAX_TOKENS) {
        fprintf(stderr, "%s: -b %d x -t %d = %ld tokens per micro-batch, more than %ld; see -h\n", program, a->B, a->T,
                (long)a->B * a->T, ARGS_MAX_TOKENS);
        exit(1);
    }
    if (a->resume && a->overwrite) {
        fprintf(stderr, "%s: -y 1 resumes the run in -o and -ow 1 replaces it: give one of them\n", program);
        exit(1);
    }
    if ((a->resume || a->overwrite) && a->output_dir == NULL) {
        fprintf(stderr, "%s: %s needs an output dir (-o)\n", program, a->resume ? "-y 1" : "-ow 1");
        exit(1);
    }
    if (a->max_steps == 0 && a->resume) {
        fprintf(stderr, "%s: -x 0 evaluates the model given by -e; it cannot resume (-y 1)\n", program);
        exit(1);
    }
    if ((a->task_every > 0 || a->task_rows_path) && a->task_path == NULL) {
        fprintf(stderr, "%s: %s needs a task file (-ta)\n", program, a->task_every > 0 ? "-tv" : "-tp");
        exit(1);
    }
    if (a->prompt && a->prompt_file) {
        fprintf(stderr, "%s: -gp and -gf both give a prompt: give one of them\n", program);
        exit(1);
    }
    if ((a->prompt || a->prompt_file) && (a->gen_T == 0 || a->sample_every == 0)) {
        fprintf(stderr, "%s: a prompt (%s) needs samples: -g above 0 and -s not 0\n", program, a->prompt ? "-gp" : "-gf");
        exit(1);
    }
    if (a->checkpoint_every > 0 && a->output_dir == NULL) {
        fprintf(stderr, "%s: -n needs an output dir (-o) to write checkpoints to\n", program);
        exit(1);
    }
}

void args_tokenizer_path(const TrainArgs *a, char *out, size_t n) {
    if (a->tokenizer_path) {
        snprintf(out, n, "%s", a->tokenizer_path);
        return;
    }
    const char *slash = strrchr(a->train_pattern, '/');
    if (slash) snprintf(out, n, "%.*s/tokenizer.bin", (int)(slash - a->train_pattern), a->train_pattern);
    else snprintf(out, n, "tokenizer.bin");
}
