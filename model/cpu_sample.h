/*
 * Printing a sample from a model: a chunked prefill of the end-of-text token, then gen_T tokens
 * drawn one at a time through the recurrence. Both trainers use it (the CUDA one on a CPU copy
 * of its weights).
 */
#ifndef SSD_MODEL_CPU_SAMPLE_H
#define SSD_MODEL_CPU_SAMPLE_H

#include <stdint.h>

#include "model/cpu_model.h"
#include "data/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The text a sample prints for one token: its bytes, or a blank line for a BPE end-of-text token. */
const char *sample_text(Tokenizer *tokenizer, int token);
void sample_print(Mamba *model, Tokenizer *tokenizer, int gen_T, float temperature, int top_k, uint64_t *rng);

#ifdef __cplusplus
}
#endif
#endif
