/*
 * train_ssdcu: the CUDA trainer for Mamba-2 (scalar A) and SSD-Mamba (diagonal A) language models.
 * Same model, configs, flags, data shards and checkpoint files as the CPU trainer train_ssd.c; the
 * model math is in model/cpu_model.h. One GPU; the step is laid out so that an all-reduce of the
 * fp32 gradient buffer can be slotted in between backward and the gradient norm.
 *
 * Precision: parameters and activations in floatX (bf16 by default, fp32 with PRECISION=FP32);
 * fp32 for the residual stream, norm statistics, gradients, AdamW moments and master weights. The
 * vector parameters (norm weights, conv, dt_bias, A_log, D) are read as fp32 from the master
 * weights; only the matrices (wte, in_proj, out_proj) are read in floatX by the matmuls.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataloader.h"
#include "data/tokenizer.h"
#include "model/args.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/cpu_sample.h"
#include "model/train_run.h"
#include "model/eval_split.h"
#include "model/logger.h"
#include "model/params.h"
#include "model/rng.h"
#include "model/schedule.h"
#include "model/utils.h"

#include "kernels/adamw.cuh"
#include "kernels/classifier.cuh"
#include "kernels/common.cuh"
#include "kernels/conv1d.cuh"
#include "kernels/encoder.cuh"
#include "kernels/gated_norm.cuh"
#include "kernels/matmul.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/ssd_scan.cuh"

/* ------------------------------------------------------------------------------------------------
 * the model on the GPU
 */
typedef struct {
    float *residual;    /* [L+1, N, D] residual stream entering each layer, and after the last */
    floatX *norm_out;   /* [L, N, D] */
    float *norm_rstd;   /* [L, N] */
    floatX *zxbcdt;     /* [L, N, d_in_proj] in_proj output: z, xBC (before the conv), dt */
    floatX *xbc;        /* [L, N, conv_dim] after conv + SiLU */
    floatX *y;          /* [L, N, E] SSD output including D x */
    float *gated_rstd;  /* [L, N, G] */
    floatX *gated;      /* [L, N, E] out_proj input */
    floatX *proj_out;   /* [N, D] out_proj output of the layer just run (added by the next norm) */
    floatX *final_norm; /* [N, D] */
    float *final_rstd;  /* [N] */
    floatX *logits;     /* [N, Vp]; after a training forward, the gradient of the logits */
    float *losses;      /* [N] */
    char *ssd_workspace;/* [L] workspaces of the SSD scan, kept from forward to backward */
    /* backward scratch */
    float *dres;        /* [N, D] gradient of the residual stream */
    floatX *dres_x;     /* [N, D] the same in floatX, input of the matmuls */
    floatX *dgated;     /* [N, E] */
    floatX *dy;         /* [N, E] */
    floatX *dxbc;       /* [N, conv_dim] */
    floatX *dzxbcdt;    /* [N, d_in_proj] */
    floatX *dnorm;      /* [N, D] */
    float *reduce;      /* partial sums of the deterministic parameter-gradient reductions */
} GPUActivations;

typedef struct {
    ModelConfig config;
    ParamLayout layout;
    float *master;      /* fp32 master weights, flat (layout) */
    floatX *params;     /* floatX copy used by the forward (the master itself in the FP32 build) */
    float *grads;       /* fp32, flat */
    float *adam_m, *adam_v;
    float *master_t[NUM_PARAM_TENSORS];
    floatX *params_t[NUM_PARAM_TENSORS];
    float *grads_t[NUM_PARAM_TENSORS];
    GPUActivations acts;
    size_t ssd_workspace_bytes;  /* stride between layers' SSD workspaces: the part the forward keeps */
    int B, T;                    /* activations are sized for B*T tokens */
    /* the current batch: inputs, targets, and the token buckets of the embedding backward */
    int *d_batch;                /* device: inputs[N], targets[N], bucket_token[N], bucket_start[N+1], bucket_pos[N] */
    int *h_batch;                /* pinned host copy */
    int *h_count;                /* [vocab_size] scratch of the bucket sort */
    int num_buckets;
    cudaEvent_t batch_copied;
    float *d_scalars;            /* [0] mean loss, [1] grad norm */
    float *norm_scratch;
    cudaStream_t stream;
} MambaGPU;

void mamba_gpu_set_params(MambaGPU *m, const float *params);

static void *device_alloc(size_t bytes, size_t *total) {
    void *p;
    cudaCheck(cudaMalloc(&p, bytes));
    *total += bytes;
    return p;
}

