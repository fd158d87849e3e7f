/*
 * The Mamba-2 / SSD-Mamba LM on the CPU (see cpu_model.h for the forward pass): a forward that
 * keeps what the backward needs, the backward, AdamW, generation by the recurrence, and full-split
 * evaluation with or without the recurrent state carried across windows.
 */
#include "model/cpu_model.h"
#include "model/cpu_layers.h"
#include "model/cpu_ssd.h"
#include "common/utils.h"
#include "data/dataloader.h"

#include <string.h>
#include <tgmath.h>

/* ------------------------------------------------------------------------------------------------
 * building
 */
double mamba_memory_bytes(const ModelConfig *c, int B, int T, int sampling) {
    ParamLayout layout;
    param_layout_init(&layout, c);
    double n = (double)layout.total, r = sizeof(real), BT = (double)B * T, L = c->n_layer, D = c->d_model;
    double E = c->d_inner, H = c->nheads, P = c->headdim, N = c->d_state, Q = c->chunk_size < T ? c->chunk_size : T;
    double per_token = (L + 1) * D + L * D + L + L * c->d_in_proj + 2 * L * c->conv_dim + L * H + 2 * L * E +
                       L * c->ngroups + D + 1 + c->padded_vocab + 2 +
                       (2 * D + c->d_in_proj + c->conv_dim + H + 2 * E); /* backward scratch */
    double ssd_scratch = 2 * H * T * N + H * (T / Q + 1) * P * N + H * T * P;
    double bytes = 4 * n * r + 8 * n + BT * (per_token * r + sizeof(int)) + ssd_scratch * r;
    if (sampling) bytes += 2 * n * r;
    return bytes;
}

void mamba_build(Mamba *model, const ModelConfig *config, const float *params) {
    memset(model, 0, sizeof(*model));
    model->config = *config;
    param_layout_init(&model->layout, config);
    size_t n = model->layout.total;
    model->params = (real *)mallocCheck(sizeof(real) * n);
    model->grads = (real *)callocCheck(n, sizeof(real));
    for (size_t i = 0; i < n; i++) model->params[i] = params[i];
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        model->param_tensors[t] = model->params + model->layout.offsets[t];
        model->grad_tensors[t] = model->grads + model->layout.offsets[t];
    }
    model->mean_loss = -1;
    model->doc_eot = -1;
}

void mamba_set_document_end(Mamba *model, int eot) { model->doc_eot = eot; }

/* row b's segments, or NULL when document boundaries are off */
static const int *row_segment(const Mamba *model, int b) {
    return model->doc_eot >= 0 ? model->segment + (size_t)b * model->T : NULL;
}

void mamba_get_params(const Mamba *model, float *out) {
    for (size_t i = 0; i < model->layout.total; i++) out[i] = (float)model->params[i];
}

/* sizes of one layer's slice of each activation, per token */
static void activations_alloc(Mamba *model, int B, int T) {
    const ModelConfig *c = &model->config;
    MambaActivations *a = &model->acts;
    size_t BT = (size_t)B * T, L = (size_t)c->n_layer;
    model->B = B;
    model->T = T;
    if (model->capacity_tokens >= BT) return;
    free(a->residual); free(a->norm_out); free(a->norm_rstd); free(a->zxbcdt); free(a->xbc_conv); free(a->xbc);
    free(a->delta); free(a->y); free(a->gated_rstd); free(a->gated_out); free(a->final_norm); free(a->final_rstd);
    free(a->logits); free(a->losses); free(a->lse); free(model->scratch); free(model->targets); free(model->segment);
    a->residual = (real *)mallocCheck(sizeof(real) * (L + 1) * BT * c->d_model);
    a->norm_out = (real *)mallocCheck(sizeof(real) * L * BT * c->d_model);
    a->norm_rstd = (real *)mallocCheck(sizeof(real) * L * BT);
    a->zxbcdt = (real *)mallocCheck(sizeof(real) * L * BT * c->d_in_proj);
    a->xbc_conv = (real *)mallocCheck(sizeof(real) * L * BT * c->conv_dim);
    a->xbc = (real *)mallocCheck(sizeof(real) * L * BT * c->conv_dim);
    a->delta = (real *)mallocCheck(sizeof(real) * L * BT * c->nheads);
    a->y = (real *)mallocCheck(sizeof(real) * L * BT * c->d_inner);
    a->gated_rstd = (real *)mallocCheck(sizeof(real) * L * BT * c->ngroups);
    a->gated_out = (real *)mallocCheck(sizeof(real) * L * BT * c->d_inner);
    a->final_norm = (real *)mallocCheck(sizeof(real) * BT * c->d_model);
    a->final_rstd = (real *)mallocCheck(sizeof(real) * BT);
    a->logits = (real *)mallocCheck(sizeof(real) * BT * c->padded_vocab);
    a->losses = (real *)mallocCheck(sizeof(real) * BT);
    a->lse = (real *)mallocCheck(sizeof(real) * BT);
    /* backward scratch: dresidual, dnorm [D]; dzxbcdt [d_in_proj]; dxbc [conv_dim]; ddelta [H]; dy, dgated [E] */
    size_t per_token = 2 * (size_t)c->d_model + c->d_in_proj + c->conv_dim + c->nheads + 2 * (size_t)c->d_inner;
    model->scratch = (real *)mallocCheck(sizeof(real) * BT * per_token);
    model->targets = (int *)mallocCheck(sizeof(int) * BT);
    model->segment = (int *)mallocCheck(sizeof(int) * BT);
    model->capacity_tokens = BT;
}

