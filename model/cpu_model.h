/*
 * The Mamba-2 / SSD-Mamba language model on the CPU: forward, backward, AdamW, and O(1)-per-token
 * generation by the recurrence. Computes in `real` (float, or double with -DSSD_DOUBLE).
 *
 * Forward for tokens [B, T]:
 *   residual = wte[tokens]
 *   for each layer l: (layer 0 adds nothing: residual is the embedding)
 *       h = RMSNorm(residual) * norm_w[l]
 *       zxbcdt = h @ in_proj_w[l]^T                      -> z [E], xBC [E+2GN], dt [H]
 *       xBC = SiLU(causal_depthwise_conv(xBC) + conv_b)
 *       y = SSD(x, softplus(dt + dt_bias), -exp(A_log), B, C) + D x      (chunked form)
 *       g = y * SiLU(z);  g = g / rms_per_group(g) * gnorm_w
 *       residual += g @ out_proj_w[l]^T
 *   logits = RMSNorm(residual) * norm_f @ wte^T        (columns >= vocab_size masked out)
 *   loss = mean cross-entropy over the B*T targets that count (a target -1, IGNORE_TARGET of
 *          data/dataloader.h, is a loss mask's 0: no loss term, no gradient)
 */
#ifndef SSD_MODEL_CPU_MODEL_H
#define SSD_MODEL_CPU_MODEL_H

#include <stddef.h>

#include "model/config.h"
#include "model/params.h"
#include "model/real.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    real *residual;    /* [L+1, B, T, D]: the residual stream entering each layer, and after the last */
    real *norm_out;    /* [L, B, T, D]  RMSNorm output (input of in_proj) */
    real *norm_rstd;   /* [L, B, T] */
    real *zxbcdt;      /* [L, B, T, d_in_proj] */
    real *xbc_conv;    /* [L, B, T, conv_dim]  conv output before SiLU */
    real *xbc;         /* [L, B, T, conv_dim]  after SiLU: x, B, C */
    real *delta;       /* [L, B, T, H]  softplus(dt + dt_bias) */
    real *y;           /* [L, B, T, E]  SSD output including D x */
    real *gated_rstd;  /* [L, B, T, G] */
    real *gated_out;   /* [L, B, T, E]  input of out_proj */
    real *final_norm;  /* [B, T, D] */
    real *final_rstd;  /* [B, T] */
    real *logits;      /* [B, T, Vp]; after backward holds dlogits */
    real *losses;      /* [B, T] per-token loss */
    real *lse;         /* [B, T] log-sum-exp of each row of logits */
} MambaActivations;

typedef struct {
    ModelConfig config;
    ParamLayout layout;
    real *params;                      /* flat, layout.total */
    real *grads;
    real *param_tensors[NUM_PARAM_TENSORS];
    real *grad_tensors[NUM_PARAM_TENSORS];
    real *adam_m, *adam_v;             /* allocated at the first update */
    MambaActivations acts;
    real *scratch;                     /* gradients of activations during backward */
    int B, T;                          /* shape of the last forward */
    size_t capacity_tokens;            /* activation buffers hold this many tokens */
    const int *inputs;                 /* of the last forward */
    int *targets;                      /* copy of the last forward's targets (NULL: no loss) */
    real mean_loss;                    /* of the last forward over its counted targets (0 if none), -1 without targets */
    int counted_targets;               /* targets of the last forward that count (not -1) */
    int carried_state;                 /* the last forward started from carried states (mamba_forward_carry) */
    real *carry_conv;                  /* [L, B, d_conv-1, conv_dim] the conv states it started from */
    real *carry_ssm;                   /* [L, B, H, P, N] the SSD states it started from */
    int carry_rows;                    /* rows carry_conv and carry_ssm hold */
    int doc_eot;                       /* document boundaries: this input token ends a document; -1: off */
    int *segment;                      /* [B, T] of the last forward: documents started at or before t */
} Mamba;

