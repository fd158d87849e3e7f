#include "model/cpu_sample.h"
#include "common/rng.h"
#include "common/utils.h"

const char *sample_text(Tokenizer *tokenizer, int token) {
    /* a BPE end-of-text token ends a document: a blank line, not its literal "<|endoftext|>" (a word-level
     * <eos> is already a newline) */
    if (tokenizer->loaded && token == tokenizer_eot(tokenizer) && tokenizer->kind != TOKENIZER_WORD) return "\n\n";
    return tokenizer_decode(tokenizer, (uint32_t)token);
}

void sample_print(Mamba *model, Tokenizer *tokenizer, int gen_T, float temperature, int top_k, uint64_t *rng) {
    const ModelConfig *c = &model->config;
    int start = tokenizer_eot(tokenizer);
    if (start < 0 || start >= c->vocab_size) start = 0;
    MambaInferenceState state;
    inference_state_init(&state, c);
    real *logits = (real *)mallocCheck(sizeof(real) * c->padded_vocab);
    mamba_prefill(model, &start, 1, &state, logits);
    printf("generating:\n---\n");
    for (int t = 0; t < gen_T; t++) {
        int next = sample_token(logits, c->vocab_size, temperature, top_k, (float)rng_uniform(rng));
        printf("%s", sample_text(tokenizer, next));
        fflush(stdout);
        mamba_step(model, next, &state, logits);
    }
    printf("\n---\n");
    free(logits);
    inference_state_free(&state);
}
