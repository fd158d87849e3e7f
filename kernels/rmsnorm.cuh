/*
 * RMSNorm fused with the residual add; the residual stream is fp32.
 *   forward:  r = prev + add (add may be absent)      rstd = 1 / sqrt(mean_c(r^2) + eps)
 *             out = r * rstd * w
 *   backward: with xhat = r * rstd and dyw = dout * w,
 *             dr = rstd * (dyw - xhat * mean_c(dyw * xhat))      accumulated: dres += dr
 *             dw += sum over rows of dout * xhat
 * The backward also writes dres in floatX for the matmul below it.
 *
 * Access pattern (the vectorised kernels): a block takes a row; each thread loads its vectors of
 * X_VEC values (16 bytes of floatX, 16 or 32 bytes of fp32) once, keeps them in registers through the
 * row's one block reduction, and writes from them: every element is read once and written once. The
 * backward's blocks walk rows blockIdx.x, blockIdx.x + gridDim.x, ... keeping their columns' dw sums
 * in registers; the per-block partials are summed in a fixed order afterwards (sum_rows_accumulate),
 * so dw is deterministic.
 * The scalar kernels (one value per access; the backward's dw partials in shared memory) take what
 * the vectorised ones cannot: C not a multiple of X_VEC (8 in bf16, 4 in fp32), C longer than
 * 2 * 512 vectors (8192 bf16, 4096 fp32 values), or a pointer that is not 16-byte aligned.
 */
#ifndef SSD_KERNELS_RMSNORM_CUH
#define SSD_KERNELS_RMSNORM_CUH

#include "common.cuh"

#define RMSNORM_THREADS 256
#define RMSNORM_BACKWARD_BLOCKS 1024

template <int VECS>
__global__ void __launch_bounds__(ROW_VEC_MAX_THREADS)
    rmsnorm_forward_vec_kernel(float *residual, floatX *out, float *rstd_out, const float *prev, const floatX *add,
                               const float *weight, int C, float eps) {
    size_t at = (size_t)blockIdx.x * C;
    float x[VECS][X_VEC];
    float sumsq = 0.0f;
#pragma unroll
    for (int k = 0; k < VECS; k++) {
        int c = row_vec_start(k);
        if (c >= C) continue;
        load_floats_vec(x[k], prev + at + c);
        if (add) {
            XPack a = load_xpack(add + at + c);
#pragma unroll
            for (int j = 0; j < X_VEC; j++) x[k][j] += to_float(a.v[j]);
            store_floats_vec(residual + at + c, x[k]);
        }
#pragma unroll
        for (int j = 0; j < X_VEC; j++) sumsq += x[k][j] * x[k][j];
    }
    float rstd = rsqrtf(block_reduce_sum(sumsq) / C + eps);
    row_vec_store_scaled<VECS>(out + at, x, rstd, weight, C);
    if (threadIdx.x == 0) rstd_out[blockIdx.x] = rstd;
}

template <int VECS>
__global__ void __launch_bounds__(ROW_VEC_MAX_THREADS)
    rmsnorm_backward_vec_kernel(float *dres, floatX *dres_x, float *dweight_partial, const floatX *dout,
                                const float *residual, const float *rstd_in, const float *weight, int N, int C) {
    float dweight_acc[VECS][X_VEC];
#pragma unroll
    for (int k = 0; k < VECS; k++)
#pragma unroll
        for (int j = 0; j < X_VEC; j++) dweight_acc[k][j] = 0.0f;
    for (int row = blockIdx.x; row < N; row += gridDim.x) {
        size_t at = (size_t)row * C;
        float rstd = rstd_in[row];
        XPack dv[VECS];
        float xhat[VECS][X_VEC], dr[VECS][X_VEC];
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < VECS; k++) {
            int c = row_vec_start(k);
            if (c >= C) continue;
            dv[k] = load_xpack(dout + at + c);
            load_floats_vec(xhat[k], residual + at + c);
            load_floats_vec(dr[k], dres + at + c);
#pragma unroll
            for (int j = 0; j < X_VEC; j++) {
                xhat[k][j] *= rstd;
                dot += to_float(dv[k].v[j]) * weight[c + j] * xhat[k][j];
            }
        }
        float mean_dot = block_reduce_sum(dot) / C;
#pragma unroll
        for (int k = 0; k < VECS; k++) {
            int c = row_vec_start(k);
            if (c >= C) continue;
#pragma unroll
            for (int j = 0; j < X_VEC; j++) {
                float g = to_float(dv[k].v[j]);
                dr[k][j] += rstd * (g * weight[c + j] - xhat[k][j] * mean_dot);
                dweight_acc[k][j] += g * xhat[k][j];
            }
            store_floats_vec(dres + at + c, dr[k]);
            store_xpack(dres_x + at + c, dr[k]);
        }
    }
    row_vec_store_partial<VECS>(dweight_partial + (size_t)blockIdx.x * C, dweight_acc, C);
}

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
    int threads = 0, vecs = row_vec_plan(C, &threads);
    if (vecs == 0 || !aligned16(prev) || !aligned16(out) || (add && (!aligned16(add) || !aligned16(residual)))) {
        rmsnorm_forward_kernel<<<N, RMSNORM_THREADS, 0, stream>>>(residual, out, rstd, prev, add, weight, N, C, eps);
    } else {
        auto kernel = vecs == 1 ? rmsnorm_forward_vec_kernel<1> : rmsnorm_forward_vec_kernel<2>;
        kernel<<<N, threads, 0, stream>>>(residual, out, rstd, prev, add, weight, C, eps);
    }
    cudaCheckLaunch();
}

static inline size_t rmsnorm_backward_scratch_floats(int C) { return (size_t)RMSNORM_BACKWARD_BLOCKS * C; }

/* dres += d/dresidual; dres_x = dres in floatX; dweight += d/dweight. scratch: rmsnorm_backward_scratch_floats(C). */
static inline void rmsnorm_backward(float *dres, floatX *dres_x, float *dweight, float *scratch, const floatX *dout,
                                    const float *residual, const float *rstd, const float *weight, int N, int C,
                                    cudaStream_t stream) {
    int blocks = N < RMSNORM_BACKWARD_BLOCKS ? N : RMSNORM_BACKWARD_BLOCKS;
    int threads = 0, vecs = row_vec_plan(C, &threads);
    if (vecs == 0 || !aligned16(dres) || !aligned16(dres_x) || !aligned16(dout) || !aligned16(residual)) {
        rmsnorm_backward_kernel<<<blocks, RMSNORM_THREADS, C * sizeof(float), stream>>>(dres, dres_x, scratch, dout,
                                                                                        residual, rstd, weight, N, C);
    } else {
        auto kernel = vecs == 1 ? rmsnorm_backward_vec_kernel<1> : rmsnorm_backward_vec_kernel<2>;
        kernel<<<blocks, threads, 0, stream>>>(dres, dres_x, scratch, dout, residual, rstd, weight, N, C);
    }
    cudaCheckLaunch();
    sum_rows_accumulate(dweight, scratch, blocks, C, stream);
}

#endif
