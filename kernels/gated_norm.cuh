/*
 * Gated RMSNorm of the Mamba-2 block (norm after the gate), per group of S = E / G channels:
 *   forward:  g = y * silu(z)        rstd = 1 / sqrt(mean_group(g^2) + eps)      out = g * rstd * w
 *   backward: with ghat = g * rstd and dgw = dout * w (per group),
 *             dg = rstd * (dgw - ghat * mean_group(dgw * ghat))
 *             dy = dg * silu(z)      dz = dg * y * silu'(z)      dw += sum over rows of dout * ghat
 * z is read from (and dz written into) the z columns of in_proj's output, row stride z_stride.
 *
 * Access pattern (the vectorised kernels): a block takes one group of a row (blockIdx.y = group);
 * each thread loads its 16-byte vectors of y, z (and dout) once, keeps them in registers through the
 * group's one block reduction, and writes out (dy, dz) from them: every element is read once and
 * written once. z and dz go through 16-byte accesses when z, dz and z_stride are 16-byte aligned,
 * else one access per value. The backward's blocks walk rows blockIdx.x, blockIdx.x + gridDim.x, ...
 * keeping their columns' dw sums in registers; the per-block partials are summed in a fixed order
 * afterwards (sum_rows_accumulate), so dw is deterministic.
 * The scalar kernels (one block per row, all groups, one value per access) take what the vectorised
 * ones cannot: S not a multiple of X_VEC (8 in bf16, 4 in fp32), S longer than 2 * 512 vectors (8192
 * bf16, 4096 fp32 values), or y, out, dout, dy not 16-byte aligned.
 */
#ifndef SSD_KERNELS_GATED_NORM_CUH
#define SSD_KERNELS_GATED_NORM_CUH

#include "common.cuh"

#define GATED_NORM_THREADS 256
#define GATED_NORM_BACKWARD_BLOCKS 1024

template <int VECS>
__global__ void __launch_bounds__(ROW_VEC_MAX_THREADS)
    gated_norm_forward_vec_kernel(floatX *out, float *rstd_out, const floatX *y, const floatX *z, int z_stride,
                                  bool z_aligned, const float *weight, int E, int G, float eps) {
    int row = blockIdx.x, group = blockIdx.y, S = E / G;
    size_t y_at = (size_t)row * E + (size_t)group * S, z_at = (size_t)row * z_stride + (size_t)group * S;
    const float *w = weight + (size_t)group * S;
    float g[VECS][X_VEC];
    float sumsq = 0.0f;
#pragma unroll
    for (int k = 0; k < VECS; k++) {
        int c = row_vec_start(k);
        if (c >= S) continue;
        XPack yv = load_xpack(y + y_at + c);
        XPack zv = z_aligned ? load_xpack(z + z_at + c) : load_xpack_unaligned(z + z_at + c);
#pragma unroll
        for (int j = 0; j < X_VEC; j++) {
            g[k][j] = to_float(yv.v[j]) * silu(to_float(zv.v[j]));
            sumsq += g[k][j] * g[k][j];
        }
    }
    float rstd = rsqrtf(block_reduce_sum(sumsq) / S + eps);
    row_vec_store_scaled<VECS>(out + y_at, g, rstd, w, S);
    if (threadIdx.x == 0) rstd_out[(size_t)row * G + group] = rstd;
}

