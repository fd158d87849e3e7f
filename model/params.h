/*
 * Parameter layout of the Mamba-2 / SSD-Mamba LM, shared by both trainers and the checkpoint
 * format. All parameters live in one flat buffer; tensor i starts at the sum of the sizes of
 * tensors 0..i-1. Per-layer tensors are stacked over layers (layer-major, llm.c style).
 * Matrices are row-major [out, in] like torch.nn.Linear.weight.
 *
 *   0 wte         [Vp, D]          embedding, tied to the lm_head (rows >= vocab_size are padding)
 *   1 norm_w      [L, D]           pre-norm RMSNorm weight
 *   2 in_proj_w   [L, d_in_proj, D]  -> [z (E), xBC (E+2GN), dt (H)]
 *   3 conv_w      [L, conv_dim, d_conv]
 *   4 conv_b      [L, conv_dim]
 *   5 dt_bias     [L, H]
 *   6 A_log       [L, H] scalar A, or [L, H, N] diagonal A
 *   7 D           [L, H]
 *   8 gnorm_w     [L, E]           gated RMSNorm weight
 *   9 out_proj_w  [L, D, E]
 *  10 norm_f      [D]
 */
#ifndef SSD_MODEL_PARAMS_H
#define SSD_MODEL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    P_WTE, P_NORM_W, P_IN_PROJ_W, P_CONV_W, P_CONV_B, P_DT_BIAS, P_A_LOG, P_D, P_GNORM_W, P_OUT_PROJ_W, P_NORM_F,
    NUM_PARAM_TENSORS
};

typedef struct {
    size_t sizes[NUM_PARAM_TENSORS];    /* elements of each tensor (all layers) */
    size_t offsets[NUM_PARAM_TENSORS];  /* element offset of each tensor in the flat buffer */
    size_t total;                       /* total elements */
    size_t layer_sizes[NUM_PARAM_TENSORS];  /* elements of one layer's slice (0 for wte, norm_f) */
} ParamLayout;

extern const char *PARAM_NAMES[NUM_PARAM_TENSORS];

void param_layout_init(ParamLayout *layout, const ModelConfig *config);
/* Element offset of layer l's slice inside a per-layer tensor. */
static inline size_t param_layer_offset(const ParamLayout *layout, int tensor, int l) {
    return layout->layer_sizes[tensor] * (size_t)l;
}
/* 1 if AdamW applies weight decay to this tensor (in_proj, out_proj, conv weights only). */
int param_has_weight_decay(int tensor);
/* Reference initialisation into an fp32 buffer of layout->total elements, reproducible from seed. */
void params_init(const ModelConfig *config, float *params, uint64_t seed);
/* The first of x[0..n), the values of parameters [first, first + n) of the flat layout (weights or an
 * optimizer moment), that is not finite, or is negative when nonnegative: returns its tensor (an index
 * into PARAM_NAMES) and sets *element to its position in that tensor; -1 if every value is fine. */
int params_find_nonfinite(const ParamLayout *layout, const float *x, size_t first, size_t n, int nonnegative,
                          size_t *element);
/* Parameters excluding the padded embedding rows: what a user means by "model size". */
size_t params_count_effective(const ModelConfig *config);

#ifdef __cplusplus
}
#endif
#endif