void mamba_free(Mamba *model) {
    MambaActivations *a = &model->acts;
    free(a->residual); free(a->norm_out); free(a->norm_rstd); free(a->zxbcdt); free(a->xbc_conv); free(a->xbc);
    free(a->delta); free(a->y); free(a->gated_rstd); free(a->gated_out); free(a->final_norm); free(a->final_rstd);
    free(a->logits); free(a->losses); free(a->lse); free(model->scratch); free(model->targets); free(model->segment);
    free(model->params); free(model->grads); free(model->adam_m); free(model->adam_v);
    free(model->carry_conv); free(model->carry_ssm);
    memset(model, 0, sizeof(*model));
}

/* ------------------------------------------------------------------------------------------------
 * forward
 */
typedef struct {
    real *norm_w, *in_proj_w, *conv_w, *conv_b, *dt_bias, *A_log, *D, *gnorm_w, *out_proj_w;
} LayerParams;

static LayerParams layer_params(const ParamLayout *layout, real *const tensors[NUM_PARAM_TENSORS], int l) {
#define LAYER_SLICE(t) (tensors[t] + param_layer_offset(layout, t, l))
    LayerParams p = {LAYER_SLICE(P_NORM_W), LAYER_SLICE(P_IN_PROJ_W), LAYER_SLICE(P_CONV_W), LAYER_SLICE(P_CONV_B),
                     LAYER_SLICE(P_DT_BIAS), LAYER_SLICE(P_A_LOG), LAYER_SLICE(P_D), LAYER_SLICE(P_GNORM_W),
                     LAYER_SLICE(P_OUT_PROJ_W)};
#undef LAYER_SLICE
    return p;
}

typedef struct {
    real *residual, *residual_next, *norm_out, *norm_rstd, *zxbcdt, *xbc_conv, *xbc, *delta, *y, *gated_rstd, *gated_out;
} LayerActs;

static LayerActs layer_acts(const Mamba *model, int l) {
    const ModelConfig *c = &model->config;
    const MambaActivations *a = &model->acts;
    size_t BT = (size_t)model->B * model->T;
    LayerActs la;
    la.residual = a->residual + l * BT * c->d_model;
    la.residual_next = a->residual + (l + 1) * BT * c->d_model;
    la.norm_out = a->norm_out + l * BT * c->d_model;
    la.norm_rstd = a->norm_rstd + l * BT;
    la.zxbcdt = a->zxbcdt + l * BT * c->d_in_proj;
    la.xbc_conv = a->xbc_conv + l * BT * c->conv_dim;
    la.xbc = a->xbc + l * BT * c->conv_dim;
    la.delta = a->delta + l * BT * c->nheads;
    la.y = a->y + l * BT * c->d_inner;
    la.gated_rstd = a->gated_rstd + l * BT * c->ngroups;
    la.gated_out = a->gated_out + l * BT * c->d_inner;
    return la;
}

static SSDShape ssd_shape(const ModelConfig *c, int T) {
    SSDShape s = {.T = T, .H = c->nheads, .P = c->headdim, .G = c->ngroups, .N = c->d_state,
                  .diagonal = c->a_structure == A_DIAGONAL, .x_stride = c->conv_dim, .y_stride = c->d_inner,
                  .bc_stride = c->conv_dim, .dt_stride = c->nheads};
    return s;
}

static void decay_rates(const real *A_log, real *A, int n) {
    for (int i = 0; i < n; i++) A[i] = -exp(A_log[i]);
}

