/*
 * Causal depthwise conv1d (kernel width K = d_conv, 2 to 4) + bias + SiLU over each sequence (row) of T steps:
 *   pre[t, c] = b[c] + sum_k m(t, src) w[c, k] x[src, c],   src = t - (K-1) + k
 *   out[t, c] = silu(pre[t, c])
 * backward, with dpre = dout * silu'(pre) (pre recomputed from x):
 *   dx[t, c] = sum_k m(t + (K-1) - k, t) w[c, k] dpre[t + (K-1) - k, c]   (dpre past T - 1 is zero)
 *   dw[c, k] += sum_t m(t, src) dpre[t, c] x[src, c]        db[c] += sum_t dpre[t, c]
 * Document boundaries: m(t, src) = 1 when segment[src] = segment[t] and 0 otherwise (segment [B][T]: the
 * number of documents that started at or before t in the row; NULL: one document, m = 1), so an output
 * never reads an input of another document. The inputs before t = 0 (src < 0) are in document 0: they
 * come from state_in [B][K-1][C] (the carried inputs of the previous window) or are zero.
 * state_out [B][K-1][C] receives the window's last K-1 inputs (the older ones from state_in when T < K-1),
 * each stored as 0 when its document is not segment[T-1]'s, so the next window's first steps see only the
 * document that continues into it. The backward takes the forward's state_in: its products reach dw
 * (there is no gradient for the state itself).
 * x is read with row stride x_stride (the xBC columns of in_proj's output), out/dout are [N, C].
 * A thread owns one span of CONV_SPAN steps of one sequence and slides a window over time; the weight
 * gradients are per-span partial sums [spans][C*K] and [spans][C], reduced in a fixed order
 * (sum_rows_accumulate). The kernels are templates over K and over SEG (whether there are segments):
 * without, every mask is 1 at compile time.
 * Access pattern: the vector kernels give a thread X_VEC consecutive channels (8 in bf16, 4 in fp32) moved
 * by 16-byte loads and stores of x, out, dout and dx, a block 32 threads (one warp: 512 contiguous bytes
 * of a row per step); they load CONV_AHEAD_FWD (_BWD) steps before computing them (loads in flight), and
 * one document compare per step and tap serves the thread's X_VEC channels. They run when C, x_stride (and
 * dx_stride) are multiples of X_VEC and x, out, dout, dx and the scratch are 16-byte aligned; otherwise
 * the scalar kernels run (one channel per thread, 128 threads a block). Both sum in the same order.
 */
#ifndef SSD_KERNELS_CONV1D_CUH
#define SSD_KERNELS_CONV1D_CUH

#include "common.cuh"

#define CONV_MAX_K 4
#define CONV_SPAN 64
#define CONV_THREADS 128
#define CONV_VEC_THREADS 32
/* steps a vector kernel loads before it computes them (loads in flight against registers); divide CONV_SPAN */
#define CONV_AHEAD_FWD 4
#define CONV_AHEAD_BWD 2

/* the document of step t of row b (NULL: one document, 0) */
__device__ __forceinline__ int conv1d_segment(const int *segment, int b, int T, int t) {
    return segment ? segment[(size_t)b * T + t] : 0;
}

/* input t >= -(K-1) of row b (xs: the row's column c) and its document in *seg: x, or before t = 0 state_in
 * (zeros without it) in document 0 */
template <int K>
__device__ __forceinline__ float conv1d_input(const floatX *xs, int x_stride, const float *state_in, const int *segment,
                                              int b, int T, int C, int c, int t, int *seg) {
    if (t >= 0) {
        *seg = conv1d_segment(segment, b, T, t);
        return to_float(xs[(size_t)t * x_stride]);
    }
    *seg = 0;
    return state_in ? state_in[((size_t)b * (K - 1) + K - 1 + t) * C + c] : 0.0f;
}

