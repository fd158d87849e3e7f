/*
 * Runs the CPU forward of a model file on a batch of tokens and writes the logits, for comparing
 * with other implementations (tests/hf_parity.py compares with transformers' Mamba2ForCausalLM).
 *
 *   logits_main MODEL.bin TOKENS.i32 B T OUT.f32
 *
 * TOKENS.i32 holds B*T little-endian int32 token ids; OUT.f32 gets float32 logits [B, T, vocab_size]
 * (the padding columns >= vocab_size are left out).
 */
#include "train/checkpoint.h"
#include "model/cpu_model.h"
#include "common/utils.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_positive(const char *text, const char *what) {
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v <= 0 || v > (1 << 24)) {
        fprintf(stderr, "error: %s must be a positive integer (got '%s')\n", what, text);
        exit(1);
    }
    return (int)v;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL.bin TOKENS.i32 B T OUT.f32\n", argv[0]);
        return 1;
    }
    const char *model_path = argv[1], *tokens_path = argv[2], *out_path = argv[5];
    int B = parse_positive(argv[3], "B"), T = parse_positive(argv[4], "T");
    ModelConfig config;
    float *params;
    model_file_read(model_path, &config, &params);

    size_t n_tokens = (size_t)B * T, bytes;
    char *raw = read_text_file(tokens_path, &bytes);
    if (raw == NULL) {
        fprintf(stderr, "error: cannot read token file '%s'\n", tokens_path);
        return 1;
    }
    if (bytes != n_tokens * sizeof(int)) {
        fprintf(stderr, "error: '%s' has %zu bytes, B*T = %zu int32 tokens need %zu\n", tokens_path, bytes, n_tokens,
                n_tokens * sizeof(int));
        return 1;
    }
    int *tokens = (int *)mallocCheck(n_tokens * sizeof(int));
    memcpy(tokens, raw, n_tokens * sizeof(int));
    free(raw);
    for (size_t i = 0; i < n_tokens; i++) {
        if (tokens[i] < 0 || tokens[i] >= config.vocab_size) {
            fprintf(stderr, "error: '%s': token %zu is %d, outside [0, %d)\n", tokens_path, i, tokens[i],
                    config.vocab_size);
            return 1;
        }
    }

    Mamba model;
    mamba_build(&model, &config, params);
    mamba_forward(&model, tokens, NULL, B, T);
    size_t V = (size_t)config.vocab_size, Vp = (size_t)config.padded_vocab;
    float *row = (float *)mallocCheck(V * sizeof(float));
    FILE *fp = fopenCheck(out_path, "wb");
    for (size_t i = 0; i < n_tokens; i++) {
        for (size_t v = 0; v < V; v++) row[v] = (float)model.acts.logits[i * Vp + v];
        fwriteCheck(row, sizeof(float), V, fp);
    }
    fcloseCheck(fp);
    printf("wrote %s: logits [%d, %d, %zu] of %s\n", out_path, B, T, V, model_path);
    free(row);
    free(tokens);
    free(params);
    mamba_free(&model);
    return 0;
}
