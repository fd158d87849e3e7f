/*
 * The recurrent state that the CUDA trainer carries from one window of a row to the next: per layer, the
 * conv's last K-1 inputs [rows, K-1, conv_dim] and the SSM state [rows, H, P, N], fp32.
 *   - evaluation with -ec 1 and generation: one buffer, read and replaced by each forward (GPUCarry);
 *   - training with -cs 1 (GPUStreamCarry): grad_accum x B streams, micro-batch m's rows [m B, (m+1) B). The
 *     forward reads `in` and writes `out`, so that its backward and recomputation still see the state the window
 *     started from; after the step's last micro-batch the two buffers swap.
 * A row whose last input ends a document (-db 1) hands on a zero state: the next window starts a document.
 * The checkpoint holds each stream's floats as the CPU trainer's (train_ssd.c): the conv state of every layer
 * ([L][K-1][conv_dim]), then the SSM state ([L][H][P][N]), stream after stream, so either trainer resumes the
 * other's checkpoint.
 */
#ifndef SSD_TRAIN_GPU_CARRY_CUH
#define SSD_TRAIN_GPU_CARRY_CUH

#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.cuh"
#include "model/config.h"

/* Layer l's rows start at conv + l * conv_floats and ssm + l * ssm_floats; a view of some rows (gpu_carry_rows)
 * keeps the layer strides of the buffer it looks into. */
typedef struct {
    float *conv, *ssm;
    size_t conv_floats, ssm_floats; /* per layer: the buffer's rows */
} GPUCarry;

static size_t gpu_carry_conv_row(const ModelConfig *c) { return (size_t)(c->d_conv - 1) * c->conv_dim; }
static size_t gpu_carry_ssm_row(const ModelConfig *c) { return (size_t)c->nheads * c->headdim * c->d_state; }

static void gpu_carry_alloc(GPUCarry *carry, const ModelConfig *c, int rows) {
    carry->conv_floats = rows * gpu_carry_conv_row(c);
    carry->ssm_floats = rows * gpu_carry_ssm_row(c);
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

/* the rows from row0 on */
static GPUCarry gpu_carry_rows(const GPUCarry *carry, const ModelConfig *c, int row0) {
    GPUCarry view = *carry;
    view.conv += row0 * gpu_carry_conv_row(c);
    view.ssm += row0 * gpu_carry_ssm_row(c);
    return view;
}

/* zeroes row b of every layer (layer stride `layer`, row_floats per row) where the row's last input is eot */
__global__ void gpu_carry_zero_ended_kernel(float *state, size_t layer, size_t row_floats, const int *inputs, int T,
                                            int eot) {
    int b = blockIdx.y, l = blockIdx.z;
    if (inputs[(size_t)b * T + T - 1] != eot) return;
    float *row = state + l * layer + b * row_floats;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < row_floats; i += (size_t)gridDim.x * blockDim.x)
        row[i] = 0.0f;
}

/* After a forward over inputs [B, T] (device) with document boundaries: the rows whose last input is eot start
 * the next window from zero. */
static void gpu_carry_zero_ended(GPUCarry *carry, const ModelConfig *c, const int *inputs, int B, int T, int eot,
                                 cudaStream_t stream) {
    size_t rows[2] = {gpu_carry_conv_row(c), gpu_carry_ssm_row(c)}, layers[2] = {carry->conv_floats, carry->ssm_floats};
    float *states[2] = {carry->conv, carry->ssm};
    for (int k = 0; k < 2; k++) {
        dim3 grid(std::min(ceil_div((long)rows[k], 256), 64), B, c->n_layer);
        gpu_carry_zero_ended_kernel<<<grid, 256, 0, stream>>>(states[k], layers[k], rows[k], inputs, T, eot);
        cudaCheckLaunch();
    }
}

/* -cs 1: the states of `streams` rows, micro-batches of B of them */
typedef struct {
    GPUCarry in, out;
    int streams, B;
    float *host; /* pinned [streams x per-stream floats]: the states on their way to or from a checkpoint */
} GPUStreamCarry;

/* the floats of one stream in a checkpoint: conv then SSM, of every layer */
static size_t gpu_stream_carry_floats(const ModelConfig *c) {
    return (size_t)c->n_layer * (gpu_carry_conv_row(c) + gpu_carry_ssm_row(c));
}