/* ignore_ok: a negative token is a target that does not count (IGNORE_TARGET), which only -1 may be */
static void check_tokens(const ModelConfig *c, const int *tokens, size_t n, const char *what, int ignore_ok) {
    for (size_t i = 0; i < n; i++) {
        if (ignore_ok && tokens[i] == IGNORE_TARGET) continue;
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
            fprintf(stderr, "error: %s token %d at position %zu is outside the vocabulary [0, %d)\n", what, tokens[i], i,
                    c->vocab_size);
            exit(1);
        }
    }
}

static size_t conv_state_size(const ModelConfig *c) { return (size_t)(c->d_conv - 1) * c->conv_dim; }
static size_t ssm_state_size(const ModelConfig *c) { return (size_t)c->nheads * c->headdim * c->d_state; }
/* the states row b of layer l started the last carried forward from */
static real *start_conv(const Mamba *model, int l, int b) {
    return model->carry_conv + ((size_t)l * model->B + b) * conv_state_size(&model->config);
}
static real *start_ssm(const Mamba *model, int l, int b) {
    return model->carry_ssm + ((size_t)l * model->B + b) * ssm_state_size(&model->config);
}

static void carry_alloc(Mamba *model, int B) {
    const ModelConfig *c = &model->config;
    if (model->carry_rows >= B) return;
    free(model->carry_conv);
    free(model->carry_ssm);
    model->carry_conv = (real *)mallocCheck(sizeof(real) * c->n_layer * B * conv_state_size(c));
    model->carry_ssm = (real *)mallocCheck(sizeof(real) * c->n_layer * B * ssm_state_size(c));
    model->carry_rows = B;
}

/* The causal conv of one sequence continuing from conv_state ([d_conv-1, conv_dim], oldest first):
 * the state rows are prepended to the input, the conv runs over the extended sequence, and the
 * first d_conv-1 outputs (which would need inputs before the state) are dropped. The state becomes
 * the last d_conv-1 rows of the extended input, a row of another document than the last input's
 * stored as 0: the next window's first steps continue the last input's document only. */
static void conv_forward_carry(const ModelConfig *c, LayerParams p, real *out, const real *inp, int T, real *conv_state,
                               const int *segment) {
    int K = c->d_conv, C = c->conv_dim, TK = T + K - 1;
    real *ext_in = (real *)mallocCheck(sizeof(real) * TK * C);
    real *ext_out = (real *)mallocCheck(sizeof(real) * TK * C);
    int *ext_segment = (int *)callocCheck(TK, sizeof(int)); /* the carried rows are in segment 0 */
    memcpy(ext_in, conv_state, sizeof(real) * (K - 1) * C);
    for (int t = 0; t < T; t++) memcpy(ext_in + (size_t)(t + K - 1) * C, inp + (size_t)t * c->d_in_proj, sizeof(real) * C);
    if (segment) memcpy(ext_segment + K - 1, segment, sizeof(int) * T);
    conv_forward(ext_out, ext_in, C, p.conv_w, p.conv_b, TK, C, K, segment ? ext_segment : NULL);
    memcpy(out, ext_out + (size_t)(K - 1) * C, sizeof(real) * T * C);
    for (int k = 0; k < K - 1; k++) {
        real *row = conv_state + (size_t)k * C;
        if (ext_segment[T + k] == ext_segment[TK - 1]) memcpy(row, ext_in + (size_t)(T + k) * C, sizeof(real) * C);
        else memset(row, 0, sizeof(real) * C);
    }
    free(ext_segment);
    free(ext_in);
    free(ext_out);
}

