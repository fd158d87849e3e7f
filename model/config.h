/*
 * Model configuration: the sizes of a Mamba-2 / SSD-Mamba language model, read from JSON.
 *
 * Derived sizes follow the reference Mamba-2 block:
 *   d_inner = expand * d_model            (E)
 *   nheads  = d_inner / headdim           (H)
 *   conv_dim = d_inner + 2 * ngroups * d_state   (channels of xBC)
 *   d_in_proj = 2 * d_inner + 2 * ngroups * d_state + nheads   ([z, xBC, dt])
 *   padded_vocab = vocab_size rounded up to pad_vocab_multiple
 *
 * Every field has a valid range (docs/config.md); the reader refuses a value outside it, naming the
 * field, the value and the range, before any size is derived from it.
 */
#ifndef SSD_MODEL_CONFIG_H
#define SSD_MODEL_CONFIG_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* the largest config file config_load reads */
#define CONFIG_MAX_FILE_BYTES (1 << 20)

typedef enum { A_SCALAR = 0, A_DIAGONAL = 1 } AStructure;

typedef struct {
    char name[64];
    char tokenizer[64];                   /* optional note, e.g. "gpt-neox-20b"; "" if unknown */
    int d_model;
    int n_layer;
    int vocab_size;
    int pad_vocab_multiple;
    int d_state;
    int d_conv;
    int expand;
    int headdim;
    int ngroups;
    int chunk_size;
    AStructure a_structure;
    float dt_min, dt_max, dt_init_floor;  /* dt initialisation range (reference defaults) */
    float norm_eps;                       /* RMSNorm and gated RMSNorm epsilon */
    /* derived */
    int d_inner;
    int nheads;
    int conv_dim;
    int d_in_proj;
    int padded_vocab;
    int a_per_head;                       /* entries of A_log per head: 1 (scalar) or d_state */
} ModelConfig;

/* Parse a JSON text. On error returns non-zero and writes a message naming the field into err. */
int config_parse(ModelConfig *config, const char *json_text, const char *source, char *err, size_t errlen);
/* Read and parse a JSON file; prints the error and exits on failure. */
void config_load(ModelConfig *config, const char *path);
/* Check sizes and fill the derived fields; non-zero with a message on an impossible shape. */
int config_finalize(ModelConfig *config, char *err, size_t errlen);
/* Serialise to a compact JSON text (caller frees). Parsing it gives back the same config. */
char *config_to_json(const ModelConfig *config);
void config_print(const ModelConfig *config);
/* Non-zero if the two configs describe the same model shape. */
int config_equal(const ModelConfig *a, const ModelConfig *b);

#ifdef __cplusplus
}
#endif
#endif
