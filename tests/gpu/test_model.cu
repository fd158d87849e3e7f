/*
 * The whole CUDA model against the double-precision CPU reference (model/cpu_model.c) on the same
 * parameters and batch: the loss, every gradient tensor, the gradient norm, and the loss after one
 * AdamW step with clipping. Small shapes with odd T, several chunks, ngroups > 1, scalar and
 * diagonal A, and shapes the scan runs through its adapter (kernels/ssd_scan_adapt.cuh): headdim 40 with
 * d_state 48, headdim 200 (two sub-heads) with d_state 100; headdim 40 also in the generation and the
 * document-boundary and carried-state cases. The vector parameters that init sets to 1 are perturbed so
 * that a mix-up shows.
 * Tolerances (max |error| over max |reference| per tensor): FP32 build 1e-4 everywhere. bf16:
 * 1e-2 for the loss, 6e-2 for the gradients: every activation is rounded to bf16 (relative
 * 2^-9 = 2e-3) some ten times per layer on the way forward and back, and the gradients of the
 * small per-head tensors (dt_bias, A_log, D) are sums of many such rounded terms. D's gradient, a head's
 * sum of dy . x over B T headdim terms of both signs, loses precision in proportion to the head's width:
 * the FP32 build measured its error at 1.6e-7 (headdim 16), 5.6e-7 (40) and 2.0e-6 / 7.2e-6 (200, scalar
 * / diagonal A) against ~5e-7 for every other tensor, and bf16 gave 7.2e-2 at headdim 200 (diagonal).
 * So D's tolerance is the gradients' times max(1, headdim / 64).
 *
 * One case runs the lm_head and loss in slices of 32 rows (the last one partial) instead of all rows at once.
 *
 * Activation recomputation (-r 1, -r 2): two accumulated micro-batches, then a clipped AdamW step and a
 * third micro-batch, must give exactly the losses, gradients and norm of the run that keeps every
 * activation (-r 0): the backward recomputes with the same kernels on the same inputs.
 *
 * Generation (GPUFeeder): the logits after a prompt read in pieces and after each token fed one at a time
 * through the carried state, against the CPU's prefill and recurrence (mamba_step). Tolerance as the
 * gradients' (max |error| over max |reference| of each position's logits): FP32 1e-4; bf16 6e-2, the
 * forward's roundings plus the logits themselves in bf16.
 *
 * Document boundaries (-db 1) and a carried state (-cs 1): two consecutive windows of B rows, with end-of-text
 * inputs at position 0, at a chunk's last step (the next document starts at a chunk edge), inside a chunk, at
 * T-2 (the carried conv inputs then span two documents) and at T-1 (the row hands on a zero state), against
 * the CPU's mamba_forward / mamba_forward_carry and mamba_backward per window: the loss and every gradient
 * (the tolerances above), with -r 0 and -r 2 (whose losses and gradients must equal -r 0's exactly); with a
 * carried state also the states after the second window, read in the checkpoint's order (GPUStreamCarry, as
 * train_ssd.c's cpu_get_carry writes them; tolerance as the gradients'), and an evaluation forward that reads
 * and replaces one buffer (-ec 1) over the same windows (its mean losses: the loss tolerance).
 *
 * Then the bucketed all-reduce of the backward (reduce_bucket in train_ssd.cu) against a world of two
 * identical ranks: every gradient, and the norm, must be exactly twice those of one rank, which shows
 * a bucket that misses a slice, reduces one twice, or is read before it is done.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "train_ssd.cu"
#include "tests/gpu/gpu_test.h"

extern "C" {
#include "model/cpu_model.h"
#include "model/cpu_sample.h"
}

#if defined(ENABLE_FP32)
#define LOSS_TOL 1e-4
#define GRAD_TOL 1e-4
#else
#define LOSS_TOL 1e-2
#define GRAD_TOL 6e-2
#endif

static void perturb(float *x, size_t n, double amount) {
    for (size_t i = 0; i < n; i++) x[i] += (float)(amount * (2.0 * rng_uniform(&test_rng) - 1.0));
}

static void check_scalar(const char *name, double got, double want, double tol) {
    double err = fabs(got - want) / fmax(fabs(want), 1e-30);
    test_report(err <= tol && !isnan(got), name, "gpu %.8f cpu %.8f rel err %.3e (tol %.0e)", got, want, err, tol);
}

/* The config of json and fresh params from seed, with the vector parameters that init sets to 1
 * perturbed; NULL (reported) on a bad config. */