/* states: NULL (zero initial state) or one carried state per batch row, updated in place */
static void mixer_forward(Mamba *model, int l, int B, int T, MambaInferenceState *states) {
    const ModelConfig *c = &model->config;
    LayerParams p = layer_params(&model->layout, model->param_tensors, l);
    LayerActs a = layer_acts(model, l);
    int BT = B * T, E = c->d_inner, H = c->nheads, GN = c->ngroups * c->d_state;
    int dt_offset = 2 * E + 2 * GN;
    rmsnorm_forward(a.norm_out, a.norm_rstd, a.residual, p.norm_w, BT, c->d_model, c->norm_eps);
    matmul_forward(a.zxbcdt, a.norm_out, p.in_proj_w, BT, c->d_model, c->d_in_proj);
    for (int b = 0; b < B; b++) {
        real *conv_out = a.xbc_conv + (size_t)b * T * c->conv_dim;
        const real *conv_in = a.zxbcdt + (size_t)b * T * c->d_in_proj + E;
        if (states) {
            real *conv_state = states[b].conv_state + (size_t)l * conv_state_size(c);
            real *ssm_state = states[b].ssm_state + (size_t)l * ssm_state_size(c);
            /* the starting states, for the backward: the forward replaces them */
            memcpy(start_conv(model, l, b), conv_state, sizeof(real) * conv_state_size(c));
            memcpy(start_ssm(model, l, b), ssm_state, sizeof(real) * ssm_state_size(c));
            conv_forward_carry(c, p, conv_out, conv_in, T, conv_state, row_segment(model, b));
        } else conv_forward(conv_out, conv_in, c->d_in_proj, p.conv_w, p.conv_b, T, c->conv_dim, c->d_conv,
                          row_segment(model, b));
    }
    for (size_t i = 0; i < (size_t)BT * c->conv_dim; i++) a.xbc[i] = silu_of(a.xbc_conv[i]);
    for (int bt = 0; bt < BT; bt++)
        for (int h = 0; h < H; h++)
            a.delta[(size_t)bt * H + h] = softplus_of(a.zxbcdt[(size_t)bt * c->d_in_proj + dt_offset + h] + p.dt_bias[h]);
    int na = H * c->a_per_head;
    real *A = (real *)mallocCheck(sizeof(real) * na);
    decay_rates(p.A_log, A, na);
    SSDShape s = ssd_shape(c, T);
    for (int b = 0; b < B; b++) {
        const real *xbc = a.xbc + (size_t)b * T * c->conv_dim;
        /* the chunked form copies the initial state before writing the final one: they may alias */
        real *ssm = states ? states[b].ssm_state + (size_t)l * H * c->headdim * c->d_state : NULL;
        s.segment = row_segment(model, b);
        ssd_forward_chunked(&s, c->chunk_size, xbc, a.delta + (size_t)b * T * H, A, xbc + E, xbc + E + GN, p.D, ssm,
                            a.y + (size_t)b * T * E, ssm);
    }
    free(A);
    gated_rmsnorm_forward(a.gated_out, a.gated_rstd, a.y, a.zxbcdt, c->d_in_proj, p.gnorm_w, BT, E, c->ngroups, c->norm_eps);
    matmul_forward(a.residual_next, a.gated_out, p.out_proj_w, BT, E, c->d_model);
    for (size_t i = 0; i < (size_t)BT * c->d_model; i++) a.residual_next[i] += a.residual[i];
}

static void forward_from(Mamba *model, const int *inputs, const int *targets, int B, int T, MambaInferenceState *states) {
    const ModelConfig *c = &model->config;
    activations_alloc(model, B, T);
    if (states) carry_alloc(model, B);
    int BT = B * T, D = c->d_model;
    check_tokens(c, inputs, BT, "input", 0);
    model->inputs = inputs;
    if (model->doc_eot >= 0) document_segments(inputs, B, T, model->doc_eot, model->segment);
    MambaActivations *a = &model->acts;
    const real *wte = model->param_tensors[P_WTE];
    for (int bt = 0; bt < BT; bt++) memcpy(a->residual + (size_t)bt * D, wte + (size_t)inputs[bt] * D, sizeof(real) * D);
    for (int l = 0; l < c->n_layer; l++) mixer_forward(model, l, B, T, states);
    const real *last = a->residual + (size_t)c->n_layer * BT * D;
    rmsnorm_forward(a->final_norm, a->final_rstd, last, model->param_tensors[P_NORM_F], BT, D, c->norm_eps);
    matmul_forward(a->logits, a->final_norm, wte, BT, D, c->padded_vocab);
    if (targets) {
        check_tokens(c, targets, BT, "target", 1);
        memcpy(model->targets, targets, sizeof(int) * BT);
        model->counted_targets = (int)count_targets(targets, (size_t)BT);
        model->mean_loss = crossentropy_forward(a->losses, a->lse, a->logits, targets, BT, c->vocab_size, c->padded_vocab);
    } else {
        model->mean_loss = -1;
        model->counted_targets = 0;
    }
    model->carried_state = states != NULL;
    /* a row whose last input ends a document hands the next window a fresh start */
    if (states && model->doc_eot >= 0)
        for (int b = 0; b < B; b++)
            if (inputs[(size_t)b * T + T - 1] == model->doc_eot) inference_state_reset(&states[b], c);
}

void mamba_forward(Mamba *model, const int *inputs, const int *targets, int B, int T) {
    forward_from(model, inputs, targets, B, T, NULL);
}

void mamba_forward_carry(Mamba *model, const int *inputs, const int *targets, int B, int T,
                         MambaInferenceState *states) {
    forward_from(model, inputs, targets, B, T, states);
}

/* ------------------------------------------------------------------------------------------------
 * backward
 */
void mamba_zero_grad(Mamba *model) { memset(model->grads, 0, sizeof(real) * model->layout.total); }

typedef struct {
    real *dresidual, *dnorm, *dzxbcdt, *dxbc, *ddelta, *dy, *dgated;
} BackwardScratch;

