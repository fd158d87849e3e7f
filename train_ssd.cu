/*
 * train_ssdcu: the CUDA trainer for Mamba-2 (scalar A) and SSD-Mamba (diagonal A) language models.
 * Same model, configs, flags, data shards and checkpoint files as the CPU trainer train_ssd.c; the
 * model math is in model/cpu_model.h; the training loop is train/train_loop.c, shared with the CPU
 * trainer, and this file is the GPU compute behind its TrainCompute.
 *
 * Several GPUs: one process per GPU (torchrun, srun or mpirun; train/launch.h), NCCL collectives
 * (train/comm_nccl.cuh). The gradients of the step's last micro-batch are all-reduced in one bucket
 * per layer on a communication stream as soon as that layer's backward is done, overlapping the
 * backward of the layers below; the norm, clipping and AdamW wait for the last bucket. With -z 1
 * (ZeRO-1) the gradient buffer is reduce-scattered after the backward instead, each rank updates its
 * shard of the parameters with its shard of the AdamW moments (the only ones it keeps), and the fp32
 * master weights are all-gathered (the vector parameters are read from them in fp32, so they stay
 * whole on every rank).
 *
 * Document boundaries (-db 1): each batch's segments [B][T] (data/dataloader.h, document_segments) go to the
 * device with its tokens, and the conv and the SSD scan of every layer restart their state at each document,
 * forward, backward and recomputation. A carried state (-cs 1 in training, -ec 1 in evaluation): the state
 * each row's window starts from and the one it leaves are in train/gpu_carry.cuh.
 *
 * Precision: parameters and activations in floatX (bf16 by default, fp32 with PRECISION=FP32);
 * fp32 for the residual stream, norm statistics, gradients, AdamW moments and master weights. The
 * vector parameters (norm weights, conv, dt_bias, A_log, D) are read as fp32 from the master
 * weights; only the matrices (wte, in_proj, out_proj) are read in floatX by the matmuls.
 */
#include <algorithm>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataloader.h"
#include "data/tokenizer.h"
#include "train/args.h"
#include "train/comm.h"
#include "model/config.h"
#include "train/eval_split.h"
#include "train/gpu_carry.cuh"
#include "train/launch.h"
#include "train/stop.h"
#include "model/params.h"
#include "train/train_loop.h"
#include "train/train_run.h"
#include "common/utils.h"

#include "kernels/adamw.cuh"
#include "kernels/classifier.cuh"
#include "kernels/common.cuh"
#ifdef USE_NCCL
#include "train/comm_nccl.cuh"
#endif
#include "kernels/conv1d.cuh"
#include "kernels/encoder.cuh"
#include "kernels/gated_norm.cuh"
#include "kernels/matmul.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/ssd_scan.cuh"

/* ------------------------------------------------------------------------------------------------
 * the model on the GPU
 */
/*
 * Activation recomputation (-r, MambaGPU.recompute): the forward keeps every layer's activations for
 * the backward (-r 0), or only the expensive ones, and the backward of each layer first re-runs the
 * cheap parts of its forward into one layer-sized buffer, with the same kernels on the same inputs, so
 * the recomputed values, and therefore the losses and gradients, are bit-identical to the kept ones.
 *   -r 1: recomputes the input norm, the conv and the gated norm (norm_out, xbc, gated and their rstd)
 *         from the kept residual and in_proj output; keeps the scan's output and saved workspace.
 *   -r 2: also re-runs the scan's forward (y and its saved workspace): per layer only the residual and
 *         the in_proj output stay, the rest is one layer's worth.
 * The in_proj and out_proj matmuls are never re-run (they are most of the step's FLOPs). With a carried state
 * the conv and the scan re-run from the state the window started from (MambaGPU.start), the one the forward read.
 */
#define RECOMPUTE_CHEAP 1
#define RECOMPUTE_SCAN 2

/* Rows of logits that exist at once: the lm_head and the loss run in slices of this many rows, so the
 * logits of a long sequence (B*T x Vp) never exist whole (8192 rows of a 50K vocabulary: 0.77 GiB). */
#define CLASSIFIER_MAX_ROWS 8192

/* Per-layer activations are [L, N, width] with each layer's slice padded to whole 256-byte units
 * (layer_stride), or [1, N, width] where recomputation keeps one layer's worth. */
typedef struct {
    float *residual;    /* [L+1, N, D] residual stream entering each layer, and after the last */
    floatX *norm_out;   /* [L or 1, N, D] (1 with -r >= 1) */
    float *norm_rstd;   /* [L or 1, N] (1 with -r >= 1) */
    floatX *zxbcdt;     /* [L, N, d_in_proj] in_proj output: z, xBC (before the conv), dt */
    floatX *xbc;        /* [L or 1, N, conv_dim] after conv + SiLU (1 with -r >= 1) */
    floatX *y;          /* [L or 1, N, E] SSD output including D x (1 with -r 2) */
    float *gated_rstd;  /* [L or 1, N, G] (1 with -r >= 1) */
    floatX *gated;      /* [L or 1, N, E] out_proj input (1 with -r >= 1) */
    floatX *proj_out;   /* [N, D] out_proj output of the layer just run (added by the next norm); shares dnorm's
                           memory: dnorm is first written after the final norm has read the last proj_out */
    floatX *final_norm; /* [N, D]; shares dres_x's memory: it is dead once the forward's lm_head is done */
    float *final_rstd;  /* [N] */
    floatX *logits;     /* [min(N, classifier rows), Vp] one slice; after a training forward, its gradient */
    float *losses;      /* [N] */
    char *ssd_workspace;/* the SSD scan's workspaces: L layers' saved parts (one layer's with -r 2) + scratch */
    /* backward scratch */
    float *dres;        /* [N, D] gradient of the residual stream */
    floatX *dres_x;     /* [N, D] the same in floatX, input of the matmuls */
    floatX *dgated;     /* [N, max(E, conv_dim)]; also holds dxbc: dgated is dead once dy is computed */
    floatX *dy;         /* [N, E] */
    floatX *dxbc;       /* [N, conv_dim] in dgated's buffer */
    floatX *dzxbcdt;    /* [N, d_in_proj] */
    floatX *dnorm;      /* [N, D]; the final norm's output gradient from the forward's lm_head backward */
    float *reduce;      /* partial sums of the deterministic parameter-gradient reductions */
} GPUActivations;