template <int VECS>
__global__ void __launch_bounds__(ROW_VEC_MAX_THREADS)
    gated_norm_backward_vec_kernel(floatX *dy, floatX *dz, float *dweight_partial, const floatX *dout,
                                   const floatX *y, const floatX *z, int z_stride, bool z_aligned,
                                   const float *weight, const float *rstd_in, int N, int E, int G) {
    int group = blockIdx.y, S = E / G;
    const float *w = weight + (size_t)group * S;
    float dweight_acc[VECS][X_VEC];
#pragma unroll
    for (int k = 0; k < VECS; k++)
#pragma unroll
        for (int j = 0; j < X_VEC; j++) dweight_acc[k][j] = 0.0f;
    for (int row = blockIdx.x; row < N; row += gridDim.x) {
        size_t y_at = (size_t)row * E + (size_t)group * S, z_at = (size_t)row * z_stride + (size_t)group * S;
        float rstd = rstd_in[(size_t)row * G + group];
        XPack yv[VECS], zv[VECS], dv[VECS];
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < VECS; k++) {
            int c = row_vec_start(k);
            if (c >= S) continue;
            yv[k] = load_xpack(y + y_at + c);
            zv[k] = z_aligned ? load_xpack(z + z_at + c) : load_xpack_unaligned(z + z_at + c);
            dv[k] = load_xpack(dout + y_at + c);
#pragma unroll
            for (int j = 0; j < X_VEC; j++)
                dot += to_float(dv[k].v[j]) * w[c + j] * to_float(yv[k].v[j]) * silu(to_float(zv[k].v[j]));
        }
        float mean_dot = block_reduce_sum(dot) * rstd / S;
#pragma unroll
        for (int k = 0; k < VECS; k++) {
            int c = row_vec_start(k);
            if (c >= S) continue;
            float dyv[X_VEC], dzv[X_VEC];
#pragma unroll
            for (int j = 0; j < X_VEC; j++) {
                float yf = to_float(yv[k].v[j]), zf = to_float(zv[k].v[j]), d = to_float(dv[k].v[j]);
                float sz = silu(zf);
                float ghat = yf * sz * rstd;
                float dg = rstd * (d * w[c + j] - ghat * mean_dot);
                dyv[j] = dg * sz;
                dzv[j] = dg * yf * silu_grad(zf);
                dweight_acc[k][j] += d * ghat;
            }
            store_xpack(dy + y_at + c, dyv);
            if (z_aligned) store_xpack(dz + z_at + c, dzv);
            else store_xpack_unaligned(dz + z_at + c, dzv);
        }
    }
    row_vec_store_partial<VECS>(dweight_partial + (size_t)blockIdx.x * E + (size_t)group * S, dweight_acc, S);
}

__global__ void gated_norm_forward_kernel(floatX *out, float *rstd_out, const floatX *y, const floatX *z, int z_stride,
                                          const float *weight, int N, int E, int G, float eps) {
    int row = blockIdx.x, S = E / G;
    const floatX *yr = y + (size_t)row * E;
    const floatX *zr = z + (size_t)row * z_stride;
    for (int group = 0; group < G; group++) {
        int base = group * S;
        float sumsq = 0.0f;
        for (int c = base + threadIdx.x; c < base + S; c += blockDim.x) {
            float g = to_float(yr[c]) * silu(to_float(zr[c]));
            sumsq += g * g;
        }
        float rstd = rsqrtf(block_reduce_sum(sumsq) / S + eps);
        for (int c = base + threadIdx.x; c < base + S; c += blockDim.x) {
            float g = to_float(yr[c]) * silu(to_float(zr[c]));
            out[(size_t)row * E + c] = from_float<floatX>(g * rstd * weight[c]);
        }
        if (threadIdx.x == 0) rstd_out[(size_t)row * G + group] = rstd;
    }
}