static BackwardScratch backward_scratch(Mamba *model) {
    const ModelConfig *c = &model->config;
    size_t BT = (size_t)model->B * model->T;
    BackwardScratch s;
    s.dresidual = model->scratch;
    s.dnorm = s.dresidual + BT * c->d_model;
    s.dzxbcdt = s.dnorm + BT * c->d_model;
    s.dxbc = s.dzxbcdt + BT * c->d_in_proj;
    s.ddelta = s.dxbc + BT * c->conv_dim;
    s.dy = s.ddelta + BT * c->nheads;
    s.dgated = s.dy + BT * c->d_inner;
    return s;
}

/* Backward of conv_forward_carry from the conv state the forward started from: over the extended sequence
 * (the carried rows, then the inputs) with no output gradient on the dropped first d_conv-1 outputs, so the
 * carried rows reach the conv weights only; their own gradient stops there. */
static void conv_backward_carry(const ModelConfig *c, LayerParams g, real *dinp, const real *dout, const real *inp,
                                const real *conv_w, int T, const real *conv_state, const int *segment) {
    int K = c->d_conv, C = c->conv_dim, TK = T + K - 1;
    real *ext_in = (real *)mallocCheck(sizeof(real) * TK * C);
    real *ext_dout = (real *)callocCheck((size_t)TK * C, sizeof(real));
    real *ext_din = (real *)mallocCheck(sizeof(real) * TK * C);
    int *ext_segment = (int *)callocCheck(TK, sizeof(int));
    memcpy(ext_in, conv_state, sizeof(real) * (K - 1) * C);
    for (int t = 0; t < T; t++) memcpy(ext_in + (size_t)(t + K - 1) * C, inp + (size_t)t * c->d_in_proj, sizeof(real) * C);
    memcpy(ext_dout + (size_t)(K - 1) * C, dout, sizeof(real) * T * C);
    if (segment) memcpy(ext_segment + K - 1, segment, sizeof(int) * T);
    conv_backward(ext_din, C, g.conv_w, g.conv_b, ext_dout, ext_in, conv_w, TK, C, K, segment ? ext_segment : NULL);
    for (int t = 0; t < T; t++) memcpy(dinp + (size_t)t * c->d_in_proj, ext_din + (size_t)(t + K - 1) * C, sizeof(real) * C);
    free(ext_in);
    free(ext_dout);
    free(ext_din);
    free(ext_segment);
}

static void mixer_backward(Mamba *model, int l, BackwardScratch *sc) {
    const ModelConfig *c = &model->config;
    LayerParams p = layer_params(&model->layout, model->param_tensors, l);
    LayerParams g = layer_params(&model->layout, model->grad_tensors, l);
    LayerActs a = layer_acts(model, l);
    int B = model->B, T = model->T, BT = B * T, E = c->d_inner, H = c->nheads, GN = c->ngroups * c->d_state;
    int dt_offset = 2 * E + 2 * GN;
    /* residual_next = residual + out_proj(gated): dresidual flows through unchanged */
    memset(sc->dgated, 0, sizeof(real) * BT * E);
    matmul_backward(sc->dgated, g.out_proj_w, sc->dresidual, a.gated_out, p.out_proj_w, BT, E, c->d_model);
    gated_rmsnorm_backward(sc->dy, sc->dzxbcdt, g.gnorm_w, sc->dgated, a.y, a.zxbcdt, c->d_in_proj, p.gnorm_w,
                           a.gated_rstd, BT, E, c->ngroups);
    int na = H * c->a_per_head;
    real *A = (real *)mallocCheck(sizeof(real) * na);
    real *dA = (real *)callocCheck(na, sizeof(real));
    decay_rates(p.A_log, A, na);
    memset(sc->dxbc, 0, sizeof(real) * BT * c->conv_dim);
    memset(sc->ddelta, 0, sizeof(real) * BT * H);
    SSDShape s = ssd_shape(c, T);
    for (int b = 0; b < B; b++) {
        const real *xbc = a.xbc + (size_t)b * T * c->conv_dim;
        real *dxbc = sc->dxbc + (size_t)b * T * c->conv_dim;
        s.segment = row_segment(model, b);
        ssd_backward_chunked(&s, c->chunk_size, xbc, a.delta + (size_t)b * T * H, A, xbc + E, xbc + E + GN, p.D,
                             model->carried_state ? start_ssm(model, l, b) : NULL, sc->dy + (size_t)b * T * E, dxbc,
                             sc->ddelta + (size_t)b * T * H, dA, dxbc + E, dxbc + E + GN, g.D);
    }
    for (int i = 0; i < na; i++) g.A_log[i] += dA[i] * A[i]; /* dA/dA_log = -exp(A_log) = A */
    free(A);
    free(dA);
    for (int bt = 0; bt < BT; bt++)
        for (int h = 0; h < H; h++) {
            real v = a.zxbcdt[(size_t)bt * c->d_in_proj + dt_offset + h] + p.dt_bias[h];
            real dv = sc->ddelta[(size_t)bt * H + h] * sigmoid_of(v);
            sc->dzxbcdt[(size_t)bt * c->d_in_proj + dt_offset + h] = dv;
            g.dt_bias[h] += dv;
        }
    for (size_t i = 0; i < (size_t)BT * c->conv_dim; i++) sc->dxbc[i] *= silu_grad(a.xbc_conv[i]);
    for (int b = 0; b < B; b++) {
        real *dinp = sc->dzxbcdt + (size_t)b * T * c->d_in_proj + E;
        const real *dout = sc->dxbc + (size_t)b * T * c->conv_dim, *inp = a.zxbcdt + (size_t)b * T * c->d_in_proj + E;
        if (model->carried_state)
            conv_backward_carry(c, g, dinp, dout, inp, p.conv_w, T, start_conv(model, l, b), row_segment(model, b));
        else conv_backward(dinp, c->d_in_proj, g.conv_w, g.conv_b, dout, inp, p.conv_w, T, c->conv_dim, c->d_conv,
                           row_segment(model, b));
    }
    memset(sc->dnorm, 0, sizeof(real) * BT * c->d_model);
    matmul_backward(sc->dnorm, g.in_proj_w, sc->dzxbcdt, a.norm_out, p.in_proj_w, BT, c->d_model, c->d_in_proj);
    rmsnorm_backward(sc->dresidual, g.norm_w, sc->dnorm, a.residual, p.norm_w, a.norm_rstd, BT, c->d_model);
}