typedef struct {
    ModelConfig config;
    ParamLayout layout;
    /* the ranks: flat buffers are padded to world x shard elements (train/comm.h) */
    Comm *comm;
    int zero;                    /* ZeRO-1: this rank keeps and updates the moments of [lo, hi) only */
    size_t shard, padded, lo, hi;/* lo, hi: the parameters this rank updates (all of them without ZeRO) */
    cudaStream_t comm_stream;    /* the gradient buckets' all-reduces, beside the backward */
    cudaEvent_t *bucket_ready;   /* [L + 1]: a layer's gradients are complete (then the head's) */
    cudaEvent_t grads_reduced;
    cudaEvent_t backward_done;   /* the backward's last kernel: from there to grads_reduced is exposed */
    double exposed_ms;           /* summed over the steps that reduced in the backward */
    int exposed_steps, exposed_pending, reduced_steps; /* the first step (NCCL's warm-up) is not counted */
    int reduce_in_backward;      /* set for the step's last micro-batch when the backward all-reduces */
    float *master;      /* fp32 master weights, flat (layout) */
    floatX *params;     /* floatX copy used by the forward (the master itself in the FP32 build) */
    float *grads;       /* fp32, flat */
    float *adam_m, *adam_v;      /* [hi - lo]: the moments of the parameters this rank updates */
    float *master_t[NUM_PARAM_TENSORS];
    floatX *params_t[NUM_PARAM_TENSORS];
    float *grads_t[NUM_PARAM_TENSORS];
    GPUActivations acts;
    int recompute;               /* -r: 0, RECOMPUTE_CHEAP or RECOMPUTE_SCAN; set before the activations are allocated */
    int classifier_rows;         /* rows per slice of the lm_head and loss: CLASSIFIER_MAX_ROWS (tests lower it) */
    unsigned char *greedy_hits;  /* NULL, or [N] on the device: the next forward writes each target's greedy hit */
    size_t ssd_workspace_bytes;  /* stride between layers' SSD workspaces: the part the forward keeps */
    int B, T;                    /* activations are sized for B*T tokens */
    /* the current batch: inputs, targets, and the token buckets of the embedding backward */
    int *d_batch;                /* device: inputs[N], targets[N], bucket_token[N], bucket_start[N+1], bucket_pos[N],
                                    segment[N] (with document boundaries) */
    int *h_batch;                /* pinned host copy */
    int *h_count;                /* [vocab_size] scratch of the bucket sort */
    int num_buckets;
    cudaEvent_t batch_copied;
    int doc_eot;                 /* document boundaries: this input ends a document; -1: off (mamba_gpu_set_document_end) */
    GPUCarry start;              /* the carried state the last forward started from (conv NULL: zero), which its
                                    backward and recomputation read */
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

/* The shape of the SSD scan of every layer for B x T tokens */
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
    s.path = SSD_PATH_AUTO;
    return s;
}

/* Exits naming the field when train_ssdcu's kernels cannot run the config's shape (train_ssd runs any valid
 * config): d_conv 2 to 4, headdim and d_state up to 256, chunk_size up to 1024 (kernels/ssd_scan.cuh). For
 * the check before anything is allocated; the check that needs the GPU (its shared memory per block) is
 * ssd_scan_check_device, in mamba_gpu_build_ranks. */
static void mamba_gpu_check_config(const ModelConfig *c) {
    conv1d_check_width(c->d_conv);
    struct {
        const char *field;
        int value, max;
    } limits[] = {{"headdim", c->headdim, SSD_MAX_HEADDIM},
                  {"d_state", c->d_state, SSD_MAX_STATE},
                  {"chunk_size", c->chunk_size, SSD_MAX_CHUNK}};
    for (const auto &l : limits)
        if (l.value > l.max) {
            fprintf(stderr, "error: field '%s' (%d) must be at most %d for train_ssdcu's CUDA kernels (train_ssd, "
                            "the CPU trainer, runs it)\n", l.field, l.value, l.max);
            exit(EXIT_FAILURE);
        }
    SSDScanShape shape = mamba_gpu_ssd_shape(c, 1, 1);
    ssd_scan_workspace_bytes(&shape); /* the scan's own check of the rest of the shape */
}

/* Uploads fp32 params (layout.total) into a freshly built model for the ranks of comm (NULL: one
 * process); zero: ZeRO-1. */
void mamba_gpu_build_ranks(MambaGPU *m, const ModelConfig *config, const float *params, cudaStream_t stream,
                           Comm *comm, int zero) {
    static Comm single;
    if (comm == NULL) {
        comm_single_init(&single);
        comm = &single;
    }
    memset(m, 0, sizeof(*m));
    m->config = *config;
    m->classifier_rows = CLASSIFIER_MAX_ROWS;
    m->stream = stream;
    m->comm = comm;
    m->zero = zero;
    m->doc_eot = -1;
    mamba_gpu_check_config(config);
    SSDScanShape shape = mamba_gpu_ssd_shape(config, 1, 1);
    ssd_scan_check_device(&shape);
    param_layout_init(&m->layout, config);
    size_t n = m->layout.total, bytes = 0;
    m->shard = comm_shard_size(n, comm->world);
    m->padded = m->shard * comm->world;
    m->lo = zero ? std::min(n, m->shard * comm->rank) : 0;
    m->hi = zero ? std::min(n, m->lo + m->shard) : n;
    size_t kept = m->hi - m->lo;
    m->master = (float *)device_alloc(m->padded * sizeof(float), &bytes);
    m->grads = (float *)device_alloc(m->padded * sizeof(float), &bytes);
    m->adam_m = (float *)device_alloc(std::max(kept, (size_t)1) * sizeof(float), &bytes);
    m->adam_v = (float *)device_alloc(std::max(kept, (size_t)1) * sizeof(float), &bytes);
    cudaCheck(cudaMemset(m->adam_m, 0, kept * sizeof(float)));
    cudaCheck(cudaMemset(m->adam_v, 0, kept * sizeof(float)));
    cudaCheck(cudaMemset(m->grads, 0, m->padded * sizeof(float)));
    cudaCheck(cudaMemset(m->master, 0, m->padded * sizeof(float)));
#if defined(ENABLE_FP32)
    m->params = m->master;
#else
    m->params = (floatX *)device_alloc(n * sizeof(floatX), &bytes);
#endif
    if (comm->world > 1) {
        /* the highest priority, so that each bucket's NCCL kernels start as soon as SMs free up between
         * the backward's kernels instead of queueing behind them */
        int lowest_priority, highest_priority;
        cudaCheck(cudaDeviceGetStreamPriorityRange(&lowest_priority, &highest_priority));
        cudaCheck(cudaStreamCreateWithPriority(&m->comm_stream, cudaStreamNonBlocking, highest_priority));
        m->bucket_ready = (cudaEvent_t *)mallocCheck((config->n_layer + 1) * sizeof(cudaEvent_t));
        for (int l = 0; l <= config->n_layer; l++)
            cudaCheck(cudaEventCreateWithFlags(&m->bucket_ready[l], cudaEventDisableTiming));
        cudaCheck(cudaEventCreate(&m->grads_reduced));
        cudaCheck(cudaEventCreate(&m->backward_done));
    }
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        m->master_t[t] = m->master + m->layout.offsets[t];
        m->params_t[t] = m->params + m->layout.offsets[t];
        m->grads_t[t] = m->grads + m->layout.offsets[t];
    }
    cudaCheck(cudaMalloc(&m->d_scalars, 2 * sizeof(float)));
    cudaCheck(cudaMalloc(&m->norm_scratch, NORM_BLOCKS * sizeof(float)));
    mamba_gpu_set_params(m, params);
}

void mamba_gpu_build(MambaGPU *m, const ModelConfig *config, const float *params, cudaStream_t stream) {
    mamba_gpu_build_ranks(m, config, params, stream, NULL, 0);
}

/* Document boundaries (model/cpu_model.h, mamba_set_document_end): every input equal to eot ends its document,
 * and the conv and the SSD state restart after it, forward and backward; eot = -1 turns them off. */
void mamba_gpu_set_document_end(MambaGPU *m, int eot) { m->doc_eot = eot; }

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

/* Elements of one layer's slice of a per-layer activation of width values per token, for n tokens: whole
 * 256-byte units, so that every layer's slice is as aligned as the buffer. cuBLASLt picks its kernel by
 * the operands' alignment, and a recomputed activation must go through the same kernel as a kept one. */