/* Bytes of host memory a trainer with this model needs for micro-batches of B x T tokens: parameters,
 * gradients, AdamW moments, activations, backward scratch, the trainer's fp32 copies and, if sampling,
 * the sampling copy. Computed in double (no overflow) before anything is allocated. */
double mamba_memory_bytes(const ModelConfig *config, int B, int T, int sampling);
void mamba_build(Mamba *model, const ModelConfig *config, const float *params);
/* Document boundaries (off after mamba_build): every input equal to eot (the end-of-text id) is the last token of
 * its document, and the next position starts a new one: the conv window and the SSD state restart there,
 * forward and backward (model/cpu_ssd.h), so a packed row computes exactly what its documents would alone.
 * eot = -1 turns them off. A row's first position continues whatever came before the row. */
void mamba_set_document_end(Mamba *model, int eot);
/* Copies the parameters out as fp32 (for checkpoints). */
void mamba_get_params(const Mamba *model, float *out);
void mamba_forward(Mamba *model, const int *inputs, const int *targets, int B, int T);
void mamba_zero_grad(Mamba *model);
/* Accumulates d(loss_scale * mean_loss)/d(params) into model->grads (mean over the counted targets). */
void mamba_backward(Mamba *model, real loss_scale);
real mamba_grad_norm(const Mamba *model);
/* AdamW step t (1-based); weight decay on in_proj, out_proj, conv weights only. grad_scale
 * multiplies the gradients first (clipping). */
void mamba_update(Mamba *model, real lr, real beta1, real beta2, real eps, real weight_decay, real grad_scale, int t);
/* The same for the parameters [begin, end) only (a ZeRO-1 shard). */
void mamba_update_range(Mamba *model, size_t begin, size_t end, real lr, real beta1, real beta2, real eps,
                        real weight_decay, real grad_scale, int t);
/* Allocates the AdamW moments (zero) if they are not yet. */
void mamba_alloc_moments(Mamba *model);
void mamba_free(Mamba *model);

/* Recurrent inference state for generation: one sequence. */
typedef struct {
    real *conv_state;  /* [L, d_conv-1, conv_dim] last inputs of the conv (oldest first) */
    real *ssm_state;   /* [L, H, P, N] */
    real *scratch;     /* per-token work space */
} MambaInferenceState;

void inference_state_init(MambaInferenceState *state, const ModelConfig *config);
/* Zeroes the conv and SSM states: the start of a new sequence. */
void inference_state_reset(MambaInferenceState *state, const ModelConfig *config);
void inference_state_free(MambaInferenceState *state);
/* Chunked forward over tokens[0..n) (one sequence); leaves the conv and SSM states for stepping
 * and writes the last position's logits (Vp entries). */
void mamba_prefill(Mamba *model, const int *tokens, int n, MambaInferenceState *state, real *logits);
/* One token through the recurrence: O(1) in the sequence length. */
void mamba_step(Mamba *model, int token, MambaInferenceState *state, real *logits);
/* Forward of B streams that continue from a carried recurrent state: states[b] (one sequence each,
 * as in generation) holds the conv and SSM states after stream b's earlier tokens; it is read as the
 * initial state and replaced by the state after these T tokens. With zero states this is
 * mamba_forward. Per-token losses are in acts.losses. mamba_backward may follow: the starting states
 * (kept in carry_conv, carry_ssm) are constants, the gradient stops at the window's start. Their terms
 * reach the parameters: the carried conv inputs through the conv weights, the carried SSD state
 * through C, delta and A (model/cpu_ssd.h); with document boundaries only up to a row's first one, and a row
 * whose last input ends a document leaves zero states (the next window starts a document). */
void mamba_forward_carry(Mamba *model, const int *inputs, const int *targets, int B, int T,
                         MambaInferenceState *states);
/* Samples from logits [Vp] (vocab_size valid) with temperature and top-k; coin in [0, 1). */
int sample_token(const real *logits, int vocab_size, float temperature, int top_k, float coin);

#ifdef __cplusplus
}
#endif
#endif
