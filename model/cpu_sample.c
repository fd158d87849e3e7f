/* Generation through a TokenFeeder (see cpu_sample.h), and the CPU model's feeder. */
#include "model/cpu_sample.h"
#include "common/rng.h"
#include "common/utils.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void cpu_feed(void *self, const int *tokens, int n, int reset, real *logits) {
    CPUFeeder *f = (CPUFeeder *)self;
    if (reset) {
        mamba_prefill(f->model, tokens, n, &f->state, logits); /* starts from a zero state */
        return;
    }
    for (int i = 0; i < n; i++) mamba_step(f->model, tokens[i], &f->state, logits);
}

TokenFeeder sample_cpu_feeder_init(CPUFeeder *f, Mamba *model) {
    f->model = model;
    inference_state_init(&f->state, &model->config);
    TokenFeeder feeder = {f, "CPU", cpu_feed};
    return feeder;
}

void sample_cpu_feeder_free(CPUFeeder *f) { inference_state_free(&f->state); }

const char *sample_text(Tokenizer *tokenizer, int token) {
    /* a BPE end-of-text token ends a document: a blank line, not its literal "<|endoftext|>" (a word-level
     * <eos> is already a newline) */
    if (tokenizer->loaded && token == tokenizer_eot(tokenizer) && tokenizer->kind != TOKENIZER_WORD) return "\n\n";
    return tokenizer_decode(tokenizer, (uint32_t)token);
}

SampleStats sample_generate(TokenFeeder *feeder, const ModelConfig *c, const SampleSettings *s, uint64_t *rng,
                            Tokenizer *tokenizer, int *out) {
    SampleStats stats = {0, 0.0, 0.0};
    int n = 1 + s->prompt_len;
    int *context = (int *)mallocCheck(sizeof(int) * n);
    context[0] = s->start_token;
    for (int i = 0; i < s->prompt_len; i++) context[i + 1] = s->prompt[i];
    real *logits = (real *)mallocCheck(sizeof(real) * c->padded_vocab);
    double t0 = wall_seconds();
    feeder->feed(feeder->self, context, n, 1, logits);
    double t1 = wall_seconds();
    stats.prefill_seconds = t1 - t0;
    if (tokenizer) printf("generating:\n---\n");
    for (int t = 0; t < s->gen_T; t++) {
        int next = sample_token(logits, c->vocab_size, s->temperature, s->top_k, (float)rng_uniform(rng));
        if (out) out[t] = next;
        stats.generated++;
        if (next == s->stop_token) break;
        if (tokenizer) {
            printf("%s", sample_text(tokenizer, next));
            fflush(stdout);
        }
        if (t + 1 < s->gen_T) feeder->feed(feeder->self, &next, 1, 0, logits);
    }
    stats.decode_seconds = wall_seconds() - t1;
    if (tokenizer)
        printf("\n---\ngenerated %d tokens on the %s in %.3f s: %.1f tokens/s | prompt %d tokens (and the start token) "
               "in %.3f s\n", stats.generated, feeder->device, stats.decode_seconds, stats.generated / fmax(stats.decode_seconds, 1e-9), s->prompt_len,
               stats.prefill_seconds);
    free(logits);
    free(context);
    return stats;
}
