/*
 * Causal depthwise conv1d (kernel width K = 4) + bias + SiLU over each sequence of T steps:
 *   pre[t, c] = b[c] + sum_k w[c, k] * x[t - (K-1) + k, c]      (x before t = 0 is zero)
 *   out[t, c] = silu(pre[t, c])
 * backward, with dpre = dout * silu'(pre) (pre recomputed from x):
 *   dx[t, c] = sum_k w[c, k] * dpre[t + (K-1) - k, c]   (dpre past T - 1 is zero)
 *   dw[c, k] += sum_t dpre[t, c] * x[t - (K-1) + k, c]       db[c] += sum_t dpre[t, c]
 * x is read with row stride x_stride (the xBC columns of in_proj's output), out/dout are [N, C].
 * Carried state (evaluation across consecutive windows): state [B, K-1, C] holds the K-1 inputs
 * before t = 0 instead of zeros, and is then replaced by the window's last K-1 inputs.
 * Each thread owns one channel of one span of CONV_SPAN steps of one sequence and slides a window
 * over time; the weight gradients are per-span partial sums, reduced in a fixed order.
 */
#ifndef SSD_KERNELS_CONV1D_CUH
#define SSD_KERNELS_CONV1D_CUH

#include "common.cuh"

#define CONV_K 4
#define CONV_SPAN 64
#define CONV_THREADS 128

__global__ void conv1d_forward_kernel(floatX *out, const floatX *x, int x_stride, const float *w, const float *bias,
                                      const float *state, int B, int T, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int spans = (T + CONV_SPAN - 1) / CONV_SPAN;
    int b = blockIdx.y / spans, t0 = (blockIdx.y % spans) * CONV_SPAN;
    int t1 = min(t0 + CONV_SPAN, T);
    float wk[CONV_K], window[CONV_K];
#pragma unroll
    for (int k = 0; k < CONV_K; k++) wk[k] = w[c * CONV_K + k];
    float bc = bias[c];
    const floatX *xs = x + (size_t)b * T * x_stride + c;
#pragma unroll
    for (int k = 0; k < CONV_K - 1; k++) {
        int t = t0 - (CONV_K - 1) + k;
        if (t >= 0) window[k] = to_float(xs[(size_t)t * x_stride]);
        else window[k] = state ? state[((size_t)b * (CONV_K - 1) + CONV_K - 1 + t) * C + c] : 0.0f;
    }
    for (int t = t0; t < t1; t++) {
        window[CONV_K - 1] = to_float(xs[(size_t)t * x_stride]);
        float pre = bc;
#pragma unroll
        for (int k = 0; k < CONV_K; k++) pre += wk[k] * window[k];
        out[((size_t)b * T + t) * C + c] = from_float<floatX>(silu(pre));
#pragma unroll
        for (int k = 0; k < CONV_K - 1; k++) window[k] = window[k + 1];
    }
}

/* state[b, j, c] (input j - (K-1)) <- the input at T - (K-1) + j, from the old state when T < K - 1 */
__global__ void conv1d_state_update_kernel(float *state, const floatX *x, int x_stride, int B, int T, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (c >= C) return;
    float *st = state + (size_t)b * (CONV_K - 1) * C + c;
    float next[CONV_K - 1];
#pragma unroll
    for (int j = 0; j < CONV_K - 1; j++) {
        int t = T - (CONV_K - 1) + j;
        next[j] = t >= 0 ? to_float(x[((size_t)b * T + t) * x_stride + c]) : st[(size_t)(j + T) * C];
    }
#pragma unroll
    for (int j = 0; j < CONV_K - 1; j++) st[(size_t)j * C] = next[j];
}