template <int K, bool SEG>
__global__ void conv1d_forward_kernel(floatX *out, const floatX *x, int x_stride, const float *w, const float *bias,
                                      const int *segment, const float *state_in, int B, int T, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int spans = (T + CONV_SPAN - 1) / CONV_SPAN;
    int b = blockIdx.y / spans, t0 = (blockIdx.y % spans) * CONV_SPAN;
    int t1 = min(t0 + CONV_SPAN, T);
    float wk[K], window[K];
    int wseg[K];
#pragma unroll
    for (int k = 0; k < K; k++) wk[k] = w[c * K + k];
    float bc = bias[c];
    const floatX *xs = x + (size_t)b * T * x_stride + c;
#pragma unroll
    for (int k = 0; k < K - 1; k++)
        window[k] = conv1d_input<K>(xs, x_stride, state_in, segment, b, T, C, c, t0 - (K - 1) + k, &wseg[k]);
    for (int t = t0; t < t1; t++) {
        window[K - 1] = to_float(xs[(size_t)t * x_stride]);
        wseg[K - 1] = conv1d_segment(segment, b, T, t);
        float pre = bc;
#pragma unroll
        for (int k = 0; k < K; k++) pre += wk[k] * (wseg[k] == wseg[K - 1] ? window[k] : 0.0f);
        out[((size_t)b * T + t) * C + c] = from_float<floatX>(silu(pre));
#pragma unroll
        for (int k = 0; k < K - 1; k++) {
            window[k] = window[k + 1];
            wseg[k] = wseg[k + 1];
        }
    }
}

/* state_out[b, j, c] (input j - (K-1) of the next window) <- the input at T - (K-1) + j (from state_in, or
 * zero, when T < K - 1), or 0 when its document is not segment[T-1]'s. Reads all before it writes, so
 * state_out may be state_in. */
template <int K>
__global__ void conv1d_state_update_kernel(float *state_out, const float *state_in, const floatX *x, int x_stride,
                                           const int *segment, int B, int T, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (c >= C) return;
    int last = conv1d_segment(segment, b, T, T - 1);
    const floatX *xs = x + (size_t)b * T * x_stride + c;
    float next[K - 1];
#pragma unroll
    for (int j = 0; j < K - 1; j++) {
        int seg;
        float v = conv1d_input<K>(xs, x_stride, state_in, segment, b, T, C, c, T - (K - 1) + j, &seg);
        next[j] = seg == last ? v : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < K - 1; j++) state_out[((size_t)b * (K - 1) + j) * C + c] = next[j];
}

template <int K, bool SEG>
__global__ void conv1d_backward_kernel(floatX *dx, int dx_stride, float *dw_partial, float *db_partial,
                                       const floatX *dout, const floatX *x, int x_stride, const float *w,
                                       const float *bias, const int *segment, const float *state_in, int B, int T,
                                       int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int spans = (T + CONV_SPAN - 1) / CONV_SPAN;
    int b = blockIdx.y / spans, t0 = (blockIdx.y % spans) * CONV_SPAN;
    int t1 = min(t0 + CONV_SPAN, T);
    float wk[K], xwin[K], dwin[K], dwacc[K];
    int xseg[K], dseg[K];
#pragma unroll
    for (int k = 0; k < K; k++) {
        wk[k] = w[c * K + k];
        dwin[k] = 0.0f;
        dseg[k] = 0;
        dwacc[k] = 0.0f;
    }
    float bc = bias[c], dbacc = 0.0f;
    const floatX *xs = x + (size_t)b * T * x_stride + c;
#pragma unroll
    for (int k = 0; k < K - 1; k++)
        xwin[k] = conv1d_input<K>(xs, x_stride, state_in, segment, b, T, C, c, t0 - (K - 1) + k, &xseg[k]);
    /* step t computes dpre[t] (zero past T-1) and then dx[t - (K-1)], which needs dpre[t-(K-1) .. t] */
    for (int t = t0; t < t1 + K - 1; t++) {
        float dpre = 0.0f;
        int st = 0;
        if (t < T) {
            st = conv1d_segment(segment, b, T, t);
            xwin[K - 1] = to_float(xs[(size_t)t * x_stride]);
            xseg[K - 1] = st;
            float xm[K], pre = bc; /* the inputs output t reads */
#pragma unroll
            for (int k = 0; k < K; k++) {
                xm[k] = xseg[k] == st ? xwin[k] : 0.0f;
                pre += wk[k] * xm[k];
            }
            dpre = to_float(dout[((size_t)b * T + t) * C + c]) * silu_grad(pre);
            if (t < t1) {
#pragma unroll
                for (int k = 0; k < K; k++) dwacc[k] += dpre * xm[k];
                dbacc += dpre;
            }
#pragma unroll
            for (int k = 0; k < K - 1; k++) {
                xwin[k] = xwin[k + 1];
                xseg[k] = xseg[k + 1];
            }
        }
#pragma unroll
        for (int k = 0; k < K - 1; k++) {
            dwin[k] = dwin[k + 1];
            dseg[k] = dseg[k + 1];
        }
        dwin[K - 1] = dpre; /* dwin[j] = dpre[t - (K-1) + j], dseg[j] its document */
        dseg[K - 1] = st;
        int ts = t - (K - 1);
        if (ts >= t0) {
            float d = 0.0f; /* dseg[0]: input ts's document */
#pragma unroll
            for (int k = 0; k < K; k++) d += wk[k] * (dseg[K - 1 - k] == dseg[0] ? dwin[K - 1 - k] : 0.0f);
            dx[((size_t)b * T + ts) * dx_stride + c] = from_float<floatX>(d);
        }
    }
    size_t span_index = blockIdx.y;
#pragma unroll
    for (int k = 0; k < K; k++) dw_partial[span_index * C * K + c * K + k] = dwacc[k];
    db_partial[span_index * C + c] = dbacc;
}