void mamba_backward(Mamba *model, real loss_scale) {
    if (model->mean_loss < 0) {
        fprintf(stderr, "error: mamba_backward needs a forward pass with targets first\n");
        exit(1);
    }
    const ModelConfig *c = &model->config;
    MambaActivations *a = &model->acts;
    int BT = model->B * model->T, D = c->d_model;
    BackwardScratch sc = backward_scratch(model);
    crossentropy_backward(a->logits, a->lse, model->targets, BT, c->vocab_size, c->padded_vocab, loss_scale);
    memset(sc.dnorm, 0, sizeof(real) * BT * D);
    matmul_backward(sc.dnorm, model->grad_tensors[P_WTE], a->logits, a->final_norm, model->param_tensors[P_WTE], BT, D,
                    c->padded_vocab);
    memset(sc.dresidual, 0, sizeof(real) * BT * D);
    rmsnorm_backward(sc.dresidual, model->grad_tensors[P_NORM_F], sc.dnorm, a->residual + (size_t)c->n_layer * BT * D,
                     model->param_tensors[P_NORM_F], a->final_rstd, BT, D);
    for (int l = c->n_layer - 1; l >= 0; l--) mixer_backward(model, l, &sc);
    real *dwte = model->grad_tensors[P_WTE];
    for (int bt = 0; bt < BT; bt++) {
        real *row = dwte + (size_t)model->inputs[bt] * D;
        for (int d = 0; d < D; d++) row[d] += sc.dresidual[(size_t)bt * D + d];
    }
    model->mean_loss = -1; /* logits now hold their gradient */
}

/* ------------------------------------------------------------------------------------------------
 * optimizer
 */
real mamba_grad_norm(const Mamba *model) {
    double ss = 0;
    for (size_t i = 0; i < model->layout.total; i++) ss += (double)model->grads[i] * model->grads[i];
    return (real)sqrt(ss);
}

void mamba_alloc_moments(Mamba *model) {
    if (model->adam_m != NULL) return;
    model->adam_m = (real *)callocCheck(model->layout.total, sizeof(real));
    model->adam_v = (real *)callocCheck(model->layout.total, sizeof(real));
}

void mamba_update_range(Mamba *model, size_t begin, size_t end, real lr, real beta1, real beta2, real eps,
                        real weight_decay, real grad_scale, int t) {
    mamba_alloc_moments(model);
    real bias1 = 1 - pow(beta1, (real)t), bias2 = 1 - pow(beta2, (real)t);
    for (int tensor = 0; tensor < NUM_PARAM_TENSORS; tensor++) {
        size_t lo = model->layout.offsets[tensor], hi = lo + model->layout.sizes[tensor];
        if (lo < begin) lo = begin;
        if (hi > end) hi = end;
        if (lo >= hi) continue;
        real wd = param_has_weight_decay(tensor) ? weight_decay : 0;
        real *p = model->params, *g = model->grads, *m = model->adam_m, *v = model->adam_v;
#pragma omp parallel for schedule(static)
        for (size_t i = lo; i < hi; i++) {
            real grad = g[i] * grad_scale;
            m[i] = beta1 * m[i] + (1 - beta1) * grad;
            v[i] = beta2 * v[i] + (1 - beta2) * grad * grad;
            real mhat = m[i] / bias1, vhat = v[i] / bias2;
            p[i] -= lr * (mhat / (sqrt(vhat) + eps) + wd * p[i]);
        }
    }
}

