/*
 * Gated RMSNorm of the Mamba-2 block (norm after the gate), per group of S = E / G channels:
 *   forward:  g = y * silu(z)        rstd = 1 / sqrt(mean_group(g^2) + eps)      out = g * rstd * w
 *   backward: with ghat = g * rstd and dgw = dout * w (per group),
 *             dg = rstd * (dgw - ghat * mean_group(dgw * ghat))
 *             dy = dg * silu(z)      dz = dg * y * silu'(z)      dw += sum over rows of dout * ghat
 * z is read from (and dz written into) the z columns of in_proj's output, row stride z_stride.
 * One block per row; the weight gradient is reduced deterministically like rmsnorm.cuh's.
 */
#ifndef SSD_KERNELS_GATED_NORM_CUH
#define SSD_KERNELS_GATED_NORM_CUH

#include "common.cuh"

#define GATED_NORM_THREADS 256
#define GATED_NORM_BACKWARD_BLOCKS 1024

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

static inline void gated_norm_forward(floatX *out, float *rstd, const floatX *y, const floatX *z, int z_stride,
                                      const float *weight, int N, int E, int G, float eps, cudaStream_t stream) {
    gated_norm_forward_kernel<<<N, GATED_NORM_THREADS, 0, stream>>>(out, rstd, y, z, z_stride, weight, N, E, G, eps);
    cudaCheckLaunch();
}

static inline size_t gated_norm_backward_scratch_floats(int E) { return (size_t)GATED_NORM_BACKWARD_BLOCKS * E; }

/* Writes dy [N, E] and dz (row stride z_stride); dweight += d/dweight. */
static inline void gated_norm_backward(floatX *dy, floatX *dz, float *dweight, float *scratch, const floatX *dout,
                                       const floatX *y, const floatX *z, int z_stride, const float *weight,
                                       const float *rstd, int N, int E, int G, cudaStream_t stream) {
    int blocks = N < GATED_NORM_BACKWARD_BLOCKS ? N : GATED_NORM_BACKWARD_BLOCKS;
    gated_norm_backward_kernel<<<blocks, GATED_NORM_THREADS, E * sizeof(float), stream>>>(dy, dz, scratch, dout, y, z,
                                                                                          z_stride, weight, rstd, N, E, G);
    cudaCheckLaunch();
    sum_rows_accumulate(dweight, scratch, blocks, E, stream);
}

#endif