static float *case_params(const char *label, const char *json, int seed, ModelConfig *config, ParamLayout *layout) {
    char err[256];
    if (config_parse(config, json, label, err, sizeof(err))) {
        test_report(0, label, "config: %s", err);
        return NULL;
    }
    param_layout_init(layout, config);
    float *params = (float *)mallocCheck(layout->total * sizeof(float));
    params_init(config, params, seed);
    int perturbed[] = {P_NORM_W, P_GNORM_W, P_NORM_F, P_D, P_DT_BIAS};
    for (int i = 0; i < 5; i++) perturb(params + layout->offsets[perturbed[i]], layout->sizes[perturbed[i]], 0.3);
    return params;
}

/* every gradient tensor of got against want (flat, layout), each named "<prefix> grad <tensor>" */
static void check_grad_tensors(const char *prefix, const double *got, const double *want, const ParamLayout *layout,
                               const ModelConfig *config) {
    char name[200];
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        snprintf(name, sizeof(name), "%s grad %s", prefix, PARAM_NAMES[t]);
        double e = test_rel_error(got + layout->offsets[t], want + layout->offsets[t], (long)layout->sizes[t]);
        double tol = t == P_D ? GRAD_TOL * fmax(1.0, config->headdim / 64.0) : GRAD_TOL;
        test_report(e <= tol, name, "rel err %.3e (tol %.2g, %zu values)", e, tol, layout->sizes[t]);
    }
}

/* mask_every > 0: every mask_every-th target is -1 (a loss mask's 0), which neither loss counts;
 * classifier_rows > 0: the rows per slice of the lm_head and loss (else the trainer's) */
static void run_case(const char *label, const char *json, int B, int T, int mask_every, int classifier_rows,
                     cudaStream_t stream) {
    char name[128];
    ModelConfig config;
    ParamLayout layout;
    float *params = case_params(label, json, 7, &config, &layout);
    if (params == NULL) return;
    int N = B * T;
    int *inputs = (int *)mallocCheck(N * sizeof(int)), *targets = (int *)mallocCheck(N * sizeof(int));
    for (int i = 0; i < N; i++) {
        inputs[i] = (int)(rng_next(&test_rng) % (uint64_t)config.vocab_size);
        targets[i] = (int)(rng_next(&test_rng) % (uint64_t)config.vocab_size);
        if (mask_every > 0 && i % mask_every == 1) targets[i] = -1;
    }

    Mamba cpu;
    mamba_build(&cpu, &config, params);
    mamba_forward(&cpu, inputs, targets, B, T);
    double cpu_loss = cpu.mean_loss;
    mamba_zero_grad(&cpu);
    mamba_backward(&cpu, 1.0);
    double cpu_norm = mamba_grad_norm(&cpu);

    MambaGPU gpu;
    mamba_gpu_build(&gpu, &config, params, stream);
    if (classifier_rows > 0) gpu.classifier_rows = classifier_rows;
    mamba_gpu_alloc_activations(&gpu, B, T);
    mamba_gpu_set_batch(&gpu, inputs, targets);
    mamba_gpu_zero_grad(&gpu);
    mamba_gpu_forward(&gpu, 1.0f / cpu.counted_targets, NULL);
    mamba_gpu_backward(&gpu);
    double gpu_loss = mamba_gpu_mean_loss(&gpu);
    snprintf(name, sizeof(name), "%s loss", label);
    check_scalar(name, gpu_loss, cpu_loss, LOSS_TOL);

    double *grads = download_float(gpu.grads, layout.total);
    check_grad_tensors(label, grads, cpu.grads, &layout, &config);
    free(grads);

    mamba_gpu_grad_norm(&gpu);
    double gpu_norm = mamba_gpu_read_grad_norm(&gpu);
    snprintf(name, sizeof(name), "%s grad norm", label);
    check_scalar(name, gpu_norm, cpu_norm, GRAD_TOL);

    /* one AdamW step, clipped (clip below the norm), then the loss on the same batch */
    float clip = (float)(0.5 * cpu_norm), lr = 1e-2f, wd = 0.1f;
    AdamWSettings h = {lr, 0.9f, 0.95f, 1e-8f, wd, clip, 1};
    mamba_gpu_update(&gpu, &h);
    mamba_update(&cpu, lr, 0.9, 0.95, 1e-8, wd, cpu_norm > clip ? clip / cpu_norm : 1.0, 1);
    mamba_forward(&cpu, inputs, targets, B, T);
    mamba_gpu_set_batch(&gpu, inputs, targets);
    mamba_gpu_forward(&gpu, 0.0f, NULL);
    snprintf(name, sizeof(name), "%s loss after one clipped AdamW step", label);
    check_scalar(name, mamba_gpu_mean_loss(&gpu), cpu.mean_loss, LOSS_TOL);
    snprintf(name, sizeof(name), "%s loss decreased", label);
    test_report(cpu.mean_loss < cpu_loss, name, "cpu %.6f -> %.6f", cpu_loss, (double)cpu.mean_loss);

    mamba_gpu_free(&gpu);
    mamba_free(&cpu);
    free(params);
    free(inputs);
    free(targets);
}