/* The vector kernels: thread i of the grid's x owns channels c0 = i * X_VEC .. c0 + X_VEC - 1. */

/* the thread's weights w[c0 + j, k] and biases */
template <int K>
__device__ __forceinline__ void conv1d_load_weights_vec(float (&wk)[X_VEC][K], float (&bc)[X_VEC], const float *w,
                                                        const float *bias, int c0) {
#pragma unroll
    for (int j = 0; j < X_VEC; j++) {
#pragma unroll
        for (int k = 0; k < K; k++) wk[j][k] = w[(c0 + j) * K + k];
        bc[j] = bias[c0 + j];
    }
}

/* conv1d_input for the X_VEC channels from c0 (xs: the row's column c0) */
template <int K>
__device__ __forceinline__ void conv1d_input_vec(float (&v)[X_VEC], const floatX *xs, int x_stride,
                                                 const float *state_in, const int *segment, int b, int T, int C,
                                                 int c0, int t, int *seg) {
    if (t >= 0) {
        *seg = conv1d_segment(segment, b, T, t);
        XPack p = load_xpack(xs + (size_t)t * x_stride);
#pragma unroll
        for (int j = 0; j < X_VEC; j++) v[j] = to_float(p.v[j]);
        return;
    }
    *seg = 0;
#pragma unroll
    for (int j = 0; j < X_VEC; j++) v[j] = state_in ? state_in[((size_t)b * (K - 1) + K - 1 + t) * C + c0 + j] : 0.0f;
}