/* Uploads fp32 params (layout.total) into a freshly built model. */
void mamba_gpu_build(MambaGPU *m, const ModelConfig *config, const float *params, cudaStream_t stream) {
    memset(m, 0, sizeof(*m));
    m->config = *config;
    m->stream = stream;
    conv1d_check_width(config->d_conv);
    param_layout_init(&m->layout, config);
    size_t n = m->layout.total, bytes = 0;
    m->master = (float *)device_alloc(n * sizeof(float), &bytes);
    m->grads = (float *)device_alloc(n * sizeof(float), &bytes);
    m->adam_m = (float *)device_alloc(n * sizeof(float), &bytes);
    m->adam_v = (float *)device_alloc(n * sizeof(float), &bytes);
    cudaCheck(cudaMemset(m->adam_m, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m->adam_v, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m->grads, 0, n * sizeof(float)));
#if defined(ENABLE_FP32)
    m->params = m->master;
#else
    m->params = (floatX *)device_alloc(n * sizeof(floatX), &bytes);
#endif
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        m->master_t[t] = m->master + m->layout.offsets[t];
        m->params_t[t] = m->params + m->layout.offsets[t];
        m->grads_t[t] = m->grads + m->layout.offsets[t];
    }
    cudaCheck(cudaMalloc(&m->d_scalars, 2 * sizeof(float)));
    cudaCheck(cudaMalloc(&m->norm_scratch, NORM_BLOCKS * sizeof(float)));
    mamba_gpu_set_params(m, params);
}

static void cast_to_floatX_kernel_launch(floatX *dst, const float *src, size_t n, cudaStream_t stream);

/* Replaces the weights (fp32, layout.total) and their floatX copy. */
void mamba_gpu_set_params(MambaGPU *m, const float *params) {
    size_t n = m->layout.total;
    cudaCheck(cudaMemcpy(m->master, params, n * sizeof(float), cudaMemcpyHostToDevice));
    cast_to_floatX_kernel_launch(m->params, m->master, n, m->stream);
    cudaCheck(cudaStreamSynchronize(m->stream));
}

__global__ void cast_to_floatX_kernel(floatX *dst, const float *src, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = from_float<floatX>(src[i]);
}

static void cast_to_floatX_kernel_launch(floatX *dst, const float *src, size_t n, cudaStream_t stream) {
    if ((void *)dst == (const void *)src) return;
    cast_to_floatX_kernel<<<ceil_div((long)n, 512), 512, 0, stream>>>(dst, src, n);
    cudaCheckLaunch();
}

static SSDScanShape mamba_gpu_ssd_shape(const ModelConfig *c, int B, int T) {
    SSDScanShape s;
    s.B = B;
    s.T = T;
    s.H = c->nheads;
    s.P = c->headdim;
    s.G = c->ngroups;
    s.N = c->d_state;
    s.Q = c->chunk_size;
    s.diagonal = c->a_structure == A_DIAGONAL;
    s.conv_dim = c->conv_dim;
    s.d_in_proj = c->d_in_proj;
    return s;
}