/* Levels 0, 1, 2 of activation recomputation on the same params and batches: micro-batches 1 and 2
 * accumulated, their gradient norm, a clipped AdamW step, then micro-batch 3; the lm_head in slices of
 * 24 rows. Every loss, gradient and norm of levels 1 and 2 must equal level 0's exactly. */
static void run_recompute_case(const char *label, const char *json, int B, int T, cudaStream_t stream) {
    char name[160];
    ModelConfig config;
    ParamLayout layout;
    float *params = case_params(label, json, 13, &config, &layout);
    if (params == NULL) return;
    int N = B * T;
    int *tokens = (int *)mallocCheck(6 * N * sizeof(int));
    for (int i = 0; i < 6 * N; i++) tokens[i] = (int)(rng_next(&test_rng) % (uint64_t)config.vocab_size);
    double losses[3][3], norms[3], *grads[3], *updated[3];
    for (int r = 0; r <= RECOMPUTE_SCAN; r++) {
        MambaGPU m;
        mamba_gpu_build(&m, &config, params, stream);
        m.recompute = r;
        m.classifier_rows = 24;
        mamba_gpu_alloc_activations(&m, B, T);
        mamba_gpu_zero_grad(&m);
        for (int micro = 0; micro < 2; micro++) {
            mamba_gpu_set_batch(&m, tokens + 2 * micro * N, tokens + (2 * micro + 1) * N);
            mamba_gpu_forward(&m, 0.5f / N, NULL);
            mamba_gpu_backward(&m);
            losses[r][micro] = mamba_gpu_mean_loss(&m);
        }
        grads[r] = download_float(m.grads, layout.total);
        mamba_gpu_grad_norm(&m);
        norms[r] = mamba_gpu_read_grad_norm(&m);
        AdamWSettings h = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, (float)(0.5 * norms[r]), 1};
        mamba_gpu_update(&m, &h);
        updated[r] = download_float(m.master, layout.total);
        mamba_gpu_set_batch(&m, tokens + 4 * N, tokens + 5 * N);
        mamba_gpu_zero_grad(&m);
        mamba_gpu_forward(&m, 1.0f / N, NULL);
        mamba_gpu_backward(&m);
        losses[r][2] = mamba_gpu_mean_loss(&m);
        mamba_gpu_free(&m);
    }
    for (int r = 1; r <= RECOMPUTE_SCAN; r++) {
        int same_losses = 1;
        for (int i = 0; i < 3; i++) same_losses &= losses[r][i] == losses[0][i] && isfinite(losses[0][i]);
        snprintf(name, sizeof(name), "%s -r %d losses", label, r);
        test_report(same_losses, name, "-r %d %.9g %.9g %.9g, -r 0 %.9g %.9g %.9g (want identical)", r, losses[r][0],
                    losses[r][1], losses[r][2], losses[0][0], losses[0][1], losses[0][2]);
        for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
            size_t wrong = 0, n = layout.sizes[t], o = layout.offsets[t];
            for (size_t i = 0; i < n; i++) wrong += !(grads[r][o + i] == grads[0][o + i]);
            snprintf(name, sizeof(name), "%s -r %d grad %s", label, r, PARAM_NAMES[t]);
            test_report(wrong == 0, name, "%zu of %zu values differ from -r 0's", wrong, n);
        }
        snprintf(name, sizeof(name), "%s -r %d grad norm", label, r);
        test_report(norms[0] > 0 && norms[r] == norms[0], name, "-r %d %.9g, -r 0 %.9g (want identical)", r, norms[r],
                    norms[0]);
        size_t wrong = 0;
        for (size_t i = 0; i < layout.total; i++) wrong += !(updated[r][i] == updated[0][i]);
        snprintf(name, sizeof(name), "%s -r %d weights after AdamW", label, r);
        test_report(wrong == 0, name, "%zu of %zu values differ from -r 0's", wrong, layout.total);
    }
    for (int r = 0; r <= RECOMPUTE_SCAN; r++) {
        free(grads[r]);
        free(updated[r]);
    }
    free(params);
    free(tokens);
}