__global__ void gated_norm_backward_kernel(floatX *dy, floatX *dz, float *dweight_partial, const floatX *dout,
                                           const floatX *y, const floatX *z, int z_stride, const float *weight,
                                           const float *rstd_in, int N, int E, int G) {
    extern __shared__ float dweight_acc[];
    int S = E / G;
    for (int c = threadIdx.x; c < E; c += blockDim.x) dweight_acc[c] = 0.0f;
    __syncthreads();  /* a column's accumulator may belong to another thread below */
    for (int row = blockIdx.x; row < N; row += gridDim.x) {
        const floatX *yr = y + (size_t)row * E;
        const floatX *zr = z + (size_t)row * z_stride;
        const floatX *dr = dout + (size_t)row * E;
        for (int group = 0; group < G; group++) {
            int base = group * S;
            float rstd = rstd_in[(size_t)row * G + group];
            float dot = 0.0f;
            for (int c = base + threadIdx.x; c < base + S; c += blockDim.x) {
                float g = to_float(yr[c]) * silu(to_float(zr[c]));
                dot += to_float(dr[c]) * weight[c] * g * rstd;
            }
            float mean_dot = block_reduce_sum(dot) / S;
            for (int c = base + threadIdx.x; c < base + S; c += blockDim.x) {
                float yv = to_float(yr[c]), zv = to_float(zr[c]), d = to_float(dr[c]);
                float sz = silu(zv);
                float ghat = yv * sz * rstd;
                float dg = rstd * (d * weight[c] - ghat * mean_dot);
                dy[(size_t)row * E + c] = from_float<floatX>(dg * sz);
                dz[(size_t)row * z_stride + c] = from_float<floatX>(dg * yv * silu_grad(zv));
                dweight_acc[c] += d * ghat;
            }
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < E; c += blockDim.x) dweight_partial[(size_t)blockIdx.x * E + c] = dweight_acc[c];
}

/* whether z and dz rows can be moved in 16-byte vectors */
static inline bool gated_norm_z_aligned(const floatX *z, const floatX *dz, int z_stride) {
    return aligned16(z) && (dz == NULL || aligned16(dz)) && z_stride % X_VEC == 0;
}

static inline void gated_norm_forward(floatX *out, float *rstd, const floatX *y, const floatX *z, int z_stride,
                                      const float *weight, int N, int E, int G, float eps, cudaStream_t stream) {
    int threads = 0, vecs = row_vec_plan(E / G, &threads);
    if (vecs == 0 || !aligned16(y) || !aligned16(out)) {
        gated_norm_forward_kernel<<<N, GATED_NORM_THREADS, 0, stream>>>(out, rstd, y, z, z_stride, weight, N, E, G, eps);
    } else {
        auto kernel = vecs == 1 ? gated_norm_forward_vec_kernel<1> : gated_norm_forward_vec_kernel<2>;
        kernel<<<dim3(N, G), threads, 0, stream>>>(out, rstd, y, z, z_stride, gated_norm_z_aligned(z, NULL, z_stride),
                                                   weight, E, G, eps);
    }
    cudaCheckLaunch();
}

static inline size_t gated_norm_backward_scratch_floats(int E) { return (size_t)GATED_NORM_BACKWARD_BLOCKS * E; }

/* Writes dy [N, E] and dz (row stride z_stride); dweight += d/dweight. */
static inline void gated_norm_backward(floatX *dy, floatX *dz, float *dweight, float *scratch, const floatX *dout,
                                       const floatX *y, const floatX *z, int z_stride, const float *weight,
                                       const float *rstd, int N, int E, int G, cudaStream_t stream) {
    int blocks = N < GATED_NORM_BACKWARD_BLOCKS ? N : GATED_NORM_BACKWARD_BLOCKS;
    int threads = 0, vecs = row_vec_plan(E / G, &threads);
    if (vecs == 0 || !aligned16(y) || !aligned16(dout) || !aligned16(dy)) {
        gated_norm_backward_kernel<<<blocks, GATED_NORM_THREADS, E * sizeof(float), stream>>>(
            dy, dz, scratch, dout, y, z, z_stride, weight, rstd, N, E, G);
    } else {
        auto kernel = vecs == 1 ? gated_norm_backward_vec_kernel<1> : gated_norm_backward_vec_kernel<2>;
        kernel<<<dim3(blocks, G), threads, 0, stream>>>(dy, dz, scratch, dout, y, z, z_stride,
                                                        gated_norm_z_aligned(z, dz, z_stride), weight, rstd, N, E, G);
    }
    cudaCheckLaunch();
    sum_rows_accumulate(dweight, scratch, blocks, E, stream);
}

#endif