/* Allocates activations for B x T tokens; returns the bytes allocated. */
size_t mamba_gpu_alloc_activations(MambaGPU *m, int B, int T) {
    const ModelConfig *c = &m->config;
    GPUActivations *a = &m->acts;
    size_t N = (size_t)B * T, L = c->n_layer, D = c->d_model, E = c->d_inner, G = c->ngroups;
    size_t bytes = 0;
    m->B = B;
    m->T = T;
    a->residual = (float *)device_alloc((L + 1) * N * D * sizeof(float), &bytes);
    a->norm_out = (floatX *)device_alloc(L * N * D * sizeof(floatX), &bytes);
    a->norm_rstd = (float *)device_alloc(L * N * sizeof(float), &bytes);
    a->zxbcdt = (floatX *)device_alloc(L * N * c->d_in_proj * sizeof(floatX), &bytes);
    a->xbc = (floatX *)device_alloc(L * N * c->conv_dim * sizeof(floatX), &bytes);
    a->y = (floatX *)device_alloc(L * N * E * sizeof(floatX), &bytes);
    a->gated_rstd = (float *)device_alloc(L * N * G * sizeof(float), &bytes);
    a->gated = (floatX *)device_alloc(L * N * E * sizeof(floatX), &bytes);
    a->proj_out = (floatX *)device_alloc(N * D * sizeof(floatX), &bytes);
    a->final_norm = (floatX *)device_alloc(N * D * sizeof(floatX), &bytes);
    a->final_rstd = (float *)device_alloc(N * sizeof(float), &bytes);
    a->logits = (floatX *)device_alloc(N * c->padded_vocab * sizeof(floatX), &bytes);
    a->losses = (float *)device_alloc(N * sizeof(float), &bytes);
    SSDScanShape shape = mamba_gpu_ssd_shape(c, B, T);
    /* layer l's workspace starts at l * saved bytes: what its forward keeps does not overlap the other
     * layers', and its backward scratch overlaps only later layers, whose backward has already run */
    m->ssd_workspace_bytes = ssd_scan_saved_bytes(&shape);
    a->ssd_workspace = (char *)device_alloc((L - 1) * m->ssd_workspace_bytes + ssd_scan_workspace_bytes(&shape), &bytes);
    a->dres = (float *)device_alloc(N * D * sizeof(float), &bytes);
    a->dres_x = (floatX *)device_alloc(N * D * sizeof(floatX), &bytes);
    a->dgated = (floatX *)device_alloc(N * E * sizeof(floatX), &bytes);
    a->dy = (floatX *)device_alloc(N * E * sizeof(floatX), &bytes);
    a->dxbc = (floatX *)device_alloc(N * c->conv_dim * sizeof(floatX), &bytes);
    a->dzxbcdt = (floatX *)device_alloc(N * c->d_in_proj * sizeof(floatX), &bytes);
    a->dnorm = (floatX *)device_alloc(N * D * sizeof(floatX), &bytes);
    size_t reduce_floats = rmsnorm_backward_scratch_floats((int)D);
    if (gated_norm_backward_scratch_floats((int)E) > reduce_floats) reduce_floats = gated_norm_backward_scratch_floats((int)E);
    if (conv1d_backward_scratch_floats(B, T, c->conv_dim) > reduce_floats)
        reduce_floats = conv1d_backward_scratch_floats(B, T, c->conv_dim);
    a->reduce = (float *)device_alloc(reduce_floats * sizeof(float), &bytes);
    size_t batch_ints = 5 * N + 1;
    m->d_batch = (int *)device_alloc(batch_ints * sizeof(int), &bytes);
    cudaCheck(cudaMallocHost(&m->h_batch, batch_ints * sizeof(int)));
    m->h_count = (int *)mallocCheck((size_t)c->vocab_size * sizeof(int));
    cudaCheck(cudaEventCreateWithFlags(&m->batch_copied, cudaEventDisableTiming));
    cudaCheck(cudaEventRecord(m->batch_copied, m->stream));
    return bytes;
}

/* Copies a batch (inputs and targets, N = B*T each; targets may be NULL) to the device. Checks the
 * token ids: the kernels index wte with them. */
void mamba_gpu_set_batch(MambaGPU *m, const int *inputs, const int *targets) {
    const ModelConfig *c = &m->config;
    int N = m->B * m->T;
    for (int i = 0; i < N; i++) {
        if (inputs[i] < 0 || inputs[i] >= c->vocab_size || (targets && (targets[i] < 0 || targets[i] >= c->vocab_size))) {
            fprintf(stderr, "error: token %d at position %d of the batch is outside the vocabulary [0, %d)\n",
                    inputs[i] < 0 || inputs[i] >= c->vocab_size ? inputs[i] : targets[i], i, c->vocab_size);
            exit(EXIT_FAILURE);
        }
    }
    /* the previous batch's copy must have left the pinned buffer before it is overwritten */
    cudaCheck(cudaEventSynchronize(m->batch_copied));
    int *h = m->h_batch;
    memcpy(h, inputs, N * sizeof(int));
    if (targets) memcpy(h + N, targets, N * sizeof(int));
    else memset(h + N, 0, N * sizeof(int));
    m->num_buckets = encoder_buckets_build(inputs, N, c->vocab_size, m->h_count, h + 2 * N, h + 3 * N, h + 4 * N + 1);
    cudaCheck(cudaMemcpyAsync(m->d_batch, h, (5 * (size_t)N + 1) * sizeof(int), cudaMemcpyHostToDevice, m->stream));
    cudaCheck(cudaEventRecord(m->batch_copied, m->stream));
}

typedef struct {
    const float *norm_w, *conv_w, *conv_b, *dt_bias, *A_log, *D, *gnorm_w;  /* fp32 */
    const floatX *in_proj_w, *out_proj_w;
} GPULayerParams;

typedef struct {
    float *norm_w, *in_proj_w, *conv_w, *conv_b, *dt_bias, *A_log, *D, *gnorm_w, *out_proj_w;
} GPULayerGrads;