__global__ void conv1d_backward_kernel(floatX *dx, int dx_stride, float *dw_partial, float *db_partial,
                                       const floatX *dout, const floatX *x, int x_stride, const float *w,
                                       const float *bias, int B, int T, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int spans = (T + CONV_SPAN - 1) / CONV_SPAN;
    int b = blockIdx.y / spans, t0 = (blockIdx.y % spans) * CONV_SPAN;
    int t1 = min(t0 + CONV_SPAN, T);
    float wk[CONV_K], xwin[CONV_K], dwin[CONV_K], dwacc[CONV_K];
#pragma unroll
    for (int k = 0; k < CONV_K; k++) {
        wk[k] = w[c * CONV_K + k];
        dwin[k] = 0.0f;
        dwacc[k] = 0.0f;
    }
    float bc = bias[c], dbacc = 0.0f;
    const floatX *xs = x + (size_t)b * T * x_stride + c;
#pragma unroll
    for (int k = 0; k < CONV_K - 1; k++) {
        int t = t0 - (CONV_K - 1) + k;
        xwin[k] = t >= 0 ? to_float(xs[(size_t)t * x_stride]) : 0.0f;
    }
    /* step t computes dpre[t] (zero past T-1) and then dx[t - (K-1)], which needs dpre[t-3 .. t] */
    for (int t = t0; t < t1 + CONV_K - 1; t++) {
        float dpre = 0.0f;
        if (t < T) {
            xwin[CONV_K - 1] = to_float(xs[(size_t)t * x_stride]);
            float pre = bc;
#pragma unroll
            for (int k = 0; k < CONV_K; k++) pre += wk[k] * xwin[k];
            dpre = to_float(dout[((size_t)b * T + t) * C + c]) * silu_grad(pre);
            if (t < t1) {
#pragma unroll
                for (int k = 0; k < CONV_K; k++) dwacc[k] += dpre * xwin[k];
                dbacc += dpre;
            }
#pragma unroll
            for (int k = 0; k < CONV_K - 1; k++) xwin[k] = xwin[k + 1];
        }
#pragma unroll
        for (int k = 0; k < CONV_K - 1; k++) dwin[k] = dwin[k + 1];
        dwin[CONV_K - 1] = dpre;  /* dwin[j] = dpre[t - (K-1) + j] */
        int ts = t - (CONV_K - 1);
        if (ts >= t0) {
            float d = 0.0f;
#pragma unroll
            for (int k = 0; k < CONV_K; k++) d += wk[k] * dwin[CONV_K - 1 - k];
            dx[((size_t)b * T + ts) * dx_stride + c] = from_float<floatX>(d);
        }
    }
    size_t span_index = blockIdx.y;
#pragma unroll
    for (int k = 0; k < CONV_K; k++) dw_partial[span_index * C * CONV_K + c * CONV_K + k] = dwacc[k];
    db_partial[span_index * C + c] = dbacc;
}

static inline void conv1d_check_width(int d_conv) {
    if (d_conv != CONV_K) {
        fprintf(stderr, "conv1d: d_conv = %d is not supported by the CUDA kernels (only %d)\n", d_conv, CONV_K);
        exit(EXIT_FAILURE);
    }
}

/* state: NULL (zeros before t = 0) or the carried [B, K-1, C] inputs, updated in place */
static inline void conv1d_forward(floatX *out, const floatX *x, int x_stride, const float *w, const float *bias,
                                  float *state, int B, int T, int C, cudaStream_t stream) {
    dim3 grid(ceil_div(C, CONV_THREADS), B * ceil_div(T, CONV_SPAN));
    conv1d_forward_kernel<<<grid, CONV_THREADS, 0, stream>>>(out, x, x_stride, w, bias, state, B, T, C);
    cudaCheckLaunch();
    if (state) {
        conv1d_state_update_kernel<<<dim3(ceil_div(C, CONV_THREADS), B), CONV_THREADS, 0, stream>>>(state, x, x_stride, B,
                                                                                                    T, C);
        cudaCheckLaunch();
    }
}

static inline size_t conv1d_backward_scratch_floats(int B, int T, int C) {
    return (size_t)B * ceil_div(T, CONV_SPAN) * C * (CONV_K + 1);
}

/* Writes dx (row stride dx_stride); dw [C, K] and db [C] accumulate. */
static inline void conv1d_backward(floatX *dx, int dx_stride, float *dw, float *db, float *scratch, const floatX *dout,
                                   const floatX *x, int x_stride, const float *w, const float *bias, int B, int T, int C,
                                   cudaStream_t stream) {
    int spans = B * ceil_div(T, CONV_SPAN);
    float *dw_partial = scratch, *db_partial = scratch + (size_t)spans * C * CONV_K;
    dim3 grid(ceil_div(C, CONV_THREADS), spans);
    conv1d_backward_kernel<<<grid, CONV_THREADS, 0, stream>>>(dx, dx_stride, dw_partial, db_partial, dout, x, x_stride, w,
                                                              bias, B, T, C);
    cudaCheckLaunch();
    sum_rows_accumulate(dw, dw_partial, spans, C * CONV_K, stream);
    sum_rows_accumulate(db, db_partial, spans, C, stream);
}

#endif