/* conv1d_forward_kernel over X_VEC channels a thread */
template <int K, bool SEG>
__global__ void conv1d_forward_vec_kernel(floatX *out, const floatX *x, int x_stride, const float *w, const float *bias,
                                          const int *segment, const float *state_in, int B, int T, int C) {
    int c0 = (blockIdx.x * blockDim.x + threadIdx.x) * X_VEC;
    if (c0 >= C) return;
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int spans = (T + CONV_SPAN - 1) / CONV_SPAN;
    int b = blockIdx.y / spans, t0 = (blockIdx.y % spans) * CONV_SPAN;
    int t1 = min(t0 + CONV_SPAN, T);
    float wk[X_VEC][K], bc[X_VEC], window[K][X_VEC];
    int wseg[K];
    conv1d_load_weights_vec<K>(wk, bc, w, bias, c0);
    const floatX *xs = x + (size_t)b * T * x_stride + c0;
#pragma unroll
    for (int k = 0; k < K - 1; k++)
        conv1d_input_vec<K>(window[k], xs, x_stride, state_in, segment, b, T, C, c0, t0 - (K - 1) + k, &wseg[k]);
    for (int ta = t0; ta < t1; ta += CONV_AHEAD_FWD) {
        XPack xa[CONV_AHEAD_FWD];
        int sa[CONV_AHEAD_FWD];
#pragma unroll
        for (int u = 0; u < CONV_AHEAD_FWD; u++)
            if (ta + u < t1) {
                xa[u] = load_xpack(xs + (size_t)(ta + u) * x_stride);
                sa[u] = conv1d_segment(segment, b, T, ta + u);
            }
#pragma unroll
        for (int u = 0; u < CONV_AHEAD_FWD; u++) {
            if (ta + u >= t1) break;
#pragma unroll
            for (int j = 0; j < X_VEC; j++) window[K - 1][j] = to_float(xa[u].v[j]);
            wseg[K - 1] = sa[u];
            bool keep[K]; /* the document compares, shared by the channels */
#pragma unroll
            for (int k = 0; k < K; k++) keep[k] = wseg[k] == wseg[K - 1];
            float o[X_VEC];
#pragma unroll
            for (int j = 0; j < X_VEC; j++) {
                float pre = bc[j];
#pragma unroll
                for (int k = 0; k < K; k++) pre += wk[j][k] * (keep[k] ? window[k][j] : 0.0f);
                o[j] = silu(pre);
            }
            store_xpack(out + ((size_t)b * T + ta + u) * C + c0, o);
#pragma unroll
            for (int k = 0; k < K - 1; k++) {
#pragma unroll
                for (int j = 0; j < X_VEC; j++) window[k][j] = window[k + 1][j];
                wseg[k] = wseg[k + 1];
            }
        }
    }
}