void mamba_update(Mamba *model, real lr, real beta1, real beta2, real eps, real weight_decay, real grad_scale, int t) {
    mamba_update_range(model, 0, model->layout.total, lr, beta1, beta2, eps, weight_decay, grad_scale, t);
}

/* ------------------------------------------------------------------------------------------------
 * generation by the recurrence
 */
void inference_state_init(MambaInferenceState *state, const ModelConfig *c) {
    size_t L = (size_t)c->n_layer;
    state->conv_state = (real *)callocCheck(L * (c->d_conv - 1) * c->conv_dim, sizeof(real));
    state->ssm_state = (real *)callocCheck(L * c->nheads * c->headdim * c->d_state, sizeof(real));
    size_t per_token = 2 * (size_t)c->d_model + c->d_in_proj + 2 * (size_t)c->conv_dim + 2 * (size_t)c->d_inner +
                       c->ngroups + 1 + (size_t)c->nheads * c->a_per_head;
    state->scratch = (real *)mallocCheck(sizeof(real) * per_token);
}

void inference_state_reset(MambaInferenceState *state, const ModelConfig *c) {
    memset(state->conv_state, 0, sizeof(real) * c->n_layer * (c->d_conv - 1) * c->conv_dim);
    memset(state->ssm_state, 0, sizeof(real) * c->n_layer * c->nheads * c->headdim * c->d_state);
}

void inference_state_free(MambaInferenceState *state) {
    free(state->conv_state);
    free(state->ssm_state);
    free(state->scratch);
}

void mamba_prefill(Mamba *model, const int *tokens, int n, MambaInferenceState *state, real *logits) {
    const ModelConfig *c = &model->config;
    mamba_forward(model, tokens, NULL, 1, n);
    int K = c->d_conv, E = c->d_inner, GN = c->ngroups * c->d_state, H = c->nheads;
    size_t PN = (size_t)c->headdim * c->d_state;
    real *A = (real *)mallocCheck(sizeof(real) * H * c->a_per_head);
    SSDShape s = ssd_shape(c, n);
    for (int l = 0; l < c->n_layer; l++) {
        LayerActs a = layer_acts(model, l);
        LayerParams p = layer_params(&model->layout, model->param_tensors, l);
        real *conv_state = state->conv_state + (size_t)l * (K - 1) * c->conv_dim;
        for (int k = 0; k < K - 1; k++) {
            int t = n - (K - 1) + k;
            real *row = conv_state + (size_t)k * c->conv_dim;
            if (t < 0) memset(row, 0, sizeof(real) * c->conv_dim);
            else memcpy(row, a.zxbcdt + (size_t)t * c->d_in_proj + E, sizeof(real) * c->conv_dim);
        }
        decay_rates(p.A_log, A, H * c->a_per_head);
        /* the chunked form hands over its final state; its outputs equal the forward's y */
        ssd_forward_chunked(&s, c->chunk_size, a.xbc, a.delta, A, a.xbc + E, a.xbc + E + GN, p.D, NULL, a.y,
                            state->ssm_state + (size_t)l * H * PN);
    }
    free(A);
    memcpy(logits, model->acts.logits + (size_t)(n - 1) * c->padded_vocab, sizeof(real) * c->padded_vocab);
}

