/*
 * Generation: the model reads an end-of-text token and the prompt (one chunked prefill), then draws
 * tokens one at a time through the recurrence, each fed back in: O(1) work per token whatever the
 * length so far. The model behind it is a TokenFeeder: the CPU model (sample_cpu_feeder_init) or the
 * CUDA trainer's GPU model (train_ssd.cu). Both trainers print their samples through sample_generate.
 */
#ifndef SSD_MODEL_CPU_SAMPLE_H
#define SSD_MODEL_CPU_SAMPLE_H

#include <stdint.h>

#include "model/cpu_model.h"
#include "data/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A model that reads one sequence, keeping its recurrent state between calls. */
typedef struct {
    void *self;
    const char *device;  /* where it runs ("CPU", "GPU"), printed with the speed */
    /* Reads tokens[0..n) (n >= 1) after those read since the last reset (reset 1: from a zero state) and
     * writes the logits that follow the last of them (padded_vocab entries). */
    void (*feed)(void *self, const int *tokens, int n, int reset, real *logits);
} TokenFeeder;

typedef struct {
    int start_token;     /* read first: the end-of-text token that precedes every document in the data */
    const int *prompt;   /* the tokens the continuation follows (after the start token); may be NULL */
    int prompt_len;
    int gen_T;           /* tokens to draw at most */
    float temperature;   /* 0: the most likely token (greedy) */
    int top_k;           /* 0: the full distribution */
    int stop_token;      /* drawing it ends the continuation (it is not printed); -1: none */
} SampleSettings;

typedef struct {
    int generated;           /* tokens drawn (the end-of-text that stopped it included) */
    double prefill_seconds;  /* reading the start token and the prompt */
    double decode_seconds;   /* drawing and feeding back the continuation */
} SampleStats;

/* The CPU model as a TokenFeeder: a chunked prefill after a reset, the recurrence (mamba_step) after that. */
typedef struct {
    Mamba *model;
    MambaInferenceState state;
} CPUFeeder;
TokenFeeder sample_cpu_feeder_init(CPUFeeder *f, Mamba *model);
void sample_cpu_feeder_free(CPUFeeder *f);

/* The text a sample prints for one token: its bytes, or a blank line for a BPE end-of-text token. */
const char *sample_text(Tokenizer *tokenizer, int token);
/* Draws a continuation of the start token and the prompt with coins from rng; out (if not NULL) gets the drawn tokens
 * (gen_T entries at most). tokenizer not NULL: prints the continuation as it is drawn, between "---" lines,
 * then the speed: "generated N tokens on the CPU in S s: R tokens/s | prompt ...". */
SampleStats sample_generate(TokenFeeder *feeder, const ModelConfig *config, const SampleSettings *settings,
                            uint64_t *rng, Tokenizer *tokenizer, int *out);

#ifdef __cplusplus
}
#endif
#endif