/* conv1d_backward_kernel over X_VEC channels a thread */
template <int K, bool SEG>
__global__ void conv1d_backward_vec_kernel(floatX *dx, int dx_stride, float *dw_partial, float *db_partial,
                                           const floatX *dout, const floatX *x, int x_stride, const float *w,
                                           const float *bias, const int *segment, const float *state_in, int B, int T,
                                           int C) {
    int c0 = (blockIdx.x * blockDim.x + threadIdx.x) * X_VEC;
    if (c0 >= C) return;
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int spans = (T + CONV_SPAN - 1) / CONV_SPAN;
    int b = blockIdx.y / spans, t0 = (blockIdx.y % spans) * CONV_SPAN;
    int t1 = min(t0 + CONV_SPAN, T), t_end = t1 + K - 1;
    float wk[X_VEC][K], bc[X_VEC], xwin[K][X_VEC], dwin[K][X_VEC], dwacc[X_VEC][K], dbacc[X_VEC];
    int xseg[K], dseg[K];
    conv1d_load_weights_vec<K>(wk, bc, w, bias, c0);
#pragma unroll
    for (int j = 0; j < X_VEC; j++) {
#pragma unroll
        for (int k = 0; k < K; k++) {
            dwin[k][j] = 0.0f;
            dwacc[j][k] = 0.0f;
        }
        dbacc[j] = 0.0f;
    }
#pragma unroll
    for (int k = 0; k < K; k++) dseg[k] = 0;
    const floatX *xs = x + (size_t)b * T * x_stride + c0;
#pragma unroll
    for (int k = 0; k < K - 1; k++)
        conv1d_input_vec<K>(xwin[k], xs, x_stride, state_in, segment, b, T, C, c0, t0 - (K - 1) + k, &xseg[k]);
    /* step t computes dpre[t] (zero past T-1) and then dx[t - (K-1)], which needs dpre[t-(K-1) .. t] */
    for (int ta = t0; ta < t_end; ta += CONV_AHEAD_BWD) {
        XPack xa[CONV_AHEAD_BWD], da[CONV_AHEAD_BWD];
        int sa[CONV_AHEAD_BWD];
#pragma unroll
        for (int u = 0; u < CONV_AHEAD_BWD; u++) {
            int t = ta + u;
            if (t < t_end && t < T) {
                xa[u] = load_xpack(xs + (size_t)t * x_stride);
                da[u] = load_xpack(dout + ((size_t)b * T + t) * C + c0);
                sa[u] = conv1d_segment(segment, b, T, t);
            }
        }
#pragma unroll
        for (int u = 0; u < CONV_AHEAD_BWD; u++) {
            int t = ta + u;
            if (t >= t_end) break;
            float dpre[X_VEC];
            int st = 0;
#pragma unroll
            for (int j = 0; j < X_VEC; j++) dpre[j] = 0.0f;
            if (t < T) {
                st = sa[u];
#pragma unroll
                for (int j = 0; j < X_VEC; j++) xwin[K - 1][j] = to_float(xa[u].v[j]);
                xseg[K - 1] = st;
                bool keep[K]; /* the document compares, shared by the channels */
#pragma unroll
                for (int k = 0; k < K; k++) keep[k] = xseg[k] == st;
#pragma unroll
                for (int j = 0; j < X_VEC; j++) {
                    float xm[K], pre = bc[j]; /* the inputs output t reads */
#pragma unroll
                    for (int k = 0; k < K; k++) {
                        xm[k] = keep[k] ? xwin[k][j] : 0.0f;
                        pre += wk[j][k] * xm[k];
                    }
                    dpre[j] = to_float(da[u].v[j]) * silu_grad(pre);
                    if (t < t1) {
#pragma unroll
                        for (int k = 0; k < K; k++) dwacc[j][k] += dpre[j] * xm[k];
                        dbacc[j] += dpre[j];
                    }
                }
#pragma unroll
                for (int k = 0; k < K - 1; k++) {
#pragma unroll
                    for (int j = 0; j < X_VEC; j++) xwin[k][j] = xwin[k + 1][j];
                    xseg[k] = xseg[k + 1];
                }
            }
#pragma unroll
            for (int k = 0; k < K - 1; k++) {
#pragma unroll
                for (int j = 0; j < X_VEC; j++) dwin[k][j] = dwin[k + 1][j];
                dseg[k] = dseg[k + 1];
            }
#pragma unroll
            for (int j = 0; j < X_VEC; j++) dwin[K - 1][j] = dpre[j]; /* dwin[i] = dpre[t - (K-1) + i] */
            dseg[K - 1] = st;
            int ts = t - (K - 1);
            if (ts >= t0) {
                bool keep[K]; /* dseg[0]: input ts's document */
#pragma unroll
                for (int k = 0; k < K; k++) keep[k] = dseg[K - 1 - k] == dseg[0];
                float d[X_VEC];
#pragma unroll
                for (int j = 0; j < X_VEC; j++) {
                    d[j] = 0.0f;
#pragma unroll
                    for (int k = 0; k < K; k++) d[j] += wk[j][k] * (keep[k] ? dwin[K - 1 - k][j] : 0.0f);
                }
                store_xpack(dx + ((size_t)b * T + ts) * dx_stride + c0, d);
            }
        }
    }
    /* the thread's X_VEC * K partials are consecutive (c * K + k), a multiple of 4 floats */
    size_t span_index = blockIdx.y;
    float4 *dwp = reinterpret_cast<float4 *>(dw_partial + span_index * C * K + (size_t)c0 * K);
    const float *acc = &dwacc[0][0];
#pragma unroll
    for (int i = 0; i < X_VEC * K / 4; i++) dwp[i] = make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]);
    store_floats_vec(db_partial + span_index * C + c0, dbacc);
}

/* whether the vector kernels may move rows of C values at row stride `stride` through a and b */
static inline bool conv1d_vec_ok(int C, int stride, const void *a, const void *b) {
    return C % X_VEC == 0 && stride % X_VEC == 0 && aligned16(a) && aligned16(b);
}

static inline void conv1d_check_width(int d_conv) {
    if (d_conv < 2 || d_conv > CONV_MAX_K) {
        fprintf(stderr, "conv1d: d_conv = %d is not supported by the CUDA kernels (2 to %d)\n", d_conv, CONV_MAX_K);
        exit(EXIT_FAILURE);
    }
}