static void run_generation_case(const char *label, const char *json, int prompt_len, int steps, int max_T,
                                cudaStream_t stream) {
    char name[160];
    ModelConfig config;
    ParamLayout layout;
    float *params = case_params(label, json, 11, &config, &layout);
    if (params == NULL) return;
    int n = prompt_len + steps;
    int *tokens = (int *)mallocCheck(n * sizeof(int));
    for (int i = 0; i < n; i++) tokens[i] = (int)(rng_next(&test_rng) % (uint64_t)config.vocab_size);

    Mamba cpu;
    mamba_build(&cpu, &config, params);
    CPUFeeder cpu_feeder;
    TokenFeeder want = sample_cpu_feeder_init(&cpu_feeder, &cpu);
    MambaGPU gpu;
    mamba_gpu_build(&gpu, &config, params, stream);
    mamba_gpu_alloc_activations(&gpu, 1, max_T);
    GPUFeeder gpu_feeder;
    TokenFeeder got = gpu_feeder_init(&gpu_feeder, &gpu, max_T);
    double *want_logits = (double *)mallocCheck(config.padded_vocab * sizeof(double));
    double *got_logits = (double *)mallocCheck(config.padded_vocab * sizeof(double));
    double worst = 0.0;
    for (int round = 0; round < 2; round++) { /* the second from a reset state: nothing of the first remains */
        want.feed(want.self, tokens, prompt_len, 1, want_logits);
        got.feed(got.self, tokens, prompt_len, 1, got_logits);
        worst = fmax(worst, test_rel_error(got_logits, want_logits, config.vocab_size));
        for (int t = prompt_len; t < n; t++) {
            want.feed(want.self, tokens + t, 1, 0, want_logits);
            got.feed(got.self, tokens + t, 1, 0, got_logits);
            worst = fmax(worst, test_rel_error(got_logits, want_logits, config.vocab_size)); /* NaN: infinity */
        }
    }
    snprintf(name, sizeof(name), "%s generation: prompt %d in pieces of %d, %d steps", label, prompt_len, max_T, steps);
    test_report(worst <= GRAD_TOL, name, "max rel err of the logits %.3e (tol %.0e)", worst, GRAD_TOL);
    gpu_feeder_free(&gpu_feeder);
    mamba_gpu_free(&gpu);
    sample_cpu_feeder_free(&cpu_feeder);
    mamba_free(&cpu);
    free(want_logits);
    free(got_logits);
    free(tokens);
    free(params);
}

/* the end-of-text id of the document cases, and where it is put in each row of a window of T steps, chunks of Q */
#define DOC_EOT 3

static void place_documents(int *inputs, int B, int T, int Q, int window) {
    for (int i = 0; i < B * T; i++)
        if (inputs[i] == DOC_EOT) inputs[i] = DOC_EOT + 1;
    for (int b = 0; b < B; b++) {
        int *row = inputs + (size_t)b * T;
        int ends[] = {0, Q - 1, Q + Q / 2, (b + window) % 2 ? T - 2 : T - 1};
        for (int k = 0; k < 4; k++) row[ends[k]] = DOC_EOT;
    }
}

/* Two windows [2][B][T] of random tokens through the CPU reference (double) and the GPU model with -r 0 and
 * -r 2: with documents, end-of-text inputs placed by place_documents; with carry, the second window continues
 * the first's states (training: separate in and out buffers). Compares each window's loss and gradients. */