static size_t layer_stride(size_t n, size_t width, size_t elem_bytes) { return ssd_align(n * width * elem_bytes) / elem_bytes; }

/* One device buffer of the activations: where its pointer goes and its size. */
typedef struct {
    void **ptr;
    size_t bytes;
} ActivationBuffer;

#define MAX_ACTIVATION_BUFFERS 24

/* the ints of a batch of N tokens in MambaGPU.d_batch; the segments start at BATCH_SEGMENT(N) */
#define BATCH_SEGMENT(N) (5 * (size_t)(N) + 1)
#define BATCH_INTS(N) (6 * (size_t)(N) + 1)

/* The device buffers of the activations for B x T tokens (a: where their pointers go, batch: the batch's
 * ints): the one list that mamba_gpu_alloc_activations allocates, mamba_gpu_free frees and
 * mamba_gpu_memory_bytes counts. Returns the count. proj_out, final_norm and dxbc live in other buffers
 * (activation_aliases). */
static int activation_buffers(const ModelConfig *c, int B, int T, int recompute, int classifier_rows, GPUActivations *a,
                              int **batch, ActivationBuffer *out) {
    size_t N = (size_t)B * T, L = c->n_layer, D = c->d_model, E = c->d_inner, G = c->ngroups, X = sizeof(floatX);
    size_t F = sizeof(float), dip = c->d_in_proj, conv = c->conv_dim;
    size_t cheap_layers = recompute >= RECOMPUTE_CHEAP ? 1 : L, scan_layers = recompute >= RECOMPUTE_SCAN ? 1 : L;
    SSDScanShape shape = mamba_gpu_ssd_shape(c, B, T);
    /* layer l's workspace starts at l * saved bytes: what its forward keeps does not overlap the other
     * layers', and its backward scratch overlaps only later layers, whose backward has already run */
    size_t ssd_bytes = (scan_layers - 1) * ssd_scan_saved_bytes(&shape) + ssd_scan_workspace_bytes(&shape);
    size_t logit_rows = std::min(N, (size_t)classifier_rows);
    size_t reduce_floats = std::max(rmsnorm_backward_scratch_floats((int)D), gated_norm_backward_scratch_floats((int)E));
    reduce_floats = std::max(reduce_floats, conv1d_backward_scratch_floats(B, T, c->conv_dim));
    ActivationBuffer list[] = {
        {(void **)&a->residual, (L + 1) * layer_stride(N, D, F) * F},
        {(void **)&a->norm_out, cheap_layers * layer_stride(N, D, X) * X},
        {(void **)&a->norm_rstd, cheap_layers * layer_stride(N, 1, F) * F},
        {(void **)&a->zxbcdt, L * layer_stride(N, dip, X) * X},
        {(void **)&a->xbc, cheap_layers * layer_stride(N, conv, X) * X},
        {(void **)&a->y, scan_layers * layer_stride(N, E, X) * X},
        {(void **)&a->gated_rstd, cheap_layers * layer_stride(N, G, F) * F},
        {(void **)&a->gated, cheap_layers * layer_stride(N, E, X) * X},
        {(void **)&a->final_rstd, N * F},
        {(void **)&a->logits, logit_rows * c->padded_vocab * X},
        {(void **)&a->losses, N * F},
        {(void **)&a->ssd_workspace, ssd_bytes},
        {(void **)&a->dres, N * D * F},
        {(void **)&a->dres_x, N * D * X},
        {(void **)&a->dgated, N * std::max(E, conv) * X},
        {(void **)&a->dy, N * E * X},
        {(void **)&a->dzxbcdt, N * dip * X},
        {(void **)&a->dnorm, N * D * X},
        {(void **)&a->reduce, reduce_floats * F},
        {(void **)batch, BATCH_INTS(N) * sizeof(int)}, /* inputs, targets, the embedding backward's buckets, segments */
    };
    int count = (int)(sizeof(list) / sizeof(list[0]));
    static_assert(sizeof(list) / sizeof(list[0]) <= MAX_ACTIVATION_BUFFERS, "raise MAX_ACTIVATION_BUFFERS");
    memcpy(out, list, sizeof(list));
    return count;
}

/* Bytes of device memory mamba_gpu_build_ranks and mamba_gpu_alloc_activations will allocate for B x T
 * tokens over world ranks with recomputation level recompute, in double (no overflow), cuBLASLt's
 * workspace and the states of carry_streams carried streams (-cs 1: grad_accum x B; 0 without) included;
 * exits naming the field if the kernels cannot run the shape. For the check before anything is allocated. */
double mamba_gpu_memory_bytes(const ModelConfig *c, int B, int T, int world, int zero, int recompute,
                              int carry_streams) {
    mamba_gpu_check_config(c);
    ParamLayout layout;
    param_layout_init(&layout, c);
    double n = (double)layout.total, padded = (double)comm_shard_size(layout.total, world) * world;
    double kept = zero ? padded / world : n;
#if defined(ENABLE_FP32)
    double weights = 8 * padded + 8 * kept; /* master, gradients, moments; the forward reads the master */
#else
    double weights = 8 * padded + 8 * kept + sizeof(floatX) * n; /* and the floatX copy */
#endif
    GPUActivations a;
    int *batch;
    ActivationBuffer list[MAX_ACTIVATION_BUFFERS];
    int count = activation_buffers(c, B, T, recompute, CLASSIFIER_MAX_ROWS, &a, &batch, list);
    double activations = 0;
    for (int i = 0; i < count; i++) activations += (double)list[i].bytes;
    return weights + activations + MATMUL_WORKSPACE_BYTES + gpu_stream_carry_bytes(c, carry_streams);
}

/* Allocates activations for B x T tokens, keeping what m->recompute says; returns the bytes allocated. */
size_t mamba_gpu_alloc_activations(MambaGPU *m, int B, int T) {
    const ModelConfig *c = &m->config;
    size_t bytes = 0;
    m->B = B;
    m->T = T;
    ActivationBuffer list[MAX_ACTIVATION_BUFFERS];
    int count = activation_buffers(c, B, T, m->recompute, m->classifier_rows, &m->acts, &m->d_batch, list);
    for (int i = 0; i < count; i++) *list[i].ptr = device_alloc(list[i].bytes, &bytes);
    GPUActivations *a = &m->acts;
    a->proj_out = a->dnorm;
    a->final_norm = a->dres_x;
    a->dxbc = a->dgated;
    SSDScanShape shape = mamba_gpu_ssd_shape(c, B, T);
    m->ssd_workspace_bytes = ssd_scan_saved_bytes(&shape);
    cudaCheck(cudaMallocHost(&m->h_batch, BATCH_INTS((size_t)B * T) * sizeof(int)));
    m->h_count = (int *)mallocCheck((size_t)c->vocab_size * sizeof(int));
    cudaCheck(cudaEventCreateWithFlags(&m->batch_copied, cudaEventDisableTiming));
    cudaCheck(cudaEventRecord(m->batch_copied, m->stream));
    return bytes;
}

/* Copies a batch (inputs and targets, N = B*T each; targets may be NULL) to the device, with its document
 * segments when the model has boundaries (data/dataloader.h, document_segments). Checks the token ids: the
 * kernels index wte with them; a target may be IGNORE_TARGET (it does not count). */
