/*
 * RMSNorm fused with the residual add; the residual stream is fp32.
 *   forward:  r = prev + add (add may be absent)      rstd = 1 / sqrt(mean_c(r^2) + eps)
 *             out = r * rstd * w
 *   backward: with xhat = r * rstd and dyw = dout * w,
 *             dr = rstd * (dyw - xhat * mean_c(dyw * xhat))      accumulated: dres += dr
 *             dw += sum over rows of dout * xhat
 * The backward also writes dres in floatX for the matmul below it. One block per row; blocks walk
 * the rows with a fixed stride, each keeping its own dw partial sums in shared memory, so the
 * reduction is deterministic (partials summed in a fixed order afterwards).
 */
#ifndef SSD_KERNELS_RMSNORM_CUH
#define SSD_KERNELS_RMSNORM_CUH

#include "common.cuh"

#define RMSNORM_THREADS 256
#define RMSNORM_BACKWARD_BLOCKS 1024

__global__ void rmsnorm_forward_kernel(float *residual, floatX *out, float *rstd_out, const float *prev,
                                       const floatX *add, const float *weight, int N, int C, float eps) {
    int row = blockIdx.x;
    const float *p = prev + (size_t)row * C;
    const floatX *a = add ? add + (size_t)row * C : NULL;
    float *r = residual + (size_t)row * C;
    float sumsq = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float x = p[c];
        if (a) {
            x += to_float(a[c]);
            r[c] = x;
        }
        sumsq += x * x;
    }
    float rstd = rsqrtf(block_reduce_sum(sumsq) / C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float x = a ? r[c] : p[c];
        out[(size_t)row * C + c] = from_float<floatX>(x * rstd * weight[c]);
    }
    if (threadIdx.x == 0) rstd_out[row] = rstd;
}

__global__ void rmsnorm_backward_kernel(float *dres, floatX *dres_x, float *dweight_partial, const floatX *dout,
                                        const float *residual, const float *rstd_in, const float *weight, int N, int C) {
    extern __shared__ float dweight_acc[];
    for (int c = threadIdx.x; c < C; c += blockDim.x) dweight_acc[c] = 0.0f;
    __syncthreads();  /* a column's accumulator may belong to another thread below */
    for (int row = blockIdx.x; row < N; row += gridDim.x) {
        const floatX *dy = dout + (size_t)row * C;
        const float *x = residual + (size_t)row * C;
        float rstd = rstd_in[row];
        float dot = 0.0f;
        for (int c = threadIdx.x; c < C; c += blockDim.x) dot += to_float(dy[c]) * weight[c] * x[c] * rstd;
        float mean_dot = block_reduce_sum(dot) / C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float g = to_float(dy[c]);
            float xhat = x[c] * rstd;
            size_t i = (size_t)row * C + c;
            float d = dres[i] + rstd * (g * weight[c] - xhat * mean_dot);
            dres[i] = d;
            dres_x[i] = from_float<floatX>(d);
            dweight_acc[c] += g * xhat;
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) dweight_partial[(size_t)blockIdx.x * C + c] = dweight_acc[c];
}

/* residual = prev + add (or, with add NULL, residual == prev is only read); out = norm(residual) * w */
static inline void rmsnorm_forward(float *residual, floatX *out, float *rstd, const float *prev, const floatX *add,
                                   const float *weight, int N, int C, float eps, cudaStream_t stream) {
    rmsnorm_forward_kernel<<<N, RMSNORM_THREADS, 0, stream>>>(residual, out, rstd, prev, add, weight, N, C, eps);
    cudaCheckLaunch();
}

static inline size_t rmsnorm_backward_scratch_floats(int C) { return (size_t)RMSNORM_BACKWARD_BLOCKS * C; }

/* dres += d/dresidual; dres_x = dres in floatX; dweight += d/dweight. scratch: rmsnorm_backward_scratch_floats(C). */
static inline void rmsnorm_backward(float *dres, floatX *dres_x, float *dweight, float *scratch, const floatX *dout,
                                    const float *residual, const float *rstd, const float *weight, int N, int C,
                                    cudaStream_t stream) {
    int blocks = N < RMSNORM_BACKWARD_BLOCKS ? N : RMSNORM_BACKWARD_BLOCKS;
    rmsnorm_backward_kernel<<<blocks, RMSNORM_THREADS, C * sizeof(float), stream>>>(dres, dres_x, scratch, dout, residual,
                                                                                    rstd, weight, N, C);
    cudaCheckLaunch();
    sum_rows_accumulate(dweight, scratch, blocks, C, stream);
}

#endif