static void gpu_stream_carry_alloc(GPUStreamCarry *sc, const ModelConfig *c, int streams, int B) {
    sc->streams = streams;
    sc->B = B;
    gpu_carry_alloc(&sc->in, c, streams);
    gpu_carry_alloc(&sc->out, c, streams);
    cudaCheck(cudaMallocHost(&sc->host, streams * gpu_stream_carry_floats(c) * sizeof(float)));
}

static void gpu_stream_carry_free(GPUStreamCarry *sc) {
    gpu_carry_free(&sc->in);
    gpu_carry_free(&sc->out);
    cudaCheck(cudaFreeHost(sc->host));
}

/* device bytes of both buffers */
static double gpu_stream_carry_bytes(const ModelConfig *c, int streams) {
    return 2.0 * streams * gpu_stream_carry_floats(c) * sizeof(float);
}

/* micro-batch m's rows of both buffers */
static void gpu_stream_carry_micro(const GPUStreamCarry *sc, const ModelConfig *c, int m, GPUCarry *in, GPUCarry *out) {
    *in = gpu_carry_rows(&sc->in, c, m * sc->B);
    *out = gpu_carry_rows(&sc->out, c, m * sc->B);
}

/* after the step's last micro-batch: what its windows left is where the next step's start */
static void gpu_stream_carry_swap(GPUStreamCarry *sc) {
    GPUCarry t = sc->in;
    sc->in = sc->out;
    sc->out = t;
}

/* Copies src into dst between the device's order (conv [L][streams][row], then SSM [L][streams][row]) and the
 * checkpoint's (stream after stream, each its conv [L][row] then its SSM [L][row]). */
static void gpu_stream_carry_reorder(const GPUStreamCarry *sc, const ModelConfig *c, const float *src, float *dst,
                                     int to_checkpoint) {
    size_t rows[2] = {gpu_carry_conv_row(c), gpu_carry_ssm_row(c)}, per_stream = gpu_stream_carry_floats(c);
    size_t L = c->n_layer, S = sc->streams;
    for (int k = 0; k < 2; k++) {
        size_t part = k == 0 ? 0 : L * S * rows[0], in_stream = k == 0 ? 0 : L * rows[0];
        for (size_t l = 0; l < L; l++)
            for (size_t i = 0; i < S; i++) {
                size_t device_at = part + (l * S + i) * rows[k], checkpoint_at = i * per_stream + in_stream + l * rows[k];
                memcpy(dst + (to_checkpoint ? checkpoint_at : device_at), src + (to_checkpoint ? device_at : checkpoint_at),
                       rows[k] * sizeof(float));
            }
    }
}

static void gpu_stream_carry_get(GPUStreamCarry *sc, const ModelConfig *c, float *out, cudaStream_t stream) {
    size_t conv = c->n_layer * sc->in.conv_floats, ssm = c->n_layer * sc->in.ssm_floats;
    cudaCheck(cudaMemcpyAsync(sc->host, sc->in.conv, conv * sizeof(float), cudaMemcpyDeviceToHost, stream));
    cudaCheck(cudaMemcpyAsync(sc->host + conv, sc->in.ssm, ssm * sizeof(float), cudaMemcpyDeviceToHost, stream));
    cudaCheck(cudaStreamSynchronize(stream));
    gpu_stream_carry_reorder(sc, c, sc->host, out, 1);
}

/* the states of a checkpoint, in gpu_stream_carry_get's order (train_loop_restore checked their count) */
static void gpu_stream_carry_set(GPUStreamCarry *sc, const ModelConfig *c, const float *in, cudaStream_t stream) {
    gpu_stream_carry_reorder(sc, c, in, sc->host, 0);
    size_t conv = c->n_layer * sc->in.conv_floats, ssm = c->n_layer * sc->in.ssm_floats;
    cudaCheck(cudaMemcpyAsync(sc->in.conv, sc->host, conv * sizeof(float), cudaMemcpyHostToDevice, stream));
    cudaCheck(cudaMemcpyAsync(sc->in.ssm, sc->host + conv, ssm * sizeof(float), cudaMemcpyHostToDevice, stream));
    cudaCheck(cudaStreamSynchronize(stream));
}

#endif