void mamba_step(Mamba *model, int token, MambaInferenceState *state, real *logits) {
    const ModelConfig *c = &model->config;
    check_tokens(c, &token, 1, "generation", 0);
    int D = c->d_model, E = c->d_inner, H = c->nheads, P = c->headdim, N = c->d_state, K = c->d_conv;
    int GN = c->ngroups * N, heads_per_group = H / c->ngroups, dt_offset = 2 * E + 2 * GN;
    real *residual = state->scratch, *hidden = residual + D, *zxbcdt = hidden + D, *window_out = zxbcdt + c->d_in_proj;
    real *xbc = window_out + c->conv_dim, *y = xbc + c->conv_dim, *gated = y + E, *rstd = gated + E;
    real *A = rstd + c->ngroups + 1;
    memcpy(residual, model->param_tensors[P_WTE] + (size_t)token * D, sizeof(real) * D);
    for (int l = 0; l < c->n_layer; l++) {
        LayerParams p = layer_params(&model->layout, model->param_tensors, l);
        real *conv_state = state->conv_state + (size_t)l * (K - 1) * c->conv_dim;
        real *ssm = state->ssm_state + (size_t)l * H * P * N;
        rmsnorm_forward(hidden, rstd, residual, p.norm_w, 1, D, c->norm_eps);
        matmul_forward(zxbcdt, hidden, p.in_proj_w, 1, D, c->d_in_proj);
        const real *x_new = zxbcdt + E;
        for (int ch = 0; ch < c->conv_dim; ch++) {
            real acc = p.conv_b[ch];
            for (int k = 0; k < K - 1; k++) acc += p.conv_w[(size_t)ch * K + k] * conv_state[(size_t)k * c->conv_dim + ch];
            acc += p.conv_w[(size_t)ch * K + K - 1] * x_new[ch];
            xbc[ch] = silu_of(acc);
        }
        if (K > 1) { /* the state keeps the last K-1 inputs: none for a conv of width 1 */
            memmove(conv_state, conv_state + c->conv_dim, sizeof(real) * (size_t)(K - 2) * c->conv_dim);
            memcpy(conv_state + (size_t)(K - 2) * c->conv_dim, x_new, sizeof(real) * c->conv_dim);
        }
        decay_rates(p.A_log, A, H * c->a_per_head);
        for (int h = 0; h < H; h++) {
            int g = h / heads_per_group;
            real dt = softplus_of(zxbcdt[dt_offset + h] + p.dt_bias[h]);
            const real *x = xbc + (size_t)h * P, *Bv = xbc + E + (size_t)g * N, *Cv = xbc + E + GN + (size_t)g * N;
            for (int pp = 0; pp < P; pp++) {
                real *row = ssm + ((size_t)h * P + pp) * N, acc = 0;
                for (int n = 0; n < N; n++) {
                    real a_rate = c->a_structure == A_DIAGONAL ? A[(size_t)h * N + n] : A[h];
                    row[n] = exp(dt * a_rate) * row[n] + dt * x[pp] * Bv[n];
                    acc += row[n] * Cv[n];
                }
                y[(size_t)h * P + pp] = acc + p.D[h] * x[pp];
            }
        }
        gated_rmsnorm_forward(gated, rstd, y, zxbcdt, c->d_in_proj, p.gnorm_w, 1, E, c->ngroups, c->norm_eps);
        matmul_forward(hidden, gated, p.out_proj_w, 1, E, D);
        for (int d = 0; d < D; d++) residual[d] += hidden[d];
    }
    rmsnorm_forward(hidden, rstd, residual, model->param_tensors[P_NORM_F], 1, D, c->norm_eps);
    matmul_forward(logits, hidden, model->param_tensors[P_WTE], 1, D, c->padded_vocab);
}

int sample_token(const real *logits, int vocab_size, float temperature, int top_k, float coin) {
    /* threshold for top-k: the k-th largest logit (ties keep a few more, which is harmless) */
    real threshold = -INFINITY;
    if (top_k > 0 && top_k < vocab_size) {
        real *sorted = (real *)mallocCheck(sizeof(real) * top_k);
        int filled = 0;
        for (int v = 0; v < vocab_size; v++) {
            real x = logits[v];
            if (filled < top_k) {
                int i = filled++;
                while (i > 0 && sorted[i - 1] < x) { sorted[i] = sorted[i - 1]; i--; }
                sorted[i] = x;
            } else if (x > sorted[top_k - 1]) {
                int i = top_k - 1;
                while (i > 0 && sorted[i - 1] < x) { sorted[i] = sorted[i - 1]; i--; }
                sorted[i] = x;
            }
        }
        threshold = sorted[top_k - 1];
        free(sorted);
    }
    real maxv = -INFINITY;
    for (int v = 0; v < vocab_size; v++) maxv = logits[v] > maxv ? logits[v] : maxv;
    if (temperature <= 0) {
        for (int v = 0; v < vocab_size; v++) if (logits[v] == maxv) return v;
    }
    double total = 0;
    for (int v = 0; v < vocab_size; v++)
        if (logits[v] >= threshold) total += exp((double)(logits[v] - maxv) / temperature);
    double target = coin * total, acc = 0;
    int last = 0;
    for (int v = 0; v < vocab_size; v++) {
        if (logits[v] < threshold) continue;
        acc += exp((double)(logits[v] - maxv) / temperature);
        last = v;
        if (acc > target) return v;
    }
    return last;
}
