/*
 * Command-line options shared by train_ssd (CPU) and train_ssdcu (CUDA). Letters follow llm.c's
 * train_gpt2.cu where the meaning is the same.
 */
#ifndef SSD_TRAIN_ARGS_H
#define SSD_TRAIN_ARGS_H

#include <stddef.h>

/* ranges of the flags (args_print_help lists them all) */
#define ARGS_MAX_COUNT 1000000000   /* steps, intervals and counts (-x, -u, -v, -m, -s, -n, ...) */
#define ARGS_MAX_TOKENS (1L << 24)  /* B*T of a micro-batch */
#define ARGS_MAX_ACCUM (1 << 20)    /* micro-batches per rank and optimizer step (-d) */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *train_pattern;   /* -i  glob of train shards */
    const char *val_pattern;     /* -j  glob of val shards */
    const char *test_pattern;    /* -ti glob of test shards, evaluated in full after training (NULL: none) */
    const char *output_dir;      /* -o  logs and checkpoints (NULL: none) */
    const char *init_from;       /* -e  JSON config (fresh init) or model file (fine-tune) */
    const char *tokenizer_path;  /* -tk tokenizer.bin for samples (default: the model's, train/train_run.c) */
    int B;                       /* -b  micro-batch rows */
    int T;                       /* -t  sequence length */
    long total_batch_size;       /* -d  tokens per optimizer step over all ranks (-1: B*T*world) */
    int max_steps;               /* -x  optimizer steps (-1: one epoch of the train shards; 0: evaluate only) */
    float learning_rate;         /* -l */
    int warmup_steps;            /* -u */
    float final_lr_frac;         /* -q  cosine decays to lr * this */
    float weight_decay;          /* -c */
    float grad_clip;             /* -C  global-norm clip (0: off) */
    int val_every;               /* -v  val loss every N steps (0: never) */
    int val_max_steps;           /* -m  val batches per eval (-1: every target of the val split) */
    int eval_carry;              /* -ec 1: full-split evaluations carry the recurrent state across windows */
    int doc_boundaries;          /* -db 1: every end-of-text input ends a document: conv and state restart after it */
    const char *task_path;       /* -ta task file (data/task.h) scored zero-shot (NULL: none) */
    int task_every;              /* -tv score the task every N steps (0: at the end only) */
    const char *task_rows_path;  /* -tp write each row's task score to this file (NULL: none) */
    int sample_every;            /* -s  sample every N steps and at the end (0: never; -1, the default: at the end) */
    int gen_T;                   /* -g  tokens to generate */
    float temperature;           /* -st */
    int top_k;                   /* -sk (0: full distribution) */
    const char *prompt;          /* -gp prompt token ids, comma-separated (NULL: none) */
    const char *prompt_file;     /* -gf a file of prompt token ids (NULL: none) */
    int stop_at_eot;             /* -ge 1: a sample ends at an end-of-text token */
    int checkpoint_every;        /* -n  checkpoint every N steps (0: only the last step, with -o) */
    int resume;                  /* -y  1: resume from the newest complete checkpoint in -o */
    int keep_last;               /* -nk checkpoints kept (0: all) */
    int keep_every;              /* -nm also keep every M-th step's checkpoint (0: none) */
    int seed;                    /* -R  seed of init, data order and sampling */
    int shuffle;                 /* -sh 1: shuffle train shards and samples */
    int carry_state;             /* -cs 1: each row of a micro-batch reads a stream and carries its conv and SSD state
                                         from one step's window to the next (train_ssd only; needs -sh 0) */
    int num_threads;             /* -th OpenMP threads (0: default) */
    int zero;                    /* -z  1: ZeRO-1, each rank keeps and updates 1/W of the AdamW moments */
    int recompute;               /* -r  activation recomputation in the backward: 0 off, 1 norms/conv/gates, 2 also
                                        the SSD scan (train_ssdcu; train_ssd accepts it and keeps everything) */
    const char *rendezvous_dir;  /* -rd shared directory for the ranks' rendezvous instead of TCP (NULL: TCP) */
    float rank_timeout;          /* -to seconds without a heartbeat after which a rank counts as failed */
    float collective_timeout;    /* -tc seconds a collective may wait before the run is aborted */
    int max_nonfinite;           /* -nf consecutive steps with a non-finite loss or gradient norm that stop the run */
    int overwrite;               /* -ow 1: a fresh run may replace the run already in -o */
} TrainArgs;

/* Exit statuses of the trainers (also in -h): 0 done, 1 an error (a bad flag, config or file), and: */
#define EXIT_NONFINITE 3     /* -nf steps in a row had a non-finite loss or gradient norm, or an evaluation did */
#define EXIT_INTERRUPTED 75  /* stopped by SIGINT, SIGTERM or SIGUSR1 after a step; checkpointed when -o is set */

void args_defaults(TrainArgs *args);
/* Parses argv; prints help and exits 0 on -h, prints an error and exits 1 on a bad flag or value: every
 * value must lie in its flag's range (listed by -h), so nothing wraps around or is not finite. */
void args_parse(TrainArgs *args, int argc, char **argv, const char *program);
void args_print_help(const char *program);
/* The tokenizer for samples: -tk, else tokenizer.bin in the directory of the train shards. */
void args_tokenizer_path(const TrainArgs *args, char *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