static void run_documents_case(const char *label, const char *json, int B, int T, int documents, int carry,
                               cudaStream_t stream) {
    char name[200];
    ModelConfig config;
    ParamLayout layout;
    float *params = case_params(label, json, 17, &config, &layout);
    if (params == NULL) return;
    int N = B * T;
    int *inputs = (int *)mallocCheck(2 * N * sizeof(int)), *targets = (int *)mallocCheck(2 * N * sizeof(int));
    for (int i = 0; i < 2 * N; i++) {
        inputs[i] = (int)(rng_next(&test_rng) % (uint64_t)config.vocab_size);
        targets[i] = (int)(rng_next(&test_rng) % (uint64_t)config.vocab_size);
    }
    if (documents)
        for (int w = 0; w < 2; w++) place_documents(inputs + w * N, B, T, config.chunk_size, w);
    int eot = documents ? DOC_EOT : -1;

    Mamba cpu;
    mamba_build(&cpu, &config, params);
    mamba_set_document_end(&cpu, eot);
    MambaInferenceState *states = (MambaInferenceState *)mallocCheck(B * sizeof(MambaInferenceState));
    for (int b = 0; b < B; b++) inference_state_init(&states[b], &config);
    double cpu_loss[2], *cpu_grads[2];
    for (int w = 0; w < 2; w++) {
        if (carry) mamba_forward_carry(&cpu, inputs + w * N, targets + w * N, B, T, states);
        else mamba_forward(&cpu, inputs + w * N, targets + w * N, B, T);
        cpu_loss[w] = cpu.mean_loss;
        mamba_zero_grad(&cpu);
        mamba_backward(&cpu, 1.0);
        cpu_grads[w] = (double *)mallocCheck(layout.total * sizeof(double));
        for (size_t i = 0; i < layout.total; i++) cpu_grads[w][i] = cpu.grads[i];
    }
    size_t per_stream = gpu_stream_carry_floats(&config);
    double *cpu_states = (double *)mallocCheck(B * per_stream * sizeof(double));
    size_t conv_floats = config.n_layer * gpu_carry_conv_row(&config);
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < per_stream; i++)
            cpu_states[b * per_stream + i] = i < conv_floats ? states[b].conv_state[i] : states[b].ssm_state[i - conv_floats];

    const char *what = documents && carry ? "documents, carried" : documents ? "documents" : "carried";
    double *grads0[2] = {NULL, NULL};
    for (int r = 0; r <= RECOMPUTE_SCAN; r += RECOMPUTE_SCAN) {
        MambaGPU m;
        mamba_gpu_build(&m, &config, params, stream);
        m.recompute = r;
        mamba_gpu_alloc_activations(&m, B, T);
        mamba_gpu_set_document_end(&m, eot);
        GPUStreamCarry streams;
        gpu_stream_carry_alloc(&streams, &config, B, B);
        gpu_carry_zero(&streams.in, config.n_layer, stream);
        for (int w = 0; w < 2; w++) {
            mamba_gpu_set_batch(&m, inputs + w * N, targets + w * N);
            mamba_gpu_zero_grad(&m);
            GPUCarry in, out;
            gpu_stream_carry_micro(&streams, &config, 0, &in, &out);
            mamba_gpu_forward_carry(&m, 1.0f / N, carry ? &in : NULL, carry ? &out : NULL);
            mamba_gpu_backward(&m);
            gpu_stream_carry_swap(&streams);
            snprintf(name, sizeof(name), "%s %s -r %d window %d loss", label, what, r, w + 1);
            check_scalar(name, mamba_gpu_mean_loss(&m), cpu_loss[w], LOSS_TOL);
            double *grads = download_float(m.grads, layout.total);
            snprintf(name, sizeof(name), "%s %s -r %d window %d", label, what, r, w + 1);
            check_grad_tensors(name, grads, cpu_grads[w], &layout, &config);
            if (r == 0) {
                grads0[w] = grads;
                continue;
            }
            size_t wrong = 0;
            for (size_t i = 0; i < layout.total; i++) wrong += !(grads[i] == grads0[w][i]);
            snprintf(name, sizeof(name), "%s %s -r %d window %d grads equal -r 0's", label, what, r, w + 1);
            test_report(wrong == 0, name, "%zu of %zu values differ", wrong, layout.total);
            free(grads);
        }
        if (carry) {
            float *got = (float *)mallocCheck(B * per_stream * sizeof(float));
            gpu_stream_carry_get(&streams, &config, got, stream);
            double *got_d = (double *)mallocCheck(B * per_stream * sizeof(double));
            for (size_t i = 0; i < B * per_stream; i++) got_d[i] = got[i];
            snprintf(name, sizeof(name), "%s %s -r %d states after window 2 (checkpoint order)", label, what, r);
            check_close(name, got_d, cpu_states, B * per_stream, GRAD_TOL);
            free(got);
        }
        if (carry && r == 0) { /* evaluation (-ec 1): one buffer read and replaced */
            GPUCarry eval;
            gpu_carry_alloc(&eval, &config, B);
            gpu_carry_zero(&eval, config.n_layer, stream);
            for (int w = 0; w < 2; w++) {
                mamba_gpu_set_batch(&m, inputs + w * N, targets + w * N);
                mamba_gpu_forward(&m, 0.0f, &eval);
                snprintf(name, sizeof(name), "%s %s evaluation through one buffer, window %d loss", label, what, w + 1);
                check_scalar(name, mamba_gpu_mean_loss(&m), cpu_loss[w], LOSS_TOL);
            }
            gpu_carry_free(&eval);
        }
        gpu_stream_carry_free(&streams);
        mamba_gpu_free(&m);
    }
    for (int w = 0; w < 2; w++) {
        free(cpu_grads[w]);
        free(grads0[w]);
    }
    for (int b = 0; b < B; b++) inference_state_free(&states[b]);
    free(states);
    free(cpu_states);
    mamba_free(&cpu);
    free(params);
    free(inputs);
    free(targets);
}

/* A fake world of two identical ranks: an all-reduce doubles its buffer (the sum of two equal ranks),
 * after spinning some 2 ms on the device, so that a reader that does not wait for it sees the old values.
 * Collectives called inside a group are held until group_end, as NCCL launches them. */
typedef struct {
    float *buf;
    size_t n;
    cudaStream_t stream;
} HeldReduce;

typedef struct {
    int in_group, held_count;
    HeldReduce held[32];
} TwinRanks;

__global__ void spin_kernel(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) {}
}

__global__ void double_kernel(float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) x[i] *= 2.0f;
}