/* Layer l's slices: the matrices from the floatX params, the vector parameters from the fp32 master */
static GPULayerParams layer_params(const MambaGPU *m, int l) {
    const ParamLayout *lay = &m->layout;
    GPULayerParams p;
    p.norm_w = m->master_t[P_NORM_W] + param_layer_offset(lay, P_NORM_W, l);
    p.conv_w = m->master_t[P_CONV_W] + param_layer_offset(lay, P_CONV_W, l);
    p.conv_b = m->master_t[P_CONV_B] + param_layer_offset(lay, P_CONV_B, l);
    p.dt_bias = m->master_t[P_DT_BIAS] + param_layer_offset(lay, P_DT_BIAS, l);
    p.A_log = m->master_t[P_A_LOG] + param_layer_offset(lay, P_A_LOG, l);
    p.D = m->master_t[P_D] + param_layer_offset(lay, P_D, l);
    p.gnorm_w = m->master_t[P_GNORM_W] + param_layer_offset(lay, P_GNORM_W, l);
    p.in_proj_w = m->params_t[P_IN_PROJ_W] + param_layer_offset(lay, P_IN_PROJ_W, l);
    p.out_proj_w = m->params_t[P_OUT_PROJ_W] + param_layer_offset(lay, P_OUT_PROJ_W, l);
    return p;
}

static GPULayerGrads layer_grads(const MambaGPU *m, int l) {
#define LAYER_SLICE(t) (m->grads_t[t] + param_layer_offset(&m->layout, t, l))
    GPULayerGrads g = {LAYER_SLICE(P_NORM_W), LAYER_SLICE(P_IN_PROJ_W), LAYER_SLICE(P_CONV_W), LAYER_SLICE(P_CONV_B),
                       LAYER_SLICE(P_DT_BIAS), LAYER_SLICE(P_A_LOG), LAYER_SLICE(P_D), LAYER_SLICE(P_GNORM_W),
                       LAYER_SLICE(P_OUT_PROJ_W)};
#undef LAYER_SLICE
    return g;
}

/* The recurrent state that evaluation with -ec 1 carries from one window to the next, for each of B
 * rows: per layer the conv's last K-1 inputs [B, K-1, conv_dim] and the SSM state [B, H, P, N], fp32. */
typedef struct {
    float *conv, *ssm;
    size_t conv_floats, ssm_floats; /* per layer */
} GPUCarry;

static void gpu_carry_alloc(GPUCarry *carry, const ModelConfig *c, int B) {
    carry->conv_floats = (size_t)B * (c->d_conv - 1) * c->conv_dim;
    carry->ssm_floats = (size_t)B * c->nheads * c->headdim * c->d_state;
    cudaCheck(cudaMalloc(&carry->conv, c->n_layer * carry->conv_floats * sizeof(float)));
    cudaCheck(cudaMalloc(&carry->ssm, c->n_layer * carry->ssm_floats * sizeof(float)));
}

static void gpu_carry_zero(GPUCarry *carry, int n_layer, cudaStream_t stream) {
    cudaCheck(cudaMemsetAsync(carry->conv, 0, n_layer * carry->conv_floats * sizeof(float), stream));
    cudaCheck(cudaMemsetAsync(carry->ssm, 0, n_layer * carry->ssm_floats * sizeof(float), stream));
}

static void gpu_carry_free(GPUCarry *carry) {
    cudaCheck(cudaFree(carry->conv));
    cudaCheck(cudaFree(carry->ssm));
}

/*
 * Forward over the current batch. dloss > 0: also writes the gradient of dloss * sum(losses) into
 * the logits (a training step; pass 1 / (N * accumulation steps)); dloss == 0: losses only.
 * carry: NULL (every row starts from a zero state) or the state entering the batch, which the
 * forward replaces by the state after it (evaluation only: the backward ignores it).
 * The mean loss stays on the device until mamba_gpu_mean_loss reads it.
 */