template <int K>
static void conv1d_forward_k(floatX *out, const floatX *x, int x_stride, const float *w, const float *bias,
                             const int *segment, const float *state_in, float *state_out, int B, int T, int C,
                             cudaStream_t stream) {
    int spans = B * ceil_div(T, CONV_SPAN);
    if (conv1d_vec_ok(C, x_stride, x, out)) {
        auto kernel = segment ? conv1d_forward_vec_kernel<K, true> : conv1d_forward_vec_kernel<K, false>;
        kernel<<<dim3(ceil_div(C / X_VEC, CONV_VEC_THREADS), spans), CONV_VEC_THREADS, 0, stream>>>(
            out, x, x_stride, w, bias, segment, state_in, B, T, C);
    } else {
        auto kernel = segment ? conv1d_forward_kernel<K, true> : conv1d_forward_kernel<K, false>;
        kernel<<<dim3(ceil_div(C, CONV_THREADS), spans), CONV_THREADS, 0, stream>>>(out, x, x_stride, w, bias,
                                                                                   segment, state_in, B, T, C);
    }
    cudaCheckLaunch();
    if (state_out) {
        conv1d_state_update_kernel<K><<<dim3(ceil_div(C, CONV_THREADS), B), CONV_THREADS, 0, stream>>>(
            state_out, state_in, x, x_stride, segment, B, T, C);
        cudaCheckLaunch();
    }
}

/* K: d_conv (conv1d_check_width); segment: NULL or [B][T] on the device; state_in: NULL (zeros before t = 0)
 * or the carried [B][K-1][C] inputs; state_out: NULL or where the next window's carried inputs go (may be
 * state_in) */
static inline void conv1d_forward(floatX *out, const floatX *x, int x_stride, const float *w, const float *bias,
                                  const int *segment, const float *state_in, float *state_out, int B, int T, int C,
                                  int K, cudaStream_t stream) {
    auto run = K == 2 ? conv1d_forward_k<2> : K == 3 ? conv1d_forward_k<3> : conv1d_forward_k<4>;
    run(out, x, x_stride, w, bias, segment, state_in, state_out, B, T, C, stream);
}

/* enough for every supported K */
static inline size_t conv1d_backward_scratch_floats(int B, int T, int C) {
    return (size_t)B * ceil_div(T, CONV_SPAN) * C * (CONV_MAX_K + 1);
}

template <int K>
static void conv1d_backward_k(floatX *dx, int dx_stride, float *dw, float *db, float *scratch, const floatX *dout,
                              const floatX *x, int x_stride, const float *w, const float *bias, const int *segment,
                              const float *state_in, int B, int T, int C, cudaStream_t stream) {
    int spans = B * ceil_div(T, CONV_SPAN);
    float *dw_partial = scratch, *db_partial = scratch + (size_t)spans * C * K;
    if (conv1d_vec_ok(C, x_stride, x, dout) && conv1d_vec_ok(C, dx_stride, dx, scratch)) {
        auto kernel = segment ? conv1d_backward_vec_kernel<K, true> : conv1d_backward_vec_kernel<K, false>;
        kernel<<<dim3(ceil_div(C / X_VEC, CONV_VEC_THREADS), spans), CONV_VEC_THREADS, 0, stream>>>(
            dx, dx_stride, dw_partial, db_partial, dout, x, x_stride, w, bias, segment, state_in, B, T, C);
    } else {
        auto kernel = segment ? conv1d_backward_kernel<K, true> : conv1d_backward_kernel<K, false>;
        kernel<<<dim3(ceil_div(C, CONV_THREADS), spans), CONV_THREADS, 0, stream>>>(
            dx, dx_stride, dw_partial, db_partial, dout, x, x_stride, w, bias, segment, state_in, B, T, C);
    }
    cudaCheckLaunch();
    sum_rows_accumulate(dw, dw_partial, spans, C * K, stream);
    sum_rows_accumulate(db, db_partial, spans, C, stream);
}

/* Writes dx (row stride dx_stride); dw [C, K] and db [C] accumulate. segment, state_in: the forward's. */
static inline void conv1d_backward(floatX *dx, int dx_stride, float *dw, float *db, float *scratch, const floatX *dout,
                                   const floatX *x, int x_stride, const float *w, const float *bias, const int *segment,
                                   const float *state_in, int B, int T, int C, int K, cudaStream_t stream) {
    auto run = K == 2 ? conv1d_backward_k<2> : K == 3 ? conv1d_backward_k<3> : conv1d_backward_k<4>;
    run(dx, dx_stride, dw, db, scratch, dout, x, x_stride, w, bias, segment, state_in, B, T, C, stream);
}

#endif