static void twin_launch(float *buf, size_t n, cudaStream_t stream) {
    spin_kernel<<<1, 1, 0, stream>>>(4000000);
    double_kernel<<<256, 256, 0, stream>>>(buf, n);
    cudaCheck(cudaGetLastError());
}

static void twin_sum_doubles(Comm *comm, double *x, int n) {
    for (int i = 0; i < n; i++) x[i] *= 2.0;
}
static void twin_nothing(Comm *comm) {}
static void twin_broadcast(Comm *comm, void *bytes, size_t n) {}
static void twin_all_reduce(Comm *comm, float *buf, size_t n, void *stream) {
    TwinRanks *twin = (TwinRanks *)comm->impl;
    if (!twin->in_group) {
        twin_launch(buf, n, (cudaStream_t)stream);
        return;
    }
    if (twin->held_count == (int)(sizeof(twin->held) / sizeof(twin->held[0]))) {
        fprintf(stderr, "twin ranks: more collectives in one group than the test holds\n");
        exit(1);
    }
    twin->held[twin->held_count++] = {buf, n, (cudaStream_t)stream};
}
static void twin_no_shards(Comm *comm, float *buf, size_t shard, void *stream) {
    fprintf(stderr, "twin ranks: ZeRO-1's collectives are not part of this test\n");
    exit(1);
}
static void twin_group_start(Comm *comm) { ((TwinRanks *)comm->impl)->in_group = 1; }
static void twin_group_end(Comm *comm) {
    TwinRanks *twin = (TwinRanks *)comm->impl;
    for (int i = 0; i < twin->held_count; i++) twin_launch(twin->held[i].buf, twin->held[i].n, twin->held[i].stream);
    twin->held_count = 0;
    twin->in_group = 0;
}
static const CommOps twin_ops = {twin_sum_doubles, twin_broadcast, twin_nothing, twin_all_reduce, twin_no_shards,
                                 twin_no_shards, twin_group_start, twin_group_end, twin_nothing};

/* Two micro-batches accumulated on one rank, and on rank 0 of the twin world with the last backward
 * reducing bucket by bucket: the twin's gradients and norm must be exactly 2x (doubling is exact). */
static void run_bucket_case(const char *label, const char *json, int B, int T, cudaStream_t stream) {
    char err[256], name[160];
    ModelConfig config;
    if (config_parse(&config, json, label, err, sizeof(err))) {
        test_report(0, label, "config: %s", err);
        return;
    }
    ParamLayout layout;
    param_layout_init(&layout, &config);
    float *params = (float *)mallocCheck(layout.total * sizeof(float));
    params_init(&config, params, 11);
    int N = B * T;
    int *tokens = (int *)mallocCheck(4 * N * sizeof(int));
    for (int i = 0; i < 4 * N; i++) tokens[i] = (int)(rng_next(&test_rng) % (uint64_t)config.vocab_size);

    TwinRanks twin_state = {0, 0, {}};
    Comm twin = {0, 2, 0, "twin", &twin_ops, &twin_state};
    MambaGPU one, two;
    double *grads[2], norms[2];
    MambaGPU *models[2] = {&one, &two};
    for (int k = 0; k < 2; k++) {
        MambaGPU *m = models[k];
        mamba_gpu_build_ranks(m, &config, params, stream, k == 0 ? NULL : &twin, 0);
        mamba_gpu_alloc_activations(m, B, T);
        mamba_gpu_zero_grad(m);
        for (int micro = 0; micro < 2; micro++) {
            mamba_gpu_set_batch(m, tokens + 2 * micro * N, tokens + (2 * micro + 1) * N);
            mamba_gpu_forward(m, 0.5f / N, NULL);
            m->reduce_in_backward = k == 1 && micro == 1;
            mamba_gpu_backward(m);
        }
        mamba_gpu_grad_norm(m);
        norms[k] = mamba_gpu_read_grad_norm(m);
        grads[k] = download_float(m->grads, layout.total);
    }
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        size_t wrong = 0, n = layout.sizes[t];
        const double *g1 = grads[0] + layout.offsets[t], *g2 = grads[1] + layout.offsets[t];
        for (size_t i = 0; i < n; i++) wrong += !(g2[i] == 2.0 * g1[i]);
        snprintf(name, sizeof(name), "%s bucketed all-reduce grad %s", label, PARAM_NAMES[t]);
        test_report(wrong == 0, name, "%zu of %zu values differ from twice one rank's", wrong, n);
    }
    snprintf(name, sizeof(name), "%s bucketed all-reduce grad norm", label);
    test_report(norms[0] > 0 && norms[1] == 2.0 * norms[0], name, "two ranks %.9g, one rank %.9g (want exactly 2x)",
                norms[1], norms[0]);
    for (int k = 0; k < 2; k++) {
        mamba_gpu_free(models[k]);
        free(grads[k]);
    }
    free(params);
    free(tokens);
}