void mamba_gpu_forward(MambaGPU *m, float dloss, GPUCarry *carry) {
    const ModelConfig *c = &m->config;
    GPUActivations *a = &m->acts;
    cudaStream_t st = m->stream;
    int B = m->B, T = m->T, N = B * T, D = c->d_model, E = c->d_inner, G = c->ngroups, GN = c->ngroups * c->d_state;
    int dip = c->d_in_proj;
    const int *inputs = m->d_batch, *targets = m->d_batch + N;
    SSDScanShape shape = mamba_gpu_ssd_shape(c, B, T);
    encoder_forward(a->residual, inputs, m->master_t[P_WTE], N, D, st);
    for (int l = 0; l < c->n_layer; l++) {
        GPULayerParams p = layer_params(m, l);
        float *res = a->residual + (size_t)l * N * D;
        floatX *norm_out = a->norm_out + (size_t)l * N * D;
        floatX *zxbcdt = a->zxbcdt + (size_t)l * N * dip;
        floatX *xbc = a->xbc + (size_t)l * N * c->conv_dim;
        floatX *y = a->y + (size_t)l * N * E;
        floatX *gated = a->gated + (size_t)l * N * E;
        float *gated_rstd = a->gated_rstd + (size_t)l * N * G;
        const float *prev = l == 0 ? res : res - (size_t)N * D;
        rmsnorm_forward(res, norm_out, a->norm_rstd + (size_t)l * N, prev, l == 0 ? NULL : a->proj_out, p.norm_w, N, D,
                        c->norm_eps, st);
        matmul_forward(zxbcdt, norm_out, p.in_proj_w, N, D, dip, st);
        float *conv_state = carry ? carry->conv + l * carry->conv_floats : NULL;
        float *ssm_state = carry ? carry->ssm + l * carry->ssm_floats : NULL;
        conv1d_forward(xbc, zxbcdt + E, dip, p.conv_w, p.conv_b, conv_state, B, T, c->conv_dim, st);
        ssd_scan_forward(&shape, y, xbc, zxbcdt + 2 * E + 2 * GN, p.dt_bias, p.A_log, p.D, ssm_state,
                         a->ssd_workspace + (size_t)l * m->ssd_workspace_bytes, st);
        gated_norm_forward(gated, gated_rstd, y, zxbcdt, dip, p.gnorm_w, N, E, G, c->norm_eps, st);
        matmul_forward(a->proj_out, gated, p.out_proj_w, N, E, D, st);
    }
    float *last = a->residual + (size_t)c->n_layer * N * D;
    rmsnorm_forward(last, a->final_norm, a->final_rstd, last - (size_t)N * D, a->proj_out, m->master_t[P_NORM_F], N, D,
                    c->norm_eps, st);
    matmul_forward(a->logits, a->final_norm, m->params_t[P_WTE], N, D, c->padded_vocab, st);
    fused_classifier(a->logits, a->losses, targets, dloss, N, c->vocab_size, c->padded_vocab, st);
    mean_loss(m->d_scalars, a->losses, N, st);
}

