#include "train/args.h"

#include <errno.h>
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
    a->task_path = NULL;
    a->task_every = 0;
    a->task_rows_path = NULL;
    a->sample_every = -1; /* not given: one sample at the end */
    a->gen_T = 64;
    a->temperature = 1.0f;
    a->top_k = 0;
    a->checkpoint_every = 0;
    a->resume = 0;
    a->keep_last = 0;
    a->keep_every = 0;
    a->seed = 1337;
    a->shuffle = 1;
    a->num_threads = 0;
    a->zero = 0;
    a->rendezvous_dir = NULL;
    a->rank_timeout = 30.0f;
    a->collective_timeout = 900.0f;
}

void args_print_help(const char *program) {
    fprintf(stdout,
            "usage: %s [options]\n"
            "Trains a Mamba-2 (scalar A) or SSD-Mamba (diagonal A) language model.\n\n"
            "data\n"
            "  -i <glob>    train shards (default datasets/tinyshakespeare/*_train_*.bin)\n"
            "  -j <glob>    val shards (default datasets/tinyshakespeare/*_val_*.bin)\n"
            "  -ti <glob>   test shards, evaluated in full after training (default: none)\n"
            "  -tk <file>   tokenizer.bin for decoding samples; must be the model's (default: the model's own,\n"
            "               found beside the model file or the data)\n"
            "  -sh <0|1>    shuffle train shards and samples (default 1)\n"
            "model\n"
            "  -e <file>    JSON config (fresh init) or model file (fine-tune) (default configs/mamba2-tiny.json)\n"
            "  -R <int>     seed for init, data order and sampling (default 1337)\n"
            "optimisation\n"
            "  -b <int>     micro-batch size B (default 4)\n"
            "  -t <int>     sequence length T (default 256)\n"
            "  -d <int>     total batch size in tokens over all ranks; a multiple of B*T*ranks\n"
            "               (default B*T*ranks: no accumulation)\n"
            "  -x <int>     optimizer steps (default -1: one epoch; 0: evaluate -e and exit)\n"
            "  -l <float>   peak learning rate (default 1e-3)\n"
            "  -u <int>     linear warmup steps (default 0)\n"
            "  -q <float>   final learning rate as a fraction of the peak, cosine decay (default 0.0)\n"
            "  -c <float>   AdamW weight decay on in_proj, out_proj and conv weights (default 0.1)\n"
            "  -C <float>   global gradient-norm clip, 0 for none (default 1.0)\n"
            "evaluation and sampling\n"
            "  -v <int>     val loss every N steps, 0 for never (default 20)\n"
            "  -m <int>     val batches per evaluation, -1 for every target of the split once (default 20)\n"
            "  -ec <0|1>    full-split evaluation (-m -1, -ti) carries the recurrent state across\n"
            "               consecutive windows of T tokens: 1, or starts each window fresh: 0 (default 0)\n"
            "  -ta <file>   downstream task to score zero-shot (scripts/prepare_task.py; default: none)\n"
            "  -tv <int>    score the task every N steps, 0 for only after the last (default 0)\n"
            "  -tp <file>   write every row's task score (item, ending, log-likelihood, greedy) to file\n"
            "  -s <int>     print a sample every N steps and at the end, 0 for never (default: at the end only)\n"
            "  -g <int>     tokens to generate per sample (default 64)\n"
            "  -st <float>  sampling temperature (default 1.0)\n"
            "  -sk <int>    top-k sampling, 0 for the full distribution (default 0)\n"
            "output and checkpoints\n"
            "  -o <dir>     output dir for main.log, checkpoints and the final model (default: none)\n"
            "  -n <int>     checkpoint every N steps; with -o the last step is always saved (default 0: only it)\n"
            "  -y <0|1>     resume from the newest complete checkpoint in -o (default 0)\n"
            "  -nk <int>    keep only the last K checkpoints, 0 for all (default 0)\n"
            "  -nm <int>    also keep every M-th step's checkpoint (default 0)\n"
            "several processes (one per GPU; launched by torchrun, srun or mpirun: README)\n"
            "  -z <0|1>     ZeRO-1: each rank keeps and updates 1/W of the optimizer state (default 0)\n"
            "  -rd <dir>    meet through a file in this shared directory instead of TCP at\n"
            "               MASTER_ADDR:MASTER_PORT (default: TCP)\n"
            "  -to <sec>    a rank silent this long counts as failed; the others exit (default 30)\n"
            "  -tc <sec>    longest wait inside one collective before the run aborts (default 900)\n"
            "other\n"
            "  -th <int>    CPU threads (OpenMP; default all)\n"
            "  -h           this help\n",
            program);
}