int main(void) {
    printf("precision %s\n", PRECISION_NAME);
    cudaStream_t stream;
    cudaCheck(cudaStreamCreate(&stream));
    matmul_init();
    run_case("mamba2 G=2 T=37",
             "{\"name\":\"t1\",\"d_model\":64,\"n_layer\":2,\"vocab_size\":300,\"pad_vocab_multiple\":16,\"d_state\":16,"
             "\"d_conv\":4,\"expand\":2,\"headdim\":16,\"ngroups\":2,\"chunk_size\":16,\"a_structure\":\"scalar\"}",
             2, 37, 0, 0, stream);
    run_case("ssd-mamba G=1 T=64",
             "{\"name\":\"t2\",\"d_model\":48,\"n_layer\":3,\"vocab_size\":257,\"pad_vocab_multiple\":16,\"d_state\":32,"
             "\"d_conv\":4,\"expand\":2,\"headdim\":32,\"ngroups\":1,\"chunk_size\":32,\"a_structure\":\"diagonal\"}",
             3, 64, 0, 0, stream);
    run_case("ssd-mamba G=3 T=50, every 3rd target masked, lm_head in slices of 32 rows",
             "{\"name\":\"t3\",\"d_model\":96,\"n_layer\":2,\"vocab_size\":500,\"pad_vocab_multiple\":64,\"d_state\":16,"
             "\"d_conv\":4,\"expand\":2,\"headdim\":16,\"ngroups\":3,\"chunk_size\":16,\"a_structure\":\"diagonal\"}",
             2, 50, 3, 32, stream);
    run_case("mamba2 G=2 T=37 d_conv=2",
             "{\"name\":\"t4\",\"d_model\":64,\"n_layer\":2,\"vocab_size\":300,\"pad_vocab_multiple\":16,\"d_state\":16,"
             "\"d_conv\":2,\"expand\":2,\"headdim\":16,\"ngroups\":2,\"chunk_size\":16,\"a_structure\":\"scalar\"}",
             2, 37, 0, 0, stream);
    run_case("mamba2 headdim 40 d_state 48 G=2 T=37",
             "{\"name\":\"t5\",\"d_model\":80,\"n_layer\":2,\"vocab_size\":300,\"pad_vocab_multiple\":16,\"d_state\":48,"
             "\"d_conv\":4,\"expand\":2,\"headdim\":40,\"ngroups\":2,\"chunk_size\":16,\"a_structure\":\"scalar\"}",
             2, 37, 0, 0, stream);
    run_case("ssd-mamba headdim 40 d_state 48 G=1 T=64",
             "{\"name\":\"t6\",\"d_model\":80,\"n_layer\":2,\"vocab_size\":257,\"pad_vocab_multiple\":16,\"d_state\":48,"
             "\"d_conv\":4,\"expand\":2,\"headdim\":40,\"ngroups\":1,\"chunk_size\":32,\"a_structure\":\"diagonal\"}",
             3, 64, 0, 0, stream);
    run_case("ssd-mamba headdim 200 d_state 100 G=2 T=50",
             "{\"name\":\"t7\",\"d_model\":100,\"n_layer\":2,\"vocab_size\":300,\"pad_vocab_multiple\":16,\"d_state\":100,"
             "\"d_conv\":4,\"expand\":4,\"headdim\":200,\"ngroups\":2,\"chunk_size\":32,\"a_structure\":\"diagonal\"}",
             2, 50, 0, 0, stream);
    run_case("mamba2 headdim 200 d_state 100 G=1 T=50",
             "{\"name\":\"t8\",\"d_model\":100,\"n_layer\":2,\"vocab_size\":300,\"pad_vocab_multiple\":16,\"d_state\":100,"
             "\"d_conv\":4,\"expand\":4,\"headdim\":200,\"ngroups\":1,\"chunk_size\":32,\"a_structure\":\"scalar\"}",
             2, 50, 0, 0, stream);
    run_recompute_case("mamba2 G=2 T=37",
                       "{\"name\":\"r1\",\"d_model\":64,\"n_layer\":3,\"vocab_size\":300,\"pad_vocab_multiple\":16,"
                       "\"d_state\":16,\"d_conv\":4,\"expand\":2,\"headdim\":16,\"ngroups\":2,\"chunk_size\":16,"
                       "\"a_structure\":\"scalar\"}",
                       2, 37, stream);
    run_recompute_case("ssd-mamba G=1 T=64",
                       "{\"name\":\"r2\",\"d_model\":48,\"n_layer\":3,\"vocab_size\":257,\"pad_vocab_multiple\":16,"
                       "\"d_state\":32,\"d_conv\":4,\"expand\":2,\"headdim\":32,\"ngroups\":1,\"chunk_size\":32,"
                       "\"a_structure\":\"diagonal\"}",
                       3, 64, stream);
    run_generation_case("mamba2 G=2",
                        "{\"name\":\"g1\",\"d_model\":64,\"n_layer\":2,\"vocab_size\":300,\"pad_vocab_multiple\":16,"
                        "\"d_state\":16,\"d_conv\":4,\"expand\":2,\"headdim\":16,\"ngroups\":2,\"chunk_size\":16,"
                        "\"a_structure\":\"scalar\"}",
                        37, 20, 16, stream);
    run_generation_case("ssd-mamba G=1",
                        "{\"name\":\"g2\",\"d_model\":48,\"n_layer\":3,\"vocab_size\":257,\"pad_vocab_multiple\":16,"
                        "\"d_state\":32,\"d_conv\":4,\"expand\":2,\"headdim\":32,\"ngroups\":1,\"chunk_size\":32,"
                        "\"a_structure\":\"diagonal\"}",
                        2, 40, 64, stream);
    run_generation_case("mamba2 headdim 40 d_state 48 G=2",
                        "{\"name\":\"g3\",\"d_model\":80,\"n_layer\":2,\"vocab_size\":300,\"pad_vocab_multiple\":16,"
                        "\"d_state\":48,\"d_conv\":4,\"expand\":2,\"headdim\":40,\"ngroups\":2,\"chunk_size\":16,"
                        "\"a_structure\":\"scalar\"}",
                        37, 20, 16, stream);
    const char *doc_configs[2][2] = {
        {"mamba2 G=2 T=37",
         "{\"name\":\"d1\",\"d_model\":64,\"n_layer\":2,\"vocab_size\":300,\"pad_vocab_multiple\":16,\"d_state\":16,"
         "\"d_conv\":4,\"expand\":2,\"headdim\":16,\"ngroups\":2,\"chunk_size\":16,\"a_structure\":\"scalar\"}"},
        {"ssd-mamba G=1 T=64",
         "{\"name\":\"d2\",\"d_model\":48,\"n_layer\":3,\"vocab_size\":257,\"pad_vocab_multiple\":16,\"d_state\":32,"
         "\"d_conv\":4,\"expand\":2,\"headdim\":32,\"ngroups\":1,\"chunk_size\":32,\"a_structure\":\"diagonal\"}"}};
    const int doc_T[2] = {37, 64};
    for (int k = 0; k < 2; k++) {
        run_documents_case(doc_configs[k][0], doc_configs[k][1], 2, doc_T[k], 1, 0, stream);
        run_documents_case(doc_configs[k][0], doc_configs[k][1], 2, doc_T[k], 0, 1, stream);
        run_documents_case(doc_configs[k][0], doc_configs[k][1], 2, doc_T[k], 1, 1, stream);
    }
    run_documents_case("ssd-mamba G=1 T=64 d_conv=3",
                       "{\"name\":\"d3\",\"d_model\":48,\"n_layer\":2,\"vocab_size\":257,\"pad_vocab_multiple\":16,"
                       "\"d_state\":32,\"d_conv\":3,\"expand\":2,\"headdim\":32,\"ngroups\":1,\"chunk_size\":32,"
                       "\"a_structure\":\"diagonal\"}",
                       2, 64, 1, 1, stream);
    run_documents_case("ssd-mamba headdim 40 d_state 48 G=2 T=64",
                       "{\"name\":\"d4\",\"d_model\":80,\"n_layer\":2,\"vocab_size\":257,\"pad_vocab_multiple\":16,"
                       "\"d_state\":48,\"d_conv\":4,\"expand\":2,\"headdim\":40,\"ngroups\":2,\"chunk_size\":32,"
                       "\"a_structure\":\"diagonal\"}",
                       2, 64, 1, 1, stream);
    run_bucket_case("mamba2 L=3",
                    "{\"name\":\"b1\",\"d_model\":64,\"n_layer\":3,\"vocab_size\":300,\"pad_vocab_multiple\":16,"
                    "\"d_state\":16,\"d_conv\":4,\"expand\":2,\"headdim\":16,\"ngroups\":1,\"chunk_size\":16,"
                    "\"a_structure\":\"scalar\"}",
                    2, 40, stream);
    run_bucket_case("ssd-mamba L=2",
                    "{\"name\":\"b2\",\"d_model\":48,\"n_layer\":2,\"vocab_size\":257,\"pad_vocab_multiple\":16,"
                    "\"d_state\":32,\"d_conv\":4,\"expand\":2,\"headdim\":32,\"ngroups\":1,\"chunk_size\":32,"
                    "\"a_structure\":\"diagonal\"}",
                    3, 64, stream);
    matmul_free();
    cudaCheck(cudaStreamDestroy(stream));
    return test_exit_code();
}