void mamba_gpu_set_batch(MambaGPU *m, const int *inputs, const int *targets) {
    const ModelConfig *c = &m->config;
    int N = m->B * m->T;
    for (int i = 0; i < N; i++) {
        int bad_target = targets && targets[i] != IGNORE_TARGET && (targets[i] < 0 || targets[i] >= c->vocab_size);
        if (inputs[i] < 0 || inputs[i] >= c->vocab_size || bad_target) {
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
    if (m->doc_eot >= 0) document_segments(inputs, m->B, m->T, m->doc_eot, h + BATCH_SEGMENT(N));
    size_t ints = m->doc_eot >= 0 ? BATCH_INTS(N) : BATCH_SEGMENT(N);
    cudaCheck(cudaMemcpyAsync(m->d_batch, h, ints * sizeof(int), cudaMemcpyHostToDevice, m->stream));
    cudaCheck(cudaEventRecord(m->batch_copied, m->stream));
}

/* the current batch's segments [B][T] on the device, or NULL without document boundaries */
static const int *batch_segment(const MambaGPU *m) {
    return m->doc_eot >= 0 ? m->d_batch + BATCH_SEGMENT(m->B * m->T) : NULL;
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

/* Layer l's activations (the shared layer-sized buffers where recomputation keeps one layer's worth). */
typedef struct {
    float *res, *norm_rstd, *gated_rstd;
    floatX *norm_out, *zxbcdt, *xbc, *y, *gated;
    char *ssd_workspace;
} GPULayerActs;

/* The residual stream entering layer l (l = L: after the last layer). */
static float *layer_residual(const MambaGPU *m, int l) {
    return m->acts.residual + l * layer_stride((size_t)m->B * m->T, m->config.d_model, sizeof(float));
}

static GPULayerActs layer_acts(const MambaGPU *m, int l) {
    const ModelConfig *c = &m->config;
    const GPUActivations *a = &m->acts;
    size_t N = (size_t)m->B * m->T, X = sizeof(floatX), F = sizeof(float);
    size_t cheap = m->recompute >= RECOMPUTE_CHEAP ? 0 : l, scan = m->recompute >= RECOMPUTE_SCAN ? 0 : l;
    GPULayerActs la;
    la.res = layer_residual(m, l);
    la.norm_out = a->norm_out + cheap * layer_stride(N, c->d_model, X);
    la.norm_rstd = a->norm_rstd + cheap * layer_stride(N, 1, F);
    la.zxbcdt = a->zxbcdt + l * layer_stride(N, c->d_in_proj, X);
    la.xbc = a->xbc + cheap * layer_stride(N, c->conv_dim, X);
    la.y = a->y + scan * layer_stride(N, c->d_inner, X);
    la.gated = a->gated + cheap * layer_stride(N, c->d_inner, X);
    la.gated_rstd = a->gated_rstd + cheap * layer_stride(N, c->ngroups, F);
    la.ssd_workspace = a->ssd_workspace + scan * m->ssd_workspace_bytes;
    return la;
}

/* The part of a layer's forward between in_proj and out_proj: conv, the SSD scan (unless scan is 0:
 * its output and workspace are kept) and the gated norm. in, out: as in mamba_gpu_forward_carry (NULL: a zero
 * start, no state wanted). */
static void layer_mixer_forward(MambaGPU *m, int l, const GPULayerParams *p, const GPULayerActs *la, const GPUCarry *in,
                                GPUCarry *out, int scan) {
    const ModelConfig *c = &m->config;
    int B = m->B, T = m->T, E = c->d_inner, GN = c->ngroups * c->d_state, dip = c->d_in_proj;
    SSDScanShape shape = mamba_gpu_ssd_shape(c, B, T);
    const int *segment = batch_segment(m);
    const float *conv_in = in ? in->conv + l * in->conv_floats : NULL, *ssm_in = in ? in->ssm + l * in->ssm_floats : NULL;
    float *conv_out = out ? out->conv + l * out->conv_floats : NULL, *ssm_out = out ? out->ssm + l * out->ssm_floats : NULL;
    conv1d_forward(la->xbc, la->zxbcdt + E, dip, p->conv_w, p->conv_b, segment, conv_in, conv_out, B, T, c->conv_dim,
                   c->d_conv, m->stream);
    if (scan)
        ssd_scan_forward(&shape, la->y, la->xbc, la->zxbcdt + 2 * E + 2 * GN, p->dt_bias, p->A_log, p->D, segment,
                         ssm_in, ssm_out, la->ssd_workspace, m->stream);
    gated_norm_forward(la->gated, la->gated_rstd, la->y, la->zxbcdt, dip, p->gnorm_w, B * T, E, c->ngroups, c->norm_eps,
                       m->stream);
}

/* the state the last forward started from, or NULL (zero) */
static const GPUCarry *forward_start(const MambaGPU *m) { return m->start.conv ? &m->start : NULL; }

/* Before layer l's backward with recomputation: its input norm (from the kept residual, which the
 * forward's fused add wrote: the norm of the same fp32 values) and its mixer's cheap parts, into the
 * layer-sized buffers, exactly as its forward computed them. */
static void layer_recompute(MambaGPU *m, int l, const GPULayerParams *p, const GPULayerActs *la) {
    const ModelConfig *c = &m->config;
    rmsnorm_forward(la->res, la->norm_out, la->norm_rstd, la->res, NULL, p->norm_w, m->B * m->T, c->d_model,
                    c->norm_eps, m->stream);
    layer_mixer_forward(m, l, p, la, forward_start(m), NULL, m->recompute >= RECOMPUTE_SCAN);
}

/*
 * Forward over the current batch. dloss > 0: also the gradient of dloss * sum(losses) through the
 * lm_head (a training step; pass 1 / the step's counted targets): wte's gradient accumulated and the
 * final norm's output gradient in acts.dnorm, for mamba_gpu_backward; dloss == 0: losses only. The
 * losses of targets that do not count are 0. With m->greedy_hits set (dloss == 0), also each target's
 * greedy hit.
 * in: NULL (every row starts from a zero state) or the state entering each row (with document boundaries, up to
 * the row's first boundary); out: NULL or receives the state after the batch (a row whose last input ends a
 * document: zero). A forward whose backward follows keeps in and out apart: the backward (and its recomputation)
 * reads in, the state its window started from; the gradient stops there. They may be the same buffer otherwise.
 * The mean loss stays on the device until mamba_gpu_mean_loss reads it.
 */
void mamba_gpu_forward_carry(MambaGPU *m, float dloss, const GPUCarry *in, GPUCarry *out) {
    const ModelConfig *c = &m->config;
    GPUActivations *a = &m->acts;
    cudaStream_t st = m->stream;
    int N = m->B * m->T, D = c->d_model, E = c->d_inner, V = c->vocab_size, Vp = c->padded_vocab;
    const int *inputs = m->d_batch, *targets = m->d_batch + N;
    if (in) m->start = *in;
    else memset(&m->start, 0, sizeof(m->start));
    encoder_forward(a->residual, inputs, m->master_t[P_WTE], N, D, st);
    for (int l = 0; l < c->n_layer; l++) {
        GPULayerParams p = layer_params(m, l);
        GPULayerActs la = layer_acts(m, l);
        const float *prev = l == 0 ? la.res : layer_residual(m, l - 1);
        rmsnorm_forward(la.res, la.norm_out, la.norm_rstd, prev, l == 0 ? NULL : a->proj_out, p.norm_w, N, D,
                        c->norm_eps, st);
        matmul_forward(la.zxbcdt, la.norm_out, p.in_proj_w, N, D, c->d_in_proj, st);
        layer_mixer_forward(m, l, &p, &la, in, out, 1);
        matmul_forward(a->proj_out, la.gated, p.out_proj_w, N, E, D, st);
    }
    if (out && m->doc_eot >= 0) gpu_carry_zero_ended(out, c, inputs, m->B, m->T, m->doc_eot, st);
    float *last = layer_residual(m, c->n_layer);
    rmsnorm_forward(last, a->final_norm, a->final_rstd, layer_residual(m, c->n_layer - 1), a->proj_out,
                    m->master_t[P_NORM_F], N, D, c->norm_eps, st);
    /* the lm_head and the loss one slice of rows at a time; in training, each slice's logit gradient
     * goes through the lm_head's backward before the next slice overwrites it */
    int rows = std::min(N, m->classifier_rows);
    for (int r0 = 0; r0 < N; r0 += rows) {
        int n = std::min(rows, N - r0);
        const floatX *x = a->final_norm + (size_t)r0 * D;
        matmul_forward(a->logits, x, m->params_t[P_WTE], n, D, Vp, st);
        fused_classifier(a->logits, a->losses + r0, targets + r0, dloss, n, V, Vp, st);
        if (m->greedy_hits) greedy_hit(a->logits, targets + r0, m->greedy_hits + r0, n, V, Vp, st);
        if (dloss == 0.0f) continue;
        matmul_backward_weight(m->grads_t[P_WTE], a->logits, x, n, D, Vp, st);
        matmul_backward_input(a->dnorm + (size_t)r0 * D, a->logits, m->params_t[P_WTE], n, D, Vp, st);
    }
    mean_loss(m->d_scalars, a->losses, targets, N, st);
}

/* carry: NULL (a zero start) or the state entering the batch, replaced by the state after it (evaluation and
 * generation: no backward follows a carried forward). */
void mamba_gpu_forward(MambaGPU *m, float dloss, GPUCarry *carry) { mamba_gpu_forward_carry(m, dloss, carry, carry); }

/* Waits for everything enqueued on the model's stream; over NCCL, watching the other ranks. */
static void stream_wait(MambaGPU *m) {
#ifdef USE_NCCL
    if (!strcmp(m->comm->backend, "nccl")) {
        comm_nccl_wait(m->comm, m->stream);
        return;
    }
#endif
    cudaCheck(cudaStreamSynchronize(m->stream));
}

/* Waits for the forward and returns the mean loss over the batch's counted targets. */
float mamba_gpu_mean_loss(MambaGPU *m) {
    float loss;
    cudaCheck(cudaMemcpyAsync(&loss, m->d_scalars, sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    stream_wait(m);
    return loss;
}

/* Generation on the GPU, a TokenFeeder (model/cpu_sample.h): one row through mamba_gpu_forward from a carried
 * state, the prompt in pieces of at most max_T tokens (what the activations hold), then one token at a time;
 * with T = 1 the scan from the carried state is the recurrence, so a token costs the same however many came
 * before it. The logits of the last position are copied to the host for sampling. */
typedef struct {
    MambaGPU *model;
    int max_T;
    GPUCarry carry;
    floatX *host_logits; /* [Vp] */
} GPUFeeder;

static void gpu_feed(void *self, const int *tokens, int n, int reset, real *logits) {
    GPUFeeder *f = (GPUFeeder *)self;
    MambaGPU *m = f->model;
    const ModelConfig *c = &m->config;
    if (reset) gpu_carry_zero(&f->carry, c->n_layer, m->stream);
    m->B = 1;
    for (int done = 0; done < n; done += m->T) {
        m->T = std::min(n - done, f->max_T);
        mamba_gpu_set_batch(m, tokens + done, NULL);
        mamba_gpu_forward(m, 0.0f, &f->carry);
    }
    cudaCheck(cudaMemcpyAsync(f->host_logits, m->acts.logits + (size_t)(m->T - 1) * c->padded_vocab,
                              c->padded_vocab * sizeof(floatX), cudaMemcpyDeviceToHost, m->stream));
    stream_wait(m);
    for (int v = 0; v < c->padded_vocab; v++) logits[v] = (real)(float)f->host_logits[v];
}

TokenFeeder gpu_feeder_init(GPUFeeder *f, MambaGPU *m, int max_T) {
    f->model = m;
    f->max_T = max_T;
    gpu_carry_alloc(&f->carry, &m->config, 1);
    f->host_logits = (floatX *)mallocCheck(m->config.padded_vocab * sizeof(floatX));
    TokenFeeder feeder = {f, "GPU", gpu_feed};
    return feeder;
}

void gpu_feeder_free(GPUFeeder *f) {
    gpu_carry_free(&f->carry);
    free(f->host_logits);
}

void mamba_gpu_zero_grad(MambaGPU *m) {
    cudaCheck(cudaMemsetAsync(m->grads, 0, m->padded * sizeof(float), m->stream));
}

/* Bucket l < L: layer l's slices of the per-layer tensors, complete once its backward is done; bucket L:
 * wte and norm_f, complete after the embedding's backward. Summed over ranks on the communication
 * stream while the main stream goes on; grads_reduced, recorded after the group is launched, marks the
 * end of the last bucket. */
static void reduce_bucket(MambaGPU *m, int bucket) {
    int L = m->config.n_layer;
    Comm *comm = m->comm;
    cudaCheck(cudaEventRecord(m->bucket_ready[bucket], m->stream));
    if (bucket == L) cudaCheck(cudaEventRecord(m->backward_done, m->stream));
    cudaCheck(cudaStreamWaitEvent(m->comm_stream, m->bucket_ready[bucket], 0));
    comm->ops->group_start(comm);
    if (bucket < L) {
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
            if (m->layout.layer_sizes[t] == 0) continue;
            comm->ops->all_reduce(comm, m->grads_t[t] + param_layer_offset(&m->layout, t, bucket),
                                  m->layout.layer_sizes[t], m->comm_stream);
        }
    } else {
        comm->ops->all_reduce(comm, m->grads_t[P_WTE], m->layout.sizes[P_WTE], m->comm_stream);
        comm->ops->all_reduce(comm, m->grads_t[P_NORM_F], m->layout.sizes[P_NORM_F], m->comm_stream);
    }
    comm->ops->group_end(comm);
    if (bucket == L) cudaCheck(cudaEventRecord(m->grads_reduced, m->comm_stream));
}

/* Accumulates the gradients of the last training forward (its dloss; the lm_head's are already in)
 * into m->grads; with reduce_in_backward set, also sums them over the ranks, bucket by bucket
 * (reduce_bucket). With recomputation, each layer's cheap activations are re-run first. */
void mamba_gpu_backward(MambaGPU *m) {
    const ModelConfig *c = &m->config;
    GPUActivations *a = &m->acts;
    cudaStream_t st = m->stream;
    int B = m->B, T = m->T, N = B * T, D = c->d_model, E = c->d_inner, G = c->ngroups, GN = c->ngroups * c->d_state;
    int dip = c->d_in_proj, L = c->n_layer;
    SSDScanShape shape = mamba_gpu_ssd_shape(c, B, T);
    const int *buckets = m->d_batch + 2 * N, *segment = batch_segment(m);
    const GPUCarry *start = forward_start(m);

    /* the final norm, from the gradient of its output that the forward's lm_head backward left in dnorm */
    cudaCheck(cudaMemsetAsync(a->dres, 0, (size_t)N * D * sizeof(float), st));
    rmsnorm_backward(a->dres, a->dres_x, m->grads_t[P_NORM_F], a->reduce, a->dnorm, layer_residual(m, L),
                     a->final_rstd, m->master_t[P_NORM_F], N, D, st);

    for (int l = L - 1; l >= 0; l--) {
        GPULayerParams p = layer_params(m, l);
        GPULayerGrads g = layer_grads(m, l);
        GPULayerActs la = layer_acts(m, l);
        if (m->recompute) layer_recompute(m, l, &p, &la);
        /* residual[l+1] = residual[l] + out_proj(gated): dres is also the gradient of out_proj's output */
        matmul_backward_weight(g.out_proj_w, a->dres_x, la.gated, N, E, D, st);
        matmul_backward_input(a->dgated, a->dres_x, p.out_proj_w, N, E, D, st);
        gated_norm_backward(a->dy, a->dzxbcdt, g.gnorm_w, a->reduce, a->dgated, la.y, la.zxbcdt, dip, p.gnorm_w,
                            la.gated_rstd, N, E, G, st);
        ssd_scan_backward(&shape, a->dxbc, a->dzxbcdt + 2 * E + 2 * GN, g.dt_bias, g.A_log, g.D, a->dy, la.xbc,
                          la.zxbcdt + 2 * E + 2 * GN, p.dt_bias, p.A_log, p.D, segment, la.ssd_workspace, st);
        conv1d_backward(a->dzxbcdt + E, dip, g.conv_w, g.conv_b, a->reduce, a->dxbc, la.zxbcdt + E, dip, p.conv_w,
                        p.conv_b, segment, start ? start->conv + l * start->conv_floats : NULL, B, T, c->conv_dim,
                        c->d_conv, st);
        matmul_backward_weight(g.in_proj_w, a->dzxbcdt, la.norm_out, N, D, dip, st);
        matmul_backward_input(a->dnorm, a->dzxbcdt, p.in_proj_w, N, D, dip, st);
        rmsnorm_backward(a->dres, a->dres_x, g.norm_w, a->reduce, a->dnorm, la.res, la.norm_rstd, p.norm_w, N, D, st);
        if (m->reduce_in_backward) reduce_bucket(m, l);
    }
    encoder_backward(m->grads_t[P_WTE], a->dres, buckets, buckets + N, buckets + 2 * N + 1, m->num_buckets, D, st);
    if (m->reduce_in_backward) reduce_bucket(m, L);
}

/* The gradients summed over ranks (unless the backward did it), then the global gradient norm, which
 * stays on the device (read by the update and when printed). With ZeRO-1 the gradient buffer is
 * reduce-scattered and the norm is that of the rank's shard, its square summed over ranks. */
void mamba_gpu_grad_norm(MambaGPU *m) {
    Comm *comm = m->comm;
    if (comm->world > 1 && m->reduce_in_backward) {
        cudaCheck(cudaStreamWaitEvent(m->stream, m->grads_reduced, 0));
        m->exposed_pending = 1;
    } else if (comm->world > 1 && !m->zero) {
        comm->ops->all_reduce(comm, m->grads, m->layout.total, m->stream);
    } else if (m->zero) {
        comm->ops->reduce_scatter(comm, m->grads, m->shard, m->stream);
    }
    m->reduce_in_backward = 0;
    global_norm_squared(m->d_scalars + 1, m->norm_scratch, m->grads + m->lo, m->hi - m->lo, m->stream);
    if (m->zero) comm->ops->all_reduce(comm, m->d_scalars + 1, 1, m->stream);
    sqrt_in_place(m->d_scalars + 1, m->stream);
}

/* Waits for the step and returns the gradient norm (watching the other ranks while it waits). */
float mamba_gpu_read_grad_norm(MambaGPU *m) {
    float norm;
    cudaCheck(cudaMemcpyAsync(&norm, m->d_scalars + 1, sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    stream_wait(m);
    if (m->exposed_pending && m->reduced_steps++ > 0) {
        float ms;
        cudaCheck(cudaEventElapsedTime(&ms, m->backward_done, m->grads_reduced));
        m->exposed_ms += ms;
        m->exposed_steps++;
    }
    m->exposed_pending = 0;
    return norm;
}

/* AdamW step h->step (1-based) of the parameters [lo, hi) with the clip scale from the gradient norm on
 * the device; with ZeRO-1 the master weights are then all-gathered and cast to floatX. */
void mamba_gpu_update(MambaGPU *m, const AdamWSettings *h) {
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        size_t begin = std::max(m->lo, m->layout.offsets[t]);
        size_t end = std::min(m->hi, m->layout.offsets[t] + m->layout.sizes[t]);
        if (begin >= end) continue;
        float wd = param_has_weight_decay(t) ? h->weight_decay : 0.0f;
        adamw_update(m->master + begin, m->params + begin, m->grads + begin, m->adam_m + (begin - m->lo),
                     m->adam_v + (begin - m->lo), end - begin, h, wd, m->d_scalars + 1, m->stream);
    }
    if (m->zero && m->comm->world > 1) {
        m->comm->ops->all_gather(m->comm, m->master, m->shard, m->stream);
        cast_to_floatX_kernel_launch(m->params, m->master, m->layout.total, m->stream);
    }
}

void mamba_gpu_get_params(MambaGPU *m, float *out) {
    cudaCheck(cudaStreamSynchronize(m->stream));
    cudaCheck(cudaMemcpy(out, m->master, m->layout.total * sizeof(float), cudaMemcpyDeviceToHost));
}

/* The moments of [offset, offset + count), inside [lo, hi). */
void mamba_gpu_get_moments(MambaGPU *m, size_t offset, size_t count, float *adam_m, float *adam_v) {
    cudaCheck(cudaStreamSynchronize(m->stream));
    cudaCheck(cudaMemcpy(adam_m, m->adam_m + (offset - m->lo), count * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(adam_v, m->adam_v + (offset - m->lo), count * sizeof(float), cudaMemcpyDeviceToHost));
}

void mamba_gpu_set_moments(MambaGPU *m, size_t offset, size_t count, const float *adam_m, const float *adam_v) {
    cudaCheck(cudaStreamSynchronize(m->stream));
    cudaCheck(cudaMemcpy(m->adam_m + (offset - m->lo), adam_m, count * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(m->adam_v + (offset - m->lo), adam_v, count * sizeof(float), cudaMemcpyHostToDevice));
}

void mamba_gpu_free(MambaGPU *m) {
    if (m->h_batch) { /* the activations were allocated */
        ActivationBuffer list[MAX_ACTIVATION_BUFFERS];
        int count = activation_buffers(&m->config, m->B, m->T, m->recompute, m->classifier_rows, &m->acts, &m->d_batch,
                                       list);
        for (int i = 0; i < count; i++) cudaCheck(cudaFree(*list[i].ptr));
    }
    void *device_buffers[] = {m->grads, m->adam_m, m->adam_v, m->d_scalars, m->norm_scratch};
    for (size_t i = 0; i < sizeof(device_buffers) / sizeof(device_buffers[0]); i++) cudaCheck(cudaFree(device_buffers[i]));
    if ((void *)m->params != (void *)m->master) cudaCheck(cudaFree(m->params));
    cudaCheck(cudaFree(m->master));
    if (m->h_batch) {
        cudaCheck(cudaFreeHost(m->h_batch));
        cudaCheck(cudaEventDestroy(m->batch_copied));
    }
    free(m->h_count);
    if (m->bucket_ready) {
        for (int l = 0; l <= m->config.n_layer; l++) cudaCheck(cudaEventDestroy(m->bucket_ready[l]));
        free(m->bucket_ready);
        cudaCheck(cudaEventDestroy(m->grads_reduced));
        cudaCheck(cudaEventDestroy(m->backward_done));
        cudaCheck(cudaStreamDestroy(m->comm_stream));
    }
    memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------------------------------------------
 * the training program
 */
#ifndef TESTING

/* The GPU model behind the training loop's TrainCompute (train/train_loop.h). */
typedef struct {
    MambaGPU model;
    int B, T;              /* of the training micro-batches: what the activations are sized for */
    float *host_losses;    /* [B * T] */
    unsigned char *hits;   /* [B * T] on the device, tasks only, allocated at their first use */
    GPUCarry carry;        /* evaluation with -ec 1, allocated at its first use */
    GPUStreamCarry *streams; /* -cs 1: the training streams' states (train/gpu_carry.cuh), NULL without */
    int micro;             /* the step's micro-batches trained so far */
    GPUFeeder feeder;      /* samples */
    int first_update_done;
} GPUCompute;

static void gpu_zero_grad(void *self) {
    GPUCompute *c = (GPUCompute *)self;
    mamba_gpu_zero_grad(&c->model);
    c->micro = 0;
}

/* with -cs 1, micro-batch m's rows continue streams m*B .. m*B + B-1 (train_ssd.c does the same) */
static void gpu_train_micro(void *self, const int *inputs, const int *targets, float loss_scale, int last) {
    GPUCompute *c = (GPUCompute *)self;
    MambaGPU *m = &c->model;
    m->B = c->B;
    m->T = c->T;
    mamba_gpu_set_batch(m, inputs, targets);
    if (c->streams) {
        GPUCarry in, out;
        gpu_stream_carry_micro(c->streams, &m->config, c->micro, &in, &out);
        mamba_gpu_forward_carry(m, loss_scale, &in, &out);
    } else {
        mamba_gpu_forward(m, loss_scale, NULL);
    }
    m->reduce_in_backward = last && m->comm->world > 1 && !m->zero;
    mamba_gpu_backward(m);
    c->micro++;
    if (c->streams && last) gpu_stream_carry_swap(c->streams);
}

static double gpu_micro_loss(void *self) {
    GPUCompute *c = (GPUCompute *)self;
    return mamba_gpu_mean_loss(&c->model);
}

static float gpu_grad_norm(void *self) {
    GPUCompute *c = (GPUCompute *)self;
    mamba_gpu_grad_norm(&c->model);
    return mamba_gpu_read_grad_norm(&c->model);
}

/* AdamW clips with the norm that mamba_gpu_grad_norm left on the device: the one grad_norm returned */
static void gpu_update(void *self, const AdamWSettings *h, float grad_norm) {
    GPUCompute *c = (GPUCompute *)self;
    mamba_gpu_update(&c->model, h);
    if (!c->first_update_done) {
        c->first_update_done = 1;
        size_t free_bytes, total_bytes;
        cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
        printf("device memory in use after the first step: %.2f GiB of %.2f GiB\n",
               (total_bytes - free_bytes) / 1073741824.0, total_bytes / 1073741824.0);
    }
}

/* The summed losses of the first B x T positions of the last forward, in double and in order. */
static double sum_host_losses(GPUCompute *c, int n) {
    MambaGPU *m = &c->model;
    cudaCheck(cudaMemcpyAsync(c->host_losses, m->acts.losses, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost,
                              m->stream));
    stream_wait(m);
    double total = 0.0;
    for (int i = 0; i < n; i++) total += c->host_losses[i];
    return total;
}

static double gpu_eval_loss_sum(void *self, const int *inputs, const int *targets, int B, int T) {
    GPUCompute *c = (GPUCompute *)self;
    MambaGPU *m = &c->model;
    m->B = B;
    m->T = T;
    mamba_gpu_set_batch(m, inputs, targets);
    mamba_gpu_forward(m, 0.0f, NULL);
    return sum_host_losses(c, B * T);
}

static double gpu_eval_loss_sum_carry(void *self, const int *inputs, const int *targets, int T, int reset) {
    GPUCompute *c = (GPUCompute *)self;
    MambaGPU *m = &c->model;
    if (c->carry.conv == NULL) {
        gpu_carry_alloc(&c->carry, &m->config, 1);
        reset = 1;
    }
    if (reset) gpu_carry_zero(&c->carry, m->config.n_layer, m->stream);
    m->B = 1;
    m->T = T;
    mamba_gpu_set_batch(m, inputs, targets);
    mamba_gpu_forward(m, 0.0f, &c->carry);
    return sum_host_losses(c, T);
}

static void gpu_eval_token_scores(void *self, const int *inputs, const int *targets, int B, int T, double *losses,
                                  unsigned char *hits) {
    GPUCompute *c = (GPUCompute *)self;
    MambaGPU *m = &c->model;
    if (c->hits == NULL) cudaCheck(cudaMalloc(&c->hits, (size_t)c->B * c->T));
    m->B = B;
    m->T = T;
    mamba_gpu_set_batch(m, inputs, targets);
    m->greedy_hits = c->hits;
    mamba_gpu_forward(m, 0.0f, NULL);
    m->greedy_hits = NULL;
    size_t n = (size_t)B * T;
    cudaCheck(cudaMemcpyAsync(hits, c->hits, n, cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaMemcpyAsync(c->host_losses, m->acts.losses, n * sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    stream_wait(m);
    for (size_t i = 0; i < n; i++) losses[i] = c->host_losses[i];
}

static void gpu_get_params(void *self, float *out) { mamba_gpu_get_params(&((GPUCompute *)self)->model, out); }

static void gpu_get_moments(void *self, size_t offset, size_t count, float *m, float *v) {
    mamba_gpu_get_moments(&((GPUCompute *)self)->model, offset, count, m, v);
}

static void gpu_set_moments(void *self, size_t offset, size_t count, const float *m, const float *v) {
    mamba_gpu_set_moments(&((GPUCompute *)self)->model, offset, count, m, v);
}

static void gpu_restart_carry(void *self) {
    GPUCompute *c = (GPUCompute *)self;
    gpu_carry_zero(&c->streams->in, c->model.config.n_layer, c->model.stream);
}

static void gpu_get_carry(void *self, float *out) {
    GPUCompute *c = (GPUCompute *)self;
    gpu_stream_carry_get(c->streams, &c->model.config, out, c->model.stream);
}

static void gpu_set_carry(void *self, const float *in) {
    GPUCompute *c = (GPUCompute *)self;
    gpu_stream_carry_set(c->streams, &c->model.config, in, c->model.stream);
}

/* Before anything else touches CUDA: a machine without a usable GPU gets told what to run instead of a
 * CUDA driver message. */
static void require_gpu(void) {
    int devices = 0;
    cudaError_t err = cudaGetDeviceCount(&devices);
    if (err == cudaSuccess && devices > 0) return;
    fprintf(stderr, "error: train_ssdcu needs an NVIDIA GPU and its driver, and CUDA finds none (%s). On a machine "
                    "without a GPU, train with ./train_ssd (make train_ssd): it takes the same flags, data and "
                    "checkpoints\n", err == cudaSuccess ? "0 devices" : cudaGetErrorString(err));
    exit(1);
}

/* Through NCCL when a launcher started this process (torchrun, srun, mpirun), else on its own. */
static void comm_init(Comm *comm, const TrainArgs *args) {
    LaunchInfo info;
    launch_info_from_env_or_exit(&info);
    if (!strcmp(info.launcher, "none")) {
        comm_single_init(comm);
        return;
    }
#ifdef USE_NCCL
    int devices = 0;
    cudaCheck(cudaGetDeviceCount(&devices));
    if (info.local_rank >= devices) {
        fprintf(stderr, "error: rank %d has local rank %d but this node has %d GPU%s\n", info.rank, info.local_rank,
                devices, devices == 1 ? "" : "s");
        exit(1);
    }
    cudaCheck(cudaSetDevice(info.local_rank));
    if (args->rendezvous_dir == NULL && (info.master_addr[0] == '\0' || info.master_port == 0)) {
        fprintf(stderr, "error: rank %d of %d (%s) has no MASTER_ADDR/MASTER_PORT to meet at: set them, "
                        "or give a shared directory with -rd\n", info.rank, info.world_size, info.launcher);
        exit(1);
    }
    comm_nccl_init(comm, &info, args->rendezvous_dir, args->rank_timeout, args->collective_timeout);
#else
    if (info.world_size > 1) {
        fprintf(stderr, "error: this train_ssdcu was built without NCCL (NO_NCCL or no NCCL found), so it runs "
                        "on one GPU only; rebuild with NCCL_HOME set to run %d ranks\n", info.world_size);
        exit(1);
    }
    comm_single_init(comm);
#endif
}

/* With several ranks: the time of one all-reduce of the whole gradient buffer on its own (CUDA events,
 * median of 5), and the mean time the steps waited for the buckets after the backward's last kernel:
 * the part of the all-reduce that the backward did not hide. */
static void time_gradient_all_reduce(MambaGPU *m) {
    if (m->comm->world == 1) return;
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    float ms[5];
    for (int i = 0; i < 5; i++) {
        cudaCheck(cudaEventRecord(start, m->stream));
        m->comm->ops->all_reduce(m->comm, m->grads, m->layout.total, m->stream);
        cudaCheck(cudaEventRecord(stop, m->stream));
        stream_wait(m);
        cudaCheck(cudaEventElapsedTime(&ms[i], start, stop));
    }
    std::sort(ms, ms + 5);
    printf("all-reduce of the %zu gradients alone: %.3f ms (median of 5)\n", m->layout.total, ms[2]);
    if (m->exposed_steps > 0)
        printf("all-reduce exposed after the backward: %.3f ms per step (mean of %d steps), %.0f%% of it hidden\n",
               m->exposed_ms / m->exposed_steps, m->exposed_steps,
               100.0 * std::max(0.0, 1.0 - m->exposed_ms / m->exposed_steps / ms[2]));
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* step lines appear as they happen, also in a piped log */
    stop_signals_install();          /* SIGINT, SIGTERM, SIGUSR1: stop after a step (train/stop.h) */
    TrainArgs args;
    args_defaults(&args);
    args_parse(&args, argc, argv, "train_ssdcu");
    require_gpu();
    Comm comm;
    comm_init(&comm, &args);

    TrainRun run;
    train_run_init(&run, &args, &comm);
    int device;
    cudaDeviceProp prop;
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaGetDeviceProperties(&prop, device));
    printf("device: %s, %d SMs, %.1f GiB, compute %d.%d, precision %s\n", prop.name, prop.multiProcessorCount,
           prop.totalGlobalMem / 1073741824.0, prop.major, prop.minor, PRECISION_NAME);
    cudaStream_t stream;
    cudaCheck(cudaStreamCreate(&stream));
    matmul_init();

    GPUCompute c;
    memset(&c, 0, sizeof(c));
    c.B = args.B;
    c.T = args.T;
    size_t free_bytes, total_bytes;
    cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
    int carry_streams = args.carry_state && run.train ? run.grad_accum * args.B : 0;
    double need = mamba_gpu_memory_bytes(&run.config, args.B, args.T, comm.world, args.zero, args.recompute,
                                         carry_streams);
    if (need > (double)free_bytes) {
        fprintf(stderr, "error: the model and activations (B %d, T %d, -r %d) need %.3g GiB of device memory, %.3g GiB "
                        "of %.3g GiB are free%s\n", args.B, args.T, args.recompute, need / 1073741824.0,
                free_bytes / 1073741824.0, total_bytes / 1073741824.0,
                args.recompute < RECOMPUTE_SCAN ? "; -r 1 or -r 2 (activation recomputation) needs less" : "");
        exit(1);
    }
    mamba_gpu_build_ranks(&c.model, &run.config, run.params, stream, &comm, args.zero);
    c.model.recompute = args.recompute;
    if (run.doc_eot >= 0) mamba_gpu_set_document_end(&c.model, run.doc_eot);
    size_t act_bytes = mamba_gpu_alloc_activations(&c.model, args.B, args.T);
    printf("activations %.3f GiB (%zu bytes, -r %d), estimated device memory %.2f GiB\n", act_bytes / 1073741824.0,
           act_bytes, args.recompute, need / 1073741824.0);
    double moments_gib = 2.0 * sizeof(float) * (c.model.hi - c.model.lo) / 1073741824.0;
    double all_moments_gib = 2.0 * sizeof(float) * c.model.layout.total / 1073741824.0;
    if (args.zero)
        printf("ZeRO-1: AdamW moments %.2f GiB on this GPU instead of %.2f GiB (saves %.2f GiB)\n", moments_gib,
               all_moments_gib, all_moments_gib - moments_gib);
    c.host_losses = (float *)mallocCheck((size_t)args.B * args.T * sizeof(float));
    GPUStreamCarry streams;
    if (carry_streams) {
        c.streams = &streams;
        gpu_stream_carry_alloc(&streams, &run.config, carry_streams, args.B);
        gpu_carry_zero(&streams.in, run.config.n_layer, stream);
    }

    EvalForward eval = {&c, gpu_eval_loss_sum, gpu_eval_loss_sum_carry, gpu_eval_token_scores};
    TrainCompute compute = {&c, c.model.lo, c.model.hi - c.model.lo, gpu_zero_grad, gpu_train_micro, gpu_micro_loss,
                            gpu_grad_norm, gpu_update, eval, gpu_get_params, gpu_get_moments, gpu_set_moments,
                            gpu_feeder_init(&c.feeder, &c.model, args.T),
                            carry_streams ? gpu_stream_carry_floats(&run.config) * carry_streams : 0, gpu_restart_carry,
                            gpu_get_carry, gpu_set_carry};
    train_loop_restore(&run, &compute);
    train_run_release_params(&run);
    int status = train_loop_run(&run, &compute);
    time_gradient_all_reduce(&c.model);

    free(c.host_losses);
    if (c.carry.conv) gpu_carry_free(&c.carry);
    if (c.streams) gpu_stream_carry_free(c.streams);
    gpu_feeder_free(&c.feeder);
    if (c.hits) cudaCheck(cudaFree(c.hits));
    train_run_free(&run);
    mamba_gpu_free(&c.model);
    matmul_free();
    cudaCheck(cudaStreamDestroy(stream));
    comm.ops->free(&comm);
    return status;
}
#endif