/* Waits for the forward and returns the mean loss of the batch. */
float mamba_gpu_mean_loss(MambaGPU *m) {
    float loss;
    cudaCheck(cudaMemcpyAsync(&loss, m->d_scalars, sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
    return loss;
}

void mamba_gpu_zero_grad(MambaGPU *m) {
    cudaCheck(cudaMemsetAsync(m->grads, 0, m->layout.total * sizeof(float), m->stream));
}

/* Accumulates the gradients of the last training forward (its dloss) into m->grads. */
void mamba_gpu_backward(MambaGPU *m) {
    const ModelConfig *c = &m->config;
    GPUActivations *a = &m->acts;
    cudaStream_t st = m->stream;
    int B = m->B, T = m->T, N = B * T, D = c->d_model, E = c->d_inner, G = c->ngroups, GN = c->ngroups * c->d_state;
    int dip = c->d_in_proj, L = c->n_layer;
    SSDScanShape shape = mamba_gpu_ssd_shape(c, B, T);
    const int *buckets = m->d_batch + 2 * N;

    /* lm_head (tied to wte) and the final norm */
    matmul_backward_weight(m->grads_t[P_WTE], a->logits, a->final_norm, N, D, c->padded_vocab, st);
    matmul_backward_input(a->dnorm, a->logits, m->params_t[P_WTE], N, D, c->padded_vocab, st);
    cudaCheck(cudaMemsetAsync(a->dres, 0, (size_t)N * D * sizeof(float), st));
    rmsnorm_backward(a->dres, a->dres_x, m->grads_t[P_NORM_F], a->reduce, a->dnorm, a->residual + (size_t)L * N * D,
                     a->final_rstd, m->master_t[P_NORM_F], N, D, st);

    for (int l = L - 1; l >= 0; l--) {
        GPULayerParams p = layer_params(m, l);
        GPULayerGrads g = layer_grads(m, l);
        floatX *zxbcdt = a->zxbcdt + (size_t)l * N * dip;
        floatX *y = a->y + (size_t)l * N * E;
        /* residual[l+1] = residual[l] + out_proj(gated): dres is also the gradient of out_proj's output */
        matmul_backward_weight(g.out_proj_w, a->dres_x, a->gated + (size_t)l * N * E, N, E, D, st);
        matmul_backward_input(a->dgated, a->dres_x, p.out_proj_w, N, E, D, st);
        gated_norm_backward(a->dy, a->dzxbcdt, g.gnorm_w, a->reduce, a->dgated, y, zxbcdt, dip, p.gnorm_w,
                            a->gated_rstd + (size_t)l * N * G, N, E, G, st);
        ssd_scan_backward(&shape, a->dxbc, a->dzxbcdt + 2 * E + 2 * GN, g.dt_bias, g.A_log, g.D, a->dy,
                          a->xbc + (size_t)l * N * c->conv_dim, zxbcdt + 2 * E + 2 * GN, p.dt_bias, p.A_log, p.D,
                          a->ssd_workspace + (size_t)l * m->ssd_workspace_bytes, st);
        conv1d_backward(a->dzxbcdt + E, dip, g.conv_w, g.conv_b, a->reduce, a->dxbc, zxbcdt + E, dip, p.conv_w, p.conv_b,
                        B, T, c->conv_dim, st);
        matmul_backward_weight(g.in_proj_w, a->dzxbcdt, a->norm_out + (size_t)l * N * D, N, D, dip, st);
        matmul_backward_input(a->dnorm, a->dzxbcdt, p.in_proj_w, N, D, dip, st);
        rmsnorm_backward(a->dres, a->dres_x, g.norm_w, a->reduce, a->dnorm, a->residual + (size_t)l * N * D,
                         a->norm_rstd + (size_t)l * N, p.norm_w, N, D, st);
    }
    encoder_backward(m->grads_t[P_WTE], a->dres, buckets, buckets + N, buckets + 2 * N + 1, m->num_buckets, D, st);
}

/* Launches the global gradient norm; it stays on the device (read by the update and when printed). */
void mamba_gpu_grad_norm(MambaGPU *m) {
    global_norm(m->d_scalars + 1, m->norm_scratch, m->grads, m->layout.total, m->stream);
}

float mamba_gpu_read_grad_norm(MambaGPU *m) {
    float norm;
    cudaCheck(cudaMemcpyAsync(&norm, m->d_scalars + 1, sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
    return norm;
}

/* AdamW step h->step (1-based) with the clip scale from the gradient norm on the device. */
void mamba_gpu_update(MambaGPU *m, const AdamWHyper *h) {
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        float wd = param_has_weight_decay(t) ? h->weight_decay : 0.0f;
        size_t off = m->layout.offsets[t];
        adamw_update(m->master + off, m->params + off, m->grads + off, m->adam_m + off, m->adam_v + off,
                     m->layout.sizes[t], h, wd, m->d_scalars + 1, m->stream);
    }
}

void mamba_gpu_get_params(MambaGPU *m, float *out) {
    cudaCheck(cudaStreamSynchronize(m->stream));
    cudaCheck(cudaMemcpy(out, m->master, m->layout.total * sizeof(float), cudaMemcpyDeviceToHost));
}

void mamba_gpu_free(MambaGPU *m) {
    GPUActivations *a = &m->acts;
    void *device_buffers[] = {a->residual, a->norm_out, a->norm_rstd, a->zxbcdt, a->xbc, a->y, a->gated_rstd, a->gated,
                              a->proj_out, a->final_norm, a->final_rstd, a->logits, a->losses, a->ssd_workspace,
                              a->dres, a->dres_x, a->dgated, a->dy, a->dxbc, a->dzxbcdt, a->dnorm, a->reduce,
                              m->d_batch, m->grads, m->adam_m, m->adam_v, m->d_scalars, m->norm_scratch};
    for (size_t i = 0; i < sizeof(device_buffers) / sizeof(device_buffers[0]); i++) cudaCheck(cudaFree(device_buffers[i]));
    if ((void *)m->params != (void *)m->master) cudaCheck(cudaFree(m->params));
    cudaCheck(cudaFree(m->master));
    if (m->h_batch) {
        cudaCheck(cudaFreeHost(m->h_batch));
        cudaCheck(cudaEventDestroy(m->batch_copied));
    }
    free(m->h_count);
    memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------------------------------------------
 * the training program
 */
#ifndef TESTING

/* Mean loss over up to max_batches batches of the loader (from its start). */
static float evaluate(MambaGPU *model, DataLoader *loader, int max_batches) {
    dataloader_reset(loader);
    int n = (int)dataloader_num_batches(loader);
    if (max_batches >= 0 && max_batches < n) n = max_batches;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        dataloader_next_batch(loader);
        mamba_gpu_set_batch(model, loader->inputs, loader->targets);
        mamba_gpu_forward(model, 0.0f, NULL);
        sum += mamba_gpu_mean_loss(model);
    }
    return n > 0 ? (float)(sum / n) : NAN;
}

/* Adds the losses of the first lengths[r] positions of each row r < rows of the last forward, in
 * double and in order, as the CPU trainer's evaluation does. */
static void add_row_losses(EvalResult *result, MambaGPU *m, float *host_losses, const int *lengths, int rows) {
    cudaCheck(cudaMemcpyAsync(host_losses, m->acts.losses, (size_t)rows * m->T * sizeof(float), cudaMemcpyDeviceToHost,
                              m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < lengths[r]; i++) result->loss_sum += host_losses[(size_t)r * m->T + i];
        result->tokens += lengths[r];
    }
}

/* Full-split evaluation (-m -1, -ti, -x 0) over the same windows as the CPU trainer's
 * mamba_evaluate_split. Fresh state: B windows per forward, the positions past a short window padded
 * and not counted (causality keeps them from the counted ones). Carried state (-ec 1): one window
 * per forward (B = 1, T = its length), the state flowing from window to window within a stream. */
static EvalResult mamba_gpu_evaluate_split(MambaGPU *m, EvalSplit *split, int carry) {
    EvalResult result = {0, 0};
    int B = m->B, T = m->T;
    int *inputs = (int *)mallocCheck((size_t)B * T * sizeof(int)), *targets = (int *)mallocCheck((size_t)B * T * sizeof(int));
    int *lengths = (int *)mallocCheck(B * sizeof(int));
    float *host_losses = (float *)mallocCheck((size_t)B * T * sizeof(float));
    eval_split_reset(split);
    if (carry) {
        GPUCarry state;
        gpu_carry_alloc(&state, &m->config, 1);
        m->B = 1;
        while (eval_split_next(split)) {
            if (split->starts_stream) gpu_carry_zero(&state, m->config.n_layer, m->stream);
            m->T = split->length;
            mamba_gpu_set_batch(m, split->inputs, split->targets);
            mamba_gpu_forward(m, 0.0f, &state);
            add_row_losses(&result, m, host_losses, &split->length, 1);
        }
        m->B = B;
        m->T = T;
        gpu_carry_free(&state);
    } else {
        int rows;
        do {
            for (rows = 0; rows < B && eval_split_next(split); rows++) {
                lengths[rows] = split->length;
                memcpy(inputs + (size_t)rows * T, split->inputs, split->length * sizeof(int));
                memcpy(targets + (size_t)rows * T, split->targets, split->length * sizeof(int));
                memset(inputs + (size_t)rows * T + split->length, 0, (T - split->length) * sizeof(int));
                memset(targets + (size_t)rows * T + split->length, 0, (T - split->length) * sizeof(int));
            }
            if (rows == 0) break;
            memset(inputs + (size_t)rows * T, 0, (size_t)(B - rows) * T * sizeof(int));
            memset(targets + (size_t)rows * T, 0, (size_t)(B - rows) * T * sizeof(int));
            mamba_gpu_set_batch(m, inputs, targets);
            mamba_gpu_forward(m, 0.0f, NULL);
            add_row_losses(&result, m, host_losses, lengths, rows);
        } while (rows == B);
    }
    free(inputs);
    free(targets);
    free(lengths);
    free(host_losses);
    return result;
}

/* Samples on the CPU from a copy of the current weights: generation is one token at a time. */
static void print_sample(MambaGPU *model, Tokenizer *tokenizer, const TrainArgs *args, uint64_t *rng) {
    float *params = (float *)mallocCheck(model->layout.total * sizeof(float));
    mamba_gpu_get_params(model, params);
    Mamba cpu_model;
    mamba_build(&cpu_model, &model->config, params);
    sample_print(&cpu_model, tokenizer, args->gen_T, args->temperature, args->top_k, rng);
    mamba_free(&cpu_model);
    free(params);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* step lines appear as they happen, also in a piped log */
    TrainArgs args;
    args_defaults(&args);
    args_parse(&args, argc, argv, "train_ssdcu");

    int device = 0;
    cudaDeviceProp prop;
    cudaCheck(cudaSetDevice(device));
    cudaCheck(cudaGetDeviceProperties(&prop, device));
    printf("device: %s, %d SMs, %.1f GiB, compute %d.%d, precision %s\n", prop.name, prop.multiProcessorCount,
           prop.totalGlobalMem / 1073741824.0, prop.major, prop.minor, PRECISION_NAME);
    cudaStream_t stream;
    cudaCheck(cudaStreamCreate(&stream));
    matmul_init();

    TrainRun run;
    train_run_init(&run, &args);
    MambaGPU model;
    mamba_gpu_build(&model, &run.config, run.params, stream);
    size_t act_bytes = mamba_gpu_alloc_activations(&model, args.B, args.T);
    printf("activations %.2f GiB\n", act_bytes / 1073741824.0);
    size_t n = model.layout.total;
    if (run.resumed) {
        cudaCheck(cudaMemcpy(model.adam_m, run.resume_state.m, n * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(model.adam_v, run.resume_state.v, n * sizeof(float), cudaMemcpyHostToDevice));
    }
    train_run_release_params(&run);

    AdamWHyper hyper = {0.0f, 0.9f, 0.95f, 1e-8f, args.weight_decay, args.grad_clip, 0};
    float dloss = 1.0f / (float)(run.total_batch);
    float *params = (float *)mallocCheck(n * sizeof(float));
    float *m = (float *)mallocCheck(n * sizeof(float)), *v = (float *)mallocCheck(n * sizeof(float));
    double total_ms = 0.0;
    int timed_steps = 0;

    for (int step = run.start_step; step <= run.max_steps; step++) {
        int last = step == run.max_steps;
        if (train_run_checkpoint_due(&run, step)) {
            mamba_gpu_get_params(&model, params);
            cudaCheck(cudaMemcpy(m, model.adam_m, n * sizeof(float), cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(v, model.adam_v, n * sizeof(float), cudaMemcpyDeviceToHost));
            /* the model file holds the fp32 master weights, so they double as the state's master copy */
            train_run_save_checkpoint(&run, step, params, m, v, params);
        }
        if (train_run_val_due(&run, step)) {
            float val_loss;
            if (run.full_val) {
                EvalResult r = mamba_gpu_evaluate_split(&model, &run.val_split, args.eval_carry);
                val_loss = (float)(r.loss_sum / r.tokens);
                if (last) eval_result_report("val", step, r, args.eval_carry, &run.logger);
            } else {
                val_loss = evaluate(&model, &run.val_loader, args.val_max_steps);
            }
            printf("val loss %.6f\n", val_loss);
            logger_log_val(&run.logger, step, val_loss);
        }
        if (train_run_sample_due(&run, step)) print_sample(&model, &run.tokenizer, &args, &run.sample_rng);
        if (last) break;

        double t0 = wall_seconds();
        mamba_gpu_zero_grad(&model);
        float loss = 0.0f;
        for (int micro = 0; micro < run.grad_accum; micro++) {
            dataloader_next_batch(&run.train_loader);
            mamba_gpu_set_batch(&model, run.train_loader.inputs, run.train_loader.targets);
            mamba_gpu_forward(&model, dloss, NULL);
            mamba_gpu_backward(&model);
            loss += mamba_gpu_mean_loss(&model) / run.grad_accum;
        }
        /* a multi-GPU build all-reduces model.grads here */
        mamba_gpu_grad_norm(&model);
        hyper.lr = schedule_lr(&run.schedule, step);
        hyper.step = step + 1;
        mamba_gpu_update(&model, &hyper);
        float norm = mamba_gpu_read_grad_norm(&model);
        double ms = (wall_seconds() - t0) * 1e3;
        if (step == run.start_step) {
            size_t free_bytes, total_bytes;
            cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
            printf("device memory in use after the first step: %.2f GiB of %.2f GiB\n",
                   (total_bytes - free_bytes) / 1073741824.0, total_bytes / 1073741824.0);
        } else { /* the first step pays for cuBLASLt's and the allocator's warm-up */
            total_ms += ms;
            timed_steps++;
        }
        printf("step %5d/%d | loss %.6f | norm %.4f | lr %.2e | %.1f ms | %.0f tok/s\n", step + 1, run.max_steps, loss,
               norm, hyper.lr, ms, run.total_batch / (ms / 1e3));
        logger_log_train(&run.logger, step, loss, hyper.lr, norm);
    }
    if (timed_steps > 0)
        printf("average %.2f ms per step, %.0f tok/s\n", total_ms / timed_steps,
               run.total_batch / (total_ms / timed_steps / 1e3));
    if (args.test_pattern) {
        EvalResult r = mamba_gpu_evaluate_split(&model, &run.test_split, args.eval_carry);
        eval_result_report("test", run.max_steps, r, args.eval_carry, &run.logger);
    }

    free(params);
    free(m);
    free(v);
    train_run_free(&run);
    mamba_gpu_free(&model);
    matmul_free();
    cudaCheck(cudaStreamDestroy(stream));
    return 0;
}
#endif