static void die_bad_value(const char *program, const char *flag, const char *value, const char *expect) {
    fprintf(stderr, "%s: bad value '%s' for %s (expected %s); see -h\n", program, value, flag, expect);
    exit(1);
}

static long parse_long(const char *program, const char *flag, const char *value, long min) {
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || v < min) {
        char expect[64];
        snprintf(expect, sizeof(expect), "an integer >= %ld", min);
        die_bad_value(program, flag, value, expect);
    }
    return v;
}

static float parse_float(const char *program, const char *flag, const char *value, float min) {
    char *end = NULL;
    errno = 0;
    float v = strtof(value, &end);
    if (errno != 0 || end == value || *end != '\0' || !(v >= min)) {
        char expect[64];
        snprintf(expect, sizeof(expect), "a number >= %g", min);
        die_bad_value(program, flag, value, expect);
    }
    return v;
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
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: flag %s needs a value; see -h\n", program, flag);
            exit(1);
        }
        const char *v = argv[++i];
        const char *f = flag + 1;
        if (!strcmp(f, "i")) a->train_pattern = v;
        else if (!strcmp(f, "j")) a->val_pattern = v;
        else if (!strcmp(f, "ti")) a->test_pattern = v;
        else if (!strcmp(f, "o")) a->output_dir = v;
        else if (!strcmp(f, "e")) a->init_from = v;
        else if (!strcmp(f, "tk")) a->tokenizer_path = v;
        else if (!strcmp(f, "b")) a->B = (int)parse_long(program, flag, v, 1);
        else if (!strcmp(f, "t")) a->T = (int)parse_long(program, flag, v, 1);
        else if (!strcmp(f, "d")) a->total_batch_size = parse_long(program, flag, v, -1);
        else if (!strcmp(f, "x")) a->max_steps = (int)parse_long(program, flag, v, -1);
        else if (!strcmp(f, "l")) a->learning_rate = parse_float(program, flag, v, 0.0f);
        else if (!strcmp(f, "u")) a->warmup_steps = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "q")) a->final_lr_frac = parse_float(program, flag, v, 0.0f);
        else if (!strcmp(f, "c")) a->weight_decay = parse_float(program, flag, v, 0.0f);
        else if (!strcmp(f, "C")) a->grad_clip = parse_float(program, flag, v, 0.0f);
        else if (!strcmp(f, "v")) a->val_every = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "m")) a->val_max_steps = (int)parse_long(program, flag, v, -1);
        else if (!strcmp(f, "ec")) a->eval_carry = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "ta")) a->task_path = v;
        else if (!strcmp(f, "tv")) a->task_every = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "tp")) a->task_rows_path = v;
        else if (!strcmp(f, "s")) a->sample_every = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "g")) a->gen_T = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "st")) a->temperature = parse_float(program, flag, v, 0.0f);
        else if (!strcmp(f, "sk")) a->top_k = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "n")) a->checkpoint_every = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "y")) a->resume = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "nk")) a->keep_last = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "nm")) a->keep_every = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "R")) a->seed = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "sh")) a->shuffle = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "th")) a->num_threads = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "z")) a->zero = (int)parse_long(program, flag, v, 0);
        else if (!strcmp(f, "rd")) a->rendezvous_dir = v;
        else if (!strcmp(f, "to")) a->rank_timeout = parse_float(program, flag, v, 1.0f);
        else if (!strcmp(f, "tc")) a->collective_timeout = parse_float(program, flag, v, 1.0f);
        else {
            fprintf(stderr, "%s: unknown flag %s; see -h\n", program, flag);
            exit(1);
        }
    }
    if (a->final_lr_frac > 1.0f) die_bad_value(program, "-q", "(>1)", "a fraction in [0, 1]");
    if (a->resume > 1 || a->shuffle > 1) die_bad_value(program, a->resume > 1 ? "-y" : "-sh", ">1", "0 or 1");
    if (a->eval_carry > 1) die_bad_value(program, "-ec", ">1", "0 or 1");
    if (a->zero > 1) die_bad_value(program, "-z", ">1", "0 or 1");
    if (a->resume && a->output_dir == NULL) {
        fprintf(stderr, "%s: -y 1 needs an output dir (-o) to resume from\n", program);
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
